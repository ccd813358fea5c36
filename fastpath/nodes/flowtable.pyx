# cython: boundscheck=False, wraparound=False, cdivision=True
"""FlowTable: a bridge's OpenFlow rules, compiled for flow-classify (flowtable.pxd).

Control plane only: rules come in as ofsyntax.FlowRules (fastpathctl add-flow, the OpenFlow
agent's FLOW_MOD), are compiled into ops and a (value, mask) over the flow key, and are put
into one Classifier per table. Every change is made under the workers' barrier
(fastpath.switch), so no lookup sees half of it.
"""
import itertools
import time
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, uintptr_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, memcpy
from fastpath.nodes.classifier cimport Classifier, KEY_WORDS, PREFETCH_MIN, hugepage_hint
from fastpath.nodes.meter cimport MeterTable
from fastpath import ofsyntax

_ACTION_OPS = {"strip_vlan": (A_POP_VLAN, S_POP), "push_vlan": (A_PUSH_VLAN, S_PUSH),
               "mod_vlan_vid": (A_SET_VID, S_VID), "mod_vlan_pcp": (A_SET_PCP, S_PCP),
               "mod_dl_src": (A_SET_ETH_SRC, S_ETH_SRC), "mod_dl_dst": (A_SET_ETH_DST, S_ETH_DST),
               "mod_nw_src": (A_SET_IP4_SRC, S_IP4_SRC), "mod_nw_dst": (A_SET_IP4_DST, S_IP4_DST),
               "mod_tp_src": (A_SET_TP_SRC, S_TP_SRC), "mod_tp_dst": (A_SET_TP_DST, S_TP_DST),
               "dec_ttl": (A_DEC_TTL, S_DEC_TTL), "output": (A_OUTPUT, S_OUTPUT),
               "in_port": (A_IN_PORT, S_OUTPUT), "normal": (A_NORMAL, S_OUTPUT),
               "flood": (A_FLOOD, S_OUTPUT), "all": (A_FLOOD, S_OUTPUT),
               "controller": (A_CONTROLLER, S_OUTPUT), "group": (A_GROUP, S_GROUP)}
GROUP_TYPES = {"all": G_ALL, "select": G_SELECT, "indirect": G_INDIRECT, "ff": G_FF}
NO_WEIGHTS = ()

DEFAULT_FLOW = "priority=0 actions=normal"
MAC_ALL = (1 << 48) - 1


# The Match fields that are a plain value or a (value, mask) at one place in the key: (name,
# word, shift, width). The low half of word 5 holds the IP TOS / traffic class byte and the
# flow label; ARP's hardware addresses sit in the words of IPv6's source (never both).
KEY_FIELDS = (("dl_type", 0, 16, 16), ("vlan_tci", 0, 0, 16), ("dl_dst", 1, 16, 48),
              ("nw_proto", 1, 8, 8), ("dl_src", 2, 16, 48), ("metadata", 3, 0, 64),
              ("nw_src", 4, 32, 32), ("nw_dst", 4, 0, 32), ("tp_src", 5, 48, 16),
              ("tp_dst", 5, 32, 16), ("ip_dscp", 5, 26, 6), ("ip_ecn", 5, 24, 2),
              ("ipv6_label", 5, 0, 20), ("arp_sha", 6, 16, 48), ("arp_tha", 7, 16, 48))


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
    if m.dl_vlan is not None:
        put(0, 0, 13, 0 if m.dl_vlan == ofsyntax.VLAN_NONE else m.dl_vlan | VID_PRESENT)
    if m.dl_vlan_pcp is not None:
        put(0, 0, 16, m.dl_vlan_pcp << 13 | VID_PRESENT, 0xe000 | VID_PRESENT)
    for name, word, shift, width in KEY_FIELDS:
        value = getattr(m, name)
        if isinstance(value, int):
            put(word, shift, width, value)
        elif value is not None:                         # (value, mask)
            put(word, shift, width, value[0], value[1])
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


class Group:
    """One OpenFlow group: its type ("all", "select", "indirect"), its buckets (each a
    list of ofsyntax.Actions), their weights (SELECT) and the slot its compiled form has in
    the pipeline."""
    def __init__(self, group_id, type, buckets, slot, weights=(), watches=()):
        self.group_id = group_id
        self.type = type
        self.buckets = buckets
        self.weights = list(weights) or [0] * len(buckets)
        self.watches = list(watches) or [None] * len(buckets)    # FF: port refs
        self.slot = slot
        self.created = time.monotonic()


def groups_of(flow):
    """The ids of the groups a Flow's actions (apply and write) name."""
    return {a.arg for a in list(flow.rule.actions) + list(flow.rule.write_actions or ())
            if a.kind == "group"}


