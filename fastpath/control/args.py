"""Argument checks shared by the command families: each turns one token or value into
what Switch takes, or raises CommandError saying why in one line."""
import math
import re

from fastpath.nodes.bridge import MODES
from fastpath.switch import ConfigError, parse_trunks, parse_vlan

MAX_TABLE_SIZE = 1 << 24             # mac-table-size: larger would allocate gigabytes
PORT_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")    # an interface name, usable in flows


class CommandError(Exception):
    """A command that cannot be run; the message says why in one line."""


def kv(token, command):
    key, eq, value = token.partition("=")
    if not eq or not key:
        raise CommandError(f"{command}: expected KEY=VALUE, got {token!r}")
    return key, value


def integer(value, what, lo, hi):
    try:
        v = int(str(value), 0) if str(value).lower().startswith("0x") else int(str(value))
    except ValueError:
        raise CommandError(f"{what}: {value!r} is not an integer") from None
    if not lo <= v <= hi:
        raise CommandError(f"{what}: {v} out of range {lo}..{hi}")
    return v


def boolean(value, what):
    """'true' or 'false', as OVS writes booleans in options."""
    v = str(value).lower()
    if v not in ("true", "false"):
        raise CommandError(f"{what}: {value!r} is not true or false")
    return v


def aging_time(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"mac-aging-time: {value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise CommandError(f"mac-aging-time: {value!r} must be a positive number of seconds")
    return v


def bridge_settings(tokens, command):
    """other_config:mac-aging-time=N other_config:mac-table-size=N -> validated dict.
    mac-table-size comes first: it is the only one Switch can still refuse."""
    out = {}
    for tok in tokens:
        key, value = kv(tok, command)
        name = key.split(":", 1)[1] if key.startswith(("other_config:", "other-config:")) else key
        name = name.replace("_", "-")
        if name == "mac-aging-time":
            out[name] = aging_time(value)
        elif name == "mac-table-size":
            out[name] = integer(value, "mac-table-size", 1, MAX_TABLE_SIZE)
        elif name == "datapath-id":
            if not re.fullmatch(r"(0x)?[0-9A-Fa-f]{1,16}", value):
                raise CommandError(f"datapath-id: {value!r} is not up to 16 hex digits")
            out[name] = value[2:] if value.startswith("0x") else value
        elif name == "protocols":
            if value != "OpenFlow13":
                raise CommandError(f"protocols: {value!r}: fastpath speaks OpenFlow13 only")
            out[name] = value
        else:
            raise CommandError(f"{command}: unknown bridge setting {key!r} (known: "
                               "other_config:mac-aging-time, other_config:mac-table-size, "
                               "other_config:datapath-id, protocols)")
    return {k: out[k] for k in ("mac-table-size", "mac-aging-time", "datapath-id", "protocols")
            if k in out}


def vlan_id(value, what):
    try:
        return parse_vlan(value, what)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def trunks(value):
    try:
        return parse_trunks(value)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def vlan_mode(value):
    if value in ("", "[]"):
        return None
    if value not in MODES:
        raise CommandError(f"vlan_mode: {value!r} is not one of {', '.join(MODES)}")
    return value


def mtu_request(value):
    return integer(value, "mtu_request", 68, 65535)
