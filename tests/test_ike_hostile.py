"""Hostile IKE messages against fastpath's IKEv2 (fastpath.ike), two gateways in memory:
malformed protected messages, replayed and reordered message IDs, responses nobody asked
for, and a flood of IKE_SA_INIT from spoofed addresses, which engages cookies (RFC 7296
2.6). Each is counted, changes no SA and raises nothing. (test_ike.py has the malformed
IKE_SA_INIT requests and random mutations; fuzz/fuzz_ike.py the long campaign.)"""
import gc
import os
import struct
import tracemalloc

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from scapy.layers.inet import UDP
from scapy.layers.l2 import Ether

from fastpath.ike import cookie as ck, crypto, message as m, proposals as pr
from fastpath.ike.sa import ESTABLISHED, HALF_OPEN_TIMEOUT
from test_ike import Sites, _init_request, _traffic
from vpnutil import A_IP, B_IP

QUIET = {"options:ike_initiate": "false"}


def _sealed_raw(sa, exchange, message_id, inner_first, plain, response=False, sk_len_delta=0):
    """A protected message from sa's side whose SK plaintext is given as bytes (so its
    inner payload chain can be anything), its SK length off by sk_len_delta if asked."""
    sk_e = sa.keys.sk_ei if sa.initiator else sa.keys.sk_er
    flags = (m.F_INITIATOR if sa.initiator else 0) | (m.F_RESPONSE if response else 0)
    plain += b"\x00"
    iv = os.urandom(crypto.IV_LEN)
    sk_len = 4 + crypto.IV_LEN + len(plain) + crypto.ICV_LEN
    header = m.encode_header(sa.spi_i, sa.spi_r, m.PL_SK, exchange, flags, message_id, m.HEADER_LEN + sk_len)
    aad = header + struct.pack("!BBH", inner_first, 0, sk_len + sk_len_delta)
    return aad + iv + AESGCM(sk_e[:-4]).encrypt(sk_e[-4:] + iv, plain, aad)


def _raw_replies(sw):
    out = []
    sw.graph.run_until_idle()
    for f in sw.uplinks["up"].io[1].take():
        p = Ether(f)
        if UDP in p and p[UDP].sport in (500, 4500):
            out.append(bytes(p[UDP].payload))
    return out


def _replies(sw):
    return [m.decode(d) for d in _raw_replies(sw)]


def _state(ike):
    """Everything a message could change on one gateway's IKE side."""
    return [(s.state, s.spi_i, s.spi_r, s.my_next_id, s.peer_next_id, s.last_response,
             s.pending and s.pending["id"], id(s.keys),
             [(ch.spi_in, ch.spi_out, ch.key_in) for ch in s.children]) for s in ike.sas]


def _established():
    s = Sites(opts_b=QUIET)
    s.step(40)
    assert s.up(s.a) and s.up(s.b)
    return s, s.up(s.a)[0], s.up(s.b)[0]


