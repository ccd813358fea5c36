"""ike-input: queues IKE messages -- UDP 500, and UDP 4500 with the non-ESP marker -- for
the control plane (fastpath.vpn, fastpath.ike), which answers them off the packet path.
errors: punted (handed to the control plane), queue_full; and what the control plane then
refused (counted through count()): no_tunnel, and IKE's reasons (fastpath.ike.tunnel.ERRORS)."""
from collections import deque

import numpy as np

from fastpath.graph.node import Node
from fastpath.ike.tunnel import ERRORS as IKE_ERRORS


class IkeInput(Node):
    node_name = "ike-input"
    errors = (("punted", "IKE message handed to the control plane"),
              ("queue_full", "IKE queue full"),
              ("no_tunnel", "IKE message from an address without an IKE tunnel"),
              *IKE_ERRORS)

    def __init__(self, name=None, limit=1024):
        super().__init__(name)
        self.queue = deque()
        self.limit = limit

    def error_names(self):
        return {r for r, _ in self.errors}

    def count(self, reason, n=1):
        """Count the control plane's verdict on a punted message (show errors)."""
        self.graph.error_counts[self.error_code(reason)] += n

    def process(self, vector):
        pool = self.pool
        rx = pool.meta("rx_if")
        err = pool.meta("error")
        for b in vector.tolist():
            if len(self.queue) < self.limit:
                self.queue.append((int(rx[b]), pool.get_frame(b)))
                err[b] = self.error_code("punted")
            else:
                err[b] = self.error_code("queue_full")
        pool.meta("next")[vector] = np.uint16(0)   # the frame itself is done with
