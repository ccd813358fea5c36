"""Fuzz the VPN key exchange (docs/vpn-handshake.md): messages to fastpath.vpn.Tunnel.on_message,
directly and through the dataplane (uplink -> ip4-input -> ip4-udp-input -> handshake-input
-> Vpn.tick), interleaved with the tunnel's timer.

    python fuzz/fuzz_handshake.py -atheris_runs=1000000 [CORPUS_DIR]

The harness plays the peer gateway, with its own implementation of the protocol from the
document (it knows the PSK), so it can send authentic messages as well as forged ones:
INIT (any SPI, valid, low-order or garbage X25519 keys, any timestamp, right or wrong VNI,
version, length, MAC), RESP to the site's own INIT, CONFIRM of a session the site answered,
replays of anything it sent before, and raw bytes. Every input starts from a fresh tunnel.
Invariants, after every message and tick:
  - nothing raises (an exception here would stop the daemon's timer);
  - the tunnel's SA bookkeeping matches the dataplane: each inbound SA it holds is the one
    esp-decrypt has for that SPI and no other SPI is installed; its outbound SA is the one
    esp-encrypt has at its index, the port's sa_index and vxlan-encap agree;
  - a message the site could not authenticate (bad MAC, random bytes, a replay) changes no
    SA and no handshake state;
  - what the site sends authenticates under the PSK (RESP, INIT) or the session (CONFIRM),
    and after a completed exchange both sides hold the same SPIs.
"""
import hashlib
import hmac
import struct

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fuzzcommon import Clock, Reader, atheris_main, egress, feature, inject, quiet

SITE, PEER = "192.0.2.2", "192.0.2.1"
SITE_MAC, PEER_MAC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
PSK = "fuzz pre-shared key"
VNI = 5000
INIT, RESP, CONFIRM = 1, 2, 3
TUNNEL = {"options:remote_ip": PEER, "options:local_ip": SITE, "options:key": VNI, "options:psk": PSK,
          "options:rekey_packets": 3}
LOW_ORDER = [bytes(32), (1).to_bytes(32, "little"),
             bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
             bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
             ((1 << 255) - 19 - 1).to_bytes(32, "little"), ((1 << 255) - 19).to_bytes(32, "little"),
             ((1 << 255) - 19 + 1).to_bytes(32, "little"), b"\xff" * 32]
_KEYS = [X25519PrivateKey.from_private_bytes(hashlib.sha256(b"peer %d" % k).digest()) for k in range(4)]


def hkdf(ikm, salt, info, n):
    return HKDF(algorithm=SHA256(), length=n, salt=salt, info=info).derive(ikm)


