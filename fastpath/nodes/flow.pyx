# cython: boundscheck=False, wraparound=False, cdivision=True
"""flow-classify: a bridge's OpenFlow pipeline (N_TABLES tables), run over vectors.

Each frame starts in table 0 with metadata 0 and an empty action set. A table is a
Classifier (tuple space search, classifier.pxd) over the frame's flow key: in_port,
eth_src/dst, eth_type, the outer VLAN (OpenFlow's vlan_vid with OFPVID_PRESENT, vlan_pcp),
metadata, ip_proto (ARP: the opcode), IPv4 source/destination (ARP: spa/tpa), IPv6
source/destination, TCP/UDP ports (ICMP: type/code). The best rule's instructions run in
OpenFlow's order: apply-actions (at once), clear-actions, write-actions (into the action
set), write-metadata, goto-table. Without goto the action set runs, in the spec's order
(pop, push, dec_ttl, set_field, output). A table miss drops (OpenFlow 1.3: a controller
that wants misses installs a priority-0 rule). A frame changed by apply-actions is
re-parsed before the next table looks at it.

Actions: pop/push VLAN, set_field eth_src/eth_dst/vlan_vid/vlan_pcp (mod_vlan_*: pushes a
tag when there is none, as OVS does), ipv4_src/dst and tcp/udp ports (the IPv4 and L4
checksums updated incrementally), dec_nw_ttl (IPv4, IPv6; at 1 the frame is dropped),
output:PORT, IN_PORT, NORMAL, FLOOD/ALL, CONTROLLER (a copy, as it is at that point, is
punted to packet-in). An output takes a copy only when something follows it, so a frame
with one output is never copied. output never applies the port's VLAN settings (only
NORMAL does), as in OVS.

next: interface-output (output, in_port, flood, all), vlan-input (normal), packet-in
(controller: tx_if carries max_len and aux the rule's id, for the agent's PACKET_IN).
errors: no_match (table miss), flow_drop (rule with no output), in_port_output (an
output to the input port, which OpenFlow skips), no_buffer (a copy the pool could not
give), no_headroom, ttl_expired.
"""
import itertools
import time
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset, memcpy
from fastpath.graph.buffer cimport BufferPool, OL_CSUM_PARTIAL
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport (rd16, wr16, is_vlan_tpid, mac_u64, vlan_push, vlan_pop,
                                      ETH_P_8021Q, ETH_P_IP, ETH_P_ARP)
from fastpath.nodes.ip4 cimport rd32, wr32, rd64
from fastpath.nodes.bridge cimport L2Node, L2Tables, MAX_MEMBERS
from fastpath.nodes.classifier cimport Classifier, KEY_WORDS
from fastpath import ofsyntax

cdef enum:
    N_TABLES = 16
    ETH_P_IPV6 = 0x86dd
    VID_PRESENT = 0x1000

# ops: actions, then the instructions that frame them
cdef enum:
    A_POP_VLAN = 1
    A_PUSH_VLAN = 2
    A_SET_VID = 3
    A_SET_PCP = 4
    A_SET_ETH_SRC = 5
    A_SET_ETH_DST = 6
    A_SET_IP4_SRC = 7
    A_SET_IP4_DST = 8
    A_SET_TP_SRC = 9
    A_SET_TP_DST = 10
    A_DEC_TTL = 11
    A_OUTPUT = 12
    A_IN_PORT = 13
    A_NORMAL = 14
    A_FLOOD = 15
    A_CONTROLLER = 16
    I_CLEAR = 20
    I_WRITE = 21          # the next `arg` ops go into the action set
    I_METADATA = 22
    I_GOTO = 23

# the action set: one slot per kind, executed in slot order (OpenFlow 1.3 5.10)
cdef enum:
    S_POP = 0
    S_PUSH = 1
    S_DEC_TTL = 2
    S_ETH_SRC = 3
    S_ETH_DST = 4
    S_VID = 5
    S_PCP = 6
    S_IP4_SRC = 7
    S_IP4_DST = 8
    S_TP_SRC = 9
    S_TP_DST = 10
    S_OUTPUT = 11
    N_SLOTS = 12

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
    ERR_TTL_EXPIRED = 5

ctypedef struct op_t:
    uint16_t kind
    uint16_t slot          # its action-set slot
    uint32_t arg           # port, TPID, VID, PCP, max_len, table, count
    uint64_t value         # MAC, address, port, metadata
    uint64_t mask          # write_metadata's mask

ctypedef struct rule_t:
    op_t *ops
    int32_t n_ops

