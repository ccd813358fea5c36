"""ESP transport mode with AES-GCM (RFC 4303, 4106) and ESP in UDP (RFC 3948): esp-encrypt
and esp-decrypt against scapy's ipsec.SecurityAssociation as the peer, byte for byte; the
anti-replay window (ESN, 2^32 rollover, 1024 wide); forged, truncated and malformed packets
(counted drops, the SA's state untouched, never a crash)."""
import hashlib
import itertools
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, UDP, TCP, IPOption_Router_Alert
from scapy.layers.ipsec import SecurityAssociation as ScapySA, ESP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from fastpath.crypto.aesgcm import AesGcm
from fastpath.crypto.sa import SecurityAssociation, parse_xfrm_key, DROP_REASONS
from fastpath.graph.graph import Graph
from fastpath.graph.node import Node
from fastpath.nodes.esp import EspEncrypt, EspDecrypt
from fastpath.pg.pg import PgInput, PgOutput

ETH = Ether(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
A, B = "192.0.2.1", "192.0.2.2"            # the two gateways
SPI = 0x1001
F_DECRYPTED = 16
NAT_T = UDP(sport=4500, dport=4500)

_keys = itertools.count()


def fresh_key(bits=128):
    """key || salt, never the same twice in a run: an outbound counter belongs to its key."""
    material = hashlib.sha256(f"test key {next(_keys)}".encode()).digest() * 2
    return material[:bits // 8 + 4]


def inner(i, size=None):
    """VXLAN between the gateways, as OVS IPsec protects it; payload sizes cover every padding."""
    n = size if size is not None else 1 + (i * 7) % 61
    p = (IP(src=A, dst=B, id=i, flags="DF", ttl=64) / UDP(sport=49152 + i, dport=4789)
         / VXLAN(vni=100) / Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
         / Raw(bytes((i + k) & 0xff for k in range(n))))
    return IP(bytes(p))


def frame(ip):
    return bytes(ETH / ip)


def scapy_peer(ks, spi=SPI, esn=True, udp=False, seq_num=1):
    return ScapySA(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=ks, esn_en=esn,
                   nat_t_header=NAT_T.copy() if udp else None, seq_num=seq_num)


def wire(peer, ip, seq, iv=None):
    """scapy's encryption of ip with the full (64-bit) sequence number seq."""
    return peer.encrypt(ip, seq_num=seq & 0xffffffff, iv=iv, esn=seq >> 32)


def esp_by_hand(ks, spi, seq, payload, nh, esn=True, pad=None, padding=None):
    """RFC 4106 section 5 computed with the cryptography package: SPI, seq, IV, ciphertext, ICV."""
    key, salt = ks[:-4], ks[-4:]
    pad = (-(len(payload) + 2)) % 4 if pad is None else pad
    padding = bytes(range(1, pad + 1)) if padding is None else padding
    iv = struct.pack("!Q", seq)
    aad = (struct.pack("!III", spi, seq >> 32, seq & 0xffffffff) if esn
           else struct.pack("!II", spi, seq & 0xffffffff))
    ct = AESGCM(key).encrypt(salt + iv, payload + padding + bytes([pad, nh]), aad)
    return struct.pack("!II", spi, seq & 0xffffffff) + iv + ct


def outer(esp, proto=50, udp=False, **ip):
    """The ESP packet between the gateways, as a frame."""
    if udp:
        return frame(IP(src=A, dst=B, **ip) / UDP(sport=4500, dport=4500, chksum=0) / Raw(esp))
    return frame(IP(src=A, dst=B, proto=proto, **ip) / Raw(esp))


class SetAux(Node):
    """What vxlan-encap does for an IPsec tunnel: pool.aux = the outbound SA index."""
    next_nodes = ("esp-encrypt",)

    def __init__(self, index):
        super().__init__("set-aux")
        self.sa_index = index

    def process(self, vector):
        self.pool.meta("aux")[vector] = self.sa_index
        self.pool.meta("next")[vector] = 1


class Flags(Node):
    """Records the flags of what passes (F_DECRYPTED)."""
    next_nodes = ("out",)

    def __init__(self):
        super().__init__("flags")
        self.seen = []

    def process(self, vector):
        self.seen += self.pool.meta("flags")[vector].tolist()
        self.pool.meta("next")[vector] = 1


def encrypt_graph(sa, index=1):
    g = Graph(n_buffers=2048)
    inp = g.add(PgInput("in", 1, next_node="set-aux"))
    g.add(SetAux(index))
    enc = g.add(EspEncrypt(next_node="out"))
    if sa is not None:
        enc.set_outbound(index, sa)
    out = g.add(PgOutput("out", 2))
    return g, inp, enc, out


def decrypt_graph(*sas):
    g = Graph(n_buffers=4096)
    inp = g.add(PgInput("in", 2, next_node="esp-decrypt"))
    dec = g.add(EspDecrypt(udp_next="flags", other_next="out"))
    for sa in sas:
        dec.set_sa(sa.spi, sa)
    g.add(Flags())
    out = g.add(PgOutput("out", 1))
    return g, inp, dec, out


def run(g, frames):
    g["in"].add(frames)
    g.run_until_idle()
    got = g["out"].take()
    g.pool.check_accounting(0)
    return got


def ip4_checksum(header):
    s = sum(struct.unpack(f"!{len(header) // 2}H", bytes(header)))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def errors(g):
    return {reason: count for count, node, reason, text in g.errors()}


KEYS = [pytest.param(128, id="aes128"), pytest.param(256, id="aes256")]
MODES = [pytest.param(True, False, id="esn"), pytest.param(False, False, id="no-esn"),
         pytest.param(True, True, id="esn-udp4500"), pytest.param(False, True, id="udp4500")]


# ---- interoperability with scapy ----

@pytest.mark.parametrize("bits", KEYS)
@pytest.mark.parametrize("esn,udp", MODES)
def test_fastpath_encrypts_scapy_decrypts(bits, esn, udp):
    ks = fresh_key(bits)
    sa = SecurityAssociation(SPI, ks, direction="out", esn=esn, encap="udp" if udp else None)
    g, inp, enc, out = encrypt_graph(sa)
    packets = [inner(i) for i in range(12)]
    got = run(g, [frame(p) for p in packets])
    assert len(got) == len(packets) and errors(g) == {}
    peer = scapy_peer(ks, esn=esn, udp=udp)
    for seq, (f, p) in enumerate(zip(got, packets), start=1):
        # the IV is the sequence number: with it scapy produces the very same bytes
        assert f == frame(wire(peer, p, seq, iv=struct.pack("!Q", seq)))
        assert bytes(peer.decrypt(IP(f[14:]), esn=0)) == bytes(p)
    assert sa.seq == len(packets)
    assert sa.stats()["packets"] == len(packets)
    assert sa.stats()["bytes"] == sum(len(p) - 20 for p in packets)


@pytest.mark.parametrize("bits", KEYS)
@pytest.mark.parametrize("esn,udp", MODES)
def test_scapy_encrypts_fastpath_decrypts(bits, esn, udp):
    ks = fresh_key(bits)
    sa = SecurityAssociation(SPI, ks, direction="in", esn=esn, encap="udp" if udp else None)
    g, inp, dec, out = decrypt_graph(sa)
    packets = [inner(i) for i in range(12)]
    peer = scapy_peer(ks, esn=esn, udp=udp)
    frames = [frame(peer.encrypt(p)) for p in packets]           # random IVs, seq 1, 2, ...
    got = run(g, frames)
    assert got == [frame(p) for p in packets]
    assert errors(g) == {}
    assert g["flags"].seen and all(f & F_DECRYPTED for f in g["flags"].seen)   # UDP went by udp_next
    assert sa.seq == len(packets) and sa.stats()["packets"] == len(packets)


@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp4500"])
def test_round_trip_with_ip_options_and_every_padding(udp):
    ks = fresh_key(256)
    tx = SecurityAssociation(SPI, ks, direction="out", encap="udp" if udp else None)
    rx = SecurityAssociation(SPI, ks, direction="in", encap="udp" if udp else None)
    packets = [IP(bytes(IP(src=A, dst=B, options=[IPOption_Router_Alert()]) / TCP(dport=80) / Raw(bytes(n))))
               for n in range(8)] + [inner(i, size=n) for i, n in enumerate(range(0, 1400, 97))]
    g, _, _, _ = encrypt_graph(tx)
    enc = run(g, [frame(p) for p in packets])
    peer = scapy_peer(ks, udp=udp)
    for seq, (f, p) in enumerate(zip(enc, packets), start=1):
        assert (len(f) - 14) % 4 == 0 if not udp else (len(f) - 14 - 8) % 4 == 0
        assert f == frame(wire(peer, p, seq, iv=struct.pack("!Q", seq)))
    g2, _, _, _ = decrypt_graph(rx)
    g2["esp-decrypt"].set_next(6, "out")
    assert run(g2, enc) == [frame(p) for p in packets]


def test_ethernet_padding_is_not_encrypted():
    """A short frame padded to 60 bytes: only the IPv4 packet is protected."""
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="out")
    p = IP(bytes(IP(src=A, dst=B) / UDP(sport=1, dport=2) / Raw(b"hi")))
    g, _, _, _ = encrypt_graph(sa)
    (f,) = run(g, [frame(p) + bytes(60 - 14 - len(p))])
    assert f == frame(wire(scapy_peer(ks), p, 1, iv=struct.pack("!Q", 1)))


def test_esn_aad_matches_rfc4106_by_hand():
    """Independent of scapy: SPI || seq-hi || seq-lo as AAD, salt || IV as the nonce."""
    for esn in (True, False):
        ks = fresh_key(256)
        start = (1 << 32) - 2 if esn else 1000
        sa = SecurityAssociation(0xabcdef01, ks, direction="out", esn=esn, seq=start)
        g, _, _, _ = encrypt_graph(sa)
        packets = [inner(i) for i in range(5)]
        for k, (f, p) in enumerate(zip(run(g, [frame(p) for p in packets]), packets), start=1):
            raw = bytes(p)
            assert f[14 + 20:] == esp_by_hand(ks, 0xabcdef01, start + k, raw[20:], 17, esn=esn)
            assert f[14 + 9] == 50


def test_aesgcm_matches_cryptography():
    for bits in (128, 256):
        key = bytes(range(bits // 8))
        for n in (0, 1, 16, 17, 1400):
            nonce, aad, data = bytes(12), b"aad", bytes(range(n % 256)) * (n // 256 + 1)
            data = data[:n]
            ct = AesGcm(key).encrypt(nonce, data, aad)
            assert ct == AESGCM(key).encrypt(nonce, data, aad)
            assert AesGcm(key).decrypt(nonce, ct, aad) == data
            with pytest.raises(ValueError):
                AesGcm(key).decrypt(nonce, ct[:-1] + bytes([ct[-1] ^ 1]), aad)
    with pytest.raises(ValueError):
        AesGcm(bytes(24))


# ---- anti-replay ----

def accepted(order, window=64, esn=True):
    """How many of the packets with these sequence numbers a new inbound SA accepts (one
    vector), and the errors counted."""
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="in", replay_window=window, esn=esn)
    peer = scapy_peer(ks, esn=esn)
    frames = {s: frame(wire(peer, inner(s & 0xff), s)) for s in set(order)}
    g, _, dec, _ = decrypt_graph(sa)
    got = run(g, [frames[s] for s in order])
    return len(got), errors(g), sa


def test_duplicate_is_dropped_as_replay():
    n, errs, sa = accepted([1, 2, 2, 3, 1])
    assert n == 3 and errs == {"replay": 2}
    assert sa.drops["replay"] == 2


# Below the window, a 32-bit SA knows a packet is old: `replay`. With ESN the same low half
# means the next 2^32 epoch (RFC 4303 A2.2); the ICV, which covers the high half, then fails:
# `auth_failed`. Dropped, and the window unchanged, either way.
@pytest.mark.parametrize("esn", [False, True], ids=["no-esn", "esn"])
def test_window_edges_64(esn):
    # 100 first; 37 is the oldest number the window (100-63 .. 100) still takes, 36 is out;
    # after 101, 38 is the oldest: 37 is out too
    n, errs, sa = accepted([100, 37, 36, 99, 100, 101, 38, 37], esn=esn)
    assert n == 5
    assert errs == ({"replay": 3} if not esn else {"replay": 1, "auth_failed": 2})


def test_reordered_within_window_is_accepted():
    order = list(range(1, 65))
    random.Random(1).shuffle(order)
    n, errs, sa = accepted(order)
    assert n == 64 and errs == {}


@pytest.mark.parametrize("esn", [False, True], ids=["no-esn", "esn"])
def test_window_1024(esn):
    n, errs, sa = accepted([2000, 977, 976, 1500, 977, 2001, 978, 2100, 1077, 1076], window=1024, esn=esn)
    # 976 is 1024 below the top, 977 comes twice, 1076 is 1024 below 2100
    assert n == 7
    assert errs == ({"replay": 3} if not esn else {"replay": 1, "auth_failed": 2})
    assert sa.stats()["replay_window"] == 1024


@pytest.mark.parametrize("esn", [False, True], ids=["no-esn", "esn"])
@pytest.mark.parametrize("window", [1, 5, 64, 65, 128, 200])
def test_window_against_a_model(window, esn):
    """Random orders with duplicates against the RFC 4303 3.4.3 window as a set."""
    rng = random.Random(window)
    order = [min(400, max(1, int(rng.gauss(20 + k * 0.9, 25)))) for k in range(600)]
    top, seen, expect = 0, set(), 0
    for s in order:
        if s > top or (top - s < window and s not in seen):
            expect += 1
            seen.add(s)
            top = max(top, s)
    n, errs, sa = accepted(order, window, esn)
    assert n == expect and sum(errs.values()) == len(order) - expect
    assert set(errs) <= ({"replay", "auth_failed"} if esn else {"replay"})


def test_esn_rollover_inbound():
    """The window slides across 2^32: the high half is inferred, and the ICV checks it."""
    base = 1 << 32
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="in", seq=base - 10)
    peer = scapy_peer(ks)
    f = lambda s: frame(wire(peer, inner(s & 0xff), s))
    order = [base - 5, base + 2, base - 3, base + 1, base + 2, base - 9, base - 10]
    g, _, dec, _ = decrypt_graph(sa)
    got = run(g, [f(s) for s in order])
    assert len(got) == 5                         # not base+2 again, nor base-10 (seen)
    assert errors(g) == {"replay": 2}
    assert sa.seq == base + 2
    # packets of the first epoch below the window (base-80, 7) are taken for epoch 1 (RFC
    # 4303 A2.2): the ICV, which covers the high half, refuses them
    before = sa.window_state()
    assert run(g, [f(base - 80), f(7)]) == []
    assert errors(g) == {"replay": 2, "auth_failed": 2} and sa.window_state() == before
    # and a real epoch-1 one passes
    assert len(run(g, [f(base + 7)])) == 1


def test_esn_rollover_outbound():
    base = 1 << 32
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="out", seq=base - 3)
    g, _, _, _ = encrypt_graph(sa)
    packets = [inner(i) for i in range(6)]
    got = run(g, [frame(p) for p in packets])
    peer = scapy_peer(ks)
    for k, (fr, p) in enumerate(zip(got, packets)):
        seq = base - 2 + k
        esp = fr[14 + 20:]
        assert struct.unpack("!II", esp[:8]) == (SPI, seq & 0xffffffff)
        assert esp[8:16] == struct.pack("!Q", seq)             # IV = full 64-bit seq
        assert bytes(peer.decrypt(IP(fr[14:]), esn=seq >> 32)) == bytes(p)
    # a receiver whose window sits below 2^32 takes them all
    rx = SecurityAssociation(SPI, ks, direction="in", seq=base - 30)
    g2, _, _, _ = decrypt_graph(rx)
    g2["flags"].next_names[1] = "out"
    assert run(g2, got) == [frame(p) for p in packets]


def test_sequence_number_never_wraps():
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="out", esn=False, seq=(1 << 32) - 2)
    g, _, _, _ = encrypt_graph(sa)
    got = run(g, [frame(inner(i)) for i in range(3)])
    assert len(got) == 1 and struct.unpack("!I", got[0][14 + 24:14 + 28])[0] == 0xffffffff
    assert errors(g) == {"seq_exhausted": 2}
    assert sa.drops["seq_exhausted"] == 2 and sa.seq == 0xffffffff
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="out", seq=(1 << 64) - 2)
    g, _, _, _ = encrypt_graph(sa)
    assert len(run(g, [frame(inner(i)) for i in range(3)])) == 1
    assert errors(g) == {"seq_exhausted": 2}


