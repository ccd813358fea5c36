"""The OpenFlow 1.3 wire format (ONF TS-006, wire version 0x04): message framing, OXM
matches, actions and instructions, and the messages the agent reads and writes.

Parsers take the bytes after the 8-byte header and raise OFError(type, code) with the
spec's error type and code for anything malformed or unknown, so that the agent can answer
with an OFPT_ERROR; they never index past what they were given. Builders return whole
messages. Matches are lists of (oxm_field, value, mask or None) in OXM_OF_BASIC; actions
are tuples (kind, ...); what of them the flow table can do is decided in
fastpath.openflow.translate, not here.
"""
import struct

VERSION = 4
HEADER = struct.Struct("!BBHI")
MAX_LENGTH = 0xFFFF

(HELLO, ERROR, ECHO_REQUEST, ECHO_REPLY, EXPERIMENTER, FEATURES_REQUEST, FEATURES_REPLY,
 GET_CONFIG_REQUEST, GET_CONFIG_REPLY, SET_CONFIG, PACKET_IN, FLOW_REMOVED, PORT_STATUS,
 PACKET_OUT, FLOW_MOD, GROUP_MOD, PORT_MOD, TABLE_MOD, MULTIPART_REQUEST, MULTIPART_REPLY,
 BARRIER_REQUEST, BARRIER_REPLY, QUEUE_GET_CONFIG_REQUEST, QUEUE_GET_CONFIG_REPLY,
 ROLE_REQUEST, ROLE_REPLY, GET_ASYNC_REQUEST, GET_ASYNC_REPLY, SET_ASYNC, METER_MOD) = range(30)
N_TYPES = 30

# error types and the codes this agent sends (TS-006 A.4.4)
ET_HELLO_FAILED, ET_BAD_REQUEST, ET_BAD_ACTION, ET_BAD_INSTRUCTION, ET_BAD_MATCH = 0, 1, 2, 3, 4
ET_FLOW_MOD_FAILED, ET_SWITCH_CONFIG_FAILED = 5, 10
HFC_INCOMPATIBLE = 0
BRC_BAD_VERSION, BRC_BAD_TYPE, BRC_BAD_MULTIPART, BRC_BAD_EXPERIMENTER = 0, 1, 2, 3
BRC_BAD_LEN, BRC_BUFFER_UNKNOWN, BRC_BAD_TABLE_ID, BRC_BAD_PORT, BRC_BAD_PACKET = 6, 8, 9, 11, 12
BAC_BAD_TYPE, BAC_BAD_LEN, BAC_BAD_EXPERIMENTER, BAC_BAD_OUT_PORT, BAC_BAD_ARGUMENT = 0, 1, 2, 4, 5
BAC_BAD_SET_TYPE, BAC_BAD_SET_LEN, BAC_BAD_SET_ARGUMENT = 13, 14, 15
BIC_UNKNOWN_INST, BIC_UNSUP_INST, BIC_BAD_TABLE_ID, BIC_BAD_EXPERIMENTER, BIC_BAD_LEN = 0, 1, 2, 5, 7
BMC_BAD_TYPE, BMC_BAD_LEN, BMC_BAD_FIELD, BMC_BAD_VALUE, BMC_BAD_MASK = 0, 1, 6, 7, 8
BMC_BAD_PREREQ, BMC_DUP_FIELD = 9, 10
FMFC_UNKNOWN, FMFC_BAD_TABLE_ID, FMFC_OVERLAP, FMFC_BAD_TIMEOUT, FMFC_BAD_COMMAND = 0, 2, 3, 5, 6
FMFC_BAD_FLAGS = 7
SCFC_BAD_LEN = 1
ERROR_DATA_LEN = 64              # how much of an offending message an error carries

# reserved ports
OFPP_MAX = 0xFFFFFF00
OFPP_IN_PORT, OFPP_TABLE, OFPP_NORMAL, OFPP_FLOOD = 0xFFFFFFF8, 0xFFFFFFF9, 0xFFFFFFFA, 0xFFFFFFFB
OFPP_ALL, OFPP_CONTROLLER, OFPP_LOCAL, OFPP_ANY = 0xFFFFFFFC, 0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPTT_ALL = 0xFF
NO_BUFFER = 0xFFFFFFFF
OFPCML_NO_BUFFER = 0xFFFF

# flow_mod commands and flags
FC_ADD, FC_MODIFY, FC_MODIFY_STRICT, FC_DELETE, FC_DELETE_STRICT = range(5)
FF_SEND_FLOW_REM, FF_CHECK_OVERLAP, FF_RESET_COUNTS, FF_NO_PKT_COUNTS, FF_NO_BYT_COUNTS = 1, 2, 4, 8, 16

# multipart types
MP_DESC, MP_FLOW, MP_AGGREGATE, MP_TABLE, MP_PORT_STATS = 0, 1, 2, 3, 4
MP_PORT_DESC = 13
MPF_MORE = 1

# packet-in reasons, port-status reasons
R_NO_MATCH, R_ACTION, R_INVALID_TTL = 0, 1, 2
RR_IDLE_TIMEOUT, RR_HARD_TIMEOUT, RR_DELETE = 0, 1, 2      # flow-removed reasons
PC_PORT_DOWN = 1                                           # port config bit
PR_ADD, PR_DELETE, PR_MODIFY = 0, 1, 2

