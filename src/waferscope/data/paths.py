"""Where the real development data lives: ``shared/data`` beside the repository checkout.

Override with the environment variable ``WAFERSCOPE_SHARED_DATA`` (the folder holding ``wm811k/``).
"""

from __future__ import annotations

import os
from pathlib import Path

_REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("WAFERSCOPE_SHARED_DATA", _REPO.parent / "shared" / "data"))
DEV_MAPS = SHARED_DATA / "wm811k" / "wm811k_dev.npz"
LSWMD_SAMPLE = SHARED_DATA / "wm811k" / "LSWMD_sample.pkl"
DEV2_MAPS = SHARED_DATA / "wm811k" / "wm811k_dev2.npz"
UNLABELLED_MAPS = SHARED_DATA / "wm811k" / "wm811k_unlabelled.npz"
