# The Linux socket, AF_PACKET and ring declarations the AF_PACKET port (afpacket.pyx) and
# the traffic generator (pktgen.pyx) share.
from libc.stdint cimport uint16_t, uint32_t

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    enum:
        AF_PACKET
        SOCK_RAW
        SOCK_CLOEXEC
        SOCK_NONBLOCK
        SOL_SOCKET
        SOL_PACKET
        SO_ERROR
        SO_SNDBUF
        SO_SNDBUFFORCE
        SO_RCVBUF
        SO_RCVBUFFORCE
        MSG_DONTWAIT
        MSG_TRUNC
    int socket(int domain, int type, int protocol)
    int bind(int fd, const sockaddr *addr, socklen_t len)
    int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
    int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr, socklen_t len)
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    ssize_t sendmsg(int fd, const msghdr *msg, int flags)
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags)
    ssize_t recvmsg(int fd, msghdr *msg, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)


cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
    int poll(pollfd *fds, unsigned long nfds, int timeout)

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)

cdef extern from "<sys/ioctl.h>" nogil:
    int ioctl(int fd, unsigned long request, ...)

cdef extern from "<net/if.h>" nogil:
    enum:
        IFNAMSIZ
    unsigned int if_nametoindex(const char *name)
    struct ifreq:
        char ifr_name[16]
        int ifr_mtu

cdef extern from "<linux/sockios.h>" nogil:
    enum:
        SIOCGIFMTU

cdef extern from "<linux/if_ether.h>" nogil:
    enum:
        ETH_P_ALL

cdef extern from "<linux/if_packet.h>" nogil:
    enum:
        PACKET_ADD_MEMBERSHIP
        PACKET_RX_RING
        PACKET_TX_RING
        PACKET_STATISTICS
        PACKET_VERSION
        PACKET_LOSS
        PACKET_FANOUT
        PACKET_QDISC_BYPASS
        PACKET_IGNORE_OUTGOING
        PACKET_VNET_HDR
        PACKET_COPY_THRESH
        PACKET_FANOUT_HASH
        PACKET_FANOUT_FLAG_DEFRAG
        PACKET_MR_PROMISC
        PACKET_OUTGOING
        TPACKET_V2
        TPACKET_V3
        TP_STATUS_KERNEL
        TP_STATUS_USER
        TP_STATUS_VLAN_VALID
        TP_STATUS_VLAN_TPID_VALID
        TP_STATUS_AVAILABLE
        TP_STATUS_SEND_REQUEST
        TP_STATUS_SENDING
        TP_STATUS_COPY
        TP_STATUS_LOSING
        TP_STATUS_WRONG_FORMAT
    size_t TPACKET_ALIGN(size_t)

    struct sockaddr_ll:
        unsigned short sll_family
        uint16_t sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]

    struct tpacket_req:
        unsigned int tp_block_size, tp_block_nr, tp_frame_size, tp_frame_nr

    struct tpacket_req3:
        unsigned int tp_block_size, tp_block_nr, tp_frame_size, tp_frame_nr
        unsigned int tp_retire_blk_tov, tp_sizeof_priv, tp_feature_req_word

    struct packet_mreq:
        int mr_ifindex
        unsigned short mr_type
        unsigned short mr_alen
        unsigned char mr_address[8]

    struct tpacket_stats_v3:
        unsigned int tp_packets, tp_drops, tp_freeze_q_cnt

    struct tpacket_hdr_variant1:
        uint32_t tp_rxhash
        uint32_t tp_vlan_tci
        uint16_t tp_vlan_tpid

    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        uint16_t tp_net
        tpacket_hdr_variant1 hv1

    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt

    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1

    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr

    struct tpacket2_hdr:
        uint32_t tp_status
        uint32_t tp_len
        uint32_t tp_snaplen
        uint16_t tp_mac
        uint16_t tp_net
        uint32_t tp_sec
        uint32_t tp_nsec
        uint16_t tp_vlan_tci
        uint16_t tp_vlan_tpid

    struct tpacket_stats:
        unsigned int tp_packets, tp_drops