# OXM_OF_BASIC fields and their value sizes (TS-006 7.2.3.7)
OXM_BASIC = 0x8000
OXM_IN_PORT, OXM_ETH_DST, OXM_ETH_SRC, OXM_ETH_TYPE, OXM_VLAN_VID, OXM_VLAN_PCP = 0, 3, 4, 5, 6, 7
OXM_SIZES = (4, 4, 8, 6, 6, 2, 2, 1, 1, 1, 1, 4, 4, 2, 2, 2, 2, 2, 2, 1, 1, 2, 4, 4, 6, 6, 16,
             16, 4, 1, 1, 16, 6, 6, 4, 1, 1, 3, 8, 2)
OFPVID_PRESENT = 0x1000

# action types
AT_OUTPUT, AT_PUSH_VLAN, AT_POP_VLAN, AT_GROUP, AT_SET_FIELD = 0, 17, 18, 22, 25
AT_KNOWN = {0, 11, 12, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27}
AT_EXPERIMENTER = 0xFFFF

# instruction types
IT_GOTO_TABLE, IT_WRITE_METADATA, IT_WRITE_ACTIONS, IT_APPLY_ACTIONS = 1, 2, 3, 4
IT_CLEAR_ACTIONS, IT_METER, IT_EXPERIMENTER = 5, 6, 0xFFFF


class OFError(Exception):
    """A message the switch refuses: type and code as the spec numbers them."""

    def __init__(self, type, code, why=""):
        super().__init__(why or f"error type {type} code {code}")
        self.type = type
        self.code = code


class FramingError(Exception):
    """The byte stream cannot be split into messages any more: the connection must close.
    `messages`: the whole ones that came before the bad header, still to be answered."""

    def __init__(self, why, messages=()):
        super().__init__(why)
        self.messages = list(messages)


def _need(body, n, type, code):
    if len(body) < n:
        raise OFError(type, code, f"{len(body)} bytes where {n} are needed")


def _pad8(n):
    return (n + 7) // 8 * 8


# ---------------------------------------------------------------- framing

def message(type, xid, body=b""):
    length = HEADER.size + len(body)
    if length > MAX_LENGTH:
        raise ValueError(f"message of {length} bytes is over OpenFlow's 65535")
    return HEADER.pack(VERSION, type, length, xid & 0xFFFFFFFF) + body


def split(buf):
    """Take the complete messages off the front of bytearray buf: [(version, type, xid,
    whole message)]. A length under 8 cannot be framed: FramingError."""
    out = []
    pos, end = 0, len(buf)
    try:
        while end - pos >= 8:
            version, type, length, xid = HEADER.unpack_from(buf, pos)
            if length < 8:
                raise FramingError(f"message length {length} is shorter than a header", out)
            if end - pos < length:
                break
            out.append((version, type, xid, bytes(buf[pos:pos + length])))
            pos += length
    finally:
        del buf[:pos]                   # once, not once a message
    return out


# ---------------------------------------------------------------- HELLO, ERROR, simple ones

def hello(xid=0):
    """HELLO with a version bitmap offering 1.3 only."""
    return message(HELLO, xid, struct.pack("!HHI", 1, 8, 1 << VERSION))


def hello_versions(version, body):
    """The versions a peer's HELLO offers: its bitmap if it sent one (TS-006 7.5.1),
    else every version up to its header's."""
    off = 0
    while off + 4 <= len(body):
        etype, elen = struct.unpack_from("!HH", body, off)
        if elen < 4 or off + elen > len(body):
            break                         # a broken element: fall back to the header version
        if etype == 1:
            versions = set()
            for i in range((elen - 4) // 4):
                word = struct.unpack_from("!I", body, off + 4 + 4 * i)[0]
                versions.update(32 * i + b for b in range(32) if word >> b & 1)
            return versions
        off += _pad8(elen)
    return set(range(1, version + 1))


def error(xid, type, code, data=b""):
    return message(ERROR, xid, struct.pack("!HH", type, code) + data)


def parse_error(body):
    _need(body, 4, ET_BAD_REQUEST, BRC_BAD_LEN)
    type, code = struct.unpack_from("!HH", body)
    return type, code, body[4:]


def features_reply(xid, datapath_id, n_tables=1, capabilities=0x7):
    # capabilities: FLOW_STATS | TABLE_STATS | PORT_STATS
    return message(FEATURES_REPLY, xid, struct.pack("!QIBB2xII", datapath_id, 0, n_tables, 0,
                                                    capabilities, 0))


def parse_features_reply(body):
    _need(body, 24, ET_BAD_REQUEST, BRC_BAD_LEN)
    dpid, n_buffers, n_tables = struct.unpack_from("!QIB", body)
    return dpid, n_buffers, n_tables


def switch_config(type, xid, flags, miss_send_len):
    """GET_CONFIG_REPLY or SET_CONFIG."""
    return message(type, xid, struct.pack("!HH", flags, miss_send_len))


def parse_switch_config(body):
    if len(body) != 4:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "SET_CONFIG body is not 4 bytes")
    return struct.unpack("!HH", body)


def async_config(type, xid, masks):
    """GET_ASYNC_REPLY or SET_ASYNC; masks: 6 words (packet-in, port-status, flow-removed;
    each [master/equal, slave])."""
    return message(type, xid, struct.pack("!6I", *masks))


def parse_async_config(body):
    if len(body) != 24:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "SET_ASYNC body is not 24 bytes")
    return list(struct.unpack("!6I", body))


# ---------------------------------------------------------------- OXM match

_HH = struct.Struct("!HH")
_OXM_HEADER = struct.Struct("!HBB")
_from_bytes = int.from_bytes


