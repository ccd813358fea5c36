"""Control: the command interpreter, one place that maps an argv list to Switch calls.

The daemon's control socket, config loading and the tests all go through
Control.execute(argv, fmt). Commands use Open vSwitch's vocabulary (ovs-vsctl,
ovs-ofctl, ovs-appctl) and VPP's for observability (show runtime, trace, pcap):

    add-br br0 other_config:mac-aging-time=60
    add-port br0 veth0 type=afpacket tag=10
    add-flow br0 "priority=100,dl_vlan=10 actions=NORMAL"
    fdb/show br0

Every command validates all of its arguments before it changes anything, so a bad
command (CommandError, one line) leaves the configuration and the dataplane as they were.

The config file is TOML with exactly Switch.config()'s structure:

    [bridge.br0]
    mac_aging_time = 300.0
    mac_table_size = 8192
    flows = ["cookie=0x0, priority=0 actions=NORMAL"]      # only when not the default

    [bridge.br0.port.veth0]
    type = "afpacket"
    ofport = 1
    tag = 10
    trunks = [10, 20]
    vlan_mode = "trunk"
    "options:split_group" = "1"
"""
import ipaddress
import math
import os
import re
import tempfile
import tomllib

from fastpath import ports as port_types
from fastpath.graph.pcap import PcapWriter
from fastpath.nodes.bridge import MODES
from fastpath.switch import SECRET_OPTIONS, ConfigError, parse_trunks, parse_vlan
from fastpath.openflow import commands as openflow_commands
from fastpath.openflow.commands import HELP as OPENFLOW_HELP

FALLBACK_VERSION = "0.1.0"
MAX_MEMBERS = 1024                   # ports per bridge (L2Tables)
MAX_TABLE_SIZE = 1 << 24             # mac-table-size: larger would allocate gigabytes
MAX_TRACE = 10000                    # Tracer's record limit
PORT_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")    # an interface name, usable in flows
# options:KEY=VALUE a port accepts: key -> (check(value) -> canonical str, what)
PORT_OPTIONS = ("split_group", "fanout_group", "mtu", "keep", "vhost-socket", "vhost-server-path",
                "memif-socket", "memif-role", "memif-id", "memif-ring-size", "memif-buffer-size",
                "mac", "remote_ip", "local_ip", "key", "psk", "spi_out", "spi_in", "key_out",
                "key_in", "rekey_time", "rekey_packets", "rekey_bytes", "replay_window", "encap", "esn",
                "tcp_mss_clamp", "ike", "ike_initiate", "local_id", "remote_id", "dpd_interval", "pfs",
                "certificate", "private_key", "ca_cert", "remote_name")
UNIX_PATH_MAX = 107
HIDDEN = "HIDDEN"                    # a secret `save` left out                  # sun_path holds 108 bytes with the final NUL


class CommandError(Exception):
    """A command that cannot be run; the message says why in one line."""


def version():
    try:
        from importlib.metadata import version as _v
        return _v("fastpath")
    except Exception:
        return FALLBACK_VERSION


# ---------------------------------------------------------------- argument checks

def _kv(token, command):
    key, eq, value = token.partition("=")
    if not eq or not key:
        raise CommandError(f"{command}: expected KEY=VALUE, got {token!r}")
    return key, value


def _int(value, what, lo, hi):
    try:
        v = int(str(value), 0) if str(value).lower().startswith("0x") else int(str(value))
    except ValueError:
        raise CommandError(f"{what}: {value!r} is not an integer") from None
    if not lo <= v <= hi:
        raise CommandError(f"{what}: {v} out of range {lo}..{hi}")
    return v


def _bool(value, what):
    """'true' or 'false', as OVS writes booleans in options."""
    v = str(value).lower()
    if v not in ("true", "false"):
        raise CommandError(f"{what}: {value!r} is not true or false")
    return v


