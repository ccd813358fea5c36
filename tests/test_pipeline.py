"""The OpenFlow pipeline: tables and instructions, L3/L4 matches, the actions that edit
headers (checksums checked by scapy), counters, and the classifier under it."""
import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.sctp import SCTP
from scapy.layers.l2 import ARP, Dot1Q, Ether

from fastpath.nodes.classifier import Classifier
from fastpath.nodes.flowtable import match_words
from fastpath import ofsyntax
from l2util import check_pools, checksums_right, make_switch, send

A, B = "00:00:00:00:00:0a", "00:00:00:00:00:0b"
PORTS = {"p1": {}, "p2": {}, "p3": {}, "p4": {}}     # ofports 1..4


def pipeline(*rules):
    sw = make_switch(PORTS)
    sw.del_flows("br0")
    for r in rules:
        sw.add_flow("br0", r)
    return sw


def tcp(src="10.0.0.1", dst="10.0.0.2", sport=1234, dport=80, ttl=64, vlan=None):
    f = Ether(src=A, dst=B)
    if vlan is not None:
        f = f / Dot1Q(vlan=vlan)
    return f / IP(src=src, dst=dst, ttl=ttl) / TCP(sport=sport, dport=dport) / (b"x" * 20)


def out_ports(result):
    return sorted(result)


# what each match selects: (match, frame that hits, frame that misses)
MATCHES = [
    ("tcp,tp_dst=80", tcp(), tcp(dport=81)),
    ("tcp,tcp_src=1234", tcp(), tcp(sport=1)),
    ("udp,udp_dst=53", Ether() / IP() / UDP(dport=53), Ether() / IP() / UDP(dport=54)),
    ("ip,nw_src=10.0.0.0/24", tcp(), tcp(src="10.0.1.1")),
    ("ip,nw_dst=10.0.0.2", tcp(), tcp(dst="10.0.0.3")),
    ("ip,nw_proto=6", tcp(), Ether() / IP() / UDP()),
    ("icmp,icmp_type=8,icmp_code=0", Ether() / IP() / ICMP(type=8), Ether() / IP() / ICMP(type=0)),
    ("arp,arp_op=1", Ether() / ARP(op=1), Ether() / ARP(op=2)),
    ("arp,arp_spa=10.0.0.1,arp_tpa=10.0.0.0/8", Ether() / ARP(psrc="10.0.0.1", pdst="10.9.9.9"),
     Ether() / ARP(psrc="10.0.0.2", pdst="10.9.9.9")),
    ("ipv6,ipv6_src=2001:db8::/32", Ether() / IPv6(src="2001:db8::1"), Ether() / IPv6(src="2001:db9::1")),
    ("ipv6,ipv6_dst=2001:db8::2", Ether() / IPv6(dst="2001:db8::2"), Ether() / IPv6(dst="2001:db8::3")),
    ("tcp6,tp_dst=22", Ether() / IPv6() / TCP(dport=22), Ether() / IPv6() / TCP(dport=23)),
    ("ip,nw_proto=132,tp_dst=5000", Ether() / IP() / SCTP(dport=5000), Ether() / IP() / SCTP(dport=5001)),
    ("ipv6,nw_proto=132,tp_src=7", Ether() / IPv6() / SCTP(sport=7), Ether() / IPv6() / SCTP(sport=8)),
    ("ip,ip_dscp=8", Ether() / IP(tos=33) / TCP(), Ether() / IP(tos=64) / TCP()),   # 33: dscp 8, ecn 1
    ("ip,ip_dscp=8,ip_ecn=1", Ether() / IP(tos=33) / TCP(), Ether() / IP(tos=32) / TCP()),
    ("ipv6,ip_dscp=8", Ether() / IPv6(tc=32), Ether() / IPv6(tc=64)),
    ("ipv6,nw_ecn=3", Ether() / IPv6(tc=35), Ether() / IPv6(tc=34)),
    ("ipv6,ipv6_label=100", Ether() / IPv6(fl=100), Ether() / IPv6(fl=203)),
    ("ipv6,ipv6_label=0x60/0xffff0", Ether() / IPv6(fl=100), Ether() / IPv6(fl=0x100)),
    ("arp,arp_sha=12:11:11:11:11:11", Ether() / ARP(hwsrc="12:11:11:11:11:11"),
     Ether() / ARP(hwsrc="12:11:11:11:11:12")),
    ("arp,arp_tha=22:22:00:22:22:22/ff:ff:00:ff:ff:ff", Ether() / ARP(hwdst="22:22:22:22:22:22"),
     Ether() / ARP(hwdst="22:22:22:22:22:23")),
    ("vlan_tci=0x1000/0x1000", tcp(vlan=5), tcp()),                       # any tagged frame
    ("vlan_tci=0x0000/0x1000", tcp(), tcp(vlan=5)),                       # untagged
    ("dl_vlan=5,tcp,tp_dst=80", tcp(vlan=5), tcp(vlan=6)),               # L4 under a tag
    ("in_port=1,dl_dst=00:00:00:00:00:0b", tcp(), Ether(dst=A) / IP()),
]


