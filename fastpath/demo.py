"""fastpath demo: the main job. A real topology of network namespaces (hosts on two
VLANs and a trunk, and a second site across an IPsec VPN keyed by IKEv2), the daemons
driven by fastpathctl, traffic, what happened, cleanup."""
import contextlib
import ctypes
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


log = logging.getLogger("fastpath")


CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_VLAN_VALID = 0x10
PACKET_OUTGOING = 4
BCAST = b"\xff" * 6


def _setns(fd):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


@contextlib.contextmanager
def in_netns(name):
    """Run the block with this thread in network namespace `name`: sockets made there
    stay in it."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _mac(text):
    return bytes(int(x, 16) for x in text.split(":"))


def _ip(text):
    return socket.inet_aton(text)


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def _icmp_echo(ident, seq, payload=b"fastpath demo"):
    hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, _csum(hdr + payload), ident, seq) + payload


_ping_ids = itertools.count()


def ping(ns, dst, count=3, timeout=1.0, interval=0.1):
    """ICMP echo from inside namespace ns (a raw socket; no ping binary needed).
    Returns the number of replies."""
    with in_netns(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = (os.getpid() * 64 + next(_ping_ids)) & 0xffff
    got = 0
    try:
        for seq in range(1, count + 1):
            s.sendto(_icmp_echo(ident, seq), (dst, 0))
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                s.settimeout(left)
                try:
                    data, addr = s.recvfrom(2048)
                except socket.timeout:
                    break
                ihl = (data[0] & 0xf) * 4
                if addr[0] != dst or len(data) < ihl + 8:
                    continue
                typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if typ == 0 and rid == ident and rseq == seq:
                    got += 1
                    time.sleep(interval)
                    break
    finally:
        s.close()
    return got


class TrunkHost:
    """The host on the trunk port: no VLAN subinterfaces (no 8021q module needed), it
    speaks tagged Ethernet through an AF_PACKET socket: ARP, then an ICMP echo."""

    def __init__(self, ns, ifname, mac):
        self.ns, self.ifname, self.mac = ns, ifname, _mac(mac)

    def _socket(self):
        with in_netns(self.ns):
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.bind((self.ifname, 0))
        s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        return s

    @staticmethod
    def _recv(s, deadline):
        """Next received (vlan or None, frame without tag) or None at the deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            s.settimeout(left)
            try:
                data, anc, _flags, addr = s.recvmsg(65536, socket.CMSG_SPACE(20))
            except socket.timeout:
                return None
            if addr[2] == PACKET_OUTGOING:
                continue
            vlan = None
            for level, typ, cdata in anc:
                if level == SOL_PACKET and typ == PACKET_AUXDATA and len(cdata) >= 20:
                    status, _, _, _, _, tci, _ = struct.unpack("IIIHHHH", cdata[:20])
                    if status & TP_STATUS_VLAN_VALID:
                        vlan = tci & 0xfff
            if vlan is None and len(data) >= 18 and data[12:14] == b"\x81\x00":
                vlan = struct.unpack("!H", data[14:16])[0] & 0xfff
                data = data[:12] + data[16:]
            return vlan, data

    def _send(self, s, dst, vlan, ethertype, payload):
        frame = dst + self.mac + struct.pack("!HHH", 0x8100, vlan, ethertype) + payload
        s.send(frame.ljust(64, b"\0"))

    def ping(self, vlan, src_ip, dst_ip, timeout=1.0):
        """ARP for dst_ip then echo it, all tagged with `vlan`; True if it answered."""
        s = self._socket()
        try:
            arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, self.mac, _ip(src_ip),
                              b"\0" * 6, _ip(dst_ip))
            self._send(s, BCAST, vlan, 0x0806, arp)
            deadline = time.monotonic() + timeout
            peer = None
            while peer is None:
                r = self._recv(s, deadline)
                if r is None:
                    return False
                rvlan, f = r
                if rvlan == vlan and f[12:14] == b"\x08\x06" and len(f) >= 42:
                    op, sha, spa = struct.unpack("!H6s4s", f[20:32])
                    if op == 2 and spa == _ip(dst_ip) and f[0:6] == self.mac:
                        peer = sha
            ident, seq = 0x4242, vlan
            icmp = _icmp_echo(ident, seq)
            iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 1, 0, 64, 1, 0,
                              _ip(src_ip), _ip(dst_ip))
            iph = iph[:10] + struct.pack("!H", _csum(iph)) + iph[12:]
            self._send(s, peer, vlan, 0x0800, iph + icmp)
            deadline = time.monotonic() + timeout
            while True:
                r = self._recv(s, deadline)
                if r is None:
                    return False
                rvlan, f = r
                if rvlan != vlan or f[12:14] != b"\x08\x00":
                    continue
                ihl = (f[14] & 0xf) * 4
                icmp_r = f[14 + ihl:14 + ihl + 8]
                if f[26:30] == _ip(dst_ip) and len(icmp_r) == 8:
                    typ, _, _, rid, rseq = struct.unpack("!BBHHH", icmp_r)
                    if typ == 0 and rid == ident and rseq == seq:
                        return True
        finally:
            s.close()


