"""Manual-key tunnel ports against scapy's IPsec as the peer, set up the way `ip xfrm` sets
up a Linux peer: 32-bit sequence numbers unless ESN is asked for on both sides
(`options:esn=true`, `flag esn`), and `options:replay_window` meaning what `replay-window`
means there. A mismatch either way is an integrity failure, counted and never delivered.
The same cases against a real Linux kernel peer: tests/test_vpn_linux_peer.py."""
import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, IPSecIntegrityError, SecurityAssociation as ScapySA
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.layers.vxlan import VXLAN

from fastpath.control import Control, CommandError
from fastpath.switch import ConfigError
from l2util import frame
from vpnutil import A_IP, B_IP, make_site, taken

KEY_AB = bytes(range(1, 21))           # A -> B: AES-128 key || salt, as `ip xfrm` takes it
KEY_BA = bytes(range(101, 121))
SPI_AB, SPI_BA = 0x1001, 0x2001
B_MAC = "02:00:00:00:00:0b"
HOST_A, HOST_B = "00:00:00:00:0a:01", "00:00:00:00:0b:01"


def manual(esn=None, **extra):
    o = {"options:spi_out": hex(SPI_AB), "options:spi_in": hex(SPI_BA),
         "options:key_out": "0x" + KEY_AB.hex(), "options:key_in": "0x" + KEY_BA.hex(), **extra}
    if esn is not None:
        o["options:esn"] = "true" if esn else "false"
    return o


class ScapyPeer:
    """Site B: answers A's ARP, decrypts what A sends, encrypts VXLAN frames to A."""

    def __init__(self, site, esn):
        self.site, self.up = site, site.uplinks["up"]
        self.rx = ScapySA(ESP, spi=SPI_AB, crypt_algo="AES-GCM", crypt_key=KEY_AB, esn_en=esn)
        self.tx = ScapySA(ESP, spi=SPI_BA, crypt_algo="AES-GCM", crypt_key=KEY_BA, esn_en=esn)
        self.seq = 0

    def wire(self):
        """Run A; answer its ARP; return the ESP packets it sent."""
        esp = []
        for _ in range(3):
            self.site.graph.run_until_idle()
            for f in (Ether(f) for f in self.up.io[1].take()):
                if ARP in f and f[ARP].op == 1 and f[ARP].pdst == B_IP:
                    self.up.io[0].add([bytes(Ether(dst=f.src, src=B_MAC) / ARP(
                        op=2, hwsrc=B_MAC, psrc=B_IP, hwdst=f.src, pdst=f[ARP].psrc))])
                elif IP in f and f[IP].proto == 50:
                    esp.append(f)
        return esp

    def open(self, f):
        return self.rx.decrypt(f[IP])

    def send(self, inner):
        self.seq += 1
        ip = IP(src=B_IP, dst=A_IP, flags="DF") / UDP(sport=49152, dport=4789) / VXLAN(vni=5000) / inner
        pkt = self.tx.encrypt(ip, seq_num=self.seq)
        self.up.io[0].add([bytes(Ether(dst=self.up.mac, src=B_MAC) / pkt)])
        self.site.graph.run_until_idle()


def sa_rows(site, direction):
    return [r for r in site.vpn.show() if r["direction"] == direction]


@pytest.mark.parametrize("esn", [False, True], ids=["no-esn", "esn"])
def test_scapy_peer_with_the_same_esn_setting(esn):
    a = make_site(A_IP, B_IP, tunnel_options=manual(esn))
    peer = ScapyPeer(a, esn)
    assert [r["esn"] for r in a.vpn.show()] == [esn, esn]
    peer.wire()                           # A resolves B first
    a.port("h10").io[0].add([bytes(frame(src=HOST_A, dst=HOST_B))])
    sent = peer.wire()
    assert len(sent) == 1
    plain = peer.open(sent[0])
    assert plain[UDP].dport == 4789 and plain[VXLAN].vni == 5000
    inner = plain[VXLAN].payload
    assert inner[Dot1Q].vlan == 10 and inner[Ether].src == HOST_A
    for k in range(3):
        peer.send(bytes(frame([(0x8100, 10, 0)], src=HOST_B, dst=HOST_A)))
    assert taken(a)["h10"] == [bytes(frame(src=HOST_B, dst=HOST_A))] * 3
    (rin,) = sa_rows(a, "in")
    assert rin["packets"] == 3 and not any(rin["drops"].values()), rin
    a.graph.pool.check_accounting(0)


@pytest.mark.parametrize("esn", [False, True], ids=["fastpath-no-esn", "fastpath-esn"])
def test_an_esn_mismatch_is_an_integrity_failure_both_ways(esn):
    a = make_site(A_IP, B_IP, tunnel_options=manual(esn))
    peer = ScapyPeer(a, not esn)
    peer.wire()                           # A resolves B first
    a.port("h10").io[0].add([bytes(frame(src=HOST_A, dst=HOST_B))])
    sent = peer.wire()
    assert len(sent) == 1
    with pytest.raises(IPSecIntegrityError):
        peer.open(sent[0])
    for k in range(4):
        peer.send(bytes(frame([(0x8100, 10, 0)], src=HOST_B, dst=HOST_A)))
    assert taken(a)["h10"] == []
    (rin,) = sa_rows(a, "in")
    assert rin["packets"] == 0 and rin["drops"]["auth_failed"] == 4, rin
    errors = {(r["node"], r["reason"]): r["count"] for r in Control(a).execute(["show", "errors"], "json")}
    assert errors.get(("esp-decrypt", "auth_failed")) == 4, errors
    a.graph.pool.check_accounting(0)


def test_replay_window_as_ip_xfrm_means_it():
    """replay-window N accepts a packet up to N-1 behind the newest one; 0 accepts every
    sequence number again (no anti-replay), which `ip xfrm` allows only without ESN."""
    for window, accepted in ((0, 5), (1, 2), (4, 4)):
        a = make_site(A_IP, B_IP, tunnel_options=manual(False, **{"options:replay_window": window}))
        peer = ScapyPeer(a, False)
        peer.wire()
        for seq in (10, 9, 7, 10, 11):       # with window 4: 9 and 7 in, the second 10 a replay
            peer.seq = seq - 1
            peer.send(bytes(frame([(0x8100, 10, 0)], src=HOST_B, dst=HOST_A)))
        (rin,) = sa_rows(a, "in")
        assert rin["packets"] == accepted and rin["replay_window"] == window, (window, rin)
        assert rin["drops"]["replay"] == 5 - accepted


def test_esn_options_are_checked():
    ctl = Control(make_site(A_IP, B_IP, tunnel_options=manual()))     # vpn0: the default, no ESN
    tunnel = ["vpn1", "type=vxlan", "options:remote_ip=192.0.2.9", f"options:local_ip={A_IP}", "options:key=7"]
    keys = [f"options:{k}={v}" for k, v in
            (("spi_out", "0x3001"), ("spi_in", "0x3002"), ("key_out", "0x" + KEY_AB.hex()),
             ("key_in", "0x" + KEY_BA.hex()))]
    for bad, why in ((["options:esn=maybe"], "not true or false"),
                     (["options:esn=true", "options:replay_window=0"], "need a replay window"),
                     (["options:replay_window=4097"], "replay_window"),):
        with pytest.raises(CommandError, match=why):
            ctl.execute(["add-port", "br0", *tunnel, *keys, *bad])
    with pytest.raises(CommandError, match="for IPsec tunnels"):
        ctl.execute(["add-port", "br0", *tunnel, "options:esn=false"])
    ctl.execute(["add-port", "br0", *tunnel, *keys, "options:esn=true", "options:replay_window=128"])
    text = ctl.execute(["show", "sa"])
    assert text.count("esn on") == 2 and text.count("esn off") == 2, text
    assert "replay window 128" in text
    with pytest.raises(ConfigError):
        ctl.switch.add_port("br0", "vpn2", type="vxlan", **{"options:remote_ip": "192.0.2.8",
                            "options:local_ip": A_IP, "options:key": 8, "options:esn": "true"})
