"""The OpenFlow 1.3 agent: the codec and its errors, ovs-ofctl over the wire, a controller
of our own (HELLO, FEATURES, ECHO, BARRIER, errors, PACKET_IN/OUT, PORT_STATUS, reconnect),
fail-mode, and the config round trip."""
import contextlib
import select
import socket
import struct
import subprocess
import threading
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Dot1Q, Ether

from fastpath.control import Control
from fastpath.openflow import codec as c
from fastpath.openflow.connection import ActiveTarget
from l2util import frame, make_switch, send

PORTS = {"p1": {}, "p2": {}, "p3": {}}          # ofports 1, 2, 3
B = "00:00:00:00:00:0b"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


_LOOPS = {}                     # id(switch) -> the thread running its dispatch loop


@contextlib.contextmanager
def running(sw):
    """The dispatch loop (and so the agent) in a thread; frames are sent outside it."""
    t = threading.Thread(target=sw.graph.run, daemon=True)
    _LOOPS[id(sw)] = t
    t.start()
    try:
        yield
    finally:
        sw.graph.stop()
        t.join()


def stop_loop(sw):
    """Stop the dispatch loop and wait until it has (stop() only asks): the test may then
    change the switch from this thread."""
    sw.graph.stop()
    t = _LOOPS.get(id(sw))
    if t is not None:
        t.join()


