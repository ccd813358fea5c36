"""Network namespaces and veth pairs for tests that need real interfaces (root only).

    with Netns() as dp, Netns() as peer, veth_pair("fpa0", "fpb0", dp, peer):
        with dp.entered():                 # sockets/TAPs made here belong to dp
            sock = AfPacketSocket("fpa0")
        peer.run("ip link set fpb0 mtu 9000")

Every namespace gets IPv6 disabled (no router solicitations or MLD reports to
pollute frame counts) and its loopback up. Names are unique per process so tests
can run next to each other; everything is removed on exit, also after a failure.
"""
import contextlib
import ctypes
import itertools
import os
import subprocess

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_seq = itertools.count()


def can_run():
    """True when this process may create namespaces, veths and TAPs."""
    return os.geteuid() == 0 and os.path.exists("/dev/net/tun")


def unique_name(prefix="fp"):
    """An interface/namespace name unused by other test processes (at most 15 chars)."""
    name = f"{prefix}{os.getpid() % 100000}x{next(_seq)}"
    if len(name) > 15:
        raise ValueError(f"name {name!r} longer than IFNAMSIZ-1; use a shorter prefix")
    return name


def _ns_name(ns):
    return ns.name if isinstance(ns, Netns) else ns


def run_in(ns, cmd, check=True, **kw):
    """Run cmd (a list, or a string split on whitespace) inside namespace ns (a Netns,
    a namespace name, or None for the current namespace); returns the CompletedProcess."""
    if isinstance(cmd, str):
        cmd = cmd.split()
    name = _ns_name(ns)
    if name:
        cmd = ["ip", "netns", "exec", name] + list(cmd)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
    return r


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


class Netns:
    """A network namespace that exists between __enter__ and __exit__."""

    def __init__(self, prefix="fpns"):
        self.name = unique_name(prefix)
        self.created = False

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self.created = True
        try:
            self.run("sysctl -qw net.ipv6.conf.all.disable_ipv6=1")
            self.run("sysctl -qw net.ipv6.conf.default.disable_ipv6=1")
            self.run("ip link set lo up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Delete the namespace. Its virtual interfaces go with it once the last socket
        opened inside it is closed."""
        if self.created:
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
            self.created = False

    def run(self, cmd, check=True, **kw):
        return run_in(self, cmd, check=check, **kw)

    def popen(self, cmd, **kw):
        """Start cmd (a list) inside the namespace; the caller waits for it."""
        return subprocess.Popen(["ip", "netns", "exec", self.name] + list(cmd), **kw)

    @contextlib.contextmanager
    def entered(self):
        """Run the block with the calling thread inside this namespace. Sockets, TAP
        devices and interface-name lookups made in the block belong to the namespace,
        and keep belonging to it after the block."""
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield self
            finally:
                _setns(own)
        finally:
            os.close(own)

    def __repr__(self):
        return f"<Netns {self.name}>"


def stop_process(proc, timeout=10):
    """SIGTERM, then SIGKILL after timeout seconds, and reap it (a process already gone
    is only reaped)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def veth_pair(a, b, ns_a=None, ns_b=None, up=True):
    """A veth pair with end `a` in namespace ns_a and end `b` in ns_b (None: the current
    namespace), both up; yields (a, b) and deletes the pair on exit."""
    cmd = ["ip", "link", "add", "name", a]
    if _ns_name(ns_a):
        cmd += ["netns", _ns_name(ns_a)]
    cmd += ["type", "veth", "peer", "name", b]
    if _ns_name(ns_b):
        cmd += ["netns", _ns_name(ns_b)]
    run_in(None, cmd)
    try:
        if up:
            run_in(ns_a, ["ip", "link", "set", a, "up"])
            run_in(ns_b, ["ip", "link", "set", b, "up"])
        yield a, b
    finally:
        # deleting either end removes both; a deleted namespace may have taken them already
        for name, ns in ((a, ns_a), (b, ns_b)):
            if run_in(ns, ["ip", "link", "del", name], check=False).returncode == 0:
                break


def offloads_off(ns, ifname, *features):
    """ethtool -K ifname <feature> off ... inside ns (tso, gso, gro, rxvlan, txvlan...)."""
    args = []
    for f in features:
        args += [f, "off"]
    run_in(ns, ["ethtool", "-K", ifname] + args)
