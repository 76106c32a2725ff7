"""SEMI E142 substrate-map XML (root ``<MapData>``).

Walked with the standard library's ElementTree through ``defusedxml`` and through compression:
no kept Python reader for E142 exists.

Read: ``Layouts/Layout`` (``LayoutId``, ``Dimension X=columns Y=rows``, ``DeviceSize`` or else
``StepSize`` X/Y → ``die_pitch_x``/``die_pitch_y``), ``Substrates/Substrate`` (``SubstrateId``,
child ``LotId``; optional: it only gives the lot, ``""`` without it) and per
``SubstrateMaps/SubstrateMap`` (``SubstrateId``, ``LayoutSpecifier`` whose last part names the
layout, ``OriginLocation``, ``AxisDirection``, ``Orientation``) the ``Overlay/BinCodeMap``:
``BinType`` (Decimal, HexaDecimal, Integer2, Ascii), ``NullBin``, ``BinDefinitions/BinDefinition``
(``BinCode`` → ``BinQuality``) and one ``BinCode`` element per row. Each SubstrateMap with a
BinCodeMap is one wafer; other overlays (DeviceIdMap, TransferMap...) are skipped.

Die states: ``NullBin`` → no die. Default: the file's ``BinQuality`` (Pass → pass, Fail → fail,
others such as Skip, Edge or Reference → no die; a code without a definition fails); a map with no
``BinDefinition`` falls back to bin 1 = pass. ``pass_bins`` overrides it (numeric BinTypes only).

Orientation: the ``BinCode`` rows are numbered from the ``OriginLocation`` corner along
``AxisDirection`` (E142's die coordinates): row 1 is the row at the origin and the codes of a row
run away from it. ``OriginLocation`` ``LowerLeft``/``LowerRight`` with an ``Up…`` AxisDirection
lists the bottom row first; ``UpperLeft``/``UpperRight`` with ``Down…`` the top row first (also
when both are absent); ``…Left`` AxisDirection runs right to left. That drawing is seen with the
notch at ``Orientation`` degrees measured clockwise from its bottom (0 or absent = notch down).

Bins: every die's bin code goes to ``dataset.attrs["bins"]`` (wafer id → int array of the map's
shape, -1 where no die; an Ascii code as its code point) and ``BinDescription`` to
``attrs["bin_names"]``, for the lot views' bin Pareto (:mod:`waferscope.lots`).
"""

from __future__ import annotations

from pathlib import Path

from waferscope.data.dataset import WaferDataset
from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.data.loaders.fabcommon import (DEFAULT_MAPPING, BinMapping, bin_rows_to_grid, bins_attrs, code_names,
                                               decode_code, fab_meta,
                                               notch_from_angle, orient_grid, oriented_pitch, parse_xml,
                                               pitch_columns, xml_attr, xml_children, xml_local, xml_number)
from waferscope.errors import DataError


def _child(element, name: str):
    found = xml_children(element, name)
    return found[0] if found else None


def _grandchildren(element, parent: str, name: str) -> list:
    """``element/parent/name`` elements (none when ``parent`` is missing)."""
    holder = _child(element, parent)
    return [] if holder is None else xml_children(holder, name)


def _axes(smap, path: Path, where: str) -> tuple[bool, bool]:
    """(y_up, x_right) of the BinCode array from OriginLocation / AxisDirection (see the docstring)."""
    origin = (xml_attr(smap, "OriginLocation") or "").strip().lower()
    axis = (xml_attr(smap, "AxisDirection") or "").strip().lower()
    if axis:
        if not (axis.startswith(("up", "down")) and axis.endswith(("left", "right"))):
            raise DataError(f"{where}: AxisDirection {axis!r} is not UpRight, UpLeft, DownRight or DownLeft", path)
        return axis.startswith("up"), axis.endswith("right")
    if origin.startswith("lower"):
        return True, not origin.endswith("right")
    if origin.startswith("upper"):
        return False, not origin.endswith("right")
    return False, True


def _pitch(layout) -> tuple:
    for name in ("DeviceSize", "StepSize"):
        el = _child(layout, name)
        if el is not None and xml_attr(el, "X") and xml_attr(el, "Y"):
            try:
                return float(xml_attr(el, "X")), float(xml_attr(el, "Y"))
            except ValueError:
                return None, None
    return None, None


