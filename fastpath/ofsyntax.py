"""Parse and print OpenFlow flow rules in ``ovs-ofctl add-flow`` syntax.

Supported match fields: priority, cookie, table (0..254; the pipeline has fewer), in_port,
dl_src, dl_dst (with optional MAC masks), dl_type, dl_vlan (0..4095 or 0xffff for "no
802.1Q header"), dl_vlan_pcp, vlan_tci (VALUE[/MASK], OpenFlow's vlan_vid bits with
0x1000 meaning "tagged"), metadata (VALUE[/MASK]), nw_proto, nw_src/nw_dst (IPv4, /LEN or
/MASK), ipv6_src/ipv6_dst (/LEN), ip_dscp (0..63), ip_ecn (0..3; alias nw_ecn), ipv6_label
(VALUE[/MASK], 20 bits), arp_sha/arp_tha (MAC masks), tp_src/tp_dst; the aliases tcp_src, udp_dst, ... (tp_*),
icmp_type/icmp_code (tp_src/tp_dst), arp_op (nw_proto), arp_spa/arp_tpa (nw_src/nw_dst),
as OVS keeps them; and the shorthands ``arp``, ``ip``, ``ipv6``, ``tcp``, ``udp``,
``icmp``, ``tcp6``, ``udp6``, ``icmp6``.
Supported actions: strip_vlan/pop_vlan, push_vlan, mod_vlan_vid, mod_vlan_pcp,
mod_dl_src, mod_dl_dst, mod_nw_src, mod_nw_dst, mod_tp_src, mod_tp_dst, dec_ttl,
set_field:VALUE->FIELD (eth_src, eth_dst, vlan_vid, vlan_pcp, ipv4_src, ipv4_dst,
tcp/udp_src/dst), output:PORT (or a bare port number), normal, flood, all, in_port,
controller[:MAX_LEN] (or output:CONTROLLER) and drop; and the instructions
meter:N, clear_actions, write_actions(ACTIONS), write_metadata:VALUE[/MASK], goto_table:N.

The counters that ``ovs-ofctl dump-flows`` prints (duration, n_packets,
n_bytes, idle_age, hard_age) are accepted and ignored, as OVS does, so the
output of :func:`format_flow` can be fed back into :func:`parse_flow`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "FlowSyntaxError", "Match", "Action", "FlowRule", "DEFAULT_PRIORITY",
    "VLAN_NONE", "parse_flow", "parse_match", "parse_actions", "format_match",
    "format_actions", "format_flow", "mac_to_int", "int_to_mac",
]

DEFAULT_PRIORITY = 32768
VLAN_NONE = 0xFFFF          # dl_vlan value meaning "packet has no 802.1Q header"
MAC_ALL_ONES = (1 << 48) - 1
MAX_PORT = 0xFFFF           # OVS ofp_port_t is 16 bits

_SHORTHANDS = {"arp": 0x0806, "ip": 0x0800, "ipv6": 0x86DD}
_SHORTHAND_BY_TYPE = {v: k for k, v in _SHORTHANDS.items()}
# shorthands that name an IP protocol too
_PROTO_SHORTHANDS = {"tcp": (0x0800, 6), "udp": (0x0800, 17), "icmp": (0x0800, 1),
                     "tcp6": (0x86DD, 6), "udp6": (0x86DD, 17), "icmp6": (0x86DD, 58)}
_PROTO_SHORTHAND_BY_PAIR = {v: k for k, v in _PROTO_SHORTHANDS.items()}
_IGNORED_FIELDS = {"duration", "n_packets", "n_bytes", "idle_age", "hard_age"}
_MATCH_FIELDS = ("in_port", "dl_src", "dl_dst", "dl_type", "dl_vlan", "dl_vlan_pcp",
                 "vlan_tci", "metadata", "nw_proto", "nw_src", "nw_dst", "ipv6_src",
                 "ipv6_dst", "ip_dscp", "ip_ecn", "ipv6_label", "arp_sha", "arp_tha", "tp_src",
                 "tp_dst")
# other names for the same fields, as OVS keeps them
_ALIASES = {"tcp_src": "tp_src", "tcp_dst": "tp_dst", "udp_src": "tp_src", "udp_dst": "tp_dst",
            "icmp_type": "tp_src", "icmp_code": "tp_dst", "arp_op": "nw_proto",
            "arp_spa": "nw_src", "arp_tpa": "nw_dst", "ip_proto": "nw_proto",
            "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "eth_src": "dl_src", "eth_dst": "dl_dst",
            "eth_type": "dl_type", "nw_ecn": "ip_ecn"}
N_TABLES = 255              # what the syntax takes; the pipeline itself has fewer

# Action kinds.  'drop' is represented by an empty action list, as in OVS.
_NOARG_ACTIONS = {"strip_vlan": "strip_vlan", "pop_vlan": "strip_vlan",
                  "normal": "normal", "flood": "flood", "all": "all",
                  "in_port": "in_port"}
_NOARG_ACTIONS.update(dec_ttl="dec_ttl", clear_actions="clear_actions")
_ARG_ACTIONS = ("push_vlan", "mod_vlan_vid", "mod_vlan_pcp", "output", "controller",
                "mod_dl_src", "mod_dl_dst", "mod_nw_src", "mod_nw_dst", "mod_tp_src",
                "mod_tp_dst", "set_field", "goto_table", "write_metadata", "group", "meter")
# set_field's OXM names -> the mod_* action that does it
_SET_FIELDS = {"eth_src": "mod_dl_src", "eth_dst": "mod_dl_dst", "vlan_vid": "mod_vlan_vid",
               "vlan_pcp": "mod_vlan_pcp", "ipv4_src": "mod_nw_src", "ipv4_dst": "mod_nw_dst",
               "tcp_src": "mod_tp_src", "udp_src": "mod_tp_src", "tcp_dst": "mod_tp_dst",
               "udp_dst": "mod_tp_dst"}
_WRITE_ACTIONS_RE = re.compile(r"write_actions\(([^()]*)\)")
CONTROLLER_MAX_LEN = 0xFFFF     # controller without a max_len: the whole frame (OFPCML_NO_BUFFER)
_RESERVED_PORTS = ("normal", "flood", "all", "in_port")   # output:NORMAL etc.
_VLAN_ETHERTYPES = (0x8100, 0x88A8)

_MAC_RE = re.compile(r"[0-9A-Fa-f]{1,2}(?::[0-9A-Fa-f]{1,2}){5}")
_NAME_RE = re.compile(r"[A-Za-z0-9_.-]+")
_DEC_RE = re.compile(r"[0-9]+")
_HEX_RE = re.compile(r"0[xX][0-9A-Fa-f]+")
_ACTIONS_RE = re.compile(r"(?:^|[\s,])actions=")
_SEP_RE = re.compile(r"[\s,]+")


class FlowSyntaxError(ValueError):
    """A flow rule could not be parsed; the message quotes the bad token."""


@dataclass
class Match:
    """L2 match; ``None`` means wildcard.  MAC fields are ``(value, mask)``."""
    in_port: object = None      # int port number, or str port name
    dl_src: tuple | None = None
    dl_dst: tuple | None = None
    dl_type: int | None = None
    dl_vlan: int | None = None  # 0..4095, or VLAN_NONE
    dl_vlan_pcp: int | None = None
    vlan_tci: tuple | None = None   # (value, mask) over OpenFlow's vlan_vid/pcp bits
    metadata: tuple | None = None
    nw_proto: int | None = None     # IP protocol; ARP: the opcode
    nw_src: tuple | None = None     # IPv4 (value, mask); ARP: spa
    nw_dst: tuple | None = None
    ipv6_src: tuple | None = None
    ipv6_dst: tuple | None = None
    ip_dscp: int | None = None      # IPv4 TOS / IPv6 traffic class, upper 6 bits
    ip_ecn: int | None = None       # ... and lower 2
    ipv6_label: tuple | None = None # (value, mask), 20 bits
    arp_sha: tuple | None = None    # (value, mask), as dl_src
    arp_tha: tuple | None = None
    tp_src: int | None = None       # TCP/UDP port; ICMP: type
    tp_dst: int | None = None       # ICMP: code


@dataclass
class Action:
    kind: str   # strip_vlan push_vlan mod_vlan_vid mod_vlan_pcp output normal flood all in_port
                # controller (arg: max_len)
    arg: object = None


@dataclass
class FlowRule:
    priority: int = DEFAULT_PRIORITY
    match: Match = field(default_factory=Match)
    actions: list = field(default_factory=list)   # apply-actions; [] == drop
    cookie: int = 0
    table: int = 0
    goto: int | None = None                        # goto_table
    write_actions: list | None = None              # into the action set
    clear_actions: bool = False
    write_metadata: tuple | None = None            # (value, mask)
    meter: int | None = None                       # meter:N, run before the actions


# ---------------------------------------------------------------- helpers

def mac_to_int(text: str) -> int:
    """``'00:11:22:33:44:55'`` -> 0x001122334455 (raises FlowSyntaxError)."""
    if not _MAC_RE.fullmatch(text):
        raise FlowSyntaxError(f"bad MAC address '{text}'")
    return int("".join(f"{int(b, 16):02x}" for b in text.split(":")), 16)


def int_to_mac(value: int) -> str:
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def _parse_int(raw: str, what: str, lo: int, hi: int) -> int:
    if _DEC_RE.fullmatch(raw):
        value = int(raw, 10)
    elif _HEX_RE.fullmatch(raw):
        value = int(raw, 16)
    else:
        raise FlowSyntaxError(f"bad value '{raw}' for {what}")
    if not lo <= value <= hi:
        raise FlowSyntaxError(f"{what} {raw} out of range {lo}..{hi}")
    return value


def _parse_port(raw: str, what: str):
    """Port number (int) or port name (str); names are resolved by the caller."""
    if _DEC_RE.fullmatch(raw):
        return _parse_int(raw, what, 0, MAX_PORT)
    if not _NAME_RE.fullmatch(raw):
        raise FlowSyntaxError(f"bad port '{raw}' for {what}")
    return raw


def _parse_mac_field(raw: str, name: str):
    value_s, slash, mask_s = raw.partition("/")
    try:
        value = mac_to_int(value_s)
    except FlowSyntaxError:
        raise FlowSyntaxError(f"bad MAC address '{value_s}' for {name}") from None
    mask = MAC_ALL_ONES
    if slash:
        try:
            mask = mac_to_int(mask_s)
        except FlowSyntaxError:
            raise FlowSyntaxError(f"bad MAC mask '{mask_s}' for {name}") from None
    if mask == 0:
        return None                  # all-zero mask == wildcard, as in OVS
    return (value & mask, mask)


def _parse_vlan(raw: str, name: str) -> int:
    value = _parse_int(raw, name, 0, 1 << 64)
    if value > 4095 and value != VLAN_NONE:
        raise FlowSyntaxError(f"{name} {raw} out of range 0..4095")
    return value


def _parse_ipv4(raw: str, name: str):
    import ipaddress
    try:
        net = ipaddress.IPv4Network(raw, strict=False)
    except ValueError:
        raise FlowSyntaxError(f"bad IPv4 address '{raw}' for {name}") from None
    if int(net.netmask) == 0:
        return None
    return (int(net.network_address), int(net.netmask))


def _parse_ipv6(raw: str, name: str):
    import ipaddress
    try:
        net = ipaddress.IPv6Network(raw, strict=False)
    except ValueError:
        raise FlowSyntaxError(f"bad IPv6 address '{raw}' for {name}") from None
    if int(net.netmask) == 0:
        return None
    return (int(net.network_address), int(net.netmask))


def _parse_masked(bits):
    def parse(raw: str, name: str):
        value_s, slash, mask_s = raw.partition("/")
        full = (1 << bits) - 1
        value = _parse_int(value_s, name, 0, full)
        mask = _parse_int(mask_s, name + " mask", 0, full) if slash else full
        return (value & mask, mask) if mask else None
    return parse


_FIELD_PARSERS = {
    "in_port": _parse_port,
    "dl_src": _parse_mac_field,
    "dl_dst": _parse_mac_field,
    "dl_type": lambda raw, name: _parse_int(raw, name, 0, 0xFFFF),
    "dl_vlan": _parse_vlan,
    "dl_vlan_pcp": lambda raw, name: _parse_int(raw, name, 0, 7),
    "vlan_tci": _parse_masked(16),
    "metadata": _parse_masked(64),
    "nw_proto": lambda raw, name: _parse_int(raw, name, 0, 0xFF),
    "nw_src": _parse_ipv4,
    "nw_dst": _parse_ipv4,
    "ipv6_src": _parse_ipv6,
    "ipv6_dst": _parse_ipv6,
    "ip_dscp": lambda raw, name: _parse_int(raw, name, 0, 63),
    "ip_ecn": lambda raw, name: _parse_int(raw, name, 0, 3),
    "ipv6_label": _parse_masked(20),
    "arp_sha": _parse_mac_field,
    "arp_tha": _parse_mac_field,
    "tp_src": lambda raw, name: _parse_int(raw, name, 0, 0xFFFF),
    "tp_dst": lambda raw, name: _parse_int(raw, name, 0, 0xFFFF),
}


def _parse_fields(text: str, allow_cookie: bool):
    """Parse the part before ``actions=``; returns (Match, priority|None, cookie, table|None)."""
    match, priority, cookie, table = Match(), None, 0, None
    seen = set()
    for tok in _SEP_RE.split(text):
        if not tok:
            continue
        name, eq, raw = tok.partition("=")
        name = _ALIASES.get(name, name)
        if not eq and tok in _PROTO_SHORTHANDS:
            if "dl_type" in seen or "nw_proto" in seen:
                raise FlowSyntaxError(f"duplicate field 'dl_type' in '{tok}'")
            seen.update(("dl_type", "nw_proto"))
            match.dl_type, match.nw_proto = _PROTO_SHORTHANDS[tok]
            continue
        if not eq:
            if tok in _SHORTHANDS:
                name, raw = "dl_type", str(_SHORTHANDS[tok])
            elif tok in _MATCH_FIELDS or tok in ("priority", "cookie", "table"):
                raise FlowSyntaxError(f"field '{tok}' requires a value")
            else:
                raise FlowSyntaxError(f"unknown field '{tok}'")
        elif name in _IGNORED_FIELDS:
            continue
        elif raw == "":
            raise FlowSyntaxError(f"empty value for field '{name}' in '{tok}'")
        elif name not in _MATCH_FIELDS and name not in ("priority", "cookie", "table"):
            raise FlowSyntaxError(f"unknown field '{name}' in '{tok}'")
        if name in seen:
            raise FlowSyntaxError(f"duplicate field '{name}' in '{tok}'")
        seen.add(name)

        if name == "priority":
            priority = _parse_int(raw, "priority", 0, 0xFFFF)
        elif name == "cookie":
            if not allow_cookie:
                raise FlowSyntaxError(f"field 'cookie' not allowed here in '{tok}'")
            cookie = _parse_int(raw, "cookie", 0, (1 << 64) - 1)
        elif name == "table":
            if not _DEC_RE.fullmatch(raw) or int(raw) >= N_TABLES:
                raise FlowSyntaxError(f"bad table in '{tok}': 0..{N_TABLES - 1}")
            table = int(raw)
        else:
            setattr(match, name, _FIELD_PARSERS[name](raw, name))
    # the key keeps ARP's hardware addresses where IPv6's addresses go: one or the other
    if (match.arp_sha or match.arp_tha) and (match.ipv6_src or match.ipv6_dst):
        raise FlowSyntaxError("arp_sha/arp_tha and ipv6_src/ipv6_dst cannot match together")
    return match, priority, cookie, table


def _parse_ip_arg(kind, arg):
    if kind in ("mod_nw_src", "mod_nw_dst"):
        v = _parse_ipv4(arg, kind)
        if v is None or v[1] != 0xFFFFFFFF:
            raise FlowSyntaxError(f"bad address '{arg}' for {kind}")
        return v[0]
    if kind in ("mod_dl_src", "mod_dl_dst"):
        try:
            return mac_to_int(arg)
        except FlowSyntaxError:
            raise FlowSyntaxError(f"bad MAC address '{arg}' for {kind}") from None
    return _parse_int(arg, kind, 0, 0xFFFF)           # mod_tp_*


def parse_actions(text: str) -> list:
    """Parse a comma-separated action list (the text after ``actions=``); instructions
    come back as Actions of kind goto_table, write_metadata, clear_actions and
    write_actions (arg: its list), for parse_flow to take out."""
    written = []
    def hold(m):
        written.append(parse_actions(m.group(1)))
        return f" write_actions:{len(written) - 1} "
    text = _WRITE_ACTIONS_RE.sub(hold, text)
    tokens = [t for t in _SEP_RE.split(text) if t]
    actions = []
    for tok in tokens:
        if tok.startswith("write_actions:") and written:
            actions.append(Action("write_actions", written[int(tok.partition(":")[2])]))
            continue
        key, colon, arg = tok.partition(":")
        kind = key.lower()
        if not colon:
            if _DEC_RE.fullmatch(tok):
                actions.append(Action("output", _parse_port(tok, "output port")))
            elif kind in _NOARG_ACTIONS:
                actions.append(Action(_NOARG_ACTIONS[kind]))
            elif kind == "controller":
                actions.append(Action("controller", CONTROLLER_MAX_LEN))
            elif kind == "drop":
                if len(tokens) > 1:
                    raise FlowSyntaxError(
                        f"'{tok}' must be the only action in '{text.strip()}'")
            elif kind in _ARG_ACTIONS:
                raise FlowSyntaxError(f"action '{tok}' requires an argument")
            else:
                raise FlowSyntaxError(f"unknown action '{tok}'")
            continue
        if kind in _NOARG_ACTIONS or kind == "drop":
            raise FlowSyntaxError(f"action '{tok}' takes no argument")
        if kind not in _ARG_ACTIONS:
            raise FlowSyntaxError(f"unknown action '{tok}'")
        if arg == "":
            raise FlowSyntaxError(f"empty argument in action '{tok}'")
        if kind == "push_vlan":
            ethertype = _parse_int(arg, "push_vlan", 0, 0xFFFF)
            if ethertype not in _VLAN_ETHERTYPES:
                raise FlowSyntaxError(
                    f"push_vlan ethertype '{arg}' must be 0x8100 or 0x88a8")
            actions.append(Action("push_vlan", ethertype))
        elif kind == "mod_vlan_vid":
            actions.append(Action(kind, _parse_int(arg, kind, 0, 4095)))
        elif kind == "mod_vlan_pcp":
            actions.append(Action(kind, _parse_int(arg, kind, 0, 7)))
        elif kind == "controller":
            actions.append(Action(kind, _parse_int(arg, "controller max_len", 0, 0xFFFF)))
        elif kind.startswith("mod_"):
            actions.append(Action(kind, _parse_ip_arg(kind, arg)))
        elif kind == "goto_table":
            actions.append(Action(kind, _parse_int(arg, "goto_table", 0, N_TABLES - 1)))
        elif kind == "group":
            actions.append(Action(kind, _parse_int(arg, "group", 0, 0xFFFFFF00)))
        elif kind == "meter":
            actions.append(Action(kind, _parse_int(arg, "meter", 1, 0xFFFF0000)))
        elif kind == "write_metadata":
            actions.append(Action(kind, _parse_masked(64)(arg, kind) or (0, 0)))
        elif kind == "set_field":
            value, arrow, fname = arg.partition("->")
            if not arrow or fname not in _SET_FIELDS:
                raise FlowSyntaxError(f"bad set_field '{tok}'")
            mod = _SET_FIELDS[fname]
            if mod in ("mod_vlan_vid", "mod_vlan_pcp"):
                n = _parse_int(value, fname, 0, 0x1FFF if mod == "mod_vlan_vid" else 7)
                actions.append(Action(mod, n & 0xFFF if mod == "mod_vlan_vid" else n))
            else:
                actions.append(Action(mod, _parse_ip_arg(mod, value)))
        elif arg.lower() == "controller":
            actions.append(Action("controller", CONTROLLER_MAX_LEN))
        elif arg.lower() in _RESERVED_PORTS:             # output:NORMAL etc.
            actions.append(Action(arg.lower()))
        else:
            actions.append(Action("output", _parse_port(arg, "output port")))
    return actions


# ---------------------------------------------------------------- public parsers

def parse_flow(text: str, *, need_actions: bool = True) -> FlowRule:
    """Parse an ``ovs-ofctl add-flow`` rule such as ``in_port=1 actions=output:2``."""
    if not text or not text.strip():
        raise FlowSyntaxError("empty flow specification")
    m = _ACTIONS_RE.search(text)
    if m is None:
        if need_actions:
            raise FlowSyntaxError(f"missing 'actions=' in '{text.strip()}'")
        fields_text, actions = text, []
    else:
        fields_text, actions = text[:m.start()], parse_actions(text[m.end():])
    match, priority, cookie, table = _parse_fields(fields_text, allow_cookie=True)
    if priority is None:
        priority = DEFAULT_PRIORITY
    rule = FlowRule(priority=priority, match=match, cookie=cookie, table=table or 0)
    for a in actions:
        if a.kind == "goto_table":
            rule.goto = a.arg
        elif a.kind == "write_metadata":
            rule.write_metadata = a.arg
        elif a.kind == "clear_actions":
            rule.clear_actions = True
        elif a.kind == "write_actions":
            rule.write_actions = a.arg
        elif a.kind == "meter":
            if rule.meter is not None:
                raise FlowSyntaxError("one meter per flow")
            rule.meter = a.arg
        else:
            rule.actions.append(a)
    return rule


def parse_match(text: str, with_table: bool = False) -> tuple:
    """Parse a match for ``del-flows BR [FLOW]``: returns (Match, priority or None), and
    the table (or None) too with_table."""
    if _ACTIONS_RE.search(text):
        raise FlowSyntaxError(f"'actions=' not allowed in match '{text.strip()}'")
    match, priority, _, table = _parse_fields(text, allow_cookie=False)
    return (match, priority, table) if with_table else (match, priority)


# ---------------------------------------------------------------- formatters

def _format_mac(name: str, value) -> str:
    addr, mask = value
    if mask == MAC_ALL_ONES:
        return f"{name}={int_to_mac(addr)}"
    return f"{name}={int_to_mac(addr)}/{int_to_mac(mask)}"


def format_match(m: Match) -> str:
    """Canonical comma-separated match (no priority); '' matches everything."""
    parts = []
    proto_shorthand = _PROTO_SHORTHAND_BY_PAIR.get((m.dl_type, m.nw_proto))
    if proto_shorthand:
        parts.append(proto_shorthand)
    elif m.dl_type in _SHORTHAND_BY_TYPE:
        parts.append(_SHORTHAND_BY_TYPE[m.dl_type])
    if m.in_port is not None:
        parts.append(f"in_port={m.in_port}")
    if m.dl_vlan is not None:
        parts.append("dl_vlan=0xffff" if m.dl_vlan == VLAN_NONE else f"dl_vlan={m.dl_vlan}")
    if m.dl_vlan_pcp is not None:
        parts.append(f"dl_vlan_pcp={m.dl_vlan_pcp}")
    if m.dl_src is not None:
        parts.append(_format_mac("dl_src", m.dl_src))
    if m.dl_dst is not None:
        parts.append(_format_mac("dl_dst", m.dl_dst))
    if m.dl_type is not None and m.dl_type not in _SHORTHAND_BY_TYPE:
        parts.append(f"dl_type=0x{m.dl_type:04x}")
    if m.vlan_tci is not None:
        parts.append(f"vlan_tci=0x{m.vlan_tci[0]:04x}/0x{m.vlan_tci[1]:04x}")
    if m.metadata is not None:
        parts.append(f"metadata=0x{m.metadata[0]:x}/0x{m.metadata[1]:x}")
    if m.nw_proto is not None and not proto_shorthand:
        parts.append(f"nw_proto={m.nw_proto}")
    for name in ("nw_src", "nw_dst", "ipv6_src", "ipv6_dst"):
        value = getattr(m, name)
        if value is not None:
            import ipaddress
            cls = ipaddress.IPv4Network if name.startswith("nw") else ipaddress.IPv6Network
            net = cls((value[0], bin(value[1]).count("1")))
            parts.append(f"{name}={net.network_address if net.prefixlen == net.max_prefixlen else net}")
    for name in ("ip_dscp", "ip_ecn"):
        if getattr(m, name) is not None:
            parts.append(f"{name}={getattr(m, name)}")
    for name in ("arp_sha", "arp_tha"):
        if getattr(m, name) is not None:
            parts.append(_format_mac(name, getattr(m, name)))
    if m.ipv6_label is not None:
        v, mask = m.ipv6_label
        parts.append(f"ipv6_label=0x{v:05x}" + ("" if mask == 0xFFFFF else f"/0x{mask:05x}"))
    for name in ("tp_src", "tp_dst"):
        if getattr(m, name) is not None:
            parts.append(f"{name}={getattr(m, name)}")
    return ",".join(parts)


def _format_action(a: Action) -> str:
    if a.kind in ("normal", "flood", "all", "in_port"):
        return a.kind.upper()
    if a.kind == "strip_vlan":
        return "strip_vlan"
    if a.kind == "push_vlan":
        return f"push_vlan:0x{a.arg:04x}"
    if a.kind == "controller":
        return f"CONTROLLER:{a.arg}"
    if a.kind in ("mod_vlan_vid", "mod_vlan_pcp", "output", "mod_tp_src", "mod_tp_dst", "group"):
        return f"{a.kind}:{a.arg}"
    if a.kind in ("mod_dl_src", "mod_dl_dst"):
        return f"{a.kind}:{int_to_mac(a.arg)}"
    if a.kind in ("mod_nw_src", "mod_nw_dst"):
        import ipaddress
        return f"{a.kind}:{ipaddress.IPv4Address(a.arg)}"
    if a.kind == "dec_ttl":
        return "dec_ttl"
    if a.kind == "drop":
        return "drop"
    raise ValueError(f"unknown action kind '{a.kind}'")


def format_actions(actions, rule=None) -> str:
    """Canonical action list, with a rule's other instructions after it as OVS prints
    them; nothing at all prints as ``drop``."""
    parts = [_format_action(a) for a in actions if a.kind != "drop"]
    if rule is not None and rule.meter is not None:
        parts.insert(0, f"meter:{rule.meter}")        # first, as OVS prints it
    if rule is not None:
        if rule.clear_actions:
            parts.append("clear_actions")
        if rule.write_actions:
            parts.append(f"write_actions({','.join(_format_action(a) for a in rule.write_actions)})")
        if rule.write_metadata is not None:
            v, m = rule.write_metadata
            parts.append(f"write_metadata:0x{v:x}" + ("" if m == (1 << 64) - 1 else f"/0x{m:x}"))
        if rule.goto is not None:
            parts.append(f"goto_table:{rule.goto}")
    return ",".join(parts) or "drop"


def format_flow(rule: FlowRule, n_packets=None, n_bytes=None, duration=None) -> str:
    """Format like one line of ``ovs-ofctl dump-flows``."""
    head = [f" cookie=0x{rule.cookie:x}"]
    if rule.table:
        head.append(f"table={rule.table}")
    if duration is not None:
        head.append(f"duration={duration:.3f}s")
    if n_packets is not None:
        head.append(f"n_packets={n_packets}")
    if n_bytes is not None:
        head.append(f"n_bytes={n_bytes}")
    match = []
    if rule.priority != DEFAULT_PRIORITY:
        match.append(f"priority={rule.priority}")
    if format_match(rule.match):
        match.append(format_match(rule.match))
    body = ",".join(match)
    body = f"{body} " if body else ""
    return ", ".join(head) + ", " + body + "actions=" + format_actions(rule.actions, rule)
