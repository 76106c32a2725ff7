"""The bundled models' outputs on fixed synthetic maps, recorded so a refactor can be checked to leave
them unchanged (tests/test_bundled_outputs.py compares; ``python tests/bundled_outputs.py`` re-records
into tests/data/bundled_outputs.json after a deliberate change, e.g. retrained weights).

Per model: the sha256 of its weights file (a changed file means a retrained model, reported as such,
not as a behaviour change), the outputs rounded to 6 decimals (classifier probabilities; detector
scores and each anomaly map's sum and maximum), and a sha256 of the decisions (predicted class names;
detector scores at or above the run's threshold), which must match exactly.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

EXPECTED = Path(__file__).parent / "data" / "bundled_outputs.json"
N_MAPS, SEED = 18, 30  # two maps of each class, each on its own product grid


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _bundled_threshold(run_dir: Path) -> float | None:
    """The run's decision threshold read straight from the files (model.json's extras or the older
    threshold.json beside it), so recording does not depend on the code under test."""
    doc = json.loads((run_dir / "model.json").read_text())
    thr = doc.get("extras", {}).get("threshold_")
    if thr is None and (run_dir / "threshold.json").is_file():
        thr = json.loads((run_dir / "threshold.json").read_text())["threshold"]
    return None if thr is None else float(thr)


def current_outputs() -> dict:
    import torch

    from waferscope.data.synthetic import generate
    from waferscope.models import classifiers, detectors

    torch.set_num_threads(1)
    maps = generate(N_MAPS, seed=SEED)
    out: dict = {}
    for name, run_dir in classifiers.BUNDLED.items():
        est = classifiers.load_default(name)
        proba = np.asarray(est.predict_proba(maps), dtype=np.float64)
        pred = [str(c) for c in est.predict(maps)]
        out[f"classifier/{name}"] = {
            "weights_sha256": _sha((Path(run_dir) / "weights.safetensors").read_bytes()),
            "proba": np.round(proba, 6).tolist(),
            "decisions_sha256": _sha(json.dumps(pred).encode()),
        }
    for name, run_dir in detectors.BUNDLED.items():
        est = detectors.load_default(name)
        res = est.score(maps)
        scores = np.asarray(res.scores, dtype=np.float64)
        thr = _bundled_threshold(Path(run_dir))
        decisions = [] if thr is None else [bool(s >= thr) for s in scores]
        out[f"detector/{name}"] = {
            "weights_sha256": _sha((Path(run_dir) / "weights.safetensors").read_bytes()),
            "scores": np.round(scores, 6).tolist(),
            "map_sums": [round(float(np.sum(m, dtype=np.float64)), 4) for m in res.maps],
            "map_max": [round(float(np.max(m)), 6) for m in res.maps],
            "threshold": thr,
            "decisions_sha256": _sha(json.dumps(decisions).encode()),
        }
    return out


if __name__ == "__main__":
    EXPECTED.parent.mkdir(parents=True, exist_ok=True)
    tmp = EXPECTED.with_suffix(".tmp")
    tmp.write_text(json.dumps(current_outputs(), indent=1) + "\n")
    tmp.replace(EXPECTED)
    print(f"wrote {EXPECTED}", file=sys.stderr)
