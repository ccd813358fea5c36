"""VXLAN tunnel ports over an L3 uplink, in memory: ARP resolution of the next hop, the
wire format (checked with scapy), learning through the tunnel, per-VLAN separation,
split horizon, and the underlay's drops."""
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from l2util import frame
from vpnutil import A_IP, B_IP, exchange, make_site, taken

A, B = "00:00:00:00:0a:01", "00:00:00:00:0b:01"


def test_arp_resolves_and_frames_cross_with_their_vlan():
    a, b = make_site(A_IP, B_IP), make_site(B_IP, A_IP)
    wire = []
    exchange(a, b, tap=lambda f: wire.append(f) or f)
    assert any(ARP in Ether(f) for f in wire)
    assert {r[1] for r in a.show_arp()} == {B_IP}
    a.port("h10").io[0].add([bytes(frame(src=A))])
    exchange(a, b, tap=lambda f: wire.append(f) or f)
    got = taken(b)
    assert got["h10"] == [bytes(frame(src=A))] and got["h20"] == []
    # on the wire: VXLAN with the VNI, the 802.1Q tag kept inside as on a trunk
    v = [Ether(f) for f in wire if UDP in Ether(f)]
    assert len(v) == 1
    pkt = v[0]
    assert pkt[IP].src == A_IP and pkt[IP].dst == B_IP and pkt[IP].flags == "DF" and pkt[IP].ttl == 64
    assert pkt[UDP].dport == 4789 and pkt[VXLAN].vni == 5000
    inner = pkt[VXLAN].payload
    assert inner[Dot1Q].vlan == 10 and inner[Ether].src == A
    # the answer is unicast back: B learned A on the tunnel port
    b.port("h10").io[0].add([bytes(frame(src=B, dst=A))])
    exchange(a, b)
    assert taken(a)["h10"] == [bytes(frame(src=B, dst=A))]
    assert {(r["port"], r["mac"]) for r in b.fdb_rows("br0")} >= {("vpn0", A)}
    for sw in (a, b):
        sw.graph.pool.check_accounting(0)


def test_no_flooding_between_tunnels():
    a = make_site(A_IP, B_IP)
    a.add_port("br0", "vpn1", type="vxlan", **{"options:remote_ip": "192.0.2.3", "options:local_ip": A_IP,
                                                 "options:key": 5000})
    # a frame arriving from tunnel vpn0 must not be flooded into vpn1
    inner = bytes(frame([(0x8100, 10, 0)], src=B))
    outer = Ether(dst=a.uplinks["up"].mac, src="02:00:00:00:00:02") / IP(src=B_IP, dst=A_IP) / \
        UDP(sport=50000, dport=4789) / VXLAN(vni=5000) / inner
    a.uplinks["up"].io[0].add([bytes(outer)])
    a.graph.run_until_idle()
    got = taken(a)
    assert got["h10"] == [bytes(frame(src=B))] and got["h20"] == []
    sent = [Ether(f) for f in a.uplinks["up"].io[1].take()]
    assert not [p for p in sent if UDP in p and p[UDP].dport == 4789]


def test_underlay_drops_are_counted():
    a = make_site(A_IP, B_IP)
    up = a.uplinks["up"]
    mac = up.mac
    bad = [
        bytes(Ether(dst=mac) / IP(src=B_IP, dst="192.0.2.99") / UDP(dport=4789) / VXLAN(vni=5000) / bytes(60)),
        bytes(Ether(dst=mac) / IP(src=B_IP, dst=A_IP) / UDP(dport=4789) / VXLAN(vni=7) / bytes(60)),
        bytes(Ether(dst=mac) / IP(src="192.0.2.77", dst=A_IP) / UDP(dport=4789) / VXLAN(vni=5000) / bytes(60)),
        bytes(Ether(dst=mac) / IP(src=B_IP, dst=A_IP, flags="MF") / UDP(dport=4789) / bytes(60)),
        bytes(Ether(dst=mac) / IP(src=B_IP, dst=A_IP) / UDP(dport=9999) / bytes(10)),
        bytes(Ether(dst=mac) / IP(src=B_IP, dst=A_IP, chksum=1) / UDP(dport=4789) / bytes(10)),
        bytes(Ether(dst=mac) / IP(src=B_IP, dst=A_IP) / UDP(dport=4789) / VXLAN(vni=5000) / bytes(4)),
        bytes(Ether(dst=mac) / IP(src=B_IP, dst=A_IP))[:30],
    ]
    up.io[0].add(bad)
    a.graph.run_until_idle()
    errors = {(n, r): c for c, n, r, _ in a.graph.errors()}
    assert errors == {("ip4-input", "not_for_us"): 1, ("vxlan-input", "no_tunnel"): 2,
                      ("ip4-input", "fragment"): 1, ("ip4-udp-input", "port_unreachable"): 1,
                      ("ip4-input", "bad_checksum"): 1, ("vxlan-input", "runt"): 1,
                      ("ip4-input", "bad_header"): 1}
    a.graph.pool.check_accounting(0)


