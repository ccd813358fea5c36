"""Switch: bridges and ports in Open vSwitch's vocabulary, on top of the node graph.

The standard graph, as a diagram (build_graph below is this picture):

  <port>-input -> ethernet-input -> [flow-classify] -> vlan-input -> l2-learn -> l2-fwd
                                          |                                      |    \\
                                          |                                      |   l2-flood
                                          v                                      v    /
                              interface-output <------------------------- vlan-output
                                          |
                                   <port>-output

Everything here is control plane: it validates configuration, writes the C tables the
nodes read (L2Tables, Fdb, FlowTable) and creates or removes interface nodes. Nothing in
this file runs per packet.
"""
import time

from fastpath.graph.graph import Graph
from fastpath.nodes.bridge import L2Tables, MODES
from fastpath.nodes.ethernet import EthernetInput
from fastpath.nodes.fdb import Fdb
from fastpath.nodes.flow import FlowClassify, FlowTable
from fastpath.nodes.interface import InterfaceOutput
from fastpath.nodes.l2 import L2Flood, L2Forward, L2Learn
from fastpath.nodes.vlan import VlanInput, VlanOutput
from fastpath import ports as port_types

MAX_BRIDGES = 256
MAX_PORTS = 4096


class ConfigError(ValueError):
    """A configuration request that cannot be applied; the message says why, in one line."""


def build_graph(graph, tables):
    for node in (EthernetInput(tables), FlowClassify(tables), VlanInput(tables),
                 L2Learn(tables), L2Forward(tables), L2Flood(tables), VlanOutput(tables),
                 InterfaceOutput()):
        graph.add(node)


def parse_vlan(value, what="tag"):
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: {value!r} is not a VLAN id") from None
    if not 0 <= v <= 4095:
        raise ConfigError(f"{what}: {v} out of range 0..4095")
    return v


def parse_trunks(value):
    """'10,20' / [10, 20] / '' -> sorted list of VLANs ([] = all)."""
    if value in (None, "", "[]"):
        return []
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[]").split(",")
    out = set()
    for item in items:
        item = str(item).strip()
        if "-" in item:
            lo, hi = item.split("-", 1)
            out.update(range(parse_vlan(lo, "trunks"), parse_vlan(hi, "trunks") + 1))
        elif item:
            out.add(parse_vlan(item, "trunks"))
    return sorted(out)


class Port:
    def __init__(self, name, type, sw_if_index, ofport, bridge):
        self.name = name
        self.type = type
        self.sw_if_index = sw_if_index
        self.ofport = ofport
        self.bridge = bridge
        self.tag = None
        self.trunks = []
        self.vlan_mode = None
        self.options = {}
        self.io = None            # the interface object (socket, TAP, in-memory)

    @property
    def effective_mode(self):
        return self.vlan_mode or ("access" if self.tag is not None else "trunk")

    def settings(self):
        s = {"type": self.type, "ofport": self.ofport}
        if self.tag is not None:
            s["tag"] = self.tag
        if self.trunks:
            s["trunks"] = list(self.trunks)
        if self.vlan_mode:
            s["vlan_mode"] = self.vlan_mode
        s.update({f"options:{k}": v for k, v in self.options.items()})
        return s


class Bridge:
    def __init__(self, name, index, mac_aging_time=300.0, mac_table_size=8192, resolve=None):
        self.name = name
        self.index = index
        self.ports = {}
        self.fdb = Fdb(max_entries=mac_table_size, aging_time=mac_aging_time)
        self.flows = FlowTable(self.resolve_port)

    def resolve_port(self, ref):
        """A port name or OpenFlow number -> sw_if_index (flow syntax: in_port, output)."""
        for p in self.ports.values():
            if p.name == ref or (isinstance(ref, int) and p.ofport == ref):
                return p.sw_if_index
        raise ConfigError(f"bridge {self.name} has no port {ref!r}")

    def port_by_index(self, sw_if_index):
        for p in self.ports.values():
            if p.sw_if_index == sw_if_index:
                return p
        return None


