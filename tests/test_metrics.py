"""The Prometheus exporter (fastpath run --metrics) and fastpathctl top.

In memory first (the collector over a Control with pg ports; top's arithmetic), then for
real: the daemon in a namespace with two veth ports, frames from a traffic generator in a
host namespace, the endpoint scraped with urllib and parsed with prometheus_client's parser,
figures compared with `fastpathctl --format json`; and bad or slow HTTP clients, which must
not hold up the dispatch loop."""
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from fastpath import top
from fastpath.control import Control
from fastpath.metrics import FastpathCollector, make_registry, parse_address
from fastpath.switch import Switch
from fastpathd import Fastpathd
from netns import Netns, veth_pair

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
A, B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def frame(src, dst="ff:ff:ff:ff:ff:ff", size=60):
    f = Ether(src=src, dst=dst, type=0x88b5)
    return bytes(f / Raw(bytes(size - len(f))))


def parse(text):
    """exposition text -> {(sample name, ((label, value), ...)): value}"""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def series(samples, name, **labels):
    """The value of one series, summed over its workers when the daemon has several
    (then every series carries a worker label); None when there is no such series."""
    want = tuple(sorted((k, str(v)) for k, v in labels.items()))
    if (name, want) in samples:
        return samples[(name, want)]
    found = [v for (n, lv), v in samples.items()
             if n == name and tuple(x for x in lv if x[0] != "worker") == want
             and any(x[0] == "worker" for x in lv)]
    return sum(found) if found else None


# ---------------------------------------------------------------- in memory

@pytest.fixture
def ctl():
    c = Control(Switch(n_buffers=1024))
    for argv in (["add-br", "br0"], ["add-port", "br0", "p1", "type=pg"],
                 ["add-port", "br0", "p2", "type=pg"]):
        c.execute(argv)
    yield c
    c.close()
    c.switch.close()


def push(c, port, *frames):
    c.switch.port(port).io[0].add(list(frames))
    c.switch.graph.run_until_idle()
    for p in c.switch.ports.values():
        p.io[1].take()


def test_collector_matches_control(ctl):
    push(ctl, "p1", *[frame(A)] * 5, frame(A, "01:80:c2:00:00:0e"))
    push(ctl, "p2", frame(B, A))
    m = parse(generate_latest(make_registry(ctl)).decode())
    for row in ctl.execute(["show", "interfaces"], "json"):
        for field, name in (("rx_packets", "rx_packets"), ("rx_bytes", "rx_bytes"),
                            ("tx_packets", "tx_packets"), ("tx_bytes", "tx_bytes")):
            assert series(m, f"fastpath_interface_{name}_total", interface=row["name"]) == row[field]
        assert series(m, "fastpath_interface_info", interface=row["name"], type="pg", bridge="br0",
                      ofport=row["ofport"]) == 1
    assert series(m, "fastpath_interface_rx_packets_total", interface="p1") == 6
    for row in ctl.execute(["show", "runtime"], "json"):
        for field in ("calls", "vectors", "packets"):
            assert series(m, f"fastpath_node_{field}_total", node=row["name"]) == row[field]
        assert series(m, "fastpath_node_cpu_seconds_total", node=row["name"]) == \
            pytest.approx(row["ns"] / 1e9)
    errors = ctl.execute(["show", "errors"], "json")
    assert errors
    for row in errors:
        assert series(m, "fastpath_errors_total", node=row["node"], reason=row["reason"]) == row["count"]
    assert series(m, "fastpath_errors_total", node="l2-fwd", reason="reserved_dst") == 1
    stats = ctl.execute(["fdb/stats", "br0"], "json")
    assert stats["learned"] == 2 and stats["n_entries"] == 2
    assert series(m, "fastpath_fdb_entries", bridge="br0") == 2
    assert series(m, "fastpath_fdb_learned_total", bridge="br0") == 2
    assert series(m, "fastpath_fdb_capacity_entries", bridge="br0") == stats["max_entries"]
    for field in ("moved", "evicted", "aged"):
        assert series(m, f"fastpath_fdb_{field}_total", bridge="br0") == 0
    assert series(m, "fastpath_scrape_errors_total") == 0
    assert "fdb/stats" in ctl.execute(["help"])


