"""ESP in transport mode over IPv4: AES-GCM (RFC 4303, RFC 4106), optionally in UDP
(RFC 3948). What protects VXLAN between two gateways, as OVS IPsec tunnels do.

The buffer contract: the frame is an Ethernet frame (a 14-byte header, no VLAN tag)
carrying IPv4 -- the IPv4 header starts 14 bytes into the frame. The Ethernet header
moves with the IPv4 header and is otherwise left alone.

esp-encrypt: pool.aux[b] is the index of the outbound SA (set_outbound(index, sa)); 0 is
  never an SA (a buffer nobody gave an SA is dropped, no_sa, not sent in clear).
  [eth][ip4 ..][payload]  ->  [eth][ip4 ..][udp 4500]?[esp spi,seq][iv][payload pad 1,2,.. padlen nh][icv]
  Ethernet + IPv4 header move back into the headroom; the payload is encrypted where it
  is; padding, trailer and ICV go after it (bytes past the IPv4 total length, Ethernet
  padding, are overwritten). IPv4 protocol becomes 50 (or 17, with a checksum-0 UDP
  header, for an SA with encap='udp'), total length and checksum are rewritten.
  next: the node given (default interface-output).
  errors: not_ip4, ip4_length, ip4_checksum, fragment, no_sa, expired, no_headroom,
  too_big (the result would not fit its buffer), seq_exhausted,
  crypto_error.

esp-decrypt: the reverse, for ESP (protocol 50) and ESP in UDP to the NAT-T port (4500).
  Order of checks: IPv4 header (version, IHL, total length against the frame, checksum,
  not a fragment); UDP: length, non-ESP marker (IKE) and NAT keepalive are not ours;
  SA by SPI (set_sa(spi, sa, peer)); the outer source is the SA's peer (when set_sa was given
  one: an SA authenticates its peer's packets only, so a peer cannot pass its packets off as
  another tunnel's); its encapsulation; length; lifetime; anti-replay window;
  then decrypt with ICV check, and only then the window moves; padding (1, 2, 3, ...).
  The restored packet gets protocol = next header, its length and checksum back, and
  the F_DECRYPTED flag (vxlan-input requires it on IPsec tunnels).
  next: by next header: udp_next (default ip4-udp-input) for UDP, other_next (default
  ip4-input) for the rest; set_next(proto, node) for more.
  errors: not_ip4, ip4_length, ip4_checksum, fragment, not_esp, natt_keepalive,
  non_esp_marker, bad_length, no_sa, encap_mismatch, expired, replay, auth_failed,
  bad_padding, dummy (next header 59, discarded as RFC 4303 2.6 says), wrong_peer.

Drops an SA is responsible for are also counted on the SA (SecurityAssociation.stats()).
"""
import ipaddress

import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memmove
from fastpath.graph.buffer cimport BufferPool, BUF_DATA, BIG_DATA, F_DECRYPTED
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport ETH_HLEN, ETH_P_IP, rd16
from fastpath.nodes.ip4 cimport (rd32, IP4_OK, IP_PROTO_UDP, IP_PROTO_ESP, IP_PROTO_NONE, UDP_HLEN,
                                 UDP_PORT_NAT_T, ESP_HLEN, ESP_TRAILER, ip4_check, ip4_hlen,
                                 ip4_total_length, ip4_proto, ip4_is_fragment,
                                 ip4_set_proto_length, udp_write, udp_dst_port, udp_length,
                                 nat_t_is_keepalive, nat_t_is_non_esp, esp_spi, esp_seq,
                                 esp_pad_length, esp_write_trailer, esp_padding_ok)
from fastpath.crypto.sa cimport (SecurityAssociation, ESP_IV_LEN, ESP_ICV_LEN, SA_DROP_REPLAY,
                                 SA_DROP_AUTH_FAILED, SA_DROP_BAD_LENGTH, SA_DROP_BAD_PADDING,
                                 SA_DROP_SEQ_EXHAUSTED, SA_DROP_EXPIRED, SA_DROP_TOO_BIG,
                                 SA_DROP_ENCAP_MISMATCH, SA_DROP_CRYPTO_ERROR)

# errors both nodes share, numbered alike: ip4_check()'s result - 1
cdef enum:
    ERR_NOT_IP4 = 0
    ERR_IP4_LENGTH = 1
    ERR_IP4_CHECKSUM = 2
    ERR_FRAGMENT = 3
    OK = -1

