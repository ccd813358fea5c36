"""The daemon for tests that run it for real: `fastpath run` as a process, driven the way
an operator drives it, with fastpathctl.

    d = Fastpathd(tmp_path / "fp.sock", tmp_path / "fp.log", ns=dp, args=["--buffers", "4096"])
    d.start()
    d.do("add-br", "br0")
    rows = d.do("show", "interfaces", fmt="json")
    assert d.stop() == 0, d.log_text()

fastpath is imported only inside the methods: tests/hostileutil.py, which builds on this,
also runs as a plain script in a namespace (`python3 tests/hostileutil.py macflood`).
"""
import json
import os
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Fastpathd:
    """A `fastpath run` process, optionally in a Netns, with its control socket and log;
    what an operator would do with fastpathctl (start it, run commands, read its log,
    stop it). `log` is kept as given (a str or a Path); `proc` is the daemon's Popen."""

    def __init__(self, sock, log, ns=None, args=()):
        self.sock, self.log, self.ns, self.args = str(sock), log, ns, list(args)
        self.proc = None

    def start(self, timeout=60, check=True):
        """Start the daemon (again: same namespace, socket and log, appended to) and wait
        until its socket answers `version`. timeout is a guard, not a measurement (loaded
        machines). A daemon that exits first, or does not answer in time, is stopped and
        an AssertionError with its log; with check=False one that exits is returned as it
        is, for tests of a refused start to look at its status and log."""
        cmd = [sys.executable, "-m", "fastpath.cli", "run", "--control", self.sock, *self.args]
        popen = self.ns.popen if self.ns is not None else subprocess.Popen
        # the child has its own copy of the descriptor: nothing is left open here to close
        with open(self.log, "a") as f:
            self.proc = popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.proc.poll() is not None and not check:
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"fastpath run did not start:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    def _answers(self):
        from fastpath.ctl import NotRunning
        try:
            self.request("version")
        except NotRunning:              # no socket yet, a stale one, or no reply yet
            return False
        return True

    def ctl(self, *argv, fmt=None, timeout=30, cwd=REPO):
        """fastpathctl itself, as a process (what an operator runs); the CompletedProcess.
        cwd is the client's: fastpathctl makes relative paths absolute against it."""
        cmd = [sys.executable, "-m", "fastpath.ctl", "--control", self.sock]
        if fmt:
            cmd += ["--format", fmt]
        return subprocess.run(cmd + list(argv), capture_output=True, text=True, cwd=cwd,
                              timeout=timeout)

    def do(self, *argv, fmt=None):
        """A fastpathctl command that must succeed: its output, parsed when fmt is json."""
        r = self.ctl(*argv, fmt=fmt)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout) if fmt == "json" else r.stdout

    def request(self, *argv, fmt=None):
        """One command with fastpathctl's client code, in this process (starting a Python
        per query is slow on a loaded machine); raises fastpath.ctl.DaemonError/NotRunning."""
        from fastpath.ctl import request
        return request(list(argv), fmt or "text", self.sock, timeout=60)

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self, sig=signal.SIGTERM):
        """Signal the daemon (SIGTERM: it shuts down cleanly), SIGKILL if it has not exited
        after 15 s; its exit status. Stopping a stopped daemon returns the same status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
