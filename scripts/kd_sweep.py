"""Knowledge-distillation sweep on the real dev maps: student recipe × fold, retention vs the teacher.

Protocol (the classification protocol of scripts/eval_classifiers.py, per fold):

- fold k of the seeded stratified 5-fold split (seed 0) of the 2,892 real dev maps: training data =
  the other 4/5 + ``--synthetic`` labelled synthetic maps (``generate(n, seed=1000 + k)``); test =
  the held-out fifth of REAL maps;
- ONE teacher per fold: ``cnn`` with the bundled classifier's configuration (width 24, 48 px,
  25 epochs; :data:`TEACHER`), seed k, trained once and cached in ``--work/teacher_f<k>``;
- every student of that fold distils that same teacher on the same training data (seed k) and is
  scored on the same test fold; retention = student macro-F1 / teacher macro-F1 on that fold;
- a student cell = (arch, width, α, T, epochs, transfer): ``transfer`` = how many synthetic maps
  (labels dropped, ``kd_student.fit(..., transfer=generate(n, seed=10_000 + k))``) the teacher labels
  for the soft term only.
  The student's 8 rotations/flips of every map are further transfer views (always on).

Each (cell, fold) result is cached as JSON under ``--work/cells``, so the sweep runs in pieces and
resumes; the table and figure are rebuilt from everything cached::

    python scripts/kd_sweep.py --folds 0 1 --arch cnn --widths 7 --alphas 0.9 --temperatures 4 --transfer 0 8000
    python scripts/kd_sweep.py --report-only --png docs/img/kd_sweep.png

Prints a markdown table (mean retention over the folds measured, and per fold).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)
N_FOLDS = 5
# The bundled classifier's configuration (src/waferscope/weights/classifier_cnn_gradcam/model.json).
TEACHER = dict(size=48, encoding="onehot3", epochs=25, batch_size=64, lr=3e-3, weight_decay=1e-4,
               imbalance="loss", augment=True, val_fraction=0.1, patience=6, width=24, dropout=0.2)


def fold_data(dev_path: str, fold: int, n_synthetic: int):
    """(train = 4/5 dev + synthetic, test = 1/5 dev) of ``fold``."""
    from waferscope.data import WaferDataset, load
    from waferscope.data.preprocess import stratified_kfold
    from waferscope.data.synthetic import generate

    dev = load(dev_path)
    tr, te = list(stratified_kfold(dev.labels, N_FOLDS, seed=0))[fold]
    parts = [dev.subset(tr)]
    if n_synthetic:
        parts.insert(0, generate(n_synthetic, seed=1000 + fold))
    return WaferDataset.concat(parts, name="dev+synthetic"), dev.subset(te)


def scores(model, test) -> dict:
    from waferscope.metrics.classification import macro_f1, weighted_f1

    pred = model.predict(test)
    return {"macro_f1": macro_f1(test.labels, pred), "weighted_f1": weighted_f1(test.labels, pred),
            "pred": [str(p) for p in pred]}


def cell_key(c: dict) -> str:
    key = (f"{c['arch']}_w{c['width']}_a{c['alpha']:g}_T{c['temperature']:g}_e{c['epochs']}"
           f"_tr{c['transfer']}_lr{c['lr']:g}")
    if c.get("patience") is not None:
        key += f"_p{c['patience']}"
    if c.get("head"):
        key += f"_h{c['head']}"
    if c.get("val_fraction") is not None:
        key += f"_v{c['val_fraction']:g}"
    return key


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def teacher_for(fold: int, train, test, work: Path):
    from waferscope.base import load_run
    from waferscope.models.classifiers.cnn import CompactCNNClassifier
    from waferscope.models.classifiers.distill import count_parameters

    tdir = work / f"teacher_f{fold}"
    if (tdir / "model.json").exists():
        teacher = load_run(tdir, kind="classifier")
    else:
        t0 = time.perf_counter()
        teacher = CompactCNNClassifier(**TEACHER, seed=fold, progress=True).fit(train)
        teacher.save(tdir)
        print(f"fold {fold}: teacher trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    info_path = work / f"teacher_f{fold}.json"
    if not info_path.exists():
        write_json(info_path, {"fold": fold, "params": count_parameters(teacher.network_), **scores(teacher, test),
                               "y_true": test.labels.astype(str).tolist()})
    return teacher, json.loads(info_path.read_text())


def load_results(work: Path) -> tuple[dict, list[dict]]:
    teachers = {}
    for p in sorted(work.glob("teacher_f*.json")):
        t = json.loads(p.read_text())
        teachers[t["fold"]] = t
    rows = [json.loads(p.read_text()) for p in sorted((work / "cells").glob("*.json"))]
    return teachers, rows


def variant(c: dict) -> str:
    """What else distinguishes a cell: early stopping, the wide head, teacher init, noisy copies, no val split
    (the last three from cells cached before those kd_student options were removed)."""
    notes = ["full schedule" if c.get("patience") else "early stop (patience 15)"]
    if c.get("head"):
        notes.append(f"1×1 head {c['head']}")
    if c.get("init"):
        notes.append("init from teacher")
    if c.get("noisy"):
        notes.append(f"{c['noisy']} noisy copies")
    if c.get("val_fraction") is not None:
        notes.append(f"val fraction {c['val_fraction']:g}")
    return ", ".join(notes)


def agreement(a: list, b: list) -> float:
    return float(np.mean(np.asarray(a) == np.asarray(b)))


def report(work: Path, png: Path | None) -> None:
    teachers, rows = load_results(work)
    cells: dict[str, list] = {}
    for r in rows:
        cells.setdefault(r["key"], []).append(r)
    t_params = next(iter(teachers.values()))["params"] if teachers else 0
    print(f"Teacher `cnn` (bundled configuration), {t_params:,} parameters; macro-F1 per fold: "
          + ", ".join(f"{k}: {t['macro_f1']:.3f}" for k, t in sorted(teachers.items())))
    print()
    print("| arch | width | variant | params (% of teacher) | α | T | epochs | transfer maps | folds | student macro-F1 | "
          "teacher macro-F1 | retention mean | retention per fold | agreement with teacher |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    summary = []
    for key, rs in sorted(cells.items(), key=lambda kv: (kv[1][0]["arch"], kv[1][0]["width"], kv[0])):
        rs = sorted(rs, key=lambda r: r["fold"])
        c = rs[0]
        ret = [100 * r["macro_f1"] / teachers[r["fold"]]["macro_f1"] for r in rs]
        agr = [agreement(r["pred"], teachers[r["fold"]]["pred"]) for r in rs]
        s_f1 = np.mean([r["macro_f1"] for r in rs])
        t_f1 = np.mean([teachers[r["fold"]]["macro_f1"] for r in rs])
        summary.append((key, c, rs, ret))
        print(f"| {c['arch']} | {c['width']} | {variant(c)} | {c['student_params']:,} ({100 * c['student_params'] / t_params:.1f} %) | "
              f"{c['alpha']:g} | {c['temperature']:g} | {c['epochs']} | {c['transfer']:,} | "
              f"{','.join(str(r['fold']) for r in rs)} | {s_f1:.3f} | {t_f1:.3f} | **{np.mean(ret):.1f}** | "
              f"{' / '.join(f'{x:.1f}' for x in ret)} | {100 * np.mean(agr):.1f} % |")
    if png is not None and summary:
        figure(summary, teachers, png)


def figure(summary, teachers, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.42 * len(summary) + 1.2), dpi=110)
    for i, (key, c, rs, ret) in enumerate(summary):
        ax.scatter(ret, [i] * len(ret), s=14, color="0.6", zorder=2)
        ax.scatter([np.mean(ret)], [i], s=50, marker="D", color="C0" if np.mean(ret) >= 98 else "C3", zorder=3)
    ax.axvline(98, color="k", lw=0.8, ls="--")
    ax.axvline(100, color="0.7", lw=0.6)
    ax.set_yticks(range(len(summary)), [
        f"{c['arch']} w{c['width']} ({c['student_params']:,} p), α {c['alpha']:g}, T {c['temperature']:g}, "
        f"{c['epochs']} ep, transfer {c['transfer']:,}; {variant(c)}" for _, c, _, _ in summary], fontsize=7)
    ax.set_xlabel("student macro-F1 / teacher macro-F1 (%) — diamond: mean over folds, dots: folds")
    ax.set_title("kd_student retention on held-out real dev folds (teacher: bundled cnn config)", fontsize=9)
    ax.invert_yaxis()
    png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{png.stem}.", suffix=".png", dir=png.parent)
    os.close(fd)
    fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, png)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", default=DEV)
    ap.add_argument("--folds", type=int, nargs="+", default=list(range(N_FOLDS)))
    ap.add_argument("--synthetic", type=int, default=2000, help="labelled synthetic maps added to training")
    ap.add_argument("--arch", nargs="+", default=["cnn"], choices=["cnn", "patchify", "separable"])
    ap.add_argument("--widths", type=int, nargs="+", default=[7])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.9])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[4.0])
    ap.add_argument("--epochs", type=int, nargs="+", default=[60], help="student epochs")
    ap.add_argument("--transfer", type=int, nargs="+", default=[8000],
                    help="unlabelled synthetic maps in the transfer set (soft term only)")
    ap.add_argument("--lr", type=float, nargs="+", default=[4e-3])
    ap.add_argument("--patience", type=int, default=None, help="student early-stopping patience (default: the model's)")
    ap.add_argument("--heads", type=int, nargs="+", default=[0],
                    help="1×1 expansion channels before the global pool (patchify arch; 0 = none)")
    ap.add_argument("--val-fraction", type=float, default=None,
                    help="student validation split (default: the model's; 0 = train on all, keep the last epoch)")
    ap.add_argument("--work", default="runs/kd_sweep5")
    ap.add_argument("--png", default=None, help="write the retention figure here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    work = Path(args.work)
    if args.report_only:
        report(work, Path(args.png) if args.png else None)
        return 0

    import itertools

    import torch

    from waferscope.data.synthetic import generate
    from waferscope.models.classifiers.distill import DistilledStudentClassifier

    torch.set_num_threads(args.threads)
    grid = [dict(arch=a, width=w, alpha=al, temperature=(t if al > 0 else 1.0), epochs=e, transfer=n, lr=lr,
                 patience=args.patience, val_fraction=args.val_fraction, head=h)
            for a, w, al, t, e, n, lr, h in itertools.product(args.arch, args.widths, args.alphas, args.temperatures,
                                                              args.epochs, args.transfer, args.lr, args.heads)]
    grid = list({cell_key(c): c for c in grid}.values())  # α = 0 ignores T: one cell
    for fold in args.folds:
        train, test = fold_data(args.dev, fold, args.synthetic)
        teacher, t_info = teacher_for(fold, train, test, work)
        print(f"fold {fold}: teacher macro-F1 {t_info['macro_f1']:.3f}", file=sys.stderr)
        for c in grid:
            out = work / "cells" / f"{cell_key(c)}_f{fold}.json"
            if out.exists():
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            extra = {k: c[k] for k in ("patience", "val_fraction") if c[k] is not None}
            student = DistilledStudentClassifier(
                arch=c["arch"], width=c["width"], alpha=c["alpha"], temperature=c["temperature"], epochs=c["epochs"],
                lr=c["lr"], head=c["head"], transfer_ratio=None, seed=fold, progress=False, **extra)
            # unlabelled synthetic transfer maps, from a seed the training data do not use
            transfer = generate(c["transfer"], seed=10_000 + fold) if c["transfer"] else None
            student.fit(train, teacher=teacher, transfer=transfer)
            row = {"key": cell_key(c), **c, "fold": fold, "student_params": student.n_parameters(),
                   "teacher_params": t_info["params"], **scores(student, test),
                   "best_epoch": student.best_epoch_, "epochs_run": len(student.history_),
                   "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}
            row["retention"] = 100 * row["macro_f1"] / t_info["macro_f1"]
            write_json(out, row)
            print(f"fold {fold} {cell_key(c)}: macro-F1 {row['macro_f1']:.3f} (teacher {t_info['macro_f1']:.3f}) "
                  f"retention {row['retention']:.1f} %, best epoch {row['best_epoch']}/{row['epochs_run']}, "
                  f"{row['seconds']} s", file=sys.stderr)
    report(work, Path(args.png) if args.png else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
