"""The config file: TOML with exactly Switch.config()'s structure, written by `save` and
read back as the commands that build it (so loading validates as a client's commands do)."""
import math
import os
import re
import tempfile
import tomllib

from fastpath.control.args import CommandError

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
