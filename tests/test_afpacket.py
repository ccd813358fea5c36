"""AF_PACKET interface nodes against a real veth pair (needs root).

Topology per test: namespace `dp` holds veth end `a`, opened by fastpath; namespace
`peer` holds end `b`, where a plain Python packet socket sends frames and sniffs what
fastpath transmits. The graph is AfPacketInput -> PgOutput("rx-sink") for received
frames and PgInput("gen") -> AfPacketOutput for transmitted ones.
"""
import functools
import select
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from scapy.all import ARP, Dot1AD, Dot1Q, Ether, ICMP, IP, Raw, UDP

from fastpath.afpacket.afpacket import AfPacketInput, AfPacketOutput, AfPacketSocket
from fastpath.graph.graph import Graph
from fastpath.pg.pg import PgInput, PgOutput
from netns import Netns, can_run, offloads_off, unique_name, veth_pair

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not can_run(), reason="needs root, veth and network namespaces")]

SOL_PACKET = 263
PACKET_AUXDATA = 8
SO_RCVBUFFORCE = 33
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
DP_MAC, PEER_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
BCAST = "ff:ff:ff:ff:ff:ff"


# ---------------------------------------------------------------- helpers

def peer_socket(ns, ifname):
    """A plain packet socket on ifname inside ns: sends frames as given, and receives
    with the VLAN tag put back from PACKET_AUXDATA (independently of the code under test)."""
    with ns.entered():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        s.bind((ifname, 0))
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)   # hold whole bursts
    s.setblocking(False)
    return s


def sniff(s, want=None, timeout=1.0):
    """Frames arriving at packet socket s (not the ones it sent), tags restored."""
    frames = []
    end = time.monotonic() + timeout
    while want is None or len(frames) < want:
        left = end - time.monotonic()
        if left <= 0 or not select.select([s], [], [], left)[0]:
            break
        data, anc, _, addr = s.recvmsg(65536, socket.CMSG_SPACE(32))
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        for level, kind, cdata in anc:
            if level == SOL_PACKET and kind == PACKET_AUXDATA:
                status, _, _, _, _, tci, tpid = struct.unpack("IIIHHHH", cdata[:20])
                if status & TP_STATUS_VLAN_VALID:
                    if not status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = 0x8100
                    data = data[:12] + struct.pack("!HH", tpid, tci) + data[12:]
        frames.append(data)
    return frames


def pump(g, done, timeout=3.0):
    """Run the graph until done() holds (blocks reach us within ~1 ms) or timeout."""
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            return False
        if not g.run_once():
            time.sleep(0.0002)
    return True


def settle(g, seconds=0.05):
    """Run the graph for a while (to show that nothing more arrives)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not g.run_once():
            time.sleep(0.0005)


@functools.lru_cache(maxsize=None)
def _udp_template(size, dst, src):
    f = (Ether(dst=dst, src=src) / IP(src="192.0.2.2", dst="192.0.2.1")
         / UDP(sport=1000, dport=9, chksum=0))
    return bytes(f / Raw(bytes(max(0, size - len(f)))))


def udp(i, size=64, dst=DP_MAC, src=PEER_MAC):
    """A UDP frame of `size` bytes numbered i in its source port (UDP checksum 0, so
    the frame stays valid; scapy takes milliseconds per frame, patching does not)."""
    t = _udp_template(size, dst, src)
    return t[:34] + struct.pack("!H", 1000 + i) + t[36:]


class Rig:
    """One veth pair, the dataplane side opened by fastpath, a graph around it."""

    def __init__(self, dp, peer, a, b):
        self.dp, self.peer, self.a, self.b = dp, peer, a, b
        self.sockets = []
        self.peer_sock = peer_socket(peer, b)
        self.g = None

    def open(self, **kw):
        with self.dp.entered():
            s = AfPacketSocket(self.a, **kw)
        self.sockets.append(s)
        return s

    def build(self, sock=None, n_buffers=4096, keep=True, **kw):
        self.sock = sock or self.open(**kw)
        g = self.g = Graph(n_buffers=n_buffers)
        self.sink = g.add(PgOutput("rx-sink", keep=keep))
        self.rx = g.add(AfPacketInput("a-rx", self.sock, 1, next_node="rx-sink"))
        self.gen = g.add(PgInput("gen", 1, next_node="a-tx"))
        self.tx = g.add(AfPacketOutput("a-tx", self.sock, 1))
        return self

    def send(self, frames):
        for f in frames:
            self.peer_sock.send(f)

    def transmit(self, frames):
        """Frames into the graph's PgInput -> AfPacketOutput."""
        self.gen.load(frames)
        self.g.run_until_idle()

    def close(self):
        for s in self.sockets:
            s.close()
        self.peer_sock.close()


