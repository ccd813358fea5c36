"""Tests for fastpath.ofsyntax (ovs-ofctl flow syntax, L2 subset)."""
import pytest
from hypothesis import given, settings, strategies as st

from fastpath.ofsyntax import (
    DEFAULT_PRIORITY, VLAN_NONE, Action, FlowRule, FlowSyntaxError, Match,
    format_actions, format_flow, format_match, int_to_mac, mac_to_int,
    parse_actions, parse_flow, parse_match,
)

ONES = (1 << 48) - 1


# ------------------------------------------------------------------ seed example

@pytest.mark.parametrize("text", [
    "in_port=1 actions=strip_vlan,output:2",
    "in_port=1,actions=strip_vlan,output:2",
    "  in_port=1 ,  actions=strip_vlan,output:2  ",
])
def test_seed_example(text):
    rule = parse_flow(text)
    assert rule == FlowRule(match=Match(in_port=1),
                            actions=[Action("strip_vlan"), Action("output", 2)])
    assert rule.priority == DEFAULT_PRIORITY == 32768
    assert rule.cookie == 0
    assert format_flow(rule) == " cookie=0x0, in_port=1 actions=strip_vlan,output:2"


def test_format_flow_like_dump_flows():
    rule = parse_flow("priority=100,in_port=1,dl_vlan=10 actions=strip_vlan,output:2")
    assert format_flow(rule, n_packets=3, n_bytes=180, duration=1.234) == (
        " cookie=0x0, duration=1.234s, n_packets=3, n_bytes=180, "
        "priority=100,in_port=1,dl_vlan=10 actions=strip_vlan,output:2")


def test_dump_flows_output_parses_back():
    rule = parse_flow("cookie=0x2a,priority=7,dl_vlan=3 actions=NORMAL")
    line = format_flow(rule, n_packets=1, n_bytes=60, duration=0.5)
    assert parse_flow(line) == rule
    assert parse_flow(line.replace(" priority", " idle_age=3, hard_age=4, priority")) == rule


def test_empty_match_and_default_priority():
    rule = parse_flow("actions=drop")
    assert rule == FlowRule()
    assert format_flow(rule) == " cookie=0x0, actions=drop"
    assert format_flow(FlowRule(priority=0)) == " cookie=0x0, priority=0 actions=drop"


# ------------------------------------------------------------------ match fields

def test_in_port_number_vs_name():
    assert parse_flow("in_port=7 actions=drop").match.in_port == 7
    assert parse_flow("in_port=eth0 actions=drop").match.in_port == "eth0"
    assert parse_flow("in_port=LOCAL actions=drop").match.in_port == "LOCAL"
    assert parse_flow("in_port=tap-1.2_x actions=drop").match.in_port == "tap-1.2_x"
    assert parse_flow("in_port=65535 actions=drop").match.in_port == 65535


def test_mac_fields_and_masks():
    m = parse_flow("dl_src=00:11:22:33:44:55,dl_dst=AA:BB:CC:DD:EE:FF actions=drop").match
    assert m.dl_src == (0x001122334455, ONES)
    assert m.dl_dst == (0xAABBCCDDEEFF, ONES)
    m = parse_flow("dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=drop").match
    assert m.dl_dst == (1 << 40, 1 << 40)
    assert format_match(m) == "dl_dst=01:00:00:00:00:00/01:00:00:00:00:00"
    # the value is masked, as OVS does
    m = parse_flow("dl_src=ff:ff:ff:ff:ff:ff/ff:ff:ff:00:00:00 actions=drop").match
    assert m.dl_src == (0xFFFFFF000000, 0xFFFFFF000000)
    # an explicit all-ones mask is not printed; an all-zero mask is a wildcard
    m = parse_flow("dl_src=00:11:22:33:44:55/ff:ff:ff:ff:ff:ff actions=drop").match
    assert format_match(m) == "dl_src=00:11:22:33:44:55"
    assert parse_flow("dl_src=00:11:22:33:44:55/00:00:00:00:00:00 actions=drop").match == Match()