def parse_match(data, off=0):
    """ofp_match at data[off:] -> ([(field, value, mask or None)], bytes used incl. pad)."""
    if len(data) - off < 4:
        raise OFError(ET_BAD_MATCH, BMC_BAD_LEN, f"{max(len(data) - off, 0)} bytes where 4 are needed")
    mtype, mlen = _HH.unpack_from(data, off)
    if mtype != 1:
        raise OFError(ET_BAD_MATCH, BMC_BAD_TYPE, f"match type {mtype} is not OXM")
    if mlen < 4 or off + _pad8(mlen) > len(data):
        raise OFError(ET_BAD_MATCH, BMC_BAD_LEN, f"match length {mlen} past the message")
    fields, seen = [], 0                # seen: a bit per field number
    pos, end = off + 4, off + mlen
    while pos < end:
        if end - pos < 4:
            raise OFError(ET_BAD_MATCH, BMC_BAD_LEN, "OXM header cut short")
        cls, fh, flen = _OXM_HEADER.unpack_from(data, pos)
        field = fh >> 1
        pos += 4
        if pos + flen > end:
            raise OFError(ET_BAD_MATCH, BMC_BAD_LEN, "OXM past the match's length")
        if cls != OXM_BASIC or field >= len(OXM_SIZES):
            raise OFError(ET_BAD_MATCH, BMC_BAD_FIELD, f"OXM class {cls:#x} field {field}")
        size = OXM_SIZES[field]
        if flen != (size << 1 if fh & 1 else size):
            raise OFError(ET_BAD_MATCH, BMC_BAD_LEN, f"OXM field {field} of {flen} bytes")
        if seen >> field & 1:
            raise OFError(ET_BAD_MATCH, BMC_DUP_FIELD, f"OXM field {field} twice")
        seen |= 1 << field
        if fh & 1:
            fields.append((field, _from_bytes(data[pos:pos + size], "big"),
                           _from_bytes(data[pos + size:pos + flen], "big")))
        else:
            fields.append((field, _from_bytes(data[pos:pos + size], "big"), None))
        pos += flen
    return fields, (mlen + 7) & ~7


def oxm(field, value, mask=None):
    size = OXM_SIZES[field]
    raw = value.to_bytes(size, "big") + (mask.to_bytes(size, "big") if mask is not None else b"")
    return struct.pack("!HBB", OXM_BASIC, field << 1 | (mask is not None), len(raw)) + raw


def match(fields=()):
    """[(field, value, mask or None)] -> ofp_match bytes, padded to 8."""
    body = b"".join(oxm(*f) for f in fields)
    raw = struct.pack("!HH", 1, 4 + len(body)) + body
    return raw + bytes(_pad8(len(raw)) - len(raw))


# ---------------------------------------------------------------- actions

_OUTPUT_ARGS = struct.Struct("!IH")


def parse_actions(data, pos=0, end=None):
    """A list of actions (data[pos:end]) -> [("output", port, max_len) | ("push_vlan",
    ethertype) | ("pop_vlan",) | ("set_field", field, value) | ("unsupported", type)]."""
    out = []
    end = len(data) if end is None else end
    while pos < end:
        if end - pos < 4:
            raise OFError(ET_BAD_ACTION, BAC_BAD_LEN, "action header cut short")
        atype, alen = _HH.unpack_from(data, pos)
        if alen < 8 or alen % 8 or pos + alen > end:
            raise OFError(ET_BAD_ACTION, BAC_BAD_LEN, f"action {atype} of length {alen}")
        if atype == AT_OUTPUT:          # the common one, read in place
            if alen != 16:
                raise OFError(ET_BAD_ACTION, BAC_BAD_LEN, "output action not 16 bytes")
            port, max_len = _OUTPUT_ARGS.unpack_from(data, pos + 4)
            out.append(("output", port, max_len))
            pos += 16
            continue
        a = data[pos:pos + alen]
        if atype == AT_PUSH_VLAN:
            if alen != 8:
                raise OFError(ET_BAD_ACTION, BAC_BAD_LEN, "push_vlan action not 8 bytes")
            out.append(("push_vlan", struct.unpack_from("!H", a, 4)[0]))
        elif atype == AT_POP_VLAN:
            if alen != 8:
                raise OFError(ET_BAD_ACTION, BAC_BAD_LEN, "pop_vlan action not 8 bytes")
            out.append(("pop_vlan",))
        elif atype == AT_SET_FIELD:
            cls, fh, flen = struct.unpack_from("!HBB", a, 4)
            field, hasmask = fh >> 1, fh & 1
            if 8 + flen > alen:
                raise OFError(ET_BAD_ACTION, BAC_BAD_SET_LEN, "set_field OXM past the action")
            if cls != OXM_BASIC or field >= len(OXM_SIZES):
                raise OFError(ET_BAD_ACTION, BAC_BAD_SET_TYPE, f"set_field class {cls:#x} field {field}")
            if hasmask or flen != OXM_SIZES[field]:
                raise OFError(ET_BAD_ACTION, BAC_BAD_SET_LEN, f"set_field field {field} of {flen} bytes")
            out.append(("set_field", field, int.from_bytes(a[8:8 + flen], "big")))
        elif atype == AT_GROUP:
            if alen != 8:
                raise OFError(ET_BAD_ACTION, BAC_BAD_LEN, "group action not 8 bytes")
            out.append(("group", struct.unpack_from("!I", a, 4)[0]))
        elif atype == AT_EXPERIMENTER:
            raise OFError(ET_BAD_ACTION, BAC_BAD_EXPERIMENTER, "experimenter action")
        elif atype in AT_KNOWN:
            out.append(("unsupported", atype))
        else:
            raise OFError(ET_BAD_ACTION, BAC_BAD_TYPE, f"unknown action type {atype}")
        pos += alen
    return out


