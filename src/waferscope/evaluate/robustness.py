"""Robustness of the bundled models to what fab wafers vary in and WM-811K does not (issue 27).

Every factor is measured two ways, per level:

- **clean wafers**: perfectly round wafers (a die wherever the die centre lies inside the grid's
  inscribed ellipse, the wafer touching all four grid edges as a die list gives it) with 0–1 %
  random fail dies (uniform per wafer; the ``yield`` factor sets the rate), transformed by the
  factor. The **false-alarm rate** is the share a classifier does not call ``none``, or a detector
  scores above its own decision threshold (``threshold_``);
- **real dev maps** (a class-stratified sample of ``wm811k_dev.npz``, which the bundled models
  trained on, so this measures invariance, not generalisation): the same transform, then the
  classifier's macro-F1 (a detector's AUROC of defect vs ``none``), and the share of maps whose
  prediction is the one of the untransformed map (``agreement``; for a detector, whose score
  moves continuously, the share whose above/below-threshold decision is unchanged).

Factors (levels in :data:`FULL` / :data:`SMALL`):

- ``size``: clean wafers D dies across; dev maps with each die split into k×k dies;
- ``aspect``: clean wafers 100 dies across on a grid of rows/cols = a; dev maps with every row
  (a > 1) or column (a < 1) repeated;
- ``yield``: clean wafers 60 across with exactly that random fail rate; dev maps with random fails
  added at that rate;
- ``orientation``: rotations by 90/180/270° and the two flips (a pattern's class does not change;
  Edge-Loc and Loc stay themselves);
- ``margin``: a border of no-die cells around the grid, even or on two sides only (an off-centre grid);
- ``clip``: a share of the rows cut off one side of the grid (a partial map);
- ``edge_exclusion``: the outer 1–3 rings of dies removed (not tested);
- ``format``: the map written as npy, CSV die list, STDF, KLARF, SEMI G85 and SEMI E142 XML by the
  small writers below (each in its format's own layout and orientation convention), read back with
  :func:`waferscope.data.load`; also the share of maps read back identical to the npy map
  (exactly, and up to a rotation/flip, to tell an orientation convention from lost dies).

A factor whose dev maps are missing says so in its ``note`` and the rest still runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from waferscope.data.classes import NORMAL
from waferscope.data.dataset import WaferDataset
from waferscope.data.preprocess import dihedral
from waferscope.errors import ConfigError

FACTORS = ("size", "aspect", "yield", "orientation", "margin", "clip", "edge_exclusion", "format")
ORIENTATIONS = {"rot90": 1, "rot180": 2, "rot270": 3, "flip_lr": 4, "flip_ud": 6}  # index of preprocess.dihedral
FORMATS = ("npy", "csv", "stdf", "klarf", "g85", "e142")
CLEAN_RATE = (0.0, 0.01)  # random fail rate of a clean wafer, uniform per wafer


@dataclass(frozen=True)
class Settings:
    """How many wafers per level, and the levels of each factor."""

    n_clean: int = 200
    n_dev: int = 450
    sizes: tuple = (20, 30, 50, 75, 100, 150, 200, 300)
    dev_splits: tuple = (2, 4)  # each die → k×k dies
    aspects: tuple = (0.5, 0.75, 1.33, 2.0)
    rates: tuple = (0.0, 0.005, 0.01, 0.02, 0.03)
    margins: tuple = ("even:2", "even:8", "offcentre:10%")
    clips: tuple = (0.05, 0.1, 0.2)
    exclusions: tuple = (1, 2, 3)
    formats: tuple = FORMATS
    format_sizes: tuple = (40, 100)
    base_size: int = 60  # clean wafers of the yield, orientation, margin, clip, exclusion and format factors
    factors: tuple = FACTORS
    extra: dict = field(default_factory=dict)


FULL = Settings()
SMALL = Settings(n_clean=12, n_dev=27, sizes=(20, 100), dev_splits=(2,), aspects=(0.5,), rates=(0.0, 0.03),
                 margins=("offcentre:10%",), clips=(0.1,), exclusions=(2,), format_sizes=(40,), base_size=40)


# ---- clean wafers and transforms ---------------------------------------------------------------
def clean_wafer(rows: int, cols: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Return a perfectly round wafer on a rows×cols grid with random fail dies at ``rate``.

    The dies are those whose centres lie inside the inscribed ellipse.
    """
    r = (np.arange(rows) + 0.5 - rows / 2) / (rows / 2)
    c = (np.arange(cols) + 0.5 - cols / 2) / (cols / 2)
    on = r[:, None] ** 2 + c[None, :] ** 2 <= 1.0
    m = on.astype(np.uint8)
    m[on & (rng.random(on.shape) < rate)] = 2
    return m