IP4_ERRORS = (("not_ip4", "not an Ethernet frame carrying IPv4"),
              ("ip4_length", "IPv4 total length does not fit the frame"),
              ("ip4_checksum", "bad IPv4 header checksum"),
              ("fragment", "IPv4 fragment: ESP transport mode takes whole packets"))


cdef inline uint32_t _spi_hash(uint32_t spi) noexcept nogil:
    return (spi * 2654435761U) >> 7


cdef class _EspNode(Node):
    """What both ESP nodes keep for the tracer: SPI and sequence number per traced buffer."""
    cdef object _tr_spi, _tr_seq
    cdef uint32_t *tr_spi
    cdef uint64_t *tr_seq

    def _attach(self, graph, int index, uint16_t err_base, error_counts):
        Node._attach(self, graph, index, err_base, error_counts)
        self._tr_spi = np.zeros(self.pool.n_buffers, dtype=np.uint32)
        self._tr_seq = np.zeros(self.pool.n_buffers, dtype=np.uint64)
        self.tr_spi = <uint32_t *> <size_t> self._tr_spi.ctypes.data
        self.tr_seq = <uint64_t *> <size_t> self._tr_seq.ctypes.data

    def format_trace(self, uint32_t b):
        spi, seq = int(self._tr_spi[b]), int(self._tr_seq[b])
        what = f"spi 0x{spi:08x} seq {seq}" if spi else "no SA"
        a = self.pool.next[b]
        if a == ARC_DROP:
            return f"{what}: dropped"
        return f"{what} -> {self.next_names[a]}"


cdef enum:
    ENC_NO_SA = 4
    ENC_EXPIRED = 5
    ENC_NO_HEADROOM = 6
    ENC_TOO_BIG = 7
    ENC_SEQ_EXHAUSTED = 8
    ENC_CRYPTO_ERROR = 9


