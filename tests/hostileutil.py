"""Helpers for tests/test_hostile.py: raw frames in and out of namespaces, a sendmmsg
flood generator (also a command, run inside the flooding namespace), fastpath daemons
driven through fastpathctl, and frame builders for the VPN attacks.

    ip netns exec NS python3 tests/hostileutil.py macflood IFACE --count N --dst MAC
        sends N frames from N distinct source MACs (02:xx:xx:xx:xx:xx, a bijection of the
        frame number, so they look random and never repeat); prints {"sent": N, ...}.
"""
import ctypes
import json
import select
import socket
import struct
import sys
import time

from fastpathd import Fastpathd

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4

_libc = ctypes.CDLL(None, use_errno=True)


class _iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _msghdr), ("msg_len", ctypes.c_uint)]


_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(_mmsghdr), ctypes.c_uint, ctypes.c_int]
_libc.sendmmsg.restype = ctypes.c_int


class Batch:
    """Up to `size` frames of at most `width` bytes in one buffer, sent by sendmmsg()."""

    def __init__(self, size, width):
        import numpy as np
        self.size, self.width = size, width
        self.buf = np.zeros((size, width), dtype=np.uint8)
        base = self.buf.ctypes.data
        self.iov = (_iovec * size)()
        self.msgs = (_mmsghdr * size)()
        for i in range(size):
            self.iov[i].iov_base = base + i * width
            self.iov[i].iov_len = width
            self.msgs[i].msg_hdr.msg_iov = ctypes.pointer(self.iov[i])
            self.msgs[i].msg_hdr.msg_iovlen = 1

    def set(self, i, frame):
        self.buf[i, :len(frame)] = memoryview(frame)
        self.iov[i].iov_len = len(frame)

    def send(self, fd, n):
        """Send frames 0..n-1, retrying what the kernel refuses (ENOBUFS); returns
        (sent, errors)."""
        done = errors = 0
        while done < n:
            r = _libc.sendmmsg(fd, ctypes.cast(ctypes.byref(self.msgs, done * ctypes.sizeof(_mmsghdr)),
                                               ctypes.POINTER(_mmsghdr)), n - done, 0)
            if r > 0:
                done += r
            else:
                errors += 1
                if errors > 100000:
                    raise OSError(ctypes.get_errno(), "sendmmsg keeps failing")
                time.sleep(0.0002)
        return done, errors