def test_same_key_never_restarts_the_counter():
    """An outbound SA made again with the same key material goes on, so no IV repeats."""
    ks = fresh_key()
    a = SecurityAssociation(SPI, ks, direction="out")
    g, _, _, _ = encrypt_graph(a)
    run(g, [frame(inner(i)) for i in range(5)])
    b = SecurityAssociation(SPI + 1, ks, direction="out")
    assert b.seq == 5
    g, _, _, _ = encrypt_graph(b)
    (f,) = run(g, [frame(inner(9))])
    assert f[14 + 28:14 + 36] == struct.pack("!Q", 6)


# ---- forged, corrupt, truncated, malformed ----

@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp4500"])
def test_every_flipped_bit_is_dropped_and_leaves_the_window(udp):
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="in", encap="udp" if udp else None)
    good = frame(wire(scapy_peer(ks, udp=udp), inner(3, size=40), 0x55))
    esp_at = 14 + 20 + (8 if udp else 0)
    g, _, dec, _ = decrypt_graph(sa)
    expect = {}
    frames = []
    for bit in range((len(good) - 14) * 8):
        byte = 14 + bit // 8
        if 14 + 20 <= byte < esp_at:
            continue                               # the UDP header is not authenticated
        f = bytearray(good)
        f[byte] ^= 1 << (bit % 8)
        frames.append(bytes(f))
        why = ("ip4" if byte < 14 + 20 else "no_sa" if byte < esp_at + 4 else "auth_failed")
        expect[why] = expect.get(why, 0) + 1
    before = sa.window_state()
    assert run(g, frames) == []
    errs = errors(g)
    assert errs.get("no_sa") == expect["no_sa"] and errs.get("auth_failed") == expect["auth_failed"]
    assert sum(v for k, v in errs.items() if k in ("not_ip4", "ip4_length", "ip4_checksum")) == expect["ip4"]
    assert sum(errs.values()) == len(frames)
    assert sa.window_state() == before and sa.drops["auth_failed"] == expect["auth_failed"]
    assert sa.stats()["packets"] == 0
    assert len(run(g, [good])) == 1                # the genuine packet still gets through once
    assert run(g, [good]) == []


@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp4500"])
def test_truncated_at_every_length(udp):
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="in", encap="udp" if udp else None)
    good = frame(wire(scapy_peer(ks, udp=udp), inner(1, size=30), 9))
    frames = [good[:n] for n in range(len(good))]
    # the same, but with IPv4 (and UDP) lengths and checksum made to agree with the cut
    for n in range(14 + 20, len(good)):
        f = bytearray(good[:n])
        f[16:18] = struct.pack("!H", n - 14)
        if udp and n >= 14 + 28:
            f[38:40] = struct.pack("!H", n - 14 - 20)
        f[24:26] = bytes(2)
        f[24:26] = struct.pack("!H", ip4_checksum(f[14:34]))
        frames.append(bytes(f))
    g, _, _, _ = decrypt_graph(sa)
    before = sa.window_state()
    assert run(g, frames) == []
    assert sum(errors(g).values()) == len(frames)
    assert sa.window_state() == before
    assert len(run(g, [good])) == 1


def test_random_garbage_after_a_valid_header_never_passes():
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="in", encap=None)
    rng = random.Random(7)
    frames = []
    for k in range(1500):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 120)))
        if k % 2:
            body = struct.pack("!I", SPI) + body     # a known SPI: the ICV has to stop it
        frames.append(outer(body, proto=rng.choice([50, 50, 17, 6])))
        frames.append(bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 80))))
    g, _, _, _ = decrypt_graph(sa)
    assert run(g, frames) == []
    assert sum(errors(g).values()) == len(frames)
    assert sa.stats()["packets"] == 0 and sa.window_state() == (0, bytes(8))