def test_malformed_protected_messages_are_counted_and_change_nothing():
    s, sa_a, sa_b = _established()
    ike = s.ike(s.b)
    mid = sa_b.peer_next_id
    good = sa_a._protected(m.INFORMATIONAL, False, mid, [])
    notify = m.encode_notify(m.Notify(m.N_INITIAL_CONTACT))
    # (what, message, counter it must land in) -- each fails before it is acted on
    cases = [
        ("header length past the datagram", good + b"\0\0\0\0", "invalid_syntax"),
        ("header length short of the datagram", good[:-1], "invalid_syntax"),
        ("SK length past the end", _sealed_raw(sa_a, m.INFORMATIONAL, mid, 0, b"", sk_len_delta=8), "invalid_syntax"),
        ("SK length short", _sealed_raw(sa_a, m.INFORMATIONAL, mid, 0, b"", sk_len_delta=-8), "invalid_syntax"),
        ("SK shorter than IV and ICV", good[:m.HEADER_LEN] + good[m.HEADER_LEN:m.HEADER_LEN + 2] +
         struct.pack("!H", 12) + good[m.HEADER_LEN + 4:m.HEADER_LEN + 12], "invalid_syntax"),
        ("ICV does not verify", good[:-1] + bytes([good[-1] ^ 1]), "integrity_failed"),
        ("inner payload truncated", _sealed_raw(sa_a, m.INFORMATIONAL, mid, m.PL_NOTIFY,
                                                struct.pack("!BBH", 0, 0, 4 + len(notify)) + notify[:3]),
         "invalid_syntax"),
        ("inner payload length below 4", _sealed_raw(sa_a, m.INFORMATIONAL, mid, m.PL_NOTIFY,
                                                     struct.pack("!BBH", 0, 0, 2) + notify), "invalid_syntax"),
        ("SK not the last payload", good + struct.pack("!BBH", 0, 0, 4), "invalid_syntax"),
    ]
    for what, data, counter in cases:
        before, counts = _state(ike), dict(ike.counters)
        ike.receive(data, 500, 500, s.clock.t)
        assert _state(ike) == before, what
        assert ike.counters[counter] == counts[counter] + 1, what
    assert not _replies(s.b)                             # none of them answered
    # an unknown critical payload inside: it authenticated, so it is refused whole with
    # UNSUPPORTED_CRITICAL_PAYLOAD naming the type (RFC 7296 2.5), and acted on no further
    children = [(ch.spi_in, ch.spi_out) for ch in sa_b.children]
    ike.receive(_sealed_raw(sa_a, m.INFORMATIONAL, mid, m.PL_DELETE, struct.pack("!BBH", 200, 0, 8) +
                            m.encode_delete(m.PROTO_IKE, []) + struct.pack("!BBH", 0, 0x80, 6) + b"zz"),
                500, 500, s.clock.t)
    assert ike.counters["unsupported_critical_payload"] == 1 and sa_b.state == ESTABLISHED
    assert [(ch.spi_in, ch.spi_out) for ch in sa_b.children] == children
    r = _raw_replies(s.b)
    assert len(r) == 1 and sa_b.peer_next_id == mid + 1
    assert [m.decode_notify(p.body) for p in crypto.open_sk(r[0], m.decode(r[0]), sa_b.keys.sk_er)] == [
        m.Notify(m.N_UNSUPPORTED_CRITICAL_PAYLOAD, data=bytes([200]))]
    # an unknown non-critical payload inside is skipped: the request is answered
    ike.receive(_sealed_raw(sa_a, m.INFORMATIONAL, mid + 1, 200, struct.pack("!BBH", 0, 0, 6) + b"zz"),
                500, 500, s.clock.t)
    assert sa_b.peer_next_id == mid + 2 and len(_replies(s.b)) == 1
    sent = [0, 0]
    assert _traffic(s, 5, sent) == sent


def test_authenticated_but_malformed_bodies_get_invalid_syntax_and_keep_the_sas():
    s, sa_a, sa_b = _established()
    ike = s.ike(s.b)
    children = [(ch.spi_in, ch.spi_out) for ch in sa_b.children]
    bodies = [
        (m.INFORMATIONAL, m.Payload(m.PL_DELETE, struct.pack("!BBH", m.PROTO_ESP, 4, 3) + b"1234")),
        (m.INFORMATIONAL, m.Payload(m.PL_NOTIFY, b"\x00\x09\x40")),
        (m.CREATE_CHILD_SA, m.Payload(m.PL_SA, struct.pack("!BBHBBBB", 0, 0, 200, 1, 3, 4, 1) + b"spi!")),
        (m.CREATE_CHILD_SA, m.Payload(m.PL_TSI, struct.pack("!B3xBBH", 1, 7, 17, 99))),
    ]
    for exchange, payload in bodies:
        mid = sa_b.peer_next_id
        extra = [] if exchange == m.INFORMATIONAL else [
            m.notify_payload(m.N_REKEY_SA, protocol=m.PROTO_ESP, spi=struct.pack("!I", sa_a.children[0].spi_in))]
        before = ike.counters["invalid_syntax"]
        ike.receive(sa_a._protected(exchange, False, mid, extra + [payload]), 500, 500, s.clock.t)
        assert ike.counters["invalid_syntax"] == before + 1
        # it authenticated, so it was answered (RFC 7296 2.21.2) and its ID is used up
        r = _raw_replies(s.b)
        assert len(r) == 1 and sa_b.peer_next_id == mid + 1
        assert sa_b.state == ESTABLISHED and [(ch.spi_in, ch.spi_out) for ch in sa_b.children] == children
        opened = crypto.open_sk(r[0], m.decode(r[0]), sa_b.keys.sk_er)
        assert [m.decode_notify(p.body).type for p in opened] == [m.N_INVALID_SYNTAX]
    sent = [0, 0]
    assert _traffic(s, 5, sent) == sent


