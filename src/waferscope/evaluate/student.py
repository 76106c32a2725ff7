"""Does a distilled student keep its teacher's quality? The lot-grouped protocol, fold by fold.

For every lot fold of :mod:`waferscope.evaluate.classification` (dev + dev2 pooled, every lot on one
side, each fold also trained on synthetic maps), the teacher method is fitted once on the fold's
training set and kept (``WORK/models/<teacher>_fold<k>``); the student method is fitted on the very
same training set with that fitted teacher (``fit(train, teacher=...)``) and both are scored on the
same held-out lots. Retention = student macro-F1 / teacher macro-F1 on each fold, their mean, and
the ratio of the two pooled macro-F1s (every map tested once). Parameter counts come from the fitted
networks; wafers/s is each fold's ``predict_proba`` on its test maps (a rough figure: the speed
target is measured by ``benchmarks/bench_student.py``).

Both methods' records are cached like ``evaluate classifiers``' (the teacher's cache IS the plain
protocol's, so ``evaluate classifiers TEACHER`` reuses it); the student's cache is named
``<student>@<teacher>_fold<k>.json`` and records both methods' resolved parameters, so a change in
either refits it.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np

from waferscope.evaluate.classification import (
    N_FOLDS, cached_record, fit_and_predict, fold_cache, fold_train_test, lot_folds, lot_kfold_report,
    method_params, parse_method, pool_sets, run_lot_fold, write_record)


def check_student(method: str) -> None:
    """Refuse a student method whose ``fit`` takes no ``teacher`` (it could not distil)."""
    from waferscope import registry
    from waferscope.errors import ConfigError

    name, _ = parse_method(method)
    if "teacher" not in inspect.signature(registry.get(name, "classifier").fit).parameters:
        distillers = [n for n in registry.available("classifier")
                      if "teacher" in inspect.signature(registry.get(n, "classifier").fit).parameters]
        raise ConfigError(f"{name} does not learn from a teacher (its fit takes no teacher); "
                          f"students: {', '.join(distillers)}")


def teacher_dir(work: Path, teacher: str, fold: int) -> Path:
    """Return the folder of the teacher model fitted on fold ``fold``."""
    return Path(work) / "models" / fold_cache(work, teacher, fold).stem


def student_cache(work: Path, teacher: str, student: str, fold: int, n_unlabelled: int = 0) -> Path:
    """Return the cache file of a student distilled from ``teacher`` on fold ``fold``."""
    tag = f"+{n_unlabelled}unlabelled" if n_unlabelled else ""
    return fold_cache(work, f"{student}@{teacher}{tag}", fold)


def run_student_fold(teacher: str, student: str, fold: int, pooled, folds, synthetic: int, work: Path,
                     seed: int = 0, unlabelled=None) -> tuple[dict, dict]:
    """(teacher record, student record) of one lot fold, fitted or read from the caches.

    ``unlabelled`` maps (a WaferDataset) join the student's training set only, as transfer maps.
    """
    from waferscope.base import load_run
    from waferscope.data import WaferDataset

    work = Path(work)
    tdir = teacher_dir(work, teacher, fold)
    t_rec = run_lot_fold(teacher, fold, pooled, folds, synthetic, work, seed=seed, save_to=tdir)
    n_unlabelled = 0 if unlabelled is None else len(unlabelled)
    cache = student_cache(work, teacher, student, fold, n_unlabelled)
    params = {"student": method_params(student, seed), "teacher": t_rec["params"], "unlabelled": n_unlabelled}
    s_rec = cached_record(cache, params, synthetic)
    if s_rec is None:
        train, test = fold_train_test(pooled, folds, fold, synthetic)
        if n_unlabelled:
            train = WaferDataset.concat([train, unlabelled], name=f"{train.name}+{n_unlabelled} unlabelled")
        s_rec = fit_and_predict(student, train, test, seed=seed,
                                fit_kwargs={"teacher": load_run(tdir, kind="classifier")})
        s_rec.update(params=params, teacher=teacher, fold=fold, synthetic=synthetic, fraction=1.0,
                     test_index=folds[fold][1].tolist())
        write_record(cache, s_rec)
    return t_rec, s_rec


def student_retention(teacher: str, student: str, sets: dict, *, folds=range(N_FOLDS), synthetic: int = 1500,
                      work: str | Path = "results/lot_kfold", seed: int = 0, progress=None,
                      unlabelled=None) -> dict:
    """Return the student check on the lot protocol.

    Per-fold and pooled macro-F1 of both, retention, parameter counts and their ratio, agreement
    with the teacher, test-fold wafers/s. ``unlabelled`` (a WaferDataset of maps without labels)
    joins every fold's student training set.
    """
    from waferscope.errors import DataError

    parse_method(teacher)
    if unlabelled is not None and unlabelled.is_labelled.any():
        raise DataError(f"{int(unlabelled.is_labelled.sum())} maps of the transfer set carry labels; "
                        "it must hold unlabelled maps only", unlabelled.name)
    check_student(student)
    pooled, set_of, groups = pool_sets(sets)
    all_folds = lot_folds(pooled.labels, groups)
    pairs = []
    for k in folds:
        if progress:
            progress(f"{teacher} → {student} fold {k}")
        pairs.append(run_student_fold(teacher, student, k, pooled, all_folds, synthetic, Path(work), seed=seed,
                                      unlabelled=unlabelled))
    t_recs, s_recs = [p[0] for p in pairs], [p[1] for p in pairs]
    t_rep, s_rep = lot_kfold_report(t_recs, pooled, set_of), lot_kfold_report(s_recs, pooled, set_of)
    ratio = lambda s, t: 100 * s / t if t > 0 else float("nan")  # noqa: E731  (a teacher that scores 0 keeps nothing to retain)
    retention = [ratio(s, t) for s, t in zip(s_rep["per_fold"], t_rep["per_fold"])]
    agreement = [float(np.mean(np.argmax(s["proba"], 1) == np.argmax(t["proba"], 1))) for t, s in pairs]
    t_params, s_params = t_recs[0].get("n_parameters"), s_recs[0].get("n_parameters")
    return {"teacher": teacher, "student": student, "unlabelled": 0 if unlabelled is None else len(unlabelled),
            "folds": [r["fold"] for r in t_recs],
            "teacher_report": t_rep, "student_report": s_rep,
            "retention_per_fold": retention, "retention_mean": float(np.mean(retention)),
            "retention_pooled": ratio(s_rep["macro_f1"], t_rep["macro_f1"]),
            "agreement": float(np.mean(agreement)),
            "teacher_parameters": t_params, "student_parameters": s_params,
            "parameter_ratio": (100 * s_params / t_params) if t_params and s_params else None}


def plot_retention(report: dict, out: str | Path) -> None:
    """Teacher and student macro-F1 per fold (bars) with the retention above each pair, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from waferscope.utils import atomic_path

    folds = report["folds"]
    x = np.arange(len(folds))
    t, s = report["teacher_report"]["per_fold"], report["student_report"]["per_fold"]
    fig, ax = plt.subplots(figsize=(1.3 * len(folds) + 2.5, 4))
    ax.bar(x - 0.2, t, 0.4, label=f"teacher {report['teacher']}", color="0.6")
    ax.bar(x + 0.2, s, 0.4, label=f"student {report['student']}", color="C0")
    for i, r in enumerate(report["retention_per_fold"]):
        ax.text(x[i], max(t[i], s[i]) + 0.01, f"{r:.1f} %", ha="center", fontsize=8,
                color="C3" if r < 98 else "black")
    ax.set_xticks(x, [f"fold {k}" for k in folds])
    ax.set_ylim(min(t + s) - 0.1, 1.0)
    ax.set_ylabel("macro-F1 on the held-out lots")
    ratio = report["parameter_ratio"]
    ax.set_title(f"student keeps {report['retention_mean']:.1f} % of its teacher (mean over folds)"
                 + (f" at {ratio:.1f} % of its parameters" if ratio else ""), fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
