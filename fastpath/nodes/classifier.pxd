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
    # a slot's words
    SLOT_RULE = 0                # the rule id (low half; -1: empty) and its priority (high half)
    SLOT_PAYLOAD = 1             # the rule's payload (the owner's: FlowTable keeps its program)
    SLOT_PACKETS = 2             # what the rule has hit since it took the slot (when one
                                 # worker counts there: flow.pyx count_in_slot)
    SLOT_BYTES = 3
    SLOT_KEY = 4                 # the masked key words

ctypedef struct subtable_t:
    uint64_t mask[KEY_WORDS]
    int32_t words[KEY_WORDS]     # the words the mask touches (the others are not hashed)
    int32_t n_words
    int32_t max_priority         # the best any rule here can offer (the early exit)
    uint32_t cap                 # slots, a power of two
    uint32_t used
    int32_t stride               # words per slot: SLOT_KEY + n_words, padded to 8 or 16
    # cap slots of `stride` words (SLOT_*), so that a hit reads one place: the rule, its
    # payload, its counters and the key. A slot of 8 words on a 64-byte boundary is one
    # cache line, which the counting then finds in cache.
    uint64_t *slots
    # a one-bit-per-hash filter (4 bits per slot, the hash's high half): a key whose bit is
    # clear is not here, decided from a few hundred bytes that stay in cache instead of a
    # probe of the slots. Deletes leave bits set (false positives only) until a rebuild.
    uint64_t *filter
    uint32_t filter_mask         # bits - 1
    uint32_t stale               # deletes since the filter was last rebuilt


ctypedef struct cls_t:             # what the packet side reads of a Classifier
    subtable_t *subs
    int32_t *order               # subtable indices, highest max_priority first
    int32_t n_live               # how many of them hold rules (the rest are not probed)


cdef extern from *:
    void __builtin_prefetch(const void *addr) nogil


# ---- the packet side: inline, so that flow-classify's loops compile them in place

cdef inline uint64_t mix(uint64_t h, uint64_t w) noexcept nogil:
    h ^= w
    h *= 0xff51afd7ed558ccdULL
    return h ^ (h >> 29)


cdef inline uint64_t hash_key(const subtable_t *s, const uint64_t *key) noexcept nogil:
    """The hash of key under s's mask (key: full KEY_WORDS words)."""
    cdef uint64_t h = 0x9e3779b97f4a7c15ULL
    cdef int32_t j, w
    for j in range(s.n_words):
        w = s.words[j]
        h = mix(h, key[w] & s.mask[w])
    return h


cdef inline uint64_t *slot_at(const subtable_t *s, uint32_t i) noexcept nogil:
    return s.slots + <uint64_t> i * s.stride


cdef inline int32_t slot_rule(const uint64_t *e) noexcept nogil:
    return <int32_t> <uint32_t> (e[0] & 0xffffffffULL)


cdef inline int32_t slot_priority(const uint64_t *e) noexcept nogil:
    return <int32_t> <uint32_t> (e[0] >> 32)


cdef inline long find_slot(const subtable_t *s, const uint64_t *key, uint64_t h) noexcept nogil:
    """The slot holding key's masked value, or -(first empty slot) - 1."""
    cdef uint32_t m = s.cap - 1, i = <uint32_t> h & m
    cdef int32_t j, w
    cdef const uint64_t *e = slot_at(s, i)
    while slot_rule(e) >= 0:
        for j in range(s.n_words):
            w = s.words[j]
            if e[SLOT_KEY + j] != (key[w] & s.mask[w]):
                break
        else:
            return i
        i = (i + 1) & m
        e = slot_at(s, i)
    return -(<long> i) - 1


cdef inline bint filter_has(const subtable_t *s, uint64_t h) noexcept nogil:
    cdef uint32_t bit = <uint32_t> (h >> 32) & s.filter_mask
    return (s.filter[bit >> 6] >> (bit & 63)) & 1


cdef inline uint64_t *cls_find(const cls_t *c, const uint64_t *key) noexcept nogil:
    """The slot of the best rule for key (SLOT_*), or NULL."""
    cdef int32_t best_prio = -1, k
    cdef const subtable_t *s
    cdef uint64_t *e
    cdef uint64_t *best = NULL
    cdef long i
    cdef uint64_t h
    for k in range(c.n_live):
        s = &c.subs[c.order[k]]
        if s.max_priority <= best_prio:
            break          # ordered by max_priority: nothing further can win
        h = hash_key(s, key)
        # the filter spares a probe of the slots; in a big subtable those were
        # prefetched (cls_prefetch) while its filter word was not: probe them directly
        if s.used < PREFETCH_MIN and not filter_has(s, h):
            continue
        i = find_slot(s, key, h)
        if i >= 0:
            e = slot_at(s, i)
            if slot_priority(e) > best_prio:
                best = e
                best_prio = slot_priority(e)
    return best


cdef inline int32_t cls_lookup(const cls_t *c, const uint64_t *key) noexcept nogil:
    """The id of the best rule for key, or -1."""
    cdef const uint64_t *e = cls_find(c, key)
    return slot_rule(e) if e != NULL else -1


cdef inline void cls_prefetch(const cls_t *c, const uint64_t *key) noexcept nogil:
    """Start loading the slots cls_lookup(key) will probe first in the big subtables, so
    that a caller working ahead over a vector overlaps those cache misses."""
    cdef int32_t k
    cdef const subtable_t *s
    for k in range(c.n_live):
        s = &c.subs[c.order[k]]
        if s.used >= PREFETCH_MIN:
            __builtin_prefetch(slot_at(s, <uint32_t> hash_key(s, key) & (s.cap - 1)))


cdef class Classifier:
    cdef cls_t c
    cdef int32_t n_subs, cap_subs
    cdef object _groups           # (subtable, masked key) -> [(-priority, seq, rule)] (control side)
    cdef object _rules            # rule -> (subtable, masked key, priority, seq)
    cdef object _sub_by_mask      # mask tuple -> subtable index
    cdef object _sub_prios        # subtable -> {priority: count}
    cdef object _payloads         # rule -> its payload
    cdef object _folded           # rule -> [packets, bytes] counted in slots it has left
    cdef uint64_t _seq

    cdef int _subtable(self, tuple mask) except -1
    cdef void _set_head(self, int idx, tuple key, object group) except *
    cdef void _fold(self, int32_t rule, uint64_t *e) except *
