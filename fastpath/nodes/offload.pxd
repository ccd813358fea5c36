# Offload state on the wire and in software: virtio_net_hdr (the header AF_PACKET with
# PACKET_VNET_HDR, TAP with IFF_VNET_HDR and virtio-net put before a frame), and the
# checksum a port that cannot take a partial one needs filled in.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.buffer cimport (BufferPool, OL_CSUM_PARTIAL, OL_CSUM_VALID, OL_GSO_TCP4,
                                    OL_GSO_TCP6, OL_GSO_ECN, OL_GSO)
from fastpath.nodes.ethernet cimport rd16, is_vlan_tpid

cdef enum:
    VNET_HDR_LEN = 10
    VNET_F_NEEDS_CSUM = 1
    VNET_F_DATA_VALID = 2
    VNET_GSO_NONE = 0
    VNET_GSO_TCPV4 = 1
    VNET_GSO_UDP = 3
    VNET_GSO_TCPV6 = 4
    VNET_GSO_ECN = 0x80
    # what a port accepts on output (interface-output finishes the rest in software)
    CAP_CSUM = 1
    CAP_TSO4 = 2
    CAP_TSO6 = 4
    CAP_ALL = CAP_CSUM | CAP_TSO4 | CAP_TSO6
    # a verdict of vnet_to_meta
    VNET_OK = 0
    VNET_BAD = -1          # nonsense offsets or sizes: a counted drop
    VNET_UNSUPPORTED = -2  # a GSO type fastpath does not segment (UDP fragmentation offload)

cdef packed struct virtio_net_hdr:
    uint8_t flags
    uint8_t gso_type
    uint16_t hdr_len       # little-endian, as virtio 1.0 and packet sockets on x86
    uint16_t gso_size
    uint16_t csum_start
    uint16_t csum_offset


cdef inline int l3_offset(const uint8_t *f, uint32_t n) noexcept nogil:
    """Where the L3 header starts: after the MAC addresses and up to two VLAN tags (the
    TPIDs the switch knows); -1 if the frame ends first."""
    cdef uint32_t off = 12
    cdef int tags = 0
    while True:
        if off + 2 > n:
            return -1
        if tags < 2 and is_vlan_tpid(rd16(f + off)):
            off += 4
            tags += 1
            continue
        return off + 2


cdef inline uint64_t csum_add(uint64_t s, const uint8_t *p, uint32_t n) noexcept nogil:
    """Add n bytes as big-endian 16-bit words to a ones' complement accumulator."""
    cdef uint32_t i = 0
    while i + 1 < n:
        s += (<uint32_t> p[i] << 8) | p[i + 1]
        i += 2
    if i < n:
        s += <uint32_t> p[i] << 8
    return s


cdef inline uint16_t csum_fold(uint64_t s) noexcept nogil:
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return <uint16_t> s


cdef inline int vnet_to_meta(BufferPool pool, uint32_t b, const virtio_net_hdr *h,
                             uint32_t l3, uint32_t n) noexcept nogil:
    """Take a received virtio_net_hdr into buffer b's offload state; l3 and n: where the L3
    header starts in the frame the header describes, and its length (a VLAN tag the kernel
    took out and fastpath puts back does not count). Checks every offset against it."""
    cdef uint32_t start = h.csum_start, off = h.csum_offset
    cdef uint8_t gso = h.gso_type & ~VNET_GSO_ECN
    pool.ol_flags[b] = 0
    if h.flags & VNET_F_NEEDS_CSUM:
        if start < l3 + 20 or start + off + 2 > n or start - l3 > 0xffff:
            return VNET_BAD
        pool.ol_flags[b] = OL_CSUM_PARTIAL
        pool.l4_start[b] = <uint16_t> (start - l3)
        pool.csum_offset[b] = <uint16_t> off
    elif h.flags & VNET_F_DATA_VALID:
        pool.ol_flags[b] = OL_CSUM_VALID
    if gso == VNET_GSO_NONE:
        return VNET_OK
    if gso != VNET_GSO_TCPV4 and gso != VNET_GSO_TCPV6:
        pool.ol_flags[b] = 0
        return VNET_UNSUPPORTED
    # a TCP super-frame: a partial checksum on its TCP header (offset 16), the TCP header
    # within the frame, segments of at least one byte
    if (not (h.flags & VNET_F_NEEDS_CSUM) or off != 16 or h.gso_size == 0
            or start + 20 > n):
        pool.ol_flags[b] = 0
        return VNET_BAD
    pool.ol_flags[b] |= OL_GSO_TCP4 if gso == VNET_GSO_TCPV4 else OL_GSO_TCP6
    if h.gso_type & VNET_GSO_ECN:
        pool.ol_flags[b] |= OL_GSO_ECN
    pool.gso_size[b] = h.gso_size
    return VNET_OK


cdef inline void meta_to_vnet(BufferPool pool, uint32_t b, virtio_net_hdr *h) noexcept nogil:
    """Buffer b's offload state as a virtio_net_hdr to send with it."""
    cdef uint8_t ol = pool.ol_flags[b]
    cdef const uint8_t *f
    cdef int l3
    cdef uint32_t start
    h.flags = 0
    h.gso_type = VNET_GSO_NONE
    h.hdr_len = h.gso_size = h.csum_start = h.csum_offset = 0
    if not (ol & OL_CSUM_PARTIAL):
        return
    f = pool.frame(b)
    l3 = l3_offset(f, pool.length[b])
    start = <uint32_t> l3 + pool.l4_start[b]
    if l3 < 0 or start + pool.csum_offset[b] + 2 > pool.length[b]:
        return                  # cannot happen for state vnet_to_meta checked
    h.flags = VNET_F_NEEDS_CSUM
    h.csum_start = <uint16_t> start
    h.csum_offset = pool.csum_offset[b]
    if ol & OL_GSO:
        h.gso_type = VNET_GSO_TCPV4 if ol & OL_GSO_TCP4 else VNET_GSO_TCPV6
        if ol & OL_GSO_ECN:
            h.gso_type |= VNET_GSO_ECN
        h.gso_size = pool.gso_size[b]
        h.hdr_len = <uint16_t> (start + ((f[start + 12] >> 4) << 2))


cdef inline int csum_finish(BufferPool pool, uint32_t b) noexcept nogil:
    """Fill in a partial L4 checksum in software (the field holds the pseudo-header sum,
    as the sender left it). 0, or -1 when the frame does not hold what the state says."""
    cdef uint8_t *f = pool.frame(b)
    cdef uint32_t n = pool.length[b], start, field
    cdef int l3 = l3_offset(f, n)
    cdef uint16_t c
    if l3 < 0:
        return -1
    start = <uint32_t> l3 + pool.l4_start[b]
    field = start + pool.csum_offset[b]
    if field + 2 > n:
        return -1
    c = ~csum_fold(csum_add(0, f + start, n - start)) & 0xffff
    if c == 0 and pool.csum_offset[b] == 6:
        c = 0xffff              # UDP: 0 would mean "no checksum"
    f[field] = c >> 8
    f[field + 1] = c & 0xff
    pool.ol_flags[b] = (pool.ol_flags[b] & ~OL_CSUM_PARTIAL) | OL_CSUM_VALID
    return 0
