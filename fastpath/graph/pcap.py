"""pcap files (the classic libpcap format, which tcpdump, Wireshark and scapy read)."""
import struct
import threading
import time

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
LINKTYPE_ETHERNET = 1


class PcapWriter:
    def __init__(self, path, snaplen=65535):
        self.path = path
        self.f = open(path, "wb")
        self.f.write(struct.pack("<IHHiIII", MAGIC_US, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        self.packets = 0
        self.lock = threading.Lock()      # several workers may capture into one file

    def write(self, frame, ts=None):
        ts = time.time() if ts is None else ts
        sec = int(ts)
        usec = int(round((ts - sec) * 1e6))
        if usec >= 1000000:
            sec, usec = sec + 1, usec - 1000000
        with self.lock:
            self.f.write(struct.pack("<IIII", sec, usec, len(frame), len(frame)) + bytes(frame))
            self.packets += 1

    def write_buffers(self, pool, bufs):
        ts = time.time()
        for b in bufs:
            self.write(pool.get_frame(int(b)), ts)
        with self.lock:
            self.f.flush()

    def close(self):
        self.f.close()


def read_pcap(path):
    """Yield (timestamp, frame bytes) from a pcap file; raises ValueError on a bad file."""
    with open(path, "rb") as f:
        hdr = f.read(24)
        if len(hdr) < 24:
            raise ValueError(f"{path}: not a pcap file (short header)")
        magic = struct.unpack("<I", hdr[:4])[0]
        if magic in (MAGIC_US, MAGIC_NS):
            endian = "<"
        elif struct.unpack(">I", hdr[:4])[0] in (MAGIC_US, MAGIC_NS):
            endian = ">"
            magic = struct.unpack(">I", hdr[:4])[0]
        else:
            raise ValueError(f"{path}: not a pcap file (magic {hdr[:4].hex()})")
        linktype = struct.unpack(endian + "I", hdr[20:24])[0]
        if linktype != LINKTYPE_ETHERNET:
            raise ValueError(f"{path}: link type {linktype} is not Ethernet")
        div = 1e9 if magic == MAGIC_NS else 1e6
        while True:
            rec = f.read(16)
            if not rec:
                return
            if len(rec) < 16:
                raise ValueError(f"{path}: truncated record header")
            sec, frac, incl, _orig = struct.unpack(endian + "IIII", rec)
            data = f.read(incl)
            if len(data) < incl:
                raise ValueError(f"{path}: truncated record")
            yield sec + frac / div, data
