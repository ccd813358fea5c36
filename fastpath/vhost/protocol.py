"""vhost-user control channel: the socket through which a front end (QEMU, DPDK's
virtio_user) sets up a virtio-net device whose queues fastpath serves.

VhostUserPort is one port's device and socket:
- server mode (options:vhost-socket=PATH): fastpath listens on PATH, QEMU connects
  (`-chardev socket,path=PATH -netdev vhost-user,chardev=...`); one front end at a time;
- client mode (options:vhost-server-path=PATH, like Open vSwitch's dpdkvhostuserclient):
  QEMU listens (`-chardev socket,path=PATH,server=on`) and fastpath connects, and
  connects again every `reconnect` seconds while it cannot or after the front end left
  (QEMU restarted).
The device is the guest memory and two virtqueues (0: the guest's receive queue, 1: its
transmit queue) that the nodes in port.pyx run; everything here only sets them up.

VhostUserConnection speaks the protocol on one socket (QEMU's docs/interop/vhost-user.rst):
a 12-byte header (request, flags, size), a payload, and file descriptors by SCM_RIGHTS.
It is driven from the dispatch loop (graph.add_fd): on_readable() reads what is there
without blocking -- a message may arrive in pieces -- and handles at most
MESSAGES_PER_CALL messages, so a chatty front end cannot starve the data path.

Features offered: VERSION_1, EVENT_IDX, INDIRECT_DESC, MRG_RXBUF and the offloads CSUM,
GUEST_CSUM, HOST/GUEST_TSO4/6 and HOST/GUEST_ECN. What the guest accepts in SET_FEATURES
sets what its virtio-net headers may carry (virtq.pyx) and the port's caps in every
worker's interface-output (offload_caps: 0 before SET_FEATURES and after a reset), so
it only ever gets the offload state it took; the rest is finished in software.

Requests handled: GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES (MQ, REPLY_ACK), SET_OWNER,
RESET_OWNER, RESET_DEVICE, SET_MEM_TABLE, SET_VRING_NUM/ADDR/BASE, GET_VRING_BASE,
SET_VRING_KICK/CALL/ERR, GET_QUEUE_NUM (1), SET_VRING_ENABLE. Any other request is
unsupported (we offer none of the features that would bring it): counted, answered
with a failure when the front end asked for a reply, otherwise ignored.

What a front end can get wrong, and what happens:
- a message that cannot be framed (version bits not 1, size over MAX_PAYLOAD), the peer
  closing mid-message, a reply we cannot send: counted, the connection is closed and the
  device reset (rings stopped, memory unmapped); a server waits for the next front end,
  a client reconnects;
- a request with a bad payload or bad values (a queue other than 0 and 1, a ring size
  that is not a power of two, ring addresses outside guest memory, a memory table whose
  files are shorter than its regions, a kick "eventfd" that is not one): counted in
  bad_requests, refused (REPLY_ACK: a non-zero reply), the device otherwise unchanged.
"""
import array
import errno
import fcntl
import logging
import os
import socket
import stat
import struct
import time
import weakref

from fastpath.vhost.virtq import GuestMemory, Virtq

log = logging.getLogger("fastpath.vhost")

# ---- the wire format

VERSION = 1
FLAG_VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8
HEADER = struct.Struct("<III")          # request, flags, size
U64 = struct.Struct("<Q")
STATE = struct.Struct("<II")            # vhost_vring_state: index, num
ADDR = struct.Struct("<IIQQQQ")         # vhost_vring_addr: index, flags, desc, used, avail, log
REGION = struct.Struct("<QQQQ")         # guest_phys_addr, memory_size, userspace_addr, mmap_offset
MAX_PAYLOAD = 4096                      # the largest real message is well under 300 bytes
MAX_FDS = 8
MAX_REGIONS = 8
MESSAGES_PER_CALL = 64
VRING_FD_INDEX_MASK = 0xff
VRING_FD_NOFD = 0x100

