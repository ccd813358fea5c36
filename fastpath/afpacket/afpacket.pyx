"""AF_PACKET interfaces: a Linux network interface as a pair of graph nodes.

AfPacketSocket owns two packet sockets bound to one interface:
- receive: a TPACKET_V3 ring. The kernel packs frames into blocks and hands a block
  over when it is full or after tp_retire_blk_tov (1 ms), so reading costs no syscall
  at all: AfPacketInput walks the ready blocks in memory and gives each block back
  as soon as all its frames are copied into pool buffers.
- transmit: a TPACKET_V2 ring on a second socket (bound with protocol 0, so it never
  receives). AfPacketOutput copies a vector's frames into free slots and kicks the
  kernel with one non-blocking sendto() per vector; PACKET_QDISC_BYPASS skips the
  qdisc layer, PACKET_LOSS makes the kernel skip (not stall on) a frame it rejects.

The kernel takes an 802.1Q/802.1ad outer tag out of the frame before packet sockets see
it (skb_vlan_untag on receive, or the NIC's VLAN stripping) and reports it in the frame
header (tp_vlan_tci, tp_vlan_tpid, TP_STATUS_VLAN_VALID / TP_STATUS_VLAN_TPID_VALID);
AfPacketInput puts it back into the frame bytes, so the graph sees the frame as sent.

Nothing here raises once running: an interface going down (ENETDOWN/ENXIO) is counted,
and traffic resumes when it comes back (the kernel re-hooks the receive socket on
NETDEV_UP by itself).
"""
from libc.errno cimport errno, EINTR, ENETDOWN, ENXIO, ENOPROTOOPT, EINVAL
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset, strncpy
from posix.unistd cimport close as c_close
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED

from fastpath.graph.buffer cimport BufferPool, BUF_HEADROOM, BUF_DATA
from fastpath.graph.node cimport Node

import os


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    enum:
        AF_PACKET
        SOCK_RAW
        SOCK_CLOEXEC
        SOCK_NONBLOCK
        SOL_SOCKET
        SOL_PACKET
        SO_ERROR
        SO_SNDBUF
        SO_SNDBUFFORCE
        MSG_DONTWAIT
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
    int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr, socklen_t len)

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<net/if.h>" nogil:
    enum:
        IFNAMSIZ
    unsigned int if_nametoindex(const char *name)
    struct ifreq:
        char ifr_name[16]
        int ifr_mtu

cdef extern from "<linux/sockios.h>" nogil:
    enum:
        SIOCGIFMTU

cdef extern from "<linux/if_ether.h>" nogil:
    enum:
        ETH_P_ALL

cdef extern from "<linux/if_packet.h>" nogil:
    enum:
        PACKET_ADD_MEMBERSHIP
        PACKET_RX_RING
        PACKET_TX_RING
        PACKET_STATISTICS
        PACKET_VERSION
        PACKET_LOSS
        PACKET_FANOUT
        PACKET_QDISC_BYPASS
        PACKET_IGNORE_OUTGOING
        PACKET_FANOUT_HASH
        PACKET_FANOUT_FLAG_DEFRAG
        PACKET_MR_PROMISC
        PACKET_OUTGOING
        TPACKET_V2
        TPACKET_V3
        TP_STATUS_KERNEL
        TP_STATUS_USER
        TP_STATUS_VLAN_VALID
        TP_STATUS_VLAN_TPID_VALID
        TP_STATUS_AVAILABLE
        TP_STATUS_SEND_REQUEST
        TP_STATUS_SENDING
    size_t TPACKET_ALIGN(size_t)

    struct sockaddr_ll:
        unsigned short sll_family
        uint16_t sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]

    struct tpacket_req:
        unsigned int tp_block_size, tp_block_nr, tp_frame_size, tp_frame_nr

    struct tpacket_req3:
        unsigned int tp_block_size, tp_block_nr, tp_frame_size, tp_frame_nr
        unsigned int tp_retire_blk_tov, tp_sizeof_priv, tp_feature_req_word

    struct packet_mreq:
        int mr_ifindex
        unsigned short mr_type
        unsigned short mr_alen
        unsigned char mr_address[8]

    struct tpacket_stats_v3:
        unsigned int tp_packets, tp_drops, tp_freeze_q_cnt

    struct tpacket_hdr_variant1:
        uint32_t tp_rxhash
        uint32_t tp_vlan_tci
        uint16_t tp_vlan_tpid

    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        uint16_t tp_net
        tpacket_hdr_variant1 hv1

    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt

    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1

    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr

    struct tpacket2_hdr:
        uint32_t tp_status
        uint32_t tp_len
        uint32_t tp_snaplen
        uint16_t tp_mac
        uint16_t tp_net

