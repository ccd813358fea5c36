"""The benchmark report: every figure of fastpath next to its baseline, measured side by
side in one run on the machine at hand, as one Markdown table, a JSON file and plots.

    python3 -m bench.report [--out DIR] [--quick] [--only SECTION,...] [--workers 1,2]
                            [--nice N] [--readme [README]] [--from-json REPORT.json]

writes DIR/report.md, DIR/report.json, DIR/<section>.png (one plot per section) and
DIR/summary.png (default DIR: bench-report/). Sections, each against a baseline measured in
the same run (the ratio is fastpath's speed divided by the baseline's: > 1 is faster):

  graph        graph dispatch in memory: ns per packet per node of 4 trivial Cython nodes at
               vector 256 (pg input/output cost subtracted) vs the same work as a naive
               per-packet Python loop (bench/test_graph_bench.py)
  l2           the in-memory L2 path, 64 B, 1 000 MACs (pg-input -> 7 nodes -> pg-output),
               Mpps vs the pure-Python switch of bench/naive_switch.py (bench/test_l2_bench.py)
  e2e          L2 switching end to end through veth pairs (bench/e2e.py, root): delivered
               frames per second of fastpath vs the Linux bridge (and with RPS), Open vSwitch's
               userspace datapath and the raw veth ceiling, 64 and 1518 B
  tcp          real traffic between two hosts on veths with default offloads (bench/tcp.py,
               root, iperf3): TCP Gbit/s with 1 and 4 streams and ping RTT at low load, vs
               the Linux bridge and Open vSwitch's userspace datapath (netdev, AF_PACKET),
               the latter also with every offload off on the veths (its best setting)
  vpn-tcp      iperf3 TCP (1 stream, hosts at MTU 1500, default offloads) from site A to site
               B through the IKEv2-keyed VPN, manual-key ESP and plain VXLAN with
               tcp_mss_clamp=auto (bench/vpn_sites.py, root, iperf3) vs the raw veth pair
               between the two hosts, the ESP paths vs VXLAN, and the VPN vs manual keys
  ike          IKEv2 setup (bench/ike.py): handshakes per second as responder vs the same
               handshakes' initiator and vs ECP-256 keygen + exchange; and (root) the time
               from add-port to the first ESP between two gateways vs manual keys
  esp          ESP AES-GCM-128 encrypt and decrypt at vector 256, Mpps vs the straightforward
               per-packet loop over the `cryptography` package (bench/test_esp_bench.py)
  vm           vhost-user and memif, 64 B, Mpps vs DPDK's own vhost and memif backends
               (bench/vm.py, root, dpdk-testpmd)
  scaling      the in-memory L2 path with 1, 2, ... workers (bench.scaling.l2_inmemory):
               Mpps vs workers, against 1 worker and the ideal linear line
  scaling-e2e  end to end through veth, 64 B, several flows spread by AF_PACKET fanout,
               `fastpath run --workers N`: Mpps vs workers, with the raw veth ceiling

A section whose tools are missing (no root, no OVS, no dpdk-testpmd, no bench.scaling, no
`fastpath run --workers`) is reported as "not measured: <reason>"; one that fails is
reported as "failed: <error>" and the others still run (exit status 1 then). Absolute
figures are labelled with the machine: CPU model, cores, kernel, load average before and
after, date. --quick runs every section briefly (to check that the report works; its
figures are not for quoting). --readme also writes the summary table and plots into
README.md between its <!-- report:table --> and <!-- report:plot --> markers, the plots
copied to docs/bench/; --from-json redoes the outputs from a saved report.json without
measuring.
"""
import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import time
import traceback

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
for _p in (REPO, BENCH):
    if _p not in sys.path:
        sys.path.insert(0, _p)

SECTIONS = ("graph", "l2", "e2e", "tcp", "vpn-tcp", "ike", "esp", "vm", "scaling", "scaling-e2e")
TITLES = {
    "graph": "Graph dispatch in memory (ns per packet per node)",
    "l2": "L2 switching in memory",
    "e2e": "L2 switching end to end through veth",
    "tcp": "TCP and ping RTT between two hosts, default offloads",
    "vpn-tcp": "TCP between two sites: VXLAN in ESP (IKEv2, manual keys) and plain VXLAN, MSS clamped",
    "ike": "IKEv2 setup: handshakes per second, add-port to first ESP",
    "esp": "ESP AES-GCM-128 encrypt / decrypt in memory",
    "vm": "vhost-user and memif",
    "scaling": "Scaling with workers, in memory",
    "scaling-e2e": "Scaling with workers, end to end through veth",
}
METHODS = {
    "graph": "pg-input → 4 trivial Cython nodes (`null`) → pg-output at vector 256, 64-byte "
             "frames; the same graph with no nodes is measured too and its cost subtracted, "
             "giving ns per packet per node. Baseline: the same work written the obvious way, "
             "one Python call per packet per node (`bench/test_graph_bench.py`).",
    "l2": "pg-input → ethernet-input → vlan-input → l2-learn → l2-fwd → vlan-output → "
          "interface-output → pg-output, 64-byte frames from 1 000 stations to 1 000 known "
          "stations on access ports of VLAN 10, vector 256. Baseline: the pure-Python learning "
          "switch of `bench/naive_switch.py` on the same frames (`bench/test_l2_bench.py`).",
    "e2e": "`bench/e2e.py`: generator → veth → switch → veth → sink, each switch in a "
           "namespace of its own, pinned to core 1, the generator and sink on core 0; peers "
           "measured in interleaved rounds. Baselines: the raw veth pair (no switch, the "
           "ceiling), the Linux bridge (and, in full mode, with RPS onto the switch core), "
           "Open vSwitch's userspace datapath (netdev, AF_PACKET). Ratio: fastpath's delivered "
           "frames per second divided by the baseline's.",
    "tcp": "`bench/tcp.py`: namespaces A and B, each on a veth into the switch's namespace, "
           "default offloads and MTUs (no `ethtool -K`); iperf3 TCP with 1 and 4 streams (best "
           "of the rounds) and ping RTT, one every 10 ms, average of 200 (lowest of the rounds), "
           "the switches taking turns in each round. Baselines: the Linux bridge and Open "
           "vSwitch's userspace datapath (netdev, AF_PACKET ports), the latter also at its best "
           "setting (every offload off on every veth, for its turn only; the target of issue #14 "
           "is ≥ 0.75× the Linux bridge and ≥ 5× this). Ratio: fastpath's Gbit/s "
           "divided by the baseline's; for RTT the baseline's time divided by fastpath's. A "
           "switch that stalls TCP (Open vSwitch userspace does with default offloads) is "
           "reported as 0 Gbit/s, and a ratio against it as inf.",
    "vpn-tcp": "`bench/vpn_sites.py --tcp-only`: two fastpath gateways (both on core 1) joined by "
               "an underlay Linux bridge; iperf3 TCP, one stream, from a VLAN 10 host at site A to one "
               "at site B, both at MTU 1500 with default offloads, through VXLAN in ESP keyed by IKEv2 "
               "(AES-GCM, `options:psk`), through VXLAN in ESP with manual keys and through plain "
               "VXLAN, the tunnel ports with `options:tcp_mss_clamp=auto`; best of the rounds, the "
               "paths taking turns. Baseline: the two hosts on one veth pair (the raw veth ceiling); "
               "for the ESP paths also plain VXLAN, and for the IKEv2-keyed VPN manual-key ESP. "
               "Ratio: the tunnel's Gbit/s divided by the baseline's.",
    "ike": "`bench/ike.py`. Handshakes: IKE_SA_INIT + IKE_AUTH with a PSK and its CHILD_SA "
           "between two `fastpath.ike` IkeSa objects in one process (no sockets, no dataplane); "
           "handshakes per second from the time inside the responder's calls. Baselines: the "
           "initiator's side of the same handshakes, and one ECP-256 key generation plus one "
           "exchange (`cryptography`) per second, the DH a responder cannot avoid. First ESP "
           "(root): two `fastpath run` gateways on one veth, a VLAN 10 host behind site B "
           "sending a frame every ms; from the start of site B's `fastpathctl add-port` (site A's "
           "port already there) to the first ESP frame at site A, median of the trials. Baseline: "
           "the same with manual keys, trials alternating. Ratio: the baseline's time divided by "
           "IKE's (< 1: IKE is slower).",
    "esp": "ESP transport mode, AES-GCM-128 (intel-ipsec-mb, and the OpenSSL EVP engine next to it), IPv4 packets carrying VXLAN: "
           "pg-input → esp-encrypt → pg-output and pg-input → esp-decrypt → pg-output at vector "
           "256 (`bench/test_esp_bench.py`). Baseline: the straightforward per-packet loop with "
           "the `cryptography` package's AESGCM producing (encrypt) or checking and stripping "
           "(decrypt, with a 64-packet anti-replay window) the same ESP packets.",
    "vm": "`bench/vm.py`: 64-byte frames, one queue, `dpdk-testpmd` (`--no-pci --no-huge`) "
          "as the far end; each case measured with fastpath in the middle (a bridge between "
          "the port and a pg sink or generator) and right after with DPDK's own backend in "
          "its place (vhost PMD, memif PMD), which does no switching.",
    "scaling": "`bench.scaling.l2_inmemory(workers, seconds)`: the in-memory L2 path run by "
               "1, 2, … workers. Baseline: 1 worker in the same run; the ideal is N × the "
               "1-worker rate.",
    "scaling-e2e": "`bench/e2e.py` with only the ceiling and fastpath, 64-byte frames, the "
                   "generator cycling through {flows} IPv4/UDP flows (source MAC, address and "
                   "port of their own) so that AF_PACKET's fanout hash can spread them; "
                   "`fastpath run --workers N` pinned to N cores (the switch core first, the "
                   "generator's core last). Baseline: 1 worker in the same run; the ideal is "
                   "N × the 1-worker rate, the raw veth ceiling bounds it.",
}
FLOWS = 16          # scaling-e2e: flows for the fanout hash to spread


