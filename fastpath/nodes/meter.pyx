# cython: boundscheck=False, wraparound=False, cdivision=True
"""MeterTable: a bridge's OpenFlow meters (meter.pxd), made and changed by the control
plane under the workers' barrier, read by flow-classify through pipeline_t.meters."""
import time
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc, free
from fastpath.graph.clock cimport now_ns

BAND_TYPES = {"drop": MB_DROP, "dscp_remark": MB_DSCP_REMARK}
BAND_NAMES = {v: k for k, v in BAND_TYPES.items()}


class Meter:
    """One meter as the controller gave it: flags (MF_*) and bands [(type name, rate,
    burst_size, prec_level)], with the slot its compiled form has."""
    def __init__(self, meter_id, flags, bands, slot):
        self.meter_id = meter_id
        self.flags = flags
        self.bands = bands
        self.slot = slot
        self.created = time.monotonic()

    @property
    def kbps(self):
        return not self.flags & MF_PKTPS


cdef class MeterTable:
    """Up to MAX_METERS meters by id. set() checks everything before it changes anything
    (ValueError says what is wrong)."""

    def __cinit__(self, int workers=1):
        self.meters = <meter_t *> calloc(MAX_METERS, sizeof(meter_t))
        if self.meters == NULL:
            raise MemoryError()

    def __init__(self, int workers=1):
        self.workers = workers
        self._by_id = {}
        self._free_slots = list(range(MAX_METERS - 1, -1, -1))

    def __dealloc__(self):
        cdef int i
        if self.meters != NULL:
            for i in range(MAX_METERS):
                free(self.meters[i].counts)
        free(self.meters)

    max_meters = MAX_METERS
    max_bands = MAX_BANDS

    def set(self, meter_id, int flags, bands):
        """Add meter_id, or change it (its buckets start full again; counters kept)."""
        if not flags & (MF_KBPS | MF_PKTPS) or (flags & MF_KBPS and flags & MF_PKTPS):
            raise ValueError("a meter is either kbps or pktps")
        if not 1 <= len(bands) <= MAX_BANDS:
            raise ValueError(f"a meter has 1..{MAX_BANDS} bands, not {len(bands)}")
        for kind, rate, burst, prec in bands:
            if kind not in BAND_TYPES:
                raise ValueError(f"band type {kind!r}")
            if rate == 0:
                raise ValueError("band rate 0")
        m = self._by_id.get(meter_id)
        if m is None:
            if not self._free_slots:
                raise OverflowError(f"no room for more than {MAX_METERS} meters")
            m = Meter(meter_id, flags, bands, self._free_slots.pop())
            self._by_id[meter_id] = m
        m.flags, m.bands = flags, list(bands)
        cdef meter_t *c = &self.meters[<int> m.slot]
        if c.counts == NULL:
            c.counts = <uint64_t *> calloc(self.workers * M_COUNTS, sizeof(uint64_t))
            if c.counts == NULL:
                raise MemoryError()
        cdef int k
        cdef double per_ns, capacity
        for k, (kind, rate, burst, prec) in enumerate(bands):
            # tokens: bits (kbps) or packets (pktps); burst_size: kilobits or packets
            per_ns = rate * (1000.0 if flags & MF_KBPS else 1.0) / 1e9
            capacity = (burst if flags & MF_BURST and burst else rate) * (1000.0 if flags & MF_KBPS else 1.0)
            c.bands[k].type = BAND_TYPES[kind]
            c.bands[k].prec_level = prec
            c.bands[k].rate = per_ns
            c.bands[k].capacity = capacity
            c.bands[k].tokens = capacity
        c.flags = flags
        c.last_ns = now_ns()
        c.n_bands = len(bands)
        return m

    def delete(self, meter_id):
        """Take meter_id out; False when there was none."""
        m = self._by_id.pop(meter_id, None)
        if m is None:
            return False
        cdef meter_t *c = &self.meters[<int> m.slot]
        c.n_bands = 0
        free(c.counts)
        c.counts = NULL
        self._free_slots.append(m.slot)
        return True

    def get(self, meter_id):
        return self._by_id.get(meter_id)

    @property
    def all(self):
        return sorted(self._by_id.values(), key=lambda m: m.meter_id)

    def __len__(self):
        return len(self._by_id)

    def counters(self, m):
        """(packets, bytes, [(packets, bytes) per band]) summed over the workers."""
        cdef meter_t *c = &self.meters[<int> m.slot]
        cdef int w, k
        totals = [0] * M_COUNTS
        if c.counts != NULL:
            for w in range(self.workers):
                for k in range(M_COUNTS):
                    totals[k] += c.counts[w * M_COUNTS + k]
        return totals[0], totals[1], [(totals[2 + 2 * k], totals[3 + 2 * k])
                                      for k in range(len(m.bands))]

    def meter_frame(self, meter_id, int length):
        """Meter one frame from the control plane (the OFPM_CONTROLLER meter on
        PACKET_INs): the name of the band that applies, or None."""
        m = self._by_id.get(meter_id)
        if m is None:
            return None
        cdef int k = meter_apply(&self.meters[<int> m.slot], length, 0, now_ns())
        return None if k < 0 else m.bands[k][0]
