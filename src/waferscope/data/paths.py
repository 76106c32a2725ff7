"""Where the real development data lives: ``shared/data`` beside the repository checkout.

Override with the environment variable ``WAFERSCOPE_SHARED_DATA`` (the folder holding ``wm811k/``).
"""

from __future__ import annotations

import os
from pathlib import Path

from waferscope.errors import ConfigError

_REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("WAFERSCOPE_SHARED_DATA", _REPO.parent / "shared" / "data"))
DEV_MAPS = SHARED_DATA / "wm811k" / "wm811k_dev.npz"
LSWMD_SAMPLE = SHARED_DATA / "wm811k" / "LSWMD_sample.pkl"
DEV2_MAPS = SHARED_DATA / "wm811k" / "wm811k_dev2.npz"
UNLABELLED_MAPS = SHARED_DATA / "wm811k" / "wm811k_unlabelled.npz"

# What each shared file is, for the message when it is missing (a fresh clone has no ../shared).
_WHAT = {
    "wm811k_dev.npz": "2,892 real labelled WM-811K maps (all 9 classes, with lot names)",
    "wm811k_dev2.npz": "2,514 more real labelled WM-811K maps (other lots)",
    "LSWMD_sample.pkl": "200 real labelled WM-811K rows in the original LSWMD.pkl layout",
    "wm811k_unlabelled.npz": "1,534 real unlabelled WM-811K maps",
    "magnetic_tile": "the real Magnetic Tile Defects images in the MVTec-AD layout",
}


def missing_shared_message(path: Path) -> str:
    """Why a shared default file is needed and where it is looked for; the caller says how to pass one's own."""
    what = _WHAT.get(Path(path).name, "a real data file")
    return (f"this needs the real development data: {Path(path).name} ({what}), looked for at {path}, which "
            f"does not exist. The shared data folder is ../shared/data beside the checkout, or the folder named "
            f"by the environment variable WAFERSCOPE_SHARED_DATA (it holds wm811k/ and images/); it is not part of the "
            f"repository (see docs/data.md for the .npz layout: maps_flat, shapes, labels, lot_name)")


class SharedDataMissing(ConfigError):
    """A shared default data file is not on this machine (a fresh clone has no ../shared)."""


def require_shared(path: Path, own: str) -> Path:
    """``path`` when it exists, else :class:`SharedDataMissing` saying what it is.

    Where it was looked for and how to pass one's own instead (``own``, in the caller's terms).
    """
    if not Path(path).exists():
        raise SharedDataMissing(f"{missing_shared_message(path)}. Or pass your own: {own}")
    return Path(path)
