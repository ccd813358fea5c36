"""vhost-user ports: the protocol, the split rings and a real QEMU guest.

Part one drives a port with FakeFrontEnd, a minimal vhost-user front end written here:
it shares a memfd as guest RAM, lays out the rings itself, puts frames in the transmit
queue, kicks, and reads what fastpath wrote into the receive queue. It also does what a
hostile or broken guest or front end would: descriptors outside memory, loops, index
jumps, bad ring addresses, garbage and oversized messages, disconnects mid-traffic.

Part two boots a Linux guest under QEMU (TCG) with a virtio-net device on a vhost-user
port of a fastpath bridge, and pings a host in a network namespace through it. It needs
root, qemu-system-x86, a Debian kernel image and busybox-static (scripts/setup.sh).

Every test runs the switch's dispatch loop in a thread, as the daemon does.
"""
import array
import contextlib
import glob
import hashlib
import lzma
import mmap
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from fastpath.control import CommandError, Control
from fastpath.switch import ConfigError, Switch
from fastpath.vhost import protocol as vu

BCAST = "ff:ff:ff:ff:ff:ff"
GUEST_MAC = "52:54:00:00:00:01"
HOST_MAC = "02:00:00:00:00:02"
HDR = 12

# ---------------------------------------------------------------- a fake front end

EFD_NONBLOCK = 0o4000
D_NEXT, D_WRITE, D_INDIRECT = 1, 2, 4


def frame(n=100, src=GUEST_MAC, dst=BCAST, seq=0):
    pkt = Ether(src=src, dst=dst) / IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=1000 + seq, dport=9)
    pad = n - len(pkt)
    return bytes(pkt / Raw(bytes((seq + i) & 0xff for i in range(max(pad, 0)))))


class FakeQueue:
    """One split ring laid out in the fake guest's memory at `offset`."""

    def __init__(self, fe, index, offset, num):
        self.fe, self.index, self.num = fe, index, num
        self.desc = offset
        self.avail = offset + 16 * num
        self.used = (self.avail + 6 + 2 * num + 4095) & ~4095
        self.avail_idx = 0
        self.used_seen = 0
        self.free = list(range(num))
        self.chains = {}
        self.kick = os.eventfd(0, EFD_NONBLOCK)
        self.call = os.eventfd(0, EFD_NONBLOCK)
        self.err = os.eventfd(0, EFD_NONBLOCK)

    def close(self):
        for fd in (self.kick, self.call, self.err):
            os.close(fd)

    def write_desc(self, i, addr, length, flags, nxt=0):
        struct.pack_into("<QIHH", self.fe.mem, self.desc + 16 * i, addr, length, flags, nxt)

    def add_chain(self, descs, publish=True):
        """descs: [(gpa, len, flags)] -> head; chained with NEXT, one avail entry."""
        ids = [self.free.pop(0) for _ in descs]
        for k, (addr, length, flags) in enumerate(descs):
            last = k == len(descs) - 1
            self.write_desc(ids[k], addr, length, flags | (0 if last else D_NEXT), 0 if last else ids[k + 1])
        self.chains[ids[0]] = ids
        self.push_head(ids[0], publish)
        return ids[0]

    def push_head(self, head, publish=True):
        struct.pack_into("<H", self.fe.mem, self.avail + 4 + 2 * (self.avail_idx % self.num), head)
        self.avail_idx = (self.avail_idx + 1) & 0xffff
        if publish:
            self.publish()

    def publish(self):
        struct.pack_into("<H", self.fe.mem, self.avail + 2, self.avail_idx)

    def set_avail_idx(self, v):
        struct.pack_into("<H", self.fe.mem, self.avail + 2, v & 0xffff)

    def set_avail_flags(self, v):
        struct.pack_into("<H", self.fe.mem, self.avail, v)

    def set_used_event(self, v):
        struct.pack_into("<H", self.fe.mem, self.avail + 4 + 2 * self.num, v & 0xffff)

    def avail_event(self):
        return struct.unpack_from("<H", self.fe.mem, self.used + 4 + 8 * self.num)[0]

    def used_idx(self):
        return struct.unpack_from("<H", self.fe.mem, self.used + 2)[0]

    def take_used(self):
        """[(head, len)] published since the last call; their descriptors are freed."""
        out = []
        idx = self.used_idx()
        while self.used_seen != idx:
            head, length = struct.unpack_from("<II", self.fe.mem, self.used + 4 + 8 * (self.used_seen % self.num))
            out.append((head, length))
            self.free.extend(self.chains.pop(head, []))
            self.used_seen = (self.used_seen + 1) & 0xffff
        return out

    def do_kick(self):
        os.eventfd_write(self.kick, 1)

    def calls(self):
        try:
            return os.eventfd_read(self.call)
        except BlockingIOError:
            return 0

    def errors(self):
        try:
            return os.eventfd_read(self.err)
        except BlockingIOError:
            return 0