def packet_socket(ifname, rcvbuf=4 << 20):
    """A raw AF_PACKET socket bound to ifname in the calling thread's namespace."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((ifname, 0))
    return s


def drain(sock):
    """Discard what is queued on a packet socket."""
    sock.setblocking(False)
    try:
        while True:
            sock.recv(65536)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)


def recv_frames(sock, timeout=0.0):
    """Frames received (not sent) on a packet socket: what is queued now, waiting at most
    `timeout` for the first."""
    out = []
    r, _, _ = select.select([sock], [], [], timeout)
    if not r:
        return out
    sock.setblocking(False)
    try:
        while True:
            data, addr = sock.recvfrom(65536)
            if addr[2] != PACKET_OUTGOING:
                out.append(data)
    except BlockingIOError:
        pass
    finally:
        sock.setblocking(True)
    return out


def mac_bytes(mac):
    return bytes.fromhex(mac.replace(":", ""))


FLOOD_MULT = 0x9E3779B97F                  # odd: i -> i * MULT mod 2^40 is a bijection


def flood_mac(i):
    """The source MAC of flood frame i (02:xx:xx:xx:xx:xx, distinct for every i < 2^40)."""
    return b"\x02" + ((i * FLOOD_MULT) & ((1 << 40) - 1)).to_bytes(5, "big")


def mac_flood(ifname, count, dst, ethertype=0x88b5, batch=512, start=0):
    """Send `count` 60-byte frames to dst from `count` distinct source MACs; returns stats."""
    import numpy as np
    fd_sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    fd_sock.bind((ifname, 0))
    fd_sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    b = Batch(batch, 60)
    b.buf[:, 0:6] = np.frombuffer(mac_bytes(dst), dtype=np.uint8)
    b.buf[:, 6] = 0x02
    b.buf[:, 12:14] = np.frombuffer(struct.pack("!H", ethertype), dtype=np.uint8)
    b.buf[:, 14:18] = np.frombuffer(b"MFLD", dtype=np.uint8)
    mask = (1 << 40) - 1
    sent = errors = 0
    t0 = time.monotonic()
    i = start
    end = start + count
    while i < end:
        n = min(batch, end - i)
        idx = np.arange(i, i + n, dtype=np.uint64)
        v = (idx * np.uint64(FLOOD_MULT)) & np.uint64(mask)
        for k in range(5):                       # bytes 7..11: the 40-bit value, big-endian
            b.buf[:n, 7 + k] = ((v >> np.uint64(8 * (4 - k))) & np.uint64(0xff)).astype(np.uint8)
        b.buf[:n, 18:26] = idx.astype(">u8").view(np.uint8).reshape(n, 8)
        s, e = b.send(fd_sock.fileno(), n)
        sent += s
        errors += e
        i += n
    fd_sock.close()
    return {"sent": sent, "send_errors": errors, "elapsed": time.monotonic() - t0}


def blast(sock, frames, count, batch=256):
    """Send `count` frames cycling through `frames` on a bound packet socket (sendmmsg)."""
    width = max(len(f) for f in frames)
    b = Batch(min(batch, max(count, 1)), width)
    sent = errors = k = 0
    while sent < count:
        n = min(b.size, count - sent)
        for i in range(n):
            b.set(i, frames[k % len(frames)])
            k += 1
        s, e = b.send(sock.fileno(), n)
        sent += s
        errors += e
    return sent


# ---------------------------------------------------------------- VPN attack material

VNI = 5000
NAT_T = 4500
IKE = 500


def ip4_checksum(header):
    s = sum(struct.unpack(f"!{len(header) // 2}H", bytes(header)))
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def with_checksum(frame):
    """frame (bytes) with its IPv4 header checksum recomputed."""
    f = bytearray(frame)
    hlen = (f[14] & 0xf) * 4
    f[24:26] = b"\0\0"
    f[24:26] = struct.pack("!H", ip4_checksum(f[14:14 + hlen]))
    return bytes(f)


def ip4_udp_frame(dst_mac, src_mac, src_ip, dst_ip, payload, sport=NAT_T, dport=NAT_T):
    import ipaddress
    total = 28 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0,
                     ipaddress.IPv4Address(src_ip).packed, ipaddress.IPv4Address(dst_ip).packed)
    return with_checksum(dst_mac + src_mac + b"\x08\x00" + ip
                         + struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload)


def esp_offset(frame):
    """(offset of the ESP header, udp) for an ESP or ESP-in-UDP frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    hlen = (frame[14] & 0xf) * 4
    proto = frame[23]
    if proto == 50:
        return 14 + hlen, False
    if proto == 17 and len(frame) >= 14 + hlen + 16 and frame[14 + hlen + 2:14 + hlen + 4] == b"\x11\x94":
        at = 14 + hlen + 8
        if frame[at:at + 4] != b"\0\0\0\0" and not (len(frame) - at == 1 and frame[at] == 0xff):
            return at, True
    return None


def ike_payload(frame):
    """(UDP port, IKE message) of a frame to UDP 500, or to UDP 4500 with the non-ESP
    marker (stripped), else None."""
    if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
        return None
    hlen = (frame[14] & 0xf) * 4
    udp = 14 + hlen
    dport = struct.unpack("!H", frame[udp + 2:udp + 4])[0]
    if dport == IKE:
        return dport, frame[udp + 8:]
    if dport == NAT_T and frame[udp + 8:udp + 12] == b"\0\0\0\0":
        return dport, frame[udp + 12:]
    return None


def ike_frame(dst_mac, src_mac, src_ip, dst_ip, port, msg):
    """msg as IKE on UDP port (500, or 4500 after the non-ESP marker)."""
    if port == NAT_T:
        msg = b"\0\0\0\0" + msg
    return ip4_udp_frame(dst_mac, src_mac, src_ip, dst_ip, msg, sport=port, dport=port)


