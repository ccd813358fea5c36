"""AF_PACKET interfaces: a Linux network interface as a pair of graph nodes.

AfPacketSocket owns three packet sockets bound to one interface, all with
PACKET_VNET_HDR, so every frame travels with a virtio_net_hdr: a frame whose TCP/UDP
checksum the sender left to offload (CHECKSUM_PARTIAL, what a veth hands over with the
kernel's default offloads) and a TCP super-frame (GSO) keep that state through the graph
(fastpath/nodes/offload.pxd) and leave the same way, or are finished in software by
interface-output and gso for a port that cannot take them.
- receive: a TPACKET_V2 ring of 2 KiB slots. The kernel marks each slot ready on its own
  and wakes a sleeping dispatcher per frame, so a lone frame is read within microseconds
  (TPACKET_V3 holds it until its block retires, 1 ms). A frame larger than a slot (a
  jumbo frame, a GSO super-frame of up to 64 KiB) comes with TP_STATUS_COPY: the slot
  has its head, and PACKET_COPY_THRESH queued the whole frame on the socket, where one
  recv() takes it into a big buffer.
- transmit: a TPACKET_V2 ring on a second socket (bound with protocol 0, so it never
  receives). AfPacketOutput copies a vector's frames into free slots and kicks the
  kernel with one non-blocking sendto() per vector; PACKET_QDISC_BYPASS skips the
  qdisc layer, PACKET_LOSS makes the kernel skip (not stall on) a frame it rejects.
  A frame larger than a slot goes out through the third socket, after a kick, so order
  is kept.

The kernel takes an 802.1Q/802.1ad outer tag out of the frame before packet sockets see
it (skb_vlan_untag on receive, or the NIC's VLAN stripping) and reports it in the frame
header (tp_vlan_tci, tp_vlan_tpid, TP_STATUS_VLAN_VALID / TP_STATUS_VLAN_TPID_VALID);
AfPacketInput puts it back into the frame bytes, so the graph sees the frame as sent.

Nothing here raises once running: an interface going down (ENETDOWN/ENXIO) is counted,
and traffic resumes when it comes back (the kernel re-hooks the receive socket on
NETDEV_UP by itself). A virtio_net_hdr whose offsets do not fit its frame is a counted
drop (rx_bad_offload).
"""
from libc.errno cimport errno, EINTR, ENETDOWN, ENXIO, ENOPROTOOPT, EINVAL
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove, memset, strncpy
from posix.unistd cimport close as c_close
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED

from fastpath.graph.buffer cimport BufferPool, BUF_HEADROOM, BUF_DATA, BIG_DATA, OL_GSO
from fastpath.graph.node cimport Node
from fastpath.nodes.offload cimport (virtio_net_hdr, VNET_HDR_LEN, VNET_OK, VNET_BAD,
                                     vnet_to_meta, meta_to_vnet, l3_offset)

import os


from fastpath.afpacket.linux cimport *

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
    RX_BLOCK = 1 << 16         # the ring's slots come in blocks of 64 KiB
    BIG_RCVBUF = 16 << 20      # room for whole frames larger than a slot, queued on the socket
    ERROR_CHECK_EVERY = 64     # empty polls between two SO_ERROR reads (see AfPacketInput)


cdef inline uint32_t tx_data_offset() noexcept nogil:
    # TPACKET_V2 TX without PACKET_TX_HAS_OFF: the virtio_net_hdr and then the frame follow
    # the aligned header
    return <uint32_t> TPACKET_ALIGN(sizeof(tpacket2_hdr))


cdef inline tpacket2_hdr *rx_slot_at(AfPacketSocket s, uint32_t i) noexcept nogil:
    # slots never straddle a block: RX_BLOCK is a multiple of rx_frame_size
    return <tpacket2_hdr *> (s.rx_ring + <size_t> i * s.rx_frame_size)