class FakeFrontEnd:
    """What QEMU does for a virtio-net device, in a few lines: memfd guest RAM at a
    guest-physical and a (made-up) front-end-virtual address, rings, buffers."""
    MEM_SIZE = 4 << 20
    GPA = 0x4000_0000
    UVA = 0x7f12_3400_0000
    QUEUE_AT = (0x0, 0x20000)
    RX_BUFS, TX_BUFS = 0x100000, 0x200000
    BUF = 2048

    def __init__(self, path=None, sock=None, num=256, seal=True):
        flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if seal else 0)
        self.memfd = os.memfd_create("fake-guest", flags)
        os.ftruncate(self.memfd, self.MEM_SIZE)
        self.mem = mmap.mmap(self.memfd, self.MEM_SIZE)
        if sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
        sock.settimeout(5)
        self.sock = sock
        self.num = num
        self.queues = [FakeQueue(self, i, self.QUEUE_AT[i], num) for i in range(2)]
        self.rx, self.tx = self.queues
        self.tx_slot = 0

    def close(self):
        with contextlib.suppress(OSError):
            self.sock.close()
        for q in self.queues:
            q.close()
        self.mem.close()
        os.close(self.memfd)

    def gpa(self, off):
        return self.GPA + off

    def uva(self, off):
        return self.UVA + off

    # ---- messages

    def send(self, req, payload=b"", fds=(), flags=vu.VERSION, size=None):
        data = struct.pack("<III", req, flags, len(payload) if size is None else size) + payload
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], anc)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionResetError("backend closed the connection")
            buf += chunk
        return buf

    def reply(self, req):
        r, flags, size = struct.unpack("<III", self.recv_exact(12))
        assert r == req and flags == vu.VERSION | vu.FLAG_REPLY, (r, flags)
        return self.recv_exact(size)

    def get_u64(self, req):
        self.send(req)
        return struct.unpack("<Q", self.reply(req))[0]

    def request(self, req, payload=b"", fds=()):
        """Send with NEED_REPLY; True when the backend acked (REPLY_ACK)."""
        self.send(req, payload, fds, flags=vu.VERSION | vu.FLAG_NEED_REPLY)
        return struct.unpack("<Q", self.reply(req))[0] == 0

    def state(self, req, index, num):
        return self.request(req, struct.pack("<II", index, num))

    def mem_table(self, size=None, fd=None, offset=0):
        payload = struct.pack("<II", 1, 0) + struct.pack(
            "<QQQQ", self.GPA, size or self.MEM_SIZE, self.UVA, offset)
        return self.request(vu.SET_MEM_TABLE, payload, [self.memfd if fd is None else fd])

    def vring_addr(self, q, desc=None, used=None, avail=None):
        payload = struct.pack("<IIQQQQ", q.index, 0, self.uva(q.desc) if desc is None else desc,
                              self.uva(q.used) if used is None else used,
                              self.uva(q.avail) if avail is None else avail, 0)
        return self.request(vu.SET_VRING_ADDR, payload)

    def vring_fd(self, req, index, fd):
        if fd is None:
            return self.request(req, struct.pack("<Q", index | vu.VRING_FD_NOFD))
        return self.request(req, struct.pack("<Q", index), [fd])

    def start_queue(self, q, base=0):
        assert self.state(vu.SET_VRING_NUM, q.index, self.num)
        assert self.state(vu.SET_VRING_BASE, q.index, base)
        assert self.vring_addr(q)
        assert self.vring_fd(vu.SET_VRING_KICK, q.index, q.kick)
        assert self.vring_fd(vu.SET_VRING_CALL, q.index, q.call)
        assert self.vring_fd(vu.SET_VRING_ERR, q.index, q.err)
        assert self.state(vu.SET_VRING_ENABLE, q.index, 1)

    def handshake(self, features=vu.FEATURES):
        """QEMU 7.2's order: features, protocol features, owner, memory, then each ring."""
        assert self.get_u64(vu.GET_FEATURES) == vu.FEATURES
        assert self.get_u64(vu.GET_PROTOCOL_FEATURES) == vu.PROTOCOL_FEATURES
        self.send(vu.SET_PROTOCOL_FEATURES, struct.pack("<Q", vu.PROTOCOL_FEATURES))
        assert self.get_u64(vu.GET_QUEUE_NUM) == 1
        self.send(vu.SET_OWNER)
        assert self.request(vu.SET_FEATURES, struct.pack("<Q", features))
        assert self.mem_table()
        for q in self.queues:
            self.start_queue(q)
        self.hdr = 12 if features & (vu.F_VERSION_1 | vu.F_MRG_RXBUF) else 10

    # ---- guest driver side

    def transmit(self, frames, kick=True):
        """Each frame behind a zeroed virtio-net header, one descriptor each."""
        for f in frames:
            off = self.TX_BUFS + (self.tx_slot % 256) * self.BUF
            self.tx_slot += 1
            self.mem[off:off + self.hdr + len(f)] = bytes(self.hdr) + f
            self.tx.add_chain([(self.gpa(off), self.hdr + len(f), 0)])
        if kick:
            self.tx.do_kick()

    def post_rx(self, n, size=BUF):
        for i in range(n):
            off = self.RX_BUFS + (i % 256) * self.BUF
            self.rx.add_chain([(self.gpa(off), size, D_WRITE)])

    def received(self):
        """Frames the backend wrote into the receive queue: [(num_buffers, frame)]."""
        out = []
        used = self.rx.take_used()
        i = 0
        while i < len(used):
            head, length = used[i]
            data = self.read_chain(head, length)
            nbuf = struct.unpack_from("<H", data, 10)[0] if self.hdr == 12 else 1
            for head2, length2 in used[i + 1:i + nbuf]:
                data += self.read_chain(head2, length2)
            out.append((nbuf, data[self.hdr:]))
            i += max(nbuf, 1)
        return out

    def read_chain(self, head, length):
        """The first `length` bytes of the (direct) chain at head."""
        out = b""
        i = head
        while len(out) < length:
            addr, dlen, flags, nxt = struct.unpack_from("<QIHH", self.mem, self.rx.desc + 16 * i)
            off = addr - self.GPA
            out += bytes(self.mem[off:off + min(dlen, length - len(out))])
            if not flags & D_NEXT:
                break
            i = nxt
        return out


# ---------------------------------------------------------------- switch fixtures

def wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


@contextlib.contextmanager
def running(sw):
    """The dispatch loop in a thread, as the daemon runs it."""
    t = threading.Thread(target=sw.graph.run, daemon=True)
    t.start()
    try:
        yield
    finally:
        while t.is_alive():
            sw.graph.stop()
            t.join(0.2)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="fpvu")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sw(sockdir):
    s = Switch(n_buffers=4096)
    s.add_br("br0")
    s.add_port("br0", "vhu0", type="vhost-user", **{"options:vhost-socket": f"{sockdir}/vhu0.sock"})
    s.add_port("br0", "pg0", type="pg")
    s.add_port("br0", "pg1", type="pg")
    with running(s):
        yield s
    s.close()


def vstats(sw, name="vhu0"):
    """The port's row of `show interfaces`: rx/tx counters, drop reasons, vhost_* state."""
    return next(row for row in sw.interface_stats() if row["name"] == name)


def connect(sw, **kw):
    path = sw.port("vhu0").options["vhost-socket"]
    fe = FakeFrontEnd(path, **kw)
    return fe


@pytest.fixture
def fe(sw):
    f = connect(sw)
    f.handshake()
    assert wait_for(lambda: vstats(sw)["vhost_running"] == 1)
    yield f
    f.close()


def pg_frames(sw, name, want, timeout=3.0):
    out = []
    wait_for(lambda: out.extend(sw.port(name).io[1].take()) or len(out) >= want, timeout)
    return out


def rx_frames(fe, want, timeout=3.0):
    out = []
    wait_for(lambda: out.extend(fe.received()) or len(out) >= want, timeout)
    return out


def inject(sw, name, frames):
    sw.port(name).io[0].add(frames)


# ---------------------------------------------------------------- protocol and rings

def test_handshake_negotiates_features_and_runs(sw, fe):
    st = sw.port("vhu0").io[2].status()
    assert st["features"] == vu.FEATURES and st["protocol_features"] == vu.PROTOCOL_FEATURES
    assert st["memory"] == [{"guest_phys_addr": fe.GPA, "memory_size": fe.MEM_SIZE,
                             "userspace_addr": fe.UVA}]
    assert [q["ready"] for q in st["queues"]] == [True, True]
    s = vstats(sw)
    assert s["vhost_connected"] == 1 and s["vhost_bad_requests"] == 0 and s["vhost_mem_unsealed"] == 0


