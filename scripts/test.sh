#!/usr/bin/env bash
# Set up (see setup.sh), run the style gate (ruff) and the fast test suite. Slow tests: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m ruff check src tests scripts benchmarks  # the style gate ([tool.ruff] in pyproject.toml)
exec python -m pytest "$@"
