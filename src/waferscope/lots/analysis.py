"""Lot-level views of a :class:`~waferscope.data.dataset.WaferDataset`.

Pure functions returning DataFrames and arrays (the writers live in
:mod:`waferscope.lots.report`).

Definitions (docs/lots.md has the long form):

- a wafer's *dies* are its positions with state 1 (pass) or 2 (fail); *yield* = pass / (pass + fail),
  pooled over the dies of all wafers of the lot (a lot's yield is not the mean of its wafers');
- *class mix*: the share of the lot's classified wafers in each class (classes from ``predictions``
  when given, else the data's own labels; unlabelled wafers are not counted);
- *anomalous share*: the share of the lot's wafers the detector flags (``predictions["anomalous"]``);
- lots are put in *time order* by :func:`lot_order`.

``predictions`` is a DataFrame with one row per wafer, in the data set's order, with any of the
columns ``predicted`` (class name), ``score`` (anomaly score) and ``anomalous`` (bool);
:func:`waferscope.lots.predict.predict_wafers` makes one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np
import pandas as pd

from waferscope.data.classes import UNLABELLED
from waferscope.errors import ConfigError, DataError
from waferscope.lots.geometry import ORIGIN_COLUMNS, placements, ring_bounds, zone_ids, zone_names

# Metadata columns taken as the time a wafer was tested, first found wins (fab loaders that know
# the test start time should write ``start_time``).
TIME_COLUMNS = ("start_time", "test_time", "time", "timestamp", "date")
NO_LOT = "(no lot)"
BINS_ATTR = "bins"  # dataset.attrs["bins"]: wafer id → int array of bin codes (see bin_pareto)
BIN_NAMES_ATTR = "bin_names"  # dataset.attrs["bin_names"]: bin code → name (optional)
NO_BIN = -1
MAP_BY = ("wafers", "yield")  # how analyse() picks the lots whose stacked maps it draws


def _check_wafers(dataset) -> None:
    if dataset.kind != "wafer":
        raise DataError(f"lot views need wafer maps; {dataset.name} holds {dataset.kind}s")
    if len(dataset) == 0:
        raise DataError(f"{dataset.name} holds no wafer maps")


def lot_names(dataset) -> np.ndarray:
    """Each wafer's lot as a string (:data:`NO_LOT` when the metadata has none)."""
    lots = dataset.meta["lot"].fillna("").astype(str).str.strip().to_numpy(dtype=object)
    lots[lots == ""] = NO_LOT
    return lots


def _check_predictions(dataset, predictions: pd.DataFrame | None) -> pd.DataFrame | None:
    if predictions is None:
        return None
    if len(predictions) != len(dataset):
        raise DataError(f"{len(predictions)} prediction rows for {len(dataset)} wafers")
    if "id" in predictions and not np.array_equal(predictions["id"].astype(str).to_numpy(), dataset.ids.astype(str)):
        raise DataError("the predictions' ids are not the data set's ids in the same order")
    return predictions.reset_index(drop=True)


def time_column(meta: pd.DataFrame, column: str | None = None) -> str | None:
    """Return the metadata column that orders lots in time.

    ``column`` (ConfigError when it is missing), else the first of :data:`TIME_COLUMNS`
    present, else None (order of first appearance).
    """
    if column is not None:
        if column not in meta:
            raise ConfigError(f"no time column {column!r} in the metadata; it has: {', '.join(map(str, meta.columns))}")
        return column
    return next((c for c in TIME_COLUMNS if c in meta), None)


def lot_order(dataset, column: str | None = None) -> list[str]:
    """Return the lots in time order: by the earliest value of the time column (:func:`time_column`) over each lot's wafers.

    Numbers as they are, anything else parsed as a date — lots without a time last; ties and the
    no-time-column case by order of first appearance in the data.
    """
    lots = lot_names(dataset)
    first = pd.Series(np.arange(len(lots))).groupby(lots).min()
    col = time_column(dataset.meta, column)
    if col is None:
        return first.sort_values(kind="stable").index.astype(str).tolist()
    values = dataset.meta[col]
    if not pd.api.types.is_numeric_dtype(values):
        parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")  # each value its own format
        bad = values.notna() & parsed.isna() & (values.astype(str).str.strip() != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"time column {col!r}: {values.iloc[i]!r} (wafer {dataset.ids[i]}) is neither a "
                            "number nor a date")
        values = parsed
    start = pd.Series(values.to_numpy()).groupby(lots).min()
    frame = pd.DataFrame({"start": start, "first": first})
    frame["missing"] = frame["start"].isna()
    frame = frame.sort_values(["missing", "start", "first"], kind="stable")
    return frame.index.astype(str).tolist()


