"""Train the metric head bundled for similar-wafer search (src/waferscope/weights/search_metric/).

    OMP_NUM_THREADS=1 python scripts/train_search_head.py            # as committed
    python scripts/train_search_head.py --out /tmp/head               # elsewhere

The head (:mod:`waferscope.search.metric`) maps the 120 standardised ``extended`` wafer features to
32 dims with a supervised contrastive loss; it is trained on every labelled real WM-811K map
(``wm811k_dev.npz`` + ``wm811k_dev2.npz``, 5,406 maps, seed 0, one thread). `index build` uses it for
an archive without enough labels of its own; an archive with labels trains its own head. Its quality
on lots it has not seen is measured with the same recipe fitted per lot-grouped fold
(`waferscope evaluate retrieval`, docs/search.md). Retrain it when the feature set changes (the
head records the feature names and is refused for another set).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from waferscope.data.paths import DEV2_MAPS, DEV_MAPS
from waferscope.search.embed import MetricEmbedding
from waferscope.search.metric import BUNDLED_HEAD, save_bundled_head


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=BUNDLED_HEAD)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from waferscope.data import load
    from waferscope.data.dataset import WaferDataset

    ds = WaferDataset.concat([load(str(DEV_MAPS)), load(str(DEV2_MAPS))]).labelled()
    emb = MetricEmbedding(source="labels", seed=args.seed, n_jobs=args.threads, progress=True).fit(ds)
    save_bundled_head(emb, args.out, {"trained_on": "wm811k_dev.npz + wm811k_dev2.npz (all labelled maps)",
                                      "n_wafers": len(ds), "seed": args.seed, "script": "scripts/train_search_head.py"})
    print(f"bundled search head → {args.out} ({len(ds)} wafers)")


if __name__ == "__main__":
    main()
