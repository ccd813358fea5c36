"""Bridges, ports, flows and the MAC table: ovs-vsctl's and ovs-ofctl's commands.
Each is func(control, args, as_json)."""
from fastpath import ports as port_types
from fastpath.control.args import (PORT_NAME_RE, CommandError, bridge_settings, integer, kv, mtu_request,
                                   trunks, vlan_id, vlan_mode)
from fastpath.control.observe import stop_capture
from fastpath.control.options import check as option

MAX_MEMBERS = 1024                   # ports per bridge (L2Tables)


def add_br(control, args, as_json):
    name = args[0]
    if name in control.switch.bridges:
        raise CommandError(f"bridge {name} already exists")
    if not name or any(c.isspace() for c in name) or len(name) > 64:
        raise CommandError(f"bad bridge name {name!r}")
    settings = bridge_settings(args[1:], "add-br")
    try:
        control.switch.add_br(name, **settings)
    except BaseException:
        if name in control.switch.bridges:      # created, then a setting was refused
            control.switch.del_br(name)
        raise
    return control._done(as_json, {"bridge": name})

def del_br(control, args, as_json):
    br = control._bridge(args[0])
    for pname in list(br.ports):
        stop_capture(control, pname)
    control.switch.del_br(br.name)
    return control._done(as_json)

def set_bridge(control, args, as_json):
    br = control._bridge(args[0])
    settings = bridge_settings(args[1:], "set bridge")
    size = settings.get("mac-table-size")
    if size is not None:
        n_static = sum(1 for *_, static in br.fdb.entries(control.switch.tables.now) if static)
        if size < n_static:
            raise CommandError(f"mac-table-size: {n_static} static entries do not fit in {size}")
    control.switch.set_bridge(br.name, **settings)
    return control._done(as_json)

# ---- ports ----

def add_port(control, args, as_json):
    sw = control.switch
    br = control._bridge(args[0])
    name = args[1]
    if not PORT_NAME_RE.fullmatch(name):
        raise CommandError(f"bad port name {name!r} (1-15 of A-Z a-z 0-9 _ . -)")
    if name in sw.ports:
        raise CommandError(f"port {name} already exists (in bridge {sw.ports[name].bridge.name})")
    for node in (f"{name}-input", f"{name}-output"):
        if node in sw.graph:
            raise CommandError(f"port name {name} clashes with graph node {node}")
    if len(br.ports) >= MAX_MEMBERS:
        raise CommandError(f"bridge {br.name} already has {MAX_MEMBERS} ports")
    kw = {"type": "afpacket"}
    options = {}
    seen = set()
    for tok in args[2:]:
        key, value = kv(tok, "add-port")
        if key in seen:
            raise CommandError(f"add-port: {key} given twice")
        seen.add(key)
        if key == "type":
            if value not in port_types.TYPES:
                raise CommandError(f"unknown port type {value!r} "
                                   f"(known: {', '.join(sorted(port_types.TYPES))})")
            kw["type"] = value
        elif key == "tag":
            kw["tag"] = vlan_id(value, "tag") if value not in ("", "[]") else None
        elif key == "trunks":
            kw["trunks"] = trunks(value)
        elif key == "vlan_mode":
            kw["vlan_mode"] = vlan_mode(value)
        elif key == "ofport_request":
            of = integer(value, "ofport_request", 1, 0xfeff)
            if any(p.ofport == of for p in br.ports.values()):
                raise CommandError(f"ofport_request: ofport {of} is taken in bridge {br.name}")
            kw["ofport_request"] = of
        elif key == "mtu_request":
            kw["mtu_request"] = mtu_request(value)
        elif key.startswith("options:"):
            opt = key[len("options:"):]
            options["options:" + opt] = option(opt, value)
        else:
            raise CommandError(f"add-port: unknown setting {key!r} (known: type, tag, trunks, "
                               "vlan_mode, ofport_request, mtu_request, options:KEY)")
    try:
        port = sw.add_port(br.name, name, **kw, **options)
    except ImportError as e:          # raised before anything was changed
        raise CommandError(f"cannot open {kw['type']} port {name}: {e}") from None
    return control._done(as_json, {"port": port.name, "bridge": br.name, "ofport": port.ofport,
                                "sw_if_index": port.sw_if_index})


