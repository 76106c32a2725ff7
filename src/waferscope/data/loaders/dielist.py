"""Plain CSV die list: a header ``lot,wafer,x,y,bin`` (any order, any case, extra columns ignored)
and one row per die; a file may hold many wafers of many lots. Rows are grouped into wafers by
``(lot, wafer)`` in the order wafers first appear.

Bins: ``pass_bins`` (default: bin 1 passes, any other bin fails). Grid and orientation:
:mod:`waferscope.data.loaders.fabcommon` (row 0 = smallest y).
"""

from __future__ import annotations

import csv
from pathlib import Path

from waferscope.data.limits import LoadLimits
from waferscope.data.dataset import WaferDataset
from waferscope.data.loaders.fabcommon import DEFAULT_MAPPING, BinMapping, dies_to_grid, fab_meta, map_bin
from waferscope.errors import DataError

REQUIRED = ("lot", "wafer", "x", "y", "bin")


def header_columns(first_line: str) -> list[str]:
    return [c.strip().strip('"').lower() for c in first_line.split(",")]


def looks_like_dielist(first_line: str) -> bool:
    return set(REQUIRED) <= set(header_columns(first_line))


def _integer(text: str, what: str, path: Path, line: int) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise DataError(f"line {line}: {what} {text!r} is not a number" if text.strip() else
                        f"line {line}: {what} is empty", path) from None


def load_dielist(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    path = Path(path)
    mapping = pass_bins or DEFAULT_MAPPING
    wafers: dict[tuple[str, str], list] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # utf-8-sig: spreadsheet exports add a BOM
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None:
                raise DataError("the file is empty", path)
            names = [h.strip().lower() for h in header]
            missing = [c for c in REQUIRED if c not in names]
            if missing:
                raise DataError(f"line 1: the header lacks column(s) {', '.join(missing)} (expected "
                                f"{','.join(REQUIRED)})", path)
            col = {c: names.index(c) for c in REQUIRED}
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # blank lines (often one at the end) carry no die
                if len(row) < len(names):
                    raise DataError(f"line {line}: {len(row)} fields, the header has {len(names)}", path)
                lot, wafer = row[col["lot"]].strip(), row[col["wafer"]].strip()
                x = _integer(row[col["x"]], "x", path, line)
                y = _integer(row[col["y"]], "y", path, line)
                bin_code = _integer(row[col["bin"]], "bin", path, line)
                state = map_bin(mapping, bin_code, path, f"line {line}")
                wafers.setdefault((lot, wafer), []).append((x, y, state, f"line {line}"))
    except UnicodeDecodeError as exc:
        raise DataError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", path) from None
    except csv.Error as exc:
        raise DataError(f"not a readable CSV file ({exc})", path) from None
    if not wafers:
        raise DataError("no die rows after the header", path)
    maps = [dies_to_grid(dies, path, wafer) for (_, wafer), dies in wafers.items()]
    meta = fab_meta(path, [k[0] for k in wafers], [k[1] for k in wafers], "dielist-csv")
    return WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
