"""fastpath's own traffic generator and counting sink, for end-to-end benchmarks over
real interfaces (bench/e2e.py). No Python runs per packet: both loops run without the GIL.

PacketGenerator blasts a fixed list of frames out of one interface, cycling through it,
for a duration or a count, optionally paced to rate_pps. Two transmit methods:
- "ring": a TPACKET_V2 transmit ring. Every slot is filled once, at start, with its frame
  (slot i holds frames[i % len(frames)] and the ring is a multiple of len(frames) long,
  so frames go out in list order); sending a batch is only flipping slot statuses to
  SEND_REQUEST and one sendto(). The kernel maps the slot pages into the skb instead of
  copying them (but a veth copies them into a new page anyway, see DEFAULT_METHOD).
- "sendmmsg": batches of struct mmsghdr over the same frames, one sendmmsg() per batch.
The default is "sendmmsg" (see DEFAULT_METHOD for the measurement behind it).

PacketSink counts the frames arriving on one interface through a TPACKET_V3 receive
ring: frames and bytes that match a marker (EtherType and/or source/destination MAC),
the others apart, optionally checking every matching frame against a list of expected
frames byte for byte (the 802.1Q tag the kernel moved into the frame header is put back
first). It never counts the frames its own host sends.

Both must be created inside the namespace of their interface; bench/e2e.py runs each in
its own process there through `python -m fastpath.afpacket.pktgen_cli gen|sink ...`.
"""
from libc.errno cimport errno, EINTR, EAGAIN, ENOBUFS, ENOPROTOOPT
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport malloc, calloc, free
from libc.string cimport memcpy, memset, memcmp, strncpy
from posix.unistd cimport close as c_close
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.time cimport nanosleep, timespec
from fastpath.graph.clock cimport now_ns

import os

from fastpath.afpacket.linux cimport *

cdef extern from *:
    """
    static inline unsigned int pg_load_acquire(const unsigned int *p)
    { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void pg_store_release(unsigned int *p, unsigned int v)
    { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    """
    uint32_t pg_load_acquire(const uint32_t *p) nogil
    void pg_store_release(uint32_t *p, uint32_t v) nogil


cdef enum:
    ETH_HLEN = 14
    VLAN_HLEN = 4
    MAX_FRAME = 9216
    METHOD_RING = 0
    METHOD_SENDMMSG = 1

# Chosen by measurement on the 2-core benchmark machine (bench/e2e.py --peers ceiling:
# raw veth pair, generator and sink on one core, runs alternated, 3 x 2 trials each): at
# 1518 bytes sendmmsg() sent 15-25 % more frames per second than the TPACKET_V2 ring
# (medians 325-376 vs 278-313 kpps); at 64 bytes the two were within 5 % of each other
# (ring 397-435, sendmmsg 374-423 kpps; runs without priority had sendmmsg ahead). A veth
# forwards a ring frame into another namespace only after skb_copy_ubufs() has copied the
# ring bytes into a freshly allocated page, which costs more than sendmmsg's single copy.
DEFAULT_METHOD = "sendmmsg"
METHODS = ("ring", "sendmmsg")


