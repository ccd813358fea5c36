"""The OpenFlow pipeline and agent, each beside a baseline measured in the same run.

- Faucet-style pipeline in memory: vlan table (in_port + vlan -> write_metadata, goto) ->
  eth_src table (learned hosts -> goto; miss -> CONTROLLER + goto) -> eth_dst table (known
  hosts -> output) -> flood table, with 1 000 and 100 000 hosts, beside the NORMAL
  learning switch that has learned the same hosts, forwarding the same frames
  (ratio_to_normal; the target of issue 17 is >= 0.6 at 100 000 hosts).
- An ACL table of 1 000 and 10 000 L3/L4 rules (masked ipv4 src/dst, ip_proto, tcp/udp
  ports; many masks, as real ACLs have) in front of an eth_dst table, beside NORMAL.
- PACKET_IN rate: frames a table-miss rule sends to a real TCP controller socket, counted
  as they arrive there; baseline: the same PACKET_IN messages built with the codec and
  written to a TCP socket by a plain Python loop (the ceiling of the message path).
- FLOW_MOD rate: flow_mods over a real TCP connection, a BARRIER at the end whose reply
  stops the clock (the issue's target is >= 50 000/s); baseline: the same rules added to a
  FlowTable in-process (fastpathctl add-flow's path, no wire and no parsing).
"""
import collections
import contextlib
import random
import socket
import threading
import time

import pytest
from figures import RESULTS, record
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether

from fastpath import ofsyntax
from fastpath.openflow import codec as c
from fastpath.switch import Switch

VLAN = 10
MAC_ALL = (1 << 48) - 1
PACKETS = 256 * 100
FRAMES = 4096           # distinct frames per run: enough that lookups spread over the tables


def host_mac(i):
    return 0x0e0000000000 + i


def ofp_rule(table, priority, match, actions=(), goto=None, write_metadata=None):
    return ofsyntax.FlowRule(priority, match, [ofsyntax.Action(*a) for a in actions], 0, table,
                             goto, None, False, write_metadata)


def two_port_switch(n_hosts=0):
    sw = Switch(n_buffers=8192)
    sw.add_br("br0", **({"other_config:mac-table-size": 2 * n_hosts} if n_hosts > 8192 else {}))
    p1 = sw.add_port("br0", "p1", type="pg", **{"options:keep": False})
    p2 = sw.add_port("br0", "p2", type="pg", **{"options:keep": False})
    return sw, p1, p2


def run_rounds(benchmark, sw, p1, p2, frames, packets=PACKETS):
    """Replay frames on p1 for `packets` per round; every one must leave on p2."""
    p1.io[0].load(frames, loop=True, limit=0)
    sent = p2.io[1].tx_packets
    sw.graph.clear_runtime()
    rounds = []

    def round_():
        p1.io[0].limit = packets
        sw.graph.run_until_idle()
        rounds.append(1)

    benchmark.pedantic(round_, rounds=10, warmup_rounds=1)
    assert p2.io[1].tx_packets - sent == len(rounds) * packets
    assert sw.graph.errors() == []
    return packets


def runtime_extra(benchmark, sw, node="flow-classify"):
    for r in sw.graph.runtime():
        if r["name"] == node and r["packets"]:
            benchmark.extra_info[f"ns/packet {node}"] = round(r["ns_per_packet"], 2)


def ratio_to(benchmark, name, baseline):
    base = RESULTS.get(baseline)
    if base and not benchmark.disabled:
        benchmark.extra_info["baseline"] = baseline
        benchmark.extra_info["ratio_to_normal"] = round(benchmark.extra_info["mpps"] / base["mpps"], 2)
        RESULTS[name]["ratio"] = benchmark.extra_info["ratio_to_normal"]


# ---------------------------------------------------------------- Faucet-style pipeline