ctypedef struct pipeline_t:              # what the packet loop reads of a FlowTable
    void *cls[N_TABLES]                  # borrowed Classifiers
    rule_t *rules                        # by rule id
    int32_t cap                          # rule ids, and the stride of the counter rows
    uint64_t *packets                    # [row * cap + rule]
    uint64_t *octets
    uint64_t *table_counts               # [(row * N_TABLES + table) * 2 + {0 lookups, 1 matched}]
    int workers

_ACTION_OPS = {"strip_vlan": (A_POP_VLAN, S_POP), "push_vlan": (A_PUSH_VLAN, S_PUSH),
               "mod_vlan_vid": (A_SET_VID, S_VID), "mod_vlan_pcp": (A_SET_PCP, S_PCP),
               "mod_dl_src": (A_SET_ETH_SRC, S_ETH_SRC), "mod_dl_dst": (A_SET_ETH_DST, S_ETH_DST),
               "mod_nw_src": (A_SET_IP4_SRC, S_IP4_SRC), "mod_nw_dst": (A_SET_IP4_DST, S_IP4_DST),
               "mod_tp_src": (A_SET_TP_SRC, S_TP_SRC), "mod_tp_dst": (A_SET_TP_DST, S_TP_DST),
               "dec_ttl": (A_DEC_TTL, S_DEC_TTL), "output": (A_OUTPUT, S_OUTPUT),
               "in_port": (A_IN_PORT, S_OUTPUT), "normal": (A_NORMAL, S_OUTPUT),
               "flood": (A_FLOOD, S_OUTPUT), "all": (A_FLOOD, S_OUTPUT),
               "controller": (A_CONTROLLER, S_OUTPUT)}

DEFAULT_FLOW = "priority=0 actions=normal"
MAC_ALL = (1 << 48) - 1


# ---------------------------------------------------------------- the flow key

cdef inline int l3_offset(const uint8_t *p, uint32_t n, uint16_t *etype) noexcept nogil:
    """Offset of the L3 header after up to two VLAN tags; its EtherType in etype."""
    cdef int off = 12, tags = 0
    cdef uint16_t t = rd16(p + 12)
    while is_vlan_tpid(t) and tags < 2 and <uint32_t> off + 6 <= n:
        off += 4
        tags += 1
        t = rd16(p + off)
    etype[0] = t
    return off + 2


cdef void flow_key(BufferPool pool, uint32_t b, uint64_t metadata, uint64_t *key) noexcept nogil:
    """The frame's key words (classifier.pxd KEY_WORDS), as it is now."""
    cdef uint8_t *p = pool.frame(b)
    cdef uint32_t n = pool.length[b]
    cdef uint16_t etype, tci = 0
    cdef int l3 = l3_offset(p, n, &etype), hl
    cdef uint8_t proto = 0
    cdef const uint8_t *ip = p + l3
    cdef int avail = <int> n - l3
    memset(key, 0, KEY_WORDS * sizeof(uint64_t))
    if n >= 18 and is_vlan_tpid(rd16(p + 12)):
        tci = (rd16(p + 14) & ~VID_PRESENT) | VID_PRESENT   # the DEI bit's place: "tagged"
    key[0] = (<uint64_t> pool.rx_if[b] << 32) | (<uint64_t> etype << 16) | tci
    key[1] = mac_u64(p) << 16
    key[2] = mac_u64(p + 6) << 16
    key[3] = metadata
    if etype == ETH_P_IP and avail >= 20:
        hl = (ip[0] & 15) * 4
        proto = ip[9]
        key[4] = (<uint64_t> rd32(ip + 12) << 32) | rd32(ip + 16)
        # ports only in a first fragment (offset 0) that holds them
        if (rd16(ip + 6) & 0x1fff) == 0 and avail >= hl + 4:
            if proto == 6 or proto == 17:
                key[5] = (<uint64_t> rd16(ip + hl) << 48) | (<uint64_t> rd16(ip + hl + 2) << 32)
            elif proto == 1:
                key[5] = (<uint64_t> ip[hl] << 48) | (<uint64_t> ip[hl + 1] << 32)
    elif etype == ETH_P_IPV6 and avail >= 40:
        proto = ip[6]
        key[6] = rd64(ip + 8)
        key[7] = rd64(ip + 16)
        key[8] = rd64(ip + 24)
        key[9] = rd64(ip + 32)
        if (proto == 6 or proto == 17) and avail >= 44:
            key[5] = (<uint64_t> rd16(ip + 40) << 48) | (<uint64_t> rd16(ip + 42) << 32)
        elif proto == 58 and avail >= 42:
            key[5] = (<uint64_t> ip[40] << 48) | (<uint64_t> ip[41] << 32)
    elif etype == ETH_P_ARP and avail >= 28:
        proto = rd16(ip + 6) & 0xff          # arp_op, where OVS keeps it (nw_proto)
        key[4] = (<uint64_t> rd32(ip + 14) << 32) | rd32(ip + 24)
    key[1] |= <uint64_t> proto << 8


