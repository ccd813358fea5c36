"""The IKE SA state machine (RFC 7296): IKE_SA_INIT and IKE_AUTH with a pre-shared key or
certificates (fastpath.ike.auth), as initiator or responder, the CHILD_SA those create,
CREATE_CHILD_SA rekeys of the CHILD_SA (2.8, 2.8.1, optional PFS) and of the IKE SA
(2.18), INFORMATIONAL exchanges (Delete, notifies, liveness checks when the peer is
silent), message IDs with a window of 1 and retransmission with backoff; with
certificates, RFC 7383 fragments for big messages.

No I/O here: an IkeSa talks to its host (fastpath.ike.tunnel.IkeTunnel, or a test) via
  host.send(sa, data)                  a message to the peer, from sa.local_port to sa.remote_port
  host.child_up(sa, child)             a negotiated ChildSa to install
  host.child_rekeyed(sa, old, new, switch, now)  new replaces old (switch outbound now?)
  host.child_down(sa, child, now)      a CHILD_SA deleted (its inbound SA kept a grace time)
  host.ike_rekeyed(old, new)           new IKE SA takes over old's CHILD_SAs
  host.rx_packets(sa)                  frames received on sa's CHILD_SAs (liveness)
  host.ike_down(sa)                    the IKE SA is gone (its children with it)
  host.count(reason, text)             a refused or failed message: one counter, one log line
A message that does not verify (bad ICV, unknown SPI, wrong message ID) is counted and
changes nothing.
"""
import ipaddress
import os
import struct
from dataclasses import dataclass, field

from fastpath.ike import auth, crypto, message as m, proposals as pr

RETRANSMIT_FIRST = 1.0                 # then 2, 4, 8, 16 s: RFC 7296 2.1's exponential backoff
RETRANSMIT_TRIES = 6
HALF_OPEN_TIMEOUT = 30.0               # a responder SA whose IKE_AUTH never came
REKEY_RETRY = 10.0                     # a refused CHILD_SA rekey is tried again after this
IKE_REKEY_AT = 0.85                    # of the IKE SA's lifetime
RESPONDER_REKEY_SLACK = 1.1            # the IKE responder rekeys later: fewer collisions
NONCE_LEN = 32
# RFC 7383: a protected message larger than this goes as fragments, when both ends support
# it: an IPv4 datagram of 1280 bytes, less IP, UDP and the non-ESP marker
FRAGMENT_LIMIT = 1280 - 20 - 8 - 4

# states
INIT_SENT, AUTH_SENT, INIT_DONE, ESTABLISHED, DEAD = \
    "INIT_SENT", "AUTH_SENT", "INIT_DONE", "ESTABLISHED", "DEAD"


@dataclass
class IkeConfig:
    local_ip: str
    remote_ip: str
    psk: bytes                         # None with certificates
    local_id: tuple = None             # (ID type, data); default ID_IPV4_ADDR of local_ip
    remote_id: tuple = None            # what the peer must show; default ID_IPV4_ADDR of remote_ip
    credentials: object = None         # auth.Credentials instead of a PSK; local_id from its cert
    remote_name: str = None            # with credentials: the peer's ID (IP, FQDN, email or DN)
    encr_bits: tuple = pr.IKE_ENCR_BITS
    encrs: tuple = pr.IKE_ENCRS        # IKE SA protection: AES-GCM-16, AES-CBC (+ integs)
    integs: tuple = pr.IKE_INTEGS
    prfs: tuple = pr.IKE_PRFS
    groups: tuple = pr.IKE_GROUPS
    esp_encr_bits: tuple = pr.ESP_ENCR_BITS
    esns: tuple = (True, False)        # ESN offered/accepted, in order of preference
    lifetime: float = 86400.0          # shown; IKE SA rekeying is not in this slice
    rekey_time: float = 3600.0         # CHILD_SA age at which it is rekeyed (0: never)
    dpd_interval: float = 30.0         # liveness check after this long without a word
    pfs: bool = False                  # a new KE in CHILD_SA rekeys (the IKE SA's group)

    def __post_init__(self):
        if self.local_id is None and self.credentials is not None:
            self.local_id = self.credentials.identity
        if self.local_id is None:
            self.local_id = (m.ID_IPV4_ADDR, ipaddress.IPv4Address(self.local_ip).packed)
        if self.remote_id is None:
            self.remote_id = (m.ID_IPV4_ADDR, ipaddress.IPv4Address(self.remote_ip).packed)


def parse_identity(text):
    """options:local_id / remote_id -> (ID type, data): an IPv4 address, an email
    address (RFC822), or else a host name (FQDN)."""
    try:
        return m.ID_IPV4_ADDR, ipaddress.IPv4Address(text).packed
    except ValueError:
        pass
    return (m.ID_RFC822_ADDR if "@" in text else m.ID_FQDN), text.encode()


def format_identity(ident):
    id_type, data = ident
    if id_type == m.ID_IPV4_ADDR and len(data) == 4:
        return str(ipaddress.IPv4Address(data))
    if id_type in (m.ID_FQDN, m.ID_RFC822_ADDR):
        return data.decode(errors="replace")
    if id_type == m.ID_DER_ASN1_DN:
        return auth.dn_from_der(data)
    return f"type {id_type}: {data.hex()}"


@dataclass
class ChildSa:
    spi_in: int
    spi_out: int
    key_in: bytes                      # AES key || salt, as fastpath's ESP SAs take them
    key_out: bytes
    esn: bool
    encr_bits: int
    ts_local: list = field(default_factory=list)
    ts_remote: list = field(default_factory=list)
    created: float = 0.0
    nonces: tuple = ()                 # (Ni, Nr) of the exchange that made it (2.8.1)
    rekeying: bool = False             # our CREATE_CHILD_SA for it is outstanding
    rekeyed: bool = False              # replaced; its Delete is under way
    peer_rekey: object = None          # the ChildSa of the peer's rekey of it, ours outstanding


class IkeError(Exception):
    """A request we answer with an error notify: (notify type, reason counted)."""

    def __init__(self, notify, reason, text):
        super().__init__(text)
        self.notify, self.reason, self.text = notify, reason, text