@pytest.fixture
def rig():
    with Netns("fpdp") as dp, Netns("fppr") as peer:
        a, b = unique_name("fpa"), unique_name("fpb")
        with veth_pair(a, b, dp, peer):
            offloads_off(dp, a, "tso", "gso", "gro")
            offloads_off(peer, b, "tso", "gso", "gro")
            r = Rig(dp, peer, a, b)
            try:
                yield r
                if r.g is not None:
                    r.g.run_until_idle()
                    r.g.pool.check_accounting(expected_in_flight=0)
            finally:
                r.close()


# ---------------------------------------------------------------- receive

def test_rx_frames_byte_exact(rig):
    rig.build()
    frames = [
        udp(0, 60), udp(1, 64), udp(2, 333), udp(3, 1514),
        bytes(Ether(dst=BCAST, src=PEER_MAC) / ARP(psrc="192.0.2.2", pdst="192.0.2.1")),
        udp(4, 64, dst="01:00:5e:00:00:fb"),             # multicast
        udp(5, 64, dst="02:aa:bb:cc:dd:ee"),             # unicast to someone else
        bytes(Ether(dst=DP_MAC, src=PEER_MAC, type=0x88b5) / Raw(b"short")),   # 19 bytes: veth
                                                                             # does not pad
    ]
    rig.send(frames)
    assert pump(rig.g, lambda: rig.rx.rx_packets >= len(frames))
    settle(rig.g)
    assert rig.sink.take() == frames
    st = rig.rx.stats()
    assert st["rx_packets"] == len(frames)
    assert st["rx_bytes"] == sum(map(len, frames))
    assert st["rx_drops"] == 0 and st["rx_vlan_restored"] == 0


def test_rx_buffer_metadata(rig):
    rig.build()
    frames = [udp(i, 100 + i) for i in range(3)]
    rig.send(frames)
    time.sleep(0.02)
    pool = rig.g.pool
    v = rig.rx.poll(256)                   # the input node alone, without the dispatcher
    assert len(v) == 3
    assert [pool.get_frame(b) for b in v] == frames
    assert list(pool.meta("rx_if")[v]) == [1, 1, 1]
    assert list(pool.meta("next")[v]) == [1, 1, 1]     # arc 1: next_node
    assert list(pool.meta("length")[v]) == [100, 101, 102]
    pool.free_py(v)


@pytest.mark.parametrize("rxvlan", ["on", "off"])
def test_rx_vlan_tag_restored(rig, rxvlan):
    # The kernel takes the outer tag out of the frame even with rx-vlan-offload off
    # (skb_vlan_untag in the receive path), so both settings exercise re-insertion.
    if rxvlan == "off":
        offloads_off(rig.dp, rig.a, "rxvlan", "rx-vlan-stag-hw-parse")
    rig.build()
    base = IP(src="192.0.2.2", dst="192.0.2.1") / UDP(sport=5, dport=9) / Raw(b"p" * 20)
    frames = [
        bytes(Ether(dst=DP_MAC, src=PEER_MAC) / Dot1Q(vlan=10, prio=5) / base),
        bytes(Ether(dst=DP_MAC, src=PEER_MAC) / Dot1Q(vlan=0, prio=3) / base),     # priority tag
        bytes(Ether(dst=DP_MAC, src=PEER_MAC) / Dot1Q(vlan=4094, dei=1) / base),    # DEI set
        bytes(Ether(dst=DP_MAC, src=PEER_MAC) / Dot1AD(vlan=100) / base),           # 802.1ad
        bytes(Ether(dst=DP_MAC, src=PEER_MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=20) / base),  # QinQ
        # 0x9100 is not a TPID Linux strips: arrives as it is
        bytes(Ether(dst=DP_MAC, src=PEER_MAC, type=0x9100) / Dot1Q(vlan=7) / base),
    ]
    rig.send(frames)
    assert pump(rig.g, lambda: rig.rx.rx_packets >= len(frames))
    got = rig.sink.take()
    assert got == frames
    assert rig.rx.rx_vlan_restored == 5
    assert rig.rx.stats()["rx_bytes"] == sum(map(len, frames))