def test_guest_to_switch_strips_header(sw, fe):
    frames = [frame(60 + 37 * i, seq=i) for i in range(40)]
    fe.transmit(frames)
    assert pg_frames(sw, "pg0", 40) == frames
    used = []
    assert wait_for(lambda: used.extend(fe.tx.take_used()) or len(used) == 40)
    assert all(length == 0 for _, length in used)
    s = vstats(sw)
    assert s["rx_packets"] == 40 and s["rx_bytes"] == sum(map(len, frames)) and s["rx_drops"] == 0


def test_guest_tx_chained_and_indirect_descriptors(sw, fe):
    f1, f2 = frame(300, seq=1), frame(900, seq=2)
    base = fe.TX_BUFS
    # header alone, then the frame in three pieces
    fe.mem[base:base + HDR] = bytes(HDR)
    pieces = [f1[:10], f1[10:200], f1[200:]]
    descs = [(fe.gpa(base), HDR, 0)]
    off = base + 64
    for p in pieces:
        fe.mem[off:off + len(p)] = p
        descs.append((fe.gpa(off), len(p), 0))
        off += 512
    fe.tx.add_chain(descs)
    # an indirect table of two descriptors: header + first bytes, the rest
    tbl = base + 0x8000
    data = bytes(HDR) + f2
    fe.mem[base + 0x4000:base + 0x4000 + len(data)] = data
    struct.pack_into("<QIHH", fe.mem, tbl, fe.gpa(base + 0x4000), 100, D_NEXT, 1)
    struct.pack_into("<QIHH", fe.mem, tbl + 16, fe.gpa(base + 0x4000 + 100), len(data) - 100, 0, 0)
    fe.tx.add_chain([(fe.gpa(tbl), 32, D_INDIRECT)])
    fe.tx.do_kick()
    assert pg_frames(sw, "pg0", 2) == [f1, f2]


def test_switch_to_guest_mergeable_buffers(sw, fe):
    fe.post_rx(64, size=256)               # small buffers: big frames take several
    frames = [frame(60, seq=1), frame(244, seq=2), frame(245, seq=3), frame(1514, seq=4)]
    inject(sw, "pg0", frames)
    got = rx_frames(fe, 4)
    assert [f for _, f in got] == frames
    assert [n for n, _ in got] == [1, 1, 2, 6]          # (12 + len) / 256, rounded up
    s = vstats(sw)
    assert s["tx_packets"] == 4 and s["tx_drops"] == 0
    assert s["vhost_calls"] >= 1


def test_switch_to_guest_without_mergeable_buffers(sw):
    fe = connect(sw)
    try:
        fe.handshake(features=vu.F_PROTOCOL_FEATURES | vu.F_EVENT_IDX)    # legacy 10-byte header
        fe.post_rx(4, size=1024)
        frames = [frame(100, seq=1), frame(1500, seq=2), frame(1000, seq=3)]
        inject(sw, "pg0", frames)
        got = rx_frames(fe, 2)
        assert got == [(1, frames[0]), (1, frames[2])]      # 1500 does not fit one buffer
        assert wait_for(lambda: vstats(sw).get("tx_too_big") == 1)
        # the guest transmits with a 10-byte header too
        fe.transmit([frames[0]])
        assert pg_frames(sw, "pg0", 1) == [frames[0]]
    finally:
        fe.close()


def test_receive_queue_full_counts_drops(sw, fe):
    fe.post_rx(3)
    inject(sw, "pg0", [frame(100, seq=i) for i in range(10)])
    assert len(rx_frames(fe, 3)) == 3
    assert wait_for(lambda: vstats(sw).get("tx_ring_full") == 7)


def test_event_idx_interrupt_suppression(sw, fe):
    fe.rx.set_used_event(1000)              # "do not interrupt me before used idx 1001"
    fe.post_rx(32)
    inject(sw, "pg0", [frame(100, seq=1)])
    assert len(rx_frames(fe, 1)) == 1
    first = fe.rx.calls()                   # the first notification always goes out
    inject(sw, "pg0", [frame(100, seq=2)])
    assert len(rx_frames(fe, 1)) == 1
    time.sleep(0.05)
    assert fe.rx.calls() == 0 and first == 1
    assert vstats(sw)["vhost_calls_suppressed"] >= 1
    fe.rx.set_used_event(fe.rx.used_idx())  # now the next used entry crosses it
    inject(sw, "pg0", [frame(100, seq=3)])
    assert len(rx_frames(fe, 1)) == 1
    assert wait_for(lambda: fe.rx.calls() == 1)
    # transmit side: avail_event tells the guest which avail index to kick at
    fe.transmit([frame(80, seq=9)])
    assert len(pg_frames(sw, "pg0", 1)) == 1
    assert wait_for(lambda: fe.tx.avail_event() == fe.tx.avail_idx)


def test_no_interrupt_flag_without_event_idx(sw):
    fe = connect(sw)
    try:
        fe.handshake(features=vu.FEATURES & ~vu.F_EVENT_IDX)
        fe.rx.set_avail_flags(1)            # VRING_AVAIL_F_NO_INTERRUPT
        fe.post_rx(8)
        inject(sw, "pg0", [frame(100)])
        assert len(rx_frames(fe, 1)) == 1
        time.sleep(0.05)
        assert fe.rx.calls() == 0
        fe.rx.set_avail_flags(0)
        inject(sw, "pg0", [frame(100)])
        assert len(rx_frames(fe, 1)) == 1
        assert wait_for(lambda: fe.rx.calls() == 1)
    finally:
        fe.close()


def test_idle_switch_wakes_on_kick(sw, fe):
    """An idle dispatcher sleeps on the kick eventfd; a kick wakes it within the sleep."""
    sw.graph.idle_sleep = 5.0                # only a kick (or the 1 s switch timer) wakes it
    for i in range(3):
        time.sleep(0.2)                      # long past idle_spins: asleep in poll()
        t0 = time.monotonic()
        fe.transmit([frame(100, seq=i)])
        assert len(pg_frames(sw, "pg0", 1, timeout=2.0)) == 1
        assert time.monotonic() - t0 < 0.4
    assert vstats(sw)["vhost_kicks"] >= 3


# ---------------------------------------------------------------- a hostile guest

def test_descriptor_outside_guest_memory(sw, fe):
    good = frame(100, seq=5)
    for addr, length in ((fe.GPA + fe.MEM_SIZE, 100),          # just past the end
                         (fe.GPA + fe.MEM_SIZE - 50, 100),     # straddles the end
                         (fe.GPA - 4096, 200),                 # below
                         (2 ** 64 - 16, 64),                   # wraps around
                         (fe.GPA, 0xffffffff)):                # longer than memory
        fe.tx.add_chain([(addr, length, 0)], publish=False)
    fe.tx.publish()
    fe.transmit([good])
    assert pg_frames(sw, "pg0", 1) == [good]
    s = vstats(sw)
    assert s["rx_desc_bad_addr"] == 5 and s["rx_drops"] == 5 and s["vhost_running"] == 1
    assert wait_for(lambda: len(fe.tx.take_used()) == 6)      # all handed back