def log(*a):
    print("report:", *a, file=sys.stderr, flush=True)


class NotMeasured(Exception):
    """A section that cannot run here (a tool or privilege is missing)."""


# ---------------------------------------------------------------- timing

def timed(fn, rounds, warmup=1, setup=None):
    """Median wall time of fn() over `rounds` (after `warmup` untimed runs), in seconds;
    setup() runs untimed before each. What pytest-benchmark's pedantic mode measures."""
    for _ in range(warmup):
        if setup:
            setup()
        fn()
    times = []
    for _ in range(rounds):
        if setup:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(what, label, fastpath, baseline_name, baseline, unit, lower_is_better=False, ratio=None):
    """One figure against its baseline; ratio = fastpath's speed / the baseline's."""
    if ratio is None and fastpath and baseline:
        ratio = baseline / fastpath if lower_is_better else fastpath / baseline
    return {"what": what, "label": label, "fastpath": fastpath, "baseline_name": baseline_name,
            "baseline": baseline, "unit": unit, "ratio": ratio}


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


# ---------------------------------------------------------------- graph

def naive_graph_round(frames, packets):
    """bench/test_graph_bench.py's naive loop: one Python call per packet per node."""
    def node(frame, meta):
        meta["bytes"] += len(frame)
        meta["next"] = 1

    meta = {"bytes": 0, "next": 0}
    sent = 0
    while sent < packets:
        for f in frames:
            for _ in range(4):
                node(f, meta)
        sent += len(frames)
    return sent


def graph_chains_ns(rounds, warmup):
    """ns per packet through pg-input -> 4 null nodes -> pg-output and through pg-input ->
    pg-output at vector 256, their rounds alternated (a change of load hits both), and the
    median of the per-round differences / 4: ns per packet per node."""
    from test_graph_bench import PACKETS, chain
    graphs = []
    for n in (4, 0):
        g, inp, out = chain(n)
        inp.load([bytes(64)], loop=True, limit=0)
        graphs.append((g, inp, out))

    def once(k):
        g, inp, _ = graphs[k]
        inp.limit = PACKETS
        t0 = time.perf_counter()
        g.run_until_idle()
        return time.perf_counter() - t0

    for _ in range(warmup):
        once(0)
        once(1)
    t4, t0 = [], []
    for _ in range(rounds):
        t4.append(once(0))
        t0.append(once(1))
    for g, _, out in graphs:
        assert out.tx_packets == (rounds + warmup) * PACKETS, out.tx_packets
        g.pool.check_accounting(0)
    assert all(r["vectors_per_call"] == 256 for r in graphs[0][0].runtime() if r["name"].startswith("null"))
    ns = 1e9 / PACKETS
    per_node = statistics.median(a - b for a, b in zip(t4, t0)) * ns / 4
    return statistics.median(t4) * ns, statistics.median(t0) * ns, per_node


def graph_naive_ns(rounds, warmup):
    from test_graph_bench import PACKETS
    frames = [bytearray(64) for _ in range(256)]
    t = timed(lambda: naive_graph_round(frames, PACKETS), rounds, warmup)
    return t * 1e9 / PACKETS


def section_graph(ctx):
    reps = ctx.reps
    fp_rounds, nv_rounds = (10, 2) if ctx.quick else (30, 5)
    per_node, chain4, chain0, naive, ratios = [], [], [], [], []
    for _ in range(reps):                     # fastpath and the baseline interleaved
        n4, n0, pn = graph_chains_ns(fp_rounds, 2)
        nv = graph_naive_ns(nv_rounds, 1)
        chain4.append(n4)
        chain0.append(n0)
        per_node.append(max(pn, 1e-3))
        naive.append(nv)
        ratios.append((nv / 4) / per_node[-1])
    pn, nv = statistics.median(per_node), statistics.median(naive)
    rows = [
        row("dispatch per node: 4 trivial Cython nodes, vector 256, input/output subtracted",
            "per node", pn, "naive per-packet Python loop, per node", nv / 4, "ns/packet",
            lower_is_better=True, ratio=statistics.median(ratios)),
        row("the whole 4-node chain, pg input and output included", "4-node chain",
            statistics.median(chain4), "naive per-packet Python loop, 4 nodes", nv, "ns/packet",
            lower_is_better=True),
    ]
    details = ["| measured | ns/packet (median of repetitions) | repetitions |", "|---|---:|---:|",
               f"| pg-input → 4 null → pg-output | {statistics.median(chain4):.1f} | {reps} |",
               f"| pg-input → pg-output (no nodes) | {statistics.median(chain0):.1f} | {reps} |",
               f"| naive Python loop, 4 calls per packet | {nv:.1f} | {reps} |"]
    return {"rows": rows, "details": "\n".join(details),
            "raw": {"chain4_ns": chain4, "chain0_ns": chain0, "naive_ns": naive}}


# ---------------------------------------------------------------- l2

