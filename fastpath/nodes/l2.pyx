"""The NORMAL learning switch: l2-learn, l2-fwd, l2-flood.

l2-learn   records (VLAN, source MAC) -> input port in the bridge's Fdb. Multicast sources
           are never learned. next: l2-fwd. The Fdb counts learned/moved/evicted itself.
l2-fwd     looks up (VLAN, destination MAC): known unicast -> vlan-output on that port;
           broadcast, multicast and unknown unicast -> l2-flood. errors: reserved_dst
           (01:80:c2:00:00:0x is not forwarded, as in OVS), same_port (learned on the port
           the frame came in on).
l2-flood   one copy to every other port of the bridge that carries the frame's VLAN,
           never back out the input port, never from a split-horizon group into the same
           group (tunnel mesh). The last port gets the original buffer, the others clones.
           errors: no_output (no port to flood to), no_buffer (a clone the pool could not
           give; counted per missing copy).
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from fastpath.graph.buffer cimport BufferPool, F_FLOOD_COPY, VECTOR_SIZE
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.nodes.ethernet cimport mac_is_multicast, mac_is_reserved
from fastpath.nodes.bridge cimport L2Node, L2Tables, MAX_MEMBERS
from fastpath.nodes.fdb cimport Fdb, fdb_key


cdef inline void fdb_keys(BufferPool pool, L2Tables tables, uint32_t *bufs, int n,
                          int mac_offset, uint64_t *keys) noexcept nogil:
    """The (VLAN, MAC at mac_offset) key of every frame, with the bridge table's slot and
    then entry prefetched in two passes, so a vector's cache misses overlap (as VPP's
    l2-learn and l2-fwd prefetch) before the caller's own pass looks them up."""
    cdef int i
    cdef void *fdb
    for i in range(n):
        keys[i] = fdb_key(pool.frame(bufs[i]) + mac_offset, pool.vlan[bufs[i]])
        fdb = tables.fdb[pool.bd[bufs[i]]]
        if fdb != NULL:
            (<Fdb> fdb).prefetch_slot(keys[i])
    for i in range(n):
        fdb = tables.fdb[pool.bd[bufs[i]]]
        if fdb != NULL:
            (<Fdb> fdb).prefetch_entry(keys[i])


cdef class L2Learn(L2Node):
    node_name = "l2-learn"
    next_nodes = ("l2-fwd",)

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i
        cdef uint32_t b
        cdef uint64_t keys[VECTOR_SIZE]
        cdef void *fdb
        cdef double now = self.tables.now
        fdb_keys(self.pool, self.tables, bufs, n, 6, keys)
        for i in range(n):
            b = bufs[i]
            self.pool.next[b] = 1
            fdb = self.tables.fdb[self.pool.bd[b]]
            if fdb != NULL and not mac_is_multicast(self.pool.frame(b) + 6):
                (<Fdb> fdb).learn(keys[i], self.pool.rx_if[b], now)
        return 0

    def format_trace(self, uint32_t b):
        return f"learn vlan {self.pool.vlan[b]} port {self.pool.rx_if[b]}"


cdef enum:
    FWD_ERR_RESERVED_DST = 0
    FWD_ERR_SAME_PORT = 1

cdef enum:
    FWD_NEXT_OUTPUT = 1
    FWD_NEXT_FLOOD = 2


cdef class L2Forward(L2Node):
    node_name = "l2-fwd"
    next_nodes = ("vlan-output", "l2-flood")
    errors = (("reserved_dst", "reserved multicast destination (01:80:c2:00:00:0x)"),
              ("same_port", "destination learned on the input port"))

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, port
        cdef uint32_t b
        cdef uint8_t *dst
        cdef void *fdb
        cdef uint64_t keys[VECTOR_SIZE]
        fdb_keys(self.pool, self.tables, bufs, n, 0, keys)
        for i in range(n):
            b = bufs[i]
            dst = self.pool.frame(b)
            if mac_is_multicast(dst):
                if mac_is_reserved(dst):
                    self.pool.error[b] = self.err_base + FWD_ERR_RESERVED_DST
                    self.pool.next[b] = ARC_DROP
                else:
                    self.pool.next[b] = FWD_NEXT_FLOOD
                continue
            fdb = self.tables.fdb[self.pool.bd[b]]
            port = (<Fdb> fdb).lookup(keys[i]) if fdb != NULL else -1
            if port < 0:
                self.pool.next[b] = FWD_NEXT_FLOOD
            elif port == self.pool.rx_if[b]:
                self.pool.error[b] = self.err_base + FWD_ERR_SAME_PORT
                self.pool.next[b] = ARC_DROP
            else:
                self.pool.tx_if[b] = port
                self.pool.next[b] = FWD_NEXT_OUTPUT
        return 0

    def format_trace(self, uint32_t b):
        nxt = self.pool.next[b]
        if nxt == FWD_NEXT_OUTPUT:
            return f"unicast to port {self.pool.tx_if[b]}"
        return "flood" if nxt == FWD_NEXT_FLOOD else "dropped"


cdef enum:
    FLOOD_ERR_NO_OUTPUT = 0
    FLOOD_ERR_NO_BUFFER = 1


cdef class L2Flood(L2Node):
    node_name = "l2-flood"
    next_nodes = ("vlan-output",)
    errors = (("no_output", "no other port carries the VLAN"),
              ("no_buffer", "flood copy lost: buffer pool empty"))

    cdef int process_c(self, uint32_t *bufs, int n) noexcept nogil:
        cdef int i, k, c, last
        cdef uint32_t b
        cdef uint16_t bd, vlan, rx, m, nm
        cdef uint8_t group
        cdef uint16_t *members
        for i in range(n):
            b = bufs[i]
            bd = self.pool.bd[b]
            vlan = self.pool.vlan[b]
            rx = self.pool.rx_if[b]
            group = self.tables.port_group[rx]
            members = self.tables.members + <uint32_t> bd * MAX_MEMBERS
            nm = self.tables.n_members[bd]
            # the last eligible port takes the original buffer
            last = -1
            for k in range(nm - 1, -1, -1):
                m = members[k]
                if m != rx and self.tables.carries(m, vlan) and (group == 0 or self.tables.port_group[m] != group):
                    last = k
                    break
            if last < 0:
                self.pool.error[b] = self.err_base + FLOOD_ERR_NO_OUTPUT
                self.pool.next[b] = ARC_DROP
                continue
            for k in range(last):
                m = members[k]
                if m == rx or not self.tables.carries(m, vlan) or (group != 0 and self.tables.port_group[m] == group):
                    continue
                c = self.pool.clone(b)
                if c < 0:
                    self.count_error(FLOOD_ERR_NO_BUFFER)
                    continue
                self.pool.tx_if[c] = m
                self.pool.flags[c] = self.pool.flags[c] | F_FLOOD_COPY
                self.pool.next[c] = 1
                self.emit(c)
            self.pool.tx_if[b] = members[last]
            self.pool.next[b] = 1
        return 0

    def format_trace(self, uint32_t b):
        return f"flood vlan {self.pool.vlan[b]} copy to port {self.pool.tx_if[b]}"
