"""The HTTP service: ``create_app(classifier, detector)`` → a FastAPI app.

    POST /v1/classify   maps → class + probabilities per wafer   (?heatmap=1: Grad-CAM, ?maps=1: the grids)
    POST /v1/score      maps → anomaly score (+ is_anomalous)    (?heatmap=1: anomaly map)
    POST /v1/search     maps → the k most similar archive wafers (lot, id, class, distance) per map,
                        from the similarity index the service was started with (?k=10, at most 100)
    POST /v1/lots       a whole file for the page's lot browser; GET /v1/lots/{id}/… pages it (.lotbrowser)
    GET  /health        status, models, versions, limits, queue, resident memory
    GET  /              the browser page (page.html, self-contained)
    GET  /docs          the API reference (docs.html, self-contained: no CDN), from /openapi.json

Maps arrive as JSON (``{"maps": [grid, ...], "ids": [...]}``) or as one uploaded file in any format
:func:`waferscope.data.load` reads, except pickle: unpickling runs code, so an upload is never
unpickled (convert with ``waferscope data import X.pkl --out X.parquet`` and upload the Parquet).

A service a fab can leave running (issue #28): every size is bounded before it is allocated (an
upload's stated maps, sides and dies through :class:`~waferscope.data.limits.LoadLimits`; a JSON
body's dies as it is decoded); everything that could fail later is validated before a request
joins a batch, and a failure inside a batch fails only its own request (:mod:`.batcher`); heavy
parsing and large answers run in worker threads (answers streamed), each request has a time budget,
the model queues are bounded, and large requests take turns with small ones; :class:`Gate` refuses
cross-origin browser uploads and sheds load; :mod:`.server` closes slow and idle connections and
bounds headers; :mod:`.memory` gives freed memory back. Every problem is a 4xx/5xx with
``{"error": "<what is wrong>"}`` and at most one log line. docs/serve.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from waferscope import __version__
from waferscope.data.dataset import WaferDataset, validate_map
from waferscope.data.limits import LoadLimits
from waferscope.errors import WaferscopeError
from waferscope.serve.batcher import MapBatch, QueueFull, ServiceStopped
from waferscope.serve.inference import MAX_K, Inference, RequestError
from waferscope.serve.inference import _within  # noqa: F401  (moved with the deadlines; kept importable from here)
from waferscope.serve.schemas import ClassifyResponse, ErrorResponse, Limits, MapsRequest, ScoreResponse, SearchResponse

log = logging.getLogger("waferscope.serve")
LOT_UPLOAD_PATH = "/v1/lots"  # the lot browser's file upload: its own body limit (Limits.max_file_bytes)
PICKLE_REFUSAL = ("pickle uploads are refused: unpickling runs arbitrary code. Convert the file once with "
                  "`waferscope data import FILE.pkl --out FILE.parquet` and upload the Parquet file")


# ---- the gate: every request passes here first ---------------------------------------------------
class Gate:
    """ASGI middleware in front of everything (raw ASGI: it costs microseconds per request).

    - Browser safety: a POST whose ``Origin`` is another site, or that the browser marks
      ``Sec-Fetch-Site: cross-site``/``same-site``, is refused with 403 before its body is read: a page
      elsewhere cannot make the engineer's browser upload to the service (a no-cors form POST would
      otherwise be processed). API clients (curl, Python) send neither header and pass.
    - Load shedding: more than ``max_inflight`` POSTs at once, or more than ``max_inflight_body_bytes``
      of bodies held, answers 503 + ``Retry-After``.
    - Body size: a body over ``max_body_bytes`` is refused with 413 (Content-Length up front, chunked as
      it arrives); the body is then replayed to the app.
    - Errors: anything that escapes the app is answered 500 ``{"error": ...}`` with one log line,
      never a traceback per request.
    - Fast path: a JSON POST to a path in ``fast`` (the model endpoints) goes straight to its handler
      once its body is read, past FastAPI's exception middleware, router and request handler: for a
      1-map request those layers cost the event loop more than parsing and answering it do.
    """

    def __init__(self, app, limits: Limits, allowed_origins: tuple[str, ...] = (), fast: dict | None = None):
        self.app = app
        self.limits = limits
        self.allowed_origins = {o.rstrip("/").lower() for o in allowed_origins}
        self.fast = fast if fast is not None else {}  # path → async handler(scope, receive, send); filled by create_app
        self.inflight = 0
        self.body_bytes = 0

    async def __call__(self, scope, receive, send):
        """Handle one ASGI call: an HTTP request goes through this layer's checks (see the class docstring) first."""
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            if scope["method"] in ("GET", "HEAD", "OPTIONS"):
                return await self.app(scope, receive, tracked_send)
            return await self._post(scope, receive, tracked_send)
        except Exception as exc:  # noqa: BLE001 — the one place a request's failure stops
            log.error("%s %s failed: %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__,
                      str(exc)[:300])
            if not started:
                await _send_error(send, 500, f"internal error ({type(exc).__name__}); the request was not processed")

    def _foreign_origin(self, headers: dict) -> str | None:
        site = headers.get(b"sec-fetch-site", b"").decode("latin-1").lower()
        origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/").lower()
        if origin and origin != "null" and origin in self.allowed_origins:
            return None
        if site in ("cross-site", "same-site"):
            return f"Sec-Fetch-Site: {site}"
        if origin:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            if origin == "null" or origin.split("://", 1)[-1] != host:
                return f"Origin {origin}"
        return None

    async def _post(self, scope, receive, send):
        limits = self.limits
        headers = dict(scope.get("headers") or [])
        foreign = self._foreign_origin(headers)
        if foreign:
            return await _send_error(send, 403, f"cross-origin request refused ({foreign}): the service only "
                                     "takes uploads from its own page or from non-browser clients")
        max_body = limits.max_body_bytes
        too_big = f"request body too large: the limit is {max_body} bytes (limit max_body_bytes)"
        if scope.get("path") == LOT_UPLOAD_PATH:  # a whole file for the lot browser (serve/lotbrowser.py)
            max_body = limits.max_file_bytes
            too_big = f"file too large: the limit is {max_body} bytes (Limits.max_file_bytes)"
        declared = headers.get(b"content-length")
        size_hint = 0
        if declared is not None:
            try:
                size_hint = int(declared)
            except ValueError:
                return await _send_error(send, 400, "bad Content-Length header", close=True)
            if size_hint > max_body:
                return await _send_error(send, 413, too_big, close=True)
        if self.inflight >= limits.max_inflight or self.body_bytes + size_hint > limits.max_inflight_body_bytes:
            return await _send_error(send, 503, "the service is busy: too many requests in flight; retry shortly",
                                     retry_after=1)
        self.inflight += 1
        held = 0
        try:
            chunks = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                held += len(chunk)
                self.body_bytes += len(chunk)
                if held > max_body:
                    return await _send_error(send, 413, too_big, close=True)
                if self.body_bytes > limits.max_inflight_body_bytes:
                    return await _send_error(send, 503, "the service is busy: too much request data in flight; "
                                             "retry shortly", retry_after=1)
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            del chunks
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            handler = self.fast.get(scope["path"])
            if handler is not None and _is_json(headers):
                return await handler(scope, replay, send)
            return await self.app(scope, replay, send)
        finally:
            self.inflight -= 1
            self.body_bytes -= held


