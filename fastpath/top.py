"""fastpathctl top: a live view of the graph, like htop for nodes and interfaces.

    fastpathctl top [--interval S] [--count N] [--sort cost|cpu|pps|name]

Every S seconds it takes a snapshot over the control socket (`show runtime`, `show
interfaces`, `show errors`, all --format json) and shows the rates between the last two:
per node the cost (ns/packet), packets/s, vectors/call (packets per call) and the share of
one core it took; per interface rx/tx packets/s, Mb/s and drops/s; the drop reasons that
grew. On a terminal it is full-screen (curses: `q` quits, `s` changes the sort order);
otherwise it prints one plain text frame per interval. --count N stops after N frames.
Counters that went backwards (`clear runtime`) count from zero. Rows with a "worker" field
(multi-worker daemons) get a worker column.
"""
import argparse
import sys
import time

from fastpath.ctl import DaemonError, NotRunning, request

SORTS = ("cost", "cpu", "pps", "name")


def snapshot(path=None, timeout=30.0):
    """The daemon's counters now: {"t", "runtime", "interfaces", "errors"}."""
    t = time.monotonic()
    return {"t": t,
            "runtime": request(["show", "runtime"], "json", path, timeout) or [],
            "interfaces": request(["show", "interfaces"], "json", path, timeout) or [],
            "errors": request(["show", "errors"], "json", path, timeout) or []}


def _num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else 0


def _index(rows, *key_fields):
    """rows -> {(worker, key...): {field: summed number}}."""
    out = {}
    for r in rows:
        if not isinstance(r, dict) or not all(k in r for k in key_fields):
            continue
        if isinstance(r.get("worker"), int):
            continue        # a multi-worker daemon's per-worker rows: its totals are shown
        worker = r.get("worker", "")
        key = ("" if worker == "all" else str(worker),) + tuple(str(r[k]) for k in key_fields)
        acc = out.setdefault(key, {})
        for k, v in r.items():
            if k in key_fields or k == "worker":
                continue
            if isinstance(v, str):
                acc.setdefault(k, v)                 # e.g. a node's state
            else:
                acc[k] = acc.get(k, 0) + _num(v)
    return out


def _deltas(cur, prev, fields):
    """cur - prev for each field; if any went backwards the row was cleared (`clear
    runtime`): count it from zero."""
    if any(cur.get(f, 0) < prev.get(f, 0) for f in fields):
        prev = {}
    return [cur.get(f, 0) - prev.get(f, 0) for f in fields]


def rates(prev, cur):
    """Two snapshots -> {"dt", "nodes", "interfaces", "errors"}: lists of dicts of rates."""
    dt = max(cur["t"] - prev["t"], 1e-6)
    nodes = []
    before = _index(prev["runtime"], "name")
    for key, c in _index(cur["runtime"], "name").items():
        calls, packets, ns = _deltas(c, before.get(key, {}), ("calls", "packets", "ns"))
        nodes.append({"worker": key[0], "name": key[1], "state": c.get("state", ""),
                      "pps": packets / dt,
                      "ns_per_packet": ns / packets if packets else 0.0,
                      "vectors_per_call": packets / calls if calls else 0.0,
                      "cpu": 100.0 * ns / (dt * 1e9), "packets": packets})
    ifs = []
    before = _index(prev["interfaces"], "name")
    for key, c in _index(cur["interfaces"], "name").items():
        fields = ("rx_packets", "rx_bytes", "rx_drops", "tx_packets", "tx_bytes", "tx_drops")
        d = {f: v / dt for f, v in zip(fields, _deltas(c, before.get(key, {}), fields))}
        ifs.append({"worker": key[0], "name": key[1], "rx_pps": d["rx_packets"],
                    "rx_bps": 8 * d["rx_bytes"], "rx_drops_ps": d["rx_drops"],
                    "tx_pps": d["tx_packets"], "tx_bps": 8 * d["tx_bytes"],
                    "tx_drops_ps": d["tx_drops"]})
    errs = []
    before = _index(prev["errors"], "node", "reason")
    for key, c in _index(cur["errors"], "node", "reason").items():
        (n,) = _deltas(c, before.get(key, {}), ("count",))
        if n:
            errs.append({"worker": key[0], "node": key[1], "reason": key[2], "rate": n / dt})
    return {"dt": dt, "nodes": nodes, "interfaces": ifs, "errors": errs}


def _si(x):
    """A rate in 5 characters or so: 0, 12.3, 4.56k, 7.89M."""
    if x == 0:
        return "0"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.2f}{unit}"
    return f"{x:.1f}"


def _sorted_nodes(nodes, sort):
    if sort == "name":
        return sorted(nodes, key=lambda n: (n["name"], n["worker"]))
    field = {"cost": "ns_per_packet", "cpu": "cpu", "pps": "pps"}[sort]
    # nodes that saw no packets in the interval go last, whatever they cost before
    return sorted(nodes, key=lambda n: (n["packets"] == 0, -n[field], n["name"], n["worker"]))