def test_mac_helpers():
    assert mac_to_int("0:1:2:3:4:5") == 0x000102030405
    assert int_to_mac(0x000102030405) == "00:01:02:03:04:05"
    with pytest.raises(FlowSyntaxError):
        mac_to_int("00:11:22:33:44")


@pytest.mark.parametrize("text, dl_type", [
    ("dl_type=0x0800", 0x0800), ("dl_type=2054", 0x0806), ("dl_type=0x88cc", 0x88CC),
    ("arp", 0x0806), ("ip", 0x0800), ("ipv6", 0x86DD),
])
def test_dl_type_and_shorthands(text, dl_type):
    assert parse_flow(text + " actions=drop").match.dl_type == dl_type


def test_shorthand_printing():
    assert format_match(Match(dl_type=0x0806, in_port=1)) == "arp,in_port=1"
    assert format_match(Match(dl_type=0x88CC)) == "dl_type=0x88cc"
    assert format_match(Match(dl_type=0x0800)) == "ip"


def test_vlan_fields():
    m = parse_flow("dl_vlan=4095,dl_vlan_pcp=7 actions=drop").match
    assert (m.dl_vlan, m.dl_vlan_pcp) == (4095, 7)
    assert parse_flow("dl_vlan=0 actions=drop").match.dl_vlan == 0
    m = parse_flow("dl_vlan=0xffff actions=drop").match
    assert m.dl_vlan == VLAN_NONE
    assert format_match(m) == "dl_vlan=0xffff"


def test_priority_cookie_table():
    rule = parse_flow("priority=100 cookie=0xdeadbeef table=0 in_port=1 actions=flood")
    assert (rule.priority, rule.cookie) == (100, 0xDEADBEEF)
    assert parse_flow("priority=0 actions=drop").priority == 0
    assert parse_flow("priority=65535 actions=drop").priority == 65535
    line = format_flow(rule)
    assert line.startswith(" cookie=0xdeadbeef, priority=100,in_port=1 ")
    # priority equal to the default is omitted
    assert "priority" not in format_flow(parse_flow("priority=32768 actions=drop"))


def test_all_fields_canonical_order():
    text = ("dl_type=0x1234 dl_dst=ff:ff:ff:ff:ff:ff dl_src=00:00:00:00:00:01/00:00:00:00:00:ff "
            "dl_vlan_pcp=3 dl_vlan=10 in_port=3 priority=5 actions=output:4")
    rule = parse_flow(text)
    assert format_flow(rule) == (
        " cookie=0x0, priority=5,in_port=3,dl_vlan=10,dl_vlan_pcp=3,"
        "dl_src=00:00:00:00:00:01/00:00:00:00:00:ff,dl_dst=ff:ff:ff:ff:ff:ff,"
        "dl_type=0x1234 actions=output:4")


def test_need_actions_false_and_parse_match():
    rule = parse_flow("in_port=1", need_actions=False)
    assert rule == FlowRule(match=Match(in_port=1))
    assert parse_match("in_port=1,dl_vlan=5") == (Match(in_port=1, dl_vlan=5), None)
    assert parse_match("priority=10 arp") == (Match(dl_type=0x0806), 10)
    assert parse_match("") == (Match(), None)


# ------------------------------------------------------------------ actions

