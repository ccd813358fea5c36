"""Parse and print OpenFlow flow rules in ``ovs-ofctl add-flow`` syntax (L2 only).

Supported match fields: priority, cookie, table (0 only), in_port, dl_src,
dl_dst (with optional MAC masks), dl_type, dl_vlan (0..4095 or 0xffff for
"no 802.1Q header"), dl_vlan_pcp, and the shorthands ``arp``, ``ip``, ``ipv6``.
Supported actions: strip_vlan/pop_vlan, push_vlan, mod_vlan_vid, mod_vlan_pcp,
output:PORT (or a bare port number), normal, flood, all, in_port, controller[:MAX_LEN]
(or output:CONTROLLER) and drop.

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
_IGNORED_FIELDS = {"duration", "n_packets", "n_bytes", "idle_age", "hard_age"}
_MATCH_FIELDS = ("in_port", "dl_src", "dl_dst", "dl_type", "dl_vlan", "dl_vlan_pcp")

# Action kinds.  'drop' is represented by an empty action list, as in OVS.
_NOARG_ACTIONS = {"strip_vlan": "strip_vlan", "pop_vlan": "strip_vlan",
                  "normal": "normal", "flood": "flood", "all": "all",
                  "in_port": "in_port"}
_ARG_ACTIONS = ("push_vlan", "mod_vlan_vid", "mod_vlan_pcp", "output", "controller")
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


@dataclass
class Action:
    kind: str   # strip_vlan push_vlan mod_vlan_vid mod_vlan_pcp output normal flood all in_port
                # controller (arg: max_len)
    arg: object = None


@dataclass
class FlowRule:
    priority: int = DEFAULT_PRIORITY
    match: Match = field(default_factory=Match)
    actions: list = field(default_factory=list)   # [] == drop
    cookie: int = 0


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


_FIELD_PARSERS = {
    "in_port": _parse_port,
    "dl_src": _parse_mac_field,
    "dl_dst": _parse_mac_field,
    "dl_type": lambda raw, name: _parse_int(raw, name, 0, 0xFFFF),
    "dl_vlan": _parse_vlan,
    "dl_vlan_pcp": lambda raw, name: _parse_int(raw, name, 0, 7),
}


def _parse_fields(text: str, allow_cookie: bool):
    """Parse the part before ``actions=``; returns (Match, priority|None, cookie)."""
    match, priority, cookie = Match(), None, 0
    seen = set()
    for tok in _SEP_RE.split(text):
        if not tok:
            continue
        name, eq, raw = tok.partition("=")
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
            if _parse_int(raw, "table", 0, 254) != 0:
                raise FlowSyntaxError(f"only table 0 is supported, got '{tok}'")
        else:
            setattr(match, name, _FIELD_PARSERS[name](raw, name))
    return match, priority, cookie


def parse_actions(text: str) -> list:
    """Parse a comma-separated action list (the text after ``actions=``)."""
    tokens = [t for t in _SEP_RE.split(text) if t]
    actions = []
    for tok in tokens:
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
    match, priority, cookie = _parse_fields(fields_text, allow_cookie=True)
    if priority is None:
        priority = DEFAULT_PRIORITY
    return FlowRule(priority=priority, match=match, actions=actions, cookie=cookie)


def parse_match(text: str) -> tuple:
    """Parse a match for ``del-flows BR [FLOW]``: returns (Match, priority or None)."""
    if _ACTIONS_RE.search(text):
        raise FlowSyntaxError(f"'actions=' not allowed in match '{text.strip()}'")
    match, priority, _ = _parse_fields(text, allow_cookie=False)
    return match, priority


# ---------------------------------------------------------------- formatters

def _format_mac(name: str, value) -> str:
    addr, mask = value
    if mask == MAC_ALL_ONES:
        return f"{name}={int_to_mac(addr)}"
    return f"{name}={int_to_mac(addr)}/{int_to_mac(mask)}"


def format_match(m: Match) -> str:
    """Canonical comma-separated match (no priority); '' matches everything."""
    parts = []
    if m.dl_type in _SHORTHAND_BY_TYPE:
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
    if a.kind in ("mod_vlan_vid", "mod_vlan_pcp", "output"):
        return f"{a.kind}:{a.arg}"
    if a.kind == "drop":
        return "drop"
    raise ValueError(f"unknown action kind '{a.kind}'")


def format_actions(actions) -> str:
    """Canonical action list; an empty list prints as ``drop``."""
    text = ",".join(_format_action(a) for a in actions if a.kind != "drop")
    return text or "drop"


def format_flow(rule: FlowRule, n_packets=None, n_bytes=None, duration=None) -> str:
    """Format like one line of ``ovs-ofctl dump-flows``."""
    head = [f" cookie=0x{rule.cookie:x}"]
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
    return ", ".join(head) + ", " + body + "actions=" + format_actions(rule.actions)