def tcp_transfer(src_ns, dst_ns, dst_ip, size=64 << 20, port=5201, timeout=30.0, write_size=None):
    """A TCP transfer with checked content from namespace src_ns to dst_ip (IPv4 or IPv6)
    in dst_ns, size a multiple of 1 MiB: (bytes that arrived, 0 if any was wrong; seconds).
    Both ends are sockets of this process, each made inside its namespace. write_size:
    the sender writes that many bytes at a time (default: 1 MiB)."""
    data = os.urandom(1 << 20)
    family = socket.AF_INET6 if ":" in dst_ip else socket.AF_INET
    with in_netns(dst_ns):
        srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((dst_ip, port))
    srv.listen(1)
    srv.settimeout(timeout)
    got = {"bytes": 0, "ok": True}

    def serve():
        try:
            c, _ = srv.accept()
        except OSError:
            return
        c.settimeout(timeout)
        pos = 0
        with c:
            while True:
                try:
                    d = c.recv(1 << 20)
                except OSError:         # timed out: a stalled transfer, reported short
                    break
                if not d:
                    break
                # the stream repeats `data`: check every byte where it should be
                off = pos % len(data)
                while d:
                    k = min(len(d), len(data) - off)
                    got["ok"] &= d[:k] == data[off:off + k]
                    d, pos, off = d[k:], pos + k, 0
        got["bytes"] = pos

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    with in_netns(src_ns):
        cli = socket.socket(family, socket.SOCK_STREAM)
    t0 = time.monotonic()
    try:
        cli.settimeout(timeout)
        cli.connect((dst_ip, port))
        step = write_size or len(data)
        for _ in range(size // len(data)):
            for off in range(0, len(data), step):
                cli.sendall(data[off:off + step])
        cli.shutdown(socket.SHUT_WR)
        th.join(timeout)
    finally:
        cli.close()
        srv.close()
    secs = time.monotonic() - t0
    return (got["bytes"] if got["ok"] else 0), secs


def _sh(*cmd, check=True):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r


class UplinkSniffer:
    """Every frame on an interface in a namespace, both directions (a packet socket that
    sees what fastpath's own sockets send and receive there)."""

    def __init__(self, ns, ifname):
        with in_netns(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            self.sock.bind((ifname, 0))
        self.sock.settimeout(0.2)
        self.frames = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                self.frames.append(self.sock.recv(65536))
            except socket.timeout:
                pass

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def underlay_kinds(frames):
    """({"ARP"|"IKE"|"ESP": count}, frames of any other kind)"""
    kinds, other = {}, 0
    for f in frames:
        kind = None
        if f[12:14] == b"\x08\x06":
            kind = "ARP"
        elif f[12:14] == b"\x08\x00" and len(f) >= 38:
            at = 14 + (f[14] & 0xf) * 4
            if f[23] == 50:
                kind = "ESP"
            elif f[23] == 17 and struct.unpack("!H", f[at + 2:at + 4])[0] in (500, 4500):
                kind = "IKE"
        if kind:
            kinds[kind] = kinds.get(kind, 0) + 1
        else:
            other += 1
    return kinds, other


class Demo:
    HOSTS = {   # name: (vlan, ip, mac)
        "h1": (10, "192.0.2.1", "02:fd:00:00:00:01"),
        "h2": (10, "192.0.2.2", "02:fd:00:00:00:02"),
        "h3": (20, "192.0.2.3", "02:fd:00:00:00:03"),
    }
    REMOTE = {"hb": (10, "192.0.2.11", "02:fd:00:00:00:11")}    # at site B, behind the VPN
    UNDERLAY = {"a": "198.51.100.1", "b": "198.51.100.2"}       # the sites' uplinks
    PSK = "fastpath demo: a secret both sites share"
    TRUNK_MAC = "02:fd:00:00:00:04"
    TRUNK_IP = {10: "192.0.2.101", 20: "192.0.2.102", 30: "192.0.2.103"}

    def __init__(self, out=print):
        tag = f"fpd{os.getpid() % 100000}"
        self.sw_ns = f"{tag}-sw"
        self.ns = {h: f"{tag}-{h}" for h in ("h1", "h2", "h3", "trunk")}
        self.siteb_ns, self.hb_ns = f"{tag}-swb", f"{tag}-hb"
        self.created = []
        self.daemon = self.daemon_b = None
        self.tmp = tempfile.mkdtemp(prefix="fastpath-demo-")
        self.control = os.path.join(self.tmp, "fastpath.sock")
        self.daemon_log = os.path.join(self.tmp, "fastpath.log")
        self.control_b = os.path.join(self.tmp, "site-b.sock")
        self.daemon_b_log = os.path.join(self.tmp, "site-b.log")
        self.out = out
        pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [pkg_parent] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))

    # ---- topology ----

    def add_ns(self, name):
        _sh("ip", "netns", "add", name)
        self.created.append(name)
        for cmd in ("sysctl -qw net.ipv6.conf.all.disable_ipv6=1",
                    "sysctl -qw net.ipv6.conf.default.disable_ipv6=1", "ip link set lo up"):
            _sh("ip", "netns", "exec", name, *cmd.split())

    def build(self):
        self.add_ns(self.sw_ns)
        for h, ns in self.ns.items():
            self.add_ns(ns)
            sw_if = f"veth-{h}"
            _sh("ip", "link", "add", sw_if, "netns", self.sw_ns, "type", "veth",
                "peer", "name", "eth0", "netns", ns)
            mac = self.HOSTS[h][2] if h in self.HOSTS else self.TRUNK_MAC
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "address", mac)
            if h in self.HOSTS:
                _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{self.HOSTS[h][1]}/24", "dev", "eth0")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
            _sh("ip", "netns", "exec", self.sw_ns, "ip", "link", "set", sw_if, "up")

    def build_site_b(self):
        """Site B's switch and its VLAN 10 host; the sites' uplinks joined by a veth."""
        self.add_ns(self.siteb_ns)
        self.add_ns(self.hb_ns)
        _sh("ip", "link", "add", "up-a", "netns", self.sw_ns, "type", "veth",
            "peer", "name", "up-b", "netns", self.siteb_ns)
        _sh("ip", "link", "add", "veth-hb", "netns", self.siteb_ns, "type", "veth",
            "peer", "name", "eth0", "netns", self.hb_ns)
        _, ip, mac = self.REMOTE["hb"]
        _sh("ip", "netns", "exec", self.hb_ns, "ip", "link", "set", "eth0", "address", mac)
        _sh("ip", "netns", "exec", self.hb_ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        _sh("ip", "netns", "exec", self.hb_ns, "ip", "link", "set", "eth0", "up")
        for ns, ifs in ((self.sw_ns, ("up-a",)), (self.siteb_ns, ("up-b", "veth-hb"))):
            for i in ifs:
                _sh("ip", "netns", "exec", ns, "ip", "link", "set", i, "up")

    def configure_vpn(self):
        """Each site: its uplink's address and the tunnel to the other, keyed by IKEv2
        with a PSK (and TCP's MSS clamped to what fits in it: the hosts' MTU is 1500).
        Then wait for the ESP SAs; the seconds that took."""
        self.ctl("add-ip", "up-a", f"{self.UNDERLAY['a']}/24")
        self.ctl("add-port", "br0", "vpn0", "type=vxlan", f"options:remote_ip={self.UNDERLAY['b']}",
                 f"options:local_ip={self.UNDERLAY['a']}", "options:key=100", f"options:psk={self.PSK}",
                 "options:tcp_mss_clamp=auto")
        b = self.control_b
        self.ctl("add-ip", "up-b", f"{self.UNDERLAY['b']}/24", control=b)
        self.ctl("add-br", "br0", control=b)
        self.ctl("add-port", "br0", "veth-hb", f"tag={self.REMOTE['hb'][0]}", control=b)
        self.ctl("add-port", "br0", "vpn0", "type=vxlan", f"options:remote_ip={self.UNDERLAY['a']}",
                 f"options:local_ip={self.UNDERLAY['b']}", "options:key=100", f"options:psk={self.PSK}",
                 "options:tcp_mss_clamp=auto", control=b)
        t0 = time.monotonic()
        while not all(any(r["direction"] == "out" for r in
                          json.loads(self.ctl("--format", "json", "show", "sa", show=False, control=c)))
                      for c in (self.control, b)):
            if time.monotonic() - t0 > 20:
                raise RuntimeError("IKE brought up no SA within 20 s:\n" + self.log_text())
            time.sleep(0.1)
        return time.monotonic() - t0

    def start_daemon(self, ns=None, control=None, log_path=None):
        ns, control = ns or self.sw_ns, control or self.control
        logf = open(log_path or self.daemon_log, "w")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "fastpath.cli", "run",
             "--control", control], stdout=logf, stderr=subprocess.STDOUT, env=self.env)
        logf.close()
        if ns == self.sw_ns:
            self.daemon = proc
        else:
            self.daemon_b = proc
        from fastpath.ctl import NotRunning, request
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({proc.returncode}):\n" + self.log_text())
            try:
                request(["version"], path=control, timeout=2)
                return
            except NotRunning:
                if time.monotonic() > deadline:
                    raise RuntimeError("the daemon did not answer within 20 s:\n" + self.log_text())
                time.sleep(0.05)

    def log_text(self):
        try:
            with open(self.daemon_log) as f:
                return f.read()
        except OSError:
            return ""

    def ctl(self, *argv, show=True, check=True, control=None):
        """Run `fastpathctl ARGV` (the real client, as a subprocess); at site B with
        control=self.control_b."""
        if show:
            self.out(("(site B) " if control else "") + "$ fastpathctl "
                     + " ".join(a if " " not in a else repr(a) for a in argv))
        r = subprocess.run([sys.executable, "-m", "fastpath.ctl", "--control", control or self.control, *argv],
                           capture_output=True, text=True, env=self.env)
        if check and r.returncode != 0:
            raise RuntimeError(f"fastpathctl {' '.join(argv)}: {r.stderr.strip()}")
        return r.stdout.rstrip("\n")

    def stop_daemon(self):
        """Stop both sites' daemons; site A's exit status, or the first bad one."""
        rcs = []
        for proc in (self.daemon, self.daemon_b):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            rcs.append(proc.returncode)
        self.daemon = self.daemon_b = None
        return next((rc for rc in rcs if rc != 0), rcs[0]) if rcs else None

    def cleanup(self):
        try:
            self.stop_daemon()
        finally:
            for ns in reversed(self.created):
                _sh("ip", "netns", "del", ns, check=False)
            self.created = []
            for f in os.listdir(self.tmp):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.tmp, f))
            with contextlib.suppress(OSError):
                os.rmdir(self.tmp)

    # ---- traffic ----

    def probes(self):
        """[(vlan label, source, destination, dst ip, expected, function)]"""
        t = TrunkHost(self.ns["trunk"], "eth0", self.TRUNK_MAC)
        H = self.HOSTS

        def host(src, dst):
            return lambda: ping(self.ns[src], {**H, **self.REMOTE}[dst][1], count=3) > 0

        def trunk(vlan, dst):
            return lambda: t.ping(vlan, self.TRUNK_IP[vlan], H[dst][1])

        return [
            ("10", "h1", "h2", True, host("h1", "h2")),
            ("10 VPN", "h1", "hb", True, host("h1", "hb")),
            ("10 VPN", "h2", "hb", True, host("h2", "hb")),
            ("20->10", "h3", "hb", False, host("h3", "hb")),
            ("10", "h2", "h1", True, host("h2", "h1")),
            ("10", "trunk.10", "h1", True, trunk(10, "h1")),
            ("10", "trunk.10", "h2", True, trunk(10, "h2")),
            ("20", "trunk.20", "h3", True, trunk(20, "h3")),
            ("10->20", "h1", "h3", False, host("h1", "h3")),
            ("20->10", "h3", "h2", False, host("h3", "h2")),
            ("10", "trunk.10", "h3", False, trunk(10, "h3")),
            ("20", "trunk.20", "h1", False, trunk(20, "h1")),
            ("30", "trunk.30", "h1", False, trunk(30, "h1")),
        ]

    def run_probes(self):
        probes = self.probes()
        results = [None] * len(probes)

        def go(i, fn):
            try:
                results[i] = fn()
            except Exception as e:                     # reported, counted as a failure
                results[i] = e

        threads = [threading.Thread(target=go, args=(i, p[4]), daemon=True) for i, p in enumerate(probes)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(15)
        return [(p[0], p[1], p[2], p[3], results[i]) for i, p in enumerate(probes)]

    def trunk_capture(self, path):
        """(vlan -> frames the switch sent to the trunk, frames sent untagged, frames
        whose tag is not the VLAN of the host that sent them)"""
        from fastpath.graph.pcap import read_pcap
        vlan_of = {_mac(m): v for v, _, m in self.HOSTS.values()}
        tx, untagged, wrong = {}, 0, 0
        for _, f in read_pcap(path):
            if f[6:12] == _mac(self.TRUNK_MAC):
                continue                                   # received from the trunk host
            if f[12:14] != b"\x81\x00":
                untagged += 1
                continue
            vlan = struct.unpack("!H", f[14:16])[0] & 0xfff
            tx[vlan] = tx.get(vlan, 0) + 1
            if f[6:12] in vlan_of and vlan_of[f[6:12]] != vlan:
                wrong += 1
        return tx, untagged, wrong

    # ---- the show ----

    def run(self):
        out = self.out
        out("fastpath demo: one switch, three access hosts on two VLANs, one trunk host; a second "
            "site over an IPsec VPN\n")
        out(f"  switch   namespace {self.sw_ns}: `fastpath run`, driven by fastpathctl")
        for h, (vlan, ip, mac) in self.HOSTS.items():
            out(f"  {h:<8} namespace {self.ns[h]}: {ip}/24 {mac}, access port veth-{h}, VLAN {vlan}")
        out(f"  trunk    namespace {self.ns['trunk']}: {self.TRUNK_MAC}, trunk port veth-trunk "
            "(VLANs 10,20), tagged frames over a raw socket")
        vlan, ip, mac = self.REMOTE["hb"]
        out(f"  site B   namespace {self.siteb_ns}: a second `fastpath run`; uplinks up-a {self.UNDERLAY['a']} "
            f"and up-b {self.UNDERLAY['b']} on one veth, a VXLAN tunnel in ESP keyed by IKEv2 (PSK)")
        out(f"  hb       namespace {self.hb_ns}: {ip}/24 {mac}, access port veth-hb at site B, VLAN {vlan}\n")
        t0 = time.monotonic()
        self.build()
        self.build_site_b()
        self.start_daemon()
        self.start_daemon(self.siteb_ns, self.control_b, self.daemon_b_log)
        self.ctl("add-br", "br0", "other_config:mac-aging-time=300")
        for h, (vlan, _, _) in self.HOSTS.items():
            self.ctl("add-port", "br0", f"veth-{h}", "type=afpacket", f"tag={vlan}")
        self.ctl("add-port", "br0", "veth-trunk", "type=afpacket", "trunks=10,20")
        underlay = UplinkSniffer(self.sw_ns, "up-a")         # (pcap is for bridge ports)
        ike_secs = self.configure_vpn()
        out(f"IKEv2 brought up the ESP SAs {ike_secs:.1f} s after site B's tunnel port was added")
        cap = os.path.join(self.tmp, "trunk.pcap")
        self.ctl("pcap", "start", "veth-trunk", cap)
        out(self.ctl("show", show=False))
        out("")

        out("sending traffic (ICMP echo through the switch; ARP first)...")
        results = self.run_probes()
        out(self.ctl("pcap", "stop", "veth-trunk"))
        out("")
        vsize = 16 << 20
        out(f"TCP from h1 to hb (VLAN 10, across the VPN), {vsize >> 20} MiB with checked content...")
        try:
            vmoved, vsecs = tcp_transfer(self.ns["h1"], self.hb_ns, self.REMOTE["hb"][1], vsize)
        except OSError as e:
            vmoved, vsecs = 0, 0.0
            out(f"  error: {e}")
        underlay.stop()
        out("")
        size = 64 << 20
        out(f"TCP from h1 to h2 (VLAN 10), {size >> 20} MiB with checked content, the veths' "
            "offloads as Linux sets them...")
        try:
            moved, secs = tcp_transfer(self.ns["h1"], self.ns["h2"], self.HOSTS["h2"][1], size)
        except OSError as e:
            moved, secs = 0, 0.0
            out(f"  error: {e}")
        out("")

        for cmd in (("fdb/show", "br0"), ("show", "interfaces"), ("show", "ike"), ("show", "sa"),
                    ("show", "runtime"), ("show", "errors")):
            out(f"$ fastpathctl {' '.join(cmd)}")
            out(self.ctl(*cmd, show=False))
            out("")

        ok = True
        out("Per-VLAN reachability (ping; trunk.N = the trunk host, tagged VLAN N):")
        out(f"  {'VLAN':<8}{'from':<10}{'to':<16}{'expected':<11}{'result':<11}")
        for vlan, src, dst, expected, got in results:
            if isinstance(got, Exception):
                res, good = f"error: {got}", False
            else:
                res, good = ("reachable" if got else "blocked"), got == expected
            ok &= good
            dst_ip = {**self.HOSTS, **self.REMOTE}[dst][1]
            dst_txt = f"{dst} {dst_ip}"
            out(f"  {vlan:<8}{src:<10}{dst_txt:<16}{'reachable' if expected else 'blocked':<11}"
                f"{res:<11}{'ok' if good else 'FAIL'}")
        good = moved == size
        ok &= good
        rate = f"{moved * 8 / secs / 1e9:.2f} Gbit/s" if good and secs else "-"
        out(f"  {'10':<8}{'h1':<10}{'h2 TCP':<16}{f'{size >> 20} MiB':<11}"
            f"{f'{moved >> 20} MiB':<11}{'ok' if good else 'FAIL'}  {rate}")
        good = vmoved == vsize
        ok &= good
        rate = f"{vmoved * 8 / vsecs / 1e9:.2f} Gbit/s" if good and vsecs else "-"
        out(f"  {'10 VPN':<8}{'h1':<10}{'hb TCP':<16}{f'{vsize >> 20} MiB':<11}"
            f"{f'{vmoved >> 20} MiB':<11}{'ok' if good else 'FAIL'}  {rate}")
        from fastpath.graph.pcap import read_pcap
        from fastpath.graph.trace import decode_ethernet
        kinds, clear = underlay_kinds(underlay.frames)
        good = clear == 0 and kinds.get("ESP", 0) > 0 and kinds.get("IKE", 0) > 0
        ok &= good
        out("\nThe underlay (up-a) carried: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
            + f"; anything else: {clear}  {'ok' if good else 'FAIL'}")
        frames = list(read_pcap(cap))
        out(f"\nThe trunk port's capture (first {min(8, len(frames))} of {len(frames)} frames, "
            "both directions):")
        for _, f in frames[:8]:
            out("  " + decode_ethernet(f))
        tx, untagged, wrong = self.trunk_capture(cap)
        tags = ", ".join(f"VLAN {v}: {n}" for v, n in sorted(tx.items())) or "none"
        good = untagged == 0 and wrong == 0 and set(tx) <= {10, 20} and tx.get(10, 0) > 0
        ok &= good
        out(f"Frames the switch sent to the trunk: {tags}; untagged: {untagged}; "
            f"wrong tag: {wrong}  {'ok' if good else 'FAIL'}")
        rc = self.stop_daemon()
        if rc != 0:
            out(f"the daemon exited with {rc}:\n{self.log_text()}")
            ok = False
        out(f"\n{'PASS' if ok else 'FAIL'}: demo finished in {time.monotonic() - t0:.1f} s")
        return 0 if ok else 1


def cmd_demo(args):
    if os.geteuid() != 0:
        print("fastpath demo: needs root (network namespaces, veth pairs, AF_PACKET)", file=sys.stderr)
        return 2
    try:
        import fastpath.afpacket.afpacket  # noqa: F401
    except ImportError as e:
        print(f"fastpath demo: the afpacket extension is missing ({e}); build it with "
              "`python setup.py build_ext --inplace`", file=sys.stderr)
        return 2
    if shutil.which("ip") is None:
        print("fastpath demo: needs `ip` (iproute2)", file=sys.stderr)
        return 2

    def terminate(signum, _frame):
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, terminate)
    demo = None
    try:
        demo = Demo()
        return demo.run()
    except KeyboardInterrupt:
        print("\nfastpath demo: interrupted, cleaning up", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as e:
        print(f"fastpath demo: {e}", file=sys.stderr)
        log_text = demo.log_text() if demo else ""
        if log_text:
            print("daemon log:\n" + log_text, file=sys.stderr)
        return 1
    finally:
        # a second Ctrl-C or SIGTERM must not cut the cleanup short
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if demo is not None:
                demo.cleanup()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)