def match_words(m, int in_port):
    """An ofsyntax.Match -> (value, mask), KEY_WORDS ints each, as flow_key lays them out.
    in_port: the sw_if_index the rule's in_port names, or -1."""
    v = [0] * KEY_WORDS
    k = [0] * KEY_WORDS
    def put(word, shift, width, value, mask=None):
        full = (1 << width) - 1
        mask = full if mask is None else mask & full
        v[word] |= (value & mask) << shift
        k[word] |= mask << shift
    if in_port >= 0:
        put(0, 32, 32, in_port)
    if m.dl_type is not None:
        put(0, 16, 16, m.dl_type)
    if m.dl_vlan is not None:
        put(0, 0, 13, 0 if m.dl_vlan == ofsyntax.VLAN_NONE else m.dl_vlan | VID_PRESENT)
    if m.dl_vlan_pcp is not None:
        put(0, 0, 16, m.dl_vlan_pcp << 13 | VID_PRESENT, 0xe000 | VID_PRESENT)
    if m.vlan_tci is not None:
        put(0, 0, 16, m.vlan_tci[0], m.vlan_tci[1])
    if m.dl_dst is not None:
        put(1, 16, 48, m.dl_dst[0], m.dl_dst[1])
    if m.dl_src is not None:
        put(2, 16, 48, m.dl_src[0], m.dl_src[1])
    if m.nw_proto is not None:
        put(1, 8, 8, m.nw_proto)
    if m.metadata is not None:
        put(3, 0, 64, m.metadata[0], m.metadata[1])
    if m.nw_src is not None:
        put(4, 32, 32, m.nw_src[0], m.nw_src[1])
    if m.nw_dst is not None:
        put(4, 0, 32, m.nw_dst[0], m.nw_dst[1])
    if m.tp_src is not None:
        put(5, 48, 16, m.tp_src)
    if m.tp_dst is not None:
        put(5, 32, 16, m.tp_dst)
    for word, value in ((6, m.ipv6_src), (8, m.ipv6_dst)):
        if value is not None:
            put(word, 0, 64, value[0] >> 64, value[1] >> 64)
            put(word + 1, 0, 64, value[0], value[1])
    return tuple(v), tuple(k)


# ---------------------------------------------------------------- the rules

class Flow:
    """One installed rule: the parsed rule, its compiled form, and its counters."""
    def __init__(self, rule, in_port, out_ports):
        self.rule = rule
        self.idle_timeout = 0           # seconds, 0: never (OpenFlow FLOW_MOD; the agent ages)
        self.hard_timeout = 0
        self.flags = 0                  # OpenFlow OFPFF_* as the controller gave them
        self.last_hit = None            # (n_packets, time) when the agent last saw it change
        self.in_port = in_port          # sw_if_index or -1
        self.out_ports = out_ports      # {ofsyntax port ref: sw_if_index} its outputs name
        self.n_packets = 0
        self.n_bytes = 0
        self.created = time.monotonic()
        self.id = -1                    # its rule id while installed
        self.seq = 0                    # insertion order, for dumps
        self.value = self.mask = None   # match_words()

    @property
    def table(self):
        return self.rule.table

    @property
    def is_table_miss(self):
        return self.rule.priority == 0 and not any(self.mask)


def _uses_port(flow, int sw_if_index):
    return flow.in_port == sw_if_index or sw_if_index in flow.out_ports.values()


