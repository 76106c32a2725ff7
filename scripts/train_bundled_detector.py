"""Train the detector bundled with waferscope (used by `waferscope detect evaluate/score` without --run).

Training data = the training half of the docs/detection.md protocol: the real dev maps' `none` maps,
split 50/50 with seed 0 (the first half; the other half and every defect map stay for testing), so
the protocol figures in the docs describe the bundled model. Its decision threshold (the model's
``threshold_``, saved in model.json) is the K-fold mean-of-max of those normals.

    python scripts/train_bundled_detector.py --detector autoencoder [--set latent_dim=16] [--folds 5]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from waferscope import registry
from waferscope.data import load
from waferscope.data.paths import DEV_MAPS

ROOT = Path(__file__).resolve().parents[1]
DEV = DEV_MAPS


def protocol_train_normals(seed: int = 0):
    """The training half of the dev `none` maps of the detector dev protocol (`waferscope evaluate detector`)."""
    from waferscope.evaluate.detection import dev_split

    return dev_split(load(DEV), seed)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--detector", default="autoencoder")
    ap.add_argument("--set", action="append", default=[], help="detector parameter key=value (JSON value)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "src/waferscope/weights/detector_autoencoder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    params = {}
    for kv in args.set:
        k, v = kv.split("=", 1)
        try:
            params[k] = json.loads(v)
        except ValueError:
            params[k] = v
    cls = registry.get(args.detector, "detector")
    params = cls.translate_params(params)  # retired names → today's (before the default below)
    if "progress" in cls._param_names():
        params.setdefault("progress", False)
    normals = protocol_train_normals()
    t0 = time.perf_counter()
    det = cls(**params).fit(normals, calibrate=False)
    t_fit = time.perf_counter() - t0
    det.calibrate(normals, rule="kfold", folds=args.folds, seed=0)
    det.threshold_info_.update(trained_on=f"{DEV.name}: first half of the `none` maps (seed 0), n={len(normals)}",
                               fit_seconds=round(t_fit, 1),
                               command="python scripts/train_bundled_detector.py " + " ".join(sys.argv[1:]))
    det.save(args.out, overwrite=True)  # this script regenerates the committed bundled weights in place
    print(f"wrote {args.out} (threshold {det.threshold_:.6g}; fit {t_fit:.0f}s)", file=sys.stderr)


if __name__ == "__main__":
    main()
