"""L2Tables: see bridge.pxd. This file holds only the control-plane setters."""
import numpy as np
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

MODES = {"access": VM_ACCESS, "trunk": VM_TRUNK, "native-tagged": VM_NATIVE_TAGGED,
         "native-untagged": VM_NATIVE_UNTAGGED, "dot1q-tunnel": VM_DOT1Q_TUNNEL}


def trunk_bitmap(mode, tag, trunks):
    """The VLANs a port carries, as Open vSwitch computes them: an empty trunks list means
    all VLANs; native modes always carry their native VLAN and never VLAN 0."""
    bits = np.zeros(4096, dtype=bool)
    if mode in ("access", "dot1q-tunnel"):
        bits[tag] = True
        return bits
    if trunks:
        bits[list(trunks)] = True
    else:
        bits[:] = True
    if mode in ("native-tagged", "native-untagged") and tag:
        bits[tag] = True
        bits[0] = False
    return bits


cdef class L2Tables:
    def __init__(self):
        a = {
            "port_bd": np.full(MAX_PORTS, NO_BRIDGE, dtype=np.uint16),
            "port_mode": np.zeros(MAX_PORTS, dtype=np.uint8),
            "port_tag": np.zeros(MAX_PORTS, dtype=np.uint16),
            "trunks": np.zeros(MAX_PORTS * 64, dtype=np.uint64),
            "port_group": np.zeros(MAX_PORTS, dtype=np.uint8),
            "members": np.zeros(MAX_BRIDGES * MAX_MEMBERS, dtype=np.uint16),
            "n_members": np.zeros(MAX_BRIDGES, dtype=np.uint16),
            "has_flows": np.zeros(MAX_BRIDGES, dtype=np.uint8),
        }
        self._arrays = a
        self.port_bd = <uint16_t *> <size_t> a["port_bd"].ctypes.data
        self.port_mode = <uint8_t *> <size_t> a["port_mode"].ctypes.data
        self.port_tag = <uint16_t *> <size_t> a["port_tag"].ctypes.data
        self.trunks = <uint64_t *> <size_t> a["trunks"].ctypes.data
        self.port_group = <uint8_t *> <size_t> a["port_group"].ctypes.data
        self.members = <uint16_t *> <size_t> a["members"].ctypes.data
        self.n_members = <uint16_t *> <size_t> a["n_members"].ctypes.data
        self.has_flows = <uint8_t *> <size_t> a["has_flows"].ctypes.data
        self._owners = {}
        self.now = 0.0
        cdef int i
        for i in range(MAX_BRIDGES):
            self.fdb[i] = NULL
            self.flows[i] = NULL

    def set_bridge(self, int bd, fdb, flows):
        if not 0 <= bd < MAX_BRIDGES:
            raise ValueError(f"bridge index {bd} out of range")
        self._owners[bd] = (fdb, flows)
        self.fdb[bd] = <void *> fdb
        self.flows[bd] = <void *> flows

    def clear_bridge(self, int bd):
        self.set_members(bd, [])
        self.fdb[bd] = NULL
        self.flows[bd] = NULL
        self._owners.pop(bd, None)

    def set_has_flows(self, int bd, bint on):
        self._arrays["has_flows"][bd] = on

    def set_port(self, int port, int bd, mode, int tag, trunks, int group=0):
        """Configure one port; mode is an OVS vlan_mode name."""
        if not 0 <= port < MAX_PORTS:
            raise ValueError(f"port index {port} out of range")
        a = self._arrays
        # the bitmap first: a frame read between these writes must not see a half config
        bits = trunk_bitmap(mode, tag, trunks).reshape(64, 64).astype(np.uint64)
        words = (bits << np.arange(64, dtype=np.uint64)).sum(axis=1, dtype=np.uint64)
        a["trunks"][port * 64:(port + 1) * 64] = words
        a["port_tag"][port] = tag
        a["port_mode"][port] = MODES[mode]
        a["port_group"][port] = group
        a["port_bd"][port] = bd

    def clear_port(self, int port):
        self._arrays["port_bd"][port] = NO_BRIDGE

    def set_members(self, int bd, ports):
        if len(ports) > MAX_MEMBERS:
            raise ValueError(f"a bridge holds at most {MAX_MEMBERS} ports")
        a = self._arrays
        a["members"][bd * MAX_MEMBERS:bd * MAX_MEMBERS + len(ports)] = ports
        a["n_members"][bd] = len(ports)

    def carries_py(self, int port, int vlan):
        return bool(self.carries(port, vlan))


cdef class L2Node(Node):
    def __init__(self, L2Tables tables, name=None):
        super().__init__(name)
        self.tables = tables