def wait(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------- codec

def test_codec_round_trips():
    fields = [(c.OXM_IN_PORT, 1, None), (c.OXM_ETH_DST, 0x0000000000BB, 0xFFFFFFFFFF00),
              (c.OXM_ETH_TYPE, 0x88B5, None), (c.OXM_VLAN_VID, 0x100A, None), (c.OXM_VLAN_PCP, 5, None)]
    m = c.match(fields)
    assert len(m) % 8 == 0 and c.parse_match(m) == (fields, len(m))
    acts = [("push_vlan", 0x8100), ("set_field", c.OXM_VLAN_VID, 0x1014), ("pop_vlan",),
            ("output", 2, 0), ("output", c.OFPP_CONTROLLER, 96)]
    assert c.parse_actions(c.actions(acts)) == acts
    msg = c.flow_mod(7, c.FC_MODIFY_STRICT, fields, c.apply_actions(acts) + c.goto_table(1),
                     cookie=0xAB, cookie_mask=0xFF, priority=100)
    version, type, xid, whole = c.split(bytearray(msg))[0]
    assert (version, type, xid, len(whole)) == (4, c.FLOW_MOD, 7, len(msg))
    fm = c.parse_flow_mod(whole[8:])
    assert (fm.command, fm.cookie, fm.cookie_mask, fm.priority, fm.match) == \
        (c.FC_MODIFY_STRICT, 0xAB, 0xFF, 100, fields)
    assert fm.instructions == [(c.IT_APPLY_ACTIONS, acts), (c.IT_GOTO_TABLE, 1)]
    po = c.packet_out(1, c.OFPP_CONTROLLER, [("output", 2)], b"x" * 60)
    assert c.parse_packet_out(po[8:]) == (c.NO_BUFFER, c.OFPP_CONTROLLER, [("output", 2, 0xFFFF)], b"x" * 60)
    pi = c.packet_in(0, c.R_ACTION, 0, 5, 3, b"y" * 20, 64)
    assert c.parse_packet_in(pi[8:]) == (c.NO_BUFFER, 64, c.R_ACTION, 0, 5, [(c.OXM_IN_PORT, 3, None)], b"y" * 20)
    assert c.hello_versions(4, c.hello()[8:]) == {4}
    assert c.hello_versions(6, b"") == {1, 2, 3, 4, 5, 6}
    # multipart replies are cut under 64 KiB, every part but the last saying MORE
    parts = c.multipart_replies(9, c.MP_FLOW, [bytes(1000)] * 200)
    assert len(parts) == 4 and all(len(p) <= 0xFFFF for p in parts)
    assert [c.parse_multipart_reply(p[8:])[1] for p in parts] == [1, 1, 1, 0]
    assert sum(len(c.parse_multipart_reply(p[8:])[2]) for p in parts) == 200000


def test_split_framing():
    buf = bytearray(c.hello(1) + c.message(c.ECHO_REQUEST, 2, b"abc")[:10])
    assert [m[1] for m in c.split(buf)] == [c.HELLO]
    assert len(buf) == 10                        # the partial message waits for the rest
    buf += c.message(c.ECHO_REQUEST, 2, b"abc")[10:]
    assert c.split(buf)[0][3][8:] == b"abc" and not buf
    with pytest.raises(c.FramingError):
        c.split(bytearray(b"\x04\x00\x00\x04\x00\x00\x00\x00"))     # length under a header


OXM = lambda field, data, hasmask=0, cls=c.OXM_BASIC: struct.pack("!HBB", cls, field << 1 | hasmask, len(data)) + data


def raw_match(body, mtype=1, length=None):
    raw = struct.pack("!HH", mtype, 4 + len(body) if length is None else length) + body
    return raw + bytes(-len(raw) % 8)


@pytest.mark.parametrize("data,err", [
    (b"\x00\x01", (c.ET_BAD_MATCH, c.BMC_BAD_LEN)),                              # header cut
    (raw_match(b"", mtype=0), (c.ET_BAD_MATCH, c.BMC_BAD_TYPE)),                 # not OXM
    (raw_match(b"", length=40), (c.ET_BAD_MATCH, c.BMC_BAD_LEN)),                # length lies
    (raw_match(OXM(c.OXM_IN_PORT, b"\0\0\0\1")[:6]), (c.ET_BAD_MATCH, c.BMC_BAD_LEN)),  # OXM past end
    (raw_match(OXM(c.OXM_IN_PORT, b"\0\0\1")), (c.ET_BAD_MATCH, c.BMC_BAD_LEN)),        # wrong size
    (raw_match(OXM(1, b"\0\0\0\1", cls=0x0001)), (c.ET_BAD_MATCH, c.BMC_BAD_FIELD)),    # NXM class
    (raw_match(OXM(99, b"\0")), (c.ET_BAD_MATCH, c.BMC_BAD_FIELD)),                     # no such field
    (raw_match(OXM(c.OXM_ETH_TYPE, b"\x08\0") * 2), (c.ET_BAD_MATCH, c.BMC_DUP_FIELD)),
])
def test_match_errors(data, err):
    with pytest.raises(c.OFError) as e:
        c.parse_match(data)
    assert (e.value.type, e.value.code) == err


@pytest.mark.parametrize("data,err", [
    (b"\0\0\0", (c.ET_BAD_ACTION, c.BAC_BAD_LEN)),
    (struct.pack("!HH4x", c.AT_POP_VLAN, 12), (c.ET_BAD_ACTION, c.BAC_BAD_LEN)),   # not 8-aligned
    (struct.pack("!HH4x", c.AT_POP_VLAN, 16), (c.ET_BAD_ACTION, c.BAC_BAD_LEN)),   # past the end
    (struct.pack("!HH4x", c.AT_OUTPUT, 8), (c.ET_BAD_ACTION, c.BAC_BAD_LEN)),      # output is 16
    (struct.pack("!HH4x", 200, 8), (c.ET_BAD_ACTION, c.BAC_BAD_TYPE)),
    (struct.pack("!HHI", 0xFFFF, 8, 0x2320), (c.ET_BAD_ACTION, c.BAC_BAD_EXPERIMENTER)),
    (struct.pack("!HH", c.AT_SET_FIELD, 16) + OXM(1, b"\0\0\0\1", cls=1) + bytes(4),
     (c.ET_BAD_ACTION, c.BAC_BAD_SET_TYPE)),
    (struct.pack("!HH", c.AT_SET_FIELD, 8) + OXM(c.OXM_VLAN_VID, b"\x10\x01"), (c.ET_BAD_ACTION, c.BAC_BAD_SET_LEN)),
])
def test_action_errors(data, err):
    with pytest.raises(c.OFError) as e:
        c.parse_actions(data)
    assert (e.value.type, e.value.code) == err


@pytest.mark.parametrize("data,err", [
    (struct.pack("!HH", c.IT_APPLY_ACTIONS, 4), (c.ET_BAD_INSTRUCTION, c.BIC_BAD_LEN)),
    (struct.pack("!HH4x", c.IT_APPLY_ACTIONS, 24), (c.ET_BAD_INSTRUCTION, c.BIC_BAD_LEN)),
    (struct.pack("!HH4x", 77, 8), (c.ET_BAD_INSTRUCTION, c.BIC_UNKNOWN_INST)),
    (struct.pack("!HHI", 0xFFFF, 8, 1), (c.ET_BAD_INSTRUCTION, c.BIC_BAD_EXPERIMENTER)),
])
def test_instruction_errors(data, err):
    with pytest.raises(c.OFError) as e:
        c.parse_instructions(data)
    assert (e.value.type, e.value.code) == err


def test_message_body_errors():
    for parse, body in ((c.parse_flow_mod, bytes(20)), (c.parse_packet_out, bytes(10)),
                        (c.parse_multipart_request, bytes(4)), (c.parse_switch_config, bytes(3)),
                        (c.parse_async_config, bytes(20)), (c.parse_flow_stats_request, bytes(8))):
        with pytest.raises(c.OFError) as e:
            parse(body)
        assert (e.value.type, e.value.code) == (c.ET_BAD_REQUEST, c.BRC_BAD_LEN), parse.__name__
    # PACKET_OUT whose actions_len runs past the message
    with pytest.raises(c.OFError) as e:
        c.parse_packet_out(struct.pack("!IIH6x", c.NO_BUFFER, 1, 64))
    assert e.value.code == c.BRC_BAD_LEN


# ---------------------------------------------------------------- a controller of our own

class Controller:
    """A listening socket playing controller: the switch connects to it (tcp:)."""

    def __init__(self, port=0):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(4)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.sock = None
        self.buf = bytearray()

    def accept(self, hello=True):
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(5)
        self.buf = bytearray()
        first = self.recv()
        assert first[1] == c.HELLO and c.hello_versions(first[0], first[3][8:]) == {4}
        if hello:
            self.send(c.hello(1))

    def send(self, data):
        self.sock.sendall(data)

    def recv(self):
        while True:
            msgs = c.split(self.buf)
            if msgs:
                # put back what came after the first
                rest = b"".join(m[3] for m in msgs[1:])
                self.buf[:0] = rest
                return msgs[0]
            data = self.sock.recv(65536)
            if not data:
                raise EOFError
            self.buf += data

    def request(self, msg):
        """Send msg then a barrier; return every message up to the barrier's reply."""
        self.send(msg + c.message(c.BARRIER_REQUEST, 0xBA))
        out = []
        while True:
            m = self.recv()
            if m[1] == c.BARRIER_REPLY and m[2] == 0xBA:
                return out
            out.append(m)

    def close(self):
        if self.sock:
            self.sock.close()
        self.listener.close()


@pytest.fixture
def controlled():
    sw = make_switch(PORTS)
    ctl = Control(sw)
    peer = Controller()
    ctl.execute(["set", "bridge", "br0", "other_config:datapath-id=00000000000000ab", "protocols=OpenFlow13"])
    ctl.execute(["set-controller", "br0", f"tcp:127.0.0.1:{peer.port}"])
    with running(sw):
        peer.accept()
        yield sw, ctl, peer
    peer.close()
    sw.close()


def errors_of(replies):
    return [(c.parse_error(m[3][8:])[:2], m[2]) for m in replies if m[1] == c.ERROR]


def test_handshake_features_echo_barrier(controlled):
    sw, ctl, peer = controlled
    peer.send(c.message(c.FEATURES_REQUEST, 5))
    v, t, xid, msg = peer.recv()
    assert (t, xid) == (c.FEATURES_REPLY, 5)
    assert c.parse_features_reply(msg[8:]) == (0xAB, 0, 16)          # tables
    peer.send(c.message(c.ECHO_REQUEST, 6, b"ping"))
    assert peer.recv()[1:] == (c.ECHO_REPLY, 6, c.message(c.ECHO_REPLY, 6, b"ping"))
    assert peer.request(c.switch_config(c.SET_CONFIG, 7, 0, 96)) == []
    peer.send(c.message(c.GET_CONFIG_REQUEST, 8))
    assert peer.recv()[3][8:] == struct.pack("!HH", 0, 96)
    assert wait(lambda: "is_connected: true" in ctl.execute(["show"]))
    assert ctl.execute(["get-controller", "br0"], "json") == [
        {"target": f"tcp:127.0.0.1:{peer.port}", "connected": True}]


def bad_flow_mod(**kw):
    return c.flow_mod(0x33, c.FC_ADD, **kw)


def raw_flow_mod(match_body=b"", instructions=b""):
    """A FLOW_MOD ADD whose match (OXMs built by hand) and instructions may lie."""
    m = struct.pack("!HH", 1, 4 + len(match_body)) + match_body
    return c.message(c.FLOW_MOD, 0x33, c.FLOW_MOD_FIXED.pack(0, 0, 0, c.FC_ADD, 0, 0, 0x8000, c.NO_BUFFER,
                                                            c.OFPP_ANY, c.OFPG_ANY, 0)
                     + m + bytes(-len(m) % 8) + instructions)


@pytest.mark.parametrize("msg,err", [
    (bad_flow_mod(table_id=16), (c.ET_FLOW_MOD_FAILED, c.FMFC_BAD_TABLE_ID)),
    (c.flow_mod(0x33, 9), (c.ET_FLOW_MOD_FAILED, c.FMFC_BAD_COMMAND)),
    (bad_flow_mod(match_fields=[(10, 6, None)]), (c.ET_BAD_MATCH, c.BMC_BAD_PREREQ)),      # ip_proto, no eth_type
    (bad_flow_mod(match_fields=[(c.OXM_ETH_TYPE, 0x800, 0xff00)]), (c.ET_BAD_MATCH, c.BMC_BAD_MASK)),
    (bad_flow_mod(match_fields=[(38, 1, None)]), (c.ET_BAD_MATCH, c.BMC_BAD_FIELD)),       # tunnel_id
    (bad_flow_mod(match_fields=[(c.OXM_VLAN_PCP, 3, None)]), (c.ET_BAD_MATCH, c.BMC_BAD_PREREQ)),
    (bad_flow_mod(instructions=c.goto_table(0)), (c.ET_BAD_INSTRUCTION, c.BIC_BAD_TABLE_ID)),  # not later
    (bad_flow_mod(instructions=c.goto_table(16)), (c.ET_BAD_INSTRUCTION, c.BIC_BAD_TABLE_ID)),
    (bad_flow_mod(instructions=struct.pack("!HH4xI4x", c.IT_METER, 16, 1)), (c.ET_BAD_INSTRUCTION, c.BIC_BAD_LEN)),
    (bad_flow_mod(instructions=c.meter_instruction(7)), (c.ET_METER_MOD_FAILED, c.MMFC_UNKNOWN_METER)),
    (bad_flow_mod(instructions=c.meter_instruction(c.OFPM_CONTROLLER)), (c.ET_METER_MOD_FAILED, c.MMFC_INVALID_METER)),
    (c.meter_mod(0x33, c.MC_ADD, c.MF_PKTPS | c.MF_KBPS, 1, [c.meter_band(c.MBT_DROP, 10)]),
     (c.ET_METER_MOD_FAILED, c.MMFC_BAD_FLAGS)),
    (c.meter_mod(0x33, c.MC_ADD, c.MF_PKTPS, 1, []), (c.ET_METER_MOD_FAILED, c.MMFC_BAD_BAND)),
    (c.meter_mod(0x33, c.MC_ADD, c.MF_PKTPS, 1, [c.meter_band(c.MBT_DROP, 0)]), (c.ET_METER_MOD_FAILED, c.MMFC_BAD_RATE)),
    (c.meter_mod(0x33, c.MC_ADD, c.MF_PKTPS, 1, [c.meter_band(3, 10)]), (c.ET_METER_MOD_FAILED, c.MMFC_BAD_BAND)),
    (c.meter_mod(0x33, c.MC_ADD, c.MF_PKTPS, 1, [c.meter_band(c.MBT_DROP, 10)[:12]]),
     (c.ET_METER_MOD_FAILED, c.MMFC_BAD_BAND)),
    (c.meter_mod(0x33, c.MC_ADD, c.MF_PKTPS, c.OFPM_SLOWPATH, [c.meter_band(c.MBT_DROP, 10)]),
     (c.ET_METER_MOD_FAILED, c.MMFC_INVALID_METER)),
    (c.meter_mod(0x33, c.MC_MODIFY, c.MF_PKTPS, 9, [c.meter_band(c.MBT_DROP, 10)]),
     (c.ET_METER_MOD_FAILED, c.MMFC_UNKNOWN_METER)),
    (c.meter_mod(0x33, 7, c.MF_PKTPS, 9, [c.meter_band(c.MBT_DROP, 10)]), (c.ET_METER_MOD_FAILED, c.MMFC_BAD_COMMAND)),
    (c.meter_mod(0x33, c.MC_ADD, c.MF_PKTPS, 1, [c.meter_band(c.MBT_DROP, 10)] * 9),
     (c.ET_METER_MOD_FAILED, c.MMFC_OUT_OF_BANDS)),
    (c.message(c.MULTIPART_REQUEST, 0x33, struct.pack("!HH4x", c.MP_METER, 0) + bytes(4)),
     (c.ET_BAD_REQUEST, c.BRC_BAD_LEN)),
    (bad_flow_mod(instructions=c.apply_actions([("raw", 11, bytes(4))])), (c.ET_BAD_ACTION, c.BAC_BAD_TYPE)),  # copy_ttl_out
    (bad_flow_mod(instructions=c.apply_actions([("output", 9)])), (c.ET_BAD_ACTION, c.BAC_BAD_OUT_PORT)),
    (bad_flow_mod(instructions=c.apply_actions([("push_vlan", 0x0800)])), (c.ET_BAD_ACTION, c.BAC_BAD_ARGUMENT)),
    (bad_flow_mod(instructions=c.apply_actions([("set_field", 26, 1)])), (c.ET_BAD_ACTION, c.BAC_BAD_SET_TYPE)),  # ipv6_src
    (bad_flow_mod(flags=c.FF_NO_PKT_COUNTS), (c.ET_FLOW_MOD_FAILED, c.FMFC_BAD_FLAGS)),
    (bad_flow_mod(buffer_id=7), (c.ET_BAD_REQUEST, c.BRC_BUFFER_UNKNOWN)),
    (c.message(c.FLOW_MOD, 0x33, bytes(30)), (c.ET_BAD_REQUEST, c.BRC_BAD_LEN)),          # truncated
    (bad_flow_mod()[:50] + struct.pack("!H", 40) + bad_flow_mod()[52:], (c.ET_BAD_MATCH, c.BMC_BAD_LEN)),  # match length lies
    (bad_flow_mod(instructions=struct.pack("!HH4x", c.IT_APPLY_ACTIONS, 64)), (c.ET_BAD_INSTRUCTION, c.BIC_BAD_LEN)),
    (c.message(200, 0x33), (c.ET_BAD_REQUEST, c.BRC_BAD_TYPE)),
    (c.message(c.EXPERIMENTER, 0x33, bytes(8)), (c.ET_BAD_REQUEST, c.BRC_BAD_EXPERIMENTER)),
    # an OXM whose own length runs past the match that holds it
    (raw_flow_mod(struct.pack("!HBB", c.OXM_BASIC, c.OXM_IN_PORT << 1, 8) + b"\0\0\0\1"),
     (c.ET_BAD_MATCH, c.BMC_BAD_LEN)),
    (raw_flow_mod(struct.pack("!HBB", c.OXM_BASIC, c.OXM_ETH_DST << 1, 200) + bytes(6)),
     (c.ET_BAD_MATCH, c.BMC_BAD_LEN)),
    # instructions nested where actions belong: apply-actions in apply-actions, goto in
    # write-actions, apply in write in apply (an instruction type read as an action type)
    (raw_flow_mod(instructions=struct.pack("!HH4x", c.IT_APPLY_ACTIONS, 32) + c.apply_actions([("output", 2)])),
     (c.ET_BAD_ACTION, c.BAC_BAD_TYPE)),
    (raw_flow_mod(instructions=struct.pack("!HH4x", c.IT_WRITE_ACTIONS, 16) + c.goto_table(1)),
     (c.ET_BAD_ACTION, c.BAC_BAD_TYPE)),
    (raw_flow_mod(instructions=struct.pack("!HH4x", c.IT_APPLY_ACTIONS, 40) + struct.pack("!HH4x", c.IT_WRITE_ACTIONS, 32)
                  + c.apply_actions([("output", 2)])), (c.ET_BAD_ACTION, c.BAC_BAD_TYPE)),
    (raw_flow_mod(instructions=c.apply_actions([("output", 2)]) * 2), (c.ET_BAD_INSTRUCTION, c.BIC_UNSUP_INST)),
    # bodies shorter than their fixed part, for every message that has one
    *[(c.message(t, 0x33, bytes(n)), (c.ET_BAD_REQUEST, c.BRC_BAD_LEN)) for t, n in (
        (c.GROUP_MOD, 4), (c.PORT_MOD, 10), (c.ROLE_REQUEST, 3), (c.SET_ASYNC, 5), (c.SET_CONFIG, 2),
        (c.MULTIPART_REQUEST, 2), (c.PACKET_OUT, 10))],
    (c.message(c.TABLE_MOD, 0x33, bytes(8)), (c.ET_BAD_REQUEST, c.BRC_BAD_TYPE)),
    (c.message(c.FEATURES_REQUEST, 0x33, b"extra"), (c.ET_BAD_REQUEST, c.BRC_BAD_LEN)),
    (c.multipart_request(0x33, 99), (c.ET_BAD_REQUEST, c.BRC_BAD_MULTIPART)),
    (c.multipart_request(0x33, c.MP_FLOW, c.flow_stats_request(table_id=16)), (c.ET_BAD_REQUEST, c.BRC_BAD_TABLE_ID)),
    (c.multipart_request(0x33, c.MP_PORT_STATS, struct.pack("!I4x", 42)), (c.ET_BAD_REQUEST, c.BRC_BAD_PORT)),
    (c.packet_out(0x33, 42, [("output", 2)], bytes(60)), (c.ET_BAD_REQUEST, c.BRC_BAD_PORT)),
    (c.packet_out(0x33, c.OFPP_CONTROLLER, [("output", 2)], bytes(4)), (c.ET_BAD_REQUEST, c.BRC_BAD_PACKET)),
])
def test_errors_keep_the_connection(controlled, msg, err):
    sw, ctl, peer = controlled
    replies = peer.request(msg)
    assert errors_of(replies) == [(err, 0x33)]
    # the error carries the offending message's first bytes
    assert replies[0][3][12:] == msg[:64]
    # and the connection is still in step
    peer.send(c.message(c.ECHO_REQUEST, 0x44))
    assert peer.recv()[1:3] == (c.ECHO_REPLY, 0x44)
    assert ctl.execute(["dump-flows", "br0"]) .count("\n") == 0      # nothing was added


def test_flow_mods_from_the_controller(controlled):
    sw, ctl, peer = controlled
    add = lambda prio, fields, acts, cookie=0: peer.request(c.flow_mod(
        1, c.FC_ADD, fields, c.apply_actions(acts), cookie=cookie, priority=prio))
    assert add(100, [(c.OXM_IN_PORT, 1, None)], [("output", 2)], cookie=0x10) == []
    assert add(90, [(c.OXM_VLAN_VID, 0x100A, None)], [("pop_vlan",), ("output", 3)], cookie=0x20) == []
    assert add(80, [(c.OXM_VLAN_VID, 0, 0x1FFF)], [("push_vlan", 0x8100),
                                                   ("set_field", c.OXM_VLAN_VID, 0x1014),
                                                   ("output", c.OFPP_FLOOD)], cookie=0x21) == []
    dump = ctl.execute(["dump-flows", "br0"])
    assert "cookie=0x10" in dump and "priority=100,in_port=1 actions=output:2" in dump
    assert "priority=90,dl_vlan=10 actions=strip_vlan,output:3" in dump
    assert "priority=80,dl_vlan=0xffff actions=push_vlan:0x8100,mod_vlan_vid:20,FLOOD" in dump
    # modify (non-strict, cookie-filtered): only the 0x2? flows change
    assert peer.request(c.flow_mod(2, c.FC_MODIFY, [], c.apply_actions([("output", 1)]),
                                   cookie=0x20, cookie_mask=0xF0)) == []
    dump = ctl.execute(["dump-flows", "br0"])
    assert "dl_vlan=10 actions=output:1" in dump and "dl_vlan=0xffff actions=output:1" in dump
    assert "in_port=1 actions=output:2" in dump
    # delete_strict needs the priority; delete filters by out_port
    assert peer.request(c.flow_mod(3, c.FC_DELETE_STRICT, [(c.OXM_IN_PORT, 1, None)], priority=99)) == []
    assert "in_port=1" in ctl.execute(["dump-flows", "br0"])
    assert peer.request(c.flow_mod(3, c.FC_DELETE, [], table_id=c.OFPTT_ALL, out_port=2)) == []
    dump = ctl.execute(["dump-flows", "br0"])
    assert "in_port=1" not in dump and dump.count("output:1") == 2
    # flow stats see what fastpathctl added, by name
    ctl.execute(["add-flow", "br0", "priority=5,in_port=p3,dl_src=00:00:00:00:00:0b actions=output:p1"])
    replies = peer.request(c.multipart_request(4, c.MP_FLOW, c.flow_stats_request(
        match_fields=[(c.OXM_IN_PORT, 3, None)])))
    (prio, cookie, n, fields, inst), = c.parse_flow_stats(c.parse_multipart_reply(replies[0][3][8:])[2])
    assert prio == 5 and (c.OXM_IN_PORT, 3, None) in fields and inst == [(c.IT_APPLY_ACTIONS, [("output", 1, 0)])]


def test_packet_in_out_and_port_status(controlled):
    sw, ctl, peer = controlled
    peer.request(c.flow_mod(1, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)],
                            c.apply_actions([("push_vlan", 0x8100), ("set_field", c.OXM_VLAN_VID, 0x1007),
                                             ("output", c.OFPP_CONTROLLER, 32)]), cookie=0x77))
    peer.request(c.flow_mod(1, c.FC_ADD, [], c.apply_actions([("output", c.OFPP_CONTROLLER, 0xFFFF)]),
                            priority=0))
    stop_loop(sw)
    f = bytes(frame(dst=B))
    assert send(sw, "p1", f) == {}
    assert send(sw, "p2", f) == {}
    with running(sw):
        _, t, _, msg = peer.recv()
        assert t == c.PACKET_IN
        buffer_id, total, reason, table, cookie, fields, data = c.parse_packet_in(msg[8:])
        tagged = bytes(Ether(f)[Ether:1].__class__(dst=B, src="00:00:00:00:00:01", type=0x8100) /
                       Dot1Q(vlan=7, type=0x88b5) / bytes(Ether(f).payload))
        assert (buffer_id, total, reason, cookie, fields) == (c.NO_BUFFER, len(f) + 4, c.R_ACTION, 0x77,
                                                              [(c.OXM_IN_PORT, 1, None)])
        assert data == tagged[:32]                  # max_len, and the tag the flow pushed
        _, t, _, msg = peer.recv()
        assert c.parse_packet_in(msg[8:])[2] == c.R_NO_MATCH and c.parse_packet_in(msg[8:])[6] == f
        # PACKET_OUT from the controller, with a tag set on the way
        peer.request(c.packet_out(2, c.OFPP_CONTROLLER, [("push_vlan", 0x8100),
                                                         ("set_field", c.OXM_VLAN_VID, 0x1005),
                                                         ("output", 3)], f))
        # the barrier's reply comes after the frame has left (OpenFlow 1.3 6.2)
        assert sum(io[1].tx_packets for io in sw.port("p3").ios) == 1
    out = [x for io in sw.port("p3").ios for x in io[1].take()]
    assert out == [bytes(frame([(0x8100, 5, 0)], dst=B))]
    with running(sw):
        # PORT_STATUS on add and delete; SET_ASYNC turns them off
        stop_loop(sw)
    sw.add_port("br0", "p4", type="pg")
    _, t, _, msg = peer.recv()
    assert t == c.PORT_STATUS and msg[8] == c.PR_ADD and c.parse_port(msg, 16)[:1] == (4,)
    with running(sw):
        peer.request(c.async_config(c.SET_ASYNC, 3, [3, 0, 0, 0, 0, 0]))
        peer.send(c.message(c.GET_ASYNC_REQUEST, 4))
        assert c.parse_async_config(peer.recv()[3][8:]) == [3, 0, 0, 0, 0, 0]
        stop_loop(sw)
    sw.del_port("p4")
    with running(sw):
        assert peer.request(c.message(c.ECHO_REQUEST, 5))[0][1] == c.ECHO_REPLY     # no PORT_STATUS


