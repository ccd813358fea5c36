"""fastpath replay: a configured switch run over a pcap, every port in memory.

Zero privileges, deterministic: the switch clock follows the capture's timestamps and
each output frame carries the timestamp of the input frame that caused it.
"""
import json
import logging
import os
import sys


log = logging.getLogger("fastpath")


def replay(config, frames, in_port=None, out_dir=None):
    """Run frames [(ts, bytes)] into the switch `config` builds with every port made a pg
    port. Returns (summary dict, {port: [(ts, frame)]}) and writes OUT_DIR/<port>.pcap."""
    from fastpath.control import CommandError, Control, config_commands
    from fastpath.graph.pcap import PcapWriter
    from fastpath.switch import Switch

    cfg = json.loads(json.dumps(config))          # a deep copy
    for b in (cfg.get("bridge") or {}).values():
        for p in ((b.get("port") if isinstance(b, dict) else None) or {}).values():
            if isinstance(p, dict):
                p["type"] = "pg"
                for opt in ("options:keep", "options:fanout_group", "options:mtu"):
                    p.pop(opt, None)
    config_commands(cfg)                           # structure errors before anything else
    clock = [frames[0][0] if frames else 0.0]
    sw = Switch(n_buffers=4096, clock=lambda: clock[0])
    try:
        Control(sw).apply_config(cfg)
        if not sw.ports:
            raise CommandError("the config has no ports")
        if in_port is None:
            in_port = next(iter(next(b for b in sw.bridges.values() if b.ports).ports))
        if in_port not in sw.ports:
            raise CommandError(f"--in-port: no port named {in_port} (ports: {', '.join(sw.ports)})")
        inp = sw.port(in_port).io[0]
        outs = {name: p.io[1] for name, p in sw.ports.items()}
        produced = {name: [] for name in outs}
        too_big = 0
        for ts, frame in frames:
            clock[0] = ts
            sw.tick(ts)
            try:
                inp.load([frame])
            except ValueError:
                too_big += 1
                continue
            sw.graph.run_until_idle()
            for name, out in outs.items():
                for f in out.take():
                    produced[name].append((ts, bytes(f)))
        if out_dir is not None:
            os.makedirs(out_dir, exist_ok=True)
            for name, got in produced.items():
                w = PcapWriter(os.path.join(out_dir, f"{name}.pcap"))
                try:
                    for ts, f in got:
                        w.write(f, ts)
                finally:
                    w.close()
        errors = [{"count": c, "node": n, "reason": r, "text": t} for c, n, r, t in sw.graph.errors()]
        if too_big:
            errors.append({"count": too_big, "node": f"{in_port}-input", "reason": "too_big",
                           "text": "frame larger than a buffer (not injected)"})
        summary = {"in_port": in_port, "frames_in": len(frames),
                   "frames_out": {name: len(got) for name, got in produced.items()},
                   "errors": errors}
        return summary, produced
    finally:
        sw.close()


def cmd_replay(args):
    from fastpath.control import CommandError, read_config
    from fastpath.graph.pcap import read_pcap
    try:
        config = read_config(args.config)
        frames = list(read_pcap(args.pcap))
        summary, _ = replay(config, frames, args.in_port, args.out_dir)
    except CommandError as e:
        print(f"fastpath replay: {e}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"fastpath replay: {e}", file=sys.stderr)
        return 2
    print(f"replay: {summary['frames_in']} frames from {args.pcap} in on port {summary['in_port']}")
    print(f"  {'port':<16}{'frames out':>11}  file")
    for name, n in summary["frames_out"].items():
        print(f"  {name:<16}{n:>11}  {os.path.join(args.out_dir, name + '.pcap')}")
    if summary["errors"]:
        print("  errors:")
        for e in summary["errors"]:
            print(f"  {e['count']:>11}  {e['node']:<20}{e['text']}")
    else:
        print("  errors: none")
    return 0
