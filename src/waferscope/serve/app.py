"""The HTTP service: ``create_app(classifier, detector)`` → a FastAPI app.

    POST /v1/classify   maps → class + probabilities per wafer   (?heatmap=1: Grad-CAM, ?maps=1: the grids)
    POST /v1/score      maps → anomaly score (+ is_anomalous)    (?heatmap=1: anomaly map)
    GET  /health        status, models, versions, limits
    GET  /              the browser page (page.html, self-contained)

Maps arrive as JSON (``{"maps": [grid, ...], "ids": [...]}``) or as one uploaded file in any format
:func:`waferscope.data.load` reads, except pickle: unpickling runs code, so an upload is never
unpickled (convert with ``waferscope data import X.pkl --out X.parquet`` and upload the Parquet).
Every problem with a request is a 4xx with ``{"error": "<what is wrong>"}``. docs/serve.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from waferscope import __version__
from waferscope.data.dataset import WaferDataset, validate_map
from waferscope.errors import DataError, WaferscopeError
from waferscope.serve.batcher import Batcher, MapBatch, ServiceStopped
from waferscope.serve.schemas import ClassifyResponse, ErrorResponse, Limits, MapsRequest, ScoreResponse

PICKLE_REFUSAL = ("pickle uploads are refused: unpickling runs arbitrary code. Convert the file once with "
                  "`waferscope data import FILE.pkl --out FILE.parquet` and upload the Parquet file")


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# ---- body size ----------------------------------------------------------------------------------
class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` with 413 before anything parses it.

    A declared Content-Length is checked up front; a chunked body is counted as it arrives. The
    body is then replayed to the app, so the endpoints see an ordinary request.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        too_big = f"request body too large: the limit is {self.max_bytes} bytes (--max-body-bytes)"
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    return await _send_error(send, 413, too_big)
            except ValueError:
                return await _send_error(send, 400, "bad Content-Length header")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await _send_error(send, 413, too_big)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _send_error(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


# ---- parsing ------------------------------------------------------------------------------------
def parse_json_maps(body: bytes, limits: Limits) -> MapBatch:
    """``{"maps": [...], "ids": [...]}`` → validated maps, or a RequestError naming the problem."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "maps" not in doc:
        raise RequestError('expected a JSON object {"maps": [grid, ...]} (a grid is a list of rows of die states 0/1/2)')
    maps = doc["maps"]
    if not isinstance(maps, list):
        raise RequestError('"maps" must be a list of die grids')
    if not maps:
        raise RequestError('no maps: "maps" is an empty list')
    if len(maps) > limits.max_maps:
        raise RequestError(f"too many maps: {len(maps)} in one request, the limit is {limits.max_maps} "
                           f"(--max-maps); split the request", 413)
    if isinstance(maps[0], list) and maps[0] and not isinstance(maps[0][0], list):
        raise RequestError('"maps" must be a list of die grids, each a list of rows; to send one map, '
                           'wrap it: {"maps": [grid]}')
    ids = doc.get("ids")
    if ids is not None:
        if not isinstance(ids, list) or len(ids) != len(maps) or not all(isinstance(i, (str, int)) for i in ids):
            raise RequestError(f'"ids" must be a list of {len(maps)} strings, one per map')
        ids = [str(i) for i in ids]
    out = []
    for i, grid in enumerate(maps):
        if not isinstance(grid, list) or not grid or not all(isinstance(r, list) for r in grid):
            raise RequestError(f"map {i}: a die grid must be a non-empty list of rows (lists of die states)")
        widths = [len(r) for r in grid]
        if len(set(widths)) > 1:
            j = next(k for k, w in enumerate(widths) if w != widths[0])
            raise RequestError(f"map {i}: ragged rows: row 0 has {widths[0]} dies, row {j} has {widths[j]}; "
                               f"every row of a grid must have the same length")
        _check_side(i, (len(grid), widths[0]), limits)
        try:
            arr = np.asarray(grid)
        except (ValueError, TypeError) as exc:
            raise RequestError(f"map {i}: die values must be numbers 0, 1 or 2 ({exc})") from None
        if arr.ndim != 2:
            raise RequestError(f"map {i}: die values must be numbers 0, 1 or 2, not lists")
        if arr.dtype == object or arr.dtype.kind in "USb":
            raise RequestError(f"map {i}: die values must be numbers 0 (no die), 1 (pass) or 2 (fail)")
        out.append(validate_map(arr, None, i))  # DataError → 400 with its own message
    ids = ids or [f"map-{i}" for i in range(len(out))]
    return MapBatch(out, ids, [None] * len(out))


