"""Port types: how each `type=` of add-port becomes input and output nodes.

Each type is a function (graph, port) -> io object that adds `<port>-input` and
`<port>-output` nodes and registers the port with interface-output.
"""


def _wire(graph, port, inp, out, mtu=9000):
    graph.add(out)
    graph.add(inp)
    graph["interface-output"].set_interface(port.sw_if_index, out.name, True, mtu)


def pg(graph, port):
    """In-memory port: frames injected from Python, frames collected in a list."""
    from fastpath.pg.pg import PgInput, PgOutput
    inp = PgInput(f"{port.name}-input", port.sw_if_index)
    out = PgOutput(f"{port.name}-output", port.sw_if_index, keep=port.options.get("keep", True) not in (False, "false"))
    _wire(graph, port, inp, out)
    return (inp, out)


def afpacket(graph, port):
    """A Linux interface through AF_PACKET mmap rings (system ports in OVS's words)."""
    from fastpath.afpacket.afpacket import AfPacketSocket, AfPacketInput, AfPacketOutput
    fanout = port.options.get("fanout_group")
    sock = AfPacketSocket(port.name, fanout_group=int(fanout) if fanout else None)
    try:
        inp = AfPacketInput(f"{port.name}-input", sock, port.sw_if_index)
        out = AfPacketOutput(f"{port.name}-output", sock, port.sw_if_index)
        _wire(graph, port, inp, out)
    except Exception:
        sock.close()
        raise
    return (inp, out, sock)


def internal(graph, port):
    """An internal port: a TAP device the host stack can use, as in Open vSwitch."""
    from fastpath.tap.tap import TapDevice, TapInput, TapOutput
    tap = TapDevice(port.name, mtu=int(port.options.get("mtu", 1500)))
    try:
        inp = TapInput(f"{port.name}-input", tap, port.sw_if_index)
        out = TapOutput(f"{port.name}-output", tap, port.sw_if_index)
        _wire(graph, port, inp, out)
    except Exception:
        tap.close()
        raise
    return (inp, out, tap)


def vxlan(graph, port):
    """A VXLAN tunnel port: frames output to it go to vxlan-encap (which sends them out of
    the uplink); frames vxlan-input decapsulates arrive as if received on it."""
    graph["interface-output"].set_interface(port.sw_if_index, "vxlan-encap", True, 65535)
    return ()


def vhost_user(graph, port):
    """A virtio-net guest over vhost-user: options:vhost-socket=PATH (fastpath listens,
    QEMU connects) or options:vhost-server-path=PATH (fastpath connects and reconnects,
    as Open vSwitch's dpdkvhostuserclient)."""
    from fastpath.vhost.protocol import VhostUserPort
    from fastpath.vhost.port import VhostUserInput, VhostUserOutput
    vport = VhostUserPort.from_options(port.name, port.options)
    vport.open()
    try:
        inp = VhostUserInput(f"{port.name}-input", vport.txq, port.sw_if_index)
        out = VhostUserOutput(f"{port.name}-output", vport.rxq, port.sw_if_index)
        inp.control = vport
        _wire(graph, port, inp, out)
        vport.attach(graph)
    except Exception:
        vport.close()
        raise
    return (inp, out, vport)


def memif(graph, port):
    """A memif peer (a VPP, DPDK or libmemif process, fastpath.memif.client) over shared
    memory: options:memif-socket=PATH, memif-role=master (default: fastpath listens and
    maps the slave's memory) or slave (fastpath connects, offers its memory and
    reconnects), memif-id=N, memif-ring-size=LOG2, memif-buffer-size=BYTES."""
    from fastpath.memif.protocol import MemifPort
    from fastpath.memif.port import MemifInput, MemifOutput
    mport = MemifPort.from_options(port.name, port.options)
    try:
        mport.open()
        inp = MemifInput(f"{port.name}-input", mport.rx_ring, port.sw_if_index)
        out = MemifOutput(f"{port.name}-output", mport.tx_ring, port.sw_if_index)
        inp.control = mport
        _wire(graph, port, inp, out)
        mport.attach(graph)
    except Exception:
        mport.close()
        raise
    return (inp, out, mport)


TYPES = {"pg": pg, "afpacket": afpacket, "system": afpacket, "internal": internal, "vxlan": vxlan,
         "vhost-user": vhost_user, "dpdkvhostuserclient": vhost_user, "memif": memif}


def mac_of(port):
    """The port's own MAC address (6 bytes): the device's, or options:mac for pg ports."""
    mac = port.options.get("mac")
    if mac:
        return bytes.fromhex(mac.replace(":", ""))
    if port.type in ("afpacket", "system", "internal"):
        with open(f"/sys/class/net/{port.name}/address") as f:
            return bytes.fromhex(f.read().strip().replace(":", ""))
    # a stable locally administered address for in-memory ports
    return bytes([0x02, 0xfa]) + port.sw_if_index.to_bytes(4, "big")


def close(graph, port):
    graph["interface-output"].set_interface(port.sw_if_index, None, False)
    for node in port.io[:2]:
        graph.remove(node.name)
    for obj in port.io[2:]:
        obj.close()


def stats(graph, port):
    s = {}
    for node in port.io[:2]:
        s.update(node.stats())
    return s
