"""TCP MSS clamping on tunnel ports (options:tcp_mss_clamp), as VPP's mss-clamp feature:
hosts at MTU 1500 open connections whose segments fit the tunnel, with no MTU change on
the hosts and no ICMP (fastpath is a bridge: nobody would send "fragmentation needed").

tcp-mss-clamp-output  between interface-output and vxlan-encap, for a tunnel port with a
                      clamp (pool.tx_if); next: vxlan-encap.
tcp-mss-clamp-input   between vxlan-input and ethernet-input, for frames that came out of
                      such a tunnel (pool.rx_if); next: ethernet-input.

Both look at TCP SYN and SYN-ACK segments in IPv4 or IPv6 (TCP right after the fixed
header), untagged or under up to two VLAN tags, and lower an MSS option larger than the
port's clamp for that IP version to the clamp. A SYN without an MSS option is left
alone: no option is added (as VPP). The TCP checksum is updated incrementally (RFC 1624
eqn. 3); a frame with a partial checksum (OL_CSUM_PARTIAL) keeps its checksum field,
which holds only the pseudo-header sum: the new option bytes are summed when the
checksum is finished. Every frame goes on; nothing is dropped.

counters (show errors; not drops): clamped (MSS option lowered), bad_tcp_options (a SYN
whose option list is cut short, has a length below 2 or runs past the TCP header, or an
MSS option whose length is not 4: left as it is).
"""
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.buffer cimport BufferPool, OL_CSUM_PARTIAL
from fastpath.graph.node cimport Node
from fastpath.nodes.ethernet cimport rd16, wr16, ETH_P_IP
from fastpath.nodes.offload cimport l3_offset, csum_fold
from fastpath.nodes.bridge cimport MAX_PORTS

cdef enum:
    ETH_P_IPV6 = 0x86dd
    IP_PROTO_TCP = 6
    TCP_HLEN = 20
    TCP_SYN = 0x02
    TCPOPT_EOL = 0
    TCPOPT_NOP = 1
    TCPOPT_MSS = 2
    CNT_CLAMPED = 0
    CNT_BAD_OPTIONS = 1
    # what clamp() found
    MSS_UNTOUCHED = 0
    MSS_CLAMPED = 1
    MSS_BAD_OPTIONS = 2

# the smallest clamp a port takes (Linux's TCP_MIN_MSS): below it a host ignores the option
MIN_MSS = 88
# bytes an IPv4 / IPv6 header and a TCP header (no options) take from the inner IP MTU
IP4_TCP_HEADERS = 40
IP6_TCP_HEADERS = 60


def clamp_values(setting, inner_mtu):
    """options:tcp_mss_clamp (None, 'auto' or 'N') -> (IPv4 MSS, IPv6 MSS), 0 = off.
    auto: the largest segments an inner IP packet of inner_mtu bytes carries (None: not
    known yet, e.g. no uplink, so off); N: that MSS for both IP versions."""
    if setting is None:
        return (0, 0)
    if str(setting) == "auto":
        if inner_mtu is None:
            return (0, 0)
        return (max(inner_mtu - IP4_TCP_HEADERS, MIN_MSS), max(inner_mtu - IP6_TCP_HEADERS, MIN_MSS))
    n = parse_clamp(setting)
    return (n, n)


def parse_clamp(setting):
    """'auto' -> 'auto', 'N' -> N (MIN_MSS..65535); ValueError otherwise."""
    if str(setting) == "auto":
        return "auto"
    try:
        n = int(str(setting))
    except ValueError:
        raise ValueError(f"options:tcp_mss_clamp: {setting!r} is not auto or an MSS") from None
    if not MIN_MSS <= n <= 65535:
        raise ValueError(f"options:tcp_mss_clamp: {n} out of range {MIN_MSS}..65535")
    return n