def test_ike_sa_rekey_with_a_ke_of_another_group_or_a_bad_value_changes_nothing():
    """An IKE SA rekey request whose KE is of another group than the one chosen gets
    INVALID_KE_PAYLOAD naming ours; one whose public value is no point of the group gets
    INVALID_SYNTAX. Each is counted and answered, and the IKE SA and its CHILD_SAs stay."""
    s, sa_a, sa_b = _established()
    ike = s.ike(s.b)
    ch = sa_a.choice
    other = 20 if ch.group != 20 else 19
    children = [(c.spi_in, c.spi_out) for c in sa_b.children]
    cases = [(other, crypto.DhKey(other).public, "invalid_ke_payload",
              (m.N_INVALID_KE_PAYLOAD, struct.pack("!H", ch.group))),
             (ch.group, bytes(len(crypto.DhKey(ch.group).public)), "invalid_syntax", (m.N_INVALID_SYNTAX, b""))]
    for group, pub, counter, answer in cases:
        mid, before, sas = sa_b.peer_next_id, ike.counters[counter], list(ike.sas)
        payloads = [m.Payload(m.PL_SA, m.encode_sa(pr.choice_proposals(ch, os.urandom(8)))),
                    m.Payload(m.PL_NONCE, os.urandom(32)), m.Payload(m.PL_KE, m.encode_ke(group, pub))]
        ike.receive(sa_a._protected(m.CREATE_CHILD_SA, False, mid, payloads), 500, 500, s.clock.t)
        assert ike.counters[counter] == before + 1
        r = _raw_replies(s.b)
        assert len(r) == 1 and sa_b.peer_next_id == mid + 1
        opened = crypto.open_sk(r[0], m.decode(r[0]), sa_b.keys.sk_er)
        assert [(n.type, n.data) for n in (m.decode_notify(p.body) for p in opened)] == [answer]
        assert list(ike.sas) == sas and sa_b.state == ESTABLISHED
        assert [(c.spi_in, c.spi_out) for c in sa_b.children] == children
    sent = [0, 0]
    assert _traffic(s, 5, sent) == sent


def test_replayed_reordered_and_unrequested_messages_are_counted_and_change_nothing():
    s, sa_a, sa_b = _established()
    ike_a, ike_b = s.ike(s.a), s.ike(s.b)
    # three liveness checks from A, each answered: B expects message ID 5 next
    sent_requests = []
    for _ in range(3):
        sa_a._request(m.INFORMATIONAL, [], s.clock.t)
        sent_requests.append(sa_a.pending["data"])
        s.step(3)
    assert sa_a.pending is None and sa_b.peer_next_id == 5
    answered = sa_b.last_response
    cases = [
        # (what, to which side, message, counter, answered again?)
        ("replay of an old request", ike_b, sent_requests[0], "invalid_message_id", False),
        ("replay of the last request", ike_b, sent_requests[-1], None, True),
        ("request from the future (reordered)", ike_b, sa_a._protected(m.INFORMATIONAL, False, 6, []),
         "invalid_message_id", False),
        ("request far in the future", ike_b, sa_a._protected(m.INFORMATIONAL, False, 0xffffffff, []),
         "invalid_message_id", False),
        ("response to no request (B has none out)", ike_b,
         sa_a._protected(m.INFORMATIONAL, True, 0, []), "invalid_message_id", False),
        ("response to no request (A has none out)", ike_a,
         sa_b._protected(m.INFORMATIONAL, True, 4, []), "invalid_message_id", False),
        ("replayed response", ike_a, answered[1], "invalid_message_id", False),
        ("IKE_SA_INIT response replayed", ike_a, sa_a.msg2, "invalid_message_id", False),
        ("response for another IKE SA", ike_a, m.encode(m.Message(b"Q" * 8, b"R" * 8, m.INFORMATIONAL,
                                                                  m.F_RESPONSE, 0, [])), "unknown_spi", False),
    ]
    for what, ike, data, counter, again in cases:
        before_a, before_b = _state(ike_a), _state(ike_b)
        counts = dict(ike.counters)
        ike.receive(data, 500, 500, s.clock.t)
        assert (_state(ike_a), _state(ike_b)) == (before_a, before_b), what
        if counter:
            assert ike.counters[counter] == counts[counter] + 1, what
        replies = _raw_replies(s.a) + _raw_replies(s.b)
        if again:
            assert replies == [answered[1]], what
        else:
            assert not replies, what
    # the next in-order request still works, and traffic never stopped
    sa_a._request(m.INFORMATIONAL, [], s.clock.t)
    s.step(3)
    assert sa_a.pending is None and sa_b.peer_next_id == 6
    sent = [0, 0]
    assert _traffic(s, 5, sent) == sent


