"""TAP interfaces: a kernel Ethernet device whose other end is the dataplane.

TapDevice creates the device (/dev/net/tun, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
non-blocking) in the calling thread's network namespace, sets its MTU and brings it up;
closing it removes the device. What the host stack sends out of the TAP is read by
TapInput; what TapOutput writes is received by the host stack as if it came from a wire.

Offloads, as QEMU's TAP backend sets them: every frame crosses with a virtio_net_hdr
(TUNSETVNETHDRSZ 10), and TUNSETOFFLOAD(TUN_F_CSUM | TSO4 | TSO6 | TSO_ECN) lets the host
stack hand over partial checksums and TCP super-frames of up to 64 KiB instead of
finishing them itself. They keep that state through the switch (buffer ol_flags); what
TapOutput writes may carry it too, since the kernel finishes anything it gets this way.

A TAP file descriptor moves one frame per read()/write(); there is no batch call, so
the per-frame syscall is inherent. Both nodes still work straight on pool buffers with
C calls: no Python object per frame.
"""
from libc.errno cimport errno, EAGAIN, EINTR, EIO
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, free as c_free
from libc.string cimport memcpy, memset, strncpy
from posix.unistd cimport close as c_close
from posix.fcntl cimport open as c_open, O_RDWR, O_NONBLOCK, O_CLOEXEC
from posix.uio cimport iovec, readv, writev

from fastpath.graph.buffer cimport BufferPool, BUF_DATA, BIG_DATA
from fastpath.graph.node cimport Node
from fastpath.nodes.offload cimport (virtio_net_hdr, VNET_HDR_LEN, VNET_OK, VNET_BAD,
                                     vnet_to_meta, meta_to_vnet, l3_offset)

import os


cdef extern from "<sys/socket.h>" nogil:
    enum:
        AF_INET
        SOCK_DGRAM
        SOCK_CLOEXEC
    int socket(int domain, int type, int protocol)

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<net/if.h>" nogil:
    enum:
        IFNAMSIZ
        IFF_UP
    struct sockaddr:
        unsigned short sa_family
        unsigned char sa_data[14]
    struct ifreq:
        char ifr_name[16]
        short ifr_flags
        int ifr_mtu
        int ifr_ifindex
        sockaddr ifr_hwaddr

cdef extern from "<linux/sockios.h>" nogil:
    enum:
        SIOCGIFFLAGS
        SIOCSIFFLAGS
        SIOCSIFMTU
        SIOCGIFMTU
        SIOCGIFINDEX
        SIOCGIFHWADDR

cdef extern from "<linux/if_tun.h>" nogil:
    enum:
        IFF_TAP
        IFF_NO_PI
        IFF_VNET_HDR
        TUNSETIFF
        TUNSETVNETHDRSZ
        TUNSETOFFLOAD
        TUN_F_CSUM
        TUN_F_TSO4
        TUN_F_TSO6
        TUN_F_TSO_ECN

cdef enum:
    ETH_HLEN = 14
    # What does not fit a small buffer lands here, then goes to a big buffer (a read into
    # a too-short buffer would fail with EFAULT and lose the frame silently). A TAP frame
    # (a super-frame too) is at most 65535 + headers: BUF_DATA + 64 KiB covers it.
    SPILL = 1 << 16
    FIRST_CHUNK = 4            # buffers taken for the first read of a poll: idle polls stay cheap
    CHUNK = 64


