"""Fuzz the L2 switch: arbitrary frames on access, trunk, native and dot1q-tunnel ports of an
in-memory switch (bridge br0, the NORMAL switch) and on the ports of a bridge with OpenFlow
rules (br1).

    python fuzz/fuzz_l2.py -atheris_runs=1000000 [CORPUS_DIR]

An input is 1-4 bursts; a burst is 1-8 frames (raw bytes, or built from fields: MACs, up to
three tags with any TPID, any EtherType, any length up to a buffer's 2048 bytes, cut short
anywhere) injected together on one port. Invariants, per burst:
  - nothing raises; every buffer is back in the pool (check_accounting(0));
  - no frame leaves on its ingress port (the one exception: br1's `in_port` action rule),
    or on a port of another bridge; every frame that leaves is >= 14 bytes and at most 4
    (br0) or 8 (br1, two push_vlan) bytes longer than the longest that came in;
  - br0 (NORMAL): a frame leaves only on a port that carries the VLAN some frame of the
    burst was classified into (OVS's vlan_mode rules), tagged with that VLAN where the port
    tags it; runts, cut-off tags and reserved destinations (01:80:c2:00:00:0x) never
    leave; broadcast/multicast never crosses from a split-horizon group into itself;
  - the twin oracle (fuzzcommon.Twin): the outcome does not depend on bytes outside the frames.
"""
import struct
import sys

from fuzzcommon import Clock, Observer, Reader, Twin, atheris_main, egress, inject

from fastpath.switch import Switch

BR0 = {
    "a10": {"tag": 10},
    "a40": {"tag": 40},
    "t": {"trunks": "10,20,30", "vlan_mode": "trunk"},
    "tall": {},                                             # trunk of every VLAN, 0 included
    "nt": {"tag": 20, "trunks": "10,20", "vlan_mode": "native-tagged"},
    "nu": {"tag": 30, "trunks": "0,10,30", "vlan_mode": "native-untagged"},
    "q": {"tag": 40, "vlan_mode": "dot1q-tunnel", "options:split_group": "3"},
    "q2": {"tag": 40, "vlan_mode": "dot1q-tunnel", "options:split_group": "3"},
}
BR1 = {"f1": {}, "f2": {}, "f3": {}, "f4": {"tag": 10}}
FLOWS = [
    "priority=300,in_port=f1,dl_vlan=0xffff actions=push_vlan:0x8100,mod_vlan_vid:5,output:f2",
    "priority=290,in_port=f1,dl_vlan=5 actions=strip_vlan,output:f3,mod_vlan_pcp:3,output:f2",
    "priority=285,in_port=f1,dl_vlan_pcp=7 actions=mod_vlan_pcp:1,mod_vlan_vid:4095,normal",
    "priority=280,in_port=f2,dl_type=0x0800 actions=mod_vlan_vid:7,flood",
    "priority=270,in_port=f2,dl_src=01:00:00:00:00:00/01:00:00:00:00:00 actions=all",
    "priority=265,in_port=f2,dl_dst=00:00:00:00:00:0b/ff:ff:ff:00:00:ff actions=output:f2,output:f1",
    "priority=260,in_port=f3,dl_dst=ff:ff:ff:ff:ff:ff actions=normal",
    "priority=250,in_port=f3,dl_type=0x88a8 actions=push_vlan:0x88a8,push_vlan:0x8100,output:f1",
    "priority=240,in_port=f3,dl_vlan_pcp=7 actions=in_port",
    "priority=230,dl_type=0x0806 actions=drop",
    "priority=220,in_port=f4 actions=strip_vlan,strip_vlan,strip_vlan,normal",
    "priority=210,dl_vlan=10 actions=strip_vlan,flood,push_vlan:0x8100,output:f4",
    "priority=0 actions=normal",
]
PORTS = list(BR0) + list(BR1)
MACS = [b"\xff" * 6, bytes.fromhex("01005e000001"), bytes.fromhex("0180c2000000"),
        bytes.fromhex("0180c200000e"), bytes.fromhex("0180c2000010"), bytes.fromhex("333300000001"),
        bytes.fromhex("00000000000a"), bytes.fromhex("00000000000b"), bytes.fromhex("00000000000c"),
        bytes.fromhex("02000000000d"), b"\0" * 6]
