"""Site to site through two fastpath gateways: how many frames a VLAN 10 host at site A
gets to a VLAN 10 host at site B, over VXLAN in ESP keyed by IKEv2 (AES-GCM, options:psk),
next to the same sites over VXLAN in ESP with manual keys, over plain VXLAN and the raw
veth ceiling.

    python3 -m bench.vpn_sites [--short] [--sizes 64,1400] [--seconds N] [--trials N]
                               [--peers ceiling,vxlan,esp,vpn] [--gw-cores 1,1] [--nice -10]
                               [--tcp | --tcp-only] [--tcp-seconds S]
                               [--json OUT]                                      (root)

Topology (every namespace made here, IPv6 off, every veth with its default offloads):

    vgen* --veth-- vsa* [fastpath site A] --veth-- vun* (Linux bridge) --veth-- [fastpath site B] vsb* --veth-- vsnk*
    (generator)      br0: tag=10 + vpn0 (VXLAN VNI 100 in ESP, options:psk: IKEv2)           br0: tag=10 + vpn0    (sink)
                     br1: tag=10 + vx0  (plain VXLAN, VNI 200)                                br1: tag=10 + vx0
                     br2: tag=10 + esp0 (VXLAN VNI 300 in ESP, manual keys)                   br2: tag=10 + esp0

The tunnels share the gateways and their uplinks (192.0.2.1 and .2 on a Linux bridge in
the underlay namespace); each has its own host veths, so the peers stay up and trials are
interleaved, as in bench/e2e.py, whose trial machinery (fastpath.afpacket.pktgen generator
and counting sink, run queue and foreign-CPU accounting, retries of contended trials) this
reuses. Peers:
  ceiling   the generator's veth paired directly with the sink's (no gateways)
  vxlan     site A -> plain VXLAN -> site B
  esp       site A -> VXLAN in ESP (AES-128-GCM, ESN, manual keys: options:spi_*/key_*) -> site B
  vpn       site A -> VXLAN in ESP (the CHILD_SA IKEv2 negotiates: AES-128-GCM, ESN) -> site B
Frame sizes count the FCS the way RFC 2544 does ("64" sends 60 bytes, "1400" 1396); the
sink checks every frame it counts byte for byte against what was sent, and Gbit/s are
delivered frames x size x 8. The two ESP paths differ only in where their keys come from.
The generator and the sink run on --gen-core, both gateways
on --gw-cores (default: both on core 1, so the pair of gateways has one core to itself on
a 2-core machine and the generator's core also pays for the first veth hop and the
delivery into the sink). Every figure is reported as a ratio to the ceiling (and to plain
VXLAN; the IKEv2-keyed VPN's also to manual-key ESP) measured in the same run.

TCP (--tcp, or --tcp-only for nothing else): iperf3, one stream, from a VLAN 10 host at site
A to one at site B, both at MTU 1500 with default offloads, in namespaces of their own (vta*,
vtb*; one veth pair per path, 10.3.<path>.1 and .2), through the same gateways and tunnels,
each tunnel port with options:tcp_mss_clamp=auto for the measurement (set back to off after
it, as the packet trials run without it); the hosts' ports join the tunnel's bridge (tag=10)
only for their turn, so the packet trials never see them. The ceiling path is the two TCP
hosts on one veth pair. Each TCP figure is reported as a ratio to the ceiling (and the ESP
paths' to plain VXLAN, the IKEv2-keyed VPN's to manual-key ESP) measured in the same run.
"""
import argparse
import contextlib
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
for _p in (HERE, REPO):
    if _p not in sys.path:
        sys.path.insert(0, _p)
import e2e  # noqa: E402   (also puts tests/ on sys.path for netns)
import tcp  # noqa: E402   (iperf3(), ratio())
from e2e import VLAN, link  # noqa: E402
from netns import Netns, can_run  # noqa: E402
from trials import (FastpathRun, default_by_mode, default_method, finish_meta,  # noqa: E402
                    heading_end, loadavg, log, proc_cpu_seconds, proc_run_delay, rounds,
                    run_and_print)