def test_hostile_streams_close_and_reconnect_with_backoff(controlled, monkeypatch):
    sw, ctl, peer = controlled
    monkeypatch.setattr(ActiveTarget, "MIN_BACKOFF", 0.1)
    monkeypatch.setattr(ActiveTarget, "MAX_BACKOFF", 0.4)
    agent = sw.bridge("br0").agent
    peer.send(b"\x04\x00\x00\x03garbage!")          # a length that cannot be framed
    with pytest.raises((EOFError, ConnectionError)):
        peer.recv()
    assert agent.counters["closed_bad_stream"] == 1
    peer.accept()                                   # it comes back by itself
    peer.send(b"\x05" + c.message(c.ECHO_REQUEST, 1)[1:])      # OpenFlow 1.4 mid-session
    assert [m[1] for m in iter_until_eof(peer)] == [c.ERROR]      # BAD_VERSION, then closed
    assert agent.counters["closed_bad_stream"] == 2
    # the controller goes away: attempts back off, doubling up to MAX_BACKOFF
    peer.accept()
    port = peer.port
    peer.close()
    target = agent.targets[0]
    assert wait(lambda: target.backoff == 0.4)
    attempts = target.attempts
    time.sleep(1.0)
    assert 1 <= target.attempts - attempts <= 4     # about one per 0.4 s, not a busy loop
    peer2 = Controller(port)
    try:
        peer2.accept()
        peer2.send(c.message(c.ECHO_REQUEST, 9))
        assert peer2.recv()[1:3] == (c.ECHO_REPLY, 9)
    finally:
        peer2.close()


