"""Fuzz IKEv2 (fastpath.ike): the parser and the responder's (and initiator's) state
machine of one site's IKE tunnel, directly (IkeTunnel.receive) and through the dataplane
(uplink -> ip4-input -> ip4-udp-input -> ike-input -> Vpn.tick), interleaved with
the tunnel's timer.

    python fuzz/fuzz_ike.py -atheris_runs=1000000 -max_len=600 -len_control=0 [CORPUS_DIR]

The peer gateway is an IkeSa of fastpath.ike run by the harness in memory (it knows the
PSK), so the site sees authentic exchanges -- IKE_SA_INIT and IKE_AUTH, CHILD_SA and IKE
SA rekeys, Deletes, liveness checks -- and, between them, authentic requests whose
payload chain is fuzz bytes, IKE_SA_INIT requests built from fuzzed fields (proposals,
KE, nonce, cookies), replays and mutations of everything said so far, raw bytes, and
frames on UDP 500/4500 from the peer's or another address. Every input starts from a
fresh tunnel, with a cookie threshold of 2 so that cookies engage.
Invariants, after every step:
  - nothing raises (an exception here would stop the daemon's timer);
  - the tunnel's SA bookkeeping matches the dataplane: every inbound SA it holds is the
    one esp-decrypt has, no other is installed, its outbound SA is esp-encrypt's;
  - a message that is not authentic (raw, mutated, replayed, from fields, from another
    address) changes no established IKE SA and none of their CHILD_SAs;
  - what the site sends parses as IKEv2 and, when protected, opens under the keys the
    peer shares with it; half-open SAs never exceed the cookie module's limit;
  - buffers all come back.
"""
import ipaddress
import os
import struct

from fuzzcommon import Clock, Reader, atheris_main, egress, feature, inject, quiet

SITE, PEER = "192.0.2.2", "192.0.2.1"
SITE_MAC, PEER_MAC = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
PSK = "fuzz pre-shared key"
VNI = 5000
TUNNEL = {"options:remote_ip": PEER, "options:local_ip": SITE, "options:key": VNI, "options:psk": PSK,
          "options:ike": "true", "options:ike_initiate": "false", "options:cookie_threshold": 2,
          "options:dpd_interval": 5, "options:rekey_time": 40}


def build():
    from vpnutil import make_site
    from fastpath.nodes.arp import arp_frame
    sw = make_site(SITE, PEER, clock=Clock(), tunnel_options=TUNNEL, n_buffers=256)
    inject(sw, "up", [arp_frame(2, PEER_MAC, PEER, SITE_MAC, SITE)])
    sw.graph.run_until_idle()
    egress(sw)
    return sw


def udp_frame(payload, src=PEER, sport=500, dport=500):
    from fastpath.vpn import _ip4_udp
    return SITE_MAC + PEER_MAC + b"\x08\x00" + _ip4_udp(src, SITE, payload, sport=sport, dport=dport)


class PeerHost:
    """The host of the peer's IkeSa objects: everything in memory."""

    def __init__(self):
        self.out = []                  # messages for the site, in order
        self.sas = []
        self.counts = {}

    def send(self, sa, data):
        self.out.append(data)

    def send_reply(self, data, local_port, remote_port):
        self.out.append(data)

    def new_spi(self):
        return 0x1000 + struct.unpack("!I", os.urandom(4))[0] % 0xfffff000

    def first_contact(self, sa):
        return True

    def established(self, sa):
        pass

    def child_up(self, sa, child):
        pass

    def child_rekeyed(self, sa, old, new, switch, now):
        pass

    def child_down(self, sa, child, now=None):
        pass

    def ike_rekeyed(self, old, new):
        self.sas.append(new)

    def rx_packets(self, sa):
        return 0

    def ike_down(self, sa):
        if sa in self.sas:
            self.sas.remove(sa)

    def count(self, reason, text):
        self.counts[reason] = self.counts.get(reason, 0) + 1


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
        if t.ike:
            for spi in t.ike.child_sas:
                assert spi in t.inbound, f"CHILD_SA 0x{spi:08x} without its inbound SA"
    assert set(dec.sas) == set(spis), f"esp-decrypt has SAs no tunnel owns: {set(dec.sas) - set(spis)}"


