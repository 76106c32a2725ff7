"""The service's inference layer, without HTTP.

:class:`Inference` holds the served models, their batch workers (:mod:`.batcher`), the limits that
bound an answer, each request's time budget, the choice between plain classification, Grad-CAM heat
maps and open-set abstention, and builds the rows every model route answers with. :mod:`.app` only
reads requests, parses their query flags, calls this and turns its rows into responses: kept apart
so the model side can be read (and changed) without the web framework's types in the way.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace
from typing import Any

import numpy as np

from waferscope.data.dataset import WaferDataset
from waferscope.serve.batcher import Batcher, DeadlineExceeded, MapBatch
from waferscope.serve.schemas import Limits

MAX_K = 100  # /v1/search neighbours per map at most


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


async def _within(fut, seconds: float):
    """``await fut`` with a time limit (TimeoutError). asyncio.timeout (3.11+) costs one timer handle.

    wait_for adds a future and callbacks per request.
    """
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await fut
    return await asyncio.wait_for(fut, seconds)


class Inference:
    """The models behind the service and what each model route computes.

    Arguments as :func:`waferscope.serve.app.create_app`'s. Each model is run by one worker thread
    that batches the queued requests; :meth:`close` stops them. Each
    ``classify``/``score``/``search`` returns ``(head, rows, big)`` for
    :func:`waferscope.serve.app.answer`, and every refusal is a :class:`RequestError`.
    """

    def __init__(self, classifier, detector, *, threshold: float | None = None, limits: Limits | None = None,
                 threads: int | None = None, max_batch: int | None = None, index=None, index_source: str = "",
                 explainer=None, open_set=None):
        from waferscope.serve.memory import Trimmer

        self.limits = limits = limits or Limits()
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        self.classifier, self.detector, self.threshold = classifier, detector, threshold
        self.explainer, self.open_set = explainer, open_set
        self.classes = [str(c) for c in classifier.classes_]
        heat_model = explainer if explainer is not None else classifier
        self.has_gradcam = heat_model.get_tags().gradcam
        batch = max_batch or limits.max_batch
        self.trimmer = Trimmer()
        self.big_dies = 1 << 20  # after a request this large, give freed memory back once things are quiet
        common = dict(chunk_maps=limits.chunk_maps, max_queued_dies=limits.max_queued_dies, after_job=self.after_job)
        self.clf_worker = Batcher(self.classify_batch, batch, "classifier", **common)
        self.det_worker = Batcher(self.score_batch, batch, "detector", **common)
        self.search_index, self.index_source = index, index_source
        # similar-wafer search: the worker embeds (the costly part, batched like the models); the graph
        # lookup runs under a lock because faiss's search parameters live on the shared index object
        self.search_worker = (Batcher(lambda ds: list(index.embed(ds)), batch, "search", **common)
                              if index is not None else None)
        self.search_lock = threading.Lock()
        self.mode = detector.trained_input_kind()

    def close(self) -> None:
        """Stop the worker threads after the batches in flight."""
        self.clf_worker.close()  # finish the batch in flight, then stop the threads
        self.det_worker.close()
        if self.search_worker is not None:
            self.search_worker.close()

    def after_job(self, dies: int) -> None:
        """Request a memory trim after a large job."""
        if dies >= self.big_dies:
            self.trimmer.request()

    def on_big_answer(self) -> None:
        """Request a memory trim after a large answer."""
        self.trimmer.request()

    # ---- what the workers run, one batch at a time ------------------------------------------------
    def classify_batch(self, ds: WaferDataset) -> list:
        """Return the class probabilities of every map."""
        return list(np.asarray(self.classifier.predict_proba(ds), dtype=np.float64))

    def classify_with_heat(self, ds: WaferDataset) -> list:
        """Return the class probabilities and Grad-CAM heat of every map."""
        from waferscope.explain import explain

        proba = self.classify_batch(ds)  # the same probabilities as without ?heatmap (and as the CLI)
        if self.explainer is None:
            heat = explain(self.classifier, ds, progress=False).heat
        else:  # the explainer's Grad-CAM of the class the label model chose
            chosen = np.asarray(self.classes, dtype=object)[np.asarray(proba).argmax(1)]
            heat = explain(self.explainer, replace(ds, labels=chosen.astype(str)), progress=False,
                           target="label").heat
        return list(zip(proba, heat))

    def classify_open(self, ds: WaferDataset) -> list:
        """Return the class probabilities, open-set score and class (or ``unknown``) of every map."""
        # the scorer reads the model's own probabilities (what it was calibrated on) and the maps; the
        # wafer features are computed once when the classifier reads the scorer's (the bundled gbm)
        proba, score, names = self.open_set.classify(self.classifier, ds)
        return list(zip(proba, score, names))

    def score_batch(self, ds: WaferDataset) -> list:
        """Return the anomaly score and map of every map."""
        res = self.detector.score(ds)
        return list(zip(np.asarray(res.scores, dtype=np.float64), res.maps))

    # ---- checks, before and after the body is read ------------------------------------------------
    def check_classify(self, want_heat: bool, want_open: bool) -> None:
        """Refuse what this classifier cannot do (called before reading the body)."""
        if want_open and self.open_set is None:
            raise RequestError("this classifier has no open-set scorer, so it cannot abstain: serve a run trained "
                               "with `waferscope classify train --open-set`", 409)
        if want_open and want_heat:
            raise RequestError("?abstain=1 and ?heatmap=1 cannot be combined; ask for one of them")
        if want_heat and not self.has_gradcam:
            raise RequestError(f"this classifier ({self.classifier.registry_name}) is not a neural network, so it "
                               "has no Grad-CAM heat map; serve a cnn classifier for ?heatmap=1")

    def check_score(self) -> None:
        """Raise a RequestError when the detector cannot score wafer maps."""
        if self.mode == "image":
            raise RequestError("this detector was trained on images; the service sends it wafer maps")

    def check_search(self) -> None:
        """Raise a RequestError when the service has no similar-wafer index."""
        if self.search_index is None:  # before reading the body: no point receiving maps nobody can look up
            raise RequestError("this service has no similarity index: start it with `waferscope serve --index DIR` "
                               "(an index from `waferscope index build`)", 409)

    def check_echo(self, ds: MapBatch, want_heat: bool, want_maps: bool) -> None:
        """Raise a RequestError when echoing the maps or heat maps would go over the limits."""
        limits = self.limits
        if want_heat and len(ds) > limits.max_heatmap_maps:
            raise RequestError(f"too many maps for ?heatmap=1: {len(ds)}, the limit is {limits.max_heatmap_maps} "
                               "(limit max_heatmap_maps)", 413)
        echoed = sum(m.size for m in ds.maps) * (int(want_heat) + int(want_maps))
        if echoed > limits.max_echo_dies:
            raise RequestError(f"the answer would echo {echoed:,} grid cells (?maps=1 / ?heatmap=1), more than "
                               f"{limits.max_echo_dies:,} (limit max_echo_dies); send fewer or smaller maps", 413)

    async def run(self, worker: Batcher, ds: MapBatch, fn, t0: float):
        """``ds`` through ``worker`` (``fn`` instead of its default).

        Within the request's time budget counted from ``t0``.
        """
        deadline = t0 + self.limits.request_timeout
        fut = worker.submit(ds, fn, deadline)
        try:
            return await _within(asyncio.wrap_future(fut), max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, DeadlineExceeded):
            fut.cancel()  # the worker drops the rest of it at the next chunk
            raise RequestError(f"the request took longer than its time budget of {self.limits.request_timeout:g} s "
                               "(limit request_timeout); retry later or send fewer maps", 503) from None

    # ---- the answers' rows ------------------------------------------------------------------------
    @staticmethod
    def base_row(ds: MapBatch, i: int) -> dict:
        """Return the start of an answer row: the map's id and lot."""
        row: dict[str, Any] = {"id": ds.ids[i]}
        if ds.lots[i] is not None:
            row["lot"] = ds.lots[i]
        return row

    def index_info(self) -> dict | None:
        """Return what /health says about the index (None without one)."""
        if self.search_index is None:
            return None
        return {"embedding": self.search_index.embedding_.name, "wafers": len(self.search_index),
                "source": self.index_source}

    async def classify(self, ds: MapBatch, t0: float, want_heat: bool, want_maps: bool, want_open: bool):
        """Return the class and probabilities of every map.

        ``want_heat``: Grad-CAM; ``want_open``: 'unknown' for a wafer of no known class.
        """
        classes = self.classes
        self.check_echo(ds, want_heat, want_maps)
        fn = self.classify_with_heat if want_heat else self.classify_open if want_open else None
        out = await self.run(self.clf_worker, ds, fn, t0)
        rows, big = [], ([] if (want_heat or want_maps) else None)
        for i, item in enumerate(out):
            proba, heat = item if want_heat else (item, None)
            open_score = None
            if want_open:
                proba, open_score, name = item
            row = self.base_row(ds, i)
            row["class"] = classes[int(np.argmax(proba))] if open_score is None else str(name)
            row["probabilities"] = {c: float(p) for c, p in zip(classes, proba)}
            if open_score is not None:
                row["open_set_score"] = round(float(open_score), 6)
            rows.append(row)
            if big is not None:
                big.append(([("map", ("grid", ds.maps[i]))] if want_maps else [])
                           + ([("heatmap", ("float", heat, 4))] if want_heat else []))
        head = {"model": self.classifier.registry_name, "classes": classes}
        if want_open:
            scorer = self.open_set.scorer
            head["open_set"] = {"threshold": round(scorer.threshold_, 6), "parts": list(scorer.parts)}
        return head, rows, big

    async def score(self, ds: MapBatch, t0: float, want_heat: bool, want_maps: bool):
        """Anomaly score of every map and, with a threshold, is_anomalous (``want_heat``: anomaly map)."""
        threshold = self.threshold
        self.check_echo(ds, want_heat, want_maps)
        out = await self.run(self.det_worker, ds, None, t0)
        rows, big = [], ([] if (want_heat or want_maps) else None)
        for i, (s, amap) in enumerate(out):
            row = self.base_row(ds, i)
            row["score"] = float(s) if np.isfinite(s) else None
            if threshold is not None:
                row["is_anomalous"] = bool(s >= threshold)
            rows.append(row)
            if big is not None:
                big.append(([("map", ("grid", ds.maps[i]))] if want_maps else [])
                           + ([("heatmap", ("float", amap, 6))] if want_heat else []))
        return {"model": self.detector.registry_name, "threshold": threshold}, rows, big

    async def search(self, ds: MapBatch, t0: float, k: int, want_maps: bool, to_thread):
        """Return the ``k`` archive wafers most like each map (``want_maps``: their stored thumbnails).

        ``to_thread`` runs the graph lookup off the event loop (the web framework's thread pool).
        """
        search_index = self.search_index
        vectors = np.asarray(await self.run(self.search_worker, ds, None, t0), dtype=np.float32)

        def lookup():
            with self.search_lock:
                return search_index.query_vectors(vectors, k)

        pos, dist = await to_thread(lookup)
        rows = []
        for i in range(len(ds)):
            row = self.base_row(ds, i)
            row["neighbours"] = [{"id": str(search_index.ids_[p]), "lot": str(search_index.lots_[p]),
                                  "class": str(search_index.labels_[p]), "distance": round(float(d), 6)}
                                 for p, d in zip(pos[i], dist[i]) if p >= 0]
            if want_maps:  # small fixed-size thumbnails (the index's thumb_size², e.g. 32 × 32 die states)
                for n, p in zip(row["neighbours"], [p for p in pos[i] if p >= 0]):
                    thumb = search_index.thumbnail(int(p))
                    n["map"] = None if thumb is None else thumb.tolist()
            rows.append(row)
        return {"index": self.index_info(), "k": k}, rows, None
