"""Control: every command through the interpreter, with in-memory (pg) ports."""
import json
import os
import stat
import tomllib

import pytest
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from fastpath.control import CommandError, Control, config_commands, dump_toml
from fastpath.graph.pcap import read_pcap
from fastpath.switch import Switch

A, B, C = "00:00:00:00:00:0a", "00:00:00:00:00:0b", "00:00:00:00:00:0c"
BCAST = "ff:ff:ff:ff:ff:ff"
PAYLOAD = Raw(bytes(range(46)))


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def frame(src, dst=BCAST, vlan=None):
    if vlan is None:
        return bytes(Ether(src=src, dst=dst, type=0x88b5) / PAYLOAD)
    return bytes(Ether(src=src, dst=dst) / Dot1Q(vlan=vlan, type=0x88b5) / PAYLOAD)


def send(sw, port, *frames):
    sw.port(port).io[0].add([bytes(f) for f in frames])
    sw.graph.run_until_idle()
    out = {}
    for name, p in sw.ports.items():
        got = p.io[1].take()
        if got:
            out[name] = got
    return out


@pytest.fixture
def ctl():
    c = Control(Switch(n_buffers=1024, clock=Clock()))
    for argv in (["add-br", "br0"],
                 ["add-port", "br0", "p1", "type=pg", "tag=10"],
                 ["add-port", "br0", "p2", "type=pg", "tag=10"],
                 ["add-port", "br0", "p3", "type=pg", "tag=20"],
                 ["add-port", "br0", "t1", "type=pg", "trunks=10,20"],
                 ["add-br", "br1"],
                 ["add-port", "br1", "q1", "type=pg"]):
        c.execute(argv)
    yield c
    c.close()
    c.switch.close()


def state(c):
    """Everything a command could change: config, graph nodes, MAC tables, flows."""
    sw = c.switch
    return (json.dumps(sw.config(), sort_keys=True), sorted(sw.graph.by_name), sw.show(),
            {b: sw.fdb_rows(b) for b in sw.bridges},
            {b: [f for f, _, _ in br.flows.stats()] for b, br in sw.bridges.items()},
            sorted(c.captures), c.switch.graph.tracer.active,
            {n: (p.tag, tuple(p.trunks), p.vlan_mode, p.ofport, p.sw_if_index)
             for n, p in sw.ports.items()},
            {b: (br.fdb.aging_time, br.fdb.max_entries) for b, br in sw.bridges.items()})


def forwarding(c):
    """What the dataplane does with a broadcast on each VLAN (MAC tables flushed after)."""
    out = {}
    for port, f in (("p1", frame(A)), ("p3", frame(B)), ("t1", frame(C, vlan=20))):
        got = send(c.switch, port, f)
        out[port] = {k: len(v) for k, v in got.items()}
    for b in c.switch.bridges:
        c.switch.fdb_flush(b)
    return out


# ---------------------------------------------------------------- success paths

def test_show_text_and_json(ctl):
    text = ctl.execute(["show"])
    assert "Bridge br0" in text and "Port p1" in text and "tag: 10" in text
    assert "trunks: [10, 20]" in text and "type: pg" in text
    data = ctl.execute(["show"], "json")
    assert data == ctl.switch.config()
    assert data["bridge"]["br0"]["port"]["t1"]["trunks"] == [10, 20]
    json.dumps(data)


def test_add_br_with_settings_and_set_bridge(ctl):
    assert ctl.execute(["add-br", "br2", "other_config:mac-aging-time=30",
                        "other_config:mac-table-size=100"]) == ""
    br = ctl.switch.bridges["br2"]
    assert br.fdb.aging_time == 30.0 and br.fdb.max_entries == 100
    assert ctl.execute(["set", "bridge", "br2", "other_config:mac-aging-time=45"], "json") == {}
    assert br.fdb.aging_time == 45.0 and br.fdb.max_entries == 100
    ctl.execute(["set", "bridge", "br2", "other_config:mac-table-size=50",
                 "other_config:mac-aging-time=5.5"])
    assert (br.fdb.aging_time, br.fdb.max_entries) == (5.5, 50)
    assert ctl.execute(["add-br", "br3"], "json") == {"bridge": "br3"}
    assert ctl.execute(["del-br", "br3"]) == ""
    assert "br3" not in ctl.switch.bridges