ALL_PEERS = ("ceiling", "vxlan", "esp", "vpn")
SITE_IPS = ("192.0.2.1", "192.0.2.2")
PSK = "fastpath bench: two sites, one secret"
# kind -> (bridge, tunnel port, VNI, keying: None, "ike" or "manual")
TUNNELS = {"vpn": ("br0", "vpn0", 100, "ike"), "vxlan": ("br1", "vx0", 200, None),
           "esp": ("br2", "esp0", 300, "manual")}
# the manual SAs of the esp path, as site A sees them (site B: swapped); AES-128-GCM and
# ESN, what IKE negotiates between two fastpath gateways
MANUAL = {"spi_out": "0x1001", "spi_in": "0x2001", "key_out": "0x" + "1a" * 20, "key_in": "0x" + "2b" * 20,
          "esn": "true"}
TCP_SUBNETS = {"vpn": "10.3.1", "vxlan": "10.3.2", "ceiling": "10.3.3", "esp": "10.3.4"}   # .1 site A, .2 site B
LABELS = {"vxlan": "site to site, plain VXLAN",
          "esp": "site to site, VXLAN in ESP AES-GCM, manual keys",
          "vpn": "site to site, VXLAN in ESP AES-GCM keyed by IKEv2 (PSK)"}
TCP_LABELS = {"ceiling": "raw veth ceiling (no gateways)",
              **{k: v + ", tcp_mss_clamp=auto" for k, v in LABELS.items()}}
# which same-run figure each path is also reported against, besides the ceiling
VERSUS = {"esp": (("vxlan", "ratio_to_vxlan"),),
          "vpn": (("vxlan", "ratio_to_vxlan"), ("esp", "ratio_to_manual_esp"))}


def manual_options(site):
    """options: of the esp path's manual SAs at site 0 (A) or 1 (B)."""
    o = dict(MANUAL)
    if site:
        o["spi_out"], o["spi_in"] = o["spi_in"], o["spi_out"]
        o["key_out"], o["key_in"] = o["key_in"], o["key_out"]
    return [f"options:{k}={v}" for k, v in o.items()]


class Gateway(FastpathRun):
    """`fastpath run` in a namespace of its own, pinned to a core, driven by fastpathctl."""

    def __init__(self, args, ns, name, core):
        super().__init__(ns, core, args.nice, f"fastpath-vpn-{name}.", name=name, timeout=60.0)
        self.args, self.core = args, core


class Sites:
    """The two gateways and the underlay between them, shared by the vxlan and vpn peers."""

    def __init__(self, args):
        self.args = args
        self.ready = False
        self.tunnels = set()

    def setup(self, stack):
        if self.ready:
            return
        ns_a = stack.enter_context(Netns("vsa"))
        ns_b = stack.enter_context(Netns("vsb"))
        under = stack.enter_context(Netns("vun"))
        under.run(["ip", "link", "add", "ubr", "type", "bridge", "stp_state", "0", "forward_delay", "0"])
        under.run(["ip", "link", "set", "ubr", "up"])
        cores = self.args.gw_cores
        self.gw = [Gateway(self.args, ns_a, "site-a", cores[0]), Gateway(self.args, ns_b, "site-b", cores[1])]
        for gw, ip, prefix in zip(self.gw, SITE_IPS, ("vua", "vub")):
            gw.uplink, under_end = link(stack, gw.ns, under, prefix)
            under.run(["ip", "link", "set", under_end, "master", "ubr"])
            gw.ip = ip
        for gw in self.gw:
            gw.start(stack)
            gw.ctl("add-ip", gw.uplink, f"{gw.ip}/24")
        self.ready = True

    def add_tunnel(self, kind):
        """Bridge and tunnel port of one kind on both gateways (the host ports come later)."""
        br, port, vni, keying = TUNNELS[kind]
        self.tunnels.add(kind)
        for i, (gw, peer) in enumerate(zip(self.gw, reversed(self.gw))):
            gw.ctl("add-br", br)
            opts = [f"options:remote_ip={peer.ip}", f"options:local_ip={gw.ip}", f"options:key={vni}"]
            if keying == "ike":
                opts.append(f"options:psk={PSK}")
            elif keying == "manual":
                opts += manual_options(i)
            gw.ctl("add-port", br, port, "type=vxlan", *opts)

    def wait_sas(self, kind="vpn", timeout=60):
        """Until both gateways have an outbound SA on kind's tunnel port."""
        port = TUNNELS[kind][1]
        deadline = time.monotonic() + timeout
        while not all(any(r["direction"] == "out" and r["tunnel"] == port for r in gw.ctl("show", "sa", fmt="json"))
                      for gw in self.gw):
            if time.monotonic() > deadline:
                raise RuntimeError("IPsec SAs did not come up:\n" + self.gw[0].ctl("show", "errors")
                                   + self.gw[0].tail_log())
            time.sleep(0.2)


