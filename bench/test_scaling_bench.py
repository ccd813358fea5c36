"""The in-memory L2 path (64 B, 1 000 known stations each side) on 1 and 2 workers, each
worker a thread with its own generator, one shared bridge and MAC table (bench/scaling.py).
The figure is the ratio of 2 workers to 1, both measured in this run. FASTPATH_BENCH_RT=1
runs them at SCHED_FIFO priority (see bench/scaling.py --rt): on a shared machine the
other jobs otherwise decide how much CPU a second worker gets."""
import os

import pytest

from figures import RESULTS, record
from scaling import CHUNK, L2Run, set_realtime


@pytest.fixture
def realtime():
    if os.environ.get("FASTPATH_BENCH_RT") == "1":
        set_realtime()
        yield True
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    else:
        yield False


@pytest.mark.parametrize("workers", [1, 2])
def test_l2_path_64b_workers(benchmark, workers, realtime):
    run = L2Run(workers)
    packets = CHUNK * 16           # ~20 ms a round at 12 Mpps: longer than a scheduler slice
    try:
        benchmark.pedantic(run.round, args=(packets,), rounds=10 if not benchmark.disabled else 1,
                           warmup_rounds=1 if not benchmark.disabled else 0)
    finally:
        run.close()
    record(benchmark, f"l2_path_64b_{workers}_workers", packets)
    benchmark.extra_info["workers"] = workers
    benchmark.extra_info["cpus"] = os.cpu_count()
    benchmark.extra_info["sched_fifo"] = realtime
    one = RESULTS.get("l2_path_64b_1_workers")
    if workers > 1 and one and not benchmark.disabled:
        benchmark.extra_info["speedup_vs_1_worker"] = round(
            RESULTS[f"l2_path_64b_{workers}_workers"]["mpps"] / one["mpps"], 2)
