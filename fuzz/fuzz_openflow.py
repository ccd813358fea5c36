"""Fuzz the OpenFlow 1.3 agent: the message parser (fastpath.openflow.codec), what the agent
does with each message (fastpath.openflow.agent), and the bridge's flow tables after it.

    python fuzz/fuzz_openflow.py -atheris_runs=1000000 -max_len=2048 [CORPUS_DIR]

An input is a stream of messages on one controller connection (a socketpair into a real
Channel, read by Agent._readable as the dispatch loop would): after a HELLO (or, now and
then, a fuzzed one), each message is raw bytes, or a well-formed message of one of the 30
types (FLOW_MOD with matches, instructions and actions drawn from every OXM field and
action type, GROUP_MOD, PORT_MOD, PACKET_OUT, every multipart request, ROLE_REQUEST,
SET_CONFIG, SET_ASYNC, ...) that is then mutated: a header or inner length that lies (short,
long, past the end), an unknown type, an OXM field whose length runs past the match,
instructions nested inside actions, bytes flipped, cut or appended. The harness gives each
message its own xid and ends the stream with a BARRIER. Invariants:
  - nothing raises out of the agent;
  - once HELLO was exchanged, a message that frames (length >= 8) -- also one that came
    in the same read as a header that cannot be framed -- gets exactly what the spec says: its reply (ECHO, FEATURES, GET_CONFIG, BARRIER, MULTIPART, ROLE, GET_ASYNC)
    or an OpenFlow ERROR with that xid carrying the message's first bytes; messages without
    a reply get nothing or an ERROR; a message of another version gets BAD_VERSION and the
    connection closes; only a stream that cannot be framed closes it otherwise, and the
    close is counted;
  - every reply frames, is version 0x04, and answers an xid that was sent (or 0: async);
  - the final BARRIER_REPLY comes after everything else (the answers are in order);
  - the flow tables stay consistent: the FlowTable's indexes agree with each other and
    with its classifiers, every installed flow is found by a lookup of its own match at
    its priority or better, and frames through the pipeline leave every buffer in the pool.
"""
import socket
import struct

from fuzzcommon import Clock, Observer, Reader, atheris_main, egress, feature, inject, quiet

from fastpath.openflow import agent as agent_mod
from fastpath.openflow import codec as c
from fastpath.openflow.connection import Channel
from fastpath.switch import Switch

REPLY = {c.ECHO_REQUEST: c.ECHO_REPLY, c.FEATURES_REQUEST: c.FEATURES_REPLY,
         c.GET_CONFIG_REQUEST: c.GET_CONFIG_REPLY, c.BARRIER_REQUEST: c.BARRIER_REPLY,
         c.MULTIPART_REQUEST: c.MULTIPART_REPLY, c.ROLE_REQUEST: c.ROLE_REPLY,
         c.GET_ASYNC_REQUEST: c.GET_ASYNC_REPLY}
LAST_XID = 0xFFFFFFF0
MAX_FLOWS = 40

PORTS = [1, 2, 3, 4, 0, 9, c.OFPP_IN_PORT, c.OFPP_TABLE, c.OFPP_NORMAL, c.OFPP_FLOOD, c.OFPP_ALL,
         c.OFPP_CONTROLLER, c.OFPP_LOCAL, c.OFPP_ANY, c.OFPP_MAX, 0xFFFFFF01]
U16 = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFE, 0xFFFF]
FRAMES = [bytes.fromhex("ffffffffffff000000000001") + b"\x88\xb5" + bytes(46),
          bytes.fromhex("000000000002000000000001") + b"\x81\x00\x00\x0a\x08\x00"
          + bytes.fromhex("45000028000100004006") + bytes(2) + bytes([10, 0, 0, 1, 10, 0, 0, 2])
          + struct.pack("!HHIIBBHHH", 1234, 80, 0, 0, 0x50, 2, 8192, 0, 0),
          bytes.fromhex("000000000001000000000002") + b"\x08\x06" + bytes(28),
          bytes.fromhex("000000000001000000000002") + b"\x81\x00"]


def build():
    sw = Switch(n_buffers=256, clock=Clock())
    sw.add_br("br0", **{"other_config:datapath-id": "ab"})
    for k in (1, 2, 3):
        sw.add_port("br0", f"p{k}", type="pg")
    br = sw.bridge("br0")
    br.agent = agent_mod.Agent(sw, br)
    return sw


