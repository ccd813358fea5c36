"""What the end-to-end benchmarks share (bench/e2e.py, bench/vpn_sites.py, bench/vm.py and,
for its processes, bench/soak.py).

A *trial* is one measurement of one path -- a peer at one frame size in e2e and vpn_sites,
a case with one implementation in vm: traffic for --seconds, with the machine's load
average, the CPU time of every core and our own processes' CPU time and run-queue wait
read before and after it, so that a figure taken on a busy, shared machine says how busy
it was. A run measures every path --trials times in interleaved rounds (rounds()) and
reports the median. A trial that other people's tasks held back more than --max-wait is
run again, at most --retries times, and the least contended attempt counts
(least_contended()). Our processes (generator, sink, switch) can be given priority over
other sessions' with --nice (pinned(), boost()).

Everything here reads /proc or runs processes; nothing knows about a particular path.
"""
import contextlib
import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- command line and run

def default_by_mode(args, **defaults):
    """Fill every option in `defaults` that was not given (None) with its (short, full)
    value, as --short says."""
    for name, (short, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, short if args.short else full)


def default_method(args):
    """--method, when not given: pktgen's own default (imported late: it is compiled)."""
    if args.method is None:
        from fastpath.afpacket.pktgen import DEFAULT_METHOD
        args.method = DEFAULT_METHOD


def check_cores(args, *options):
    """SystemExit naming the first of `options` (attribute names like "gen_core") that is
    not a CPU of this machine."""
    ncpu = os.cpu_count() or 1
    for what in options:
        if not 0 <= getattr(args, what) < ncpu:
            raise SystemExit(f"--{what.replace('_', '-')}: no CPU {getattr(args, what)}")


def loadavg():
    """The 1, 5 and 15 minute load averages, rounded for a report."""
    return [round(x, 2) for x in os.getloadavg()]


def rounds(trials, *axes):
    """(trial, a, b, ...) for every combination of the axes, the whole set once per round:
    interleaved, so that a change of load on the machine hits every path alike."""
    for t in range(trials):
        for combo in itertools.product(*axes):
            yield (t, *combo)


def least_contended(run_once, contention, max_wait, retries, show):
    """run_once() again, at most `retries` more times, while contention(result) is above
    max_wait (other people's tasks held the trial back); show(result, again) reports each
    attempt. Returns the least contended result, its "attempts" the number of runs."""
    best = None
    for attempt in range(retries + 1):
        r = run_once()
        again = contention(r) > max_wait and attempt < retries
        show(r, again)
        if best is None or contention(r) < contention(best):
            best = r
        if not again:
            break
        time.sleep(1.0)                 # let whatever held it back pass
    best["attempts"] = attempt + 1
    return best


def exit_on_signals():
    """SIGTERM and SIGHUP raise SystemExit, which unwinds the run's ExitStack and finally
    blocks: everything the run made (namespaces, veths, daemons) is removed."""
    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)


def finish_meta(meta, t_start):
    """The load average at the end of the run and its wall time, into its meta."""
    meta["loadavg_end"] = loadavg()
    meta["wall_seconds"] = round(time.monotonic() - t_start, 1)


def heading_end(meta):
    """How a heading ends: the --nice value (when set) and the 1-minute load average at
    the start and at the end of the run, so that a figure comes with how busy it was."""
    return (f"{', nice ' + str(meta['nice']) if meta['nice'] else ''}; "
            f"load average {meta['loadavg_start'][0]} at start, {meta['loadavg_end'][0]} at end)")


