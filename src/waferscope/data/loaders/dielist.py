"""CSV die list: one row per die, a header naming the columns; a file may hold many wafers of many lots.

Rows are grouped into wafers by ``(lot, wafer)`` in the order wafers first appear.

Columns are found by name, case-insensitively, among the common aliases real exports use (first
match wins, in this order):

- ``x``: x, die_x, diex, x_coord, xcoord, x_index, xindex, xadr
- ``y``: y, die_y, diey, y_coord, ycoord, y_index, yindex, yadr (not row/col: those count downwards)
- ``bin``: hard_bin, hardbin, hbin, hb, hw_bin, bin, bin_code, bincode, then soft bins
  (soft_bin, softbin, sbin, sb, sw_bin) only when there is no hard bin
- ``pass_fail`` (used when there is no bin column): pass_fail, passfail, pf, pass —
  values P/F, PASS/FAIL, 1/0, TRUE/FALSE, GOOD/BAD (any case)
- ``lot``: lot, lot_id, lotid, lot_no, lotno, lot_number (optional: ``""``)
- ``wafer``: wafer, wafer_id, waferid, wafer_no, waferno, wafer_number, wafer_num (optional: one wafer)

- ``time`` (optional): start_time, test_time, start_t, time, timestamp, date — the wafer's first
  non-empty value becomes the metadata column ``start_time`` (the lot views' time order)

Lot views (:mod:`waferscope.lots`): every die's bin code (the ``bin`` column) goes to
``dataset.attrs["bins"]``, and the die coordinates give ``origin_row``/``origin_col``.

``columns`` (``load(path, columns={"x": "DIE_X", "bin": "SORT", ...})``, or the string
``"x=DIE_X,bin=SORT"``) names them explicitly and wins over the aliases; its extra key ``y_axis``
(``up``, the default, or ``down``) says which way y grows.

Bins: ``pass_bins`` (default: bin 1 passes, any other bin fails). Orientation: y grows upwards
(as STDF's default and most probers' die coordinates), x to the right, notch down: row 0 of the
stored map is the largest y (see :mod:`waferscope.data.loaders.fabcommon`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from waferscope.data.dataset import WaferDataset
from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.data.loaders.fabcommon import (DEFAULT_MAPPING, FAIL, PASS, BinMapping, bins_attrs, dies_to_grid,
                                               fab_meta, grid_origin, map_bin, orient_grid, origin_columns)
from waferscope.errors import DataError

ALIASES = {
    "x": ("x", "die_x", "diex", "x_coord", "xcoord", "x_index", "xindex", "xadr"),
    "y": ("y", "die_y", "diey", "y_coord", "ycoord", "y_index", "yindex", "yadr"),
    "bin": ("hard_bin", "hardbin", "hbin", "hb", "hw_bin", "bin", "bin_code", "bincode"),
    "soft_bin": ("soft_bin", "softbin", "sbin", "sb", "sw_bin"),
    "pass_fail": ("pass_fail", "passfail", "pf", "pass"),
    "lot": ("lot", "lot_id", "lotid", "lot_no", "lotno", "lot_number"),
    "wafer": ("wafer", "wafer_id", "waferid", "wafer_no", "waferno", "wafer_number", "wafer_num"),
    "time": ("start_time", "test_time", "start_t", "time", "timestamp", "date"),
}
ROLES = ("lot", "wafer", "x", "y", "bin", "pass_fail", "time")
PASS_WORDS = {"p": PASS, "pass": PASS, "1": PASS, "true": PASS, "good": PASS, "g": PASS,
              "f": FAIL, "fail": FAIL, "0": FAIL, "false": FAIL, "bad": FAIL, "b": FAIL}


def header_columns(first_line: str) -> list[str]:
    """Return the lower-cased column names of a CSV header line."""
    return [c.strip().strip('"').lower() for c in first_line.split(",")]


def parse_columns(columns) -> dict:
    """``None``, a dict or ``"x=DIE_X,y=DIE_Y"`` → ``{role: header name}`` (DataError when malformed)."""
    if columns is None:
        return {}
    if isinstance(columns, str):
        out = {}
        for part in filter(None, (p.strip() for p in columns.split(","))):
            role, sep, name = part.partition("=")
            if not sep or not name.strip():
                raise DataError(f"bad columns value {part!r}: expected ROLE=COLUMN pairs like x=DIE_X,bin=HBIN")
            out[role.strip().lower()] = name.strip()
        columns = out
    columns = {str(k).lower(): str(v) for k, v in dict(columns).items()}
    unknown = sorted(set(columns) - set(ROLES) - {"y_axis"})
    if unknown:
        raise DataError(f"unknown column role(s) {', '.join(unknown)}: expected {', '.join(ROLES)} or y_axis")
    if columns.get("y_axis", "up").lower() not in ("up", "down"):
        raise DataError(f"y_axis must be up or down, got {columns['y_axis']!r}")
    return columns


def find_columns(names: list[str], columns: dict) -> dict:
    """``{role: index}`` for the header ``names`` (lower-case); explicit ``columns`` first, then aliases."""
    found: dict = {}
    for role, name in columns.items():
        if role in ROLES:
            if name.lower() not in names:
                raise KeyError(f"column {name!r} given for {role} is not in the header")
            found[role] = names.index(name.lower())
    for role in ("x", "y", "bin", "pass_fail", "lot", "wafer", "time"):
        if role in found:
            continue
        for alias in ALIASES[role] + (ALIASES["soft_bin"] if role == "bin" else ()):
            if alias in names:
                found[role] = names.index(alias)
                break
    return found


def looks_like_dielist(first_line: str) -> bool:
    """Return whether a CSV header names die coordinates and a bin or pass/fail column."""
    found = find_columns(header_columns(first_line), {})
    return {"x", "y"} <= set(found) and ("bin" in found or "pass_fail" in found)


def _integer(text: str, what: str, path: Path, line: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        try:  # spreadsheet exports write 3.0 for 3
            value = float(text.strip())
            if value.is_integer():
                return int(value)
        except ValueError:
            pass
        raise DataError(f"line {line}: {what} {text!r} is not a number" if text.strip() else
                        f"line {line}: {what} is empty", path) from None


def _read_header(reader, wanted: dict, pass_bins: BinMapping | None, path: Path) -> tuple[list[str], dict]:
    """Return the header row and the column of each role in it; a DataError for a missing role."""
    header = next(reader, None)
    if header is None:
        raise DataError("the file is empty", path)
    names = [h.strip().lower() for h in header]
    try:
        col = find_columns(names, wanted)
    except KeyError as exc:
        raise DataError(f"line 1: {exc.args[0]} ({', '.join(header)})", path) from None
    missing = [r for r in ("x", "y") if r not in col] + ([] if "bin" in col or "pass_fail" in col else ["bin"])
    if missing:
        raise DataError(f"line 1: the header lacks column(s) {', '.join(missing)} (looked for "
                        + "; ".join(f"{r}: {', '.join(ALIASES[r][:4])}…" for r in missing)
                        + "; name them with the columns option, e.g. x=DIE_X,y=DIE_Y,bin=HBIN)", path)
    if "bin" not in col and pass_bins is not None:
        raise DataError("pass bins were given but the file has no bin column (only "
                        f"{header[col['pass_fail']]!r})", path)
    return header, col


def _die_state(row: list[str], col: dict, header: list[str], mapping: BinMapping, path: Path,
               line: int) -> tuple[int | None, int]:
    """Return (bin code or None, die state) of one row, from its bin or its pass/fail word."""
    if "bin" in col:
        code = _integer(row[col["bin"]], header[col["bin"]], path, line)
        return code, map_bin(mapping, code, path, f"line {line}")
    word = row[col["pass_fail"]].strip().lower()
    if word not in PASS_WORDS:
        raise DataError(f"line {line}: {header[col['pass_fail']]} {row[col['pass_fail']]!r} is not "
                        "P/F, PASS/FAIL, 1/0, TRUE/FALSE or GOOD/BAD", path)
    return None, PASS_WORDS[word]


def _grids(wafers: dict, bins: dict | None, y_up: bool, budget, path: Path) -> tuple[list, list, list]:
    """Return each wafer's oriented map, its grid origin and (with ``bins``) its grid of bin codes."""
    maps, origins, codes = [], [], []
    for key, dies in wafers.items():
        grid = dies_to_grid(dies, path, key[1] or path.stem, budget=budget)
        xs = np.fromiter((d[0] for d in dies), np.int64, len(dies))
        ys = np.fromiter((d[1] for d in dies), np.int64, len(dies))
        maps.append(orient_grid(grid, y_up=y_up))
        origins.append(grid_origin(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()), y_up=y_up))
        if bins is not None:  # the lot views' bin Pareto: every die's code, on the same grid
            raw = np.full(grid.shape, -1, np.int32)
            raw[ys - ys.min(), xs - xs.min()] = np.asarray(bins[key], np.int64)
            codes.append(orient_grid(raw, y_up=y_up))
    return maps, origins, codes