class WorkerControl:
    """What a multi-worker daemon may answer: rows per worker, with a worker field, and
    SAs; the collector must label them, not trip over them."""

    def __init__(self, inner):
        self.inner = inner

    def execute(self, argv, fmt="text"):
        out = self.inner.execute(argv, fmt)
        if argv in (["show", "runtime"], ["show", "interfaces"], ["show", "errors"]):
            return [{**r, "worker": w} for r in out for w in (0, 1)]
        if argv == ["show", "sa"]:
            sa = {"tunnel": "vpn0", "remote_ip": "192.0.2.2", "spi": 0x1001, "direction": "out",
                  "cipher": "aes-gcm-128", "esn": True, "encap": None, "seq": 41, "packets": 40,
                  "bytes": 4000, "drops": {"replay": 3, "auth": 0}, "age": 1.5}
            return [sa, {**sa, "direction": "in", "spi": 0x2001, "seq": 7, "retiring": True}]
        return out


def test_collector_tolerates_workers_and_reads_sas(ctl):
    push(ctl, "p1", frame(A), frame(A, "01:80:c2:00:00:0e"))
    from prometheus_client import CollectorRegistry
    reg = CollectorRegistry()
    reg.register(FastpathCollector(WorkerControl(ctl)))
    m = parse(generate_latest(reg).decode())
    for w in ("0", "1"):
        assert series(m, "fastpath_interface_rx_packets_total", interface="p1", worker=w) == 2
        assert series(m, "fastpath_node_packets_total", node="p1-input", worker=w) == 2
        assert series(m, "fastpath_errors_total", node="l2-fwd", reason="reserved_dst", worker=w) == 1
    labels = dict(tunnel="vpn0", spi="0x00001001", direction="out")
    assert series(m, "fastpath_sa_packets_total", **labels) == 40
    assert series(m, "fastpath_sa_bytes_total", **labels) == 4000
    assert series(m, "fastpath_sa_dropped_packets_total", reason="replay", **labels) == 3
    assert series(m, "fastpath_sa_sequence", **labels) == 41
    assert series(m, "fastpath_sa_sequence", tunnel="vpn0", spi="0x00002001", direction="in") == 7
    assert series(m, "fastpath_sa_info", remote_ip="192.0.2.2", cipher="aes-gcm-128", esn="true",
                  encap="none", retiring="true", tunnel="vpn0", spi="0x00002001", direction="in") == 1
    assert series(m, "fastpath_scrape_errors_total") == 0


def test_parse_address():
    assert parse_address("127.0.0.1:9482") == (socket.AF_INET, ("127.0.0.1", 9482))
    assert parse_address(":0")[1] == ("0.0.0.0", 0)
    assert parse_address("[::1]:80")[0] == socket.AF_INET6
    for bad in ("9482", "127.0.0.1:", "127.0.0.1:70000", "x:y"):
        with pytest.raises(ValueError):
            parse_address(bad)


def snap(t, runtime, interfaces, errors=()):
    return {"t": t, "runtime": list(runtime), "interfaces": list(interfaces), "errors": list(errors)}


