"""The IKEv2 wire format (RFC 7296 section 3): header, payloads, parse and build.

A Message is a header plus a list of payloads; the SK payload (46) is kept as raw bytes
here and opened by fastpath.ike.crypto, whose plaintext is parsed again with
parse_payloads. Every malformation raises MalformedMessage, which the SA machine turns
into INVALID_SYNTAX or a counted drop; nothing else escapes the parser.
"""
import ipaddress
import struct
from dataclasses import dataclass, field

HEADER_LEN = 28
VERSION = 0x20                        # major 2, minor 0

# exchange types
IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, INFORMATIONAL = 34, 35, 36, 37
EXCHANGES = {IKE_SA_INIT: "IKE_SA_INIT", IKE_AUTH: "IKE_AUTH",
             CREATE_CHILD_SA: "CREATE_CHILD_SA", INFORMATIONAL: "INFORMATIONAL"}

# header flags
F_INITIATOR, F_VERSION, F_RESPONSE = 0x08, 0x10, 0x20

# payload types
PL_NONE, PL_SA, PL_KE, PL_IDI, PL_IDR, PL_CERT, PL_CERTREQ, PL_AUTH = 0, 33, 34, 35, 36, 37, 38, 39
PL_NONCE, PL_NOTIFY, PL_DELETE, PL_VENDOR, PL_TSI, PL_TSR, PL_SK, PL_CP, PL_EAP = \
    40, 41, 42, 43, 44, 45, 46, 47, 48
PL_SKF = 53
KNOWN_PAYLOADS = {PL_SA, PL_KE, PL_IDI, PL_IDR, PL_CERT, PL_CERTREQ, PL_AUTH, PL_NONCE,
                  PL_NOTIFY, PL_DELETE, PL_VENDOR, PL_TSI, PL_TSR, PL_SK, PL_CP, PL_EAP, PL_SKF}

# protocol ids (proposals, notify, delete)
PROTO_IKE, PROTO_AH, PROTO_ESP = 1, 2, 3

# transform types and the ids fastpath knows
T_ENCR, T_PRF, T_INTEG, T_DH, T_ESN = 1, 2, 3, 4, 5
ENCR_AES_CBC, ENCR_AES_GCM_16 = 12, 20
PRF_HMAC_SHA2_256, PRF_HMAC_SHA2_384, PRF_HMAC_SHA2_512 = 5, 6, 7
INTEG_NONE, INTEG_HMAC_SHA2_256_128, INTEG_HMAC_SHA2_384_192, INTEG_HMAC_SHA2_512_256 = 0, 12, 13, 14
ESN_NO, ESN_YES = 0, 1
ATTR_KEY_LENGTH = 14

# identification types
ID_IPV4_ADDR, ID_FQDN, ID_RFC822_ADDR, ID_IPV6_ADDR, ID_DER_ASN1_DN, ID_KEY_ID = 1, 2, 3, 5, 9, 11

AUTH_RSA_SIG, AUTH_SHARED_KEY_MIC, AUTH_ECDSA_256, AUTH_ECDSA_384, AUTH_ECDSA_521 = 1, 2, 9, 10, 11
AUTH_DIGITAL_SIGNATURE = 14            # RFC 7427
CERT_X509_SIGNATURE = 4

