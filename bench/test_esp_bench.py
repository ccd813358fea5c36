"""ESP transport mode, AES-GCM-128, 64-, 512- and 1400-byte IPv4 packets (VXLAN between
two gateways) at vector 256: pg-input -> set-aux -> esp-encrypt -> pg-output, the reverse through esp-decrypt,
on each AES-GCM engine (intel-ipsec-mb, OpenSSL EVP), and next to them the obvious
per-packet Python loop with the cryptography package's AESGCM producing the same ESP
packets."""
import struct

import pytest

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from figures import record
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.packet import Raw

from fastpath.crypto.aesgcm import ENGINES
from fastpath.crypto.sa import SecurityAssociation
from fastpath.graph.graph import Graph
from fastpath.graph.node import Node
from fastpath.nodes.esp import EspEncrypt, EspDecrypt
from fastpath.pg.pg import PgInput, PgOutput

PACKETS = 256 * 40
SIZES = (64, 512, 1400)               # IPv4 packet sizes
SPI = 0x100
KEY_SALT = bytes(range(16)) + b"salt"


def plain_frames(size=1400, n=256):
    out = []
    for i in range(n):
        p = IP(src="192.0.2.1", dst="192.0.2.2", id=i, flags="DF") / UDP(sport=49152 + i, dport=4789)
        if size >= 64:
            p = p / VXLAN(vni=100) / Ether(src="02:00:00:00:01:01", dst="02:00:00:00:01:02")
        p = p / Raw(bytes(size - len(p)))
        out.append(bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / p))
    return out


class SetAux(Node):
    """Stands for vxlan-encap: pool.aux = the outbound SA's index (a numpy write per vector)."""
    next_nodes = ("esp-encrypt",)

    def process(self, vector):
        self.pool.meta("aux")[vector] = 1
        self.pool.meta("next")[vector] = 1


def encrypt_graph(key_salt, keep=False, engine=None):
    g = Graph(n_buffers=4096)
    inp = g.add(PgInput("in", 1, next_node="set-aux"))
    g.add(SetAux("set-aux"))
    enc = g.add(EspEncrypt(next_node="out"))
    # the benchmark's SA restarts at 1 each run: its key is a test key, never a real one
    enc.set_outbound(1, SecurityAssociation(SPI, key_salt, direction="out", engine=engine))
    out = g.add(PgOutput("out", 2, keep=keep))
    return g, inp, out


def node_figures(benchmark, g):
    for r in g.runtime():
        benchmark.extra_info[f"ns/packet {r['name']}"] = round(r["ns_per_packet"], 2)


def figure_name(direction, engine, size):
    """esp_encrypt_64b for the engine AesGcm picks by default, esp_encrypt_openssl_64b..."""
    return f"esp_{direction}_{size}b" if engine == ENGINES[0] else f"esp_{direction}_{engine}_{size}b"


def test_ipsec_mb_engine_is_measured():
    # the figures name the engine they measured: on this machine that must be ipsec-mb
    assert ENGINES[0] == "ipsec-mb"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", SIZES)
def test_esp_encrypt(benchmark, size, engine):
    g, inp, out = encrypt_graph(bytes((100 + size + k) % 256 for k in range(20)), engine=engine)
    inp.load(plain_frames(size), loop=True, limit=0)
    rounds = []

    def round_():
        inp.limit = PACKETS
        g.run_until_idle()
        rounds.append(1)

    benchmark.pedantic(round_, rounds=20, warmup_rounds=2)
    assert out.tx_packets == len(rounds) * PACKETS
    assert g.errors() == []
    g.pool.check_accounting(0)
    record(benchmark, figure_name("encrypt", engine, size), PACKETS)
    benchmark.extra_info["engine"] = engine
    benchmark.extra_info["gbps"] = round(benchmark.extra_info.get("mpps", 0) * size * 8 / 1000, 2)
    node_figures(benchmark, g)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", SIZES)
def test_esp_decrypt(benchmark, size, engine):
    # PACKETS distinct ESP packets (sequence numbers 1..PACKETS), made by esp-encrypt
    key_salt = bytes((120 + size + k) % 256 for k in range(20))
    g, inp, out = encrypt_graph(key_salt, keep=True, engine=engine)
    inp.load(plain_frames(size), loop=True, limit=PACKETS)
    g.run_until_idle()
    esp = out.take()
    assert len(esp) == PACKETS

    g = Graph(n_buffers=4096)
    inp = g.add(PgInput("in", 1, next_node="esp-decrypt"))
    dec = g.add(EspDecrypt(udp_next="out", other_next="out"))
    out = g.add(PgOutput("out", 2, keep=False))
    rounds = []

    def setup():
        # a new inbound SA each round: the same packets again would be replays
        dec.set_sa(SPI, SecurityAssociation(SPI, key_salt, direction="in", engine=engine))
        inp.load(esp)

    def round_():
        g.run_until_idle()
        rounds.append(1)

    benchmark.pedantic(round_, setup=setup, rounds=20, warmup_rounds=2)
    assert out.tx_packets == len(rounds) * PACKETS
    assert g.errors() == []
    g.pool.check_accounting(0)
    record(benchmark, figure_name("decrypt", engine, size), PACKETS)
    benchmark.extra_info["engine"] = engine
    benchmark.extra_info["gbps"] = round(benchmark.extra_info.get("mpps", 0) * size * 8 / 1000, 2)
    node_figures(benchmark, g)


def naive_encrypt(frame, aead, salt, spi, seq):
    """One ESP transport-mode packet the obvious way (RFC 4303, RFC 4106)."""
    eth, ip = frame[:14], frame[14:]
    hlen = (ip[0] & 0xf) * 4
    total = struct.unpack("!H", ip[2:4])[0]
    header, payload = bytearray(ip[:hlen]), ip[hlen:total]
    pad = -(len(payload) + 2) % 4
    plaintext = payload + bytes(range(1, pad + 1)) + bytes([pad, header[9]])
    iv = struct.pack("!Q", seq)
    esp = struct.pack("!II", spi, seq & 0xffffffff) + iv
    esp += aead.encrypt(salt + iv, plaintext, struct.pack("!III", spi, seq >> 32, seq & 0xffffffff))
    header[9] = 50
    header[2:4] = struct.pack("!H", hlen + len(esp))
    header[10:12] = b"\0\0"
    s = sum(struct.unpack(f"!{hlen // 2}H", header))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    header[10:12] = struct.pack("!H", ~s & 0xffff)
    return eth + bytes(header) + esp


@pytest.mark.parametrize("size", (64, 1400))
def test_esp_encrypt_naive_cryptography(benchmark, size):
    frames = plain_frames(size)
    # a key of its own per size: an SA carries on from the last sequence number its key used
    key_salt = bytes((140 + size + k) % 256 for k in range(20))
    aead, salt = AESGCM(key_salt[:16]), key_salt[16:]
    # the same bytes as esp-encrypt
    g, inp, out = encrypt_graph(key_salt, keep=True)
    inp.load(frames[:8])
    g.run_until_idle()
    assert out.take() == [naive_encrypt(f, aead, salt, SPI, k + 1) for k, f in enumerate(frames[:8])]
    seq = [0]

    def round_():
        sent = 0
        while sent < PACKETS:
            for f in frames:
                seq[0] += 1
                naive_encrypt(f, aead, salt, SPI, seq[0])
            sent += len(frames)
        return sent

    assert benchmark.pedantic(round_, rounds=3, warmup_rounds=1) == PACKETS
    record(benchmark, f"esp_encrypt_naive_cryptography_{size}b", PACKETS)