def test_decrypt_drops_by_reason():
    ks, ks_udp = fresh_key(), fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="in")
    sa_udp = SecurityAssociation(SPI + 1, ks_udp, direction="in", encap="udp")
    payload = bytes(inner(0))[20:]
    cases = {
        "not_ip4": [bytes(ETH / Raw(bytes(40))), bytes(10)],
        "fragment": [outer(esp_by_hand(ks, SPI, 1, payload, 17), flags="MF")],
        "not_esp": [outer(b"x" * 40, proto=6), frame(IP(src=A, dst=B) / UDP(dport=4501) / Raw(bytes(40)))],
        "natt_keepalive": [outer(b"\xff", udp=True)],
        "non_esp_marker": [outer(bytes(4) + b"ike", udp=True)],
        "bad_length": [outer(esp_by_hand(ks, SPI, 2, payload, 17)[:33])],
        "no_sa": [outer(esp_by_hand(ks, SPI + 7, 3, payload, 17))],
        "encap_mismatch": [outer(esp_by_hand(ks, SPI, 4, payload, 17), udp=True),
                           outer(esp_by_hand(ks_udp, SPI + 1, 4, payload, 17))],
        "bad_padding": [outer(esp_by_hand(ks, SPI, 5, payload, 17, pad=3, padding=bytes(3))),
                        outer(esp_by_hand(ks, SPI, 6, b"", 17, pad=200, padding=b""))],
        "dummy": [outer(esp_by_hand(ks, SPI, 7, bytes(20), 59))],
    }
    g, _, _, _ = decrypt_graph(sa, sa_udp)
    assert run(g, [f for fs in cases.values() for f in fs]) == []
    assert errors(g) == {k: len(v) for k, v in cases.items()}
    assert sa.drops["bad_padding"] == 2 and sa.drops["encap_mismatch"] == 1


