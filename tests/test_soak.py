"""The soak's short CI mode (bench/soak.py): two daemons, a VPN that rekeys every 10 s, a
VM (memif) that reconnects every few seconds, a bridge of veths under full load with MAC
churn, VLAN reconfiguration, fdb/flush and a port deleted and added back every epoch --
for about two minutes (FASTPATH_SOAK_SECONDS). It fails on a leak (buffers, heap,
resident memory, descriptors, graph nodes) or on a frame that is not accounted for.

The first tests check, without root, that the soak's own yardsticks catch what they
are meant to catch.
"""
import os

import pytest

from bench.soak import Config, balance, flatness, run_soak

SECONDS = float(os.environ.get("FASTPATH_SOAK_SECONDS", "110"))


# ---------------------------------------------------------------- the yardsticks

def _snap():
    """A daemon that received 100 frames on p1 and flooded them to p2 and p3 (100 copies),
    dropped 5 (vlan-input) and sent 2 ARP requests; 1 ARP reply consumed."""
    return {
        "interfaces": [
            {"name": "p1", "rx_packets": 100, "rx_drops": 7, "tx_packets": 0, "tx_drops": 0},
            {"name": "p2", "rx_packets": 0, "rx_drops": 0, "tx_packets": 95, "tx_drops": 0},
            {"name": "p3", "rx_packets": 0, "rx_drops": 0, "tx_packets": 90, "tx_drops": 5},
            {"name": "up", "rx_packets": 1, "rx_drops": 0, "tx_packets": 2, "tx_drops": 0},
            {"name": "vm0", "rx_packets": 0, "rx_drops": 3, "tx_packets": 0, "tx_drops": 0}],
        "errors": [
            {"node": "vlan-input", "reason": "vlan_not_allowed", "count": 5},
            {"node": "arp-input", "reason": "consumed", "count": 1},
            {"node": "vm0-input", "reason": "desc_bad_length", "count": 3},   # = vm0 rx_drops
            {"node": "l2-flood", "reason": "no_buffer", "count": 4},          # copies never made
            {"node": "ike-input", "reason": "invalid_syntax", "count": 2}],   # verdicts, not frames
        "runtime": [
            {"name": "p1-input", "packets": 100}, {"name": "l2-fwd", "packets": 95},
            {"name": "l2-flood", "packets": 95}, {"name": "vlan-output", "packets": 190},
            {"name": "error-drop", "packets": 6}],
        "pool": {"buffers": 4096, "free": 4096, "in_flight": 0, "control_frames": 2},
    }


def test_balance_exact():
    b = balance(_snap(), {}, {"p1", "p2", "p3", "up", "vm0"})
    assert b["flood_copies"] == 95
    assert b["births"] == 100 + 1 + 95 + 2
    assert b["balanced"], b
    assert b["error_drop_matches"]
    assert b["rx_drops_before_graph"] == 10 and b["copies_not_made"] == 4


def test_balance_catches_a_lost_frame_and_a_retired_port():
    s = _snap()
    s["interfaces"][1]["tx_packets"] -= 1                   # a frame vanished
    b = balance(s, {}, {"p1", "p2", "p3", "up", "vm0"})
    assert not b["balanced"] and b["difference"] == 1
    # a port deleted earlier: its last counters count
    s = _snap()
    s["interfaces"] = [r for r in s["interfaces"] if r["name"] != "p3"]
    assert not balance(s, {}, {"p1", "p2", "up", "vm0"})["balanced"]
    retired = {"p3": {"rx_packets": 0, "tx_packets": 90, "tx_drops": 5}}
    assert balance(s, retired, {"p1", "p2", "p3", "up", "vm0"})["balanced"]


def test_balance_catches_a_silent_free():
    s = _snap()
    s["runtime"][-1]["packets"] = 7                         # error-drop freed one it did not count
    b = balance(s, {}, {"p1", "p2", "p3", "up", "vm0"})
    assert not b["error_drop_matches"]


