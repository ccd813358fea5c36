"""Guest memory and split virtqueues: the data side of a vhost-user port.

GuestMemory maps the regions a front end passes in SET_MEM_TABLE (memfd or hugetlbfs
files) and translates guest-physical and front-end-virtual addresses into ours. Every
translation is of a whole [address, address + length) range, and fails (NULL) unless
that range lies inside one region: nothing a guest writes into a descriptor can make
fastpath touch memory outside that guest's RAM.

Virtq is one split virtqueue (virtio 1.1, 2.6): descriptor table, avail ring and used
ring in guest memory, a kick eventfd (the guest added buffers) and a call eventfd (our
interrupt to the guest). Two bursts work on whole vectors in nogil loops:
- tx_burst: the guest's transmit queue -> pool buffers. The virtio-net header becomes
  the buffer's offload state (a partial checksum, a TCP super-frame) as far as the guest
  negotiated it (VIRTIO_NET_F_CSUM, HOST_TSO4/6, HOST_ECN); a header that does not fit
  its frame or asks for more is a counted drop (bad_offload), a UDP super-frame too
  (offload_unsupported: nothing here segments it). A frame longer than a small buffer
  (a jumbo frame, a super-frame of up to 64 KiB) goes into a big one (no_big_buffer
  when none is left);
- rx_burst: pool buffers -> the guest's receive queue, behind a header that carries the
  frame's offload state when the guest takes it (GUEST_CSUM, GUEST_TSO4/6; DATA_VALID
  for a checksum vouched for). interface-output finishes in software what the guest
  does not take (the port's caps follow the negotiation, protocol.py). With
  VIRTIO_NET_F_MRG_RXBUF a frame may fill several avail chains and num_buffers in its
  header says how many; without, a frame larger than one chain is dropped (too_big).
Both follow VIRTIO_RING_F_EVENT_IDX when negotiated: avail_event tells the guest when
to kick, used_event whether it wants this interrupt (otherwise VRING_AVAIL_F_NO_INTERRUPT).

A guest is untrusted. Each descriptor and ring entry is read from shared memory exactly
once into locals before it is checked and used; a chain is walked at most `num` steps
(or its indirect table's size) -- any longer chain is a loop. A bad chain drops its
frame and goes back used with length 0; a bad avail ring (its index moved by more than
the queue size, or a head out of range) stops the queue -- `broken`, and the error
eventfd is signalled -- until the front end sets the queue up again. Reasons are counted
into the array the calling node passes (ERRORS, in E_* order).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from libc.errno cimport errno
from posix.unistd cimport read, write, close
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED

from fastpath.graph.buffer cimport (BufferPool, BUF_DATA, BIG_DATA, OL_CSUM_PARTIAL,
                                    OL_CSUM_VALID, OL_GSO, OL_GSO_TCP4, OL_GSO_TCP6, OL_GSO_ECN)
from fastpath.nodes.offload cimport (virtio_net_hdr, vnet_to_meta, meta_to_vnet, csum_finish,
                                     l3_offset, VNET_OK, VNET_BAD, VNET_UNSUPPORTED,
                                     VNET_F_DATA_VALID, VNET_F_NEEDS_CSUM, VNET_GSO_NONE, VNET_GSO_ECN)

import os

cdef extern from *:
    """
    /* Shared with a guest that may change anything at any time: every load is a single
       access the compiler may not repeat, ordered where the virtio spec wants barriers. */
    static inline uint64_t fp_ld64(const void *p) { return *(const volatile uint64_t *)p; }
    static inline uint32_t fp_ld32(const void *p) { return *(const volatile uint32_t *)p; }
    static inline uint16_t fp_ld16(const void *p) { return *(const volatile uint16_t *)p; }
    static inline uint16_t fp_ld16_acquire(const void *p)
    { return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE); }
    static inline void fp_st16(void *p, uint16_t v) { *(volatile uint16_t *)p = v; }
    static inline void fp_st32(void *p, uint32_t v) { *(volatile uint32_t *)p = v; }
    static inline void fp_st16_release(void *p, uint16_t v)
    { __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE); }
    static inline void fp_mb(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
    """
    uint64_t fp_ld64(const void *p) nogil
    uint32_t fp_ld32(const void *p) nogil
    uint16_t fp_ld16(const void *p) nogil
    uint16_t fp_ld16_acquire(const void *p) nogil
    void fp_st16(void *p, uint16_t v) nogil
    void fp_st32(void *p, uint32_t v) nogil
    void fp_st16_release(void *p, uint16_t v) nogil
    void fp_mb() nogil

cdef enum:
    DESC_F_NEXT = 1
    DESC_F_WRITE = 2
    DESC_F_INDIRECT = 4
    AVAIL_F_NO_INTERRUPT = 1
    ETH_HLEN = 14
    NET_HDR_NUM_BUFFERS = 10     # offset of num_buffers in the 12-byte virtio-net header
    NO_BUFFER = 0xffffffff

ERRORS = (
    ("not_ready", "guest queue not running"),
    ("ring_full", "guest receive queue full"),
    ("too_big", "frame larger than a buffer"),
    ("runt", "frame shorter than the virtio-net and Ethernet headers"),
    ("desc_bad_addr", "descriptor outside guest memory"),
    ("desc_bad_flags", "descriptor of the wrong direction"),
    ("desc_bad_next", "descriptor index out of range"),
    ("chain_loop", "descriptor chain longer than its table (a loop)"),
    ("bad_indirect", "malformed indirect descriptor"),
    ("empty_chain", "receive chain of zero length"),
    ("bad_head", "avail head index out of range: queue stopped"),
    ("avail_jump", "avail index moved by more than the queue size: queue stopped"),
    ("bad_offload", "virtio-net header that does not fit its frame or was not negotiated"),
    ("offload_unsupported", "super-frame of a type fastpath does not segment (UDP)"),
    ("no_big_buffer", "no big buffer left for a frame larger than a small one"),
)
# reasons that stop a queue rather than drop one frame
QUEUE_FAILURES = ("bad_head", "avail_jump")

assert len(ERRORS) == N_ERRORS


cdef class GuestMemory:
    """The guest RAM regions of one front end, mapped shared into this process."""

    def __cinit__(self):
        self.n_regions = 0

    def __dealloc__(self):
        self._unmap()

    cdef void _unmap(self) noexcept nogil:
        cdef int i
        for i in range(self.n_regions):
            munmap(self.regions[i].map_base, self.regions[i].map_len)
        self.n_regions = 0

    def clear(self):
        """Unmap everything (disconnect, reset). Queues must be re-translated after."""
        self._unmap()

    def set_table(self, regions):
        """Map [(gpa, size, uva, mmap_offset, fd, align)], replacing the current table.

        The file behind each fd must be at least mmap_offset + size bytes long (the
        caller checks with fstat; a shorter file would fault on access). align is the
        file's page size (hugetlbfs maps whole huge pages). Raises ValueError for an
        inconsistent table (the old one stays), OSError when mmap fails (the old one is
        gone). The fds stay open: the caller closes them."""
        regions = [tuple(int(x) for x in r) for r in regions]
        if not 1 <= len(regions) <= MAX_REGIONS:
            raise ValueError(f"{len(regions)} memory regions (1..{MAX_REGIONS})")
        page = os.sysconf("SC_PAGE_SIZE")
        for gpa, size, uva, off, fd, align in regions:
            if size <= 0 or gpa < 0 or uva < 0 or off < 0 or align <= 0 or align & (align - 1):
                raise ValueError("memory region with a bad size, address, offset or alignment")
            # page-aligned regions (every front end's are) keep the alignment of guest
            # addresses in ours: ring areas and descriptor tables are naturally aligned
            if gpa % page or uva % page or off % page:
                raise ValueError("memory region not page-aligned")
            if gpa + size > 1 << 64 or uva + size > 1 << 64 or off + size + align > 1 << 62:
                raise ValueError("memory region wraps around the address space")
        for key in (0, 2):
            spans = sorted((r[key], r[key] + r[1]) for r in regions)
            for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
                if b0 < a1:
                    raise ValueError("memory regions overlap")
        cdef void *p
        cdef size_t length
        cdef Region *reg
        self._unmap()
        for gpa, size, uva, off, fd, align in regions:
            length = ((off + size + align - 1) // align) * align
            p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if p == MAP_FAILED:
                e = errno
                self._unmap()
                raise OSError(e, f"mmap of a {size}-byte guest memory region: {os.strerror(e)}")
            reg = &self.regions[self.n_regions]
            reg.gpa = gpa
            reg.size = size
            reg.uva = uva
            reg.map_base = <uint8_t *> p
            reg.map_len = length
            reg.host = <uint8_t *> p + <size_t> off
            self.n_regions += 1

    cdef uint8_t *gpa_to_host(self, uint64_t gpa, uint64_t length) noexcept nogil:
        """Our address of guest-physical [gpa, gpa + length), or NULL unless one region
        holds all of it."""
        cdef int i
        cdef uint64_t off
        for i in range(self.n_regions):
            off = gpa - self.regions[i].gpa             # huge when gpa is below the region
            if gpa >= self.regions[i].gpa and off < self.regions[i].size \
                    and length <= self.regions[i].size - off:
                return self.regions[i].host + off
        return NULL

    cdef uint8_t *uva_to_host(self, uint64_t uva, uint64_t length) noexcept nogil:
        """The same for the front end's own virtual addresses (SET_VRING_ADDR)."""
        cdef int i
        cdef uint64_t off
        for i in range(self.n_regions):
            off = uva - self.regions[i].uva
            if uva >= self.regions[i].uva and off < self.regions[i].size \
                    and length <= self.regions[i].size - off:
                return self.regions[i].host + off
        return NULL

    def table(self):
        return [{"guest_phys_addr": self.regions[i].gpa, "memory_size": self.regions[i].size,
                 "userspace_addr": self.regions[i].uva} for i in range(self.n_regions)]

    def __repr__(self):
        return f"<GuestMemory {self.n_regions} regions>"


cdef class Virtq:
    """One split virtqueue of a vhost-user device (index 0: the guest's receive queue,
    1: its transmit queue). The control plane sets it up with the set_* methods; the
    nodes run tx_burst / rx_burst while `ready`."""

    def __cinit__(self, int index, GuestMemory mem not None):
        self.index = index
        self.mem = mem
        self.kick_fd = self.call_fd = self.err_fd = -1
        self._forget()

    def __dealloc__(self):
        self._close_fds()

    cdef _close_fds(self):
        for fd in (self.kick_fd, self.call_fd, self.err_fd):
            if fd >= 0:
                close(fd)
        self.kick_fd = self.call_fd = self.err_fd = -1

    cdef _forget(self):
        self.num = 0
        self.mask = 0
        self.addr_set = False
        self.desc_uva = self.avail_uva = self.used_uva = 0
        self._clear_pointers()
        self.last_avail_idx = self.last_used_idx = 0
        self.signalled_used = 0
        self.signalled_valid = False
        self.started = self.enabled = self.broken = self.ready = False
        self.broken_code = -1
        self.event_idx = self.mrg_rxbuf = self.indirect = False
        self.hdr_len = 10
        self.net_features = 0

    cdef _clear_pointers(self):
        self.desc = NULL
        self.avail_flags = self.avail_idx = self.avail_ring = self.used_event = NULL
        self.used_flags = self.used_idx = self.avail_event = NULL
        self.used_ring = NULL

    cdef _update(self):
        self.ready = self.started and self.enabled and not self.broken and self.desc != NULL

    # ---- control plane ----

    def reset(self):
        """Forget everything the front end set (disconnect, reset); counters stay."""
        self._close_fds()
        self._forget()

    def set_features(self, bint event_idx, bint mrg_rxbuf, bint indirect, int hdr_len,
                     uint64_t net_features=0):
        """net_features: the guest's accepted feature bits (only NET_F_* ones matter)."""
        if hdr_len not in (10, 12):
            raise ValueError(f"virtio-net header of {hdr_len} bytes")
        self.event_idx = event_idx
        self.mrg_rxbuf = mrg_rxbuf
        self.indirect = indirect
        self.hdr_len = hdr_len
        self.net_features = net_features

    def set_num(self, uint32_t num):
        if num == 0 or num > MAX_QUEUE_SIZE or num & (num - 1):
            raise ValueError(f"queue size {num} is not a power of two in 1..{MAX_QUEUE_SIZE}")
        self.num = num
        self.mask = num - 1
        return self.translate()

    def set_addr(self, uint64_t desc, uint64_t used, uint64_t avail):
        """The ring areas, as front-end virtual addresses. Returns translate()'s answer;
        raises ValueError for misaligned areas (virtio: 16, 4 and 2 bytes)."""
        self.addr_set = False
        self.broken = False
        self.broken_code = -1
        if desc % 16 or used % 4 or avail % 2:
            self.translate()
            raise ValueError("misaligned ring address")
        self.desc_uva, self.used_uva, self.avail_uva = desc, used, avail
        self.addr_set = True
        return self.translate()

    def translate(self):
        """Find the ring areas in guest memory: True when found, False when an area is not
        inside guest memory, None while the size, the addresses or the memory are missing.
        Called again whenever any of them changes."""
        self._clear_pointers()
        cdef uint64_t n = self.num
        cdef uint8_t *d
        cdef uint8_t *a
        cdef uint8_t *u
        if n == 0 or not self.addr_set or self.mem.n_regions == 0:
            self._update()
            return None
        d = self.mem.uva_to_host(self.desc_uva, 16 * n)
        a = self.mem.uva_to_host(self.avail_uva, 6 + 2 * n)      # flags, idx, ring, used_event
        u = self.mem.uva_to_host(self.used_uva, 6 + 8 * n)       # flags, idx, ring, avail_event
        if d == NULL or a == NULL or u == NULL:
            self._update()
            return False
        self.desc = <VringDesc *> d
        self.avail_flags = <uint16_t *> a
        self.avail_idx = <uint16_t *> (a + 2)
        self.avail_ring = <uint16_t *> (a + 4)
        self.used_event = <uint16_t *> (a + 4 + 2 * n)
        self.used_flags = <uint16_t *> u
        self.used_idx = <uint16_t *> (u + 2)
        self.used_ring = <VringUsedElem *> (u + 4)
        self.avail_event = <uint16_t *> (u + 4 + 8 * n)
        self._update()
        return True

    def set_base(self, uint16_t base):
        """Where the queue resumes: the next avail entry (and used entry) to handle."""
        self.last_avail_idx = self.last_used_idx = base
        self.signalled_valid = False
        self.broken = False
        self.broken_code = -1
        self._update()

    def stop(self):
        """GET_VRING_BASE: stop the queue and return where it stopped."""
        self.started = False
        if self.kick_fd >= 0:
            close(self.kick_fd)
            self.kick_fd = -1
        self.broken = False
        self.broken_code = -1
        self._update()
        return self.last_avail_idx

    def set_kick(self, int fd):
        """The guest's kick eventfd (-1: none, we poll); starts the queue."""
        if self.kick_fd >= 0:
            close(self.kick_fd)
        self.kick_fd = fd
        self.started = True
        self.signalled_valid = False
        self._update()

    def set_call(self, int fd):
        if self.call_fd >= 0:
            close(self.call_fd)
        self.call_fd = fd

    def set_err(self, int fd):
        if self.err_fd >= 0:
            close(self.err_fd)
        self.err_fd = fd

    def set_enabled(self, bint on):
        self.enabled = on
        self._update()

    def state(self):
        return {"num": self.num, "ready": bool(self.ready), "started": bool(self.started),
                "enabled": bool(self.enabled), "broken": bool(self.broken),
                "broken_reason": ERRORS[self.broken_code][0] if self.broken_code >= 0 else "",
                "last_avail_idx": self.last_avail_idx, "last_used_idx": self.last_used_idx,
                "kicks": self.kicks, "calls": self.calls,
                "calls_suppressed": self.calls_suppressed, "failures": self.failures,
                "csum_partial": self.csum_partial, "gso_frames": self.gso_frames,
                "big_frames": self.big_frames}

    def __repr__(self):
        return f"<Virtq {self.index} num {self.num} {'ready' if self.ready else 'stopped'}>"

    # ---- data plane ----

    cdef void fail(self, int reason, uint64_t *err) noexcept nogil:
        """The guest broke the queue: stop it and tell the front end (error eventfd)."""
        cdef uint64_t one = 1
        err[reason] += 1
        self.failures += 1
        self.broken = True
        self.broken_code = reason
        self.ready = False
        if self.err_fd >= 0:
            write(self.err_fd, &one, 8)

    cdef void notify(self) noexcept nogil:
        """Interrupt the guest for the used entries just published, unless it asked not
        to be (used_event with EVENT_IDX, else VRING_AVAIL_F_NO_INTERRUPT)."""
        cdef uint16_t new = self.last_used_idx, old = self.signalled_used, event
        cdef bint valid = self.signalled_valid
        cdef uint64_t one = 1
        if self.call_fd < 0:
            return
        fp_mb()          # the used index is visible before we read the guest's wishes
        if self.event_idx:
            self.signalled_used = new
            self.signalled_valid = True
            event = fp_ld16(self.used_event)
            # vring_need_event: did the used index step over used_event since `old`?
            if valid and <uint16_t> (new - event - 1) >= <uint16_t> (new - old):
                self.calls_suppressed += 1
                return
        elif fp_ld16(self.avail_flags) & AVAIL_F_NO_INTERRUPT:
            self.calls_suppressed += 1
            return
        write(self.call_fd, &one, 8)
        self.calls += 1

    cdef void drain_kick(self) noexcept nogil:
        """Read (reset) the kick eventfd, so an idle dispatcher can sleep on it."""
        cdef uint64_t v = 0
        if read(self.kick_fd, &v, 8) == 8:
            self.kicks += v

    cdef void put_used(self, uint32_t head, uint32_t length) noexcept nogil:
        cdef VringUsedElem *e = &self.used_ring[self.last_used_idx & self.mask]
        fp_st32(&e.id, head)
        fp_st32(&e.len, length)
        self.last_used_idx += 1

    cdef int next_desc(self, ChainWalk *w, VringDesc *d, uint64_t *err) noexcept nogil:
        """Load the chain's next data descriptor into d (following an indirect one into
        its table): 0, or -1 (reason counted) when the chain is bad. Each descriptor is
        read from guest memory once; d is what gets checked and used."""
        cdef VringDesc *t
        while True:
            if w.idx >= w.num:
                err[E_DESC_BAD_NEXT] += 1
                return -1
            if w.steps == w.num:              # more steps than descriptors: a loop
                err[E_CHAIN_LOOP] += 1
                return -1
            w.steps += 1
            t = &w.table[w.idx]
            d.addr = fp_ld64(&t.addr)
            d.len = fp_ld32(&t.len)
            d.flags = fp_ld16(&t.flags)
            d.next = fp_ld16(&t.next)
            if not d.flags & DESC_F_INDIRECT:
                w.idx = d.next
                return 0
            if w.in_indirect or not self.indirect or d.flags & DESC_F_NEXT or d.len == 0 \
                    or d.len % 16 or d.len > MAX_INDIRECT * 16 or d.addr % 8:
                err[E_BAD_INDIRECT] += 1
                return -1
            w.table = <VringDesc *> self.mem.gpa_to_host(d.addr, d.len)
            if w.table == NULL:
                err[E_DESC_BAD_ADDR] += 1
                return -1
            w.num = d.len // 16
            w.idx = 0
            w.steps = 0
            w.in_indirect = True

    cdef int chain_to_buffer(self, BufferPool pool, uint16_t head, uint32_t *b, uint8_t *hdr,
                             uint64_t *err) noexcept nogil:
        """Copy the frame in a transmit chain into buffer b[0] and its virtio-net header
        into hdr (hdr_len bytes). A frame that outgrows a small buffer moves into a big
        one: b[0] then names it and the small one is freed. Returns the frame's length, or
        -1 (reason counted) for a chain that cannot be used; b[0] is then unchanged."""
        cdef ChainWalk w
        cdef VringDesc d
        cdef uint32_t hpos = 0, hlen = self.hdr_len, out = 0, take, cap = BUF_DATA
        cdef uint32_t small = b[0], big = NO_BUFFER
        cdef uint8_t *dst = pool.frame(small)
        cdef uint8_t *p
        cdef bint bad = False
        w.table, w.num, w.idx, w.steps, w.in_indirect = self.desc, self.num, head, 0, False
        while True:
            if self.next_desc(&w, &d, err) < 0:
                bad = True
                break
            if d.flags & DESC_F_WRITE:
                err[E_DESC_BAD_FLAGS] += 1
                bad = True
                break
            if d.len:
                p = self.mem.gpa_to_host(d.addr, d.len)
                if p == NULL:
                    err[E_DESC_BAD_ADDR] += 1
                    bad = True
                    break
                if hpos < hlen:
                    take = hlen - hpos if hlen - hpos < d.len else d.len
                    memcpy(hdr + hpos, p, take)
                    hpos += take
                    p += take
                    d.len -= take
                if d.len > cap - out:
                    if big != NO_BUFFER or d.len > BIG_DATA - out:
                        err[E_TOO_BIG] += 1
                        bad = True
                        break
                    # the frame outgrows a small buffer: what it has so far moves over
                    if pool.alloc_big(&big, 1) != 1:
                        big = NO_BUFFER
                        err[E_NO_BIG_BUFFER] += 1
                        bad = True
                        break
                    memcpy(pool.frame(big), dst, out)
                    dst = pool.frame(big)
                    cap = BIG_DATA
                if d.len:
                    memcpy(dst + out, p, d.len)
                    out += d.len
            if not d.flags & DESC_F_NEXT:
                break
        if not bad and (hpos < hlen or out < ETH_HLEN):
            err[E_RUNT] += 1
            bad = True
        if bad:
            if big != NO_BUFFER:
                pool.free(&big, 1)
            return -1
        if big != NO_BUFFER:
            pool.free(&small, 1)
            b[0] = big
            self.big_frames += 1
        return <int> out

    cdef bint take_offload(self, BufferPool pool, uint32_t b, virtio_net_hdr *h, uint32_t n,
                           uint64_t *err) noexcept nogil:
        """The guest's virtio-net header into buffer b's offload state. False (counted) for
        a header whose offsets do not fit the frame, that asks for an offload the guest
        did not negotiate, or for a super-frame type nothing here segments."""
        cdef int l3, r
        cdef uint8_t ol
        cdef uint64_t nf = self.net_features
        h.flags &= ~VNET_F_DATA_VALID     # a driver must not send it (virtio 5.1.6.2): ignored
        if h.flags == 0 and h.gso_type == VNET_GSO_NONE:
            pool.ol_flags[b] = 0
            return True
        l3 = l3_offset(pool.frame(b), n)
        r = vnet_to_meta(pool, b, h, <uint32_t> l3, n) if l3 >= 0 else VNET_BAD
        if r == VNET_UNSUPPORTED:
            err[E_OFFLOAD_UNSUPPORTED] += 1
            return False
        ol = pool.ol_flags[b]
        if r == VNET_OK and ((ol & OL_CSUM_PARTIAL and not nf & NET_F_CSUM)
                             or (ol & OL_GSO_TCP4 and not nf & NET_F_HOST_TSO4)
                             or (ol & OL_GSO_TCP6 and not nf & NET_F_HOST_TSO6)
                             or (ol & OL_GSO_ECN and not nf & NET_F_HOST_ECN)):
            r = VNET_BAD
        if r != VNET_OK:
            pool.ol_flags[b] = 0
            err[E_BAD_OFFLOAD] += 1
            return False
        if ol & OL_CSUM_PARTIAL:
            self.csum_partial += 1
        if ol & OL_GSO:
            self.gso_frames += 1
        return True

    cdef int tx_burst(self, BufferPool pool, uint32_t *bufs, int room, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil:
        """Take up to `room` frames from the guest's transmit queue into new pool
        buffers (bufs); returns how many. Every chain taken goes back used."""
        cdef uint16_t avail_idx, n_avail, head, used_before
        cdef int got, i, out = 0, length
        cdef uint32_t b
        cdef uint8_t hdr[12]
        if not self.ready or room <= 0:
            return 0
        avail_idx = fp_ld16_acquire(self.avail_idx)
        n_avail = <uint16_t> (avail_idx - self.last_avail_idx)
        if n_avail == 0:
            # Looks idle. Now and then (the first empty poll, then every 8th: a read() per
            # poll would tax a busy dispatcher) reset the kick and look again, so a kick
            # after this look wakes the dispatcher and a stale one does not keep it awake.
            self.empty_polls += 1
            if self.kick_fd < 0 or self.empty_polls & 7 != 1:
                return 0
            self.drain_kick()
            fp_mb()
            avail_idx = fp_ld16_acquire(self.avail_idx)
            n_avail = <uint16_t> (avail_idx - self.last_avail_idx)
            if n_avail == 0:
                return 0
        self.empty_polls = 0
        if n_avail > self.num:
            self.fail(E_AVAIL_JUMP, err)
            return 0
        got = room if n_avail > room else n_avail
        got = pool.alloc(bufs, got)        # fewer when the pool runs dry: the rest wait
        used_before = self.last_used_idx
        for i in range(got):
            head = fp_ld16(&self.avail_ring[self.last_avail_idx & self.mask])
            if head >= self.num:
                self.fail(E_BAD_HEAD, err)
                break
            length = self.chain_to_buffer(pool, head, &bufs[out], hdr, err)
            self.put_used(head, 0)
            self.last_avail_idx += 1
            b = bufs[out]
            # a dropped frame leaves its buffer (offload state cleared) for the next chain
            if length > 0 and self.take_offload(pool, b, <virtio_net_hdr *> hdr, length, err):
                pool.length[b] = length
                nbytes[0] += length
                out += 1
        if out < got:
            pool.free(bufs + out, got - out)
        if self.last_used_idx != used_before:
            if self.event_idx:
                fp_st16(self.avail_event, self.last_avail_idx)   # kick me for the next one
            fp_st16_release(self.used_idx, self.last_used_idx)
            self.notify()
        return out

    cdef int chain_from_frame(self, uint16_t head, const uint8_t *hdr, const uint8_t *frame,
                              uint32_t pos, uint32_t need, uint8_t **nb, uint64_t *err) noexcept nogil:
        """Write bytes [pos, need) of header + frame into a receive chain; returns how
        many it took (0: a chain of no room), -1 (reason counted) for a bad chain.
        nb[0], nb[1] get our addresses of the header's num_buffers bytes when written."""
        cdef ChainWalk w
        cdef VringDesc d
        cdef uint32_t n, k, written = 0, hlen = self.hdr_len
        cdef uint8_t *p
        w.table, w.num, w.idx, w.steps, w.in_indirect = self.desc, self.num, head, 0, False
        while True:
            if self.next_desc(&w, &d, err) < 0:
                return -1
            if not d.flags & DESC_F_WRITE:
                err[E_DESC_BAD_FLAGS] += 1
                return -1
            if d.len:
                p = self.mem.gpa_to_host(d.addr, d.len)
                if p == NULL:
                    err[E_DESC_BAD_ADDR] += 1
                    return -1
                n = need - pos
                if n > d.len:
                    n = d.len
                if pos < hlen:
                    k = hlen - pos
                    if k > n:
                        k = n
                    memcpy(p, hdr + pos, k)
                    if hlen == 12:
                        if pos <= NET_HDR_NUM_BUFFERS < pos + k:
                            nb[0] = p + (NET_HDR_NUM_BUFFERS - pos)
                        if pos <= NET_HDR_NUM_BUFFERS + 1 < pos + k:
                            nb[1] = p + (NET_HDR_NUM_BUFFERS + 1 - pos)
                    if n > k:
                        memcpy(p + k, frame, n - k)
                else:
                    memcpy(p, frame + (pos - hlen), n)
                pos += n
                written += n
            if pos == need or not d.flags & DESC_F_NEXT:
                return <int> written

    cdef int guest_header(self, BufferPool pool, uint32_t b, uint8_t *hdr, uint64_t *err) noexcept nogil:
        """The virtio-net header (12 bytes, num_buffers 0) to give frame b to the guest:
        its partial checksum and super-frame state as the guest negotiated to take them.
        0, or -1 (counted) when the frame holds state the guest cannot take."""
        cdef virtio_net_hdr *h = <virtio_net_hdr *> hdr
        cdef uint8_t ol = pool.ol_flags[b]
        cdef uint64_t nf = self.net_features
        memset(hdr, 0, 12)
        if ol & OL_GSO and not (nf & NET_F_GUEST_CSUM and
                                ((ol & OL_GSO_TCP4 and nf & NET_F_GUEST_TSO4) or
                                 (ol & OL_GSO_TCP6 and nf & NET_F_GUEST_TSO6))):
            # interface-output cuts what the port's caps do not take; only a super-frame
            # queued across a renegotiation can get here
            err[E_BAD_OFFLOAD] += 1
            return -1
        if ol & OL_CSUM_PARTIAL:
            if nf & NET_F_GUEST_CSUM:
                meta_to_vnet(pool, b, h)
                if not nf & NET_F_GUEST_ECN:
                    # CWR stays in the first segment's header, which is all the bit is
                    # about; a guest without GUEST_ECN must not see it
                    h.gso_type &= ~VNET_GSO_ECN
            elif csum_finish(pool, b) != 0:
                err[E_BAD_OFFLOAD] += 1
                return -1
        elif ol & OL_CSUM_VALID and nf & NET_F_GUEST_CSUM:
            h.flags = VNET_F_DATA_VALID
        return 0

    cdef int frame_to_guest(self, const uint8_t *hdr, const uint8_t *frame, uint32_t length,
                            uint16_t *n_avail, uint64_t *err) noexcept nogil:
        """Place one frame behind its header (hdr_len bytes of hdr) in the receive queue.
        1: delivered; 0: no room (nothing taken); -1: dropped (reason counted); -2: the
        queue failed."""
        cdef uint8_t *nb[2]
        cdef uint32_t need = self.hdr_len + length, pos = 0
        cdef uint16_t saved_avail = self.last_avail_idx, saved_used = self.last_used_idx
        cdef uint16_t head, k, nbufs = 0
        cdef int w
        nb[0] = nb[1] = NULL
        while pos < need:
            if n_avail[0] == 0:
                n_avail[0] = <uint16_t> (fp_ld16_acquire(self.avail_idx) - self.last_avail_idx)
                if n_avail[0] > self.num:
                    self.last_avail_idx, self.last_used_idx = saved_avail, saved_used
                    self.fail(E_AVAIL_JUMP, err)
                    return -2
                if n_avail[0] == 0:
                    self.last_avail_idx, self.last_used_idx = saved_avail, saved_used
                    return 0
            head = fp_ld16(&self.avail_ring[self.last_avail_idx & self.mask])
            if head >= self.num:
                self.last_avail_idx, self.last_used_idx = saved_avail, saved_used
                self.fail(E_BAD_HEAD, err)
                return -2
            self.last_avail_idx += 1
            n_avail[0] -= 1
            w = self.chain_from_frame(head, hdr, frame, pos, need, nb, err)
            if w <= 0:
                if w == 0:
                    err[E_EMPTY_CHAIN] += 1
                # the frame is dropped; every chain it took goes back empty
                k = saved_used
                while k != self.last_used_idx:
                    fp_st32(&self.used_ring[k & self.mask].len, 0)
                    k += 1
                self.put_used(head, 0)
                return -1
            self.put_used(head, w)
            nbufs += 1
            pos += w
            if pos < need and not self.mrg_rxbuf:
                # without mergeable buffers one chain must hold it all: leave the chain
                # for a smaller frame
                self.last_avail_idx, self.last_used_idx = saved_avail, saved_used
                n_avail[0] += 1
                err[E_TOO_BIG] += 1
                return -1
        if self.hdr_len == 12:
            nb[0][0] = nbufs & 0xff
            nb[1][0] = nbufs >> 8
        return 1

    cdef int rx_burst(self, BufferPool pool, uint32_t *bufs, int n, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil:
        """Copy n frames into the guest's receive queue; returns how many were delivered.
        The buffers stay the caller's."""
        cdef uint16_t n_avail, used_before
        cdef int i, r, done = 0
        cdef uint32_t b
        cdef uint8_t hdr[12]
        if not self.ready:
            err[E_NOT_READY] += n
            return 0
        n_avail = <uint16_t> (fp_ld16_acquire(self.avail_idx) - self.last_avail_idx)
        if n_avail > self.num:
            self.fail(E_AVAIL_JUMP, err)
            err[E_NOT_READY] += n
            return 0
        used_before = self.last_used_idx
        for i in range(n):
            b = bufs[i]
            if self.guest_header(pool, b, hdr, err) < 0:
                continue
            r = self.frame_to_guest(hdr, pool.frame(b), pool.length[b], &n_avail, err)
            if r > 0:
                done += 1
                nbytes[0] += pool.length[b]
                if hdr[0] & VNET_F_NEEDS_CSUM:
                    self.csum_partial += 1
                if hdr[1] != VNET_GSO_NONE:
                    self.gso_frames += 1
                if pool.length[b] > BUF_DATA:
                    self.big_frames += 1
            elif r == 0:
                err[E_RING_FULL] += n - i
                break
            elif r == -2:
                err[E_NOT_READY] += n - i
                break
        if self.last_used_idx != used_before:
            fp_st16_release(self.used_idx, self.last_used_idx)
            self.notify()
        return done
