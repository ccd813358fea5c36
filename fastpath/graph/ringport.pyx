"""RingInput / RingOutput: the two graph nodes of a port whose frames go through a peer's
shared-memory rings (vhost-user virtqueues, memif rings). A port type subclasses them with
its ring and says how a burst moves frames (ring_burst); what they share is here:

- the input hands each frame to `next_node` with the port's sw_if_index, and counts;
- the output takes a spinlock around a burst when several workers transmit on one ring
  (share_ring), as VPP does when a device has fewer TX queues than workers, then frees
  the vector;
- drops are counted by reason in the graph's error counters (`show errors`), under the
  subclass's `errors`; the interface counters (`show interfaces`) are those counts since
  the port was added, so a port deleted and added again starts from zero while
  `show errors` keeps the node's history. Reasons in `not_drops` (the ring itself broke)
  are not frames, so they are not in rx_drops/tx_drops.
"""
import numpy as np
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from fastpath.graph.node cimport Node
from fastpath.graph.spinlock cimport fp_spin_lock, fp_spin_unlock



def _errors_since(Node node, since):
    """{reason: drops since `since` (the counts at attach)}."""
    names = [r for r, _ in type(node).errors]
    if node.graph is None:
        return dict.fromkeys(names, 0)
    counts = node.graph.error_counts
    return {r: int(counts[node.err_base + i]) - since[i] for i, r in enumerate(names)}


def _interface_stats(Node node, str way, uint64_t packets, uint64_t octets, since):
    """{rx|tx}_packets, _bytes, _drops (frames, not ring failures) and each reason's count."""
    errs = _errors_since(node, since)
    s = {f"{way}_packets": packets, f"{way}_bytes": octets,
         f"{way}_drops": sum(v for r, v in errs.items() if r not in type(node).not_drops)}
    s.update({f"{way}_{r}": v for r, v in errs.items() if v})
    return s


def _counts_now(Node node):
    counts = node.graph.error_counts
    return [int(counts[node.err_base + i]) for i in range(len(type(node).errors))]


cdef class RingInput(Node):
    """The peer's transmit ring -> pool buffers (input node)."""
    input = True
    not_drops = ()

    def __init__(self, name, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self.sw_if_index = sw_if_index
        self.control = None
        self._since = [0] * len(type(self).errors)

    def _attach(self, graph, int index, uint16_t err_base, error_counts):
        Node._attach(self, graph, index, err_base, error_counts)
        self._since = _counts_now(self)

    cdef bint ring_ready(self) noexcept nogil:
        return False

    cdef int ring_burst(self, uint32_t *bufs, int room) noexcept nogil:
        return 0

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        cdef int n, i
        if not self.ring_ready():
            return 0
        n = self.ring_burst(bufs, room)
        for i in range(n):
            self.pool.rx_if[bufs[i]] = self.sw_if_index
            self.pool.next[bufs[i]] = 1
        self.rx_packets += n
        return n

    def stats(self):
        """rx_drops: frames the peer sent that did not enter the graph."""
        s = _interface_stats(self, "rx", self.rx_packets, self.rx_bytes, self._since)
        if self.control is not None:
            s.update(self.control.stats())
        return s

    def clear_stats(self):
        self.rx_packets = self.rx_bytes = 0
        if self.graph is not None:
            self._since = _counts_now(self)


cdef class RingOutput(Node):
    """Pool buffers -> the peer's receive ring (sink node)."""
    sink = True
    not_drops = ()

    def __init__(self, name, int sw_if_index):
        super().__init__(name)
        self.sw_if_index = sw_if_index
        self._since = [0] * len(type(self).errors)

    def _attach(self, graph, int index, uint16_t err_base, error_counts):
        Node._attach(self, graph, index, err_base, error_counts)
        self._since = _counts_now(self)

    def share_ring(self, RingOutput first not None):
        """Another worker transmits on first's ring too: both take one spinlock around
        a burst (one producer at a time, as the ring requires)."""
        if first._lock_cell is None:
            first._lock_cell = np.zeros(1, dtype=np.int32)
            first.tx_lock = <int *> <size_t> first._lock_cell.ctypes.data
        self._lock_cell = first._lock_cell
        self.tx_lock = first.tx_lock

    cdef int ring_burst(self, uint32_t *bufs, int n) noexcept nogil:
        return 0

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        if self.tx_lock != NULL:
            fp_spin_lock(self.tx_lock)
        self.tx_packets += self.ring_burst(bufs, n)
        if self.tx_lock != NULL:
            fp_spin_unlock(self.tx_lock)
        self.pool.free(bufs, n)
        return 0

    def stats(self):
        """tx_drops: frames for the peer it did not get (no room, not connected, bad slots)."""
        return _interface_stats(self, "tx", self.tx_packets, self.tx_bytes, self._since)

    def clear_stats(self):
        self.tx_packets = self.tx_bytes = 0
        if self.graph is not None:
            self._since = _counts_now(self)