cdef void sleep_ns(uint64_t ns) noexcept nogil:
    cdef timespec ts
    ts.tv_sec = <long> (ns // 1000000000ULL)
    ts.tv_nsec = <long> (ns % 1000000000ULL)
    nanosleep(&ts, NULL)


cdef int open_packet_socket(str ifname, int *ifindex, int *mtu, uint16_t proto) except -1:
    """A raw packet socket bound to ifname (proto 0: it never receives)."""
    cdef sockaddr_ll sll
    cdef ifreq ifr
    name = ifname.encode()
    if len(name) >= IFNAMSIZ:
        raise ValueError(f"interface name too long: {ifname!r}")
    ifindex[0] = <int> if_nametoindex(name)
    if ifindex[0] == 0:
        raise OSError(errno, f"{ifname}: no such interface: {os.strerror(errno)}")
    cdef int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0)
    if fd < 0:
        raise OSError(errno, f"{ifname}: socket: {os.strerror(errno)}")
    memset(&ifr, 0, sizeof(ifr))
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1)
    if ioctl(fd, SIOCGIFMTU, &ifr) != 0:
        e = errno
        c_close(fd)
        raise OSError(e, f"{ifname}: SIOCGIFMTU: {os.strerror(e)}")
    mtu[0] = ifr.ifr_mtu
    memset(&sll, 0, sizeof(sll))
    sll.sll_family = AF_PACKET
    sll.sll_protocol = htons(proto)
    sll.sll_ifindex = ifindex[0]
    # bind after the ring exists for receive sockets; transmit-only sockets bind now
    if proto == 0 and bind(fd, <sockaddr *> &sll, sizeof(sll)) != 0:
        e = errno
        c_close(fd)
        raise OSError(e, f"{ifname}: bind: {os.strerror(e)}")
    return fd


