"""Classification protocols on real wafers.

- :func:`heldout` — classifiers on the real maps of ``LSWMD_sample.pkl`` that no bundled
model trained on (the sample's maps minus every map of the labelled sets they were trained on).
:func:`lot_kfold` — the lot-grouped k-fold protocol on the real labelled sets (dev + dev2 pooled,
folds that keep every lot on one side, each fold also trained on synthetic maps), with per-fold
caches so runs can be split, resumed and ensembled without refitting.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterable

import numpy as np


def map_key(wafer: np.ndarray) -> bytes:
    """Identity of a die grid (shape + die states), to find the same map in two files."""
    return bytes(np.asarray(wafer.shape, np.int32)) + np.ascontiguousarray(wafer).tobytes()


def unseen_subset(sample, seen_sets: Iterable):
    """Return the maps of ``sample`` that occur in none of ``seen_sets`` (WaferDatasets)."""
    seen = {map_key(m) for ds in seen_sets for m in ds.maps}
    keep = np.flatnonzero([map_key(m) not in seen for m in sample.maps])
    return sample.subset(keep)


def score_predictions(y_true, y_pred) -> dict:
    """Accuracy, macro-F1 over the classes present in ``y_true``, and per-class F1."""
    from sklearn.metrics import accuracy_score, f1_score

    y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
    classes = sorted(set(y_true))
    per = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)
    return {"n": int(len(y_true)), "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(per.mean()), "per_class_f1": {c: float(v) for c, v in zip(classes, per)}}


def heldout(models: dict[str, Callable], sample, seen_sets: Iterable, prior: str = "balanced",
            sample_name: str = "the held-out sample") -> list[dict]:
    """Score each model (name → zero-argument loader) on the maps of ``sample`` not in ``seen_sets``.

    ``prior`` is the class mix the probabilities are moved to before the arg-max, as
    ``classify predict --prior`` (``balanced`` leaves them as they are).
    """
    from waferscope.errors import DataError
    from waferscope.models.classifiers.prior import apply_prior

    held = unseen_subset(sample, seen_sets)
    if len(held) == 0:
        raise DataError("every map of the held-out sample is in the training sets; nothing to evaluate",
                        sample_name)
    if held.labels is None:
        raise DataError("the held-out sample has no labels", sample_name)
    y = held.labels.astype(str)
    rows = []
    for name, loader in models.items():
        model = loader()
        proba, _ = apply_prior(model, model.predict_proba(held), prior)
        pred = np.asarray(model.classes_)[proba.argmax(1)]
        rows.append({"model": name, "prior": prior, **score_predictions(y, pred)})
    return rows


def load_heldout_sample(sample_path: str | Path, seen_paths: Iterable[str | Path]):
    """(sample, [seen sets]) read from files; the pickled sample is read with the allow-listed unpickler."""
    from waferscope.data import load

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy-pandas shim's notes
        sample = load(str(sample_path))
    return sample, [load(str(p)) for p in seen_paths]


# ---- lot-grouped k-fold on the real labelled sets ------------------------------------------------
N_FOLDS = 5


def pool_sets(sets: dict):
    """Pool named labelled sets (name → WaferDataset) into one.

    With set-qualified lot groups (``"dev:LOT"``) so that lots of different files never merge,
    and the set name of every map.
    """
    from waferscope.data import WaferDataset
    from waferscope.errors import DataError

    for name, ds in sets.items():
        if ds.labels is None or (ds.labels.astype(str) == "").any():
            raise DataError("the lot-grouped protocol needs labelled maps; some have no label", name)
    pooled = WaferDataset.concat(list(sets.values()), name="+".join(sets))
    set_of = np.concatenate([[name] * len(ds) for name, ds in sets.items()]).astype(str)
    lots = np.concatenate([ds.meta["lot"].astype(str).to_numpy() for ds in sets.values()])
    groups = np.char.add(np.char.add(set_of, ":"), lots.astype(str))
    return pooled, set_of, groups


def lot_folds(labels, groups, n_splits: int = N_FOLDS, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return the protocol's folds: stratified by class, every lot on one side (seeded)."""
    from waferscope.data.preprocess import grouped_stratified_kfold

    return list(grouped_stratified_kfold(labels, groups, n_splits, seed=seed))


def parse_method(method: str) -> tuple[str, dict]:
    """``name`` or ``name:param=value,param=value`` → (registry name, constructor overrides)."""
    from waferscope import registry

    return registry.parse_spec(method, "classifier")