def test_rx_burst_counted_exactly(rig):
    rig.build(keep=True)
    count = 10_000
    sender = rig.peer.popen([sys.executable, "-c", BURST_SENDER, rig.b, str(count)],
                            stderr=subprocess.PIPE)
    try:
        pump(rig.g, lambda: rig.rx.rx_packets >= count and sender.poll() is not None, timeout=30)
    finally:
        if sender.poll() is None:
            sender.kill()
        sender.wait()
    assert sender.returncode == 0, sender.stderr.read()
    settle(rig.g)
    st = rig.rx.stats()
    assert st["rx_packets"] == count, st
    assert st["rx_drops"] == 0 and st["rx_ring_full"] == 0
    frames = rig.sink.take()
    assert [struct.unpack_from("!I", f, 14)[0] for f in frames] == list(range(count))
    assert all(len(f) == 64 for f in frames)


# A paced sender (runs in the peer namespace): 64-byte frames numbered 0..count-1.
BURST_SENDER = r"""
import socket, struct, sys, time
ifname, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
s.bind((ifname, 0))
hdr = bytes.fromhex("020000000001" "020000000002" "88b5")
for i in range(count):
    s.send(hdr + struct.pack("!I", i) + bytes(46))
    if i % 500 == 499:
        time.sleep(0.002)
"""


def test_rx_jumbo_frames_arrive_whole_and_in_order(rig):
    """Frames larger than a ring slot (~1.9 KiB) come whole through the socket queue into
    big buffers, tagged ones with their tag put back, in order with the small ones."""
    rig.peer.run(f"ip link set {rig.b} mtu 9000")
    rig.dp.run(f"ip link set {rig.a} mtu 9000")
    rig.build()
    tagged = Ether(dst=DP_MAC, src=PEER_MAC) / Dot1Q(vlan=3)
    sent = [udp(1, 3000), udp(0, 1500), udp(2, 2049), bytes(tagged / Raw(bytes(2049 - 18))),
            bytes(tagged / Raw(bytes(9018 - 18))), udp(3, 9014), udp(4)]
    rig.send(sent)
    assert pump(rig.g, lambda: rig.rx.rx_packets + rig.rx.rx_too_big >= len(sent))
    settle(rig.g)
    assert rig.sink.take() == sent
    st = rig.rx.stats()
    assert st["rx_big"] == 5 and st["rx_drops"] == 0 and st["rx_packets"] == len(sent), st
    rig.g.pool.check_accounting(0)


def test_rx_pool_exhaustion_counted(rig):
    rig.build(n_buffers=8)
    frames = [udp(i) for i in range(20)]
    rig.send(frames)
    # poll the input alone, without the dispatcher, so the 8 buffers stay taken
    held = []
    end = time.monotonic() + 3
    while rig.rx.rx_packets + rig.rx.rx_no_buffer < 20 and time.monotonic() < end:
        held += list(rig.rx.poll(256))
    pool = rig.g.pool
    assert rig.rx.rx_packets == 8 and rig.rx.rx_no_buffer == 12
    assert [pool.get_frame(b) for b in held] == frames[:8]
    assert rig.rx.stats()["rx_drops"] == 12
    pool.free_py(held)
    rig.send([udp(99)])                    # and it recovers
    assert pump(rig.g, lambda: rig.rx.rx_packets == 9)
    assert rig.sink.take() == [udp(99)]


def test_rx_partial_block_kept_across_polls(rig):
    # More ready frames than one vector: the rest stays for the next poll, in order.
    rig.build()
    frames = [udp(i, 100) for i in range(600)]
    rig.send(frames)
    end = time.monotonic() + 3
    while rig.sock.kernel_stats()["packets"] < 600 and time.monotonic() < end:
        time.sleep(0.001)
    time.sleep(0.05)                       # the last block's 1 ms timer
    vectors = []
    while sum(vectors) < 600 and time.monotonic() < end:
        n = rig.g.run_once()
        if n:
            vectors.append(n)
    assert sum(vectors) == 600 and vectors[0] == 256
    assert rig.sink.take() == frames


def test_fileno_wakes_poll(rig):
    rig.build()
    p = select.poll()
    p.register(rig.rx.fileno(), select.POLLIN)
    assert p.poll(0) == []
    rig.send([udp(1)])
    t0 = time.monotonic()
    ready = p.poll(1000)
    assert ready and ready[0][1] & select.POLLIN
    assert time.monotonic() - t0 < 0.5     # the 1 ms block timer, not a full block
    rig.g.run_once()
    assert rig.rx.rx_packets == 1
    assert p.poll(20) == []                 # block given back: nothing more to say


