"""MemifInput / MemifOutput: a memif peer as a pair of graph nodes.

MemifInput (input node) polls the ring the peer transmits on (S2M when fastpath is the
master, M2S when it is the slave): each frame -- one descriptor, or a chain of them --
becomes one pool buffer, next `ethernet-input`. When the ring is idle it asks the peer
for interrupts and resets the ring's eventfd, which fileno() hands to the dispatcher to
sleep on.

MemifOutput (sink) copies a vector into the ring the peer receives on, chaining
descriptors when a frame is larger than the peer's buffers, then frees the buffers and
signals the peer unless it polls.

Both count drops by reason (the ERRORS table in ring.pyx): frames the peer sent badly
(descriptors outside its memory, lengths over the buffer size, endless chains, too big,
too short), frames it had no room for (ring_full) or no connection for
(not_connected), and index_jump when the peer broke the ring (the port then
disconnects). The rings belong to the port's control channel (protocol.MemifPort),
which places and removes them; the nodes only look at `ready`.
"""
import numpy as np
from fastpath.graph.spinlock cimport fp_spin_lock, fp_spin_unlock
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from fastpath.graph.node cimport Node
from fastpath.memif.ring cimport MemifRing, N_ERRORS

from fastpath.memif.ring import ERRORS, RING_FAILURES


cdef class MemifInput(Node):
    """The peer's transmit ring -> pool buffers (input node)."""
    input = True
    errors = ERRORS
    cdef readonly MemifRing ring
    cdef public uint16_t sw_if_index
    cdef public uint64_t rx_packets, rx_bytes
    cdef public object control            # the port's control channel, for stats()

    def __init__(self, name, MemifRing ring not None, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self.ring = ring
        self.sw_if_index = sw_if_index
        self.control = None

    def fileno(self):
        """The ring's interrupt eventfd while connected (-1 otherwise)."""
        return self.ring.int_fd if self.ring.ready else -1

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        cdef int n, i
        cdef uint32_t b
        if not self.ring.ready:
            return 0
        n = self.ring.rx_burst(self.pool, bufs, room, self.error_counts + self.err_base, &self.rx_bytes)
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
        """rx_drops: frames the peer sent that did not enter the graph."""
        errs = self.errors_by_reason()
        s = {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
             "rx_drops": sum(v for r, v in errs.items() if r not in RING_FAILURES)}
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
        return f"memif {'s2m' if self.ring.s2m else 'm2s'} ring: rx len {self.pool.length[b]} -> {self.next_names[1]}"


cdef class MemifOutput(Node):
    """Pool buffers -> the peer's receive ring (sink node)."""
    sink = True
    errors = ERRORS
    cdef readonly MemifRing ring
    cdef public uint16_t sw_if_index
    cdef public uint64_t tx_packets, tx_bytes
    cdef int *tx_lock                     # NULL with one worker; else shared by its outputs
    cdef object _lock_cell

    def __init__(self, name, MemifRing ring not None, int sw_if_index):
        super().__init__(name)
        self.ring = ring
        self.sw_if_index = sw_if_index

    def share_ring(self, MemifOutput first not None):
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
        self.tx_packets += self.ring.tx_burst(self.pool, bufs, n, self.error_counts + self.err_base,
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
        """tx_drops: frames for the peer it did not get (no room, no connection, bad slots)."""
        errs = self.errors_by_reason()
        s = {"tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
             "tx_drops": sum(v for r, v in errs.items() if r not in RING_FAILURES)}
        s.update({f"tx_{r}": v for r, v in errs.items() if v})
        return s

    def clear_stats(self):
        self.tx_packets = self.tx_bytes = 0
        if self.graph is not None:
            for i in range(N_ERRORS):
                self.error_counts[self.err_base + i] = 0

    def format_trace(self, uint32_t b):
        return f"memif {'s2m' if self.ring.s2m else 'm2s'} ring: tx len {self.pool.length[b]}"
