"""Wafer geometry on a die grid: which grid cells hold a die, where each die sits on the wafer.

A wafer is round; its die grid is rectangular only because dies are (a 39×34 grid holds a round
wafer of rectangular dies). So every pattern is drawn in *wafer coordinates* ``(u, v)``: the unit
disk, ``u`` down the rows, ``v`` along the columns, and the grid ellipse maps onto it.

Geometry depends only on the grid size and a few discrete edge variants, so it is computed once
and cached. Only exactly-rounded float operations (+ - × ÷ sqrt) are used, so every machine gets
the same footprint and the same die coordinates bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

# Where the wafer edge falls relative to the inscribed ellipse: real WM-811K footprints match
# "die centre inside (0.95–1.0)× the ellipse" (measured on the 21 die grids of the dev maps).
EDGE_LEVELS = (0.94, 0.97, 1.0)
# Optional wafer flat: drop the dies beyond this normalised distance on one side.
FLAT_DEPTHS = (0.93, 0.88)
FLAT_SIDES = ("top", "bottom", "left", "right")


@dataclass(frozen=True)
class Geometry:
    """The die grid of a synthetic wafer: which cells hold a die, their wafer coordinates, radii and rings."""

    rows: int
    cols: int
    template: np.ndarray  # uint8 (rows*cols,): 1 where a die exists, 0 elsewhere
    on_index: np.ndarray  # intp (n,): flat grid index of every die
    grid_to_die: np.ndarray  # intp (rows*cols,): die number of each cell, -1 off the wafer
    u: np.ndarray  # float64 (n,): wafer coordinate down the rows, -1..1
    v: np.ndarray  # float64 (n,): wafer coordinate along the columns, -1..1
    rho: np.ndarray  # float64 (n,): distance from the wafer centre (1 = wafer edge)
    cos_t: np.ndarray  # float64 (n,): v / rho (direction of the die seen from the centre)
    sin_t: np.ndarray  # float64 (n,): u / rho
    ring: np.ndarray  # int16 (n,): 0 for the outermost ring of dies, 1 for the next, ...
    basis: np.ndarray  # float64 (K, n): smooth low-order polynomials for random fields

    @property
    def n_dies(self) -> int:
        """Return the number of dies."""
        return len(self.on_index)


def _poly_basis(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # Monomials up to degree 3 (without the constant): random combinations of them give smooth,
    # wafer-scale density variations with one to three hills, like process gradients on wafers.
    # All lie in [-1, 1] on the unit disk. Fields are built by explicit multiply-adds over rows
    # (never BLAS, whose summation order differs between machines).
    pu, pv = [np.ones_like(u)], [np.ones_like(v)]
    for _ in range(3):  # repeated products, not pow(): pow() is not correctly rounded everywhere
        pu.append(pu[-1] * u)
        pv.append(pv[-1] * v)
    terms = [pu[a] * pv[deg - a] for deg in range(1, 4) for a in range(deg + 1)]
    return np.ascontiguousarray(np.stack(terms, axis=0))


@lru_cache(maxsize=2048)
def geometry(rows: int, cols: int, edge: int = 2, flat: int = -1, flat_depth: int = 0) -> Geometry:
    """Return the cached geometry of a rows×cols die grid.

    ``edge`` indexes :data:`EDGE_LEVELS`; ``flat`` indexes :data:`FLAT_SIDES` (-1 = no flat).
    """
    r = (np.arange(rows, dtype=np.float64) + 0.5 - rows / 2) / (rows / 2)
    c = (np.arange(cols, dtype=np.float64) + 0.5 - cols / 2) / (cols / 2)
    uu, vv = np.meshgrid(r, c, indexing="ij")
    on = uu * uu + vv * vv <= EDGE_LEVELS[edge]
    if flat >= 0:
        depth = FLAT_DEPTHS[flat_depth]
        side = FLAT_SIDES[flat]
        on &= {"top": uu >= -depth, "bottom": uu <= depth, "left": vv >= -depth, "right": vv <= depth}[side]
    if not on.any():  # tiny grids: keep at least the centre die
        on[rows // 2, cols // 2] = True
    flat_on = on.ravel()
    on_index = np.flatnonzero(flat_on)
    grid_to_die = np.full(rows * cols, -1, dtype=np.intp)
    grid_to_die[on_index] = np.arange(len(on_index))
    u = uu.ravel()[on_index]
    v = vv.ravel()[on_index]
    rho = np.sqrt(u * u + v * v)
    safe = np.where(rho > 0, rho, 1.0)
    cos_t = np.where(rho > 0, v / safe, 1.0)
    sin_t = np.where(rho > 0, u / safe, 0.0)
    # Ring number = chessboard distance (in dies) to the nearest cell without a die, minus one.
    padded = np.pad(on, 1)
    dist = ndimage.distance_transform_cdt(padded, metric="chessboard")[1:-1, 1:-1]
    ring = (dist.ravel()[on_index] - 1).astype(np.int16)
    template = flat_on.astype(np.uint8)
    for arr in (template, on_index, grid_to_die, u, v, rho, cos_t, sin_t, ring):
        arr.setflags(write=False)
    basis = _poly_basis(u, v)
    basis.setflags(write=False)
    return Geometry(rows, cols, template, on_index, grid_to_die, u, v, rho, cos_t, sin_t, ring, basis)
