"""MemifInput / MemifOutput: a memif peer as a pair of graph nodes.

MemifInput (input node) polls the ring the peer transmits on (S2M when fastpath is the
master, M2S when it is the slave): each frame -- one descriptor, or a chain of them --
becomes one pool buffer (a big one when it is longer than 2048 bytes: jumbo frames up
to 64 KiB), next `ethernet-input`. When the ring is idle it asks the peer
for interrupts and resets the ring's eventfd, which fileno() hands to the dispatcher to
sleep on.

MemifOutput (sink) copies a vector into the ring the peer receives on, chaining
descriptors (MEMIF_DESC_FLAG_NEXT) when a frame is larger than the peer's buffers, as a
jumbo frame always is, then frees the buffers and signals the peer unless it polls.

Both count drops by reason (the ERRORS table in ring.pyx): frames the peer sent badly
(descriptors outside its memory, lengths over the buffer size, endless chains, too big,
too short), frames we had no big buffer for (no_big_buffer), frames it had no room for
(ring_full, or too_big when not even its whole ring would hold one) or no connection for
(not_connected), and index_jump when the peer broke the ring (the port then
disconnects). The rings belong to the port's control channel (protocol.MemifPort),
which places and removes them; the nodes only look at `ready`.
"""
from libc.stdint cimport uint32_t
from fastpath.graph.ringport cimport RingInput, RingOutput
from fastpath.memif.ring cimport MemifRing

from fastpath.memif.ring import ERRORS, RING_FAILURES


cdef class MemifInput(RingInput):
    """The peer's transmit ring -> pool buffers (input node)."""
    errors = ERRORS
    not_drops = RING_FAILURES
    cdef readonly MemifRing ring

    def __init__(self, name, MemifRing ring not None, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name, sw_if_index, next_node)
        self.ring = ring

    def fileno(self):
        """The ring's interrupt eventfd while connected (-1 otherwise)."""
        return self.ring.int_fd if self.ring.ready else -1

    cdef bint ring_ready(self) noexcept nogil:
        return self.ring.ready

    cdef int ring_burst(self, uint32_t *bufs, int room) noexcept nogil:
        return self.ring.rx_burst(self.pool, bufs, room, self.error_counts + self.err_base, &self.rx_bytes)

    def format_trace(self, uint32_t b):
        return f"memif {'s2m' if self.ring.s2m else 'm2s'} ring: rx len {self.pool.length[b]} -> {self.next_names[1]}"


cdef class MemifOutput(RingOutput):
    """Pool buffers -> the peer's receive ring (sink node)."""
    errors = ERRORS
    not_drops = RING_FAILURES
    cdef readonly MemifRing ring

    def __init__(self, name, MemifRing ring not None, int sw_if_index):
        super().__init__(name, sw_if_index)
        self.ring = ring

    cdef int ring_burst(self, uint32_t *bufs, int n) noexcept nogil:
        return self.ring.tx_burst(self.pool, bufs, n, self.error_counts + self.err_base, &self.tx_bytes)

    def format_trace(self, uint32_t b):
        return f"memif {'s2m' if self.ring.s2m else 'm2s'} ring: tx len {self.pool.length[b]}"
