"""Soak: a long run at full load with every kind of churn, checking that nothing leaks.

    python3 -m bench.soak --duration SECONDS [--nice N] [--report FILE]     (root)

Two `fastpath run` daemons (site A and site B), each in a namespace of its own, joined
by a VPN (VXLAN + ESP keyed by IKEv2, options:psk, a short options:rekey_time so that the sites rekey
every rekey_time seconds) over a veth underlay. Site A's bridge br0 has access ports (tag
10, 10, 20), a trunk (trunks 10,20), a "churn" port and a memif port (the "VM": a
fastpath.memif.client peer in a process of its own that disconnects and reconnects every
few seconds); site B has two access ports. Every veth's far end is in a host namespace
of its own. fastpath's own generator (fastpath.afpacket.pktgen, no Python per frame)
blasts 60/1400/1514-byte frames from four hosts, unpaced, with source-MAC churn (several
hundred source MACs per host, new ones every epoch, more MACs than the MAC table holds),
broadcast, multicast, reserved, unknown and known unicast destinations, tagged VLANs 10,
20 and 30 on the trunk.

The run is a sequence of epochs. During an epoch, every --interval seconds one change is
made in rotation (VLAN reconfiguration: `set port ... tag=`, `set port ... trunks=`;
`fdb/flush` on both sites) and a check is taken; once per epoch the churn port is
removed (`del-port`) and added back (`add-port`, with the other VLAN) while the rest of
the bridge is under load. At the end of an epoch the generators stop, the memif peer
pauses, the daemons drain, and a checkpoint is taken.

At every check (both daemons, under load) and at every checkpoint:
  * buffer pool: `show pool` -- free + in flight == total, the free list holds every
    free buffer exactly once, and in flight is 0 (commands run between dispatch loops,
    when every vector has run to completion; a control frame a timer has just queued is
    let through: the check is repeated until it is 0);
  * resident memory (VmRSS, /proc/PID/status) and open descriptors (/proc/PID/fd; our
    own control connections, which the daemon closes on its next look, apart);
  * no node of a deleted port left in the graph (duplicate names in `show runtime`);
  * frame accounting, cumulative since the daemon started (ports removed during the
    run included with their last counters), which must balance exactly:

    rx + flood_copies + control_frames == tx + tx_drops + dropped + in_flight

  rx              frames that entered the graph: sum of rx_packets over every interface
                  (a frame the kernel or the interface dropped before that, rx_drops, was
                  never a buffer and is reported apart)
  flood_copies    extra copies l2-flood made (a flood to N ports is 1 frame in, N out):
                  vlan-output.packets - (l2-fwd.packets - l2-fwd drops) + l2-flood
                  no_output (vlan-output is fed only by l2-fwd and l2-flood); copies the
                  pool could not give (l2-flood no_buffer) never existed and are reported
                  apart
  control_frames  frames the control plane built and sent (ARP requests, IKE messages;
                  `show pool`)
  tx, tx_drops    sum of tx_packets and of tx_drops (the output node's drops by reason:
                  ring full, too big, link down, not connected...) over every interface
  dropped         `show errors`, less the counters of interface nodes (already rx_drops /
                  tx_drops), the no_buffer copies and the control plane's verdicts on
                  IKE messages it was punted (ike-input no_tunnel and IKE's reasons, such as
                  invalid_syntax: the same frames again, already "punted"): every frame
                  error-drop freed, by node and reason, including what the control plane
                  consumed (ARP "consumed", ike-input "punted"). It must also equal
                  error-drop's packet count in `show runtime`.
  in_flight       buffers between two dispatch loops: 0, or a control frame just queued.

  The counters of one daemon are read in one request batch on one connection (`show
  interfaces`, `show errors`, `show runtime`, `show pool`): the daemon answers all of
  them between the same two dispatch loops, so the equation holds exactly at every
  check, under full load. At a checkpoint (generators stopped, the VM paused, two
  snapshots 0.3 s apart equal) it is checked once more and in flight must be 0.

After the warm-up (--warmup, default a tenth of the run, at least one epoch), memory
must stay flat -- the heap (RssAnon) at every check, the whole resident set (VmRSS) at
the checkpoints, where every port is there and the VM connected; growth end against
start and by the least-squares slope within --rss-tolerance -- and descriptors must not
grow: the same count at every checkpoint, and under load the highest count of the
second half of the checks at most 2 above the first half's.

The report (--report FILE: Markdown, and FILE.json next to it) has the duration, frames
moved, every check, the RSS and descriptor series, the drop reasons, the churn done
(rekeys seen as SPI changes, memif reconnects, port cycles, VLAN changes, flushes) and
any leak or imbalance found. It is rewritten at every checkpoint, so a long run that is
stopped early still leaves one. Exit status 0 when every check passed.
Everything made here (namespaces, veths, daemons, peers) is removed on exit, also after
a failure, Ctrl-C or SIGTERM.
"""
import argparse
import contextlib
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
if REPO not in sys.path:
    sys.path.insert(0, REPO)
from netns import Netns, can_run, unique_name, veth_pair
from bench.trials import exit_on_signals, read_json_line, stop_process
from fastpath.ike.tunnel import ERRORS as IKE_ERRORS

PY = sys.executable
ETHERTYPE = 0x88B5
A_IP, B_IP = "192.0.2.1", "192.0.2.2"
VNI = 100
PSK = "soak: one shared secret for both sites"
# show errors counters that are not frames error-drop freed:
# copies a flood (or a flow's output) could not make, the pool being empty -- no frame
NO_BUFFER = {("l2-flood", "no_buffer"), ("flow-classify", "no_buffer")}
# the control plane's verdict on an IKE message already counted (and freed) as ike-input
# "punted": a second count of the same frame
VERDICTS = {("ike-input", r) for r in ("no_tunnel", *(name for name, _ in IKE_ERRORS))}
MB = 1024 * 1024


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- frames

def mac(b0, host, i):
    return bytes([b0, 0x50, host, 0, (i >> 8) & 0xff, i & 0xff])


