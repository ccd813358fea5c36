"""OpenFlow controller connections, served from the dispatch loop (no threads).

Channel: one established TCP connection: bytes in, whole messages out (codec.split),
a send queue that is flushed when the socket takes it, and the per-connection OpenFlow
state (negotiated or not, async masks, miss_send_len, counters).

Targets, in ovs-vsctl's words:
  tcp:IP[:PORT]    ActiveTarget: connect, and after a failure or a close reconnect with
                   exponential backoff (MIN_BACKOFF doubling up to MAX_BACKOFF, as OVS's
                   rconn does); PORT defaults to 6653.
  ptcp:PORT[:IP]   PassiveTarget: listen (IP defaults to 0.0.0.0) and take every client
                   (ovs-ofctl connects, asks, and leaves).
The agent (fastpath.openflow.agent) owns the targets and reads their channels.
"""
import errno
import ipaddress
import logging
import select
import socket
import time

from fastpath.openflow import codec

log = logging.getLogger("fastpath")
DEFAULT_PORT = 6653
MAX_OUTBUF = 4 << 20          # a controller that stops reading is dropped past this


def parse_target(text):
    """'tcp:IP[:PORT]' or 'ptcp:PORT[:IP]' -> (kind, ip, port); ValueError with why."""
    kind, _, rest = text.partition(":")
    if kind == "tcp":
        ip, _, port = rest.partition(":")
        port = port or str(DEFAULT_PORT)
    elif kind == "ptcp":
        port, _, ip = rest.partition(":")
        ip = ip or "0.0.0.0"
    else:
        raise ValueError(f"controller target {text!r}: expected tcp:IP[:PORT] or ptcp:PORT[:IP]")
    try:
        ipaddress.IPv4Address(ip)
        port_no = int(port)
    except ValueError:
        raise ValueError(f"controller target {text!r}: bad address or port") from None
    if not (0 if kind == "ptcp" else 1) <= port_no <= 65535:
        raise ValueError(f"controller target {text!r}: port out of range")
    return kind, ip, port_no


class Channel:
    """One connection to a controller."""

    def __init__(self, sock, peer, graph, on_readable):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.graph = graph
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.open = True
        self.negotiated = False          # HELLO exchanged, version 1.3 agreed
        self.last_rx = time.monotonic()
        self.probe_sent = False
        self.miss_send_len = 128         # OFP_DEFAULT_MISS_SEND_LEN
        self.config_flags = 0
        # SET_ASYNC masks [master/equal, slave]: packet-in NO_MATCH|ACTION, every
        # port-status reason, every flow-removed reason (the spec's defaults)
        self.async_masks = [0x3, 0x0, 0x7, 0x7, 0xF, 0x0]
        self.role = codec.ROLE_EQUAL     # ROLE_REQUEST: EQUAL, MASTER or SLAVE
        self.rx_messages = 0
        self.tx_messages = 0
        self.errors_sent = 0
        sock.setblocking(False)
        graph.add_fd(self.fd, lambda _fd: on_readable(self))

    def receive(self):
        """Read what there is: (messages, eof)."""
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return [], False
        except OSError:
            return [], True
        if not data:
            return [], True
        self.last_rx = time.monotonic()
        self.probe_sent = False
        self.inbuf += data
        msgs = codec.split(self.inbuf)          # FramingError: the caller closes
        self.rx_messages += len(msgs)
        return msgs, False

    def send(self, data):
        if not self.open:
            return
        self.outbuf += data
        self.tx_messages += 1
        self.flush()

    def flush(self):
        while self.outbuf and self.open:
            try:
                n = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self.outbuf[:n]
        if len(self.outbuf) > MAX_OUTBUF:
            log.warning("openflow: %s does not read its messages; closing", self.peer)
            self.close()

    def close(self):
        if not self.open:
            return
        self.open = False
        self.graph.remove_fd(self.fd)
        try:
            self.sock.close()
        except OSError:
            pass


class ActiveTarget:
    """tcp:IP:PORT: keep one connection up, reconnecting with exponential backoff."""
    MIN_BACKOFF = 1.0
    MAX_BACKOFF = 8.0

    def __init__(self, text, ip, port):
        self.text = text
        self.addr = (ip, port)
        self.channel = None
        self.connecting = None          # a socket whose non-blocking connect is under way
        self.backoff = 0.0              # the wait before the next attempt; 0: none yet
        self.next_attempt = 0.0
        self.attempts = 0
        self.connects = 0

    @property
    def channels(self):
        return [self.channel] if self.channel is not None and self.channel.open else []

    def poll(self, now, make_channel):
        """From the agent's timer: start an attempt when due, finish one under way."""
        if self.channel is not None and not self.channel.open:
            self.channel = None
            self.failed(now)
        if self.channel is not None:
            return
        if self.connecting is None:
            if now < self.next_attempt:
                return
            self.attempts += 1
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex(self.addr)
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                self.failed(now)
                return
            self.connecting = s
        _, writable, _ = select.select([], [self.connecting], [], 0)
        if not writable:
            return
        s, self.connecting = self.connecting, None
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            s.close()
            self.failed(now)
            return
        self.backoff = 0.0
        self.connects += 1
        self.channel = make_channel(s, f"tcp:{self.addr[0]}:{self.addr[1]}")

    def failed(self, now):
        self.backoff = min(self.MAX_BACKOFF, self.backoff * 2 if self.backoff else self.MIN_BACKOFF)
        self.next_attempt = now + self.backoff

    def close(self):
        if self.channel is not None:
            self.channel.close()
        if self.connecting is not None:
            self.connecting.close()
            self.connecting = None


class PassiveTarget:
    """ptcp:PORT[:IP]: listen and serve every client."""
    MAX_CLIENTS = 16

    def __init__(self, text, ip, port, graph, make_channel):
        self.text = text
        self.graph = graph
        self.make_channel = make_channel
        self.clients = []
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ip, port))
            s.listen(8)
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self.sock = s
        self.port = s.getsockname()[1]        # ptcp:0 picks one
        graph.add_fd(s.fileno(), self._accept)

    @property
    def channels(self):
        self.clients = [c for c in self.clients if c.open]
        return list(self.clients)

    def _accept(self, _fd):
        try:
            conn, addr = self.sock.accept()
        except OSError:
            return
        if len(self.channels) >= self.MAX_CLIENTS:
            log.warning("openflow: %s: too many clients, refusing %s", self.text, addr[0])
            conn.close()
            return
        self.clients.append(self.make_channel(conn, f"{addr[0]}:{addr[1]}"))

    def poll(self, now, make_channel):
        pass

    def close(self):
        for c in self.clients:
            c.close()
        self.graph.remove_fd(self.sock.fileno())
        self.sock.close()
