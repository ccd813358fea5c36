"""Tests for the MAC learning table (fastpath.nodes.fdb)."""

import itertools

import pytest
from hypothesis import settings, strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, rule)

from fastpath.nodes.fdb import Fdb, FdbResult, key_of

LEARNED = FdbResult.FDB_LEARNED
REFRESHED = FdbResult.FDB_REFRESHED
MOVED = FdbResult.FDB_MOVED
EVICTED = FdbResult.FDB_EVICTED
STATIC = FdbResult.FDB_STATIC
FULL = FdbResult.FDB_FULL

A = "50:54:00:00:00:01"
B = "50:54:00:00:00:02"
C = "50:54:00:00:00:03"
D = "50:54:00:00:00:04"
E = "50:54:00:00:00:05"
F = "50:54:00:00:00:06"


def mac(i):
    return f"02:00:{(i >> 24) & 0xff:02x}:{(i >> 16) & 0xff:02x}:{(i >> 8) & 0xff:02x}:{i & 0xff:02x}"


def test_key_layout():
    assert key_of("01:02:03:04:05:06", 0x123) == 0x0123_0102_0304_0506
    assert key_of(b"\x01\x02\x03\x04\x05\x06", 0) == 0x0102_0304_0506
    assert key_of(0xFFFF_FFFF_FFFF, 4095) == 0x0FFF_FFFF_FFFF_FFFF
    assert key_of("1-2-3-4-5-6", 1) == key_of("01:02:03:04:05:06", 1)


@pytest.mark.parametrize("bad_mac", ["50:54:00:00:00", "50:54:00:00:00:01:02",
                                     "zz:54:00:00:00:01", "+1:54:00:00:00:01",
                                     " 1:54:00:00:00:01", b"\x00" * 5, 1 << 48, 1.0])
def test_rejects_bad_mac(bad_mac):
    with pytest.raises((ValueError, TypeError)):
        Fdb().learn_py(bad_mac, 0, 1, 0.0)


def test_rejects_bad_vlan_port_and_size():
    fdb = Fdb()
    with pytest.raises(ValueError):
        fdb.learn_py(A, 4096, 1, 0.0)
    with pytest.raises(ValueError):
        fdb.learn_py(A, -1, 1, 0.0)
    with pytest.raises(ValueError):
        fdb.learn_py(A, 0, 65536, 0.0)
    with pytest.raises(ValueError):
        Fdb(max_entries=0)
    with pytest.raises(ValueError):
        Fdb(aging_time=-1)


def test_defaults_and_table_size():
    fdb = Fdb()
    assert fdb.max_entries == 8192
    assert fdb.aging_time == 300.0
    assert fdb.table_size == 16384
    assert Fdb(8).table_size == 16
    assert Fdb(5).table_size == 16
    assert Fdb(1).table_size == 2
    fdb.aging_time = 60.0
    assert fdb.aging_time == 60.0


def test_learn_lookup():
    fdb = Fdb()
    assert fdb.lookup_py(A, 1) == -1
    assert fdb.learn_py(A, 1, 3, 0.0) == LEARNED
    assert fdb.lookup_py(A, 1) == 3
    assert fdb.lookup_py(b"\x50\x54\x00\x00\x00\x01", 1) == 3
    assert fdb.lookup_py(B, 1) == -1
    assert fdb.learn_py(A, 1, 3, 0.5) == REFRESHED
    assert len(fdb) == 1
    assert fdb.stats() == {"n_entries": 1, "learned": 1, "moved": 0,
                           "evicted": 0, "aged": 0, "static_refused": 0}
    fdb.check_invariants()


def test_vlans_are_separate():
    fdb = Fdb()
    assert fdb.learn_py(A, 10, 1, 0.0) == LEARNED
    assert fdb.learn_py(A, 20, 2, 0.0) == LEARNED
    assert len(fdb) == 2
    assert fdb.lookup_py(A, 10) == 1
    assert fdb.lookup_py(A, 20) == 2
    assert fdb.lookup_py(A, 30) == -1
    assert fdb.moved == 0
    assert fdb.remove(A, 10)
    assert fdb.lookup_py(A, 20) == 2


