"""The most frequent confusions of one method under the 5-fold dev protocol, as a gallery of maps.

Reads the per-fold caches that scripts/eval_classifiers.py writes (test indices and predictions),
pools them and draws, for each of the ``--pairs`` most frequent (label → prediction) confusions,
the first ``--per-pair`` maps in dev order, and prints how many maps each pair has.

    python scripts/plot_classification_errors.py --method gbm --work results/classification \
        --out docs/img/classification_gbm_errors.png
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from waferscope.data import load
from waferscope.data.paths import DEV_MAPS
from waferscope.data.render import render_map
from waferscope.errors import WaferscopeError
from waferscope.utils import atomic_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="gbm")
    ap.add_argument("--data", default=str(DEV_MAPS), help="the maps the folds index (default: the dev maps)")
    ap.add_argument("--work", type=Path, default=Path("results/classification"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--per-pair", type=int, default=8)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        dev = load(args.data)
    except WaferscopeError as exc:  # a missing or unreadable --data: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
    truth = dev.labels.astype(str)
    pred = np.full(len(dev), "", dtype=object)
    for fold_file in sorted(args.work.glob(f"{args.method}_fold*.json")):
        doc = json.loads(fold_file.read_text())
        pred[doc["test_index"]] = doc["y_pred"]
    if (pred == "").any():
        raise SystemExit(f"error: {args.work}: {args.method} has not been run on every fold")
    confusions = Counter((t, p) for t, p in zip(truth, pred) if t != p)
    print(f"{args.method}: {sum(confusions.values())} errors on {len(dev)} maps; most frequent:")
    for (label, predicted), count in confusions.most_common(args.pairs):
        print(f"  {label} -> {predicted}: {count}")
    pairs = [p for p, _ in confusions.most_common(args.pairs)]
    if not pairs:
        raise SystemExit(f"error: {args.work}: {args.method} made no errors, so there is nothing to draw")
    fig, axes = plt.subplots(len(pairs), args.per_pair, figsize=(1.6 * args.per_pair, 1.8 * len(pairs)),
                             squeeze=False)
    for row, (label, predicted) in enumerate(pairs):
        index = np.flatnonzero((truth == label) & (pred == predicted))
        for col in range(args.per_pair):
            axes[row, col].axis("off")
            if col < len(index):
                axes[row, col].imshow(render_map(dev.maps[index[col]]), interpolation="nearest")
        axes[row, 0].set_title(f"label {label} → predicted {predicted} ({len(index)} maps)", fontsize=9, loc="left")
    fig.suptitle(f"{args.method} errors on the real dev maps (5-fold, pooled): the {len(pairs)} most frequent "
                 f"confusions, first {args.per_pair} maps each\n(grey = pass, orange = fail)", fontsize=10)
    fig.tight_layout()
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
