"""IKE_AUTH's proof of identity (RFC 7296 2.15, 3.5-3.8): a pre-shared key, or an X.509
certificate and its private key (RSA or ECDSA) checked against a CA.

With certificates fastpath's ID comes from its certificate (the first IP address, DNS
name or email address of its subjectAltName, else its subject DN); it sends CERTREQ
(SHA-1 of each CA's SubjectPublicKeyInfo) and its certificate, and signs with RFC 7427's
digital signature (method 14) when both ends announced SIGNATURE_HASH_ALGORITHMS, else
with RSA (method 1, SHA-1) or ECDSA (methods 9/10/11, RFC 4754). The peer must show a
certificate that chains to ca_cert, is within its dates, contains the ID the peer claims,
and that ID must be options:remote_name; any failure is an AuthFailed with one reason.
"""
import datetime
import hashlib
import hmac
import ipaddress
import struct

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.x509.oid import NameOID

from fastpath.ike import crypto, message as m

# RFC 7427 3: the hash algorithms of N(SIGNATURE_HASH_ALGORITHMS)
HASH_SHA256, HASH_SHA384, HASH_SHA512 = 2, 3, 4
HASHES = {HASH_SHA256: hashes.SHA256, HASH_SHA384: hashes.SHA384, HASH_SHA512: hashes.SHA512}
OUR_HASHES = (HASH_SHA256, HASH_SHA384, HASH_SHA512)          # in order of preference

# RFC 7427 appendix A: the AlgorithmIdentifier DER that prefixes a method 14 signature
_SIG_ALGS = {
    ("ec", HASH_SHA256): bytes.fromhex("300a06082a8648ce3d040302"),
    ("ec", HASH_SHA384): bytes.fromhex("300a06082a8648ce3d040303"),
    ("ec", HASH_SHA512): bytes.fromhex("300a06082a8648ce3d040304"),
    ("rsa", HASH_SHA256): bytes.fromhex("300d06092a864886f70d01010b0500"),
    ("rsa", HASH_SHA384): bytes.fromhex("300d06092a864886f70d01010c0500"),
    ("rsa", HASH_SHA512): bytes.fromhex("300d06092a864886f70d01010d0500"),
}
_SIG_ALG_OF = {der: key for key, der in _SIG_ALGS.items()}
# the same without the NULL parameters, which some encoders leave out for RSA
_SIG_ALG_OF.update({bytes([0x30, 0x0b]) + der[2:-2]: key for key, der in _SIG_ALGS.items() if key[0] == "rsa"})

# RFC 4754: ECDSA methods 9/10/11 fix the curve and the hash
_ECDSA_METHODS = {m.AUTH_ECDSA_256: ("secp256r1", hashes.SHA256, 32),
                  m.AUTH_ECDSA_384: ("secp384r1", hashes.SHA384, 48),
                  m.AUTH_ECDSA_521: ("secp521r1", hashes.SHA512, 66)}
MAX_CHAIN = 5                          # intermediates followed before giving up


class AuthFailed(Exception):
    """The peer's identity does not verify; the text says why, in one line."""


class CredentialError(ValueError):
    """A certificate, key or CA file that cannot be used."""


# ---- identities ----

# the DN attribute names strongSwan and OpenSSL print
_DN_NAMES = {"C": NameOID.COUNTRY_NAME, "ST": NameOID.STATE_OR_PROVINCE_NAME, "L": NameOID.LOCALITY_NAME,
             "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
             "CN": NameOID.COMMON_NAME, "E": NameOID.EMAIL_ADDRESS, "EMAILADDRESS": NameOID.EMAIL_ADDRESS,
             "DC": NameOID.DOMAIN_COMPONENT, "SN": NameOID.SURNAME, "SERIALNUMBER": NameOID.SERIAL_NUMBER}
_DN_SHORT = {oid: name for name, oid in _DN_NAMES.items() if name not in ("EMAILADDRESS",)}


def parse_dn(text):
    """'C=CH, O=Example, CN=gw' (strongSwan's order: the first RDN first) -> [(OID, value)];
    ValueError if it is not a DN."""
    out = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        oid = _DN_NAMES.get(key.strip().upper())
        if not sep or oid is None or not value.strip():
            raise ValueError(f"{text!r} is not a DN (C=.., O=.., CN=.. separated by commas)")
        out.append((oid, value.strip()))
    return out


def dn_text(name):
    """An x509.Name as strongSwan prints it: 'C=CH, O=Example, CN=gw'."""
    return ", ".join(f"{_DN_SHORT.get(a.oid, a.oid.dotted_string)}={a.value}" for a in name)


def dn_from_der(data):
    """The text of an ID_DER_ASN1_DN, or its hex if it does not parse."""
    try:
        return dn_text(x509.Name.from_bytes(data))
    except ValueError:
        return f"DN {data.hex()}"


def _dn_attrs(name):
    return [(a.oid, str(a.value)) for a in name]


def cert_identity(cert):
    """Our ID from our certificate: the SAN's first IPv4 address, DNS name or email, else
    the subject DN. -> (ID type, data)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = []
    for gn in san:
        if isinstance(gn, x509.IPAddress) and gn.value.version == 4:
            return m.ID_IPV4_ADDR, gn.value.packed
        if isinstance(gn, x509.DNSName):
            return m.ID_FQDN, gn.value.encode()
        if isinstance(gn, x509.RFC822Name):
            return m.ID_RFC822_ADDR, gn.value.encode()
    return m.ID_DER_ASN1_DN, cert.subject.public_bytes()


def cert_contains(cert, ident):
    """Whether the certificate vouches for the ID (RFC 4945 3.1: SAN, or the subject DN)."""
    id_type, data = ident
    if id_type == m.ID_DER_ASN1_DN:
        return data == cert.subject.public_bytes()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    if id_type == m.ID_IPV4_ADDR and len(data) == 4:
        return ipaddress.IPv4Address(data) in san.get_values_for_type(x509.IPAddress)
    text = data.decode(errors="replace").lower()
    if id_type == m.ID_FQDN:
        return text in [v.lower() for v in san.get_values_for_type(x509.DNSName)]
    if id_type == m.ID_RFC822_ADDR:
        return text in [v.lower() for v in san.get_values_for_type(x509.RFC822Name)]
    return False


def name_matches(remote_name, ident, cert):
    """Whether the ID the peer showed (already found in its cert) is options:remote_name."""
    id_type, data = ident
    if id_type == m.ID_DER_ASN1_DN:
        try:
            want = parse_dn(remote_name)
        except ValueError:
            return False
        have = [(oid, v.lower()) for oid, v in _dn_attrs(cert.subject)]
        want = [(oid, v.lower()) for oid, v in want]
        return have == want or have == want[::-1]      # either order of writing a DN
    if id_type == m.ID_IPV4_ADDR and len(data) == 4:
        try:
            return ipaddress.IPv4Address(remote_name) == ipaddress.IPv4Address(data)
        except ValueError:
            return False
    if id_type in (m.ID_FQDN, m.ID_RFC822_ADDR):
        return remote_name.lower() == data.decode(errors="replace").lower()
    return False


# ---- our credentials ----

def _read(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CredentialError(f"options:{what}: cannot read {path}: {e.strerror}") from None


def load_certs(pem, what):
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        certs = []
    if not certs:
        raise CredentialError(f"options:{what}: no PEM certificate in the file")
    return certs


class Credentials:
    """options:certificate, private_key and ca_cert, loaded and checked to fit together."""

    def __init__(self, certificate, private_key, ca_cert):
        self.paths = (certificate, private_key, ca_cert)
        self.cert = load_certs(_read(certificate, "certificate"), "certificate")[0]
        try:
            # PKCS#8 or the traditional (PKCS#1 / SEC 1) PEM form
            self.key = serialization.load_pem_private_key(_read(private_key, "private_key"), None)
        except (ValueError, TypeError) as e:
            raise CredentialError(f"options:private_key: not an unencrypted PEM private key ({e})") from None
        if not isinstance(self.key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise CredentialError("options:private_key: only RSA and ECDSA keys are supported")
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if self.key.public_key().public_bytes(*spki) != self.cert.public_key().public_bytes(*spki):
            raise CredentialError("options:private_key is not the key of options:certificate")
        self.cas = load_certs(_read(ca_cert, "ca_cert"), "ca_cert")
        self.identity = cert_identity(self.cert)

    def own_identity(self, text):
        """options:local_id with a certificate: another ID it contains (say its DN rather
        than its SAN) -> (ID type, data); CredentialError if the certificate lacks it."""
        if "=" in text:
            ident = m.ID_DER_ASN1_DN, self.cert.subject.public_bytes()
        else:
            from fastpath.ike.sa import parse_identity
            ident = parse_identity(text)
        if not (cert_contains(self.cert, ident) and name_matches(text, ident, self.cert)):
            raise CredentialError(f"options:local_id {text!r} is not in options:certificate")
        return ident

    def certreq(self):
        """RFC 7296 3.7: the SHA-1 of each trusted CA's SubjectPublicKeyInfo."""
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        return bytes([m.CERT_X509_SIGNATURE]) + b"".join(
            hashlib.sha1(ca.public_key().public_bytes(*spki)).digest() for ca in self.cas)

    def cert_payload(self):
        return bytes([m.CERT_X509_SIGNATURE]) + self.cert.public_bytes(serialization.Encoding.DER)

    def sign(self, octets, peer_hashes):
        """-> (AUTH method, AUTH data). peer_hashes: the peer's SIGNATURE_HASH_ALGORITHMS
        (empty if it sent none, then the method of RFC 7296 itself)."""
        kind = "ec" if isinstance(self.key, ec.EllipticCurvePrivateKey) else "rsa"
        hash_id = next((h for h in OUR_HASHES if h in peer_hashes), None)
        if hash_id is not None:
            alg = _SIG_ALGS[(kind, hash_id)]
            sig = (self.key.sign(octets, ec.ECDSA(HASHES[hash_id]())) if kind == "ec"
                   else self.key.sign(octets, padding.PKCS1v15(), HASHES[hash_id]()))
            return m.AUTH_DIGITAL_SIGNATURE, bytes([len(alg)]) + alg + sig
        if kind == "rsa":
            return m.AUTH_RSA_SIG, self.key.sign(octets, padding.PKCS1v15(), hashes.SHA1())
        method = next((k for k, v in _ECDSA_METHODS.items() if v[0] == self.key.curve.name), None)
        if method is None:
            raise AuthFailed(f"no RFC 4754 method for curve {self.key.curve.name} and the peer "
                             "did not offer RFC 7427 signatures")
        _, hash_cls, size = _ECDSA_METHODS[method]
        r, s = utils.decode_dss_signature(self.key.sign(octets, ec.ECDSA(hash_cls())))
        return method, r.to_bytes(size, "big") + s.to_bytes(size, "big")