def test_del_br_removes_its_ports(ctl):
    ctl.execute(["del-br", "br1"])
    assert "q1" not in ctl.switch.ports and "q1-input" not in ctl.switch.graph
    assert "br1" not in ctl.execute(["show"])


def test_add_port_settings(ctl):
    out = ctl.execute(["add-port", "br0", "p4", "type=pg", "tag=30", "trunks=30,40-42",
                       "vlan_mode=native-untagged", "ofport_request=77", "options:split_group=2"],
                      "json")
    assert out == {"port": "p4", "bridge": "br0", "ofport": 77,
                   "sw_if_index": ctl.switch.ports["p4"].sw_if_index}
    p = ctl.switch.ports["p4"]
    assert (p.tag, p.trunks, p.vlan_mode, p.ofport) == (30, [30, 40, 41, 42], "native-untagged", 77)
    assert p.options == {"split_group": "2"}
    cfg = ctl.execute(["show"], "json")["bridge"]["br0"]["port"]["p4"]
    assert cfg == {"type": "pg", "ofport": 77, "tag": 30, "trunks": [30, 40, 41, 42],
                   "vlan_mode": "native-untagged", "options:split_group": "2"}


def test_del_port_forms(ctl):
    assert ctl.execute(["del-port", "br0", "p2"]) == ""
    assert ctl.execute(["del-port", "q1"], "json") == {}
    assert "p2" not in ctl.switch.ports and "q1" not in ctl.switch.ports
    assert "p2-input" not in ctl.switch.graph and "q1-output" not in ctl.switch.graph


def test_set_port_changes_forwarding(ctl):
    assert set(send(ctl.switch, "p1", frame(A))) == {"p2", "t1"}
    ctl.execute(["set", "port", "p2", "tag=20"])
    assert ctl.switch.ports["p2"].tag == 20
    assert set(send(ctl.switch, "p1", frame(A))) == {"t1"}
    ctl.execute(["set", "port", "t1", "trunks=20"])
    assert set(send(ctl.switch, "p1", frame(A))) == set()
    ctl.execute(["set", "interface", "t1", "trunks=[]", "vlan_mode=trunk"])
    p = ctl.switch.ports["t1"]
    assert (p.trunks, p.vlan_mode) == ([], "trunk")
    ctl.execute(["set", "port", "t1", "vlan_mode=[]"])
    assert p.vlan_mode is None


def test_flows(ctl):
    ctl.execute(["add-flow", "br0", "priority=100,in_port=p1,dl_src=00:00:00:00:00:0a actions=drop"])
    # a flow split over several argv elements is joined with spaces
    ctl.execute(["add-flow", "br0", "priority=90,in_port=p3", "actions=NORMAL"])
    lines = ctl.execute(["dump-flows", "br0"]).splitlines()
    assert len(lines) == 3
    assert "priority=100,in_port=p1,dl_src=00:00:00:00:00:0a actions=drop" in lines[0]
    assert "priority=90,in_port=p3 actions=NORMAL" in lines[1]
    assert send(ctl.switch, "p1", frame(A)) == {}                  # dropped by the flow
    assert set(send(ctl.switch, "p1", frame(B))) == {"p2", "t1"}  # NORMAL
    flows = ctl.execute(["dump-flows", "br0"], "json")
    assert [f["priority"] for f in flows] == [100, 90, 0]
    assert flows[0]["n_packets"] == 1 and flows[0]["actions"] == "drop"
    assert flows[2]["match"] == "" and flows[2]["actions"] == "NORMAL"
    assert ctl.execute(["del-flows", "br0", "in_port=p3"], "json") == {"deleted": 1}
    assert len(ctl.execute(["dump-flows", "br0"]).splitlines()) == 2
    assert ctl.execute(["del-flows", "br0"], "json") == {"deleted": 2}
    assert ctl.execute(["dump-flows", "br0"], "json") == []
    assert send(ctl.switch, "p1", frame(B)) == {}                  # no rules: drop


