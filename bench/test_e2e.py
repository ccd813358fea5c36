"""bench/e2e.py --short under pytest: generator -> veth -> switch -> veth -> sink for the
raw veth ceiling, the Linux bridge, Open vSwitch's userspace datapath and fastpath, at 64
and 1518 bytes, one ~2 s trial each.

This is the CI path: it checks that the structure works (every peer delivered frames,
fastpath delivered exactly the frames that were sent, untagged, and learned both
stations), never how fast. Rates go to pytest-benchmark's extra_info (packets, mpps,
ratio_to_ceiling per peer and size) when benchmarks are enabled.
"""
import pytest

import e2e
from netns import can_run

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not can_run(), reason="needs root, veth and network namespaces")]


def test_e2e_short(benchmark):
    args = e2e.parse_args(["--short"])
    report = benchmark.pedantic(e2e.run, args=(args,), rounds=1, iterations=1)
    print("\n" + report["table"])

    rows = {(r["peer"], r["size"]): r for r in report["summary"]}
    results = {(r["peer"], r["size"]): r for r in report["results"]}
    for size in args.sizes:
        for peer in args.peers:
            row = rows[(peer, size)]
            if "skipped" in row:            # OVS not installed here: a row says so
                assert peer == "ovs", row
                continue
            r = results[(peer, size)]
            assert r["sent"] > 0, r
            assert r["received"] > 0, f"{peer} delivered nothing at {size} B: {r}"
            # whatever a switch delivers is what the generator sent, untouched
            assert r["unexpected"] == 0, r
            assert r["tagged"] == 0, r
            benchmark.extra_info[f"{peer} {size}B packets"] = r["received"]
            benchmark.extra_info[f"{peer} {size}B mpps"] = round(r["delivered_pps"] / 1e6, 4)
            if "ratio_to_ceiling" in row:
                benchmark.extra_info[f"{peer} {size}B ratio_to_ceiling"] = round(row["ratio_to_ceiling"], 3)

        fp = results[("fastpath", size)]
        assert fp["expected"] == fp["received"] > 0, fp
        assert fp["received"] <= fp["sent"], fp
        extra = fp["extra"]
        assert extra["errors"] == [], extra["errors"]
        # both stations learned, on the ports they are behind (1 = towards the generator)
        fdb = {line.split()[2]: line.split()[0] for line in extra["fdb"].splitlines()[1:]}
        assert fdb.get(e2e.GEN_MAC) == "1" and fdb.get(e2e.SINK_MAC) == "2", extra["fdb"]
        # every frame it delivered went through the graph and out of the sink-side port
        sent_out = extra["interfaces"][extra["ports"]["out"]]["tx_packets"]
        assert sent_out >= fp["received"], extra["interfaces"]
    benchmark.extra_info["table"] = report["table"]