# ---- the peer's proof ----

def hash_algorithms(msg):
    """The hash algorithms of msg's N(SIGNATURE_HASH_ALGORITHMS) (RFC 7427 4), or ()."""
    n = next((n for n in msg.notifies() if n.type == m.N_SIGNATURE_HASH_ALGORITHMS), None)
    if n is None or len(n.data) % 2:
        return ()
    return struct.unpack(f"!{len(n.data) // 2}H", n.data)


def verify_chain(cert, others, cas, now=None):
    """cert must chain through `others` (the peer's further CERT payloads) to one of `cas`,
    each link signed by the next and within its dates. AuthFailed otherwise."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    link = cert
    for _ in range(MAX_CHAIN):
        if not link.not_valid_before_utc <= now <= link.not_valid_after_utc:
            raise AuthFailed(f"certificate '{dn_text(link.subject)}' is outside its validity "
                             f"({link.not_valid_before_utc:%Y-%m-%d} to {link.not_valid_after_utc:%Y-%m-%d})")
        for ca in cas:
            if ca.subject == link.issuer and _signed_by(link, ca):
                if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
                    raise AuthFailed(f"CA '{dn_text(ca.subject)}' is outside its validity")
                return
        issuer = next((c for c in others if c.subject == link.issuer and _is_ca(c) and _signed_by(link, c)), None)
        if issuer is None:
            raise AuthFailed(f"certificate '{dn_text(link.subject)}' is not signed by a trusted CA "
                             f"(issuer '{dn_text(link.issuer)}')")
        link = issuer
    raise AuthFailed(f"certificate chain longer than {MAX_CHAIN}")


def _is_ca(cert):
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def _signed_by(cert, issuer):
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def verify_signature(cert, method, data, octets):
    """The peer's AUTH payload is its certificate key's signature of octets. AuthFailed otherwise."""
    key = cert.public_key()
    try:
        if method == m.AUTH_DIGITAL_SIGNATURE:
            if not data or len(data) < 1 + data[0]:
                raise AuthFailed("RFC 7427 AUTH payload truncated")
            alg, sig = bytes(data[1:1 + data[0]]), data[1 + data[0]:]
            kind, hash_id = _SIG_ALG_OF.get(alg, (None, None))
            if kind == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(sig, octets, ec.ECDSA(HASHES[hash_id]()))
            elif kind == "rsa" and isinstance(key, rsa.RSAPublicKey):
                key.verify(sig, octets, padding.PKCS1v15(), HASHES[hash_id]())
            else:
                raise AuthFailed(f"RFC 7427 signature algorithm {alg.hex()} unsupported or not the "
                                 "certificate's key type")
        elif method == m.AUTH_RSA_SIG and isinstance(key, rsa.RSAPublicKey):
            key.verify(data, octets, padding.PKCS1v15(), hashes.SHA1())
        elif method in _ECDSA_METHODS and isinstance(key, ec.EllipticCurvePublicKey) \
                and key.curve.name == _ECDSA_METHODS[method][0]:
            _, hash_cls, size = _ECDSA_METHODS[method]
            if len(data) != 2 * size:
                raise AuthFailed(f"ECDSA signature of {len(data)} bytes, not {2 * size}")
            r, s = int.from_bytes(data[:size], "big"), int.from_bytes(data[size:], "big")
            key.verify(utils.encode_dss_signature(r, s), octets, ec.ECDSA(hash_cls()))
        else:
            raise AuthFailed(f"AUTH method {method} does not fit the certificate's key")
    except InvalidSignature:
        raise AuthFailed("the AUTH signature does not verify with the peer's certificate") from None


# ---- both kinds, as the IKE SA uses them ----

def our_payloads(config, prf_id, octets, peer_hashes):
    """Our CERT (with certificates) and AUTH payloads for the signed octets."""
    if config.credentials is None:
        return [m.Payload(m.PL_AUTH, m.encode_auth(m.AUTH_SHARED_KEY_MIC,
                                                   crypto.psk_auth(prf_id, config.psk, octets)))]
    method, data = config.credentials.sign(octets, peer_hashes)
    return [m.Payload(m.PL_CERT, config.credentials.cert_payload()),
            m.Payload(m.PL_AUTH, m.encode_auth(method, data))]


def check_peer(config, prf_id, ident, payloads, octets):
    """The peer's ID, CERT and AUTH payloads prove it is who config expects; AuthFailed if not,
    whatever the peer sent (odd keys, curves or encodings included)."""
    try:
        _check_peer(config, prf_id, ident, payloads, octets)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise AuthFailed(f"unusable certificate or signature ({e})") from None


def _check_peer(config, prf_id, ident, payloads, octets):
    auth = next((p for p in payloads if p.type == m.PL_AUTH), None)
    if auth is None:
        raise AuthFailed("no AUTH payload")
    method, value = m.decode_auth(auth.body)
    creds = config.credentials
    if creds is None:
        if method != m.AUTH_SHARED_KEY_MIC:
            raise AuthFailed(f"AUTH method {method}, we expect a pre-shared key")
        if tuple(ident) != tuple(config.remote_id):
            raise AuthFailed("the peer's ID is not remote_id")
        if not hmac.compare_digest(crypto.psk_auth(prf_id, config.psk, octets), value):
            raise AuthFailed("AUTH does not verify (PSK mismatch?)")
        return
    if method == m.AUTH_SHARED_KEY_MIC:
        raise AuthFailed("the peer authenticates with a PSK, we expect a certificate")
    certs = []
    for p in payloads:
        if p.type == m.PL_CERT and p.body[:1] == bytes([m.CERT_X509_SIGNATURE]):
            try:
                certs.append(x509.load_der_x509_certificate(p.body[1:]))
            except ValueError:
                raise AuthFailed("a CERT payload that is not an X.509 certificate") from None
    if not certs:
        raise AuthFailed("no X.509 certificate from the peer (CERT payload)")
    cert = certs[0]
    verify_chain(cert, certs[1:], creds.cas)
    if not cert_contains(cert, ident):
        raise AuthFailed(f"the peer's ID is not in its certificate '{dn_text(cert.subject)}'")
    if not name_matches(config.remote_name, ident, cert):
        raise AuthFailed(f"the peer's certificate '{dn_text(cert.subject)}' is not remote_name "
                         f"{config.remote_name!r}")
    verify_signature(cert, method, value, octets)
