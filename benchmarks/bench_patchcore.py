"""PatchCore speed and scale benchmark (docs/detection_patchcore.md).

1. throughput: fit on 2,000 synthetic `none` wafers, then time ``detector.score(dataset)`` end to end
   (resize + one-hot encoding, backbone, patch embedding, kNN against the memory bank, eq. 7 score,
   anomaly maps smoothed and resized to every wafer's own H×W) on 4,096 synthetic wafers of all classes.
2. scale: fit on ``--fit-n`` (default 100,000) synthetic `none` wafers (generation time not counted)
   and report the fit time (features + coreset) and the memory-bank size.

    python benchmarks/bench_patchcore.py --threads 2 --config fast
    python benchmarks/bench_patchcore.py --threads 2 --config fast --fit-n 100000 --skip-throughput
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from waferscope import registry
from waferscope.benchmark.measure import timed_passes
from waferscope.data.synthetic import generate

CONFIGS = {
    "default": dict(),  # the detector's defaults: the shipped wafer_resnet18
    "fast": dict(backbone="resnet18", pretrained=None, backbone_kwargs={"width": 0.25}, embedding_dim=64, coreset_ratio=0.02),
    "r18": dict(backbone="resnet18", pretrained=None, coreset_ratio=0.05),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--config", default="fast", choices=sorted(CONFIGS))
    ap.add_argument("--detector", default="patchcore")
    ap.add_argument("--score-n", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--fit-n", type=int, default=0, help="wafers for the scale test (0 = skip)")
    ap.add_argument("--fit-coreset-ratio", type=float, default=0.01)
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = dict(CONFIGS[args.config], predict_batch_size=args.batch_size, progress=True)
    out = {"threads": args.threads, "config": args.config, "detector": args.detector, "params": params}

    if not args.skip_throughput:
        train = generate(2000, seed=0, classes=["none"])
        test = generate(args.score_n, seed=1)
        det = registry.create(args.detector, kind="detector", **params).fit(train, calibrate=False)
        det.score(test.subset(range(256)))  # warm-up
        times, cpu = timed_passes(lambda: det.score(test), 2)
        # On a shared machine wall time measures the neighbours too; CPU seconds (all threads of this
        # process) bound what an idle machine with `threads` cores would do: n / (cpu / threads).
        out["throughput"] = {"n": len(test), "seconds_best": round(min(times), 2),
                             "wafers_per_s": round(len(test) / min(times), 1),
                             "cpu_seconds_best": round(min(cpu), 2),
                             "wafers_per_cpu_s": round(len(test) / min(cpu), 1),
                             "memory_rows": len(det.memory_bank_), "load_average": os.getloadavg()[0]}
        print(json.dumps(out["throughput"]), flush=True)

    if args.fit_n:
        t = time.perf_counter()
        big = generate(args.fit_n, seed=2, classes=["none"])
        gen_s = time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        det = registry.create(args.detector, kind="detector",
                              **dict(params, coreset_ratio=args.fit_coreset_ratio)).fit(big, calibrate=False)
        fit_s, fit_cpu = time.perf_counter() - t, time.process_time() - c
        out["scale"] = {"n_wafers": args.fit_n, "generate_seconds": round(gen_s, 1), "fit_seconds": round(fit_s, 1),
                        "fit_cpu_seconds": round(fit_cpu, 1), "load_average": os.getloadavg()[0], **det.fit_info_}
        print(json.dumps(out["scale"]), flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