def _aging_time(value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CommandError(f"mac-aging-time: {value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise CommandError(f"mac-aging-time: {value!r} must be a positive number of seconds")
    return v


def _bridge_settings(tokens, command):
    """other_config:mac-aging-time=N other_config:mac-table-size=N -> validated dict.
    mac-table-size comes first: it is the only one Switch can still refuse."""
    out = {}
    for tok in tokens:
        key, value = _kv(tok, command)
        name = key.split(":", 1)[1] if key.startswith(("other_config:", "other-config:")) else key
        name = name.replace("_", "-")
        if name == "mac-aging-time":
            out[name] = _aging_time(value)
        elif name == "mac-table-size":
            out[name] = _int(value, "mac-table-size", 1, MAX_TABLE_SIZE)
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


def _vlan(value, what):
    try:
        return parse_vlan(value, what)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def _trunks(value):
    try:
        return parse_trunks(value)
    except ConfigError as e:
        raise CommandError(str(e)) from None


def _vlan_mode(value):
    if value in ("", "[]"):
        return None
    if value not in MODES:
        raise CommandError(f"vlan_mode: {value!r} is not one of {', '.join(MODES)}")
    return value


def _mtu(value):
    return _int(value, "mtu_request", 68, 65535)


def _option(key, value):
    if key in SECRET_OPTIONS and str(value) == HIDDEN:
        raise CommandError(f"options:{key} was not saved in this config (save FILE with-secrets "
                           "keeps it); give it again")
    if key == "split_group":
        return str(_int(value, "options:split_group", 0, 255))
    if key == "fanout_group":
        return str(_int(value, "options:fanout_group", 0, 0xffff))
    if key == "mtu":
        return str(_int(value, "options:mtu", 68, 65535))
    if key == "keep":
        return _bool(value, "options:keep")
    if key in ("vhost-socket", "vhost-server-path"):
        path = str(value)
        if not path or "\0" in path or len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise CommandError(f"options:{key}: {value!r} is not a socket path "
                               f"(1..{UNIX_PATH_MAX} bytes)")
        return path
    if key == "memif-socket":             # '@name': the abstract namespace, as libmemif
        path = str(value)
        if path in ("", "@") or "\0" in path or len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise CommandError(f"options:{key}: {value!r} is not a socket path "
                               f"(1..{UNIX_PATH_MAX} bytes, or @NAME)")
        return path
    if key == "memif-role":
        if str(value) not in ("master", "slave"):
            raise CommandError(f"options:memif-role: {value!r} is not master or slave")
        return str(value)
    if key == "memif-id":
        return str(_int(value, "options:memif-id", 0, 0xffffffff))
    if key == "memif-ring-size":
        return str(_int(value, "options:memif-ring-size (log2 of the slots)", 1, 14))
    if key == "memif-buffer-size":
        return str(_int(value, "options:memif-buffer-size", 64, 16384))
    if key == "mac":
        v = str(value).lower()
        if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", v) or int(v[:2], 16) & 1:
            raise CommandError(f"options:mac: {value!r} is not a unicast MAC address")
        return v
    if key in ("remote_ip", "local_ip"):
        try:
            return str(ipaddress.IPv4Address(str(value)))
        except ValueError:
            raise CommandError(f"options:{key}: {value!r} is not an IPv4 address") from None
    if key == "key":
        return str(_int(value, "options:key", 0, (1 << 24) - 1))
    if key in ("spi_out", "spi_in"):
        try:
            v = int(str(value), 0)
        except ValueError:
            v = -1
        if not 256 <= v <= 0xffffffff:
            raise CommandError(f"options:{key}: {value!r} is not an SPI (256..0xffffffff)")
        return f"0x{v:08x}"
    if key in ("key_out", "key_in"):
        from fastpath.crypto.sa import parse_xfrm_key
        try:
            parse_xfrm_key(str(value))
        except ValueError as e:
            raise CommandError(f"options:{key}: {e}") from None
        return str(value)
    if key == "psk":
        if not str(value):
            raise CommandError("options:psk: empty")
        return str(value)
    if key in ("rekey_time", "rekey_packets", "rekey_bytes", "dpd_interval"):
        return str(_int(value, f"options:{key}", 1, 1 << 62))
    if key == "replay_window":
        # as `ip xfrm state ... replay-window N`: N packets; 0 turns the check off
        return str(_int(value, "options:replay_window", 0, 4096))
    if key in ("esn", "ike", "ike_initiate", "pfs"):
        return _bool(value, f"options:{key}")
    if key in ("certificate", "private_key", "ca_cert"):    # PEM files, read by fastpath.ike.auth
        if not str(value) or "\0" in str(value):
            raise CommandError(f"options:{key}: {value!r} is not a file path")
        return str(value)
    if key in ("local_id", "remote_id", "remote_name"):
        if not str(value) or len(str(value)) > 255:
            raise CommandError(f"options:{key}: an IPv4 address, FQDN, email address or DN")
        return str(value)
    if key == "tcp_mss_clamp":
        from fastpath.nodes.mss import parse_clamp
        try:
            return str(parse_clamp(value))
        except ValueError as e:
            raise CommandError(str(e)) from None
    if key == "encap":
        if str(value) not in ("udp", "none"):
            raise CommandError(f"options:encap: {value!r} is not udp or none")
        return str(value)
    raise CommandError(f"unknown option {key!r} (known: {', '.join(PORT_OPTIONS)})")


# ---------------------------------------------------------------- the TOML config file

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key):
    return key if _BARE_KEY.fullmatch(key) else _toml_str(key)


def _toml_str(s):
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7f:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dump_toml(data):
    """A nested dict of str/int/float/bool/lists -> TOML text (what tomllib reads back)."""
    lines = []

    def table(d, path):
        scalars = [(k, v) for k, v in d.items() if not isinstance(v, dict) and v is not None]
        subtables = [(k, v) for k, v in d.items() if isinstance(v, dict)]
        if path and (scalars or not subtables):    # [a] before [a.b] is implied
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        for k, v in scalars:
            if isinstance(v, (list, tuple)) and len(v) > 1 and all(isinstance(x, str) for x in v):
                lines.append(f"{_toml_key(k)} = [")          # flows: one a line
                lines.extend(f"    {_toml_value(x)}," for x in v)
                lines.append("]")
            else:
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        for k, v in subtables:
            table(v, path + [k])

    table(data, [])
    return "\n".join(lines) + "\n"


def write_private(path, text):
    """Write text to path atomically, mode 0600 (a config may name every interface)."""
    path = os.path.abspath(path)
    d = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".fastpath-", dir=d)     # created 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def read_config(path):
    """Read a TOML config file -> dict; raises CommandError with the reason."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise CommandError(f"cannot read {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise CommandError(f"{path}: bad TOML: {e}") from None
    except UnicodeDecodeError as e:                 # tomllib reads UTF-8 only
        raise CommandError(f"{path}: bad TOML: not UTF-8 (byte {e.start})") from None
    except ValueError as e:                         # a NUL in the path
        raise CommandError(f"cannot read {path!r}: {e}") from None


def _str_setting(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def config_commands(config):
    """Switch.config() data -> the argv lists that build it (validated by Control)."""
    if not isinstance(config, dict) or set(config) - {"bridge", "uplink"}:
        raise CommandError("config: expected only [uplink.NAME] and [bridge.NAME] tables")
    bridges = config.get("bridge", {})
    uplinks = config.get("uplink", {})
    if not isinstance(bridges, dict) or not isinstance(uplinks, dict):
        raise CommandError("config: 'bridge' and 'uplink' must be tables")
    cmds = []
    # uplinks first: tunnel ports name their local address
    for name, u in uplinks.items():
        if not isinstance(u, dict) or "address" not in u:
            raise CommandError(f"config: uplink {name} needs an address")
        cmd = ["add-ip", name, _str_setting(u["address"])]
        for key, value in u.items():
            if key == "address":
                continue
            if key not in ("type", "gw", "mtu_request") and not key.startswith("options:"):
                raise CommandError(f"config: uplink {name}: unknown key {key!r}")
            cmd.append(f"{key}={_str_setting(value)}")
        cmds.append(cmd)
    for br, b in bridges.items():
        if not isinstance(b, dict):
            raise CommandError(f"config: bridge {br} is not a table")
        unknown = set(b) - {"mac_aging_time", "mac_table_size", "port", "flows", "controller",
                            "fail_mode", "datapath_id"}
        if unknown:
            raise CommandError(f"config: bridge {br}: unknown key {sorted(unknown)[0]!r}")
        cmd = ["add-br", br]
        for key in ("mac_aging_time", "mac_table_size"):
            if key in b:
                cmd.append(f"other_config:{key.replace('_', '-')}={_str_setting(b[key])}")
        cmds.append(cmd)
        if "datapath_id" in b:
            cmds.append(["set", "bridge", br, f"other_config:datapath-id={_str_setting(b['datapath_id'])}"])
        if "fail_mode" in b:
            cmds.append(["set-fail-mode", br, _str_setting(b["fail_mode"])])
        ports = b.get("port", {})
        if not isinstance(ports, dict):
            raise CommandError(f"config: bridge {br}: 'port' must be a table")
        for pname, p in ports.items():
            if not isinstance(p, dict):
                raise CommandError(f"config: port {pname} is not a table")
            cmd = ["add-port", br, pname]
            for key, value in p.items():
                if key == "ofport":
                    key = "ofport_request"
                elif (key not in ("type", "tag", "trunks", "vlan_mode", "mtu_request")
                      and not key.startswith("options:")):
                    raise CommandError(f"config: port {pname}: unknown key {key!r}")
                cmd.append(f"{key}={_str_setting(value)}")
            cmds.append(cmd)
        flows = b.get("flows")
        if flows is not None:
            if not isinstance(flows, list) or not all(isinstance(f, str) for f in flows):
                raise CommandError(f"config: bridge {br}: 'flows' must be a list of strings")
            cmds.append(["del-flows", br])
            cmds.extend(["add-flow", br, f] for f in flows)
        controllers = b.get("controller")
        if controllers:
            # last: the controller sees the bridge whole when it connects
            if not isinstance(controllers, list) or not all(isinstance(t, str) for t in controllers):
                raise CommandError(f"config: bridge {br}: 'controller' must be a list of strings")
            cmds.append(["set-controller", br, *controllers])
    return cmds


# ---------------------------------------------------------------- the interpreter

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
    ("set interface", "IFACE [mtu_request=N|[]] [options:tcp_mss_clamp=auto|N|off] [tag=...]",
     "set the MTU (the device's, for system and internal ports), a tunnel's MSS clamp, "
     "or the VLAN settings"),
    ("show", "", "bridges, controllers and ports (ovs-vsctl show)"),
    *OPENFLOW_HELP,
    ("add-flow", "BR FLOW", "add an OpenFlow rule (ovs-ofctl syntax)"),
    ("del-flows", "BR [FLOW]", "delete all rules, or those matching FLOW"),
    ("dump-flows", "BR", "list the rules with their counters"),
    ("fdb/show", "BR", "the MAC learning table"),
    ("fdb/flush", "BR", "forget the learned MAC addresses"),
    ("fdb/add", "BR PORT VLAN MAC", "add a static MAC entry"),
    ("fdb/stats", "BR", "MAC table counters: entries, size, learned, moved, evicted, aged"),
    ("show interfaces", "", "per-interface MTU, rx/tx packets, bytes and drops"),
    ("show runtime", "", "per-node calls, vectors, packets and cost"),
    ("clear runtime", "", "zero the per-node counters"),
    ("show errors", "", "why frames were dropped, per node"),
    ("show pool", "", "packet buffers: total, free, in flight, free-list check, control-plane frames"),
    ("trace add", "NODE|PORT N", "trace the next N frames received by an input node or port"),
    ("trace show", "", "the traced frames' paths through the graph"),
    ("trace clear", "", "forget traces and stop tracing"),
    ("pcap start", "IFACE FILE", "capture an interface's rx and tx frames to a pcap file"),
    ("pcap stop", "IFACE", "stop a capture and close its file"),
    ("add-ip", "IFACE ADDR/PLEN [gw=GW] [type=afpacket|pg] [mtu_request=N] [options:KEY=VALUE...]",
               "own an interface as an L3 uplink (the VPN underlay)"),
    ("del-ip", "IFACE", "release an L3 uplink"),
    ("show arp", "", "the uplinks' neighbour table"),
    ("show sa", "", "IPsec SAs: SPI, sequence numbers, replay window, counters, age"),
    ("show ike", "", "IKE SAs: peer, IDs, state, algorithms, SPIs, CHILD_SAs, lifetimes, counters"),
    ("save", "FILE [with-secrets]", "write the configuration as TOML (mode 0600; PSKs and keys "
                                    "only with with-secrets)"),
    ("version", "", "the fastpath version"),
    ("help", "", "this list"),
]


class Control:
    """Runs commands against one Switch. Not thread-safe: call it from the thread that
    runs the graph (the daemon serves its socket from the dispatch loop)."""

    def __init__(self, switch):
        self.switch = switch
        self.captures = {}            # port name -> PcapWriter
        self._count_control_frames()
        self._commands = {
            "add-br": (self.add_br, 1, None),
            "del-br": (self.del_br, 1, 1),
            "set bridge": (self.set_bridge, 2, None),
            "add-port": (self.add_port, 2, None),
            "del-port": (self.del_port, 1, 2),
            "set port": (self.set_port, 2, None),
            "set interface": (self.set_interface, 2, None),
            "show": (self.show, 0, 0),
            "add-flow": (self.add_flow, 2, None),
            "del-flows": (self.del_flows, 1, None),
            "dump-flows": (self.dump_flows, 1, 1),
            "fdb/show": (self.fdb_show, 1, 1),
            "fdb/flush": (self.fdb_flush, 1, 1),
            "fdb/add": (self.fdb_add, 4, 4),
            "fdb/stats": (self.fdb_stats, 1, 1),
            "show interfaces": (self.show_interfaces, 0, 0),
            "show runtime": (self.show_runtime, 0, 0),
            "clear runtime": (self.clear_runtime, 0, 0),
            "show errors": (self.show_errors, 0, 0),
            "show pool": (self.show_pool, 0, 0),
            "trace add": (self.trace_add, 2, 2),
            "trace show": (self.trace_show, 0, 0),
            "trace clear": (self.trace_clear, 0, 0),
            "pcap start": (self.pcap_start, 2, 2),
            "pcap stop": (self.pcap_stop, 1, 1),
            "add-ip": (self.add_ip, 2, None),
            "del-ip": (self.del_ip, 1, 1),
            "show arp": (self.show_arp, 0, 0),
            "show sa": (self.show_sa, 0, 0),
            "show ike": (self.show_ike, 0, 0),
            "save": (self.save, 1, 2),
            "version": (self.version, 0, 0),
            "help": (self.help, 0, 0),
        }
        for name, (func, lo, hi) in openflow_commands.COMMANDS.items():
            self._commands[name] = (lambda args, as_json, f=func: f(self, args, as_json), lo, hi)

    # ---- dispatch ----

    def execute(self, argv, fmt="text"):
        """Run one command; returns text (fmt="text") or plain data (fmt="json")."""
        if fmt not in ("text", "json"):
            raise CommandError(f"unknown format {fmt!r} (text or json)")
        if not isinstance(argv, (list, tuple)) or not all(isinstance(a, str) for a in argv):
            raise CommandError("a command is a list of strings")
        if not argv:
            raise CommandError("no command given (try 'help')")
        name, args = self._lookup(list(argv))
        func, lo, hi = self._commands[name]
        if len(args) < lo or (hi is not None and len(args) > hi):
            usage = next((f"{c} {a}".strip() for c, a, _ in HELP if c == name), name)
            raise CommandError(f"{name}: wrong number of arguments (usage: {usage})")
        try:
            return func(args, fmt == "json")
        except ConfigError as e:          # what validation here did not already catch
            raise CommandError(str(e)) from None

    def _lookup(self, argv):
        if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in self._commands:
            return f"{argv[0]} {argv[1]}", argv[2:]
        if argv[0] in ("set", "trace", "pcap", "clear") or (argv[0] == "show" and len(argv) > 1):
            what = f"{argv[0]} {argv[1]}" if len(argv) > 1 else argv[0]
            known = sorted(c for c in self._commands if c.startswith(argv[0] + " "))
            raise CommandError(f"unknown command {what!r} (known: {', '.join(known)})")
        if argv[0] in self._commands:
            return argv[0], argv[1:]
        raise CommandError(f"unknown command {argv[0]!r} (try 'help')")

    def close(self):
        """Stop every capture (daemon shutdown)."""
        for name in list(self.captures):
            self._stop_capture(name)

    # ---- config ----

    def apply_config(self, config):
        """Build the configuration in `config` (Switch.config() data) through the same
        commands a client would send."""
        for argv in config_commands(config):
            self.execute(argv)

    def load(self, path):
        self.apply_config(read_config(path))

    def config_text(self, secrets=False):
        """The config as TOML. PSKs and keys are written only when asked for: without them
        the file says HIDDEN, and loading it refuses to build a tunnel without its secret."""
        return dump_toml(self.config(secrets))

    def config(self, secrets=False):
        config = self.switch.config()
        if not secrets:
            for b in config.get("bridge", {}).values():
                for p in b.get("port", {}).values():
                    for k in SECRET_OPTIONS:
                        if f"options:{k}" in p:
                            p[f"options:{k}"] = HIDDEN
        return config

    # ---- helpers ----

    def _bridge(self, name):
        br = self.switch.bridges.get(name)
        if br is None:
            raise CommandError(f"no bridge named {name}")
        return br

    def _port(self, name):
        p = self.switch.ports.get(name)
        if p is None:
            raise CommandError(f"no port named {name}")
        return p

    @staticmethod
    def _done(as_json, data=None, text=""):
        return (data if data is not None else {}) if as_json else text

    # ---- bridges ----

    def add_br(self, args, as_json):
        name = args[0]
        if name in self.switch.bridges:
            raise CommandError(f"bridge {name} already exists")
        if not name or any(c.isspace() for c in name) or len(name) > 64:
            raise CommandError(f"bad bridge name {name!r}")
        settings = _bridge_settings(args[1:], "add-br")
        try:
            self.switch.add_br(name, **settings)
        except BaseException:
            if name in self.switch.bridges:      # created, then a setting was refused
                self.switch.del_br(name)
            raise
        return self._done(as_json, {"bridge": name})

    def del_br(self, args, as_json):
        br = self._bridge(args[0])
        for pname in list(br.ports):
            self._stop_capture(pname)
        self.switch.del_br(br.name)
        return self._done(as_json)

    def set_bridge(self, args, as_json):
        br = self._bridge(args[0])
        settings = _bridge_settings(args[1:], "set bridge")
        size = settings.get("mac-table-size")
        if size is not None:
            n_static = sum(1 for *_, static in br.fdb.entries(self.switch.tables.now) if static)
            if size < n_static:
                raise CommandError(f"mac-table-size: {n_static} static entries do not fit in {size}")
        self.switch.set_bridge(br.name, **settings)
        return self._done(as_json)

    # ---- ports ----

    def add_port(self, args, as_json):
        sw = self.switch
        br = self._bridge(args[0])
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
            key, value = _kv(tok, "add-port")
            if key in seen:
                raise CommandError(f"add-port: {key} given twice")
            seen.add(key)
            if key == "type":
                if value not in port_types.TYPES:
                    raise CommandError(f"unknown port type {value!r} "
                                       f"(known: {', '.join(sorted(port_types.TYPES))})")
                kw["type"] = value
            elif key == "tag":
                kw["tag"] = _vlan(value, "tag") if value not in ("", "[]") else None
            elif key == "trunks":
                kw["trunks"] = _trunks(value)
            elif key == "vlan_mode":
                kw["vlan_mode"] = _vlan_mode(value)
            elif key == "ofport_request":
                of = _int(value, "ofport_request", 1, 0xfeff)
                if any(p.ofport == of for p in br.ports.values()):
                    raise CommandError(f"ofport_request: ofport {of} is taken in bridge {br.name}")
                kw["ofport_request"] = of
            elif key == "mtu_request":
                kw["mtu_request"] = _mtu(value)
            elif key.startswith("options:"):
                opt = key[len("options:"):]
                options["options:" + opt] = _option(opt, value)
            else:
                raise CommandError(f"add-port: unknown setting {key!r} (known: type, tag, trunks, "
                                   "vlan_mode, ofport_request, mtu_request, options:KEY)")
        try:
            port = sw.add_port(br.name, name, **kw, **options)
        except ImportError as e:          # raised before anything was changed
            raise CommandError(f"cannot open {kw['type']} port {name}: {e}") from None
        return self._done(as_json, {"port": port.name, "bridge": br.name, "ofport": port.ofport,
                                    "sw_if_index": port.sw_if_index})

    # ---- L3 uplinks and IPsec ----

    def add_ip(self, args, as_json):
        sw = self.switch
        name = args[0]
        if not PORT_NAME_RE.fullmatch(name):
            raise CommandError(f"bad port name {name!r} (1-15 of A-Z a-z 0-9 _ . -)")
        if name in sw.ports or name in sw.uplinks:
            raise CommandError(f"port {name} already exists")
        kw, options = {"type": "afpacket"}, {}
        for tok in args[2:]:
            key, value = _kv(tok, "add-ip")
            if key == "gw":
                kw["gw"] = value
            elif key == "type":
                if value not in ("afpacket", "system", "pg"):
                    raise CommandError(f"add-ip: an uplink cannot be of type {value!r}")
                kw["type"] = value
            elif key == "mtu_request":
                kw["mtu_request"] = _mtu(value)
            elif key.startswith("options:") and key[8:] in ("mtu", "mac", "fanout_group", "keep"):
                options[key] = _option(key[8:], value)
            else:
                raise CommandError(f"add-ip: unknown setting {key!r} (known: gw, type, "
                                   "mtu_request, options:mtu, options:mac)")
        try:
            port = sw.add_ip(name, args[1], **kw, **options)
        except ImportError as e:
            raise CommandError(f"cannot open {kw['type']} port {name}: {e}") from None
        return self._done(as_json, {"port": port.name, "address": str(port.address)})

    def del_ip(self, args, as_json):
        self._stop_capture(args[0])
        self.switch.del_ip(args[0])
        return self._done(as_json)

    def show_arp(self, args, as_json):
        rows = [{"port": p, "ip": ip, "mac": mac, "age": age} for p, ip, mac, age in self.switch.show_arp()]
        if as_json:
            return rows
        lines = [f"{'Port':<16}{'IP address':<18}{'MAC':<20}{'Age':>5}"]
        lines += [f"{r['port']:<16}{r['ip']:<18}{r['mac']:<20}{r['age']:>5}" for r in rows]
        return "\n".join(lines)

    def show_sa(self, args, as_json):
        vpn = getattr(self.switch, "vpn", None)
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

    def show_ike(self, args, as_json):
        """IKE SAs per tunnel; keys and the PSK are never part of a row."""
        vpn = getattr(self.switch, "vpn", None)
        rows = vpn.show_ike() if vpn else []
        counters = {t.port.name: dict(t.ike.counters) for t in (vpn.tunnels.values() if vpn else ()) if t.ike}
        if as_json:
            return {"sas": rows, "counters": counters}
        lines = []
        for r in rows:
            lines.append(f"{r['tunnel']}: {r['local']} <-> {r['peer']}  {r['role']}  {r['state']}")
            lines.append(f"    SPIs {r['spi_i']}_i {r['spi_r']}_r  {r['algorithms'] or '-'}  nat {r['nat']}")
            lines.append(f"    IDs local {r['local_id']}  remote {r['remote_id']}")
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

    def del_port(self, args, as_json):
        if len(args) == 2:
            br = self._bridge(args[0])
            port = self._port(args[1])
            if port.bridge is not br:
                raise CommandError(f"port {port.name} is not in bridge {br.name}")
        else:
            port = self._port(args[0])
        self._stop_capture(port.name)
        self.switch.del_port(port.name)
        return self._done(as_json)

    def set_port(self, args, as_json):
        port = self._port(args[0])
        settings = {}
        for tok in args[1:]:
            key, value = _kv(tok, "set port")
            if key in settings:
                raise CommandError(f"set port: {key} given twice")
            if key == "tag":
                settings["tag"] = _vlan(value, "tag") if value not in ("", "[]") else None
            elif key == "trunks":
                settings["trunks"] = _trunks(value)
            elif key == "vlan_mode":
                settings["vlan_mode"] = _vlan_mode(value)
            elif key == "options:tcp_mss_clamp":
                settings[key] = value if value == "off" else _option("tcp_mss_clamp", value)
            else:
                raise CommandError(f"set port: unknown setting {key!r} (known: tag, trunks, "
                                   "vlan_mode, options:tcp_mss_clamp)")
        self.switch.set_port(port.name, **settings)
        return self._done(as_json)

    def set_interface(self, args, as_json):
        """ovs-vsctl set interface IF mtu_request=N|[]; a port's VLAN settings too, as
        before (fastpath has one row per port where OVS has a Port and an Interface)."""
        name = args[0]
        if name not in self.switch.ports and name not in self.switch.uplinks:
            raise CommandError(f"no port named {name}")
        rest = []
        mtu = False
        for tok in args[1:]:
            key, value = _kv(tok, "set interface")
            if key == "mtu_request":
                if mtu is not False:
                    raise CommandError("set interface: mtu_request given twice")
                mtu = None if value in ("", "[]") else _mtu(value)
            else:
                rest.append(tok)
        if rest:
            if name not in self.switch.ports:
                raise CommandError(f"set interface: {name} is an L3 uplink: only mtu_request applies")
            self.set_port([name] + rest, as_json)
        if mtu is not False:
            self.switch.set_mtu_request(name, mtu)
        return self._done(as_json)

    def show(self, args, as_json):
        if as_json:
            return self.config()
        return self.switch.show()

    # ---- flows ----

    def add_flow(self, args, as_json):
        br = self._bridge(args[0])
        self.switch.add_flow(br.name, " ".join(args[1:]))
        return self._done(as_json)

    def del_flows(self, args, as_json):
        br = self._bridge(args[0])
        n = self.switch.del_flows(br.name, " ".join(args[1:]) or None)
        return self._done(as_json, {"deleted": n})

    def dump_flows(self, args, as_json):
        br = self._bridge(args[0])
        lines = self.switch.dump_flows(br.name)       # also brings the counters up to date
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

    def fdb_show(self, args, as_json):
        br = self._bridge(args[0])
        if as_json:
            return self.switch.fdb_rows(br.name)
        return self.switch.fdb_show(br.name).rstrip("\n")

    def fdb_flush(self, args, as_json):
        br = self._bridge(args[0])
        n = int(self.switch.fdb_flush(br.name))
        return self._done(as_json, {"flushed": n}, "table successfully flushed")

    def fdb_add(self, args, as_json):
        br = self._bridge(args[0])
        pname, vlan, mac = args[1:]
        if pname not in br.ports:
            raise CommandError(f"bridge {br.name} has no port {pname}")
        _vlan(vlan, "vlan")
        self.switch.fdb_add(br.name, pname, vlan, mac)
        return self._done(as_json)

    def fdb_stats(self, args, as_json):
        fdb = self._bridge(args[0]).fdb
        s = {k: int(v) for k, v in fdb.stats().items()}
        s.update(max_entries=int(fdb.max_entries), aging_time=float(fdb.aging_time))
        return s if as_json else "\n".join(f"{k}: {v}" for k, v in s.items())

    # ---- observability ----

    STAT_COLUMNS = ("rx_packets", "rx_bytes", "rx_drops", "tx_packets", "tx_bytes", "tx_drops")

    def show_interfaces(self, args, as_json):
        rows = []
        for s in self.switch.interface_stats():
            row = {k: (int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                   for k, v in s.items()}
            for k in self.STAT_COLUMNS:
                row.setdefault(k, 0)
            rows.append(row)
        if as_json:
            return rows
        head = f"{'Name':<16}{'Type':<10}{'Bridge':<10}{'ofport':>7}{'MTU':>7}" + "".join(
            f"{c.replace('_', ' '):>14}" for c in self.STAT_COLUMNS)
        lines = [head]
        for r in rows:
            mtu = r.get("mtu") or "-"
            lines.append(f"{r['name']:<16}{r['type']:<10}{r['bridge']:<10}{r['ofport']:>7}{mtu:>7}" +
                         "".join(f"{r[c]:>14}" for c in self.STAT_COLUMNS))
        return "\n".join(lines)

    def show_runtime(self, args, as_json):
        """Each node summed over the workers (worker "all"), then, with several workers,
        each worker's rows, as VPP prints one table per thread."""
        rows = self.switch.runtime()
        if as_json:
            return [{k: (v if isinstance(v, str) else (float(v) if isinstance(v, float) else int(v)))
                     for k, v in row.items()} for row in rows]
        head = (f"{'Name':<28}{'State':>10}{'Calls':>12}{'Vectors':>12}{'Packets':>14}"
                f"{'ns/Packet':>12}{'Vectors/Call':>14}")
        lines = []
        for worker in ["all"] + (list(range(self.switch.n_workers)) if self.switch.n_workers > 1 else []):
            if self.switch.n_workers > 1:
                lines.append("Total (all workers)" if worker == "all" else f"Worker {worker}")
            lines.append(head)
            for r in rows:
                if r["worker"] == worker:
                    lines.append(f"{r['name']:<28}{r['state']:>10}{r['calls']:>12}{r['vectors']:>12}"
                                 f"{r['packets']:>14}{r['ns_per_packet']:>12.1f}{r['vectors_per_call']:>14.2f}")
        return "\n".join(lines)

    def clear_runtime(self, args, as_json):
        self.switch.clear_runtime()
        return self._done(as_json)

    def _count_control_frames(self):
        """Count the frames the control plane builds and sends (ARP requests, VPN
        handshakes: Switch.send_frame) for `show pool`: they are buffers no interface
        received, the one term frame accounting cannot get from the other counters."""
        sw = self.switch
        if getattr(sw, "control_frames", None) is not None or not hasattr(sw, "send_frame"):
            return
        sw.control_frames = 0
        send = sw.send_frame

        def send_frame(port, frame):
            ok = send(port, frame)
            if ok:
                sw.control_frames += 1
            return ok

        sw.send_frame = send_frame

    def show_pool(self, args, as_json):
        """The buffer pool: free + in flight == total, and the free list holds every free
        buffer once. Commands run between dispatch loops, when every vector has run to
        completion, so in_flight is 0 unless a timer just queued a control frame."""
        per_worker = []
        for w, g in enumerate(self.switch.graphs):          # one pool per worker
            pool = g.pool
            problem = ""
            try:
                pool.check_accounting()
            except AssertionError as e:
                problem = f"worker {w}: {e}" if len(self.switch.graphs) > 1 else str(e)
            free = int(pool.n_free) + int(pool.n_big_free)
            per_worker.append({"worker": w, "buffers": int(pool.n_buffers), "free": free,
                               "in_flight": int(pool.n_buffers) - free,
                               "big_buffers": int(pool.n_big), "big_free": int(pool.n_big_free),
                               "alloc_failures": int(pool.alloc_failures) + int(pool.big_alloc_failures),
                               "problem": problem})
        total = sum(r["buffers"] for r in per_worker)
        free = sum(r["free"] for r in per_worker)
        problem = "; ".join(r["problem"] for r in per_worker if r["problem"])
        row = {"buffers": total, "free": free, "in_flight": total - free,
               "big_buffers": sum(r["big_buffers"] for r in per_worker),
               "big_free": sum(r["big_free"] for r in per_worker),
               "alloc_failures": sum(r["alloc_failures"] for r in per_worker),
               "free_list_ok": not problem, "problem": problem,
               "control_frames": int(getattr(self.switch, "control_frames", 0) or 0)}
        if len(per_worker) > 1:
            row["workers"] = per_worker
        if as_json:
            return row
        return "\n".join([f"{'buffers':<16}{total:>12}", f"{'free':<16}{free:>12}",
                          f"{'in flight':<16}{total - free:>12}",
                          f"{'big (64 KiB)':<16}{row['big_buffers']:>12}",
                          f"{'big free':<16}{row['big_free']:>12}",
                          f"{'alloc failures':<16}{row['alloc_failures']:>12}",
                          f"{'control frames':<16}{row['control_frames']:>12}",
                          f"{'free list':<16}{'ok' if not problem else problem:>12}"])

    def show_errors(self, args, as_json):
        errors = self.switch.errors()
        if as_json:
            return [{"count": c, "node": n, "reason": r, "text": t} for c, n, r, t in errors]
        lines = [f"{'Count':>12}  {'Node':<24}{'Reason'}"]
        for count, node, reason, text in errors:
            lines.append(f"{count:>12}  {node:<24}{text}")
        return "\n".join(lines)

    def trace_add(self, args, as_json):
        g = self.switch.graph
        target, count = args
        n = _int(count, "trace add: count", 1, MAX_TRACE)
        if target in g and g[target].is_input:
            node = target
        elif target in self.switch.ports and f"{target}-input" in g:     # a vxlan port has none
            node = f"{target}-input"
        else:
            inputs = sorted(x.name for x in g.nodes if x.is_input and x.name in g)
            raise CommandError(f"trace add: no input node or port named {target!r} "
                               f"(inputs: {', '.join(inputs) or 'none'})")
        for graph in self.switch.graphs:            # the frames may arrive on any worker
            if node in graph:
                graph.trace_add(node, n)
        return self._done(as_json, {"node": node, "count": n})

    def trace_show(self, args, as_json):
        graphs = self.switch.graphs
        if not as_json:
            if len(graphs) == 1:
                return graphs[0].tracer.show()
            return "\n".join(f"------------------- Worker {w} -------------------\n{g.tracer.show()}"
                             for w, g in enumerate(graphs))
        return [{"id": rid, "worker": w, "path": [{"time": ts, "node": node, "text": text}
                                                  for ts, node, text, _ in rec]}
                for w, g in enumerate(graphs) for rid, rec in g.tracer.records.items()]

    def trace_clear(self, args, as_json):
        for g in self.switch.graphs:
            g.trace_clear()
        return self._done(as_json)

    def pcap_start(self, args, as_json):
        port = self._port(args[0])
        path = args[1]
        if port.name in self.captures:
            raise CommandError(f"pcap: {port.name} is already being captured "
                               f"to {self.captures[port.name].path}")
        g = self.switch.graph
        nodes = [f"{port.name}-input", f"{port.name}-output"]
        if not all(n in g for n in nodes):
            raise CommandError(f"pcap: {port.name} has no input/output nodes")
        try:
            writer = PcapWriter(path)
        except OSError as e:
            raise CommandError(f"pcap: cannot open {path}: {e.strerror or e}") from None
        except ValueError as e:                     # a NUL in the path
            raise CommandError(f"pcap: cannot open {path!r}: {e}") from None
        for graph in self.switch.graphs:          # every worker writes to the one file
            for n in nodes:
                if n in graph:
                    graph[n].capture = writer
        self.captures[port.name] = writer
        return self._done(as_json, {"port": port.name, "file": path})

    def _stop_capture(self, name):
        writer = self.captures.pop(name, None)
        if writer is None:
            return None
        for g in self.switch.graphs:
            for n in (f"{name}-input", f"{name}-output"):
                if n in g and g[n].capture is writer:
                    g[n].capture = None
        writer.close()
        return writer

    def pcap_stop(self, args, as_json):
        name = args[0]
        if name not in self.captures:
            raise CommandError(f"pcap: no capture running on {name}")
        w = self._stop_capture(name)
        return self._done(as_json, {"port": name, "file": w.path, "packets": w.packets},
                          f"{w.packets} frames written to {w.path}")

    def save(self, args, as_json):
        path = args[0]
        if args[1:] not in ([], ["with-secrets"]):
            raise CommandError(f"save: unknown argument {args[1]!r} (usage: save FILE [with-secrets])")
        text = self.config_text(secrets=args[1:] == ["with-secrets"])
        try:
            write_private(path, text)
        except OSError as e:
            raise CommandError(f"save: cannot write {path}: {e.strerror or e}") from None
        except ValueError as e:                     # a NUL in the path
            raise CommandError(f"save: cannot write {path!r}: {e}") from None
        return self._done(as_json, {"file": os.path.abspath(path)})

    def version(self, args, as_json):
        v = version()
        return {"version": v} if as_json else f"fastpath {v}"

    def help(self, args, as_json):
        if as_json:
            return [{"command": c, "args": a, "help": h} for c, a, h in HELP]
        width = max(len(f"{c} {a}".strip()) for c, a, _ in HELP if len(f"{c} {a}") < 48)
        lines = []
        for c, a, h in HELP:
            synopsis = f"{c} {a}".strip()
            if len(synopsis) > width:
                lines.append(synopsis)
                lines.append(" " * (width + 2) + h)
            else:
                lines.append(f"{synopsis:<{width}}  {h}")
        return "\n".join(lines)
