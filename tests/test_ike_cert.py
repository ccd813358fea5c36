"""IKEv2 with X.509 certificates (fastpath.ike.auth) and AES-CBC+HMAC IKE SAs: the
signatures and the SK payload against the RFC formulas, two fastpath gateways in memory,
and a real strongSwan in a QEMU guest. Certificates are made here with `cryptography`."""
import datetime
import hashlib
import hmac
import os
import struct
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from fastpath.ike import auth, crypto, message as m
from fastpath.ike.sa import ESTABLISHED, FRAGMENT_LIMIT
from l2util import Clock, frame
from test_ike import FP_IP, GUEST_IP, Sites, _replies, _strongswan_run
from test_vhost import sockdir  # noqa: F401 (a fixture)
from vpnutil import A_IP, B_IP, make_site, taken

NOW = datetime.datetime.now(datetime.timezone.utc)
DAY = datetime.timedelta(days=1)


# ---------------------------------------------------------------- a small PKI

def _key(kind):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(65537, 3072 if kind == "rsa3072" else 2048)


def _name(text):
    return x509.Name([x509.NameAttribute(oid, v) for oid, v in auth.parse_dn(text)])


class Ca:
    def __init__(self, dn="C=XX, O=fastpath tests, CN=test CA", kind="ec"):
        self.key = _key(kind)
        self.name = _name(dn)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(NOW - DAY).not_valid_after(NOW + 30 * DAY)
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, dn, san=(), kind="ec", before=NOW - DAY, after=NOW + 30 * DAY):
        """An end-entity certificate and its key; san: IPv4 strings, names, emails."""
        key = _key(kind)
        b = (x509.CertificateBuilder().subject_name(_name(dn)).issuer_name(self.name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(before).not_valid_after(after))
        if san:
            import ipaddress
            names = []
            for s in san:
                try:
                    names.append(x509.IPAddress(ipaddress.IPv4Address(s)))
                except ValueError:
                    names.append(x509.RFC822Name(s) if "@" in s else x509.DNSName(s))
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return b.sign(self.key, hashes.SHA256()), key


def pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def pem_key(key, traditional=False):
    fmt = serialization.PrivateFormat.TraditionalOpenSSL if traditional else serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def write_creds(d, name, ca, cert, key, traditional=False):
    """PEM files as OVS takes them -> the options:... of a tunnel port."""
    files = {"certificate": (f"{name}-cert.pem", pem_cert(cert)),
             "private_key": (f"{name}-key.pem", pem_key(key, traditional)),
             "ca_cert": (f"{name}-ca.pem", pem_cert(ca.cert))}
    opts = {"options:ike": "true"}
    for opt, (fname, text) in files.items():
        path = os.path.join(d, fname)
        with open(path, "w") as f:
            f.write(text)
        opts[f"options:{opt}"] = path
    return opts


@pytest.fixture(scope="module")
def pki():
    ca = Ca()
    return {"ca": ca, "rogue": Ca("C=XX, O=rogue, CN=rogue CA"),
            "a_ec": ca.issue("O=fastpath, CN=gw-a", [A_IP]),
            "b_ec": ca.issue("O=fastpath, CN=gw-b", ["gw-b.example"]),
            "a_rsa": ca.issue("O=fastpath, CN=gw-a", kind="rsa"),
            "b_rsa": ca.issue("O=fastpath, CN=gw-b", kind="rsa")}


# ---------------------------------------------------------------- the RFC formulas

def _der_oid(dotted):
    """X.690 8.19: the first two arcs in one byte, then base-128 with continuation bits."""
    arcs = [int(x) for x in dotted.split(".")]
    out = bytes([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7f]
        while arc > 0x7f:
            arc >>= 7
            chunk.insert(0, 0x80 | (arc & 0x7f))
        out += bytes(chunk)
    return bytes([0x06, len(out)]) + out


@pytest.mark.parametrize("kind,peer_hashes,method", [
    ("ec", (2, 3, 4), m.AUTH_DIGITAL_SIGNATURE), ("rsa", (4,), m.AUTH_DIGITAL_SIGNATURE),
    ("ec", (), m.AUTH_ECDSA_256), ("rsa", (), m.AUTH_RSA_SIG)])
def test_signatures_are_rfc_7427_when_both_ends_offer_hashes_else_rfc_7296(tmp_path, pki, kind, peer_hashes, method):
    ca = pki["ca"]
    cert, key = pki["a_" + kind]
    opts = write_creds(str(tmp_path), "a", ca, cert, key)
    creds = auth.Credentials(opts["options:certificate"], opts["options:private_key"], opts["options:ca_cert"])
    octets = os.urandom(200)
    got, data = creds.sign(octets, peer_hashes)
    assert got == method
    if method == m.AUTH_DIGITAL_SIGNATURE:
        # RFC 7427 3: length of the AlgorithmIdentifier, the AlgorithmIdentifier, the signature
        alg = data[1:1 + data[0]]
        # ecdsa-with-SHA256 (RFC 5758), sha512WithRSAEncryption (RFC 4055, NULL parameters)
        want_oid = {("ec", 2): "1.2.840.10045.4.3.2", ("rsa", 4): "1.2.840.113549.1.1.13"}[(kind, peer_hashes[0])]
        oid = _der_oid(want_oid)
        params = b"" if kind == "ec" else b"\x05\x00"
        assert alg == bytes([0x30, len(oid) + len(params)]) + oid + params
        sig = data[1 + data[0]:]
        h = {2: hashes.SHA256(), 4: hashes.SHA512()}[peer_hashes[0]]
        if kind == "ec":
            key.public_key().verify(sig, octets, ec.ECDSA(h))
        else:
            from cryptography.hazmat.primitives.asymmetric import padding
            key.public_key().verify(sig, octets, padding.PKCS1v15(), h)
    elif method == m.AUTH_ECDSA_256:
        assert len(data) == 64                   # RFC 4754: r || s, 32 bytes each
    auth.verify_signature(cert, got, data, octets)
    with pytest.raises(auth.AuthFailed):
        auth.verify_signature(cert, got, data, octets[:-1] + bytes([octets[-1] ^ 1]))
    other, _ = pki["b_" + kind]
    with pytest.raises(auth.AuthFailed):
        auth.verify_signature(other, got, data, octets)


def test_certreq_is_sha1_of_the_cas_public_key(tmp_path, pki):
    opts = write_creds(str(tmp_path), "a", pki["ca"], *pki["a_ec"])
    creds = auth.Credentials(opts["options:certificate"], opts["options:private_key"], opts["options:ca_cert"])
    spki = pki["ca"].key.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    assert creds.certreq() == b"\x04" + hashlib.sha1(spki).digest()
    assert creds.identity == (m.ID_IPV4_ADDR, bytes([192, 0, 2, 1]))          # SAN first
    opts = write_creds(str(tmp_path), "b", pki["ca"], *pki["b_rsa"], traditional=True)
    creds = auth.Credentials(opts["options:certificate"], opts["options:private_key"], opts["options:ca_cert"])
    assert creds.identity == (m.ID_DER_ASN1_DN, pki["b_rsa"][0].subject.public_bytes())   # no SAN: the DN
    assert auth.dn_from_der(creds.identity[1]) == "O=fastpath, CN=gw-b"


@pytest.mark.parametrize("integ,digest,icv_len", [(m.INTEG_HMAC_SHA2_256_128, hashlib.sha256, 16),
                                                  (m.INTEG_HMAC_SHA2_384_192, hashlib.sha384, 24),
                                                  (m.INTEG_HMAC_SHA2_512_256, hashlib.sha512, 32)])
def test_sk_payload_with_aes_cbc_is_rfc_7296_3_14_and_refuses_tampering(integ, digest, icv_len):
    sk_e, sk_a = os.urandom(32), os.urandom(icv_len * 2)
    payloads = [m.Payload(m.PL_NONCE, b"x" * 21)]
    data = crypto.seal(b"I" * 8, b"R" * 8, m.INFORMATIONAL, m.F_INITIATOR, 3, payloads, sk_e, sk_a, integ)
    msg = m.decode(data)
    body = msg.payloads[0].body
    # IKE header | SK header | IV | ciphertext | ICV over everything before it, truncated
    assert hmac.new(sk_a, data[:-icv_len], digest).digest()[:icv_len] == data[-icv_len:]
    dec = Cipher(algorithms.AES(sk_e), modes.CBC(body[:16])).decryptor()
    plain = dec.update(body[16:-icv_len]) + dec.finalize()
    assert len(plain) % 16 == 0 and plain[:4 + 21] == struct.pack("!BBH", 0, 0, 25) + b"x" * 21
    assert plain[-1] == len(plain) - 25 - 1                          # pad length
    assert [p.body for p in crypto.open_sk(data, msg, sk_e, sk_a, integ)] == [b"x" * 21]
    for i in (len(data) - 1, 40, len(data) - icv_len - 1):          # ICV, IV, ciphertext
        bad = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
        with pytest.raises(crypto.AuthFailed):
            crypto.open_sk(bad, m.decode(bad), sk_e, sk_a, integ)


def _meaning(p):
    """What a payload says: AUTH without the three bytes RFC 7296 3.8 reserves; a certificate
    as its signed part and signature (the BIT STRING's unused-bits count is in neither)."""
    if p.type == m.PL_AUTH:
        return p.body[:1] + p.body[4:]
    try:
        cert = x509.load_der_x509_certificate(p.body[1:])
        return p.body[:1], cert.tbs_certificate_bytes, cert.signature
    except ValueError:
        return p.body


def test_mangled_cert_and_auth_payloads_only_ever_fail_authentication(tmp_path, pki):
    """Random corruption of a valid CERT and AUTH: AuthFailed with a reason, never another
    exception (which would escape the IKE SA) and never success."""
    import random
    from fastpath.ike.sa import IkeConfig
    rng = random.Random(7)
    d = str(tmp_path)
    opts = write_creds(d, "a", pki["ca"], *pki["a_ec"])
    mine = auth.Credentials(opts["options:certificate"], opts["options:private_key"], opts["options:ca_cert"])
    opts = write_creds(d, "b", pki["ca"], *pki["b_rsa"])
    peer = auth.Credentials(opts["options:certificate"], opts["options:private_key"], opts["options:ca_cert"])
    config = IkeConfig(A_IP, B_IP, None, credentials=mine, remote_name="O=fastpath, CN=gw-b")
    octets = os.urandom(300)
    good = auth.our_payloads(SimpleNamespace(credentials=peer, psk=None), m.PRF_HMAC_SHA2_256, octets,
                             auth.OUR_HASHES)
    auth.check_peer(config, m.PRF_HMAC_SHA2_256, peer.identity, good, octets)      # the real one passes
    for i in range(2000):
        payloads = [m.Payload(p.type, bytearray(p.body)) for p in good]
        target = payloads[rng.randrange(2)].body
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(3)
            if op == 0 and target:
                target[rng.randrange(len(target))] ^= 1 << rng.randrange(8)
            elif op == 1:
                del target[rng.randrange(len(target) + 1):]
            else:
                target[rng.randrange(len(target) + 1):0] = os.urandom(rng.randrange(1, 8))
        payloads = [m.Payload(p.type, bytes(p.body)) for p in payloads]
        if [_meaning(p) for p in payloads] == [_meaning(p) for p in good]:
            continue
        try:
            auth.check_peer(config, m.PRF_HMAC_SHA2_256, peer.identity, payloads, octets)
        except auth.AuthFailed as e:
            assert str(e)
        else:
            pytest.fail(f"mangled payloads accepted: {[p.body.hex() for p in payloads]}")


@pytest.mark.parametrize("integ", [0, m.INTEG_HMAC_SHA2_256_128])
def test_fragments_are_rfc_7383_skf_and_each_verifies(integ):
    sk_e, sk_a = os.urandom(36 if not integ else 32), os.urandom(32)
    if not integ:
        sk_e = sk_e[:20]
    payloads = [m.Payload(m.PL_CERT, b"\x04" + os.urandom(1500)), m.Payload(m.PL_AUTH, os.urandom(400))]
    frags = crypto.seal_fragments(b"I" * 8, b"R" * 8, m.IKE_AUTH, m.F_INITIATOR, 1, payloads, 600, sk_e, sk_a, integ)
    assert len(frags) == 4 and all(len(f) <= 600 for f in frags)
    plain = b""
    for n, f in enumerate(frags, 1):
        msg = m.decode(f)
        assert msg.first_payload == m.PL_SKF and msg.payloads[0].body[:4] == struct.pack("!HH", n, 4)
        number, total, first, part = crypto.open_fragment(f, msg, sk_e, sk_a, integ)
        assert (number, total, first) == (n, 4, m.PL_CERT if n == 1 else 0)
        plain += part
        bad = f[:30] + bytes([f[30] ^ 1]) + f[31:]          # the SKF header is authenticated too
        with pytest.raises((crypto.AuthFailed, m.MalformedMessage)):
            crypto.open_fragment(bad, m.decode(bad), sk_e, sk_a, integ)
    assert m.parse_payloads(m.PL_CERT, plain) == payloads


def _ike_datagrams(wire):
    out = []
    for f in wire:
        p = Ether(f)
        if UDP in p and 500 in (p[UDP].dport, p[UDP].sport) or UDP in p and 4500 in (p[UDP].dport,):
            out.append((len(bytes(p[IP])), bytes(p[UDP].payload)))
    return out


def test_big_rsa_ike_auth_goes_in_fragments_and_survives_a_lost_one(tmp_path, pki):
    """RSA-3072 makes each IKE_AUTH message ~1.3 kB: both ends support RFC 7383, so it
    leaves as SKF fragments in datagrams of at most 1280 bytes. The first copy of one
    fragment is lost; the retransmission completes the message."""
    ca = pki["ca"]
    a = ca.issue("O=fastpath, CN=gw-a", [A_IP], kind="rsa3072")
    b = ca.issue("O=fastpath, CN=gw-b", [B_IP], kind="rsa3072")
    dropped = []

    def lose_one(f):
        p = Ether(f)
        if not dropped and UDP in p and bytes(p[UDP].payload)[16] == m.PL_SKF:
            dropped.append(f)
            return None
        return f
    s = _cert_sites(tmp_path, pki, a, b, B_IP, A_IP)
    s.tap = lose_one
    s.step(100)
    assert dropped and s.up(s.a) and s.up(s.b)
    assert _carries_traffic(s) == (10, 10)
    ike = _ike_datagrams(s.wire)
    assert max(n for n, _ in ike) <= 1280
    skf = [d for _, d in ike if d[16] == m.PL_SKF]
    assert len(skf) >= 4                                      # two messages of two or more fragments
    whole = sum(len(d) for d in skf if m.decode(d).message_id == 1 and m.decode(d).is_response)
    assert whole > FRAGMENT_LIMIT


# ---------------------------------------------------------------- two fastpath gateways

def _cert_sites(tmp_path, pki, a, b, remote_name_a, remote_name_b, ca_b=None, traditional=False):
    d = str(tmp_path)
    oa = {**write_creds(d, "a", pki["ca"], *a), "options:remote_name": remote_name_a}
    ob = {**write_creds(d, "b", ca_b or pki["ca"], *b, traditional=traditional),
          "options:remote_name": remote_name_b}
    return Sites(oa, ob, base={})


def _carries_traffic(s):
    got_a = got_b = 0
    for i in range(10):
        s.a.port("h10").io[0].add([bytes(frame(src="02:00:00:00:0a:01", payload=i.to_bytes(4, "big") + bytes(42)))])
        s.b.port("h10").io[0].add([bytes(frame(src="02:00:00:00:0b:01", payload=i.to_bytes(4, "big") + bytes(42)))])
        s.step()
        got_b += len(taken(s.b)["h10"])
        got_a += len(taken(s.a)["h10"])
    return got_a, got_b


def test_two_gateways_with_ecdsa_certificates(tmp_path, pki):
    """A's ID is its SAN IP address, B's its SAN DNS name."""
    s = _cert_sites(tmp_path, pki, pki["a_ec"], pki["b_ec"], "gw-b.example", A_IP)
    s.step(40)
    assert s.up(s.a) and s.up(s.b)
    assert _carries_traffic(s) == (10, 10)
    ra, rb = s.a.vpn.show_ike()[0], s.b.vpn.show_ike()[0]
    assert (ra["local_id"], ra["remote_id"]) == (A_IP, "gw-b.example")
    assert (rb["local_id"], rb["remote_id"]) == ("gw-b.example", A_IP)
    assert ra["auth"] == rb["auth"] == "pubkey"
    assert s.ike(s.a).counters["authentication_failed"] == s.ike(s.b).counters["authentication_failed"] == 0
    # each side saw the other's RFC 7427 hashes in IKE_SA_INIT, so method 14 was used
    assert all(sa.peer_hashes == auth.OUR_HASHES for sw in (s.a, s.b) for sa in s.ike(sw).sas)


def test_two_gateways_with_rsa_certificates_and_dn_ids(tmp_path, pki):
    """No SAN: the IDs are the subject DNs; B's key is in the traditional PEM form."""
    s = _cert_sites(tmp_path, pki, pki["a_rsa"], pki["b_rsa"], "O=fastpath, CN=gw-b", "CN=gw-a, O=fastpath",
                    traditional=True)
    s.step(40)
    assert s.up(s.a) and s.up(s.b)
    assert _carries_traffic(s) == (10, 10)
    assert s.a.vpn.show_ike()[0]["remote_id"] == "O=fastpath, CN=gw-b"
    # RSA-2048 IKE_AUTH messages fit a 1500-byte MTU: no IKE fragmentation needed
    ike = [len(bytes(Ether(f)[IP])) for f in s.wire if UDP in Ether(f) and Ether(f)[UDP].dport in (500, 4500)]
    assert 1000 < max(ike) <= 1500, max(ike)


@pytest.mark.parametrize("case", ["untrusted_ca", "wrong_remote_name", "expired", "name_not_in_cert",
                                  "id_not_in_cert", "stolen_certificate", "ca_name_forged"])
def test_bad_certificates_never_bring_anything_up(tmp_path, pki, case):
    a, b, name_a, ca_b = pki["a_ec"], pki["b_ec"], "gw-b.example", None
    if case == "untrusted_ca":
        b = pki["rogue"].issue("O=fastpath, CN=gw-b", ["gw-b.example"])
        ca_b = pki["ca"]                                 # B still trusts A's CA
    elif case == "wrong_remote_name":
        name_a = "gw-c.example"
    elif case == "expired":
        b = pki["ca"].issue("O=fastpath, CN=gw-b", ["gw-b.example"], before=NOW - 10 * DAY, after=NOW - DAY)
    elif case == "name_not_in_cert":
        name_a = "O=fastpath, CN=gw-b"                   # B shows its SAN name, not this DN
    elif case == "ca_name_forged":                      # the trusted CA's DN, another key
        b = Ca("C=XX, O=fastpath tests, CN=test CA").issue("O=fastpath, CN=gw-b", ["gw-b.example"])
        ca_b = pki["ca"]
    elif case == "id_not_in_cert":
        name_a = "gw-c.example"                          # what B claims below, not in its cert
    s = _cert_sites(tmp_path, pki, a, b, name_a, A_IP, ca_b=ca_b)
    hostile = s.ike(s.b).config
    if case == "id_not_in_cert":
        hostile.local_id = (m.ID_FQDN, b"gw-c.example")
    elif case == "stolen_certificate":
        hostile.credentials.key = ec.generate_private_key(ec.SECP256R1())   # B's cert, another key
    s.step(200)
    for sw in (s.a, s.b):
        t = next(iter(sw.vpn.tunnels.values()))
        assert t.out is None and not t.inbound and not s.up(sw)
        assert not any(r["state"] == ESTABLISHED for r in sw.vpn.show_ike())
    # A rejects B's certificate; B hears AUTHENTICATION_FAILED
    assert s.ike(s.a).counters["authentication_failed"] > 0
    errors = {(e[1], e[2]): e[0] for e in s.a.errors()}
    assert errors.get(("ike-input", "authentication_failed"), 0) > 0


def test_private_keys_never_in_show_or_saved_config(tmp_path, pki):
    from fastpath.control import Control
    s = _cert_sites(tmp_path, pki, pki["a_ec"], pki["b_ec"], "gw-b.example", A_IP)
    s.step(40)
    c = Control(s.a)
    key_pem = pem_key(pki["a_ec"][1])
    secret = key_pem.splitlines()[1]                    # a line of the key's base64
    texts = [c.execute(["show"]), c.execute(["show", "ike"]), repr(c.execute(["show", "ike"], fmt="json")),
             c.config_text(), c.config_text(secrets=True)]
    assert all(secret not in t and "PRIVATE KEY" not in t for t in texts)
    assert "ESTABLISHED" in texts[1] and "gw-b.example" in texts[1]
    assert str(tmp_path / "a-key.pem") in texts[3]      # the path is configuration, not a secret


def test_fastpathctl_takes_the_certificate_options(tmp_path, pki):
    """add-port with OVS's option names, as a user types them; set interface changes one."""
    from fastpath.control import CommandError, Control
    sw = make_site(A_IP, B_IP, Clock(), {"options:psk": "unused", "options:ike": "true"})
    c = Control(sw)
    opts = {**write_creds(str(tmp_path), "a", pki["ca"], *pki["a_ec"]), "options:remote_name": "gw-b.example"}
    c.execute(["del-port", "vpn0"])
    c.execute(["add-port", "br0", "vpn0", "type=vxlan", f"options:remote_ip={B_IP}", f"options:local_ip={A_IP}",
               "options:key=5000", *(f"{k}={v}" for k, v in opts.items())])
    config = next(iter(sw.vpn.tunnels.values())).ike.config
    assert config.remote_name == "gw-b.example" and config.local_id == (m.ID_IPV4_ADDR, bytes([192, 0, 2, 1]))
    with pytest.raises(CommandError):
        c.execute(["add-port", "br0", "vpn1", "type=vxlan", "options:remote_ip=192.0.2.9",
                   f"options:local_ip={A_IP}", "options:key=5001", "options:ike=true", "options:certificate="])


def test_certificate_option_checks(tmp_path, pki):
    from fastpath.switch import ConfigError
    d = str(tmp_path)
    opts = {**write_creds(d, "a", pki["ca"], *pki["a_ec"]), "options:remote_name": B_IP}
    make_site(A_IP, B_IP, Clock(), opts)                         # complete: fine
    make_site(A_IP, B_IP, Clock(), {**opts, "options:local_id": "O=fastpath, CN=gw-a"})  # the DN, also in it
    bad = [{**opts, "options:psk": "both"},                      # psk OR certificate
           {k: v for k, v in opts.items() if k != "options:remote_name"},
           {k: v for k, v in opts.items() if k != "options:ca_cert"},
           {**opts, "options:certificate": d + "/missing.pem"},
           {**opts, "options:private_key": write_creds(d, "x", pki["ca"], *pki["b_ec"])["options:private_key"]},
           {**opts, "options:ca_cert": opts["options:private_key"]},
           {**opts, "options:local_id": "gw-a.example"}]           # an ID not in the certificate
    for o in bad:
        with pytest.raises(ConfigError):
            make_site(A_IP, B_IP, Clock(), o)


@pytest.mark.parametrize("bits,integ,name", [(128, m.INTEG_HMAC_SHA2_256_128, "aes128-sha256"),
                                             (256, m.INTEG_HMAC_SHA2_384_192, "aes256-sha384"),
                                             (256, m.INTEG_HMAC_SHA2_512_256, "aes256-sha512")])
def test_two_gateways_protect_the_ike_sa_with_aes_cbc(bits, integ, name):
    s = Sites()
    for sw in (s.a, s.b):
        c = s.ike(sw).config
        c.encrs, c.encr_bits, c.integs = (m.ENCR_AES_CBC,), (bits,), (integ,)
    s.step(40)
    assert s.up(s.a) and s.up(s.b)
    assert s.a.vpn.show_ike()[0]["algorithms"].startswith(name + "-prfsha256")
    assert _carries_traffic(s) == (10, 10)
    # the IKE SA keeps working: a CHILD_SA rekey goes through CBC-protected messages
    assert s.up(s.a)[0].rekey_child(s.clock.t)
    s.step(20)
    assert s.ike(s.a).counters["child_rekeys"] >= 1 and s.ike(s.a).counters["integrity_failed"] == 0
    assert _carries_traffic(s) == (10, 10)
    # and an IKE SA rekey offers, and keeps, the same CBC algorithms
    assert s.up(s.a)[0].rekey_ike(s.clock.t)
    s.step(20)
    assert s.ike(s.a).counters["ike_rekeys"] >= 1
    up = [r["algorithms"] for r in s.a.vpn.show_ike() if r["state"] == ESTABLISHED]
    assert len(up) == 1 and up[0].startswith(name + "-prfsha256")
    assert _carries_traffic(s) == (10, 10)


# ---------------------------------------------------------------- a real strongSwan in a guest

def swan_cert_auth(ca, cert, key, fp_id, traditional=False):
    """swanctl.conf's authentication with the guest's certificate (its ID: its SAN address),
    trusting `ca`, and the PEM files swanctl loads from /etc/swanctl."""
    return {"local": f"auth = pubkey\n      certs = guest.pem\n      id = {GUEST_IP}",
            "remote": f'auth = pubkey\n      id = "{fp_id}"', "secrets": "",
            "files": {"/etc/swanctl/x509ca/ca.pem": pem_cert(ca.cert),
                      "/etc/swanctl/x509/guest.pem": pem_cert(cert),
                      "/etc/swanctl/private/guest.pem": pem_key(key, traditional)}}


def _fp_cert_options(d, ca, cert, key, traditional=False):
    return {k: v for k, v in {**write_creds(d, "fp", ca, cert, key, traditional),
                              "options:remote_name": GUEST_IP}.items() if k != "options:ike"}


@pytest.mark.root
def test_strongswan_ecdsa_certificates_fastpath_initiator(sockdir, pki):
    """fastpath's ID is its certificate's SAN address; strongSwan answers CERTREQ with its
    certificate and signs with RFC 7427 ECDSA_WITH_SHA256_DER."""
    ca = pki["ca"]
    fp = ca.issue("O=fastpath, CN=fp-gw", [FP_IP])
    guest = ca.issue("O=strongSwan, CN=guest", [GUEST_IP])
    counters, ike, console = _strongswan_run(
        sockdir, "initiator", "aes128gcm16-prfsha256-ecp256", "aes128gcm16-esn", None, 128, True,
        fp_auth=_fp_cert_options(sockdir, ca, *fp), swan_auth=swan_cert_auth(ca, *guest, FP_IP))
    assert ike[0]["local_id"] == FP_IP and ike[0]["remote_id"] == GUEST_IP
    assert "ECDSA_WITH_SHA256_DER successful" in console      # charon verified our signature


@pytest.mark.root
def test_strongswan_rsa_certificates_fastpath_responder(sockdir, pki):
    """RSA-3072 on both sides, fastpath's ID its subject DN (no SAN), the keys in the
    traditional PEM form. Each IKE_AUTH (~1.3 kB) goes in RFC 7383 fragments, both ways."""
    ca = pki["ca"]
    fp = ca.issue("O=fastpath, CN=fp-gw", kind="rsa3072")
    guest = ca.issue("O=strongSwan, CN=guest", [GUEST_IP], kind="rsa3072")
    counters, ike, console = _strongswan_run(
        sockdir, "responder", "aes256gcm16-prfsha384-ecp384", "aes256gcm16", None, 256, False,
        fp_auth=_fp_cert_options(sockdir, ca, *fp, traditional=True),
        swan_auth=swan_cert_auth(ca, *guest, "O=fastpath, CN=fp-gw", traditional=True))
    assert ike[0]["local_id"] == "O=fastpath, CN=fp-gw" and ike[0]["remote_id"] == GUEST_IP
    assert "RSA_EMSA_PKCS1_SHA2_256 successful" in console
    assert "received fragment #2 of 2, reassembled fragmented IKE message" in console
    assert "splitting IKE message" in console and "EF(2/2)" in console


@pytest.mark.root
def test_strongswan_untrusted_certificate_brings_nothing_up(sockdir, pki):
    """The guest's certificate comes from a CA fastpath does not trust."""
    ca = pki["ca"]
    fp = ca.issue("O=fastpath, CN=fp-gw", [FP_IP])
    guest = pki["rogue"].issue("O=strongSwan, CN=guest", [GUEST_IP])
    counters, ike, console = _strongswan_run(
        sockdir, "responder", "aes128gcm16-prfsha256-ecp256", "aes128gcm16", None, 128, False, match=False,
        fp_auth=_fp_cert_options(sockdir, ca, *fp), swan_auth=swan_cert_auth(ca, *guest, FP_IP))
    assert "AUTHENTICATION_FAILED" in console


@pytest.mark.root
def test_strongswan_ike_sa_with_aes_cbc(sockdir):
    """strongSwan proposes only AES-256-CBC with HMAC-SHA2-256-128 for the IKE SA."""
    counters, ike, console = _strongswan_run(sockdir, "responder", "aes256-sha256-modp2048", "aes128gcm16",
                                             "a shared secret for IKE", 128, False)
    assert ike[0]["algorithms"] == "aes256-sha256-prfsha256-modp2048"
    assert "IKE:AES_CBC_256/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/MODP_2048" in console


def test_hostile_fragments_are_counted_and_change_nothing(tmp_path, pki):
    """An established certificate SA; SKF fragments of the peer's next request: forged ones
    and nonsense numbering are counted, a partial message waits, and the last fragment
    completes it (an INFORMATIONAL, answered)."""
    s = _cert_sites(tmp_path, pki, pki["a_ec"], pki["b_ec"], "gw-b.example", A_IP)
    s.step(40)
    sa_a, sa_b = s.up(s.a)[0], s.up(s.b)[0]
    ike_b = s.ike(s.b)
    flags = m.F_INITIATOR if sa_a.initiator else 0
    mid = sa_b.peer_next_id
    frags = crypto.seal_fragments(sa_a.spi_i, sa_a.spi_r, m.INFORMATIONAL, flags, mid,
                                  [m.Payload(m.PL_VENDOR, os.urandom(500))], 200, *sa_a.keys.sending(sa_a.initiator))
    assert len(frags) >= 3
    forged = crypto.seal_fragments(sa_a.spi_i, sa_a.spi_r, m.INFORMATIONAL, flags, mid,
                                   [m.Payload(m.PL_VENDOR, os.urandom(500))], 200, os.urandom(20))
    nonsense = frags[0][:32] + struct.pack("!HH", 3, 2) + frags[0][36:]
    before = dict(ike_b.counters)
    _replies(s.b)
    for data in [forged[0], nonsense] + frags[:-1]:
        ike_b.receive(data, 500, 500, s.clock.t)
    assert ike_b.counters["integrity_failed"] == before["integrity_failed"] + 1
    assert ike_b.counters["invalid_syntax"] == before["invalid_syntax"] + 1
    assert sa_b.peer_next_id == mid and sa_b.state == ESTABLISHED and not _replies(s.b)
    ike_b.receive(frags[-1], 500, 500, s.clock.t)
    assert sa_b.peer_next_id == mid + 1 and sa_b.state == ESTABLISHED
    reply = _replies(s.b)
    assert len(reply) == 1 and reply[0].exchange == m.INFORMATIONAL and reply[0].is_response
    assert s.up(s.a) and s.up(s.b)

