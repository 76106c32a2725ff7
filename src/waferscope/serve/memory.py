"""Giving memory back to the system after large requests.

glibc's malloc keeps freed memory in its arenas (one per thread that ever allocated) instead of
returning it, so after one 500 MB answer the process stays at its peak for good. Two measures, both
no-ops where glibc is absent: :func:`configure` (at start, before the worker threads exist) caps the
arenas at 2 and lets allocations above 1 MiB be separate mappings that go back on free;
:class:`Trimmer` calls ``malloc_trim(0)`` once things are quiet after a large request.
"""

from __future__ import annotations

import ctypes
import gc
import ctypes.util
import logging
import threading
import time

log = logging.getLogger("waferscope.serve")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8


def _libc():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()


def configure() -> bool:
    """Cap malloc arenas and make large blocks mmap'd (returned to the OS when freed). True if applied."""
    if _LIBC is None:
        return False
    ok = _LIBC.mallopt(M_ARENA_MAX, 2) == 1
    ok &= _LIBC.mallopt(M_MMAP_THRESHOLD, 1 << 20) == 1
    ok &= _LIBC.mallopt(M_TRIM_THRESHOLD, 8 << 20) == 1
    return bool(ok)


def trim() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``; nothing elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


class Trimmer:
    """``request()`` after a large request; a daemon thread trims once no request came for ``quiet_s``."""

    def __init__(self, quiet_s: float = 0.5):
        self.quiet_s = quiet_s
        self._event = threading.Event()
        self._last = 0.0
        threading.Thread(target=self._loop, name="waferscope-trim", daemon=True).start()

    def request(self) -> None:
        """Ask for a trim once no request came for ``quiet_s``."""
        self._last = time.monotonic()
        self._event.set()

    def _loop(self) -> None:
        while True:
            self._event.wait()
            while time.monotonic() - self._last < self.quiet_s:
                time.sleep(self.quiet_s)
            self._event.clear()
            gc.collect()  # cycles (e.g. a traceback holding a request's frames) before the memory is trimmed
            trim()
