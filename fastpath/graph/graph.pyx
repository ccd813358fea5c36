"""Graph: named nodes, named arcs, and the dispatcher that runs vectors to completion.

Each node owns an input queue big enough for every buffer of the pool (a buffer is in at
most one queue, so queues never overflow). After a node processes a vector, the
dispatcher reads pool.next[b] for each buffer and appends b to the queue of the node that
arc leads to -- VPP's vlib_buffer_enqueue_to_next. Queues are drained in chunks of
VECTOR_SIZE, so each node call amortizes its Python-level cost over a whole vector.

run_once() polls every input node once and runs everything to completion; run() loops,
busy-polling while there is traffic and sleeping on the inputs' file descriptors (and
the control plane's) when there is none.
"""
import select
import threading
import time

import numpy as np
from cpython.ref cimport PyObject
from libc.stdint cimport uint16_t, uint32_t, uint64_t
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memcpy
from posix.time cimport timespec, nanosleep
from fastpath.graph.clock cimport now_ns

cdef extern from "<sched.h>" nogil:
    int sched_yield()

from fastpath.graph.buffer cimport BufferPool, VECTOR_SIZE
from fastpath.graph.node cimport Node, ARC_DROP
from fastpath.graph.trace import Tracer


cdef extern from "<poll.h>" nogil:
    cdef struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN

cdef enum:
    MAX_POLL_FDS = 64      # inputs a worker sleeps on when idle (more: it wakes on its timeout)
    CONTROL_INTERVAL_NS = 1000000   # a busy dispatch loop serves control this often

cdef extern from *:
    """
    static inline int fp_load(int *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
    static inline void fp_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
    static inline void fp_pause(void) { __builtin_ia32_pause(); }
    """
    int fp_load(int *p) nogil
    void fp_store(int *p, int v) nogil
    void fp_pause() nogil


cdef class Barrier:
    """VPP's worker barrier: the control thread stops every worker between two vectors,
    changes tables and graphs, and lets them go. A worker is "inside" only while it runs
    run_once(); a worker asleep in poll() or parked does not delay the barrier.

    Re-entrant on the control side (hold() nests), so configuration code can take it
    without knowing whether its caller already did. With no worker threads it costs a
    counter increment."""
    cdef int request
    cdef int *inside                      # per worker: 1 while in run_once()
    cdef readonly int n_workers
    cdef readonly int depth
    cdef readonly uint64_t holds          # times the workers were stopped
    cdef readonly uint64_t wait_ns        # total time spent waiting for them
    cdef readonly object owner            # the control thread: the one that may hold it

    def __cinit__(self, int n_workers=1):
        self.n_workers = n_workers
        self.owner = threading.get_ident()
        self.inside = <int *> malloc(max(1, n_workers) * sizeof(int))
        if self.inside == NULL:
            raise MemoryError()
        for k in range(max(1, n_workers)):
            self.inside[k] = 0

    def __dealloc__(self):
        free(self.inside)

    cdef inline bint enter(self, int w) noexcept nogil:
        """Worker side: 1 if the worker may run a loop now (call leave() after it)."""
        fp_store(&self.inside[w], 1)
        if fp_load(&self.request):
            fp_store(&self.inside[w], 0)
            while fp_load(&self.request):
                fp_pause()
            return False
        return True

    cdef inline void leave(self, int w) noexcept nogil:
        fp_store(&self.inside[w], 0)

    def hold(self):
        """Control side: stop the workers (waiting, without the GIL, for each to finish its
        current loop). Pair with release()."""
        cdef int k
        cdef uint64_t t0
        if self.n_workers > 1 and threading.get_ident() != self.owner:
            # a worker holding it would wait for itself
            raise RuntimeError("only the control thread may hold the worker barrier")
        self.depth += 1
        if self.depth > 1:
            return
        fp_store(&self.request, 1)
        t0 = now_ns()
        with nogil:
            for k in range(1, self.n_workers):       # worker 0 is the control thread itself
                while fp_load(&self.inside[k]):
                    fp_pause()
        self.wait_ns += now_ns() - t0
        self.holds += 1

    def release(self):
        if self.depth == 0:
            raise RuntimeError("barrier released more often than held")
        self.depth -= 1
        if self.depth == 0:
            fp_store(&self.request, 0)

    def __enter__(self):
        self.hold()
        return self

    def __exit__(self, *exc):
        self.release()
        return False




