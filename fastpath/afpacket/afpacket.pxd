from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.node cimport Node
from fastpath.nodes.offload cimport virtio_net_hdr


cdef class AfPacketSocket:
    cdef readonly str ifname
    cdef readonly int ifindex
    cdef readonly int rx_fd              # TPACKET_V2 receive ring; the fd to poll()
    cdef readonly int tx_fd              # TPACKET_V2 transmit ring, kicked with sendto()
    cdef readonly int big_fd             # no ring: frames larger than a ring slot, one send each
    cdef readonly int mtu
    cdef readonly object fanout_group
    cdef readonly bint ignores_outgoing  # the kernel filters our (and the host's) outgoing frames

    # receive ring: rx_frames slots of rx_frame_size bytes, filled by the kernel in order
    cdef uint8_t *rx_ring
    cdef size_t rx_ring_size
    cdef readonly uint32_t rx_frame_size, rx_frames
    cdef readonly uint32_t rx_block_size  # slots are grouped in blocks of this many bytes
    cdef uint32_t rx_head                # the slot to read next

    # transmit ring: tx_frames slots of tx_frame_size bytes
    cdef uint8_t *tx_ring
    cdef size_t tx_ring_size
    cdef readonly uint32_t tx_frame_size, tx_frames
    cdef uint32_t tx_head                # the next slot to fill; the kernel sends from its own cursor
    cdef readonly uint32_t tx_slot_data  # largest frame a slot holds
    cdef readonly uint32_t tx_max_len    # largest untagged frame the kernel accepts (MTU + 14)

    # PACKET_STATISTICS, accumulated (the kernel resets them on each read)
    cdef uint64_t k_packets, k_drops, k_freezes

    cdef _fail(self, what)
    cdef _open_big(self, bint qdisc_bypass)
    cdef _setopt(self, int fd, int level, int name, const void *val, unsigned int n, what)
    cdef _bind(self, int fd, uint16_t proto)
    cdef _open_rx(self, uint32_t frame_size, uint32_t frames, bint promisc, fanout_group, long page)
    cdef _open_tx(self, uint32_t frame_size, uint32_t frames, bint qdisc_bypass, long page)
    cdef _read_kernel_stats(self)
    cdef void _close(self) noexcept nogil
    cdef uint32_t reclaim_tx(self, uint64_t *nbytes) noexcept nogil
    cdef int take_error(self) noexcept nogil


cdef class AfPacketInput(Node):
    cdef readonly AfPacketSocket sock
    cdef public uint16_t sw_if_index
    cdef public uint64_t rx_packets, rx_bytes
    cdef public uint64_t rx_too_big, rx_no_buffer, rx_runt
    cdef public uint64_t rx_outgoing_skipped, rx_vlan_restored, rx_link_down
    cdef public uint64_t rx_big, rx_bad_offload, rx_offload_unsupported
    cdef uint32_t empty_polls

    cdef int recv_whole(self, uint32_t b, uint32_t expect, virtio_net_hdr *vh) noexcept nogil


cdef class AfPacketOutput(Node):
    cdef readonly AfPacketSocket sock
    cdef public uint16_t sw_if_index
    cdef public uint64_t tx_packets, tx_bytes
    cdef public uint64_t tx_too_big, tx_ring_full, tx_link_down, tx_no_socket
    cdef public uint64_t tx_kicks, tx_kick_errors, tx_big, tx_big_errors

    cdef void kick(self) noexcept nogil
    cdef bint send_big(self, uint32_t b) noexcept nogil
