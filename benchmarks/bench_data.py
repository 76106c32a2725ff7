#!/usr/bin/env python
"""Data-pipeline speed on one core: the synthetic generator and resize_maps to 64×64.

    python benchmarks/bench_data.py            # targets: generator >= 5,000 maps/s, resize >= 50,000 maps/s
    python benchmarks/bench_data.py --n 20000 --repeats 5

Threads are pinned to one (numpy/BLAS via environment, torch via set_num_threads) before the
libraries load. Each figure is the best of ``--repeats`` timed runs after one warm-up run (which
also fills the wafer-geometry cache); the first, cold run is reported too.
"""

from __future__ import annotations

import os

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from waferscope.benchmark.measure import add_speed_arguments, best_rate, environment_line, timed_passes  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_arguments(ap, n=10000, threads=1, repeats=3)
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
    print(environment_line(1))
    print(f"{'step':32s} {'wall maps/s':>12s} {'cpu maps/s':>12s} {'cold wall':>10s}  target")
    for name, fn, target in jobs:
        # The first, cold run is reported too: it pays for the wafer-geometry cache.
        cold = args.n / timed_passes(fn, 1)[0][0]
        rate = best_rate(fn, args.n, args.repeats, warmup=False)
        best, cpu = rate["best"], rate["per_cpu_s"]
        print(f"{name:32s} {best:12.0f} {cpu:12.0f} {cold:10.0f}  >= {target}")


if __name__ == "__main__":
    main()