cdef class Graph:
    cdef readonly BufferPool pool
    cdef readonly list nodes
    cdef readonly dict by_name
    cdef readonly list error_names       # global error code -> (node, reason, text)
    cdef dict _error_bases               # (node name, its errors) -> first code, kept for re-adds
    cdef readonly object tracer
    cdef list _queues                    # numpy arrays backing the C queues
    cdef uint32_t **queue
    cdef uint32_t *qlen
    cdef int n_nodes
    cdef list inputs
    cdef public bint stopping
    cdef list _timers                    # [next_due, period, callback]
    cdef dict _fds                       # fd -> callback (control plane)
    cdef public double idle_sleep        # longest sleep when idle, seconds
    cdef public int idle_spins           # empty polls before sleeping (worker threads)
    cdef public double idle_spin_us      # run(): how long to poll on after the last frame
    cdef readonly object drop
    cdef readonly object error_counts    # global error code -> frames dropped for it
    cdef void **node_c                   # the nodes, borrowed (self._slots keeps them alive)
    cdef list _slots                     # node index -> node, None for a removed node's slot
    cdef list _free_slots                # indices of removed nodes, reused by add()
    cdef void **input_c
    cdef int n_inputs
    cdef readonly bint tracing           # a trace is on: every vector takes the slow path
    cdef public Barrier barrier          # set when this graph is one of several workers
    cdef pollfd pfds[MAX_POLL_FDS]       # the inputs' fds, for a worker thread's idle sleep
    cdef int n_pfds

    def __init__(self, BufferPool pool=None, uint32_t n_buffers=16384):
        self.pool = pool if pool is not None else BufferPool(n_buffers)
        self.nodes = []
        self._slots = []
        self._free_slots = []
        self.by_name = {}
        self.error_names = [("error-drop", "unknown", "unknown error")]
        self._error_bases = {}
        self.tracer = Tracer()
        self._queues = []
        self.queue = NULL
        self.qlen = NULL
        self.node_c = NULL
        self.input_c = NULL
        self.n_inputs = 0
        self.n_nodes = 0
        self.inputs = []
        self._timers = []
        self._fds = {}
        self.idle_sleep = 0.01
        self.idle_spins = 64
        self.idle_spin_us = 200.0
        self.barrier = None
        self.n_pfds = 0
        self.error_counts = np.zeros(65536, dtype=np.uint64)
        from fastpath.nodes.drop import ErrorDrop
        self.drop = self.add(ErrorDrop())

    def __dealloc__(self):
        free(self.queue)
        free(self.qlen)
        free(self.node_c)
        free(self.input_c)

    # ---- building ----

    def add(self, Node node):
        """Add a node; its arcs are resolved now and whenever a target appears later."""
        if node.name in self.by_name:
            raise ValueError(f"node {node.name!r} already in the graph")
        # a removed node's slot (its queue included) is reused, so that adding and
        # removing ports for ever does not grow the graph
        cdef int i = self.n_nodes
        if self._free_slots:
            i = self._free_slots[len(self._free_slots) - 1]      # (compiled without wraparound)
        # a node added again under the same name (a port deleted and re-added) gets its
        # old codes and counts back, as a VPP node's counters outlive its interfaces; so
        # churning ports does not use up the 16-bit code space
        key = (node.name, tuple(type(node).errors))
        base = self._error_bases.get(key)
        if base is None:
            base = len(self.error_names)
            if base + len(key[1]) > 0x10000:
                raise ValueError(f"too many error reasons: {base} codes in use, "
                                 f"{len(key[1])} more for {node.name!r}")
            for reason, text in key[1]:
                self.error_names.append((node.name, reason, text))
            self._error_bases[key] = base
        node._attach(self, i, base, self.error_counts)
        if i < self.n_nodes:
            self._free_slots.pop()
            self._slots[i] = node
        else:
            q = np.zeros(self.pool.n_buffers, dtype=np.uint32)
            self._queues.append(q)
            self.queue = <uint32_t **> realloc(self.queue, (i + 1) * sizeof(uint32_t *))
            self.qlen = <uint32_t *> realloc(self.qlen, (i + 1) * sizeof(uint32_t))
            self.node_c = <void **> realloc(self.node_c, (i + 1) * sizeof(void *))
            if self.queue == NULL or self.qlen == NULL or self.node_c == NULL:
                raise MemoryError()
            self.queue[i] = <uint32_t *> <size_t> q.ctypes.data
            self._slots.append(node)
            self.n_nodes += 1
        self.qlen[i] = 0
        self.node_c[i] = <void *> node
        self.nodes.append(node)
        self.by_name[node.name] = node
        if node.is_input:
            self.inputs.append(node)
            self._inputs_changed()
        for n in self.nodes:
            self._wire(n)
        return node

    def _inputs_changed(self):
        cdef int k
        self.input_c = <void **> realloc(self.input_c, (len(self.inputs) + 1) * sizeof(void *))
        if self.input_c == NULL:
            raise MemoryError()
        for k, node in enumerate(self.inputs):
            self.input_c[k] = <void *> node
        self.n_inputs = len(self.inputs)
        fds = [node.fileno() for node in self.inputs if hasattr(node, "fileno")]
        fds = [fd for fd in fds if fd >= 0][:MAX_POLL_FDS]
        for k, fd in enumerate(fds):
            self.pfds[k].fd = fd
            self.pfds[k].events = POLLIN
        self.n_pfds = len(fds)

    def remove(self, name):
        """Take a node out of service: its arcs and the arcs into it lead to error-drop,
        and its slot (queue included) is free for the next node added."""
        cdef Node node = self.by_name.pop(name)
        self.flush_node(node)
        if node in self.inputs:
            self.inputs.remove(node)
            self._inputs_changed()
        self.nodes.remove(node)
        for n in self.nodes:
            self._wire(n)
        # nothing leads to the slot any more: free it
        self.node_c[node.index] = NULL
        self._slots[node.index] = None
        self._free_slots.append(node.index)

    def _wire(self, Node node):
        for a, target in enumerate(node.next_names):
            t = self.by_name.get(target)
            node._set_arc(a, t.index if t is not None else self.drop.index)

    def __getitem__(self, name):
        return self.by_name[name]

    def __contains__(self, name):
        return name in self.by_name

    def flush_node(self, Node node):
        """Drop whatever waits in a node's queue (used when removing it)."""
        cdef int i = node.index
        if self.qlen[i]:
            self.pool.free(self.queue[i], self.qlen[i])
            self.qlen[i] = 0

    # ---- running ----

    def inject(self, name, vector):
        """Queue buffers for node `name` (tests, replay, punts from control)."""
        cdef Node node = self.by_name[name]
        cdef uint32_t[::1] v = np.ascontiguousarray(vector, dtype=np.uint32)
        cdef int k
        for k in range(v.shape[0]):
            self.queue[node.index][self.qlen[node.index]] = v[k]
            self.qlen[node.index] += 1

    cdef inline void enqueue(self, void *np, uint32_t *bufs, int n) noexcept nogil:
        cdef int k
        cdef uint32_t b, t
        cdef uint16_t a
        cdef uint16_t *nxt = self.pool.next
        cdef uint16_t first = nxt[bufs[0]]
        cdef uint16_t *arcs = (<Node> np).arcs
        cdef int n_arcs = (<Node> np).n_arcs
        # the common case: the whole vector leaves by one arc -- one copy, like VPP's
        # "fixed next" frames
        for k in range(1, n):
            if nxt[bufs[k]] != first:
                break
        else:
            t = arcs[first] if first < n_arcs else arcs[ARC_DROP]
            memcpy(self.queue[t] + self.qlen[t], bufs, n * sizeof(uint32_t))
            self.qlen[t] = self.qlen[t] + n
            return
        for k in range(n):
            b = bufs[k]
            a = nxt[b]
            t = arcs[a] if a < n_arcs else arcs[ARC_DROP]
            self.queue[t][self.qlen[t]] = b
            self.qlen[t] = self.qlen[t] + 1

    cdef void call_node(self, Node node, uint32_t *bufs, int n) except *:
        cdef uint64_t t0
        if node.capture is not None and node.is_sink:
            node.capture.write_buffers(self.pool, self._vector(bufs, n))
        t0 = now_ns()
        if node.is_python:
            node.process(self._vector(bufs, n))
        else:
            node.process_c(bufs, n)
        node.ns += now_ns() - t0
        node.calls += 1
        node.vectors += 1
        node.packets += n
        if self.tracer.active:
            self.trace_vector(node, bufs, n)
        if not node.is_sink:
            self.enqueue(<void *> node, bufs, n)
        if node.n_extra:
            if self.tracer.active:
                self.trace_vector(node, node.extra, node.n_extra)
            self.enqueue(<void *> node, node.extra, node.n_extra)
            node.n_extra = 0

    cdef void call_node_c(self, void *np, uint32_t *bufs, int n) noexcept nogil:
        """call_node for a Cython node with no capture and no trace: no Python at all."""
        cdef uint64_t t0 = now_ns()
        (<Node> np).process_c(bufs, n)
        (<Node> np).ns = (<Node> np).ns + (now_ns() - t0)
        (<Node> np).calls = (<Node> np).calls + 1
        (<Node> np).vectors = (<Node> np).vectors + 1
        (<Node> np).packets = (<Node> np).packets + n
        if not (<Node> np).is_sink:
            self.enqueue(np, bufs, n)
        if (<Node> np).n_extra:
            self.enqueue(np, (<Node> np).extra, (<Node> np).n_extra)
            (<Node> np).n_extra = 0

    cdef object _vector(self, uint32_t *bufs, int n):
        v = np.empty(n, dtype=np.uint32)
        cdef uint32_t[::1] w = v
        cdef int k
        for k in range(n):
            w[k] = bufs[k]
        return v

    cdef void trace_vector(self, Node node, uint32_t *bufs, int n) except *:
        cdef int k
        for k in range(n):
            if self.pool.trace[bufs[k]]:
                self.tracer.add(self.pool.trace[bufs[k]], node.name, node.format_trace(bufs[k]))

    cdef int poll_input(self, Node node) except -1:
        cdef uint32_t bufs[VECTOR_SIZE]
        cdef uint64_t t0 = now_ns()
        cdef int n, k
        if node.is_python:
            v = np.asarray(node.poll(VECTOR_SIZE), dtype=np.uint32)
            n = min(len(v), VECTOR_SIZE)
            for k in range(n):
                bufs[k] = v[k]
        else:
            n = node.poll_c(bufs, VECTOR_SIZE)
        node.calls += 1
        if n == 0:
            return 0
        node.ns += now_ns() - t0
        node.vectors += 1
        node.packets += n
        if node.trace_budget > 0:
            for k in range(min(n, node.trace_budget)):
                self.pool.trace[bufs[k]] = self.tracer.start(node.name, self.pool.get_frame(bufs[k]))
            node.trace_budget -= min(n, node.trace_budget)
        if node.capture is not None:
            node.capture.write_buffers(self.pool, self._vector(bufs, n))
        if self.tracer.active:
            self.trace_vector(node, bufs, n)
        self.enqueue(<void *> node, bufs, n)
        return n

    cdef int poll_input_c(self, void *np) noexcept nogil:
        """poll_input for a Cython input with no capture and no trace."""
        cdef uint32_t bufs[VECTOR_SIZE]
        cdef uint64_t t0 = now_ns()
        cdef int n = (<Node> np).poll_c(bufs, VECTOR_SIZE)
        (<Node> np).calls = (<Node> np).calls + 1
        if n == 0:
            return 0
        (<Node> np).ns = (<Node> np).ns + (now_ns() - t0)
        (<Node> np).vectors = (<Node> np).vectors + 1
        (<Node> np).packets = (<Node> np).packets + n
        self.enqueue(np, bufs, n)
        return n

    cdef int drain(self) except -1 nogil:
        """Run every queued vector to completion. Cython nodes run without the GIL; it is
        taken only for Python nodes, captures and traces."""
        cdef bint again = True
        cdef int i, head, n, total = 0
        cdef uint32_t count
        cdef void *np
        while again:
            again = False
            for i in range(self.n_nodes):
                count = self.qlen[i]
                if count == 0:
                    continue
                again = True
                np = self.node_c[i]
                self.qlen[i] = 0
                head = 0
                while head < <int> count:
                    n = min(<int> count - head, VECTOR_SIZE)
                    if (<Node> np).is_python or (<Node> np).has_capture or self.tracing:
                        with gil:
                            self.call_node(<Node> np, self.queue[i] + head, n)
                    else:
                        self.call_node_c(np, self.queue[i] + head, n)
                    head += n
                total += count
        return total

    cdef int run_once_c(self) except -1 nogil:
        cdef int k, got = 0
        cdef void *np
        for k in range(self.n_inputs):
            np = self.input_c[k]
            if ((<Node> np).is_python or (<Node> np).has_capture or (<Node> np).trace_budget > 0
                    or self.tracing):
                with gil:
                    got += self.poll_input(<Node> np)
            else:
                got += self.poll_input_c(np)
        self.drain()
        return got

    def drain_queued(self):
        """Run what the control plane queued (inject) to completion now, as the dispatch
        loop would on its next round: an OpenFlow BARRIER's reply follows the frames of
        the PACKET_OUTs before it. Call it from the thread that runs this graph."""
        cdef int n
        with nogil:
            n = self.drain()
        return n

    def run_once(self):
        """Poll each input once and run every queued vector to completion, without the
        GIL where no Python is involved. Returns how many frames the inputs produced."""
        cdef int got
        with nogil:
            got = self.run_once_c()
        return got

    def run_until_idle(self, int max_loops=1000000):
        """run_once() until the inputs have nothing more (in-memory graphs, tests)."""
        cdef int loops = 0
        total = 0
        while loops < max_loops:
            got = self.run_once()
            total += got
            loops += 1
            if got == 0:
                break
        return total

    def add_timer(self, double period, callback):
        """Call callback(now) every `period` seconds from the dispatch loop (aging, stats)."""
        self._timers.append([time.monotonic() + period, period, callback])

    def add_fd(self, int fd, callback):
        """Wake the idle loop when fd is readable and call callback(fd) (control sockets)."""
        self._fds[fd] = callback

    def remove_fd(self, int fd):
        self._fds.pop(fd, None)

    def _run_timers(self, now):
        due = 0.0
        for t in self._timers:
            if now >= t[0]:
                t[0] = now + t[1]
                if self.barrier is None:
                    t[2](now)
                else:
                    with self.barrier:      # control code: the workers wait between vectors
                        t[2](now)
            due = t[0] if due == 0.0 else min(due, t[0])
        return due

    def run_worker(self, Barrier barrier not None, int w):
        """A worker thread's dispatch loop (worker w > 0): run_once() without the GIL while
        there is traffic, sleep in poll() on the inputs when there is none, and stop between
        two loops whenever the control thread holds the barrier."""
        cdef int got = 0, empty = 0, k, n
        cdef bint entered = False
        cdef pollfd local[MAX_POLL_FDS]
        cdef timespec ts
        cdef int sleep_ms = max(1, <int> (self.idle_sleep * 1000))
        self.stopping = False
        try:
            with nogil:
                while not self.stopping:
                    if not barrier.enter(w):
                        continue
                    entered = True
                    got = self.run_once_c()
                    if got:
                        empty = 0
                        entered = False
                        barrier.leave(w)
                        continue
                    empty += 1
                    # copy the fds while the graph cannot change under us
                    n = self.n_pfds
                    for k in range(n):
                        local[k] = self.pfds[k]
                    entered = False
                    barrier.leave(w)
                    if empty < self.idle_spins:
                        continue
                    if n:
                        poll(local, n, sleep_ms)
                    else:
                        ts.tv_sec = 0
                        ts.tv_nsec = sleep_ms * 1000000
                        nanosleep(&ts, NULL)
        finally:
            if entered:
                barrier.leave(w)

    def run(self):
        """Dispatch until stop() is called: busy-poll while frames arrive and for
        idle_spin_us after the last one (in C, without the GIL: the answer to a frame just
        sent, a ping's reply, is taken as it lands instead of after a wake-up), then sleep
        on the inputs' file descriptors so an idle switch uses no CPU. Timers and control
        fds are served once a millisecond while busy or spinning."""
        cdef int got
        cdef uint64_t serviced = now_ns(), last_frame = 0, t, until, spin_ns
        self.stopping = False
        poller = select.poll()
        registered = set()
        while not self.stopping:
            spin_ns = <uint64_t> (self.idle_spin_us * 1000)
            with nogil:
                got = self.run_once_c()
                if got == 0:
                    until = min(last_frame + spin_ns, serviced + CONTROL_INTERVAL_NS)
                    while got == 0 and not self.stopping and now_ns() < until:
                        # the CPU goes to anyone else who wants it (on a small machine: the
                        # very hosts whose frames this waits for), the poll goes on otherwise
                        sched_yield()
                        got = self.run_once_c()
            t = now_ns()
            if got:
                last_frame = t
                if t - serviced < CONTROL_INTERVAL_NS:
                    continue
            serviced = t
            now = time.monotonic()
            due = self._run_timers(now)
            if got or t - last_frame < spin_ns:
                self._ready_fds(poller, registered, 0)      # control only; no sleep
                continue
            timeout = self.idle_sleep
            if due:
                timeout = max(0.0, min(timeout, due - now))
            self._ready_fds(poller, registered, int(timeout * 1000))

    def _ready_fds(self, poller, registered, int timeout_ms):
        """poll() the inputs' and control fds; run control callbacks that are ready."""
        want = set(self._fds)
        for node in self.inputs:
            fd = node.fileno() if hasattr(node, "fileno") else -1
            if fd >= 0:
                want.add(fd)
        for fd in registered - want:
            poller.unregister(fd)
        for fd in want - registered:
            poller.register(fd, select.POLLIN)
        registered.clear()
        registered.update(want)
        if not want:
            if timeout_ms > 0:
                time.sleep(timeout_ms / 1000.0)
            return False
        ready = poller.poll(timeout_ms)
        for fd, ev in ready:
            cb = self._fds.get(fd)
            if cb is None:
                continue
            if self.barrier is None:
                cb(fd)
            else:
                with self.barrier:
                    cb(fd)
        return bool(ready)

    def stop(self):
        self.stopping = True

    # ---- observability ----

    def runtime(self):
        """Per-node counters, like VPP's `show runtime`."""
        rows = []
        for node in self.nodes:
            c = node.counters()
            if c["calls"] == 0:
                continue
            c["name"] = node.name
            c["state"] = "polling" if node.is_input else "active"
            c["vectors_per_call"] = c["packets"] / c["calls"] if c["calls"] else 0.0
            c["ns_per_packet"] = c["ns"] / c["packets"] if c["packets"] else 0.0
            rows.append(c)
        return rows

    def show_runtime(self):
        lines = [f"{'Name':<28}{'State':>10}{'Calls':>12}{'Vectors':>12}{'Packets':>14}"
                 f"{'ns/Packet':>12}{'Vectors/Call':>14}"]
        for r in self.runtime():
            lines.append(f"{r['name']:<28}{r['state']:>10}{r['calls']:>12}{r['vectors']:>12}"
                         f"{r['packets']:>14}{r['ns_per_packet']:>12.1f}{r['vectors_per_call']:>14.2f}")
        return "\n".join(lines)

    def errors(self):
        """[(count, node, reason, text)] for every error seen, like VPP's `show errors`."""
        counts = self.error_counts
        return [(int(counts[code]), *self.error_names[code])
                for code in range(len(self.error_names)) if counts[code]]

    def show_errors(self):
        lines = [f"{'Count':>12}  {'Node':<24}{'Reason'}"]
        for count, node, reason, text in self.errors():
            lines.append(f"{count:>12}  {node:<24}{text}")
        return "\n".join(lines)

    def clear_runtime(self):
        for node in self.nodes:
            node.clear_counters()

    def trace_add(self, input_name, int count):
        node = self.by_name.get(input_name)
        if node is None or not node.is_input:
            raise ValueError(f"no input node named {input_name!r}")
        node.trace_budget += count
        self.tracer.active = True
        self.tracing = True

    def trace_clear(self):
        for node in self.nodes:
            node.trace_budget = 0
        self.tracer.clear()
        self.tracing = False