def _is_json(headers: dict) -> bool:
    return headers.get(b"content-type", b"").split(b";")[0].strip().lower() == b"application/json"


async def _send_error(send, status: int, message: str, retry_after: int | None = None, close: bool = False) -> None:
    """``close``: for a body the service will not read (too large, or unframed): closing is cheaper than discarding it.

    Otherwise the connection stays usable and uvicorn discards the unread body, so the client reads
    the answer instead of a reset.
    """
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---- parsing ------------------------------------------------------------------------------------
MAX_ID_CHARS = 256
_LIMIT_WORDS = re.compile(r"\((max_maps|max_side|max_dies|max_decompressed_bytes)\)")


def check_ids(ids: list, n: int, where: str = '"ids"') -> list[str]:
    """Return ids as short, encodable text.

    A lone surrogate such as "\ud800" cannot be written as UTF-8: it would fail later, in the
    answer, for every request of its batch.
    """
    if not isinstance(ids, list) or len(ids) != n:
        raise RequestError(f'{where} must be a list of {n} strings, one per map')
    out = []
    for k, i in enumerate(ids):
        if isinstance(i, bool) or not isinstance(i, (str, int)):
            raise RequestError(f"{where}[{k}] must be a string, got {type(i).__name__}")
        i = str(i)
        if len(i) > MAX_ID_CHARS:
            raise RequestError(f"{where}[{k}] is {len(i)} characters long; the limit is {MAX_ID_CHARS}")
        try:
            i.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(f"{where}[{k}] is not valid Unicode text (it holds a lone surrogate)") from None
        out.append(i)
    return out


PIECES_BYTES = 64 * 1024  # bodies above this are parsed in a worker thread, one map at a time
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_STATES_TO_D = bytes(ord("d") if chr(b) in "012" else b if chr(b) in ",[]" else ord("x") for b in range(256))


@functools.lru_cache(maxsize=512)
def _grid_layout(rows: int, width: int) -> bytes:
    """Return the text of a rows × width grid without its outer brackets, every die state written "d"."""
    return b"],[".join([b",".join([b"d"] * width)] * rows)