def test_descriptor_loops_and_overlong_chains(sw, fe):
    q = fe.tx
    buf = fe.gpa(fe.TX_BUFS)
    fe.mem[fe.TX_BUFS:fe.TX_BUFS + HDR + 60] = bytes(HDR) + frame(60)
    q.write_desc(10, buf, 4, D_NEXT, 10)                         # points at itself
    q.push_head(10)
    for i in range(50, fe.num):                                  # a cycle through 206 descriptors
        q.write_desc(i, buf, 1, D_NEXT, i + 1 if i + 1 < fe.num else 50)
    q.push_head(50)
    tbl = fe.TX_BUFS + 0x8000                                   # a loop inside an indirect table
    struct.pack_into("<QIHH", fe.mem, tbl, buf, 4, D_NEXT, 1)
    struct.pack_into("<QIHH", fe.mem, tbl + 16, buf, 4, D_NEXT, 0)
    q.write_desc(40, fe.gpa(tbl), 32, D_INDIRECT)
    q.push_head(40)
    q.write_desc(41, buf, 20, D_NEXT, 9999)                      # next out of range
    q.push_head(41)
    q.write_desc(42, fe.gpa(tbl), 24, D_INDIRECT)                # table not a multiple of 16
    q.push_head(42)
    q.write_desc(43, buf, 30, D_WRITE)                           # write-only in a transmit chain
    q.push_head(43)
    q.do_kick()
    assert wait_for(lambda: vstats(sw).get("rx_drops") == 6)
    s = vstats(sw)
    assert (s["rx_chain_loop"], s["rx_desc_bad_next"], s["rx_bad_indirect"], s["rx_desc_bad_flags"]) == (3, 1, 1, 1)
    assert s["vhost_running"] == 1
    # the queue still works
    q.free = list(range(11, 40))
    q.chains.clear()
    good = frame(120, seq=7)
    fe.transmit([good])
    assert pg_frames(sw, "pg0", 1) == [good]


def test_avail_index_jump_stops_queue_until_reset(sw, fe):
    q = fe.tx
    q.set_avail_idx(q.avail_idx + fe.num + 1)
    q.do_kick()
    assert wait_for(lambda: vstats(sw).get("vhost_queue_failures") == 1)
    s = vstats(sw)
    assert s["rx_avail_jump"] == 1 and s["vhost_running"] == 0 and s["rx_drops"] == 0
    assert wait_for(lambda: q.errors() == 1)                    # the error eventfd fired
    status = sw.port("vhu0").io[2].status()["queues"][1]
    assert status["broken"] and status["broken_reason"] == "avail_jump"
    # the rest of the switch goes on
    inject(sw, "pg1", [frame(80, src="02:00:00:00:00:09")])
    assert len(pg_frames(sw, "pg0", 1)) == 1
    # the front end restarts the queue as QEMU does after a reset: stop, base, addr, kick
    fe.send(vu.GET_VRING_BASE, struct.pack("<II", 1, 0))
    assert struct.unpack("<II", fe.reply(vu.GET_VRING_BASE)) == (1, 0)
    q.set_avail_idx(0)
    q.avail_idx = 0
    fe.start_queue(q)
    good = frame(100, seq=3)
    fe.transmit([good])
    assert pg_frames(sw, "pg0", 1) == [good]
    assert vstats(sw)["vhost_running"] == 1


def test_head_index_out_of_range_stops_queue(sw, fe):
    fe.post_rx(2)
    q = fe.rx
    q.push_head(fe.num + 5)
    q.push_head(1)
    inject(sw, "pg0", [frame(100, seq=i) for i in range(4)])
    assert wait_for(lambda: vstats(sw).get("tx_bad_head") == 1)
    s = vstats(sw)
    assert s["vhost_running"] == 0 and s["tx_packets"] == 2 and s["tx_not_ready"] == 2
    assert len(rx_frames(fe, 2)) == 2


def test_receive_chain_errors_return_buffers_empty(sw, fe):
    q = fe.rx
    base = fe.RX_BUFS
    q.add_chain([(fe.gpa(base), 2048, 0)])                        # readable: wrong direction
    q.add_chain([(fe.GPA + fe.MEM_SIZE, 2048, D_WRITE)])          # outside memory
    q.add_chain([(fe.gpa(base + 4096), 0, D_WRITE)])              # no room at all
    q.add_chain([(fe.gpa(base + 8192), 2048, D_WRITE)])
    inject(sw, "pg0", [frame(200, seq=i) for i in range(4)])
    assert wait_for(lambda: vstats(sw).get("tx_packets") == 1)
    s = vstats(sw)
    assert (s["tx_desc_bad_flags"], s["tx_desc_bad_addr"], s["tx_empty_chain"], s.get("tx_ring_full", 0)) == (1, 1, 1, 0)
    used = q.take_used()
    assert [length for _, length in used] == [0, 0, 0, HDR + 200]


def test_random_rings_never_hurt_the_switch(sw, fe):
    """A guest writing garbage into its rings while fastpath runs them: descriptors with
    random addresses (many near the edges of its memory), lengths, flags and links,
    random avail entries and indices. Queues may stop; the switch never does, nothing
    leaks, and a clean restart of the queues works."""
    import random
    rnd = random.Random(1234)
    edges = [fe.GPA, fe.GPA + fe.MEM_SIZE, fe.GPA - 1, 0, 2 ** 64 - 1, fe.GPA + fe.MEM_SIZE - 1]

    def addr():
        if rnd.random() < 0.5:
            return (rnd.choice(edges) + rnd.randint(-4096, 4096)) % 2 ** 64
        return fe.GPA + rnd.randrange(fe.MEM_SIZE)

    fe.post_rx(fe.num)
    end = time.monotonic() + 2.0
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        for q in fe.queues:
            for i in rnd.sample(range(fe.num), 32):
                q.write_desc(i, addr(), rnd.choice([0, 1, 12, 60, 2048, 4096, 2 ** 32 - 1, rnd.randrange(2 ** 32)]),
                             rnd.randrange(8), rnd.choice([i + 1, i, rnd.randrange(2 ** 16)]))
            for k in range(8):
                q.push_head(rnd.randrange(fe.num) if rnd.random() < 0.95 else rnd.randrange(2 ** 16),
                            publish=False)
            if rnd.random() < 0.1:
                q.avail_idx = rnd.randrange(2 ** 16)
            q.publish()
            q.do_kick()
        inject(sw, "pg0", [frame(rnd.randrange(60, 1515), dst=BCAST, seq=rounds)])
        time.sleep(0.002)
        if not vstats(sw)["vhost_running"] and rnd.random() < 0.5:
            for q in fe.queues:            # what QEMU does on a reset
                fe.send(vu.GET_VRING_BASE, struct.pack("<II", q.index, 0))
                fe.reply(vu.GET_VRING_BASE)
                q.avail_idx = q.used_seen = 0
                q.set_avail_idx(0)
                fe.start_queue(q)
    s = vstats(sw)
    assert rounds > 50 and s["vhost_connected"] == 1
    assert s["rx_drops"] + s["tx_drops"] > 0
    # a clean slate: fresh rings, and traffic flows both ways again
    for q in fe.queues:
        fe.send(vu.GET_VRING_BASE, struct.pack("<II", q.index, 0))
        fe.reply(vu.GET_VRING_BASE)
        fe.mem[q.desc:q.used + 8 * fe.num + 8] = bytes(q.used + 8 * fe.num + 8 - q.desc)
        q.avail_idx = q.used_seen = 0
        q.free = list(range(fe.num))
        q.chains.clear()
        fe.start_queue(q)
    assert wait_for(lambda: sw.graph.pool.in_flight == 0)
    sw.graph.pool.check_accounting()
    sw.port("pg0").io[1].take()
    good = frame(200, seq=1)
    fe.transmit([good])
    assert pg_frames(sw, "pg0", 1) == [good]
    fe.post_rx(4)
    inject(sw, "pg0", [frame(300, seq=2)])
    assert [f for _, f in rx_frames(fe, 1)] == [frame(300, seq=2)]


