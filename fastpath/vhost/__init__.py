"""vhost-user ports: virtio-net guests (QEMU, DPDK virtio_user) attached through shared memory.

protocol.py is the control channel (the vhost-user socket, in plain Python, driven from
the dispatch loop); virtq.pyx maps guest memory and runs the split virtqueues; port.pyx
holds the two graph nodes.
"""
