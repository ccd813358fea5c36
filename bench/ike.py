"""IKEv2 setup costs: handshakes per second, and the time from add-port to the first ESP.

    python3 -m bench.ike [--handshakes N] [--trials N] [--json OUT]      (the second part: root)

Handshakes: a full IKE_SA_INIT + IKE_AUTH (PSK, with its CHILD_SA) between two
fastpath.ike.sa.IkeSa objects in this process -- the initiator and the responder each
with an in-memory host that keeps what it sends, no sockets, no dataplane. The time spent
inside the responder's calls (respond_init and the IKE_AUTH request) gives handshakes per
second as responder; the initiator's calls, the same as initiator. Baseline, measured in
the same run: the Diffie-Hellman a responder cannot avoid, one ECP-256 key generation and
one exchange (`cryptography`, the group fastpath proposes first), per second; the ratio
says what share of a responder's time is that DH.

First ESP: two `fastpath run` gateways in namespaces of their own, uplinks on one veth
(192.0.2.1, .2), a VLAN 10 host behind site B sending a frame every millisecond into
the bridge (it floods into the tunnel). Site A gets its tunnel port first; the clock
starts when site B's `fastpathctl add-port` starts and stops when the first ESP frame
from site B arrives at site A's uplink. The tunnel is keyed by IKEv2 (options:psk) or,
the baseline in the same run, by manual keys (the same command path, no negotiation);
trials alternate, each after both ports were deleted. The ratio is IKE's time over manual
keys' time. (IKE's messages are answered on the control plane's 50 ms timer: about five
ticks for IKE_SA_INIT and IKE_AUTH.)
"""
import argparse
import contextlib
import json
import os
import socket
import statistics
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _p in (HERE, REPO, os.path.join(REPO, "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from fastpath.ike import message as m  # noqa: E402
from fastpath.ike.sa import ESTABLISHED, IkeConfig, IkeSa  # noqa: E402

A_IP, B_IP = "192.0.2.1", "192.0.2.2"
PSK = b"fastpath bench: an IKE secret"


# ---------------------------------------------------------------- handshakes in memory

class MemoryHost:
    """What an IkeSa asks of its tunnel, in memory: what it sends is kept in `sent`;
    anything it refuses is an error of the benchmark."""

    def __init__(self):
        self.sent = []
        self.children = 0
        self._spi = 0x1000

    def send(self, sa, data):
        self.sent.append(data)

    def new_spi(self):
        self._spi += 1
        return self._spi

    def first_contact(self, sa):
        return True

    def established(self, sa):
        pass

    def child_up(self, sa, child):
        self.children += 1

    def count(self, reason, text):
        raise RuntimeError(f"IKE refused: {reason}: {text}")

    def rx_packets(self, sa):
        return 0

    def child_rekeyed(self, *a):
        pass

    def child_down(self, *a, **kw):
        pass

    def ike_rekeyed(self, *a):
        pass

    def ike_down(self, sa):
        pass


def handshake(now=1000.0):
    """One IKE_SA_INIT + IKE_AUTH: (seconds in the initiator's calls, in the responder's)."""
    hi, hr = MemoryHost(), MemoryHost()
    ci, cr = IkeConfig(A_IP, B_IP, PSK), IkeConfig(B_IP, A_IP, PSK)
    clock = time.perf_counter
    t = clock()
    ini = IkeSa(ci, hi, True, now)
    ini.start(now)
    t_i = clock() - t
    req = hi.sent.pop()
    t = clock()
    resp = IkeSa.respond_init(cr, hr, req, m.decode(req), now, 500, 500)
    t_r = clock() - t
    rep = hr.sent.pop()
    t = clock()
    ini.receive(rep, m.decode(rep), now, 500, 500)
    t_i += clock() - t
    req = hi.sent.pop()
    t = clock()
    resp.receive(req, m.decode(req), now, 500, 500)
    t_r += clock() - t
    rep = hr.sent.pop()
    t = clock()
    ini.receive(rep, m.decode(rep), now, 500, 500)
    t_i += clock() - t
    if not (ini.state == resp.state == ESTABLISHED and hi.children == hr.children == 1):
        raise RuntimeError(f"handshake did not complete: {ini.state} / {resp.state}")
    return t_i, t_r


def handshakes(n):
    """n handshakes: {"handshakes", "responder_per_s", "initiator_per_s", "seconds"}."""
    ti = tr = 0.0
    t0 = time.perf_counter()
    for _ in range(n):
        a, b = handshake()
        ti, tr = ti + a, tr + b
    return {"handshakes": n, "responder_per_s": n / tr, "initiator_per_s": n / ti,
            "responder_ms": 1000 * tr / n, "initiator_ms": 1000 * ti / n,
            "seconds": time.perf_counter() - t0}


def ecdh_p256(n):
    """The DH a responder does per handshake, n times: one ECP-256 key generated and one
    exchange with a peer's public key. {"ops", "per_s"}."""
    from cryptography.hazmat.primitives.asymmetric import ec
    peer = ec.generate_private_key(ec.SECP256R1()).public_key()
    t0 = time.perf_counter()
    for _ in range(n):
        ec.generate_private_key(ec.SECP256R1()).exchange(ec.ECDH(), peer)
    return {"ops": n, "per_s": n / (time.perf_counter() - t0)}


# ---------------------------------------------------------------- add-port to first ESP (root)

class FirstEsp:
    """Two gateways and a VLAN 10 host behind site B, built once; trial(kind) times one
    add-port to first ESP (kind "ike" or "manual")."""

    def __init__(self, stack):
        import e2e
        from netns import Netns
        from trials import FastpathRun
        self.stack = stack
        ns_a, ns_b = stack.enter_context(Netns("fea")), stack.enter_context(Netns("feb"))
        self.host = stack.enter_context(Netns("feh"))
        self.gw = [FastpathRun(ns_a, 1, 0, "fastpath-ike-a.", name="site-a", timeout=60.0),
                   FastpathRun(ns_b, 1, 0, "fastpath-ike-b.", name="site-b", timeout=60.0)]
        up_a, up_b = e2e.link(stack, ns_a, ns_b, "feu")
        b_port, self.host_if = e2e.link(stack, ns_b, self.host, "feh")
        for gw, up, ip in zip(self.gw, (up_a, up_b), (A_IP, B_IP)):
            gw.start(stack)
            gw.ctl("add-ip", up, f"{ip}/24")
            gw.ctl("add-br", "br0")
            gw.ip, gw.up = ip, up
        self.gw[1].ctl("add-port", "br0", b_port, "type=afpacket", "tag=10")
        # ESP as site A receives it (fastpath's own sends bypass the qdisc: a packet socket
        # at site B would not see them)
        with ns_a.entered():
            self.sniff = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0800))
            self.sniff.bind((up_a, 0x0800))
        with self.host.entered():
            self.src = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
            self.src.bind((self.host_if, 0))
        self.sniff.settimeout(0.05)
        self.esp_at = []
        self.stopping = False
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._sniff, self._send)]
        for th in self.threads:
            th.start()
        stack.callback(self.stop)

    def stop(self):
        self.stopping = True
        for th in self.threads:
            th.join(5)
        self.sniff.close()
        self.src.close()

    def _sniff(self):
        while not self.stopping:
            try:
                f, addr = self.sniff.recvfrom(2048)
            except socket.timeout:
                continue
            if addr[2] != socket.PACKET_OUTGOING and len(f) > 23 and f[23] == 50:
                self.esp_at.append(time.monotonic())

    def _send(self):
        frame = b"\xff" * 6 + bytes.fromhex("02feed000001") + b"\x88\xb5" + b"first-esp".ljust(46, b"\0")
        while not self.stopping:
            self.src.send(frame)
            time.sleep(0.001)

    def _options(self, kind, site):
        gw, peer = self.gw[site], self.gw[1 - site]
        o = [f"options:remote_ip={peer.ip}", f"options:local_ip={gw.ip}", "options:key=100"]
        if kind == "ike":
            return o + [f"options:psk={PSK.decode()}"]
        spis, keys = ("0x1001", "0x2001"), ("0x" + "1a" * 20, "0x" + "2b" * 20)
        return o + [f"options:spi_out={spis[site]}", f"options:spi_in={spis[1 - site]}",
                    f"options:key_out={keys[site]}", f"options:key_in={keys[1 - site]}", "options:esn=true"]

    def trial(self, kind, timeout=20.0):
        """Seconds from site B's add-port to its first ESP frame."""
        a, b = self.gw
        for gw in (a, b):
            if "vpn0" in gw.ctl("show"):
                gw.ctl("del-port", "br0", "vpn0")
        time.sleep(0.3)                            # frames of the old SAs are gone
        a.ctl("add-port", "br0", "vpn0", "type=vxlan", *self._options(kind, 0))
        self.esp_at.clear()
        t0 = time.monotonic()
        b.ctl("add-port", "br0", "vpn0", "type=vxlan", *self._options(kind, 1))
        while not [t for t in self.esp_at if t >= t0]:
            if time.monotonic() - t0 > timeout:
                raise RuntimeError(f"{kind}: no ESP within {timeout} s:\n" + b.ctl("show", "errors")
                                   + b.ctl("show") + b.ctl("show", "arp") + b.ctl("show", "interfaces")
                                   + b.tail_log())
            time.sleep(0.001)
        return min(t for t in self.esp_at if t >= t0) - t0


