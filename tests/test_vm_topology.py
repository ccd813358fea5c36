"""Guests and memif processes in real topologies: VLANs, two guests, a kernel host.

- A QEMU guest on a vhost-user port in VLAN 10 of a bridge that also has a host (a
  network namespace behind an afpacket veth) in VLAN 10 and one in VLAN 20, all three in
  one IP subnet: the guest reaches the VLAN 10 host, 3 pings out of 3 both ways, and
  never the VLAN 20 host -- only VLAN separation stops it.
- Two QEMU guests on two vhost-user ports ping each other through the bridge.
- A memif client in a process of its own (fastpath.memif.client.MemifClient, run from
  this file) <-> fastpath <-> a kernel host in a namespace: the client ARPs for and
  pings the host and gets the kernel's replies; the host pings the client, which
  answers; then the process is killed (SIGKILL) and a new one reconnects.

The guest helpers (kernel and initramfs cache, the Guest class) are test_vhost.py's. The
guests need root, qemu-system-x86, a Debian kernel image and busybox-static; everything
needs network namespaces (scripts/setup.sh installs it all).
"""
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from netns import Netns, unique_name, veth_pair
from fastpath.switch import Switch
from test_vhost import Guest, icmp_ping, running, vm, vstats, wait_for

needs_netns = pytest.mark.root
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SUBNET = "192.0.2"
GUEST_IP, HOST10_IP, HOST20_IP = f"{SUBNET}.2", f"{SUBNET}.1", f"{SUBNET}.3"
GUEST_MAC = "52:54:00:00:0a:02"
HOST10_MAC, HOST20_MAC = "02:00:00:00:0a:01", "02:00:00:00:14:03"
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4


@pytest.fixture
def workdir():
    # short: QEMU's and fastpath's Unix socket paths must fit in 108 bytes
    d = tempfile.mkdtemp(prefix="fpvt")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def received(line_prefix, guest):
    """The number after `line_prefix` on the guest's console (the script prints it)."""
    for ln in guest.lines:
        m = re.search(re.escape(line_prefix) + r" (\d+)", ln)
        if m:
            return int(m.group(1))
    return None


def ping_line(marker, dst, count=3, deadline=20):
    """Guest script lines: ping dst and print `marker N` with N replies received (0 when
    ping gave no summary: busybox's ping exits at once when sendto() fails)."""
    return (f"ping -c {count} -w {deadline} {dst} > /tmp/ping.out 2>&1\n"
            "cat /tmp/ping.out\n"
            "n=$(sed -n 's/.* \\([0-9][0-9]*\\) packets received.*/\\1/p' /tmp/ping.out)\n"
            f"echo \"{marker} ${{n:-0}}\"\n")


def guest_net(ip):
    return f"ip link set lo up\nip link set eth0 up\nip addr add {ip}/24 dev eth0\n"


class Sniffer:
    """Source MACs of every frame arriving at ifname inside namespace ns (a thread)."""

    def __init__(self, ns, ifname):
        with ns.entered():
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.2)
        self.sources = []
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            if addr[2] != PACKET_OUTGOING and len(data) >= 12:
                self.sources.append(":".join(f"{b:02x}" for b in data[6:12]))

    def count(self, mac):
        return sum(s == mac for s in list(self.sources))

    def close(self):
        self._stop = True
        self._t.join(2)
        self.sock.close()


# ---------------------------------------------------------------- a guest in VLAN 10

