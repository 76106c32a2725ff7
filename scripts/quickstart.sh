#!/usr/bin/env bash
# Set up (see setup.sh), then run the main job on embedded data: the quick benchmark
# (configs/quick.yaml: features+SVM and CNN classifiers, PatchCore and autoencoder detectors on
# seeded synthetic maps and, when shared/ is beside the repo, the real WM-811K dev maps).
# Writes OUT/index.html (the report), OUT/results.{csv,json,md} and a montage of the synthetic maps.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${1:-out/quickstart}
mkdir -p "$OUT"
waferscope data generate --n 900 --seed 0 --out "$OUT/synthetic.parquet"
waferscope data show "$OUT/synthetic.parquet" --out "$OUT/synthetic_montage.png"
waferscope benchmark --config configs/quick.yaml --out "$OUT"
echo "report: $OUT/index.html"
