"""SEMI G85 XML wafer maps (root ``<Maps>``, one ``<Map>`` per wafer), read with the ``g85`` package
after parsing the XML with ``defusedxml`` (a map file from outside must not be able to expand
entities or fetch URLs).

Read: ``Map`` ``SubstrateId`` (or ``WaferId``) → ``wafer_id``; ``Device`` ``LotId`` → ``lot``,
``BinType``, ``NullBin``, ``Rows``/``Columns`` (checked against the data), ``Bin`` elements
(``BinCode`` → ``BinQuality``) and the ``Data`` ``Row`` elements. Each ``Device`` is one map.

Die states: ``NullBin`` → no die. Default: the file's own ``BinQuality`` (Pass → pass, Fail → fail,
any other quality → no die; a code without a ``Bin`` element fails); a file with no ``Bin``
elements falls back to bin 1 = pass. ``pass_bins`` overrides the file (numeric BinTypes only).

Orientation: the array as written, row 0 = the first ``Row`` element, column 0 = its first code
(``OriginLocation`` only numbers the dies; it does not reorder the drawing).
"""

from __future__ import annotations

from pathlib import Path

from waferscope.data.limits import LoadLimits
from waferscope.data.dataset import WaferDataset
from waferscope.data.loaders.fabcommon import DEFAULT_MAPPING, BinMapping, bin_rows_to_grid, fab_meta
from waferscope.errors import DataError


def parse_xml(path: Path):
    """The root element, through defusedxml; one DataError (with XML line/column) when malformed."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    try:
        return SafeET.parse(path).getroot()
    except ParseError as exc:
        raise DataError(f"not well-formed XML ({exc})", path) from None
    except DefusedXmlException as exc:
        raise DataError(f"refused unsafe XML ({type(exc).__name__}: {exc})", path) from None


def _int_attr(value, what: str, path: Path, where: str) -> int | None:
    if value is None:
        return None
    try:
        return int(str(value).strip())
    except ValueError:
        raise DataError(f"{where}: {what} {value!r} is not a number", path) from None


def load_g85(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    from g85.read import read_wmaps

    path = Path(path)
    root = parse_xml(path)
    try:
        wafer_maps = read_wmaps(root)
    except KeyError as exc:
        raise DataError(f"a Device or Bin element lacks its {exc.args[0]} attribute", path) from None
    except ValueError as exc:  # g85 converts numeric attributes and Decimal codes with int()/float()
        raise DataError(f"a number attribute or Decimal bin code is not a number ({exc})", path) from None
    except AssertionError:
        raise DataError("a Data element holds something other than Row elements", path) from None
    maps, lots, wafer_ids = [], [], []
    for m, wafer_map in enumerate(wafer_maps, 1):
        wafer_id = (wafer_map.SubstrateId or wafer_map.misc.get("WaferId") or "").strip()
        for d, device in enumerate(wafer_map.devices, 1):
            where = f"Map {m} ({wafer_id!r})" + (f" Device {d}" if len(wafer_map.devices) > 1 else "")
            if device.LotId is None:
                raise DataError(f"{where}: the Device lacks its LotId attribute", path)
            rows = [" ".join(map(str, r)) if device.BinType.lower() != "ascii" else "".join(r) for r in device.map]
            mapping = pass_bins if pass_bins is not None or device.bin_pass else (
                None if device.BinType.lower() == "ascii" else DEFAULT_MAPPING)
            qualities = {code: "pass" if ok else "fail" for code, ok in device.bin_pass.items()}
            if device.BinType.lower() != "decimal":  # g85 keeps non-Decimal codes as text; decode alike
                qualities = _decoded(qualities, device.BinType, path, where)
            shape = (_int_attr(device.misc.get("Rows"), "Rows", path, where),
                     _int_attr(device.misc.get("Columns"), "Columns", path, where))
            maps.append(bin_rows_to_grid(rows, device.BinType, str(device.NullBin), qualities, mapping, path,
                                         where, shape))
            lots.append(device.LotId.strip())
            wafer_ids.append(wafer_id)
    if not maps:
        raise DataError("no Map/Device elements", path)
    meta = fab_meta(path, lots, wafer_ids, "semi-g85")
    return WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))


def _decoded(qualities: dict, bin_type: str, path: Path, where: str) -> dict:
    from waferscope.data.loaders.fabcommon import decode_code

    out = {}
    for code, quality in qualities.items():
        try:
            out[decode_code(str(code), bin_type)] = quality
        except ValueError as exc:
            raise DataError(f"{where}: Bin code {code!r}: {exc}", path) from None
    return out
