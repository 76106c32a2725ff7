"""Both bundled classifiers on the real WM-811K maps of LSWMD_sample.pkl that are NOT in the dev set.

The 200-row sample (defect classes only) shares 20 maps with wm811k_dev.npz, on which the bundled
models were trained; the other 180 maps were never seen by either model, so they are a small
held-out check on real wafers (some of their lots do appear in the dev set).

    python scripts/eval_bundled_heldout.py
    python scripts/eval_bundled_heldout.py --run RUN [--run RUN2]   # also these run directories
    python scripts/eval_bundled_heldout.py --prior estimate         # with a class-prior correction

Prints accuracy, macro-F1 over the classes present and per-class F1 for each bundled model (and
each ``--run``).
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from waferscope.data import load
from waferscope.data.paths import DEV_MAPS
from waferscope.models.classifiers import BUNDLED, load_default


def key(wafer: np.ndarray) -> bytes:
    return bytes(np.asarray(wafer.shape, np.int32)) + np.ascontiguousarray(wafer).tobytes()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="append", default=[], help="a classifier run directory to check as well")
    ap.add_argument("--prior", default="balanced", help="class mix for the predictions, as `classify predict --prior`")
    args = ap.parse_args(argv)
    from waferscope.base import load_run
    from waferscope.models.classifiers.prior import apply_prior

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = load(str(DEV_MAPS.parent / "LSWMD_sample.pkl"))
    seen = {key(m) for m in load(str(DEV_MAPS)).maps}
    unseen = np.array([key(m) not in seen for m in sample.maps])
    held = sample.subset(np.flatnonzero(unseen))
    y = held.labels.astype(str)
    classes = sorted(set(y))
    print(f"{len(held)} of {len(sample)} sample maps are not in the dev set; classes: "
          + ", ".join(f"{c} {int((y == c).sum())}" for c in classes))
    models = [(name, lambda name=name: load_default(name)) for name in BUNDLED]
    models += [(run, lambda run=run: load_run(run, kind="classifier")) for run in args.run]
    for name, loader in models:
        model = loader()
        proba, _ = apply_prior(model, model.predict_proba(held), args.prior)
        pred = np.asarray(model.classes_)[proba.argmax(1)].astype(str)
        per = f1_score(y, pred, labels=classes, average=None, zero_division=0)
        print(f"{name:9s} accuracy {accuracy_score(y, pred):.3f}  macro-F1 {per.mean():.3f}  "
              + "  ".join(f"{c} {v:.2f}" for c, v in zip(classes, per)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