def _uses_group(flow, group_id):
    return group_id in groups_of(flow)


def _uses_meter(flow, meter_id):
    return flow.rule.meter == meter_id


def _uses_port(flow, int sw_if_index):
    return flow.in_port == sw_if_index or sw_if_index in flow.out_ports.values()


cdef class FlowTable:
    """The rules of one bridge, in N_TABLES classifiers, with their compiled instructions.

    `resolve_port(ref) -> sw_if_index` turns a port name or OpenFlow number into a port
    (ValueError when there is none). Each of `workers` dispatch threads counts hits in its
    own row of the counters (VPP's per-thread counters); reads sum the rows. Every change
    is made under the workers' barrier (fastpath.switch), so no lookup sees half of it.
    """
    def __cinit__(self, resolve_port, int workers=1):
        self.c.progs = NULL
        self.c.counts = self.c.table_counts = NULL
        self.c.groups = NULL
        self.c.live = NULL
        self.c.group_packets = self.c.group_octets = NULL
        self.c.cap = 0
        self.c.big_tables = 0

    def __init__(self, resolve_port, int workers=1):
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.workers = workers
        self.c.workers = workers
        self.resolve_port = resolve_port
        self._classifiers = [Classifier() for _ in range(N_TABLES)]
        cdef int t
        for t in range(N_TABLES):
            self.c.cls[t] = &(<Classifier> self._classifiers[t]).c
        self._by_id = {}
        self._progs = {}
        self._prog_of = {}
        self._by_table = [{} for _ in range(N_TABLES)]       # rule id -> Flow, per table
        self._free_ids = []
        self._identical = {}
        self._seq = itertools.count()
        self._groups = {}
        self._free_slots = list(range(MAX_GROUPS - 1, -1, -1))
        self.c.groups = <group_t *> calloc(MAX_GROUPS, sizeof(group_t))
        self.c.group_packets = <uint64_t *> calloc(workers * MAX_GROUPS, sizeof(uint64_t))
        self.c.group_octets = <uint64_t *> calloc(workers * MAX_GROUPS, sizeof(uint64_t))
        self.c.live = <uint8_t *> malloc(65536)
        if self.c.live == NULL:
            raise MemoryError()
        memset(self.c.live, 1, 65536)
        self.c.live[NO_WATCH] = 0
        if self.c.groups == NULL or self.c.group_packets == NULL or self.c.group_octets == NULL:
            raise MemoryError()
        for t in range(MAX_GROUPS):
            self.c.groups[t].type = G_NONE
        self.meter_table = MeterTable(workers)
        self.c.meters = self.meter_table.meters
        self.c.table_counts = <uint64_t *> malloc(workers * N_TABLES * 2 * sizeof(uint64_t))
        memset(self.c.table_counts, 0, workers * N_TABLES * 2 * sizeof(uint64_t))
        self._grow(64)
        self.add(DEFAULT_FLOW)

    def __dealloc__(self):
        cdef int32_t i
        if self._progs:
            for address, _ in self._progs.values():
                free(<void *> <uintptr_t> address)
        free(self.c.progs)
        free(self.c.counts)
        free(self.c.table_counts)
        if self.c.groups != NULL:
            for i in range(MAX_GROUPS):
                self._free_buckets(i)
        free(self.c.groups)
        free(self.c.live)
        free(self.c.group_packets)
        free(self.c.group_octets)

    cdef void _free_buckets(self, int slot) noexcept:
        cdef group_t *g = &self.c.groups[slot]
        cdef int32_t k
        if g.buckets != NULL:
            for k in range(g.n_buckets):
                free(g.buckets[k].ops)
                free(g.buckets[k].counts)
            free(g.buckets)
        g.buckets = NULL
        g.n_buckets = 0
        g.type = G_NONE

    n_tables = N_TABLES

    cdef _grow(self, int32_t cap):
        """Room for cap rules: the counter rows are re-laid at the new stride."""
        cdef prog_t **r = <prog_t **> calloc(cap, sizeof(prog_t *))
        cdef uint64_t *counts = <uint64_t *> calloc(<size_t> self.workers * cap * 2, sizeof(uint64_t))
        cdef int w
        if r == NULL or counts == NULL:
            free(r)
            free(counts)
            raise MemoryError()
        hugepage_hint(counts, <size_t> self.workers * cap * 2 * sizeof(uint64_t))
        if self.c.cap:
            memcpy(r, self.c.progs, self.c.cap * sizeof(prog_t *))
        for w in range(self.workers):
            if self.c.cap:
                memcpy(counts + <size_t> w * cap * 2, self.c.counts + <size_t> w * self.c.cap * 2,
                       self.c.cap * 2 * sizeof(uint64_t))
        free(self.c.progs)
        free(self.c.counts)
        self.c.progs, self.c.counts = r, counts
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
            elif a.kind == "group" and a.arg not in self._groups:
                raise ValueError(f"group:{a.arg}: no such group")
        if rule.meter is not None and self.meter_table.get(rule.meter) is None:
            raise ValueError(f"meter:{rule.meter}: no such meter")
        flow = Flow(rule, in_port, outs)
        flow.value, flow.mask = match_words(m, in_port)
        return flow

    def _ops(self, flow):
        """The rule's instructions as (kind, slot, arg, value, mask) tuples, in spec order."""
        out = []
        r = flow.rule
        out_ports = flow.out_ports
        if r.meter is not None:               # the meter instruction comes first (5.9)
            out.append((I_METER, 0, self.meter_table.get(r.meter).slot, 0, 0))
        for a in r.actions:
            out.append(self._op(a, out_ports))
        if r.clear_actions:
            out.append((I_CLEAR, 0, 0, 0, 0))
        if r.write_actions:
            out.append((I_WRITE, 0, len(r.write_actions), 0, 0))
            for a in r.write_actions:
                out.append(self._op(a, out_ports))
        if r.write_metadata is not None:
            out.append((I_METADATA, 0, 0, r.write_metadata[0], r.write_metadata[1]))
        if r.goto is not None:
            out.append((I_GOTO, 0, r.goto, 0, 0))
        return out

    def _op(self, a, out_ports):
        """One action as a (kind, slot, arg, value, mask) op."""
        kind, slot = _ACTION_OPS[a.kind]
        arg, value = 0, 0
        if kind == A_OUTPUT:
            arg = out_ports[a.arg]
        elif kind == A_GROUP:
            arg = self._groups[a.arg].slot
        elif kind == A_CONTROLLER:
            arg = ofsyntax.CONTROLLER_MAX_LEN if a.arg is None else a.arg
        elif kind in (A_PUSH_VLAN, A_SET_VID, A_SET_PCP):
            arg = a.arg
        elif kind in (A_SET_ETH_SRC, A_SET_ETH_DST, A_SET_IP4_SRC, A_SET_IP4_DST,
                      A_SET_TP_SRC, A_SET_TP_DST):
            value = a.arg
        return (kind, slot, arg, value, 0)

    # ---- groups ----

    def set_live(self, int sw_if_index, bint live):
        """A port's liveness for FAST_FAILOVER groups (admin state and link)."""
        if 0 <= sw_if_index < NO_WATCH:
            self.c.live[sw_if_index] = live

    def set_group(self, group_id, type, buckets, weights=(), watches=()):
        """Add or replace group group_id: type "all", "select" or "indirect", buckets a
        list of lists of ofsyntax.Actions (outputs and header changes; no groups), weights
        one per bucket for "select". ValueError: a port that does not resolve, or no slot
        left."""
        weights = list(weights) or [0] * len(buckets)
        watches = list(watches) or [None] * len(buckets)
        watch_ifs = [NO_WATCH if w is None or not self._resolves(w) else self.resolve_port(w)
                     for w in watches]
        compiled = []
        for bucket in buckets:
            outs = {a.arg: self.resolve_port(a.arg) for a in bucket if a.kind == "output"}
            compiled.append([self._op(a, outs) for a in bucket])
        g = self._groups.get(group_id)
        if g is None:
            if not self._free_slots:
                raise ValueError(f"no room for more than {MAX_GROUPS} groups")
            g = Group(group_id, type, buckets, self._free_slots.pop())
            self._groups[group_id] = g
        g.type, g.buckets, g.weights, g.watches = type, buckets, weights, watches
        self._set_group(g.slot, GROUP_TYPES[type], compiled, weights, watch_ifs)
        return g

    cdef _set_group(self, int slot, int type, list buckets, list weights, list watches):
        cdef bucket_t *bs = <bucket_t *> calloc(len(buckets) or 1, sizeof(bucket_t))
        cdef op_t *o
        cdef int k, i
        if bs == NULL:
            raise MemoryError()
        for k, ops in enumerate(buckets):
            o = <op_t *> malloc((len(ops) or 1) * sizeof(op_t))
            if o == NULL:
                raise MemoryError()
            for i, (kind, s, arg, value, mask) in enumerate(ops):
                o[i].kind, o[i].slot, o[i].arg, o[i].value, o[i].mask = kind, s, arg, value, mask
            bs[k].ops = o
            bs[k].n_ops = len(ops)
            bs[k].weight = weights[k]
            bs[k].watch = watches[k]
            bs[k].counts = <uint64_t *> calloc(self.workers * 2, sizeof(uint64_t))
            if bs[k].counts == NULL:
                raise MemoryError()
        self._free_buckets(slot)
        self.c.groups[slot].total_weight = sum(weights)
        self.c.groups[slot].buckets = bs
        self.c.groups[slot].n_buckets = len(buckets)
        self.c.groups[slot].type = type

    def delete_group(self, group_id):
        """Take a group out, and the flows that use it (returned, for FLOW_REMOVED)."""
        cdef int w
        g = self._groups.pop(group_id, None)
        if g is None:
            return []
        gone = [f for f in self._by_id.values() if _uses_group(f, group_id)]
        self.remove(gone)
        self._free_buckets(g.slot)
        for w in range(self.workers):
            self.c.group_packets[w * MAX_GROUPS + g.slot] = 0
            self.c.group_octets[w * MAX_GROUPS + g.slot] = 0
        self._free_slots.append(g.slot)
        return gone

    # ---- meters ----

    def set_meter(self, meter_id, int flags, bands):
        """Add or change a meter (MeterTable.set; ValueError/OverflowError say why)."""
        return self.meter_table.set(meter_id, flags, bands)

    def delete_meter(self, meter_id):
        """Take a meter out, and the flows that use it (returned, for FLOW_REMOVED)."""
        if self.meter_table.get(meter_id) is None:
            return []
        gone = [f for f in self._by_id.values() if _uses_meter(f, meter_id)]
        self.remove(gone)
        self.meter_table.delete(meter_id)
        return gone

    def meter_flow_count(self, meter_id):
        return sum(1 for f in self._by_id.values() if _uses_meter(f, meter_id))

    def group(self, group_id):
        return self._groups.get(group_id)

    @property
    def groups(self):
        """Every Group, by id."""
        return [self._groups[k] for k in sorted(self._groups)]

    def group_ids(self):
        return set(self._groups)

    def group_ref_count(self, group_id):
        return sum(1 for f in self._by_id.values() if _uses_group(f, group_id))

    def group_counters(self, g):
        """(packets, bytes) a group has seen, over every worker."""
        cdef int w
        cdef uint64_t p = 0, o = 0
        for w in range(self.workers):
            p += self.c.group_packets[w * MAX_GROUPS + g.slot]
            o += self.c.group_octets[w * MAX_GROUPS + g.slot]
        return p, o

    def bucket_counters(self, g):
        """[(packets, bytes)] per bucket of a group, over every worker."""
        cdef group_t *cg = &self.c.groups[g.slot]
        cdef int k, w
        out = []
        for k in range(cg.n_buckets):
            p = o = 0
            for w in range(self.workers):
                p += cg.buckets[k].counts[w * 2]
                o += cg.buckets[k].counts[w * 2 + 1]
            out.append((p, o))
        return out

    cdef _set_ops(self, int32_t rid, list ops):
        """Point rule rid at the program of these ops (made the first time they are seen)."""
        cdef prog_t *p
        cdef int i
        key = tuple(ops)
        entry = self._progs.get(key)
        if entry is None:
            p = <prog_t *> malloc(sizeof(prog_t) + len(ops) * sizeof(op_t))
            if p == NULL:
                raise MemoryError()
            p.ops = <op_t *> (p + 1)
            p.n_ops = len(ops)
            for i, (kind, slot, arg, value, mask) in enumerate(ops):
                p.ops[i].kind, p.ops[i].slot, p.ops[i].arg = kind, slot, arg
                p.ops[i].value, p.ops[i].mask = value, mask
            entry = self._progs[key] = [<uintptr_t> p, 0]
        entry[1] += 1
        if rid in self._prog_of:
            self._release(rid)
        self._prog_of[rid] = key
        self.c.progs[rid] = <prog_t *> <uintptr_t> entry[0]

    cdef _release(self, int32_t rid):
        """Rule rid no longer uses its program (freed when no rule does)."""
        key = self._prog_of.pop(rid)
        entry = self._progs[key]
        entry[1] -= 1
        if not entry[1]:
            del self._progs[key]
            free(<void *> <uintptr_t> entry[0])
        self.c.progs[rid] = NULL

    # ---- installing ----

    def _key(self, flow):
        return (flow.rule.table, flow.rule.priority, flow.value, flow.mask)

    def identical_to(self, int table, int priority, value, mask):
        """The installed Flow with this table, priority and match words, or None."""
        return self._identical.get((table, priority, tuple(value), tuple(mask)))

    def install(self, flow):
        """Put a compiled Flow in its table, replacing an identical one (returned)."""
        key = self._key(flow)
        old = self._identical.get(key)
        if old is not None:
            self.uninstall(old)
        if not self._free_ids:
            self._grow(self.c.cap * 2)
        cdef int32_t rid = self._free_ids.pop()
        cdef int w
        self._set_ops(rid, self._ops(flow))
        for w in range(self.workers):
            self.c.counts[(w * self.c.cap + rid) * 2] = 0
            self.c.counts[(w * self.c.cap + rid) * 2 + 1] = 0
        self.c.counts[rid * 2] = flow.n_packets     # worker 0's row carries what it had
        self.c.counts[rid * 2 + 1] = flow.n_bytes
        (<Classifier> self._classifiers[flow.rule.table]).insert(
            rid, flow.rule.priority, flow.value, flow.mask, <uintptr_t> self.c.progs[rid])
        self._note_size(flow.rule.table)
        flow.id = rid
        flow.seq = next(self._seq)
        self._by_id[rid] = flow
        self._by_table[flow.rule.table][rid] = flow
        self._identical[key] = flow
        return old

    def _note_size(self, int table):
        """flow-classify prefetches ahead in the tables big enough to miss the cache."""
        if len(self._classifiers[table]) >= PREFETCH_MIN:
            self.c.big_tables |= 1u << table
        else:
            self.c.big_tables &= ~(1u << table)

    def uninstall(self, flow):
        """Take an installed Flow out (its counters brought up to date first)."""
        cdef int32_t rid = flow.id
        self._sync(flow)
        (<Classifier> self._classifiers[flow.rule.table]).remove(rid)
        self._note_size(flow.rule.table)
        self._release(rid)
        del self._by_id[rid]
        del self._by_table[flow.rule.table][rid]
        if self._identical.get(self._key(flow)) is flow:
            del self._identical[self._key(flow)]
        self._free_ids.append(rid)
        flow.id = -1

    def set_actions(self, flow, rule):
        """Give an installed Flow another rule's instructions (FLOW_MOD modify); counters kept.
        ValueError when a port does not resolve."""
        new = self.compile(rule)
        self._set_ops(flow.id, self._ops(new))
        (<Classifier> self._classifiers[flow.rule.table]).set_payload(flow.id, <uintptr_t> self.c.progs[flow.id])
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

    def classifier(self, int table):
        """Table `table`'s Classifier (for checks and benchmarks)."""
        return self._classifiers[table]

    def in_table(self, int table):
        """The Flows of one table, in no particular order."""
        return list(self._by_table[table].values()) if 0 <= table < N_TABLES else []

    def __iter__(self):
        """Every Flow, in no particular order (cheaper than .flows with many rules)."""
        return iter(list(self._by_id.values()))

    @property
    def is_default(self):
        if len(self._by_id) != 1:         # asked on every FLOW_MOD: no walk over the rules
            return False
        only = next(iter(self._by_id.values()))
        return ofsyntax.format_flow(only.rule) == ofsyntax.format_flow(ofsyntax.parse_flow(DEFAULT_FLOW))

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
        # group buckets lose their outputs to ports that no longer resolve
        for g in list(self._groups.values()):
            kept = [[a for a in b if a.kind != "output" or self._resolves(a.arg)] for b in g.buckets]
            if kept != g.buckets or any(w is not None and not self._resolves(w) for w in g.watches):
                self.set_group(g.group_id, g.type, kept, g.weights, g.watches)

    def _resolves(self, ref):
        try:
            self.resolve_port(ref)
            return True
        except ValueError:
            return False

    # ---- counters ----

    cdef _sync(self, flow):
        cdef int32_t rid = flow.id
        cdef uint64_t p = 0, o = 0
        cdef int w
        for w in range(self.workers):
            p += self.c.counts[(w * self.c.cap + rid) * 2]
            o += self.c.counts[(w * self.c.cap + rid) * 2 + 1]
        # a table of one worker counts in the rule's classifier slot (flow.pyx count_in_slot)
        sp, so = (<Classifier> self._classifiers[flow.rule.table]).counters(rid)
        flow.n_packets, flow.n_bytes = p + sp, o + so

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
        return self._by_id.get((<Classifier> self._classifiers[table]).lookup_words(key))


def covers(value, mask, have_value, have_mask):
    """The non-strict test of OpenFlow modify/delete and flow stats: a rule (have_*) is
    selected when it matches every field the request names at least as specifically."""
    for v, m, hv, hm in zip(value, mask, have_value, have_mask):
        if hm & m != m or hv & m != v:
            return False
    return True
