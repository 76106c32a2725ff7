"""Train the classifiers shipped with waferscope: the fast one (``cnn_fine``) in
src/waferscope/weights/classifier_cnn_gradcam/, the accurate one (``gbm``) in classifier_gbm/ and
``cnn_fine`` distilled from the accurate one in classifier_cnn_distilled/.

    python scripts/train_bundled_classifier.py --threads 1  # the fast bundled model, as committed
    python scripts/train_bundled_classifier.py --model gbm --threads 1 \
        --out src/waferscope/weights/classifier_gbm   # the accurate bundled model, as committed
    python scripts/train_bundled_classifier.py --threads 1 --synthetic 1500 \
        --set teacher=bundled:gbm distil_synthetic=6000 epochs=20 localise=0 resample=area \
        orient=canonical synthetic_profile=fab 'distil_classes=Center|Donut|Edge-Loc|Edge-Ring|Loc|Loc|Near-full|Random|Scratch|none|none' \
        --out src/waferscope/weights/classifier_cnn_distilled  # the distilled one (after the accurate one)
    python scripts/train_bundled_classifier.py --model ensemble \
        --out src/waferscope/weights/classifier_ensemble  # gbm + cnn_distilled averaged (no training)
    python scripts/train_bundled_classifier.py --out /tmp/check --synthetic 2000
    python scripts/train_bundled_classifier.py --model gbm --threads 1 --open-set \
        --out src/waferscope/weights/classifier_gbm   # its open-set scorer (after the model; rerun after a retrain)

``--open-set`` does not train the model at ``--out``: it fits the open-set scorer saved beside it
(``open_set.json`` + ``open_set.safetensors``, what ``classify predict --abstain`` and
``/v1/classify?abstain=1`` read) by cross-fitting (``waferscope.search.discover.crossfit_open_set``):
the same recipe (the saved model's parameters and temperature, the same synthetic maps and real
sets) is trained 5 times, each time without one lot-grouped fold of the real maps, and that fold's
open-set parts are computed with the models that never saw it. The model itself is not touched.

Since 2026-12-06 (issue 27) the distilled network reads ``resample=area`` input (every pixel the
no-die / pass / fail fractions of the dies it covers, after cropping to the dies, so a 300-across
wafer keeps all its fails and a margin of no-die cells changes nothing) in its ``orient=canonical``
view (the same input, hence the same prediction, for every rotation and flip of a wafer), and its
6,000 transfer maps come from the ``fab`` synthetic profile (half of them fab-like: 20–300 dies
across, die aspect 0.5–2, clean wafers with 0–3 % random fails, edge exclusion, margins, clipped
grids; those learn from their labels, the ``gbm`` teacher labels the rest), with Loc and none drawn
twice as often. ``--profile`` / ``--synthetic-classes`` set the same for the ``--synthetic`` maps
(the recipe keeps them as they were, as the lot-grouped protocol draws them).

Training data: ``--synthetic`` synthetic maps (``generate(n, seed=2024, mask=--mask, profile=--profile,
classes=--synthetic-classes)``) plus every
labelled real WM-811K map (``shared/data/wm811k/wm811k_dev.npz`` and, unless ``--dev2 ''``,
``wm811k_dev2.npz`` beside the repo: 5,406 maps; the bundled ``gbm`` is trained on both since
2026-12-03, and so are the distilled network and ``cnn_gradcam``, docs/classification_real.md), with the ``cnn_fine``
defaults otherwise (the compact CNN with a die-resolution head: its Grad-CAM maps are 48×48 at 48
px, and its localisation loss teaches them to sit on the synthetic maps' masks; the real maps have
no masks and train the classification loss only). 12,000 synthetic maps rather than 6,000: the
localisation of Scratch on held-out synthetic seeds rose from 0.70–0.73 to 0.73–0.76 (docs/explain.md).
Thread count changes float summation order, so the committed weights are reproduced with the
thread count they were trained with (1). The result is ``model.json`` + ``weights.safetensors`` (about 0.5 MB), loaded by
``waferscope.models.classifiers.load_default("cnn_gradcam")``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from waferscope.data.paths import DEV_MAPS

DEV = str(DEV_MAPS)
# The second labelled real set (other lots, mostly defects) beside the first; "" leaves it out.
DEV2 = str(DEV_MAPS.with_name("wm811k_dev2.npz"))
OUT = Path(__file__).resolve().parent.parent / "src" / "waferscope" / "weights" / "classifier_cnn_gradcam"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--dev", default=DEV)
    ap.add_argument("--dev2", default=DEV2, help="second labelled real set, trained on too ('' = none)")
    ap.add_argument("--synthetic", type=int, default=12000)
    ap.add_argument("--mask", choices=("fail", "region"), default="fail",
                    help="the synthetic maps' per-die masks, which cnn_fine's localisation loss learns from")
    ap.add_argument("--profile", choices=("wm811k", "fab"), default="wm811k",
                    help="the synthetic maps' profile (fab: half of them fab-like, see waferscope.data.synthetic)")
    ap.add_argument("--synthetic-classes", default="",
                    help="comma-separated classes the synthetic maps cycle through (repeat one to weight it)")
    ap.add_argument("--model", default="cnn_fine")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="model parameters as name=value (experiments)")
    ap.add_argument("--open-set", action="store_true",
                    help="fit the open-set scorer of the model already at --out (cross-fitted; the model is not retrained)")
    args = ap.parse_args(argv)

    if args.model == "ensemble":  # the bundled average of two bundled models: assembled, not trained
        from waferscope.models.classifiers.ensemble import EnsembleClassifier

        EnsembleClassifier.from_members(["bundled:gbm", "bundled:cnn_distilled"]).save(args.out, overwrite=True)
        print(f"wrote {args.out}: the mean of the bundled gbm and cnn_distilled (stored by name)")
        return 0

    import torch

    from waferscope import registry
    from waferscope.cli.common import parse_set
    from waferscope.data import WaferDataset, load
    from waferscope.data.synthetic import generate

    torch.set_num_threads(args.threads)
    parts = ([generate(args.synthetic, seed=2024, mask=args.mask, profile=args.profile,
                       classes=args.synthetic_classes or None)] if args.synthetic else [])
    parts.append(load(args.dev))
    if args.dev2:
        parts.append(load(args.dev2))
    if args.open_set:
        return fit_open_set(args, parts)
    data = WaferDataset.concat(parts, name="synthetic+wm811k_dev" + ("+wm811k_dev2" if args.dev2 else ""))
    t0 = time.perf_counter()
    clf = registry.create(args.model, "classifier", seed=args.seed,
                          **parse_set(args.set)).fit(data)
    clf.save(args.out, overwrite=True)  # this script regenerates the committed bundled weights in place
    size = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"trained {args.model} on {len(data)} maps in {time.perf_counter() - t0:.0f}s "
          f"(best epoch {getattr(clf, 'best_epoch_', '-')}); wrote {args.out} ({size / 1e6:.2f} MB)")
    return 0


def fit_open_set(args, parts) -> int:
    """The open-set scorer of the model at ``args.out``, cross-fitted on the same data (module docstring)."""
    from waferscope import registry
    from waferscope.base import load_run
    from waferscope.data import WaferDataset
    from waferscope.search.discover import OPEN_SET_ARRAYS, OPEN_SET_JSON, crossfit_open_set, save_open_set

    final = load_run(args.out, kind="classifier")
    params = {**final.get_params(), "progress": False}
    temperature = getattr(final, "temperature_", None)

    def fit_classifier(train):
        clf = registry.create(final.registry_name, "classifier", **params).fit(train)
        if temperature is not None:  # the saved model's out-of-fold temperature, so the probabilities match
            clf.set_temperature(temperature)
        return clf

    synthetic = parts[0] if args.synthetic else None
    real = WaferDataset.concat(parts[1:] if args.synthetic else parts, name="wm811k")
    t0 = time.perf_counter()
    model = crossfit_open_set(fit_classifier, real, final.classes_, extra=synthetic, seed=args.seed, progress=True)
    save_open_set(model, args.out)
    size = sum((args.out / n).stat().st_size for n in (OPEN_SET_JSON, OPEN_SET_ARRAYS))
    print(f"cross-fitted the open-set scorer of {final.registry_name} on {int(real.is_labelled.sum())} real maps "
          f"(+ {0 if synthetic is None else len(synthetic)} synthetic) in {time.perf_counter() - t0:.0f}s: threshold "
          f"{model.scorer.threshold_:.4f}; wrote {args.out}/{OPEN_SET_JSON} + {OPEN_SET_ARRAYS} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
