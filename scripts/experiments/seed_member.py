"""Experiment (issue 27): the same lot-fold protocol as `waferscope evaluate classifiers`, with another seed.

`evaluate classifiers` fits every method with seed 0 and has no seed option (a seed inside the method
spec is refused: the protocol passes its own). This runs :func:`waferscope.evaluate.classification.lot_kfold`
with ``--seed`` into its own ``--work`` (a cache records its parameters, seed included, so a seed-1 fit
must not share a directory with the seed-0 caches, which it would overwrite), then copies each fold's
cache to ``--member-dir`` as ``<member-name>_fold<k>.json`` so the combination scripts read it as a member.

    OMP_NUM_THREADS=1 PYTHONPATH=src nice -n 5 python scripts/experiments/seed_member.py --seed 1 --fold 0 \\
        --work /tmp/seed1 --member-dir DIR --member-name cnn_fine_seed1 'cnn_fine:teacher=gbm,...'
"""

import argparse
import shutil
import time
from pathlib import Path

import torch

from waferscope.data import load
from waferscope.data.paths import DEV2_MAPS, DEV_MAPS
from waferscope.evaluate.classification import fold_cache, lot_kfold

p = argparse.ArgumentParser()
p.add_argument("method")
p.add_argument("--seed", type=int, required=True)
p.add_argument("--fold", type=int, action="append", required=True)
p.add_argument("--work", type=Path, required=True)
p.add_argument("--member-dir", type=Path, required=True)
p.add_argument("--member-name", required=True)
args = p.parse_args()

torch.set_num_threads(1)
sets = {"dev": load(str(DEV_MAPS)), "dev2": load(str(DEV2_MAPS))}
for k in args.fold:
    t = time.time()
    rep = lot_kfold([args.method], sets, folds=[k], work=args.work, seed=args.seed,
                    progress=lambda msg: print(msg, flush=True))[args.method]
    shutil.copyfile(fold_cache(args.work, args.method, k), args.member_dir / f"{args.member_name}_fold{k}.json")
    print(f"fold {k}: macro-F1 {rep['macro_f1']:.4f} ({time.time() - t:.0f} s)", flush=True)