# ---------------------------------------------------------------- cookies (RFC 7296 2.6)

def test_cookie_binds_nonce_address_and_spi_and_survives_one_secret_change():
    c = ck.Cookies(threshold=1)
    ni, ip, spi = os.urandom(32), bytes([192, 0, 2, 1]), b"S" * 8
    cookie = c.make(100.0, ni, ip, spi)
    assert len(cookie) == ck.COOKIE_LEN and c.valid(100.0, cookie, ni, ip, spi)
    assert not c.valid(100.0, cookie, os.urandom(32), ip, spi)
    assert not c.valid(100.0, cookie, ni, bytes([192, 0, 2, 9]), spi)
    assert not c.valid(100.0, cookie, ni, ip, b"T" * 8)
    assert not c.valid(100.0, cookie[:-1] + bytes([cookie[-1] ^ 1]), ni, ip, spi)
    assert not c.valid(100.0, bytes([cookie[0] + 1]) + cookie[1:], ni, ip, spi)
    assert not c.valid(100.0, cookie[:8], ni, ip, spi) and not c.valid(100.0, b"", ni, ip, spi)
    # the secret changes: the old cookie still holds for one period, new ones differ
    later = 100.0 + ck.SECRET_LIFETIME
    assert c.valid(later, cookie, ni, ip, spi) and c.make(later, ni, ip, spi) != cookie
    assert not c.valid(later + ck.SECRET_LIFETIME, cookie, ni, ip, spi)
    # a long silence retires both secrets at once
    fresh = c.make(later + ck.SECRET_LIFETIME, ni, ip, spi)
    assert not c.valid(later + 4 * ck.SECRET_LIFETIME, fresh, ni, ip, spi)
    assert len(c.secrets) == 2                          # all the state there is


def _inject_init(sw, src, data, sport=500):
    from fastpath.vpn import _ip4_udp
    mac = sw.uplinks["up"].mac
    sw.uplinks["up"].io[0].add([mac + bytes.fromhex("020000000001") + b"\x08\x00" +
                                _ip4_udp(src, B_IP, data, sport=sport, dport=500)])


