"""vhost-user offloads: partial checksums, TCP super-frames and jumbo frames between a
guest and fastpath (issue #14).

Part one boots a Linux guest whose virtio-net keeps its default offloads (nothing is
turned off) on a fastpath bridge with a veth into a host namespace: TCP both ways with
checked content, and 9000-byte MTU pings with DF set both ways. Counters prove the
offloads were used: super-frames and partial checksums crossed the port whole.

Part two forges virtio-net headers from a fake driver (tests/test_vhost.py's
FakeFrontEnd): each bad or unsupported header is a counted drop, big frames use big
buffers, and the pool's accounting stays exact.
"""
import contextlib
import hashlib
import os
import socket
import struct
import threading
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw

from fastpath.switch import Switch
from fastpath.vhost import protocol as vu

from test_vhost import (GUEST_IP, GUEST_MAC, GUEST_NET, HOST_IP, HOST_MAC, Guest, connect,
                        icmp_ping, inject, pg_frames, running, rx_frames, sockdir, sw, vstats,
                        wait_for)

__all__ = ["sockdir", "sw"]          # fixtures, used by name

OFFLOAD_FEATURES = (vu.F_CSUM | vu.F_GUEST_CSUM | vu.F_GUEST_TSO4 | vu.F_GUEST_TSO6
                    | vu.F_HOST_TSO4 | vu.F_HOST_TSO6)

# ---------------------------------------------------------------- a real guest


@contextlib.contextmanager
def offload_bridge(mtu=None, **vhost_options):
    """A fastpath bridge: a vhost-user port and an afpacket port on a veth whose other end
    is in namespace `peer` (HOST_IP), both veth ends at `mtu` when given (before the
    afpacket port opens: it takes the interface's MTU). Yields (switch, peer)."""
    from netns import Netns, unique_name, veth_pair
    a, b = unique_name("fpoa"), unique_name("fpob")
    with Netns() as dp, Netns() as peer, veth_pair(a, b, dp, peer):
        peer.run(f"ip link set {b} address {HOST_MAC}")
        peer.run(f"ip addr add {HOST_IP}/24 dev {b}")
        if mtu:
            dp.run(f"ip link set {a} mtu {mtu}")
            peer.run(f"ip link set {b} mtu {mtu}")
        sw = Switch(n_buffers=8192)
        try:
            sw.add_br("br0")
            with dp.entered():
                sw.add_port("br0", a, type="afpacket")
            sw.add_port("br0", "vhu0", type="vhost-user",
                        **{f"options:{k}": v for k, v in vhost_options.items()})
            with running(sw):
                yield sw, peer
        finally:
            sw.close()


def serve_once(peer, port, send=None, expect=0, timeout=120.0):
    """A TCP server in namespace peer for one connection: sends `send` and closes, or reads
    `expect` bytes and closes. Returns (thread, result dict: bytes, seconds)."""
    with peer.entered():
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((HOST_IP, port))
    srv.listen(1)
    srv.settimeout(timeout)
    result = {"bytes": b"", "seconds": 0.0}

    def run():
        try:
            c, _ = srv.accept()
        except OSError:
            return
        finally:
            srv.close()
        c.settimeout(timeout)
        t0 = time.monotonic()
        with c:
            if send is not None:
                c.sendall(send)
            else:
                parts, n = [], 0
                while n < expect:
                    d = c.recv(1 << 20)
                    if not d:
                        break
                    parts.append(d)
                    n += len(d)
                result["bytes"] = b"".join(parts)
        result["seconds"] = time.monotonic() - t0

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, result


