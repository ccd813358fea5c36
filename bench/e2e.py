"""End to end through real veth pairs: generator -> switch -> sink, next to its peers.

    python bench/e2e.py [--short] [--sizes 64,1518] [--seconds N] [--trials N]
                        [--peers ceiling,linux-bridge,...] [--nice -10] [--json OUT]   (root)

One run measures, for each frame size, in interleaved rounds (so that a change of load on
the machine hits every peer alike):
  ceiling            generator veth paired directly with the sink veth (no switch)
  linux-bridge       a Linux bridge; all of its work runs in softirq on the generator's
                     core, where the veth hands the frame over
  linux-bridge-rps   the same bridge with RPS on its ingress port steering that work onto
                     the switch core (what the two polling switches get: a core of their own)
  ovs                Open vSwitch's userspace datapath (datapath_type=netdev, AF_PACKET
                     ports, both access tag=10), ovsdb-server + ovs-vswitchd started here
                     with a private run directory; a "not installed" row without it
  fastpath           `fastpath run` with two afpacket ports, access tag=10, set up with
                     fastpathctl

Topology: namespace egen* holds the generator's end of each pair, namespace esnk* the
sink's end, and each switch has a namespace of its own (esb* bridge, eso* OVS, esf*
fastpath) between a gen<->switch and a switch<->sink veth pair, so all of them stay up
and trials can be interleaved. IPv6 is off in every namespace, every veth keeps its
default offloads (as users leave them), RPS is off except where named. The generator
(fastpath.afpacket.pktgen, in C without the GIL) is pinned to --gen-core, the switches to
--switch-core, the sink to --sink-core (default: the generator's core, so the switch core
is the switch's alone). Frame sizes count the 4-byte FCS the way RFC 2544 does: "64" sends
60 bytes, "1518" sends 1514.

On a 2-core machine the generator's core also pays for the first veth hop and the delivery
into the receiving socket, so nothing above the raw veth ceiling can be ranked: every peer
is reported as a ratio to the ceiling measured in the same run. Reported per peer and size:
the median over trials of offered (sent) and delivered frames per second, loss, the
delivered range over the trials, the load average, the largest share of a core that
other people's tasks took during a trial ("others' CPU", from /proc/stat less our own
processes) and the largest share of time the generator or the switch daemon waited for
a CPU ("our wait", run queue delay from schedstat; a few per cent come from our own
ksoftirqd and sink). On a shared machine a trial where both exceed --max-wait is run
again (--retries), and --nice gives our processes priority over other sessions'.
Everything made here (namespaces, veths, daemons) is removed on exit, also after a
failure, Ctrl-C or SIGTERM.
"""
import argparse
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
from netns import Netns, can_run, run_in, unique_name, veth_pair  # noqa: E402
import ovs  # noqa: E402
from trials import (PY, FastpathRun, boost, check_cores, cpu_times, default_by_mode,  # noqa: E402
                    default_method, finish_meta, heading_end, least_contended, loadavg, log,
                    pinned, proc_cpu_seconds, proc_run_delay, read_json_line, rounds,
                    run_and_print, stop_process)

GEN_MAC = "02:e2:e0:00:00:01"
SINK_MAC = "02:e2:e0:00:00:02"
ETHERTYPE = 0x88B5          # IEEE local experimental: nothing else on these links uses it
HELLO_TYPE = 0x88B6
ALL_PEERS = ("ceiling", "linux-bridge", "linux-bridge-rps", "ovs", "fastpath")
SHORT_PEERS = ("ceiling", "linux-bridge", "ovs", "fastpath")     # CI: under a minute
FCS = 4
VLAN = 10


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def frames_for(size, n=4):
    """n distinct frames of `size` bytes on the wire (FCS included) from the generator
    to the sink; the payload names the size and the frame's index."""
    length = size - FCS
    out = []
    for i in range(n):
        head = mac_bytes(SINK_MAC) + mac_bytes(GEN_MAC) + ETHERTYPE.to_bytes(2, "big")
        body = f"fastpath-e2e size={size} frame={i} ".encode()
        body += bytes((i * 37 + k) & 0xFF for k in range(length - len(head) - len(body)))
        out.append(head + body)
        assert len(out[-1]) == length
    return out