cdef class FlowTable:
    """The rules of one bridge, in N_TABLES classifiers, with their compiled instructions.

    `resolve_port(ref) -> sw_if_index` turns a port name or OpenFlow number into a port
    (ValueError when there is none). Each of `workers` dispatch threads counts hits in its
    own row of the counters (VPP's per-thread counters); reads sum the rows. Every change
    is made under the workers' barrier (fastpath.switch), so no lookup sees half of it.
    """
    cdef pipeline_t c
    cdef object _classifiers
    cdef object _by_id                    # rule id -> Flow
    cdef object _free_ids
    cdef object _identical                # (table, priority, value, mask) -> Flow
    cdef object _seq
    cdef public object resolve_port
    cdef readonly int workers

    def __cinit__(self, resolve_port, int workers=1):
        self.c.rules = NULL
        self.c.packets = self.c.octets = self.c.table_counts = NULL
        self.c.cap = 0

    def __init__(self, resolve_port, int workers=1):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.c.workers = workers
        self.resolve_port = resolve_port
        self._classifiers = [Classifier() for _ in range(N_TABLES)]
        cdef int t
        for t in range(N_TABLES):
            self.c.cls[t] = <void *> self._classifiers[t]
        self._by_id = {}
        self._free_ids = []
        self._identical = {}
        self._seq = itertools.count()
        self.c.table_counts = <uint64_t *> malloc(workers * N_TABLES * 2 * sizeof(uint64_t))
        memset(self.c.table_counts, 0, workers * N_TABLES * 2 * sizeof(uint64_t))
        self._grow(64)
        self.add(DEFAULT_FLOW)

    def __dealloc__(self):
        cdef int32_t i
        if self.c.rules != NULL:
            for i in range(self.c.cap):
                free(self.c.rules[i].ops)
        free(self.c.rules)
        free(self.c.packets)
        free(self.c.octets)
        free(self.c.table_counts)

    n_tables = N_TABLES

    cdef _grow(self, int32_t cap):
        """Room for cap rules: the counter rows are re-laid at the new stride."""
        cdef rule_t *r = <rule_t *> realloc(self.c.rules, cap * sizeof(rule_t))
        cdef uint64_t *pk = <uint64_t *> malloc(self.workers * cap * sizeof(uint64_t))
        cdef uint64_t *oc = <uint64_t *> malloc(self.workers * cap * sizeof(uint64_t))
        cdef int w
        if r == NULL or pk == NULL or oc == NULL:
            raise MemoryError()
        memset(r + self.c.cap, 0, (cap - self.c.cap) * sizeof(rule_t))
        memset(pk, 0, self.workers * cap * sizeof(uint64_t))
        memset(oc, 0, self.workers * cap * sizeof(uint64_t))
        for w in range(self.workers):
            if self.c.cap:
                memcpy(pk + w * cap, self.c.packets + w * self.c.cap, self.c.cap * sizeof(uint64_t))
                memcpy(oc + w * cap, self.c.octets + w * self.c.cap, self.c.cap * sizeof(uint64_t))
        free(self.c.packets)
        free(self.c.octets)
        self.c.rules, self.c.packets, self.c.octets = r, pk, oc
        self._free_ids.extend(range(cap - 1, self.c.cap - 1, -1))
        self.c.cap = cap

    # ---- compiling ----

    def compile(self, rule):
        """The Flow a rule would be, with its ports resolved (ValueError: no such port)."""
        if not 0 <= rule.table < N_TABLES:
            raise ValueError(f"table {rule.table}: tables are 0..{N_TABLES - 1}")
        if rule.goto is not None and not rule.table < rule.goto < N_TABLES:
            raise ValueError(f"goto_table:{rule.goto} from table {rule.table}: "
                             f"only a later table, up to {N_TABLES - 1}")
        m = rule.match
        in_port = self.resolve_port(m.in_port) if m.in_port is not None else -1
        outs = {}
        for a in list(rule.actions) + list(rule.write_actions or ()):
            if a.kind == "output":
                outs[a.arg] = self.resolve_port(a.arg)
        flow = Flow(rule, in_port, outs)
        flow.value, flow.mask = match_words(m, in_port)
        return flow

    def _ops(self, flow):
        """The rule's instructions as (kind, slot, arg, value, mask) tuples, in spec order."""
        out = []
        def action(a):
            kind, slot = _ACTION_OPS[a.kind]
            arg, value = 0, 0
            if kind == A_OUTPUT:
                arg = flow.out_ports[a.arg]
            elif kind == A_CONTROLLER:
                arg = ofsyntax.CONTROLLER_MAX_LEN if a.arg is None else a.arg
            elif kind in (A_PUSH_VLAN, A_SET_VID, A_SET_PCP):
                arg = a.arg
            elif kind in (A_SET_ETH_SRC, A_SET_ETH_DST, A_SET_IP4_SRC, A_SET_IP4_DST,
                          A_SET_TP_SRC, A_SET_TP_DST):
                value = a.arg
            return (kind, slot, arg, value, 0)
        r = flow.rule
        out.extend(action(a) for a in r.actions)
        if r.clear_actions:
            out.append((I_CLEAR, 0, 0, 0, 0))
        if r.write_actions:
            out.append((I_WRITE, 0, len(r.write_actions), 0, 0))
            out.extend(action(a) for a in r.write_actions)
        if r.write_metadata is not None:
            out.append((I_METADATA, 0, 0, r.write_metadata[0], r.write_metadata[1]))
        if r.goto is not None:
            out.append((I_GOTO, 0, r.goto, 0, 0))
        return out

    cdef _set_ops(self, int32_t rid, list ops):
        cdef op_t *o = <op_t *> malloc((len(ops) or 1) * sizeof(op_t))
        cdef int i
        if o == NULL:
            raise MemoryError()
        for i, (kind, slot, arg, value, mask) in enumerate(ops):
            o[i].kind, o[i].slot, o[i].arg, o[i].value, o[i].mask = kind, slot, arg, value, mask
        free(self.c.rules[rid].ops)
        self.c.rules[rid].ops = o
        self.c.rules[rid].n_ops = len(ops)

    # ---- installing ----

    def _key(self, flow):
        return (flow.rule.table, flow.rule.priority, flow.value, flow.mask)

    def identical_to(self, int table, int priority, value, mask):
        """The installed Flow with this table, priority and match words, or None."""
        return self._identical.get((table, priority, tuple(value), tuple(mask)))

    def install(self, flow):
        """Put a compiled Flow in its table, replacing an identical one (returned)."""
        old = self._identical.get(self._key(flow))
        if old is not None:
            self.uninstall(old)
        if not self._free_ids:
            self._grow(self.c.cap * 2)
        cdef int32_t rid = self._free_ids.pop()
        cdef int w
        self._set_ops(rid, self._ops(flow))
        for w in range(self.workers):
            self.c.packets[w * self.c.cap + rid] = 0
            self.c.octets[w * self.c.cap + rid] = 0
        self.c.packets[rid] = flow.n_packets       # worker 0's row carries what it had
        self.c.octets[rid] = flow.n_bytes
        (<Classifier> self.c.cls[flow.rule.table]).insert(rid, flow.rule.priority, flow.value, flow.mask)
        flow.id = rid
        flow.seq = next(self._seq)
        self._by_id[rid] = flow
        self._identical[self._key(flow)] = flow
        return old

    def uninstall(self, flow):
        """Take an installed Flow out (its counters brought up to date first)."""
        cdef int32_t rid = flow.id
        self._sync(flow)
        (<Classifier> self.c.cls[flow.rule.table]).remove(rid)
        free(self.c.rules[rid].ops)
        self.c.rules[rid].ops = NULL
        self.c.rules[rid].n_ops = 0
        del self._by_id[rid]
        if self._identical.get(self._key(flow)) is flow:
            del self._identical[self._key(flow)]
        self._free_ids.append(rid)
        flow.id = -1

    def set_actions(self, flow, rule):
        """Give an installed Flow another rule's instructions (FLOW_MOD modify); counters kept.
        ValueError when a port does not resolve."""
        new = self.compile(rule)
        self._set_ops(flow.id, self._ops(new))
        flow.rule = rule
        flow.out_ports = new.out_ports

    def by_id(self, int rid):
        return self._by_id.get(rid)

    # ---- ovs-ofctl's verbs ----

    @property
    def flows(self):
        """Every Flow, by table, then as lookups prefer them (priority, then age)."""
        return sorted(self._by_id.values(), key=lambda f: (f.rule.table, -f.rule.priority, f.seq))

    def __len__(self):
        return len(self._by_id)

    @property
    def is_default(self):
        flows = list(self._by_id.values())
        return len(flows) == 1 and ofsyntax.format_flow(flows[0].rule) == \
            ofsyntax.format_flow(ofsyntax.parse_flow(DEFAULT_FLOW))

    def add(self, text):
        """Add a rule (ovs-ofctl add-flow); replaces one with the same match and priority."""
        return self.add_rule(ofsyntax.parse_flow(text))

    def add_rule(self, rule):
        """Add a parsed FlowRule; replaces one with the same table, match and priority."""
        flow = self.compile(rule)
        self.install(flow)
        return flow

    def remove(self, flows):
        for f in list(flows):
            if f.id >= 0:
                self.uninstall(f)

    def delete(self, text=None):
        """ovs-ofctl del-flows: all rules, or those whose match includes the given fields
        (in one table with table=N)."""
        before = len(self._by_id)
        if not text:
            self.remove(self.flows)
            return before
        match, prio, table = ofsyntax.parse_match(text, with_table=True)
        in_port = self.resolve_port(match.in_port) if match.in_port is not None else -1
        value, mask = match_words(match, in_port)
        self.remove([f for f in self.flows
                     if (table is None or f.rule.table == table)
                     and (prio is None or f.rule.priority == prio)
                     and covers(value, mask, f.value, f.mask)])
        return before - len(self._by_id)

    def reset(self):
        self.remove(self.flows)
        self.add(DEFAULT_FLOW)

    def port_removed(self, int sw_if_index):
        """Rules that name a removed port can no longer be compiled: drop them."""
        self.remove([f for f in self._by_id.values() if _uses_port(f, sw_if_index)])

    # ---- counters ----

    cdef _sync(self, flow):
        cdef int32_t rid = flow.id
        cdef uint64_t p = 0, o = 0
        cdef int w
        for w in range(self.workers):
            p += self.c.packets[w * self.c.cap + rid]
            o += self.c.octets[w * self.c.cap + rid]
        flow.n_packets, flow.n_bytes = p, o

    def counters(self, flow):
        """An installed Flow's n_packets and n_bytes, brought up to date."""
        if flow.id >= 0:
            self._sync(flow)
        return flow.n_packets, flow.n_bytes

    def sync_counters(self):
        """Fold the workers' rows into the Flows (a racing increment shows next time)."""
        for f in self._by_id.values():
            self._sync(f)

    def table_stats(self):
        """[(table, active rules, lookups, matched)] for every table."""
        cdef int w, t
        out = []
        active = [0] * N_TABLES
        for f in self._by_id.values():
            active[f.rule.table] += 1
        for t in range(N_TABLES):
            lookups = matched = 0
            for w in range(self.workers):
                lookups += self.c.table_counts[(w * N_TABLES + t) * 2]
                matched += self.c.table_counts[(w * N_TABLES + t) * 2 + 1]
            out.append((t, active[t], lookups, matched))
        return out

    def dump(self):
        """ovs-ofctl dump-flows lines."""
        self.sync_counters()
        now = time.monotonic()
        return [ofsyntax.format_flow(f.rule, f.n_packets, f.n_bytes, now - f.created)
                for f in self.flows]

    def stats(self):
        self.sync_counters()
        return [(ofsyntax.format_flow(f.rule), f.n_packets, f.n_bytes) for f in self.flows]

    def lookup_words(self, int table, key):
        """The Flow a key (KEY_WORDS ints) hits in a table, or None: for tests."""
        return self._by_id.get((<Classifier> self.c.cls[table]).lookup_words(key))


