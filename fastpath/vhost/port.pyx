"""VhostUserInput / VhostUserOutput: a vhost-user guest as a pair of graph nodes.

VhostUserInput (input node) polls the guest's transmit queue (virtqueue 1): each chain
becomes one pool buffer holding the Ethernet frame without its virtio-net header, next
`ethernet-input`. When the queue is empty it resets the kick eventfd, which fileno()
hands to the dispatcher to sleep on.

VhostUserOutput (sink) copies a vector into the guest's receive queue (virtqueue 0),
with mergeable receive buffers when negotiated, then frees the buffers.

Both count drops by reason (the ERRORS table in virtq.pyx): frames the guest sent
badly (descriptors outside its memory, loops, wrong direction, too big), frames the
guest had no room for (ring_full) or no running queue for (not_ready). The queues
themselves belong to the port's control channel (protocol.VhostUserPort), which sets
them up and tears them down; the nodes only look at `ready`.
"""
import numpy as np
from fastpath.graph.spinlock cimport fp_spin_lock, fp_spin_unlock
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from fastpath.graph.node cimport Node
from fastpath.vhost.virtq cimport Virtq, N_ERRORS

from fastpath.vhost.virtq import ERRORS, QUEUE_FAILURES


cdef class VhostUserInput(Node):
    """Guest transmit queue -> pool buffers (input node)."""
    input = True
    errors = ERRORS
    cdef readonly Virtq vq
    cdef public uint16_t sw_if_index
    cdef public uint64_t rx_packets, rx_bytes
    cdef public object control            # the port's control channel, for stats()

    def __init__(self, name, Virtq vq not None, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self.vq = vq
        self.sw_if_index = sw_if_index
        self.control = None

    def fileno(self):
        """The kick eventfd while the queue runs (-1 otherwise): readable when the guest
        has sent something while we were idle."""
        return self.vq.kick_fd if self.vq.ready else -1

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        cdef int n, i
        cdef uint32_t b
        if not self.vq.ready:
            return 0
        n = self.vq.tx_burst(self.pool, bufs, room, self.error_counts + self.err_base, &self.rx_bytes)
        for i in range(n):
            b = bufs[i]
            self.pool.rx_if[b] = self.sw_if_index
            self.pool.next[b] = 1
        self.rx_packets += n
        return n

    def errors_by_reason(self):
        if self.graph is None:
            return {r: 0 for r, _ in ERRORS}
        return {r: int(self.error_counts[self.err_base + i]) for i, (r, _) in enumerate(ERRORS)}

    def stats(self):
        """rx_drops: frames the guest sent that did not enter the graph."""
        errs = self.errors_by_reason()
        s = {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
             "rx_drops": sum(v for r, v in errs.items() if r not in QUEUE_FAILURES)}
        s.update({f"rx_{r}": v for r, v in errs.items() if v})
        if self.control is not None:
            s.update(self.control.stats())
        return s

    def clear_stats(self):
        self.rx_packets = self.rx_bytes = 0
        if self.graph is not None:
            for i in range(N_ERRORS):
                self.error_counts[self.err_base + i] = 0

    def format_trace(self, uint32_t b):
        return f"vhost-user queue {self.vq.index}: rx len {self.pool.length[b]} -> {self.next_names[1]}"


cdef class VhostUserOutput(Node):
    """Pool buffers -> guest receive queue (sink node)."""
    sink = True
    errors = ERRORS
    cdef readonly Virtq vq
    cdef public uint16_t sw_if_index
    cdef public uint64_t tx_packets, tx_bytes
    cdef int *tx_lock                     # NULL with one worker; else shared by its outputs
    cdef object _lock_cell

    def __init__(self, name, Virtq vq not None, int sw_if_index):
        super().__init__(name)
        self.vq = vq
        self.sw_if_index = sw_if_index

    def share_ring(self, VhostUserOutput first not None):
        """Another worker transmits on first's ring too: both take one spinlock around
        a burst (one producer at a time, as the ring requires)."""
        if first._lock_cell is None:
            first._lock_cell = np.zeros(1, dtype=np.int32)
            first.tx_lock = <int *> <size_t> first._lock_cell.ctypes.data
        self._lock_cell = first._lock_cell
        self.tx_lock = first.tx_lock

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        if self.tx_lock != NULL:
            fp_spin_lock(self.tx_lock)
        self.tx_packets += self.vq.rx_burst(self.pool, bufs, n, self.error_counts + self.err_base,
                                            &self.tx_bytes)
        if self.tx_lock != NULL:
            fp_spin_unlock(self.tx_lock)
        self.pool.free(bufs, n)
        return 0

    def errors_by_reason(self):
        if self.graph is None:
            return {r: 0 for r, _ in ERRORS}
        return {r: int(self.error_counts[self.err_base + i]) for i, (r, _) in enumerate(ERRORS)}

    def stats(self):
        """tx_drops: frames for the guest it did not get (no room, not running, bad chains)."""
        errs = self.errors_by_reason()
        s = {"tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
             "tx_drops": sum(v for r, v in errs.items() if r not in QUEUE_FAILURES)}
        s.update({f"tx_{r}": v for r, v in errs.items() if v})
        return s

    def clear_stats(self):
        self.tx_packets = self.tx_bytes = 0
        if self.graph is not None:
            for i in range(N_ERRORS):
                self.error_counts[self.err_base + i] = 0

    def format_trace(self, uint32_t b):
        return f"vhost-user queue {self.vq.index}: tx len {self.pool.length[b]}"
