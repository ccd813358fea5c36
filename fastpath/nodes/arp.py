"""arp-input: ARP on L3 (uplink) ports, in Python -- it is the slow path.

Answers requests for the port's own address (the reply is written into the request's
buffer and sent back out of the port), and records the sender of every ARP packet on
the port's subnet in the neighbour table (`show arp`), which resolves tunnel next hops.
errors: consumed (an ARP packet learned from and not answered), bad_arp, not_ours.
"""
import ipaddress
import struct
import time

import numpy as np

from fastpath.graph.node import Node

ARP_REPLY_NEXT = 1


def arp_frame(op, src_mac, src_ip, dst_mac, dst_ip, eth_dst=None):
    """An Ethernet ARP packet (op 1 request, 2 reply); MACs are 6 bytes, IPs dotted."""
    eth_dst = eth_dst or (b"\xff" * 6 if op == 1 else dst_mac)
    return (eth_dst + src_mac + b"\x08\x06" +
            struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) +
            src_mac + ipaddress.IPv4Address(src_ip).packed +
            dst_mac + ipaddress.IPv4Address(dst_ip).packed)


class ArpInput(Node):
    node_name = "arp-input"
    next_nodes = ("interface-output",)
    errors = (("consumed", "ARP packet learned from"),
              ("bad_arp", "malformed ARP packet"),
              ("not_ours", "ARP packet on a port with no address"))

    def __init__(self, name=None):
        super().__init__(name)
        self.addresses = {}          # sw_if_index -> (IPv4Interface, mac bytes)
        self.neighbours = {}         # (sw_if_index, ip str) -> (mac bytes, time seen)
        self.on_learn = None         # callback(sw_if_index, ip, mac) for the control plane
        self.clock = time.monotonic

    def process(self, vector):
        pool = self.pool
        nxt, err, tx = pool.meta("next"), pool.meta("error"), pool.meta("tx_if")
        for b in vector.tolist():
            port = int(pool.meta("rx_if")[b])
            frame = pool.get_frame(b)
            verdict = self._handle(port, frame)
            if isinstance(verdict, bytes):
                pool.set_frame(b, verdict)
                tx[b] = port
                nxt[b] = ARP_REPLY_NEXT
            else:
                nxt[b] = 0
                err[b] = self.error_code(verdict)

    def _handle(self, port, frame):
        if len(frame) < 42:
            return "bad_arp"
        htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (1, 2):
            return "bad_arp"
        mine = self.addresses.get(port)
        if mine is None:
            return "not_ours"
        iface, mac = mine
        sha, spa = frame[22:28], ipaddress.IPv4Address(frame[28:32])
        tpa = ipaddress.IPv4Address(frame[38:42])
        if spa in iface.network and spa != iface.ip and not sha[0] & 1:
            self.neighbours[(port, str(spa))] = (sha, self.clock())
            if self.on_learn:
                self.on_learn(port, str(spa), sha)
        if op == 1 and tpa == iface.ip:
            return arp_frame(2, mac, str(iface.ip), sha, str(spa))
        return "consumed"

    def format_trace(self, b):
        return "ARP reply" if self.pool.meta("next")[b] == ARP_REPLY_NEXT else "ARP consumed"

    def show(self, port_names, now=None):
        now = self.clock() if now is None else now
        rows = sorted((port_names.get(p, str(p)), ip, mac.hex(":"), int(now - t))
                      for (p, ip), (mac, t) in self.neighbours.items())
        return rows