@pytest.mark.root
def test_tcp_both_ways_with_default_offloads(sockdir):
    """The guest downloads 16 MiB from the namespace and uploads them back; both copies are
    checked. Its virtio-net keeps every default offload: its TCP super-frames (HOST_TSO4)
    and partial checksums come through whole, and the veth's super-frames reach it whole
    (GUEST_TSO4)."""
    size = 16 << 20
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    script = GUEST_NET + f"""
ping -c 1 -w 10 {HOST_IP} >/dev/null
echo FP-READY
busybox nc {HOST_IP} 5201 </dev/null >/tmp/in
echo FP-DOWN $(busybox sha256sum /tmp/in)
busybox nc {HOST_IP} 5202 </tmp/in >/dev/null
echo FP-UP-DONE
sleep 60
"""
    sock = f"{sockdir}/vm.sock"
    with offload_bridge(**{"vhost-socket": sock}) as (sw, peer):
        down, down_res = serve_once(peer, 5201, send=data)
        up, up_res = serve_once(peer, 5202, expect=size)
        g = Guest(sockdir, sock, script).start()
        try:
            assert g.wait_line("FP-READY", timeout=90), g.console()
            vport = sw.port("vhu0").io[2]
            features = vport.status()["features"]
            assert features & OFFLOAD_FEATURES == OFFLOAD_FEATURES, hex(features)
            assert vport.status()["offload_caps"] == 7
            assert g.wait_line("FP-DOWN", timeout=120), g.console()
            down.join(10)
            line = next(ln for ln in g.lines if "FP-DOWN" in ln)
            assert digest in line, (line, digest)
            assert g.wait_line("FP-UP-DONE", timeout=120), g.console()
            up.join(10)
            assert len(up_res["bytes"]) == size and up_res["bytes"] == data
            s = vstats(sw)
            print({k: v for k, v in s.items() if v and k not in ("name", "type", "bridge")})
            for way, res in (("namespace -> guest", down_res), ("guest -> namespace", up_res)):
                print(f"{way}: {size >> 20} MiB in {res['seconds']:.2f} s, "
                      f"{size * 8 / res['seconds'] / 1e6:.0f} Mbit/s")
            # the offloads were used, both ways
            assert s["vhost_rx_gso_frames"] > 0 and s["vhost_rx_csum_partial"] > 0, s
            assert s["vhost_rx_big_frames"] > 0, s
            assert s["vhost_tx_gso_frames"] > 0 and s["vhost_tx_csum_partial"] > 0, s
            assert s["vhost_tx_big_frames"] > 0, s
            assert s["rx_drops"] == 0, s
            assert not s.get("tx_bad_offload") and not s.get("rx_bad_offload"), s
        finally:
            g.stop()
        # the guest is gone: nothing goes to it with offload state any more
        assert wait_for(lambda: vstats(sw)["vhost_connected"] == 0)
        assert sw.port("vhu0").io[2].status()["offload_caps"] == 0
        sw.graph.pool.check_accounting()


@pytest.mark.root
def test_jumbo_ping_with_df_both_ways(sockdir):
    """MTU 9000 on the guest's eth0 and on the veth: 8972-byte ICMP payloads with DF set
    (9000-byte IP packets) cross the bridge both ways, in big buffers."""
    script = GUEST_NET + f"""
ip link set eth0 mtu 9000
if /usr/bin/ping -c 3 -i 0.3 -W 5 -M do -s 8972 {HOST_IP}; then echo FP-JUMBO-OK; else echo FP-JUMBO-FAIL; fi
sleep 60
"""
    sock = f"{sockdir}/vm.sock"
    with offload_bridge(mtu=9000, **{"vhost-socket": sock}) as (sw, peer):
        g = Guest(sockdir, sock, script, binaries=("/usr/bin/ping",)).start()
        try:
            assert g.wait_line("FP-JUMBO-OK", timeout=120), g.console()
            r = peer.run(f"ping -c 3 -i 0.3 -W 5 -M do -s 8972 {GUEST_IP}", check=False)
            assert " 3 received" in r.stdout, r.stdout
            s = vstats(sw)
            assert s["vhost_rx_big_frames"] >= 6 and s["vhost_tx_big_frames"] >= 6, s
            assert s["rx_drops"] == 0 and s["tx_drops"] == 0, s
        finally:
            g.stop()
        sw.graph.pool.check_accounting()
