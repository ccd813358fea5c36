"""IKEv2 for one tunnel port: its IKE SAs, the ESP SAs their CHILD_SAs install, and the
choice of when to initiate.

Options (on a vxlan port with options:psk or options:certificate): psk, or certificates
as in OVS: certificate, private_key and ca_cert (PEM file paths) with remote_name (the
peer's ID: an IPv4 address, FQDN, email or DN, which its certificate must contain; our ID
comes from our certificate); local_id/remote_id with a PSK (default: the gateways'
addresses, ID_IPV4_ADDR, as strongSwan expects), esn (true:
offer/accept only ESN, false: only 32-bit sequence numbers; default either, ESN
preferred), ike_initiate (default true: initiate when the tunnel comes up and whenever
no IKE SA is up or being set up; false: wait for the peer), rekey_time (CHILD_SA rekey
period in seconds, default 3600), pfs (true: a new KE in our CHILD_SA rekeys; default
false), dpd_interval (liveness check after this many silent seconds, default 30),
cookie_threshold (half-open responder SAs at which IKE_SA_INIT must bring a cookie,
RFC 7296 2.6; default 10, 0: always).

Messages reach it from fastpath.vpn.Vpn's dispatch of ike-input's queue (UDP 500,
and UDP 4500 after the non-ESP marker). Refused messages are counted in ike-input
(`show errors`) and in `show ike`, with one log line each.
"""
import ipaddress
import logging
import os
import struct

from fastpath.crypto.sa import SecurityAssociation
from fastpath.ike import auth, message as m
from fastpath.ike.cookie import COOKIE_THRESHOLD, Cookies
from fastpath.ike.proposals import VXLAN_PORT
from fastpath.ike.sa import ESTABLISHED, DEAD, INIT_DONE, INIT_SENT, IkeConfig, IkeSa, parse_identity

log = logging.getLogger("fastpath.ike")

RETRY_FIRST, RETRY_MAX = 2.0, 60.0     # re-initiation after a failure: doubling, capped
DUPLICATE_WAIT = 2.0                   # a duplicate IKE SA's survivor: its keys surely at the peer
OLD_SA_GRACE = 2.0                     # a deleted CHILD_SA's inbound SA: for frames in flight
NON_ESP_MARKER = bytes(4)

# what ike-input counts for IKE (show errors), by reason
ERRORS = (("no_proposal_chosen", "IKE: no acceptable proposal (NO_PROPOSAL_CHOSEN)"),
          ("authentication_failed", "IKE: authentication failed (PSK, certificate or ID mismatch?)"),
          ("invalid_ke_payload", "IKE: DH group mismatch (INVALID_KE_PAYLOAD)"),
          ("invalid_syntax", "IKE: malformed message (INVALID_SYNTAX)"),
          ("unsupported_critical_payload", "IKE: unknown critical payload"),
          ("integrity_failed", "IKE: protected message whose ICV does not verify"),
          ("invalid_message_id", "IKE: message ID outside the window"),
          ("unknown_spi", "IKE: message for no IKE SA we have"),
          ("ts_unacceptable", "IKE: traffic selectors refused (TS_UNACCEPTABLE)"),
          ("no_additional_sas", "IKE: CREATE_CHILD_SA for a new CHILD_SA refused (not supported)"),
          ("child_sa_not_found", "IKE: rekey of a CHILD_SA we do not have"),
          ("rekey_collision", "IKE: simultaneous CHILD_SA rekey, ours redundant (RFC 7296 2.8.1)"),
          ("temporary_failure", "IKE: request refused for now (TEMPORARY_FAILURE)"),
          ("dpd", "IKE: liveness check (nothing heard from the peer)"),
          ("retransmit_timeout", "IKE: request unanswered after every retransmission"),
          ("cookies_sent", "IKE: IKE_SA_INIT answered with a cookie, nothing kept (responder under load)"),
          ("invalid_cookie", "IKE: IKE_SA_INIT with a cookie that does not verify"),
          ("half_open_full", "IKE: IKE_SA_INIT dropped: too many half-open IKE SAs"),
          ("half_open_expired", "IKE: half-open IKE SA expired without IKE_AUTH"))


def is_ike(options):
    """options:psk or options:certificate means IKEv2; options:ike=true, from older
    configs, says so again."""
    return ("psk" in options or "certificate" in options
            or str(options.get("ike", "false")).lower() == "true")


CERT_OPTIONS = ("certificate", "private_key", "ca_cert", "remote_name")


