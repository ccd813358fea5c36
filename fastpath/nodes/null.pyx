"""null: touches each frame's metadata and passes it on. The smallest useful Cython node:
the graph benchmark chains these to measure what the dispatcher costs per packet."""
from libc.stdint cimport uint32_t, uint64_t
from fastpath.graph.node cimport Node


cdef class Null(Node):
    cdef readonly uint64_t bytes_seen

    def __init__(self, name, next_node):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        for i in range(n):
            self.bytes_seen += self.pool.length[bufs[i]]
            self.pool.next[bufs[i]] = 1
        return 0