cdef extern from *:
    """
    /* Ring slots are shared with the kernel: read a status before the data it guards,
       write the data before the status that publishes it. */
    static inline unsigned int fp_load_acquire(const unsigned int *p)
    { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void fp_store_release(unsigned int *p, unsigned int v)
    { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    """
    uint32_t fp_load_acquire(const uint32_t *p) nogil
    void fp_store_release(uint32_t *p, uint32_t v) nogil

cdef enum:
    ETH_HLEN = 14
    VLAN_HLEN = 4
    ETH_P_8021Q = 0x8100
    # PACKET_FANOUT_FLAG_IGNORE_OUTGOING (recent kernels; older headers lack it): the
    # group's own hook skips outgoing frames. A fanout member's PACKET_IGNORE_OUTGOING
    # does not apply (the group hook replaces the socket's), so without this flag group
    # members see outgoing frames; sll_pkttype catches them then.
    FANOUT_FLAG_IGNORE_OUTGOING = 0x4000
    RX_RETIRE_MS = 1           # a partly filled block is handed over after 1 ms
    RX_NOMINAL_FRAME = 2048    # V3 frames are variable-sized; the kernel only wants a divisor
    ERROR_CHECK_EVERY = 64     # empty polls between two SO_ERROR reads (see AfPacketInput)


cdef inline uint32_t tx_data_offset() noexcept nogil:
    # TPACKET_V2 TX without PACKET_TX_HAS_OFF: the frame follows the aligned header
    return <uint32_t> TPACKET_ALIGN(sizeof(tpacket2_hdr))


cdef inline tpacket_block_desc *rx_block_at(AfPacketSocket s, uint32_t i) noexcept nogil:
    return <tpacket_block_desc *> (s.rx_ring + <size_t> i * s.rx_block_size)


cdef inline tpacket2_hdr *tx_slot_at(AfPacketSocket s, uint32_t i) noexcept nogil:
    return <tpacket2_hdr *> (s.tx_ring + <size_t> i * s.tx_frame_size)


