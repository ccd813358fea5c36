"""vhost-user offloads: partial checksums, TCP super-frames and jumbo frames between a
guest and fastpath (issue #14).

Part one boots a Linux guest whose virtio-net keeps its default offloads (nothing is
turned off) on a fastpath bridge with a veth into a host namespace: TCP both ways with
checked content, and 9000-byte MTU pings with DF set both ways. Counters prove the
offloads were used: super-frames and partial checksums crossed the port whole.

Part two forges virtio-net headers from a fake driver (tests/test_vhost.py's
FakeFrontEnd): each bad or unsupported header is a counted drop, big frames use big
buffers, and the pool's accounting stays exact.
"""
import contextlib
import hashlib
import os
import socket
import struct
import threading
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from fastpath.switch import Switch
from fastpath.vhost import protocol as vu

from test_vhost import (GUEST_IP, GUEST_MAC, GUEST_NET, HOST_IP, HOST_MAC, Guest, connect, fe,
                        pg_frames, running, sockdir, sw, vstats, wait_for)

__all__ = ["fe", "sockdir", "sw"]          # fixtures, used by name

OFFLOAD_FEATURES = (vu.F_CSUM | vu.F_GUEST_CSUM | vu.F_GUEST_TSO4 | vu.F_GUEST_TSO6
                    | vu.F_HOST_TSO4 | vu.F_HOST_TSO6)

# ---------------------------------------------------------------- a real guest


@contextlib.contextmanager
def offload_bridge(mtu=None, **vhost_options):
    """A fastpath bridge: a vhost-user port and an afpacket port on a veth whose other end
    is in namespace `peer` (HOST_IP), both veth ends at `mtu` when given (before the
    afpacket port opens: it takes the interface's MTU). Yields (switch, peer)."""
    from netns import Netns, unique_name, veth_pair
    a, b = unique_name("fpoa"), unique_name("fpob")
    with Netns() as dp, Netns() as peer, veth_pair(a, b, dp, peer):
        peer.run(f"ip link set {b} address {HOST_MAC}")
        peer.run(f"ip addr add {HOST_IP}/24 dev {b}")
        if mtu:
            dp.run(f"ip link set {a} mtu {mtu}")
            peer.run(f"ip link set {b} mtu {mtu}")
        sw = Switch(n_buffers=8192)
        try:
            sw.add_br("br0")
            with dp.entered():
                sw.add_port("br0", a, type="afpacket")
            sw.add_port("br0", "vhu0", type="vhost-user",
                        **{f"options:{k}": v for k, v in vhost_options.items()})
            with running(sw):
                yield sw, peer
        finally:
            sw.close()


def serve_once(peer, port, send=None, expect=0, timeout=120.0):
    """A TCP server in namespace peer for one connection: sends `send` and closes, or reads
    `expect` bytes and closes. Returns (thread, result dict: bytes, seconds)."""
    with peer.entered():
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST_IP, port))
    srv.listen(1)
    srv.settimeout(timeout)
    result = {"bytes": b"", "seconds": 0.0}

    def run():
        try:
            c, _ = srv.accept()
        except OSError:
            return
        finally:
            srv.close()
        c.settimeout(timeout)
        t0 = time.monotonic()
        with c:
            if send is not None:
                c.sendall(send)
            else:
                parts, n = [], 0
                while n < expect:
                    d = c.recv(1 << 20)
                    if not d:
                        break
                    parts.append(d)
                    n += len(d)
                result["bytes"] = b"".join(parts)
        result["seconds"] = time.monotonic() - t0

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, result


