"""SEMI G85 XML wafer maps: root ``<Map>`` (one wafer, the common case) or ``<Maps>`` holding one ``<Map>`` per wafer.

Walked with the standard library's ElementTree through ``defusedxml`` (a map file from outside
must not be able to expand entities or fetch URLs), through compression.

Read: ``Map`` ``SubstrateId`` (or ``WaferId``) → ``wafer_id``; each ``Device`` is one map:
``BinType`` (Ascii, Decimal, HexaDecimal, Integer2), ``NullBin``, ``Rows``/``Columns`` (checked
against the data when given), ``LotId`` → ``lot`` (optional, as in the standard), ``Orientation``
(or ``FlatNotchLocation``), ``DeviceSizeX``/``DeviceSizeY`` → ``die_pitch_x``/``die_pitch_y``,
``Bin`` elements (``BinCode`` → ``BinQuality``) and the ``Data`` ``Row`` elements. Attribute names
are matched without regard to case. Rows may separate their codes with white space or not (fixed
width: ``len(row) / Columns`` when Columns is given, else 1 for Ascii, 2 for HexaDecimal and 4 for
Integer2; Decimal rows without separators need Columns).

Die states: ``NullBin`` → no die. Default: the file's own ``BinQuality`` (Pass → pass, Fail → fail,
any other quality → no die; a code without a ``Bin`` element fails); a file with no ``Bin``
elements falls back to bin 1 = pass. ``pass_bins`` overrides the file (numeric BinTypes only).

Orientation: the ``Row`` elements are the map as drawn, top row first, left die first, seen with
the flat/notch at ``Orientation`` degrees measured clockwise from the bottom of that drawing
(0 or absent = notch down, 90 = left, 180 = up, 270 = right). :func:`fabcommon.orient_grid` turns it
notch down. ``OriginLocation`` only numbers the dies; it does not reorder the drawing.

Bins: every die's bin code is kept in ``dataset.attrs["bins"]`` (wafer id → int array of the map's
shape, -1 where no die; an Ascii code as its code point) and ``BinDescription`` in
``attrs["bin_names"]`` (an Ascii code without one is named by its character), for the lot views'
bin Pareto (:mod:`waferscope.lots`).
"""

from __future__ import annotations

from pathlib import Path

from waferscope.data.dataset import WaferDataset
from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.data.loaders.fabcommon import (DEFAULT_MAPPING, BinMapping, bin_rows_to_grid, bins_attrs, code_names,
                                               decode_code, fab_meta,
                                               notch_from_angle, orient_grid, oriented_pitch, parse_xml, pitch_columns, xml_attr,
                                               xml_children, xml_local, xml_number)
from waferscope.errors import DataError

__all__ = ["load_g85", "parse_xml"]


def _maps_of(root, path: Path) -> list[tuple[str, object]]:
    """(element path, Map element) for a ``<Map>`` or ``<Maps>`` root."""
    name = xml_local(root.tag)
    if name == "Map":
        return [("Map", root)]
    if name == "Maps":
        found = xml_children(root, "Map")
        return [(f"Maps/Map[{i}]", m) for i, m in enumerate(found, 1)]
    raise DataError(f"the root element is {name!r}, not Map or Maps (SEMI G85)", path)


def load_g85(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    """Read the wafer maps of a SEMI G85 XML file."""
    path = Path(path)
    limits = resolve_limits(limits)
    root = parse_xml(path, limits)
    maps_found = _maps_of(root, path)
    devices = [(f"{mpath}/Device[{d}]", m, dev) for mpath, m in maps_found
               for d, dev in enumerate(xml_children(m, "Device"), 1)]
    if not devices:
        raise DataError("no Map/Device elements", path)
    limits.check_count(len(devices), path)
    budget = limits.budget(path)
    maps, lots, wafer_ids, pitches, codes, names = [], [], [], [], [], {}
    for where, map_el, device in devices:
        wafer_id = (xml_attr(map_el, "SubstrateId") or xml_attr(map_el, "WaferId") or "").strip()
        bin_type = xml_attr(device, "BinType")
        if bin_type is None:
            raise DataError(f"{where}: the Device lacks its BinType attribute", path)
        null_bin = xml_attr(device, "NullBin")
        qualities, described = {}, {}
        for b, bin_el in enumerate(xml_children(device, "Bin"), 1):
            code = xml_attr(bin_el, "BinCode")
            if code is None:
                raise DataError(f"{where}/Bin[{b}]: no BinCode attribute", path)
            try:
                key = decode_code(code if bin_type.lower() == "ascii" else code.strip(), bin_type)
            except ValueError as exc:
                raise DataError(f"{where}/Bin[{b}]: BinCode {code!r}: {exc}", path) from None
            qualities[key] = xml_attr(bin_el, "BinQuality") or ""
            described[key] = (xml_attr(bin_el, "BinDescription") or "").strip()
        mapping = pass_bins if pass_bins is not None or qualities else (
            None if bin_type.lower() == "ascii" else DEFAULT_MAPPING)
        data = xml_children(device, "Data")
        if len(data) != 1:
            raise DataError(f"{where}: {len(data)} Data elements, expected one", path)
        rows = []
        for r, row in enumerate(data[0], 1):
            if xml_local(row.tag) != "Row":
                raise DataError(f"{where}/Data: element {r} is {xml_local(row.tag)!r}, not Row", path)
            rows.append(row.text or "")
        shape = (xml_number(device, "Rows", path, where), xml_number(device, "Columns", path, where))
        grid = bin_rows_to_grid(rows, bin_type, null_bin, qualities, mapping, path, where + "/Data", shape,
                                row_tag="Row", budget=budget, codes_out=codes)
        names.update(code_names(qualities, described))
        angle = xml_number(device, "Orientation", path, where, float)
        if angle is None:
            angle = xml_number(device, "FlatNotchLocation", path, where, float)
        try:
            notch = notch_from_angle(angle or 0.0)
        except ValueError as exc:
            raise DataError(f"{where}: Orientation: {exc}", path) from None
        maps.append(orient_grid(grid, y_up=False, x_right=True, notch=notch))
        codes[-1] = orient_grid(codes[-1], y_up=False, x_right=True, notch=notch)  # the bins turn with the map
        pitches.append(oriented_pitch(xml_number(device, "DeviceSizeX", path, where, float),
                                      xml_number(device, "DeviceSizeY", path, where, float), notch))
        lots.append((xml_attr(device, "LotId") or "").strip())
        wafer_ids.append(wafer_id)
    meta = fab_meta(path, lots, wafer_ids, "semi-g85", **pitch_columns(pitches))
    ds = WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
    ds.attrs.update(bins_attrs(meta["id"], codes, names))  # the lot views' bin Pareto (waferscope.lots)
    return ds