def test_bad_ring_addresses_are_refused(sw):
    fe = connect(sw)
    try:
        fe.handshake()
        q = fe.tx
        assert not fe.vring_addr(q, desc=fe.UVA + fe.MEM_SIZE)                 # outside
        assert not fe.vring_addr(q, used=fe.UVA + fe.MEM_SIZE - 100)          # straddles the end
        assert not fe.vring_addr(q, desc=fe.uva(q.desc) + 8)                  # misaligned
        assert not fe.vring_addr(q, avail=0)
        assert not fe.state(vu.SET_VRING_NUM, 1, 300)                         # not a power of two
        assert not fe.state(vu.SET_VRING_NUM, 7, 256)                         # no such queue
        s = vstats(sw)
        assert s["vhost_bad_ring_addr"] == 3 and s["vhost_bad_requests"] == 6
        assert s["vhost_running"] == 0 and s["vhost_connected"] == 1
        assert fe.state(vu.SET_VRING_NUM, 1, 256)
        assert fe.vring_addr(q)
        assert wait_for(lambda: vstats(sw)["vhost_running"] == 1)
        good = frame(64)
        fe.transmit([good])
        assert pg_frames(sw, "pg0", 1) == [good]
    finally:
        fe.close()


def test_bad_memory_tables_and_descriptors_are_refused(sw):
    fe = connect(sw)
    try:
        fe.handshake()
        small = os.memfd_create("small")
        os.ftruncate(small, 4096)
        r, w = os.pipe()
        try:
            assert not fe.mem_table(fd=small)                          # file shorter than the region
            assert not fe.mem_table(fd=r)                              # not a memory file
            assert not fe.mem_table(size=fe.MEM_SIZE - 4096, offset=8)  # not page-aligned
            assert not fe.request(vu.SET_MEM_TABLE, struct.pack("<II", 2, 0) + bytes(64), [fe.memfd])
            assert not fe.request(vu.SET_MEM_TABLE, struct.pack("<II", 9, 0))
            assert vstats(sw)["vhost_running"] == 1                  # refused: nothing changed
            assert not fe.vring_fd(vu.SET_VRING_KICK, 1, r)           # a pipe is not an eventfd
            assert not fe.request(vu.SET_VRING_KICK, struct.pack("<Q", 1))   # no descriptor sent
            assert not fe.request(vu.SET_FEATURES, struct.pack("<Q", 1 << 26))   # LOG_ALL: not offered
            assert not fe.request(vu.SET_VRING_BASE, b"\x01")           # short payload
        finally:
            for d in (small, r, w):
                os.close(d)
        assert vstats(sw)["vhost_bad_requests"] == 9
        # a new good table is mapped in place of the old one; the rings follow
        assert fe.mem_table()
        assert vstats(sw)["vhost_running"] == 1
        good = frame(64)
        fe.transmit([good])
        assert pg_frames(sw, "pg0", 1) == [good]
    finally:
        fe.close()


def test_unsupported_requests_answered_not_fatal(sw, fe):
    assert not fe.request(99)
    assert not fe.request(vu.SET_LOG_BASE, struct.pack("<QQ", 0, 0))
    fe.send(vu.SEND_RARP, bytes(8))          # no reply wanted: ignored
    assert fe.get_u64(vu.GET_QUEUE_NUM) == 1
    s = vstats(sw)
    assert s["vhost_unsupported"] == 3 and s["vhost_connected"] == 1 and s["vhost_running"] == 1


@pytest.mark.parametrize("how", ["bad version", "oversized", "short then close", "replying request fails"])
def test_garbage_closes_connection_and_next_front_end_works(sw, how):
    fe = connect(sw)
    try:
        fe.handshake()
        if how == "bad version":
            fe.send(vu.GET_FEATURES, flags=0x2)
        elif how == "oversized":
            fe.send(vu.SET_MEM_TABLE, b"\0" * 64, size=1 << 20)
        elif how == "short then close":
            fe.sock.send(struct.pack("<III", vu.SET_VRING_NUM, 1, 8) + b"\1\0")
            fe.sock.shutdown(socket.SHUT_WR)
        else:
            fe.send(vu.GET_VRING_BASE, struct.pack("<II", 5, 0))      # no queue 5 to answer for
        with pytest.raises((ConnectionResetError, socket.timeout, OSError)):
            fe.reply(vu.GET_FEATURES)
        assert wait_for(lambda: vstats(sw)["vhost_connected"] == 0)
        s = vstats(sw)
        assert s["vhost_running"] == 0 and s["vhost_disconnects"] == 1
        assert s["vhost_framing_errors"] == (0 if how == "short then close" else 1)
    finally:
        fe.close()
    fe2 = connect(sw)
    try:
        fe2.handshake()
        assert wait_for(lambda: vstats(sw)["vhost_running"] == 1)
        good = frame(70)
        fe2.transmit([good])
        assert pg_frames(sw, "pg0", 1) == [good]
    finally:
        fe2.close()