cdef inline tpacket2_hdr *tx_slot_at(AfPacketSocket s, uint32_t i) noexcept nogil:
    return <tpacket2_hdr *> (s.tx_ring + <size_t> i * s.tx_frame_size)


cdef class AfPacketSocket:
    """An interface opened for the dataplane: a TPACKET_V2 receive ring, a TPACKET_V2
    transmit ring and a plain socket for frames larger than a slot, all with
    PACKET_VNET_HDR; promiscuous, optionally in a PACKET_FANOUT group.

    rx_frames slots of rx_frame_size bytes form the receive ring, default 8192 x 2 KiB =
    16 MiB: a slot holds a frame up to about 1950 bytes; larger ones arrive whole through
    the socket's queue (up to BIG_RCVBUF in flight). tx_frames slots of tx_frame_size
    bytes form the transmit ring (default 1024 x 4 KiB).
    Create it inside the network namespace of the interface; the sockets stay there.
    """

    def __cinit__(self):
        self.rx_fd = -1
        self.tx_fd = -1
        self.big_fd = -1
        self.rx_ring = NULL
        self.tx_ring = NULL

    def __init__(self, ifname, *, fanout_group=None, bint promisc=True,
                 uint32_t rx_frame_size=1 << 11, uint32_t rx_frames=8192,
                 uint32_t tx_frame_size=1 << 12, uint32_t tx_frames=1024,
                 bint qdisc_bypass=True, bint rx=True):
        page = os.sysconf("SC_PAGE_SIZE")
        if rx_frame_size < 512 or rx_frame_size > RX_BLOCK or rx_frame_size & (rx_frame_size - 1):
            raise ValueError(f"rx_frame_size must be a power of two in [512, {RX_BLOCK}]")
        if rx_frames < 2:
            raise ValueError("rx_frames must be at least 2")
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
                self._open_rx(rx_frame_size, rx_frames, promisc, fanout_group, page)
            self._open_tx(tx_frame_size, tx_frames, qdisc_bypass, page)
            self._open_big(qdisc_bypass)
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

    cdef _open_rx(self, uint32_t frame_size, uint32_t frames, bint promisc, fanout_group, long page):
        cdef int one = 1, version = TPACKET_V2, fanout, rcvbuf = BIG_RCVBUF
        cdef uint32_t block = RX_BLOCK if RX_BLOCK >= page else <uint32_t> page
        cdef uint32_t per_block = block // frame_size
        cdef tpacket_req req
        cdef packet_mreq mreq
        cdef void *ring
        frames = (frames + per_block - 1) // per_block * per_block
        # protocol 0: nothing is queued to the socket before the ring exists
        self.rx_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)
        if self.rx_fd < 0:
            self._fail("socket")
        self._setopt(self.rx_fd, SOL_PACKET, PACKET_VERSION, &version, sizeof(version),
                     "PACKET_VERSION")
        # before the ring: the kernel refuses it once a ring exists
        self._setopt(self.rx_fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one), "PACKET_VNET_HDR")
        # a frame larger than a slot is also queued whole on the socket (TP_STATUS_COPY)
        self._setopt(self.rx_fd, SOL_PACKET, PACKET_COPY_THRESH, &one, sizeof(one),
                     "PACKET_COPY_THRESH")
        if setsockopt(self.rx_fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf)) != 0:
            setsockopt(self.rx_fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf))
        # Frames this host sends out of the interface (ours included) are not input.
        # Kernels before 4.20 lack the option; sll_pkttype is checked on every frame anyway.
        self.ignores_outgoing = setsockopt(self.rx_fd, SOL_PACKET, PACKET_IGNORE_OUTGOING,
                                           &one, sizeof(one)) == 0
        if not self.ignores_outgoing and errno != ENOPROTOOPT:
            self._fail("PACKET_IGNORE_OUTGOING")
        memset(&req, 0, sizeof(req))
        req.tp_block_size = block
        req.tp_block_nr = frames // per_block
        req.tp_frame_size = frame_size
        req.tp_frame_nr = frames
        self._setopt(self.rx_fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req), "PACKET_RX_RING")
        self.rx_ring_size = <size_t> block * req.tp_block_nr
        ring = mmap(NULL, self.rx_ring_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.rx_fd, 0)
        if ring == MAP_FAILED:
            self._fail("mmap rx ring")
        self.rx_ring = <uint8_t *> ring
        self.rx_frame_size = frame_size
        self.rx_frames = frames
        self.rx_block_size = block
        self.rx_head = 0
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
        self._setopt(self.tx_fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one), "PACKET_VNET_HDR")
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
        self.tx_slot_data = frame_size - tx_data_offset() - VNET_HDR_LEN
        # protocol 0: the socket only sends. (Bound to ETH_P_ALL it would also get a copy
        # of every received frame in its socket queue.)
        self._bind(self.tx_fd, 0)

    cdef _open_big(self, bint qdisc_bypass):
        cdef int one = 1, sndbuf = BIG_RCVBUF
        self.big_fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)
        if self.big_fd < 0:
            self._fail("socket")
        self._setopt(self.big_fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof(one), "PACKET_VNET_HDR")
        if qdisc_bypass:
            self._setopt(self.big_fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one),
                         "PACKET_QDISC_BYPASS")
        if setsockopt(self.big_fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) != 0:
            setsockopt(self.big_fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf))
        self._bind(self.big_fd, 0)

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
        if self.big_fd >= 0:
            c_close(self.big_fd)
            self.big_fd = -1

    def close(self):
        """Unmap the rings and close the sockets; safe to call again. Nodes using the
        socket keep working: the input returns nothing, the output counts tx_no_socket."""
        if self.rx_fd >= 0:
            self._read_kernel_stats()
        self._close()

    @property
    def closed(self):
        return self.rx_fd < 0 and self.tx_fd < 0 and self.big_fd < 0

    def fileno(self):
        """The receive socket: readable when a ring slot is ready."""
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
            nbytes[0] += h.tp_len - VNET_HDR_LEN
            fp_store_release(&h.tp_status, TP_STATUS_AVAILABLE)
            i = j
            n += 1
        self.tx_head = i
        return n

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
        cdef tpacket_stats st
        cdef socklen_t n = sizeof(st)
        if self.rx_fd >= 0 and getsockopt(self.rx_fd, SOL_PACKET, PACKET_STATISTICS, &st, &n) == 0:
            self.k_packets += st.tp_packets
            self.k_drops += st.tp_drops

    def kernel_stats(self):
        """The kernel's receive counters since the socket was opened: frames it saw
        (packets) and frames lost because the ring was full (drops); freezes (TPACKET_V3
        only) stays 0."""
        self._read_kernel_stats()
        return {"packets": self.k_packets, "drops": self.k_drops, "freezes": self.k_freezes}

    def __repr__(self):
        state = "closed" if self.rx_fd < 0 else f"fd {self.rx_fd}/{self.tx_fd}/{self.big_fd}"
        return f"<AfPacketSocket {self.ifname} ifindex {self.ifindex} {state}>"


