"""Two sites for real: two fastpath daemons in their own namespaces, hosts on VLANs 10
and 20 at each site, uplinks into an underlay namespace (a Linux bridge). The sites bring
up IPsec with IKEv2 and a PSK (options:psk); VLAN 10 reaches VLAN 10 across the VPN and
never VLAN 20, and a capture on the underlay sees only ARP, IKE and ESP. A gateway that
restarts gets the tunnel back by itself, and CHILD_SA rekeys under a continuous stream
lose nothing."""
import collections
import contextlib
import socket
import struct
import subprocess
import threading
import time
import types

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from fastpath.demo import ping
from fastpathd import Fastpathd
from netns import Netns, can_run, veth_pair

pytestmark = pytest.mark.skipif(not can_run(), reason="needs root")

PSK = "two sites, one secret"
SITE_IPS = {"a": ("192.0.2.1", "192.0.2.2"), "b": ("192.0.2.2", "192.0.2.1")}
HOST_IPS = {"ha10": "10.10.0.1", "ha20": "10.10.0.11", "hb10": "10.10.0.2", "hb20": "10.10.0.12"}


class Site(Fastpathd):
    """One gateway: `fastpath run` in namespace ns, configured with fastpathctl. start()
    again restarts it: same namespace, control socket and log, appended to."""

    def __init__(self, ns, sock, log, side):
        super().__init__(sock, log, ns=ns, args=["--buffers", "4096"])
        self.side = side
        self.me, self.peer = SITE_IPS[side]
        self.start()

    def configure(self, tunnel_options=()):
        """The site's whole configuration: uplink address, bridge, VLAN 10 and 20 host
        ports, the IPsec tunnel to the other site."""
        s = self.side
        self.do("add-ip", f"up{s}", f"{self.me}/24")
        self.do("add-br", "br0")
        self.do("add-port", "br0", f"p{s}10", "tag=10")
        self.do("add-port", "br0", f"p{s}20", "tag=20")
        self.do("add-port", "br0", "vpn0", "type=vxlan", f"options:remote_ip={self.peer}",
                f"options:local_ip={self.me}", "options:key=100", f"options:psk={PSK}",
                *tunnel_options)

    def sa(self):
        return self.do("show", "sa", fmt="json")


def sas_up(site):
    return any(r["direction"] == "out" for r in site.sa())


def out_spi(rows):
    return next((r["spi"] for r in rows if r["direction"] == "out"), None)


def in_spis(rows, retiring=None):
    return {r["spi"] for r in rows if r["direction"] == "in"
            and (retiring is None or r["retiring"] == retiring)}


def wait_up(a, b, timeout=20):
    deadline = time.monotonic() + timeout
    while not (sas_up(a) and sas_up(b)):
        assert time.monotonic() < deadline, "SAs did not come up:\n" + a.do("show", "errors")
        time.sleep(0.2)