@pytest.mark.parametrize("match,hit,miss", MATCHES)
def test_matches(match, hit, miss):
    sw = pipeline(f"priority=10,{match} actions=output:2", "priority=0 actions=output:3")
    assert out_ports(send(sw, "p1", hit)) == ["p2"]
    assert out_ports(send(sw, "p1", miss)) == ["p3"]
    check_pools(sw)


def test_goto_metadata_and_tables():
    sw = pipeline("table=0,in_port=1 actions=write_metadata:0x5/0xff,goto_table:3",
                  "table=3,metadata=0x5/0xff,tcp actions=goto_table:7",
                  "table=3,priority=0 actions=output:4",
                  "table=7,tp_dst=80 actions=output:2",
                  "table=7,priority=0 actions=drop")
    assert out_ports(send(sw, "p1", tcp())) == ["p2"]
    assert out_ports(send(sw, "p1", tcp(dport=81))) == []
    assert out_ports(send(sw, "p1", Ether() / IP() / UDP())) == ["p4"]
    # a miss in a later table drops
    assert send(sw, "p2", tcp()) == {}
    dump = "\n".join(sw.dump_flows("br0"))
    assert "table=3" in dump and "goto_table:7" in dump and "write_metadata:0x5/0xff" in dump
    check_pools(sw)


def test_apply_changes_what_later_tables_see():
    # table 0 pushes VLAN 10 (as Faucet's vlan table does); table 1 matches on it
    sw = pipeline("table=0,in_port=1 actions=push_vlan:0x8100,mod_vlan_vid:10,goto_table:1",
                  "table=1,dl_vlan=10 actions=strip_vlan,output:2",
                  "table=1,priority=0 actions=output:3")
    f = tcp()
    assert send(sw, "p1", f) == {"p2": [bytes(f)]}


def test_action_set_write_clear():
    sw = pipeline("table=0 actions=write_actions(output:3),goto_table:1",
                  "table=1,tcp,tp_dst=80 actions=write_actions(output:2)",
                  "table=1,tcp,tp_dst=81 actions=clear_actions",
                  "table=1,priority=0 actions=output:4")
    assert out_ports(send(sw, "p1", tcp())) == ["p2"]          # output in the set replaced
    assert out_ports(send(sw, "p1", tcp(dport=81))) == []      # cleared
    # apply-actions output and the action set's output both happen
    assert out_ports(send(sw, "p1", tcp(dport=82))) == ["p3", "p4"]
    check_pools(sw)


def test_action_set_order_push_before_set():
    # the action set runs push_vlan before set_field, whatever the order written
    sw = pipeline("table=0 actions=write_actions(mod_vlan_vid:7,push_vlan:0x8100,output:2)")
    got = send(sw, "p1", tcp())["p2"][0]
    assert Ether(got)[Dot1Q].vlan == 7


def test_set_fields_fix_checksums():
    sw = pipeline("tcp actions=mod_nw_src:192.168.1.1,mod_nw_dst:192.168.1.2,mod_tp_src:4000,"
                  "mod_tp_dst:8080,mod_dl_src:02:00:00:00:00:01,mod_dl_dst:02:00:00:00:00:02,"
                  "dec_ttl,output:2",
                  "udp actions=set_field:10.1.1.1->ipv4_dst,set_field:99->udp_dst,output:2")
    f = Ether(send(sw, "p1", tcp())["p2"][0])
    assert (f.src, f.dst) == ("02:00:00:00:00:01", "02:00:00:00:00:02")
    assert (f[IP].src, f[IP].dst, f[IP].ttl, f[TCP].sport, f[TCP].dport) == \
        ("192.168.1.1", "192.168.1.2", 63, 4000, 8080)
    assert checksums_right(f, IP, TCP)
    u = Ether(send(sw, "p1", Ether() / IP(dst="10.0.0.9") / UDP(dport=53) / (b"q" * 9))["p2"][0])
    assert (u[IP].dst, u[UDP].dport) == ("10.1.1.1", 99)
    assert checksums_right(u, IP, UDP)