# notify message types: errors below 16384, status from 16384
N_UNSUPPORTED_CRITICAL_PAYLOAD = 1
N_INVALID_IKE_SPI = 4
N_INVALID_MAJOR_VERSION = 5
N_INVALID_SYNTAX = 7
N_INVALID_MESSAGE_ID = 9
N_INVALID_SPI = 11
N_NO_PROPOSAL_CHOSEN = 14
N_INVALID_KE_PAYLOAD = 17
N_AUTHENTICATION_FAILED = 24
N_SINGLE_PAIR_REQUIRED = 34
N_NO_ADDITIONAL_SAS = 35
N_TS_UNACCEPTABLE = 38
N_TEMPORARY_FAILURE = 43
N_CHILD_SA_NOT_FOUND = 44
N_REKEY_SA = 16393
N_INITIAL_CONTACT = 16384
N_NAT_DETECTION_SOURCE_IP = 16388
N_NAT_DETECTION_DESTINATION_IP = 16389
N_COOKIE = 16390
N_USE_TRANSPORT_MODE = 16391
N_ESP_TFC_PADDING_NOT_SUPPORTED = 16394
N_NON_FIRST_FRAGMENTS_ALSO = 16395
N_MOBIKE_SUPPORTED = 16396
N_NO_ADDITIONAL_ADDRESSES = 16399
N_FRAGMENTATION_SUPPORTED = 16430
N_SIGNATURE_HASH_ALGORITHMS = 16431
NOTIFY_NAMES = {N_UNSUPPORTED_CRITICAL_PAYLOAD: "UNSUPPORTED_CRITICAL_PAYLOAD",
                N_INVALID_IKE_SPI: "INVALID_IKE_SPI", N_INVALID_MAJOR_VERSION: "INVALID_MAJOR_VERSION",
                N_INVALID_SYNTAX: "INVALID_SYNTAX", N_INVALID_MESSAGE_ID: "INVALID_MESSAGE_ID",
                N_INVALID_SPI: "INVALID_SPI", N_NO_PROPOSAL_CHOSEN: "NO_PROPOSAL_CHOSEN",
                N_INVALID_KE_PAYLOAD: "INVALID_KE_PAYLOAD",
                N_AUTHENTICATION_FAILED: "AUTHENTICATION_FAILED",
                N_SINGLE_PAIR_REQUIRED: "SINGLE_PAIR_REQUIRED", N_NO_ADDITIONAL_SAS: "NO_ADDITIONAL_SAS",
                N_TS_UNACCEPTABLE: "TS_UNACCEPTABLE", N_TEMPORARY_FAILURE: "TEMPORARY_FAILURE",
                N_CHILD_SA_NOT_FOUND: "CHILD_SA_NOT_FOUND", N_REKEY_SA: "REKEY_SA"}

TS_IPV4_ADDR_RANGE = 7
IP_PROTO_UDP = 17


class MalformedMessage(ValueError):
    """The bytes are not a well-formed IKEv2 message (INVALID_SYNTAX territory)."""


class UnsupportedCritical(MalformedMessage):
    """A payload of an unknown type with the critical bit set (RFC 7296 2.5)."""

    def __init__(self, ptype):
        super().__init__(f"unknown critical payload type {ptype}")
        self.ptype = ptype


# ---- payload bodies ----

@dataclass
class Transform:
    type: int
    id: int
    key_length: int = None            # the Key Length attribute (bits), if any


@dataclass
class Proposal:
    num: int
    protocol: int
    spi: bytes
    transforms: list

    def of_type(self, ttype):
        return [t for t in self.transforms if t.type == ttype]


@dataclass
class Notify:
    type: int
    protocol: int = 0
    spi: bytes = b""
    data: bytes = b""


@dataclass
class TrafficSelector:
    protocol: int                     # 0: any
    start_port: int
    end_port: int
    start_addr: str
    end_addr: str


@dataclass
class Payload:
    type: int
    body: bytes = b""                 # encoded body (without the 4-byte generic header)
    critical: bool = False


@dataclass
class Message:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    flags: int
    message_id: int
    payloads: list = field(default_factory=list)
    first_payload: int = PL_NONE      # of a parsed message: the header's Next Payload

    @property
    def is_response(self):
        return bool(self.flags & F_RESPONSE)

    @property
    def from_initiator(self):
        return bool(self.flags & F_INITIATOR)

    def get(self, ptype):
        return next((p for p in self.payloads if p.type == ptype), None)

    def notifies(self):
        return [decode_notify(p.body) for p in self.payloads if p.type == PL_NOTIFY]


# ---- generic payload chain ----

def encode_payloads(payloads, trailing_next=PL_NONE):
    """Payloads -> (type of the first, bytes of the chain)."""
    out = []
    for i, p in enumerate(payloads):
        nxt = payloads[i + 1].type if i + 1 < len(payloads) else trailing_next
        out.append(struct.pack("!BBH", nxt, 0x80 if p.critical else 0, 4 + len(p.body)) + p.body)
    return (payloads[0].type if payloads else trailing_next), b"".join(out)


