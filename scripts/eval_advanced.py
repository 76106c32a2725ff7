"""Measurements behind docs/classification_advanced.md: autoencoder variants, pseudo-labelling, mixed types.

    python scripts/eval_advanced.py ae          # cnn vs ae_latent vs cnn_residual (channel / augment)
    python scripts/eval_advanced.py semi        # 10 % of dev labels: cnn vs pseudo_label_cnn
    python scripts/eval_advanced.py multilabel  # multilabel_cnn on mixed synthetic maps

``ae`` and ``semi`` use fold 0 of the seeded stratified 5-fold split of the 2,892 real dev maps (the
same fold as scripts/kd_sweep.py): every model trains on the other 4/5 (+ ``--synthetic`` labelled
synthetic maps) and is scored on the held-out fifth of real maps. One fold, not five, to fit the
shared 2-core CPU; differences of a point or two are within fold-to-fold noise.
``semi`` keeps the labels of a stratified 10 % of the training fold's dev maps and hands the other
90 % to the model without labels. ``multilabel`` trains on ``generate(n, seed=0, mixed=True)`` and
tests on ``generate(n_test, seed=1, mixed=True)`` (38 MixedWM38-style classes).
Each prints a markdown table and writes ``<work>/<what>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kd_sweep import DEV, fold_data, scores  # noqa: E402  (same protocol and fold as the KD sweep)


def run(name: str, model, train, test, **fit_kwargs) -> dict:
    t0 = time.perf_counter()
    model.fit(train, **fit_kwargs)
    row = {"model": name, **scores(model, test), "train_seconds": round(time.perf_counter() - t0, 1),
           "params": int(model.n_parameters())}
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def table(rows: list[dict], cols: list[str]) -> str:
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
    return "\n".join(out)


def eval_ae(args) -> list[dict]:
    from waferscope.models.classifiers.autoencoder_variants import AELatentClassifier, ResidualCNNClassifier
    from waferscope.models.classifiers.cnn import CompactCNNClassifier

    train, test, _ = fold_data(args.dev, args.synthetic, 0)
    common = dict(epochs=args.epochs, progress=False, width=args.width)
    ae = dict(ae_epochs=args.ae_epochs)
    latent = {k: v for k, v in common.items() if k != "width"}  # the latent head has no cnn width
    return [
        run("cnn (plain)", CompactCNNClassifier(**common), train, test),
        run("ae_latent (frozen encoder, AE on all maps)", AELatentClassifier(**latent, **ae), train, test),
        run("ae_latent (fine-tuned encoder)", AELatentClassifier(**latent, **ae, finetune=True), train, test),
        run("cnn_residual channel (AE on normal maps)", ResidualCNNClassifier(**common, **ae), train, test),
        run("cnn_residual augment (AE on all maps)", ResidualCNNClassifier(**common, **ae, residual_mode="augment"),
            train, test),
    ]


def eval_semi(args) -> list[dict]:
    from waferscope.data import WaferDataset
    from waferscope.data.preprocess import stratified_split
    from waferscope.models.classifiers.cnn import CompactCNNClassifier
    from waferscope.models.classifiers.semi_supervised import PseudoLabelCNNClassifier

    train, test, _ = fold_data(args.dev, 0, 0)
    rest, keep = stratified_split(train.labels, test_size=args.label_fraction, seed=0)
    labelled_dev, unlabelled = train.subset(keep), train.subset(rest)
    unlabelled.labels[:] = ""
    parts = [labelled_dev]
    if args.synthetic:
        from waferscope.data.synthetic import generate

        parts.append(generate(args.synthetic, seed=0))
    labelled = WaferDataset.concat(parts, name="10%dev+synthetic")
    print(f"labelled: {len(labelled_dev)} dev + {args.synthetic} synthetic; unlabelled: {len(unlabelled)} dev",
          file=sys.stderr)
    common = dict(epochs=args.epochs, progress=False, width=args.width)
    rows = [run("cnn, labelled only", CompactCNNClassifier(**common), labelled, test)]
    model = PseudoLabelCNNClassifier(**common, threshold=args.threshold)
    rows.append(run("pseudo_label_cnn (+ unlabelled dev)", model, labelled, test, unlabelled=unlabelled))
    rows[-1]["pseudo_labelled"] = model.pseudo_rounds_[0]["pseudo_labelled"] if model.pseudo_rounds_ else 0
    rows.append(run("cnn, upper bound: all dev labels", CompactCNNClassifier(**common),
                    WaferDataset.concat([train] + parts[1:]), test))
    return rows


def eval_multilabel(args) -> list[dict]:
    from waferscope.data.synthetic import generate
    from waferscope.models.classifiers.multilabel import MultiLabelCNNClassifier, multilabel_report

    train, test = generate(args.n, seed=0, mixed=True), generate(args.n_test, seed=1, mixed=True)
    t0 = time.perf_counter()
    model = MultiLabelCNNClassifier(epochs=args.epochs, progress=False).fit(train)
    rep = multilabel_report(test.multilabels, model.predict_multilabel(test))
    rep["train_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"exact match {rep['exact_match']:.3f}, macro F1 {rep['macro_f1']:.3f}, micro F1 {rep['micro_f1']:.3f}, "
          f"Hamming loss {rep['hamming_loss']:.4f}, {len(train)} train / {len(test)} test maps")
    rows = [{"pattern": p, **{k: v for k, v in d.items()}} for p, d in rep["per_pattern"].items()]
    print(table(rows, ["pattern", "precision", "recall", "f1", "support"]))
    return [rep]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["ae", "semi", "multilabel"])
    ap.add_argument("--dev", default=DEV)
    ap.add_argument("--synthetic", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--ae-epochs", type=int, default=10)
    ap.add_argument("--width", type=int, default=16, help="the cnn width of every CNN compared (ae, semi)")
    ap.add_argument("--label-fraction", type=float, default=0.1)
    ap.add_argument("--threshold", type=float, default=0.95)
    ap.add_argument("--n", type=int, default=3800, help="multilabel: training maps")
    ap.add_argument("--n-test", type=int, default=1900, help="multilabel: test maps")
    ap.add_argument("--work", default="runs/advanced")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows = {"ae": eval_ae, "semi": eval_semi, "multilabel": eval_multilabel}[args.what](args)
    if args.what != "multilabel":
        print(table(rows, list(rows[0])))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{args.what}.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
