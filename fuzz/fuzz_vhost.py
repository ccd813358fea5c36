"""Fuzz the vhost-user port: its control channel (protocol.VhostUserConnection) and its
virtqueues (virtq.Virtq tx_burst / rx_burst, through the VhostUserInput/Output nodes).

The harness is the front end. Each input is a sequence of steps, each read from the
fuzzer's bytes:
- a vhost-user message sent on a socketpair exactly as QEMU would send it (header, payload,
  descriptors by SCM_RIGHTS), then the backend's on_readable(): every request it handles
  with fuzzed fields (GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, RESET_OWNER,
  RESET_DEVICE, SET_MEM_TABLE over memfd regions of the harness -- good, overlapping,
  misaligned, past the file, wrapping, too many, a pipe, wrong descriptor counts --,
  SET_VRING_NUM/ADDR/BASE, GET_VRING_BASE, SET_VRING_KICK/CALL/ERR with eventfds, pipes,
  memfds, none or several, GET_QUEUE_NUM, SET_VRING_ENABLE), unsupported requests,
  garbage, bad versions, oversized sizes, truncated payloads, messages in pieces, too
  many descriptors; a whole QEMU-like setup with fuzzed features, queue size and base;
  the peer closing or reconnecting;
- guest memory written from fuzz input: descriptors (addresses inside, at the edges of,
  between and outside the regions; any length; NEXT/WRITE/INDIRECT flags; any next
  index: loops and chains), indirect tables, avail entries and index jumps, avail flags
  and used_event;
- the data path: the guest's transmit queue polled into pool buffers (tx_burst), frames
  of fuzzed lengths pushed into its receive queue (rx_burst).

Invariants, checked after every step:
- on_readable never raises and never hits its "internal error" catch-all (nothing is
  logged at ERROR): every bad message is a counted refusal or a clean disconnect;
- the replies are well-formed (version 1 | REPLY, an 8-byte payload);
- the device is consistent: a queue is ready only when started, enabled, not broken,
  sized and translated; after a disconnect the device is reset (no memory, no queues);
- no file descriptor leaks (the process's open descriptors are the same after every
  input);
- pool accounting is exact: check_accounting(0) once the collected frames are taken;
- every frame the guest sent is 14..2048 bytes, and -- unless the backend's own used-ring
  writes overlap what it reads -- exactly what a Python model of the descriptor walk
  (chains, indirect tables, loop/bounds rules, the virtio-net header skipped) expects;
- nothing is written outside the guest memory regions: the guard areas of the memfd
  around and between the regions (mapped by the backend, not guest memory) stay intact.
"""
import array
import functools
import mmap
import os
import socket
import struct

from fuzzcommon import ErrorLog, Reader, atheris_main, feature, open_fds

from fastpath.graph.graph import Graph
from fastpath.pg.pg import PgInput, PgOutput
from fastpath.vhost import protocol as vu
from fastpath.vhost.port import VhostUserInput, VhostUserOutput

PAGE = 4096
GPA = 0x4000_0000
UVA = 0x7f12_3400_0000
B_DELTA = 0x10_0000
# the memfd: guard | region A (64 KiB) | guard | region B (16 KiB) | guard
A_OFF, A_SIZE = PAGE, 16 * PAGE
B_OFF, B_SIZE = A_OFF + A_SIZE + PAGE, 4 * PAGE
FILE_SIZE = B_OFF + B_SIZE + PAGE
GUARD = bytes((0xa5 ^ (i * 7)) & 0xff for i in range(PAGE))
BUFS = 0x6000                     # buffers in region A from here to its end
QUEUE_AT = (0x0, 0x3000)          # desc, avail at +0x1000, used at +0x2000 (up to 256 slots)
D_NEXT, D_WRITE, D_INDIRECT = 1, 2, 4
HDR = struct.Struct("<III")
DESC = struct.Struct("<QIHH")
EFD_NONBLOCK = 0o4000

LAYOUTS = {   # name -> [(gpa, size, uva, file offset)]
    "A": [(GPA, A_SIZE, UVA, A_OFF)],
    "AB": [(GPA, A_SIZE, UVA, A_OFF), (GPA + B_DELTA, B_SIZE, UVA + B_DELTA, B_OFF)],
    "BA": [(GPA + B_DELTA, B_SIZE, UVA + B_DELTA, B_OFF), (GPA, A_SIZE, UVA, A_OFF)],
    "A-adjacent-B": [(GPA, A_SIZE, UVA, A_OFF), (GPA + A_SIZE, B_SIZE, UVA + A_SIZE, B_OFF)],
    "A-at-0": [(0, A_SIZE, 0, A_OFF)],
}


