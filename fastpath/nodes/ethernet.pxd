"""Ethernet and 802.1Q/802.1ad header arithmetic: the one place it is written.

Frames are handled in place in their buffer; a tag push moves the 12 MAC bytes back into
the headroom, a pop moves them forward, so the payload is never copied.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memmove
from fastpath.graph.buffer cimport BufferPool

cdef enum:
    ETH_HLEN = 14
    VLAN_HLEN = 4
    ETH_P_8021Q = 0x8100
    ETH_P_8021AD = 0x88a8
    ETH_P_IP = 0x0800
    ETH_P_ARP = 0x0806

cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return (<uint16_t> p[0] << 8) | p[1]

cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xff

cdef inline bint is_vlan_tpid(uint16_t t) noexcept nogil:
    return t == ETH_P_8021Q or t == ETH_P_8021AD

cdef inline bint mac_is_multicast(const uint8_t *mac) noexcept nogil:
    return mac[0] & 1

cdef inline uint64_t mac_u64(const uint8_t *mac) noexcept nogil:
    return ((<uint64_t> mac[0] << 40) | (<uint64_t> mac[1] << 32) | (<uint64_t> mac[2] << 24)
            | (<uint64_t> mac[3] << 16) | (<uint64_t> mac[4] << 8) | <uint64_t> mac[5])

cdef inline bint mac_is_reserved(const uint8_t *mac) noexcept nogil:
    """01:80:c2:00:00:0x: link-local protocols (STP, LACP, LLDP) a bridge must not forward."""
    return (mac[0] == 0x01 and mac[1] == 0x80 and mac[2] == 0xc2 and mac[3] == 0
            and mac[4] == 0 and (mac[5] & 0xf0) == 0)

cdef inline bint has_tag(BufferPool pool, uint32_t b) noexcept nogil:
    """The frame carries an outer 802.1Q/802.1ad tag (and is long enough to hold it)."""
    return pool.length[b] >= ETH_HLEN + VLAN_HLEN and is_vlan_tpid(rd16(pool.frame(b) + 12))

cdef inline uint16_t outer_tci(BufferPool pool, uint32_t b) noexcept nogil:
    return rd16(pool.frame(b) + 14)

cdef inline uint16_t inner_type(BufferPool pool, uint32_t b) noexcept nogil:
    """The EtherType after up to two VLAN tags (OpenFlow's dl_type)."""
    cdef uint8_t *p = pool.frame(b)
    cdef int off = 12, tags = 0
    cdef uint16_t t = rd16(p + off)
    while is_vlan_tpid(t) and tags < 2 and off + 6 <= pool.length[b]:
        off += 4
        tags += 1
        t = rd16(p + off)
    return t

cdef inline int vlan_push(BufferPool pool, uint32_t b, uint16_t tpid, uint16_t tci) noexcept nogil:
    """Insert an outer tag. -1 when the headroom or the buffer is exhausted."""
    cdef uint8_t *p
    if pool.offset[b] < VLAN_HLEN or pool.length[b] < 12:
        return -1
    pool.offset[b] -= VLAN_HLEN
    pool.length[b] += VLAN_HLEN
    p = pool.frame(b)
    memmove(p, p + VLAN_HLEN, 12)
    wr16(p + 12, tpid)
    wr16(p + 14, tci)
    return 0

cdef inline int vlan_pop(BufferPool pool, uint32_t b) noexcept nogil:
    """Remove the outer tag. -1 when there is none."""
    cdef uint8_t *p
    if not has_tag(pool, b):
        return -1
    p = pool.frame(b)
    memmove(p + VLAN_HLEN, p, 12)
    pool.offset[b] += VLAN_HLEN
    pool.length[b] -= VLAN_HLEN
    return 0
