"""The VPN underlay's receive side: ip4-input and ip4-udp-input.

ip4-input     frames from an L3 (uplink) port: ARP -> arp-input; IPv4 addressed to the
              port's own address -> by protocol: ESP -> esp-decrypt; UDP -> ip4-udp-input.
              errors: not_ip, bad_header, bad_length, bad_checksum, not_for_us, fragment
              (outer fragments are not reassembled: tunnels set DF and frames too large
              for the uplink are dropped and counted at encapsulation), unknown_protocol.
ip4-udp-input by UDP destination port: 4789 -> vxlan-input; 500 (IKE) -> ike-input;
              4500 -> esp-decrypt (ESP in UDP, RFC 3948) or, with the non-ESP marker,
              ike-input (IKE after its move to 4500);
              errors: bad_udp, nat_keepalive, port_unreachable.
"""
import ipaddress

import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport rd16, ETH_HLEN, ETH_P_IP, ETH_P_ARP
from fastpath.nodes.ip4 cimport (rd32, ip4_check, ip4_hlen, ip4_proto, ip4_is_fragment,
                                 IP4_OK, IP4_BAD_HEADER, IP4_BAD_LENGTH, IP_PROTO_UDP,
                                 IP_PROTO_ESP, UDP_HLEN, UDP_PORT_NAT_T, udp_dst_port,
                                 udp_length, nat_t_is_keepalive, nat_t_is_non_esp)
from fastpath.nodes.bridge cimport MAX_PORTS

cdef enum:
    VXLAN_PORT = 4789
    IKE_PORT = 500

cdef enum:
    IN_ERR_NOT_IP = 0
    IN_ERR_BAD_HEADER = 1
    IN_ERR_BAD_LENGTH = 2
    IN_ERR_BAD_CHECKSUM = 3
    IN_ERR_NOT_FOR_US = 4
    IN_ERR_FRAGMENT = 5
    IN_ERR_UNKNOWN_PROTOCOL = 6

cdef enum:
    IN_NEXT_ARP = 1
    IN_NEXT_ESP = 2
    IN_NEXT_UDP = 3


cdef class Ip4Input(Node):
    node_name = "ip4-input"
    next_nodes = ("arp-input", "esp-decrypt", "ip4-udp-input")
    errors = (("not_ip", "neither IPv4 nor ARP"),
              ("bad_header", "malformed IPv4 header"),
              ("bad_length", "IPv4 total length disagrees with the frame"),
              ("bad_checksum", "IPv4 header checksum wrong"),
              ("not_for_us", "IPv4 destination is not this port's address"),
              ("fragment", "IPv4 fragment (not reassembled)"),
              ("unknown_protocol", "IP protocol other than ESP or UDP"))
    cdef object _local
    cdef uint32_t *local_ip          # per port: its IPv4 address (0: none)

    def __init__(self, name=None):
        super().__init__(name)
        self._local = np.zeros(MAX_PORTS, dtype=np.uint32)
        self.local_ip = <uint32_t *> <size_t> self._local.ctypes.data

    def set_address(self, int port, address):
        self._local[port] = int(ipaddress.IPv4Address(address)) if address else 0

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, r, hlen
        cdef uint32_t b
        cdef uint16_t etype, port
        cdef uint8_t *ip
        cdef uint8_t proto
        for i in range(n):
            b = bufs[i]
            port = self.pool.rx_if[b]
            etype = rd16(self.pool.frame(b) + 12)
            if etype == ETH_P_ARP:
                self.pool.next[b] = IN_NEXT_ARP
                continue
            r = -1
            if etype != ETH_P_IP:
                r = IN_ERR_NOT_IP
            else:
                ip = self.pool.frame(b) + ETH_HLEN
                r = ip4_check(ip, self.pool.length[b] - ETH_HLEN)
                if r == IP4_OK:
                    r = -1
                    # a frame may carry Ethernet padding: trim it to the IP length
                    self.pool.length[b] = ETH_HLEN + rd16(ip + 2)
                    proto = ip4_proto(ip)
                    if port >= MAX_PORTS or self.local_ip[port] == 0 or rd32(ip + 16) != self.local_ip[port]:
                        r = IN_ERR_NOT_FOR_US
                    elif ip4_is_fragment(ip):
                        r = IN_ERR_FRAGMENT
                    elif proto == IP_PROTO_ESP:
                        self.pool.next[b] = IN_NEXT_ESP
                    elif proto == IP_PROTO_UDP:
                        self.pool.next[b] = IN_NEXT_UDP
                    else:
                        r = IN_ERR_UNKNOWN_PROTOCOL
                else:
                    r = (IN_ERR_BAD_HEADER if r == IP4_BAD_HEADER else
                         IN_ERR_BAD_LENGTH if r == IP4_BAD_LENGTH else IN_ERR_BAD_CHECKSUM)
            if r >= 0:
                self.pool.error[b] = self.err_base + r
                self.pool.next[b] = ARC_DROP
        return 0


cdef enum:
    UDP_ERR_BAD_UDP = 0
    UDP_ERR_NAT_KEEPALIVE = 1
    UDP_ERR_PORT_UNREACHABLE = 2

cdef enum:
    UDP_NEXT_VXLAN = 1
    UDP_NEXT_ESP = 2
    UDP_NEXT_IKE = 3


cdef class Ip4UdpInput(Node):
    node_name = "ip4-udp-input"
    next_nodes = ("vxlan-input", "esp-decrypt", "ike-input")
    errors = (("bad_udp", "UDP header or length malformed"),
              ("nat_keepalive", "NAT-T keepalive (consumed)"),
              ("port_unreachable", "no service on this UDP port"))

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, hlen, avail, r
        cdef uint32_t b
        cdef uint8_t *ip
        cdef uint8_t *udp
        cdef uint16_t dport
        for i in range(n):
            b = bufs[i]
            ip = self.pool.frame(b) + ETH_HLEN
            hlen = ip4_hlen(ip)
            avail = self.pool.length[b] - ETH_HLEN - hlen
            udp = ip + hlen
            r = -1
            if avail < UDP_HLEN or udp_length(udp) < UDP_HLEN or udp_length(udp) > avail:
                r = UDP_ERR_BAD_UDP
            else:
                dport = udp_dst_port(udp)
                avail = udp_length(udp) - UDP_HLEN
                if dport == VXLAN_PORT:
                    self.pool.next[b] = UDP_NEXT_VXLAN
                elif dport == IKE_PORT:
                    self.pool.next[b] = UDP_NEXT_IKE
                elif dport == UDP_PORT_NAT_T:
                    if nat_t_is_keepalive(udp + UDP_HLEN, avail):
                        r = UDP_ERR_NAT_KEEPALIVE
                    elif nat_t_is_non_esp(udp + UDP_HLEN, avail):
                        self.pool.next[b] = UDP_NEXT_IKE
                    else:
                        self.pool.next[b] = UDP_NEXT_ESP
                else:
                    r = UDP_ERR_PORT_UNREACHABLE
            if r >= 0:
                self.pool.error[b] = self.err_base + r
                self.pool.next[b] = ARC_DROP
        return 0
