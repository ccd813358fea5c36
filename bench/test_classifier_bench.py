"""The OpenFlow classifier (tuple space search, fastpath/nodes/classifier.pyx) with 1,
1 000 and 100 000 rules of a Faucet-like eth_dst table (eth_dst + vlan_vid exact, a
masked multicast rule above them, a priority-0 miss rule: three masks), next to a naive
Python classifier (a dict per mask, probed in priority order) over the same rules and
keys, in the same run; and the whole pipeline (in-memory ports, table 0 -> table 1 with
those rules -> output) at the same sizes, beside the NORMAL learning switch forwarding the
same frames (ratio_to_normal)."""
import random

import numpy as np
import pytest
from figures import RESULTS, record
from scapy.layers.l2 import Dot1Q, Ether

from fastpath import ofsyntax
from fastpath.nodes.classifier import Classifier
from fastpath.nodes.flowtable import match_words
from fastpath.switch import Switch
from test_openflow_bench import run_rounds

LOOKUPS = 256 * 400
SIZES = (1, 1_000, 100_000)
VLAN = 10
MAC_ALL = (1 << 48) - 1


def host_mac(i):
    return 0x0e0000000000 + i


def rules(n):
    """[(priority, Match)]: n hosts, the multicast rule, the miss rule."""
    out = [(9000, ofsyntax.Match(dl_dst=(1 << 40, 1 << 40)))]
    out += [(8000, ofsyntax.Match(dl_vlan=VLAN, dl_dst=(host_mac(i), MAC_ALL))) for i in range(n)]
    out.append((0, ofsyntax.Match()))
    return out


def keys(n, count=4096):
    """Keys of frames to known hosts, as flow_key lays them out."""
    rng = random.Random(1)
    out = np.zeros((count, 10), dtype=np.uint64)
    for row in range(count):
        m = ofsyntax.Match(dl_vlan=VLAN, dl_dst=(host_mac(rng.randrange(n)), MAC_ALL))
        out[row] = match_words(m, -1)[0]
    return out


class PythonClassifier:
    """The naive baseline: {mask: {masked key: (priority, rule)}}, masks by priority."""

    def __init__(self):
        self.tables = {}

    def insert(self, rule, priority, value, mask):
        best = self.tables.setdefault(mask, {})
        key = tuple(v & m for v, m in zip(value, mask))
        if key not in best or best[key][0] < priority:
            best[key] = (priority, rule)
        self.order = None

    def lookup(self, key):
        if self.order is None:
            self.order = sorted(self.tables.items(),
                                key=lambda kv: -max(p for p, _ in kv[1].values()))
        hit, prio = -1, -1
        for mask, table in self.order:
            found = table.get(tuple(k & m for k, m in zip(key, mask)))
            if found and found[0] > prio:
                prio, hit = found
        return hit


@pytest.fixture(scope="module", params=SIZES, ids=lambda n: f"{n}rules")
def loaded(request):
    n = request.param
    cls, py = Classifier(), PythonClassifier()
    for rid, (prio, m) in enumerate(rules(n)):
        value, mask = match_words(m, -1)
        cls.insert(rid, prio, value, mask)
        py.insert(rid, prio, value, mask)
    return n, cls, py, keys(n)


def test_classifier_lookups(benchmark, loaded):
    n, cls, py, ks = loaded
    batch = np.ascontiguousarray(np.tile(ks, (LOOKUPS // len(ks), 1)))
    assert cls.n_subtables == 3
    # the same answers as the naive classifier
    for row in ks[:200]:
        key = tuple(int(x) for x in row)
        assert cls.lookup_words(key) == py.lookup(key)
    hits = benchmark.pedantic(cls.lookup_many, args=(batch,), rounds=10, warmup_rounds=1)
    assert hits == len(batch)
    record(benchmark, f"classifier_{n}_rules", len(batch))
    benchmark.extra_info["rules"] = n + 2
    if not benchmark.disabled:
        # the baseline in the same run: a few thousand lookups are enough to time it
        import time
        sample = [tuple(int(x) for x in row) for row in ks]
        t0 = time.perf_counter()
        for key in sample:
            py.lookup(key)
        py_rate = len(sample) / (time.perf_counter() - t0)
        rate = len(batch) / benchmark.stats.stats.median
        benchmark.extra_info["python_lookups_per_s"] = round(py_rate)
        benchmark.extra_info["lookups_per_s"] = round(rate)
        benchmark.extra_info["ratio_to_python"] = round(rate / py_rate, 1)


def frames_to_hosts(n):
    rng = random.Random(2)
    return [bytes(Ether(src="02:00:00:00:00:01", dst=ofsyntax.int_to_mac(host_mac(rng.randrange(n))))
                  / Dot1Q(vlan=VLAN) / bytes(42)) for _ in range(256)]


def test_normal_path_same_frames(benchmark):
    """The baseline in the same run: the NORMAL learning switch (no flows) forwarding the
    same frames to learned hosts (1 000 of them) on a trunk."""
    sw = Switch(n_buffers=8192)
    sw.add_br("br0")
    p1 = sw.add_port("br0", "p1", type="pg", **{"options:keep": False})
    p2 = sw.add_port("br0", "p2", type="pg", **{"options:keep": False})
    hosts = [bytes(Ether(src=ofsyntax.int_to_mac(host_mac(i)), dst="02:00:00:00:00:01")
                   / Dot1Q(vlan=VLAN) / bytes(42)) for i in range(1000)]
    p2.io[0].load(hosts)
    sw.graph.run_until_idle()
    packets = run_rounds(benchmark, sw, p1, p2, frames_to_hosts(1000))
    record(benchmark, "normal_path_1000_hosts", packets)


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"{n}rules")
def test_pipeline_two_tables(benchmark, n):
    """64-byte frames through pg-input -> ethernet-input -> flow-classify (table 0: in_port
    -> goto 1; table 1: the eth_dst rules -> output) -> interface-output -> pg-output."""
    sw = Switch(n_buffers=8192)
    sw.add_br("br0")
    p1 = sw.add_port("br0", "p1", type="pg", **{"options:keep": False})
    p2 = sw.add_port("br0", "p2", type="pg", **{"options:keep": False})
    flows = sw.bridge("br0").flows
    sw.del_flows("br0")
    flows.add("table=0,in_port=1 actions=goto_table:1")
    for prio, m in rules(n):
        flows.add_rule(ofsyntax.FlowRule(prio, m, [ofsyntax.Action("output", 2)], 0, 1))
    sw.apply_flows("br0")
    packets = run_rounds(benchmark, sw, p1, p2, frames_to_hosts(n))
    record(benchmark, f"pipeline_{n}_rules", packets)
    normal = RESULTS.get("normal_path_1000_hosts")
    if normal and not benchmark.disabled:
        benchmark.extra_info["ratio_to_normal"] = round(benchmark.extra_info["mpps"] / normal["mpps"], 2)
    for r in sw.graph.runtime():
        if r["name"] == "flow-classify":
            benchmark.extra_info["ns/packet flow-classify"] = round(r["ns_per_packet"], 2)