def test_set_ports_on_ipv6_fix_checksums():
    sw = pipeline("tcp6 actions=mod_tp_src:4000,mod_tp_dst:8080,output:2",
                  "udp6 actions=set_field:99->udp_dst,output:2")
    f = Ether(send(sw, "p1", Ether() / IPv6(src="10::1", dst="20::2") / TCP(sport=1234, dport=80)
                   / (b"x" * 10))["p2"][0])
    assert (f[TCP].sport, f[TCP].dport) == (4000, 8080)
    assert checksums_right(f, TCP)
    u = Ether(send(sw, "p1", Ether() / IPv6(src="10::1", dst="20::2") / UDP(sport=7, dport=53)
                   / (b"q" * 9))["p2"][0])
    assert (u[UDP].sport, u[UDP].dport) == (7, 99)
    assert checksums_right(u, UDP)


def test_dec_ttl_drops_at_one():
    sw = pipeline("ip actions=dec_ttl,output:2")
    assert send(sw, "p1", tcp(ttl=1)) == {}
    assert Ether(send(sw, "p1", tcp(ttl=2))["p2"][0])[IP].ttl == 1
    assert {r: n for n, _, r, _ in sw.errors()}.get("ttl_expired") == 1


def test_outputs_between_edits_and_flood():
    sw = pipeline("in_port=1 actions=output:2,mod_vlan_vid:30,output:3,strip_vlan,flood")
    f = tcp()
    # each output has the frame as it was then; flood goes everywhere but in_port
    assert send(sw, "p1", f) == {"p2": [bytes(f), bytes(f)], "p3": [bytes(tcp(vlan=30)), bytes(f)],
                                 "p4": [bytes(f)]}
    check_pools(sw)


def test_counters_per_rule_and_table():
    sw = pipeline("table=0 actions=goto_table:1", "table=1,tcp actions=output:2")
    send(sw, "p1", tcp(), tcp(), Ether() / IP() / UDP())
    stats = {f: n for f, n, _ in sw.bridge("br0").flows.stats()}
    assert list(stats.values()) == [3, 2]
    tables = {t: (active, lookups, matched)
              for t, active, lookups, matched in sw.bridge("br0").flows.table_stats()}
    assert tables[0] == (1, 3, 3) and tables[1] == (1, 3, 2)


def test_identical_add_replaces_and_priorities_win():
    sw = pipeline("priority=5,tcp actions=output:2", "priority=5,tcp actions=output:3",
                  "priority=9,tcp,tp_dst=80 actions=output:4")
    assert len(sw.bridge("br0").flows) == 2
    assert out_ports(send(sw, "p1", tcp())) == ["p4"]
    assert out_ports(send(sw, "p1", tcp(dport=1))) == ["p3"]
    assert sw.del_flows("br0", "table=0,tcp,tp_dst=80") == 1
    assert out_ports(send(sw, "p1", tcp())) == ["p3"]


def test_ofsyntax_round_trip():
    for text in ("table=3,priority=7,tcp,nw_src=10.0.0.0/8,tp_dst=80 actions=dec_ttl,"
                 "mod_nw_dst:1.2.3.4,clear_actions,write_actions(output:2),"
                 "write_metadata:0x1/0xf,goto_table:4",
                 "arp,arp_op=2,nw_dst=10.1.2.3 actions=drop",
                 "ipv6,ipv6_src=2001:db8::/32,metadata=0x5/0xff actions=NORMAL"):
        rule = ofsyntax.parse_flow(text)
        assert ofsyntax.parse_flow(ofsyntax.format_flow(rule)) == rule


# ---------------------------------------------------------------- the classifier itself

def naive(rules, key):
    """The rules a lookup may answer: every match of the best priority (which of equal
    priorities in different subtables wins is not defined, as in OpenFlow)."""
    hits = [(prio, rid) for rid, (prio, seq, value, mask) in rules.items()
            if all(k & m == v for k, v, m in zip(key, value, mask))]
    if not hits:
        return {-1}
    best = max(p for p, _ in hits)
    return {rid for p, rid in hits if p == best}