@pytest.mark.root
def test_tcp_both_ways_with_default_offloads(sockdir):
    """The guest downloads 16 MiB from the namespace and uploads them back; both copies are
    checked. Its virtio-net keeps every default offload: its TCP super-frames (HOST_TSO4)
    and partial checksums come through whole, and the veth's super-frames reach it whole
    (GUEST_TSO4)."""
    size = 16 << 20
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    script = GUEST_NET + f"""
ping -c 1 -w 10 {HOST_IP} >/dev/null
echo FP-READY
busybox nc {HOST_IP} 5201 </dev/null >/tmp/in
echo FP-DOWN $(busybox sha256sum /tmp/in)
busybox nc {HOST_IP} 5202 </tmp/in >/dev/null
echo FP-UP-DONE
sleep 60
"""
    sock = f"{sockdir}/vm.sock"
    with offload_bridge(**{"vhost-socket": sock}) as (sw, peer):
        down, down_res = serve_once(peer, 5201, send=data)
        up, up_res = serve_once(peer, 5202, expect=size)
        g = Guest(sockdir, sock, script).start()
        try:
            assert g.wait_line("FP-READY", timeout=90), g.console()
            vport = sw.port("vhu0").io[2]
            features = vport.status()["features"]
            assert features & OFFLOAD_FEATURES == OFFLOAD_FEATURES, hex(features)
            assert vport.status()["offload_caps"] == 7
            assert g.wait_line("FP-DOWN", timeout=120), g.console()
            down.join(10)
            line = next(ln for ln in g.lines if "FP-DOWN" in ln)
            assert digest in line, (line, digest)
            assert g.wait_line("FP-UP-DONE", timeout=120), g.console()
            up.join(10)
            assert len(up_res["bytes"]) == size and up_res["bytes"] == data
            s = vstats(sw)
            print({k: v for k, v in s.items() if v and k not in ("name", "type", "bridge")})
            for way, res in (("namespace -> guest", down_res), ("guest -> namespace", up_res)):
                print(f"{way}: {size >> 20} MiB in {res['seconds']:.2f} s, "
                      f"{size * 8 / res['seconds'] / 1e6:.0f} Mbit/s")
            # the offloads were used, both ways
            assert s["vhost_rx_gso_frames"] > 0 and s["vhost_rx_csum_partial"] > 0, s
            assert s["vhost_rx_big_frames"] > 0, s
            assert s["vhost_tx_gso_frames"] > 0 and s["vhost_tx_csum_partial"] > 0, s
            assert s["vhost_tx_big_frames"] > 0, s
            assert s["rx_drops"] == 0, s
            assert not s.get("tx_bad_offload") and not s.get("rx_bad_offload"), s
        finally:
            g.stop()
        # the guest is gone: nothing goes to it with offload state any more
        assert wait_for(lambda: vstats(sw)["vhost_connected"] == 0)
        assert sw.port("vhu0").io[2].status()["offload_caps"] == 0
        sw.graph.pool.check_accounting()


@pytest.mark.root
def test_jumbo_ping_with_df_both_ways(sockdir):
    """MTU 9000 on the guest's eth0 and on the veth: 8972-byte ICMP payloads with DF set
    (9000-byte IP packets) cross the bridge both ways, in big buffers."""
    script = GUEST_NET + f"""
ip link set eth0 mtu 9000
if /usr/bin/ping -c 3 -i 0.3 -W 5 -M do -s 8972 {HOST_IP}; then echo FP-JUMBO-OK; else echo FP-JUMBO-FAIL; fi
sleep 60
"""
    sock = f"{sockdir}/vm.sock"
    with offload_bridge(mtu=9000, **{"vhost-socket": sock}) as (sw, peer):
        g = Guest(sockdir, sock, script, binaries=("/usr/bin/ping",)).start()
        try:
            assert g.wait_line("FP-JUMBO-OK", timeout=120), g.console()
            r = peer.run(f"ping -c 3 -i 0.3 -W 5 -M do -s 8972 {GUEST_IP}", check=False)
            assert " 3 received" in r.stdout, r.stdout
            s = vstats(sw)
            assert s["vhost_rx_big_frames"] >= 6 and s["vhost_tx_big_frames"] >= 6, s
            assert s["rx_drops"] == 0 and s["tx_drops"] == 0, s
        finally:
            g.stop()
        sw.graph.pool.check_accounting()


# ---------------------------------------------------------------- forged headers

