# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""MAC learning table (forwarding database) for one bridge.

Maps (VLAN, MAC) to the interface index a frame from that MAC last arrived
on.  The packet path calls ``lookup``/``learn`` per frame with the GIL
released, so the table is plain C memory rather than a dict:

* open addressing with linear probing over a power-of-two table kept at most
  half full, and backward-shift deletion, so there are no tombstones and
  probe sequences never degrade under churn;
* entries sit in a slab allocated once, so a MAC flood costs no allocation:
  when the table is full the oldest dynamic entry is evicted in O(1) from an
  intrusive LRU list;
* time is supplied by the caller and aging runs off the packet path
  (``age``), walking the LRU list from its oldest end and stopping at the
  first young entry, so it costs O(expired), not O(table).

Static entries (``add_static``) are never aged, evicted or overridden by
learning, and live on their own list so eviction never has to skip them.

Control-plane methods must not run concurrently with a packet loop that uses
the same table; the switch runs both from one thread.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, calloc, free

__all__ = ["Fdb", "FdbResult", "key_of"]

# A refresh rewrites last_seen and relinks the entry only after this many
# seconds, so a busy known MAC costs a read-only probe per frame.  Because
# last_seen and the list position always change together, the LRU list stays
# sorted by last_seen and aging can stop at the first young entry.
cdef double REFRESH_INTERVAL = 1.0

cdef uint32_t MAX_CAPACITY = 1 << 30

HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


cdef uint32_t table_size_for(uint32_t max_entries):
    cdef uint32_t size = 2
    while size < 2 * max_entries:
        size <<= 1
    return size


cdef uint64_t parse_mac(object mac) except? 0xFFFFFFFFFFFFFFFF:
    cdef uint64_t value = 0
    if isinstance(mac, str):
        parts = mac.replace("-", ":").split(":")
        if len(parts) != 6 or not all(1 <= len(p) <= 2 and all(c in HEX_DIGITS for c in p)
                                      for p in parts):
            raise ValueError(f"invalid MAC address {mac!r}")
        for p in parts:
            value = (value << 8) | int(p, 16)
        return value
    if isinstance(mac, (bytes, bytearray, memoryview)):
        raw = bytes(mac)
        if len(raw) != 6:
            raise ValueError(f"MAC must be 6 bytes, got {len(raw)}")
        return int.from_bytes(raw, "big")
    if isinstance(mac, int):
        if not 0 <= mac < (1 << 48):
            raise ValueError(f"MAC integer out of range: {mac:#x}")
        return mac
    raise TypeError(f"MAC must be str, bytes or int, not {type(mac).__name__}")


cdef str format_mac(uint64_t mac):
    return ":".join([f"{(mac >> shift) & 0xFF:02x}" for shift in range(40, -8, -8)])


cdef uint64_t make_key(object mac, object vlan) except? 0xFFFFFFFFFFFFFFFF:
    if not 0 <= vlan <= 4095:
        raise ValueError(f"VLAN out of range 0..4095: {vlan}")
    return (<uint64_t>vlan << 48) | parse_mac(mac)


def key_of(mac, vlan):
    """The uint64 table key of (VLAN, MAC), as fdb_key() computes it."""
    return make_key(mac, vlan)


cdef uint16_t check_port(object port) except? 0xFFFF:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range 0..65535: {port}")
    return port


