"""MemifClient: a memif peer in plain Python (numpy views on the shared memory), for
tests, traffic generators and programs that want to attach to a fastpath port -- or to
any memif master or slave (VPP, DPDK, libmemif) -- without a VM.

    from fastpath.memif.client import MemifClient
    with MemifClient("/run/fp/m0.sock", id=0) as c:       # slave: connects, owns the memory
        c.send([frame1, frame2])
        frames = c.recv(timeout=1.0)

role="slave" (default) connects to a listening master (a fastpath port with
memif-role=master) and creates the region: both rings, then one buffer per slot.
role="master" listens on the path and waits for a slave (a fastpath port with
memif-role=slave) to connect and offer its region; accept() waits for the next one.

One thread, blocking calls with timeouts. Indices are read with acquire and published
with release ordering (through fastpath.memif.ring's helpers); descriptors and buffers
are numpy views. send() waits for room up to its timeout (a memif producer has no
"room again" signal, so it sleeps briefly); recv() waits on the ring's eventfd. Frames
longer than a buffer are chained (MEMIF_DESC_FLAG_NEXT) both ways.

The rings are exposed (`tx`, `rx`: ClientRing) so a test can also misbehave on purpose.

As a command, a small traffic generator and sink:
    python -m fastpath.memif.client SOCKET [--role slave|master] [--id N]
        (--send N [--size 64] | --sink SECONDS)
"""
import mmap
import os
import select
import socket
import time

import numpy as np

from fastpath.memif import protocol as mp
from fastpath.memif.ring import load_acquire16, store_release16, full_fence

DESC = np.dtype([("flags", "<u2"), ("region", "<u2"), ("length", "<u4"),
                 ("offset", "<u4"), ("metadata", "<u4")])
DESC_F_NEXT = 1
RING_F_MASK_INT = 1


class ClientRing:
    """One ring, as numpy views of the memory that holds it."""

    def __init__(self, mem, offset, log2_ring_size, int_fd, s2m):
        self.mem = mem
        self.offset = offset
        self.size = 1 << log2_ring_size
        self.mask = self.size - 1
        self.int_fd = int_fd
        self.s2m = s2m
        end = offset + mp.ring_bytes(log2_ring_size)
        if end > len(mem):
            raise ValueError("ring outside its region")
        self.header = mem[offset:offset + 128]
        self.desc = mem[offset + 128:end].view(DESC)
        self._addr = mem.ctypes.data + offset

    def init(self, buffer_size, buffer_offset):
        """As its slave: cookie, flags, indices and one descriptor per slot."""
        self.header[:8].view("<u4")[0] = mp.COOKIE
        self.flags = 0
        self.set_head(0)
        self.set_tail(0)
        self.desc["flags"] = 0
        self.desc["region"] = 0
        self.desc["length"] = buffer_size
        self.desc["offset"] = buffer_offset + np.arange(self.size, dtype=np.uint32) * buffer_size
        self.desc["metadata"] = 0

    @property
    def cookie(self):
        return int(self.header[:4].view("<u4")[0])

    @property
    def flags(self):
        return int(self.header[4:6].view("<u2")[0])

    @flags.setter
    def flags(self, v):
        self.header[4:6].view("<u2")[0] = v

    @property
    def head(self):
        return load_acquire16(self._addr + 6)

    @property
    def tail(self):
        return load_acquire16(self._addr + 64)

    def set_head(self, v):
        store_release16(self._addr + 6, v & 0xffff)

    def set_tail(self, v):
        store_release16(self._addr + 64, v & 0xffff)

    def signal(self):
        """Interrupt the consumer unless it polls (MASK_INT)."""
        if self.int_fd >= 0 and not self.flags & RING_F_MASK_INT:
            os.eventfd_write(self.int_fd, 1)
            return True
        return False