def covers(value, mask, have_value, have_mask):
    """The non-strict test of OpenFlow modify/delete and flow stats: a rule (have_*) is
    selected when it matches every field the request names at least as specifically."""
    for v, m, hv, hm in zip(value, mask, have_value, have_mask):
        if hm & m != m or hv & m != v:
            return False
    return True


# ---------------------------------------------------------------- checksums

cdef inline void csum_replace(uint8_t *field, uint32_t old, uint32_t new, bint partial) noexcept nogil:
    """RFC 1624 incremental update for a 16- or 32-bit change. partial: the field holds a
    pseudo-header sum not yet complemented (CHECKSUM_PARTIAL), so it moves the other way."""
    cdef uint32_t s = rd16(field)
    if not partial:
        s = ~s & 0xffff
    s += (~old >> 16 & 0xffff) + (~old & 0xffff) + (new >> 16) + (new & 0xffff)
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    wr16(field, s if partial else ~s & 0xffff)


cdef inline uint8_t *l4_csum(uint8_t *ip, int avail, int hl) noexcept nogil:
    """The TCP/UDP checksum field of an unfragmented IPv4 packet of avail bytes, or NULL
    (none there, or UDP's 0: no checksum)."""
    if (rd16(ip + 6) & 0x3fff) != 0:
        return NULL
    if ip[9] == 6 and avail >= hl + 18:
        return ip + hl + 16
    if ip[9] == 17 and avail >= hl + 8 and rd16(ip + hl + 6) != 0:
        return ip + hl + 6
    return NULL


