"""Tuple space search: one hash table per distinct mask, probed in priority order.

The key is KEY_WORDS 64-bit words (flow.pyx's flow_key layout); a rule is a (value, mask)
pair over those words and a priority. Rules with the same mask share a subtable: a hash
table from masked key to the best rule with that masked value. A lookup probes subtables
from the highest priority they hold down and stops as soon as no remaining subtable can
beat the best hit so far, so the cost is the number of distinct masks, not of rules.
"""
from libc.stdint cimport uint64_t, int32_t, uint32_t, uintptr_t

cdef extern from "<sys/mman.h>" nogil:
    int madvise(void *addr, size_t length, int advice)
    int MADV_HUGEPAGE


cdef inline void hugepage_hint(void *p, size_t n) noexcept nogil:
    """Ask for 2 MB pages under the whole 2 MB pages of [p, p + n), before it is first
    written. A lookup in a table of 100 000 rules lands on a random 4 KB page of several
    MB: each one a TLB miss, and a slow page walk in a VM. (A hint: where transparent huge
    pages are off it does nothing.)"""
    cdef uintptr_t lo = (<uintptr_t> p + 0x1fffff) & ~(<uintptr_t> 0x1fffff)
    cdef uintptr_t hi = (<uintptr_t> p + n) & ~(<uintptr_t> 0x1fffff)
    if p != NULL and hi > lo:
        madvise(<void *> lo, hi - lo, MADV_HUGEPAGE)

cdef enum:
    KEY_WORDS = 10
    PREFETCH_MIN = 2048          # subtables this big are prefetched (smaller ones stay in cache)

ctypedef struct subtable_t:
    uint64_t mask[KEY_WORDS]
    int32_t words[KEY_WORDS]     # the words the mask touches (the others are not hashed)
    int32_t n_words
    int32_t max_priority         # the best any rule here can offer (the early exit)
    uint32_t cap                 # slots, a power of two
    uint32_t used
    int32_t stride               # words per slot: 1 + n_words
    # cap slots of `stride` words, so that a probe reads one place: word 0 holds the rule
    # id (low half; -1: empty) and its priority (high half), then the masked key words
    uint64_t *slots
    # a one-bit-per-hash filter (4 bits per slot, the hash's high half): a key whose bit is
    # clear is not here, decided from a few hundred bytes that stay in cache instead of a
    # probe of the slots. Deletes leave bits set (false positives only) until a rebuild.
    uint64_t *filter
    uint32_t filter_mask         # bits - 1
    uint32_t stale               # deletes since the filter was last rebuilt


cdef class Classifier:
    cdef subtable_t *subs
    cdef int32_t n_subs, cap_subs, n_live
    cdef int32_t *order           # subtable indices, highest max_priority first
    cdef object _groups           # (subtable, masked key) -> [(-priority, seq, rule)] (control side)
    cdef object _rules            # rule -> (subtable, masked key, priority, seq)
    cdef object _sub_by_mask      # mask tuple -> subtable index
    cdef object _sub_prios        # subtable -> {priority: count}
    cdef uint64_t _seq

    cdef int32_t lookup(self, const uint64_t *key) noexcept nogil
    cdef void prefetch(self, const uint64_t *key) noexcept nogil
    cdef int _subtable(self, tuple mask) except -1
    cdef void _set_head(self, int idx, tuple key, object group) except *
