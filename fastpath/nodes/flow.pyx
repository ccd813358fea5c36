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
re-parsed before the next table looks at it. A vector crosses the tables together, one
table at a time (run_pipeline): each pass looks up every frame at that table, then runs
the rules found; a hit's classifier slot carries the rule's shared program and, when one
worker counts, its counters (classifier.pxd SLOT_*), so the rule itself is never read.

Actions: pop/push VLAN, set_field eth_src/eth_dst/vlan_vid/vlan_pcp (mod_vlan_*: pushes a
tag when there is none, as OVS does), ipv4_src/dst and tcp/udp ports (the IPv4 and L4
checksums updated incrementally), dec_nw_ttl (IPv4, IPv6; at 1 the frame is dropped),
output:PORT, IN_PORT, NORMAL, FLOOD/ALL, CONTROLLER (a copy, as it is at that point, is
punted to packet-in), group:N (flowtable.pxd group_t: ALL runs every bucket, INDIRECT
its one, SELECT one chosen by a hash of the flow key, by weight, FAST_FAILOVER the first
whose watched port is live (pipeline_t.live, kept by the agent); each bucket's actions run
on a copy of the frame, which leaves by the bucket's outputs; in the action set a group
takes the place of the output). An output takes a copy only when something follows it, so
a frame with one output is never copied. output never applies the port's VLAN settings (only
NORMAL does), as in OVS.

next: interface-output (output, in_port, flood, all), vlan-input (normal), packet-in
(controller: tx_if carries max_len and aux the rule's id, for the agent's PACKET_IN).
errors: no_match (table miss), flow_drop (rule with no output), in_port_output (an
output to the input port, which OpenFlow skips), no_buffer (a copy the pool could not
give), no_headroom, ttl_expired, meter_drop (a meter's DROP band), group_copied (the
original of a frame whose copies a group sent, when nothing else sends it on: not a drop by
a flow).

Meters (meter.pxd): a rule's meter:N runs before its actions; a DROP band drops the frame,
a DSCP_REMARK band raises the drop precedence of an AF-marked IPv4/IPv6 frame (AFxy:
y + prec_level, at most 3).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, uintptr_t
from libc.string cimport memset, memcpy
from fastpath.graph.buffer cimport BufferPool, OL_CSUM_PARTIAL, VECTOR_SIZE
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport (rd16, wr16, is_vlan_tpid, mac_u64, vlan_push, vlan_pop,
                                      ETH_P_8021Q, ETH_P_IP, ETH_P_ARP)
from fastpath.nodes.ip4 cimport rd32, wr32, rd64
from fastpath.nodes.bridge cimport L2Node, L2Tables, MAX_MEMBERS
from fastpath.nodes.classifier cimport (cls_t, cls_find, cls_prefetch, slot_rule, KEY_WORDS, SLOT_PAYLOAD,
                                        SLOT_PACKETS, SLOT_BYTES, __builtin_prefetch)
from fastpath.nodes.flowtable cimport *
from fastpath.nodes.meter cimport meter_t, meter_apply, MB_DROP, MB_DSCP_REMARK
from fastpath.graph.clock cimport now_ns

cdef enum:
    ETH_P_IPV6 = 0x86dd

cdef uint64_t HASH_SEED = 0x9e3779b97f4a7c15ULL    # SELECT groups' flow hash (a 64-bit mix)
cdef uint64_t HASH_MUL = 0xff51afd7ed558ccdULL

