"""memif ports: the protocol, the rings, hostile peers and DPDK's net_memif.

Part one attaches fastpath.memif.client.MemifClient (a memif peer in plain Python and
numpy, written independently of the Cython rings) to a bridge with two memif ports and
two pg ports, in both roles, and checks frames byte for byte and counters exactly. It
then does what a hostile or broken peer would: garbage and out-of-order messages, bad
memory and rings, descriptors outside the region, huge lengths, endless chains, indices
jumping -- and checks that each is counted, that the frame is dropped or the peer
disconnected, and that every pool buffer is accounted for.

Part two runs DPDK's testpmd with a net_memif port against fastpath in both roles
(skipped without dpdk-testpmd; scripts/setup.sh installs it).

Every test runs the switch's dispatch loop in a thread, as the daemon does.
"""
import contextlib
import functools
import glob
import mmap
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from fastpath.control import CommandError, Control
from fastpath.memif import protocol as mp
from fastpath.memif.client import MemifClient
from fastpath.switch import Switch

BCAST = "ff:ff:ff:ff:ff:ff"
MAC1, MAC2, MAC3 = "02:00:00:00:01:01", "02:00:00:00:01:02", "02:00:00:00:01:03"


@functools.lru_cache(maxsize=None)
def _headers(src, dst):
    return bytes(Ether(src=src, dst=dst) / IP(src="192.0.2.1", dst="192.0.2.2") / UDP(sport=1000, dport=9))


def frame(n=100, src=MAC1, dst=BCAST, seq=0):
    """An n-byte UDP frame whose payload starts with seq (scapy builds the headers once)."""
    hdr = _headers(src, dst)
    return (hdr + seq.to_bytes(4, "big") + PATTERN)[:max(n, len(hdr) + 4)]


PATTERN = bytes(range(256)) * 8


# ---------------------------------------------------------------- switch fixtures

def wait_for(cond, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return cond()


@contextlib.contextmanager
def running(sw, before_check=None):
    """The dispatch loop in a thread; once it stops (and before_check has run), every
    buffer of both classes must be back in the pool."""
    t = threading.Thread(target=sw.graph.run, daemon=True)
    t.start()
    try:
        yield
    finally:
        while t.is_alive():
            sw.graph.stop()
            t.join(0.2)
        if before_check is not None:
            before_check()
    sw.graph.pool.check_accounting(expected_in_flight=0)


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="fpmif")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def memif_switch(sockdir, role="master", **extra):
    """Bridge br0: memif ports m1 (id 1) and m2 (id 2) on one socket, pg10 on VLAN 10 with
    them, pg20 on VLAN 20. As the slave, each memif port connects to its own socket."""
    s = Switch(n_buffers=4096)
    s.add_br("br0")
    for i in (1, 2):
        path = f"{sockdir}/memif.sock" if role == "master" else f"{sockdir}/peer{i}.sock"
        opts = {"options:memif-socket": path, "options:memif-id": str(i), "options:memif-role": role}
        opts.update({f"options:{k}": v for k, v in extra.items()})
        s.add_port("br0", f"m{i}", type="memif", tag=10, **opts)
        s.port(f"m{i}").io[2].reconnect = 0.1
    s.add_port("br0", "pg10", type="pg", tag=10)
    s.add_port("br0", "pg20", type="pg", tag=20)
    return s


@pytest.fixture
def sw(sockdir):
    s = memif_switch(sockdir)
    with running(s):
        yield s
    s.close()


def st(sw, name):
    """The port's row of `show interfaces`: rx/tx counters, drop reasons, memif_* state."""
    return next(row for row in sw.interface_stats() if row["name"] == name)


def client(sw, port, **kw):
    mport = sw.port(port).io[2]
    c = MemifClient(mport.path, id=mport.id, **kw)
    assert wait_for(lambda: st(sw, port)["memif_connected"] == 1)
    return c


@pytest.fixture
def pair(sw):
    c1, c2 = client(sw, "m1"), client(sw, "m2")
    yield c1, c2
    c1.close()
    c2.close()


def recv_n(c, want, timeout=3.0):
    out = []
    end = time.monotonic() + timeout
    while len(out) < want and time.monotonic() < end:
        out += c.recv(timeout=0.05)
    return out


def pg_frames(sw, name, want, timeout=3.0):
    out = []
    wait_for(lambda: out.extend(sw.port(name).io[1].take()) or len(out) >= want, timeout)
    return out


def put_descriptors(c, descs, head=None):
    """Write raw descriptors (flags, region, length, offset) into the client's transmit
    ring as the slave and publish them (or publish `head`): what a hostile slave does."""
    r = c.tx
    for k, (fl, rg, ln, off) in enumerate(descs):
        r.desc[(c._tx_pos + k) & r.mask] = (fl, rg, ln, off, 0)
    c._tx_pos = (c._tx_pos + len(descs)) & 0xffff
    r.set_head(c._tx_pos if head is None else head)
    r.signal()


def consumed(c, timeout=3.0):
    """The switch has read everything we published (the master moved the tail)."""
    return wait_for(lambda: c.tx.tail == c._tx_pos, timeout)


# ---------------------------------------------------------------- the wire format