def del_port(control, args, as_json):
    if len(args) == 2:
        br = control._bridge(args[0])
        port = control._port(args[1])
        if port.bridge is not br:
            raise CommandError(f"port {port.name} is not in bridge {br.name}")
    else:
        port = control._port(args[0])
    stop_capture(control, port.name)
    control.switch.del_port(port.name)
    return control._done(as_json)

def set_port(control, args, as_json):
    port = control._port(args[0])
    settings = {}
    for tok in args[1:]:
        key, value = kv(tok, "set port")
        if key in settings:
            raise CommandError(f"set port: {key} given twice")
        if key == "tag":
            settings["tag"] = vlan_id(value, "tag") if value not in ("", "[]") else None
        elif key == "trunks":
            settings["trunks"] = trunks(value)
        elif key == "vlan_mode":
            settings["vlan_mode"] = vlan_mode(value)
        elif key == "options:tcp_mss_clamp":
            settings[key] = value if value == "off" else option("tcp_mss_clamp", value)
        else:
            raise CommandError(f"set port: unknown setting {key!r} (known: tag, trunks, "
                               "vlan_mode, options:tcp_mss_clamp)")
    control.switch.set_port(port.name, **settings)
    return control._done(as_json)

def set_interface(control, args, as_json):
    """ovs-vsctl set interface IF mtu_request=N|[]; a port's VLAN settings too, as
    before (fastpath has one row per port where OVS has a Port and an Interface)."""
    name = args[0]
    if name not in control.switch.ports and name not in control.switch.uplinks:
        raise CommandError(f"no port named {name}")
    rest = []
    mtu = False
    options = {}
    for tok in args[1:]:
        key, value = kv(tok, "set interface")
        if key == "mtu_request":
            if mtu is not False:
                raise CommandError("set interface: mtu_request given twice")
            mtu = None if value in ("", "[]") else mtu_request(value)
        elif key.startswith("options:") and key != "options:tcp_mss_clamp":
            if key in options:
                raise CommandError(f"set interface: {key} given twice")
            options[key] = option(key[len("options:"):], value)
        else:
            rest.append(tok)
    if options:
        port = control.switch.ports.get(name)
        if port is None or port.type != "vxlan":
            raise CommandError(f"set interface {name}: only a tunnel (vxlan) port's options can "
                               "change (del-port and add-port for others)")
        if rest or mtu is not False:
            # the tunnel is checked and rebuilt as one change; another setting could fail after it
            raise CommandError(f"set interface {name}: give a tunnel's options in a command of their own")
    if rest:
        if name not in control.switch.ports:
            raise CommandError(f"set interface: {name} is an L3 uplink: only mtu_request applies")
        set_port(control, [name] + rest, as_json)
    if options:
        control.switch.set_tunnel_options(name, options)
    if mtu is not False:
        control.switch.set_mtu_request(name, mtu)
    return control._done(as_json)

def show(control, args, as_json):
    if as_json:
        return control.config()
    return control.switch.show()

# ---- flows ----

def add_flow(control, args, as_json):
    br = control._bridge(args[0])
    control.switch.add_flow(br.name, " ".join(args[1:]))
    return control._done(as_json)

def del_flows(control, args, as_json):
    br = control._bridge(args[0])
    n = control.switch.del_flows(br.name, " ".join(args[1:]) or None)
    return control._done(as_json, {"deleted": n})

def dump_flows(control, args, as_json):
    br = control._bridge(args[0])
    lines = control.switch.dump_flows(br.name)       # also brings the counters up to date
    if not as_json:
        return "\n".join(lines)
    from fastpath import ofsyntax
    out = []
    for f in br.flows.flows:
        r = f.rule
        out.append({"cookie": r.cookie, "priority": r.priority,
                    "match": ofsyntax.format_match(r.match),
                    "actions": ofsyntax.format_actions(r.actions),
                    "n_packets": int(f.n_packets), "n_bytes": int(f.n_bytes),
                    "flow": ofsyntax.format_flow(r).strip()})
    return out

