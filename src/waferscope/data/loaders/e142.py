"""SEMI E142 substrate-map XML (root ``<MapData>``), read with the standard library's ElementTree
through ``defusedxml``: no kept Python reader for E142 exists, so this module walks the schema's
elements itself.

Read: ``Layouts/Layout`` (``LayoutId``, ``Dimension X=columns Y=rows``), ``Substrates/Substrate``
(``SubstrateId``, child ``LotId``) and per ``SubstrateMaps/SubstrateMap`` (``SubstrateId``,
``LayoutSpecifier`` whose last part names the layout) the ``Overlay/BinCodeMap``: ``BinType``
(Decimal, HexaDecimal, Integer2, ASCII), ``NullBin``, ``BinDefinitions/BinDefinition``
(``BinCode`` → ``BinQuality``) and one ``BinCode`` element per row. Each SubstrateMap with a
BinCodeMap is one wafer; other overlays (DeviceIdMap, TransferMap...) are skipped.

Die states: ``NullBin`` → no die. Default: the file's ``BinQuality`` (Pass → pass, Fail → fail,
others such as Skip, Edge or Reference → no die; a code without a definition fails); a map with no
``BinDefinition`` falls back to bin 1 = pass. ``pass_bins`` overrides it (numeric BinTypes only).

Orientation: the array as written, row 0 = the first ``BinCode`` row (``OriginLocation`` and
``AxisDirection`` number the dies; they do not reorder the drawing).
"""

from __future__ import annotations

from pathlib import Path

from waferscope.data.limits import LoadLimits
from waferscope.data.dataset import WaferDataset
from waferscope.data.loaders.fabcommon import DEFAULT_MAPPING, BinMapping, bin_rows_to_grid, decode_code, fab_meta
from waferscope.data.loaders.semi_g85 import _int_attr, parse_xml
from waferscope.errors import DataError


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(element, name: str) -> list:
    return [c for c in element if _local(c.tag) == name]


def _child(element, name: str):
    found = _children(element, name)
    return found[0] if found else None


def _grandchildren(element, parent: str, name: str) -> list:
    """``element/parent/name`` elements (none when ``parent`` is missing)."""
    holder = _child(element, parent)
    return [] if holder is None else _children(holder, name)


def load_e142(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    path = Path(path)
    root = parse_xml(path)
    if _local(root.tag) != "MapData":
        raise DataError(f"the root element is {_local(root.tag)!r}, not MapData (SEMI E142)", path)
    layouts = {}
    for layout in _grandchildren(root, "Layouts", "Layout"):
        dim = _child(layout, "Dimension")
        where = f"Layout {layout.get('LayoutId')!r}"
        layouts[layout.get("LayoutId")] = (None, None) if dim is None else (
            _int_attr(dim.get("Y"), "Dimension Y", path, where), _int_attr(dim.get("X"), "Dimension X", path, where))
    lot_of = {}
    for substrate in _grandchildren(root, "Substrates", "Substrate"):
        lot = _child(substrate, "LotId")
        lot_of[(substrate.get("SubstrateId") or "").strip()] = (lot.text or "").strip() if lot is not None else ""
    maps, lots, wafer_ids = [], [], []
    substrate_maps = _grandchildren(root, "SubstrateMaps", "SubstrateMap")
    if not substrate_maps:
        raise DataError("no SubstrateMaps/SubstrateMap elements", path)
    for s, smap in enumerate(substrate_maps, 1):
        wafer_id = (smap.get("SubstrateId") or "").strip()
        where = f"SubstrateMap {s} ({wafer_id!r})"
        if not wafer_id:
            raise DataError(f"{where}: no SubstrateId attribute", path)
        if wafer_id not in lot_of:
            raise DataError(f"{where}: no Substrates/Substrate with this SubstrateId (its LotId)", path)
        bin_maps = [b for o in _children(smap, "Overlay") for b in _children(o, "BinCodeMap")]
        if not bin_maps:
            continue
        layout_id = (smap.get("LayoutSpecifier") or "").split("/")[-1]
        if layout_id and layout_id not in layouts:
            raise DataError(f"{where}: LayoutSpecifier names layout {layout_id!r}, which Layouts lacks", path)
        for bin_map in bin_maps:
            bin_type, null_bin = bin_map.get("BinType"), bin_map.get("NullBin")
            if bin_type is None or null_bin is None:
                raise DataError(f"{where}: BinCodeMap lacks its {'BinType' if bin_type is None else 'NullBin'} "
                                "attribute", path)
            qualities = {}
            for definition in _grandchildren(bin_map, "BinDefinitions", "BinDefinition"):
                code = definition.get("BinCode")
                if code is None:
                    raise DataError(f"{where}: a BinDefinition lacks its BinCode", path)
                try:
                    qualities[decode_code(code if bin_type.lower() == "ascii" else code.strip(), bin_type)] = \
                        definition.get("BinQuality", "")
                except ValueError as exc:
                    raise DataError(f"{where}: BinDefinition BinCode {code!r}: {exc}", path) from None
            mapping = pass_bins if pass_bins is not None or qualities else (
                None if bin_type.lower() == "ascii" else DEFAULT_MAPPING)
            rows = [row.text or "" for row in _children(bin_map, "BinCode")]
            maps.append(bin_rows_to_grid(rows, bin_type, null_bin, qualities, mapping, path, where,
                                         layouts.get(layout_id, (None, None))))
            lots.append(lot_of[wafer_id])
            wafer_ids.append(wafer_id)
    if not maps:
        raise DataError("no SubstrateMap holds a BinCodeMap overlay", path)
    meta = fab_meta(path, lots, wafer_ids, "semi-e142")
    return WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
