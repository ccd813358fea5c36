"""Scaling with workers: the in-memory L2 path (64-byte frames, 1 000 known stations each
side, VLAN 10) run by 1, 2, ... workers at once, each worker on its own thread with its
own looping packet generator, all sharing one bridge and one MAC table.

    python3 -m bench.scaling [--workers 1,2] [--seconds 3]

prints Mpps per worker count and the speed-up against one worker measured in the same run.
"""
import argparse
import os
import sys
import time

from scapy.layers.l2 import Ether

from fastpath.switch import Switch

MACS = 1000
CHUNK = 256 * 64           # frames a worker's generator is given at a time


def _macs(prefix):
    return [f"02:00:00:{prefix:02x}:{i >> 8:02x}:{i & 0xff:02x}" for i in range(MACS)]


def _traffic():
    a, b = _macs(1), _macs(2)
    fwd = [bytes(Ether(src=a[i], dst=b[i], type=0x88b5) / bytes(50)) for i in range(MACS)]
    rev = [bytes(Ether(src=b[i], dst=a[i], type=0x88b5) / bytes(50)) for i in range(MACS)]
    return fwd, rev


def build(workers):
    """A switch with `workers` workers, bridge br0 with pg ports p1 and p2 on VLAN 10, both
    sides learned; p1's generator on every worker loops over its share of the stations."""
    sw = Switch(n_buffers=8192, workers=workers)
    sw.add_br("br0")
    p1 = sw.add_port("br0", "p1", type="pg", tag=10, **{"options:keep": False})
    p2 = sw.add_port("br0", "p2", type="pg", tag=10, **{"options:keep": False})
    fwd, rev = _traffic()
    p2.io[0].load(rev)
    p1.io[0].load(fwd)
    sw.graph.run_until_idle()
    assert len(sw.bridge("br0").fdb) == 2 * MACS
    for w in range(workers):
        # a flow (station pair) stays on one worker, as AF_PACKET fanout by hash does
        p1.ios[w][0].load(fwd[w::workers], loop=True, limit=0)
    return sw, p1, p2


def delivered(p2):
    return sum(io[1].tx_packets for io in p2.ios)


def l2_inmemory(workers, seconds=2.0):
    """Run the L2 path on `workers` workers for about `seconds`; returns {'mpps', 'packets',
    'seconds', 'workers'}. Every frame must arrive (all unicast to known stations)."""
    sw, p1, p2 = build(workers)
    gens = [io[0] for io in p1.ios]
    try:
        sw.start_workers()
        base = delivered(p2)
        t0 = time.perf_counter()
        deadline = t0 + seconds
        offered = 0
        while True:
            # keep every generator topped up; worker 0 is this thread
            for g in gens:
                if g.limit < CHUNK // 2:
                    g.limit += CHUNK
                    offered += CHUNK
            sw.graph.run_once()
            if time.perf_counter() >= deadline:
                break
        for g in gens:                   # stop offering; let the workers finish what they have
            offered -= g.limit
            g.limit = 0
        while delivered(p2) - base < offered and time.perf_counter() < deadline + 5:
            sw.graph.run_once()
        elapsed = time.perf_counter() - t0
        got = delivered(p2) - base
    finally:
        sw.stop_workers()
    assert got == offered, f"{offered} frames offered, {got} delivered"
    assert sw.errors() == [], sw.errors()
    for g in sw.graphs:
        g.pool.check_accounting(0)
    return {"workers": workers, "packets": got, "seconds": elapsed, "mpps": got / elapsed / 1e6}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per count; the median is kept")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",")]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    results = {}
    for n in counts:
        runs = sorted(l2_inmemory(n, args.seconds)["mpps"] for _ in range(args.repeat))
        results[n] = runs[len(runs) // 2]
        base = results[counts[0]]
        print(f"{n} workers: {results[n]:6.2f} Mpps  ({results[n] / base:.2f}x {counts[0]} worker"
              f"{'s' if counts[0] > 1 else ''})  runs {', '.join(f'{r:.2f}' for r in runs)}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
