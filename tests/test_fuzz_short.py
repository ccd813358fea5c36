"""The fuzz harnesses of fuzz/ in CI's short mode (fuzz/README.md has the long runs).

- a fixed-seed batch of inputs through each harness's core (half mutations of its seed
  inputs, half random bytes): the same invariants as the atheris runs, in seconds;
- every input saved in tests/fuzz_regressions/<harness>/ (crashes and interesting inputs
  the fuzzers found) replayed through its harness;
- the findings again as plain tests, independent of the harnesses' input encoding.
"""
import importlib
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "fuzz"))

from fuzzcommon import REGRESSIONS, random_inputs  # noqa: E402

# inputs per harness, and the longest input (what -max_len is in the long runs)
BATCH = {"l2": (2500, 4096), "underlay": (2500, 4096),
         "flow": (4000, 400), "control": (1500, 600), "vhost": (2000, 600), "memif": (2000, 600)}


def harness(name):
    return importlib.import_module(f"fuzz_{name}")


@pytest.mark.parametrize("name", sorted(BATCH))
def test_short_campaign(name):
    h = harness(name)
    n, maxlen = BATCH[name]
    for data in random_inputs(n, seed=20240601, seeds=h.seeds(), maxlen=maxlen):
        h.one_input(data)


@pytest.mark.parametrize("name", sorted(BATCH))
def test_seed_inputs(name):
    h = harness(name)
    for data in h.seeds():
        h.one_input(data)


def _saved():
    out = []
    if os.path.isdir(REGRESSIONS):
        for name in sorted(os.listdir(REGRESSIONS)):
            d = os.path.join(REGRESSIONS, name)
            if os.path.isdir(d):
                out += [pytest.param(name, os.path.join(d, f), id=f"{name}/{f}")
                        for f in sorted(os.listdir(d)) if not f.startswith(".")]
    return out


@pytest.mark.parametrize("name,path", _saved())
def test_regression_input(name, path):
    with open(path, "rb") as f:
        harness(name).one_input(f.read())


# ---------------------------------------------------------------- findings as plain tests

def test_a_peer_cannot_pose_as_another_tunnel():
    """fuzz_underlay: ESP authenticated with one tunnel's SA (peer 192.0.2.1) but carrying the
    outer source address and VNI of another IPsec tunnel (peer 192.0.2.3) was decrypted and
    then taken by vxlan-input as that other tunnel's traffic (MAC learned on vpn1, frame
    delivered): esp-decrypt found the SA by SPI alone, and vxlan-input trusts the outer
    source. Inbound SAs are now bound to their peer's address (wrong_peer)."""
    u = harness("underlay")
    sw = u.build()
    u.reset_sas(sw, 0)
    k0 = u.KEYS["vpn0"]
    inner = u.inner_frame(vlan=20, size=46, src=bytes.fromhex("02000000beef"))
    payload = u.udp(49152, 4789, u.vxlan(u.VNI["vpn1"]) + inner)
    spoofed = u.eth(u.ip4(u.IP[u.PEER1], u.IP[u.SITE], 50, u.esp(k0["in"], k0["spi_in"], 1, payload, 17)))
    u.inject(sw, "up", [spoofed])
    sw.graph.run_until_idle()
    assert u.egress(sw) == {}
    assert sw.fdb_rows("br0") == []
    assert {(n, r): c for c, n, r, _ in sw.graph.errors()}[("esp-decrypt", "wrong_peer")] == 1
    # the same packet from vpn0's own peer, with vpn0's VNI, is fine
    payload = u.udp(49152, 4789, u.vxlan(u.VNI["vpn0"]) + inner)
    genuine = u.eth(u.ip4(u.IP[u.PEER0], u.IP[u.SITE], 50, u.esp(k0["in"], k0["spi_in"], 2, payload, 17)))
    u.inject(sw, "up", [genuine])
    sw.graph.run_until_idle()
    assert list(u.egress(sw)) == ["h20"]
    assert [r["port"] for r in sw.fdb_rows("br0")] == ["vpn0"]


