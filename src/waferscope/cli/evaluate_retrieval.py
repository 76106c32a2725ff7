"""`waferscope evaluate retrieval`: the similarity-search benchmark (:mod:`waferscope.evaluate.retrieval`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from waferscope.cli.common import write_text_atomic
from waferscope.errors import ConfigError

METHODS = ("metric", "lda", "features", "cnn", "raw", "wu2015", "cnn_fold")


def _shared_default_sets() -> list[str]:
    """Return the shared wm811k_dev.npz + wm811k_dev2.npz, or one error naming what they are and how to pass one's own."""
    from waferscope.cli.checks import shared_default
    from waferscope.data.paths import DEV2_MAPS, DEV_MAPS

    own = "--data FILE, repeatable: labelled real maps with lot names"
    return [str(shared_default(None, path, "--data", own)) for path in (DEV_MAPS, DEV2_MAPS)]


def register(app: typer.Typer) -> None:
    """Add ``waferscope evaluate retrieval`` and ``evaluate open-set`` to ``app``."""
    app.command("retrieval")(retrieval)
    app.command("open-set")(open_set)


def open_set(
    data: List[str] = typer.Option([], "--data", help="Labelled real maps with lot names (repeatable; default: "
                                   "the shared wm811k_dev.npz + wm811k_dev2.npz)"),
    folds: int = typer.Option(5, "--folds", min=2, help="Lot-grouped folds"),
    max_folds: Optional[int] = typer.Option(None, "--max-folds", min=1, help="Stop after this many folds"),
    hidden: Optional[str] = typer.Option(None, "--hidden", help="Comma list of classes to hide in turn (default: "
                                         "every class but none)"),
    parts: Optional[str] = typer.Option(None, "--parts", help="Comma list of the open-set score's parts (default: "
                                        "doubt, metric_knn, relative_knn, shape_knn, shape_tail; also: feature_knn; "
                                        "detector, the bundled pattern_contrast; docs/search.md)"),
    abstain_rate: float = typer.Option(0.05, "--abstain-rate", min=0.0, max=0.5,
                                       help="Share of known calibration wafers the threshold sets aside"),
    seed: int = typer.Option(0, "--seed"),
    threads: int = typer.Option(2, "--threads", min=1),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-task table and summary as JSON here"),
) -> None:
    """Leave one class out on lot-grouped real folds.

    AUROC of unknown-vs-known, known-class macro-F1 with and without abstention, and how well
    the hidden class is rediscovered as a cluster.
    """
    from waferscope.cli.common import load_data
    from waferscope.cli.search import _threads
    from waferscope.evaluate.open_set import open_set_folds, summarise_open_set

    from waferscope.search.open_set import OpenSetScorer

    chosen_parts = tuple(p.strip() for p in parts.split(",") if p.strip()) if parts else None
    if chosen_parts:
        OpenSetScorer(parts=chosen_parts)  # an unknown part fails before the data is read
    _threads(threads)
    ds = load_data(data or _shared_default_sets())
    chosen = tuple(h.strip() for h in hidden.split(",") if h.strip()) if hidden else None
    if chosen:
        bad = sorted(set(chosen) - set(ds.labels.astype(str)))
        if bad:
            raise ConfigError(f"--hidden: no labelled wafers of {', '.join(bad)} in --data")
    table = open_set_folds(ds, n_splits=folds, seed=seed, abstain_rate=abstain_rate, max_folds=max_folds,
                           hidden=chosen, n_jobs=threads, progress=True, parts=chosen_parts)
    summary = summarise_open_set(table)
    parts = [c for c in summary.columns if c.startswith("auroc_")]  # each part of the score alone
    cols = ["hidden", "auroc", *parts, "f1_closed", "f1_open", "abstain_known", "abstain_hidden", "features_purity",
            "features_recall", "metric_purity", "metric_recall"]
    typer.echo(summary[cols].to_string(index=False))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps({"per_task": table.to_dict(orient="records"),
                                                "summary": summary.to_dict(orient="records")}, indent=1,
                                               default=float) + "\n")


def retrieval(
    data: List[str] = typer.Option([], "--data", help="Labelled real maps with lot names (repeatable; default: "
                                   "the shared wm811k_dev.npz + wm811k_dev2.npz)"),
    methods: str = typer.Option(",".join(METHODS[:6]), "--methods", show_default=False,
                                help="Comma list of " + ", ".join(METHODS) + " (default: all but cnn_fold; metric, "
                                "lda: fitted per fold on the archive lots' labels only; cnn: the bundled network, "
                                "trained on these sets, so optimistic; cnn_fold: a cnn_fine trained per fold; slow)"),
    cnn_epochs: int = typer.Option(15, "--cnn-epochs", min=1, help="cnn_fold: training epochs"),
    max_folds: Optional[int] = typer.Option(None, "--max-folds", min=1, help="Stop after this many folds"),
    folds: int = typer.Option(5, "--folds", min=2, help="Lot-grouped folds"),
    k: int = typer.Option(10, "-k", "--k", min=1, help="precision@k"),
    seed: int = typer.Option(0, "--seed"),
    speed: int = typer.Option(0, "--speed", min=0, help="Also the HNSW-vs-exact check at this many vectors "
                              "(e.g. 100000): recall@k, query p50/p99, build rate, bytes per wafer"),
    speed_embedding: Optional[str] = typer.Option(None, "--speed-embedding", help="Embedding of the --speed "
                                                  "vectors (default: the index default)"),
    skip_folds: bool = typer.Option(False, "--skip-folds", help="Only the --speed check"),
    threads: int = typer.Option(2, "--threads", min=1),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the per-fold table and summary as JSON here"),
) -> None:
    """Measure precision@k and mAP of similar-wafer retrieval on lot-grouped real folds.

    Queries from held-out lots, same class = relevant, `none` queries apart, per embedding and the
    Wu 2015 baseline.
    """
    from waferscope.cli.common import load_data
    from waferscope.cli.search import _threads
    from waferscope.evaluate import retrieval as ev

    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    bad = [m for m in chosen if m not in METHODS]
    if bad or not chosen:
        raise ConfigError(f"--methods: unknown {bad or methods!r}; choose from {', '.join(METHODS)}")
    if skip_folds and not speed:
        raise ConfigError("--skip-folds needs --speed N")
    _threads(threads)
    result: dict = {}
    if not skip_folds:
        ds = load_data(data or _shared_default_sets())
        per_fold = ev.retrieval_folds(ds, chosen, n_splits=folds, k=k, seed=seed, progress=True, n_jobs=threads,
                                      cnn_epochs=cnn_epochs, max_folds=max_folds)
        summary = ev.summarise(per_fold)
        typer.echo(summary.to_string(index=False))
        result.update(per_fold=per_fold.to_dict(orient="records"), summary=summary.to_dict(orient="records"))
    if speed:
        from waferscope.search import EMBEDDINGS

        if speed_embedding is not None and speed_embedding not in EMBEDDINGS:
            raise ConfigError(f"--speed-embedding must be one of {', '.join(EMBEDDINGS)}")
        archive, queries = ev.synthetic_vectors(speed, seed=seed, n_jobs=threads, embedding=speed_embedding)
        row = ev.ann_speed(archive, queries, k=k)
        typer.echo(json.dumps(row))
        result["speed"] = row
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(result, indent=1, default=float) + "\n")
