"""The two AES-GCM engines (intel-ipsec-mb's direct API, OpenSSL EVP) against each other
and against the cryptography package, on every length from 0 to 9000 bytes; the ESP nodes
on each engine, packets up to a jumbo frame (a big buffer), checked with scapy; and the
fallback to OpenSSL where intel-ipsec-mb cannot run."""
import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import IP, UDP
from scapy.packet import Raw

from fastpath.crypto import aesgcm
from fastpath.crypto.aesgcm import AesGcm
from fastpath.crypto.sa import SecurityAssociation

sys.path.insert(0, os.path.dirname(__file__))
from test_esp import A, B, SPI, decrypt_graph, encrypt_graph, fresh_key, frame, run, scapy_peer  # noqa: E402

# every length up to 600 (all the block and padding cases several times over), then a spread
# up to a jumbo frame
LENGTHS = list(range(0, 600)) + list(range(600, 9001, 97)) + [8999, 9000]


def test_ipsec_mb_runs_here():
    """This machine has AES-NI and CI installs libipsec-mb: the fast engine must be the one
    chosen, or the figures and the tests below measure the fallback twice."""
    assert aesgcm.IPSEC_MB, aesgcm.IPSEC_MB_UNUSABLE
    assert aesgcm.ENGINES == ("ipsec-mb", "openssl")
    assert AesGcm(bytes(16)).engine == "ipsec-mb"


@pytest.mark.parametrize("key_len", [16, 32], ids=["aes128", "aes256"])
def test_engines_agree_with_cryptography_on_every_length(key_len):
    key = os.urandom(key_len)
    ref = AESGCM(key)
    engines = [AesGcm(key, engine=e) for e in aesgcm.ENGINES]
    for n in LENGTHS:
        nonce, data = os.urandom(12), os.urandom(n)
        aad = os.urandom(8 if n % 2 else 12)              # SPI||seq, or with ESN's high half
        want = ref.encrypt(nonce, data, aad)
        for e in engines:
            assert e.encrypt(nonce, data, aad) == want, (e.engine, n)
            assert e.decrypt(nonce, want, aad) == data, (e.engine, n)


@pytest.mark.parametrize("engine", aesgcm.ENGINES)
def test_every_forgery_is_refused(engine):
    key = os.urandom(16)
    e = AesGcm(key, engine=engine)
    nonce, aad = os.urandom(12), b"\x00\x00\x10\x01\x00\x00\x00\x07"
    for n in (0, 1, 64, 1400):
        sealed = e.encrypt(nonce, os.urandom(n), aad)
        for k in range(len(sealed)):                     # each byte of ciphertext and tag
            bad = bytearray(sealed)
            bad[k] ^= 0x80
            with pytest.raises(ValueError):
                e.decrypt(nonce, bytes(bad), aad)
        with pytest.raises(ValueError):
            e.decrypt(nonce, sealed, aad[:-1] + b"\x08")  # another sequence number
        with pytest.raises(ValueError):
            e.decrypt(bytes(12), sealed, aad)


def test_unknown_engine_and_bad_keys():
    with pytest.raises(ValueError, match="unknown AES-GCM engine"):
        AesGcm(bytes(16), engine="rot13")
    for engine in aesgcm.ENGINES:
        with pytest.raises(ValueError, match="16 or 32"):
            AesGcm(bytes(24), engine=engine)


@pytest.mark.parametrize("udp", [False, True], ids=["esp", "udp4500"])
@pytest.mark.parametrize("enc_engine,dec_engine", [("ipsec-mb", "openssl"), ("openssl", "ipsec-mb"),
                                                   ("ipsec-mb", "ipsec-mb")])
def test_esp_nodes_across_engines_up_to_a_jumbo_frame(enc_engine, dec_engine, udp):
    """What one engine seals in esp-encrypt, the other opens in esp-decrypt, and scapy opens
    too: sizes across the padding cases and past a small buffer (big buffers, 9000 bytes)."""
    ks = fresh_key()
    encap = "udp" if udp else None
    out_sa = SecurityAssociation(SPI, ks, direction="out", encap=encap, engine=enc_engine)
    in_sa = SecurityAssociation(SPI, ks, direction="in", encap=encap, engine=dec_engine)
    assert out_sa.stats()["engine"] == enc_engine and in_sa.stats()["engine"] == dec_engine
    sizes = [28, 29, 30, 31, 64, 512, 1400, 1990, 2100, 4000, 8950]   # 1990: the most a small buffer holds
    pkts = [IP(bytes(IP(src=A, dst=B, id=k) / UDP(sport=1000 + k, dport=4789)
                     / Raw(bytes((k + j) & 0xff for j in range(n - 28)))))
            for k, n in enumerate(sizes)]
    g, _, _, _ = encrypt_graph(out_sa)
    sealed = run(g, [frame(p) for p in pkts])
    assert len(sealed) == len(pkts), g.errors()
    peer = scapy_peer(ks, udp=udp)
    for p, f in zip(pkts, sealed):
        assert bytes(peer.decrypt(IP(f[14:]))) == bytes(p)
    g, _, _, _ = decrypt_graph(in_sa)
    plain = run(g, sealed)
    assert [f[14:] for f in plain] == [bytes(p) for p in pkts]
    assert in_sa.stats()["drops"]["auth_failed"] == 0


def test_fallback_to_openssl_where_ipsec_mb_cannot_run():
    """FASTPATH_IPSEC_MB=off stands for a machine without the library: OpenSSL is chosen,
    asking for ipsec-mb says why not, and ESP still works end to end."""
    code = """
import os
from fastpath.crypto import aesgcm
from fastpath.crypto.sa import SecurityAssociation
assert aesgcm.IPSEC_MB is None and aesgcm.ENGINES == ("openssl",), aesgcm.ENGINES
assert "FASTPATH_IPSEC_MB=off" in aesgcm.IPSEC_MB_UNUSABLE
try:
    aesgcm.AesGcm(bytes(16), engine="ipsec-mb")
    raise SystemExit("ipsec-mb engine made without the library")
except ValueError as e:
    assert "cannot run here" in str(e), e
sa = SecurityAssociation(1, bytes(20), direction="out")
assert sa.stats()["engine"] == "openssl"
print("fallback ok")
"""
    env = dict(os.environ, FASTPATH_IPSEC_MB="off")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert r.returncode == 0 and "fallback ok" in r.stdout, r.stderr
