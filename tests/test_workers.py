"""Several workers: each runs its own graph over the shared bridge tables.

In memory: the L2 conformance suite against a two-worker switch, ESP sequence numbers
that never repeat when two workers encrypt for one SA, and worker threads learning and
forwarding through one MAC table while the control thread reconfigures everything.
An OpenFlow controller programming a two-table pipeline while both workers forward.
For real: `fastpath run --workers 2` over veth, flows spread over both workers by
AF_PACKET fanout, every frame delivered once and in order within its flow.
"""
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP
from scapy.layers.l2 import Ether

from fastpath.switch import ConfigError, Switch
from fastpathd import Fastpathd
from l2util import Clock, frame
from netns import Netns, veth_pair

HERE = os.path.dirname(os.path.abspath(__file__))


def test_l2_conformance_suite_with_two_workers():
    """test_l2, test_vlan and test_flow again, each frame entering on the next worker in
    turn (l2util reads FASTPATH_TEST_WORKERS)."""
    env = dict(os.environ, FASTPATH_TEST_WORKERS="2")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "test_l2.py", "test_vlan.py", "test_flow.py"],
                       cwd=HERE, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout


@pytest.mark.root
@pytest.mark.parametrize("suite", ["test_vpn_sites.py", "test_vm_topology.py"])
def test_daemon_conformance_suites_with_two_workers(suite):
    """The VPN (two sites for real) and VM (QEMU guests) conformance tests again, every
    `fastpath run` they start having two workers ($FASTPATH_WORKERS sets --workers)."""
    env = dict(os.environ, FASTPATH_WORKERS="2")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", suite],
                       cwd=HERE, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert " passed" in r.stdout and " failed" not in r.stdout


def test_bad_worker_counts_refused():
    for n in (0, 65, -1):
        with pytest.raises(ConfigError):
            Switch(n_buffers=256, workers=n)


# ---- ESP: one SA, two workers encrypting ----

def _site(local, remote, workers):
    sw = Switch(n_buffers=4096, clock=Clock(), workers=workers)
    sw.add_ip("up", f"{local}/24", type="pg", **{"options:mac": "02:00:00:00:00:0" + local[-1]})
    sw.add_br("br0")
    sw.add_port("br0", "h10", type="pg", tag=10)
    sw.add_port("br0", "vpn0", type="vxlan", **{
        "options:remote_ip": remote, "options:local_ip": local, "options:key": 5000,
        "options:spi_out": "0x1001" if local.endswith("1") else "0x1002",
        "options:spi_in": "0x1002" if local.endswith("1") else "0x1001",
        "options:key_out": "0x" + ("11" if local.endswith("1") else "22") * 20,
        "options:key_in": "0x" + ("22" if local.endswith("1") else "11") * 20})
    return sw


def _run_all(sw):
    for g in sw.graphs:
        g.run_until_idle()


def _wire(src, dst):
    """Carry what src's uplink sent (on any worker) to dst's uplink (worker 0 receives)."""
    frames = [f for io in src.uplinks["up"].ios for f in io[1].take()]
    if frames:
        dst.uplinks["up"].io[0].add(frames)
    return frames


def test_esp_sequence_numbers_never_repeat_across_workers():
    a, b = _site("192.0.2.1", "192.0.2.2", 2), _site("192.0.2.2", "192.0.2.1", 1)
    a.uplinks["up"].io[0].add([bytes(Ether(src="02:00:00:00:00:02", dst="ff:ff:ff:ff:ff:ff", type=0x806)
                                     / bytes.fromhex("0001080006040002" "020000000002" "c0000202"
                                                     "020000000001" "c0000201"))])
    a.graph.run_until_idle()                       # a learns b's MAC by ARP
    b.uplinks["up"].io[0].add([bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff", type=0x806)
                                     / bytes.fromhex("0001080006040002" "020000000001" "c0000201"
                                                     "020000000002" "c0000202"))])
    b.graph.run_until_idle()
    a.tick()
    b.tick()
    for sw in (a, b):                              # the ARP requests tick() sent
        for io in sw.uplinks["up"].ios:
            io[1].take()
    sent, wire = [], []
    for k in range(400):
        w = k % 2                                  # both workers encrypt, interleaved
        f = bytes(frame(src="00:00:00:00:0a:01", dst="00:00:00:00:0b:01", payload=k.to_bytes(4, "big") + bytes(60)))
        a.port("h10").ios[w][0].add([f])
        sent.append(f)
        if k % 7 == 0:
            _run_all(a)
            # what two workers send interleaves on the wire, reordered within the replay window
            wire += _wire(a, b)
    _run_all(a)
    wire += _wire(a, b)
    assert len(wire) == 400
    seqs = [Ether(f)[ESP].seq for f in wire]
    assert sorted(seqs) == list(range(1, 401)), "a sequence number was used twice or skipped"
    b.graph.run_until_idle()
    got = b.port("h10").io[1].take()
    assert sorted(got) == sorted(sent)             # none dropped as a replay
    sa = next(r for r in a.vpn.show() if r["direction"] == "out")
    assert sa["packets"] == 400 and sa["seq"] == 400
    assert not [e for e in b.errors() if e[2] in ("replayed", "replay")]