def parse_payloads(first, data):
    """The payload chain starting with type `first` in data -> [Payload]. Unknown
    non-critical payloads are skipped (RFC 7296 2.5); the SK payload must be the last
    one, and its Next Payload (the first payload inside it) is kept as .inner_first."""
    out = []
    ptype, pos = first, 0
    while ptype != PL_NONE:
        if len(data) - pos < 4:
            raise MalformedMessage(f"payload {ptype} truncated")
        nxt, flags, length = struct.unpack_from("!BBH", data, pos)
        if length < 4 or pos + length > len(data):
            raise MalformedMessage(f"payload {ptype}: bad length {length}")
        body = data[pos + 4:pos + length]
        critical = bool(flags & 0x80)
        if ptype in KNOWN_PAYLOADS:
            p = Payload(ptype, body, critical)
            if ptype in (PL_SK, PL_SKF):
                p.inner_first = nxt       # SK (SKF: fragment 1) names its first inner payload
                out.append(p)
                if pos + length != len(data):
                    raise MalformedMessage("bytes after the SK payload")
                return out
            out.append(p)
        elif critical:
            raise UnsupportedCritical(ptype)
        pos += length
        ptype = nxt
    if pos != len(data):
        raise MalformedMessage(f"{len(data) - pos} bytes after the last payload")
    return out


# ---- header and whole messages ----

def encode_header(spi_i, spi_r, first, exchange, flags, message_id, length):
    return spi_i + spi_r + struct.pack("!BBBBII", first, VERSION, exchange, flags, message_id, length)


def parse_header(data):
    """-> (spi_i, spi_r, first payload, version, exchange, flags, message id, length)."""
    if len(data) < HEADER_LEN:
        raise MalformedMessage(f"{len(data)} bytes: shorter than the IKE header")
    first, version, exchange, flags, mid, length = struct.unpack_from("!BBBBII", data, 16)
    if length != len(data):
        raise MalformedMessage(f"header length {length}, datagram {len(data)}")
    return data[:8], data[8:16], first, version, exchange, flags, mid, length


def encode(msg):
    """Message (no SK payload; see crypto.seal for protected ones) -> bytes."""
    first, body = encode_payloads(msg.payloads)
    return encode_header(msg.spi_i, msg.spi_r, first, msg.exchange, msg.flags, msg.message_id,
                         HEADER_LEN + len(body)) + body


def decode(data):
    """bytes -> Message. Raises MalformedMessage (a major version other than 2 too: the
    caller answers INVALID_MAJOR_VERSION)."""
    spi_i, spi_r, first, version, exchange, flags, mid, _ = parse_header(data)
    if version >> 4 != 2:
        raise MalformedMessage(f"major version {version >> 4}")
    msg = Message(spi_i, spi_r, exchange, flags, mid, first_payload=first)
    msg.payloads = parse_payloads(first, data[HEADER_LEN:])
    return msg


# ---- SA payload ----

def encode_sa(proposals):
    out = []
    for n, prop in enumerate(proposals):
        ts = []
        for k, t in enumerate(prop.transforms):
            attrs = struct.pack("!HH", 0x8000 | ATTR_KEY_LENGTH, t.key_length) if t.key_length else b""
            ts.append(struct.pack("!BBHBBH", 0 if k == len(prop.transforms) - 1 else 3, 0,
                                  8 + len(attrs), t.type, 0, t.id) + attrs)
        body = struct.pack("!BBBB", prop.num, prop.protocol, len(prop.spi), len(ts)) + prop.spi + b"".join(ts)
        out.append(struct.pack("!BBH", 0 if n == len(proposals) - 1 else 2, 0, 4 + len(body)) + body)
    return b"".join(out)


def decode_sa(body):
    proposals, pos, last = [], 0, False
    while not last:
        if len(body) - pos < 8:
            raise MalformedMessage("proposal truncated")
        more, _, plen, num, proto, spi_size, n_t = struct.unpack_from("!BBHBBBB", body, pos)
        if more not in (0, 2) or plen < 8 + spi_size or pos + plen > len(body):
            raise MalformedMessage("bad proposal header")
        last = more == 0
        spi = body[pos + 8:pos + 8 + spi_size]
        tpos, end, transforms = pos + 8 + spi_size, pos + plen, []
        for k in range(n_t):
            if end - tpos < 8:
                raise MalformedMessage("transform truncated")
            tmore, _, tlen, ttype, _, tid = struct.unpack_from("!BBHBBH", body, tpos)
            if tmore not in (0, 3) or tlen < 8 or tpos + tlen > end or (tmore == 0) != (k == n_t - 1):
                raise MalformedMessage("bad transform header")
            t = Transform(ttype, tid)
            apos = tpos + 8
            while apos < tpos + tlen:                   # attributes: TV or TLV
                if tpos + tlen - apos < 4:
                    raise MalformedMessage("attribute truncated")
                atype, aval = struct.unpack_from("!HH", body, apos)
                if atype & 0x8000:
                    if atype & 0x7fff == ATTR_KEY_LENGTH:
                        t.key_length = aval
                    apos += 4
                else:
                    if apos + 4 + aval > tpos + tlen:
                        raise MalformedMessage("attribute truncated")
                    apos += 4 + aval
            transforms.append(t)
            tpos += tlen
        if tpos != end:
            raise MalformedMessage("bytes after the last transform")
        proposals.append(Proposal(num, proto, spi, transforms))
        pos += plen
    if pos != len(body):
        raise MalformedMessage("bytes after the last proposal")
    return proposals