cdef enum:
    AHEAD = 16               # frames a big table's pass prefetches ahead of its lookup
    AT_DONE = 0xfe          # at[]: out of the tables, on to its action set
    AT_DROPPED = 0xff

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
    ERR_METER_DROP = 6
    ERR_GROUP_COPIED = 7


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
            if proto == 6 or proto == 17 or proto == 132:
                key[5] = (<uint64_t> rd16(ip + hl) << 48) | (<uint64_t> rd16(ip + hl + 2) << 32)
            elif proto == 1:
                key[5] = (<uint64_t> ip[hl] << 48) | (<uint64_t> ip[hl + 1] << 32)
        key[5] |= <uint64_t> ip[1] << 24     # TOS: DSCP and ECN
    elif etype == ETH_P_IPV6 and avail >= 40:
        proto = ip[6]
        key[6] = rd64(ip + 8)
        key[7] = rd64(ip + 16)
        key[8] = rd64(ip + 24)
        key[9] = rd64(ip + 32)
        if (proto == 6 or proto == 17 or proto == 132) and avail >= 44:
            key[5] = (<uint64_t> rd16(ip + 40) << 48) | (<uint64_t> rd16(ip + 42) << 32)
        elif proto == 58 and avail >= 42:
            key[5] = (<uint64_t> ip[40] << 48) | (<uint64_t> ip[41] << 32)
        # traffic class (DSCP and ECN) where IPv4 has its TOS, then the flow label
        key[5] |= (<uint64_t> (rd16(ip) >> 4 & 0xff) << 24) | (rd32(ip) & 0xfffff)
    elif etype == ETH_P_ARP and avail >= 28:
        proto = rd16(ip + 6) & 0xff          # arp_op, where OVS keeps it (nw_proto)
        key[4] = (<uint64_t> rd32(ip + 14) << 32) | rd32(ip + 24)
        key[6] = mac_u64(ip + 8) << 16       # sha, tha: where IPv6 keeps its source
        key[7] = mac_u64(ip + 18) << 16
    key[1] |= <uint64_t> proto << 8


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

cdef inline uint8_t af_remark(uint8_t dscp, uint32_t prec) noexcept nogil:
    """AFxy -> AFx(y+prec), y at most 3 (RFC 2597); any other code point stays."""
    cdef uint32_t cls = dscp >> 3, y = (dscp >> 1) & 3
    if cls < 1 or cls > 4 or (dscp & 1) or y == 0:
        return dscp
    y = y + prec if y + prec < 3 else 3
    return <uint8_t> ((cls << 3) | (y << 1))


