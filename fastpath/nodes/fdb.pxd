# cython: language_level=3
"""C-level interface of the MAC learning table (see fdb.pyx).

Packet nodes cimport this file and call ``Fdb.lookup`` / ``Fdb.learn`` from
``nogil`` loops.  Keys are built with ``fdb_key``.
"""

cimport cython
from fastpath.graph.spinlock cimport fp_spin_lock, fp_spin_unlock
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t


# Result of Fdb.learn().  cpdef so Python sees it as the IntEnum
# ``fastpath.nodes.fdb.FdbResult`` too.
cpdef enum FdbResult:
    FDB_REFRESHED = 0   # known (VLAN, MAC) on the same port
    FDB_LEARNED = 1     # new entry inserted
    FDB_MOVED = 2       # known (VLAN, MAC), port changed
    FDB_EVICTED = 3     # new entry inserted after evicting the oldest dynamic one
    FDB_STATIC = 4      # static entry exists: nothing changed
    FDB_FULL = 5        # table full of static entries: not inserted


cdef extern from *:
    """
    #define FDB_NIL ((uint32_t)0xFFFFFFFFu)
    """
    const uint32_t FDB_NIL  # "no entry" in LRU links and the free list


cdef extern from *:
    void __builtin_prefetch(const void *addr) nogil


# Workers share one Fdb per bridge: writers (learning something new, moves, refreshes of
# the LRU position, aging, control) serialize on a spinlock and bump a sequence count
# around their change; lookups take no lock and retry if the count moved (a seqlock, as
# in VPP's bihash readers). The slab and slot arrays are only reallocated under the
# worker barrier (set_max_entries), so a reader never touches freed memory.
cdef extern from *:
    """
    static inline unsigned fdb_seq_begin(unsigned *s) {
        unsigned v;
        while ((v = __atomic_load_n(s, __ATOMIC_ACQUIRE)) & 1) __builtin_ia32_pause();
        return v;
    }
    static inline int fdb_seq_retry(unsigned *s, unsigned v) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        return __atomic_load_n(s, __ATOMIC_RELAXED) != v;
    }
    static inline void fdb_seq_bump(unsigned *s) { __atomic_fetch_add(s, 1, __ATOMIC_SEQ_CST); }
    """
    unsigned fdb_seq_begin(unsigned *s) nogil
    bint fdb_seq_retry(unsigned *s, unsigned v) nogil
    void fdb_seq_bump(unsigned *s) nogil


cdef inline uint32_t fdb_hash(uint64_t key) noexcept nogil:
    # splitmix64 finalizer: every key bit affects the low bits we index with.
    key ^= key >> 30
    key *= 0xBF58476D1CE4E5B9ULL
    key ^= key >> 27
    key *= 0x94D049BB133111EBULL
    key ^= key >> 31
    return <uint32_t>key


ctypedef struct fdb_entry_t:
    uint64_t key            # fdb_key(mac, vlan)
    double last_seen        # caller's clock, seconds
    uint32_t prev           # LRU / static list links (entry ids or FDB_NIL)
    uint32_t next
    uint32_t hash           # cached mix(key); backward-shift and resize use it
    uint16_t port
    uint8_t is_static


cdef inline uint64_t fdb_key(const uint8_t *mac, uint16_t vlan) noexcept nogil:
    """(VLAN, MAC) -> uint64: MAC as a big-endian 48-bit value, VLAN above it."""
    return ((<uint64_t>(vlan & 0xFFF) << 48)
            | (<uint64_t>mac[0] << 40) | (<uint64_t>mac[1] << 32)
            | (<uint64_t>mac[2] << 24) | (<uint64_t>mac[3] << 16)
            | (<uint64_t>mac[4] << 8) | <uint64_t>mac[5])


@cython.final
cdef class Fdb:
    cdef fdb_entry_t *slab      # slab of max_entries entries, allocated once
    cdef uint32_t *slots        # open-addressing table: entry id + 1, 0 = empty
    cdef uint32_t mask          # table size - 1 (table size is a power of two)
    cdef uint32_t free_head     # free entry ids, chained through .next
    cdef uint32_t lru_head      # oldest dynamic entry
    cdef uint32_t lru_tail      # newest dynamic entry
    cdef uint32_t static_head   # static entries live on their own list
    cdef uint32_t static_tail
    cdef uint32_t n_static
    cdef int wlock_              # writers' spinlock
    cdef unsigned seq_           # odd while a writer is changing the table

    cdef readonly uint32_t max_entries
    cdef public double aging_time

    cdef readonly uint64_t n_entries
    cdef readonly uint64_t learned
    cdef readonly uint64_t moved
    cdef readonly uint64_t evicted
    cdef readonly uint64_t aged
    cdef readonly uint64_t static_refused

    # Packet path: no Python objects, no allocation, no clock reads.
    cdef int lookup(self, uint64_t key) noexcept nogil

    cdef inline void prefetch_slot(self, uint64_t key) noexcept nogil:
        """Start loading key's home slot: nodes call this a pass ahead of lookup/learn."""
        __builtin_prefetch(&self.slots[fdb_hash(key) & self.mask])

    cdef inline void prefetch_entry(self, uint64_t key) noexcept nogil:
        """Start loading the entry in key's home slot (after prefetch_slot has landed)."""
        cdef uint32_t s = self.slots[fdb_hash(key) & self.mask]
        if s:
            __builtin_prefetch(&self.slab[s - 1])
    cdef int learn(self, uint64_t key, uint16_t port, double now) noexcept nogil

    cdef inline void wlock(self) noexcept nogil:
        fp_spin_lock(&self.wlock_)
        fdb_seq_bump(&self.seq_)

    cdef inline void wunlock(self) noexcept nogil:
        fdb_seq_bump(&self.seq_)
        fp_spin_unlock(&self.wlock_)

    # Internals.
    cdef int _lookup(self, uint64_t key) noexcept nogil
    cdef int _learn(self, uint64_t key, uint16_t port, double now) noexcept nogil
    cdef uint32_t _find(self, uint64_t key, uint32_t h, uint32_t *slot) noexcept nogil
    cdef uint32_t _insert(self, uint64_t key, uint32_t h, uint16_t port,
                          uint8_t is_static, double now, uint32_t slot) noexcept nogil
    cdef void _delete(self, uint32_t eid) noexcept nogil
    cdef void _evict_oldest(self) noexcept nogil
    cdef void _unlink(self, uint32_t eid) noexcept nogil
    cdef void _append(self, uint32_t eid) noexcept nogil
    cdef int _resize(self, uint32_t n) except -1
    cdef list _rows(self, double now)
