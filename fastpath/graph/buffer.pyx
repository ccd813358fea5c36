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
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


cdef class BufferPool:
    def __cinit__(self, uint32_t n_buffers=16384, n_big=None):
        """n_buffers buffers of BUF_DATA bytes, and n_big (default n_buffers / 64, at least
        8) of BIG_DATA bytes for jumbo frames and GSO super-frames."""
        cdef uint32_t nb = max(8, n_buffers // 64) if n_big is None else n_big
        if n_buffers == 0 or n_buffers > 0x7fffffff // BUF_SIZE or nb > 0x7fffffff // BIG_SIZE:
            raise ValueError(f"bad pool size {n_buffers} (+{nb} big)")
        self.n_small = n_buffers
        self.n_big = nb
        self.n_buffers = n_buffers + nb
        self.data_array = np.zeros(<size_t>n_buffers * BUF_SIZE, dtype=np.uint8)
        # untouched pages cost nothing until a big frame lands in them
        self.big_array = np.zeros(max(1, <size_t>nb * BIG_SIZE), dtype=np.uint8)
        cdef uint8_t[::1] d = self.data_array
        cdef uint8_t[::1] g = self.big_array
        self.data = &d[0]
        self.big = &g[0]
        m = {}
        for name, dt in (("offset", np.uint16), ("length", np.uint16), ("rx_if", np.uint16),
                         ("tx_if", np.uint16), ("bd", np.uint16), ("vlan", np.uint16),
                         ("pcp", np.uint8), ("flags", np.uint32), ("trace", np.uint32),
                         ("next", np.uint16), ("error", np.uint16), ("aux", np.uint32),
                         ("ol_flags", np.uint8), ("l4_start", np.uint16),
                         ("csum_offset", np.uint16), ("gso_size", np.uint16),
                         ("free_stack", np.uint32), ("big_stack", np.uint32)):
            m[name] = np.zeros(self.n_buffers, dtype=dt)
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
        self.ol_flags = <uint8_t *> <size_t> m["ol_flags"].ctypes.data
        self.l4_start = <uint16_t *> <size_t> m["l4_start"].ctypes.data
        self.csum_offset = <uint16_t *> <size_t> m["csum_offset"].ctypes.data
        self.gso_size = <uint16_t *> <size_t> m["gso_size"].ctypes.data
        self.free_stack = <uint32_t *> <size_t> m["free_stack"].ctypes.data
        self.big_stack = <uint32_t *> <size_t> m["big_stack"].ctypes.data
        cdef uint32_t i
        # lowest indices on top of the stack: a small working set stays in cache
        for i in range(n_buffers):
            self.free_stack[i] = n_buffers - 1 - i
        for i in range(nb):
            self.big_stack[i] = self.n_buffers - 1 - i
        self.n_free = n_buffers
        self.n_big_free = nb
        self.alloc_failures = 0
        self.big_alloc_failures = 0

    cdef void reset(self, uint32_t b) noexcept nogil:
        self.offset[b] = BUF_HEADROOM
        self.length[b] = 0
        self.vlan[b] = NO_VLAN
        self.pcp[b] = 0
        self.flags[b] = 0
        self.trace[b] = 0
        self.error[b] = 0
        self.bd[b] = 0
        self.aux[b] = 0
        self.ol_flags[b] = 0

    cdef int take(self, uint32_t *stack, uint32_t *n_free, uint64_t *failures,
                  uint32_t *out, int n) noexcept nogil:
        """Pop up to n buffers off one class's free stack, reset their metadata."""
        cdef int i, got = n
        cdef uint32_t b
        if <uint32_t> got > n_free[0]:
            failures[0] += <uint32_t> got - n_free[0]
            got = n_free[0]
        for i in range(got):
            n_free[0] -= 1
            b = stack[n_free[0]]
            out[i] = b
            self.reset(b)
        return got

    cdef int alloc(self, uint32_t *out, int n) noexcept nogil:
        """Take up to n buffers, reset their metadata; returns how many were taken."""
        return self.take(self.free_stack, &self.n_free, &self.alloc_failures, out, n)

    cdef int alloc_big(self, uint32_t *out, int n) noexcept nogil:
        """alloc() from the big buffers."""
        return self.take(self.big_stack, &self.n_big_free, &self.big_alloc_failures, out, n)

    cdef void free(self, const uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b
        for i in range(n):
            b = bufs[i]
            if b < self.n_small:
                self.free_stack[self.n_free] = b
                self.n_free += 1
            else:
                self.big_stack[self.n_big_free] = b
                self.n_big_free += 1

    cdef int clone(self, uint32_t b) noexcept nogil:
        """A full copy of buffer b (frame and metadata), of b's class; -1 when none is left."""
        cdef uint32_t c
        if (self.alloc(&c, 1) if b < self.n_small else self.alloc_big(&c, 1)) != 1:
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
        self.ol_flags[c] = self.ol_flags[b]
        self.l4_start[c] = self.l4_start[b]
        self.csum_offset[c] = self.csum_offset[b]
        self.gso_size[c] = self.gso_size[b]
        return c

    # ---- Python side: tests, Python nodes, slow paths ----

    @property
    def in_flight(self):
        return self.n_buffers - self.n_free - self.n_big_free

    def check_accounting(self, expected_in_flight=None):
        """free + in flight == total, no index twice on the free lists, each list holding its
        own class only; raises AssertionError."""
        # one reading of each count (call it with the dataplane stopped: a running one
        # moves buffers while this looks)
        n_free, n_big_free = self.n_free, self.n_big_free
        free = np.array(self._meta["free_stack"][:n_free])
        big = np.array(self._meta["big_stack"][:n_big_free])
        if len(np.unique(free)) != n_free or len(np.unique(big)) != n_big_free:
            raise AssertionError("a buffer is on the free list twice")
        if (free.size and int(free.max()) >= self.n_small) or \
                (big.size and (int(big.min()) < self.n_small or int(big.max()) >= self.n_buffers)):
            raise AssertionError("a free list holds an index outside its class")
        if expected_in_flight is not None and self.in_flight != expected_in_flight:
            raise AssertionError(f"{self.in_flight} buffers in flight, expected {expected_in_flight}")
        return True

    def meta(self, name):
        """The numpy array of one metadata field (a view: writes go to the pool)."""
        if name in ("free_stack", "big_stack"):
            raise KeyError(name)
        return self._meta[name]

    def alloc_py(self, int n, bint big=False):
        out = np.zeros(n, dtype=np.uint32)
        cdef uint32_t[::1] o = out
        got = 0
        if n > 0:
            got = self.alloc_big(&o[0], n) if big else self.alloc(&o[0], n)
        return out[:got]

    def free_py(self, bufs):
        cdef uint32_t[::1] b = np.ascontiguousarray(bufs, dtype=np.uint32)
        if b.shape[0]:
            self.free(&b[0], b.shape[0])

    def is_big(self, uint32_t b):
        return b >= self.n_small

    def _view(self, uint32_t b, uint32_t start, uint32_t n):
        if b >= self.n_buffers:
            raise IndexError(b)
        if b < self.n_small:
            base = <size_t>b * BUF_SIZE
            return self.data_array[base + start:base + start + n]
        base = <size_t>(b - self.n_small) * BIG_SIZE
        return self.big_array[base + start:base + start + n]

    def get_frame(self, uint32_t b):
        return bytes(self._view(b, self.offset[b], self.length[b]))

    def set_frame(self, uint32_t b, frame):
        """Replace buffer b's frame (offload state cleared: the bytes are new)."""
        cdef Py_ssize_t n = len(frame)
        if b >= self.n_buffers:
            raise IndexError(b)
        cdef Py_ssize_t limit = BUF_DATA if b < self.n_small else BIG_DATA
        if n > limit:
            raise ValueError(f"frame of {n} bytes is larger than a buffer ({limit})")
        self.offset[b] = BUF_HEADROOM
        self.length[b] = n
        self.ol_flags[b] = 0
        self._view(b, BUF_HEADROOM, n)[:] = np.frombuffer(bytes(frame), dtype=np.uint8)

    def frame_view(self, uint32_t b):
        """A writable numpy view of buffer b's frame bytes."""
        return self._view(b, self.offset[b], self.length[b])