class SitePeer(e2e.Peer):
    """generator -> site A (tag=10) -> tunnel -> site B (tag=10) -> sink"""

    def __init__(self, args, gen_ns, sink_ns, sites, kind):
        super().__init__(args, gen_ns, sink_ns)
        self.sites, self.kind = sites, kind
        self.name = kind
        self.label = LABELS[kind]
        self.ipsec = TUNNELS[kind][3] is not None

    def setup(self, stack):
        self.sites.setup(stack)
        a, b = self.sites.gw
        self.sites.add_tunnel(self.kind)
        br = TUNNELS[self.kind][0]
        self.gen_if, self.a_if = link(stack, self.gen_ns, a.ns, "vg" + self.kind[:2])
        self.b_if, self.sink_if = link(stack, b.ns, self.sink_ns, "vs" + self.kind[:2])
        a.ctl("add-port", br, self.a_if, "type=afpacket", f"tag={VLAN}")
        b.ctl("add-port", br, self.b_if, "type=afpacket", f"tag={VLAN}")
        if self.ipsec:
            self.sites.wait_sas(self.kind)

    @staticmethod
    def errors(gw):
        """{"node reason": count} of `show errors` (counts since the daemon started)."""
        return {f"{r['node']} {r['reason']}": r["count"] for r in gw.ctl("show", "errors", fmt="json")}

    def sa_packets(self):
        """{(gateway, direction, spi): packets} of this path's SAs now."""
        out = {}
        port = TUNNELS[self.kind][1]
        for gw in self.sites.gw:
            for r in gw.ctl("show", "sa", fmt="json"):
                if r["tunnel"] == port:
                    out[(gw.name, r["direction"], r["spi"])] = r["packets"]
        return out

    def before_trial(self):
        self.t0 = time.monotonic()
        self.cpu0, self.wait0, self.err0 = [], [], []
        for gw in self.sites.gw:
            gw.ctl("clear", "runtime")
            self.err0.append(self.errors(gw))
            self.cpu0.append(proc_cpu_seconds(gw.proc.pid))
            self.wait0.append(proc_run_delay(gw.proc.pid))
        self.sa0 = self.sa_packets() if self.ipsec else {}
        self.t0 = time.monotonic()

    def after_trial(self):
        t = time.monotonic() - self.t0
        out = {"switch_cpu_seconds": 0.0, "gateways": {}}
        waits = []
        for gw, c0, w0, e0 in zip(self.sites.gw, self.cpu0, self.wait0, self.err0):
            c1, w1 = proc_cpu_seconds(gw.proc.pid), proc_run_delay(gw.proc.pid)
            g = {"errors": {k: v - e0.get(k, 0) for k, v in self.errors(gw).items() if v - e0.get(k, 0)}}
            if c1 is not None and c0 is not None:
                g["cpu"] = round((c1 - c0) / t, 3)
                out["switch_cpu_seconds"] += c1 - c0
            if w1 is not None and w0 is not None:
                waits.append((w1 - w0) / t)
            runtime = gw.ctl("show", "runtime", fmt="json")
            g["runtime"] = [{"name": r["name"], "packets": r.get("packets", 0),
                             "ns_per_packet": round(r["ns"] / r["packets"], 1) if r.get("packets") else 0.0}
                            for r in runtime if r.get("packets")]
            out["gateways"][gw.name] = g
        if waits:
            out["switch_wait"] = round(max(waits), 4)
        if self.ipsec:
            sa1 = self.sa_packets()
            out["sa_packets"] = {f"{k[0]} {k[1]} 0x{k[2]:08x}": v - self.sa0.get(k, 0)
                                 for k, v in sa1.items() if v - self.sa0.get(k, 0)}
            out["esp_in_at_b"] = sum(v - self.sa0.get(k, 0) for k, v in sa1.items()
                                     if k[0] == "site-b" and k[1] == "in")
        return out