def action(kind, *args):
    """One action's bytes: ("output", port[, max_len]), ("push_vlan", ethertype),
    ("pop_vlan",), ("set_field", field, value), ("raw", type, body) for tests."""
    if kind == "output":
        port, max_len = args[0], args[1] if len(args) > 1 else OFPCML_NO_BUFFER
        return struct.pack("!HHIH6x", AT_OUTPUT, 16, port, max_len)
    if kind == "push_vlan":
        return struct.pack("!HHH2x", AT_PUSH_VLAN, 8, args[0])
    if kind == "pop_vlan":
        return struct.pack("!HH4x", AT_POP_VLAN, 8)
    if kind == "group":
        return struct.pack("!HHI", AT_GROUP, 8, args[0])
    if kind == "set_field":
        o = oxm(args[0], args[1])
        body = struct.pack("!HH", AT_SET_FIELD, _pad8(4 + len(o))) + o
        return body + bytes(_pad8(len(body)) - len(body))
    if kind == "raw":
        return struct.pack("!HH", args[0], 4 + len(args[1])) + args[1]
    raise ValueError(f"unknown action kind {kind!r}")


def actions(items):
    return b"".join(action(*a) for a in items)


# ---------------------------------------------------------------- instructions

def parse_instructions(data, pos=0):
    """data[pos:] -> [(type, payload)]: APPLY/WRITE_ACTIONS carry parsed actions,
    GOTO_TABLE its table, the others None."""
    out, end = [], len(data)
    while pos < end:
        if end - pos < 4:
            raise OFError(ET_BAD_INSTRUCTION, BIC_BAD_LEN, "instruction header cut short")
        itype, ilen = _HH.unpack_from(data, pos)
        if ilen < 8 or ilen % 8 or pos + ilen > end:
            raise OFError(ET_BAD_INSTRUCTION, BIC_BAD_LEN, f"instruction {itype} of length {ilen}")
        if itype == IT_APPLY_ACTIONS or itype == IT_WRITE_ACTIONS:
            out.append((itype, parse_actions(data, pos + 8, pos + ilen)))
            pos += ilen
            continue
        body = data[pos:pos + ilen]
        if itype == IT_GOTO_TABLE:
            out.append((itype, body[4]))
        elif itype == IT_WRITE_METADATA:
            if ilen != 24:
                raise OFError(ET_BAD_INSTRUCTION, BIC_BAD_LEN, "write_metadata is 24 bytes")
            out.append((itype, struct.unpack_from("!QQ", body, 8)))
        elif itype == IT_CLEAR_ACTIONS:
            out.append((itype, None))
        elif itype == IT_METER:
            if ilen != 8:
                raise OFError(ET_BAD_INSTRUCTION, BIC_BAD_LEN, "meter is 8 bytes")
            out.append((itype, struct.unpack_from("!I", body, 4)[0]))
        elif itype == IT_EXPERIMENTER:
            raise OFError(ET_BAD_INSTRUCTION, BIC_BAD_EXPERIMENTER, "experimenter instruction")
        else:
            raise OFError(ET_BAD_INSTRUCTION, BIC_UNKNOWN_INST, f"unknown instruction {itype}")
        pos += ilen
    return out


def apply_actions(items):
    """An APPLY_ACTIONS instruction holding these actions (no instruction for none: drop)."""
    body = actions(items)
    return struct.pack("!HH4x", IT_APPLY_ACTIONS, 8 + len(body)) + body if items else b""


def write_actions(items):
    body = actions(items)
    return struct.pack("!HH4x", IT_WRITE_ACTIONS, 8 + len(body)) + body


def clear_actions():
    return struct.pack("!HH4x", IT_CLEAR_ACTIONS, 8)


def write_metadata(value, mask):
    return struct.pack("!HH4xQQ", IT_WRITE_METADATA, 24, value, mask)


def flow_removed(xid, cookie, priority, reason, table_id, duration, idle_timeout, hard_timeout,
                 n_packets, n_bytes, match_fields):
    sec = int(duration)
    return message(FLOW_REMOVED, xid, struct.pack("!QHBBIIHHQQ", cookie, priority, reason,
                                                  table_id, sec, int((duration - sec) * 1e9),
                                                  idle_timeout, hard_timeout, n_packets, n_bytes)
                   + match(match_fields))


def goto_table(table):
    return struct.pack("!HHB3x", IT_GOTO_TABLE, 8, table)


# ---------------------------------------------------------------- FLOW_MOD, PACKET_OUT

FLOW_MOD_FIXED = struct.Struct("!QQBBHHHIIIH2x")          # after the header: 40 bytes


class FlowMod:
    __slots__ = ("cookie", "cookie_mask", "table_id", "command", "idle_timeout",
                 "hard_timeout", "priority", "buffer_id", "out_port", "out_group", "flags",
                 "match", "instructions", "raw_instructions")