def run_and_print(args, run, heading):
    """A script's main: run(args), with SIGTERM and SIGHUP unwinding it; the full report to
    --json when given; heading(meta) and the table to stdout."""
    exit_on_signals()
    report = run(args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(heading(report["meta"]) + "\n")
    print(report["table"])
    return 0


# ---------------------------------------------------------------- our processes

def pinned(nice, cpus):
    """Command prefix: run on `cpus` (a core, or a taskset -c list), at `nice` priority."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    return prefix + ["taskset", "-c", str(cpus)]


def boost(nice, pid):
    """Give a process started in a session of its own the --nice priority. With the
    scheduler's autogroups (sched_autogroup_enabled), nice only ranks tasks of one session
    against each other: other sessions' tasks are held back by the session's own nice."""
    if not nice:
        return
    with contextlib.suppress(OSError):
        with open(f"/proc/{pid}/autogroup", "w") as f:
            f.write(str(nice))


def stop_process(proc, timeout=5.0, sig=signal.SIGTERM):
    """Send `sig`, wait up to `timeout` s, then kill. The exit status, or None if it had
    to be killed (or there was no process)."""
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc is not None else None
    with contextlib.suppress(ProcessLookupError):       # it may exit between poll and here
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def read_json_line(proc, timeout, skip_non_json=False):
    """The next stdout line of proc as JSON (None on timeout or EOF). skip_non_json: pass
    over lines that are not JSON instead of raising (a peer that may print warnings)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], max(0.0, end - time.monotonic()))
        if r:
            line = proc.stdout.readline()
            if not line:
                return None
            line = line.strip()
            if not line:
                continue
            try:
                return json.loads(line)
            except ValueError:
                if not skip_non_json:
                    raise
    return None


# ---------------------------------------------------------------- what a trial costs

def cpu_times():
    """Per CPU: (user + nice + system, softirq, all) in seconds since boot."""
    hz = os.sysconf("SC_CLK_TCK")
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *v = line.split()
                v = [int(x) for x in v]
                out[int(name[3:])] = ((v[0] + v[1] + v[2]) / hz, v[6] / hz, sum(v[:8]) / hz)
    return out


def proc_run_delay(pid):
    """Seconds the threads of a process have waited on a run queue (schedstat), or None."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[1])
    except OSError:
        return None
    return total / 1e9


def proc_cpu_seconds(pid):
    """utime + stime of a process and all its threads, in seconds."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the fastpath daemon

class FastpathRun:
    """`fastpath run` in network namespace `ns`, pinned to `cpus` at `nice` priority, in a
    session of its own, driven with fastpathctl over its control socket. `name`, when
    given, starts every error message (which of several daemons it was); errors carry the
    end of its log. start(stack) starts it and has the stack stop it and remove its files."""

    def __init__(self, ns, cpus, nice, rundir_prefix, name="", extra_args=(), timeout=30.0):
        self.ns, self.cpus, self.nice = ns, cpus, nice
        self.rundir_prefix = rundir_prefix
        self.name = name
        self.extra_args = list(extra_args)
        self.timeout = timeout          # for coming up, and for each fastpathctl command

    def _who(self):
        return f"{self.name}: " if self.name else ""

    def start(self, stack):
        self.rundir = tempfile.mkdtemp(prefix=self.rundir_prefix)
        stack.callback(shutil.rmtree, self.rundir, True)
        self.sock = os.path.join(self.rundir, "fastpath.sock")
        self.logfile = os.path.join(self.rundir, "fastpath.log")
        cmd = (["ip", "netns", "exec", self.ns.name] + pinned(self.nice, self.cpus) +
               [PY, "-m", "fastpath.cli", "run", "--control", self.sock] + self.extra_args)
        with open(self.logfile, "w") as f:
            # `ip netns exec`, nice and taskset exec: the process is the daemon itself
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        stack.callback(stop_process, self.proc)
        boost(self.nice, self.proc.pid)
        deadline = time.monotonic() + self.timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self._who()}fastpath run exited ({self.proc.returncode}):\n"
                                   f"{self.tail_log()}")
            if os.path.exists(self.sock):
                with contextlib.suppress(RuntimeError):
                    self.ctl("version")
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self._who()}fastpath run did not come up:\n{self.tail_log()}")
            time.sleep(0.05)

    def ctl(self, *argv, fmt=None):
        """fastpathctl argv: its output, parsed when fmt is "json"."""
        cmd = [PY, "-m", "fastpath.ctl", "--control", self.sock]
        if fmt:
            cmd += ["--format", fmt]
        r = subprocess.run(cmd + list(argv), capture_output=True, text=True, cwd=REPO,
                           timeout=self.timeout)
        if r.returncode != 0:
            raise RuntimeError(f"{self._who()}fastpathctl {' '.join(argv)}: {r.stderr.strip()}\n"
                               f"{self.tail_log()}")
        return json.loads(r.stdout) if fmt == "json" else r.stdout

    def tail_log(self):
        with contextlib.suppress(OSError):
            return "".join(open(self.logfile).readlines()[-20:])
        return ""
