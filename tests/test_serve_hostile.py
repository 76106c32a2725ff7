"""Hostile input against `waferscope serve` and the loaders it uses (issue #28): each case must be a
4xx/5xx JSON answer in under a second, without the memory growth the attack aims at, while honest
requests sent at the same time are answered normally.

Memory is checked with the process's *peak* resident size (``ru_maxrss``): the peak cannot fall back,
so a loader that allocated the stated gigabytes and then refused would fail the bound.
"""

from __future__ import annotations

import io
import json
import logging
import re
import resource
import socket
import threading
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from servetools import default_app, running_server

warnings.filterwarnings("ignore", message=".*httpx2.*")
from fastapi.testclient import TestClient  # noqa: E402

import waferscope.data as wd  # noqa: E402
from waferscope.data.limits import LoadLimits  # noqa: E402
from waferscope.errors import DataError  # noqa: E402
from waferscope.serve import Limits  # noqa: E402
from waferscope.serve.batcher import Batcher, DeadlineExceeded, MapBatch, QueueFull  # noqa: E402
from waferscope.serve.server import ConnectionLimits  # noqa: E402

SERVICE_LIMITS = LoadLimits(max_maps=1024, max_side=512, max_dies=16 << 20, max_decompressed_bytes=64 << 20)
MB = 1 << 20


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


class Bounded:
    """Asserts a block finished in ``seconds`` and raised the peak RSS by less than ``mb``."""

    def __init__(self, seconds: float = 1.0, mb: float = 100):
        self.seconds, self.mb = seconds, mb

    def __enter__(self):
        self.t0, self.rss0 = time.perf_counter(), peak_rss()
        return self

    def __exit__(self, *exc):
        took, grew = time.perf_counter() - self.t0, (peak_rss() - self.rss0) / MB
        assert took < self.seconds, f"took {took:.2f} s"
        assert grew < self.mb, f"peak RSS grew {grew:.0f} MB"


# ---- hostile files ---------------------------------------------------------------------------------
def huge_parquet(path, n=80, side=5000, lie=False):
    """A few-kB Parquet stating ``n`` maps of side×side dies: one dictionary value shared by every row,
    so only one map is ever held while writing. ``lie``: rows/cols say 10×10 instead."""
    one = pa.array([b"\x01" * (side * side)], type=pa.binary())
    maps = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), one)
    shape = 10 if lie else side
    table = pa.table({"id": [f"w{i}" for i in range(n)], "label": [""] * n,
                      "rows": pa.array([shape] * n, pa.int32()), "cols": pa.array([shape] * n, pa.int32()),
                      "channels": pa.array([1] * n, pa.int8()), "map": maps})
    pq.write_table(table, path, compression="zstd")
    return path