def test_too_big_for_the_uplink_is_a_counted_drop():
    a, b = make_site(A_IP, B_IP), make_site(B_IP, A_IP)
    exchange(a, b)
    a.port("h10").io[0].add([bytes(frame(src=A, payload=bytes(1480)))])
    exchange(a, b)
    assert taken(b)["h10"] == []
    errors = {(n, r): c for c, n, r, _ in a.graph.errors() if n != "arp-input"}
    assert errors == {("vxlan-encap", "too_big"): 1}


def _vxlan_to(a, inner, udp_len, trailer=b""):
    """An outer packet from B to A's tunnel, VNI 5000, with the given UDP length and
    `trailer` bytes inside the IPv4 packet after the UDP datagram (IPv4 total length =
    20 + 8 + 8 + len(inner) + len(trailer))."""
    mac = a.uplinks["up"].mac
    return bytes(Ether(dst=mac, src="02:00:00:00:00:02") / IP(src=B_IP, dst=A_IP) /
                 UDP(sport=50000, dport=4789, len=udp_len, chksum=0) / VXLAN(vni=5000) /
                 (bytes(inner) + trailer))


def test_inner_frame_length_comes_from_the_udp_length():
    """Regression: vxlan-input took the inner frame's length from the IPv4 total length.
    Bytes the IPv4 packet carries past the UDP datagram are not part of the frame."""
    a = make_site(A_IP, B_IP)
    inner = bytes(frame([(0x8100, 10, 0)], src=B))
    pkt = _vxlan_to(a, inner, 8 + 8 + len(inner), trailer=b"\xee" * 7)
    assert Ether(pkt)[IP].len == 20 + 8 + 8 + len(inner) + 7       # IPv4 longer than UDP
    a.uplinks["up"].io[0].add([pkt])
    a.graph.run_until_idle()
    got = taken(a)
    assert got["h10"] == [bytes(frame(src=B))]                       # no trailing bytes
    assert got["h20"] == []
    assert a.graph.errors() == []
    a.graph.pool.check_accounting(0)


def test_bad_udp_length_is_a_counted_drop():
    a = make_site(A_IP, B_IP)
    inner = bytes(frame([(0x8100, 10, 0)], src=B))
    # a UDP length too short for UDP + VXLAN headers (ip4-udp-input lets 8..15 through)
    a.uplinks["up"].io[0].add([_vxlan_to(a, inner, 12)])
    a.graph.run_until_idle()
    # a UDP length past what the IPv4 packet carries (ip4-udp-input drops that as bad_udp
    # on the way in; vxlan-input checks it again for whatever else queues packets to it)
    pool = a.graph.pool
    b = pool.alloc_py(1)
    pool.set_frame(int(b[0]), _vxlan_to(a, inner, 8 + 8 + len(inner) + 1))
    pool.meta("rx_if")[b] = a.uplinks["up"].sw_if_index
    a.graph.inject("vxlan-input", b)
    a.graph.run_until_idle()
    assert taken(a)["h10"] == []
    errors = {(n, r): c for c, n, r, _ in a.graph.errors()}
    assert errors == {("vxlan-input", "bad_udp_length"): 2}
    pool.check_accounting(0)