cdef class Fdb:
    """MAC learning table of one bridge; see the module docstring."""

    def __cinit__(self):
        self.slab = NULL
        self.slots = NULL
        self.max_entries = 0
        self.free_head = self.lru_head = self.lru_tail = FDB_NIL
        self.static_head = self.static_tail = FDB_NIL

    def __init__(self, max_entries=8192, aging_time=300.0):
        if self.slab != NULL:
            raise RuntimeError("Fdb already initialised")
        if not 1 <= max_entries <= MAX_CAPACITY:
            raise ValueError(f"max_entries out of range 1..{MAX_CAPACITY}: {max_entries}")
        if aging_time < 0:
            raise ValueError(f"aging_time must be >= 0: {aging_time}")
        self.aging_time = aging_time
        self._resize(max_entries)

    def __dealloc__(self):
        free(self.slab)
        free(self.slots)

    # ------------------------------------------------------------------
    # Packet path
    # ------------------------------------------------------------------

    cdef int lookup(self, uint64_t key) noexcept nogil:
        """Port of (VLAN, MAC) ``key``, or -1 if unknown. Lock-free: retried if a writer
        changed the table meanwhile."""
        cdef unsigned v
        cdef int port
        while True:
            v = fdb_seq_begin(&self.seq_)
            port = self._lookup(key)
            if not fdb_seq_retry(&self.seq_, v):
                return port

    cdef int _lookup(self, uint64_t key) noexcept nogil:
        cdef uint32_t i = fdb_hash(key) & self.mask
        cdef uint32_t s, probes
        # bounded: a reader racing a writer may see a cluster mid-shift
        for probes in range(self.mask + 1):
            s = self.slots[i]
            if s == 0:
                return -1
            if self.slab[s - 1].key == key:
                return self.slab[s - 1].port
            i = (i + 1) & self.mask
        return -1

    cdef int learn(self, uint64_t key, uint16_t port, double now) noexcept nogil:
        """Record that ``key`` was seen on ``port`` at ``now``; see FdbResult.
        The common case -- a known station on its port, refreshed less than a second
        ago -- only reads; anything else takes the writers' lock."""
        cdef unsigned v
        cdef uint32_t i = fdb_hash(key) & self.mask
        cdef uint32_t s, probes
        cdef fdb_entry_t *e
        cdef bint fresh = False
        cdef int result
        v = fdb_seq_begin(&self.seq_)
        for probes in range(self.mask + 1):
            s = self.slots[i]
            if s == 0:
                break
            e = &self.slab[s - 1]
            if e.key == key:
                fresh = (e.port == port and not e.is_static
                         and now - e.last_seen < REFRESH_INTERVAL)
                break
            i = (i + 1) & self.mask
        if fresh and not fdb_seq_retry(&self.seq_, v):
            return FDB_REFRESHED
        self.wlock()
        result = self._learn(key, port, now)
        self.wunlock()
        return result

    cdef int _learn(self, uint64_t key, uint16_t port, double now) noexcept nogil:
        cdef uint32_t h = fdb_hash(key)
        cdef uint32_t slot
        cdef uint32_t eid = self._find(key, h, &slot)
        cdef fdb_entry_t *e
        cdef int result

        if eid != FDB_NIL:
            e = &self.slab[eid]
            if e.is_static:
                if e.port != port:
                    self.static_refused += 1
                return FDB_STATIC
            if e.port != port:
                e.port = port
                e.last_seen = now
                self._unlink(eid)
                self._append(eid)
                self.moved += 1
                return FDB_MOVED
            if now - e.last_seen >= REFRESH_INTERVAL:
                e.last_seen = now
                if eid != self.lru_tail:
                    self._unlink(eid)
                    self._append(eid)
            return FDB_REFRESHED

        result = FDB_LEARNED
        if self.n_entries >= self.max_entries:
            if self.lru_head == FDB_NIL:
                return FDB_FULL
            self._evict_oldest()
            result = FDB_EVICTED
            # Backward shift may have moved entries into our empty slot.
            self._find(key, h, &slot)
        self._insert(key, h, port, 0, now, slot)
        self.learned += 1
        return result

    # ------------------------------------------------------------------
    # Internals
    # ------------------------------------------------------------------

    cdef uint32_t _find(self, uint64_t key, uint32_t h, uint32_t *slot) noexcept nogil:
        """Entry id of ``key`` or FDB_NIL; ``slot`` gets its slot, or the
        empty slot where it would be inserted."""
        cdef uint32_t i = h & self.mask
        cdef uint32_t s
        while True:
            s = self.slots[i]
            if s == 0 or self.slab[s - 1].key == key:
                slot[0] = i
                return s - 1 if s != 0 else FDB_NIL
            i = (i + 1) & self.mask

    cdef uint32_t _insert(self, uint64_t key, uint32_t h, uint16_t port,
                          uint8_t is_static, double now, uint32_t slot) noexcept nogil:
        # Caller guarantees: key absent, slot is the empty slot _find gave,
        # and a free entry exists.
        cdef uint32_t eid = self.free_head
        cdef fdb_entry_t *e = &self.slab[eid]
        self.free_head = e.next
        e.key = key
        e.hash = h
        e.port = port
        e.is_static = is_static
        e.last_seen = now
        self.slots[slot] = eid + 1
        self._append(eid)
        self.n_entries += 1
        if is_static:
            self.n_static += 1
        return eid

    cdef void _delete(self, uint32_t eid) noexcept nogil:
        cdef uint32_t mask = self.mask
        cdef uint32_t i = self.slab[eid].hash & mask
        cdef uint32_t j, s, home
        while self.slots[i] != eid + 1:
            i = (i + 1) & mask
        # Backward shift: pull later members of the cluster into the hole
        # unless that would put them before their home slot.
        j = i
        while True:
            j = (j + 1) & mask
            s = self.slots[j]
            if s == 0:
                break
            home = self.slab[s - 1].hash & mask
            if ((j - home) & mask) >= ((j - i) & mask):
                self.slots[i] = s
                i = j
        self.slots[i] = 0

        self._unlink(eid)
        if self.slab[eid].is_static:
            self.n_static -= 1
        self.slab[eid].next = self.free_head
        self.free_head = eid
        self.n_entries -= 1

    cdef void _evict_oldest(self) noexcept nogil:
        self._delete(self.lru_head)
        self.evicted += 1

    cdef void _unlink(self, uint32_t eid) noexcept nogil:
        cdef fdb_entry_t *e = &self.slab[eid]
        cdef uint32_t *head
        cdef uint32_t *tail
        if e.is_static:
            head = &self.static_head
            tail = &self.static_tail
        else:
            head = &self.lru_head
            tail = &self.lru_tail
        if e.prev != FDB_NIL:
            self.slab[e.prev].next = e.next
        else:
            head[0] = e.next
        if e.next != FDB_NIL:
            self.slab[e.next].prev = e.prev
        else:
            tail[0] = e.prev

    cdef void _append(self, uint32_t eid) noexcept nogil:
        cdef fdb_entry_t *e = &self.slab[eid]
        cdef uint32_t *head
        cdef uint32_t *tail
        if e.is_static:
            head = &self.static_head
            tail = &self.static_tail
        else:
            head = &self.lru_head
            tail = &self.lru_tail
        e.prev = tail[0]
        e.next = FDB_NIL
        if tail[0] != FDB_NIL:
            self.slab[tail[0]].next = eid
        else:
            head[0] = eid
        tail[0] = eid

    cdef int _resize(self, uint32_t n) except -1:
        """Move all entries into a fresh slab of ``n`` entries (n >= n_entries),
        keeping list order."""
        cdef uint32_t size = table_size_for(n)
        cdef fdb_entry_t *new_entries = <fdb_entry_t *>malloc(n * sizeof(fdb_entry_t))
        cdef uint32_t *new_slots = <uint32_t *>calloc(size, sizeof(uint32_t))
        cdef fdb_entry_t *old_entries = self.slab
        cdef uint32_t *old_slots = self.slots
        cdef uint32_t heads[2]
        cdef uint32_t eid, slot, i, k
        cdef fdb_entry_t *e
        if new_entries == NULL or new_slots == NULL:
            free(new_entries)
            free(new_slots)
            raise MemoryError()

        heads[0] = self.static_head
        heads[1] = self.lru_head
        self.slab = new_entries
        self.slots = new_slots
        self.mask = size - 1
        self.max_entries = n
        for i in range(n):
            new_entries[i].next = i + 1 if i + 1 < n else FDB_NIL
        self.free_head = 0
        self.static_head = self.static_tail = FDB_NIL
        self.lru_head = self.lru_tail = FDB_NIL
        self.n_entries = 0
        self.n_static = 0

        for k in range(2):
            eid = heads[k]
            while eid != FDB_NIL:
                e = &old_entries[eid]
                self._find(e.key, e.hash, &slot)
                self._insert(e.key, e.hash, e.port, e.is_static, e.last_seen, slot)
                eid = e.next

        free(old_entries)
        free(old_slots)
        return 0

    # ------------------------------------------------------------------
    # Control plane
    # ------------------------------------------------------------------

    def set_max_entries(self, n):
        """Change the capacity, keeping contents; shrinking evicts the oldest
        dynamic entries (counted in ``evicted``)."""
        self.wlock()
        try:
            if not 1 <= n <= MAX_CAPACITY:
                raise ValueError(f"max_entries out of range 1..{MAX_CAPACITY}: {n}")
            if n < self.n_static:
                raise ValueError(f"{self.n_static} static entries do not fit in {n}")
            if n == self.max_entries:
                return
            while self.n_entries > n:
                self._evict_oldest()
            self._resize(n)
        finally:
            self.wunlock()

    def add_static(self, mac, vlan, port):
        """Install a static entry, replacing any entry for (VLAN, MAC).

        Evicts the oldest dynamic entry if the table is full; raises
        RuntimeError if it is full of static entries.
        """
        cdef uint64_t key = make_key(mac, vlan)
        cdef uint16_t p = check_port(port)
        cdef uint32_t h = fdb_hash(key)
        cdef uint32_t slot
        cdef uint32_t eid
        self.wlock()
        try:
            eid = self._find(key, h, &slot)
            if eid != FDB_NIL:
                if not self.slab[eid].is_static:
                    self._unlink(eid)
                    self.slab[eid].is_static = 1
                    self.n_static += 1
                    self._append(eid)
                self.slab[eid].port = p
                return
            if self.n_entries >= self.max_entries:
                if self.lru_head == FDB_NIL:
                    raise RuntimeError(
                        f"fdb full: all {self.max_entries} entries are static")
                self._evict_oldest()
                self._find(key, h, &slot)
            self._insert(key, h, p, 1, 0.0, slot)
        finally:
            self.wunlock()

    def remove(self, mac, vlan):
        """Remove the entry for (VLAN, MAC), static or not.  True if found."""
        cdef uint64_t key = make_key(mac, vlan)
        cdef uint32_t slot
        cdef uint32_t eid
        self.wlock()
        try:
            eid = self._find(key, fdb_hash(key), &slot)
            if eid == FDB_NIL:
                return False
            self._delete(eid)
            return True
        finally:
            self.wunlock()

    def learn_py(self, mac, vlan, port, double now):
        """Python wrapper of ``learn``; returns a FdbResult value."""
        return self.learn(make_key(mac, vlan), check_port(port), now)

    def lookup_py(self, mac, vlan):
        """Python wrapper of ``lookup``: port, or -1."""
        return self.lookup(make_key(mac, vlan))

    def age(self, double now):
        """Remove dynamic entries with ``last_seen + aging_time <= now``."""
        cdef uint64_t n = 0
        cdef uint32_t eid
        self.wlock()
        try:
            eid = self.lru_head
            while eid != FDB_NIL and self.slab[eid].last_seen + self.aging_time <= now:
                self._delete(eid)
                n += 1
                eid = self.lru_head
            self.aged += n
            return n
        finally:
            self.wunlock()

    def flush(self, port=None, vlan=None, include_static=False):
        """Remove dynamic entries, optionally only those on ``port`` and/or in
        ``vlan``; static ones too if ``include_static``.  Returns the count."""
        cdef int want_port = -1 if port is None else check_port(port)
        cdef int want_vlan = -1
        cdef uint32_t heads[2]
        cdef uint32_t eid, nxt, k
        cdef uint64_t n = 0
        cdef fdb_entry_t *e
        self.wlock()
        try:
            if vlan is not None:
                if not 0 <= vlan <= 4095:
                    raise ValueError(f"VLAN out of range 0..4095: {vlan}")
                want_vlan = vlan
            heads[0] = self.lru_head
            heads[1] = self.static_head if include_static else FDB_NIL
            for k in range(2):
                eid = heads[k]
                while eid != FDB_NIL:
                    e = &self.slab[eid]
                    nxt = e.next
                    if ((want_port < 0 or e.port == want_port)
                            and (want_vlan < 0 or <int>(e.key >> 48) == want_vlan)):
                        self._delete(eid)
                        n += 1
                    eid = nxt
            return n
        finally:
            self.wunlock()

    def port_removed(self, port):
        """Forget everything on ``port``, static entries included."""
        return self.flush(port=port, include_static=True)

    cdef list _rows(self, double now):
        # Static entries first, then dynamic ones oldest first.
        cdef list rows = []
        cdef uint32_t heads[2]
        cdef uint32_t eid, k
        cdef fdb_entry_t *e
        self.wlock()
        try:
            heads[0] = self.static_head
            heads[1] = self.lru_head
            for k in range(2):
                eid = heads[k]
                while eid != FDB_NIL:
                    e = &self.slab[eid]
                    if e.is_static:
                        age = -1
                    else:
                        age = max(0, int(now - e.last_seen))
                    rows.append((e.port, <int>(e.key >> 48),
                                 format_mac(e.key & 0xFFFFFFFFFFFF), age,
                                 bool(e.is_static)))
                    eid = e.next
            return rows
        finally:
            self.wunlock()

    def entries(self, double now):
        """``[(port, vlan, 'aa:bb:cc:dd:ee:ff', age_seconds, is_static)]``
        sorted by port, VLAN, MAC; age is -1 for static entries."""
        return sorted(self._rows(now))

    def lru_order(self):
        """Dynamic entries as ``(vlan, mac_str)``, oldest (next to evict) first."""
        return [(vlan, mac) for _, vlan, mac, _, is_static in self._rows(0.0)
                if not is_static]

    def format_show(self, double now, port_names=None):
        """Table in ``ovs-appctl fdb/show`` layout.

        Rows come in the order OVS prints them, least recently seen first
        (static entries, which never age, ahead of all dynamic ones).
        ``port_names`` maps port number to the name shown; unnamed ports are
        shown by number.
        """
        names = port_names or {}
        lines = [" port  VLAN  MAC                Age\n"]
        for port, vlan, mac, age, is_static in self._rows(now):
            name = names.get(port, str(port))
            age_s = "static" if is_static else f"{age:3d}"
            lines.append(f"{name:>5}  {vlan:4d}  {mac}  {age_s}\n")
        return "".join(lines)

    def __len__(self):
        return self.n_entries

    def stats(self):
        return {
            "n_entries": self.n_entries,
            "learned": self.learned,
            "moved": self.moved,
            "evicted": self.evicted,
            "aged": self.aged,
            "static_refused": self.static_refused,
        }

    # ------------------------------------------------------------------
    # Introspection for tests
    # ------------------------------------------------------------------

    @property
    def table_size(self):
        return self.mask + 1

    def home_slot(self, mac, vlan):
        """Slot where probing for (VLAN, MAC) starts."""
        return fdb_hash(make_key(mac, vlan)) & self.mask

    def check_invariants(self):
        """Raise AssertionError if the table, lists and counters disagree."""
        cdef uint32_t size = self.mask + 1
        cdef uint32_t i, j, s, eid, prev, home
        cdef uint32_t heads[2]
        cdef uint32_t tails[2]
        cdef uint64_t n_slots = 0, n_free = 0
        cdef fdb_entry_t *e
        seen = set()
        heads[0] = self.static_head
        tails[0] = self.static_tail
        heads[1] = self.lru_head
        tails[1] = self.lru_tail
        for k in range(2):
            prev = FDB_NIL
            eid = heads[k]
            last_seen = None
            while eid != FDB_NIL:
                assert eid < self.max_entries and eid not in seen, eid
                seen.add(eid)
                e = &self.slab[eid]
                assert e.prev == prev, (eid, e.prev, prev)
                assert bool(e.is_static) == (k == 0), eid
                assert e.hash == fdb_hash(e.key)
                if k == 1:
                    assert last_seen is None or e.last_seen >= last_seen, \
                        "LRU list not sorted by last_seen"
                    last_seen = e.last_seen
                prev = eid
                eid = e.next
            assert tails[k] == prev
        assert <uint64_t>len(seen) == self.n_entries <= self.max_entries
        static_count = sum(1 for x in seen if self.slab[x].is_static)
        assert static_count == self.n_static

        for i in range(size):
            s = self.slots[i]
            if s == 0:
                continue
            n_slots += 1
            eid = s - 1
            assert eid in seen, f"slot {i} holds free entry {eid}"
            # Every slot between home and here must be occupied, or lookup
            # would stop early.
            home = self.slab[eid].hash & self.mask
            j = home
            while j != i:
                assert self.slots[j] != 0, f"hole at {j} before entry in slot {i}"
                j = (j + 1) & self.mask
            assert self.lookup(self.slab[eid].key) == self.slab[eid].port
        assert n_slots == self.n_entries

        eid = self.free_head
        while eid != FDB_NIL:
            assert eid < self.max_entries and eid not in seen, f"free entry {eid}"
            seen.add(eid)
            n_free += 1
            eid = self.slab[eid].next
        assert n_free + self.n_entries == self.max_entries