def test_message_layout_matches_memif_h():
    """Every message is 128 bytes; fields sit where memif.h's packed structs put them."""
    h = mp.hello("vpp", max_region=15, max_m2s_ring=3, max_s2m_ring=4, max_log2_ring_size=14)
    assert len(h) == 128 and h[:2] == b"\x02\x00" and h[2:5] == b"vpp"
    assert struct.unpack_from("<HHHHHB", h, 34) == (0x200, 0x200, 15, 3, 4, 14)
    i = mp.init(7, "dpdk", mode=0, secret=b"s3")
    assert struct.unpack_from("<HHIB", i) == (3, 0x200, 7, 0) and i[9:11] == b"s3" and i[33:37] == b"dpdk"
    assert struct.unpack_from("<HHQ", mp.add_region(2, 1 << 20)) == (4, 2, 1 << 20)
    assert struct.unpack_from("<HHHHIBH", mp.add_ring(1, 0, 4096, 10, True)) == (5, 1, 1, 0, 4096, 10, 0)
    d = mp.disconnect("x" * 200)
    assert struct.unpack_from("<HI", d) == (8, 0) and d[6:101] == b"x" * 95 and d[101] == 0
    for msg in (h, i, mp.add_region(0, 1), mp.add_ring(0, 0, 0, 1, False), d, mp.encode(mp.ACK)):
        kind, body = mp.decode(msg)
        assert len(msg) == 128 and kind == msg[0]
    assert mp.decode(i)[1] == mp.Init(0x200, 7, 0, b"s3".ljust(24, b"\0"), "dpdk")
    with pytest.raises(mp.ProtocolError):
        mp.decode(b"\x02\x00" + bytes(100))
    with pytest.raises(mp.ProtocolError):
        mp.decode(b"\x09\x00" + bytes(126))


def test_ring_layout_and_cookie(sw, pair):
    """The client (an independent implementation) and fastpath agree on the ring header:
    cookie 0x3E31F20, flags, head at 6, tail at 64, descriptors at 128."""
    c1, _ = pair
    assert c1.tx.cookie == 0x3E31F20 == mp.COOKIE
    state = sw.port("m1").io[2].status()
    assert state["connected"] and state["role"] == "master" and state["remote_name"] == "fastpath-client"
    assert state["regions"] == [{"region": 0, "size": mp.slave_layout(10, 2048)[4]}]
    assert [(r["direction"], r["size"], r["rx"]) for r in state["rings"]] == [("s2m", 1024, True),
                                                                              ("m2s", 1024, False)]


# ---------------------------------------------------------------- frames through the bridge

SIZES = (60, 64, 100, 333, 1000, 1514, 2048)


def test_frames_byte_identical_both_ways(sw, pair):
    c1, c2 = pair
    f1 = [frame(n, src=MAC1, seq=i) for i, n in enumerate(SIZES)]
    assert c1.send(f1) == len(f1)
    assert recv_n(c2, len(f1)) == f1
    assert pg_frames(sw, "pg10", len(f1)) == f1
    f2 = [frame(n, src=MAC2, dst=MAC1, seq=i) for i, n in enumerate(SIZES)]   # MAC1 is learned
    assert c2.send(f2) == len(f2)
    assert recv_n(c1, len(f2)) == f2
    time.sleep(0.05)
    assert sw.port("pg10").io[1].take() == [] and sw.port("pg20").io[1].take() == []
    s1 = st(sw, "m1")
    assert s1["rx_packets"] == len(f1) and s1["rx_bytes"] == sum(SIZES) and s1["tx_packets"] == len(f2)
    assert s1["rx_drops"] == s1["tx_drops"] == 0


def test_pg_to_memif_and_vlan_isolation(sw, pair):
    c1, c2 = pair
    f = [frame(200, src=MAC3, seq=i) for i in range(20)]
    sw.port("pg10").io[0].add(f)
    assert recv_n(c1, 20) == f and recv_n(c2, 20) == f
    sw.port("pg20").io[0].add([frame(200, src="02:00:00:00:02:01")])
    time.sleep(0.1)
    assert c1.recv() == [] and c2.recv() == []


def test_burst_100k_counted_exactly(sw, pair):
    """100 000 frames m1 -> m2: everything m1 received went out m2 or was dropped for a
    counted reason, and client 2 got exactly what m2 sent."""
    c1, c2 = pair
    c2.send([frame(64, src=MAC2, dst=MAC1)])          # learn MAC2 on m2
    assert recv_n(c1, 1)
    base1, base2 = st(sw, "m1"), st(sw, "m2")
    N = 100_000
    batch = [frame(64, src=MAC1, dst=MAC2, seq=i) for i in range(256)]
    sent = got = 0
    t0 = time.perf_counter()
    while sent < N:
        sent += c1.send(batch[:min(256, N - sent)], timeout=0.5)
        got += c2.drain()

    def settled():
        s = st(sw, "m2")
        return s["tx_packets"] - base2["tx_packets"] + s["tx_drops"] - base2["tx_drops"] == N
    while not settled():
        got += c2.drain(timeout=0.05)
    while True:                          # all of it is in client 2's ring now: take the rest
        n = c2.drain(timeout=0.05)
        got += n
        if not n:
            break
    dt = time.perf_counter() - t0
    s1, s2 = st(sw, "m1"), st(sw, "m2")
    assert sent == N and s1["rx_packets"] - base1["rx_packets"] == N and s1["rx_drops"] == 0
    tx = s2["tx_packets"] - base2["tx_packets"]
    drops = {k: v for k, v in s2.items() if k.startswith("tx_") and k not in
             ("tx_packets", "tx_bytes", "tx_drops") and v}
    assert tx + sum(drops.values()) == N and set(drops) <= {"tx_ring_full"}
    assert got == tx == c2.stats()["rx_frames"] - 0
    print(f"\n100k frames client->fastpath->client in {dt:.2f}s ({N / dt / 1e3:.0f} kpps in-process), "
          f"{tx} delivered, {N - tx} dropped ring_full")


