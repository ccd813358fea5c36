"""OpenFlow 1.3 matches, actions and instructions <-> the pipeline's rules
(fastpath.ofsyntax), both ways.

Matches: in_port, metadata, eth_src/eth_dst (masks), eth_type, vlan_vid (a VID with
OFPVID_PRESENT, OFPVID_NONE for untagged, any mask: 0x1000/0x1000 is "tagged"),
vlan_pcp, ip_proto, ip_dscp, ip_ecn, ipv4_src/dst (masks), tcp/udp/sctp ports, icmpv4
type/code, arp_op, arp_spa/tpa/sha/tha (masks), ipv6_src/dst (masks), ipv6_flabel (masks), icmpv6
type/code, each with its prerequisites checked (BAD_PREREQ). Actions: output (a port, IN_PORT, NORMAL, FLOOD, ALL, CONTROLLER),
push_vlan, pop_vlan, dec_nw_ttl, set_field eth_src/eth_dst/vlan_vid/vlan_pcp/
ipv4_src/ipv4_dst/tcp and udp ports, group (an existing group; not in PACKET_OUT nor,
as chaining, in a bucket). Instructions: apply-actions, clear-actions,
write-actions, write-metadata, goto-table (a later table only). Anything else raises
codec.OFError with the code the spec gives, so the controller hears exactly what was
refused.
"""
from fastpath import ofsyntax
from fastpath.openflow import codec as c

MAC_ALL = (1 << 48) - 1
_RESERVED_OUT = {c.OFPP_IN_PORT: "in_port", c.OFPP_NORMAL: "normal", c.OFPP_FLOOD: "flood",
                 c.OFPP_ALL: "all"}
_OUT_RESERVED = {v: k for k, v in _RESERVED_OUT.items()}

# OXM field numbers beyond codec's first few (TS-006 7.2.3.7)
OXM_METADATA, OXM_IP_PROTO, OXM_IPV4_SRC, OXM_IPV4_DST = 2, 10, 11, 12
OXM_TCP_SRC, OXM_TCP_DST, OXM_UDP_SRC, OXM_UDP_DST = 13, 14, 15, 16
OXM_SCTP_SRC, OXM_SCTP_DST = 17, 18
OXM_IP_DSCP, OXM_IP_ECN, OXM_IPV6_FLABEL = 8, 9, 28
OXM_ARP_SHA, OXM_ARP_THA = 24, 25
OXM_ICMPV4_TYPE, OXM_ICMPV4_CODE, OXM_ARP_OP, OXM_ARP_SPA, OXM_ARP_TPA = 19, 20, 21, 22, 23
OXM_IPV6_SRC, OXM_IPV6_DST, OXM_ICMPV6_TYPE, OXM_ICMPV6_CODE = 26, 27, 29, 30
AT_DEC_NW_TTL = 24
IP, ARP, IPV6 = 0x0800, 0x0806, 0x86DD
# fields that take a mask, with their width in bits
_MASKABLE = {OXM_METADATA: 64, c.OXM_ETH_DST: 48, c.OXM_ETH_SRC: 48, c.OXM_VLAN_VID: 13,
             OXM_IPV4_SRC: 32, OXM_IPV4_DST: 32, OXM_ARP_SPA: 32, OXM_ARP_TPA: 32,
             OXM_IPV6_SRC: 128, OXM_IPV6_DST: 128, OXM_IPV6_FLABEL: 20,
             OXM_ARP_SHA: 48, OXM_ARP_THA: 48}
# field -> (ofsyntax attribute, its prerequisite: eth_types, ip_protos or None)
_FIELDS = {
    OXM_IP_PROTO: ("nw_proto", (IP, IPV6), None),
    OXM_IP_DSCP: ("ip_dscp", (IP, IPV6), None), OXM_IP_ECN: ("ip_ecn", (IP, IPV6), None),
    OXM_IPV6_FLABEL: ("ipv6_label", (IPV6,), None),
    OXM_IPV4_SRC: ("nw_src", (IP,), None), OXM_IPV4_DST: ("nw_dst", (IP,), None),
    OXM_TCP_SRC: ("tp_src", (IP, IPV6), 6), OXM_TCP_DST: ("tp_dst", (IP, IPV6), 6),
    OXM_UDP_SRC: ("tp_src", (IP, IPV6), 17), OXM_UDP_DST: ("tp_dst", (IP, IPV6), 17),
    OXM_SCTP_SRC: ("tp_src", (IP, IPV6), 132), OXM_SCTP_DST: ("tp_dst", (IP, IPV6), 132),
    OXM_ICMPV4_TYPE: ("tp_src", (IP,), 1), OXM_ICMPV4_CODE: ("tp_dst", (IP,), 1),
    OXM_ICMPV6_TYPE: ("tp_src", (IPV6,), 58), OXM_ICMPV6_CODE: ("tp_dst", (IPV6,), 58),
    OXM_ARP_OP: ("nw_proto", (ARP,), None),
    OXM_ARP_SPA: ("nw_src", (ARP,), None), OXM_ARP_TPA: ("nw_dst", (ARP,), None),
    OXM_ARP_SHA: ("arp_sha", (ARP,), None), OXM_ARP_THA: ("arp_tha", (ARP,), None),
    OXM_IPV6_SRC: ("ipv6_src", (IPV6,), None), OXM_IPV6_DST: ("ipv6_dst", (IPV6,), None),
}
_SUPPORTED = {c.OXM_IN_PORT, OXM_METADATA, c.OXM_ETH_DST, c.OXM_ETH_SRC, c.OXM_ETH_TYPE,
              c.OXM_VLAN_VID, c.OXM_VLAN_PCP} | set(_FIELDS)
