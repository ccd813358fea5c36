"""gso: cuts a TCP super-frame into segments in software, as VPP's gso node and the
kernel's tcp_gso_segment do, for an output port that cannot take it whole (no TSO, or an
MTU smaller than the segments the sender asked for).

Each segment gets the super-frame's L2, IP and TCP headers, its share of the payload
(gso_size bytes, which interface-output lowered if the egress MTU needs it; the last
one the rest), and
then: IPv4 total length, identification (+1 per segment) and header checksum, or IPv6
payload length; TCP sequence number; FIN and PSH on the last segment only, CWR on the
first only; the full TCP checksum. Segments go back to interface-output with no offload
state; the last one is written over the super-frame in its own buffer.

errors: bad_gso (the headers do not parse as IPv4/IPv6 + TCP within the frame),
no_buffer (a segment the pool could not give: the rest of that super-frame is lost,
counted once).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove
from fastpath.graph.buffer cimport BufferPool, BUF_DATA, OL_GSO_TCP4, OL_CSUM_VALID
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.offload cimport l3_offset, csum_add, csum_fold
from fastpath.nodes.ethernet cimport rd16, wr16
from fastpath.nodes.ip4 cimport ip4_checksum

cdef enum:
    ERR_BAD_GSO = 0
    ERR_NO_BUFFER = 1
    TCP_FIN = 0x01
    TCP_PSH = 0x08
    TCP_CWR = 0x80


cdef class Gso(Node):
    node_name = "gso"
    next_nodes = ("interface-output",)
    sink = True             # every buffer leaves through emit(), segments in order
    errors = (("bad_gso", "GSO super-frame whose headers do not parse"),
              ("no_buffer", "no buffer for a GSO segment"))
    cdef public uint64_t superframes, segments

    cdef int segment(self, uint32_t b) noexcept nogil:
        """Emit b's segments; 0, or an error reason when none was made."""
        cdef uint8_t *f = self.pool.frame(b)
        cdef uint32_t n = self.pool.length[b], l4, hdr, payload, mss, off, take, c
        cdef int l3 = l3_offset(f, n), k = 0
        cdef bint v4 = (self.pool.ol_flags[b] & OL_GSO_TCP4) != 0
        cdef uint32_t seq, ip_len_base, iphl
        cdef uint16_t ip_id = 0
        cdef uint8_t flags0
        cdef uint8_t *s
        cdef uint64_t sum
        cdef uint32_t seg_buf
        cdef bint last
        if l3 < 0:
            return ERR_BAD_GSO
        l4 = <uint32_t> l3 + self.pool.l4_start[b]
        if l4 + 20 > n:
            return ERR_BAD_GSO
        hdr = l4 + ((f[l4 + 12] >> 4) << 2)
        if hdr > n or hdr < l4 + 20:
            return ERR_BAD_GSO
        if v4:
            if (f[l3] >> 4) != 4 or f[l3 + 9] != 6:
                return ERR_BAD_GSO
            iphl = (f[l3] & 15) * 4
            if iphl < 20 or <uint32_t> l3 + iphl > l4:
                return ERR_BAD_GSO
            ip_id = rd16(f + l3 + 4)
        else:
            if (f[l3] >> 4) != 6 or l4 < <uint32_t> l3 + 40:
                return ERR_BAD_GSO
        payload = n - hdr
        mss = self.pool.gso_size[b]
        if hdr + mss > BUF_DATA and hdr + 1 <= BUF_DATA:
            mss = BUF_DATA - hdr       # a segment fits a small buffer
        if mss == 0 or hdr + mss > BUF_DATA:
            return ERR_BAD_GSO
        seq = (<uint32_t> f[l4 + 4] << 24) | (<uint32_t> f[l4 + 5] << 16) | (<uint32_t> f[l4 + 6] << 8) | f[l4 + 7]
        flags0 = f[l4 + 13]
        off = 0
        while True:
            take = payload - off
            last = take <= mss
            if not last:
                take = mss
            if last:
                seg_buf = b              # the last segment goes where the super-frame was
                s = f
                if off:
                    memmove(s + hdr, f + hdr + off, take)
            else:
                if self.pool.alloc(&seg_buf, 1) != 1:
                    return ERR_NO_BUFFER
                s = self.pool.frame(seg_buf)
                memcpy(s, f, hdr)
                memcpy(s + hdr, f + hdr + off, take)
                self.pool.rx_if[seg_buf] = self.pool.rx_if[b]
                self.pool.tx_if[seg_buf] = self.pool.tx_if[b]
                self.pool.bd[seg_buf] = self.pool.bd[b]
                self.pool.vlan[seg_buf] = self.pool.vlan[b]
                self.pool.pcp[seg_buf] = self.pool.pcp[b]
                self.pool.flags[seg_buf] = self.pool.flags[b]
                self.pool.trace[seg_buf] = self.pool.trace[b]
            self.pool.length[seg_buf] = hdr + take
            self.pool.ol_flags[seg_buf] = OL_CSUM_VALID
            # IP
            if v4:
                wr16(s + l3 + 2, hdr - l3 + take)
                wr16(s + l3 + 4, <uint16_t> (ip_id + k))
                wr16(s + l3 + 10, 0)
                wr16(s + l3 + 10, ip4_checksum(s + l3, iphl))
            else:
                wr16(s + l3 + 4, hdr - l3 - 40 + take)
            # TCP
            c = seq + off
            s[l4 + 4] = c >> 24
            s[l4 + 5] = (c >> 16) & 0xff
            s[l4 + 6] = (c >> 8) & 0xff
            s[l4 + 7] = c & 0xff
            s[l4 + 13] = flags0
            if not last:
                s[l4 + 13] &= ~(TCP_FIN | TCP_PSH)
            if k > 0:
                s[l4 + 13] &= ~TCP_CWR
            # full checksum: pseudo-header + TCP header + payload
            sum = 0
            if v4:
                sum = csum_add(sum, s + l3 + 12, 8)
            else:
                sum = csum_add(sum, s + l3 + 8, 32)
            sum += 6 + (hdr - l4 + take)
            wr16(s + l4 + 16, 0)
            sum = csum_add(sum, s + l4, hdr - l4 + take)
            wr16(s + l4 + 16, ~csum_fold(sum) & 0xffff)
            k += 1
            self.pool.next[seg_buf] = 1
            self.emit(seg_buf)
            if last:
                break
            off += take
        self.segments += k
        return -1

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, r
        cdef uint32_t b
        for i in range(n):
            b = bufs[i]
            r = self.segment(b)
            if r >= 0:
                self.pool.error[b] = self.err_base + r
                self.pool.next[b] = ARC_DROP
                self.emit(b)
            else:
                self.superframes += 1       # b went on as the last segment
        return 0

    def stats(self):
        return {"superframes": self.superframes, "segments": self.segments}