cdef inline int clamp(BufferPool pool, uint32_t b, uint16_t mss4, uint16_t mss6) noexcept nogil:
    """Lower frame b's MSS option to the clamp for its IP version: MSS_*."""
    cdef uint8_t *f = pool.frame(b)
    cdef uint32_t n = pool.length[b], l4, end, o, oend, pos, w, ihl
    cdef int l3 = l3_offset(f, n)
    cdef uint16_t etype, mss, old
    cdef uint8_t kind, olen
    cdef uint64_t s
    if l3 < 0:
        return MSS_UNTOUCHED
    etype = rd16(f + l3 - 2)
    if etype == ETH_P_IP:
        if <uint32_t> l3 + 20 > n or (f[l3] >> 4) != 4 or f[l3 + 9] != IP_PROTO_TCP:
            return MSS_UNTOUCHED
        if rd16(f + l3 + 6) & 0x1fff:
            return MSS_UNTOUCHED             # a later fragment: no TCP header in it
        ihl = (f[l3] & 15) * 4
        if ihl < 20:
            return MSS_UNTOUCHED
        end = <uint32_t> l3 + rd16(f + l3 + 2)
        l4 = <uint32_t> l3 + ihl
        mss = mss4
    elif etype == ETH_P_IPV6:
        if <uint32_t> l3 + 40 > n or (f[l3] >> 4) != 6 or f[l3 + 6] != IP_PROTO_TCP:
            return MSS_UNTOUCHED
        end = <uint32_t> l3 + 40 + rd16(f + l3 + 4)
        l4 = <uint32_t> l3 + 40
        mss = mss6
    else:
        return MSS_UNTOUCHED
    if end > n:
        end = n                              # never past the frame, whatever IP says
    if mss == 0 or l4 + TCP_HLEN > end or not (f[l4 + 13] & TCP_SYN):
        return MSS_UNTOUCHED
    oend = l4 + ((f[l4 + 12] >> 4) << 2)
    if oend < l4 + TCP_HLEN or oend > end:
        return MSS_BAD_OPTIONS
    o = l4 + TCP_HLEN
    while o < oend:
        kind = f[o]
        if kind == TCPOPT_EOL:
            break
        if kind == TCPOPT_NOP:
            o += 1
            continue
        if o + 2 > oend:
            return MSS_BAD_OPTIONS
        olen = f[o + 1]
        if olen < 2 or o + olen > oend:
            return MSS_BAD_OPTIONS
        if kind == TCPOPT_MSS:
            if olen != 4:
                return MSS_BAD_OPTIONS
            pos = o + 2
            old = rd16(f + pos)
            if old <= mss:
                return MSS_UNTOUCHED
            if pool.ol_flags[b] & OL_CSUM_PARTIAL:
                # the field holds the pseudo-header sum, which does not cover these bytes
                wr16(f + pos, mss)
                return MSS_CLAMPED
            # RFC 1624: HC' = ~(~HC + ~m + m') over the 16-bit words of the TCP header the
            # value touches -- one, or two when it starts at an odd offset (after a NOP)
            w = l4 + ((pos - l4) & ~1u)
            s = (~rd16(f + l4 + 16)) & 0xffff
            s += (~rd16(f + w)) & 0xffff
            if w != pos:
                s += (~rd16(f + w + 2)) & 0xffff
            wr16(f + pos, mss)
            s += rd16(f + w)
            if w != pos:
                s += rd16(f + w + 2)
            wr16(f + l4 + 16, (~csum_fold(s)) & 0xffff)
            return MSS_CLAMPED
        o += olen
    return MSS_UNTOUCHED


cdef class MssClamp(Node):
    """The clamp table, per sw_if_index and IP version, and the per-packet loop; the two
    nodes differ in which interface of the frame names the tunnel."""
    errors = (("clamped", "TCP SYN whose MSS option was lowered (not a drop)"),
              ("bad_tcp_options", "TCP SYN whose options do not parse, left as it is (not a drop)"))
    cdef object _mss
    cdef uint16_t *mss4
    cdef uint16_t *mss6
    cdef bint by_rx

    def __init__(self, name=None):
        super().__init__(name)
        self._mss = (np.zeros(MAX_PORTS, dtype=np.uint16), np.zeros(MAX_PORTS, dtype=np.uint16))
        self.mss4 = <uint16_t *> <size_t> self._mss[0].ctypes.data
        self.mss6 = <uint16_t *> <size_t> self._mss[1].ctypes.data

    def set_clamp(self, int port, int mss4, int mss6):
        """Clamp SYNs of tunnel port to these MSS values (0: that IP version is not clamped)."""
        self._mss[0][port] = mss4
        self._mss[1][port] = mss6

    def clamp_of(self, int port):
        return (int(self._mss[0][port]), int(self._mss[1][port]))

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, r
        cdef uint32_t b
        cdef uint16_t port
        for i in range(n):
            b = bufs[i]
            port = self.pool.rx_if[b] if self.by_rx else self.pool.tx_if[b]
            self.pool.next[b] = 1
            if port >= MAX_PORTS:
                continue
            r = clamp(self.pool, b, self.mss4[port], self.mss6[port])
            if r == MSS_CLAMPED:
                self.count_error(CNT_CLAMPED)
            elif r == MSS_BAD_OPTIONS:
                self.count_error(CNT_BAD_OPTIONS)
        return 0

    def format_trace(self, uint32_t b):
        port = self.pool.rx_if[b] if self.by_rx else self.pool.tx_if[b]
        m4, m6 = self.clamp_of(port) if port < MAX_PORTS else (0, 0)
        return f"port {port} tcp mss clamp ipv4 {m4 or 'off'} ipv6 {m6 or 'off'}"


cdef class MssClampOutput(MssClamp):
    node_name = "tcp-mss-clamp-output"
    next_nodes = ("vxlan-encap",)

    def __init__(self, name=None):
        super().__init__(name)
        self.by_rx = False


cdef class MssClampInput(MssClamp):
    node_name = "tcp-mss-clamp-input"
    next_nodes = ("ethernet-input",)

    def __init__(self, name=None):
        super().__init__(name)
        self.by_rx = True
