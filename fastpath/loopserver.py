"""A listening socket served from a graph's dispatch loop: the plumbing that the control
socket (fastpath.daemon.ControlServer) and the Prometheus exporter
(fastpath.metrics.MetricsServer) share.

Why in the loop and not in a thread: Control is not thread-safe and belongs to the
dispatch-loop thread, and a second Python thread would take the GIL from the dispatcher.
So everything is non-blocking: the listening socket and each client are registered with
graph.add_fd(), a client is read with one recv() per wakeup, replies that do not fit in
the socket buffer wait in the client's outbuf and are sent from a graph timer, and a
client that makes no progress for CLIENT_TIMEOUT seconds is dropped. At most MAX_CLIENTS
are connected. What a request is, and what to answer, is the subclass's: on_data(c) after
bytes arrive (c.eof once the peer closed its side) and on_tick(c) from the timer.
"""
import logging
import time

log = logging.getLogger("fastpath")


class Client:
    __slots__ = ("sock", "fd", "inbuf", "outbuf", "born", "last", "eof", "done", "polled")

    def __init__(self, sock, now):
        self.sock = sock
        self.fd = sock.fileno()
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.born = now
        self.last = now                # last progress: bytes read or written
        self.eof = False               # the client has sent everything
        self.done = False              # nothing more to read: close once outbuf is sent
        self.polled = True             # its fd is in the dispatch loop's poll set


class LoopServer:
    MAX_CLIENTS = 64
    CLIENT_TIMEOUT = 10.0              # seconds without progress before a client is dropped
    TIMER = 0.1
    what = "server"                    # for the log

    def __init__(self, graph):
        self.graph = graph
        self.sock = None
        self.clients = {}              # fd -> Client

    def serve(self, sock, backlog):
        """Listen on a bound socket from the dispatch loop."""
        sock.listen(backlog)
        sock.setblocking(False)
        self.sock = sock
        self.graph.add_fd(sock.fileno(), self._accept)
        self.graph.add_timer(self.TIMER, self._timer)

    def close(self):
        for c in list(self.clients.values()):
            self.drop(c)
        if self.sock is not None:
            self.graph.remove_fd(self.sock.fileno())
            self.sock.close()
            self.sock = None

    # ---- what a subclass says ----

    def on_data(self, c):
        """Bytes arrived in c.inbuf (or c.eof was set)."""
        raise NotImplementedError

    def on_tick(self, c):
        """From the timer, before the idle check: send what waits."""
        self.flush(c)

    def on_timeout(self, c):
        """c made no progress for CLIENT_TIMEOUT (or is too old); it is dropped next."""

    def expired(self, c, now):
        return now - c.last > self.CLIENT_TIMEOUT

    def make_room(self):
        """MAX_CLIENTS are connected: drop one to let a new one in (True), or refuse it."""
        return False

    # ---- callbacks from the dispatch loop ----

    def _accept(self, _fd):
        for _ in range(16):
            if self.sock is None:
                return
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.warning("%s: accept: %s", self.what, e)
                return
            if len(self.clients) >= self.MAX_CLIENTS and not self.make_room():
                log.warning("%s: too many clients, refusing one", self.what)
                conn.close()
                continue
            conn.setblocking(False)
            c = Client(conn, time.monotonic())
            self.clients[c.fd] = c
            self.graph.add_fd(c.fd, self._readable)

    def _readable(self, fd):
        c = self.clients.get(fd)
        if c is None or c.eof or c.done:
            return
        try:
            data = c.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(c)
            return
        c.last = time.monotonic()
        if data:
            c.inbuf += data
        else:
            c.eof = True
        self.on_data(c)

    def _timer(self, _now):
        now = time.monotonic()
        for c in list(self.clients.values()):
            self.on_tick(c)
            if c.fd in self.clients and self.expired(c, now):
                self.on_timeout(c)
                log.debug("%s: dropping a client that made no progress", self.what)
                self.drop(c)

    # ---- for subclasses ----

    def flush(self, c):
        """Send what the socket takes; a client that is done and sent is closed."""
        while c.outbuf:
            try:
                n = c.sock.send(c.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.drop(c)
                return
            del c.outbuf[:n]
            c.last = time.monotonic()
        if c.done:
            self.drop(c)

    def poll_reads(self, c, want):
        """Read from c only when we want more from it (backpressure, or nothing to read)."""
        if want != c.polled:
            c.polled = want
            if want:
                self.graph.add_fd(c.fd, self._readable)
            else:
                self.graph.remove_fd(c.fd)

    def drop(self, c):
        if self.clients.pop(c.fd, None) is None:
            return
        if c.polled:
            self.graph.remove_fd(c.fd)
        try:
            c.sock.close()
        except OSError:
            pass
