"""Fuzz the memif port: its control channel (protocol.MemifConnection, both roles) and its
rings (ring.MemifRing rx_burst / tx_burst, through the MemifInput/Output nodes).

Each input first picks fastpath's role; the harness is the other side, on a SOCK_SEQPACKET
socketpair, sending 128-byte messages with descriptors by SCM_RIGHTS as libmemif would:
- fastpath the master (the harness a slave): INIT (any version, id, mode, name),
  ADD_REGION (any index and size, over memfds of the harness, an unsealable memfd, a
  short memfd, a pipe, an eventfd, no fd or two), ADD_RING (any direction, index, region,
  offset, log2 size, eventfd or not), CONNECT, unexpected HELLO/ACK/CONNECTED,
  DISCONNECT, unknown types, short and long packets, in any order; a whole libmemif-like
  setup with fuzzed ring sizes and places; then the rings from fuzz input: S2M
  descriptors (region, offset, length, NEXT chains) and head moves (jumps too) for
  fastpath to receive, M2S buffers posted (any region/offset/length) for it to fill;
- fastpath the slave (the harness a master): HELLO with any versions and limits, ACKs,
  garbage or CONNECTED in reply to its INIT/ADD_REGION/ADD_RING/CONNECT; then, in the
  region fastpath created and sent, M2S descriptors filled (any length and flags) and
  the tail moved (past what it posted too) for fastpath to receive, and its S2M ring
  emptied (the tail moved, also impossibly) while it transmits.

Invariants, checked after every step:
- on_readable never raises and never reaches its "internal error" catch-all (nothing is
  logged at ERROR); every message fastpath sends is one well-formed 128-byte message,
  and a DISCONNECT it sends carries a reason;
- the port is consistent: connected => both rings attached and (unless the peer broke
  one) ready; after a disconnect nothing stays mapped and no ring is attached;
- no file descriptor leaks across an input;
- pool accounting exact (check_accounting(0));
- every received frame is 14..65535 bytes (a chain over 2048 lands in a big buffer) and
  -- where fastpath's own writes do not overlap what it reads -- exactly what a Python model of the ring (chains, bounds, the
  slave's fixed buffers) says; every frame fastpath transmits lands intact: descriptor
  lengths within the posted buffer, and the frames read back from the ring are, in
  order, frames that were sent;
- nothing is written outside the regions: the guard bytes after each region of the
  harness's memfds (mapped by fastpath when the size is not page-aligned, and file
  bytes it must not touch) stay intact.
"""
import array
import functools
import mmap
import os
import socket
import struct

from fuzzcommon import ErrorLog, Reader, atheris_main, feature, open_fds

from fastpath.graph.graph import Graph
from fastpath.memif import protocol as mp
from fastpath.memif.port import MemifInput, MemifOutput
from fastpath.pg.pg import PgInput, PgOutput

PAGE = 4096
FILES = (16 * PAGE, 4 * PAGE)             # the harness's region files: region sizes up to this
GUARD = bytes((0x5a ^ (i * 13)) & 0xff for i in range(PAGE))
EFD_NONBLOCK = 0o4000
D_NEXT = 1
BIG_DATA = 65535                          # the largest frame a memif chain may carry in
DESC = struct.Struct("<HHIII")            # flags, region, length, offset, metadata
SLAVE_LOG2, SLAVE_BUF = 5, 128


