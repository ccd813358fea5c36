"""VXLAN tunnel ports (RFC 7348): vxlan-encap and vxlan-input.

vxlan-encap  the output node of every vxlan port: puts Ethernet + IPv4 + UDP + VXLAN
             (50 bytes) in front of the frame, in the headroom, and sends it to the uplink
             -- through esp-encrypt when the tunnel has an outbound SA (pool.aux = SA
             index). The outer IPv4 header has DF set and TTL 64; the UDP source port is
             a hash of the inner MACs (RFC 7348 5), or the port set_source_port fixed
             (IKE-keyed tunnels: the traffic selectors name udp/4789 on both ends, and
             under ESP the entropy is invisible anyway); the UDP checksum is 0.
             errors: no_tunnel, unresolved (next hop has no ARP entry yet), too_big
             (outer packet, ESP overhead included, larger than the uplink MTU: counted
             drop, no fragmentation),
             no_headroom, no_sa (an IPsec tunnel whose SA is not up yet).
vxlan-input  (after ip4-udp-input) finds the tunnel by (outer source, VNI), checks the
             packet came through ESP when the tunnel requires it, strips the outer headers
             and hands the inner frame to ethernet-input as if it arrived on the tunnel
             port (through tcp-mss-clamp-input when the tunnel clamps the TCP MSS). The
             inner frame is what the UDP length says (after the UDP and VXLAN
             headers), not what the IPv4 total length says: bytes the IPv4 packet carries
             past the UDP datagram are not part of the frame. errors: bad_udp_length (UDP
             length larger than the IPv4 packet carries, or shorter than UDP + VXLAN
             headers), bad_vxlan, no_tunnel, not_protected (cleartext on an IPsec
             tunnel), runt.
"""
import ipaddress

import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from fastpath.graph.buffer cimport F_DECRYPTED
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport rd16, wr16, ETH_HLEN, ETH_P_IP, mac_u64
from fastpath.nodes.ip4 cimport (rd32, wr32, ip4_hlen, ip4_total_length, ip4_checksum, udp_write,
                                 udp_length, IP4_HLEN, UDP_HLEN, IP_PROTO_UDP)
from fastpath.nodes.bridge cimport MAX_PORTS

cdef enum:
    VXLAN_HLEN = 8
    VXLAN_PORT = 4789
    OUTER_LEN = 14 + 20 + 8 + 8
    MAX_TUNNELS = 1024



def encap_overhead(bint ipsec, bint esp_in_udp=False):
    """Bytes a tunnel puts around an inner frame (its Ethernet header included) in the
    outer IPv4 packet, at most: IPv4 + UDP + VXLAN, and what esp-encrypt adds -- ESP
    header 8 + IV 8 + padding <= 3 + trailer 2 + ICV 16, and 8 more in UDP. vxlan-encap
    counts a frame as too_big by this; the tunnel port's MTU and the auto MSS clamp
    come from it."""
    return OUTER_LEN - ETH_HLEN + ((37 + (8 if esp_in_udp else 0)) if ipsec else 0)


cdef enum:
    ENC_ERR_NO_TUNNEL = 0
    ENC_ERR_UNRESOLVED = 1
    ENC_ERR_TOO_BIG = 2
    ENC_ERR_NO_HEADROOM = 3
    ENC_ERR_NO_SA = 4

cdef enum:
    ENC_NEXT_OUTPUT = 1
    ENC_NEXT_ESP = 2


ctypedef struct tunnel_t:
    uint32_t local_ip
    uint32_t remote_ip
    uint32_t vni
    uint16_t uplink            # sw_if_index of the L3 port it leaves by
    uint16_t mtu               # the uplink's MTU
    uint8_t nh_mac[6]          # next hop (remote or gateway), from ARP
    uint8_t src_mac[6]         # the uplink's MAC
    uint8_t resolved
    uint8_t ipsec              # 0: cleartext VXLAN; 1: needs an SA
    uint8_t overhead           # what esp-encrypt adds at most (counted against the MTU)
    uint32_t sa                # outbound SA index (0: none yet)
    uint16_t src_port          # fixed UDP source port (0: hash of the inner MACs)