class World:
    """What lives across inputs: the graph, the port, guest memory, spare descriptors."""

    def __init__(self):
        self.g = Graph(n_buffers=256)
        self.port = vu.VhostUserPort("vhu0", "/nonexistent/vhu0.sock")
        self.vin = VhostUserInput("vhu0-input", self.port.txq, 1, next_node="out")
        self.vout = VhostUserOutput("vhu0-output", self.port.rxq, 1)
        self.out = PgOutput("out", 2)
        self.inp = PgInput("in", 3, next_node="vhu0-output")
        for n in (self.vin, self.vout, self.out, self.inp):
            self.g.add(n)
        self.memfd = os.memfd_create("fuzz-guest", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.memfd, FILE_SIZE)
        self.mem = mmap.mmap(self.memfd, FILE_SIZE)
        self.small = os.memfd_create("fuzz-small", os.MFD_CLOEXEC)
        os.ftruncate(self.small, PAGE)
        self.pipe = os.pipe()
        self.efds = [os.eventfd(0, EFD_NONBLOCK) for _ in range(3)]
        self.log = ErrorLog.capture("fastpath.vhost")


@functools.cache
def world():
    """The one World every input runs against (built on first use, not at import)."""
    return World()


class Session:
    """One input against the world: the front end's side of the connection."""

    def __init__(self, w, r):
        self.w, self.r = w, r
        self.sock = None
        self.conn = None
        self.table = []
        self.ever = [(A_OFF, A_OFF + A_SIZE), (B_OFF, B_OFF + B_SIZE)]   # spans guest memory ever covered          # [(gpa, size, uva, off)] the backend holds, as we know it
        self.trusted = True      # we know what the backend parsed
        self.avail_idx = [0, 0]
        self.connect()

    # ---- the connection

    def connect(self):
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        a.setblocking(False)
        if self.sock is not None:
            self.sock.close()
        self.sock = a
        self.w.port._connected(b)
        self.conn = self.w.port.conn
        self.table = []
        self.trusted = True

    def close(self):
        if self.conn is not None and self.w.port.conn is self.conn:
            self.w.port.disconnected(self.conn, "end of input")
        self.sock.close()
        self.conn = None

    def reconnect(self, how):
        if how == 0:                              # we hang up: the backend sees EOF
            self.sock.close()
            self.pump()
            assert self.w.port.conn is None, "EOF did not disconnect"
            self.sock = None
        else:
            self.w.port.disconnected(self.conn, "fuzz")
            self.sock.close()
        self.check_reset()
        self.connect()

    def send(self, data, fds=()):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self.sock.sendmsg([data], anc)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass

    def pump(self):
        if self.w.port.conn is self.conn and self.conn is not None:
            self.conn.on_readable()
        assert not self.w.log.records, f"internal error in the backend: {self.w.log.records}"
        assert not self.w.port.last_error.startswith("internal error"), self.w.port.last_error
        return self.replies()

    def replies(self):
        out = []
        buf = b""
        while self.sock is not None:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
        while buf:
            assert len(buf) >= 12, "truncated reply header"
            req, flags, size = HDR.unpack_from(buf)
            assert flags == vu.VERSION | vu.FLAG_REPLY, f"reply flags {flags:#x}"
            assert size == 8 and len(buf) >= 12 + size, f"reply of {size} bytes"
            out.append((req, buf[12:12 + size]))
            buf = buf[12 + size:]
        return out

    def message(self, req, payload=b"", fds=(), flags=None):
        """Send one well-formed message; the ack (True/False) or reply payload, None if none."""
        flags = vu.VERSION | vu.FLAG_NEED_REPLY if flags is None else flags
        self.send(HDR.pack(req, flags, len(payload)) + payload, fds)
        rep = self.pump()
        if self.w.port.conn is not self.conn:        # disconnected
            self.after_disconnect()
            return None
        return rep[-1][1] if rep else None

    def after_disconnect(self):
        self.check_reset()
        self.connect()

    # ---- invariants

    def check_reset(self):
        p = self.w.port
        assert p.conn is None
        assert p.mem.n_regions == 0, "memory still mapped after a disconnect"
        for vq in p.vqs:
            assert not vq.ready and vq.num == 0 and vq.kick_fd == vq.call_fd == vq.err_fd == -1

    def check_state(self):
        p = self.w.port
        for vq in p.vqs:
            st = vq.state()
            if vq.ready:
                assert st["started"] and st["enabled"] and not st["broken"] and vq.num > 0
                assert p.mem.n_regions > 0 and vq.addr_set
            assert (st["broken_reason"] != "") == st["broken"]
        assert isinstance(p.running, bool)
        for k, v in p.counters.items():
            assert v >= 0, k
        if p.mem.n_regions == 0:
            self.table, self.trusted = [], True
        elif p.mem.table() != [{"guest_phys_addr": g, "memory_size": z, "userspace_addr": u}
                               for g, z, u, _ in self.table]:
            self.trusted = False           # (a random request code that happened to be SET_MEM_TABLE)

    def check_guard(self):
        """Every byte of the memfd outside the regions the backend maps is untouched."""
        if not self.trusted:
            return
        m = self.w.mem
        for start, end in self.gaps():
            k = start
            while k < end:
                n = min(PAGE - k % PAGE, end - k)
                assert m[k:k + n] == GUARD[k % PAGE:k % PAGE + n], f"guest memory guard at {k:#x} overwritten"
                k += n

    def gaps(self):
        self.ever += [(off, min(off + size, FILE_SIZE)) for _, size, _, off in self.table]
        spans = sorted(self.ever)
        pos = 0
        for s, e in spans:
            if s > pos:
                yield pos, min(s, FILE_SIZE)
            pos = max(pos, e)
        if pos < FILE_SIZE:
            yield pos, FILE_SIZE

    # ---- address translation as the backend does it (our view)

    def gpa_off(self, gpa, length):
        if not self.trusted:
            return None
        for g, size, _, off in self.table:
            if g <= gpa and gpa - g < size and length <= size - (gpa - g):
                return off + gpa - g
        return None

    def uva_off(self, uva, length):
        for _, size, u, off in self.table:
            if u <= uva and uva - u < size and length <= size - (uva - u):
                return off + uva - u
        return None