def test_move():
    fdb = Fdb()
    fdb.learn_py(A, 1, 1, 0.0)
    fdb.learn_py(B, 1, 1, 0.0)
    assert fdb.learn_py(A, 1, 2, 0.2) == MOVED
    assert fdb.lookup_py(A, 1) == 2
    assert fdb.moved == 1
    assert fdb.learned == 2
    assert len(fdb) == 2
    # A move counts as activity even within the refresh interval.
    assert fdb.lru_order() == [(1, B), (1, A)]
    assert fdb.learn_py(A, 1, 1, 0.3) == MOVED
    assert fdb.moved == 2


def test_static_entries_win_over_learning():
    fdb = Fdb()
    fdb.add_static(A, 1, 5)
    assert fdb.lookup_py(A, 1) == 5
    assert fdb.learn_py(A, 1, 6, 0.0) == STATIC
    assert fdb.lookup_py(A, 1) == 5
    assert fdb.static_refused == 1
    # Same port: nothing to refuse.
    assert fdb.learn_py(A, 1, 5, 0.0) == STATIC
    assert fdb.static_refused == 1
    assert fdb.moved == 0 and fdb.learned == 0

    # A static add takes over a dynamic entry.
    fdb.learn_py(B, 1, 1, 0.0)
    fdb.add_static(B, 1, 2)
    assert fdb.lookup_py(B, 1) == 2
    assert fdb.learn_py(B, 1, 1, 1.0) == STATIC
    assert len(fdb) == 2
    assert fdb.lru_order() == []
    # Re-adding changes the port.
    fdb.add_static(B, 1, 3)
    assert fdb.lookup_py(B, 1) == 3

    # Never aged, never flushed without include_static.
    assert fdb.age(1e9) == 0
    assert fdb.flush() == 0
    assert len(fdb) == 2
    fdb.check_invariants()


def test_full_of_static_entries():
    fdb = Fdb(max_entries=2)
    fdb.add_static(A, 1, 1)
    fdb.add_static(B, 1, 1)
    assert fdb.learn_py(C, 1, 1, 0.0) == FULL
    assert fdb.lookup_py(C, 1) == -1
    assert len(fdb) == 2 and fdb.learned == 0 and fdb.evicted == 0
    with pytest.raises(RuntimeError):
        fdb.add_static(C, 1, 1)
    fdb.check_invariants()


def test_static_add_evicts_dynamic_when_full():
    fdb = Fdb(max_entries=2)
    fdb.learn_py(A, 1, 1, 0.0)
    fdb.learn_py(B, 1, 1, 1.0)
    fdb.add_static(C, 1, 9)
    assert fdb.lookup_py(A, 1) == -1
    assert fdb.lookup_py(C, 1) == 9
    assert fdb.evicted == 1
    assert fdb.learn_py(D, 1, 1, 2.0) == EVICTED  # evicts B, never C
    assert fdb.lookup_py(C, 1) == 9
    assert fdb.learn_py(E, 1, 1, 3.0) == EVICTED  # evicts D
    assert sorted(e[2] for e in fdb.entries(3.0)) == [C, E]


def test_overflow_evicts_oldest_respecting_refreshes():
    fdb = Fdb(max_entries=4)
    for t, m in enumerate([A, B, C, D]):
        assert fdb.learn_py(m, 1, 1, float(t)) == LEARNED
    assert fdb.lru_order() == [(1, A), (1, B), (1, C), (1, D)]

    # A refreshed 3.5 s after it was learned: moves to the tail.
    assert fdb.learn_py(A, 1, 1, 3.5) == REFRESHED
    assert fdb.lru_order() == [(1, B), (1, C), (1, D), (1, A)]
    assert fdb.learn_py(E, 1, 1, 4.0) == EVICTED
    assert fdb.lookup_py(B, 1) == -1
    assert fdb.lookup_py(A, 1) == 1

    # C refreshed only 0.5 s after its last update: stays put, so it goes next.
    assert fdb.learn_py(C, 1, 1, 2.5) == REFRESHED
    assert fdb.lru_order() == [(1, C), (1, D), (1, A), (1, E)]
    assert fdb.learn_py(F, 1, 1, 5.0) == EVICTED
    assert fdb.lookup_py(C, 1) == -1

    assert fdb.evicted == 2
    assert fdb.learned == 6
    assert len(fdb) == 4
    fdb.check_invariants()


def test_aging_with_injected_clock():
    fdb = Fdb(aging_time=10.0)
    fdb.learn_py(A, 1, 1, 0.0)
    fdb.learn_py(B, 1, 1, 5.0)
    fdb.add_static(C, 1, 1)
    # A refresh inside the refresh interval does not extend the lifetime.
    fdb.learn_py(A, 1, 1, 0.5)

    assert fdb.age(9.999) == 0
    assert fdb.age(10.0) == 1          # exactly aging_time after last_seen
    assert fdb.lookup_py(A, 1) == -1
    assert fdb.lookup_py(B, 1) == 1
    assert fdb.age(14.9) == 0
    # B refreshed at 14.9: lives until 24.9.
    assert fdb.learn_py(B, 1, 1, 14.9) == REFRESHED
    assert fdb.age(24.8) == 0
    assert fdb.age(24.9) == 1
    assert fdb.lookup_py(C, 1) == 1    # static entries never age
    assert fdb.aged == 2
    assert len(fdb) == 1

    fdb.aging_time = 1.0
    fdb.learn_py(D, 1, 1, 100.0)
    assert fdb.age(100.5) == 0
    assert fdb.age(101.0) == 1
    fdb.check_invariants()


def test_age_stops_at_first_young_entry():
    fdb = Fdb(max_entries=1000, aging_time=10.0)
    for i in range(1000):
        fdb.learn_py(mac(i), 0, 1, float(i))
    assert fdb.age(10.0 + 499) == 500
    assert len(fdb) == 500
    assert fdb.lookup_py(mac(499), 0) == -1
    assert fdb.lookup_py(mac(500), 0) == 1
    fdb.check_invariants()


def make_flush_table():
    fdb = Fdb()
    fdb.learn_py(A, 10, 1, 0.0)
    fdb.learn_py(B, 10, 2, 0.0)
    fdb.learn_py(C, 20, 1, 0.0)
    fdb.learn_py(D, 20, 2, 0.0)
    fdb.add_static(E, 10, 1)
    fdb.add_static(F, 20, 2)
    return fdb


def remaining(fdb):
    return sorted(e[2] for e in fdb.entries(0.0))


def test_flush_all_dynamic():
    fdb = make_flush_table()
    assert fdb.flush() == 4
    assert remaining(fdb) == [E, F]
    fdb.check_invariants()


def test_flush_by_port_vlan_and_both():
    fdb = make_flush_table()
    assert fdb.flush(port=1) == 2
    assert remaining(fdb) == [B, D, E, F]

    fdb = make_flush_table()
    assert fdb.flush(vlan=20) == 2
    assert remaining(fdb) == [A, B, E, F]

    fdb = make_flush_table()
    assert fdb.flush(port=2, vlan=10) == 1
    assert remaining(fdb) == [A, C, D, E, F]

    fdb = make_flush_table()
    assert fdb.flush(port=7) == 0
    assert len(fdb) == 6
    fdb.check_invariants()


def test_flush_including_static_and_port_removed():
    fdb = make_flush_table()
    assert fdb.flush(vlan=10, include_static=True) == 3
    assert remaining(fdb) == [C, D, F]

    fdb = make_flush_table()
    assert fdb.port_removed(2) == 3
    assert remaining(fdb) == [A, C, E]

    fdb = make_flush_table()
    assert fdb.flush(include_static=True) == 6
    assert len(fdb) == 0
    fdb.check_invariants()