def fast_grids(raw: bytes, start: int, max_maps: int) -> tuple[list[np.ndarray], int] | None:
    """Return the ``"maps"`` list at ``raw[start]`` decoded with bytes operations and numpy, and the index after it.

    None when it is anything but a list of grids of die states 0/1/2 (the JSON decoder then takes it, with its error
    messages). Exact: each grid is accepted only if its text (white space removed) is byte for byte that of a grid of
    single digits 0-2. ~5× faster than json + np.asarray, which for small requests cost as much as the model.
    """
    end = raw.find(b"]]]", start)
    if end < 0:
        return None
    end += 3
    compact = raw[start:end].translate(None, b" \t\n\r")
    if not compact.startswith(b"[[["):
        return None
    count = compact.count(b"]],[[") + 1
    if count > max_maps:
        raise RequestError(f"too many maps: {count} in one request, the limit is {max_maps} (limit max_maps); "
                           "split the request", 413)
    grids = []
    for part in compact[3:-3].split(b"]],[["):
        # rows of w dies are "d,d,…,d" (2w - 1 bytes) joined by "],[". With every die state 0/1/2
        # mapped to "d" (and any other byte but ",[]" to "x"), the text must equal that layout byte
        # for byte: two C-speed bytes operations instead of a dozen numpy calls on a small map
        rows = part.count(b"],[") + 1
        row_bytes, rest = divmod(len(part) + 3, rows)
        if rest or row_bytes < 4 or row_bytes % 2:
            return None
        if part.translate(_STATES_TO_D) != _grid_layout(rows, (row_bytes - 2) // 2):
            return None
        digits = part.translate(None, b"[],")
        grids.append((np.frombuffer(digits, np.uint8) - np.uint8(48)).reshape(rows, len(digits) // rows))
    return grids, end


def loads_in_pieces(text: str, max_maps: int, on_grid=None, raw: bytes | None = None) -> Any:
    """Return ``json.loads(text)``, decoding the elements of a top-level ``"maps"`` list one at a time.

    At most ``max_maps + 1`` of them are decoded. One ``json.loads`` of a 32 MB body holds the GIL
    for a second, freezing the event loop even from a worker thread; one grid at a time, other
    threads run between grids. ``on_grid(grid)`` sees each map as it is decoded (and may refuse it:
    a die cap stops the parse at the first map over it, not after the whole body). ``raw``: the
    body's bytes when it is ASCII (string and byte positions then agree): :func:`fast_grids` is
    tried first.
    """
    i = _ws(text, 0)
    if text[i:i + 1] != "{":
        return json.loads(text)  # not an object: json names the problem, the caller refuses it
    doc: dict = {}
    i = _ws(text, i + 1)
    if text[i:i + 1] == "}":
        i += 1
    else:
        while True:
            _expect(text, i, '"')
            key, i = _DECODER.raw_decode(text, i)
            i = _ws(text, i)
            _expect(text, i, ":")
            i = _ws(text, i + 1)
            is_maps = key == "maps" and text[i:i + 1] == "["
            fast = fast_grids(raw, i, max_maps) if raw is not None and is_maps else None
            if fast is not None:
                value, i = fast
                if on_grid is not None:
                    for grid in value:
                        on_grid(grid)
            elif is_maps:
                value, i = _decode_maps(text, i, max_maps, on_grid)
            else:
                value, i = _DECODER.raw_decode(text, i)
            doc[key] = value
            i = _ws(text, i)
            if _expect(text, i, ",}") == "}":
                i += 1
                break
            i = _ws(text, i + 1)
    if _ws(text, i) != len(text):
        raise ValueError(f"extra data at character {i}")
    return doc


def _ws(text: str, i: int) -> int:
    return _WS.match(text, i).end()


def _expect(text: str, i: int, chars: str) -> str:
    if i >= len(text) or text[i] not in chars:
        raise ValueError(f"expected {' or '.join(repr(c) for c in chars)} at character {i}")
    return text[i]


def _decode_maps(text: str, i: int, max_maps: int, on_grid) -> tuple[list, int]:
    """Decode the list of maps starting at ``text[i] == "["`` one element at a time; return it and the end."""
    items: list = []
    i = _ws(text, i + 1)
    if text[i:i + 1] == "]":
        return items, i + 1
    while True:
        item, i = _DECODER.raw_decode(text, i)
        if on_grid is not None:
            on_grid(item)
        items.append(item)
        if len(items) > max_maps:
            raise RequestError(f"too many maps: more than {max_maps} in one request, the limit "
                               f"is {max_maps} (limit max_maps); split the request", 413)
        i = _ws(text, i)
        if _expect(text, i, ",]") == "]":
            return items, i + 1
        i = _ws(text, i + 1)


class DieCap:
    """The dies one request may bring.

    The ``max_dies`` limit, or less when the answer echoes every grid cell (``?maps=1`` /
    ``?heatmap=1``: ``max_echo_dies`` per echoed copy). Counted as maps are decoded.
    """

    def __init__(self, limits: Limits, echo: int = 0):
        self.cap, self.echo_bound = limits.max_dies, False
        if echo and limits.max_echo_dies // echo < self.cap:
            self.cap, self.echo_bound = limits.max_echo_dies // echo, True
        self.limits, self.echo, self.total = limits, echo, 0

    def add(self, n: int) -> None:
        """Count ``n`` more dies; a RequestError once over the cap."""
        self.total += n
        if self.total > self.cap:
            raise self.error()

    def error(self) -> "RequestError":
        """Return the RequestError that names the limit the request went over."""
        if self.echo_bound:
            return RequestError(f"the answer would echo more than {self.limits.max_echo_dies:,} grid cells "
                                "(?maps=1 / ?heatmap=1, limit max_echo_dies); send fewer or smaller maps", 413)
        return RequestError(f"too many dies: more than {self.limits.max_dies:,} in one request (limit max_dies); "
                            "split the request", 413)

    def grid(self, grid) -> None:
        """Count the dies of a grid (an array or nested lists)."""
        if isinstance(grid, np.ndarray):
            self.add(grid.size)
        elif isinstance(grid, list) and grid and isinstance(grid[0], list):
            self.add(len(grid) * len(grid[0]))


def parse_json_maps(body: bytes, limits: Limits, echo: int = 0) -> MapBatch:
    """Return ``{"maps": [...], "ids": [...]}`` → validated maps, or a RequestError naming the problem.

    A large body's maps are decoded one by one (:func:`loads_in_pieces`); ``echo``: copies of each
    grid the answer will hold (bounds the dies, see :class:`DieCap`).
    """
    try:
        doc = loads_in_pieces(body.decode("utf-8"), limits.max_maps, DieCap(limits, echo).grid,
                              body if body.isascii() else None)
    except RecursionError:
        raise RequestError("the body is not valid JSON for this API: nested too deeply "
                           '(expected {"maps": [grid, ...]}, three levels)') from None
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
                           f"(limit max_maps); split the request", 413)
    if isinstance(maps[0], list) and maps[0] and not isinstance(maps[0][0], list):
        raise RequestError('"maps" must be a list of die grids, each a list of rows; to send one map, '
                           'wrap it: {"maps": [grid]}')
    ids = doc.get("ids")
    ids = None if ids is None else check_ids(ids, len(maps))
    cap = DieCap(limits, echo)
    out = []
    for i, grid in enumerate(maps):
        if isinstance(grid, np.ndarray):  # from fast_grids: a 2-D uint8 grid of 0/1/2 already
            _check_side(i, grid.shape, limits)
            cap.add(grid.size)
            out.append(grid)
            continue
        if not isinstance(grid, list) or not grid or not all(isinstance(r, list) for r in grid):
            raise RequestError(f"map {i}: a die grid must be a non-empty list of rows (lists of die states)")
        widths = [len(r) for r in grid]
        if len(set(widths)) > 1:
            j = next(k for k, w in enumerate(widths) if w != widths[0])
            raise RequestError(f"map {i}: ragged rows: row 0 has {widths[0]} dies, row {j} has {widths[j]}; "
                               f"every row of a grid must have the same length")
        _check_side(i, (len(grid), widths[0]), limits)
        cap.add(len(grid) * widths[0])
        try:
            arr = np.asarray(grid)
        except (ValueError, TypeError, OverflowError) as exc:
            raise RequestError(f"map {i}: die values must be numbers 0, 1 or 2 ({exc})") from None
        if arr.ndim != 2:
            raise RequestError(f"map {i}: die values must be numbers 0, 1 or 2, not lists")
        if arr.dtype == object or arr.dtype.kind in "USbV":
            raise RequestError(f"map {i}: die values must be numbers 0 (no die), 1 (pass) or 2 (fail)")
        out.append(validate_map(arr, None, i))  # DataError → 400 with its own message
    ids = ids or [f"map-{i}" for i in range(len(out))]
    return MapBatch(out, ids, [None] * len(out))


def _check_side(i: int, shape: tuple[int, int], limits: Limits) -> None:
    if max(shape) > limits.max_side:
        raise RequestError(f"map {i}: {shape[0]}×{shape[1]} dies is too large: the limit is "
                           f"{limits.max_side} rows or columns (limit max_side)", 413)


def is_pickle(filename: str, head: bytes) -> bool:
    """Suffix .pkl/.pickle, or the PROTO opcode (0x80) every protocol ≥ 2 pickle starts with."""
    return Path(filename).suffix.lower() in (".pkl", ".pickle", ".pck") or head[:1] == b"\x80"


def load_limits(limits: Limits, echo: int = 0) -> LoadLimits:
    """Return the service's request limits as the loaders' LoadLimits.

    Checked from each file's headers before the maps are allocated.
    """
    return LoadLimits(max_maps=limits.max_maps, max_side=limits.max_side, max_dies=DieCap(limits, echo).cap,
                      max_decompressed_bytes=limits.max_decompressed_bytes)


def load_upload(filename: str, data: bytes, limits: Limits, echo: int = 0) -> MapBatch:
    """Write the upload to a private temp file, load it with waferscope.data.load, delete it."""
    dataset, name = load_upload_dataset(filename, data, load_limits(limits, echo))
    ids = check_ids([str(i) for i in dataset.ids], len(dataset), f"{name}: id")
    lots = [None if lot is None else lot.encode("utf-8", "replace").decode("utf-8") for lot in _lots(dataset)]
    return MapBatch(list(dataset.maps), ids, lots)


def load_upload_dataset(filename: str, data: bytes, limits: LoadLimits) -> tuple[WaferDataset, str]:
    """Return (the upload as a WaferDataset, the user's file name).

    Written to a private temp file, loaded with waferscope.data.load within ``limits``,
    deleted; never unpickled.
    """
    from waferscope.data import load
    from waferscope.data.load import sniff_format

    name = os.path.basename(filename or "upload") or "upload"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        name = name.encode("utf-8", "replace").decode("utf-8")
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
            dataset = load(path, limits=limits)
        except WaferscopeError as exc:  # name the user's file, not our temp path
            status = 413 if _LIMIT_WORDS.search(exc.problem) else 400
            raise RequestError(f"{name}: {exc.problem}", status) from None
        except (MemoryError, RecursionError) as exc:
            raise RequestError(f"{name}: cannot be read within the service's limits ({type(exc).__name__})", 413) from None
    if dataset.kind != "wafer":
        raise RequestError(f"{name}: holds {dataset.kind} data; the service takes wafer maps (die states 0/1/2)")
    if len(dataset) == 0:
        raise RequestError(f"{name}: no maps in the file")
    return dataset, name


# ---- the app ------------------------------------------------------------------------------------
async def read_multipart_file(request) -> tuple[str, bytes]:
    """Return the one file of a multipart upload (field ``file``): its name and bytes.

    A malformed upload or a missing file is a :class:`RequestError` (shared by the model routes
    and the lot browser).
    """
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # starlette's MultiPartException and friends: a malformed upload
        raise RequestError(f"cannot read the multipart upload ({getattr(exc, 'message', exc)})") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise RequestError('a multipart upload needs one file in the field "file"')
    data = await upload.read()
    await form.close()
    return upload.filename or "upload", data


_ERROR_STATUS = {RequestError: None, ServiceStopped: 503, QueueFull: 503, WaferscopeError: 400}


def _error_response(exc: Exception) -> JSONResponse:
    """Return the JSON answer to a request that failed with one of the :data:`_ERROR_STATUS` exceptions."""
    if isinstance(exc, RequestError):
        return JSONResponse({"error": exc.message}, status_code=exc.status)
    status = next(code for kind, code in _ERROR_STATUS.items() if isinstance(exc, kind))
    headers = {"Retry-After": "1"} if isinstance(exc, QueueFull) else None
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


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


# ---- answers -------------------------------------------------------------------------------------
SMALL_ANSWER_MAPS = 256  # answers without echoed grids up to this size are built inline (microseconds)


def grid_json(m: np.ndarray) -> bytes:
    """Return a uint8 die grid (0/1/2) as JSON rows, built with numpy (a 512×512 grid in ~1 ms, no Python ints)."""
    h, w = m.shape
    buf = np.empty((h, 2 * w + 2), np.uint8)
    buf[:, 0] = ord("[")
    buf[:, 1:2 * w:2] = m + ord("0")
    buf[:, 2:2 * w - 1:2] = ord(",")
    buf[:, 2 * w] = ord("]")
    buf[:, 2 * w + 1] = ord(",")
    return b"[" + buf.tobytes()[:-1] + b"]"


def float_grid_json(a: np.ndarray, decimals: int) -> bytes:
    """Return a float grid as JSON, one row at a time.

    Each row a short call: the event loop is never held for a whole heat map.
    """
    a = np.round(np.asarray(a, dtype=np.float64), decimals)
    a = np.where(np.isfinite(a), a, 0.0)
    return b"[" + b",".join(json.dumps(row.tolist()).encode() for row in a) + b"]"


# one encoder for every row: json.dumps with any non-default argument builds a new encoder per call
_ROW_JSON = json.JSONEncoder(allow_nan=False).encode


@functools.lru_cache(maxsize=8)
def _head_prefix(head_json: str) -> bytes:  # the same few heads (model, classes) on every answer
    return head_json[:-1].encode() + b', "wafers": ['


def encode_answer(head: dict, rows: list[dict], big: list[list[tuple[str, Any]]] | None, batch_bytes: int = 1 << 18):
    """Return the answer ``{**head, "wafers": [...]}`` as chunks of bytes.

    ``big[i]`` lists the grids of wafer ``i`` to add (name, ``("grid", array)`` or ``("float", array,
    decimals)``). ASCII-only JSON: it can always be written, whatever text a file's ids hold.
    """
    prefix = _head_prefix(json.dumps(head))
    out = [prefix]
    size = len(prefix)
    for i, row in enumerate(rows):
        piece = _ROW_JSON(row).encode()  # NaN is not JSON: an error, not a broken answer
        if big and big[i]:
            extra = []
            for name, spec in big[i]:
                body = grid_json(spec[1]) if spec[0] == "grid" else float_grid_json(spec[1], spec[2])
                extra.append(b', "' + name.encode() + b'": ' + body)
            piece = piece[:-1] + b"".join(extra) + b"}"
        if i:
            piece = b"," + piece
        out.append(piece)
        size += len(piece)
        if size >= batch_bytes:
            yield b"".join(out)
            out, size = [], 0
    out.append(b"]}")
    yield b"".join(out)


def answer(head: dict, rows: list[dict], big, on_done=None) -> Response:
    """Small answers are built at once.

    Large ones (echoed grids, many wafers) stream, each chunk built in a worker thread, so a 500
    MB answer neither blocks the event loop nor sits in memory.
    """
    if not big and len(rows) <= SMALL_ANSWER_MAPS:
        return Response(b"".join(encode_answer(head, rows, None)), media_type="application/json")

    def chunks():
        try:
            yield from encode_answer(head, rows, big)
        finally:
            if on_done is not None:
                on_done()

    return StreamingResponse(chunks(), media_type="application/json")


def create_app(classifier, detector, *, classifier_source: str = "", detector_source: str = "",
               classifier_run=None, detector_run=None, threshold: float | None = None, limits: Limits | None = None,
               threads: int | None = None, max_batch: int | None = None, allowed_origins: tuple[str, ...] = (),
               index=None, index_source: str = "", explainer=None, explainer_source: str = "", open_set=None,
               processes=None, lot_socket: str | None = None):
    """Return a FastAPI app serving ``classifier`` and ``detector``.

    ``classifier`` is a fitted :class:`~waferscope.base.Classifier`, ``detector`` a fitted
    :class:`~waferscope.base.Detector` (``threshold`` its decision threshold, normally
    ``detector.threshold_``, or None). ``*_source`` say where each came from (shown by /health),
    ``*_run`` are their run directories (for the version that trained them). Each model is loaded
    once by the caller and run by one worker thread that batches the queued requests
    (:mod:`.batcher`). ``threads`` sets torch's intra-op threads (default: leave torch's setting).
    ``allowed_origins``: browser origins besides the service's own that may POST (e.g. a proxy's
    public address). ``index``: a loaded :class:`~waferscope.search.WaferIndex` for ``/v1/search``
    (None: that route answers 409), ``index_source`` where it came from. ``explainer``: a network
    whose Grad-CAM draws the ``?heatmap=1`` maps when the label model's own would not (the bundled
    default: its heat is not trained to sit on the pattern, docs/explain.md); it explains the class
    the label model chose, so the heat always answers "where is that class?". ``open_set``: the
    classifier run's open-set model (:func:`waferscope.search.discover.load_open_set`) for
    ``/v1/classify?abstain=1`` (None: that flag answers 409). ``processes``: with several server processes
    (:mod:`.workers`), their :class:`~waferscope.serve.workers.ProcessTable`, so that /health reports the whole
    service's CPU time and memory; ``lot_socket``: the Unix socket of the worker that owns the lot browser,
    where this app forwards every ``/v1/lots`` request (None: it holds the lots itself).
    """
    # everything about the models (workers, limits, deadlines, rows) is in the inference layer; the
    # routes only read requests, parse their query flags and answer
    inference = Inference(classifier, detector, threshold=threshold, limits=limits, threads=threads,
                          max_batch=max_batch, index=index, index_source=index_source, explainer=explainer,
                          open_set=open_set)
    limits = inference.limits

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        inference.close()

    app = FastAPI(title="waferscope", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Wafer-map defect classification and anomaly scoring (docs/serve.md).")
    app.state.limits = limits
    fast: dict = {}  # the model endpoints, called by the Gate directly (filled by _add_model_routes)
    app.add_middleware(Gate, limits=limits, allowed_origins=tuple(allowed_origins), fast=fast)
    if lot_socket is not None:  # added last, so outermost: lot requests stream to their owner past the Gate
        from waferscope.serve.workers import LotForward

        app.add_middleware(LotForward, socket_path=lot_socket, max_file_bytes=limits.max_file_bytes)
    _add_error_handlers(app)
    _add_model_routes(app, inference, fast)

    from waferscope.serve.lotbrowser import add_lot_routes

    add_lot_routes(app, limits, classifier, detector, threshold, inference.clf_worker, inference.det_worker,
                   classify_open=inference.classify_open if open_set is not None else None)
    health_info = {"classifier": {**_model_info(classifier, classifier_source, classifier_run),
                                  "classes": inference.classes, "gradcam": inference.has_gradcam,
                                  "gradcam_from": explainer_source or classifier_source,
                                  # the run's open-set scorer (what ?abstain=1 uses), or null
                                  "open_set": None if open_set is None else {
                                      "threshold": round(open_set.scorer.threshold_, 6),
                                      "parts": list(open_set.scorer.parts)}},
                   "detector": {**_model_info(detector, detector_source, detector_run), "threshold": threshold}}
    _add_info_routes(app, inference, health_info, processes)
    return app


def _add_error_handlers(app) -> None:
    """Answer every known error, FastAPI's validation errors and HTTP errors as one JSON ``{"error": …}``."""
    async def _mapped_error(_request, exc: Exception):
        return _error_response(exc)

    for exc_type in _ERROR_STATUS:
        app.add_exception_handler(exc_type, _mapped_error)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid request')}"}, status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request, exc: StarletteHTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)


def _flag(value: str | None, name: str) -> bool:
    """Read a 0/1 query flag (absent = 0); anything else is a RequestError naming it."""
    if value is None or value in ("0", "false", "no", ""):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise RequestError(f"?{name}= must be 0 or 1, got {value!r}")


def _flags(request: Request) -> tuple[bool, bool]:
    """Return ?heatmap= and ?maps= (most requests have no query string: nothing to parse)."""
    if not request.scope.get("query_string"):
        return False, False
    q = request.query_params
    return _flag(q.get("heatmap"), "heatmap"), _flag(q.get("maps"), "maps")


def _direct(endpoint):
    """Return ``endpoint`` as a raw ASGI handler for the Gate's fast path.

    The same code and answers as through FastAPI (its errors mapped by the same
    :func:`_error_response`).
    """
    async def handler(scope, receive, send):
        try:
            response = await endpoint(Request(scope, receive))
        except tuple(_ERROR_STATUS) as exc:
            response = _error_response(exc)
        await response(scope, receive, send)
    return handler


def _body_doc() -> dict:
    return {"requestBody": {"content": {
        "application/json": {"schema": MapsRequest.model_json_schema()},
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
    }}}


def _query_doc(heat: str) -> dict:
    # the query flags are read from request.query_params by hand and only described here: FastAPI's
    # per-request parameter solving costs as much as the model does for a 1-map request
    return {**_body_doc(), "parameters": [
        {"name": "heatmap", "in": "query", "required": False, "description": heat, "schema": {"type": "string"}},
        {"name": "maps", "in": "query", "required": False, "description": "1: echo each die grid",
         "schema": {"type": "string"}}]}


_DOC_RESPONSES = {400: {"model": ErrorResponse}, 403: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                  415: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}


def _add_model_routes(app, inference: Inference, fast: dict) -> None:
    """Mount /v1/classify, /v1/score and /v1/search; put the first two in ``fast`` for the Gate."""
    limits = inference.limits
    heavy = asyncio.Semaphore(2)  # large bodies parsed / files loaded at once: bounds their transient memory

    async def read_maps(request: Request, echo: int) -> MapBatch:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/json":
            body = await request.body()
            if len(body) <= PIECES_BYTES:  # a few maps: parsing takes less than handing it to a thread
                return parse_json_maps(body, limits, echo)
            async with heavy:
                return await run_in_threadpool(parse_json_maps, body, limits, echo)
        if ctype == "multipart/form-data":
            async with heavy:
                filename, data = await read_multipart_file(request)
                return await run_in_threadpool(load_upload, filename, data, limits, echo)
        raise RequestError(f"unsupported Content-Type {ctype or '(none)'!r}: send application/json "
                           '{"maps": [...]} or multipart/form-data with a "file" field', 415)

    @app.post("/v1/classify", response_model=ClassifyResponse, responses=_DOC_RESPONSES,
              openapi_extra={**_query_doc("1: Grad-CAM per wafer"), "parameters": [
                  *_query_doc("")["parameters"],
                  {"name": "abstain", "in": "query", "required": False, "schema": {"type": "string"},
                   "description": "1: 'unknown' for a wafer of no known class, with its open_set_score (a run "
                   "trained with --open-set)"}]})
    async def classify(request: Request):
        """Class and class probabilities of every map."""
        t0 = time.monotonic()
        want_heat, want_maps = _flags(request)
        want_open = bool(request.scope.get("query_string")) and _flag(request.query_params.get("abstain"), "abstain")
        inference.check_classify(want_heat, want_open)  # before reading the body
        ds = await read_maps(request, int(want_heat) + int(want_maps))
        head, rows, big = await inference.classify(ds, t0, want_heat, want_maps, want_open)
        return answer(head, rows, big, inference.on_big_answer)

    @app.post("/v1/score", response_model=ScoreResponse, responses=_DOC_RESPONSES,
              openapi_extra=_query_doc("1: anomaly map per wafer"))
    async def score(request: Request):
        """Anomaly score of every map (higher = more anomalous) and, with a threshold, is_anomalous."""
        t0 = time.monotonic()
        want_heat, want_maps = _flags(request)
        inference.check_score()
        ds = await read_maps(request, int(want_heat) + int(want_maps))
        head, rows, big = await inference.score(ds, t0, want_heat, want_maps)
        return answer(head, rows, big, inference.on_big_answer)

    max_k = MAX_K

    @app.post("/v1/search", response_model=SearchResponse, responses={**_DOC_RESPONSES, 409: {"model": ErrorResponse}},
              openapi_extra={**_body_doc(), "parameters": [
                  {"name": "k", "in": "query", "required": False, "schema": {"type": "integer"},
                   "description": f"neighbours per map, 1-{max_k} (default 10)"},
                  {"name": "maps", "in": "query", "required": False, "schema": {"type": "string"},
                   "description": "1: each neighbour's stored thumbnail too"}]})
    async def search(request: Request):
        """Return the k archive wafers most like each map: their ids, lots, classes and distances."""
        t0 = time.monotonic()
        inference.check_search()
        raw_k = request.query_params.get("k", "10")
        if not re.fullmatch(r"[0-9]{1,4}", raw_k) or not 1 <= int(raw_k) <= max_k:
            raise RequestError(f"?k= must be an integer from 1 to {max_k}, got {raw_k[:20]!r}")
        k = int(raw_k)
        want_maps = _flag(request.query_params.get("maps"), "maps")  # the neighbours' stored thumbnails
        ds = await read_maps(request, 0)
        head, rows, big = await inference.search(ds, t0, k, want_maps, run_in_threadpool)
        return answer(head, rows, big, inference.on_big_answer)

    fast["/v1/classify"], fast["/v1/score"] = _direct(classify), _direct(score)


def _add_info_routes(app, inference: Inference, models: dict, processes=None) -> None:
    """Mount /health (``models``: what it says about the classifier and detector), the page and /docs.

    ``processes``: the service's :class:`~waferscope.serve.workers.ProcessTable` when it runs several
    processes (their CPU time and memory summed), else None (this process's).
    """
    @app.get("/health")
    def health():
        """Liveness, the models served, versions, limits, queue and the server's resident memory."""
        import platform

        import torch

        if processes is None:
            usage = {"workers": 1, "pid": os.getpid(), "rss_bytes": _rss_bytes(), "cpu_seconds": round(time.process_time(), 3)}
        else:  # every process of the service: RSS summed (shared pages in each), PSS (shared pages split)
            usage = {"workers": processes.workers, "pid": os.getpid(), **processes.memory(),
                     "cpu_seconds": round(processes.cpu_seconds(), 3)}
        return {"status": "ok", "waferscope_version": __version__, "torch_version": torch.__version__,
                "python_version": platform.python_version(), **models,
                "index": inference.index_info(),
                "limits": inference.limits.as_dict(), "torch_threads": torch.get_num_threads(),
                # the server's memory and CPU so far (benchmarks read CPU per wafer from it)
                **usage,
                "queued_dies": {"classifier": inference.clf_worker.queued_dies,
                                "detector": inference.det_worker.queued_dies}}

    page = resources.files("waferscope.serve").joinpath("page.html").read_text(encoding="utf-8")
    docs_page = resources.files("waferscope.serve").joinpath("docs.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index():
        return HTMLResponse(page)

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    def docs():
        """Return the API reference, rendered from /openapi.json by a self-contained page.

        No CDN: it works on an air-gapped network.
        """
        return HTMLResponse(docs_page)
