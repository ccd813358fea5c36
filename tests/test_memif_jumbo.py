"""memif jumbo frames: chained descriptors (MEMIF_DESC_FLAG_NEXT) up to 64 KiB.

A frame longer than one descriptor's buffer crosses a memif ring as a chain, every
descriptor but the last flagged NEXT (memif.h; VPP and DPDK's net_memif do the same).
fastpath gathers a chain longer than a small pool buffer (2048 bytes) into a big one and
writes a big frame out as a chain into the peer's buffers (master) or its own (slave).

Peers: fastpath.memif.client in both roles (through a bridge of two memif ports), then
DPDK's testpmd (net_memif, io forwarding: every frame comes back) in both roles. Frames
are built with scapy and compared byte for byte; the pool's accounting is checked when
each dispatch loop stops. Then what a broken peer does with chains: longer than 64 KiB,
never ending, more than the big buffers left -- counted drops, frames flow afterwards.
"""
import time

import numpy as np
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from fastpath.memif.client import MemifClient
from fastpath.switch import Switch
from test_memif import (BCAST, MAC1, MAC2, MAC3, TestPmd, client, consumed, put_descriptors,
                        recv_n, running, sockdir, st, wait_for)   # noqa: F401 (sockdir: a fixture)

SIZES = (64, 1500, 2049, 9000, 9216, 60000)
JUMBO_MTU = "65513"          # mtu_request of the ports here: frames of up to 65 535 bytes leave


def frame(n, src=MAC1, dst=BCAST, seq=0):
    """An n-byte Ethernet/IPv4/UDP frame (scapy) whose payload depends on n and seq."""
    # IP id = seq: frames of one size stay distinct past 256 of them (the body repeats)
    h = Ether(src=src, dst=dst) / IP(src="192.0.2.1", dst="192.0.2.2", id=seq & 0xffff) / UDP(sport=1000, dport=9)
    body = bytes((i * 7 + seq + n) & 0xff for i in range(n - len(h)))
    f = bytes(h / Raw(body))
    assert len(f) == n
    return f


def memif_pair_switch(sockdir, role, n_buffers=4096, **extra):
    """Bridge br0 of memif ports m1 and m2 (MTU 65000) and nothing else, fastpath in `role`."""
    s = Switch(n_buffers=n_buffers)
    s.add_br("br0")
    for i in (1, 2):
        path = f"{sockdir}/memif.sock" if role == "master" else f"{sockdir}/peer{i}.sock"
        opts = {"options:memif-socket": path, "options:memif-id": str(i), "options:memif-role": role,
                "mtu_request": JUMBO_MTU}
        opts.update({f"options:{k}": v for k, v in extra.items()})
        s.add_port("br0", f"m{i}", type="memif", **opts)
        s.port(f"m{i}").io[2].reconnect = 0.1
    return s


def peers(s, sockdir, role, **kw):
    """Two clients, one per port, in the role opposite to fastpath's."""
    if role == "master":
        return client(s, "m1", **kw), client(s, "m2", **kw)
    c = [MemifClient(f"{sockdir}/peer{i}.sock", id=i, role="master", **kw) for i in (1, 2)]
    assert wait_for(lambda: st(s, "m1")["memif_connected"] and st(s, "m2")["memif_connected"], 5)
    return c


def rx_big_free(s):
    return s.graph.pool.n_big_free


# ---------------------------------------------------------------- fastpath <-> client

@pytest.mark.parametrize("role,buffer_size", [("master", 2048), ("master", 256), ("slave", 2048),
                                              ("slave", 1024)])