def test_remove():
    fdb = make_flush_table()
    assert fdb.remove(A, 10)
    assert not fdb.remove(A, 10)
    assert not fdb.remove(A, 20)
    assert fdb.remove(E, 10)           # static too
    assert remaining(fdb) == [B, C, D, F]
    fdb.check_invariants()


def test_set_max_entries_shrink_and_grow():
    fdb = Fdb(max_entries=8)
    fdb.add_static(A, 0, 9)
    for i in range(7):
        fdb.learn_py(mac(i), 0, i, float(i))
    assert len(fdb) == 8

    fdb.set_max_entries(4)
    assert fdb.max_entries == 4
    assert fdb.table_size == 8
    assert len(fdb) == 4
    assert fdb.evicted == 4
    # The static entry and the three newest dynamic ones survive, in order.
    assert fdb.lookup_py(A, 0) == 9
    assert fdb.lru_order() == [(0, mac(4)), (0, mac(5)), (0, mac(6))]
    for i in range(4, 7):
        assert fdb.lookup_py(mac(i), 0) == i
    fdb.check_invariants()

    with pytest.raises(ValueError):
        fdb.set_max_entries(0)

    fdb.set_max_entries(1000)
    assert fdb.table_size == 2048
    assert len(fdb) == 4
    assert fdb.lru_order() == [(0, mac(4)), (0, mac(5)), (0, mac(6))]
    for i in range(100):
        fdb.learn_py(mac(100 + i), 0, 1, 10.0)
    assert len(fdb) == 104
    fdb.check_invariants()


def test_set_max_entries_below_static_count():
    fdb = Fdb(max_entries=4)
    fdb.add_static(A, 0, 1)
    fdb.add_static(B, 0, 1)
    fdb.learn_py(C, 0, 1, 0.0)
    with pytest.raises(ValueError):
        fdb.set_max_entries(1)
    assert len(fdb) == 3 and fdb.max_entries == 4
    fdb.set_max_entries(2)
    assert remaining(fdb) == [A, B]
    fdb.check_invariants()


def test_entries_sorted_with_ages():
    fdb = Fdb()
    fdb.learn_py(B, 20, 2, 100.0)
    fdb.learn_py(A, 20, 2, 101.0)
    fdb.learn_py(C, 10, 2, 102.0)
    fdb.learn_py(D, 10, 1, 103.0)
    fdb.add_static(E, 5, 3)
    assert fdb.entries(110.9) == [
        (1, 10, D, 7, False),
        (2, 10, C, 8, False),
        (2, 20, A, 9, False),
        (2, 20, B, 10, False),
        (3, 5, E, -1, True),
    ]


def test_show_format():
    fdb = Fdb()
    fdb.learn_py(A, 10, 1, 100.0)
    fdb.learn_py("50:54:00:AB:CD:EF", 0, 2, 103.0)
    fdb.learn_py(C, 4095, 65534, 104.0)
    fdb.add_static(D, 1, 12)
    out = fdb.format_show(105.5, {2: "p2", 12: "br-int"})
    assert out == (
        " port  VLAN  MAC                Age\n"
        "br-int     1  50:54:00:00:00:04  static\n"
        "    1    10  50:54:00:00:00:01    5\n"
        "   p2     0  50:54:00:ab:cd:ef    2\n"
        "65534  4095  50:54:00:00:00:03    1\n"
    )
    assert Fdb().format_show(0.0) == " port  VLAN  MAC                Age\n"
    # Ages are whole seconds and never negative.
    fdb = Fdb()
    fdb.learn_py(A, 1, 1, 50.0)
    assert fdb.format_show(1050.0).splitlines()[1] == "    1     1  50:54:00:00:00:01  1000"
    assert fdb.format_show(49.0).splitlines()[1] == "    1     1  50:54:00:00:00:01    0"


def colliding_macs(table_size, home_slots, vlan, count):
    """MACs whose probe sequences start in ``home_slots`` of a table this size."""
    probe = Fdb(max_entries=table_size // 2)
    assert probe.table_size == table_size
    found = []
    for i in itertools.count():
        if probe.home_slot(mac(i), vlan) in home_slots:
            found.append(mac(i))
            if len(found) == count:
                return found


@pytest.mark.parametrize("home", [0, 7, 15])
def test_backward_shift_deletion_all_orders(home):
    # Five keys sharing a home slot plus one homed right after it: every
    # removal order must leave the rest reachable and the cluster hole-free.
    same = colliding_macs(16, {home}, 0, 5)
    nxt = colliding_macs(16, {(home + 1) % 16}, 0, 1)
    keys = same + nxt
    for order in itertools.permutations(range(6)):
        fdb = Fdb(max_entries=8)
        for port, m in enumerate(keys):
            fdb.learn_py(m, 0, port, 0.0)
        fdb.check_invariants()
        removed = set()
        for idx in order:
            assert fdb.remove(keys[idx], 0)
            removed.add(idx)
            fdb.check_invariants()
            for port, m in enumerate(keys):
                assert fdb.lookup_py(m, 0) == (-1 if port in removed else port)
        assert len(fdb) == 0


def test_mac_flood_is_bounded():
    n = 1_000_000
    fdb = Fdb(max_entries=8192)
    learn = fdb.learn_py
    base = 0x02_00_00_00_00_00
    for i in range(n):
        learn(base | i, 1, i & 15, 0.0)
    assert len(fdb) == 8192
    assert fdb.learned == n
    assert fdb.evicted == n - 8192
    assert fdb.lookup_py(base, 1) == -1
    assert fdb.lookup_py(base | (n - 8193), 1) == -1
    assert fdb.lookup_py(base | (n - 8192), 1) == (n - 8192) & 15
    assert fdb.lookup_py(base | (n - 1), 1) == (n - 1) & 15
    fdb.check_invariants()


# ---------------------------------------------------------------------------
# Model-based test: the C table against a dict-and-list model.
# ---------------------------------------------------------------------------

class Model:
    """Reference semantics.  Dicts keep insertion order: ``dyn`` is the LRU
    list (oldest first) and ``static`` the static list."""

    def __init__(self, max_entries, aging_time):
        self.max_entries = max_entries
        self.aging_time = aging_time
        self.dyn = {}       # (vlan, mac) -> [port, last_seen]
        self.static = {}    # (vlan, mac) -> port
        self.stats = dict(n_entries=0, learned=0, moved=0, evicted=0, aged=0,
                          static_refused=0)

    def __len__(self):
        return len(self.dyn) + len(self.static)

    def _evict(self):
        del self.dyn[next(iter(self.dyn))]
        self.stats["evicted"] += 1

    def learn(self, key, port, now):
        if key in self.static:
            if self.static[key] != port:
                self.stats["static_refused"] += 1
            return STATIC
        if key in self.dyn:
            old_port, seen = self.dyn[key]
            if old_port != port:
                del self.dyn[key]
                self.dyn[key] = [port, now]
                self.stats["moved"] += 1
                return MOVED
            if now - seen >= 1.0:
                del self.dyn[key]
                self.dyn[key] = [port, now]
            return REFRESHED
        result = LEARNED
        if len(self) >= self.max_entries:
            if not self.dyn:
                return FULL
            self._evict()
            result = EVICTED
        self.dyn[key] = [port, now]
        self.stats["learned"] += 1
        return result

    def lookup(self, key):
        if key in self.static:
            return self.static[key]
        return self.dyn[key][0] if key in self.dyn else -1

    def add_static(self, key, port):
        if key in self.static:
            self.static[key] = port
            return
        if key in self.dyn:
            del self.dyn[key]
        elif len(self) >= self.max_entries:
            if not self.dyn:
                raise RuntimeError
            self._evict()
        self.static[key] = port

    def remove(self, key):
        return (self.dyn.pop(key, None) or self.static.pop(key, None)) is not None

    def age(self, now):
        n = 0
        for key, (_, seen) in list(self.dyn.items()):
            if seen + self.aging_time > now:
                break
            del self.dyn[key]
            n += 1
        self.stats["aged"] += n
        return n

    def flush(self, port, vlan, include_static):
        def match(key, p):
            return (port is None or p == port) and (vlan is None or key[0] == vlan)
        n = 0
        for key, (p, _) in list(self.dyn.items()):
            if match(key, p):
                del self.dyn[key]
                n += 1
        if include_static:
            for key, p in list(self.static.items()):
                if match(key, p):
                    del self.static[key]
                    n += 1
        return n

    def set_max_entries(self, n):
        if n < len(self.static):
            raise ValueError
        while len(self) > n:
            self._evict()
        self.max_entries = n


# max_entries=8 gives a 16-slot table.  Keys whose probes start in slots
# 14, 15, 0 and 1 form long clusters that wrap around the end of the table,
# so removals, aging and eviction all exercise backward-shift deletion.
POOL = ([(1, m) for m in colliding_macs(16, {14, 15, 0, 1}, 1, 8)]
        + [(2, m) for m in colliding_macs(16, {14, 15, 0, 1}, 2, 4)]
        + [(1, mac(0xABCDEF)), (2, mac(0x123456))])

keys = st.sampled_from(POOL)
ports = st.integers(0, 3)
steps = st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0, 2.0, 4.0])


class FdbMachine(RuleBasedStateMachine):

    @initialize()
    def setup(self):
        self.fdb = Fdb(max_entries=8, aging_time=6.0)
        self.model = Model(8, 6.0)
        self.now = 1000.0

    @rule(key=keys, port=ports, dt=steps)
    def learn(self, key, port, dt):
        self.now += dt
        vlan, m = key
        assert self.fdb.learn_py(m, vlan, port, self.now) == self.model.learn(key, port, self.now)

    @rule(key=keys)
    def lookup(self, key):
        vlan, m = key
        assert self.fdb.lookup_py(m, vlan) == self.model.lookup(key)

    @rule(dt=steps)
    def age(self, dt):
        self.now += dt
        assert self.fdb.age(self.now) == self.model.age(self.now)

    @rule(port=st.none() | ports, vlan=st.none() | st.sampled_from([1, 2]),
          include_static=st.booleans())
    def flush(self, port, vlan, include_static):
        assert (self.fdb.flush(port=port, vlan=vlan, include_static=include_static)
                == self.model.flush(port, vlan, include_static))

    @rule(key=keys)
    def remove(self, key):
        vlan, m = key
        assert self.fdb.remove(m, vlan) == self.model.remove(key)

    @rule(key=keys, port=ports)
    def add_static(self, key, port):
        vlan, m = key
        try:
            self.model.add_static(key, port)
        except RuntimeError:
            with pytest.raises(RuntimeError):
                self.fdb.add_static(m, vlan, port)
        else:
            self.fdb.add_static(m, vlan, port)

    @rule(n=st.integers(1, 9))
    def set_max_entries(self, n):
        try:
            self.model.set_max_entries(n)
        except ValueError:
            with pytest.raises(ValueError):
                self.fdb.set_max_entries(n)
        else:
            self.fdb.set_max_entries(n)

    @invariant()
    def agrees_with_model(self):
        self.fdb.check_invariants()
        assert len(self.fdb) == len(self.model)
        stats = dict(self.model.stats, n_entries=len(self.model))
        assert self.fdb.stats() == stats
        assert self.fdb.lru_order() == list(self.model.dyn)
        assert sorted((v, m) for _, v, m, _, s in self.fdb.entries(self.now) if s) \
            == sorted(self.model.static)


FdbMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60,
                                        deadline=None)
TestFdbModel = FdbMachine.TestCase
