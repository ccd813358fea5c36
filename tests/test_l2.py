"""MAC learning and forwarding per (bridge, VLAN): learn, unicast, flood, moves, aging,
table limit, static entries, flush; and the property that no frame leaves on its ingress."""
from hypothesis import given, settings, strategies as st

from l2util import Clock, check_pools, frame, make_switch, send, tx_packets

Q = 0x8100
A, B, C = "00:00:00:00:00:0a", "00:00:00:00:00:0b", "00:00:00:00:00:0c"
PORTS = {"p1": {"tag": 10}, "p2": {"tag": 10}, "p3": {"tag": 10}, "p4": {"tag": 20}, "tr": {}}


def test_learn_then_unicast():
    sw = make_switch(PORTS)
    out = send(sw, "p1", frame(src=A))                         # unknown: flood VLAN 10
    assert set(out) == {"p2", "p3", "tr"}
    out = send(sw, "p2", frame(src=B, dst=A))                  # A was learned on p1
    assert out == {"p1": [bytes(frame(src=B, dst=A))]}
    out = send(sw, "tr", frame([(Q, 10, 0)], src=C, dst=B))    # from the trunk, untagged on p2
    assert out == {"p2": [bytes(frame(src=C, dst=B))]}
    out = send(sw, "p1", frame(src=A, dst=C))                  # to the trunk, tagged
    assert out == {"tr": [bytes(frame([(Q, 10, 0)], src=A, dst=C))]}
    rows = {(r["port"], r["vlan"], r["mac"]) for r in sw.fdb_rows("br0")}
    assert rows == {("p1", 10, A), ("p2", 10, B), ("tr", 10, C)}
    check_pools(sw)


def test_fdb_show_has_ovs_columns():
    sw = make_switch(PORTS)
    send(sw, "p2", frame(src=B))
    text = sw.fdb_show("br0").splitlines()
    assert text[0] == " port  VLAN  MAC                Age"
    assert text[1].split() == [str(sw.port("p2").ofport), "10", B, "0"]


def test_tables_are_per_vlan():
    sw = make_switch(PORTS)
    send(sw, "tr", frame([(Q, 20, 0)], src=A))                 # A in VLAN 20 behind the trunk
    out = send(sw, "p2", frame(src=B, dst=A))                  # VLAN 10 does not know A: flood
    assert set(out) == {"p1", "p3", "tr"}
    out = send(sw, "p4", frame(src=C, dst=A))                  # VLAN 20 does
    assert out == {"tr": [bytes(frame([(Q, 20, 0)], src=C, dst=A))]}


def test_broadcast_and_multicast_flood_unknown_unicast_too():
    sw = make_switch(PORTS)
    for dst in ("ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "33:33:00:00:00:01", "02:00:00:00:00:99"):
        assert set(send(sw, "p1", frame(src=A, dst=dst))) == {"p2", "p3", "tr"}


def test_reserved_multicast_is_not_forwarded():
    sw = make_switch(PORTS)
    assert send(sw, "p1", frame(src=A, dst="01:80:c2:00:00:00")) == {}
    assert [(n, r) for _, n, r, _ in sw.errors()] == [("l2-fwd", "reserved_dst")]


def test_mac_move_updates_port_and_counts():
    sw = make_switch(PORTS)
    send(sw, "p1", frame(src=A))
    send(sw, "p3", frame(src=A))
    assert send(sw, "p2", frame(src=B, dst=A)) == {"p3": [bytes(frame(src=B, dst=A))]}
    assert sw.bridge("br0").fdb.moved == 1


def test_destination_on_ingress_port_is_dropped():
    sw = make_switch(PORTS)
    send(sw, "p1", frame(src=A))
    assert send(sw, "p1", frame(src=B, dst=A)) == {}
    assert [(n, r) for _, n, r, _ in sw.errors()] == [("l2-fwd", "same_port")]


def test_aging_with_injected_clock():
    clock = Clock(1000.0)
    sw = make_switch(PORTS, clock=clock, **{"other_config:mac-aging-time": 30})
    sw.tick()
    send(sw, "p1", frame(src=A))
    clock.t += 29
    sw.tick()
    assert send(sw, "p2", frame(src=B, dst=A)) == {"p1": [bytes(frame(src=B, dst=A))]}
    clock.t += 1                                               # A is 30 s old: aged out
    sw.tick()
    assert set(send(sw, "p2", frame(src=B, dst=A))) == {"p1", "p3", "tr"}
    assert sw.bridge("br0").fdb.aged == 1


def test_table_limit_evicts_oldest():
    clock = Clock(1000.0)
    sw = make_switch(PORTS, clock=clock, **{"other_config:mac-table-size": 4})
    macs = [f"00:00:00:00:01:{i:02x}" for i in range(6)]
    for mac in macs:
        sw.tick()
        send(sw, "p1", frame(src=mac))
        clock.t += 2
    fdb = sw.bridge("br0").fdb
    assert len(fdb) == 4 and fdb.evicted == 2
    assert {r["mac"] for r in sw.fdb_rows("br0")} == set(macs[2:])


def test_static_entry_wins_over_learning():
    sw = make_switch(PORTS)
    sw.fdb_add("br0", "p3", 10, A)
    send(sw, "p1", frame(src=A))                               # would move A: refused
    assert send(sw, "p2", frame(src=B, dst=A)) == {"p3": [bytes(frame(src=B, dst=A))]}
    assert [(r["port"], r["age"]) for r in sw.fdb_rows("br0") if r["mac"] == A] == [("p3", "static")]
    sw.fdb_flush("br0")                                        # flush keeps static entries
    assert any(r["mac"] == A for r in sw.fdb_rows("br0"))


def test_flush_and_port_removal_forget_macs():
    sw = make_switch(PORTS)
    send(sw, "p1", frame(src=A))
    send(sw, "p2", frame(src=B))
    sw.fdb_flush("br0")
    assert sw.fdb_rows("br0") == []
    send(sw, "p1", frame(src=A))
    sw.del_port("p1")
    assert sw.fdb_rows("br0") == []
    assert set(send(sw, "p2", frame(src=B, dst=A))) == {"p3", "tr"}
    check_pools(sw)


def test_flood_when_pool_runs_dry_counts_lost_copies():
    ports = {f"p{i}": {} for i in range(8)}
    sw = make_switch(ports, n_buffers=16)
    frames = [frame(src=f"00:00:00:00:02:{i:02x}") for i in range(4)]
    send(sw, "p0", *frames)
    delivered = sum(tx_packets(sw, p) for p in ports)
    lost = sum(c for c, n, r, _ in sw.errors() if r == "no_buffer")
    assert lost > 0 and delivered + lost == 4 * 7
    check_pools(sw)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(PORTS)), st.integers(0, 3), st.integers(0, 3),
                          st.sampled_from([None, 10, 20, 30])), min_size=1, max_size=30))
def test_no_frame_leaves_on_its_ingress_port(traffic):
    sw = make_switch(PORTS)
    for port, s, d, vlan in traffic:
        f = frame([(Q, vlan, 0)] if vlan else [], src=f"00:00:00:00:00:{s + 1:02x}",
                  dst=f"00:00:00:00:00:{d + 1:02x}" if d else "ff:ff:ff:ff:ff:ff")
        out = send(sw, port, f)
        assert port not in out
    check_pools(sw)
