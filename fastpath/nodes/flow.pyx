"""flow-classify: a bridge's OpenFlow table, ovs-ofctl's vocabulary, run over vectors.

Each frame is matched, as it arrived, against the bridge's rules in priority order
(in_port, dl_src/dl_dst with masks, dl_type, dl_vlan, dl_vlan_pcp); the first match's
actions run in order: strip_vlan, push_vlan, mod_vlan_vid (pushes a tag when there is
none, as OVS does), mod_vlan_pcp, output:PORT, in_port, normal, flood/all, controller (a
copy, as it is at that point, is punted to packet-in for the OpenFlow agent), and an empty
list drops. Each output after the first takes a copy; the last takes the buffer itself.
output never applies the port's VLAN settings (only normal does), as in OVS.

next: interface-output (output, in_port, flood, all), vlan-input (normal), packet-in
(controller: tx_if carries max_len and aux the rule's index, for the agent's PACKET_IN).
errors: no_match (table miss), flow_drop (rule with no output), in_port_output (an
output to the input port, which OpenFlow skips), no_buffer (a copy the pool could not
give), no_headroom.
"""
import time
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from fastpath.graph.buffer cimport BufferPool
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport (rd16, wr16, has_tag, outer_tci, inner_type, mac_u64,
                                      vlan_push, vlan_pop, ETH_P_8021Q)
from fastpath.nodes.bridge cimport L2Node, L2Tables, MAX_MEMBERS
from fastpath import ofsyntax

cdef enum:
    OP_STRIP = 1
    OP_PUSH = 2
    OP_MOD_VID = 3
    OP_MOD_PCP = 4
    OP_OUTPUT = 5
    OP_IN_PORT = 6
    OP_NORMAL = 7
    OP_FLOOD = 8
    OP_CONTROLLER = 9

OPS = {"strip_vlan": OP_STRIP, "push_vlan": OP_PUSH, "mod_vlan_vid": OP_MOD_VID,
       "mod_vlan_pcp": OP_MOD_PCP, "output": OP_OUTPUT, "in_port": OP_IN_PORT,
       "normal": OP_NORMAL, "flood": OP_FLOOD, "all": OP_FLOOD, "controller": OP_CONTROLLER}
OUTPUT_OPS = (OP_OUTPUT, OP_IN_PORT, OP_NORMAL, OP_FLOOD, OP_CONTROLLER)

cdef enum:
    NEXT_OUTPUT = 1
    NEXT_NORMAL = 2
    NEXT_PUNT = 3

cdef enum:
    ERR_NO_MATCH = 0
    ERR_FLOW_DROP = 1
    ERR_IN_PORT_OUTPUT = 2
    ERR_NO_BUFFER = 3
    ERR_NO_HEADROOM = 4

DEFAULT_FLOW = "priority=0 actions=normal"

ctypedef struct flow_arrays_t:
    int n
    int32_t *in_port
    int32_t *dl_type
    int32_t *vlan
    int32_t *pcp
    uint64_t *src_val
    uint64_t *src_mask
    uint64_t *dst_val
    uint64_t *dst_mask
    uint32_t *act_start
    uint32_t *last_out
    uint8_t *op
    uint32_t *arg
    uint64_t *n_packets          # [worker * stride + rule]: a row per worker, no atomics
    uint64_t *n_bytes
    int stride
    int rows                     # workers the counters have rows for


class Flow:
    """One installed rule: the parsed rule, its compiled ports, and its counters."""
    def __init__(self, rule, in_port, out_ports):
        self.rule = rule
        self.idle_timeout = 0           # seconds, 0: never (OpenFlow FLOW_MOD; the agent ages)
        self.hard_timeout = 0
        self.flags = 0                  # OpenFlow OFPFF_* as the controller gave them
        self.last_hit = None            # (n_packets, time) when the agent last saw it change
        self.in_port = in_port          # sw_if_index or -1
        self.out_ports = out_ports      # sw_if_index per action (or 0)
        self.n_packets = 0
        self.n_bytes = 0
        self.created = time.monotonic()


