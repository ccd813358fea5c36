"""Hostile peers (issue #8, hardening): what an attacker on the underlay, a MAC flood and
scribbling guests do to fastpath while legitimate traffic flows next to them.

1. A live ESP tunnel between two gateways (in memory, and between two `fastpath run`
   daemons over veth) carries a numbered stream while a third party replays, reorders,
   truncates and bit-flips captured ESP, sends garbage to UDP 4500, and sends IKE junk
   (short, truncated, forged and replayed messages); and a flood of it under a restart.
2. A MAC flood of a million distinct source addresses into a bridge with a small table.
3. A vhost-user front end and a memif peer writing garbage into their rings and
   disconnecting mid-operation while two other ports of the bridge exchange a stream.

Every test asserts on delivered frames and on counters, never on timing.
"""
import collections
import json
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import hostileutil as hu
from hostileutil import Daemon, VpnLab, drain, mac_bytes, packet_socket, recv_frames
from netns import Netns, veth_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
root_only = pytest.mark.root

STATION_TYPE = b"\x88\xb5"


def station_frame(src, dst, seq, tag=b"STN"):
    return mac_bytes(dst) + mac_bytes(src) + STATION_TYPE + tag + seq.to_bytes(4, "big") + bytes(40)


def station_seqs(frames, src, tag=b"STN"):
    """Sequence numbers of the station frames from src among frames."""
    s = mac_bytes(src)
    return [int.from_bytes(f[17:21], "big") for f in frames
            if f[6:12] == s and f[12:14] == STATION_TYPE and f[14:17] == tag]


# ---------------------------------------------------------------- 1. a hostile VPN peer

WINDOW = 64                               # the tunnels' replay window (the default)
OTHER_IP = "192.0.2.77"                   # an address on the underlay that is no peer
ESP = "esp-decrypt"
IKE = "ike-input"


def fixed_cut_reason(frame, n, udp):
    """Where a truncated_fixed(frame, n) copy of a not-yet-received ESP packet is dropped."""
    at = 34 + (8 if udp else 0)                # the ESP header
    if udp and n < 42:
        return ("ip4-udp-input", "bad_udp")
    m = n - at
    if udp and m == 1 and frame[at] == 0xff:
        return ("ip4-udp-input", "nat_keepalive")
    if m < 8 + 8 + 2 + 16:
        return (ESP, "bad_length")
    return (ESP, "auth_failed")


def raw_cut_reason(n):
    if n < 14:
        return ("ethernet-input", "runt")
    return ("ip4-input", "bad_header" if n < 34 else "bad_length")


class VpnAttacker:
    """A third party on the underlay: it sees every frame, and sends its own next to them.
    It keeps what it captured and counts what it sent by the reason each should be
    dropped for: expect[(gateway, node, reason)], and either[(gateway, reasons)] for
    packets whose reason depends on the window (a flipped sequence number)."""

    def __init__(self, lab, seed=8):
        self.lab, self.rng = lab, random.Random(seed)
        self.captured = {"a": [], "b": []}        # genuine ESP to each gateway
        self.ike_requests = {"a": [], "b": []}   # genuine protected IKE requests to each gateway
        self.expect = collections.Counter()
        self.either = collections.Counter()
        self.sa_bad_length = collections.Counter()
        self.plan = None
        self.ike_either = collections.Counter()  # IKE junk counted under one of several reasons, or none
        self.ike_sent = collections.Counter()

    def record(self, dst, frames):
        for f in frames:
            if hu.esp_offset(f):
                self.captured[dst].append(f)
        self.ike_requests[dst] += hu.ike_requests_to(frames)

    def count(self, dst, node, reason, n=1):
        self.expect[(dst, node, reason)] += n

    def top_after(self, dst, genuine):
        """The receiving SA's highest sequence number once this step's genuine ESP is in."""
        seqs = [hu.esp_seq(f) for f in genuine if hu.esp_offset(f)]
        t = self.lab.tunnel(dst)
        spi = self.lab.tunnel("b" if dst == "a" else "a").out[1].spi
        cur = t.inbound[spi][0].seq
        return max(seqs + [cur])

    def __call__(self, dst, frames):
        lab = self.lab
        genuine = list(frames)
        esp = [f for f in genuine if hu.esp_offset(f)]
        out = list(genuine)
        src = "b" if dst == "a" else "a"
        mac_dst, mac_src = lab.mac(dst), lab.mac(src)
        udp = lab.options.get("options:encap") == "udp"
        kind = self.plan
        if kind == "flip" and esp:
            p = esp[0]
            flips = hu.bit_flips(p)
            self.count(dst, ESP, "no_sa", len(flips["spi"]))
            self.either[(dst, ("replay", "auth_failed"))] += len(flips["seq"])
            n = sum(len(flips[k]) for k in ("iv", "ciphertext", "icv"))
            self.count(dst, ESP, "auth_failed", n)
            attack = [f for k in ("spi", "seq", "iv", "ciphertext", "icv") for f in flips[k]]
            i = out.index(p)
            out[i:i] = attack                      # before the genuine packet: its seq is new
        elif kind == "truncate" and esp:
            p = esp[0]
            attack = []
            for n in range(len(p)):
                attack.append(p[:n])
                self.count(dst, *raw_cut_reason(n))
            for n in range(34, len(p)):
                attack.append(hu.truncated_fixed(p, n))
                reason = fixed_cut_reason(p, n, udp)
                self.count(dst, *reason)
                if reason == (ESP, "bad_length") and n - 34 - (8 if udp else 0) >= 8:
                    self.sa_bad_length[dst] += 1       # long enough to name the SA
            i = out.index(p)
            out[i:i] = attack
        elif kind == "replay":
            old = list(self.captured[dst])         # all delivered already
            top = self.top_after(dst, genuine)
            pick = old[-20:] + self.rng.sample(old[:-20], min(20, max(0, len(old) - 20)))
            self.rng.shuffle(pick)                 # reordered, within and beyond the window
            pick += pick[:5]                       # and some twice
            for f in pick:
                inside = top - hu.esp_seq(f) < WINDOW
                # beyond the window an ESN SA takes the low half for the next epoch: the ICV,
                # which covers the high half, refuses it (RFC 4303 A2.2)
                self.count(dst, ESP, "replay" if inside else "auth_failed")
            out += pick
        elif kind == "garbage" and esp:
            p = esp[0]
            spis = set(lab.site(dst).vpn.decrypt.sas)
            for _ in range(40):                    # unknown SPIs, to UDP 4500
                spi = self.rng.randrange(256, 1 << 32)
                if spi in spis:
                    continue
                payload = spi.to_bytes(4, "big") + self.rng.randbytes(self.rng.randrange(4, 120))
                out.append(hu.ip4_udp_frame(mac_dst, mac_src, lab.ip(src), lab.ip(dst), payload))
                self.count(dst, ESP, "no_sa")
            for _ in range(10):
                out.append(hu.with_src_ip(p, OTHER_IP))           # the SA's packet, from elsewhere
                self.count(dst, ESP, "wrong_peer")
                out.append(hu.rewrap(p))                          # in the other encapsulation
                self.count(dst, ESP, "encap_mismatch")
                out.append(hu.ip4_udp_frame(mac_dst, mac_src, lab.ip(src), lab.ip(dst), b"\xff"))
                self.count(dst, "ip4-udp-input", "nat_keepalive")
                out.append(hu.ip4_udp_frame(mac_dst, mac_src, lab.ip(src), lab.ip(dst), b"\0\0\0\0",
                                            dport=4501))
                self.count(dst, "ip4-udp-input", "port_unreachable")
        elif kind == "ike":
            for ip, port, msg, reasons in hu.ike_junk(self.rng, self.ike_requests[dst], lab.ip(src), OTHER_IP):
                if len(reasons) == 1:
                    self.count(dst, IKE, reasons[0])
                else:
                    self.ike_either[dst] += 1
                self.ike_sent[dst] += 1
                out.insert(self.rng.randrange(len(out) + 1),           # anywhere among the genuine frames
                           hu.ike_frame(mac_dst, mac_src, ip, lab.ip(dst), port, msg))
        self.record(dst, genuine)
        return out


