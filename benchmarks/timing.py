"""The one timing loop the benchmark scripts share.

Wall-clock seconds measure the share of the machine a run got; CPU seconds (all threads of this
process) do not depend on the neighbours, so on a shared machine both are reported.
"""

from __future__ import annotations

import time
from typing import Callable


def timed_passes(fn: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Call ``fn`` ``repeats`` times; return the wall-clock and the CPU seconds of each pass.

    No warm-up: each script warms up on what it chooses (a small subset, or one full pass)."""
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus
