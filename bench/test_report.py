"""bench/report.py end to end on its two cheap sections (in memory, a few seconds): the
Markdown has the table rows, the PNGs are real PNG files, report.json says what was
measured; and --readme fills a README's markers from a saved run."""
import json
import os
import struct
import subprocess
import sys
import zlib

import report
import tcp
import vpn_sites

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_png(path):
    """A whole PNG file: signature, IHDR with a sane size, every chunk's CRC, IEND last."""
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, chunks = 8, []
    while pos < len(data):
        length, kind = struct.unpack("!I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc, = struct.unpack("!I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, (path, kind)
        chunks.append(kind)
        if kind == b"IHDR":
            width, height = struct.unpack("!II", body[:8])
            assert 100 <= width <= 4000 and 100 <= height <= 4000, (width, height)
        pos += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks, chunks


def run_report(*argv, timeout=120):
    r = subprocess.run([sys.executable, "-m", "bench.report", *argv], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_report_quick_graph_l2(tmp_path):
    out = tmp_path / "out"
    r = run_report("--quick", "--out", str(out), "--only", "graph,l2")
    md = (out / "report.md").read_text()
    assert "| section | measurement | fastpath | baseline (same run) | ratio |" in md
    lines = md.splitlines()
    graph = [ln for ln in lines if ln.startswith("| graph | dispatch per node")]
    l2 = [ln for ln in lines if ln.startswith("| l2 | in-memory L2 path")]
    assert len(graph) == 1 and len(l2) == 1, md
    for ln in graph + l2:
        assert ln.rstrip().endswith("×** |") and ("naive" in ln or "pure-Python" in ln), ln
    assert "ns/packet" in graph[0] and "Mpps" in l2[0]
    # the machine it was measured on
    cpu = report.machine_info()["cpu_model"]
    assert cpu in md and "load average" in md and f"{os.cpu_count()} CPU" in md
    for name in ("graph.png", "l2.png", "summary.png"):
        assert f"]({name})" in md
        assert_png(out / name)
    data = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in data["sections"]] == ["graph", "l2"]
    for s in data["sections"]:
        assert s["status"] == "measured", s
        for row in s["rows"]:
            assert row["ratio"] > 1, row            # fastpath beats a Python loop by far
    assert data["machine"]["loadavg_before"] and data["machine"]["loadavg_after"]
    assert "| graph |" in r.stdout

    # the README: its markers filled from the saved run, the plots next to it
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n<!-- report:table -->\nold\n<!-- /report:table -->\n\n<!-- report:plot -->\n")
    run_report("--from-json", str(out / "report.json"), "--out", str(out), "--readme", str(readme))
    text = readme.read_text()
    assert "old" not in text and "| l2 | in-memory L2 path" in text
    assert "![fastpath against its baselines](docs/bench/summary.png)" in text
    assert text.count("<!-- /report:plot -->") == 1
    for name in ("graph.png", "l2.png", "summary.png"):
        assert_png(tmp_path / "docs" / "bench" / name)


def test_not_measured_rendering():
    """A section that could not run says why, in the table and in its own part."""
    rep = {"machine": {**report.machine_info(), "loadavg_before": [0.1] * 3, "loadavg_after": [0.2] * 3},
           "mode": "quick", "command": "x", "seconds": 1.0,
           "sections": [{"name": "scaling", "title": report.TITLES["scaling"], "method": "m",
                         "status": "not measured", "reason": "bench.scaling not available"}]}
    md = report.markdown(rep, {})
    assert "| scaling | not measured: bench.scaling not available | | | |" in md
    assert "**not measured: bench.scaling not available**" in md


def test_readme_has_markers():
    text = open(os.path.join(REPO, "README.md")).read()
    assert "<!-- report:table -->" in text and "<!-- report:plot -->" in text


def tcp_run_report(ovs=True, ovs_best=False):
    """What bench/tcp.py's run() returns, with Open vSwitch stalled (0 Gbit/s) or missing,
    and with ovs_best Open vSwitch at its best setting (offloads off) too."""
    best = {"linux-bridge": {"tcp1": 15.0, "tcp4": 30.0, "rtt": 0.05},
            "fastpath": {"tcp1": 12.0, "tcp4": 15.0, "rtt": 0.1}}
    rounds = {p: {k: [v] for k, v in b.items()} for p, b in best.items()}
    not_measured = {}
    if ovs:
        best["ovs"] = {"tcp1": 0.0, "tcp4": 0.0, "rtt": 0.2}
        rounds["ovs"] = {"tcp1": [0.0], "tcp4": [0.0], "rtt": [0.2],
                         "iperf3_errors": ["tcp1: unable to connect to server: Connection timed out"]}
    else:
        not_measured["ovs"] = "not installed (apt-get install openvswitch-switch)"
    rep = {"best": best, "rounds": rounds, "not_measured": not_measured, "packets": 1000,
           "seconds": 1, "rounds_run": 1}
    if ovs_best:
        best["ovs-offloads-off"] = {"tcp1": 0.8, "tcp4": 1.0, "rtt": 0.15}
        rounds["ovs-offloads-off"] = {k: [v] for k, v in best["ovs-offloads-off"].items()}
        rep["ovs_best"] = "ovs-offloads-off"
        rep["targets"] = tcp.targets(best)
    return rep


def tcp_rendered(sec):
    rep = {"machine": {**report.machine_info(), "loadavg_before": [0.1] * 3, "loadavg_after": [0.2] * 3},
           "mode": "quick", "command": "x", "seconds": 1.0,
           "sections": [{"name": "tcp", "title": report.TITLES["tcp"], "method": report.METHODS["tcp"],
                         "status": "measured", "loadavg_before": [0.1] * 3, "loadavg_after": [0.2] * 3,
                         "seconds": 1.0, **sec}]}
    return report.markdown(rep, {})


def test_tcp_section_three_switches(tmp_path):
    """The tcp section: fastpath against the Linux bridge and a stalled Open vSwitch (0 Gbit/s
    gives "inf", not a crash and not a bar in the plot), the three switches in one table."""
    sec = report.tcp_section(tcp_run_report())
    rows = {r["label"]: r for r in sec["rows"]}
    assert rows["TCP 1 stream vs bridge"]["ratio"] == 12.0 / 15.0
    assert rows["RTT vs bridge"]["ratio"] == 0.05 / 0.1          # lower is better
    assert rows["TCP 1 stream vs OVS"]["ratio"] is None and rows["TCP 1 stream vs OVS"]["ratio_text"] == "inf"
    assert rows["RTT vs OVS"]["ratio"] == 0.2 / 0.1
    md = tcp_rendered(sec)
    assert "| tcp | iperf3 TCP, 1 stream, default offloads, vs Linux bridge | 12.0 Gbit/s | " \
           "Linux bridge: 15.0 Gbit/s | **0.80×** |" in md
    assert "vs Open vSwitch userspace (netdev, AF_PACKET) | 12.0 Gbit/s | " in md and "| **inf** |" in md
    assert "| iperf3 TCP, 1 stream | 15.00 Gbit/s | 0.00 Gbit/s | 12.00 Gbit/s | 0.80× | inf |" in md
    assert "| ping RTT, one every 10 ms, average | 0.050 ms | 0.200 ms | 0.100 ms | +0.050 ms | -0.100 ms |" in md
    assert "unable to connect" in md
    rep = {"machine": {**report.machine_info(), "loadavg_before": [0.1] * 3, "loadavg_after": [0.2] * 3},
           "mode": "quick", "sections": [{"name": "tcp", "title": "t", "status": "measured", **sec}]}
    images = report.write_plots(rep, str(tmp_path))
    assert images["tcp"] == "tcp.png"
    assert_png(tmp_path / "tcp.png")
    json.dumps(sec, allow_nan=False)                      # no inf in report.json


def test_tcp_section_without_ovs():
    sec = report.tcp_section(tcp_run_report(ovs=False))
    md = tcp_rendered(sec)
    assert "| tcp | vs Open vSwitch userspace (netdev, AF_PACKET) | not measured: not installed" in md
    assert "| two hosts on veths, default offloads | Linux bridge | fastpath | fastpath vs bridge |" in md


def test_tcp_section_ovs_best():
    """Open vSwitch at its best setting (every offload off) is a baseline of its own, its
    own column, and issue #14's targets are in the notes, computed against it."""
    rep = tcp_run_report(ovs_best=True)
    tgt = {(t["figure"], t["peer"]): t for t in rep["targets"]}
    assert tgt[("tcp1", "linux-bridge")]["ratio"] == 12.0 / 15.0 and tgt[("tcp1", "linux-bridge")]["met"]
    assert tgt[("tcp4", "linux-bridge")]["ratio"] == 0.5 and not tgt[("tcp4", "linux-bridge")]["met"]
    assert tgt[("tcp1", "ovs-offloads-off")]["ratio"] == 12.0 / 0.8 and tgt[("tcp1", "ovs-offloads-off")]["met"]
    assert ("tcp1", "ovs") not in tgt                    # the target is against the best OVS only
    sec = report.tcp_section(rep)
    rows = {r["label"]: r for r in sec["rows"]}
    assert rows["TCP 1 stream vs OVS offloads off"]["ratio"] == 12.0 / 0.8
    assert rows["TCP 4 streams vs OVS offloads off"]["ratio"] == 15.0
    assert rows["RTT vs OVS offloads off"]["ratio"] == 0.15 / 0.1
    md = tcp_rendered(sec)
    assert ("| two hosts on veths, default offloads | Linux bridge | OVS | OVS offloads off | fastpath | "
            "fastpath vs bridge | fastpath vs OVS | fastpath vs OVS offloads off |") in md
    assert "| iperf3 TCP, 1 stream | 15.00 Gbit/s | 0.00 Gbit/s | 0.80 Gbit/s | 12.00 Gbit/s | 0.80× | inf | 15.0× |" in md
    assert "target (issue #14): fastpath TCP 1 stream ≥ 5× Open vSwitch userspace at its best: 15.0×, met" in md
    assert "target (issue #14): fastpath TCP 4 streams ≥ 0.75× the Linux bridge: 0.50×, **not met**" in md
    assert "| Open vSwitch userspace at its best: every offload off on the veths: 0.80 Gbit/s | **15.0×** |" in md
    json.dumps(sec, allow_nan=False)


def test_vpn_tcp_section():
    """The vpn-tcp section from bench/vpn_sites.py's --tcp-only report: the VPN and plain
    VXLAN against the raw veth pair, the VPN against plain VXLAN, MSS and clamps in the notes."""
    tcp_rows = [{"path": "ceiling", "label": "raw veth ceiling (no gateways)", "gbps": 20.0, "mss": 1448,
                 "gbps_all": [20.0], "runs": 1},
                {"path": "vxlan", "label": "site to site, plain VXLAN, tcp_mss_clamp=auto", "gbps": 1.0,
                 "mss": 1394, "clamped": 4, "packets": 100, "gbps_all": [1.0], "runs": 1,
                 "ratio_to_ceiling": 0.05},
                {"path": "esp", "label": "site to site, VXLAN in ESP AES-GCM, manual keys, tcp_mss_clamp=auto",
                 "gbps": 0.9, "mss": 1357, "clamped": 4, "packets": 100, "gbps_all": [0.9], "runs": 1,
                 "ratio_to_ceiling": 0.045, "ratio_to_vxlan": 0.9},
                {"path": "vpn", "label": "site to site, VXLAN in ESP AES-GCM keyed by IKEv2 (PSK), "
                 "tcp_mss_clamp=auto", "gbps": 0.8, "mss": 1357, "clamped": 4, "packets": 100,
                 "gbps_all": [0.8], "runs": 1, "ratio_to_ceiling": 0.04, "ratio_to_vxlan": 0.8,
                 "ratio_to_manual_esp": 0.8 / 0.9}]
    rep = {"meta": {"trials": 1, "tcp_seconds": 1.0, "gw_cores": [1, 1]}, "tcp": tcp_rows,
           "table": vpn_sites.tcp_markdown(tcp_rows)}
    sec = report.vpn_tcp_section(rep)
    rows = {r["label"]: r for r in sec["rows"]}
    assert set(rows) == {"VPN vs veth", "VPN vs VXLAN", "VPN vs manual ESP", "ESP vs veth", "ESP vs VXLAN",
                         "VXLAN vs veth"}
    assert rows["VPN vs veth"]["ratio"] == 0.8 / 20.0 and rows["VPN vs VXLAN"]["ratio"] == 0.8
    assert rows["VPN vs manual ESP"]["ratio"] == 0.8 / 0.9 and rows["ESP vs VXLAN"]["ratio"] == 0.9
    md = report.markdown({"machine": {**report.machine_info(), "loadavg_before": [0.1] * 3,
                                      "loadavg_after": [0.2] * 3},
                          "mode": "quick", "command": "x", "seconds": 1.0,
                          "sections": [{"name": "vpn-tcp", "title": report.TITLES["vpn-tcp"],
                                        "method": report.METHODS["vpn-tcp"], "status": "measured",
                                        "loadavg_before": [0.1] * 3, "loadavg_after": [0.2] * 3,
                                        "seconds": 1.0, **sec}]}, {})
    assert ("| vpn-tcp | iperf3 TCP, 1 stream, site A → site B over VXLAN in ESP keyed by IKEv2, "
            "tcp_mss_clamp=auto, hosts at MTU 1500, vs plain VXLAN, tcp_mss_clamp=auto | 0.80 Gbit/s | "
            "plain VXLAN, tcp_mss_clamp=auto: 1.00 Gbit/s | **0.80×** |") in md
    assert "sender MSS 1357, 4 SYNs clamped" in md
    assert ("| site to site, VXLAN in ESP AES-GCM keyed by IKEv2 (PSK), tcp_mss_clamp=auto | 0.80 | 1357 | "
            "0.040 | 0.80 | 0.89 | 0.80 |") in md
    json.dumps(sec, allow_nan=False)


def test_ike_section():
    """The ike section from bench/ike.py's figures: the responder against the initiator and
    against ECP-256, and add-port to first ESP against manual keys (time: lower is better)."""
    rep = {"handshakes": {"handshakes": 10, "responder_per_s": 1000.0, "initiator_per_s": 2000.0,
                          "responder_ms": 1.0, "initiator_ms": 0.5, "seconds": 0.02},
           "ecdh_p256": {"ops": 10, "per_s": 4000.0},
           "first_esp": {"ike": [0.3, 0.4], "manual": [0.1, 0.1], "ike_median": 0.35, "manual_median": 0.1,
                         "ratio": 3.5}}
    sec = report.ike_section(rep)
    rows = {r["label"]: r for r in sec["rows"]}
    assert rows["handshakes/s vs initiator"]["ratio"] == 0.5
    assert rows["handshakes/s vs ECDH"]["ratio"] == 0.25
    assert rows["first ESP vs manual keys"]["ratio"] == 0.1 / 0.35
    assert any("IKEv2 300, 400 ms; manual keys 100, 100 ms" in n for n in sec["notes"])
    del rep["first_esp"]
    assert len(report.ike_section(rep)["rows"]) == 2
    json.dumps(sec, allow_nan=False)
