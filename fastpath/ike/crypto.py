"""IKEv2 cryptography on `cryptography`'s primitives: Diffie-Hellman groups 14, 19, 20
and 31, the PRFs HMAC-SHA2-256/384/512 and prf+ (RFC 7296 2.13), SKEYSEED and the IKE SA
key schedule (2.14), PSK authentication (2.15), CHILD_SA keying material (2.17), NAT
detection hashes (2.23) and the SK payload with AES-GCM-16 (RFC 5282) or AES-CBC with an
HMAC-SHA2 ICV (RFC 7296 3.14, RFC 4868), whole or as RFC 7383 fragments."""
import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fastpath.ike import message as m

# ---- Diffie-Hellman ----

# RFC 3526 section 3: the 2048-bit MODP group, generator 2
MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)

GROUP_NAMES = {14: "modp2048", 19: "ecp256", 20: "ecp384", 31: "curve25519"}
_CURVES = {19: (ec.SECP256R1, 32), 20: (ec.SECP384R1, 48)}


class DhError(ValueError):
    """The peer's public value is not a valid element of the group."""


class DhKey:
    """Our half of one exchange in `group`: .public is the KE payload's data."""

    def __init__(self, group):
        self.group = group
        if group == 31:
            self._priv = X25519PrivateKey.generate()
            self.public = self._priv.public_key().public_bytes(serialization.Encoding.Raw,
                                                               serialization.PublicFormat.Raw)
        elif group in _CURVES:
            curve, size = _CURVES[group]
            self._priv = ec.generate_private_key(curve())
            # RFC 5903 7: x || y, without the 0x04 of the uncompressed point
            self.public = self._priv.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        elif group == 14:
            # plain modular arithmetic: `cryptography` deprecates finite-field DH; a
            # 384-bit exponent is well over twice the group's ~112-bit strength
            self._priv = int.from_bytes(os.urandom(48), "big") | 1 << 383
            self.public = pow(2, self._priv, MODP_2048).to_bytes(256, "big")
        else:
            raise ValueError(f"DH group {group} not supported")

    def shared(self, peer):
        """g^ir from the peer's KE data; DhError if it is not a valid public value."""
        try:
            if self.group == 31:
                if len(peer) != 32:
                    raise DhError("X25519 public value must be 32 bytes")
                return self._priv.exchange(X25519PublicKey.from_public_bytes(peer))
            if self.group in _CURVES:
                curve, size = _CURVES[self.group]
                if len(peer) != 2 * size:
                    raise DhError(f"{GROUP_NAMES[self.group]} public value must be {2 * size} bytes")
                pub = ec.EllipticCurvePublicKey.from_encoded_point(curve(), b"\x04" + peer)
                return self._priv.exchange(ec.ECDH(), pub)
            y = int.from_bytes(peer, "big")
            if len(peer) != 256 or not 1 < y < MODP_2048 - 1:
                raise DhError("MODP public value out of range")
            return pow(y, self._priv, MODP_2048).to_bytes(256, "big")
        except DhError:
            raise
        except ValueError as e:                          # not on the curve, low order point
            raise DhError(str(e)) from None


# ---- PRF and prf+ ----

PRFS = {m.PRF_HMAC_SHA2_256: hashlib.sha256, m.PRF_HMAC_SHA2_384: hashlib.sha384,
        m.PRF_HMAC_SHA2_512: hashlib.sha512}
PRF_NAMES = {m.PRF_HMAC_SHA2_256: "prfsha256", m.PRF_HMAC_SHA2_384: "prfsha384",
             m.PRF_HMAC_SHA2_512: "prfsha512"}


def prf(prf_id, key, data):
    return hmac.new(key, data, PRFS[prf_id]).digest()


def prf_plus(prf_id, key, seed, length):
    """RFC 7296 2.13: T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n); their concatenation."""
    out, t, n = b"", b"", 1
    while len(out) < length:
        t = prf(prf_id, key, t + seed + bytes([n]))
        out += t
        n += 1
    return out[:length]


# ---- the IKE SA's keys ----

# integrity algorithm -> (hash, key length = the hash's size, ICV length): RFC 4868 2.
INTEGS = {m.INTEG_HMAC_SHA2_256_128: (hashlib.sha256, 32, 16),
          m.INTEG_HMAC_SHA2_384_192: (hashlib.sha384, 48, 24),
          m.INTEG_HMAC_SHA2_512_256: (hashlib.sha512, 64, 32)}
INTEG_NAMES = {m.INTEG_HMAC_SHA2_256_128: "sha256", m.INTEG_HMAC_SHA2_384_192: "sha384",
               m.INTEG_HMAC_SHA2_512_256: "sha512"}