def host_frames(n, count=FRAMES, seed=2):
    """Tagged frames from hosts behind p1 (even numbers) to hosts behind p2 (odd)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        src, dst = 2 * rng.randrange(n // 2), 2 * rng.randrange(n // 2) + 1
        out.append(bytes(Ether(src=ofsyntax.int_to_mac(host_mac(src)),
                               dst=ofsyntax.int_to_mac(host_mac(dst)))
                         / Dot1Q(vlan=VLAN, type=0x88b5) / bytes(42)))
    return out


def faucet_rules(n):
    """Faucet 1.10's four tables for VLAN 10 on trunk ports 1 and 2 with n learned hosts,
    even ones behind port 1, odd ones behind port 2."""
    M = ofsyntax.Match
    out = [ofp_rule(0, 0, M())]                                            # vlan: drop the rest
    for port in (1, 2):
        out.append(ofp_rule(0, 9000, M(in_port=port, dl_vlan=VLAN), goto=1,
                            write_metadata=(VLAN, 0xfff)))
    # eth_src: drop multicast sources, pass learned hosts on, punt the rest (and flood it)
    out.append(ofp_rule(1, 9099, M(dl_src=(1 << 40, 1 << 40))))
    out.append(ofp_rule(1, 0, M(), [("controller", 96)], goto=2))
    for i in range(n):
        out.append(ofp_rule(1, 8191, M(in_port=1 + i % 2, dl_vlan=VLAN, dl_src=(host_mac(i), MAC_ALL)),
                            goto=2))
    # eth_dst: known hosts out of their port, the rest to the flood table
    out.append(ofp_rule(2, 0, M(), goto=3))
    for i in range(n):
        out.append(ofp_rule(2, 8191, M(dl_vlan=VLAN, dl_dst=(host_mac(i), MAC_ALL)),
                            [("output", 1 + i % 2)]))
    # flood: everywhere but where it came from
    out.append(ofp_rule(3, 0, M()))
    for port in (1, 2):
        out.append(ofp_rule(3, 8192, M(in_port=port, dl_vlan=VLAN), [("output", 3 - port)]))
    return out


def load_rules(sw, rules):
    flows = sw.bridge("br0").flows
    sw.del_flows("br0")
    for r in rules:
        flows.add_rule(r)
    sw.apply_flows("br0")


HOSTS = (1_000, 100_000)


def normal_switch(n):
    """NORMAL (no flows) with n hosts learned (even ones on p1, odd ones on p2)."""
    sw, p1, p2 = two_port_switch(n)
    learn = [bytes(Ether(src=ofsyntax.int_to_mac(host_mac(i)), dst="ff:ff:ff:ff:ff:ff")
                   / Dot1Q(vlan=VLAN, type=0x88b5) / bytes(42)) for i in range(n)]
    p1.io[0].load(learn[0::2])
    p2.io[0].load(learn[1::2])
    sw.graph.run_until_idle()
    assert len(sw.bridge("br0").fdb) == n
    p2.io[1].take()
    return sw, p1, p2


def faucet_switch(n):
    sw, p1, p2 = two_port_switch()
    load_rules(sw, faucet_rules(n))
    assert len(sw.bridge("br0").flows) == 2 * n + 9
    return sw, p1, p2


@pytest.mark.parametrize("n", HOSTS, ids=lambda n: f"{n}hosts")
def test_normal_path_learned_hosts(benchmark, n):
    """The baseline: NORMAL (no flows) with the same n hosts learned, the same frames."""
    sw, p1, p2 = normal_switch(n)
    packets = run_rounds(benchmark, sw, p1, p2, host_frames(n))
    record(benchmark, f"normal_path_{n}_hosts", packets)
    sw.close()


@pytest.mark.parametrize("n", HOSTS, ids=lambda n: f"{n}hosts")
def test_faucet_pipeline(benchmark, n):
    """The same frames through Faucet's four tables (three lookups per frame)."""
    sw, p1, p2 = faucet_switch(n)
    packets = run_rounds(benchmark, sw, p1, p2, host_frames(n))      # none punted, none dropped
    record(benchmark, f"faucet_pipeline_{n}_hosts", packets)
    ratio_to(benchmark, f"faucet_pipeline_{n}_hosts", f"normal_path_{n}_hosts")
    runtime_extra(benchmark, sw)
    sw.close()


# ---------------------------------------------------------------- ACL in front of forwarding