NEEDS_CSUM, DATA_VALID = 1, 2
GSO_TCPV4, GSO_UDP, GSO_TCPV6, GSO_ECN = 1, 3, 4, 0x80
BIG_AT = 0x300000            # room for one 64 KiB frame in the fake guest's memory
HOST_B = "02:00:00:00:00:0b"


def vnet(flags=0, gso=0, gso_size=0, start=0, off=0, hdr_len=0):
    """A 12-byte virtio_net_hdr (num_buffers 0, as a driver sends it)."""
    return struct.pack("<BBHHHHH", flags, gso, hdr_len, gso_size, start, off, 0)


def pseudo_sum(pkt):
    """The folded (not inverted) pseudo-header sum a sender leaves in a partial L4
    checksum field, for scapy packet pkt (IPv4 or IPv6, TCP or UDP)."""
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    n = len(bytes(l4))
    proto = 6 if TCP in pkt else 17
    if IP in pkt:
        ph = socket.inet_aton(pkt[IP].src) + socket.inet_aton(pkt[IP].dst) + struct.pack("!BBH", 0, proto, n)
    else:
        ph = (socket.inet_pton(socket.AF_INET6, pkt[IPv6].src) + socket.inet_pton(socket.AF_INET6, pkt[IPv6].dst)
              + struct.pack("!IxxxB", n, proto))
    s = sum(struct.unpack(f"!{len(ph) // 2}H", ph))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return s


def partial(pkt):
    """(frame with the L4 checksum left partial, csum_start, csum_offset)."""
    raw = bytearray(bytes(pkt))
    l4 = pkt[TCP] if TCP in pkt else pkt[UDP]
    start = len(raw) - len(bytes(l4))
    off = 16 if TCP in pkt else 6
    struct.pack_into("!H", raw, start + off, pseudo_sum(pkt))
    return bytes(raw), start, off


def tcp4(payload, dst=HOST_B, **kw):
    return (Ether(src=GUEST_MAC, dst=dst) / IP(src="192.0.2.2", dst="192.0.2.1", id=7)
            / TCP(sport=40000, dport=5201, seq=1000, flags="PA", **kw) / Raw(payload))


def tcp6(payload, dst=HOST_B):
    return (Ether(src=GUEST_MAC, dst=dst) / IPv6(src="2001:db8::2", dst="2001:db8::1")
            / TCP(sport=40000, dport=5201, seq=1000, flags="PA") / Raw(payload))


def send_forged(fe, hdr, frame, piece=None):
    """The guest transmits header + frame from BIG_AT, in descriptors of `piece` bytes
    (one descriptor when None)."""
    data = hdr + frame
    fe.mem[BIG_AT:BIG_AT + len(data)] = data
    piece = piece or len(data)
    fe.tx.add_chain([(fe.gpa(BIG_AT + i), min(piece, len(data) - i), 0)
                     for i in range(0, len(data), piece)])
    fe.tx.do_kick()


def errors(sw):
    return {(n, r): c for c, n, r, _ in sw.errors()}


def idle_pool(sw):
    """Every buffer back on its free list once the switch is idle; accounting exact."""
    pool = sw.graph.pool
    assert wait_for(lambda: pool.in_flight == 0), pool.in_flight
    pool.check_accounting(0)


def payload(n):
    return bytes((i * 7 + 3) & 0xff for i in range(n))