def section_l2(ctx):
    from naive_switch import NaiveSwitch
    from test_l2_bench import MACS, PACKETS, traffic

    from fastpath.switch import Switch
    fp_rounds, nv_rounds = (5, 2) if ctx.quick else (20, 3)
    fwd, rev = traffic()

    sw = Switch(n_buffers=8192)
    sw.add_br("br0")
    p1 = sw.add_port("br0", "p1", type="pg", tag=10, **{"options:keep": False})
    p2 = sw.add_port("br0", "p2", type="pg", tag=10, **{"options:keep": False})
    p2.io[0].load(rev)
    p1.io[0].load(fwd)
    sw.graph.run_until_idle()                        # learn both sides
    assert len(sw.bridge("br0").fdb) == 2 * MACS
    p1.io[0].load(fwd, loop=True, limit=0)

    def fp_round():
        p1.io[0].limit = PACKETS
        sw.graph.run_until_idle()

    nsw = NaiveSwitch()
    nsw.add_port(1, tag=10)
    nsw.add_port(2, tag=10)
    for f in rev:
        nsw.forward(2, f)
    for f in fwd:
        nsw.forward(1, f)

    def nv_round():
        n = 0
        while n < PACKETS:
            for f in fwd:
                n += len(nsw.forward(1, f))
        return n

    fp, nv, ratios = [], [], []
    sw.graph.clear_runtime()
    sent = p2.io[1].tx_packets
    for _ in range(ctx.reps):
        fp.append(PACKETS / timed(fp_round, fp_rounds, 2) / 1e6)
        nv.append(PACKETS / timed(nv_round, nv_rounds, 1) / 1e6)
        ratios.append(fp[-1] / nv[-1])
    assert p2.io[1].tx_packets - sent == ctx.reps * (fp_rounds + 2) * PACKETS     # all unicast
    assert sw.graph.errors() == []
    sw.graph.pool.check_accounting(0)
    runtime = [{"name": r["name"], "ns_per_packet": round(r["ns_per_packet"], 2),
                "vectors_per_call": round(r["vectors_per_call"], 1)} for r in sw.graph.runtime()
               if r["packets"]]
    sw.close()
    rows = [row("in-memory L2 path, 64 B, 1 000 MACs, vector 256 (pg-input → 7 nodes → pg-output)",
                "L2 path 64 B", statistics.median(fp), "pure-Python switch (bench/naive_switch.py)",
                statistics.median(nv), "Mpps", ratio=statistics.median(ratios))]
    details = ["| node | ns/packet | vectors/call |", "|---|---:|---:|"]
    details += [f"| {r['name']} | {r['ns_per_packet']:.1f} | {r['vectors_per_call']:.1f} |" for r in runtime]
    return {"rows": rows, "details": "fastpath's `show runtime` over the measured rounds:\n\n" + "\n".join(details),
            "raw": {"fastpath_mpps": fp, "naive_mpps": nv, "runtime": runtime}}


# ---------------------------------------------------------------- esp

def naive_decrypt(frame, aead, salt, state):
    """One ESP transport-mode packet back to the plain one, the obvious way (RFC 4303,
    RFC 4106, 64-bit ESN with a 64-packet anti-replay window): parse, check the window,
    decrypt and authenticate, check and strip the trailer, rebuild the IPv4 header.
    Returns the frame, or None for a packet that is dropped."""
    eth, ip = frame[:14], frame[14:]
    hlen = (ip[0] & 0xf) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    header, esp = bytearray(ip[:hlen]), ip[hlen:total]
    if header[9] != 50 or len(esp) < 8 + 8 + 16:
        return None
    spi, seq_lo = struct.unpack("!II", esp[:8])
    if spi != state["spi"]:
        return None
    top, bitmap = state["top"], state["bitmap"]
    seq = ((top >> 32) << 32) | seq_lo            # no wrap in a benchmark
    if seq <= top and (top - seq >= 64 or bitmap >> (top - seq) & 1):
        return None                               # replay, or left of the window
    iv = esp[8:16]
    try:
        plain = aead.decrypt(salt + iv, esp[16:], struct.pack("!III", spi, seq >> 32, seq_lo))
    except Exception:
        return None
    if seq > top:
        bitmap = ((bitmap << (seq - top)) | 1) & 0xFFFFFFFFFFFFFFFF
        top = seq
    else:
        bitmap |= 1 << (top - seq)
    state["top"], state["bitmap"] = top, bitmap
    pad, next_header = plain[-2], plain[-1]
    if plain[-2 - pad:-2] != bytes(range(1, pad + 1)):
        return None
    payload = plain[:-2 - pad]
    header[9] = next_header
    header[2:4] = struct.pack("!H", hlen + len(payload))
    header[10:12] = b"\0\0"
    s = sum(struct.unpack(f"!{hlen // 2}H", header))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    header[10:12] = struct.pack("!H", ~s & 0xffff)
    return eth + bytes(header) + payload