def npz_bomb(path, inflated=256 * MB, lie_shape=None):
    """An .npz whose maps_flat member inflates to ``inflated`` bytes (zeros deflate ~1000:1)."""
    n = 4
    shapes = np.array(lie_shape or [(8, 8)] * n, np.int64)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (inflated,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for key, arr in (("shapes", shapes), ("labels", np.array(["none"] * len(shapes)))):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, arr)
            z.writestr(f"{key}.npy", buf.getvalue())
        with z.open("maps_flat.npy", "w", force_zip64=True) as f:
            f.write(header.getvalue())
            zero = bytes(4 * MB)
            for _ in range(inflated // len(zero)):
                f.write(zero)
    return path


def npy_claiming(path, shape):
    """A tiny .npy whose header states ``shape`` (uint8) but holds 64 bytes."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        f.write(bytes(64))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return npz_bomb(tmp_path_factory.mktemp("bomb") / "bomb.npz")


def test_parquet_stating_huge_maps_is_refused_from_its_metadata(tmp_path):
    path = huge_parquet(tmp_path / "huge.parquet")
    assert path.stat().st_size < 200_000
    with Bounded(), pytest.raises(DataError, match="max_side"):
        wd.load(path, limits=SERVICE_LIMITS)
    # shapes within max_side but 80 × 500² dies in all: the total is its own limit
    small = huge_parquet(tmp_path / "many.parquet", n=80, side=500)
    with Bounded(), pytest.raises(DataError, match="max_dies"):
        wd.load(small, limits=LoadLimits(max_side=512, max_dies=16 << 20))


def test_parquet_whose_maps_are_longer_than_their_shapes_is_refused_before_decoding(tmp_path):
    path = huge_parquet(tmp_path / "lie.parquet", n=80, side=2000, lie=True)
    with Bounded(), pytest.raises(DataError, match="larger than their shapes"):
        wd.load(path, limits=SERVICE_LIMITS)


def test_npz_bomb_is_refused_without_inflating(bomb):
    assert bomb.stat().st_size < 2 * MB
    with Bounded(), pytest.raises(DataError, match="max_decompressed_bytes"):
        wd.load(bomb, limits=SERVICE_LIMITS)


def test_npz_shapes_over_the_limits_are_refused_before_the_maps(tmp_path):
    path = npz_bomb(tmp_path / "s.npz", inflated=8 * MB, lie_shape=[(4000, 4000)] * 4)
    with Bounded(), pytest.raises(DataError, match="max_side"):
        wd.load(path, limits=SERVICE_LIMITS)
    many = npz_bomb(tmp_path / "m.npz", inflated=8 * MB, lie_shape=[(1, 1)] * 2000)
    with Bounded(), pytest.raises(DataError, match="max_maps"):
        wd.load(many, limits=SERVICE_LIMITS)


def test_npz_inflation_is_capped_even_when_sizes_agree(tmp_path):
    """A member may inflate only to its stated size; the cap is enforced while inflating."""
    path = npz_bomb(tmp_path / "c.npz", inflated=8 * MB, lie_shape=[(1024, 1024)] * 8)
    with Bounded(), pytest.raises(DataError, match="max_decompressed_bytes"):
        wd.load(path, limits=LoadLimits(max_decompressed_bytes=4 * MB))
    assert len(wd.load(path, limits=LoadLimits(max_decompressed_bytes=16 * MB))) == 8  # and is readable


def test_mixedwm38_header_is_checked_before_its_maps(tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (5000, 600, 600)})
            f.write(bytes(1 << 16))
        buf = io.BytesIO()
        np.lib.format.write_array(buf, np.zeros((5000, 8), np.uint8))
        z.writestr("arr_1.npy", buf.getvalue())
    with Bounded(), pytest.raises(DataError, match="max_maps|max_side"):
        wd.load(path, limits=SERVICE_LIMITS)


@pytest.mark.parametrize("shape,words", [((100_000, 52, 52), "max_maps"), ((1, 60_000, 60_000), "max_side"),
                                         ((1000, 512, 512), "max_dies"), ((4, 52, 52), "truncated")])
def test_npy_stack_header_is_checked_before_its_data(tmp_path, shape, words):
    path = npy_claiming(tmp_path / "s.npy", shape)
    with Bounded(), pytest.raises(DataError, match=words):
        wd.load(path, limits=SERVICE_LIMITS)


def test_die_list_with_a_huge_coordinate_span(tmp_path):
    path = tmp_path / "span.csv"
    path.write_text("lot,wafer,x,y,bin\n" + "".join(f"L,1,{x},{y},1\n" for x in (0, 4095) for y in (0, 4095)))
    with Bounded(), pytest.raises(DataError, match="max_side|max_dies"):
        wd.load(path, limits=SERVICE_LIMITS)


# ---- the service ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app():
    return default_app()


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


@pytest.fixture(scope="module")
def maps():
    return wd.load("synthetic:n=8,seed=3").maps


def _body(maps_, ids=None):
    doc = {"maps": [m.tolist() for m in maps_]}
    if ids is not None:
        doc["ids"] = ids
    return doc


def assert_json_error(r, status):
    assert r.status_code == status, (r.status_code, r.text[:300])
    assert r.headers["content-type"].startswith("application/json")
    assert isinstance(r.json()["error"], str) and "Traceback" not in r.text


def test_hostile_uploads_answer_413_json_fast(client, tmp_path, bomb):
    cases = {"huge.parquet": huge_parquet(tmp_path / "huge.parquet"), "bomb.npz": bomb,
             "stack.npy": npy_claiming(tmp_path / "stack.npy", (100_000, 52, 52))}
    for name, path in cases.items():
        with Bounded():
            r = client.post("/v1/classify", files={"file": (name, path.read_bytes())})
        assert_json_error(r, 413)
        assert name in r.json()["error"]


def test_bad_ids_and_deep_nesting_are_400_json(client, maps, caplog):
    raw = json.dumps(_body(maps[:1], ["x"])).replace('"x"', '"\\ud800"')
    with caplog.at_level(logging.DEBUG):
        r = client.post("/v1/classify", content=raw, headers={"content-type": "application/json"})
        assert_json_error(r, 400)
        assert "surrogate" in r.json()["error"]
        deep = b'{"maps": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
        with Bounded():
            r = client.post("/v1/classify", content=deep, headers={"content-type": "application/json"})
        assert_json_error(r, 400)
        assert "nested too deeply" in r.json()["error"]
        # the same, large enough to be parsed in pieces in a worker thread
        deep_big = deep[:-1] + b', "pad": "' + b"x" * 100_000 + b'"}'
        assert_json_error(client.post("/v1/classify", content=deep_big, headers={"content-type": "application/json"}), 400)
    assert not any("Traceback" in rec.getMessage() or rec.exc_info for rec in caplog.records)


@pytest.mark.parametrize("doc,words", [
    ({"maps": [[[0, 1]]], "ids": [None]}, "must be a string"),
    ({"maps": [[[0, 1]]], "ids": [True]}, "must be a string"),
    ({"maps": [[[0, 1]]], "ids": ["x" * 300]}, "characters long"),
    ({"maps": [[[0, 10 ** 40]]]}, "die values"),
    ({"maps": [[[0, 1e308]]]}, "die values"),
    ({"maps": [[[0, {"a": 1}]]]}, "die values"),
])
def test_values_that_would_fail_later_are_refused_up_front(client, doc, words):
    r = client.post("/v1/classify", json=doc)
    assert_json_error(r, 400)
    assert words in r.json()["error"]


def test_nan_and_infinity_are_refused(client):
    r = client.post("/v1/classify", content=b'{"maps": [[[0, NaN], [Infinity, 1]]]}',
                    headers={"content-type": "application/json"})
    assert_json_error(r, 400)


def test_echo_and_total_dies_are_bounded_before_the_model(tmp_path):
    lot = wd.load("synthetic:n=8,seed=1")
    two = sum(m.size for m in lot.maps[:2])
    c = TestClient(default_app(limits=Limits(max_echo_dies=two, max_dies=50_000)))
    assert_json_error(c.post("/v1/classify?maps=1", json=_body(lot.maps)), 413)
    assert c.post("/v1/classify?maps=1", json=_body(lot.maps[:2])).status_code == 200
    big = {"maps": [np.ones((200, 200), int).tolist()] * 2}
    r = c.post("/v1/classify", json=big)
    assert_json_error(r, 413)
    assert "max_dies" in r.json()["error"]
    # a large body asking for an echo stops being parsed at the first map over the echo limit
    parsed = []
    import waferscope.serve.app as serve_app

    real = serve_app.DieCap.grid
    serve_app.DieCap.grid = lambda self, g: (parsed.append(1), real(self, g))[1]
    try:
        many = {"maps": [np.ones((40, 40), int).tolist()] * 200}  # > 64 kB: parsed map by map
        r = c.post("/v1/classify?maps=1", json=many)
    finally:
        serve_app.DieCap.grid = real
    assert_json_error(r, 413)
    assert "max_echo_dies" in r.json()["error"] and len(parsed) < 50


def test_cross_origin_uploads_are_refused(client, maps):
    body = _body(maps[:1])
    for headers in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"},
                    {"Origin": "http://testserver.evil.example", "Sec-Fetch-Site": "same-site"}):
        r = client.post("/v1/classify", json=body, headers=headers)
        assert_json_error(r, 403)
    # a no-cors form POST from another page: refused before its body is read
    r = client.post("/v1/classify", files={"file": ("a.npy", b"x")}, headers={"Origin": "http://evil.example"})
    assert_json_error(r, 403)
    ok = client.post("/v1/classify", json=body, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200
    assert client.post("/v1/classify", json=body).status_code == 200  # API clients send no Origin
    allowed = TestClient(default_app(allowed_origins=("https://yield.fab.example",)))
    assert allowed.post("/v1/classify", json=body, headers={"Origin": "https://yield.fab.example"}).status_code == 200


def test_health_names_the_real_models_and_docs_are_offline(client):
    h = client.get("/health").json()
    for kind in ("classifier", "detector"):  # this said "bundled None" for the detector
        assert re.fullmatch(r"bundled \([a-z0-9_]+\)", h[kind]["source"]) and "None" not in h[kind]["source"]
    docs = client.get("/docs").text
    assert "/openapi.json" in docs and not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", docs)
    assert "http://" not in docs and "https://" not in docs
    assert client.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]["parameters"]


def test_a_model_failure_is_one_json_500_and_one_log_line(caplog, maps):
    from waferscope.base import Classifier

    class Broken(Classifier):
        registry_name = "broken"
        classes_ = ["a", "b"]

        def predict_proba(self, ds):
            raise RuntimeError("boom")

    from waferscope.cli.serve import resolve_models
    from waferscope.serve import create_app

    det = resolve_models(None, None, None, None, None, None)["detector"]
    c = TestClient(create_app(Broken(), det))
    with caplog.at_level(logging.WARNING):
        r = c.post("/v1/classify", json=_body(maps[:1]))
    assert_json_error(r, 500)
    errors = [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info and "boom" in errors[0].getMessage()


def test_request_deadline_answers_503(maps):
    c = TestClient(default_app(limits=Limits(request_timeout=0.001)))
    r = c.post("/v1/score", json=_body(maps))
    assert_json_error(r, 503)
    assert "time budget" in r.json()["error"]


# ---- the batcher: isolation, fairness, deadlines, a bounded queue ----------------------------------------
def _batch(ids, side=4):
    return MapBatch([np.ones((side, side), np.uint8) for _ in ids], list(ids), [None] * len(ids))


def test_a_failing_request_fails_alone():
    calls = []

    def fn(ds):
        calls.append(list(ds.ids))
        if "bad" in list(ds.ids):
            raise ValueError("bad map")
        return list(ds.ids)

    gate = threading.Event()
    b = Batcher(lambda ds: (gate.wait(), fn(ds))[1], 64, "test")
    try:
        futs = [b.submit(_batch(["first"]))]  # holds the worker until the others are queued
        futs += [b.submit(_batch([f"ok{i}"])) for i in range(3)] + [b.submit(_batch(["bad"]))]
        futs += [b.submit(_batch(["ok3", "ok4"]))]
        gate.set()
        assert futs[0].result(5) == ["first"]
        assert [f.result(5) for f in futs[1:4]] == [["ok0"], ["ok1"], ["ok2"]]
        with pytest.raises(ValueError, match="bad map"):
            futs[4].result(5)
        assert futs[5].result(5) == ["ok3", "ok4"]
    finally:
        b.close()


def test_big_requests_take_turns_with_small_ones():
    order = []

    def fn(ds):
        order.append(list(ds.ids))
        time.sleep(0.002)
        return list(ds.ids)

    b = Batcher(fn, 64, "test", chunk_maps=16)
    try:
        big = b.submit(_batch([f"big{i}" for i in range(640)]))
        time.sleep(0.01)
        small = b.submit(_batch(["small"]))
        assert small.result(5) == ["small"]
        assert not big.done()  # the small one did not wait for all 40 chunks of the big one
        assert big.result(10) == [f"big{i}" for i in range(640)]
        assert max(len(ids) for ids in order) <= 64
    finally:
        b.close()


def test_deadline_drops_the_rest_of_a_request_and_frees_the_worker():
    calls = []

    def fn(ds):
        calls.append(len(ds))
        time.sleep(0.02)
        return [0] * len(ds)

    b = Batcher(fn, 8, "test", chunk_maps=8)
    try:
        fut = b.submit(_batch([str(i) for i in range(800)]), deadline=time.monotonic() + 0.1)
        with pytest.raises(DeadlineExceeded):
            fut.result(5)
        assert sum(calls) < 200  # stopped within a chunk or two of the deadline, not after 100 chunks
        assert b.submit(_batch(["next"])).result(5) == [0]
    finally:
        b.close()


def test_full_queue_refuses_with_queue_full():
    gate = threading.Event()
    b = Batcher(lambda ds: (gate.wait(), [0] * len(ds))[1], 8, "test", max_queued_dies=100)
    try:
        first = b.submit(_batch(["a"] * 4))  # 64 dies
        with pytest.raises(QueueFull):
            b.submit(_batch(["b"] * 4))
        gate.set()
        first.result(5)
        time.sleep(0.05)
        assert b.submit(_batch(["c"] * 4)).result(5)  # room again once answered
    finally:
        b.close()


# ---- a real server: connections, honest clients during attacks -------------------------------------
@pytest.fixture(scope="module")
def server(app):
    with running_server(app, ConnectionLimits(read_timeout=1.0, keep_alive=1.0, max_header_bytes=16 * 1024,
                                              max_connections=300)) as url:
        yield url


def _port(url):
    return int(url.rsplit(":", 1)[1])


def _closed_within(sock, seconds) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open."""
    sock.settimeout(seconds)
    got = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return got
            got += chunk
    except socket.timeout:
        return None
    except ConnectionResetError:
        return got


def test_idle_and_half_sent_connections_are_closed(server):
    port = _port(server)
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(100)]
    half = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n")  # headers never end
        half.append(s)
    body_half = socket.create_connection(("127.0.0.1", port))
    body_half.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"maps\": ")  # body never ends
    t0 = time.perf_counter()
    try:
        for s in idle + half:
            assert _closed_within(s, 3) is not None
        answer = _closed_within(body_half, 3)
        assert answer is not None and b" 408 " in answer.split(b"\r\n")[0]
        assert time.perf_counter() - t0 < 4
        assert httpx.get(server + "/health", timeout=5).status_code == 200
    finally:
        for s in idle + half + [body_half]:
            s.close()