def parse_flow_mod(body):
    _need(body, FLOW_MOD_FIXED.size + 8, ET_BAD_REQUEST, BRC_BAD_LEN)
    fm = FlowMod()
    (fm.cookie, fm.cookie_mask, fm.table_id, fm.command, fm.idle_timeout, fm.hard_timeout,
     fm.priority, fm.buffer_id, fm.out_port, fm.out_group, fm.flags) = FLOW_MOD_FIXED.unpack_from(body)
    fm.match, used = parse_match(body, FLOW_MOD_FIXED.size)
    fm.raw_instructions = bytes(body[FLOW_MOD_FIXED.size + used:])      # flow stats give them back
    fm.instructions = parse_instructions(body, FLOW_MOD_FIXED.size + used)
    return fm


def flow_mod(xid, command, match_fields=(), instructions=b"", cookie=0, cookie_mask=0,
             table_id=0, priority=0x8000, idle_timeout=0, hard_timeout=0,
             out_port=OFPP_ANY, out_group=OFPG_ANY, flags=0, buffer_id=NO_BUFFER):
    return message(FLOW_MOD, xid, FLOW_MOD_FIXED.pack(cookie, cookie_mask, table_id, command,
                                                 idle_timeout, hard_timeout, priority,
                                                 buffer_id, out_port, out_group, flags)
                   + match(match_fields) + instructions)


def parse_packet_out(body):
    """-> (buffer_id, in_port, actions, frame)."""
    _need(body, 16, ET_BAD_REQUEST, BRC_BAD_LEN)
    buffer_id, in_port, alen = struct.unpack_from("!IIH", body)
    if 16 + alen > len(body):
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "PACKET_OUT actions past the message")
    return buffer_id, in_port, parse_actions(body[16:16 + alen]), body[16 + alen:]


def packet_out(xid, in_port, action_items, frame, buffer_id=NO_BUFFER):
    a = actions(action_items)
    return message(PACKET_OUT, xid, struct.pack("!IIH6x", buffer_id, in_port, len(a)) + a + frame)


# ---------------------------------------------------------------- PACKET_IN, PORT_STATUS

def packet_in(xid, reason, table_id, cookie, in_port, frame, total_len):
    m = match([(OXM_IN_PORT, in_port, None)])
    return message(PACKET_IN, xid, struct.pack("!IHBBQ", NO_BUFFER, total_len, reason, table_id,
                                               cookie) + m + b"\0\0" + frame)


def parse_packet_in(body):
    """-> (buffer_id, total_len, reason, table_id, cookie, match fields, frame)."""
    _need(body, 16 + 8, ET_BAD_REQUEST, BRC_BAD_LEN)
    buffer_id, total_len, reason, table_id, cookie = struct.unpack_from("!IHBBQ", body)
    fields, used = parse_match(body, 16)
    return buffer_id, total_len, reason, table_id, cookie, fields, body[16 + used + 2:]


PORT = struct.Struct("!I4x6s2x16sIIIIIIII")          # ofp_port: 64 bytes
PS_LINK_DOWN, PS_LIVE = 1, 4
PF_10GB_FD, PF_COPPER = 1 << 6, 1 << 11


def port(port_no, hw_addr, name, config=0, state=PS_LIVE, speed_kbps=10_000_000):
    feats = PF_10GB_FD | PF_COPPER
    return PORT.pack(port_no, hw_addr, name.encode()[:15], config, state, feats, feats, feats, 0,
                     speed_kbps, speed_kbps)


def parse_port(data, off=0):
    port_no, hw, name, config, state, *_ = PORT.unpack_from(data, off)
    return port_no, hw, name.rstrip(b"\0").decode(errors="replace"), config, state


def port_status(xid, reason, port_bytes):
    return message(PORT_STATUS, xid, struct.pack("!B7x", reason) + port_bytes)


# ---------------------------------------------------------------- multipart

def parse_multipart_request(body):
    """-> (type, flags, body)."""
    _need(body, 8, ET_BAD_REQUEST, BRC_BAD_LEN)
    mtype, flags = struct.unpack_from("!HH", body)
    return mtype, flags, body[8:]


def multipart_request(xid, mtype, body=b"", flags=0):
    return message(MULTIPART_REQUEST, xid, struct.pack("!HH4x", mtype, flags) + body)


def multipart_replies(xid, mtype, items):
    """Reply messages carrying the items (each a bytes), split so each fits in 64 KiB; all
    but the last have OFPMPF_REPLY_MORE (TS-006 7.3.5)."""
    room = MAX_LENGTH - HEADER.size - 8
    chunks, cur = [], b""
    for it in items:
        if cur and len(cur) + len(it) > room:
            chunks.append(cur)
            cur = b""
        cur += it
    chunks.append(cur)
    return [message(MULTIPART_REPLY, xid,
                    struct.pack("!HH4x", mtype, MPF_MORE if i < len(chunks) - 1 else 0) + c)
            for i, c in enumerate(chunks)]


def parse_multipart_reply(body):
    _need(body, 8, ET_BAD_REQUEST, BRC_BAD_LEN)
    mtype, flags = struct.unpack_from("!HH", body)
    return mtype, flags, body[8:]


FLOW_STATS_REQUEST = struct.Struct("!B3xII4xQQ")       # then a match


def parse_flow_stats_request(body):
    """FLOW and AGGREGATE requests -> (table_id, out_port, out_group, cookie, cookie_mask,
    match fields)."""
    _need(body, FLOW_STATS_REQUEST.size + 8, ET_BAD_REQUEST, BRC_BAD_LEN)
    table_id, out_port, out_group, cookie, cookie_mask = FLOW_STATS_REQUEST.unpack_from(body)
    fields, _ = parse_match(body, FLOW_STATS_REQUEST.size)
    return table_id, out_port, out_group, cookie, cookie_mask, fields