@vm
@needs_netns
def test_guest_in_vlan10_reaches_vlan10_host_only(workdir):
    """Bridge br0: the guest's vhost-user port and host h10's veth are access ports of VLAN
    10, host h20's veth of VLAN 20; all three in 192.0.2.0/24. The guest pings h10 3/3 and
    h10 pings it 3/3; the guest's pings to h20 and h20's to the guest all go unanswered,
    no frame of the guest's reaches h20 (nor leaves the VLAN 20 port) and h20 never
    resolves the guest's address."""
    script = (guest_net(GUEST_IP) + ping_line("FP-VLAN10", HOST10_IP)
              + ping_line("FP-VLAN20", HOST20_IP, count=3, deadline=4)
              + "echo FP-DONE\nsleep 120\n")
    a10, b10, a20, b20 = (unique_name(p) for p in ("fpta", "fptb", "fptc", "fptd"))
    sock = f"{workdir}/vm.sock"
    t0 = time.monotonic()
    with Netns() as dp, Netns() as h10, Netns() as h20, \
            veth_pair(a10, b10, dp, h10), veth_pair(a20, b20, dp, h20):
        for ns, ifname, mac, ip in ((h10, b10, HOST10_MAC, HOST10_IP), (h20, b20, HOST20_MAC, HOST20_IP)):
            ns.run(f"ip link set {ifname} address {mac}")
            ns.run(f"ip addr add {ip}/24 dev {ifname}")
        sw = Switch(n_buffers=4096)
        sniff10 = sniff20 = None
        try:
            sw.add_br("br0")
            with dp.entered():
                sw.add_port("br0", a10, type="afpacket", tag=10)
                sw.add_port("br0", a20, type="afpacket", tag=20)
            sw.add_port("br0", "vhu0", type="vhost-user", tag=10, **{"options:vhost-socket": sock})
            sniff10, sniff20 = Sniffer(h10, b10), Sniffer(h20, b20)
            with running(sw):
                # the guest is stopped while the switch still runs: QEMU's shutdown asks the
                # backend for the ring state (GET_VRING_BASE) and waits for the answer
                g = Guest(workdir, sock, script, mac=GUEST_MAC).start()
                try:
                    assert g.wait_line("FP-DONE", timeout=90), g.console()
                    booted = time.monotonic() - t0
                    assert received("FP-VLAN10", g) == 3, g.console()
                    assert received("FP-VLAN20", g) == 0, g.console()
                    assert icmp_ping(h10, GUEST_IP, count=3) == 3
                    assert icmp_ping(h20, GUEST_IP, count=2, timeout=1.0) == 0
                    s = vstats(sw)
                    assert s["vhost_running"] == 1 and s["rx_drops"] == 0, s
                    rows = {r["name"]: r for r in sw.interface_stats()}
                    # nothing at all left through the VLAN 20 port: h20 is alone in its VLAN
                    assert rows[a20]["tx_packets"] == 0, rows[a20]
                    assert rows[a20]["rx_packets"] >= 2, rows[a20]     # h20's ARP requests came in
                    fdb = {(r["mac"], r["vlan"]): r["port"] for r in sw.fdb_rows("br0")}
                    assert fdb.get((GUEST_MAC, 10)) == "vhu0" and fdb.get((HOST10_MAC, 10)) == a10, fdb
                    assert fdb.get((HOST20_MAC, 20)) == a20 and (GUEST_MAC, 20) not in fdb, fdb
                finally:
                    g.stop()
                assert wait_for(lambda: vstats(sw)["vhost_connected"] == 0)
        finally:
            for s_ in (sniff10, sniff20):
                if s_:
                    s_.close()
            sw.close()
        assert sniff10.count(GUEST_MAC) >= 4                 # ARP + 3 echo replies at least
        assert sniff20.count(GUEST_MAC) == 0, sniff20.sources
        neigh = h20.run(f"ip neigh show {GUEST_IP}").stdout
        assert "lladdr" not in neigh, neigh                  # h20 never learned the guest's MAC
        print(f"guest done after {booted:.1f} s, whole test {time.monotonic() - t0:.1f} s")


# ---------------------------------------------------------------- two guests

