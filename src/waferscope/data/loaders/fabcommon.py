"""What every fab wafer-map reader (STDF, SEMI E142, SEMI G85, KLARF, CSV die list) shares.

The pass/fail bin mapping, turning a list of dies into a die-state grid, and the metadata
columns.

Bin mapping (``load(path, pass_bins=...)``, CLI ``--pass-bins``), one syntax for every format:

- ``None`` (default): the format's own default (see each loader; bin 1 = pass, any other bin = fail
  unless the file itself says which bins pass).
- ``"1,2,5-7"``: these bins pass, every other bin fails (lenient).
- ``"1,2/3-9"``: bins left of ``/`` pass, bins right of it fail, and any other bin in the file is an
  error (strict: a bin nobody mapped is reported instead of silently becoming a fail).

Grid: die coordinates ``(x, y)`` become array index ``[y - min(y), x - min(x)]`` (:func:`dies_to_grid`),
then :func:`orient_grid` turns that raw grid into waferscope's one stored orientation:

    **the wafer seen from the front (die side), notch (or flat) at the bottom; row 0 is the top row of
    the picture, column 0 its left column**, as KLA/STDF viewers draw a map by default.

Each loader says, from the file itself (STDF WCR POS_X/POS_Y/WF_FLAT, KLARF OrientationMarkLocation
and its y-up die indices, G85/E142 orientation and origin), which way its axes point and where the
notch is; docs/data.md lists the rule per format. Positions no die was reported at are 0 (no die).
:func:`notch_from_angle` reads a notch angle (G85/E142: degrees clockwise from the bottom).

Die pitch: a loader whose file states the die size passes ``(x, y)`` per map through
:func:`oriented_pitch` (a quarter turn swaps them) and :func:`pitch_columns` into the metadata
columns ``die_pitch_x`` / ``die_pitch_y``, which ``data show`` uses for the die aspect ratio.

Limits: :func:`dies_to_grid` and :func:`bin_rows_to_grid` take a ``budget``
(:meth:`LoadLimits.budget`) charged with each grid's shape before it is allocated.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from waferscope.errors import DataError

from waferscope.data.limits import MAX_GRID_SPAN  # noqa: F401  (re-exported: loaders import it from here)

PASS, FAIL = 1, 2
NOTCH_SIDES = ("down", "up", "left", "right")

_RANGE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


@dataclass(frozen=True)
class BinMapping:
    """Which bins pass; ``fail_bins`` given makes the mapping strict (other bins are errors)."""

    pass_bins: frozenset
    fail_bins: frozenset | None = None

    @property
    def strict(self) -> bool:
        """Return whether the mapping names fail bins too (any other bin is then an error)."""
        return self.fail_bins is not None

    def state(self, bin_code) -> int:
        """1 (pass) or 2 (fail); KeyError for a bin a strict mapping does not list."""
        if bin_code in self.pass_bins:
            return PASS
        if self.fail_bins is None or bin_code in self.fail_bins:
            return FAIL
        raise KeyError(bin_code)

    def describe(self) -> str:
        """Describe the mapping as ``--pass-bins`` text."""
        text = ",".join(map(str, sorted(self.pass_bins)))
        return text + ("/" + ",".join(map(str, sorted(self.fail_bins))) if self.strict else "")


DEFAULT_MAPPING = BinMapping(frozenset({1}))


def _parse_bin_list(text: str, option: str) -> frozenset:
    bins: set[int] = set()
    for token in filter(None, (t.strip() for t in text.split(","))):
        m = _RANGE.match(token)
        if not m:
            raise DataError(f"bad {option} value {token!r}: expected bin numbers or "
                            "ranges like 1,2,5-7 (and optionally /FAIL-BINS for a strict mapping)")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if hi < lo:
            raise DataError(f"bad {option} range {token!r}: the end is below the start")
        bins.update(range(lo, hi + 1))
    return frozenset(bins)


def parse_bin_mapping(value, option: str = "pass_bins") -> BinMapping | None:
    """``None`` → None (the format's default).

    A string ``"1,2"`` / ``"1,2/3-9"``, an int, an iterable of ints or a
    :class:`BinMapping` → a BinMapping (DataError when malformed).
    """
    if value is None or isinstance(value, BinMapping):
        return value
    if isinstance(value, (int, np.integer)):
        return BinMapping(frozenset({int(value)}))
    if isinstance(value, str):
        if value.count("/") > 1:
            raise DataError(f"bad {option} {value!r}: at most one '/' (PASS-BINS/FAIL-BINS)")
        pass_text, _, fail_text = value.partition("/")
        passes = _parse_bin_list(pass_text, option)
        if not passes:
            raise DataError(f"bad {option} {value!r}: no pass bin given")
        fails = _parse_bin_list(fail_text, option) if "/" in value else None
        if fails is not None and passes & fails:
            raise DataError(f"bad {option} {value!r}: bins {sorted(passes & fails)} are both pass and fail")
        return BinMapping(passes, fails)
    try:
        return BinMapping(frozenset(int(v) for v in value))
    except (TypeError, ValueError):
        raise DataError(f"bad {option} {value!r}: expected a string like '1,2' or '1/2-9', or bin numbers") from None


def map_bin(mapping: BinMapping, bin_code, path: Path, where: str) -> int:
    """Return the die state of ``bin_code``; a DataError naming the file and location when it is unmapped."""
    try:
        return mapping.state(bin_code)
    except KeyError:
        raise DataError(f"{where}: bin {bin_code} is in neither the pass nor the fail bins of the strict "
                        f"mapping {mapping.describe()}", path) from None


def dies_to_grid(dies: Sequence[tuple[int, int, int, str]], path: Path, wafer: str, budget=None) -> np.ndarray:
    """``(x, y, state, where)`` dies of one wafer → a uint8 grid (see the module docstring).

    ``where`` ("line 17", "record 42") names the die in the error for a die reported twice.
    ``budget`` (a :class:`~waferscope.data.limits.DieBudget`) is charged with the grid's shape
    before the grid is allocated.
    """
    if not dies:
        raise DataError(f"wafer {wafer!r}: no dies", path)
    xs = np.fromiter((d[0] for d in dies), np.int64, len(dies))
    ys = np.fromiter((d[1] for d in dies), np.int64, len(dies))
    span_x, span_y = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
    if max(span_x, span_y) > MAX_GRID_SPAN:
        axis, lo, hi = ("x", xs.min(), xs.max()) if span_x >= span_y else ("y", ys.min(), ys.max())
        far = dies[int(np.argmax(np.abs(xs - np.median(xs)) if axis == "x" else np.abs(ys - np.median(ys))))]
        raise DataError(f"{far[3]}: wafer {wafer!r}: die {axis} coordinates span {lo}..{hi}, more than "
                        f"{MAX_GRID_SPAN} dies: the die at ({far[0]}, {far[1]}) lies outside any wafer grid", path)
    if budget is not None:
        budget.add((span_y, span_x), f"wafer {wafer!r}")
    grid = np.zeros((span_y, span_x), np.uint8)
    seen: dict[tuple[int, int], int] = {}
    for i, ((x, y, state, where), r, c) in enumerate(zip(dies, ys - ys.min(), xs - xs.min())):
        first = seen.setdefault((x, y), i)
        if first != i:
            raise DataError(f"{where}: wafer {wafer!r}: die ({x}, {y}) appears twice (first at "
                            f"{dies[first][3]})", path)
        grid[r, c] = state
    return grid


def orient_grid(grid: np.ndarray, *, y_up: bool, x_right: bool = True, notch: str = "down") -> np.ndarray:
    """Return a raw ``[y - min(y), x - min(x)]`` grid → the stored orientation (notch down, front view).

    ``y_up``: the file's positive y points up the wafer (as seen with the file's own notch position);
    ``x_right``: positive x points right; ``notch``: where the notch/flat is in that same view
    (``"down"``, ``"up"``, ``"left"``, ``"right"``). The map is flipped so that y grows upwards and x
    to the right, then rotated so that the notch is at the bottom.
    """
    if notch not in NOTCH_SIDES:
        raise ValueError(f"notch must be one of {NOTCH_SIDES}, got {notch!r}")
    out = grid[::-1] if y_up else grid
    out = out if x_right else out[:, ::-1]
    # np.rot90 (k=1, counter-clockwise) carries the left column to the bottom row; k=-1 the right column
    k = {"down": 0, "up": 2, "left": 1, "right": -1}[notch]
    return np.ascontiguousarray(np.rot90(out, k) if k else out)


def grid_origin(x_min: int, y_min: int, x_max: int, y_max: int, *, y_up: bool, x_right: bool = True,
                notch: str = "down") -> tuple[int, int]:
    """``(origin_row, origin_col)`` of a map built by :func:`dies_to_grid` from dies spanning ``x_min..x_max``.

    ``y_min..y_max`` and turned by :func:`orient_grid` with the same arguments: the wafer-fixed die
    coordinate of the stored map's element ``[0, 0]``, in the stored orientation (rows grow down,
    columns right), as :data:`waferscope.lots.ORIGIN_COLUMNS` defines it.

    The stored grid is the raw ``[y - y_min, x - x_min]`` grid flipped and turned, so its row and
    column directions are fixed unit steps in (x, y) for a given orientation: a wafer-fixed row
    coordinate is ``R(x, y) = dr · (x, y)`` and column ``C(x, y) = dc · (x, y)``; element [0, 0] is
    one of the raw corners. Wafers of one file (one orientation) thus share the frame, and the
    same physical die lands on the same (row, col) whatever part of the wafer each map covers.
    """
    kw = dict(y_up=y_up, x_right=x_right, notch=notch)
    dx = orient_grid(np.array([[0, 1], [0, 1]]), **kw)  # unit steps, turned as the map is
    dy = orient_grid(np.array([[0, 0], [1, 1]]), **kw)
    dr = (int(dx[1, 0] - dx[0, 0]), int(dy[1, 0] - dy[0, 0]))
    dc = (int(dx[0, 1] - dx[0, 0]), int(dy[0, 1] - dy[0, 0]))
    cx = orient_grid(np.array([[x_min, x_max], [x_min, x_max]]), **kw)[0, 0]  # the corner at [0, 0]
    cy = orient_grid(np.array([[y_min, y_min], [y_max, y_max]]), **kw)[0, 0]
    return int(dr[0] * cx + dr[1] * cy), int(dc[0] * cx + dc[1] * cy)


def origin_columns(origins: list[tuple[int, int] | None]) -> dict:
    """Return the ``origin_row``/``origin_col`` metadata columns (NaN where a map has none), or {} when no map has one."""
    if not any(o is not None for o in origins):
        return {}
    return {"origin_row": [float("nan") if o is None else o[0] for o in origins],
            "origin_col": [float("nan") if o is None else o[1] for o in origins]}


def bins_attrs(ids: list[str], codes: list[np.ndarray | None], names: dict | None = None) -> dict:
    """``dataset.attrs`` entries for the lot views' bin Pareto (:data:`waferscope.lots.BINS_ATTR`).

    ``{"bins": {wafer id: int32 codes of the map's shape, -1 where no die}, "bin_names": {...}}``;
    {} when no map has codes.
    """
    kept = {i: c for i, c in zip(ids, codes) if c is not None}
    if not kept:
        return {}
    out = {"bins": kept}
    if names:
        out["bin_names"] = dict(names)
    return out


NOTCH_WORDS = {"down": "down", "bottom": "down", "up": "up", "top": "up", "left": "left", "right": "right"}


def notch_from_angle(angle: float, zero: str = "down") -> str:
    """Return a notch/flat angle in degrees, measured clockwise (as drawn) from ``zero`` (the side angle 0 means).

    → ``"down"``/``"left"``/``"up"``/``"right"``. ValueError unless a multiple of 90°.
    """
    order = ["down", "left", "up", "right"]  # clockwise, as seen on the drawing
    quarter, rest = divmod(float(angle) % 360, 90)
    if rest:
        raise ValueError(f"notch angle {angle:g}° is not a multiple of 90°")
    return order[(order.index(zero) + int(quarter)) % 4]


def oriented_pitch(pitch_x, pitch_y, notch: str) -> tuple:
    """Return the die pitch after :func:`orient_grid` with ``notch``: a quarter turn swaps width and height."""
    return (pitch_y, pitch_x) if notch in ("left", "right") else (pitch_x, pitch_y)


def pitch_columns(pitches: list[tuple]) -> dict:
    """Return the ``die_pitch_x``/``die_pitch_y`` metadata columns when any map states its die size.

    A pitch is ``(x, y)`` per map, in the file's units, after :func:`oriented_pitch`; NaN where
    unknown.
    """
    if not any(px and py for px, py in pitches):
        return {}
    return {"die_pitch_x": [float(px) if px and py else float("nan") for px, py in pitches],
            "die_pitch_y": [float(py) if px and py else float("nan") for px, py in pitches]}


def wafer_number(wafer_id: str, fallback: int) -> int:
    """Return the number in a wafer id ("W07" → 7, "LOT1-12" → 12); ``fallback`` when there is none."""
    digits = re.findall(r"\d+", wafer_id)
    return int(digits[-1]) if digits else fallback


def fab_meta(path: Path, lots: Iterable[str], wafer_ids: Iterable[str], fmt: str, **extra) -> dict:
    """Metadata columns of a fab-format data set.

    ``id`` = ``<lot>-<wafer id>`` (made unique), ``lot``, ``wafer_index`` (number in the
    wafer id), ``wafer_id``, ``source``, ``format``.
    """
    lots, wafer_ids = [str(v) for v in lots], [str(v) for v in wafer_ids]
    ids, seen = [], {}
    for i, (lot, wid) in enumerate(zip(lots, wafer_ids)):
        base = "-".join(filter(None, (lot, wid))) or f"{path.stem}-{i}"
        seen[base] = seen.get(base, 0) + 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return {"id": ids, "lot": lots, "wafer_index": [wafer_number(w, i) for i, w in enumerate(wafer_ids)],
            "wafer_id": wafer_ids, "source": path.name, "format": fmt, **extra}


# ---- array formats (SEMI E142, SEMI G85): rows of bin codes -------------------------------------
# Code width per BinType when rows are written without separators (both standards allow it for
# the fixed-width types). Decimal codes have no fixed width: without separators the header's column
# count must say how wide each code is.
CODE_WIDTH = {"ascii": 1, "hexadecimal": 2, "integer2": 4}
BIN_TYPES = {"ascii": "Ascii", "decimal": "Decimal", "hexadecimal": "HexaDecimal", "integer2": "Integer2"}


def split_row(text: str, bin_type: str, columns: int | None = None) -> list[str]:
    """One row's bin codes.

    - separated by white space (any BinType): the tokens;
    - no separators: fixed-width chunks, the width being ``len(row) / columns`` when the header gives
      the column count, else the BinType's own width (Ascii 1, HexaDecimal 2, Integer2 4). A Decimal
      row without separators and without a column count is one code.
    ASCII rows keep spaces as codes when the row is exactly ``columns`` characters long (a space may
    be a bin code there); only line breaks and the surrounding indentation of CDATA go.
    """
    kind = bin_type.lower()
    if kind == "ascii":
        raw = text.strip("\r\n")
        if columns is not None and len(raw) == columns:
            return list(raw)
        tokens = raw.split()
        if len(tokens) > 1 and all(len(t) == 1 for t in tokens):
            return tokens  # one code per token: separators between single characters
        return list("".join(tokens)) if tokens else list(raw)
    tokens = text.split()
    if len(tokens) != 1:
        return tokens
    joined = tokens[0]
    width = None
    if columns:
        width = len(joined) // columns if len(joined) % columns == 0 else None
    if width is None:
        width = CODE_WIDTH.get(kind)
    if width and len(joined) > width:
        return [joined[i:i + width] for i in range(0, len(joined), width)]
    return tokens


def decode_code(token: str, bin_type: str):
    """Return a bin code as an int (Decimal, HexaDecimal, Integer2) or a 1-char str (ASCII); ValueError."""
    kind = bin_type.lower()
    if kind == "ascii":
        return token
    if kind == "decimal":
        return int(token, 10)
    if kind in ("hexadecimal", "integer2"):
        return int(token, 16)
    raise ValueError(f"unknown BinType {bin_type!r} (expected Decimal, HexaDecimal, Integer2 or ASCII)")


def bin_rows_to_grid(rows: Sequence[str], bin_type: str, null_bin: str | None, qualities: dict,
                     mapping: BinMapping | None, path: Path, where: str,
                     expected_shape: tuple[int | None, int | None], row_tag: str = "row", budget=None,
                     codes_out: list | None = None) -> np.ndarray:
    """Rows of bin codes → die states.

    ``qualities``: decoded bin code → the file's BinQuality (used when ``mapping`` is None: Pass →
    pass, Fail → fail, any other quality → no die). ``where`` is the map's element path in errors
    (``Maps/Map[2]/Device[1]``); row ``r`` is named ``{where}/{row_tag}[r]`` (from 1). ``null_bin``
    None: the file names no null bin (every code is a die). ``budget`` is charged with the map's
    shape before the grid is allocated. ``codes_out``: a list that gets the map's bin codes
    appended (int32 of the grid's shape, -1 where there is no die; an ASCII code is its character's
    code point, see :func:`code_number`).
    """
    if bin_type.lower() not in BIN_TYPES:
        raise DataError(f"{where}: unknown BinType {bin_type!r} (expected Ascii, Decimal, HexaDecimal or "
                        "Integer2)", path)
    null = _null_code(null_bin, bin_type, where, path)
    if mapping is not None and bin_type.lower() == "ascii":
        raise DataError(f"{where}: pass bins are numbers, but this map's BinType is ASCII; leave the "
                        "pass-bin option unset to use the file's own BinQuality", path)
    exp_rows, exp_cols = expected_shape
    if exp_rows is not None and len(rows) != exp_rows:
        raise DataError(f"{where}: {len(rows)} rows of bin codes, the header says {exp_rows}", path)
    if not rows:
        raise DataError(f"{where}: no rows of bin codes", path)
    width = exp_cols
    if width is None:
        width = len(split_row(rows[0], bin_type))
    if budget is not None:
        budget.add((len(rows), width), where)
    grid = np.zeros((len(rows), width), np.uint8)
    codes = None if codes_out is None else np.full((len(rows), width), -1, np.int32)
    for r, text in enumerate(rows, 1):
        tokens = split_row(text, bin_type, exp_cols)
        if len(tokens) != width:
            raise DataError(f"{where}/{row_tag}[{r}]: {len(tokens)} dies, expected {width}"
                            + (" (the header's column count)" if exp_cols is not None else " (as row 1)"), path)
        _decode_row(tokens, grid[r - 1], None if codes is None else codes[r - 1], bin_type, null, qualities,
                    mapping, path, f"{where}/{row_tag}[{r}]")
    if codes_out is not None:
        codes_out.append(codes)
    return grid


def _null_code(null_bin: str | None, bin_type: str, where: str, path: Path):
    """Return the decoded NullBin code, or None when the file names no null bin."""
    if null_bin is None:
        return None
    try:
        return decode_code(null_bin.strip() if bin_type.lower() != "ascii" else null_bin, bin_type)
    except ValueError as exc:
        raise DataError(f"{where}: NullBin {null_bin!r}: {exc}", path) from None


def _decode_row(tokens: list, out: np.ndarray, codes: np.ndarray | None, bin_type: str, null, qualities: dict,
                mapping: BinMapping | None, path: Path, row_where: str) -> None:
    """Write one row's die states into ``out`` (and its bin codes into ``codes``); see :func:`bin_rows_to_grid`."""
    for c, token in enumerate(tokens, 1):
        try:
            code = decode_code(token, bin_type)
        except ValueError:
            raise DataError(f"{row_where}, column {c}: bin code {token!r} is not a "
                            f"{BIN_TYPES[bin_type.lower()]} code", path) from None
        if code == null:
            out[c - 1] = 0
        elif mapping is not None:
            out[c - 1] = map_bin(mapping, code, path, f"{row_where}, column {c}")
        else:
            quality = str(qualities.get(code, "fail")).lower()
            out[c - 1] = PASS if quality == "pass" else FAIL if quality == "fail" else 0
        if codes is not None and out[c - 1]:
            codes[c - 1] = code_number(code)


def code_number(code) -> int:
    """Return a decoded bin code as the integer the bin Pareto counts.

    Numbers as they are, an ASCII code (a one-character string) as its code point (``"A"`` → 65;
    :func:`code_names` names it back).
    """
    return ord(code) if isinstance(code, str) else int(code)


def code_names(qualities: dict, names: dict | None = None) -> dict:
    """``{code number: name}`` for the Pareto.

    The file's bin name/description when it gives one, else for ASCII codes the character
    itself (``'A'``).
    """
    out = {}
    for code in qualities:
        name = (names or {}).get(code)
        if name:
            out[code_number(code)] = str(name)
        elif isinstance(code, str):
            out[code_number(code)] = repr(code)
    return out


# ---- reading text and XML through compression ------------------------------------------------------


def read_text(path: Path, limits=None) -> str:
    """Return the whole (decompressed, bounded by ``limits.max_decompressed_bytes``) file as text."""
    from waferscope.data.compressed import open_binary

    with open_binary(path, limits) as fh:
        raw = fh.read()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"line {line}: not a UTF-8 text file ({exc.reason} at byte {exc.start})", path) from None


