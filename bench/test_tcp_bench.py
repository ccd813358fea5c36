"""bench/tcp.py under pytest: iperf3 TCP and low-load ping RTT between two hosts through
fastpath, a Linux bridge and Open vSwitch's userspace datapath (netdev, AF_PACKET ports) in
the same run, veths with default offloads -- and Open vSwitch once more at its best setting,
every offload off on every veth for its turn only (ovs-offloads-off). In CI it checks that
TCP flows through fastpath, the Linux bridge and the best Open vSwitch (a stall would show 0)
and records the figures; Open vSwitch userspace stalls TCP with default offloads (0 Gbit/s,
a figure like any other), so for it only that the run produced numbers. The ratios and
issue #14's targets (>= 0.75x the Linux bridge, >= 5x the best OVS) are what the report
prints, not assertions."""
import math

import pytest

import tcp

pytestmark = pytest.mark.root


def rounded(x, digits=3):
    return None if x is None else round(x, digits)


def test_tcp_throughput_and_rtt_vs_linux_bridge_and_ovs(benchmark):
    # seconds=1, rounds=1: four peers, each ~2 s of ping and two 1 s iperf3 runs
    report = benchmark.pedantic(tcp.run, kwargs={"seconds": 1, "rounds": 1}, rounds=1, iterations=1)
    best = report["best"]
    for peer in ("linux-bridge", "fastpath"):
        assert best[peer]["tcp1"] > 0.05 and best[peer]["tcp4"] > 0.05, best
        assert math.isfinite(best[peer]["rtt"]), best
    assert report["packets"] > 0
    lb, fp = best["linux-bridge"], best["fastpath"]
    ratios = report["ratios"]
    benchmark.extra_info.update({
        "packets": report["packets"],
        "gbps": round(fp["tcp1"], 3), "gbps_4_streams": round(fp["tcp4"], 3),
        "linux_bridge_gbps": round(lb["tcp1"], 3), "linux_bridge_gbps_4_streams": round(lb["tcp4"], 3),
        "ratio_tcp1_to_linux_bridge": rounded(ratios["linux-bridge"]["tcp1"]),
        "ratio_tcp4_to_linux_bridge": rounded(ratios["linux-bridge"]["tcp4"]),
        "rtt_ms": fp["rtt"], "linux_bridge_rtt_ms": lb["rtt"],
        "rtt_above_linux_bridge_ms": round(fp["rtt"] - lb["rtt"], 4)})
    # and with --busy-poll-us 0: the dispatcher sleeps as soon as it is idle
    assert math.isfinite(fp["rtt_no_busy_poll"]), fp
    benchmark.extra_info.update({"rtt_no_busy_poll_ms": fp["rtt_no_busy_poll"],
                                 "rtt_no_busy_poll_above_linux_bridge_ms": round(fp["rtt_no_busy_poll"] - lb["rtt"], 4)})
    if "ovs" in report["not_measured"]:          # Open vSwitch not installed: says why
        assert report["not_measured"]["ovs"], report["not_measured"]
        benchmark.extra_info["ovs"] = "not measured: " + report["not_measured"]["ovs"]
    elif "ovs" in best:
        o = best["ovs"]
        for key in ("tcp1", "tcp4"):             # a number: 0 Gbit/s when TCP stalls
            assert isinstance(o[key], float) and o[key] >= 0, o
        assert isinstance(o["rtt"], float), o
        benchmark.extra_info.update({
            "ovs_gbps": round(o["tcp1"], 3), "ovs_gbps_4_streams": round(o["tcp4"], 3),
            "ratio_tcp1_to_ovs": rounded(ratios["ovs"]["tcp1"]),        # None against 0
            "ratio_tcp4_to_ovs": rounded(ratios["ovs"]["tcp4"]),
            "ovs_rtt_ms": o["rtt"], "rtt_above_ovs_ms": round(fp["rtt"] - o["rtt"], 4)})
    if tcp.OVS_BEST in report["not_measured"]:
        benchmark.extra_info["ovs_best"] = "not measured: " + report["not_measured"][tcp.OVS_BEST]
    else:
        o = best[tcp.OVS_BEST]
        assert report["ovs_best"] == tcp.OVS_BEST
        # with every offload off Open vSwitch userspace does pass TCP
        assert o["tcp1"] > 0.01 and o["tcp4"] > 0.01, o
        assert math.isfinite(o["rtt"]), o
        benchmark.extra_info.update({
            "ovs_best_setting": "ethtool -K tx off tso off gso off gro off on every veth",
            "ovs_best_gbps": round(o["tcp1"], 3), "ovs_best_gbps_4_streams": round(o["tcp4"], 3),
            "ratio_tcp1_to_ovs_best": rounded(ratios[tcp.OVS_BEST]["tcp1"]),
            "ratio_tcp4_to_ovs_best": rounded(ratios[tcp.OVS_BEST]["tcp4"]),
            "ovs_best_rtt_ms": o["rtt"], "rtt_above_ovs_best_ms": round(fp["rtt"] - o["rtt"], 4)})
    benchmark.extra_info["targets"] = [
        {**t, "ratio": rounded(t["ratio"])} for t in report["targets"]]
    print("\n" + report["table"])