ACL_HOSTS = 1000
ACL_SIZES = (1_000, 10_000)


def acl_rules(n, seed=3):
    """n allow rules (goto the eth_dst table) at spread priorities: ipv4 src and dst under
    a few prefix lengths, tcp or udp, a destination port or none (24 masks in all)."""
    rng = random.Random(seed)
    M = ofsyntax.Match
    out, keys = [], []
    for i in range(n):
        src_len, dst_len = rng.choice((8, 16, 24, 32)), rng.choice((16, 24, 32))
        proto = rng.choice((6, 17))
        port = rng.choice((None, rng.randrange(1, 65536)))
        src, dst = rng.getrandbits(32), rng.getrandbits(32)
        smask = (MAC_ALL << (32 - src_len)) & 0xffffffff
        dmask = (MAC_ALL << (32 - dst_len)) & 0xffffffff
        out.append(ofp_rule(0, 100 + rng.randrange(20000),
                            M(dl_type=0x800, nw_proto=proto, nw_src=(src & smask, smask),
                              nw_dst=(dst & dmask, dmask), tp_dst=port), goto=1))
        keys.append((src, dst, proto, port))
    out.append(ofp_rule(0, 0, M(), goto=1))          # the ACL's default: allow
    out.append(ofp_rule(1, 0, M()))
    for i in range(ACL_HOSTS):
        out.append(ofp_rule(1, 100, M(dl_dst=(host_mac(i), MAC_ALL)), [("output", 2)]))
    return out, keys


def ip_frames(keys, count=FRAMES, seed=4):
    """Half the frames hit an ACL rule, half fall through to its default."""
    rng = random.Random(seed)
    out = []
    for k in range(count):
        if k % 2:
            src, dst, proto, port = rng.choice(keys)
            port = port or rng.randrange(1, 65536)
        else:
            src, dst, proto, port = (rng.getrandbits(32), rng.getrandbits(32), rng.choice((6, 17)),
                                     rng.randrange(1, 65536))
        l4 = (TCP if proto == 6 else UDP)(sport=rng.randrange(1024, 65536), dport=port)
        out.append(bytes(Ether(src="02:00:00:00:00:01", dst=ofsyntax.int_to_mac(host_mac(rng.randrange(ACL_HOSTS))))
                         / IP(src=str(src_ip(src)), dst=str(src_ip(dst))) / l4 / bytes(6)))
    return out


def src_ip(x):
    return ".".join(str(x >> s & 255) for s in (24, 16, 8, 0))


def normal_ip_switch():
    sw, p1, p2 = two_port_switch()
    p2.io[0].load([bytes(Ether(src=ofsyntax.int_to_mac(host_mac(i)), dst="ff:ff:ff:ff:ff:ff")
                         / bytes(50)) for i in range(ACL_HOSTS)])
    sw.graph.run_until_idle()
    p2.io[1].take()
    return sw, p1, p2


def acl_switch(n):
    sw, p1, p2 = two_port_switch()
    rules, keys = acl_rules(n)
    load_rules(sw, rules)
    return sw, p1, p2, keys


def test_normal_path_ip_frames(benchmark):
    """The baseline for the ACL: NORMAL forwarding the same IPv4 frames to learned hosts."""
    sw, p1, p2 = normal_ip_switch()
    _, keys = acl_rules(ACL_SIZES[0])
    packets = run_rounds(benchmark, sw, p1, p2, ip_frames(keys))
    record(benchmark, "normal_path_ip_frames", packets)
    sw.close()


@pytest.mark.parametrize("n", ACL_SIZES, ids=lambda n: f"{n}rules")
def test_acl_table(benchmark, n):
    sw, p1, p2, keys = acl_switch(n)
    masks = {f.mask for f in sw.bridge("br0").flows.in_table(0)}
    packets = run_rounds(benchmark, sw, p1, p2, ip_frames(keys))
    record(benchmark, f"acl_{n}_rules", packets)
    ratio_to(benchmark, f"acl_{n}_rules", "normal_path_ip_frames")
    benchmark.extra_info["acl_masks"] = len(masks)
    runtime_extra(benchmark, sw)
    sw.close()


