"""The OpenFlow table: every match field and action, priority order, counters, errors."""
import pytest
from scapy.layers.l2 import Ether

from fastpath import ofsyntax
from fastpath.switch import ConfigError
from l2util import check_pools, frame, make_switch, send

Q, AD = 0x8100, 0x88a8
A, B = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
PORTS = {"p1": {}, "p2": {}, "p3": {"tag": 10}}     # ofports 1, 2, 3


def flows(*rules):
    sw = make_switch(PORTS)
    for r in rules:
        sw.add_flow("br0", r)
    return sw


def test_seed_example_strip_vlan_output():
    sw = flows("in_port=1 actions=strip_vlan,output:2")
    assert send(sw, "p1", frame([(Q, 10, 3)])) == {"p2": [bytes(frame())]}
    # output ignores the port's VLAN settings: only NORMAL applies them
    assert send(sw, "p1", frame()) == {"p2": [bytes(frame())]}


@pytest.mark.parametrize("actions,tags_in,expect", [
    ("strip_vlan,output:2", [(Q, 10, 0)], []),
    ("pop_vlan,output:2", [(AD, 100, 0), (Q, 10, 0)], [(Q, 10, 0)]),
    ("push_vlan:0x8100,output:2", [], [(Q, 0, 0)]),
    ("push_vlan:0x88a8,mod_vlan_vid:100,output:2", [(Q, 10, 2)], [(AD, 100, 2), (Q, 10, 2)]),
    ("mod_vlan_vid:20,output:2", [], [(Q, 20, 0)]),                 # pushes when untagged
    ("mod_vlan_vid:20,output:2", [(Q, 10, 5)], [(Q, 20, 5)]),
    ("mod_vlan_pcp:7,output:2", [(Q, 10, 0)], [(Q, 10, 7)]),
    ("mod_vlan_pcp:7,output:2", [], [(Q, 0, 7)]),
    ("output:p2", [(Q, 10, 0)], [(Q, 10, 0)]),                      # port by name
    ("2", [], []),                                                  # bare port number
])
def test_actions(actions, tags_in, expect):
    sw = flows(f"in_port=1 actions={actions}")
    assert send(sw, "p1", frame(tags_in)) == {"p2": [bytes(frame(expect))]}
    check_pools(sw)


def test_actions_apply_in_order_between_outputs():
    sw = flows("in_port=1 actions=output:2,mod_vlan_vid:30,output:3")
    assert send(sw, "p1", frame()) == {"p2": [bytes(frame())], "p3": [bytes(frame([(Q, 30, 0)]))]}
    check_pools(sw)


def test_flood_all_in_port_drop():
    sw = flows("in_port=1,dl_vlan=1 actions=flood", "in_port=1,dl_vlan=2 actions=all",
               "in_port=1,dl_vlan=3 actions=in_port", "in_port=1,dl_vlan=4 actions=drop",
               "in_port=1,dl_vlan=5 actions=output:1")
    for vid in (1, 2):
        f = bytes(frame([(Q, vid, 0)]))
        assert send(sw, "p1", f) == {"p2": [f], "p3": [f]}
    f = bytes(frame([(Q, 3, 0)]))
    assert send(sw, "p1", f) == {"p1": [f]}
    assert send(sw, "p1", frame([(Q, 4, 0)])) == {}
    assert send(sw, "p1", frame([(Q, 5, 0)])) == {}
    errors = {r: c for c, n, r, _ in sw.errors()}
    assert errors == {"flow_drop": 1, "in_port_output": 1}


def test_normal_action_applies_port_vlans():
    sw = flows("in_port=2 actions=mod_vlan_vid:10,normal")
    assert send(sw, "p2", frame(src=B)) == {"p1": [bytes(frame([(Q, 10, 0)], src=B))],
                                            "p3": [bytes(frame(src=B))]}