cdef class AfPacketInput(Node):
    """Receives from an AfPacketSocket's ring into pool buffers (input node).

    Per poll: up to `room` ready slots, in order, each given back to the kernel as soon as
    its frame is copied; a slot marked TP_STATUS_COPY stands for a frame larger than a
    slot, taken whole from the socket queue into a big buffer. Each frame's
    virtio_net_hdr becomes its offload state. Frames that do not make it into the graph
    are counted: rx_too_big (the kernel could not keep it whole, or over 64 KiB),
    rx_no_buffer (pool empty), rx_runt (shorter than an Ethernet header), rx_bad_offload
    (a virtio_net_hdr whose offsets or sizes do not fit the frame),
    rx_offload_unsupported (a GSO type other than TCP). rx_outgoing_skipped counts frames
    this host sent out of the interface, which the kernel showed despite the filter.
    """
    input = True

    def __init__(self, name, AfPacketSocket sock, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self.sock = sock
        self.sw_if_index = sw_if_index

    def fileno(self):
        return self.sock.rx_fd

    cdef int recv_whole(self, uint32_t b, uint32_t expect, virtio_net_hdr *vh) noexcept nogil:
        """The queued copy of a frame larger than a slot, into big buffer b after the
        headroom the tag restore needs; its length, or -1."""
        cdef iovec iov[2]
        cdef msghdr msg
        cdef ssize_t got
        memset(&msg, 0, sizeof(msg))
        iov[0].iov_base = vh
        iov[0].iov_len = VNET_HDR_LEN
        iov[1].iov_base = self.pool.frame(b)
        iov[1].iov_len = BIG_DATA - VLAN_HLEN
        msg.msg_iov = iov
        msg.msg_iovlen = 2
        got = recvmsg(self.sock.rx_fd, &msg, MSG_DONTWAIT | MSG_TRUNC)
        if got < VNET_HDR_LEN or <size_t> got - VNET_HDR_LEN != expect or msg.msg_flags & MSG_TRUNC:
            return -1
        return <int> (got - VNET_HDR_LEN)

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        cdef tpacket2_hdr *h
        cdef sockaddr_ll *sll
        cdef virtio_net_hdr vh
        cdef virtio_net_hdr *vp
        cdef uint8_t *src
        cdef uint8_t *dst
        cdef uint32_t status, length, tag, tci, tpid, b, head, ready = 0
        cdef int have, used = 0, l3, r
        cdef bint whole
        cdef size_t sll_off = TPACKET_ALIGN(sizeof(tpacket2_hdr))
        if self.sock.rx_ring == NULL:
            return 0
        # how many slots are ready (up to room): one pool allocation for all of them
        head = self.sock.rx_head
        while ready < <uint32_t> room:
            h = rx_slot_at(self.sock, head)
            if not (fp_load_acquire(&h.tp_status) & TP_STATUS_USER):
                break
            ready += 1
            head += 1
            if head == self.sock.rx_frames:
                head = 0
        have = self.pool.alloc(bufs, <int> ready) if ready else 0
        while ready:
            ready -= 1
            h = rx_slot_at(self.sock, self.sock.rx_head)
            status = h.tp_status
            whole = (status & TP_STATUS_COPY) != 0
            sll = <sockaddr_ll *> (<uint8_t *> h + sll_off)
            length = h.tp_snaplen
            src = <uint8_t *> h + h.tp_mac
            vp = <virtio_net_hdr *> (src - VNET_HDR_LEN)
            tag = VLAN_HLEN if status & TP_STATUS_VLAN_VALID else 0
            tci = h.tp_vlan_tci
            tpid = h.tp_vlan_tpid if status & TP_STATUS_VLAN_TPID_VALID else ETH_P_8021Q
            b = 0xffffffffU
            if sll.sll_pkttype == PACKET_OUTGOING:
                self.rx_outgoing_skipped += 1
            elif whole:
                # the slot holds the head; the socket queue holds the whole frame
                if self.pool.alloc_big(&b, 1) != 1:
                    b = 0xffffffffU
                    self.rx_no_buffer += 1
                    # drop its queued copy, or the next slot would take this one's
                    recv(self.sock.rx_fd, NULL, 0, MSG_DONTWAIT | MSG_TRUNC)
                else:
                    # after room for the tag to go back in front of it
                    self.pool.offset[b] = BUF_HEADROOM + VLAN_HLEN
                    r = self.recv_whole(b, h.tp_len, &vh)
                    if r < ETH_HLEN:
                        self.pool.free(&b, 1)
                        b = 0xffffffffU
                        self.rx_too_big += 1
                    else:
                        length = <uint32_t> r
                        vp = &vh
                        src = self.pool.frame(b)
                        self.rx_big += 1
            elif length < ETH_HLEN:
                self.rx_runt += 1
            elif length != h.tp_len or length + tag > BUF_DATA:
                # the ring had to cut it and the kernel kept no whole copy (queue full)
                self.rx_too_big += 1
            elif used == have:
                self.rx_no_buffer += 1
            else:
                b = bufs[used]
                used += 1
            if whole and sll.sll_pkttype == PACKET_OUTGOING:
                recv(self.sock.rx_fd, NULL, 0, MSG_DONTWAIT | MSG_TRUNC)     # its whole copy
            if whole and b != 0xffffffffU:
                # the big buffer takes the place of an unused small one in the vector
                if used < have:
                    self.pool.free(&bufs[used], 1)
                    bufs[used] = b
                    used += 1
                else:
                    self.pool.free(&b, 1)
                    b = 0xffffffffU
                    self.rx_no_buffer += 1
            if b != 0xffffffffU:
                l3 = l3_offset(src, length)
                r = vnet_to_meta(self.pool, b, vp, <uint32_t> l3, length) if l3 >= 0 else VNET_BAD
                if r != VNET_OK and (vp.flags or vp.gso_type):
                    if r == VNET_BAD:
                        self.rx_bad_offload += 1
                    else:
                        self.rx_offload_unsupported += 1
                    # the buffer stays in the vector's slot for the next frame
                    used -= 1
                    self.pool.ol_flags[b] = 0
                    self.pool.offset[b] = BUF_HEADROOM
                    b = 0xffffffffU
            if b != 0xffffffffU:
                if tag:
                    # the kernel took the outer tag out of the frame: put it back after
                    # the MAC addresses (4 bytes into the headroom, as a tag push does)
                    self.pool.offset[b] = self.pool.offset[b] - VLAN_HLEN
                    dst = self.pool.frame(b)
                    if whole:
                        memmove(dst, src, 12)      # the rest is in place already
                    else:
                        memcpy(dst, src, 12)
                        memcpy(dst + 16, src + 12, length - 12)
                    dst[12] = tpid >> 8
                    dst[13] = tpid & 0xff
                    dst[14] = (tci >> 8) & 0xff
                    dst[15] = tci & 0xff
                    self.rx_vlan_restored += 1
                elif not whole:
                    memcpy(self.pool.frame(b), src, length)
                self.pool.length[b] = length + tag
                self.pool.rx_if[b] = self.sw_if_index
                self.pool.next[b] = 1
                self.rx_bytes += length + tag
            fp_store_release(&h.tp_status, TP_STATUS_KERNEL)
            self.sock.rx_head += 1
            if self.sock.rx_head == self.sock.rx_frames:
                self.sock.rx_head = 0
        if used < have:
            self.pool.free(bufs + used, have - used)
        if used:
            self.rx_packets += used
            self.empty_polls = 0
        else:
            # While the interface is down the socket holds ENETDOWN, which makes poll()
            # report POLLERR until it is read: clear it now and then so an idle dispatcher
            # can sleep on fileno(). Once per ERROR_CHECK_EVERY empty polls costs nothing
            # while traffic flows.
            self.empty_polls += 1
            if self.empty_polls % ERROR_CHECK_EVERY == 0 and self.sock.take_error() != 0:
                self.rx_link_down += 1
        return used

    def stats(self):
        """rx_drops counts every frame the interface received that did not enter the
        graph: the node's drops and the kernel's (ring full, rx_ring_full)."""
        ring_full = self.sock.kernel_stats()["drops"]
        node_drops = (self.rx_too_big + self.rx_no_buffer + self.rx_runt + self.rx_bad_offload
                      + self.rx_offload_unsupported)
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                "rx_drops": node_drops + ring_full,
                "rx_too_big": self.rx_too_big, "rx_no_buffer": self.rx_no_buffer,
                "rx_big": self.rx_big, "rx_bad_offload": self.rx_bad_offload,
                "rx_offload_unsupported": self.rx_offload_unsupported,
                "rx_runt": self.rx_runt, "rx_ring_full": ring_full,
                "rx_vlan_restored": self.rx_vlan_restored,
                "rx_outgoing_skipped": self.rx_outgoing_skipped,
                "rx_link_down": self.rx_link_down}

    def clear_stats(self):
        self.rx_packets = self.rx_bytes = self.rx_too_big = self.rx_no_buffer = 0
        self.rx_runt = self.rx_vlan_restored = self.rx_outgoing_skipped = self.rx_link_down = 0
        self.rx_big = self.rx_bad_offload = self.rx_offload_unsupported = 0

    def format_trace(self, uint32_t b):
        return f"{self.sock.ifname}: rx len {self.pool.length[b]} -> {self.next_names[1]}"