cdef class AfPacketSocket:
    """An interface opened for the dataplane: a TPACKET_V3 receive ring and a
    TPACKET_V2 transmit ring, promiscuous, optionally in a PACKET_FANOUT group.

    rx_block_size * rx_blocks is the receive ring, default 64 KiB x 256 = 16 MiB. Many
    small blocks rather than a few big ones: under load a block (~400 minimum-size or
    ~40 full-size frames) fills long before the 1 ms timer, but with sparse traffic the
    timer closes a block per frame, so a stalled dispatcher can be absorbed for only
    about rx_blocks frames. tx_frames slots of tx_frame_size bytes form the transmit
    ring (default 1024 x 4 KiB: a slot holds any BUF_DATA-sized frame).
    Create it inside the network namespace of the interface; the sockets stay there.
    """

    def __cinit__(self):
        self.rx_fd = -1
        self.tx_fd = -1
        self.rx_ring = NULL
        self.tx_ring = NULL

    def __init__(self, ifname, *, fanout_group=None, bint promisc=True,
                 uint32_t rx_block_size=1 << 16, uint32_t rx_blocks=256,
                 uint32_t tx_frame_size=1 << 12, uint32_t tx_frames=1024,
                 bint qdisc_bypass=True, bint rx=True):
        page = os.sysconf("SC_PAGE_SIZE")
        if rx_block_size < page or rx_block_size % page or rx_block_size % RX_NOMINAL_FRAME:
            raise ValueError(f"rx_block_size must be a multiple of the page size ({page})")
        if rx_blocks < 2:
            raise ValueError("rx_blocks must be at least 2")
        if tx_frame_size < 256 or tx_frame_size > 1 << 16 or tx_frame_size & (tx_frame_size - 1):
            raise ValueError("tx_frame_size must be a power of two in [256, 65536]")
        if tx_frames < 1:
            raise ValueError("tx_frames must be at least 1")
        if fanout_group is not None and not 0 <= fanout_group <= 0xffff:
            raise ValueError("fanout_group must be in [0, 65535]")
        self.ifname = str(ifname)
        name = self.ifname.encode()
        self.ifindex = if_nametoindex(name)
        if self.ifindex == 0:
            self._fail("no such interface")
        self.fanout_group = fanout_group
        try:
            if rx:        # rx=False: a send-only socket (a worker that only transmits here)
                self._open_rx(rx_block_size, rx_blocks, promisc, fanout_group)
            self._open_tx(tx_frame_size, tx_frames, qdisc_bypass, page)
            self.refresh_mtu()
        except BaseException:
            self._close()
            raise

    def __dealloc__(self):
        self._close()

    # ---- setup (control plane) ----

    cdef _fail(self, what):
        e = errno
        raise OSError(e, f"{self.ifname}: {what}: {os.strerror(e)}")

    cdef _setopt(self, int fd, int level, int name, const void *val, unsigned int n, what):
        if setsockopt(fd, level, name, val, n) != 0:
            self._fail(what)

    cdef _bind(self, int fd, uint16_t proto):
        cdef sockaddr_ll sll
        memset(&sll, 0, sizeof(sll))
        sll.sll_family = AF_PACKET
        sll.sll_protocol = htons(proto)
        sll.sll_ifindex = self.ifindex
        if bind(fd, <sockaddr *> &sll, sizeof(sll)) != 0:
            self._fail("bind")

    cdef _open_rx(self, uint32_t block_size, uint32_t blocks, bint promisc, fanout_group):
        cdef int one = 1, version = TPACKET_V3, fanout
        cdef tpacket_req3 req
        cdef packet_mreq mreq
        cdef void *ring
        # protocol 0: nothing is queued to the socket before the ring exists
        self.rx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)
        if self.rx_fd < 0:
            self._fail("socket")
        self._setopt(self.rx_fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version),
                     "PACKET_VERSION")
        # Frames this host sends out of the interface (ours included) are not input.
        # Kernels before 4.20 lack the option; sll_pkttype is checked on every frame anyway.
        self.ignores_outgoing = setsockopt(self.rx_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING,
                                           &one, sizeof(one)) == 0
        if not self.ignores_outgoing and errno != ENOPROTOOPT:
            self._fail("PACKET_IGNORE_OUTGOING")
        # no PACKET_AUXDATA: it only applies to recvmsg(); ring frame headers carry the
        # same VLAN fields
        memset(&req, 0, sizeof(req))
        req.tp_block_size = block_size
        req.tp_block_nr = blocks
        req.tp_frame_size = RX_NOMINAL_FRAME
        req.tp_frame_nr = (block_size // RX_NOMINAL_FRAME) * blocks
        req.tp_retire_blk_tov = RX_RETIRE_MS
        self._setopt(self.rx_fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req), "PACKET_RX_RING")
        self.rx_ring_size = <size_t> block_size * blocks
        ring = mmap(NULL, self.rx_ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.rx_fd, 0)
        if ring == MAP_FAILED:
            self._fail("mmap rx ring")
        self.rx_ring = <uint8_t *> ring
        self.rx_block_size = block_size
        self.rx_blocks = blocks
        self.rx_block = 0
        self.rx_left = 0
        self.rx_next = NULL
        if promisc:
            memset(&mreq, 0, sizeof(mreq))
            mreq.mr_ifindex = self.ifindex
            mreq.mr_type = PACKET_MR_PROMISC
            self._setopt(self.rx_fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, sizeof(mreq),
                         "PACKET_ADD_MEMBERSHIP promisc")
        self._bind(self.rx_fd, ETH_P_ALL)
        if fanout_group is not None:
            fanout = <int> fanout_group | ((PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG |
                                            FANOUT_FLAG_IGNORE_OUTGOING) << 16)
            if setsockopt(self.rx_fd, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout)) != 0:
                if errno != EINVAL:
                    self._fail("PACKET_FANOUT")
                # a kernel without the ignore-outgoing flag: join without it
                fanout &= ~(FANOUT_FLAG_IGNORE_OUTGOING << 16)
                self._setopt(self.rx_fd, SOL_PACKET, PACKET_FANOUT, &fanout, sizeof(fanout),
                             "PACKET_FANOUT")
                self.ignores_outgoing = False

    cdef _open_tx(self, uint32_t frame_size, uint32_t frames, bint qdisc_bypass, long page):
        cdef int one = 1, version = TPACKET_V2, sndbuf
        cdef tpacket_req req
        cdef void *ring
        cdef uint32_t block_size = frame_size if frame_size > page else <uint32_t> page
        cdef uint32_t per_block = block_size // frame_size
        frames = (frames + per_block - 1) // per_block * per_block
        self.tx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)
        if self.tx_fd < 0:
            self._fail("socket")
        self._setopt(self.tx_fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version),
                     "PACKET_VERSION")
        # a frame the kernel rejects (e.g. over the MTU) is skipped, not left to block the ring
        self._setopt(self.tx_fd, SOL_PACKET, PACKET_LOSS, &one, sizeof(one), "PACKET_LOSS")
        if qdisc_bypass:
            self._setopt(self.tx_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one),
                         "PACKET_QDISC_BYPASS")
        # Every frame in flight is charged to the send buffer; let the whole ring be in
        # flight so a kick is not refused (EAGAIN) while slots are free.
        sndbuf = <int> min(<uint64_t> frame_size * frames * 2, <uint64_t> 1 << 30)
        if setsockopt(self.tx_fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) != 0:
            setsockopt(self.tx_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf))
        memset(&req, 0, sizeof(req))
        req.tp_block_size = block_size
        req.tp_block_nr = frames // per_block
        req.tp_frame_size = frame_size
        req.tp_frame_nr = frames
        self._setopt(self.tx_fd, SOL_PACKET, PACKET_TX_RING, &req, sizeof(req), "PACKET_TX_RING")
        self.tx_ring_size = <size_t> block_size * req.tp_block_nr
        ring = mmap(NULL, self.tx_ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.tx_fd, 0)
        if ring == MAP_FAILED:
            self._fail("mmap tx ring")
        self.tx_ring = <uint8_t *> ring
        self.tx_frame_size = frame_size
        self.tx_frames = frames
        self.tx_head = 0
        self.tx_slot_data = frame_size - tx_data_offset()
        # protocol 0: the socket only sends. (Bound to ETH_P_ALL it would also get a copy
        # of every received frame in its socket queue.)
        self._bind(self.tx_fd, 0)

    def refresh_mtu(self):
        """Re-read the interface MTU (call after changing it): the kernel drops frames
        longer than MTU + 14 (+ 4 when 802.1Q-tagged) without telling the sender, so
        AfPacketOutput counts them itself against this limit."""
        cdef ifreq ifr
        if self.tx_fd < 0:
            return self.mtu
        memset(&ifr, 0, sizeof(ifr))
        strncpy(ifr.ifr_name, self.ifname.encode(), IFNAMSIZ - 1)
        if ioctl(self.tx_fd, SIOCGIFMTU, &ifr) != 0:
            self._fail("SIOCGIFMTU")
        self.mtu = ifr.ifr_mtu
        self.tx_max_len = <uint32_t> min(self.mtu + ETH_HLEN, 0xffff)
        return self.mtu

    # ---- teardown ----

    cdef void _close(self) noexcept nogil:
        if self.rx_ring != NULL:
            munmap(self.rx_ring, self.rx_ring_size)
            self.rx_ring = NULL
        if self.tx_ring != NULL:
            munmap(self.tx_ring, self.tx_ring_size)
            self.tx_ring = NULL
        if self.rx_fd >= 0:
            c_close(self.rx_fd)
            self.rx_fd = -1
        if self.tx_fd >= 0:
            c_close(self.tx_fd)
            self.tx_fd = -1
        self.rx_left = 0
        self.rx_next = NULL

    def close(self):
        """Unmap the rings and close the sockets; safe to call again. Nodes using the
        socket keep working: the input returns nothing, the output counts tx_no_socket."""
        if self.rx_fd >= 0:
            self._read_kernel_stats()
        self._close()

    @property
    def closed(self):
        return self.rx_fd < 0 and self.tx_fd < 0

    def fileno(self):
        """The receive socket: readable when a ring block is ready."""
        return self.rx_fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- fast-path helpers ----

    cdef uint32_t reclaim_tx(self, uint64_t *nbytes) noexcept nogil:
        """Take back the frames queued but not yet taken by the kernel (SEND_REQUEST) and
        rewind tx_head to the oldest of them. They form a run ending just before tx_head
        and starting at the kernel's own cursor, so walking back from tx_head finds them
        and leaves both cursors on the same slot. Only safe when the kernel is not walking
        the ring, i.e. right after a sendto() on this thread failed before sending."""
        cdef uint32_t i = self.tx_head, j, n = 0
        cdef tpacket2_hdr *h
        nbytes[0] = 0
        while n < self.tx_frames:
            j = (i if i else self.tx_frames) - 1
            h = tx_slot_at(self, j)
            if fp_load_acquire(&h.tp_status) != TP_STATUS_SEND_REQUEST:
                break
            nbytes[0] += h.tp_len
            fp_store_release(&h.tp_status, TP_STATUS_AVAILABLE)
            i = j
            n += 1
        self.tx_head = i
        return n

    cdef void rx_release(self) noexcept nogil:
        """Give the block being read back to the kernel and move on to the next one."""
        cdef tpacket_block_desc *blk = rx_block_at(self, self.rx_block)
        fp_store_release(&blk.hdr.bh1.block_status, TP_STATUS_KERNEL)
        self.rx_block += 1
        if self.rx_block == self.rx_blocks:
            self.rx_block = 0
        self.rx_left = 0
        self.rx_next = NULL

    cdef int take_error(self) noexcept nogil:
        """Read and clear the receive socket's pending error (ENETDOWN when the interface
        went down). A pending error keeps poll() returning POLLERR, which would keep an
        idle dispatcher from sleeping."""
        cdef int err = 0
        cdef socklen_t n = sizeof(err)
        if self.rx_fd < 0 or getsockopt(self.rx_fd, SOL_SOCKET, SO_ERROR, &err, &n) != 0:
            return 0
        return err

    cdef _read_kernel_stats(self):
        cdef tpacket_stats_v3 st
        cdef socklen_t n = sizeof(st)
        if self.rx_fd >= 0 and getsockopt(self.rx_fd, SOL_PACKET, PACKET_STATISTICS, &st, &n) == 0:
            self.k_packets += st.tp_packets
            self.k_drops += st.tp_drops
            self.k_freezes += st.tp_freeze_q_cnt

    def kernel_stats(self):
        """The kernel's receive counters since the socket was opened: frames it saw
        (packets), frames lost because the ring was full (drops), and how often the ring
        filled up (freezes)."""
        self._read_kernel_stats()
        return {"packets": self.k_packets, "drops": self.k_drops, "freezes": self.k_freezes}

    def __repr__(self):
        state = "closed" if self.rx_fd < 0 else f"fd {self.rx_fd}/{self.tx_fd}"
        return f"<AfPacketSocket {self.ifname} ifindex {self.ifindex} {state}>"