def _check_side(i: int, shape: tuple[int, int], limits: Limits) -> None:
    if max(shape) > limits.max_side:
        raise RequestError(f"map {i}: {shape[0]}×{shape[1]} dies is too large: the limit is "
                           f"{limits.max_side} rows or columns (--max-side)", 413)


def is_pickle(filename: str, head: bytes) -> bool:
    """Suffix .pkl/.pickle, or the PROTO opcode (0x80) every protocol ≥ 2 pickle starts with."""
    return Path(filename).suffix.lower() in (".pkl", ".pickle", ".pck") or head[:1] == b"\x80"


def load_upload(filename: str, data: bytes, limits: Limits) -> MapBatch:
    """Write the upload to a private temp file, load it with waferscope.data.load, delete it."""
    from waferscope.data import load
    from waferscope.data.load import sniff_format

    name = os.path.basename(filename or "upload") or "upload"
    if not data:
        raise RequestError(f"{name}: the uploaded file is empty")
    if is_pickle(name, data[:8]):
        raise RequestError(f"{name}: {PICKLE_REFUSAL}", 415)
    # keep the suffix (some formats are recognised by it) and the stem (loaders derive ids from it),
    # both reduced to safe characters: the user's name never becomes a path of its own
    suffix = re.sub(r"[^A-Za-z0-9.]", "", Path(name).suffix)[:16]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem).strip("_")[:64] or "upload"
    with tempfile.TemporaryDirectory(prefix="waferscope-upload-") as tmp:
        path = Path(tmp) / f"{stem}{suffix}"
        path.write_bytes(data)
        try:
            if sniff_format(path) == "pickle":  # belt and braces: never hand a pickle to load()
                raise RequestError(f"{name}: {PICKLE_REFUSAL}", 415)
            dataset = load(path)
        except WaferscopeError as exc:  # name the user's file, not our temp path
            raise RequestError(f"{name}: {exc.problem}") from None
    if dataset.kind != "wafer":
        raise RequestError(f"{name}: holds {dataset.kind} data; the service takes wafer maps (die states 0/1/2)")
    if len(dataset) == 0:
        raise RequestError(f"{name}: no maps in the file")
    if len(dataset) > limits.max_maps:
        raise RequestError(f"{name}: too many maps: {len(dataset)} in one request, the limit is "
                           f"{limits.max_maps} (--max-maps); split the file", 413)
    for i, m in enumerate(dataset.maps):
        try:
            _check_side(i, m.shape[:2], limits)
        except RequestError as exc:
            raise RequestError(f"{name}: {exc.message}", exc.status) from None
    return MapBatch(list(dataset.maps), [str(i) for i in dataset.ids], _lots(dataset))


# ---- the app ------------------------------------------------------------------------------------
def _model_info(model, source: str, run_dir) -> dict:
    """Name, where it came from, and the waferscope version that trained it (its model.json)."""
    from waferscope.base import read_run_header

    info = {"name": model.registry_name, "source": source}
    if run_dir is not None:
        try:
            info["trained_with_waferscope"] = read_run_header(run_dir).get("waferscope_version")
        except WaferscopeError:
            pass
    return info


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _lots(dataset: WaferDataset) -> list[str | None]:
    lots = dataset.meta["lot"].astype(str).tolist() if "lot" in dataset.meta else [""] * len(dataset)
    return [lot if lot and lot != "nan" else None for lot in lots]