def test_jumbo_frames_both_ways_with_client(sockdir, role, buffer_size):
    """64 .. 60 000-byte frames c1 -> m1 -> m2 -> c2 and back, byte for byte, whichever side
    owns the buffers and however small they are (a 60 000-byte frame in 256-byte buffers
    is a chain of 235)."""
    extra = {"memif-buffer-size": str(buffer_size)} if role == "slave" else {}
    s = memif_pair_switch(sockdir, role, **extra)
    with running(s):
        c1, c2 = peers(s, sockdir, role, **({"buffer_size": buffer_size} if role == "master" else {}))
        f1 = [frame(n, src=MAC1, seq=i) for i, n in enumerate(SIZES)]
        f2 = [frame(n, src=MAC2, dst=MAC1, seq=i) for i, n in enumerate(SIZES)]   # MAC1 is learned
        for f in f1:                      # one at a time: a 60 000-byte chain fills a ring
            assert c1.send([f], timeout=2) == 1
            assert recv_n(c2, 1) == [f]
        for f in f2:
            assert c2.send([f], timeout=2) == 1
            assert recv_n(c1, 1) == [f]
        # the peer may see the last frame before the output node has counted it
        assert wait_for(lambda: st(s, "m1")["tx_packets"] == len(SIZES))
        s1, s2 = st(s, "m1"), st(s, "m2")
        assert s1["rx_packets"] == s2["tx_packets"] == s2["rx_packets"] == s1["tx_packets"] == len(SIZES)
        assert s1["rx_bytes"] == s2["tx_bytes"] == s2["rx_bytes"] == s1["tx_bytes"] == sum(SIZES)
        assert s1["rx_drops"] == s1["tx_drops"] == s2["rx_drops"] == s2["tx_drops"] == 0
        assert s.graph.pool.big_alloc_failures == 0
        c1.close()
        c2.close()
    s.close()


def test_burst_of_jumbo_frames_counted_exactly(sockdir):
    """300 frames of 9216 bytes in bursts: more than the 64 big buffers hold at once. m1
    takes every one (a burst that ran out of big buffers leaves the rest in the ring until
    its vector has given them back); each arrives at c2 in order, or m2 counts it as
    ring_full."""
    s = memif_pair_switch(sockdir, "master")
    with running(s):
        c1, c2 = peers(s, sockdir, "master")
        c2.send([frame(64, src=MAC2, dst=MAC1)])           # learn MAC2 on m2
        assert recv_n(c1, 1)
        want = [frame(9216, src=MAC1, dst=MAC2, seq=i) for i in range(300)]
        got, sent = [], 0
        while sent < len(want):
            sent += c1.send(want[sent:sent + 20], timeout=1)
            got += c2.recv()

        def out_m2():
            r = st(s, "m2")
            return r["tx_packets"] + r.get("tx_ring_full", 0)
        assert wait_for(lambda: got.extend(c2.recv()) or out_m2() == len(want), 5)
        while more := c2.recv(timeout=0.05):            # all of it is in c2's ring now
            got += more
        r1, r2 = st(s, "m1"), st(s, "m2")
        assert r1["rx_packets"] == 300 and r1["rx_drops"] == 0
        assert len(got) == r2["tx_packets"] and r2["tx_drops"] == r2.get("tx_ring_full", 0)
        assert got == [f for f in want if f in set(got)] and len(got) > 100
        c1.close()
        c2.close()
    s.close()


def test_memif_mtu_default_9000_and_option(sockdir):
    """Without mtu_request a memif port sends frames of MTU 9000 (9018 bytes with a tag's
    room): a 9216-byte frame is dropped as mtu_exceeded by interface-output, counted."""
    s = Switch(n_buffers=2048)
    s.add_br("br0")
    s.add_port("br0", "m1", type="memif", **{"options:memif-socket": f"{sockdir}/m.sock",
                                             "options:memif-id": "1", "mtu_request": "9216"})
    s.add_port("br0", "m2", type="memif", **{"options:memif-socket": f"{sockdir}/m.sock",
                                             "options:memif-id": "2"})
    with running(s):
        c1, c2 = client(s, "m1"), client(s, "m2")
        ok, big = frame(9014), frame(9216)
        assert c1.send([ok, big]) == 2
        assert recv_n(c2, 1) == [ok]
        assert wait_for(lambda: ("interface-output", "mtu_exceeded") in
                        {(n, r): c for c, n, r, _ in s.errors()}.keys())
        assert {(n, r): c for c, n, r, _ in s.errors()}[("interface-output", "mtu_exceeded")] == 1
        assert c2.recv(timeout=0.1) == []
        assert c2.send([big]) == 1 and recv_n(c1, 1) == [big]     # m1 takes 9216 (MTU 9216 + 22)
        c1.close()
        c2.close()
    s.close()


