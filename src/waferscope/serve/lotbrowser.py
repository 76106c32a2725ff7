"""The page's lot browser: one uploaded file held server-side and served in pages.

So that a file of any size (a day's production, 100,000 wafers) opens at once and pages smoothly.

    POST /v1/lots                       multipart ``file`` → a session: id, lot summary, progress
    GET  /v1/lots/{id}                  lot summary (waferscope.lots.lot_summary) + progress
    GET  /v1/lots/{id}/wafers           one page of wafers (maps included): ?lot=&class=&anomalous=
                                        &min_score=&max_score=&min_yield=&max_yield=&q=&sort=&desc=
                                        &offset=&limit=&abstain=  (limit ≤ Limits.max_page_maps, echoed
                                        dies ≤ Limits.max_echo_dies); ``counts`` describe the whole filter
    GET  /v1/lots/{id}/lot?lot=NAME     that lot's stacked map, bin Pareto and zone yield
    GET  /v1/lots/{id}/lots.csv         the lot table as CSV
    GET  /v1/lots/{id}/wafers.csv       the filtered wafer table as CSV (same filters as /wafers)

Every number is :mod:`waferscope.lots`' (wafer_table, lot_summary, lot_stacks, bin_pareto,
zone_yield); the page only draws and sorts them. The file is loaded within the file limits of
:class:`~waferscope.serve.schemas.Limits` (``max_file_*``: checked from the file's headers before
the maps are allocated), at most ``max_lot_sessions`` files are held (the oldest is dropped), and
classes and anomaly scores are filled in the background through the service's own model workers
(so page requests and other clients take turns with them), a chunk at a time: the lot table shows
how far they are.

When the served classifier has an open-set scorer (a run trained with ``--open-set``), the background
classification also scores every wafer with it (``open_set_score``, ``unknown``: 1.0 when the scorer
abstains); ``?abstain=1`` on the wafer routes reads ``class`` as ``unknown`` for those wafers (so the
class filter, the sort and the CSV see it), without it the closed-set class stays.
"""

from __future__ import annotations

import io
import logging
import secrets
import threading
import time
from collections import OrderedDict

import numpy as np
import pandas as pd
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from waferscope.data.classes import UNLABELLED
from waferscope.data.limits import LoadLimits

log = logging.getLogger("waferscope.serve")
CHUNK = 512  # wafers per background model call: small enough that other requests get turns
SORT_KEYS = ("order", "id", "lot", "yield", "fail_dies", "score", "class", "confidence", "open_set_score")