@pytest.mark.parametrize("text, expected", [
    ("strip_vlan", [Action("strip_vlan")]),
    ("pop_vlan", [Action("strip_vlan")]),
    ("push_vlan:0x8100", [Action("push_vlan", 0x8100)]),
    ("push_vlan:0x88a8", [Action("push_vlan", 0x88A8)]),
    ("mod_vlan_vid:4095", [Action("mod_vlan_vid", 4095)]),
    ("mod_vlan_pcp:5", [Action("mod_vlan_pcp", 5)]),
    ("output:2", [Action("output", 2)]),
    ("output:eth1", [Action("output", "eth1")]),
    ("output:LOCAL", [Action("output", "LOCAL")]),
    ("2", [Action("output", 2)]),
    ("normal", [Action("normal")]),
    ("NORMAL", [Action("normal")]),
    ("FLOOD", [Action("flood")]),
    ("all", [Action("all")]),
    ("in_port", [Action("in_port")]),
    ("IN_PORT", [Action("in_port")]),
    ("output:in_port", [Action("in_port")]),
    ("Output:NORMAL", [Action("normal")]),
    ("drop", []),
    ("DROP", []),
    ("", []),
    ("push_vlan:0x8100,mod_vlan_vid:10,mod_vlan_pcp:1,output:3,4",
     [Action("push_vlan", 0x8100), Action("mod_vlan_vid", 10),
      Action("mod_vlan_pcp", 1), Action("output", 3), Action("output", 4)]),
])
def test_actions(text, expected):
    assert parse_flow("actions=" + text).actions == expected
    assert parse_actions(text) == expected


def test_format_actions():
    assert format_actions([]) == "drop"
    assert format_actions([Action("push_vlan", 0x8100), Action("mod_vlan_vid", 10),
                           Action("output", "eth0"), Action("normal"), Action("flood"),
                           Action("all"), Action("in_port")]) == (
        "push_vlan:0x8100,mod_vlan_vid:10,output:eth0,NORMAL,FLOOD,ALL,IN_PORT")


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("text, token", [
    ("", "empty"),
    ("   ", "empty"),
    ("in_port=1", "in_port=1"),                                  # no actions=
    ("dl_vlam=10 actions=drop", "'dl_vlam=10'"),
    ("dl_vlam=10 actions=drop", "'dl_vlam'"),
    ("bogus actions=drop", "'bogus'"),
    ("in_port actions=drop", "'in_port'"),
    ("in_port= actions=drop", "'in_port'"),
    ("dl_vlan=,in_port=1 actions=drop", "'dl_vlan'"),
    ("dl_src=00:11:zz:33:44:55 actions=drop", "'00:11:zz:33:44:55' for dl_src"),
    ("dl_dst=00:11:22:33:44 actions=drop", "'00:11:22:33:44' for dl_dst"),
    ("dl_dst=00:11:22:33:44:55/ff:ff actions=drop", "'ff:ff'"),
    ("dl_vlan=5000 actions=drop", "dl_vlan 5000 out of range 0..4095"),
    ("dl_vlan=0x1000 actions=drop", "dl_vlan 0x1000 out of range 0..4095"),
    ("dl_vlan=70000 actions=drop", "dl_vlan 70000 out of range 0..4095"),
    ("dl_vlan=ten actions=drop", "'ten'"),
    ("dl_vlan=-1 actions=drop", "'-1'"),
    ("dl_vlan_pcp=8 actions=drop", "dl_vlan_pcp 8 out of range 0..7"),
    ("dl_type=0x10000 actions=drop", "dl_type 0x10000"),
    ("dl_type=arp actions=drop", "'arp'"),
    ("priority=65536 actions=drop", "priority 65536"),
    ("priority=high actions=drop", "'high'"),
    ("table=255 actions=drop", "'table=255'"),
    ("cookie=0x1/0xff actions=drop", "'0x1/0xff'"),
    ("cookie=0x10000000000000000 actions=drop", "0x10000000000000000"),
    ("in_port=70000 actions=drop", "70000"),
    ("in_port=eth0:1 actions=drop", "'eth0:1'"),
    ("in_port=1,in_port=2 actions=drop", "'in_port'"),
    ("dl_vlan=1 dl_vlan=1 actions=drop", "'dl_vlan'"),
    ("arp,dl_type=0x0806 actions=drop", "'dl_type'"),
    ("priority=1,priority=2 actions=drop", "'priority'"),
    ("actions=outptu:2", "unknown action 'outptu:2'"),
    ("actions=nromal", "'nromal'"),
    ("actions=strip_vlan,frobnicate", "'frobnicate'"),
    ("actions=drop,output:2", "'drop'"),
    ("actions=output:2,drop", "'drop'"),
    ("actions=output", "'output'"),
    ("actions=output:", "'output:'"),
    ("actions=output:70000", "70000"),
    ("actions=99999", "99999"),
    ("actions=output:a/b", "'a/b'"),
    ("actions=push_vlan:0x0800", "'0x0800'"),
    ("actions=push_vlan", "'push_vlan'"),
    ("actions=mod_vlan_vid:4096", "mod_vlan_vid 4096"),
    ("actions=mod_vlan_vid:x", "'x'"),
    ("actions=mod_vlan_pcp:8", "mod_vlan_pcp 8"),
    ("actions=strip_vlan:1", "'strip_vlan:1'"),
    ("actions=normal,priority=5", "'priority=5'"),
])
def test_bad_inputs(text, token):
    with pytest.raises(FlowSyntaxError) as exc:
        parse_flow(text)
    assert token in str(exc.value)
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("text, token", [
    ("in_port=1 actions=drop", "actions="),
    ("cookie=0x1", "cookie"),
    ("dl_vlam=1", "'dl_vlam'"),
])
def test_bad_match(text, token):
    with pytest.raises(FlowSyntaxError) as exc:
        parse_match(text)
    assert token in str(exc.value)