def esp_one_size(size, ctx, fp_rounds, nv_rounds):
    """(encrypt Mpps, naive encrypt Mpps, decrypt Mpps, naive decrypt Mpps, OpenSSL-engine
    encrypt Mpps, OpenSSL-engine decrypt Mpps) per repetition; fastpath's own figures on
    the engine AesGcm picks (ipsec-mb where it runs)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from test_esp_bench import PACKETS, SPI, encrypt_graph, naive_encrypt, plain_frames

    from fastpath.crypto.sa import SecurityAssociation
    from fastpath.graph.graph import Graph
    from fastpath.nodes.esp import EspDecrypt
    from fastpath.pg.pg import PgInput, PgOutput
    frames = plain_frames(size)
    # keys of their own (an SA restarts at 1 each run: test keys, never real ones)
    key_enc = bytes((100 + size + k) % 256 for k in range(20))
    key_dec = bytes((120 + size + k) % 256 for k in range(20))

    # fastpath encrypt, on the default engine and on OpenSSL's
    eg, einp, eout = encrypt_graph(key_enc)
    einp.load(frames, loop=True, limit=0)
    key_ossl = bytes((160 + size + k) % 256 for k in range(20))
    og, oinp, _ = encrypt_graph(key_ossl, engine="openssl")
    oinp.load(frames, loop=True, limit=0)

    def enc_round():
        einp.limit = PACKETS
        eg.run_until_idle()

    def ossl_enc_round():
        oinp.limit = PACKETS
        og.run_until_idle()

    # PACKETS distinct ESP packets for decryption, made by esp-encrypt; the naive decrypt
    # must give what esp-decrypt gives
    g, inp, out = encrypt_graph(key_dec, keep=True)
    inp.load(frames, loop=True, limit=PACKETS)
    g.run_until_idle()
    esp = out.take()
    assert len(esp) == PACKETS
    dg = Graph(n_buffers=4096)
    dinp = dg.add(PgInput("in", 1, next_node="esp-decrypt"))
    dec = dg.add(EspDecrypt(udp_next="out", other_next="out"))
    dout = dg.add(PgOutput("out", 2, keep=True))
    dec.set_sa(SPI, SecurityAssociation(SPI, key_dec, direction="in"))
    dinp.load(esp[:8])
    dg.run_until_idle()
    want = dout.take()
    aead_dec, salt_dec = AESGCM(key_dec[:16]), key_dec[16:]
    state = {"spi": SPI, "top": 0, "bitmap": 0}
    got = [naive_decrypt(p, aead_dec, salt_dec, state) for p in esp[:8]]
    assert got == want == frames[:8], "naive decrypt differs from esp-decrypt"
    dg = Graph(n_buffers=4096)
    dinp = dg.add(PgInput("in", 1, next_node="esp-decrypt"))
    dec = dg.add(EspDecrypt(udp_next="out", other_next="out"))
    dout = dg.add(PgOutput("out", 2, keep=False))

    def dec_setup():
        # a new inbound SA each round: the same packets again would be replays
        dec.set_sa(SPI, SecurityAssociation(SPI, key_dec, direction="in"))
        dinp.load(esp)

    def dec_round():
        dg.run_until_idle()

    def ossl_dec_setup():
        dec.set_sa(SPI, SecurityAssociation(SPI, key_dec, direction="in", engine="openssl"))
        dinp.load(esp)

    # the naive loops; naive encrypt gives esp-encrypt's bytes (checked here as in the test)
    key_nv = bytes((140 + size + k) % 256 for k in range(20))
    aead, salt = AESGCM(key_nv[:16]), key_nv[16:]
    cg, cinp, cout = encrypt_graph(key_nv, keep=True)
    cinp.load(frames[:8])
    cg.run_until_idle()
    assert cout.take() == [naive_encrypt(f, aead, salt, SPI, k + 1) for k, f in enumerate(frames[:8])]
    seq = [0]

    def nv_enc_round():
        sent = 0
        while sent < PACKETS:
            for f in frames:
                seq[0] += 1
                naive_encrypt(f, aead, salt, SPI, seq[0])
            sent += len(frames)

    def nv_dec_setup():
        state.update(top=0, bitmap=0)

    def nv_dec_round():
        for p in esp:
            naive_decrypt(p, aead_dec, salt_dec, state)

    out_rows = []
    for _ in range(ctx.reps):
        e = PACKETS / timed(enc_round, fp_rounds, 2) / 1e6
        ne = PACKETS / timed(nv_enc_round, nv_rounds, 1) / 1e6
        d = PACKETS / timed(dec_round, fp_rounds, 2, setup=dec_setup) / 1e6
        nd = PACKETS / timed(nv_dec_round, nv_rounds, 1, setup=nv_dec_setup) / 1e6
        oe = PACKETS / timed(ossl_enc_round, fp_rounds, 2) / 1e6
        od = PACKETS / timed(dec_round, fp_rounds, 2, setup=ossl_dec_setup) / 1e6
        out_rows.append((e, ne, d, nd, oe, od))
    assert eg.errors() == [] and dg.errors() == [] and og.errors() == [], (eg.errors(), dg.errors())
    assert state["top"] == PACKETS            # the naive decrypt took every packet
    return out_rows


def section_esp(ctx):
    sizes = (64, 1400) if ctx.quick else (64, 512, 1400)
    fp_rounds, nv_rounds = (5, 2) if ctx.quick else (20, 3)
    from fastpath.crypto.aesgcm import ENGINES, IPSEC_MB, IPSEC_MB_UNUSABLE
    engine = IPSEC_MB or f"OpenSSL (intel-ipsec-mb cannot run: {IPSEC_MB_UNUSABLE})"
    rows, raw, details = [], {}, [f"fastpath's engine: {engine}.", "",
                                  "| IPv4 packet | encrypt Mpps (Gb/s) | OpenSSL engine encrypt | "
                                  "naive encrypt Mpps | decrypt Mpps (Gb/s) | OpenSSL engine decrypt | "
                                  "naive decrypt Mpps |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for size in sizes:
        reps = esp_one_size(size, ctx, fp_rounds, nv_rounds)
        raw[size] = reps
        e, ne, d, nd, oe, od = (statistics.median(r[k] for r in reps) for k in range(6))
        name = ENGINES[0]
        rows.append(row(f"ESP AES-GCM-128 encrypt ({name}), {size} B IPv4, vector 256", f"encrypt {size} B", e,
                        "per-packet `cryptography` AESGCM loop", ne, "Mpps",
                        ratio=statistics.median(r[0] / r[1] for r in reps)))
        rows.append(row(f"ESP AES-GCM-128 decrypt ({name}), {size} B IPv4, vector 256", f"decrypt {size} B", d,
                        "per-packet `cryptography` AESGCM loop", nd, "Mpps",
                        ratio=statistics.median(r[2] / r[3] for r in reps)))
        if name != "openssl":
            rows.append(row(f"ESP AES-GCM-128 encrypt ({name}), {size} B IPv4, vector 256",
                            f"encrypt {size} B vs OpenSSL", e, "the OpenSSL EVP engine", oe, "Mpps",
                            ratio=statistics.median(r[0] / r[4] for r in reps)))
            rows.append(row(f"ESP AES-GCM-128 decrypt ({name}), {size} B IPv4, vector 256",
                            f"decrypt {size} B vs OpenSSL", d, "the OpenSSL EVP engine", od, "Mpps",
                            ratio=statistics.median(r[2] / r[5] for r in reps)))
        details.append(f"| {size} B | {e:.2f} ({e * size * 8 / 1000:.1f}) | {oe:.2f} | {ne:.3f} | "
                       f"{d:.2f} ({d * size * 8 / 1000:.1f}) | {od:.2f} | {nd:.3f} |")
    return {"rows": rows, "details": "\n".join(details), "raw": raw}


# ---------------------------------------------------------------- e2e (root)

def e2e_available():
    try:
        import e2e  # noqa: F401
        from netns import can_run
    except Exception as exc:           # noqa: BLE001
        raise NotMeasured(f"bench/e2e.py cannot be imported: {exc}") from None
    if not can_run():
        raise NotMeasured("needs root, veth and network namespaces")
    missing = [t for t in ("ip", "taskset") if shutil.which(t) is None]
    if missing:
        raise NotMeasured(f"{', '.join(missing)} not installed")


def call_tool(fn, args):
    """bench/e2e.py's and bench/vm.py's run(): a string SystemExit there is a reason not to
    measure; an int one (a signal) goes on up."""
    try:
        return fn(args)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            raise NotMeasured(exc.code) from None
        raise


def section_e2e(ctx):
    e2e_available()
    import e2e
    argv = (["--short"] if ctx.quick else []) + ["--nice", str(ctx.nice)]
    args = e2e.parse_args(argv)
    rep = call_tool(e2e.run, args)
    by = {(r["peer"], r["size"]): r for r in rep["summary"]}
    rows = []
    names = {"ceiling": "raw veth ceiling (no switch)", "linux-bridge": "Linux bridge",
             "linux-bridge-rps": "Linux bridge, RPS onto the switch core",
             "ovs": "Open vSwitch userspace (netdev, AF_PACKET)"}
    short = {"ceiling": "ceiling", "linux-bridge": "bridge", "linux-bridge-rps": "bridge+RPS",
             "ovs": "OVS"}
    for size in args.sizes:
        fp = by.get(("fastpath", size))
        if fp is None or "delivered_pps" not in fp:
            raise RuntimeError(f"fastpath gave no result at {size} B")
        for peer in ("linux-bridge", "linux-bridge-rps", "ovs", "ceiling"):
            b = by.get((peer, size))
            if b is None:
                continue
            what = f"{size} B through veth, vs {names[peer]}"
            if "skipped" in b:
                rows.append({"what": what, "label": f"{size} B vs {short[peer]}",
                             "not_measured": b["skipped"]})
                continue
            rows.append(row(what, f"{size} B vs {short[peer]}", fp["delivered_pps"] / 1e3,
                            names[peer], b["delivered_pps"] / 1e3, "kpps delivered"))
    return {"rows": rows, "details": rep["table"], "raw": rep,
            "notes": [f"{rep['meta']['trials']} trial(s) × {rep['meta']['seconds']:g} s per peer and "
                      f"size, median; load average {rep['meta']['loadavg_start']} → {rep['meta']['loadavg_end']}"]}


# ---------------------------------------------------------------- tcp (root, iperf3)

TCP_NAMES = {"linux-bridge": "Linux bridge", "ovs": "Open vSwitch userspace (netdev, AF_PACKET)",
             "ovs-offloads-off": "Open vSwitch userspace at its best: every offload off on the veths"}
TCP_SHORT = {"linux-bridge": "bridge", "ovs": "OVS", "ovs-offloads-off": "OVS offloads off"}
TCP_TARGET_NAMES = {"linux-bridge": "the Linux bridge", "ovs-offloads-off": "Open vSwitch userspace at its best"}


def tcp_section(rep):
    """The tcp section from bench/tcp.py's run() report: rows of fastpath against each
    baseline, a table of the three switches' figures, notes."""
    best, names = rep["best"], dict(TCP_NAMES)
    fp = best.get("fastpath")
    if fp is None:
        raise RuntimeError("fastpath gave no result")
    rows = []
    for peer in ("linux-bridge", "ovs", "ovs-offloads-off"):
        for key, what, short, unit in (("tcp1", "iperf3 TCP, 1 stream", "TCP 1 stream", "Gbit/s"),
                                       ("tcp4", "iperf3 TCP, 4 streams", "TCP 4 streams", "Gbit/s"),
                                       ("rtt", "ping RTT, one every 10 ms, average", "RTT", "ms")):
            full = f"{what}, default offloads, vs {names[peer]}"
            label = f"{short} vs {TCP_SHORT[peer]}"
            if peer in rep.get("not_measured", {}):
                if key == "tcp1":
                    rows.append({"what": f"vs {names[peer]}", "label": f"vs {TCP_SHORT[peer]}",
                                 "not_measured": rep["not_measured"][peer]})
                continue
            if peer not in best:
                continue
            b = best[peer][key]
            r = row(full, label, fp[key], names[peer], b, unit, lower_is_better=key == "rtt")
            if r["ratio"] is None and key != "rtt":
                # a baseline of 0 Gbit/s: it stalled; the ratio is not a number to plot
                r["ratio_text"] = "inf" if fp[key] else "n/a"
            rows.append(r)
    peers = [p for p in ("linux-bridge", "ovs", "ovs-offloads-off", "fastpath") if p in best]
    head = ["| two hosts on veths, default offloads | " + " | ".join(
        TCP_SHORT.get(p, p) if p != "linux-bridge" else "Linux bridge" for p in peers)
        + "".join(f" | fastpath vs {TCP_SHORT[p]}" for p in peers if p != "fastpath") + " |",
        "|---|" + "---:|" * (2 * len(peers) - 1)]
    for key, what in (("tcp1", "iperf3 TCP, 1 stream"), ("tcp4", "iperf3 TCP, 4 streams"),
                      ("rtt", "ping RTT, one every 10 ms, average")):
        cells = [f"{best[p][key]:.3f} ms" if key == "rtt" else f"{best[p][key]:.2f} Gbit/s" for p in peers]
        for p in peers:
            if p == "fastpath":
                continue
            if key == "rtt":
                cells.append(f"{fp[key] - best[p][key]:+.3f} ms")
            else:
                b = best[p][key]
                cells.append(fmt_ratio(fp[key] / b) if b else ("inf" if fp[key] else "n/a"))
        head.append(f"| {what} | " + " | ".join(cells) + " |")
    notes = [f"{rep.get('rounds_run', '?')} round(s), iperf3 for {rep.get('seconds', '?')} s per run; "
             "TCP: best of the rounds, RTT: lowest of the rounds"]
    if "ovs-offloads-off" in best:
        notes.append("OVS offloads off: Open vSwitch userspace with `ethtool -K IF tx off tso off gso off "
                     "gro off` on every veth (both ends) for its turn only, the features restored after "
                     "it; fastpath and the Linux bridge always run with the defaults")
    for t in rep.get("targets", []):
        figure = {"tcp1": "TCP 1 stream", "tcp4": "TCP 4 streams"}[t["figure"]]
        r = fmt_ratio(t["ratio"]) if t["ratio"] is not None else "inf"
        notes.append(f"target (issue #14): fastpath {figure} ≥ {t['target']:g}× "
                     f"{TCP_TARGET_NAMES.get(t['peer'], t['peer'])}: {r}, {'met' if t['met'] else '**not met**'}")
    for p, v in rep.get("rounds", {}).items():
        if v.get("iperf3_errors"):
            notes.append(f"{names.get(p, p)}: iperf3 said \"{v['iperf3_errors'][0]}\"")
    for p, why in rep.get("not_measured", {}).items():
        notes.append(f"{names.get(p, p)}: not measured: {why}")
    return {"rows": rows, "details": "\n".join(head), "notes": notes,
            "raw": {k: rep[k] for k in ("rounds", "best", "not_measured", "packets", "ovs_best", "targets")
                    if k in rep}}