def wafer_classes(dataset, predictions: pd.DataFrame | None = None) -> tuple[np.ndarray | None, str | None]:
    """(class of each wafer, "" when unknown; where it came from: ``"predicted"`` / ``"label"``).

    Or (None, None) when there are neither predictions nor labels.
    """
    if predictions is not None and "predicted" in predictions:
        return predictions["predicted"].fillna("").astype(str).to_numpy(dtype=object), "predicted"
    if dataset.is_labelled.any():
        return dataset.labels.astype(str).astype(object), "label"
    return None, None


def wafer_table(dataset, predictions: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per wafer: id, lot, wafer_index, rows, cols, dies, pass_dies, fail_dies, yield and, when known, class.

    Score, anomalous.
    """
    _check_wafers(dataset)
    predictions = _check_predictions(dataset, predictions)
    n = len(dataset)
    passes, fails = np.empty(n, np.int64), np.empty(n, np.int64)
    for i, m in enumerate(dataset.maps):
        counts = np.bincount(m.ravel(), minlength=3)
        passes[i], fails[i] = counts[1], counts[2]
    dies = passes + fails
    shapes = dataset.shapes
    table = pd.DataFrame({
        "id": dataset.ids.astype(str), "lot": lot_names(dataset), "wafer_index": dataset.meta["wafer_index"].to_numpy(),
        "rows": shapes[:, 0], "cols": shapes[:, 1], "dies": dies, "pass_dies": passes, "fail_dies": fails,
        "yield": np.divide(passes, dies, out=np.full(n, np.nan), where=dies > 0),
    })
    classes, source = wafer_classes(dataset, predictions)
    if classes is not None:
        table["class"] = classes
        table.attrs["class_source"] = source
    if predictions is not None:
        for col in ("score", "anomalous"):
            if col in predictions:
                table[col] = predictions[col].to_numpy()
    return table


def lot_summary(dataset, predictions: pd.DataFrame | None = None, *, time: str | None = None,
                wafers: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per lot, in time order (:func:`lot_order`).

    Lot, order (1 = first), wafers, dies, pass_dies, fail_dies, yield (pooled dies),
    wafer_yield_min / wafer_yield_median, and when known ``classified`` (wafers with a class),
    ``share_<class>`` per class, ``top_class``, ``anomalous_share`` and ``score_mean``. ``wafers``:
    :func:`wafer_table`'s result, if at hand.
    """
    table = wafer_table(dataset, predictions) if wafers is None else wafers
    order = lot_order(dataset, time)
    g = table.groupby("lot", sort=False)
    out = pd.DataFrame({
        "wafers": g.size(), "dies": g["dies"].sum(), "pass_dies": g["pass_dies"].sum(), "fail_dies": g["fail_dies"].sum(),
        "wafer_yield_min": g["yield"].min(), "wafer_yield_median": g["yield"].median(),
    })
    out["yield"] = np.divide(out["pass_dies"], out["dies"], out=np.full(len(out), np.nan), where=out["dies"] > 0)
    if "class" in table:
        known = table[table["class"] != UNLABELLED]
        counts = pd.crosstab(known["lot"], known["class"]).reindex(out.index, fill_value=0)
        n_cls = counts.sum(axis=1)
        out["classified"] = n_cls
        for c in sorted(counts.columns):
            out[f"share_{c}"] = np.divide(counts[c], n_cls, out=np.full(len(out), np.nan), where=n_cls > 0)
        # no classified wafer at all: no column to take the maximum of
        out["top_class"] = counts.idxmax(axis=1).where(n_cls > 0, "") if counts.shape[1] else ""

    if "anomalous" in table:
        out["anomalous_share"] = g["anomalous"].mean()
    if "score" in table:
        out["score_mean"] = g["score"].mean()
    out = out.loc[order]
    out.insert(0, "order", np.arange(1, len(out) + 1))
    out.index.name = "lot"
    cols = ["order", "wafers", "dies", "pass_dies", "fail_dies", "yield", "wafer_yield_min", "wafer_yield_median",
            "top_class", "anomalous_share", "score_mean", "classified"]
    cols = [c for c in cols if c in out]
    out = out[cols + [c for c in out.columns if c not in cols]].reset_index()
    out.attrs["class_source"] = table.attrs.get("class_source")
    return out


# ---- stacked lot map ----------------------------------------------------------------------------
@dataclass
class LotStack:
    """Per-die fail frequency across one lot's wafers on a common canvas (see :mod:`.geometry`).

    ``tested[r, c]``: wafers with a die (pass or fail) at that cell; ``fails[r, c]``: those failing;
    ``frequency = fails / tested`` (NaN where no wafer has a die).
    """

    lot: str
    wafers: int
    fails: np.ndarray
    tested: np.ndarray
    rule: str  # "origin" or "centre"
    offsets: list = field(default_factory=list)  # per wafer: (row, col) of its die box on the canvas, or None

    @property
    def frequency(self) -> np.ndarray:
        """Return the fail frequency of every die position (NaN where no wafer has a die)."""
        return np.divide(self.fails, self.tested, out=np.full(self.fails.shape, np.nan), where=self.tested > 0)

    @property
    def max_frequency(self) -> float:
        """Return the highest fail frequency (0 when no die was tested)."""
        f = self.frequency
        return float(np.nanmax(f)) if np.isfinite(f).any() else 0.0


def _origins(meta: pd.DataFrame) -> np.ndarray | None:
    """(N, 2) float origins (:data:`ORIGIN_COLUMNS`), NaN where a wafer lacks an integer one.

    None when the metadata has no such columns.
    """
    if not all(c in meta for c in ORIGIN_COLUMNS):
        return None
    vals = meta[list(ORIGIN_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    vals[~np.isfinite(vals) | (vals != np.round(vals))] = np.nan
    return vals


def stack_maps(maps: list[np.ndarray], origins: np.ndarray | None = None, lot: str = "") -> LotStack:
    """Stack die maps on one canvas (:func:`waferscope.lots.geometry.placements`)."""
    place, shape, rule = placements(maps, origins)
    fails, tested = np.zeros(shape, np.int32), np.zeros(shape, np.int32)
    offsets = []
    for m, p in zip(maps, place):
        if p.box is None:
            offsets.append(None)
            continue
        r0, r1, c0, c1 = p.box
        crop = m[r0:r1 + 1, c0:c1 + 1]
        sl = (slice(p.row, p.row + crop.shape[0]), slice(p.col, p.col + crop.shape[1]))
        tested[sl] += crop != 0
        fails[sl] += crop == 2
        offsets.append((p.row, p.col))
    return LotStack(lot=lot, wafers=len(maps), fails=fails, tested=tested, rule=rule, offsets=offsets)


def lot_stacks(dataset, lots: Iterable[str] | None = None, progress: bool = False) -> dict[str, LotStack]:
    """Lot → its :class:`LotStack` (all lots in time order, or those named in the order given).

    Origins from the metadata (:data:`~waferscope.lots.geometry.ORIGIN_COLUMNS`) are used for a lot when
    all its wafers have them; otherwise its wafers are centred.
    """
    import sys

    from tqdm.auto import tqdm

    _check_wafers(dataset)
    names = lot_names(dataset)
    index = pd.Series(np.arange(len(names))).groupby(names).apply(list).to_dict()
    wanted = lot_order(dataset) if lots is None else [str(x) for x in lots]
    missing = [x for x in wanted if x not in index]
    if missing:
        raise DataError(f"no lot {missing[0]!r} in {dataset.name}")
    origins = _origins(dataset.meta)
    out = {}
    for lot in tqdm(wanted, desc="stacked lot maps", unit="lot", disable=not progress, file=sys.stderr, leave=False):
        idx = index[lot]
        mine = None if origins is None else origins[idx]
        mine = mine.astype(np.int64) if mine is not None and np.isfinite(mine).all() else None
        out[lot] = stack_maps([dataset.maps[i] for i in idx], mine, lot)
    return out


# ---- yield by zone ------------------------------------------------------------------------------
def zone_yield(dataset, *, rings: int = 3, edge_width: int = 1, progress: bool = False,
               order: list[str] | None = None) -> pd.DataFrame:
    """Yield per lot and zone (:func:`waferscope.lots.geometry.zone_masks`), pooled over the lot's dies in the zone.

    Columns lot, kind (``ring``/``quadrant``/``edge``), zone, rho_from, rho_to (rings only), dies,
    pass_dies, fail_dies, yield. Lots in ``order`` (default :func:`lot_order`), zones in a fixed
    order; a lot row with no die in a zone has yield NaN.
    """
    import sys

    from tqdm.auto import tqdm

    _check_wafers(dataset)
    if rings < 1 or edge_width < 1:
        raise ConfigError(f"zones need rings ≥ 1 and an edge width ≥ 1 die (got rings={rings}, "
                          f"edge width={edge_width})")
    names = lot_names(dataset)
    zones = zone_names(rings)
    counts = np.zeros((len(dataset), len(zones), 2), np.int64)  # [wafer, zone, (pass, fail)]
    cache: dict[tuple, np.ndarray] = {}  # die area → zone ids: a product's wafers share one die area
    for i, m in enumerate(tqdm(dataset.maps, desc="zone yield", unit="wafer", disable=not progress,
                               file=sys.stderr, leave=False)):
        on = m != 0
        key = (m.shape, np.packbits(on).tobytes())
        ids = cache.get(key)
        if ids is None:
            ids = cache[key] = zone_ids(on, rings, edge_width)
            if len(cache) > 4096:  # bounded: data sets of ever-different die areas recompute
                cache.pop(next(iter(cache)))
        counts[i, :, 0] = np.bincount(ids[:, m == 1].ravel(), minlength=len(zones))
        counts[i, :, 1] = np.bincount(ids[:, m == 2].ravel(), minlength=len(zones))
    order = lot_order(dataset) if order is None else order
    bounds = ring_bounds(rings)
    rows = []
    codes = {lot: i for i, lot in enumerate(order)}
    lot_code = np.array([codes.get(x, -1) for x in names])
    totals = np.zeros((len(order), len(zones), 2), np.int64)
    np.add.at(totals, lot_code[lot_code >= 0], counts[lot_code >= 0])
    for lot, tot in zip(order, totals):
        for j, (kind, zone) in enumerate(zones):
            p, f = int(tot[j, 0]), int(tot[j, 1])
            lo, hi = bounds[int(zone.split()[1]) - 1] if kind == "ring" else (math.nan, math.nan)
            rows.append((lot, kind, zone, lo, hi, p + f, p, f, p / (p + f) if p + f else math.nan))
    return pd.DataFrame(rows, columns=["lot", "kind", "zone", "rho_from", "rho_to", "dies", "pass_dies",
                                       "fail_dies", "yield"])


# ---- bin Pareto ---------------------------------------------------------------------------------
def wafer_bins(dataset) -> list[np.ndarray | None] | None:
    """Return each wafer's bin codes, from ``dataset.attrs["bins"]``, or None when the data has no bins.

    The attribute maps a wafer id to an integer array of the map's shape (:data:`NO_BIN` = -1 where
    there is no die). A wafer missing from the dict has None; a wrong shape or type is a DataError
    naming the wafer.
    """
    bins = dataset.attrs.get(BINS_ATTR)
    if not bins:
        return None
    if not isinstance(bins, dict):
        raise DataError(f"dataset.attrs[{BINS_ATTR!r}] must map wafer ids to bin arrays, got {type(bins).__name__}")
    out = []
    for wid, m in zip(dataset.ids.astype(str), dataset.maps):
        b = bins.get(wid)
        if b is None:
            out.append(None)
            continue
        b = np.asarray(b)
        if b.shape != m.shape or not np.issubdtype(b.dtype, np.integer):
            raise DataError(f"wafer {wid}: its bins are a {b.dtype} array of shape {b.shape}; expected integers "
                            f"of the map's shape {m.shape}")
        out.append(b)
    return out


def bin_pareto(dataset, *, fail_only: bool = True, order: list[str] | None = None) -> pd.DataFrame:
    """Bin Pareto per lot: columns lot, rank (1 = most dies), bin, bin_name, dies, share (of the lot's counted dies).

    cum_share. Counted dies: the failing ones (map state 2; ``fail_only=False``: all dies), each
    under its bin code from :func:`wafer_bins`. Bins sorted by count, ties by bin code. Empty (same
    columns) when the data has no bins.
    """
    _check_wafers(dataset)
    cols = ["lot", "rank", "bin", "bin_name", "dies", "share", "cum_share"]
    bins = wafer_bins(dataset)
    if bins is None:
        return pd.DataFrame(columns=cols)
    names = dataset.attrs.get(BIN_NAMES_ATTR) or {}
    lots = lot_names(dataset)
    codes, lot_of = [], []
    for i, (m, b) in enumerate(zip(dataset.maps, bins)):
        if b is None:
            continue
        sel = (m == 2) if fail_only else (m != 0)
        vals = b[sel]
        if (vals == NO_BIN).any():
            raise DataError(f"wafer {dataset.ids[i]}: a die has no bin ({NO_BIN}) in its bin array")
        codes.append(vals.astype(np.int64))
        lot_of.append(np.full(vals.size, lots[i], dtype=object))
    if not codes:
        return pd.DataFrame(columns=cols)
    frame = pd.DataFrame({"lot": np.concatenate(lot_of), "bin": np.concatenate(codes)})
    counts = frame.groupby(["lot", "bin"]).size().rename("dies").reset_index()
    rows = []
    by_lot = dict(tuple(counts.groupby("lot", sort=False)))
    for lot in (lot_order(dataset) if order is None else order):
        if lot not in by_lot:
            continue
        part = by_lot[lot].sort_values(["dies", "bin"], ascending=[False, True])
        total = part["dies"].sum()
        cum = 0
        for rank, (b, d) in enumerate(zip(part["bin"], part["dies"]), 1):
            cum += d
            rows.append((lot, rank, int(b), str(names.get(int(b), names.get(str(int(b)), ""))), int(d),
                         d / total, cum / total))
    return pd.DataFrame(rows, columns=cols)


# ---- signature trend with p-chart limits --------------------------------------------------------
def p_chart(counts: np.ndarray, n: np.ndarray, sigma: float = 3.0) -> dict[str, np.ndarray | float]:
    """p-chart of proportions ``counts / n`` per subgroup (lot).

    Centre line ``p̄ = Σcounts / Σn``, ``σ_i = sqrt(p̄(1 - p̄) / n_i)``, limits ``p̄ ± sigma·σ_i``
    clipped to [0, 1]; a lot is out of control when its p is strictly above the upper or below the
    lower limit.
    """
    counts, n = np.asarray(counts, np.float64), np.asarray(n, np.float64)
    if (n <= 0).any():
        raise ValueError("every subgroup needs n ≥ 1")
    p = counts / n
    p_bar = float(counts.sum() / n.sum())
    s = np.sqrt(p_bar * (1 - p_bar) / n)
    lcl, ucl = np.clip(p_bar - sigma * s, 0, 1), np.clip(p_bar + sigma * s, 0, 1)
    state = np.where(p > ucl, "high", np.where(p < lcl, "low", ""))
    return {"p": p, "p_bar": p_bar, "sigma": s, "lcl": lcl, "ucl": ucl, "state": state}


def signature_trend(dataset, predictions: pd.DataFrame | None = None, *, sigma: float = 3.0,
                    classes: list[str] | None = None, time: str | None = None, min_wafers: int = 1,
                    wafers: pd.DataFrame | None = None) -> pd.DataFrame:
    """Share of each class (and of anomalous wafers, signature ``anomalous``) per lot in time order.

    With p-chart limits (:func:`p_chart`) over the lots with at least ``min_wafers`` classified
    wafers. Columns: lot, order, signature, n, count, p, p_bar, sigma, lcl, ucl, out_of_control
    (``high``/``low``/""). Empty when there are neither classes nor anomaly flags.
    """
    if sigma <= 0:
        raise ConfigError(f"the control limits need sigma > 0, got {sigma}")
    table = wafer_table(dataset, predictions) if wafers is None else wafers
    order = lot_order(dataset, time)
    rank = {lot: i + 1 for i, lot in enumerate(order)}
    cols = ["lot", "order", "signature", "n", "count", "p", "p_bar", "sigma", "lcl", "ucl", "out_of_control"]
    parts = []
    if "class" in table:
        known = table[table["class"] != UNLABELLED]
        counts = pd.crosstab(known["lot"], known["class"])
        names = sorted(counts.columns) if classes is None else list(classes)
        counts = counts.reindex(columns=names, fill_value=0)
        parts += [(c, counts[c], counts.sum(axis=1)) for c in names]
    if "anomalous" in table:
        g = table.groupby("lot")["anomalous"]
        parts.append(("anomalous", g.sum().astype(np.int64), g.size()))
    frames = []
    for sig, count, n in parts:
        n_all = n.reindex(order).fillna(0).to_numpy()
        lots = [x for x, k in zip(order, n_all) if k >= max(min_wafers, 1)]
        if not lots:
            continue
        c, nn = count.reindex(lots).to_numpy(), n.reindex(lots).to_numpy()
        chart = p_chart(c, nn, sigma)
        frames.append(pd.DataFrame({
            "lot": lots, "order": [rank[x] for x in lots], "signature": sig, "n": nn.astype(np.int64),
            "count": c.astype(np.int64), "p": chart["p"], "p_bar": chart["p_bar"], "sigma": chart["sigma"],
            "lcl": chart["lcl"], "ucl": chart["ucl"], "out_of_control": chart["state"]}))
    return pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)


# ---- everything at once -------------------------------------------------------------------------
@dataclass
class LotReport:
    """What :func:`analyse` computes: the tables, the stacked maps of the chosen lots and settings."""

    wafers: pd.DataFrame
    summary: pd.DataFrame
    zones: pd.DataFrame
    pareto: pd.DataFrame
    trend: pd.DataFrame
    stacks: dict[str, LotStack]
    settings: dict = field(default_factory=dict)


def analyse(dataset, predictions: pd.DataFrame | None = None, *, rings: int = 3, edge_width: int = 1,
            sigma: float = 3.0, time: str | None = None, map_lots: int | None = 24, map_by: str = "wafers",
            min_wafers: int = 1, progress: bool = False) -> LotReport:
    """Every lot view of ``dataset``; the summary gains ``out_of_control``.

    The lot's flagged trend signatures ("Center high, anomalous low"). ``map_lots``: stack the maps
    of that many lots (None = all), chosen by ``map_by``: ``"wafers"`` (the most wafers first) or
    ``"yield"`` (the lowest yield first among lots with ≥ ``min_wafers`` wafers); ties by time order,
    drawn in time order. ``min_wafers`` also limits the trend's lots (:func:`signature_trend`).
    """
    _check_wafers(dataset)
    predictions = _check_predictions(dataset, predictions)
    if map_by not in MAP_BY:
        raise ConfigError(f"stacked maps are chosen by one of {', '.join(MAP_BY)}, not {map_by!r}")
    if map_lots is not None and map_lots < 0:
        raise ConfigError(f"the number of stacked lot maps must be ≥ 0, got {map_lots}")
    wafers = wafer_table(dataset, predictions)
    summary = lot_summary(dataset, predictions, time=time, wafers=wafers)
    order = summary["lot"].tolist()
    zones = zone_yield(dataset, rings=rings, edge_width=edge_width, progress=progress, order=order)
    pareto = bin_pareto(dataset, order=order)
    trend = signature_trend(dataset, predictions, sigma=sigma, time=time, min_wafers=min_wafers, wafers=wafers)
    flagged = trend[trend["out_of_control"] != ""]
    marks = (flagged["signature"] + " " + flagged["out_of_control"]).groupby(flagged["lot"]).agg(", ".join)
    # beside the class columns, so that the page's table shows it without scrolling
    at = summary.columns.get_loc("top_class") + 1 if "top_class" in summary else len(summary.columns)
    summary.insert(at, "out_of_control", [marks.get(x, "") for x in summary["lot"]])
    if map_by == "wafers":
        chosen = summary.sort_values(["wafers", "order"], ascending=[False, True], kind="stable")["lot"].tolist()
    else:  # lowest yield first, among lots with enough wafers for the stack to mean something
        pool = summary[summary["wafers"] >= min_wafers]
        pool = summary if pool.empty else pool
        chosen = pool.sort_values(["yield", "order"], kind="stable")["lot"].tolist()
    chosen = chosen if map_lots is None else chosen[:map_lots]
    chosen = [x for x in order if x in set(chosen)]  # drawn in time order
    stacks = lot_stacks(dataset, chosen, progress=progress)
    settings = {"rings": rings, "edge_width": edge_width, "sigma": sigma, "min_wafers": min_wafers,
                "time_column": time_column(dataset.meta, time), "map_by": map_by,
                "class_source": wafers.attrs.get("class_source"),
                "wafers": len(dataset), "lots": len(summary), "data": dataset.name}
    return LotReport(wafers=wafers, summary=summary, zones=zones, pareto=pareto, trend=trend, stacks=stacks,
                     settings=settings)
