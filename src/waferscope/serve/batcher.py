"""One worker thread per model that runs queued requests in shared batches, fairly and in isolation.

Why batch: a model call has a fixed cost (building a data set, torch's dispatch) that dominates for
one map, and while the model runs the next requests queue up. Running them together is then free
throughput: 32 clients sending one map each become batches of ~32 maps.

Why chunks: a request is cut into chunks of at most ``chunk_maps`` maps and every batch takes one
chunk from each waiting request in turn (round robin), so a 1,024-map request advances a chunk at a
time while the 1-map requests that arrive behind it join the very next batch instead of waiting for
all of it. A request whose deadline passes or whose client gave up (its Future cancelled) is dropped
between chunks: the worker is free again within one chunk.

Why isolation: if a batch fails, each request in it is re-run alone, so only the request that
caused the failure gets the error; the others get their answers as if they had been alone.

The queue is bounded (``max_queued_dies``): :meth:`Batcher.submit` raises :class:`QueueFull` rather
than letting memory and latency grow without end.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from waferscope.data.dataset import UNLABELLED, WaferDataset

log = logging.getLogger("waferscope.serve")
_STOP = object()


class ServiceStopped(RuntimeError):
    """A request reached a worker that has been closed (the app is shutting down)."""


class QueueFull(RuntimeError):
    """More maps are waiting than ``max_queued_maps``: the caller answers 503 + Retry-After."""


class DeadlineExceeded(RuntimeError):
    """The request's time budget ran out before its last chunk ran."""


@dataclass
class MapBatch:
    """The maps of one request, validated.

    Plain lists, not a WaferDataset: building a data set (a pandas frame) costs ~1 ms, more than
    the model spends on one map, so the worker builds one per inference batch instead of one per
    request.
    """

    maps: list  # uint8 die grids
    ids: list[str]
    lots: list  # str or None per map

    def __len__(self) -> int:
        """Return the number of maps."""
        return len(self.maps)


@dataclass(eq=False)  # compared by identity: two jobs with equal maps are still two jobs
class _Job:
    dataset: MapBatch
    fn: Callable[[WaferDataset], list]
    batchable: bool
    deadline: float
    dies: int = 0
    future: Future = field(default_factory=Future)
    next: int = 0  # first map not yet scheduled
    results: list = field(default_factory=list)

    def dead(self) -> bool:
        return self.future.done()  # answered, failed, or cancelled by the client's timeout


