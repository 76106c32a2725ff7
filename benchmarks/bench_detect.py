"""End-to-end scoring throughput (wafers/s) of every registered detector.

For each name in ``registry.available("detector")``: build it with its defaults (``epochs=1`` and
``progress=False`` when it has those parameters: training quality does not change scoring cost), fit
on 200 synthetic ``none`` maps, then time ``score()`` on N synthetic maps of realistic die grids —
everything a user waits for: resize + onehot3, the network, map post-processing, upsampling back to
each map's own H×W. One warm-up pass first. A detector that fails is reported and skipped.

    python benchmarks/bench_detect.py [--n 2000] [--threads 2] [--only autoencoder,patchcore]
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback

import torch

from waferscope import registry
from waferscope.benchmark.measure import add_speed_arguments, best_rate, environment_line, markdown_table
from waferscope.data.synthetic import generate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_speed_arguments(ap, n=2000, repeats=2)
    ap.add_argument("--only", default="", help="comma-separated detector names")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train = generate(200, seed=21, classes=["none"])
    test = generate(args.n, seed=22)
    names = [n for n in registry.available("detector") if not args.only or n in args.only.split(",")]
    print(f"# {environment_line(args.threads)}; {args.n} synthetic maps "
          f"(median {int(test.summary()['shape_median'][0])} dies across)", file=sys.stderr)
    rows = []
    for name in names:
        try:
            cls = registry.get(name, "detector")
            valid = set(cls._param_names())
            params = {k: v for k, v in {"epochs": 1, "progress": False}.items() if k in valid}
            det = cls(**params).fit(train, calibrate=False)  # speed of score(); no threshold needed
            det.score(test.subset(range(min(256, len(test)))))  # warm-up on a subset: a full pass is slow
            rate = best_rate(lambda: det.score(test), args.n, args.repeats, warmup=False)
            row = {"detector": name, "wafers_per_s": round(rate["best"], 1),
                   "batch_size": getattr(det, "predict_batch_size", None), "input_size": getattr(det, "input_size", None),
                   "threads": args.threads, "n": args.n}
        except Exception as exc:  # one broken detector must not hide the others' numbers
            print(f"skip {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
            traceback.print_exc(limit=2, file=sys.stderr)
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n" + markdown_table(rows, {"detector": "detector", "wafers_per_s": "wafers/s", "batch_size": "batch",
                                       "input_size": "input"}), file=sys.stderr)


if __name__ == "__main__":
    main()
