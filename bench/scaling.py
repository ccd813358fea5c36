"""Scaling with workers: the in-memory L2 path (64-byte frames, 1 000 known stations each
side, VLAN 10) run by 1, 2, ... workers at once, each worker on its own thread with its
own looping packet generator, all sharing one bridge and one MAC table.

    python3 -m bench.scaling [--workers 1,2] [--seconds 3] [--rt]

prints Mpps per worker count and the speed-up against one worker measured in the same run.
"""
import argparse
import os
import sys
import threading
import time

from scapy.layers.l2 import Ether

from fastpath.switch import Switch

MACS = 1000
CHUNK = 256 * 64           # frames a worker's generator is given at a time


def macs(prefix):
    return [f"02:00:00:{prefix:02x}:{i >> 8:02x}:{i & 0xff:02x}" for i in range(MACS)]


def traffic():
    """Frames from 1000 stations behind p1 to 1000 stations behind p2, all known."""
    a, b = macs(1), macs(2)
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
    fwd, rev = traffic()
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


class L2Run:
    """The switch of build() with every worker, worker 0 included, running its compiled
    loop (Graph.run_worker) on a thread of its own; the calling thread only feeds the
    generators and reads counters. round(packets) offers exactly `packets` frames, spread
    evenly over the workers, and returns once all of them have left on p2."""

    def __init__(self, workers):
        self.sw, self.p1, self.p2 = build(workers)
        self.gens = [io[0] for io in self.p1.ios]
        for g in self.sw.graphs:
            # busy-poll, as VPP's workers do: an in-memory generator has no fd to wake a
            # sleeping worker
            g.idle_spins = 1 << 30
        self.sw.start_workers(setup=below_me)

        def worker0():
            below_me()
            self.sw.graph.run_worker(self.sw.barrier, 0)
        self.main = threading.Thread(target=worker0, daemon=True)
        self.main.start()
        self.offered = 0

    def round(self, packets):
        target = delivered(self.p2) + packets
        share = packets // len(self.gens)
        for k, g in enumerate(self.gens):
            g.limit += share + (packets - share * len(self.gens) if k == 0 else 0)
        self.offered += packets
        deadline = time.perf_counter() + 30
        while delivered(self.p2) < target:
            time.sleep(0.0001)
            if time.perf_counter() > deadline:
                raise AssertionError(f"{packets} frames offered, {delivered(self.p2) - target + packets} delivered")
        return packets

    def run_for(self, seconds):
        """Let the generators loop freely for `seconds`; returns (frames delivered, elapsed)."""
        budget = 1 << 40
        for g in self.gens:
            g.limit += budget
        self.offered += budget * len(self.gens)
        time.sleep(0.2)                             # warm up
        base, t0 = delivered(self.p2), time.perf_counter()
        time.sleep(seconds)
        return delivered(self.p2) - base, time.perf_counter() - t0

    def close(self):
        """Stop every loop, then check that every frame given out arrived and every buffer
        is back in its pool."""
        self.sw.graph.stop()
        self.main.join()
        self.sw.stop_workers()
        for g in self.gens:                 # what the generators did not give out yet
            self.offered -= g.limit
            g.limit = 0
        for g in self.sw.graphs:
            g.run_until_idle()
        got = delivered(self.p2) - MACS
        assert got == self.offered, f"{self.offered} frames offered, {got} delivered"
        assert self.sw.errors() == [], self.sw.errors()
        for g in self.sw.graphs:
            g.pool.check_accounting(0)
        self.sw.close()


def l2_inmemory(workers, seconds=2.0):
    """Run the L2 path on `workers` workers for about `seconds`, free-running; returns
    {'mpps', 'packets', 'seconds', 'workers'}. Every frame offered must arrive (all unicast
    to known stations)."""
    run = L2Run(workers)
    try:
        got, elapsed = run.run_for(seconds)
    finally:
        run.close()
    return {"workers": workers, "packets": got, "seconds": elapsed, "mpps": got / elapsed / 1e6}


def set_realtime(priority=11):
    """SCHED_FIFO for this thread and the worker threads it starts later (which below_me
    puts one step lower). Under Linux's autogroup scheduling a process gets one share of
    the CPUs however many threads it runs, so on a loaded machine a second worker would
    only split the first one's time."""
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))


def below_me():
    """Called first thing in a worker thread: under SCHED_FIFO, one step below the thread
    that started it. Busy-polling workers never yield, so the thread that watches them must
    outrank them to ever wake up again."""
    if os.sched_getscheduler(0) == os.SCHED_FIFO:
        os.sched_setparam(0, os.sched_param(os.sched_getparam(0).sched_priority - 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workers", default="1,2", help="worker counts to measure (default 1,2)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs per count; the median is kept")
    ap.add_argument("--rt", action="store_true",
                    help="run at SCHED_FIFO priority 10 (root), so that other jobs on a shared "
                         "machine do not decide how much CPU the second worker gets")
    args = ap.parse_args(argv)
    if args.rt:
        set_realtime()
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