class TcpPaths:
    """iperf3 TCP between a VLAN 10 host at site A and one at site B (namespaces of their
    own, MTU 1500, default offloads), over each path: the tunnels of `sites` (their ports
    with options:tcp_mss_clamp=auto, the hosts' ports on the tunnel's bridge, both only for
    the measurement) or the hosts' own veth pair (the ceiling)."""

    def __init__(self, stack, sites):
        self.stack, self.sites = stack, sites
        self.a = stack.enter_context(Netns("vta"))
        self.b = stack.enter_context(Netns("vtb"))
        self.links = {}          # path -> (host A's if, site A's if, site B's if, host B's if)

    def ips(self, path):
        return f"{TCP_SUBNETS[path]}.1", f"{TCP_SUBNETS[path]}.2"

    def setup(self, path):
        if path in self.links:
            return
        if path == "ceiling":
            ha, hb = link(self.stack, self.a, self.b, "vtc")
            ends = (ha, None, None, hb)
        else:
            self.sites.setup(self.stack)
            if path not in self.sites.tunnels:
                self.sites.add_tunnel(path)
            ga, gb = self.sites.gw
            ha, pa = link(self.stack, self.a, ga.ns, "vt" + path[:2])
            pb, hb = link(self.stack, gb.ns, self.b, "vr" + path[:2])
            ends = (ha, pa, pb, hb)
        for ns, ifname, ip in zip((self.a, self.b), (ends[0], ends[3]), self.ips(path)):
            ns.run(["ip", "addr", "add", f"{ip}/24", "dev", ifname])
        self.links[path] = ends

    @staticmethod
    def clamped(gw):
        return sum(r["count"] for r in gw.ctl("show", "errors", fmt="json")
                   if r["node"].startswith("tcp-mss-clamp") and r["reason"] == "clamped")

    @staticmethod
    def port_rx(gw, ifname):
        return sum(int(r.get("rx_packets", 0)) for r in gw.ctl("show", "interfaces", fmt="json")
                   if r.get("name") == ifname)

    def measure(self, path, seconds):
        """One iperf3 run of `seconds`: {path, gbps, error, mss (the sender's, from iperf3),
        retransmits, and for the tunnels packets (frames the gateways took from the two
        hosts, super-frames counted once) and clamped (SYNs whose MSS the gateways lowered)}."""
        self.setup(path)
        ha, pa, pb, hb = self.links[path]
        a_ip, b_ip = self.ips(path)
        out = {"path": path, "label": TCP_LABELS[path], "seconds": seconds, "loadavg": loadavg()[0]}
        with contextlib.ExitStack() as turn:
            if path != "ceiling":
                if TUNNELS[path][3]:
                    self.sites.wait_sas(path)
                br, port = TUNNELS[path][:2]
                for gw, ifname in zip(self.sites.gw, (pa, pb)):
                    gw.ctl("set", "interface", port, "options:tcp_mss_clamp=auto")
                    turn.callback(gw.ctl, "set", "interface", port, "options:tcp_mss_clamp=off")
                    gw.ctl("add-port", br, ifname, "type=afpacket", f"tag={VLAN}")
                    turn.callback(gw.ctl, "del-port", br, ifname)
                out["mss_clamp"] = {gw.name: next((r.get("tcp_mss_clamp") for r in gw.ctl(
                    "show", "interfaces", fmt="json") if r.get("name") == port), None) for gw in self.sites.gw}
                clamped0 = sum(self.clamped(gw) for gw in self.sites.gw)
            # ARP (and the bridges' learning) before the measurement
            self.a.run(["ping", "-c", "3", "-i", "0.2", "-W", "1", b_ip], check=False)
            gbps, error, doc = tcp.iperf3(self.a, self.b, b_ip, seconds, 1)
            out.update(gbps=gbps, error=error)
            with contextlib.suppress(TypeError, KeyError, IndexError):
                out["mss"] = doc["start"]["tcp_mss_default"]
            with contextlib.suppress(TypeError, KeyError):
                out["retransmits"] = doc["end"]["sum_sent"]["retransmits"]
            if path != "ceiling":
                out["packets"] = sum(self.port_rx(gw, ifname) for gw, ifname in zip(self.sites.gw, (pa, pb)))
                out["clamped"] = sum(self.clamped(gw) for gw in self.sites.gw) - clamped0
        return out


