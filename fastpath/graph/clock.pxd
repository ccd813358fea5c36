"""CLOCK_MONOTONIC in nanoseconds for nogil code: node timing, meters, pacing."""
from libc.stdint cimport uint64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef inline uint64_t now_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t> ts.tv_sec * 1000000000ULL + <uint64_t> ts.tv_nsec