def test_message_in_pieces_and_descriptors_with_it(sw):
    fe = connect(sw)
    try:
        fe.handshake()
        q = fe.tx
        kick = os.eventfd(0, EFD_NONBLOCK)
        data = struct.pack("<III", vu.SET_VRING_KICK, vu.VERSION | vu.FLAG_NEED_REPLY, 8) + struct.pack("<Q", 1)
        fe.sock.sendmsg([data[:5]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [kick]))])
        time.sleep(0.05)
        fe.sock.send(data[5:14])
        time.sleep(0.05)
        fe.sock.send(data[14:])
        assert struct.unpack("<Q", fe.reply(vu.SET_VRING_KICK))[0] == 0
        os.close(q.kick)
        q.kick = kick
        good = frame(90)
        fe.transmit([good])
        assert pg_frames(sw, "pg0", 1) == [good]
    finally:
        fe.close()


def test_disconnect_mid_traffic(sw, fe):
    fe.post_rx(200)
    inject(sw, "pg0", [frame(1000, dst=GUEST_MAC, seq=i) for i in range(500)])
    fe.transmit([frame(500, seq=i) for i in range(100)], kick=True)
    fe.sock.close()
    assert wait_for(lambda: vstats(sw)["vhost_connected"] == 0)
    s = vstats(sw)
    assert s["vhost_running"] == 0 and s["vhost_disconnects"] == 1
    # the switch is fine: other ports forward, frames for the guest are counted drops
    time.sleep(0.1)
    sw.port("pg0").io[1].take()
    inject(sw, "pg1", [frame(80, src="02:00:00:00:00:09")])
    assert pg_frames(sw, "pg0", 1) == [frame(80, src="02:00:00:00:00:09")]
    assert wait_for(lambda: sw.graph.pool.in_flight == 0)
    sw.graph.pool.check_accounting()
    fe2 = connect(sw)
    try:
        fe2.handshake()
        fe2.post_rx(8)
        inject(sw, "pg0", [frame(100, dst=BCAST, seq=1)])
        assert [f for _, f in rx_frames(fe2, 1)] == [frame(100, dst=BCAST, seq=1)]
    finally:
        fe2.close()


def test_second_front_end_refused(sw, fe):
    extra = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    extra.settimeout(3)
    extra.connect(sw.port("vhu0").options["vhost-socket"])
    assert extra.recv(1) == b""            # closed by fastpath
    extra.close()
    assert vstats(sw)["vhost_rejected_connections"] == 1 and vstats(sw)["vhost_running"] == 1


def test_unsealed_memory_is_counted(sw):
    fe = connect(sw, seal=False)
    try:
        fe.handshake()
        assert vstats(sw)["vhost_mem_unsealed"] == 1
    finally:
        fe.close()


def test_guest_reset_sequence(sw, fe):
    """What QEMU sends when the guest reboots or reloads its driver: GET_VRING_BASE for
    both queues, then everything again from SET_FEATURES."""
    fe.transmit([frame(100, seq=i) for i in range(3)])
    assert len(pg_frames(sw, "pg0", 3)) == 3
    bases = []
    for q in fe.queues:
        fe.send(vu.GET_VRING_BASE, struct.pack("<II", q.index, 0))
        bases.append(struct.unpack("<II", fe.reply(vu.GET_VRING_BASE))[1])
    assert bases == [0, 3]
    assert fe.state(vu.SET_VRING_ENABLE, 0, 0) and fe.state(vu.SET_VRING_ENABLE, 1, 0)
    assert vstats(sw)["vhost_running"] == 0
    assert fe.request(vu.RESET_OWNER)
    assert sw.port("vhu0").io[2].status()["memory"] == []
    # the driver comes back with fresh rings
    for q in fe.queues:
        q.avail_idx = q.used_seen = 0
        q.free = list(range(fe.num))
        q.chains.clear()
    fe.mem[0:0x40000] = bytes(0x40000)
    assert fe.request(vu.SET_FEATURES, struct.pack("<Q", vu.FEATURES))
    assert fe.mem_table()
    for q in fe.queues:
        fe.start_queue(q)
    good = frame(100, seq=9)
    fe.transmit([good])
    assert pg_frames(sw, "pg0", 1) == [good]


def test_client_mode_reconnects(sockdir):
    path = f"{sockdir}/qemu.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(5)
    s = Switch(n_buffers=2048)
    s.add_br("br0")
    s.add_port("br0", "vhu0", type="dpdkvhostuserclient", **{"options:vhost-server-path": path})
    s.add_port("br0", "pg0", type="pg")
    vport = s.port("vhu0").io[2]
    vport.reconnect = 0.2
    try:
        with running(s):
            for round_ in range(2):
                conn, _ = server.accept()            # fastpath connects (again)
                fe = FakeFrontEnd(sock=conn)
                try:
                    fe.handshake()
                    assert wait_for(lambda: vstats(s)["vhost_running"] == 1)
                    good = frame(100, seq=round_)
                    fe.transmit([good])
                    assert pg_frames(s, "pg0", 1) == [good]
                finally:
                    fe.close()                       # "QEMU restarts"
            assert wait_for(lambda: vstats(s)["vhost_connects"] == 3)
            assert vstats(s)["vhost_disconnects"] == 2
    finally:
        s.close()
        server.close()


def test_client_mode_waits_for_server(sockdir):
    path = f"{sockdir}/later.sock"
    s = Switch(n_buffers=1024)
    s.add_br("br0")
    s.add_port("br0", "vhu0", type="vhost-user", **{"options:vhost-server-path": path})
    vport = s.port("vhu0").io[2]
    vport.reconnect = 0.1
    try:
        with running(s):
            time.sleep(0.3)
            assert vstats(s)["vhost_connected"] == 0 and "connect" in vport.status()["last_error"]
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(path)
            server.listen(1)
            server.settimeout(5)
            conn, _ = server.accept()
            assert wait_for(lambda: vstats(s)["vhost_connected"] == 1)
            conn.close()
            server.close()
    finally:
        s.close()


def test_port_options_and_teardown(sockdir):
    ctl = Control(Switch(n_buffers=1024))
    try:
        ctl.execute(["add-br", "br0"])
        with pytest.raises(CommandError, match="exactly one"):
            ctl.execute(["add-port", "br0", "v0", "type=vhost-user"])
        with pytest.raises(CommandError, match="exactly one"):
            ctl.execute(["add-port", "br0", "v0", "type=vhost-user", f"options:vhost-socket={sockdir}/a",
                         f"options:vhost-server-path={sockdir}/b"])
        with pytest.raises(CommandError, match="socket path"):
            ctl.execute(["add-port", "br0", "v0", "type=vhost-user", "options:vhost-socket=/" + "x" * 120])
        with open(f"{sockdir}/file", "w"):
            pass
        with pytest.raises(CommandError, match="not a socket"):
            ctl.execute(["add-port", "br0", "v0", "type=vhost-user", f"options:vhost-socket={sockdir}/file"])
        ctl.execute(["add-port", "br0", "v0", "type=vhost-user", f"options:vhost-socket={sockdir}/v0.sock"])
        assert os.path.exists(f"{sockdir}/v0.sock")
        with pytest.raises(ConfigError, match="in use"):
            ctl.switch.add_port("br0", "v1", type="vhost-user", **{"options:vhost-socket": f"{sockdir}/v0.sock"})
        row = ctl.execute(["show", "interfaces"], "json")[0]
        assert row["name"] == "v0" and row["vhost_connected"] == 0
        assert "vhost-socket" in ctl.execute(["show"])
        ctl.execute(["del-port", "v0"])
        assert not os.path.exists(f"{sockdir}/v0.sock")
    finally:
        ctl.switch.close()