cdef class EspEncrypt(_EspNode):
    node_name = "esp-encrypt"
    errors = IP4_ERRORS + (
        ("no_sa", "no outbound SA at the buffer's index"),
        ("expired", "SA lifetime expired"),
        ("no_headroom", "no headroom for the ESP header"),
        ("too_big", "encrypted frame would not fit a buffer"),
        ("seq_exhausted", "sequence number exhausted: the SA needs a new key"),
        ("crypto_error", "OpenSSL failed to encrypt"))
    cdef object _tab                # numpy uintp: SA index -> SecurityAssociation (borrowed)
    cdef void **out_sa
    cdef uint32_t n_out
    cdef dict _sas                  # index -> SecurityAssociation: keeps them alive

    def __init__(self, name=None, next_node="interface-output"):
        super().__init__(name)
        self.next_names = ["error-drop", next_node]
        self._sas = {}
        self._grow(16)

    def _grow(self, n):
        tab = np.zeros(n, dtype=np.uintp)
        if self._tab is not None:
            tab[:len(self._tab)] = self._tab
        self._tab = tab
        self.out_sa = <void **> <size_t> tab.ctypes.data
        self.n_out = n

    def set_outbound(self, uint32_t index, SecurityAssociation sa not None):
        """Frames with pool.aux == index are encrypted with sa (index 0 means "no SA")."""
        if index == 0:
            raise ValueError("outbound SA index 0 is reserved: it means no SA")
        if sa.aead is None:
            raise ValueError("SA not initialised")
        if sa.inbound:
            raise ValueError(f"SA 0x{sa.spi:08x} is inbound")
        if index >= self.n_out:
            self._grow(max(index + 1, 2 * self.n_out))
        self._sas[index] = sa
        self._tab[index] = <size_t> <void *> sa

    def remove_outbound(self, uint32_t index):
        """Frames with this index are dropped (no_sa) from now on; returns the SA or None."""
        if index < self.n_out:
            self._tab[index] = 0
        return self._sas.pop(index, None)

    @property
    def outbound(self):
        return dict(self._sas)

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, r
        cdef uint32_t b, spi
        cdef uint64_t seq
        for i in range(n):
            b = bufs[i]
            spi = 0
            seq = 0
            r = self.encrypt(b, &spi, &seq)
            if r == OK:
                self.pool.next[b] = 1
            else:
                self.pool.error[b] = self.err_base + r
                self.pool.next[b] = ARC_DROP
            if self.pool.trace[b]:
                self.tr_spi[b] = spi
                self.tr_seq[b] = seq
        return 0

    cdef int encrypt(self, uint32_t b, uint32_t *spi, uint64_t *seq) noexcept nogil:
        cdef uint8_t *p = self.pool.frame(b)
        cdef uint8_t *ip
        cdef uint8_t *h
        cdef int flen = self.pool.length[b], r, hlen, total, plen, pad, shift, tail
        cdef uint32_t idx = self.pool.aux[b]
        cdef void *sa
        cdef bint udp
        if flen < ETH_HLEN or rd16(p + 12) != ETH_P_IP:
            return ERR_NOT_IP4
        ip = p + ETH_HLEN
        r = ip4_check(ip, flen - ETH_HLEN)
        if r != IP4_OK:
            return r - 1
        if ip4_is_fragment(ip):
            return ERR_FRAGMENT
        sa = self.out_sa[idx] if idx < self.n_out else NULL
        if sa == NULL:
            return ENC_NO_SA
        spi[0] = (<SecurityAssociation> sa).spi
        if (<SecurityAssociation> sa).expired():
            (<SecurityAssociation> sa).count_drop(SA_DROP_EXPIRED)
            return ENC_EXPIRED
        udp = (<SecurityAssociation> sa).encap_udp
        hlen = ip4_hlen(ip)
        total = ip4_total_length(ip)
        plen = total - hlen
        pad = esp_pad_length(plen)
        shift = ESP_HLEN + ESP_IV_LEN + (UDP_HLEN if udp else 0)
        tail = pad + ESP_TRAILER + ESP_ICV_LEN
        if self.pool.offset[b] < shift:
            return ENC_NO_HEADROOM
        # the result must be a frame its buffer class holds, and the trailer and ICV must fit
        # after the packet where it is
        if (ETH_HLEN + total + shift + tail > (BUF_DATA if b < self.pool.n_small else BIG_DATA)
                or ETH_HLEN + total + tail > <int> self.pool.room(b)):
            (<SecurityAssociation> sa).count_drop(SA_DROP_TOO_BIG)
            return ENC_TOO_BIG
        if (<SecurityAssociation> sa).next_seq(seq) < 0:
            (<SecurityAssociation> sa).count_drop(SA_DROP_SEQ_EXHAUSTED)
            return ENC_SEQ_EXHAUSTED
        esp_write_trailer(ip + total, pad, ip4_proto(ip))
        memmove(p - shift, p, ETH_HLEN + hlen)
        self.pool.offset[b] = self.pool.offset[b] - shift
        p -= shift
        ip = p + ETH_HLEN
        h = ip + hlen
        if udp:
            udp_write(h, (<SecurityAssociation> sa).udp_sport, (<SecurityAssociation> sa).udp_dport,
                      shift + plen + tail)
            h += UDP_HLEN
        if (<SecurityAssociation> sa).esp_seal(h, plen + pad + ESP_TRAILER, seq[0]) != 0:
            (<SecurityAssociation> sa).count_drop(SA_DROP_CRYPTO_ERROR)
            return ENC_CRYPTO_ERROR
        ip4_set_proto_length(ip, IP_PROTO_UDP if udp else IP_PROTO_ESP, total + shift + tail)
        self.pool.length[b] = ETH_HLEN + total + shift + tail
        (<SecurityAssociation> sa).count_packet(plen)
        return OK


cdef enum:
    DEC_NOT_ESP = 4
    DEC_NATT_KEEPALIVE = 5
    DEC_NON_ESP_MARKER = 6
    DEC_BAD_LENGTH = 7
    DEC_NO_SA = 8
    DEC_ENCAP_MISMATCH = 9
    DEC_EXPIRED = 10
    DEC_REPLAY = 11
    DEC_AUTH_FAILED = 12
    DEC_BAD_PADDING = 13
    DEC_DUMMY = 14
    DEC_WRONG_PEER = 15


