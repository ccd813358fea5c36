"""packet-in: frames a flow sent to output:CONTROLLER, queued for the OpenFlow agent.

flow-classify hands over the frame as the actions left it, with max_len in tx_if and the
matching rule's id in aux. This node records (bridge, in port, frame, rule cookie,
whether the rule is a table-miss rule, max_len, table) in a bounded queue; the agent
(fastpath.openflow.agent) drains it off the packet path and sends PACKET_IN. A vector that
queued anything signals wake_fd, an eventfd the dispatch loop polls among its control fds,
so a punted frame leaves at the loop's next control service (at once when idle, within a
millisecond when busy) rather than on the agents' 20 ms timer.
errors: punted (queued for the agent), queue_full.
"""
import os
from collections import deque

import numpy as np

from fastpath.graph.node import Node


class PacketIn(Node):
    node_name = "packet-in"
    errors = (("punted", "frame queued for the OpenFlow controller"),
              ("queue_full", "OpenFlow packet-in queue full"))

    def __init__(self, tables, name=None, limit=1024):
        super().__init__(name)
        self.tables = tables            # L2Tables: its _owners give each bridge's FlowTable
        self.queue = deque()
        self.limit = limit
        self.wake_fd = -1               # set by fastpath.openflow.agent.set_controller

    def process(self, vector):
        pool = self.pool
        rx, tx, bd, aux = pool.meta("rx_if"), pool.meta("tx_if"), pool.meta("bd"), pool.meta("aux")
        err = pool.meta("error")
        queued = len(self.queue)
        for b in vector.tolist():
            if len(self.queue) >= self.limit:
                err[b] = self.error_code("queue_full")
                continue
            # the rule is read now: the table cannot change while this worker runs a vector
            owner = self.tables._owners.get(int(bd[b]))
            flow = owner[1].by_id(int(aux[b])) if owner else None
            cookie = flow.rule.cookie if flow else 0xffffffffffffffff
            table_miss = bool(flow) and flow.is_table_miss
            self.queue.append((int(bd[b]), int(rx[b]), pool.get_frame(b), cookie, table_miss,
                               int(tx[b]), flow.rule.table if flow else 0))
            err[b] = self.error_code("punted")
        pool.meta("next")[vector] = np.uint16(0)      # the buffer itself is done with
        if self.wake_fd >= 0 and len(self.queue) > queued:
            os.eventfd_write(self.wake_fd, 1)
