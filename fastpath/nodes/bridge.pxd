"""L2Tables: the bridge and port configuration the L2 nodes read on the packet path.

Written by the control plane (fastpath.switch), read by ethernet-input, vlan-input,
l2-learn, l2-fwd, l2-flood, vlan-output and flow-classify. Plain C arrays indexed by
sw_if_index or bridge index, so nodes read them without the GIL.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.node cimport Node

cdef enum:
    MAX_PORTS = 4096          # sw_if_index space the L2 tables cover
    MAX_BRIDGES = 256
    MAX_MEMBERS = 1024        # ports per bridge
    NO_BRIDGE = 0xffff

# vlan_mode, as Open vSwitch names them
cdef enum:
    VM_ACCESS = 0
    VM_TRUNK = 1
    VM_NATIVE_TAGGED = 2
    VM_NATIVE_UNTAGGED = 3
    VM_DOT1Q_TUNNEL = 4


cdef class L2Tables:
    cdef object _arrays
    cdef uint16_t *port_bd            # bridge of each port, NO_BRIDGE if none
    cdef uint8_t *port_mode
    cdef uint16_t *port_tag
    cdef uint64_t *trunks             # 64 words (4096 bits) per port: VLANs it carries
    cdef uint8_t *port_group          # split-horizon group: never flood group g -> group g
    cdef uint16_t *members            # MAX_MEMBERS per bridge
    cdef uint16_t *n_members
    cdef uint8_t *has_flows           # bridge has a flow table other than "actions=normal"
    cdef void *fdb[MAX_BRIDGES]       # borrowed Fdb objects (owned by fastpath.switch.Bridge)
    cdef void *flows[MAX_BRIDGES]     # borrowed FlowTable objects
    cdef public double now            # the switch clock, for learning timestamps
    cdef readonly object _owners      # keeps the Fdb/FlowTable objects alive

    cdef inline bint carries(self, uint16_t port, uint16_t vlan) noexcept nogil:
        cdef uint8_t mode = self.port_mode[port]
        if mode == VM_ACCESS or mode == VM_DOT1Q_TUNNEL:
            return vlan == self.port_tag[port]
        return (self.trunks[<uint32_t> port * 64 + (vlan >> 6)] >> (vlan & 63)) & 1


cdef class L2Node(Node):
    """A node that reads the bridge tables (every node of the NORMAL switch)."""
    cdef L2Tables tables
