"""fastpath's Prometheus exporter: `fastpath run --metrics ADDR:PORT`, then GET /metrics.

What is exported is read, at every scrape, through the same Control.execute(argv, "json")
calls that `fastpathctl --format json` answers (`show interfaces`, `show runtime`,
`show errors`, `show`, `fdb/stats BR`, `show sa`, `version`), so whatever those commands
report (per-worker rows or sums included) is what Prometheus sees. A row that carries a
"worker" field gets a `worker` label; rows that end up with the same labels are summed.

Threading: none. Control is not thread-safe and belongs to the dispatch-loop thread, so
the HTTP server is served from the dispatch loop itself, exactly like the control socket
(fastpath.daemon.ControlServer): the listening socket and each client are registered with
graph.add_fd(), every socket is non-blocking, a request is read with one recv() per
wakeup, and a graph timer flushes replies that did not fit in the socket buffer and drops
clients that make no progress. We chose this over "a snapshot refreshed by a graph timer,
served from an HTTP thread" because (1) the figures are exact at scrape time (they match
`fastpathctl` to the packet), (2) the loop pays for a scrape only when someone scrapes
(a timer snapshot costs the loop every period, scraped or not) and (3) there is no second
Python thread to take the GIL away from the dispatcher or locks to get wrong. What a
client can cost the loop is bounded: headers over MAX_HEADER bytes get 431, garbage gets
400, a client that stalls for CLIENT_TIMEOUT seconds (or lingers past CLIENT_LIFETIME)
is dropped, at most MAX_CLIENTS connections are open (a new one pushes out the oldest
that has not finished its request), and one response per connection (Connection: close).
"""
import gzip
import logging
import socket
import time
from urllib.parse import parse_qs, urlsplit

from fastpath.loopserver import LoopServer

log = logging.getLogger("fastpath")

INTERFACE_COUNTERS = (
    # show interfaces field, metric name (without _total), help
    ("rx_packets", "fastpath_interface_rx_packets", "frames received"),
    ("rx_bytes", "fastpath_interface_rx_bytes", "bytes received"),
    ("rx_drops", "fastpath_interface_rx_dropped_packets",
     "frames received that did not enter the graph (ring full, too big, no buffer, runt)"),
    ("tx_packets", "fastpath_interface_tx_packets", "frames sent"),
    ("tx_bytes", "fastpath_interface_tx_bytes", "bytes sent"),
    ("tx_drops", "fastpath_interface_tx_dropped_packets",
     "frames that could not be sent (ring/queue full, link down, too big)"),
)
NODE_COUNTERS = (
    ("calls", "fastpath_node_calls", "times the node was called (input nodes: polls)"),
    ("vectors", "fastpath_node_vectors", "vectors the node processed"),
    ("packets", "fastpath_node_packets", "packets the node processed"),
)
FDB_COUNTERS = (
    ("learned", "fastpath_fdb_learned", "MAC addresses learned"),
    ("moved", "fastpath_fdb_moved", "learned MAC addresses that moved to another port"),
    ("evicted", "fastpath_fdb_evicted", "entries evicted because the table was full"),
    ("aged", "fastpath_fdb_aged", "entries removed by aging"),
    ("static_refused", "fastpath_fdb_static_refused", "static entries refused (table full)"),
)