# ---------------------------------------------------------------- building messages

def value_of(r, size):
    k = r.u8() % 4
    if k == 0:
        return 0
    if k == 1:
        return (1 << (8 * size)) - 1
    if k == 2:
        return r.uint(min(size, 8)) if size <= 8 else r.uint(size)
    return r.pick((1, 2, 10, 0x800, 0x86DD, 0x806, 0x1000 | 10, 0x1FFF, 6, 17, 1, 58))


def oxm_field(r):
    """(field, value, mask) of any basic field, sometimes out of range or masked wrongly."""
    field = r.int_in(0, 45)
    size = c.OXM_SIZES[field] if field < len(c.OXM_SIZES) else r.int_in(1, 16)
    mask = value_of(r, size) if r.chance(3) else None
    return field, value_of(r, size) & ((1 << (8 * size)) - 1), None if mask is None else mask & ((1 << (8 * size)) - 1)


def raw_oxm(r, field, value, mask, size):
    """An OXM TLV by hand, so that its length can lie."""
    hasmask = mask is not None
    length = size * (2 if hasmask else 1)
    if r.chance(6):
        length = r.u8()                                      # a length past (or short of) the field
    full = (1 << (8 * size)) - 1
    body = (value & full).to_bytes(size, "big") + ((mask & full).to_bytes(size, "big") if hasmask else b"")
    cls = c.OXM_BASIC if not r.chance(10) else r.pick((0, 1, 0xFFFF, 0x8001))
    return struct.pack("!HBB", cls, field << 1 | hasmask, length) + body


GOOD_FIELDS = [(c.OXM_IN_PORT, 1, None), (c.OXM_IN_PORT, 2, None), (c.OXM_IN_PORT, 9, None),
               (c.OXM_ETH_DST, 0x0E0000000001, None), (c.OXM_ETH_DST, 1 << 40, 1 << 40),
               (c.OXM_ETH_SRC, 0x0E0000000002, None), (c.OXM_ETH_SRC, 0, 0xFFFFFF000000),
               (c.OXM_VLAN_VID, 0x100A, None), (c.OXM_VLAN_VID, 0, 0x1FFF), (c.OXM_VLAN_VID, 0x1000, 0x1000),
               (c.OXM_VLAN_PCP, 3, None), (c.OXM_ETH_TYPE, 0x88B5, None), (38, 5, 0xFF)]     # metadata
IP_FIELDS = [(11, 0x0A000001, None), (12, 0x0A000000, 0xFF000000), (13, 80, None), (14, 1234, None),
             (15, 53, None), (16, 53, None), (19, 8, None), (20, 0, None)]


def match_bytes(r):
    fields = []
    if r.bool():                                  # one that installs, mostly
        fields += [r.pick(GOOD_FIELDS) for _ in range(r.u8() % 3)]
        if r.bool():
            fields += [(c.OXM_ETH_TYPE, 0x800, None), (10, r.pick((6, 17, 1)), None), r.pick(IP_FIELDS)]
        seen = set()
        fields = [f for f in fields if not (f[0] in seen or seen.add(f[0]))]
    prereqs = r.chance(4)
    if prereqs:                                   # the usual prerequisites, so deeper fields parse
        fields.append((c.OXM_ETH_TYPE, r.pick((0x800, 0x86DD, 0x806)), None))
        fields.append((10, r.pick((6, 17, 1, 58)), None))
    for _ in range(r.u8() % 5 if r.chance(2) else 0):
        fields.append(oxm_field(r))
    body = b""
    for field, value, mask in fields:
        size = c.OXM_SIZES[field] if field < len(c.OXM_SIZES) else 4
        body += raw_oxm(r, field, value, mask, size)
    length = 4 + len(body)
    if r.chance(8):
        length = r.pick((0, 3, 4, length - 1, length + 1, length + 8, 0xFFFF))
    mtype = 1 if not r.chance(12) else r.pick((0, 2, 0xFFFF))
    m = struct.pack("!HH", mtype, length & 0xFFFF) + body
    return m + bytes(-len(m) % 8)