cdef class VxlanEncap(Node):
    node_name = "vxlan-encap"
    next_nodes = ("interface-output", "esp-encrypt")
    errors = (("no_tunnel", "output port is not a vxlan tunnel"),
              ("unresolved", "tunnel next hop not resolved by ARP yet"),
              ("too_big", "encapsulated frame larger than the uplink MTU"),
              ("no_headroom", "no headroom for the outer headers"),
              ("no_sa", "IPsec tunnel without an outbound SA yet"))
    cdef object _t
    cdef tunnel_t *t               # indexed by the tunnel port's sw_if_index
    cdef uint16_t ip_id

    def __init__(self, name=None):
        super().__init__(name)
        self._t = np.zeros(MAX_PORTS * sizeof(tunnel_t), dtype=np.uint8)
        self.t = <tunnel_t *> <size_t> self._t.ctypes.data

    def set_tunnel(self, int port, local_ip, remote_ip, int vni, int uplink, int mtu,
                   bytes src_mac, bint ipsec, bint esp_in_udp=False):
        cdef tunnel_t *x = &self.t[port]
        x.local_ip = int(ipaddress.IPv4Address(local_ip))
        x.remote_ip = int(ipaddress.IPv4Address(remote_ip))
        x.vni = vni
        x.uplink = uplink
        x.mtu = mtu
        memcpy(x.src_mac, <const char *> src_mac, 6)
        x.ipsec = ipsec
        x.overhead = encap_overhead(ipsec, esp_in_udp) - (OUTER_LEN - ETH_HLEN)
        x.resolved = 0
        x.sa = 0

    def clear_tunnel(self, int port):
        self._t[port * sizeof(tunnel_t):(port + 1) * sizeof(tunnel_t)] = 0

    def set_next_hop(self, int port, mac):
        """mac: 6 bytes, or None when the next hop is (no longer) resolved."""
        cdef tunnel_t *x = &self.t[port]
        if mac is None:
            x.resolved = 0
        else:
            memcpy(x.nh_mac, <const char *> mac, 6)
            x.resolved = 1

    def set_sa(self, int port, int sa_index):
        self.t[port].sa = sa_index

    def set_source_port(self, int port, int src_port):
        """Send the tunnel's packets from UDP port src_port (0: a hash per inner flow)."""
        self.t[port].src_port = src_port

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b, inner
        cdef uint16_t port, sport
        cdef uint64_t h
        cdef uint8_t *p
        cdef uint8_t *ip
        cdef tunnel_t *x
        for i in range(n):
            b = bufs[i]
            port = self.pool.tx_if[b]
            x = &self.t[port] if port < MAX_PORTS else NULL
            if x == NULL or x.remote_ip == 0:
                self.drop(b, ENC_ERR_NO_TUNNEL)
                continue
            if not x.resolved:
                self.drop(b, ENC_ERR_UNRESOLVED)
                continue
            if x.ipsec and x.sa == 0:
                self.drop(b, ENC_ERR_NO_SA)
                continue
            inner = self.pool.length[b]
            if inner + OUTER_LEN - ETH_HLEN + x.overhead > x.mtu:
                self.drop(b, ENC_ERR_TOO_BIG)
                continue
            if self.pool.offset[b] < OUTER_LEN:
                self.drop(b, ENC_ERR_NO_HEADROOM)
                continue
            # RFC 7348: the source port carries entropy from the inner frame
            p = self.pool.frame(b)
            h = (mac_u64(p) ^ (mac_u64(p + 6) * 0x9E3779B97F4A7C15ULL))
            sport = 49152 + <uint16_t> ((h ^ (h >> 29) ^ (h >> 47)) & 0x3fff)
            if x.src_port:
                sport = x.src_port
            self.pool.offset[b] = self.pool.offset[b] - OUTER_LEN
            self.pool.length[b] = self.pool.length[b] + OUTER_LEN
            p = self.pool.frame(b)
            memcpy(p, x.nh_mac, 6)
            memcpy(p + 6, x.src_mac, 6)
            wr16(p + 12, ETH_P_IP)
            ip = p + ETH_HLEN
            ip[0] = 0x45
            ip[1] = 0
            wr16(ip + 2, IP4_HLEN + UDP_HLEN + VXLAN_HLEN + inner)
            self.ip_id += 1
            wr16(ip + 4, self.ip_id)
            wr16(ip + 6, 0x4000)                  # DF
            ip[8] = 64
            ip[9] = IP_PROTO_UDP
            wr16(ip + 10, 0)
            wr32(ip + 12, x.local_ip)
            wr32(ip + 16, x.remote_ip)
            wr16(ip + 10, ip4_checksum(ip, IP4_HLEN))
            udp_write(ip + IP4_HLEN, sport, VXLAN_PORT, UDP_HLEN + VXLAN_HLEN + inner)
            p = ip + IP4_HLEN + UDP_HLEN
            wr32(p, 0x08000000)                   # flags: I (VNI valid)
            wr32(p + 4, x.vni << 8)
            self.pool.tx_if[b] = x.uplink
            if x.ipsec:
                self.pool.aux[b] = x.sa
                self.pool.next[b] = ENC_NEXT_ESP
            else:
                self.pool.next[b] = ENC_NEXT_OUTPUT
        return 0

    cdef inline void drop(self, uint32_t b, int reason) noexcept nogil:
        self.pool.error[b] = self.err_base + reason
        self.pool.next[b] = ARC_DROP

    def format_trace(self, uint32_t b):
        return f"vxlan encap -> uplink {self.pool.tx_if[b]} ({self.next_names[self.pool.next[b]]})"