class IkeKeys:
    """SK_d, SK_ai/ar, SK_ei/er, SK_pi/pr. With AES-GCM (integ 0) there is no SK_a and
    SK_e is the AES key || a 4-byte salt; with AES-CBC SK_e is the AES key alone."""

    def __init__(self, prf_id, encr_key_bits, shared, ni, nr, spi_i, spi_r, old=None, integ=0):
        """old: the IkeKeys of the IKE SA this one rekeys (RFC 7296 2.18):
        SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), with the old SA's PRF."""
        self.prf_id, self.integ = prf_id, integ
        if old is None:
            skeyseed = prf(prf_id, ni + nr, shared)
        else:
            skeyseed = prf(old.prf_id, old.sk_d, shared + ni + nr)
        plen = PRFS[prf_id]().digest_size
        alen = INTEGS[integ][1] if integ else 0
        elen = encr_key_bits // 8 + (0 if integ else 4)
        km = prf_plus(prf_id, skeyseed, ni + nr + spi_i + spi_r, plen + 2 * alen + 2 * elen + 2 * plen)
        cut = [plen, alen, alen, elen, elen, plen, plen]
        parts, at = [], 0
        for n in cut:
            parts.append(km[at:at + n])
            at += n
        self.sk_d, self.sk_ai, self.sk_ar, self.sk_ei, self.sk_er, self.sk_pi, self.sk_pr = parts

    def sending(self, initiator):
        """(SK_e, SK_a, integ) that protect what this end sends."""
        return (self.sk_ei, self.sk_ai, self.integ) if initiator else (self.sk_er, self.sk_ar, self.integ)

    def receiving(self, initiator):
        return self.sending(not initiator)


