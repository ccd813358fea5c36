"""Port types: how each `type=` of add-port becomes input and output nodes.

Each type is a function (graph, port, worker) -> io tuple that adds `<port>-input` and
`<port>-output` nodes to one worker's graph and registers the port with that graph's
interface-output. It is called once per worker, worker 0 first (port.io is then its io):

  pg          every worker has its own in-memory input and output
  afpacket    every worker has its own socket; bridge ports join a PACKET_FANOUT group
              (by flow hash, so a flow stays on one worker and keeps its order); an L3
              uplink receives on worker 0 only (ARP, handshakes and ESP replay windows
              live there) and the other workers get send-only sockets
  internal    TAP: worker 0 receives; every worker writes frames to the one device
  vhost-user, memif
              one queue pair: worker 0 receives; every worker transmits on the ring,
              one at a time (a spinlock around each burst)
"""
import fcntl
import socket
import struct
import zlib

SIOCGIFMTU, SIOCSIFMTU = 0x8921, 0x8922
# ports with no Linux device behind them (in-memory, a guest, a memif peer) carry jumbo
# frames unless mtu_request says less; an in-memory uplink keeps a wire's 1500
VIRTUAL_MTU, UPLINK_MTU = 9000, 1500


def _wire(graph, port, inp, out, mtu, caps=0):
    graph.add(out)
    graph.add(inp)
    graph["interface-output"].set_interface(port.sw_if_index, out.name, True, mtu, caps)


def _output_only(graph, port, out, mtu, caps=0):
    graph.add(out)
    graph["interface-output"].set_interface(port.sw_if_index, out.name, True, mtu, caps)


def pg(graph, port, worker=0):
    """In-memory port: frames injected from Python, frames collected in a list."""
    from fastpath.pg.pg import PgInput, PgOutput
    if worker and port.bridge is None:       # an uplink receives on worker 0 only (see above)
        out = PgOutput(f"{port.name}-output", port.sw_if_index, keep=port.options.get("keep", True) not in (False, "false"))
        _output_only(graph, port, out, mtu_of(port))
        return (None, out)
    inp = PgInput(f"{port.name}-input", port.sw_if_index)
    out = PgOutput(f"{port.name}-output", port.sw_if_index, keep=port.options.get("keep", True) not in (False, "false"))
    _wire(graph, port, inp, out, mtu_of(port))
    return (inp, out)


def device_mtu(ifname, mtu=None):
    """A Linux device's MTU, after setting it to `mtu` when given (as OVS does for
    mtu_request on a system port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        name = ifname.encode()
        if mtu is not None:
            fcntl.ioctl(s, SIOCSIFMTU, struct.pack("16si20x", name, mtu))
        return struct.unpack("16si20x", fcntl.ioctl(s, SIOCGIFMTU, struct.pack("16s24x", name)))[1]


def mtu_of(port):
    """The port's effective MTU: its Linux device's for system and internal ports (so a
    change made with `ip link` is taken up too), else mtu_request (or options:mtu)."""
    if port.type in ("afpacket", "system", "internal"):
        try:
            return port.io[2].mtu if port.type == "internal" else port.io[2].refresh_mtu()
        except OSError:
            # the device is gone or moved to another namespace: keep what was in effect
            return port.mtu
    if port.type == "vxlan":
        return None
    return port.mtu_request or int(port.options.get("mtu", 0)) or (
        UPLINK_MTU if port.bridge is None else VIRTUAL_MTU)


def refresh_mtu(graphs, port):
    """Take up the port's current MTU in every worker; True when it changed."""
    mtu = mtu_of(port)
    if mtu == port.mtu:
        return False
    port.mtu = mtu
    for graph, io in zip(graphs, port.ios):
        if port.type in ("afpacket", "system") and len(io) > 2:
            io[2].refresh_mtu()
        graph["interface-output"].set_mtu(port.sw_if_index, mtu)
    return True


def fanout_group(port):
    """options:fanout_group, or (several workers) one derived from the interface name."""
    fanout = port.options.get("fanout_group")
    if fanout:
        return int(fanout)
    if port.n_workers > 1:
        return 0x8000 | (zlib.crc32(port.name.encode()) & 0x7fff)
    return None


def afpacket(graph, port, worker=0):
    """A Linux interface through AF_PACKET mmap rings (system ports in OVS's words)."""
    from fastpath.afpacket.afpacket import AfPacketSocket, AfPacketInput, AfPacketOutput
    from fastpath.nodes.interface import OFFLOAD_ALL
    # the kernel takes partial checksums and TCP super-frames from a packet socket and
    # finishes them for a device that cannot (its own software GSO)
    caps = OFFLOAD_ALL
    uplink = port.bridge is None
    receives = worker == 0 or not uplink
    if worker == 0 and port.mtu_request:
        device_mtu(port.name, port.mtu_request)
    sock = AfPacketSocket(port.name, fanout_group=None if uplink else fanout_group(port),
                          rx=receives)
    try:
        out = AfPacketOutput(f"{port.name}-output", sock, port.sw_if_index)
        if not receives:
            _output_only(graph, port, out, sock.mtu, caps)
            return (None, out, sock)
        inp = AfPacketInput(f"{port.name}-input", sock, port.sw_if_index)
        _wire(graph, port, inp, out, sock.mtu, caps)
    except Exception:
        sock.close()
        raise
    return (inp, out, sock)