@contextlib.contextmanager
def two_sites(tmp_path, tunnel_options=(), capture=False):
    """The topology, both gateways configured (SAs not necessarily up yet). Yields t with
    t.a, t.b (Site), t.ns (namespaces by name: swa, swb, under, ha10, ha20, hb10, hb20),
    t.gateways (the uplinks' MACs), t.cap (the underlay capture, with capture=True) and
    t.rc (the daemons' exit statuses, filled in on exit)."""
    t = types.SimpleNamespace(rc=None, cap=None)
    with contextlib.ExitStack() as stack:
        ns = {name: stack.enter_context(Netns(prefix)) for name, prefix in
              (("swa", "fsa"), ("swb", "fsb"), ("under", "fun"), ("ha10", "fa1"), ("ha20", "fa2"),
               ("hb10", "fb1"), ("hb20", "fb2"))}
        t.ns = ns
        under = ns["under"]
        under.run("ip link add ubr type bridge")
        under.run("ip link set ubr up")
        for a, b, na, nb in (("upa", "ua", "swa", "under"), ("upb", "ub", "swb", "under"),
                             ("pa10", "hv", "swa", "ha10"), ("pa20", "hv", "swa", "ha20"),
                             ("pb10", "hv", "swb", "hb10"), ("pb20", "hv", "swb", "hb20")):
            stack.enter_context(veth_pair(a, b, ns[na], ns[nb]))
        under.run("ip link set ua master ubr")
        under.run("ip link set ub master ubr")
        for host, ip in HOST_IPS.items():
            ns[host].run(f"ip addr add {ip}/24 dev hv")
        t.gateways = {ns["swa"].run("cat /sys/class/net/upa/address").stdout.strip(),
                      ns["swb"].run("cat /sys/class/net/upb/address").stdout.strip()}
        dump = None
        if capture:
            t.cap = tmp_path / "underlay.pcap"
            dump = under.popen(["tcpdump", "-i", "ubr", "-U", "-w", str(t.cap)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sites = []
        try:
            t.a = Site(ns["swa"], str(tmp_path / "a.sock"), tmp_path / "a.log", "a")
            sites.append(t.a)
            t.b = Site(ns["swb"], str(tmp_path / "b.sock"), tmp_path / "b.log", "b")
            sites.append(t.b)
            for site in sites:
                site.configure(tunnel_options)
            yield t
        finally:
            t.rc = [s.stop() for s in sites]
            if dump:
                time.sleep(0.3)
                dump.terminate()
                dump.wait(10)


def test_two_sites_over_ipsec(tmp_path):
    with two_sites(tmp_path, capture=True) as t:
        a, b, ns = t.a, t.b, t.ns
        wait_up(a, b)
        assert ping(ns["ha10"].name, "10.10.0.2", count=3) == 3           # VLAN 10 -> VLAN 10
        assert ping(ns["ha20"].name, "10.10.0.12", count=3) == 3          # VLAN 20 -> VLAN 20
        assert ping(ns["ha10"].name, "10.10.0.12", count=2, timeout=0.5) == 0   # never across VLANs
        assert ping(ns["hb10"].name, "10.10.0.11", count=2, timeout=0.5) == 0
        rows = a.do("fdb/show", "br0")
        assert "vpn0" in a.do("show") and len(rows.splitlines()) >= 3
        sa = [r for r in a.sa() if r["direction"] == "in" and r["packets"]]
        assert sa and sa[0]["replay_window"] >= 64
    assert t.rc == [0, 0]
    # what the gateways put on the underlay (the Linux bridge there speaks IGMP itself)
    frames = [p for p in (Ether(bytes(p)) for p in rdpcap(str(t.cap))) if p.src in t.gateways]
    assert frames
    esp = ike = 0
    for p in frames:
        if ARP in p:
            continue
        assert IP in p, p.summary()
        assert p[IP].proto == 50 or (UDP in p and p[UDP].dport in (500, 4500)), p.summary()
        esp += p[IP].proto == 50
        ike += UDP in p and p[UDP].dport == 500
    assert esp >= 10 and ike >= 2           # IKE_SA_INIT and IKE_AUTH from the initiator


RECOVERY_BOUND = 15.0       # seconds from the restarted gateway's configuration to both SAs


def test_restarted_gateway_gets_the_tunnel_back_by_itself(tmp_path):
    """Site A's daemon is stopped (SIGTERM) and started again with the same commands;
    site B is not touched. IKE runs again by itself (A's INITIAL_CONTACT clears B's old
    SAs): within RECOVERY_BOUND
    seconds both gateways send on new SAs that the other side holds as current inbound
    SAs, and the VLAN 10 hosts reach each other again."""
    with two_sites(tmp_path) as t:
        a, b, ns = t.a, t.b, t.ns
        wait_up(a, b)
        assert ping(ns["ha10"].name, "10.10.0.2", count=3) == 3
        before_a, before_b = a.sa(), b.sa()
        b_pid = b.proc.pid

        assert a.stop() == 0                              # SIGTERM: a clean exit
        assert ping(ns["ha10"].name, "10.10.0.2", count=1, timeout=0.5) == 0   # the tunnel is down
        a.start()
        a.configure()
        t0 = time.monotonic()
        old_a = in_spis(before_a) | {out_spi(before_a)}
        old_b_out = out_spi(before_b)
        while True:
            rows_a, rows_b = a.sa(), b.sa()
            oa, ob = out_spi(rows_a), out_spi(rows_b)
            # each side sends on an SA the other holds as its current (not retiring) inbound SA
            if oa and ob and ob != old_b_out and oa in in_spis(rows_b, retiring=False) \
                    and ob in in_spis(rows_a, retiring=False):
                break
            assert time.monotonic() - t0 < RECOVERY_BOUND, \
                f"tunnel not back after {RECOVERY_BOUND} s:\nA {rows_a}\nB {rows_b}\n" + open(a.log).read()[-3000:]
            time.sleep(0.2)
        recovered = time.monotonic() - t0
        assert not (in_spis(rows_a) | {oa}) & old_a              # the new daemon: all new SAs
        assert oa in in_spis(rows_b) - in_spis(before_b)        # and holds a new inbound one
        # traffic both ways on the new SAs
        assert ping(ns["ha10"].name, "10.10.0.2", count=3) == 3
        assert ping(ns["hb10"].name, "10.10.0.1", count=3) == 3
        assert ping(ns["ha20"].name, "10.10.0.12", count=3) == 3
        rows_a, rows_b = a.sa(), b.sa()
        assert next(r for r in rows_b if r["spi"] == oa)["packets"] >= 3
        assert next(r for r in rows_a if r["spi"] == ob)["packets"] >= 3
        # site B was the same daemon all along
        assert b.proc.pid == b_pid and b.proc.poll() is None
        print(f"tunnel back {recovered:.1f} s after site A was configured again")
    assert t.rc == [0, 0]


STREAM_TYPE = 0x88B5           # IEEE local experimental
STREAM_MAGIC = b"fastpath-seq"
STREAM_FRAMES = 3000
STREAM_RATE = 250.0            # frames per second: 12 s of traffic
REKEY_TIME = 3                 # seconds: a rekey every 3 s, 3 or 4 during the stream
SOL_PACKET, PACKET_STATISTICS, SO_RCVBUFFORCE = 263, 6, 33


def _mac(ns):
    return bytes.fromhex(ns.run("cat /sys/class/net/hv/address").stdout.strip().replace(":", ""))


class SeqReceiver(threading.Thread):
    """Counts the numbered frames arriving on hv in a namespace (an AF_PACKET socket)."""

    def __init__(self, ns, src):
        super().__init__(daemon=True)
        with ns.entered():
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(STREAM_TYPE))
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            self.sock.bind(("hv", STREAM_TYPE))
        self.sock.settimeout(0.2)
        self.src = src
        self.seqs = collections.Counter()
        self.frames = 0
        self.stopping = False

    def run(self):
        n = len(STREAM_MAGIC)
        while not self.stopping:
            try:
                f, addr = self.sock.recvfrom(2048)
            except socket.timeout:
                continue
            if addr[2] == socket.PACKET_OUTGOING or f[6:12] != self.src or f[14:14 + n] != STREAM_MAGIC:
                continue
            self.seqs[struct.unpack("!I", f[14 + n:18 + n])[0]] += 1
            self.frames += 1

    def socket_drops(self):
        return struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))[1]

    def stop(self):
        self.stopping = True
        self.join(5)
        self.sock.close()