# ---- worker threads, one MAC table, control changes meanwhile ----

def test_worker_threads_share_the_mac_table_under_churn():
    """Two worker threads and the control thread: the workers learn a stream of new MACs
    (4x the table size, so they evict all the time) while the control thread flushes, retags
    ports, adds and removes ports and flows. Afterwards the table is consistent, bounded,
    and every pool has all its buffers back."""
    sw = Switch(n_buffers=4096, workers=2)
    sw.add_br("br0", **{"other_config:mac-table-size": "1024"})
    for name, tag in (("p1", 10), ("p2", 10), ("p3", 10), ("p4", 20)):
        sw.add_port("br0", name, type="pg", tag=tag, **{"options:keep": False})
    fdb = sw.bridge("br0").fdb
    for w in range(2):
        frames = [bytes(frame(src=f"02:{w:02x}:00:{i >> 8 & 0xff:02x}:{i & 0xff:02x}:01",
                              dst=f"02:ff:00:00:{i & 0x3f:02x}:02")) for i in range(2048)]
        sw.port("p1").ios[w][0].load(frames, loop=True, limit=0)
    back = [bytes(frame(src=f"02:ff:00:00:{i:02x}:02", dst="02:00:00:00:00:01")) for i in range(64)]
    sw.port("p2").ios[1][0].load(back, loop=True, limit=0)
    sw.start_workers()
    stop = threading.Event()
    errors = []

    def feed():
        try:
            while not stop.is_set():
                for w in range(2):
                    g = sw.port("p1").ios[w][0]
                    if g.limit < 4096:
                        g.limit += 8192
                g = sw.port("p2").ios[1][0]
                if g.limit < 256:
                    g.limit += 1024
                time.sleep(0.002)
        except Exception as e:          # pragma: no cover - reported below
            errors.append(e)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        deadline = time.monotonic() + 4
        k = 0
        while time.monotonic() < deadline:
            sw.graph.run_once()                      # worker 0 is this thread
            k += 1
            if k % 200 == 0:                         # reconfigure under traffic
                step = (k // 200) % 5
                if step == 0:
                    sw.fdb_flush("br0")
                elif step == 1:
                    sw.set_port("p3", tag=20 if k % 400 else 10)
                elif step == 2:
                    sw.add_port("br0", "p5", type="pg", tag=10, **{"options:keep": False})
                elif step == 3:
                    sw.del_port("p5")
                else:
                    sw.add_flow("br0", "priority=5,dl_src=02:00:00:00:00:09 actions=drop")
                    sw.del_flows("br0", "dl_src=02:00:00:00:00:09")   # NORMAL stays
                sw.tick()
        assert fdb.stats()["learned"] > 4 * 1024     # the workers really churned
    finally:
        stop.set()
        feeder.join()
        for io in sw.port("p1").ios + sw.port("p2").ios:
            io[0].limit = 0
        sw.stop_workers()
    assert not errors
    for g in sw.graphs:                              # drain what is still queued
        g.run_until_idle()
    fdb.check_invariants()
    assert len(fdb) <= 1024
    for g in sw.graphs:
        g.pool.check_accounting(0)
    rt = [r for r in sw.runtime() if r["name"] == "l2-learn"]
    assert {r["worker"] for r in rt if r["packets"]} >= {0, 1}
    sw.close()


def test_flow_counters_lose_nothing_with_two_workers():
    """Both workers hit one flow at once: n_packets and n_bytes are exact (each worker
    counts in its own row; a shared counter lost increments), and they survive a table
    change made meanwhile."""
    sw = Switch(n_buffers=4096, workers=2)
    sw.add_br("br0")
    for name in ("p1", "p2"):
        sw.add_port("br0", name, type="pg", **{"options:keep": False})
    sw.add_flow("br0", "priority=10,in_port=p1 actions=output:p2")
    per_worker = 1_000_000
    f = bytes(frame(src="02:00:00:00:00:01", dst="02:00:00:00:00:02"))
    inputs = [sw.port("p1").ios[w][0] for w in range(2)]
    for inp in inputs:
        inp.load([f], loop=True, limit=per_worker)
    sw.start_workers()
    try:
        added = False
        while any(inp.limit for inp in inputs):
            sw.graph.run_once()                      # worker 0 is this thread
            if not added and inputs[1].limit < per_worker // 2:
                sw.add_flow("br0", "priority=5,dl_src=02:00:00:00:00:09 actions=drop")
                added = True
    finally:
        sw.stop_workers()
    for g in sw.graphs:
        g.run_until_idle()
    assert added
    hits = [line for line in sw.dump_flows("br0") if "in_port=" in line]
    assert f"n_packets={2 * per_worker}," in hits[0], hits
    assert f"n_bytes={2 * per_worker * len(f)}," in hits[0], hits
    for g in sw.graphs:
        g.pool.check_accounting(0)
    sw.close()


# ---- the daemon with two workers, over veth ----

def _mac(ns, ifname):
    return ns.run(["cat", f"/sys/class/net/{ifname}/address"]).stdout.strip()


@pytest.mark.root
def test_daemon_two_workers_spread_flows_and_keep_their_order(tmp_path):
    flows, per_flow = 48, 40
    with Netns("fpsw") as swns, Netns("fpa") as a, Netns("fpb") as b, Netns("fpc") as c, \
            veth_pair("wa", "eth0", swns, a), veth_pair("wb", "eth0", swns, b), \
            veth_pair("wc", "eth0", swns, c):
        fp = Fastpathd(tmp_path / "fp.sock", tmp_path / "fp.log", ns=swns,
                       args=["--buffers", "4096", "workers=2", "cpus=0,1"]).start()
        try:
            fp.do("add-br", "br0")
            fp.do("add-port", "br0", "wa", "tag=10")
            fp.do("add-port", "br0", "wb", "tag=10")
            fp.do("add-port", "br0", "wc", "tag=20")
            mac_a, mac_b = _mac(a, "eth0"), _mac(b, "eth0")
            with b.entered():
                rx_b = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
                rx_b.bind(("eth0", 0))
            with c.entered():
                rx_c = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
                rx_c.bind(("eth0", 0))
            with a.entered():
                tx_a = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
                tx_a.bind(("eth0", 0))
            for s in (rx_b, rx_c):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
                s.settimeout(0.2)
            # b speaks first, so its MAC is known and a's frames to it are unicast
            rx_b.send(bytes(Ether(src=mac_b, dst=mac_a, type=0x88b5) / bytes(50)))
            time.sleep(0.3)
            # flows differ by UDP source port: fanout hashes them onto the workers
            sent = 0
            for seq in range(per_flow):
                for fl in range(flows):
                    pkt = (Ether(src=mac_a, dst=mac_b) / IP(src="10.9.0.1", dst="10.9.0.99", ttl=1)
                           / UDP(sport=20000 + fl, dport=9) / struct.pack("!HH", fl, seq))
                    tx_a.send(bytes(pkt))
                    sent += 1
                time.sleep(0.002)
            got = {}
            deadline = time.monotonic() + 10
            while sum(len(v) for v in got.values()) < sent and time.monotonic() < deadline:
                try:
                    data = rx_b.recv(2048)
                except socket.timeout:
                    continue
                e = Ether(data)
                if UDP in e and e[IP].dst == "10.9.0.99":
                    fl, seq = struct.unpack("!HH", bytes(e[UDP].payload)[:4])
                    got.setdefault(fl, []).append(seq)
            assert sorted(got) == list(range(flows))
            for fl, seqs in got.items():
                assert seqs == list(range(per_flow)), f"flow {fl}: {seqs}"   # once each, in order
            leaked = []
            while True:
                try:
                    d = rx_c.recv(2048)
                except socket.timeout:
                    break
                if UDP in Ether(d):
                    leaked.append(d)
            assert not leaked                                   # VLAN 20 never sees VLAN 10
            rt = fp.do("show", "runtime", fmt="json")
            inputs = {r["worker"]: r["packets"] for r in rt if r["name"] == "wa-input"}
            assert inputs.get(0, 0) > 0 and inputs.get(1, 0) > 0, inputs   # both workers worked
            assert inputs["all"] == inputs[0] + inputs[1]
            fdb = fp.do("fdb/show", "br0", fmt="json")
            assert {r["mac"] for r in fdb} >= {mac_a, mac_b}
            flood = sum(r["packets"] for r in rt if r["name"] == "l2-flood" and r["worker"] == "all")
            assert flood < sent // 10                            # unicast, not flooded
            ifs = {r["name"]: r for r in fp.do("show", "interfaces", fmt="json")}
            assert ifs["wb"]["tx_packets"] >= sent
            text = fp.ctl("show", "runtime").stdout
            assert "Worker 0" in text and "Worker 1" in text and "Total" in text
        finally:
            assert fp.stop() == 0, fp.log_text()
        assert "2 workers" in fp.log_text()


# ---- OpenFlow with two workers ----

def test_openflow_controller_drives_two_workers_without_losing_a_frame():
    """A controller (over TCP) programs a two-table pipeline while both workers forward:
    a FLOW_MOD that moves the output from p2 to p3 mid-stream loses and duplicates no
    frame; PACKET_INs come from both workers' table misses; FLOW stats sum both workers'
    counters."""
    from fastpath.control import Control
    from fastpath.openflow import codec as c
    from test_openflow import Controller, wait
    sw = Switch(n_buffers=4096, workers=2)
    sw.add_br("br0")
    for name in ("p1", "p2", "p3"):
        sw.add_port("br0", name, type="pg", **{"options:keep": False})
    peer = Controller()
    Control(sw).execute(["set-controller", "br0", f"tcp:127.0.0.1:{peer.port}"])
    known, unknown = "02:00:00:00:00:0b", "02:00:00:00:00:0c"
    per_worker, misses = 200_000, 25
    inputs = [sw.port("p1").ios[w][0] for w in range(2)]
    got = {}

    def controller():
        """The controller's side, while this (the control) thread runs worker 0."""
        try:
            peer.accept()
            dst = lambda mac: [(c.OXM_ETH_DST, int(mac.replace(":", ""), 16), None)]
            peer.request(c.flow_mod(1, c.FC_DELETE, table_id=c.OFPTT_ALL))
            peer.request(c.flow_mod(2, c.FC_ADD, [(c.OXM_IN_PORT, 1, None)], c.goto_table(1)))
            peer.request(c.flow_mod(3, c.FC_ADD, dst(known), c.apply_actions([("output", 2)]),
                                    table_id=1, priority=100))
            peer.request(c.flow_mod(4, c.FC_ADD, [], c.apply_actions([("output", c.OFPP_CONTROLLER, 64)]),
                                    table_id=1, priority=0))
            f = bytes(frame(src="02:00:00:00:00:01", dst=known))
            for inp in inputs:
                inp.load([f], loop=True, limit=0)
            chunk = 10_000
            for k in range(per_worker // chunk):
                # each worker's input gets another chunk once it sent the last (a worker only
                # lowers limit, by what it read: topping it up at 0 races nothing)
                for inp in inputs:
                    assert wait(lambda: inp.limit == 0, timeout=30)
                    inp.limit = chunk
                if k == per_worker // chunk // 2:     # half-way, while both keep forwarding
                    peer.send(c.flow_mod(5, c.FC_MODIFY_STRICT, dst(known),
                                         c.apply_actions([("output", 3)]), table_id=1, priority=100))
            assert wait(lambda: not any(inp.limit for inp in inputs), timeout=60)
            assert peer.request(b"") == []               # the modify's reply: none (no error)
            for w, inp in enumerate(inputs):            # table misses on both workers
                inp.load([bytes(frame(src="02:00:00:00:00:01", dst=unknown,
                                      payload=bytes(44) + bytes([w, k]))) for k in range(misses)])
            got["packet_ins"] = []
            while len(got["packet_ins"]) < 2 * misses:
                m = peer.recv()
                if m[1] == c.PACKET_IN:
                    got["packet_ins"].append(c.parse_packet_in(m[3][8:]))
            got["stats"] = peer.request(c.multipart_request(6, c.MP_FLOW, c.flow_stats_request(table_id=1)))
        except BaseException as e:
            got["error"] = e
        finally:
            sw.graph.stop()

    sw.start_workers()
    t = threading.Thread(target=controller, daemon=True)
    t.start()
    try:
        sw.graph.run()                  # worker 0, and the agent, in the control thread
    finally:
        sw.stop_workers()
        t.join(10)
        peer.close()
    if "error" in got:
        raise got["error"]
    tx = {p: sum(int(io[1].tx_packets) for io in sw.port(p).ios) for p in ("p2", "p3")}
    assert tx["p2"] + tx["p3"] == 2 * per_worker, tx          # none lost, none twice
    assert tx["p2"] > 0 and tx["p3"] > 0, tx                  # the change landed mid-stream
    assert all(pi[2] == c.R_NO_MATCH for pi in got["packet_ins"])
    senders = {pi[6][-2] for pi in got["packet_ins"]}
    assert senders == {0, 1}, "PACKET_IN from both workers"
    body = b"".join(c.parse_multipart_reply(m[3][8:])[2] for m in got["stats"] if m[1] == c.MULTIPART_REPLY)
    counts = {prio: n for prio, _cookie, n, _m, _i in c.parse_flow_stats(body)}
    assert counts == {100: 2 * per_worker, 0: 2 * misses}, counts
    for g in sw.graphs:
        g.run_until_idle()
        g.pool.check_accounting(0)
    sw.close()