def ike_requests_to(frames):
    """The protected IKE requests (not IKE_SA_INIT, not responses) among frames, as (port,
    message)."""
    out = []
    for f in frames:
        p = ike_payload(f)
        if p and len(p[1]) >= 28 and p[1][18] != 34 and not p[1][19] & 0x20:
            out.append(p)
    return out


def esp_seq(frame):
    at, _ = esp_offset(frame)
    return struct.unpack("!I", frame[at + 4:at + 8])[0]


def esp_spi(frame):
    at, _ = esp_offset(frame)
    return struct.unpack("!I", frame[at:at + 4])[0]


def truncated_fixed(frame, n):
    """The first n bytes of an (ESP) IPv4 frame, with IPv4 total length, checksum and UDP
    length made to agree with the cut: only ESP sees that it is short."""
    f = bytearray(frame[:n])
    f[16:18] = struct.pack("!H", n - 14)
    hlen = (f[14] & 0xf) * 4
    if f[23] == 17 and n >= 14 + hlen + 8:
        f[14 + hlen + 4:14 + hlen + 6] = struct.pack("!H", n - 14 - hlen)
    return with_checksum(f)


def rewrap(frame):
    """The same ESP packet in the other encapsulation (plain ESP <-> UDP 4500)."""
    at, udp = esp_offset(frame)
    esp = frame[at:]
    hlen = (frame[14] & 0xf) * 4
    if udp:
        total = hlen + len(esp)
        ip = bytearray(frame[14:14 + hlen])
        ip[2:4] = struct.pack("!H", total)
        ip[9] = 50
        return with_checksum(frame[:14] + bytes(ip) + esp)
    ip = bytearray(frame[14:14 + hlen])
    ip[2:4] = struct.pack("!H", hlen + 8 + len(esp))
    ip[9] = 17
    return with_checksum(frame[:14] + bytes(ip) + struct.pack("!HHHH", NAT_T, NAT_T, 8 + len(esp), 0) + esp)


def with_src_ip(frame, ip):
    import ipaddress
    f = bytearray(frame)
    f[26:30] = ipaddress.IPv4Address(ip).packed
    return with_checksum(f)


def ike_junk(rng, requests, peer_ip, other_ip, n=10):
    """What an attacker sends a gateway's IKE, made of random bytes and of the genuine
    protected requests it received ((port, message), from peer_ip): a list of (source
    address, port, message, reasons), reasons being those of ike-input one of which counts
    it, or () where it may be answered from the IKE SA's last response instead (a replay)."""
    out = []
    for _ in range(n):
        port = rng.choice((IKE, NAT_T))
        out.append((peer_ip, port, rng.randbytes(rng.randrange(0, 28)), ("invalid_syntax",)))
        # a well-formed INFORMATIONAL request for IKE SPIs nobody has
        hdr = struct.pack("!8s8sBBBBII", rng.randbytes(8), rng.randbytes(8), 0, 0x20, 37, 0x08, 0, 28)
        out.append((peer_ip, port, hdr, ("unknown_spi",)))
        out.append((other_ip, port, hdr, ("no_tunnel",)))
    for port, msg in requests:
        cut = rng.randrange(28, len(msg))
        out.append((peer_ip, port, msg[:cut], ("invalid_syntax",)))       # header length disagrees
        flipped = bytearray(msg)
        flipped[rng.randrange(len(msg) - 16, len(msg))] ^= 1 << rng.randrange(8)
        # the ICV refuses it, or its message ID is older than the last answered one
        out.append((peer_ip, port, bytes(flipped), ("integrity_failed", "invalid_message_id")))
        out += [(peer_ip, port, msg, ())] * 2
    return out