def test_decrypt_next_by_protocol_and_flag():
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="in")
    g = Graph(n_buffers=256)
    g.add(PgInput("in", 2, next_node="esp-decrypt"))
    dec = g.add(EspDecrypt())                            # ip4-udp-input, ip4-input by default
    dec.set_sa(SPI, sa)
    assert dec.next_names == ["error-drop", "ip4-udp-input", "ip4-input"]
    for name in ("ip4-udp-input", "ip4-input", "tcp"):
        g.add(PgOutput(name, 3))
    dec.set_next(6, "tcp")
    peer = scapy_peer(ks)
    pkts = {"ip4-udp-input": inner(1), "tcp": IP(bytes(IP(src=A, dst=B) / TCP())),
            "ip4-input": IP(bytes(IP(src=A, dst=B, proto=47) / Raw(b"gre!")))}
    g["in"].add([frame(peer.encrypt(p)) for p in pkts.values()])
    g.run_until_idle()
    for name, p in pkts.items():
        assert g[name].take() == [frame(p)]


def test_spi_table_many_sas_and_removal():
    g, _, dec, _ = decrypt_graph()
    rng = random.Random(3)
    spis = rng.sample(range(1, 1 << 32), 300)
    keys = {spi: fresh_key() for spi in spis}
    sas = {spi: SecurityAssociation(spi, keys[spi], direction="in") for spi in spis}
    for spi, sa in sas.items():
        dec.set_sa(spi, sa)
    frames = [frame(scapy_peer(keys[spi], spi=spi).encrypt(inner(1))) for spi in spis]
    assert len(run(g, frames)) == 300
    assert all(sa.stats()["packets"] == 1 for sa in sas.values())
    for spi in spis[:150]:
        assert dec.remove_sa(spi) is sas[spi]
    frames = [frame(scapy_peer(keys[spi], spi=spi).encrypt(inner(1), seq_num=2)) for spi in spis]
    assert len(run(g, frames)) == 150 and errors(g) == {"no_sa": 150}
    with pytest.raises(ValueError):
        dec.set_sa(spis[0] + 1, sas[spis[0]])              # SPI must be the SA's
    with pytest.raises(ValueError):
        dec.set_sa(SPI, SecurityAssociation(SPI, fresh_key(), direction="out"))