def test_partial_checksums_are_finished_for_a_port_without_csum(sw, fe):
    """pg ports take no offload: interface-output fills in the checksum the guest left."""
    ip = IP(src="192.0.2.2", dst="192.0.2.1")
    eth = Ether(src=GUEST_MAC, dst=HOST_B)
    # (sent, what pg0 gets: the priority tag goes on an access port's egress)
    pkts = [(tcp4(payload(300)),) * 2,
            (eth / ip / UDP(sport=1, dport=2) / Raw(payload(100)),) * 2,
            (tcp6(payload(500)),) * 2,
            (eth / Dot1Q(vlan=0) / ip / TCP() / Raw(payload(40)), eth / ip / TCP() / Raw(payload(40)))]
    for p, want in pkts:
        f, start, off = partial(p)
        send_forged(fe, vnet(NEEDS_CSUM, start=start, off=off), f)
        got = pg_frames(sw, "pg0", 1)
        assert got == [bytes(want)], (got, want)          # scapy's own checksums
        sw.port("pg1").io[1].take()
    s = vstats(sw)
    assert s["vhost_rx_csum_partial"] == 4 and s["rx_drops"] == 0, s
    idle_pool(sw)


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_super_frame_from_guest_is_cut_for_a_port_without_tso(sw, fe, family):
    """A 60000-byte TCP super-frame in 4 KiB descriptors: into a big buffer, then cut into
    gso_size segments with valid checksums for pg0; the bytes come out in order."""
    data = payload(60000)
    p = tcp4(data) if family == "ipv4" else tcp6(data)
    f, start, off = partial(p)
    gso = GSO_TCPV4 if family == "ipv4" else GSO_TCPV6
    send_forged(fe, vnet(NEEDS_CSUM, gso, 1448, start, off, start + 20), f, piece=4096)
    segs = pg_frames(sw, "pg0", 42)
    assert len(segs) == 42                       # ceil(60000 / 1448)
    out = b""
    for s in segs:
        q = Ether(s)
        l3 = q[IP] if family == "ipv4" else q[IPv6]
        tcp = q[TCP]
        want = tcp.chksum
        del tcp.chksum
        if family == "ipv4":
            del l3.chksum
        assert Ether(bytes(q))[TCP].chksum == want
        out += bytes(tcp.payload)
    assert out == data
    st = vstats(sw)
    assert st["vhost_rx_gso_frames"] == 1 and st["vhost_rx_big_frames"] == 1, st
    sw.port("pg1").io[1].take()
    idle_pool(sw)


def tcp_partial(n=200):
    return partial(tcp4(payload(n)))


F, START, OFF = tcp_partial()
# forged header, frame -> the reason it is dropped for
FORGED = [
    ("csum_start past the frame", vnet(NEEDS_CSUM, start=len(F), off=16), F, "bad_offload"),
    ("csum_start in the Ethernet header", vnet(NEEDS_CSUM, start=10, off=16), F, "bad_offload"),
    ("csum field past the frame", vnet(NEEDS_CSUM, start=START, off=len(F)), F, "bad_offload"),
    ("csum_start 0xffff", vnet(NEEDS_CSUM, start=0xffff, off=0xffff), F, "bad_offload"),
    ("gso without NEEDS_CSUM", vnet(0, GSO_TCPV4, 1448, START, OFF), F, "bad_offload"),
    ("gso_size 0", vnet(NEEDS_CSUM, GSO_TCPV4, 0, START, OFF), F, "bad_offload"),
    ("TCP gso with a UDP checksum offset", vnet(NEEDS_CSUM, GSO_TCPV4, 1448, START, 6), F, "bad_offload"),
    ("UFO", vnet(NEEDS_CSUM, GSO_UDP, 1448, START, 6), F, "offload_unsupported"),
    ("UFO with ECN", vnet(NEEDS_CSUM, GSO_UDP | GSO_ECN, 1448, START, 6), F, "offload_unsupported"),
    ("unknown gso type", vnet(NEEDS_CSUM, 5, 1448, START, OFF), F, "offload_unsupported"),
    ("frame over 64 KiB", vnet(), tcp4(payload(65536 - 54)).__bytes__(), "too_big"),
    ("frame over 64 KiB in pieces", vnet(), bytes(70000), "too_big"),
]


@pytest.mark.parametrize("hdr,frame_,reason", [c[1:] for c in FORGED], ids=[c[0] for c in FORGED])
def test_forged_headers_are_counted_drops(sw, fe, hdr, frame_, reason):
    send_forged(fe, hdr, frame_, piece=4096 if "pieces" in reason or len(frame_) > 4096 else None)
    assert wait_for(lambda: vstats(sw).get(f"rx_{reason}") == 1), vstats(sw)
    assert wait_for(lambda: len(fe.tx.take_used()) == 1)           # the chain went back
    s = vstats(sw)
    assert s["rx_packets"] == 0 and s["rx_drops"] == 1, s
    assert sw.port("pg0").io[1].take() == []
    idle_pool(sw)
    # the queue goes on: a good frame passes
    send_forged(fe, vnet(NEEDS_CSUM, start=START, off=OFF), F)
    assert len(pg_frames(sw, "pg0", 1)) == 1
    idle_pool(sw)


