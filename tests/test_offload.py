"""Real traffic through AF_PACKET bridge ports with the kernel's default offloads: veths
hand fastpath partial checksums and TCP super-frames (GSO), which must reach the other
host as valid TCP, whole (the virtio_net_hdr passed on) or finished in software (to a port
that cannot take them). Jumbo frames at MTU 9000 cross with DF set; a frame over the egress
MTU is a counted drop. Nothing here turns an offload off.

The software side (checksums, segmentation) is also checked frame by frame with scapy on
in-memory ports."""
import os
import struct
import sys
import threading

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether

from fastpath.demo import tcp_transfer
from fastpath.switch import Switch
from l2util import Clock

sys.path.insert(0, os.path.dirname(__file__))
from netns import Netns, unique_name, veth_pair  # noqa: E402


class Hosts:
    """Hosts a and b, each on a veth into one fastpath bridge (AF_PACKET ports), every
    interface as Linux leaves it; a: 10.1.0.1 / fd00::1, b: 10.1.0.2 / fd00::2."""

    def __init__(self, mtu=None, b_mtu=None, internal=False):
        self.mtu, self.b_mtu, self.internal = mtu, b_mtu, internal

    def __enter__(self):
        self.stack = []
        self.dp, self.a, self.b = Netns("fpod"), Netns("fpoa"), Netns("fpob")
        for ns in (self.dp, self.a, self.b):
            ns.__enter__()
            self.stack.append(ns)
        for ns in (self.a, self.b):
            ns.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=0")
            ns.run("sysctl -qw net.ipv6.conf.default.disable_ipv6=0")
        self.ports = []
        for i, (ns, addr) in enumerate(((self.a, 1), (self.b, 2))):
            dpn, hn = unique_name("fpo"), unique_name("fpo")
            cm = veth_pair(dpn, hn, self.dp, ns)
            cm.__enter__()
            self.stack.append(cm)
            mtu = self.b_mtu if (addr == 2 and self.b_mtu) else self.mtu
            if mtu:
                self.dp.run(f"ip link set {dpn} mtu {mtu}")
                ns.run(f"ip link set {hn} mtu {mtu}")
            ns.run(f"ip link set {hn} address 02:00:00:00:01:0{addr}")
            setattr(self, "a_ifname" if addr == 1 else "b_ifname", hn)
            ns.run(f"ip addr add 10.1.0.{addr}/24 dev {hn}")
            ns.run(f"ip -6 addr add fd00::{addr}/64 dev {hn} nodad")
            self.ports.append(dpn)
        self.sw = Switch(n_buffers=8192)
        self.sw.add_br("br0")
        with self.dp.entered():
            for p in self.ports:
                self.sw.add_port("br0", p, type="afpacket")
            if self.internal:
                # an internal port (a TAP) whose host side is the datapath namespace's
                # stack: 10.1.0.3 / fd00::3
                self.tap = unique_name("fpt")
                self.sw.add_port("br0", self.tap, type="internal", mtu_request=self.mtu)
        if self.internal:
            self.dp.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=0")
            self.dp.run(f"ip addr add 10.1.0.3/24 dev {self.tap}")
            self.dp.run(f"ip -6 addr add fd00::3/64 dev {self.tap} nodad")
        self.thread = threading.Thread(target=self.sw.graph.run, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stop the dataplane thread (the pool can be checked once nothing runs)."""
        while self.thread.is_alive():
            self.sw.graph.stop()
            self.thread.join(0.2)

    def __exit__(self, *exc):
        self.stop()
        self.sw.close()
        for cm in reversed(self.stack):
            cm.__exit__(None, None, None)

    def errors(self):
        return {(n, r): c for c, n, r, _ in self.sw.errors()}

    def port_stats(self, name):
        return self.sw.port(name).io[0].stats() | self.sw.port(name).io[1].stats()


@pytest.mark.root
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_through_veths_with_default_offloads_both_ways(family):
    size = 24 << 20
    with Hosts() as h:
        for src, dst, addr in ((h.a, h.b, "10.1.0.2" if family == "ipv4" else "fd00::2"),
                               (h.b, h.a, "10.1.0.1" if family == "ipv4" else "fd00::1")):
            moved, secs = tcp_transfer(src.name, dst.name, addr, size)
            assert moved == size
            print(f"{family} {size >> 20} MiB in {secs:.2f} s: {size * 8 / secs / 1e9:.2f} Gbit/s")
        rx = h.sw.port(h.ports[0]).io[0].stats()
        # the veth did hand over super-frames and partial checksums: they came through whole
        assert rx["rx_big"] > 0, rx
        assert rx["rx_bad_offload"] == 0 and rx["rx_drops"] == 0, rx
        h.stop()
        h.sw.graph.pool.check_accounting()


@pytest.mark.root
def test_jumbo_ping_with_df_at_mtu_9000_and_mtu_exceeded_is_counted():
    with Hosts(mtu=9000) as h:
        r = h.a.run("ping -c 3 -i 0.2 -W 2 -M do -s 8972 10.1.0.2", check=False)
        assert "3 received" in r.stdout, r.stdout
        assert h.sw.port(h.ports[0]).io[0].stats()["rx_big"] >= 3
    # b's side of the bridge at 1500: a 9000-byte frame from a is dropped and counted
    with Hosts(mtu=9000, b_mtu=1500) as h:
        h.a.run("ping -c 1 -W 2 10.1.0.2")           # ARP resolved with small frames
        r = h.a.run("ping -c 2 -i 0.2 -W 1 -M do -s 8972 10.1.0.2", check=False)
        assert " 0 received" in r.stdout
        assert h.errors().get(("interface-output", "mtu_exceeded"), 0) >= 2, h.errors()
        # small frames still pass
        r = h.a.run("ping -c 2 -i 0.2 -W 2 10.1.0.2", check=False)
        assert "2 received" in r.stdout, r.stdout


@pytest.mark.root
def test_tcp_between_ports_of_different_mtus():
    """a at MTU 9000, b at 1500: the MSS b announces keeps a's super-frames' segments
    within b's MTU, so they pass to b's veth whole (the kernel cuts them)."""
    size = 8 << 20
    with Hosts(mtu=9000, b_mtu=1500) as h:
        assert tcp_transfer(h.a.name, h.b.name, "10.1.0.2", size)[0] == size
        assert tcp_transfer(h.b.name, h.a.name, "10.1.0.1", size)[0] == size
        assert h.errors().get(("interface-output", "mtu_exceeded"), 0) == 0


@pytest.mark.root
@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_tcp_between_an_internal_port_and_a_veth_with_default_offloads(family):
    """The TAP (IFF_VNET_HDR, TUNSETOFFLOAD) and the veth both take partial checksums and
    super-frames: TCP crosses both ways whole, and nothing is cut in software."""
    size = 24 << 20
    with Hosts(internal=True) as h:
        tap_ip, a_ip = ("10.1.0.3", "10.1.0.1") if family == "ipv4" else ("fd00::3", "fd00::1")
        for src, dst, addr in ((h.a, h.dp, tap_ip), (h.dp, h.a, a_ip)):
            moved, secs = tcp_transfer(src.name, dst.name, addr, size)
            assert moved == size
            print(f"{family} {size >> 20} MiB in {secs:.2f} s: {size * 8 / secs / 1e9:.2f} Gbit/s")
        tap = h.port_stats(h.tap)
        assert tap["rx_big"] > 0, tap                     # super-frames from the host stack
        assert tap["rx_drops"] == 0 and tap["tx_drops"] == 0, tap
        veth = h.port_stats(h.ports[0])
        assert veth["rx_big"] > 0 and veth["rx_drops"] == 0, veth
        gso = [r for r in h.sw.runtime() if r["name"] == "gso"]
        assert sum(r["packets"] for r in gso) == 0        # every super-frame passed whole
        h.stop()
        h.sw.graph.pool.check_accounting()


@pytest.mark.root
def test_jumbo_ping_through_an_internal_port_at_mtu_request_9000():
    with Hosts(mtu=9000, internal=True) as h:
        assert h.sw.port(h.tap).mtu == 9000
        assert "mtu 9000" in h.dp.run(f"ip link show {h.tap}").stdout
        r = h.a.run("ping -c 3 -i 0.2 -W 2 -M do -s 8972 10.1.0.3", check=False)
        assert "3 received" in r.stdout, r.stdout
        r = h.dp.run("ping -c 3 -i 0.2 -W 2 -M do -s 8972 10.1.0.1", check=False)
        assert "3 received" in r.stdout, r.stdout
        assert h.port_stats(h.tap)["rx_big"] >= 3


@pytest.mark.root
def test_a_device_moved_away_keeps_its_mtu_and_the_tick_goes_on():
    """An internal port's TAP moved to another namespace can no longer be asked its MTU
    from here: the switch keeps the MTU in effect instead of failing its tick."""
    with Hosts(internal=True) as h:
        before = h.sw.port(h.tap).mtu
        h.dp.run(f"ip link set {h.tap} netns {h.a.name}")
        h.sw.tick()
        assert h.sw.port(h.tap).mtu == before == 1500
        assert {r["name"]: r for r in h.sw.interface_stats()}[h.tap]["mtu"] == 1500


@pytest.mark.root
def test_mtu_request_sets_the_device_and_ip_link_changes_are_taken_up():
    """As OVS on a system port: mtu_request sets the Linux device's MTU; an MTU set with
    `ip link` afterwards is what the port then enforces (picked up by the switch's tick)."""
    with Hosts() as h:
        port = h.ports[1]                                  # b's veth, 1500 by default
        rows = {r["name"]: r for r in h.sw.interface_stats()}
        assert rows[port]["mtu"] == 1500
        with h.dp.entered():                               # as the daemon runs: in its namespace
            h.sw.set_mtu_request(port, 9000)
        assert "mtu 9000" in h.dp.run(f"ip link show {port}").stdout
        h.b.run(f"ip link set {h.b_ifname} mtu 9000")
        h.a.run(f"ip link set {h.a_ifname} mtu 9000")
        h.dp.run(f"ip link set {h.ports[0]} mtu 9000")
        h.sw.tick()
        rows = {r["name"]: r for r in h.sw.interface_stats()}
        assert rows[port]["mtu"] == 9000 and rows[h.ports[0]]["mtu"] == 9000
        r = h.a.run("ping -c 2 -i 0.2 -W 2 -M do -s 8972 10.1.0.2", check=False)
        assert "2 received" in r.stdout, r.stdout
        # down to 4000 behind fastpath's back: the next tick enforces it, as a counted drop
        h.dp.run(f"ip link set {port} mtu 4000")
        h.sw.tick()
        assert {r["name"]: r for r in h.sw.interface_stats()}[port]["mtu"] == 4000
        r = h.a.run("ping -c 2 -i 0.2 -W 1 -M do -s 8972 10.1.0.2", check=False)
        assert " 0 received" in r.stdout
        assert h.errors().get(("interface-output", "mtu_exceeded"), 0) >= 2, h.errors()


# ---- in memory: the software finish, frame by frame ----

def vnet_frame(payload_len, mss, v6=False, tag=None, seq=1000, flags="PA"):
    """A TCP super-frame as a veth hands it over: pseudo-header sum in the checksum field."""
    l3 = (IPv6(src="fd00::1", dst="fd00::2") if v6 else IP(src="10.1.0.1", dst="10.1.0.2", id=7))
    eth = Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
    if tag is not None:
        eth = eth / Dot1Q(vlan=tag)
    pkt = eth / l3 / TCP(sport=40000, dport=5201, seq=seq, flags=flags, options=[("NOP", None)] * 4) \
        / bytes(i & 0xff for i in range(payload_len))
    raw = bytearray(bytes(pkt))
    l3off = 14 + (4 if tag is not None else 0)
    l4off = l3off + (40 if v6 else 20)
    # the partial state: pseudo-header sum only, as CHECKSUM_PARTIAL leaves it
    tcp_len = len(raw) - l4off
    if v6:
        ph = bytes(raw[l3off + 8:l3off + 40]) + struct.pack("!IxxxB", tcp_len, 6)
    else:
        ph = bytes(raw[l3off + 12:l3off + 20]) + struct.pack("!xBH", 6, tcp_len)
    s = sum(struct.unpack(f"!{len(ph) // 2}H", ph))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    raw[l4off + 16:l4off + 18] = struct.pack("!H", s)
    return bytes(raw), l3off, l4off


def pg_switch():
    sw = Switch(n_buffers=1024, clock=Clock())
    sw.add_br("br0")
    sw.add_port("br0", "a", type="pg")
    sw.add_port("br0", "b", type="pg")
    return sw


def inject_with_offload(sw, raw, l3off, l4off, mss, v6):
    pool = sw.graph.pool
    (b,) = pool.alloc_py(1, big=len(raw) > 2048)
    pool.set_frame(int(b), raw)
    pool.meta("rx_if")[b] = sw.port("a").sw_if_index
    pool.meta("next")[b] = 0
    pool.meta("ol_flags")[b] = 1 | (0 if mss is None else (8 if v6 else 4))
    pool.meta("l4_start")[b] = l4off - l3off
    pool.meta("csum_offset")[b] = 16
    pool.meta("gso_size")[b] = mss or 0
    sw.graph.inject("ethernet-input", [b])
    sw.graph.run_until_idle()
    return [Ether(f) for f in sw.port("b").io[1].take()]


@pytest.mark.parametrize("v6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("tag", [None, 10], ids=["untagged", "tagged"])
def test_gso_cuts_a_super_frame_into_valid_segments(v6, tag):
    sw = pg_switch()
    if tag is not None:
        sw.set_port("a", trunks="10")
        sw.set_port("b", trunks="10")
    payload, mss = 10000, 1448
    raw, l3off, l4off = vnet_frame(payload, mss, v6=v6, tag=tag)
    segs = inject_with_offload(sw, raw, l3off, l4off, mss, v6)
    want = -(-payload // mss)
    assert len(segs) == want
    data = b""
    for k, s in enumerate(segs):
        ip = s[IPv6] if v6 else s[IP]
        tcp = s[TCP]
        assert tcp.seq == 1000 + k * mss
        assert len(bytes(tcp.payload)) == (mss if k < want - 1 else payload - (want - 1) * mss)
        assert ("P" in tcp.flags) == (k == want - 1)
        # checksums: recomputed by scapy must equal what fastpath wrote
        fixed = s.copy()
        del fixed[TCP].chksum
        if not v6:
            del fixed[IP].chksum
            assert IP(bytes(fixed[IP]))[IP].chksum == ip.chksum
            assert ip.id == 7 + k and ip.len == len(bytes(ip))
        assert Ether(bytes(fixed))[TCP].chksum == tcp.chksum
        if tag is not None:
            assert s[Dot1Q].vlan == tag
        data += bytes(tcp.payload)
    assert data == bytes(i & 0xff for i in range(payload))
    sw.graph.pool.check_accounting(0)


def test_partial_checksum_is_finished_for_a_port_without_offload():
    sw = pg_switch()
    raw, l3off, l4off = vnet_frame(300, None)
    (s,) = inject_with_offload(sw, raw, l3off, l4off, None, False)
    fixed = s.copy()
    del fixed[TCP].chksum
    assert Ether(bytes(fixed))[TCP].chksum == s[TCP].chksum
    sw.graph.pool.check_accounting(0)


def test_offload_state_that_does_not_fit_is_a_counted_drop():
    sw = pg_switch()
    raw, l3off, l4off = vnet_frame(300, None)
    # checksum field past the end of the frame
    pool = sw.graph.pool
    (b,) = pool.alloc_py(1)
    pool.set_frame(int(b), raw)
    pool.meta("rx_if")[b] = sw.port("a").sw_if_index
    pool.meta("ol_flags")[b] = 1
    pool.meta("l4_start")[b] = 2000
    pool.meta("csum_offset")[b] = 16
    sw.graph.inject("ethernet-input", [b])
    sw.graph.run_until_idle()
    assert sw.port("b").io[1].take() == []
    errs = {(n, r): c for c, n, r, _ in sw.errors()}
    assert errs.get(("interface-output", "bad_offload")) == 1
    # a super-frame whose headers are not TCP
    raw2 = bytearray(raw)
    raw2[l3off + 9] = 17
    segs = inject_with_offload(sw, bytes(raw2), l3off, l4off, 1000, False)
    assert segs == []
    errs = {(n, r): c for c, n, r, _ in sw.errors()}
    assert errs.get(("gso", "bad_gso")) == 1
    sw.graph.pool.check_accounting(0)