def test_fdb_commands(ctl):
    send(ctl.switch, "p1", frame(A))
    send(ctl.switch, "t1", frame(B, vlan=20))
    text = ctl.execute(["fdb/show", "br0"])
    assert text.splitlines()[0].split() == ["port", "VLAN", "MAC", "Age"]
    assert A in text and B in text
    rows = ctl.execute(["fdb/show", "br0"], "json")
    assert {(r["port"], r["vlan"], r["mac"]) for r in rows} == {("p1", 10, A), ("t1", 20, B)}
    assert ctl.execute(["fdb/add", "br0", "p2", "10", C]) == ""
    rows = ctl.execute(["fdb/show", "br0"], "json")
    assert {"port": "p2", "vlan": 10, "mac": C, "age": "static"} in rows
    assert "static" in ctl.execute(["fdb/show", "br0"])
    # the static entry is used: unicast to C on VLAN 10 goes to p2 only
    assert set(send(ctl.switch, "p1", frame(A, dst=C))) == {"p2"}
    assert ctl.execute(["fdb/flush", "br0"]) == "table successfully flushed"
    rows = ctl.execute(["fdb/show", "br0"], "json")
    assert [r["mac"] for r in rows] == [C]                        # static entries stay
    send(ctl.switch, "p1", frame(A))
    assert ctl.execute(["fdb/flush", "br0"], "json") == {"flushed": 1}


def test_show_interfaces(ctl):
    send(ctl.switch, "p1", frame(A), frame(A))
    text = ctl.execute(["show", "interfaces"])
    head = text.splitlines()[0]
    for col in ("Name", "MTU", "rx packets", "rx bytes", "rx drops", "tx packets", "tx bytes", "tx drops"):
        assert col in head
    p1 = next(line for line in text.splitlines() if line.startswith("p1 "))
    assert p1.split()[4] == "9000"                                # MTU: an in-memory port's default
    assert p1.split()[5] == "2"                                   # rx packets
    rows = {r["name"]: r for r in ctl.execute(["show", "interfaces"], "json")}
    assert rows["p1"]["rx_packets"] == 2 and rows["p1"]["rx_bytes"] == 2 * len(frame(A))
    assert rows["p2"]["tx_packets"] == 2 and rows["t1"]["tx_packets"] == 2
    assert rows["t1"]["tx_bytes"] == 2 * (len(frame(A)) + 4)
    assert rows["p3"]["tx_packets"] == 0 and rows["p3"]["tx_drops"] == 0
    json.dumps(rows)


def test_mtu_request(ctl):
    """mtu_request sets the MTU interface-output enforces, shows in `show interfaces` and
    `show` json, survives save/apply, and [] goes back to the default."""
    big = bytes(Ether(src=A, dst=B, type=0x88b5) / Raw(bytes(1500)))
    send(ctl.switch, "p2", frame(B))                              # B learned on p2
    ctl.execute(["set", "interface", "p2", "mtu_request=1400"])
    rows = {r["name"]: r for r in ctl.execute(["show", "interfaces"], "json")}
    assert rows["p2"]["mtu"] == 1400 and rows["p1"]["mtu"] == 9000
    assert send(ctl.switch, "p1", big) == {}
    errors = {(n, r): c for c, n, r, _ in ctl.switch.errors()}
    assert errors[("interface-output", "mtu_exceeded")] == 1
    assert ctl.config()["bridge"]["br0"]["port"]["p2"]["mtu_request"] == 1400
    cmds = config_commands(ctl.config())
    assert ["add-port", "br0", "p2", "type=pg", "ofport_request=2", "tag=10", "mtu_request=1400"] in cmds
    ctl.execute(["set", "interface", "p2", "mtu_request=[]"])
    assert send(ctl.switch, "p1", big) == {"p2": [big]}
    ctl.execute(["add-port", "br0", "p9", "type=pg", "mtu_request=1280"])
    assert ctl.switch.port("p9").mtu == 1280


