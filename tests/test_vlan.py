"""Open vSwitch VLAN semantics (vswitch.xml "VLAN Configuration"), as a conformance table.

Every port is in one bridge; a broadcast enters on one port and the test compares the
whole frame each other port sends (or that it sends nothing)."""
import pytest
from hypothesis import given, settings, strategies as st

from fastpath.nodes.vlan import parse_rewrite
from l2util import check_pools, frame, make_switch, send

PORTS = {
    "a": {"tag": 10},                                   # access (default when tag is set)
    "a20": {"tag": 20, "vlan_mode": "access"},
    "t": {},                                            # trunk of every VLAN
    "t2": {"vlan_mode": "trunk"},
    "tr": {"trunks": "10,20"},
    "nt": {"tag": 10, "vlan_mode": "native-tagged"},
    "nu": {"tag": 10, "vlan_mode": "native-untagged"},
    "dq": {"tag": 100, "vlan_mode": "dot1q-tunnel"},
}

Q, AD = 0x8100, 0x88a8

# (ingress port, ingress tags, {egress port: egress tags}); ports not listed send nothing
CASES = [
    ("a", [], {"t": [(Q, 10, 0)], "t2": [(Q, 10, 0)], "tr": [(Q, 10, 0)], "nt": [(Q, 10, 0)], "nu": []}),
    ("a", [(Q, 0, 5)], {"t": [(Q, 10, 5)], "t2": [(Q, 10, 5)], "tr": [(Q, 10, 5)], "nt": [(Q, 10, 5)], "nu": []}),
    ("a", [(Q, 10, 0)], {}),                            # tagged on an access port: dropped
    ("a", [(Q, 20, 0)], {}),
    ("t", [], {"t2": []}),                              # VLAN 0: only ports that trunk it
    ("t", [(Q, 0, 3)], {"t2": []}),                     # priority tag = VLAN 0; tag omitted on output
    ("t", [(Q, 20, 3)], {"a20": [], "t2": [(Q, 20, 3)], "tr": [(Q, 20, 3)], "nt": [(Q, 20, 3)], "nu": [(Q, 20, 3)]}),
    ("t", [(Q, 30, 0)], {"t2": [(Q, 30, 0)], "nt": [(Q, 30, 0)], "nu": [(Q, 30, 0)]}),
    ("tr", [(Q, 30, 0)], {}),                           # not in trunks
    ("tr", [], {}),                                     # VLAN 0 not in trunks
    ("tr", [(Q, 10, 1)], {"a": [], "t": [(Q, 10, 1)], "t2": [(Q, 10, 1)], "nt": [(Q, 10, 1)], "nu": []}),
    ("nt", [], {"a": [], "t": [(Q, 10, 0)], "t2": [(Q, 10, 0)], "tr": [(Q, 10, 0)], "nu": []}),
    ("nt", [(Q, 0, 6)], {"a": [], "t": [(Q, 10, 6)], "t2": [(Q, 10, 6)], "tr": [(Q, 10, 6)], "nu": []}),
    ("nu", [(Q, 20, 0)], {"a20": [], "t": [(Q, 20, 0)], "t2": [(Q, 20, 0)], "tr": [(Q, 20, 0)], "nt": [(Q, 20, 0)]}),
    ("dq", [], {"t": [(AD, 100, 0)], "t2": [(AD, 100, 0)], "nt": [(AD, 100, 0)], "nu": [(AD, 100, 0)]}),
    ("dq", [(Q, 10, 4)], {"t": [(AD, 100, 0), (Q, 10, 4)], "t2": [(AD, 100, 0), (Q, 10, 4)],
                          "nt": [(AD, 100, 0), (Q, 10, 4)], "nu": [(AD, 100, 0), (Q, 10, 4)]}),
    ("t", [(AD, 100, 0), (Q, 10, 4)], {"dq": [(Q, 10, 4)], "t2": [(AD, 100, 0), (Q, 10, 4)],
                                       "nt": [(AD, 100, 0), (Q, 10, 4)], "nu": [(AD, 100, 0), (Q, 10, 4)]}),
    ("t", [(Q, 100, 0)], {"dq": [], "t2": [(Q, 100, 0)], "nt": [(Q, 100, 0)], "nu": [(Q, 100, 0)]}),
]


