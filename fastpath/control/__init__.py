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

The config file (configfile.py) is TOML with exactly Switch.config()'s structure:

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

The commands live with their idea, each a func(control, args, as_json) in a COMMANDS
table with its HELP lines: switching.py (bridges, ports, flows, the MAC table),
underlay.py (L3 uplinks, SAs, IKE), observe.py (show runtime/errors/pool, trace, pcap)
and fastpath.openflow.commands (controllers). args.py and options.py check arguments.
"""
import os

from fastpath.control import observe, switching, underlay
from fastpath.control.args import CommandError
from fastpath.control.configfile import config_commands, dump_toml, read_config, write_private
from fastpath.control.options import HIDDEN, PORT_OPTIONS
from fastpath.openflow import commands as openflow_commands
from fastpath.switch import SECRET_OPTIONS, ConfigError

__all__ = ["Control", "CommandError", "HELP", "PORT_OPTIONS", "config_commands", "dump_toml",
           "read_config", "version", "write_private"]

FALLBACK_VERSION = "0.1.0"


def version():
    try:
        from importlib.metadata import version as _v
        return _v("fastpath")
    except Exception:
        return FALLBACK_VERSION


def save(control, args, as_json):
    path = args[0]
    if args[1:] not in ([], ["with-secrets"]):
        raise CommandError(f"save: unknown argument {args[1]!r} (usage: save FILE [with-secrets])")
    text = control.config_text(secrets=args[1:] == ["with-secrets"])
    try:
        write_private(path, text)
    except OSError as e:
        raise CommandError(f"save: cannot write {path}: {e.strerror or e}") from None
    except ValueError as e:                     # a NUL in the path
        raise CommandError(f"save: cannot write {path!r}: {e}") from None
    return control._done(as_json, {"file": os.path.abspath(path)})


def show_version(control, args, as_json):
    v = version()
    return {"version": v} if as_json else f"fastpath {v}"


def show_help(control, args, as_json):
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


HELP = [
    *switching.HELP,
    *openflow_commands.HELP,
    *switching.FLOW_HELP,
    *observe.HELP,
    *underlay.HELP,
    ("save", "FILE [with-secrets]", "write the configuration as TOML (mode 0600; PSKs and keys "
                                    "only with with-secrets)"),
    ("version", "", "the fastpath version"),
    ("help", "", "this list"),
]

COMMANDS = {
    **switching.COMMANDS,
    **observe.COMMANDS,
    **underlay.COMMANDS,
    **openflow_commands.COMMANDS,
    "save": (save, 1, 2),
    "version": (show_version, 0, 0),
    "help": (show_help, 0, 0),
}


class Control:
    """Runs commands against one Switch. Not thread-safe: call it from the thread that
    runs the graph (the daemon serves its socket from the dispatch loop)."""

    def __init__(self, switch):
        self.switch = switch
        self.captures = {}            # port name -> PcapWriter
        observe.count_control_frames(self)

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
        func, lo, hi = COMMANDS[name]
        if len(args) < lo or (hi is not None and len(args) > hi):
            usage = next((f"{c} {a}".strip() for c, a, _ in HELP if c == name), name)
            raise CommandError(f"{name}: wrong number of arguments (usage: {usage})")
        try:
            return func(self, args, fmt == "json")
        except ConfigError as e:          # what validation here did not already catch
            raise CommandError(str(e)) from None

    def _lookup(self, argv):
        if len(argv) >= 2 and f"{argv[0]} {argv[1]}" in COMMANDS:
            return f"{argv[0]} {argv[1]}", argv[2:]
        if argv[0] in ("set", "trace", "pcap", "clear") or (argv[0] == "show" and len(argv) > 1):
            what = f"{argv[0]} {argv[1]}" if len(argv) > 1 else argv[0]
            known = sorted(c for c in COMMANDS if c.startswith(argv[0] + " "))
            raise CommandError(f"unknown command {what!r} (known: {', '.join(known)})")
        if argv[0] in COMMANDS:
            return argv[0], argv[1:]
        raise CommandError(f"unknown command {argv[0]!r} (try 'help')")

    def close(self):
        """Stop every capture (daemon shutdown)."""
        for name in list(self.captures):
            observe.stop_capture(self, name)

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