def test_encrypt_drops_by_reason():
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="out")
    g, _, enc, _ = encrypt_graph(sa)
    cases = {
        "not_ip4": [bytes(ETH / Raw(bytes(40))), bytes(8), frame(inner(0))[:14 + 19]],
        "ip4_length": [frame(inner(0))[:-1]],
        "ip4_checksum": [frame(IP(bytes(inner(0))[:10] + b"\0\0" + bytes(inner(0))[12:]))],
        "fragment": [frame(IP(bytes(IP(src=A, dst=B, frag=10) / Raw(bytes(20)))))],
    }
    assert run(g, [f for fs in cases.values() for f in fs]) == []
    assert errors(g) == {k: len(v) for k, v in cases.items()}
    assert sa.seq == 0                                   # nothing used a sequence number
    g, _, enc, _ = encrypt_graph(None)                   # index 1 not configured
    assert run(g, [frame(inner(0))]) == [] and errors(g) == {"no_sa": 1}
    with pytest.raises(ValueError):
        enc.set_outbound(0, sa)                          # 0 means "no SA"
    enc.set_outbound(1, sa)
    assert len(run(g, [frame(inner(0))])) == 1
    assert enc.remove_outbound(1) is sa
    assert run(g, [frame(inner(0))]) == [] and errors(g)["no_sa"] == 2


