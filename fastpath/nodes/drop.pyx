"""error-drop: frees frames and counts them by the error code their last node set.

Every node's arc 0 leads here. A node that drops a frame writes pool.error[b] (its
err_base + reason); this node is the one place those reasons are counted, which is what
`show errors` reads.
"""
from libc.stdint cimport uint32_t, uint64_t
from fastpath.graph.node cimport Node


cdef class ErrorDrop(Node):
    node_name = "error-drop"
    sink = True

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        for i in range(n):
            self.error_counts[self.pool.error[bufs[i]]] += 1
        self.pool.free(bufs, n)
        return 0

    def format_trace(self, uint32_t b):
        code = self.pool.error[b]
        names = self.graph.error_names
        return f"{names[code][0]}: {names[code][2]}" if code < len(names) else f"error {code}"
