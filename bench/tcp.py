"""Real traffic between two hosts, as users leave their interfaces: iperf3 TCP (1 and 4
streams) and ping RTT at low load, through a fastpath bridge of two AF_PACKET ports, through
a Linux bridge and through Open vSwitch's userspace datapath (netdev, AF_PACKET ports) in
the same places, in the same run, interleaved; Open vSwitch twice, as users leave the
veths and at its best setting (every offload off, see below).

Topology: namespaces tcpa and tcpb (10.2.0.1, 10.2.0.2), each on a veth whose other end
is in namespace tcpsw, where the switch under test joins the two ends. Default offloads
and MTUs everywhere (no ethtool -K). fastpath runs as `fastpath run` (its own process) in
tcpsw; Open vSwitch's daemons (bench/ovs.py) are started once per run, their bridge added
for its turn and deleted after it. A switch that stalls TCP gets 0 Gbit/s (Open vSwitch
userspace does with default offloads: it passes on the veth's partial checksums and
super-frames as they are), a figure like any other; a ratio against 0 is shown as "inf"
(or "n/a" when both are 0) and is null in the JSON.

Peer ovs-offloads-off is Open vSwitch userspace at its best setting: for its turn only,
every veth of the topology (both ends) gets `ethtool -K IF tx off tso off gso off gro off`,
and after its turn each gets back exactly the features `ethtool -k` showed before (checked;
the run stops if they cannot be restored), so the other peers always run with the
defaults. It is the "OVS best" figure of the target (issue #14): fastpath's TCP with
default offloads >= 0.75x the Linux bridge's and >= 5x OVS userspace's at its best.

    python3 -m bench.tcp [--seconds S] [--rounds N]
                         [--peers linux-bridge,ovs,ovs-offloads-off,fastpath]
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from netns import Netns, unique_name, veth_pair  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ovs  # noqa: E402

A_IP, B_IP = "10.2.0.1", "10.2.0.2"
PEERS = ("linux-bridge", "ovs", "ovs-offloads-off", "fastpath")
LABELS = {"linux-bridge": "Linux bridge", "ovs": "OVS userspace", "ovs-offloads-off": "OVS offl. off",
          "fastpath": "fastpath"}
TARGET_NAMES = {"linux-bridge": "the Linux bridge",
                "ovs-offloads-off": "OVS userspace at its best (offloads off)"}
OVS_PEERS = ("ovs", "ovs-offloads-off")
OVS_BEST = "ovs-offloads-off"   # Open vSwitch userspace at its best setting on veths
OVS_BRIDGE = "ovsbr0"        # not br0: the netdev bridge makes a TAP of its name in tcpsw
OFFLOADS_OFF = ("tx", "tso", "gso", "gro")          # ethtool -K IF tx off tso off gso off gro off
# the RTT is also measured with the dispatcher sleeping as soon as it is idle (the default
# polls on for 20 ms after each frame, so at one ping per 10 ms it never sleeps; README:
# --busy-poll-us)
BUSY_POLL_US = 0
# issue #14: fastpath's TCP with default offloads against these, at least this ratio
TARGETS = (("linux-bridge", 0.75), (OVS_BEST, 5.0))
# `ethtool -k` shows these aggregate features by their legacy names; -K takes the short ones
ETHTOOL_ALIASES = {"rx-checksumming": "rx", "tx-checksumming": "tx", "scatter-gather": "sg",
                   "tcp-segmentation-offload": "tso", "udp-fragmentation-offload": "ufo",
                   "generic-segmentation-offload": "gso", "generic-receive-offload": "gro",
                   "large-receive-offload": "lro", "rx-vlan-offload": "rxvlan",
                   "tx-vlan-offload": "txvlan", "ntuple-filters": "ntuple", "receive-hashing": "rxhash"}


def read_features(ns, ifname):
    """{feature: "on" | "off"} of `ethtool -k IF` in ns, fixed features left out."""
    out = {}
    for line in ns.run(["ethtool", "-k", ifname]).stdout.splitlines()[1:]:
        m = re.match(r"\s*([\w-]+): (on|off)(.*)$", line)
        if m and "[fixed]" not in m.group(3):
            out[m.group(1)] = m.group(2)
    return out


def restore_features(ns, ifname, saved, attempts=3):
    """Set IF's features back to `saved` (read_features() from before); the aggregates
    (tx, tso, ...) first, then the single features they may have carried along. True when
    `ethtool -k` shows `saved` again."""
    for _ in range(attempts):
        now = read_features(ns, ifname)
        diff = {k: v for k, v in saved.items() if now.get(k) != v}
        if not diff:
            return True
        agg = [x for k, v in diff.items() if k in ETHTOOL_ALIASES for x in (ETHTOOL_ALIASES[k], v)]
        single = [x for k, v in diff.items() if k not in ETHTOOL_ALIASES for x in (k, v)]
        for args in (agg, single):
            if args:
                ns.run(["ethtool", "-K", ifname] + args, check=False)
    return read_features(ns, ifname) == saved


@contextlib.contextmanager
def offloads_off(endpoints):
    """Every offload off (tx tso gso gro) on each (ns, ifname) for the block, then each
    interface's features as they were; RuntimeError if they cannot be restored (every
    later figure would be measured with the wrong offloads)."""
    saved = [(ns, ifname, read_features(ns, ifname)) for ns, ifname in endpoints]
    try:
        for ns, ifname, _ in saved:
            ns.run(["ethtool", "-K", ifname] + [x for f in OFFLOADS_OFF for x in (f, "off")], check=False)
            now = read_features(ns, ifname)
            still = [k for k in ("tx-checksumming", "tcp-segmentation-offload",
                                 "generic-segmentation-offload", "generic-receive-offload")
                     if now.get(k) == "on"]
            if still:
                raise RuntimeError(f"ethtool -K {ifname}: still on: {', '.join(still)}")
        yield
    finally:
        bad = [ifname for ns, ifname, f in saved if not restore_features(ns, ifname, f)]
        if bad:
            raise RuntimeError(f"offloads of {', '.join(bad)} could not be restored")


def iperf3(client, server, server_ip, seconds, streams=1):
    """iperf3 TCP from namespace client to server_ip in namespace server: (Gbit/s received,
    error or None, the client's JSON or None). A path that stalls TCP: the connection is
    not made (--connect-timeout) or carries nothing; either way the client is stopped and
    the figure is 0."""
    srv = server.popen(["iperf3", "-s", "-1", "-B", server_ip], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    r, error, doc = None, None, None
    try:
        time.sleep(0.3)
        r = client.run(["iperf3", "-c", server_ip, "-t", str(seconds), "-P", str(streams), "-J",
                        "--connect-timeout", "3000", "--snd-timeout", "3000"],
                       check=False, timeout=seconds + 10)
        srv.wait(5)
    except subprocess.TimeoutExpired:
        error = "iperf3 did not finish"
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
    with contextlib.suppress(AttributeError, TypeError, ValueError):
        doc = json.loads(r.stdout)
    try:
        return doc["end"]["sum_received"]["bits_per_second"] / 1e9, None, doc
    except (TypeError, KeyError):
        if r is not None:
            with contextlib.suppress(AttributeError):
                error = doc.get("error")
            error = error or (r.stderr or r.stdout).strip()[-200:]
        return 0.0, error, doc


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ratio(a, b):
    """a / b; None when b is 0 or either is missing (a switch that stalled)."""
    if a is None or b is None or b == 0 or a != a or b != b:
        return None
    return a / b


def fmt_ratio(a, b, width=0):
    r = ratio(a, b)
    if r is not None:
        text = f"{r:.2f}x"
    elif b == 0 and a:
        text = "inf"
    else:
        text = "n/a"
    return f"{text:>{width}}"


class Topology:
    def __init__(self, stack):
        self.sw, self.a, self.b = (stack.enter_context(Netns(p)) for p in ("tcpsw", "tcpa", "tcpb"))
        self.ports, self.ends = [], []
        for ns, ip in ((self.a, A_IP), (self.b, B_IP)):
            p, h = unique_name("tcs"), unique_name("tch")
            stack.enter_context(veth_pair(p, h, self.sw, ns))
            ns.run(f"ip addr add {ip}/24 dev {h}")
            self.ports.append(p)
            self.ends += [(self.sw, p), (ns, h)]

    def offloads_off(self):
        """Every veth of the topology, both ends, with every offload off for the block."""
        return offloads_off(self.ends)

    def linux_bridge(self):
        self.sw.run("ip link add br0 type bridge")
        for p in self.ports:
            self.sw.run(f"ip link set {p} master br0")
        self.sw.run("ip link set br0 up")

    def no_linux_bridge(self):
        self.sw.run("ip link del br0", check=False)

    def start_ovs(self, stack):
        """Open vSwitch's daemons in tcpsw (once per run); ovs_bridge() joins the ports."""
        self.ovs_daemons = ovs.OvsDaemons(self.sw, prefix="fastpath-tcp-ovs.")
        self.ovs_daemons.start(stack)

    def ovs_bridge(self):
        self.ovs_daemons.add_bridge(OVS_BRIDGE, self.ports)

    def no_ovs_bridge(self):
        self.ovs_daemons.del_bridge(OVS_BRIDGE)

    def fastpath(self, rundir, *args):
        sock = os.path.join(rundir, "fp.sock")
        log = open(os.path.join(rundir, "fp.log"), "w")
        proc = self.sw.popen([sys.executable, "-m", "fastpath.cli", "run", "--control", sock, *args],
                             stdout=log, stderr=subprocess.STDOUT)
        ctl = [sys.executable, "-m", "fastpath.ctl", "--control", sock]
        deadline = time.monotonic() + 20
        while subprocess.run(ctl + ["show"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("fastpath did not start: " + open(log.name).read())
            time.sleep(0.1)
        subprocess.run(ctl + ["add-br", "br0"], check=True, capture_output=True)
        for p in self.ports:
            subprocess.run(ctl + ["add-port", "br0", p, "type=afpacket"], check=True, capture_output=True)
        return proc

    def fastpath_packets(self, rundir):
        """Frames fastpath's ports received so far."""
        r = subprocess.run([sys.executable, "-m", "fastpath.ctl", "--control",
                            os.path.join(rundir, "fp.sock"), "--format", "json", "show", "interfaces"],
                           capture_output=True, text=True)
        try:
            return sum(int(row.get("rx_packets", 0)) for row in json.loads(r.stdout))
        except (ValueError, TypeError, AttributeError):
            return 0

    def iperf(self, seconds, streams):
        gbps, self.iperf_error, _ = iperf3(self.a, self.b, B_IP, seconds, streams)
        return gbps

    def rtt_ms(self, count=200, interval=0.01):
        self.a.run(f"ping -c 3 -i 0.05 -W 1 {B_IP}", check=False)      # ARP and FDB warm
        r = self.a.run(["ping", "-c", str(count), "-i", str(interval), "-W", "1", B_IP], check=False)
        m = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
        return float(m.group(1)) if m else float("nan")


def run(seconds=3, rounds=2, out=print, peers=PEERS):
    """Measure `peers` in interleaved rounds; a peer whose tools are missing here (Open
    vSwitch not installed, no ethtool) is left out and named in "not_measured"."""
    from contextlib import ExitStack
    not_measured = {}
    for p in OVS_PEERS:
        if p in peers and ovs.why_not_available():
            not_measured[p] = ovs.why_not_available()
    if OVS_BEST in peers and OVS_BEST not in not_measured and shutil.which("ethtool") is None:
        not_measured[OVS_BEST] = "ethtool not installed"
    peers = [p for p in peers if p not in not_measured]
    res = {p: {"tcp1": [], "tcp4": [], "rtt": []} for p in peers}
    packets = 0
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="fp-tcp-") as rundir:
        t = Topology(stack)
        if any(p in OVS_PEERS for p in peers):
            t.start_ovs(stack)
        for _ in range(rounds):
            for peer in peers:
                proc = None
                with ExitStack() as turn:          # undone in reverse: bridge, then offloads
                    if peer == "linux-bridge":
                        t.linux_bridge()
                        turn.callback(t.no_linux_bridge)
                    elif peer in OVS_PEERS:
                        if peer == OVS_BEST:
                            turn.enter_context(t.offloads_off())
                        t.ovs_bridge()
                        turn.callback(t.no_ovs_bridge)
                    else:
                        proc = t.fastpath(rundir)
                        turn.callback(stop, proc)
                    res[peer]["rtt"].append(t.rtt_ms())
                    for key, streams in (("tcp1", 1), ("tcp4", 4)):
                        res[peer][key].append(t.iperf(seconds, streams))
                        if t.iperf_error:        # e.g. "unable to connect to server: ..."
                            res[peer].setdefault("iperf3_errors", []).append(f"{key}: {t.iperf_error}")
                    if proc:
                        packets += t.fastpath_packets(rundir)
                if peer == "fastpath":
                    # the same switch polling on between frames: the RTT only
                    with ExitStack() as turn:
                        turn.callback(stop, t.fastpath(rundir, "--busy-poll-us", str(BUSY_POLL_US)))
                        res[peer].setdefault("rtt_no_busy_poll", []).append(t.rtt_ms())
    best = {p: {"tcp1": max(v["tcp1"]), "tcp4": max(v["tcp4"]), "rtt": min(v["rtt"])} for p, v in res.items()}
    if res.get("fastpath", {}).get("rtt_no_busy_poll"):
        best["fastpath"]["rtt_no_busy_poll"] = min(res["fastpath"]["rtt_no_busy_poll"])
    tgt = targets(best)
    table = render(best, not_measured, tgt)
    for p, v in res.items():
        if v.get("iperf3_errors"):
            table += f"\n({LABELS[p]}, iperf3: {v['iperf3_errors'][0]})"
    out(table)
    return {"rounds": res, "best": best, "table": table, "packets": packets,
            "not_measured": not_measured, "seconds": seconds, "rounds_run": rounds,
            "ratios": ratios(best), "ovs_best": OVS_BEST if OVS_BEST in best else None,
            "targets": tgt}


def ratios(best):
    """fastpath against each other peer: TCP as fastpath / peer (None against a 0), RTT as
    fastpath's minus the peer's, in ms."""
    fp = best.get("fastpath")
    out = {}
    for peer, b in best.items():
        if peer == "fastpath" or fp is None:
            continue
        out[peer] = {"tcp1": ratio(fp["tcp1"], b["tcp1"]), "tcp4": ratio(fp["tcp4"], b["tcp4"]),
                     "rtt_diff_ms": fp["rtt"] - b["rtt"]}
    return out


def targets(best):
    """Issue #14's targets for TCP (1 and 4 streams), default offloads: [{figure, peer,
    target, ratio, met}] for each baseline measured. Against a baseline of 0 Gbit/s the
    ratio is None and the target is met when fastpath carried anything."""
    fp = best.get("fastpath")
    out = []
    if fp is None:
        return out
    for key in ("tcp1", "tcp4"):
        for peer, want in TARGETS:
            if peer not in best:
                continue
            r = ratio(fp[key], best[peer][key])
            met = r >= want if r is not None else bool(fp[key]) and best[peer][key] == 0
            out.append({"figure": key, "peer": peer, "target": want, "ratio": r, "met": met})
    return out


def target_lines(tgt):
    names = {"tcp1": "TCP 1 stream", "tcp4": "TCP 4 streams"}
    lines = []
    for t in tgt:
        r = f"{t['ratio']:.2f}x" if t["ratio"] is not None else "inf"
        lines.append(f"target: fastpath {names[t['figure']]} >= {t['target']:g}x {TARGET_NAMES[t['peer']]}: "
                     f"{r} {'met' if t['met'] else 'NOT met'}")
    return lines


def render(best, not_measured=None, tgt=None):
    """The table: one column per peer, then fastpath against each other peer, then the
    targets."""
    not_measured = not_measured or {}
    cols = [p for p in PEERS if p in best or p in not_measured]
    others = [p for p in cols if p != "fastpath" and p in best] if "fastpath" in best else []
    head = f"{'':<28}" + "".join(f"{LABELS[p]:>15}" for p in cols)
    head += "".join(f"{'fp vs ' + LABELS[p]:>22}" for p in others)
    lines = [head]
    for key, name, unit in (("tcp1", "iperf3 TCP, 1 stream", "Gb"), ("tcp4", "iperf3 TCP, 4 streams", "Gb"),
                            ("rtt", "ping RTT, 1 per 10 ms (avg)", "ms")):
        line = f"{name:<28}"
        for p in cols:
            if p not in best:
                line += f"{'–':>15}"
            elif unit == "Gb":
                line += f"{best[p][key]:>12.2f} Gb"
            else:
                line += f"{best[p][key]:>12.3f} ms"
        fp = best.get("fastpath", {}).get(key)
        for p in others:
            if unit == "Gb":
                line += fmt_ratio(fp, best[p][key], 22)
            else:
                line += f"{fp - best[p][key]:>+19.3f} ms"
        lines.append(line)
    if "rtt_no_busy_poll" in best.get("fastpath", {}):
        b = best["fastpath"]["rtt_no_busy_poll"]
        line = f"ping RTT, fastpath run --busy-poll-us {BUSY_POLL_US} (sleeps when idle): {b:.3f} ms"
        if "linux-bridge" in best:
            line += f" ({b - best['linux-bridge']['rtt']:+.3f} ms vs the Linux bridge)"
        lines.append(line)
    if OVS_BEST in best:
        lines.append(f"({LABELS[OVS_BEST]}: Open vSwitch userspace with every offload off on every veth "
                     "for its turn, its best setting here)")
    lines += target_lines(targets(best) if tgt is None else tgt)
    for p, why in not_measured.items():
        lines.append(f"({LABELS[p]}: not measured: {why})")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--peers", default=",".join(PEERS),
                    help=f"which switches (default all: {','.join(PEERS)})")
    a = ap.parse_args(argv)
    peers = [p.strip() for p in a.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEERS:
            ap.error(f"--peers: unknown {p!r} (known: {', '.join(PEERS)})")
    report = run(a.seconds, a.rounds, peers=peers)
    print(json.dumps(report["best"]))


if __name__ == "__main__":
    main()
