"""Experiment (issue 29, fourth round): time and peak memory of ``texture_padim.fit`` on magnetic tile.

Loads the 666 training normals, then fits the detector with the given ``--set``-style parameters and
prints one JSON line: fit seconds, peak RSS of the process before and after the fit (ru_maxrss, so
the after-figure is the fit's peak unless loading peaked higher), run size (the learned tensors),
the load average. With ``--score`` it also scores the test split and adds images/s.

Run from the worktree root, one thread:
``OMP_NUM_THREADS=1 PYTHONPATH=src python scripts/experiments/texture_padim_fit_cost.py stride=2 grid=64``
"""

import json
import os
import resource
import sys
import time

import torch

from waferscope.evaluate.detection import load_image_set
from waferscope.models.detectors.texture_padim.detector import TexturePaDiMDetector


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main(argv):
    torch.set_num_threads(1)
    score = "--score" in argv
    params = {}
    for a in argv:
        if "=" in a:
            k, v = a.split("=", 1)
            params[k] = json.loads(v)
    train, test = load_image_set()
    before = peak_mb()
    load0 = os.getloadavg()[0]
    det = TexturePaDiMDetector(progress=False, **params)
    t0 = time.perf_counter()
    det.fit(train)
    fit_s = time.perf_counter() - t0
    out = {"params": params, "n_train": len(train), "fit_s": round(fit_s, 1), "peak_rss_mb_before_fit": round(before),
           "peak_rss_mb_after_fit": round(peak_mb()),
           "run_mb": round(sum(t.numel() * t.element_size() for t in det._state()[0].values()) / 2 ** 20, 1),
           "load_avg_start": load0, "load_avg_end_fit": os.getloadavg()[0]}
    if score:
        t0 = time.perf_counter()
        det.score(test)
        out["score_images_per_s"] = round(len(test) / (time.perf_counter() - t0), 2)
        out["peak_rss_mb_after_score"] = round(peak_mb())
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