def test_runtime_and_errors(ctl):
    send(ctl.switch, "p1", frame(A))
    send(ctl.switch, "t1", frame(B, vlan=30))                      # VLAN 30 not carried
    text = ctl.execute(["show", "runtime"])
    assert "l2-learn" in text and "p1-input" in text and "Vectors/Call" in text
    rows = ctl.execute(["show", "runtime"], "json")
    learn = next(r for r in rows if r["name"] == "l2-learn")
    assert learn["packets"] >= 1 and learn["state"] == "active"
    json.dumps(rows)
    errs = ctl.execute(["show", "errors"], "json")
    assert errs and all(set(e) == {"count", "node", "reason", "text"} for e in errs)
    assert any(e["node"] == "vlan-input" for e in errs)
    assert "vlan-input" in ctl.execute(["show", "errors"])
    assert ctl.execute(["clear", "runtime"]) == ""
    assert ctl.execute(["show", "runtime"], "json") == []


def test_trace(ctl):
    assert ctl.execute(["trace", "add", "p1", "2"], "json") == {"node": "p1-input", "count": 2}
    ctl.execute(["trace", "add", "t1-input", "1"])
    send(ctl.switch, "p1", frame(A), frame(A), frame(A))
    send(ctl.switch, "t1", frame(B, vlan=20))
    text = ctl.execute(["trace", "show"])
    assert "Packet 1" in text and "Packet 3" in text and "Packet 4" not in text
    assert "p1-input" in text and "l2-flood" in text and "t1-input" in text
    recs = ctl.execute(["trace", "show"], "json")
    assert len(recs) == 3
    assert recs[0]["path"][0]["node"] == "p1-input"
    assert "l2-learn" in [s["node"] for s in recs[0]["path"]]
    json.dumps(recs)
    ctl.execute(["trace", "clear"])
    assert ctl.execute(["trace", "show"]) == "No packets in trace buffer"
    assert ctl.execute(["trace", "show"], "json") == []


def test_pcap(ctl, tmp_path):
    f = str(tmp_path / "p2.pcap")
    assert ctl.execute(["pcap", "start", "p2", f], "json") == {"port": "p2", "file": f}
    send(ctl.switch, "p1", frame(A))                              # p2 transmits it
    send(ctl.switch, "p2", frame(B))                              # p2 receives it
    assert ctl.execute(["pcap", "stop", "p2"]) == f"2 frames written to {f}"
    got = [fr for _, fr in read_pcap(f)]
    assert got == [frame(A), frame(B)]
    assert ctl.switch.graph["p2-input"].capture is None
    assert ctl.switch.graph["p2-output"].capture is None
    # a port deleted while captured: the capture is closed with it
    ctl.execute(["pcap", "start", "p3", str(tmp_path / "p3.pcap")])
    ctl.execute(["del-port", "p3"])
    assert ctl.captures == {}
    with pytest.raises(CommandError, match="no capture"):
        ctl.execute(["pcap", "stop", "p3"])