# ---------------------------------------------------------------- a real QEMU guest

KVER_GLOB = "/boot/vmlinuz-*"
GUEST_IP, HOST_IP = "192.0.2.2", "192.0.2.1"
GUEST_MODULES = ("virtio_pci", "virtio_net")
BUSYBOX = "/bin/busybox"

GUEST_INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules.order); do insmod /lib/modules/$m; done
echo FP-BOOTED
sh /test.sh
echo FP-EXIT $?
poweroff -f
"""


def _vm_tools():
    """(kernel version, bzImage) when QEMU, a kernel and a static busybox are there."""
    if os.geteuid() != 0 or not shutil.which("qemu-system-x86_64") or not shutil.which("modprobe"):
        return None
    kernels = sorted(glob.glob(KVER_GLOB))
    if not kernels or not os.path.exists(BUSYBOX):
        return None
    with open(BUSYBOX, "rb") as f:
        if b"/lib64/ld-linux" in f.read(4096):            # dynamically linked
            return None
    kver = kernels[-1][len("/boot/vmlinuz-"):]
    return (kver, kernels[-1]) if os.path.isdir(f"/lib/modules/{kver}") else None


def cpio_newc(entries):
    """An initramfs archive: entries [(path, mode, bytes)]; directories have no data."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate(entries, 1):
        nb = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        out += b"070701" + b"".join(b"%08X" % v for v in fields) + nb
        out += bytes(-len(out) % 4)
        out += data
        out += bytes(-len(out) % 4)
    nb = b"TRAILER!!!\0"
    out += b"070701" + b"".join(b"%08X" % v for v in (0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, len(nb), 0)) + nb
    out += bytes(-len(out) % 4)
    return bytes(out)


def _extract_vmlinux(bzimage):
    """The uncompressed kernel inside a bzImage (xz payload): boots ~2x faster under TCG
    through its PVH entry, since the bzImage would decompress itself in emulation."""
    with open(bzimage, "rb") as f:
        data = f.read()
    pos = data.find(b"\xfd7zXZ\x00")
    elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[pos:]) if pos >= 0 else b""
    return elf if elf[:4] == b"\x7fELF" else None


def _host_files(binaries):
    """{path: bytes} for each host binary and what it loads: the shared libraries `ldd`
    lists and the dynamic loader, at the same paths as on the host (symlinks followed)."""
    paths = []
    for b in binaries:
        paths.append(b)
        r = subprocess.run(["ldd", b], capture_output=True, text=True)   # static: no output
        for line in r.stdout.splitlines():
            paths += [w for w in line.split() if w.startswith("/")]
    out = {}
    for p in paths:
        if p not in out:
            with open(p, "rb") as f:
                out[p] = f.read()
    return out


def guest_image(modules=(), binaries=()):
    """(kernel, base initramfs) for a tiny guest, built once per kernel version and kept
    under the temp dir: busybox-static, the virtio-net modules, an /init that runs
    /test.sh (appended per test as a second archive) and powers off. `modules` are more
    kernel modules to load at boot (with their dependencies; built-in ones are skipped),
    `binaries` host programs to copy in at the same absolute paths, with their shared
    libraries; each set of extras has its own cached image."""
    kver, bzimage = _vm_tools()
    modules, binaries = tuple(modules), tuple(binaries)
    extras = repr((modules, binaries)) if modules or binaries else ""
    key = hashlib.sha256((GUEST_INIT + repr(GUEST_MODULES) + extras).encode()).hexdigest()[:12]
    cache = os.path.join(tempfile.gettempdir(), f"fastpath-vm-{kver}")
    os.makedirs(cache, exist_ok=True)
    kernel, initrd = os.path.join(cache, "vmlinux"), os.path.join(cache, f"initrd-{key}.cpio")
    if not os.path.exists(kernel):
        elf = _extract_vmlinux(bzimage)
        with open(kernel + ".tmp", "wb") as f:
            f.write(elf if elf else open(bzimage, "rb").read())
        os.replace(kernel + ".tmp", kernel)
    if not os.path.exists(initrd):
        order = []
        for m in GUEST_MODULES + modules:
            r = subprocess.run(["modprobe", "-S", kver, "--show-depends", m], capture_output=True, text=True, check=True)
            for line in r.stdout.splitlines():
                parts = line.split()                    # "insmod PATH [opts]" or "builtin NAME"
                if parts and parts[0] == "insmod" and parts[1] not in order:
                    order.append(parts[1])
        dirs = ["bin", "lib", "lib/modules", "proc", "sys", "dev", "tmp"]
        files = _host_files(binaries)
        for path in files:
            parts = path.strip("/").split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.append(d)
        entries = [(d, 0o40755, b"") for d in dirs]
        with open(BUSYBOX, "rb") as f:
            entries.append(("bin/busybox", 0o100755, f.read()))
        entries.append(("bin/sh", 0o120777, b"busybox"))
        entries += [(path.lstrip("/"), 0o100755, data) for path, data in files.items()]
        names = []
        for path in order:
            name = os.path.basename(path)
            names.append(name)
            with open(path, "rb") as f:
                entries.append((f"lib/modules/{name}", 0o100644, f.read()))
        entries.append(("modules.order", 0o100644, "\n".join(names).encode() + b"\n"))
        entries.append(("init", 0o100755, GUEST_INIT.encode()))
        with open(initrd + ".tmp", "wb") as f:
            f.write(cpio_newc(entries))
        os.replace(initrd + ".tmp", initrd)
    return kernel, initrd