def flow_stats_request(table_id=OFPTT_ALL, out_port=OFPP_ANY, out_group=OFPG_ANY, cookie=0,
                       cookie_mask=0, match_fields=()):
    return FLOW_STATS_REQUEST.pack(table_id, out_port, out_group, cookie, cookie_mask) + \
        match(match_fields)


FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")           # then match, instructions


def flow_stats(table_id, duration, priority, idle_timeout, hard_timeout, flags, cookie,
               n_packets, n_bytes, match_fields, instructions):
    m = match(match_fields)
    length = FLOW_STATS.size + len(m) + len(instructions)
    sec = int(duration)
    return FLOW_STATS.pack(length, table_id, sec, int((duration - sec) * 1e9), priority,
                           idle_timeout, hard_timeout, flags, cookie, n_packets, n_bytes) + \
        m + instructions


def parse_flow_stats(body):
    """A FLOW reply body -> [(priority, cookie, n_packets, match fields, instructions)]."""
    out, pos = [], 0
    while pos + FLOW_STATS.size <= len(body):
        (length, _t, _s, _ns, priority, _i, _h, _f, cookie, n_packets,
         _b) = FLOW_STATS.unpack_from(body, pos)
        if length < FLOW_STATS.size + 8 or pos + length > len(body):
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "flow stats entry length")
        entry = body[pos:pos + length]
        fields, used = parse_match(entry, FLOW_STATS.size)
        out.append((priority, cookie, n_packets, fields,
                    parse_instructions(entry[FLOW_STATS.size + used:])))
        pos += length
    return out


def aggregate_stats(n_packets, n_bytes, n_flows):
    return struct.pack("!QQI4x", n_packets, n_bytes, n_flows)


def table_stats(table_id, active, lookups, matched):
    return struct.pack("!B3xIQQ", table_id, active, lookups, matched)


def port_stats(port_no, rx_packets, tx_packets, rx_bytes, tx_bytes, rx_dropped, tx_dropped,
               duration):
    sec = int(duration)
    return struct.pack("!I4x12QII", port_no, rx_packets, tx_packets, rx_bytes, tx_bytes,
                       rx_dropped, tx_dropped, 0, 0, 0, 0, 0, 0, sec, int((duration - sec) * 1e9))


def desc(mfr, hw, sw, serial, dp):
    def s(text, n):
        return text.encode()[:n - 1].ljust(n, b"\0")
    return s(mfr, 256) + s(hw, 256) + s(sw, 256) + s(serial, 32) + s(dp, 256)


MP_TABLE_FEATURES = 12
ET_TABLE_FEATURES_FAILED, TFFC_EPERM = 13, 5
TFPT_INSTRUCTIONS, TFPT_NEXT_TABLES, TFPT_WRITE_ACTIONS, TFPT_APPLY_ACTIONS = 0, 2, 4, 6
TFPT_MATCH, TFPT_WILDCARDS, TFPT_WRITE_SETFIELD, TFPT_APPLY_SETFIELD = 8, 10, 12, 14


def _property(ptype, data):
    raw = struct.pack("!HH", ptype, 4 + len(data)) + data
    return raw + bytes(_pad8(len(raw)) - len(raw))


def table_features(table_id, name, max_entries, instructions, action_types, match_fields,
                   setfields):
    """One ofp_table_features (TS-006 7.3.5.5): what a table matches and does."""
    def oxm_headers(fields):
        return b"".join(struct.pack("!HBB", OXM_BASIC, f << 1, OXM_SIZES[f]) for f in fields)
    props = (_property(TFPT_INSTRUCTIONS, b"".join(struct.pack("!HH", i, 4) for i in instructions))
             + _property(TFPT_NEXT_TABLES, b"")
             + _property(TFPT_WRITE_ACTIONS, b"")          # no write-actions: empty lists
             + _property(TFPT_WRITE_SETFIELD, b"")
             + _property(TFPT_APPLY_ACTIONS, b"".join(struct.pack("!HH", a, 4) for a in action_types))
             + _property(TFPT_MATCH, oxm_headers(match_fields))
             + _property(TFPT_WILDCARDS, oxm_headers(match_fields))
             + _property(TFPT_APPLY_SETFIELD, oxm_headers(setfields)))
    return struct.pack("!HB5x32sQQII", 64 + len(props), table_id, name.encode()[:31], 0, 0, 0,
                       max_entries) + props


# ---------------------------------------------------------------- ROLE_REQUEST, PORT_MOD

ROLE_NOCHANGE, ROLE_EQUAL, ROLE_MASTER, ROLE_SLAVE = 0, 1, 2, 3
ET_PORT_MOD_FAILED, ET_ROLE_REQUEST_FAILED = 7, 11
BRC_IS_SLAVE = 10
RRFC_STALE, RRFC_UNSUP, RRFC_BAD_ROLE = 0, 1, 2
PMFC_BAD_PORT, PMFC_BAD_HW_ADDR, PMFC_BAD_CONFIG, PMFC_BAD_ADVERTISE = 0, 1, 2, 3
PC_NO_RECV, PC_NO_FWD, PC_NO_PACKET_IN = 1 << 2, 1 << 5, 1 << 6
ROLE = struct.Struct("!I4xQ")
PORT_MOD_BODY = struct.Struct("!I4x6s2xIII4x")           # after the header: 32 bytes


