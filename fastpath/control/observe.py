"""What VPP shows: interfaces, runtime, errors, the buffer pool, the tracer and pcap.
Each command is func(control, args, as_json)."""
from fastpath.control.args import CommandError, integer
from fastpath.graph.pcap import PcapWriter

MAX_TRACE = 10000                    # Tracer's record limit

STAT_COLUMNS = ("rx_packets", "rx_bytes", "rx_drops", "tx_packets", "tx_bytes", "tx_drops")

def show_interfaces(control, args, as_json):
    rows = []
    for s in control.switch.interface_stats():
        row = {k: (int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
               for k, v in s.items()}
        for k in STAT_COLUMNS:
            row.setdefault(k, 0)
        rows.append(row)
    if as_json:
        return rows
    head = f"{'Name':<16}{'Type':<10}{'Bridge':<10}{'ofport':>7}{'MTU':>7}" + "".join(
        f"{c.replace('_', ' '):>14}" for c in STAT_COLUMNS)
    lines = [head]
    for r in rows:
        mtu = r.get("mtu") or "-"
        lines.append(f"{r['name']:<16}{r['type']:<10}{r['bridge']:<10}{r['ofport']:>7}{mtu:>7}" +
                     "".join(f"{r[c]:>14}" for c in STAT_COLUMNS))
    return "\n".join(lines)

def show_runtime(control, args, as_json):
    """Each node summed over the workers (worker "all"), then, with several workers,
    each worker's rows, as VPP prints one table per thread."""
    rows = control.switch.runtime()
    if as_json:
        return [{k: (v if isinstance(v, str) else (float(v) if isinstance(v, float) else int(v)))
                 for k, v in row.items()} for row in rows]
    head = (f"{'Name':<28}{'State':>10}{'Calls':>12}{'Vectors':>12}{'Packets':>14}"
            f"{'ns/Packet':>12}{'Vectors/Call':>14}")
    lines = []
    for worker in ["all"] + (list(range(control.switch.n_workers)) if control.switch.n_workers > 1 else []):
        if control.switch.n_workers > 1:
            lines.append("Total (all workers)" if worker == "all" else f"Worker {worker}")
        lines.append(head)
        for r in rows:
            if r["worker"] == worker:
                lines.append(f"{r['name']:<28}{r['state']:>10}{r['calls']:>12}{r['vectors']:>12}"
                             f"{r['packets']:>14}{r['ns_per_packet']:>12.1f}{r['vectors_per_call']:>14.2f}")
    return "\n".join(lines)

def clear_runtime(control, args, as_json):
    control.switch.clear_runtime()
    return control._done(as_json)

def count_control_frames(control):
    """Count the frames the control plane builds and sends (ARP requests,
    IKE: Switch.send_frame) for `show pool`: they are buffers no interface
    received, the one term frame accounting cannot get from the other counters."""
    sw = control.switch
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

def show_pool(control, args, as_json):
    """The buffer pool: free + in flight == total, and the free list holds every free
    buffer once. Commands run between dispatch loops, when every vector has run to
    completion, so in_flight is 0 unless a timer just queued a control frame."""
    per_worker = []
    for w, g in enumerate(control.switch.graphs):          # one pool per worker
        pool = g.pool
        problem = ""
        try:
            pool.check_accounting()
        except AssertionError as e:
            problem = f"worker {w}: {e}" if len(control.switch.graphs) > 1 else str(e)
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
           "control_frames": int(getattr(control.switch, "control_frames", 0) or 0)}
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

def show_errors(control, args, as_json):
    errors = control.switch.errors()
    if as_json:
        return [{"count": c, "node": n, "reason": r, "text": t} for c, n, r, t in errors]
    lines = [f"{'Count':>12}  {'Node':<24}{'Reason'}"]
    for count, node, reason, text in errors:
        lines.append(f"{count:>12}  {node:<24}{text}")
    return "\n".join(lines)

def trace_add(control, args, as_json):
    g = control.switch.graph
    target, count = args
    n = integer(count, "trace add: count", 1, MAX_TRACE)
    if target in g and g[target].is_input:
        node = target
    elif target in control.switch.ports and f"{target}-input" in g:     # a vxlan port has none
        node = f"{target}-input"
    else:
        inputs = sorted(x.name for x in g.nodes if x.is_input and x.name in g)
        raise CommandError(f"trace add: no input node or port named {target!r} "
                           f"(inputs: {', '.join(inputs) or 'none'})")
    for graph in control.switch.graphs:            # the frames may arrive on any worker
        if node in graph:
            graph.trace_add(node, n)
    return control._done(as_json, {"node": node, "count": n})

def trace_show(control, args, as_json):
    graphs = control.switch.graphs
    if not as_json:
        if len(graphs) == 1:
            return graphs[0].tracer.show()
        return "\n".join(f"------------------- Worker {w} -------------------\n{g.tracer.show()}"
                         for w, g in enumerate(graphs))
    return [{"id": rid, "worker": w, "path": [{"time": ts, "node": node, "text": text}
                                              for ts, node, text, _ in rec]}
            for w, g in enumerate(graphs) for rid, rec in g.tracer.records.items()]

def trace_clear(control, args, as_json):
    for g in control.switch.graphs:
        g.trace_clear()
    return control._done(as_json)

def pcap_start(control, args, as_json):
    port = control._port(args[0])
    path = args[1]
    if port.name in control.captures:
        raise CommandError(f"pcap: {port.name} is already being captured "
                           f"to {control.captures[port.name].path}")
    g = control.switch.graph
    nodes = [f"{port.name}-input", f"{port.name}-output"]
    if not all(n in g for n in nodes):
        raise CommandError(f"pcap: {port.name} has no input/output nodes")
    try:
        writer = PcapWriter(path)
    except OSError as e:
        raise CommandError(f"pcap: cannot open {path}: {e.strerror or e}") from None
    except ValueError as e:                     # a NUL in the path
        raise CommandError(f"pcap: cannot open {path!r}: {e}") from None
    for graph in control.switch.graphs:          # every worker writes to the one file
        for n in nodes:
            if n in graph:
                graph[n].capture = writer
    control.captures[port.name] = writer
    return control._done(as_json, {"port": port.name, "file": path})

def stop_capture(control, name):
    writer = control.captures.pop(name, None)
    if writer is None:
        return None
    for g in control.switch.graphs:
        for n in (f"{name}-input", f"{name}-output"):
            if n in g and g[n].capture is writer:
                g[n].capture = None
    writer.close()
    return writer

def pcap_stop(control, args, as_json):
    name = args[0]
    if name not in control.captures:
        raise CommandError(f"pcap: no capture running on {name}")
    w = stop_capture(control, name)
    return control._done(as_json, {"port": name, "file": w.path, "packets": w.packets},
                      f"{w.packets} frames written to {w.path}")


HELP = [
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
]

COMMANDS = {
    "show interfaces": (show_interfaces, 0, 0),
    "show runtime": (show_runtime, 0, 0),
    "clear runtime": (clear_runtime, 0, 0),
    "show errors": (show_errors, 0, 0),
    "show pool": (show_pool, 0, 0),
    "trace add": (trace_add, 2, 2),
    "trace show": (trace_show, 0, 0),
    "trace clear": (trace_clear, 0, 0),
    "pcap start": (pcap_start, 2, 2),
    "pcap stop": (pcap_stop, 1, 1),
}