@pytest.mark.parametrize("match,hit,miss", [
    ("dl_src=00:00:00:00:00:0a", frame(src=A), frame(src=B)),
    ("dl_dst=00:00:00:00:00:0b", frame(dst=B), frame(dst=A)),
    ("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00", frame(), frame(dst=B)),
    ("dl_src=00:00:00:00:00:00/ff:ff:ff:ff:ff:f0", frame(src=A), frame(src="00:00:00:00:01:0a")),
    ("dl_type=0x88b5", frame([(Q, 10, 0)]), Ether(dst="ff:ff:ff:ff:ff:ff", type=0x0800) / bytes(46)),
    ("dl_vlan=10", frame([(Q, 10, 0)]), frame([(Q, 11, 0)])),
    ("dl_vlan=0xffff", frame(), frame([(Q, 0, 0)])),
    ("dl_vlan_pcp=5", frame([(Q, 10, 5)]), frame([(Q, 10, 4)])),
    ("in_port=p1", frame(), None),
])
def test_matches(match, hit, miss):
    sw = flows(f"priority=100,{match} actions=output:2", "priority=50 actions=drop")
    assert send(sw, "p1", hit) == {"p2": [bytes(hit)]}
    if miss is not None:
        assert send(sw, "p1", miss) == {}


def test_priority_order_and_counters():
    sw = flows("priority=10,in_port=1 actions=output:2", "priority=20,in_port=1,dl_vlan=10 actions=output:3")
    send(sw, "p1", frame([(Q, 10, 0)]), frame([(Q, 10, 0)]), frame([(Q, 11, 0)]))
    dump = sw.dump_flows("br0")
    assert "priority=20,in_port=1,dl_vlan=10" in dump[0] and "n_packets=2" in dump[0]
    assert f"n_bytes={2 * len(frame([(Q, 10, 0)]))}" in dump[0]
    assert "priority=10,in_port=1" in dump[1] and "n_packets=1" in dump[1]
    assert "priority=0" in dump[2] and "n_packets=0" in dump[2]


def test_rules_with_the_same_actions_share_a_program_and_still_change_alone():
    """Rules with the same actions share one compiled program, which the classifier's slot
    points at (the packet path never reads the rule itself). A FLOW_MOD modify of one rule,
    or the delete of a rule that shadowed another with the same match, leaves each rule
    doing what it says."""
    sw = flows("priority=10,dl_vlan=10 actions=output:2", "priority=10,dl_vlan=11 actions=output:2",
               "priority=20,dl_vlan=12 actions=output:2", "priority=5,dl_vlan=12 actions=output:3")
    ft = sw.bridge("br0").flows
    v10, v11, v12 = (frame([(Q, v, 0)]) for v in (10, 11, 12))

    def where(*frames):
        return {p: len(out) for p, out in send(sw, "p1", *frames).items()}

    assert where(v10, v11, v12) == {"p2": 3}
    f11 = next(f for f in ft.flows if f.rule.match.dl_vlan == 11)
    ft.set_actions(f11, ofsyntax.parse_flow("priority=10,dl_vlan=11 actions=output:3"))
    assert where(v10) == {"p2": 1} and where(v11) == {"p3": 1} and where(v12) == {"p2": 1}
    ft.remove([f for f in ft.flows if f.rule.match.dl_vlan == 12 and f.rule.priority == 20])
    assert where(v12) == {"p3": 1} and where(v10) == {"p2": 1}
    ft.remove([f for f in ft.flows if f.rule.match.dl_vlan == 10])
    assert where(v11) == {"p3": 1}
    assert where(v10) == {"p2": 1, "p3": 1}            # the default rule's NORMAL floods VLAN 10
    check_pools(sw)


def test_counters_follow_a_rule_as_its_slot_changes_hands_and_moves():
    """The first worker counts a hit in the rule's classifier slot: what it counted stays
    the rule's when a higher-priority rule with the same match takes the slot and leaves
    it again, and when the slot moves as its subtable grows or neighbours are deleted."""
    sw = flows("priority=10,dl_vlan=10 actions=output:2")
    ft = sw.bridge("br0").flows
    v10 = frame([(Q, 10, 0)])

    def packets(priority):
        return next(ft.counters(f)[0] for f in ft.flows
                    if f.rule.priority == priority and f.rule.match.dl_vlan == 10)

    send(sw, "p1", v10, v10, v10)
    assert packets(10) == 3
    sw.add_flow("br0", "priority=20,dl_vlan=10 actions=output:3")
    assert send(sw, "p1", v10, v10) == {"p3": [bytes(v10)] * 2}
    assert (packets(10), packets(20)) == (3, 2)
    ft.remove([f for f in ft.flows if f.rule.priority == 20])
    send(sw, "p1", v10)
    assert packets(10) == 4
    for vid in range(100, 3100):                   # the subtable grows: every slot moves
        sw.add_flow("br0", f"priority=10,dl_vlan={vid} actions=output:2")
    send(sw, "p1", v10)
    assert packets(10) == 5
    ft.remove([f for f in ft.flows if f.rule.match.dl_vlan in range(100, 3100, 2)])
    send(sw, "p1", v10)                            # deletes shift slots back
    assert packets(10) == 6
    line = next(d for d in sw.dump_flows("br0") if "priority=10,dl_vlan=10 " in d)
    assert "n_packets=6," in line and f"n_bytes={6 * len(v10)}," in line