@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp4500"])
def test_too_big_is_a_counted_drop(udp):
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="out", encap="udp" if udp else None)
    g, _, _, _ = encrypt_graph(sa)
    # ESP adds 8 + 8 + pad + 2 + 16 (and UDP 8), and what is encrypted is a multiple of 4:
    # the largest IPv4 packet that still fits a 2048-byte buffer is 1998 bytes (1990 with
    # UDP) and makes a 2046-byte frame
    fits = 1998 - (8 if udp else 0)
    sizes = [fits, fits + 1, fits + 2, fits - 3]
    pkts = [IP(bytes(IP(src=A, dst=B) / UDP() / Raw(bytes(n - 28)))) for n in sizes]
    got = run(g, [frame(p) for p in pkts])
    assert [len(f) for f in got] == [2046, 2046]
    assert errors(g) == {"too_big": 2} and sa.drops["too_big"] == 2
    peer = scapy_peer(ks, udp=udp)
    assert bytes(peer.decrypt(IP(got[0][14:]))) == bytes(pkts[0])


def test_lifetimes_are_hard_limits():
    ks = fresh_key()
    tx = SecurityAssociation(SPI, ks, direction="out", lifetime_packets=3)
    g, _, _, _ = encrypt_graph(tx)
    enc = run(g, [frame(inner(i)) for i in range(5)])
    assert len(enc) == 3 and errors(g) == {"expired": 2} and tx.stats()["expired"]
    rx = SecurityAssociation(SPI, ks, direction="in", lifetime_bytes=2 * (len(inner(0)) - 20))
    g, _, _, _ = decrypt_graph(rx)
    assert len(run(g, enc)) == 2 and errors(g) == {"expired": 1}
    assert rx.drops["expired"] == 1


