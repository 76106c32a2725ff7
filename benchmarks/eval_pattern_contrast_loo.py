"""How much ``pattern_contrast`` relies on the generator's patterns: leave each one out of the simulation.

For each of the 8 WM-811K defect patterns, ``pattern_contrast`` is trained (docs/detection.md
protocol: the first 250 real dev ``none`` maps, seed 0) with the other seven simulated, then scored on
the protocol's test maps; the AUROC of the left-out class against the 250 test normals says how well
the detector finds a defect type it never saw simulated. The first row simulates all eight.

    python benchmarks/eval_pattern_contrast_loo.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_detect_dev import dev_split, per_class_auroc  # noqa: E402  (the protocol, shared with that script)

from waferscope import registry  # noqa: E402
from waferscope.data.classes import BASE_PATTERNS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split-seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    train, test = dev_split(args.split_seed)
    results = {}
    print("| left out | image AUROC, all 8 classes | AUROC of the left-out class vs normals |\n|---|---:|---:|")
    for left_out in [None, *BASE_PATTERNS]:
        patterns = None if left_out is None else [p for p in BASE_PATTERNS if p != left_out]
        det = registry.create("pattern_contrast", "detector", patterns=patterns, verbose=False).fit(train)
        scores = det.score(test).scores
        per_class = per_class_auroc(scores, test)
        overall = float(roc_auc_score(~test.is_normal, scores))
        results[left_out or "none left out"] = {"image_auroc": overall, "per_class": per_class}
        shown = f"{per_class[left_out]:.3f}" if left_out else "—"
        print(f"| {left_out or 'none left out'} | {overall:.3f} | {shown} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