def mac(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()[:16]


def pub(priv):
    return priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


K_AUTH = hkdf(PSK.encode(), b"fastpath-vpn-v1 auth", struct.pack("!I", VNI), 32)


def header(kind, vni=VNI, version=1, reserved=0):
    return struct.pack("!IBBHI", 0, kind, version, reserved, vni)


def udp_frame(payload, src=PEER, dport=4500):
    from fastpath.vpn import _ip4_udp
    return SITE_MAC + PEER_MAC + b"\x08\x00" + _ip4_udp(src, SITE, payload, dport=dport)


def build():
    from vpnutil import make_site
    from fastpath.nodes.arp import arp_frame
    sw = make_site(SITE, PEER, clock=Clock(), tunnel_options=TUNNEL, n_buffers=256)
    inject(sw, "up", [arp_frame(2, PEER_MAC, PEER, SITE_MAC, SITE)])
    sw.graph.run_until_idle()
    egress(sw)
    return sw


class Peer:
    """The other gateway, from the protocol document."""

    def __init__(self):
        self.inits = []                # authentic INITs we sent: (private key or None, msg, spi)
        self.foreign_resp = False
        self.ts = 10 ** 18
        self.sessions = []             # RESPs we sent as responder: what each would agree on
        self.initiated = None          # after the site's RESP to our INIT: k_confirm, SPIs
        self.sent = []                 # every message we sent (for replays)
        self.offered = set()           # SPIs we offered in authentic INIT/RESP messages

    def init(self, r):
        spi = r.pick((0x5000, 0x5001, 0, 255, 0xffffffff, r.u32()))
        choice = r.u8() % 8
        priv = _KEYS[r.u8() % 4]
        key = pub(priv) if choice < 5 else r.pick(LOW_ORDER) if choice < 7 else r.bytes(32).ljust(32, b"\0")
        ts_kind = r.u8() % 8
        self.ts = (self.ts + 1 if ts_kind < 5 else self.ts if ts_kind == 5 else
                   r.pick((0, 1, (1 << 64) - 1, self.ts - 1))) & ((1 << 64) - 1)
        body = header(INIT, *self._hdr(r)) + struct.pack("!I", spi) + key + struct.pack("!Q", self.ts)
        good = r.u8() % 4 != 0
        msg = body + (mac(K_AUTH, body) if good else r.bytes(16).ljust(16, b"\0"))
        if good:
            self.inits.append((priv if choice < 5 else None, msg, spi))
            self.offered.add(spi)
        return msg, good

    def _hdr(self, r):
        if r.u8() % 8:
            return ()
        return (r.pick((VNI, VNI + 1, 0)), r.pick((1, 1, 0, 2)), r.pick((0, 0, 1)))

    def resp(self, r, site_init):
        """Answer the site's INIT (or garbage if we have none)."""
        if site_init is None:
            site_init = header(INIT) + bytes(60)
        spi = r.pick((0x6000, 0x6001, 0, r.u32()))
        echo = site_init[12:16] if r.u8() % 4 else r.bytes(4).ljust(4, b"\0")
        choice = r.u8() % 8
        priv = _KEYS[r.u8() % 4]
        key = pub(priv) if choice < 5 else r.pick(LOW_ORDER) if choice < 7 else r.bytes(32).ljust(32, b"\0")
        body = header(RESP, *self._hdr(r)) + struct.pack("!I", spi) + echo + key
        good = r.u8() % 4 != 0
        msg = body + (mac(K_AUTH, site_init + body) if good else r.bytes(16).ljust(16, b"\0"))
        if good:
            self.offered.add(spi)
        if good and choice >= 5:
            self.foreign_resp = True            # the site may agree on keys we cannot compute
        if good and choice < 5 and site_init[16:48] not in LOW_ORDER:
            shared = priv.exchange(X25519PublicKey.from_public_bytes(site_init[16:48]))
            okm = hkdf(shared, K_AUTH, b"fastpath-vpn-v1 keys" + site_init + body, 104)
            self.sessions.append({"out_spi": struct.unpack("!I", echo)[0], "in_spi": spi,
                                  "k_confirm": okm[72:], "site_init": site_init})
        return msg, good

    def on_site_resp(self, msg):
        """The site answered our INIT: check it and derive the session."""
        ok = [(priv, init, spi) for priv, init, spi in self.inits
              if msg[16:20] == struct.pack("!I", spi) and hmac.compare_digest(mac(K_AUTH, init + msg[:52]), msg[52:68])]
        assert ok, "the site's RESP answers no INIT we sent, or does not authenticate"
        priv, init, spi = ok[-1]
        if priv is None:
            return
        shared = priv.exchange(X25519PublicKey.from_public_bytes(msg[20:52]))
        okm = hkdf(shared, K_AUTH, b"fastpath-vpn-v1 keys" + init + msg[:52], 104)
        self.initiated = {"k_confirm": okm[72:], "site_spi": struct.unpack("!I", msg[12:16])[0], "our_spi": spi}

    def confirm(self, r):
        spi = self.initiated["site_spi"] if self.initiated and r.u8() % 4 else r.u32()
        body = header(CONFIRM, *self._hdr(r)) + struct.pack("!I", spi)
        k = self.initiated["k_confirm"] if self.initiated else bytes(32)
        good = r.u8() % 4 != 0
        msg = body + (mac(k, body) if good else r.bytes(16).ljust(16, b"\0"))
        return msg, good and self.initiated is not None


# ---------------------------------------------------------------- invariants

def consistency(sw):
    dec, enc = sw.graph["esp-decrypt"], sw.graph["esp-encrypt"]
    spis = {}
    for t in sw.vpn.tunnels.values():
        for spi, (sa, _) in t.inbound.items():
            assert dec.sas.get(spi) is sa, f"inbound SA 0x{spi:08x} not the one esp-decrypt has"
            spis[spi] = sa
        if t.out is not None:
            index, sa = t.out
            assert enc.outbound.get(index) is sa, "outbound SA not installed at its index"
            assert t.port.sa_index == index, "port sa_index disagrees"
    assert set(dec.sas) == set(spis), f"esp-decrypt has SAs no tunnel owns: {set(dec.sas) - set(spis)}"
    owned = {t.out[0] for t in sw.vpn.tunnels.values() if t.out is not None}
    assert set(enc.outbound) == owned, "esp-encrypt has SAs no tunnel uses"


def snapshot(t):
    return (tuple(sorted((spi, id(sa), r) for spi, (sa, r) in t.inbound.items())),
            None if t.out is None else (t.out[0], id(t.out[1])),
            id(t.pending), id(t.responded), t.last_ts)


def site_messages(sw):
    """The handshake messages the site sent on the uplink."""
    out = []
    for f in egress(sw).get("up", []):
        if len(f) >= 14 + 20 + 8 + 12 and f[12:14] == b"\x08\x00" and f[23] == 17:
            hl = (f[14] & 0xf) * 4
            p = f[14 + hl + 8:]
            if struct.unpack("!H", f[14 + hl + 2:14 + hl + 4])[0] == 4500 and p[:4] == b"\0\0\0\0":
                out.append(p)
    return out


_sw = None


def _fresh():
    global _sw
    if _sw is None:
        _sw = build()
    sw = _sw
    # a fresh tunnel: the old one's SAs removed, a new handshake state on the same port
    from fastpath import vpn
    port = sw.ports["vpn0"]
    old = sw.vpn.tunnels.pop(port.sw_if_index, None)
    if old is not None:
        old.close()
    sw.vpn.tunnels[port.sw_if_index] = vpn.Tunnel(sw.vpn, port)
    sw.vpn.handshake.queue.clear()
    egress(sw)
    return sw


def one_input(data):
    with quiet("fastpath.vpn"):
        _one_input(data)


def _one_input(data):
    r = Reader(data)
    sw = _fresh()
    t = sw.vpn.tunnels[sw.ports["vpn0"].sw_if_index]
    peer = Peer()
    now = 1000.0
    site_init = None
    for _ in range(1 + r.u8() % 8):
        step = r.u8() % 10
        before = snapshot(t)
        authentic = True
        feature(step)
        if step == 0:
            msg, authentic = r.blob(80), False
            t.on_message(msg, now)
        elif step in (1, 2):
            msg, authentic = peer.init(r)
            t.on_message(msg, now)
        elif step == 3:
            msg, authentic = peer.resp(r, site_init)
            t.on_message(msg, now)
        elif step == 4:
            msg, authentic = peer.confirm(r)
            t.on_message(msg, now)
        elif step == 5:
            now += r.pick((0.05, 0.5, 1.0, 1.0, 30.0, 61.0, 3601.0))
            t.tick(now)
        elif step == 6:
            if t.pending is None:
                t.initiate(now)
        elif step == 7 and peer.sent:
            msg, authentic = r.pick(peer.sent), False          # a replay
            t.on_message(msg, now)
        elif step == 8:
            # through the dataplane: UDP 4500 with the non-ESP marker (or a mangled one)
            msg = peer.init(r)[0] if r.bool() else r.blob(80)
            frame = udp_frame(msg, src=PEER if r.u8() % 4 else "192.0.2.9")
            if r.chance(4):
                frame = frame[:r.int_in(0, len(frame))]
            inject(sw, "up", [frame])
            sw.graph.run_until_idle()
            sw.vpn.tick(now)
            authentic = None                                   # not checked: ARP, ticks
        elif step == 9:
            t.on_message(header(r.u8() % 5, *peer._hdr(r)) + r.blob(80), now)
            authentic = False
        if step in (1, 2, 3, 4) and authentic:
            peer.sent.append(msg)
        sw.graph.run_until_idle()
        assert sw.graph.pool.in_flight == 0, "buffers leaked"
        consistency(sw)
        if authentic is False:
            assert snapshot(t) == before, f"step {step}: an unauthenticated message changed the tunnel"
        for m in site_messages(sw):
            if m[4] == INIT and len(m) == 72:
                assert hmac.compare_digest(mac(K_AUTH, m[:56]), m[56:72]), "site's INIT does not authenticate"
                site_init = m
            elif m[4] == RESP and len(m) == 68:
                peer.on_site_resp(m)
            elif m[4] == CONFIRM and len(m) == 32:
                ok = [s for s in peer.sessions if hmac.compare_digest(mac(s["k_confirm"], m[:16]), m[16:32])]
                assert ok or peer.foreign_resp, "site's CONFIRM does not authenticate"
                assert not ok or m[12:16] == struct.pack("!I", ok[0]["in_spi"]), "CONFIRM names another SPI"
        if t.out is not None:
            assert t.out[1].spi in peer.offered, f"the site sends on SPI 0x{t.out[1].spi:08x} the peer never offered"
        feature(100 + 10 * step + (t.out is not None) + 2 * (t.pending is not None) + 4 * (t.responded is not None))
    sw.graph.pool.check_accounting(0)
    for k, v in t.counters.items():
        assert v >= 0


def seeds():
    return [bytes([3, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 4, 0, 1, 1, 1]),
            bytes([2, 6, 3, 0, 1, 0, 0, 1, 1]), bytes([0, 0, 72]) + header(INIT) + bytes(60)]


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
