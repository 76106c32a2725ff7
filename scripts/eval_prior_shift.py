"""How the classifiers of the 5-fold dev protocol fare on other class mixes, with and without ``--prior``.

The dev maps are nearly balanced (500 maps in most classes); a fab's stream is not (85 % of the
labelled WM-811K maps are ``none``). This script takes the held-out predictions that
``scripts/eval_classifiers.py`` cached per fold (every dev map predicted by a model that never saw it)
and re-draws them in other class mixes: for each mix, ``--draws`` samples of ``--size`` maps, each
class drawn with replacement from that class's held-out predictions in the mix's proportions. Each
draw is scored three ways (``waferscope.models.classifiers.prior``):

* ``balanced`` — the model's probabilities as they are (what ``classify predict`` does by default);
* ``given`` — moved to the mix's true class proportions (``--prior wm811k`` for the WM-811K mix);
* ``estimate`` — moved to the mix estimated by EM from the draw's own probabilities, no labels
  (``--prior estimate``).

Mixes: ``dev`` (the dev set's own), ``wm811k`` (the labelled WM-811K class counts), ``defects``
(the same without ``none``, like LSWMD_sample.pkl) and ``half-none`` (50 % none, the defect classes
equal).

    python scripts/eval_prior_shift.py --methods gbm --work results/classification --out results/prior_shift.md

Resampling the same 2,892 predictions cannot add information the dev set lacks (a class of 30 maps
stays 30 maps, repeated); it shows what the class mix does to each class's precision, and how much
of that the prior correction takes back.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from waferscope.models.classifiers.prior import WM811K_LABELLED_COUNTS, adjust_to_prior, estimate_prior


def pooled_predictions(work: Path, method: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(classes, true labels, probabilities) of the 5 cached test folds of ``method``."""
    folds = sorted(work.glob(f"{method}_fold[0-9].json"))
    if not folds:
        raise SystemExit(f"error: {work}: no cached folds for {method!r}; run scripts/eval_classifiers.py first")
    recs = [json.loads(p.read_text()) for p in folds]
    classes = recs[0]["classes"]
    y = np.concatenate([np.asarray(r["y_true"], dtype=str) for r in recs])
    proba = np.vstack([np.asarray(r["proba"], np.float64) for r in recs])
    return classes, y, proba


def per_class_f1(truth: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """F1 of each class 0..n-1 from integer labels (scikit-learn's f1_score is the slow part of
    thousands of scorings; this is the same arithmetic, 0 where a class has no support and no
    prediction)."""
    cm = np.bincount(truth * n + pred, minlength=n * n).reshape(n, n)
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    return np.divide(2 * tp, denom, out=np.zeros(n), where=denom > 0)


def mixes(classes: list[str], y: np.ndarray) -> dict[str, np.ndarray]:
    dev = np.array([np.mean(y == c) for c in classes])
    wm = np.array([WM811K_LABELLED_COUNTS[c] for c in classes], np.float64)
    defects = np.where(np.array(classes) == "none", 0.0, wm)
    half = np.where(np.array(classes) == "none", 0.5, 0.5 / (len(classes) - 1))
    return {"dev": dev, "wm811k": wm / wm.sum(), "defects": defects / defects.sum(), "half-none": half}


def score_mix(classes, y, proba, mix, draws: int, size: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    names = np.asarray(classes)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index[c] for c in y])
    base = np.full(len(classes), 1.0 / len(classes))
    present = mix > 0
    results = {"balanced": [], "given": [], "estimate": []}
    per_class = {k: [] for k in results}
    estimates = []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), size=max(1, int(round(share * size))))
                              for c, share in zip(classes, mix) if share > 0])
        p, truth = proba[idx], codes[idx]
        estimated, _ = estimate_prior(p, base)
        estimates.append(estimated)
        for name, target in (("balanced", base), ("given", mix), ("estimate", estimated)):
            f1 = per_class_f1(truth, adjust_to_prior(p, base, target).argmax(1), len(classes))[present]
            results[name].append(f1.mean())
            per_class[name].append(dict(zip(names[present], f1)))
    out = {name: {"macro_f1_mean": float(np.mean(v)), "macro_f1_sd": float(np.std(v)),
                  "per_class": {c: float(np.mean([d[c] for d in per_class[name]])) for c in per_class[name][0]}}
           for name, v in results.items()}
    out["estimated_mix"] = dict(zip(classes, np.mean(estimates, 0).round(4).tolist()))
    out["true_mix"] = dict(zip(classes, mix.round(4).tolist()))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["gbm"])
    ap.add_argument("--work", type=Path, default=Path("results/classification"))
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--size", type=int, default=20_000, help="maps per draw")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="markdown table (JSON beside it)")
    args = ap.parse_args(argv)
    report, lines = {}, ["| method | class mix | balanced (default) | `--prior` given mix | `--prior estimate` |",
                         "|---|---|---:|---:|---:|"]
    for method in args.methods:
        classes, y, proba = pooled_predictions(args.work, method)
        report[method] = {}
        for mix_name, mix in mixes(classes, y).items():
            res = score_mix(classes, y, proba, mix, args.draws, args.size, args.seed)
            report[method][mix_name] = res
            cells = [f"{res[k]['macro_f1_mean']:.3f} ± {res[k]['macro_f1_sd']:.3f}"
                     for k in ("balanced", "given", "estimate")]
            lines.append(f"| {method} | {mix_name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + (f"\n\nmacro-F1 over the classes in the mix, mean ± sd of {args.draws} draws of "
                               f"{args.size:,} maps (seed {args.seed}) from the pooled held-out dev predictions.\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        for path, body in ((args.out, text), (args.out.with_suffix(".json"), json.dumps(report, indent=1))):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                fh.write(body)
            os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
