"""fastpath: the command.

    fastpath run [--config FILE] [--control PATH] [--buffers N]     (fastpath.daemon)
                 [--workers N] [--cpus LIST]
                 [--metrics ADDR:PORT]                           (fastpath.metrics)
    fastpath replay --config FILE [--in-port PORT] IN.pcap OUT_DIR/  (fastpath.replay)
    fastpath demo                                                    (fastpath.demo)
"""
import argparse
import os
import sys

from fastpath.ctl import DEFAULT_CONTROL, default_control


def cmd_run(args):
    from fastpath.daemon import cmd_run as run
    return run(args)


def cmd_replay(args):
    from fastpath.replay import cmd_replay as replay
    return replay(args)


def cmd_demo(args):
    from fastpath.demo import cmd_demo as demo
    return demo(args)


def main(argv=None):
    p = argparse.ArgumentParser(prog="fastpath", description="A VPP-style userspace switch "
                                "that speaks Open vSwitch's vocabulary.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", help="run the switch in the foreground")
    r.add_argument("--config", metavar="FILE", help="TOML config to build at start")
    r.add_argument("--control", metavar="PATH", default=default_control(),
                   help=f"control socket (default {DEFAULT_CONTROL})")
    r.add_argument("--control-group", metavar="GROUP", help="let GROUP use the control socket "
                   "(mode 0660); by default it is root-only (0600)")
    r.add_argument("--buffers", metavar="N", type=int, default=16384,
                   help="packet buffers per worker (default 16384)")
    r.add_argument("--workers", metavar="N", type=int,
                   default=int(os.environ.get("FASTPATH_WORKERS", "1") or 1),
                   help="dispatch loops, one thread each (default 1, or $FASTPATH_WORKERS); "
                        "bridge ports' receive queues are spread over them by flow hash")
    r.add_argument("--cpus", metavar="LIST", help="pin worker i to the i-th CPU of LIST "
                   "(e.g. 0,1 or 2-5); also accepted as a trailing cpus=LIST")
    r.add_argument("settings", nargs="*", metavar="workers=N|cpus=LIST",
                   help="the same settings in key=value form")
    r.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus metrics on "
                   "http://ADDR:PORT/metrics (e.g. 127.0.0.1:9482; port 0 picks a free one)")
    r.add_argument("--busy-poll-us", metavar="US", type=float, default=20000.0,
                   help="keep polling this long after the last frame before sleeping on the "
                        "interfaces (default 20000: while frames come at least every 20 ms "
                        "the switch never waits for a wake-up; it yields the CPU to anyone "
                        "who wants it meanwhile. 0: sleep at once, the least CPU)")
    r.add_argument("-v", "--verbose", action="store_true", help="log every command")
    r.set_defaults(func=cmd_run)

    rp = sub.add_parser("replay", help="run a pcap through a config, without privileges")
    rp.add_argument("--config", metavar="FILE", required=True)
    rp.add_argument("--in-port", metavar="PORT", help="port the frames arrive on "
                    "(default: the first port of the first bridge)")
    rp.add_argument("pcap", metavar="IN.pcap")
    rp.add_argument("out_dir", metavar="OUT_DIR")
    rp.set_defaults(func=cmd_replay)

    d = sub.add_parser("demo", help="build a namespace topology and switch traffic (root)")
    d.set_defaults(func=cmd_demo)

    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
