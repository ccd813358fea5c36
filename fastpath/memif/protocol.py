"""memif control channel: the socket on which a master and a slave set up the shared
memory and rings that the nodes in port.pyx run (VPP's src/plugins/memif/memif.h,
libmemif, DPDK's net_memif).

The wire: a SOCK_SEQPACKET Unix socket; every message is one 128-byte packet, a 16-bit
type and its body, little-endian and packed; ADD_REGION carries the region's memfd and
ADD_RING the ring's interrupt eventfd (SCM_RIGHTS). The slave owns the memory: it creates
the region, lays out the rings and their buffers; the master maps what it is given.

    master (listens)                         slave (connects)
      HELLO      name, versions, max region/ring index, max log2 ring size  -->
                 <--  INIT        version, interface id, mode, secret, name
      ACK        -->
                 <--  ADD_REGION  index, size              + memfd     (one per region)
      ACK        -->
                 <--  ADD_RING    S2M flag, index, region, offset,
                                  log2 size, private header size + eventfd (one per ring)
      ACK        -->
                 <--  CONNECT     interface name
      CONNECTED  interface name  -->
    either side, any time: DISCONNECT (code, reason), then close.

The slave sends its next message when the previous one is acknowledged, as VPP and
DPDK do. A master may serve several interfaces on one socket, told apart by the id in
INIT: ports of this process with the same socket path share one MemifListener.

MemifPort is one port's side of it, in either role:
- master (options:memif-role=master, the default, as VPP's): listens on
  options:memif-socket, maps the slave's region, runs the rings it was given;
- slave: connects to the socket (and again every `reconnect` seconds while it cannot, or
  after the master left), creates one region -- both rings, then 2 * 2**ring-size
  buffers of buffer-size bytes -- and offers it.
Everything is driven from the dispatch loop (graph.add_fd / add_timer) and never blocks.

We offer one ring each way (HELLO: max ring index 0, as a slave we add one of each),
Ethernet mode only, no secret. What a peer can get wrong, and what happens: a packet
that is not one 128-byte message, an unknown or unexpected message, a bad version, id,
mode, region (no memfd, a file that cannot be sealed against shrinking or is shorter
than the region, a duplicate or out-of-order index), ring (outside its region, wrong cookie, bigger than offered, no eventfd), a
handshake that does not finish within HANDSHAKE_TIMEOUT, or a ring index moved
impossibly while running: counted, answered with DISCONNECT and a reason, the
connection closed and the rings and memory dropped. A master port then waits for the
next slave; a slave port reconnects.
"""
import array
import collections
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import time
import weakref

from fastpath.memif.ring import MemifRegions, MemifRing, ERRORS, MAX_REGION_SIZE

log = logging.getLogger("fastpath.memif")

# ---- the wire format

MSG_SIZE = 128
VERSION = 0x0200                 # 2.0: MEMIF_VERSION_MAJOR << 8 | MEMIF_VERSION_MINOR
COOKIE = 0x3E31F20
NAME_SIZE = 32
SECRET_SIZE = 24
REASON_SIZE = 96
MODE_ETHERNET = 0
ADD_RING_S2M = 1                 # MEMIF_MSG_ADD_RING_FLAG_S2M
MAX_REGIONS = 16
MAX_LOG2_RING_SIZE = 14
MAX_FDS = 4                      # ancillary room per message; a message carries at most one

ACK, HELLO, INIT, ADD_REGION, ADD_RING, CONNECT, CONNECTED, DISCONNECT = range(1, 9)
MESSAGES = {ACK: "ACK", HELLO: "HELLO", INIT: "INIT", ADD_REGION: "ADD_REGION",
            ADD_RING: "ADD_RING", CONNECT: "CONNECT", CONNECTED: "CONNECTED",
            DISCONNECT: "DISCONNECT"}

Hello = collections.namedtuple("Hello", "name min_version max_version max_region max_m2s_ring "
                                        "max_s2m_ring max_log2_ring_size")