def test_flatness():
    flat = [(t, 100 + (0.01 if t % 2 else 0)) for t in range(0, 600, 10)]
    assert flatness(flat, 2.0)["flat"]
    growing = [(t, 100 + t / 100) for t in range(0, 600, 10)]          # +6 MB in 10 min
    f = flatness(growing, 2.0)
    assert not f["flat"] and 5 < f["growth"] < 7
    assert flatness([(0, 1), (1, 50)], 2.0)["flat"]                    # too few: no verdict


def test_deleted_ports_leave_nothing_in_the_graph():
    """What the soak found: every del-port left its two nodes in the graph (with a queue
    and a replica array of n_buffers entries each, 256 KB per port at 16384 buffers), in
    the dispatch loop's scan and in `show runtime`. Now a removed node's slot is reused."""
    from fastpath.switch import Switch
    sw = Switch(n_buffers=1024)
    sw.add_br("br0")
    sw.add_port("br0", "keep", type="pg", tag=10)
    n = len(sw.graph.nodes)
    for i in range(50):
        sw.add_port("br0", "c1", type="pg", tag=10 + i % 2)
        sw.ports["c1"].io[0].add([bytes(6) + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes(46)])
        sw.graph.run_until_idle()
        sw.del_port("c1")
    assert len(sw.graph.nodes) == n
    assert len(sw.ports["keep"].io[1].take()) == 25              # the VLAN 10 incarnations' frames
    names = [r["name"] for r in sw.graph.runtime()]
    assert len(names) == len(set(names)) and "c1-input" not in names
    sw.add_port("br0", "c1", type="pg", tag=10)
    assert len(sw.graph.nodes) == n + 2
    sw.ports["c1"].io[0].add([b"\xff" * 6 + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes(46)])
    sw.graph.run_until_idle()
    assert len(sw.ports["keep"].io[1].take()) == 1                # flooded through the reused slots
    sw.graph.pool.check_accounting(expected_in_flight=0)


# ---------------------------------------------------------------- the soak itself

@pytest.mark.root
def test_soak_short(tmp_path):
    report_file = str(tmp_path / "soak.md")
    rep = run_soak(Config(SECONDS, report=report_file))
    failures = "\n".join(f"{f['t']} s: {f['what']}" for f in rep["failures"])
    assert rep["ok"], f"soak failed (report {report_file}):\n{failures}"
    k = rep["counts"]
    # enough happened for the verdicts to mean something -- modest numbers: on a shared
    # two-core machine under load the daemons' control plane answers in seconds, and
    # fewer checks fit in the time (a quiet machine does 20+ checks, 5 port cycles, 5+
    # rekeys and memif reconnects)
    assert k["checkpoints"] >= 2, k
    assert k["balance_checks"] >= 2 * k["checks"] and k["checks"] >= 5, k
    assert k["port_cycles"] >= 1 and k["vlan_changes"] + k["fdb_flushes"] >= 1, k
    assert k["rekeys"] >= 1, rep["rekeys"]
    assert k["memif_reconnects"] >= 1, rep["memif_port"]
    assert rep["frames_moved"]["A"] > 100_000 and rep["frames_moved"]["B"] > 10_000
    # every check balanced, every checkpoint with nothing in flight, the pool whole
    for c in rep["checks"]:
        for site in ("A", "B"):
            assert c[site]["balance"]["balanced"], (c["where"], site, c[site]["balance"])
            p = c[site]["pool"]
            assert p["free"] + p["in_flight"] == p["buffers"]
            assert c[site]["runtime_dupes"] == 0
    for cp in rep["checkpoints"]:
        for site in ("A", "B"):
            assert cp[site]["balanced"] and cp[site]["in_flight"] == 0 and cp[site]["error_drop_matches"]
    # the VPN carried traffic both ways: site B switched frames from the tunnel
    b_up = rep["interfaces"]["B"]["uplink"]
    assert rep["checkpoints"][-1]["B"]["per_interface"][b_up]["rx_packets"] > 1_000
    for site in ("A", "B"):
        for name, f in rep["flatness"][site]["memory"].items():
            assert f["flat"], (site, name, f)
        fd = rep["flatness"][site]["fds"]
        assert all(len(set(v)) == 1 for v in fd["checkpoints_by_memif_state"].values()), fd
    assert os.path.exists(report_file) and os.path.exists(str(tmp_path / "soak.json"))