class Switch:
    def __init__(self, n_buffers=16384, clock=time.monotonic):
        self.clock = clock
        self.graph = Graph(n_buffers=n_buffers)
        self.tables = L2Tables()
        self.tables.now = clock()
        build_graph(self.graph, self.tables)
        self.bridges = {}
        self.ports = {}                 # every port by name
        self.graph.add_timer(1.0, lambda _now: self.tick())

    # ---- time ----

    def tick(self, now=None):
        """Advance the switch clock and age the MAC tables (off the packet path)."""
        now = self.clock() if now is None else now
        self.tables.now = now
        for br in self.bridges.values():
            br.fdb.age(now)

    # ---- bridges ----

    def add_br(self, name, **other_config):
        if name in self.bridges:
            raise ConfigError(f"bridge {name} already exists")
        if not name or any(c.isspace() for c in name):
            raise ConfigError(f"bad bridge name {name!r}")
        used = {b.index for b in self.bridges.values()}
        free = [i for i in range(MAX_BRIDGES) if i not in used]
        if not free:
            raise ConfigError(f"at most {MAX_BRIDGES} bridges")
        br = Bridge(name, free[0])
        self.bridges[name] = br
        self.tables.set_bridge(br.index, br.fdb, br.flows)
        self.set_bridge(name, **other_config)
        return br

    def set_bridge(self, name, **other_config):
        br = self.bridge(name)
        for key, value in other_config.items():
            key = key.replace("other_config:", "").replace("_", "-")
            try:
                if key == "mac-aging-time":
                    br.fdb.aging_time = float(value)
                    if br.fdb.aging_time <= 0:
                        raise ValueError
                elif key == "mac-table-size":
                    if int(value) < 1:
                        raise ValueError
                    br.fdb.set_max_entries(int(value))
                else:
                    raise ConfigError(f"unknown bridge setting {key!r}")
            except ValueError:
                raise ConfigError(f"bad value {value!r} for {key}") from None

    def del_br(self, name):
        br = self.bridge(name)
        for pname in list(br.ports):
            self.del_port(pname)
        self.tables.clear_bridge(br.index)
        del self.bridges[name]

    def bridge(self, name):
        try:
            return self.bridges[name]
        except KeyError:
            raise ConfigError(f"no bridge named {name}") from None

    # ---- ports ----

    def add_port(self, br_name, ifname, type="afpacket", tag=None, trunks=None, vlan_mode=None,
                 ofport_request=None, **options):
        br = self.bridge(br_name)
        if ifname in self.ports:
            raise ConfigError(f"port {ifname} already exists (in bridge {self.ports[ifname].bridge.name})")
        if type not in port_types.TYPES:
            raise ConfigError(f"unknown port type {type!r} (known: {', '.join(sorted(port_types.TYPES))})")
        used_if = {p.sw_if_index for p in self.ports.values()}
        sw_if_index = next((i for i in range(1, MAX_PORTS) if i not in used_if), None)
        if sw_if_index is None:
            raise ConfigError(f"at most {MAX_PORTS - 1} ports")
        used_of = {p.ofport for p in br.ports.values()}
        if ofport_request is not None:
            ofport = int(ofport_request)
            if ofport in used_of or not 1 <= ofport <= 0xfeff:
                raise ConfigError(f"ofport {ofport} is taken or out of range")
        else:
            ofport = next(i for i in range(1, 0xff00) if i not in used_of)
        port = Port(ifname, type, sw_if_index, ofport, br)
        options = {k.replace("options:", ""): v for k, v in options.items()}
        self._set_vlan(port, tag, trunks, vlan_mode)
        port.options = options
        # the interface itself: may fail (no such device...) before anything is changed
        try:
            port.io = port_types.TYPES[type](self.graph, port)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot open {type} port {ifname}: {e}") from None
        self.ports[ifname] = port
        br.ports[ifname] = port
        self._apply_port(port)
        self._apply_members(br)
        return port

    def _set_vlan(self, port, tag, trunks, vlan_mode):
        if vlan_mode is not None and vlan_mode not in MODES:
            raise ConfigError(f"vlan_mode: {vlan_mode!r} is not one of {', '.join(MODES)}")
        port.tag = parse_vlan(tag) if tag not in (None, "", "[]") else None
        port.trunks = parse_trunks(trunks)
        port.vlan_mode = vlan_mode or None

    def set_port(self, ifname, **settings):
        """ovs-vsctl set port IF tag=N trunks=... vlan_mode=...; unspecified ones are kept."""
        port = self.port(ifname)
        unknown = set(settings) - {"tag", "trunks", "vlan_mode"}
        if unknown:
            raise ConfigError(f"unknown port setting {sorted(unknown)[0]!r}")
        tag = settings.get("tag", port.tag)
        trunks = settings.get("trunks", port.trunks)
        mode = settings.get("vlan_mode", port.vlan_mode)
        trial = Port(port.name, port.type, port.sw_if_index, port.ofport, port.bridge)
        self._set_vlan(trial, tag, trunks, mode)
        port.tag, port.trunks, port.vlan_mode = trial.tag, trial.trunks, trial.vlan_mode
        self._apply_port(port)

    def _apply_port(self, port):
        self.tables.set_port(port.sw_if_index, port.bridge.index, port.effective_mode,
                             port.tag or 0, port.trunks, int(port.options.get("split_group", 0)))

    def _apply_members(self, br):
        self.tables.set_members(br.index, [p.sw_if_index for p in br.ports.values()])
        self.tables.set_has_flows(br.index, not br.flows.is_default)

    def del_port(self, ifname, br_name=None):
        port = self.port(ifname)
        br = port.bridge
        if br_name is not None and br.name != br_name:
            raise ConfigError(f"port {ifname} is not in bridge {br_name}")
        del br.ports[ifname]
        del self.ports[ifname]
        self._apply_members(br)
        self.tables.clear_port(port.sw_if_index)
        br.fdb.port_removed(port.sw_if_index)
        br.flows.port_removed(port.sw_if_index)
        self._apply_members(br)
        port_types.close(self.graph, port)

    def port(self, ifname):
        try:
            return self.ports[ifname]
        except KeyError:
            raise ConfigError(f"no port named {ifname}") from None

    # ---- flows ----

    def add_flow(self, br_name, text):
        br = self.bridge(br_name)
        try:
            br.flows.add(text)
        except ValueError as e:           # FlowSyntaxError, unknown port
            raise ConfigError(str(e)) from None
        self._apply_members(br)

    def del_flows(self, br_name, text=None):
        br = self.bridge(br_name)
        try:
            n = br.flows.delete(text)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self._apply_members(br)
        return n

    def dump_flows(self, br_name):
        return self.bridge(br_name).flows.dump()

    # ---- MAC table ----

    def fdb_show(self, br_name):
        br = self.bridge(br_name)
        names = {p.sw_if_index: str(p.ofport) for p in br.ports.values()}
        return br.fdb.format_show(self.tables.now, names)

    def fdb_rows(self, br_name):
        br = self.bridge(br_name)
        names = {p.sw_if_index: p.name for p in br.ports.values()}
        return [{"port": names.get(port, str(port)), "vlan": vlan, "mac": mac,
                 "age": "static" if static else age}
                for port, vlan, mac, age, static in br.fdb.entries(self.tables.now)]

    def fdb_flush(self, br_name):
        return self.bridge(br_name).fdb.flush()

    def fdb_add(self, br_name, port_name, vlan, mac):
        br = self.bridge(br_name)
        port = br.ports.get(port_name)
        if port is None:
            raise ConfigError(f"bridge {br_name} has no port {port_name}")
        try:
            br.fdb.add_static(mac, parse_vlan(vlan, "vlan"), port.sw_if_index)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    # ---- observability ----

    def interface_stats(self):
        rows = []
        for p in self.ports.values():
            s = {"name": p.name, "type": p.type, "bridge": p.bridge.name, "ofport": p.ofport,
                 "sw_if_index": p.sw_if_index}
            s.update(port_types.stats(self.graph, p))
            rows.append(s)
        return rows

    def show(self):
        lines = []
        for br in self.bridges.values():
            lines.append(f"    Bridge {br.name}")
            for p in br.ports.values():
                lines.append(f"        Port {p.name}")
                if p.tag is not None:
                    lines.append(f"            tag: {p.tag}")
                if p.trunks:
                    lines.append(f"            trunks: [{', '.join(map(str, p.trunks))}]")
                if p.vlan_mode:
                    lines.append(f"            vlan_mode: {p.vlan_mode}")
                lines.append(f"            Interface {p.name}")
                if p.type != "system":
                    lines.append(f"                type: {p.type}")
                if p.options:
                    opts = ", ".join(f"{k}={v}" for k, v in sorted(p.options.items()))
                    lines.append(f"                options: {{{opts}}}")
        return "\n".join(lines)

    def config(self):
        """The whole configuration as plain data (what `save` writes and `apply` reads)."""
        out = {"bridge": {}}
        for br in self.bridges.values():
            b = {"mac_aging_time": br.fdb.aging_time, "mac_table_size": br.fdb.max_entries,
                 "port": {p.name: p.settings() for p in br.ports.values()}}
            if not br.flows.is_default:
                from fastpath import ofsyntax
                b["flows"] = [ofsyntax.format_flow(f.rule) for f in br.flows.flows]
            out["bridge"][br.name] = b
        return out

    def apply(self, config):
        """Build bridges, ports and flows from config() data; raises ConfigError."""
        if not isinstance(config, dict) or set(config) - {"bridge"}:
            raise ConfigError("config: expected only [bridge.NAME] tables")
        for br_name, b in config.get("bridge", {}).items():
            if not isinstance(b, dict):
                raise ConfigError(f"config: bridge {br_name} is not a table")
            self.add_br(br_name, **{k: v for k, v in b.items() if k in ("mac_aging_time", "mac_table_size")})
            for pname, p in b.get("port", {}).items():
                p = dict(p)
                self.add_port(br_name, pname, type=p.pop("type", "afpacket"), tag=p.pop("tag", None),
                              trunks=p.pop("trunks", None), vlan_mode=p.pop("vlan_mode", None),
                              ofport_request=p.pop("ofport", None), **p)
            flows = b.get("flows")
            if flows is not None:
                self.del_flows(br_name)
                for f in flows:
                    self.add_flow(br_name, f)

    def close(self):
        for name in list(self.bridges):
            self.del_br(name)