def test_huge_headers_are_refused(server):
    with Bounded(seconds=2):
        s = socket.create_connection(("127.0.0.1", _port(server)))
        try:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
            try:
                for _ in range(64):
                    s.sendall(b"a" * 16384)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = _closed_within(s, 2)
        finally:
            s.close()
    assert answer is not None and (answer == b"" or b" 431 " in answer.split(b"\r\n")[0])


def test_honest_clients_see_no_error_during_attacks(server, tmp_path, bomb, maps):
    """16 honest clients (1-map classify/score) while an attacker sends every hostile request above."""
    stop = threading.Event()
    honest_errors, latencies = [], []
    body = json.dumps(_body(maps[:1], ["honest"])).encode()

    def honest(k):
        with httpx.Client(base_url=server, timeout=10) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                r = c.post("/v1/classify" if k % 2 else "/v1/score", content=body,
                           headers={"content-type": "application/json"})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200 or r.json()["wafers"][0]["id"] != "honest":
                    honest_errors.append((r.status_code, r.text[:200]))

    surrogate = json.dumps(_body(maps[:1], ["x"])).replace('"x"', '"\\ud800"').encode()
    deep = b'{"maps": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    huge = huge_parquet(tmp_path / "huge.parquet").read_bytes()
    attacks = [("json", surrogate), ("json", deep), ("file", ("huge.parquet", huge)),
               ("file", ("bomb.npz", bomb.read_bytes())), ("json", b'{"maps": [[[0, 1e999]]]}')]
    with ThreadPoolExecutor(16) as pool:
        for k in range(16):
            pool.submit(honest, k)
        rss0 = httpx.get(server + "/health").json()["rss_bytes"]
        try:
            with httpx.Client(base_url=server, timeout=10) as c:
                for _ in range(3):
                    for kind, payload in attacks:
                        t0 = time.perf_counter()
                        if kind == "json":
                            r = c.post("/v1/classify", content=payload, headers={"content-type": "application/json"})
                        else:
                            r = c.post("/v1/classify", files={"file": payload})
                        assert_json_error(r, r.status_code)
                        assert 400 <= r.status_code < 500
                        assert time.perf_counter() - t0 < 1.5  # shared CI machines: some slack over 1 s
        finally:
            stop.set()
    rss1 = httpx.get(server + "/health").json()["rss_bytes"]
    assert honest_errors == []
    assert latencies and (rss1 - rss0) / MB < 100