# ---------------------------------------------------------------- fuzzed fields

def pick_addr(r, length=0):
    return _pick_addr(r, length) % 2 ** 64


def _pick_addr(r, length):
    k = r.u8() % 12
    if k < 5:
        return GPA + BUFS + r.int_in(0, A_SIZE - BUFS - 1)
    if k == 5:
        return GPA + A_SIZE - (length or 1) + r.int_in(-3, 3)
    if k == 6:
        return GPA + B_DELTA + r.int_in(0, B_SIZE + 8)
    if k == 7:
        return GPA - r.int_in(1, 64)
    if k == 8:
        return GPA + r.int_in(0, BUFS)                      # over the rings themselves
    if k == 9:
        return r.uint(8)
    if k == 10:
        return (GPA + A_SIZE + r.int_in(0, B_DELTA)) % 2 ** 64
    return r.pick((0, 2 ** 64 - 1, 2 ** 64 - 16, GPA + B_DELTA + B_SIZE - 14))


def pick_len(r):
    k = r.u8() % 8
    if k < 3:
        return r.pick((0, 1, 10, 11, 12, 13, 14, 24, 25, 26, 60, 64, 1514, 1526, 2047, 2048,
                       2058, 2059, 2060, 2061, 4096))
    if k < 6:
        return r.int_in(0, 2100)
    if k == 6:
        return r.pick((0xffffffff, 0x80000000, 0x10000, 65536 * 16, 65537 * 16))
    return r.u32()


def pick_num(r):
    k = r.u8() % 16
    if k < 13:
        return r.pick((1, 2, 4, 8, 16, 32, 64, 128, 256))
    return r.pick((0, 3, 255, 257, 512, 32768, 65536, 2 ** 32 - 1))


def fds_for(s, r, kind):
    """Descriptors to send: the right one mostly, else none, several, or the wrong kind."""
    w = s.w
    k = r.u8() % 10
    if k < 6:
        return [w.memfd] if kind == "mem" else [r.pick(w.efds)]
    if k == 6:
        return []
    if k == 7:
        return [r.pick((w.memfd, w.small, w.pipe[0], w.efds[0], w.pipe[1]))]
    if k == 8:
        return [r.pick((w.memfd, w.efds[1])) for _ in range(r.int_in(2, 4))]
    return [w.efds[0]] * r.int_in(5, 10)          # past MAX_FDS: a framing error


# ---------------------------------------------------------------- steps

