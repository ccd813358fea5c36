"""Fuzz the command interpreter (every fastpathctl command, fastpath.control.Control.execute)
and the TOML config loader (Control.load).

    python fuzz/fuzz_control.py -atheris_runs=1000000 [CORPUS_DIR]

Commands: 1-6 argv lists per input, each a command of HELP (or random words) followed by
arguments from a dictionary of the language (bridge and port names, KEY=VALUE settings and
options with values on and past their limits, addresses, MACs, flows) and random strings;
text or json output. Config files: random text, or a valid configuration (uplink, bridges,
pg and vxlan ports with manual SAs, flows) written by dump_toml after mutations (values
replaced by other types and out-of-range values, keys dropped or invented).
Also request lines to the daemon's control socket (ControlServer._handle): random bytes,
deeply nested JSON, requests with wrong types.
Invariants:
  - execute() raises nothing but CommandError; after a CommandError the switch (config,
    graph nodes, MAC tables, flows, captures, tracing, VPN SAs, ARP) is exactly as before;
  - json output is JSON-serialisable, text output is a str;
  - a request line gets exactly one reply line, JSON with "ok", never an "internal error";
  - load() raises nothing but CommandError; a config that loads saves (config_text) as
    text that loads into a fresh switch as the same configuration.
Port types that open real devices or sockets (afpacket, system, internal, vhost-user) are
replaced by a stub that fails like a missing device: the fuzzer never touches the host's
interfaces. `save` and `pcap start` write only inside a temporary directory.
"""
import atexit
import json
import os
import re
import shutil
import tempfile

from fuzzcommon import Clock, Reader, atheris_main, feature, quiet

from fastpath import ports as port_types
from fastpath.control import HELP, CommandError, Control, dump_toml
from fastpath.switch import Switch


def _no_device(graph, port, worker=0):
    raise OSError(19, "No such device (fuzzing: real devices disabled)")


REAL_DEVICES = ("afpacket", "system", "internal", "vhost-user", "dpdkvhostuserclient")


class no_devices:
    """While fuzzing (one input), port types that open real devices fail like a missing one."""

    def __enter__(self):
        self.saved = {t: port_types.TYPES[t] for t in REAL_DEVICES if t in port_types.TYPES}
        for t in self.saved:
            port_types.TYPES[t] = _no_device

    def __exit__(self, *exc):
        port_types.TYPES.update(self.saved)