class MemifClient:
    def __init__(self, socket_path, id=0, role="slave", ring_size=10, buffer_size=2048,
                 name="fastpath-client", secret=b"", timeout=5.0, wait=True):
        if role not in ("slave", "master"):
            raise ValueError(f"role {role!r} (slave or master)")
        self.path = os.fspath(socket_path)
        self.id = id
        self.role = role
        self.ring_size = ring_size
        self.buffer_size = buffer_size
        self.name = name
        self.secret = secret
        self.sock = None
        self.listener = None
        self.tx = self.rx = None
        self.remote_name = self.remote_if_name = ""
        self.disconnect_reason = ""
        self.tx_frames = self.rx_frames = self.rx_bytes = self.rx_bad = self.interrupts = 0
        self._maps = []
        self._fds = []
        self._connected = False
        if role == "master":
            self._listen()
            if wait:
                self.accept(timeout)
        else:
            self.connect(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- the control channel

    def _recv(self, deadline):
        """The next message (kind, body, fds), waiting until deadline."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("memif handshake timed out")
            self.sock.settimeout(left)
            try:
                data, fds = mp.recv_msg(self.sock)
            except socket.timeout:
                continue
            kind, body = mp.decode(data)
            if kind == mp.DISCONNECT:
                for fd in fds:
                    os.close(fd)
                self.disconnect_reason = body.reason
                raise ConnectionError(f"peer disconnected: {body.reason}")
            return kind, body, fds

    def _expect(self, kind, deadline):
        got, body, fds = self._recv(deadline)
        if got != kind:
            for fd in fds:
                os.close(fd)
            raise ConnectionError(f"expected {mp.MESSAGES[kind]}, got {mp.MESSAGES.get(got, got)}")
        return body, fds

    def send_raw(self, msg, fd=-1):
        """Send any message (tests)."""
        mp.send_msg(self.sock, msg, fd)

    def connect(self, timeout=5.0):
        """As the slave: connect (retrying until timeout while nobody listens), offer the
        region and rings, wait for CONNECTED."""
        deadline = time.monotonic() + timeout
        self._teardown()
        while True:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                s.connect(mp.sockaddr(self.path))
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        self.sock = s
        try:
            h, _ = self._expect(mp.HELLO, deadline)
            if h.min_version > mp.VERSION or h.max_version < mp.VERSION:
                raise ConnectionError("incompatible memif version")
            self.remote_name = h.name
            log2 = min(self.ring_size, h.max_log2_ring_size)
            s2m_off, m2s_off, s2m_bufs, m2s_bufs, size = mp.slave_layout(log2, self.buffer_size)
            memfd = os.memfd_create("memif-client", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
            self._fds.append(memfd)
            os.ftruncate(memfd, size)
            mem = self._map(memfd, size)
            efds = [os.eventfd(0, mp.EFD_NONBLOCK | mp.EFD_CLOEXEC) for _ in range(2)]
            self._fds += efds
            self.tx = ClientRing(mem, s2m_off, log2, efds[0], True)
            self.rx = ClientRing(mem, m2s_off, log2, efds[1], False)
            self.tx.init(self.buffer_size, s2m_bufs)
            self.rx.init(self.buffer_size, m2s_bufs)
            self._tx_bufs, self._rx_bufs = s2m_bufs, m2s_bufs
            for msg, fd in ((mp.init(self.id, self.name, secret=self.secret), -1),
                            (mp.add_region(0, size), memfd),
                            (mp.add_ring(0, 0, s2m_off, log2, True), efds[0]),
                            (mp.add_ring(0, 0, m2s_off, log2, False), efds[1])):
                self.send_raw(msg, fd)
                self._expect(mp.ACK, deadline)
            self.send_raw(mp.encode(mp.CONNECT, self.name))
            c, _ = self._expect(mp.CONNECTED, deadline)
            self.remote_if_name = c.if_name
        except BaseException:
            self._teardown()
            raise
        self._start()

    def _listen(self):
        if not self.path.startswith("@") and os.path.exists(self.path):
            os.unlink(self.path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        self.listener.bind(mp.sockaddr(self.path))
        self.listener.listen(4)

    def accept(self, timeout=5.0):
        """As the master: wait for a slave (the previous one is dropped), take its region
        and rings, answer CONNECTED."""
        deadline = time.monotonic() + timeout
        self._teardown()
        self.listener.settimeout(timeout)
        s, _ = self.listener.accept()
        self.sock = s
        try:
            self.send_raw(mp.hello(self.name, max_log2_ring_size=self.ring_size))
            i, _ = self._expect(mp.INIT, deadline)
            if i.id != self.id:
                self.send_raw(mp.disconnect("ID not found"))
                raise ConnectionError(f"slave asked for id {i.id}")
            self.remote_name = i.name
            self.send_raw(mp.encode(mp.ACK))
            regions, rings = [], {}
            while True:
                kind, body, fds = self._recv(deadline)
                if kind == mp.ADD_REGION and len(fds) == 1:
                    self._fds.append(fds[0])
                    regions.append(self._map(fds[0], body.size))
                elif kind == mp.ADD_RING and len(fds) == 1:
                    self._fds.append(fds[0])
                    rings[bool(body.flags & mp.ADD_RING_S2M)] = (body, fds[0])
                elif kind == mp.CONNECT and len(rings) == 2:
                    self.remote_if_name = body.if_name
                    break
                else:
                    for fd in fds:
                        os.close(fd)
                    raise ConnectionError(f"unexpected {mp.MESSAGES.get(kind, kind)}")
                self.send_raw(mp.encode(mp.ACK))
            self._regions = regions
            (r_s2m, fd_s2m), (r_m2s, fd_m2s) = rings[True], rings[False]
            self.rx = ClientRing(regions[r_s2m.region], r_s2m.offset, r_s2m.log2_ring_size, fd_s2m, True)
            self.tx = ClientRing(regions[r_m2s.region], r_m2s.offset, r_m2s.log2_ring_size, fd_m2s, False)
            if self.rx.cookie != mp.COOKIE or self.tx.cookie != mp.COOKIE:
                raise ConnectionError("wrong ring cookie")
            self.send_raw(mp.encode(mp.CONNECTED, self.name))
        except BaseException:
            self._teardown()
            raise
        self._start()

    def _map(self, fd, size):
        m = mmap.mmap(fd, size, mmap.MAP_SHARED | mmap.MAP_POPULATE, mmap.PROT_READ | mmap.PROT_WRITE)
        self._maps.append(m)
        return np.frombuffer(m, dtype=np.uint8)

    def _start(self):
        self.sock.setblocking(False)
        self._connected = True
        self.rx.flags = 0                        # we want interrupts
        if self.role == "slave":
            n = np.arange(self.tx.size, dtype=np.int64)
            self._tx_buf_off = self._tx_bufs + n * self.buffer_size
            self._rx_buf_off = self._rx_bufs + n * self.buffer_size
            self._tx_pos = self.tx.head
            self._rx_pos = self.rx.tail
            self._posted = self.rx.head
            self._refill()
        else:
            self._tx_pos = self.tx.tail
            self._rx_pos = self.rx.tail

    @property
    def connected(self):
        """Still connected? (Reads a DISCONNECT or the peer's close if there is one.)"""
        if self._connected:
            self._poll_control()
        return self._connected

    def _poll_control(self):
        while self._connected:
            try:
                data, fds = mp.recv_msg(self.sock)
            except BlockingIOError:
                return
            except (OSError, mp.ProtocolError) as e:
                self.disconnect_reason = str(e) or "closed"
                self._connected = False
                return
            for fd in fds:
                os.close(fd)
            try:
                kind, body = mp.decode(data)
            except mp.ProtocolError:
                continue
            if kind == mp.DISCONNECT:
                self.disconnect_reason = body.reason
                self._connected = False

    def _check(self):
        if not self.connected:
            raise ConnectionError(f"memif disconnected: {self.disconnect_reason}")

    def _teardown(self):
        self._connected = False
        self.tx = self.rx = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        for m in self._maps:
            try:
                m.close()
            except BufferError:        # a caller still holds a view; it goes with it
                pass
        self._maps = []

    def disconnect(self, reason="client disconnected"):
        """Say goodbye (DISCONNECT) and drop the connection; a master keeps listening
        (accept() takes the next slave), a slave can connect() again."""
        if self.sock is not None and self._connected:
            try:
                self.send_raw(mp.disconnect(reason))
            except OSError:
                pass
        self._teardown()

    def close(self, reason="client closed"):
        """Disconnect and stop listening."""
        self.disconnect(reason)
        if self.listener is not None:
            self.listener.close()
            self.listener = None
            if not self.path.startswith("@"):
                try:
                    os.unlink(self.path)
                except OSError:
                    pass

    # ---- frames

    def _tx_room(self):
        r = self.tx
        if self.role == "slave":
            inflight = (self._tx_pos - r.tail) & 0xffff
            if inflight > r.size:
                raise ConnectionError("peer moved the tail of our transmit ring impossibly")
            return r.size - inflight
        room = (r.head - self._tx_pos) & 0xffff
        if room > r.size:
            raise ConnectionError("peer moved the head of our transmit ring impossibly")
        return room

    def _put(self, frames, start):
        """Place frames[start:] while there is room; returns how many."""
        r = self.tx
        room = self._tx_room()
        n = min(room, len(frames) - start)
        if n <= 0:
            return 0
        batch = frames[start:start + n]
        lens = [len(f) for f in batch]
        if self.role == "slave" and max(lens) <= self.buffer_size:
            slots = (self._tx_pos + np.arange(n)) & r.mask
            offs = self._tx_buf_off[slots]
            if min(lens) == max(lens):           # one shape: one vectorized copy
                L = lens[0]
                view = r.mem[self._tx_bufs:self._tx_bufs + r.size * self.buffer_size]
                view.reshape(r.size, self.buffer_size)[slots, :L] = \
                    np.frombuffer(b"".join(batch), dtype=np.uint8).reshape(n, L)
            else:
                mv = memoryview(r.mem)
                for f, o in zip(batch, offs.tolist()):
                    mv[o:o + len(f)] = f
            d = r.desc
            d["length"][slots] = lens
            d["flags"][slots] = 0
            d["region"][slots] = 0
            d["offset"][slots] = offs
            self._tx_pos = (self._tx_pos + n) & 0xffff
            done = n
        elif self.role == "master" and self._fits_posted(r, batch, lens):
            done = n
        else:
            done = self._put_slow(batch, room)
        if done:
            if self.role == "slave":
                r.set_head(self._tx_pos)
            else:
                r.set_tail(self._tx_pos)
            if r.signal():
                self.interrupts += 1
            self.tx_frames += done
        return done

    def _fits_posted(self, r, batch, lens):
        """As the master: put each frame into one buffer the slave posted, if each fits
        (one pass over the descriptors, bulk writes back); False if not."""
        n = len(batch)
        slots = (self._tx_pos + np.arange(n)) & r.mask
        d = r.desc[slots]
        caps, regs, offs = d["length"].astype(np.int64), d["region"].astype(np.int64), d["offset"].astype(np.int64)
        lens_a = np.array(lens, dtype=np.int64)
        sizes = np.array([len(m) for m in self._regions], dtype=np.int64)
        if (lens_a > caps).any() or (regs >= len(sizes)).any() or \
                (offs + lens_a > sizes[np.minimum(regs, len(sizes) - 1)]).any():
            return False
        mvs = [memoryview(m) for m in self._regions]
        for f, g, o in zip(batch, regs.tolist(), offs.tolist()):
            mvs[g][o:o + len(f)] = f
        r.desc["length"][slots] = lens_a
        r.desc["flags"][slots] = 0
        self._tx_pos = (self._tx_pos + n) & 0xffff
        return True

    def _put_slow(self, frames, room):
        """Frame by frame, chained across buffers when needed (and as the master, into
        the buffers the slave posted)."""
        r = self.tx
        done = 0
        for f in frames:
            need = max(1, -(-len(f) // self.buffer_size)) if self.role == "slave" else None
            if need is not None and need > room:
                break
            pos, off, taken = self._tx_pos, 0, 0
            while True:
                if taken == room:
                    return done                      # does not fit: leave it
                i = (pos + taken) & r.mask
                d = r.desc[i]
                if self.role == "slave":
                    cap, base, o = self.buffer_size, r.mem, int(self._tx_buf_off[i])
                    r.desc["region"][i], r.desc["offset"][i] = 0, o
                else:
                    cap, o = int(d["length"]), int(d["offset"])
                    base = self._regions[int(d["region"])] if d["region"] < len(self._regions) else None
                    if base is None or cap == 0 or o + cap > len(base):
                        raise ConnectionError("slave posted a descriptor outside its region")
                chunk = f[off:off + cap]
                base[o:o + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                off += len(chunk)
                taken += 1
                r.desc["length"][i] = len(chunk)
                r.desc["flags"][i] = DESC_F_NEXT if off < len(f) else 0
                if off >= len(f):
                    break
            self._tx_pos = (pos + taken) & 0xffff
            room -= taken
            done += 1
        return done

    def send(self, frames, timeout=1.0):
        """Transmit frames in order, waiting up to `timeout` seconds for room when the
        ring is full; returns how many were sent."""
        frames = [bytes(f) for f in frames]
        self._check()
        sent = 0
        deadline = time.monotonic() + (timeout or 0)
        while sent < len(frames):
            k = self._put(frames, sent)
            sent += k
            if sent == len(frames) or time.monotonic() >= deadline:
                break
            if not k:
                self._check()
                time.sleep(0.0002)
        return sent

    def _take(self, limit, keep):
        """Frames the peer has put in our receive ring (bytes if keep, else counted);
        consumed slots go back."""
        r = self.rx
        if self.role == "slave":
            n = (r.tail - self._rx_pos) & 0xffff
            if n > ((self._posted - self._rx_pos) & 0xffff):
                raise ConnectionError("peer moved the tail of our receive ring impossibly")
        else:
            n = (r.head - self._rx_pos) & 0xffff
            if n > r.size:
                raise ConnectionError("peer moved the head of our receive ring impossibly")
        if n == 0:
            return [] if keep else 0
        slots = (self._rx_pos + np.arange(n)) & r.mask
        d = r.desc[slots]
        lens, flags = d["length"].astype(np.int64), d["flags"]
        if self.role == "slave":
            offs, regs = self._rx_buf_off[slots], np.zeros(n, dtype=np.int64)
            bad = lens > self.buffer_size
            mems = [r.mem]
        else:
            offs, regs = d["offset"].astype(np.int64), d["region"].astype(np.int64)
            mems = self._regions
            sizes = np.array([len(m) for m in mems], dtype=np.int64)
            bad = regs >= len(mems)
            bad |= offs + lens > sizes[np.minimum(regs, len(mems) - 1)]
        out, count, used = [], 0, 0
        if not (flags & DESC_F_NEXT).any():
            k = n if limit is None else min(n, limit)
            good = ~bad[:k]
            if keep:
                mv = [memoryview(m) for m in mems]
                out = [bytes(mv[g][o:o + ln]) for g, o, ln, ok in
                       zip(regs[:k].tolist(), offs[:k].tolist(), lens[:k].tolist(), good.tolist()) if ok]
            count = int(good.sum())
            self.rx_bytes += int(lens[:k][good].sum())
            self.rx_bad += k - count
            used = k
        else:
            i = 0
            while i < n and (limit is None or count < limit):
                parts, ok, j = [], True, i
                while j < n:
                    ok &= not bad[j]
                    if ok:
                        m = mems[regs[j]]
                        parts.append(m[offs[j]:offs[j] + lens[j]].tobytes())
                    j += 1
                    if not flags[j - 1] & DESC_F_NEXT:
                        break
                else:
                    break                             # chain not complete yet
                i = j
                if ok:
                    f = b"".join(parts)
                    self.rx_bytes += len(f)
                    count += 1
                    if keep:
                        out.append(f)
                else:
                    self.rx_bad += 1
            used = i
        self._rx_pos = (self._rx_pos + used) & 0xffff
        if self.role == "slave":
            self._refill()
        else:
            r.set_tail(self._rx_pos)
        self.rx_frames += count
        return out if keep else count

    def _refill(self):
        r = self.rx
        k = (self._rx_pos + r.size - self._posted) & 0xffff
        if k:
            slots = (self._posted + np.arange(k)) & r.mask
            r.desc["flags"][slots] = 0
            r.desc["region"][slots] = 0
            r.desc["length"][slots] = self.buffer_size
            r.desc["offset"][slots] = self._rx_buf_off[slots]
            self._posted = (self._posted + k) & 0xffff
            r.set_head(self._posted)

    def _wait(self, deadline):
        """Sleep until the peer signals our receive ring, says something, or deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            return
        rd, _, _ = select.select([self.rx.int_fd, self.sock], [], [], min(left, 0.05))
        if self.rx.int_fd in rd:
            try:
                os.eventfd_read(self.rx.int_fd)
            except BlockingIOError:
                pass
        if self.sock in rd:
            self._poll_control()

    def recv(self, timeout=0.0, max_frames=None):
        """The frames received (bytes), waiting up to `timeout` seconds for the first."""
        return self._recv_frames(timeout, max_frames, True)

    def drain(self, timeout=0.0, max_frames=None):
        """Like recv(), but only counts the frames (generators and sinks)."""
        return self._recv_frames(timeout, max_frames, False)

    def _recv_frames(self, timeout, max_frames, keep):
        """While frames keep coming we poll and tell the peer so (MASK_INT: no eventfd
        writes, which would wake us for nothing); before sleeping we ask for interrupts
        again and look once more, so a frame published after that look wakes us."""
        self._check()
        deadline = time.monotonic() + (timeout or 0)
        r = self.rx
        while True:
            got = self._take(max_frames, keep)
            if got:
                if not r.flags & RING_F_MASK_INT:
                    r.flags = r.flags | RING_F_MASK_INT
                return got
            if time.monotonic() >= deadline:
                return got
            if r.flags & RING_F_MASK_INT:
                r.flags = r.flags & ~RING_F_MASK_INT
                full_fence()
                continue
            self._wait(deadline)
            self._check()

    def stats(self):
        return {"tx_frames": self.tx_frames, "rx_frames": self.rx_frames, "rx_bytes": self.rx_bytes,
                "rx_bad": self.rx_bad, "interrupts": self.interrupts}


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="python -m fastpath.memif.client",
                                 description="memif traffic generator / sink")
    ap.add_argument("socket")
    ap.add_argument("--role", default="slave", choices=("slave", "master"))
    ap.add_argument("--id", type=int, default=0)
    ap.add_argument("--ring-size", type=int, default=10, help="log2 of the ring's slots")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--send", type=int, metavar="N", help="send N frames as fast as the ring allows")
    g.add_argument("--sink", type=float, metavar="SECONDS", help="count frames for this long")
    ap.add_argument("--size", type=int, default=64, help="frame size (--send)")
    ap.add_argument("--timeout", type=float, default=30.0)
    a = ap.parse_args(argv)
    c = MemifClient(a.socket, id=a.id, role=a.role, ring_size=a.ring_size, timeout=a.timeout)
    try:
        if a.send is not None:
            eth = bytes.fromhex("02000000000202000000000108004500")
            batch = [(eth + bytes(max(a.size - len(eth), 0)))[:a.size]] * 256
            t0, sent = time.perf_counter(), 0
            while sent < a.send:
                sent += c.send(batch[:min(256, a.send - sent)], timeout=a.timeout)
            dt = time.perf_counter() - t0
            print(f"sent {sent} frames of {a.size} bytes in {dt:.3f} s: {sent / dt / 1e6:.3f} Mpps")
        else:
            end = time.monotonic() + a.sink
            t0 = t1 = None
            n = 0
            while time.monotonic() < end:
                k = c.drain(timeout=0.1)
                if k:
                    t1 = time.perf_counter()
                    t0 = t0 or t1
                    n += k
            rate = n / (t1 - t0) / 1e6 if n and t1 > t0 else 0.0
            print(f"received {n} frames: {rate:.3f} Mpps")
    finally:
        c.close()


if __name__ == "__main__":
    main()
