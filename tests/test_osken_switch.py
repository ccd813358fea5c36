"""os-ken's OpenFlow 1.3 switch test suite (os_ken/tests/switch/tester.py and the JSON cases
under os_ken/tests/switch/of13/) against a fastpath bridge, with an Open vSwitch userspace
bridge (datapath_type=netdev) as the tester switch, wired as the tester's docs draw it:

    osken-manager tester.py  <-- tcp -->  fastpath br0 (target, dpid 1)
                             <-- tcp -->  OVS br0 (tester, dpid 2)
    target port N  <-- veth -->  tester port N,  N = 1, 2, 3

The tester sends each case's frame out of its port 1 (PACKET_OUT), fastpath runs the case's
flows on it, and the tester reports whatever comes back to it as a PACKET_IN (or fastpath's
own PACKET_IN, or table stats for table-miss cases). Every case runs in one namespace; the
controller, both switches and the veths live there.

In CI the test runs CI_CASES (the action and match cases, about 4 minutes) and asserts that at
least CI_MIN_PASS cases pass or were lost by the tester's own switch (LOST_BY_TESTER); the
summary (pass count, every failure with its reason) goes to the test output and to
$OSKEN_SWITCH_SUMMARY (default osken-switch-summary.txt in the test's tmp dir). The whole suite by hand (about 12 minutes; --target-ovs runs the same cases
against a second Open vSwitch bridge for reference; OSKEN_SWITCH_KEEP=DIR keeps the logs
and both switches' port counters):

    sudo PYTHONPATH=. python3 tests/test_osken_switch.py [CASE_DIR_OR_FILE ...]
"""
import contextlib
import glob
import os
import re
import subprocess
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))

from fastpathd import Fastpathd  # noqa: E402
from netns import Netns, stop_process, unique_name, veth_pair  # noqa: E402
from test_faucet import free_port  # noqa: E402

pytestmark = pytest.mark.root

FAUCET_VENV = os.environ.get("FAUCET_VENV", "/opt/faucet-venv")
TARGET_DPID, TESTER_DPID = 1, 2
PORTS = (1, 2, 3)

# What CI runs: the action and match cases. The group and meter cases are throughput cases
# (the tester sends PACKET_OUTs at a set rate for 30 s each: ~8 minutes for the 15 group
# cases, ~20 for the 36 meter ones) and os-ken's sender does not reach 2 Mbit/s on this
# machine with either switch as the target; they run by hand.
CI_CASES = ["action", "match"]
# cases of CI_CASES that passed, or were lost by the tester's own switch (LOST_BY_TESTER),
# when this was recorded (2026-12-08); fewer is a regression
CI_MIN_PASS = 393


def suite_dir():
    found = glob.glob(f"{FAUCET_VENV}/lib/python3*/site-packages/os_ken/tests/switch")
    assert found, f"no os-ken at {FAUCET_VENV}: run scripts/setup.sh (or set FAUCET_VENV)"
    return found[0]


def parse_report(text):
    """{(file, case): (result, detail)} from the tester's log: each file's description
    (`match: 00_IN_PORT`) comes first, then each case prints `    DESCRIPTION  OK` or
    `    DESCRIPTION  ERROR` followed by an indented reason."""
    results = {}
    lines = text.splitlines()
    current = ""
    for i, line in enumerate(lines):
        if re.match(r"^(action|group|match|meter): ", line):
            current = line.strip()
            continue
        m = re.match(r"^    (\S.*?)\s+(OK|ERROR)$", line)
        if not m:
            continue
        detail = ""
        if m.group(2) == "ERROR" and i + 1 < len(lines) and lines[i + 1].startswith("        "):
            detail = lines[i + 1].strip()
        results[(current, m.group(1))] = (m.group(2), detail)
    return results


