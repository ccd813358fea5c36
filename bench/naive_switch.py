"""A straightforward pure-Python learning switch with OVS access/trunk VLAN semantics:
the baseline fastpath's L2 path is measured against. One function call per frame,
bytes slicing for parsing, a dict for the MAC table -- what one writes first."""


class NaiveSwitch:
    def __init__(self):
        self.ports = {}          # port -> (mode, tag)
        self.fdb = {}            # (vlan, mac) -> port

    def add_port(self, port, tag=None):
        self.ports[port] = ("access", tag) if tag is not None else ("trunk", None)

    def carries(self, port, vlan):
        mode, tag = self.ports[port]
        return vlan == tag if mode == "access" else True

    def forward(self, in_port, frame):
        """Returns [(out_port, frame)]."""
        if len(frame) < 14:
            return []
        mode, tag = self.ports[in_port]
        etype = int.from_bytes(frame[12:14], "big")
        if etype == 0x8100:
            vid = int.from_bytes(frame[14:16], "big") & 0xfff
            if mode == "access" and vid:
                return []
            vlan = tag if mode == "access" else vid
            frame = frame[:12] + frame[16:]
        else:
            vlan = tag if mode == "access" else 0
        dst, src = frame[0:6], frame[6:12]
        if not src[0] & 1:
            self.fdb[(vlan, src)] = in_port
        out = self.fdb.get((vlan, dst)) if not dst[0] & 1 else None
        targets = [out] if out is not None else [p for p in self.ports if p != in_port and self.carries(p, vlan)]
        result = []
        for p in targets:
            if p == in_port:
                continue
            pmode, _ = self.ports[p]
            if pmode == "trunk" and vlan:
                result.append((p, frame[:12] + (0x8100).to_bytes(2, "big") + vlan.to_bytes(2, "big") + frame[12:]))
            else:
                result.append((p, frame))
        return result