REQUESTS = {
    1: "GET_FEATURES", 2: "SET_FEATURES", 3: "SET_OWNER", 4: "RESET_OWNER",
    5: "SET_MEM_TABLE", 6: "SET_LOG_BASE", 7: "SET_LOG_FD", 8: "SET_VRING_NUM",
    9: "SET_VRING_ADDR", 10: "SET_VRING_BASE", 11: "GET_VRING_BASE", 12: "SET_VRING_KICK",
    13: "SET_VRING_CALL", 14: "SET_VRING_ERR", 15: "GET_PROTOCOL_FEATURES",
    16: "SET_PROTOCOL_FEATURES", 17: "GET_QUEUE_NUM", 18: "SET_VRING_ENABLE", 19: "SEND_RARP",
    20: "NET_SET_MTU", 21: "SET_BACKEND_REQ_FD", 22: "IOTLB_MSG", 23: "SET_VRING_ENDIAN",
    24: "GET_CONFIG", 25: "SET_CONFIG", 26: "CREATE_CRYPTO_SESSION", 27: "CLOSE_CRYPTO_SESSION",
    28: "POSTCOPY_ADVISE", 29: "POSTCOPY_LISTEN", 30: "POSTCOPY_END", 31: "GET_INFLIGHT_FD",
    32: "SET_INFLIGHT_FD", 33: "GPU_SET_SOCKET", 34: "RESET_DEVICE", 35: "VRING_KICK",
    36: "GET_MAX_MEM_SLOTS", 37: "ADD_MEM_REG", 38: "REM_MEM_REG", 39: "SET_STATUS",
    40: "GET_STATUS",
}
# each name is also a constant of this module: GET_FEATURES = 1, SET_FEATURES = 2, ...
globals().update({name: code for code, name in REQUESTS.items()})

# ---- what we offer

F_CSUM = 1 << 0                     # VIRTIO_NET_F_CSUM: the guest may send partial checksums
F_GUEST_CSUM = 1 << 1               # it takes partial checksums (and DATA_VALID)
F_GUEST_TSO4 = 1 << 7               # it takes TCP super-frames
F_GUEST_TSO6 = 1 << 8
F_GUEST_ECN = 1 << 9
F_HOST_TSO4 = 1 << 11               # it may send TCP super-frames
F_HOST_TSO6 = 1 << 12
F_HOST_ECN = 1 << 13
F_MRG_RXBUF = 1 << 15               # VIRTIO_NET_F_MRG_RXBUF
F_INDIRECT_DESC = 1 << 28           # VIRTIO_RING_F_INDIRECT_DESC
F_EVENT_IDX = 1 << 29               # VIRTIO_RING_F_EVENT_IDX
F_PROTOCOL_FEATURES = 1 << 30       # VHOST_USER_F_PROTOCOL_FEATURES
F_VERSION_1 = 1 << 32               # VIRTIO_F_VERSION_1
F_OFFLOADS = (F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN
              | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN)
FEATURES = F_VERSION_1 | F_PROTOCOL_FEATURES | F_EVENT_IDX | F_INDIRECT_DESC | F_MRG_RXBUF | F_OFFLOADS

PF_MQ = 1 << 0
PF_REPLY_ACK = 1 << 3
PROTOCOL_FEATURES = PF_MQ | PF_REPLY_ACK
QUEUE_PAIRS = 1

COUNTERS = ("connects", "disconnects", "messages", "bad_requests", "unsupported",
            "framing_errors", "rejected_connections", "bad_ring_addr", "mem_unsealed")


class FramingError(Exception):
    """The byte stream can no longer be trusted to hold messages: close the connection."""


class RequestError(Exception):
    """One request cannot be applied; the connection goes on."""


def offload_caps(features):
    """What interface-output may hand the guest as it is (OFFLOAD_*), from the features
    it accepted: partial checksums with GUEST_CSUM, super-frames with GUEST_TSO4/6 (which
    virtio allows only with GUEST_CSUM); the rest is finished in software."""
    from fastpath.nodes.interface import OFFLOAD_CSUM, OFFLOAD_TSO4, OFFLOAD_TSO6
    if not features & F_GUEST_CSUM:
        return 0
    return (OFFLOAD_CSUM | (OFFLOAD_TSO4 if features & F_GUEST_TSO4 else 0)
            | (OFFLOAD_TSO6 if features & F_GUEST_TSO6 else 0))