def test_graph_run_dispatches_and_idles(rig):
    rig.build()
    t = threading.Thread(target=rig.g.run, daemon=True)
    t.start()
    try:
        frames = [udp(i) for i in range(50)]
        time.sleep(0.05)                    # the dispatcher is asleep on fileno() now
        rig.send(frames)
        end = time.monotonic() + 3
        while rig.sink.tx_packets < 50 and time.monotonic() < end:
            time.sleep(0.005)
    finally:
        rig.g.stop()
        t.join(5)
    assert not t.is_alive()
    assert rig.sink.take() == frames


# ---------------------------------------------------------------- transmit

def test_tx_frames_byte_exact(rig):
    rig.build()
    frames = [udp(0, 60, dst=PEER_MAC, src=DP_MAC), udp(1, 64, dst=PEER_MAC, src=DP_MAC),
              udp(2, 1514, dst=PEER_MAC, src=DP_MAC),
              bytes(Ether(dst=BCAST, src=DP_MAC) / ARP(psrc="192.0.2.1", pdst="192.0.2.2")),
              bytes(Ether(dst=PEER_MAC, src=DP_MAC) / Dot1Q(vlan=10, prio=2) / IP() / ICMP()),
              # 1518 bytes: an 802.1Q tag may exceed the MTU
              bytes(Ether(dst=PEER_MAC, src=DP_MAC) / Dot1Q(vlan=10) / Raw(bytes(1500))),
              bytes(Ether(dst=PEER_MAC, src=DP_MAC) / Dot1AD(vlan=30) / Dot1Q(vlan=40) / IP() / UDP())]
    rig.transmit(frames)
    assert sniff(rig.peer_sock, want=len(frames)) == frames
    st = rig.tx.stats()
    assert st["tx_packets"] == len(frames) and st["tx_bytes"] == sum(map(len, frames))
    assert st["tx_drops"] == 0
    assert st["tx_kicks"] == 1              # one sendto() for the whole vector


def test_own_frames_not_received(rig):
    rig.build()
    frames = [udp(i, 80, dst=PEER_MAC, src=DP_MAC) for i in range(100)]
    rig.transmit(frames)
    assert len(sniff(rig.peer_sock, want=100)) == 100
    settle(rig.g, 0.05)
    assert rig.rx.rx_packets == 0 and rig.rx.rx_outgoing_skipped == 0
    assert rig.sink.take() == []


def test_own_frames_not_received_in_fanout_group(rig):
    # a fanout member's PACKET_IGNORE_OUTGOING does not apply (the group's hook replaces
    # the socket's); the group flag or the sll_pkttype check must keep them out
    rig.build(fanout_group=4242)
    rig.transmit([udp(i, dst=PEER_MAC, src=DP_MAC) for i in range(20)])
    assert len(sniff(rig.peer_sock, want=20)) == 20
    settle(rig.g, 0.05)
    assert rig.rx.rx_packets == 0
    assert rig.sink.take() == []


def test_tx_too_big_counted(rig):
    rig.build()
    to_peer = dict(dst=PEER_MAC, src=DP_MAC)
    ok = [udp(0, 1514, **to_peer),
          bytes(Ether(**to_peer) / Dot1Q(vlan=5) / Raw(bytes(1500)))]        # 1518, 802.1Q
    big = [udp(1, 1515, **to_peer),
           bytes(Ether(**to_peer) / Dot1Q(vlan=5) / Raw(bytes(1501))),       # 1519, 802.1Q
           bytes(Ether(**to_peer) / Dot1AD(vlan=5) / Raw(bytes(1500))),      # 1518: only 802.1Q
           udp(2, 2048, **to_peer)]                                          # may exceed the MTU
    rig.transmit([big[0], ok[0], big[1], big[2], ok[1], big[3]])
    assert sniff(rig.peer_sock, want=2) == ok
    assert sniff(rig.peer_sock, timeout=0.1) == []
    st = rig.tx.stats()
    assert st["tx_too_big"] == 4 and st["tx_drops"] == 4 and st["tx_packets"] == 2
    # a bigger MTU, once the socket is told
    rig.dp.run(f"ip link set {rig.a} mtu 9000")
    rig.peer.run(f"ip link set {rig.b} mtu 9000")
    assert rig.sock.refresh_mtu() == 9000
    rig.transmit([big[3]])
    assert sniff(rig.peer_sock, want=1) == [big[3]]


