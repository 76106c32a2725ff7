"""Measurements around a model: determinism settings, peak memory, size, parameters, speed.

Peak memory is the process's resident-set high-water mark (``VmHWM``) over one cell. Linux lets a
process reset its own mark (``echo 5 > /proc/self/clear_refs``), so each cell starts from the
memory already in use (Python, torch, the loaded data sets) and its peak includes that baseline;
``peak_extra_mb`` is the growth above the RSS at the cell's start. Where the reset is not
available the mark covers the whole run so far (reported as such in the environment).
"""

from __future__ import annotations

import os
import random
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def seed_everything(seed: int, threads: int) -> None:
    """Seed Python, numpy and torch and set torch's thread count."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    # warn_only: a model using an op without a deterministic CPU kernel still runs (and warns).
    torch.use_deterministic_algorithms(True, warn_only=True)


def _status_kb(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(m.group(1)) if m else None


def reset_peak_rss() -> bool:
    """Reset the high-water mark to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float | None:
    """Return this process's resident memory in MB (None where /proc is missing)."""
    kb = _status_kb("VmRSS")
    return None if kb is None else kb / 1024


def peak_rss_mb() -> float | None:
    """Return this process's peak resident memory in MB (None where unknown)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def torch_modules(est: Any) -> list:
    """Return the nn.Module attributes of an estimator (``network_``, ``teacher_``, lists of them...)."""
    import torch

    found = []
    for name, value in vars(est).items():
        if name.startswith("_"):  # private caches (e.g. a folded inference copy) would count twice
            continue
        items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        found += [v for v in items if isinstance(v, torch.nn.Module)]
    return found


def count_parameters(est: Any) -> int:
    """Parameters of every torch module the estimator holds (each counted once).

    For models without torch modules, the number of values in the arrays it saves (an SVM's
    support vectors...).
    """
    mods = torch_modules(est)
    if mods:
        seen: dict[int, int] = {}
        for mod in mods:
            for p in mod.parameters():
                seen[id(p)] = p.numel()
        return int(sum(seen.values()))
    try:
        tensors, _ = est._state()
    except Exception:  # a model that cannot report its state has no countable parameters
        return 0
    return int(sum(int(np.prod(np.shape(t))) for t in tensors.values()))


def dir_bytes(path: str | Path) -> int:
    """Return the total size in bytes of the files under ``path``."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def latency_ms(call: Callable[[Any], Any], one, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``call(one)`` (one wafer) over ``repeats`` runs."""
    for _ in range(warmup):
        call(one)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call(one)
        times.append((time.perf_counter() - t0) * 1000)
    return float(statistics.median(times))


def throughput(call: Callable[[Any], Any], batches: list, n: int) -> float:
    """Wafers per second over ``n`` wafers given as ``batches`` (one warm-up batch first)."""
    call(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        call(b)
    return float(n / max(time.perf_counter() - t0, 1e-9))


def environment(threads: int) -> dict:
    """Return the machine and library versions a benchmark ran with."""
    import platform

    import sklearn
    import torch

    from waferscope import __version__

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"waferscope": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "scikit-learn": sklearn.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return {
        "versions": versions,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "peak_memory": "per-cell VmHWM reset via /proc/self/clear_refs" if reset_peak_rss()
        else "process-lifetime ru_maxrss (reset unavailable)",
    }


# --- the harness the speed scripts in benchmarks/ share (was benchmarks/timing.py + copies per script) ---


def timed_passes(fn: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """Call ``fn`` ``repeats`` times; return the wall-clock and the CPU seconds of each pass.

    Wall-clock seconds measure the share of the machine a run got; CPU seconds (all threads of this
    process) do not depend on the neighbours, so on a shared machine both are reported. No warm-up:
    the caller warms up on what it chooses (a small subset, or one full pass).
    """
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return walls, cpus


def best_rate(fn: Callable[[], object], n: int, repeats: int, warmup: bool = True) -> dict[str, float]:
    """Items per second of ``fn`` (which handles ``n`` items).

    Best and median wall-clock rate and the best rate per CPU-second, over ``repeats`` passes
    after one warm-up pass (``warmup``).
    """
    if warmup:
        fn()  # allocator, thread pool, caches
    walls, cpus = timed_passes(fn, repeats)
    return {"best": n / max(min(walls), 1e-9), "median": n / max(statistics.median(walls), 1e-9),
            "per_cpu_s": n / max(min(cpus), 1e-9), "seconds_best": min(walls), "cpu_seconds_best": min(cpus)}


def add_speed_arguments(parser, n: int, threads: int = 2, repeats: int = 3) -> None:
    """Add the options every speed script takes.

    ``--n`` items, ``--threads`` torch threads, ``--repeats`` timed passes (``--repeat`` is
    accepted too: older commands in the docs use it).
    """
    parser.add_argument("--n", type=int, default=n, help=f"items per timed pass (default {n})")
    parser.add_argument("--threads", type=int, default=threads, help=f"torch threads (default {threads})")
    parser.add_argument("--repeats", "--repeat", dest="repeats", type=int, default=repeats,
                        help=f"timed passes; the best is reported (default {repeats})")


def load_average() -> float:
    """Return the 1-minute load average (None where the OS has none)."""
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return float("nan")


def environment_line(threads: int) -> str:
    """One line naming what the numbers were measured on (printed above every speed table)."""
    env = environment(threads)
    return (f"machine: {env['cpu'] or env['platform']}, {env['cpu_count']} cores, torch {env['versions']['torch']}, "
            f"{threads} thread(s), load average {load_average():.1f}")


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """``rows`` as a Markdown table.

    ``columns`` maps a row key to its header (numbers right-aligned, rates above 100 without
    decimals).
    """
    def cell(v):
        if isinstance(v, float):
            return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"
        return str(v)

    keys = list(columns)
    numeric = [all(isinstance(r.get(k), (int, float)) for r in rows) for k in keys]
    lines = ["| " + " | ".join(columns[k] for k in keys) + " |",
             "|" + "|".join("---:" if num else "---" for num in numeric) + "|"]
    lines += ["| " + " | ".join(cell(r.get(k, "")) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def append_json_line(path: str | Path, row: dict) -> None:
    """Append one JSON line atomically: the file is either the old one or the old one plus the row."""
    import json

    from waferscope.utils import atomic_path

    path = Path(path)
    old = path.read_text() if path.is_file() else ""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(old + json.dumps(row, default=float) + "\n")