# ---------------------------------------------------------------- over the wire

class Controller:
    """A minimal controller on a real TCP socket: HELLO, then whatever the test reads."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.port = self.listener.getsockname()[1]
        self.buf = bytearray()
        self.pending = collections.deque()

    def accept(self):
        self.sock, _ = self.listener.accept()
        self.sock.settimeout(10)
        self.sock.sendall(c.hello(1))
        assert self.recv_until(lambda m: m[1] == c.HELLO)

    def recv_until(self, done):
        """Read messages until done(msg) is true for one; how many were read."""
        n = 0
        while True:
            while self.pending:
                n += 1
                if done(self.pending.popleft()):
                    return n
            data = self.sock.recv(1 << 20)
            if not data:
                raise EOFError
            self.buf += data
            self.pending.extend(c.split(self.buf))

    def count(self, type, want):
        """Read until `want` messages of this type came; the other messages read."""
        others = 0
        while want:
            while self.pending and want:
                if self.pending.popleft()[1] == type:
                    want -= 1
                else:
                    others += 1
            if want:
                data = self.sock.recv(1 << 20)
                if not data:
                    raise EOFError
                self.buf += data
                self.pending.extend(c.split(self.buf))
        return others

    def close(self):
        self.sock.close()
        self.listener.close()


@contextlib.contextmanager
def controlled_switch():
    """A two-port switch whose dispatch loop runs in a thread, connected to a Controller."""
    from fastpath.openflow import agent
    sw, p1, p2 = two_port_switch()
    peer = Controller()
    agent.set_controller(sw, sw.bridge("br0"), [f"tcp:127.0.0.1:{peer.port}"])
    t = threading.Thread(target=sw.graph.run, daemon=True)
    t.start()
    try:
        peer.accept()
        peer.sock.sendall(c.message(c.BARRIER_REQUEST, 1))
        peer.recv_until(lambda m: m[1] == c.BARRIER_REPLY)
        yield sw, p1, p2, peer
    finally:
        sw.graph.stop()
        t.join()
        peer.close()
        sw.close()


@pytest.fixture
def agent_switch():
    with controlled_switch() as s:
        yield s


PACKET_INS = 20_000


def punt_everything(sw, p1, peer):
    """A table-miss rule to the controller, and p1 ready to replay frames: (frames, queue)."""
    peer.sock.sendall(c.flow_mod(2, c.FC_ADD, [], c.apply_actions([("output", c.OFPP_CONTROLLER, 128)]),
                                 priority=0) + c.message(c.BARRIER_REQUEST, 3))
    peer.recv_until(lambda m: m[1] == c.BARRIER_REPLY)
    frames = host_frames(1000, count=256)
    p1.io[0].load(frames, loop=True, limit=0)
    return frames, sw.nodes("packet-in")[0].queue


def packet_in_round(p1, peer, queue, count=PACKET_INS):
    """count frames in on p1 and count PACKET_INs read by the controller."""
    done = threading.Event()

    def feed():
        # frames come in at the rate the agent takes them from the packet-in queue, as
        # from a NIC that is not overloaded: what is measured is the path to the
        # controller, not how many frames a full 1 024-frame queue drops
        fed = 0
        while fed < count and not done.is_set():
            if p1.io[0].limit == 0 and len(queue) < 512:
                step = min(256, count - fed)
                p1.io[0].limit = step
                fed += step
            else:
                time.sleep(0.0005)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        peer.count(c.PACKET_IN, count)              # (an ECHO may come between)
    finally:
        done.set()
        feeder.join()


def packet_in_python_loop_rate(frames, count=PACKET_INS):
    """The baseline: the same PACKET_INs built with the codec and written to a TCP-like
    socket by a plain loop, read on the other end."""
    a, b = socket.socketpair()
    reader = threading.Thread(target=lambda: drain(b, count), daemon=True)
    reader.start()
    t0 = time.perf_counter()
    for k in range(count):
        a.sendall(c.packet_in(0, c.R_NO_MATCH, 0, 0, 1, frames[k % len(frames)][:128], len(frames[0])))
    reader.join()
    rate = count / (time.perf_counter() - t0)
    a.close()
    b.close()
    return rate


def test_packet_in_rate(benchmark, agent_switch):
    """Frames to the controller per second: a table-miss rule's output:CONTROLLER, the
    packet-in node's queue, the dispatch loop woken by its eventfd, PACKET_IN on the socket,
    read there."""
    sw, p1, p2, peer = agent_switch
    frames, queue = punt_everything(sw, p1, peer)
    benchmark.pedantic(packet_in_round, args=(p1, peer, queue), rounds=5, warmup_rounds=1)
    assert "queue_full" not in {e[2] for e in sw.graph.errors()}
    record(benchmark, "packet_in", PACKET_INS)
    if not benchmark.disabled:
        rate = PACKET_INS / benchmark.stats.stats.median
        raw = packet_in_python_loop_rate(frames)
        benchmark.extra_info["packet_ins_per_s"] = round(rate)
        benchmark.extra_info["python_loop_per_s"] = round(raw)
        benchmark.extra_info["ratio_to_python_loop"] = round(rate / raw, 2)
        RESULTS["packet_in"].update(rate=rate, baseline=raw)


def drain(sock, count):
    buf, n = bytearray(), 0
    while n < count:
        buf += sock.recv(1 << 20)
        n += len(c.split(buf))


FLOW_MODS = 10_000
CLEAR = c.flow_mod(1, c.FC_DELETE, [], table_id=2) + c.message(c.BARRIER_REQUEST, 2)


def flow_mod_batch(n, xid=100):
    """n FLOW_MOD ADDs of learned hosts into the eth_dst table, then a BARRIER."""
    out = bytearray()
    for i in range(n):
        out += c.flow_mod(xid + i, c.FC_ADD, [(c.OXM_VLAN_VID, 0x1000 | VLAN, None),
                                              (c.OXM_ETH_DST, host_mac(i), None)],
                          c.apply_actions([("output", 1 + i % 2)]), table_id=2, priority=8191,
                          idle_timeout=300)
    return bytes(out + c.message(c.BARRIER_REQUEST, 0xBA))


def flow_mods_cleared(peer):
    peer.sock.sendall(CLEAR)
    peer.recv_until(lambda m: m[1] == c.BARRIER_REPLY)


def flow_mod_round(peer, batch):
    peer.sock.sendall(batch)
    errors = peer.recv_until(lambda m: m[1] == c.BARRIER_REPLY) - 1
    assert errors == 0


def flow_table_add_rate(n=FLOW_MODS):
    """The baseline: the same rules put in a FlowTable in-process (no wire, no parsing)."""
    from fastpath.nodes.flowtable import FlowTable
    ft = FlowTable(lambda ref: int(ref))
    M = ofsyntax.Match
    rules = [ofp_rule(2, 8191, M(dl_vlan=VLAN, dl_dst=(host_mac(i), MAC_ALL)), [("output", 1 + i % 2)])
             for i in range(n)]
    t0 = time.perf_counter()
    for r in rules:
        ft.add_rule(r)
    return n / (time.perf_counter() - t0)


def test_flow_mod_rate(benchmark, agent_switch):
    """FLOW_MODs per second over TCP, the barrier's reply ending the clock."""
    sw, p1, p2, peer = agent_switch
    batch = flow_mod_batch(FLOW_MODS)
    benchmark.pedantic(flow_mod_round, args=(peer, batch), setup=lambda: flow_mods_cleared(peer),
                       rounds=5, warmup_rounds=1)
    assert len(sw.bridge("br0").flows.in_table(2)) == FLOW_MODS
    record(benchmark, "flow_mod", FLOW_MODS)
    if not benchmark.disabled:
        rate = FLOW_MODS / benchmark.stats.stats.median
        base = flow_table_add_rate()
        benchmark.extra_info["flow_mods_per_s"] = round(rate)
        benchmark.extra_info["in_process_per_s"] = round(base)
        benchmark.extra_info["ratio_to_in_process"] = round(rate / base, 2)
        RESULTS["flow_mod"].update(rate=rate, baseline=base)