TPIDS = [0x8100, 0x88a8, 0x9100, 0x8100, 0x88a8]
PAYLOAD = bytes((k * 7) & 0xff for k in range(2048))
TYPES = [0x0800, 0x0806, 0x86dd, 0x88b5, 0x8100, 0x88a8, 0x0000, 0x05dc, 0x0600, 0xffff]


def build():
    sw = Switch(n_buffers=256, clock=Clock())
    sw.add_br("br0", mac_table_size=4)
    for name, cfg in BR0.items():
        sw.add_port("br0", name, type="pg", **cfg)
    sw.fdb_add("br0", "a10", 10, "00:00:00:00:00:0a")          # a static entry
    sw.add_br("br1")
    for name, cfg in BR1.items():
        sw.add_port("br1", name, type="pg", **cfg)
    sw.del_flows("br1")
    for f in FLOWS:
        sw.add_flow("br1", f)
    return sw


def make_frame(r):
    """One frame: raw bytes, or from fields (MACs, 0-3 tags, EtherType, length, cut)."""
    kind = r.u8() % 4
    if kind == 0:
        return r.blob(r.pick((20, 64, 2048)))
    dst = r.pick(MACS) if r.u8() % 4 else r.bytes(6).ljust(6, b"\0")
    src = r.pick(MACS) if r.u8() % 4 else r.bytes(6).ljust(6, b"\0")
    head = dst + src
    for _ in range(r.u8() % 4 if kind == 3 else r.u8() % 2):
        tpid = r.pick(TPIDS) if r.u8() % 8 else r.u16()
        head += struct.pack("!HH", tpid, r.u16())
    head += struct.pack("!H", r.pick(TYPES) if r.u8() % 8 else r.u16())
    size = r.pick((0, 1, 3, 30, 46, 100, 1500, 2048 - len(head)))
    f = head + PAYLOAD[:max(0, size)]
    if r.chance(6):
        f = f[:r.int_in(0, len(f))]                          # cut anywhere: runts, half tags
    return f[:2048]


def parse(data):
    r = Reader(data)
    flags = r.u8()
    bursts = []
    for _ in range(1 + r.u8() % 4):
        port = r.pick(PORTS)
        frames = [make_frame(r) for _ in range(1 + r.u8() % 8)]
        bursts.append((port, frames))
    return flags, bursts


# ---------------------------------------------------------------- the model of br0's VLANs

def _mode(cfg):
    return cfg.get("vlan_mode") or ("access" if "tag" in cfg else "trunk")


def _trunks(cfg):
    t = cfg.get("trunks")
    return {int(x) for x in t.split(",")} if t else None


def carries(port, vlan):
    cfg = BR0[port]
    mode = _mode(cfg)
    if mode in ("access", "dot1q-tunnel"):
        return vlan == cfg["tag"]
    trunks = _trunks(cfg)
    ok = trunks is None or vlan in trunks
    if mode in ("native-tagged", "native-untagged") and cfg.get("tag"):
        ok = (ok or vlan == cfg["tag"]) and vlan != 0
    return ok


def classify(port, f):
    """The VLAN br0 puts a frame from `port` in, or None if the frame must be dropped."""
    if len(f) < 14:
        return None
    tpid = int.from_bytes(f[12:14], "big")
    if tpid in (0x8100, 0x88a8) and len(f) < 18:
        return None                                           # truncated tag
    if f[0] == 0x01 and f[1:5] == b"\x80\xc2\x00\x00" and f[5] & 0xf0 == 0:
        return None                                           # reserved destination
    cfg = BR0[port]
    mode = _mode(cfg)
    tagged = tpid in (0x8100, 0x88a8)
    vid = int.from_bytes(f[14:16], "big") & 0xfff if tagged else 0
    if mode == "dot1q-tunnel":
        return cfg["tag"]
    if mode == "access":
        return cfg["tag"] if vid == 0 else None
    vlan = vid if (mode == "trunk" or vid) else cfg["tag"]
    return vlan if carries(port, vlan) else None