def flow_frames(size, flows):
    """`flows` IPv4/UDP frames of `size` bytes on the wire (FCS included) to the sink, each
    a flow of its own: source MAC, source address and UDP source port differ, so that a
    hash over the flow (AF_PACKET fanout, RPS) can spread them (--flows)."""
    length = size - FCS
    out = []
    for i in range(flows):
        src = mac_bytes(GEN_MAC)[:3] + bytes([0x01, (i >> 8) & 0xFF, i & 0xFF])
        payload = f"fastpath-e2e flow={i} ".encode().ljust(length - 42, b"\0")[:length - 42]
        ip = bytearray(b"\x45\x00" + (28 + len(payload)).to_bytes(2, "big") + b"\x00\x00\x40\x00\x40\x11\x00\x00"
                       + bytes([198, 18, (i >> 8) & 0xFF, i & 0xFF]) + bytes([198, 19, 0, 1]))
        c = sum(int.from_bytes(ip[k:k + 2], "big") for k in range(0, 20, 2))
        c = (c & 0xFFFF) + (c >> 16)
        c = (c & 0xFFFF) + (c >> 16)
        ip[10:12] = (~c & 0xFFFF).to_bytes(2, "big")
        udp = (1024 + i).to_bytes(2, "big") + (9).to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\0\0"
        out.append(mac_bytes(SINK_MAC) + src + b"\x08\x00" + bytes(ip) + udp + payload)
        assert len(out[-1]) == length
    return out


def hello_frame():
    head = mac_bytes(GEN_MAC) + mac_bytes(SINK_MAC) + HELLO_TYPE.to_bytes(2, "big")
    return head + b"fastpath-e2e hello".ljust(46, b"\0")


# ---------------------------------------------------------------- host set-up helpers

def prepare_if(ns, ifname, rps_mask=0):
    """RPS set to rps_mask. Offloads stay as Linux sets them up (no ethtool -K): the
    generator's frames are raw Ethernet (EtherType 0x88B5, or UDP with --flows) written to a
    packet socket, which nothing segments or checksums, and the switches' access ports put
    no tag on the veths, so neither GSO/TSO/GRO nor the VLAN offloads change what is counted."""
    set_rps(ns, ifname, rps_mask)


def set_rps(ns, ifname, mask):
    run_in(ns, ["sh", "-c", f"for q in /sys/class/net/{ifname}/queues/rx-*/rps_cpus; "
                            f"do echo {mask:x} > $q; done"])


def link(stack, ns_a, ns_b, prefix):
    a, b = unique_name(prefix + "a"), unique_name(prefix + "b")
    stack.enter_context(veth_pair(a, b, ns_a, ns_b))
    prepare_if(ns_a, a)
    prepare_if(ns_b, b)
    return a, b


# ---------------------------------------------------------------- peers

class Peer:
    """A path from the generator's namespace to the sink's; subclasses put a switch in it."""
    name = "?"
    label = "?"
    available = True
    why_not = ""

    def __init__(self, args, gen_ns, sink_ns):
        self.args = args
        self.gen_ns = gen_ns
        self.sink_ns = sink_ns
        self.gen_if = self.sink_if = None

    def setup(self, stack):
        raise NotImplementedError

    def before_trial(self):
        pass

    def after_trial(self):
        return {}


class Ceiling(Peer):
    name = "ceiling"
    label = "raw veth ceiling (no switch)"

    def setup(self, stack):
        self.gen_if, self.sink_if = link(stack, self.gen_ns, self.sink_ns, "ec")


class SwitchPeer(Peer):
    ns_prefix = "esw"

    def setup(self, stack):
        self.ns = stack.enter_context(Netns(self.ns_prefix))
        self.gen_if, self.in_if = link(stack, self.gen_ns, self.ns, self.if_prefix + "i")
        self.out_if, self.sink_if = link(stack, self.ns, self.sink_ns, self.if_prefix + "o")
        self.start(stack)

    def core_mask(self):
        return 1 << self.args.switch_core


