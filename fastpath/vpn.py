"""IPsec on vxlan tunnel ports: manual SAs, IKEv2 (options:ike=true, fastpath.ike), or the
PSK handshake of docs/vpn-handshake.md.

Control plane only: it creates SecurityAssociation objects and installs them in
esp-encrypt (outbound, by SA index; vxlan-encap stamps the tunnel's current index on each
frame) and esp-decrypt (inbound, by SPI). Handshake packets reach it through the
handshake-input node's queue; a 50 ms timer answers them and runs retransmits, rekeys
and the retirement of old SAs.
"""
import hashlib
import hmac
import ipaddress
import logging
import os
import struct
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import serialization

from fastpath.crypto.sa import SecurityAssociation, parse_xfrm_key
from fastpath.ike.tunnel import IkeTunnel, is_ike, NON_ESP_MARKER

log = logging.getLogger("fastpath.vpn")

NAT_T_PORT = 4500
INIT, RESP, CONFIRM = 1, 2, 3
VERSION = 1
INIT_LEN, RESP_LEN, CONFIRM_LEN = 72, 68, 32
RETRANSMIT = 1.0
OLD_SA_GRACE = 60.0
UNCONFIRMED = 3.0               # with no session, an answered INIT nobody confirms is dropped
SEQ_REKEY = 1 << 62


def _hkdf(ikm, salt, info, length):
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(ikm)