def section_tcp(ctx):
    if os.geteuid() != 0:
        raise NotMeasured("needs root")
    try:
        import tcp
        from netns import can_run
    except Exception as exc:           # noqa: BLE001
        raise NotMeasured(f"bench/tcp.py cannot be imported: {exc}") from None
    if not can_run():
        raise NotMeasured("needs root, veth and network namespaces")
    missing = [t for t in ("ip", "iperf3", "ping") if shutil.which(t) is None]
    if missing:
        raise NotMeasured(f"{', '.join(missing)} not installed")
    seconds, rounds_ = (1, 1) if ctx.quick else (3, 2)
    return tcp_section(tcp.run(seconds, rounds_, out=lambda table: log("tcp:\n" + table)))


# ---------------------------------------------------------------- vpn-tcp (root, iperf3)

VPN_TCP_NAMES = {"ceiling": "raw veth pair between the hosts (no gateways)",
                 "vxlan": "plain VXLAN, tcp_mss_clamp=auto",
                 "esp": "VXLAN in ESP with manual keys, tcp_mss_clamp=auto"}


def vpn_tcp_section(rep):
    """The vpn-tcp section from bench/vpn_sites.py's run() report with --tcp-only."""
    by = {r["path"]: r for r in rep.get("tcp", [])}
    if not by.get("vpn") and not by.get("vxlan"):
        raise RuntimeError("no tunnel gave a TCP result")
    rows = []
    short = {"ceiling": "veth", "vxlan": "VXLAN", "esp": "manual ESP"}
    versus = {"vpn": ("ceiling", "vxlan", "esp"), "esp": ("ceiling", "vxlan"), "vxlan": ("ceiling",)}
    for path, what, label in (("vpn", "iperf3 TCP, 1 stream, site A → site B over VXLAN in ESP keyed by "
                               "IKEv2, tcp_mss_clamp=auto, hosts at MTU 1500", "VPN"),
                              ("esp", "iperf3 TCP, 1 stream, site A → site B over VXLAN in ESP with manual "
                               "keys, tcp_mss_clamp=auto, hosts at MTU 1500", "ESP"),
                              ("vxlan", "iperf3 TCP, 1 stream, site A → site B over plain VXLAN, "
                               "tcp_mss_clamp=auto, hosts at MTU 1500", "VXLAN")):
        if path not in by:
            continue
        for base in versus[path]:
            if base not in by:
                continue
            rows.append(row(f"{what}, vs {VPN_TCP_NAMES[base]}", f"{label} vs {short[base]}", by[path]["gbps"],
                            VPN_TCP_NAMES[base], by[base]["gbps"], "Gbit/s"))
    m = rep.get("meta", {})
    notes = [f"{m.get('trials', '?')} round(s), iperf3 for {m.get('tcp_seconds', '?')} s per run, best "
             f"of the rounds; gateways on cores {m.get('gw_cores', '?')}"]
    for r in rep.get("tcp", []):
        if r.get("mss") is not None:
            extra = f", {r['clamped']} SYNs clamped" if r.get("clamped") is not None else ""
            notes.append(f"{r['label']}: sender MSS {r['mss']}{extra}")
        if r.get("error"):
            notes.append(f"{r['label']}: iperf3 said \"{r['error']}\"")
    return {"rows": rows, "details": rep.get("table", ""), "notes": notes,
            "raw": {k: rep[k] for k in ("meta", "tcp", "tcp_results") if k in rep}}


def section_vpn_tcp(ctx):
    e2e_available()
    if shutil.which("iperf3") is None:
        raise NotMeasured("iperf3 not installed")
    import vpn_sites
    args = vpn_sites.parse_args(["--tcp-only", "--nice", str(ctx.nice)] + (["--short"] if ctx.quick else []))
    return vpn_tcp_section(call_tool(vpn_sites.run, args))


