"""VhostUserInput / VhostUserOutput: a vhost-user guest as a pair of graph nodes.

VhostUserInput (input node) polls the guest's transmit queue (virtqueue 1): each chain
becomes one pool buffer holding the Ethernet frame (a big buffer when it is larger than
a small one), its virtio-net header taken into the buffer's offload state, next
`ethernet-input`. When the queue is empty it resets the kick eventfd, which fileno()
hands to the dispatcher to sleep on.

VhostUserOutput (sink) copies a vector into the guest's receive queue (virtqueue 0),
each frame behind a header with its offload state as far as the guest takes it, with
mergeable receive buffers when negotiated, then frees the buffers.

Both count drops by reason (the ERRORS table in virtq.pyx): frames the guest sent
badly (descriptors outside its memory, loops, wrong direction, too big, a virtio-net
header that does not fit the frame or was not negotiated), frames the
guest had no room for (ring_full) or no running queue for (not_ready). The queues
themselves belong to the port's control channel (protocol.VhostUserPort), which sets
them up and tears them down; the nodes only look at `ready`.
"""
from libc.stdint cimport uint32_t
from fastpath.graph.ringport cimport RingInput, RingOutput
from fastpath.vhost.virtq cimport Virtq

from fastpath.vhost.virtq import ERRORS, QUEUE_FAILURES


cdef class VhostUserInput(RingInput):
    """Guest transmit queue -> pool buffers (input node)."""
    errors = ERRORS
    not_drops = QUEUE_FAILURES
    cdef readonly Virtq vq

    def __init__(self, name, Virtq vq not None, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name, sw_if_index, next_node)
        self.vq = vq

    def fileno(self):
        """The kick eventfd while the queue runs (-1 otherwise): readable when the guest
        has sent something while we were idle."""
        return self.vq.kick_fd if self.vq.ready else -1

    cdef bint ring_ready(self) noexcept nogil:
        return self.vq.ready

    cdef int ring_burst(self, uint32_t *bufs, int room) noexcept nogil:
        return self.vq.tx_burst(self.pool, bufs, room, self.error_counts + self.err_base, &self.rx_bytes)

    def format_trace(self, uint32_t b):
        return f"vhost-user queue {self.vq.index}: rx len {self.pool.length[b]} -> {self.next_names[1]}"


cdef class VhostUserOutput(RingOutput):
    """Pool buffers -> guest receive queue (sink node)."""
    errors = ERRORS
    not_drops = QUEUE_FAILURES
    cdef readonly Virtq vq

    def __init__(self, name, Virtq vq not None, int sw_if_index):
        super().__init__(name, sw_if_index)
        self.vq = vq

    cdef int ring_burst(self, uint32_t *bufs, int n) noexcept nogil:
        return self.vq.rx_burst(self.pool, bufs, n, self.error_counts + self.err_base, &self.tx_bytes)

    def format_trace(self, uint32_t b):
        return f"vhost-user queue {self.vq.index}: tx len {self.pool.length[b]}"
