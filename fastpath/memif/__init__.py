"""memif ports: local processes and containers (VPP, DPDK's net_memif, libmemif programs,
fastpath.memif.client) attached through shared memory, as VPP's memif defines it.

protocol.py is the control channel (the memif socket, both roles, in plain Python,
driven from the dispatch loop); ring.pyx maps the shared memory and runs the rings;
port.pyx holds the two graph nodes; client.py is a Python peer for tests, traffic
generators and programs (`from fastpath.memif import MemifClient`).
"""


def __getattr__(name):
    if name == "MemifClient":
        from fastpath.memif.client import MemifClient
        return MemifClient
    raise AttributeError(name)