# ---- MAC table ----

def fdb_show(control, args, as_json):
    br = control._bridge(args[0])
    if as_json:
        return control.switch.fdb_rows(br.name)
    return control.switch.fdb_show(br.name).rstrip("\n")

def fdb_flush(control, args, as_json):
    br = control._bridge(args[0])
    n = int(control.switch.fdb_flush(br.name))
    return control._done(as_json, {"flushed": n}, "table successfully flushed")

def fdb_add(control, args, as_json):
    br = control._bridge(args[0])
    pname, vlan, mac = args[1:]
    if pname not in br.ports:
        raise CommandError(f"bridge {br.name} has no port {pname}")
    vlan_id(vlan, "vlan")
    control.switch.fdb_add(br.name, pname, vlan, mac)
    return control._done(as_json)

def fdb_stats(control, args, as_json):
    fdb = control._bridge(args[0]).fdb
    s = {k: int(v) for k, v in fdb.stats().items()}
    s.update(max_entries=int(fdb.max_entries), aging_time=float(fdb.aging_time))
    return s if as_json else "\n".join(f"{k}: {v}" for k, v in s.items())


HELP = [
    ("add-br", "BR [other_config:mac-aging-time=N] [other_config:mac-table-size=N]", "create a bridge"),
    ("del-br", "BR", "delete a bridge and its ports"),
    ("set bridge", "BR other_config:KEY=VALUE... [protocols=OpenFlow13]",
     "change mac-aging-time / mac-table-size / datapath-id (hex)"),
    ("add-port", "BR IFACE [type=afpacket|internal|pg|system|vhost-user|memif] [tag=N] [trunks=N,M] "
                 "[vlan_mode=MODE] [ofport_request=N] [mtu_request=N] [options:KEY=VALUE...]",
     "add a port"),
    ("del-port", "[BR] IFACE", "delete a port"),
    ("set port", "IFACE [tag=N|[]] [trunks=N,M|[]] [vlan_mode=MODE|[]] [options:tcp_mss_clamp=auto|N|off]",
     "change a port's VLAN settings (a tunnel's MSS clamp)"),
    ("set interface", "IFACE [mtu_request=N|[]] [options:KEY=VALUE...] [tag=...]",
     "set the MTU (the device's, for system and internal ports), a tunnel's options (it is "
     "keyed afresh; options:tcp_mss_clamp alone changes in place), or the VLAN settings"),
    ("show", "", "bridges, controllers and ports (ovs-vsctl show)"),
]
FLOW_HELP = [
    ("add-flow", "BR FLOW", "add an OpenFlow rule (ovs-ofctl syntax)"),
    ("del-flows", "BR [FLOW]", "delete all rules, or those matching FLOW"),
    ("dump-flows", "BR", "list the rules with their counters"),
    ("fdb/show", "BR", "the MAC learning table"),
    ("fdb/flush", "BR", "forget the learned MAC addresses"),
    ("fdb/add", "BR PORT VLAN MAC", "add a static MAC entry"),
    ("fdb/stats", "BR", "MAC table counters: entries, size, learned, moved, evicted, aged"),
]

COMMANDS = {
    "add-br": (add_br, 1, None),
    "del-br": (del_br, 1, 1),
    "set bridge": (set_bridge, 2, None),
    "add-port": (add_port, 2, None),
    "del-port": (del_port, 1, 2),
    "set port": (set_port, 2, None),
    "set interface": (set_interface, 2, None),
    "show": (show, 0, 0),
    "add-flow": (add_flow, 2, None),
    "del-flows": (del_flows, 1, None),
    "dump-flows": (dump_flows, 1, 1),
    "fdb/show": (fdb_show, 1, 1),
    "fdb/flush": (fdb_flush, 1, 1),
    "fdb/add": (fdb_add, 4, 4),
    "fdb/stats": (fdb_stats, 1, 1),
}