def bit_flips(frame):
    """Every single-bit flip of the ESP part of frame, by field:
    {"spi": [...], "seq": [...], "iv": [...], "ciphertext": [...], "icv": [...]}."""
    at, _ = esp_offset(frame)
    fields = {"spi": (at, at + 4), "seq": (at + 4, at + 8), "iv": (at + 8, at + 16),
              "ciphertext": (at + 16, len(frame) - 16), "icv": (len(frame) - 16, len(frame))}
    out = {}
    for name, (lo, hi) in fields.items():
        flips = []
        for byte in range(lo, hi):
            for bit in range(8):
                f = bytearray(frame)
                f[byte] ^= 1 << bit
                flips.append(bytes(f))
        out[name] = flips
    return out


# ---------------------------------------------------------------- two gateways in memory

HA, HB = "00:00:00:00:0a:01", "00:00:00:00:0b:01"          # hosts on VLAN 10 at A and B
HA2, HB2 = "00:00:00:00:0a:02", "00:00:00:00:0b:02"        # hosts on VLAN 20


class VpnLab:
    """Two in-memory gateways (tests/vpnutil.py) with an IKEv2 PSK tunnel, stepped 50 ms at a
    time. A numbered stream flows each way (A h10 -> B h10: "ab", B h20 -> A h20: "ba");
    `attack(dst, frames) -> frames` decides what reaches a gateway's uplink in place of
    the genuine frames of a step (it may add, reorder around, never drop them)."""
    PSK = "a long shared secret"

    def __init__(self, encap=None, ike_queue=None, **options):
        from l2util import Clock
        from vpnutil import A_IP, B_IP
        self.A_IP, self.B_IP = A_IP, B_IP
        self.clock = Clock(1000.0)
        self.ike_queue = ike_queue               # a smaller IKE queue: a smaller flood
        self.options = {"options:psk": self.PSK, **options}
        if encap:
            self.options["options:encap"] = encap
        self.a = self.new_site("a")
        self.b = self.new_site("b")
        self.wire = []                           # (dst name, genuine frame)
        self.sent = {"ab": 0, "ba": 0}
        self.got = {"ab": [], "ba": []}
        self.attack = None

    def new_site(self, name):
        from vpnutil import make_site
        local, remote = (self.A_IP, self.B_IP) if name == "a" else (self.B_IP, self.A_IP)
        sw = make_site(local, remote, self.clock, self.options)
        if self.ike_queue:
            sw.graph["ike-input"].limit = self.ike_queue
        return sw

    def site(self, name):
        return self.a if name == "a" else self.b

    def tunnel(self, name):
        sw = self.site(name)
        return sw.vpn.tunnels[sw.port("vpn0").sw_if_index]

    def ctl(self, name, *argv):
        from fastpath.control import Control
        return Control(self.site(name)).execute(list(argv), "json")

    def errors(self, name):
        return {(r["node"], r["reason"]): r["count"] for r in self.ctl(name, "show", "errors")}

    def mac(self, name):
        return self.site(name).uplinks["up"].mac

    def ip(self, name):
        return self.A_IP if name == "a" else self.B_IP

    def legit(self, direction, seq):
        src, dst = (HA, HB) if direction == "ab" else (HB2, HA2)
        return mac_bytes(dst) + mac_bytes(src) + b"\x88\xb5" + b"LEGIT" + seq.to_bytes(4, "big") + bytes(37)

    def send(self, n=4):
        for direction, port, site in (("ab", "h10", self.a), ("ba", "h20", self.b)):
            frames = []
            for _ in range(n):
                frames.append(self.legit(direction, self.sent[direction]))
                self.sent[direction] += 1
            site.port(port).io[0].add(frames)

    def tick(self, dt=0.05):
        self.clock.t += dt
        for sw in (self.a, self.b):
            sw.vpn.tick(self.clock.t)
            sw.tick()

    def carry(self, rounds=20):
        """Move what each uplink sent to the other (through `attack` the first time)."""
        first = {"a", "b"}
        for _ in range(rounds):
            moved = 0
            for src, dst, dname in ((self.a, self.b, "b"), (self.b, self.a, "a")):
                src.graph.run_until_idle()
                frames = src.uplinks["up"].io[1].take()
                self.wire += [(dname, f) for f in frames]
                if self.attack and dname in first:
                    first.discard(dname)
                    frames = self.attack(dname, frames)
                if frames:
                    dst.uplinks["up"].io[0].add(frames)
                    moved += len(frames)
            if not moved:
                break
        for sw in (self.a, self.b):
            sw.graph.run_until_idle()

    def collect(self):
        for direction, sw, port in (("ab", self.b, "h10"), ("ba", self.a, "h20")):
            for f in sw.port(port).io[1].take():
                if f[14:19] == b"LEGIT":
                    self.got[direction].append(int.from_bytes(f[19:23], "big"))
        for sw in (self.a, self.b):
            for p in sw.ports.values():
                if p.type != "vxlan":
                    p.io[1].take()

    def step(self, n=4):
        if n:
            self.send(n)
        self.tick()
        self.carry()
        self.collect()

    def up(self, steps=40):
        for _ in range(steps):
            self.step(0)
            if all(self.tunnel(x).out for x in "ab") and self.settled():
                return
        raise AssertionError("the tunnel did not come up")

    def settled(self):
        """One established IKE SA each side, with no exchange in progress. (Both sides
        initiate at first; the lower address's IKE SA wins, the other's request leaves a
        half-open responder SA there until it times out.)"""
        up = [s for x in "ab" for s in self.tunnel(x).ike.sas if s.state == "ESTABLISHED"]
        return len(up) == 2 and all(s.pending is None for s in up)

    def ike_state(self, name):
        """What IKE holds: its SAs (SPIs, state, message IDs) and their CHILD_SAs."""
        return [(s.spi_i, s.spi_r, s.state, s.my_next_id, s.peer_next_id,
                 sorted((c.spi_in, c.spi_out) for c in s.children)) for s in self.tunnel(name).ike.sas]

    def sa_rows(self, name):
        return self.ctl(name, "show", "sa")

    def spis(self, name):
        return sorted((r["direction"], r["spi"]) for r in self.sa_rows(name))

    def outbound(self, name):
        return next(r for r in self.sa_rows(name) if r["direction"] == "out")

    def inbound(self, name, spi):
        return next(r for r in self.sa_rows(name) if r["direction"] == "in" and r["spi"] == spi)