def snapshot(ike):
    """The established IKE SAs and their CHILD_SAs: what no forgery may touch."""
    from fastpath.ike.sa import ESTABLISHED
    return [(id(s), s.spi_i, s.spi_r, s.my_next_id, s.peer_next_id, id(s.keys), s.last_response,
             tuple((ch.spi_in, ch.spi_out, ch.key_in, ch.key_out) for ch in s.children))
            for s in ike.sas if s.state == ESTABLISHED]


def site_messages(sw):
    """The IKE messages the site sent on the uplink (the non-ESP marker taken off)."""
    out = []
    for f in egress(sw).get("up", []):
        if len(f) >= 42 and f[12:14] == b"\x08\x00" and f[23] == 17:
            hl = (f[14] & 0xf) * 4
            sport = struct.unpack("!H", f[14 + hl:14 + hl + 2])[0]
            p = f[14 + hl + 8:]
            if sport == 500:
                out.append(p)
            elif sport == 4500 and p[:4] == bytes(4):
                out.append(p[4:])
    return out


# ---------------------------------------------------------------- building messages

def fuzzed_payloads(r):
    """A payload chain: known types with fuzzed bodies, unknown ones, critical bits, and
    now and then a raw chain -> (first type, bytes)."""
    from fastpath.ike import message as m
    if r.chance(6):
        return r.pick((m.PL_NOTIFY, m.PL_SA, m.PL_DELETE, r.u8())), r.blob(120)
    payloads = []
    for _ in range(r.int_in(0, 4)):
        kind = r.u8() % 12
        if kind == 0:
            body = m.encode_delete(r.pick((m.PROTO_ESP, m.PROTO_IKE, 0, 9)),
                                   [r.bytes(4).ljust(4, b"\0") for _ in range(r.int_in(0, 2))])
            payloads.append(m.Payload(m.PL_DELETE, body))
        elif kind == 1:
            payloads.append(m.notify_payload(r.pick((m.N_REKEY_SA, m.N_AUTHENTICATION_FAILED, m.N_INITIAL_CONTACT,
                                                     m.N_USE_TRANSPORT_MODE, m.N_COOKIE, r.u16())),
                                             r.blob(8), protocol=r.pick((0, m.PROTO_ESP)),
                                             spi=r.bytes(r.pick((0, 4))).ljust(0, b"\0")))
        elif kind == 2:
            payloads.append(m.Payload(m.PL_SA, fuzzed_sa(r)))
        elif kind == 3:
            payloads.append(m.Payload(m.PL_NONCE, r.bytes(r.pick((32, 16, 15, 0, 257)))))
        elif kind == 4:
            payloads.append(m.Payload(m.PL_KE, struct.pack("!HH", r.pick((19, 20, 31, 14, 0, 5)), 0) + r.blob(100)))
        elif kind in (5, 6):
            ts = [m.TrafficSelector(r.pick((17, 0, 6)), r.pick((4789, 0)), r.pick((4789, 65535)),
                                    r.pick((SITE, PEER, "0.0.0.0")), r.pick((SITE, PEER, "255.255.255.255")))
                  for _ in range(r.int_in(0, 2))]
            payloads.append(m.Payload(m.PL_TSI if kind == 5 else m.PL_TSR, m.encode_ts(ts)))
        elif kind == 7:
            payloads.append(m.Payload(r.pick((m.PL_IDI, m.PL_AUTH, m.PL_CERT, m.PL_CP, m.PL_EAP)), r.blob(40)))
        else:
            payloads.append(m.Payload(r.u8(), r.blob(40), critical=r.bool()))
    return m.encode_payloads(payloads)


def fuzzed_sa(r):
    from fastpath.ike import message as m, proposals as pr
    if r.chance(4):
        return r.blob(80)
    props = []
    for n in range(r.int_in(1, 2)):
        protocol = r.pick((m.PROTO_ESP, m.PROTO_IKE, m.PROTO_AH, 0))
        spi = r.bytes(r.pick((4, 8, 0, 3)))
        if r.bool():
            p = (pr.esp_proposal((r.pick((128, 256, 192)),), (r.bool(),), spi.ljust(4, b"\0")) if protocol == m.PROTO_ESP
                 else pr.ike_proposal((r.pick((128, 256)),), (r.pick((5, 6, 7, 2)),), (r.pick((19, 20, 31, 2)),), spi))
            p.num = n + 1
        else:
            p = m.Proposal(n + 1, protocol, spi, [m.Transform(r.int_in(0, 6), r.u16(), r.pick((None, 128, 256, 0)))
                                                  for _ in range(r.int_in(0, 5))])
        props.append(p)
    return m.encode_sa(props)