def test_messages_before_garbage_are_answered(controlled):
    """A BARRIER and an ECHO in the same segment as a header that cannot be framed get
    their replies before the connection closes (found by fuzz_openflow's stricter check)."""
    sw, ctl, peer = controlled
    agent = sw.bridge("br0").agent
    peer.send(c.message(c.BARRIER_REQUEST, 7) + c.message(c.ECHO_REQUEST, 8, b"hi") + b"\x04\x00\x00\x02garbage!")
    assert [m[1:3] for m in iter_until_eof(peer)] == [(c.BARRIER_REPLY, 7), (c.ECHO_REPLY, 8)]
    assert agent.counters["closed_bad_stream"] == 1


def iter_until_eof(peer):
    out = []
    try:
        while True:
            out.append(peer.recv())
    except (EOFError, ConnectionError):
        return out


def test_hello_without_13_fails():
    sw = make_switch(PORTS)
    ctl = Control(sw)
    peer = Controller()
    ctl.execute(["set-controller", "br0", f"tcp:127.0.0.1:{peer.port}"])
    try:
        with running(sw):
            peer.accept(hello=False)
            peer.send(c.HEADER.pack(1, c.HELLO, 8, 1))          # OpenFlow 1.0, no bitmap
            replies = iter_until_eof(peer)
        assert [c.parse_error(m[3][8:])[:2] for m in replies] == [(c.ET_HELLO_FAILED, c.HFC_INCOMPATIBLE)]
    finally:
        peer.close()
        sw.close()


# ---------------------------------------------------------------- fail-mode

@pytest.mark.parametrize("mode", ["standalone", "secure"])
def test_fail_mode(mode):
    sw = make_switch(PORTS)
    ctl = Control(sw)
    ctl.execute(["set-fail-mode", "br0", mode])       # secure: the NORMAL flow goes
    ctl.execute(["add-flow", "br0", "in_port=1 actions=output:2"])
    ctl.execute(["set-controller", "br0", f"tcp:127.0.0.1:{free_port()}"])     # nobody there
    f = bytes(frame())
    if mode == "standalone":      # no controller: the NORMAL learning switch, flows bypassed
        assert send(sw, "p1", f) == {"p2": [f], "p3": [f]}
        assert send(sw, "p2", f) == {"p1": [f], "p3": [f]}
    else:                         # its flows, and nothing else
        assert send(sw, "p1", f) == {"p2": [f]}
        assert send(sw, "p2", f) == {}
    # a controller connects: the flow table is in effect in both modes
    peer = Controller()
    ctl.execute(["set-controller", "br0", f"tcp:127.0.0.1:{peer.port}"])
    try:
        with running(sw):
            peer.accept()
            assert peer.request(b"") == []
        assert send(sw, "p1", f) == {"p2": [f]}
        # standalone kept the bridge's priority=0 NORMAL flow; secure never had it
        assert send(sw, "p2", f) == ({"p1": [f], "p3": [f]} if mode == "standalone" else {})
        ctl.execute(["del-controller", "br0"])
        assert ctl.execute(["get-controller", "br0"]) == ""
    finally:
        peer.close()
        sw.close()


# ---------------------------------------------------------------- ovs-ofctl

def ofctl(port, cmd, *args):
    r = subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", cmd, f"tcp:127.0.0.1:{port}", *args],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def passive():
    """A bridge whose controller target is passive (ptcp:PORT on loopback), for ovs-ofctl:
    (switch, its Control, the port)."""
    sw = make_switch(PORTS)
    ctl = Control(sw)
    port = free_port()
    ctl.execute(["set-controller", "br0", f"ptcp:{port}:127.0.0.1"])
    yield sw, ctl, port
    sw.close()


def test_ovs_ofctl_drives_the_bridge(passive):
    sw, ctl, port = passive
    ctl.execute(["set", "bridge", "br0", "other_config:datapath-id=0000000000001234"])
    with running(sw):
        show = ofctl(port, "show")
        assert "dpid:0000000000001234" in show and "1(p1)" in show and "3(p3)" in show
        ofctl(port, "add-flow", "in_port=1,actions=output:2")
        ofctl(port, "add-flow", "dl_vlan=10,actions=strip_vlan,output:3")
        ofctl(port, "add-flow", "priority=10,dl_dst=00:00:00:00:00:0b,actions=drop")
        dump = ofctl(port, "dump-flows")
    assert "in_port=1 actions=output:2" in dump
    assert "dl_vlan=10 actions=pop_vlan,output:3" in dump
    # fastpathctl sees the same table
    mine = ctl.execute(["dump-flows", "br0"])
    assert "in_port=1 actions=output:2" in mine and "dl_vlan=10 actions=strip_vlan,output:3" in mine
    f = bytes(frame())
    assert send(sw, "p1", f) == {"p2": [f]}
    assert send(sw, "p2", frame([(0x8100, 10, 0)])) == {"p3": [f]}
    assert send(sw, "p2", frame(dst=B)) == {}
    assert send(sw, "p3", f) == {"p1": [f], "p2": [f]}              # priority=0 NORMAL
    # and the reverse: a fastpathctl flow in ovs-ofctl's dump, with its counters
    ctl.execute(["add-flow", "br0", "priority=200,in_port=p3 actions=output:p1"])
    assert send(sw, "p3", f) == {"p1": [f]}
    with running(sw):
        dump = ofctl(port, "dump-flows")
        assert "n_packets=1, n_bytes=60, priority=200,in_port=3 actions=output:1" in dump
        assert "n_packets=1, n_bytes=60, in_port=1 actions=output:2" in dump
        ofctl(port, "del-flows", "in_port=1")
        ofctl(port, "del-flows", "--strict", "priority=200,in_port=3")
        dump = ofctl(port, "dump-flows")
        assert "in_port=1" not in dump and "in_port=3" not in dump and "dl_vlan=10" in dump
        assert "port  1: rx pkts=1" in ofctl(port, "dump-ports")
        ofctl(port, "del-flows")
        assert "actions" not in ofctl(port, "dump-flows")
    assert send(sw, "p1", f) == {}                                   # an empty table drops


# ---------------------------------------------------------------- config

