"""vhost-user and memif throughput: fastpath next to DPDK, measured back to back.

    python bench/vm.py [--short] [--json OUT] [--seconds N] [--trials N] [--cases ...]
                       [--nice -10]                                           (root)

Every case is measured twice in a row, once with fastpath in the middle and once with
DPDK's own implementation in its place (the baseline), so fastpath can be given as a
ratio to DPDK on the same machine at the same moment. 64-byte frames (DPDK's
convention: 64 bytes in the buffer, no FCS), one queue, DPDK's testpmd as the far end
(`--no-pci --no-huge -m 256`, its own --file-prefix and runtime directory).

  vhost-rx   guest -> switch. testpmd's virtio_user (a virtio-net front end in a process,
             which is how vhost backends are measured without a VM) in txonly mode sends
             into a fastpath vhost-user port (options:vhost-socket); the bridge forwards
             to a pg port with options:keep=false (a sink that frees the buffers).
             Baseline: testpmd with DPDK's vhost PMD (--vdev net_vhost0,iface=SOCK) as the
             backend in rxonly mode.
  vhost-tx   switch -> guest. A pg port replays one frame in a loop (fastpath's packet
             generator, on fastpath's core) and the bridge forwards it to the vhost-user
             port, into testpmd virtio_user in rxonly mode. Baseline: DPDK's vhost PMD
             in txonly mode.
  memif-rx   testpmd net_memif (role=client) txonly -> fastpath memif port (master) ->
             pg sink. Baseline: testpmd net_memif role=server in rxonly mode.
  memif-tx   pg generator -> fastpath memif port -> testpmd net_memif client rxonly.
             Baseline: testpmd net_memif server txonly -> client rxonly.

Both memif and vhost ports are access ports (tag=10) of bridge br0, with a static FDB
entry for the destination MAC, so frames take the unicast forwarding path.

Cores: the switch side (fastpath, or the DPDK backend's forwarding lcore) runs on
--switch-core, the front end's forwarding lcore on --peer-core; testpmd's main lcore
(statistics, telemetry: mostly asleep) on the other one. Rates come from counters read
twice, --seconds apart, after --warmup seconds of traffic: fastpath's interface counters
(over its control socket) and testpmd's port counters (DPDK telemetry, /ethdev/stats).
"delivered" is what reached the far end's sink: fastpath's pg sink or the front end's
rx counter; testpmd's tx counter is reported next to it (for txonly into a full ring it
counts only what the ring took).

Shared-memory throughput on this kind of two-vCPU machine swings up to 3x with where the
hypervisor puts the two vCPUs (a cache-line round trip of ~95 ns or ~500 ns), so only the
ratio to the DPDK figure measured right next to it means anything. Each case reports the
median over --trials (3; 1 with --short), the load average, how much CPU other people's
tasks took (in cores) and, per side, the share of a core our process got. On a shared
machine a trial in which one of our two processes waited for a CPU more than --max-wait
of the time is run again (--retries), and --nice gives our processes priority over other
sessions'. "Mpps per switch core" divides the delivered rate by the share of a core the
switch side got: an extrapolation, kind to fastpath (which sleeps when its rings are
empty, so its share is time spent working) and unkind to DPDK (which polls all the
time, so its share includes polling empty rings).
"""
import argparse
import contextlib
import glob
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trials import (boost, check_cores, cpu_times, default_by_mode, finish_meta,  # noqa: E402
                    least_contended, loadavg, log, proc_cpu_seconds, proc_run_delay, rounds,
                    run_and_print, stop_process)

PY = sys.executable
TESTPMD = shutil.which("dpdk-testpmd")
FRAME_SIZE = 64
VLAN = 10
SRC_MAC = "02:00:00:00:0b:01"        # the generator side
DST_MAC = "02:00:00:00:0b:02"        # the sink side (static FDB entry)
ALL_CASES = ("vhost-rx", "vhost-tx", "memif-rx", "memif-tx")
LABELS = {
    "vhost-rx": "vhost-user guest->switch (virtio_user txonly)",
    "vhost-tx": "vhost-user switch->guest (virtio_user rxonly)",
    "memif-rx": "memif peer->switch (net_memif txonly)",
    "memif-tx": "memif switch->peer (net_memif rxonly)",
}


