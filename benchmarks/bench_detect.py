"""End-to-end scoring throughput (wafers/s) of every registered detector.

For each name in ``registry.available("detector")``: build it with its defaults (``epochs=1`` and
``verbose=False`` when it has those parameters: training quality does not change scoring cost), fit
on 200 synthetic ``none`` maps, then time ``score()`` on N synthetic maps of realistic die grids —
everything a user waits for: resize + onehot3, the network, map post-processing, upsampling back to
each map's own H×W. One warm-up pass first. A detector that fails is reported and skipped.

    python benchmarks/bench_detect.py [--n 2000] [--threads 2] [--only autoencoder,patchcore]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import traceback

import torch
from timing import timed_passes  # benchmarks/timing.py

from waferscope import registry
from waferscope.data.synthetic import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated detector names")
    ap.add_argument("--repeats", type=int, default=2, help="timed passes; the best is reported")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = generate(200, seed=21, classes=["none"])
    test = generate(args.n, seed=22)
    names = [n for n in registry.available("detector") if not args.only or n in args.only.split(",")]
    print(f"# {platform.machine()}, torch {torch.__version__}, {args.threads} threads, {args.n} synthetic maps "
          f"(median {int(test.summary()['shape_median'][0])} dies across)", file=sys.stderr)
    rows = []
    for name in names:
        try:
            cls = registry.get(name, "detector")
            valid = set(cls._param_names())
            params = {k: v for k, v in {"epochs": 1, "verbose": False}.items() if k in valid}
            det = cls(**params).fit(train)
            det.score(test.subset(range(min(256, len(test)))))  # warm-up
            best = min(timed_passes(lambda: det.score(test), args.repeats)[0])
            row = {"detector": name, "wafers_per_s": round(args.n / best, 1),
                   "batch_size": getattr(det, "batch_size", None), "input_size": getattr(det, "input_size", None),
                   "threads": args.threads, "n": args.n}
        except Exception as exc:  # one broken detector must not hide the others' numbers
            print(f"skip {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc(limit=2, file=sys.stderr)
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| detector | wafers/s | batch | input |\n|---|---:|---:|---:|", file=sys.stderr)
    for r in rows:
        print(f"| {r['detector']} | {r['wafers_per_s']:.0f} | {r['batch_size']} | {r['input_size']} |", file=sys.stderr)


if __name__ == "__main__":
    main()
