"""bench/tcp.py under pytest: iperf3 TCP and low-load ping RTT between two hosts through
fastpath and through a Linux bridge in the same run, veths with default offloads. In CI
it checks that TCP flows through both (a stall would show 0) and records the figures;
the ratios are what the report prints, not assertions."""
import math

import pytest

import tcp

pytestmark = pytest.mark.root


def test_tcp_throughput_and_rtt_vs_linux_bridge(benchmark):
    report = benchmark.pedantic(tcp.run, kwargs={"seconds": 1, "rounds": 1}, rounds=1, iterations=1)
    best = report["best"]
    for peer in ("linux-bridge", "fastpath"):
        assert best[peer]["tcp1"] > 0.05 and best[peer]["tcp4"] > 0.05, best
        assert math.isfinite(best[peer]["rtt"]), best
    assert report["packets"] > 0
    lb, fp = best["linux-bridge"], best["fastpath"]
    benchmark.extra_info.update({
        "packets": report["packets"],
        "gbps": round(fp["tcp1"], 3), "gbps_4_streams": round(fp["tcp4"], 3),
        "linux_bridge_gbps": round(lb["tcp1"], 3), "linux_bridge_gbps_4_streams": round(lb["tcp4"], 3),
        "ratio_tcp1_to_linux_bridge": round(fp["tcp1"] / lb["tcp1"], 3),
        "ratio_tcp4_to_linux_bridge": round(fp["tcp4"] / lb["tcp4"], 3),
        "rtt_ms": fp["rtt"], "linux_bridge_rtt_ms": lb["rtt"],
        "rtt_above_linux_bridge_ms": round(fp["rtt"] - lb["rtt"], 4)})
    print("\n" + report["table"])