class _Family:
    """Samples of one metric, summed by label values (so per-worker rows without a worker
    label, or duplicated rows, still make valid exposition)."""

    def __init__(self, kind, name, doc, labels):
        self.kind, self.name, self.doc, self.labels = kind, name, doc, list(labels)
        self.values = {}

    def add(self, labels, value):
        if value is None:
            return
        key = tuple(str(v) for v in labels)
        self.values[key] = self.values.get(key, 0) + value

    def metric(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        cls = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        m = cls(self.name, self.doc, labels=self.labels)
        for key, value in self.values.items():
            m.add_metric(list(key), value)
        return m


def _num(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return v


def _worker(rows):
    """["worker"] when any row carries a worker field (multi-worker daemons), else []."""
    return ["worker"] if any(isinstance(r, dict) and "worker" in r for r in rows) else []


class FastpathCollector:
    """A prometheus_client collector over a fastpath.control.Control. Call collect() (i.e.
    scrape) only from the thread that runs the graph."""

    def __init__(self, control):
        self.control = control
        self.scrape_errors = 0

    def _json(self, *argv):
        return self.control.execute(list(argv), "json")

    def describe(self):
        return []                  # nothing at registration: collect() runs only on scrapes

    def collect(self):
        t0 = time.perf_counter()
        for section in (self._build_info, self._interfaces, self._runtime, self._errors,
                        self._fdb, self._sa):
            try:
                yield from section()
            except Exception as e:          # one broken section must not cost the others
                self.scrape_errors += 1
                log.warning("metrics: %s: %s: %s", section.__name__.lstrip("_"), type(e).__name__, e)
        f = _Family("counter", "fastpath_scrape_errors", "sections of a scrape that failed", [])
        f.add([], self.scrape_errors)
        yield f.metric()
        f = _Family("gauge", "fastpath_scrape_duration_seconds",
                    "time spent in the dispatch loop collecting this scrape", [])
        f.add([], time.perf_counter() - t0)
        yield f.metric()

    # ---- sections ----

    def _build_info(self):
        f = _Family("gauge", "fastpath_build_info", "the fastpath version (always 1)", ["version"])
        f.add([self._json("version").get("version", "")], 1)
        yield f.metric()

    def _interfaces(self):
        rows = [r for r in self._json("show", "interfaces") if isinstance(r, dict) and "name" in r]
        w = _worker(rows)
        info = _Family("gauge", "fastpath_interface_info",
                       "an interface's type, bridge and OpenFlow port number (always 1)",
                       ["interface", "type", "bridge", "ofport"])
        fams = [(field, _Family("counter", name, doc, ["interface"] + w))
                for field, name, doc in INTERFACE_COUNTERS]
        seen = set()
        for r in rows:
            if r["name"] not in seen:
                seen.add(r["name"])
                info.add([r["name"], r.get("type", ""), r.get("bridge", ""), r.get("ofport", "")], 1)
            labels = [r["name"]] + [r.get("worker", "") for _ in w]
            for field, fam in fams:
                fam.add(labels, _num(r.get(field, 0)))
        yield info.metric()
        for _, fam in fams:
            yield fam.metric()

    def _runtime(self):
        rows = [r for r in self._json("show", "runtime") if isinstance(r, dict) and "name" in r]
        # `show runtime` gives totals (worker "all") and, with several workers, each worker's
        # rows: export the per-worker series only (sum() in PromQL makes the totals), or the
        # totals without a worker label when there is one worker
        per_worker = [r for r in rows if isinstance(r.get("worker"), int)]
        rows = per_worker or [{k: v for k, v in r.items() if k != "worker"} for r in rows]
        w = _worker(rows)
        labels = ["node"] + w
        fams = [(field, _Family("counter", name, doc, labels)) for field, name, doc in NODE_COUNTERS]
        cpu = _Family("counter", "fastpath_node_cpu_seconds",
                      "time spent in the node (input nodes: in polls that returned frames)", labels)
        for r in rows:
            lv = [r["name"]] + [r.get("worker", "") for _ in w]
            for field, fam in fams:
                fam.add(lv, _num(r.get(field, 0)))
            ns = _num(r.get("ns", 0))
            cpu.add(lv, ns / 1e9 if ns is not None else None)
        for _, fam in fams:
            yield fam.metric()
        yield cpu.metric()

    def _errors(self):
        rows = [r for r in self._json("show", "errors") if isinstance(r, dict) and "node" in r]
        w = _worker(rows)
        f = _Family("counter", "fastpath_errors", "frames dropped, by node and reason (show errors)",
                    ["node", "reason"] + w)
        for r in rows:
            f.add([r["node"], r.get("reason", "")] + [r.get("worker", "") for _ in w],
                  _num(r.get("count", 0)))
        yield f.metric()

    def _fdb(self):
        bridges = list(self._json("show").get("bridge") or {})
        stats = [(br, self._json("fdb/stats", br)) for br in bridges]
        w = _worker([s for _, s in stats])
        labels = ["bridge"] + w
        entries = _Family("gauge", "fastpath_fdb_entries", "MAC table entries", labels)
        size = _Family("gauge", "fastpath_fdb_capacity_entries", "MAC table size (mac-table-size)",
                       labels)
        aging = _Family("gauge", "fastpath_fdb_aging_time_seconds", "MAC aging time", labels)
        fams = [(field, _Family("counter", name, doc, labels)) for field, name, doc in FDB_COUNTERS]
        for br, s in stats:
            lv = [br] + [s.get("worker", "") for _ in w]
            entries.add(lv, _num(s.get("n_entries")))
            size.add(lv, _num(s.get("max_entries")))
            aging.add(lv, _num(s.get("aging_time")))
            for field, fam in fams:
                fam.add(lv, _num(s.get(field)))
        yield entries.metric()
        yield size.metric()
        yield aging.metric()
        for _, fam in fams:
            yield fam.metric()

    def _sa(self):
        rows = [r for r in self._json("show", "sa") if isinstance(r, dict) and "spi" in r]
        w = _worker(rows)
        labels = ["tunnel", "spi", "direction"] + w
        info = _Family("gauge", "fastpath_sa_info", "an IPsec SA's peer and algorithms (always 1)",
                       ["tunnel", "spi", "direction", "remote_ip", "cipher", "esn", "encap",
                        "retiring"])
        packets = _Family("counter", "fastpath_sa_packets", "packets protected or verified", labels)
        octets = _Family("counter", "fastpath_sa_bytes", "bytes protected or verified", labels)
        drops = _Family("counter", "fastpath_sa_dropped_packets", "packets dropped, by reason",
                        labels + ["reason"])
        seq = _Family("gauge", "fastpath_sa_sequence",
                      "sequence number (out: last sent; in: highest received)", labels)
        age = _Family("gauge", "fastpath_sa_age_seconds", "time since the SA was installed", labels)
        for r in rows:
            spi = f"0x{r['spi']:08x}" if isinstance(r["spi"], int) else str(r["spi"])
            lv = [r.get("tunnel", ""), spi, r.get("direction", "")] + [r.get("worker", "") for _ in w]
            info.values[(str(r.get("tunnel", "")), spi, str(r.get("direction", "")),
                         str(r.get("remote_ip", "")), str(r.get("cipher", "")),
                         str(bool(r.get("esn"))).lower(), str(r.get("encap") or "none"),
                         str(bool(r.get("retiring"))).lower())] = 1
            packets.add(lv, _num(r.get("packets", 0)))
            octets.add(lv, _num(r.get("bytes", 0)))
            for reason, n in sorted((r.get("drops") or {}).items()):
                drops.add(lv + [reason], _num(n))
            seq.add(lv, _num(r.get("seq")))
            age.add(lv, _num(r.get("age")))
        for f in (info, packets, octets, drops, seq, age):
            yield f.metric()


class _Only:
    """A registry's metrics restricted to some sample (or family) names, as the ?name[]=
    parameter of prometheus_client's own server."""

    def __init__(self, registry, names):
        self.registry, self.names = registry, set(names)

    def collect(self):
        for m in self.registry.collect():
            samples = [s for s in m.samples if s.name in self.names or m.name in self.names]
            if samples:
                m.samples = samples              # collectors make new Metric objects per scrape
                yield m


def make_registry(control):
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector
    registry = CollectorRegistry()
    registry.register(FastpathCollector(control))
    ProcessCollector(registry=registry)          # CPU, memory, fds of the daemon
    return registry


# ---------------------------------------------------------------- the HTTP server

def parse_address(text):
    """'ADDR:PORT' (ADDR may be a name, an IPv4 address, [IPv6] or empty for every IPv4
    address; PORT 0 picks a free one) -> (family, sockaddr) for bind()."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: expected ADDR:PORT (e.g. 127.0.0.1:9482, [::1]:9482, :9482)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host in ("", "*"):
        host = "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"{text!r}: {e.strerror}") from None
    family, _, _, _, sockaddr = infos[0]
    return family, sockaddr


STATUS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
          408: "Request Timeout", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
          505: "HTTP Version Not Supported"}
INDEX = (b"<html><head><title>fastpath</title></head><body><h1>fastpath exporter</h1>"
         b"<p><a href=\"/metrics\">/metrics</a></p></body></html>\n")


class MetricsServer(LoopServer):
    """HTTP/1.x on a TCP socket, served from the graph's dispatch loop (see the module
    docstring for why, and fastpath.loopserver for how)."""
    MAX_HEADER = 16384
    MAX_CLIENTS = 32
    CLIENT_TIMEOUT = 5.0           # seconds without progress before a client is dropped
    CLIENT_LIFETIME = 30.0         # a connection never lives longer than this
    what = "metrics"

    def __init__(self, address, control, graph, registry=None):
        super().__init__(graph)
        self.address = address
        self.registry = registry if registry is not None else make_registry(control)
        self.scrapes = 0

    @property
    def bound(self):
        """(host, port) actually bound (port 0 in --metrics picks one)."""
        return self.sock.getsockname()[:2]

    def url(self):
        host, port = self.bound
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"

    def open(self):
        family, sockaddr = parse_address(self.address)
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and sockaddr[0] == "::":
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)    # [::]: v4 too
            s.bind(sockaddr)
        except OSError:
            s.close()
            raise
        self.serve(s, 64)
        log.info("metrics on %s", self.url())

    # ---- the loop server's questions ----

    def make_room(self):
        # full: drop the oldest client still sending its request (idle or slow ones), so
        # they cannot lock scrapers out; with none, the new one is refused
        waiting = [c for c in self.clients.values() if not c.done]
        if not waiting:
            return False
        log.debug("metrics: too many clients, dropping the oldest")
        self.drop(min(waiting, key=lambda c: c.born))
        return True

    def expired(self, c, now):
        return now - c.last > self.CLIENT_TIMEOUT or now - c.born > self.CLIENT_LIFETIME

    def on_timeout(self, c):
        if not c.done:
            self._respond(c, 408, b"request timeout\n")     # best effort, then dropped

    def on_data(self, c):
        if c.eof:                          # closed before a whole request: nothing to say
            self.drop(c)
            return
        end = c.inbuf.find(b"\r\n\r\n")
        if end < 0:
            end = c.inbuf.find(b"\n\n")
        if end < 0:
            if len(c.inbuf) > self.MAX_HEADER:
                self._respond(c, 431, b"request header too large\n")
            return
        if end > self.MAX_HEADER:
            self._respond(c, 431, b"request header too large\n")
            return
        self._request(c, bytes(c.inbuf[:end]))

    # ---- HTTP ----

    def _request(self, c, head):
        try:
            lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
            parts = lines[0].split()
            if len(parts) != 3 or not parts[2].startswith("HTTP/"):
                return self._respond(c, 400, b"bad request line\n")
            method, target, version = parts
            if version not in ("HTTP/1.0", "HTTP/1.1"):
                return self._respond(c, 505, b"HTTP/1.0 or HTTP/1.1 only\n")
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if not colon or not name.strip() or name != name.strip():
                    return self._respond(c, 400, b"bad header line\n")
                headers[name.lower()] = value.strip()
            if method not in ("GET", "HEAD"):
                return self._respond(c, 405, b"GET or HEAD only\n", extra=[("Allow", "GET, HEAD")])
            url = urlsplit(target)
            head_only = method == "HEAD"
            if url.path == "/metrics":
                return self._metrics(c, headers, parse_qs(url.query), head_only)
            if url.path == "/":
                return self._respond(c, 200, INDEX, "text/html; charset=utf-8", head_only=head_only)
            return self._respond(c, 404, b"not found: try /metrics\n", head_only=head_only)
        except Exception as e:                 # a bug here must not stop the dataplane
            log.exception("metrics: request failed")
            return self._respond(c, 500, f"internal error: {type(e).__name__}\n".encode())

    def _metrics(self, c, headers, params, head_only):
        from prometheus_client.exposition import choose_encoder
        encoder, ctype = choose_encoder(headers.get("accept", ""))
        registry = self.registry
        if "name[]" in params:                       # ?name[]=A&name[]=B: only those series
            registry = _Only(registry, params["name[]"])
        body = encoder(registry)
        extra = []
        if any(e.split(";")[0].strip().lower() == "gzip"
               for e in headers.get("accept-encoding", "").split(",")):
            body = gzip.compress(body, compresslevel=1)      # the loop pays: keep it cheap
            extra.append(("Content-Encoding", "gzip"))
        self.scrapes += 1
        self._respond(c, 200, body, ctype, extra=extra, head_only=head_only)

    def _respond(self, c, status, body, ctype="text/plain; charset=utf-8", extra=(), head_only=False):
        hdr = [f"HTTP/1.1 {status} {STATUS.get(status, '')}", f"Content-Type: {ctype}",
               f"Content-Length: {len(body)}", "Connection: close"]
        hdr += [f"{k}: {v}" for k, v in extra]
        c.outbuf += ("\r\n".join(hdr) + "\r\n\r\n").encode("latin-1")
        if not head_only:
            c.outbuf += body
        c.done = True
        c.inbuf.clear()
        if c.fd in self.clients:
            self.poll_reads(c, False)        # nothing more to read
            self.flush(c)


def start(address, control, graph):
    """Open the exporter on the graph's dispatch loop; returns the MetricsServer."""
    server = MetricsServer(address, control, graph)
    server.open()
    return server
