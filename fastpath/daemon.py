"""fastpath run: the switch in the foreground, with its control socket.

The configuration in --config (the TOML `fastpathctl save` writes) is built first; then
the dataplane runs and the control socket is served from the dispatch loop itself
(graph.add_fd), so there are no threads and no locks. See fastpath.ctl for the protocol.
"""
import json
import logging
import os
import signal
import socket
import stat
import sys

from fastpath.loopserver import LoopServer

log = logging.getLogger("fastpath")


def _json_default(obj):
    if hasattr(obj, "item"):                   # numpy scalars
        return obj.item()
    return str(obj)


class ControlServer(LoopServer):
    """A Unix stream socket served from the graph's dispatch loop (fastpath.loopserver).

    Each complete line is one request and gets one reply line. While more than OUT_HIGH
    bytes of replies wait, that client is not read (backpressure). A request line longer
    than MAX_REQUEST is refused and the client dropped, and so is a client that makes no
    progress (sends nothing, or does not read its replies) for CLIENT_TIMEOUT seconds. So
    no client can hold the dataplane up or make the daemon grow.
    """
    MAX_REQUEST = 1 << 20
    OUT_HIGH = 1 << 20
    MAX_CLIENTS = 64
    CLIENT_TIMEOUT = 10.0
    what = "control socket"

    def __init__(self, path, control, graph, group=None):
        super().__init__(graph)
        self.group = group                     # a group name allowed to use the socket, or None
        self.path = path
        self.control = control

    def open(self):
        d = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o755, exist_ok=True)
            os.chmod(d, 0o755)
        self._remove_stale()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)                  # the socket is born 0600: root only
        try:
            s.bind(self.path)
        except OSError:
            s.close()
            raise
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        if self.group:
            import grp
            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
            os.chmod(self.path, 0o660)
        self.serve(s, 16)
        log.info("control socket %s", self.path)

    def _remove_stale(self):
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise RuntimeError(f"{self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(self.path)
        except OSError:
            os.unlink(self.path)               # left over by a daemon that died
            return
        finally:
            probe.close()
        raise RuntimeError(f"another fastpath daemon is listening on {self.path}")

    def close(self):
        had = self.sock is not None
        super().close()
        if had:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    # ---- requests ----

    def on_data(self, c):
        self.on_tick(c)

    def on_tick(self, c):
        """Answer the complete requests while the reply queue is short, send what can be
        sent, and poll the client only when we want to read more from it."""
        while not c.done and len(c.outbuf) < self.OUT_HIGH:
            nl = c.inbuf.find(b"\n")
            if nl >= 0:
                line = bytes(c.inbuf[:nl])
                del c.inbuf[:nl + 1]
            elif c.eof and c.inbuf:               # a last request without its newline
                line = bytes(c.inbuf)
                c.inbuf.clear()
            else:
                break
            if line.strip():
                self._handle(c, line)
        if not c.done and len(c.inbuf) > self.MAX_REQUEST and c.inbuf.find(b"\n") < 0:
            log.warning("control socket: request over %d bytes, dropping the client", self.MAX_REQUEST)
            self._reply(c, {"ok": False, "error": f"request too large (max {self.MAX_REQUEST} bytes)"})
            c.done = True
            c.inbuf.clear()
        if c.eof and not c.inbuf:
            c.done = True                         # everything answered: close once sent
        self.flush(c)
        if c.fd in self.clients:
            self.poll_reads(c, not c.done and len(c.outbuf) < self.OUT_HIGH)

    def _handle(self, c, line):
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise ValueError("not a JSON object")
            argv = req.get("argv")
            fmt = req.get("format", "text")
            if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
                raise ValueError("'argv' must be a list of strings")
            if fmt not in ("text", "json"):
                raise ValueError("'format' must be \"text\" or \"json\"")
        except (ValueError, UnicodeDecodeError, RecursionError) as e:   # RecursionError: [[[[...
            self._reply(c, {"ok": False, "error": f"bad request: {e}"})
            return
        from fastpath.control import CommandError
        try:
            out = self.control.execute(argv, fmt)
            reply = {"ok": True, "output": out}
            log.log(logging.DEBUG if argv[:1] in (["show"], ["dump-flows"], ["fdb/show"], ["version"],
                                                  ["help"], ["trace"]) else logging.INFO,
                    "command: %s", " ".join(argv))
        except CommandError as e:
            reply = {"ok": False, "error": str(e)}
            log.info("command failed: %s: %s", " ".join(argv), e)
        except Exception as e:                  # a bug: report it, keep switching
            log.exception("command crashed: %s", " ".join(argv))
            reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        self._reply(c, reply)

    def _reply(self, c, reply):
        if not reply["ok"]:
            reply["error"] = " ".join(str(reply["error"]).split("\n"))
        try:
            data = json.dumps(reply, default=_json_default).encode()
        except (TypeError, ValueError) as e:
            data = json.dumps({"ok": False, "error": f"internal error: unencodable output: {e}"}).encode()
        c.outbuf += data + b"\n"


# ---------------------------------------------------------------- fastpath run

def parse_cpus(text):
    """'0,2-3' -> [0, 2, 3]"""
    cpus = []
    try:
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            cpus += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"cpus: {text!r} is not a CPU list like 0,1 or 2-5") from None
    if not cpus or any(c < 0 for c in cpus) or len(set(cpus)) != len(cpus):
        raise ValueError(f"cpus: {text!r} is not a CPU list like 0,1 or 2-5")
    allowed = os.sched_getaffinity(0)
    bad = [c for c in cpus if c not in allowed]
    if bad:
        raise ValueError(f"cpus: CPU {bad[0]} is not available (have {sorted(allowed)})")
    return cpus


