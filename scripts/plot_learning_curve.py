"""Plot a learning curve from ``scripts/eval_classifiers.py`` runs made with ``--train-fraction``.

Each ``--work`` folder holds one fraction's cached folds (its records carry the fraction); the plot
shows pooled macro-F1 and the per-class F1 of ``--method`` against the number of real training maps
per fold, on a log-2 axis::

    python scripts/plot_learning_curve.py --method gbm --work results/classification_lc0.125 \\
        results/classification_lc0.25 results/classification_lc0.5 results/classification \\
        --out docs/img/classification_learning_curve.png
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from waferscope.data.classes import CLASSES
from waferscope.metrics.classification import classification_report_dict


def curve_point(work: Path, method: str) -> tuple[float, dict]:
    """(mean real training maps per fold, pooled report) of one fraction's cached folds."""
    folds = sorted(work.glob(f"{method}_fold[0-9].json"))
    if not folds:
        raise SystemExit(f"error: {work}: no cached folds for {method!r}")
    recs = [json.loads(p.read_text()) for p in folds]
    n_real = float(np.mean([r["n_train"] - r["synthetic"] for r in recs]))
    y_true = sum((r["y_true"] for r in recs), [])
    y_pred = sum((r["y_pred"] for r in recs), [])
    return n_real, classification_report_dict(y_true, y_pred, CLASSES)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="gbm")
    ap.add_argument("--work", type=Path, nargs="+", required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(curve_point(w, args.method) for w in args.work)
    x = [n for n, _ in points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in CLASSES:
        ax.plot(x, [rep["per_class"][c]["f1"] for _, rep in points], lw=1, alpha=0.6, marker=".", label=c)
    ax.plot(x, [rep["macro_f1"] for _, rep in points], lw=3, color="black", marker="o", label="macro-F1")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{n:,.0f}" for n in x])
    ax.set_xlabel("real labelled training maps per fold (+ 1,500 synthetic)")
    ax.set_ylabel("F1 on the held-out dev folds")
    ax.set_title(f"{args.method}: learning curve on the 2,892 WM-811K dev maps (5 folds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, prefix=args.out.stem, suffix=".png")
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)
    for n, rep in points:
        print(f"{n:8.0f} maps  macro-F1 {rep['macro_f1']:.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