def test_top_rates_and_render():
    a = snap(10.0, [{"name": "p1-input", "calls": 100, "vectors": 10, "packets": 1000, "ns": 50000},
                    {"name": "l2-fwd", "calls": 10, "vectors": 10, "packets": 1000, "ns": 20000}],
             [{"name": "p1", "rx_packets": 1000, "rx_bytes": 64000, "rx_drops": 0,
               "tx_packets": 0, "tx_bytes": 0, "tx_drops": 0}],
             [{"node": "l2-fwd", "reason": "same_port", "count": 5}])
    b = snap(12.0, [{"name": "p1-input", "calls": 300, "vectors": 30, "packets": 3000, "ns": 150000},
                    {"name": "l2-fwd", "calls": 5, "vectors": 5, "packets": 500, "ns": 40000}],   # cleared
             [{"name": "p1", "rx_packets": 3000, "rx_bytes": 192000, "rx_drops": 10,
               "tx_packets": 0, "tx_bytes": 0, "tx_drops": 0}],
             [{"node": "l2-fwd", "reason": "same_port", "count": 25}])
    r = top.rates(a, b)
    nodes = {n["name"]: n for n in r["nodes"]}
    assert nodes["p1-input"]["pps"] == 1000 and nodes["p1-input"]["ns_per_packet"] == 50
    assert nodes["p1-input"]["vectors_per_call"] == 10
    assert nodes["l2-fwd"]["pps"] == 250 and nodes["l2-fwd"]["ns_per_packet"] == 80   # from zero
    (i,) = r["interfaces"]
    assert i["rx_pps"] == 1000 and i["rx_bps"] == 512000 and i["rx_drops_ps"] == 5
    assert r["errors"] == [{"worker": "", "node": "l2-fwd", "reason": "same_port", "rate": 10}]
    lines = top.render(r, "cost")
    text = "\n".join(lines)
    assert text.index("l2-fwd") < text.index("p1-input")          # sorted by ns/packet
    assert re.search(r"^p1 +1\.00k +0\.51 +5\.0 +0 ", text, re.M), text
    assert "same_port" in text and "WORKER" not in text
    # a multi-worker daemon's runtime: totals (worker "all") are shown, its per-worker rows
    # are not counted again
    w = top.rates({**a, "runtime": [{**x, "worker": "all"} for x in a["runtime"]]
                   + [{**x, "worker": 1} for x in a["runtime"]]},
                  {**b, "runtime": [{**x, "worker": "all"} for x in b["runtime"]]
                   + [{**x, "worker": 1} for x in b["runtime"]]})
    wn = {n["name"]: n for n in w["nodes"]}
    assert wn["p1-input"]["pps"] == 1000 and wn["l2-fwd"]["pps"] == 250


# ---------------------------------------------------------------- a real daemon

class Daemon(Fastpathd):
    """fastpath run --metrics in namespace `ns`; HTTP clients connect from inside it."""

    out = Fastpathd.do                          # this file's name for it

    def __init__(self, ns, tmp_path, metrics="127.0.0.1:0"):
        super().__init__(tmp_path / "fp.sock", tmp_path / "fp.log", ns=ns,
                         args=["--buffers", "4096", "--metrics", metrics])
        self.start()
        # logged before the dispatch loop starts, so before the control socket answers
        m = re.search(r"metrics on http://([\d.]+):(\d+)/metrics", self.log_text())
        assert m, self.log_text()
        self.host, self.port = m.group(1), int(m.group(2))

    def connect(self, timeout=5):
        with self.ns.entered():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect((self.host, self.port))
        return s

    def get(self, path="/metrics", headers=None, timeout=10):
        req = urllib.request.Request(f"http://{self.host}:{self.port}{path}", headers=headers or {})
        with self.ns.entered():                   # urlopen makes its socket here: in the namespace
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()

    def scrape(self):
        status, headers, body = self.get()
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        return parse(body.decode())


needs_netns = pytest.mark.root


@pytest.fixture
def site(tmp_path):
    """The daemon in `dp` with ports d1, d2 (bridge br0); hosts h1 and h2 behind them."""
    with Netns("fmd") as dp, Netns("fmh") as h1, Netns("fmh") as h2, \
            veth_pair("d1", "hv", dp, h1), veth_pair("d2", "hv", dp, h2):
        d = Daemon(dp, tmp_path)
        try:
            d.out("add-br", "br0")
            d.out("add-port", "br0", "d1")
            d.out("add-port", "br0", "d2")
            d.h1, d.h2 = h1, h2
            yield d
        finally:
            rc = d.stop()
    assert rc == 0, d.log.read_text()


def gen(ns, frames, count=None, seconds=None, rate=2000, wait=True):
    cmd = [sys.executable, "-m", "fastpath.afpacket.pktgen_cli", "gen", "hv", "--rate", str(rate)]
    for f in frames:
        cmd += ["--frame", f.hex()]
    cmd += ["--count", str(count)] if count else ["--seconds", str(seconds)]
    p = ns.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    if not wait:
        return p
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    return json.loads(out.splitlines()[-1])


def iface(d, name):
    return next(r for r in d.out("show", "interfaces", fmt="json") if r["name"] == name)


def wait_rx(d, name, n, timeout=10):
    deadline = time.monotonic() + timeout
    while iface(d, name)["rx_packets"] < n:
        assert time.monotonic() < deadline, f"{name}: {iface(d, name)['rx_packets']} of {n} frames"
        time.sleep(0.05)


def between(before, scraped, after):
    return before <= scraped <= after