def test_frame_larger_than_the_whole_ring_is_too_big_on_transmit(sockdir):
    """A slave posting 16 buffers of 256 bytes can never take a 9000-byte frame: m2 counts
    it as too_big (not ring_full, and the frames behind it in the vector still go)."""
    s = memif_pair_switch(sockdir, "master")
    with running(s):
        c1 = client(s, "m1")
        c2 = client(s, "m2", ring_size=4, buffer_size=256)
        small = frame(300, seq=1)
        assert c1.send([frame(9000), small]) == 2
        assert recv_n(c2, 1) == [small]
        assert wait_for(lambda: st(s, "m2")["tx_packets"] == 1)
        r2 = st(s, "m2")
        assert r2["tx_too_big"] == 1 and r2["tx_packets"] == 1 and r2.get("tx_ring_full", 0) == 0
        c1.close()
        c2.close()
    s.close()


# ---------------------------------------------------------------- forged chains

def test_forged_chains_are_counted_drops(sockdir):
    """A peer's chain over 64 KiB is too_big, a chain as long as the ring is bad_chain; the
    slots are consumed, nothing leaks from either buffer class, and frames (jumbo ones
    too) flow afterwards."""
    s = memif_pair_switch(sockdir, "master")
    with running(s):
        c1, c2 = peers(s, sockdir, "master")
        pool = s.graph.pool
        off = [int(x) for x in c1._tx_buf_off]
        mask = c1.tx.mask

        def chain(f):
            """f written into the slots from _tx_pos on, 2048 bytes each, as one chain."""
            p, descs = c1._tx_pos, []
            for k in range(0, len(f), 2048):
                o = off[(p + len(descs)) & mask]
                part = f[k:k + 2048]
                c1.tx.mem[o:o + len(part)] = np.frombuffer(part, np.uint8)
                descs.append((1 if k + 2048 < len(f) else 0, 0, len(part), o))
            return descs
        put_descriptors(c1, chain(frame(65535) + b"x"))          # 65 536 bytes: one over
        assert consumed(c1)
        assert wait_for(lambda: st(s, "m1").get("rx_too_big") == 1)
        largest = frame(65535)                                    # 32 descriptors: fits
        put_descriptors(c1, chain(largest))
        assert consumed(c1)
        assert recv_n(c2, 1) == [largest] and st(s, "m1")["rx_packets"] == 1
        # every slot flagged NEXT, the whole ring of them: a chain that never ends
        put_descriptors(c1, [(1, 0, 2048, off[(c1._tx_pos + k) & mask]) for k in range(c1.tx.size)])
        assert consumed(c1)
        assert wait_for(lambda: st(s, "m1").get("rx_bad_chain") == 1)
        r1 = st(s, "m1")
        assert r1["rx_drops"] == 2 and r1["rx_packets"] == 1 and r1["memif_connected"] == 1
        f = [frame(n, seq=i) for i, n in enumerate(SIZES)]
        for x in f:
            assert c1.send([x]) == 1 and recv_n(c2, 1) == [x]
        assert wait_for(lambda: pool.in_flight == 0)
        c1.close()
        c2.close()
    s.close()


def test_no_big_buffer_left_is_a_counted_drop(sockdir):
    """While every big buffer is taken, a jumbo frame from the peer is dropped as
    no_big_buffer (its slots handed back) and small frames still pass; once big buffers
    are free again jumbo frames pass too."""
    s = memif_pair_switch(sockdir, "master")
    pool = s.graph.pool
    held = pool.alloc_py(pool.n_big, big=True)          # before the loop runs: no race
    assert len(held) == pool.n_big and pool.n_big_free == 0
    with running(s, before_check=lambda: pool.free_py(held)):
        c1, c2 = peers(s, sockdir, "master")
        jumbo, small = frame(9000, seq=1), frame(1500, seq=2)
        assert c1.send([jumbo, small]) == 2
        assert consumed(c1)
        assert recv_n(c2, 1) == [small]
        r1 = st(s, "m1")
        assert r1["rx_no_big_buffer"] == 1 and r1["rx_drops"] == 1 and r1["rx_packets"] == 1
        assert pool.big_alloc_failures >= 1
    # the loop stopped, the big buffers went back: run again, jumbo frames pass
    with running(s):
        jumbo = frame(9000, seq=3)
        assert c1.send([jumbo]) == 1 and recv_n(c2, 1) == [jumbo]
        assert st(s, "m1")["rx_no_big_buffer"] == 1
        c1.close()
        c2.close()
    s.close()