class LinuxBridge(SwitchPeer):
    name = "linux-bridge"
    label = "Linux bridge (softirq on the generator core)"
    ns_prefix = "esb"
    if_prefix = "eb"

    def __init__(self, args, gen_ns, sink_ns, rps=False, same_as=None):
        super().__init__(args, gen_ns, sink_ns)
        self.rps = rps
        self.same_as = same_as         # the other variant, whose bridge this one uses
        if rps:
            self.name = "linux-bridge-rps"
            self.label = "Linux bridge, RPS onto the switch core"

    def setup(self, stack):
        if self.same_as is not None:
            for k in ("ns", "gen_if", "in_if", "out_if", "sink_if"):
                setattr(self, k, getattr(self.same_as, k))
            return
        super().setup(stack)

    def start(self, stack):
        self.ns.run(["ip", "link", "add", "br0", "type", "bridge", "stp_state", "0",
                     "forward_delay", "0"])
        for ifname in (self.in_if, self.out_if):
            self.ns.run(["ip", "link", "set", ifname, "master", "br0"])
        self.ns.run(["ip", "link", "set", "br0", "up"])

    def before_trial(self):
        set_rps(self.ns, self.in_if, self.core_mask() if self.rps else 0)

    def after_trial(self):
        set_rps(self.ns, self.in_if, 0)
        return {}


class Ovs(SwitchPeer):
    name = "ovs"
    label = "Open vSwitch userspace (netdev, AF_PACKET)"
    ns_prefix = "eso"
    if_prefix = "eo"

    def __init__(self, args, gen_ns, sink_ns):
        super().__init__(args, gen_ns, sink_ns)
        why = ovs.why_not_available()
        if why:
            self.available = False
            self.why_not = why

    def start(self, stack):
        self.daemons = ovs.OvsDaemons(self.ns, self.args.nice, self.args.switch_core,
                                      prefix="fastpath-e2e-ovs.")
        self.daemons.start(stack)
        self.daemons.add_bridge("br0", [self.in_if, self.out_if], f"tag={VLAN}")
        self.pid = self.daemons.pid

    def before_trial(self):
        self.daemons.appctl("dpif-netdev/pmd-stats-clear")
        self.cpu0 = proc_cpu_seconds(self.pid)
        self.wait0 = proc_run_delay(self.pid)
        self.t0 = time.monotonic()

    def after_trial(self):
        out = {}
        cpu1 = proc_cpu_seconds(self.pid)
        wait1 = proc_run_delay(self.pid)
        if wait1 is not None and self.wait0 is not None:
            out["switch_wait"] = round((wait1 - self.wait0) / (time.monotonic() - self.t0), 4)
        if cpu1 is not None and self.cpu0 is not None:
            out["switch_cpu_seconds"] = cpu1 - self.cpu0
            out["switch_cpu"] = round((cpu1 - self.cpu0) / (time.monotonic() - self.t0), 3)
        for ifname in (self.in_if, self.out_if):
            with contextlib.suppress(Exception):
                out[f"stats {ifname}"] = self.daemons.vsctl("get", "interface", ifname, "statistics")
        out["pmd-stats-show"] = self.daemons.appctl("dpif-netdev/pmd-stats-show")
        return out


class Fastpath(SwitchPeer):
    name = "fastpath"
    label = "fastpath (afpacket ports)"
    ns_prefix = "esf"
    if_prefix = "ef"

    def ctl(self, *argv, fmt=None):
        return self.daemon.ctl(*argv, fmt=fmt)

    def start(self, stack):
        cpus = getattr(self.args, "fastpath_cpus", None)        # --fastpath-cpus
        self.daemon = FastpathRun(self.ns, cpus if cpus else self.args.switch_core, self.args.nice,
                                  "fastpath-e2e-fp.",
                                  extra_args=getattr(self.args, "fastpath_args", None) or [])  # --fastpath-args
        self.daemon.start(stack)
        self.proc = self.daemon.proc
        self.ctl("add-br", "br0")
        self.ctl("add-port", "br0", self.in_if, "type=afpacket", f"tag={VLAN}")
        self.ctl("add-port", "br0", self.out_if, "type=afpacket", f"tag={VLAN}")

    def interfaces(self):
        return {r["name"]: r for r in self.ctl("show", "interfaces", fmt="json")}

    def before_trial(self):
        self.ctl("clear", "runtime")
        self.if0 = self.interfaces()
        self.cpu0 = proc_cpu_seconds(self.proc.pid)
        self.wait0 = proc_run_delay(self.proc.pid)
        self.t0 = time.monotonic()

    def after_trial(self):
        t = time.monotonic() - self.t0
        cpu1 = proc_cpu_seconds(self.proc.pid)
        wait1 = proc_run_delay(self.proc.pid)
        out = {"switch_cpu": round((cpu1 - self.cpu0) / t, 3) if cpu1 is not None else None,
               "switch_cpu_seconds": cpu1 - self.cpu0 if cpu1 is not None else None}
        if wait1 is not None and self.wait0 is not None:
            out["switch_wait"] = round((wait1 - self.wait0) / t, 4)
        runtime = self.ctl("show", "runtime", fmt="json")
        out["runtime"] = [{k: r[k] for k in ("name", "calls", "vectors", "packets", "ns")
                           if k in r} for r in runtime]
        for r in out["runtime"]:
            r["ns_per_packet"] = round(r["ns"] / r["packets"], 1) if r.get("packets") else 0.0
            r["vectors_per_call"] = round(r["packets"] / r["calls"], 2) if r.get("calls") else 0.0
        out["graph_ns"] = sum(r["ns"] for r in runtime)
        if1 = self.interfaces()
        deltas = {}
        for name, row in if1.items():
            before = self.if0.get(name, {})
            deltas[name] = {k: v - before.get(k, 0) for k, v in row.items()
                            if isinstance(v, int) and not isinstance(v, bool)
                            and k not in ("ofport", "sw_if_index") and v - before.get(k, 0)}
        out["interfaces"] = deltas
        out["errors"] = self.ctl("show", "errors", fmt="json")
        out["fdb"] = self.ctl("fdb/show", "br0")
        out["ports"] = {"in": self.in_if, "out": self.out_if}
        return out