def load_e142(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    """Read the wafer maps of a SEMI E142 XML file."""
    path = Path(path)
    limits = resolve_limits(limits)
    root = parse_xml(path, limits)
    if xml_local(root.tag) != "MapData":
        raise DataError(f"the root element is {xml_local(root.tag)!r}, not MapData (SEMI E142)", path)
    layouts = {}
    for i, layout in enumerate(_grandchildren(root, "Layouts", "Layout"), 1):
        dim = _child(layout, "Dimension")
        where = f"MapData/Layouts/Layout[{i}]"
        shape = (None, None) if dim is None else (
            xml_number(dim, "Y", path, where + "/Dimension"), xml_number(dim, "X", path, where + "/Dimension"))
        layouts[xml_attr(layout, "LayoutId")] = (shape, _pitch(layout))
    lot_of = {}
    for substrate in _grandchildren(root, "Substrates", "Substrate"):
        lot = _child(substrate, "LotId")
        lot_of[(xml_attr(substrate, "SubstrateId") or "").strip()] = (lot.text or "").strip() if lot is not None else ""
    substrate_maps = _grandchildren(root, "SubstrateMaps", "SubstrateMap")
    if not substrate_maps:
        raise DataError("no SubstrateMaps/SubstrateMap elements", path)
    found = [(s, smap, o, b, bin_map) for s, smap in enumerate(substrate_maps, 1)
             for o, overlay in enumerate(xml_children(smap, "Overlay"), 1)
             for b, bin_map in enumerate(xml_children(overlay, "BinCodeMap"), 1)]
    if not found:
        raise DataError("no SubstrateMap holds a BinCodeMap overlay", path)
    limits.check_count(len(found), path)
    budget = limits.budget(path)
    maps, lots, wafer_ids, pitches, codes, names = [], [], [], [], [], {}
    for s, smap, o, b, bin_map in found:
        wafer_id = (xml_attr(smap, "SubstrateId") or "").strip()
        where = f"MapData/SubstrateMaps/SubstrateMap[{s}]"
        if not wafer_id:
            raise DataError(f"{where}: no SubstrateId attribute", path)
        layout_id = (xml_attr(smap, "LayoutSpecifier") or "").split("/")[-1]
        if layout_id and layout_id not in layouts:
            raise DataError(f"{where}: LayoutSpecifier names layout {layout_id!r}, which Layouts lacks", path)
        shape, pitch = layouts.get(layout_id, ((None, None), (None, None)))
        map_where = f"{where}/Overlay[{o}]/BinCodeMap[{b}]"
        bin_type, null_bin = xml_attr(bin_map, "BinType"), xml_attr(bin_map, "NullBin")
        if bin_type is None:
            raise DataError(f"{map_where}: no BinType attribute", path)
        qualities, described = {}, {}
        for d, definition in enumerate(_grandchildren(bin_map, "BinDefinitions", "BinDefinition"), 1):
            code = xml_attr(definition, "BinCode")
            d_where = f"{map_where}/BinDefinitions/BinDefinition[{d}]"
            if code is None:
                raise DataError(f"{d_where}: no BinCode attribute", path)
            try:
                key = decode_code(code if bin_type.lower() == "ascii" else code.strip(), bin_type)
                qualities[key] = xml_attr(definition, "BinQuality") or ""
                described[key] = (xml_attr(definition, "BinDescription") or "").strip()
            except ValueError as exc:
                raise DataError(f"{d_where}: BinCode {code!r}: {exc}", path) from None
        mapping = pass_bins if pass_bins is not None or qualities else (
            None if bin_type.lower() == "ascii" else DEFAULT_MAPPING)
        rows = [row.text or "" for row in xml_children(bin_map, "BinCode")]
        grid = bin_rows_to_grid(rows, bin_type, null_bin, qualities, mapping, path, map_where, shape,
                                row_tag="BinCode", budget=budget, codes_out=codes)
        names.update(code_names(qualities, described))
        y_up, x_right = _axes(smap, path, where)
        try:
            notch = notch_from_angle(xml_number(smap, "Orientation", path, where, float) or 0.0)
        except ValueError as exc:
            raise DataError(f"{where}: Orientation: {exc}", path) from None
        maps.append(orient_grid(grid, y_up=y_up, x_right=x_right, notch=notch))
        codes[-1] = orient_grid(codes[-1], y_up=y_up, x_right=x_right, notch=notch)  # the bins turn with the map
        pitches.append(oriented_pitch(*pitch, notch))
        lots.append(lot_of.get(wafer_id, ""))
        wafer_ids.append(wafer_id)
    meta = fab_meta(path, lots, wafer_ids, "semi-e142", **pitch_columns(pitches))
    ds = WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
    ds.attrs.update(bins_attrs(meta["id"], codes, names))  # the lot views' bin Pareto (waferscope.lots)
    return ds