def clean_wafers(n: int, rows: int, cols: int, rng: np.random.Generator, rate: float | None = None) -> list[np.ndarray]:
    """Return ``n`` clean round wafers on a rows×cols grid (fail rate drawn from CLEAN_RATE unless ``rate``)."""
    return [clean_wafer(rows, cols, rng.uniform(*CLEAN_RATE) if rate is None else rate, rng) for _ in range(n)]


def split_dies(m: np.ndarray, k_rows: int, k_cols: int) -> np.ndarray:
    """Every die → a k_rows×k_cols block of dies in its state."""
    return np.repeat(np.repeat(m, k_rows, axis=0), k_cols, axis=1)


def add_fails(m: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Return ``m`` with each passing die turned to fail with probability ``rate``."""
    out = m.copy()
    out[(m == 1) & (rng.random(m.shape) < rate)] = 2
    return out


def add_margin(m: np.ndarray, spec: str) -> np.ndarray:
    """``even:K`` K no-die cells on every side; ``offcentre:P%`` P % of the extent on the top and left only."""
    kind, _, amount = spec.partition(":")
    if kind == "even":
        return np.pad(m, int(amount))
    if kind == "offcentre":
        k_r = max(1, int(round(m.shape[0] * float(amount.rstrip("%")) / 100)))
        k_c = max(1, int(round(m.shape[1] * float(amount.rstrip("%")) / 100)))
        return np.pad(m, ((k_r, 0), (k_c, 0)))
    raise ConfigError(f"margin level must be even:K or offcentre:P%, got {spec!r}")


def clip_rows(m: np.ndarray, share: float) -> np.ndarray:
    """Cut ``share`` of the rows off the bottom of the grid (keeps at least one die)."""
    keep = max(1, m.shape[0] - int(round(m.shape[0] * share)))
    out = m[:keep]
    return out if (out > 0).any() else m


def exclude_edge(m: np.ndarray, rings: int) -> np.ndarray:
    """Remove the outer ``rings`` rings of dies (chessboard distance to a no-die cell or the grid edge).

    As an edge-exclusion zone that is not tested; the grid keeps its size.
    """
    from scipy import ndimage

    on = np.pad(m > 0, 1)
    inner = ndimage.binary_erosion(on, structure=np.ones((3, 3), bool), iterations=rings)[1:-1, 1:-1]
    return np.where(inner, m, 0).astype(np.uint8) if inner.any() else m


# ---- format writers (small: enough for the loaders to read the map back) ------------------------
def write_csv(path: Path, maps: list[np.ndarray]) -> None:
    """CSV die list, one wafer per map.

    X = column, y up (the die-list convention: row 0 is the largest y, see docs/data.md), bin 1
    pass, bin 3 fail.
    """
    lines = ["lot,wafer,x,y,bin"]
    for i, m in enumerate(maps):
        top = m.shape[0] - 1
        for r, c in zip(*np.nonzero(m)):
            lines.append(f"LOT1,W{i:04d},{c},{top - r},{1 if m[r, c] == 1 else 3}")
    path.write_text("\n".join(lines) + "\n")


def write_stdf(path: Path, maps: list[np.ndarray]) -> None:
    """STDF V4, little-endian, no WCR (so y grows down the wafer: row = Y_COORD).

    By the package's :class:`~waferscope.data.loaders.stdf_writer.StdfWriter`: FAR, MIR, then per
    wafer WIR, a PIR/PRR pair per die (HARD_BIN 1 or 3; PART_FLG bit 3 on a failing die), WRR; MRR.
    """
    from waferscope.data.loaders.stdf_writer import StdfWriter

    with open(path, "wb") as fh:
        w = StdfWriter(fh)
        w.far()
        w.mir("LOT1", part="PART")
        for i, m in enumerate(maps):
            wid = f"W{i:04d}"
            w.wir(wid)
            rows, cols = np.nonzero(m)
            for r, c in zip(rows, cols):
                w.pir()
                w.prr(int(c), int(r), 3 if m[r, c] == 2 else 1)
            w.wrr(wid, len(rows), int((m == 1).sum()))
        w.mrr()


def write_klarf(path: Path, m: np.ndarray, wafer_id: str = "W0000") -> None:
    """Return KLARF 1.2 text of one wafer.

    Every die in the SampleTestPlan (XINDEX = column, YINDEX up: KLARF's die indices grow upwards,
    so row 0 is the largest YINDEX), one defect on every failing die.
    """
    top = m.shape[0] - 1
    plan = [(int(c), top - int(r)) for r, c in zip(*np.nonzero(m))]
    fails = [(int(c), top - int(r)) for r, c in zip(*np.nonzero(m == 2))]
    lines = ["FileVersion 1 2;", "FileTimestamp 12-06-26 00:00:00;", 'InspectionStationID "KLA" "2367" "TOOL1";',
             "SampleType WAFER;", "ResultTimestamp 12-06-26 00:00:00;", 'LotID "LOT1";', "SampleSize 1 300;",
             'DeviceID "PART";', 'SetupID "RECIPE" 12-06-26 00:00:00;', 'StepID "M1";',
             "SampleOrientationMarkType NOTCH;", "OrientationMarkLocation DOWN;",
             "DiePitch 1.0000000000e+03 1.0000000000e+03;", "DieOrigin 0.000000e+00 0.000000e+00;",
             f'WaferID "{wafer_id}";', "Slot 1;", "SampleCenterLocation 1.500000e+05 1.500000e+05;", "InspectionTest 1;",
             f"SampleTestPlan {len(plan)}"]
    lines += [f" {x} {y}" for x, y in plan[:-1]] + [f" {plan[-1][0]} {plan[-1][1]};"]
    columns = ("DEFECTID XREL YREL XINDEX YINDEX XSIZE YSIZE DEFECTAREA DSIZE CLASSNUMBER TEST CLUSTERNUMBER "
               "ROUGHBINNUMBER FINEBINNUMBER REVIEWSAMPLE IMAGECOUNT IMAGELIST")
    lines += ["AreaPerTest 7.0e+10;", f"DefectRecordSpec {len(columns.split())} {columns};"]
    if fails:
        lines.append("DefectList")
        lines += [f" {i} 5.0e+02 5.0e+02 {x} {y} 5.0 5.0 25.0 5.0 1 1 0 0 0 0 0 0" + (";" if i == len(fails) else "")
                  for i, (x, y) in enumerate(fails, 1)]
    else:
        lines.append("DefectList;")
    lines += ["SummarySpec 5 TESTNO NDEFECT DEFDENSITY NDIE NDEFDIE;", "SummaryList",
              f" 1 {len(fails)} 1.0e+00 {len(plan)} {len(fails)};", "EndOfFile;"]
    path.write_text("\n".join(lines) + "\n")


# Bin codes of the two XML map formats: pass and fail bins as a sort map gives them, the null bin
# (no die) the formats' usual one (255 in Decimal, FF in HexaDecimal: the largest code of the type).
G85_CODES = ("255", "001", "003")  # no die, pass, fail: Decimal, three digits
E142_CODES = ("FF", "01", "03")  # no die, pass, fail: HexaDecimal, two digits
# E142 OriginLocation → (AxisDirection, the BinCode rows listed bottom row first, each row right to left)
E142_ORIGINS = {"UpperLeft": ("DownRight", False, False), "LowerLeft": ("UpRight", True, False),
                "UpperRight": ("DownLeft", False, True), "LowerRight": ("UpLeft", True, True)}


def _drawing(m: np.ndarray, orientation: int) -> np.ndarray:
    """Return the stored (notch-down) map turned clockwise so that the notch sits at ``orientation``.

    ``orientation`` is in degrees clockwise from the bottom: the result is the drawing a G85/E142
    file with that Orientation holds.
    """
    if orientation % 90:
        raise ConfigError(f"orientation must be a multiple of 90 degrees, got {orientation}")
    return np.rot90(m, -(orientation // 90) % 4)  # k < 0 turns clockwise


def write_g85(path: Path, m: np.ndarray, wafer_id: str = "W0000", orientation: int = 0) -> None:
    """SEMI G85 map XML of one wafer, laid out as map servers and the ``g85`` package write it.

    A ``<Maps>`` root holding the wafer's ``<Map>`` (namespace ``http://www.semi.org``), one
    ``<Device>`` with ``BinType="Decimal"``, ``NullBin="255"``, Rows/Columns, ``OriginLocation="2"``
    (upper left, the first code of the first row), a ``<Bin>`` per code (001 Pass, 003 Fail, with its
    count) and the ``<Data>`` rows in CDATA, three-digit codes separated by a space. The rows are the
    drawing, top row first (G85 has no axis attribute), seen with the notch at ``orientation`` degrees
    clockwise from the bottom: 0 writes the stored map as it is.
    """
    draw = _drawing(m, orientation)
    rows, cols = draw.shape
    n_pass, n_fail = int((m == 1).sum()), int((m == 2).sum())
    on = np.argwhere(draw > 0)
    ref = f'      <ReferenceDevice ReferenceDeviceX="{on[0][1]}" ReferenceDeviceY="{on[0][0]}"/>' if len(on) else ""
    codes = np.asarray(G85_CODES)[draw]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<Maps>",
             f'  <Map xmlns="http://www.semi.org" FormatRevision="SEMI G85 0703" SubstrateType="Wafer" '
             f'SubstrateId="{wafer_id}">',
             f'    <Device ProductId="PART" LotId="LOT1" WaferSize="300" CreateDate="20261206000000000" '
             f'DeviceSizeX="1000" DeviceSizeY="1000" Rows="{rows}" Columns="{cols}" OriginLocation="2" '
             f'Orientation="{orientation}" BinType="Decimal" NullBin="{G85_CODES[0]}" MapType="Array">']
    lines += [ref] if ref else []
    lines += [f'      <Bin BinCode="{G85_CODES[1]}" BinCount="{n_pass}" BinQuality="Pass" BinDescription="pass"/>',
              f'      <Bin BinCode="{G85_CODES[2]}" BinCount="{n_fail}" BinQuality="Fail" BinDescription="fail"/>',
              '      <Data MapName="Map" MapVersion="1">']
    lines += ["        <Row><![CDATA[" + " ".join(r) + " ]]></Row>" for r in codes]
    lines += ["      </Data>", "    </Device>", "  </Map>", "</Maps>"]
    path.write_text("\n".join(lines) + "\n")


def write_e142(path: Path, m: np.ndarray, wafer_id: str = "W0000", orientation: int = 0,
               origin: str = "UpperLeft") -> None:
    """SEMI E142 substrate-map XML of one wafer.

    Laid out as wafer-sort map writers produce it (E142-1 V1005 namespace): a top wafer layout with a
    child device layout whose ``Dimension`` is the grid, the Substrate with its LotId, and a
    SubstrateMap with a ``SortGrade`` overlay whose ``BinCodeMap`` (``BinType="HexaDecimal"``,
    ``NullBin="FF"``, BinDefinitions 01 Pass and 03 Fail with their counts) holds one ``<BinCode>``
    element per row, two hex digits per die without separators. The rows are numbered from the
    ``origin`` corner (``UpperLeft`` with AxisDirection ``DownRight``: top row first, the usual
    wafer-sort layout; ``LowerLeft``/``UpRight`` bottom row first; …Right origins run right to left),
    seen with the notch at ``orientation`` degrees clockwise from the bottom.
    """
    if origin not in E142_ORIGINS:
        raise ConfigError(f"E142 origin must be one of {', '.join(E142_ORIGINS)}, got {origin!r}")
    axis, bottom_first, right_to_left = E142_ORIGINS[origin]
    draw = _drawing(m, orientation)
    draw = draw[::-1] if bottom_first else draw
    draw = draw[:, ::-1] if right_to_left else draw
    rows, cols = draw.shape
    n_pass, n_fail = int((m == 1).sum()), int((m == 2).sum())
    codes = np.asarray(E142_CODES)[draw]
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             '<MapData xmlns="urn:semi-org:xsd.E142-1.V1005.SubstrateMap">',
             "  <Layouts>",
             '    <Layout LayoutId="WaferLayout" DefaultUnits="mm" TopLevel="true">',
             '      <Dimension X="1" Y="1"/>',
             '      <ChildLayouts><ChildLayout LayoutId="Devices"/></ChildLayouts>',
             "    </Layout>",
             '    <Layout LayoutId="Devices" DefaultUnits="mm">',
             f'      <Dimension X="{cols}" Y="{rows}"/>', '      <DeviceSize X="1" Y="1"/>',
             "    </Layout>", "  </Layouts>",
             "  <Substrates>", f'    <Substrate SubstrateType="Wafer" SubstrateId="{wafer_id}">',
             "      <LotId>LOT1</LotId>", "    </Substrate>", "  </Substrates>",
             "  <SubstrateMaps>",
             f'    <SubstrateMap SubstrateType="Wafer" SubstrateId="{wafer_id}" LayoutSpecifier="WaferLayout/Devices" '
             f'Orientation="{orientation}" OriginLocation="{origin}" AxisDirection="{axis}">',
             '      <Overlay MapName="SortGrade" MapVersion="1">',
             f'        <BinCodeMap BinType="HexaDecimal" NullBin="{E142_CODES[0]}" MapType="2DArray">',
             "          <BinDefinitions>",
             f'            <BinDefinition BinCode="{E142_CODES[1]}" BinCount="{n_pass}" BinQuality="Pass" '
             'BinDescription="pass" Pick="true"/>',
             f'            <BinDefinition BinCode="{E142_CODES[2]}" BinCount="{n_fail}" BinQuality="Fail" '
             'BinDescription="fail" Pick="false"/>',
             "          </BinDefinitions>"]
    lines += ["          <BinCode>" + "".join(r) + "</BinCode>" for r in codes]
    lines += ["        </BinCodeMap>", "      </Overlay>", "    </SubstrateMap>", "  </SubstrateMaps>", "</MapData>"]
    path.write_text("\n".join(lines) + "\n")


# one file per wafer, as these formats usually come (npy, KLARF, G85, E142), and its writer
_PER_WAFER = {"klarf": (".klarf", write_klarf), "g85": (".xml", write_g85), "e142": (".xml", write_e142)}


def roundtrip(maps: list[np.ndarray], fmt: str, folder: Path) -> list[np.ndarray]:
    """Write ``maps`` in ``fmt`` and read them back with :func:`waferscope.data.load`."""
    from waferscope.data import load

    if fmt == "npy":
        out = []
        for i, m in enumerate(maps):
            np.save(folder / f"w{i}.npy", m)
            out.append(load(folder / f"w{i}.npy").maps[0])
        return out
    if fmt == "csv":
        write_csv(folder / "maps.csv", maps)
        return list(load(folder / "maps.csv").maps)
    if fmt == "stdf":
        write_stdf(folder / "maps.stdf", maps)
        return list(load(folder / "maps.stdf").maps)
    if fmt in _PER_WAFER:
        suffix, writer = _PER_WAFER[fmt]
        out = []
        for i, m in enumerate(maps):
            writer(folder / f"w{i}{suffix}", m, wafer_id=f"W{i:04d}")
            out.append(load(folder / f"w{i}{suffix}").maps[0])
        return out
    raise ConfigError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


def same_map(a: np.ndarray, b: np.ndarray) -> bool:
    """Return whether two maps are identical (shape and every die)."""
    return a.shape == b.shape and bool((a == b).all())


def same_up_to_symmetry(a: np.ndarray, b: np.ndarray) -> bool:
    """Return whether ``a`` is one of the 8 rotations/flips of ``b``."""
    return any(same_map(np.ascontiguousarray(dihedral(a, k)), b) for k in range(8))


# ---- models --------------------------------------------------------------------------------------
@dataclass
class Model:
    """A classifier or detector under test: ``predict(maps)`` → labels (classifier) or scores."""

    name: str
    kind: str  # "classifier" or "detector"
    est: object
    threshold: float | None = None

    def outputs(self, maps: list[np.ndarray]) -> np.ndarray:
        """Return the model's output for each map: the predicted class, or the anomaly score."""
        ds = WaferDataset.from_maps(maps, validate=False)
        if self.kind == "classifier":
            proba = self.est.predict_proba(ds)
            return np.asarray(self.est.classes_, dtype=object)[proba.argmax(1)]
        return np.asarray(self.est.score(ds).scores, dtype=np.float64)

    def alarms(self, out: np.ndarray) -> np.ndarray:
        """Return which outputs are alarms: a class other than normal, or a score above the threshold."""
        if self.kind == "classifier":
            return out.astype(str) != NORMAL
        return out > self.threshold


def bundled_models(names: Iterable[str] = (), runs: Iterable[Path] = ()) -> list[Model]:
    """Return the bundled classifiers and detectors and their run directories.

    ``names`` restricts them (both kinds' names are accepted); a detector without a stored threshold
    is a clear error.
    """
    from waferscope.base import load_run
    from waferscope.models import classifiers, detectors

    names, runs = list(names), list(runs)
    wanted_c = list(classifiers.BUNDLED) if not names and not runs else []
    wanted_d = list(detectors.BUNDLED) if not names and not runs else []
    for n in names:
        c = classifiers.BUNDLED_ALIASES.get(n, n)
        d = detectors.BUNDLED_ALIASES.get(n, n)
        if c in classifiers.BUNDLED:
            wanted_c.append(c)
        elif d in detectors.BUNDLED:
            wanted_d.append(d)
        else:
            raise ConfigError(f"unknown bundled model {n!r}; classifiers: {', '.join(classifiers.BUNDLED)}; "
                              f"detectors: {', '.join(detectors.BUNDLED)}")
    out = [Model(n, "classifier", classifiers.load_default(n)) for n in wanted_c]

    def threshold(det, folder: Path, what: str) -> float:
        if det.threshold_ is None:
            raise ConfigError(f"detector {what} has no decision threshold: the false-alarm rate needs one", folder)
        return det.threshold_

    for n in wanted_d:
        det = detectors.load_default(n)
        out.append(Model(n, "detector", det, threshold(det, detectors.BUNDLED[n], n)))
    for r in runs:
        est = load_run(r)
        kind = est.registry_kind
        out.append(Model(str(r), kind, est, threshold(est, r, str(r)) if kind == "detector" else None))
    return out


# ---- the suite -----------------------------------------------------------------------------------
def dev_sample(path: Path | None, n: int, seed: int) -> WaferDataset | None:
    """Return a class-stratified sample of about ``n`` labelled real dev maps (None when the file is missing)."""
    from waferscope.data import load
    from waferscope.data.paths import DEV_MAPS

    path = Path(path) if path is not None else DEV_MAPS
    if not path.is_file():
        return None
    ds = load(path).labelled()
    labels = ds.labels.astype(str)
    classes = sorted(set(labels))
    per = max(1, n // len(classes))
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes])
    return ds.subset(np.sort(idx))