cdef class EspDecrypt(_EspNode):
    node_name = "esp-decrypt"
    errors = IP4_ERRORS + (
        ("not_esp", "neither ESP nor UDP to the NAT-T port"),
        ("natt_keepalive", "NAT-T keepalive"),
        ("non_esp_marker", "IKE on the NAT-T port (non-ESP marker): not for the data path"),
        ("bad_length", "ESP packet too short, or a wrong UDP length"),
        ("no_sa", "no inbound SA for the SPI"),
        ("encap_mismatch", "ESP in UDP for a plain-ESP SA, or the reverse"),
        ("expired", "SA lifetime expired"),
        ("replay", "replayed, or older than the anti-replay window"),
        ("auth_failed", "ICV check failed"),
        ("bad_padding", "bad ESP padding"),
        ("dummy", "dummy packet (next header 59)"),
        ("wrong_peer", "ESP from an address other than its SA's peer"))
    cdef public uint16_t natt_port
    cdef uint16_t arc_by_proto[256]
    cdef object _keys, _vals          # open addressing: SPI -> SecurityAssociation (borrowed)
    cdef uint32_t *keys
    cdef void **vals
    cdef uint32_t mask
    cdef dict _sas                    # SPI -> SecurityAssociation: keeps them alive
    cdef dict _peer                   # SPI -> the IPv4 address its packets come from (0: any)
    cdef object _peers
    cdef uint32_t *peers              # beside keys/vals

    def __init__(self, name=None, udp_next="ip4-udp-input", other_next="ip4-input",
                 int natt_port=UDP_PORT_NAT_T):
        super().__init__(name)
        self.next_names = ["error-drop", udp_next, other_next]
        cdef int k
        for k in range(256):
            self.arc_by_proto[k] = 2
        self.arc_by_proto[IP_PROTO_UDP] = 1
        self.natt_port = natt_port
        self._sas = {}
        self._peer = {}
        self._rebuild()

    def set_next(self, int proto, node_name):
        """Decrypted packets whose next header is proto go to node_name."""
        if not 0 <= proto <= 255:
            raise ValueError(f"bad IP protocol {proto}")
        self.arc_by_proto[proto] = self.arc(node_name)

    def set_sa(self, uint32_t spi, SecurityAssociation sa not None, peer=None):
        """ESP with this SPI is decrypted with sa (replacing the SA it had); with peer (an
        IPv4 address), only ESP whose outer source is peer (else dropped: wrong_peer)."""
        peer_ip = int(ipaddress.IPv4Address(peer)) if peer else 0
        if sa.aead is None:
            raise ValueError("SA not initialised")
        if not sa.inbound:
            raise ValueError(f"SA 0x{sa.spi:08x} is outbound")
        if sa.spi != spi:
            raise ValueError(f"SPI 0x{spi:08x} given for SA 0x{sa.spi:08x}")
        self._sas[spi] = sa
        self._peer[spi] = peer_ip
        self._rebuild()

    def remove_sa(self, uint32_t spi):
        """ESP with this SPI is dropped (no_sa) from now on; returns the SA or None."""
        sa = self._sas.pop(spi, None)
        self._peer.pop(spi, None)
        self._rebuild()
        return sa

    @property
    def sas(self):
        return dict(self._sas)

    def _rebuild(self):
        """A new table, at most half full, swapped in whole (between vectors)."""
        cap = 16
        while cap < 2 * len(self._sas):
            cap *= 2
        keys = np.zeros(cap, dtype=np.uint32)
        vals = np.zeros(cap, dtype=np.uintp)
        peers = np.zeros(cap, dtype=np.uint32)
        cdef SecurityAssociation sa
        for spi, sa in self._sas.items():
            h = _spi_hash(spi) & (cap - 1)
            while keys[h]:
                h = (h + 1) & (cap - 1)
            keys[h] = spi
            vals[h] = <size_t> <void *> sa
            peers[h] = self._peer.get(spi, 0)
        self._keys, self._vals, self._peers = keys, vals, peers
        self.keys = <uint32_t *> <size_t> keys.ctypes.data
        self.vals = <void **> <size_t> vals.ctypes.data
        self.peers = <uint32_t *> <size_t> peers.ctypes.data
        self.mask = cap - 1

    cdef inline void *lookup(self, uint32_t spi, uint32_t *peer) noexcept nogil:
        cdef uint32_t h = _spi_hash(spi) & self.mask
        if spi == 0:
            return NULL
        while self.keys[h] != 0:
            if self.keys[h] == spi:
                peer[0] = self.peers[h]
                return self.vals[h]
            h = (h + 1) & self.mask
        return NULL

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, r
        cdef uint32_t b, spi
        cdef uint64_t seq
        cdef uint8_t nh
        for i in range(n):
            b = bufs[i]
            spi = 0
            seq = 0
            nh = 0
            r = self.decrypt(b, &spi, &seq, &nh)
            if r == OK:
                self.pool.next[b] = self.arc_by_proto[nh]
            else:
                self.pool.error[b] = self.err_base + r
                self.pool.next[b] = ARC_DROP
            if self.pool.trace[b]:
                self.tr_spi[b] = spi
                self.tr_seq[b] = seq
        return 0

    cdef int decrypt(self, uint32_t b, uint32_t *spi, uint64_t *seq, uint8_t *nh) noexcept nogil:
        cdef uint8_t *p = self.pool.frame(b)
        cdef uint8_t *ip
        cdef uint8_t *h
        cdef uint8_t *ct
        cdef int flen = self.pool.length[b], r, hlen, avail, clen, pad, plen, shift
        cdef void *sa
        cdef bint udp = False
        cdef uint32_t peer = 0
        if flen < ETH_HLEN or rd16(p + 12) != ETH_P_IP:
            return ERR_NOT_IP4
        ip = p + ETH_HLEN
        r = ip4_check(ip, flen - ETH_HLEN)
        if r != IP4_OK:
            return r - 1
        if ip4_is_fragment(ip):
            return ERR_FRAGMENT
        hlen = ip4_hlen(ip)
        h = ip + hlen
        avail = ip4_total_length(ip) - hlen
        if ip4_proto(ip) == IP_PROTO_UDP:
            if avail < UDP_HLEN or udp_dst_port(h) != self.natt_port:
                return DEC_NOT_ESP
            if udp_length(h) != avail:
                return DEC_BAD_LENGTH
            h += UDP_HLEN
            avail -= UDP_HLEN
            udp = True
            if nat_t_is_keepalive(h, avail):
                return DEC_NATT_KEEPALIVE
            if nat_t_is_non_esp(h, avail):
                return DEC_NON_ESP_MARKER
        elif ip4_proto(ip) != IP_PROTO_ESP:
            return DEC_NOT_ESP
        if avail < ESP_HLEN:
            return DEC_BAD_LENGTH
        spi[0] = esp_spi(h)
        sa = self.lookup(spi[0], &peer)
        if sa == NULL:
            return DEC_NO_SA
        if peer != 0 and rd32(ip + 12) != peer:
            return DEC_WRONG_PEER
        if (<SecurityAssociation> sa).encap_udp != udp:
            (<SecurityAssociation> sa).count_drop(SA_DROP_ENCAP_MISMATCH)
            return DEC_ENCAP_MISMATCH
        if avail < ESP_HLEN + ESP_IV_LEN + ESP_TRAILER + ESP_ICV_LEN:
            (<SecurityAssociation> sa).count_drop(SA_DROP_BAD_LENGTH)
            return DEC_BAD_LENGTH
        if (<SecurityAssociation> sa).expired():
            (<SecurityAssociation> sa).count_drop(SA_DROP_EXPIRED)
            return DEC_EXPIRED
        if (<SecurityAssociation> sa).replay_check(esp_seq(h), seq) != 0:
            (<SecurityAssociation> sa).count_drop(SA_DROP_REPLAY)
            return DEC_REPLAY
        clen = avail - ESP_HLEN - ESP_IV_LEN - ESP_ICV_LEN
        if (<SecurityAssociation> sa).esp_open(h, clen, seq[0]) != 0:
            (<SecurityAssociation> sa).count_drop(SA_DROP_AUTH_FAILED)
            return DEC_AUTH_FAILED
        (<SecurityAssociation> sa).replay_advance(seq[0])
        ct = h + ESP_HLEN + ESP_IV_LEN
        pad = ct[clen - 2]
        nh[0] = ct[clen - 1]
        if pad + ESP_TRAILER > clen or not esp_padding_ok(ct + clen - ESP_TRAILER - pad, pad):
            (<SecurityAssociation> sa).count_drop(SA_DROP_BAD_PADDING)
            return DEC_BAD_PADDING
        plen = clen - pad - ESP_TRAILER
        (<SecurityAssociation> sa).count_packet(plen)
        if nh[0] == IP_PROTO_NONE:
            return DEC_DUMMY
        # Ethernet + IPv4 header forward onto the end of the ESP header and IV
        shift = <int> (ct - (ip + hlen))
        memmove(p + shift, p, ETH_HLEN + hlen)
        self.pool.offset[b] = self.pool.offset[b] + shift
        ip += shift
        ip4_set_proto_length(ip, nh[0], hlen + plen)
        self.pool.length[b] = ETH_HLEN + hlen + plen
        self.pool.flags[b] = self.pool.flags[b] | F_DECRYPTED
        return OK