def action_bytes(r, depth=0):
    k = r.u8() % 12
    if k == 0:
        return c.action("output", r.pick(PORTS), r.pick(U16))
    if k == 1:
        return c.action("push_vlan", r.pick((0x8100, 0x88A8, 0x800, 0)))
    if k == 2:
        return c.action("pop_vlan")
    if k == 3:
        return c.action("group", r.pick((1, 2, 7, c.OFPG_ANY, c.OFPG_ALL)))
    if k in (4, 5):
        field, value, _ = oxm_field(r)
        size = c.OXM_SIZES[field] if field < len(c.OXM_SIZES) else 4
        o = raw_oxm(r, field, value, None, size)
        body = struct.pack("!HH", c.AT_SET_FIELD, (4 + len(o) + 7) // 8 * 8) + o
        return body + bytes(-len(body) % 8)
    if k == 6:                                   # dec_nw_ttl, copy_ttl, set_queue, ...
        atype = r.pick(sorted(c.AT_KNOWN) + [1, 99, c.AT_EXPERIMENTER])
        return struct.pack("!HH", atype, 8) + r.bytes(4).ljust(4, b"\0")
    if k == 7 and depth < 2:                     # an instruction where an action belongs
        return instruction_bytes(r, depth + 1)
    if k == 8:
        alen = r.pick((0, 4, 7, 8, 12, 16, 24, 0xFFFF))
        return struct.pack("!HH", r.pick((0, 17, 22, 25, 0xFFFF)), alen) + r.bytes(r.u8() % 24)
    return c.action("output", r.pick((1, 2, 3, c.OFPP_CONTROLLER, c.OFPP_FLOOD)))


def actions_bytes(r, depth=0):
    return b"".join(action_bytes(r, depth) for _ in range(r.u8() % 4))


def instruction_bytes(r, depth=0):
    k = r.u8() % 9
    if k == 0:
        return c.goto_table(r.pick((0, 1, 2, 3, 15, 16, 0xFF)))
    if k == 1:
        return c.write_metadata(r.uint(8), r.uint(8))
    if k in (2, 3, 4):
        inner = actions_bytes(r, depth)
        itype = c.IT_APPLY_ACTIONS if k != 4 else c.IT_WRITE_ACTIONS
        ilen = 8 + len(inner)
        if r.chance(8):
            ilen = r.pick((0, 4, ilen - 8, ilen + 8, 0xFFFF))
        return struct.pack("!HH4x", itype, ilen & 0xFFFF) + inner
    if k == 5:
        return c.clear_actions()
    if k == 6 and depth < 2:                     # instructions nested in an instruction
        inner = b"".join(instruction_bytes(r, depth + 1) for _ in range(1 + r.u8() % 2))
        return struct.pack("!HH4x", r.pick((c.IT_APPLY_ACTIONS, c.IT_WRITE_ACTIONS)), 8 + len(inner)) + inner
    if k == 7:
        return struct.pack("!HH4xI4x", c.IT_METER, 16, r.u32())
    return struct.pack("!HH", r.pick((0, 7, 99, c.IT_EXPERIMENTER)), 8) + r.bytes(4).ljust(4, b"\0")


def instructions_bytes(r):
    return b"".join(instruction_bytes(r) for _ in range(r.u8() % 4))


def flow_mod(r, xid):
    command = r.pick((c.FC_ADD, c.FC_ADD, c.FC_MODIFY, c.FC_MODIFY_STRICT, c.FC_DELETE,
                      c.FC_DELETE_STRICT, 5, 0xFF))
    body = c.FLOW_MOD_FIXED.pack(
        r.pick((0, 1, 0x10, 0xFFFFFFFFFFFFFFFF)), r.pick((0, 0xF0, 0xFFFFFFFFFFFFFFFF)),
        r.pick((0, 0, 1, 2, 3, 15, 16, c.OFPTT_ALL)), command, r.pick((0, 0, 1, 0xFFFF)),
        r.pick((0, 0, 2, 0xFFFF)), r.pick(U16), r.pick((c.NO_BUFFER, c.NO_BUFFER, 0, 7)),
        r.pick((c.OFPP_ANY, c.OFPP_ANY, 1, 2, c.OFPP_CONTROLLER)), r.pick((c.OFPG_ANY, 1)),
        r.pick((0, 0, c.FF_SEND_FLOW_REM, c.FF_CHECK_OVERLAP, c.FF_RESET_COUNTS, 0x1F, 0xFFFF)))
    return c.message(c.FLOW_MOD, xid, body + match_bytes(r) + instructions_bytes(r))


def group_mod(r, xid):
    buckets = b""
    for _ in range(r.u8() % 4):
        acts = actions_bytes(r)
        blen = 16 + len(acts) if not r.chance(8) else r.pick((0, 8, 16, 24, 0xFFFF))
        buckets += c.BUCKET.pack(blen, r.pick((0, 1, 5, 0xFFFF)), r.pick((c.OFPP_ANY, 1, 2, 9)),
                                 r.pick((c.OFPG_ANY, 1))) + acts
    body = c.GROUP_MOD_FIXED.pack(r.pick((c.GC_ADD, c.GC_ADD, c.GC_MODIFY, c.GC_DELETE, 3)),
                                  r.pick((c.GT_ALL, c.GT_SELECT, c.GT_INDIRECT, c.GT_FF, 4)),
                                  r.pick((1, 2, 7, c.OFPG_MAX, c.OFPG_ALL, c.OFPG_ANY, 0xFFFFFF01)))
    return c.message(c.GROUP_MOD, xid, body + buckets)


def multipart(r, xid):
    mtype = r.pick((c.MP_DESC, c.MP_FLOW, c.MP_AGGREGATE, c.MP_TABLE, c.MP_PORT_STATS,
                    c.MP_PORT_DESC, c.MP_TABLE_FEATURES, c.MP_GROUP, c.MP_GROUP_DESC,
                    c.MP_GROUP_FEATURES, 5, 9, 10, 11, 14, 0xFFFF))
    if mtype in (c.MP_FLOW, c.MP_AGGREGATE):
        body = struct.pack("!B3xII4xQQ", r.pick((0, 1, 16, c.OFPTT_ALL)), r.pick((c.OFPP_ANY, 1)),
                           r.pick((c.OFPG_ANY, 1)), r.pick((0, 1)), r.pick((0, 1))) + match_bytes(r)
    elif mtype in (c.MP_PORT_STATS, c.MP_GROUP):
        body = struct.pack("!I4x", r.pick((c.OFPP_ANY, 1, 2, 42, c.OFPG_ALL)))
    else:
        body = r.bytes(r.pick((0, 0, 0, 4, 8)))
    flags = 0 if not r.chance(8) else r.pick((c.MPF_MORE, 0xFFFF))
    return c.multipart_request(xid, mtype, body, flags)


def well_formed(r, xid):
    t = r.u8() % 24
    if t < 6:
        return flow_mod(r, xid)
    if t == 6:
        return group_mod(r, xid)
    if t in (7, 8):
        return multipart(r, xid)
    if t == 9:
        if r.bool():
            return c.packet_out(xid, r.pick((c.OFPP_CONTROLLER, 1, 2, 9, c.OFPP_ANY)),
                                [] if r.chance(4) else [("output", r.pick(PORTS))],
                                r.pick(FRAMES + [b"", bytes(13)]))
        return c.message(c.PACKET_OUT, xid, struct.pack("!IIH6x", r.pick((c.NO_BUFFER, 1)),
                                                      r.pick((c.OFPP_CONTROLLER, 1, 2)),
                                                      r.pick((0, 8, 16, 0xFFFF)))
                      + actions_bytes(r) + r.pick(FRAMES))
    if t == 10:
        return c.port_mod(xid, r.pick((1, 2, 3, 9, c.OFPP_LOCAL)), r.bytes(6).ljust(6, b"\0"), r.pick((0, 1, 0x64, 0xFFFFFFFF)),
                          r.pick((0, 1, 0x64, 0xFFFFFFFF)))
    if t == 11:
        return c.role(c.ROLE_REQUEST, xid, r.pick((c.ROLE_NOCHANGE, c.ROLE_EQUAL, c.ROLE_MASTER,
                                                   c.ROLE_SLAVE, 4, 0xFFFFFFFF)), r.uint(8))
    if t == 12:
        return c.switch_config(c.SET_CONFIG, xid, r.pick((0, 1, 2, 3, 0xFFFF)), r.pick(U16))
    if t == 13:
        return c.async_config(c.SET_ASYNC, xid, [r.u32() for _ in range(6)])
    if t == 14:
        return c.message(c.ECHO_REQUEST, xid, r.bytes(r.u8() % 16))
    simple = (c.FEATURES_REQUEST, c.GET_CONFIG_REQUEST, c.BARRIER_REQUEST, c.GET_ASYNC_REQUEST,
              c.HELLO, c.ECHO_REPLY, c.ERROR, c.TABLE_MOD, c.METER_MOD, c.EXPERIMENTER,
              c.QUEUE_GET_CONFIG_REQUEST, c.PACKET_IN, c.FEATURES_REPLY, r.int_in(30, 255))
    return c.message(r.pick(simple), xid, r.bytes(r.pick((0, 0, 0, 4, 8, 16))))


def mutate(r, msg):
    """Make the message lie about itself."""
    m = bytearray(msg)
    k = r.u8() % 8
    if k == 0 and len(m) > 8:                        # a byte changed anywhere past the header
        m[r.int_in(8, len(m) - 1)] ^= 1 + r.u8() % 255
    elif k == 1:                                     # the header's length: short or long
        struct.pack_into("!H", m, 2, r.pick((8, 9, len(m) - 1, len(m) + 1, len(m) + 8, 0xFFFF)) & 0xFFFF)
        m = m[:8] + m[8:]
    elif k == 2:                                     # cut, the header's length following
        m = m[:r.int_in(8, len(m))]
        struct.pack_into("!H", m, 2, len(m))
    elif k == 3:                                     # bytes appended, the length following
        m += r.bytes(r.u8() % 24)
        struct.pack_into("!H", m, 2, len(m))
    elif k == 4:                                     # another type
        m[1] = r.u8()
    elif k == 5:                                     # another version
        m[0] = r.pick((1, 2, 3, 5, 6, 0))
    return bytes(m)


def stream(r):
    """[(message bytes, xid or None when the fuzzer set the header)]: the input's messages."""
    out = []
    if r.chance(12):                                # a HELLO of its own: versions, bitmaps, garbage
        body = r.bytes(r.u8() % 24)
        out.append((bytes([r.pick((1, 4, 5, 6))]) + c.message(c.HELLO, 0, body)[1:], None))
    else:
        out.append((c.hello(), None))
    xid = 1
    for _ in range(1 + r.u8() % 6):
        kind = r.u8() % 8
        if kind == 0:
            out.append((r.blob(200), None))              # raw bytes
            continue
        msg = well_formed(r, xid)
        if kind < 4:
            msg = mutate(r, msg)
        out.append((msg, xid))
        xid += 1
    out.append((c.message(c.BARRIER_REQUEST, LAST_XID), LAST_XID))
    return out


# ---------------------------------------------------------------- the checks

def check_tables(flows):
    """The FlowTable's indexes agree; every flow is found by a lookup of its own match."""
    every = list(flows)
    assert len(every) == len(flows)
    by_table = {}
    for f in every:
        assert f.id >= 0 and flows.by_id(f.id) is f
        by_table.setdefault(f.rule.table, []).append(f)
        assert flows.identical_to(f.rule.table, f.rule.priority, f.value, f.mask) is f
    for t in range(flows.n_tables):
        assert len(flows.in_table(t)) == len(by_table.get(t, ()))
    for f in every:
        cls = flows.classifier(f.rule.table)
        hit = flows.by_id(cls.lookup_words(f.value))
        assert hit is not None and hit.rule.table == f.rule.table, "an installed flow cannot be found"
        assert hit.rule.priority >= f.rule.priority, "a lookup prefers a lower priority"
    for t in range(flows.n_tables):
        assert len(flows.classifier(t)) == len(by_table.get(t, ()))


def replies_of(sock):
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    msgs = c.split(data)
    assert not data, "the agent sent bytes that do not frame"
    return msgs


_sw = None
_obs = None


def one_input(data):
    with quiet("fastpath"):
        _one_input(data)


def _one_input(data):
    global _sw, _obs
    if _sw is None:
        _sw = build()
        _obs = Observer(_sw.graph)
    sw = _sw
    br = sw.bridge("br0")
    agent = br.agent
    r = Reader(data)
    msgs = stream(r)
    split_at = r.u8()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    ch = Channel(ours, "fuzz", sw.graph, agent._readable)
    closed_before = agent.counters["closed_bad_stream"]
    try:
        wire = b"".join(m for m, _ in msgs)
        # in two pieces, so that messages also arrive cut across reads
        cut = split_at * len(wire) // 255
        replies = []
        for piece in (wire[:cut], wire[cut:]):
            if not piece or not ch.open:
                continue
            theirs.sendall(piece)
            agent._readable(ch)
            replies += replies_of(theirs)
        check_replies(wire, replies, ch, agent.counters["closed_bad_stream"] - closed_before)
    finally:
        ch.close()
        theirs.close()
    check_tables(br.flows)
    # the pipeline with the tables as they are now
    agent_mod._tick_all(sw, 0.0)                       # PACKET_IN queue drained
    inject(sw, f"p{1 + r.u8() % 3}", FRAMES)
    sw.graph.run_until_idle()
    agent_mod._tick_all(sw, 0.0)
    sw.graph.pool.check_accounting(0)
    for got in egress(sw).values():
        assert all(len(g) >= 14 for g in got)
    _obs.features()
    if len(br.flows) > MAX_FLOWS:
        sw.del_flows("br0")
        sw.add_flow("br0", "priority=0 actions=normal")


def framed(wire):
    """The messages the agent can take off the stream, and whether it then hits one that
    cannot be framed."""
    buf = bytearray(wire)
    out = []
    while len(buf) >= c.HEADER.size:
        version, t, length, xid = c.HEADER.unpack_from(buf)
        if length < c.HEADER.size:
            return out, True
        if len(buf) < length:
            break
        out.append((version, t, xid, bytes(buf[:length])))
        del buf[:length]
    return out, False


def more(reply):
    return struct.unpack_from("!H", reply, 10)[0] & c.MPF_MORE


def check_replies(wire, replies, ch, closes):
    """Walk the messages as the agent read them and the replies in order: each reply is
    explained by the message it answers, each message that must be answered is."""
    msgs, garbage = framed(wire)
    for version, t, xid, m in replies:
        assert version == c.VERSION, f"reply of version {version}"
        feature(100 + t)
        if t == c.ERROR:
            etype, code, _ = c.parse_error(m[8:])
            feature(200 + etype * 16 + code)
    k = 0
    negotiated, closing = False, garbage

    def take(xid, types, data=None):
        nonlocal k
        if k < len(replies) and replies[k][2] == xid and replies[k][1] in types:
            if replies[k][1] == c.ERROR and data is not None:
                if c.parse_error(replies[k][3][8:])[2] != data[:c.ERROR_DATA_LEN]:
                    return None
            k += 1
            return replies[k - 1]
        return None

    for version, t, xid, msg in msgs:
        if not negotiated:
            if t == c.HELLO and c.VERSION in c.hello_versions(version, msg[8:]):
                negotiated = True
                continue
            assert take(xid, {c.ERROR}), "a bad HELLO without HELLO_FAILED"
            closing = True
            break
        if version != c.VERSION:
            got = take(xid, {c.ERROR}, msg)
            assert got and c.parse_error(got[3][8:])[:2] == (c.ET_BAD_REQUEST, c.BRC_BAD_VERSION)
            closing = True
            break
        if t in REPLY:
            got = take(xid, {REPLY[t], c.ERROR}, msg)
            assert got, f"type {t} (xid {xid:#x}) was not answered"
            while got[1] == c.MULTIPART_REPLY and more(got[3]):
                got = take(xid, {c.MULTIPART_REPLY})
                assert got, "a multipart reply that says more and stops"
        else:
            got = take(xid, {c.ERROR}, msg)
            if got is None:
                assert t in agent_mod.Agent.HANDLERS, f"unknown type {t} got no ERROR"
    assert k == len(replies), f"replies nothing asked for: {[(t, x) for _, t, x, _ in replies[k:]]}"
    if closing:
        feature(300)
        assert not ch.open and closes == 1, "a broken stream left open, or its close not counted"
    else:
        assert ch.open and closes == 0, "the connection closed without a reason"


def seeds():
    out = []
    for k in range(8):
        out.append(bytes([1, 6 + k % 3]) + bytes([k * 3 + i for i in range(120)]))
    return out


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
