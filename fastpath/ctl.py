"""fastpathctl: send one command to a running `fastpath run` daemon and print the reply.

    fastpathctl [--control PATH] [--format json|text] COMMAND ARGS...
    fastpathctl [--control PATH] top [--interval S] [--count N]     (fastpath.top)

The protocol (a Unix stream socket, root-only): the client sends one JSON line
    {"argv": ["add-port", "br0", "veth0", "tag=10"], "format": "text"}
and reads one JSON line back
    {"ok": true, "output": "..."}      or      {"ok": false, "error": "one line"}

This module imports nothing heavy, so it starts fast.
"""
import argparse
import json
import os
import socket
import sys

DEFAULT_CONTROL = "/run/fastpath/fastpath.sock"
MAX_REPLY = 64 << 20


class DaemonError(Exception):
    """The daemon refused the command (its one-line error)."""


class NotRunning(Exception):
    """Nothing answers on the control socket."""


def default_control():
    return os.environ.get("FASTPATH_CONTROL", DEFAULT_CONTROL)


def request(argv, fmt="text", path=None, timeout=30.0):
    """Run one command in the daemon; returns its output, raises DaemonError/NotRunning."""
    path = path or default_control()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NotRunning(f"cannot connect to {path}: {e.strerror} "
                             "(is `fastpath run` running?)") from None
        except PermissionError as e:
            raise NotRunning(f"cannot connect to {path}: {e.strerror} (the control socket is "
                             "root-only)") from None
        buf = bytearray()
        try:
            s.sendall(json.dumps({"argv": list(argv), "format": fmt}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            pass            # the daemon went away (a refused start): no reply, said below
        while b"\n" not in buf:
            try:
                chunk = s.recv(1 << 16)
            except socket.timeout:
                raise NotRunning(f"no reply from {path} within {timeout:g} s") from None
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if len(buf) > MAX_REPLY:
                raise NotRunning("reply too large")
    finally:
        s.close()
    if not buf:
        raise NotRunning(f"{path}: the daemon closed the connection without a reply")
    try:
        reply = json.loads(bytes(buf).split(b"\n", 1)[0])
    except ValueError:
        raise NotRunning(f"{path}: malformed reply") from None
    if not reply.get("ok"):
        raise DaemonError(reply.get("error", "unknown error"))
    return reply.get("output")


def _absolute_paths(argv):
    """Files named in commands are opened by the daemon, whose working directory is not
    ours: make them absolute here."""
    argv = list(argv)
    if len(argv) == 2 and argv[0] == "save":
        argv[1] = os.path.abspath(argv[1])
    elif len(argv) == 4 and argv[:2] == ["pcap", "start"]:
        argv[3] = os.path.abspath(argv[3])
    return argv


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="fastpathctl", description="Send a command to the fastpath daemon.",
        epilog="Commands: run `fastpathctl help` for the list; `fastpathctl top [--interval S] "
               "[--count N]` is a live view of the nodes and interfaces.")
    p.add_argument("--control", metavar="PATH", default=None,
                   help=f"control socket (default $FASTPATH_CONTROL or {DEFAULT_CONTROL})")
    p.add_argument("--format", choices=("text", "json"), default="text", help="output format")
    p.add_argument("--timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    p.add_argument("command", nargs=argparse.REMAINDER, help="COMMAND ARGS...")
    args = p.parse_args(argv)
    if not args.command:
        p.error("no command given (try `fastpathctl help`)")
    if args.command[0] == "--":
        args.command = args.command[1:]
    if args.command[:1] == ["top"]:                 # client-side: fastpath.top
        from fastpath.top import main as top
        return top(args.command[1:], args.control, args.timeout)
    try:
        out = request(_absolute_paths(args.command), args.format, args.control, args.timeout)
    except DaemonError as e:
        print(f"fastpathctl: {e}", file=sys.stderr)
        return 1
    except NotRunning as e:
        print(f"fastpathctl: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"fastpathctl: {e}", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps(out, indent=2, sort_keys=False))
    elif out:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
