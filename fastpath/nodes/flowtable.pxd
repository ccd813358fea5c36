"""The compiled form of a bridge's OpenFlow rules, shared by FlowTable (flowtable.pyx, the
control side) and flow-classify (flow.pyx, the packet side).

A rule is a run of ops: its apply-actions, then the instructions that follow them in
OpenFlow's order (clear-actions, write-actions with the ops it writes, write-metadata,
goto-table). The key the classifiers look up is KEY_WORDS 64-bit words:
  0: in_port << 32 | eth_type << 16 | TCI (0x1000 set: tagged, OpenFlow's OFPVID_PRESENT)
  1: eth_dst << 16 | ip_proto (ARP: the opcode) << 8
  2: eth_src << 16
  3: metadata
  4: IPv4 source << 32 | IPv4 destination (ARP: spa, tpa)
  5: L4 source port << 48 | destination port << 32 (ICMP: type, code)
  6-7: IPv6 source; 8-9: IPv6 destination
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t
from fastpath.nodes.meter cimport MeterTable, meter_t
from fastpath.nodes.classifier cimport cls_t

cdef enum:
    N_TABLES = 16
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
    A_GROUP = 17          # arg: the group's slot (pipeline_t.groups)
    I_CLEAR = 20
    I_WRITE = 21          # the next `arg` ops go into the action set
    I_METADATA = 22
    I_GOTO = 23
    I_METER = 24          # arg: the meter's slot (pipeline_t.meters); first of a rule's ops

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
    S_GROUP = 11          # a group in the action set takes the place of its output
    S_OUTPUT = 12
    N_SLOTS = 13

ctypedef struct op_t:
    uint16_t kind
    uint16_t slot          # its action-set slot
    uint32_t arg           # port, TPID, VID, PCP, max_len, table, count
    uint64_t value         # MAC, address, port, metadata
    uint64_t mask          # write_metadata's mask

ctypedef struct prog_t:                  # a rule's ops; rules with the same ops share one,
    int32_t n_ops                        # so that 100 000 learned hosts' rules are a few
    op_t *ops                            # programs that stay in cache (ops: right after)

# groups (OpenFlow 1.3 5.6): each bucket's actions run on a copy of the frame
cdef enum:
    MAX_GROUPS = 4096                    # slots; group ids map to slots in FlowTable
    NO_WATCH = 0xFFFF                    # a watch on no port: never live
    G_ALL = 0
    G_SELECT = 1
    G_INDIRECT = 2
    G_FF = 3
    G_NONE = 255

ctypedef struct bucket_t:
    op_t *ops
    int32_t n_ops
    uint32_t weight                      # SELECT: its share
    uint32_t watch                       # FAST_FAILOVER: the sw_if_index whose liveness it needs
    uint64_t *counts                     # [row * 2 + {0 packets, 1 bytes}]

ctypedef struct group_t:
    uint16_t type                        # G_*
    int32_t n_buckets
    bucket_t *buckets
    uint64_t total_weight                # SELECT: the sum of the buckets' weights

ctypedef struct pipeline_t:              # what the packet loop reads of a FlowTable
    const cls_t *cls[N_TABLES]           # each table's Classifier's (borrowed)
    prog_t **progs                       # by rule id (control side: what its classifier slot carries)
    int32_t cap                          # rule ids, and the stride of the counter rows
    uint64_t *counts                     # [(row * cap + rule) * 2 + {0 packets, 1 bytes}]
    uint64_t *table_counts               # [(row * N_TABLES + table) * 2 + {0 lookups, 1 matched}]
    uint32_t big_tables                  # bit t: table t holds enough rules to prefetch
    int workers
    group_t *groups                      # [MAX_GROUPS], by slot
    uint8_t *live                        # [65536] by sw_if_index: FAST_FAILOVER's liveness
    uint64_t *group_packets              # [row * MAX_GROUPS + slot]
    uint64_t *group_octets
    meter_t *meters                      # [MAX_METERS], by slot (the MeterTable's)


cdef class FlowTable:
    cdef pipeline_t c
    cdef object _classifiers
    cdef object _by_id                    # rule id -> Flow
    cdef object _by_table                 # per table: rule id -> Flow
    cdef object _free_ids
    cdef object _identical                # (table, priority, value, mask) -> Flow
    cdef object _seq
    cdef public object resolve_port
    cdef readonly int workers
    cdef readonly MeterTable meter_table

    cdef _grow(self, int32_t cap)
    cdef object _progs                    # ops tuple -> [prog_t address, rules using it]
    cdef object _prog_of                  # rule id -> its ops tuple
    cdef _set_ops(self, int32_t rid, list ops)
    cdef _release(self, int32_t rid)
    cdef _set_group(self, int slot, int type, list buckets, list weights, list watches)
    cdef void _free_buckets(self, int slot) noexcept
    cdef object _groups                   # group id -> Group
    cdef object _free_slots
    cdef _sync(self, flow)