class Sniffer:
    """A thread that keeps every frame arriving (not sent) on a packet socket."""

    def __init__(self, sock):
        import threading
        self.sock = sock
        self.frames = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65536)
            except (TimeoutError, BlockingIOError):
                continue
            except OSError:
                return
            if addr[2] != PACKET_OUTGOING:
                self.frames.append(data)

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def send_paced(sock, frames, per_batch=64, pause=0.002):
    """Send frames in batches with a pause between them (what a patient attacker does, so
    that the receiving ring never overflows and every frame can be counted)."""
    for i in range(0, len(frames), per_batch):
        blast(sock, frames[i:i + per_batch], len(frames[i:i + per_batch]))
        time.sleep(pause)


# ---------------------------------------------------------------- daemons

class Daemon(Fastpathd):
    """`fastpath run` in a namespace (or the current one), driven with fastpathctl."""

    # fastpathctl's client code in this process: these tests query a loaded daemon often
    do = Fastpathd.request

    def __init__(self, ns, sock, log, buffers=4096):
        super().__init__(sock, log, ns=ns, args=["--buffers", str(buffers)])
        self.start()

    def json(self, *argv):
        return self.do(*argv, fmt="json")

    def errors(self):
        """show errors as {(node, reason): count}."""
        return {(r["node"], r["reason"]): r["count"] for r in self.json("show", "errors")}

    def interfaces(self):
        return {r["name"]: r for r in self.json("show", "interfaces")}


def _main(argv):
    import argparse
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("macflood")
    f.add_argument("ifname")
    f.add_argument("--count", type=int, required=True)
    f.add_argument("--dst", required=True)
    f.add_argument("--start", type=int, default=0)
    args = p.parse_args(argv)
    if args.cmd == "macflood":
        out = mac_flood(args.ifname, args.count, args.dst, start=args.start)
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