cdef class PacketGenerator:
    """PacketGenerator(ifname, frames, *, rate_pps=None, method=DEFAULT_METHOD, batch=256,
    ring_slots=4096)

    run(seconds=None, count=None) sends frames[0], frames[1], ... cyclically until either
    limit is reached (at least one must be given) and returns how many the kernel took.
    rate_pps paces the sending (a token bucket over CLOCK_MONOTONIC; None = as fast as
    possible). After run(): sent, elapsed (seconds from the first send to the last
    completion), send_errors (sendto/sendmmsg failures such as ENOBUFS, retried).
    """
    cdef int fd, _method, _batch
    cdef readonly str ifname
    cdef readonly int ifindex, mtu
    cdef readonly object rate_pps
    cdef double rate
    cdef uint32_t nframes
    # sendmmsg
    cdef uint8_t *data
    cdef iovec *iov
    cdef mmsghdr *msgs
    # ring
    cdef uint8_t *ring
    cdef size_t ring_size
    cdef uint32_t slot_size, slots, head
    # results
    cdef readonly uint64_t sent, send_errors, total_sent, total_bytes
    cdef readonly double elapsed
    cdef uint32_t *lens
    cdef uint64_t bytes_per_cycle

    def __cinit__(self):
        self.fd = -1
        self.data = NULL
        self.iov = NULL
        self.msgs = NULL
        self.ring = NULL
        self.lens = NULL

    def __init__(self, ifname, frames, *, rate_pps=None, method=DEFAULT_METHOD, int batch=256,
                 int ring_slots=4096):
        cdef int one = 1, version = TPACKET_V2, sndbuf
        cdef uint32_t i, total, maxlen = 0, off
        cdef tpacket_req req
        cdef void *mem
        cdef tpacket2_hdr *h
        cdef size_t hdr
        frames = [bytes(f) for f in frames]
        if not frames:
            raise ValueError("no frames to send")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}")
        if batch < 1 or batch > 1024:
            raise ValueError("batch must be in [1, 1024]")
        if rate_pps is not None and rate_pps <= 0:
            raise ValueError("rate_pps must be positive")
        self.ifname = str(ifname)
        self._method = METHOD_RING if method == "ring" else METHOD_SENDMMSG
        self._batch = batch
        self.rate_pps = rate_pps
        self.rate = float(rate_pps) if rate_pps is not None else 0.0
        self.nframes = len(frames)
        self.fd = open_packet_socket(self.ifname, &self.ifindex, &self.mtu, 0)
        for f in frames:
            if len(f) < ETH_HLEN:
                raise ValueError("a frame is shorter than an Ethernet header")
            # the kernel refuses frames over MTU + 14 (+4 with an 802.1Q tag)
            limit = self.mtu + ETH_HLEN + (VLAN_HLEN if f[12:14] == b"\x81\x00" else 0)
            if len(f) > limit or len(f) > MAX_FRAME:
                raise ValueError(f"a {len(f)}-byte frame does not fit {self.ifname}'s MTU {self.mtu}")
            maxlen = max(maxlen, <uint32_t> len(f))
        self.lens = <uint32_t *> malloc(self.nframes * sizeof(uint32_t))
        if self.lens == NULL:
            raise MemoryError()
        self.bytes_per_cycle = 0
        for i in range(self.nframes):
            self.lens[i] = len(frames[i])
            self.bytes_per_cycle += self.lens[i]
        self._setopt(SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one), "PACKET_QDISC_BYPASS")
        sndbuf = 16 << 20
        if setsockopt(self.fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) != 0:
            setsockopt(self.fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf))

        if self._method == METHOD_SENDMMSG:
            # frames[j % n] for j in [0, batch + n): a batch starting at any frame is one slice
            total = 0
            for f in frames:
                total += len(f)
            self.data = <uint8_t *> malloc(total)
            n_msgs = batch + self.nframes
            self.iov = <iovec *> calloc(n_msgs, sizeof(iovec))
            self.msgs = <mmsghdr *> calloc(n_msgs, sizeof(mmsghdr))
            if self.data == NULL or self.iov == NULL or self.msgs == NULL:
                raise MemoryError()
            off = 0
            starts = []
            for f in frames:
                memcpy(self.data + off, <const char *> f, len(f))
                starts.append(off)
                off += len(f)
            for i in range(n_msgs):
                self.iov[i].iov_base = self.data + <uint32_t> starts[i % self.nframes]
                self.iov[i].iov_len = self.lens[i % self.nframes]
                self.msgs[i].msg_hdr.msg_iov = &self.iov[i]
                self.msgs[i].msg_hdr.msg_iovlen = 1
        else:
            self._setopt(SOL_PACKET, PACKET_VERSION, &version, sizeof(version), "PACKET_VERSION")
            page = os.sysconf("SC_PAGE_SIZE")
            hdr = TPACKET_ALIGN(sizeof(tpacket2_hdr))
            self.slot_size = 128
            while self.slot_size < hdr + maxlen:
                self.slot_size <<= 1
            block = max(page, self.slot_size)
            per_block = block // self.slot_size
            # a whole number of frame cycles and of blocks
            unit = self.nframes * per_block // _gcd(self.nframes, per_block)
            slots = max(ring_slots // unit, 1) * unit
            self.slots = slots
            memset(&req, 0, sizeof(req))
            req.tp_block_size = block
            req.tp_block_nr = slots // per_block
            req.tp_frame_size = self.slot_size
            req.tp_frame_nr = slots
            self._setopt(SOL_PACKET, PACKET_TX_RING, &req, sizeof(req), "PACKET_TX_RING")
            self.ring_size = <size_t> block * req.tp_block_nr
            mem = mmap(NULL, self.ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
            if mem == MAP_FAILED:
                raise OSError(errno, f"{self.ifname}: mmap tx ring: {os.strerror(errno)}")
            self.ring = <uint8_t *> mem
            for i in range(slots):
                f = frames[i % self.nframes]
                h = <tpacket2_hdr *> (self.ring + <size_t> i * self.slot_size)
                memcpy(<uint8_t *> h + hdr, <const char *> f, len(f))
                h.tp_len = len(f)
                h.tp_status = TP_STATUS_AVAILABLE
            self.head = 0

    def __dealloc__(self):
        if self.ring != NULL:
            munmap(self.ring, self.ring_size)
        if self.fd >= 0:
            c_close(self.fd)
        free(self.data)
        free(self.iov)
        free(self.msgs)
        free(self.lens)

    cdef _setopt(self, int level, int name, const void *val, unsigned int n, what):
        if setsockopt(self.fd, level, name, val, n) != 0:
            e = errno
            raise OSError(e, f"{self.ifname}: {what}: {os.strerror(e)}")

    @property
    def method(self):
        return METHODS[self._method]

    @property
    def batch(self):
        return self._batch

    @property
    def ring_slots(self):
        return self.slots if self._method == METHOD_RING else 0

    def close(self):
        if self.ring != NULL:
            munmap(self.ring, self.ring_size)
            self.ring = NULL
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    def run(self, seconds=None, count=None):
        """Send until `seconds` have passed or `count` frames went out; returns the count."""
        cdef uint64_t limit = <uint64_t> -1, dur_ns = <uint64_t> -1
        cdef uint64_t t0, t1
        cdef uint64_t sent = 0, errors = 0
        if seconds is None and count is None:
            raise ValueError("give seconds or count (or both)")
        if self.fd < 0:
            raise ValueError("generator closed")
        if count is not None:
            if count < 0:
                raise ValueError("count must be >= 0")
            limit = <uint64_t> count
        if seconds is not None:
            if seconds < 0:
                raise ValueError("seconds must be >= 0")
            dur_ns = <uint64_t> (seconds * 1e9)
        with nogil:
            t0 = now_ns()
            if self._method == METHOD_RING:
                sent = self._run_ring(t0, dur_ns, limit, &errors)
            else:
                sent = self._run_mmsg(t0, dur_ns, limit, &errors)
            t1 = now_ns()
        self.sent = sent
        self.send_errors = errors
        self.elapsed = (t1 - t0) / 1e9
        self.total_sent += sent
        return sent

    cdef inline uint64_t _allowed(self, uint64_t t0, uint64_t now, uint64_t sent, uint64_t want) noexcept nogil:
        """How many frames the pacing allows now (want when unpaced); sleeps a little
        when none are."""
        cdef double due
        cdef uint64_t n, wait
        if self.rate <= 0.0:
            return want
        due = (now - t0) * 1e-9 * self.rate
        if due <= <double> sent:
            # the next frame is due in (sent + 1 - due) / rate seconds; sleep for part of it
            wait = <uint64_t> ((sent + 1 - due) / self.rate * 1e9)
            if wait > 20000:
                sleep_ns(wait // 2 if wait < 2000000 else 1000000)
            return 0
        n = <uint64_t> due - sent
        if n == 0:
            n = 1
        return n if n < want else want

    cdef uint64_t _run_mmsg(self, uint64_t t0, uint64_t dur_ns, uint64_t limit,
                            uint64_t *errors) noexcept nogil:
        cdef uint64_t sent = 0, now = t0, want
        cdef uint32_t pos = 0
        cdef int r
        while sent < limit and now - t0 < dur_ns:
            want = limit - sent
            if want > <uint64_t> self._batch:
                want = self._batch
            want = self._allowed(t0, now, sent, want)
            if want:
                r = sendmmsg(self.fd, self.msgs + pos, <unsigned int> want, 0)
                if r > 0:
                    sent += r
                    pos = <uint32_t> ((pos + r) % self.nframes)
                else:
                    errors[0] += 1      # ENOBUFS: the receiving side's backlog was full
            now = now_ns()
        return sent

    cdef uint64_t _run_ring(self, uint64_t t0, uint64_t dur_ns, uint64_t limit,
                            uint64_t *errors) noexcept nogil:
        cdef uint64_t queued = 0, now = t0, want, n
        cdef tpacket2_hdr *h
        cdef uint32_t status
        while queued < limit and now - t0 < dur_ns:
            want = limit - queued
            if want > <uint64_t> self._batch:
                want = self._batch
            want = self._allowed(t0, now, queued, want)
            n = 0
            while n < want:
                h = <tpacket2_hdr *> (self.ring + <size_t> self.head * self.slot_size)
                status = pg_load_acquire(&h.tp_status)
                if status & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING):
                    break               # the ring is full: the kick below waits for room
                pg_store_release(&h.tp_status, TP_STATUS_SEND_REQUEST)
                self.head += 1
                if self.head == self.slots:
                    self.head = 0
                n += 1
            queued += n
            if n:
                # sends every queued slot without waiting for their completion
                if sendto(self.fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0 and errno != EAGAIN \
                        and errno != EINTR:
                    errors[0] += 1
            elif want:
                # the ring is full: wait until the kernel is done with what it holds
                if sendto(self.fd, NULL, 0, 0, NULL, 0) < 0 and errno != EINTR:
                    errors[0] += 1
            now = now_ns()
        # the last kicks may have failed (ENOBUFS): flush until nothing is pending (for at
        # most 2 s: an interface gone down keeps its frames)
        now = now_ns()
        while self._pending() and now_ns() - now < 2000000000ULL:
            if sendto(self.fd, NULL, 0, 0, NULL, 0) < 0 and errno != EINTR:
                errors[0] += 1
                sleep_ns(10000)
        return queued

    cdef bint _pending(self) noexcept nogil:
        cdef uint32_t i
        cdef tpacket2_hdr *h
        for i in range(self.slots):
            h = <tpacket2_hdr *> (self.ring + <size_t> i * self.slot_size)
            if pg_load_acquire(&h.tp_status) & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING):
                return True
        return False

    def stats(self):
        return {"ifname": self.ifname, "method": self.method, "batch": self.batch,
                "ring_slots": self.ring_slots, "rate_pps": self.rate_pps,
                "frames": int(self.nframes), "sent": int(self.sent),
                "bytes": int(self._bytes(self.sent)), "elapsed": self.elapsed,
                "pps": self.sent / self.elapsed if self.elapsed > 0 else 0.0,
                "send_errors": int(self.send_errors)}

    cdef uint64_t _bytes(self, uint64_t n):
        cdef uint64_t b = (n // self.nframes) * self.bytes_per_cycle
        cdef uint32_t i
        for i in range(n % self.nframes):
            b += self.lens[i]
        return b

    def __repr__(self):
        return f"<PacketGenerator {self.ifname} {self.method} {self.nframes} frames>"


cdef inline uint32_t _gcd_c(uint32_t a, uint32_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


def _gcd(a, b):
    return _gcd_c(a, b)


cdef class PacketSink:
    """PacketSink(ifname, *, ethertype=None, src=None, dst=None, expect=None,
    block_size=1 MiB, blocks=64, promisc=True)

    run(seconds) counts for that long (or until a signal interrupts it) and returns how
    many matching frames arrived meanwhile; counters accumulate over calls:
    frames/bytes (matching the marker: every given one of ethertype, src MAC, dst MAC;
    bytes as on the wire without FCS, a kernel-stripped 802.1Q tag counted), other
    (frames not matching), tagged (matching frames that carried an 802.1Q/802.1ad tag),
    and with `expect` (a list of frames): expected (matching frames equal to one of them,
    tag restored) and unexpected (the others; the first is kept in first_unexpected).
    first_ns/last_ns: CLOCK_MONOTONIC when the first and the last matching frame were
    read. kernel_stats(): the ring's own counters (drops = ring full).
    """
    cdef int fd, ifindex
    cdef readonly str ifname
    cdef uint8_t *ring
    cdef size_t ring_size
    cdef uint32_t block_size, blocks, block
    cdef int has_type, has_src, has_dst
    cdef uint8_t m_type[2]
    cdef uint8_t m_src[6]
    cdef uint8_t m_dst[6]
    cdef uint8_t *exp_data
    cdef uint32_t *exp_off
    cdef uint32_t *exp_len
    cdef uint32_t n_exp
    cdef uint8_t unexp_buf[MAX_FRAME + VLAN_HLEN]
    cdef uint32_t unexp_len
    cdef readonly uint64_t frames, bytes, other, tagged, expected, unexpected, blocks_read
    cdef readonly uint64_t first_ns, last_ns
    cdef uint64_t k_packets, k_drops, k_freezes

    def __cinit__(self):
        self.fd = -1
        self.ring = NULL
        self.exp_data = NULL
        self.exp_off = NULL
        self.exp_len = NULL

    def __init__(self, ifname, *, ethertype=None, src=None, dst=None, expect=None,
                 uint32_t block_size=1 << 20, uint32_t blocks=64, bint promisc=True,
                 int retire_ms=10):
        cdef int one = 1, version = TPACKET_V3, mtu
        cdef tpacket_req3 req
        cdef packet_mreq mreq
        cdef sockaddr_ll sll
        cdef void *mem
        cdef uint32_t off, i
        self.ifname = str(ifname)
        page = os.sysconf("SC_PAGE_SIZE")
        if block_size < page or block_size % page or blocks < 2:
            raise ValueError("block_size must be a multiple of the page size, blocks >= 2")
        self.has_type = ethertype is not None
        if self.has_type:
            et = int(ethertype)
            self.m_type[0] = (et >> 8) & 0xff
            self.m_type[1] = et & 0xff
        self.has_src = src is not None
        if self.has_src:
            m = _mac(src)
            memcpy(self.m_src, <const char *> m, 6)
        self.has_dst = dst is not None
        if self.has_dst:
            m = _mac(dst)
            memcpy(self.m_dst, <const char *> m, 6)
        if expect:
            expect = [bytes(f) for f in expect]
            total = sum(len(f) for f in expect)
            self.n_exp = len(expect)
            self.exp_data = <uint8_t *> malloc(total + 1)
            self.exp_off = <uint32_t *> malloc(self.n_exp * sizeof(uint32_t))
            self.exp_len = <uint32_t *> malloc(self.n_exp * sizeof(uint32_t))
            if self.exp_data == NULL or self.exp_off == NULL or self.exp_len == NULL:
                raise MemoryError()
            off = 0
            for i in range(self.n_exp):
                f = expect[i]
                memcpy(self.exp_data + off, <const char *> f, len(f))
                self.exp_off[i] = off
                self.exp_len[i] = len(f)
                off += len(f)
        self.fd = open_packet_socket(self.ifname, &self.ifindex, &mtu, ETH_P_ALL)
        self._setopt(SOL_PACKET, PACKET_VERSION, &version, sizeof(version), "PACKET_VERSION")
        if setsockopt(self.fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) != 0 \
                and errno != ENOPROTOOPT:
            raise OSError(errno, f"{self.ifname}: PACKET_IGNORE_OUTGOING: {os.strerror(errno)}")
        memset(&req, 0, sizeof(req))
        req.tp_block_size = block_size
        req.tp_block_nr = blocks
        req.tp_frame_size = 2048
        req.tp_frame_nr = (block_size // 2048) * blocks
        req.tp_retire_blk_tov = retire_ms
        self._setopt(SOL_PACKET, PACKET_RX_RING, &req, sizeof(req), "PACKET_RX_RING")
        self.ring_size = <size_t> block_size * blocks
        mem = mmap(NULL, self.ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
        if mem == MAP_FAILED:
            raise OSError(errno, f"{self.ifname}: mmap rx ring: {os.strerror(errno)}")
        self.ring = <uint8_t *> mem
        self.block_size = block_size
        self.blocks = blocks
        self.block = 0
        if promisc:
            memset(&mreq, 0, sizeof(mreq))
            mreq.mr_ifindex = self.ifindex
            mreq.mr_type = PACKET_MR_PROMISC
            self._setopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof(mreq), "promisc")
        memset(&sll, 0, sizeof(sll))
        sll.sll_family = AF_PACKET
        sll.sll_protocol = htons(ETH_P_ALL)
        sll.sll_ifindex = self.ifindex
        if bind(self.fd, <sockaddr *> &sll, sizeof(sll)) != 0:
            raise OSError(errno, f"{self.ifname}: bind: {os.strerror(errno)}")

    def __dealloc__(self):
        if self.ring != NULL:
            munmap(self.ring, self.ring_size)
        if self.fd >= 0:
            c_close(self.fd)
        free(self.exp_data)
        free(self.exp_off)
        free(self.exp_len)

    cdef _setopt(self, int level, int name, const void *val, unsigned int n, what):
        if setsockopt(self.fd, level, name, val, n) != 0:
            e = errno
            raise OSError(e, f"{self.ifname}: {what}: {os.strerror(e)}")

    def close(self):
        if self.fd >= 0:
            self._read_kernel_stats()
        if self.ring != NULL:
            munmap(self.ring, self.ring_size)
            self.ring = NULL
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1

    def fileno(self):
        return self.fd

    def send(self, frame, int count=1):
        """Send `frame` count times through the receive socket (no ring: a few frames,
        e.g. so that switches learn where this sink is). Returns how many went out."""
        cdef sockaddr_ll sll
        cdef int i, n = 0
        frame = bytes(frame)
        memset(&sll, 0, sizeof(sll))
        sll.sll_family = AF_PACKET
        sll.sll_ifindex = self.ifindex
        sll.sll_halen = 6
        for i in range(count):
            if sendto(self.fd, <const char *> frame, len(frame), 0, <sockaddr *> &sll,
                      sizeof(sll)) == <ssize_t> len(frame):
                n += 1
        return n

    def reset(self):
        """Forget the counts so far (frames in the ring that were not read yet are
        counted by the next run())."""
        self.frames = self.bytes = self.other = self.tagged = 0
        self.expected = self.unexpected = self.blocks_read = 0
        self.first_ns = self.last_ns = 0
        self.unexp_len = 0

    def drain(self):
        """Throw away what is waiting in the ring, uncounted."""
        cdef tpacket_block_desc *blk
        while True:
            blk = <tpacket_block_desc *> (self.ring + <size_t> self.block * self.block_size)
            if not (pg_load_acquire(&blk.hdr.bh1.block_status) & TP_STATUS_USER):
                return
            pg_store_release(&blk.hdr.bh1.block_status, TP_STATUS_KERNEL)
            self.block = (self.block + 1) % self.blocks

    def run(self, double seconds):
        """Count for `seconds` (returns early when a signal arrives); returns the number of
        matching frames counted by this call."""
        cdef uint64_t before = self.frames
        cdef uint64_t dur = <uint64_t> (seconds * 1e9) if seconds > 0 else 0
        cdef int r
        if self.ring == NULL:
            raise ValueError("sink closed")
        with nogil:
            r = self._run(dur)
        return self.frames - before

    cdef int _run(self, uint64_t dur) noexcept nogil:
        cdef uint64_t t0 = now_ns(), now = t0
        cdef tpacket_block_desc *blk
        cdef pollfd pfd
        cdef int left_ms, r
        pfd.fd = self.fd
        pfd.events = POLLIN
        while True:
            blk = <tpacket_block_desc *> (self.ring + <size_t> self.block * self.block_size)
            if pg_load_acquire(&blk.hdr.bh1.block_status) & TP_STATUS_USER:
                self._block(blk)
                pg_store_release(&blk.hdr.bh1.block_status, TP_STATUS_KERNEL)
                self.block += 1
                if self.block == self.blocks:
                    self.block = 0
                self.blocks_read += 1
                continue
            now = now_ns()
            if now - t0 >= dur:
                return 0
            left_ms = <int> ((dur - (now - t0)) // 1000000) + 1
            if left_ms > 20:
                left_ms = 20
            r = poll(&pfd, 1, left_ms)
            if r < 0 and errno == EINTR:
                return 1

    cdef void _block(self, tpacket_block_desc *blk) noexcept nogil:
        cdef uint32_t n = blk.hdr.bh1.num_pkts, i, tag, length
        cdef uint8_t *p = <uint8_t *> blk + blk.hdr.bh1.offset_to_first_pkt
        cdef tpacket3_hdr *h
        cdef sockaddr_ll *sll
        cdef uint8_t *f
        cdef size_t sll_off = TPACKET_ALIGN(sizeof(tpacket3_hdr))
        cdef uint64_t matched = 0
        for i in range(n):
            h = <tpacket3_hdr *> p
            p += h.tp_next_offset
            sll = <sockaddr_ll *> (<uint8_t *> h + sll_off)
            if sll.sll_pkttype == PACKET_OUTGOING:
                continue
            f = <uint8_t *> h + h.tp_mac
            length = h.tp_snaplen
            if length < ETH_HLEN:
                self.other += 1
                continue
            if ((self.has_type and (f[12] != self.m_type[0] or f[13] != self.m_type[1]))
                    or (self.has_src and memcmp(f + 6, self.m_src, 6) != 0)
                    or (self.has_dst and memcmp(f, self.m_dst, 6) != 0)):
                self.other += 1
                continue
            tag = VLAN_HLEN if h.tp_status & TP_STATUS_VLAN_VALID else 0
            matched += 1
            self.bytes += h.tp_len + tag
            if tag:
                self.tagged += 1
            if self.n_exp:
                self._check(h, f, length, tag)
        if matched:
            self.frames += matched
            self.last_ns = now_ns()
            if self.first_ns == 0:
                self.first_ns = self.last_ns

    cdef void _check(self, tpacket3_hdr *h, uint8_t *f, uint32_t length, uint32_t tag) noexcept nogil:
        cdef uint8_t buf[MAX_FRAME + VLAN_HLEN]
        cdef uint32_t k, tpid, tci
        cdef uint8_t *g = f
        if length != h.tp_len or length + tag > MAX_FRAME:
            self._unexpected(f, length)
            return
        if tag:
            tci = h.hv1.tp_vlan_tci & 0xffff
            tpid = h.hv1.tp_vlan_tpid if h.tp_status & TP_STATUS_VLAN_TPID_VALID else 0x8100
            memcpy(buf, f, 12)
            buf[12] = tpid >> 8
            buf[13] = tpid & 0xff
            buf[14] = tci >> 8
            buf[15] = tci & 0xff
            memcpy(buf + 16, f + 12, length - 12)
            g = buf
            length += tag
        for k in range(self.n_exp):
            if self.exp_len[k] == length and memcmp(self.exp_data + self.exp_off[k], g, length) == 0:
                self.expected += 1
                return
        self._unexpected(g, length)

    cdef void _unexpected(self, uint8_t *f, uint32_t length) noexcept nogil:
        self.unexpected += 1
        if self.unexp_len == 0 and length <= MAX_FRAME + VLAN_HLEN:
            memcpy(self.unexp_buf, f, length)
            self.unexp_len = length

    @property
    def first_unexpected(self):
        """The first matching frame that was none of the expected ones (bytes), or None."""
        if self.unexp_len == 0:
            return None
        return (<char *> self.unexp_buf)[:self.unexp_len]

    cdef _read_kernel_stats(self):
        cdef tpacket_stats_v3 st
        cdef socklen_t n = sizeof(st)
        if self.fd >= 0 and getsockopt(self.fd, SOL_PACKET, PACKET_STATISTICS, &st, &n) == 0:
            self.k_packets += st.tp_packets
            self.k_drops += st.tp_drops
            self.k_freezes += st.tp_freeze_q_cnt

    def kernel_stats(self):
        """The kernel's counters for this socket since it was opened: frames it saw
        (packets, every frame, not only matching ones, ring drops included), drops (ring
        full), freezes."""
        self._read_kernel_stats()
        return {"packets": int(self.k_packets), "drops": int(self.k_drops),
                "freezes": int(self.k_freezes)}

    def stats(self):
        k = self.kernel_stats()
        span = (self.last_ns - self.first_ns) / 1e9 if self.last_ns > self.first_ns else 0.0
        s = {"ifname": self.ifname, "frames": int(self.frames), "bytes": int(self.bytes),
             "other": int(self.other), "tagged": int(self.tagged), "span": span,
             "ring_drops": k["drops"], "kernel_packets": k["packets"]}
        if self.n_exp:
            s["expected"] = int(self.expected)
            s["unexpected"] = int(self.unexpected)
            u = self.first_unexpected
            if u is not None:
                s["first_unexpected"] = u.hex()
        return s

    def __repr__(self):
        return f"<PacketSink {self.ifname} {self.frames} frames>"


def _mac(value):
    if isinstance(value, (bytes, bytearray)):
        b = bytes(value)
    else:
        b = bytes(int(x, 16) for x in str(value).split(":"))
    if len(b) != 6:
        raise ValueError(f"bad MAC address {value!r}")
    return b
