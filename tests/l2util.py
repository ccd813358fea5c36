"""A switch of in-memory ports, and a way to push frames through it and see what leaves."""
import itertools
import os

from scapy.layers.l2 import Dot1Q, Dot1AD, Ether
from scapy.packet import Raw

from fastpath.switch import Switch

BCAST = "ff:ff:ff:ff:ff:ff"
PAYLOAD = Raw(bytes(range(46)))
ETHERTYPE = 0x88b5          # IEEE local experimental: nothing parses it


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


# FASTPATH_TEST_WORKERS=2: the same conformance tests against a two-worker switch. Each
# send() enters on the next worker in turn, so what one worker learned another one uses.
WORKERS = int(os.environ.get("FASTPATH_TEST_WORKERS", "1"))


def make_switch(ports, n_buffers=4096, clock=None, **br_config):
    """ports: {name: {tag:, trunks:, vlan_mode:}} -> Switch with bridge br0 of pg ports."""
    sw = Switch(n_buffers=n_buffers, clock=clock or Clock(), workers=WORKERS)
    sw.next_worker = itertools.cycle(range(WORKERS))
    sw.add_br("br0", **br_config)
    for name, cfg in ports.items():
        sw.add_port("br0", name, type="pg", **cfg)
    return sw


def checksums_right(frame, *layers):
    """Whether frame's checksums in these scapy layers are what scapy computes afresh."""
    fresh = frame.copy()
    for layer in layers:
        del fresh[layer].chksum
    fresh = Ether(bytes(fresh))
    return all(fresh[layer].chksum == frame[layer].chksum for layer in layers)


def send(sw, port, *frames):
    """Inject frames on a port, run to completion, return {port: [frames]} of what left."""
    w = next(sw.next_worker) if hasattr(sw, "next_worker") else 0
    sw.port(port).ios[w][0].add([bytes(f) for f in frames])
    sw.graphs[w].run_until_idle()
    out = {}
    for name, p in sw.ports.items():
        got = [f for io in p.ios for f in io[1].take()]
        if got:
            out[name] = got
    return out


def tx_packets(sw, port):
    """Frames a port sent, over every worker."""
    return sum(io[1].tx_packets for io in sw.port(port).ios)


def frame(tags=(), src="00:00:00:00:00:01", dst=BCAST, payload=PAYLOAD):
    """An Ethernet frame with tags [(tpid, vid, pcp)], outermost first."""
    layers = [Ether(src=src, dst=dst)]
    for tpid, vid, pcp in tags:
        layers[-1].type = tpid
        layers.append(Dot1AD(vlan=vid, prio=pcp) if tpid == 0x88a8 else Dot1Q(vlan=vid, prio=pcp))
    layers[-1].type = ETHERTYPE
    pkt = layers[0]
    for layer in layers[1:]:
        pkt = pkt / layer
    return pkt / payload


def check_pools(sw):
    """Every worker's pool has all its buffers back (nothing leaked, nothing freed twice)."""
    for g in sw.graphs:
        g.pool.check_accounting(0)