def run_suite(cases, workdir, timeout, target="fastpath"):
    """Run the tester over `cases` (paths under of13/) with fastpath as the target switch
    (target="ovs": a second Open vSwitch bridge instead, the reference a by-hand run
    compares against) and OVS as the tester; returns (results, tester log text)."""
    from ovs import OvsDaemons, why_not_available
    assert why_not_available() is None, why_not_available()
    of13 = os.path.join(suite_dir(), "of13")
    # the tester takes one directory: a private one with the chosen cases linked into it
    casedir = os.path.join(workdir, "cases")
    os.makedirs(casedir, exist_ok=True)
    for case in cases:
        src = os.path.join(of13, case)
        files = sorted(glob.glob(f"{src}/**/*.json", recursive=True)) if os.path.isdir(src) else [src]
        for f in files:
            rel = os.path.relpath(f, of13).replace("/", "__")
            with contextlib.suppress(FileExistsError):
                os.symlink(f, os.path.join(casedir, rel))
    with Netns("oskt") as ns, contextlib.ExitStack() as stack:
        names = [(unique_name("okt"), unique_name("oks")) for _ in PORTS]
        for target_end, tester_end in names:
            stack.enter_context(veth_pair(target_end, tester_end, ns, ns))
        of_port = free_port(ns)
        ovs = OvsDaemons(ns, prefix="fastpath-osken.")
        ovs.start(stack)
        bridges = [("br0", TESTER_DPID, [t for _, t in names])]
        fp = None
        if target == "ovs":
            bridges.append(("br1", TARGET_DPID, [t for t, _ in names]))
        else:
            fp = Fastpathd(os.path.join(workdir, "fp.sock"), os.path.join(workdir, "fp.log"),
                           ns=ns, args=["--buffers", "4096"])
            fp.start()
            stack.callback(fp.stop)
            fp.do("add-br", "br0")
            fp.do("set", "bridge", "br0", f"other_config:datapath-id={TARGET_DPID:016x}")
            fp.do("set-fail-mode", "br0", "secure")
            for (target_end, _), port in zip(names, PORTS):
                fp.do("add-port", "br0", target_end, "type=afpacket", f"ofport_request={port}")
        for br, dpid, ifnames in bridges:
            ovs.vsctl("add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                      "fail_mode=secure", "protocols=OpenFlow13",
                      f"other_config:datapath-id={dpid:016x}")
            for ifname, port in zip(ifnames, PORTS):
                ovs.vsctl("add-port", br, ifname, "--", "set", "interface", ifname,
                          f"ofport_request={port}")

        log = os.path.join(workdir, "tester.log")
        env = dict(os.environ, PATH=f"{FAUCET_VENV}/bin:{os.environ.get('PATH', '/usr/bin:/bin')}")
        env.pop("PYTHONPATH", None)
        with open(log, "w") as out:
            proc = ns.popen([f"{FAUCET_VENV}/bin/osken-manager", "--ofp-listen-host=127.0.0.1",
                             f"--ofp-tcp-listen-port={of_port}", f"--test-switch-dir={casedir}",
                             f"--test-switch-target={TARGET_DPID:016x}",
                             f"--test-switch-tester={TESTER_DPID:016x}",
                             os.path.join(suite_dir(), "tester.py")],
                            stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            if fp is not None:
                fp.do("set-controller", "br0", f"tcp:127.0.0.1:{of_port}")
            for br, _, _ in bridges:
                ovs.vsctl("set-controller", br, f"tcp:127.0.0.1:{of_port}")
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        finally:
            stop_process(proc)
            m = re.search(r"^drop_action_of_pipeline .* total: (\d+)$", ovs.appctl("coverage/show"), re.M)
            tester_drops = int(m.group(1)) if m else 0
            if os.environ.get("OSKEN_SWITCH_KEEP"):     # by hand: both switches' view
                with open(os.path.join(workdir, "ports.txt"), "w") as f:
                    if fp is not None:
                        f.write(fp.do("show", "interfaces") + fp.do("dump-flows", "br0") +
                                fp.do("show", "errors"))
                    for br, _, _ in bridges:
                        f.write(subprocess.run(["ovs-ofctl", "-O", "OpenFlow13", "dump-ports", br],
                                               capture_output=True, text=True, env=ovs.env).stdout)
        text = open(log).read()
    return parse_report(text), text, tester_drops


# The tester's verdict when its own switch got the frame from fastpath (its port counter
# moved) but sent it no PACKET_IN. Open vSwitch dropped those frames in its own pipeline
# (its coverage counter drop_action_of_pipeline counts each one): between the tester's
# delete-all and re-add of its one flow at the start of every case, OVS's datapath flow
# cache can be revalidated against the empty table and keep a drop flow for a moment.
# Captured on the link, fastpath forwarded each such frame within 5 ms. 4 to 29 cases per
# run here, different ones each time, more under load.
LOST_BY_TESTER = "Receiving timeout: increment in rx_packets in tester."


def summary(results, tester_drops):
    ok = sorted(d for d, (r, _) in results.items() if r == "OK")
    bad = sorted((d, why) for d, (r, why) in results.items() if r != "OK")
    lost = sum(1 for _, why in bad if why == LOST_BY_TESTER)
    lines = [f"os-ken OpenFlow 1.3 switch tests: {len(ok)} of {len(results)} pass, and {lost} "
             f"more whose frame the tester switch dropped itself (OVS drop_action_of_pipeline: "
             f"{tester_drops})"]
    lines += [f"  FAIL {f} | {d}: {why}" for (f, d), why in bad]
    return "\n".join(lines), len(ok), lost


def test_osken_switch_suite(tmp_path, capsys):
    results, text, tester_drops = run_suite(CI_CASES, str(tmp_path), timeout=400)
    assert "---  Test end  ---" in text, f"the tester did not finish:\n{text[-4000:]}"
    report, passed, lost = summary(results, tester_drops)
    out = os.environ.get("OSKEN_SWITCH_SUMMARY", str(tmp_path / "osken-switch-summary.txt"))
    with open(out, "w") as f:
        f.write(report + "\n")
    with capsys.disabled():                 # the count in CI's log, captured or not
        print(f"\n{report.splitlines()[0]} (CI cases; every failure in {out})")
    # the refusals (an OpenFlow error for what fastpath does not do) are in README; show the rest
    odd = [line for line in report.splitlines()[1:] if "OFPErrorMsg" not in line]
    why = "\n".join([report.splitlines()[0], *odd, f"(all in {out})"])
    # every case lost that way must be one the tester's switch counted as its own drop
    assert lost <= tester_drops, why
    assert passed + lost >= CI_MIN_PASS, why


if __name__ == "__main__":
    args = sys.argv[1:]
    target = "fastpath"
    if args[:1] == ["--target-ovs"]:                # the same cases against OVS, for reference
        target, args = "ovs", args[1:]
    cases = args or ["action", "group", "match", "meter"]
    keep = os.environ.get("OSKEN_SWITCH_KEEP")          # a directory to keep the logs in
    with (contextlib.nullcontext(keep) if keep else tempfile.TemporaryDirectory(prefix="osken-switch.")) as d:
        os.makedirs(d, exist_ok=True)
        t0 = time.monotonic()
        results, text, tester_drops = run_suite(cases, d, timeout=4 * 3600, target=target)
        report, _, _ = summary(results, tester_drops)
        print(report)
        if os.environ.get("OSKEN_SWITCH_SUMMARY"):
            with open(os.environ["OSKEN_SWITCH_SUMMARY"], "w") as f:
                f.write(f"# {' '.join(cases)} against {target}, {time.strftime('%Y-%m-%d')}\n"
                        + report + "\n")
        print(f"({time.monotonic() - t0:.0f} s)")
        if "---  Test end  ---" not in text:
            print(text[-4000:])
