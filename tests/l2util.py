"""A switch of in-memory ports, and a way to push frames through it and see what leaves."""
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


def make_switch(ports, n_buffers=4096, clock=None, **br_config):
    """ports: {name: {tag:, trunks:, vlan_mode:}} -> Switch with bridge br0 of pg ports."""
    sw = Switch(n_buffers=n_buffers, clock=clock or Clock())
    sw.add_br("br0", **br_config)
    for name, cfg in ports.items():
        sw.add_port("br0", name, type="pg", **cfg)
    return sw


def send(sw, port, *frames):
    """Inject frames on a port, run to completion, return {port: [frames]} of what left."""
    sw.port(port).io[0].add([bytes(f) for f in frames])
    sw.graph.run_until_idle()
    out = {}
    for name, p in sw.ports.items():
        got = p.io[1].take()
        if got:
            out[name] = got
    return out


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
