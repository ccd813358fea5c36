"""Shared memory and rings: the data side of a memif port.

MemifRegions maps the regions of one connection (the files the slave shares with
ADD_REGION, or the one we create as the slave) and translates (region, offset, length)
into our addresses. Every translation is of a whole range and fails (NULL) unless that
range lies inside one region: nothing a peer writes into a descriptor can make fastpath
touch memory outside what it shared.

MemifRing is one ring (memif.h's memif_ring_t: cookie, flags, head | tail | 16-byte
descriptors) seen from our side. The slave owns every buffer: it lays the rings out,
writes their descriptors and publishes them; the master only fills or empties the
buffers the descriptors name. So there are four cases, one per role and direction:

                  S2M ring (slave -> master)         M2S ring (master -> slave)
  master          rx: frames from head; tail = ours  tx: buffers up to head; tail = ours
  slave           tx: our buffers; head = ours       rx: frames up to tail; head = ours
                                                         (every slot reposted empty)

An index the other side moves is read with acquire ordering, one we publish is stored
with release ordering (memif's __atomic_load_n / __atomic_store_n discipline), after the
descriptors and buffers it covers. Each descriptor is read once into locals before it is
checked and used. A peer is untrusted:
- a descriptor outside its region, a length over the buffer size, a chain longer than
  the ring, a frame too big (over 64 KiB) or too short: that frame is dropped and
  counted, its slots consumed as usual;
- an index moved by more than the ring allows (head or tail "jumping"): the ring stops
  (`broken`) and the port's failure eventfd is written; the control plane disconnects.
As the slave we never read back the region or offset of our own descriptors: a master
could have scribbled on them, so every slot's buffer is computed from our own layout.

Interrupts: the producer writes the ring's eventfd after publishing unless the consumer
set MASK_INT in the ring's flags. As a consumer we set MASK_INT while frames keep coming
(the dispatcher is polling anyway) and clear it, then look again, when the ring goes
idle, so an idle dispatcher can sleep on the eventfd.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from libc.errno cimport errno
from posix.unistd cimport read, write, close
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED

cdef extern from "<sys/mman.h>":
    int MAP_POPULATE

from fastpath.graph.buffer cimport BufferPool, BUF_DATA, BIG_DATA

import os

cdef extern from *:
    """
    /* Shared with a peer that may change anything at any time: each load is one access
       the compiler may not repeat; indices use acquire/release as memif.h intends. */
    static inline uint16_t mf_ld16(const void *p)
    { return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED); }
    static inline uint32_t mf_ld32(const void *p)
    { return __atomic_load_n((const uint32_t *)p, __ATOMIC_RELAXED); }
    static inline uint16_t mf_ld16_acquire(const void *p)
    { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
    static inline void mf_st16(void *p, uint16_t v)
    { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED); }
    static inline void mf_st32(void *p, uint32_t v)
    { __atomic_store_n((uint32_t *)p, v, __ATOMIC_RELAXED); }
    static inline void mf_st16_release(void *p, uint16_t v)
    { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
    static inline void mf_mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    uint16_t mf_ld16(const void *p) nogil
    uint32_t mf_ld32(const void *p) nogil
    uint16_t mf_ld16_acquire(const void *p) nogil
    void mf_st16(void *p, uint16_t v) nogil
    void mf_st32(void *p, uint32_t v) nogil
    void mf_st16_release(void *p, uint16_t v) nogil
    void mf_mb() nogil

cdef enum:
    ETH_HLEN = 14

MAX_REGION_SIZE = 1 << 32           # descriptor offsets are 32-bit
POPULATE_LIMIT = 64 << 20           # bytes of one connection's regions faulted in when mapped

ERRORS = (
    ("not_connected", "memif not connected"),
    ("ring_full", "peer ring full"),
    ("too_big", "frame larger than 64 KiB (rx) or than the whole ring (tx)"),
    ("no_big_buffer", "no big buffer left for a frame over 2048 bytes"),
    ("runt", "frame shorter than an Ethernet header"),
    ("desc_bad_addr", "descriptor outside its region"),
    ("desc_bad_length", "descriptor length over the buffer size"),
    ("bad_chain", "descriptor chain longer than the ring"),
    ("index_jump", "ring index moved by more than the ring size: disconnected"),
)
# reasons that stop a ring rather than drop one frame
RING_FAILURES = ("index_jump",)

assert len(ERRORS) == N_ERRORS


cdef class MemifRegions:
    """The shared-memory regions of one memif connection, mapped into this process."""

    def __cinit__(self):
        self.n = 0
        self.populated = 0

    def __dealloc__(self):
        self._unmap()

    cdef void _unmap(self) noexcept nogil:
        cdef int i
        for i in range(self.n):
            munmap(self.r[i].base, self.r[i].map_len)
        self.n = 0
        self.populated = 0

    def clear(self):
        """Unmap every region (disconnect). Rings must be detached first."""
        self._unmap()

    def add(self, int fd, uint64_t size, uint64_t align=4096):
        """Map the first `size` bytes of the file behind fd as region number self.n.

        The caller has checked that the file is at least `size` bytes long (a shorter
        one would fault on access) and, where it can, sealed it against shrinking.
        align: the file's page size (hugetlbfs maps whole huge pages). Raises
        ValueError for a bad size, OSError when mmap fails. The fd stays the caller's."""
        if self.n >= MAX_REGIONS:
            raise ValueError(f"more than {MAX_REGIONS} regions")
        if size == 0 or size > MAX_REGION_SIZE:
            raise ValueError(f"region of {size} bytes (1..{MAX_REGION_SIZE})")
        if align == 0 or align & (align - 1):
            raise ValueError(f"alignment {align} is not a power of two")
        cdef size_t length = ((size + align - 1) // align) * align
        # Fault the first POPULATE_LIMIT bytes of regions in now: the first pass over
        # fresh buffers would otherwise take a page fault every other frame. Not more: a
        # peer could offer sparse files of gigabytes and have us allocate all of it.
        cdef bint populate = self.populated + length <= POPULATE_LIMIT
        cdef int flags = MAP_SHARED | (MAP_POPULATE if populate else 0)
        cdef void *p = mmap(NULL, length, PROT_READ | PROT_WRITE, flags, fd, 0)
        if p == MAP_FAILED:
            e = errno
            raise OSError(e, f"mmap of a {size}-byte memif region: {os.strerror(e)}")
        self.r[self.n].base = <uint8_t *> p
        self.r[self.n].size = size
        self.r[self.n].map_len = length
        self.n += 1
        if populate:
            self.populated += length
        return self.n - 1

    def size(self, int index):
        if not 0 <= index < self.n:
            raise IndexError(index)
        return self.r[index].size

    def table(self):
        return [{"region": i, "size": self.r[i].size} for i in range(self.n)]

    def __repr__(self):
        return f"<MemifRegions {self.n}>"


cdef class MemifRing:
    """One ring of one memif port: `s2m` says its direction, `slave` our role. The control
    plane places it with attach(), runs it with start() once the connection is up and
    stops it with detach(); the nodes call rx_burst / tx_burst while `ready`."""

    def __cinit__(self, MemifRegions regions not None, bint s2m, bint slave):
        self.regions = regions
        self.s2m = s2m
        self.slave = slave
        self.rx = s2m != slave           # master receives on S2M, slave on M2S
        self.int_fd = -1
        self.fail_fd = -1
        self.ring = NULL
        self.desc = NULL
        self.size = 0
        self.broken_code = -1

    def __dealloc__(self):
        if self.int_fd >= 0:
            close(self.int_fd)

    # ---- control plane ----

    def set_fail_fd(self, int fd):
        """The eventfd written when the peer breaks this ring (not owned by the ring)."""
        self.fail_fd = fd

    def attach(self, uint32_t region, uint64_t offset, int log2_size, int int_fd, bint init=False,
               uint32_t buffer_size=0, uint64_t buffer_offset=0):
        """Place the ring at `offset` of region `region`, with 2**log2_size slots, and take
        int_fd (its interrupt eventfd, -1 for none) once it is placed.

        init (we are the slave and created the region): write the header and one
        descriptor per slot, slot i's buffer at buffer_offset + i * buffer_size of region
        0. Otherwise the slave wrote them: the cookie must be there. Raises ValueError
        (and keeps nothing, int_fd stays the caller's) when the ring or its buffers do
        not fit in the region or the cookie is wrong."""
        cdef uint64_t size, nbytes
        cdef uint8_t *ring
        cdef uint32_t i
        cdef MemifDesc *d
        self.detach()
        if not 0 <= log2_size <= MAX_LOG2_RING_SIZE:
            raise ValueError(f"ring size 2**{log2_size} (at most 2**{MAX_LOG2_RING_SIZE})")
        size = 1ULL << log2_size
        nbytes = RING_HEADER + DESC_SIZE * size
        if region >= <uint32_t> self.regions.n:
            raise ValueError(f"ring in region {region}, which does not exist")
        if offset % 8:
            raise ValueError(f"ring at misaligned offset {offset}")
        if offset > self.regions.r[region].size or nbytes > self.regions.r[region].size - offset:
            raise ValueError(f"ring of {nbytes} bytes at offset {offset} is outside its "
                             f"{self.regions.r[region].size}-byte region")
        if self.slave:
            if buffer_size == 0 or self.regions.n == 0 or \
                    buffer_offset + size * buffer_size > min(self.regions.r[0].size, MAX_REGION_SIZE):
                raise ValueError("buffers outside the region")
        ring = self.regions.r[region].base + offset
        if init:
            mf_st32(ring, MEMIF_COOKIE)
            mf_st16(ring + RING_FLAGS, 0)
            mf_st16(ring + RING_HEAD, 0)
            mf_st16(ring + RING_TAIL, 0)
            d = <MemifDesc *> (ring + RING_HEADER)
            for i in range(size):
                mf_st16(&d[i].flags, 0)
                mf_st16(&d[i].region, 0)
                mf_st32(&d[i].length, buffer_size)
                mf_st32(&d[i].offset, <uint32_t> (buffer_offset + i * buffer_size))
                mf_st32(&d[i].metadata, 0)
        elif mf_ld32(ring) != MEMIF_COOKIE:
            raise ValueError(f"wrong ring cookie {mf_ld32(ring):#x} (expected {MEMIF_COOKIE:#x})")
        self.ring = ring
        self.desc = <MemifDesc *> (ring + RING_HEADER)
        self.size = <uint32_t> size
        self.mask = <uint16_t> (size - 1)
        self.region_index = region
        self.offset = offset
        self.buffer_size = buffer_size
        self.buffer_offset = buffer_offset
        self.int_fd = int_fd
        self.pos = self.posted = 0
        self.broken = False
        self.broken_code = -1

    def start(self):
        """Start moving frames, from where the indices stand (0 on a fresh ring; DPDK's
        master resets them at CONNECT). As the slave's receive ring: post every buffer.
        Raises ValueError when the indices are inconsistent."""
        cdef uint16_t head, tail
        if self.ring == NULL:
            raise ValueError("ring not attached")
        head = mf_ld16_acquire(self.ring + RING_HEAD)
        tail = mf_ld16_acquire(self.ring + RING_TAIL)
        if <uint16_t> (head - tail) > self.size:
            raise ValueError(f"ring head {head} and tail {tail} are more than {self.size} apart")
        if self.slave and self.s2m:
            self.pos = head                 # we fill from head; the master empties to tail
        else:
            self.pos = tail
            self.posted = head
        self.empty_polls = 0
        self.masked = False
        if self.rx:
            mf_st16(self.ring + RING_FLAGS, mf_ld16(self.ring + RING_FLAGS) & ~RING_F_MASK_INT)
        if self.rx and self.slave:
            self.refill()
        self.broken = False
        self.broken_code = -1
        self.ready = True

    def detach(self):
        """Stop and forget the ring (disconnect); closes its eventfd. Counters stay."""
        self.ready = False
        self.ring = NULL
        self.desc = NULL
        self.size = 0
        self.mask = 0
        if self.int_fd >= 0:
            close(self.int_fd)
            self.int_fd = -1

    @property
    def attached(self):
        return self.ring != NULL

    def indices(self):
        """(head, tail) as they are in shared memory now."""
        if self.ring == NULL:
            return (0, 0)
        return (mf_ld16_acquire(self.ring + RING_HEAD), mf_ld16_acquire(self.ring + RING_TAIL))

    def state(self):
        head, tail = self.indices()
        return {"direction": "s2m" if self.s2m else "m2s", "rx": bool(self.rx),
                "size": self.size, "region": self.region_index, "offset": self.offset,
                "ready": bool(self.ready), "broken": bool(self.broken),
                "broken_reason": ERRORS[self.broken_code][0] if self.broken_code >= 0 else "",
                "head": head, "tail": tail, "pos": self.pos,
                "interrupts": self.interrupts, "interrupts_masked": self.interrupts_masked,
                "wakeups": self.wakeups, "failures": self.failures}

    def __repr__(self):
        return (f"<MemifRing {'s2m' if self.s2m else 'm2s'} {'rx' if self.rx else 'tx'} "
                f"size {self.size} {'ready' if self.ready else 'stopped'}>")

    # ---- data plane ----

    cdef void fail(self, int reason, uint64_t *err) noexcept nogil:
        """The peer broke the ring: stop it and tell the control plane."""
        cdef uint64_t one = 1
        err[reason] += 1
        self.failures += 1
        self.broken = True
        self.broken_code = reason
        self.ready = False
        if self.fail_fd >= 0:
            write(self.fail_fd, &one, 8)

    cdef void interrupt(self) noexcept nogil:
        """Signal the consumer, unless it said it polls (MASK_INT)."""
        cdef uint64_t one = 1
        if self.int_fd < 0:
            return
        if mf_ld16(self.ring + RING_FLAGS) & RING_F_MASK_INT:
            self.interrupts_masked += 1
            return
        if write(self.int_fd, &one, 8) == 8:
            self.interrupts += 1

    cdef int rx_avail(self, uint64_t *err) noexcept nogil:
        """Slots holding frames for us, or -1 when the peer moved its index impossibly
        (the ring is failed)."""
        cdef uint16_t n
        if self.slave:
            # the master may hand back at most what we posted
            n = <uint16_t> (mf_ld16_acquire(self.ring + RING_TAIL) - self.pos)
            if n > <uint16_t> (self.posted - self.pos):
                self.fail(E_INDEX_JUMP, err)
                return -1
        else:
            n = <uint16_t> (mf_ld16_acquire(self.ring + RING_HEAD) - self.pos)
            if n > self.size:
                self.fail(E_INDEX_JUMP, err)
                return -1
        return n

    cdef uint8_t *rx_slot(self, uint16_t slot, uint32_t *length, uint16_t *flags,
                          int *reason) noexcept nogil:
        """Read slot's descriptor once: its data, or NULL (reason set) when unusable."""
        cdef MemifDesc *d = &self.desc[slot & self.mask]
        cdef uint8_t *p
        flags[0] = mf_ld16(&d.flags)
        length[0] = mf_ld32(&d.length)
        if self.slave:
            if length[0] > self.buffer_size:
                reason[0] = E_DESC_BAD_LENGTH
                return NULL
            return self.regions.r[0].base + self.buffer_offset + \
                <uint64_t> (slot & self.mask) * self.buffer_size
        p = self.regions.addr(mf_ld16(&d.region), mf_ld32(&d.offset), length[0])
        if p == NULL:
            reason[0] = E_DESC_BAD_ADDR
        return p

    cdef void refill(self) noexcept nogil:
        """Slave receive ring: post an empty buffer in every slot we have consumed."""
        cdef uint16_t s = self.posted, end = <uint16_t> (self.pos + self.size)
        cdef uint16_t i
        cdef MemifDesc *d
        while s != end:
            i = s & self.mask
            d = &self.desc[i]
            mf_st16(&d.flags, 0)
            mf_st16(&d.region, 0)
            mf_st32(&d.length, self.buffer_size)
            mf_st32(&d.offset, <uint32_t> (self.buffer_offset + <uint64_t> i * self.buffer_size))
            mf_st32(&d.metadata, 0)
            s += 1
        if s != self.posted:
            self.posted = s
            mf_st16_release(self.ring + RING_HEAD, s)

    cdef int rx_burst(self, BufferPool pool, uint32_t *bufs, int room, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil:
        """Take up to `room` frames from the ring into new pool buffers (bufs); returns
        how many. Every slot read is handed back (tail, or reposted as the slave).

        A frame -- one descriptor or a NEXT chain -- goes into a small buffer; one that
        outgrows BUF_DATA moves into a big buffer (up to BIG_DATA). When none is left the
        burst ends there if it took big buffers itself (they are free again after this
        vector: the frame waits in the ring), else the frame is dropped as no_big_buffer."""
        cdef int n, i, start, got, out = 0, bad, reason = 0
        cdef uint32_t b, big, total, length, limit
        cdef uint16_t flags
        cdef uint64_t v = 0
        cdef uint8_t *p
        cdef uint8_t *dst
        cdef bint complete, wait_big = False
        cdef int bigs = 0                       # big buffers this burst took
        if not self.ready or room <= 0:
            return 0
        n = self.rx_avail(err)
        if n < 0:
            return 0
        if n == 0:
            # Looks idle. On the first empty poll and every 8th after it (a read() per
            # poll would tax a busy dispatcher): ask for interrupts, reset the eventfd and
            # look again, so a frame after this look wakes a sleeping dispatcher.
            self.empty_polls += 1
            if self.int_fd < 0 or self.empty_polls & 7 != 1:
                return 0
            if self.masked:
                mf_st16(self.ring + RING_FLAGS, mf_ld16(self.ring + RING_FLAGS) & ~RING_F_MASK_INT)
                self.masked = False
            if read(self.int_fd, &v, 8) == 8:
                self.wakeups += v
            mf_mb()
            n = self.rx_avail(err)
            if n <= 0:
                return 0
        if not self.masked:                   # busy: we poll, no need to signal us
            mf_st16(self.ring + RING_FLAGS, mf_ld16(self.ring + RING_FLAGS) | RING_F_MASK_INT)
            self.masked = True
        got = pool.alloc(bufs, room if n > room else n)   # fewer when the pool runs dry
        i = 0
        while i < n and out < got:
            start = i
            b = bufs[out]
            dst = pool.frame(b)
            limit = BUF_DATA
            total = 0
            bad = -1
            complete = False
            while i < n:
                p = self.rx_slot(<uint16_t> (self.pos + i), &length, &flags, &reason)
                i += 1
                if bad < 0:
                    if p == NULL:
                        bad = reason
                    elif length > limit - total:
                        if length > BIG_DATA - total:
                            bad = E_TOO_BIG
                        elif pool.alloc_big(&big, 1) != 1:
                            if bigs:
                                # this burst's big buffers come back once its vector is
                                # through: leave the frame in the ring for the next poll
                                wait_big = True
                                break
                            bad = E_NO_BIG_BUFFER
                        else:
                            # a jumbo frame: what is gathered so far (at most one small
                            # buffer) moves into a big buffer, which takes the small one's place
                            memcpy(pool.frame(big), dst, total)
                            pool.free(&bufs[out], 1)
                            bufs[out] = big
                            b = big
                            dst = pool.frame(b)
                            limit = BIG_DATA
                            bigs += 1
                    if bad < 0:
                        memcpy(dst + total, p, length)
                        total += length
                if not flags & DESC_F_NEXT:
                    complete = True
                    break
            if wait_big:
                i = start
                break
            if not complete:
                if start == 0 and <uint32_t> n == self.size:
                    err[E_BAD_CHAIN] += 1     # a chain as long as the ring never ends
                else:
                    i = start                 # the rest of the chain is not published yet
                break
            if bad >= 0:
                err[bad] += 1
            elif total < ETH_HLEN:
                err[E_RUNT] += 1
            else:
                pool.length[b] = <uint16_t> total
                nbytes[0] += total
                out += 1
        if out < got:
            pool.free(bufs + out, got - out)
        if i:
            self.empty_polls = 0
            self.pos += <uint16_t> i
            if self.slave:
                self.refill()
            else:
                mf_st16_release(self.ring + RING_TAIL, self.pos)
        elif self.int_fd >= 0:
            # nothing could be taken (a chain not finished yet, the pool dry): as idle for
            # the eventfd, so it does not keep a sleeping dispatcher awake
            self.empty_polls += 1
            if self.empty_polls & 7 == 1 and read(self.int_fd, &v, 8) == 8:
                self.wakeups += v
        return out

    cdef int tx_frame(self, const uint8_t *frame, uint32_t length, uint16_t *slot,
                      uint16_t *room, uint64_t *err) noexcept nogil:
        """Place one frame in the slots from slot[0] on, chained when one buffer is too
        small. 1: placed; 0: not enough room (nothing taken); -1: dropped because a
        descriptor the slave posted is unusable (its slots go back empty)."""
        cdef uint16_t s = slot[0], r = room[0], k
        cdef uint32_t done = 0, cap, take, off
        cdef uint8_t *p
        cdef MemifDesc *d
        while True:
            if r == 0:
                return 0
            d = &self.desc[s & self.mask]
            if self.slave:
                off = <uint32_t> (self.buffer_offset + <uint64_t> (s & self.mask) * self.buffer_size)
                cap = self.buffer_size
                p = self.regions.r[0].base + off
                mf_st16(&d.region, 0)
                mf_st32(&d.offset, off)
                mf_st32(&d.metadata, 0)
            else:
                off = mf_ld32(&d.offset)
                cap = mf_ld32(&d.length)          # the slave posts its buffer size here
                p = self.regions.addr(mf_ld16(&d.region), off, cap)
                if p == NULL or cap == 0:
                    k = slot[0]
                    while k != s:
                        mf_st32(&self.desc[k & self.mask].length, 0)
                        mf_st16(&self.desc[k & self.mask].flags, 0)
                        k += 1
                    mf_st32(&d.length, 0)
                    mf_st16(&d.flags, 0)
                    err[E_DESC_BAD_ADDR] += 1
                    slot[0] = s + 1
                    room[0] = r - 1
                    return -1
            take = length - done
            if take > cap:
                take = cap
            memcpy(p, frame + done, take)
            done += take
            mf_st32(&d.length, take)
            s += 1
            r -= 1
            if done < length:
                mf_st16(&d.flags, DESC_F_NEXT)
            else:
                mf_st16(&d.flags, 0)
                slot[0] = s
                room[0] = r
                return 1

    cdef int tx_burst(self, BufferPool pool, uint32_t *bufs, int n, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil:
        """Copy n frames into the ring; returns how many were placed. The buffers stay
        the caller's."""
        cdef uint16_t idx, room, slot
        cdef int i, r, done = 0
        cdef uint32_t b
        if not self.ready:
            err[E_NOT_CONNECTED] += n
            return 0
        if self.slave:
            # our slots from tail to pos are still the master's to empty
            idx = mf_ld16_acquire(self.ring + RING_TAIL)
            room = <uint16_t> (self.pos - idx)
            if room > self.size:
                self.fail(E_INDEX_JUMP, err)
                err[E_NOT_CONNECTED] += n
                return 0
            room = <uint16_t> (self.size - room)
        else:
            idx = mf_ld16_acquire(self.ring + RING_HEAD)
            room = <uint16_t> (idx - self.pos)
            if room > self.size:
                self.fail(E_INDEX_JUMP, err)
                err[E_NOT_CONNECTED] += n
                return 0
        slot = self.pos
        for i in range(n):
            b = bufs[i]
            r = self.tx_frame(pool.frame(b), pool.length[b], &slot, &room, err)
            if r > 0:
                done += 1
                nbytes[0] += pool.length[b]
            elif r == 0:
                if room == self.size:
                    # not even the whole ring holds this chain: waiting would not help
                    err[E_TOO_BIG] += 1
                    continue
                err[E_RING_FULL] += n - i
                break
        if slot != self.pos:
            self.pos = slot
            mf_st16_release(self.ring + (RING_HEAD if self.slave else RING_TAIL), slot)
            self.interrupt()
        return done


# ---- for Python peers (fastpath.memif.client): the same ordering from Python

def load_acquire16(size_t address):
    """A 16-bit ring index at `address`, read with acquire ordering."""
    return mf_ld16_acquire(<void *> address)


def store_release16(size_t address, uint16_t value):
    """Publish a 16-bit ring index at `address` with release ordering."""
    mf_st16_release(<void *> address, value)


def full_fence():
    mf_mb()