def test_config_round_trip(tmp_path):
    sw = make_switch(PORTS)
    ctl = Control(sw)
    target = f"tcp:127.0.0.1:{free_port()}"
    ctl.execute(["set", "bridge", "br0", "other_config:datapath-id=00000000000000cd", "protocols=OpenFlow13"])
    ctl.execute(["set-fail-mode", "br0", "secure"])
    ctl.execute(["set-controller", "br0", target, "ptcp:0:127.0.0.1"])
    show = ctl.execute(["show"])
    assert f'Controller "{target}"' in show and "fail_mode: secure" in show
    assert "is_connected" not in show
    ctl.execute(["save", str(tmp_path / "fp.toml")])
    text = (tmp_path / "fp.toml").read_text()
    assert "datapath_id" in text and "controller" in text
    sw2 = make_switch({})
    ctl2 = Control(sw2)
    sw2.del_br("br0")
    ctl2.load(str(tmp_path / "fp.toml"))
    try:
        assert ctl2.config() == ctl.config()
        assert ctl2.execute(["get-controller", "br0"]).split("\n") == [target, "ptcp:0:127.0.0.1"]
        for bad in (["set-controller", "br0", "udp:1.2.3.4:5"], ["set-fail-mode", "br0", "open"],
                    ["set", "bridge", "br0", "protocols=OpenFlow10"],
                    ["set", "bridge", "br0", "other_config:datapath-id=xyz"]):
            with pytest.raises(Exception):
                ctl2.execute(bad)
        assert ctl2.config() == ctl.config()
    finally:
        sw.close()
        sw2.close()


def test_multi_table_flow_mods_timeouts_and_flow_removed(controlled):
    """What Faucet sends: tables chained with goto_table, identical ADD replaces, MODIFY_STRICT,
    CHECK_OVERLAP, table=ALL deletes by out_port, timeouts with SEND_FLOW_REM."""
    sw, ctl, peer = controlled
    goto = lambda t: c.goto_table(t)
    fm = lambda cmd, fields, inst=b"", **kw: peer.request(c.flow_mod(1, cmd, fields, inst, **kw))
    vlan10 = [(c.OXM_VLAN_VID, 0x100A, None)]
    assert fm(c.FC_ADD, [(c.OXM_IN_PORT, 1, None)], c.apply_actions(
        [("push_vlan", 0x8100), ("set_field", c.OXM_VLAN_VID, 0x100A)]) + goto(1), priority=10) == []
    assert fm(c.FC_ADD, vlan10, goto(2), table_id=1, priority=10) == []
    assert fm(c.FC_ADD, vlan10, c.apply_actions([("pop_vlan",), ("output", 2)]),
              table_id=2, priority=10) == []
    f = frame()
    assert send(sw, "p1", f) == {"p2": [bytes(f)]}
    # identical ADD replaces (one flow, the new actions)
    assert fm(c.FC_ADD, vlan10, c.apply_actions([("pop_vlan",), ("output", 3)]),
              table_id=2, priority=10) == []
    assert ctl.execute(["dump-flows", "br0"]).count("table=2") == 1
    assert send(sw, "p1", f) == {"p3": [bytes(f)]}
    # MODIFY_STRICT: only the flow with this priority and match
    assert fm(c.FC_MODIFY_STRICT, vlan10, c.apply_actions([("pop_vlan",), ("output", 2)]),
              table_id=2, priority=11) == []
    assert send(sw, "p1", f) == {"p3": [bytes(f)]}
    assert fm(c.FC_MODIFY_STRICT, vlan10, c.apply_actions([("pop_vlan",), ("output", 2)]),
              table_id=2, priority=10) == []
    assert send(sw, "p1", f) == {"p2": [bytes(f)]}
    # CHECK_OVERLAP: same priority, overlapping match refused; a disjoint one is fine
    replies = fm(c.FC_ADD, [], c.apply_actions([("output", 3)]), table_id=2, priority=10,
                 flags=c.FF_CHECK_OVERLAP)
    assert errors_of(replies) == [((c.ET_FLOW_MOD_FAILED, c.FMFC_OVERLAP), 1)]
    assert fm(c.FC_ADD, [(c.OXM_VLAN_VID, 0x100B, None)], c.apply_actions([("output", 3)]),
              table_id=2, priority=10, flags=c.FF_CHECK_OVERLAP) == []
    # table=ALL delete filtered by out_port: only the flows that output to 3
    assert fm(c.FC_DELETE, [], table_id=c.OFPTT_ALL, out_port=3) == []
    dump = ctl.execute(["dump-flows", "br0"])
    assert "output:3" not in dump and "output:2" in dump and len(dump.splitlines()) == 4  # + NORMAL
    # TABLE stats per table
    replies = peer.request(c.multipart_request(5, c.MP_TABLE))
    body = c.parse_multipart_reply(replies[0][3][8:])[2]
    assert len(body) == 24 * 16 and struct.unpack_from("!B3xI", body, 24 * 2) == (2, 1)
    # timeouts run off the packet path; SEND_FLOW_REM brings FLOW_REMOVED with the reason
    assert fm(c.FC_ADD, [(c.OXM_IN_PORT, 3, None)], c.apply_actions([("output", 1)]),
              table_id=0, priority=50, hard_timeout=1, flags=c.FF_SEND_FLOW_REM, cookie=0x99) == []
    assert fm(c.FC_ADD, [(c.OXM_IN_PORT, 2, None)], c.apply_actions([("output", 1)]),
              table_id=0, priority=50, idle_timeout=1, flags=c.FF_SEND_FLOW_REM, cookie=0x98) == []
    removed = {}
    deadline = time.monotonic() + 6
    while len(removed) < 2 and time.monotonic() < deadline:
        m = peer.recv()
        if m[1] == c.FLOW_REMOVED:
            cookie, prio, reason, table = struct.unpack_from("!QHBB", m[3], 8)
            removed[cookie] = (prio, reason, table)
    assert removed == {0x99: (50, c.RR_HARD_TIMEOUT, 0), 0x98: (50, c.RR_IDLE_TIMEOUT, 0)}
    assert "priority=50" not in ctl.execute(["dump-flows", "br0"])
    # deleting a flow that asked for it says so too
    assert fm(c.FC_ADD, [(c.OXM_IN_PORT, 3, None)], c.apply_actions([("output", 1)]),
              priority=60, flags=c.FF_SEND_FLOW_REM, cookie=0x97) == []
    replies = fm(c.FC_DELETE_STRICT, [(c.OXM_IN_PORT, 3, None)], priority=60)
    assert [(m[1], struct.unpack_from("!QHBB", m[3], 8)[2]) for m in replies] == \
        [(c.FLOW_REMOVED, c.RR_DELETE)]


def test_ovs_ofctl_several_tables(passive):
    """ovs-ofctl over the wire: add, modify and delete flows in several tables, L3/L4
    matches and the instructions, dump them back; the frames follow."""
    sw, ctl, port = passive
    tcp80 = bytes(Ether(src="00:00:00:00:00:01", dst=B) / IP(src="10.0.0.1", dst="10.0.0.2")
                  / TCP(sport=999, dport=80))
    with running(sw):
        ofctl(port, "del-flows")
        ofctl(port, "add-flow", "table=0,in_port=1,actions=write_metadata:0x7/0xff,goto_table:4")
        ofctl(port, "add-flow", "table=4,priority=20,metadata=0x7/0xff,tcp,nw_dst=10.0.0.0/24,"
                                "tp_dst=80,actions=dec_ttl,output:2")
        ofctl(port, "add-flow", "table=4,priority=0,actions=output:3")
        dump = ofctl(port, "dump-flows")
        assert "table=4" in dump and "goto_table:4" in dump and "tp_dst=80" in dump
    out = send(sw, "p1", tcp80)
    assert list(out) == ["p2"] and Ether(out["p2"][0])[IP].ttl == 63
    with running(sw):
        ofctl(port, "mod-flows", "table=4,tcp,actions=output:3")
    assert list(send(sw, "p1", tcp80)) == ["p3"]
    with running(sw):
        ofctl(port, "del-flows", "table=4")
        dump = ofctl(port, "dump-flows")
        assert "table=4" not in dump and "goto_table:4" in dump
        # per-table counters: two frames looked up and matched in tables 0 and 4
        tables = ofctl(port, "dump-tables")
        assert "table 4:\n    active=0, lookup=2, matched=2" in tables
        assert "tables 6...15: ditto" in tables
    assert send(sw, "p1", tcp80) == {}                  # a miss in table 4 drops


# ---------------------------------------------------------------- ROLE_REQUEST

@pytest.fixture
def two_controllers():
    sw = make_switch(PORTS)
    ctl = Control(sw)
    a, b = Controller(), Controller()
    ctl.execute(["set-controller", "br0", f"tcp:127.0.0.1:{a.port}", f"tcp:127.0.0.1:{b.port}"])
    with running(sw):
        a.accept()
        b.accept()
        assert a.request(b"") == [] and b.request(b"") == []
        yield sw, ctl, a, b
    a.close()
    b.close()
    sw.close()


def role_of(peer, role, generation_id=0, xid=0x51):
    """Send a ROLE_REQUEST: ("reply", role, generation_id) or ("error", type, code)."""
    (_, t, rxid, msg), = peer.request(c.role(c.ROLE_REQUEST, xid, role, generation_id))
    assert rxid == xid
    if t == c.ERROR:
        return ("error",) + c.parse_error(msg[8:])[:2]
    assert t == c.ROLE_REPLY
    return ("reply",) + c.parse_role(msg[8:])


