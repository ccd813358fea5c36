"""Faucet (PyPI `faucet`, in its own virtualenv: scripts/setup.sh makes it) drives a fastpath
bridge over OpenFlow 1.3, with hosts in network namespaces on veths (AF_PACKET ports) on two
VLANs: hosts in one VLAN reach each other and hosts in different VLANs do not, Faucet learns
the hosts through PACKET_IN (its Prometheus `learned_l2_port`), an ACL meter limits one
port's ICMP, a port whose link goes
down reaches it as PORT_STATUS (`port_status` 0), and fastpath reconnects by itself after
Faucet restarts."""
import os
import socket
import subprocess
import time
import urllib.request

import pytest

from fastpathd import Fastpathd
from netns import Netns, stop_process, unique_name, veth_pair

pytestmark = pytest.mark.root

FAUCET_VENV = os.environ.get("FAUCET_VENV", "/opt/faucet-venv")
DP_ID = 0x1
HOSTS = [  # (ofport, VLAN, address, MAC); not 0e:00:00:00:00:01, which is Faucet's own MAC
    (1, 100, "10.0.0.1", "0e:00:00:00:01:01"),
    (2, 100, "10.0.0.2", "0e:00:00:00:01:02"),
    (3, 200, "10.0.0.3", "0e:00:00:00:01:03"),
    (4, 200, "10.0.0.4", "0e:00:00:00:01:04"),
]
METERED_PORT = 4            # its ICMP goes through Faucet's meter: 2 packets a second
CONFIG = """
vlans:
  office:
    vid: 100
  guest:
    vid: 200
meters:
  icmp_slow:
    meter_id: 1
    entry:
      flags: "PKTPS"
      bands: [{type: "DROP", rate: 2}]
acls:
  icmp_metered:
    - rule:
        dl_type: 0x800
        nw_proto: 1
        actions:
          meter: icmp_slow
          allow: 1
    - rule:
        actions:
          allow: 1
dps:
  fp1:
    dp_id: 0x1
    hardware: "Open vSwitch"
    interfaces:
""" + "".join(f"""      {port}:
        native_vlan: {"office" if vlan == 100 else "guest"}
""" + ("""        acls_in: [icmp_metered]
""" if port == METERED_PORT else "") for port, vlan, _, _ in HOSTS)


def free_port(ns):
    with ns.entered():
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait(cond, timeout, what, on_fail=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f"\n{on_fail()}" if on_fail else ""))


class Faucet:
    """faucet in namespace ns, listening on 127.0.0.1:of_port, metrics on prom_port."""

    def __init__(self, ns, tmp_path):
        self.ns, self.tmp = ns, tmp_path
        self.of_port, self.prom_port = free_port(ns), free_port(ns)
        (tmp_path / "faucet.yaml").write_text(CONFIG)
        self.log = tmp_path / "faucet.log"

    def start(self):
        env = dict(os.environ, FAUCET_CONFIG=str(self.tmp / "faucet.yaml"),
                   FAUCET_LOG=str(self.log), FAUCET_EXCEPTION_LOG=str(self.tmp / "faucet.exc"),
                   FAUCET_PROMETHEUS_PORT=str(self.prom_port), FAUCET_PROMETHEUS_ADDR="127.0.0.1")
        env.pop("PYTHONPATH", None)                 # its own venv, nothing of ours
        # faucet execs osken-manager from its PATH
        env["PATH"] = f"{FAUCET_VENV}/bin:{env.get('PATH', '/usr/bin:/bin')}"
        self.proc = self.ns.popen([f"{FAUCET_VENV}/bin/faucet", "--ryu-ofp-listen-host=127.0.0.1",
                                   f"--ryu-ofp-tcp-listen-port={self.of_port}"],
                                  env=env, stdout=open(self.tmp / "faucet.out", "w"),
                                  stderr=subprocess.STDOUT)

    def stop(self):
        stop_process(self.proc)

    def metrics(self):
        """{(name, frozenset(labels)): value} from its Prometheus endpoint."""
        with self.ns.entered():
            try:
                text = urllib.request.urlopen(f"http://127.0.0.1:{self.prom_port}/metrics",
                                              timeout=5).read().decode()
            except OSError:
                return {}
        out = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            name, _, labels = head.partition("{")
            pairs = frozenset(tuple(kv.split("=", 1)) for kv in
                              labels.rstrip("}").replace('"', "").split(",") if kv)
            out[(name, pairs)] = float(value)
        return out

    def value(self, name, **labels):
        want = {(k, str(v)) for k, v in labels.items()}
        for (n, pairs), v in self.metrics().items():
            if n == name and want <= pairs:
                return v
        return None

    def logs(self):
        parts = []
        for name in ("faucet.log", "faucet.out", "faucet.exc"):
            p = self.tmp / name
            if p.exists():
                parts.append(f"--- {name}\n" + p.read_text()[-4000:])
        return "\n".join(parts)


def ping(host, address, count=3):
    return host.run(["ping", "-c", str(count), "-i", "0.2", "-W", "1", address],
                    check=False).returncode == 0