def psk_auth(prf_id, psk, signed_octets):
    """RFC 7296 2.15: AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf(prf_id, prf(prf_id, psk, b"Key Pad for IKEv2"), signed_octets)


def signed_octets(prf_id, real_message, peer_nonce, sk_p, id_body):
    """The octets one side signs: its own first message, the other's nonce, and
    prf(SK_px, the body of its ID payload)."""
    return real_message + peer_nonce + prf(prf_id, sk_p, id_body)


def child_keymat(prf_id, sk_d, ni, nr, key_salt_len):
    """RFC 7296 2.17 (no PFS): KEYMAT = prf+(SK_d, Ni | Nr); the initiator-to-responder
    key||salt first. -> (i2r, r2i)."""
    km = prf_plus(prf_id, sk_d, ni + nr, 2 * key_salt_len)
    return km[:key_salt_len], km[key_salt_len:]


def nat_hash(spi_i, spi_r, ip_packed, port):
    """RFC 7296 2.23: SHA-1(SPIi | SPIr | IP | Port)."""
    return hashlib.sha1(spi_i + spi_r + ip_packed + struct.pack("!H", port)).digest()


# ---- the SK payload: AES-GCM-16 (RFC 5282) or AES-CBC + HMAC-SHA2 (RFC 7296 3.14) ----

ICV_LEN, IV_LEN = 16, 8
CBC_BLOCK = 16


class AuthFailed(Exception):
    """An SK payload whose ICV does not verify (wrong keys, tampering, noise)."""


def seal(spi_i, spi_r, exchange, flags, message_id, payloads, sk_e, sk_a=b"", integ=0):
    """A protected message: header, SK{payloads}. integ 0: AES-GCM, sk_e = AES key || 4-byte
    salt; otherwise AES-CBC with key sk_e and an HMAC ICV keyed with sk_a."""
    inner_first, plain = m.encode_payloads(payloads)
    return _seal(spi_i, spi_r, exchange, flags, message_id, m.PL_SK, inner_first, b"", plain, sk_e, sk_a, integ)


def seal_fragments(spi_i, spi_r, exchange, flags, message_id, payloads, limit, sk_e, sk_a=b"", integ=0):
    """RFC 7383: the message as Encrypted Fragment (SKF) messages of at most `limit` bytes
    each; the first fragment names the first inner payload, the others 0."""
    inner_first, plain = m.encode_payloads(payloads)
    overhead = m.HEADER_LEN + 8 + (CBC_BLOCK + CBC_BLOCK + INTEGS[integ][2] if integ else IV_LEN + 1 + ICV_LEN)
    room = limit - overhead
    if integ:
        room -= room % CBC_BLOCK                       # whole blocks, the pad-length byte included
    chunks = [plain[i:i + room] for i in range(0, len(plain), room)] or [b""]
    if len(chunks) > MAX_FRAGMENTS:
        raise ValueError(f"message of {len(plain)} bytes needs more than {MAX_FRAGMENTS} fragments")
    return [_seal(spi_i, spi_r, exchange, flags, message_id, m.PL_SKF, inner_first if n == 1 else 0,
                  struct.pack("!HH", n, len(chunks)), chunk, sk_e, sk_a, integ)
            for n, chunk in enumerate(chunks, 1)]


MAX_FRAGMENTS = 64


def _seal(spi_i, spi_r, exchange, flags, message_id, ptype, inner_first, extra, plain, sk_e, sk_a, integ):
    """SK or SKF (extra: its Fragment Number and Total Fragments): the AAD, or for CBC the
    ICV, covers the header through `extra` (RFC 7383 2.5)."""
    if integ:
        pad = -(len(plain) + 1) % CBC_BLOCK            # padding and its length fill the last block
        plain += bytes(pad) + bytes([pad])
        iv = os.urandom(CBC_BLOCK)
        enc = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).encryptor()
        ct = enc.update(plain) + enc.finalize()
        digest, _, icv_len = INTEGS[integ]
        sk_len = 4 + len(extra) + CBC_BLOCK + len(ct) + icv_len
        header = m.encode_header(spi_i, spi_r, ptype, exchange, flags, message_id, m.HEADER_LEN + sk_len)
        signed = header + struct.pack("!BBH", inner_first, 0, sk_len) + extra + iv + ct
        return signed + hmac.new(sk_a, signed, digest).digest()[:icv_len]
    plain += b"\x00"                                   # no padding: GCM needs none
    iv = os.urandom(IV_LEN)
    sk_len = 4 + len(extra) + IV_LEN + len(plain) + ICV_LEN
    header = m.encode_header(spi_i, spi_r, ptype, exchange, flags, message_id, m.HEADER_LEN + sk_len)
    aad = header + struct.pack("!BBH", inner_first, 0, sk_len) + extra
    ct = AESGCM(sk_e[:-4]).encrypt(sk_e[-4:] + iv, plain, aad)
    return aad + iv + ct


def open_sk(data, msg, sk_e, sk_a=b"", integ=0):
    """Decrypt msg's SK payload (it must be the last one) -> [Payload] inside it.
    AuthFailed if the ICV does not verify, MalformedMessage if what it hides is."""
    sk = msg.payloads[-1] if msg.payloads else None
    if sk is None or sk.type != m.PL_SK:
        raise m.MalformedMessage("no SK payload")
    return m.parse_payloads(sk.inner_first, _open(data, sk.body, sk_e, sk_a, integ))


def open_fragment(data, msg, sk_e, sk_a=b"", integ=0):
    """msg's SKF payload -> (fragment number, total, first inner payload type, plaintext).
    AuthFailed if the ICV does not verify, MalformedMessage if the numbers are nonsense."""
    skf = msg.payloads[-1] if msg.payloads else None
    if skf is None or skf.type != m.PL_SKF or len(skf.body) < 4:
        raise m.MalformedMessage("no SKF payload")
    number, total = struct.unpack_from("!HH", skf.body)
    if not 1 <= number <= total <= MAX_FRAGMENTS:
        raise m.MalformedMessage(f"fragment {number} of {total}")
    return number, total, skf.inner_first, _open(data, skf.body[4:], sk_e, sk_a, integ)


def _open(data, body, sk_e, sk_a, integ):
    """The plaintext of an SK/SKF payload whose IV..ICV part is body, the last bytes of data."""
    if integ:
        digest, _, icv_len = INTEGS[integ]
        if len(body) < CBC_BLOCK + CBC_BLOCK + icv_len or (len(body) - icv_len) % CBC_BLOCK:
            raise m.MalformedMessage("SK payload is not IV, whole AES blocks and ICV")
        signed, icv = data[:len(data) - icv_len], data[len(data) - icv_len:]
        # the ICV first: nothing unauthenticated reaches the decryption (no padding oracle)
        if not hmac.compare_digest(hmac.new(sk_a, signed, digest).digest()[:icv_len], icv):
            raise AuthFailed()
        dec = Cipher(algorithms.AES(sk_e), modes.CBC(body[:CBC_BLOCK])).decryptor()
        plain = dec.update(body[CBC_BLOCK:len(body) - icv_len]) + dec.finalize()
    else:
        if len(body) < IV_LEN + ICV_LEN + 1:
            raise m.MalformedMessage("SK payload too short")
        aad = data[:len(data) - len(body)]
        try:
            plain = AESGCM(sk_e[:-4]).decrypt(sk_e[-4:] + body[:IV_LEN], body[IV_LEN:], aad)
        except InvalidTag:
            raise AuthFailed() from None
    pad = plain[-1]
    if pad + 1 > len(plain):
        raise m.MalformedMessage("SK padding longer than the plaintext")
    return plain[:-1 - pad]