def ike_section(rep):
    """The ike section from bench/ike.py's figures: {"handshakes", "ecdh_p256", and with
    root "first_esp"}."""
    h, dh = rep["handshakes"], rep["ecdh_p256"]
    what = "IKE_SA_INIT + IKE_AUTH (PSK, one CHILD_SA) as responder, in memory"
    rows = [row(f"{what}, vs the same handshakes' initiator side", "handshakes/s vs initiator",
                h["responder_per_s"], "initiator", h["initiator_per_s"], "handshakes/s"),
            row(f"{what}, vs ECP-256 keygen + exchange", "handshakes/s vs ECDH", h["responder_per_s"],
                "one ECP-256 keygen + exchange per handshake (`cryptography`)", dh["per_s"], "handshakes/s")]
    notes = [f"{h['handshakes']} handshakes: responder {h['responder_ms']:.2f} ms, initiator "
             f"{h['initiator_ms']:.2f} ms each"]
    fe = rep.get("first_esp")
    if fe:
        rows.append(row("add-port (the second site's) to the first ESP frame between two gateways, IKEv2 "
                        "(PSK), median", "first ESP vs manual keys", fe["ike_median"],
                        "manual keys", fe["manual_median"], "s", lower_is_better=True))
        notes.append("add-port to first ESP, every trial: IKEv2 "
                     + ", ".join(f"{1000 * t:.0f}" for t in fe["ike"]) + " ms; manual keys "
                     + ", ".join(f"{1000 * t:.0f}" for t in fe["manual"]) + " ms")
    else:
        notes.append("add-port to first ESP: not measured (needs root)")
    return {"rows": rows, "notes": notes, "raw": rep}


def section_ike(ctx):
    import ike
    n = 50 if ctx.quick else 500
    rep = {"handshakes": ike.handshakes(n), "ecdh_p256": ike.ecdh_p256(n)}
    from netns import can_run
    if can_run():
        rep["first_esp"] = ike.first_esp(2 if ctx.quick else 7)
    return ike_section(rep)


# ---------------------------------------------------------------- vm (root, dpdk-testpmd)

def section_vm(ctx):
    if os.geteuid() != 0:
        raise NotMeasured("needs root")
    try:
        import vm
        from test_vm_bench import _missing
    except Exception as exc:           # noqa: BLE001
        raise NotMeasured(f"bench/vm.py cannot be imported: {exc}") from None
    why = _missing()
    if why:
        raise NotMeasured(why)
    args = vm.parse_args((["--short"] if ctx.quick else []) + ["--nice", str(ctx.nice)])
    rep = call_tool(vm.run, args)
    rows = []
    short = {"vhost-rx": "vhost guest→switch", "vhost-tx": "vhost switch→guest",
             "memif-rx": "memif peer→switch", "memif-tx": "memif switch→peer"}
    for r in rep["summary"]:
        f, d = r.get("fastpath"), r.get("dpdk")
        if not (f and d):
            rows.append({"what": r["label"], "label": short.get(r["case"], r["case"]),
                         "not_measured": "no result"})
            continue
        base = "DPDK testpmd " + ("vhost PMD" if r["case"].startswith("vhost") else "memif PMD")
        rows.append(row(f"{r['label']}, 64 B", short.get(r["case"], r["case"]), f["mpps"], base,
                        d["mpps"], "Mpps", ratio=r.get("ratio")))
    return {"rows": rows, "details": rep["table"], "raw": rep,
            "notes": [f"DPDK {rep['meta'].get('dpdk') or '?'}; {rep['meta']['trials']} trial(s) × "
                      f"{rep['meta']['seconds']:g} s per case and implementation, median; ratio: median "
                      f"of the back-to-back pairs"]}


# ---------------------------------------------------------------- scaling

def scaling_rows(workers, mpps, what, unit="Mpps"):
    """Rows against the fewest workers measured (normally 1) and the plot's series."""
    base_n = workers[0]
    base = mpps[0]
    rows = []
    for n, m in zip(workers, mpps):
        rows.append(row(f"{what}, {n} worker{'s' if n > 1 else ''} (ideal ×{n / base_n:g})",
                        f"{n} worker{'s' if n > 1 else ''}", m,
                        f"{base_n} worker{'s' if base_n > 1 else ''}, same run", base, unit))
        rows[-1]["is_baseline"] = n == base_n       # not a bar of its own in summary.png
    ideal = [base * n / base_n for n in workers]
    return rows, ideal


def section_scaling(ctx):
    try:
        import bench.scaling as scaling
    except ModuleNotFoundError as exc:
        if exc.name in ("bench.scaling", "bench"):
            raise NotMeasured("bench.scaling not available") from None
        raise
    if not hasattr(scaling, "l2_inmemory"):
        raise NotMeasured("bench.scaling has no l2_inmemory()")
    workers = sorted(set(ctx.workers))
    seconds = 1.0 if ctx.quick else 5.0
    runs = {n: [] for n in workers}
    if getattr(ctx, "rt", False):
        scaling.set_realtime()
    try:
        for _ in range(ctx.reps):                  # worker counts interleaved
            for n in workers:
                r = scaling.l2_inmemory(n, seconds)
                log(f"scaling: {n} worker(s): {r['mpps']:.2f} Mpps ({r['packets']} packets in {r['seconds']:.2f} s)")
                runs[n].append(r)
    finally:
        if getattr(ctx, "rt", False):
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    mpps = [statistics.median(r["mpps"] for r in runs[n]) for n in workers]
    rows, ideal = scaling_rows(workers, mpps, "in-memory L2 path")
    details = ["| workers | Mpps (median) | speedup | ideal | efficiency |", "|---:|---:|---:|---:|---:|"]
    for n, m, i in zip(workers, mpps, ideal):
        details.append(f"| {n} | {m:.2f} | {m / mpps[0]:.2f} | {i / mpps[0]:.2f} | {100 * m / i:.0f} % |")
    return {"rows": rows, "details": "\n".join(details),
            "plot": {"kind": "scaling", "workers": workers, "unit": "Mpps",
                     "series": {"fastpath": mpps, "ideal (linear)": ideal}},
            "raw": {str(n): runs[n] for n in workers},
            "notes": [f"{os.cpu_count()} CPUs on this machine; {seconds:g} s per measurement, "
                      f"median of {ctx.reps}"
                      + ("; run at SCHED_FIFO priority (--rt)" if getattr(ctx, "rt", False) else "")]}


def daemon_has_workers():
    r = subprocess.run([sys.executable, "-m", "fastpath.cli", "run", "--help"], capture_output=True,
                       text=True, cwd=REPO, timeout=120)
    return "--workers" in r.stdout


def worker_cpus(n, ncpu, gen_core=0, switch_core=1):
    """CPUs for n workers: the switch core first, the generator's core last."""
    order = [switch_core] + [c for c in range(ncpu) if c not in (switch_core, gen_core)] + [gen_core]
    order = [c for c in dict.fromkeys(order) if 0 <= c < ncpu]
    return order[:max(1, min(n, len(order)))]


