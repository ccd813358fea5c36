from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy
from fastpath.crypto.aesgcm cimport AesGcm

cdef enum:
    MAX_REPLAY_WINDOW = 4096
    REPLAY_WORDS = 64           # MAX_REPLAY_WINDOW / 64
    SALT_LEN = 4
    ESP_IV_LEN = 8              # explicit IV: the 64-bit sequence number
    ESP_ICV_LEN = 16

# why an SA refused a packet (SecurityAssociation.drops names them in this order)
cdef enum:
    SA_DROP_REPLAY = 0
    SA_DROP_AUTH_FAILED = 1
    SA_DROP_BAD_LENGTH = 2
    SA_DROP_BAD_PADDING = 3
    SA_DROP_SEQ_EXHAUSTED = 4
    SA_DROP_EXPIRED = 5
    SA_DROP_TOO_BIG = 6
    SA_DROP_ENCAP_MISMATCH = 7
    SA_DROP_CRYPTO_ERROR = 8
    SA_N_DROPS = 9


cdef class SecurityAssociation:
    cdef readonly uint32_t spi
    cdef readonly bint inbound
    cdef readonly bint esn
    cdef readonly bint encap_udp
    cdef readonly uint16_t udp_sport, udp_dport
    cdef readonly AesGcm aead
    cdef uint8_t salt[SALT_LEN]
    # outbound: the last sequence number used under this key (a cell shared by every SA
    # made with the same key material, so a re-made SA never reuses an IV)
    cdef uint64_t *tx_seq
    cdef object _tx_cell
    cdef uint64_t seq_max
    # inbound: highest authenticated sequence number and the window bitmap (a ring indexed
    # by seq & (nbits - 1); bit set = received)
    cdef uint64_t top
    cdef readonly uint32_t replay_window
    cdef uint32_t nbits
    cdef uint64_t bitmap[REPLAY_WORDS]
    # counters
    cdef readonly uint64_t packets, octets
    cdef uint64_t drops_[SA_N_DROPS]
    cdef readonly uint64_t lifetime_packets, lifetime_bytes      # 0: no limit
    cdef readonly double created
    cdef object _args                     # constructor arguments, for worker_copy()
    cdef list _copies                     # per-worker copies of an outbound SA (own cipher context)

    cdef inline bint expired(self) noexcept nogil:
        return ((self.lifetime_packets != 0 and self.packets >= self.lifetime_packets)
                or (self.lifetime_bytes != 0 and self.octets >= self.lifetime_bytes))

    cdef inline void count_drop(self, int reason) noexcept nogil:
        self.drops_[reason] += 1

    cdef inline void count_packet(self, uint64_t octets) noexcept nogil:
        self.packets += 1
        self.octets += octets

    cdef inline void nonce(self, uint8_t *out, const uint8_t *iv) noexcept nogil:
        """RFC 4106 4: salt || explicit IV."""
        memcpy(out, self.salt, SALT_LEN)
        memcpy(out + SALT_LEN, iv, ESP_IV_LEN)

    cdef inline void _set_bit(self, uint64_t seq) noexcept nogil:
        cdef uint32_t idx = seq & (self.nbits - 1)
        self.bitmap[idx >> 6] |= 1ULL << (idx & 63)

    cdef int aad(self, uint8_t *out, uint64_t seq) noexcept nogil
    cdef int esp_seal(self, uint8_t *esp, int n, uint64_t seq) noexcept nogil
    cdef int esp_open(self, uint8_t *esp, int n, uint64_t seq) noexcept nogil
    cdef int next_seq(self, uint64_t *seq) noexcept nogil
    cdef int replay_check(self, uint32_t seq_lo, uint64_t *seq) noexcept nogil
    cdef void replay_advance(self, uint64_t seq) noexcept nogil
