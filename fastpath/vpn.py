"""IPsec on vxlan tunnel ports: manual SAs (spi_in/spi_out/key_in/key_out), or SAs keyed
by IKEv2 (options:psk, fastpath.ike).

Control plane only: it creates SecurityAssociation objects and installs them in
esp-encrypt (outbound, by SA index; vxlan-encap stamps the tunnel's current index on each
frame) and esp-decrypt (inbound, by SPI). IKE messages reach it through the ike-input
node's queue; a 50 ms timer hands them to the tunnels' IKE and runs their timers.
"""
import ipaddress
import logging
import struct
import time

from fastpath.crypto.sa import SecurityAssociation, parse_xfrm_key
from fastpath.ike.tunnel import IkeTunnel, is_ike, NON_ESP_MARKER

log = logging.getLogger("fastpath.vpn")

NAT_T_PORT = 4500


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
    `flag esn`); IKE offers ESN unless options:esn=false."""
    esn = str(options.get("esn", "")).lower()
    return esn == "true" or (is_ike(options) and esn != "false")


class Tunnel:
    """The SAs of one IPsec tunnel port; its IKE when it has a PSK."""

    def __init__(self, vpn, port):
        self.vpn, self.port = vpn, port
        o = port.options
        self.vni = int(o["key"])
        self.local_ip, self.remote_ip = o["local_ip"], o["remote_ip"]
        self.replay_window = int(o.get("replay_window", 64))
        self.esn = uses_esn(o)
        self.encap = "udp" if str(o.get("encap", "")).lower() == "udp" else None
        self.inbound = {}            # spi -> [SecurityAssociation, None]
        self.out = None              # (index, SecurityAssociation) in use
        self.ike = None
        if is_ike(o):
            self.ike = IkeTunnel(self)
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

    # ---- IKE ----

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

    def tick(self, now):
        if self.ike:
            self.ike.tick(now)

    def show(self):
        rows = []
        if self.out:
            rows.append({"tunnel": self.port.name, "remote_ip": self.remote_ip, **self.out[1].stats()})
        retiring = self.ike.retiring if self.ike else {}
        for spi, (sa, _) in self.inbound.items():
            rows.append({"tunnel": self.port.name, "remote_ip": self.remote_ip,
                         "retiring": spi in retiring, **sa.stats()})
        return rows


class Vpn:
    """The IPsec tunnels of one switch."""

    def __init__(self, sw):
        self.sw = sw
        self.encrypt = sw.each("esp-encrypt")
        self.decrypt = sw.graph["esp-decrypt"]    # inbound ESP arrives on worker 0 (the uplink's)
        self.ike_input = sw.graph["ike-input"]
        self.tunnels = {}            # sw_if_index -> Tunnel
        self.next_index = 1
        sw.graph.add_timer(0.05, self.tick)
        from fastpath.crypto import aesgcm
        log.info("ESP AES-GCM engine: %s", aesgcm.IPSEC_MB or
                 f"OpenSSL (intel-ipsec-mb cannot run: {aesgcm.IPSEC_MB_UNUSABLE})")

    def set_outbound(self, index, sa):
        """Every worker encrypts with sa: worker 0 with sa itself, the others with copies
        that have their own cipher context and draw from sa's sequence counter."""
        for w, node in enumerate(self.encrypt.nodes):
            node.set_outbound(index, sa if w == 0 else sa.worker_copy())

    def new_index(self):
        self.next_index += 1
        return self.next_index - 1

    def tick(self, now=None):
        now = time.monotonic() if now is None else now
        q = self.ike_input.queue
        while q:
            rx_if, frame = q.popleft()
            self._dispatch(rx_if, frame, now)
        for t in list(self.tunnels.values()):
            t.tick(now)

    def _dispatch(self, rx_if, frame, now):
        # Ethernet + IPv4 (ip4-input validated it) + UDP 500, or 4500 + marker, + IKE
        ihl = (frame[14] & 0xf) * 4
        src = str(ipaddress.IPv4Address(frame[26:30]))
        dst = str(ipaddress.IPv4Address(frame[30:34]))
        sport, dport, udp_len = struct.unpack("!HHH", frame[14 + ihl:14 + ihl + 6])
        payload = frame[14 + ihl + 8:14 + ihl + udp_len]
        ike = next((t.ike for t in self.tunnels.values()
                    if t.ike and t.remote_ip == src and t.local_ip == dst), None)
        if ike is None:
            self.ike_input.count("no_tunnel")
            log.debug("IKE from %s: no IKE tunnel", src)
        elif dport == 500:
            ike.receive(payload, dport, sport, now)
        elif payload[:4] == NON_ESP_MARKER:          # ip4-udp-input checked it
            ike.receive(payload[4:], dport, sport, now)

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