def _is_eventfd(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[eventfd]"
    except OSError:
        return False


def _seal_shrink(fd):
    """Make the front end unable to shrink the file under our mapping (a shrunk file
    would fault on access). True when the file is sealed so (QEMU's memfd backend seals
    by default); False for files that cannot be sealed (hugetlbfs, memfds without
    MFD_ALLOW_SEALING)."""
    try:
        if fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK:
            return True
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        return True
    except OSError:
        return False


class VhostUserConnection:
    """One front end on one socket: reads messages, applies them to the port's device,
    replies. Never blocks."""

    def __init__(self, sock, port):
        self.sock = sock
        self.port = port
        sock.setblocking(False)
        self._fd = sock.fileno()
        self._header = bytearray()
        self._head = None                 # (request, flags, size) once the header is in
        self._payload = bytearray()
        self._fds = []                    # descriptors received with this message so far
        self._ctrunc = False
        self._complaints = 0
        self.closed = False

    def fileno(self):
        return self._fd

    # ---- reading

    def on_readable(self, fd=None):
        """Read and handle what the front end sent (graph.add_fd callback)."""
        for _ in range(MESSAGES_PER_CALL):
            if self.closed:
                return
            try:
                msg = self._read_message()
            except BlockingIOError:
                return
            except FramingError as e:
                self.port.count("framing_errors")
                self.port.disconnected(self, f"bad message: {e}")
                return
            except OSError as e:
                self.port.disconnected(self, str(e) or type(e).__name__)
                return
            if msg is None:
                return
            request, flags, payload, fds = msg
            try:
                self._handle(request, flags, payload, fds)
            except FramingError as e:
                self.port.count("framing_errors")
                self.port.disconnected(self, str(e))
                return
            except OSError as e:             # the reply could not be sent: it is gone
                self.port.disconnected(self, str(e) or type(e).__name__)
                return
            except Exception as e:           # a bug here must cost this port, not the switch
                log.exception("%s: %s failed", self.port.name, REQUESTS.get(request, request))
                self.port.count("framing_errors")
                self.port.disconnected(self, f"internal error: {e!r}")
                return
            finally:
                for d in fds:
                    os.close(d)

    def _recv(self, n):
        data, anc, mflags, _ = self.sock.recvmsg(n, socket.CMSG_SPACE(MAX_FDS * 4),
                                                 socket.MSG_CMSG_CLOEXEC)
        for level, kind, cdata in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(cdata[:len(cdata) - len(cdata) % a.itemsize])
                self._fds.extend(a)
        if mflags & socket.MSG_CTRUNC:
            self._ctrunc = True
        if not data:
            raise ConnectionResetError("front end closed the connection")
        return data

    def _read_message(self):
        """(request, flags, payload, fds) when a whole message is in, else None. Reads
        exactly the message's bytes, so descriptors are never taken from the next one."""
        if self._head is None:
            self._header += self._recv(HEADER.size - len(self._header))
            if len(self._header) < HEADER.size:
                return None
            request, flags, size = HEADER.unpack(self._header)
            if flags & FLAG_VERSION_MASK != VERSION:
                raise FramingError(f"version {flags & FLAG_VERSION_MASK} (flags {flags:#x})")
            if size > MAX_PAYLOAD:
                raise FramingError(f"payload of {size} bytes (at most {MAX_PAYLOAD})")
            self._head = (request, flags, size)
        request, flags, size = self._head
        while len(self._payload) < size:
            self._payload += self._recv(size - len(self._payload))
        if self._ctrunc:
            raise FramingError(f"{REQUESTS.get(request, request)} came with more than {MAX_FDS} descriptors")
        msg = (request, flags, bytes(self._payload), self._fds)
        self._header = bytearray()
        self._head = None
        self._payload = bytearray()
        self._fds = []
        self._ctrunc = False
        return msg

    # ---- handling

    def _handle(self, request, flags, payload, fds):
        port = self.port
        port.count("messages")
        name = REQUESTS.get(request, f"request {request}")
        handler = self.HANDLERS.get(request)
        log.debug("%s: %s flags %#x, %d bytes, %d fds", port.name, name, flags, len(payload), len(fds))
        ok = True
        reply = None
        if handler is None:
            port.count("unsupported")
            self._complain("%s: unsupported %s", port.name, name)
            ok = False
        else:
            try:
                reply = handler(self, payload, fds)
            except (RequestError, ValueError, OSError) as e:
                port.count("bad_requests")
                self._complain("%s: %s refused: %s", port.name, name, e)
                if request in self.REPLYING:
                    raise FramingError(f"{name} cannot be answered: {e}") from None
                ok = False
        if reply is not None:
            self._send(request, reply)
        elif flags & FLAG_NEED_REPLY:
            self._send(request, U64.pack(0 if ok else 1))      # REPLY_ACK

    def _complain(self, *args):
        """A warning for the first few refusals of a connection; then only debug
        messages, so a hostile front end cannot flood the log."""
        self._complaints += 1
        log.log(logging.WARNING if self._complaints <= 10 else logging.DEBUG, *args)

    def _send(self, request, payload):
        msg = HEADER.pack(request, VERSION | FLAG_REPLY, len(payload)) + payload
        try:
            sent = self.sock.send(msg)
        except BlockingIOError:
            sent = 0                      # it does not read its replies
        if sent != len(msg):
            raise FramingError("reply did not fit in the socket")

    @staticmethod
    def _u64(payload):
        if len(payload) < U64.size:
            raise RequestError(f"payload of {len(payload)} bytes, expected {U64.size}")
        return U64.unpack_from(payload)[0]

    def _state(self, payload):
        if len(payload) < STATE.size:
            raise RequestError(f"payload of {len(payload)} bytes, expected {STATE.size}")
        index, num = STATE.unpack_from(payload)
        return self._vq(index), num

    def _vq(self, index):
        if index >= len(self.port.vqs):
            raise RequestError(f"queue {index} does not exist (queues 0 and 1)")
        return self.port.vqs[index]

    def get_features(self, payload, fds):
        return U64.pack(FEATURES)

    def set_features(self, payload, fds):
        v = self._u64(payload)
        if v & ~FEATURES:
            raise RequestError(f"features {v & ~FEATURES:#x} were not offered")
        self.port.set_features(v)

    def get_protocol_features(self, payload, fds):
        return U64.pack(PROTOCOL_FEATURES)

    def set_protocol_features(self, payload, fds):
        v = self._u64(payload)
        if v & ~PROTOCOL_FEATURES:
            raise RequestError(f"protocol features {v & ~PROTOCOL_FEATURES:#x} were not offered")
        self.port.set_protocol_features(v)

    def set_owner(self, payload, fds):
        self.port.owner = True

    def reset_owner(self, payload, fds):
        self.port.reset_device()

    def get_queue_num(self, payload, fds):
        return U64.pack(QUEUE_PAIRS)

    def set_mem_table(self, payload, fds):
        if len(payload) < 8:
            raise RequestError("memory table shorter than its header")
        n = struct.unpack_from("<I", payload)[0]
        if not 1 <= n <= MAX_REGIONS:
            raise RequestError(f"{n} memory regions (1..{MAX_REGIONS})")
        if len(payload) < 8 + n * REGION.size:
            raise RequestError(f"memory table of {len(payload)} bytes for {n} regions")
        if len(fds) != n:
            raise RequestError(f"{len(fds)} descriptors for {n} regions")
        # seal first, then look at the size: a sealed file cannot shrink after the look
        unsealed = sum(1 for fd in fds if not _seal_shrink(fd))
        regions = []
        page = os.sysconf("SC_PAGE_SIZE")
        for i in range(n):
            gpa, size, uva, off = REGION.unpack_from(payload, 8 + i * REGION.size)
            st = os.fstat(fds[i])
            if not stat.S_ISREG(st.st_mode):
                raise RequestError(f"region {i}: descriptor is not a memory file")
            if st.st_size < off + size:
                raise RequestError(f"region {i}: file of {st.st_size} bytes is shorter than "
                                   f"offset {off} + size {size}")
            align = st.st_blksize if st.st_blksize >= page and not st.st_blksize & (st.st_blksize - 1) else page
            regions.append((gpa, size, uva, off, fds[i], align))
        self.port.set_mem_table(regions)          # fds are closed after the handler
        if unsealed:
            self.port.count("mem_unsealed", unsealed)

    def set_vring_num(self, payload, fds):
        vq, num = self._state(payload)
        self.port.ring_changed(vq, vq.set_num(num), refuse=False)

    def set_vring_addr(self, payload, fds):
        if len(payload) < ADDR.size:
            raise RequestError(f"payload of {len(payload)} bytes, expected {ADDR.size}")
        index, flags, desc, used, avail, _log = ADDR.unpack_from(payload)
        vq = self._vq(index)
        self.port.ring_changed(vq, vq.set_addr(desc, used, avail))

    def set_vring_base(self, payload, fds):
        vq, num = self._state(payload)
        if num > 0xffff:
            raise RequestError(f"base {num:#x}: split rings have 16-bit indices")
        vq.set_base(num)

    def get_vring_base(self, payload, fds):
        vq, _ = self._state(payload)
        return STATE.pack(vq.index, vq.stop())

    def _vring_fd(self, payload, fds):
        v = self._u64(payload)
        if v & ~(VRING_FD_INDEX_MASK | VRING_FD_NOFD):
            raise RequestError(f"bad queue/descriptor word {v:#x}")
        vq = self._vq(v & VRING_FD_INDEX_MASK)
        if v & VRING_FD_NOFD:
            if fds:
                raise RequestError("descriptor sent with the no-descriptor flag")
            return vq, -1
        if len(fds) != 1:
            raise RequestError(f"{len(fds)} descriptors, expected 1")
        if not _is_eventfd(fds[0]):
            raise RequestError("descriptor is not an eventfd")
        fd = fds.pop()
        os.set_blocking(fd, False)                # the data path never waits on it
        return vq, fd

    def set_vring_kick(self, payload, fds):
        vq, fd = self._vring_fd(payload, fds)
        vq.set_kick(fd)

    def set_vring_call(self, payload, fds):
        vq, fd = self._vring_fd(payload, fds)
        vq.set_call(fd)

    def set_vring_err(self, payload, fds):
        vq, fd = self._vring_fd(payload, fds)
        vq.set_err(fd)

    def set_vring_enable(self, payload, fds):
        vq, num = self._state(payload)
        if num > 1:
            raise RequestError(f"enable {num} (0 or 1)")
        self.port.set_vring_enable(vq.index, bool(num))

    HANDLERS = {
        GET_FEATURES: get_features, SET_FEATURES: set_features, SET_OWNER: set_owner,
        RESET_OWNER: reset_owner, RESET_DEVICE: reset_owner, SET_MEM_TABLE: set_mem_table,
        SET_VRING_NUM: set_vring_num, SET_VRING_ADDR: set_vring_addr,
        SET_VRING_BASE: set_vring_base, GET_VRING_BASE: get_vring_base,
        SET_VRING_KICK: set_vring_kick, SET_VRING_CALL: set_vring_call,
        SET_VRING_ERR: set_vring_err, GET_PROTOCOL_FEATURES: get_protocol_features,
        SET_PROTOCOL_FEATURES: set_protocol_features, GET_QUEUE_NUM: get_queue_num,
        SET_VRING_ENABLE: set_vring_enable,
    }
    # requests whose answer is their reply: one that cannot be answered ends the connection
    REPLYING = {GET_FEATURES, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM, GET_VRING_BASE}

    def close(self):
        if not self.closed:
            self.closed = True
            self.sock.close()
            for d in self._fds:
                os.close(d)
            self._fds = []


class VhostUserPort:
    """The vhost-user device of one port and the socket its front end uses."""

    def __init__(self, name, path, server=True, reconnect=1.0):
        self.name = name
        self.path = os.fspath(path)
        self.server = bool(server)
        self.reconnect = float(reconnect)
        self.mem = GuestMemory()
        self.rxq = Virtq(0, self.mem)        # the guest's receive queue: our output
        self.txq = Virtq(1, self.mem)        # the guest's transmit queue: our input
        self.vqs = (self.rxq, self.txq)
        self.graph = None
        self.outputs = []                    # [(interface-output, sw_if_index)]: one per worker
        self.listener = None
        self.conn = None
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.last_error = ""
        self._next_try = 0.0
        self._closed = False
        self._reset_state()

    @classmethod
    def from_options(cls, name, options):
        """options:vhost-socket=PATH (server) or options:vhost-server-path=PATH (client)."""
        sock = options.get("vhost-socket")
        client = options.get("vhost-server-path")
        if bool(sock) == bool(client):
            raise ValueError("a vhost-user port needs exactly one of options:vhost-socket=PATH "
                             "(fastpath listens) and options:vhost-server-path=PATH (fastpath connects)")
        return cls(name, sock or client, server=bool(sock))

    # ---- the socket

    def open(self):
        """Server mode: listen on the path (a stale socket left by a dead process is
        replaced; anything else there is an error). Client mode: nothing yet."""
        if not self.server:
            return
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise OSError(errno.EEXIST, f"{self.path} exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            try:
                probe.connect(self.path)
            except OSError:
                os.unlink(self.path)            # nobody listens there any more
            else:
                raise OSError(errno.EADDRINUSE, f"{self.path} is in use")
            finally:
                probe.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            s.bind(self.path)
            s.listen(4)
        except BaseException:
            s.close()
            raise
        self.listener = s

    def attach(self, graph):
        """Start serving from graph's dispatch loop."""
        self.graph = graph
        if self.server:
            graph.add_fd(self.listener.fileno(), self._on_accept)
        else:
            # the graph keeps its timers: a closed (or collected) port's tick does nothing
            ref = weakref.ref(self)
            graph.add_timer(min(self.reconnect, 0.5), lambda now: (p := ref()) is not None and p._tick(now))
            self._try_connect()

    def add_output(self, interface_output, sw_if_index):
        """A worker's interface-output that sends to this guest: its caps for the port
        follow what the guest negotiated (0 until it has, and after a reset). Changed from
        the control channel, which the dispatch loop runs under the worker barrier, so no
        worker is between interface-output and the port's output node meanwhile."""
        self.outputs.append((interface_output, sw_if_index))
        interface_output.set_caps(sw_if_index, offload_caps(self.features))

    def _set_caps(self):
        caps = offload_caps(self.features)
        for interface_output, sw_if_index in self.outputs:
            interface_output.set_caps(sw_if_index, caps)

    def _on_accept(self, fd):
        try:
            s, _ = self.listener.accept()
        except OSError:
            return
        s.setblocking(False)
        if self.conn is not None:
            self.count("rejected_connections")
            log.warning("%s: a second front end connected; refused", self.name)
            s.close()
            return
        self._connected(s)

    def _try_connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            s.connect(self.path)
        except OSError as e:
            s.close()
            self.last_error = f"connect {self.path}: {e.strerror or e}"
            self._next_try = time.monotonic() + self.reconnect
            return False
        self._connected(s)
        return True

    def _tick(self, now):
        if not self._closed and not self.server and self.conn is None and now >= self._next_try:
            self._try_connect()

    def _connected(self, s):
        self.conn = VhostUserConnection(s, self)
        self.count("connects")
        self.last_error = ""
        if self.graph is not None:
            self.graph.add_fd(self.conn.fileno(), self.conn.on_readable)
        log.info("%s: front end connected on %s", self.name, self.path)

    def disconnected(self, conn, why):
        """The front end left or broke the protocol: drop it and reset the device."""
        if conn is not self.conn:
            conn.close()
            return
        if self.graph is not None:
            self.graph.remove_fd(conn.fileno())
        conn.close()
        self.conn = None
        self.count("disconnects")
        self.last_error = why
        self.reset_device()
        self._next_try = time.monotonic() + (self.reconnect if not self.server else 0)
        log.info("%s: front end gone (%s)", self.name, why)

    def close(self):
        """Tear down: the connection, the listening socket and its path, the device."""
        if self._closed:
            return
        self._closed = True
        if self.conn is not None:
            if self.graph is not None:
                self.graph.remove_fd(self.conn.fileno())
            self.conn.close()
            self.conn = None
        if self.listener is not None:
            if self.graph is not None:
                self.graph.remove_fd(self.listener.fileno())
            try:
                if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                    os.unlink(self.path)
            except OSError:
                pass
            self.listener.close()
            self.listener = None
        self.reset_device()
        self.outputs = []                    # the port is gone from those graphs

    # ---- the device (called by the connection)

    def _reset_state(self):
        self.features = 0
        self.protocol_features = 0
        self.protocol_negotiated = False
        self.owner = False
        self.vring_enable = [False] * len(self.vqs)

    def reset_device(self):
        """Back to the state before any front end: queues stopped, memory unmapped."""
        for vq in self.vqs:
            vq.reset()
        self.mem.clear()
        self._reset_state()
        self._set_caps()

    def set_features(self, v):
        self.features = v
        if v & F_PROTOCOL_FEATURES:
            self.protocol_negotiated = True
        hdr_len = 12 if v & (F_VERSION_1 | F_MRG_RXBUF) else 10
        for vq in self.vqs:
            vq.set_features(bool(v & F_EVENT_IDX), bool(v & F_MRG_RXBUF),
                            bool(v & F_INDIRECT_DESC), hdr_len, v & F_OFFLOADS)
        self._set_caps()
        self._apply_enable()

    def set_protocol_features(self, v):
        self.protocol_features = v
        self.protocol_negotiated = True
        self._apply_enable()

    def set_vring_enable(self, index, on):
        self.vring_enable[index] = on
        self._apply_enable()

    def _apply_enable(self):
        # without VHOST_USER_F_PROTOCOL_FEATURES a ring is enabled from the start
        for vq, on in zip(self.vqs, self.vring_enable):
            vq.set_enabled(on or not self.protocol_negotiated)

    def set_mem_table(self, regions):
        try:
            self.mem.set_table(regions)
        finally:
            for vq in self.vqs:
                self.ring_changed(vq, vq.translate(), refuse=False)

    def ring_changed(self, vq, translated, refuse=True):
        """After a queue's size, addresses or the memory changed: rings that are not in
        guest memory are counted (and the SET_VRING_ADDR that put them there refused);
        the queue stays stopped until they are."""
        if translated is False:
            self.count("bad_ring_addr")
            msg = f"queue {vq.index}: ring addresses outside guest memory"
            if refuse:
                raise RequestError(msg)
            log.debug("%s: %s", self.name, msg)

    # ---- observability

    def count(self, what, n=1):
        self.counters[what] += n

    @property
    def running(self):
        return all(vq.ready for vq in self.vqs)

    def stats(self):
        """Numbers merged into the port's interface statistics."""
        s = {f"vhost_{k}": v for k, v in self.counters.items()}
        s["vhost_connected"] = int(self.conn is not None)
        s["vhost_running"] = int(self.running)
        s["vhost_queue_failures"] = sum(vq.failures for vq in self.vqs)
        s["vhost_kicks"] = sum(vq.kicks for vq in self.vqs)
        s["vhost_calls"] = sum(vq.calls for vq in self.vqs)
        s["vhost_calls_suppressed"] = sum(vq.calls_suppressed for vq in self.vqs)
        # offload state that crossed whole: rx from the guest (its transmit queue), tx to it
        for way, vq in (("rx", self.txq), ("tx", self.rxq)):
            s[f"vhost_{way}_csum_partial"] = vq.csum_partial
            s[f"vhost_{way}_gso_frames"] = vq.gso_frames
            s[f"vhost_{way}_big_frames"] = vq.big_frames
        return s

    def status(self):
        """The device as a front end set it up, for people and tests."""
        return {"mode": "server" if self.server else "client", "path": self.path,
                "connected": self.conn is not None, "running": self.running,
                "features": self.features, "protocol_features": self.protocol_features,
                "offload_caps": offload_caps(self.features),
                "memory": self.mem.table(), "queues": [vq.state() for vq in self.vqs],
                "last_error": self.last_error}

    def __repr__(self):
        return f"<VhostUserPort {self.name} {'server' if self.server else 'client'} {self.path}>"
