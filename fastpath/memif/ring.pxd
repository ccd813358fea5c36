cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.buffer cimport BufferPool

cdef enum:
    MAX_REGIONS = 16           # regions we map from one peer (hello: max_region = 15)
    MAX_LOG2_RING_SIZE = 14    # rings of up to 16384 slots
    RING_HEADER = 128          # cookie, flags, head | tail | descriptors (cache-line marks)
    RING_HEAD = 6              # byte offsets inside the ring header
    RING_TAIL = 64
    RING_FLAGS = 4
    DESC_SIZE = 16
    MEMIF_COOKIE = 0x3E31F20
    DESC_F_NEXT = 1            # MEMIF_DESC_FLAG_NEXT: the frame goes on in the next slot
    RING_F_MASK_INT = 1        # MEMIF_RING_FLAG_MASK_INT: the consumer polls, do not signal

# Why a frame was dropped or a ring stopped: the index into ERRORS (ring.pyx), which
# both memif nodes declare as their error table.
cdef enum:
    E_NOT_CONNECTED = 0
    E_RING_FULL
    E_TOO_BIG
    E_NO_BIG_BUFFER
    E_RUNT
    E_DESC_BAD_ADDR
    E_DESC_BAD_LENGTH
    E_BAD_CHAIN
    E_INDEX_JUMP
    N_ERRORS


cdef struct MemifDesc:         # memif_desc_t, 16 bytes
    uint16_t flags
    uint16_t region
    uint32_t length
    uint32_t offset
    uint32_t metadata


cdef struct Region:
    uint8_t *base
    uint64_t size
    size_t map_len


@cython.final
cdef class MemifRegions:
    cdef Region r[MAX_REGIONS]
    cdef readonly int n
    cdef size_t populated                  # bytes mapped with MAP_POPULATE

    cdef inline uint8_t *addr(self, uint32_t region, uint32_t offset, uint32_t length) noexcept nogil:
        """Our address of [offset, offset + length) in `region`, or NULL unless all of it
        lies inside that region."""
        if region >= <uint32_t> self.n:
            return NULL
        if <uint64_t> offset + length > self.r[region].size:
            return NULL
        return self.r[region].base + offset

    cdef void _unmap(self) noexcept nogil


@cython.final
cdef class MemifRing:
    cdef readonly MemifRegions regions
    cdef readonly bint s2m                    # direction: slave -> master
    cdef readonly bint slave                  # our role: the buffers are ours
    cdef readonly bint rx                     # we consume this ring
    cdef uint8_t *ring                        # the ring header, NULL while detached
    cdef MemifDesc *desc
    cdef readonly uint32_t size
    cdef uint16_t mask
    cdef readonly uint16_t pos                # next slot we consume (rx) or fill (tx)
    cdef readonly uint16_t posted             # slave rx: the head we published
    cdef readonly uint32_t buffer_size        # slave: the size of our buffers
    cdef uint64_t buffer_offset               # slave: where slot 0's buffer is in region 0
    cdef readonly uint32_t region_index
    cdef readonly uint64_t offset             # where the ring is in its region
    cdef readonly int int_fd                  # the ring's interrupt eventfd, -1: none
    cdef int fail_fd                          # written when the peer breaks the ring
    cdef readonly bint ready, broken
    cdef readonly int broken_code             # the E_* reason that stopped the ring, -1 if none
    cdef bint masked                          # rx: we set MASK_INT (we are polling)
    cdef uint32_t empty_polls
    cdef public uint64_t interrupts, interrupts_masked, wakeups, failures

    cdef void fail(self, int reason, uint64_t *err) noexcept nogil
    cdef void interrupt(self) noexcept nogil
    cdef int rx_avail(self, uint64_t *err) noexcept nogil
    cdef uint8_t *rx_slot(self, uint16_t slot, uint32_t *length, uint16_t *flags,
                          int *reason) noexcept nogil
    cdef void refill(self) noexcept nogil
    cdef int tx_frame(self, const uint8_t *frame, uint32_t length, uint16_t *slot,
                      uint16_t *room, uint64_t *err) noexcept nogil
    cdef int rx_burst(self, BufferPool pool, uint32_t *bufs, int room, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil
    cdef int tx_burst(self, BufferPool pool, uint32_t *bufs, int n, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil
