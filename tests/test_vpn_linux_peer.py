"""A Linux kernel as the IPsec peer of a fastpath VPN tunnel with manual SAs.

A QEMU guest (TCG) is the other end of tunnel port vpn0: its eth0 is a virtio-net device
on fastpath's vhost-user uplink vhu0; it sets up ESP transport-mode SAs with `ip xfrm`
(rfc4106(gcm(aes)), with or without `flag esn`), policies that protect VXLAN (UDP 4789)
between the two, a vxlan device (VNI 100) and a VLAN 10 subinterface on it. A host in a
network namespace sits on VLAN 10 of fastpath's bridge:

    host ns 10.10.0.1 -- veth -- [afpacket tag=10  br0  vpn0] ~ vhu0 192.0.2.1
                                                                      |  ESP(VXLAN(802.1Q))
                               guest eth0 192.0.2.2, vxlan100.10 10.10.0.2

With the same ESN setting on both sides, the guest and the host ping each other. With
different settings the sequence numbers on the wire look the same, but the ICV covers
different associated data (SPI|seq vs SPI|seq_hi|seq_lo), so every packet fails
authentication on both sides: fastpath counts auth_failed on its inbound SA and delivers
nothing to the host, and the guest kernel counts XfrmInStateProtoError.

Needs what test_vhost.py's guests need, and iproute2 (busybox's `ip` has no xfrm).
"""
import contextlib

import pytest

from fastpath.switch import Switch
from netns import Netns, unique_name, veth_pair
from test_vhost import Guest, icmp_ping, running, vstats
from test_vhost import sockdir  # noqa: F401 (a fixture)

FP_IP, GUEST_IP = "192.0.2.1", "192.0.2.2"
HOST_IP, GUEST_VLAN_IP = "10.10.0.1", "10.10.0.2"
VNI, VLAN = 100, 10
IPROUTE2 = "/bin/ip"                 # iproute2's binary: copied into the guest with its libraries
# ESP in the guest; aes_generic is usually built in (modprobe says so and it is skipped);
# drbg + sha512_generic give the kernel a default RNG, without which no ESP SA initialises
GUEST_MODULES = ("xfrm_user", "esp4", "aes_generic", "gcm", "ghash-generic", "ctr", "seqiv",
                 "echainiv", "authenc", "drbg", "sha512_generic", "vxlan", "8021q")
# AES-128 key || 4-byte salt, as `ip xfrm ... aead 'rfc4106(gcm(aes))' 0x... 128` takes it
SPI_TO_GUEST, KEY_TO_GUEST = 0x1001, "0x" + bytes(range(0x10, 0x24)).hex()
SPI_TO_FP, KEY_TO_FP = 0x2002, "0x" + bytes(range(0x40, 0x54)).hex()


def guest_script(esn, wait):
    """Configure IPsec, VXLAN and VLAN 10 (stop at the first error), ping the host (giving
    up after `wait` seconds) and say how it went; then print the kernel's non-zero XFRM
    error counters whenever they change."""
    flags = "replay-window 64 flag esn" if esn else ""        # the kernel wants a window with ESN
    aead = "mode transport aead 'rfc4106(gcm(aes))'"
    # `proto 17`, not `udp`: the guest has no /etc/protocols. IPv6 off: no ND/MLD noise.
    return f"""
IP={IPROUTE2}
set -e
echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
$IP link set lo up
$IP link set eth0 up
$IP addr add {GUEST_IP}/24 dev eth0
$IP xfrm state add src {FP_IP} dst {GUEST_IP} proto esp spi {SPI_TO_GUEST:#x} {aead} {KEY_TO_GUEST} 128 {flags}
$IP xfrm state add src {GUEST_IP} dst {FP_IP} proto esp spi {SPI_TO_FP:#x} {aead} {KEY_TO_FP} 128 {flags}
$IP xfrm policy add src {GUEST_IP} dst {FP_IP} proto 17 dport 4789 dir out tmpl proto esp mode transport
$IP xfrm policy add src {FP_IP} dst {GUEST_IP} proto 17 dport 4789 dir in tmpl proto esp mode transport
$IP link add vxlan{VNI} type vxlan id {VNI} remote {FP_IP} local {GUEST_IP} dstport 4789
$IP link set vxlan{VNI} mtu 1404 up
$IP link add link vxlan{VNI} name vxlan{VNI}.{VLAN} type vlan id {VLAN}
$IP link set vxlan{VNI}.{VLAN} mtu 1400 up
$IP addr add {GUEST_VLAN_IP}/24 dev vxlan{VNI}.{VLAN}
$IP -s xfrm state | grep -E '^src|flag|replay_window'
set +e
if ping -c 3 -w {wait} -W {wait} {HOST_IP}; then echo FP-PING-OK; else echo FP-PING-FAIL; fi
old=
while true; do
    new=$(grep -v '[[:space:]]0$' /proc/net/xfrm_stat | tr -s '\\t\\n ' ' ')
    [ "$new" = "$old" ] || echo "FP-XFRM-STAT $new"
    old=$new
    sleep 0.5
done
"""


