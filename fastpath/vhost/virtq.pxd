cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.buffer cimport BufferPool
from fastpath.nodes.offload cimport virtio_net_hdr

cdef enum:
    MAX_REGIONS = 8            # VHOST_MEMORY_BASELINE_NREGIONS
    MAX_QUEUE_SIZE = 32768     # split virtqueues: a power of two up to 2^15
    MAX_INDIRECT = 65536       # entries of one indirect table we accept to walk

# Why a frame was dropped or a queue stopped: the index into ERRORS (virtq.pyx), which
# both vhost-user nodes declare as their error table.
cdef enum:
    E_NOT_READY = 0
    E_RING_FULL
    E_TOO_BIG
    E_RUNT
    E_DESC_BAD_ADDR
    E_DESC_BAD_FLAGS
    E_DESC_BAD_NEXT
    E_CHAIN_LOOP
    E_BAD_INDIRECT
    E_EMPTY_CHAIN
    E_BAD_HEAD
    E_AVAIL_JUMP
    E_BAD_OFFLOAD
    E_OFFLOAD_UNSUPPORTED
    E_NO_BIG_BUFFER
    N_ERRORS

# virtio-net feature bits that change what a frame's header may say (virtio 1.1, 5.1.3)
cdef enum:
    NET_F_CSUM = 1 << 0            # the guest may send partial checksums
    NET_F_GUEST_CSUM = 1 << 1      # it takes partial checksums and DATA_VALID
    NET_F_GUEST_TSO4 = 1 << 7      # it takes TCP/IPv4 super-frames
    NET_F_GUEST_TSO6 = 1 << 8
    NET_F_GUEST_ECN = 1 << 9       # ... with the ECN bit
    NET_F_HOST_TSO4 = 1 << 11      # it may send TCP/IPv4 super-frames
    NET_F_HOST_TSO6 = 1 << 12
    NET_F_HOST_ECN = 1 << 13


cdef struct Region:
    uint64_t gpa                 # guest physical address of the first byte
    uint64_t size
    uint64_t uva                 # the front end's virtual address of the first byte
    uint8_t *host                # our address of the first byte
    uint8_t *map_base            # what mmap returned (host - mmap_offset)
    size_t map_len


cdef struct VringDesc:
    uint64_t addr
    uint32_t len
    uint16_t flags
    uint16_t next


cdef struct ChainWalk:          # where a descriptor chain walk is
    VringDesc *table             # the ring's descriptor table, or an indirect table
    uint32_t num                 # entries in that table
    uint32_t idx                 # the next descriptor to read
    uint32_t steps               # descriptors read from that table so far
    bint in_indirect


cdef struct VringUsedElem:
    uint32_t id
    uint32_t len


@cython.final
cdef class GuestMemory:
    cdef Region regions[MAX_REGIONS]
    cdef readonly int n_regions

    cdef uint8_t *gpa_to_host(self, uint64_t gpa, uint64_t length) noexcept nogil
    cdef uint8_t *uva_to_host(self, uint64_t uva, uint64_t length) noexcept nogil
    cdef void _unmap(self) noexcept nogil


@cython.final
cdef class Virtq:
    cdef readonly int index
    cdef readonly GuestMemory mem
    cdef readonly uint32_t num                # queue size; 0 until SET_VRING_NUM
    cdef uint16_t mask
    # ring areas, host addresses (NULL until translated)
    cdef VringDesc *desc
    cdef uint16_t *avail_flags
    cdef uint16_t *avail_idx
    cdef uint16_t *avail_ring
    cdef uint16_t *used_event                 # avail->ring[num]
    cdef uint16_t *used_flags
    cdef uint16_t *used_idx
    cdef VringUsedElem *used_ring
    cdef uint16_t *avail_event                # used->ring[num]
    cdef readonly uint64_t desc_uva, avail_uva, used_uva
    cdef readonly bint addr_set
    cdef readonly uint16_t last_avail_idx     # next avail entry to consume
    cdef readonly uint16_t last_used_idx      # next used entry to fill (published on flush)
    cdef uint16_t signalled_used
    cdef bint signalled_valid
    cdef readonly int kick_fd, call_fd, err_fd
    cdef readonly bint started, enabled, broken, ready
    cdef readonly bint event_idx, mrg_rxbuf, indirect
    cdef readonly uint32_t hdr_len
    cdef readonly uint64_t net_features       # NET_F_* the guest accepted
    cdef readonly int broken_code             # the E_* reason that stopped the queue, -1 if none
    cdef public uint64_t kicks, calls, calls_suppressed, failures
    # frames that crossed with offload state (the queue's direction): partial checksums,
    # super-frames, frames larger than a small buffer
    cdef public uint64_t csum_partial, gso_frames, big_frames
    cdef uint32_t empty_polls

    cdef _close_fds(self)
    cdef _forget(self)
    cdef _clear_pointers(self)
    cdef _update(self)
    cdef void fail(self, int reason, uint64_t *err) noexcept nogil
    cdef void notify(self) noexcept nogil
    cdef void drain_kick(self) noexcept nogil
    cdef void put_used(self, uint32_t head, uint32_t length) noexcept nogil
    cdef int next_desc(self, ChainWalk *w, VringDesc *d, uint64_t *err) noexcept nogil
    cdef int chain_to_buffer(self, BufferPool pool, uint16_t head, uint32_t *b, uint8_t *hdr,
                             uint64_t *err) noexcept nogil
    cdef bint take_offload(self, BufferPool pool, uint32_t b, virtio_net_hdr *h, uint32_t n,
                           uint64_t *err) noexcept nogil
    cdef int guest_header(self, BufferPool pool, uint32_t b, uint8_t *hdr, uint64_t *err) noexcept nogil
    cdef int chain_from_frame(self, uint16_t head, const uint8_t *hdr, const uint8_t *frame,
                              uint32_t pos, uint32_t need, uint8_t **nb, uint64_t *err) noexcept nogil
    cdef int frame_to_guest(self, const uint8_t *hdr, const uint8_t *frame, uint32_t length, uint16_t *n_avail,
                            uint64_t *err) noexcept nogil
    cdef int tx_burst(self, BufferPool pool, uint32_t *bufs, int room, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil
    cdef int rx_burst(self, BufferPool pool, uint32_t *bufs, int n, uint64_t *err,
                      uint64_t *nbytes) noexcept nogil