def create_app(classifier, detector, *, classifier_source: str = "", detector_source: str = "",
               classifier_run=None, detector_run=None, threshold: float | None = None, limits: Limits | None = None, threads: int | None = None,
               max_batch: int | None = None):
    """A FastAPI app serving ``classifier`` (fitted :class:`~waferscope.base.Classifier`) and
    ``detector`` (fitted :class:`~waferscope.base.Detector`; ``threshold`` its decision threshold,
    e.g. the run's threshold.json, or None). ``*_source`` say where each came from (shown by /health),
    ``*_run`` are their run directories (for the version that trained them). Each model is loaded once by the caller and run by one
    worker thread that batches the queued requests (:mod:`.batcher`). ``threads`` sets torch's
    intra-op threads (default: leave torch's setting)."""
    limits = limits or Limits()
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    classes = [str(c) for c in classifier.classes_]
    has_gradcam = getattr(classifier, "network_", None) is not None and hasattr(classifier, "to_tensor")
    batch = max_batch or limits.max_maps

    def classify_batch(ds: WaferDataset) -> list:
        return list(np.asarray(classifier.predict_proba(ds), dtype=np.float64))

    def classify_with_heat(ds: WaferDataset) -> list:
        from waferscope.explain import explain

        proba = classify_batch(ds)  # the same probabilities as without ?heatmap (and as the CLI)
        heat = explain(classifier, ds, progress=False).heat
        return list(zip(proba, heat))

    def score_batch(ds: WaferDataset) -> list:
        res = detector.score(ds)
        return list(zip(np.asarray(res.scores, dtype=np.float64), res.maps))

    clf_worker = Batcher(classify_batch, batch, "classifier")
    det_worker = Batcher(score_batch, batch, "detector")
    mode = getattr(detector, "mode_", None) or getattr(detector, "input_kind_", None)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        clf_worker.close()  # finish the batch in flight, then stop the threads
        det_worker.close()

    app = FastAPI(title="waferscope", version=__version__, lifespan=lifespan,
                  description="Wafer-map defect classification and anomaly scoring (docs/serve.md).")
    app.state.limits = limits
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestError)
    async def _request_error(_request, exc: RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(ServiceStopped)
    async def _stopped(_request, exc: ServiceStopped):
        return JSONResponse({"error": str(exc)}, status_code=503)

    @app.exception_handler(WaferscopeError)
    async def _waferscope_error(_request, exc: WaferscopeError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    async def read_maps(request: Request) -> MapBatch:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            body = await request.body()
            if len(body) < 256 * 1024:  # a few maps: parsing takes less than handing it to a thread
                return parse_json_maps(body, limits)
            return await run_in_threadpool(parse_json_maps, body, limits)
        if ctype == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=8)
            except Exception as exc:  # starlette's MultiPartException and friends: a malformed upload
                raise RequestError(f"cannot read the multipart upload ({getattr(exc, 'message', exc)})") from None
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise RequestError('a multipart upload needs one file in the field "file"')
            data = await upload.read()
            return await run_in_threadpool(load_upload, upload.filename or "upload", data, limits)
        raise RequestError(f"unsupported Content-Type {ctype or '(none)'!r}: send application/json "
                           '{"maps": [...]} or multipart/form-data with a "file" field', 415)

    def flag(value: str | None, name: str) -> bool:
        if value is None or value in ("0", "false", "no", ""):
            return False
        if value in ("1", "true", "yes"):
            return True
        raise RequestError(f"?{name}= must be 0 or 1, got {value!r}")

    def base_row(ds: MapBatch, i: int, with_map: bool) -> dict:
        row: dict[str, Any] = {"id": ds.ids[i]}
        if ds.lots[i] is not None:
            row["lot"] = ds.lots[i]
        if with_map:
            row["map"] = ds.maps[i].tolist()
        return row

    doc_responses = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse}}
    body_doc = {"requestBody": {"content": {
        "application/json": {"schema": MapsRequest.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
    }}}

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=doc_responses, openapi_extra=body_doc)
    async def classify(request: Request, heatmap: str | None = Query(None, description="1: Grad-CAM per wafer"),
                       maps: str | None = Query(None, description="1: echo each die grid")):
        """Class and class probabilities of every map."""
        want_heat, want_maps = flag(heatmap, "heatmap"), flag(maps, "maps")
        if want_heat and not has_gradcam:
            raise RequestError(f"this classifier ({classifier.registry_name}) is not a neural network, so it has "
                               "no Grad-CAM heat map; serve a cnn classifier for ?heatmap=1")
        ds = await read_maps(request)
        if want_heat and len(ds) > limits.max_heatmap_maps:
            raise RequestError(f"too many maps for ?heatmap=1: {len(ds)}, the limit is {limits.max_heatmap_maps} "
                               "(--max-heatmap-maps)", 413)
        out = await asyncio.wrap_future(clf_worker.submit(ds, classify_with_heat if want_heat else None))
        wafers = []
        for i, item in enumerate(out):
            proba, heat = item if want_heat else (item, None)
            row = base_row(ds, i, want_maps)
            row["class"] = classes[int(np.argmax(proba))]
            row["probabilities"] = {c: float(p) for c, p in zip(classes, proba)}
            if heat is not None:
                row["heatmap"] = np.round(heat.astype(np.float64), 4).tolist()
            wafers.append(row)
        return JSONResponse({"model": classifier.registry_name, "classes": classes, "wafers": wafers})

    @app.post("/v1/score", response_model=ScoreResponse, responses=doc_responses, openapi_extra=body_doc)
    async def score(request: Request, heatmap: str | None = Query(None, description="1: anomaly map per wafer"),
                    maps: str | None = Query(None, description="1: echo each die grid")):
        """Anomaly score of every map (higher = more anomalous) and, with a threshold, is_anomalous."""
        want_heat, want_maps = flag(heatmap, "heatmap"), flag(maps, "maps")
        ds = await read_maps(request)
        if mode == "image":
            raise RequestError("this detector was trained on images; the service sends it wafer maps")
        if want_heat and len(ds) > limits.max_heatmap_maps:
            raise RequestError(f"too many maps for ?heatmap=1: {len(ds)}, the limit is {limits.max_heatmap_maps} "
                               "(--max-heatmap-maps)", 413)
        out = await asyncio.wrap_future(det_worker.submit(ds))
        wafers = []
        for i, (s, amap) in enumerate(out):
            row = base_row(ds, i, want_maps)
            row["score"] = float(s)
            if threshold is not None:
                row["is_anomalous"] = bool(s >= threshold)
            if want_heat:
                row["heatmap"] = np.round(np.asarray(amap, dtype=np.float64), 6).tolist()
            wafers.append(row)
        return JSONResponse({"model": detector.registry_name, "threshold": threshold, "wafers": wafers})

    @app.get("/health")
    def health():
        """Liveness, the models served, versions, limits and the server's resident memory."""
        import platform

        import torch

        return {"status": "ok", "waferscope_version": __version__, "torch_version": torch.__version__,
                "python_version": platform.python_version(),
                "classifier": {**_model_info(classifier, classifier_source, classifier_run), "classes": classes,
                               "gradcam": has_gradcam},
                "detector": {**_model_info(detector, detector_source, detector_run), "threshold": threshold},
                "limits": limits.as_dict(), "torch_threads": torch.get_num_threads(), "rss_bytes": _rss_bytes()}

    page = resources.files("waferscope.serve").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page)

    return app
