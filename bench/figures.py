"""Benchmarks report throughput via extra_info (packets, mpps) and, at the end of the
session, each figure as a ratio to the baseline measured in the same run."""
RESULTS = {}      # name -> {"ns_per_packet":..., "packets":..., "mpps":...}


def record(benchmark, name, packets, nodes=None):
    """Store a benchmark's per-packet figures; call after benchmark(...) has run.
    With --benchmark-disable (the test suite) the code runs once and nothing is timed."""
    if benchmark.disabled:
        return
    median = benchmark.stats.stats.median
    ns = median * 1e9 / packets
    benchmark.extra_info["packets"] = packets
    benchmark.extra_info["mpps"] = round(packets / median / 1e6, 3)
    benchmark.extra_info["ns_per_packet"] = round(ns, 2)
    if nodes:
        benchmark.extra_info["ns_per_packet_per_node"] = round(ns / nodes, 2)
    RESULTS[name] = {"ns_per_packet": ns, "mpps": packets / median / 1e6, "nodes": nodes}


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    tr = terminalreporter
    tr.section("fastpath figures (ratios against baselines measured in this run)")
    r = RESULTS
    if "graph_4_nodes" in r and "graph_0_nodes" in r:
        per_node = (r["graph_4_nodes"]["ns_per_packet"] - r["graph_0_nodes"]["ns_per_packet"]) / 4
        tr.write_line(f"graph: {per_node:.2f} ns per packet per node (4 Cython nodes at vector 256, "
                      f"input/output cost of {r['graph_0_nodes']['ns_per_packet']:.1f} ns/packet subtracted)")
        if "graph_naive_python" in r:
            naive = r["graph_naive_python"]["ns_per_packet"] / 4
            tr.write_line(f"graph: naive per-packet Python loop {naive:.1f} ns per packet per node "
                          f"-> fastpath is {naive / per_node:.0f}x faster per node")
    if "l2_path_64b" in r:
        fp = r["l2_path_64b"]
        tr.write_line(f"l2: {fp['mpps']:.2f} Mpps, {fp['ns_per_packet']:.1f} ns/packet for the whole "
                      f"in-memory L2 path (64 B, 1000 MACs, vector 256)")
        if "l2_path_naive_python" in r:
            nv = r["l2_path_naive_python"]
            tr.write_line(f"l2: pure-Python switch {nv['mpps']:.3f} Mpps -> ratio {fp['mpps'] / nv['mpps']:.0f}x")
    if "l2_path_64b_1_workers" in r and "l2_path_64b_2_workers" in r:
        one, two = r["l2_path_64b_1_workers"]["mpps"], r["l2_path_64b_2_workers"]["mpps"]
        tr.write_line(f"workers: in-memory L2 path {one:.2f} Mpps on 1 worker, {two:.2f} on 2 "
                      f"-> {two / one:.2f}x")
    for size in (64, 512, 1400):
        e, d = r.get(f"esp_encrypt_{size}b"), r.get(f"esp_decrypt_{size}b")
        if not e:
            continue
        line = (f"esp: AES-GCM-128, {size} B IPv4, vector 256, ipsec-mb engine: encrypt {e['mpps']:.2f} Mpps "
                f"({e['mpps'] * size * 8 / 1000:.1f} Gb/s)")
        if d:
            line += f", decrypt {d['mpps']:.2f} Mpps ({d['mpps'] * size * 8 / 1000:.1f} Gb/s)"
        oe, od = r.get(f"esp_encrypt_openssl_{size}b"), r.get(f"esp_decrypt_openssl_{size}b")
        if oe:
            line += f"; OpenSSL engine encrypt {oe['mpps']:.2f} Mpps -> {e['mpps'] / oe['mpps']:.1f}x"
            if d and od:
                line += f", decrypt {od['mpps']:.2f} Mpps -> {d['mpps'] / od['mpps']:.1f}x"
        nv = r.get(f"esp_encrypt_naive_cryptography_{size}b")
        if nv:
            line += f"; per-packet cryptography loop {nv['mpps']:.3f} Mpps -> {e['mpps'] / nv['mpps']:.0f}x"
        tr.write_line(line)