def run_settings(args):
    """(workers, cpus or None) from --workers/--cpus and trailing workers=N cpus=LIST."""
    workers, cpus_text = args.workers, args.cpus
    for tok in args.settings:
        key, eq, value = tok.partition("=")
        if not eq:
            raise ValueError(f"unexpected argument {tok!r} (settings are workers=N, cpus=LIST)")
        if key == "workers":
            try:
                workers = int(value)
            except ValueError:
                raise ValueError(f"workers: {value!r} is not a number") from None
        elif key == "cpus":
            cpus_text = value
        else:
            raise ValueError(f"unknown setting {key!r} (known: workers, cpus)")
    if not 1 <= workers <= 64:
        raise ValueError(f"workers: {workers} is not in 1..64")
    cpus = parse_cpus(cpus_text) if cpus_text else None
    if cpus is not None and len(cpus) < workers:
        raise ValueError(f"cpus: {len(cpus)} CPUs for {workers} workers")
    return workers, cpus


def cmd_run(args):
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s fastpath[%(process)d] %(levelname)s %(message)s")
    from fastpath.control import CommandError, Control
    from fastpath.switch import Switch
    if not 0 <= getattr(args, "busy_poll_us", 20000.0) <= 1e6:
        log.error("--busy-poll-us %s: 0..1000000 expected", args.busy_poll_us)
        return 2
    if args.buffers < 256:
        log.error("--buffers: at least 256")
        return 2
    try:
        workers, cpus = run_settings(args)
    except ValueError as e:
        log.error("%s", e)
        return 2
    sw = Switch(n_buffers=args.buffers, workers=workers)
    sw.graph.idle_spin_us = getattr(args, "busy_poll_us", 20000.0)
    control = Control(sw)
    server = ControlServer(args.control, control, sw.graph, group=args.control_group)
    try:
        server.open()
    except (OSError, RuntimeError, KeyError) as e:
        log.error("cannot serve %s: %s", args.control, e)
        sw.close()
        return 1
    metrics = None
    if getattr(args, "metrics", None):          # Prometheus, served from the dispatch loop too
        try:
            from fastpath.metrics import start as start_metrics
            metrics = start_metrics(args.metrics, control, sw.graph)
        except (OSError, ValueError, ImportError) as e:
            log.error("cannot serve metrics on %s: %s", args.metrics, e)
            server.close()
            sw.close()
            return 1
    rc = 0
    try:
        if args.config:
            try:
                control.load(args.config)
            except CommandError as e:
                log.error("config %s: %s", args.config, e)
                return 1
            log.info("config %s: %d bridges, %d ports", args.config, len(sw.bridges), len(sw.ports))

        def stop(signum, _frame):
            log.info("%s: stopping", signal.Signals(signum).name)
            sw.graph.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("fastpath running (%d workers, %d buffers each%s)", workers, args.buffers,
                 f", cpus {','.join(map(str, cpus))}" if cpus else "")
        try:
            sw.start_workers(cpus)
            sw.graph.run()
        except Exception:
            log.exception("dataplane crashed")
            rc = 1
    finally:
        control.close()
        sw.close()                  # ports closed, TAPs removed
        server.close()              # socket unlinked
        if metrics is not None:
            metrics.close()
        log.info("fastpath stopped")
    return rc
