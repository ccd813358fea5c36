"""options:KEY=VALUE on ports and uplinks: which keys there are and what each accepts.
check(key, value) returns the canonical string Switch stores, or raises CommandError."""
import ipaddress
import os
import re

from fastpath.control.args import CommandError, boolean, integer
from fastpath.switch import SECRET_OPTIONS

PORT_OPTIONS = ("split_group", "fanout_group", "mtu", "keep", "vhost-socket", "vhost-server-path",
                "memif-socket", "memif-role", "memif-id", "memif-ring-size", "memif-buffer-size",
                "mac", "remote_ip", "local_ip", "key", "psk", "spi_out", "spi_in", "key_out",
                "key_in", "rekey_time", "replay_window", "encap", "esn",
                "tcp_mss_clamp", "ike", "ike_initiate", "local_id", "remote_id", "dpd_interval", "pfs",
                "certificate", "private_key", "ca_cert", "remote_name", "cookie_threshold")
UNIX_PATH_MAX = 107                  # sun_path holds 108 bytes with the final NUL
HIDDEN = "HIDDEN"                    # a secret `save` left out
# integer options: lowest, highest and, where the bare number needs it, what it counts
INTEGER_OPTIONS = {"split_group": (0, 255), "fanout_group": (0, 0xffff), "mtu": (68, 65535),
                   "memif-id": (0, 0xffffffff), "memif-ring-size": (1, 14, "log2 of the slots"),
                   "memif-buffer-size": (64, 16384), "key": (0, (1 << 24) - 1),
                   "rekey_time": (1, 1 << 62), "dpd_interval": (1, 1 << 62),
                   "cookie_threshold": (0, 1 << 20),
                   # as `ip xfrm state ... replay-window N`: N packets; 0 turns the check off
                   "replay_window": (0, 4096)}
BOOLEAN_OPTIONS = ("keep", "esn", "ike", "ike_initiate", "pfs")


def check(key, value):
    if key in SECRET_OPTIONS and str(value) == HIDDEN:
        raise CommandError(f"options:{key} was not saved in this config (save FILE with-secrets "
                           "keeps it); give it again")
    if key in INTEGER_OPTIONS:
        lo, hi, *what = INTEGER_OPTIONS[key]
        return str(integer(value, f"options:{key}" + "".join(f" ({w})" for w in what), lo, hi))
    if key in BOOLEAN_OPTIONS:
        return boolean(value, f"options:{key}")
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