cdef class FlowClassify(L2Node):
    node_name = "flow-classify"
    cdef public int worker               # which row of the flow counters this copy counts in
    # the frame's pending output (see send/flush): taken by the buffer itself at the end
    cdef bint has_pending
    cdef uint16_t pend_tx, pend_next
    cdef uint32_t pend_aux
    cdef pipeline_t *cur                 # the pipeline of the frame at hand (for its groups)
    cdef int cur_row
    # the only worker counts a hit in the rule's classifier slot, already in cache; with
    # several, each counts in its own row (a slot one worker writes would bounce between
    # the cores that read it)
    cdef bint count_in_slot
    # the state of each frame of a pipeline pass (run_pipeline), by its place k in it
    cdef uint32_t sel[VECTOR_SIZE]       # its buffer
    cdef uint64_t keys[VECTOR_SIZE][KEY_WORDS]     # its flow key; word 3 its metadata
    cdef uint8_t at[VECTOR_SIZE]         # the table it is at, AT_DONE or AT_DROPPED
    cdef bint stale[VECTOR_SIZE]         # an action changed it since its key was made
    cdef uint16_t aset_bits[VECTOR_SIZE] # its action set's slots in use (asets)
    cdef const op_t *asets[VECTOR_SIZE][N_SLOTS]
    cdef int32_t last_rid[VECTOR_SIZE]   # the last rule it hit (the action set's CONTROLLER)
    cdef bint pend_on[VECTOR_SIZE]       # its pending output (send/flush) between tables
    cdef uint16_t pend_tx_[VECTOR_SIZE]
    cdef uint16_t pend_next_[VECTOR_SIZE]
    cdef uint32_t pend_aux_[VECTOR_SIZE]
    cdef uint16_t here[VECTOR_SIZE]      # a table's pass: the frames at it
    cdef uint64_t *hit[VECTOR_SIZE]      # and the classifier slots of the rules they hit
    next_nodes = ("interface-output", "vlan-input", "packet-in")
    errors = (("no_match", "no flow matched (table miss)"),
              ("flow_drop", "dropped by a flow"),
              ("in_port_output", "output to the input port skipped"),
              ("no_buffer", "flow output copy lost: buffer pool empty"),
              ("no_headroom", "no headroom to push a tag"),
              ("ttl_expired", "dec_ttl: TTL or hop limit exhausted"),
              ("meter_drop", "a meter band dropped it (over its rate)"),
              ("group_copied", "left behind once a group's buckets took their copies"))

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

    cdef void run_group(self, uint32_t b, uint32_t slot, int32_t rid) noexcept nogil:
        """Group `slot` on frame b: each bucket (ALL: every one; INDIRECT: its one) runs
        its actions on a copy of b, which goes where the bucket's outputs send it. b itself
        is left as it was (an earlier output of it takes its copy first)."""
        cdef group_t *g = &self.cur.groups[slot]
        cdef int k, j, c, first, last
        cdef uint64_t h, pick
        cdef uint64_t key[KEY_WORDS]
        cdef bucket_t *bk
        if g.type == G_NONE:
            return
        self.cur.group_packets[self.cur_row * MAX_GROUPS + slot] += 1
        self.cur.group_octets[self.cur_row * MAX_GROUPS + slot] += self.pool.length[b]
        first, last = 0, g.n_buckets
        if g.type == G_INDIRECT:
            last = 1 if g.n_buckets > 0 else 0
        elif g.type == G_FF:
            # the first bucket whose watched port is live; none: the frame goes nowhere
            for k in range(g.n_buckets):
                if self.cur.live[g.buckets[k].watch]:
                    break
            else:
                return
            first, last = k, k + 1
        elif g.type == G_SELECT:
            # one bucket per flow: a hash of the frame's key (as it is now), by weight
            if g.total_weight == 0:
                return
            flow_key(self.pool, b, 0, key)
            h = HASH_SEED
            for j in range(KEY_WORDS):
                h = (h ^ key[j]) * HASH_MUL
                h ^= h >> 33
            pick = h % g.total_weight
            for k in range(g.n_buckets):
                if pick < g.buckets[k].weight:
                    break
                pick -= g.buckets[k].weight
            first, last = k, k + 1
        self.flush(b)
        for k in range(first, last):
            bk = &g.buckets[k]
            bk.counts[self.cur_row * 2] += 1
            bk.counts[self.cur_row * 2 + 1] += self.pool.length[b]
            c = self.pool.clone(b)
            if c < 0:
                self.count_error(ERR_NO_BUFFER)
                continue
            self.pool.error[c] = self.err_base + ERR_FLOW_DROP
            for j in range(bk.n_ops):
                if self.act(c, &bk.ops[j], rid) < 0:
                    break
            if self.has_pending:               # the bucket's last output takes the copy
                self.has_pending = False
                self.pool.tx_if[c] = self.pend_tx
                self.pool.next[c] = self.pend_next
                self.pool.aux[c] = self.pend_aux
            else:
                self.pool.next[c] = ARC_DROP
            self.emit(c)
            # the original, if nothing else sends it on, is no drop to count as flow_drop
            self.pool.error[b] = self.err_base + ERR_GROUP_COPIED

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
            elif kind == A_GROUP:
                self.run_group(b, o.arg, rid)
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
        if etype == ETH_P_IPV6:
            return self.set_port6(b, o, ip, <int> self.pool.length[b] - l3, partial)
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

    cdef int set_port6(self, uint32_t b, const op_t *o, uint8_t *ip, int avail,
                       bint partial) noexcept nogil:
        """set_field tcp/udp src/dst on IPv6: the port right after the fixed header (no
        extension headers), the checksum updated as for IPv4 (the ports are not in the
        pseudo-header, so nothing else moves)."""
        cdef int k
        cdef uint16_t old16
        cdef uint8_t *cs = NULL
        if o.kind != A_SET_TP_SRC and o.kind != A_SET_TP_DST:
            return 0
        if not ((ip[6] == 6 and avail >= 40 + 18) or (ip[6] == 17 and avail >= 40 + 8)):
            return 0
        k = 40 if o.kind == A_SET_TP_SRC else 42
        old16 = rd16(ip + k)
        wr16(ip + k, <uint16_t> o.value)
        cs = ip + 56 if ip[6] == 6 else ip + 46
        if not partial and (ip[6] == 6 or rd16(cs) != 0):
            csum_replace(cs, old16, <uint16_t> o.value, False)
        return 1

    cdef int meter(self, uint32_t b, meter_t *m, uint64_t now) noexcept nogil:
        """A rule's meter on buffer b. 1: remarked; 0: passed as it is; -1: drop it."""
        cdef int k = meter_apply(m, self.pool.length[b], self.cur_row, now)
        cdef uint8_t *p
        cdef uint8_t *ip
        cdef uint16_t etype, old16
        cdef uint8_t dscp, new
        cdef int l3
        if k < 0:
            return 0
        if m.bands[k].type == MB_DROP:
            self.pool.error[b] = self.err_base + ERR_METER_DROP
            return -1
        p = self.pool.frame(b)
        l3 = l3_offset(p, self.pool.length[b], &etype)
        ip = p + l3
        if etype == ETH_P_IP and self.pool.length[b] >= <uint32_t> l3 + 20:
            dscp = ip[1] >> 2
            new = af_remark(dscp, m.bands[k].prec_level)
            if new != dscp:
                old16 = rd16(ip)
                ip[1] = (new << 2) | (ip[1] & 3)
                csum_replace(ip + 10, old16, rd16(ip), False)
                return 1
        elif etype == ETH_P_IPV6 and self.pool.length[b] >= <uint32_t> l3 + 40:
            dscp = ((ip[0] & 15) << 2) | (ip[1] >> 6)
            new = af_remark(dscp, m.bands[k].prec_level)
            if new != dscp:
                ip[0] = (ip[0] & 0xf0) | (new >> 2)
                ip[1] = (ip[1] & 0x3f) | ((new & 3) << 6)
                return 1
        return 0

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, m, start = 0
        cdef uint8_t todo[VECTOR_SIZE]
        while start < n:                   # (the graph hands at most VECTOR_SIZE at once)
            m = n - start if n - start < VECTOR_SIZE else VECTOR_SIZE
            # the frames of one bridge go through its pipeline together (nearly always all)
            for i in range(m):
                todo[i] = self.tables.flows[self.pool.bd[bufs[start + i]]] != NULL
                if not todo[i]:
                    self.pool.error[bufs[start + i]] = self.err_base + ERR_NO_MATCH
                    self.pool.next[bufs[start + i]] = ARC_DROP
            for i in range(m):
                if todo[i]:
                    self.run_pipeline(bufs + start, m, todo, self.tables.flows[self.pool.bd[bufs[start + i]]])
            start += m
        return 0

    cdef void run_pipeline(self, uint32_t *bufs, int n, uint8_t *todo, void *ft) noexcept nogil:
        """The frames of bufs still to do whose bridge has pipeline ft, table by table:
        each table looks up every frame at it in one pass (prefetching ahead in big
        tables, VPP-style), then runs the rules found; goto_table only goes forward, so
        one pass per table in order takes every frame as far as its rules send it."""
        cdef pipeline_t *t = &(<FlowTable> ft).c
        cdef const cls_t *cls
        cdef int i, k, x, c, m = 0, table, row, left, hits
        cdef uint64_t *e
        cdef uint32_t b
        cdef bint big
        cdef uint64_t now = 0                  # read at the first metered frame
        row = self.worker if 0 <= self.worker < t.workers else 0   # (a table built for fewer)
        self.cur = t
        self.cur_row = row
        self.count_in_slot = t.workers == 1
        for i in range(n):
            if todo[i] and self.tables.flows[self.pool.bd[bufs[i]]] == ft:
                todo[i] = False
                b = bufs[i]
                self.sel[m] = b
                flow_key(self.pool, b, 0, self.keys[m])
                self.at[m] = 0
                self.stale[m] = False
                self.aset_bits[m] = 0
                self.pend_on[m] = False
                self.pool.error[b] = self.err_base + ERR_FLOW_DROP
                m += 1
        left = m
        for table in range(N_TABLES):
            if left == 0:
                break
            c = 0
            for k in range(m):
                if self.at[k] == table:
                    if self.stale[k]:          # changed by an action: its key anew
                        flow_key(self.pool, self.sel[k], self.keys[k][3], self.keys[k])
                        self.stale[k] = False
                    self.here[c] = k
                    c += 1
            if c == 0:
                continue
            cls = t.cls[table]
            big = t.big_tables >> table & 1
            if big:
                for x in range(c if c < AHEAD else AHEAD):
                    cls_prefetch(cls, self.keys[self.here[x]])
            hits = 0
            for x in range(c):
                if big and x + AHEAD < c:
                    cls_prefetch(cls, self.keys[self.here[x + AHEAD]])
                e = cls_find(cls, self.keys[self.here[x]])
                self.hit[x] = e
                if e != NULL:
                    hits += 1
                    if big and not self.count_in_slot:     # its counters, for the pass below
                        __builtin_prefetch(&t.counts[(row * t.cap + slot_rule(e)) * 2])
            t.table_counts[(row * N_TABLES + table) * 2] += c
            t.table_counts[(row * N_TABLES + table) * 2 + 1] += hits
            for x in range(c):
                k = self.here[x]
                e = self.hit[x]
                if e == NULL:
                    self.pool.error[self.sel[k]] = self.err_base + ERR_NO_MATCH
                    self.at[k] = AT_DROPPED
                    left -= 1
                    continue
                self.run_rule(t, k, e, &now)
                if self.at[k] >= N_TABLES:
                    left -= 1
        for k in range(m):
            b = self.sel[k]
            self.has_pending = self.pend_on[k]
            self.pend_tx, self.pend_next, self.pend_aux = self.pend_tx_[k], self.pend_next_[k], self.pend_aux_[k]
            if self.at[k] == AT_DONE and self.aset_bits[k]:
                self.run_action_set(b, k)
            # an output made before a drop has the frame as it was then (act copies before
            # any change), so it takes the buffer itself
            if self.has_pending:
                self.has_pending = False
                self.pool.tx_if[b] = self.pend_tx
                self.pool.next[b] = self.pend_next
                self.pool.aux[b] = self.pend_aux
            else:
                self.pool.next[b] = ARC_DROP

    cdef inline void run_rule(self, pipeline_t *t, int k, uint64_t *e, uint64_t *now) noexcept nogil:
        """The instructions of the rule in classifier slot e on frame k of the pipeline
        pass, in OpenFlow's order; sets at[k] to the goto's table, AT_DONE (on to the action
        set) or AT_DROPPED."""
        cdef int32_t rid = slot_rule(e)
        cdef const prog_t *r = <const prog_t *> <uintptr_t> e[SLOT_PAYLOAD]
        cdef uint32_t b = self.sel[k]
        cdef uint64_t *key = self.keys[k]
        cdef const op_t *ops = r.ops
        cdef const op_t *o
        cdef int j, rc, n_write = 0
        cdef uint8_t nxt = AT_DONE
        if self.count_in_slot:
            e[SLOT_PACKETS] += 1
            e[SLOT_BYTES] += self.pool.length[b]
        else:
            t.counts[(self.cur_row * t.cap + rid) * 2] += 1
            t.counts[(self.cur_row * t.cap + rid) * 2 + 1] += self.pool.length[b]
        self.has_pending = self.pend_on[k]
        self.pend_tx, self.pend_next, self.pend_aux = self.pend_tx_[k], self.pend_next_[k], self.pend_aux_[k]
        self.last_rid[k] = rid
        for j in range(r.n_ops):
            o = &ops[j]
            if n_write > 0:
                self.asets[k][o.slot] = o
                self.aset_bits[k] |= 1 << o.slot
                n_write -= 1
            elif o.kind == I_WRITE:
                n_write = o.arg
            elif o.kind == I_CLEAR:
                self.aset_bits[k] = 0
            elif o.kind == I_METADATA:
                key[3] = (key[3] & ~o.mask) | (o.value & o.mask)
            elif o.kind == I_GOTO:
                nxt = <uint8_t> o.arg
            elif o.kind == I_METER:
                if now[0] == 0:
                    now[0] = now_ns()
                rc = self.meter(b, &t.meters[o.arg], now[0])
                if rc < 0:
                    nxt = AT_DROPPED
                    break
                if rc > 0:
                    self.stale[k] = True
            else:
                rc = self.act(b, o, rid)
                if rc < 0:
                    nxt = AT_DROPPED
                    break
                if rc > 0:
                    self.stale[k] = True
        self.at[k] = nxt
        self.pend_on[k] = self.has_pending
        self.pend_tx_[k], self.pend_next_[k], self.pend_aux_[k] = self.pend_tx, self.pend_next, self.pend_aux

    cdef void run_action_set(self, uint32_t b, int k) noexcept nogil:
        """Frame k's action set, in slot order (OpenFlow 1.3 5.10); a group takes the
        place of the output."""
        cdef uint32_t bits = self.aset_bits[k]
        cdef int s
        if bits >> S_GROUP & 1:
            bits &= ~(1u << S_OUTPUT)
        for s in range(N_SLOTS):
            if bits >> s & 1 and self.act(b, self.asets[k][s], self.last_rid[k]) < 0:
                break

    def format_trace(self, uint32_t b):
        nxt = self.pool.next[b]
        if nxt == NEXT_OUTPUT:
            return f"output to port {self.pool.tx_if[b]}"
        if nxt == NEXT_NORMAL:
            return "NORMAL"
        if nxt == NEXT_PUNT:
            return "CONTROLLER"
        return "dropped"