def test_chained_descriptors_both_ways(sockdir):
    """A slave with 256-byte buffers: its frames come in chains (fastpath reassembles),
    fastpath's frames go out in chains into its posted buffers."""
    s = memif_switch(sockdir)
    with running(s):
        c1 = client(s, "m1", buffer_size=256)
        c2 = client(s, "m2", buffer_size=128)
        f = [frame(n, seq=i) for i, n in enumerate(SIZES)]
        assert c1.send(f) == len(f)
        assert recv_n(c2, len(f)) == f
        assert st(s, "m1")["rx_packets"] == len(f)
        c1.close()
        c2.close()
    s.close()


def test_fastpath_as_slave(sockdir):
    """memif-role=slave: fastpath connects to client masters, offers its region (with
    512-byte buffers: chains both ways) and frames flow both ways."""
    s = memif_switch(sockdir, role="slave", **{"memif-ring-size": "8", "memif-buffer-size": "512"})
    with running(s):
        c1 = MemifClient(f"{sockdir}/peer1.sock", id=1, role="master")
        c2 = MemifClient(f"{sockdir}/peer2.sock", id=2, role="master")
        assert wait_for(lambda: st(s, "m1")["memif_connected"] and st(s, "m2")["memif_connected"])
        assert c1.tx.size == 256 and c1.remote_if_name == "m1"
        f1 = [frame(n, src=MAC1, seq=i) for i, n in enumerate(SIZES)]
        assert c1.send(f1) == len(f1)
        assert recv_n(c2, len(f1)) == f1
        f2 = [frame(n, src=MAC2, dst=MAC1, seq=i) for i, n in enumerate(SIZES)]
        assert c2.send(f2) == len(f2)
        assert recv_n(c1, len(f2)) == f2
        assert pg_frames(s, "pg10", len(f1)) == f1
        # a burst through both rings, more than a ring holds
        many = [frame(64, src=MAC1, dst=MAC2, seq=i) for i in range(2000)]
        got, sent = [], 0
        while sent < 2000:
            sent += c1.send(many[sent:sent + 100], timeout=1)
            got += c2.recv()

        def out_m2():
            return st(s, "m2")["tx_packets"] - len(f1) + st(s, "m2").get("tx_ring_full", 0)
        while out_m2() < 2000 or len(got) < st(s, "m2")["tx_packets"] - len(f1):
            got += c2.recv(timeout=0.05)
        assert out_m2() == 2000 and len(got) == st(s, "m2")["tx_packets"] - len(f1)
        assert got == [f for f in many if f in set(got)]         # in order, byte for byte
        # the master goes away and comes back: the slave reconnects
        c1.disconnect()
        assert wait_for(lambda: st(s, "m1")["memif_connected"] == 0)
        c1.accept(timeout=5)
        assert wait_for(lambda: st(s, "m1")["memif_connected"] == 1)
        assert c1.send([f1[0]]) == 1 and recv_n(c2, 1) == [f1[0]]
        assert st(s, "m1")["memif_connects"] == 2 and st(s, "m1")["memif_disconnects"] == 1
        c1.close()
        c2.close()
    s.close()


def test_idle_switch_wakes_on_interrupt(sw, pair):
    """The dispatcher sleeps on the rings' eventfds: a frame wakes it at once."""
    c1, c2 = pair
    sw.graph.idle_sleep = 5.0
    time.sleep(0.3)                         # idle, asleep
    t0 = time.monotonic()
    c1.send([frame(80)])
    assert len(recv_n(c2, 1, timeout=2.0)) == 1
    assert time.monotonic() - t0 < 1.0
    assert c1.interrupts >= 1 and wait_for(lambda: st(sw, "m1")["memif_wakeups"] >= 1)


# ---------------------------------------------------------------- connections

def test_disconnect_and_reconnect(sw, pair):
    c1, c2 = pair
    c1.close()
    assert wait_for(lambda: st(sw, "m1")["memif_connected"] == 0)
    assert st(sw, "m1")["memif_disconnects"] == 1
    assert sw.port("m1").io[2].status()["last_error"] == "peer disconnected: client closed"
    c2.send([frame(70, src=MAC2)])          # flooded to m1, which has no peer
    assert wait_for(lambda: st(sw, "m1").get("tx_not_connected") == 1)
    c1 = client(sw, "m1")
    c2.send([frame(71, src=MAC2)])
    assert recv_n(c1, 1) == [frame(71, src=MAC2)]
    # a peer that dies without a word (its socket closes)
    c1._teardown()
    assert wait_for(lambda: st(sw, "m1")["memif_connected"] == 0)
    assert st(sw, "m1")["memif_disconnects"] == 2 and st(sw, "m1")["memif_connects"] == 2
    c1 = client(sw, "m1")
    c1.close()


def test_second_slave_and_unknown_id_refused(sw, pair):
    c1, _ = pair
    with pytest.raises(ConnectionError, match="Already connected"):
        MemifClient(sw.port("m1").io[2].path, id=1)
    with pytest.raises(ConnectionError, match="ID not found"):
        MemifClient(sw.port("m1").io[2].path, id=99)
    assert st(sw, "m1")["memif_rejected_connections"] == 1
    assert c1.connected and c1.send([frame()]) == 1


def test_port_deleted_tells_the_peer(sw, pair):
    c1, _ = pair
    sw.del_port("m1")
    assert wait_for(lambda: not c1.connected)
    assert c1.disconnect_reason == "interface deleted"
    assert os.path.exists(sw.port("m2").io[2].path)      # m2 still listens there


# ---------------------------------------------------------------- hostile messages