TMP = tempfile.mkdtemp(prefix="fastpath-fuzz-control-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, TMP, True)
KEY20 = "0x" + bytes(range(1, 21)).hex()
KEY36 = "0x" + bytes(range(1, 37)).hex()
BASE = [["add-ip", "up", "192.0.2.2/24", "type=pg", "options:mac=02:00:00:00:00:02"],
        ["add-br", "br0"],
        ["add-port", "br0", "p1", "type=pg", "tag=10"],
        ["add-port", "br0", "p2", "type=pg", "trunks=10,20"],
        ["add-port", "br0", "vpn0", "type=vxlan", "options:remote_ip=192.0.2.1",
         "options:local_ip=192.0.2.2", "options:key=5000", "options:spi_out=0x2000",
         "options:spi_in=0x1000", f"options:key_out={KEY20}", f"options:key_in={KEY36}"],
        ["add-br", "br1", "other_config:mac-table-size=16"],
        ["add-port", "br1", "q1", "type=pg", "vlan_mode=dot1q-tunnel", "tag=40"],
        ["add-flow", "br1", "priority=10,in_port=q1 actions=drop"]]

COMMANDS = [c.split() for c, _, _ in HELP] + [["set", "interface"], ["pcap start"], ["set bridge"],
                                                ["show", "bogus"], ["frobnicate"], []]
BRIDGES = ["br0", "br1", "br2", "brX", "", " ", "a b", "b" * 65, "br0 ", "\u00e9"]
PORTS = ["p1", "p2", "p3", "q1", "vpn0", "vpn1", "up", "up2", "new", "p1-input", "x" * 16, "",
         "a/b", "p.1", "error-drop", "ethernet", "-", "ethernet-input"]
SETTINGS = [
    "type=pg", "type=pg", "type=vxlan", "type=afpacket", "type=internal", "type=vhost-user", "type=system",
    "type=bogus", "type=", "tag=10", "tag=0", "tag=4095", "tag=4096", "tag=-1", "tag=[]", "tag=", "tag=x",
    "trunks=10,20", "trunks=1-4095", "trunks=[]", "trunks=", "trunks=5-3", "trunks=a", "trunks=10-",
    "trunks=[10,20]", "trunks=0x10", "vlan_mode=trunk", "vlan_mode=access", "vlan_mode=native-tagged",
    "vlan_mode=native-untagged", "vlan_mode=dot1q-tunnel", "vlan_mode=[]", "vlan_mode=bogus",
    "ofport_request=1", "ofport_request=2", "ofport_request=65279", "ofport_request=65280",
    "ofport_request=0", "ofport_request=0x10", "other_config:mac-aging-time=60",
    "other_config:mac-aging-time=0", "other_config:mac-aging-time=nan", "other_config:mac-aging-time=inf",
    "other_config:mac-aging-time=1e309", "other_config:mac-aging-time=-5",
    "other_config:mac-table-size=1", "other_config:mac-table-size=0", "other_config:mac-table-size=16777216",
    "other_config:mac-table-size=16777217", "other-config:mac_table_size=4", "other_config:bogus=1",
    "options:split_group=3", "options:split_group=256", "options:mtu=68", "options:mtu=67",
    "options:mtu=65535", "options:keep=false", "options:keep=maybe", "options:mac=02:00:00:00:00:99",
    "options:mac=01:00:00:00:00:99", "options:mac=zz", "options:remote_ip=192.0.2.1",
    "options:remote_ip=192.0.2.3", "options:remote_ip=224.0.0.1", "options:remote_ip=0.0.0.0",
    "options:remote_ip=192.0.2.2", "options:remote_ip=::1", "options:local_ip=192.0.2.2",
    "options:local_ip=192.0.2.9", "options:key=5000", "options:key=5001", "options:key=16777216",
    "options:psk=secret", "options:psk=", "options:esn=true", "options:esn=false", "options:esn=1",
    "options:replay_window=0", "options:replay_window=4097", "options:spi_out=0x2000", "options:spi_out=0x2001",
    "options:spi_out=255", "options:spi_in=0x1000", "options:spi_in=0x1001", "options:spi_in=0x100000000",
    f"options:key_out={KEY20}", f"options:key_in={KEY36}", "options:key_in=0x00", "options:key_out=zz",
    "options:encap=udp", "options:encap=none", "options:encap=tcp", "options:replay_window=4096",
    "options:replay_window=4097", "options:rekey_time=1", "options:rekey_packets=0", "options:ike=false",
    "options:vhost-socket=sock", "options:fanout_group=7", "options:bogus=1", "gw=192.0.2.254",
    "gw=10.0.0.1", "gw=x", "=x", "x", "noeq", "options:", "type=pg=x"]
VALUES = ["192.0.2.2/24", "192.0.2.5/24", "192.0.2.0/24", "10.0.0.1/32", "1.2.3.4", "300.1.1.1/8", "",
          "00:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "0", "1", "10", "4096", "10000", "-1", "0x10",
          "in_port=p1 actions=output:p2", "priority=100,dl_vlan=10 actions=strip_vlan,normal",
          "actions=drop", "in_port=vpn0", "actions=output:99", "ethernet-input", "p1-input",
          "up-input", "nonexistent-input", "x.pcap", "dir/x.pcap", "with-secrets", "HIDDEN"]


def build():
    ctl = Control(Switch(n_buffers=64, clock=Clock()))
    for argv in BASE:
        ctl.execute(argv)
    return ctl


def state(ctl):
    """Everything a command could change (read from the objects directly: this runs twice per
    command, and fastpath's own formatting code is slow under atheris' instrumentation)."""
    sw = ctl.switch
    vpn = getattr(sw, "vpn", None)
    return (sorted(sw.graph.by_name),
            [(b, br.index, br.fdb.aging_time, br.fdb.max_entries, sorted(br.ports),
              [(f.rule, f.in_port, tuple(f.out_ports)) for f in br.flows.flows],
              sorted(br.fdb.entries(sw.tables.now))) for b, br in sw.bridges.items()],
            [(n, p.type, p.bridge.name, p.tag, tuple(p.trunks), p.vlan_mode, p.ofport, p.sw_if_index,
              sorted(p.options.items())) for n, p in sw.ports.items()],
            [(n, str(u.address), str(u.gateway), u.sw_if_index, sorted(u.options.items()))
             for n, u in sw.uplinks.items()],
            sorted(ctl.captures), sw.graph.tracer.active, len(sw.graph.tracer.records),
            sorted(sw.graph["esp-decrypt"].sas), sorted(sw.graph["esp-encrypt"].outbound),
            sorted((k, t.port.name, sorted(t.inbound)) for k, t in vpn.tunnels.items()) if vpn else None,
            sorted(sw.arp.addresses), sorted(sw.graph["vxlan-input"].tunnels.items()))


def safe_path(r):
    name = re.sub(r"[^A-Za-z0-9._-]", "", r.text(12))[:20]
    return r.pick((os.path.join(TMP, name or "x"), TMP, os.path.join(TMP, "nodir", "x"),
                   os.path.join(TMP, "f.pcap"), os.path.join(TMP, "nul\0byte")))


def argv_of(r):
    head = list(r.pick(COMMANDS)) if r.u8() % 8 else [r.text(12)]
    args = []
    for _ in range(r.u8() % 7):
        k = r.u8() % 16
        if k < 3:
            args.append(r.pick(BRIDGES))
        elif k < 6:
            args.append(r.pick(PORTS))
        elif k < 11:
            args.append(r.pick(SETTINGS))
        elif k < 14:
            args.append(r.pick(VALUES))
        else:
            args.append(r.text(24))
    return head + args


_ctl = None
_base = None


def _reset():
    """Back to the baseline configuration (cheaply when possible)."""
    global _ctl, _base
    if _ctl is None:
        _ctl = build()
        _base = state(_ctl)
        return _ctl
    ctl = _ctl
    if run_command.state == _base:          # what the last input left: nothing to undo
        return ctl
    ctl.close()
    sw = ctl.switch
    sw.graph.trace_clear()
    if state(ctl) == _base:
        return ctl
    try:
        base_bridges = {a[1] for a in BASE if a[0] == "add-br"}
        base_ports = {a[2] for a in BASE if a[0] == "add-port"}
        for b in [b for b in sw.bridges if b not in base_bridges]:
            sw.del_br(b)
        for p in [p for p in sw.ports if p not in base_ports]:
            sw.del_port(p)
        for u in [u for u in sw.uplinks if u != "up"]:
            sw.del_ip(u)
        for b in sw.bridges:
            sw.fdb_flush(b)
    except Exception:
        pass
    if state(ctl) != _base:
        sw.close()
        _ctl = build()
        _base = state(_ctl)
    return _ctl


def sanitize(ctl, argv):
    """The FILE of `save FILE [with-secrets]` and `pcap start IFACE FILE` never outside TMP."""
    try:
        name, args = ctl._lookup(list(argv)) if argv and all(isinstance(a, str) for a in argv) else (None, [])
    except CommandError:
        name, args = None, []
    where = {"save": 0, "pcap start": 1}.get(name)
    if where is not None and len(args) > where:
        argv = list(argv)
        argv[len(argv) - len(args) + where] = run_command.path
    return name, argv


def run_command(ctl, argv, fmt):
    name, argv = sanitize(ctl, argv)
    before = run_command.state
    try:
        out = ctl.execute(argv, fmt)
    except CommandError as e:
        after = run_command.state = state(ctl)
        assert after == before, f"{argv!r} failed ({e}) but changed the switch"
        feature(hash(name or "?") % 200)
        return False
    except BaseException:
        run_command.state = None
        raise
    run_command.state = state(ctl)
    if fmt == "json":
        json.dumps(out)
    else:
        assert isinstance(out, str), f"{argv!r} -> {type(out)}"
    feature(200 + hash(name or "?") % 200)
    return True


run_command.state = None        # the switch's state() after the last command


_blank = {}


def blank(slot):
    """An empty switch for loading configs into (reused: making one costs milliseconds)."""
    def empty(ctl):                 # (an emptied VPN counts as none)
        s = state(ctl)
        return s[:9] + (s[9] or None,) + s[10:]
    ctl = _blank.get(slot)
    if ctl is not None:
        ctl.close()
        ctl.switch.close()
        if empty(ctl) == _blank["state"]:
            return ctl
    ctl = _blank[slot] = Control(Switch(n_buffers=64, clock=Clock()))
    _blank.setdefault("state", empty(ctl))
    return ctl


def load_config(text):
    """text: str, or bytes (not necessarily UTF-8)."""
    path = os.path.join(TMP, "config.toml")
    with open(path, "wb") as f:
        f.write(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    ctl = blank("a")
    try:
        ctl.load(path)
    except CommandError:
        feature(500)
        return
    feature(501)
    try:
        saved = ctl.config_text(secrets=True)                   # PSKs and keys included
    except TypeError:
        saved = ctl.config_text()
    with open(path, "w") as f:
        f.write(saved)
    again = blank("b")
    again.load(path)
    assert state(again)[2:4] == state(ctl)[2:4] and \
        json.dumps(again.switch.config(), sort_keys=True) == json.dumps(ctl.switch.config(), sort_keys=True), \
        "saved config does not load back as the same configuration"


_base_config = None
_server = None


class _Client:
    def __init__(self):
        self.outbuf = bytearray()


def request(ctl, r):
    """A request line to the daemon's control socket (ControlServer._handle)."""
    global _server
    from fastpath.daemon import ControlServer
    if _server is None or _server.control is not ctl:
        _server = ControlServer(os.path.join(TMP, "sock"), ctl, ctl.switch.graph)
    k = r.u8() % 4
    if k == 0:
        line = r.blob(300)
    elif k == 1:
        line = (r.pick(("[", '{"argv":', '{"a":[', "[{}")) * r.pick((10, 990, 1100, 100000))).encode()
    else:
        req = {"argv": argv_of(r), "format": r.pick(("text", "json", "xml", 1, None))}
        for _ in range(r.u8() % 3):
            key = r.pick(("argv", "format", "x"))
            req[key] = r.pick((None, 1, "show", [1], ["show", 2], {"a": 1}, [], r.text(8)))
        line = json.dumps(req).encode()
        if r.chance(8):
            line = line[:r.int_in(0, len(line))]
    # whatever the line says, a command's FILE stays inside TMP
    try:
        req = json.loads(line)
        if isinstance(req, dict) and isinstance(req.get("argv"), list) and \
                all(isinstance(a, str) for a in req["argv"]):
            req["argv"] = sanitize(ctl, req["argv"])[1]
            line = json.dumps(req).encode()
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
    c = _Client()
    _server._handle(c, line)
    reply = bytes(c.outbuf)
    assert reply.endswith(b"\n") and reply.count(b"\n") == 1, f"reply is not one line: {reply[:200]!r}"
    d = json.loads(reply)
    assert isinstance(d, dict) and d.get("ok") in (True, False), d
    assert "internal error" not in str(d.get("error", "")), f"{line[:200]!r}: {d['error']}"
    feature(600 + 2 * k + bool(d["ok"]))



def mutate_config(r, cfg):
    """Replace, drop or invent a few values anywhere in a config dict."""
    for _ in range(1 + r.u8() % 4):
        d = cfg
        path = []
        while isinstance(d, dict) and d and r.u8() % 3:
            k = r.pick(sorted(d))
            path.append(k)
            if not isinstance(d[k], dict):
                break
            d = d[k]
        if not path:
            continue
        parent = cfg
        for k in path[:-1]:
            parent = parent[k]
        op = r.u8() % 5
        if op == 0:
            del parent[path[-1]]
        elif op == 1:
            parent[r.pick(("bogus", "tag", "type", "options:mtu", "flows", "port", "address"))] = \
                r.pick((1, "x", [], {}, [1, "a"], 1.5, True))
        else:
            parent[path[-1]] = r.pick((0, -1, 4096, 1 << 70, 1.5, float("nan"), float("inf"), True, "", "x",
                                       "[]", [], [1, 2], ["a"], {}, {"x": 1}, "10,20", "192.0.2.1",
                                       r.text(10), r.u16()))
    return cfg


def one_input(data):
    with no_devices(), quiet("fastpath.daemon", "fastpath.vpn"):
        _one_input(data)


def _one_input(data):
    global _base_config
    r = Reader(data)
    mode = r.u8() % 8
    if mode == 6:
        ctl = _reset()
        run_command.path = safe_path(r)
        request(ctl, r)
        run_command.state = None
        return
    if mode == 7:
        if r.bool():
            text = r.blob(400)                                  # raw bytes: not even UTF-8
        else:
            if _base_config is None:
                _base_config = json.loads(json.dumps(build().switch.config()))
            cfg = mutate_config(r, json.loads(json.dumps(_base_config)))
            try:
                text = dump_toml(cfg)
            except (TypeError, ValueError):
                return
        load_config(text)
        return
    ctl = _reset()
    run_command.state = _base
    run_command.path = safe_path(r)
    for _ in range(1 + r.u8() % 4):
        argv = argv_of(r)
        fmt = "json" if r.u8() % 3 == 0 else "text" if r.u8() % 16 else "xml"
        run_command(ctl, argv, fmt)


def seeds():
    out = []
    for argv in BASE[2:] + [["show"], ["dump-flows", "br1"], ["set", "port", "p1", "tag=20"],
                            ["del-br", "br1"], ["show", "sa"]]:
        out.append(bytes([0, 0, 0]) + "\0".join(argv).encode())
    return out


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