def test_one_vector_with_frames_of_two_bridges():
    """Frames of two bridges can share a vector at flow-classify; each bridge's frames go
    through its own pipeline (a pass per table takes one bridge's frames at a time)."""
    sw = make_switch(PORTS)
    sw.add_br("br1")
    for name in ("q1", "q2", "q3"):
        sw.add_port("br1", name, type="pg")
    sw.add_flow("br0", "priority=10,in_port=p1,dl_vlan=10 actions=output:p2")
    sw.add_flow("br0", "priority=10,in_port=p1,dl_vlan=11 actions=goto_table:1")
    sw.add_flow("br0", "table=1,priority=10 actions=output:p3")
    sw.add_flow("br1", "priority=10,in_port=q1,dl_vlan=10 actions=goto_table:2")
    sw.add_flow("br1", "table=2,priority=10,dl_vlan=10 actions=output:q3")
    sw.add_flow("br1", "priority=10,in_port=q1,dl_vlan=11 actions=output:q2")
    v10, v11 = frame([(Q, 10, 0)]), frame([(Q, 11, 0)])
    sw.port("p1").ios[0][0].add([bytes(f) for f in (v10, v11, v10)])
    sw.port("q1").ios[0][0].add([bytes(f) for f in (v11, v10, v11, v10)])
    sw.graphs[0].run_until_idle()
    got = {name: len(p.ios[0][1].take()) for name, p in sw.ports.items()}
    assert got == {"p1": 0, "p2": 2, "p3": 1, "q1": 0, "q2": 2, "q3": 2}
    assert sw.graphs[0]["flow-classify"].vectors == 1        # one vector held them all
    check_pools(sw)


def test_counters_of_a_worker_without_a_row_go_to_row_zero():
    """A classifier numbered past the rows its table was built with counts in row 0
    rather than writing past the counters."""
    sw = flows("priority=10,in_port=1 actions=output:2")
    sw.graph["flow-classify"].worker = 7
    send(sw, "p1", frame(), frame())
    assert "n_packets=2," in sw.dump_flows("br0")[0]


def test_table_miss_and_del_flows():
    sw = flows()
    sw.del_flows("br0")
    assert send(sw, "p1", frame()) == {}
    assert [(r) for _, _, r, _ in sw.errors()] == ["no_match"]
    sw.add_flow("br0", "in_port=1 actions=output:2")
    sw.add_flow("br0", "in_port=2 actions=output:1")
    assert sw.del_flows("br0", "in_port=1") == 1
    assert len(sw.dump_flows("br0")) == 1


def test_default_table_is_normal():
    sw = flows()
    assert [l.split(", ")[-1] for l in sw.dump_flows("br0")] == ["priority=0 actions=NORMAL"]


@pytest.mark.parametrize("bad,token", [
    ("in_port=1 actions=outptu:2", "outptu:2"),
    ("in_port=9 actions=output:2", "9"),
    ("in_port=1 actions=output:nosuch", "nosuch"),
    ("dl_vlam=10 actions=drop", "dl_vlam"),
    ("dl_vlan=5000 actions=drop", "5000"),
    ("in_port=1", "actions"),
])
def test_bad_flows_name_the_token_and_change_nothing(bad, token):
    sw = flows("in_port=1 actions=output:2")
    before = sw.bridge("br0").flows.stats()
    with pytest.raises(ConfigError, match=token):
        sw.add_flow("br0", bad)
    assert sw.bridge("br0").flows.stats() == before
