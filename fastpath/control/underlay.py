"""L3 uplinks and the VPN: add-ip, del-ip, show arp, show sa, show ike.
Each is func(control, args, as_json)."""
from fastpath.control.args import PORT_NAME_RE, CommandError, kv, mtu_request
from fastpath.control.observe import stop_capture
from fastpath.control.options import check as option


def add_ip(control, args, as_json):
    sw = control.switch
    name = args[0]
    if not PORT_NAME_RE.fullmatch(name):
        raise CommandError(f"bad port name {name!r} (1-15 of A-Z a-z 0-9 _ . -)")
    if name in sw.ports or name in sw.uplinks:
        raise CommandError(f"port {name} already exists")
    kw, options = {"type": "afpacket"}, {}
    for tok in args[2:]:
        key, value = kv(tok, "add-ip")
        if key == "gw":
            kw["gw"] = value
        elif key == "type":
            if value not in ("afpacket", "system", "pg"):
                raise CommandError(f"add-ip: an uplink cannot be of type {value!r}")
            kw["type"] = value
        elif key == "mtu_request":
            kw["mtu_request"] = mtu_request(value)
        elif key.startswith("options:") and key[8:] in ("mtu", "mac", "fanout_group", "keep"):
            options[key] = option(key[8:], value)
        else:
            raise CommandError(f"add-ip: unknown setting {key!r} (known: gw, type, "
                               "mtu_request, options:mtu, options:mac)")
    try:
        port = sw.add_ip(name, args[1], **kw, **options)
    except ImportError as e:
        raise CommandError(f"cannot open {kw['type']} port {name}: {e}") from None
    return control._done(as_json, {"port": port.name, "address": str(port.address)})

def del_ip(control, args, as_json):
    stop_capture(control, args[0])
    control.switch.del_ip(args[0])
    return control._done(as_json)

def show_arp(control, args, as_json):
    rows = [{"port": p, "ip": ip, "mac": mac, "age": age} for p, ip, mac, age in control.switch.show_arp()]
    if as_json:
        return rows
    lines = [f"{'Port':<16}{'IP address':<18}{'MAC':<20}{'Age':>5}"]
    lines += [f"{r['port']:<16}{r['ip']:<18}{r['mac']:<20}{r['age']:>5}" for r in rows]
    return "\n".join(lines)

def show_sa(control, args, as_json):
    vpn = getattr(control.switch, "vpn", None)
    rows = vpn.show() if vpn else []
    if as_json:
        return rows
    lines = []
    for r in rows:
        state = " (retiring)" if r.get("retiring") else ""
        lines.append(f"{r['tunnel']} -> {r['remote_ip']}: spi 0x{r['spi']:08x} {r['direction']}{state} "
                     f"{r['cipher']} esn {'on' if r['esn'] else 'off'}{' udp' if r['encap'] else ''}"
                     f"  engine {r['engine']}")
        lines.append(f"    seq {r['seq']}  packets {r['packets']}  bytes {r['bytes']}  age {r['age']:.0f}s"
                     + (f"  replay window {r['replay_window']}" if 'replay_window' in r else ""))
        drops = {k: v for k, v in (r.get("drops") or {}).items() if v}
        if drops:
            lines.append("    drops: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
    return "\n".join(lines) if lines else "no SAs"

def show_ike(control, args, as_json):
    """IKE SAs per tunnel; keys and the PSK are never part of a row."""
    vpn = getattr(control.switch, "vpn", None)
    rows = vpn.show_ike() if vpn else []
    counters = {t.port.name: dict(t.ike.counters) for t in (vpn.tunnels.values() if vpn else ()) if t.ike}
    if as_json:
        return {"sas": rows, "counters": counters}
    lines = []
    for r in rows:
        lines.append(f"{r['tunnel']}: {r['local']} <-> {r['peer']}  {r['role']}  {r['state']}")
        lines.append(f"    SPIs {r['spi_i']}_i {r['spi_r']}_r  {r['algorithms'] or '-'}  nat {r['nat']}")
        lines.append(f"    IDs local {r['local_id']}  remote {r['remote_id']}  auth {r['auth']}")
        if r["established_s"] is not None:
            lines.append(f"    established {r['established_s']:.0f}s ago, expires in {r['expires_s']:.0f}s")
        for ch in r["children"]:
            lines.append(f"    CHILD_SA {ch['algorithms']} {ch['mode']}  in {ch['spi_in']}  out {ch['spi_out']}  "
                         f"{' '.join(ch['ts_local'])} === {' '.join(ch['ts_remote'])}")
    for name, c in counters.items():
        nz = {k: v for k, v in c.items() if v}
        if nz:
            lines.append(f"{name}: " + ", ".join(f"{k} {v}" for k, v in sorted(nz.items())))
    return "\n".join(lines) if lines else "no IKE SAs"


HELP = [
    ("add-ip", "IFACE ADDR/PLEN [gw=GW] [type=afpacket|pg] [mtu_request=N] [options:KEY=VALUE...]",
               "own an interface as an L3 uplink (the VPN underlay)"),
    ("del-ip", "IFACE", "release an L3 uplink"),
    ("show arp", "", "the uplinks' neighbour table"),
    ("show sa", "", "IPsec SAs: SPI, sequence numbers, replay window, counters, age"),
    ("show ike", "", "IKE SAs: peer, IDs, state, algorithms, SPIs, CHILD_SAs, lifetimes, counters"),
]

COMMANDS = {
    "add-ip": (add_ip, 2, None),
    "del-ip": (del_ip, 1, 1),
    "show arp": (show_arp, 0, 0),
    "show sa": (show_sa, 0, 0),
    "show ike": (show_ike, 0, 0),
}
