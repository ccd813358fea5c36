"""OpenFlow meters: token buckets per band in the pipeline (meter:N before a rule's
actions), DROP and DSCP_REMARK bands, PKTPS and KBPS, one bucket shared by every worker;
METER_MOD and the meter multiparts over the wire with ovs-ofctl; the OFPM_CONTROLLER meter
on PACKET_INs."""
import subprocess

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from fastpath.control import Control
from fastpath.openflow import codec as c
from fastpath.switch import Switch
from l2util import make_switch, send
from test_openflow import PORTS, controlled, ofctl, passive, running, stop_loop  # noqa: F401 (fixtures)

PKTPS, KBPS, BURST, STATS = 2, 1, 4, 8
B = "00:00:00:00:00:0b"


def udp(size=100, tos=0, v6=False):
    l3 = IPv6(src="2001:db8::1", dst="2001:db8::2", tc=tos) if v6 else IP(src="10.0.0.1", dst="10.0.0.2", tos=tos)
    pkt = Ether(src="00:00:00:00:00:01", dst=B) / l3 / UDP(sport=1, dport=2)
    return bytes(pkt / bytes(max(0, size - len(pkt))))


def metered(bands, flags, size=100, n=100, **kw):
    """n frames at once through `in_port=p1 actions=meter:1,output:p2`: what left p2."""
    sw = make_switch(PORTS)
    flows = sw.bridge("br0").flows
    flows.set_meter(1, flags, bands)
    sw.add_flow("br0", "in_port=p1 actions=meter:1,output:p2")
    out = send(sw, "p1", *[udp(size, **kw)] * n).get("p2", [])
    return sw, flows, out


def test_pktps_drop_band_passes_its_burst_then_drops():
    sw, flows, out = metered([("drop", 10, 20, 0)], PKTPS | BURST)
    assert len(out) == 20                     # the bucket's 20 packets; 10/s refills nothing here
    assert [(e[1], e[2], e[0]) for e in sw.graph.errors()] == [("flow-classify", "meter_drop", 80)]
    packets, octets, bands = flows.meter_table.counters(flows.meter_table.get(1))
    assert (packets, octets, bands) == (100, 100 * 100, [(80, 80 * 100)])
    line = [x for x in sw.dump_flows("br0") if "meter:1" in x][0]
    assert "actions=meter:1,output:p2" in line and "n_packets=100" in line


def test_kbps_band_counts_bits():
    # 8 kbit burst = 1000 bytes: two 500-byte frames, then nothing
    sw, flows, out = metered([("drop", 80, 8, 0)], KBPS | BURST, size=500, n=10)
    assert len(out) == 2


def test_without_burst_the_bucket_holds_one_seconds_rate():
    sw, flows, out = metered([("drop", 30, 0, 0)], PKTPS)
    assert len(out) == 30


def test_dscp_remark_band_raises_the_drop_precedence_and_the_highest_exceeded_band_applies():
    """Bands: remark at 10 pps (burst 10), drop at 50 pps (burst 50). The first 10 frames
    pass as they are, the next 40 exceed only the remark band (AF11 -> AF12, checksum
    right), the rest exceed both and the drop band (the higher rate) applies."""
    for v6 in (False, True):
        sw, flows, out = metered([("dscp_remark", 10, 10, 1), ("drop", 50, 50, 0)], PKTPS | BURST,
                                 n=100, tos=10 << 2, v6=v6)
        assert len(out) == 50
        dscps = [(Ether(f)[IPv6].tc if v6 else Ether(f)[IP].tos) >> 2 for f in out]
        assert dscps == [10] * 10 + [12] * 40            # AF11, then AF12
        if not v6:
            for f in out[10:]:
                ip = Ether(f)[IP]
                chk = ip.chksum
                del ip.chksum
                assert IP(bytes(ip)).chksum == chk
        _, _, bands = flows.meter_table.counters(flows.meter_table.get(1))
        assert [p for p, _ in bands] == [40, 50]
    # a code point outside the AF classes is left as it is
    sw, flows, out = metered([("dscp_remark", 1, 1, 2)], PKTPS | BURST, n=5, tos=46 << 2)   # EF
    assert [Ether(f)[IP].tos >> 2 for f in out] == [46] * 5


def test_one_meter_is_shared_by_two_workers():
    """Both workers meter into one bucket: together they pass its burst, not twice it."""
    sw = Switch(n_buffers=4096, workers=2)
    sw.add_br("br0")
    for name in ("p1", "p2"):
        sw.add_port("br0", name, type="pg", **{"options:keep": False})
    sw.bridge("br0").flows.set_meter(1, PKTPS | BURST, [("drop", 1, 5000, 0)])
    sw.add_flow("br0", "in_port=p1 actions=meter:1,output:p2")
    inputs = [sw.port("p1").ios[w][0] for w in range(2)]
    for inp in inputs:
        inp.load([udp()], loop=True, limit=50_000)
    sw.start_workers()
    try:
        while any(inp.limit for inp in inputs):
            sw.graph.run_once()
    finally:
        sw.stop_workers()
    for g in sw.graphs:
        g.run_until_idle()
    passed = sum(int(io[1].tx_packets) for io in sw.port("p2").ios)
    assert 5000 <= passed <= 5002, passed         # the burst (and a 1 pps refill)
    rt = [r for r in sw.runtime() if r["name"] == "flow-classify" and r["worker"] != "all"]
    assert all(r["packets"] >= 50_000 for r in rt)
    sw.close()