def parse_role(body):
    """ROLE_REQUEST/REPLY body -> (role, generation_id)."""
    if len(body) != ROLE.size:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "ROLE_REQUEST body is not 16 bytes")
    return ROLE.unpack(body)


def role(type, xid, role_, generation_id):
    return message(type, xid, ROLE.pack(role_, generation_id))


def parse_port_mod(body):
    """-> (port_no, hw_addr, config, mask, advertise)."""
    if len(body) != PORT_MOD_BODY.size:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "PORT_MOD body is not 32 bytes")
    return PORT_MOD_BODY.unpack(body)


def port_mod(xid, port_no, hw_addr, config, mask, advertise=0):
    return message(PORT_MOD, xid, PORT_MOD_BODY.pack(port_no, hw_addr, config, mask, advertise))


# ---------------------------------------------------------------- GROUP_MOD, group multipart

GC_ADD, GC_MODIFY, GC_DELETE = 0, 1, 2
GT_ALL, GT_SELECT, GT_INDIRECT, GT_FF = 0, 1, 2, 3
OFPG_MAX, OFPG_ALL = 0xFFFFFF00, 0xFFFFFFFC
ET_GROUP_MOD_FAILED = 6
(GMFC_GROUP_EXISTS, GMFC_INVALID_GROUP, GMFC_WEIGHT_UNSUPPORTED, GMFC_OUT_OF_GROUPS,
 GMFC_OUT_OF_BUCKETS, GMFC_CHAINING_UNSUPPORTED, GMFC_WATCH_UNSUPPORTED, GMFC_LOOP,
 GMFC_UNKNOWN_GROUP, GMFC_CHAINED_GROUP, GMFC_BAD_TYPE, GMFC_BAD_COMMAND, GMFC_BAD_BUCKET,
 GMFC_BAD_WATCH, GMFC_EPERM) = range(15)
BAC_BAD_OUT_GROUP = 9
RR_GROUP_DELETE = 3
MP_GROUP, MP_GROUP_DESC, MP_GROUP_FEATURES = 6, 7, 8
GROUP_MOD_FIXED = struct.Struct("!HBxI")
BUCKET = struct.Struct("!HHII4x")


def parse_buckets(data):
    """-> [(weight, watch_port, watch_group, actions)]."""
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < BUCKET.size:
            raise OFError(ET_GROUP_MOD_FAILED, GMFC_BAD_BUCKET, "bucket cut short")
        blen, weight, watch_port, watch_group = BUCKET.unpack_from(data, pos)
        if blen < BUCKET.size or blen % 8 or pos + blen > len(data):
            raise OFError(ET_GROUP_MOD_FAILED, GMFC_BAD_BUCKET, f"bucket of length {blen}")
        out.append((weight, watch_port, watch_group, parse_actions(data[pos + BUCKET.size:pos + blen])))
        pos += blen
    return out


def parse_group_mod(body):
    """-> (command, type, group_id, buckets)."""
    _need(body, GROUP_MOD_FIXED.size, ET_BAD_REQUEST, BRC_BAD_LEN)
    command, type, group_id = GROUP_MOD_FIXED.unpack_from(body)
    return command, type, group_id, parse_buckets(body[GROUP_MOD_FIXED.size:])


def bucket(action_items, weight=0, watch_port=OFPP_ANY, watch_group=OFPG_ANY):
    a = actions(action_items)
    return BUCKET.pack(BUCKET.size + len(a), weight, watch_port, watch_group) + a


def group_mod(xid, command, type, group_id, buckets=()):
    """buckets: bytes from bucket() each."""
    return message(GROUP_MOD, xid, GROUP_MOD_FIXED.pack(command, type, group_id) + b"".join(buckets))


def group_desc(type, group_id, buckets):
    body = b"".join(buckets)
    return struct.pack("!HBxI", 8 + len(body), type, group_id) + body


def parse_group_desc(body):
    """A GROUP_DESC reply body -> [(type, group_id, buckets)]."""
    out, pos = [], 0
    while pos + 8 <= len(body):
        length, type, group_id = struct.unpack_from("!HBxI", body, pos)
        if length < 8 or pos + length > len(body):
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "group desc entry length")
        out.append((type, group_id, parse_buckets(body[pos + 8:pos + length])))
        pos += length
    return out


GROUP_STATS = struct.Struct("!H2xII4xQQII")


def group_stats(group_id, ref_count, n_packets, n_bytes, duration, bucket_counts):
    sec = int(duration)
    buckets = b"".join(struct.pack("!QQ", p, b) for p, b in bucket_counts)
    return GROUP_STATS.pack(GROUP_STATS.size + len(buckets), group_id, ref_count, n_packets,
                            n_bytes, sec, int((duration - sec) * 1e9)) + buckets


def parse_group_stats(body):
    """-> [(group_id, ref_count, packets, bytes, [(bucket packets, bytes)])]."""
    out, pos = [], 0
    while pos + GROUP_STATS.size <= len(body):
        length, gid, refs, p, b, _s, _ns = GROUP_STATS.unpack_from(body, pos)
        if length < GROUP_STATS.size or pos + length > len(body):
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "group stats entry length")
        bk = [struct.unpack_from("!QQ", body, off)
              for off in range(pos + GROUP_STATS.size, pos + length, 16)]
        out.append((gid, refs, p, b, bk))
        pos += length
    return out


def group_features(types, capabilities, max_groups, actions_):
    return struct.pack("!II4I4I", types, capabilities, *max_groups, *actions_)


# ---------------------------------------------------------------- meters (TS-006 7.3.4.5)