# ---- the same limits on the command line --------------------------------------------------------------
def test_cli_max_dies_refuses_before_reading(capsys, tmp_path):
    from clitools import invoke

    path = huge_parquet(tmp_path / "huge.parquet", n=100, side=4000)  # 1.6 GB of dies if decoded
    for cmd in (("classify", "predict"), ("detect", "score")):
        with Bounded(seconds=30, mb=500):  # the bound leaves room for loading the model itself
            code, _, err = invoke(capsys, *cmd, "--data", path, "--out", tmp_path / "o.csv", "--max-dies", "1000000")
        assert code != 0 and "max_dies" in err and "Traceback" not in err
    small = tmp_path / "small.parquet"
    from waferscope.data.io_parquet import write_parquet

    write_parquet(wd.load("synthetic:n=3,seed=0"), small)
    assert invoke(capsys, "classify", "predict", "--data", small, "--out", tmp_path / "p.csv", "--max-dies", "1000000")[0] == 0


def test_connections_beyond_the_cap_get_a_json_503(maps):
    with running_server(default_app(), ConnectionLimits(max_connections=4, read_timeout=2.0)) as url:
        socks = [socket.create_connection(("127.0.0.1", _port(url))) for _ in range(10)]
        try:
            answers = [_closed_within(s, 3) for s in socks]
        finally:
            for s in socks:
                s.close()
        refused = [a for a in answers if a and b" 503 " in a.split(b"\r\n")[0]]
        assert len(refused) >= 5 and all(b'{"error": "too many open connections' in a for a in refused)
        assert httpx.post(url + "/v1/classify", json=_body(maps[:1]), timeout=10).status_code == 200


