"""IPv4, UDP and ESP header arithmetic: the one place it is written.

Pointers point at the first byte of the header in question; lengths are in bytes.
Byte-order helpers beyond 16 bits live here; rd16/wr16 come from ethernet.pxd.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.nodes.ethernet cimport rd16, wr16

cdef enum:
    IP4_HLEN = 20               # without options
    IP_PROTO_UDP = 17
    IP_PROTO_ESP = 50
    IP_PROTO_NONE = 59          # "no next header": an ESP dummy packet (RFC 4303 2.6)
    UDP_HLEN = 8
    UDP_PORT_NAT_T = 4500       # ESP in UDP (RFC 3948)
    ESP_HLEN = 8                # SPI, sequence number (low 32 bits)
    ESP_TRAILER = 2             # pad length, next header

# ip4_check() results
cdef enum:
    IP4_OK = 0
    IP4_BAD_HEADER = 1          # too short for a header, version != 4, IHL < 5 or past the data
    IP4_BAD_LENGTH = 2          # total length shorter than the header or longer than the data
    IP4_BAD_CHECKSUM = 3


cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return ((<uint32_t> p[0] << 24) | (<uint32_t> p[1] << 16) | (<uint32_t> p[2] << 8)
            | <uint32_t> p[3])

cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xff
    p[2] = (v >> 8) & 0xff
    p[3] = v & 0xff

cdef inline uint64_t rd64(const uint8_t *p) noexcept nogil:
    return (<uint64_t> rd32(p) << 32) | rd32(p + 4)

cdef inline void wr64(uint8_t *p, uint64_t v) noexcept nogil:
    wr32(p, <uint32_t> (v >> 32))
    wr32(p + 4, <uint32_t> v)

# ---- IPv4 ----

cdef inline int ip4_hlen(const uint8_t *ip) noexcept nogil:
    return (ip[0] & 0xf) * 4

cdef inline uint16_t ip4_total_length(const uint8_t *ip) noexcept nogil:
    return rd16(ip + 2)

cdef inline uint8_t ip4_proto(const uint8_t *ip) noexcept nogil:
    return ip[9]

cdef inline bint ip4_is_fragment(const uint8_t *ip) noexcept nogil:
    """More-fragments set or a non-zero fragment offset."""
    return (rd16(ip + 6) & 0x3fff) != 0

cdef inline uint16_t ip4_checksum(const uint8_t *ip, int hlen) noexcept nogil:
    """The one's complement of the one's complement sum of the header's 16-bit words:
    0 for a header whose checksum field is right; the field's value when it holds 0."""
    cdef uint32_t s = 0
    cdef int k
    for k in range(0, hlen, 2):
        s += rd16(ip + k)
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return (~s) & 0xffff

cdef inline int ip4_check(const uint8_t *ip, int avail) noexcept nogil:
    """Validate the header of an IPv4 packet with `avail` bytes behind ip: IP4_OK or why not."""
    cdef int hlen, total
    if avail < IP4_HLEN or (ip[0] >> 4) != 4:
        return IP4_BAD_HEADER
    hlen = ip4_hlen(ip)
    if hlen < IP4_HLEN or hlen > avail:
        return IP4_BAD_HEADER
    total = ip4_total_length(ip)
    if total < hlen or total > avail:
        return IP4_BAD_LENGTH
    if ip4_checksum(ip, hlen) != 0:
        return IP4_BAD_CHECKSUM
    return IP4_OK

cdef inline void ip4_set_proto_length(uint8_t *ip, uint8_t proto, uint16_t total) noexcept nogil:
    """Rewrite protocol and total length and recompute the header checksum."""
    ip[9] = proto
    wr16(ip + 2, total)
    wr16(ip + 10, 0)
    wr16(ip + 10, ip4_checksum(ip, ip4_hlen(ip)))

# ---- UDP ----

cdef inline uint16_t udp_dst_port(const uint8_t *udp) noexcept nogil:
    return rd16(udp + 2)

cdef inline uint16_t udp_length(const uint8_t *udp) noexcept nogil:
    return rd16(udp + 4)

cdef inline void udp_write(uint8_t *udp, uint16_t sport, uint16_t dport, uint16_t length) noexcept nogil:
    """A UDP header with checksum 0 (as RFC 3948 sends ESP in UDP over IPv4)."""
    wr16(udp, sport)
    wr16(udp + 2, dport)
    wr16(udp + 4, length)
    wr16(udp + 6, 0)

cdef inline bint nat_t_is_keepalive(const uint8_t *payload, int n) noexcept nogil:
    """RFC 3948 2.3: a single 0xff byte."""
    return n == 1 and payload[0] == 0xff

cdef inline bint nat_t_is_non_esp(const uint8_t *payload, int n) noexcept nogil:
    """RFC 3948 2.2: four zero bytes where an ESP SPI would be (IKE on port 4500)."""
    return n >= 4 and rd32(payload) == 0

# ---- ESP (RFC 4303) ----

cdef inline uint32_t esp_spi(const uint8_t *esp) noexcept nogil:
    return rd32(esp)

cdef inline uint32_t esp_seq(const uint8_t *esp) noexcept nogil:
    return rd32(esp + 4)

cdef inline void esp_write(uint8_t *esp, uint32_t spi, uint32_t seq_lo) noexcept nogil:
    wr32(esp, spi)
    wr32(esp + 4, seq_lo)

cdef inline int esp_pad_length(int payload) noexcept nogil:
    """Padding that makes payload + pad + trailer a multiple of 4 (RFC 4303 2.4)."""
    return (-(payload + ESP_TRAILER)) & 3

cdef inline void esp_write_trailer(uint8_t *p, int pad, uint8_t next_header) noexcept nogil:
    """Padding 1, 2, 3, ... then the pad length and next header, at p (the payload's end)."""
    cdef int k
    for k in range(pad):
        p[k] = k + 1
    p[pad] = pad
    p[pad + 1] = next_header

cdef inline bint esp_padding_ok(const uint8_t *p, int pad) noexcept nogil:
    """The default padding scheme: bytes 1, 2, 3, ... (RFC 4303 2.4)."""
    cdef int k
    for k in range(pad):
        if p[k] != k + 1:
            return False
    return True
