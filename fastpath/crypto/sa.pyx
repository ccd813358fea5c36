"""SecurityAssociation: one direction of an ESP AES-GCM SA (RFC 4303, RFC 4106).

Keys come as in `ip xfrm state ... aead 'rfc4106(gcm(aes))' 0x<key><salt> 128`: the AES
key (16 or 32 bytes) followed by the 4-byte salt, 20 or 36 bytes in all.

Outbound: the sequence number is a 64-bit counter and the 8-byte explicit IV is that
number, so under one key an IV is never used twice. The counter belongs to the key
material, not to the SA object: an outbound SA made again with key material this process
has used (a re-add, a config reload) goes on from the last number used instead of starting
at 1. It never wraps: at 2^32 - 1 (no ESN) or 2^64 - 1 (ESN) the SA refuses to send
(`seq_exhausted`) and must be rekeyed. Across restarts with manual keys, use a new key or
pass `seq=` from saved state.

Inbound: an anti-replay window of `replay_window` sequence numbers (1..4096; default 64)
below the highest authenticated one; 0 turns the check off, as `ip xfrm ... replay-window 0`
does (not with ESN, whose high bits are inferred from the window; the kernel refuses it too). With ESN only the low 32 bits travel; the high ones
are inferred from the window (RFC 4303 Appendix A2.2) and checked by the ICV, since they
are in the AAD. A packet is checked against the window before it is decrypted and the
window moves only once its ICV is verified (RFC 4303 3.4.3), so forged packets change
nothing.

Lifetimes (`lifetime_packets`, `lifetime_bytes`: payload bytes before encryption/after
decryption) are hard limits: past either, the SA drops everything (`expired`).

The per-packet methods are nogil and used by the ESP nodes (fastpath/nodes/esp.pyx);
everything else here is control plane.
"""
import hashlib
import time

import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

cdef extern from *:
    """
    static inline unsigned long long sa_seq_add(unsigned long long *p) {
        return __atomic_add_fetch(p, 1, __ATOMIC_RELAXED);
    }
    """
    uint64_t sa_seq_add(uint64_t *p) nogil

from fastpath.crypto.aesgcm cimport GCM_NONCE_LEN
from fastpath.nodes.ip4 cimport wr32, wr64, esp_write, ESP_HLEN

DROP_REASONS = ("replay", "auth_failed", "bad_length", "bad_padding", "seq_exhausted",
                "expired", "too_big", "encap_mismatch", "crypto_error")

# key material fingerprint -> numpy uint64[1]: the last sequence number (= IV) used with it
_tx_counters = {}


def parse_xfrm_key(text):
    """'0x<hex>' (as `ip xfrm` takes it; the 0x is optional) -> key||salt bytes, 20 or 36 long."""
    s = str(text).strip().lower()
    if s.startswith("0x"):
        s = s[2:]
    try:
        raw = bytes.fromhex(s)
    except ValueError:
        raise ValueError(f"bad key {text!r}: not hexadecimal") from None
    if len(raw) not in (20, 36):
        raise ValueError(f"bad key: {len(raw)} bytes; rfc4106(gcm(aes)) takes the key and a "
                         f"4-byte salt: 20 bytes (AES-128) or 36 (AES-256)")
    return raw