def test_a_flow_needs_its_meter_and_goes_with_it():
    sw = make_switch(PORTS)
    ctl = Control(sw)
    try:
        ctl.execute(["add-flow", "br0", "in_port=p1 actions=meter:3,output:p2"])
        raise AssertionError("a flow with no meter was accepted")
    except Exception as e:
        assert "meter:3: no such meter" in str(e)
    flows = sw.bridge("br0").flows
    flows.set_meter(3, PKTPS, [("drop", 100, 0, 0)])
    ctl.execute(["add-flow", "br0", "in_port=p1 actions=meter:3,output:p2"])
    gone = flows.delete_meter(3)
    assert [f.rule.meter for f in gone] == [3]
    assert not any("meter" in x for x in sw.dump_flows("br0"))


def test_ovs_ofctl_meters_over_the_wire(passive):
    """add-meter, a flow through it, meter-stats and dump-meters as ovs-ofctl prints them,
    mod-meter, and del-meter taking the flow along."""
    sw, ctl, port = passive
    with running(sw):
        features = ofctl(port, "meter-features")
        assert "max_meter:4096" in features and "drop" in features and "dscp_remark" in features
        ofctl(port, "add-meter", "meter=1,pktps,burst,stats,bands=type=drop,rate=10,burst_size=20")
        ofctl(port, "add-flow", "in_port=1,actions=meter:1,output:2")
        assert "meter:1" in ofctl(port, "dump-flows")
    out = send(sw, "p1", *[udp()] * 50)
    assert len(out["p2"]) == 20
    with running(sw):
        stats = ofctl(port, "meter-stats")
        assert "meter:1 flow_count:1 packet_in_count:50 byte_in_count:5000" in stats, stats
        assert "0: packet_count:30 byte_count:3000" in stats, stats
        dump = ofctl(port, "dump-meters")
        assert "meter=1 pktps burst stats bands=\ntype=drop rate=10 burst_size=20" in dump, dump
        r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "add-meter", f"tcp:127.0.0.1:{port}",
                            "meter=1,pktps,bands=type=drop,rate=5"], capture_output=True, text=True)
        assert r.returncode != 0 and "METER_EXISTS" in r.stderr
        ofctl(port, "mod-meter", "meter=1,pktps,burst,stats,bands=type=drop,rate=10,burst_size=5")
    assert len(send(sw, "p1", *[udp()] * 50)["p2"]) == 5          # buckets start full again
    with running(sw):
        ofctl(port, "del-meter", "meter=1")
        assert "meter:1" not in ofctl(port, "dump-flows")
        assert "meter=1" not in ofctl(port, "dump-meters")


def test_controller_meter_limits_packet_ins(controlled):
    sw, ctl, peer = controlled
    peer.request(c.flow_mod(1, c.FC_DELETE, table_id=c.OFPTT_ALL))
    peer.request(c.flow_mod(2, c.FC_ADD, [], c.apply_actions([("output", c.OFPP_CONTROLLER, 0xFFFF)]),
                            priority=0))
    assert peer.request(c.meter_mod(3, c.MC_ADD, c.MF_PKTPS | c.MF_BURST, c.OFPM_CONTROLLER,
                                    [c.meter_band(c.MBT_DROP, 1, 5)])) == []
    stop_loop(sw)
    send(sw, "p1", *[udp()] * 40)
    with running(sw):
        got = []
        while len(got) < 5:                       # the loop, woken by packet-in, sends them
            m = peer.recv()
            assert m[1] == c.PACKET_IN
            got.append(m)
        replies = peer.request(c.multipart_request(4, c.MP_METER, c.meter_request()))
        assert [m[1] for m in replies] == [c.MULTIPART_REPLY]     # no sixth PACKET_IN
        stats = c.parse_meter_stats(c.parse_multipart_reply(replies[0][3][8:])[2])
    assert stats == [(c.OFPM_CONTROLLER, 0, 40, 40 * 100, [(35, 3500)])]
    assert sw.bridge("br0").agent.counters["packet_in_metered"] == 35


def test_saved_config_leaves_out_flows_whose_meter_only_a_controller_makes():
    sw = make_switch(PORTS)
    ctl = Control(sw)
    sw.bridge("br0").flows.set_meter(2, PKTPS, [("drop", 10, 0, 0)])
    ctl.execute(["add-flow", "br0", "in_port=p1 actions=meter:2,output:p2"])
    ctl.execute(["add-flow", "br0", "in_port=p2 actions=output:p1"])
    saved = ctl.config()
    assert [f.strip() for f in saved["bridge"]["br0"]["flows"]] == \
        ["cookie=0x0, in_port=p2 actions=output:p1", "cookie=0x0, priority=0 actions=NORMAL"]
    sw2 = Switch(n_buffers=1024)
    Control(sw2).apply_config(saved)            # loads: no flow names a meter it lacks
    assert len(sw2.bridge("br0").flows) == 2
