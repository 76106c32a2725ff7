"""End-to-end speed of the knowledge-distillation detectors (docs/detection_kd.md).

``detector.score(dataset)`` end to end (resize, encode, networks, maps back at each wafer's own
resolution) on ``--n`` real dev maps (``--speed-n`` is the older name), ``--threads`` torch
threads, best of ``--repeats``; and wafers per CPU-second on 1 thread (what a shared machine
cannot hide). Each detector is fitted for one epoch on 64 dev normals first: training quality does
not change scoring cost. Their accuracy is a protocol, not a benchmark:
``waferscope evaluate detector --protocol kd --detector NAME``.

    python benchmarks/bench_kd_detectors.py --threads 2 --n 2048 --repeats 2 --models stfpm efficientad reverse_distillation
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from waferscope import registry
from waferscope.benchmark.measure import add_speed_arguments, append_json_line, best_rate, load_average
from waferscope.cli.common import parse_set
from waferscope.data import load
from waferscope.data.paths import DEV_MAPS
from waferscope.evaluate.detection import dev_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["stfpm", "efficientad", "reverse_distillation"])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="detector parameter overrides")
    ap.add_argument("--data", default=str(DEV_MAPS))
    add_speed_arguments(ap, n=2048, repeats=3)
    ap.add_argument("--speed-n", dest="n", type=int, help=argparse.SUPPRESS)  # the older name of --n
    ap.add_argument("--speed-only", action="store_true", help=argparse.SUPPRESS)  # always, now: kept for old commands
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="append one JSON line per model to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_set(args.set)
    dev = load(args.data)
    normals = dev_split(dev, args.seed)[0].subset(np.arange(64))
    speed_set = dev.subset(np.resize(np.arange(len(dev)), args.n))
    for name in args.models:
        det = registry.create(name, kind="detector", seed=args.seed, **overrides)
        det.set_params(epochs=1, progress=False).fit(normals, calibrate=False)
        det.score(speed_set.subset(np.arange(min(64, len(speed_set)))))  # warm-up (and tracing)
        wall = best_rate(lambda: det.score(speed_set), len(speed_set), args.repeats, warmup=False)["best"]
        # The single-thread CPU-time rate hardly depends on the neighbours: 2 × it is what 2 idle
        # cores would give with perfect scaling.
        torch.set_num_threads(1)
        cpu = best_rate(lambda: det.score(speed_set), len(speed_set), args.repeats, warmup=False)["per_cpu_s"]
        torch.set_num_threads(args.threads)
        row = {"model": name, "params": overrides, "wafers_per_s": round(wall, 1),
               "wafers_per_cpu_s_1thread": round(cpu, 1), "load_average": round(load_average(), 1)}
        print(json.dumps(row), flush=True)
        if args.json:
            append_json_line(args.json, row)


if __name__ == "__main__":
    main()