@pytest.mark.parametrize("line", [b"[" * 100000, b'{"argv":' * 50000, b'{"a":[' * 50000])
def test_daemon_refuses_deeply_nested_json(line):
    """fuzz_control: a control-socket request of deeply nested JSON made json.loads raise
    RecursionError, which ControlServer._handle did not catch: it left the graph's fd
    callback and stopped the daemon ("dataplane crashed")."""
    import json
    from fastpath.control import Control
    from fastpath.daemon import ControlServer
    from fastpath.switch import Switch

    class Client:
        outbuf = bytearray()

    srv = ControlServer("/nonexistent/sock", Control(Switch(n_buffers=64)), None)
    c = Client()
    srv._handle(c, line)
    reply = json.loads(bytes(c.outbuf))
    assert reply["ok"] is False and reply["error"].startswith("bad request")


def test_paths_with_a_nul_byte_and_non_utf8_configs_are_command_errors(tmp_path):
    """fuzz_control: `save FILE` and `pcap start IFACE FILE` with a NUL in FILE, and a config
    file that is not UTF-8, raised ValueError/UnicodeDecodeError instead of CommandError
    (the daemon's --config then died with a traceback)."""
    from fastpath.control import CommandError, Control, read_config
    from fastpath.switch import Switch
    ctl = Control(Switch(n_buffers=64))
    ctl.execute(["add-br", "br0"])
    ctl.execute(["add-port", "br0", "p1", "type=pg"])
    for argv in (["save", str(tmp_path / "a\0b")], ["pcap", "start", "p1", str(tmp_path / "a\0b")]):
        with pytest.raises(CommandError, match="embedded null byte"):
            ctl.execute(argv)
    assert not ctl.captures and list(tmp_path.iterdir()) == []
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b'a = "\xff"\n')
    with pytest.raises(CommandError, match="not UTF-8"):
        read_config(str(bad))
    with pytest.raises(CommandError, match="embedded null byte"):
        read_config(str(tmp_path / "a\0b"))


def test_the_twin_oracle_sees_a_read_past_the_frame():
    """fuzzcommon.Twin: a node that reads one byte past the end of the frame and acts on it is
    caught (both twins' arenas differ everywhere outside the frames)."""
    import numpy as np
    from fuzzcommon import Divergence, Twin
    from fastpath.graph.graph import Graph
    from fastpath.graph.node import Node
    from fastpath.pg.pg import PgInput, PgOutput

    class Peek(Node):
        next_nodes = ("out",)

        def __init__(self, past):
            super().__init__("peek")
            self.past = past

        def process(self, vector):
            pool = self.pool
            off, length = pool.meta("offset"), pool.meta("length")
            for b in vector.tolist():
                byte = pool.data_array[b * (256 + 2048) + int(off[b]) + int(length[b]) - 1 + self.past]
                pool.meta("next")[b] = 1 if byte % 2 == 0 else 0

    class Switchish:
        def __init__(self, past):
            self.graph = Graph(n_buffers=64)
            self.graph.add(PgInput("in", 1, next_node="peek"))
            self.graph.add(Peek(past))
            self.graph.add(PgOutput("out", 2))

    def run(sw):
        sw.graph["in"].add([bytes(60)])
        sw.graph.run_until_idle()
        return [len(f) for f in sw.graph["out"].take()]

    assert Twin(lambda: Switchish(0)).run(run) == [60]          # the last byte of the frame: fine
    with pytest.raises(Divergence):
        Twin(lambda: Switchish(1)).run(run)                       # one past it: caught


def test_trace_add_on_a_port_without_an_input_node_is_a_command_error():
    """fuzz_control: `trace add vpn0 N` on a vxlan port (which has no vpn0-input node) raised
    ValueError from Graph.trace_add instead of CommandError."""
    from fastpath.control import CommandError, Control
    from fastpath.switch import Switch
    ctl = Control(Switch(n_buffers=64))
    ctl.execute(["add-ip", "up", "192.0.2.2/24", "type=pg"])
    ctl.execute(["add-br", "br0"])
    ctl.execute(["add-port", "br0", "vpn0", "type=vxlan", "options:remote_ip=192.0.2.1",
                 "options:local_ip=192.0.2.2", "options:key=5"])
    with pytest.raises(CommandError, match="no input node or port named 'vpn0'"):
        ctl.execute(["trace", "add", "vpn0", "3"])
    assert not ctl.switch.graph.tracer.active
    assert ctl.execute(["trace", "add", "up-input", "3"], "json") == {"node": "up-input", "count": 3}