def test_tx_ring_smaller_than_vector(rig):
    rig.build(tx_frames=4)
    assert rig.sock.tx_frames == 4
    frames = [udp(i, 70, dst=PEER_MAC, src=DP_MAC) for i in range(300)]
    rig.transmit(frames)
    st = rig.tx.stats()
    assert sniff(rig.peer_sock, want=300, timeout=2) == frames, st
    assert st["tx_packets"] == 300 and st["tx_ring_full"] == 0
    assert st["tx_kicks"] == 300 // 4      # a kick each time the ring filled up


# ---------------------------------------------------------------- link state, lifecycle

def test_interface_down_and_up(rig):
    rig.build()
    p = select.poll()
    p.register(rig.rx.fileno(), select.POLLIN)
    rig.dp.run(f"ip link set {rig.a} down")
    # transmit while down: counted, nothing raised, nothing left in the ring
    rig.transmit([udp(i, dst=PEER_MAC, src=DP_MAC) for i in range(5)])
    st = rig.tx.stats()
    assert st["tx_link_down"] == 5 and st["tx_packets"] == 0 and st["tx_drops"] == 5
    # the socket error makes poll() report POLLERR; empty polls clear it so an idle
    # dispatcher can sleep again
    assert p.poll(0) and p.poll(0)[0][1] & select.POLLERR
    for _ in range(200):
        rig.g.run_once()
    assert p.poll(0) == []
    assert rig.rx.rx_link_down == 1
    with pytest.raises(OSError):            # the peer's carrier is down: ENOBUFS there
        rig.send([udp(1)])
    settle(rig.g, 0.05)
    assert rig.rx.rx_packets == 0

    rig.dp.run(f"ip link set {rig.a} up")
    fresh = [udp(i, dst=PEER_MAC, src=DP_MAC) for i in range(100, 103)]
    rig.transmit(fresh)
    assert sniff(rig.peer_sock, want=3) == fresh   # and none of the 5 stale ones
    assert sniff(rig.peer_sock, timeout=0.1) == []
    assert rig.tx.stats()["tx_packets"] == 3
    # receive resumes (the kernel re-hooks the socket on NETDEV_UP; the peer's carrier
    # follows within a moment)
    end = time.monotonic() + 3
    while rig.rx.rx_packets == 0 and time.monotonic() < end:
        try:
            rig.send([udp(7)])
        except OSError:                     # ENOBUFS until the peer sees carrier
            pass
        settle(rig.g, 0.01)
    settle(rig.g)
    assert rig.rx.rx_packets > 0
    assert set(rig.sink.take()) == {udp(7)}


def test_close_is_idempotent_and_nodes_survive(rig):
    rig.build()
    rig.send([udp(1)])
    assert pump(rig.g, lambda: rig.rx.rx_packets == 1)
    rig.sock.close()
    rig.sock.close()
    assert rig.sock.closed and rig.rx.fileno() == -1
    rig.send([udp(2)])
    settle(rig.g, 0.02)
    assert rig.rx.rx_packets == 1
    rig.transmit([udp(3, dst=PEER_MAC, src=DP_MAC)])
    assert rig.tx.stats()["tx_no_socket"] == 1
    with pytest.raises(OSError):
        with rig.dp.entered():
            AfPacketSocket("no-such-if0")


def test_fanout_spreads_flows(rig):
    s1 = rig.open(fanout_group=77)
    s2 = rig.open(fanout_group=77)
    rig.build(sock=s1)
    rx2 = rig.g.add(AfPacketInput("a-rx2", s2, 1, next_node="rx-sink"))
    frames = [udp(i) for i in range(400)]     # 400 flows (source ports)
    for k in range(0, 400, 50):            # paced: the test's poll loop is the only reader
        rig.send(frames[k:k + 50])
        rig.g.run_once()
    assert pump(rig.g, lambda: rig.rx.rx_packets + rx2.rx_packets >= 400)
    settle(rig.g)
    assert rig.rx.rx_packets + rx2.rx_packets == 400
    assert rig.rx.rx_packets > 0 and rx2.rx_packets > 0
    assert sorted(rig.sink.take()) == sorted(frames)


def test_bad_arguments():
    with pytest.raises(ValueError):
        AfPacketSocket("lo", rx_frame_size=1000)
    with pytest.raises(ValueError):
        AfPacketSocket("lo", tx_frame_size=3000)
    with pytest.raises(ValueError):
        AfPacketSocket("lo", fanout_group=1 << 16)
