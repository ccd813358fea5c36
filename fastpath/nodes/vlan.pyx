"""VLAN nodes: Open vSwitch port VLAN semantics on ingress and egress, and VPP-style
per-port tag rewrite (the mechanism both compile to).

vlan-input (ingress, for the NORMAL switch): classifies a frame into the bridge VLAN its
port's vlan_mode gives (ovs-vswitchd's vswitch.xml, "VLAN Configuration"), removes the
802.1Q header it arrived with and keeps the VLAN and priority in metadata:
  access          untagged or priority-tagged (VID 0) -> VLAN tag; VID != 0 dropped
  trunk           VLAN = VID (0 if untagged); dropped unless in trunks
  native-tagged,  untagged or VID 0 -> native VLAN (tag); else as trunk
  native-untagged
  dot1q-tunnel    VLAN = tag (the service VLAN), the frame kept whole: a customer tag
                  it carries stays inside (QinQ)
  A frame whose outer tag is 802.1ad (0x88a8) keeps that TPID when it is re-tagged.
  next: l2-learn. errors: tagged_on_access, vlan_not_allowed.

vlan-output (egress): checks the output port carries the VLAN and tags the frame as the
port requires (trunk and native-tagged: tagged unless VLAN 0; native-untagged: untagged
in the native VLAN; access and dot1q-tunnel: untagged, which pops the S-tag).
  next: interface-output. errors: vlan_not_allowed_out, no_headroom.

vlan-rewrite: per rx port, VPP's `set interface l2 tag-rewrite`: pop 1|2, push dot1q|dot1ad
N [M], translate 1-1 N. Ports without a rewrite pass through. next: the node given.
"""
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from fastpath.graph.buffer cimport BufferPool, F_SVLAN
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport (rd16, wr16, has_tag, outer_tci, vlan_push, vlan_pop,
                                      ETH_P_8021Q, ETH_P_8021AD)
from fastpath.nodes.bridge cimport (L2Node, L2Tables, VM_ACCESS, VM_TRUNK, VM_NATIVE_TAGGED,
                                    VM_NATIVE_UNTAGGED, VM_DOT1Q_TUNNEL, MAX_PORTS)

cdef enum:
    IN_ERR_TAGGED_ON_ACCESS = 0
    IN_ERR_VLAN_NOT_ALLOWED = 1


cdef class VlanInput(L2Node):
    node_name = "vlan-input"
    next_nodes = ("l2-learn",)
    errors = (("tagged_on_access", "tagged frame on an access port"),
              ("vlan_not_allowed", "VLAN not allowed on the input port"))

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b
        cdef uint16_t port, tci, vid, vlan, tpid
        cdef uint8_t mode
        cdef bint tagged
        for i in range(n):
            b = bufs[i]
            port = self.pool.rx_if[b]
            mode = self.tables.port_mode[port]
            tagged = has_tag(self.pool, b)
            tci = outer_tci(self.pool, b) if tagged else 0
            tpid = rd16(self.pool.frame(b) + 12) if tagged else 0
            vid = tci & 0xfff
            self.pool.pcp[b] = tci >> 13
            self.pool.next[b] = 1
            if mode == VM_DOT1Q_TUNNEL:
                self.pool.vlan[b] = self.tables.port_tag[port]
                self.pool.pcp[b] = 0
                self.pool.flags[b] = self.pool.flags[b] | F_SVLAN
                continue
            if mode == VM_ACCESS:
                if vid != 0:
                    self.pool.error[b] = self.err_base + IN_ERR_TAGGED_ON_ACCESS
                    self.pool.next[b] = ARC_DROP
                    continue
                vlan = self.tables.port_tag[port]
            elif mode == VM_TRUNK:
                vlan = vid
            else:
                vlan = vid if vid else self.tables.port_tag[port]
            if mode != VM_ACCESS and not self.tables.carries(port, vlan):
                self.pool.error[b] = self.err_base + IN_ERR_VLAN_NOT_ALLOWED
                self.pool.next[b] = ARC_DROP
                continue
            if tagged:
                if tpid == ETH_P_8021AD:
                    self.pool.flags[b] = self.pool.flags[b] | F_SVLAN
                vlan_pop(self.pool, b)
            self.pool.vlan[b] = vlan
        return 0

    def format_trace(self, uint32_t b):
        if self.pool.next[b] == ARC_DROP:
            return f"port {self.pool.rx_if[b]}: dropped"
        return f"port {self.pool.rx_if[b]} -> vlan {self.pool.vlan[b]} pcp {self.pool.pcp[b]}"


cdef enum:
    OUT_ERR_VLAN_NOT_ALLOWED = 0
    OUT_ERR_NO_HEADROOM = 1


