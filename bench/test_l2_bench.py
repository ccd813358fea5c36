"""The in-memory L2 path with 64-byte frames and 1 000 learned MACs, vector 256:
pg-input -> ethernet-input -> vlan-input -> l2-learn -> l2-fwd -> vlan-output ->
interface-output -> pg-output, next to a pure-Python switch doing the same."""
from figures import record

from fastpath.switch import Switch
from naive_switch import NaiveSwitch
from scaling import MACS, traffic

PACKETS = 256 * 100


def test_l2_path_64b(benchmark):
    sw = Switch(n_buffers=8192)
    sw.add_br("br0")
    p1 = sw.add_port("br0", "p1", type="pg", tag=10, **{"options:keep": False})
    p2 = sw.add_port("br0", "p2", type="pg", tag=10, **{"options:keep": False})
    fwd, rev = traffic()
    p2.io[0].load(rev)
    p1.io[0].load(fwd)
    sw.graph.run_until_idle()                       # learn both sides
    assert len(sw.bridge("br0").fdb) == 2 * MACS

    rounds = []

    p1.io[0].load(fwd, loop=True, limit=0)

    def round_():
        p1.io[0].limit = PACKETS            # re-arm the looping input: no reload per round
        sw.graph.run_until_idle()
        rounds.append(1)

    sent = p2.io[1].tx_packets
    benchmark.pedantic(round_, rounds=20, warmup_rounds=2)
    assert p2.io[1].tx_packets - sent == len(rounds) * PACKETS     # all unicast, none flooded
    assert sw.graph.errors() == []
    sw.graph.pool.check_accounting(0)
    record(benchmark, "l2_path_64b", PACKETS)
    for r in sw.graph.runtime():
        benchmark.extra_info[f"ns/packet {r['name']}"] = round(r["ns_per_packet"], 2)


def test_l2_path_naive_python(benchmark):
    sw = NaiveSwitch()
    sw.add_port(1, tag=10)
    sw.add_port(2, tag=10)
    fwd, rev = traffic()
    for f in rev:
        sw.forward(2, f)
    for f in fwd:
        sw.forward(1, f)

    def round_():
        n = 0
        while n < PACKETS:
            for f in fwd:
                n += len(sw.forward(1, f))
        return n

    assert benchmark.pedantic(round_, rounds=3, warmup_rounds=1) >= PACKETS
    record(benchmark, "l2_path_naive_python", PACKETS)
