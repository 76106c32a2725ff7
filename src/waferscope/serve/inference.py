"""The service's inference layer, without HTTP: :class:`Inference` holds the served models, their
batch workers (:mod:`.batcher`), the limits that bound an answer, each request's time budget, the
choice between plain classification, Grad-CAM heat maps and open-set abstention, and builds the rows
every model route answers with. :mod:`.app` only reads requests, parses their query flags, calls
this and turns its rows into responses: kept apart so the model side can be read (and changed)
without the web framework's types in the way."""

from __future__ import annotations

import asyncio


class RequestError(Exception):
    """A bad request: answered with ``status`` and ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


async def _within(fut, seconds: float):
    """``await fut`` with a time limit (TimeoutError). asyncio.timeout (3.11+) costs one timer handle;
    wait_for adds a future and callbacks per request."""
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(seconds):
            return await fut
    return await asyncio.wait_for(fut, seconds)