def test_header_split_and_short_chains(sw, fe):
    """The header may come in pieces across descriptors; a chain that ends inside the
    header is a runt."""
    data = vnet(NEEDS_CSUM, start=START, off=OFF) + F
    base = BIG_AT
    fe.mem[base:base + len(data)] = data
    fe.tx.add_chain([(fe.gpa(base), 3, 0), (fe.gpa(base + 3), 5, 0), (fe.gpa(base + 8), len(data) - 8, 0)])
    fe.tx.do_kick()
    assert len(pg_frames(sw, "pg0", 1)) == 1
    fe.tx.add_chain([(fe.gpa(base), 5, 0)])
    fe.tx.do_kick()
    assert wait_for(lambda: vstats(sw).get("rx_runt") == 1)
    idle_pool(sw)


def test_offloads_the_guest_did_not_negotiate_are_refused(sw):
    """A guest that declined CSUM and HOST_TSO4 may not send their header fields; a guest
    that declined GUEST_CSUM gets none: the port's caps stay 0."""
    fe = connect(sw)
    try:
        fe.handshake(features=vu.FEATURES & ~vu.F_OFFLOADS)
        assert wait_for(lambda: vstats(sw)["vhost_running"] == 1)
        assert sw.port("vhu0").io[2].status()["offload_caps"] == 0
        assert sw.graph["interface-output"].get_caps(sw.port("vhu0").sw_if_index) == 0
        send_forged(fe, vnet(NEEDS_CSUM, start=START, off=OFF), F)
        assert wait_for(lambda: vstats(sw).get("rx_bad_offload") == 1)
        send_forged(fe, vnet(NEEDS_CSUM, GSO_TCPV4, 100, START, OFF), F)
        assert wait_for(lambda: vstats(sw).get("rx_bad_offload") == 2)
        send_forged(fe, vnet(), F)            # no offload: fine
        assert len(pg_frames(sw, "pg0", 1)) == 1
        idle_pool(sw)
    finally:
        fe.close()


def test_no_big_buffer_left_is_a_counted_drop(sockdir):
    s = Switch(n_buffers=1024)
    s.add_br("br0")
    s.add_port("br0", "vhu0", type="vhost-user", **{"options:vhost-socket": f"{sockdir}/vhu0.sock"})
    s.add_port("br0", "pg0", type="pg")
    pool = s.graph.pool
    held = pool.alloc_py(pool.n_big, big=True)         # before the loop runs: no race
    assert len(held) == pool.n_big
    try:
        with running(s):
            fe = connect(s)
            try:
                fe.handshake()
                assert wait_for(lambda: vstats(s)["vhost_running"] == 1)
                send_forged(fe, vnet(), tcp4(payload(3000)).__bytes__(), piece=1000)
                assert wait_for(lambda: vstats(s).get("rx_no_big_buffer") == 1), vstats(s)
                send_forged(fe, vnet(), tcp4(payload(1000)).__bytes__())     # small: fine
                assert len(pg_frames(s, "pg0", 1)) == 1
                assert wait_for(lambda: pool.in_flight == pool.n_big)
            finally:
                fe.close()
        pool.free_py(held)
        pool.check_accounting(0)
    finally:
        s.close()


# ---------------------------------------------------------------- toward the guest

@pytest.fixture
def sw2(sockdir):
    """Two vhost-user ports and a pg port on one bridge."""
    s = Switch(n_buffers=4096)
    s.add_br("br0")
    for name in ("vhu0", "vhu1"):
        s.add_port("br0", name, type="vhost-user", **{"options:vhost-socket": f"{sockdir}/{name}.sock"})
    s.add_port("br0", "pg0", type="pg")
    with running(s):
        yield s
    s.close()