class IkeSa:
    def __init__(self, config, host, initiator, now, local_port=500, remote_port=500):
        self.config, self.host, self.initiator = config, host, initiator
        self.spi_i = self.spi_r = bytes(8)
        self.state = None
        self.choice = None             # IkeChoice
        self.keys = None
        self.ni = self.nr = None
        self.msg1 = self.msg2 = None   # the IKE_SA_INIT request and response, as sent
        self.local_port, self.remote_port = local_port, remote_port
        self.my_next_id = 0            # our next request's message ID
        self.pending = None            # our outstanding request: dict
        self.peer_next_id = 0          # the peer's next request's message ID
        self.last_response = None      # (message ID, bytes) for a retransmitted request
        self.children = []
        self.peer_id = None
        self.nat_local = self.nat_remote = False
        self.initial_contact = False   # the peer said INITIAL_CONTACT
        self.created = now
        self.established_at = None
        self.cookie = None
        self.deferred = []             # requests waiting for our window (of 1) to open
        self.last_rx = now             # when the peer last said something (DPD)
        self.last_esp_rx = 0
        self.ike_rekeying = False
        self.peer_hashes = ()          # its SIGNATURE_HASH_ALGORITHMS (RFC 7427)
        self.fragments = False         # both ends said FRAGMENTATION_SUPPORTED (RFC 7383)
        self.reassembly = None         # (message ID, response?, total, {number: plaintext}, first)
        self.auth_error = None         # why the peer's AUTH did not verify

    def _new_spi(self):
        spi = os.urandom(8)
        return spi if spi != bytes(8) else self._new_spi()

    # ---- sending ----

    def _protected(self, exchange, response, message_id, payloads):
        flags = (m.F_INITIATOR if self.initiator else 0) | (m.F_RESPONSE if response else 0)
        keys = self.keys.sending(self.initiator)
        data = crypto.seal(self.spi_i, self.spi_r, exchange, flags, message_id, payloads, *keys)
        if self.fragments and len(data) > FRAGMENT_LIMIT:
            return crypto.seal_fragments(self.spi_i, self.spi_r, exchange, flags, message_id, payloads,
                                         FRAGMENT_LIMIT, *keys)
        return data

    def _send(self, data):
        """A message, or the list of its fragments."""
        for d in data if isinstance(data, list) else [data]:
            self.host.send(self, d)

    def _request(self, exchange, payloads, now, data=None):
        """Send a new request and keep it for retransmission until its response."""
        mid = self.my_next_id
        self.my_next_id += 1
        if data is None:
            data = self._protected(exchange, False, mid, payloads)
        self.pending = {"id": mid, "exchange": exchange, "data": data, "tries": 1,
                        "next": now + RETRANSMIT_FIRST}
        self._send(data)

    def _respond(self, exchange, message_id, payloads):
        data = self._protected(exchange, True, message_id, payloads)
        self.last_response = (message_id, data)
        self._send(data)

    def tick(self, now):
        """Retransmits our outstanding request with backoff; gives up after the last."""
        p = self.pending
        if p and now >= p["next"]:
            if p["tries"] >= RETRANSMIT_TRIES:
                self.host.count("retransmit_timeout", f"{m.EXCHANGES.get(p['exchange'])} request "
                                f"unanswered after {p['tries']} transmissions")
                return self._die()
            p["tries"] += 1
            p["next"] = now + RETRANSMIT_FIRST * (1 << (p["tries"] - 1))
            self._send(p["data"])
        if self.state == INIT_DONE and now - self.created >= HALF_OPEN_TIMEOUT:
            self._die()
        if self.state != ESTABLISHED:
            return
        c = self.config
        if c.lifetime and now - self.established_at >= c.lifetime * (
                IKE_REKEY_AT if self.initiator else IKE_REKEY_AT * RESPONDER_REKEY_SLACK):
            self.rekey_ike(now)
        if c.rekey_time:
            due = c.rekey_time * (1 if self.initiator else RESPONDER_REKEY_SLACK)
            for ch in list(self.children):
                if not (ch.rekeying or ch.rekeyed) and now - ch.created >= due:
                    self.rekey_child(now, ch)
        rx = self.host.rx_packets(self)
        if rx != self.last_esp_rx:
            self.last_esp_rx, self.last_rx = rx, now
        if c.dpd_interval and self.pending is None and not self.deferred \
                and now - self.last_rx >= c.dpd_interval:
            # RFC 7296 2.4: an empty INFORMATIONAL; unanswered, the SA is dead (tick above)
            self.host.count("dpd", f"nothing from the peer for {now - self.last_rx:.0f} s: liveness check")
            self._request(m.INFORMATIONAL, [], now)
            self.pending["handler"] = lambda p, payloads, t: None

    def _die(self):
        if self.state != DEAD:
            self.state = DEAD
            self.pending = None
            self.host.ike_down(self)

    # ---- initiator: IKE_SA_INIT ----

    def start(self, now, group=None):
        """Send IKE_SA_INIT (again, with another group after INVALID_KE_PAYLOAD)."""
        c = self.config
        if self.spi_i == bytes(8):
            self.spi_i = self._new_spi()
        group = group or c.groups[0]
        if self.ni is None or group != self.group:
            self.dh = crypto.DhKey(group)
        self.group = group
        if self.ni is None:
            # kept when asked again (cookie, other group): a cookie is bound to Ni (2.6)
            self.ni = os.urandom(NONCE_LEN)
        payloads = [m.Payload(m.PL_SA, m.encode_sa(pr.ike_proposals(c.encr_bits, c.prfs, c.groups, c.encrs, c.integs))),
                    m.Payload(m.PL_KE, m.encode_ke(self.group, self.dh.public)),
                    m.Payload(m.PL_NONCE, self.ni)] + self._nat_payloads(bytes(8)) + self._cert_init_payloads()
        if self.cookie is not None:
            payloads.insert(0, m.notify_payload(m.N_COOKIE, self.cookie))
        self.msg1 = m.encode(m.Message(self.spi_i, bytes(8), m.IKE_SA_INIT, m.F_INITIATOR, 0, payloads))
        self.state = INIT_SENT
        self.my_next_id = 0
        self._request(m.IKE_SA_INIT, None, now, data=self.msg1)

    def _nat_payloads(self, spi_r):
        c = self.config
        src = crypto.nat_hash(self.spi_i, spi_r, ipaddress.IPv4Address(c.local_ip).packed, self.local_port)
        dst = crypto.nat_hash(self.spi_i, spi_r, ipaddress.IPv4Address(c.remote_ip).packed, self.remote_port)
        return [m.notify_payload(m.N_NAT_DETECTION_SOURCE_IP, src),
                m.notify_payload(m.N_NAT_DETECTION_DESTINATION_IP, dst)]

    def _cert_init_payloads(self, certreq=False):
        """With certificates: the RFC 7427 hashes we sign with, and (responder) CERTREQ."""
        creds = self.config.credentials
        if creds is None:
            return []
        out = [m.notify_payload(m.N_SIGNATURE_HASH_ALGORITHMS, struct.pack(
            f"!{len(auth.OUR_HASHES)}H", *auth.OUR_HASHES)),
               m.notify_payload(m.N_FRAGMENTATION_SUPPORTED)]     # certificates make IKE_AUTH big
        return out + ([m.Payload(m.PL_CERTREQ, creds.certreq())] if certreq else [])

    def _check_nat(self, msg, spi_r):
        """NAT detection (RFC 7296 2.23): does what the peer saw match our addresses?"""
        c = self.config
        notes = msg.notifies()
        src = [n.data for n in notes if n.type == m.N_NAT_DETECTION_SOURCE_IP]
        dst = [n.data for n in notes if n.type == m.N_NAT_DETECTION_DESTINATION_IP]
        if src:
            want = crypto.nat_hash(self.spi_i, spi_r, ipaddress.IPv4Address(c.remote_ip).packed, self.remote_port)
            self.nat_remote = want not in src
        if dst:
            want = crypto.nat_hash(self.spi_i, spi_r, ipaddress.IPv4Address(c.local_ip).packed, self.local_port)
            self.nat_local = want not in dst

    def _on_init_response(self, data, msg, now):
        c = self.config
        errors = {n.type: n for n in msg.notifies() if n.type < 16384}
        cookie = next((n for n in msg.notifies() if n.type == m.N_COOKIE), None)
        if cookie is not None and self.cookie is None:
            self.cookie = cookie.data                  # RFC 7296 2.6: ask again with it
            return self.start(now, self.group)
        if m.N_INVALID_KE_PAYLOAD in errors:
            d = errors[m.N_INVALID_KE_PAYLOAD].data
            want = struct.unpack("!H", d[:2])[0] if len(d) >= 2 else None
            self.host.count("invalid_ke_payload", f"peer wants DH group {want} instead of {self.group}")
            if want in c.groups and want != self.group and not getattr(self, "ke_retried", False):
                self.ke_retried = True                 # once: no ping-pong of groups
                return self.start(now, want)
            return self._die()
        if errors:
            ntype = next(iter(errors))
            name = m.NOTIFY_NAMES.get(ntype, str(ntype))
            self.host.count(name.lower(), f"IKE_SA_INIT refused by the peer: {name}")
            return self._die()
        sa, ke, nonce = msg.get(m.PL_SA), msg.get(m.PL_KE), msg.get(m.PL_NONCE)
        if not (sa and ke and nonce) or msg.spi_r == bytes(8):
            raise m.MalformedMessage("IKE_SA_INIT response without SA, KE or Nonce")
        choice = pr.check_ike_reply(m.decode_sa(sa.body), c.encr_bits, c.prfs, c.groups, c.encrs, c.integs)
        group, peer_pub = m.decode_ke(ke.body)
        if choice is None or choice.group != self.group or group != self.group:
            self.host.count("no_proposal_chosen", "IKE_SA_INIT response chose what we did not offer")
            return self._die()
        if not 16 <= len(nonce.body) <= 256:
            raise m.MalformedMessage("nonce length")
        try:
            shared = self.dh.shared(peer_pub)
        except crypto.DhError as e:
            self.host.count("invalid_ke_payload", f"peer's KE: {e}")
            return self._die()
        self.spi_r, self.nr, self.msg2, self.choice = msg.spi_r, nonce.body, data, choice
        self.keys = crypto.IkeKeys(choice.prf, choice.encr_bits, shared, self.ni, self.nr,
                                   self.spi_i, self.spi_r, integ=choice.integ)
        self._check_nat(msg, self.spi_r)
        self.peer_hashes = auth.hash_algorithms(msg)
        self.fragments = self.config.credentials is not None and any(
            n.type == m.N_FRAGMENTATION_SUPPORTED for n in msg.notifies())
        if self.nat_local or self.nat_remote:
            self.local_port = self.remote_port = 4500   # RFC 7296 2.23: float to 4500
        self.pending = None
        self._send_auth(now)

    def _send_auth(self, now):
        c = self.config
        self.child_spi = self.host.new_spi()
        id_body = m.encode_id(*c.local_id)
        proof = auth.our_payloads(c, self.choice.prf, crypto.signed_octets(
            self.choice.prf, self.msg1, self.nr, self.keys.sk_pi, id_body), self.peer_hashes)
        payloads = [m.Payload(m.PL_IDI, id_body)]
        if self.host.first_contact(self):
            payloads.append(m.notify_payload(m.N_INITIAL_CONTACT))
        if c.credentials is not None:
            payloads.append(m.Payload(m.PL_CERTREQ, c.credentials.certreq()))
        payloads += proof + [
                     m.notify_payload(m.N_USE_TRANSPORT_MODE),
                     m.Payload(m.PL_SA, m.encode_sa([pr.esp_proposal(
                         c.esp_encr_bits, c.esns, struct.pack("!I", self.child_spi))])),
                     m.Payload(m.PL_TSI, m.encode_ts([pr.vxlan_selector(c.local_ip)])),
                     m.Payload(m.PL_TSR, m.encode_ts([pr.vxlan_selector(c.remote_ip)]))]
        self.state = AUTH_SENT
        self._request(m.IKE_AUTH, payloads, now)

    # ---- initiator: IKE_AUTH ----

    def _on_auth_response(self, payloads, now):
        self.pending = None
        notes = [m.decode_notify(p.body) for p in payloads if p.type == m.PL_NOTIFY]
        errors = [n.type for n in notes if n.type < 16384]
        if m.N_AUTHENTICATION_FAILED in errors:
            self.host.count("authentication_failed", "the peer refused our AUTH (PSK or ID mismatch?)")
            return self._die()
        idr, proof = _get(payloads, m.PL_IDR), _get(payloads, m.PL_AUTH)
        if not (idr and proof):
            if errors:
                name = m.NOTIFY_NAMES.get(errors[0], str(errors[0]))
                self.host.count(name.lower(), f"IKE_AUTH refused by the peer: {name}")
                return self._die()
            raise m.MalformedMessage("IKE_AUTH response without IDr or AUTH")
        if not self._auth_ok(idr.body, payloads, self.msg2, self.ni, self.keys.sk_pr):
            self.host.count("authentication_failed", f"the peer's AUTH does not verify: {self.auth_error}")
            # RFC 7296 2.21.2: tell the responder, which deletes what it installed
            self._request(m.INFORMATIONAL, [m.notify_payload(m.N_AUTHENTICATION_FAILED)], now)
            self.pending = None
            return self._die()
        self.state, self.established_at = ESTABLISHED, now
        self.initial_contact = m.N_INITIAL_CONTACT in [n.type for n in notes]
        self.host.established(self)
        if errors:
            name = m.NOTIFY_NAMES.get(errors[0], str(errors[0]))
            self.host.count(name.lower(), f"no CHILD_SA: the peer answered {name}")
            return self.delete(now)
        try:
            child = self._child_from_response(payloads, notes)
        except IkeError as e:
            self.host.count(e.reason, e.text)
            return self.delete(now)
        self._child_up(child, now)

    def _child_up(self, child, now):
        """The CHILD_SA IKE_AUTH negotiated, in either role: kept and installed."""
        child.created = now
        self.children.append(child)
        self.host.child_up(self, child)

    def _child_from_response(self, payloads, notes):
        c = self.config
        sa, tsi, tsr = _get(payloads, m.PL_SA), _get(payloads, m.PL_TSI), _get(payloads, m.PL_TSR)
        if not (sa and tsi and tsr):
            raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax", "IKE_AUTH response without SA, TSi or TSr")
        choice = pr.check_esp_reply(m.decode_sa(sa.body), c.esp_encr_bits, c.esns)
        if choice is None:
            raise IkeError(m.N_NO_PROPOSAL_CHOSEN, "no_proposal_chosen", "CHILD_SA: the peer chose what we did not offer")
        if m.N_USE_TRANSPORT_MODE not in [n.type for n in notes]:
            raise IkeError(m.N_NO_PROPOSAL_CHOSEN, "no_proposal_chosen", "CHILD_SA: the peer wants tunnel mode")
        ts_i, ts_r = m.decode_ts(tsi.body), m.decode_ts(tsr.body)
        if not (ts_i and ts_r and all(pr.covers(t, c.local_ip) for t in ts_i)
                and all(pr.covers(t, c.remote_ip) for t in ts_r)):
            raise IkeError(m.N_TS_UNACCEPTABLE, "ts_unacceptable", "CHILD_SA: selectors without the gateways' UDP 4789")
        return self._make_child(self.child_spi, struct.unpack("!I", choice.spi)[0], choice, ts_i, ts_r)

    def _make_child(self, spi_in, spi_out, choice, ts_i, ts_r, ni=None, nr=None, shared=b"",
                    initiator=None, now=0.0):
        """RFC 7296 2.17: KEYMAT = prf+(SK_d, [g^ir (new)] | Ni | Nr), i2r first, where
        initiator and nonces are those of the exchange creating the CHILD_SA."""
        ni, nr = ni or self.ni, nr or self.nr
        initiator = self.initiator if initiator is None else initiator
        i2r, r2i = crypto.child_keymat(self.choice.prf, self.keys.sk_d, (shared or b"") + ni, nr,
                                       choice.encr_bits // 8 + 4)
        key_in, key_out = (r2i, i2r) if initiator else (i2r, r2i)
        ts_local, ts_remote = (ts_i, ts_r) if initiator else (ts_r, ts_i)
        return ChildSa(spi_in, spi_out, key_in, key_out, choice.esn, choice.encr_bits, ts_local, ts_remote,
                       created=now, nonces=(ni, nr))

    def _auth_ok(self, id_body, payloads, real_message, nonce, sk_p):
        """The peer's ID is the one configured and its AUTH (and certificate) prove it;
        if not, self.auth_error says why."""
        self.peer_id = m.decode_id(id_body)
        try:
            auth.check_peer(self.config, self.choice.prf, self.peer_id, payloads, crypto.signed_octets(
                self.choice.prf, real_message, nonce, sk_p, id_body))
            return True
        except auth.AuthFailed as e:
            self.auth_error = str(e)
            return False

    # ---- responder ----

    @classmethod
    def respond_init(cls, config, host, data, msg, now, local_port, remote_port):
        """An IKE_SA_INIT request for no SA we have: a new responder SA (answered), or an
        unprotected error reply with nothing kept (INVALID_KE_PAYLOAD, NO_PROPOSAL_CHOSEN)."""
        c = config
        sa, ke, nonce = msg.get(m.PL_SA), msg.get(m.PL_KE), msg.get(m.PL_NONCE)
        if not (sa and ke and nonce) or not 16 <= len(nonce.body) <= 256:
            raise m.MalformedMessage("IKE_SA_INIT without SA, KE or Nonce")
        group, peer_pub = m.decode_ke(ke.body)
        chosen = pr.choose_ike(m.decode_sa(sa.body), c.encr_bits, c.prfs, c.groups, ke_group=group,
                                encrs=c.encrs, integs=c.integs)

        def refuse(ntype, data=b""):
            host.send_reply(m.encode(m.Message(msg.spi_i, bytes(8), m.IKE_SA_INIT, m.F_RESPONSE, 0,
                                               [m.notify_payload(ntype, data)])), local_port, remote_port)
        if chosen is None:
            host.count("no_proposal_chosen", "IKE_SA_INIT: no acceptable IKE proposal from the peer")
            return refuse(m.N_NO_PROPOSAL_CHOSEN)
        prop, choice = chosen
        if group != choice.group:
            host.count("invalid_ke_payload", f"IKE_SA_INIT: KE for group {group}, we want {choice.group}")
            return refuse(m.N_INVALID_KE_PAYLOAD, struct.pack("!H", choice.group))
        self = cls(config, host, False, now, local_port, remote_port)
        self.dh = crypto.DhKey(choice.group)
        try:
            shared = self.dh.shared(peer_pub)
        except crypto.DhError as e:
            host.count("invalid_syntax", f"IKE_SA_INIT: peer's KE: {e}")
            return refuse(m.N_INVALID_SYNTAX)
        self.spi_i, self.spi_r = msg.spi_i, self._new_spi()
        self.ni, self.nr, self.choice, self.msg1 = nonce.body, os.urandom(NONCE_LEN), choice, data
        self.keys = crypto.IkeKeys(choice.prf, choice.encr_bits, shared, self.ni, self.nr,
                                   self.spi_i, self.spi_r, integ=choice.integ)
        self._check_nat(msg, bytes(8))
        self.peer_hashes = auth.hash_algorithms(msg)
        self.fragments = self.config.credentials is not None and any(
            n.type == m.N_FRAGMENTATION_SUPPORTED for n in msg.notifies())
        payloads = [m.Payload(m.PL_SA, m.encode_sa([prop])),
                    m.Payload(m.PL_KE, m.encode_ke(choice.group, self.dh.public)),
                    m.Payload(m.PL_NONCE, self.nr)]
        src = crypto.nat_hash(self.spi_i, self.spi_r, ipaddress.IPv4Address(c.local_ip).packed, local_port)
        dst = crypto.nat_hash(self.spi_i, self.spi_r, ipaddress.IPv4Address(c.remote_ip).packed, remote_port)
        payloads += [m.notify_payload(m.N_NAT_DETECTION_SOURCE_IP, src),
                     m.notify_payload(m.N_NAT_DETECTION_DESTINATION_IP, dst)] + self._cert_init_payloads(True)
        self.msg2 = m.encode(m.Message(self.spi_i, self.spi_r, m.IKE_SA_INIT, m.F_RESPONSE, 0, payloads))
        self.state, self.peer_next_id = INIT_DONE, 1
        self.last_response = (0, self.msg2)
        host.send(self, self.msg2)
        return self

    def _on_auth_request(self, payloads, now):
        c = self.config
        idi, proof = _get(payloads, m.PL_IDI), _get(payloads, m.PL_AUTH)
        if not (idi and proof):
            raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax", "IKE_AUTH request without IDi or AUTH")
        if not self._auth_ok(idi.body, payloads, self.msg1, self.nr, self.keys.sk_pi):
            self.host.count("authentication_failed", f"IKE_AUTH from {c.remote_ip} "
                            f"({format_identity(self.peer_id)}) does not verify: {self.auth_error}")
            self._respond_next(m.IKE_AUTH, [m.notify_payload(m.N_AUTHENTICATION_FAILED)])
            return self._die()
        notes = [m.decode_notify(p.body) for p in payloads if p.type == m.PL_NOTIFY]
        id_body = m.encode_id(*c.local_id)
        reply = [m.Payload(m.PL_IDR, id_body)] + auth.our_payloads(c, self.choice.prf, crypto.signed_octets(
            self.choice.prf, self.msg2, self.ni, self.keys.sk_pr, id_body), self.peer_hashes)
        child = None
        try:
            child, child_payloads = self._child_for_request(payloads, notes)
            reply += child_payloads
        except IkeError as e:
            self.host.count(e.reason, e.text)
            reply.append(m.notify_payload(e.notify))
        self.state, self.established_at = ESTABLISHED, now
        self.initial_contact = m.N_INITIAL_CONTACT in [n.type for n in notes]
        self._respond_next(m.IKE_AUTH, reply)
        self.host.established(self)
        if child:
            self._child_up(child, now)

    def _child_for_request(self, payloads, notes):
        c = self.config
        sa, tsi, tsr = _get(payloads, m.PL_SA), _get(payloads, m.PL_TSI), _get(payloads, m.PL_TSR)
        if not (sa and tsi and tsr):
            raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax", "IKE_AUTH request without SA, TSi or TSr")
        chosen = pr.choose_esp(m.decode_sa(sa.body), c.esp_encr_bits, c.esns)
        if chosen is None:
            raise IkeError(m.N_NO_PROPOSAL_CHOSEN, "no_proposal_chosen", "CHILD_SA: no acceptable ESP proposal")
        if m.N_USE_TRANSPORT_MODE not in [n.type for n in notes]:
            raise IkeError(m.N_NO_PROPOSAL_CHOSEN, "no_proposal_chosen",
                           "CHILD_SA: the peer wants tunnel mode; fastpath does transport mode only")
        narrowed = pr.narrow(m.decode_ts(tsi.body), m.decode_ts(tsr.body), c.remote_ip, c.local_ip)
        if narrowed is None:
            raise IkeError(m.N_TS_UNACCEPTABLE, "ts_unacceptable",
                           "CHILD_SA: selectors without the gateways' UDP 4789")
        prop, choice = chosen
        spi_in = self.host.new_spi()
        child = self._make_child(spi_in, struct.unpack("!I", choice.spi)[0], choice, *narrowed)
        return child, [m.notify_payload(m.N_USE_TRANSPORT_MODE),
                       m.Payload(m.PL_SA, m.encode_sa([pr.esp_reply(prop, choice, struct.pack("!I", spi_in))])),
                       m.Payload(m.PL_TSI, m.encode_ts(narrowed[0])),
                       m.Payload(m.PL_TSR, m.encode_ts(narrowed[1]))]

    # ---- every message for this SA ----

    def receive(self, data, msg, now, local_port, remote_port):
        """A message whose SPIs name this SA. Errors are counted; nothing escapes."""
        try:
            self._receive(data, msg, now, local_port, remote_port)
        except m.UnsupportedCritical as e:
            self.host.count("unsupported_critical_payload", str(e))
        except m.MalformedMessage as e:
            self.host.count("invalid_syntax", f"{m.EXCHANGES.get(msg.exchange, msg.exchange)}: {e}")

    def _receive(self, data, msg, now, local_port, remote_port):
        if self.state == DEAD:
            return
        if msg.is_response:
            p = self.pending
            if p is None or msg.message_id != p["id"] or msg.exchange != p["exchange"]:
                return self.host.count("invalid_message_id", f"response {msg.message_id}: no such request")
            if msg.exchange == m.IKE_SA_INIT:
                return self._on_init_response(data, msg, now)
            payloads = self._open(data, msg)
            if payloads is None:
                return
            if msg.exchange == m.IKE_AUTH and self.state == AUTH_SENT:
                return self._on_auth_response(payloads, now)
            self.pending = None
            self.last_rx = now
            if getattr(self, "deleting", False):
                return self._die()
            if p.get("handler"):
                p["handler"](p, payloads, now)
            self._run_deferred(now)
            return
        # a request from the peer
        if msg.message_id == self.peer_next_id - 1 and self.last_response:
            if msg.exchange == m.IKE_SA_INIT:
                if data == self.msg1:
                    self.host.send(self, self.last_response[1])
                return
            if self._open(data, msg) is not None:      # our response was lost: same answer
                self._send(self.last_response[1])
            return
        if msg.message_id != self.peer_next_id:
            return self.host.count("invalid_message_id", f"request {msg.message_id}, expected {self.peer_next_id}")
        try:
            payloads = self._open(data, msg)
        except m.UnsupportedCritical as e:
            # it authenticated: refused whole, naming the payload type (RFC 7296 2.5)
            self.host.count("unsupported_critical_payload", str(e))
            self._respond_next(msg.exchange, [m.notify_payload(m.N_UNSUPPORTED_CRITICAL_PAYLOAD, bytes([e.ptype]))])
            return self._die() if self.state == INIT_DONE else None
        if payloads is None:
            return
        self.last_rx = now
        if (local_port, remote_port) != (self.local_port, self.remote_port):
            self.local_port, self.remote_port = local_port, remote_port   # the peer moved (4500)
        try:
            if msg.exchange == m.IKE_AUTH and self.state == INIT_DONE:
                return self._on_auth_request(payloads, now)
            if self.state != ESTABLISHED:
                raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax",
                               f"{m.EXCHANGES.get(msg.exchange, msg.exchange)} request in state {self.state}")
            if msg.exchange == m.INFORMATIONAL:
                return self._on_informational(payloads, now)
            if msg.exchange == m.CREATE_CHILD_SA:
                return self._on_create_child(payloads, now)
            raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax", f"unknown exchange {msg.exchange}")
        except m.MalformedMessage as e:
            # it authenticated, so the peer deserves to hear why (RFC 7296 2.21.2)
            self.host.count("invalid_syntax", f"{m.EXCHANGES.get(msg.exchange, msg.exchange)}: {e}")
            self._respond_next(msg.exchange, [m.notify_payload(m.N_INVALID_SYNTAX)])
            if self.state == INIT_DONE:
                self._die()
        except IkeError as e:
            self.host.count(e.reason, e.text)
            self._respond_next(msg.exchange, [m.notify_payload(e.notify)])
            if self.state == INIT_DONE:
                self._die()

    def _respond_next(self, exchange, payloads):
        self._respond(exchange, self.peer_next_id, payloads)
        self.peer_next_id += 1

    def _open(self, data, msg):
        """The payloads inside msg's SK payload, or None (counted) if it does not verify."""
        if self.keys is None:
            self.host.count("invalid_syntax", "protected message before keys")
            return None
        try:
            if msg.payloads and msg.payloads[-1].type == m.PL_SKF:
                return self._reassemble(data, msg)
            return crypto.open_sk(data, msg, *self.keys.receiving(self.initiator))
        except crypto.AuthFailed:
            self.host.count("integrity_failed", f"{m.EXCHANGES.get(msg.exchange, msg.exchange)} "
                            f"{msg.message_id}: ICV does not verify")
            return None

    def _reassemble(self, data, msg):
        """RFC 7383 2.6: keep each fragment that verifies; the payloads once all are in, else
        None. Only authenticated fragments are kept, one message's at a time."""
        number, total, first, plain = crypto.open_fragment(data, msg, *self.keys.receiving(self.initiator))
        r = self.reassembly
        if r is None or r[:3] != (msg.message_id, msg.is_response, total):
            r = self.reassembly = (msg.message_id, msg.is_response, total, {}, None)
        r[3][number] = plain
        if number == 1:
            r = self.reassembly = r[:4] + (first,)
        if len(r[3]) < total:
            return None
        self.reassembly = None
        return m.parse_payloads(r[4], b"".join(r[3][n] for n in range(1, total + 1)))

    def _on_informational(self, payloads, now):
        reply, gone = [], False
        for p in payloads:
            if p.type == m.PL_DELETE:
                proto, spis = m.decode_delete(p.body)
                if proto == m.PROTO_IKE:
                    gone = True
                elif proto == m.PROTO_ESP:
                    ours = []
                    for spi in spis:
                        child = next((ch for ch in self.children
                                      if struct.pack("!I", ch.spi_out) == spi), None)
                        if child:
                            self.children.remove(child)
                            self.host.child_down(self, child, now)
                            ours.append(struct.pack("!I", child.spi_in))
                    if ours:
                        reply.append(m.Payload(m.PL_DELETE, m.encode_delete(m.PROTO_ESP, ours)))
            elif p.type == m.PL_NOTIFY:
                n = m.decode_notify(p.body)
                if n.type == m.N_AUTHENTICATION_FAILED:
                    # the initiator refused our AUTH: drop what we installed
                    self.host.count("authentication_failed", "the peer refused our AUTH (PSK or ID mismatch?)")
                    gone = True
        self._respond_next(m.INFORMATIONAL, reply)
        if gone:
            self._die()

    # ---- CREATE_CHILD_SA: rekeying a CHILD_SA (RFC 7296 1.3.3, 2.8) ----

    def _run_deferred(self, now):
        while self.deferred and self.pending is None and self.state == ESTABLISHED:
            self.deferred.pop(0)(now)

    def rekey_child(self, now, child=None):
        """Replace child (default: the newest) with a new CHILD_SA, make-before-break:
        the new inbound SA is installed, outbound switches on the response, the old
        one is deleted (and its inbound SA kept a grace time). -> whether it started."""
        if self.state != ESTABLISHED:
            return False
        if child is None:
            child = next((ch for ch in reversed(self.children) if not ch.rekeyed), None)
        if child is None or child.rekeying or child.rekeyed or child not in self.children:
            return False
        child.rekeying = True
        if self.pending is not None:
            self.deferred.append(lambda t: self._send_rekey(t, child))
        else:
            self._send_rekey(now, child)
        return True

    def _send_rekey(self, now, child):
        if child not in self.children or child.rekeyed:
            return
        c = self.config
        spi, ni = self.host.new_spi(), os.urandom(NONCE_LEN)
        group = self.choice.group if c.pfs else 0
        dh = crypto.DhKey(group) if group else None
        payloads = [m.notify_payload(m.N_REKEY_SA, protocol=m.PROTO_ESP, spi=struct.pack("!I", child.spi_in)),
                    m.Payload(m.PL_SA, m.encode_sa([pr.esp_proposal(c.esp_encr_bits, c.esns,
                                                                    struct.pack("!I", spi), group)])),
                    m.Payload(m.PL_NONCE, ni)]
        if dh:
            payloads.append(m.Payload(m.PL_KE, m.encode_ke(group, dh.public)))
        payloads += [m.notify_payload(m.N_USE_TRANSPORT_MODE),
                     m.Payload(m.PL_TSI, m.encode_ts(child.ts_local)),
                     m.Payload(m.PL_TSR, m.encode_ts(child.ts_remote))]
        self._request(m.CREATE_CHILD_SA, payloads, now)
        self.pending.update(handler=self._on_rekey_response, old=child, spi=spi, ni=ni, dh=dh, group=group)

    def _on_rekey_response(self, p, payloads, now):
        c, old = self.config, p["old"]
        old.rekeying = False
        notes = [m.decode_notify(q.body) for q in payloads if q.type == m.PL_NOTIFY]
        errors = [n.type for n in notes if n.type < 16384]

        def fail(reason, text):
            self.host.count(reason, f"CHILD_SA rekey: {text}")
            old.created = now - c.rekey_time + REKEY_RETRY if c.rekey_time else old.created
        if errors:
            name = m.NOTIFY_NAMES.get(errors[0], str(errors[0]))
            return fail(name.lower(), f"the peer answered {name}")
        if old.rekeyed or old not in self.children:
            return                      # the peer's rekey of it won (2.8.1) or it is gone
        sa, nonce, ke = _get(payloads, m.PL_SA), _get(payloads, m.PL_NONCE), _get(payloads, m.PL_KE)
        tsi, tsr = _get(payloads, m.PL_TSI), _get(payloads, m.PL_TSR)
        if not (sa and nonce and tsi and tsr) or not 16 <= len(nonce.body) <= 256:
            return fail("invalid_syntax", "response without SA, Nonce, TSi or TSr")
        choice = pr.check_esp_reply(m.decode_sa(sa.body), c.esp_encr_bits, c.esns, p["group"])
        if choice is None or m.N_USE_TRANSPORT_MODE not in [n.type for n in notes]:
            return fail("no_proposal_chosen", "the peer chose what we did not offer")
        shared = b""
        if p["group"]:
            if ke is None:
                return fail("invalid_syntax", "PFS response without KE")
            group, pub = m.decode_ke(ke.body)
            try:
                if group != p["group"]:
                    raise crypto.DhError(f"KE for group {group}")
                shared = p["dh"].shared(pub)
            except crypto.DhError as e:
                return fail("invalid_ke_payload", f"peer's KE: {e}")
        ts_i, ts_r = m.decode_ts(tsi.body), m.decode_ts(tsr.body)
        if not (ts_i and ts_r and all(pr.covers(t, c.local_ip) for t in ts_i)
                and all(pr.covers(t, c.remote_ip) for t in ts_r)):
            return fail("ts_unacceptable", "selectors without the gateways' UDP 4789")
        rival = old.peer_rekey
        if rival is not None and rival in self.children and min(p["ni"], nonce.body) < min(rival.nonces):
            # RFC 7296 2.8.1: both ends rekeyed it at once; the exchange with the lowest of
            # the four nonces made the redundant SA, which its initiator (we) deletes. The
            # peer's rekey survives, and the peer deletes the old CHILD_SA.
            old.rekeyed = True
            self.host.count("rekey_collision", f"simultaneous rekey of CHILD_SA 0x{old.spi_in:08x}: "
                            f"ours (0x{p['spi']:08x}) loses and is deleted")
            self._request(m.INFORMATIONAL, [m.Payload(m.PL_DELETE, m.encode_delete(
                m.PROTO_ESP, [struct.pack("!I", p["spi"])]))], now)
            return
        new = self._make_child(p["spi"], struct.unpack("!I", choice.spi)[0], choice, ts_i, ts_r,
                               ni=p["ni"], nr=nonce.body, shared=shared, initiator=True, now=now)
        self.children.append(new)
        self.host.child_rekeyed(self, old, new, True, now)
        old.rekeyed = True
        self._delete_child(now, old)        # RFC 7296 2.8: the rekey's initiator deletes the old one

    def _delete_child(self, now, child):
        if self.pending is not None:
            return self.deferred.append(lambda t: self._delete_child(t, child))
        if child not in self.children:
            return
        self._request(m.INFORMATIONAL, [m.Payload(m.PL_DELETE, m.encode_delete(
            m.PROTO_ESP, [struct.pack("!I", child.spi_in)]))], now)

        def answered(p, payloads, t):
            if child in self.children:
                self.children.remove(child)
                self.host.child_down(self, child, t)
        self.pending["handler"] = answered

    def _on_create_child(self, payloads, now):
        """The peer's CREATE_CHILD_SA: a rekey of one of our CHILD_SAs (N(REKEY_SA))."""
        c = self.config
        notes = [m.decode_notify(q.body) for q in payloads if q.type == m.PL_NOTIFY]
        rekey = next((n for n in notes if n.type == m.N_REKEY_SA), None)
        sa = _get(payloads, m.PL_SA)
        if rekey is None and sa is not None and any(q.protocol == m.PROTO_IKE for q in m.decode_sa(sa.body)):
            return self._on_ike_rekey_request(sa, payloads, now)
        if rekey is None:
            raise IkeError(m.N_NO_ADDITIONAL_SAS, "no_additional_sas",
                           "CREATE_CHILD_SA for a new CHILD_SA or an IKE SA rekey: not supported")
        old = next((ch for ch in self.children if struct.pack("!I", ch.spi_out) == rekey.spi), None)
        if old is None or old.rekeyed:
            raise IkeError(m.N_CHILD_SA_NOT_FOUND, "child_sa_not_found",
                           f"rekey of CHILD_SA {rekey.spi.hex()}: no such CHILD_SA")
        sa, nonce, ke = _get(payloads, m.PL_SA), _get(payloads, m.PL_NONCE), _get(payloads, m.PL_KE)
        tsi, tsr = _get(payloads, m.PL_TSI), _get(payloads, m.PL_TSR)
        if not (sa and nonce and tsi and tsr) or not 16 <= len(nonce.body) <= 256:
            raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax", "CREATE_CHILD_SA without SA, Nonce, TSi or TSr")
        ke_group, pub = m.decode_ke(ke.body) if ke else (None, None)
        chosen = pr.choose_esp(m.decode_sa(sa.body), c.esp_encr_bits, c.esns, c.groups, ke_group)
        if chosen is None:
            raise IkeError(m.N_NO_PROPOSAL_CHOSEN, "no_proposal_chosen", "CHILD_SA rekey: no acceptable ESP proposal")
        prop, choice = chosen
        if m.N_USE_TRANSPORT_MODE not in [n.type for n in notes]:
            raise IkeError(m.N_NO_PROPOSAL_CHOSEN, "no_proposal_chosen",
                           "CHILD_SA rekey: the peer wants tunnel mode; fastpath does transport mode only")
        narrowed = pr.narrow(m.decode_ts(tsi.body), m.decode_ts(tsr.body), c.remote_ip, c.local_ip)
        if narrowed is None:
            raise IkeError(m.N_TS_UNACCEPTABLE, "ts_unacceptable", "CHILD_SA rekey: selectors without UDP 4789")
        shared, reply_ke = b"", []
        if choice.group:
            agreed = self._peer_ke("CHILD_SA rekey", ke_group, pub, choice.group)
            if agreed is None:
                return
            shared, dh = agreed
            reply_ke = [m.Payload(m.PL_KE, m.encode_ke(choice.group, dh.public))]
        nr, spi_in = os.urandom(NONCE_LEN), self.host.new_spi()
        new = self._make_child(spi_in, struct.unpack("!I", choice.spi)[0], choice, *narrowed,
                               ni=nonce.body, nr=nr, shared=shared, initiator=False, now=now)
        self._respond_next(m.CREATE_CHILD_SA, [
            m.Payload(m.PL_SA, m.encode_sa([pr.esp_reply(prop, choice, struct.pack("!I", spi_in))])),
            m.Payload(m.PL_NONCE, nr)] + reply_ke + [
            m.notify_payload(m.N_USE_TRANSPORT_MODE),
            m.Payload(m.PL_TSI, m.encode_ts(narrowed[0])), m.Payload(m.PL_TSR, m.encode_ts(narrowed[1]))])
        self.children.append(new)
        if old.rekeying:
            old.peer_rekey = new           # ours crossed it: 2.8.1 decides at our response
        # the new inbound SA now; outbound moves when the peer deletes the old CHILD_SA
        # (or its traffic arrives on the new one): the peer may not have the keys yet
        self.host.child_rekeyed(self, old, new, False, now)

    # ---- CREATE_CHILD_SA: rekeying the IKE SA (RFC 7296 2.18) ----

    def rekey_ike(self, now):
        """Replace this IKE SA by a new one (new SPIs, nonces, DH, keys from SK_d); the
        CHILD_SAs move to it and this one is deleted. -> whether it started."""
        if self.state != ESTABLISHED or self.ike_rekeying:
            return False
        self.ike_rekeying = True
        if self.pending is not None:
            self.deferred.append(self._send_ike_rekey)
        else:
            self._send_ike_rekey(now)
        return True

    def _send_ike_rekey(self, now):
        ch = self.choice                  # the same algorithms again
        spi, ni, dh = self._new_spi(), os.urandom(NONCE_LEN), crypto.DhKey(ch.group)
        self._request(m.CREATE_CHILD_SA, [
            m.Payload(m.PL_SA, m.encode_sa(pr.choice_proposals(ch, spi))),
            m.Payload(m.PL_NONCE, ni), m.Payload(m.PL_KE, m.encode_ke(ch.group, dh.public))], now)
        self.pending.update(handler=self._on_ike_rekey_response, spi=spi, ni=ni, dh=dh)

    def _on_ike_rekey_response(self, p, payloads, now):
        notes = [m.decode_notify(q.body) for q in payloads if q.type == m.PL_NOTIFY]
        errors = [n.type for n in notes if n.type < 16384]

        def fail(reason, text):
            self.host.count(reason, f"IKE SA rekey: {text}")
            self.ike_rekeying = False
            self.established_at = min(self.established_at + REKEY_RETRY, now)   # try again later
        if errors:
            name = m.NOTIFY_NAMES.get(errors[0], str(errors[0]))
            return fail(name.lower(), f"the peer answered {name}")
        sa, nonce, ke = _get(payloads, m.PL_SA), _get(payloads, m.PL_NONCE), _get(payloads, m.PL_KE)
        if not (sa and nonce and ke) or not 16 <= len(nonce.body) <= 256:
            return fail("invalid_syntax", "response without SA, Nonce or KE")
        props = m.decode_sa(sa.body)
        choice = pr.check_ike_reply(props, (self.choice.encr_bits,), (self.choice.prf,), (self.choice.group,),
                                    (self.choice.encr,), (self.choice.integ,))
        if choice is None or len(props[0].spi) != 8 or props[0].spi == bytes(8):
            return fail("no_proposal_chosen", "the peer chose what we did not offer")
        group, pub = m.decode_ke(ke.body)
        try:
            if group != choice.group:
                raise crypto.DhError(f"KE for group {group}")
            shared = p["dh"].shared(pub)
        except crypto.DhError as e:
            return fail("invalid_ke_payload", f"peer's KE: {e}")
        new = self._successor(True, p["spi"], props[0].spi, p["ni"], nonce.body, choice, shared, now)
        self.host.ike_rekeyed(self, new)
        # RFC 7296 2.18: the rekey's initiator deletes the old IKE SA
        self.deleting = True
        self._request(m.INFORMATIONAL, [m.Payload(m.PL_DELETE, m.encode_delete(m.PROTO_IKE, []))], now)

    def _successor(self, initiator, spi_i, spi_r, ni, nr, choice, shared, now):
        new = IkeSa(self.config, self.host, initiator, now, self.local_port, self.remote_port)
        new.spi_i, new.spi_r, new.ni, new.nr, new.choice = spi_i, spi_r, ni, nr, choice
        new.keys = crypto.IkeKeys(choice.prf, choice.encr_bits, shared, ni, nr, spi_i, spi_r, old=self.keys,
                                  integ=choice.integ)
        new.state, new.established_at, new.peer_id = ESTABLISHED, now, self.peer_id
        new.nat_local, new.nat_remote = self.nat_local, self.nat_remote
        new.children, self.children = self.children, []
        for ch in new.children:
            ch.rekeying = False
        return new

    def _peer_ke(self, what, group, pub, want):
        """A CREATE_CHILD_SA request's KE (group, public value) against the group we chose:
        (shared secret, our DhKey), or None once INVALID_KE_PAYLOAD has answered a KE of
        another group (RFC 7296 1.3). A bad public value is INVALID_SYNTAX."""
        if group != want:
            self.host.count("invalid_ke_payload", f"{what}: KE for group {group}, we want {want}")
            self._respond_next(m.CREATE_CHILD_SA, [m.notify_payload(
                m.N_INVALID_KE_PAYLOAD, struct.pack("!H", want))])
            return None
        dh = crypto.DhKey(want)
        try:
            return dh.shared(pub), dh
        except crypto.DhError as e:
            raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax", f"{what}: peer's KE: {e}") from None

    def _on_ike_rekey_request(self, sa, payloads, now):
        c = self.config
        nonce, ke = _get(payloads, m.PL_NONCE), _get(payloads, m.PL_KE)
        if not (nonce and ke) or not 16 <= len(nonce.body) <= 256:
            raise IkeError(m.N_INVALID_SYNTAX, "invalid_syntax", "IKE SA rekey without Nonce or KE")
        if self.pending is not None and self.pending["exchange"] == m.CREATE_CHILD_SA:
            # ours is outstanding: rather than resolve a collision (2.18 / 2.8.1), refuse
            raise IkeError(m.N_TEMPORARY_FAILURE, "temporary_failure", "IKE SA rekey while ours is outstanding")
        group, pub = m.decode_ke(ke.body)
        proposals = m.decode_sa(sa.body)
        chosen = pr.choose_ike(proposals, c.encr_bits, c.prfs, c.groups, ke_group=group,
                                encrs=c.encrs, integs=c.integs)
        peer_prop = next((q for q in proposals if chosen and q.num == chosen[0].num
                          and q.protocol == m.PROTO_IKE), None)
        if chosen is None or peer_prop is None or len(peer_prop.spi) != 8 or peer_prop.spi == bytes(8):
            raise IkeError(m.N_NO_PROPOSAL_CHOSEN, "no_proposal_chosen", "IKE SA rekey: no acceptable proposal")
        prop, choice = chosen
        agreed = self._peer_ke("IKE SA rekey", group, pub, choice.group)
        if agreed is None:
            return
        shared, dh = agreed
        spi, nr = self._new_spi(), os.urandom(NONCE_LEN)
        self._respond_next(m.CREATE_CHILD_SA, [
            m.Payload(m.PL_SA, m.encode_sa([m.Proposal(prop.num, m.PROTO_IKE, spi, prop.transforms)])),
            m.Payload(m.PL_NONCE, nr), m.Payload(m.PL_KE, m.encode_ke(choice.group, dh.public))])
        new = self._successor(False, peer_prop.spi, spi, nonce.body, nr, choice, shared, now)
        self.ike_rekeying = True          # the peer deletes this one
        self.host.ike_rekeyed(self, new)

    def delete(self, now):
        """Send a Delete for the whole IKE SA; it is gone when answered (or given up)."""
        if self.state == ESTABLISHED and self.pending is None:
            self.deleting = True
            self._request(m.INFORMATIONAL, [m.Payload(m.PL_DELETE, m.encode_delete(m.PROTO_IKE, []))], now)
        else:
            self._die()

    def show(self, now):
        c = self.config
        return {"peer": f"{c.remote_ip}[{self.remote_port}]", "local": f"{c.local_ip}[{self.local_port}]",
                "role": "initiator" if self.initiator else "responder", "state": self.state,
                "spi_i": self.spi_i.hex(), "spi_r": self.spi_r.hex(),
                "local_id": format_identity(c.local_id),
                "remote_id": format_identity(self.peer_id or c.remote_id),
                "auth": "pubkey" if c.credentials is not None else "psk",    # as swanctl names it
                "algorithms": str(self.choice) if self.choice else None,
                "nat": ("local " if self.nat_local else "") + ("remote" if self.nat_remote else "") or "none",
                "established_s": round(now - self.established_at, 1) if self.established_at else None,
                "expires_s": round(c.lifetime - (now - self.established_at), 1) if self.established_at else None,
                "message_ids": {"ours": self.my_next_id, "peer": self.peer_next_id},
                "children": [{"spi_in": f"0x{ch.spi_in:08x}", "spi_out": f"0x{ch.spi_out:08x}",
                              "algorithms": f"aes{ch.encr_bits}gcm16-{'esn' if ch.esn else 'noesn'}",
                              "mode": "transport",
                              "ts_local": [_ts_text(t) for t in ch.ts_local],
                              "ts_remote": [_ts_text(t) for t in ch.ts_remote]} for ch in self.children]}


def _get(payloads, ptype):
    return next((p for p in payloads if p.type == ptype), None)


def _ts_text(ts):
    addr = ts.start_addr if ts.start_addr == ts.end_addr else f"{ts.start_addr}-{ts.end_addr}"
    ports = str(ts.start_port) if ts.start_port == ts.end_port else f"{ts.start_port}-{ts.end_port}"
    return f"{addr}[{'udp' if ts.protocol == 17 else ts.protocol}/{ports}]"