def step_message(s, r, kind):
    flags = vu.VERSION | (vu.FLAG_NEED_REPLY if r.u8() % 4 else 0)
    if r.chance(16):
        flags = r.u32()
    fds = ()
    if kind == 0:
        req, payload = r.pick((vu.GET_FEATURES, vu.GET_PROTOCOL_FEATURES, vu.GET_QUEUE_NUM)), b""
    elif kind == 1:
        v = vu.FEATURES & (r.u8() << 15 | r.u8() << 28) if r.u8() % 4 else r.uint(8)
        req, payload = vu.SET_FEATURES, struct.pack("<Q", v)
    elif kind == 2:
        req, payload = vu.SET_PROTOCOL_FEATURES, struct.pack("<Q", r.pick((0, 1, 8, 9, r.uint(8))))
    elif kind == 3:
        req, payload = r.pick((vu.SET_OWNER, vu.RESET_OWNER, vu.RESET_DEVICE)), b""
    elif kind == 4:
        return step_mem_table(s, r)
    elif kind == 5:
        req, payload = vu.SET_VRING_NUM, struct.pack("<II", r.int_in(0, 2) if r.u8() % 8 else r.u32(), pick_num(r))
    elif kind == 6:
        q = r.int_in(0, 2) if r.u8() % 8 else r.u32()
        base = UVA + QUEUE_AT[q % 2]
        a = [base, base + 0x2000, base + 0x1000]
        for i in range(3):
            if r.chance(3):
                a[i] = r.pick((a[i] + r.int_in(-32, 32), UVA + A_SIZE - r.int_in(0, 600),
                               UVA + B_DELTA + r.int_in(0, B_SIZE), UVA - 16, r.uint(8), 0,
                               UVA + r.int_in(0, A_SIZE)))
        req, payload = vu.SET_VRING_ADDR, struct.pack("<IIQQQQ", q, r.u8(), a[0], a[1], a[2], 0)
    elif kind == 7:
        req = r.pick((vu.SET_VRING_BASE, vu.GET_VRING_BASE))
        q = r.int_in(0, 1) if r.u8() % 8 else r.u32()
        base = r.pick((0, 1, 0xfffe, 0xffff, 0x10000, r.u16(), r.u32()))
        payload = struct.pack("<II", q, base)
    elif kind == 8:
        req = r.pick((vu.SET_VRING_KICK, vu.SET_VRING_CALL, vu.SET_VRING_ERR))
        q = r.int_in(0, 1) if r.u8() % 8 else r.u8()
        v = q | (vu.VRING_FD_NOFD if r.chance(4) else 0)
        if r.chance(16):
            v = r.uint(8)
        payload = struct.pack("<Q", v)
        fds = fds_for(s, r, "efd") if not v & vu.VRING_FD_NOFD or r.chance(4) else ()
    elif kind == 9:
        req, payload = vu.SET_VRING_ENABLE, struct.pack("<II", r.int_in(0, 2), r.pick((0, 1, 1, 2)))
    else:                                             # not handled
        req = r.pick((6, 7, 19, 20, 21, 22, 23, 24, 25, 31, 32, 36, 37, 38, 39, 40, 0, 41, 99, r.u32()))
        payload = r.blob(64)
        if r.chance(4):
            fds = fds_for(s, r, "mem")
    if r.chance(12):                                  # truncated payload
        payload = payload[:r.int_in(0, len(payload))]
    elif r.chance(16):
        payload += r.blob(16)
    if kind == 1 and r.chance(8):
        fds = fds_for(s, r, "mem")
    feature(200 + 20 * kind + (vu.REQUESTS.get(req) is not None))
    s.message(req, payload, fds, flags)