# ------------------------------------------------------------------ round trip

_NAME = st.from_regex(r"[A-Za-z0-9_.-]{1,12}", fullmatch=True).filter(
    lambda s: not s.isdigit() and s.lower() not in ("normal", "flood", "all", "in_port"))
_PORT = st.one_of(st.integers(0, 0xFFFF), _NAME)


@st.composite
def _mac(draw):
    mask = draw(st.one_of(st.just(ONES), st.integers(1, ONES)))
    return (draw(st.integers(0, ONES)) & mask, mask)


def _opt(strategy):
    return st.one_of(st.none(), strategy)


_MATCH = st.builds(
    Match,
    in_port=_opt(_PORT),
    dl_src=_opt(_mac()),
    dl_dst=_opt(_mac()),
    dl_type=_opt(st.one_of(st.sampled_from([0x0800, 0x0806, 0x86DD]), st.integers(0, 0xFFFF))),
    dl_vlan=_opt(st.one_of(st.integers(0, 4095), st.just(VLAN_NONE))),
    dl_vlan_pcp=_opt(st.integers(0, 7)),
)

_ACTION = st.one_of(
    st.sampled_from([Action(k) for k in ("strip_vlan", "normal", "flood", "all", "in_port")]),
    st.builds(Action, st.just("push_vlan"), st.sampled_from([0x8100, 0x88A8])),
    st.builds(Action, st.just("mod_vlan_vid"), st.integers(0, 4095)),
    st.builds(Action, st.just("mod_vlan_pcp"), st.integers(0, 7)),
    st.builds(Action, st.just("output"), _PORT),
)

_RULE = st.builds(
    FlowRule,
    priority=st.one_of(st.just(DEFAULT_PRIORITY), st.integers(0, 0xFFFF)),
    match=_MATCH,
    actions=st.lists(_ACTION, max_size=6),
    cookie=st.one_of(st.just(0), st.integers(0, (1 << 64) - 1)),
)


@settings(max_examples=300)
@given(_RULE, _opt(st.integers(0, 10**9)), _opt(st.integers(0, 10**12)),
       _opt(st.floats(0, 1e6, allow_nan=False)))
def test_round_trip(rule, n_packets, n_bytes, duration):
    assert parse_flow(format_flow(rule)) == rule
    assert parse_flow(format_flow(rule, n_packets, n_bytes, duration)) == rule


@given(_MATCH)
def test_match_round_trip(match):
    assert parse_match(format_match(match)) == (match, None)
