"""Real traffic between two hosts, as users leave their interfaces: iperf3 TCP (1 and 4
streams) and ping RTT at low load, through a fastpath bridge of two AF_PACKET ports and
through a Linux bridge in the same places, in the same run, interleaved.

Topology: namespaces tcpa and tcpb (10.2.0.1, 10.2.0.2), each on a veth whose other end
is in namespace tcpsw, where the switch under test joins the two ends. Default offloads
and MTUs everywhere. fastpath runs as `fastpath run` (its own process) in tcpsw.

    python3 -m bench.tcp [--seconds S] [--rounds N]      # prints a table and JSON
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from netns import Netns, unique_name, veth_pair  # noqa: E402

A_IP, B_IP = "10.2.0.1", "10.2.0.2"


class Topology:
    def __init__(self, stack):
        self.sw, self.a, self.b = (stack.enter_context(Netns(p)) for p in ("tcpsw", "tcpa", "tcpb"))
        self.ports = []
        for ns, ip in ((self.a, A_IP), (self.b, B_IP)):
            p, h = unique_name("tcs"), unique_name("tch")
            stack.enter_context(veth_pair(p, h, self.sw, ns))
            ns.run(f"ip addr add {ip}/24 dev {h}")
            self.ports.append(p)

    def linux_bridge(self):
        self.sw.run("ip link add br0 type bridge")
        for p in self.ports:
            self.sw.run(f"ip link set {p} master br0")
        self.sw.run("ip link set br0 up")

    def no_linux_bridge(self):
        self.sw.run("ip link del br0", check=False)

    def fastpath(self, rundir):
        sock = os.path.join(rundir, "fp.sock")
        log = open(os.path.join(rundir, "fp.log"), "w")
        proc = self.sw.popen([sys.executable, "-m", "fastpath.cli", "run", "--control", sock],
                             stdout=log, stderr=subprocess.STDOUT)
        ctl = [sys.executable, "-m", "fastpath.ctl", "--control", sock]
        deadline = time.monotonic() + 20
        while subprocess.run(ctl + ["show"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("fastpath did not start: " + open(log.name).read())
            time.sleep(0.1)
        subprocess.run(ctl + ["add-br", "br0"], check=True, capture_output=True)
        for p in self.ports:
            subprocess.run(ctl + ["add-port", "br0", p, "type=afpacket"], check=True, capture_output=True)
        return proc

    def fastpath_packets(self, rundir):
        """Frames fastpath's ports received so far."""
        r = subprocess.run([sys.executable, "-m", "fastpath.ctl", "--control",
                            os.path.join(rundir, "fp.sock"), "--format", "json", "show", "interfaces"],
                           capture_output=True, text=True)
        try:
            return sum(int(row.get("rx_packets", 0)) for row in json.loads(r.stdout))
        except (ValueError, TypeError, AttributeError):
            return 0

    def iperf(self, seconds, streams):
        srv = self.b.popen(["iperf3", "-s", "-1", "-B", B_IP], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.3)
            r = self.a.run(["iperf3", "-c", B_IP, "-t", str(seconds), "-P", str(streams), "-J"],
                           check=False, timeout=seconds + 30)
            srv.wait(10)
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
        try:
            return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
        except (ValueError, KeyError):
            return 0.0

    def rtt_ms(self, count=200, interval=0.01):
        self.a.run(f"ping -c 3 -i 0.05 -W 1 {B_IP}", check=False)      # ARP and FDB warm
        r = self.a.run(["ping", "-c", str(count), "-i", str(interval), "-W", "1", B_IP], check=False)
        m = re.search(r"= [\d.]+/([\d.]+)/", r.stdout)
        return float(m.group(1)) if m else float("nan")


def run(seconds=3, rounds=2, out=print):
    from contextlib import ExitStack
    res = {"linux-bridge": {"tcp1": [], "tcp4": [], "rtt": []},
           "fastpath": {"tcp1": [], "tcp4": [], "rtt": []}}
    packets = 0
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="fp-tcp-") as rundir:
        t = Topology(stack)
        for _ in range(rounds):
            for peer in ("linux-bridge", "fastpath"):
                proc = None
                if peer == "linux-bridge":
                    t.linux_bridge()
                else:
                    proc = t.fastpath(rundir)
                try:
                    res[peer]["rtt"].append(t.rtt_ms())
                    res[peer]["tcp1"].append(t.iperf(seconds, 1))
                    res[peer]["tcp4"].append(t.iperf(seconds, 4))
                finally:
                    if proc:
                        packets += t.fastpath_packets(rundir)
                        proc.terminate()
                        proc.wait(10)
                    else:
                        t.no_linux_bridge()
    best = {p: {"tcp1": max(v["tcp1"]), "tcp4": max(v["tcp4"]), "rtt": min(v["rtt"])} for p, v in res.items()}
    lb, fp = best["linux-bridge"], best["fastpath"]
    lines = [f"{'':<28}{'Linux bridge':>14}{'fastpath':>12}{'ratio / diff':>16}",
             f"{'iperf3 TCP, 1 stream':<28}{lb['tcp1']:>11.2f} Gb{fp['tcp1']:>9.2f} Gb{fp['tcp1'] / lb['tcp1']:>15.2f}x",
             f"{'iperf3 TCP, 4 streams':<28}{lb['tcp4']:>11.2f} Gb{fp['tcp4']:>9.2f} Gb{fp['tcp4'] / lb['tcp4']:>15.2f}x",
             f"{'ping RTT, 1 per 10 ms (avg)':<28}{lb['rtt']:>11.3f} ms{fp['rtt']:>9.3f} ms"
             f"{fp['rtt'] - lb['rtt']:>+13.3f} ms"]
    table = "\n".join(lines)
    out(table)
    return {"rounds": res, "best": best, "table": table, "packets": packets}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args(argv)
    report = run(a.seconds, a.rounds)
    print(json.dumps(report["best"]))


if __name__ == "__main__":
    main()