cdef class TapDevice:
    """A TAP device named `name` ("tap%d" lets the kernel pick), up, with the given MTU.
    Exists until close(); create it in the namespace it should live in."""
    cdef readonly str name
    cdef readonly int fd
    cdef int ctl                       # AF_INET datagram socket for ioctls, in the device's netns

    def __cinit__(self):
        self.fd = -1
        self.ctl = -1

    def __init__(self, name, int mtu=1500, bint up=True):
        cdef ifreq ifr
        cdef int hdr_len = VNET_HDR_LEN
        if len(name.encode()) >= IFNAMSIZ:
            raise ValueError(f"interface name {name!r} longer than {IFNAMSIZ - 1} bytes")
        try:
            self.fd = c_open(b"/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC)
            if self.fd < 0:
                self._fail("open /dev/net/tun")
            memset(&ifr, 0, sizeof(ifr))
            strncpy(ifr.ifr_name, name.encode(), IFNAMSIZ - 1)
            ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR
            if ioctl(self.fd, TUNSETIFF, &ifr) != 0:
                self._fail(f"TUNSETIFF {name}")
            self.name = ifr.ifr_name.decode()
            if ioctl(self.fd, TUNSETVNETHDRSZ, &hdr_len) != 0:
                self._fail(f"TUNSETVNETHDRSZ {name}")
            if ioctl(self.fd, TUNSETOFFLOAD, <unsigned long> (TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6
                                                              | TUN_F_TSO_ECN)) != 0:
                self._fail(f"TUNSETOFFLOAD {name}")
            self.ctl = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)
            if self.ctl < 0:
                self._fail("socket")
            self.set_mtu(mtu)
            if up:
                self.set_up(True)
        except BaseException:
            self._close()
            raise

    def __dealloc__(self):
        self._close()

    cdef _fail(self, what):
        e = errno
        raise OSError(e, f"{what}: {os.strerror(e)}")

    cdef _ifreq(self, unsigned long request, ifreq *ifr, what):
        strncpy(ifr.ifr_name, self.name.encode(), IFNAMSIZ - 1)
        if self.ctl < 0:
            raise OSError(9, f"{self.name}: device closed")
        if ioctl(self.ctl, request, ifr) != 0:
            self._fail(f"{self.name}: {what}")

    def set_mtu(self, int mtu):
        cdef ifreq ifr
        memset(&ifr, 0, sizeof(ifr))
        ifr.ifr_mtu = mtu
        self._ifreq(SIOCSIFMTU, &ifr, "SIOCSIFMTU")

    def set_up(self, bint up):
        """Administrative state (ip link set up/down)."""
        cdef ifreq ifr
        memset(&ifr, 0, sizeof(ifr))
        self._ifreq(SIOCGIFFLAGS, &ifr, "SIOCGIFFLAGS")
        if up:
            ifr.ifr_flags |= IFF_UP
        else:
            ifr.ifr_flags &= ~IFF_UP
        self._ifreq(SIOCSIFFLAGS, &ifr, "SIOCSIFFLAGS")

    @property
    def mtu(self):
        cdef ifreq ifr
        memset(&ifr, 0, sizeof(ifr))
        self._ifreq(SIOCGIFMTU, &ifr, "SIOCGIFMTU")
        return ifr.ifr_mtu

    @property
    def ifindex(self):
        cdef ifreq ifr
        memset(&ifr, 0, sizeof(ifr))
        self._ifreq(SIOCGIFINDEX, &ifr, "SIOCGIFINDEX")
        return ifr.ifr_ifindex

    @property
    def mac(self):
        """The host side's MAC address, "aa:bb:cc:dd:ee:ff"."""
        cdef ifreq ifr
        memset(&ifr, 0, sizeof(ifr))
        self._ifreq(SIOCGIFHWADDR, &ifr, "SIOCGIFHWADDR")
        cdef int i
        octets = []
        for i in range(6):
            octets.append(f"{<uint8_t> ifr.ifr_hwaddr.sa_data[i]:02x}")
        return ":".join(octets)

    cdef void _close(self) noexcept nogil:
        if self.fd >= 0:
            c_close(self.fd)        # the last reference to a non-persistent TAP removes it
            self.fd = -1
        if self.ctl >= 0:
            c_close(self.ctl)
            self.ctl = -1

    def close(self):
        """Remove the device; safe to call again."""
        self._close()

    @property
    def closed(self):
        return self.fd < 0

    def fileno(self):
        return self.fd

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<TapDevice {self.name} {'closed' if self.fd < 0 else f'fd {self.fd}'}>"