def first_esp(trials):
    """{"ike": [seconds...], "manual": [...], "ike_median", "manual_median", "ratio"}."""
    out = {"ike": [], "manual": []}
    with contextlib.ExitStack() as stack:
        fe = FirstEsp(stack)
        fe.trial("manual")                         # ARP and the bridge's first flood: not counted
        for _ in range(trials):
            for kind in ("manual", "ike"):
                out[kind].append(fe.trial(kind))
    out["ike_median"] = statistics.median(out["ike"])
    out["manual_median"] = statistics.median(out["manual"])
    out["ratio"] = out["ike_median"] / out["manual_median"]
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--handshakes", type=int, default=200)
    p.add_argument("--trials", type=int, default=5, help="add-port to first ESP trials per kind (root)")
    p.add_argument("--json", metavar="OUT")
    args = p.parse_args(argv)
    rep = {"handshakes": handshakes(args.handshakes), "ecdh_p256": ecdh_p256(args.handshakes)}
    rep["responder_vs_ecdh"] = rep["handshakes"]["responder_per_s"] / rep["ecdh_p256"]["per_s"]
    h = rep["handshakes"]
    print(f"IKE handshakes (IKE_SA_INIT + IKE_AUTH, PSK, in memory): responder {h['responder_per_s']:.0f}/s "
          f"({h['responder_ms']:.2f} ms each), initiator {h['initiator_per_s']:.0f}/s; ECP-256 keygen+exchange "
          f"{rep['ecdh_p256']['per_s']:.0f}/s; responder / ECDH = {rep['responder_vs_ecdh']:.3f}")
    if os.geteuid() == 0:
        fe = rep["first_esp"] = first_esp(args.trials)
        print(f"add-port to first ESP: IKEv2 {1000 * fe['ike_median']:.0f} ms, manual keys "
              f"{1000 * fe['manual_median']:.0f} ms (medians of {args.trials}); ratio {fe['ratio']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rep, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
