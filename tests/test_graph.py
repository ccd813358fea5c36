"""The core: buffer pool accounting, dispatch by next arc, Python nodes, counters,
error reasons, the tracer and pcap capture."""
import numpy as np
import pytest
from scapy.utils import rdpcap

from fastpath.graph.buffer import BufferPool
from fastpath.graph.graph import Graph
from fastpath.graph.node import Node
from fastpath.graph.pcap import PcapWriter, read_pcap
from fastpath.pg.pg import PgInput, PgOutput
from l2util import frame


def test_pool_alloc_free_accounting():
    pool = BufferPool(64)
    a = pool.alloc_py(40)
    assert len(a) == 40 and len(set(a.tolist())) == 40
    pool.check_accounting(40)
    b = pool.alloc_py(40)                       # only 24 left: a short allocation, counted
    assert len(b) == 24 and pool.alloc_failures == 16
    pool.free_py(a)
    pool.free_py(b)
    pool.check_accounting(0)


def test_pool_double_free_is_detected():
    pool = BufferPool(8)
    a = pool.alloc_py(2)
    pool.free_py(a)
    pool.free_py(a[:1])
    with pytest.raises(AssertionError):
        pool.check_accounting()


def test_frame_headroom_and_roundtrip():
    pool = BufferPool(4)
    b = int(pool.alloc_py(1)[0])
    pool.set_frame(b, b"abc")
    assert pool.get_frame(b) == b"abc"
    assert pool.meta("offset")[b] >= 128
    with pytest.raises(ValueError):
        pool.set_frame(b, bytes(4000))


class Parity(Node):
    """A Python node: even-length frames go on, odd ones are dropped with a reason."""
    next_nodes = ("out",)
    errors = (("odd_length", "frame has an odd length"),)

    def process(self, vector):
        odd = (self.pool.meta("length")[vector] & 1).astype(bool)
        self.pool.meta("next")[vector] = np.where(odd, 0, 1)
        self.pool.meta("error")[vector[odd]] = self.error_code("odd_length")


def small_graph(node):
    g = Graph(n_buffers=2048)
    inp = g.add(PgInput("in", 1, next_node=node.name))
    g.add(node)
    out = g.add(PgOutput("out", 1))
    return g, inp, out


def test_python_node_plugs_in_and_counts():
    g, inp, out = small_graph(Parity("parity"))
    frames = [bytes(60 + (i % 2)) for i in range(1000)]
    inp.add(frames)
    g.run_until_idle()
    assert out.take() == frames[0::2]
    assert g.errors() == [(500, "parity", "odd_length", "frame has an odd length")]
    rt = {r["name"]: r for r in g.runtime()}
    assert rt["parity"]["packets"] == 1000
    assert rt["parity"]["calls"] == 4                      # 1000 frames = 4 vectors of <= 256
    assert rt["out"]["packets"] == 500
    g.pool.check_accounting(0)


def test_vectors_are_at_most_256():
    sizes = []

    class Spy(Node):
        next_nodes = ("out",)

        def process(self, vector):
            sizes.append(len(vector))
            self.pool.meta("next")[vector] = 1

    g, inp, out = small_graph(Spy("spy"))
    inp.add([bytes(64)] * 1000)
    g.run_until_idle()
    assert sizes == [256, 256, 256, 232]
    assert len(out.take()) == 1000


def test_arc_to_missing_node_drops_and_counts():
    g = Graph(n_buffers=64)
    inp = g.add(PgInput("in", 1, next_node="nowhere"))
    inp.add([bytes(64)] * 3)
    g.run_until_idle()
    assert g.drop.packets == 3
    g.pool.check_accounting(0)


def test_tracer_records_path_and_decode():
    g, inp, out = small_graph(Parity("parity"))
    inp.add([bytes(frame(src="00:00:00:00:00:0a")), bytes(61), bytes(64)])
    g.trace_add("in", 2)
    g.run_until_idle()
    assert g.tracer.paths() == [["in", "parity", "out"], ["in", "parity", "error-drop"]]
    text = g.tracer.show()
    assert "00:00:00:00:00:0a -> ff:ff:ff:ff:ff:ff" in text and "parity: frame has an odd length" in text
    g.trace_clear()
    assert g.tracer.show() == "No packets in trace buffer"