def internal(graph, port, worker=0):
    """An internal port: a TAP device the host stack can use, as in Open vSwitch. Frames
    cross with a virtio_net_hdr, so partial checksums and super-frames pass both ways."""
    from fastpath.tap.tap import TapDevice, TapInput, TapOutput
    from fastpath.nodes.interface import OFFLOAD_ALL
    if worker:
        tap = port.io[2]
        out = TapOutput(f"{port.name}-output", tap, port.sw_if_index)
        _output_only(graph, port, out, tap.mtu, OFFLOAD_ALL)
        return (None, out)
    tap = TapDevice(port.name, mtu=port.mtu_request or int(port.options.get("mtu", 1500)))
    try:
        inp = TapInput(f"{port.name}-input", tap, port.sw_if_index)
        out = TapOutput(f"{port.name}-output", tap, port.sw_if_index)
        _wire(graph, port, inp, out, tap.mtu, OFFLOAD_ALL)
    except Exception:
        tap.close()
        raise
    return (inp, out, tap)


def vxlan(graph, port, worker=0):
    """A VXLAN tunnel port: frames output to it go to vxlan-encap (which sends them out of
    the uplink); frames vxlan-input decapsulates arrive as if received on it."""
    graph["interface-output"].set_interface(port.sw_if_index, "vxlan-encap", True, 65535)
    return ()


def vhost_user(graph, port, worker=0):
    """A virtio-net guest over vhost-user: options:vhost-socket=PATH (fastpath listens,
    QEMU connects) or options:vhost-server-path=PATH (fastpath connects and reconnects,
    as Open vSwitch's dpdkvhostuserclient). The port's offload caps in each worker's
    interface-output are the port's to set: they follow what the guest negotiates."""
    from fastpath.vhost.protocol import VhostUserPort
    from fastpath.vhost.port import VhostUserInput, VhostUserOutput
    if worker:
        out = VhostUserOutput(f"{port.name}-output", port.io[2].rxq, port.sw_if_index)
        out.share_ring(port.io[1])
        _output_only(graph, port, out, mtu_of(port))
        port.io[2].add_output(graph["interface-output"], port.sw_if_index)
        return (None, out)
    vport = VhostUserPort.from_options(port.name, port.options)
    vport.open()
    try:
        inp = VhostUserInput(f"{port.name}-input", vport.txq, port.sw_if_index)
        out = VhostUserOutput(f"{port.name}-output", vport.rxq, port.sw_if_index)
        inp.control = vport
        _wire(graph, port, inp, out, mtu_of(port))
        # caps: what the guest negotiated (none yet), set by the port from now on
        vport.add_output(graph["interface-output"], port.sw_if_index)
        vport.attach(graph)
    except Exception:
        vport.close()
        raise
    return (inp, out, vport)


def memif(graph, port, worker=0):
    """A memif peer (a VPP, DPDK or libmemif process, fastpath.memif.client) over shared
    memory: options:memif-socket=PATH, memif-role=master (default: fastpath listens and
    maps the slave's memory) or slave (fastpath connects, offers its memory and
    reconnects), memif-id=N, memif-ring-size=LOG2, memif-buffer-size=BYTES; the MTU is
    mtu_request (default 9000; a frame of up to 64 KiB crosses as a descriptor chain)."""
    from fastpath.memif.protocol import MemifPort
    from fastpath.memif.port import MemifInput, MemifOutput
    if worker:
        out = MemifOutput(f"{port.name}-output", port.io[2].tx_ring, port.sw_if_index)
        out.share_ring(port.io[1])
        _output_only(graph, port, out, mtu_of(port))
        return (None, out)
    mport = MemifPort.from_options(port.name, port.options)
    try:
        mport.open()
        inp = MemifInput(f"{port.name}-input", mport.rx_ring, port.sw_if_index)
        out = MemifOutput(f"{port.name}-output", mport.tx_ring, port.sw_if_index)
        inp.control = mport
        _wire(graph, port, inp, out, mtu_of(port))
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


def close(graphs, port):
    """Take the port out of every worker's graph, then close what worker 0 opened (and
    the other workers' own sockets)."""
    for graph, io in zip(graphs, port.ios):
        graph["interface-output"].set_interface(port.sw_if_index, None, False)
        for node in io[:2]:
            if node is not None:
                graph.remove(node.name)
    for w, io in enumerate(port.ios):
        for obj in io[2:]:
            obj.close()


def stats(port):
    """The port's counters, summed over the workers."""
    total = {}
    for io in port.ios:
        s = {}
        for node in io[:2]:
            if node is not None:
                s.update(node.stats())
        for k, v in s.items():
            if k in total and isinstance(v, (int, float)) and not isinstance(v, bool):
                total[k] += v
            else:
                total.setdefault(k, v)
    return total