@needs_netns
def test_scrape_matches_fastpathctl_and_grows(site):
    d = site
    assert gen(d.h2, [frame(B)], count=3)["sent"] == 3          # br0 learns B on d2
    sent = gen(d.h1, [frame(A, B)] * 3 + [frame(A, "01:80:c2:00:00:0e")], count=200)["sent"]
    assert sent == 200
    wait_rx(d, "d1", 200)
    time.sleep(0.2)

    rt_before = {r["name"]: r for r in d.out("show", "runtime", fmt="json") if r["worker"] == "all"}
    m = d.scrape()
    rt_after = {r["name"]: r for r in d.out("show", "runtime", fmt="json") if r["worker"] == "all"}
    ifs = {r["name"]: r for r in d.out("show", "interfaces", fmt="json")}
    # traffic has stopped: interface counters are exact
    for name, row in ifs.items():
        for field, metric in (("rx_packets", "rx_packets"), ("rx_bytes", "rx_bytes"),
                              ("rx_drops", "rx_dropped_packets"), ("tx_packets", "tx_packets"),
                              ("tx_bytes", "tx_bytes"), ("tx_drops", "tx_dropped_packets")):
            assert series(m, f"fastpath_interface_{metric}_total", interface=name) == row[field], \
                (name, field)
    assert ifs["d1"]["rx_packets"] == 200 and ifs["d2"]["rx_packets"] == 3
    assert ifs["d2"]["tx_packets"] == 150                      # known unicast to B; 50 reserved dropped
    # input nodes poll (calls grow while idle); everything else is still
    assert set(rt_before) == set(rt_after)
    for name, before in rt_before.items():
        after = rt_after[name]
        for field in ("calls", "vectors", "packets"):
            assert between(before[field], series(m, f"fastpath_node_{field}_total", node=name), after[field])
        assert series(m, "fastpath_node_cpu_seconds_total", node=name) == pytest.approx(before["ns"] / 1e9)
    assert series(m, "fastpath_node_packets_total", node="d1-input") == 200
    assert series(m, "fastpath_node_packets_total", node="l2-fwd") == 203
    for row in d.out("show", "errors", fmt="json"):
        assert series(m, "fastpath_errors_total", node=row["node"], reason=row["reason"]) == row["count"]
    assert series(m, "fastpath_errors_total", node="l2-fwd", reason="reserved_dst") == 50
    fdb = d.out("fdb/stats", "br0", fmt="json")
    assert fdb["learned"] == 2 and fdb["n_entries"] == len(d.out("fdb/show", "br0", fmt="json")) == 2
    for field in ("learned", "moved", "evicted", "aged"):
        assert series(m, f"fastpath_fdb_{field}_total", bridge="br0") == fdb[field]
    assert series(m, "fastpath_fdb_entries", bridge="br0") == 2
    assert d.out("show", "sa", fmt="json") == []
    assert series(m, "fastpath_build_info", version=d.out("version", fmt="json")["version"]) == 1
    assert series(m, "process_open_fds") > 0

    # more traffic: the counters grow by exactly that
    gen(d.h1, [frame(A, B)], count=120)
    wait_rx(d, "d1", 320)
    time.sleep(0.2)
    m2 = d.scrape()
    assert series(m2, "fastpath_interface_rx_packets_total", interface="d1") == 320
    assert series(m2, "fastpath_interface_tx_packets_total", interface="d2") == 270
    assert series(m2, "fastpath_interface_rx_bytes_total", interface="d1") == \
        series(m, "fastpath_interface_rx_bytes_total", interface="d1") + 120 * 60
    assert series(m2, "fastpath_node_packets_total", node="d1-input") == 320
    assert series(m2, "fastpath_node_cpu_seconds_total", node="l2-fwd") > \
        series(m, "fastpath_node_cpu_seconds_total", node="l2-fwd")
    # OpenMetrics and gzip, as Prometheus asks for them
    status, headers, body = d.get(headers={"Accept": "application/openmetrics-text; version=1.0.0",
                                           "Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert gzip.decompress(body).decode().rstrip().endswith("# EOF")


@needs_netns
def test_top_shows_rates_while_traffic_flows(site):
    d = site
    gen(d.h2, [frame(B)], count=3)
    p = gen(d.h1, [frame(A, B)], seconds=30, rate=3000, wait=False)
    try:
        wait_rx(d, "d1", 300)
        r = d.ctl("top", "--count", "2", "--interval", "0.5")
        assert p.poll() is None                            # traffic flowed all along
    finally:
        p.terminate()
        p.communicate(timeout=30)
    assert r.returncode == 0, r.stderr
    frames = r.stdout.split("fastpath top - ")
    assert len(frames) == 3 and "frame 2/2" in frames[2], r.stdout
    last = frames[2]

    def row(name):
        m = re.search(rf"^{re.escape(name)} +(.*)$", last, re.M)
        assert m, (name, last)
        return m.group(1).split()

    # nodes: ns/pkt, pkts/s, vec/call, %CPU
    for node in ("d1-input", "ethernet-input", "l2-learn", "l2-fwd", "d2-output"):
        ns_pkt, pps, vpc, _ = row(node)
        # an input node is also called by every empty poll (the dispatcher polls on for a
        # while after each frame), so its vectors per call may round to 0, as a polling
        # input node's does in VPP's show runtime
        assert float(ns_pkt) > 0 and pps != "0" and (float(vpc) > 0 or node == "d1-input"), (node, last)
    # interfaces: rx pkts/s, rx Mb/s, rx drops/s, tx pkts/s, tx Mb/s, tx drops/s
    assert row("d1")[0] != "0" and row("d2")[3] != "0", last
    # the node list is sorted by cost: the first row costs the most
    nodes = last.split("\n\n")[1].splitlines()[1:]
    costs = [float(line.split()[1]) for line in nodes if line.split()[2] != "0"]
    assert costs == sorted(costs, reverse=True)


@needs_netns
def test_bad_and_slow_http_clients_do_not_hang_the_loop(site):
    d = site
    gen(d.h2, [frame(B)], count=3)
    hogs = [d.connect() for _ in range(40)]               # more than MAX_CLIENTS idle clients
    silent = d.connect()                                   # connects, says nothing
    partial = d.connect()
    partial.sendall(b"GET /metr")                          # half a request line, then stalls
    lazy = d.connect()                                     # asks and never reads
    lazy.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert hogs[0].recv(100) == b""                        # the oldest idle ones made room

    def raw(data):
        s = d.connect()
        try:
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            buf = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                buf += chunk
            return buf
        finally:
            s.close()

    t0 = time.monotonic()
    assert raw(b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /metrics SPDY/9\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /metrics HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505")
    assert raw(b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").startswith(b"HTTP/1.1 405")
    assert raw(b"GET /nope HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 404")
    assert raw(b"GET /metrics HTTP/1.1\r\nbroken header\r\n\r\n").startswith(b"HTTP/1.1 400")
    assert raw(b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * 200000).startswith(b"HTTP/1.1 431")
    # meanwhile the control socket, the exporter and the dataplane all keep going
    for _ in range(3):
        assert d.out("version").startswith("fastpath ")
    m = d.scrape()
    assert series(m, "fastpath_fdb_entries", bridge="br0") == 1
    gen(d.h1, [frame(A, B)], count=100)
    wait_rx(d, "d1", 100, timeout=5)
    assert time.monotonic() - t0 < 10
    # the stalled clients are dropped (408) once CLIENT_TIMEOUT passes without progress
    partial.settimeout(12)
    reply = b""
    while True:
        try:
            chunk = partial.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        reply += chunk
    assert reply == b"" or reply.startswith(b"HTTP/1.1 408"), reply
    for s in [silent, partial, lazy] + hogs:
        s.close()
    assert d.scrape()
    assert d.out("version").startswith("fastpath ")
    with pytest.raises(urllib.error.HTTPError) as e:
        d.get("/missing")
    assert e.value.code == 404


def test_bad_metrics_address_exits_nonzero(tmp_path):
    sock = str(tmp_path / "m.sock")
    for addr, msg in (("no-port", "expected ADDR:PORT"), ("203.0.113.77:0", "cannot serve metrics")):
        r = subprocess.run([sys.executable, "-m", "fastpath.cli", "run", "--control", sock,
                            "--buffers", "512", "--metrics", addr], capture_output=True, text=True,
                           cwd=REPO, timeout=30)
        assert r.returncode == 1 and msg in r.stderr, r.stderr
        assert not os.path.exists(sock)