cdef class VlanOutput(L2Node):
    node_name = "vlan-output"
    next_nodes = ("interface-output",)
    errors = (("vlan_not_allowed_out", "VLAN not carried by the output port"),
              ("no_headroom", "no headroom to push a tag"))

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b
        cdef uint16_t port, vlan
        cdef uint8_t mode
        cdef bint tag_it
        for i in range(n):
            b = bufs[i]
            port = self.pool.tx_if[b]
            vlan = self.pool.vlan[b]
            if port >= MAX_PORTS or not self.tables.carries(port, vlan):
                self.pool.error[b] = self.err_base + OUT_ERR_VLAN_NOT_ALLOWED
                self.pool.next[b] = ARC_DROP
                continue
            mode = self.tables.port_mode[port]
            if mode == VM_TRUNK or mode == VM_NATIVE_TAGGED:
                tag_it = vlan != 0
            elif mode == VM_NATIVE_UNTAGGED:
                tag_it = vlan != 0 and vlan != self.tables.port_tag[port]
            else:
                tag_it = False
            self.pool.next[b] = 1
            if tag_it and vlan_push(self.pool, b, ETH_P_8021AD if self.pool.flags[b] & F_SVLAN else ETH_P_8021Q,
                                    (<uint16_t> self.pool.pcp[b] << 13) | vlan) < 0:
                self.pool.error[b] = self.err_base + OUT_ERR_NO_HEADROOM
                self.pool.next[b] = ARC_DROP
        return 0

    def format_trace(self, uint32_t b):
        return f"tx_if {self.pool.tx_if[b]} vlan {self.pool.vlan[b]} -> {self.next_names[self.pool.next[b]]}"


# tag-rewrite operations
cdef enum:
    RW_NONE = 0
    RW_POP1 = 1
    RW_POP2 = 2
    RW_PUSH1 = 3
    RW_PUSH2 = 4
    RW_TRANSLATE11 = 5

cdef enum:
    RW_ERR_NO_TAG = 0
    RW_ERR_NO_HEADROOM = 1


def parse_rewrite(text):
    """'pop 1' | 'pop 2' | 'push dot1q|dot1ad N [M]' | 'translate 1-1 N' | 'disable'
    -> (op, tpid, vid1, vid2). ValueError naming the bad word."""
    words = text.split()
    def vid(w):
        if not w.isdigit() or not 0 <= int(w) <= 4095:
            raise ValueError(f"bad VLAN id {w!r} in tag-rewrite {text!r}")
        return int(w)
    if words == ["disable"]:
        return (RW_NONE, 0, 0, 0)
    if len(words) == 2 and words[0] == "pop" and words[1] in ("1", "2"):
        return (RW_POP1 if words[1] == "1" else RW_POP2, 0, 0, 0)
    if len(words) in (3, 4) and words[0] == "push":
        tpids = {"dot1q": ETH_P_8021Q, "dot1ad": ETH_P_8021AD}
        if words[1] not in tpids:
            raise ValueError(f"bad tag type {words[1]!r} in tag-rewrite {text!r} (dot1q or dot1ad)")
        if len(words) == 3:
            return (RW_PUSH1, tpids[words[1]], vid(words[2]), 0)
        return (RW_PUSH2, tpids[words[1]], vid(words[2]), vid(words[3]))
    if len(words) == 3 and words[:2] == ["translate", "1-1"]:
        return (RW_TRANSLATE11, 0, vid(words[2]), 0)
    raise ValueError(f"bad tag-rewrite {text!r}: expected pop 1|2, push dot1q|dot1ad N [M], "
                     f"translate 1-1 N or disable")


cdef class VlanRewrite(Node):
    errors = (("no_tag", "tag-rewrite needs a tag the frame does not have"),
              ("no_headroom", "no headroom to push a tag"))
    cdef object _tab
    cdef uint16_t *op
    cdef uint16_t *tpid
    cdef uint16_t *vid1
    cdef uint16_t *vid2

    def __init__(self, name="vlan-rewrite", next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self._tab = np.zeros((4, MAX_PORTS), dtype=np.uint16)
        self.op = <uint16_t *> <size_t> self._tab[0].ctypes.data
        self.tpid = <uint16_t *> <size_t> self._tab[1].ctypes.data
        self.vid1 = <uint16_t *> <size_t> self._tab[2].ctypes.data
        self.vid2 = <uint16_t *> <size_t> self._tab[3].ctypes.data

    def set_rewrite(self, int port, text):
        op, tpid, v1, v2 = parse_rewrite(text)
        self._tab[:, port] = (op, tpid, v1, v2)

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, r
        cdef uint32_t b
        cdef uint16_t port, op, tci
        for i in range(n):
            b = bufs[i]
            port = self.pool.rx_if[b] if self.pool.rx_if[b] < MAX_PORTS else 0
            op = self.op[port]
            r = 0
            if op == RW_POP1:
                r = vlan_pop(self.pool, b)
            elif op == RW_POP2:
                r = vlan_pop(self.pool, b)
                if r == 0:
                    r = vlan_pop(self.pool, b)
            elif op == RW_PUSH1:
                r = vlan_push(self.pool, b, self.tpid[port], self.vid1[port]) * 2
            elif op == RW_PUSH2:
                # outer first in the text: push the inner (always 802.1Q) then the outer
                r = vlan_push(self.pool, b, ETH_P_8021Q, self.vid2[port]) * 2
                if r == 0:
                    r = vlan_push(self.pool, b, self.tpid[port], self.vid1[port]) * 2
            elif op == RW_TRANSLATE11:
                if has_tag(self.pool, b):
                    tci = outer_tci(self.pool, b)
                    wr16(self.pool.frame(b) + 14, (tci & 0xf000) | self.vid1[port])
                else:
                    r = -1
            if r == 0:
                self.pool.next[b] = 1
            else:
                self.pool.error[b] = self.err_base + (RW_ERR_NO_TAG if r == -1 else RW_ERR_NO_HEADROOM)
                self.pool.next[b] = ARC_DROP
        return 0