def test_save_apply_round_trip(ctl, tmp_path):
    ctl.execute(["set", "bridge", "br0", "other_config:mac-aging-time=42.5",
                 "other_config:mac-table-size=1000"])
    ctl.execute(["add-port", "br0", "p9", "type=pg", "tag=5", "trunks=5,6", "vlan_mode=native-tagged",
                 "ofport_request=40", "options:split_group=3"])
    ctl.execute(["add-flow", "br0", "priority=200,in_port=p9,dl_vlan=5 actions=mod_vlan_vid:6,output:t1"])
    ctl.execute(["add-flow", "br0", "cookie=0x7,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=drop"])
    ctl.execute(["add-br", "empty"])
    path = str(tmp_path / "fastpath.toml")
    assert ctl.execute(["save", path], "json") == {"file": path}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with open(path, "rb") as f:
        data = tomllib.load(f)
    assert data == ctl.switch.config()
    # through Control (what `fastpath run --config` does)
    c2 = Control(Switch(n_buffers=1024, clock=Clock()))
    c2.load(path)
    assert c2.switch.config() == ctl.switch.config()
    assert c2.execute(["show"]) == ctl.execute(["show"])
    assert [f for f, _, _ in c2.switch.bridges["br0"].flows.stats()] == \
           [f for f, _, _ in ctl.switch.bridges["br0"].flows.stats()]
    c2.switch.close()
    # and through Switch.apply
    sw3 = Switch(n_buffers=1024, clock=Clock())
    sw3.apply(data)
    assert sw3.config() == ctl.switch.config()
    sw3.close()
    # saving again over the file gives the same bytes
    text = open(path).read()
    ctl.execute(["save", path])
    assert open(path).read() == text


def test_dump_toml_quoting():
    data = {"bridge": {"br.0": {"mac_aging_time": 1.5, "port": {'we"ird': {"options:k": 'a"b\\c\n'}},
                                "flows": ["x"]}}}
    assert tomllib.loads(dump_toml(data)) == data
    assert tomllib.loads(dump_toml({"bridge": {}})) == {"bridge": {}}


def test_version_and_help(ctl):
    assert ctl.execute(["version"]).startswith("fastpath ")
    assert set(ctl.execute(["version"], "json")) == {"version"}
    text = ctl.execute(["help"])
    for cmd in ("add-br", "del-br", "set bridge", "add-port", "del-port", "set port", "show",
                "add-flow", "del-flows", "dump-flows", "fdb/show", "fdb/flush", "fdb/add",
                "show interfaces", "show runtime", "clear runtime", "show errors", "trace add",
                "trace show", "trace clear", "pcap start", "pcap stop", "save", "version", "help"):
        assert cmd in text
    assert any(h["command"] == "add-flow" for h in ctl.execute(["help"], "json"))


def test_json_is_serializable_for_every_command(ctl, tmp_path):
    send(ctl.switch, "p1", frame(A))
    for argv in (["show"], ["dump-flows", "br0"], ["fdb/show", "br0"], ["show", "interfaces"],
                 ["show", "runtime"], ["show", "errors"], ["trace", "show"], ["version"], ["help"],
                 ["add-br", "x"], ["set", "bridge", "x", "other_config:mac-aging-time=3"],
                 ["add-port", "x", "xp", "type=pg"], ["set", "port", "xp", "tag=3"],
                 ["add-flow", "x", "actions=drop"], ["del-flows", "x"], ["fdb/add", "x", "xp", "3", A],
                 ["fdb/flush", "x"], ["trace", "add", "xp", "1"], ["trace", "clear"],
                 ["pcap", "start", "xp", str(tmp_path / "x.pcap")], ["pcap", "stop", "xp"],
                 ["save", str(tmp_path / "x.toml")], ["clear", "runtime"], ["del-port", "xp"],
                 ["del-br", "x"]):
        out = ctl.execute(argv, "json")
        assert isinstance(out, (dict, list)), argv
        json.dumps(out)


# ---------------------------------------------------------------- bad input