cdef class AfPacketInput(Node):
    """Receives from an AfPacketSocket's ring into pool buffers (input node).

    Per poll: up to `room` frames from the ready blocks, in order; a block goes back to
    the kernel as soon as its last frame is copied, and a block left half-read keeps
    its place for the next poll. Frames that do not make it into the graph are counted:
    rx_too_big (longer than a buffer, with the restored tag), rx_no_buffer (pool empty),
    rx_runt (shorter than an Ethernet header). rx_outgoing_skipped counts frames this
    host sent out of the interface, which the kernel showed despite the filter.
    """
    input = True

    def __init__(self, name, AfPacketSocket sock, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self.sock = sock
        self.sw_if_index = sw_if_index

    def fileno(self):
        return self.sock.rx_fd

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        cdef tpacket_block_desc *blk
        cdef tpacket3_hdr *h
        cdef sockaddr_ll *sll
        cdef uint8_t *src
        cdef uint8_t *dst
        cdef uint32_t status, length, tag, tci, tpid, b
        cdef int got = 0, want, have, used, i
        cdef size_t sll_off = TPACKET_ALIGN(sizeof(tpacket3_hdr))
        if self.sock.rx_ring == NULL:
            return 0
        while got < room:
            if self.sock.rx_left == 0:
                # open the next block if the kernel has handed it over
                blk = rx_block_at(self.sock, self.sock.rx_block)
                if not (fp_load_acquire(&blk.hdr.bh1.block_status) & TP_STATUS_USER):
                    break
                self.sock.rx_left = blk.hdr.bh1.num_pkts
                self.sock.rx_next = <uint8_t *> blk + blk.hdr.bh1.offset_to_first_pkt
                if self.sock.rx_left == 0:
                    self.sock.rx_release()
                continue
            want = room - got
            if <uint32_t> want > self.sock.rx_left:
                want = self.sock.rx_left
            have = self.pool.alloc(bufs + got, want)   # fewer when the pool runs dry
            used = 0
            for i in range(want):
                h = <tpacket3_hdr *> self.sock.rx_next
                self.sock.rx_next += h.tp_next_offset
                self.sock.rx_left -= 1
                sll = <sockaddr_ll *> (<uint8_t *> h + sll_off)
                if sll.sll_pkttype == PACKET_OUTGOING:
                    self.rx_outgoing_skipped += 1
                    continue
                status = h.tp_status
                length = h.tp_snaplen
                tag = VLAN_HLEN if status & TP_STATUS_VLAN_VALID else 0
                if length < ETH_HLEN:
                    self.rx_runt += 1
                    continue
                # snaplen < len: the ring itself had to cut the frame
                if length != h.tp_len or length + tag > BUF_DATA:
                    self.rx_too_big += 1
                    continue
                if used == have:
                    self.rx_no_buffer += 1
                    continue
                b = bufs[got + used]
                used += 1
                src = <uint8_t *> h + h.tp_mac
                if tag:
                    # the kernel took the outer tag out of the frame: put it back after
                    # the MAC addresses (4 bytes into the headroom, as a tag push does)
                    tci = h.hv1.tp_vlan_tci & 0xffff
                    tpid = ETH_P_8021Q
                    if status & TP_STATUS_VLAN_TPID_VALID:
                        tpid = h.hv1.tp_vlan_tpid
                    self.pool.offset[b] = BUF_HEADROOM - VLAN_HLEN
                    dst = self.pool.frame(b)
                    memcpy(dst, src, 12)
                    dst[12] = tpid >> 8
                    dst[13] = tpid & 0xff
                    dst[14] = tci >> 8
                    dst[15] = tci & 0xff
                    memcpy(dst + 16, src + 12, length - 12)
                    self.rx_vlan_restored += 1
                else:
                    memcpy(self.pool.frame(b), src, length)
                self.pool.length[b] = length + tag
                self.pool.rx_if[b] = self.sw_if_index
                self.pool.next[b] = 1
                self.rx_bytes += length + tag
            if used < have:
                self.pool.free(bufs + got + used, have - used)
            got += used
            if self.sock.rx_left == 0:
                self.sock.rx_release()
        if got:
            self.rx_packets += got
            self.empty_polls = 0
        else:
            # While the interface is down the socket holds ENETDOWN, which makes poll()
            # report POLLERR until it is read: clear it now and then so an idle dispatcher
            # can sleep on fileno(). Once per ERROR_CHECK_EVERY empty polls costs nothing
            # while traffic flows.
            self.empty_polls += 1
            if self.empty_polls % ERROR_CHECK_EVERY == 0 and self.sock.take_error() != 0:
                self.rx_link_down += 1
        return got

    def stats(self):
        """rx_drops counts every frame the interface received that did not enter the
        graph: the node's drops and the kernel's (ring full, rx_ring_full)."""
        ring_full = self.sock.kernel_stats()["drops"]
        node_drops = self.rx_too_big + self.rx_no_buffer + self.rx_runt
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                "rx_drops": node_drops + ring_full,
                "rx_too_big": self.rx_too_big, "rx_no_buffer": self.rx_no_buffer,
                "rx_runt": self.rx_runt, "rx_ring_full": ring_full,
                "rx_vlan_restored": self.rx_vlan_restored,
                "rx_outgoing_skipped": self.rx_outgoing_skipped,
                "rx_link_down": self.rx_link_down}

    def clear_stats(self):
        self.rx_packets = self.rx_bytes = self.rx_too_big = self.rx_no_buffer = 0
        self.rx_runt = self.rx_vlan_restored = self.rx_outgoing_skipped = self.rx_link_down = 0

    def format_trace(self, uint32_t b):
        return f"{self.sock.ifname}: rx len {self.pool.length[b]} -> {self.next_names[1]}"


