"""Die states and defect-pattern names shared by every part of waferscope."""

from __future__ import annotations

# Die states in a wafer bin map.
NO_DIE, PASS, FAIL = 0, 1, 2
DIE_STATES = (NO_DIE, PASS, FAIL)

# The 9 WM-811K classes, in the order models index them.
CLASSES = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Random", "Scratch", "none")
# The 8 base defect patterns (multi-label targets for mixed-type maps, MixedWM38 order).
BASE_PATTERNS = ("Center", "Donut", "Edge-Loc", "Edge-Ring", "Loc", "Near-full", "Scratch", "Random")
NORMAL = "none"
UNLABELLED = ""
# Labels that mean "normal" in image (MVTec-layout) sets.
NORMAL_LABELS = frozenset({"none", "good"})

_CANONICAL = {c.lower().replace("_", "-").replace(" ", "-"): c for c in CLASSES}
_CANONICAL.update({"edgeloc": "Edge-Loc", "edgering": "Edge-Ring", "nearfull": "Near-full", "normal": "none"})


def canonical_label(name: str) -> str:
    """Map spelling variants ('edge_loc', 'EdgeRing', 'Near-Full') to the WM-811K class name.

    Unknown names are returned unchanged: image sets have their own defect names.
    """
    key = str(name).strip()
    return _CANONICAL.get(key.lower().replace("_", "-").replace(" ", "-"), _CANONICAL.get(key.lower(), key))