def test_spoofed_init_flood_engages_cookies_and_the_real_peer_still_comes_up():
    s = Sites(opts_a=QUIET, opts_b=QUIET)
    s.step(10)                                            # ARP resolved, nothing else
    ike = s.ike(s.b)
    threshold = ck.COOKIE_THRESHOLD
    inits = [_init_request(os.urandom(8)) for _ in range(64)]

    def flood(n, start=0):
        """n IKE_SA_INITs: most claim the peer's address (only they reach its IKE
        responder), the rest random addresses; all through the data path."""
        for i in range(start, start + n):
            src = A_IP if i % 4 else f"198.51.100.{i % 250 + 1}"
            data = bytearray(inits[i % len(inits)])
            data[:8] = struct.pack("!Q", i + 1)           # a new SPI each time
            _inject_init(s.b, src, bytes(data), sport=1024 + i % 60000)
            if i % 32 == 31:
                settle()
        settle()

    def settle():
        s.b.graph.run_until_idle()
        s.b.vpn.tick(s.clock.t)
        s.b.graph.run_until_idle()
        s.b.uplinks["up"].io[1].take()

    flood(400)
    assert ike.half_open() == threshold and len(ike.sas) == threshold
    c = ike.counters
    assert c["cookies_sent"] == 300 - threshold and c["ike_sas"] == 0
    errors = {(e[1], e[2]): e[0] for e in s.b.errors()}
    assert errors[("ike-input", "cookies_sent")] == c["cookies_sent"]
    assert errors[("ike-input", "no_tunnel")] == 100   # the other addresses: no IKE at all
    # what a cookie reply is: N(COOKIE) alone, no responder SPI, nothing kept
    _inject_init(s.b, A_IP, inits[0])
    s.b.graph.run_until_idle()
    s.b.vpn.tick(s.clock.t)
    r = _replies(s.b)
    assert len(r) == 1 and r[0].spi_r == bytes(8) and [n.type for n in r[0].notifies()] == [m.N_COOKIE]
    assert len(r[0].payloads) == 1
    # memory stays bounded: thousands more change nothing that grows
    tracemalloc.start()
    flood(200, 1000)
    gc.collect()
    base = tracemalloc.get_traced_memory()[0]
    flood(2000, 2000)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert ike.half_open() == threshold and grown < 64 * 1024, grown
    from fastpath.control import Control
    text = Control(s.b).execute(["show", "ike"])
    assert f"cookies_sent {c['cookies_sent']}" in text and f"half_open {threshold}" in text
    assert f"{c['cookies_sent']}  ike-input               IKE: IKE_SA_INIT answered with a cookie" in \
        Control(s.b).execute(["show", "errors"])
    # the real peer initiates now: told to bring a cookie, it does, and comes up
    s.ike(s.a).initiate = True
    s.step(40)
    assert s.up(s.a) and s.up(s.b)
    assert s.ike(s.a).counters.get("invalid_cookie", 0) == 0 and ike.counters["ike_sas"] == 1
    # the flood's half-open SAs expire; then no cookie is asked for any more
    s.step(int(HALF_OPEN_TIMEOUT / 0.5) + 2, dt=0.5)
    assert ike.half_open() == 0 and ike.counters["half_open_expired"] == threshold
    assert not ike.under_load and s.up(s.b)
    sent = [0, 0]
    assert _traffic(s, 5, sent) == sent


def test_init_with_a_wrong_or_stale_cookie_gets_a_new_one_and_keeps_nothing():
    s = Sites(opts_a=QUIET, opts_b={**QUIET, "options:cookie_threshold": "0"})
    s.step(10)
    ike = s.ike(s.b)
    spi = b"C" * 8
    first = _init_request(spi)
    ike.receive(first, 500, 500, s.clock.t)
    cookie = _replies(s.b)[0].notifies()[0].data
    msg = m.decode(first)

    def with_cookie(c, nonce_from=msg):
        payloads = [m.notify_payload(m.N_COOKIE, c)] + nonce_from.payloads
        return m.encode(m.Message(spi, bytes(8), m.IKE_SA_INIT, m.F_INITIATOR, 0, payloads))
    other_nonce = m.decode(_init_request(spi))
    for what, data in [("tampered", with_cookie(cookie[:-1] + bytes([cookie[-1] ^ 1]))),
                       ("another nonce", with_cookie(cookie, other_nonce)),
                       ("truncated", with_cookie(cookie[:4])),
                       ("not first", m.encode(m.Message(spi, bytes(8), m.IKE_SA_INIT, m.F_INITIATOR, 0,
                                                        msg.payloads + [m.notify_payload(m.N_COOKIE, cookie)])))]:
        n = ike.counters["cookies_sent"]
        ike.receive(data, 500, 500, s.clock.t)
        assert not ike.sas and ike.counters["cookies_sent"] == n + 1, what
        assert [x.notifies()[0].type for x in _replies(s.b)] == [m.N_COOKIE], what
    assert ike.counters["invalid_cookie"] == 3
    # the right cookie: a responder SA, answered with SA, KE, Nonce
    ike.receive(with_cookie(cookie), 500, 500, s.clock.t)
    assert len(ike.sas) == 1 and ike.half_open() == 1
    assert m.PL_KE in [p.type for p in _replies(s.b)[0].payloads]


def test_cookie_threshold_zero_always_asks_and_two_gateways_still_come_up():
    s = Sites(opts_b={**QUIET, "options:cookie_threshold": "0"})
    s.step(40)
    assert s.up(s.a) and s.up(s.b)
    assert s.ike(s.b).counters["cookies_sent"] == 1
    sent = [0, 0]
    assert _traffic(s, 5, sent) == sent


@pytest.mark.parametrize("value", ["-1", "many"])
def test_cookie_threshold_option_is_checked(value):
    from fastpath.control import CommandError, Control
    s = Sites()
    with pytest.raises(CommandError):
        Control(s.a).execute(["set", "interface", "vpn0", f"options:cookie_threshold={value}"])