def _levels(settings: Settings, factor: str) -> list:
    if factor == "size":  # clean wafers D across, then the dev maps with each die split k×k
        return list(settings.sizes) + [f"dev_split{k}" for k in settings.dev_splits]
    return {"aspect": list(settings.aspects), "yield": list(settings.rates), "orientation": list(ORIENTATIONS),
            "margin": list(settings.margins), "clip": list(settings.clips), "edge_exclusion": list(settings.exclusions),
            "format": list(settings.formats)}[factor]


def transform(factor: str, level, m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One map under a factor's level (for ``size``: ``dev_splitK``; ``aspect``: > 1 repeats rows, < 1 columns)."""
    if factor == "size":
        k = int(str(level).removeprefix("dev_split"))
        return split_dies(m, k, k)
    if factor == "aspect":
        return split_dies(m, 2, 1) if float(level) > 1 else split_dies(m, 1, 2)
    if factor == "yield":
        return add_fails(m, float(level), rng)
    if factor == "orientation":
        return np.ascontiguousarray(dihedral(m, ORIENTATIONS[level]))
    if factor == "margin":
        return add_margin(m, str(level))
    if factor == "clip":
        return clip_rows(m, float(level))
    if factor == "edge_exclusion":
        return exclude_edge(m, int(level))
    raise ConfigError(f"no map transform for factor {factor!r}")


@dataclass
class _Level:
    clean: list | None = None  # clean wafers to score (None: none at this level)
    clean_ref: list | None = None  # the same wafers untransformed (for clean_agreement)
    dev: list | None = None  # transformed dev maps (None: not at this level)
    note: str = ""
    ident: float = float("nan")
    ident_sym: float = float("nan")


def _level_inputs(factor: str, level, settings: Settings, base_clean: list, dev, seed: int, key: tuple) -> _Level:
    rng_c = np.random.default_rng([seed, 2, *key])
    rng_d = np.random.default_rng([seed, 3, *key])
    dev_maps = list(dev.maps) if dev is not None else None
    n, b = settings.n_clean, settings.base_size
    if factor == "format":
        # the same clean wafers in every format (seeded by the factor, not the level): a false alarm that
        # differs between two formats is then the format's doing, not another draw of wafers
        rng_f = np.random.default_rng([seed, 2, key[0]])
        clean = [w for s in settings.format_sizes for w in clean_wafers(max(1, n // len(settings.format_sizes)), s, s, rng_f)]
        with tempfile.TemporaryDirectory(prefix="waferscope-robust-") as tmp:
            back = roundtrip(clean, level, Path(tmp))
            dev_back = None
            if dev_maps is not None:
                (Path(tmp) / "dev").mkdir()
                dev_back = roundtrip(dev_maps, level, Path(tmp) / "dev")
        pairs = list(zip(clean, back)) + (list(zip(dev_maps, dev_back)) if dev_back is not None else [])
        return _Level(back, clean, dev_back, f"clean wafers {', '.join(map(str, settings.format_sizes))} across",
                      float(np.mean([same_map(x, y) for x, y in pairs])),
                      float(np.mean([same_up_to_symmetry(x, y) for x, y in pairs])))
    if factor == "size":
        if str(level).startswith("dev_split"):
            if dev_maps is None:
                return _Level(note="no dev maps")
            k = str(level).removeprefix("dev_split")
            return _Level(dev=[transform(factor, level, m, rng_d) for m in dev_maps],
                          note=f"dev maps with each die split into {k}×{k}")
        return _Level(clean=clean_wafers(n, int(level), int(level), rng_c))
    if factor == "aspect":
        root = float(level) ** 0.5
        out = _Level(clean=clean_wafers(n, max(8, int(round(100 * root))), max(8, int(round(100 / root))), rng_c),
                     note="clean wafers 100 dies across")
        if dev_maps is not None and float(level) in (0.5, 2.0):
            out.dev = [transform(factor, level, m, rng_d) for m in dev_maps]
            out.note += "; dev maps with every " + ("row" if float(level) > 1 else "column") + " repeated"
        return out
    if factor == "yield":
        return _Level(clean=clean_wafers(n, b, b, rng_c, rate=float(level)),
                      dev=None if dev_maps is None else [transform(factor, level, m, rng_d) for m in dev_maps],
                      note=f"clean wafers {b} across; dev maps with random fails added at this rate")
    # orientation, margin, clip, edge exclusion: the base clean wafers and the dev maps, transformed
    note = f"clean wafers {b} across"
    if factor in ("clip", "edge_exclusion"):
        note += "; dev labels kept, though the cut can remove an edge pattern"
    return _Level(clean=[transform(factor, level, m, rng_c) for m in base_clean], clean_ref=base_clean,
                  dev=None if dev_maps is None else [transform(factor, level, m, rng_d) for m in dev_maps], note=note)


def _dev_metric(model: Model, labels: np.ndarray, out: np.ndarray) -> float:
    if model.kind == "classifier":
        from waferscope.metrics.classification import macro_f1

        return float(macro_f1(labels, out.astype(str)))
    from sklearn.metrics import roc_auc_score

    y = labels != NORMAL
    return float(roc_auc_score(y, out)) if 0 < y.sum() < len(y) else float("nan")


def run(models: list[Model], settings: Settings = FULL, seed: int = 0, dev_path: Path | None = None,
        progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Return the robustness table: one row per (model, factor, level).

    Columns: ``clean_false_alarm``, ``clean_agreement`` (share of clean wafers whose decision is the
    one of the same wafer untransformed, or read from npy for the format factor), ``dev_metric``
    (macro-F1; a detector's AUROC), ``dev_agreement`` (share of dev maps with the untransformed map's
    prediction), ``map_identical`` / ``map_identical_sym`` (format factor: maps read back equal to the
    written ones, exactly / up to a rotation or flip), ``n_clean``, ``n_dev``, ``note``. A
    ``reference`` row per model holds the untransformed figures.
    """
    bad = sorted(set(settings.factors) - set(FACTORS))
    if bad:
        raise ConfigError(f"unknown robustness factor(s) {', '.join(bad)}; choose from {', '.join(FACTORS)}")
    say = progress or (lambda msg: None)
    dev = dev_sample(dev_path, settings.n_dev, seed)
    dev_labels = dev.labels.astype(str) if dev is not None else None
    missing = "" if dev is not None else "no dev maps (wm811k_dev.npz missing): clean wafers only"
    base_clean = clean_wafers(settings.n_clean, settings.base_size, settings.base_size, np.random.default_rng([seed, 1]))
    base = {m.name: (m.outputs(base_clean), m.outputs(list(dev.maps)) if dev is not None else None) for m in models}
    nan = float("nan")
    rows = [{"model": m.name, "kind": m.kind, "factor": "reference", "level": "untransformed",
             "clean_false_alarm": float(m.alarms(base[m.name][0]).mean()), "clean_agreement": nan,
             "dev_metric": _dev_metric(m, dev_labels, base[m.name][1]) if dev is not None else nan,
             "dev_agreement": nan, "map_identical": nan, "map_identical_sym": nan, "n_clean": len(base_clean),
             "n_dev": len(dev) if dev is not None else 0,
             "note": "; ".join(x for x in (f"clean wafers {settings.base_size} across", missing) if x)} for m in models]
    for fi, factor in enumerate(settings.factors):
        for li, level in enumerate(_levels(settings, factor)):
            say(f"{factor} = {level}")
            lv = _level_inputs(factor, level, settings, base_clean, dev, seed, (fi, li))
            note = "; ".join(x for x in (lv.note, missing) if x)
            for model in models:
                row = {"model": model.name, "kind": model.kind, "factor": factor, "level": str(level),
                       "clean_false_alarm": nan, "clean_agreement": nan, "dev_metric": nan, "dev_agreement": nan,
                       "map_identical": lv.ident, "map_identical_sym": lv.ident_sym,
                       "n_clean": 0 if lv.clean is None else len(lv.clean),
                       "n_dev": 0 if lv.dev is None else len(lv.dev), "note": note}
                if lv.clean is not None:
                    out = model.outputs(lv.clean)
                    row["clean_false_alarm"] = float(model.alarms(out).mean())
                    if lv.clean_ref is base_clean:
                        row["clean_agreement"] = float(np.mean(_same_output(model, base[model.name][0], out)))
                    elif lv.clean_ref is not None:
                        row["clean_agreement"] = float(np.mean(_same_output(model, model.outputs(lv.clean_ref), out)))
                if lv.dev is not None:
                    out = model.outputs(lv.dev)
                    row["dev_metric"] = _dev_metric(model, dev_labels, out)
                    row["dev_agreement"] = float(np.mean(_same_output(model, base[model.name][1], out)))
                rows.append(row)
    return pd.DataFrame(rows)


def _same_output(model: Model, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if model.kind == "classifier":
        return a.astype(str) == b.astype(str)
    return model.alarms(a) == model.alarms(b)


# ---- reports -------------------------------------------------------------------------------------
def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: the worst clean false-alarm over the size and format levels.

    The mean dev agreement over the orientation levels (the issue's acceptance figures).
    """
    out = []
    for name, g in table.groupby("model", sort=False):
        sz = g[g.factor.isin(["size", "format"])]
        ori = g[g.factor == "orientation"]
        out.append({"model": name, "kind": g.kind.iloc[0],
                    "worst_clean_false_alarm_size_format": float(sz.clean_false_alarm.max()) if len(sz) else float("nan"),
                    "orientation_dev_agreement_min": float(ori.dev_agreement.min()) if len(ori) else float("nan")})
    return pd.DataFrame(out)


def to_markdown(table: pd.DataFrame) -> str:
    """Return the robustness table as Markdown."""
    cols = ["model", "factor", "level", "clean_false_alarm", "clean_agreement", "dev_metric", "dev_agreement",
            "map_identical", "map_identical_sym", "note"]
    head = "| " + " | ".join(cols) + " |\n| " + " | ".join("---" for _ in cols) + " |\n"

    def cell(v):
        if isinstance(v, float):
            return "" if np.isnan(v) else f"{v:.3f}"
        return str(v)

    return head + "".join("| " + " | ".join(cell(r[c]) for c in cols) + " |\n" for _, r in table.iterrows())


def plot(table: pd.DataFrame, out: str | Path) -> None:
    """One column per factor: clean false-alarm rate (top) and dev macro-F1 / AUROC (bottom) per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from waferscope.utils import atomic_path

    factors = [f for f in FACTORS if f in set(table.factor)]
    fig, axes = plt.subplots(2, len(factors), figsize=(3.0 * len(factors), 6.0), squeeze=False)
    for j, factor in enumerate(factors):
        g = table[table.factor == factor]
        levels = list(dict.fromkeys(g.level))
        for name, gm in g.groupby("model", sort=False):
            y0 = [gm[gm.level == lv].clean_false_alarm.mean() for lv in levels]
            y1 = [gm[gm.level == lv].dev_metric.mean() for lv in levels]
            axes[0, j].plot(range(len(levels)), y0, marker="o", label=name)
            axes[1, j].plot(range(len(levels)), y1, marker="o", label=name)
        for i in range(2):
            axes[i, j].set_xticks(range(len(levels)))
            axes[i, j].set_xticklabels(levels, rotation=45, fontsize=7)
            axes[i, j].set_ylim(-0.02, 1.02)
        axes[0, j].set_title(factor)
    axes[0, 0].set_ylabel("clean-wafer false-alarm rate")
    axes[1, 0].set_ylabel("dev macro-F1 (detector: AUROC)")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    with atomic_path(Path(out)) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def write_reports(table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """robustness.csv, robustness.md (the table and the summary) and robustness.png in ``out_dir``."""
    from waferscope.utils import atomic_path

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "robustness.csv", "md": out_dir / "robustness.md", "png": out_dir / "robustness.png"}
    with atomic_path(paths["csv"]) as tmp:
        table.to_csv(tmp, index=False)
    text = "## Summary\n\n" + to_markdown_summary(summary(table)) + "\n## Per factor and level\n\n" + to_markdown(table)
    with atomic_path(paths["md"]) as tmp:
        Path(tmp).write_text(text)
    plot(table, paths["png"])
    for p in paths.values():  # the temp files behind atomic_path are private (0600); reports are for reading
        p.chmod(0o644)
    return paths


def to_markdown_summary(s: pd.DataFrame) -> str:
    """Return the robustness summary (worst cases per model) as Markdown."""
    head = ("| model | kind | worst clean false-alarm (size, format) | min dev agreement under rotation/flip |\n"
            "| --- | --- | ---: | ---: |\n")
    return head + "".join(f"| {r.model} | {r.kind} | {r.worst_clean_false_alarm_size_format:.3f} | "
                          f"{r.orientation_dev_agreement_min:.3f} |\n" for r in s.itertuples())