@pytest.mark.parametrize("ingress,tags,expect", CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{t[0]:x}.{t[1]}' for t in c[1]) or 'untagged'}" for c in CASES])
def test_vlan_mode_conformance(ingress, tags, expect):
    sw = make_switch(PORTS)
    out = send(sw, ingress, frame(tags))
    assert set(out) == set(expect), f"egress ports {sorted(out)} != {sorted(expect)}"
    for port, etags in expect.items():
        assert out[port] == [bytes(frame(etags))], f"port {port}"
    assert ingress not in out
    check_pools(sw)


def test_drops_are_counted_by_reason():
    sw = make_switch(PORTS)
    send(sw, "a", frame([(Q, 10, 0)]))
    send(sw, "tr", frame([(Q, 30, 0)]))
    send(sw, "t", frame())                # VLAN 0 reaches only t2
    send(sw, "a", b"\x00" * 10)           # runt
    send(sw, "a", bytes(frame())[:12] + b"\x81\x00")   # TPID with no tag
    errors = {(node, reason): count for count, node, reason, _ in sw.errors()}
    assert errors == {("vlan-input", "tagged_on_access"): 1, ("vlan-input", "vlan_not_allowed"): 1,
                      ("ethernet-input", "runt"): 1, ("ethernet-input", "truncated_tag"): 1}
    check_pools(sw)


def test_reconfigure_port_vlan_live():
    sw = make_switch({"a": {"tag": 10}, "b": {"tag": 10}})
    assert send(sw, "a", frame()) == {"b": [bytes(frame())]}
    sw.set_port("b", tag=20)
    assert send(sw, "a", frame()) == {}
    sw.set_port("b", vlan_mode="trunk", tag="")
    assert send(sw, "a", frame()) == {"b": [bytes(frame([(Q, 10, 0)]))]}


@settings(max_examples=60, deadline=None)
@given(tags=st.lists(st.tuples(st.sampled_from([Q, AD]), st.integers(0, 4095), st.integers(0, 7)),
                     max_size=2),
       ops=st.lists(st.sampled_from(["pop 1", "push dot1q 7", "push dot1ad 3000", "push dot1q 5 6"]),
                    max_size=3))
def test_tag_rewrite_push_then_pop_is_identity(tags, ops):
    """Any pushes followed by as many pops give back the original frame."""
    from fastpath.graph.graph import Graph
    from fastpath.nodes.vlan import VlanRewrite
    from fastpath.pg.pg import PgInput, PgOutput
    pushes = [o for o in ops if o.startswith("push")]
    g = Graph(n_buffers=64)
    inp = g.add(PgInput("in", 1, next_node="push"))
    names = []
    for i, op in enumerate(pushes):
        names.append(f"push{i}")
    n_pops = sum(2 if len(op.split()) == 4 else 1 for op in pushes)
    names += [f"pop{i}" for i in range(n_pops)]
    names.append("out")
    inp.next_names[1] = names[0]
    for i, name in enumerate(names[:-1]):
        node = g.add(VlanRewrite(name, next_node=names[i + 1]))
        node.set_rewrite(1, pushes[i] if i < len(pushes) else "pop 1")
    out = g.add(PgOutput("out", 1))
    g._wire(inp)
    f = bytes(frame(tags))
    inp.add([f])
    g.run_until_idle()
    assert out.take() == [f]
    g.pool.check_accounting(0)


def test_tag_rewrite_translate_and_errors():
    from fastpath.graph.graph import Graph
    from fastpath.nodes.vlan import VlanRewrite
    from fastpath.pg.pg import PgInput, PgOutput
    g = Graph(n_buffers=64)
    inp = g.add(PgInput("in", 1, next_node="rw"))
    rw = g.add(VlanRewrite("rw", next_node="out"))
    out = g.add(PgOutput("out", 1))
    rw.set_rewrite(1, "translate 1-1 300")
    inp.add([bytes(frame([(Q, 10, 5)])), bytes(frame())])
    g.run_until_idle()
    assert out.take() == [bytes(frame([(Q, 300, 5)]))]
    assert [(c, n, r) for c, n, r, _ in g.errors()] == [(1, "rw", "no_tag")]
    for bad, token in (("push dot1x 5", "dot1x"), ("translate 1-1 5000", "5000"), ("pop 3", "pop 3")):
        with pytest.raises(ValueError, match=token):
            parse_rewrite(bad)