def test_faucet_drives_a_bridge_with_two_vlans(tmp_path):
    assert os.path.exists(f"{FAUCET_VENV}/bin/faucet"), \
        f"no Faucet at {FAUCET_VENV}: run scripts/setup.sh (or set FAUCET_VENV)"
    with Netns("fpdp") as dp, Netns("fph1") as h1, Netns("fph2") as h2, \
            Netns("fph3") as h3, Netns("fph4") as h4:
        hosts = [h1, h2, h3, h4]
        names = [(unique_name("fs"), unique_name("fh")) for _ in hosts]
        pairs = [veth_pair(sw_end, host_end, dp, h) for (sw_end, host_end), h in zip(names, hosts)]
        for p in pairs:
            p.__enter__()
        faucet = Faucet(dp, tmp_path)
        fp = Fastpathd(tmp_path / "fp.sock", tmp_path / "fp.log", ns=dp, args=["--buffers", "4096"])
        try:
            for h, (_, host_end), (_, _, addr, mac) in zip(hosts, names, HOSTS):
                h.run(f"ip link set {host_end} address {mac}")
                h.run(f"ip addr add {addr}/24 dev {host_end}")
            fp.start()
            fp.do("add-br", "br0")
            fp.do("set", "bridge", "br0", f"other_config:datapath-id={DP_ID:016x}")
            fp.do("set-fail-mode", "br0", "secure")
            for (sw_end, _), (port, _, _, _) in zip(names, HOSTS):
                fp.do("add-port", "br0", sw_end, "type=afpacket", f"ofport_request={port}")
            fp.do("set-controller", "br0", f"tcp:127.0.0.1:{faucet.of_port}")
            faucet.start()
            wait(lambda: faucet.value("dp_status", dp_id=hex(DP_ID)) == 1, 60,
                 f"Faucet to see the datapath connected\n{faucet.logs()}\n{fp.log_text()}")
            # Faucet programmed its pipeline: several tables, chained with goto_table
            wait(lambda: "goto_table" in fp.do("dump-flows", "br0"), 30, "Faucet's flows")

            def state():
                return (f"{fp.do('dump-flows', 'br0')}\n{fp.do('show', 'errors')}\n"
                        f"{faucet.logs()}\n{fp.log_text()[-3000:]}")

            # same VLAN: both ways
            assert wait(lambda: ping(h1, "10.0.0.2"), 30, "h1 -> h2 (VLAN 100)", state)
            assert ping(h2, "10.0.0.1")
            assert wait(lambda: ping(h3, "10.0.0.4"), 30, "h3 -> h4 (VLAN 200)")
            # different VLANs: never
            assert not ping(h1, "10.0.0.3")
            assert not ping(h4, "10.0.0.2")

            # Faucet's ACL meter (METER_MOD, meter:1 in its ACL table): a burst of pings
            # from the metered port gets about 2 a second through
            assert "meter:1" in fp.do("dump-flows", "br0")
            r = h4.run(["ping", "-c", "40", "-i", "0.01", "-W", "1", "10.0.0.3"], check=False)
            received = int(r.stdout.split(" received")[0].rsplit(" ", 1)[1])
            assert 1 <= received <= 6, r.stdout
            assert "meter band dropped" in fp.do("show", "errors")

            # Faucet learned each host on its port through PACKET_IN
            for port, vlan, _, mac in HOSTS:
                assert wait(lambda: faucet.value("learned_l2_port", dp_id=hex(DP_ID), vid=vlan,
                                                 eth_src=mac) == port, 15,
                            f"Faucet to learn {mac} on port {port}",
                            lambda: [k for k in faucet.metrics() if k[0] == "learned_l2_port"])
            assert (faucet.value("of_errors_total", dp_id=hex(DP_ID)) or 0) == 0, faucet.logs()

            # a link going down on the host's side reaches Faucet as PORT_STATUS
            assert faucet.value("port_status", dp_id=hex(DP_ID), port=2) == 1
            h2.run(f"ip link set {names[1][1]} down")
            wait(lambda: faucet.value("port_status", dp_id=hex(DP_ID), port=2) == 0, 15,
                 f"PORT_STATUS link down to reach Faucet\n{faucet.logs()}")
            h2.run(f"ip link set {names[1][1]} up")
            wait(lambda: faucet.value("port_status", dp_id=hex(DP_ID), port=2) == 1, 15,
                 "PORT_STATUS link up to reach Faucet")
            assert wait(lambda: ping(h1, "10.0.0.2"), 30, "h1 -> h2 again after the link came back")

            # a Faucet restart is survived: fastpath reconnects by itself
            faucet.stop()
            wait(lambda: not fp.do("get-controller", "br0", fmt="json")[0]["connected"], 30,
                 "the switch to see it go")
            faucet.start()
            wait(lambda: faucet.value("dp_status", dp_id=hex(DP_ID)) == 1, 60,
                 "Faucet to see the datapath again", state)
            assert wait(lambda: ping(h3, "10.0.0.4"), 30, "h3 -> h4 after the restart", state)
            assert not ping(h1, "10.0.0.3")
        finally:
            if getattr(faucet, "proc", None):
                faucet.stop()
            if fp.proc is not None:
                fp.stop()
            for p in reversed(pairs):
                p.__exit__(None, None, None)
