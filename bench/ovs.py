"""Open vSwitch's userspace datapath as a peer for the benchmarks (bench/e2e.py,
bench/tcp.py): ovsdb-server and ovs-vswitchd started here, without systemd and without the
kernel module, in a private run directory, ovs-vswitchd inside the switch's network
namespace (its AF_PACKET sockets open the interfaces there), bridges with
datapath_type=netdev, so that ports on Linux interfaces are AF_PACKET ports.

    daemons = OvsDaemons(ns, nice=0, cpus=1)
    daemons.start(stack)                      # stopped (by pid file) when the stack unwinds
    daemons.add_bridge("br0", ["veth1", "veth2"], "tag=10")

"Generic Netlink family 'ovs_datapath' does not exist" in its log is expected (no module).
"""
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time

from trials import boost

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
OVS_TOOLS = ("ovsdb-tool", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-appctl")


def why_not_available():
    """None when Open vSwitch can be started here, else the reason."""
    missing = [t for t in OVS_TOOLS if shutil.which(t) is None]
    if missing or not os.path.exists(OVS_SCHEMA):
        return "not installed (apt-get install openvswitch-switch)"
    return None


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def kill_pidfile(path, timeout=5.0):
    try:
        pid = int(open(path).read().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < end:
        time.sleep(0.05)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class OvsDaemons:
    """ovsdb-server and ovs-vswitchd of one switch namespace. `cpus` (a core or a taskset
    list) pins both (every thread ovs-vswitchd starts inherits it); None leaves them to the
    scheduler. `nice` as bench/trials.py's boost()."""

    def __init__(self, ns, nice=0, cpus=None, prefix="fastpath-ovs."):
        self.ns = ns
        self.nice = nice
        self.cpus = cpus
        self.prefix = prefix
        self.rundir = self.env = self.pid = None

    def _pin(self):
        out = ["nice", "-n", str(self.nice)] if self.nice else []
        return out + (["taskset", "-c", str(self.cpus)] if self.cpus is not None else [])

    def vsctl(self, *argv, check=True):
        cmd = ["ovs-vsctl", f"--db=unix:{self.rundir}/db.sock", "--timeout=30"] + list(argv)
        r = subprocess.run(cmd, capture_output=True, text=True, env=self.env)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}\n{self.tail_logs()}")
        return r.stdout.strip()

    def appctl(self, *argv):
        r = subprocess.run(["ovs-appctl", "-t", f"{self.rundir}/ovs-vswitchd.ctl"] + list(argv),
                           capture_output=True, text=True, env=self.env, timeout=30)
        return r.stdout.strip() if r.returncode == 0 else r.stderr.strip()

    def tail_logs(self):
        out = []
        for name in ("ovsdb-server.log", "ovs-vswitchd.log"):
            with contextlib.suppress(OSError):
                out.append(f"--- {name}\n" + "".join(open(os.path.join(self.rundir, name)).readlines()[-15:]))
        return "\n".join(out)

    def start(self, stack):
        self.rundir = tempfile.mkdtemp(prefix=self.prefix)
        stack.callback(shutil.rmtree, self.rundir, True)
        r = self.rundir
        self.env = dict(os.environ, OVS_RUNDIR=r, OVS_LOGDIR=r, OVS_DBDIR=r, OVS_SYSCONFDIR=r)
        subprocess.run(["ovsdb-tool", "create", f"{r}/conf.db", OVS_SCHEMA], check=True,
                       capture_output=True, env=self.env)
        stack.callback(kill_pidfile, f"{r}/ovsdb-server.pid")
        subprocess.run(self._pin() + ["ovsdb-server", f"{r}/conf.db", f"--remote=punix:{r}/db.sock",
                                      f"--pidfile={r}/ovsdb-server.pid", f"--unixctl={r}/ovsdb-server.ctl",
                                      f"--log-file={r}/ovsdb-server.log", "--detach", "--no-chdir"],
                       check=True, capture_output=True, env=self.env)
        boost(self.nice, int(open(f"{r}/ovsdb-server.pid").read()))
        self.vsctl("--no-wait", "init")
        stack.callback(kill_pidfile, f"{r}/ovs-vswitchd.pid")
        subprocess.run(["ip", "netns", "exec", self.ns.name] + self._pin() +
                       ["ovs-vswitchd", f"unix:{r}/db.sock", f"--pidfile={r}/ovs-vswitchd.pid",
                        f"--unixctl={r}/ovs-vswitchd.ctl", f"--log-file={r}/ovs-vswitchd.log",
                        "--detach", "--no-chdir"],
                       check=True, capture_output=True, env=self.env)
        self.pid = int(open(f"{r}/ovs-vswitchd.pid").read())
        boost(self.nice, self.pid)

    def add_bridge(self, bridge, ports, *port_settings):
        """A netdev bridge (fail_mode=standalone: a learning switch) with `ports`, each
        with `port_settings` (e.g. "tag=10"); RuntimeError if a port reports an error."""
        self.vsctl("add-br", bridge, "--", "set", "bridge", bridge, "datapath_type=netdev",
                   "fail_mode=standalone")
        cmd = []
        for ifname in ports:
            cmd += (["--"] if cmd else []) + ["add-port", bridge, ifname, *port_settings]
        self.vsctl(*cmd)
        for ifname in ports:
            err = self.vsctl("get", "interface", ifname, "error")
            if err not in ("[]", ""):
                raise RuntimeError(f"ovs: interface {ifname}: {err}\n{self.tail_logs()}")

    def del_bridge(self, bridge):
        self.vsctl("--if-exists", "del-br", bridge)
