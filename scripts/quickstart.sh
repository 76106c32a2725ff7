#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job on embedded data: the quick benchmark config.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
OUT=${1:-out/quickstart}
mkdir -p "$OUT"
waferscope data generate --n 2000 --seed 0 --out "$OUT/synthetic.parquet"
if [ -f ../shared/data/wm811k/wm811k_dev.npz ]; then
  waferscope data import ../shared/data/wm811k/wm811k_dev.npz --out "$OUT/wm811k_dev.parquet"
fi
waferscope data info "$OUT/synthetic.parquet"
waferscope data show "$OUT/synthetic.parquet" --out "$OUT/synthetic_montage.png"
echo "wrote $OUT"
