"""Deployment speed and accuracy: PyTorch vs ONNX Runtime (FP32) vs ONNX Runtime INT8.

    python benchmarks/bench_export.py [--threads 2] [--n 1024] [--out out/bench_export]

Models: the default bundled classifier (``waferscope.models.classifiers.load_default()``), a KD student,
the bundled detector (``waferscope.models.detectors.load_default("autoencoder")``) and four more
detectors (PatchCore, STFPM, Reverse Distillation, EfficientAD). Models without a run directory given by ``--run NAME=DIR``
are trained here on seeded synthetic maps with a small budget (the point is the runtime
comparison, not the best accuracy). Test data: synthetic maps (seed 7) and, if present, the real
dev maps. INT8 = static QDQ quantization of the convolutions, calibrated on 256 synthetic maps
(seed 12345, not the test maps).

Prints one markdown table (copied into docs/benchmark.md) and writes it to OUT/bench_export.md.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np

from waferscope.benchmark.measure import timed_passes


# name → (task, registry name, training params) for models trained here when no run is given
TRAIN = {
    "kd_student": ("classification", "kd_student", {"epochs": 10, "progress": False,
                                                    "teacher_params": {"epochs": 8, "progress": False}}),
    "patchcore": ("detection", "patchcore", {"progress": False}),
    "stfpm": ("detection", "stfpm", {"epochs": 4, "progress": False}),
    "reverse_distillation": ("detection", "reverse_distillation", {"epochs": 3, "progress": False}),
    "efficientad": ("detection", "efficientad", {"epochs": 4, "progress": False}),
}


def timed(fn, repeats: int) -> float:
    return statistics.median(timed_passes(fn, repeats)[0])


def quality(task: str, out, data) -> float:
    from sklearn.metrics import f1_score, roc_auc_score

    if task == "classification":
        return float(f1_score(data.labels.astype(str), np.asarray(out).astype(str), average="macro"))
    return float(roc_auc_score(~data.is_normal, out.scores))


def measure(name: str, est, task: str, data, one, tmp: Path, calib, threads: int) -> list[dict]:
    from waferscope.export import OnnxModel, export_onnx, quantize

    fp32 = export_onnx(est, tmp / f"{name}.onnx")
    int8 = quantize(fp32, tmp / f"{name}_int8.onnx", "static", calib)
    runners = [("torch", est), ("onnx fp32", OnnxModel(fp32, threads=threads)),
               ("onnx int8", OnnxModel(int8, threads=threads))]
    rows, ref = [], None
    for label, model in runners:
        call = model.predict if task == "classification" else model.score
        proba = (model.predict_proba if task == "classification" else model.score)
        out = call(data)
        raw = proba(data)
        raw = raw if task == "classification" else raw.scores
        if ref is None:
            ref = raw
        call(one)
        lat = timed(lambda: call(one), 20) * 1000
        thr = len(data) / timed(lambda: call(data), 3)
        size = (tmp / f"{name}.onnx").stat().st_size if label == "onnx fp32" else (
            (tmp / f"{name}_int8.onnx").stat().st_size if label == "onnx int8" else None)
        rows.append({"model": name, "runtime": label, "quality": quality(task, out, data),
                     "max_abs_diff": float(np.abs(np.asarray(raw) - np.asarray(ref)).max()),
                     "latency_ms": lat, "throughput": thr, "size_kb": None if size is None else size / 1024})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1024, help="test maps (synthetic)")
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN_DIR to use instead of training NAME")
    ap.add_argument("--out", default="out/bench_export")
    ap.add_argument("--only", default=None, help="comma-separated model names to measure (default: all), "
                    "e.g. bundled,bundled_detector,kd_student")
    args = ap.parse_args()
    only = None if args.only is None else set(args.only.split(","))

    import torch

    from waferscope import registry
    from waferscope.base import load_run
    from waferscope.data import load

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    test = load(f"synthetic:n={args.n},seed=7")
    calib = load("synthetic:n=256,seed=12345")
    train = load("synthetic:n=2000,seed=1")
    runs = dict(r.split("=", 1) for r in args.run)

    models = []

    def wanted(name: str) -> bool:
        return only is None or name in only

    try:
        from waferscope.models.classifiers import load_default

        if not wanted("bundled"):
            raise LookupError("not asked for (--only)")
        models.append(("bundled", "classification", runs.get("bundled") and load_run(runs["bundled"]) or load_default()))
    except Exception as exc:  # the bundled weights are optional for this script
        print(f"note: no bundled classifier ({type(exc).__name__}: {exc})")
    try:
        from waferscope.models.detectors import load_default as load_default_detector

        if not wanted("bundled_detector"):
            raise LookupError("not asked for (--only)")
        detector = runs.get("bundled_detector") and load_run(runs["bundled_detector"]) or load_default_detector("autoencoder")
        detector.progress = False
        models.append(("bundled_detector", "detection", detector))
    except Exception as exc:
        print(f"note: no bundled detector ({type(exc).__name__}: {exc})")
    for name, (task, reg, params) in TRAIN.items():
        if not wanted(name):
            continue
        if name in runs:
            models.append((name, task, load_run(runs[name])))
            continue
        print(f"training {name} on {len(train)} synthetic maps ...", flush=True)
        est = registry.create(reg, "classifier" if task == "classification" else "detector", **params)
        est.fit(train if task == "classification" else train.normal())
        est.save(out / "runs" / name)
        models.append((name, task, est))

    from waferscope.errors import WaferscopeError

    rows = []
    for name, task, est in models:
        print(f"measuring {name} ...", flush=True)
        try:
            rows += measure(name, est, task, test, test.subset([0]), out, calib, args.threads)
        except WaferscopeError as exc:  # e.g. a detector whose score the generic graph cannot express
            print(f"note: {name} not exported: {exc}", flush=True)

    base = {r["model"]: r for r in rows if r["runtime"] == "torch"}
    lines = [f"Test: {len(test)} synthetic maps (seed 7); {args.threads} threads; quality = macro F1 "
             "(classifiers) or image AUROC (detectors); Δ = max |output − torch output| "
             "(probabilities or scores).", "",
             "| model | runtime | quality | Δ vs torch | latency b=1 (ms) | wafers/s (b=all) | speed-up | file (KB) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        b = base[r["model"]]
        size = "" if r["size_kb"] is None else f"{r['size_kb']:.0f}"
        lines.append(f"| {r['model']} | {r['runtime']} | {r['quality']:.4f} | {r['max_abs_diff']:.2g} | "
                     f"{r['latency_ms']:.2f} | {r['throughput']:.0f} | {r['throughput'] / b['throughput']:.2f}× | {size} |")
    table = "\n".join(lines)
    print(table)
    (out / "bench_export.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