def load_dielist(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None,
                 columns=None) -> WaferDataset:
    """Read a CSV die list (see the module docstring): one map per (lot, wafer)."""
    from waferscope.data.compressed import open_binary

    path = Path(path)
    limits = resolve_limits(limits)
    wanted = parse_columns(columns)
    mapping = pass_bins or DEFAULT_MAPPING
    wafers: dict[tuple[str, str], list] = {}
    bins: dict[tuple[str, str], list] = {}   # each wafer's bin codes, in its dies' order
    times: dict[tuple[str, str], str] = {}   # each wafer's first non-empty time value
    try:
        with open_binary(path, limits) as raw, \
                io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as fh:  # spreadsheet exports add a BOM
            reader = csv.reader(fh)
            header, col = _read_header(reader, wanted, pass_bins, path)
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank lines (often one at the end) carry no die
                if len(row) < len(header):
                    raise DataError(f"line {line}: {len(row)} fields, the header has {len(header)}", path)
                lot = row[col["lot"]].strip() if "lot" in col else ""
                wafer = row[col["wafer"]].strip() if "wafer" in col else ""
                x = _integer(row[col["x"]], header[col["x"]], path, line)
                y = _integer(row[col["y"]], header[col["y"]], path, line)
                code, state = _die_state(row, col, header, mapping, path, line)
                dies = wafers.get((lot, wafer))
                if dies is None:
                    dies = wafers[(lot, wafer)] = []
                    bins[(lot, wafer)] = []
                    limits.check_count(len(wafers), path, "wafers")
                dies.append((x, y, state, f"line {line}"))
                bins[(lot, wafer)].append(code)
                if "time" in col and (lot, wafer) not in times and row[col["time"]].strip():
                    times[(lot, wafer)] = row[col["time"]].strip()
    except UnicodeDecodeError as exc:
        raise DataError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", path) from None
    except csv.Error as exc:
        raise DataError(f"not a readable CSV file ({exc})", path) from None
    if not wafers:
        raise DataError("no die rows after the header", path)
    y_up = wanted.get("y_axis", "up").lower() == "up"
    budget = limits.budget(path)  # each wafer's coordinate span is charged before its grid is allocated
    maps, origins, codes = _grids(wafers, bins if "bin" in col else None, y_up, budget, path)
    extra = origin_columns(origins)
    if "time" in col:
        extra["start_time"] = [times.get(k, "") for k in wafers]
    meta = fab_meta(path, [k[0] for k in wafers], [k[1] for k in wafers], "dielist-csv", **extra)
    ds = WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
    if codes:
        ds.attrs.update(bins_attrs(meta["id"], codes))
    return ds
