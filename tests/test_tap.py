"""TAP interface nodes against the host stack (needs root).

The TAP lives in its own namespace with address 192.0.2.1/24; the graph plays a
neighbour, 192.0.2.2 at FAKE_MAC: TapInput -> PgOutput("rx-sink") shows what the host
sends, PgInput("gen") -> TapOutput writes what the neighbour "sends".
"""
import select
import socket
import struct
import time

import pytest
from scapy.all import ARP, Ether, ICMP, IP, Raw, UDP

from fastpath.graph.graph import Graph
from fastpath.pg.pg import PgInput, PgOutput
from fastpath.tap.tap import TapDevice, TapInput, TapOutput
from netns import Netns, can_run, unique_name

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not can_run(), reason="needs root and /dev/net/tun")]

HOST_IP, PEER_IP = "192.0.2.1", "192.0.2.2"
FAKE_MAC = "02:00:00:00:00:99"


def pump(g, done, timeout=3.0):
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            return False
        if not g.run_once():
            time.sleep(0.0005)
    return True


def settle(g, seconds=0.05):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not g.run_once():
            time.sleep(0.0005)


class TapRig:
    def __init__(self, ns, n_buffers=4096):
        self.ns = ns
        self.name = unique_name("fpt")
        with ns.entered():
            self.tap = TapDevice(self.name)
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # the host's side
        ns.run(f"ip addr add {HOST_IP}/24 dev {self.name}")
        self.mac = self.tap.mac
        g = self.g = Graph(n_buffers=n_buffers)
        self.sink = g.add(PgOutput("rx-sink", keep=True))
        self.rx = g.add(TapInput("tap-rx", self.tap, 3, next_node="rx-sink"))
        self.gen = g.add(PgInput("gen", 3, next_node="tap-tx"))
        self.tx = g.add(TapOutput("tap-tx", self.tap, 3))

    def static_neighbour(self):
        self.ns.run(f"ip neigh replace {PEER_IP} lladdr {FAKE_MAC} dev {self.name} nud permanent")

    def write(self, frames):
        self.gen.load(frames)
        self.g.run_until_idle()

    def host_send(self, payload, dst=PEER_IP, port=9):
        self.udp.sendto(payload, (dst, port))

    def close(self):
        self.udp.close()
        self.tap.close()


@pytest.fixture
def tap():
    with Netns("fptap") as ns:
        r = TapRig(ns)
        try:
            yield r
            r.g.run_until_idle()
            r.g.pool.check_accounting(expected_in_flight=0)
        finally:
            r.close()


def test_device_created_up_and_removed(tap):
    out = tap.ns.run(f"ip -o link show {tap.name}").stdout
    assert "UP" in out and "mtu 1500" in out
    assert tap.tap.mtu == 1500 and tap.tap.ifindex > 0
    assert tap.rx.fileno() == tap.tap.fileno() >= 0
    tap.tap.close()
    tap.tap.close()
    assert tap.ns.run(f"ip link show {tap.name}", check=False).returncode != 0
    # the nodes outlive the device without touching a closed fd
    assert tap.g.run_once() == 0
    tap.write([bytes(Ether(dst=tap.mac, src=FAKE_MAC) / IP() / UDP())])
    assert tap.tx.stats()["tx_no_device"] == 1


def test_host_frames_received(tap):
    # a datagram to an unresolved neighbour: the host sends an ARP request first
    tap.host_send(b"hello")
    assert pump(tap.g, lambda: tap.rx.rx_packets >= 1)
    settle(tap.g)
    frames = tap.sink.take()
    expected = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=tap.mac)
                     / ARP(op=1, hwsrc=tap.mac, psrc=HOST_IP,
                           hwdst="00:00:00:00:00:00", pdst=PEER_IP))
    assert frames[0] == expected
    st = tap.rx.stats()
    assert st["rx_packets"] == len(frames) and st["rx_bytes"] == sum(map(len, frames))
    assert st["rx_drops"] == 0