# ---------------------------------------------------------------- the node

cdef class FlowClassify(L2Node):
    node_name = "flow-classify"
    cdef public int worker               # which row of the flow counters this copy counts in
    # the frame's pending output (see send/flush): taken by the buffer itself at the end
    cdef bint has_pending
    cdef uint16_t pend_tx, pend_next
    cdef uint32_t pend_aux
    next_nodes = ("interface-output", "vlan-input", "packet-in")
    errors = (("no_match", "no flow matched (table miss)"),
              ("flow_drop", "dropped by a flow"),
              ("in_port_output", "output to the input port skipped"),
              ("no_buffer", "flow output copy lost: buffer pool empty"),
              ("no_headroom", "no headroom to push a tag"),
              ("ttl_expired", "dec_ttl: TTL or hop limit exhausted"))

    cdef inline void flush(self, uint32_t b) noexcept nogil:
        """The pending output takes a copy of the frame as it is now (before it changes)."""
        cdef int c
        if not self.has_pending:
            return
        self.has_pending = False
        c = self.pool.clone(b)
        if c < 0:
            self.count_error(ERR_NO_BUFFER)
            return
        self.pool.tx_if[c] = self.pend_tx
        self.pool.next[c] = self.pend_next
        self.pool.aux[c] = self.pend_aux
        self.emit(c)

    cdef inline void send(self, uint32_t b, uint16_t tx, uint16_t nxt, uint32_t aux) noexcept nogil:
        self.flush(b)
        self.has_pending = True
        self.pend_tx, self.pend_next, self.pend_aux = tx, nxt, aux

    cdef int act(self, uint32_t b, const op_t *o, int32_t rid) noexcept nogil:
        """One action on buffer b. 1: the frame changed; 0: it did not; -1: drop it."""
        cdef uint8_t *p
        cdef uint8_t *ip
        cdef uint8_t *cs
        cdef uint16_t etype, tci, rx, nm, old16
        cdef uint32_t old32
        cdef int l3, hl, k
        cdef uint16_t *members
        cdef uint8_t kind = o.kind
        cdef bint partial
        if kind >= A_OUTPUT:
            rx = self.pool.rx_if[b]
            if kind == A_OUTPUT:
                if o.arg == rx:
                    self.pool.error[b] = self.err_base + ERR_IN_PORT_OUTPUT
                else:
                    self.send(b, <uint16_t> o.arg, NEXT_OUTPUT, 0)
            elif kind == A_IN_PORT:
                self.send(b, rx, NEXT_OUTPUT, 0)
            elif kind == A_NORMAL:
                self.send(b, 0, NEXT_NORMAL, 0)
            elif kind == A_CONTROLLER:
                # packet-in reads max_len from tx_if and the rule from aux
                self.send(b, <uint16_t> o.arg, NEXT_PUNT, <uint32_t> rid)
            elif kind == A_FLOOD:
                members = self.tables.members + <uint32_t> self.pool.bd[b] * MAX_MEMBERS
                nm = self.tables.n_members[self.pool.bd[b]]
                for k in range(nm):
                    if members[k] != rx:
                        self.send(b, members[k], NEXT_OUTPUT, 0)
            return 0
        self.flush(b)                     # an earlier output gets the frame as it was
        if kind == A_POP_VLAN:
            vlan_pop(self.pool, b)
            return 1
        if kind == A_PUSH_VLAN:
            p = self.pool.frame(b)
            tci = rd16(p + 14) if self.pool.length[b] >= 18 and is_vlan_tpid(rd16(p + 12)) else 0
            if vlan_push(self.pool, b, o.arg, tci) < 0:
                self.pool.error[b] = self.err_base + ERR_NO_HEADROOM
                return -1
            return 1
        if kind == A_SET_VID or kind == A_SET_PCP:
            p = self.pool.frame(b)
            if not (self.pool.length[b] >= 18 and is_vlan_tpid(rd16(p + 12))):
                if vlan_push(self.pool, b, ETH_P_8021Q, 0) < 0:
                    self.pool.error[b] = self.err_base + ERR_NO_HEADROOM
                    return -1
                p = self.pool.frame(b)
            tci = rd16(p + 14)
            if kind == A_SET_VID:
                tci = (tci & 0xf000) | (o.arg & 0xfff)
            else:
                tci = (tci & 0x1fff) | ((o.arg & 7) << 13)
            wr16(p + 14, tci)
            return 1
        p = self.pool.frame(b)
        if kind == A_SET_ETH_DST or kind == A_SET_ETH_SRC:
            p = p + (0 if kind == A_SET_ETH_DST else 6)
            for k in range(6):
                p[k] = (o.value >> (40 - 8 * k)) & 0xff
            return 1
        # L3/L4: only where the frame holds the header (OpenFlow's prerequisites)
        l3 = l3_offset(p, self.pool.length[b], &etype)
        ip = p + l3
        partial = (self.pool.ol_flags[b] & OL_CSUM_PARTIAL) != 0
        if kind == A_DEC_TTL:
            if etype == ETH_P_IP and self.pool.length[b] >= <uint32_t> l3 + 20:
                if ip[8] <= 1:
                    self.pool.error[b] = self.err_base + ERR_TTL_EXPIRED
                    return -1
                old16 = rd16(ip + 8)
                ip[8] -= 1
                csum_replace(ip + 10, old16, rd16(ip + 8), False)
                return 1
            if etype == ETH_P_IPV6 and self.pool.length[b] >= <uint32_t> l3 + 40:
                if ip[7] <= 1:
                    self.pool.error[b] = self.err_base + ERR_TTL_EXPIRED
                    return -1
                ip[7] -= 1
                return 1
            return 0
        if etype != ETH_P_IP or self.pool.length[b] < <uint32_t> l3 + 20:
            return 0
        hl = (ip[0] & 15) * 4
        if kind == A_SET_IP4_SRC or kind == A_SET_IP4_DST:
            k = 12 if kind == A_SET_IP4_SRC else 16
            old32 = rd32(ip + k)
            wr32(ip + k, <uint32_t> o.value)
            csum_replace(ip + 10, old32, <uint32_t> o.value, False)
            cs = l4_csum(ip, self.pool.length[b] - l3, hl)
            if cs != NULL:                  # the pseudo-header carries the addresses
                csum_replace(cs, old32, <uint32_t> o.value, partial)
            return 1
        if (ip[9] == 6 or ip[9] == 17) and self.pool.length[b] >= <uint32_t> (l3 + hl + 8) \
                and (rd16(ip + 6) & 0x1fff) == 0:
            k = hl if kind == A_SET_TP_SRC else hl + 2
            old16 = rd16(ip + k)
            wr16(ip + k, <uint16_t> o.value)
            cs = l4_csum(ip, self.pool.length[b] - l3, hl)
            if cs != NULL and not partial:  # a partial sum covers no ports: the sender adds them
                csum_replace(cs, old16, <uint16_t> o.value, False)
            return 1
        return 0

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, j, s, table, row, rc, n_write
        cdef int32_t rid
        cdef uint32_t b
        cdef uint64_t metadata
        cdef uint64_t key[KEY_WORDS]
        cdef const op_t *aset[N_SLOTS]
        cdef const op_t *o
        cdef bint stale, dropped, goto
        cdef void *ft
        cdef pipeline_t *t
        for i in range(n):
            b = bufs[i]
            ft = self.tables.flows[self.pool.bd[b]]
            if ft == NULL:
                self.pool.error[b] = self.err_base + ERR_NO_MATCH
                self.pool.next[b] = ARC_DROP
                continue
            t = &(<FlowTable> ft).c
            row = self.worker if 0 <= self.worker < t.workers else 0   # (a table built for fewer)
            self.has_pending = False
            self.pool.error[b] = self.err_base + ERR_FLOW_DROP
            metadata = 0
            for s in range(N_SLOTS):
                aset[s] = NULL
            stale = True
            dropped = False
            table = 0
            while True:
                if stale:
                    flow_key(self.pool, b, metadata, key)
                    stale = False
                t.table_counts[(row * N_TABLES + table) * 2] += 1
                rid = (<Classifier> t.cls[table]).lookup(key)
                if rid < 0:
                    self.pool.error[b] = self.err_base + ERR_NO_MATCH
                    dropped = True
                    break
                t.table_counts[(row * N_TABLES + table) * 2 + 1] += 1
                t.packets[row * t.cap + rid] += 1
                t.octets[row * t.cap + rid] += self.pool.length[b]
                goto = False
                n_write = 0
                for j in range(t.rules[rid].n_ops):
                    o = &t.rules[rid].ops[j]
                    if n_write > 0:
                        aset[o.slot] = o
                        n_write -= 1
                    elif o.kind == I_WRITE:
                        n_write = o.arg
                    elif o.kind == I_CLEAR:
                        for s in range(N_SLOTS):
                            aset[s] = NULL
                    elif o.kind == I_METADATA:
                        metadata = (metadata & ~o.mask) | (o.value & o.mask)
                        key[3] = metadata
                    elif o.kind == I_GOTO:
                        table = o.arg
                        goto = True
                    else:
                        rc = self.act(b, o, rid)
                        if rc < 0:
                            dropped = True
                            break
                        if rc > 0:
                            stale = True
                if dropped or not goto:
                    break
            if not dropped:
                for s in range(N_SLOTS):
                    if aset[s] != NULL and self.act(b, aset[s], rid) < 0:
                        dropped = True
                        break
            # an output made before a drop has the frame as it was then (act copies before
            # any change), so it takes the buffer itself
            if self.has_pending:
                self.has_pending = False
                self.pool.tx_if[b] = self.pend_tx
                self.pool.next[b] = self.pend_next
                self.pool.aux[b] = self.pend_aux
            else:
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