def render(r, sort="cost", frame=None, count=None, interval=None, keys=False):
    """Rates -> the lines of one frame (no trailing newlines)."""
    workers = any(n["worker"] for n in r["nodes"] + r["interfaces"] + r["errors"])
    wcol = (lambda x: f"{x['worker']:<7.7}") if workers else (lambda x: "")
    whead = f"{'WORKER':<7}" if workers else ""
    total_pps = sum(n["pps"] for n in r["nodes"] if n.get("state") == "polling")
    busy = sum(n["cpu"] for n in r["nodes"])
    active = sum(1 for n in r["nodes"] if n["packets"])
    title = f"fastpath top - {time.strftime('%H:%M:%S')}  interval {r['dt']:.2f} s"
    if frame is not None:
        title += f"  frame {frame}" + (f"/{count}" if count else "")
    title += f"  sort: {sort}"
    if keys:
        title += "  (q quit, s sort)"
    lines = [title,
             (f"nodes: {active} active of {len(r['nodes'])}   input {_si(total_pps)} pkts/s   "
              f"graph busy {busy:.1f}% of a core"), "",
             f"{whead}{'NODE':<28}{'ns/pkt':>10}{'pkts/s':>10}{'vec/call':>10}{'%CPU':>8}"]
    for n in _sorted_nodes(r["nodes"], sort):
        lines.append(f"{wcol(n)}{n['name']:<28.28}{n['ns_per_packet']:>10.1f}{_si(n['pps']):>10}"
                     f"{n['vectors_per_call']:>10.2f}{n['cpu']:>8.1f}")
    lines += ["", (f"{whead}{'INTERFACE':<16}{'rx pkts/s':>11}{'rx Mb/s':>10}{'rx drops/s':>12}"
                   f"{'tx pkts/s':>11}{'tx Mb/s':>10}{'tx drops/s':>12}")]
    for i in sorted(r["interfaces"], key=lambda i: (i["name"], i["worker"])):
        lines.append(f"{wcol(i)}{i['name']:<16.16}{_si(i['rx_pps']):>11}{i['rx_bps'] / 1e6:>10.2f}"
                     f"{_si(i['rx_drops_ps']):>12}{_si(i['tx_pps']):>11}{i['tx_bps'] / 1e6:>10.2f}"
                     f"{_si(i['tx_drops_ps']):>12}")
    if r["errors"]:
        lines += ["", f"{whead}{'DROPS/s':>10}  {'NODE':<24}REASON"]
        for e in sorted(r["errors"], key=lambda e: -e["rate"]):
            lines.append(f"{wcol(e)}{_si(e['rate']):>10}  {e['node']:<24}{e['reason']}")
    return lines


def _plain(args, path, timeout, out):
    prev = snapshot(path, timeout)
    frame = 0
    while True:
        time.sleep(max(0.0, prev["t"] + args.interval - time.monotonic()))
        cur = snapshot(path, timeout)
        frame += 1
        if frame > 1:
            out.write("\n")
        out.write("\n".join(render(rates(prev, cur), args.sort, frame, args.count)) + "\n")
        out.flush()
        prev = cur
        if args.count and frame >= args.count:
            return 0


def _curses(stdscr, args, path, timeout):
    import curses
    try:
        curses.curs_set(0)
    except curses.error:
        pass
    stdscr.timeout(50)
    sort = args.sort
    lines = ["fastpath top: collecting the first interval..."]
    r = None
    frame = 0
    prev = snapshot(path, timeout)
    due = prev["t"] + args.interval
    dirty = True
    while True:
        if dirty:
            stdscr.erase()
            h, w = stdscr.getmaxyx()
            for y, line in enumerate(lines[:h]):
                head = line.lstrip().startswith(("NODE ", "INTERFACE ", "WORKER ", "DROPS/s"))
                attr = curses.A_REVERSE if head else 0
                try:
                    stdscr.addnstr(y, 0, line.ljust(w) if attr else line, max(w - 1, 1), attr)
                except curses.error:
                    pass
            stdscr.refresh()
            dirty = False
        ch = stdscr.getch()
        if ch in (ord("q"), ord("Q"), 27):
            return 0
        if ch in (ord("s"), ord("S")):
            sort = SORTS[(SORTS.index(sort) + 1) % len(SORTS)]
            dirty = r is not None
        elif ch == curses.KEY_RESIZE:
            dirty = True
        if time.monotonic() >= due:
            cur = snapshot(path, timeout)
            r = rates(prev, cur)
            prev = cur
            due = max(due + args.interval, time.monotonic() + 0.05)
            frame += 1
            dirty = True
            if args.count and frame > args.count:
                return 0
        if dirty and r is not None:
            lines = render(r, sort, frame, args.count, keys=True)


def main(argv, path=None, timeout=30.0):
    p = argparse.ArgumentParser(prog="fastpathctl top", description="A live view of the "
                                "graph's nodes and interfaces (rates between snapshots).")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between frames (default 1)")
    p.add_argument("--count", type=int, default=0, metavar="N", help="stop after N frames")
    p.add_argument("--sort", choices=SORTS, default="cost",
                   help="order of the nodes: cost (ns/packet, default), cpu, pps or name")
    args = p.parse_args(argv)
    if not args.interval >= 0.1:
        p.error("--interval: at least 0.1")
    if args.count < 0:
        p.error("--count: 0 (forever) or more")
    try:
        if sys.stdout.isatty() and sys.stdin.isatty():
            import curses
            return curses.wrapper(_curses, args, path, timeout)
        return _plain(args, path, timeout, sys.stdout)
    except KeyboardInterrupt:
        return 0
    except DaemonError as e:
        print(f"fastpathctl top: {e}", file=sys.stderr)
        return 1
    except (NotRunning, OSError) as e:
        print(f"fastpathctl top: {e}", file=sys.stderr)
        return 2