class RawSlave:
    """A memif slave spelled out message by message, to send what a real one would not."""

    def __init__(self, path, log2=4, bsize=256):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(3)
        self.sock.connect(path)
        kind, self.hello = self.recv()
        assert kind == mp.HELLO and self.hello.max_version == 0x200
        self.log2 = log2
        self.s2m, self.m2s, _, _, self.size = mp.slave_layout(log2, bsize)
        self.memfd = os.memfd_create("raw", os.MFD_ALLOW_SEALING)
        os.ftruncate(self.memfd, self.size)
        self.mem = mmap.mmap(self.memfd, self.size)
        for off in (self.s2m, self.m2s):
            struct.pack_into("<I", self.mem, off, mp.COOKIE)
        self.efd = [os.eventfd(0), os.eventfd(0)]

    def close(self):
        self.sock.close()
        self.mem.close()
        for fd in (self.memfd, *self.efd):
            os.close(fd)

    def recv(self):
        data = self.sock.recv(256)
        if not data:
            return None, None
        return mp.decode(data)

    def send(self, msg, fds=()):
        mp.send_msg(self.sock, msg) if not fds else \
            self.sock.sendmsg([msg], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack(f"{len(fds)}i", *fds))])

    def step(self, msg, fds=(), reply=mp.ACK):
        self.send(msg, fds)
        kind, body = self.recv()
        assert kind == reply, body
        return body

    def init(self, id=0):
        self.step(mp.init(id, "raw"))

    def region(self):
        self.step(mp.add_region(0, self.size), [self.memfd])

    def rings(self):
        self.step(mp.add_ring(0, 0, self.s2m, self.log2, True), [self.efd[0]])
        self.step(mp.add_ring(0, 0, self.m2s, self.log2, False), [self.efd[1]])

    def all_but_connect(self):
        self.init()
        self.region()
        self.rings()


def _pipe_region(r):
    a, b = os.pipe()
    r.init()
    try:
        r.send(mp.add_region(0, r.size), [a])
    finally:
        os.close(a)
        os.close(b)


def _unsealable_region(r):
    fd = os.memfd_create("unsealable")                # no MFD_ALLOW_SEALING: could shrink later
    os.ftruncate(fd, r.size)
    r.init()
    try:
        r.send(mp.add_region(0, r.size), [fd])
    finally:
        os.close(fd)


