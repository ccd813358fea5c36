"""ethernet-input: checks that a frame is Ethernet and sends it to its port's bridge.

Next nodes: vlan-input (the bridge runs the default NORMAL switch), flow-classify (the
bridge has an OpenFlow table), or whatever a non-bridge port was given (set_port_next).
Errors: runt (shorter than an Ethernet header), truncated_tag (a TPID with no room for
its tag), no_bridge (the port is in no bridge and has no other use).
"""
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from fastpath.graph.buffer cimport BufferPool, F_TAGGED_IN
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport ETH_HLEN, VLAN_HLEN, rd16, is_vlan_tpid
from fastpath.nodes.bridge cimport L2Node, L2Tables, MAX_PORTS, NO_BRIDGE

cdef enum:
    ERR_RUNT = 0
    ERR_TRUNCATED_TAG = 1
    ERR_NO_BRIDGE = 2

cdef enum:
    NEXT_VLAN_INPUT = 1
    NEXT_FLOW = 2


cdef class EthernetInput(L2Node):
    node_name = "ethernet-input"
    next_nodes = ("vlan-input", "flow-classify")
    errors = (("runt", "frame shorter than an Ethernet header"),
              ("truncated_tag", "VLAN tag cut short"),
              ("no_bridge", "port is not in a bridge"))
    cdef object _port_next
    cdef uint16_t *port_next          # arc for ports outside any bridge (0: drop)

    def __init__(self, L2Tables tables, name=None):
        super().__init__(tables, name)
        self._port_next = np.zeros(MAX_PORTS, dtype=np.uint16)
        self.port_next = <uint16_t *> <size_t> self._port_next.ctypes.data

    def set_port_next(self, int port, node_name):
        """Send frames from a port outside any bridge to node_name (None: drop them)."""
        self._port_next[port] = self.arc(node_name) if node_name else 0

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b
        cdef uint16_t port, bd
        cdef uint8_t *p
        for i in range(n):
            b = bufs[i]
            port = self.pool.rx_if[b]
            if self.pool.length[b] < ETH_HLEN:
                self.pool.error[b] = self.err_base + ERR_RUNT
                self.pool.next[b] = ARC_DROP
                continue
            p = self.pool.frame(b)
            if is_vlan_tpid(rd16(p + 12)):
                if self.pool.length[b] < ETH_HLEN + VLAN_HLEN:
                    self.pool.error[b] = self.err_base + ERR_TRUNCATED_TAG
                    self.pool.next[b] = ARC_DROP
                    continue
                self.pool.flags[b] = self.pool.flags[b] | F_TAGGED_IN
            bd = self.tables.port_bd[port] if port < MAX_PORTS else NO_BRIDGE
            self.pool.bd[b] = bd
            if bd != NO_BRIDGE:
                self.pool.next[b] = NEXT_FLOW if self.tables.has_flows[bd] else NEXT_VLAN_INPUT
            elif port < MAX_PORTS and self.port_next[port]:
                self.pool.next[b] = self.port_next[port]
            else:
                self.pool.error[b] = self.err_base + ERR_NO_BRIDGE
                self.pool.next[b] = ARC_DROP
        return 0

    def format_trace(self, uint32_t b):
        return f"rx_if {self.pool.rx_if[b]} bridge {self.pool.bd[b]} -> {self.next_names[self.pool.next[b]]}"