cdef class AfPacketOutput(Node):
    """Transmits each frame of a vector through an AfPacketSocket's ring (sink node).

    Frames are copied into free slots, then one sendto() per vector has the kernel send
    them all. A full ring is kicked (once while that frees slots) before the frame is
    dropped. Counted drops: tx_too_big (over the slot size or the interface MTU),
    tx_ring_full, tx_link_down (the interface was down: frames queued in the ring are
    taken back rather than sent stale when it comes up), tx_no_socket (socket closed).
    tx_kick_errors counts other sendto() failures (e.g. the device queue full); the
    frames stay queued and go out with the next kick.
    """
    sink = True

    def __init__(self, name, AfPacketSocket sock, int sw_if_index):
        super().__init__(name)
        self.sock = sock
        self.sw_if_index = sw_if_index

    cdef void kick(self) noexcept nogil:
        cdef uint64_t nbytes
        cdef uint32_t n
        cdef int tries = 0
        self.tx_kicks += 1
        while sendto(self.sock.tx_fd, NULL, 0, MSG_DONTWAIT, NULL, 0) < 0:
            if errno == EINTR and tries == 0:
                tries += 1
                continue
            if errno == ENETDOWN or errno == ENXIO:
                n = self.sock.reclaim_tx(&nbytes)
                self.tx_link_down += n
                self.tx_packets -= n
                self.tx_bytes -= nbytes
            else:
                self.tx_kick_errors += 1
            return

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef tpacket2_hdr *h
        cdef uint8_t *src
        cdef uint32_t b, length, limit, data_off = tx_data_offset()
        cdef int i, pending = 0
        cdef bint kick_helps = True
        if self.sock.tx_ring == NULL:
            self.tx_no_socket += n
            self.pool.free(bufs, n)
            return 0
        for i in range(n):
            b = bufs[i]
            length = self.pool.length[b]
            src = self.pool.frame(b)
            limit = self.sock.tx_max_len
            if length >= ETH_HLEN and src[12] == 0x81 and src[13] == 0x00:
                limit += VLAN_HLEN      # the kernel lets an 802.1Q tag exceed the MTU
            if limit > self.sock.tx_slot_data:
                limit = self.sock.tx_slot_data
            if length > limit:
                self.tx_too_big += 1
                continue
            h = tx_slot_at(self.sock, self.sock.tx_head)
            if fp_load_acquire(&h.tp_status) & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING):
                # ring full: have the kernel send what is queued, unless that just failed
                if not kick_helps:
                    self.tx_ring_full += 1
                    continue
                self.kick()
                pending = 0
                h = tx_slot_at(self.sock, self.sock.tx_head)
                if fp_load_acquire(&h.tp_status) & (TP_STATUS_SEND_REQUEST | TP_STATUS_SENDING):
                    kick_helps = False
                    self.tx_ring_full += 1
                    continue
            memcpy(<uint8_t *> h + data_off, src, length)
            h.tp_len = length
            fp_store_release(&h.tp_status, TP_STATUS_SEND_REQUEST)
            self.sock.tx_head += 1
            if self.sock.tx_head == self.sock.tx_frames:
                self.sock.tx_head = 0
            pending += 1
            self.tx_packets += 1
            self.tx_bytes += length
        if pending:
            self.kick()
        self.pool.free(bufs, n)
        return 0

    def stats(self):
        return {"tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
                "tx_drops": self.tx_too_big + self.tx_ring_full + self.tx_link_down
                            + self.tx_no_socket,
                "tx_too_big": self.tx_too_big, "tx_ring_full": self.tx_ring_full,
                "tx_link_down": self.tx_link_down, "tx_no_socket": self.tx_no_socket,
                "tx_kicks": self.tx_kicks, "tx_kick_errors": self.tx_kick_errors}

    def clear_stats(self):
        self.tx_packets = self.tx_bytes = self.tx_too_big = self.tx_ring_full = 0
        self.tx_link_down = self.tx_no_socket = self.tx_kicks = self.tx_kick_errors = 0

    def format_trace(self, uint32_t b):
        return f"{self.sock.ifname}: tx len {self.pool.length[b]}"