def connect_to(sw, name):
    from test_vhost import FakeFrontEnd
    return FakeFrontEnd(sw.port(name).options["vhost-socket"])


def read_rx(fe, want, timeout=3.0):
    """[(virtio_net_hdr bytes, frame)] the backend wrote, merged over num_buffers."""
    out = []

    def more():
        used = fe.rx.take_used()
        i = 0
        while i < len(used):
            head, length = used[i]
            data = fe.read_chain(head, length)
            nbuf = struct.unpack_from("<H", data, 10)[0]
            for h2, l2 in used[i + 1:i + nbuf]:
                data += fe.read_chain(h2, l2)
            out.append((data[:12], data[12:]))
            i += max(nbuf, 1)
        return len(out) >= want
    wait_for(more, timeout)
    return out


def test_super_frame_reaches_a_guest_whole_and_caps_follow_negotiation(sw2):
    """Guest 0 sends a TCP super-frame: guest 1, which took GUEST_CSUM and GUEST_TSO4,
    gets it whole behind a header saying so (over mergeable buffers); after it comes back
    without them it gets segments with finished checksums. The caps of the port in
    interface-output follow each negotiation, and go to 0 when the guest leaves."""
    sw = sw2
    ifout = sw.graph["interface-output"]
    idx1 = sw.port("vhu1").sw_if_index
    assert ifout.get_caps(idx1) == 0
    fe0, fe1 = connect_to(sw, "vhu0"), connect_to(sw, "vhu1")
    try:
        fe0.handshake()
        fe1.handshake()
        assert wait_for(lambda: vstats(sw, "vhu1")["vhost_running"] == 1 and vstats(sw, "vhu0")["vhost_running"] == 1)
        assert ifout.get_caps(idx1) == 7
        fe1.post_rx(200, size=2048)
        data = payload(30000)
        p = tcp4(data, dst="02:00:00:00:00:99")          # unknown: flooded to vhu1 and pg0
        f, start, off = partial(p)
        send_forged(fe0, vnet(NEEDS_CSUM, GSO_TCPV4, 1448, start, off, start + 20), f, piece=4096)
        got = read_rx(fe1, 1)
        assert len(got) == 1, got
        hdr, frm = got[0]
        flags, gso, hdr_len, gso_size, cstart, coff, nbuf = struct.unpack("<BBHHHHH", hdr)
        assert (flags, gso, gso_size, cstart, coff) == (NEEDS_CSUM, GSO_TCPV4, 1448, start, off)
        assert hdr_len == start + 20 and nbuf == -(-(12 + len(f)) // 2048)
        assert frm == f
        assert len(pg_frames(sw, "pg0", 21)) == 21       # pg0 takes no TSO: segments
        s1 = vstats(sw, "vhu1")
        assert s1["vhost_tx_gso_frames"] == 1 and s1["vhost_tx_big_frames"] == 1, s1
        # a small frame with a partial checksum: NEEDS_CSUM to the guest too
        send_forged(fe0, vnet(NEEDS_CSUM, start=START, off=OFF), F)
        hdr, frm = read_rx(fe1, 1)[0]
        assert hdr[0] == NEEDS_CSUM and frm == F
        fe1.close()
        assert wait_for(lambda: ifout.get_caps(idx1) == 0)

        # the guest comes back without the receive offloads
        fe1 = connect_to(sw, "vhu1")
        fe1.handshake(features=vu.FEATURES & ~(vu.F_GUEST_CSUM | vu.F_GUEST_TSO4 | vu.F_GUEST_TSO6 | vu.F_GUEST_ECN))
        assert wait_for(lambda: vstats(sw, "vhu1")["vhost_running"] == 1)
        assert ifout.get_caps(idx1) == 0
        fe1.post_rx(200, size=2048)
        send_forged(fe0, vnet(NEEDS_CSUM, GSO_TCPV4, 1448, start, off, start + 20), f, piece=4096)
        got = read_rx(fe1, 21)
        assert len(got) == 21
        out = b""
        for hdr, frm in got:
            assert hdr[:10] == bytes(10)                  # no offload state for this guest
            q = Ether(frm)
            want = q[TCP].chksum
            del q[TCP].chksum
            assert Ether(bytes(q))[TCP].chksum == want
            out += bytes(q[TCP].payload)
        assert out == data
        send_forged(fe0, vnet(NEEDS_CSUM, start=START, off=OFF), F)
        hdr, frm = read_rx(fe1, 1)[0]
        assert hdr[:10] == bytes(10) and frm == bytes(tcp4(payload(200)))   # checksum filled in
        pg_frames(sw, "pg0", 22)
        idle_pool(sw)
    finally:
        fe0.close()
        fe1.close()


def test_super_frame_without_mergeable_buffers_needs_a_big_chain(sw2):
    """A guest without MRG_RXBUF gets a super-frame only in one chain big enough for it
    (Linux posts 64 KiB chains then); into a smaller chain it is a counted drop (too_big)
    and the chain stays for a smaller frame."""
    sw = sw2
    from test_vhost import D_WRITE
    fe0, fe1 = connect_to(sw, "vhu0"), connect_to(sw, "vhu1")
    try:
        fe0.handshake()
        fe1.handshake(features=vu.FEATURES & ~vu.F_MRG_RXBUF)
        assert wait_for(lambda: vstats(sw, "vhu1")["vhost_running"] == 1 and vstats(sw, "vhu0")["vhost_running"] == 1)
        fe1.post_rx(1, size=4096)
        f, start, off = partial(tcp4(payload(30000), dst="02:00:00:00:00:99"))
        hdr = vnet(NEEDS_CSUM, GSO_TCPV4, 1448, start, off, start + 20)
        send_forged(fe0, hdr, f, piece=4096)
        assert wait_for(lambda: vstats(sw, "vhu1").get("tx_too_big") == 1), vstats(sw, "vhu1")
        send_forged(fe0, vnet(NEEDS_CSUM, start=START, off=OFF), F)      # fits the small chain
        assert [frm for _, frm in read_rx(fe1, 1)] == [F]
        # one chain of 64 KiB and a header, in 4 KiB descriptors
        fe1.rx.add_chain([(fe1.gpa(BIG_AT + i), 4096, D_WRITE) for i in range(0, 65536 + 4096, 4096)])
        send_forged(fe0, hdr, f, piece=4096)
        used = []
        assert wait_for(lambda: used.extend(fe1.rx.take_used()) or used)
        (head, length), = used
        data = fe1.read_chain(head, length)
        assert data[:10] == hdr[:10] and data[12:] == f
        assert struct.unpack_from("<H", data, 10)[0] == 1            # num_buffers
        pg_frames(sw, "pg0", 2 * 21 + 1)
        idle_pool(sw)
    finally:
        fe0.close()
        fe1.close()


def test_caps_follow_the_guest_in_every_worker(sockdir):
    """With two workers both interface-outputs get the guest's caps, and lose them when it
    leaves (the control channel changes them under the worker barrier, which only the
    thread that made the switch may hold: the dispatch loop runs here, the fake front
    end in a thread)."""
    s = Switch(n_buffers=2048, workers=2)
    seen = []

    def front_end():
        try:
            fe = connect(s)
            try:
                fe.handshake()
                seen.append(wait_for(lambda: [n.get_caps(idx) for n in s.nodes("interface-output")] == [7, 7]))
            finally:
                fe.close()
            seen.append(wait_for(lambda: [n.get_caps(idx) for n in s.nodes("interface-output")] == [0, 0]))
        finally:
            s.graph.stop()

    try:
        s.add_br("br0")
        s.add_port("br0", "vhu0", type="vhost-user", **{"options:vhost-socket": f"{sockdir}/vhu0.sock"})
        idx = s.port("vhu0").sw_if_index
        assert [n.get_caps(idx) for n in s.nodes("interface-output")] == [0, 0]
        s.start_workers()
        t = threading.Thread(target=front_end, daemon=True)
        t.start()
        s.graph.run()
        t.join(5)
        assert seen == [True, True]
    finally:
        s.stop_workers()
        s.close()