HOSTILE = {
    "unknown type": (lambda r: r.send(b"\x99\x00".ljust(128, b"\0")), "unknown message type 153"),
    "short packet": (lambda r: r.send(b"\x03\x00" + bytes(8)), "is not one memif message"),
    "long packet": (lambda r: r.send(mp.init(0, "x") + bytes(72)), "is not one memif message"),
    "two fds": (lambda r: (r.init(), r.send(mp.add_region(0, r.size), [r.memfd, r.efd[0]])), "2 descriptors"),
    "bad version": (lambda r: r.send(mp.init(0, "x", version=0x0100)), "incompatible memif version 1.0"),
    "unknown id": (lambda r: r.send(mp.init(77, "x")), "ID not found"),
    "ip mode": (lambda r: r.send(mp.init(0, "x", mode=1)), "only ethernet mode"),
    "hello to master": (lambda r: r.send(mp.hello("x")), "unexpected HELLO while waiting for INIT"),
    "region first": (lambda r: r.send(mp.add_region(0, r.size), [r.memfd]), "unexpected ADD_REGION"),
    "init twice": (lambda r: (r.init(), r.send(mp.init(0, "x"))), "unexpected INIT"),
    "ack to master": (lambda r: (r.init(), r.send(mp.encode(mp.ACK))), "unexpected ACK"),
    "region without fd": (lambda r: (r.init(), r.send(mp.add_region(0, r.size))), "Missing region fd"),
    "region is a pipe": (_pipe_region, "not a memory file"),
    "region not sealable": (_unsealable_region, "cannot be sealed"),
    "region past file": (lambda r: (r.init(), r.send(mp.add_region(0, r.size + 4096), [r.memfd])),
                         "shorter than the region"),
    "region index 1": (lambda r: (r.init(), r.send(mp.add_region(1, r.size), [r.memfd])), "Invalid region index 1"),
    "region size 0": (lambda r: (r.init(), r.send(mp.add_region(0, 0), [r.memfd])), "Invalid region size 0"),
    "region huge": (lambda r: (r.init(), r.send(mp.add_region(0, 1 << 40), [r.memfd])), "Invalid region size"),
    "ring without fd": (lambda r: (r.init(), r.region(), r.send(mp.add_ring(0, 0, 0, 4, True))),
                        "Missing interrupt fd"),
    "ring fd not eventfd": (lambda r: (r.init(), r.region(), r.send(mp.add_ring(0, 0, 0, 4, True), [r.memfd])),
                            "not an eventfd"),
    "ring index 1": (lambda r: (r.init(), r.region(), r.send(mp.add_ring(1, 0, 0, 4, True), [r.efd[0]])),
                     "Invalid ring index 1"),
    "ring too big": (lambda r: (r.init(), r.region(), r.send(mp.add_ring(0, 0, 0, 15, True), [r.efd[0]])),
                     "2**15 slots"),
    "ring twice": (lambda r: (r.init(), r.region(), r.step(mp.add_ring(0, 0, 0, 4, True), [r.efd[0]]),
                              r.send(mp.add_ring(0, 0, 0, 4, True), [r.efd[0]])), "s2m ring added twice"),
    "connect without rings": (lambda r: (r.init(), r.region(), r.send(mp.encode(mp.CONNECT, "x"))),
                              "CONNECT without an s2m ring"),
    "ring outside region": (lambda r: (r.init(), r.region(),
                                       r.step(mp.add_ring(0, 0, r.size - 64, 4, True), [r.efd[0]]),
                                       r.step(mp.add_ring(0, 0, r.m2s, 4, False), [r.efd[1]]),
                                       r.send(mp.encode(mp.CONNECT, "x"))), "outside its"),
    "ring offset wraps": (lambda r: (r.init(), r.region(),
                                     r.step(mp.add_ring(0, 0, 0xfffffff8, 4, True), [r.efd[0]]),
                                     r.step(mp.add_ring(0, 0, r.m2s, 4, False), [r.efd[1]]),
                                     r.send(mp.encode(mp.CONNECT, "x"))), "outside its"),
    "ring in no region": (lambda r: (r.init(), r.region(), r.step(mp.add_ring(0, 3, 0, 4, True), [r.efd[0]]),
                                     r.step(mp.add_ring(0, 0, r.m2s, 4, False), [r.efd[1]]),
                                     r.send(mp.encode(mp.CONNECT, "x"))), "region 3, which does not exist"),
    "ring misaligned": (lambda r: (r.init(), r.region(), r.step(mp.add_ring(0, 0, 4, 4, True), [r.efd[0]]),
                                   r.step(mp.add_ring(0, 0, r.m2s, 4, False), [r.efd[1]]),
                                   r.send(mp.encode(mp.CONNECT, "x"))), "misaligned"),
    "wrong cookie": (lambda r: (struct.pack_into("<I", r.mem, r.m2s, 0xc0ffee), r.all_but_connect(),
                                r.send(mp.encode(mp.CONNECT, "x"))), "wrong ring cookie 0xc0ffee"),
    "indices apart": (lambda r: (struct.pack_into("<H", r.mem, r.s2m + 6, 100), r.all_but_connect(),
                                 r.send(mp.encode(mp.CONNECT, "x"))), "more than 16 apart"),
    "connect twice": (lambda r: (r.all_but_connect(), r.step(mp.encode(mp.CONNECT, "x"), reply=mp.CONNECTED),
                                 r.send(mp.encode(mp.CONNECT, "x"))), "unexpected CONNECT"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_messages_disconnect_with_reason(sockdir, case):
    """Each bad message: DISCONNECT with the reason, the connection closed, counted; the
    port then serves a good slave."""
    s = Switch(n_buffers=1024)
    s.add_br("br0")
    s.add_port("br0", "m0", type="memif", **{"options:memif-socket": f"{sockdir}/m.sock"})
    s.add_port("br0", "m1", type="memif", **{"options:memif-socket": f"{sockdir}/m.sock", "options:memif-id": "1"})
    steps, reason = HOSTILE[case]
    with running(s):
        r = RawSlave(f"{sockdir}/m.sock")
        try:
            steps(r)
            kind, body = r.recv()
            assert kind == mp.DISCONNECT and reason in body.reason, body
            assert r.recv() == (None, None)              # and closed
        finally:
            r.close()
        row = st(s, "m0")
        assert row["memif_protocol_errors"] + row["memif_socket_protocol_errors"] == 1
        assert wait_for(lambda: st(s, "m0")["memif_connected"] == 0)
        assert wait_for(lambda: s.port("m0").io[2].regions.n == 0)     # nothing of it stays mapped
        c = client(s, "m0")
        c.send([frame(90)])
        assert wait_for(lambda: st(s, "m0")["rx_packets"] == 1)
        c.close()
    s.close()


def test_readded_port_counts_from_zero_and_errors_keep_history(sockdir):
    """del-port + add-port under the same name: `show interfaces` starts again from zero
    (as OVS does for a new port), while `show errors` keeps the node's history (its error
    codes are reused, as VPP's node counters outlive interfaces)."""
    s = Switch(n_buffers=1024)
    s.add_br("br0")
    s.add_port("br0", "pg0", type="pg")
    opts = {"options:memif-socket": f"{sockdir}/m.sock"}
    flood = frame(64)                                 # to the broadcast address

    def send(n):
        s.port("pg0").io[0].add([flood] * n)
        s.graph.run_until_idle()

    def not_connected():
        return sum(c for c, node, reason, _ in s.errors()
                   if node == "m0-output" and reason == "not_connected")

    s.add_port("br0", "m0", type="memif", **opts)
    send(5)                                          # no peer: flooded copies dropped
    assert st(s, "m0")["tx_drops"] == 5 and not_connected() == 5
    s.del_port("m0")
    s.add_port("br0", "m0", type="memif", **opts)
    assert st(s, "m0")["tx_drops"] == 0 and "tx_not_connected" not in st(s, "m0")
    send(3)
    assert st(s, "m0")["tx_drops"] == 3 and st(s, "m0")["tx_not_connected"] == 3
    assert not_connected() == 8
    s.graph.pool.check_accounting(expected_in_flight=0)
    s.close()


def test_handshake_timeout(sockdir, monkeypatch):
    monkeypatch.setattr(mp, "HANDSHAKE_TIMEOUT", 0.3)
    s = Switch(n_buffers=1024)
    s.add_br("br0")
    s.add_port("br0", "m0", type="memif", **{"options:memif-socket": f"{sockdir}/m.sock"})
    with running(s):
        idle = RawSlave(f"{sockdir}/m.sock")              # says nothing after HELLO
        stuck = RawSlave(f"{sockdir}/m.sock")             # stops halfway
        stuck.init()
        for r in (idle, stuck):
            kind, body = r.recv()
            assert kind == mp.DISCONNECT and body.reason == "handshake timeout"
            r.close()
        row = st(s, "m0")
        assert row["memif_socket_handshake_timeouts"] == 1 and row["memif_handshake_timeouts"] == 1
        client(s, "m0").close()
    s.close()


def test_many_idle_connections_bounded(sockdir):
    s = Switch(n_buffers=1024)
    s.add_br("br0")
    s.add_port("br0", "m0", type="memif", **{"options:memif-socket": f"{sockdir}/m.sock"})
    with running(s):
        socks = []
        for _ in range(mp.MAX_PENDING + 4):
            x = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            x.connect(f"{sockdir}/m.sock")
            socks.append(x)
        assert wait_for(lambda: s.port("m0").io[2].listener.counters["rejected_connections"] == 4)
        for x in socks:
            x.close()
        assert wait_for(lambda: not s.port("m0").io[2].listener.pending)
        client(s, "m0").close()
    s.close()


# ---------------------------------------------------------------- hostile rings

def test_descriptors_outside_the_region_are_dropped(sw, pair):
    c1, c2 = pair
    size = len(c1.tx.mem)
    good = frame(100, src=MAC1, seq=1)
    off = int(c1._tx_buf_off[c1._tx_pos & c1.tx.mask])
    c1.tx.mem[off:off + len(good)] = np.frombuffer(good, np.uint8)
    put_descriptors(c1, [
        (0, 0, 100, size),                  # starts past the end
        (0, 0, 100, size - 50),             # runs past the end
        (0, 0, 0xffffffff, 0),              # huge length
        (0, 0, 0x200, 0xffffff00),          # offset + length wraps 32 bits
        (0, 1, 100, 0),                     # region 1 does not exist
        (0, 0xffff, 100, 0),
        (0, 0, 100, off),                   # ... and a good one after them
    ])
    assert consumed(c1)
    assert recv_n(c2, 1) == [good]
    s1 = st(sw, "m1")
    assert s1["rx_desc_bad_addr"] == 6 and s1["rx_drops"] == 6 and s1["rx_packets"] == 1
    assert s1["memif_connected"] == 1


def test_too_big_runt_and_endless_chains(sw, pair):
    c1, c2 = pair
    o = [int(x) for x in c1._tx_buf_off]
    p = c1._tx_pos
    put_descriptors(c1, [
        (0, 0, 70000, o[p % 1024]),                             # larger than a big buffer
        (1, 0, 60000, o[(p + 1) % 1024]), (0, 0, 6000, o[(p + 2) % 1024]),  # chain over 64 KiB
        (0, 0, 10, o[(p + 3) % 1024]),                          # runt
        (0, 0, 0, o[(p + 4) % 1024]),                           # empty
    ])
    assert consumed(c1)
    s1 = st(sw, "m1")
    assert s1["rx_too_big"] == 2 and s1["rx_runt"] == 2 and s1["rx_packets"] == 0
    # a chain that is not finished waits for its end ...
    put_descriptors(c1, [(1, 0, 60, o[(c1._tx_pos + k) % 1024]) for k in range(10)])
    time.sleep(0.1)
    assert c1.tx.tail == (c1._tx_pos - 10) & 0xffff and st(sw, "m1")["rx_packets"] == 0
    # ... but one as long as the ring never ends: the whole ring is dropped
    put_descriptors(c1, [(1, 0, 60, o[(c1._tx_pos + k) % 1024]) for k in range(1014)])
    assert consumed(c1)
    assert st(sw, "m1")["rx_bad_chain"] == 1
    assert c1.send([frame(60)]) == 1 and len(recv_n(c2, 1)) == 1


def test_head_jump_disconnects(sw, pair):
    c1, c2 = pair
    put_descriptors(c1, [], head=c1._tx_pos + 5000)
    assert wait_for(lambda: not c1.connected)
    assert "index moved" in c1.disconnect_reason
    s1 = st(sw, "m1")
    assert s1["rx_index_jump"] == 1 and s1["memif_ring_failures"] == 1 and s1["memif_connected"] == 0
    assert s1["rx_drops"] == 0                     # a ring failure is not a frame drop
    c1 = client(sw, "m1")
    assert c1.send([frame(61)]) == 1 and len(recv_n(c2, 1)) == 1
    c1.close()


def test_slave_posts_bad_buffers_for_fastpath_to_fill(sw, pair):
    """The slave's receive ring (fastpath transmits into it) names buffers outside its
    memory: those frames are dropped, the slots come back empty, good ones go on."""
    c1, c2 = pair
    size = len(c2.rx.mem)
    c2.rx.desc["offset"][:] = size - 10        # every posted buffer runs past the region
    c1.send([frame(100, seq=i) for i in range(5)])
    empties = recv_n(c2, 5)
    assert empties == [b""] * 5                 # returned with length 0
    assert st(sw, "m2")["tx_desc_bad_addr"] == 5 and st(sw, "m2")["tx_packets"] == 0
    c2.rx.desc["offset"][:] = c2._rx_buf_off    # repaired: frames flow again
    c1.send([frame(100, seq=9)])
    assert recv_n(c2, 1) == [frame(100, seq=9)]


def test_hostile_master_against_fastpath_slave(sockdir):
    """fastpath as the slave: a master that returns lengths over the buffer size, then
    more slots than were posted, then moves our transmit ring's tail impossibly."""
    s = memif_switch(sockdir, role="slave", **{"memif-ring-size": "6", "memif-buffer-size": "256"})
    with running(s):
        c1 = MemifClient(f"{sockdir}/peer1.sock", id=1, role="master")
        c2 = MemifClient(f"{sockdir}/peer2.sock", id=2, role="master")
        assert wait_for(lambda: st(s, "m1")["memif_connected"] and st(s, "m2")["memif_connected"])
        t = c1.tx                                 # M2S: fastpath posted 64 buffers of 256 bytes
        for k in range(3):
            i = (c1._tx_pos + k) & t.mask
            t.desc["length"][i] = (1000, 0xffffffff, 257)[k]
            t.desc["flags"][i] = 0
        c1._tx_pos += 3
        t.set_tail(c1._tx_pos)
        t.signal()
        assert wait_for(lambda: st(s, "m1").get("rx_desc_bad_length") == 3)
        assert st(s, "m1")["memif_connected"] == 1 and c1.send([frame(70)]) == 1 and recv_n(c2, 1)
        t.set_tail(c1._tx_pos + 200)              # hands back slots it was never given
        t.signal()
        assert wait_for(lambda: not c1.connected) and "index moved" in c1.disconnect_reason
        assert st(s, "m1")["rx_index_jump"] == 1
        c2.rx.set_tail(c2.rx.tail + 7)            # our transmit ring's tail runs ahead of us
        c1.accept(timeout=5)
        assert wait_for(lambda: st(s, "m1")["memif_connected"] == 1)
        c1.send([frame(72)])                      # flooded to m2, whose ring the peer broke
        assert wait_for(lambda: not c2.connected) and st(s, "m2")["tx_index_jump"] == 1
        c1.close()
        c2.close()
    s.close()


def test_random_rings_never_hurt_the_switch(sw, pair):
    """Random descriptors and indices, round after round: counted drops or a disconnect,
    never a crash, and every pool buffer accounted for (checked when the loop stops)."""
    rng = np.random.default_rng(7)
    c1, c2 = pair
    disconnects = 0
    for _ in range(150):
        if not c1.connected:
            disconnects += 1
            c1.close()
            assert wait_for(lambda: st(sw, "m1")["memif_connected"] == 0)
            c1 = client(sw, "m1")
        size = len(c1.tx.mem)
        descs = []
        for _ in range(int(rng.integers(1, 40))):
            off = int(rng.choice([0, size - 8, size, 0xfffffff0, int(rng.integers(0, size))]))
            ln = int(rng.choice([0, 13, 14, 60, 1500, 2048, 2049, 0xffffffff, int(rng.integers(0, 1 << 32))]))
            descs.append((int(rng.integers(0, 2)), int(rng.choice([0, 0, 0, 1, 7])), ln, off))
        head = None if rng.random() < 0.95 else int(rng.integers(0, 1 << 16))
        put_descriptors(c1, descs, head)
        wait_for(lambda: c1.tx.tail == c1.tx.head or not c1.connected, 0.01)
        c2.drain()
    assert disconnects >= 1 and st(sw, "m1")["rx_drops"] > 0
    c1.close()
    c1 = client(sw, "m1")
    while c2.drain(timeout=0.1):
        pass
    good = frame(99, src=MAC1)
    assert c1.send([good]) == 1
    assert good in recv_n(c2, 1)
    c1.close()


# ---------------------------------------------------------------- configuration

def test_port_options_and_teardown(sockdir):
    ctl = Control(Switch(n_buffers=1024))
    try:
        ctl.execute(["add-br", "br0"])
        for bad, msg in (("options:memif-role=boss", "not master or slave"),
                         ("options:memif-id=-1", "memif-id"),
                         ("options:memif-id=4294967296", "memif-id"),
                         ("options:memif-ring-size=15", "memif-ring-size"),
                         ("options:memif-buffer-size=32", "memif-buffer-size"),
                         ("options:memif-socket=/" + "x" * 120, "socket path"),
                         ("options:memif-socket=@", "socket path")):
            sock = [] if "memif-socket" in bad else [f"options:memif-socket={sockdir}/a"]
            with pytest.raises(CommandError, match=msg):
                ctl.execute(["add-port", "br0", "m0", "type=memif", *sock, bad])
        with pytest.raises(CommandError, match="memif-socket=PATH"):
            ctl.execute(["add-port", "br0", "m0", "type=memif"])
        with open(f"{sockdir}/file", "w"):
            pass
        with pytest.raises(CommandError, match="not a socket"):
            ctl.execute(["add-port", "br0", "m0", "type=memif", f"options:memif-socket={sockdir}/file"])
        ctl.execute(["add-port", "br0", "m0", "type=memif", f"options:memif-socket={sockdir}/s"])
        ctl.execute(["add-port", "br0", "m1", "type=memif", f"options:memif-socket={sockdir}/s",
                     "options:memif-id=1", "options:memif-role=master", "options:memif-ring-size=12"])
        with pytest.raises(CommandError, match="id 1 .* is taken by port m1"):
            ctl.execute(["add-port", "br0", "m2", "type=memif", f"options:memif-socket={sockdir}/s",
                         "options:memif-id=1"])
        ctl.execute(["add-port", "br0", "m3", "type=memif", "options:memif-socket=@fp-test-memif",
                     "options:memif-role=slave", "options:memif-buffer-size=1024"])
        rows = {r["name"]: r for r in ctl.execute(["show", "interfaces"], "json")}
        assert rows["m0"]["memif_connected"] == 0 and rows["m3"]["memif_connected"] == 0
        assert "memif-role=master" in ctl.execute(["show"])
        ctl.execute(["del-port", "m0"])
        assert os.path.exists(f"{sockdir}/s")         # m1 still listens there
        ctl.execute(["del-port", "m1"])
        assert not os.path.exists(f"{sockdir}/s")
        assert not mp.MemifListener._by_path.get(f"{sockdir}/s")
    finally:
        ctl.switch.close()


def test_abstract_socket(sockdir):
    s = Switch(n_buffers=1024)
    s.add_br("br0")
    name = f"@fp-memif-{os.getpid()}"
    s.add_port("br0", "m0", type="memif", **{"options:memif-socket": name})
    s.add_port("br0", "pg0", type="pg")
    with running(s):
        c = MemifClient(name)
        c.send([frame(77)])
        assert pg_frames(s, "pg0", 1) == [frame(77)]
        c.close()
    s.close()


# ---------------------------------------------------------------- DPDK testpmd as the peer

TESTPMD = shutil.which("dpdk-testpmd")
needs_dpdk = pytest.mark.skipif(TESTPMD is None or not glob.glob("/usr/lib/*/dpdk/pmds-*/librte_net_memif.so*"),
                                reason="dpdk-testpmd or its memif driver not installed (scripts/setup.sh)")


class TestPmd:
    """dpdk-testpmd with one net_memif port, driven through its interactive prompt."""
    __test__ = False

    def __init__(self, workdir, sock, role, vdev_args="", args=()):
        """vdev_args: more net_memif options (",bsize=..."); args: more testpmd options."""
        self.log = open(f"{workdir}/testpmd.log", "w+")
        env = dict(os.environ, RUNTIME_DIRECTORY=workdir)
        self.p = subprocess.Popen(
            ["stdbuf", "-oL", TESTPMD, "-l", "0,1", "--main-lcore", "1", "--no-pci", "--no-huge", "-m", "128",
             f"--file-prefix=fpmif{os.getpid()}", "--log-level=pmd.net.memif:info",
             f"--vdev=net_memif0,role={role},socket={sock},socket-abstract=no,id=0{vdev_args}",
             "--", "-i", "--total-num-mbufs=4096", *args],
            stdin=subprocess.PIPE, stdout=self.log, stderr=subprocess.STDOUT, env=env, text=True)

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def output(self):
        self.log.seek(0)
        return self.log.read()

    def forward_stats(self, timeout=10):
        """Stop forwarding; (RX-packets, TX-packets) of port 0 from what `stop` prints."""
        n = self.output().count("Forward statistics for port 0")
        self.cmd("stop")
        assert wait_for(lambda: self.output().count("Forward statistics for port 0") > n, timeout), self.output()[-2000:]
        block = self.output().split("Forward statistics for port 0")[-1]
        rx = int(re.search(r"RX-packets:\s+(\d+)", block).group(1))
        tx = int(re.search(r"TX-packets:\s+(\d+)", block).group(1))
        return rx, tx

    def quit(self):
        if self.p.poll() is None:
            try:
                self.cmd("quit")
            except BrokenPipeError:
                pass
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


@needs_dpdk
def test_dpdk_testpmd_txonly_into_fastpath_master(sockdir):
    """testpmd (memif client = slave) sends with txonly into fastpath's master port:
    every frame it counts as sent, fastpath counts as received."""
    s = Switch(n_buffers=8192)
    s.add_br("br0")
    s.add_port("br0", "m0", type="memif", **{"options:memif-socket": f"{sockdir}/m.sock"})
    s.add_port("br0", "pg0", type="pg", **{"options:keep": "false"})
    with running(s):
        tp = TestPmd(sockdir, f"{sockdir}/m.sock", "client")
        try:
            assert wait_for(lambda: st(s, "m0")["memif_connected"] == 1, 30), tp.output()[-2000:]
            assert "DPDK" in s.port("m0").io[2].status()["remote_name"]
            tp.cmd("set fwd txonly")
            tp.cmd("start")
            assert wait_for(lambda: st(s, "m0")["rx_packets"] > 20_000, 15)
            _, tx = tp.forward_stats()
            assert wait_for(lambda: st(s, "m0")["rx_packets"] == tx, 5), (tx, st(s, "m0"))
            row = st(s, "m0")
            assert row["rx_drops"] == 0 and row["rx_bytes"] == 64 * tx
            assert s.port("pg0").io[1].tx_packets == tx
            print(f"\ntestpmd txonly -> fastpath master: {tx} frames, all counted")
        finally:
            tp.quit()
    s.close()


@needs_dpdk
def test_dpdk_testpmd_io_echo_with_fastpath_slave(sockdir):
    """fastpath's slave port connects to testpmd (memif server = master) in io mode,
    which sends every frame back: pg0 -> m0 -> testpmd -> m0 -> pg0, byte for byte."""
    s = Switch(n_buffers=8192)
    s.add_br("br0")
    s.add_port("br0", "m0", type="memif", **{"options:memif-socket": f"{sockdir}/tp.sock",
                                             "options:memif-role": "slave"})
    s.port("m0").io[2].reconnect = 0.2
    s.add_port("br0", "pg0", type="pg")
    with running(s):
        tp = TestPmd(sockdir, f"{sockdir}/tp.sock", "server")
        try:
            assert wait_for(lambda: st(s, "m0")["memif_connected"] == 1, 30), tp.output()[-2000:]
            tp.cmd("set fwd io")
            tp.cmd("start")
            time.sleep(0.3)
            frames = [frame(n, src=MAC3, seq=i) for i in range(30) for n in SIZES[:6]]
            back = []
            for k in range(0, len(frames), 60):           # at a pace the rings hold
                s.port("pg0").io[0].add(frames[k:k + 60])
                want = len(back) + 60
                wait_for(lambda: back.extend(s.port("pg0").io[1].take()) or len(back) >= want, 5)
            assert back == frames
            rx, tx = tp.forward_stats()
            row = st(s, "m0")
            assert rx == tx == row["tx_packets"] == row["rx_packets"] == len(frames)
            assert row["rx_drops"] == row["tx_drops"] == 0
        finally:
            tp.quit()
    s.close()