def _mac(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def _pub(priv):
    return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _exchange(priv, peer_public):
    """X25519 with the peer's public key; None for a low-order point (no shared secret)."""
    try:
        return priv.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError:
        return None


def _header(kind, vni):
    return struct.pack("!IBBHI", 0, kind, VERSION, 0, vni)


def _ip4_udp(src, dst, payload, sport=NAT_T_PORT, dport=NAT_T_PORT):
    total = 28 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    s = sum(struct.unpack("!10H", hdr))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    hdr = hdr[:10] + struct.pack("!H", ~s & 0xffff) + hdr[12:]
    return hdr + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def uses_esn(options):
    """Manual SAs follow `ip xfrm`: 32-bit sequence numbers unless options:esn=true (as
    `flag esn`); the handshake's SAs always use ESN."""
    return "psk" in options or str(options.get("esn", "false")).lower() == "true"


class Tunnel:
    """The SAs of one IPsec tunnel port, and its handshake state when it has a PSK."""

    def __init__(self, vpn, port):
        self.vpn, self.port = vpn, port
        o = port.options
        self.vni = int(o["key"])
        self.local_ip, self.remote_ip = o["local_ip"], o["remote_ip"]
        self.replay_window = int(o.get("replay_window", 64))
        self.esn = uses_esn(o)
        self.encap = "udp" if str(o.get("encap", "")).lower() == "udp" else None
        self.inbound = {}            # spi -> [SecurityAssociation, retire_at or None]
        self.out = None              # (index, SecurityAssociation) in use
        self.counters = {"handshakes": 0, "rekeys": 0, "auth_failed": 0, "replayed": 0,
                         "bad_message": 0}
        self.ike = None
        self.psk = o.get("psk")
        if is_ike(o):
            self.psk = None              # the PSK belongs to IKE, not to the old handshake
            self.ike = IkeTunnel(self)
        elif self.psk is not None:
            if not str(self.psk):
                raise ValueError("options:psk is empty")
            self.k_auth = _hkdf(str(self.psk).encode(), b"fastpath-vpn-v1 auth",
                                struct.pack("!I", self.vni), 32)
            self.rekey_time = float(o.get("rekey_time", 3600))
            self.rekey_packets = int(o.get("rekey_packets", 0))
            self.rekey_bytes = int(o.get("rekey_bytes", 0))
            self.pending = None      # our outstanding INIT
            self.responded = None    # a session we answered, not yet confirmed
            self.last_ts = 0         # newest INIT timestamp accepted from the peer
            self.initiator = False   # we initiated the session in use
            self.established_at = None
            self.confirms = []       # CONFIRM retransmit times
            self.last_auth_log = 0.0
        else:
            self._manual()

    # ---- SAs ----

    def _sa(self, spi, key_salt, direction, seq=0):
        return SecurityAssociation(spi, key_salt, direction=direction, esn=self.esn,
                                   replay_window=self.replay_window, encap=self.encap, seq=seq)

    def _manual(self):
        o = self.port.options
        try:
            spi_out, spi_in = int(str(o["spi_out"]), 0), int(str(o["spi_in"]), 0)
            sa_out = self._sa(spi_out, parse_xfrm_key(str(o["key_out"])), "out")
            sa_in = self._sa(spi_in, parse_xfrm_key(str(o["key_in"])), "in")
        except (ValueError, TypeError) as e:
            raise ValueError(f"manual SA: {e}") from None
        self.install_inbound(sa_in)
        self.use_outbound(sa_out)

    def install_inbound(self, sa):
        self.inbound[sa.spi] = [sa, None]
        self.vpn.decrypt.set_sa(sa.spi, sa, peer=self.remote_ip)     # only from the peer

    def use_outbound(self, sa):
        """Switch the tunnel's traffic to sa; the previous outbound SA is removed."""
        index = self.vpn.new_index()
        self.vpn.set_outbound(index, sa)
        old = self.out
        self.out = (index, sa)
        self.port.sa_index = index
        self.vpn.sw.each("vxlan-encap").set_sa(self.port.sw_if_index, index)
        if old:
            self.vpn.encrypt.remove_outbound(old[0])

    def retire_inbound(self, keep_spi, now):
        """Every inbound SA but keep_spi goes away after the grace period."""
        for spi, entry in self.inbound.items():
            if spi != keep_spi and entry[1] is None:
                entry[1] = now + OLD_SA_GRACE

    def close(self):
        if self.ike:
            self.ike.close()
        for spi in list(self.inbound):
            self.vpn.decrypt.remove_sa(spi)
        self.inbound.clear()
        if self.out:
            self.vpn.encrypt.remove_outbound(self.out[0])
            self.out = None
        self.vpn.sw.each("vxlan-encap").set_sa(self.port.sw_if_index, 0)

    # ---- handshake ----

    def _send(self, payload, sport=NAT_T_PORT, dport=NAT_T_PORT):
        uplink = self.port.uplink
        if uplink is None:
            return False
        sw = self.vpn.sw
        nh = sw.next_hop(uplink, self.remote_ip)
        entry = sw.arp.neighbours.get((uplink.sw_if_index, nh)) if nh else None
        if entry is None:
            return False             # ARP is resolving it; the retransmit timer tries again
        frame = entry[0] + uplink.mac + b"\x08\x00" + _ip4_udp(self.local_ip, self.remote_ip, payload, sport, dport)
        return sw.send_frame(uplink, frame)

    def _new_spi(self):
        while True:
            spi = struct.unpack("!I", os.urandom(4))[0]
            if spi >= 256 and spi not in self.vpn.decrypt.sas:
                return spi

    def initiate(self, now):
        priv = X25519PrivateKey.generate()
        ts = max(time.time_ns(), self.vpn.last_sent_ts + 1)
        spi = self.vpn.init_spi(ts)                     # random-looking, but ours to recognise
        while spi < 256 or spi in self.vpn.decrypt.sas:
            ts += 1
            spi = self.vpn.init_spi(ts)
        self.vpn.last_sent_ts = ts
        body = _header(INIT, self.vni) + struct.pack("!I", spi) + _pub(priv) + struct.pack("!Q", ts)
        msg = body + _mac(self.k_auth, body)
        self.pending = {"priv": priv, "spi": spi, "msg": msg, "sent": now}
        if not self._send(msg):
            self.pending["sent"] = float("-inf")        # next hop unresolved: retry next tick

    def _derive(self, shared, init_msg, resp_body):
        okm = _hkdf(shared, self.k_auth, b"fastpath-vpn-v1 keys" + init_msg + resp_body, 104)
        return okm[:36], okm[36:72], okm[72:]

    def _drop(self, what):
        """A handshake message refused: counted here and in `show errors`."""
        self.counters[what] += 1
        self.vpn.handshake.count(what)

    def on_message(self, payload, now):
        if len(payload) < 12 or payload[5] != VERSION:
            self._drop("bad_message")
            return
        kind = payload[4]
        if kind == INIT and len(payload) == INIT_LEN:
            self.on_init(payload, now)
        elif kind == RESP and len(payload) == RESP_LEN:
            self.on_resp(payload, now)
        elif kind == CONFIRM and len(payload) == CONFIRM_LEN:
            self.on_confirm(payload, now)
        else:
            self._drop("bad_message")

    def _auth_failed(self, now, what):
        self._drop("auth_failed")
        if now - self.last_auth_log > 10:
            self.last_auth_log = now
            log.warning("%s: %s from %s failed authentication (PSK mismatch?); no SA",
                        self.port.name, what, self.remote_ip)

    def on_init(self, msg, now):
        if not hmac.compare_digest(_mac(self.k_auth, msg[:56]), msg[56:72]):
            return self._auth_failed(now, "handshake INIT")
        ts = struct.unpack("!Q", msg[48:56])[0]
        peer_spi = struct.unpack("!I", msg[12:16])[0]
        if peer_spi == self.vpn.init_spi(ts):          # our own INIT, reflected back to us
            return self._drop("replayed")
        if self.responded and self.responded["init"] == msg:
            if now - self.responded.get("resent", float("-inf")) < RETRANSMIT / 2:
                return self._drop("replayed")           # a copy, not the peer's retransmit
            self.responded["resent"] = now
            self._send(self.responded["resp"])          # our RESP was lost: same answer
            return
        if ts <= self.last_ts:
            self._drop("replayed")
            return
        if self.pending and ipaddress.IPv4Address(self.local_ip) < ipaddress.IPv4Address(self.remote_ip):
            self.last_ts = ts                           # seen: a copy of it later is a replay
            return                                      # collision: we stay initiator
        priv = X25519PrivateKey.generate()
        shared = _exchange(priv, msg[16:48])
        if shared is None or peer_spi < 256:            # checked before anything changes
            self._drop("bad_message")
            return
        self.last_ts = ts
        self.pending = None
        spi = self._new_spi()
        body = _header(RESP, self.vni) + struct.pack("!II", spi, peer_spi) + _pub(priv)
        resp = body + _mac(self.k_auth, msg + body)
        k_i2r, k_r2i, k_confirm = self._derive(shared, msg, body)
        sa_in = self._sa(spi, k_i2r, "in")
        self.install_inbound(sa_in)                     # the initiator may send at once
        if self.responded:                              # an unconfirmed earlier answer
            self.vpn.decrypt.remove_sa(self.responded["sa_in"].spi)
            self.inbound.pop(self.responded["sa_in"].spi, None)
        self.responded = {"init": msg, "resp": resp, "sa_in": sa_in, "at": now,
                          "sa_out": self._sa(peer_spi, k_r2i, "out"), "k_confirm": k_confirm}
        self.counters["handshakes"] += 1
        self._send(resp)

    def on_resp(self, msg, now):
        p = self.pending
        if p is None or struct.unpack("!I", msg[16:20])[0] != p["spi"]:
            self._drop("replayed")
            return
        if not hmac.compare_digest(_mac(self.k_auth, p["msg"] + msg[:52]), msg[52:68]):
            return self._auth_failed(now, "handshake RESP")
        shared = _exchange(p["priv"], msg[20:52])
        peer_spi = struct.unpack("!I", msg[12:16])[0]
        if shared is None or peer_spi < 256:            # checked before anything changes
            self._drop("bad_message")
            return
        k_i2r, k_r2i, k_confirm = self._derive(shared, p["msg"], msg[:52])
        self.pending = None
        rekey = self.out is not None
        self.install_inbound(self._sa(p["spi"], k_r2i, "in"))
        self.use_outbound(self._sa(peer_spi, k_i2r, "out"))
        # the old inbound SA stays until the peer's traffic arrives on the new one (tick)
        self.initiator, self.established_at = True, now
        self.new_inbound = p["spi"]
        body = _header(CONFIRM, self.vni) + struct.pack("!I", peer_spi)
        self.confirm_msg = body + _mac(k_confirm, body)
        self.confirms = [now + 0.5, now + 1.0]
        self._send(self.confirm_msg)
        self.counters["rekeys" if rekey else "handshakes"] += 1
        log.info("%s: IPsec SAs up with %s (in 0x%08x, out 0x%08x)%s", self.port.name,
                 self.remote_ip, p["spi"], peer_spi, " (rekey)" if rekey else "")

    def on_confirm(self, msg, now):
        r = self.responded
        if r is None or struct.unpack("!I", msg[12:16])[0] != r["sa_in"].spi \
                or not hmac.compare_digest(_mac(r["k_confirm"], msg[:16]), msg[16:32]):
            self._drop("replayed")
            return
        self._responder_switch(now)

    def _responder_switch(self, now):
        r, self.responded = self.responded, None
        rekey = self.out is not None
        self.use_outbound(r["sa_out"])
        self.retire_inbound(r["sa_in"].spi, now)
        self.initiator, self.established_at = False, now
        log.info("%s: IPsec SAs up with %s (in 0x%08x, out 0x%08x)%s", self.port.name,
                 self.remote_ip, r["sa_in"].spi, r["sa_out"].spi, " (rekey)" if rekey else "")

    def tick(self, now):
        """Retransmits, switching on first traffic, rekeys, retiring old SAs."""
        if self.ike:
            return self.ike.tick(now)
        if self.psk is None:
            return
        if self.responded and self.responded["sa_in"].stats()["packets"] > 0:
            self._responder_switch(now)                 # the initiator already sends on it
        elif self.responded and self.out is None and now - self.responded["at"] >= UNCONFIRMED:
            # an INIT older than we can tell (we just started) replayed to us: its initiator
            # is not there; forget the answer and initiate ourselves (below)
            spi = self.responded["sa_in"].spi
            self.vpn.decrypt.remove_sa(spi)
            self.inbound.pop(spi, None)
            self.responded = None
        if self.initiator and getattr(self, "new_inbound", None) in self.inbound:
            if self.inbound[self.new_inbound][0].stats()["packets"] > 0:
                self.retire_inbound(self.new_inbound, now)
                self.new_inbound = None
        for t in list(self.confirms):
            if now >= t:
                self.confirms.remove(t)
                self._send(self.confirm_msg)
        if self.pending:
            if now - self.pending["sent"] >= RETRANSMIT:
                self.pending["sent"] = now if self._send(self.pending["msg"]) else float("-inf")
        elif self.out is None and self.responded is None:
            self.initiate(now)
        elif self.out is not None and self.initiator and self._rekey_due(now):
            self.initiate(now)
        for spi, (sa, retire_at) in list(self.inbound.items()):
            if retire_at is not None and now >= retire_at:
                self.vpn.decrypt.remove_sa(spi)
                del self.inbound[spi]

    def _rekey_due(self, now):
        s = self.out[1].stats()
        return (now - self.established_at >= self.rekey_time
                or (self.rekey_packets and s["packets"] >= self.rekey_packets)
                or (self.rekey_bytes and s["bytes"] >= self.rekey_bytes)
                or s["seq"] >= SEQ_REKEY)

    def show(self):
        rows = []
        if self.out:
            rows.append({"tunnel": self.port.name, "remote_ip": self.remote_ip, **self.out[1].stats()})
        for spi, (sa, retire_at) in self.inbound.items():
            rows.append({"tunnel": self.port.name, "remote_ip": self.remote_ip,
                         "retiring": retire_at is not None, **sa.stats()})
        return rows


class Vpn:
    """The IPsec tunnels of one switch."""

    def __init__(self, sw):
        self.sw = sw
        self.encrypt = sw.each("esp-encrypt")
        self.decrypt = sw.graph["esp-decrypt"]    # inbound ESP arrives on worker 0 (the uplink's)
        self.handshake = sw.graph["handshake-input"]
        self.tunnels = {}            # sw_if_index -> Tunnel
        self.next_index = 1
        self.last_sent_ts = 0
        self.init_key = os.urandom(32)   # our INITs' SPIs: init_spi(timestamp)
        sw.graph.add_timer(0.05, self.tick)
        from fastpath.crypto import aesgcm
        log.info("ESP AES-GCM engine: %s", aesgcm.IPSEC_MB or
                 f"OpenSSL (intel-ipsec-mb cannot run: {aesgcm.IPSEC_MB_UNUSABLE})")

    def set_outbound(self, index, sa):
        """Every worker encrypts with sa: worker 0 with sa itself, the others with copies
        that have their own cipher context and draw from sa's sequence counter."""
        for w, node in enumerate(self.encrypt.nodes):
            node.set_outbound(index, sa if w == 0 else sa.worker_copy())

    def init_spi(self, ts):
        """The SPI our INIT with timestamp ts offers: an INIT that carries it is our own,
        reflected back to us (the peer's share no key with us but the PSK)."""
        mac = hmac.new(self.init_key, struct.pack("!Q", ts), hashlib.sha256).digest()
        return struct.unpack("!I", mac[:4])[0]

    def new_index(self):
        self.next_index += 1
        return self.next_index - 1

    def tick(self, now=None):
        now = time.monotonic() if now is None else now
        q = self.handshake.queue
        while q:
            rx_if, frame = q.popleft()
            self._dispatch(rx_if, frame, now)
        for t in list(self.tunnels.values()):
            t.tick(now)

    def _dispatch(self, rx_if, frame, now):
        # Ethernet + IPv4 (ip4-input validated it) + UDP 500, or 4500 + marker, + payload
        ihl = (frame[14] & 0xf) * 4
        src = str(ipaddress.IPv4Address(frame[26:30]))
        dst = str(ipaddress.IPv4Address(frame[30:34]))
        sport, dport, udp_len = struct.unpack("!HHH", frame[14 + ihl:14 + ihl + 6])
        payload = frame[14 + ihl + 8:14 + ihl + udp_len]
        ike = next((t.ike for t in self.tunnels.values()
                    if t.ike and t.remote_ip == src and t.local_ip == dst), None)
        if dport == 500 or (ike and payload[:4] == NON_ESP_MARKER):
            if ike is None:
                self.handshake.count("no_tunnel")
                log.debug("IKE from %s: no IKE tunnel", src)
            else:
                ike.receive(payload if dport == 500 else payload[4:], dport, sport, now)
            return
        vni = struct.unpack("!I", payload[8:12])[0] if len(payload) >= 12 else None
        for t in self.tunnels.values():
            if t.psk is not None and t.remote_ip == src and t.vni == vni:
                t.on_message(payload, now)
                return
        self.handshake.count("no_tunnel")
        log.debug("handshake from %s VNI %s: no such tunnel", src, vni)

    def show(self):
        return [row for t in self.tunnels.values() for row in t.show()]

    def show_ike(self, now=None):
        now = self.sw.clock() if now is None else now
        return [row for t in self.tunnels.values() if t.ike for row in t.ike.show(now)]


def start(sw, port):
    if getattr(sw, "vpn", None) is None:
        sw.vpn = Vpn(sw)
    try:
        sw.vpn.tunnels[port.sw_if_index] = Tunnel(sw.vpn, port)
    except ValueError as e:
        from fastpath.switch import ConfigError
        raise ConfigError(f"{port.name}: {e}") from None


def stop(sw, port):
    t = sw.vpn.tunnels.pop(port.sw_if_index, None) if getattr(sw, "vpn", None) else None
    if t:
        t.close()