def tags_on_egress(port, vlan):
    cfg = BR0[port]
    mode = _mode(cfg)
    if mode in ("trunk", "native-tagged"):
        return vlan != 0
    if mode == "native-untagged":
        return vlan not in (0, cfg["tag"])
    return False


def check_burst(port, frames, out):
    longest = max(len(f) for f in frames)
    in_br0 = port in BR0
    for oport, got in out.items():
        assert oport in (BR0 if in_br0 else BR1), f"frame from {port} left on {oport}, another bridge"
        if oport == port:
            assert port == "f3", f"a frame left on its ingress port {port}"
        for g in got:
            assert len(g) >= 14, f"{len(g)}-byte frame left on {oport}"
            assert len(g) <= longest + (4 if in_br0 else 8), f"frame grew to {len(g)} bytes on {oport}"
        if not in_br0:
            continue
        for g in got:
            ok = False
            for f in frames:
                v = classify(port, f)
                if v is None or not carries(oport, v):
                    continue
                if f[0] & 1 and BR0[port].get("options:split_group") and \
                        BR0[port].get("options:split_group") == BR0[oport].get("options:split_group"):
                    continue                                  # flooded into its own group
                if tags_on_egress(oport, v):
                    if int.from_bytes(g[12:14], "big") not in (0x8100, 0x88a8) or \
                            int.from_bytes(g[14:16], "big") & 0xfff != v:
                        continue
                ok = True
                break
            assert ok, f"frame {g[:18].hex()} left {oport} with no frame of VLAN it carries from {port}"


# ---------------------------------------------------------------- the harness

_twin = None
_obs = None


def _setup():
    global _twin, _obs
    if _twin is None:
        _twin = Twin(build)
        _obs = Observer(_twin.a.graph)


def one_input(data):
    _setup()
    flags, bursts = parse(data)

    def run(sw):
        g = sw.graph
        n_err = len(g.error_names)
        before = g.error_counts[:n_err].copy()
        results = []
        for br in sw.bridges:
            sw.fdb_flush(br)
        if flags & 0x0f == 2:
            sw.clock.t += 400.0                                # ages what the last input learned
            sw.tick()
        for port, frames in bursts:
            if flags & 0x0f == 1:
                sw.graph.trace_add(f"{port}-input", len(frames))
            inject(sw, port, frames)
            sw.graph.run_until_idle()
            out = egress(sw)
            check_burst(port, frames, out)
            results.append((port, out))
            if flags & 0x0f == 1:
                sw.graph.tracer.show()
                sw.graph.trace_clear()
        if flags & 0xf0 == 0x10:
            results.append(sw.fdb_rows("br0"))
            results.append(sw.bridges["br1"].flows.stats())
        g.pool.check_accounting(0)
        d = g.error_counts[:n_err] - before
        results.append({g.error_names[k][:2]: int(d[k]) for k in d.nonzero()[0]})
        return results

    _twin.run(run)
    _obs.features()


def seeds():
    from l2util import frame as l2frame
    out = []
    for port in PORTS:
        for tags in ((), ((0x8100, 10, 0),), ((0x8100, 20, 5),), ((0x88a8, 40, 0), (0x8100, 7, 0)),
                     ((0x8100, 0, 7),), ((0x8100, 5, 7),)):
            out.append(encode([(port, [bytes(l2frame(tags=tags))])]))
    return out


def encode(bursts, flags=0):
    """The input that injects these raw frames (what parse() reads back)."""
    data = bytes([flags, len(bursts) - 1])
    for port, frames in bursts:
        data += bytes([PORTS.index(port), len(frames) - 1])
        for f in frames:
            data += bytes([0, 2]) + struct.pack("!H", len(f)) + f
    return data


def TestOneInput(data):
    one_input(data)


if __name__ == "__main__":
    atheris_main(TestOneInput, seeds=seeds)