# set_field: field -> the mod_* action
_SET_FIELDS = {c.OXM_ETH_SRC: "mod_dl_src", c.OXM_ETH_DST: "mod_dl_dst",
               OXM_IPV4_SRC: "mod_nw_src", OXM_IPV4_DST: "mod_nw_dst",
               OXM_TCP_SRC: "mod_tp_src", OXM_UDP_SRC: "mod_tp_src",
               OXM_TCP_DST: "mod_tp_dst", OXM_UDP_DST: "mod_tp_dst"}


class Ports:
    """A bridge's ports by OpenFlow number and by name (flows may name either)."""

    def __init__(self, bridge):
        self.by_ofport = {p.ofport: p for p in bridge.ports.values()}
        self.by_name = bridge.ports
        flows = getattr(bridge, "flows", None)
        self.groups = flows.group_ids() if flows is not None else set()

    def ofport(self, ref):
        """A flow's port reference (ofport or name) -> ofport, or None."""
        if isinstance(ref, int):
            return ref if ref in self.by_ofport else None
        p = self.by_name.get(ref)
        return p.ofport if p else None


# ---------------------------------------------------------------- match

def to_match(fields, ports):
    """OXM fields -> ofsyntax.Match."""
    m = ofsyntax.Match()
    got = {f: (v, mask) for f, v, mask in fields}
    for field, (value, mask) in got.items():
        if field not in _SUPPORTED:         # before its mask: the field is what is missing
            raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_FIELD, f"OXM field {field} is not supported")
        if mask is not None and field not in _MASKABLE:
            raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_MASK, f"OXM field {field} is not maskable")
        if mask is not None and value & ~mask:
            raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"OXM field {field}: value past its mask")
        if field == c.OXM_IN_PORT:
            if value not in ports.by_ofport:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"in_port {value}: no such port")
            m.in_port = value
        elif field in (c.OXM_ETH_DST, c.OXM_ETH_SRC):
            mask = MAC_ALL if mask is None else mask
            if mask:
                setattr(m, "dl_dst" if field == c.OXM_ETH_DST else "dl_src", (value & mask, mask))
        elif field == c.OXM_ETH_TYPE:
            m.dl_type = value
        elif field == OXM_METADATA:
            mask = (1 << 64) - 1 if mask is None else mask
            if mask:
                m.metadata = (value, mask)
        elif field == c.OXM_VLAN_VID:
            if value > 0x1FFF:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"vlan_vid {value:#x}")
            if mask in (None, 0x1FFF):
                if value and not value & c.OFPVID_PRESENT:
                    raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"vlan_vid {value:#x}")
                m.dl_vlan = value & 0xFFF if value else ofsyntax.VLAN_NONE
            elif mask:
                m.vlan_tci = (value, mask)
        elif field == c.OXM_VLAN_PCP:
            if value > 7:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"vlan_pcp {value}")
            m.dl_vlan_pcp = value
        elif field in _FIELDS:
            name, eth_types, proto = _FIELDS[field]
            if got.get(c.OXM_ETH_TYPE, (None,))[0] not in eth_types or \
                    proto is not None and got.get(OXM_IP_PROTO, (None,))[0] != proto:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_PREREQ, f"OXM field {field}: prerequisite")
            if field in _MASKABLE:
                full = (1 << _MASKABLE[field]) - 1
                mask = full if mask is None else mask
                if mask:
                    setattr(m, name, (value & mask, mask))
            elif field == OXM_ARP_OP and value > 0xFF or field == OXM_IP_DSCP and value > 63 \
                    or field == OXM_IP_ECN and value > 3:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"OXM field {field}: {value}")
            else:
                setattr(m, name, value)
        else:
            raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_FIELD, f"OXM field {field} is not supported")
    vlan = got.get(c.OXM_VLAN_VID)
    if m.dl_vlan_pcp is not None and (vlan is None or vlan == (0, None) or vlan[0] == 0):
        raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_PREREQ, "vlan_pcp needs a vlan_vid match")
    return m