def tcp_summary(results):
    """Best Gbit/s per path over the rounds, with ratios to the ceiling and to the paths of
    VERSUS."""
    rows = []
    by = {}
    for r in results:
        by.setdefault(r["path"], []).append(r)
    best = {p: max(v, key=lambda r: r["gbps"]) for p, v in by.items()}
    for path in ALL_PEERS:
        if path not in best:
            continue
        b = best[path]
        row = {"path": path, "label": TCP_LABELS[path], "gbps": b["gbps"], "runs": len(by[path]),
               "gbps_all": [r["gbps"] for r in by[path]]}
        for k in ("mss", "packets", "clamped", "retransmits", "error"):
            if b.get(k) is not None:
                row[k] = b[k]
        for base, key in ((("ceiling", "ratio_to_ceiling"),) if path != "ceiling" else ()) + VERSUS.get(path, ()):
            if base in best:
                row[key] = tcp.ratio(b["gbps"], best[base]["gbps"])
        rows.append(row)
    return rows


def tcp_markdown(rows):
    lines = ["| iperf3 TCP, 1 stream, VLAN 10 host A -> host B, MTU 1500 | Gbit/s (best) | sender MSS | "
             "ratio to ceiling | ratio to plain VXLAN | ratio to manual-key ESP | runs |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rc = f"{r['ratio_to_ceiling']:.3f}" if r.get("ratio_to_ceiling") is not None else "–"
        rv = f"{r['ratio_to_vxlan']:.2f}" if r.get("ratio_to_vxlan") is not None else "–"
        rm = f"{r['ratio_to_manual_esp']:.2f}" if r.get("ratio_to_manual_esp") is not None else "–"
        runs = ", ".join(f"{g:.2f}" for g in r["gbps_all"])
        lines.append(f"| {r['label']} | {r['gbps']:.2f} | {r.get('mss', '–')} | {rc} | {rv} | {rm} | {runs} |")
    return "\n".join(lines)


def make_peers(args, gen_ns, sink_ns):
    sites = Sites(args)
    peers = []
    for name in args.peers:
        if name == "ceiling":
            peers.append(e2e.Ceiling(args, gen_ns, sink_ns))
        elif name in TUNNELS:
            peers.append(SitePeer(args, gen_ns, sink_ns, sites, name))
        else:
            raise SystemExit(f"unknown peer {name!r} (known: {', '.join(ALL_PEERS)})")
    return peers


def summarize(results, peers, sizes):
    """e2e's medians and ratio to the ceiling, plus Mpps, Gbit/s and the ratios of VERSUS."""
    rows = e2e.summarize(results, peers, sizes)
    pps = {(r["peer"], r["size"]): r["delivered_pps"] for r in rows if "delivered_pps" in r}
    for r in rows:
        if "delivered_pps" not in r:
            continue
        r["mpps"] = r["delivered_pps"] / 1e6
        r["gbps"] = r["delivered_pps"] * r["size"] * 8 / 1e9
        for base, key in VERSUS.get(r["peer"], ()):
            if pps.get((base, r["size"])):
                r[key] = r["delivered_pps"] / pps[(base, r["size"])]
    return rows


def markdown(rows):
    lines = ["| path | frame | offered pps | delivered pps | Gbit/s | loss % | ratio to ceiling | "
             "ratio to plain VXLAN | ratio to manual-key ESP | delivered range (trials) | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        if "delivered_pps" not in r:
            continue
        rc = f"{r['ratio_to_ceiling']:.3f}" if "ratio_to_ceiling" in r else "–"
        rv = f"{r['ratio_to_vxlan']:.2f}" if "ratio_to_vxlan" in r else "–"
        rm = f"{r['ratio_to_manual_esp']:.2f}" if "ratio_to_manual_esp" in r else "–"
        lines.append(f"| {r['label']} | {r['size']} B | {r['offered_pps']:,.0f} | {r['delivered_pps']:,.0f} | "
                     f"{r['gbps']:.3f} | {100 * r['loss']:.1f} | {rc} | {rv} | {rm} | "
                     f"{r['delivered_min']:,.0f}–{r['delivered_max']:,.0f} ({r['trials']}) | {r['loadavg']:.2f} |")
    return "\n".join(lines)


class Bench:
    """The whole topology between __enter__ and __exit__; measure(peer, size) runs one trial
    (with e2e's retries of contended trials)."""

    def __init__(self, args):
        self.args = args
        self.results = []
        self.tcp_results = []

    def __enter__(self):
        if not can_run():
            raise SystemExit("vpn_sites: needs root, veth and network namespaces")
        self.stack = contextlib.ExitStack()
        try:
            self.gen_ns = self.stack.enter_context(Netns("vgen"))
            self.sink_ns = self.stack.enter_context(Netns("vsnk"))
            self.peers = {p.name: p for p in make_peers(self.args, self.gen_ns, self.sink_ns)}
            for p in self.peers.values():
                log(f"vpn_sites: setting up {p.name}")
                p.setup(self.stack)
        except BaseException:
            self.stack.close()
            raise
        return self

    def __exit__(self, *exc):
        self.stack.close()

    def measure(self, peer, size):
        r = e2e.measure(self.args, self.peers[peer], size, self.gen_ns, self.sink_ns)
        self.results.append(r)
        return r

    def summary(self):
        return summarize(self.results, list(self.peers.values()), self.args.sizes)

    def measure_tcp(self, path, seconds=None):
        """One iperf3 TCP run over path (TcpPaths.measure), the TCP hosts made the first time."""
        if not hasattr(self, "tcp_paths"):
            sites = next((p.sites for p in self.peers.values() if isinstance(p, SitePeer)), None)
            self.tcp_paths = TcpPaths(self.stack, sites or Sites(self.args))
        r = self.tcp_paths.measure(path, seconds or self.args.tcp_seconds)
        self.tcp_results.append(r)
        return r

    def tcp_summary(self):
        return tcp_summary(self.tcp_results)


def run(args):
    """Build everything, measure (interleaved rounds), tear down; the report as a dict."""
    ncpu = os.cpu_count() or 1
    for c in [args.gen_core, args.sink_core] + list(args.gw_cores):
        if not 0 <= c < ncpu:
            raise SystemExit(f"no CPU {c}")
    t_start = time.monotonic()
    meta = {"mode": "short" if args.short else "full", "seconds": args.seconds, "trials": args.trials,
            "sizes": args.sizes, "gen_core": args.gen_core, "sink_core": args.sink_core,
            "gw_cores": list(args.gw_cores), "method": args.method, "nice": args.nice,
            "kernel": platform.release(), "cpus": ncpu,
            "loadavg_start": loadavg()}
    with Bench(args) as bench:
        for t, size, name in rounds(args.trials, args.sizes, bench.peers):
            bench.measure(name, size)["trial"] = t
        if args.tcp:
            for t in range(args.trials):
                for name in bench.peers:
                    bench.measure_tcp(name)["trial"] = t
        rows = bench.summary()
        results = bench.results
        tcp_rows, tcp_results = bench.tcp_summary(), bench.tcp_results
    finish_meta(meta, t_start)
    table = markdown(rows) if args.sizes else ""
    if args.tcp:
        meta["tcp_seconds"] = args.tcp_seconds
        table = (table + "\n\n" if table else "") + tcp_markdown(tcp_rows)
    return {"meta": meta, "summary": rows, "results": results, "table": table,
            "tcp": tcp_rows, "tcp_results": tcp_results}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="one trial of 1 s per path and size, no retries")
    p.add_argument("--sizes", default="64,1400", help="frame sizes with FCS (default 64,1400)")
    p.add_argument("--seconds", type=float, help="generator time per trial (default 3, short 1)")
    p.add_argument("--trials", type=int, help="trials per path and size (default 3, short 1)")
    p.add_argument("--peers", default=",".join(ALL_PEERS),
                   help=f"which paths to measure (default {','.join(ALL_PEERS)})")
    p.add_argument("--method", choices=("ring", "sendmmsg"), default=None,
                   help="generator transmit method (default: pktgen's DEFAULT_METHOD)")
    p.add_argument("--gen-core", type=int, default=0)
    p.add_argument("--sink-core", type=int, default=None, help="default: the generator's core")
    p.add_argument("--gw-cores", default="1,1", help="cores of gateway A and B (default 1,1)")
    p.add_argument("--max-wait", type=float, default=0.05, metavar="SHARE",
                   help="repeat a trial in which the generator or a gateway waited for a CPU while "
                        "other people's tasks ran more than this share of the time (default 0.05)")
    p.add_argument("--retries", type=int, help="repeats per trial at most (default 2, short 0)")
    p.add_argument("--nice", type=int, default=0,
                   help="nice value for the generator, the sink and the gateways, each in a session "
                        "(autogroup) of its own: e.g. -10 on a shared machine (default 0)")
    p.add_argument("--tcp", action="store_true",
                   help="also iperf3 TCP (1 stream, hosts at MTU 1500, default offloads) over each path, "
                        "the tunnels with options:tcp_mss_clamp=auto")
    p.add_argument("--tcp-only", action="store_true", help="--tcp and no packet trials")
    p.add_argument("--tcp-seconds", type=float, help="iperf3 time per TCP run (default 3, short 1)")
    p.add_argument("--json", metavar="OUT", help="write the full report (every trial) here")
    args = p.parse_args(argv)
    if args.tcp_only:
        args.tcp, args.sizes = True, ""
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    for s in args.sizes:
        if not 64 <= s <= 1400:
            p.error("--sizes: each in 64..1400 (larger frames do not fit the 1500-byte underlay "
                    "after VXLAN and ESP)")
    args.peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    try:
        args.gw_cores = tuple(int(c) for c in args.gw_cores.split(","))
        assert len(args.gw_cores) == 2
    except (ValueError, AssertionError):
        p.error("--gw-cores: two core numbers, A,B")
    default_by_mode(args, seconds=(1.0, 3.0), trials=(1, 3), retries=(0, 2), tcp_seconds=(1.0, 3.0))
    if args.sink_core is None:
        args.sink_core = args.gen_core
    args.switch_core = args.gw_cores[0]          # e2e's CPU accounting: the gateways' core
    default_method(args)
    return args


def heading(m):
    """The line above the table, from the report's meta."""
    tcp_part = (f"; TCP: {m['trials']} run(s) x {m['tcp_seconds']:g} s per path, best"
                if m.get("tcp_seconds") is not None else "")
    return (f"# fastpath site to site ({m['mode']}: {m['trials']} trial(s) x {m['seconds']:g} s, median{tcp_part}; "
            f"kernel {m['kernel']}, {m['cpus']} CPUs; generator {m['method']} and sink on core {m['gen_core']}, "
            f"gateways on cores {m['gw_cores'][0]},{m['gw_cores'][1]}" + heading_end(m))


def main(argv=None):
    args = parse_args(argv)
    return run_and_print(args, run, heading)


if __name__ == "__main__":
    sys.exit(main())