def test_arp_reply_written_resolves_neighbour(tap):
    tap.host_send(b"queued until resolved", port=4242)
    assert pump(tap.g, lambda: tap.rx.rx_packets >= 1)
    req = Ether(tap.sink.take()[0])
    assert req[ARP].op == 1 and req[ARP].pdst == PEER_IP
    # the graph answers for 192.0.2.2
    reply = bytes(Ether(dst=tap.mac, src=FAKE_MAC)
                  / ARP(op=2, hwsrc=FAKE_MAC, psrc=PEER_IP, hwdst=tap.mac, pdst=HOST_IP))
    tap.write([reply])
    assert tap.tx.stats()["tx_packets"] == 1
    # ... the host learns it and sends the datagram it held back
    assert pump(tap.g, lambda: tap.rx.rx_packets >= 2)
    f = Ether(tap.sink.take()[0])
    assert f.dst == FAKE_MAC and f.src == tap.mac
    assert f[IP].src == HOST_IP and f[IP].dst == PEER_IP
    assert f[UDP].dport == 4242 and bytes(f[UDP].payload) == b"queued until resolved"
    assert FAKE_MAC in tap.ns.run(f"ip neigh show {PEER_IP} dev {tap.name}").stdout


def test_icmp_echo_round_trip(tap):
    tap.static_neighbour()
    payload = bytes(range(56))
    request = bytes(Ether(dst=tap.mac, src=FAKE_MAC) / IP(src=PEER_IP, dst=HOST_IP, id=77)
                    / ICMP(type=8, id=0x1234, seq=9) / Raw(payload))
    tap.write([request])
    assert pump(tap.g, lambda: tap.rx.rx_packets >= 1)
    raw = tap.sink.take()[0]
    reply = Ether(raw)
    assert reply.dst == FAKE_MAC and reply.src == tap.mac and reply.type == 0x0800
    assert reply[IP].src == HOST_IP and reply[IP].dst == PEER_IP
    assert reply[ICMP].type == 0 and reply[ICMP].id == 0x1234 and reply[ICMP].seq == 9
    assert bytes(reply[ICMP].payload) == payload
    # byte-check: scapy rebuilding the frame with fresh checksums gives the same bytes
    reply[IP].chksum = None
    reply[ICMP].chksum = None
    assert bytes(reply) == raw
    assert len(raw) == 14 + 20 + 8 + 56


def test_burst_both_ways(tap):
    tap.static_neighbour()
    n = 300
    requests = [bytes(Ether(dst=tap.mac, src=FAKE_MAC) / IP(src=PEER_IP, dst=HOST_IP)
                      / ICMP(id=1, seq=i) / Raw(b"x" * 32)) for i in range(n)]
    for k in range(0, n, 100):       # paced: the host answers from its softirq, one queue
        tap.write(requests[k:k + 100])
        settle(tap.g, 0.01)
    assert pump(tap.g, lambda: tap.rx.rx_packets >= n)
    settle(tap.g)
    replies = tap.sink.take()
    assert all(f[23] == 1 and f[34] == 0 for f in replies)     # ICMP echo replies
    seqs = [struct.unpack_from("!H", f, 40)[0] for f in replies]
    assert seqs == list(range(n))
    assert tap.tx.stats()["tx_packets"] == n and tap.rx.stats()["rx_packets"] == n


def pseudo_sum(raw):
    """The IPv4/UDP pseudo-header sum of an untagged frame (what a partial checksum holds)."""
    ph = bytes(raw[26:34]) + struct.pack("!xBH", 17, len(raw) - 34)
    s = sum(struct.unpack("!6H", ph))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def test_jumbo_frame_lands_in_a_big_buffer(tap):
    """A frame longer than a small buffer is read whole into a big one (rx_big); the
    pool's accounting stays exact."""
    tap.tap.set_mtu(9000)
    tap.static_neighbour()
    jumbo = bytes(range(256)) * 32                            # 8192 bytes of UDP payload
    tap.host_send(jumbo)                                      # one 8234-byte frame
    tap.host_send(b"z" * (2048 - 42))                         # exactly a small buffer
    tap.host_send(b"small")
    assert pump(tap.g, lambda: tap.rx.rx_packets >= 3)
    settle(tap.g)
    frames = tap.sink.take()
    assert [len(f) for f in frames] == [42 + len(jumbo), 2048, 42 + 5]
    assert Ether(frames[0])[UDP].load == jumbo
    st = tap.rx.stats()
    assert st["rx_big"] == 1 and st["rx_drops"] == 0 and st["rx_packets"] == 3
    tap.g.pool.check_accounting(expected_in_flight=0)


