"""Die geometry shared by the lot views.

Where a wafer's die area is, how wafers of one lot are laid on top of each other, and which
zone (ring, quadrant, edge band) each die falls in.

All of it works on the stored orientation (front view, notch down, row 0 at the top; see
:mod:`waferscope.data.loaders.fabcommon`), on die indices, never on physical millimetres.

**Die area** — the positions holding a die (state 1 or 2). Its *bounding box* is rows ``r0..r1``,
columns ``c0..c1``; its *centre* is the box's midpoint ``((r0 + r1) / 2, (c0 + c1) / 2)``.

**Alignment** (:func:`placements`). Two rules, in this order of preference:

1. *Die-coordinate origins.* When every wafer of the lot has the metadata columns
   :data:`ORIGIN_COLUMNS` (``origin_row``, ``origin_col``: the wafer-fixed die coordinate of the
   map's element ``[0, 0]``, in the stored orientation, rows growing down and columns right), die
   ``[r, c]`` of each wafer is placed at ``(origin_row + r, origin_col + c)``: the same physical die
   lands on the same cell whatever part of the wafer each map happens to cover.
2. *Centring* (no origins). Each map is cropped to its die area's bounding box and placed so that
   the boxes' centres coincide. When a box has an even number of rows (columns) its centre falls
   between two dies; the row (column) above (left of) it is used, i.e. the centre index is
   ``(h - 1) // 2`` of the cropped box of height ``h``. Wafers of the same product share their
   extent, and the rule is then exact; wafers whose extents differ by an odd number of dies are
   off by at most half a die, always in the same direction.

**Zones** (:func:`zone_masks`), on each wafer's own grid around its die-area centre:

- *rings*: the normalised radius of a die is ``ρ = sqrt(((r - rc) / R_r)² + ((c - cc) / R_c)²)``
  with ``R_r = (r1 - r0 + 1) / 2`` and ``R_c = (c1 - c0 + 1) / 2`` (half the die area's height and
  width, in dies: an elliptical radius, so a map whose dies are not square still gets round rings);
  ring ``k`` of ``K`` (1 = centre) holds the dies with ``(k - 1) / K ≤ ρ < k / K``, and ρ ≥ 1 (the
  box's corners) counts in ring ``K``. Rings have equal width in ρ, not equal area.
- *quadrants*: ``top-left``, ``top-right``, ``bottom-left``, ``bottom-right`` by the die's side of
  the centre; a die exactly on the centre row counts as bottom, on the centre column as right.
- *edge band*: the dies within ``width`` dies of the wafer's edge, i.e. the die area minus its
  ``width``-fold erosion by the 4-neighbour cross (a die is an edge die when a step of at most
  ``width`` moves up/down/left/right reaches a position without a die or the map's border);
  the other dies are ``inner``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from waferscope.errors import DataError

ORIGIN_COLUMNS = ("origin_row", "origin_col")
QUADRANTS = ("top-left", "top-right", "bottom-left", "bottom-right")
# A stacked canvas larger than this (per side) means origins that put the wafers far apart.
MAX_CANVAS_SIDE = 4096


def die_box(m: np.ndarray) -> tuple[int, int, int, int] | None:
    """(r0, r1, c0, c1) of the die area's bounding box (inclusive), None for a map without dies."""
    on = m != 0
    rows = np.flatnonzero(on.any(1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(on.any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


@dataclass
class Placement:
    """Where one wafer's cropped die area (``map[r0:r1+1, c0:c1+1]``) sits on the lot canvas."""

    box: tuple[int, int, int, int] | None  # None: the map has no die and is not placed
    row: int = 0
    col: int = 0


def placements(maps: list[np.ndarray], origins: np.ndarray | None = None) -> tuple[list[Placement], tuple[int, int], str]:
    """(placement of each map, canvas shape, rule used: ``"origin"`` or ``"centre"``); see the module docstring.

    ``origins`` is an (N, 2) array of (origin_row, origin_col), or None.
    """
    boxes = [die_box(m) for m in maps]
    placed = [b for b in boxes if b is not None]
    if not placed:
        return [Placement(None) for _ in maps], (0, 0), "centre"
    if origins is not None:
        origins = np.asarray(origins, dtype=np.int64).reshape(len(maps), 2)
        tops = [(int(origins[i, 0]) + b[0], int(origins[i, 1]) + b[2]) for i, b in enumerate(boxes) if b is not None]
        top = min(t[0] for t in tops), min(t[1] for t in tops)
        out = [Placement(b) if b is None else
               Placement(b, int(origins[i, 0]) + b[0] - top[0], int(origins[i, 1]) + b[2] - top[1])
               for i, b in enumerate(boxes)]
        rule = "origin"
    else:
        # centre index of each cropped box (floor of the midpoint), then a common anchor
        cr = [(b[1] - b[0]) // 2 for b in placed]
        cc = [(b[3] - b[2]) // 2 for b in placed]
        ar, ac = max(cr), max(cc)
        out = [Placement(b) if b is None else Placement(b, ar - (b[1] - b[0]) // 2, ac - (b[3] - b[2]) // 2)
               for b in boxes]
        rule = "centre"
    height = max(p.row + p.box[1] - p.box[0] + 1 for p in out if p.box is not None)
    width = max(p.col + p.box[3] - p.box[2] + 1 for p in out if p.box is not None)
    if max(height, width) > MAX_CANVAS_SIDE:
        raise DataError(f"the wafers' die-coordinate origins ({', '.join(ORIGIN_COLUMNS)}) spread them over a "
                        f"{height}×{width} grid, more than {MAX_CANVAS_SIDE} dies a side; are the origins right?")
    return out, (height, width), rule


def normalised_radius(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """ρ of every position of a map of ``shape`` whose die area has bounding box ``box``."""
    r0, r1, c0, c1 = box
    rr, cc = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    dr = (rr - (r0 + r1) / 2) / ((r1 - r0 + 1) / 2)
    dc = (cc - (c0 + c1) / 2) / ((c1 - c0 + 1) / 2)
    return np.sqrt(dr * dr + dc * dc)


def zone_names(rings: int) -> list[tuple[str, str]]:
    """(kind, zone) of every zone, in the order of :func:`zone_ids`' numbers."""
    return ([("ring", f"ring {k + 1}") for k in range(rings)] + [("quadrant", q) for q in QUADRANTS]
            + [("edge", "edge"), ("edge", "inner")])


def zone_ids(on: np.ndarray, rings: int = 3, edge_width: int = 1) -> np.ndarray:
    """(3, H, W) int array for the die area ``on`` (bool H×W).

    Per position its ring, quadrant and edge/inner zone as indices into :func:`zone_names` (one
    layer per kind), −1 where there is no die. Depends on the die area only, so wafers of one
    product share it.
    """
    from scipy import ndimage

    if rings < 1:
        raise ValueError(f"rings must be ≥ 1, got {rings}")
    if edge_width < 1:
        raise ValueError(f"edge_width must be ≥ 1, got {edge_width}")
    out = np.full((3,) + on.shape, -1, np.int64)
    box = die_box(on)
    if box is None:
        return out
    rho = normalised_radius(on.shape, box)
    out[0][on] = np.minimum((rho * rings).astype(np.int64), rings - 1)[on]  # ρ ≥ 1 → the outer ring
    r0, r1, c0, c1 = box
    rr, cc = np.mgrid[0:on.shape[0], 0:on.shape[1]]
    # quadrant 0..3 = top-left, top-right, bottom-left, bottom-right (centre row → bottom, column → right)
    quadrant = 2 * (rr >= (r0 + r1) / 2) + (cc >= (c0 + c1) / 2)
    out[1][on] = rings + quadrant[on]
    inner = ndimage.binary_erosion(on, structure=ndimage.generate_binary_structure(2, 1),
                                   iterations=edge_width, border_value=0)
    out[2][on] = rings + 4 + inner[on]
    return out


def zone_masks(m: np.ndarray, rings: int = 3, edge_width: int = 1) -> dict[tuple[str, str], np.ndarray]:
    """(kind, zone) → bool mask of the dies of map ``m`` in that zone.

    Kinds ``ring`` (``ring 1`` .. ``ring K``), ``quadrant`` (:data:`QUADRANTS`) and ``edge``
    (``edge``, ``inner``). Each kind partitions the die area. Empty dict for a map without
    dies.
    """
    on = np.asarray(m) != 0
    if not on.any():
        return {}
    ids = zone_ids(on, rings, edge_width)
    return {name: (ids == j).any(0) for j, name in enumerate(zone_names(rings))}


def ring_bounds(rings: int) -> list[tuple[float, float]]:
    """(ρ from, ρ to) of each ring; the last ring also holds ρ ≥ 1."""
    return [(k / rings, (k + 1) / rings) for k in range(rings)]
