"""BufferPool: one preallocated arena of packet buffers with struct-of-arrays metadata.

Every frame in fastpath lives in a buffer of this pool from the moment an input node
receives it until an output node transmits it or error-drop frees it. Buffers are
referred to by index; vectors are arrays of indices. Each buffer has BUF_HEADROOM
bytes before the frame so pushing tags or tunnel headers moves `offset` back instead
of copying the frame. Running out of buffers is not an error the caller can ignore:
alloc() returns fewer than asked and `alloc_failures` counts the shortfall.
"""
import numpy as np
from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t


cdef class BufferPool:
    def __cinit__(self, uint32_t n_buffers=16384):
        if n_buffers == 0 or n_buffers > 0x7fffffff // BUF_SIZE:
            raise ValueError(f"bad pool size {n_buffers}")
        self.n_buffers = n_buffers
        self.data_array = np.zeros(<size_t>n_buffers * BUF_SIZE, dtype=np.uint8)
        cdef uint8_t[::1] d = self.data_array
        self.data = &d[0]
        m = {}
        for name, dt in (("offset", np.uint16), ("length", np.uint16), ("rx_if", np.uint16),
                         ("tx_if", np.uint16), ("bd", np.uint16), ("vlan", np.uint16),
                         ("pcp", np.uint8), ("flags", np.uint32), ("trace", np.uint32),
                         ("next", np.uint16), ("error", np.uint16), ("aux", np.uint32),
                         ("free_stack", np.uint32)):
            m[name] = np.zeros(n_buffers, dtype=dt)
        self._meta = m
        self.offset = <uint16_t *> <size_t> m["offset"].ctypes.data
        self.length = <uint16_t *> <size_t> m["length"].ctypes.data
        self.rx_if = <uint16_t *> <size_t> m["rx_if"].ctypes.data
        self.tx_if = <uint16_t *> <size_t> m["tx_if"].ctypes.data
        self.bd = <uint16_t *> <size_t> m["bd"].ctypes.data
        self.vlan = <uint16_t *> <size_t> m["vlan"].ctypes.data
        self.pcp = <uint8_t *> <size_t> m["pcp"].ctypes.data
        self.flags = <uint32_t *> <size_t> m["flags"].ctypes.data
        self.trace = <uint32_t *> <size_t> m["trace"].ctypes.data
        self.next = <uint16_t *> <size_t> m["next"].ctypes.data
        self.error = <uint16_t *> <size_t> m["error"].ctypes.data
        self.aux = <uint32_t *> <size_t> m["aux"].ctypes.data
        self.free_stack = <uint32_t *> <size_t> m["free_stack"].ctypes.data
        cdef uint32_t i
        # lowest indices on top of the stack: a small working set stays in cache
        for i in range(n_buffers):
            self.free_stack[i] = n_buffers - 1 - i
        self.n_free = n_buffers
        self.alloc_failures = 0

    cdef int alloc(self, uint32_t *out, int n) noexcept nogil:
        """Take up to n buffers, reset their metadata; returns how many were taken."""
        cdef int i, got = n
        cdef uint32_t b
        if <uint32_t> got > self.n_free:
            self.alloc_failures += <uint32_t> got - self.n_free
            got = self.n_free
        for i in range(got):
            self.n_free -= 1
            b = self.free_stack[self.n_free]
            out[i] = b
            self.offset[b] = BUF_HEADROOM
            self.length[b] = 0
            self.vlan[b] = NO_VLAN
            self.pcp[b] = 0
            self.flags[b] = 0
            self.trace[b] = 0
            self.error[b] = 0
            self.bd[b] = 0
            self.aux[b] = 0
        return got

    cdef void free(self, const uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        for i in range(n):
            self.free_stack[self.n_free] = bufs[i]
            self.n_free += 1

    cdef int clone(self, uint32_t b) noexcept nogil:
        """A full copy of buffer b (frame and metadata); -1 when the pool is empty."""
        cdef uint32_t c
        if self.alloc(&c, 1) != 1:
            return -1
        self.offset[c] = self.offset[b]
        self.length[c] = self.length[b]
        memcpy(self.frame(c), self.frame(b), self.length[b])
        self.rx_if[c] = self.rx_if[b]
        self.tx_if[c] = self.tx_if[b]
        self.bd[c] = self.bd[b]
        self.vlan[c] = self.vlan[b]
        self.pcp[c] = self.pcp[b]
        self.flags[c] = self.flags[b]
        self.trace[c] = self.trace[b]
        self.aux[c] = self.aux[b]
        return c

    # ---- Python side: tests, Python nodes, slow paths ----

    @property
    def in_flight(self):
        return self.n_buffers - self.n_free

    def check_accounting(self, expected_in_flight=None):
        """free + in flight == total, no index twice on the free list; raises AssertionError."""
        free = np.asarray(self._meta["free_stack"][:self.n_free])
        if len(np.unique(free)) != self.n_free:
            raise AssertionError("a buffer is on the free list twice")
        if free.size and int(free.max()) >= self.n_buffers:
            raise AssertionError("free list holds an index outside the pool")
        if expected_in_flight is not None and self.in_flight != expected_in_flight:
            raise AssertionError(f"{self.in_flight} buffers in flight, expected {expected_in_flight}")
        return True

    def meta(self, name):
        """The numpy array of one metadata field (a view: writes go to the pool)."""
        if name == "free_stack":
            raise KeyError(name)
        return self._meta[name]

    def alloc_py(self, int n):
        out = np.zeros(n, dtype=np.uint32)
        cdef uint32_t[::1] o = out
        got = self.alloc(&o[0], n) if n > 0 else 0
        return out[:got]

    def free_py(self, bufs):
        cdef uint32_t[::1] b = np.ascontiguousarray(bufs, dtype=np.uint32)
        if b.shape[0]:
            self.free(&b[0], b.shape[0])

    def get_frame(self, uint32_t b):
        if b >= self.n_buffers:
            raise IndexError(b)
        cdef size_t start = <size_t>b * BUF_SIZE + self.offset[b]
        return bytes(self.data_array[start:start + self.length[b]])

    def set_frame(self, uint32_t b, frame):
        cdef Py_ssize_t n = len(frame)
        if b >= self.n_buffers:
            raise IndexError(b)
        if n > BUF_DATA:
            raise ValueError(f"frame of {n} bytes is larger than a buffer ({BUF_DATA})")
        self.offset[b] = BUF_HEADROOM
        self.length[b] = n
        cdef size_t start = <size_t>b * BUF_SIZE + BUF_HEADROOM
        self.data_array[start:start + n] = np.frombuffer(bytes(frame), dtype=np.uint8)

    def frame_view(self, uint32_t b):
        """A writable numpy view of buffer b's frame bytes."""
        cdef size_t start = <size_t>b * BUF_SIZE + self.offset[b]
        return self.data_array[start:start + self.length[b]]