@contextlib.contextmanager
def gateway(sock, esn):
    """fastpath: uplink vhu0 (vhost-user, the guest's eth0) at FP_IP; bridge br0 with the
    host's veth on access VLAN 10 and tunnel vpn0 to the guest with manual SAs. Yields
    (switch, host namespace, name of the host's port)."""
    a, b = unique_name("fpla"), unique_name("fplb")
    with Netns() as dp, Netns("fphost") as host, veth_pair(a, b, dp, host):
        host.run(f"ip addr add {HOST_IP}/24 dev {b}")
        sw = Switch(n_buffers=4096)
        try:
            sw.add_ip("vhu0", f"{FP_IP}/24", type="vhost-user", **{"options:vhost-socket": sock})
            sw.add_br("br0")
            with dp.entered():
                sw.add_port("br0", a, type="afpacket", tag=VLAN)
            sw.add_port("br0", "vpn0", type="vxlan", **{
                "options:remote_ip": GUEST_IP, "options:local_ip": FP_IP, "options:key": VNI,
                "options:spi_out": hex(SPI_TO_GUEST), "options:key_out": KEY_TO_GUEST,
                "options:spi_in": hex(SPI_TO_FP), "options:key_in": KEY_TO_FP,
                "options:esn": str(esn).lower()})
            with running(sw):
                yield sw, host, a
        finally:
            sw.close()


def sa_row(sw, direction):
    return next(r for r in sw.vpn.show() if r["direction"] == direction)


CASES = [pytest.param(False, False, id="esn-off"),
         pytest.param(True, True, id="esn-on"),
         pytest.param(False, True, id="fastpath-no-esn-guest-esn"),
         pytest.param(True, False, id="fastpath-esn-guest-no-esn")]


@pytest.mark.root
@pytest.mark.parametrize("fp_esn,guest_esn", CASES)
def test_linux_ipsec_peer_manual_sa(sockdir, fp_esn, guest_esn):
    match = fp_esn == guest_esn
    sock = f"{sockdir}/vhu0.sock"
    with gateway(sock, fp_esn) as (sw, host, host_port):
        g = Guest(sockdir, sock, guest_script(guest_esn, wait=20 if match else 4),
                  modules=GUEST_MODULES, binaries=(IPROUTE2,)).start()
        try:
            assert g.wait_line("FP-PING-", timeout=150), g.console()
            answered = icmp_ping(host, GUEST_VLAN_IP, count=3 if match else 2)
            if not match:
                # fastpath's packets (the host's ARP requests) fail the guest's ICV check
                assert g.wait_line("XfrmInStateProtoError", timeout=20), g.console()
            sa_in, sa_out = sa_row(sw, "in"), sa_row(sw, "out")
            delivered = vstats(sw, host_port)["tx_packets"]
        finally:
            g.stop()
        print(g.console())
        print("fastpath SAs:", sa_in, sa_out, sep="\n  ")
        print("fastpath errors:", [e for e in sw.errors() if e[0]])
        assert sa_in["esn"] is fp_esn and sa_out["esn"] is fp_esn
        assert sa_out["packets"] > 0                   # fastpath did send to the guest
        if match:
            assert "FP-PING-OK" in g.console(), "guest -> host ping failed"
            assert answered == 3, "host -> guest ping failed"
            assert sa_in["packets"] > 0 and not any(sa_in["drops"].values()), sa_in
            assert delivered > 0
            assert "XfrmInStateProtoError" not in g.console()
        else:
            assert "FP-PING-FAIL" in g.console() and answered == 0
            assert sa_in["drops"]["auth_failed"] > 0, sa_in
            assert sa_in["packets"] == 0, sa_in
            assert delivered == 0, "fastpath delivered unauthenticated frames to the host"