def src_pool(host, epoch, n):
    """The source MACs host uses in an epoch: half stay, half are new every epoch."""
    stay = [mac(0x02, host, i) for i in range(n // 2)]
    churn = [mac(0x02, host, 0x8000 | ((epoch * n + i) & 0x7fff)) for i in range(n - n // 2)]
    return stay + churn


def frames_for(host, vlans, epoch, rng, n_frames, n_macs, peers):
    """n_frames frames from `host` (source MACs churned per epoch) to a mix of broadcast,
    multicast, reserved, unknown unicast and other hosts' MACs. vlans: [None] for an
    access host, or [(vid, weight)...] for a trunk host (tagged frames)."""
    srcs = src_pool(host, epoch, n_macs)
    known = [m for h in peers for m in src_pool(h, epoch, n_macs)]
    out = []
    for k in range(n_frames):
        r = rng.random()
        if r < 0.20:
            dst = b"\xff" * 6
        elif r < 0.25:
            dst = bytes([0x01, 0x00, 0x5e, 0x00, 0x00, rng.randrange(256)])
        elif r < 0.27:
            dst = bytes.fromhex("0180c200000e")                 # reserved: never forwarded
        elif r < 0.40:
            dst = mac(0x02, 0xee, rng.randrange(1 << 15))         # nobody has it
        else:
            dst = rng.choice(known)
        head = dst + srcs[k % len(srcs)]
        if vlans != [None]:
            vid = rng.choices([v for v, _ in vlans], [w for _, w in vlans])[0]
            head += b"\x81\x00" + vid.to_bytes(2, "big")
        head += ETHERTYPE.to_bytes(2, "big")
        r = rng.random()
        size = 60 if r < 0.90 else (1400 if r < 0.98 else 1514)
        body = f"soak h{host} e{epoch} f{k} ".encode()
        body = (body + bytes((k * 7 + j) & 0xff for j in range(size)))[:max(size - 14, 46)]
        out.append(head + body)
    return out


# ---------------------------------------------------------------- the memif peer ("VM")

def memif_peer(args):
    """`python -m bench.soak --memif-peer SOCKET`: the VM. Connects as a memif slave;
    while resumed it sends and receives, disconnects after about --connect-secs seconds
    and reconnects --gap seconds later. Commands on stdin, one a line, each answered with
    a JSON line of counters: pause (stop sending; be connected -- reconnecting if need
    be -- and stay so until resumed, so that every checkpoint sees the VM in the same
    state), resume, quit."""
    from fastpath.memif.client import MemifClient
    rng = random.Random(args.seed)
    host = 6
    st = {"connects": 0, "disconnects": 0, "connect_failures": 0, "tx_frames": 0, "rx_frames": 0,
          "dropped_by_peer": 0}
    paused, quit_ = True, False
    client, phase_end, next_connect = None, 0.0, 0.0
    epoch = 0
    buf = b""

    def emit(**kw):
        sys.stdout.write(json.dumps({**kw, **st}) + "\n")
        sys.stdout.flush()

    def make_batch():
        fr = frames_for(host, [None], epoch, rng, 256, 128, [1, 2, 3])
        return [f.ljust(60, b"\0")[:60] for f in fr]        # one size: the client's fast path

    def connect():
        nonlocal client, phase_end
        try:
            client = MemifClient(args.memif_peer, id=0, role="slave", ring_size=10,
                                 name="soak-vm", timeout=args.connect_timeout)
        except (OSError, ConnectionError, TimeoutError):
            st["connect_failures"] += 1
            return False
        st["connects"] += 1
        phase_end = time.monotonic() + args.connect_secs * (0.7 + 0.6 * rng.random())
        return True

    def drop(reason):
        nonlocal client, next_connect
        with contextlib.suppress(OSError):
            client.disconnect(reason)
        client = None
        st["disconnects"] += 1
        next_connect = time.monotonic() + args.gap

    batch = make_batch()
    while not quit_:
        r, _, _ = select.select([0], [], [], 0 if (client and not paused) else 0.01)
        if r:
            data = os.read(0, 4096)
            if not data:
                quit_ = True
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                cmd, _, seq = line.decode().strip().partition(" ")
                if cmd == "pause":
                    paused = True
                    end = time.monotonic() + 60
                    while client is None and time.monotonic() < end and not connect():
                        time.sleep(0.3)
                    emit(seq=seq, paused=True, connected=client is not None)
                elif cmd == "resume":
                    paused = False
                    epoch += 1
                    batch = make_batch()
                    if client is not None:
                        phase_end = time.monotonic() + args.connect_secs * (0.7 + 0.6 * rng.random())
                    emit(seq=seq, paused=False, connected=client is not None)
                elif cmd == "quit":
                    quit_ = True
        if quit_:
            break
        now = time.monotonic()
        if client is None:
            if not paused and now >= next_connect and not connect():
                next_connect = now + 0.5
            continue
        try:
            if not paused and now >= phase_end:
                drop("soak: VM reconnect")
                continue
            if not paused:
                sent = client.send(batch, timeout=0)
                st["tx_frames"] += sent
                st["dropped_by_peer"] += len(batch) - sent
            st["rx_frames"] += client.drain(timeout=0)
            if not paused:
                time.sleep(args.pace)
        except ConnectionError:
            drop("soak: peer gone")
    if client is not None:
        client.close()
    emit(done=True)
    return 0


# ---------------------------------------------------------------- processes

def proc_status(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM", "Threads"):
                    out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def unix_inodes(pid, path):
    """Inodes of the connected Unix sockets bound to `path`: the daemon's end of control
    connections (accepted sockets carry the listener's path)."""
    out = set()
    # the kernel makes the accepting end in the connecting socket's namespace (ours)
    for table in (f"/proc/{pid}/net/unix", "/proc/self/net/unix"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if len(parts) >= 8 and parts[7] == path and parts[5] != "01":
                        out.add(parts[6])
        except (OSError, StopIteration):
            pass
    return out


def fd_census(pid, control_path=None):
    """{kind: count} of the descriptors open in pid (socket, eventfd, memfd, file...);
    "control_client" counts the control connections (ours, closing), which are not the
    daemon's own."""
    kinds = {}
    clients = unix_inodes(pid, control_path) if control_path else set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for n in names:
        try:
            t = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue
        if t.startswith("socket:"):
            k = "control_client" if t[len("socket:["):-1] in clients else "socket"
        elif t.startswith("anon_inode:"):
            k = t[len("anon_inode:"):].strip("[]")
        elif t.startswith("/memfd:"):
            k = "memfd"
        elif t.startswith("pipe:"):
            k = "pipe"
        elif t.startswith("/dev/"):
            k = "dev"
        else:
            k = "file"
        kinds[k] = kinds.get(k, 0) + 1
    return kinds


class Daemon:
    """One `fastpath run` in a namespace, driven over its control socket."""

    def __init__(self, name, ns, rundir, nice, buffers):
        self.name, self.ns = name, ns
        self.latency = []
        self.sock = os.path.join(rundir, f"{name}.sock")
        self.logfile = os.path.join(rundir, f"{name}.log")
        cmd = ["ip", "netns", "exec", ns.name]
        if nice:
            cmd += ["nice", "-n", str(nice)]
        cmd += [PY, "-m", "fastpath.cli", "run", "--control", self.sock, "--buffers", str(buffers)]
        with open(self.logfile, "w") as f:
            # ip netns exec and nice exec: the process is the daemon itself
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                                         stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name}: fastpath run exited ({self.proc.returncode}):\n{self.tail()}")
            if os.path.exists(self.sock):
                from fastpath.ctl import DaemonError, NotRunning
                with contextlib.suppress(DaemonError, NotRunning, OSError):
                    self.ctl("version")
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name}: fastpath run did not come up:\n{self.tail()}")
            time.sleep(0.05)

    def ctl(self, *argv, fmt="json"):
        from fastpath.ctl import request
        t = time.monotonic()
        try:
            return request(list(argv), fmt, self.sock, timeout=60.0)
        finally:
            dt = time.monotonic() - t
            self.latency.append(dt)
            if dt > 2.0:
                log(f"{self.name}: {' '.join(argv[:2])} took {dt:.1f} s")

    def tail(self, n=30):
        with contextlib.suppress(OSError):
            return "".join(open(self.logfile).readlines()[-n:])
        return ""

    def alive(self):
        return self.proc.poll() is None

    def fds(self):
        """{kind: count} of the daemon's descriptors; control_client (our connections it
        has not closed yet: it closes them on its next look at the control socket) apart."""
        return fd_census(self.pid, self.sock) or {}

    def batch(self, *argvs, timeout=60.0):
        """Several commands on one connection, sent at once: the daemon answers them all
        in one go between two dispatch loops, so the answers are one consistent
        snapshot (nothing moves between them). Returns their outputs."""
        import socket
        t = time.monotonic()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.sock)
            s.sendall(b"".join(json.dumps({"argv": list(a), "format": "json"}).encode() + b"\n"
                               for a in argvs))
            s.shutdown(socket.SHUT_WR)
            buf = bytearray()
            while buf.count(b"\n") < len(argvs):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
            self.latency.append(time.monotonic() - t)
        replies = [json.loads(line) for line in bytes(buf).splitlines() if line.strip()]
        if len(replies) != len(argvs):
            raise RuntimeError(f"{self.name}: {len(replies)} replies to {len(argvs)} commands")
        for a, r in zip(argvs, replies):
            if not r.get("ok"):
                raise RuntimeError(f"{self.name}: {' '.join(a)}: {r.get('error')}")
        return [r.get("output") for r in replies]

    def stop(self):
        return stop_process(self.proc, 20.0)


def gen_cmd(ns, nice, ifname, frames, seconds=None, count=None, rate=None):
    cmd = ["ip", "netns", "exec", ns.name]
    if nice:
        cmd += ["nice", "-n", str(nice)]
    cmd += [PY, "-m", "fastpath.afpacket.pktgen_cli", "gen", ifname]
    if seconds is not None:
        cmd += ["--seconds", f"{seconds:.2f}"]
    if count is not None:
        cmd += ["--count", str(count)]
    if rate:
        cmd += ["--rate", str(rate)]
    for f in frames:
        cmd += ["--frame", f.hex()]
    return cmd


# ---------------------------------------------------------------- accounting

def _sum_by(rows, key, fields):
    out = {}
    for r in rows or []:
        d = out.setdefault(r[key], dict.fromkeys(fields, 0))
        for f in fields:
            v = r.get(f, 0)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                d[f] += int(v)
    return out


IF_FIELDS = ("rx_packets", "rx_drops", "tx_packets", "tx_drops", "rx_bytes", "tx_bytes")


def balance(snap, retired, port_names):
    """Frame accounting of one daemon at a quiescent point (see the module docstring).
    snap: {"interfaces", "errors", "runtime", "pool"} as `show ... --format json` gives
    them; retired: {port: counters} of ports deleted earlier; port_names: every interface
    name the daemon has had (their nodes' error counters are interface drops)."""
    ifs = _sum_by(snap["interfaces"], "name", IF_FIELDS)
    for name, c in retired.items():
        d = ifs.setdefault(name, dict.fromkeys(IF_FIELDS, 0))
        for f in IF_FIELDS:
            d[f] += c.get(f, 0)
    rx = sum(c["rx_packets"] for c in ifs.values())
    rx_drops = sum(c["rx_drops"] for c in ifs.values())
    tx = sum(c["tx_packets"] for c in ifs.values())
    tx_drops = sum(c["tx_drops"] for c in ifs.values())
    iface_nodes = {f"{p}-{d}" for p in port_names for d in ("input", "output")}
    dropped, verdicts, no_buffer, iface_errors = {}, {}, 0, 0
    for e in snap["errors"] or []:
        key = (e["node"], e["reason"])
        if e["node"] in iface_nodes:
            iface_errors += e["count"]
        elif key in NO_BUFFER:
            no_buffer += e["count"]
        elif key in VERDICTS:
            verdicts[f"{e['node']}/{e['reason']}"] = verdicts.get(f"{e['node']}/{e['reason']}", 0) + e["count"]
        else:
            dropped[f"{e['node']}/{e['reason']}"] = dropped.get(f"{e['node']}/{e['reason']}", 0) + e["count"]
    err = {(e["node"], e["reason"]): 0 for e in snap["errors"] or []}
    for e in snap["errors"] or []:
        err[(e["node"], e["reason"])] += e["count"]
    rt = _sum_by(snap["runtime"], "name", ("packets", "calls"))

    def pk(name):
        return rt.get(name, {}).get("packets", 0)

    fwd_drops = err.get(("l2-fwd", "reserved_dst"), 0) + err.get(("l2-fwd", "same_port"), 0)
    copies = pk("vlan-output") - (pk("l2-fwd") - fwd_drops) + err.get(("l2-flood", "no_output"), 0)
    pool = snap["pool"]
    control = pool["control_frames"]
    n_dropped = sum(dropped.values())
    left = rx + copies + control
    right = tx + tx_drops + n_dropped + pool["in_flight"]
    return {"rx": rx, "flood_copies": copies, "control_frames": control,
            "tx": tx, "tx_drops": tx_drops, "dropped": n_dropped, "in_flight": pool["in_flight"],
            "births": left, "deaths": right, "difference": left - right,
            "balanced": left == right,
            "error_drop_packets": pk("error-drop"),
            "error_drop_matches": pk("error-drop") == n_dropped,
            "rx_drops_before_graph": rx_drops, "copies_not_made": no_buffer,
            "interface_node_errors": iface_errors, "drops_by_reason": dropped,
            "control_verdicts": verdicts,
            "per_interface": ifs}


def flatness(samples, tolerance):
    """samples: [(t, value)] after the warm-up. Growth end-vs-start (medians of the first
    and last three) and least-squares slope over the span; flat when both are within
    tolerance."""
    if len(samples) < 3:
        return {"n": len(samples), "flat": True, "note": "too few samples"}
    ts = [t for t, _ in samples]
    vs = [v for _, v in samples]
    k = min(3, len(vs) // 2)
    first = sorted(vs[:k])[k // 2]
    last = sorted(vs[-k:])[k // 2]
    n = len(ts)
    mt, mv = sum(ts) / n, sum(vs) / n
    den = sum((t - mt) ** 2 for t in ts) or 1.0
    slope = sum((t - mt) * (v - mv) for t, v in zip(ts, vs)) / den
    span = ts[-1] - ts[0]
    fit = slope * span
    return {"n": n, "first": first, "last": last, "min": min(vs), "max": max(vs),
            "growth": last - first, "slope_per_hour": slope * 3600, "fit_growth": fit,
            "tolerance": tolerance, "flat": (last - first) <= tolerance and fit <= tolerance}


# ---------------------------------------------------------------- the soak

class Soak:
    def __init__(self, cfg):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.failures = []
        self._once = set()
        self.notes = []
        self.vm_seq = 0
        self.checks = []              # under-load checks
        self.checkpoints = []         # quiescent checkpoints
        self.events = []              # churn done
        self.counts = {"vlan_changes": 0, "fdb_flushes": 0, "port_cycles": 0, "checks": 0,
                       "pool_checks": 0, "balance_checks": 0, "checkpoints": 0, "rekeys": 0,
                       "memif_reconnects": 0}
        self.retired = {"A": {}, "B": {}}
        self.port_names = {"A": set(), "B": set()}
        self.spis_out = []            # (t, spi) of site A's outbound SA, as it changes
        self.gen_totals = {}          # host -> frames sent
        self.t0 = None
        self.report_path = cfg.report
        self.vlan_state = {}

    # ---- failures

    def fail(self, what, once=None):
        """Record a failure; with once=KEY only the first failure of that kind."""
        if once is not None:
            if once in self._once:
                return
            self._once.add(once)
        log("FAIL:", what)
        self.failures.append({"t": self.elapsed(), "what": what})

    def note(self, what):
        """Something worth reporting that is not a leak or an imbalance."""
        log("note:", what)
        self.notes.append({"t": self.elapsed(), "what": what})

    def elapsed(self):
        return round(time.monotonic() - self.t0, 1) if self.t0 else 0.0

    # ---- topology

    def build(self, stack):
        cfg = self.cfg
        self.rundir = tempfile.mkdtemp(prefix="fastpath-soak.")
        stack.callback(shutil.rmtree, self.rundir, True)
        ns = {}
        for key in ("A", "B", "hA10", "hA10b", "hA20", "hT", "hC", "hB10", "hB20"):
            ns[key] = stack.enter_context(Netns("sk"))
        self.ns = ns
        self.ifs = {}
        # site A's ports: (role, host namespace, daemon port settings)
        self.layout = {
            "A": [("a1", "hA10", ["tag=10"]), ("a2", "hA10b", ["tag=10"]), ("a3", "hA20", ["tag=20"]),
                  ("t1", "hT", ["trunks=10,20"]), ("c1", "hC", ["tag=10"])],
            "B": [("b1", "hB10", ["tag=10"]), ("b2", "hB20", ["tag=20"])],
        }
        for site, ports in self.layout.items():
            for role, host, _ in ports:
                a, b = unique_name("sk"), unique_name("sk")
                stack.enter_context(veth_pair(a, b, ns[site], ns[host]))     # default offloads
                self.ifs[role] = (a, b)
        ua, ub = unique_name("sku"), unique_name("sku")
        stack.enter_context(veth_pair(ua, ub, ns["A"], ns["B"]))
        self.ifs["uplink"] = (ua, ub)
        self.daemons = {}
        for site in ("A", "B"):
            d = Daemon(site, ns[site], self.rundir, cfg.nice, cfg.buffers)
            stack.callback(self._stop_daemon, d)
            self.daemons[site] = d
        A, B = self.daemons["A"], self.daemons["B"]
        self.memif_sock = os.path.join(self.rundir, "vm0.sock")
        for d, up, me, peer in ((A, ua, A_IP, B_IP), (B, ub, B_IP, A_IP)):
            d.ctl("add-ip", up, f"{me}/24")
            d.ctl("add-br", "br0", f"other_config:mac-table-size={cfg.mac_table_size}",
                  f"other_config:mac-aging-time={cfg.mac_aging}")
        for site, ports in self.layout.items():
            for role, _, settings in ports:
                self.daemons[site].ctl("add-port", "br0", self.ifs[role][0], *settings)
                self.port_names[site].add(self.ifs[role][0])
        A.ctl("add-port", "br0", "vm0", "type=memif", "tag=10", f"options:memif-socket={self.memif_sock}")
        self.port_names["A"].add("vm0")
        for d, me, peer in ((A, A_IP, B_IP), (B, B_IP, A_IP)):
            d.ctl("add-port", "br0", "vpn0", "type=vxlan", f"options:remote_ip={peer}",
                  f"options:local_ip={me}", f"options:key={VNI}", f"options:psk={PSK}",
                  f"options:rekey_time={cfg.rekey_time}")
            self.port_names[d.name].update({"vpn0", up_name(d, self)})
        deadline = time.monotonic() + 30
        while not (self._sa_up(A) and self._sa_up(B)):
            if time.monotonic() > deadline:
                raise RuntimeError("the VPN did not come up:\n" + A.tail() + B.tail())
            time.sleep(0.2)
        # the VM
        cmd = [PY, "-m", "bench.soak", "--memif-peer", self.memif_sock, "--seed", str(cfg.seed),
               "--connect-secs", str(cfg.reconnect), "--gap", "0.5", "--pace", str(cfg.memif_pace)]
        if cfg.nice:
            cmd = ["nice", "-n", str(cfg.nice)] + cmd
        self.vm = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   cwd=REPO)
        stack.callback(self._stop_vm)
        self.vm_stats = {}
        self.gens = []
        stack.callback(self._kill_gens)
        self.churn_present = True
        self.churn_tag = 10

    def _sa_up(self, d):
        return any(r["direction"] == "out" for r in d.ctl("show", "sa"))

    def _stop_daemon(self, d):
        rc = d.stop()
        if rc != 0 and not getattr(self, "stopped_clean", {}).get(d.name):
            log(f"{d.name}: fastpath run exited with {rc}\n{d.tail()}")

    def _stop_vm(self):
        if self.vm.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.vm.stdin.write("quit\n")
                self.vm.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.vm.wait(10)
        stop_process(self.vm, 5)

    def _kill_gens(self):
        for _, p in self.gens:
            stop_process(p, 5, signal.SIGKILL)

    def vm_command(self, cmd, timeout=120.0):
        """Tell the VM to pause or resume; its answer carries the command's number (an
        answer that comes too late is recognised as such and skipped)."""
        self.vm_seq += 1
        seq = str(self.vm_seq)
        try:
            self.vm.stdin.write(f"{cmd} {seq}\n")
            self.vm.stdin.flush()
        except (OSError, ValueError):
            self.fail(f"memif peer gone ({self.vm.poll()})")
            return None
        end = time.monotonic() + timeout
        while True:
            # a stray line that is not JSON must not end a long soak
            r = read_json_line(self.vm, max(0.1, end - time.monotonic()), skip_non_json=True)
            if r is None:
                if self.vm.poll() is not None:
                    self.fail(f"memif peer exited ({self.vm.returncode})")
                else:
                    self.note(f"the VM did not answer {cmd!r} within {timeout:.0f} s")
                return None
            self.vm_stats = r
            if r.get("seq") == seq:
                break
        if cmd == "pause" and not r.get("connected"):
            self.note("the VM could not reconnect for a checkpoint (memif handshakes timing out)")
        return r

    # ---- traffic

    def start_gens(self, epoch, seconds):
        cfg = self.cfg
        ns = self.ns
        plan = [("a1", "hA10", 1, [None], [2, 3, 5, 6]),
                ("a3", "hA20", 2, [None], [1, 3, 5]),
                ("t1", "hT", 3, [(10, 45), (20, 45), (30, 10)], [1, 2, 5, 6]),
                ("b1", "hB10", 5, [None], [1, 2, 3, 6])]
        self.gens = []
        for role, host, hid, vlans, peers in plan:
            frames = frames_for(hid, vlans, epoch, self.rng, cfg.frames_per_gen, cfg.macs_per_host, peers)
            cmd = gen_cmd(ns[host], cfg.gen_nice, self.ifs[role][1], frames, seconds=seconds, rate=cfg.rate)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 cwd=REPO, stdin=subprocess.DEVNULL)
            self.gens.append((host, p))

    def start_churn_burst(self, epoch, seconds):
        frames = frames_for(4, [None], epoch, self.rng, 128, 64, [1, 2, 6])
        cmd = gen_cmd(self.ns["hC"], self.cfg.gen_nice, self.ifs["c1"][1], frames, seconds=seconds,
                      rate=self.cfg.churn_rate)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=REPO, stdin=subprocess.DEVNULL)
        self.gens.append(("hC", p))
        return p

    def wait_gens(self, timeout):
        end = time.monotonic() + timeout
        for host, p in self.gens:
            try:
                out, err = p.communicate(timeout=max(1.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
                self.fail(f"generator on {host} did not finish")
                continue
            if p.returncode != 0:
                self.fail(f"generator on {host} failed ({p.returncode}): {err.strip()[-300:]}")
                continue
            try:
                r = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                self.fail(f"generator on {host}: no result")
                continue
            t = self.gen_totals.setdefault(host, {"sent": 0, "send_errors": 0})
            t["sent"] += r.get("sent", 0)
            t["send_errors"] += r.get("send_errors", 0)
        self.gens = []

    # ---- churn
    #
    # Every change is sent in the same request batch as the check that follows it, so it
    # takes effect between two dispatch loops and the snapshot right after it sees it.

    def churn_ops(self, k):
        """The k-th routine change: (commands per site, what, after(results))."""
        a2, a3, t1 = self.ifs["a2"][0], self.ifs["a3"][0], self.ifs["t1"][0]
        op = k % 4
        if op == 0:
            tag = 20 if self.vlan_state.get("a2", 10) == 10 else 10
            self.vlan_state["a2"] = tag
            self.counts["vlan_changes"] += 1
            return {"A": [("set", "port", a2, f"tag={tag}")]}, f"set port a2 tag={tag}", None
        if op == 1:
            trunks = "10" if self.vlan_state.get("t1", "10,20") == "10,20" else "10,20"
            self.vlan_state["t1"] = trunks
            self.counts["vlan_changes"] += 1
            return {"A": [("set", "port", t1, f"trunks={trunks}")]}, f"set port t1 trunks={trunks}", None
        if op == 2:
            self.counts["fdb_flushes"] += 2

            def after(res):
                return (f"fdb/flush br0 (A: {res['A'][0].get('flushed', 0)} entries, "
                        f"B: {res['B'][0].get('flushed', 0)})")
            return {"A": [("fdb/flush", "br0")], "B": [("fdb/flush", "br0")]}, "fdb/flush br0", after
        tag = 30 if self.vlan_state.get("a3", 20) == 20 else 20
        self.vlan_state["a3"] = tag
        self.counts["vlan_changes"] += 1
        return {"A": [("set", "port", a3, f"tag={tag}")]}, f"set port a3 tag={tag}", None

    def del_churn_ops(self):
        """Delete the churn port under load, its host still sending to it: its counters
        and its removal in one batch, so that they are its last counters exactly."""
        c1 = self.ifs["c1"][0]

        def after(res):
            row = next((r for r in res["A"][0] if r["name"] == c1), None)
            if row is None:
                self.fail("the churn port was gone before it was deleted")
                return "del-port c1 (missing)"
            acc = self.retired["A"].setdefault(c1, dict.fromkeys(IF_FIELDS, 0))
            for f in IF_FIELDS:
                acc[f] += int(row.get(f, 0))
            self.churn_present = False
            return f"del-port c1 (its last counters: rx {row['rx_packets']}, tx {row['tx_packets']})"
        return {"A": [("show", "interfaces"), ("del-port", "br0", c1)]}, "del-port c1", after

    def add_churn_ops(self):
        tag = 20 if self.churn_tag == 10 else 10

        def after(res):
            self.churn_tag = tag
            self.churn_present = True
            self.counts["port_cycles"] += 1
            return f"add-port c1 tag={tag}"
        return {"A": [("add-port", "br0", self.ifs["c1"][0], f"tag={tag}")]}, f"add-port c1 tag={tag}", after

    # ---- checks

    def pool_check(self, d, site, where, pool, drain):
        """free + in flight == total and the free list sound. In flight is whatever a timer
        queued since the last dispatch loop (a control frame or two); with drain (a
        quiescent point) it must go to 0: ask again until it does."""
        transient = 0
        for attempt in range(40):
            self.counts["pool_checks"] += 1
            if not pool["free_list_ok"]:
                self.fail(f"{site} {where}: pool free list broken: {pool['problem']}")
                break
            if pool["free"] + pool["in_flight"] != pool["buffers"]:
                self.fail(f"{site} {where}: free {pool['free']} + in flight {pool['in_flight']} "
                          f"!= {pool['buffers']}")
                break
            if pool["in_flight"] == 0:
                break
            transient = max(transient, pool["in_flight"])
            if not drain:
                if pool["in_flight"] > self.cfg.max_in_flight:
                    self.fail(f"{site} {where}: {pool['in_flight']} buffers in flight between dispatch loops")
                break
            time.sleep(0.05)
            pool = d.ctl("show", "pool")
        else:
            self.fail(f"{site} {where}: {pool['in_flight']} buffers stay in flight between "
                      "dispatch loops (a leak)")
        pool = dict(pool)
        pool["transient_in_flight"] = transient
        return pool

    SNAPSHOT = (("show", "interfaces"), ("show", "errors"), ("show", "runtime"), ("show", "pool"),
                ("show", "sa"))

    def snapshot(self, d, ops=()):
        """One atomic snapshot of a daemon's counters (see Daemon.batch), after ops (a
        change made in the same batch); returns (snapshot, the ops' outputs)."""
        out = d.batch(*ops, *self.SNAPSHOT)
        res, (ifs, errs, rt, pool, sa) = out[:len(ops)], out[len(ops):]
        return {"interfaces": ifs, "errors": errs, "runtime": rt, "pool": pool, "sa": sa}, res

    def account(self, site, snap, where):
        """Frame accounting on one snapshot; exact whenever the snapshot is atomic."""
        self.port_names[site].update(r["name"] for r in snap["interfaces"])
        b = balance(snap, self.retired[site], self.port_names[site])
        self.counts["balance_checks"] += 1
        if not b["balanced"]:
            self.fail(f"{site} {where}: frames do not balance: births {b['births']} (rx {b['rx']} + "
                      f"copies {b['flood_copies']} + control {b['control_frames']}) != deaths "
                      f"{b['deaths']} (tx {b['tx']} + tx_drops {b['tx_drops']} + dropped {b['dropped']} "
                      f"+ in flight {b['in_flight']}): difference {b['difference']}")
        if not b["error_drop_matches"]:
            self.fail(f"{site} {where}: error-drop freed {b['error_drop_packets']} frames, "
                      f"show errors says {b['dropped']}")
        return b

    def sample(self, where, quiescent=False, change=None):
        """One check of both daemons: a change (if any) and a snapshot in one batch each,
        then memory, descriptors, the pool, frame accounting."""
        row = {"t": self.elapsed(), "where": where, "quiescent": quiescent}
        ops, what, after = change or ({}, None, None)
        snaps, results, procs = {}, {}, {}
        for site, d in self.daemons.items():
            if not d.alive():
                self.fail(f"{site}: daemon died ({d.proc.returncode}):\n{d.tail()}")
                raise RuntimeError(f"{site}: daemon died")
            if quiescent:
                snaps[site], results[site] = self.quiet_snapshot(d, where), []
            else:
                snaps[site], results[site] = self.snapshot(d, ops.get(site, ()))
            procs[site] = (proc_status(d.pid), d.fds())
        if what:
            if after:
                what = after(results)
            self.events.append({"t": row["t"], "what": what})
            row["change"] = what
        for site, d in self.daemons.items():
            snap = snaps[site]
            st, fds = procs[site]
            b = self.account(site, snap, where)
            pool = self.pool_check(d, site, where, snap["pool"], drain=quiescent)
            names = [r["name"] for r in snap["runtime"] if "worker" not in r]
            dupes = len(names) - len(set(names))
            if dupes:
                dup = sorted({n for n in names if names.count(n) > 1})
                self.fail(f"{site} {where}: the graph still holds the nodes of deleted ports "
                          f"({dupes} stale rows in show runtime: {', '.join(dup)})", once=f"dupes-{site}")
            own = sum(v for k, v in fds.items() if k != "control_client")
            row[site] = {"rss_kb": st.get("VmRSS"), "anon_kb": st.get("RssAnon"),
                         "shmem_kb": st.get("RssShmem"), "threads": st.get("Threads"),
                         "hwm_kb": st.get("VmHWM"), "fds": own, "fd_kinds": fds,
                         "pool": {k: pool.get(k) for k in ("buffers", "free", "in_flight",
                                                           "alloc_failures", "transient_in_flight")},
                         "runtime_rows": len(names), "runtime_dupes": dupes,
                         "balance": {k: b[k] for k in ("births", "deaths", "difference", "balanced",
                                                       "rx", "flood_copies", "control_frames", "tx",
                                                       "tx_drops", "dropped", "in_flight")}}
            if quiescent:
                row[site]["accounting"] = b
                if b["in_flight"] != 0:
                    self.fail(f"{site} {where}: {b['in_flight']} buffers in flight at a quiescent point")
            if site == "A":
                vm = next((r for r in snap["interfaces"] if r["name"] == "vm0"), {})
                row["memif"] = {k: v for k, v in vm.items() if k.startswith("memif_") and not isinstance(v, str)}
                row["memif_connected"] = int(vm.get("memif_connected", 0))
                row["memif_connects"] = int(vm.get("memif_connects", 0))
                out = [r["spi"] for r in snap["sa"] if r["direction"] == "out"]
                if out and (not self.spis_out or self.spis_out[-1][1] != out[0]):
                    self.spis_out.append((row["t"], out[0]))
        self.counts["checks"] += 1
        self.checks.append(row)
        return row

    @staticmethod
    def _key(s):
        return (json.dumps(s["interfaces"], sort_keys=True), json.dumps(s["errors"], sort_keys=True),
                s["pool"]["control_frames"], s["pool"]["in_flight"],
                sum(r["packets"] for r in s["runtime"]))

    def quiet_snapshot(self, d, where, timeout=60.0):
        """Two snapshots 0.3 s apart that agree: the generators have stopped and every
        frame they sent has been dealt with (IKE's timers may send a frame at any
        time: then try again)."""
        end = time.monotonic() + timeout
        s1 = self.snapshot(d)[0]
        while True:
            time.sleep(0.3)
            s2 = self.snapshot(d)[0]
            if self._key(s1) == self._key(s2):
                return s2
            if time.monotonic() > end:
                self.fail(f"{d.name} {where}: counters never stopped moving")
                return s2
            s1 = s2

    def checkpoint(self, epoch):
        self.vm_command("pause")
        row = self.sample(f"checkpoint {epoch}", quiescent=True)
        cp = {"t": row["t"], "epoch": epoch, "memif_connected": row["memif_connected"]}
        for site in self.daemons:
            cp[site] = dict(row[site]["accounting"])
            cp[site]["rss_kb"] = row[site]["rss_kb"]
            cp[site]["fds"] = row[site]["fds"]
        self.counts["checkpoints"] += 1
        self.checkpoints.append(cp)
        log(f"checkpoint {epoch} at {cp['t']:.0f} s: A {cp['A']['births']:,} frames in, balanced "
            f"{cp['A']['balanced']}; B {cp['B']['births']:,}, balanced {cp['B']['balanced']}; RSS A "
            f"{row['A']['rss_kb']} kB, B {row['B']['rss_kb']} kB; fds A {row['A']['fds']}, B {row['B']['fds']}; "
            f"{len(self.failures)} failures so far")

    # ---- the run

    def run(self):
        cfg = self.cfg
        self.t0 = time.monotonic()
        self.started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        end = self.t0 + cfg.duration
        epoch = 0
        op = 0
        self.sample("start")
        while True:
            left = end - time.monotonic()
            if left < cfg.min_epoch:
                break
            E = cfg.epoch if left >= cfg.epoch + cfg.min_epoch else left
            traffic = max(E - cfg.drain, 2.0)
            epoch += 1
            e0 = time.monotonic()
            self.start_gens(epoch, traffic)
            self.vm_command("resume")
            # the churn port's host sends for the whole epoch; the port is deleted at the
            # second check and added back (with the other VLAN) at the third, under load
            self.start_churn_burst(epoch, traffic)
            step = 0
            nxt_check = e0 + cfg.interval
            while time.monotonic() - e0 < traffic:
                if time.monotonic() < nxt_check:
                    time.sleep(0.1)
                    continue
                if step == 1 and self.churn_present:
                    change = self.del_churn_ops()
                elif step == 2 and not self.churn_present:
                    change = self.add_churn_ops()
                else:
                    change = self.churn_ops(op)
                    op += 1
                self.sample(f"epoch {epoch} load", change=change)
                step += 1
                nxt_check = time.monotonic() + cfg.interval
            if not self.churn_present:
                self.sample(f"epoch {epoch} end", change=self.add_churn_ops())
            self.wait_gens(60)
            self.checkpoint(epoch)
            self.write_report()
        return self.finish()

    def finish(self):
        cfg = self.cfg
        warm = max(cfg.warmup, 0)
        self.counts["rekeys"] = max(0, len(self.spis_out) - 1)
        self.counts["memif_reconnects"] = max(0, (self.checks[-1]["memif_connects"] if self.checks else 0) - 1)
        self.flat = {}
        for site in ("A", "B"):
            # memory: the heap (RssAnon) at every check; the whole resident set (VmRSS:
            # the afpacket rings, the VM's shared memory...) at the quiescent checkpoints,
            # where every port is there and the VM connected
            post = [c for c in self.checks if c["t"] >= warm and c[site]["anon_kb"]]
            cps = [c for c in self.checkpoints if c["t"] >= warm]
            series = {"heap": [(c["t"], c[site]["anon_kb"] / 1024) for c in post],
                      "rss": [(c["t"], c[site]["rss_kb"] / 1024) for c in cps]}
            self.flat[site] = {"memory": {k: flatness(v, cfg.rss_tolerance_mb) for k, v in series.items()}}
            for k, f in self.flat[site]["memory"].items():
                if not f["flat"]:
                    what = ("heap (RssAnon, every check)" if k == "heap"
                            else "resident memory (VmRSS, at the checkpoints)")
                    self.fail(f"{site}: {what} grows after the warm-up: {f['growth']:+.2f} MB end "
                              f"against start, {f['fit_growth']:+.2f} MB by the fitted slope "
                              f"({f['slope_per_hour']:+.1f} MB/h; tolerance {cfg.rss_tolerance_mb} MB)")
            # descriptors: exactly the same count at every checkpoint (same state: every
            # port there, the VM connected; grouped by the VM's state in case it could not
            # connect); under load no upward trend (an IKE exchange or a port in the middle of
            # being changed holds a few more or fewer): the highest count of the second
            # half of the checks at most fd_slack (2) above the first half's
            by_state = {}
            for c in cps:
                by_state.setdefault(c["memif_connected"], []).append(c[site]["fds"])
            uneven = {st: v for st, v in by_state.items() if len(set(v)) > 1}
            load = [c[site]["fds"] for c in post]
            half = len(load) // 2
            first, second = (max(load[:half]), max(load[half:])) if half else (None, None)
            self.flat[site]["fds"] = {"checkpoints_by_memif_state": by_state,
                                      "under_load_range": [min(load), max(load)] if load else None,
                                      "first_half_max": first, "second_half_max": second}
            if uneven:
                self.fail(f"{site}: open descriptors differ between quiescent checkpoints "
                          f"(by memif state: {uneven})")
            if half and second > first + cfg.fd_slack:
                self.fail(f"{site}: open descriptors trend up under load: highest {first} in the "
                          f"first half of the checks, {second} in the second")
        if self.counts["checkpoints"] == 0:
            self.fail("no checkpoint was taken (run too short)")
        self.ok = not self.failures
        self.write_report(final=True)
        return self.report()

    # ---- report

    def report(self):
        cfg = self.cfg
        self.counts["rekeys"] = max(0, len(self.spis_out) - 1)
        if self.checks:
            self.counts["memif_reconnects"] = max(0, self.checks[-1].get("memif_connects", 0) - 1)
        moved = {s: (self.checkpoints[-1][s]["tx"] if self.checkpoints else 0) for s in ("A", "B")}
        return {"ok": not self.failures, "failures": self.failures, "notes": self.notes,
                "config": {k: v for k, v in vars(cfg).items() if not k.startswith("_")},
                "started": getattr(self, "started", None), "niceness": os.nice(0),
                "elapsed": self.elapsed(), "counts": self.counts,
                "frames_moved": moved, "generators": self.gen_totals, "vm": self.vm_stats,
                "rekeys": [{"t": t, "spi": f"0x{s:08x}"} for t, s in self.spis_out],
                "flatness": getattr(self, "flat", {}), "checkpoints": self.checkpoints,
                "checks": self.checks, "events": self.events,
                "control_latency": {n: latency(d.latency) for n, d in getattr(self, "daemons", {}).items()},
                "memif_port": self.checks[-1].get("memif", {}) if self.checks else {},
                "interfaces": {s: self.ifs_of(s) for s in ("A", "B")}}

    def ifs_of(self, site):
        roles = {r for r, _, _ in self.layout[site]}
        out = {r: self.ifs[r][0] for r in roles}
        out["uplink"] = self.ifs["uplink"][0 if site == "A" else 1]
        return out

    def write_report(self, final=False):
        if not self.report_path:
            return
        rep = self.report()
        base = self.report_path.removesuffix(".md")
        with open(base + ".json", "w") as f:
            json.dump(rep, f, indent=1, default=str)
        with open(self.report_path, "w") as f:
            f.write(markdown(rep, final))


def latency(xs):
    if not xs:
        return {}
    ys = sorted(xs)
    return {"n": len(ys), "median_s": round(ys[len(ys) // 2], 3),
            "p95_s": round(ys[min(len(ys) - 1, int(len(ys) * 0.95))], 3), "max_s": round(ys[-1], 3)}


def up_name(d, soak):
    return soak.ifs["uplink"][0 if d.name == "A" else 1]


def markdown(rep, final):
    c = rep["config"]
    L = [f"# fastpath soak {'report' if final else '(in progress)'}", ""]
    status = "PASS" if rep["ok"] else "FAIL"
    L.append(f"**{status}** -- {rep['elapsed']:.0f} s of {c['duration']:.0f} s requested "
             f"(started {rep['started']}; epochs of {c['epoch']:.0f} s, a check every {c['interval']:.0f} s, "
             f"warm-up {c['warmup']:.0f} s, niceness {rep.get('niceness')} (+{c['nice']} for the daemons, "
             f"+{c['gen_nice']} for the generators), {c['buffers']} buffers per daemon, "
             f"rekey_time {c['rekey_time']} s, memif reconnect every ~{c['reconnect']:.0f} s).")
    L.append("")
    k = rep["counts"]
    fm = rep["frames_moved"]
    L.append("## Summary")
    L.append("")
    L.append(f"- frames moved (tx, all interfaces): site A {fm['A']:,}, site B {fm['B']:,}; "
             f"generators sent {sum(g['sent'] for g in rep['generators'].values()):,}")
    L.append(f"- checks: {k['checks']} (pool checks {k['pool_checks']}, frame-accounting checks "
             f"{k['balance_checks']}, of which {k['checkpoints']} at quiescent checkpoints)")
    L.append(f"- churn: {k['vlan_changes']} VLAN changes, {k['fdb_flushes']} fdb/flush, {k['port_cycles']} "
             f"del-port/add-port cycles, {k['rekeys']} rekeys seen (outbound SPI changes), "
             f"{k['memif_reconnects']} memif reconnects (VM)")
    lat = rep.get("control_latency", {})
    if lat:
        L.append("- control command latency (request to reply, under load and idle): " + "; ".join(
            f"site {n}: median {v.get('median_s')} s, p95 {v.get('p95_s')} s, max {v.get('max_s')} s"
            for n, v in lat.items() if v))
    m = rep.get("memif_port") or {}
    if m:
        L.append("- memif port vm0 (daemon side): " + ", ".join(f"{k[6:]} {v}" for k, v in sorted(m.items()) if v))
    vm = rep.get("vm") or {}
    if vm:
        L.append(f"- VM (memif peer): {vm.get('connects')} connects, {vm.get('connect_failures')} failed "
                 f"attempts, {vm.get('tx_frames', 0):,} frames sent, {vm.get('rx_frames', 0):,} received")
    if rep["failures"]:
        L.append("")
        L.append("## Failures")
        L.append("")
        for f in rep["failures"][:50]:
            L.append(f"- at {f['t']} s: {f['what']}")
        if len(rep["failures"]) > 50:
            L.append(f"- ... and {len(rep['failures']) - 50} more")
    if rep.get("notes"):
        L.append("")
        L.append("## Notes")
        L.append("")
        for n in rep["notes"][:50]:
            L.append(f"- at {n['t']} s: {n['what']}")
    L.append("")
    L.append("## Frame accounting at the checkpoints")
    L.append("")
    L.append("rx + flood copies + control frames == tx + tx drops + dropped (show errors) + in flight")
    L.append("")
    L.append("| epoch | t (s) | site | rx | flood copies | control | tx | tx drops | dropped | in flight | difference | rx drops before graph | copies not made |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cp in rep["checkpoints"]:
        for s in ("A", "B"):
            b = cp[s]
            L.append(f"| {cp['epoch']} | {cp['t']:.0f} | {s} | {b['rx']:,} | {b['flood_copies']:,} | "
                     f"{b['control_frames']} | {b['tx']:,} | {b['tx_drops']:,} | {b['dropped']:,} | "
                     f"{b['in_flight']} | {b['difference']} | {b['rx_drops_before_graph']:,} | {b['copies_not_made']:,} |")
    if rep["checkpoints"]:
        last = rep["checkpoints"][-1]
        for s in ("A", "B"):
            L.append("")
            L.append(f"Drops by reason, site {s} (last checkpoint):")
            L.append("")
            for r, n in sorted(last[s]["drops_by_reason"].items(), key=lambda x: -x[1]):
                L.append(f"- {r}: {n:,}")
    L.append("")
    L.append("## Resident memory and descriptors")
    L.append("")
    for s, f in rep.get("flatness", {}).items():
        for k, r in f["memory"].items():
            if "growth" not in r:
                continue
            what = "heap (RssAnon), every check" if k == "heap" else "VmRSS at the quiescent checkpoints"
            L.append(f"- site {s}, {what}, after the warm-up: {r['first']:.2f} -> {r['last']:.2f} MB "
                     f"(min {r['min']:.2f}, max {r['max']:.2f}; fitted {r['slope_per_hour']:+.2f} MB/h over "
                     f"{r['n']} samples; {'flat' if r['flat'] else 'GROWING'})")
        fd = f["fds"]
        L.append(f"- site {s}, open descriptors after the warm-up: at the checkpoints (by VM state, "
                 f"1 = connected) {fd['checkpoints_by_memif_state']}; under load {fd['under_load_range']}, "
                 f"highest {fd['first_half_max']} in the first half, {fd['second_half_max']} in the second")
    L.append("")
    L.append("| t (s) | where | RSS A (kB) | heap A (kB) | fds A | balanced A | RSS B (kB) | heap B (kB) | fds B | balanced B | VM up |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for ch in rep["checks"]:
        L.append(f"| {ch['t']:.0f} | {ch['where']} | {ch['A']['rss_kb']} | {ch['A']['anon_kb']} | {ch['A']['fds']} | "
                 f"{'yes' if ch['A']['balance']['balanced'] else 'NO'} | {ch['B']['rss_kb']} | "
                 f"{ch['B']['anon_kb']} | {ch['B']['fds']} | {'yes' if ch['B']['balance']['balanced'] else 'NO'} | "
                 f"{ch['memif_connected']} |")
    L.append("")
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------- entry points

class Config:
    def __init__(self, duration, nice=0, report=None, interval=None, epoch=None, warmup=None,
                 seed=1, buffers=4096, rekey_time=None, reconnect=None, rate=None,
                 rss_tolerance_mb=None, frames_per_gen=384, macs_per_host=300,
                 mac_table_size=1024, mac_aging=20, memif_pace=0.004, churn_rate=20000):
        self.duration = float(duration)
        short = self.duration <= 600
        self.nice = nice
        self.report = report
        self.epoch = float(epoch or (20.0 if short else 30.0))
        self.interval = float(interval or (4.0 if short else 5.0))
        self.drain = 3.0
        self.min_epoch = min(self.epoch, 10.0)
        self.warmup = float(warmup if warmup is not None else max(self.epoch + 5, 0.1 * self.duration))
        self.seed = seed
        self.buffers = buffers
        self.rekey_time = int(rekey_time or (10 if short else 15))
        self.reconnect = float(reconnect or (6.0 if short else 12.0))
        self.rate = rate
        self.fd_slack = 2
        self.max_in_flight = 64          # under load: control frames a timer just queued
        # the generators yield to the daemons a little (they all share the soak's one
        # scheduler autogroup): the switches stay overloaded, the control plane less starved
        self.gen_nice = min(19, nice + 5)
        self.rss_tolerance_mb = float(rss_tolerance_mb if rss_tolerance_mb is not None else (3.0 if short else 4.0))
        self.frames_per_gen = frames_per_gen
        self.macs_per_host = macs_per_host
        self.mac_table_size = mac_table_size
        self.mac_aging = mac_aging
        self.memif_pace = memif_pace
        self.churn_rate = churn_rate


def run_soak(cfg):
    """Build, soak, tear down; returns the report (a dict, "ok" says whether every check
    passed)."""
    if not can_run():
        raise RuntimeError("soak: needs root, veth and network namespaces")
    soak = Soak(cfg)
    with contextlib.ExitStack() as stack:
        log(f"soak: building the topology (duration {cfg.duration:.0f} s)")
        soak.build(stack)
        log("soak: running")
        try:
            rep = soak.run()
        except BaseException as e:
            soak.fail(f"aborted: {type(e).__name__}: {e}")
            soak.ok = False
            with contextlib.suppress(Exception):
                soak.write_report(final=True)
            raise
        soak.stopped_clean = {}
        for site, d in soak.daemons.items():
            rc = d.stop()
            soak.stopped_clean[site] = True
            if rc != 0:
                soak.fail(f"{site}: fastpath run exited with {rc} on SIGTERM:\n{d.tail()}")
        if soak.failures and rep["ok"]:
            rep = soak.report()
            soak.write_report(final=True)
    return rep


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python3 -m bench.soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, help="seconds of soak (e.g. 3600; CI: ~120)")
    p.add_argument("--nice", type=int, default=0, help="nice value for the daemons, generators and peer")
    p.add_argument("--report", metavar="FILE", help="write the report here (Markdown; JSON in FILE.json)")
    p.add_argument("--interval", type=float, help="seconds between checks (default 4 short, 5 long)")
    p.add_argument("--epoch", type=float, help="seconds between quiescent checkpoints (default 20 / 30)")
    p.add_argument("--warmup", type=float, help="seconds before RSS/descriptors must be flat "
                                                "(default: a tenth of the run, at least an epoch)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--buffers", type=int, default=4096, help="buffers per daemon (default 4096: "
                                                             "floods can run the pool dry)")
    p.add_argument("--rekey-time", type=int, help="options:rekey_time (default 10 short, 15 long)")
    p.add_argument("--reconnect", type=float, help="seconds the VM stays connected (default 6 / 12)")
    p.add_argument("--rate", type=float, help="frames/s per generator (default: as fast as possible)")
    p.add_argument("--rss-tolerance", type=float, dest="rss_tolerance_mb",
                   help="MB of RSS growth allowed after the warm-up (default 3 short, 4 long)")
    # the memif peer, run by the soak itself
    p.add_argument("--memif-peer", metavar="SOCKET", help=argparse.SUPPRESS)
    p.add_argument("--connect-secs", type=float, default=6.0, help=argparse.SUPPRESS)
    p.add_argument("--gap", type=float, default=0.5, help=argparse.SUPPRESS)
    p.add_argument("--pace", type=float, default=0.004, help=argparse.SUPPRESS)
    p.add_argument("--connect-timeout", type=float, default=15.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memif_peer is None and args.duration is None:
        p.error("--duration is required")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.memif_peer:
        return memif_peer(args)

    exit_on_signals()
    cfg = Config(args.duration, nice=args.nice, report=args.report, interval=args.interval,
                 epoch=args.epoch, warmup=args.warmup, seed=args.seed, buffers=args.buffers,
                 rekey_time=args.rekey_time, reconnect=args.reconnect, rate=args.rate,
                 rss_tolerance_mb=args.rss_tolerance_mb)
    rep = run_soak(cfg)
    print(json.dumps({k: rep[k] for k in ("ok", "elapsed", "counts", "frames_moved", "failures")}, indent=1))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
