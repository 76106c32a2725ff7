"""Several server processes on one port (serve/workers.py): lot routes reach the worker that holds the
lots, /health sums the service's processes, and `waferscope serve --workers 2` answers as the models do,
spreads connections over both workers, restarts a worker that dies and stops as a whole."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from lotfiles import multi_lot
from servetools import free_port, wait_lot_done
from waferscope.serve.schemas import Limits
from waferscope.serve.workers import LotForward, ProcessTable

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    from waferscope.cli.serve import resolve_models

    return resolve_models(None, None, None, None, None, None)


def _app(models, **kwargs):
    from waferscope.serve import create_app

    m = models
    return create_app(m["classifier"], m["detector"], classifier_source=m["classifier_source"],
                      detector_source=m["detector_source"], threshold=m["threshold"], **kwargs)


@pytest.fixture(scope="module")
def parquet_bytes(tmp_path_factory):
    from waferscope.data.io_parquet import write_parquet

    path = tmp_path_factory.mktemp("lots") / "day.parquet"
    write_parquet(multi_lot(60, per_lot=20, seed=5), path)
    return path.read_bytes()


def _uds_server(app, path: str):
    """uvicorn serving ``app`` on a Unix socket in a thread, as worker 0 takes the forwarded lot routes."""
    import uvicorn

    from waferscope.serve.server import uvicorn_config

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.listen(16)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", 0))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the worker-0 stand-in did not start"
        time.sleep(0.02)
    return server, thread


def test_lot_routes_are_forwarded_to_the_worker_that_holds_them(models, parquet_bytes, tmp_path):
    limits = Limits(max_file_bytes=2_000_000, max_lot_sessions=2)
    path = str(tmp_path / "lots.sock")
    owner = _app(models, limits=limits)
    server, thread = _uds_server(owner, path)
    try:
        with TestClient(_app(models, limits=limits, lot_socket=path)) as fwd, TestClient(owner) as direct:
            r = fwd.post("/v1/lots", files={"file": ("day.parquet", parquet_bytes)})
            assert r.status_code == 200, r.text
            sid = r.json()["id"]
            head = wait_lot_done(fwd, sid)  # the scoring ran in the owner: its own client sees the same file
            assert head["progress"] == direct.get(f"/v1/lots/{sid}").json()["progress"]
            assert head["progress"]["classified"] == 60
            for route in (f"/v1/lots/{sid}/wafers?limit=7&sort=score&desc=1", f"/v1/lots/{sid}/lots.csv",
                          f"/v1/lots/{sid}/wafers.csv?class=none"):
                a, b = fwd.get(route), direct.get(route)
                assert a.status_code == b.status_code == 200
                assert a.content == b.content and a.headers["content-type"] == b.headers["content-type"]
            # the owner's errors and checks come back as they are: 404 JSON, cross-origin 403 JSON
            missing = fwd.get("/v1/lots/nope")
            assert missing.status_code == 404 and "no loaded file" in missing.json()["error"]
            foreign = fwd.post("/v1/lots", files={"file": ("d.parquet", parquet_bytes)},
                               headers={"Origin": "https://evil.example"})
            assert foreign.status_code == 403 and "cross-origin" in foreign.json()["error"]
            # a declared size over the limit is refused before any of it is read; a chunked one at the limit
            big = fwd.post("/v1/lots", content=b"x" * 10, headers={"content-length": "3000000",
                                                                   "content-type": "multipart/form-data; boundary=b"})
            assert big.status_code == 413 and "max_file_bytes" in big.json()["error"]
            chunked = fwd.post("/v1/lots", content=iter([b"x" * 1_000_000] * 3),
                               headers={"content-type": "multipart/form-data; boundary=b"})
            assert chunked.status_code == 413 and "max_file_bytes" in chunked.json()["error"]
            # the model routes stay in the forwarding worker
            assert fwd.post("/v1/classify", json={"maps": [[[1, 2], [1, 1]]]}).status_code == 200
            server.should_exit = True
            thread.join(timeout=10)
            gone = fwd.get(f"/v1/lots/{sid}")  # the owner down (a restart): a JSON 503, not a traceback
            assert gone.status_code == 503 and gone.headers["retry-after"] == "1" and "error" in gone.json()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_lot_forwarding_is_only_for_lot_paths():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["path"])

    import asyncio

    fwd = LotForward(app, "/nonexistent.sock", max_file_bytes=10)
    for path in ("/v1/classify", "/v1/lotsX", "/health"):
        asyncio.run(fwd({"type": "http", "path": path, "method": "GET", "headers": []}, None, None))
    assert seen == ["/v1/classify", "/v1/lotsX", "/health"]


def test_process_table_sums_the_service_processes():
    child = subprocess.Popen([sys.executable, "-c", "import time; sum(range(3_000_000)); time.sleep(30)"])
    try:
        table = ProcessTable(1)
        assert table.pids() == [os.getpid(), 0]
        alone_rss = table.memory()["rss_bytes"]
        time.sleep(0.5)
        table.set(0, child.pid)
        assert table.pids() == [os.getpid(), child.pid]
        mem = table.memory()
        assert mem["rss_bytes"] > alone_rss and 0 < mem["pss_bytes"] <= mem["rss_bytes"]
        assert table.cpu_seconds() >= time.process_time() - 0.05
    finally:
        child.kill()
        child.wait()


# ---- the supervisor with a stand-in app: fast -------------------------------------------------------------
TINY = r"""
import os, sys
from waferscope.serve.server import uvicorn_config
from waferscope.serve.workers import LotForward, serve_workers
import uvicorn

async def tiny(scope, receive, send):
    if scope["type"] != "http":
        return
    body = ("%d %s" % (os.getpid(), scope["path"])).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})

