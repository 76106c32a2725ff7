"""Writers of small fab wafer-map files in each format's real layout, for the loader tests.

A wafer here is a bin array: 0 = no die, any other value = that die's bin. For the CSV, G85, E142
and KLARF writers the array is the map *as waferscope stores it* (front view, notch down, row 0 =
top): each writer puts it into its format's own convention (die y growing upwards for CSV and KLARF,
E142 rows from the OriginLocation corner, G85/E142 rotated for a stated notch angle), so a correct
loader returns the array back. The STDF writer (owned by the STDF tests) puts die (row r, column c)
at x = x0 + c, y = y0 + r.
"""

from __future__ import annotations

import contextlib
import struct
from pathlib import Path

import numpy as np

# ---- a reference wafer ---------------------------------------------------------------------------


def disc_bins(size: int = 9, seed: int = 0, fail_bins=(3, 7)) -> np.ndarray:
    """A round wafer of ``size``×``size`` dies touching every edge: bin 1 mostly, a few fail bins."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    on = (yy - centre) ** 2 + (xx - centre) ** 2 <= (centre + 0.5) ** 2
    bins = np.where(on, 1, 0)
    fails = on & (rng.random(on.shape) < 0.25)
    bins[fails] = rng.choice(fail_bins, size=int(fails.sum()))
    return bins.astype(np.int64)


def states(bins: np.ndarray, pass_bins=(1,)) -> np.ndarray:
    """The die states a bin-1-passes mapping gives: 0 no die, 1 pass, 2 fail."""
    return np.where(bins == 0, 0, np.where(np.isin(bins, pass_bins), 1, 2)).astype(np.uint8)


# ---- STDF V4 (little-endian CPU_TYPE 2 unless big_endian()) ---------------------------------------

_ORDER = ["<"]  # byte order of the records being written; big_endian() switches it to ">"


@contextlib.contextmanager
def big_endian():
    """Write STDF records big-endian (CPU_TYPE 1, as Sun/68k testers did) inside the block."""
    _ORDER[0] = ">"
    try:
        yield
    finally:
        _ORDER[0] = "<"


def _pack(fmt: str, *values) -> bytes:
    return struct.pack(_ORDER[0] + fmt.lstrip("<"), *values)


def _cn(text: str) -> bytes:
    raw = text.encode("ascii")
    return _pack("B", len(raw)) + raw


def stdf_record(rec_typ: int, rec_sub: int, body: bytes) -> bytes:
    """Header (REC_LEN U2, REC_TYP U1, REC_SUB U1) + body, STDF V4 § 'Record header'."""
    return _pack("<HBB", len(body), rec_typ, rec_sub) + body


def far() -> bytes:
    return stdf_record(0, 10, _pack("BB", 2 if _ORDER[0] == "<" else 1, 4))  # CPU_TYPE (2 little-, 1 big-endian), STDF_VER 4


def mir(lot: str) -> bytes:
    # SETUP_T, START_T, STAT_NUM, MODE_COD, RTST_COD, PROT_COD, BURN_TIM, CMOD_COD, then the Cn fields
    body = _pack("<IIBcccHc", 1_700_000_000, 1_700_000_100, 1, b"P", b" ", b" ", 65535, b" ")
    body += _cn(lot) + _cn("PART-A") + _cn("node1") + _cn("TESTER") + _cn("job") + _cn("1")
    return stdf_record(1, 10, body)


def wir(wafer_id: str, head: int = 1) -> bytes:
    return stdf_record(2, 10, _pack("<BBI", head, 255, 1_700_000_200) + _cn(wafer_id))


def pir(head: int = 1, site: int = 1) -> bytes:
    return stdf_record(5, 10, _pack("<BB", head, site))


def prr(x: int, y: int, hard_bin: int, soft_bin: int | None = None, part_flg: int | None = None,
        head: int = 1, site: int = 1) -> bytes:
    """Part results; PART_FLG bit 3 set when the die failed (hard bin ≠ 1) unless given."""
    if part_flg is None:
        part_flg = 0 if hard_bin == 1 else 0x08
    body = _pack("<BBBHHHhhI", head, site, part_flg, 10, hard_bin,
                       hard_bin if soft_bin is None else soft_bin, x, y, 12)
    body += _cn(f"{x}_{y}") + _cn("") + _pack("<B", 0)  # PART_ID, PART_TXT, empty PART_FIX
    return stdf_record(5, 20, body)


def wrr(wafer_id: str, count: int, good: int, head: int = 1) -> bytes:
    body = _pack("<BBIIIIII", head, 255, 1_700_000_900, count, 0, 0, good, 0) + _cn(wafer_id)
    return stdf_record(2, 20, body)


def mrr() -> bytes:
    return stdf_record(1, 20, _pack("<Ic", 1_700_001_000, b" ") + _cn("") + _cn(""))


def stdf_bytes(lot: str, wafers: dict[str, np.ndarray], x0: int = -4, y0: int = 2) -> bytes:
    out = [far(), mir(lot)]
    for wafer_id, bins in wafers.items():
        out.append(wir(wafer_id))
        rows, cols = np.nonzero(bins)
        for r, c in zip(rows, cols):
            out += [pir(), prr(int(x0 + c), int(y0 + r), int(bins[r, c]))]
        out.append(wrr(wafer_id, len(rows), int((bins == 1).sum())))
    out.append(mrr())
    return b"".join(out)


# ---- CSV die list ---------------------------------------------------------------------------------


def dielist_text(lots: dict[str, dict[str, np.ndarray]], x0: int = 10, y0: int = -3,
                 header: str = "lot,wafer,x,y,bin") -> str:
    """One row per die, y growing upwards (row 0 of ``bins`` is the largest y). ``header`` names
    the five columns in this order (lot, wafer, x, y, bin), e.g. ``LOT_ID,WAFER_ID,DIE_X,DIE_Y,HBIN``."""
    lines = [header]
    for lot, wafers in lots.items():
        for wafer_id, bins in wafers.items():
            top = bins.shape[0] - 1
            for r, c in zip(*np.nonzero(bins)):
                lines.append(f"{lot},{wafer_id},{x0 + c},{y0 + top - r},{bins[r, c]}")
    return "\n".join(lines) + "\n"


def file_array(stored: np.ndarray, notch_angle: int = 0, first_row_bottom: bool = False,
               right_to_left: bool = False) -> np.ndarray:
    """The array a G85/E142 file writes for the stored (notch-down) map ``stored``: the drawing
    turned so that the notch sits at ``notch_angle`` degrees clockwise from the bottom, then listed
    bottom row first and/or right to left when the file's axes say so."""
    # turning the drawing clockwise by the angle moves a notch at the bottom to that angle;
    # np.rot90 with k=-1 turns clockwise
    out = np.rot90(stored, -(notch_angle // 90) % 4)
    if first_row_bottom:
        out = out[::-1]
    if right_to_left:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


# ---- SEMI G85 (hand-written, as fab tools write it) ------------------------------------------------


G85_CODE = {"Decimal": ("{:03d}", 255), "HexaDecimal": ("{:02X}", 0xFF), "Integer2": ("{:04X}", 0xFFFF),
            "Ascii": (None, ".")}
ASCII_CODES = {1: "1", 3: "X", 7: "Z"}


def g85_text(lot: str | None, wafers: dict[str, np.ndarray], null_bin: int | None = None, qualities: dict | None = None,
             root: str = "Maps", bin_type: str = "Decimal", separated: bool = True, rows_columns: bool = True,
             orientation: int = 0, size: tuple | None = (5, 5), id_attr: str = "SubstrateId",
             namespace: str = 'xmlns:semi="http://www.semi.org"') -> str:
    """SEMI G85 XML. ``root`` "Maps" (one Map per wafer) or "Map" (a single-wafer file, as most
    writers produce); codes of ``bin_type`` with or without separators; Rows/Columns, LotId
    (``lot`` None) and DeviceSizeX/Y (``size`` None) optional; ``orientation`` the notch angle."""
    qualities = qualities or {1: "Pass", 3: "Fail", 7: "Fail"}
    fmt, default_null = G85_CODE[bin_type]
    null = default_null if null_bin is None else null_bin

    def code(v) -> str:
        if bin_type == "Ascii":
            return ASCII_CODES[int(v)]
        return fmt.format(int(v))

    assert root == "Maps" or len(wafers) == 1, "a <Map> root holds one wafer"
    parts = ['<?xml version="1.0" encoding="utf-8"?>'] + (["<Maps>"] if root == "Maps" else [])
    for wafer_id, bins in wafers.items():
        array = file_array(bins, orientation)
        rows, cols = array.shape
        parts.append(f'  <Map {namespace} SubstrateType="Wafer" {id_attr}="{wafer_id}" FormatRevision="SEMI G85-1101">')
        attrs = ['ProductId="PART-A"'] + ([f'LotId="{lot}"'] if lot is not None else []) + ['WaferSize="200"']
        if size is not None:
            attrs += [f'DeviceSizeX="{size[0]}"', f'DeviceSizeY="{size[1]}"']
        if rows_columns:
            attrs += [f'Rows="{rows}"', f'Columns="{cols}"']
        attrs += [f'Orientation="{orientation}"', 'OriginLocation="0"', f'BinType="{bin_type}"',
                  f'NullBin="{null if bin_type == "Ascii" else fmt.format(null)}"', 'CreateDate="20261202193000000"']
        parts.append("    <Device " + " ".join(attrs) + ">")
        parts.append('      <ReferenceDevice ReferenceDeviceX="0" ReferenceDeviceY="0"/>')
        for c, quality in qualities.items():
            parts.append(f'      <Bin BinCode="{code(c)}" BinCount="{int((bins == c).sum())}" '
                         f'BinQuality="{quality}" BinDescription="bin {c}"/>')
        parts.append('      <Data MapName="Map" MapVersion="1">')
        sep = " " if separated else ""
        for row in array:
            codes = sep.join(str(null) if v == 0 and bin_type == "Ascii" else
                             fmt.format(null) if v == 0 else code(v) for v in row)
            parts.append(f"        <Row><![CDATA[{codes}]]></Row>")
        parts += ["      </Data>", "    </Device>", "  </Map>"]
    parts += ["</Maps>"] if root == "Maps" else []
    return "\n".join(parts) + "\n"


# ---- SEMI E142 ------------------------------------------------------------------------------------------


def e142_text(lot: str, wafers: dict[str, np.ndarray], bin_type: str = "Decimal",
              qualities: dict | None = None, substrates: bool = True, origin: str = "LowerLeft",
              axis: str = "UpRight", orientation: int = 0, device_size: tuple | None = None) -> str:
    """E142-1 V1005 layout: a top wafer layout with a child device layout, a Substrate per wafer
    (``substrates`` False: no Substrates element) and a SubstrateMap whose BinCodeMap overlay holds
    one BinCode row element per die row, listed from the ``origin`` corner along ``axis``."""
    qualities = qualities or {1: "Pass", 3: "Fail", 7: "Fail"}
    arrays = {w: file_array(b, orientation, first_row_bottom=axis.startswith("Up"),
                            right_to_left=axis.endswith("Left")) for w, b in wafers.items()}
    rows, cols = next(iter(arrays.values())).shape
    fmt, null = {"Decimal": ("{:03d}", "255"), "HexaDecimal": ("{:02X}", "FF"), "Integer2": ("{:04X}", "FFFF")}[bin_type]
    sep = " " if bin_type == "Decimal" else ""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<MapData xmlns="urn:semi-org:xsd.E142-1.V1005.SubstrateMap">',
             "  <Layouts>",
             '    <Layout LayoutId="WaferMap" DefaultUnits="mm" TopLevel="true">',
             '      <Dimension X="1" Y="1"/>', '      <DeviceSize X="200" Y="200"/>',
             '      <ChildLayouts><ChildLayout LayoutId="Devices"/></ChildLayouts>', "    </Layout>",
             '    <Layout LayoutId="Devices" DefaultUnits="mm">',
             f'      <Dimension X="{cols}" Y="{rows}"/>', '      <StepSize X="5" Y="5"/>']
    if device_size is not None:
        parts.append(f'      <DeviceSize X="{device_size[0]}" Y="{device_size[1]}"/>')
    parts += ["      <ProductId>PART-A</ProductId>", "    </Layout>", "  </Layouts>"]
    if substrates:
        parts.append("  <Substrates>")
        for wafer_id, bins in wafers.items():
            parts += [f'    <Substrate SubstrateType="Wafer" SubstrateId="{wafer_id}">', f"      <LotId>{lot}</LotId>",
                      f"      <GoodDevices>{int((bins == 1).sum())}</GoodDevices>", "    </Substrate>"]
        parts.append("  </Substrates>")
    parts.append("  <SubstrateMaps>")
    for wafer_id, bins in wafers.items():
        parts += [f'    <SubstrateMap SubstrateType="Wafer" SubstrateId="{wafer_id}" LayoutSpecifier="WaferMap/Devices" '
                  f'Orientation="{orientation}" OriginLocation="{origin}" AxisDirection="{axis}">',
                  '      <Overlay MapName="SortGrade" MapVersion="1">',
                  f'        <BinCodeMap BinType="{bin_type}" NullBin="{null}" MapType="2DArray">',
                  "          <BinDefinitions>"]
        for code, quality in qualities.items():
            parts.append(f'            <BinDefinition BinCode="{fmt.format(code)}" BinQuality="{quality}" '
                         f'BinDescription="bin {code}" BinCount="{int((bins == code).sum())}"/>')
        parts.append("          </BinDefinitions>")
        for row in arrays[wafer_id]:
            parts.append("          <BinCode>" + sep.join(null if v == 0 else fmt.format(v) for v in row) + "</BinCode>")
        parts += ["        </BinCodeMap>", "      </Overlay>", "    </SubstrateMap>"]
    parts += ["  </SubstrateMaps>", "</MapData>"]
    return "\n".join(parts) + "\n"


# ---- KLARF 1.2 ----------------------------------------------------------------------------------------

DEFECT_COLUMNS = ("DEFECTID XREL YREL XINDEX YINDEX XSIZE YSIZE DEFECTAREA DSIZE CLASSNUMBER TEST CLUSTERNUMBER "
                  "ROUGHBINNUMBER FINEBINNUMBER REVIEWSAMPLE IMAGECOUNT IMAGELIST").split()


def klarf_text(lot: str, wafers: dict[str, list[tuple[int, int, int]] | None], plan: list[tuple[int, int]] | None,
               pitch: float | tuple = 10000.0, diameter_mm: int = 100, centre: float = 50000.0, indent: str = " ",
               quote_ids: bool = True, mark: str = "DOWN", summary: bool = True,
               summary_counts: dict | None = None, plan_per_wafer: bool = True) -> str:
    """KLARF 1.2: ``wafers`` maps a wafer id to its defects ``(xindex, yindex, classnumber)``, or to
    None for a wafer written without DefectList and SummaryList (a clean wafer, as some tools do);
    ``plan`` the SampleTestPlan dies (None: no plan). ``indent`` starts the list rows ("" as some
    writers do); ``quote_ids`` False writes ``WaferID W1;``; ``mark`` the OrientationMarkLocation;
    ``summary_counts`` overrides the SummaryList NDEFECT of some wafers; ``plan_per_wafer`` False
    writes the plan for the first wafer only."""
    px, py = pitch if isinstance(pitch, tuple) else (pitch, pitch)
    q = (lambda t: f'"{t}"') if quote_ids else (lambda t: t)
    lines = ["FileVersion 1 2;", "FileTimestamp 12-02-26 19:30:00;", 'InspectionStationID "KLA" "2367" "TOOL1";',
             "SampleType WAFER;", "ResultTimestamp 12-02-26 19:30:00;", f"LotID {q(lot)};",
             f"SampleSize 1 {diameter_mm};", 'DeviceID "PART-A";', 'SetupID "RECIPE" 12-02-26 19:00:00;',
             'StepID "M1";', "SampleOrientationMarkType NOTCH;", f"OrientationMarkLocation {mark};",
             f"DiePitch {px:.10e} {py:.10e};", "DieOrigin 0.000000e+00 0.000000e+00;"]
    for slot, (wafer_id, defects) in enumerate(wafers.items(), 1):
        lines += [f"WaferID {q(wafer_id)};", f"Slot {slot};", f"SampleCenterLocation {centre:.6e} {centre:.6e};",
                  "InspectionTest 1;"]
        if plan is not None and (plan_per_wafer or slot == 1):
            lines.append(f"SampleTestPlan {len(plan)}")
            lines += [f"{indent}{x} {y}" for x, y in plan[:-1]] + [f"{indent}{plan[-1][0]} {plan[-1][1]};"]
        lines += ["AreaPerTest 7.853982e+09;", f"DefectRecordSpec {len(DEFECT_COLUMNS)} {' '.join(DEFECT_COLUMNS)};"]
        if defects is None:
            continue
        if not defects:
            lines.append("DefectList;")
        else:
            lines.append("DefectList")
            for i, (x, y, cls) in enumerate(defects, 1):
                end = ";" if i == len(defects) else ""
                lines.append(f"{indent}{i} 1.250e+03 2.500e+03 {x} {y} 5.0 5.0 25.0 5.0 {cls} 1 0 0 0 0 0 0{end}")
        if summary:
            count = (summary_counts or {}).get(wafer_id, len(defects))
            lines += ["SummarySpec 5 TESTNO NDEFECT DEFDENSITY NDIE NDEFDIE;", "SummaryList",
                      f"{indent}1 {count} 1.0e+00 {len(plan or [])} {len({(x, y) for x, y, _ in defects})};"]
    lines.append("EndOfFile;")
    return "\n".join(lines) + "\n"


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def sparse_disc(size: int = 60, fail_rate: float = 0.015, seed: int = 0, fail_bins=(3, 7)) -> np.ndarray:
    """A round wafer like a real sort map: bin 1 on the disc, about ``fail_rate`` of it failing."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    centre = (size - 1) / 2
    on = (yy - centre) ** 2 + (xx - centre) ** 2 <= (centre + 0.5) ** 2
    bins = np.where(on, 1, 0)
    fails = on & (rng.random(on.shape) < fail_rate)
    bins[fails] = rng.choice(fail_bins, size=int(fails.sum()))
    return bins.astype(np.int64)


def compress(data: bytes, kind: str, member: str = "map") -> bytes:
    """``data`` as a gzip, bzip2, xz file or a zip holding it as its one member."""
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    if kind == "gzip":
        return gzip.compress(data, mtime=0)
    if kind == "bzip2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(member, data)
        return buf.getvalue()
    raise ValueError(kind)