def send_stream(ns, dst, src, count, rate):
    """count numbered frames out of hv in ns, paced to `rate` per second: frame i leaves
    at its slot or, after a stall, at once -- but never more than 0.1 s of frames at once."""
    with ns.entered():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(("hv", 0))
    try:
        head = dst + src + STREAM_TYPE.to_bytes(2, "big") + STREAM_MAGIC
        t0 = time.monotonic()
        for i in range(count):
            due = t0 + i / rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            elif now - due > 0.1:
                t0 += now - due - 0.1          # far behind: catch up by 0.1 s, not in one burst
            s.send((head + struct.pack("!I", i)).ljust(64, b"\0"))
    finally:
        s.close()


def test_rekeys_under_a_continuous_stream_lose_nothing(tmp_path):
    """With options:rekey_time=3, site A's VLAN 10 host sends 3000 numbered frames, paced
    at 250/s (12 s), to site B's. During the stream the tunnel rekeys at least twice -- at
    least two new inbound SAs at site B carry the stream -- and site B's host receives
    every sequence number exactly once."""
    with two_sites(tmp_path, tunnel_options=(f"options:rekey_time={REKEY_TIME}",)) as t:
        a, b, ns = t.a, t.b, t.ns
        wait_up(a, b)
        assert ping(ns["ha10"].name, "10.10.0.2", count=2) == 2        # both MACs learned
        src, dst = _mac(ns["ha10"]), _mac(ns["hb10"])
        rx = SeqReceiver(ns["hb10"], src)
        rx.start()
        before = {r["spi"]: r["packets"] for r in b.sa() if r["direction"] == "in"}
        # B's inbound SAs as they come and go (a replaced one is gone 2 s after its
        # Delete): the most packets each was seen with
        seen, done = collections.Counter(), threading.Event()

        def watch():
            while not done.is_set():
                for r in b.sa():
                    if r["direction"] == "in":
                        seen[r["spi"]] = max(seen[r["spi"]], r["packets"])
                done.wait(0.3)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            send_stream(ns["ha10"], dst, src, STREAM_FRAMES, STREAM_RATE)
            # the tail end: until everything arrived or nothing more comes for 3 s
            last, quiet = rx.frames, time.monotonic()
            while rx.frames < STREAM_FRAMES and time.monotonic() - quiet < 3.0:
                time.sleep(0.1)
                if rx.frames != last:
                    last, quiet = rx.frames, time.monotonic()
        finally:
            done.set()
            watcher.join(10)
            rx.stop()
        rows = b.sa()
        new = {spi: p for spi, p in seen.items() if spi not in before}
        carried = [spi for spi, p in new.items() if p > 0]
        rekeys = sum("rekeyed (ours)" in line for line in open(a.log).read().splitlines() +
                     open(b.log).read().splitlines())
        print(f"stream of {STREAM_FRAMES} frames: {len(new)} new inbound SAs at B, {len(carried)} "
              f"carried it; {rekeys} CHILD_SA rekeys logged")
        # at least two rekeys during the stream, and the stream crossed them
        assert len(carried) >= 2, f"{len(new)} new inbound SAs at B: {rows}"
        missing = sorted(set(range(STREAM_FRAMES)) - set(rx.seqs))
        dups = sorted(s for s, c in rx.seqs.items() if c > 1)
        assert not missing and not dups, (
            f"{len(missing)} lost (first {missing[:10]}), {len(dups)} duplicated (first {dups[:10]}); "
            f"receiving socket dropped {rx.socket_drops()}\nA errors:\n{a.do('show', 'errors')}\n"
            f"B errors:\n{b.do('show', 'errors')}")
        assert set(rx.seqs) == set(range(STREAM_FRAMES))
        # nothing the SAs dropped either
        for r in rows:
            assert not any((r.get("drops") or {}).values()), r
    assert t.rc == [0, 0]