@vm
def test_two_guests_ping_each_other(workdir):
    """Two guests, each on a vhost-user port of VLAN 10, boot at the same time; each waits
    for the other to answer, then pings it 3/3 through the switch."""
    ips = {"g1": f"{SUBNET}.11", "g2": f"{SUBNET}.12"}
    macs = {"g1": "52:54:00:00:0b:01", "g2": "52:54:00:00:0b:02"}
    peer = {"g1": "g2", "g2": "g1"}
    t0 = time.monotonic()
    sw = Switch(n_buffers=4096)
    guests = {}
    try:
        sw.add_br("br0")
        for name in ("g1", "g2"):
            os.makedirs(f"{workdir}/{name}")
            sw.add_port("br0", f"vhu-{name}", type="vhost-user", tag=10,
                        **{"options:vhost-socket": f"{workdir}/{name}.sock"})
        with running(sw):
            try:
                for name in ("g1", "g2"):
                    other = ips[peer[name]]
                    script = (guest_net(ips[name])
                              + "i=0\nwhile [ $i -lt 60 ]; do\n"
                              + f"  ping -c 1 -W 1 {other} >/dev/null 2>&1 && break\n  i=$((i+1))\ndone\n"
                              + ping_line("FP-PEER", other) + "echo FP-DONE\nsleep 120\n")
                    guests[name] = Guest(f"{workdir}/{name}", f"{workdir}/{name}.sock", script,
                                         mac=macs[name]).start()
                for name, g in guests.items():
                    assert g.wait_line("FP-DONE", timeout=120), f"{name}:\n{g.console()}"
                    assert received("FP-PEER", g) == 3, f"{name}:\n{g.console()}"
                for name in ("g1", "g2"):
                    s = vstats(sw, f"vhu-{name}")
                    assert s["vhost_running"] == 1 and s["rx_packets"] >= 4 and s["tx_packets"] >= 4, s
                    assert s["rx_drops"] == 0 and s["vhost_bad_requests"] == 0, s
                fdb = {r["mac"]: r["port"] for r in sw.fdb_rows("br0")}
                assert fdb.get(macs["g1"]) == "vhu-g1" and fdb.get(macs["g2"]) == "vhu-g2", fdb
                booted = time.monotonic() - t0
            finally:
                for g in guests.values():       # while the switch runs (see above)
                    g.stop()
    finally:
        sw.close()
    print(f"both guests done after {booted:.1f} s, whole test {time.monotonic() - t0:.1f} s")


# ---------------------------------------------------------------- a memif process and a kernel host

PEER_IP, PEER_MAC = f"{SUBNET}.20", "02:00:00:00:0c:14"
HOST_IP, HOST_MAC = f"{SUBNET}.1", "02:00:00:00:0c:01"


def memif_peer(sock, my_ip, my_mac, host_ip, pings=3):
    """The memif client process: connect (slave), ARP for host_ip and ping it `pings`
    times, print the result as a JSON line; then answer ARP requests and echo requests
    for my_ip until standard input closes, and print what it answered."""
    from scapy.layers.inet import ICMP, IP
    from scapy.layers.l2 import ARP, Ether
    from scapy.packet import Raw
    from fastpath.memif.client import MemifClient

    def out(**kw):
        print(json.dumps(kw), flush=True)

    def pad(p):
        b = bytes(p)
        return b + bytes(max(0, 60 - len(b)))

    c = MemifClient(sock, id=0, name="vm-topology-peer", timeout=10)
    out(event="connected", pid=os.getpid())
    ident = os.getpid() & 0xffff
    host_mac, arp_tries, next_arp = None, 0, 0.0
    seq, sent_at, replies, done = 0, None, 0, False
    answered = {"arp": 0, "icmp": 0}
    deadline = time.monotonic() + 30
    stdin_open = True
    while stdin_open:
        now = time.monotonic()
        if not done:
            if host_mac is None and now >= next_arp:
                c.send([pad(Ether(src=my_mac, dst="ff:ff:ff:ff:ff:ff") /
                            ARP(op=1, hwsrc=my_mac, psrc=my_ip, pdst=host_ip))])
                arp_tries += 1
                next_arp = now + 0.5
            elif host_mac is not None and (sent_at is None or now - sent_at > 2.0):
                if seq == pings:
                    done = True
                else:
                    seq += 1
                    sent_at = now
                    c.send([pad(Ether(src=my_mac, dst=host_mac) / IP(src=my_ip, dst=host_ip) /
                                ICMP(type=8, id=ident, seq=seq) / Raw(b"fastpath-memif-peer"))])
            if done or now > deadline:
                done = True
                out(event="result", host_mac=host_mac, arp_tries=arp_tries, echo_requests=seq,
                    echo_replies=replies)
        for f in c.recv(timeout=0.05):
            try:
                e = Ether(f)
            except Exception:
                continue
            if ARP in e:
                a = e[ARP]
                if a.op == 1 and a.pdst == my_ip:
                    c.send([pad(Ether(src=my_mac, dst=a.hwsrc) /
                                ARP(op=2, hwsrc=my_mac, psrc=my_ip, hwdst=a.hwsrc, pdst=a.psrc))])
                    answered["arp"] += 1
                elif a.op == 2 and a.psrc == host_ip and a.pdst == my_ip and host_mac is None:
                    host_mac = a.hwsrc
            elif IP in e and ICMP in e and e[IP].dst == my_ip:
                ip, icmp = e[IP], e[ICMP]
                if icmp.type == 8:
                    c.send([pad(Ether(src=my_mac, dst=e.src) / IP(src=my_ip, dst=ip.src) /
                                ICMP(type=0, id=icmp.id, seq=icmp.seq) / icmp.payload)])
                    answered["icmp"] += 1
                elif icmp.type == 0 and icmp.id == ident and ip.src == host_ip and icmp.seq == seq \
                        and sent_at is not None:
                    replies += 1
                    sent_at = None if seq < pings else 0.0    # next request at once
                    if seq == pings:
                        done = True
                        out(event="result", host_mac=host_mac, arp_tries=arp_tries, echo_requests=seq,
                            echo_replies=replies)
                        deadline = float("inf")
        if select.select([sys.stdin], [], [], 0)[0] and not sys.stdin.readline():
            stdin_open = False
    out(event="answered", **answered, stats=c.stats())
    c.close()
    return 0