class World:
    def __init__(self):
        self.g = Graph(n_buffers=256)
        self.master = mp.MemifPort("m0", "/nonexistent/fuzz-memif.sock", role="master")
        self.listener = mp.MemifListener("/nonexistent/fuzz-memif.sock")
        self.listener.ports[0] = self.master
        self.master.listener = self.listener
        self.slave = mp.MemifPort("s0", "/nonexistent/fuzz-memif.sock", role="slave", id=3,
                                  ring_size=SLAVE_LOG2, buffer_size=SLAVE_BUF)
        self.out = PgOutput("out", 9)
        self.nodes = {}
        for k, p in enumerate((self.master, self.slave)):
            i = MemifInput(f"{p.name}-input", p.rx_ring, k + 1, next_node="out")
            o = MemifOutput(f"{p.name}-output", p.tx_ring, k + 1)
            src = PgInput(f"{p.name}-src", 5 + k, next_node=f"{p.name}-output")
            for n in (i, o, src):
                self.g.add(n)
            self.nodes[p.name] = (i, o, src)
        self.g.add(self.out)
        self.files = []
        for size in FILES:
            fd = os.memfd_create("fuzz-region", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            os.ftruncate(fd, size + PAGE)
            self.files.append((fd, mmap.mmap(fd, size + PAGE), size))
        self.unsealable = os.memfd_create("fuzz-unsealable", os.MFD_CLOEXEC)
        os.ftruncate(self.unsealable, FILES[0])
        self.small = os.memfd_create("fuzz-small", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(self.small, 256)
        self.pipe = os.pipe()
        self.efds = [os.eventfd(0, EFD_NONBLOCK) for _ in range(2)]
        self.log = ErrorLog.capture("fastpath.memif")


@functools.cache
def world():
    """The one World every input runs against (built on first use, not at import)."""
    return World()


class Session:
    def __init__(self, w, r, master):
        self.w, self.r = w, r
        self.master = master                 # fastpath's role
        self.port = w.master if master else w.slave
        self.inp, self.outp, self.src = w.nodes[self.port.name]
        self.sock = None
        self.conn = None
        self.regions = []                    # master: [(file index, size)] the port mapped
        self.ever = []                       # every (file index, size) mapped in this input
        self.rings = {}                      # master: s2m -> (region, offset, log2) added
        self.head = {True: 0, False: 0}      # the harness's producer index per ring
        self.smem = None                     # slave: fastpath's region, mapped here
        self.sfd = -1
        self.connect()

    # ---- the connection

    def connect(self):
        if self.sock is not None:
            self.sock.close()
        self.drop_smem()
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        a.setblocking(False)
        self.sock = a
        self.regions, self.rings = [], {}
        self.head = {True: 0, False: 0}
        if self.master:
            self.conn = mp.MemifConnection(b, master=True, listener=self.w.listener)
            self.w.listener.pending.add(self.conn)
            self.conn.send(mp.hello("fastpath"))
            self.drain()
        else:
            self.conn = mp.MemifConnection(b, master=False, port=self.port)
            self.port.conn = self.conn

    def drop_smem(self):
        if self.smem is not None:
            self.smem.close()
            self.smem = None
        if self.sfd >= 0:
            os.close(self.sfd)
            self.sfd = -1

    def alive(self):
        c = self.conn
        return c is not None and not c.closed

    def close(self):
        c = self.conn
        if c is not None and not c.closed:
            if c.port is not None:
                c.port.disconnected(c, "end of input")
            else:
                self.w.listener.forget(c, "end of input")
        self.sock.close()
        self.sock = None
        self.conn = None
        self.drop_smem()

    def send(self, data, fds=()):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self.sock.sendmsg([data], anc)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError, ConnectionRefusedError):
            pass

    def drain(self):
        """The messages fastpath sent: [(kind, body, fds)]; each must be a good message."""
        out = []
        while True:
            try:
                data, anc, flags, _ = self.sock.recvmsg(256, socket.CMSG_SPACE(16))
            except (BlockingIOError, OSError):
                break
            if not data:
                break
            fds = []
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(cdata[:len(cdata) - len(cdata) % 4])
                    fds.extend(a)
            assert len(data) == mp.MSG_SIZE, f"fastpath sent a {len(data)}-byte message"
            kind, body = mp.decode(data)
            if kind == mp.DISCONNECT:
                assert body.reason, "DISCONNECT without a reason"
            out.append((kind, body, fds))
        return out

    def step_send(self, data, fds=()):
        """Send one packet and let fastpath handle it; its answers."""
        self.send(data, fds)
        if self.alive():
            self.conn.on_readable()
        assert not self.w.log.records, f"internal error: {self.w.log.records}"
        assert not self.port.last_error.startswith("internal error"), self.port.last_error
        got = self.drain()
        for kind, body, fds in got:
            if kind == mp.ADD_REGION and not self.master and fds and self.smem is None:
                self.sfd = fds.pop()
                self.smem = mmap.mmap(self.sfd, body.size)
            for fd in fds:
                os.close(fd)
        if not self.alive():
            self.after_disconnect()
        return got

    def after_disconnect(self):
        self.check_reset()
        self.connect()

    # ---- invariants

    def check_reset(self):
        p = self.port
        if p.conn is None:
            assert p.regions.n == 0, "regions still mapped after a disconnect"
            assert not p.s2m.attached and not p.m2s.attached
            assert not p._pending_rings

    def check_state(self):
        p = self.port
        if p.connected:
            for ring in (p.s2m, p.m2s):
                st = ring.state()
                assert ring.attached and (ring.ready or ring.broken), st
                assert (st["broken_reason"] != "") == st["broken"]
        else:
            for ring in (p.s2m, p.m2s):
                assert not ring.ready
        for k, v in p.counters.items():
            assert v >= 0, k
        if self.master and p.conn is not None:
            assert [x["size"] for x in p.regions.table()] == [s for _, s in self.regions], \
                (p.regions.table(), self.regions)

    def check_guard(self):
        if not self.master:
            return
        for k, (fd, m, size) in enumerate(self.w.files):
            # a region may legitimately cover the file past FILES[k] (the file is longer)
            start = max([size] + [z for kk, z in self.ever if kk == k])
            if start < size + PAGE:
                assert m[start:size + PAGE] == GUARD[start - size:], f"region guard of file {k} overwritten"


# ---------------------------------------------------------------- fastpath the master

def region_size(r, k):
    full = FILES[k]
    return r.pick((full, full, full - 8, full - 100, full - PAGE + 1, PAGE, 128, 1, 0, full + 1,
                   full + PAGE, 1 << 32, (1 << 32) + 1, r.u32()))


def fd_choice(s, r, right):
    w = s.w
    k = r.u8() % 10
    if k < 7:
        return [right]
    if k == 7:
        return []
    if k == 8:
        return [r.pick((w.unsealable, w.small, w.pipe[0], w.efds[0], w.files[0][0]))]
    return [right, w.efds[1]]


def m_add_region(s, r, k=None, size=None, good=False):
    k = r.int_in(0, 1) if k is None else k
    size = region_size(r, k) if size is None else size
    index = len(s.regions) if good or r.u8() % 8 else r.pick((0, 1, 2, 16, r.u16()))
    fds = [s.w.files[k][0]] if good and r.u8() % 16 else fd_choice(s, r, s.w.files[k][0])
    got = s.step_send(mp.add_region(index, size), fds)
    if got and got[-1][0] == mp.ACK:
        s.regions.append((k, size))
        s.ever.append((k, size))
    feature(700 + 2 * k + bool(got and got[-1][0] == mp.ACK))


def m_add_ring(s, r, s2m=None, log2=None, offset=None, region=0, good=False):
    s2m = r.bool() if s2m is None else s2m
    log2 = r.pick((0, 1, 2, 3, 4, 5, 6, 8)) if r.u8() % 8 else r.pick((10, 14, 15, 255)) if log2 is None else log2
    if offset is None:
        offset = (0 if s2m else 2048) if r.u8() % 4 else r.pick((8, 4, 2048 + 8 * r.u8(), FILES[0] - 64,
                                                                 0xfffffff8, r.u32()))
    region = region if good or r.u8() % 8 else r.pick((1, 2, r.u16()))
    # a ring the harness laid out: cookie, zero flags and indices
    if region < len(s.regions):
        k, size = s.regions[region]
        m = s.w.files[k][1]
        if offset + 128 <= size:
            struct.pack_into("<IHHH", m, offset, mp.COOKIE if r.u8() % 16 else r.u32(), 0, 0, 0)
            struct.pack_into("<H", m, offset + 64, 0)
    flags = mp.ADD_RING_S2M if s2m else 0
    if not good and r.chance(16):
        flags = r.u16()
    index = 0 if good or r.u8() % 8 else r.u16()
    fds = [s.w.efds[0 if s2m else 1]] if good and r.u8() % 16 else fd_choice(s, r, s.w.efds[0 if s2m else 1])
    got = s.step_send(mp.encode(mp.ADD_RING, flags, index, region, offset, log2, r.u16() if r.chance(8) else 0), fds)
    if got and got[-1][0] == mp.ACK:
        s.rings[bool(flags & mp.ADD_RING_S2M)] = (region, offset, log2)
    feature(720 + 2 * s2m + bool(got and got[-1][0] == mp.ACK))


def m_setup(s, r):
    """INIT, one or two regions, the two rings, CONNECT: a libmemif slave."""
    s.step_send(mp.init(0, "fuzz"))
    if not s.alive():
        return
    m_add_region(s, r, 0, FILES[0] if r.u8() % 4 else region_size(r, 0), good=True)
    if r.chance(3):
        m_add_region(s, r, 1, FILES[1], good=True)
    log2 = r.pick((0, 1, 2, 3, 4, 5, 6, 7)) if r.u8() % 8 else r.pick((8, 10, 14))
    rb = (128 + 16 * (1 << log2) + 63) & ~63
    m_add_ring(s, r, True, log2, 0 if r.u8() % 8 else None, good=True)
    m_add_ring(s, r, False, log2, rb if r.u8() % 8 else None, good=True)
    got = s.step_send(mp.encode(mp.CONNECT, "fuzz-if"))
    feature(740 + (got[-1][0] if got else 0) + 10 * s.port.connected)


def m_message(s, r):
    k = r.u8() % 10
    if k == 0:
        msg = mp.init(r.pick((0, 0, 0, 1, 3, r.u32())), r.text(40) if r.chance(4) else "x",
                      mode=r.pick((0, 0, 0, 1, 2, 255)), secret=r.blob(30),
                      version=r.pick((mp.VERSION, mp.VERSION, 0x0100, 0x0201, r.u16())))
        s.step_send(msg)
    elif k == 1:
        m_add_region(s, r)
    elif k == 2:
        m_add_ring(s, r)
    elif k == 3:
        s.step_send(mp.encode(mp.CONNECT, r.text(40)))
    elif k == 4:
        s.step_send(r.pick((mp.encode(mp.ACK), mp.hello("x"), mp.encode(mp.CONNECTED, "y"))))
    elif k == 5:
        s.step_send(mp.disconnect(r.text(100), r.u32()))
    elif k == 6:                                     # unknown types, any body
        s.step_send(struct.pack("<H", r.pick((0, 9, 0xffff, r.u16()))) + r.bytes(126).ljust(126, b"\0"))
    elif k == 7:                                     # not one message
        n = r.pick((0, 1, 2, 127, 129, 200, 256, 4096))
        s.step_send(struct.pack("<H", r.int_in(1, 8)) + r.bytes(max(n - 2, 0)).ljust(max(n - 2, 0), b"\0"))
    elif k == 8:                                     # a message body of raw fuzz bytes
        s.step_send(struct.pack("<H", r.int_in(1, 8)) + r.bytes(126).ljust(126, b"\0"),
                    fd_choice(s, r, s.w.files[0][0]) if r.bool() else ())
    else:
        m_setup(s, r)
    feature(760 + k)


def ring_info(s, s2m):
    """(file mmap, region size, ring offset, slots) of a ring fastpath runs, or None."""
    ring = s.port.s2m if s2m else s.port.m2s
    if not ring.ready:
        return None
    st = ring.state()
    k, size = s.regions[st["region"]]
    return s.w.files[k][1], size, st["offset"], st["size"]


def m_write_s2m(s, r):
    """The slave side of S2M: descriptors for fastpath to receive, and the head moved."""
    info = ring_info(s, True)
    if info is None:
        return
    m, size, off, n = info
    for _ in range(1 + r.u8() % 8):
        slot = s.head[True] & (n - 1)
        ln = r.pick((0, 1, 13, 14, 60, 100, 1514, 2048, 2049, 4096, 0xffffffff)) if r.bool() else r.int_in(0, 2100)
        region = 0 if r.u8() % 8 else r.pick((1, 2, 0xffff))
        rsize = s.regions[region][1] if region < len(s.regions) else FILES[0]
        o = r.pick((4096 + 64 * r.u8(), max(rsize - ln, 0) if ln < 1 << 31 else 0, max(rsize - ln + 1, 0) if ln < 1 << 31 else 1,
                    r.u32(), 2048, 0)) if r.u8() % 4 else 4096 + r.int_in(0, 40000)
        flags = D_NEXT if r.chance(3) else 0
        if r.chance(16):
            flags = r.u16()
        DESC.pack_into(m, off + 128 + 16 * slot, flags, region, ln & 0xffffffff, o & 0xffffffff, 0)
        if region < len(s.regions) and (o & 0xffffffff) + min(ln, 64) <= s.regions[region][1]:
            fm = s.w.files[s.regions[region][0]][1]
            o &= 0xffffffff
            fm[o:o + min(ln, 64)] = bytes((o + j) & 0xff for j in range(min(ln, 64)))
        s.head[True] = (s.head[True] + 1) & 0xffff
    head = s.head[True]
    if r.chance(8):
        head = r.pick((head + n, head + n + 1, r.u16())) & 0xffff
    struct.pack_into("<H", m, off + 6, head)


def m_post_m2s(s, r):
    """The slave side of M2S: buffers posted for fastpath to fill, and the head moved."""
    info = ring_info(s, False)
    if info is None:
        return
    m, size, off, n = info
    for _ in range(1 + r.u8() % 8):
        slot = s.head[False] & (n - 1)
        ln = r.pick((0, 64, 128, 1024, 2048, 0xffffffff)) if r.bool() else r.int_in(0, 2100)
        region = 0 if r.u8() % 8 else r.pick((1, 2, 0xffff))
        o = 4096 + 2048 * r.int_in(0, 18) if r.u8() % 4 else r.pick((FILES[0] - ln + r.int_in(-2, 2), r.u32(), 0))
        DESC.pack_into(m, off + 128 + 16 * slot, 0, region, ln & 0xffffffff, o & 0xffffffff, 0)
        s.head[False] = (s.head[False] + 1) & 0xffff
    head = s.head[False]
    if r.chance(8):
        head = r.pick((head + n + 1, r.u16())) & 0xffff
    struct.pack_into("<H", m, off + 6, head)


def _overlaps(ranges, others):
    return any(a0 < b1 and b0 < a1 for a0, a1 in ranges for b0, b1 in others)


def model_rx(s, consumed_from, consumed_to, read_slot):
    """Frames in slots [from, to) (mod 2**16) as rx_burst takes them: chains, drops."""
    frames, cur, bad = [], [], False
    i = consumed_from
    while i != consumed_to:
        data, flags = read_slot(i)
        if data is None:
            bad = True
        elif not bad:
            cur.append(data)
            if sum(len(x) for x in cur) > BIG_DATA:
                bad = True
        i = (i + 1) & 0xffff
        if not flags & D_NEXT:
            f = b"".join(cur)
            frames.append(None if bad or len(f) < 14 else f)
            cur, bad = [], False
    return frames


def step_rx(s, r):
    """Run the graph with nothing to transmit: fastpath receives; compare with the model."""
    p = s.port
    ring = p.rx_ring
    was_ready = ring.ready
    if was_ready:
        st = ring.state()
        start, n, roff = st["pos"], st["size"], st["offset"]
        reads, headers = [], []
        if s.master:
            snap = [bytes(m) for _, m, _ in s.w.files]       # what fastpath will read
            rk = s.regions[st["region"]][0]
            for rr in (p.s2m, p.m2s):
                x = rr.state()
                headers.append((s.regions[x["region"]][0], x["offset"], x["offset"] + 128))

            def read_slot(i):
                d = roff + 128 + 16 * (i & (n - 1))
                flags, region, ln, o, _ = DESC.unpack_from(snap[rk], d)
                reads.append((rk, d, d + 16))
                if region >= len(s.regions) or o + ln > s.regions[region][1]:
                    return None, flags
                k = s.regions[region][0]
                reads.append((k, o, o + ln))
                return snap[k][o:o + ln], flags
        else:
            snap = bytes(s.smem)
            m2s_bufs = mp.slave_layout((n - 1).bit_length(), SLAVE_BUF)[3]

            def read_slot(i):
                flags, region, ln, o, _ = DESC.unpack_from(snap, roff + 128 + 16 * (i & (n - 1)))
                if ln > SLAVE_BUF:
                    return None, flags
                b = m2s_bufs + (i & (n - 1)) * SLAVE_BUF
                return snap[b:b + ln], flags
    s.w.g.run_until_idle()
    got = s.w.out.take()
    for f in got:
        assert 14 <= len(f) <= BIG_DATA, f"received a {len(f)}-byte frame"
    if was_ready and ring.attached:
        end = ring.state()["pos"]
        want = model_rx(s, start, end, read_slot)
        if not _overlaps_any(reads, headers):
            want = [f for f in want if f is not None]
            assert got == want, f"received frames differ from the model: {[len(f) for f in got]} vs {[len(f) for f in want]}"
            feature(850 + min(len(want), 15))
    s.w.g.pool.check_accounting(0)
    feature(800 + min(len(got), 15) + 16 * ring.ready)


def _overlaps_any(reads, headers):
    for k, a0, a1 in reads:
        for k2, b0, b1 in headers:
            if k == k2 and a0 < b1 and b0 < a1:
                return True
    return False


def step_tx(s, r):
    """Frames for the peer: fastpath fills the buffers posted to it."""
    p = s.port
    i, o, src = s.w.nodes[p.name]
    frames = []
    for k in range(1 + r.u8() % 6):
        n = r.pick((14, 60, 64, 100, 127, 128, 129, 1514, 2048)) if r.bool() else r.int_in(0, 2048)
        frames.append(bytes([k + 1]) * n)
    ring = p.tx_ring
    before = o.tx_packets
    st0 = ring.state() if ring.attached else None
    src.add(frames)
    s.w.g.run_until_idle()
    for f in s.w.out.take():                  # what the input took meanwhile
        assert 14 <= len(f) <= BIG_DATA
    sent = o.tx_packets - before
    assert sent <= len(frames)
    s.w.g.pool.check_accounting(0)
    if st0 is not None and ring.attached and not ring.broken and not s.master and sent:
        # read back what fastpath (the slave) put in its S2M ring
        n = st0["size"]
        _, _, s2m_bufs, _, _ = mp.slave_layout((n - 1).bit_length(), SLAVE_BUF)
        out, cur, i = [], b"", st0["pos"]
        while i != ring.state()["pos"]:
            flags, region, ln, off, _ = DESC.unpack_from(s.smem, st0["offset"] + 128 + 16 * (i & (n - 1)))
            assert ln <= SLAVE_BUF and off == s2m_bufs + (i & (n - 1)) * SLAVE_BUF and region == 0
            cur += bytes(s.smem[off:off + ln])
            if not flags & D_NEXT:
                out.append(cur)
                cur = b""
            i = (i + 1) & 0xffff
        assert cur == b"", "the last frame's chain does not end"
        it = iter(frames)
        assert all(any(f == g for g in it) for f in out), "transmitted frames arrived changed"
        assert len(out) == sent
    feature(830 + min(sent, 7) + 8 * ring.ready)


def m_failures(s):
    """What the dispatcher does when the failure eventfd is readable."""
    p = s.port
    if p.s2m.broken or p.m2s.broken:
        p._on_ring_failure(p.fail_fd)
        if s.alive():
            s.drain()
        else:
            s.after_disconnect()
    else:
        try:
            os.eventfd_read(p.fail_fd)
        except BlockingIOError:
            pass


# ---------------------------------------------------------------- fastpath the slave

def s_handshake(s, r):
    """The master's side: HELLO, ACKs (or not), CONNECTED."""
    hello = mp.hello(r.text(40) if r.chance(8) else "fuzz-master",
                     max_region=r.pick((15, 0, 255)), max_m2s_ring=r.pick((0, 1, 255)),
                     max_s2m_ring=r.pick((0, 1, 255)),
                     max_log2_ring_size=r.pick((14, 14, 14, 0, 1, 3, 255)),
                     min_version=r.pick((mp.VERSION, mp.VERSION, mp.VERSION, 0x0100, 0x0300, r.u16())),
                     max_version=r.pick((mp.VERSION, mp.VERSION, mp.VERSION, 0x0100, 0x0300, r.u16())))
    got = s.step_send(hello)
    for _ in range(5):
        if not got or not s.alive():
            break
        kind = got[-1][0]
        if kind == mp.CONNECT:
            reply = mp.encode(mp.CONNECTED, "fuzz-master") if r.u8() % 8 else s_garbage_msg(r)
        else:
            reply = mp.encode(mp.ACK) if r.u8() % 12 else s_garbage_msg(r)
        got = s.step_send(reply)
    feature(900 + 10 * s.port.connected + (got[-1][0] if got else 0))


def s_garbage_msg(r):
    return r.pick((mp.hello("again"), mp.encode(mp.CONNECT, "x"), mp.init(0, "x"), mp.add_region(0, 4096),
                   mp.encode(mp.CONNECTED, "early"), mp.disconnect("bye"), b"\x01\x00",
                   struct.pack("<H", r.u16()) + bytes(126)))


def s_fill_m2s(s, r):
    """The master fills buffers fastpath posted on M2S and moves the tail."""
    ring = s.port.m2s
    if not ring.ready or s.smem is None:
        return
    st = ring.state()
    n, off = st["size"], st["offset"]
    tail = st["tail"]
    for _ in range(1 + r.u8() % 8):
        slot = tail & (n - 1)
        ln = r.pick((0, 13, 14, 60, SLAVE_BUF, SLAVE_BUF + 1, 0xffffffff)) if r.bool() else r.int_in(0, SLAVE_BUF)
        flags = D_NEXT if r.chance(3) else 0
        if r.chance(16):
            flags = r.u16()
        region, o = (0, 0) if r.u8() % 4 else (r.u16(), r.u32())        # ignored by the slave
        struct.pack_into("<HHII", s.smem, off + 128 + 16 * slot, flags, region, ln & 0xffffffff, o)
        if r.bool():
            _, _, _, bufs, _ = mp.slave_layout((n - 1).bit_length(), SLAVE_BUF)
            b = bufs + slot * SLAVE_BUF
            s.smem[b:b + SLAVE_BUF] = bytes((slot * 3 + j) & 0xff for j in range(SLAVE_BUF))
        tail = (tail + 1) & 0xffff
    if r.chance(8):
        tail = r.pick((tail + n + 1, st["head"] + 1, r.u16())) & 0xffff
    struct.pack_into("<H", s.smem, off + 64, tail)


def s_empty_s2m(s, r):
    """The master consumes what fastpath sent on S2M (moves the tail), sometimes impossibly."""
    ring = s.port.s2m
    if not ring.ready or s.smem is None:
        return
    st = ring.state()
    tail = st["head"] if r.u8() % 4 else r.pick((st["tail"] + 1, st["head"] + 1, r.u16())) & 0xffff
    struct.pack_into("<H", s.smem, st["offset"] + 64, tail)
    if r.chance(8):
        struct.pack_into("<H", s.smem, st["offset"] + 4, r.u16())           # ring flags


# ---------------------------------------------------------------- one input

def one_input(data):
    r = Reader(data)
    w = world()
    fds_before = open_fds()
    for fd, m, size in w.files:
        m[:size] = bytes(size)
        m[size:size + PAGE] = GUARD
    for fd in (*w.efds, w.master.fail_fd, w.slave.fail_fd):
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            pass
    master = r.u8() % 3 != 0
    s = Session(w, r, master)
    try:
        if r.u8() % 4:
            m_setup(s, r) if master else s_handshake(s, r)
        for _ in range(1 + r.u8() % 24):
            if r.remaining == 0:
                break
            step = r.u8() % 16
            if step < 4:
                if master:
                    m_message(s, r)
                else:
                    s.step_send(s_garbage_msg(r) if r.bool() else r.bytes(r.pick((0, 2, 128, 129))))
            elif step < 7:
                (m_write_s2m if master else s_fill_m2s)(s, r)
            elif step < 9:
                (m_post_m2s if master else s_empty_s2m)(s, r)
            elif step < 11:
                step_rx(s, r)
            elif step < 13:
                step_tx(s, r)
            elif step == 13:
                m_failures(s)
            elif step == 14:
                s.close()
                s.check_reset()
                s.connect()
                if r.bool():
                    m_setup(s, r) if master else s_handshake(s, r)
            else:                                   # the peer hangs up
                s.sock.close()
                s.sock = None
                if s.alive():
                    s.conn.on_readable()
                assert not s.alive(), "EOF did not close the connection"
                s.after_disconnect()
            s.check_state()
            s.check_guard()
        step_rx(s, r)
        step_tx(s, r)
        m_failures(s)
        s.check_state()
        s.check_guard()
    finally:
        s.close()
    s.check_reset()
    assert not w.listener.pending
    w.g.pool.check_accounting(0)
    w.out.take()
    assert open_fds() == fds_before, "file descriptors leaked"


def seeds():
    return [bytes([1, 1, 0, 0, 0, 1, 1, 4, 1, 1, 0, 1, 1, 4, 0, 5, 0, 0, 1, 0, 9, 1, 0, 0, 0, 0, 0, 10]),
            bytes([1, 1, 0, 0, 0, 0, 3, 1, 0, 4, 0, 0, 0, 0, 7, 0, 7, 1, 0, 0, 0, 0, 0, 11, 0, 12, 4]),
            bytes([0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 4, 5, 1, 0, 0, 9, 7, 0, 3, 10, 12, 3, 1]),
            bytes([0, 1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 2, 1, 14, 0, 0, 0, 0, 8, 0, 0, 11, 0]),
            bytes([2, 0, 3, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]), bytes(range(100))]


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
