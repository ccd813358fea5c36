"""fastpath replay: a pcap through a config with in-memory ports, deterministically."""
import os
import subprocess
import sys

import pytest
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap, wrpcap

from fastpath.control import dump_toml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCAST = "ff:ff:ff:ff:ff:ff"
T0 = 1700000000.0
M = {i: f"00:00:00:00:00:{i:02x}" for i in range(1, 10)}
DROPPED_SRC = "00:00:00:00:00:66"

CONFIG = {"bridge": {"br0": {
    "mac_aging_time": 10.0,
    "flows": [f"priority=100,dl_src={DROPPED_SRC} actions=drop", "priority=0 actions=NORMAL"],
    "port": {
        "up": {"type": "afpacket", "trunks": [10, 20]},          # every type becomes pg
        "a10": {"type": "afpacket", "tag": 10},
        "a10b": {"type": "internal", "tag": 10, "options:mtu": "1500"},
        "b20": {"type": "system", "tag": 20},
        "t10": {"type": "afpacket", "trunks": [10]},
        "native": {"type": "afpacket", "tag": 20, "trunks": [10, 20], "vlan_mode": "native-untagged"},
    }}}}

# (time offset, src, dst, vlan) -- all arrive on port "up"
INPUT = [
    (1.0, M[1], BCAST, 10),         # flooded in VLAN 10
    (2.0, M[2], BCAST, 20),         # flooded in VLAN 20
    (3.0, M[3], BCAST, 30),         # VLAN 30 is not carried by "up": dropped
    (4.0, DROPPED_SRC, BCAST, 10),  # dropped by the flow
    (5.0, M[4], M[9], 10),          # unknown unicast: flooded
    (6.0, M[5], M[1], 10),          # M1 was learned on "up" itself: not sent back
    (20.25, M[6], M[1], 10),        # M1 aged out (pcap clock: 19 s > 10 s): flooded again
]


def make_pcap(path):
    pkts = []
    for dt, src, dst, vlan in INPUT:
        p = Ether(src=src, dst=dst) / Dot1Q(vlan=vlan, type=0x88b5) / Raw(bytes(range(46)))
        p.time = T0 + dt
        pkts.append(p)
    wrpcap(str(path), pkts)


@pytest.fixture
def setup(tmp_path):
    cfg = tmp_path / "fastpath.toml"
    cfg.write_text(dump_toml(CONFIG))
    pcap = tmp_path / "in.pcap"
    make_pcap(pcap)
    return cfg, pcap


def run_replay(cfg, pcap, out, *extra, **kw):
    return subprocess.run([sys.executable, "-m", "fastpath.cli", "replay", "--config", str(cfg),
                           *extra, str(pcap), str(out)], capture_output=True, text=True, cwd=REPO, **kw)


def decode(path):
    """[(time offset, vlan or None, src)] of a pcap file."""
    out = []
    for p in rdpcap(str(path)):
        vlan = p[Dot1Q].vlan if Dot1Q in p else None
        out.append((round(float(p.time) - T0, 6), vlan, p[Ether].src))
    return out


def test_replay_outputs(setup, tmp_path):
    cfg, pcap = setup
    r = run_replay(cfg, pcap, tmp_path / "out")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("replay: 7 frames") and "on port up" in lines[0]
    counts = {l.split()[0]: int(l.split()[1]) for l in lines[2:8]}
    assert counts == {"up": 0, "a10": 3, "a10b": 3, "b20": 1, "t10": 3, "native": 4}
    assert "VLAN not allowed" in r.stdout or "vlan-input" in r.stdout
    assert "flow-classify" in r.stdout

    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted(f"{p}.pcap" for p in CONFIG["bridge"]["br0"]["port"])
    flood10 = [1.0, 5.0, 20.25]
    srcs10 = [M[1], M[4], M[6]]
    assert decode(out / "up.pcap") == []
    assert decode(out / "a10.pcap") == [(t, None, s) for t, s in zip(flood10, srcs10)]
    assert decode(out / "a10b.pcap") == [(t, None, s) for t, s in zip(flood10, srcs10)]
    assert decode(out / "t10.pcap") == [(t, 10, s) for t, s in zip(flood10, srcs10)]
    assert decode(out / "b20.pcap") == [(2.0, None, M[2])]
    assert decode(out / "native.pcap") == [(1.0, 10, M[1]), (2.0, None, M[2]), (5.0, 10, M[4]),
                                           (20.25, 10, M[6])]
    # the payload is untouched
    for p in rdpcap(str(out / "a10.pcap")):
        assert bytes(p[Raw]) == bytes(range(46))