def test_roles_master_slave_and_generation_ids(two_controllers):
    sw, ctl, a, b = two_controllers
    # both start EQUAL; NOCHANGE asks without changing
    assert role_of(a, c.ROLE_NOCHANGE) == ("reply", c.ROLE_EQUAL, 0)
    assert role_of(a, c.ROLE_MASTER, 10) == ("reply", c.ROLE_MASTER, 10)
    assert role_of(b, c.ROLE_NOCHANGE) == ("reply", c.ROLE_EQUAL, 10)
    # a new master demotes the old one
    assert role_of(b, c.ROLE_MASTER, 11) == ("reply", c.ROLE_MASTER, 11)
    assert role_of(a, c.ROLE_NOCHANGE) == ("reply", c.ROLE_SLAVE, 11)
    # stale generation ids are refused (and change nothing); equal ones and wrap-around pass
    assert role_of(a, c.ROLE_MASTER, 9) == ("error", c.ET_ROLE_REQUEST_FAILED, c.RRFC_STALE)
    assert role_of(a, c.ROLE_NOCHANGE) == ("reply", c.ROLE_SLAVE, 11)
    assert role_of(a, c.ROLE_SLAVE, 11) == ("reply", c.ROLE_SLAVE, 11)
    assert role_of(b, c.ROLE_MASTER, 0xFFFFFFFFFFFFFFF0) == (
        "error", c.ET_ROLE_REQUEST_FAILED, c.RRFC_STALE)      # 11 - 16: older
    # EQUAL takes no generation id and is never stale
    assert role_of(b, c.ROLE_EQUAL, 3) == ("reply", c.ROLE_EQUAL, 11)
    assert role_of(b, 7) == ("error", c.ET_ROLE_REQUEST_FAILED, c.RRFC_BAD_ROLE)
    r = b.request(c.message(c.ROLE_REQUEST, 0x52, bytes(8)))
    assert errors_of(r) == [((c.ET_BAD_REQUEST, c.BRC_BAD_LEN), 0x52)]
    # a generation id that wraps past 2**64 is newer
    sw2 = sw.bridge("br0").agent
    sw2.generation_id = 0xFFFFFFFFFFFFFFFE
    assert role_of(b, c.ROLE_MASTER, 1) == ("reply", c.ROLE_MASTER, 1)


def test_slave_cannot_change_state(two_controllers):
    sw, ctl, a, b = two_controllers
    assert role_of(a, c.ROLE_MASTER, 1)[0] == "reply"
    assert role_of(b, c.ROLE_SLAVE, 1)[0] == "reply"
    f = bytes(frame(dst=B))
    refused = [c.flow_mod(0x60, c.FC_ADD, [], c.apply_actions([("output", 2)])),
               c.packet_out(0x60, c.OFPP_CONTROLLER, [("output", 2)], f),
               c.message(c.GROUP_MOD, 0x60, bytes(8)),
               c.port_mod(0x60, 1, bytes(6), c.PC_PORT_DOWN, c.PC_PORT_DOWN)]
    for msg in refused:
        replies = b.request(msg)
        assert errors_of(replies) == [((c.ET_BAD_REQUEST, c.BRC_IS_SLAVE), 0x60)]
        assert replies[0][3][12:] == msg[:64]
    assert ctl.execute(["dump-flows", "br0"]).count("\n") == 0
    assert sw.port("p1").admin_up
    # reads are allowed to a slave
    b.send(c.message(c.FEATURES_REQUEST, 0x61))
    assert b.recv()[1] == c.FEATURES_REPLY
    # the master may
    assert a.request(refused[0]) == []
    assert ctl.execute(["dump-flows", "br0"]).count("\n") == 1
    # and after going EQUAL the former slave may too
    assert role_of(b, c.ROLE_EQUAL)[0] == "reply"
    assert b.request(c.flow_mod(0x62, c.FC_DELETE, [], table_id=c.OFPTT_ALL)) == []
    assert ctl.execute(["dump-flows", "br0"]).count("\n") == 0


def test_slave_async_messages_follow_the_slave_masks(two_controllers):
    sw, ctl, a, b = two_controllers
    assert role_of(a, c.ROLE_MASTER, 1)[0] == "reply"
    assert role_of(b, c.ROLE_SLAVE, 1)[0] == "reply"
    a.request(c.flow_mod(1, c.FC_ADD, [], c.apply_actions([("output", c.OFPP_CONTROLLER, 0xFFFF)]),
                         priority=0))
    a.request(c.flow_mod(1, c.FC_ADD, [(c.OXM_IN_PORT, 3, None)], c.apply_actions([("output", 1)]),
                         flags=c.FF_SEND_FLOW_REM))
    stop_loop(sw)
    f = bytes(frame(dst=B))
    send(sw, "p1", f)
    sw.add_port("br0", "p4", type="pg")
    with running(sw):
        # the master: PACKET_IN and PORT_STATUS; the slave (defaults): PORT_STATUS only
        got_a = [a.recv()[1] for _ in range(2)]
        assert sorted(got_a) == sorted([c.PACKET_IN, c.PORT_STATUS])
        assert [m[1] for m in b.request(b"")] == [c.PORT_STATUS]
        delete = c.flow_mod(2, c.FC_DELETE, [(c.OXM_IN_PORT, 3, None)])
        assert [m[1] for m in a.request(delete)] == [c.FLOW_REMOVED]
        assert [m[1] for m in b.request(b"")] == []            # no FLOW_REMOVED to a slave
        # SET_ASYNC: the slave asks for PACKET_IN (no match) and no PORT_STATUS
        b.request(c.async_config(c.SET_ASYNC, 3, [0x3, 0x1, 0x7, 0x0, 0xF, 0x4]))
        a.request(c.flow_mod(1, c.FC_ADD, [(c.OXM_IN_PORT, 3, None)], c.apply_actions([("output", 1)]),
                             flags=c.FF_SEND_FLOW_REM))
        stop_loop(sw)
    send(sw, "p2", f)
    sw.del_port("p4")
    with running(sw):
        got = [m[1] for m in b.request(b"")]
        while len(got) < 1:
            got.append(b.recv()[1])
        assert got == [c.PACKET_IN]
        # the master still has every default: PORT_STATUS, PACKET_IN, FLOW_REMOVED
        got = [m[1] for m in a.request(delete)]
        while len(got) < 3:
            got.append(a.recv()[1])
        assert sorted(got) == sorted([c.PORT_STATUS, c.PACKET_IN, c.FLOW_REMOVED])
        assert [m[1] for m in b.request(b"")] == [c.FLOW_REMOVED]


# ---------------------------------------------------------------- PORT_MOD

def port_desc(peer):
    replies = peer.request(c.multipart_request(0x70, c.MP_PORT_DESC))
    body = c.parse_multipart_reply(replies[0][3][8:])[2]
    return {p[0]: p for p in (c.parse_port(body, off) for off in range(0, len(body), 64))}


def test_a_punted_frame_wakes_the_loop_instead_of_waiting_for_the_timer(controlled):
    """packet-in signals an eventfd among the dispatch loop's control fds when a vector
    queued frames: serving that fd sends the PACKET_IN, with no agent timer run between
    (which would hold it up to 20 ms). A vector that queued nothing signals nothing."""
    sw, ctl, peer = controlled
    peer.request(c.flow_mod(1, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)],
                            c.apply_actions([("output", c.OFPP_CONTROLLER, 0xFFFF)])))
    stop_loop(sw)                                    # nothing serves timers or fds now
    wake = sw.packet_in_wake
    assert all(node.wake_fd == wake for node in sw.nodes("packet-in"))
    assert select.select([wake], [], [], 0)[0] == []
    send(sw, "p2", frame(dst=B))                     # NORMAL: nothing punted
    assert select.select([wake], [], [], 0)[0] == []
    f = bytes(frame(dst=B))
    send(sw, "p1", f, f)
    assert select.select([wake], [], [], 0)[0] == [wake]
    sw.graph._ready_fds(select.poll(), set(), 0)     # one control service of the loop
    for _ in range(2):
        _, t, _, msg = peer.recv()
        assert t == c.PACKET_IN and c.parse_packet_in(msg[8:])[6] == f
    assert select.select([wake], [], [], 0)[0] == []
    assert not any(node.queue for node in sw.nodes("packet-in"))