def make_app(k, table, lot_socket):
    return tiny if lot_socket is None else LotForward(tiny, lot_socket, 1000)

def run_app(app, sockets):
    uvicorn.Server(uvicorn_config(app, "127.0.0.1", int(sys.argv[1]))).run(sockets=sockets)

sys.exit(serve_workers(make_app, run_app, "127.0.0.1", int(sys.argv[1]), 3))
"""


def _start(args, env=None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), **(env or {})}
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _get(url: str, path: str) -> tuple[int, str]:
    """GET on a fresh connection (the kernel picks a worker for each): the answering pid and the path it saw.

    A raw socket: an httpx client costs ~10 ms of CPU to make, a socket nothing.
    """
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    pid, seen = body.decode().split()
    return int(pid), seen


def test_workers_share_the_port_lots_go_to_worker_0_and_a_dead_worker_is_replaced():
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(["-c", TINY, str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                _get(url, "/")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        workers = {_get(url, "/v1/classify")[0] for _ in range(40)}
        assert len(workers) == 3, "connections did not spread over the workers"
        lot_pids = {_get(url, "/v1/lots/abc/wafers")[0] for _ in range(20)}
        assert len(lot_pids) == 1 and _get(url, "/v1/lots/abc/wafers")[1] == "/v1/lots/abc/wafers"
        owner = lot_pids.pop()
        victim = next(iter(workers - {owner}))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while Path(f"/proc/{victim}").exists():  # (a connection it accepted while dying is reset, as in any crash)
            assert time.monotonic() < deadline, "the killed worker was not reaped"
            time.sleep(0.01)
        while True:  # replaced by a fresh fork; every request meanwhile is answered (the new worker takes them)
            now = {_get(url, "/v1/classify")[0] for _ in range(40)}
            if len(now) == 3 and victim not in now:
                break
            assert time.monotonic() < deadline, "the killed worker was not replaced"
        children = [int(p) for p in _children(proc.pid)]
    finally:
        code = _stop(proc)
    log = proc.stderr.read().decode()
    assert code == 0 and "worker" in log and "starting it again" in log, log
    time.sleep(0.2)
    assert len(children) == 3 and not [p for p in children if Path(f"/proc/{p}").exists()]


def test_a_worker_that_dies_at_once_stops_the_service():
    port = free_port()
    code = "import sys; from waferscope.serve.workers import serve_workers\n" \
           "def make_app(k, t, s): raise RuntimeError('no model here')\n" \
           f"sys.exit(serve_workers(make_app, None, '127.0.0.1', {port}, 2))"
    proc = _start(["-c", code])
    assert proc.wait(timeout=30) == 1
    log = proc.stderr.read().decode()
    assert "no model here" in log and "stopping the service" in log and "Traceback" not in log


def test_a_taken_port_is_one_config_error():
    from waferscope.errors import ConfigError
    from waferscope.serve.workers import serve_workers

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with pytest.raises(ConfigError, match="cannot listen on 127.0.0.1"):
            serve_workers(None, None, "127.0.0.1", s.getsockname()[1], 2)


# ---- the real command: `waferscope serve --workers 2` ---------------------------------------------------
def _health(url):
    return httpx.get(url + "/health", timeout=5).json()


@pytest.mark.slow  # starts the service with its models: ~20 s idle, a minute on a busy machine
def test_serve_with_two_workers(models, parquet_bytes):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "waferscope.cli.main", "serve", "--port", str(port), "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                health = _health(url)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the service did not start"
                time.sleep(0.2)
        assert health["workers"] == 2 and health["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)
        assert 0 < health["pss_bytes"] < health["rss_bytes"]
        # answers as the model does, whichever worker answers (fresh connections spread over both)
        ds = multi_lot(8, per_lot=4, seed=9)
        want = models["classifier"].predict_proba(ds)
        body = {"maps": [m.tolist() for m in ds.maps], "ids": [str(i) for i in ds.ids]}
        pids = set()
        for _ in range(16):
            with httpx.Client(base_url=url, timeout=30) as c:
                got = c.post("/v1/classify", json=body).json()["wafers"]
                np.testing.assert_array_equal([list(w["probabilities"].values()) for w in got], want)
                pids.add(c.get("/health").json()["pid"])
        assert len(pids) == 2, "every connection went to one worker"
        # torch in a forked worker: Grad-CAM (the explainer network) answers in both
        heat_pids = set()
        for _ in range(8):
            with httpx.Client(base_url=url, timeout=60) as c:
                heat = c.post("/v1/classify?heatmap=1", json={"maps": body["maps"][:2]})
                assert heat.status_code == 200, heat.text
                assert np.asarray(heat.json()["wafers"][0]["heatmap"]).shape == ds.maps[0].shape
                heat_pids.add(c.get("/health").json()["pid"])
        assert len(heat_pids) == 2
        # an uploaded file is paged through either worker
        r = httpx.post(url + "/v1/lots", files={"file": ("day.parquet", parquet_bytes)}, timeout=60)
        assert r.status_code == 200, r.text
        sid = r.json()["id"]
        for _ in range(6):
            with httpx.Client(base_url=url, timeout=30) as c:
                page = c.get(f"/v1/lots/{sid}/wafers", params={"limit": 5})
                assert page.status_code == 200 and len(page.json()["wafers"]) == 5
    finally:
        workers = [int(p) for p in _children(proc.pid)]
        code = _stop(proc)
    assert code == 0
    time.sleep(0.2)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "a worker outlived the service"


def _stop(proc, timeout: float = 30) -> int:
    """SIGTERM the service and return its exit status (killed, and the test failed, if it hangs)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