def make_peers(args, gen_ns, sink_ns):
    peers = []
    for name in args.peers:
        if name == "ceiling":
            peers.append(Ceiling(args, gen_ns, sink_ns))
        elif name in ("linux-bridge", "linux-bridge-rps"):
            other = next((p for p in peers if isinstance(p, LinuxBridge)), None)
            peers.append(LinuxBridge(args, gen_ns, sink_ns, rps=name.endswith("-rps"),
                                     same_as=other))
        elif name == "ovs":
            peers.append(Ovs(args, gen_ns, sink_ns))
        elif name == "fastpath":
            peers.append(Fastpath(args, gen_ns, sink_ns))
        else:
            raise SystemExit(f"unknown peer {name!r} (known: {', '.join(ALL_PEERS)})")
    return peers


# ---------------------------------------------------------------- one trial

def pktgen_cmd(args, ns, core, *argv):
    return (["ip", "netns", "exec", ns.name] + pinned(args.nice, core) +
            [PY, "-m", "fastpath.afpacket.pktgen_cli"] + list(argv))


def trial(args, peer, size, gen_ns, sink_ns):
    flows = getattr(args, "flows", 1) or 1                        # --flows
    frames = frames_for(size) if flows <= 1 else flow_frames(size, flows)
    match = (["--ethertype", hex(ETHERTYPE), "--src", GEN_MAC] if flows <= 1 else
             ["--ethertype", "0x800", "--dst", SINK_MAC])
    sink_cmd = pktgen_cmd(args, sink_ns, args.sink_core, "sink", peer.sink_if,
                          *match,
                          "--hello", hello_frame().hex(), "--hello-count", "3",
                          "--seconds", str(args.seconds + 30), "--idle-stop", "0.5")
    for f in frames:
        sink_cmd += ["--expect", f.hex()]
    gen_cmd = pktgen_cmd(args, gen_ns, args.gen_core, "gen", peer.gen_if, "--seconds", str(args.seconds),
                         "--method", args.method)
    for f in frames:
        gen_cmd += ["--frame", f.hex()]
    load0 = os.getloadavg()[0]
    peer.before_trial()
    cpu0 = cpu_times()
    sink = subprocess.Popen(sink_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True)
    boost(args.nice, sink.pid)
    try:
        ready = read_json_line(sink, 30)
        if not ready or not ready.get("ready"):
            raise RuntimeError(f"sink did not start: {sink.stderr.read() if sink.poll() is not None else ''}")
        time.sleep(0.2)                       # the hellos reach the switches; MACs learned
        with subprocess.Popen(gen_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=REPO, stdin=subprocess.DEVNULL, start_new_session=True) as gp:
            try:
                boost(args.nice, gp.pid)
                out, err = gp.communicate(timeout=args.seconds + 60)
            except BaseException:
                gp.kill()
                raise
        g = subprocess.CompletedProcess(gen_cmd, gp.returncode, out, err)
        if g.returncode != 0:
            raise RuntimeError(f"generator failed: {g.stderr.strip()}")
        gen = json.loads(g.stdout.strip().splitlines()[-1])
        # the sink stops 0.5 s after the last frame; one that got nothing is told to stop
        result = read_json_line(sink, 3.0)
        if result is None:
            sink.send_signal(signal.SIGINT)
            result = read_json_line(sink, 10.0)
        if result is None:
            raise RuntimeError("sink gave no result")
    finally:
        stop_process(sink)
    cpu1 = cpu_times()
    extra = peer.after_trial()
    cpu = cpu_report(args, cpu0, cpu1, gen, result, extra.get("switch_cpu_seconds"))
    load1 = os.getloadavg()[0]
    sent, got = gen["sent"], result["frames"]
    el = gen["elapsed"]
    return {"peer": peer.name, "size": size, "sent": sent, "received": got,
            "elapsed": el, "offered_pps": sent / el if el else 0.0,
            "delivered_pps": got / el if el else 0.0,
            "loss": 1.0 - got / sent if sent else 1.0,
            "expected": result.get("expected"), "unexpected": result.get("unexpected"),
            "first_unexpected": result.get("first_unexpected"),
            "tagged": result.get("tagged"), "other": result.get("other"),
            "sink_ring_drops": result.get("ring_drops"), "send_errors": gen["send_errors"],
            "method": gen["method"], "loadavg": [round(load0, 2), round(load1, 2)],
            "cpu": cpu, "others": max(cpu.get(c, {}).get("others", 0.0) for c in
                                      {args.gen_core, args.sink_core, args.switch_core}),
            "gen_wait": gen["run_delay"] / el if el and "run_delay" in gen else None,
            "extra": extra}


