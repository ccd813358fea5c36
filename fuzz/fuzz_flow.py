"""Fuzz the OpenFlow flow syntax: fastpath.ofsyntax.parse_flow / parse_match and
Switch.add_flow / del_flows, then the installed rules on the dataplane.

    python fuzz/fuzz_flow.py -atheris_runs=1000000 [CORPUS_DIR]

An input is a flow text: raw (any Unicode), or assembled from a dictionary of the syntax's
tokens (fields, shorthands, actions, reserved ports, port names) with values that sit on
and past every boundary (0, 4095, 4096, 0xffff, 2^64, negative, hex, Unicode digits, MACs
with masks...) and separators (',', ' ', '\\t', '=', ':'). Invariants:
  - parse_flow, parse_match, add_flow and del_flows raise nothing but FlowSyntaxError
    (parsers) and ConfigError (switch);
  - a rule that parses prints (format_flow) as text that parses back to the same rule, and
    that printing is stable;
  - a refused add-flow/del-flows leaves the table exactly as it was;
  - an accepted rule is in dump-flows, and frames through the bridge with it installed run
    cleanly (no exception, every buffer back in the pool).
"""
from fuzzcommon import Clock, Observer, Reader, atheris_main, egress, feature, inject

from fastpath import ofsyntax
from fastpath.ofsyntax import FlowSyntaxError
from fastpath.switch import ConfigError, Switch

FIELDS = ["priority", "cookie", "table", "in_port", "dl_src", "dl_dst", "dl_type", "dl_vlan",
          "dl_vlan_pcp", "arp", "ip", "ipv6", "duration", "n_packets", "n_bytes", "idle_age",
          "hard_age", "actions", "nw_src", "tp_dst", "Priority", "in_port "]
ACTIONS = ["strip_vlan", "pop_vlan", "push_vlan", "mod_vlan_vid", "mod_vlan_pcp", "output",
           "normal", "NORMAL", "flood", "FLOOD", "all", "in_port", "IN_PORT", "drop", "DROP",
           "controller", "resubmit", "set_field", "enqueue"]
VALUES = ["0", "1", "2", "3", "7", "8", "10", "100", "4094", "4095", "4096", "0xffff", "0xFFFF",
          "65535", "65536", "0x10000", "-1", "+1", "0x", "0x0", "00", "1_000", "1e3", "\u0663",
          "\uff11", "18446744073709551615", "18446744073709551616", "0x8100", "0x88a8", "0x88A8",
          "33024", "0x0800", "p1", "p2", "p3", "q9", "LOCAL", "normal", "in_port", "NONE",
          "00:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "01:00:00:00:00:00/01:00:00:00:00:00",
          "00:11:22:33:44:55/ff:ff:ff:00:00:00", "0:1:2:3:4:5", "00:00:00:00:00:00/00:00:00:00:00:00",
          "00:00:00:00:00", "00:00:00:00:00:00:00", "zz:00:00:00:00:00", "00-11-22-33-44-55", "",
          "a" * 40, "1" * 30]
SEPS = [",", " ", ", ", "\t", ",,", " ,", "\n", "  "]

DEFAULT = "priority=0 actions=normal"


def build():
    sw = Switch(n_buffers=128, clock=Clock())
    sw.add_br("br0")
    for k, tag in ((1, None), (2, 10), (3, None)):
        sw.add_port("br0", f"p{k}", type="pg", **({"tag": tag} if tag else {}))
    return sw


def token(r):
    k = r.u8() % 8
    if k < 4:
        name = r.pick(FIELDS)
        if r.u8() % 5 == 0:
            return name
        return f"{name}={r.pick(VALUES) if r.u8() % 8 else r.text(12)}"
    if k < 7:
        a = r.pick(ACTIONS)
        return a if r.u8() % 3 == 0 else f"{a}:{r.pick(VALUES) if r.u8() % 8 else r.text(12)}"
    return r.text(16)


def flow_text(r):
    mode = r.u8() % 4
    if mode == 0:
        return r.text(200)
    match = [token(r) for _ in range(r.u8() % 6)]
    text = r.pick(SEPS).join(match)
    if r.u8() % 8:
        acts = [token(r) for _ in range(r.u8() % 5)]
        text += r.pick((" actions=", ",actions=", "actions=", " actions=", "\tactions=")) + ",".join(acts)
    return text


def rules(sw):
    return [(ofsyntax.format_flow(f.rule), f.in_port, tuple(f.out_ports))
            for f in sw.bridges["br0"].flows.flows]


_sw = None
_obs = None
FRAMES = [bytes.fromhex("ffffffffffff000000000001") + b"\x88\xb5" + bytes(46),
          bytes.fromhex("000000000002000000000001") + b"\x81\x00\x00\x0a\x08\x00" + bytes(46),
          bytes.fromhex("0180c2000000000000000003") + b"\x88\xa8\xe0\x05\x81\x00\x00\x07\x08\x06" + bytes(40),
          bytes.fromhex("000000000001000000000002") + b"\x81\x00"]


def one_input(data):
    global _sw, _obs
    if _sw is None:
        _sw = build()
        _obs = Observer(_sw.graph)
    sw = _sw
    r = Reader(data)
    text = flow_text(r)
    # the parsers alone
    rule = None
    try:
        rule = ofsyntax.parse_flow(text)
    except FlowSyntaxError:
        feature(1)
    if rule is not None:
        feature(2 + len(rule.actions) % 8)
        once = ofsyntax.format_flow(rule)
        again = ofsyntax.parse_flow(once)
        assert again == rule, f"{text!r} -> {once!r} -> {again!r}"
        assert ofsyntax.format_flow(again) == once
    try:
        m, prio = ofsyntax.parse_match(text)
        feature(10)
    except FlowSyntaxError:
        feature(11)
    # the switch
    before = rules(sw)
    op = r.u8() % 4
    changed = False
    try:
        if op == 3:
            sw.del_flows("br0", text)
        else:
            sw.add_flow("br0", text)
        feature(20 + op)
        changed = True
        if op != 3:
            dumped = [ofsyntax.format_flow(f.rule) for f in sw.bridges["br0"].flows.flows]
            assert ofsyntax.format_flow(ofsyntax.parse_flow(text)) in dumped, "accepted rule not in the table"
            assert rule is not None
    except ConfigError:
        feature(30 + op)
        assert rules(sw) == before, f"refused {text!r} changed the flow table"
    if not changed:
        return
    # the dataplane with the table as it is now
    port = f"p{1 + r.u8() % 3}"
    inject(sw, port, FRAMES)
    sw.graph.run_until_idle()
    sw.graph.pool.check_accounting(0)
    for got in egress(sw).values():
        assert all(len(g) >= 14 for g in got)
    _obs.features()
    if len(sw.bridges["br0"].flows.flows) > 12:
        sw.del_flows("br0")
        sw.add_flow("br0", DEFAULT)


def seeds():
    out = []
    for text in ["in_port=1 actions=output:2", "priority=100,dl_vlan=10 actions=strip_vlan,normal",
                 "dl_src=01:00:00:00:00:00/01:00:00:00:00:00,arp actions=drop",
                 "priority=5,in_port=p2,dl_vlan_pcp=3 actions=push_vlan:0x88a8,mod_vlan_vid:7,flood",
                 "cookie=0x5 table=0 dl_type=0x0800 actions=mod_vlan_pcp:7,output:p3,in_port,all",
                 " cookie=0x0, duration=1.5s, n_packets=3, n_bytes=180, priority=0 actions=NORMAL"]:
        out.append(bytes([0, 200]) + text.encode())       # mode 0 (raw text), length 200
    return out


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