def section_scaling_e2e(ctx):
    e2e_available()
    if not daemon_has_workers():
        raise NotMeasured("`fastpath run --help` lists no --workers")
    import e2e
    workers = sorted(set(ctx.workers))
    ncpu = os.cpu_count() or 1
    fp, ceil, info = [], [], []
    for n in workers:
        cpus = worker_cpus(n, ncpu)
        argv = (["--short"] if ctx.quick else []) + [
            "--nice", str(ctx.nice), "--peers", "ceiling,fastpath", "--sizes", "64",
            "--flows", str(FLOWS), "--fastpath-args", f"--workers {n}",
            "--fastpath-cpus", ",".join(map(str, cpus))]
        args = e2e.parse_args(argv)
        rep = call_tool(e2e.run, args)
        by = {r["peer"]: r for r in rep["summary"]}
        if "delivered_pps" not in by.get("fastpath", {}):
            raise RuntimeError(f"fastpath with {n} workers gave no result")
        fp.append(by["fastpath"]["delivered_pps"] / 1e6)
        ceil.append(by["ceiling"]["delivered_pps"] / 1e6)
        info.append({"workers": n, "cpus": cpus, "shares_generator_core": args.gen_core in cpus,
                     "loadavg": [rep["meta"]["loadavg_start"], rep["meta"]["loadavg_end"]],
                     "summary": rep["summary"], "results": rep["results"]})
        log(f"scaling-e2e: {n} worker(s) on CPUs {cpus}: {fp[-1]:.3f} Mpps, ceiling {ceil[-1]:.3f}")
    rows, ideal = scaling_rows(workers, fp, f"64 B through veth, {FLOWS} flows")
    details = ["| workers | CPUs | delivered Mpps | speedup | ideal | ceiling Mpps (same run) | "
               "ratio to ceiling |", "|---:|---|---:|---:|---:|---:|---:|"]
    for k, n in enumerate(workers):
        details.append(f"| {n} | {','.join(map(str, info[k]['cpus']))}"
                       f"{' (shares the generator core)' if info[k]['shares_generator_core'] else ''} | "
                       f"{fp[k]:.3f} | {fp[k] / fp[0]:.2f} | {ideal[k] / fp[0]:.2f} | {ceil[k]:.3f} | "
                       f"{fp[k] / ceil[k]:.2f} |")
    notes = []
    if any(i["shares_generator_core"] for i in info):
        notes.append(f"with {ncpu} CPUs, some worker counts share the generator's core: "
                     "they cannot scale here")
    return {"rows": rows, "details": "\n".join(details),
            "plot": {"kind": "scaling", "workers": workers, "unit": "Mpps",
                     "series": {"fastpath": fp, "ideal (linear)": ideal, "raw veth ceiling": ceil}},
            "raw": info, "notes": notes}


RUNNERS = {"graph": section_graph, "l2": section_l2, "e2e": section_e2e, "tcp": section_tcp,
           "vpn-tcp": section_vpn_tcp, "ike": section_ike, "esp": section_esp,
           "vm": section_vm, "scaling": section_scaling, "scaling-e2e": section_scaling_e2e}


# ---------------------------------------------------------------- machine

def machine_info():
    model = None
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    os_name = None
    with contextlib.suppress(OSError):
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip().strip('"')
    commit = None
    with contextlib.suppress(OSError):               # the checkout's commit, read (not git)
        head = open(os.path.join(REPO, ".git", "HEAD")).read().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            path = os.path.join(REPO, ".git", ref)
            if os.path.exists(path):
                commit = open(path).read().strip()
            else:
                for line in open(os.path.join(REPO, ".git", "packed-refs")):
                    if line.strip().endswith(" " + ref):
                        commit = line.split()[0]
        else:
            commit = head
    versions = {"python": platform.python_version()}
    for mod in ("numpy", "cryptography", "matplotlib"):
        with contextlib.suppress(Exception):
            versions[mod] = __import__(mod).__version__
    return {"cpu_model": model or platform.processor() or "unknown CPU",
            "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "kernel": platform.release(), "os": os_name, "machine": platform.machine(),
            "versions": versions, "commit": commit,
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}


def machine_line(m):
    return (f"{m['cpu_model']}, {m['cpus']} CPU{'s' if m['cpus'] != 1 else ''}, Linux {m['kernel']}"
            f"{', ' + m['os'] if m.get('os') else ''}, Python {m['versions']['python']}; "
            f"{m['date']}; load average {' / '.join(f'{x:.2f}' for x in m['loadavg_before'])} before, "
            f"{' / '.join(f'{x:.2f}' for x in m['loadavg_after'])} after")


# ---------------------------------------------------------------- running

def run_report(args):
    ctx = argparse.Namespace(quick=args.quick, reps=1 if args.quick else 3, nice=args.nice,
                             workers=args.workers, rt=getattr(args, "rt", False))
    machine = machine_info()
    machine["loadavg_before"] = loadavg()
    t0 = time.monotonic()
    sections = []
    for name in args.only:
        log(f"{name}: {TITLES[name]} ...")
        s = {"name": name, "title": TITLES[name],
             "method": METHODS[name].format(flows=FLOWS), "loadavg_before": loadavg()}
        t = time.monotonic()
        try:
            res = RUNNERS[name](ctx)
            s.update(res)
            s["status"] = "measured"
        except NotMeasured as exc:
            s.update(status="not measured", reason=str(exc))
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:          # noqa: BLE001  (one section's failure is reported)
            s.update(status="failed", reason=f"{type(exc).__name__}: {exc}".strip(),
                     traceback=traceback.format_exc())
            log(s["traceback"])
        s["seconds"] = round(time.monotonic() - t, 1)
        s["loadavg_after"] = loadavg()
        log(f"{name}: {s['status']}{': ' + s['reason'] if s.get('reason') else ''} ({s['seconds']:g} s)")
        sections.append(s)
    machine["loadavg_after"] = loadavg()
    return {"machine": machine, "mode": "quick" if args.quick else "full",
            "command": "python3 -m bench.report " + " ".join(args.argv),
            "seconds": round(time.monotonic() - t0, 1), "sections": sections}


# ---------------------------------------------------------------- output

def fmt_value(v, unit):
    if v is None:
        return "–"
    if unit.startswith("kpps"):
        return f"{v:,.0f} {unit}"
    digits = 3 if abs(v) < 0.1 else 2 if abs(v) < 10 else 1
    return f"{v:,.{digits}f} {unit}"


def fmt_ratio(r):
    if r is None:
        return "–"
    return f"{r:.0f}×" if r >= 100 else f"{r:.1f}×" if r >= 10 else f"{r:.2f}×"


def summary_table(report):
    lines = ["| section | measurement | fastpath | baseline (same run) | ratio |",
             "|---|---|---:|---|---:|"]
    for s in report["sections"]:
        if s["status"] != "measured":
            lines.append(f"| {s['name']} | {s['status']}: {s.get('reason', '')} | | | |")
            continue
        for r in s["rows"]:
            if "not_measured" in r:
                lines.append(f"| {s['name']} | {r['what']} | not measured: {r['not_measured']} | | |")
                continue
            lines.append(f"| {s['name']} | {r['what']} | {fmt_value(r['fastpath'], r['unit'])} | "
                         f"{r['baseline_name']}: {fmt_value(r['baseline'], r['unit'])} | "
                         f"**{r.get('ratio_text') or fmt_ratio(r['ratio'])}** |")
    return "\n".join(lines)