PLAN = ["flip", "truncate", "replay", "garbage", "ike", None]


@pytest.mark.parametrize("encap", [None, "udp"], ids=["esp", "esp-in-udp"])
def test_vpn_attacks_in_memory_leave_the_tunnel_alone(encap):
    """Two gateways, a numbered stream each way, and an attacker that sees everything and
    sends bit flips, truncations, replays (reordered, inside and beyond the window),
    garbage and IKE junk next to it, at both gateways."""
    lab = VpnLab(encap)
    attacker = VpnAttacker(lab)
    lab.attack = lambda dst, frames: attacker.record(dst, frames) or frames
    lab.up()
    for _ in range(30):                            # some history to replay
        lab.step()
    before = {x: lab.spis(x) for x in "ab"}
    ike0 = {x: lab.ike_state(x) for x in "ab"}
    wire0 = len(lab.wire)
    errors0 = {x: lab.errors(x) for x in "ab"}
    drops0 = {x: {r["spi"]: dict(r["drops"]) for r in lab.sa_rows(x)} for x in "ab"}
    lab.attack = attacker
    assert attacker.ike_requests["b"]              # A initiated: B has its IKE_AUTH to replay
    for i in range(4 * len(PLAN)):
        attacker.plan = PLAN[i % len(PLAN)]
        lab.step()
    attacker.plan = None
    for _ in range(5):
        lab.step(0)
    # every legitimate frame arrived once, in order
    for direction in ("ab", "ba"):
        assert lab.got[direction] == list(range(lab.sent[direction])), direction
    for x, y in (("a", "b"), ("b", "a")):
        t = lab.tunnel(x)
        # the same SAs, the same IKE SA and message IDs, no exchange pending
        assert lab.spis(x) == before[x]
        assert lab.ike_state(x) == ike0[x] and all(s.pending is None for s in t.ike.sas)
        # the inbound window moved with the genuine packets only
        out = lab.outbound(y)
        inb = lab.inbound(x, out["spi"])
        assert (inb["seq"], inb["packets"], inb["bytes"]) == (out["seq"], out["packets"], out["bytes"])
        # every attack packet counted under its reason
        errs = lab.errors(x)
        got = collections.Counter({k: v - errors0[x].get(k, 0) for k, v in errs.items()})
        for (dst, node, reason), n in attacker.expect.items():
            if dst == x:
                extra = sum(m for (d, rs), m in attacker.either.items() if d == x and reason in rs) \
                    if node == ESP else 0
                assert n <= got[(node, reason)] <= n + extra, (x, node, reason, n, got[(node, reason)])
        either = sum(m for (d, _), m in attacker.either.items() if d == x)
        exact = sum(n for (d, node, r), n in attacker.expect.items() if d == x and node == ESP
                    and r in ("replay", "auth_failed"))
        assert got[(ESP, "replay")] + got[(ESP, "auth_failed")] == exact + either
        # and the SA counted those it is responsible for (`show sa`)
        sa = {k: v - drops0[x][inb["spi"]][k] for k, v in inb["drops"].items()}
        assert sa["replay"] == got[(ESP, "replay")] and sa["auth_failed"] == got[(ESP, "auth_failed")]
        assert sa["encap_mismatch"] == got[(ESP, "encap_mismatch")] == attacker.expect[(x, ESP, "encap_mismatch")]
        assert sa["bad_length"] == attacker.sa_bad_length[x]
        # IKE: every message punted (the junk, and answers the peer's replays drew); the
        # reasons counted exactly where there is one, within bounds where there may be more
        genuine_ike = sum(1 for d, f in lab.wire[wire0:] if d == x and hu.ike_payload(f))
        assert got[(IKE, "punted")] == attacker.ike_sent[x] + genuine_ike
        exact_ike = sum(n for (d, node, r), n in attacker.expect.items() if d == x and node == IKE)
        ike_verdicts = sum(n for (node, r), n in got.items() if node == IKE and r != "punted")
        assert exact_ike <= ike_verdicts <= exact_ike + attacker.ike_either[x] + genuine_ike
        assert sum(n for (node, _), n in got.items() if node != IKE) == \
            sum(n for (d, node, _), n in attacker.expect.items() if d == x and node != IKE) + \
            sum(n for (d, _), n in attacker.either.items() if d == x)


class IkeFlood:
    """Per step and gateway: IKE junk (hu.ike_junk: short messages, unknown SPIs, the
    genuine protected requests it received truncated, forged and replayed), spread at
    random among the genuine frames, whose order it keeps. (Not replayed IKE_SA_INIT
    requests: each starts a half-open responder SA, which cookies are to limit.)"""

    def __init__(self, lab, n, seed=5):
        self.lab, self.n, self.rng = lab, n, random.Random(seed)
        self.requests = {"a": [], "b": []}
        self.sent = collections.Counter()
        self.on = True

    def __call__(self, dst, frames):
        self.requests[dst] += hu.ike_requests_to(frames)
        if not self.on:
            return frames
        lab, src = self.lab, "b" if dst == "a" else "a"
        junk = [hu.ike_frame(lab.mac(dst), lab.mac(src), ip, lab.ip(dst), port, msg) for ip, port, msg, _ in
                hu.ike_junk(self.rng, self.requests[dst][-5:], lab.ip(src), OTHER_IP, self.n)]
        out = list(frames)
        for f in junk:
            out.insert(self.rng.randrange(len(out) + 1), f)
        self.sent[dst] += len(junk)
        return out


def test_ike_flood_does_not_stop_rekeys_or_a_restart():
    """A flood of IKE junk (more per tick than the IKE queue holds) while the CHILD_SA
    rekeys every second, and while one gateway restarts: the rekeys happen without losing
    a frame, and the restarted gateway gets its tunnel back."""
    # the IKE queue holds 128 messages here (1024 in the daemon): the same flood, eight
    # times smaller
    lab = VpnLab(None, ike_queue=128, **{"options:rekey_time": 1})
    flood = IkeFlood(lab, 50)
    lab.attack = flood
    flood.on = False
    lab.up()
    flood.on = True
    spis0 = lab.spis("a")
    rekeys0 = {x: lab.tunnel(x).ike.counters["child_rekeys"] for x in "ab"}
    for _ in range(60):                            # 3 s, 240 frames each way: rekeys are due
        lab.step()
    flood.on = False
    lab.step()                                     # the last junk is taken off the queue
    assert sum(lab.tunnel(x).ike.counters["child_rekeys"] - rekeys0[x] for x in "ab") >= 2
    assert lab.spis("a") != spis0
    for direction in ("ab", "ba"):
        assert lab.got[direction] == list(range(lab.sent[direction])), direction
    for x in "ab":
        errs = lab.errors(x)
        # the queue overflowed, and the junk that got through was refused
        assert errs[(IKE, "queue_full")] > 0
        assert errs[(IKE, "invalid_syntax")] > 0 and errs[(IKE, "unknown_spi")] > 0
        assert errs[(IKE, "no_tunnel")] > 0
        assert errs[(IKE, "punted")] + errs[(IKE, "queue_full")] >= flood.sent[x]

    # gateway B restarts (a new process: no SAs, no state), the flood goes on, with the
    # genuine protected requests of the old IKE SA among it: unknown to B now
    flood.on = True
    lab.b = lab.new_site("b")
    for i in range(400):                           # (no traffic)
        lab.step(0)
        ta, tb = lab.tunnel("a"), lab.tunnel("b")
        if tb.out and ta.out and ta.out[1].spi in tb.inbound and tb.out[1].spi in ta.inbound:
            break
    else:
        raise AssertionError("the restarted gateway never got its tunnel back: "
                             f"{lab.ike_state('b')} {lab.tunnel('b').ike.counters}")
    back = (i + 1) * 0.05
    for _ in range(25):                            # the old SAs go
        lab.step()
    mark = {d: lab.sent[d] for d in ("ab", "ba")}
    for _ in range(25):
        lab.step()
    for direction in ("ab", "ba"):
        got = [s for s in lab.got[direction] if s >= mark[direction]]
        assert got == list(range(mark[direction], lab.sent[direction])), direction
    assert [s.initial_contact for s in lab.tunnel("a").ike.sas if s.state == "ESTABLISHED"] == [True]
    assert lab.errors("b")[(IKE, "queue_full")] > 0            # it recovered under the flood
    print(f"tunnel back {back:.2f} s (simulated) after B restarted")


# ---- the same against two `fastpath run` daemons over veth

PSK = "two sites, one secret"
GW = {"a": ("192.0.2.1", "192.0.2.2"), "b": ("192.0.2.2", "192.0.2.1")}
HOST = {"a": "0a:00:00:00:0a:01", "b": "0a:00:00:00:0b:01"}


def configure_site(d, side):
    me, peer = GW[side]
    d.do("add-ip", f"up{side}", f"{me}/24")
    d.do("add-br", "br0")
    d.do("add-port", "br0", f"p{side}", "tag=10")
    d.do("add-port", "br0", "vpn0", "type=vxlan", f"options:remote_ip={peer}", f"options:local_ip={me}",
         f"options:key={hu.VNI}", f"options:psk={PSK}")


def tunnel_up(da, db):
    """Both daemons send on an SA the other has inbound."""
    ra, rb = da.json("show", "sa"), db.json("show", "sa")
    out_a = [r["spi"] for r in ra if r["direction"] == "out"]
    out_b = [r["spi"] for r in rb if r["direction"] == "out"]
    in_a = {r["spi"] for r in ra if r["direction"] == "in"}
    in_b = {r["spi"] for r in rb if r["direction"] == "in"}
    return bool(out_a and out_b and out_a[0] in in_b and out_b[0] in in_a)


class Stream:
    """Numbered frames between the hosts at A and B (VLAN 10), both ways, paced."""

    def __init__(self, socks, sniffers, tag):
        self.socks, self.sniffers, self.tag = socks, sniffers, tag
        self.sent = 0
        self.stop = threading.Event()
        self.thread = None

    def start(self, count, pause=0.002):
        def run():
            for seq in range(count):
                if self.stop.is_set():
                    break
                self.socks["a"].send(station_frame(HOST["a"], HOST["b"], seq, self.tag))
                self.socks["b"].send(station_frame(HOST["b"], HOST["a"], seq, self.tag))
                self.sent = seq + 1
                time.sleep(pause)
        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def wait(self, timeout=60):
        self.thread.join(timeout)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(len(self.got(x)) >= self.sent for x in "ab"):
            time.sleep(0.05)
        time.sleep(0.2)

    def got(self, side):
        """Sequence numbers that arrived at side's host."""
        other = "b" if side == "a" else "a"
        return station_seqs(self.sniffers[side].frames, HOST[other], self.tag)