class PeerProcess:
    """memif_peer in a child process (`python tests/test_vm_topology.py memif-peer ...`)."""

    def __init__(self, sock):
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "memif-peer", sock,
                                      PEER_IP, PEER_MAC, HOST_IP],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO, env=env)

    def event(self, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if select.select([self.proc.stdout], [], [], max(0.0, end - time.monotonic()))[0]:
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.strip():
                    return json.loads(line)
        raise AssertionError(f"no event from the memif peer (rc {self.proc.poll()}): {self.proc.stderr.read()}"
                             if self.proc.poll() is not None else "no event from the memif peer")

    def finish(self):
        self.proc.stdin.close()
        ev = self.event(15)
        self.proc.wait(10)
        return ev

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f and not f.closed:
                f.close()


@needs_netns
def test_memif_process_to_kernel_host_and_back(workdir):
    """A memif client process <-> memif port (VLAN 10) <-> afpacket veth (VLAN 10) <-> a
    kernel host: the client resolves and pings the host (the kernel replies), the host
    pings the client 3/3; killed with SIGKILL, the port sees the peer gone, and a new
    process connects and both directions work again."""
    a, b = unique_name("fpma"), unique_name("fpmb")
    sock = f"{workdir}/memif.sock"
    t0 = time.monotonic()
    with Netns() as dp, Netns() as host, veth_pair(a, b, dp, host):
        host.run(f"ip link set {b} address {HOST_MAC}")
        host.run(f"ip addr add {HOST_IP}/24 dev {b}")
        sw = Switch(n_buffers=4096)
        peers = []
        try:
            sw.add_br("br0")
            with dp.entered():
                sw.add_port("br0", a, type="afpacket", tag=10)
            sw.add_port("br0", "m0", type="memif", tag=10, **{"options:memif-socket": sock})
            with running(sw):
                def st():
                    return next(r for r in sw.interface_stats() if r["name"] == "m0")

                for round_ in range(2):
                    p = PeerProcess(sock)
                    peers.append(p)
                    assert p.event()["event"] == "connected"
                    assert wait_for(lambda: st()["memif_connected"] == 1, 5)
                    r = p.event()
                    assert r["event"] == "result" and r["host_mac"] == HOST_MAC, r
                    assert r["echo_requests"] == r["echo_replies"] == 3, r
                    assert icmp_ping(host, PEER_IP, count=3) == 3
                    s = st()
                    assert s["rx_packets"] >= 4 and s["tx_packets"] >= 4 and s["rx_drops"] == 0, s
                    if round_ == 0:
                        p.kill()                              # dies without a word
                        assert wait_for(lambda: st()["memif_connected"] == 0, 5)
                        assert st()["memif_disconnects"] == 1
                answered = p.finish()
                assert answered["event"] == "answered" and answered["icmp"] == 3, answered
                assert p.proc.returncode == 0
                assert wait_for(lambda: st()["memif_connected"] == 0, 5)
                s = st()
                assert s["memif_connects"] == 2 and s["memif_disconnects"] == 2, s
                fdb = {r["mac"]: r["port"] for r in sw.fdb_rows("br0")}
                assert fdb.get(PEER_MAC) == "m0" and fdb.get(HOST_MAC) == a, fdb
        finally:
            for p in peers:
                p.kill()
            sw.close()
    print(f"memif process <-> kernel host, twice, in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "memif-peer":
        sys.exit(memif_peer(*sys.argv[2:6]))
    sys.exit("usage: test_vm_topology.py memif-peer SOCKET MY_IP MY_MAC HOST_IP")
