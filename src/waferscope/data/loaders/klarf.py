"""KLARF (KLA Results File) 1.1/1.2 defect-inspection files, read with ``klarf-reader``.

Read: ``LotID`` → ``lot``; per wafer ``WaferID`` → ``wafer_id`` and its ``DefectList``, whose
``XINDEX``/``YINDEX`` give the die each defect lies on; ``SampleTestPlan`` (the inspected dies);
``DiePitch``, ``SampleSize`` and ``SampleCenterLocation`` when there is no test plan.

Die states: a die with a failing defect → fail; an inspected die without one → pass; any other
position → no die. The inspected dies are the ``SampleTestPlan`` (klarf-reader keeps the file's
first plan, used for every wafer of the file; a defect on a die outside it is an error). Without a
plan, the inspected dies are those whose centre lies on the wafer: a disc of diameter
``SampleSize`` (mm) around ``SampleCenterLocation``, dies of ``DiePitch`` (µm) numbered from
index 0 at the die origin, the same die-centre convention klarf-reader uses for defect positions.

Bins: KLARF defects carry a class, not a test bin, so ``pass_bins`` applies to ``CLASSNUMBER``:
defects of a pass class (e.g. nuisance) do not fail their die. Default: every defect fails its die.

Grid and orientation: :mod:`waferscope.data.loaders.fabcommon` (row 0 = smallest YINDEX).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterator

from waferscope.data.limits import LoadLimits
from waferscope.data.dataset import WaferDataset
from waferscope.data.loaders.fabcommon import FAIL, MAX_GRID_SPAN, PASS, BinMapping, dies_to_grid, fab_meta, map_bin
from waferscope.errors import DataError

# klarf-reader keeps header fields in local variables, so a file lacking one fails with
# "cannot access local variable 'die_pitch'"; these turn that back into the KLARF keyword.
_KEYWORD_OF_VARIABLE = {
    "file_version": "FileVersion", "file_timestamp": "FileTimestamp", "inspection_station_id": "InspectionStationID",
    "result_timestamp": "ResultTimestamp", "lot_id": "LotID", "sample_size": "SampleSize", "step_id": "StepID",
    "sample_orientation_mark_type": "SampleOrientationMarkType",
    "orientation_mark_location": "OrientationMarkLocation", "die_pitch": "DiePitch", "die_origin": "DieOrigin",
    "sample_center_location": "SampleCenterLocation", "wafer_id": "WaferID", "slot": "Slot",
    "inspection_test": "InspectionTest", "defect_columns": "DefectRecordSpec", "defects": "DefectRecordSpec",
}


def looks_like_klarf(text: str) -> bool:
    """KLARF 1.x opens with ``FileVersion``; 1.8 opens with ``Record FileRecord``."""
    start = text.lstrip().lower()
    return start.startswith("fileversion") or start.startswith("record filerecord")


def _numbered_lines(path: Path, position: list[int]) -> Iterator[str]:
    """The file's lines, keeping the current line number in ``position[0]`` for error messages."""
    with open(path, encoding="utf-8", errors="strict") as fh:
        for number, line in enumerate(fh, 1):
            position[0] = number
            yield line


def _read(path: Path):
    from klarf_reader.readers.klarf_file_reader import convert_raw_to_klarf_content

    position = [0]
    try:
        return convert_raw_to_klarf_content(raw_content=_numbered_lines(path, position), parse_summary=False)
    except UnicodeDecodeError as exc:
        raise DataError(f"not a UTF-8 text file ({exc.reason} at byte {exc.start})", path) from None
    except (UnboundLocalError, NameError) as exc:
        variable = getattr(exc, "name", None) or (re.findall(r"'(\w+)'", str(exc)) or ["?"])[0]
        keyword = _KEYWORD_OF_VARIABLE.get(variable, variable)
        raise DataError(f"line {position[0]}: the file lacks its {keyword} line (needed at this point)", path) from None
    except (ValueError, TypeError, IndexError, AttributeError) as exc:
        if "version not valid" in str(exc):
            raise DataError(f"line 1: only KLARF 1.1/1.2 files can be read ({exc})", path) from None
        detail = re.sub(r"^invalid literal for (int|float)\(\)( with base 10)?: ", "not a number: ", str(exc))
        if isinstance(exc, (TypeError, IndexError)):
            detail = f"a record is missing fields ({detail})"
        raise DataError(f"line {position[0]}: {detail}", path) from None
    except Exception as exc:  # klarf-reader raises bare Exception for a file it cannot parse
        if "Unable to read this format" in str(exc):  # its check that line 1 is FileVersion
            raise DataError("line 1: only KLARF 1.1/1.2 files can be read (they start with FileVersion; "
                            "KLARF 1.8 'Record FileRecord' files are not supported)", path) from None
        raise DataError(f"line {position[0]}: {exc}", path) from None


