"""Command line for fastpath.afpacket.pktgen, one JSON object per line on stdout.

    python -m fastpath.afpacket.pktgen_cli gen IFACE --frame HEX [--frame HEX ...]
        (--seconds S | --count N) [--rate PPS] [--method ring|sendmmsg] [--batch N]
    python -m fastpath.afpacket.pktgen_cli sink IFACE [--ethertype 0x88B5] [--src MAC]
        [--dst MAC] [--expect HEX ...] [--hello HEX [--hello-count N]]
        [--seconds MAX] [--idle-stop S]

Run each inside the namespace of its interface (`ip netns exec NS python -m ...`).
gen prints its result when done. sink opens its ring, sends the --hello frames (so that
switches in between learn where it is), prints {"ready": true}, then counts until MAX
seconds have passed, SIGINT/SIGTERM arrives, or (with --idle-stop) nothing matching has
arrived for S seconds after the first matching frame; then it prints its counts.
"""
import argparse
import json
import resource
import signal
import sys
import time


def _hex(value):
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a hex string: {value[:40]!r}") from None


def _int(value):
    return int(value, 0)


def _cpu():
    """CPU seconds this process used so far (user, system), and how long it waited on a
    run queue for a CPU (run_delay, from /proc/self/schedstat where the kernel has it)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    out = {"cpu_user": round(r.ru_utime, 3), "cpu_sys": round(r.ru_stime, 3)}
    try:
        with open("/proc/self/schedstat") as f:
            out["run_delay"] = int(f.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        pass
    return out


def _emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cmd_gen(args):
    from fastpath.afpacket.pktgen import PacketGenerator
    if args.seconds is None and args.count is None:
        raise SystemExit("gen: give --seconds or --count")
    gen = PacketGenerator(args.ifname, args.frame, rate_pps=args.rate, method=args.method,
                          batch=args.batch)
    gen.run(seconds=args.seconds, count=args.count)
    _emit({**gen.stats(), **_cpu()})
    gen.close()
    return 0


def cmd_sink(args):
    from fastpath.afpacket.pktgen import PacketSink
    sink = PacketSink(args.ifname, ethertype=args.ethertype, src=args.src, dst=args.dst,
                      expect=args.expect or None)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    if args.hello:
        for _ in range(args.hello_count):
            sink.send(args.hello)
            time.sleep(0.01)
    _emit({"ready": True, "ifname": args.ifname})
    t0 = time.monotonic()
    last_frames, last_change = 0, t0
    # counting runs in C without the GIL; Python only looks at the clock between slices
    while not stop:
        now = time.monotonic()
        left = args.seconds - (now - t0)
        if left <= 0:
            break
        sink.run(min(left, 0.05))
        now = time.monotonic()
        if sink.frames != last_frames:
            last_frames, last_change = sink.frames, now
        elif args.idle_stop and sink.frames and now - last_change >= args.idle_stop:
            break
    sink.run(0)               # whatever is ready in the ring
    out = sink.stats()
    out["elapsed"] = time.monotonic() - t0
    _emit({**out, **_cpu()})
    sink.close()
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastpath.afpacket.pktgen_cli",
                                description="fastpath's traffic generator and counting sink")
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen", help="send frames as fast as possible (or paced)")
    g.add_argument("ifname")
    g.add_argument("--frame", type=_hex, action="append", required=True,
                   help="a frame in hex, without FCS; repeat to cycle through several")
    g.add_argument("--seconds", type=float)
    g.add_argument("--count", type=int)
    g.add_argument("--rate", type=float, help="frames per second (default: as fast as possible)")
    g.add_argument("--method", choices=("ring", "sendmmsg"), default=None)
    g.add_argument("--batch", type=int, default=256)
    g.set_defaults(func=cmd_gen)

    s = sub.add_parser("sink", help="count arriving frames")
    s.add_argument("ifname")
    s.add_argument("--ethertype", type=_int, help="count only frames of this EtherType")
    s.add_argument("--src", help="count only frames from this MAC")
    s.add_argument("--dst", help="count only frames to this MAC")
    s.add_argument("--expect", type=_hex, action="append",
                   help="check every counted frame against these frames (hex)")
    s.add_argument("--hello", type=_hex, help="a frame to send once ready (hex)")
    s.add_argument("--hello-count", type=int, default=3)
    s.add_argument("--seconds", type=float, default=60.0, help="count at most this long")
    s.add_argument("--idle-stop", type=float, default=0.0,
                   help="stop after this many seconds without a matching frame (once one came)")
    s.set_defaults(func=cmd_sink)
    args = p.parse_args(argv)
    if args.cmd == "gen" and args.method is None:
        from fastpath.afpacket.pktgen import DEFAULT_METHOD
        args.method = DEFAULT_METHOD
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