def no_core_dumps():
    # DPDK 22.11's memif PMD may segfault when its peer goes away first; no core files
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.setsid()


def wait_for(cond, timeout, what, check=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check:
            check()
        if cond():
            return
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")


def udp_frame(size=FRAME_SIZE):
    """What testpmd's txonly sends, near enough: Ethernet/IPv4/UDP, `size` bytes."""
    def mac(m):
        return bytes(int(x, 16) for x in m.split(":"))
    payload = size - 14 - 20 - 8
    ip = bytearray(b"\x45\x00" + (20 + 8 + payload).to_bytes(2, "big") + b"\x00\x00\x00\x00\x40\x11\x00\x00"
                   + bytes([198, 18, 0, 1]) + bytes([198, 18, 0, 2]))
    s = sum(int.from_bytes(ip[i:i + 2], "big") for i in range(0, 20, 2))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    ip[10:12] = (~s & 0xffff).to_bytes(2, "big")
    udp = (9).to_bytes(2, "big") + (9).to_bytes(2, "big") + (8 + payload).to_bytes(2, "big") + b"\0\0"
    return mac(DST_MAC) + mac(SRC_MAC) + b"\x08\x00" + bytes(ip) + udp + bytes(payload)


# ---------------------------------------------------------------- fastpath, in a process of its own

def worker(spec):
    """`fastpath run` plus a packet generator: the switch with its control socket, built
    from spec["commands"]; SIGUSR1 starts the pg generator of spec["generator"] (one frame
    replayed in a loop), SIGUSR2 stops it, SIGTERM/SIGINT stop the switch."""
    from fastpath.control import Control
    from fastpath.daemon import ControlServer
    from fastpath.switch import Switch
    os.sched_setaffinity(0, {spec["core"]})
    sw = Switch(n_buffers=spec["buffers"])
    control = Control(sw)
    server = ControlServer(spec["control"], control, sw.graph)
    server.open()
    gen = spec.get("generator")

    def start_gen(*_):
        sw.port(gen["port"]).io[0].load([bytes.fromhex(gen["frame"])], loop=True, limit=1 << 62)

    def stop_gen(*_):
        sw.port(gen["port"]).io[0].load([])

    def quit_(*_):
        sw.graph.stop()

    try:
        for argv in spec["commands"]:
            control.execute(argv)
        if gen:
            signal.signal(signal.SIGUSR1, start_gen)
            signal.signal(signal.SIGUSR2, stop_gen)
        signal.signal(signal.SIGTERM, quit_)
        signal.signal(signal.SIGINT, quit_)
        print("ready", flush=True)
        sw.graph.run()
    finally:
        control.close()
        sw.close()
        server.close()
    return 0


class Fastpath:
    """The switch side of a case: fastpath in a worker process pinned to the switch core."""
    name = "fastpath"

    def __init__(self, args, workdir, commands, generator=None):
        self.args = args
        self.control = os.path.join(workdir, "fastpath.sock")
        self.logfile = os.path.join(workdir, "fastpath.log")
        spec = {"control": self.control, "core": args.switch_core, "buffers": 16384,
                "commands": commands, "generator": generator}
        with open(self.logfile, "w") as f:
            self.proc = subprocess.Popen([PY, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                                         stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=REPO, preexec_fn=no_core_dumps)
        boost(args.nice, self.proc.pid)
        wait_for(lambda: "ready" in open(self.logfile).read(), 60, "fastpath to start", self.check)

    def check(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"fastpath exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self):
        with contextlib.suppress(OSError):
            return "".join(open(self.logfile).readlines()[-30:])
        return ""

    def ctl(self, *argv, fmt="json"):
        from fastpath.ctl import request
        out = request(list(argv), fmt=fmt, path=self.control, timeout=30)
        return out

    def interfaces(self):
        return {r["name"]: r for r in self.ctl("show", "interfaces")}

    def generator(self, on):
        self.proc.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    def close(self):
        stop_process(self.proc, 10.0, signal.SIGTERM)


# ---------------------------------------------------------------- DPDK testpmd

class Telemetry:
    """DPDK's telemetry socket (v2): one JSON command, one JSON reply."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.settimeout(5)
        self.sock.connect(path)
        self.info = json.loads(self.sock.recv(1 << 16))

    def query(self, cmd):
        self.sock.send(cmd.encode())
        return json.loads(self.sock.recv(1 << 20))

    def port_stats(self, port=0):
        return self.query(f"/ethdev/stats,{port}")["/ethdev/stats"]

    def close(self):
        self.sock.close()


class TestPmd:
    """dpdk-testpmd with one vdev, forwarding from the start (--auto-start), its forwarding
    lcore on `core`, its main lcore on the other core; stopped with SIGINT."""
    __test__ = False

    def __init__(self, args, workdir, name, vdev, mode, core, wait_telemetry=True, extra=()):
        self.args = args
        self.name = name
        self.rundir = os.path.join(workdir, f"rt-{name}")
        os.makedirs(self.rundir, exist_ok=True)
        self.prefix = f"fpvm{os.getpid()}{name}"
        main = args.peer_core if core == args.switch_core else args.switch_core
        self.cmd = [TESTPMD, "-l", ",".join(str(c) for c in sorted({core, main})), "--main-lcore", str(main),
                    "--no-pci", "--no-huge", "-m", str(args.memory), f"--file-prefix={self.prefix}",
                    "--log-level=lib.eal:error", f"--vdev={vdev}", "--",
                    f"--forward-mode={mode}", "--auto-start", "--stats-period", "1",
                    f"--total-num-mbufs={args.mbufs}", f"--txpkts={FRAME_SIZE}", "--nb-cores=1",
                    f"--eth-peer=0,{DST_MAC}", *extra]
        self.logfile = os.path.join(workdir, f"testpmd-{name}.log")
        env = dict(os.environ, RUNTIME_DIRECTORY=self.rundir)
        with open(self.logfile, "w") as f:
            self.proc = subprocess.Popen(self.cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, preexec_fn=no_core_dumps)
        boost(args.nice, self.proc.pid)
        self.tel = None
        if wait_telemetry:
            self.connect_telemetry()

    def connect_telemetry(self, timeout=60):
        def ready():
            paths = glob.glob(os.path.join(self.rundir, "dpdk", self.prefix, "dpdk_telemetry.v2"))
            if not paths:
                return False
            try:
                self.tel = Telemetry(paths[0])
            except OSError:
                return False
            return True
        wait_for(ready, timeout, f"testpmd {self.name}'s telemetry socket", self.check)

    def check(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"testpmd {self.name} exited ({self.proc.returncode}):\n{self.tail()}")

    def tail(self, n=30):
        with contextlib.suppress(OSError):
            lines = [ln for ln in open(self.logfile, errors="replace").read().splitlines()
                     if not ln.startswith("\x1b")]
            return "\n".join(lines[-n:])
        return ""

    def stats(self):
        return self.tel.port_stats(0)

    def close(self):
        if self.tel:
            with contextlib.suppress(OSError):
                self.tel.close()
        stop_process(self.proc, 15, signal.SIGINT)


# ---------------------------------------------------------------- one trial

def sample(sources):
    """{key: (time, {counter: value})} for every source, each timed around its own read."""
    out = {}
    for key, fn in sources.items():
        t0 = time.monotonic()
        v = fn()
        out[key] = ((t0 + time.monotonic()) / 2, v)
    return out


def rate(s0, s1, key, field):
    t0, v0 = s0[key]
    t1, v1 = s1[key]
    return (v1.get(field, 0) - v0.get(field, 0)) / (t1 - t0)


def measure_window(args, sources, moving, procs):
    """Wait until `moving()` (frames flow), warm up, then read every source twice."""
    wait_for(moving, 60, "frames to flow", lambda: [p.check() for p in procs])
    time.sleep(args.warmup)
    cpu0 = cpu_times()
    own0 = {p.name: proc_cpu_seconds(p.proc.pid) or 0.0 for p in procs}
    wait0 = {p.name: proc_run_delay(p.proc.pid) or 0.0 for p in procs}
    load0 = os.getloadavg()
    s0 = sample(sources)
    time.sleep(args.seconds)
    s1 = sample(sources)
    t = s1[next(iter(s1))][0] - s0[next(iter(s0))][0]
    cpu1 = cpu_times()
    own1 = {p.name: proc_cpu_seconds(p.proc.pid) or 0.0 for p in procs}
    waits = {p.name: round(((proc_run_delay(p.proc.pid) or 0.0) - wait0[p.name]) / t, 4) for p in procs}
    shares = {p.name: round((own1[p.name] - own0[p.name]) / t, 3) for p in procs}
    for p in procs:
        p.check()
    busy = sum(cpu1[c][0] - cpu0[c][0] for c in cpu0)
    wall = sum(cpu1[c][2] - cpu0[c][2] for c in cpu0)
    ours = sum(own1.values()) - sum(own0.values())
    others = max(0.0, busy - ours) / wall * len(cpu0) if wall else 0.0
    # the switch side is procs[0]: its share of a core during the window (a poller uses
    # all it gets, so this is 1 minus the time other tasks held it off its core)
    return s0, s1, {"loadavg": [round(x, 2) for x in load0], "others_cpu": round(others, 3),
                    "waited": waits, "cpu": shares, "switch_cpu": shares[procs[0].name],
                    "window": round(t, 3)}


def counter(src, name):
    """A fastpath interface row or a testpmd port's stats as a flat dict source."""
    if isinstance(src, Fastpath):
        return lambda: src.interfaces()[name]
    return src.stats


def trial_fastpath(args, case, workdir):
    sock = os.path.join(workdir, "fp-port.sock")
    kind, direction = case.split("-")
    if kind == "vhost":
        port = ["add-port", "br0", "vu0", "type=vhost-user", f"tag={VLAN}", f"options:vhost-socket={sock}"]
    else:
        port = ["add-port", "br0", "vu0", "type=memif", f"tag={VLAN}", f"options:memif-socket={sock}",
                "options:memif-id=0", "options:memif-role=master"]
    sink_port = "vu0" if direction == "tx" else "pg0"
    commands = [["add-br", "br0"], port,
                ["add-port", "br0", "pg0", "type=pg", f"tag={VLAN}", "options:keep=false"],
                ["fdb/add", "br0", sink_port, str(VLAN), DST_MAC]]
    gen = {"port": "pg0", "frame": udp_frame().hex()} if direction == "tx" else None
    fp = tp = None
    try:
        fp = Fastpath(args, workdir, commands, gen)
        mode = "txonly" if direction == "rx" else "rxonly"
        if kind == "vhost":
            vdev = f"net_virtio_user0,path={sock},queues=1,queue_size={args.queue_size}"
        else:
            vdev = f"net_memif0,role=client,socket={sock},socket-abstract=no,id=0"
        tp = TestPmd(args, workdir, "front", vdev, mode, args.peer_core)
        if direction == "tx":
            key = "vhost_running" if kind == "vhost" else "memif_connected"
            wait_for(lambda: fp.interfaces()["vu0"].get(key) == 1, 30, "the port to come up",
                     lambda: [fp.check(), tp.check()])
            fp.generator(True)
        sources = {"fp_port": counter(fp, "vu0"), "fp_pg": counter(fp, "pg0"), "tp": counter(tp, None)}
        if direction == "rx":
            moving = lambda: fp.interfaces()["pg0"]["tx_packets"] > 0        # noqa: E731
        else:
            moving = lambda: tp.stats()["ipackets"] > 0                      # noqa: E731
        s0, s1, info = measure_window(args, sources, moving, [fp, tp])
        if direction == "rx":
            res = {"delivered_pps": rate(s0, s1, "fp_pg", "tx_packets"),
                   "switch_rx_pps": rate(s0, s1, "fp_port", "rx_packets"),
                   "peer_tx_pps": rate(s0, s1, "tp", "opackets")}
        else:
            res = {"delivered_pps": rate(s0, s1, "tp", "ipackets"),
                   "switch_tx_pps": rate(s0, s1, "fp_port", "tx_packets"),
                   "generated_pps": rate(s0, s1, "fp_pg", "rx_packets"),
                   "switch_drop_pps": rate(s0, s1, "fp_port", "tx_drops")}
        row = s1["fp_port"][1]
        res["port_counters"] = {k: v for k, v in row.items() if isinstance(v, int) and v
                                and k not in ("ofport", "sw_if_index")}
        res["peer_counters"] = s1["tp"][1]
        res["pg_counters"] = {k: v for k, v in s1["fp_pg"][1].items() if isinstance(v, int) and v}
        res["runtime"] = [{k: r[k] for k in ("name", "calls", "vectors", "packets", "ns") if k in r}
                          for r in fp.ctl("show", "runtime") if r.get("packets")]
        for r in res["runtime"]:
            r["ns_per_packet"] = round(r["ns"] / r["packets"], 1) if r.get("packets") and "ns" in r else None
        res.update(info)
        if direction == "tx":
            fp.generator(False)
        return res
    finally:
        if tp:
            tp.close()                  # the peer first: DPDK's memif may crash when we leave first
        if fp:
            fp.close()


def trial_dpdk(args, case, workdir):
    sock = os.path.join(workdir, "dpdk-port.sock")
    kind, direction = case.split("-")
    back = front = None
    try:
        if kind == "vhost":
            bvdev = f"net_vhost0,iface={sock},queues=1"
            fvdev = f"net_virtio_user0,path={sock},queues=1,queue_size={args.queue_size}"
        else:
            bvdev = f"net_memif0,role=server,socket={sock},socket-abstract=no,id=0"
            fvdev = f"net_memif0,role=client,socket={sock},socket-abstract=no,id=0"
        bmode, fmode = ("rxonly", "txonly") if direction == "rx" else ("txonly", "rxonly")
        back = TestPmd(args, workdir, "back", bvdev, bmode, args.switch_core)
        wait_for(lambda: os.path.exists(sock), 30, "the backend's socket", back.check)
        front = TestPmd(args, workdir, "front", fvdev, fmode, args.peer_core)
        sources = {"back": counter(back, None), "front": counter(front, None)}
        if direction == "rx":
            moving = lambda: back.stats()["ipackets"] > 0                     # noqa: E731
        else:
            moving = lambda: front.stats()["ipackets"] > 0                    # noqa: E731
        s0, s1, info = measure_window(args, sources, moving, [back, front])
        if direction == "rx":
            res = {"delivered_pps": rate(s0, s1, "back", "ipackets"),
                   "peer_tx_pps": rate(s0, s1, "front", "opackets")}
        else:
            res = {"delivered_pps": rate(s0, s1, "front", "ipackets"),
                   "switch_tx_pps": rate(s0, s1, "back", "opackets")}
        res["back_counters"] = s1["back"][1]
        res["peer_counters"] = s1["front"][1]
        res.update(info)
        return res
    finally:
        if front:
            front.close()
        if back:
            back.close()


def trial_once(args, case, impl):
    workdir = tempfile.mkdtemp(prefix=f"fpvm-{case}-{impl}.")
    try:
        fn = trial_fastpath if impl == "fastpath" else trial_dpdk
        for attempt in range(2):
            try:
                r = fn(args, case, workdir)
                break
            except RuntimeError as e:
                if attempt:
                    raise
                log(f"vm: {case} {impl}: {e}; once more")
                shutil.rmtree(workdir, ignore_errors=True)
                os.makedirs(workdir)
        r.update({"case": case, "impl": impl, "wait": max(r["waited"].values())})
        return r
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def trial(args, case, impl):
    """One trial; on a shared machine repeated (--retries) while one of our two processes
    waited for a CPU more than --max-wait of the time. The least contended one counts."""
    def show(r, again):
        log(f"vm: {case:<9} {impl:<8} delivered {r['delivered_pps'] / 1e6:6.2f} Mpps  "
            f"load {r['loadavg'][0]:.2f}  others' CPU {r['others_cpu']:.2f} cores  "
            f"CPU {', '.join(f'{k} {v:.2f}' for k, v in r['cpu'].items())}  "
            f"waited {', '.join(f'{k} {100 * v:.1f}%' for k, v in r['waited'].items())}"
            + ("  (retrying)" if again else ""))

    return least_contended(lambda: trial_once(args, case, impl), lambda r: r["wait"],
                           args.max_wait, args.retries, show)


# ---------------------------------------------------------------- the run

def summarize(results, cases):
    rows = []
    for case in cases:
        row = {"case": case, "label": LABELS[case]}
        for impl in ("fastpath", "dpdk"):
            rs = [r for r in results if r["case"] == case and r["impl"] == impl]
            if not rs:
                continue
            d = [r["delivered_pps"] for r in rs]
            per_core = [r["delivered_pps"] / r["switch_cpu"] for r in rs if r.get("switch_cpu")]
            row[impl] = {"mpps": statistics.median(d) / 1e6, "min": min(d) / 1e6, "max": max(d) / 1e6,
                         "mpps_per_core": statistics.median(per_core) / 1e6 if per_core else None,
                         "switch_cpu": statistics.median(r["switch_cpu"] for r in rs),
                         "trials": len(rs), "loadavg": max(r["loadavg"][0] for r in rs),
                         "others_cpu": max(r["others_cpu"] for r in rs)}
        if "fastpath" in row and "dpdk" in row and row["dpdk"]["mpps"]:
            # ratio per trial pair (back to back), then the median of those
            pairs = [(f["delivered_pps"], d["delivered_pps"]) for f, d in zip(
                [r for r in results if r["case"] == case and r["impl"] == "fastpath"],
                [r for r in results if r["case"] == case and r["impl"] == "dpdk"]) if d["delivered_pps"]]
            row["ratio"] = statistics.median(f / d for f, d in pairs) if pairs else None
        rows.append(row)
    return rows


def markdown(rows):
    lines = ["| case | fastpath Mpps | DPDK Mpps | fastpath / DPDK | fastpath range | DPDK range | "
             "Mpps per switch core: fastpath / DPDK | load avg (1 min) | others' CPU (cores) |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|"]
    for r in rows:
        f, d = r.get("fastpath"), r.get("dpdk")

        def pc(x):
            return f"{x['mpps_per_core']:.2f}" if x and x.get("mpps_per_core") else "–"

        def rng(x):
            return f"{x['min']:.2f}–{x['max']:.2f} ({x['trials']})" if x else "–"
        lines.append(f"| {r['label']} | {f['mpps']:.2f} | {d['mpps']:.2f} | "
                     f"{r['ratio']:.2f} | {rng(f)} | {rng(d)} | {pc(f)} / {pc(d)} | "
                     f"{max(f['loadavg'], d['loadavg']):.2f} | "
                     f"{max(f['others_cpu'], d['others_cpu']):.2f} |"
                     if f and d and r.get("ratio") is not None else
                     f"| {r['label']} | {f['mpps'] if f else '–'} | {d['mpps'] if d else '–'} | – | | | | | |")
    return "\n".join(lines)


def run(args):
    if os.geteuid() != 0:
        raise SystemExit("vm: needs root (DPDK's EAL, the cores)")
    if TESTPMD is None:
        raise SystemExit("vm: dpdk-testpmd not installed (scripts/setup.sh installs dpdk-dev)")
    check_cores(args, "switch_core", "peer_core")
    ncpu = os.cpu_count() or 1
    t_start = time.monotonic()
    meta = {"mode": "short" if args.short else "full", "seconds": args.seconds, "warmup": args.warmup,
            "trials": args.trials, "frame": FRAME_SIZE, "queue_size": args.queue_size,
            "max_wait": args.max_wait, "retries": args.retries, "switch_core": args.switch_core,
            "peer_core": args.peer_core, "nice": args.nice, "kernel": platform.release(), "cpus": ncpu,
            "testpmd": TESTPMD, "loadavg_start": loadavg()}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        meta["dpdk"] = subprocess.run(["pkg-config", "--modversion", "libdpdk"], capture_output=True,
                                      text=True, timeout=20).stdout.strip()
    results = []
    for t, case, impl in rounds(args.trials, args.cases, ("fastpath", "dpdk")):
        r = trial(args, case, impl)
        r["trial"] = t
        results.append(r)
    rows = summarize(results, args.cases)
    finish_meta(meta, t_start)
    return {"meta": meta, "summary": rows, "results": results, "table": markdown(rows)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--short", action="store_true", help="one trial of 1 s per case (the CI path)")
    p.add_argument("--cases", default=",".join(ALL_CASES), help=f"default: {','.join(ALL_CASES)}")
    p.add_argument("--seconds", type=float, help="measuring window per trial (default 5, short 1)")
    p.add_argument("--warmup", type=float, help="traffic before the window (default 1, short 0.5)")
    p.add_argument("--trials", type=int, help="trials per case (default 3, short 1)")
    p.add_argument("--max-wait", type=float, default=0.4, metavar="SHARE",
                   help="repeat a trial in which fastpath (or the DPDK backend) or the front end "
                        "waited for a CPU more than this share of the time (default 0.4)")
    p.add_argument("--retries", type=int, help="repeats per trial at most (default 2, short 0)")
    p.add_argument("--switch-core", type=int, default=1, help="fastpath / DPDK backend (default 1)")
    p.add_argument("--peer-core", type=int, default=0, help="the testpmd front end (default 0)")
    p.add_argument("--nice", type=int, default=0,
                   help="autogroup nice for our processes, each in a session of its own, e.g. -10 on "
                        "a machine shared with other work (default 0)")
    p.add_argument("--queue-size", type=int, default=256,
                   help="virtio_user's ring size (default 256, QEMU's default for virtio-net-pci)")
    p.add_argument("--memory", type=int, help="testpmd's -m, MB (default 256, short 128: starts faster)")
    p.add_argument("--mbufs", type=int, help="testpmd's --total-num-mbufs (default 16384, short 8192)")
    p.add_argument("--json", metavar="OUT", help="write the full report (every trial) here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    for c in args.cases:
        if c not in ALL_CASES:
            p.error(f"--cases: unknown case {c!r}")
    default_by_mode(args, seconds=(1.0, 5.0), warmup=(0.5, 1.0), trials=(1, 3), retries=(0, 2),
                    memory=(128, 256), mbufs=(8192, 16384))
    return args


def heading(m):
    """The line above the table, from the report's meta."""
    return (f"# vhost-user and memif, {FRAME_SIZE}-byte frames, fastpath and DPDK {m.get('dpdk') or '?'} "
            f"({m['mode']}: {m['trials']} trial(s) x "
            f"{m['seconds']:g} s, median; kernel {m['kernel']}, {m['cpus']} CPUs; switch on core "
            f"{m['switch_core']}, testpmd front end on core {m['peer_core']}"
            f"{', nice ' + str(m['nice']) if m['nice'] else ''}; load average {m['loadavg_start']} at start, "
            f"{m['loadavg_end']} at end; {m['wall_seconds']:g} s)")


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    return run_and_print(args, run, heading)


if __name__ == "__main__":
    sys.exit(main())