def config_from_options(o):
    psk = o.get("psk")
    certs = [k for k in CERT_OPTIONS if o.get(k)]
    if certs and psk is not None:
        raise ValueError("a tunnel takes options:psk or options:certificate, not both")
    if certs and len(certs) != len(CERT_OPTIONS):
        raise ValueError("options:certificate needs options:" + ", options:".join(
            k for k in CERT_OPTIONS if k not in certs))
    if not certs and (psk is None or not str(psk)):
        raise ValueError("IKEv2 needs a non-empty options:psk, or options:certificate, "
                         "private_key, ca_cert and remote_name")
    esn = str(o.get("esn", "")).lower()
    esns = {"true": (True,), "false": (False,), "": (True, False)}.get(esn)
    if esns is None:
        raise ValueError(f"options:esn must be true or false, not {o['esn']!r}")
    if certs:
        creds = auth.Credentials(str(o["certificate"]), str(o["private_key"]), str(o["ca_cert"]))
        c = IkeConfig(o["local_ip"], o["remote_ip"], None, esns=esns, credentials=creds,
                      remote_name=str(o["remote_name"]))
    else:
        c = IkeConfig(o["local_ip"], o["remote_ip"], str(psk).encode(), esns=esns)
    if o.get("local_id"):
        c.local_id = parse_identity(str(o["local_id"]))
        if certs:
            c.local_id = c.credentials.own_identity(str(o["local_id"]))
    if o.get("remote_id"):
        c.remote_id = parse_identity(str(o["remote_id"]))
    try:
        c.rekey_time = float(o.get("rekey_time", c.rekey_time))
        c.dpd_interval = float(o.get("dpd_interval", c.dpd_interval))
    except ValueError:
        raise ValueError("options:rekey_time and options:dpd_interval are seconds") from None
    pfs = str(o.get("pfs", "false")).lower()
    if pfs not in ("true", "false"):
        raise ValueError(f"options:pfs must be true or false, not {o['pfs']!r}")
    c.pfs = pfs == "true"
    return c


def cookie_threshold(o):
    try:
        n = int(o.get("cookie_threshold", COOKIE_THRESHOLD))
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError("options:cookie_threshold is a count of half-open IKE SAs")
    return n