cdef class SecurityAssociation:
    def __init__(self, spi, key_salt, *, direction, esn=True, replay_window=64,
                 lifetime_packets=None, lifetime_bytes=None, encap=None,
                 udp_sport=4500, udp_dport=4500, seq=0, engine=None):
        """spi: 1..2^32-1. key_salt: bytes (20 or 36) or an `ip xfrm` hex string.
        direction: 'in' or 'out'. encap: None (ESP, IP protocol 50) or 'udp' (RFC 3948,
        from udp_sport to udp_dport). seq: outbound, go on after this sequence number;
        inbound, the highest one already received (it and the window below it count as
        seen). engine: the AES-GCM engine (AesGcm's; None: the best there is)."""
        if isinstance(key_salt, str):
            key_salt = parse_xfrm_key(key_salt)
        key_salt = bytes(key_salt)
        self._args = (spi, key_salt, dict(direction=direction, esn=esn, replay_window=replay_window,
                      lifetime_packets=lifetime_packets, lifetime_bytes=lifetime_bytes,
                      encap=encap, udp_sport=udp_sport, udp_dport=udp_dport, engine=engine))
        self._copies = []
        if len(key_salt) not in (20, 36):
            raise ValueError(f"key||salt of {len(key_salt)} bytes: 20 (AES-128) or 36 (AES-256) expected")
        if not 0 < spi <= 0xffffffff:
            raise ValueError(f"bad SPI {spi}: 1..4294967295 (0 is reserved)")
        if direction not in ("in", "out"):
            raise ValueError(f"bad direction {direction!r}: 'in' or 'out'")
        if encap not in (None, "udp"):
            raise ValueError(f"bad encap {encap!r}: None or 'udp'")
        if not (1 if esn else 0) <= replay_window <= MAX_REPLAY_WINDOW:
            raise ValueError(f"bad replay window {replay_window}: {1 if esn else 0}..{MAX_REPLAY_WINDOW}"
                             + (" (ESN needs a window)" if esn and replay_window == 0 else ""))
        for name, v in (("udp_sport", udp_sport), ("udp_dport", udp_dport)):
            if not 0 < v <= 0xffff:
                raise ValueError(f"bad {name} {v}")
        self.spi = spi
        self.inbound = direction == "in"
        self.esn = bool(esn)
        self.encap_udp = encap == "udp"
        self.udp_sport = udp_sport
        self.udp_dport = udp_dport
        self.aead = AesGcm(key_salt[:-SALT_LEN], engine)
        cdef const uint8_t *sp = key_salt
        memcpy(self.salt, sp + len(key_salt) - SALT_LEN, SALT_LEN)
        self.seq_max = 0xffffffffffffffff if self.esn else 0xffffffff
        if not 0 <= seq <= self.seq_max:
            raise ValueError(f"bad initial sequence number {seq}")
        self.replay_window = replay_window
        self.nbits = 64
        while self.nbits < replay_window:
            self.nbits *= 2
        memset(self.bitmap, 0, sizeof(self.bitmap))
        self.top = 0
        if self.inbound:
            self._tx_cell = np.zeros(1, dtype=np.uint64)
            if seq:
                self.top = seq
                for s in range(max(1, seq - replay_window + 1), seq + 1):
                    self._set_bit(s)
        else:
            fp = hashlib.sha256(b"fastpath esp tx\0" + key_salt).digest()
            self._tx_cell = _tx_counters.setdefault(fp, np.zeros(1, dtype=np.uint64))
            if self._tx_cell[0] < seq:
                self._tx_cell[0] = seq
        self.tx_seq = <uint64_t *> <size_t> self._tx_cell.ctypes.data
        self.lifetime_packets = lifetime_packets or 0
        self.lifetime_bytes = lifetime_bytes or 0
        self.packets = self.octets = 0
        memset(self.drops_, 0, sizeof(self.drops_))
        self.created = time.time()

    # ---- per packet (nogil) ----

    cdef int aad(self, uint8_t *out, uint64_t seq) noexcept nogil:
        """RFC 4106 5: SPI || seq (32-bit) or SPI || seq high || seq low (ESN). Its length."""
        wr32(out, self.spi)
        if self.esn:
            wr32(out + 4, <uint32_t> (seq >> 32))
            wr32(out + 8, <uint32_t> seq)
            return 12
        wr32(out + 4, <uint32_t> seq)
        return 8

    cdef int esp_seal(self, uint8_t *esp, int n, uint64_t seq) noexcept nogil:
        """Outbound. esp: where the ESP header goes, followed by 8 bytes for the IV and the
        n bytes to encrypt (payload, padding, pad length, next header), then room for the
        ICV. Writes header and IV, encrypts in place, appends the ICV. 0, or -1 (OpenSSL)."""
        cdef uint8_t nonce[GCM_NONCE_LEN]
        cdef uint8_t aad[12]
        cdef int aad_len = self.aad(aad, seq)
        esp_write(esp, self.spi, <uint32_t> seq)
        wr64(esp + ESP_HLEN, seq)
        self.nonce(nonce, esp + ESP_HLEN)
        return self.aead.encrypt_c(nonce, aad, aad_len, esp + ESP_HLEN + ESP_IV_LEN, n,
                                   esp + ESP_HLEN + ESP_IV_LEN + n)

    cdef int esp_open(self, uint8_t *esp, int n, uint64_t seq) noexcept nogil:
        """Inbound. esp: an ESP packet with n bytes of ciphertext between IV and ICV, whose
        full sequence number is seq. Decrypts in place; 0 if the ICV is right, else -1."""
        cdef uint8_t nonce[GCM_NONCE_LEN]
        cdef uint8_t aad[12]
        cdef int aad_len = self.aad(aad, seq)
        self.nonce(nonce, esp + ESP_HLEN)
        return self.aead.decrypt_c(nonce, aad, aad_len, esp + ESP_HLEN + ESP_IV_LEN, n,
                                   esp + ESP_HLEN + ESP_IV_LEN + n)

    cdef int next_seq(self, uint64_t *seq) noexcept nogil:
        """Outbound: the next sequence number (also the IV); -1 when the counter is at its end.
        Atomic: the workers' copies of one SA draw from one counter, so no number repeats."""
        cdef uint64_t s
        if self.tx_seq[0] >= self.seq_max:
            return -1
        s = sa_seq_add(self.tx_seq)
        if s == 0 or s > self.seq_max:
            return -1
        seq[0] = s
        return 0

    cdef int replay_check(self, uint32_t seq_lo, uint64_t *seq) noexcept nogil:
        """Inbound, before decryption: the full sequence number of a packet carrying seq_lo
        (high bits inferred with ESN) in *seq; 0 if it may be new, -1 if it is a replay,
        too old for the window, or 0. Changes nothing."""
        cdef uint64_t t = self.top, s
        cdef uint32_t w = self.replay_window, tl, th, hi, bottom
        cdef uint32_t idx
        if self.esn:
            tl = <uint32_t> t
            th = <uint32_t> (t >> 32)
            if tl >= w - 1:                         # window within one 2^32 epoch
                if seq_lo >= tl - w + 1:
                    hi = th
                elif th == 0xffffffffU:
                    return -1
                else:
                    hi = th + 1
            else:                                   # window spans the epoch boundary
                bottom = tl - w + 1                 # wraps: near 2^32
                if seq_lo >= bottom:
                    if th == 0:
                        return -1
                    hi = th - 1
                else:
                    hi = th
            s = (<uint64_t> hi << 32) | seq_lo
        else:
            s = seq_lo
        seq[0] = s
        if w == 0:                                  # no anti-replay (never with ESN)
            return 0
        if s == 0:
            return -1
        if s > t:
            return 0
        if t - s >= w:
            return -1
        idx = s & (self.nbits - 1)
        if self.bitmap[idx >> 6] & (1ULL << (idx & 63)):
            return -1
        return 0

    cdef void replay_advance(self, uint64_t seq) noexcept nogil:
        """Inbound, after the ICV of the packet with this sequence number was verified."""
        cdef uint64_t s, left
        cdef uint32_t idx
        if seq > self.top:
            if seq - self.top >= self.nbits:
                memset(self.bitmap, 0, sizeof(self.bitmap))
            else:
                # forget what the ring slots of top+1 .. seq held
                s = self.top + 1
                left = seq - self.top
                while left:
                    idx = s & (self.nbits - 1)
                    if (idx & 63) == 0 and left >= 64:
                        self.bitmap[idx >> 6] = 0
                        s += 64
                        left -= 64
                    else:
                        self.bitmap[idx >> 6] &= ~(1ULL << (idx & 63))
                        s += 1
                        left -= 1
            self.top = seq
        self._set_bit(seq)

    # ---- control plane ----

    def worker_copy(self):
        """The same outbound SA for another worker: its own cipher state (an OpenSSL context
        must not be used by two threads at once; ipsec-mb gets its own key schedule copy),
        the same sequence counter. Counted in this SA's stats()."""
        if self.inbound:
            raise ValueError("inbound SAs are used by one worker (the uplink's)")
        spi, key_salt, kw = self._args
        cdef SecurityAssociation c = SecurityAssociation(spi, key_salt, **kw)
        c.created = self.created
        self._copies.append(c)
        return c

    @property
    def direction(self):
        return "in" if self.inbound else "out"

    @property
    def seq(self):
        """Outbound: the last sequence number sent; inbound: the highest one received."""
        return int(self.top) if self.inbound else int(self.tx_seq[0])

    @property
    def cipher(self):
        return f"aes-gcm-{self.aead.key_bits}"

    @property
    def drops(self):
        return {r: int(self.drops_[k]) for k, r in enumerate(DROP_REASONS)}

    def _summed_drops(self):
        d = self.drops
        for c in self._copies:
            for r, v in c.drops.items():
                d[r] += v
        return d

    def window_state(self):
        """(highest sequence number received, the window's bitmap): to see that it did not move."""
        return int(self.top), bytes((<uint8_t *> self.bitmap)[:self.nbits // 8])

    def check_replay(self, uint64_t seq):
        """Would a packet with this full sequence number pass the window? (tests, `show`)"""
        cdef uint64_t s
        return self.replay_check(seq & 0xffffffff, &s) == 0 and s == seq

    def stats(self):
        """What `show sa` prints."""
        d = {"spi": self.spi, "direction": self.direction, "cipher": self.cipher,
             "engine": self.aead.engine,
             "esn": bool(self.esn), "encap": "udp" if self.encap_udp else None,
             "seq": self.seq, "packets": int(self.packets) + sum(int(c.packets) for c in self._copies),
             "bytes": int(self.octets) + sum(int(c.octets) for c in self._copies),
             "drops": self._summed_drops(), "created": self.created,
             "age": round(time.time() - self.created, 3),
             "lifetime_packets": int(self.lifetime_packets) or None,
             "lifetime_bytes": int(self.lifetime_bytes) or None,
             "expired": bool(self.expired())}
        if self.encap_udp:
            d["udp_sport"], d["udp_dport"] = self.udp_sport, self.udp_dport
        if self.inbound:
            d["replay_window"] = self.replay_window
        return d

    def __repr__(self):
        return (f"<SecurityAssociation spi 0x{self.spi:08x} {self.direction} {self.cipher}"
                f"{' esn' if self.esn else ''}{' udp' if self.encap_udp else ''} seq {self.seq}>")