ET_METER_MOD_FAILED = 12
(MMFC_UNKNOWN, MMFC_METER_EXISTS, MMFC_INVALID_METER, MMFC_UNKNOWN_METER, MMFC_BAD_COMMAND,
 MMFC_BAD_FLAGS, MMFC_BAD_RATE, MMFC_BAD_BURST, MMFC_BAD_BAND, MMFC_BAD_BAND_VALUE,
 MMFC_OUT_OF_METERS, MMFC_OUT_OF_BANDS) = range(12)
MC_ADD, MC_MODIFY, MC_DELETE = 0, 1, 2
MF_KBPS, MF_PKTPS, MF_BURST, MF_STATS = 1, 2, 4, 8
MBT_DROP, MBT_DSCP_REMARK, MBT_EXPERIMENTER = 1, 2, 0xFFFF
OFPM_MAX, OFPM_SLOWPATH, OFPM_CONTROLLER, OFPM_ALL = 0xFFFF0000, 0xFFFFFFFD, 0xFFFFFFFE, 0xFFFFFFFF
MP_METER, MP_METER_CONFIG, MP_METER_FEATURES = 9, 10, 11
METER_MOD_FIXED = struct.Struct("!HHI")
METER_BAND = struct.Struct("!HHII")                      # then 4 bytes: prec_level or pad
METER_STATS = struct.Struct("!IH6xIQQII")
METER_CONFIG = struct.Struct("!HHI")


def meter_instruction(meter_id):
    return struct.pack("!HHI", IT_METER, 8, meter_id)


def parse_meter_bands(data):
    """-> [(type, rate, burst_size, prec_level)]; an experimenter band is refused."""
    out, pos = [], 0
    while pos < len(data):
        if len(data) - pos < METER_BAND.size:
            raise OFError(ET_METER_MOD_FAILED, MMFC_BAD_BAND, "meter band cut short")
        btype, blen, rate, burst = METER_BAND.unpack_from(data, pos)
        if blen != 16 or pos + blen > len(data):
            raise OFError(ET_METER_MOD_FAILED, MMFC_BAD_BAND, f"meter band of length {blen}")
        if btype not in (MBT_DROP, MBT_DSCP_REMARK):
            raise OFError(ET_METER_MOD_FAILED, MMFC_BAD_BAND, f"meter band type {btype}")
        prec = data[pos + 12] if btype == MBT_DSCP_REMARK else 0
        out.append((btype, rate, burst, prec))
        pos += blen
    return out


def meter_band(btype, rate, burst_size=0, prec_level=0):
    return METER_BAND.pack(btype, 16, rate, burst_size) + struct.pack("!B3x", prec_level)


def parse_meter_mod(body):
    """-> (command, flags, meter_id, bands)."""
    _need(body, METER_MOD_FIXED.size, ET_BAD_REQUEST, BRC_BAD_LEN)
    command, flags, meter_id = METER_MOD_FIXED.unpack_from(body)
    return command, flags, meter_id, parse_meter_bands(body[METER_MOD_FIXED.size:])


def meter_mod(xid, command, flags, meter_id, bands=()):
    """bands: bytes from meter_band() each."""
    return message(METER_MOD, xid, METER_MOD_FIXED.pack(command, flags, meter_id) + b"".join(bands))


def parse_meter_request(body):
    """METER and METER_CONFIG requests: the meter id (OFPM_ALL: every one)."""
    if len(body) != 8:
        raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "a meter request is 8 bytes")
    return struct.unpack_from("!I", body)[0]


def meter_request(meter_id=OFPM_ALL):
    return struct.pack("!I4x", meter_id)


def meter_stats(meter_id, flow_count, packets, octets, duration, band_counts):
    sec = int(duration)
    bands = b"".join(struct.pack("!QQ", p, b) for p, b in band_counts)
    return METER_STATS.pack(meter_id, METER_STATS.size + len(bands), flow_count, packets, octets,
                            sec, int((duration - sec) * 1e9)) + bands


def parse_meter_stats(body):
    """-> [(meter_id, flow_count, packets, bytes, [(band packets, bytes)])]."""
    out, pos = [], 0
    while pos + METER_STATS.size <= len(body):
        mid, length, flows, p, b, _s, _ns = METER_STATS.unpack_from(body, pos)
        if length < METER_STATS.size or (length - METER_STATS.size) % 16 or pos + length > len(body):
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "meter stats entry length")
        bands = [struct.unpack_from("!QQ", body, o) for o in range(pos + METER_STATS.size, pos + length, 16)]
        out.append((mid, flows, p, b, bands))
        pos += length
    return out


def meter_config(flags, meter_id, bands):
    body = b"".join(bands)
    return METER_CONFIG.pack(METER_CONFIG.size + len(body), flags, meter_id) + body


def parse_meter_config(body):
    """-> [(flags, meter_id, bands)]."""
    out, pos = [], 0
    while pos + METER_CONFIG.size <= len(body):
        length, flags, mid = METER_CONFIG.unpack_from(body, pos)
        if length < METER_CONFIG.size or pos + length > len(body):
            raise OFError(ET_BAD_REQUEST, BRC_BAD_LEN, "meter config entry length")
        out.append((flags, mid, parse_meter_bands(body[pos + METER_CONFIG.size:pos + length])))
        pos += length
    return out


def meter_features(max_meter, band_types, capabilities, max_bands, max_color=0):
    return struct.pack("!IIIBB2x", max_meter, band_types, capabilities, max_bands, max_color)