cdef class AfPacketOutput(Node):
    """Transmits each frame of a vector through an AfPacketSocket's ring (sink node).

    Frames are copied into free slots behind their virtio_net_hdr (the offload state:
    a partial checksum or a TCP super-frame goes to the kernel as it is), then one
    sendto() per vector has the kernel send them all. A frame larger than a slot is sent
    on its own after a kick, so frames leave in order. A full ring is kicked (once while
    that frees slots) before the frame is dropped. Counted drops: tx_too_big (over the
    interface MTU, not a super-frame), tx_ring_full, tx_link_down (the interface was
    down: frames queued in the ring are taken back rather than sent stale when it comes
    up), tx_no_socket (socket closed), tx_big_errors (the kernel refused a large frame).
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

    cdef bint send_big(self, uint32_t b) noexcept nogil:
        cdef virtio_net_hdr vh
        cdef iovec iov[2]
        cdef msghdr msg
        meta_to_vnet(self.pool, b, &vh)
        memset(&msg, 0, sizeof(msg))
        iov[0].iov_base = &vh
        iov[0].iov_len = VNET_HDR_LEN
        iov[1].iov_base = self.pool.frame(b)
        iov[1].iov_len = self.pool.length[b]
        msg.msg_iov = iov
        msg.msg_iovlen = 2
        return sendmsg(self.sock.big_fd, &msg, MSG_DONTWAIT) >= 0

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
            if not (self.pool.ol_flags[b] & OL_GSO):
                limit = self.sock.tx_max_len
                if length >= ETH_HLEN and src[12] == 0x81 and src[13] == 0x00:
                    limit += VLAN_HLEN      # the kernel lets an 802.1Q tag exceed the MTU
                if length > limit:
                    self.tx_too_big += 1
                    continue
            if length > self.sock.tx_slot_data:
                if pending:
                    self.kick()
                    pending = 0
                if self.send_big(b):
                    self.tx_big += 1
                    self.tx_packets += 1
                    self.tx_bytes += length
                else:
                    self.tx_big_errors += 1
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
            meta_to_vnet(self.pool, b, <virtio_net_hdr *> (<uint8_t *> h + data_off))
            memcpy(<uint8_t *> h + data_off + VNET_HDR_LEN, src, length)
            h.tp_len = length + VNET_HDR_LEN
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
                            + self.tx_no_socket + self.tx_big_errors,
                "tx_big": self.tx_big, "tx_big_errors": self.tx_big_errors,
                "tx_too_big": self.tx_too_big, "tx_ring_full": self.tx_ring_full,
                "tx_link_down": self.tx_link_down, "tx_no_socket": self.tx_no_socket,
                "tx_kicks": self.tx_kicks, "tx_kick_errors": self.tx_kick_errors}

    def clear_stats(self):
        self.tx_packets = self.tx_bytes = self.tx_too_big = self.tx_ring_full = 0
        self.tx_link_down = self.tx_no_socket = self.tx_kicks = self.tx_kick_errors = 0
        self.tx_big = self.tx_big_errors = 0

    def format_trace(self, uint32_t b):
        return f"{self.sock.ifname}: tx len {self.pool.length[b]}"
