"""OpenFlow 1.3 matches and actions <-> the flow table's rules (fastpath.ofsyntax), both ways.

What table 0 can do today is what ofsyntax can say: in_port, eth_src/eth_dst with masks,
eth_type, vlan_vid (a VID with OFPVID_PRESENT, or OFPVID_NONE for untagged), vlan_pcp; and
apply-actions output (a port, IN_PORT, NORMAL, FLOOD, ALL, CONTROLLER), push_vlan, pop_vlan,
set_field vlan_vid/vlan_pcp. Anything else raises codec.OFError with the code the spec
gives, so the controller hears exactly what was refused.
"""
from fastpath import ofsyntax
from fastpath.openflow import codec as c

MAC_ALL = (1 << 48) - 1
_RESERVED_OUT = {c.OFPP_IN_PORT: "in_port", c.OFPP_NORMAL: "normal", c.OFPP_FLOOD: "flood",
                 c.OFPP_ALL: "all"}
_OUT_RESERVED = {v: k for k, v in _RESERVED_OUT.items()}


class Ports:
    """A bridge's ports by OpenFlow number and by name (flows may name either)."""

    def __init__(self, bridge):
        self.by_ofport = {p.ofport: p for p in bridge.ports.values()}
        self.by_name = bridge.ports

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
        if field == c.OXM_IN_PORT:
            if value not in ports.by_ofport:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"in_port {value}: no such port")
            m.in_port = value
        elif field in (c.OXM_ETH_DST, c.OXM_ETH_SRC):
            mask = MAC_ALL if mask is None else mask
            if mask:
                setattr(m, "dl_dst" if field == c.OXM_ETH_DST else "dl_src", (value & mask, mask))
        elif field == c.OXM_ETH_TYPE:
            if mask is not None:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_MASK, "eth_type is not maskable")
            m.dl_type = value
        elif field == c.OXM_VLAN_VID:
            if mask not in (None, 0x1FFF):
                # "any tagged frame" (0x1000/0x1000) and partial VIDs: not in today's table
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_MASK, f"vlan_vid mask {mask:#x}")
            if value == 0:
                m.dl_vlan = ofsyntax.VLAN_NONE
            elif value & c.OFPVID_PRESENT and value <= 0x1FFF:
                m.dl_vlan = value & 0xFFF
            else:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"vlan_vid {value:#x}")
        elif field == c.OXM_VLAN_PCP:
            if mask is not None:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_MASK, "vlan_pcp is not maskable here")
            if value > 7:
                raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_VALUE, f"vlan_pcp {value}")
            m.dl_vlan_pcp = value
        else:
            raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_FIELD, f"OXM field {field} is not supported")
    if m.dl_vlan_pcp is not None and m.dl_vlan in (None, ofsyntax.VLAN_NONE):
        raise c.OFError(c.ET_BAD_MATCH, c.BMC_BAD_PREREQ, "vlan_pcp needs a vlan_vid match")
    return m


def from_match(m, ports):
    """ofsyntax.Match -> OXM fields."""
    out = []
    if m.in_port is not None:
        out.append((c.OXM_IN_PORT, ports.ofport(m.in_port) or 0, None))
    for field, value in ((c.OXM_ETH_DST, m.dl_dst), (c.OXM_ETH_SRC, m.dl_src)):
        if value is not None:
            out.append((field, value[0], None if value[1] == MAC_ALL else value[1]))
    if m.dl_type is not None:
        out.append((c.OXM_ETH_TYPE, m.dl_type, None))
    if m.dl_vlan is not None:
        out.append((c.OXM_VLAN_VID, 0 if m.dl_vlan == ofsyntax.VLAN_NONE
                    else m.dl_vlan | c.OFPVID_PRESENT, None))
    if m.dl_vlan_pcp is not None:
        out.append((c.OXM_VLAN_PCP, m.dl_vlan_pcp, None))
    return out


def covers(req, m):
    """The non-strict test of FLOW_MOD modify/delete and flow stats: every field the request
    names is matched by m at least as specifically."""
    for k in ("in_port", "dl_type", "dl_vlan", "dl_vlan_pcp"):
        want = getattr(req, k)
        if want is not None and getattr(m, k) != want:
            return False
    for k in ("dl_src", "dl_dst"):
        want, have = getattr(req, k), getattr(m, k)
        if want is None:
            continue
        if have is None or have[1] & want[1] != want[1] or have[0] & want[1] != want[0]:
            return False
    return True


# ---------------------------------------------------------------- actions

def to_actions(items, ports, packet_out=False):
    """Parsed actions -> [ofsyntax.Action]; PACKET_OUT may also output to TABLE."""
    out = []
    for a in items:
        kind = a[0]
        if kind == "output":
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
            else:
                raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_SET_TYPE, f"set_field {field}")
        else:
            raise c.OFError(c.ET_BAD_ACTION, c.BAC_BAD_TYPE, f"action type {a[1]} not supported")
    return out


def from_actions(actions, ports):
    """[ofsyntax.Action] -> action tuples for codec.actions()."""
    out = []
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
    return out


def to_rule_actions(instructions, ports):
    """FLOW_MOD instructions -> [ofsyntax.Action]: one APPLY_ACTIONS (or none: drop)."""
    actions, seen = [], set()
    for itype, payload in instructions:
        if itype in seen:
            raise c.OFError(c.ET_BAD_INSTRUCTION, c.BIC_UNSUP_INST, f"instruction {itype} twice")
        seen.add(itype)
        if itype == c.IT_APPLY_ACTIONS:
            actions = to_actions(payload, ports)
        elif itype == c.IT_GOTO_TABLE:
            raise c.OFError(c.ET_BAD_INSTRUCTION, c.BIC_BAD_TABLE_ID,
                            f"goto_table {payload}: only table 0 exists")
        else:
            raise c.OFError(c.ET_BAD_INSTRUCTION, c.BIC_UNSUP_INST, f"instruction {itype}")
    return actions


def instructions_of(rule, ports):
    return c.apply_actions(from_actions(rule.actions, ports))