def test_classifier_against_a_naive_scan():
    """Random inserts, removes and payload changes: every lookup finds a best rule by a
    naive scan, with that rule's payload (which the slot holds for the packet path)."""
    rng = random.Random(7)
    masks = [tuple(rng.choice((0, 0xff, 0xffff, (1 << 64) - 1)) if rng.random() < 0.4 else 0
                   for _ in range(10)) for _ in range(12)]
    cls, rules, payloads, seq = Classifier(), {}, {}, 0
    for step in range(3000):
        r = rng.random()
        if rules and r < 0.3:
            rid = rng.choice(list(rules))
            cls.remove(rid)
            del rules[rid], payloads[rid]
        elif rules and r < 0.4:
            rid = rng.choice(list(rules))
            payloads[rid] = rng.getrandbits(64)
            cls.set_payload(rid, payloads[rid])
        else:
            rid = step
            mask = rng.choice(masks)
            value = tuple(rng.randrange(4) & m for m in mask)
            prio = rng.randrange(5)
            payloads[rid] = rng.getrandbits(64)
            cls.insert(rid, prio, value, mask, payloads[rid])
            seq += 1
            rules[rid] = (prio, seq, value, mask)
        if step % 10 == 0:
            for _ in range(5):
                key = tuple(rng.randrange(4) for _ in range(10))
                rid, payload = cls.lookup_entry(key)
                assert rid in naive(rules, key)
                assert cls.lookup_words(key) == rid
                assert payload == payloads.get(rid)
    cls.clear()
    assert len(cls) == 0 and cls.n_subtables == 0
    assert cls.lookup_words((0,) * 10) == -1


def test_classifier_100k_exact_rules():
    cls = Classifier()
    m = ofsyntax.Match(dl_dst=(0, (1 << 48) - 1))
    for i in range(100_000):
        m.dl_dst = (i, (1 << 48) - 1)
        value, mask = match_words(m, -1)
        cls.insert(i, 10, value, mask)
    assert cls.n_subtables == 1
    for i in (0, 1, 54_321, 99_999):
        m.dl_dst = (i, (1 << 48) - 1)
        assert cls.lookup_words(match_words(m, -1)[0]) == i
    for i in range(0, 100_000, 2):
        cls.remove(i)
    # every rule left is still found (the subtable's filter was rebuilt as rules went),
    # and none of the removed ones
    for i in range(100_000):
        m.dl_dst = (i, (1 << 48) - 1)
        assert cls.lookup_words(match_words(m, -1)[0]) == (i if i % 2 else -1)


def test_big_tables_prefetched_and_keys_that_change():
    """flow-classify takes a vector through one table at a time, prefetching ahead in
    tables of >= 2 048 rules; a frame whose actions change its key (push_vlan in table 0)
    must be classified in the next table on the key as it is then, in a vector of hundreds."""
    n = 3000
    sw = make_switch(PORTS)
    flows = sw.bridge("br0").flows
    sw.del_flows("br0")
    M, Act = ofsyntax.Match, ofsyntax.Action
    flows.add_rule(ofsyntax.FlowRule(10, M(in_port=1), [Act("push_vlan", 0x8100), Act("mod_vlan_vid", 10)], 0, 0, 1))
    flows.add_rule(ofsyntax.FlowRule(10, M(in_port=4), [], 0, 0, 1))
    mac = lambda i: 0x0E0000000000 + i
    for i in range(n):       # table 1: untagged and tagged keys to the same host go to different ports
        flows.add_rule(ofsyntax.FlowRule(5, M(dl_vlan=10, dl_dst=(mac(i), (1 << 48) - 1)),
                                         [Act("output", 2 + i % 2)], 0, 1))
        flows.add_rule(ofsyntax.FlowRule(5, M(dl_vlan=ofsyntax.VLAN_NONE, dl_dst=(mac(i), (1 << 48) - 1)),
                                         [Act("output", 1)], 0, 1))
    sw.apply_flows("br0")
    rng = random.Random(5)
    hosts = [rng.randrange(n) for _ in range(600)]
    frames = [Ether(src=A, dst=ofsyntax.int_to_mac(mac(i))) / IP() / (b"x" * 20) for i in hosts]
    out = send(sw, "p1", *frames)                    # one burst: vectors of 256
    expect = {"p2": sum(1 for i in hosts if i % 2 == 0), "p3": sum(1 for i in hosts if i % 2)}
    assert {p: len(f) for p, f in out.items()} == expect
    got = {(Ether(f).dst, p) for p, fs in out.items() for f in fs}
    assert got == {(ofsyntax.int_to_mac(mac(i)), f"p{2 + i % 2}") for i in hosts}
    assert all(Ether(f)[Dot1Q].vlan == 10 for fs in out.values() for f in fs)
    # untouched frames from p4 keep the key they arrived with: untagged -> p1
    out = send(sw, "p4", *frames)
    assert {p: len(f) for p, f in out.items()} == {"p1": len(frames)}
    check_pools(sw)