def from_match(m, ports):
    """ofsyntax.Match -> OXM fields (L3/L4 fields named by the eth_type and ip_proto)."""
    out = []
    if m.in_port is not None:
        out.append((c.OXM_IN_PORT, ports.ofport(m.in_port) or 0, None))
    if m.metadata is not None:
        v, mask = m.metadata
        out.append((OXM_METADATA, v, None if mask == (1 << 64) - 1 else mask))
    for field, value in ((c.OXM_ETH_DST, m.dl_dst), (c.OXM_ETH_SRC, m.dl_src)):
        if value is not None:
            out.append((field, value[0], None if value[1] == MAC_ALL else value[1]))
    if m.dl_type is not None:
        out.append((c.OXM_ETH_TYPE, m.dl_type, None))
    if m.dl_vlan is not None:
        out.append((c.OXM_VLAN_VID, 0 if m.dl_vlan == ofsyntax.VLAN_NONE
                    else m.dl_vlan | c.OFPVID_PRESENT, None))
    elif m.vlan_tci is not None:
        out.append((c.OXM_VLAN_VID, m.vlan_tci[0] & 0x1FFF, m.vlan_tci[1] & 0x1FFF))
    if m.dl_vlan_pcp is not None:
        out.append((c.OXM_VLAN_PCP, m.dl_vlan_pcp, None))
    arp = m.dl_type == ARP
    if m.nw_proto is not None:
        out.append((OXM_ARP_OP if arp else OXM_IP_PROTO, m.nw_proto, None))
    for field, value in ((OXM_IP_DSCP, m.ip_dscp), (OXM_IP_ECN, m.ip_ecn)):
        if value is not None:
            out.append((field, value, None))
    for fields, value in (((OXM_ARP_SPA, OXM_IPV4_SRC), m.nw_src),
                          ((OXM_ARP_TPA, OXM_IPV4_DST), m.nw_dst),
                          ((OXM_IPV6_SRC,), m.ipv6_src), ((OXM_IPV6_DST,), m.ipv6_dst),
                          ((OXM_IPV6_FLABEL,), m.ipv6_label), ((OXM_ARP_SHA,), m.arp_sha),
                          ((OXM_ARP_THA,), m.arp_tha)):
        if value is not None:
            field = fields[0] if arp or len(fields) == 1 else fields[1]
            full = (1 << _MASKABLE[field]) - 1
            out.append((field, value[0], None if value[1] == full else value[1]))
    l4 = {6: (OXM_TCP_SRC, OXM_TCP_DST), 17: (OXM_UDP_SRC, OXM_UDP_DST),
          1: (OXM_ICMPV4_TYPE, OXM_ICMPV4_CODE), 58: (OXM_ICMPV6_TYPE, OXM_ICMPV6_CODE),
          132: (OXM_SCTP_SRC, OXM_SCTP_DST)}
    for i, value in enumerate((m.tp_src, m.tp_dst)):
        if value is not None and m.nw_proto in l4:
            out.append((l4[m.nw_proto][i], value, None))
    return out


# ---------------------------------------------------------------- actions

def to_actions(items, ports, packet_out=False, in_bucket=False):
    """Parsed actions -> [ofsyntax.Action]; PACKET_OUT may also output to TABLE. A group
    must exist (BAD_OUT_GROUP); groups in buckets (chaining) and in PACKET_OUT are refused."""
    out = []
    for a in items:
        kind = a[0]
        if kind == "group":
            if in_bucket:
                raise c.OFError(c.ET_GROUP_MOD_FAILED, c.GMFC_CHAINING_UNSUPPORTED,
                                "groups cannot be chained here")
            if packet_out:
                raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_TYPE, "group in PACKET_OUT")
            if a[1] not in ports.groups:
                raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_OUT_GROUP, f"group {a[1]}: no such group")
            out.append(ofsyntax.Action("group", a[1]))
        elif kind == "output":
            port, max_len = a[1], a[2]
            if port in _RESERVED_OUT:
                out.append(ofsyntax.Action(_RESERVED_OUT[port]))
            elif port == c.OFPP_CONTROLLER:
                out.append(ofsyntax.Action("controller", max_len))
            elif port == c.OFPP_TABLE and packet_out:
                out.append(ofsyntax.Action("table"))
            elif port < c.OFPP_MAX and port in ports.by_ofport:
                out.append(ofsyntax.Action("output", port))
            else:
                raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_OUT_PORT, f"output to port {port:#x}")
        elif kind == "push_vlan":
            if a[1] not in (0x8100, 0x88A8):
                raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_ARGUMENT, f"push_vlan {a[1]:#x}")
            out.append(ofsyntax.Action("push_vlan", a[1]))
        elif kind == "pop_vlan":
            out.append(ofsyntax.Action("strip_vlan"))
        elif kind == "unsupported" and a[1] == AT_DEC_NW_TTL:
            out.append(ofsyntax.Action("dec_ttl"))
        elif kind == "set_field":
            field, value = a[1], a[2]
            if field == c.OXM_VLAN_VID:
                if value & 0xFFF != value & ~c.OFPVID_PRESENT:
                    raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_SET_ARGUMENT, f"vlan_vid {value:#x}")
                out.append(ofsyntax.Action("mod_vlan_vid", value & 0xFFF))
            elif field == c.OXM_VLAN_PCP:
                if value > 7:
                    raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_SET_ARGUMENT, f"vlan_pcp {value}")
                out.append(ofsyntax.Action("mod_vlan_pcp", value))
            elif field in _SET_FIELDS:
                out.append(ofsyntax.Action(_SET_FIELDS[field], value))
            else:
                raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_SET_TYPE, f"set_field {field}")
        else:
            raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_TYPE, f"action type {a[1]} not supported")
    return out