def test_replay_is_deterministic(setup, tmp_path):
    cfg, pcap = setup
    r1 = run_replay(cfg, pcap, tmp_path / "o1")
    r2 = run_replay(cfg, pcap, tmp_path / "o2")
    assert r1.returncode == r2.returncode == 0
    assert r1.stdout.replace("o1", "oX") == r2.stdout.replace("o2", "oX")
    names = sorted(os.listdir(tmp_path / "o1"))
    assert names == sorted(os.listdir(tmp_path / "o2"))
    for n in names:
        assert (tmp_path / "o1" / n).read_bytes() == (tmp_path / "o2" / n).read_bytes(), n


def test_replay_in_port(setup, tmp_path):
    cfg, pcap = setup
    # arriving on t10, a trunk of VLAN 10 only: the VLAN 20 and 30 frames are dropped
    r = run_replay(cfg, pcap, tmp_path / "o", "--in-port", "t10")
    assert r.returncode == 0, r.stderr
    assert "on port t10" in r.stdout
    out = tmp_path / "o"
    # t10 carries VLAN 10 only: the VLAN 10 floods reach up (tagged) and the access ports
    assert decode(out / "up.pcap") == [(1.0, 10, M[1]), (5.0, 10, M[4]), (20.25, 10, M[6])]
    assert decode(out / "a10.pcap") == [(1.0, None, M[1]), (5.0, None, M[4]), (20.25, None, M[6])]
    assert decode(out / "b20.pcap") == []
    r = run_replay(cfg, pcap, tmp_path / "o", "--in-port", "nope")
    assert r.returncode != 0 and "no port named nope" in r.stderr


def test_replay_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[bridge.br0.port.p1]\ntag = 99999\n")
    pcap = tmp_path / "in.pcap"
    make_pcap(pcap)
    r = run_replay(bad, pcap, tmp_path / "o")
    assert r.returncode != 0 and "tag" in r.stderr
    r = run_replay(tmp_path / "missing.toml", pcap, tmp_path / "o")
    assert r.returncode != 0 and "cannot read" in r.stderr
    (tmp_path / "ok.toml").write_text(dump_toml(CONFIG))
    (tmp_path / "junk.pcap").write_bytes(b"not a pcap at all, really not")
    r = run_replay(tmp_path / "ok.toml", tmp_path / "junk.pcap", tmp_path / "o")
    assert r.returncode != 0 and "not a pcap" in r.stderr


PR_CAPBSET_DROP = 24


def _drop_all_capabilities():
    """In the child before exec: empty the bounding set, so even uid 0 execs with no
    capabilities at all (no CAP_NET_RAW, no CAP_NET_ADMIN, no CAP_DAC_OVERRIDE...)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in range(64):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)


def test_replay_needs_no_privileges(setup, tmp_path):
    cfg, pcap = setup
    caps = subprocess.run(["grep", "CapEff", "/proc/self/status"], capture_output=True, text=True,
                          preexec_fn=_drop_all_capabilities).stdout.split()
    assert caps == ["CapEff:", "0000000000000000"]
    r = run_replay(cfg, pcap, tmp_path / "out", preexec_fn=_drop_all_capabilities)
    assert r.returncode == 0, r.stderr
    assert decode(tmp_path / "out" / "b20.pcap") == [(2.0, None, M[2])]