cdef class TapInput(Node):
    """Reads what the host sends out of a TAP into pool buffers (input node): up to
    `room` reads per poll, until the device has nothing more (EAGAIN). A frame longer
    than a small buffer (a jumbo frame, a TCP super-frame) goes to a big buffer (rx_big).
    Counted drops: rx_too_big (longer than a big buffer), rx_runt (shorter than an
    Ethernet header), rx_no_buffer (pool empty: the frame is read and discarded so the
    device's queue keeps moving), rx_bad_offload (a virtio_net_hdr that does not match
    the frame), rx_offload_unsupported (a GSO type fastpath cannot segment); rx_read_errors
    counts other read() failures."""
    input = True
    cdef readonly TapDevice tap
    cdef public uint16_t sw_if_index
    cdef public uint64_t rx_packets, rx_bytes, rx_too_big, rx_runt, rx_no_buffer, rx_read_errors
    cdef public uint64_t rx_big, rx_bad_offload, rx_offload_unsupported
    cdef uint8_t *spill

    def __init__(self, name, TapDevice tap, int sw_if_index, next_node="ethernet-input"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self.tap = tap
        self.sw_if_index = sw_if_index
        self.spill = <uint8_t *> malloc(SPILL)
        if self.spill == NULL:
            raise MemoryError()

    def __dealloc__(self):
        c_free(self.spill)

    def fileno(self):
        return self.tap.fd

    cdef bint take_big(self, uint32_t *b, uint32_t length) noexcept nogil:
        """Move a frame that ran past small buffer *b into the spill to a big buffer, which
        replaces *b (freed); False (a counted drop) when it cannot."""
        cdef uint32_t big
        if length > BIG_DATA:
            self.rx_too_big += 1
            return False
        if self.pool.alloc_big(&big, 1) != 1:
            self.rx_no_buffer += 1
            return False
        memcpy(self.pool.frame(big), self.pool.frame(b[0]), BUF_DATA)
        memcpy(self.pool.frame(big) + BUF_DATA, self.spill, length - BUF_DATA)
        self.pool.free(b, 1)
        b[0] = big
        self.rx_big += 1
        return True

    cdef int poll_c(self, uint32_t *bufs, int room) noexcept nogil:
        cdef int fd = self.tap.fd
        cdef int got = 0, reads = 0, have, used, chunk = FIRST_CHUNK, l3, r
        cdef uint32_t b, length
        cdef ssize_t n
        cdef virtio_net_hdr vh
        cdef iovec iov[3]
        cdef bint more = True
        if fd < 0:
            return 0
        iov[0].iov_base = &vh
        iov[0].iov_len = VNET_HDR_LEN
        iov[2].iov_base = self.spill
        iov[2].iov_len = SPILL
        while more and reads < room:
            if chunk > room - got:
                chunk = room - got
            have = self.pool.alloc(bufs + got, chunk)
            if have == 0:
                # no buffer: still take the frame off the device, and count it
                iov[1].iov_base = self.spill
                iov[1].iov_len = 0
                n = readv(fd, iov, 3)
                reads += 1
                if n >= 0:
                    self.rx_no_buffer += 1
                    continue
                if errno != EINTR:
                    if errno != EAGAIN:
                        self.rx_read_errors += 1
                    break
                continue
            used = 0
            while used < have and reads < room:
                b = bufs[got + used]
                iov[1].iov_base = self.pool.frame(b)
                iov[1].iov_len = BUF_DATA
                n = readv(fd, iov, 3)
                if n < 0:
                    if errno == EINTR:
                        continue
                    if errno != EAGAIN:
                        self.rx_read_errors += 1
                    more = False
                    break
                reads += 1
                if n < VNET_HDR_LEN + ETH_HLEN:
                    self.rx_runt += 1
                    continue
                length = <uint32_t> n - VNET_HDR_LEN
                if length > BUF_DATA:
                    if not self.take_big(&b, length):
                        continue
                    bufs[got + used] = b
                l3 = l3_offset(self.pool.frame(b), length)
                r = vnet_to_meta(self.pool, b, &vh, <uint32_t> l3, length) if l3 >= 0 else VNET_BAD
                if r != VNET_OK and (vh.flags or vh.gso_type):
                    if r == VNET_BAD:
                        self.rx_bad_offload += 1
                    else:
                        self.rx_offload_unsupported += 1
                    self.pool.ol_flags[b] = 0
                    continue            # the buffer stays in its slot for the next read
                self.pool.length[b] = <uint16_t> length
                self.pool.rx_if[b] = self.sw_if_index
                self.pool.next[b] = 1
                self.rx_bytes += length
                used += 1
            if used < have:
                self.pool.free(bufs + got + used, have - used)
            got += used
            chunk = CHUNK
        self.rx_packets += got
        return got

    def stats(self):
        return {"rx_packets": self.rx_packets, "rx_bytes": self.rx_bytes,
                "rx_drops": self.rx_too_big + self.rx_runt + self.rx_no_buffer
                            + self.rx_bad_offload + self.rx_offload_unsupported,
                "rx_too_big": self.rx_too_big, "rx_runt": self.rx_runt,
                "rx_no_buffer": self.rx_no_buffer, "rx_read_errors": self.rx_read_errors,
                "rx_big": self.rx_big, "rx_bad_offload": self.rx_bad_offload,
                "rx_offload_unsupported": self.rx_offload_unsupported}

    def clear_stats(self):
        self.rx_packets = self.rx_bytes = self.rx_too_big = self.rx_runt = 0
        self.rx_no_buffer = self.rx_read_errors = 0
        self.rx_big = self.rx_bad_offload = self.rx_offload_unsupported = 0

    def format_trace(self, uint32_t b):
        return f"{self.tap.name}: rx len {self.pool.length[b]} -> {self.next_names[1]}"


cdef class TapOutput(Node):
    """Writes each frame of a vector to a TAP (sink node) behind a virtio_net_hdr with
    its offload state: the host stack receives it, finishing a partial checksum or
    segmenting a super-frame where it must. Counted drops: tx_queue_full (EAGAIN), tx_link_down (EIO: the device is down),
    tx_runt (shorter than an Ethernet header, which the device refuses),
    tx_write_errors (any other write() failure), tx_no_device (TapDevice closed)."""
    sink = True
    cdef readonly TapDevice tap
    cdef public uint16_t sw_if_index
    cdef public uint64_t tx_packets, tx_bytes, tx_queue_full, tx_link_down, tx_runt
    cdef public uint64_t tx_write_errors, tx_no_device

    def __init__(self, name, TapDevice tap, int sw_if_index):
        super().__init__(name)
        self.tap = tap
        self.sw_if_index = sw_if_index

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int fd = self.tap.fd, i, tries
        cdef uint32_t b, length
        cdef ssize_t w
        cdef virtio_net_hdr vh
        cdef iovec iov[2]
        iov[0].iov_base = &vh
        iov[0].iov_len = VNET_HDR_LEN
        if fd < 0:
            self.tx_no_device += n
            self.pool.free(bufs, n)
            return 0
        for i in range(n):
            b = bufs[i]
            length = self.pool.length[b]
            if length < ETH_HLEN:
                self.tx_runt += 1
                continue
            meta_to_vnet(self.pool, b, &vh)
            iov[1].iov_base = self.pool.frame(b)
            iov[1].iov_len = length
            tries = 0
            w = writev(fd, iov, 2)
            while w < 0 and errno == EINTR and tries < 3:
                tries += 1
                w = writev(fd, iov, 2)
            if w >= 0:
                self.tx_packets += 1
                self.tx_bytes += length
            elif errno == EAGAIN:
                self.tx_queue_full += 1
            elif errno == EIO:
                self.tx_link_down += 1
            else:
                self.tx_write_errors += 1
        self.pool.free(bufs, n)
        return 0

    def stats(self):
        return {"tx_packets": self.tx_packets, "tx_bytes": self.tx_bytes,
                "tx_drops": self.tx_queue_full + self.tx_link_down + self.tx_runt
                            + self.tx_write_errors + self.tx_no_device,
                "tx_queue_full": self.tx_queue_full, "tx_link_down": self.tx_link_down,
                "tx_runt": self.tx_runt, "tx_write_errors": self.tx_write_errors,
                "tx_no_device": self.tx_no_device}

    def clear_stats(self):
        self.tx_packets = self.tx_bytes = self.tx_queue_full = self.tx_link_down = 0
        self.tx_runt = self.tx_write_errors = self.tx_no_device = 0

    def format_trace(self, uint32_t b):
        return f"{self.tap.name}: tx len {self.pool.length[b]}"