def cpu_report(args, cpu0, cpu1, gen, sink, switch_cpu):
    """Per core over the trial: busy share of tasks (user+nice+system), softirq share, and
    the share taken by tasks that are not ours ("others": other engineers' builds...).
    Ours: the generator and the sink (their own rusage) and the switch daemon."""
    ours = {c: 0.0 for c in cpu0}
    ours[args.gen_core] = ours.get(args.gen_core, 0.0) + gen.get("cpu_user", 0) + gen.get("cpu_sys", 0)
    ours[args.sink_core] = ours.get(args.sink_core, 0.0) + sink.get("cpu_user", 0) + sink.get("cpu_sys", 0)
    if switch_cpu:
        ours[args.switch_core] = ours.get(args.switch_core, 0.0) + switch_cpu
    out = {}
    for c in cpu0:
        task = cpu1[c][0] - cpu0[c][0]
        soft = cpu1[c][1] - cpu0[c][1]
        wall = cpu1[c][2] - cpu0[c][2]
        if wall <= 0:
            continue
        out[c] = {"tasks": round(task / wall, 3), "softirq": round(soft / wall, 3),
                  "others": round(max(0.0, task - ours.get(c, 0.0)) / wall, 3)}
    return out


# ---------------------------------------------------------------- the run

def contention(r):
    """How much other people's tasks held this trial back: the share of time the generator
    or the switch daemon waited for a CPU (run queue delay), but no more than the share of
    a core those tasks used. (Waits also come from our own processes -- ksoftirqd doing the
    veth deliveries, the sink -- and foreign tasks also fill idle gaps without delaying
    anyone; only the overlap of both is contention.)"""
    wait = max(r["gen_wait"] or 0.0, r["extra"].get("switch_wait") or 0.0)
    return min(wait, r["others"])


def measure(args, peer, size, gen_ns, sink_ns):
    """One trial; on a shared machine, repeated (--retries) while other people's tasks held
    it back more than --max-wait (see contention()). The least contended one counts."""
    def once():
        r = trial(args, peer, size, gen_ns, sink_ns)
        r["wait"] = max(r["gen_wait"] or 0.0, r["extra"].get("switch_wait") or 0.0)
        r["contention"] = contention(r)
        return r

    def show(r, again):
        log(f"e2e: {size:>4} B {peer.name:<17} sent {r['offered_pps']:>10,.0f}/s delivered "
            f"{r['delivered_pps']:>10,.0f}/s loss {100 * r['loss']:5.1f}% load {r['loadavg'][1]:.2f} "
            f"others' CPU {100 * r['others']:.0f}% waited {100 * r['wait']:.1f}%"
            + (" (retrying)" if again else ""))

    return least_contended(once, lambda r: r["contention"], args.max_wait, args.retries, show)