Init = collections.namedtuple("Init", "version id mode secret name")
AddRegion = collections.namedtuple("AddRegion", "index size")
AddRing = collections.namedtuple("AddRing", "flags index region offset log2_ring_size private_hdr_size")
Connect = collections.namedtuple("Connect", "if_name")
Connected = collections.namedtuple("Connected", "if_name")
Disconnect = collections.namedtuple("Disconnect", "code reason")

_BODY = {
    ACK: (struct.Struct("<H"), None),
    HELLO: (struct.Struct("<H32sHHHHHB"), Hello),
    INIT: (struct.Struct("<HHIB24s32s"), Init),
    ADD_REGION: (struct.Struct("<HHQ"), AddRegion),
    ADD_RING: (struct.Struct("<HHHHIBH"), AddRing),
    CONNECT: (struct.Struct("<H32s"), Connect),
    CONNECTED: (struct.Struct("<H32s"), Connected),
    DISCONNECT: (struct.Struct("<HI96s"), Disconnect),
}
_TEXT_FIELDS = {"name", "if_name", "reason"}


class ProtocolError(Exception):
    """The peer broke the protocol: tell it why (DISCONNECT) and close the connection."""


def _cstr(b):
    return b.split(b"\0", 1)[0].decode("utf-8", "replace")


def _fixed(text, size):
    b = text.encode() if isinstance(text, str) else bytes(text)
    return b[:size - 1] if len(b) >= size else b


def encode(kind, *fields):
    """One 128-byte message of type `kind` (ACK, HELLO, ...) with its body fields in
    memif.h order; names and the reason are str or bytes (cut to fit, NUL-terminated)."""
    st, tup = _BODY[kind]
    if tup is not None:
        fields = [_fixed(v, {"reason": REASON_SIZE, "secret": SECRET_SIZE}.get(f, NAME_SIZE))
                  if f in _TEXT_FIELDS or f == "secret" else v for f, v in zip(tup._fields, fields)]
    return st.pack(kind, *fields).ljust(MSG_SIZE, b"\0")


def decode(data):
    """(kind, body namedtuple or None) of one message; ProtocolError if it is not one."""
    if len(data) != MSG_SIZE:
        raise ProtocolError(f"message of {len(data)} bytes (memif messages are {MSG_SIZE})")
    kind = struct.unpack_from("<H", data)[0]
    if kind not in _BODY:
        raise ProtocolError(f"unknown message type {kind}")
    st, tup = _BODY[kind]
    if tup is None:
        return kind, None
    values = st.unpack_from(data)[1:]
    return kind, tup(*(_cstr(v) if f in _TEXT_FIELDS else v for f, v in zip(tup._fields, values)))


def hello(name, max_region=MAX_REGIONS - 1, max_m2s_ring=0, max_s2m_ring=0,
          max_log2_ring_size=MAX_LOG2_RING_SIZE, min_version=VERSION, max_version=VERSION):
    return encode(HELLO, name, min_version, max_version, max_region, max_m2s_ring, max_s2m_ring,
                  max_log2_ring_size)


def init(id, name, mode=MODE_ETHERNET, secret=b"", version=VERSION):
    return encode(INIT, version, id, mode, secret, name)


def add_region(index, size):
    return encode(ADD_REGION, index, size)


def add_ring(index, region, offset, log2_ring_size, s2m, private_hdr_size=0):
    return encode(ADD_RING, ADD_RING_S2M if s2m else 0, index, region, offset, log2_ring_size,
                  private_hdr_size)


def disconnect(reason, code=0):
    return encode(DISCONNECT, code, reason)


def send_msg(sock, msg, fd=-1):
    """Send one message, with fd (SCM_RIGHTS) when it is >= 0."""
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))] if fd >= 0 else []
    if sock.sendmsg([msg], anc) != len(msg):
        raise OSError(errno.EMSGSIZE, "message sent in part")


