from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    VECTOR_SIZE = 256      # buffers per vector, as VPP's VLIB_FRAME_SIZE
    BUF_HEADROOM = 256     # room before the frame: tag pushes and tunnel headers never copy it
    BUF_DATA = 2048        # largest frame a buffer holds
    BUF_SIZE = BUF_HEADROOM + BUF_DATA
    # the second class: a jumbo frame or a GSO super-frame (IP's 64 KiB and its L2 header)
    BIG_DATA = 65535       # meta.length is 16 bits
    BIG_SIZE = BUF_HEADROOM + 65536 + 256       # and room for a tunnel's trailer
    NO_VLAN = 0xffff       # meta.vlan when the frame is not (yet) in a VLAN

# meta.flags bits
cdef enum:
    F_FLOOD_COPY = 1       # a replica made by a flood
    F_FROM_TUNNEL = 2      # entered through a tunnel port (split horizon)
    F_TAGGED_IN = 4        # arrived with an 802.1Q/802.1ad tag
    F_SVLAN = 8            # its VLAN is an 802.1ad service VLAN: egress tags it 0x88a8
    F_DECRYPTED = 16       # passed ESP decryption and ICV check (set by esp-decrypt)

# meta.ol_flags: the offload state a frame carries from the port that received it to the one
# that sends it, as virtio_net_hdr and VPP's buffer offload flags hold it
cdef enum:
    OL_CSUM_PARTIAL = 1    # L4 checksum not filled in: the field holds the pseudo-header sum
    OL_CSUM_VALID = 2      # the sender vouches for the L4 checksum (VIRTIO_NET_HDR_F_DATA_VALID)
    OL_GSO_TCP4 = 4        # a TCP/IPv4 super-frame, to be cut into gso_size segments
    OL_GSO_TCP6 = 8        # a TCP/IPv6 super-frame
    OL_GSO_ECN = 16        # its first segment may carry CWR
    OL_GSO = OL_GSO_TCP4 | OL_GSO_TCP6


cdef class BufferPool:
    cdef readonly uint32_t n_buffers     # both classes: every index is below this
    cdef readonly uint32_t n_small       # indices 0 .. n_small-1: BUF_DATA bytes each
    cdef readonly uint32_t n_big         # n_small .. n_buffers-1: BIG_DATA bytes each
    cdef readonly object data_array      # numpy uint8 [n_small * BUF_SIZE]
    cdef readonly object big_array       # numpy uint8 [n_big * BIG_SIZE]
    cdef uint8_t *data
    cdef uint8_t *big
    # metadata, struct-of-arrays, indexed by buffer index
    cdef uint16_t *offset                 # start of the frame inside its buffer
    cdef uint16_t *length
    cdef uint16_t *rx_if
    cdef uint16_t *tx_if
    cdef uint16_t *bd                     # bridge index
    cdef uint16_t *vlan                   # VLAN the switch classified the frame into
    cdef uint8_t *pcp
    cdef uint32_t *flags
    cdef uint32_t *trace                  # 0, or the trace record the frame belongs to
    cdef uint16_t *next                   # arc the current node chose (node-local index)
    cdef uint16_t *error                  # global error code, read by error-drop
    cdef uint32_t *aux                    # per-node scratch (e.g. flow index)
    # offload state (OL_*): csum_start and csum_offset as in virtio_net_hdr, but csum_start
    # counted from the L3 header (l4_start) so that tag pushes and pops leave it right
    cdef uint8_t *ol_flags
    cdef uint16_t *l4_start               # L4 header offset from the L3 header
    cdef uint16_t *csum_offset            # checksum field offset from the L4 header
    cdef uint16_t *gso_size               # payload bytes per segment (OL_GSO)
    cdef object _meta                     # keeps the numpy arrays alive
    # free list: a stack of indices
    cdef uint32_t *free_stack
    cdef readonly uint32_t n_free
    cdef uint32_t *big_stack
    cdef readonly uint32_t n_big_free
    cdef readonly uint64_t alloc_failures, big_alloc_failures

    cdef inline uint8_t *frame(self, uint32_t b) noexcept nogil:
        if b < self.n_small:
            return self.data + <size_t>b * BUF_SIZE + self.offset[b]
        return self.big + <size_t>(b - self.n_small) * BIG_SIZE + self.offset[b]

    cdef inline uint32_t room(self, uint32_t b) noexcept nogil:
        """Bytes from the frame's start to the end of its buffer."""
        return (BUF_SIZE if b < self.n_small else BIG_SIZE) - self.offset[b]

    cdef int take(self, uint32_t *stack, uint32_t *n_free, uint64_t *failures,
                  uint32_t *out, int n) noexcept nogil
    cdef int alloc(self, uint32_t *out, int n) noexcept nogil
    cdef int alloc_big(self, uint32_t *out, int n) noexcept nogil
    cdef void reset(self, uint32_t b) noexcept nogil
    cdef void free(self, const uint32_t *bufs, int n) noexcept nogil
    cdef int clone(self, uint32_t b) noexcept nogil