class IkeTunnel:
    """The IKE side of a vpn.Tunnel: the host of its IkeSa objects."""

    def __init__(self, tunnel):
        self.tunnel = tunnel
        o = tunnel.port.options
        self.config = config_from_options(o)
        self.initiate = str(o.get("ike_initiate", "true")).lower() != "false"
        self.sas = []
        self.child_sas = {}            # spi_in -> (IkeSa, ChildSa, inbound SecurityAssociation, outbound)
        self.counters = {name: 0 for name, _ in ERRORS}
        self.counters.update(ike_sas=0, child_sas=0, child_rekeys=0, ike_rekeys=0)
        self.retry_at = None           # set at the first tick: start when the tunnel comes up
        self.retry_wait = RETRY_FIRST
        self.switch_on_traffic = {}    # spi_in -> outbound SA to use once it carries frames
        self.retiring = {}             # spi_in -> when its inbound SA goes
        self.cookies = Cookies(cookie_threshold(o))
        self.under_load = False        # asking for cookies (logged when it changes)
        # the selectors name udp/4789 at both ends: send VXLAN from 4789 too
        tunnel.vpn.sw.each("vxlan-encap").set_source_port(tunnel.port.sw_if_index, VXLAN_PORT)

    @property
    def name(self):
        return self.tunnel.port.name

    # ---- the host interface of IkeSa ----

    def send(self, sa, data):
        self.send_reply(data, sa.local_port, sa.remote_port)

    def send_reply(self, data, local_port, remote_port):
        if local_port == 4500:
            data = NON_ESP_MARKER + data            # RFC 3948 2.2: IKE on the NAT-T port
        self.tunnel._send(data, sport=local_port, dport=remote_port)

    def new_spi(self):
        decrypt = self.tunnel.vpn.decrypt
        while True:
            spi = struct.unpack("!I", os.urandom(4))[0]
            if spi >= 256 and spi not in decrypt.sas and spi not in self.child_sas:
                return spi

    def first_contact(self, sa):
        return not any(s.state == ESTABLISHED for s in self.sas if s is not sa)

    def established(self, sa):
        self.counters["ike_sas"] += 1
        self.retry_wait = RETRY_FIRST
        log.info("%s: IKE SA up with %s as %s, %s (SPIs %s/%s)", self.name, self.config.remote_ip,
                 "initiator" if sa.initiator else "responder", sa.choice, sa.spi_i.hex(), sa.spi_r.hex())
        if sa.initial_contact:
            # the peer (re)started: what it had with us before it began this SA is stale
            # (RFC 7296 2.4). An SA that came up while this one was being made is the
            # sibling of both ends initiating at once, and may already carry frames: kept.
            for old in [s for s in self.sas if s is not sa and s.state == ESTABLISHED
                        and s.established_at is not None and s.established_at < sa.created]:
                old._die()

    def _install(self, sa, child, switch):
        """child's ESP SAs: inbound at once; outbound now (switch) or once the peer sends
        on child (tick)."""
        t = self.tunnel
        common = dict(esn=child.esn, replay_window=t.replay_window or 64, encap=t.encap)
        sa_in = SecurityAssociation(child.spi_in, child.key_in, direction="in", **common)
        sa_out = SecurityAssociation(child.spi_out, child.key_out, direction="out", **common)
        t.install_inbound(sa_in)
        self.child_sas[child.spi_in] = (sa, child, sa_in, sa_out)
        if switch:
            t.use_outbound(sa_out)
        else:
            self.switch_on_traffic[child.spi_in] = sa_out

    def child_up(self, sa, child):
        # a second CHILD_SA (both ends initiated at once) whose responder we are waits: the
        # initiator has its keys only once our IKE_AUTH response arrives
        self._install(sa, child, self.tunnel.out is None or sa.initiator)
        self.counters["child_sas"] += 1
        log.info("%s: CHILD_SA up with %s: aes%dgcm16 esn %s, in 0x%08x out 0x%08x", self.name,
                 self.config.remote_ip, child.encr_bits, "on" if child.esn else "off",
                 child.spi_in, child.spi_out)

    def rx_packets(self, sa):
        """Frames received on sa's CHILD_SAs so far (liveness without a DPD exchange)."""
        return sum(e[2].stats()["packets"] for e in self.child_sas.values() if e[0] is sa)

    def child_rekeyed(self, sa, old, new, switch, now):
        """new replaces old: its inbound SA at once; its outbound now (switch: we
        initiated the rekey, the peer has the keys) or when the peer uses it or deletes
        old. old stays until its Delete."""
        self._install(sa, new, switch)
        self.counters["child_rekeys"] = self.counters.get("child_rekeys", 0) + 1
        log.info("%s: CHILD_SA in 0x%08x out 0x%08x rekeyed (%s): in 0x%08x out 0x%08x", self.name,
                 old.spi_in, old.spi_out, "ours" if switch else "the peer's", new.spi_in, new.spi_out)

    def child_down(self, sa, child, now=None):
        """child is gone; its inbound SA lingers OLD_SA_GRACE (now given) for frames the
        peer sent before its Delete."""
        t = self.tunnel
        entry = self.child_sas.pop(child.spi_in, None)
        if entry is None:
            return
        self.switch_on_traffic.pop(child.spi_in, None)
        if now is not None:
            self.retiring[child.spi_in] = now + OLD_SA_GRACE
        else:
            t.vpn.decrypt.remove_sa(child.spi_in)
            t.inbound.pop(child.spi_in, None)
        if t.out is not None and t.out[1] is entry[3]:
            live = [e for e in self.child_sas.values() if e[0].state == ESTABLISHED]
            if live:
                self.switch_on_traffic.pop(live[-1][1].spi_in, None)
                t.use_outbound(live[-1][3])
            else:
                t.vpn.encrypt.remove_outbound(t.out[0])
                t.out = None
                t.port.sa_index = 0
                t.vpn.sw.each("vxlan-encap").set_sa(t.port.sw_if_index, 0)
        log.info("%s: CHILD_SA in 0x%08x out 0x%08x deleted", self.name, child.spi_in, child.spi_out)

    def ike_rekeyed(self, old, new):
        """new replaces old (RFC 7296 2.18) and takes over its CHILD_SAs."""
        for spi, e in list(self.child_sas.items()):
            if e[0] is old:
                self.child_sas[spi] = (new,) + e[1:]
        self.sas.append(new)
        self.counters["ike_rekeys"] = self.counters.get("ike_rekeys", 0) + 1
        log.info("%s: IKE SA %s/%s rekeyed: now %s/%s", self.name, old.spi_i.hex(), old.spi_r.hex(),
                 new.spi_i.hex(), new.spi_r.hex())

    def ike_down(self, sa):
        for child in list(sa.children):
            self.child_down(sa, child)
        if sa in self.sas:
            self.sas.remove(sa)
        if sa.established_at is not None:
            log.info("%s: IKE SA %s/%s with %s down", self.name, sa.spi_i.hex(), sa.spi_r.hex(),
                     self.config.remote_ip)

    def count(self, reason, text):
        self.counters[reason] = self.counters.get(reason, 0) + 1
        node = self.tunnel.vpn.ike_input
        if reason in node.error_names():
            node.count(reason)
        log.warning("%s: IKE with %s: %s", self.name, self.config.remote_ip, text)

    # ---- input ----

    def receive(self, data, local_port, remote_port, now):
        """One IKE message from the peer (the non-ESP marker already stripped)."""
        try:
            msg = m.decode(data)
        except m.UnsupportedCritical as e:
            return self.count("unsupported_critical_payload", str(e))
        except m.MalformedMessage as e:
            self.count("invalid_syntax", f"malformed message: {e}")
            return self._syntax_reply(data, local_port, remote_port)
        if msg.exchange == m.IKE_SA_INIT and not msg.is_response and msg.spi_r == bytes(8):
            sa = next((s for s in self.sas if not s.initiator and s.spi_i == msg.spi_i), None)
            if sa is not None:
                return sa.receive(data, msg, now, local_port, remote_port)   # a retransmission
            return self._new_responder(data, msg, now, local_port, remote_port)
        sa = next((s for s in self.sas if s.spi_i == msg.spi_i and
                   (s.spi_r == msg.spi_r or (s.state == INIT_SENT and msg.exchange == m.IKE_SA_INIT))), None)
        if sa is None:
            return self.count("unknown_spi", f"{m.EXCHANGES.get(msg.exchange, msg.exchange)} for IKE SA "
                              f"{msg.spi_i.hex()}/{msg.spi_r.hex()}: no such SA")
        sa.receive(data, msg, now, local_port, remote_port)

    def half_open(self):
        return sum(1 for s in self.sas if s.state == INIT_DONE)

    def _tally(self, reason):
        """Count without a log line: what a flood brings, logged once per episode."""
        self.counters[reason] = self.counters.get(reason, 0) + 1
        self.tunnel.vpn.ike_input.count(reason)

    def _admit(self, msg, now, local_port, remote_port):
        """RFC 7296 2.6: under load, an IKE_SA_INIT request goes on only with a valid
        cookie; otherwise it is answered with one and forgotten. -> whether it goes on."""
        half_open = self.half_open()
        if half_open >= self.cookies.limit:
            self._tally("half_open_full")
            return False
        load = self.cookies.required(half_open)
        if load != self.under_load:
            self.under_load = load
            if load:
                log.warning("%s: IKE with %s: %d half-open IKE SAs: IKE_SA_INIT must bring a cookie",
                            self.name, self.config.remote_ip, half_open)
        if not load:
            return True
        nonce = msg.get(m.PL_NONCE)
        if nonce is None:
            return True                    # malformed: refused statelessly by respond_init
        ip = ipaddress.IPv4Address(self.config.remote_ip).packed
        first = msg.payloads[0] if msg.payloads else None
        cookie = m.decode_notify(first.body) if first is not None and first.type == m.PL_NOTIFY else None
        if cookie is not None and cookie.type == m.N_COOKIE:
            if self.cookies.valid(now, cookie.data, nonce.body, ip, msg.spi_i):
                return True
            self._tally("invalid_cookie")
        self.send_reply(m.encode(m.Message(msg.spi_i, bytes(8), m.IKE_SA_INIT, m.F_RESPONSE, 0, [
            m.notify_payload(m.N_COOKIE, self.cookies.make(now, nonce.body, ip, msg.spi_i))])),
            local_port, remote_port)
        self._tally("cookies_sent")
        return False

    def _new_responder(self, data, msg, now, local_port, remote_port):
        try:
            if not self._admit(msg, now, local_port, remote_port):
                return
        except m.MalformedMessage as e:
            self.count("invalid_syntax", f"IKE_SA_INIT: {e}")
            return self._syntax_reply(data, local_port, remote_port)
        mine = [s for s in self.sas if s.initiator and s.state == INIT_SENT]
        if mine and ipaddress.IPv4Address(self.config.local_ip) > ipaddress.IPv4Address(self.config.remote_ip):
            # both ends initiated at once: the one with the lower address stays initiator
            for s in mine:
                s.pending = None
                s.state = DEAD
                self.sas.remove(s)
        try:
            sa = IkeSa.respond_init(self.config, self, data, msg, now, local_port, remote_port)
        except m.MalformedMessage as e:
            self.count("invalid_syntax", f"IKE_SA_INIT: {e}")
            return self._syntax_reply(data, local_port, remote_port)
        if sa is not None:
            self.sas.append(sa)

    def _syntax_reply(self, data, local_port, remote_port):
        """An IKE_SA_INIT request we cannot parse gets an unprotected INVALID_SYNTAX
        (RFC 7296 2.21.1), or INVALID_MAJOR_VERSION; anything else is only counted."""
        try:
            spi_i, spi_r, _, version, exchange, flags, mid, _ = m.parse_header(data)
        except m.MalformedMessage:
            return
        if exchange == m.IKE_SA_INIT and not flags & m.F_RESPONSE and spi_r == bytes(8) and mid == 0:
            # RFC 7296 2.5: another major version is told which one we speak
            ntype, vdata = ((m.N_INVALID_MAJOR_VERSION, b"") if version >> 4 != 2
                            else (m.N_INVALID_SYNTAX, b""))
            self.send_reply(m.encode(m.Message(spi_i, bytes(8), m.IKE_SA_INIT, m.F_RESPONSE, 0,
                                               [m.notify_payload(ntype, vdata)])),
                            local_port, remote_port)

    # ---- time ----

    def _drop_duplicate(self, now):
        """Both ends initiated at once and both IKE SAs came up: the one holding the lowest
        of the four nonces is redundant (the rule of RFC 7296 2.8.1 for rekey collisions,
        which both ends compute alike); its initiator moves its frames to the other's
        CHILD_SA, then deletes it."""
        up = [s for s in self.sas if s.state == ESTABLISHED and s.children and s.pending is None
              and not getattr(s, "deleting", False)]
        if len(up) < 2:
            return
        a, b = up[:2]
        lowest = lambda s: min(int.from_bytes(s.ni, "big"), int.from_bytes(s.nr, "big"))
        redundant, keep = (a, b) if lowest(a) < lowest(b) else (b, a)
        if not redundant.initiator:
            return                                  # the peer deletes it
        entry = next((e for e in self.child_sas.values() if e[0] is keep), None)
        if (entry is not None and not keep.initiator and entry[2].stats()["packets"] == 0
                and now - keep.established_at < DUPLICATE_WAIT):
            return        # the peer may not have keep's keys yet (our response is on its way)
        if entry is not None:
            self.switch_on_traffic.pop(entry[1].spi_in, None)
            self.tunnel.use_outbound(entry[3])
        log.info("%s: IKE SA %s/%s duplicates %s/%s (both ends initiated): deleting it", self.name,
                 redundant.spi_i.hex(), redundant.spi_r.hex(), keep.spi_i.hex(), keep.spi_r.hex())
        redundant.delete(now)

    def tick(self, now):
        t = self.tunnel
        self._drop_duplicate(now)
        for spi, sa_out in list(self.switch_on_traffic.items()):
            entry = self.child_sas.get(spi)
            if entry is None:
                del self.switch_on_traffic[spi]
            elif entry[2].stats()["packets"] > 0:     # the peer already sends on it
                del self.switch_on_traffic[spi]
                if t.out is None or t.out[1] is not sa_out:
                    t.use_outbound(sa_out)
        for spi, at in list(self.retiring.items()):
            if now >= at:
                del self.retiring[spi]
                t.vpn.decrypt.remove_sa(spi)
                t.inbound.pop(spi, None)
        for sa in list(self.sas):
            half_open = sa.state == INIT_DONE
            sa.tick(now)
            if half_open and sa.state == DEAD:
                self._tally("half_open_expired")
        if self.under_load and not self.cookies.required(self.half_open()):
            self.under_load = False
            log.info("%s: IKE with %s: load gone, no more cookies asked for", self.name, self.config.remote_ip)
        if not self.initiate:
            return
        if self.retry_at is None:
            self.retry_at = now
        busy = any(s.state != DEAD for s in self.sas)
        if not busy and now >= self.retry_at:
            sa = IkeSa(self.config, self, True, now)
            self.sas.append(sa)
            sa.start(now)
            self.retry_at = now + self.retry_wait        # if this one fails too
            self.retry_wait = min(self.retry_wait * 2, RETRY_MAX)

    def close(self):
        """The tunnel is going away: say so to the peer (best effort), forget everything."""
        for sa in list(self.sas):
            if sa.state == ESTABLISHED:
                sa.delete(0.0)
            sa.pending = None
            sa.state = DEAD
        self.sas.clear()
        self.child_sas.clear()
        self.switch_on_traffic.clear()
        self.retiring.clear()

    def show(self, now):
        return [{"tunnel": self.name, **sa.show(now)} for sa in self.sas]

    def gauges(self):
        """What `show ike` adds to the counters: the state of the moment."""
        return {"half_open": self.half_open(), "cookies_required": self.under_load}