def step_mem_table(s, r):
    w = s.w
    name = r.pick(sorted(LAYOUTS))
    regions = [list(x) for x in LAYOUTS[name]]
    bad = r.u8() % 4 == 0
    if bad:
        k = r.u8() % 10
        i = r.int_in(0, len(regions) - 1)
        if k == 0:
            regions[i][1] += PAGE                 # past the file / into the next region
        elif k == 1:
            regions[i][3] += r.pick((8, PAGE // 2, PAGE))
        elif k == 2:
            regions[i][0] = r.pick((2 ** 64 - PAGE, 2 ** 63, r.uint(8) & ~(PAGE - 1)))
        elif k == 3:
            regions[i][2] = r.pick((2 ** 64 - PAGE, r.uint(8)))
        elif k == 4:
            regions[i][1] = r.pick((0, 1, 2 ** 64 - 1, PAGE - 8))
        elif k == 5:
            regions.append(list(regions[0]))      # overlapping
        elif k == 6:
            regions = regions * 5                 # too many
        elif k == 7:
            regions[i][0] += r.int_in(1, PAGE - 1)
        elif k == 8:
            regions[i][3] = r.pick((FILE_SIZE, 2 ** 62, 2 ** 64 - PAGE))
        else:
            regions = []
    n = len(regions)
    count = n if r.u8() % 8 else r.pick((0, n + 1, 9, r.u32()))
    payload = struct.pack("<II", count, 0) + b"".join(struct.pack("<QQQQ", *x) for x in regions)
    fds = [w.memfd] * n
    if r.chance(6):
        fds = fds_for(s, r, "mem") if r.bool() else [r.pick((w.small, w.pipe[0], w.efds[0]))] * n
    if r.chance(12):
        payload = payload[:r.int_in(0, len(payload))]
    feature(300 + 10 * n + bad)
    ack = s.message(vu.SET_MEM_TABLE, payload, fds)
    if s.w.port.conn is not s.conn:
        return
    if ack is not None and s.trusted:
        if struct.unpack("<Q", ack)[0] == 0:
            s.table = [tuple(x) for x in regions]
            feature(340 + n)
    elif s.w.port.mem.n_regions == 0:
        s.table, s.trusted = [], True
    else:
        s.trusted = False


def setup(s, r):
    """A whole QEMU-like setup with fuzzed features, size and base."""
    mask = {0: vu.F_MRG_RXBUF, 1: vu.F_INDIRECT_DESC, 2: vu.F_EVENT_IDX, 3: vu.F_PROTOCOL_FEATURES,
            4: vu.F_VERSION_1}
    bits = r.u8()
    feats = vu.FEATURES
    for i, f in mask.items():
        if bits & (1 << i) and r.chance(2):
            feats &= ~f
    num = pick_num(r) if r.chance(8) else r.pick((1, 2, 4, 8, 16, 32, 64, 256))
    base = r.pick((0, 0, 0, 0xfff0, 0xffff, r.u16()))
    layout = LAYOUTS[r.pick(("A", "AB", "BA"))]
    seq = [(vu.GET_FEATURES, b"", ()), (vu.GET_PROTOCOL_FEATURES, b"", ())]
    if feats & vu.F_PROTOCOL_FEATURES:
        seq.append((vu.SET_PROTOCOL_FEATURES, struct.pack("<Q", vu.PROTOCOL_FEATURES), ()))
    seq += [(vu.SET_OWNER, b"", ()), (vu.SET_FEATURES, struct.pack("<Q", feats), ())]
    seq.append((vu.SET_MEM_TABLE, struct.pack("<II", len(layout), 0) +
                b"".join(struct.pack("<QQQQ", *x) for x in layout), [s.w.memfd] * len(layout)))
    for q in (0, 1):
        d = UVA + QUEUE_AT[q]
        seq += [(vu.SET_VRING_NUM, struct.pack("<II", q, num), ()),
                (vu.SET_VRING_BASE, struct.pack("<II", q, base), ()),
                (vu.SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, d, d + 0x2000, d + 0x1000, 0), ()),
                (vu.SET_VRING_KICK, struct.pack("<Q", q), [s.w.efds[0]]),
                (vu.SET_VRING_CALL, struct.pack("<Q", q), [s.w.efds[1]]),
                (vu.SET_VRING_ERR, struct.pack("<Q", q), [s.w.efds[2]]),
                (vu.SET_VRING_ENABLE, struct.pack("<II", q, 1), ())]
    if r.chance(4):                                    # one of them dropped
        del seq[r.int_in(0, len(seq) - 1)]
    for req, payload, fds in seq:
        ack = s.message(req, payload, fds)
        if s.w.port.conn is not s.conn:
            return
        if req == vu.SET_MEM_TABLE and ack == bytes(8):
            s.table, s.trusted = list(layout), True
    for q in (0, 1):
        s.avail_idx[q] = base
        # the rings of a fresh queue: zero, with avail/used indices at the base
        off = A_OFF + QUEUE_AT[q]
        s.w.mem[off:off + 0x3000] = bytes(0x3000)
        struct.pack_into("<H", s.w.mem, off + 0x1000 + 2, base)
        struct.pack_into("<H", s.w.mem, off + 0x2000 + 2, base)
    feature(400 + (num.bit_length() if num < 2 ** 16 else 17) + 20 * s.w.port.running)


def ring_offsets(s, q):
    """(desc, avail, used) file offsets of queue q as the backend has it, None if unknown."""
    vq = s.w.port.vqs[q]
    if not vq.addr_set or vq.num == 0:
        return None
    n = vq.num
    d = s.uva_off(vq.desc_uva, 16 * n)
    a = s.uva_off(vq.avail_uva, 6 + 2 * n)
    u = s.uva_off(vq.used_uva, 6 + 8 * n)
    if None in (d, a, u):
        return None
    return d, a, u


def step_descriptors(s, r):
    q = r.int_in(0, 1)
    offs = ring_offsets(s, q) if s.trusted else None
    vq = s.w.port.vqs[q]
    n = vq.num if offs else 256
    d0 = offs[0] if offs else A_OFF + QUEUE_AT[q]
    write = D_WRITE if q == 0 else 0
    for _ in range(1 + r.u8() % 6):
        i = r.int_in(0, n - 1) if n else 0
        length = pick_len(r)
        addr = pick_addr(r, length)
        flags = write if r.u8() % 4 else r.u16() & 7
        if r.chance(3):
            flags |= D_NEXT
        nxt = r.pick((i + 1, i + 1, i, (i + 2) % max(n, 1), r.u16(), 0))
        if r.chance(8):                        # an indirect table
            flags = D_INDIRECT | (r.u16() & 3 if r.chance(4) else 0)
            t = r.int_in(0, 7)
            addr = GPA + BUFS + 0x100 * t if r.u8() % 4 else pick_addr(r)
            length = 16 * r.int_in(1, 8) if r.u8() % 4 else pick_len(r)
            toff = s.gpa_off(addr, 16 * 8)
            if toff is not None:
                for k in range(r.int_in(1, 8)):
                    ln = pick_len(r)
                    DESC.pack_into(s.w.mem, toff + 16 * k, pick_addr(r, ln), ln,
                                   (write | (D_NEXT if r.bool() else 0)) if r.u8() % 4 else r.u16() & 7,
                                   r.pick((k + 1, k, r.u16() & 15)))
        DESC.pack_into(s.w.mem, d0 + 16 * i, addr, length & 0xffffffff, flags, nxt)
        if r.chance(2):
            data = r.blob(64)
            off = s.gpa_off(addr, len(data))
            if off is not None:
                s.w.mem[off:off + len(data)] = data
    if r.bool():
        step_avail(s, r, q)


def step_good_chains(s, r):
    """Well-formed chains (what a driver posts), so frames flow and the model is exercised."""
    q = r.int_in(0, 1)
    offs = ring_offsets(s, q) if s.trusted else None
    if offs is None:
        return
    vq = s.w.port.vqs[q]
    n, d0, a = vq.num, offs[0], offs[1]
    write = D_WRITE if q == 0 else 0
    for _ in range(1 + r.u8() % 4):
        head = r.int_in(0, n - 1)
        parts = 1 + r.u8() % 3
        i = head
        for k in range(parts):
            ln = r.pick((vq.hdr_len, 14, 20, 60, 100, 500, 1514, 2048)) if r.bool() else r.int_in(0, 2060)
            addr = GPA + BUFS + r.int_in(0, A_SIZE - BUFS - 2060)
            nxt = (i + 1) % n
            DESC.pack_into(s.w.mem, d0 + 16 * i, addr, ln, write | (D_NEXT if k < parts - 1 else 0), nxt)
            off = s.gpa_off(addr, ln)
            if off is not None:              # (not with a table that maps GPA elsewhere)
                s.w.mem[off:off + ln] = bytes((addr + j) & 0xff for j in range(min(ln, 64))).ljust(ln, b"\x5a")
            i = nxt
        struct.pack_into("<H", s.w.mem, a + 4 + 2 * (s.avail_idx[q] % n), head)
        s.avail_idx[q] = (s.avail_idx[q] + 1) & 0xffff
    struct.pack_into("<H", s.w.mem, a + 2, s.avail_idx[q])
    feature(540 + q)


def step_avail(s, r, q=None):
    q = r.int_in(0, 1) if q is None else q
    offs = ring_offsets(s, q) if s.trusted else None
    if offs is None:
        return
    vq = s.w.port.vqs[q]
    n = vq.num
    a = offs[1]
    for _ in range(1 + r.u8() % 8):
        head = r.int_in(0, n - 1) if r.u8() % 16 else r.u16()
        struct.pack_into("<H", s.w.mem, a + 4 + 2 * (s.avail_idx[q] % n), head)
        s.avail_idx[q] = (s.avail_idx[q] + 1) & 0xffff
    if r.chance(8):
        s.avail_idx[q] = r.pick((s.avail_idx[q] + n + 1, vq.last_avail_idx + n, r.u16())) & 0xffff
    if r.chance(6):
        struct.pack_into("<H", s.w.mem, a, r.u16() & 1 if r.bool() else r.u16())        # avail flags
    if r.chance(6):
        struct.pack_into("<H", s.w.mem, a + 4 + 2 * n, r.u16())                         # used_event
    struct.pack_into("<H", s.w.mem, a + 2, s.avail_idx[q])


def model_chain(s, vq, d0, head):
    """(frame or None, [file ranges read]) of the transmit chain at head, as the backend walks it."""
    m = s.w.mem
    table, num, idx, steps, ind = d0, vq.num, head, 0, False
    read, data = [], []
    while True:
        if idx >= num or steps == num:
            return None, read
        steps += 1
        read.append((table + 16 * idx, table + 16 * idx + 16))
        addr, ln, flags, nxt = DESC.unpack_from(m, table + 16 * idx)
        if flags & D_INDIRECT:
            if ind or not vq.indirect or flags & D_NEXT or ln == 0 or ln % 16 or ln > 65536 * 16 or addr % 8:
                return None, read
            t = s.gpa_off(addr, ln)
            if t is None:
                return None, read
            table, num, idx, steps, ind = t, ln // 16, 0, 0, True
            continue
        idx = nxt
        if flags & D_WRITE:
            return None, read
        if ln:
            off = s.gpa_off(addr, ln)
            if off is None:
                return None, read
            if sum(len(x) for x in data) + ln > 2048 + vq.hdr_len + 65536:
                return None, read          # too big anyway (bounded model)
            read.append((off, off + ln))
            data.append(bytes(m[off:off + ln]))
        if not flags & D_NEXT:
            break
    frame = b"".join(data)
    if len(frame) < vq.hdr_len:
        return None, read
    hdr, frame = frame[:vq.hdr_len], frame[vq.hdr_len:]
    if len(frame) > 65535 or len(frame) < 14:
        return None, read
    if not model_offload_ok(hdr, frame, vq.net_features):
        return None, read
    return frame, read


NET_F_CSUM, NET_F_HOST_TSO4, NET_F_HOST_TSO6, NET_F_HOST_ECN = 1 << 0, 1 << 11, 1 << 12, 1 << 13


def model_l3_offset(frame):
    """Where L3 starts after up to two 802.1Q/802.1ad tags; -1 if the frame ends first."""
    off, tags = 12, 0
    while True:
        if off + 2 > len(frame):
            return -1
        if tags < 2 and struct.unpack_from("!H", frame, off)[0] in (0x8100, 0x88a8):
            off, tags = off + 4, tags + 1
            continue
        return off + 2


def model_offload_ok(hdr, frame, features):
    """Whether the backend takes a guest frame's virtio-net header (virtio 5.1.6.2, as
    fastpath reads it): offsets within the frame, a TCP super-frame with a partial
    checksum on its TCP header, only offloads the guest negotiated."""
    flags, gso_type, _, gso_size, start, off = struct.unpack_from("<BBHHHH", hdr)
    flags &= ~2                       # DATA_VALID from a driver is ignored
    if flags == 0 and gso_type == 0:
        return True
    n, l3 = len(frame), model_l3_offset(frame)
    if l3 < 0:
        return False
    if flags & 1:
        if start < l3 + 20 or start + off + 2 > n or start - l3 > 0xffff:
            return False
        if not features & NET_F_CSUM:
            return False
    gso = gso_type & ~0x80
    if gso == 0:
        return True
    if gso not in (1, 4) or not flags & 1 or off != 16 or gso_size == 0 or start + 20 > n:
        return False
    if not features & (NET_F_HOST_TSO4 if gso == 1 else NET_F_HOST_TSO6):
        return False
    return not (gso_type & 0x80 and not features & NET_F_HOST_ECN)


def step_tx(s, r):
    w = s.w
    vq = w.port.txq
    offs = ring_offsets(s, 1) if s.trusted and vq.ready else None
    expect = None
    if offs is not None:
        d0, a, u = offs
        start = vq.last_avail_idx
        idx = struct.unpack_from("<H", w.mem, a + 2)[0]
        n_avail = (idx - start) & 0xffff
        expect, reads = [], []
        if n_avail <= vq.num:
            for k in range(n_avail):
                head = struct.unpack_from("<H", w.mem, a + 4 + 2 * ((start + k) % vq.num))[0]
                if head >= vq.num:
                    break
                f, rd = model_chain(s, vq, d0, head)
                reads += rd
                expect.append(f)
        used = (u, u + 6 + 8 * vq.num)
        if any(x0 < used[1] and used[0] < x1 for x0, x1 in reads):
            expect = None                           # the backend's used writes change what it reads
        elif sum(1 for f in expect if f is not None and len(f) > 2048) > w.g.pool.n_big_free:
            expect = None                           # which big frames find a buffer: not modelled
    w.g.run_until_idle()
    got = w.out.take()
    for f in got:
        assert 14 <= len(f) <= 65535, f"frame of {len(f)} bytes from the guest"
    if expect is not None:
        consumed = (vq.last_avail_idx - start) & 0xffff
        want = [f for f in expect[:consumed] if f is not None]
        assert got == want, f"guest frames differ from the model: {[len(f) for f in got]} vs {[len(f) for f in want]}"
    w.g.pool.check_accounting(0)
    feature(500 + min(len(got), 15) + 16 * vq.ready)


def step_rx(s, r):
    w = s.w
    frames = []
    for _ in range(1 + r.u8() % 6):
        n = r.pick((14, 15, 60, 64, 100, 1500, 1514, 2036, 2038, 2048)) if r.bool() else r.int_in(0, 2048)
        frames.append(bytes([r.u8()]) * n)
    before = w.vout.tx_packets
    w.inp.add(frames)
    w.g.run_until_idle()
    for f in w.out.take():
        assert 14 <= len(f) <= 2048
    assert w.vout.tx_packets - before <= len(frames)
    w.g.pool.check_accounting(0)
    feature(520 + min(w.vout.tx_packets - before, 7) + 8 * w.port.rxq.ready)


def step_garbage(s, r):
    """Raw bytes on the socket: bad versions, huge sizes, pieces, random descriptors."""
    k = r.u8() % 6
    if k == 0:
        data = r.blob(300)
    elif k == 1:
        data = HDR.pack(r.u32() if r.bool() else r.u8(), r.pick((0, 2, 3, 5, r.u32())), r.u16()) + r.blob(64)
    elif k == 2:
        data = HDR.pack(r.u8(), vu.VERSION, r.pick((vu.MAX_PAYLOAD, vu.MAX_PAYLOAD + 1, 2 ** 32 - 1, r.u32())))
        data += r.blob(64)
    else:                                             # a good message in pieces
        req = r.pick((vu.GET_FEATURES, vu.SET_VRING_NUM, vu.SET_VRING_KICK, vu.SET_MEM_TABLE))
        payload = {vu.GET_FEATURES: b"", vu.SET_VRING_NUM: struct.pack("<II", 1, 8),
                   vu.SET_VRING_KICK: struct.pack("<Q", 1)}.get(req, struct.pack("<II", 1, 0) +
                                                                struct.pack("<QQQQ", *LAYOUTS["A"][0]))
        data = HDR.pack(req, vu.VERSION | vu.FLAG_NEED_REPLY, len(payload)) + payload
        fds = {vu.SET_VRING_KICK: [s.w.efds[0]], vu.SET_MEM_TABLE: [s.w.memfd]}.get(req, [])
        cut = sorted(r.int_in(0, len(data)) for _ in range(2))
        for i, (x, y) in enumerate(((0, cut[0]), (cut[0], cut[1]), (cut[1], len(data)))):
            if y > x:
                s.send(data[x:y], fds if (i == r.int_in(0, 2) and fds) else ())
                s.pump()
                if s.w.port.conn is not s.conn:
                    s.after_disconnect()
                    return
        if req == vu.SET_MEM_TABLE:
            s.trusted = False
        feature(600 + k)
        return
    fds = fds_for(s, r, "efd") if r.chance(4) else ()
    s.send(data, fds)
    s.pump()
    feature(600 + k)
    if s.w.port.conn is not s.conn:
        s.after_disconnect()
    else:
        c = s.conn
        if c._head is not None or c._header:
            s.trusted = False                      # the stream no longer lines up with our steps
        else:
            s.trusted = s.trusted and s.w.port.mem.table() == [
                {"guest_phys_addr": g, "memory_size": z, "userspace_addr": u} for g, z, u, _ in s.table]


def one_input(data):
    r = Reader(data)
    w = world()
    fds_before = open_fds()
    # fresh guest memory: guards, zero regions
    for k in range(0, FILE_SIZE, PAGE):
        w.mem[k:k + PAGE] = GUARD
    w.mem[A_OFF:A_OFF + A_SIZE] = bytes(A_SIZE)
    w.mem[B_OFF:B_OFF + B_SIZE] = bytes(B_SIZE)
    for fd in w.efds:
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            pass
    s = Session(w, r)
    try:
        if r.u8() % 4:
            setup(s, r)
        for _ in range(1 + r.u8() % 24):
            if r.remaining == 0:
                break
            step = r.u8() % 20
            if step < 6:
                step_message(s, r, r.u8() % 11)
            elif step == 6:
                step_mem_table(s, r)
            elif step == 7:
                setup(s, r)
            elif step < 10:
                step_descriptors(s, r)
            elif step == 10:
                step_good_chains(s, r)
            elif step == 11:
                step_avail(s, r)
            elif step < 14:
                step_tx(s, r)
            elif step < 16:
                step_rx(s, r)
            elif step < 18:
                step_garbage(s, r)
            elif step == 18:
                s.reconnect(r.u8() % 2)
            else:
                s.message(vu.GET_VRING_BASE, struct.pack("<II", r.int_in(0, 1), 0))
            if s.w.port.conn is None:
                s.after_disconnect()
            s.check_state()
            s.check_guard()
        step_tx(s, r)
        step_rx(s, r)
        s.check_guard()
    finally:
        s.close()
    s.check_reset()
    w.g.pool.check_accounting(0)
    w.out.take()
    assert open_fds() == fds_before, "file descriptors leaked"


def seeds():
    return [bytes([1, 0, 0, 0, 1, 0, 24, 8, 0, 0, 10, 0, 5, 1, 0, 0, 12, 0, 0, 13, 0, 0, 14, 3]),
            bytes([1, 0, 0, 3, 0, 0, 8, 9, 0, 4, 0, 9, 1, 2, 3, 4, 12, 14, 0, 8, 1, 1]),
            bytes([0, 12, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 0, 2, 0x10, 0, 0, 0, 0]),
            bytes([3, 0xff, 0x40, 2, 0, 0, 9, 1, 0, 4, 0, 0, 0, 0, 0, 0, 1, 12, 12]),
            bytes(range(64)), bytes([1]) + bytes(range(255, 0, -3))]


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