def init_from_fields(r, cookie):
    from fastpath.ike import crypto, message as m, proposals as pr
    group = r.pick((31, 31, 19, 20, 14, 7))
    ke = r.pick(("good", "good", "zero", "short", "junk"))
    if ke == "good" and (group in (19, 20, 31) or (group == 14 and r.chance(8))):
        pub = crypto.DhKey(group).public
    else:
        pub = {"zero": bytes(32), "short": b"\x04" * 3}.get(ke, r.blob(64))
    payloads = []
    if cookie is not None and r.bool():
        payloads.append(m.notify_payload(m.N_COOKIE, cookie if r.u8() % 4 else r.blob(20)))
    sa = fuzzed_sa(r) if r.chance(3) else m.encode_sa([pr.ike_proposal(
        (r.pick((128, 256)),), (r.pick((5, 6, 7)),), (group,))])
    payloads += [m.Payload(m.PL_SA, sa), m.Payload(m.PL_KE, m.encode_ke(group, pub)),
                 m.Payload(m.PL_NONCE, r.bytes(r.pick((32, 32, 16, 8, 300))))]
    if r.chance(3):
        payloads.insert(r.int_in(0, len(payloads)), m.Payload(r.u8(), r.blob(16), critical=r.bool()))
    spi = r.pick((b"I" * 8, bytes(8), r.bytes(8).ljust(8, b"\1")))
    flags = r.pick((m.F_INITIATOR, m.F_INITIATOR, m.F_RESPONSE, 0))
    return m.encode(m.Message(spi, bytes(8) if r.u8() % 8 else b"R" * 8, m.IKE_SA_INIT, flags,
                              r.pick((0, 0, 1)), payloads))


_X25519 = []


def good_init(spi, cookie=None):
    """A well-formed IKE_SA_INIT request (one X25519 key for all: the site cannot tell)."""
    from fastpath.ike import crypto, message as m, proposals as pr
    if not _X25519:
        _X25519.append(crypto.DhKey(31).public)
    payloads = [m.Payload(m.PL_SA, m.encode_sa([pr.ike_proposal((128,), (5,), (31,))])),
                m.Payload(m.PL_KE, m.encode_ke(31, _X25519[0])), m.Payload(m.PL_NONCE, spi * 4)]
    if cookie is not None:
        payloads.insert(0, m.notify_payload(m.N_COOKIE, cookie))
    return m.encode(m.Message(spi, bytes(8), m.IKE_SA_INIT, m.F_INITIATOR, 0, payloads))


def mutate(r, data):
    b = bytearray(data)
    for _ in range(r.int_in(1, 4)):
        kind = r.u8() % 4
        if not b:
            break
        if kind == 0:
            b[r.int_in(0, len(b) - 1)] ^= 1 << (r.u8() % 8)
        elif kind == 1:
            b[r.int_in(0, len(b) - 1)] = r.u8()
        elif kind == 2:
            del b[r.int_in(0, len(b) - 1):]
        else:
            at = r.int_in(0, len(b))
            b[at:at] = r.blob(8)
    return bytes(b)


# ---------------------------------------------------------------- one input

_sw = None


def _fresh():
    global _sw
    if _sw is None:
        _sw = build()
    sw = _sw
    from fastpath import vpn
    port = sw.ports["vpn0"]
    old = sw.vpn.tunnels.pop(port.sw_if_index, None)
    if old is not None:
        old.close()
    if r_initiate[0]:
        port.options["ike_initiate"] = "true"
    else:
        port.options["ike_initiate"] = "false"
    sw.vpn.tunnels[port.sw_if_index] = vpn.Tunnel(sw.vpn, port)
    sw.vpn.ike_input.queue.clear()
    sw.graph.run_until_idle()
    egress(sw)
    return sw