def test_host_checksums_arrive_partial_and_leave_finished(tap):
    """TUNSETOFFLOAD lets the host hand over UDP with its checksum left partial
    (VIRTIO_NET_HDR_F_NEEDS_CSUM): the buffer says so, and the frame written back with
    that state reaches the host stack as a valid datagram."""
    tap.static_neighbour()
    tap.host_send(b"partial")
    assert pump(tap.g, lambda: tap.rx.rx_packets >= 1)
    raw = tap.sink.take()[0]
    assert Ether(raw)[UDP].load == b"partial"
    # the checksum field holds the pseudo-header sum only: nobody finished it on the way
    assert struct.unpack_from("!H", raw, 40)[0] == pseudo_sum(raw)
    assert tap.rx.stats()["rx_bad_offload"] == 0
    pool = tap.g.pool
    # back to the host: a partial UDP checksum the kernel must finish before delivery
    with tap.ns.entered():
        srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind((HOST_IP, 7777))
    srv.settimeout(2)
    try:
        raw = bytearray(bytes(Ether(dst=tap.mac, src=FAKE_MAC) / IP(src=PEER_IP, dst=HOST_IP)
                              / UDP(sport=5, dport=7777, chksum=0) / b"finished"))
        # the pseudo-header sum in the checksum field, as a sender with CHECKSUM_PARTIAL leaves it
        raw[40:42] = struct.pack("!H", pseudo_sum(raw))
        (b,) = pool.alloc_py(1)
        pool.set_frame(int(b), bytes(raw))
        pool.meta("ol_flags")[b] = 1                          # OL_CSUM_PARTIAL
        pool.meta("l4_start")[b] = 20
        pool.meta("csum_offset")[b] = 6
        tap.g.inject("tap-tx", [b])
        tap.g.run_until_idle()
        assert srv.recvfrom(100)[0] == b"finished"           # a bad checksum is never delivered
    finally:
        srv.close()
    assert tap.tx.stats()["tx_packets"] == 1


def test_bad_frames_counted(tap):
    tap.write([b"\x01" * 5, b""])              # shorter than an Ethernet header
    st = tap.tx.stats()
    assert st["tx_runt"] == 2 and st["tx_drops"] == 2 and st["tx_packets"] == 0


def test_link_down_and_up(tap):
    tap.static_neighbour()
    echo = bytes(Ether(dst=tap.mac, src=FAKE_MAC) / IP(src=PEER_IP, dst=HOST_IP) / ICMP(seq=1))
    tap.tap.set_up(False)
    tap.write([echo, echo])
    st = tap.tx.stats()
    assert st["tx_link_down"] == 2 and st["tx_drops"] == 2 and st["tx_packets"] == 0
    settle(tap.g, 0.02)
    assert tap.rx.rx_packets == 0 and tap.rx.rx_read_errors == 0
    tap.tap.set_up(True)
    tap.static_neighbour()                    # going down flushed the neighbour table
    tap.write([echo])
    assert pump(tap.g, lambda: tap.rx.rx_packets >= 1)
    assert Ether(tap.sink.take()[0])[ICMP].type == 0


def test_pool_exhaustion_counted(tap):
    r = tap
    r.g.pool.check_accounting(expected_in_flight=0)
    held = r.g.pool.alloc_py(r.g.pool.n_free)   # nothing left for the input
    try:
        r.static_neighbour()
        for i in range(3):
            r.host_send(b"lost")
        assert pump(r.g, lambda: r.rx.rx_no_buffer >= 3)
        assert r.rx.stats()["rx_no_buffer"] == 3 and r.rx.rx_packets == 0
    finally:
        r.g.pool.free_py(held)
    r.host_send(b"kept")
    assert pump(r.g, lambda: r.rx.rx_packets == 1)
    assert Ether(r.sink.take()[0])[UDP].load == b"kept"


def test_fileno_wakes_poll(tap):
    tap.static_neighbour()
    p = select.poll()
    p.register(tap.rx.fileno(), select.POLLIN)
    assert p.poll(0) == []
    tap.host_send(b"wake")
    assert p.poll(1000)
    tap.g.run_once()
    assert tap.rx.rx_packets == 1
    assert p.poll(0) == []


def test_name_pattern_and_errors():
    with Netns("fptap") as ns:
        with ns.entered():
            t = TapDevice("fpt%d", mtu=1400)
        try:
            assert t.name.startswith("fpt") and "%" not in t.name
            assert t.mtu == 1400
            with pytest.raises(OSError):          # the name is taken
                with ns.entered():
                    TapDevice(t.name)
        finally:
            t.close()
    with pytest.raises(ValueError):
        TapDevice("x" * 16)