def test_port_mod_admin_down_and_no_packet_in(controlled):
    sw, ctl, peer = controlled
    from fastpath import ports as port_types
    mac2 = port_types.mac_of(sw.port("p2"))
    assert port_desc(peer)[2][3:] == (0, c.PS_LIVE)
    peer.request(c.flow_mod(1, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)], c.apply_actions([("output", 2)])))
    # down: PORT_STATUS MODIFY with the config, PORT_DESC shows it, nothing leaves p2
    replies = peer.request(c.port_mod(0x71, 2, mac2, c.PC_PORT_DOWN, c.PC_PORT_DOWN))
    (_, t, _, msg), = replies
    assert t == c.PORT_STATUS and msg[8] == c.PR_MODIFY
    assert c.parse_port(msg, 16)[0] == 2 and c.parse_port(msg, 16)[3:] == (c.PC_PORT_DOWN, c.PS_LINK_DOWN)
    assert port_desc(peer)[2][3:] == (c.PC_PORT_DOWN, c.PS_LINK_DOWN)
    assert not sw.port("p2").admin_up
    # the same again changes nothing: no PORT_STATUS
    assert peer.request(c.port_mod(0x72, 2, mac2, c.PC_PORT_DOWN, c.PC_PORT_DOWN)) == []
    stop_loop(sw)
    f = bytes(frame(dst=B))
    assert send(sw, "p1", f) == {}
    down = lambda: sum(n for g in sw.graphs for n, node, reason, _ in g.errors()
                       if (node, reason) == ("interface-output", "interface_down"))
    assert down() == 1
    with running(sw):
        # up again; a mask of 0 changes nothing
        assert peer.request(c.port_mod(0x73, 2, mac2, c.PC_PORT_DOWN, 0)) == []
        (_, t, _, msg), = peer.request(c.port_mod(0x74, 2, mac2, 0, c.PC_PORT_DOWN))
        assert c.parse_port(msg, 16)[3:] == (0, c.PS_LIVE)
        # NO_PACKET_IN on p3: its frames reach no controller
        peer.request(c.flow_mod(1, c.FC_ADD, [], c.apply_actions([("output", c.OFPP_CONTROLLER, 0xFFFF)]),
                                priority=0))
        mac3 = port_types.mac_of(sw.port("p3"))
        (_, t, _, msg), = peer.request(c.port_mod(0x75, 3, mac3, c.PC_NO_PACKET_IN, c.PC_NO_PACKET_IN))
        assert c.parse_port(msg, 16)[3] == c.PC_NO_PACKET_IN
        assert port_desc(peer)[3][3] == c.PC_NO_PACKET_IN
        stop_loop(sw)
    assert send(sw, "p1", f) == {"p2": [f]}
    send(sw, "p3", f)
    send(sw, "p2", f)
    agent = sw.bridge("br0").agent
    with running(sw):
        _, t, _, msg = peer.recv()
        assert t == c.PACKET_IN and c.parse_packet_in(msg[8:])[5] == [(c.OXM_IN_PORT, 2, None)]
        assert peer.request(b"") == []
    assert agent.counters["packet_in_dropped"] == 1


@pytest.mark.parametrize("args,err", [
    ((42, None, c.PC_PORT_DOWN, c.PC_PORT_DOWN), (c.ET_PORT_MOD_FAILED, c.PMFC_BAD_PORT)),
    ((c.OFPP_LOCAL, None, c.PC_PORT_DOWN, c.PC_PORT_DOWN), (c.ET_PORT_MOD_FAILED, c.PMFC_BAD_PORT)),
    ((2, b"\x02\0\0\0\0\x99", c.PC_PORT_DOWN, c.PC_PORT_DOWN), (c.ET_PORT_MOD_FAILED, c.PMFC_BAD_HW_ADDR)),
    ((2, None, c.PC_NO_FWD, c.PC_NO_FWD), (c.ET_PORT_MOD_FAILED, c.PMFC_BAD_CONFIG)),
    ((2, None, 0, 0, 1 << 6), (c.ET_PORT_MOD_FAILED, c.PMFC_BAD_ADVERTISE)),
])
def test_port_mod_errors(controlled, args, err):
    sw, ctl, peer = controlled
    from fastpath import ports as port_types
    port_no, hw, config, mask, *adv = args
    hw = hw or port_types.mac_of(sw.port("p2"))
    msg = c.port_mod(0x76, port_no, hw, config, mask, *adv)
    replies = peer.request(msg)
    assert errors_of(replies) == [(err, 0x76)] and replies[0][3][12:] == msg[:64]
    assert sw.port("p2").admin_up and port_desc(peer)[2][3] == 0
    r = peer.request(c.message(c.PORT_MOD, 0x77, bytes(16)))
    assert errors_of(r) == [((c.ET_BAD_REQUEST, c.BRC_BAD_LEN), 0x77)]


# ---------------------------------------------------------------- GROUP_MOD

def group_desc_of(peer):
    replies = [m for m in peer.request(c.multipart_request(0x80, c.MP_GROUP_DESC))
               if m[1] == c.MULTIPART_REPLY]
    return c.parse_group_desc(c.parse_multipart_reply(replies[0][3][8:])[2])


def group_stats_of(peer, group_id=c.OFPG_ALL):
    replies = peer.request(c.multipart_request(0x81, c.MP_GROUP, struct.pack("!I4x", group_id)))
    return c.parse_group_stats(c.parse_multipart_reply(replies[0][3][8:])[2])


def test_group_all_and_indirect_in_the_pipeline(controlled):
    sw, ctl, peer = controlled
    # group 1 (ALL): one copy tagged out p2, one untouched out p3; group 2 (INDIRECT): p3
    assert peer.request(c.group_mod(1, c.GC_ADD, c.GT_ALL, 1, [
        c.bucket([("push_vlan", 0x8100), ("set_field", c.OXM_VLAN_VID, 0x1005), ("output", 2)]),
        c.bucket([("output", 3)])])) == []
    assert peer.request(c.group_mod(2, c.GC_ADD, c.GT_INDIRECT, 2, [c.bucket([("output", 3)])])) == []
    assert peer.request(c.flow_mod(3, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)],
                                   c.apply_actions([("group", 1)]))) == []
    # write-actions: the group takes the place of the output in the action set
    assert peer.request(c.flow_mod(3, c.FC_ADD, [(c.OXM_IN_PORT, 2, None)],
                                   c.write_actions([("output", 1), ("group", 2)]))) == []
    assert "in_port=1 actions=group:1" in ctl.execute(["dump-flows", "br0"])
    desc = group_desc_of(peer)
    assert [(t, gid, [b[3] for b in bk]) for t, gid, bk in desc] == [
        (c.GT_ALL, 1, [[("push_vlan", 0x8100), ("set_field", c.OXM_VLAN_VID, 0x1005),
                        ("output", 2, 0)], [("output", 3, 0)]]),
        (c.GT_INDIRECT, 2, [[("output", 3, 0)]])]
    stop_loop(sw)
    f = bytes(frame(dst=B))
    assert send(sw, "p1", f) == {"p2": [bytes(frame([(0x8100, 5, 0)], dst=B))], "p3": [f]}
    assert send(sw, "p1", f, f)["p3"] == [f, f]
    assert send(sw, "p2", f) == {"p3": [f]}
    # the four originals the groups copied are counted as such, not as dropped by a flow
    assert {r: n for n, _, r, _ in sw.errors()} == {"group_copied": 4}
    with running(sw):
        stats = {s[0]: s for s in group_stats_of(peer)}
        assert stats[1][1:4] == (1, 3, 3 * len(f)) and stats[1][4] == [(3, 3 * len(f))] * 2
        assert stats[2][1:4] == (1, 1, len(f))
        assert [s[0] for s in group_stats_of(peer, 2)] == [2]
        # MODIFY: group 1 now sends to p2 only; to the flows it is the same group
        assert peer.request(c.group_mod(4, c.GC_MODIFY, c.GT_ALL, 1, [c.bucket([("output", 2)])])) == []
        # GROUP_FEATURES: ALL and INDIRECT
        r = peer.request(c.multipart_request(0x82, c.MP_GROUP_FEATURES))
        types, caps, *rest = struct.unpack("!II4I4I", c.parse_multipart_reply(r[0][3][8:])[2])
        assert types == (1 << c.GT_ALL | 1 << c.GT_SELECT | 1 << c.GT_INDIRECT | 1 << c.GT_FF)
        assert caps == 1 and rest[:4] == [4096] * 4
        stop_loop(sw)
    assert send(sw, "p1", f) == {"p2": [f]}
    with running(sw):
        # DELETE takes the flows that use the group along, with FLOW_REMOVED if asked
        peer.request(c.flow_mod(5, c.FC_ADD, [(c.OXM_IN_PORT, 3, None)], c.apply_actions([("group", 2)]),
                                flags=c.FF_SEND_FLOW_REM))
        replies = peer.request(c.group_mod(6, c.GC_DELETE, 0, 2))
        assert [m[1] for m in replies] == [c.FLOW_REMOVED]
        assert replies[0][3][8 + 8 + 2] == c.RR_GROUP_DELETE
        dump = ctl.execute(["dump-flows", "br0"])
        assert "group:2" not in dump and "group:1" in dump
        assert peer.request(c.group_mod(7, c.GC_DELETE, 0, 2)) == []     # not there: no error
        assert peer.request(c.group_mod(8, c.GC_DELETE, 0, c.OFPG_ALL)) == []
        assert group_desc_of(peer) == [] and group_stats_of(peer) == []
        assert "group:" not in ctl.execute(["dump-flows", "br0"])


def test_group_buckets_lose_removed_ports(controlled):
    sw, ctl, peer = controlled
    peer.request(c.group_mod(1, c.GC_ADD, c.GT_ALL, 1, [c.bucket([("output", 2)]),
                                                         c.bucket([("output", 3)])]))
    stop_loop(sw)
    sw.del_port("p3")
    with running(sw):
        assert [[b[3] for b in bk] for _, _, bk in group_desc_of(peer)] == [[[("output", 2, 0)], []]]


def test_fastpathctl_group_action(controlled):
    sw, ctl, peer = controlled
    peer.request(c.group_mod(1, c.GC_ADD, c.GT_INDIRECT, 7, [c.bucket([("output", 2)])]))
    stop_loop(sw)
    ctl.execute(["add-flow", "br0", "priority=9,in_port=p1 actions=group:7"])
    assert "in_port=p1 actions=group:7" in ctl.execute(["dump-flows", "br0"])
    f = bytes(frame(dst=B))
    assert send(sw, "p1", f) == {"p2": [f]}
    with pytest.raises(Exception):
        ctl.execute(["add-flow", "br0", "priority=9,in_port=p2 actions=group:8"])


def gm(*args, **kw):
    return c.group_mod(0x90, *args, **kw)


