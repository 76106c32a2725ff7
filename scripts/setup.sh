#!/usr/bin/env bash
# Create (or reuse) .venv and install waferscope with its pinned CPU PyTorch.
# torch is installed first and pinned exactly: a looser requirement pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('2.13.0') else 1)" 2>/dev/null; then
  pip install -q "torch==2.13.0"
fi
pip install -q -e ".[test]"
