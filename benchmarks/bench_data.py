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


def best_rate(fn, n: int, repeat: int) -> tuple[float, float]:
    t = time.perf_counter()
    fn()
    cold = n / (time.perf_counter() - t)
    best = 0.0
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t))
    return cold, best


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

    cold, best = best_rate(lambda: generate(args.n, seed=0), args.n, args.repeat)
    print(f"generate(n={args.n}):        {best:9.0f} maps/s  (cold first run {cold:.0f} maps/s; target >= 5,000)")
    cold, best = best_rate(lambda: generate(args.n, seed=0, mixed=True, size=52), args.n, args.repeat)
    print(f"generate(mixed, 52×52):     {best:9.0f} maps/s  (cold first run {cold:.0f} maps/s)")
    maps = generate(args.n, seed=1).maps
    out = np.empty((len(maps), args.size, args.size), dtype=np.uint8)
    cold, best = best_rate(lambda: resize_maps(maps, args.size, out=out), len(maps), args.repeat)
    print(f"resize_maps -> {args.size}×{args.size}:    {best:9.0f} maps/s  (cold first run {cold:.0f} maps/s; "
          f"target >= 50,000)")


if __name__ == "__main__":
    main()