cdef class FlowTable:
    """The rules of one bridge, compiled into flat arrays the classifier scans.

    `resolve_port(ref) -> sw_if_index` turns a port name or OpenFlow number into a port
    (ValueError when there is none). Each of `workers` dispatch threads counts hits in its
    own row of n_packets/n_bytes (VPP's per-thread counters); reads sum the rows.
    """
    cdef public list flows               # Flow, in match order
    cdef object _a
    cdef flow_arrays_t c
    cdef public object resolve_port
    cdef readonly int workers

    def __init__(self, resolve_port, int workers=1):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.resolve_port = resolve_port
        self.flows = []
        self.c.n = 0
        self.add(DEFAULT_FLOW)

    @property
    def is_default(self):
        return len(self.flows) == 1 and ofsyntax.format_flow(self.flows[0].rule) == \
            ofsyntax.format_flow(ofsyntax.parse_flow(DEFAULT_FLOW))

    def _compile_rule(self, rule):
        m = rule.match
        in_port = self.resolve_port(m.in_port) if m.in_port is not None else -1
        outs = [self.resolve_port(a.arg) if a.kind == "output" else 0 for a in rule.actions]
        return Flow(rule, in_port, outs)

    def add(self, text):
        """Add a rule (ovs-ofctl add-flow); replaces one with the same match and priority."""
        rule = ofsyntax.parse_flow(text)
        flow = self._compile_rule(rule)
        self._sync_counters()
        same = [f for f in self.flows
                if f.rule.priority == rule.priority and f.rule.match == rule.match]
        for f in same:
            self.flows.remove(f)
        self.flows.append(flow)
        # stable: equal priorities keep insertion order
        self.flows.sort(key=lambda f: -f.rule.priority)
        self._build()
        return flow

    def add_rule(self, rule):
        """Add a parsed FlowRule (the OpenFlow agent's FLOW_MOD add); replaces one with the
        same match and priority, as add() does, and returns the new Flow."""
        flow = self._compile_rule(rule)
        self.rewrite(lambda flows: [f for f in flows if not (
            f.rule.priority == rule.priority and f.rule.match == rule.match)] + [flow])
        return flow

    def rewrite(self, edit):
        """Replace the rules with edit(list of Flow) (counters brought up to date first);
        the result is put in priority order and compiled. For the agent's modify and delete."""
        self._sync_counters()
        flows = list(edit(list(self.flows)))
        flows.sort(key=lambda f: -f.rule.priority)
        self.flows = flows
        self._build()

    def compile(self, rule):
        """The Flow a rule would be, with its ports resolved (ValueError: no such port)."""
        return self._compile_rule(rule)

    def delete(self, text=None):
        """ovs-ofctl del-flows: all rules, or those whose match includes the given fields."""
        self._sync_counters()
        before = len(self.flows)
        if not text:
            self.flows = []
        else:
            match, prio = ofsyntax.parse_match(text)
            keep = []
            for f in self.flows:
                if prio is not None and f.rule.priority != prio:
                    keep.append(f)
                    continue
                if all(getattr(match, k) is None or getattr(f.rule.match, k) == getattr(match, k)
                       for k in ofsyntax._MATCH_FIELDS):
                    continue
                keep.append(f)
            self.flows = keep
        self._build()
        return before - len(self.flows)

    def reset(self):
        self.flows = []
        self.add(DEFAULT_FLOW)

    def port_removed(self, int sw_if_index):
        """Rules that name a removed port can no longer be compiled: drop them."""
        self._sync_counters()
        self.flows = [f for f in self.flows
                      if f.in_port != sw_if_index and sw_if_index not in f.out_ports]
        self._build()

    def _sync_counters(self):
        """Fold the workers' rows into the Flows (a racing increment shows next time)."""
        if self._a is None:
            return
        rows = (self.workers, self.c.stride)
        packets = self._a["n_packets"].reshape(rows).sum(axis=0)
        octets = self._a["n_bytes"].reshape(rows).sum(axis=0)
        for i, f in enumerate(self.flows[:self.c.n]):
            f.n_packets = int(packets[i])
            f.n_bytes = int(octets[i])

    def _build(self):
        n = len(self.flows)
        ops, args, starts, lasts = [], [], [], []
        for f in self.flows:
            starts.append(len(ops))
            last = -1
            for k, (a, port) in enumerate(zip(f.rule.actions, f.out_ports)):
                op = OPS[a.kind]
                ops.append(op)
                args.append(port if op == OP_OUTPUT else (0xffff if a.arg is None and op == OP_CONTROLLER
                                                          else (a.arg or 0)))
                if op in OUTPUT_OPS:
                    last = k
            lasts.append(last + 1)   # actions after the last output change nothing
        def arr(values, dt):
            return np.array(values if values else [0], dtype=dt)
        m = [f.rule.match for f in self.flows]
        a = {
            "in_port": arr([f.in_port for f in self.flows], np.int32),
            "dl_type": arr([-1 if x.dl_type is None else x.dl_type for x in m], np.int32),
            "vlan": arr([-1 if x.dl_vlan is None else x.dl_vlan for x in m], np.int32),
            "pcp": arr([-1 if x.dl_vlan_pcp is None else x.dl_vlan_pcp for x in m], np.int32),
            "src_val": arr([x.dl_src[0] if x.dl_src else 0 for x in m], np.uint64),
            "src_mask": arr([x.dl_src[1] if x.dl_src else 0 for x in m], np.uint64),
            "dst_val": arr([x.dl_dst[0] if x.dl_dst else 0 for x in m], np.uint64),
            "dst_mask": arr([x.dl_dst[1] if x.dl_dst else 0 for x in m], np.uint64),
            "act_start": arr(starts, np.uint32),
            "last_out": arr(lasts, np.uint32),
            "op": arr(ops, np.uint8), "arg": arr(args, np.uint32),
        }
        # the counters so far in worker 0's row, the other rows from zero
        stride = max(n, 1)
        for key, values in (("n_packets", [f.n_packets for f in self.flows]),
                            ("n_bytes", [f.n_bytes for f in self.flows])):
            a[key] = np.zeros(self.workers * stride, dtype=np.uint64)
            a[key][:n] = values
        # rebuilt under the workers' barrier: the classifier never sees a half-built table
        self._a = a
        cdef flow_arrays_t c
        c.n = n
        c.in_port = <int32_t *> <size_t> a["in_port"].ctypes.data
        c.dl_type = <int32_t *> <size_t> a["dl_type"].ctypes.data
        c.vlan = <int32_t *> <size_t> a["vlan"].ctypes.data
        c.pcp = <int32_t *> <size_t> a["pcp"].ctypes.data
        c.src_val = <uint64_t *> <size_t> a["src_val"].ctypes.data
        c.src_mask = <uint64_t *> <size_t> a["src_mask"].ctypes.data
        c.dst_val = <uint64_t *> <size_t> a["dst_val"].ctypes.data
        c.dst_mask = <uint64_t *> <size_t> a["dst_mask"].ctypes.data
        c.act_start = <uint32_t *> <size_t> a["act_start"].ctypes.data
        c.last_out = <uint32_t *> <size_t> a["last_out"].ctypes.data
        c.op = <uint8_t *> <size_t> a["op"].ctypes.data
        c.arg = <uint32_t *> <size_t> a["arg"].ctypes.data
        c.n_packets = <uint64_t *> <size_t> a["n_packets"].ctypes.data
        c.n_bytes = <uint64_t *> <size_t> a["n_bytes"].ctypes.data
        c.stride = stride
        c.rows = self.workers
        self.c = c

    def dump(self):
        """ovs-ofctl dump-flows lines."""
        self._sync_counters()
        now = time.monotonic()
        return [ofsyntax.format_flow(f.rule, f.n_packets, f.n_bytes, now - f.created)
                for f in self.flows]

    def stats(self):
        self._sync_counters()
        return [(ofsyntax.format_flow(f.rule), f.n_packets, f.n_bytes) for f in self.flows]


cdef int flow_lookup(flow_arrays_t *t, BufferPool pool, uint32_t b) noexcept nogil:
    """Index of the first rule matching buffer b, or -1."""
    cdef uint8_t *p = pool.frame(b)
    cdef uint64_t dst = mac_u64(p), src = mac_u64(p + 6)
    cdef bint tagged = has_tag(pool, b)
    cdef int32_t vid = (outer_tci(pool, b) & 0xfff) if tagged else 0xffff
    cdef int32_t pcp = (outer_tci(pool, b) >> 13) if tagged else 0
    cdef int32_t etype = inner_type(pool, b)
    cdef int32_t port = pool.rx_if[b]
    cdef int r
    for r in range(t.n):
        if t.in_port[r] >= 0 and t.in_port[r] != port:
            continue
        if (dst & t.dst_mask[r]) != t.dst_val[r] or (src & t.src_mask[r]) != t.src_val[r]:
            continue
        if t.dl_type[r] >= 0 and t.dl_type[r] != etype:
            continue
        if t.vlan[r] >= 0 and t.vlan[r] != vid:
            continue
        if t.pcp[r] >= 0 and (not tagged or t.pcp[r] != pcp):
            continue
        return r
    return -1


cdef class FlowClassify(L2Node):
    node_name = "flow-classify"
    cdef public int worker               # which row of the flow counters this copy counts in
    next_nodes = ("interface-output", "vlan-input", "packet-in")
    errors = (("no_match", "no flow matched (table miss)"),
              ("flow_drop", "dropped by a flow"),
              ("in_port_output", "output to the input port skipped"),
              ("no_buffer", "flow output copy lost: buffer pool empty"),
              ("no_headroom", "no headroom to push a tag"))

    cdef inline bint send(self, uint32_t b, uint16_t tx, uint16_t nxt, bint last) noexcept nogil:
        """The frame as it is now goes to tx via nxt: the buffer itself when last, else a copy."""
        cdef int c
        if last:
            self.pool.tx_if[b] = tx
            self.pool.next[b] = nxt
            return True
        c = self.pool.clone(b)
        if c < 0:
            self.count_error(ERR_NO_BUFFER)
            return False
        self.pool.tx_if[c] = tx
        self.pool.next[c] = nxt
        self.emit(c)
        return False

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, r, k, j, last_member, row
        cdef uint32_t b, a, end
        cdef uint16_t rx, m, nm, tci
        cdef uint8_t o
        cdef bint sent, is_last
        cdef void *ft
        cdef flow_arrays_t *t
        cdef uint16_t *members
        for i in range(n):
            b = bufs[i]
            ft = self.tables.flows[self.pool.bd[b]]
            r = flow_lookup(&(<FlowTable> ft).c, self.pool, b) if ft != NULL else -1
            if r < 0:
                self.pool.error[b] = self.err_base + ERR_NO_MATCH
                self.pool.next[b] = ARC_DROP
                continue
            t = &(<FlowTable> ft).c
            row = self.worker if 0 <= self.worker < t.rows else 0     # (a table built for fewer)
            t.n_packets[row * t.stride + r] += 1
            t.n_bytes[row * t.stride + r] += self.pool.length[b]
            rx = self.pool.rx_if[b]
            sent = False
            a = t.act_start[r]
            end = a + t.last_out[r]
            self.pool.error[b] = self.err_base + ERR_FLOW_DROP
            while a < end:
                o = t.op[a]
                is_last = a == end - 1
                if o == OP_STRIP:
                    vlan_pop(self.pool, b)
                elif o == OP_PUSH:
                    if vlan_push(self.pool, b, t.arg[a], outer_tci(self.pool, b) if has_tag(self.pool, b) else 0) < 0:
                        self.pool.error[b] = self.err_base + ERR_NO_HEADROOM
                        break
                elif o == OP_MOD_VID or o == OP_MOD_PCP:
                    if not has_tag(self.pool, b) and vlan_push(self.pool, b, ETH_P_8021Q, 0) < 0:
                        self.pool.error[b] = self.err_base + ERR_NO_HEADROOM
                        break
                    tci = outer_tci(self.pool, b)
                    if o == OP_MOD_VID:
                        tci = (tci & 0xf000) | (t.arg[a] & 0xfff)
                    else:
                        tci = (tci & 0x1fff) | ((t.arg[a] & 7) << 13)
                    wr16(self.pool.frame(b) + 14, tci)
                elif o == OP_OUTPUT:
                    if t.arg[a] == rx:
                        self.pool.error[b] = self.err_base + ERR_IN_PORT_OUTPUT
                    else:
                        sent = self.send(b, t.arg[a], NEXT_OUTPUT, is_last) or sent
                elif o == OP_IN_PORT:
                    sent = self.send(b, rx, NEXT_OUTPUT, is_last) or sent
                elif o == OP_NORMAL:
                    sent = self.send(b, 0, NEXT_NORMAL, is_last) or sent
                elif o == OP_CONTROLLER:
                    # packet-in reads max_len from tx_if and the rule from aux (of the copy)
                    self.pool.aux[b] = r
                    sent = self.send(b, <uint16_t> t.arg[a], NEXT_PUNT, is_last) or sent
                elif o == OP_FLOOD:
                    members = self.tables.members + <uint32_t> self.pool.bd[b] * MAX_MEMBERS
                    nm = self.tables.n_members[self.pool.bd[b]]
                    last_member = -1
                    for k in range(nm):
                        if members[k] != rx:
                            last_member = k
                    for k in range(nm):
                        if members[k] != rx:
                            sent = self.send(b, members[k], NEXT_OUTPUT,
                                             is_last and k == last_member) or sent
                a += 1
            if not sent:
                self.pool.next[b] = ARC_DROP
        return 0

    def format_trace(self, uint32_t b):
        nxt = self.pool.next[b]
        if nxt == NEXT_OUTPUT:
            return f"output to port {self.pool.tx_if[b]}"
        if nxt == NEXT_NORMAL:
            return "NORMAL"
        if nxt == NEXT_PUNT:
            return "CONTROLLER"
        return "dropped"