@pytest.mark.parametrize("msg,err", [
    (gm(c.GC_ADD, c.GT_ALL, 1, [c.bucket([("output", 2)])]), (c.ET_GROUP_MOD_FAILED, c.GMFC_GROUP_EXISTS)),
    (gm(c.GC_MODIFY, c.GT_ALL, 5, [c.bucket([("output", 2)])]), (c.ET_GROUP_MOD_FAILED, c.GMFC_UNKNOWN_GROUP)),
    (gm(c.GC_ADD, c.GT_ALL, c.OFPG_ALL, []), (c.ET_GROUP_MOD_FAILED, c.GMFC_INVALID_GROUP)),
    (gm(c.GC_DELETE, c.GT_ALL, c.OFPG_MAX + 1), (c.ET_GROUP_MOD_FAILED, c.GMFC_INVALID_GROUP)),
    (gm(c.GC_ADD, c.GT_INDIRECT, 5, [c.bucket([("output", 2)])] * 2), (c.ET_GROUP_MOD_FAILED, c.GMFC_INVALID_GROUP)),
    (gm(c.GC_ADD, c.GT_INDIRECT, 5, []), (c.ET_GROUP_MOD_FAILED, c.GMFC_INVALID_GROUP)),
    (gm(c.GC_ADD, c.GT_FF, 5, [c.bucket([("output", 2)])]), (c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_WATCH)),
    (gm(c.GC_ADD, c.GT_FF, 5, [c.bucket([("output", 2)], watch_port=9)]), (c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_WATCH)),
    (gm(c.GC_ADD, c.GT_FF, 5, [c.bucket([("output", 2)], watch_port=2, watch_group=1)]),
     (c.ET_GROUP_MOD_FAILED, c.GMFC_WATCH_UNSUPPORTED)),
    (gm(c.GC_ADD, 9, 5, []), (c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_TYPE)),
    (gm(3, c.GT_ALL, 5, []), (c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_COMMAND)),
    (gm(c.GC_ADD, c.GT_ALL, 5, [c.bucket([("group", 1)])]), (c.ET_GROUP_MOD_FAILED, c.GMFC_CHAINING_UNSUPPORTED)),
    (gm(c.GC_ADD, c.GT_ALL, 5, [c.bucket([("output", 2)], weight=3)]), (c.ET_GROUP_MOD_FAILED, c.GMFC_WEIGHT_UNSUPPORTED)),
    (gm(c.GC_ADD, c.GT_ALL, 5, [c.bucket([("output", 9)])]), (c.ET_BAD_ACTION, c.BAC_BAD_OUT_PORT)),
    (c.message(c.GROUP_MOD, 0x90, c.GROUP_MOD_FIXED.pack(c.GC_ADD, c.GT_ALL, 5) + struct.pack("!HHII4x", 40, 0, 0, 0)),
     (c.ET_GROUP_MOD_FAILED, c.GMFC_BAD_BUCKET)),                                      # bucket past the end
    (c.message(c.GROUP_MOD, 0x90, bytes(4)), (c.ET_BAD_REQUEST, c.BRC_BAD_LEN)),
    (c.flow_mod(0x90, c.FC_ADD, [], c.apply_actions([("group", 5)])), (c.ET_BAD_ACTION, c.BAC_BAD_OUT_GROUP)),
    (c.packet_out(0x90, c.OFPP_CONTROLLER, [("group", 1)], bytes(60)), (c.ET_BAD_ACTION, c.BAC_BAD_TYPE)),
    (c.multipart_request(0x90, c.MP_GROUP, bytes(4)), (c.ET_BAD_REQUEST, c.BRC_BAD_LEN)),
    (c.multipart_request(0x90, c.MP_GROUP_DESC, bytes(8)), (c.ET_BAD_REQUEST, c.BRC_BAD_LEN)),
])
def test_group_mod_errors(controlled, msg, err):
    sw, ctl, peer = controlled
    assert peer.request(c.group_mod(1, c.GC_ADD, c.GT_ALL, 1, [c.bucket([("output", 3)])])) == []
    replies = peer.request(msg)
    assert errors_of(replies) == [(err, 0x90)] and replies[0][3][12:] == msg[:64]
    # nothing changed: group 1 as it was, no other group, no flow
    assert [(t, gid, [b[3] for b in bk]) for t, gid, bk in group_desc_of(peer)] == [
        (c.GT_ALL, 1, [[("output", 3, 0)]])]
    assert ctl.execute(["dump-flows", "br0"]).count("\n") == 0


def test_ovs_ofctl_dump_groups(passive):
    sw, ctl, port = passive
    with running(sw):
        ofctl(port, "add-group", "group_id=3,type=all,bucket=output:2,bucket=output:3")
        ofctl(port, "add-group", "group_id=4,type=indirect,bucket=actions=strip_vlan,output:1")
        ofctl(port, "add-flow", "in_port=1,actions=group:3")
        out = ofctl(port, "dump-groups")
        assert "group_id=3,type=all,bucket=actions=output:2,bucket=actions=output:3" in out
        assert "group_id=4,type=indirect,bucket=actions=pop_vlan,output:1" in out
        assert "group:3" in ofctl(port, "dump-flows")
        assert "ref_count=1" in ofctl(port, "dump-group-stats", "group_id=3")
        ofctl(port, "del-groups", "group_id=3")
        assert "group_id=3" not in ofctl(port, "dump-groups")
        assert "group:3" not in ofctl(port, "dump-flows")


def test_group_select_hashes_each_flow_to_one_bucket_by_weight(controlled):
    sw, ctl, peer = controlled
    assert peer.request(c.group_mod(1, c.GC_ADD, c.GT_SELECT, 1, [
        c.bucket([("output", 2)], weight=1), c.bucket([("output", 3)], weight=3),
        c.bucket([("output", 3)], weight=0)])) == []
    assert peer.request(c.flow_mod(2, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)],
                                   c.apply_actions([("group", 1)]))) == []
    (t, gid, bk), = group_desc_of(peer)
    assert t == c.GT_SELECT and [b[0] for b in bk] == [1, 3, 0]
    stop_loop(sw)
    where = {}
    for i in range(400):
        f = bytes(frame(src=f"00:00:00:00:{i >> 8:02x}:{i & 0xff:02x}", dst=B))
        out = send(sw, "p1", f)
        assert list(out.values()) == [[f]]              # exactly one copy, out one port
        where[i] = next(iter(out))
        if i < 20:                                      # the same flow: the same bucket
            assert send(sw, "p1", f, f) == {where[i]: [f, f]}
    n2 = sum(1 for p in where.values() if p == "p2")
    assert 50 < n2 < 150                                 # about a quarter by weight
    with running(sw):
        (gid, refs, packets, _, buckets), = group_stats_of(peer)
        assert packets == 440 and [b[0] for b in buckets][2] == 0
        assert sum(b[0] for b in buckets) == 440 and buckets[0][0] == n2 + sum(
            2 for i in range(20) if where[i] == "p2")
        # all weights 0: nothing goes out
        peer.request(c.group_mod(3, c.GC_MODIFY, c.GT_SELECT, 1, [c.bucket([("output", 2)])]))
        stop_loop(sw)
    assert send(sw, "p1", bytes(frame(dst=B))) == {}


def test_group_fast_failover_follows_port_liveness(controlled):
    sw, ctl, peer = controlled
    from fastpath import ports as port_types
    mac2 = port_types.mac_of(sw.port("p2"))
    assert peer.request(c.group_mod(1, c.GC_ADD, c.GT_FF, 1, [
        c.bucket([("output", 2)], watch_port=2), c.bucket([("output", 3)], watch_port=3)])) == []
    assert peer.request(c.flow_mod(2, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)],
                                   c.apply_actions([("group", 1)]))) == []
    assert [[b[1] for b in bk] for _, _, bk in group_desc_of(peer)] == [[2, 3]]
    f = bytes(frame(dst=B))

    def sent():
        stop_loop(sw)
        time.sleep(0.05)
        return send(sw, "p1", f)
    assert sent() == {"p2": [f]}
    with running(sw):
        peer.request(c.port_mod(3, 2, mac2, c.PC_PORT_DOWN, c.PC_PORT_DOWN))    # p2 down: p3
    assert sent() == {"p3": [f]}
    sw.del_port("p3")                                   # no live bucket left: nothing
    assert send(sw, "p1", f) == {}
    with running(sw):
        peer.request(c.port_mod(4, 2, mac2, 0, c.PC_PORT_DOWN))                 # p2 back
    assert sent() == {"p2": [f]}


def test_packet_out_to_table_sees_the_flow_mods_read_with_it(controlled):
    """FLOW_MOD, PACKET_OUT(OFPP_TABLE) and BARRIER in one write: the frame runs through the
    new flow (not the default NORMAL, which would flood it), and has left by the reply."""
    sw, ctl, peer = controlled
    f = bytes(frame(dst=B))
    peer.request(c.flow_mod(1, c.FC_DELETE, table_id=c.OFPTT_ALL))
    peer.send(c.flow_mod(2, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)], c.apply_actions([("output", 3)]),
                         priority=10)
              + c.packet_out(3, 1, [("output", c.OFPP_TABLE)], f))
    assert peer.request(b"") == []
    tx = {p: sum(int(io[1].tx_packets) for io in sw.port(p).ios) for p in ("p2", "p3")}
    assert tx == {"p2": 0, "p3": 1}
