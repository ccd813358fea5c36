"""TCP MSS clamping on tunnel ports (options:tcp_mss_clamp), and the tunnel port's MTU.

First the nodes alone, in a tiny graph: scapy-built SYNs in, whole frames compared with
what scapy builds with the clamped MSS (so the TCP checksum is checked too); the
conformance table is data below. Then the switch in memory (two sites wired by a Python
cable): both directions clamp, the option's forms and errors, and a GSO super-frame cut
to fit the tunnel. Last, for real: two gateways with ESP, hosts at MTU 1500 with default
offloads -- TCP crosses with the clamp, and stalls on too_big drops without it."""
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from fastpath.control import CommandError, Control
from fastpath.graph.graph import Graph
from fastpath.nodes.mss import MssClampInput, MssClampOutput
from fastpath.pg.pg import PgOutput
from fastpath.switch import ConfigError
from l2util import checksums_right
from vpnutil import A_IP, B_IP, exchange, make_site, taken

TUN = 5                         # the tunnel port's sw_if_index in the tiny graph
MSS4, MSS6 = 1360, 1340
LINUX_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]


def syn(mss=1460, v6=False, tags=(), flags="S", options=None, payload=b""):
    """A TCP segment as a host sends it; tags: ('q'|'ad', vid) outermost first."""
    pkt = Ether(src="02:00:00:00:0a:01", dst="02:00:00:00:0b:01")
    for kind, vid in tags:
        pkt = pkt / (Dot1AD(vlan=vid) if kind == "ad" else Dot1Q(vlan=vid))
    pkt = pkt / (IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.0.0.1", dst="10.0.0.2", id=1))
    if options is None:
        options = [(k, mss if k == "MSS" else v) for k, v in LINUX_SYN_OPTIONS]
    return pkt / TCP(sport=40000, dport=5201, seq=1000, flags=flags, options=options) / payload


def raw_options(opts, flags="S", dataofs=None, v6=False):
    """A segment whose option bytes are given raw (malformed ones scapy would not build)."""
    l3 = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.0.0.1", dst="10.0.0.2")
    return bytes(Ether() / l3 / TCP(flags=flags, dataofs=dataofs or 5 + len(opts) // 4) / Raw(opts))


class Tiny:
    """node -> a collector standing in for its next node."""

    def __init__(self, cls=MssClampOutput):
        self.g = Graph(n_buffers=256)
        self.node = cls()
        self.g.add(self.node)
        self.sink = PgOutput(self.node.next_names[1])
        self.g.add(self.sink)
        self.node.set_clamp(TUN, MSS4, MSS6)

    def run(self, frame, port=TUN, partial=None):
        """partial: (l3 offset, l4 offset) to mark the frame OL_CSUM_PARTIAL."""
        pool = self.g.pool
        (b,) = pool.alloc_py(1)
        pool.set_frame(int(b), bytes(frame))
        pool.meta("tx_if")[b] = port
        pool.meta("rx_if")[b] = port
        pool.meta("ol_flags")[b] = 1 if partial else 0
        if partial:
            pool.meta("l4_start")[b] = partial[1] - partial[0]
            pool.meta("csum_offset")[b] = 16
        self.g.inject(self.node.name, [b])
        self.g.run_until_idle()
        (out,) = self.sink.take()
        pool.check_accounting(0)
        return bytes(out)

    def counts(self):
        return {r: c for c, n, r, _ in self.g.errors() if n == self.node.name}


# (case, frame in, frame expected out): the conformance table of the clamp
CLAMPED = [
    ("ipv4 syn", syn(), syn(mss=MSS4)),
    ("ipv4 syn-ack", syn(flags="SA"), syn(mss=MSS4, flags="SA")),
    ("ipv6 syn", syn(1440, v6=True), syn(MSS6, v6=True)),
    ("ipv6 syn-ack", syn(1440, v6=True, flags="SA"), syn(MSS6, v6=True, flags="SA")),
    ("802.1Q", syn(tags=[("q", 10)]), syn(MSS4, tags=[("q", 10)])),
    ("802.1ad + 802.1Q", syn(v6=True, tags=[("ad", 100), ("q", 10)]),
     syn(MSS6, v6=True, tags=[("ad", 100), ("q", 10)])),
    # after a NOP the value starts at an odd offset: it spans two checksum words
    ("odd offset", syn(options=[("NOP", None), ("MSS", 9000), ("NOP", None), ("NOP", None), ("NOP", None)]),
     syn(options=[("NOP", None), ("MSS", MSS4), ("NOP", None), ("NOP", None), ("NOP", None)])),
    ("mss last", syn(options=[("SAckOK", b""), ("NOP", None), ("NOP", None), ("MSS", 65535)]),
     syn(options=[("SAckOK", b""), ("NOP", None), ("NOP", None), ("MSS", MSS4)])),
]
UNTOUCHED = [
    ("mss already smaller", syn(1200)),
    ("mss equal", syn(MSS4)),
    ("ipv6 mss equal to its clamp", syn(MSS6, v6=True)),
    ("ack with an mss option", syn(flags="A")),
    ("no mss option: none is added", syn(options=[("SAckOK", b""), ("NOP", None), ("WScale", 7)])),
    ("no options", syn(options=[])),
    ("mss after end of options", syn(options=[("EOL", None), ("NOP", None), ("NOP", None), ("NOP", None),
                                              ("MSS", 1460)])),
    ("udp", Ether() / IP() / UDP(sport=1, dport=2) / bytes(40)),
    ("arp-sized runt", Ether(type=0x0800) / bytes(10)),
    ("later ipv4 fragment", Ether() / IP(proto=6, frag=100) / bytes(40)),
    ("ipv6 extension header first",
     Ether() / IPv6(nh=0) / bytes(8) / bytes(TCP(flags="S", options=[("MSS", 1460)]))),
    ("tcp header cut short", bytes(syn())[:14 + 20 + 12]),
]
BAD_OPTIONS = [
    ("option length 0", raw_options(b"\x02\x00\x05\xb4")),
    ("option length 1", raw_options(b"\x08\x01\x00\x00")),
    ("option past the header", raw_options(b"\x01\x01\x08\x0a")),
    ("kind with no length byte", raw_options(b"\x01\x01\x01\x03")),
    ("mss option of length 3", raw_options(b"\x02\x03\x05\xb4")),
    ("mss option of length 6", raw_options(b"\x02\x06\x05\xb4\x00\x00\x01\x01")),
    ("data offset past the segment", raw_options(b"\x02\x04\x05\xb4", dataofs=15)),
    ("data offset below 5", raw_options(b"\x02\x04\x05\xb4", dataofs=4)),
    ("ipv6, options cut by the frame", raw_options(b"\x02\x04\x05\xb4\x04\x02\x01\x01", v6=True)[:-3]),
]


@pytest.mark.parametrize("cls", [MssClampOutput, MssClampInput], ids=["output", "input"])
@pytest.mark.parametrize("case,frame,want", CLAMPED, ids=[c[0] for c in CLAMPED])
def test_mss_larger_than_the_clamp_is_lowered_checksum_right(cls, case, frame, want):
    t = Tiny(cls)
    out = t.run(frame)
    assert Ether(out)[TCP].options == Ether(bytes(want))[TCP].options
    assert out == bytes(want)                   # scapy's checksum for the clamped segment
    assert t.counts() == {"clamped": 1}


@pytest.mark.parametrize("case,frame", UNTOUCHED, ids=[c[0] for c in UNTOUCHED])
def test_frames_that_need_no_clamp_pass_unchanged(case, frame):
    t = Tiny()
    assert t.run(frame) == bytes(frame)
    assert t.counts() == {}


@pytest.mark.parametrize("case,frame", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_malformed_options_are_counted_and_left_alone(case, frame):
    t = Tiny()
    assert t.run(frame) == bytes(frame)
    assert t.counts() == {"bad_tcp_options": 1}


def test_port_without_a_clamp_and_each_direction_by_its_own_interface():
    t = Tiny()
    t.node.set_clamp(TUN + 1, 0, 0)
    assert t.run(syn(), port=TUN + 1) == bytes(syn())
    t.node.set_clamp(TUN + 1, 1000, 0)               # IPv4 only
    assert t.run(syn(1440, v6=True), port=TUN + 1) == bytes(syn(1440, v6=True))
    assert t.run(syn(), port=TUN + 1) == bytes(syn(1000))
    assert t.counts() == {"clamped": 1}


def pseudo_partial(frame, l3, l4, v6):
    """frame as a sender with checksum offload leaves it: the pseudo-header sum (not
    complemented) in the TCP checksum field."""
    raw = bytearray(bytes(frame))
    n = len(raw) - l4
    ph = (bytes(raw[l3 + 8:l3 + 40]) + struct.pack("!IxxxB", n, 6)) if v6 else \
        (bytes(raw[l3 + 12:l3 + 20]) + struct.pack("!xBH", 6, n))
    raw[l4 + 16:l4 + 18] = struct.pack("!H", fold(sum(struct.unpack(f"!{len(ph) // 2}H", ph))))
    return bytes(raw)


def fold(s):
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def finish(raw, l4):
    """What a NIC or interface-output's csum_finish does: the ones' complement of the sum
    from the TCP header on, the field holding the pseudo-header sum."""
    seg = bytes(raw[l4:]) + b"\0" * (len(raw[l4:]) & 1)
    c = (~fold(sum(struct.unpack(f"!{len(seg) // 2}H", seg)))) & 0xffff
    return bytes(raw[:l4 + 16]) + struct.pack("!H", c) + bytes(raw[l4 + 18:])


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
def test_partial_checksum_is_right_once_finished(v6):
    """A SYN from a veth with default offloads is CHECKSUM_PARTIAL: the field holds the
    pseudo-header sum, which does not cover the option, so the node leaves the field
    alone; finishing the checksum after the clamp gives scapy's checksum."""
    tags = [("q", 10)]
    l3 = 18
    l4 = l3 + (40 if v6 else 20)
    mss, clamp = (1440, MSS6) if v6 else (1460, MSS4)
    sent = pseudo_partial(syn(mss, v6=v6, tags=tags), l3, l4, v6)
    t = Tiny()
    out = t.run(sent, partial=(l3, l4))
    assert out[l4 + 16:l4 + 18] == sent[l4 + 16:l4 + 18]           # field untouched
    assert finish(out, l4) == bytes(syn(clamp, v6=v6, tags=tags))
    assert t.counts() == {"clamped": 1}


# ---- the switch, in memory: two sites and a cable ----

CLAMP_AUTO = {"options:tcp_mss_clamp": "auto"}
H10_A, H10_B = "02:00:00:00:0a:01", "02:00:00:00:0b:01"


def host_syn(mss, flags="S", src=H10_A, dst=H10_B, v6=False):
    l3 = IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.0.0.1", dst="10.0.0.2", id=1)
    if src != H10_A:
        l3 = IPv6(src="fd00::2", dst="fd00::1") if v6 else IP(src="10.0.0.2", dst="10.0.0.1", id=1)
    return bytes(Ether(src=src, dst=dst) / l3 / TCP(sport=40000, dport=5201, flags=flags,
                                                   options=[("MSS", mss), ("NOP", None), ("WScale", 7)]))


def test_both_directions_through_the_tunnel_are_clamped():
    """Only site A clamps: B's host SYN-ACK is clamped as it comes out of A's tunnel, A's
    host SYN as it goes in -- so both hosts learn an MSS that fits."""
    a, b = make_site(A_IP, B_IP, tunnel_options=CLAMP_AUTO), make_site(B_IP, A_IP)
    exchange(a, b)
    # cleartext VXLAN at uplink MTU 1500: 1500 - 36 (IPv4, UDP, VXLAN) - 14 - 4 (a tag)
    assert a.tunnel_mtu(a.port("vpn0")) == 1446
    auto4, auto6 = 1446 - 40, 1446 - 60
    row = next(r for r in a.interface_stats() if r["name"] == "vpn0")
    assert row["tcp_mss_clamp"] == f"{auto4}/{auto6}" and row["mtu"] == 1446
    assert f"tcp_mss_clamp: ipv4 {auto4}, ipv6 {auto6}" in a.show()
    wire = []
    a.port("h10").io[0].add([host_syn(1460)])
    exchange(a, b, tap=lambda f: wire.append(f) or f)
    assert taken(b)["h10"] == [host_syn(auto4)]
    inner = [Ether(f)[VXLAN].payload for f in wire if VXLAN in Ether(f)]
    assert [p[TCP].options[0] for p in inner] == [("MSS", auto4)]     # clamped before encap
    b.port("h10").io[0].add([host_syn(1460, "SA", H10_B, H10_A), host_syn(8000, "SA", H10_B, H10_A, v6=True)])
    exchange(a, b)
    assert taken(a)["h10"] == [host_syn(auto4, "SA", H10_B, H10_A), host_syn(auto6, "SA", H10_B, H10_A, v6=True)]
    counts = {(n, r): c for c, n, r, _ in a.errors() if n.startswith("tcp-mss")}
    assert counts == {("tcp-mss-clamp-output", "clamped"): 1, ("tcp-mss-clamp-input", "clamped"): 2}
    assert not [r for r in b.errors() if r[1].startswith("tcp-mss")]      # B has no clamp nodes in use
    for sw in (a, b):
        sw.graph.pool.check_accounting(0)


def test_clamp_option_forms_and_errors():
    a = make_site(A_IP, B_IP, tunnel_options={"options:tcp_mss_clamp": "1300"})
    t = a.port("vpn0")
    assert t.mss_clamp == (1300, 1300)
    a.set_port("vpn0", **{"options:tcp_mss_clamp": "auto"})
    assert t.mss_clamp == (1406, 1386)
    a.set_port("vpn0", **{"options:tcp_mss_clamp": "off"})
    assert t.mss_clamp == (0, 0) and "tcp_mss_clamp" not in t.options
    row = next(r for r in a.interface_stats() if r["name"] == "vpn0")
    assert row["tcp_mss_clamp"] == "off"
    # off again: SYNs cross as they are, through no clamp node
    b = make_site(B_IP, A_IP)
    exchange(a, b)
    a.port("h10").io[0].add([host_syn(1460)])
    exchange(a, b)
    assert taken(b)["h10"] == [host_syn(1460)]
    for bad in ("abc", "87", "65536", "-1", ""):
        with pytest.raises(ConfigError, match="tcp_mss_clamp"):
            a.set_port("vpn0", **{"options:tcp_mss_clamp": bad or "x"})
        with pytest.raises(ConfigError, match="tcp_mss_clamp"):
            make_site(A_IP, B_IP, tunnel_options={"options:tcp_mss_clamp": bad or "x"})
    with pytest.raises(ConfigError, match="vxlan tunnel ports"):
        a.add_port("br0", "h30", type="pg", **{"options:tcp_mss_clamp": "auto"})
    with pytest.raises(ConfigError, match="vxlan tunnel ports"):
        a.set_port("h10", **{"options:tcp_mss_clamp": "auto"})


def test_clamp_through_the_command_language():
    c = Control(make_site(A_IP, B_IP))
    # keys of their own: an outbound sequence counter belongs to its key material (see sa.pyx)
    c.execute(["add-port", "br0", "vpn1", "type=vxlan", "options:remote_ip=192.0.2.3",
               f"options:local_ip={A_IP}", "options:key=7", "options:tcp_mss_clamp=auto",
               "options:spi_out=0x1001", "options:spi_in=0x2001",
               "options:key_out=0x" + "5a" * 20, "options:key_in=0x" + "5b" * 20])
    # ESP at its largest (37) comes off too: 1500 - 36 - 37 - 18 = 1409
    assert "tcp_mss_clamp: ipv4 1369, ipv6 1349 (in effect)" in c.execute(["show"])
    c.execute(["set", "interface", "vpn1", "options:tcp_mss_clamp=1200"])
    rows = c.execute(["show", "interfaces"], fmt="json")
    assert next(r for r in rows if r["name"] == "vpn1")["tcp_mss_clamp"] == "1200/1200"
    with pytest.raises(CommandError, match="tcp_mss_clamp.*not auto or an MSS"):
        c.execute(["set", "interface", "vpn1", "options:tcp_mss_clamp=big"])
    with pytest.raises(CommandError, match="tcp_mss_clamp: 40 out of range"):
        c.execute(["add-port", "br0", "vpn2", "type=vxlan", "options:remote_ip=192.0.2.4",
                   f"options:local_ip={A_IP}", "options:key=8", "options:tcp_mss_clamp=40"])
    assert "options:tcp_mss_clamp" in str(c.config())
    c.close()


def test_esp_in_udp_and_uplink_mtu_set_the_auto_clamp():
    manual = {"options:spi_out": "0x1001", "options:spi_in": "0x2001",
              "options:key_out": "0x" + "5a" * 20, "options:key_in": "0x" + "5b" * 20}
    a = make_site(A_IP, B_IP, tunnel_options={**CLAMP_AUTO, **manual, "options:encap": "udp"})
    assert a.port("vpn0").mss_clamp == (1500 - 36 - 45 - 18 - 40, 1500 - 36 - 45 - 18 - 60)
    b = make_site(B_IP, A_IP, tunnel_options=CLAMP_AUTO)
    b.del_port("vpn0")
    b.del_ip("up")
    b.add_ip("up", f"{B_IP}/24", type="pg", **{"options:mac": "02:00:00:00:00:02", "options:mtu": "9000"})
    b.add_port("br0", "vpn0", type="vxlan", **{"options:remote_ip": A_IP, "options:local_ip": B_IP,
                                                 "options:key": 5000, **CLAMP_AUTO})
    assert b.port("vpn0").mss_clamp == (9000 - 36 - 18 - 40, 9000 - 36 - 18 - 60)


def gso_superframe(payload_len):
    """A TCP super-frame as a veth hands it over (pseudo-header sum, OL_GSO_TCP4); the
    access port's VLAN tag is pushed on it, and kept inside the tunnel."""
    pkt = Ether(src=H10_A, dst=H10_B) / IP(src="10.0.0.1", dst="10.0.0.2", id=7) / \
        TCP(sport=40000, dport=5201, seq=1000, flags="PA", options=[("NOP", None), ("NOP", None),
                                                                     ("Timestamp", (5, 6))]) / \
        bytes(i & 0xff for i in range(payload_len))
    return pseudo_partial(pkt, 14, 34, False)


@pytest.mark.parametrize("esp", [False, True], ids=["vxlan", "vxlan+esp"])
def test_gso_superframe_to_the_tunnel_is_cut_to_fit_the_uplink(esp):
    """Segments the host asked for (1448 bytes of payload) do not fit in VXLAN(+ESP) over
    MTU 1500: interface-output lowers gso_size to the tunnel port's MTU, so gso cuts the
    super-frame into segments that vxlan-encap (and esp-encrypt) send whole."""
    manual = {"options:spi_out": "0x1001", "options:spi_in": "0x2001",
              "options:key_out": "0x" + "5a" * 20, "options:key_in": "0x" + "5b" * 20}
    a = make_site(A_IP, B_IP, tunnel_options=manual if esp else None)
    b = make_site(B_IP, A_IP, tunnel_options={**manual, "options:spi_out": "0x2001", "options:spi_in": "0x1001",
                                              "options:key_out": manual["options:key_in"],
                                              "options:key_in": manual["options:key_out"]} if esp else None)
    exchange(a, b)
    payload = 20000
    raw = gso_superframe(payload)
    pool = a.graph.pool
    (buf,) = pool.alloc_py(1, big=True)
    pool.set_frame(int(buf), raw)
    pool.meta("rx_if")[buf] = a.port("h10").sw_if_index
    pool.meta("ol_flags")[buf] = 1 | 4
    pool.meta("l4_start")[buf] = 20
    pool.meta("csum_offset")[buf] = 16
    pool.meta("gso_size")[buf] = 1448
    a.graph.inject("ethernet-input", [buf])
    wire = []
    exchange(a, b, tap=lambda f: wire.append(f) or f)
    errors = {(n, r): c for c, n, r, _ in a.errors() if n != "arp-input"}
    assert errors == {}, errors                   # no too_big
    outer = [Ether(f) for f in wire if IP in Ether(f) and Ether(f)[IP].src == A_IP]
    assert len(outer) >= payload // 1400 and all(p[IP].len <= 1500 for p in outer)
    assert max(p[IP].len for p in outer) > 1450                     # and not needlessly small
    got = [Ether(f) for f in taken(b)["h10"]]
    data = b"".join(bytes(p[TCP].payload) for p in got)
    assert data == bytes(i & 0xff for i in range(payload))
    for p in got:                                                    # valid segments
        fixed = p.copy()
        del fixed[TCP].chksum
        assert Ether(bytes(fixed))[TCP].chksum == p[TCP].chksum
    for sw in (a, b):
        sw.graph.pool.check_accounting(0)


# ---- for real: two gateways with ESP, hosts at MTU 1500 with default offloads ----

TRANSFER = 4 << 20
# the sender writes one full segment at a time, as a message-oriented application does:
# the first goes out alone as a 1514-byte frame, not as a super-frame that fastpath
# could cut to fit the tunnel -- only a clamped MSS makes it fit
WRITE = 1448


def site_errors(site):
    return {(r["node"], r["reason"]): r["count"] for r in site.do("show", "errors", fmt="json")}


@pytest.mark.root
def test_tcp_across_the_vpn_at_mtu_1500_with_the_clamp(tmp_path):
    """Both ways, data checked; nothing is too big for the uplink: each host's SYN (and
    SYN-ACK) was clamped as it entered the tunnel, so every segment fits VXLAN + ESP."""
    from fastpath.demo import tcp_transfer
    from test_vpn_sites import two_sites, wait_up
    with two_sites(tmp_path, tunnel_options=("options:tcp_mss_clamp=auto",)) as t:
        wait_up(t.a, t.b)
        ns = t.ns
        got, secs = tcp_transfer(ns["ha10"].name, ns["hb10"].name, "10.10.0.2", TRANSFER, timeout=30,
                                 write_size=WRITE)
        assert got == TRANSFER
        print(f"A -> B: {TRANSFER >> 20} MiB in {secs:.2f} s ({TRANSFER * 8 / secs / 1e6:.0f} Mbit/s)")
        got, secs = tcp_transfer(ns["hb10"].name, ns["ha10"].name, "10.10.0.1", TRANSFER, port=5202,
                                 timeout=30, write_size=WRITE)
        assert got == TRANSFER
        print(f"B -> A: {TRANSFER >> 20} MiB in {secs:.2f} s ({TRANSFER * 8 / secs / 1e6:.0f} Mbit/s)")
        for site in (t.a, t.b):
            errors = site_errors(site)
            assert errors.get(("vxlan-encap", "too_big"), 0) == 0, errors
            # its host's SYN, and the SYN-ACK it answered the other host with
            assert errors.get(("tcp-mss-clamp-output", "clamped"), 0) >= 2, errors
            row = next(r for r in site.do("show", "interfaces", fmt="json") if r["name"] == "vpn0")
            assert row["tcp_mss_clamp"] == "1369/1349" and row["mtu"] == 1409
    assert t.rc == [0, 0]


@pytest.mark.root
def test_tcp_across_the_vpn_at_mtu_1500_stalls_without_the_clamp(tmp_path):
    """The same hosts and transfer, no clamp: full-sized segments do not fit VXLAN + ESP,
    are dropped (outer DF; counted as too_big) and retransmitted at the same size, so the
    transfer never completes -- the clamp is what makes the test above pass."""
    from fastpath.demo import tcp_transfer
    from test_vpn_sites import two_sites, wait_up
    with two_sites(tmp_path) as t:
        wait_up(t.a, t.b)
        ns = t.ns
        try:
            got = tcp_transfer(ns["ha10"].name, ns["hb10"].name, "10.10.0.2", TRANSFER, timeout=8,
                               write_size=WRITE)[0]
        except OSError:                  # the sender's timeout: the stall
            got = None
        too_big = site_errors(t.a).get(("vxlan-encap", "too_big"), 0)
        print(f"without the clamp: {got} of {TRANSFER} bytes arrived, vxlan-encap too_big {too_big}")
        assert got != TRANSFER
        assert too_big > 0
    assert t.rc == [0, 0]


def test_mutated_syns_never_crash_and_only_the_mss_and_checksum_change():
    """Seeded byte mutations and cuts of SYNs (every option layout above): the node never
    reads or writes past the frame (the pool's accounting holds), and a frame it changes
    differs only in the MSS value and the TCP checksum, which stays as right as it was."""
    import random
    rnd = random.Random(14)
    t = Tiny()
    bases = [bytes(f) for _, f, _ in CLAMPED] + [bytes(f) for _, f in BAD_OPTIONS]
    changed = 0
    for _ in range(3000):
        raw = bytearray(rnd.choice(bases))
        for _ in range(rnd.randint(1, 4)):
            k = rnd.randrange(12, len(raw))
            raw[k] = rnd.randrange(256)
        if rnd.random() < 0.3:
            raw = raw[:rnd.randrange(12, len(raw) + 1)]
        raw = bytes(raw)
        out = t.run(raw)
        assert len(out) == len(raw)
        if out == raw:
            continue
        changed += 1
        diff = [i for i in range(len(raw)) if out[i] != raw[i]]
        p = Ether(out)
        l4 = len(out) - len(bytes(p[TCP]))
        assert all(l4 + 16 <= i < l4 + 18 or l4 + 20 <= i < l4 + 60 for i in diff)
        # the checksum stays as right (or as wrong) as it was: the ones' complement sum
        # of the segment with its pseudo-header did not change
        assert checksums_right(Ether(raw), TCP) == checksums_right(p, TCP)
    assert changed > 50

