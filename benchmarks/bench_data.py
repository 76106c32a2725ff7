#!/usr/bin/env python
"""Data-pipeline speed on one core: the synthetic generator and resize_maps to 64×64.

    python benchmarks/bench_data.py            # targets: generator >= 5,000 maps/s, resize >= 50,000 maps/s
    python benchmarks/bench_data.py --n 20000 --repeat 5

Threads are pinned to one (numpy/BLAS via environment, torch via set_num_threads) before the
libraries load. Each figure is the best of ``--repeat`` timed runs after one warm-up run (which
also fills the wafer-geometry cache); the first, cold run is reported too.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from timing import timed_passes  # noqa: E402  (benchmarks/timing.py)


def best_rate(fn, n: int, repeat: int) -> tuple[float, float, float]:
    """(cold wall rate, best wall rate, best CPU-time rate). On a machine shared with other jobs
    the CPU-time rate is the fairer single-core figure (wall time includes waiting for a core)."""
    t = time.perf_counter()
    fn()
    cold = n / (time.perf_counter() - t)
    walls, cpus = timed_passes(fn, repeat)
    return cold, n / min(walls), n / max(min(cpus), 1e-9)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args(argv)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    from waferscope.data.preprocess import resize_maps
    from waferscope.data.synthetic import generate

    maps = generate(args.n, seed=1).maps
    out = np.empty((len(maps), args.size, args.size), dtype=np.uint8)
    jobs = [(f"generate(n={args.n})", lambda: generate(args.n, seed=0), "5,000"),
            ("generate(mixed=True, size=52)", lambda: generate(args.n, seed=0, mixed=True, size=52), "-"),
            (f"resize_maps -> {args.size}x{args.size}", lambda: resize_maps(maps, args.size, out=out), "50,000")]
    print(f"{'step':32s} {'wall maps/s':>12s} {'cpu maps/s':>12s} {'cold wall':>10s}  target")
    for name, fn, target in jobs:
        cold, best, cpu = best_rate(fn, args.n, args.repeat)
        print(f"{name:32s} {best:12.0f} {cpu:12.0f} {cold:10.0f}  >= {target}")


if __name__ == "__main__":
    main()
