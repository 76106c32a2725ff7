"""Several server processes on one port: ``waferscope serve --workers N``.

Why: in one process the event loop's work per request (HTTP, JSON, batching: ~0.4 ms of CPU for a
1-map request, all under the GIL) and the model's batch take turns far more than they overlap — 32
clients kept 1.07 of 2 cores busy (docs/serve.md, "Load test"). N processes, each with its own event
loop, batch workers and models, let one's HTTP work run beside another's model batch.

How: the supervisor (this module's :func:`serve_workers`) loads the models once, binds one listening
socket per worker on the same port (SO_REUSEPORT: the kernel spreads new connections evenly, see
:func:`_listeners`) and forks the workers, which inherit both: the models' arrays are shared
copy-on-write (:func:`gc.freeze` before the fork keeps the collector from touching the loaded objects'
pages). Nothing may start a
thread before the fork (a forked child has only the forking thread, and a lock some other thread held
stays locked for good): each worker builds its app — and so its batch threads — after it.

State that must stay in one place: the page's lot browser keeps uploaded files and their background
scoring in memory, so worker 0 owns every ``/v1/lots`` route and the other workers forward those
requests to it over a private Unix socket (:class:`LotForward`, streamed both ways).

The supervisor restarts a worker that dies (a fresh fork of the loaded models: no model load), stops
them all on SIGTERM/SIGINT, and gives up if a worker dies before it served (its app failed to build: a
restart would only repeat it).
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from typing import Callable

log = logging.getLogger("waferscope.serve")
LOT_PREFIX = "/v1/lots"
RESTART_PAUSE_S = 1.0  # a worker that keeps dying is started again at most once a second
_HOP_BY_HOP = {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"te", b"trailer",
               b"upgrade", b"proxy-authenticate", b"proxy-authorization"}


def default_workers() -> int:
    """Return the worker count ``waferscope serve`` uses by default: one per usable core, at most 4.

    More than 4 workers keep gaining throughput only with as many free cores, and each costs its own
    Python objects (~100-200 MB once warm; the models' arrays stay shared). One where processes cannot
    fork (Windows).
    """
    if not hasattr(os, "fork"):
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


# ---- the service's processes, as every worker sees them (for /health) --------------------------------
class ProcessTable:
    """The pids of the supervisor and its workers, in memory shared by all of them (set before each fork).

    So that any worker answering ``/health`` can report the whole service's CPU time and memory.
    """

    def __init__(self, workers: int):
        self.workers = workers
        # anonymous and shared: forked children see updates. The pids, then a flag per worker: it got as
        # far as serving (its app built)
        self._mem = mmap.mmap(-1, 8 * (2 * workers + 1))
        self.set(-1, os.getpid())

    def set(self, worker: int, pid: int) -> None:
        """Record ``pid`` as worker ``worker``'s (-1: the supervisor)."""
        struct.pack_into("q", self._mem, 8 * (worker + 1), pid)

    def mark_serving(self, worker: int, serving: bool = True) -> None:
        """Record that worker ``worker`` built its app and starts serving (False: it is being started)."""
        struct.pack_into("q", self._mem, 8 * (self.workers + 1 + worker), int(serving))

    def serving(self, worker: int) -> bool:
        """Return whether worker ``worker`` got as far as serving since it was (re)started."""
        return struct.unpack_from("q", self._mem, 8 * (self.workers + 1 + worker))[0] == 1

    def pids(self) -> list[int]:
        """Return the supervisor's pid, then each worker's (0 for a worker not started yet)."""
        return list(struct.unpack_from(f"{self.workers + 1}q", self._mem, 0))

    def cpu_seconds(self) -> float:
        """Return the CPU time (user + system) the supervisor and the live workers have used so far."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.pids():
            fields = _stat_fields(pid)
            if fields:  # utime, stime: fields 14 and 15 of /proc/PID/stat, in clock ticks
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def memory(self) -> dict:
        """Return ``rss_bytes`` (summed over the processes: shared pages counted in each) and ``pss_bytes``.

        PSS (proportional set size): each shared page split between the processes sharing it, so the
        sum is what the service really holds.
        """
        rss = pss = 0
        for pid in self.pids():
            rss += _status_kb(pid, "VmRSS") * 1024
            pss += _rollup_kb(pid, "Pss") * 1024
        return {"rss_bytes": rss, "pss_bytes": pss}


def _stat_fields(pid: int) -> list[str]:
    if pid <= 0:
        return []
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except OSError:
        return []
    return text[text.rfind(")") + 2:].split()  # after the command name, which may hold spaces


def _status_kb(pid: int, key: str) -> int:
    return _kb_field(f"/proc/{pid}/status", key) if pid > 0 else 0


def _rollup_kb(pid: int, key: str) -> int:
    return _kb_field(f"/proc/{pid}/smaps_rollup", key) if pid > 0 else 0


def _kb_field(path: str, key: str) -> int:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


# ---- worker 1…N-1: the lot browser's routes go to worker 0 ------------------------------------------
class LotForward:
    """ASGI middleware of workers 1…N-1: a request under ``/v1/lots`` is forwarded to worker 0.

    Over its private Unix socket, body and answer streamed (a 256 MB upload is never held here).
    Worker 0 applies every check of its own (origin, sizes, limits) as for a request it got itself;
    only a declared body over ``max_file_bytes`` is refused here, before any of it is read.
    """

    def __init__(self, app, socket_path: str, max_file_bytes: int):
        self.app = app
        self.socket_path = socket_path
        self.max_file_bytes = max_file_bytes
        self._client = None

    async def __call__(self, scope, receive, send):
        """Forward lot routes; pass everything else to the app."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == LOT_PREFIX or path.startswith(LOT_PREFIX + "/")):
            return await self.app(scope, receive, send)
        from waferscope.serve.app import _send_error

        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() not in _HOP_BY_HOP]
        declared = dict(headers).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_file_bytes:
            return await _send_error(send, 413, f"file too large: the limit is {self.max_file_bytes} bytes "
                                     "(Limits.max_file_bytes)", close=True)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._forward(scope, receive, tracked_send, headers)
        except _ClientGone:
            return
        except _TooLarge:  # a chunked body that never said its size: stopped here at the limit
            await _send_error(send, 413, f"file too large: the limit is {self.max_file_bytes} bytes "
                              "(Limits.max_file_bytes)", close=True)
        except Exception as exc:  # noqa: BLE001 — worker 0 restarting or gone: one JSON answer, one log line
            import httpx

            if not isinstance(exc, httpx.TransportError):
                raise
            log.warning("forwarding %s to the lot browser's worker failed: %s", path, type(exc).__name__)
            if started:  # cut mid-answer: the client sees a short body and a closed connection
                return
            await _send_error(send, 503, "the lot browser's worker is unavailable (restarting?); retry shortly",
                              retry_after=1)

    async def _forward(self, scope, receive, send, headers) -> None:
        import httpx

        if self._client is None:  # made in the event loop that uses it; keeps its connections to worker 0
            self._client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self.socket_path),
                                             timeout=httpx.Timeout(None, connect=5.0))
        has_body = scope["method"] not in ("GET", "HEAD", "OPTIONS") or any(
            k.lower() in (b"content-length",) for k, _ in headers)
        query = scope.get("query_string") or b""
        target = (scope.get("raw_path") or scope["path"].encode()) + (b"?" + query if query else b"")
        request = self._client.build_request(scope["method"], "http://worker0" + target.decode("latin-1"),
                                             headers=headers,
                                             content=_body(receive, self.max_file_bytes) if has_body else None)
        response = await self._client.send(request, stream=True)
        try:
            await send({"type": "http.response.start", "status": response.status_code,
                        "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()


class _ClientGone(Exception):
    """The client closed its connection while its request was being forwarded."""


class _TooLarge(Exception):
    """The forwarded body went over the limit."""


async def _body(receive, limit: int):
    held = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone()
        chunk = message.get("body", b"")
        held += len(chunk)
        if held > limit:
            raise _TooLarge()
        yield chunk
        if not message.get("more_body", False):
            return


# ---- the supervisor ---------------------------------------------------------------------------------
def _listeners(host: str, port: int, workers: int) -> list[socket.socket]:
    """Return one listening socket per worker, all bound to ``host:port`` with SO_REUSEPORT (Linux, BSD).

    The kernel then spreads new connections evenly over the workers. One socket shared by all would
    not: asyncio accepts up to 100 waiting connections per wake-up, so the first worker to wake takes
    a whole burst of clients (32 benchmark clients all went to one worker while the other idled).
    Where SO_REUSEPORT is missing: one shared socket. A ConfigError when the address cannot be bound.
    """
    from waferscope.errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    reuse_port = getattr(socket, "SO_REUSEPORT", None)
    out: list[socket.socket] = []
    try:
        for _ in range(workers if reuse_port is not None else 1):
            sock = socket.socket(family, socket.SOCK_STREAM)
            out.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port is not None:
                sock.setsockopt(socket.SOL_SOCKET, reuse_port, 1)
            sock.bind((host, port))
            sock.listen(2048)
    except OSError as exc:
        for sock in out:
            sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    return out


def serve_workers(make_app: Callable[[int, ProcessTable, str | None], object], run_app: Callable, host: str,
                  port: int, workers: int) -> int:
    """Bind ``host:port``, fork ``workers`` processes serving it; return the exit status once all have stopped.

    ``make_app(k, table, lot_socket)`` builds worker ``k``'s ASGI app in that worker (``lot_socket``:
    where worker 0 takes the lot routes, None in worker 0 itself); ``run_app(app, sockets)`` serves it
    on those already-bound sockets until told to stop (uvicorn's ``Server.run(sockets=…)``).
    """
    listeners = _listeners(host, port, workers)
    private = tempfile.mkdtemp(prefix="waferscope-serve-")  # mode 0700: only this user reaches worker 0's socket
    try:
        lot_path = os.path.join(private, "lots.sock")
        uds = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        uds.bind(lot_path)
        uds.listen(256)
        supervisor = _Supervisor(make_app, run_app, listeners, uds, lot_path, ProcessTable(workers))
        try:
            return supervisor.run()
        finally:
            uds.close()
    finally:
        for sock in listeners:
            sock.close()
        shutil.rmtree(private, ignore_errors=True)


class _Supervisor:
    """Forks the workers, restarts one that dies after it served, stops them all on SIGTERM/SIGINT."""

    def __init__(self, make_app, run_app, listeners, uds, lot_path, table: ProcessTable):
        self.make_app, self.run_app = make_app, run_app
        self.listeners, self.uds, self.lot_path, self.table = listeners, uds, lot_path, table
        self.children: dict[int, tuple[int, float]] = {}  # pid → (worker, start time)
        self.stopping = False
        self.status = 0

    def run(self) -> int:
        old = {s: signal.signal(s, self.stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for k in range(self.table.workers):
                self.spawn(k)
            while self.children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                self.reap(pid, status)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        return self.status

    def stop(self, _signum=None, _frame=None) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def reap(self, pid: int, status: int) -> None:
        k, started = self.children.pop(pid)
        served = self.table.serving(k)
        self.table.set(k, 0)
        if self.stopping:
            return
        code = os.waitstatus_to_exitcode(status)
        if not served:  # it failed while building its app: a restart would fail the same way
            print(f"waferscope serve: worker {k} stopped before it served (exit status {code}); "
                  "stopping the service", file=sys.stderr)
            self.status = 1
            self.stop()
            return
        print(f"waferscope serve: worker {k} stopped (exit status {code}); starting it again"
              + (" (the lot browser's open files are lost)" if k == 0 else ""), file=sys.stderr)
        time.sleep(max(0.0, RESTART_PAUSE_S - (time.monotonic() - started)))  # no tight loop of crashes
        self.spawn(k)

    def spawn(self, k: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.table.mark_serving(k, False)  # before the fork: the worker sets it, nothing clears it after
        pid = os.fork()
        if pid == 0:
            os._exit(self._worker(k))
        self.table.set(k, pid)
        self.children[pid] = (k, time.monotonic())

    def _worker(self, k: int) -> int:
        """Worker ``k``'s life, in the forked child; its exit status."""
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if k != 0:
                self.uds.close()
            self.table.set(k, os.getpid())
            app = self.make_app(k, self.table, None if k == 0 else self.lot_path)
            self.table.mark_serving(k)
            tcp = self.listeners[k % len(self.listeners)]
            for other in self.listeners:
                if other is not tcp:
                    other.close()
            self.run_app(app, [tcp, self.uds] if k == 0 else [tcp])
            return 0
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:
            return 1
        except BaseException as exc:  # noqa: BLE001 — one line, never a traceback; the supervisor decides
            print(f"waferscope serve: worker {k} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