r_initiate = [False]


def one_input(data):
    with quiet("fastpath.ike", "fastpath.vpn"):
        _one_input(data)


def _one_input(data):
    from fastpath.ike import cookie as ck, crypto, message as m
    from fastpath.ike.sa import ESTABLISHED, IkeConfig, IkeSa
    r = Reader(data)
    r_initiate[0] = r.chance(4)
    sw = _fresh()
    t = sw.vpn.tunnels[sw.ports["vpn0"].sw_if_index]
    ike = t.ike
    host = PeerHost()
    config = IkeConfig(PEER, SITE, PSK.encode(), groups=(31, 19), dpd_interval=0, rekey_time=0)
    now = 1000.0
    said = []                          # what the peer and the site said, for replays/mutations
    cookie = None

    def to_site(msg, authentic):
        """Deliver msg to the site; a forgery must leave its established SAs alone."""
        before = snapshot(ike)
        ike.receive(msg, 500, 500, now)
        if authentic is False:
            assert snapshot(ike) == before, "a message that is not authentic changed an IKE SA"

    def from_site():
        """Hand what the site said to the peer's SAs (each parses; protected ones open)."""
        nonlocal cookie
        sw.graph.run_until_idle()
        for msg_bytes in site_messages(sw):
            said.append(msg_bytes)
            msg = m.decode(msg_bytes)                          # the site speaks IKEv2
            n = msg.notifies() if msg.payloads and msg.payloads[0].type == m.PL_NOTIFY else []
            if n and n[0].type == m.N_COOKIE:
                cookie = n[0].data
            if msg.exchange == m.IKE_SA_INIT and not msg.is_response and \
                    not any(sa.spi_i == msg.spi_i for sa in host.sas):
                sa = IkeSa.respond_init(config, host, msg_bytes, msg, now, 500, 500)   # the site initiates
                if sa is not None:
                    host.sas.append(sa)
                continue
            for sa in list(host.sas):
                if sa.spi_i == msg.spi_i and (sa.spi_r in (msg.spi_r, bytes(8))):
                    before = host.counts.get("integrity_failed", 0)
                    sa.receive(msg_bytes, msg, now, 500, 500)
                    assert host.counts.get("integrity_failed", 0) == before, "the site's message does not open"
                    break

    def pump(rounds):
        for _ in range(rounds):
            out, host.out[:] = list(host.out), []
            for msg_bytes in out:
                said.append(msg_bytes)
                to_site(msg_bytes, True)
            from_site()
            if not host.out:
                break

    for _ in range(1 + r.u8() % 12):
        step = r.u8() % 12
        feature(step)
        if step == 0:
            to_site(r.blob(200), False)
        elif step == 1:
            sa = IkeSa(config, host, True, now)
            config.groups = (r.pick((31, 31, 19, 20)), 31, 19)
            host.sas.append(sa)
            sa.start(now)
            pump(r.int_in(1, 6))
        elif step == 2:
            pump(r.int_in(1, 6))
        elif step == 3 and said:
            msg = r.pick(said)
            mutated = mutate(r, msg)
            to_site(mutated, None if mutated == msg else False)   # unchanged: a retransmission
            from_site()
        elif step == 4 and said:
            to_site(r.pick(said), False)                        # every one was delivered already
            from_site()
        elif step == 5:
            up = [s for s in host.sas if s.state == ESTABLISHED]
            if up:
                sa = r.pick(up)
                first, chain = fuzzed_payloads(r)
                mid = r.pick((sa.my_next_id, sa.my_next_id, sa.my_next_id - 1, r.u32()))
                exchange = r.pick((m.INFORMATIONAL, m.CREATE_CHILD_SA, m.IKE_AUTH, m.IKE_SA_INIT, r.u8()))
                response = r.chance(5)
                msg = _seal_raw(sa, exchange, mid, first, chain, response, m, crypto)
                if mid == sa.my_next_id and not response:
                    sa.my_next_id += 1                          # the peer's window moves on
                to_site(msg, True)
                from_site()
        elif step == 6:
            to_site(init_from_fields(r, cookie), False)
            from_site()
        elif step == 7:
            now += r.pick((0.05, 0.5, 1.0, 3.0, 6.0, 31.0, 41.0, 61.0, 3601.0))
            sw.clock.t = now
            sw.vpn.tick(now)
            for sa in list(host.sas):
                sa.tick(now)
            from_site()
            pump(2)
        elif step == 8:
            up = [s for s in host.sas if s.state == ESTABLISHED]
            if up:
                sa = r.pick(up)
                action = r.u8() % 4
                if action == 0:
                    sa.rekey_child(now)
                elif action == 1:
                    sa.rekey_ike(now)
                elif action == 2:
                    sa.delete(now)
                elif sa.pending is None:
                    sa._request(m.INFORMATIONAL, [], now)
                    sa.pending["handler"] = lambda p, payloads, t: None
                pump(r.int_in(1, 6))
        elif step == 9:
            up = [s for s in ike.sas if s.state == ESTABLISHED]
            if up:
                sa = r.pick(up)
                action = r.u8() % 3
                if action == 0:
                    sa.rekey_child(now)
                elif action == 1:
                    sa.rekey_ike(now)
                else:
                    sa.delete(now)
                from_site()
                pump(r.int_in(1, 6))
        elif step == 10:
            payload = r.pick(said) if said and r.bool() else r.blob(120)
            if said and r.bool():
                payload = mutate(r, payload)
            nat_t = r.bool()
            src = PEER if r.u8() % 4 else "198.51.100.7"
            frame = udp_frame((bytes(4) if nat_t and r.u8() % 4 else b"") + payload, src=src,
                              sport=r.pick((500, 4500, 1)), dport=4500 if nat_t else 500)
            if r.chance(4):
                frame = frame[:r.int_in(0, len(frame))]
            before = snapshot(ike)
            inject(sw, "up", [frame])
            sw.graph.run_until_idle()
            q = sw.vpn.ike_input.queue
            while q:                                            # Vpn.tick's dispatch, without its timers
                sw.vpn._dispatch(*q.popleft(), now)
            assert snapshot(ike) == before, "a frame that is not authentic changed an IKE SA"
            from_site()
        elif step == 11:
            # a flood of INITs from the peer's address: cookies engage
            for k in range(r.int_in(1, 6)):
                to_site(good_init(r.bytes(8).ljust(8, b"\1"), cookie if r.bool() else None), False)
            from_site()
        sw.graph.run_until_idle()
        assert sw.graph.pool.in_flight == 0, "buffers leaked"
        consistency(sw)
        assert ike.half_open() <= ike.cookies.limit, "half-open SAs beyond the limit"
        assert len(ike.sas) <= ck.HALF_OPEN_LIMIT + 8
        feature(200 + 10 * step + min(len(snapshot(ike)), 3) + 4 * ike.under_load)
    sw.graph.pool.check_accounting(0)
    for v in ike.counters.values():
        assert v >= 0