@root_only
def test_vpn_daemons_under_attack(tmp_path):
    """Two `fastpath run` gateways, the underlay a Linux bridge in a namespace the attacker
    owns: it sniffs what each gateway sends (on the bridge ports) and injects frames to
    either. A numbered stream each way is delivered exactly once, in order, through bit
    flips, truncations, replays and garbage; every attack packet is counted by reason in
    `show errors` and `show sa`; the SAs do not change; fastpathctl keeps answering; and
    a gateway restarted under a flood of IKE junk (replays of the genuine IKE requests in
    it) gets its tunnel back."""
    rng = random.Random(88)
    with Netns("fga") as nsa, Netns("fgb") as nsb, Netns("fun") as under, Netns("fha") as ha, \
            Netns("fhb") as hb, veth_pair("upa", "ua", nsa, under), veth_pair("upb", "ub", nsb, under), \
            veth_pair("pa", "hv", nsa, ha), veth_pair("pb", "hv", nsb, hb):
        under.run("ip link add ubr type bridge")
        under.run("ip link set ubr up")
        under.run("ip link set ua master ubr")
        under.run("ip link set ub master ubr")
        mac = {"a": mac_bytes(nsa.run("cat /sys/class/net/upa/address").stdout.strip()),
               "b": mac_bytes(nsb.run("cat /sys/class/net/upb/address").stdout.strip())}
        with under.entered():
            # what each gateway sends arrives on its bridge port; frames sent there go to it
            sniff = {"a": hu.Sniffer(packet_socket("ua")), "b": hu.Sniffer(packet_socket("ub"))}
            inject = {}
            for side, port in (("a", "ua"), ("b", "ub")):
                inject[side] = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
                inject[side].bind((port, 0))
        hosts = {}
        for side, ns in (("a", ha), ("b", hb)):
            with ns.entered():
                hosts[side] = packet_socket("hv")
        host_rx = {x: hu.Sniffer(hosts[x].dup()) for x in "ab"}
        d = {"a": Daemon(nsa, tmp_path / "a.sock", tmp_path / "a.log"),
             "b": Daemon(nsb, tmp_path / "b.sock", tmp_path / "b.log")}
        try:
            for side in "ab":
                configure_site(d[side], side)
            deadline = time.monotonic() + 30
            while not tunnel_up(d["a"], d["b"]):
                assert time.monotonic() < deadline, d["a"].do("show", "errors")
                time.sleep(0.2)
            warm = Stream(hosts, host_rx, b"WRM").start(200)
            warm.wait()
            assert warm.got("b") == list(range(200)) and warm.got("a") == list(range(200))
            # the IKE exchanges are over: both ends may have initiated at once, and a second
            # IKE SA (its INIT retransmitted) can come up seconds later and take the traffic;
            # the SA set is taken once it held still for longer than a retired SA lingers
            def sa_rows():
                return {x: sorted((r["direction"], r["spi"]) for r in d[x].json("show", "sa")) for x in "ab"}
            spis, still_since, deadline = sa_rows(), time.monotonic(), time.monotonic() + 30
            while time.monotonic() - still_since < 3.0:
                assert time.monotonic() < deadline, f"the SAs never held still: {spis}"
                time.sleep(0.25)
                now_rows = sa_rows()
                if now_rows != spis:
                    spis, still_since = now_rows, time.monotonic()
            errors0 = {x: d[x].errors() for x in "ab"}
            ifs0 = {x: d[x].interfaces() for x in "ab"}
            expect = collections.Counter()
            either = collections.Counter()

            def to(side, frames):
                hu.send_paced(inject[side], frames)

            def esp_to(side):
                """Genuine ESP the other gateway sent to side, as captured, on the SAs side
                has now (not on an IKE SA's duplicate deleted before the attack)."""
                other = "b" if side == "a" else "a"
                live = {spi for direction, spi in spis[side] if direction == "in"}
                return [f for f in sniff[other].frames if hu.esp_offset(f) and hu.esp_spi(f) in live]

            stream = Stream(hosts, host_rx, b"ATK").start(1500)
            deadline = time.monotonic() + 20        # enough history: old packets to work on
            while min(max((hu.esp_seq(f) for f in esp_to(x)), default=0) for x in "ab") < 4 * WINDOW + 100:
                assert time.monotonic() < deadline and stream.thread.is_alive()
                time.sleep(0.1)
            for side in "ab":
                other = "b" if side == "a" else "a"
                src_ip, dst_ip = GW[other][0], GW[side][0]
                captured = esp_to(side)
                latest = max(hu.esp_seq(f) for f in captured)
                old = [f for f in captured if hu.esp_seq(f) <= latest - 4 * WINDOW]
                # every bit of every ESP field of old packets (beyond the window: the ICV
                # decides, and refuses)
                for p in old[:2]:
                    flips = hu.bit_flips(p)
                    to(side, [f for k in ("spi", "seq", "iv", "ciphertext", "icv") for f in flips[k]])
                    expect[(side, ESP, "no_sa")] += len(flips["spi"])
                    either[side] += len(flips["seq"])
                    expect[(side, ESP, "auth_failed")] += sum(len(flips[k]) for k in ("iv", "ciphertext", "icv"))
                # truncated at every length, raw and with the headers made to agree
                p = old[2]
                cuts = [p[:n] for n in range(14, len(p))]
                for n in range(14, len(p)):
                    expect[(side, *raw_cut_reason(n))] += 1
                for n in range(34, len(p)):
                    cuts.append(hu.truncated_fixed(p, n))
                    expect[(side, *fixed_cut_reason(p, n, False))] += 1
                to(side, cuts)
                # replays, reordered, inside and beyond the window
                pick = captured[-30:] + rng.sample(captured[:-30], 30)
                rng.shuffle(pick)
                to(side, pick + pick[:10])
                either[side] += len(pick) + 10
                # garbage to UDP 4500, the SA's packets from elsewhere or re-wrapped
                junk = []
                spis_here = {r["spi"] for r in d[side].json("show", "sa") if r["direction"] == "in"}
                for _ in range(50):
                    spi = rng.randrange(256, 1 << 32)
                    if spi not in spis_here:
                        junk.append(hu.ip4_udp_frame(mac[side], mac[other], src_ip, dst_ip,
                                                     spi.to_bytes(4, "big") + rng.randbytes(rng.randrange(4, 100))))
                        expect[(side, ESP, "no_sa")] += 1
                for f in rng.sample(captured, 10):
                    junk += [hu.with_src_ip(f, OTHER_IP), hu.rewrap(f)]
                    expect[(side, ESP, "wrong_peer")] += 1
                    expect[(side, ESP, "encap_mismatch")] += 1
                junk += [hu.ip4_udp_frame(mac[side], mac[other], src_ip, dst_ip, b"\xff")] * 10
                expect[(side, "ip4-udp-input", "nat_keepalive")] += 10
                to(side, junk)
                r = d[side].ctl("version")                                  # still answering
                assert r.returncode == 0 and r.stdout.startswith("fastpath"), r.stderr
            stream.wait()
            # IKE: short messages, unknown SPIs, the genuine requests truncated, forged, replayed
            requests = {x: hu.ike_requests_to(sniff["b" if x == "a" else "a"].frames) for x in "ab"}
            assert requests["a"] or requests["b"]
            ike_sent, ike_either, ike_replays = collections.Counter(), collections.Counter(), collections.Counter()
            for side in "ab":
                other = "b" if side == "a" else "a"
                src_ip, dst_ip = GW[other][0], GW[side][0]
                junk = hu.ike_junk(rng, requests[side] * 3, src_ip, OTHER_IP, n=100)
                rng.shuffle(junk)
                for _, _, _, reasons in junk:
                    if len(reasons) == 1:
                        expect[(side, IKE, reasons[0])] += 1
                    elif reasons:
                        ike_either[side] += 1
                    else:
                        ike_replays[side] += 1
                ike_sent[side] = len(junk)
                hu.send_paced(inject[side], [hu.ike_frame(mac[side], mac[other], ip, dst_ip, port, m)
                                             for ip, port, m, _ in junk], per_batch=100, pause=0.1)
            time.sleep(0.5)

            # every frame of the stream arrived, once, in order
            assert stream.sent == 1500
            assert stream.got("b") == list(range(1500)) and stream.got("a") == list(range(1500))
            for side in "ab":
                other = "b" if side == "a" else "a"
                rows = d[side].json("show", "sa")
                # the same SAs; the inbound window moved with the genuine packets only
                assert sorted((r["direction"], r["spi"]) for r in rows) == spis[side]
                out = next(r for r in d[other].json("show", "sa") if r["direction"] == "out")
                inb = next(r for r in rows if r["direction"] == "in" and r["spi"] == out["spi"])
                assert (inb["seq"], inb["packets"]) == (out["seq"], out["packets"])
                errs = d[side].errors()
                got = collections.Counter({k: v - errors0[side].get(k, 0) for k, v in errs.items()})
                ifs = d[side].interfaces()
                assert ifs[f"up{side}"]["rx_drops"] == ifs0[side][f"up{side}"]["rx_drops"]   # all seen
                for (x, node, reason), n in expect.items():
                    if x == side and reason not in ("replay", "auth_failed") and node != IKE:
                        assert got[(node, reason)] == n, (side, node, reason, n, got[(node, reason)])
                # IKE: each junk message punted and refused; a replay may instead draw the
                # IKE SA's last response again, and that answer a verdict at the other side
                exact_ike = sum(n for (x, node, _), n in expect.items() if x == side and node == IKE)
                for (x, node, reason), n in expect.items():
                    if x == side and node == IKE:
                        assert got[(node, reason)] >= n, (side, reason, n, got[(node, reason)])
                verdicts = sum(n for (node, r), n in got.items() if node == IKE and r != "punted")
                assert exact_ike <= verdicts <= exact_ike + ike_either[side] + ike_replays[side] + \
                    ike_replays[other], (side, got)
                assert got[(IKE, "punted")] >= ike_sent[side]
                exact = expect[(side, ESP, "auth_failed")]
                assert exact <= got[(ESP, "auth_failed")]
                assert got[(ESP, "replay")] + got[(ESP, "auth_failed")] == exact + either[side]
                # (by the inbound SAs: when both gateways initiated, each has two CHILD_SAs)
                drops = collections.Counter()
                for r in rows:
                    if r["direction"] == "in":
                        drops.update(r["drops"])
                assert drops["replay"] + drops["auth_failed"] >= exact + either[side]
                assert drops["encap_mismatch"] >= expect[(side, ESP, "encap_mismatch")]
                assert got[(IKE, "queue_full")] == 0

            # B restarts while both gateways are flooded with IKE junk made of the genuine
            # requests seen so far
            stop = threading.Event()

            def flood():
                frames = {}
                for side in "ab":
                    other = "b" if side == "a" else "a"
                    frames[side] = [hu.ike_frame(mac[side], mac[other], ip, GW[side][0], port, m)
                                    for ip, port, m, _ in hu.ike_junk(rng, requests[side] * 5, GW[other][0],
                                                                        OTHER_IP, n=150)]
                    rng.shuffle(frames[side])
                while not stop.is_set():
                    for side in "ab":
                        hu.send_paced(inject[side], frames[side], per_batch=100, pause=0.02)

            flooder = threading.Thread(target=flood, daemon=True)
            assert d["b"].stop() == 0
            flooder.start()
            try:
                time.sleep(1.0)
                d["b"] = Daemon(nsb, tmp_path / "b2.sock", tmp_path / "b2.log")
                configure_site(d["b"], "b")
                deadline = time.monotonic() + 40
                while not tunnel_up(d["a"], d["b"]):
                    assert d["a"].ctl("version").returncode == 0           # A answers meanwhile
                    assert time.monotonic() < deadline, (d["b"].json("show", "sa"), d["b"].errors())
                    time.sleep(0.3)
                after = Stream(hosts, host_rx, b"AFT").start(300)
                after.wait()
            finally:
                stop.set()
                flooder.join(30)
            assert after.got("b") == list(range(300)) and after.got("a") == list(range(300))
            for side in "ab":
                errs = d[side].errors()
                assert errs.get((IKE, "invalid_syntax"), 0) > 0 and errs.get((IKE, "unknown_spi"), 0) > 0
            assert all(d[x].alive() for x in "ab")
        finally:
            rcs = [d[x].stop() for x in "ab"]
            for x in "ab":
                sniff[x].close()
                host_rx[x].close()
                hosts[x].close()
                inject[x].close()
        assert rcs == [0, 0], (d["a"].log_text(), d["b"].log_text())