class Batcher:
    """``submit(maps, fn, deadline)`` → a Future of ``fn(WaferDataset of maps)`` (a list, one item per map).

    Jobs whose ``fn`` is the batch function share batches of up to ``max_batch`` maps; any other job
    (e.g. Grad-CAM) runs its chunks alone, still taking turns with the others. Results are per map
    and independent of the batch they ran in: every model resizes each map on its own.
    """

    def __init__(self, batch_fn: Callable[[WaferDataset], list], max_batch: int, name: str, *,
                 chunk_maps: int = 64, max_queued_dies: int = 64 << 20, after_job: Callable[[int], None] | None = None):
        self.batch_fn = batch_fn
        self.max_batch = max(1, max_batch)
        self.chunk_maps = max(1, min(chunk_maps, self.max_batch))
        self.max_queued_dies = max_queued_dies
        self.after_job = after_job  # called with the job's die count once it is answered (memory trim)
        self.name = name
        # SimpleQueue: put/get in C, no Condition to notify (queue.Queue's costs a request ~10 µs of
        # the event loop's time, as much as decoding a small map)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0  # maps submitted and not yet answered
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"waferscope-{name}", daemon=True)
        self._thread.start()

    @property
    def queued_dies(self) -> int:
        """Return the dies waiting in the queue."""
        return self._queued

    def submit(self, dataset: MapBatch, fn: Callable[[WaferDataset], list] | None = None,
               deadline: float | None = None) -> Future:
        """Queue ``dataset`` for the worker; return a future of its results."""
        # After close() no thread reads the queue: a job put there would wait forever, so refuse it.
        if self._closed:
            raise ServiceStopped("the service is shutting down")
        dies = sum(m.size for m in dataset.maps)
        with self._lock:
            if self._queued and self._queued + dies > self.max_queued_dies:
                raise QueueFull(f"the {self.name} queue is full ({self._queued:,} dies waiting, the limit is "
                                f"{self.max_queued_dies:,}); retry shortly")
            self._queued += dies
        fn = fn or self.batch_fn
        job = _Job(dataset, fn, batchable=fn is self.batch_fn, dies=dies,
                   deadline=time.monotonic() + 3600 if deadline is None else deadline)
        self._queue.put(job)
        return job.future

    def close(self) -> None:
        """Stop the worker after the batch in flight."""
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    # ---- the worker thread ----------------------------------------------------------------------
    def _release(self, job: _Job) -> None:
        with self._lock:
            self._queued -= job.dies

    def _fail(self, job: _Job, exc: BaseException) -> None:
        try:
            job.future.set_exception(exc)
        except InvalidStateError:  # cancelled by the client meanwhile
            pass

    def _loop(self) -> None:
        active: deque[_Job] = deque()
        while True:
            try:
                if self._step(active):
                    return
            except Exception as exc:  # a bug here must not kill the worker: fail what was active, go on
                log.error("%s worker: %s: %s", self.name, type(exc).__name__, exc)
                for job in active:
                    self._fail(job, exc)
                    self._release(job)
                active.clear()

    def _step(self, active: deque) -> bool:
        """One model call; True once the worker is told to stop."""
        if self._take(active):
            return True
        self._drop_expired(active)
        if not active:
            return False
        parts = self._pick(active)
        self._run(parts)
        self._rotate(active, parts)
        return False

    def _take(self, active: deque) -> bool:
        """Move the queued jobs to ``active`` (waiting for one when none is active); True on the stop signal."""
        if not active:
            item = self._queue.get()
        else:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
        while item is not None:
            if item is _STOP:
                for job in active:
                    self._fail(job, ServiceStopped("the service is shutting down"))
                return True
            active.append(item)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                item = None
        return False

    def _drop_expired(self, active: deque) -> None:
        """Fail the jobs past their deadline and remove every dead job from ``active``."""
        now = time.monotonic()
        for job in list(active):
            if not job.dead() and now > job.deadline:
                self._fail(job, DeadlineExceeded("the request's time budget ran out"))
            if job.dead():
                active.remove(job)
                self._release(job)

    def _rotate(self, active: deque, parts: list) -> None:
        """After a call: answer the finished jobs and put the ones served behind the ones that waited."""
        served = {id(j) for j, _, _ in parts}
        finished = []
        for job, _, _ in parts:
            if job.next >= len(job.dataset) and not job.dead():
                try:
                    job.future.set_result(job.results)
                except InvalidStateError:
                    pass
            if job.next >= len(job.dataset) or job.dead():
                finished.append(job)
        # round robin: the requests served this turn go behind the ones that waited
        rest = [j for j in active if id(j) not in served]
        again = [j for j, _, _ in parts if j not in finished]
        active.clear()
        active.extend(rest + again)
        for job in finished:
            self._release(job)
            if self.after_job is not None:
                self.after_job(job.dies)

    def _pick(self, active: deque) -> list[tuple[_Job, int, int]]:
        """(job, start, stop) chunks for the next model call."""
        head = active[0]
        if not head.batchable:
            stop = min(len(head.dataset), head.next + self.chunk_maps)
            return [(head, head.next, stop)]
        parts, room = [], self.max_batch
        for job in active:
            if room <= 0:
                break
            if not job.batchable or job.fn is not head.fn:
                continue
            stop = min(len(job.dataset), job.next + min(self.chunk_maps, room))
            parts.append((job, job.next, stop))
            room -= stop - job.next
        return parts

    def _run(self, parts: list[tuple[_Job, int, int]]) -> None:
        for job, _, stop in parts:
            job.next = stop
        try:
            out = self._call(parts)
        except Exception as exc:
            if len(parts) > 1:  # find the request that broke the batch: each runs alone
                for part in parts:
                    self._run_alone(part)
                return
            log.warning("%s: a request failed in the model (%s: %s)", self.name, type(exc).__name__, exc)
            self._fail(parts[0][0], exc)
            return
        start = 0
        for job, a, b in parts:
            job.results.extend(out[start:start + b - a])
            start += b - a

    def _run_alone(self, part: tuple[_Job, int, int]) -> None:
        job = part[0]
        if job.dead():
            return
        try:
            out = self._call([part])
        except Exception as exc:
            log.warning("%s: a request failed in the model (%s: %s)", self.name, type(exc).__name__, exc)
            self._fail(job, exc)
            return
        job.results.extend(out)

    @staticmethod
    def _call(parts: list[tuple[_Job, int, int]]) -> list:
        maps = [m for j, a, b in parts for m in j.dataset.maps[a:b]]
        ids = [i for j, a, b in parts for i in j.dataset.ids[a:b]]
        n = len(maps)
        # The data set built directly, with the one metadata column a model's prediction may read (the
        # ids; the other columns only matter to training): from_maps would copy the frame, add missing
        # columns one by one and re-type the ids (~1.7 ms a batch), and six columns of inferred
        # strings cost ~0.25 ms — on the one thread every request's Python work shares, more than
        # the classifier spends on a few maps. Maps and ids were validated when parsed.
        meta = pd.DataFrame({"id": np.array(ids, dtype=object)}, copy=False)
        ds = WaferDataset(maps=maps, labels=np.full(n, UNLABELLED, dtype=object), meta=meta, name="request")
        out = list(parts[0][0].fn(ds))
        if len(out) != len(maps):
            raise RuntimeError(f"the model returned {len(out)} results for {len(maps)} maps")
        return out