class Session:
    """One uploaded file: the data set, lots' wafer table and the predictions filled in so far."""

    def __init__(self, name: str, dataset, classes: list[str], has_open_set: bool = False):
        from waferscope import lots

        self.id = secrets.token_urlsafe(12)
        self.name, self.dataset = name, dataset
        n = len(dataset)
        self.table = lots.wafer_table(dataset)  # id, lot, wafer_index, rows, cols, dies, pass/fail, yield
        self.table["order"] = np.arange(n)
        self.label = dataset.labels.astype(str) if dataset.is_labelled.any() else None
        self.predicted = np.full(n, UNLABELLED, dtype=object)
        self.confidence = np.full(n, np.nan)
        self.score = np.full(n, np.nan)
        self.anomalous = np.full(n, np.nan)  # 1.0 / 0.0 once scored (NaN: not yet; lot means skip it)
        self.open_score = np.full(n, np.nan)  # with an open-set scorer: its score, and 1.0 where it abstains
        self.unknown = np.full(n, np.nan)
        self.classified = self.scored = 0
        self.error: str | None = None
        self.stopped = False
        self.classes = classes
        self.has_open_set = has_open_set
        self.lock = threading.Lock()
        self._summary_key, self._summary, self._next_summary = None, None, 0.0
        self._lot_cache: dict = {}
        self.opened = time.monotonic()

    def frame(self, abstain: bool = False) -> pd.DataFrame:
        """Return the wafer table with the predictions so far (``class`` "" and score NaN until then).

        ``abstain``: ``class`` is ``unknown`` where the open-set scorer abstained.
        """
        from waferscope.search.open_set import UNKNOWN

        t = self.table.copy()
        t["class"] = np.where(self.unknown == 1.0, UNKNOWN, self.predicted) if abstain else self.predicted
        t["confidence"] = self.confidence
        t["score"] = self.score
        t["anomalous"] = self.anomalous
        if self.has_open_set:
            t["open_set_score"] = self.open_score
            t["unknown"] = self.unknown
        if self.label is not None:
            t["label"] = self.label
        return t

    def summary(self) -> pd.DataFrame:
        """Return the lot summary of the predictions so far (recomputed at most every 5× its own cost)."""
        from waferscope import lots

        key = (self.classified, self.scored)
        # recomputed as predictions arrive, but at most every 5× its own cost (a 100,000-wafer lot
        # summary takes ~1 s: it must not eat the core the background predictions and pages need)
        stale = key != self._summary_key and (self._summary is None or key[0] >= len(self.dataset) and
                                              key[1] >= len(self.dataset) or time.monotonic() >= self._next_summary)
        if stale:
            t0 = time.monotonic()
            frame = self.frame()
            # decided on the frame itself, not on self.classified: the background predictions may
            # have moved on between the two reads (a frame with no class yet and a count above 0)
            if not (frame["class"] != UNLABELLED).any():  # no class yet: lot_summary's class mix needs at least one
                frame = frame.drop(columns=["class"])
            out = lots.lot_summary(self.dataset, wafers=frame)
            self._summary_key, self._summary = key, out
            self._next_summary = time.monotonic() + 5 * (time.monotonic() - t0)
        return self._summary

    def progress(self) -> dict:
        """Return how far the predictions are."""
        n = len(self.dataset)
        return {"wafers": n, "classified": int(self.classified), "scored": int(self.scored),
                "done": self.classified >= n and self.scored >= n, "error": self.error}


class Store:
    """At most ``size`` sessions; adding one drops (and stops) the oldest."""

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()

    def add(self, session: Session) -> None:
        """Add a session, dropping (and stopping) the oldest over ``size``."""
        with self.lock:
            self.sessions[session.id] = session
            while len(self.sessions) > self.size:
                _, old = self.sessions.popitem(last=False)
                old.stopped = True

    def get(self, sid: str) -> Session:
        """Return session ``sid``; a RequestError when there is none (unknown, or dropped as the oldest)."""
        from waferscope.serve.app import RequestError

        with self.lock:
            s = self.sessions.get(sid)
        if s is None:
            raise RequestError(f"no loaded file {sid!r} (files are held {self.size} at a time: it was "
                               "replaced by a newer upload, or the service restarted); upload it again", 404)
        return s


def predict_in_background(session: Session, clf_worker, det_worker, threshold: float | None, classes,
                          classify_open=None) -> None:
    """Classes then anomaly scores of every wafer, ``CHUNK`` at a time.

    Through the service's model workers (the same models and batching as /v1/classify and
    /v1/score). ``classify_open``: the classifier worker's open-set function (as
    /v1/classify?abstain=1), also giving each wafer's open-set score and whether it abstains.
    """
    from waferscope.serve.batcher import MapBatch

    ds = session.dataset
    n = len(ds)
    ids = [str(i) for i in ds.ids]
    names = np.asarray(classes, dtype=object)
    try:
        for kind, worker in (("classify", clf_worker), ("score", det_worker)):
            for s in range(0, n, CHUNK):
                if session.stopped:
                    return
                e = min(n, s + CHUNK)
                batch = MapBatch(ds.maps[s:e], ids[s:e], [None] * (e - s))
                fn = classify_open if kind == "classify" else None
                while True:
                    try:
                        out = worker.submit(batch, fn).result()
                        break
                    except Exception as exc:  # a full queue: other clients first, then retry
                        if type(exc).__name__ != "QueueFull":
                            raise
                        time.sleep(0.5)
                if kind == "classify":
                    if classify_open is not None:  # (proba, open-set score, class or 'unknown') per wafer
                        from waferscope.search.open_set import UNKNOWN

                        session.open_score[s:e] = [float(x[1]) for x in out]
                        session.unknown[s:e] = [float(x[2] == UNKNOWN) for x in out]
                        out = [x[0] for x in out]
                    proba = np.asarray(out, dtype=np.float64)
                    session.predicted[s:e] = names[proba.argmax(1)]
                    session.confidence[s:e] = proba.max(1)
                    session.classified = e
                else:
                    scores = np.asarray([float(x[0]) for x in out])
                    session.score[s:e] = scores
                    if threshold is not None:
                        session.anomalous[s:e] = (scores >= threshold).astype(np.float64)
                    session.scored = e
    except Exception as exc:  # noqa: BLE001 — reported on the page, one log line
        if type(exc).__name__ == "ServiceStopped" or session.stopped:
            return  # the service is shutting down, or a newer file replaced this one
        session.error = f"{type(exc).__name__}: {exc}"[:300]
        log.error("lot browser %s: predictions stopped: %s", session.name, session.error)


