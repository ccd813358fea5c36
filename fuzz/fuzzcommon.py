"""What the fuzz harnesses share.

- Reader: turns the fuzzer's bytes into structured choices, deterministically (the same bytes
  always mean the same thing, with or without atheris), so a saved input replays exactly.
- Twin: the same input run through two identical switches whose buffer arenas were filled
  with different bytes beforehand (zeros / pseudo-random). Every byte outside the frames
  differs between the two, so any node that reads outside a frame and acts on what it read
  makes the twins disagree: the "no reads outside buffers" oracle, with or without ASan.
- Features: what the Cython dataplane did (nodes reached, drop reasons counted) turned into
  Python branches, so atheris -- which only sees Python coverage unless the extensions are
  built with clang's coverage -- is rewarded for reaching new nodes and drop reasons.
- atheris_main(): the common main() of every harness.
"""
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (ROOT, os.path.join(ROOT, "tests")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import numpy as np  # noqa: E402


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


class Reader:
    """Consumes the fuzzer's bytes from the front; past the end everything reads as 0."""

    def __init__(self, data):
        self.d = bytes(data)
        self.i = 0

    @property
    def remaining(self):
        return len(self.d) - self.i

    def bytes(self, n):
        n = max(0, n)
        out = self.d[self.i:self.i + n]
        self.i += len(out)
        return out

    def uint(self, nbytes):
        return int.from_bytes(self.bytes(nbytes), "big")

    def u8(self):
        return self.uint(1)

    def u16(self):
        return self.uint(2)

    def u32(self):
        return self.uint(4)

    def int_in(self, lo, hi):
        span = hi - lo + 1
        if span <= 1:
            return lo
        return lo + self.uint((span.bit_length() + 7) // 8) % span

    def bool(self):
        return bool(self.u8() & 1)

    def chance(self, k):
        """True with probability ~1/k (and never once the data ran out)."""
        return self.remaining > 0 and self.u8() % k == 0

    def pick(self, seq):
        seq = list(seq)
        return seq[self.int_in(0, len(seq) - 1)]

    def blob(self, maxlen):
        return self.bytes(self.int_in(0, maxlen))

    def rest(self):
        return self.bytes(self.remaining)

    def text(self, maxlen):
        return self.blob(maxlen).decode("utf-8", "replace")


# ---------------------------------------------------------------- coverage features

def _make_feedback(n, name):
    """def feedback(x): a balanced tree of comparisons with one leaf per value 0..n-1."""
    lines = [f"def {name}(x):"]

    def emit(lo, hi, ind):
        pad = " " * ind
        if hi - lo == 1:
            lines.append(f"{pad}return {lo}")
            return
        mid = (lo + hi) // 2
        lines.append(f"{pad}if x < {mid}:")
        emit(lo, mid, ind + 4)
        lines.append(f"{pad}else:")
        emit(mid, hi, ind + 4)

    emit(0, n, 4)
    ns = {}
    exec(compile("\n".join(lines), f"<fuzz-features-{name}>", "exec"), ns)
    return ns[name]


# 64 small trees of 32 leaves (atheris instruments a huge function very slowly)
LEAVES = 32
_trees = [_make_feedback(LEAVES, f"features_{k}") for k in range(64)]
N_FEATURES = LEAVES * len(_trees)


def enable_feedback():
    """Under atheris: instrument the feature trees so each feature is an edge it sees."""
    import atheris
    for f in _trees:
        atheris.instrument_func(f)


def feature(x):
    x = int(x) % N_FEATURES
    _trees[x // LEAVES](x % LEAVES)


def _bucket(n):
    return 0 if n <= 1 else 1 if n <= 3 else 2 if n <= 15 else 3


class Observer:
    """Counters of one graph before an input; features() reports what the input did."""

    def __init__(self, graph):
        self.g = graph
        self.snap()

    def snap(self):
        g = self.g
        self.n_err = len(g.error_names)
        self.errors = g.error_counts[:self.n_err].copy()
        self.packets = [int(n.packets) for n in g.nodes]

    def deltas(self):
        g = self.g
        n = len(g.error_names)
        now = g.error_counts[:n].astype(np.int64)
        before = np.zeros(n, dtype=np.int64)
        before[:self.n_err] = self.errors[:n]
        d = now - before
        errs = {int(k): int(d[k]) for k in np.nonzero(d)[0]}
        nodes = {}
        for k, node in enumerate(g.nodes):
            p = int(node.packets) - (self.packets[k] if k < len(self.packets) else 0)
            if p:
                nodes[k] = p
        return errs, nodes

    def features(self, extra=()):
        errs, nodes = self.deltas()
        for code, n in errs.items():
            feature(4 * code + _bucket(n))
        for k, n in nodes.items():
            feature(1024 + 4 * k + _bucket(n))
        for x in extra:
            feature(1536 + x)
        self.snap()
        return errs, nodes


class quiet:
    """Silence some loggers for the duration (forged messages are logged as warnings)."""

    def __init__(self, *names):
        import logging
        self.loggers = [logging.getLogger(n) for n in names]

    def __enter__(self):
        self.levels = [lg.level for lg in self.loggers]
        for lg in self.loggers:
            lg.setLevel(100)

    def __exit__(self, *exc):
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)


# ---------------------------------------------------------------- the twin oracle

class Divergence(AssertionError):
    """The twins disagreed: something depends on bytes outside the frames."""


class Twin:
    """Two switches built by the same factory; run() applies one input to both."""

    def __init__(self, factory):
        self.a = factory()
        self.b = factory()
        n = self.b.graph.pool.data_array.shape[0]
        self.noise = np.random.default_rng(12345).integers(1, 256, n, dtype=np.uint8)

    def run(self, fn, compare=None):
        """fn(sw) -> observable result; the results must be equal (compare(ra, rb) if given)."""
        self.a.graph.pool.data_array.fill(0)
        self.b.graph.pool.data_array[:] = self.noise
        ra = fn(self.a)
        rb = fn(self.b)
        same = compare(ra, rb) if compare else ra == rb
        if not same:
            raise Divergence(f"twins disagree (bytes outside a frame were read):\n  {ra!r}\n  {rb!r}")
        return ra


def egress(sw):
    """{port: [frames]} that left the in-memory ports (bridge ports and uplinks)."""
    out = {}
    for name, p in (*sw.ports.items(), *sw.uplinks.items()):
        if p.type == "vxlan":
            continue
        got = p.io[1].take()
        if got:
            out[name] = got
    return out


def inject(sw, port, frames):
    p = sw.ports.get(port) or sw.uplinks[port]
    p.io[0].add([bytes(f) for f in frames])


def run_graph(sw):
    sw.graph.run_until_idle()
    sw.graph.pool.check_accounting(0)


# ---------------------------------------------------------------- regressions and main

REGRESSIONS = os.path.join(ROOT, "tests", "fuzz_regressions")


def regression_inputs(target):
    """The saved inputs of one harness (tests/fuzz_regressions/<target>/*), sorted."""
    d = os.path.join(REGRESSIONS, target)
    if not os.path.isdir(d):
        return []
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if not f.startswith(".")]


def atheris_main(test_one_input, instrument=("fastpath",), seeds=None):
    # instrument: module name prefixes whose Python code atheris instruments ("__main__",
    # the harness itself, is left out by default: it only slows the runs down)
    """python fuzz/fuzz_X.py [libFuzzer flags] [CORPUS_DIR...]

    Also, without atheris: --replay FILE... runs saved inputs once each; --random N [SEED]
    [DIR...] runs N mutations of a corpus and random inputs (the sanitizer runs); --seeds DIR
    writes the harness's seed inputs into DIR and exits."""
    args = sys.argv[1:]
    if args and args[0] == "--seeds":
        os.makedirs(args[1], exist_ok=True)
        for k, s in enumerate(seeds() if seeds else []):
            with open(os.path.join(args[1], f"seed-{k:04d}"), "wb") as f:
                f.write(s)
        return
    if args and args[0] == "--replay":
        for path in args[1:]:
            with open(path, "rb") as f:
                test_one_input(f.read())
            print(f"ok {path}")
        return
    if args and args[0] == "--random":
        # python fuzz/fuzz_X.py --random N [SEED] [DIR...]: N inputs, half mutations of the
        # files in DIRs (a corpus; else the harness's seeds), half random bytes. No atheris:
        # what runs under the ASan/UBSan build (see README.md), printing exec/s.
        import time
        n = int(args[1])
        seed = int(args[2]) if len(args) > 2 and args[2].isdigit() else 1
        dirs = [a for a in args[2:] if not a.isdigit()]
        corpus = []
        for d in dirs:
            for f in sorted(os.listdir(d)):
                with open(os.path.join(d, f), "rb") as fh:
                    corpus.append(fh.read())
        corpus = corpus or (seeds() if seeds else [])
        maxlen = max([len(c) for c in corpus] + [4096])
        import signal

        def hang(signum, frame):
            raise TimeoutError("input ran for more than 20 s: a hang")
        signal.signal(signal.SIGALRM, hang)
        t0 = time.time()
        for k, data in enumerate(random_inputs(n, seed, corpus, maxlen)):
            try:
                signal.alarm(20)
                test_one_input(data)
                signal.alarm(0)
            except BaseException:
                path = f"crash-random-{seed}-{k}"
                with open(path, "wb") as f:
                    f.write(data)
                print(f"input {k} failed, saved as {path}", file=sys.stderr)
                raise
            if (k + 1) % 10000 == 0:
                print(f"#{k + 1} exec/s: {(k + 1) / (time.time() - t0):.0f}", file=sys.stderr, flush=True)
        print(f"Done {n} inputs in {time.time() - t0:.0f} s ({n / (time.time() - t0):.0f} exec/s), "
              f"corpus {len(corpus)}", file=sys.stderr)
        return
    import atheris
    # fastpath was imported by the harness already: instrument its Python code in place
    for name, mod in list(sys.modules.items()):
        if mod is None or not name.startswith(tuple(instrument)):
            continue
        if (getattr(mod, "__file__", "") or "").endswith(".py"):
            _instrument_module(atheris, mod)
    enable_feedback()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


def _instrument_module(atheris, mod):
    """Instrument every Python function and method defined in mod (already imported)."""
    import types
    for obj in list(vars(mod).values()):
        if isinstance(obj, types.FunctionType) and obj.__module__ == mod.__name__:
            atheris.instrument_func(obj)
        elif isinstance(obj, type) and obj.__module__ == mod.__name__:
            for attr in list(vars(obj).values()):
                fn = attr.__func__ if isinstance(attr, (staticmethod, classmethod)) else attr
                if isinstance(fn, property):
                    for f in (fn.fget, fn.fset):
                        if isinstance(f, types.FunctionType):
                            atheris.instrument_func(f)
                elif isinstance(fn, types.FunctionType):
                    atheris.instrument_func(fn)


def mutate(rng, data, maxlen=4096):
    """A few random byte-level mutations (what the CI mode uses instead of libFuzzer)."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:                                   # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:                                 # set a byte to an interesting value
            b[rng.randrange(len(b))] = rng.choice((0, 1, 0x7f, 0x80, 0xff, rng.randrange(256)))
        elif op == 2:                                       # insert bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and b:                                 # delete a range
            i = rng.randrange(len(b))
            del b[i:i + rng.randint(1, 16)]
        elif op == 4 and b:                                 # truncate
            del b[rng.randrange(len(b)):]
        elif op == 5 and len(b) > 1:                        # copy a chunk over another place
            i, j = rng.randrange(len(b)), rng.randrange(len(b))
            n = rng.randint(1, 8)
            b[j:j + n] = b[i:i + n]
    return bytes(b[:maxlen])


def random_inputs(n, seed, seeds=(), maxlen=4096):
    """n inputs, deterministic for a seed: half mutations of the seeds, half random bytes."""
    import random
    rng = random.Random(seed)
    seeds = list(seeds)
    for k in range(n):
        if seeds and k % 2 == 0:
            yield mutate(rng, rng.choice(seeds), maxlen)
        else:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(0, min(maxlen, 300))))


class ErrorLog(logging.Handler):
    """Collects what a logger says at ERROR or above ("internal error" is a finding), and
    keeps it from the console: capture(name) attaches one to that logger."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())

    @classmethod
    def capture(cls, name):
        log = cls()
        lg = logging.getLogger(name)
        lg.addHandler(log)
        lg.setLevel(logging.ERROR)
        lg.propagate = False
        return log


def open_fds():
    """Descriptors this process has open (an input must not leak any)."""
    return len(os.listdir("/proc/self/fd"))