# ---------------------------------------------------------------- 2. MAC flood

STA, STB = "0a:00:00:00:00:0a", "0a:00:00:00:00:0b"
FLOOD_DST = "0a:00:00:00:00:ff"          # a static entry on the flooder's own port
TABLE = 4096
FLOOD = 1_000_000


@root_only
def test_mac_flood_keeps_table_bounded_and_stations_unicast(tmp_path):
    with Netns("fdp") as dp, Netns("fsa") as nsa, Netns("fsb") as nsb, Netns("fso") as nso, \
            Netns("ffl") as nsf, veth_pair("d1", "eth0", dp, nsa), veth_pair("d2", "eth0", dp, nsb), \
            veth_pair("d3", "eth0", dp, nso), veth_pair("d4", "eth0", dp, nsf):
        d = Daemon(dp, tmp_path / "fp.sock", tmp_path / "fp.log")
        socks = {}
        try:
            d.do("add-br", "br0", f"other_config:mac-table-size={TABLE}")
            for p in ("d1", "d2", "d3", "d4"):
                d.do("add-port", "br0", p)
            d.do("fdb/add", "br0", "d4", "0", FLOOD_DST)
            for name, ns in (("a", nsa), ("b", nsb), ("o", nso)):
                with ns.entered():
                    socks[name] = packet_socket("eth0")
            sa, sb, so = socks["a"], socks["b"], socks["o"]

            rx_a, rx_b = [], []                 # everything the stations received

            def exchange(seq, phase):
                sa.send(station_frame(STA, STB, seq, phase))
                sb.send(station_frame(STB, STA, seq, phase))
                pump()

            def pump(timeout=0.0):
                rx_b.extend(recv_frames(sb, timeout))
                rx_a.extend(recv_frames(sa, timeout))

            # both stations known before the flood
            deadline = time.monotonic() + 10
            while not ({r["mac"] for r in d.json("fdb/show", "br0")} >= {STA, STB}):
                assert time.monotonic() < deadline
                exchange(0, b"HEL")
                time.sleep(0.05)
            base = d.interfaces()
            rss0 = d.rss_kb()

            flood = nsf.popen([sys.executable, os.path.join(REPO, "tests", "hostileutil.py"), "macflood",
                               "eth0", "--count", str(FLOOD), "--dst", FLOOD_DST],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
            # the stations keep talking while the flood runs; the table is sampled meanwhile
            stop = threading.Event()
            sent = [0]

            def talk():
                seq = 0
                while not stop.is_set():
                    seq += 1
                    exchange(seq, b"DUR")
                    sent[0] = seq
                    time.sleep(0.01)

            t = threading.Thread(target=talk, daemon=True)
            t.start()
            samples, rss = [], [rss0]
            try:
                while flood.poll() is None:
                    rows = d.json("fdb/show", "br0")
                    st = d.json("fdb/stats", "br0")
                    samples.append((len(rows), st["n_entries"], st["evicted"]))
                    rss.append(d.rss_kb())
                    time.sleep(0.2)
                out, err = flood.communicate(timeout=60)
            finally:
                stop.set()
                t.join(10)
                if flood.poll() is None:
                    flood.kill()
            result = json.loads(out)
            assert result["sent"] == FLOOD, err
            # let the daemon finish what is queued, then the last of the stations' frames
            prev = None
            for _ in range(100):
                cur = d.interfaces()["d4"]["rx_packets"]
                if cur == prev:
                    break
                prev = cur
                time.sleep(0.2)
            pump(0.3)
            pump(0.1)

            ifs = d.interfaces()
            st = d.json("fdb/stats", "br0")
            rows = d.json("fdb/show", "br0")
            errs = d.errors()
            flood_rx = ifs["d4"]["rx_packets"] - base["d4"]["rx_packets"]
            samples.append((len(rows), st["n_entries"], st["evicted"]))
            rss.append(d.rss_kb())
            print(f"\nflood: {flood_rx} of {FLOOD} frames reached the switch; fdb {st}; "
                  f"{len(samples)} samples; rss {rss0} -> {max(rss)} kB; stations sent {sent[0]}")
            # a real flood reached the table, and it never held more than its limit
            assert flood_rx >= 10 * TABLE, (flood_rx, ifs["d4"])
            assert flood_rx + ifs["d4"]["rx_drops"] - base["d4"]["rx_drops"] <= FLOOD
            assert all(n_rows <= TABLE and n <= TABLE for n_rows, n, _ in samples), samples
            assert st["max_entries"] == TABLE and st["n_entries"] == len(rows) <= TABLE
            assert d.json("show")["bridge"]["br0"]["mac_table_size"] == TABLE
            # every flood frame learned a new address, each beyond the limit evicted one
            # (the stations' own re-learning after their eviction adds a few)
            assert flood_rx - TABLE <= st["evicted"] <= flood_rx + 2 * sent[0] + 10, (st, flood_rx)
            assert st["learned"] >= flood_rx
            # and went nowhere: its destination is the flooder's own port
            assert errs[("l2-fwd", "same_port")] >= flood_rx
            for p in ("d1", "d2", "d3"):
                assert ifs[p]["tx_packets"] - base[p]["tx_packets"] <= 3 * sent[0] + 10, (p, ifs[p])
            # the stations' frames kept arriving, once each and in order, while it ran
            assert ifs["d1"]["rx_packets"] - base["d1"]["rx_packets"] == sent[0]
            assert ifs["d2"]["rx_packets"] - base["d2"]["rx_packets"] == sent[0]
            assert ifs["d2"]["tx_packets"] - base["d2"]["tx_packets"] == sent[0]     # every A -> B
            assert ifs["d1"]["tx_packets"] - base["d1"]["tx_packets"] == sent[0]     # every B -> A
            assert ifs["d1"]["tx_drops"] == ifs["d2"]["tx_drops"] == 0
            during_b, during_a = station_seqs(rx_b, STA, b"DUR"), station_seqs(rx_a, STB, b"DUR")
            print(f"stations: {len(during_b)}/{sent[0]} A->B and {len(during_a)}/{sent[0]} B->A arrived "
                  f"during the flood")
            assert sent[0] > 0 and during_b and during_a
            assert during_b == sorted(set(during_b)) and during_a == sorted(set(during_a))
            # RSS bounded: the table is allocated once
            assert max(rss) - rss0 < 32 * 1024, rss

            # after the flood: the stations are learned again and talk by unicast only
            exchange(1, b"RLN")
            pump(0.2)
            drain(so)
            del rx_a[:], rx_b[:]
            N = 200
            for seq in range(1, N + 1):
                exchange(seq, b"AFT")
                if seq % 20 == 0:
                    pump(0.005)
            deadline = time.monotonic() + 5
            while (len(station_seqs(rx_a, STB, b"AFT")) < N or len(station_seqs(rx_b, STA, b"AFT")) < N) \
                    and time.monotonic() < deadline:
                pump(0.05)
            assert station_seqs(rx_b, STA, b"AFT") == list(range(1, N + 1))
            assert station_seqs(rx_a, STB, b"AFT") == list(range(1, N + 1))
            seen_o = recv_frames(so, 0.2)
            assert station_seqs(seen_o, STA, b"AFT") == [] and station_seqs(seen_o, STB, b"AFT") == []
            fdb = {r["mac"]: r["port"] for r in d.json("fdb/show", "br0")}
            assert fdb.get(STA) == "d1" and fdb.get(STB) == "d2"
            assert d.alive() and d.ctl("version").stdout.startswith("fastpath")
        finally:
            rc = d.stop()
            for x in socks.values():
                x.close()
        assert rc == 0, d.log_text()


# ---------------------------------------------------------------- 3. scribbling guests

BY1, BY2 = "0a:00:00:00:01:01", "0a:00:00:00:01:02"       # the bystanders
GUEST = "52:54:00:00:00:0e"


def vhost_queue_reset(fe, q):
    """What QEMU does to a queue on a device reset: stop it, then set it up again."""
    from fastpath.vhost import protocol as vu
    fe.send(vu.GET_VRING_BASE, struct.pack("<II", q.index, 0))
    fe.reply(vu.GET_VRING_BASE)
    fe.mem[q.desc:q.used + 8 * fe.num + 8] = bytes(q.used + 8 * fe.num + 8 - q.desc)
    q.avail_idx = q.used_seen = 0
    q.free = list(range(fe.num))
    q.chains.clear()
    fe.start_queue(q)


def scribble_vhost(fe, rng, seconds):
    """Garbage descriptors, avail entries and indices in both queues (test_vhost's random
    rings), restarting the queues now and then as a guest driver would."""
    edges = [fe.GPA, fe.GPA + fe.MEM_SIZE, fe.GPA - 1, 0, 2 ** 64 - 1, fe.GPA + fe.MEM_SIZE - 1]

    def addr():
        if rng.random() < 0.5:
            return (rng.choice(edges) + rng.randint(-4096, 4096)) % 2 ** 64
        return fe.GPA + rng.randrange(fe.MEM_SIZE)

    end = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < end:
        rounds += 1
        for q in fe.queues:
            for i in rng.sample(range(fe.num), 32):
                q.write_desc(i, addr(), rng.choice([0, 1, 12, 60, 2048, 4096, 2 ** 32 - 1, rng.randrange(2 ** 32)]),
                             rng.randrange(8), rng.choice([i + 1, i, rng.randrange(2 ** 16)]))
            for _ in range(8):
                q.push_head(rng.randrange(fe.num) if rng.random() < 0.95 else rng.randrange(2 ** 16),
                            publish=False)
            if rng.random() < 0.1:
                q.avail_idx = rng.randrange(2 ** 16)
            q.publish()
            q.do_kick()
        time.sleep(0.003)
        if rounds % 50 == 0:
            for q in fe.queues:
                vhost_queue_reset(fe, q)
    return rounds


@root_only
def test_scribbling_guests_leave_the_bystanders_alone(tmp_path):
    """A bridge with two veth bystanders exchanging a numbered stream, a vhost-user port
    and a memif port. The test's vhost-user front end and memif peer write garbage into
    their descriptors and rings, jump their indices, and disconnect mid-operation, more
    than once. Each hostile port counts what it refused and is stopped or disconnected;
    the bystanders get every frame, in order; new well-behaved peers attach and talk."""
    import test_vhost
    from test_memif import put_descriptors
    from test_vhost import D_NEXT, FakeFrontEnd, wait_for

    from fastpath.memif.client import MemifClient

    rng = random.Random(3)
    with Netns("fgd") as dp, Netns("fb1") as n1, Netns("fb2") as n2, \
            veth_pair("v1", "eth0", dp, n1), veth_pair("v2", "eth0", dp, n2):
        vsock, msock = str(tmp_path / "vhu0.sock"), str(tmp_path / "mem0.sock")
        d = Daemon(dp, tmp_path / "fp.sock", tmp_path / "fp.log")
        host_rx, socks = {}, {}
        try:
            d.do("add-br", "br0")
            d.do("add-port", "br0", "v1")
            d.do("add-port", "br0", "v2")
            d.do("add-port", "br0", "vhu0", "type=vhost-user", f"options:vhost-socket={vsock}")
            d.do("add-port", "br0", "mem0", "type=memif", f"options:memif-socket={msock}", "options:memif-id=0")
            for side, ns in (("1", n1), ("2", n2)):
                with ns.entered():
                    socks[side] = packet_socket("eth0")
            host_rx = {x: hu.Sniffer(socks[x].dup()) for x in "12"}
            mac = {"1": BY1, "2": BY2}

            def row(name):
                return d.interfaces()[name]

            # the bystanders are known, so their stream is unicast and never reaches a guest;
            # statically: garbage a guest sends may carry a copy of a bystander's frame (the
            # switch wrote some into its buffers), and learning would believe its source
            d.do("fdb/add", "br0", "v1", "0", BY1)
            d.do("fdb/add", "br0", "v2", "0", BY2)
            base = d.interfaces()
            N = 2000
            sent = [0]
            stop = threading.Event()

            def stream():
                for seq in range(N):
                    if stop.is_set():
                        break
                    socks["1"].send(station_frame(BY1, BY2, seq, b"BYS"))
                    socks["2"].send(station_frame(BY2, BY1, seq, b"BYS"))
                    sent[0] = seq + 1
                    time.sleep(0.002)
            t = threading.Thread(target=stream, daemon=True)
            t.start()

            # ---- the vhost-user guest
            fe = FakeFrontEnd(vsock)
            fe.handshake()
            assert wait_for(lambda: row("vhu0")["vhost_running"] == 1, 10)
            fe.post_rx(fe.num // 2)
            good = test_vhost.frame(100, src=GUEST, dst="ff:ff:ff:ff:ff:ff")
            for addr, length in ((fe.GPA + fe.MEM_SIZE, 100), (fe.GPA - 4096, 200), (2 ** 64 - 16, 64),
                                 (fe.GPA, 0xffffffff), (fe.GPA + fe.MEM_SIZE - 50, 100)):
                fe.tx.add_chain([(addr, length, 0)], publish=False)            # outside its memory
            fe.tx.publish()
            fe.transmit([good])
            assert wait_for(lambda: row("vhu0")["rx_desc_bad_addr"] >= 5, 10)
            q = fe.tx
            buf = fe.gpa(fe.TX_BUFS)
            q.write_desc(200, buf, 4, D_NEXT, 200)                              # a loop
            q.push_head(200)
            q.do_kick()
            assert wait_for(lambda: row("vhu0")["rx_chain_loop"] >= 1, 10)
            q.set_avail_idx(q.avail_idx + fe.num + 1)                          # an index jump
            q.do_kick()
            assert wait_for(lambda: row("vhu0")["vhost_queue_failures"] >= 1, 10)
            assert row("vhu0")["rx_avail_jump"] >= 1
            for qq in fe.queues:
                vhost_queue_reset(fe, qq)
            rounds = scribble_vhost(fe, rng, 1.5)
            # mid-operation: clean queues, frames both ways in flight, then the connection
            # is just gone
            for qq in fe.queues:
                vhost_queue_reset(fe, qq)
            fe.post_rx(64)
            rx0 = row("vhu0")["rx_packets"]
            fe.transmit([test_vhost.frame(200, src=GUEST, seq=i) for i in range(100)], kick=True)
            for k in range(20):
                socks["1"].send(station_frame(BY1, "ff:ff:ff:ff:ff:ff", k, b"BRD"))
            wait_for(lambda: row("vhu0")["rx_packets"] > rx0, 5)
            fe.sock.close()
            assert wait_for(lambda: row("vhu0")["vhost_connected"] == 0, 10)
            fe.close()
            # a second guest: garbage on the control socket while its queues run
            from fastpath.vhost import protocol as vu
            fe = FakeFrontEnd(vsock)
            fe.handshake()
            assert wait_for(lambda: row("vhu0")["vhost_running"] == 1, 10)
            fe.post_rx(64)
            fe.transmit([test_vhost.frame(300, src=GUEST, seq=i) for i in range(50)], kick=True)
            fe.send(vu.GET_FEATURES, flags=0x2)                                   # a bad version
            assert wait_for(lambda: row("vhu0")["vhost_connected"] == 0, 10)
            assert row("vhu0")["vhost_framing_errors"] >= 1
            fe.close()

            # ---- the memif peer
            c = MemifClient(msock, id=0)
            assert wait_for(lambda: row("mem0")["memif_connected"] == 1, 10)
            size = len(c.tx.mem)
            off = int(c._tx_buf_off[c._tx_pos & c.tx.mask])
            put_descriptors(c, [(0, 0, 100, size), (0, 0, 100, size - 50), (0, 0, 0xffffffff, 0),
                                (0, 0, 0x200, 0xffffff00), (0, 1, 100, 0), (0, 0xffff, 100, 0),
                                (0, 0, 100, off)])
            assert wait_for(lambda: row("mem0")["rx_desc_bad_addr"] >= 6, 10)
            put_descriptors(c, [(1, 0, 60, off)] * 1024)                       # a chain without end
            assert wait_for(lambda: row("mem0").get("rx_bad_chain", 0) >= 1, 10)
            put_descriptors(c, [], head=c._tx_pos + 5000)                      # the head jumps
            assert wait_for(lambda: row("mem0")["memif_connected"] == 0, 10)
            assert row("mem0")["rx_index_jump"] >= 1 and row("mem0")["memif_ring_failures"] >= 1
            c.close()
            nprng = __import__("numpy").random.default_rng(9)
            for k in range(3):                     # random garbage, then a peer that dies mid-way
                c = MemifClient(msock, id=0)
                assert wait_for(lambda: row("mem0")["memif_connected"] == 1, 10)
                for _ in range(40):
                    descs = [(int(nprng.integers(0, 2)), int(nprng.choice([0, 0, 1, 7])),
                              int(nprng.choice([0, 13, 60, 2048, 2049, 0xffffffff])),
                              int(nprng.choice([0, size - 8, size, 0xfffffff0, int(nprng.integers(0, size))])))
                             for _ in range(int(nprng.integers(1, 30)))]
                    put_descriptors(c, descs)
                    time.sleep(0.005)
                assert c.connected
                c.send([station_frame(GUEST, BY1, i, b"MEM") for i in range(100)])
                for i in range(20):
                    socks["2"].send(station_frame(BY2, "ff:ff:ff:ff:ff:ff", i, b"BRD"))
                c._teardown()                      # gone without a word, frames in flight
                assert wait_for(lambda: row("mem0")["memif_connected"] == 0, 10)
            t.join(60)
            stop.set()

            # ---- the bystanders: every frame, once, in order
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not all(
                    len(station_seqs(host_rx[x].frames, mac["2" if x == "1" else "1"], b"BYS")) >= sent[0]
                    for x in "12"):
                time.sleep(0.05)
            time.sleep(0.2)
            assert sent[0] == N
            assert station_seqs(host_rx["2"].frames, BY1, b"BYS") == list(range(N))
            assert station_seqs(host_rx["1"].frames, BY2, b"BYS") == list(range(N))
            ifs = d.interfaces()
            for p in ("v1", "v2"):
                # nothing lost on the bystanders' ports (oversized garbage a guest flooded to
                # them is refused there as tx_too_big, which is not theirs)
                assert ifs[p]["rx_drops"] == base[p]["rx_drops"]
                assert ifs[p]["tx_drops"] - ifs[p]["tx_too_big"] == base[p]["tx_drops"] - base[p]["tx_too_big"]
            # the hostile ports: what they did is counted, and they were cut off
            vh, mm = ifs["vhu0"], ifs["mem0"]
            assert vh["rx_desc_bad_addr"] >= 5 and vh["rx_chain_loop"] >= 1 and vh["vhost_queue_failures"] >= 1
            assert vh["rx_drops"] > 5 and vh["vhost_disconnects"] == 2 and vh["vhost_connected"] == 0
            assert mm["rx_desc_bad_addr"] >= 6 and mm["rx_index_jump"] >= 1 and mm["memif_disconnects"] == 4
            assert mm["rx_drops"] > 6 and mm["memif_connected"] == 0
            print(f"\nvhost: {rounds} rounds of garbage; vhost-user { {k: v for k, v in vh.items() if v} }; "
                  f"memif { {k: v for k, v in mm.items() if v} }")

            # ---- well-behaved peers attach and talk, both ways
            fe = FakeFrontEnd(vsock)
            try:
                fe.handshake()
                assert wait_for(lambda: row("vhu0")["vhost_running"] == 1, 10)
                fe.post_rx(32)
                c = MemifClient(msock, id=0)
                assert wait_for(lambda: row("mem0")["memif_connected"] == 1, 10)
                hello = station_frame(BY1, "ff:ff:ff:ff:ff:ff", 7, b"NEW")
                socks["1"].send(hello)
                got = []
                assert wait_for(lambda: got.extend(f for _, f in fe.received()) or hello in got, 10)
                mgot = []
                assert wait_for(lambda: mgot.extend(c.recv()) or hello in mgot, 10)
                for k, send in ((8, lambda f: fe.transmit([f])), (9, lambda f: c.send([f]))):
                    send(station_frame(GUEST, BY1, k, b"NEW"))
                    assert wait_for(lambda k=k: k in station_seqs(host_rx["1"].frames, GUEST, b"NEW"), 10)
                c.close()
            finally:
                fe.close()
            assert d.alive() and d.ctl("version").stdout.startswith("fastpath")
        finally:
            rc = d.stop()
            for x in host_rx.values():
                x.close()
            for x in socks.values():
                x.close()
        assert rc == 0, d.log_text()