def _seal_raw(sa, exchange, mid, first, chain, response, m, crypto):
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    sk_e = sa.keys.sk_ei if sa.initiator else sa.keys.sk_er
    flags = (m.F_INITIATOR if sa.initiator else 0) | (m.F_RESPONSE if response else 0)
    plain = chain + b"\x00"
    iv = os.urandom(crypto.IV_LEN)
    sk_len = 4 + crypto.IV_LEN + len(plain) + crypto.ICV_LEN
    header = m.encode_header(sa.spi_i, sa.spi_r, m.PL_SK, exchange & 0xff, flags, mid & 0xffffffff,
                             m.HEADER_LEN + sk_len)
    aad = header + struct.pack("!BBH", first & 0xff, 0, sk_len)
    return aad + iv + AESGCM(sk_e[:-4]).encrypt(sk_e[-4:] + iv, plain, aad)


def seeds():
    return [bytes([0, 4, 1, 0, 3, 2, 3, 2, 3, 8, 0, 3, 8, 1, 3, 8, 2, 3]),
            bytes([1, 5, 1, 0, 0, 3, 5, 0, 1, 0, 7, 3, 0]),
            bytes([0, 6, 11, 5, 6, 1, 6, 1, 0, 4, 2]),
            bytes([0, 3, 6, 0, 0, 0, 0, 0, 0, 0]) + ipaddress.IPv4Address(SITE).packed]


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