def test_fast_grids_is_exact_under_byte_mutations():
    """Any one byte changed in a maps list: fast_grids gives json.loads's grids or hands it on (None)."""
    from waferscope.serve.app import fast_grids

    rng = np.random.default_rng(1)
    alphabet = b"0123456789,[] -.e"
    for trial in range(300):
        grids = [rng.integers(0, 3, size=tuple(rng.integers(1, 6, 2))) for _ in range(rng.integers(1, 3))]
        text = bytearray(json.dumps([g.tolist() for g in grids], separators=(",", ":")).encode())
        text[rng.integers(3, len(text) - 3)] = alphabet[rng.integers(len(alphabet))]
        got = fast_grids(bytes(text), 0, 64)
        if got is None:
            continue
        want = json.loads(bytes(text)[:got[1]])  # accepted: must be valid JSON holding exactly these grids
        assert len(want) == len(got[0])
        assert all(np.array_equal(np.asarray(a), b) and np.asarray(a).ndim == 2 for a, b in zip(want, got[0]))


def test_fast_grid_decoding_agrees_with_json():
    """fast_grids (bytes + numpy) must give json.loads's grids, and hand anything else to it."""
    from waferscope.serve.app import parse_json_maps

    rng = np.random.default_rng(0)
    lim = Limits()
    for trial in range(40):
        grids = [rng.integers(0, 3, size=tuple(rng.integers(1, 30, 2))) for _ in range(rng.integers(1, 5))]
        doc = {"maps": [g.tolist() for g in grids], "ids": [f"w]]]{i}" for i in range(len(grids))]}
        for kw in ({}, {"separators": (",", ":")}, {"indent": 1}):
            got = parse_json_maps(json.dumps(doc, **kw).encode(), lim)
            assert all(np.array_equal(a, b) for a, b in zip(got.maps, grids)) and got.ids == doc["ids"]
    for bad, words in ((b'{"maps": [[[0,1],[1]]]}', "ragged"), (b'{"maps": [[[0],[1,2,0]]]}', "ragged"),
                       (b'{"maps": [[[0,1],[1,2]]]]}', "not valid JSON"), (b'{"maps": [[[0,1] [1,2]]]}', "not valid JSON"),
                       (b'{"maps": [[[0,3]]]}', "found [3]"), (b'{"maps": [[[01]]]}', "not valid JSON")):
        with pytest.raises(Exception, match=re.escape(words)):
            parse_json_maps(bad, lim)
