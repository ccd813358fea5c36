"""interface-output: sends each frame to the tx node of the interface in pool.tx_if, after
finishing in software what that interface cannot take of the frame's offload state.

- a partial checksum (OL_CSUM_PARTIAL) to a port without CAP_CSUM: filled in here;
- a TCP super-frame (OL_GSO_*) to a port without TSO for its IP version, or whose
  segments would not fit the port's MTU (gso_size is lowered to fit here): to the gso
  node, which cuts it into segments that come back here;
- any other frame larger than the egress MTU plus its L2 header: dropped (mtu_exceeded),
  never truncated or fragmented, as a Linux bridge port does.

Counts: no_interface (tx_if names no interface), interface_down (admin down),
mtu_exceeded, bad_offload (offload state that does not match the frame's headers).
"""
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from fastpath.graph.buffer cimport OL_CSUM_PARTIAL, OL_GSO, OL_GSO_TCP4, OL_GSO_TCP6
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.offload cimport l3_offset, csum_finish, CAP_CSUM, CAP_TSO4, CAP_TSO6, CAP_ALL

cdef enum:
    ERR_NO_INTERFACE = 0
    ERR_INTERFACE_DOWN = 1
    ERR_MTU_EXCEEDED = 2
    ERR_BAD_OFFLOAD = 3
    ARC_GSO = 1

# for set_interface(caps=...): a port that takes every offload state as it is, or some
OFFLOAD_ALL = CAP_ALL
OFFLOAD_CSUM = CAP_CSUM
OFFLOAD_TSO4 = CAP_TSO4
OFFLOAD_TSO6 = CAP_TSO6


cdef class InterfaceOutput(Node):
    node_name = "interface-output"
    next_nodes = ("gso",)
    errors = (("no_interface", "no such output interface"),
              ("interface_down", "output interface is down"),
              ("mtu_exceeded", "frame larger than the output MTU"),
              ("bad_offload", "offload state that does not match the frame"))
    cdef object _arc, _up, _maxlen, _mtu, _caps
    cdef uint16_t *if_arc          # sw_if_index -> arc (0 = none)
    cdef uint8_t *up
    cdef uint16_t *maxlen          # largest frame the interface sends
    cdef uint16_t *mtu             # largest IP packet it sends (what a GSO segment must fit)
    cdef uint8_t *caps             # CAP_*: the offload state it takes as it is

    def __init__(self, name=None):
        super().__init__(name)
        self._arc = np.zeros(65536, dtype=np.uint16)
        self._up = np.zeros(65536, dtype=np.uint8)
        self._maxlen = np.zeros(65536, dtype=np.uint16)
        self._mtu = np.zeros(65536, dtype=np.uint16)
        self._caps = np.zeros(65536, dtype=np.uint8)
        self.if_arc = <uint16_t *> <size_t> self._arc.ctypes.data
        self.up = <uint8_t *> <size_t> self._up.ctypes.data
        self.maxlen = <uint16_t *> <size_t> self._maxlen.ctypes.data
        self.mtu = <uint16_t *> <size_t> self._mtu.ctypes.data
        self.caps = <uint8_t *> <size_t> self._caps.ctypes.data

    def set_interface(self, int sw_if_index, tx_node_name, bint up=True, int mtu=1500, int caps=0,
                      int maxlen=0):
        """maxlen: the largest frame to pass on (0: the MTU, an Ethernet header and two
        tags); a tunnel port passes every frame on, for vxlan-encap to count as too_big."""
        self._arc[sw_if_index] = self.arc(tx_node_name) if tx_node_name else 0
        self._up[sw_if_index] = up
        self.set_mtu(sw_if_index, mtu, maxlen)
        self._caps[sw_if_index] = caps

    def set_mtu(self, int sw_if_index, int mtu, int maxlen=0):
        # MTU counts the payload; allow the Ethernet header and two tags
        self._maxlen[sw_if_index] = min(maxlen or mtu + 22, 65535)
        self._mtu[sw_if_index] = min(mtu, 65535)

    def set_up(self, int sw_if_index, bint up):
        self._up[sw_if_index] = up

    def set_caps(self, int sw_if_index, int caps):
        """The offload state the interface takes, when its peer renegotiates (vhost-user)."""
        self._caps[sw_if_index] = caps

    def get_caps(self, int sw_if_index):
        return int(self._caps[sw_if_index])

    cdef inline bint needs_gso(self, uint32_t b, uint16_t t) noexcept nogil:
        """Whether super-frame b must be cut in software for interface t: no TSO for its IP
        version there, or segments larger than t's MTU (then gso_size is lowered to fit)."""
        cdef uint8_t ol = self.pool.ol_flags[b]
        cdef const uint8_t *f = self.pool.frame(b)
        cdef int l3 = l3_offset(f, self.pool.length[b])
        cdef uint32_t l4 = <uint32_t> l3 + self.pool.l4_start[b], headers
        if l3 < 0 or l4 + 20 > self.pool.length[b]:
            return True         # gso counts it as bad_gso
        # IP and TCP headers of every segment
        headers = self.pool.l4_start[b] + ((f[l4 + 12] >> 4) << 2)
        if headers + self.pool.gso_size[b] > self.mtu[t]:
            if headers < self.mtu[t]:
                self.pool.gso_size[b] = self.mtu[t] - headers
            return True
        return ((ol & OL_GSO_TCP4 and not (self.caps[t] & CAP_TSO4)) or
                (ol & OL_GSO_TCP6 and not (self.caps[t] & CAP_TSO6)))

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b
        cdef uint16_t t
        cdef uint8_t ol
        for i in range(n):
            b = bufs[i]
            t = self.pool.tx_if[b]
            ol = self.pool.ol_flags[b]
            if self.if_arc[t] == 0:
                self.pool.error[b] = self.err_base + ERR_NO_INTERFACE
                self.pool.next[b] = ARC_DROP
            elif not self.up[t]:
                self.pool.error[b] = self.err_base + ERR_INTERFACE_DOWN
                self.pool.next[b] = ARC_DROP
            elif ol & OL_GSO:
                self.pool.next[b] = ARC_GSO if self.needs_gso(b, t) else self.if_arc[t]
            elif self.pool.length[b] > self.maxlen[t]:
                self.pool.error[b] = self.err_base + ERR_MTU_EXCEEDED
                self.pool.next[b] = ARC_DROP
            elif ol & OL_CSUM_PARTIAL and not (self.caps[t] & CAP_CSUM) and csum_finish(self.pool, b) != 0:
                self.pool.error[b] = self.err_base + ERR_BAD_OFFLOAD
                self.pool.next[b] = ARC_DROP
            else:
                self.pool.next[b] = self.if_arc[t]
        return 0

    def format_trace(self, uint32_t b):
        return f"tx_if {self.pool.tx_if[b]} -> {self.next_names[self.pool.next[b]]}"