def lot_subsample(train_idx: np.ndarray, groups, fraction: float, seed: int) -> np.ndarray:
    """Return a seeded part of ``train_idx`` made of WHOLE lots: ``round(fraction * n_lots)`` of its lots (at least one)."""
    from waferscope.errors import ConfigError

    if not 0 < fraction <= 1:
        raise ConfigError(f"a training fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return train_idx
    lots = np.unique(np.asarray(groups)[train_idx])
    keep = np.random.default_rng(seed).permutation(lots)[:max(1, int(round(fraction * len(lots))))]
    return train_idx[np.isin(np.asarray(groups)[train_idx], keep)]


def fold_cache(work: Path, method: str, fold: int, fraction: float = 1.0) -> Path:
    """Return the cache file of one (method, training fraction, fold); fraction 1 is the plain protocol's."""
    tag = "" if fraction == 1 else f"_frac{fraction:g}"
    return Path(work) / f"{method_file_stem(method)}{tag}_fold{fold}.json"


def method_file_stem(method: str) -> str:
    """Return a method spec as a file name (a run-directory teacher may hold slashes)."""
    return method.replace("/", "_")


# Constructor parameters that change how a model reports progress or how many cores it uses, not
# what it learns: left out of a cache's identity.
NOT_RESULT_PARAMS = ("progress", "n_jobs")
# classifier params renamed by the one vocabulary (the classes' renamed_params; no classifier takes an old name)
_RENAMED_CLASSIFIER_PARAMS = {"size": "input_size", "alpha": "distil_alpha", "temperature": "distil_temperature"}


def resolved_params(clf) -> dict:
    """``clf``'s full constructor parameters (defaults included) as JSON values, minus NOT_RESULT_PARAMS."""
    from waferscope.base import _jsonable

    return {k: _jsonable(v) for k, v in sorted(clf.get_params().items()) if k not in NOT_RESULT_PARAMS}


def method_params(method: str, seed: int = 0) -> dict:
    """Return the resolved parameters ``method`` stands for today (defaults included)."""
    from waferscope import registry

    name, params = parse_method(method)
    return resolved_params(registry.create(name, "classifier", **{"seed": seed, **params}))


def cached_record(cache: Path, params: dict, synthetic: int) -> dict | None:
    """Return the record in ``cache`` if it was made with these parameters and synthetic count, else None.

    A cache made under other defaults (e.g. before a default changed) is stale and is refit; caches
    written before params were recorded carry none and are trusted.
    """
    import json

    if not cache.exists():
        return None
    rec = json.loads(cache.read_text())
    # a cache written before the one parameter vocabulary (issue 30) names the same params the old way
    made_with = {_RENAMED_CLASSIFIER_PARAMS.get(k, k): v for k, v in rec.get("params", params).items()}
    if made_with == params and rec.get("synthetic", synthetic) == synthetic:
        return rec
    return None


def fit_and_predict(method: str, train, test, seed: int = 0, fit_kwargs: dict | None = None,
                    save_to: Path | None = None) -> dict:
    """Fit ``method`` on ``train``; its test probabilities, classes, parameters, size and timings as a JSON-able record.

    ``fit_kwargs`` go to ``fit`` (e.g. a fitted ``teacher``); ``save_to`` also saves the fitted model
    there (a run directory).
    """
    import time

    from waferscope import registry

    name, params = parse_method(method)
    # a seed in the spec ("cnn_fine:seed=1": a second seed of a recipe) wins over the protocol's
    clf = registry.create(name, "classifier", **{"seed": seed, **params})
    resolved = resolved_params(clf)
    t0 = time.perf_counter()
    clf.fit(train, **(fit_kwargs or {}))
    t1 = time.perf_counter()
    proba = np.asarray(clf.predict_proba(test), dtype=float)
    t2 = time.perf_counter()
    if save_to is not None:
        clf.save(save_to, overwrite=True)  # the cache of this (method, fold), recomputed
    network = getattr(clf, "network_", None)
    return {"method": method, "params": resolved, "classes": [str(c) for c in clf.classes_],
            "proba": proba.round(6).tolist(),
            "n_parameters": None if network is None else int(sum(p.numel() for p in network.parameters())),
            "train_seconds": t1 - t0, "wafers_per_second": len(test) / max(t2 - t1, 1e-9)}


def write_record(cache: Path, rec: dict) -> dict:
    """Write a fold record to ``cache`` as JSON (atomically); return it."""
    import json

    from waferscope.utils import atomic_path

    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        tmp.write_text(json.dumps(rec))
    return rec


def fold_train_test(pooled, folds, fold: int, synthetic: int, fraction: float = 1.0, groups=None):
    """(training set, test set) of lot fold ``fold``.

    Its training lots (``fraction`` < 1: that part of them, whole lots seeded by the fold; needs
    ``groups``) + ``generate(synthetic, seed=1000 + fold)``.
    """
    from waferscope.data import WaferDataset
    from waferscope.data.synthetic import generate

    train_idx, test_idx = folds[fold]
    if fraction != 1:
        train_idx = lot_subsample(train_idx, groups, fraction, seed=fold)
    parts = [generate(synthetic, seed=1000 + fold)] if synthetic else []
    return (WaferDataset.concat(parts + [pooled.subset(train_idx)], name=f"fold{fold}-train"),
            pooled.subset(test_idx))


def run_lot_fold(method: str, fold: int, pooled, folds, synthetic: int, work: Path, seed: int = 0,
                 fraction: float = 1.0, groups=None, save_to: Path | None = None) -> dict:
    """Fit ``method`` on fold ``fold``'s training set and cache its test-fold probabilities under ``work``.

    The training set is :func:`fold_train_test`'s. With ``save_to``, the fitted model is also kept there (and a cached record without that model is
    refit).
    """
    cache = fold_cache(work, method, fold, fraction)
    rec = cached_record(cache, method_params(method, seed), synthetic)
    if rec is not None and (save_to is None or (Path(save_to) / "model.json").is_file()):
        return rec
    train, test = fold_train_test(pooled, folds, fold, synthetic, fraction, groups)
    rec = fit_and_predict(method, train, test, seed=seed, save_to=save_to)
    rec.update(fold=fold, synthetic=synthetic, fraction=fraction, test_index=folds[fold][1].tolist())
    return write_record(cache, rec)


def lot_kfold_report(records: list[dict], pooled, set_of) -> dict:
    """Pooled macro-F1 (every map tested once), per-fold spread, per-class F1, macro-F1 per set.

    ``records`` are one method's fold records, or an ensemble's (probabilities already averaged).
    """
    from sklearn.metrics import f1_score

    y = pooled.labels.astype(str)
    classes = records[0]["classes"]
    pred = np.full(len(y), "", dtype=object)
    per_fold = []
    for r in records:
        idx = np.asarray(r["test_index"])
        p = np.asarray(classes, dtype=object)[np.asarray(r["proba"]).argmax(1)]
        pred[idx] = p
        per_fold.append(float(f1_score(y[idx], p.astype(str), labels=classes, average="macro", zero_division=0)))
    tested = pred != ""
    yt, pt = y[tested], pred[tested].astype(str)
    out = {"n": int(tested.sum()), "folds": len(records),
           "macro_f1": float(f1_score(yt, pt, labels=classes, average="macro", zero_division=0)),
           "fold_sd": float(np.std(per_fold)), "per_fold": per_fold,
           "per_class_f1": dict(zip(classes, f1_score(yt, pt, labels=classes, average=None, zero_division=0).round(4).tolist())),
           "wafers_per_second": float(np.mean([r.get("wafers_per_second", np.nan) for r in records])),
           "train_seconds": float(np.mean([r.get("train_seconds", np.nan) for r in records]))}
    for s in np.unique(set_of):
        m = tested & (set_of == s)
        if not m.any():  # a partial run (some folds only) may test no map of this set
            continue
        present = sorted(set(y[m]))
        out[f"macro_f1_{s}"] = float(f1_score(y[m], pred[m].astype(str), labels=present, average="macro", zero_division=0))
    return out


def average_records(members: list[list[dict]]) -> list[dict]:
    """Return an ensemble's fold records: the members' cached test probabilities averaged per fold."""
    from waferscope.errors import ConfigError

    out = []
    for recs in zip(*members):
        if len({tuple(r["classes"]) for r in recs}) != 1 or len({tuple(r["test_index"]) for r in recs}) != 1:
            raise ConfigError("ensemble members were cached with different classes or folds")
        proba = np.mean([np.asarray(r["proba"]) for r in recs], axis=0)
        out.append({**recs[0], "method": "+".join(r["method"] for r in recs), "proba": proba.tolist(),
                    "train_seconds": sum(r["train_seconds"] for r in recs),
                    "wafers_per_second": 1.0 / sum(1.0 / r["wafers_per_second"] for r in recs)})
    return out


def lot_kfold(methods: list[str], sets: dict, *, folds=range(N_FOLDS), synthetic: int = 1500,
              work: str | Path = "results/lot_kfold", seed: int = 0, progress=None,
              fraction: float = 1.0) -> dict[str, dict]:
    """Return the lot-grouped protocol for each method (``a+b`` averages members' probabilities): name → report.

    ``fraction`` < 1 trains each fold on that part of its real training lots (test folds unchanged).
    """
    pooled, set_of, groups = pool_sets(sets)
    all_folds = lot_folds(pooled.labels, groups)
    work = Path(work)
    fold_ids = list(folds)
    reports = {}
    for method in methods:
        members = method.split("+")
        recs = []
        for m in members:
            parse_method(m)  # refuse an unknown name before any fitting
        for m in members:
            mrecs = []
            for k in fold_ids:
                if progress:
                    progress(f"{m} fold {k}")
                mrecs.append(run_lot_fold(m, k, pooled, all_folds, synthetic, work, seed=seed,
                                          fraction=fraction, groups=groups))
            recs.append(mrecs)
        reports[method] = lot_kfold_report(recs[0] if len(recs) == 1 else average_records(recs), pooled, set_of)
        # derived from the folds (the subsample is seeded by the fold), so caches need not carry it
        reports[method]["n_real_train"] = float(np.mean(
            [len(lot_subsample(all_folds[k][0], groups, fraction, seed=k)) for k in fold_ids]))
    return reports


def learning_curve(method: str, sets: dict, fractions: Iterable[float], **kwargs) -> list[tuple[float, dict]]:
    """Return the lot protocol of ``method`` at each training fraction.

    [(fraction, report)], reports as :func:`lot_kfold`'s plus ``n_real_train`` (mean real
    training maps per fold).
    """
    return [(f, lot_kfold([method], sets, fraction=f, **kwargs)[method]) for f in fractions]


def plot_learning_curve(points: list[tuple[float, dict]], method: str, out: str | Path) -> None:
    """Macro-F1 and per-class F1 against real training maps per fold (log-2 axis), written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from waferscope.utils import atomic_path

    points = sorted(points, key=lambda p: p[1]["n_real_train"])
    x = [rep["n_real_train"] for _, rep in points]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for c in points[0][1]["per_class_f1"]:
        ax.plot(x, [rep["per_class_f1"][c] for _, rep in points], lw=1, alpha=0.6, marker=".", label=c)
    ax.plot(x, [rep["macro_f1"] for _, rep in points], lw=3, color="black", marker="o", label="macro-F1")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{n:,.0f}" for n in x])
    ax.set_xlabel("real labelled training maps per fold, whole lots (+ synthetic)")
    ax.set_ylabel("F1 on the held-out lot folds")
    ax.set_title(f"{method}: lot learning curve on dev + dev2\n(5 lot-grouped folds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def cross_set(method: str, sets: dict, *, synthetic: int = 1500, work: str | Path = "results/lot_kfold",
              seed: int = 0, progress=None) -> dict[str, dict]:
    """How much each set adds: for each ordered pair of the two sets.

    ``method`` trained on one (+ ``generate(synthetic, seed=1000)``) and scored on all of the other.
    "A->B" → score_predictions' report; each direction cached under ``work``.
    """
    from waferscope.data import WaferDataset
    from waferscope.data.synthetic import generate
    from waferscope.errors import ConfigError

    if len(sets) != 2:
        raise ConfigError(f"the cross-set protocol needs exactly two labelled sets, got {len(sets)}")
    parse_method(method)
    out = {}
    for a, b in (tuple(sets), tuple(sets)[::-1]):
        cache = Path(work) / f"{method_file_stem(method)}_cross_{a}_to_{b}.json"
        rec = cached_record(cache, method_params(method, seed), synthetic)
        if rec is None:
            if progress:
                progress(f"{method} {a} -> {b}")
            parts = [generate(synthetic, seed=1000)] if synthetic else []
            train = WaferDataset.concat(parts + [sets[a]], name=f"{a}-train")
            rec = write_record(cache, {**fit_and_predict(method, train, sets[b], seed=seed), "synthetic": synthetic})
        pred = np.asarray(rec["classes"])[np.asarray(rec["proba"]).argmax(1)]
        out[f"{a}->{b}"] = {**score_predictions(sets[b].labels, pred), "train_seconds": rec["train_seconds"]}
    return out
