"""fastpath run + fastpathctl: the daemon as a subprocess, driven over its control socket."""
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from fastpath.control import dump_toml
from fastpathd import Fastpathd

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the control socket is root-only")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = {"bridge": {
    "br0": {"mac_aging_time": 120.0, "port": {
        "p1": {"type": "pg", "tag": 10},
        "p2": {"type": "pg", "tag": 20},
        "t1": {"type": "pg", "trunks": [10, 20]}}},
    "br1": {"port": {"q1": {"type": "pg"}},
            "flows": ["priority=10,in_port=q1 actions=drop", "priority=0 actions=NORMAL"]},
}}


class Daemon(Fastpathd):
    """`fastpath run` with a config file; tests of a refused start read its status and log."""

    out = Fastpathd.do                          # this file's name for it

    def __init__(self, tmp_path, config=None, name="fp.sock"):
        args = ["--buffers", "2048"] + (["--config", str(config)] if config else [])
        super().__init__(tmp_path / name, tmp_path / f"{name}.log", args=args)
        self.start(check=False)

    def raw(self, data, read=True, timeout=5):
        """Send raw bytes on a fresh connection; return the reply lines."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.sock)
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass                                # the daemon gave up on us: fine
            buf = b""
            while read:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                buf += chunk
                if buf.endswith(b"\n") and buf.count(b"\n") >= read:
                    break
            return [json.loads(line) for line in buf.splitlines()]
        finally:
            s.close()

    def kill(self):
        """SIGKILL: the daemon cannot clean up (its socket file stays behind)."""
        self.stop(signal.SIGKILL)


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text(dump_toml(CONFIG))
    return p


@pytest.fixture
def daemon(tmp_path, config):
    d = Daemon(tmp_path, config)
    assert d.proc.poll() is None, d.log.read_text()
    yield d
    d.kill()


def test_commands_through_the_socket(daemon, tmp_path):
    assert stat.S_IMODE(os.stat(daemon.sock).st_mode) == 0o600
    show = daemon.out("show")
    for text in ("Bridge br0", "Bridge br1", "Port p1", "tag: 10", "trunks: [10, 20]", "Port q1"):
        assert text in show
    cfg = daemon.out("show", fmt="json")
    assert cfg["bridge"]["br0"]["port"]["t1"]["trunks"] == [10, 20]
    assert cfg["bridge"]["br0"]["mac_aging_time"] == 120.0
    assert daemon.out("add-port", "br0", "p3", "type=pg", "tag=30") == ""
    assert daemon.out("set", "port", "p3", "tag=31") == ""
    assert daemon.out("add-flow", "br0", "priority=7,in_port=p3", "actions=drop") == ""
    flows = daemon.out("dump-flows", "br0", fmt="json")
    assert [f["priority"] for f in flows] == [7, 0]
    assert "priority=7,in_port=p3 actions=drop" in daemon.out("dump-flows", "br0")
    assert daemon.out("fdb/add", "br0", "p1", "10", "00:00:00:00:00:01") == ""
    assert daemon.out("fdb/show", "br0", fmt="json") == [
        {"port": "p1", "vlan": 10, "mac": "00:00:00:00:00:01", "age": "static"}]
    rows = daemon.out("show", "interfaces", fmt="json")
    assert {r["name"] for r in rows} == {"p1", "p2", "t1", "q1", "p3"}
    assert "rx packets" in daemon.out("show", "interfaces")
    assert isinstance(daemon.out("show", "runtime", fmt="json"), list)
    assert "Count" in daemon.out("show", "errors")
    assert daemon.out("trace", "add", "p1", "3", fmt="json") == {"node": "p1-input", "count": 3}
    assert "No packets" in daemon.out("trace", "show")
    assert daemon.out("pcap", "start", "p1", str(tmp_path / "p1.pcap")) == ""
    assert "0 frames written" in daemon.out("pcap", "stop", "p1")
    assert daemon.out("version").startswith("fastpath ")
    assert "add-port" in daemon.out("help")


def test_errors_are_one_line_and_nonzero(daemon):
    before = daemon.out("show", fmt="json")
    for argv, msg in ((["add-port", "br0", "p9", "type=pg", "tag=5000"], "tag: 5000 out of range"),
                      (["add-port", "nobr", "p9", "type=pg"], "no bridge named nobr"),
                      (["del-port", "nope"], "no port named nope"),
                      (["add-flow", "br0", "in_port=p1 actions=explode"], "explode"),
                      (["frobnicate"], "unknown command"),
                      (["set", "bridge", "br0", "other_config:mac-aging-time=0"], "mac-aging-time")):
        r = daemon.ctl(*argv)
        assert r.returncode == 1, argv
        assert r.stdout == ""
        assert r.stderr.count("\n") == 1 and msg in r.stderr and r.stderr.startswith("fastpathctl: ")
    assert daemon.out("show", fmt="json") == before


def test_garbage_and_oversized_requests(daemon):
    reply = daemon.raw(b"garbage\n")
    assert len(reply) == 1 and reply[0]["ok"] is False and reply[0]["error"].startswith("bad request")
    assert "bad request" in daemon.raw(b'{"argv": "show"}\n')[0]["error"]
    assert "bad request" in daemon.raw(b'{"argv": ["show"], "format": "xml"}\n')[0]["error"]
    assert "bad request" in daemon.raw(b"[1, 2]\n")[0]["error"]
    assert "bad request" in daemon.raw(b"\xff\xfe\n")[0]["error"]
    # a line of several MB: refused, and the connection closed
    reply = daemon.raw(b"x" * (4 << 20))
    assert reply and "too large" in reply[0]["error"]
    # two requests on one connection, and one without a newline before EOF
    replies = daemon.raw(b'{"argv": ["version"]}\n{"argv": ["show"], "format": "json"}\n', read=2)
    assert replies[0]["ok"] and replies[0]["output"].startswith("fastpath")
    assert replies[1]["ok"] and "br0" in replies[1]["output"]["bridge"]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(daemon.sock)
    s.sendall(b'{"argv": ["version"]}')
    s.shutdown(socket.SHUT_WR)
    assert json.loads(s.recv(4096))["ok"]
    s.close()
    # still serving
    assert daemon.out("version").startswith("fastpath ")
    assert daemon.proc.poll() is None


def test_slow_clients_do_not_block(daemon):
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    silent.connect(daemon.sock)                     # connects, says nothing
    partial = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    partial.connect(daemon.sock)
    partial.sendall(b'{"argv": ["sh')                # half a request, then stalls
    # a client that asks for output and never reads it
    lazy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lazy.connect(daemon.sock)
    lazy.sendall(b'{"argv": ["help"]}\n' * 2000)
    t0 = time.monotonic()
    for _ in range(3):
        assert daemon.out("version").startswith("fastpath ")
    assert time.monotonic() - t0 < 10
    partial.sendall(b'ow"]}\n')                     # the stalled client can still finish
    partial.settimeout(5)
    assert json.loads(partial.recv(65536).split(b"\n")[0])["ok"]
    for s in (silent, partial, lazy):
        s.close()
    assert daemon.out("version").startswith("fastpath ")


def test_save_stop_restart(daemon, tmp_path):
    daemon.out("add-port", "br0", "p3", "type=pg", "trunks=30-32", "vlan_mode=native-tagged",
               "tag=30", "ofport_request=9", "options:split_group=1")
    daemon.out("set", "bridge", "br0", "other_config:mac-table-size=512")
    daemon.out("add-flow", "br1", "priority=50,dl_vlan=5 actions=strip_vlan,output:q1")
    # a relative path is the client's: fastpathctl makes it absolute
    r = daemon.ctl("save", "saved.toml", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    saved = tmp_path / "saved.toml"
    assert stat.S_IMODE(os.stat(saved).st_mode) == 0o600
    show, show_json = daemon.out("show"), daemon.out("show", fmt="json")
    flows = [f["flow"] for f in daemon.out("dump-flows", "br1", fmt="json")]

    assert daemon.stop() == 0
    assert not os.path.exists(daemon.sock)
    log = daemon.log.read_text()
    assert "SIGTERM" in log and "stopped" in log
    r = daemon.ctl("version")
    assert r.returncode == 2 and "is `fastpath run` running?" in r.stderr

    again = Daemon(tmp_path, saved)
    try:
        assert again.out("show") == show
        assert again.out("show", fmt="json") == show_json
        assert [f["flow"] for f in again.out("dump-flows", "br1", fmt="json")] == flows
        assert again.stop(signal.SIGINT) == 0
        assert not os.path.exists(again.sock)
    finally:
        again.kill()


def test_stale_socket_and_second_daemon(daemon, tmp_path, config):
    second = Daemon(tmp_path, config)              # same socket: refused
    assert second.proc.wait(15) == 1
    assert "another fastpath daemon" in second.log.read_text()
    assert daemon.out("version").startswith("fastpath ")
    daemon.kill()                                   # SIGKILL: the socket file stays behind
    assert os.path.exists(daemon.sock)
    third = Daemon(tmp_path, config)                # removes the stale socket
    try:
        assert third.proc.poll() is None, third.log.read_text()
        assert "Bridge br0" in third.out("show")
        assert third.stop() == 0
    finally:
        third.kill()


def test_bad_config_exits_nonzero(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[bridge.br0.port.p1]\ntype = "pg"\ntag = "ten"\n')
    d = Daemon(tmp_path, bad)
    assert d.proc.wait(15) == 1
    assert "tag" in d.log.read_text()
    assert not os.path.exists(d.sock)
    bad.write_text("this is = = not toml")
    d = Daemon(tmp_path, bad)
    assert d.proc.wait(15) == 1
    assert "bad TOML" in d.log.read_text()


def test_busy_poll_setting(tmp_path):
    """--busy-poll-us reaches the dispatch loop; a nonsense value stops the start."""
    d = Fastpathd(tmp_path / "bp.sock", tmp_path / "bp.log", args=["--busy-poll-us", "-5"])
    d.start(check=False)
    assert d.proc.wait(15) == 2
    assert "--busy-poll-us" in (tmp_path / "bp.log").read_text()
    d = Fastpathd(tmp_path / "bp2.sock", tmp_path / "bp2.log", args=["--busy-poll-us", "0"])
    d.start()
    try:
        assert "br" not in d.do("show")                # it answers, with no spinning at all
    finally:
        d.stop()


def test_ctl_not_running(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fastpath.ctl", "--control", str(tmp_path / "none.sock"),
                        "show"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert "cannot connect" in r.stderr and "is `fastpath run` running?" in r.stderr
    r = subprocess.run([sys.executable, "-m", "fastpath.ctl"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode != 0 and "no command" in r.stderr


def _afpacket_built():
    try:
        import fastpath.afpacket.afpacket  # noqa: F401
        return os.path.exists("/run") and subprocess.run(["ip", "netns", "list"],
                                                         capture_output=True).returncode == 0
    except (ImportError, OSError):
        return False


@pytest.mark.root
@pytest.mark.skipif(not _afpacket_built(), reason="needs the afpacket extension and iproute2")
def test_demo():
    p = subprocess.Popen([sys.executable, "-m", "fastpath.cli", "demo"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    for text in ("$ fastpathctl fdb/show br0", "$ fastpathctl show runtime",
                 "$ fastpathctl show interfaces", "Per-VLAN reachability", "PASS",
                 "IKEv2 brought up the ESP SAs", "$ fastpathctl show ike", "ESTABLISHED",
                 "The underlay (up-a) carried: "):
        assert text in out
    assert "FAIL" not in out
    # everything it made is gone
    prefix = f"fpd{p.pid % 100000}-"
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [line for line in left.splitlines() if line.startswith(prefix)]


def test_control_group_shares_the_socket(tmp_path):
    import grp
    group = grp.getgrgid(0).gr_name
    d = Fastpathd(tmp_path / "g.sock", tmp_path / "g.log",
                  args=["--control-group", group, "--buffers", "512"]).start()
    try:
        st = os.stat(d.sock)
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == 0
    finally:
        assert d.stop() == 0, d.log_text()