def summarize(results, peers, sizes):
    """Median per (peer, size) and the ratio to the ceiling of the same size."""
    rows = []
    ceil = {}
    for size in sizes:
        for peer in peers:
            rs = [r for r in results if r["peer"] == peer.name and r["size"] == size]
            if not peer.available:
                rows.append({"peer": peer.name, "label": peer.label, "size": size,
                             "skipped": peer.why_not})
                continue
            if not rs:
                continue
            d = [r["delivered_pps"] for r in rs]
            row = {"peer": peer.name, "label": peer.label, "size": size, "trials": len(rs),
                   "offered_pps": statistics.median(r["offered_pps"] for r in rs),
                   "delivered_pps": statistics.median(d),
                   "delivered_min": min(d), "delivered_max": max(d),
                   "loss": statistics.median(r["loss"] for r in rs),
                   "received": sum(r["received"] for r in rs),
                   "loadavg": max(max(r["loadavg"]) for r in rs),
                   "others": max(r["others"] for r in rs),
                   "wait": max(r["wait"] for r in rs)}
            if peer.name == "ceiling":
                ceil[size] = row["delivered_pps"]
            rows.append(row)
    for row in rows:
        c = ceil.get(row["size"])
        if "delivered_pps" in row and c:
            row["ratio_to_ceiling"] = row["delivered_pps"] / c
    return rows


def targets(rows, sizes):
    """fastpath against the targets: >= 1.5x the Linux bridge (its better variant),
    >= 2x OVS userspace, >= 0.9x the raw veth ceiling."""
    out = []
    by = {(r["peer"], r["size"]): r for r in rows if "delivered_pps" in r}
    for size in sizes:
        fp = by.get(("fastpath", size))
        if not fp:
            continue
        bridges = [by[(p, size)] for p in ("linux-bridge", "linux-bridge-rps") if (p, size) in by]
        checks = []
        if bridges:
            best = max(bridges, key=lambda r: r["delivered_pps"])
            checks.append((f"vs {best['peer']}", fp["delivered_pps"] / best["delivered_pps"], 1.5))
        if ("ovs", size) in by:
            checks.append(("vs ovs", fp["delivered_pps"] / by[("ovs", size)]["delivered_pps"], 2.0))
        if "ratio_to_ceiling" in fp:
            checks.append(("vs ceiling", fp["ratio_to_ceiling"], 0.9))
        for what, ratio, goal in checks:
            out.append({"size": size, "what": what, "ratio": ratio, "target": goal,
                        "met": ratio >= goal})
    return out


def markdown(rows, checks):
    lines = ["| peer | frame | offered pps | delivered pps | loss % | ratio to ceiling | "
             "delivered range (trials) | load avg | others' CPU / our wait |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['label']} | {r['size']} B | – | – | – | – | {r['skipped']} | | |")
            continue
        ratio = f"{r['ratio_to_ceiling']:.2f}" if "ratio_to_ceiling" in r else "–"
        lines.append(f"| {r['label']} | {r['size']} B | {r['offered_pps']:,.0f} | "
                     f"{r['delivered_pps']:,.0f} | {100 * r['loss']:.1f} | {ratio} | "
                     f"{r['delivered_min']:,.0f}–{r['delivered_max']:,.0f} ({r['trials']}) | "
                     f"{r['loadavg']:.2f} | {100 * r['others']:.0f} % / {100 * r['wait']:.1f} % |")
    if checks:
        lines += ["", "| fastpath target | frame | ratio | target | met |", "|---|---:|---:|---:|---|"]
        for c in checks:
            lines.append(f"| {c['what']} | {c['size']} B | {c['ratio']:.2f} | ≥ {c['target']} | "
                         f"{'yes' if c['met'] else 'no'} |")
    return "\n".join(lines)