def _json_safe(frame: pd.DataFrame) -> list[dict]:
    """Convert records for JSON: NaN → null and numpy scalars → Python."""
    return [{k: (None if isinstance(v, float) and not np.isfinite(v) else
                 v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in frame.to_dict(orient="records")]


def _number(q, name: str):
    from waferscope.serve.app import RequestError

    value = q.get(name)
    if value is None or value == "":
        return None
    try:
        out = float(value)
    except ValueError:
        raise RequestError(f"?{name}= must be a number, got {value!r}") from None
    if not np.isfinite(out):
        raise RequestError(f"?{name}= must be a finite number, got {value!r}")
    return out


def filtered(session: Session, q) -> pd.DataFrame:
    """Return the wafer table filtered and sorted by the query (see the module docstring)."""
    from waferscope.serve.app import RequestError, _flag

    abstain = _flag(q.get("abstain"), "abstain")  # the JSON API's flag reader: 0/1, false/true, no/yes
    if abstain and not session.has_open_set:
        raise RequestError("this classifier has no open-set scorer, so it cannot abstain: serve a run trained "
                           "with `waferscope classify train --open-set`", 409)
    t = session.frame(abstain=abstain)
    lot = q.get("lot")
    if lot:
        t = t[t["lot"] == lot]
    cls = q.get("class")
    if cls:
        t = t[t["class"] == cls]
    anomalous = q.get("anomalous")
    if anomalous in ("1", "0"):
        t = t[t["anomalous"] == float(anomalous)]
    elif anomalous:
        raise RequestError(f"?anomalous= must be 0 or 1, got {anomalous!r}")
    for name, col, op in (("min_score", "score", "ge"), ("max_score", "score", "le"),
                          ("min_yield", "yield", "ge"), ("max_yield", "yield", "le")):
        v = _number(q, name)
        if v is not None:
            t = t[getattr(t[col], op)(v)]
    text = (q.get("q") or "").strip()
    if text:
        t = t[t["id"].str.contains(text, case=False, regex=False)]
    key = q.get("sort") or "order"
    if key not in SORT_KEYS:
        raise RequestError(f"?sort= must be one of {', '.join(SORT_KEYS)}, got {key!r}")
    if key not in t:  # open_set_score without a scorer
        raise RequestError(f"?sort={key}: this classifier has no open-set scorer", 409)
    desc = q.get("desc") in ("1", "true")
    # NaN (not yet scored / no dies) last either way; ties in file order
    return t.sort_values([key, "order"], ascending=[not desc, True], na_position="last", kind="stable")


def _counts(t: pd.DataFrame) -> dict:
    """Return what the status line says about the wafers a filter selects."""
    dies, passes = int(t["dies"].sum()), int(t["pass_dies"].sum())
    out = {"wafers": int(len(t)), "lots": int(t["lot"].nunique()), "classified": int((t["class"] != "").sum()),
           "scored": int(t["score"].notna().sum()), "anomalous": int((t["anomalous"] == 1).sum()),
           "yield": passes / dies if dies else None}
    if "unknown" in t:
        out["unknown"] = int((t["unknown"] == 1).sum())
    return out


def lot_views(session: Session, lot: str) -> dict:
    """Stacked map, bin Pareto and zone yield of one lot (waferscope.lots), cached per lot."""
    from waferscope import lots
    from waferscope.serve.app import RequestError

    if lot in session._lot_cache:
        return session._lot_cache[lot]
    idx = np.flatnonzero(session.table["lot"].to_numpy() == lot)
    if idx.size == 0:
        raise RequestError(f"no lot {lot!r} in {session.name}", 404)
    sub = session.dataset.subset(idx)
    stack = lots.lot_stacks(sub, [lot])[lot]
    freq = stack.frequency
    pareto = lots.bin_pareto(sub)
    zones = lots.zone_yield(sub, rings=3, edge_width=2)
    out = {"lot": lot, "wafers": int(idx.size),
           "stack": {"rule": stack.rule, "max_frequency": stack.max_frequency,
                     "frequency": [[None if not np.isfinite(v) else round(float(v), 4) for v in row] for row in freq],
                     "tested": stack.tested.tolist()},
           "pareto": _json_safe(pareto.head(15)), "pareto_total": int(pareto["dies"].sum()) if len(pareto) else 0,
           "has_bins": bool(lots.analysis.wafer_bins(sub) is not None),
           "zones": _json_safe(zones.drop(columns=["lot"]))}
    if len(session._lot_cache) > 64:  # bounded: one entry per lot the user opened
        session._lot_cache.clear()
    session._lot_cache[lot] = out
    return out


def add_lot_routes(app, limits, classifier, detector, threshold, clf_worker, det_worker, classify_open=None) -> None:
    """Mount the lot browser's routes on ``app`` (create_app calls this once).

    ``classify_open``: the classifier worker's open-set function when the classifier has a scorer
    (None: no abstention).
    """
    from waferscope.serve.app import LOT_UPLOAD_PATH, RequestError, load_upload_dataset, read_multipart_file

    store = Store(limits.max_lot_sessions)
    classes = [str(c) for c in classifier.classes_]
    loading = threading.Semaphore(1)  # one whole file parsed at a time: bounds the transient memory
    file_limits = LoadLimits(max_maps=limits.max_file_maps, max_side=limits.max_side, max_dies=limits.max_file_dies,
                             max_decompressed_bytes=limits.max_file_decompressed_bytes)

    def open_file(filename: str, data: bytes) -> Session:
        with loading:
            dataset, name = load_upload_dataset(filename, data, file_limits)
        session = Session(name, dataset, classes, has_open_set=classify_open is not None)
        store.add(session)
        threading.Thread(target=predict_in_background, name=f"lots-{session.id[:6]}", daemon=True,
                         args=(session, clf_worker, det_worker, threshold, classes, classify_open)).start()
        return session

    def head(session: Session) -> dict:
        summary = session.summary()
        return {"id": session.id, "name": session.name, "classes": classes, "threshold": threshold,
                "progress": session.progress(), "has_bins": bool(session.dataset.attrs.get("bins")),
                "open_set": session.has_open_set,
                "labelled": session.label is not None, "counts": _counts(session.frame()),
                "lots": _json_safe(summary)}

    @app.post(LOT_UPLOAD_PATH, include_in_schema=True, summary="Open a whole file in the lot browser")
    async def lots_open(request: Request):
        """Upload one file (multipart ``file``, any format the service reads, not pickle).

        It is held server-side and paged by the GET routes below. Limits: ``max_file_*``.
        """
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            raise RequestError('POST /v1/lots takes multipart/form-data with one file in the field "file"', 415)
        filename, data = await read_multipart_file(request)
        session = await run_in_threadpool(open_file, filename, data)
        del data
        return JSONResponse(await run_in_threadpool(head, session))

    @app.get("/v1/lots/{sid}", summary="Lot summary and progress of an opened file")
    async def lots_head(sid: str):
        return JSONResponse(await run_in_threadpool(head, store.get(sid)))

    @app.get("/v1/lots/{sid}/wafers", summary="One page of an opened file's wafers (filtered, sorted)")
    async def lots_wafers(sid: str, request: Request):
        session = store.get(sid)
        body = await run_in_threadpool(_wafer_page, session, request.query_params, limits)
        return Response(body, media_type="application/json")

    @app.get("/v1/lots/{sid}/lot", summary="Stacked map, bin Pareto and zone yield of one lot")
    async def lots_lot(sid: str, lot: str):
        session = store.get(sid)
        return JSONResponse(await run_in_threadpool(lot_views, session, lot))

    @app.get("/v1/lots/{sid}/lots.csv", summary="The lot table as CSV")
    async def lots_csv(sid: str):
        session = store.get(sid)
        frame = await run_in_threadpool(session.summary)
        return _csv_response(frame, f"{session.name}_lots")

    @app.get("/v1/lots/{sid}/wafers.csv", summary="The filtered wafer table as CSV")
    async def wafers_csv(sid: str, request: Request):
        session = store.get(sid)
        frame = await run_in_threadpool(filtered, session, request.query_params)
        frame = frame.drop(columns=["order"]).assign(anomalous=lambda f: f["anomalous"].map({1.0: True, 0.0: False}))
        if "unknown" in frame:
            frame["unknown"] = frame["unknown"].map({1.0: True, 0.0: False})
        return _csv_response(frame, f"{session.name}_wafers")


def _wafer_page(session: Session, q, limits) -> bytes:
    """Return one page of the session's filtered, sorted wafers as JSON bytes, each with its grid."""
    import json

    from waferscope.serve.app import RequestError, grid_json

    t = filtered(session, q)
    offset = int(_number(q, "offset") or 0)
    limit = int(_number(q, "limit") or min(100, limits.max_page_maps))
    if offset < 0 or limit < 1:
        raise RequestError("?offset= must be ≥ 0 and ?limit= ≥ 1")
    if limit > limits.max_page_maps:
        raise RequestError(f"?limit={limit}: at most {limits.max_page_maps} wafers per page (max_page_maps)", 413)
    part = t.iloc[offset:offset + limit]
    maps = [session.dataset.maps[i] for i in part["order"]]
    if sum(m.size for m in maps) > limits.max_echo_dies:
        raise RequestError(f"this page would echo more than {limits.max_echo_dies:,} grid cells "
                           "(limit max_echo_dies); ask for a smaller ?limit=", 413)
    cols = ["id", "lot", "wafer_index", "dies", "fail_dies", "yield", "class", "confidence", "score", "anomalous"]
    cols += ["open_set_score", "unknown"] if "unknown" in part else []
    cols += ["label"] if "label" in part else []
    rows = _json_safe(part[cols])
    # the maps as compact JSON grids, spliced in (json.dumps of nested lists is the slow part)
    out = [b'{"total":', str(len(t)).encode(), b',"offset":', str(offset).encode(), b',"limit":',
           str(limit).encode(), b',"counts":', json.dumps(_counts(t)).encode(), b',"progress":',
           json.dumps(session.progress()).encode(), b',"wafers":[']
    for k, (row, m) in enumerate(zip(rows, maps)):
        row["anomalous"] = None if row["anomalous"] is None else bool(row["anomalous"])
        if "unknown" in row:
            row["unknown"] = None if row["unknown"] is None else bool(row["unknown"])
        text = json.dumps(row, ensure_ascii=False).encode()
        out += [b"," if k else b"", text[:-1], b',"map":', grid_json(m), b"}"]
    out.append(b"]}")
    return b"".join(out)


def _csv_response(frame: pd.DataFrame, name: str) -> Response:
    """Return ``frame`` as a CSV download named after ``name`` (made safe for a file name)."""
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.6g")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)[:80] or "table"
    return Response(buf.getvalue(), media_type="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{safe}.csv"'})