def recv_msg(sock):
    """(bytes, [fds]) of the next message. BlockingIOError when there is none yet,
    ConnectionResetError when the peer closed, ProtocolError when the packet is not one
    message (its descriptors are closed)."""
    data, anc, flags, _ = sock.recvmsg(MSG_SIZE + 1, socket.CMSG_SPACE(MAX_FDS * 4),
                                       socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(cdata[:len(cdata) - len(cdata) % a.itemsize])
            fds.extend(a)
    if not data and not fds:
        raise ConnectionResetError("peer closed the connection")
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) or len(data) != MSG_SIZE or len(fds) > 1:
        for fd in fds:
            os.close(fd)
        raise ProtocolError(f"packet of {len(data)}{'+' if flags & socket.MSG_TRUNC else ''} bytes "
                            f"with {len(fds)}{'+' if flags & socket.MSG_CTRUNC else ''} descriptors "
                            f"is not one memif message")
    return data, fds


def sockaddr(path):
    """A socket path, '@name' meaning Linux's abstract namespace (as libmemif)."""
    return "\0" + path[1:] if path.startswith("@") else path


def is_eventfd(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False


def seal_shrink(fd):
    """Make the peer unable to shrink the file under our mapping (access past its end
    would fault). True when sealed so; False for files that cannot be sealed."""
    try:
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK:
            return True
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        return True
    except OSError:
        return False


def ring_bytes(log2_ring_size):
    return 128 + 16 * (1 << log2_ring_size)


def slave_layout(log2_ring_size, buffer_size):
    """Where a slave puts things in its one region: (s2m ring, m2s ring, s2m buffers,
    m2s buffers, region size). Rings first, each on a 64-byte line, then the buffers,
    page-aligned."""
    rb = (ring_bytes(log2_ring_size) + 63) & ~63
    bufs = (2 * rb + 4095) & ~4095
    per_ring = (1 << log2_ring_size) * buffer_size
    return 0, rb, bufs, bufs + per_ring, (bufs + 2 * per_ring + 4095) & ~4095


# ---- the control channel

HANDSHAKE_TIMEOUT = 5.0          # seconds from connect to CONNECTED
MESSAGES_PER_CALL = 32
MAX_PENDING = 16                 # accepted connections that have not said INIT yet
EFD_NONBLOCK = 0o4000
EFD_CLOEXEC = 0o2000000

COUNTERS = ("connects", "disconnects", "messages", "protocol_errors", "rejected_connections",
            "ring_failures", "handshake_timeouts")


class MemifConnection:
    """One peer on one socket. As the master it waits for INIT (and is then bound to the
    port the id names), regions, rings and CONNECT; as the slave for HELLO, then an ACK
    for each of its messages, then CONNECTED. Never blocks."""

    def __init__(self, sock, master, port=None, listener=None):
        self.sock = sock
        sock.setblocking(False)
        self._fd = sock.fileno()
        self.master = master
        self.port = port
        self.listener = listener
        self.state = "init" if master else "hello"     # what we wait for
        self.queue = []                                # slave: (message, fd) to send on ACK
        self.deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        self.closed = False

    def fileno(self):
        return self._fd

    @property
    def connected(self):
        return self.state == "connected"

    def send(self, msg, fd=-1):
        try:
            send_msg(self.sock, msg, fd)
        except BlockingIOError:
            raise OSError(errno.EAGAIN, "the peer does not read its messages") from None

    def count(self, what, n=1):
        (self.port or self.listener).count(what, n)

    def complain(self, reason):
        """A warning for the first few failures per minute of a port (or socket); debug
        messages after that, so a peer reconnecting in a loop cannot flood the log."""
        owner = self.port or self.listener
        now = time.monotonic()
        if now - owner.complaints[0] > 60:
            owner.complaints[:] = [now, 0]
        owner.complaints[1] += 1
        log.log(logging.WARNING if owner.complaints[1] <= 10 else logging.DEBUG,
                "memif %s: %s", self.owner_name, reason)

    # ---- reading

    def on_readable(self, fd=None):
        """Read and handle what the peer sent (graph.add_fd callback)."""
        for _ in range(MESSAGES_PER_CALL):
            if self.closed:
                return
            try:
                data, fds = recv_msg(self.sock)
            except BlockingIOError:
                return
            except ProtocolError as e:
                self.fail(str(e))
                return
            except OSError as e:
                self.gone(str(e) or type(e).__name__)
                return
            try:
                self.handle(data, fds)
            except ProtocolError as e:
                self.fail(str(e))
            except OSError as e:                 # a reply could not be sent
                self.gone(str(e) or type(e).__name__)
            except Exception as e:               # a bug here must cost this port, not the switch
                log.exception("memif %s: message handling failed", self.owner_name)
                self.fail(f"internal error: {e!r}"[:REASON_SIZE - 1])
            finally:
                for d in fds:
                    os.close(d)

    @property
    def owner_name(self):
        return self.port.name if self.port is not None else self.listener.path

    def handle(self, data, fds):
        kind, body = decode(data)
        self.count("messages")
        name = MESSAGES[kind]
        log.debug("memif %s: %s %s, %d fds", self.owner_name, name, body, len(fds))
        if kind == DISCONNECT:
            self.gone(f"peer disconnected: {body.reason or body.code}")
            return
        handler = self.HANDLERS.get((self.master, self.state, kind))
        if handler is None:
            raise ProtocolError(f"unexpected {name}" + ("" if self.state == "connected" else
                                                       f" while waiting for {self.state.upper()}"))
        handler(self, body, fds)

    # ---- master

    def on_init(self, m, fds):
        if m.version != VERSION:
            raise ProtocolError(f"incompatible memif version {m.version >> 8}.{m.version & 0xff}")
        self.port = self.listener.bind(self, m.id)      # ProtocolError: no such id, busy
        if m.mode != MODE_ETHERNET:
            raise ProtocolError("only ethernet mode supported")
        self.port.peer_init(self, m)
        self.send(encode(ACK))
        self.state = "setup"

    def on_add_region(self, m, fds):
        self.port.add_region(m, fds)
        self.send(encode(ACK))

    def on_add_ring(self, m, fds):
        self.port.add_ring(m, fds)
        self.send(encode(ACK))

    def on_connect(self, m, fds):
        self.port.connect_master(self, m)
        self.send(encode(CONNECTED, self.port.name))
        self.state = "connected"

    # ---- slave

    def on_hello(self, m, fds):
        self.queue = self.port.setup_slave(self, m)
        self._send_next()

    def on_ack(self, m, fds):
        self._send_next()

    def _send_next(self):
        msg, fd = self.queue.pop(0)
        self.send(msg, fd)
        self.state = "connected_msg" if msg[0] == CONNECT else "ack"

    def on_connected(self, m, fds):
        self.port.start_slave(self, m)
        self.state = "connected"

    HANDLERS = {
        (True, "init", INIT): on_init,
        (True, "setup", ADD_REGION): on_add_region,
        (True, "setup", ADD_RING): on_add_ring,
        (True, "setup", CONNECT): on_connect,
        (False, "hello", HELLO): on_hello,
        (False, "ack", ACK): on_ack,
        (False, "connected_msg", CONNECTED): on_connected,
    }

    # ---- ending

    def fail(self, reason):
        """We end it: count, say why, close."""
        self.count("protocol_errors")
        self.complain(reason)
        if not self.closed:
            try:
                self.send(disconnect(reason[:REASON_SIZE - 1]))
            except OSError:
                pass
        self.gone(reason)

    def gone(self, reason):
        """It is over (either side): close and let the owner forget it."""
        if self.port is not None:
            self.port.disconnected(self, reason)
        else:
            self.listener.forget(self, reason)

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()


class MemifListener:
    """The master side of one socket path: accepts slaves and hands each to the port its
    INIT names. Ports of this process on one path share it; the last one closes it."""

    _by_path = {}

    def __init__(self, path):
        self.path = path
        self.ports = {}                  # interface id -> MemifPort
        self.pending = set()             # connections that have not said INIT yet
        self.graph = None
        self.sock = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.complaints = [0.0, 0]       # [since, how many]: warnings in this minute

    @classmethod
    def for_port(cls, port):
        """The listener on port.path (opened now if new), with port registered on it."""
        lst = cls._by_path.get(port.path)
        if lst is None:
            lst = cls(port.path)
            lst.open()
            cls._by_path[port.path] = lst
        if port.id in lst.ports:
            raise ValueError(f"memif id {port.id} on {port.path} is taken by port {lst.ports[port.id].name}")
        lst.ports[port.id] = port
        return lst

    def open(self):
        """Listen (a stale socket left by a dead process is replaced; anything else there
        is an error)."""
        if not self.path.startswith("@"):
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISSOCK(st.st_mode):
                    raise OSError(errno.EEXIST, f"{self.path} exists and is not a socket")
                probe = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
                try:
                    probe.connect(self.path)
                except OSError:
                    os.unlink(self.path)          # nobody listens there any more
                else:
                    raise OSError(errno.EADDRINUSE, f"{self.path} is in use")
                finally:
                    probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            s.bind(sockaddr(self.path))
            s.listen(8)
        except BaseException:
            s.close()
            raise
        self.sock = s

    def attach(self, graph):
        if self.graph is graph:
            return
        if self.graph is not None:
            raise ValueError(f"{self.path} is served by another switch")
        self.graph = graph
        graph.add_fd(self.sock.fileno(), self._on_accept)
        ref = weakref.ref(self)
        graph.add_timer(0.25, lambda now: (lst := ref()) is not None and lst._tick(now))

    def release(self, port):
        """port is gone; the last one closes the socket and removes its path."""
        if self.ports.get(port.id) is port:
            del self.ports[port.id]
        if self.ports or self.sock is None:
            return
        for conn in list(self.pending):
            self.forget(conn, "closing")
        if self.graph is not None:
            self.graph.remove_fd(self.sock.fileno())
        if not self.path.startswith("@"):
            try:
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass
        self.sock.close()
        self.sock = None
        if MemifListener._by_path.get(self.path) is self:
            del MemifListener._by_path[self.path]

    def count(self, what, n=1):
        self.counters[what] += n

    def _on_accept(self, fd):
        try:
            s, _ = self.sock.accept()
        except OSError:
            return
        if len(self.pending) >= MAX_PENDING:
            self.count("rejected_connections")
            s.close()
            return
        conn = MemifConnection(s, master=True, listener=self)
        try:
            conn.send(hello("fastpath"))
        except OSError:
            conn.close()
            return
        self.pending.add(conn)
        self.graph.add_fd(conn.fileno(), conn.on_readable)

    def bind(self, conn, id):
        """INIT named interface `id`: the port, which now owns the connection."""
        port = self.ports.get(id)
        if port is None:
            raise ProtocolError("ID not found")
        if port.conn is not None:
            port.count("rejected_connections")
            raise ProtocolError("Already connected")
        self.pending.discard(conn)
        port.conn = conn
        return port

    def forget(self, conn, reason):
        self.pending.discard(conn)
        if self.graph is not None:
            self.graph.remove_fd(conn.fileno())
        conn.close()
        log.debug("memif %s: connection closed before INIT (%s)", self.path, reason)

    def _tick(self, now):
        for conn in list(self.pending):
            if now > conn.deadline:
                self.count("handshake_timeouts")
                conn.fail("handshake timeout")


class MemifPort:
    """The memif interface of one port: its role, its rings and memory, its connection."""

    def __init__(self, name, path, role="master", id=0, ring_size=None, buffer_size=2048,
                 reconnect=1.0):
        if role not in ("master", "slave"):
            raise ValueError(f"memif role {role!r} (master or slave)")
        if not 0 <= id <= 0xffffffff:
            raise ValueError(f"memif id {id} (0..4294967295)")
        if ring_size is not None and not 1 <= ring_size <= MAX_LOG2_RING_SIZE:
            raise ValueError(f"memif ring size 2**{ring_size} (2**1..2**{MAX_LOG2_RING_SIZE})")
        if not 64 <= buffer_size <= 16384:
            raise ValueError(f"memif buffer size {buffer_size} (64..16384)")
        self.name = name
        self.path = os.fspath(path)
        self.role = role
        self.master = role == "master"
        self.id = id
        # as the master: the largest ring we accept (HELLO); as the slave: the ring we make
        self.ring_size = ring_size if ring_size is not None else (MAX_LOG2_RING_SIZE if self.master else 10)
        self.buffer_size = buffer_size
        self.reconnect = float(reconnect)
        self.regions = MemifRegions()
        slave = not self.master
        self.s2m = MemifRing(self.regions, True, slave)
        self.m2s = MemifRing(self.regions, False, slave)
        self.rx_ring = self.m2s if slave else self.s2m
        self.tx_ring = self.s2m if slave else self.m2s
        self.fail_fd = os.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
        for r in (self.s2m, self.m2s):
            r.set_fail_fd(self.fail_fd)
        self.graph = None
        self.listener = None
        self.conn = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.complaints = [0.0, 0]
        self.last_error = ""
        self.remote_name = ""
        self.remote_if_name = ""
        self._pending_rings = {}          # master: s2m -> (AddRing, eventfd) until CONNECT
        self._memfd = -1                  # slave: our region's file, until disconnect
        self._next_try = 0.0
        self._closed = False

    @classmethod
    def from_options(cls, name, options):
        """options:memif-socket=PATH (required), memif-role=master|slave, memif-id=N,
        memif-ring-size=LOG2, memif-buffer-size=BYTES."""
        path = options.get("memif-socket")
        if not path:
            raise ValueError("a memif port needs options:memif-socket=PATH")
        ring = options.get("memif-ring-size")
        return cls(name, path, role=options.get("memif-role", "master"),
                   id=int(options.get("memif-id", 0)),
                   ring_size=int(ring) if ring is not None else None,
                   buffer_size=int(options.get("memif-buffer-size", 2048)))

    # ---- the socket

    def open(self):
        """Master: listen on the path (or join this process's listener there)."""
        if self.master:
            self.listener = MemifListener.for_port(self)

    def attach(self, graph):
        """Start serving from graph's dispatch loop."""
        self.graph = graph
        graph.add_fd(self.fail_fd, self._on_ring_failure)
        ref = weakref.ref(self)
        graph.add_timer(min(self.reconnect, 0.25), lambda now: (p := ref()) is not None and p._tick(now))
        if self.master:
            self.listener.attach(graph)
        else:
            self._try_connect()

    def _try_connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            s.connect(sockaddr(self.path))
        except OSError as e:
            s.close()
            self.last_error = f"connect {self.path}: {e.strerror or e}"
            self._next_try = time.monotonic() + self.reconnect
            return False
        self.conn = MemifConnection(s, master=False, port=self)
        self.graph.add_fd(self.conn.fileno(), self.conn.on_readable)
        return True

    def _tick(self, now):
        if self._closed:
            return
        if self.conn is not None and not self.conn.connected and now > self.conn.deadline:
            self.count("handshake_timeouts")
            self.conn.fail("handshake timeout")
        if not self.master and self.conn is None and now >= self._next_try:
            self._try_connect()

    def _on_ring_failure(self, fd):
        try:
            os.eventfd_read(self.fail_fd)
        except BlockingIOError:
            pass
        broken = [r for r in (self.s2m, self.m2s) if r.broken]
        if broken and self.conn is not None:
            self.count("ring_failures")
            r = broken[0]
            self.conn.fail(f"{'s2m' if r.s2m else 'm2s'} ring: {ERRORS[r.broken_code][1]}")

    def disconnected(self, conn, why):
        """The peer left or broke the protocol: drop it, its rings and its memory."""
        if conn is not self.conn:
            conn.close()
            return
        was_up = conn.connected
        if self.graph is not None:
            self.graph.remove_fd(conn.fileno())
        conn.close()
        self.conn = None
        if was_up:
            self.count("disconnects")
        self.last_error = why
        self.reset()
        self._next_try = time.monotonic() + self.reconnect
        log.info("memif %s: %s (%s)", self.name, "disconnected" if was_up else "connection closed", why)

    def close(self):
        """Tear down: say goodbye to the peer, stop listening (the last port on the path
        removes it), free everything."""
        if self._closed:
            return
        self._closed = True
        if self.conn is not None:
            try:
                self.conn.send(disconnect("interface deleted"))
            except OSError:
                pass
            self.disconnected(self.conn, "interface deleted")
        if self.listener is not None:
            self.listener.release(self)
        self.reset()
        for r in (self.s2m, self.m2s):
            r.set_fail_fd(-1)
        if self.graph is not None:
            self.graph.remove_fd(self.fail_fd)
        os.close(self.fail_fd)
        self.fail_fd = -1

    def reset(self):
        """Back to the state before any peer: rings stopped, memory unmapped."""
        for r in (self.s2m, self.m2s):
            r.detach()
        self.regions.clear()
        for _, fd in self._pending_rings.values():
            os.close(fd)
        self._pending_rings = {}
        if self._memfd >= 0:
            os.close(self._memfd)
            self._memfd = -1

    # ---- master: what the slave sets up (called by the connection)

    def peer_init(self, conn, m):
        self.remote_name = m.name
        self.remote_if_name = ""

    def add_region(self, m, fds):
        if len(fds) != 1:
            raise ProtocolError("Missing region fd")
        if m.index != self.regions.n or m.index >= MAX_REGIONS:
            raise ProtocolError(f"Invalid region index {m.index}")
        if not 0 < m.size <= MAX_REGION_SIZE:
            raise ProtocolError(f"Invalid region size {m.size}")
        fd = fds[0]
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProtocolError("region fd is not a memory file")
        # seal first, then look at the size: a sealed file cannot shrink after the look
        # (access past its end would kill the switch); VPP, DPDK and libmemif seal theirs
        if not seal_shrink(fd):
            raise ProtocolError("region file cannot be sealed against shrinking")
        st = os.fstat(fd)
        if st.st_size < m.size:
            raise ProtocolError(f"region file of {st.st_size} bytes is shorter than the region ({m.size})")
        page = os.sysconf("SC_PAGE_SIZE")
        align = st.st_blksize if st.st_blksize >= page and not st.st_blksize & (st.st_blksize - 1) else page
        try:
            self.regions.add(fd, m.size, align)       # the fd is closed after the handler
        except (ValueError, OSError) as e:
            raise ProtocolError(f"region {m.index}: {e}") from None

    def add_ring(self, m, fds):
        s2m = bool(m.flags & ADD_RING_S2M)
        if len(fds) != 1:
            raise ProtocolError("Missing interrupt fd")
        if m.index != 0:
            raise ProtocolError(f"Invalid ring index {m.index} (one ring each way)")
        if s2m in self._pending_rings:
            raise ProtocolError(f"{'s2m' if s2m else 'm2s'} ring added twice")
        if m.log2_ring_size > self.ring_size:
            raise ProtocolError(f"ring of 2**{m.log2_ring_size} slots (at most 2**{self.ring_size})")
        if not is_eventfd(fds[0]):
            raise ProtocolError("interrupt fd is not an eventfd")
        fd = fds.pop()
        os.set_blocking(fd, False)                    # the data path never waits on it
        self._pending_rings[s2m] = (m, fd)

    def connect_master(self, conn, m):
        for s2m, ring in ((True, self.s2m), (False, self.m2s)):
            if s2m not in self._pending_rings:
                raise ProtocolError(f"CONNECT without an {'s2m' if s2m else 'm2s'} ring")
        for s2m, ring in ((True, self.s2m), (False, self.m2s)):
            r, fd = self._pending_rings[s2m]
            try:
                ring.attach(r.region, r.offset, r.log2_ring_size, fd)
            except ValueError as e:
                raise ProtocolError(f"{'s2m' if s2m else 'm2s'} ring: {e}") from None
            del self._pending_rings[s2m]              # the ring owns the eventfd now
        self._up(m.if_name)

    # ---- slave: our side of the handshake

    def setup_slave(self, conn, h):
        """HELLO: make the region and rings; the messages that offer them (sent one per ACK)."""
        if h.min_version > VERSION or h.max_version < VERSION:
            raise ProtocolError("Incompatible memif version")
        log2 = min(self.ring_size, h.max_log2_ring_size)
        self.remote_name = h.name
        self.reset()
        s2m_off, m2s_off, s2m_bufs, m2s_bufs, size = slave_layout(log2, self.buffer_size)
        fd = os.memfd_create(f"fastpath-memif-{self.name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self._memfd = fd
        os.ftruncate(fd, size)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        self.regions.add(fd, size)
        efds = []
        for ring, off, bufs in ((self.s2m, s2m_off, s2m_bufs), (self.m2s, m2s_off, m2s_bufs)):
            efd = os.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)
            try:
                ring.attach(0, off, log2, efd, init=True, buffer_size=self.buffer_size,
                            buffer_offset=bufs)
            except BaseException:
                os.close(efd)
                raise
            efds.append(efd)
        return [(init(self.id, "fastpath"), -1),
                (add_region(0, size), fd),
                (add_ring(0, 0, s2m_off, log2, True), efds[0]),
                (add_ring(0, 0, m2s_off, log2, False), efds[1]),
                (encode(CONNECT, self.name), -1)]

    def start_slave(self, conn, m):
        self._up(m.if_name)

    def _up(self, if_name):
        for ring in (self.s2m, self.m2s):
            try:
                ring.start()
            except ValueError as e:
                raise ProtocolError(str(e)) from None
        self.remote_if_name = if_name
        self.count("connects")
        self.last_error = ""
        log.info("memif %s: connected to %s (%s) as %s", self.name, self.remote_if_name,
                 self.remote_name, self.role)

    # ---- observability

    def count(self, what, n=1):
        self.counters[what] += n

    @property
    def connected(self):
        return self.conn is not None and self.conn.connected

    def stats(self):
        """Numbers merged into the port's interface statistics."""
        s = {f"memif_{k}": v for k, v in self.counters.items()}
        s["memif_connected"] = int(self.connected)
        s["memif_interrupts"] = self.s2m.interrupts + self.m2s.interrupts
        s["memif_wakeups"] = self.s2m.wakeups + self.m2s.wakeups
        if self.listener is not None:
            s["memif_socket_protocol_errors"] = self.listener.counters["protocol_errors"]
            s["memif_socket_handshake_timeouts"] = self.listener.counters["handshake_timeouts"]
        return s

    def status(self):
        """The connection as set up, for people and tests."""
        return {"role": self.role, "path": self.path, "id": self.id, "connected": self.connected,
                "remote_name": self.remote_name, "remote_if_name": self.remote_if_name,
                "ring_size": self.ring_size, "buffer_size": self.buffer_size,
                "regions": self.regions.table(), "rings": [r.state() for r in (self.s2m, self.m2s)],
                "last_error": self.last_error}

    def __repr__(self):
        return f"<MemifPort {self.name} {self.role} {self.path} id {self.id}>"