def run(args):
    """Build everything, measure, tear everything down; returns the report as a dict."""
    if not can_run():
        raise SystemExit("e2e: needs root, veth and network namespaces")
    check_cores(args, "gen_core", "switch_core", "sink_core")
    ncpu = os.cpu_count() or 1
    results = []
    t_start = time.monotonic()
    meta = {"mode": "short" if args.short else "full", "seconds": args.seconds,
            "trials": args.trials, "sizes": args.sizes, "gen_core": args.gen_core,
            "switch_core": args.switch_core, "sink_core": args.sink_core,
            "method": args.method, "nice": args.nice, "kernel": platform.release(), "cpus": ncpu,
            "flows": getattr(args, "flows", 1), "fastpath_args": getattr(args, "fastpath_args", []),
            "loadavg_start": loadavg()}
    with contextlib.ExitStack() as stack:
        gen_ns = stack.enter_context(Netns("egen"))
        sink_ns = stack.enter_context(Netns("esnk"))
        peers = make_peers(args, gen_ns, sink_ns)
        for p in peers:
            if p.available:
                log(f"e2e: setting up {p.name}")
                p.setup(stack)
        for t, size, p in rounds(args.trials, args.sizes, peers):
            if not p.available:
                continue
            r = measure(args, p, size, gen_ns, sink_ns)
            r["trial"] = t
            results.append(r)
    rows = summarize(results, peers, args.sizes)
    checks = targets(rows, args.sizes)
    finish_meta(meta, t_start)
    return {"meta": meta, "summary": rows, "targets": checks, "results": results,
            "table": markdown(rows, checks)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true",
                   help="one trial of 2 s per peer and size, without linux-bridge-rps (the CI path)")
    p.add_argument("--sizes", default="64,1518", help="frame sizes with FCS (default 64,1518)")
    p.add_argument("--seconds", type=float, help="generator time per trial (default 5, short 2)")
    p.add_argument("--trials", type=int, help="trials per peer and size (default 3, short 1)")
    p.add_argument("--peers", default=None,
                   help=f"which to run (default all: {','.join(ALL_PEERS)}; short: "
                        f"{','.join(SHORT_PEERS)})")
    p.add_argument("--method", choices=("ring", "sendmmsg"), default=None,
                   help="generator transmit method (default: pktgen's DEFAULT_METHOD)")
    p.add_argument("--gen-core", type=int, default=0)
    p.add_argument("--switch-core", type=int, default=1)
    p.add_argument("--sink-core", type=int, default=None, help="default: the generator's core")
    p.add_argument("--max-wait", type=float, default=0.05, metavar="SHARE",
                   help="repeat a trial in which the generator or the switch waited for a CPU "
                        "while other people's tasks ran more than this share of the time "
                        "(default 0.05)")
    p.add_argument("--retries", type=int, help="repeats per trial at most (default 2, short 0)")
    p.add_argument("--nice", type=int, default=0,
                   help="nice value for the generator, the sink and the switch daemons, each in a "
                        "session (autogroup) of its own: e.g. -10 on a machine shared with other "
                        "work (default 0)")
    p.add_argument("--flows", type=int, default=1,
                   help="with N > 1, the generator cycles through N IPv4/UDP flows (source MAC, "
                        "address and port of their own), which a hash (AF_PACKET fanout, RPS) can "
                        "spread; default 1: the same 4 frames of EtherType 0x88B5")
    p.add_argument("--fastpath-args", default="", metavar="ARGS",
                   help="more arguments for `fastpath run`, e.g. '--workers 2'")
    p.add_argument("--fastpath-cpus", default=None, metavar="LIST",
                   help="CPUs for the fastpath daemon (taskset -c LIST; default --switch-core)")
    p.add_argument("--json", metavar="OUT", help="write the full report (every trial) here")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    args.fastpath_args = shlex.split(args.fastpath_args)
    for s in args.sizes:
        if not 64 <= s <= 1518:
            p.error("--sizes: each in 64..1518")
    if args.peers is None:
        args.peers = ",".join(SHORT_PEERS if args.short else ALL_PEERS)
    args.peers = [s.strip() for s in args.peers.split(",") if s.strip()]
    default_by_mode(args, seconds=(2.0, 5.0), trials=(1, 3), retries=(0, 2))
    if args.sink_core is None:
        args.sink_core = args.gen_core
    default_method(args)
    return args


def heading(m):
    """The line above the table, from the report's meta."""
    return (f"# fastpath end to end ({m['mode']}: {m['trials']} trial(s) x {m['seconds']:g} s, "
            f"median; kernel {m['kernel']}, {m['cpus']} CPUs; generator {m['method']} on core "
            f"{m['gen_core']}, switch on core {m['switch_core']}, sink on core {m['sink_core']}"
            + heading_end(m))


def main(argv=None):
    args = parse_args(argv)
    return run_and_print(args, run, heading)


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    sys.exit(main())
