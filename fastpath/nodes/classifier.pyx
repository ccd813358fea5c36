# cython: boundscheck=False, wraparound=False, cdivision=True
"""Tuple space search over flow keys: see classifier.pxd for the idea.

Control side (plain Python, under the workers' barrier): insert(rule, priority, value,
mask, payload) and remove(rule), where value and mask are KEY_WORDS-tuples of ints. Packet
side (inline, classifier.pxd): cls_find(&classifier.c, key) -> the best match's slot
(SLOT_*), or NULL, without the GIL. Within one masked value the highest priority wins,
then the earliest inserted (the order OVS keeps).
"""
from libc.stdint cimport uint64_t, int32_t, uint32_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy

cdef extern from "stdlib.h":
    int posix_memalign(void **memptr, size_t alignment, size_t size) nogil

DEF MIN_CAP = 8


cdef inline void slot_set(uint64_t *e, int32_t rule, int32_t priority) noexcept nogil:
    e[0] = (<uint64_t> <uint32_t> priority << 32) | <uint32_t> rule


cdef inline uint64_t hash_stored(const subtable_t *s, uint32_t slot) noexcept nogil:
    """The same hash, of a slot's stored (already masked, compact) words."""
    cdef uint64_t h = 0x9e3779b97f4a7c15ULL
    cdef const uint64_t *e = slot_at(s, slot)
    cdef int32_t j
    for j in range(s.n_words):
        h = mix(h, e[SLOT_KEY + j])
    return h


cdef inline void filter_add(subtable_t *s, uint64_t h) noexcept nogil:
    cdef uint32_t bit = <uint32_t> (h >> 32) & s.filter_mask
    s.filter[bit >> 6] |= 1ULL << (bit & 63)


cdef void filter_rebuild(subtable_t *s) noexcept nogil:
    cdef uint32_t i
    memset(s.filter, 0, ((s.filter_mask >> 6) + 1) * sizeof(uint64_t))
    for i in range(s.cap):
        if slot_rule(slot_at(s, i)) >= 0:
            filter_add(s, hash_stored(s, i))
    s.stale = 0


cdef int sub_alloc(subtable_t *s, uint32_t cap) noexcept nogil:
    cdef uint32_t bits = cap * 4 if cap * 4 >= 64 else 64
    cdef void *mem = NULL
    s.cap = cap
    s.used = 0
    s.stale = 0
    s.stride = 8 if SLOT_KEY + s.n_words <= 8 else 16
    if posix_memalign(&mem, 64, <size_t> cap * s.stride * sizeof(uint64_t)) != 0:
        mem = NULL
    s.slots = <uint64_t *> mem
    s.filter = <uint64_t *> calloc(bits >> 6, sizeof(uint64_t))
    s.filter_mask = bits - 1
    if s.slots == NULL or s.filter == NULL:
        return -1
    hugepage_hint(s.slots, <size_t> cap * s.stride * sizeof(uint64_t))
    memset(s.slots, 0xff, <size_t> cap * s.stride * sizeof(uint64_t))    # every rule -1
    return 0


cdef void sub_free(subtable_t *s) noexcept nogil:
    free(s.slots)
    free(s.filter)
    s.slots = NULL
    s.filter = NULL


cdef int sub_grow(subtable_t *s) noexcept nogil:
    """Double the slots and re-place every entry."""
    cdef subtable_t old = s[0]
    cdef uint32_t i, k, m
    if sub_alloc(s, old.cap * 2) < 0:
        sub_free(s)
        s[0] = old
        return -1
    m = s.cap - 1
    for i in range(old.cap):
        if slot_rule(slot_at(&old, i)) < 0:
            continue
        k = <uint32_t> hash_stored(&old, i) & m
        while slot_rule(slot_at(s, k)) >= 0:
            k = (k + 1) & m
        memcpy(slot_at(s, k), slot_at(&old, i), s.stride * sizeof(uint64_t))
        filter_add(s, hash_stored(&old, i))
        s.used += 1
    sub_free(&old)
    return 0


cdef void sub_delete(subtable_t *s, uint32_t i) noexcept nogil:
    """Empty slot i, shifting later entries of its probe run back (no tombstones)."""
    cdef uint32_t m = s.cap - 1, j = i, home
    while True:
        j = (j + 1) & m
        if slot_rule(slot_at(s, j)) < 0:
            break
        home = <uint32_t> hash_stored(s, j) & m
        # j may move to i only if its home is not cyclically within (i, j]
        if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
            continue
        memcpy(slot_at(s, i), slot_at(s, j), s.stride * sizeof(uint64_t))
        i = j
    slot_set(slot_at(s, i), -1, -1)
    s.used -= 1
    s.stale += 1
    if s.stale * 4 > s.used + 16:        # amortised: rebuilt after a quarter turned over
        filter_rebuild(s)