def test_trace_names_spi_and_seq():
    ks = fresh_key()
    sa = SecurityAssociation(SPI, ks, direction="out")
    g, _, _, _ = encrypt_graph(sa)
    g.trace_add("in", 2)
    run(g, [frame(inner(0)), frame(inner(1))])
    text = g.tracer.show()
    assert "spi 0x00001001 seq 1 -> out" in text and "spi 0x00001001 seq 2 -> out" in text


# ---- the SA ----

def test_xfrm_keys_and_sa_arguments():
    assert parse_xfrm_key("0x" + "ab" * 20) == bytes([0xab]) * 20
    assert len(parse_xfrm_key("00" * 36)) == 36
    for bad in ("0x" + "ab" * 28, "0x1234", "0xzz" + "00" * 19):
        with pytest.raises(ValueError):
            parse_xfrm_key(bad)
    sa = SecurityAssociation(7, "0x" + "11" * 36, direction="in", replay_window=4096)
    assert sa.cipher == "aes-gcm-256" and sa.replay_window == 4096
    st = sa.stats()
    assert set(st["drops"]) == set(DROP_REASONS) and st["esn"] is True and st["direction"] == "in"
    assert "11" * 8 not in repr(st)                       # the key is not shown
    for kw in (dict(direction="both"), dict(direction="in", replay_window=0),
               dict(direction="in", replay_window=4097), dict(direction="in", encap="tcp")):
        with pytest.raises(ValueError):
            SecurityAssociation(7, fresh_key(), **kw)
    with pytest.raises(ValueError):
        SecurityAssociation(0, fresh_key(), direction="in")
    with pytest.raises(ValueError):
        SecurityAssociation(7, bytes(28), direction="in")     # AES-192: not offered


def test_random_ip4_packets_round_trip():
    """Any IPv4 packet (options, any protocol, Ethernet padding after it) comes back whole."""
    rng = random.Random(11)
    frames, expect = [], []
    for k in range(600):
        ihl = rng.choice([5, 5, 5, 6, 9, 15])
        payload = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        h = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, rng.getrandbits(8), ihl * 4 + len(payload),
                                  rng.getrandbits(16), rng.choice([0, 0x4000]), rng.randrange(1, 256),
                                  rng.choice([p for p in range(256) if p != 59]),     # 59: dummy
                                  0, rng.randbytes(4), rng.randbytes(4)))
        h += rng.randbytes(ihl * 4 - 20)
        h[10:12] = struct.pack("!H", ip4_checksum(h))
        f = bytes(ETH)[:12] + b"\x08\x00" + bytes(h) + payload
        expect.append(f)
        frames.append(f + rng.randbytes(rng.choice([0, 0, 3, 40])))
    ks = fresh_key(256)
    for udp in (False, True):
        g, _, _, _ = encrypt_graph(SecurityAssociation(SPI, ks, direction="out", encap="udp" if udp else None))
        enc = run(g, frames)
        assert len(enc) == len(frames)
        g2, _, dec, _ = decrypt_graph(SecurityAssociation(SPI, ks, direction="in", encap="udp" if udp else None))
        for proto in range(256):
            dec.set_next(proto, "out")
        assert sorted(run(g2, enc)) == sorted(expect)


class Squeeze(Node):
    """Moves each frame to the very start of its buffer: no headroom left."""
    next_nodes = ("set-aux",)

    def process(self, vector):
        for b in vector:
            f = self.pool.get_frame(b)
            self.pool.meta("offset")[b] = 4
            self.pool.frame_view(b)[:] = memoryview(f)
        self.pool.meta("next")[vector] = 1


def test_no_headroom_is_a_counted_drop():
    sa = SecurityAssociation(SPI, fresh_key(), direction="out")
    g = Graph(n_buffers=64)
    g.add(PgInput("in", 1, next_node="squeeze"))
    g.add(Squeeze("squeeze"))
    g.add(SetAux(1))
    g.add(EspEncrypt(next_node="out")).set_outbound(1, sa)
    g.add(PgOutput("out", 2))
    assert run(g, [frame(inner(0))]) == []
    assert errors(g) == {"no_headroom": 1} and sa.seq == 0
