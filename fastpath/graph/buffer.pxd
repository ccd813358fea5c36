from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    VECTOR_SIZE = 256      # buffers per vector, as VPP's VLIB_FRAME_SIZE
    BUF_HEADROOM = 256     # room before the frame: tag pushes and tunnel headers never copy it
    BUF_DATA = 2048        # largest frame a buffer holds
    BUF_SIZE = BUF_HEADROOM + BUF_DATA
    NO_VLAN = 0xffff       # meta.vlan when the frame is not (yet) in a VLAN

# meta.flags bits
cdef enum:
    F_FLOOD_COPY = 1       # a replica made by a flood
    F_FROM_TUNNEL = 2      # entered through a tunnel port (split horizon)
    F_TAGGED_IN = 4        # arrived with an 802.1Q/802.1ad tag
    F_SVLAN = 8            # its VLAN is an 802.1ad service VLAN: egress tags it 0x88a8
    F_DECRYPTED = 16       # passed ESP decryption and ICV check (set by esp-decrypt)


cdef class BufferPool:
    cdef readonly uint32_t n_buffers
    cdef readonly object data_array      # numpy uint8 [n_buffers * BUF_SIZE]
    cdef uint8_t *data
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
    cdef object _meta                     # keeps the numpy arrays alive
    # free list: a stack of indices
    cdef uint32_t *free_stack
    cdef readonly uint32_t n_free
    cdef readonly uint64_t alloc_failures

    cdef inline uint8_t *frame(self, uint32_t b) noexcept nogil:
        return self.data + <size_t>b * BUF_SIZE + self.offset[b]

    cdef int alloc(self, uint32_t *out, int n) noexcept nogil
    cdef void free(self, const uint32_t *bufs, int n) noexcept nogil
    cdef int clone(self, uint32_t b) noexcept nogil
