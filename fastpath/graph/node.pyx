"""Node: the unit of packet work.

A node takes a vector (up to VECTOR_SIZE buffer indices) and, for each buffer, writes
into pool.next[b] the index of the arc the frame leaves by. Arc 0 is always error-drop;
a node that drops a frame sets pool.error[b] = err_base + its reason and next = ARC_DROP.

Two ways to write one, with the same interface:
- Cython: subclass Node as a cdef class and implement process_c (a nogil loop);
- Python: subclass Node in Python and implement process(self, vector), where vector is a
  numpy uint32 array of buffer indices; set next with `self.pool.meta("next")[vector] = arc`.
Input nodes implement poll_c (Cython) or poll(self, room) -> numpy array (Python) and
also set next for each buffer they return.

Class attributes a node declares:
    next_nodes = ("l2-learn", ...)      # named arcs, numbered from 1 (0 is error-drop)
    errors = (("reason", "human text"), ...)
"""
import numpy as np
from libc.stdint cimport uint16_t, uint32_t, uint64_t

cdef class Node:
    next_nodes = ()
    errors = ()
    input = False
    sink = False

    def __init__(self, name=None):
        cls = type(self)
        self.name = name or getattr(cls, "node_name", cls.__name__)
        self.index = -1
        self.next_names = ["error-drop"] + list(cls.next_nodes)
        self.is_input = bool(cls.input)
        self.is_sink = bool(cls.sink)
        self.is_python = (cls.process is not Node.process) or (cls.poll is not Node.poll)
        self._capture = None
        self.has_capture = False
        self.trace_budget = 0
        self.n_arcs = 0

    def _attach(self, graph, int index, uint16_t err_base, error_counts):
        self.graph = graph
        self.pool = graph.pool
        self.index = index
        self.err_base = err_base
        self.error_counts = <uint64_t *> <size_t> error_counts.ctypes.data
        # every buffer can be in here at most once, so this never overflows
        self._extra = np.zeros(self.pool.n_buffers, dtype=np.uint32)
        self.extra = <uint32_t *> <size_t> self._extra.ctypes.data
        self.n_extra = 0

    def _set_arc(self, int arc, int target):
        if arc >= MAX_ARCS:
            raise ValueError(f"{self.name}: too many next arcs")
        self.arcs[arc] = target
        if arc >= self.n_arcs:
            self.n_arcs = arc + 1

    @property
    def capture(self):
        """A PcapWriter that gets every frame this node handles (inputs: what they
        received; sinks: what they send), or None."""
        return self._capture

    @capture.setter
    def capture(self, writer):
        self._capture = writer
        self.has_capture = writer is not None

    def arc(self, name):
        """The local arc index leading to node `name`, added if new."""
        try:
            return self.next_names.index(name)
        except ValueError:
            self.next_names.append(name)
            if self.graph is not None:
                self.graph._wire(self)
            return len(self.next_names) - 1

    def error_code(self, reason):
        names = [r for r, _ in type(self).errors]
        return self.err_base + names.index(reason)

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        return 0

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        return 0

    def process(self, vector):
        """Run this node over a vector of buffer indices (numpy uint32)."""
        cdef uint32_t[::1] v = np.ascontiguousarray(vector, dtype=np.uint32)
        if v.shape[0]:
            self.process_c(&v[0], v.shape[0])

    def poll(self, int room):
        out = np.zeros(room, dtype=np.uint32)
        cdef uint32_t[::1] o = out
        n = self.poll_c(&o[0], room) if room > 0 else 0
        return out[:n]

    def format_trace(self, uint32_t b):
        """One line describing what this node did to traced buffer b."""
        a = self.pool.next[b] if not self.is_sink else -1
        return f"next {self.next_names[a]}" if 0 <= a < len(self.next_names) else ""

    def counters(self):
        return {"calls": self.calls, "vectors": self.vectors, "packets": self.packets, "ns": self.ns}

    def clear_counters(self):
        self.calls = self.vectors = self.packets = self.ns = 0

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"
