from libc.stdint cimport uint16_t, uint32_t, uint64_t
from fastpath.graph.buffer cimport BufferPool

cdef enum:
    MAX_ARCS = 1024
    ARC_DROP = 0           # arc 0 of every node leads to error-drop

cdef class Node:
    cdef public str name
    cdef readonly int index              # position in the graph
    cdef public object graph
    cdef public BufferPool pool
    cdef uint16_t arcs[MAX_ARCS]         # node-local arc -> graph node index
    cdef readonly int n_arcs
    cdef public list next_names          # arc index -> target node name
    cdef readonly bint is_input          # polled each loop
    cdef readonly bint is_sink           # consumes its buffers (tx, drop): nothing is enqueued after it
    cdef readonly bint is_python         # process()/poll() written in Python
    cdef readonly uint16_t err_base      # first global error code of this node's reasons
    cdef public uint64_t calls, vectors, packets, ns
    cdef object _capture                 # a PcapWriter, or None (the `capture` property)
    cdef readonly bint has_capture       # _capture is set: the dispatcher takes the slow path
    cdef public int trace_budget         # input nodes: how many more frames to trace
    cdef uint64_t *error_counts          # error-drop's counters, for frames that never existed
    cdef uint32_t *extra                 # buffers a node creates (replicas), enqueued after it
    cdef int n_extra
    cdef object _extra

    cdef inline void emit(self, uint32_t b) noexcept nogil:
        """Hand on a buffer that was not in the input vector (a replica); set pool.next first."""
        self.extra[self.n_extra] = b
        self.n_extra += 1

    cdef inline void count_error(self, int reason) noexcept nogil:
        """Count a drop of a frame that has no buffer (e.g. a replica the pool could not give)."""
        self.error_counts[self.err_base + reason] += 1

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil
    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil
