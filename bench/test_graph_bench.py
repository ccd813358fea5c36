"""Dispatch overhead: a chain of 4 trivial Cython nodes at vector size 256, next to the
same chain with no nodes (the input/output cost) and a naive per-packet Python loop."""
from figures import record

from fastpath.graph.graph import Graph
from fastpath.nodes.null import Null
from fastpath.pg.pg import PgInput, PgOutput

PACKETS = 256 * 200


def chain(n_nodes):
    g = Graph(n_buffers=4096)
    names = [f"null{i}" for i in range(n_nodes)] + ["out"]
    inp = g.add(PgInput("in", 1, next_node=names[0]))
    for i in range(n_nodes):
        g.add(Null(names[i], names[i + 1]))
    out = g.add(PgOutput("out", 1, keep=False))
    return g, inp, out


def run_chain(benchmark, n_nodes):
    g, inp, out = chain(n_nodes)
    frame = bytes(64)
    rounds = []

    inp.load([frame], loop=True, limit=0)

    def round_():
        inp.limit = PACKETS
        g.run_until_idle()
        rounds.append(1)

    benchmark.pedantic(round_, rounds=20, warmup_rounds=2)
    assert out.tx_packets == len(rounds) * PACKETS
    g.pool.check_accounting(0)
    return g


def test_graph_dispatch_4_nodes_256(benchmark):
    g = run_chain(benchmark, 4)
    record(benchmark, "graph_4_nodes", PACKETS, nodes=4)
    assert all(r["vectors_per_call"] == 256 for r in g.runtime() if r["name"].startswith("null"))


def test_graph_dispatch_0_nodes_256(benchmark):
    run_chain(benchmark, 0)
    record(benchmark, "graph_0_nodes", PACKETS)


def test_graph_naive_python_4_nodes(benchmark):
    """The same work written the obvious way: one Python call per packet per node."""
    frames = [bytearray(64) for _ in range(256)]
    count = PACKETS

    def node(frame, meta):
        meta["bytes"] += len(frame)
        meta["next"] = 1

    def round_():
        meta = {"bytes": 0, "next": 0}
        sent = 0
        while sent < count:
            for f in frames:
                for _ in range(4):
                    node(f, meta)
            sent += len(frames)
        return sent

    assert benchmark.pedantic(round_, rounds=5, warmup_rounds=1) == PACKETS
    record(benchmark, "graph_naive_python", PACKETS, nodes=4)