# ---- the other payload bodies ----

def encode_ke(group, data):
    return struct.pack("!HH", group, 0) + data


def decode_ke(body):
    if len(body) < 4:
        raise MalformedMessage("KE truncated")
    return struct.unpack_from("!H", body)[0], body[4:]


def encode_id(id_type, data):
    return struct.pack("!B3x", id_type) + data


def decode_id(body):
    if len(body) < 4:
        raise MalformedMessage("ID truncated")
    return body[0], body[4:]


def encode_auth(method, data):
    return struct.pack("!B3x", method) + data


def decode_auth(body):
    if len(body) < 4:
        raise MalformedMessage("AUTH truncated")
    return body[0], body[4:]


def encode_notify(n):
    return struct.pack("!BBH", n.protocol, len(n.spi), n.type) + n.spi + n.data


def decode_notify(body):
    if len(body) < 4:
        raise MalformedMessage("notify truncated")
    proto, spi_size, ntype = struct.unpack_from("!BBH", body)
    if len(body) < 4 + spi_size:
        raise MalformedMessage("notify SPI truncated")
    return Notify(ntype, proto, body[4:4 + spi_size], body[4 + spi_size:])


def encode_delete(protocol, spis):
    spi_size = len(spis[0]) if spis else 0
    return struct.pack("!BBH", protocol, spi_size, len(spis)) + b"".join(spis)


def decode_delete(body):
    if len(body) < 4:
        raise MalformedMessage("delete truncated")
    proto, spi_size, n = struct.unpack_from("!BBH", body)
    if len(body) != 4 + spi_size * n:
        raise MalformedMessage("delete: SPI count and length disagree")
    return proto, [body[4 + i * spi_size:4 + (i + 1) * spi_size] for i in range(n)]


def encode_ts(selectors):
    out = [struct.pack("!B3x", len(selectors))]
    for ts in selectors:
        out.append(struct.pack("!BBHHH4s4s", TS_IPV4_ADDR_RANGE, ts.protocol, 16, ts.start_port,
                               ts.end_port, ipaddress.IPv4Address(ts.start_addr).packed,
                               ipaddress.IPv4Address(ts.end_addr).packed))
    return b"".join(out)


def decode_ts(body):
    """-> [TrafficSelector] (IPv4 ranges; other types are skipped: fastpath has none)."""
    if len(body) < 4:
        raise MalformedMessage("TS truncated")
    n, pos, out = body[0], 4, []
    for _ in range(n):
        if len(body) - pos < 4:
            raise MalformedMessage("TS truncated")
        ts_type, proto, length = struct.unpack_from("!BBH", body, pos)
        if length < 8 or pos + length > len(body):
            raise MalformedMessage("bad TS length")
        if ts_type == TS_IPV4_ADDR_RANGE:
            if length != 16:
                raise MalformedMessage("bad TS_IPV4_ADDR_RANGE length")
            sp, ep, sa, ea = struct.unpack_from("!HH4s4s", body, pos + 4)
            out.append(TrafficSelector(proto, sp, ep, str(ipaddress.IPv4Address(sa)),
                                       str(ipaddress.IPv4Address(ea))))
        pos += length
    if pos != len(body):
        raise MalformedMessage("bytes after the last TS")
    return out


def notify_payload(ntype, data=b"", protocol=0, spi=b""):
    return Payload(PL_NOTIFY, encode_notify(Notify(ntype, protocol, spi, data)))