cdef enum:
    DEC_ERR_BAD_VXLAN = 0
    DEC_ERR_NO_TUNNEL = 1
    DEC_ERR_NOT_PROTECTED = 2
    DEC_ERR_RUNT = 3
    DEC_ERR_BAD_LENGTH = 4


cdef class VxlanInput(Node):
    node_name = "vxlan-input"
    next_nodes = ("ethernet-input", "tcp-mss-clamp-input")
    errors = (("bad_vxlan", "VXLAN header malformed (I flag clear)"),
              ("no_tunnel", "no tunnel for this source and VNI"),
              ("not_protected", "cleartext VXLAN on an IPsec tunnel"),
              ("runt", "inner frame shorter than an Ethernet header"),
              ("bad_udp_length", "UDP length past the IPv4 packet or shorter than UDP + VXLAN headers"))
    cdef object _keys
    cdef uint64_t *key             # (remote ip << 24 | vni) per tunnel slot
    cdef uint16_t *port
    cdef uint8_t *ipsec
    cdef uint8_t *next_arc         # ethernet-input, or tcp-mss-clamp-input first
    cdef int n_tunnels

    def __init__(self, name=None):
        super().__init__(name)
        self._keys = (np.zeros(MAX_TUNNELS, dtype=np.uint64), np.zeros(MAX_TUNNELS, dtype=np.uint16),
                      np.zeros(MAX_TUNNELS, dtype=np.uint8), np.zeros(MAX_TUNNELS, dtype=np.uint8))
        self.key = <uint64_t *> <size_t> self._keys[0].ctypes.data
        self.port = <uint16_t *> <size_t> self._keys[1].ctypes.data
        self.ipsec = <uint8_t *> <size_t> self._keys[2].ctypes.data
        self.next_arc = <uint8_t *> <size_t> self._keys[3].ctypes.data
        self.n_tunnels = 0
        self.tunnels = {}

    cdef public dict tunnels            # sw_if_index -> (remote ip, vni, ipsec, mss clamp)

    def set_tunnel(self, int port, remote_ip, int vni, bint ipsec, bint mss_clamp=False):
        self.tunnels[port] = (int(ipaddress.IPv4Address(remote_ip)), vni, ipsec, mss_clamp)
        self._rebuild()

    def set_mss_clamp(self, int port, bint on):
        """Send what comes out of tunnel port through tcp-mss-clamp-input (on) or not."""
        if port in self.tunnels:
            self.tunnels[port] = self.tunnels[port][:3] + (on,)
            self._rebuild()

    def clear_tunnel(self, int port):
        self.tunnels.pop(port, None)
        self._rebuild()

    def _rebuild(self):
        if len(self.tunnels) > MAX_TUNNELS:
            raise ValueError(f"at most {MAX_TUNNELS} tunnels")
        self.n_tunnels = 0
        for i, (port, (rip, vni, ipsec, clamp)) in enumerate(sorted(self.tunnels.items())):
            self._keys[0][i] = (rip << 24) | vni
            self._keys[1][i] = port
            self._keys[2][i] = ipsec
            self._keys[3][i] = 2 if clamp else 1
        self.n_tunnels = len(self.tunnels)

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, k, hlen, r, found, ulen, carried
        cdef uint32_t b
        cdef uint64_t key
        cdef uint8_t *ip
        cdef uint8_t *vx
        for i in range(n):
            b = bufs[i]
            ip = self.pool.frame(b) + ETH_HLEN
            hlen = ip4_hlen(ip)
            vx = ip + hlen + UDP_HLEN
            r = -1
            # what the IPv4 packet carries behind its header (the frame holds at least that:
            # ip4-input trimmed Ethernet padding) -- the UDP datagram must fit in it
            carried = <int> ip4_total_length(ip) - hlen
            if carried > <int> self.pool.length[b] - ETH_HLEN - hlen:
                carried = <int> self.pool.length[b] - ETH_HLEN - hlen
            ulen = udp_length(ip + hlen) if carried >= UDP_HLEN else 0
            if carried < UDP_HLEN or ulen > carried or ulen < UDP_HLEN + VXLAN_HLEN:
                r = DEC_ERR_BAD_LENGTH
            elif ulen < UDP_HLEN + VXLAN_HLEN + ETH_HLEN:
                r = DEC_ERR_RUNT
            elif not (vx[0] & 0x08):
                r = DEC_ERR_BAD_VXLAN
            else:
                key = (<uint64_t> rd32(ip + 12) << 24) | (rd32(vx + 4) >> 8)
                found = -1
                for k in range(self.n_tunnels):
                    if self.key[k] == key:
                        found = k
                        break
                if found < 0:
                    r = DEC_ERR_NO_TUNNEL
                elif self.ipsec[found] and not (self.pool.flags[b] & F_DECRYPTED):
                    r = DEC_ERR_NOT_PROTECTED
                else:
                    # the inner frame is the UDP payload after the VXLAN header: nothing
                    # the IPv4 packet carries past the datagram belongs to it
                    k = ETH_HLEN + hlen + UDP_HLEN + VXLAN_HLEN
                    self.pool.offset[b] = self.pool.offset[b] + k
                    self.pool.length[b] = ulen - UDP_HLEN - VXLAN_HLEN
                    self.pool.rx_if[b] = self.port[found]
                    self.pool.flags[b] = 0
                    self.pool.ol_flags[b] = 0       # the outer packet's, not the inner frame's
                    self.pool.next[b] = self.next_arc[found]
            if r >= 0:
                self.pool.error[b] = self.err_base + r
                self.pool.next[b] = ARC_DROP
        return 0

    def format_trace(self, uint32_t b):
        return f"vxlan decap -> port {self.pool.rx_if[b]}"
