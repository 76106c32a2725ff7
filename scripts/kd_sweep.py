"""Knowledge-distillation sweep: α × temperature × student width, with and without a transfer set.

Why the experiment log's student fell to weighted-F1 0.61 against its teacher's 0.84, and what closes
the gap. The protocol is deliberately small so the whole sweep runs in about 15 minutes on 2 cores:

- ONE fold (fold 0 of the seeded stratified 5-fold split of the 2,892 real dev maps): the teacher and
  every student train on the other 4/5 of dev + ``--synthetic`` labelled synthetic maps and are
  scored on that held-out fifth of REAL maps (a 5-fold mean is for the final comparison, not the sweep);
- one teacher (``cnn``, trained once and cached in ``--work``); its logits for all 8 rotations/flips of
  every training and transfer map are computed once per student (cheap) and looked up;
- transfer set: ``--transfer`` synthetic maps from another seed with their labels removed (the
  stand-in for WM-811K's 78 % unlabelled maps), distilled through the teacher only;
- a short student schedule (``--epochs``).

    python scripts/kd_sweep.py                      # the full grid, writes docs/img/kd_sweep.png
    python scripts/kd_sweep.py --widths 4 --alphas 0.9 --temperatures 4   # one cell

Prints a markdown table; writes ``<work>/kd_sweep.json`` and the heat map (``--png``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)


def fold_data(dev_path: str, n_synthetic: int, n_transfer: int, fold: int = 0, seed: int = 0):
    """(train = 4/5 dev + synthetic, test = 1/5 dev, transfer = unlabelled synthetic)."""
    from waferscope.data import WaferDataset, load
    from waferscope.data.preprocess import stratified_kfold
    from waferscope.data.synthetic import generate

    dev = load(dev_path)
    tr, te = list(stratified_kfold(dev.labels, 5, seed))[fold]
    parts = [dev.subset(tr)]
    if n_synthetic:
        parts.append(generate(n_synthetic, seed=seed))
    train = WaferDataset.concat(parts, name="dev+synthetic")
    transfer = None
    if n_transfer:
        transfer = generate(n_transfer, seed=seed + 1000)
        transfer.labels[:] = ""  # distilled through the teacher only
    return train, dev.subset(te), transfer


def scores(model, test) -> dict:
    from waferscope.metrics.classification import macro_f1, weighted_f1

    pred = model.predict(test)
    return {"macro_f1": macro_f1(test.labels, pred), "weighted_f1": weighted_f1(test.labels, pred)}


def heat_map(rows: list[dict], teacher: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({r["width"] for r in rows})
    alphas = sorted({r["alpha"] for r in rows})
    temps = sorted({r["temperature"] for r in rows})
    fig, axes = plt.subplots(1, len(widths), figsize=(3.3 * len(widths) + 0.8, 3.4), dpi=110, squeeze=False)
    for ax, w in zip(axes[0], widths):
        grid = np.full((len(alphas), len(temps) + 1), np.nan)
        for r in rows:
            if r["width"] != w:
                continue
            col = len(temps) if not r["transfer"] else temps.index(r["temperature"])
            if r["alpha"] == 0 and r["transfer"]:  # α = 0 is plain CE: T plays no part, fill the row
                grid[alphas.index(0.0), :len(temps)] = r["retained"]
            elif r["transfer"] or col == len(temps):
                grid[alphas.index(r["alpha"]), col] = r["retained"]
        im = ax.imshow(grid, cmap="RdYlGn", vmin=80, vmax=102, aspect="auto")
        for i, j in itertools.product(range(grid.shape[0]), range(grid.shape[1])):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.0f}", ha="center", va="center", fontsize=8)
        params = next(r["student_params"] for r in rows if r["width"] == w)
        ax.set_title(f"width {w}: {params:,} params ({100 * params / teacher['params']:.1f} %)", fontsize=9)
        ax.set_xticks(range(len(temps) + 1), [f"T={t:g}" for t in temps] + ["no\ntransfer"], fontsize=8)
        ax.set_yticks(range(len(alphas)), [f"α={a:g}" for a in alphas], fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="% of teacher macro-F1")
    fig.suptitle(f"KD student / teacher macro-F1 (teacher {teacher['macro_f1']:.3f}, "
                 f"{teacher['params']:,} params), held-out real dev fold", fontsize=9, y=1.04)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, path)


def report(t_info: dict, rows: list[dict], png: Path) -> None:
    rows = sorted(rows, key=lambda r: (r["width"], not r["transfer"], r["alpha"], r["temperature"]))
    heat_map(rows, t_info, png)
    print("| width | params (% of teacher) | α | T | transfer set | macro-F1 | weighted-F1 | % of teacher macro-F1 |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| teacher `cnn` | {t_info['params']:,} | | | | {t_info['macro_f1']:.3f} | {t_info['weighted_f1']:.3f} | 100 |")
    for r in rows:
        print(f"| {r['width']} | {r['student_params']:,} ({100 * r['student_params'] / t_info['params']:.1f} %) | "
              f"{r['alpha']:g} | {r['temperature']:g} | {'yes' if r['transfer'] else 'no'} | {r['macro_f1']:.3f} | "
              f"{r['weighted_f1']:.3f} | {r['retained']:.1f} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", default=DEV)
    ap.add_argument("--synthetic", type=int, default=2000, help="labelled synthetic maps added to training")
    ap.add_argument("--transfer", type=int, default=2000, help="unlabelled synthetic maps in the transfer set")
    ap.add_argument("--teacher-epochs", type=int, default=30)
    ap.add_argument("--epochs", type=int, default=15, help="student epochs")
    ap.add_argument("--widths", type=int, nargs="+", default=[3, 5, 7])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 0.9, 1.0])
    ap.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 4.0, 8.0])
    ap.add_argument("--no-transfer-at", type=float, nargs=2, default=[0.9, 4.0], metavar=("ALPHA", "T"),
                    help="the (α, T) also run without the transfer set, per width")
    ap.add_argument("--work", default="runs/kd_sweep")
    ap.add_argument("--png", default="docs/img/kd_sweep.png")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="only merge the kd_sweep.json of parallel runs (e.g. one per width) into the table + PNG")
    args = ap.parse_args(argv)
    if args.merge:
        docs = [json.loads(Path(p).read_text()) for p in args.merge]
        report(docs[0]["teacher"], [r for d in docs for r in d["rows"]], Path(args.png))
        return 0

    import torch

    from waferscope.base import load_run
    from waferscope.models.classifiers.cnn import CompactCNNClassifier
    from waferscope.models.classifiers.distill import DistilledStudentClassifier, count_parameters

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train, test, transfer = fold_data(args.dev, args.synthetic, args.transfer)
    teacher_dir = work / f"teacher_e{args.teacher_epochs}_s{args.synthetic}"
    if (teacher_dir / "model.json").exists():
        teacher = load_run(teacher_dir, kind="classifier")
    else:
        t0 = time.perf_counter()
        teacher = CompactCNNClassifier(epochs=args.teacher_epochs, progress=True).fit(train)
        teacher.save(teacher_dir)
        print(f"teacher trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    t_info = {"params": count_parameters(teacher.network_), **scores(teacher, test)}
    print(f"teacher: {t_info}", file=sys.stderr)

    cells = []
    for w in args.widths:
        for a in args.alphas:
            for t in (args.temperatures if a > 0 else [1.0]):
                cells.append((w, a, t, True))
        cells.append((w, args.no_transfer_at[0], args.no_transfer_at[1], False))
    rows = []
    done_json = work / "kd_sweep.json"
    if done_json.exists():  # resume: keep the cells already measured with the same settings
        prev = json.loads(done_json.read_text())
        same = {k: v for k, v in prev.get("args", {}).items() if k not in ("widths", "alphas", "temperatures")}
        if same == {k: v for k, v in vars(args).items() if k not in ("widths", "alphas", "temperatures")}:
            rows = prev["rows"]
    done = {(r["width"], r["alpha"], r["temperature"], r["transfer"]) for r in rows}
    for w, a, t, use_transfer in cells:
        if (w, a, t, use_transfer) in done:
            continue
        t0 = time.perf_counter()
        student = DistilledStudentClassifier(width=w, alpha=a, temperature=t, epochs=args.epochs,
                                             use_transfer=use_transfer, progress=False)
        student.fit(train, teacher=teacher, transfer=transfer)
        row = {"width": w, "alpha": a, "temperature": t, "transfer": use_transfer,
               "student_params": student.n_parameters(), **scores(student, test),
               "seconds": round(time.perf_counter() - t0, 1)}
        row["retained"] = 100 * row["macro_f1"] / t_info["macro_f1"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        (work / "kd_sweep.json").write_text(json.dumps({"teacher": t_info, "rows": rows, "args": vars(args)}, indent=1))
    report(t_info, rows, Path(args.png))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