def markdown(report, images):
    m = report["machine"]
    out = [f"# fastpath benchmark report ({report['mode']})", "",
           f"Machine: {machine_line(m)}. Wall time {report['seconds']:g} s"
           f"{', commit ' + m['commit'][:12] if m.get('commit') else ''}.", "",
           "Every ratio is fastpath's speed divided by the baseline's, both measured in this run on "
           "this machine (> 1: fastpath is faster; for ns figures, the baseline's time divided by "
           "fastpath's). Absolute figures hold only for this machine at this load.", ""]
    if report["mode"] == "quick":
        out += ["*Quick mode: short single trials, to check that the report works. Not for quoting.*", ""]
    out += [summary_table(report), ""]
    if images.get("summary"):
        out += [f"![all ratios]({images['summary']})", ""]
    for s in report["sections"]:
        out += [f"## {s['name']}: {s['title']}", "", s["method"], ""]
        if s["status"] != "measured":
            out += [f"**{s['status']}: {s.get('reason', '')}**", ""]
            continue
        out += [f"Load average {s['loadavg_before']} before, {s['loadavg_after']} after; "
                f"{s['seconds']:g} s.", ""]
        for n in s.get("notes", []):
            out += [f"- {n}"]
        if s.get("notes"):
            out.append("")
        if s.get("details"):
            out += [s["details"], ""]
        if images.get(s["name"]):
            out += [f"![{s['name']}]({images[s['name']]})", ""]
    return "\n".join(out)


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_ratios(path, title, subtitle, bars):
    """Horizontal bars of fastpath ÷ baseline, a line at 1."""
    plt = _plt()
    labels = [b[0] for b in bars][::-1]
    values = [b[1] for b in bars][::-1]
    colors = [b[2] if len(b) > 2 else "C0" for b in bars][::-1]
    fig, ax = plt.subplots(figsize=(8, 1.6 + 0.42 * len(bars)))
    ax.barh(range(len(values)), values, color=colors)
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels)
    ax.axvline(1.0, color="k", lw=1, ls="--")
    lo, hi = min(values + [1.0]), max(values + [1.0])
    if hi / lo > 30:
        ax.set_xscale("log")
    ax.set_xlim(right=hi * (3 if hi / lo > 30 else 1.18))
    for k, v in enumerate(values):
        ax.text(v, k, " " + fmt_ratio(v), va="center", fontsize=9)
    ax.set_xlabel("fastpath ÷ baseline, measured in the same run (> 1: fastpath faster)")
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_scaling(path, title, subtitle, spec):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    w = spec["workers"]
    styles = {"fastpath": dict(marker="o", lw=2), "ideal (linear)": dict(ls="--", color="gray"),
              "raw veth ceiling": dict(ls=":", marker="s", color="C3")}
    for name, ys in spec["series"].items():
        ax.plot(w, ys, label=name, **styles.get(name, {}))
    ax.set_xticks(w)
    ax.set_xlabel("workers")
    ax.set_ylabel(spec.get("unit", "Mpps"))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{title}\n{subtitle}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_plots(report, out):
    """One PNG per measured section and summary.png; returns {section: file name}."""
    m = report["machine"]
    subtitle = (f"{m['cpu_model']}, {m['cpus']} CPUs, Linux {m['kernel']}, {m['date'][:16]}, "
                f"load {m['loadavg_before'][0]:.2f}→{m['loadavg_after'][0]:.2f}"
                + (" (quick)" if report["mode"] == "quick" else ""))
    images, every = {}, []
    for k, s in enumerate(report["sections"]):
        if s["status"] != "measured":
            continue
        name = f"{s['name']}.png"
        bars = [(r["label"], r["ratio"]) for r in s["rows"] if r.get("ratio")]
        if s.get("plot", {}).get("kind") == "scaling":
            plot_scaling(os.path.join(out, name), s["title"], subtitle, s["plot"])
        elif bars:
            plot_ratios(os.path.join(out, name), s["title"], subtitle, bars)
        else:
            continue
        images[s["name"]] = name
        every += [(f"{s['name']}: {r['label']}", r["ratio"], f"C{k % 10}") for r in s["rows"]
                  if r.get("ratio") and not r.get("is_baseline")]
    if every:
        plot_ratios(os.path.join(out, "summary.png"), "fastpath against its baselines", subtitle, every)
        images["summary"] = "summary.png"
    return images


def write_outputs(report, out):
    os.makedirs(out, exist_ok=True)
    images = write_plots(report, out)
    report["images"] = images
    with open(os.path.join(out, "report.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(report, images))
    return images


def fill_marker(text, name, content):
    """Put content between <!-- report:NAME --> and <!-- /report:NAME --> (the closing
    marker is added when missing)."""
    opening, closing = f"<!-- report:{name} -->", f"<!-- /report:{name} -->"
    if opening not in text:
        raise SystemExit(f"report: the README has no {opening} marker")
    block = f"{opening}\n{content}\n{closing}"
    if closing in text:
        return re.sub(re.escape(opening) + r".*?" + re.escape(closing), lambda _: block, text,
                      count=1, flags=re.S)
    return text.replace(opening, block, 1)


def update_readme(report, out, readme):
    """The summary table and the plots into the README; the plots copied to docs/bench/
    next to it."""
    base = os.path.dirname(os.path.abspath(readme))
    dest = os.path.join(base, "docs", "bench")
    os.makedirs(dest, exist_ok=True)
    images = report.get("images", {})
    for name in [f"{s}.png" for s in SECTIONS + ("summary",)]:
        if name not in images.values() and os.path.exists(os.path.join(dest, name)):
            os.remove(os.path.join(dest, name))         # a plot of an earlier run
    for name in images.values():
        shutil.copy(os.path.join(out, name), os.path.join(dest, name))
    rel = os.path.relpath(dest, base)
    m = report["machine"]
    table = (f"Measured with `{report['command']}` ({report['mode']} mode) on {machine_line(m)}.\n\n"
             + summary_table(report))
    plots = []
    if images.get("summary"):
        plots.append(f"![fastpath against its baselines]({rel}/summary.png)")
    others = [f"[{k}]({rel}/{v})" for k, v in images.items() if k != "summary"]
    if others:
        plots.append("Per section: " + ", ".join(others) + ".")
    text = open(readme).read()
    text = fill_marker(text, "table", table)
    text = fill_marker(text, "plot", "\n\n".join(plots) or "_no plot: nothing was measured_")
    with open(readme, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- command line

def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python3 -m bench.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="sections: " + ", ".join(SECTIONS))
    p.add_argument("--out", default="bench-report", help="output directory (default bench-report/)")
    p.add_argument("--quick", action="store_true", help="every section briefly (checks; not for quoting)")
    p.add_argument("--only", default=",".join(SECTIONS), metavar="SECTION,...",
                   help=f"sections to run (default all: {','.join(SECTIONS)})")
    p.add_argument("--workers", default=None, metavar="N,...",
                   help="worker counts for the scaling sections (default 1..CPUs)")
    p.add_argument("--rt", action="store_true",
                   help="the in-memory scaling section at SCHED_FIFO priority (bench/scaling.py --rt)")
    p.add_argument("--nice", type=int, default=0,
                   help="bench/e2e.py's and bench/vm.py's --nice for their processes (default 0)")
    p.add_argument("--readme", nargs="?", const=os.path.join(REPO, "README.md"), default=None,
                   metavar="README", help="also fill README.md's report markers (plots to docs/bench/)")
    p.add_argument("--from-json", metavar="REPORT.json",
                   help="redo the outputs from a saved report.json instead of measuring")
    args = p.parse_args(argv)
    args.argv = argv
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    for s in args.only:
        if s not in SECTIONS:
            p.error(f"--only: unknown section {s!r} (known: {', '.join(SECTIONS)})")
    if args.workers is None:
        args.workers = list(range(1, (os.cpu_count() or 1) + 1))
    else:
        try:
            args.workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
        except ValueError:
            p.error("--workers: a list of numbers, e.g. 1,2")
        if not args.workers or min(args.workers) < 1:
            p.error("--workers: each at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        _plt()
    except ImportError:
        raise SystemExit("report: matplotlib is needed (pip install -e '.[bench]', or scripts/setup.sh)") from None

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)       # unwinds bench/e2e.py's ExitStack: all is removed

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        # saved JSON turns the plot's int keys into strings; nothing below needs them
    else:
        report = run_report(args)
    write_outputs(report, args.out)
    if args.readme:
        update_readme(report, args.out, args.readme)
    print(f"# fastpath benchmark report ({report['mode']}), {machine_line(report['machine'])}\n")
    print(summary_table(report))
    print(f"\n{os.path.join(args.out, 'report.md')}, report.json and the plots written"
          + (f"; {args.readme} updated" if args.readme else ""))
    return 1 if any(s["status"] == "failed" for s in report["sections"]) else 0


if __name__ == "__main__":
    sys.exit(main())
