"""One worker thread per model: it owns the model, so no two requests run it at once, and it
coalesces the requests queued behind it into one inference batch.

Why a thread and not a lock: the networks are not safe to run from two threads at once (Grad-CAM
registers hooks on the module; torch's intra-op pool is already using the cores), so requests must
be serialised anyway, and while one batch runs the next requests queue up. Running them together
is then free throughput: 32 clients sending one map each become batches of ~32 maps, which is where
the bundled models reach thousands of wafers/s instead of hundreds.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from waferscope.data.dataset import WaferDataset

_STOP = object()


class ServiceStopped(RuntimeError):
    """A request reached a worker that has been closed (the app is shutting down)."""


@dataclass
class MapBatch:
    """The maps of one request, validated. Plain lists, not a WaferDataset: building a data set
    (a pandas frame) costs ~1 ms, more than the model spends on one map, so the worker builds one
    per inference batch instead of one per request."""

    maps: list  # uint8 die grids
    ids: list[str]
    lots: list  # str or None per map

    def __len__(self) -> int:
        return len(self.maps)


@dataclass
class _Job:
    dataset: MapBatch
    fn: Callable[[WaferDataset], list]
    batchable: bool
    future: Future = field(default_factory=Future)


class Batcher:
    """``submit(maps, fn)`` → a Future of ``fn(WaferDataset of maps)`` (a list, one item per map).

    Jobs whose ``fn`` is the batch function (``batch_fn``) are concatenated with the jobs queued
    behind them, up to ``max_maps`` maps; any other job (e.g. a Grad-CAM request) runs alone, in
    arrival order. Results are per map and independent of the batch they ran in: every model
    resizes each map on its own, so a map's output does not depend on its neighbours.
    """

    def __init__(self, batch_fn: Callable[[WaferDataset], list], max_maps: int, name: str):
        self.batch_fn = batch_fn
        self.max_maps = max_maps
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"waferscope-{name}", daemon=True)
        self._thread.start()

    def submit(self, dataset: MapBatch, fn: Callable[[WaferDataset], list] | None = None) -> Future:
        # After close() no thread reads the queue: a job put there would wait forever, so refuse it.
        if self._closed:
            raise ServiceStopped("the service is shutting down")
        fn = fn or self.batch_fn
        job = _Job(dataset, fn, batchable=fn is self.batch_fn)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        held: deque = deque()  # a job taken off the queue that could not join the last batch
        while True:
            job = held.popleft() if held else self._queue.get()
            if job is _STOP:
                return
            batch = [job]
            if job.batchable:
                n = len(job.dataset)
                while n < self.max_maps:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP or not nxt.batchable or n + len(nxt.dataset) > self.max_maps:
                        held.append(nxt)
                        break
                    batch.append(nxt)
                    n += len(nxt.dataset)
            self._run(batch)

    @staticmethod
    def _run(batch: list[_Job]) -> None:
        live = [j for j in batch if j.future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            ds = WaferDataset.from_maps([m for j in live for m in j.dataset.maps],
                                        meta={"id": [i for j in live for i in j.dataset.ids]},
                                        source="request", validate=False)  # validated when parsed
            out = live[0].fn(ds)
            start = 0
            for j in live:
                j.future.set_result(out[start:start + len(j.dataset)])
                start += len(j.dataset)
        except BaseException as exc:  # the model failed: every request of the batch gets the error
            for j in live:
                if not j.future.done():
                    j.future.set_exception(exc)