def test_pcap_capture_is_readable_by_scapy(tmp_path):
    g, inp, out = small_graph(Parity("parity"))
    frames = [bytes(frame(src=f"00:00:00:00:00:{i:02x}")) for i in range(5)]
    out.capture = PcapWriter(str(tmp_path / "out.pcap"))
    inp.add(frames)
    g.run_until_idle()
    out.capture.close()
    assert [bytes(p) for p in rdpcap(str(tmp_path / "out.pcap"))] == frames
    assert [f for _, f in read_pcap(str(tmp_path / "out.pcap"))] == frames


def test_read_pcap_rejects_garbage(tmp_path):
    p = tmp_path / "bad.pcap"
    p.write_bytes(b"not a pcap file at all, really")
    with pytest.raises(ValueError, match="not a pcap"):
        list(read_pcap(str(p)))


def test_a_node_added_again_gets_its_error_codes_back():
    """Ports are deleted and re-added for ever (a VM that reconnects): a node re-added
    under its name reuses its codes, and its counts go on, so the 16-bit error-code
    space does not run out; a new name gets new codes."""
    g, inp, out = small_graph(Parity("parity"))
    n_codes = len(g.error_names)
    g.add(Chatty("chatty"))
    for _ in range(0x10000 // len(Chatty.errors) + 1):   # more codes than there are, in all
        g.remove("chatty")
        g.add(Chatty("chatty"))
    assert len(g.error_names) == n_codes + len(Chatty.errors)
    inp.add([bytes(61)] * 3)
    g.run_until_idle()
    g.remove("parity")
    g.add(Parity("parity"))
    inp.add([bytes(61)] * 2)
    g.run_until_idle()
    assert g.errors() == [(5, "parity", "odd_length", "frame has an odd length")]
    g.add(Parity("parity2"))
    assert len(g.error_names) == n_codes + len(Chatty.errors) + 1
    g.pool.check_accounting(0)


class Chatty(Node):
    """A node with a thousand drop reasons, to use up error codes quickly."""
    errors = tuple((f"reason{i}", f"reason number {i}") for i in range(1000))


def test_error_codes_run_out_with_a_clear_error():
    g = Graph(n_buffers=64)
    for i in range(0xffff // len(Chatty.errors)):
        g.add(Chatty(f"c{i}"))
    with pytest.raises(ValueError, match="too many error reasons"):
        g.add(Chatty("one-too-many"))
    assert "one-too-many" not in g


def test_busy_loop_serves_control_within_a_loop_or_two():
    """Under load a dispatch loop can take milliseconds; a control socket must not wait
    for a fixed number of loops (it once waited for 64: seconds under full load)."""
    import socket
    import threading
    import time

    class Slow(Node):
        next_nodes = ("out",)
        calls = 0

        def process(self, vector):
            Slow.calls += 1
            time.sleep(0.003)                      # a loop that takes 3 ms
            self.pool.meta("next")[vector] = 1

    g, inp, out = small_graph(Slow("slow"))
    inp.add([bytes(64)] * 4)
    inp.loop = True
    inp.limit = 10 ** 9                            # always busy
    a, b = socket.socketpair()
    served = []

    def on_control(fd):
        served.append(Slow.calls)
        a.recv(64)
        g.stop()

    g.add_fd(a.fileno(), on_control)

    def client():                                  # another process, in real life
        time.sleep(0.05)
        sent.append(Slow.calls)
        b.send(b"show runtime")

    sent = []
    threading.Thread(target=client).start()
    g.run()
    assert sent and served, (sent, served)
    assert served[0] - sent[0] <= 2, (sent, served)
    a.close(), b.close()


def test_run_sleeps_when_idle_and_stops():
    import threading
    import time
    g, inp, out = small_graph(Parity("parity"))
    g.add_timer(0.05, lambda now: g.stop() if len(out.frames) else None)
    inp.add([bytes(64)])
    t0 = time.process_time()
    th = threading.Thread(target=g.run)
    th.start()
    th.join(5)
    assert not th.is_alive()
    assert len(out.take()) == 1
    # idle: the loop slept instead of spinning (generous bound: CPU time << wall time)
    g.add_timer(0.3, lambda now: g.stop())
    t0, w0 = time.process_time(), time.monotonic()
    g.run()
    assert time.process_time() - t0 < 0.5 * (time.monotonic() - w0)
