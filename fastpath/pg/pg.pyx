"""PgInput / PgOutput: interfaces that live in memory.

PgInput injects frames given from Python (or read from a pcap file) into the graph,
as a real interface's input node would; PgOutput collects what the graph sends to an
interface. They let every node be tested and benchmarked without root, and are what
`fastpath replay` runs a capture through.
"""
import numpy as np
from libc.string cimport memcpy
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.buffer cimport BufferPool, BUF_DATA, BIG_DATA
from fastpath.graph.node cimport Node, ARC_DROP

cdef enum:
    ERR_TOO_BIG = 0
    ERR_NO_BUFFER = 1


cdef class PgInput(Node):
    """Frames are stored back to back in one arena; poll() copies the next ones into buffers
    (a big buffer for one longer than a small buffer; none left: a counted no_buffer drop).
    With loop=True the frames are replayed round-robin until `limit` frames were sent."""
    input = True
    errors = (("too_big", "frame larger than a buffer"), ("no_buffer", "buffer pool empty"))
    cdef public uint16_t sw_if_index
    cdef object _arena, _off, _len
    cdef uint8_t *arena
    cdef uint64_t *off
    cdef uint16_t *len_
    cdef readonly uint64_t n_frames, pos
    cdef public uint64_t limit            # frames still to send
    cdef public bint loop
    cdef public uint64_t rx_packets, rx_bytes, rx_drops

    def __init__(self, name, int sw_if_index=0, next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self.sw_if_index = sw_if_index
        self.load([])

    def load(self, frames, bint loop=False, limit=None):
        """Replace the frames to send; returns how many will be sent."""
        frames = [bytes(f) for f in frames]
        for f in frames:
            if len(f) > BIG_DATA:
                raise ValueError(f"frame of {len(f)} bytes is larger than a buffer ({BIG_DATA})")
        lens = np.array([len(f) for f in frames], dtype=np.uint16)
        offs = np.zeros(len(frames) + 1, dtype=np.uint64)
        if frames:
            offs[1:] = np.cumsum(lens, dtype=np.uint64)
        self._arena = np.frombuffer(b"".join(frames) + b"\0", dtype=np.uint8).copy()
        self._off = offs
        self._len = lens if frames else np.zeros(1, dtype=np.uint16)
        self.arena = <uint8_t *> <size_t> self._arena.ctypes.data
        self.off = <uint64_t *> <size_t> self._off.ctypes.data
        self.len_ = <uint16_t *> <size_t> self._len.ctypes.data
        self.n_frames = len(frames)
        self.pos = 0
        self.loop = loop
        self.limit = (limit if limit is not None else len(frames)) if (frames or not loop) else 0
        if not frames:
            self.limit = 0
        return self.limit

    def add(self, frames):
        """Queue more frames after those not yet sent."""
        rest = []
        if not self.loop:
            for k in range(self.limit):
                i = (self.pos + k) % self.n_frames
                rest.append(bytes(self._arena[self.off[i]:self.off[i] + self.len_[i]]))
        self.load(rest + [bytes(f) for f in frames])

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        cdef int want = room, got, i
        cdef uint32_t b, big
        cdef uint64_t f
        if self.limit < <uint64_t> want:
            want = <int> self.limit
        if want == 0:
            return 0
        got = self.pool.alloc(bufs, want)
        if got < want:
            self.rx_drops += want - got
        for i in range(got):
            b = bufs[i]
            f = self.pos
            self.pool.next[b] = 1
            if self.len_[f] > BUF_DATA:
                if self.pool.alloc_big(&big, 1) == 1:
                    self.pool.free(&b, 1)
                    b = bufs[i] = big
                    self.pool.next[b] = 1
                else:
                    self.pool.length[b] = 0
                    self.pool.error[b] = self.err_base + 1      # no_buffer
                    self.pool.next[b] = ARC_DROP
            if self.pool.next[b] == 1:
                memcpy(self.pool.frame(b), self.arena + self.off[f], self.len_[f])
                self.pool.length[b] = self.len_[f]
            self.pool.rx_if[b] = self.sw_if_index
            self.rx_bytes += self.len_[f]
            self.pos += 1
            if self.pos == self.n_frames:
                self.pos = 0
        self.rx_packets += got
        self.limit -= want
        return got

    def stats(self):
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes, "rx_drops": self.rx_drops}


cdef class PgOutput(Node):
    """Collects frames sent to an interface (keep=True) or only counts them (benchmarks)."""
    sink = True
    cdef public uint16_t sw_if_index
    cdef public bint keep
    cdef public list frames
    cdef list _meta
    cdef public uint64_t tx_packets, tx_bytes

    def __init__(self, name, int sw_if_index=0, bint keep=True):
        super().__init__(name)
        self.sw_if_index = sw_if_index
        self.keep = keep
        self.frames = []

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        for i in range(n):
            self.tx_bytes += self.pool.length[bufs[i]]
        self.tx_packets += n
        if self.keep:
            with gil:
                self._collect(bufs, n)
        self.pool.free(bufs, n)
        return 0

    cdef void _collect(self, uint32_t *bufs, int n):
        cdef int i
        cdef uint8_t *p
        for i in range(n):
            p = self.pool.frame(bufs[i])
            self.frames.append(p[:self.pool.length[bufs[i]]])

    def take(self):
        """The frames collected so far (bytes), emptying the collection."""
        out, self.frames = self.frames, []
        return out

    def stats(self):
        return {"tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes}

    def format_trace(self, uint32_t b):
        return f"collected by {self.name}"
