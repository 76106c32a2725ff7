#!/usr/bin/env bash
# Create (or reuse) .venv and install waferscope with its pinned CPU PyTorch.
# torch is installed first and pinned exactly: a looser requirement pulls a multi-GB CUDA build.
# A first install downloads ~1 GB and takes several minutes; it says so and shows pip's progress.
# Later runs skip pip when pyproject.toml has not changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
STAMP=.venv/.waferscope-setup
WANT=$(sha256sum pyproject.toml | cut -d' ' -f1)
warm_kernels() {
  # numba compiles the feature kernels once per machine (and after they change): here, with a word,
  # rather than silently inside a user's first command
  echo "setup: loading the compiled feature kernels (~20 s the first time on a machine)"
  python -m waferscope.features.fast
}
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && python -c "import waferscope, torch" 2>/dev/null; then
  echo "setup: .venv is up to date (pyproject.toml unchanged since the last install)"
  warm_kernels
  exit 0
fi
START=$SECONDS
if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  echo "setup: installing torch 2.13.0 (CPU build, ~200 MB download, ~1 GB installed): a few minutes"
  pip install --progress-bar on "torch==2.13.0"
fi
echo "setup: installing waferscope and its dependencies (scikit-learn, scikit-image, onnxruntime, pyarrow," \
     "dask, matplotlib, ...; ~1 GB): a few minutes on a first install"
pip install --progress-bar on -e ".[test]"
echo "$WANT" > "$STAMP"
warm_kernels
echo "setup: done in $((SECONDS - START)) s"
