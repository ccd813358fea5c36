"""Fuzz the VPN underlay: what arrives on the L3 uplink of an in-memory VPN site
(tests/vpnutil.make_site): ethernet-input -> ip4-input -> arp-input | esp-decrypt |
ip4-udp-input -> vxlan-input | ike-input, and what the bridge sends into the tunnels
(vxlan-encap -> esp-encrypt).

    python fuzz/fuzz_underlay.py -atheris_runs=1000000 [CORPUS_DIR]

The site (192.0.2.2) has three tunnels: vpn0 (ESP, manual SAs, AES-128, peer 192.0.2.1),
vpn1 (ESP in UDP 4500, manual SAs, AES-256, peer .3) and vpn2 (cleartext VXLAN, peer .4);
the inbound SAs are made anew for every input, so an input means the same thing whenever it
runs. An input is 1-4 frames, each one of:
  0  raw bytes on the uplink;
  1  a valid packet built with scapy (ESP and ESP-in-UDP carrying VXLAN, cleartext VXLAN, ARP,
     an IKE message, a NAT-T keepalive, IP options, a fragment, nested ESP, ...) with
     byte-level mutations (overwrite, insert, cut, pad) and optionally the IPv4 checksum,
     total length or UDP length fixed up afterwards, so the mutation reaches past them;
  2  a packet built from fields: every IPv4 header field and options, ESP or ESP-in-UDP or
     VXLAN, SPI, 64-bit sequence number (and the SA's starting point, around 2^32 for ESN),
     padding (right or wrong), pad length, next header, a right or broken ICV, the inner
     UDP and VXLAN headers and the inner frame -- encrypted with the right key, so the
     decrypted side is fuzzed too;
  3  a frame from a host port (h10/h20) into the tunnels (vxlan-encap, esp-encrypt).
Invariants: nothing raises, every buffer back in the pool; the twin oracle; every frame the
site sends on the uplink is >= 14 bytes, fits the MTU, is ARP or a well-formed IPv4 packet
(checksum, total length) and, if it is ESP, authenticates under the tunnel's outbound key
(we decrypt it); no inbound SA accepts more packets than the harness genuinely encrypted
for it (no forgery); a MAC is learned on an IPsec tunnel port only if that tunnel's own SA
accepted a packet (a peer cannot pass its packets off as another tunnel's); no more frames
reach the hosts than were decrypted or came in clear from the cleartext tunnel's peer.
"""
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fuzzcommon import Clock, Observer, Reader, Twin, atheris_main, egress, inject

from fastpath.crypto.sa import SecurityAssociation
from fastpath.nodes.arp import arp_frame

SITE, PEER0, PEER1, PEER2 = "192.0.2.2", "192.0.2.1", "192.0.2.3", "192.0.2.4"
SITE_MAC = bytes.fromhex("020000000002")
PEER_MAC = {PEER0: bytes.fromhex("020000000001"), PEER1: bytes.fromhex("020000000003"),
            PEER2: bytes.fromhex("020000000004")}
IP = {k: bytes(int(x) for x in k.split(".")) for k in (SITE, PEER0, PEER1, PEER2, "192.0.2.9",
                                                          "192.0.2.255", "10.0.0.1")}
# key || salt: vpn0 AES-128, vpn1 AES-256; "in" = what the site decrypts
KEYS = {
    "vpn0": {"in": bytes(range(1, 21)), "out": bytes(range(101, 121)), "spi_in": 0x1000, "spi_out": 0x2000},
    "vpn1": {"in": bytes(range(31, 67)), "out": bytes(range(131, 167)), "spi_in": 0x1001, "spi_out": 0x2001},
}
VNI = {"vpn0": 5000, "vpn1": 5001, "vpn2": 5002}
PEER = {"vpn0": PEER0, "vpn1": PEER1, "vpn2": PEER2}
OUT_KEY = {k["spi_out"]: k["out"] for k in KEYS.values()}
MTU = 1500
_aead = {}


def aead(key):
    a = _aead.get(key)
    if a is None:
        a = _aead[key] = AESGCM(key[:-4])
    return a


def _manual(name, encap=None):
    k = KEYS[name]
    o = {"options:remote_ip": PEER[name], "options:local_ip": SITE, "options:key": VNI[name],
         "options:spi_out": hex(k["spi_out"]), "options:spi_in": hex(k["spi_in"]),
         "options:key_out": "0x" + k["out"].hex(), "options:key_in": "0x" + k["in"].hex(),
         "options:esn": "true"}      # the harness builds and checks ESN packets (high bits in the AAD)
    if encap:
        o["options:encap"] = encap
    return o


def build():
    from vpnutil import make_site
    sw = make_site(SITE, PEER0, clock=Clock(), tunnel_options={k: v for k, v in _manual("vpn0").items()
                                                               if k not in ("options:remote_ip", "options:local_ip",
                                                                            "options:key")},
                   n_buffers=256)
    sw.add_port("br0", "vpn1", type="vxlan", **_manual("vpn1", "udp"))
    sw.add_port("br0", "vpn2", type="vxlan", **{"options:remote_ip": PEER2, "options:local_ip": SITE,
                                                  "options:key": VNI["vpn2"]})
    for peer, mac in PEER_MAC.items():          # the peers answer the site's ARP requests
        inject(sw, "up", [arp_frame(2, mac, peer, SITE_MAC, SITE)])
    sw.graph.run_until_idle()
    egress(sw)
    assert all(sw.graph["vxlan-encap"] is not None for _ in (0,))
    return sw


def reset_sas(sw, start):
    """New inbound SAs (fresh replay windows) with the same keys; start = highest seq seen."""
    for t in sw.vpn.tunnels.values():
        name = t.port.name
        k = KEYS[name]
        sa = SecurityAssociation(k["spi_in"], k["in"], direction="in", esn=True,
                                 replay_window=64, encap=t.encap, seq=start)
        t.install_inbound(sa)


def sa_packets(sw):
    return {t.port.name: int(t.inbound[KEYS[t.port.name]["spi_in"]][0].packets)
            for t in sw.vpn.tunnels.values()}


# ---------------------------------------------------------------- packet builders

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ip4(src, dst, proto, payload, opts=b"", ttl=64, frag=0x4000, ident=0, tos=0,
        total_delta=0, bad_csum=0, version=4, ihl=None):
    opts = opts[:40]
    opts += b"\0" * (-len(opts) % 4)
    hl = 20 + len(opts)
    total = max(0, min(0xffff, hl + len(payload) + total_delta))
    hdr = struct.pack("!BBHHHBBH4s4s", (version << 4) | ((hl // 4) if ihl is None else ihl) & 0xf,
                      tos, total, ident, frag, ttl, proto, 0, src, dst) + opts
    c = csum(hdr) ^ bad_csum
    return hdr[:10] + struct.pack("!H", c) + hdr[12:] + payload


def fix_ip(frame, length=False):
    """Recompute the IPv4 checksum (and total length) of a frame after mutations."""
    if len(frame) < 34:
        return frame
    b = bytearray(frame)
    hl = (b[14] & 0xf) * 4
    if len(b) < 14 + hl or hl < 20:
        return frame
    if length:
        b[16:18] = struct.pack("!H", min(0xffff, len(b) - 14))
    b[24:26] = b"\0\0"
    b[24:26] = struct.pack("!H", csum(bytes(b[14:14 + hl])))
    return bytes(b)


def udp(sport, dport, payload, len_delta=0):
    return struct.pack("!HHHH", sport, dport, max(0, min(0xffff, 8 + len(payload) + len_delta)), 0) + payload


def vxlan(vni, flags=0x08):
    return struct.pack("!II", (flags & 0xff) << 24, (vni & 0xffffff) << 8)


def esp(key, spi, seq, payload, nh, pad=None, padding=None, bad_icv=0):
    """RFC 4303/4106 with ESN: SPI, seq low, IV = seq, ciphertext, ICV."""
    pad = (-(len(payload) + 2)) % 4 if pad is None else pad
    padding = bytes(range(1, pad + 1)) if padding is None else padding
    iv = struct.pack("!Q", seq)
    aad = struct.pack("!III", spi, seq >> 32, seq & 0xffffffff)
    ct = aead(key).encrypt(key[-4:] + iv, payload + padding + bytes([pad & 0xff, nh & 0xff]), aad)
    if bad_icv:
        ct = ct[:-1] + bytes([ct[-1] ^ (bad_icv & 0xff or 1)])
    return struct.pack("!II", spi, seq & 0xffffffff) + iv + ct


def eth(payload, dst=SITE_MAC, src=PEER_MAC[PEER0], etype=0x0800):
    return dst + src + struct.pack("!H", etype) + payload


def inner_frame(vlan=10, size=46, dst=b"\xff" * 6, src=bytes.fromhex("0200000001aa"), etype=0x88b5):
    tag = struct.pack("!HH", 0x8100, vlan) if vlan is not None else b""
    return dst + src + tag + struct.pack("!H", etype) + bytes(k & 0xff for k in range(size))


# ---------------------------------------------------------------- templates (scapy)

_templates = None


def templates():
    """(frame, {esp blob: [SA names it yields]}) pairs: valid packets built with scapy."""
    global _templates
    if _templates is not None:
        return _templates
    from scapy.layers.inet import IP as SIP, UDP as SUDP, ICMP, IPOption_Router_Alert
    from scapy.layers.ipsec import ESP, SecurityAssociation as ScapySA
    from scapy.layers.l2 import ARP, Ether, Dot1Q
    from scapy.layers.vxlan import VXLAN
    from scapy.packet import Raw

    def sa(name, udp_encap=False):
        k = KEYS[name]
        return ScapySA(ESP, spi=k["spi_in"], crypt_algo="AES-GCM", crypt_key=k["in"], esn_en=True,
                       nat_t_header=SUDP(sport=4500, dport=4500) if udp_encap else None)

    def inner(name, vlan, n=46):
        return (SUDP(sport=49152, dport=4789) / VXLAN(vni=VNI[name])
                / Ether(src="02:00:00:00:01:aa", dst="ff:ff:ff:ff:ff:ff") / Dot1Q(vlan=vlan, type=0x88b5)
                / Raw(bytes(range(n))))

    def encrypted(name, ip, seq=1, udp_encap=False):
        p = sa(name, udp_encap).encrypt(SIP(bytes(ip)), seq_num=seq, iv=struct.pack("!Q", seq))
        return bytes(p)

    eth_hdr = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    out = []

    def add(ipbytes, blobs=None, src_mac="02:00:00:00:00:01"):
        f = bytes(Ether(src=src_mac, dst="02:00:00:00:00:02", type=0x0800)) + ipbytes
        out.append((f, blobs or {}))

    def esp_blob(ipbytes, udp_encap=False):
        hl = (ipbytes[0] & 0xf) * 4
        return ipbytes[hl + (8 if udp_encap else 0):]

    ip0 = encrypted("vpn0", SIP(src=PEER0, dst=SITE, flags="DF") / inner("vpn0", 10))
    add(ip0, {esp_blob(ip0): ["vpn0"]})
    ip1 = encrypted("vpn1", SIP(src=PEER1, dst=SITE) / inner("vpn1", 20), udp_encap=True)
    add(ip1, {esp_blob(ip1, True): ["vpn1"]}, "02:00:00:00:00:03")
    add(bytes(SIP(src=PEER2, dst=SITE) / inner("vpn2", 10)), src_mac="02:00:00:00:00:04")
    add(bytes(SIP(src=PEER0, dst=SITE) / inner("vpn0", 10)))                    # not protected
    out.append((bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff")
                      / ARP(op=1, hwsrc="02:00:00:00:00:01", psrc=PEER0, pdst=SITE)), {}))
    out.append((bytes(Ether(src="02:00:00:00:00:09", dst="02:00:00:00:00:02")
                      / ARP(op=2, hwsrc="02:00:00:00:00:09", psrc="192.0.2.9", hwdst="02:00:00:00:00:02",
                            pdst=SITE)), {}))
    # an IKE_SA_INIT header after the non-ESP marker, and on UDP 500 (no IKE tunnel here)
    ike = struct.pack("!8s8sBBBBII", b"S" * 8, bytes(8), 33, 0x20, 34, 8, 0, 28)
    add(bytes(SIP(src=PEER0, dst=SITE) / SUDP(sport=4500, dport=4500) / Raw(bytes(4) + ike)))
    add(bytes(SIP(src=PEER0, dst=SITE) / SUDP(sport=500, dport=500) / Raw(ike)))
    add(bytes(SIP(src=PEER1, dst=SITE) / SUDP(sport=4500, dport=4500) / Raw(b"\xff")))
    ipo = encrypted("vpn0", SIP(src=PEER0, dst=SITE, options=[IPOption_Router_Alert()]) / inner("vpn0", 10, 3))
    add(ipo, {esp_blob(ipo): ["vpn0"]})
    frag = bytearray(ip0)
    frag[6] |= 0x20                                                            # MF
    add(fix_ip(b"\0" * 14 + bytes(frag))[14:], {esp_blob(ip0): ["vpn0"]})
    # a dummy packet (next header 59) and nested ESP: ESP(UDP 4500(ESP-in-UDP for vpn1))
    k0 = KEYS["vpn0"]
    dummy = ip4(IP[PEER0], IP[SITE], 50, esp(k0["in"], k0["spi_in"], 1, b"\0" * 8, 59))
    add(dummy, {esp_blob(dummy): ["vpn0"]})
    k1 = KEYS["vpn1"]
    inner1 = esp(k1["in"], k1["spi_in"], 1, bytes(inner("vpn1", 20))[8:], 17)
    nested_pt = udp(4500, 4500, inner1)
    nested = ip4(IP[PEER0], IP[SITE], 50, esp(k0["in"], k0["spi_in"], 1, nested_pt, 17))
    add(nested, {esp_blob(nested): ["vpn0", "vpn1"]})
    add(bytes(SIP(src=PEER0, dst=SITE) / ICMP()))
    # vpn0's SA, but the outer source and the VNI of vpn1: one peer posing as another tunnel
    plain1 = bytes(SIP(src=PEER1, dst=SITE) / inner("vpn1", 20))[20:]
    spoof = ip4(IP[PEER1], IP[SITE], 50, esp(k0["in"], k0["spi_in"], 1, plain1, 17))
    add(spoof, {esp_blob(spoof): ["vpn0"]}, "02:00:00:00:00:03")
    # the hand-made builder agrees with scapy, byte for byte
    plain = bytes(SIP(src=PEER0, dst=SITE, flags="DF") / inner("vpn0", 10))[20:]
    mine = ip4(IP[PEER0], IP[SITE], 50, esp(k0["in"], k0["spi_in"], 1, plain, 17), frag=0x4000)
    assert esp_blob(mine) == esp_blob(ip0), "hand-made ESP differs from scapy's"
    _templates = out
    return out


# ---------------------------------------------------------------- input decoding

SEQS = (1, 2, 63, 64, 65, 1000, 0xffffffff, 1 << 32, (1 << 32) + 1, (1 << 32) + 100, 0, 5)
STARTS = (0, 0, 0, 100, 0xffffffc0, 0xffffffff, (1 << 32) + 50)


def mutate(r, f):
    b = bytearray(f)
    for _ in range(1 + r.u8() % 6):
        op = r.u8() % 8
        pos = r.u16() % (len(b) + 1)
        if op <= 1 and b:
            b[min(pos, len(b) - 1)] = r.u8()
        elif op == 2 and len(b) > 1:
            b[min(pos, len(b) - 2):min(pos, len(b) - 2) + 2] = r.bytes(2).ljust(2, b"\0")
        elif op == 3:
            b[pos:pos] = r.blob(16)
        elif op == 4:
            del b[pos:pos + 1 + r.u8() % 32]
        elif op == 5:
            del b[pos:]
        elif op == 6:
            b += r.blob(48)                                      # Ethernet padding
        elif op == 7 and b:
            b[min(pos, len(b) - 1)] ^= 1 << (r.u8() % 8)
    fix = r.u8() % 4
    out = bytes(b)
    if fix == 1:
        out = fix_ip(out)
    elif fix == 2:
        out = fix_ip(out, length=True)
    elif fix == 3 and len(out) >= 34 and out[23] == 17:
        hl = (out[14] & 0xf) * 4
        if len(out) >= 14 + hl + 8:
            ub = bytearray(out)
            ub[14 + hl + 4:14 + hl + 6] = struct.pack("!H", min(0xffff, len(out) - 14 - hl))
            out = fix_ip(bytes(ub), length=True)
    return out[:2048]


def structured(r):
    """A frame from fields; returns (frame, {blob: [SA names]})."""
    kind = r.pick(("vpn0", "vpn0", "vpn1", "vpn1", "vpn2", "clear-to-esp", "other-spi", "udp"))
    name = kind if kind in KEYS or kind == "vpn2" else r.pick(("vpn0", "vpn1"))
    src = IP[PEER[name]] if r.u8() % 8 else IP[r.pick(list(IP))]
    dst = IP[SITE] if r.u8() % 8 else IP[r.pick(list(IP))]
    vlan = r.pick((10, 20, 0, None, 10, 4095))
    ifr = inner_frame(vlan=vlan, size=r.pick((0, 1, 46, 100, 1400, 1500)),
                      dst=r.pick((b"\xff" * 6, bytes.fromhex("0200000001bb"), bytes.fromhex("0180c2000000"))),
                      etype=r.pick((0x88b5, 0x0800, 0x8100)))
    if r.chance(5):
        ifr = ifr[:r.int_in(0, len(ifr))]
    vni = VNI[name] if r.u8() % 4 else r.pick(list(VNI.values())) if r.bool() else r.uint(3)
    vx = vxlan(vni, 0x08 if r.u8() % 8 else r.u8()) + ifr
    dport = 4789 if r.u8() % 8 else r.pick((4500, 53, 0, 4790))
    payload = udp(r.pick((49152, 4500, 4789)), dport, vx, r.pick((0, 0, 0, 0, 1, -1, -8, 100)))
    blobs = {}
    proto = 17
    if kind in ("vpn0", "vpn1", "other-spi"):
        k = KEYS[name]
        seq = r.pick(SEQS) if r.u8() % 4 else r.u32() | (r.u8() << 32)
        nh = 17 if r.u8() % 8 else r.pick((59, 4, 50, 0, 255, 6))
        pad = None if r.u8() % 4 else r.u8()
        padding = None
        if pad is not None and r.bool():
            padding = r.bytes(pad).ljust(pad, b"\x01")
        bad_icv = 0 if r.u8() % 4 else r.u8() | 1
        spi = k["spi_in"] if kind != "other-spi" else r.pick((KEYS["vpn0"]["spi_in"] ^ 1, 0, 0xffffffff,
                                                               KEYS["vpn0"]["spi_out"], KEYS["vpn1"]["spi_in"]))
        blob = esp(k["in"], spi, seq & 0xffffffffffffffff, payload[8:] if r.chance(4) else payload, nh,
                   pad, padding, bad_icv)
        if not bad_icv and spi == k["spi_in"]:
            blobs[blob] = [name]
        if name == "vpn1" and r.u8() % 8:
            payload = udp(4500, 4500, blob, r.pick((0, 0, 0, 1, -1)))
        else:
            payload = blob
            proto = 50
    elif kind == "udp":
        payload = udp(r.u16(), r.pick((4500, 4789, 0)), r.blob(64))
    opts = b"" if r.u8() % 6 else r.blob(40)
    frag = r.pick((0x4000, 0x4000, 0, 0x2000, 0x0001, 0x8000, 0x3fff))
    ipb = ip4(src, dst, proto if r.u8() % 16 else r.u8(), payload, opts=opts, ttl=r.u8(), frag=frag,
              ident=r.u16(), tos=r.u8(), total_delta=0 if r.u8() % 6 else r.pick((-1, 1, -20, 8, 1000)),
              bad_csum=0 if r.u8() % 8 else r.u16() | 1,
              version=4 if r.u8() % 16 else r.u8() & 0xf,
              ihl=None if r.u8() % 16 else r.u8() & 0xf)
    f = eth(ipb, dst=SITE_MAC if r.u8() % 8 else r.pick((b"\xff" * 6, bytes(6))),
            src=PEER_MAC.get(PEER[name], PEER_MAC[PEER0]),
            etype=0x0800 if r.u8() % 16 else r.pick((0x0806, 0x8100, 0x86dd)))
    if r.chance(4):
        f += r.blob(60)                                             # Ethernet padding
    return f[:2048], blobs


def merge(blobs, more):
    for blob, names in more.items():
        blobs[blob] = sorted(set(blobs.get(blob, [])) | set(names))


def parse(data):
    r = Reader(data)
    start = r.pick(STARTS) if r.u8() % 4 == 0 else 0
    frames, host, blobs = [], [], {}
    for _ in range(1 + r.u8() % 4):
        mode = r.u8() % 8
        if mode == 0:
            frames.append(r.blob(r.pick((64, 2048)))[:2048])
        elif mode <= 2:
            t, bl = r.pick(templates())
            frames.append(mutate(r, t))
            merge(blobs, bl)
        elif mode <= 5:
            f, bl = structured(r)
            frames.append(f)
            merge(blobs, bl)
            if r.chance(8):
                frames.append(f)                                    # the same again: a replay
        else:
            size = r.pick((0, 14, 46, 1400, 1430, 1450, 1500, 2000))
            vlan = r.pick((None, 10, 20))
            hf = inner_frame(vlan=vlan, size=size, dst=r.pick((b"\xff" * 6, bytes.fromhex("0200000001aa"))),
                             src=bytes.fromhex("0200000010") + bytes([r.u8() & 0xfe]))
            host.append((r.pick(("h10", "h20")), hf[:2048] if r.u8() % 8 else r.blob(64)))
    return start, frames, host, blobs


# ---------------------------------------------------------------- checks

def norm_uplink(f):
    """Checks a frame the site sent on the uplink; returns what must be equal in both twins."""
    assert 14 <= len(f) <= MTU + 14, f"{len(f)}-byte frame on the uplink"
    etype = f[12:14]
    if etype == b"\x08\x06":
        assert len(f) >= 42, "short ARP sent"
        return f
    assert etype == b"\x08\x00", f"uplink frame of type {etype.hex()}"
    ip = f[14:]
    hl = (ip[0] & 0xf) * 4
    assert ip[0] >> 4 == 4 and hl >= 20 and csum(ip[:hl]) == 0, "bad IPv4 header sent"
    assert struct.unpack("!H", ip[2:4])[0] == len(ip), "IPv4 total length != frame"
    proto = ip[9]
    if proto == 17:
        sport, dport, ulen = struct.unpack("!HHH", ip[hl:hl + 6])
        assert ulen == len(ip) - hl, "UDP length wrong"
        if dport != 4500:
            return f                                              # cleartext VXLAN (vpn2)
        e = ip[hl + 8:]
    else:
        assert proto == 50, f"IP protocol {proto} sent"
        e = ip[hl:]
    spi, seq_lo = struct.unpack("!II", e[:8])
    key = OUT_KEY.get(spi)
    assert key is not None, f"ESP with unknown SPI 0x{spi:08x} sent"
    seq = struct.unpack("!Q", e[8:16])[0]
    assert seq & 0xffffffff == seq_lo, "IV is not the sequence number"
    aad = struct.pack("!III", spi, seq >> 32, seq_lo)
    try:
        pt = aead(key).decrypt(key[-4:] + e[8:16], e[16:], aad)
    except InvalidTag:
        raise AssertionError(f"ESP sent with SPI 0x{spi:08x} does not authenticate") from None
    pad, nh = pt[-2], pt[-1]
    assert pt[-2 - pad:-2] == bytes(range(1, pad + 1)) and (len(pt)) % 4 == 0, "bad ESP padding sent"
    assert nh == 17, "ESP next header"
    return (f[:14 + 9], spi, pt)


def check(frames, host, blobs, out, accepted, errs, learned):
    for oname, got in out.items():
        if oname == "up":
            out[oname] = [norm_uplink(g) for g in got]
        else:
            for g in got:
                assert len(g) >= 14, f"{len(g)}-byte frame left {oname}"
    # no forgery: an SA accepts only what we encrypted for it
    allowed = {"vpn0": 0, "vpn1": 0}
    for f in frames:
        for blob, names in blobs.items():
            if blob in f:
                for n in names:
                    allowed[n] += 1
    for name, n in accepted.items():
        assert n <= allowed[name], f"{name} accepted {n} packets, only {allowed[name]} were genuine"
    # a frame enters the bridge through an IPsec tunnel only if that tunnel's SA took it
    for port in learned:
        assert port not in accepted or accepted[port] > 0, \
            f"a MAC was learned on {port}, whose SA accepted nothing: {accepted}"
    clear = sum(1 for f in frames if len(f) >= 34 and f[26:30] == IP[PEER2])
    to_hosts = len(out.get("h10", [])) + len(out.get("h20", []))
    from_hosts = len(host)
    assert to_hosts <= sum(accepted.values()) + clear + from_hosts, \
        f"{to_hosts} frames reached the hosts: decrypted {accepted}, {clear} in clear"


_twin = None
_obs = None


def _setup():
    global _twin, _obs
    if _twin is None:
        _twin = Twin(build)
        _obs = Observer(_twin.a.graph)


def one_input(data):
    _setup()
    start, frames, host, blobs = parse(data)

    def run(sw):
        g = sw.graph
        n_err = len(g.error_names)
        before_err = g.error_counts[:n_err].copy()
        reset_sas(sw, start)
        sw.fdb_flush("br0")
        before = sa_packets(sw)
        if frames:
            inject(sw, "up", frames)
        for port, f in host:
            inject(sw, port, [f])
        g.run_until_idle()
        sw.vpn.tick(sw.clock())                      # ike-input's queue (no IKE tunnels)
        g.pool.check_accounting(0)
        after = sa_packets(sw)
        accepted = {k: after[k] - before[k] for k in after}
        out = egress(sw)
        d = g.error_counts[:n_err] - before_err
        errs = {g.error_names[k][:2]: int(d[k]) for k in d.nonzero()[0]}
        learned = {row["port"] for row in sw.fdb_rows("br0")}
        check(frames, host, blobs, out, accepted, errs, learned)
        assert not sw.graph["ike-input"].queue
        return out, accepted, errs

    _twin.run(run)
    _obs.features()


def seeds():
    out = []
    for k in range(len(templates())):
        # mode 1, template k, one harmless mutation (append nothing), no fix-up
        out.append(bytes([1, 0, 1, k, 0, 6, 0, 0, 0, 0]))
    return out


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
