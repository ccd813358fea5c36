# cython: boundscheck=False, wraparound=False, cdivision=True
"""Meters (OpenFlow 1.3 5.7): what flow-classify reads of a MeterTable (meter.pyx).

A meter is a token bucket per band, shared by every worker (a spin lock guards the
buckets, held for a few dozen instructions; counters are per worker). Each band's bucket
fills at its rate -- bits a second for a KBPS meter, packets a second for PKTPS -- up to its
burst size (or one second's worth without OFPMF_BURST). A frame costs its bits or one
packet; every band with enough tokens pays, and of the bands without, the one with the
highest rate applies: DROP drops the frame, DSCP_REMARK raises its drop precedence.
"""
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t

cdef enum:
    MAX_METERS = 4096                   # slots; meter ids map to slots in MeterTable
    MAX_BANDS = 8
    MB_DROP = 1
    MB_DSCP_REMARK = 2
    MF_KBPS = 1
    MF_PKTPS = 2
    MF_BURST = 4
    MF_STATS = 8
    M_COUNTS = 2 + 2 * MAX_BANDS        # per worker: packets and bytes in, then per band

ctypedef struct band_t:
    uint32_t type                       # MB_*
    uint32_t prec_level                 # DSCP_REMARK: drop precedence levels to add
    double rate                         # tokens a nanosecond
    double capacity                     # the bucket's size, in tokens
    double tokens

ctypedef struct meter_t:
    uint32_t flags
    int32_t n_bands                     # 0: a free slot
    uint64_t last_ns                    # when the buckets were last filled
    int lock
    band_t bands[MAX_BANDS]
    uint64_t *counts                    # [worker * M_COUNTS + {0 packets, 1 bytes, 2 + 2k band k ...}]

cdef extern from *:
    """
    static inline void fp_meter_lock(int *l)
    { while (__atomic_exchange_n(l, 1, __ATOMIC_ACQUIRE)) __builtin_ia32_pause(); }
    static inline void fp_meter_unlock(int *l) { __atomic_store_n(l, 0, __ATOMIC_RELEASE); }
    """
    void fp_meter_lock(int *l) nogil
    void fp_meter_unlock(int *l) nogil


cdef inline int meter_apply(meter_t *m, uint32_t length, int row, uint64_t now) noexcept nogil:
    """Meter one frame of `length` bytes at time `now` (ns). Returns -1: no band applies
    (the frame passes as it is); otherwise the index of the band that applies."""
    cdef double cost = 1.0 if m.flags & MF_PKTPS else 8.0 * length
    cdef double elapsed, best_rate = -1.0
    cdef int k, best = -1
    cdef band_t *band
    cdef uint64_t *counts = m.counts + row * M_COUNTS
    fp_meter_lock(&m.lock)
    elapsed = <double> (now - m.last_ns) if now > m.last_ns else 0.0
    m.last_ns = now if now > m.last_ns else m.last_ns
    for k in range(m.n_bands):
        band = &m.bands[k]
        band.tokens += band.rate * elapsed
        if band.tokens > band.capacity:
            band.tokens = band.capacity
        if band.tokens >= cost:
            band.tokens -= cost
        elif band.rate > best_rate:
            best_rate = band.rate
            best = k
    fp_meter_unlock(&m.lock)
    counts[0] += 1
    counts[1] += length
    if best >= 0:
        counts[2 + 2 * best] += 1
        counts[3 + 2 * best] += length
    return best


cdef class MeterTable:
    cdef meter_t *meters                # [MAX_METERS], by slot
    cdef readonly int workers
    cdef object _by_id                  # meter id -> Meter
    cdef object _free_slots
