"""Tracer: the path of selected frames through the graph, like VPP's `trace add` / `show trace`.

An input node with a trace budget stamps the first frames it receives with a record id
(pool.trace[b]); the dispatcher then asks each node that handles a stamped buffer to
describe it (Node.format_trace) and appends that line to the record.
"""
import time


def decode_ethernet(frame):
    """A one-line decode of an Ethernet frame (with up to two VLAN tags)."""
    if len(frame) < 14:
        return f"runt frame, {len(frame)} bytes"
    mac = lambda b: ":".join(f"{x:02x}" for x in b)
    out = [f"{mac(frame[6:12])} -> {mac(frame[0:6])}"]
    off = 12
    etype = int.from_bytes(frame[off:off + 2], "big")
    while etype in (0x8100, 0x88a8) and len(frame) >= off + 6:
        tci = int.from_bytes(frame[off + 2:off + 4], "big")
        out.append(f"{'802.1ad' if etype == 0x88a8 else '802.1q'} vlan {tci & 0xfff} pcp {tci >> 13}")
        off += 4
        etype = int.from_bytes(frame[off:off + 2], "big")
    out.append(f"type 0x{etype:04x} len {len(frame)}")
    return " ".join(out)


class Tracer:
    def __init__(self, limit=10000):
        self.records = {}
        self.active = False
        self.limit = limit
        self._next = 1

    def start(self, node_name, frame):
        if len(self.records) >= self.limit:
            return 0
        rid = self._next
        self._next += 1
        self.records[rid] = [(time.monotonic(), node_name, decode_ethernet(frame), True)]
        return rid

    def add(self, rid, node_name, text):
        rec = self.records.get(rid)
        if rec is None:
            return
        if rec[0][3] and rec[0][1] == node_name:
            # the input node's own line comes after its decode of the frame
            rec[0] = (rec[0][0], node_name, rec[0][2] + ("\n  " + text if text else ""), False)
            return
        rec.append((time.monotonic(), node_name, text, False))

    def clear(self):
        self.records.clear()
        self.active = False

    def show(self):
        out = []
        for rid, rec in self.records.items():
            out.append(f"Packet {rid}\n")
            for ts, node, text, _ in rec:
                out.append(f"{ts:014.6f}: {node}")
                if text:
                    out.extend("  " + line for line in text.split("\n"))
            out.append("")
        return "\n".join(out) if out else "No packets in trace buffer"

    def paths(self):
        """[[node, node, ...], ...] for each record: what tests check."""
        return [[node for _, node, _, _ in rec] for rec in self.records.values()]