# ---------------------------------------------------------------- fastpath <-> DPDK testpmd

# testpmd 22.11 with net_memif: its defaults carry jumbo chains (net_memif chains 2 KiB mbufs
# on receive without rx scatter being asked for, and writes a chained mbuf out as a chain);
# --max-pkt-len=9600 is refused ("device max frame size (1518)"), and no MTU is enforced
# on the memif data path. Its copy-mode transmit can overrun the ring by one slot with
# multi-descriptor frames when the ring is nearly full (the first descriptor of a frame is
# not counted against the free slots): fastpath then sees an index jump and disconnects.
# So frames go one at a time here (an echo never fills a ring) and there is no txonly
# jumbo test.
TESTPMD_SETUPS = {
    "defaults": ("", (), {}),
    # 9728-byte mbufs: 9216 bytes in one mbuf, 60 000 in a chain of them; testpmd's
    # descriptor buffers (bsize, when it is the slave) or fastpath's (memif-buffer-size,
    # when fastpath is) of 1024 bytes: longer chains on the wire
    "big-mbufs-1k-buffers": (",bsize=1024", ("--mbuf-size=9728",), {"options:memif-buffer-size": "1024"}),
}


@pytest.mark.root
@pytest.mark.parametrize("setup", list(TESTPMD_SETUPS))
@pytest.mark.parametrize("fastpath_role", ["master", "slave"])
def test_dpdk_testpmd_echoes_jumbo_frames(sockdir, fastpath_role, setup):
    """c1 -> m1 -> m0 -> testpmd (net_memif, io forwarding) -> m0 -> m1 -> c1: frames of
    64 .. 60 000 bytes leave fastpath as descriptor chains, testpmd receives each into a
    chain of mbufs and sends it back as a chain, fastpath gathers it into one buffer."""
    vdev_args, tp_args, m0_opts = TESTPMD_SETUPS[setup]
    s = Switch(n_buffers=4096)
    s.add_br("br0")
    tp_role = "client" if fastpath_role == "master" else "server"
    s.add_port("br0", "m0", type="memif", **{"options:memif-socket": f"{sockdir}/tp.sock",
                                             "options:memif-role": fastpath_role,
                                             "mtu_request": JUMBO_MTU,
                                             **(m0_opts if fastpath_role == "slave" else {})})
    s.port("m0").io[2].reconnect = 0.2
    s.add_port("br0", "m1", type="memif", **{"options:memif-socket": f"{sockdir}/c.sock",
                                             "options:memif-id": "1", "mtu_request": JUMBO_MTU})
    with running(s):
        tp = TestPmd(sockdir, f"{sockdir}/tp.sock", tp_role, vdev_args, tp_args)
        c = client(s, "m1")
        try:
            assert wait_for(lambda: st(s, "m0")["memif_connected"] == 1, 30), tp.output()[-2000:]
            tp.cmd("set fwd io")
            tp.cmd("start")
            time.sleep(0.3)
            frames = [frame(n, src=MAC3, seq=k) for k in range(3) for n in SIZES]
            for f in frames:
                assert c.send([f], timeout=2) == 1
                assert recv_n(c, 1) == [f], (len(f), st(s, "m0"))
            rx, tx = tp.forward_stats()
            assert wait_for(lambda: st(s, "m1")["tx_packets"] == len(frames))
            row = st(s, "m0")
            assert rx == tx == row["tx_packets"] == row["rx_packets"] == len(frames)
            assert row["rx_bytes"] == row["tx_bytes"] == 3 * sum(SIZES)
            assert row["rx_drops"] == row["tx_drops"] == 0
        finally:
            c.close()
            tp.quit()
    s.close()