def parse_xml(path: Path, limits=None):
    """Return the root element, through defusedxml and through compression.

    A map file from outside must not expand entities or fetch URLs (hence defusedxml). One
    DataError (with XML line/column) when malformed.
    """
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    from waferscope.data.compressed import open_binary

    try:
        with open_binary(path, limits) as fh:
            return SafeET.parse(fh).getroot()
    except ParseError as exc:
        raise DataError(f"not well-formed XML ({exc})", path) from None
    except DefusedXmlException as exc:
        raise DataError(f"refused unsafe XML ({type(exc).__name__}: {exc})", path) from None


def xml_local(tag: str) -> str:
    """Return an element's name without its namespace."""
    return tag.rsplit("}", 1)[-1]


def xml_children(element, name: str) -> list:
    """Return the child elements of ``element`` named ``name`` (any namespace)."""
    return [c for c in element if xml_local(c.tag) == name]


def xml_attr(element, name: str):
    """Return an attribute by its local name, any case (writers differ: ``LotId``/``LotID``), else None."""
    want = name.lower()
    for key, value in element.attrib.items():
        if xml_local(key).lower() == want:
            return value
    return None


def xml_number(element, name: str, path: Path, where: str, kind=int):
    """Return a numeric attribute (None when absent or empty); DataError naming the element when not a number."""
    value = xml_attr(element, name)
    if value is None or not str(value).strip():
        return None
    try:
        return kind(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {name} {value!r} is not a number", path) from None