def _dies_on_wafer(content, path: Path) -> list[tuple[int, int]]:
    """Die indices whose centre lies on the wafer disc (used when there is no SampleTestPlan)."""
    pitch_x, pitch_y = content.die_pitch.x, content.die_pitch.y
    if not (pitch_x > 0 and pitch_y > 0):
        raise DataError(f"DiePitch must be positive, got {pitch_x} {pitch_y}", path)
    radius = float(content.sample_size) * 1000 / 2  # SampleSize is the diameter in mm; coordinates are µm
    if radius <= 0:
        raise DataError(f"SampleSize must be positive to place dies without a SampleTestPlan, got "
                        f"{content.sample_size}", path)
    if 2 * radius / min(pitch_x, pitch_y) > MAX_GRID_SPAN:
        raise DataError(f"a {2 * radius / 1000:g} mm wafer at DiePitch {pitch_x:g} x {pitch_y:g} µm is more "
                        f"than {MAX_GRID_SPAN} dies across (units not µm?)", path)
    centre = content.wafers[0].sample_center_location
    dies = []
    for i in range(math.floor((centre.x - radius) / pitch_x) - 1, math.ceil((centre.x + radius) / pitch_x) + 1):
        for j in range(math.floor((centre.y - radius) / pitch_y) - 1, math.ceil((centre.y + radius) / pitch_y) + 1):
            dx = i * pitch_x + pitch_x / 2 - centre.x
            dy = j * pitch_y + pitch_y / 2 - centre.y
            if dx * dx + dy * dy <= radius * radius:
                dies.append((i, j))
    return dies


def load_klarf(path: str | Path, pass_bins: BinMapping | None = None, limits: LoadLimits | None = None) -> WaferDataset:
    path = Path(path)
    content = _read(path)
    if not content.wafers:
        raise DataError("no wafers (no DefectList after a WaferID)", path)
    if content.has_sample_test_plan and content.sample_plan_test.x:
        inspected = list(zip(content.sample_plan_test.x, content.sample_plan_test.y))
        from_plan = True
        if len(set(inspected)) != len(inspected):
            twice = next(d for d in inspected if inspected.count(d) > 1)
            raise DataError(f"SampleTestPlan: die ({twice[0]}, {twice[1]}) is listed twice", path)
    else:
        inspected = _dies_on_wafer(content, path)
        from_plan = False
    maps = []
    for wafer in content.wafers:
        states = {die: PASS for die in inspected}
        for defect in wafer.defects:
            die = (defect.x_index, defect.y_index)
            where = f"wafer {wafer.id!r}: defect {defect.id}"
            if from_plan and die not in states:
                raise DataError(f"{where}: its die ({die[0]}, {die[1]}) is outside the SampleTestPlan", path)
            if pass_bins is None or map_bin(pass_bins, defect.class_number, path, f"{where} (CLASSNUMBER)") == FAIL:
                states[die] = FAIL
        dies = [(x, y, state, f"die ({x}, {y})") for (x, y), state in states.items()]
        maps.append(dies_to_grid(dies, path, wafer.id))
    n = len(content.wafers)
    meta = fab_meta(path, [content.lot_id] * n, [w.id for w in content.wafers], "klarf",
                    slot=[w.slot for w in content.wafers], step_id=content.step_id)
    return WaferDataset.from_maps(maps, meta=meta, source=path.name, name=path.stem, where=str(path))