class Guest:
    """A QEMU guest with one virtio-net device on a vhost-user socket; its serial
    console is read line by line; `monitor` sends HMP commands (system_reset, quit)."""

    def __init__(self, workdir, sock, script, server=False, mac=GUEST_MAC, modules=(), binaries=()):
        kernel, base = guest_image(modules, binaries)
        self.initrd = os.path.join(workdir, "initrd.cpio")
        with open(base, "rb") as f, open(self.initrd, "wb") as out:
            out.write(f.read() + cpio_newc([("test.sh", 0o100755, script.encode())]))
        self.mon = os.path.join(workdir, "mon.sock")
        chardev = f"socket,id=c0,path={sock}" + (",server=on,wait=off" if server else "")
        self.cmd = ["qemu-system-x86_64", "-accel", "tcg", "-m", "256M", "-smp", "1",
                    "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
                    "-monitor", f"unix:{self.mon},server=on,wait=off",
                    "-kernel", kernel, "-initrd", self.initrd,
                    "-append", "console=ttyS0 quiet loglevel=3 random.trust_cpu=on",
                    "-object", "memory-backend-memfd,id=mem,size=256M,share=on",
                    "-numa", "node,memdev=mem",
                    "-chardev", chardev, "-netdev", "vhost-user,id=n0,chardev=c0",
                    "-device", f"virtio-net-pci,netdev=n0,vectors=0,mac={mac}"]
        self.lines = []
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace").rstrip("\r\n"))

    def seen(self, text):
        return sum(text in ln for ln in list(self.lines))

    def wait_line(self, text, count=1, timeout=30.0):
        """Wait until `text` has appeared on `count` console lines; False on timeout or
        when QEMU exited before."""
        wait_for(lambda: self.seen(text) >= count or not self._reader.is_alive(), timeout)
        return self.seen(text) >= count

    def monitor(self, command):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.mon)
        s.sendall(command.encode() + b"\n")
        time.sleep(0.2)
        s.close()

    def stop(self, timeout=10):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                self.monitor("quit")
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)

    def console(self):
        return "\n".join(self.lines)


def icmp_ping(ns, dst, count=3, timeout=2.0):
    """Echo requests from inside namespace ns to dst; how many were answered."""
    with ns.entered():
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ident = os.getpid() & 0xffff
    answered = 0
    try:
        for seq in range(count):
            s.sendto(bytes(ICMP(type=8, id=ident, seq=seq) / Raw(b"fastpath-vhost")), (dst, 0))
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    data, addr = s.recvfrom(2048)
                except socket.timeout:
                    break
                reply = IP(data)
                if addr[0] == dst and ICMP in reply and reply[ICMP].type == 0 \
                        and reply[ICMP].id == ident and reply[ICMP].seq == seq:
                    answered += 1
                    break
    finally:
        s.close()
    return answered


vm = pytest.mark.skipif(_vm_tools() is None,
                        reason="needs root, qemu-system-x86, a Debian kernel image and busybox-static")

GUEST_NET = f"""
ip link set lo up
ip link set eth0 up
ip addr add {GUEST_IP}/24 dev eth0
"""
GUEST_PING = f"""
if ping -c 3 -w 15 {HOST_IP}; then echo FP-PING-OK; else echo FP-PING-FAIL; fi
"""


@contextlib.contextmanager
def guest_bridge(workdir, **vhost_options):
    """A fastpath bridge with a vhost-user port and an afpacket port on a veth whose other
    end is in namespace `peer`, address HOST_IP: yields (switch, peer namespace)."""
    from netns import Netns, unique_name, veth_pair
    a, b = unique_name("fpva"), unique_name("fpvb")
    with Netns() as dp, Netns() as peer, veth_pair(a, b, dp, peer):
        peer.run(f"ip link set {b} address {HOST_MAC}")
        peer.run(f"ip addr add {HOST_IP}/24 dev {b}")
        sw = Switch(n_buffers=4096)
        try:
            sw.add_br("br0")
            with dp.entered():
                sw.add_port("br0", a, type="afpacket")
            sw.add_port("br0", "vhu0", type="vhost-user", **{f"options:{k}": v for k, v in vhost_options.items()})
            with running(sw):
                yield sw, peer
        finally:
            sw.close()


@vm
def test_qemu_guest_ping_driver_reload_and_reboot(sockdir):
    """A Linux guest pings a host through the bridge and is pinged back; then it reloads
    virtio_net (QEMU stops and restarts the rings) and pings again; then it is reset
    (a reboot: the same again after a new boot)."""
    script = GUEST_NET + GUEST_PING + """
sleep 4
rmmod virtio_net
insmod /lib/modules/virtio_net.ko
""" + GUEST_NET + GUEST_PING.replace("FP-PING-OK", "FP-RELOAD-OK") + "sleep 60\n"
    sock = f"{sockdir}/vm.sock"
    t0 = time.monotonic()
    with guest_bridge(sockdir, **{"vhost-socket": sock}) as (sw, peer):
        g = Guest(sockdir, sock, script).start()
        try:
            assert g.wait_line("FP-PING-OK", timeout=90), g.console()
            booted = time.monotonic() - t0
            assert icmp_ping(peer, GUEST_IP) == 3
            s = vstats(sw)
            assert s["vhost_running"] == 1 and s["rx_packets"] >= 4 and s["tx_packets"] >= 4, s
            assert s["rx_drops"] == 0 and s["vhost_bad_requests"] == 0, s
            assert s["vhost_mem_unsealed"] == 0, s          # QEMU's memfd backend is sealed
            assert g.wait_line("FP-RELOAD-OK", timeout=60), g.console()
            assert icmp_ping(peer, GUEST_IP, count=1) == 1
            g.monitor("system_reset")
            assert g.wait_line("FP-PING-OK", count=2, timeout=90), g.console()
            assert icmp_ping(peer, GUEST_IP, count=1) == 1
            s = vstats(sw)
            print({k: v for k, v in s.items() if v and k not in ("name", "type", "bridge")})
            assert s["vhost_connects"] == 1 and s["vhost_framing_errors"] == 0, s
            assert "FP-PING-FAIL" not in g.console()
        finally:
            g.stop()
        assert wait_for(lambda: vstats(sw)["vhost_connected"] == 0)
        print(f"first ping after {booted:.1f} s, whole test {time.monotonic() - t0:.1f} s")


@vm
def test_qemu_restart_client_mode_reconnects(sockdir):
    """fastpath as the vhost-user client of a QEMU server socket: QEMU is stopped and
    started again, fastpath reconnects by itself and the new guest's traffic flows."""
    sock = f"{sockdir}/qemu.sock"
    script = GUEST_NET + GUEST_PING + "sleep 60\n"
    t0 = time.monotonic()
    with guest_bridge(sockdir, **{"vhost-server-path": sock}) as (sw, peer):
        sw.port("vhu0").io[2].reconnect = 0.5
        for run in range(2):
            g = Guest(sockdir, sock, script, server=True).start()
            try:
                assert g.wait_line("FP-PING-OK", timeout=90), g.console()
                assert icmp_ping(peer, GUEST_IP, count=1) == 1
            finally:
                g.stop()
            assert wait_for(lambda: vstats(sw)["vhost_connected"] == 0)
        s = vstats(sw)
        assert s["vhost_connects"] == 2 and s["vhost_disconnects"] == 2, s
        print(f"two QEMU runs in {time.monotonic() - t0:.1f} s")
