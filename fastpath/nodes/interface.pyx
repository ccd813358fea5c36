"""interface-output: sends each frame to the tx node of the interface in pool.tx_if.

Counts: no_interface (tx_if names no interface), interface_down (admin down),
mtu_exceeded (frame larger than the egress MTU plus its L2 header).
"""
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from fastpath.graph.node cimport Node, ARC_DROP

cdef enum:
    ERR_NO_INTERFACE = 0
    ERR_INTERFACE_DOWN = 1
    ERR_MTU_EXCEEDED = 2


cdef class InterfaceOutput(Node):
    node_name = "interface-output"
    errors = (("no_interface", "no such output interface"),
              ("interface_down", "output interface is down"),
              ("mtu_exceeded", "frame larger than the output MTU"))
    cdef object _arc, _up, _maxlen
    cdef uint16_t *if_arc          # sw_if_index -> arc (0 = none)
    cdef uint8_t *up
    cdef uint16_t *maxlen          # largest frame the interface sends

    def __init__(self, name=None):
        super().__init__(name)
        self._arc = np.zeros(65536, dtype=np.uint16)
        self._up = np.zeros(65536, dtype=np.uint8)
        self._maxlen = np.zeros(65536, dtype=np.uint16)
        self.if_arc = <uint16_t *> <size_t> self._arc.ctypes.data
        self.up = <uint8_t *> <size_t> self._up.ctypes.data
        self.maxlen = <uint16_t *> <size_t> self._maxlen.ctypes.data

    def set_interface(self, int sw_if_index, tx_node_name, bint up=True, int mtu=1500):
        self._arc[sw_if_index] = self.arc(tx_node_name) if tx_node_name else 0
        self._up[sw_if_index] = up
        # MTU counts the payload; allow the Ethernet header and two tags
        self._maxlen[sw_if_index] = min(mtu + 22, 65535)

    def set_up(self, int sw_if_index, bint up):
        self._up[sw_if_index] = up

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b
        cdef uint16_t t
        for i in range(n):
            b = bufs[i]
            t = self.pool.tx_if[b]
            if self.if_arc[t] == 0:
                self.pool.error[b] = self.err_base + ERR_NO_INTERFACE
                self.pool.next[b] = ARC_DROP
            elif not self.up[t]:
                self.pool.error[b] = self.err_base + ERR_INTERFACE_DOWN
                self.pool.next[b] = ARC_DROP
            elif self.pool.length[b] > self.maxlen[t]:
                self.pool.error[b] = self.err_base + ERR_MTU_EXCEEDED
                self.pool.next[b] = ARC_DROP
            else:
                self.pool.next[b] = self.if_arc[t]
        return 0

    def format_trace(self, uint32_t b):
        return f"tx_if {self.pool.tx_if[b]} -> {self.next_names[self.pool.next[b]]}"
