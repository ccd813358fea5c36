"""Two in-memory gateways whose uplinks are wired to each other (a cable in Python)."""
from l2util import Clock
from fastpath.switch import Switch

A_IP, B_IP = "192.0.2.1", "192.0.2.2"


def make_site(local, remote, clock=None, tunnel_options=None, n_buffers=4096):
    sw = Switch(n_buffers=n_buffers, clock=clock or Clock())
    sw.add_ip("up", f"{local}/24", type="pg", **{"options:mac": "02:00:00:00:00:0" + local[-1]})
    sw.add_br("br0")
    sw.add_port("br0", "h10", type="pg", tag=10)
    sw.add_port("br0", "h20", type="pg", tag=20)
    sw.add_port("br0", "vpn0", type="vxlan", **{"options:remote_ip": remote, "options:local_ip": local,
                                                  "options:key": 5000, **(tunnel_options or {})})
    return sw


def exchange(a, b, rounds=20, tap=None):
    """Run both sites, carrying what each uplink sends to the other's uplink, until quiet.
    tap(frame) -> frame or None may inspect/alter/drop frames on the wire."""
    for _ in range(rounds):
        moved = 0
        for src, dst in ((a, b), (b, a)):
            src.graph.run_until_idle()
            frames = src.uplinks["up"].io[1].take()
            if tap:
                frames = [f for f in (tap(f) for f in frames) if f is not None]
            if frames:
                dst.uplinks["up"].io[0].add(frames)
                moved += len(frames)
        if not moved:
            break
    a.graph.run_until_idle()
    b.graph.run_until_idle()


def taken(sw):
    return {name: p.io[1].take() for name, p in sw.ports.items() if p.type != "vxlan"}
