"""A learning switch written as an os-ken application (tests/osken_learning_switch.py, the
idea of os-ken's simple_switch_13) drives a fastpath bridge under osken-manager, from
Faucet's virtualenv: three hosts in namespaces on veths ping each other; the application
learned them through PACKET_IN and installed a flow per (in_port, eth_src, eth_dst) it saw
answered; once those flows are in, pings cross the bridge without a PACKET_IN (the
table-miss flow's packet count and the application's own log stay put) and the learned
flows count them."""
import os
import re
import subprocess
import time

import pytest

from fastpathd import Fastpathd
from netns import Netns, stop_process, unique_name, veth_pair
from test_faucet import free_port, ping, wait

pytestmark = pytest.mark.root

FAUCET_VENV = os.environ.get("FAUCET_VENV", "/opt/faucet-venv")
APP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "osken_learning_switch.py")
HOSTS = [(1, "10.0.1.1", "0e:00:00:00:02:01"), (2, "10.0.1.2", "0e:00:00:00:02:02"),
         (3, "10.0.1.3", "0e:00:00:00:02:03")]


def flows(fp):
    """dump-flows as [(fields dict, actions text)]."""
    out = []
    for line in fp.do("dump-flows", "br0").splitlines():
        head, sep, actions = line.strip().partition(" actions=")
        if not sep:
            continue
        fields = {}
        for part in re.split(r"[ ,]+", head):
            k, _, v = part.partition("=")
            if k:
                fields[k] = v
        out.append((fields, actions))
    return out


def table_miss_packets(fp):
    for fields, actions in flows(fp):
        if fields.get("priority") == "0" and "CONTROLLER" in actions.upper():
            return int(fields["n_packets"])
    return None


def test_learning_switch_app_under_osken(tmp_path):
    assert os.path.exists(f"{FAUCET_VENV}/bin/osken-manager"), \
        f"no os-ken at {FAUCET_VENV}: run scripts/setup.sh (or set FAUCET_VENV)"
    with Netns("osdp") as dp, Netns("osh1") as h1, Netns("osh2") as h2, Netns("osh3") as h3:
        hosts = [h1, h2, h3]
        names = [(unique_name("os"), unique_name("oh")) for _ in hosts]
        pairs = [veth_pair(sw, host, dp, h) for (sw, host), h in zip(names, hosts)]
        for p in pairs:
            p.__enter__()
        fp = Fastpathd(tmp_path / "fp.sock", tmp_path / "fp.log", ns=dp, args=["--buffers", "4096"])
        app = None
        log = tmp_path / "packet-ins.log"
        try:
            for h, (_, host_end), (_, addr, mac) in zip(hosts, names, HOSTS):
                h.run(f"ip link set {host_end} address {mac}")
                h.run(f"ip addr add {addr}/24 dev {host_end}")
            fp.start()
            fp.do("add-br", "br0")
            fp.do("set-fail-mode", "br0", "secure")
            for (sw_end, _), (port, _, _) in zip(names, HOSTS):
                fp.do("add-port", "br0", sw_end, "type=afpacket", f"ofport_request={port}")
            of_port = free_port(dp)
            env = dict(os.environ, LEARNING_SWITCH_LOG=str(log),
                       PATH=f"{FAUCET_VENV}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}")
            env.pop("PYTHONPATH", None)
            app = dp.popen([f"{FAUCET_VENV}/bin/osken-manager", "--ofp-listen-host=127.0.0.1",
                            f"--ofp-tcp-listen-port={of_port}", APP],
                           env=env, stdout=open(tmp_path / "osken.out", "w"),
                           stderr=subprocess.STDOUT)
            fp.do("set-controller", "br0", f"tcp:127.0.0.1:{of_port}")

            def state():
                return (f"{fp.do('dump-flows', 'br0')}\n"
                        f"{(tmp_path / 'osken.out').read_text()[-3000:]}\n{fp.log_text()[-3000:]}")

            wait(lambda: fp.do("get-controller", "br0", fmt="json")[0]["connected"], 30,
                 "os-ken to connect", state)
            # the application's table-miss flow: everything else goes to it
            wait(lambda: table_miss_packets(fp) is not None, 15, "the table-miss flow", state)

            # every host reaches every other: ARP floods, the replies teach the flows
            for (a, (_, _, _)), (b, (_, addr_b, _)) in ((x, y) for x in zip(hosts, HOSTS)
                                                         for y in zip(hosts, HOSTS) if x is not y):
                assert wait(lambda: ping(a, addr_b, count=2), 20, f"ping {addr_b}", state)
            learned = [(f, a) for f, a in flows(fp) if f.get("priority") == "1"]
            pairs_seen = {(f["in_port"], f["dl_src"], f["dl_dst"]) for f, _ in learned}
            # one flow for each direction of each host pair: 3 hosts -> 6 flows
            assert len(pairs_seen) == 6, state()
            for f, actions in learned:
                src_port = {mac: str(port) for port, _, mac in HOSTS}
                assert f["in_port"] == src_port[f["dl_src"]], f
                assert actions == f"output:{src_port[f['dl_dst']]}", (f, actions)
            assert log.exists() and log.read_text().count("\n") >= 6

            # from now on no frame needs the controller: the learned flows take them all
            misses, packet_ins = table_miss_packets(fp), log.read_text().count("\n")
            before = {(f["in_port"], f["dl_src"], f["dl_dst"]): int(f["n_packets"]) for f, _ in learned}
            assert ping(h1, HOSTS[1][1], count=5) and ping(h3, HOSTS[0][1], count=5)
            time.sleep(0.5)
            assert table_miss_packets(fp) == misses, state()
            assert log.read_text().count("\n") == packet_ins, log.read_text()
            after = {(f["in_port"], f["dl_src"], f["dl_dst"]): int(f["n_packets"])
                     for f, _ in flows(fp) if f.get("priority") == "1"}
            h1_h2 = ("1", HOSTS[0][2], HOSTS[1][2])
            h3_h1 = ("3", HOSTS[2][2], HOSTS[0][2])
            assert after[h1_h2] - before[h1_h2] >= 5 and after[h3_h1] - before[h3_h1] >= 5, after
        finally:
            if app is not None:
                stop_process(app)
            if fp.proc is not None:
                fp.stop()
            for p in reversed(pairs):
                p.__exit__(None, None, None)
