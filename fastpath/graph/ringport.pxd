from libc.stdint cimport uint16_t, uint32_t, uint64_t
from fastpath.graph.node cimport Node


cdef class RingInput(Node):
    cdef public uint16_t sw_if_index
    cdef public uint64_t rx_packets, rx_bytes
    cdef public object control            # the port's control channel, for stats()
    cdef object _since                    # error counts when the port was (re)attached

    cdef bint ring_ready(self) noexcept nogil
    cdef int ring_burst(self, uint32_t *bufs, int room) noexcept nogil


cdef class RingOutput(Node):
    cdef public uint16_t sw_if_index
    cdef public uint64_t tx_packets, tx_bytes
    cdef int *tx_lock                     # NULL with one worker; else shared by its outputs
    cdef object _lock_cell
    cdef object _since

    cdef int ring_burst(self, uint32_t *bufs, int n) noexcept nogil