cdef class Classifier:
    def __cinit__(self):
        self.cap_subs = 16
        self.c.subs = <subtable_t *> calloc(self.cap_subs, sizeof(subtable_t))
        self.c.order = <int32_t *> calloc(self.cap_subs, sizeof(int32_t))
        self.n_subs = 0
        self.c.n_live = 0
        self._groups = {}
        self._rules = {}
        self._sub_by_mask = {}
        self._sub_prios = []
        self._payloads = {}
        self._folded = {}
        self._seq = 0
        if self.c.subs == NULL or self.c.order == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef int32_t i
        if self.c.subs != NULL:
            for i in range(self.cap_subs):
                sub_free(&self.c.subs[i])
        free(self.c.subs)
        free(self.c.order)

    def __len__(self):
        return len(self._rules)

    @property
    def n_subtables(self):
        """Subtables that hold rules (distinct masks in use)."""
        return sum(1 for p in self._sub_prios if p)

    def lookup_words(self, key):
        """cls_lookup() for tests and the control plane: key is KEY_WORDS ints."""
        cdef uint64_t k[KEY_WORDS]
        cdef int i
        for i in range(KEY_WORDS):
            k[i] = key[i]
        return cls_lookup(&self.c, k)

    def lookup_entry(self, key):
        """(rule, payload) of the best match for key (KEY_WORDS ints), or (-1, None)."""
        cdef uint64_t k[KEY_WORDS]
        cdef const uint64_t *e
        cdef int i
        for i in range(KEY_WORDS):
            k[i] = key[i]
        e = cls_find(&self.c, k)
        return (slot_rule(e), e[SLOT_PAYLOAD]) if e != NULL else (-1, None)

    def lookup_many(self, keys):
        """cls_lookup() of every row of keys (a C-contiguous uint64 array, KEY_WORDS columns)
        in one nogil loop: how many hit. For benchmarks and tests."""
        cdef const uint64_t[:, ::1] k = keys
        cdef Py_ssize_t i, n = k.shape[0]
        cdef long hits = 0
        if k.shape[1] != KEY_WORDS:
            raise ValueError(f"keys need {KEY_WORDS} columns")
        with nogil:
            for i in range(n):
                if cls_lookup(&self.c, &k[i, 0]) >= 0:
                    hits += 1
        return hits

    # ---- control side ----

    cdef int _subtable(self, tuple mask) except -1:
        idx = self._sub_by_mask.get(mask)
        if idx is not None:
            return idx
        cdef subtable_t *s
        cdef int32_t i
        if self.n_subs == self.cap_subs:
            s = <subtable_t *> realloc(self.c.subs, 2 * self.cap_subs * sizeof(subtable_t))
            if s == NULL:
                raise MemoryError()
            self.c.subs = s
            memset(&self.c.subs[self.cap_subs], 0, self.cap_subs * sizeof(subtable_t))
            self.c.order = <int32_t *> realloc(self.c.order, 2 * self.cap_subs * sizeof(int32_t))
            self.cap_subs *= 2
        idx = self.n_subs
        s = &self.c.subs[idx]
        s.n_words = 0
        for i in range(KEY_WORDS):
            s.mask[i] = mask[i]
            if mask[i]:
                s.words[s.n_words] = i
                s.n_words += 1
        s.max_priority = -1
        if sub_alloc(s, MIN_CAP) < 0:
            raise MemoryError()
        self._sub_by_mask[mask] = idx
        self._sub_prios.append({})
        self.n_subs += 1
        return idx

    def _reorder(self):
        """Subtables in the order lookup probes them; empty ones are left out."""
        cdef int32_t k = 0
        cdef int32_t i
        live = sorted((-self.c.subs[<int32_t> j].max_priority, j)
                      for j, p in enumerate(self._sub_prios) if p)
        for _, i in live:
            self.c.order[k] = i
            k += 1
        self.c.n_live = k                        # empty subtables are not probed at all

    cdef void _set_head(self, int idx, tuple key, object group) except *:
        """Point the slot for key at the group's best rule (or empty it). A rule that
        leaves the slot takes what the slot counted for it along (_folded)."""
        cdef subtable_t *s = &self.c.subs[idx]
        cdef uint64_t k[KEY_WORDS]
        cdef uint64_t *e
        cdef int i
        cdef long slot
        for i in range(KEY_WORDS):
            k[i] = key[i]
        slot = find_slot(s, k, hash_key(s, k))
        rule = group[0][2] if group else -1
        if slot >= 0:
            e = slot_at(s, slot)
            if slot_rule(e) != rule:
                self._fold(slot_rule(e), e)
            if not group:
                sub_delete(s, slot)
                return
        elif not group:
            return
        else:
            if (s.used + 1) * 2 > s.cap:
                if sub_grow(s) < 0:
                    raise MemoryError()
                slot = find_slot(s, k, hash_key(s, k))
            slot = -slot - 1
            e = slot_at(s, slot)
            for i in range(s.n_words):
                e[SLOT_KEY + i] = k[s.words[i]] & s.mask[s.words[i]]
            e[SLOT_PACKETS] = e[SLOT_BYTES] = 0
            filter_add(s, hash_key(s, k))
            s.used += 1
        slot_set(e, rule, -group[0][0])
        e[SLOT_PAYLOAD] = self._payloads[rule]

    cdef void _fold(self, int32_t rule, uint64_t *e) except *:
        """Slot e's counts go to rule (which leaves it), and the slot starts again at 0."""
        if e[SLOT_PACKETS] or e[SLOT_BYTES]:
            c = self._folded.setdefault(rule, [0, 0])
            c[0] += e[SLOT_PACKETS]
            c[1] += e[SLOT_BYTES]
        e[SLOT_PACKETS] = e[SLOT_BYTES] = 0

    def counters(self, int rule):
        """(packets, bytes) the packet path counted in the slots rule has held."""
        cdef uint64_t k[KEY_WORDS]
        cdef subtable_t *s
        cdef uint64_t *e
        cdef long slot
        cdef int i
        idx, key, entry = self._rules[rule]
        packets, octets = self._folded.get(rule, (0, 0))
        if self._groups[(idx, key)][0] == entry:
            s = &self.c.subs[<int> idx]
            for i in range(KEY_WORDS):
                k[i] = key[i]
            slot = find_slot(s, k, hash_key(s, k))
            if slot >= 0:
                e = slot_at(s, slot)
                packets += e[SLOT_PACKETS]
                octets += e[SLOT_BYTES]
        return packets, octets

    def insert(self, int rule, int priority, value, mask, uint64_t payload=0):
        """Add rule (an id >= 0) with value/mask (KEY_WORDS ints each) at priority >= 0;
        a lookup that finds it hands back payload too."""
        if rule in self._rules:
            raise KeyError(f"rule {rule} is already in the classifier")
        if not 0 <= priority <= 0x7fffffff:
            raise ValueError(f"priority {priority}")
        mask = tuple([int(m) for m in mask])           # (comprehensions: inlined, unlike
        key = tuple([int(v) & m for v, m in zip(value, mask)])    # generators)
        idx = self._subtable(mask)
        self._seq += 1
        group = self._groups.setdefault((idx, key), [])
        entry = (-priority, self._seq, rule)
        # groups are tiny (equal masked values differing in priority): insort by hand
        pos = 0
        while pos < len(group) and group[pos] < entry:
            pos += 1
        group.insert(pos, entry)
        self._rules[rule] = (idx, key, entry)
        self._payloads[rule] = payload
        if pos == 0:
            self._set_head(idx, key, group)
        prios = self._sub_prios[idx]
        prios[priority] = prios.get(priority, 0) + 1
        if priority > self.c.subs[idx].max_priority or len(prios) == 1 and prios[priority] == 1:
            self.c.subs[idx].max_priority = max(prios)
            self._reorder()

    def remove(self, int rule):
        """Take rule out (KeyError if it is not in)."""
        idx, key, entry = self._rules.pop(rule)
        group = self._groups[(idx, key)]
        head = group[0] == entry
        group.remove(entry)
        if not group:
            del self._groups[(idx, key)]
        if head:
            self._set_head(idx, key, group)
        del self._payloads[rule]
        self._folded.pop(rule, None)
        prios = self._sub_prios[idx]
        priority = -entry[0]
        prios[priority] -= 1
        if not prios[priority]:
            del prios[priority]
            if priority == self.c.subs[idx].max_priority:
                self.c.subs[idx].max_priority = max(prios) if prios else -1
                self._reorder()

    def set_payload(self, int rule, uint64_t payload):
        """Give rule (in the classifier) another payload."""
        idx, key, entry = self._rules[rule]
        self._payloads[rule] = payload
        if self._groups[(idx, key)][0] == entry:
            self._set_head(idx, key, self._groups[(idx, key)])

    def clear(self):
        for rule in list(self._rules):
            self.remove(rule)