def from_actions(actions, ports):
    """[ofsyntax.Action] -> action tuples for codec.actions()."""
    out = []
    fields = {"mod_dl_src": c.OXM_ETH_SRC, "mod_dl_dst": c.OXM_ETH_DST,
              "mod_nw_src": OXM_IPV4_SRC, "mod_nw_dst": OXM_IPV4_DST,
              "mod_tp_src": OXM_TCP_SRC, "mod_tp_dst": OXM_TCP_DST}
    for a in actions:
        if a.kind in _OUT_RESERVED:
            out.append(("output", _OUT_RESERVED[a.kind], 0))
        elif a.kind == "controller":
            out.append(("output", c.OFPP_CONTROLLER, a.arg))
        elif a.kind == "output":
            out.append(("output", ports.ofport(a.arg) or 0, 0))
        elif a.kind == "strip_vlan":
            out.append(("pop_vlan",))
        elif a.kind == "push_vlan":
            out.append(("push_vlan", a.arg))
        elif a.kind == "mod_vlan_vid":
            out.append(("set_field", c.OXM_VLAN_VID, a.arg | c.OFPVID_PRESENT))
        elif a.kind == "mod_vlan_pcp":
            out.append(("set_field", c.OXM_VLAN_PCP, a.arg))
        elif a.kind == "dec_ttl":
            out.append(("raw", AT_DEC_NW_TTL, bytes(4)))
        elif a.kind == "group":
            out.append(("group", a.arg))
        elif a.kind in fields:
            out.append(("set_field", fields[a.kind], a.arg))
    return out


def to_rule(table, priority, cookie, instructions, match, ports, n_tables):
    """FLOW_MOD instructions -> an ofsyntax.FlowRule (meter, apply, clear, write, metadata,
    goto)."""
    rule = ofsyntax.FlowRule(priority, match, [], cookie, table)
    seen = set()
    for itype, payload in instructions:
        if itype in seen:
            raise c.OFError(c.ET_BAD_INSTRUCTION, c.BIC_UNSUP_INST, f"instruction {itype} twice")
        seen.add(itype)
        if itype == c.IT_APPLY_ACTIONS:
            rule.actions = to_actions(payload, ports)
        elif itype == c.IT_WRITE_ACTIONS:
            rule.write_actions = to_actions(payload, ports)
        elif itype == c.IT_CLEAR_ACTIONS:
            rule.clear_actions = True
        elif itype == c.IT_WRITE_METADATA:
            rule.write_metadata = payload
        elif itype == c.IT_METER:
            if not 1 <= payload <= c.OFPM_MAX:
                raise c.OFError(c.ET_METER_MOD_FAILED, c.MMFC_INVALID_METER, f"meter {payload:#x}")
            rule.meter = payload
        elif itype == c.IT_GOTO_TABLE:
            if not table < payload < n_tables:
                raise c.OFError(c.ET_BAD_INSTRUCTION, c.BIC_BAD_TABLE_ID,
                                f"goto_table {payload} from table {table}")
            rule.goto = payload
        else:
            raise c.OFError(c.ET_BAD_INSTRUCTION, c.BIC_UNSUP_INST, f"instruction {itype}")
    return rule


def instructions_of(rule, ports):
    out = c.meter_instruction(rule.meter) if rule.meter is not None else b""
    out += c.apply_actions(from_actions(rule.actions, ports))
    if rule.clear_actions:
        out += c.clear_actions()
    if rule.write_actions:
        out += c.write_actions(from_actions(rule.write_actions, ports))
    if rule.write_metadata is not None:
        out += c.write_metadata(*rule.write_metadata)
    if rule.goto is not None:
        out += c.goto_table(rule.goto)
    return out

