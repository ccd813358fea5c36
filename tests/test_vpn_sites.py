"""Two sites for real: two fastpath daemons in their own namespaces, hosts on VLANs 10
and 20 at each site, uplinks into an underlay namespace (a Linux bridge). The sites bring
up IPsec with a PSK; VLAN 10 reaches VLAN 10 across the VPN and never VLAN 20, and a
capture on the underlay sees only ARP, the handshake and ESP."""
import json
import os
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.utils import rdpcap

from fastpath.demo import ping
from netns import Netns, can_run, veth_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not can_run(), reason="needs root")


class Site:
    def __init__(self, ns, sock, log):
        self.ns, self.sock = ns, sock
        self.logf = open(log, "w")
        self.proc = ns.popen([sys.executable, "-m", "fastpath.cli", "run", "--control", sock,
                              "--buffers", "4096"], stdout=self.logf, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 20
        while not (os.path.exists(sock) and self.ctl("version").returncode == 0):
            assert self.proc.poll() is None and time.monotonic() < deadline, open(log).read()
            time.sleep(0.05)

    def ctl(self, *argv, fmt=None):
        cmd = [sys.executable, "-m", "fastpath.ctl", "--control", self.sock]
        if fmt:
            cmd += ["--format", fmt]
        return subprocess.run(cmd + list(argv), capture_output=True, text=True, cwd=REPO, timeout=30)

    def do(self, *argv, fmt=None):
        r = self.ctl(*argv, fmt=fmt)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if fmt == "json" else r.stdout

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.logf.close()
        return self.proc.returncode


def sas_up(site):
    return any(r["direction"] == "out" for r in site.do("show", "sa", fmt="json"))


def test_two_sites_over_ipsec(tmp_path):
    with Netns("fsa") as swa, Netns("fsb") as swb, Netns("fun") as under, \
            Netns("fa1") as ha10, Netns("fa2") as ha20, Netns("fb1") as hb10, Netns("fb2") as hb20:
        under.run("ip link add ubr type bridge")
        under.run("ip link set ubr up")
        with veth_pair("upa", "ua", swa, under), veth_pair("upb", "ub", swb, under), \
                veth_pair("pa10", "hv", swa, ha10), veth_pair("pa20", "hv", swa, ha20), \
                veth_pair("pb10", "hv", swb, hb10), veth_pair("pb20", "hv", swb, hb20):
            under.run("ip link set ua master ubr")
            under.run("ip link set ub master ubr")
            for ns, ip in ((ha10, "10.10.0.1"), (ha20, "10.10.0.11"), (hb10, "10.10.0.2"), (hb20, "10.10.0.12")):
                ns.run(f"ip addr add {ip}/24 dev hv")
            gateways = {swa.run("cat /sys/class/net/upa/address").stdout.strip(),
                        swb.run("cat /sys/class/net/upb/address").stdout.strip()}
            cap = tmp_path / "underlay.pcap"
            dump = under.popen(["tcpdump", "-i", "ubr", "-U", "-w", str(cap)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            a = Site(swa, str(tmp_path / "a.sock"), tmp_path / "a.log")
            b = Site(swb, str(tmp_path / "b.sock"), tmp_path / "b.log")
            try:
                for site, me, peer, side in ((a, "192.0.2.1", "192.0.2.2", "a"), (b, "192.0.2.2", "192.0.2.1", "b")):
                    site.do("add-ip", f"up{side}", f"{me}/24")
                    site.do("add-br", "br0")
                    site.do("add-port", "br0", f"p{side}10", "tag=10")
                    site.do("add-port", "br0", f"p{side}20", "tag=20")
                    site.do("add-port", "br0", "vpn0", "type=vxlan", f"options:remote_ip={peer}",
                            f"options:local_ip={me}", "options:key=100", "options:psk=two sites, one secret")
                deadline = time.monotonic() + 20
                while not (sas_up(a) and sas_up(b)):
                    assert time.monotonic() < deadline, "SAs did not come up:\n" + a.do("show", "errors")
                    time.sleep(0.2)
                assert ping(ha10.name, "10.10.0.2", count=3) == 3           # VLAN 10 -> VLAN 10
                assert ping(ha20.name, "10.10.0.12", count=3) == 3          # VLAN 20 -> VLAN 20
                assert ping(ha10.name, "10.10.0.12", count=2, timeout=0.5) == 0   # never across VLANs
                assert ping(hb10.name, "10.10.0.11", count=2, timeout=0.5) == 0
                rows = a.do("fdb/show", "br0")
                assert "vpn0" in a.do("show") and len(rows.splitlines()) >= 3
                sa = [r for r in a.do("show", "sa", fmt="json") if r["direction"] == "in" and r["packets"]]
                assert sa and sa[0]["replay_window"] >= 64
            finally:
                rc = [a.stop(), b.stop()]
                time.sleep(0.3)
                dump.terminate()
                dump.wait(10)
            assert rc == [0, 0]
            # what the gateways put on the underlay (the Linux bridge there speaks IGMP itself)
            frames = [p for p in (Ether(bytes(p)) for p in rdpcap(str(cap))) if p.src in gateways]
            assert frames
            esp = 0
            for p in frames:
                if ARP in p:
                    continue
                assert IP in p, p.summary()
                assert p[IP].proto == 50 or (UDP in p and p[UDP].dport == 4500), p.summary()
                esp += p[IP].proto == 50
            assert esp >= 10