BAD = [
    ([], "no command"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["add-br"], "wrong number of arguments"),
    (["add-br", "br0"], "already exists"),
    (["add-br", "brX", "other_config:mac-aging-time=-1"], "mac-aging-time"),
    (["add-br", "brX", "other_config:mac-aging-time=abc"], "mac-aging-time"),
    (["add-br", "brX", "other_config:mac-table-size=0"], "mac-table-size"),
    (["add-br", "brX", "other_config:mac-table-size=99999999999"], "mac-table-size"),
    (["add-br", "brX", "other_config:colour=blue"], "unknown bridge setting"),
    (["add-br", "brX", "noequals"], "KEY=VALUE"),
    (["add-br", "bad name"], "bad bridge name"),
    (["del-br", "nope"], "no bridge named nope"),
    (["del-br", "br0", "extra"], "wrong number of arguments"),
    (["set", "bridge", "nope", "other_config:mac-aging-time=1"], "no bridge named nope"),
    (["set", "bridge", "br0", "other_config:mac-aging-time=9", "other_config:mac-table-size=x"],
     "mac-table-size"),
    (["set", "bridge", "br0"], "wrong number of arguments"),
    (["set", "frob", "x", "y"], "unknown command 'set frob'"),
    (["add-port", "br0", "p9", "type=pg", "tag=4096"], "tag: 4096 out of range"),
    (["add-port", "br0", "p9", "type=pg", "tag=abc"], "tag: 'abc' is not a VLAN id"),
    (["add-port", "br0", "p9", "type=pg", "tag=-1"], "tag"),
    (["add-port", "nope", "p9", "type=pg"], "no bridge named nope"),
    (["add-port", "br0", "p1", "type=pg"], "port p1 already exists"),
    (["add-port", "br1", "p1", "type=pg"], "port p1 already exists"),
    (["add-port", "br0", "p9", "type=bogus"], "unknown port type 'bogus'"),
    (["add-port", "br0", "p9", "type=pg", "trunks=10,x"], "trunks"),
    (["add-port", "br0", "p9", "type=pg", "trunks=10-9999"], "trunks"),
    (["add-port", "br0", "p9", "type=pg", "vlan_mode=weird"], "vlan_mode"),
    (["add-port", "br0", "p9", "type=pg", "ofport_request=1"], "ofport 1 is taken"),
    (["add-port", "br0", "p9", "type=pg", "ofport_request=0"], "ofport_request"),
    (["add-port", "br0", "p9", "type=pg", "ofport_request=x"], "ofport_request"),
    (["add-port", "br0", "p9", "type=pg", "options:split_group=999"], "split_group"),
    (["add-port", "br0", "p9", "type=pg", "options:bogus=1"], "unknown option 'bogus'"),
    (["add-port", "br0", "p9", "type=pg", "colour=red"], "unknown setting 'colour'"),
    (["add-port", "br0", "p9", "type=pg", "tag=1", "tag=2"], "given twice"),
    (["add-port", "br0", "p9", "type=pg", "justaword"], "KEY=VALUE"),
    (["add-port", "br0", "bad name", "type=pg"], "bad port name"),
    (["add-port", "br0", "averyveryverylongname", "type=pg"], "bad port name"),
    (["add-port", "br0", "ethernet", "type=pg"], "clashes with graph node ethernet-input"),
    (["add-port", "br0", "interface", "type=pg"], "clashes with graph node interface-output"),
    (["add-port", "br0", "nosuchif0", "type=afpacket"], "cannot open afpacket port nosuchif0"),
    (["add-port", "br0"], "wrong number of arguments"),
    (["del-port", "nope"], "no port named nope"),
    (["del-port", "br1", "p1"], "port p1 is not in bridge br1"),
    (["del-port", "nope", "p1"], "no bridge named nope"),
    (["del-port"], "wrong number of arguments"),
    (["set", "port", "nope", "tag=1"], "no port named nope"),
    (["set", "port", "p1", "tag=5000"], "tag: 5000 out of range"),
    (["set", "port", "p1", "tag=2", "trunks=1,bad"], "trunks"),
    (["set", "port", "p1", "colour=red"], "unknown setting 'colour'"),
    (["set", "port", "p1", "vlan_mode=sideways"], "vlan_mode"),
    (["set", "port", "p1"], "wrong number of arguments"),
    (["set", "interface", "p1", "mtu_request=67"], "mtu_request: 67 out of range"),
    (["set", "interface", "p1", "mtu_request=big"], "mtu_request"),
    (["set", "interface", "p1", "mtu_request=1400", "mtu_request=1500"], "given twice"),
    (["set", "interface", "nope", "mtu_request=1400"], "no port named nope"),
    (["set", "interface", "p1", "mtu_request=1400", "colour=red"], "unknown setting 'colour'"),
    (["add-port", "br0", "p9", "type=pg", "mtu_request=70000"], "mtu_request: 70000 out of range"),
    (["add-flow", "nope", "actions=drop"], "no bridge named nope"),
    (["add-flow", "br0"], "wrong number of arguments"),
    (["add-flow", "br0", "in_port=p1 actions=bogus"], "bogus"),
    (["add-flow", "br0", "colour=red actions=drop"], "colour"),
    (["add-flow", "br0", "in_port=p1,dl_vlan=5000 actions=drop"], "5000"),
    (["add-flow", "br0", "dl_src=zz:00:00:00:00:00 actions=drop"], "zz:00:00:00:00:00"),
    (["add-flow", "br0", "in_port=p1"], "actions="),
    (["add-flow", "br0", "in_port=nope actions=drop"], "nope"),
    (["add-flow", "br0", "actions=output:q1"], "q1"),            # a port of another bridge
    (["del-flows", "br0", "colour=red"], "colour"),
    (["del-flows", "nope"], "no bridge named nope"),
    (["dump-flows", "nope"], "no bridge named nope"),
    (["dump-flows"], "wrong number of arguments"),
    (["fdb/show", "nope"], "no bridge named nope"),
    (["fdb/flush", "nope"], "no bridge named nope"),
    (["fdb/add", "nope", "p1", "10", A], "no bridge named nope"),
    (["fdb/add", "br0", "q1", "10", A], "bridge br0 has no port q1"),
    (["fdb/add", "br0", "p1", "5000", A], "vlan"),
    (["fdb/add", "br0", "p1", "10", "zz:zz"], "zz:zz"),
    (["fdb/add", "br0", "p1", "10"], "wrong number of arguments"),
    (["show", "bogus"], "unknown command 'show bogus'"),
    (["show", "runtime", "extra"], "wrong number of arguments"),
    (["clear", "everything"], "unknown command 'clear everything'"),
    (["trace", "add", "nope", "5"], "no input node or port named 'nope'"),
    (["trace", "add", "l2-learn", "5"], "no input node or port named 'l2-learn'"),
    (["trace", "add", "p1", "abc"], "not an integer"),
    (["trace", "add", "p1", "0"], "out of range"),
    (["trace", "add", "p1"], "wrong number of arguments"),
    (["trace"], "unknown command 'trace'"),
    (["pcap", "start", "nope", "/tmp/x.pcap"], "no port named nope"),
    (["pcap", "start", "p1", "/nonexistent/dir/x.pcap"], "cannot open"),
    (["pcap", "stop", "p1"], "no capture running on p1"),
    (["pcap", "restart", "p1"], "unknown command 'pcap restart'"),
    (["save", "/nonexistent/dir/x.toml"], "cannot write"),
    (["save"], "wrong number of arguments"),
    (["version", "extra"], "wrong number of arguments"),
    (["help", "me"], "wrong number of arguments"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_bad_command_changes_nothing(ctl, argv, message, fmt):
    ctl.execute(["add-flow", "br0", "priority=5,in_port=p2 actions=NORMAL"])
    send(ctl.switch, "p1", frame(A))                              # something in the MAC table
    fwd_before = forwarding(ctl)                                  # (flushes the tables)
    send(ctl.switch, "p1", frame(A))
    before = state(ctl)
    with pytest.raises(CommandError) as e:
        ctl.execute(argv, fmt)
    msg = str(e.value)
    assert message in msg
    assert "\n" not in msg
    assert state(ctl) == before
    assert forwarding(ctl) == fwd_before


def test_bad_format_and_argv(ctl):
    with pytest.raises(CommandError, match="unknown format"):
        ctl.execute(["show"], "xml")
    with pytest.raises(CommandError, match="list of strings"):
        ctl.execute(["show", 3])
    with pytest.raises(CommandError, match="list of strings"):
        ctl.execute("show")


def test_table_size_below_static_entries_refused(ctl):
    for i in range(3):
        ctl.execute(["fdb/add", "br0", "p1", "10", f"00:00:00:00:01:0{i}"])
    before = state(ctl)
    with pytest.raises(CommandError, match="static"):
        ctl.execute(["set", "bridge", "br0", "other_config:mac-aging-time=7",
                     "other_config:mac-table-size=2"])
    assert state(ctl) == before


def test_pcap_start_twice_refused(ctl, tmp_path):
    ctl.execute(["pcap", "start", "p1", str(tmp_path / "a.pcap")])
    before = state(ctl)
    with pytest.raises(CommandError, match="already being captured"):
        ctl.execute(["pcap", "start", "p1", str(tmp_path / "b.pcap")])
    assert state(ctl) == before
    assert not (tmp_path / "b.pcap").exists()


BAD_CONFIGS = [
    ({"bridges": {}}, "expected only"),
    ({"bridge": {"br0": {"colour": 1}}}, "unknown key 'colour'"),
    ({"bridge": {"br0": {"port": {"p1": {"type": "pg", "speed": 1}}}}}, "unknown key 'speed'"),
    ({"bridge": {"br0": {"port": {"p1": {"type": "pg", "tag": 9999}}}}}, "tag"),
    ({"bridge": {"br0": {"flows": ["bogus=1 actions=drop"]}}}, "bogus"),
    ({"bridge": {"br0": "x"}}, "not a table"),
]


@pytest.mark.parametrize("config,message", BAD_CONFIGS)
def test_bad_config(config, message):
    c = Control(Switch(n_buffers=256, clock=Clock()))
    with pytest.raises(CommandError, match=message):
        c.apply_config(config)
    c.switch.close()


def test_config_commands_shape():
    cmds = config_commands({"bridge": {"br0": {"mac_aging_time": 5.0, "port": {
        "p1": {"type": "pg", "ofport": 3, "trunks": [1, 2], "options:split_group": "1"}},
        "flows": ["actions=drop"]}}})
    assert cmds == [["add-br", "br0", "other_config:mac-aging-time=5.0"],
                    ["add-port", "br0", "p1", "type=pg", "ofport_request=3", "trunks=1,2",
                     "options:split_group=1"],
                    ["del-flows", "br0"], ["add-flow", "br0", "actions=drop"]]


def test_secrets_stay_out_of_show_and_saved_configs(tmp_path):
    from vpnutil import make_site
    sw = make_site("192.0.2.1", "192.0.2.2", tunnel_options={"options:psk": "s3cret-psk"})
    c = Control(sw)
    assert "s3cret-psk" not in c.execute(["show"])
    assert "s3cret-psk" not in json.dumps(c.execute(["show"], fmt="json"))
    c.execute(["save", str(tmp_path / "plain.toml")])
    c.execute(["save", str(tmp_path / "full.toml"), "with-secrets"])
    assert "s3cret-psk" not in (tmp_path / "plain.toml").read_text()
    assert "s3cret-psk" in (tmp_path / "full.toml").read_text()
    assert os.stat(tmp_path / "full.toml").st_mode & 0o777 == 0o600
    with pytest.raises(CommandError, match="options:psk was not saved"):
        Control(Switch(n_buffers=256)).load(str(tmp_path / "plain.toml"))
    again = Control(Switch(n_buffers=256))
    again.load(str(tmp_path / "full.toml"))
    assert again.switch.ports["vpn0"].options["psk"] == "s3cret-psk"
    assert again.switch.config() == sw.config()
