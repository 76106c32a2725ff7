"""One entry point for every data source: ``load(spec)`` detects the format and returns a
:class:`~waferscope.data.dataset.WaferDataset`.

A spec is ``synthetic:n=…,seed=…[,mixed=1]`` or a path:

- ``*.parquet`` — waferscope's canonical format (:mod:`waferscope.data.io_parquet`)
- ``*.npz`` — the flat real-map archive (``maps_flat``/``shapes``/``labels``) or MixedWM38
  (``arr_0`` maps, ``arr_1`` one-hot multi-labels)
- ``*.pkl`` / ``*.pickle`` — the Kaggle/MIR WM-811K ``LSWMD.pkl`` DataFrame (unpickling runs code:
  see :mod:`waferscope.data.loaders.lswmd`; import it to Parquet once)
- fab wafer-map files (see :mod:`waferscope.data.loaders.fabcommon` for the bin mapping and
  grid orientation they share): STDF V4 probe-test files (a FAR record first), SEMI E142 XML
  (root ``MapData``), SEMI G85 XML (root ``Maps``), KLARF inspection files (``FileVersion`` first),
  and a CSV die list (header with ``lot,wafer,x,y,bin``)
- a folder — MVTec-AD layout (``train/good``, ``test/<defect>``, ``ground_truth/<defect>``) or one
  sub-folder per class holding ``*.npy`` maps or rendered ``*.png`` maps

The format is detected from the file's first bytes, not only its suffix.

``limits`` (:class:`~waferscope.data.limits.LoadLimits`) bounds the maps, sides and dies one load may
allocate; each loader checks them from the file's headers before allocating, and ``load`` checks the
result once more (``None`` = :data:`~waferscope.data.limits.DEFAULT_LIMITS`).

``pass_bins`` says which bins of a fab file pass (``"1,2"``; ``"1,2/3-9"`` for a strict mapping
where unlisted bins are errors); ``None`` keeps each format's default. Other sources ignore it.
"""

from __future__ import annotations

from pathlib import Path

from waferscope.data.dataset import WaferDataset
from waferscope.data.limits import LoadLimits, resolve_limits
from waferscope.errors import DataError

PARQUET_MAGIC = b"PAR1"
ZIP_MAGIC = b"PK\x03\x04"
NPY_MAGIC = b"\x93NUMPY"
FAB_FORMATS = ("stdf", "e142", "g85", "klarf", "dielist")
XML_ROOTS = {"MapData": "e142", "Maps": "g85"}


def parse_synthetic_spec(spec: str) -> dict:
    body = spec.split(":", 1)[1]
    out: dict = {}
    for part in filter(None, body.split(",")):
        if "=" not in part:
            raise DataError(f"bad synthetic spec {spec!r}: expected key=value pairs like n=1000,seed=0")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            out[k.strip()] = v.strip()
    return out


def _sniff_text(path: Path) -> str | None:
    """'e142', 'g85', 'klarf' or 'dielist' from a text file's start, else None."""
    import re

    try:
        with open(path, "rb") as f:
            text = f.read(4096).decode("utf-8-sig", errors="replace")
    except OSError:
        return None
    # skip the XML declaration, comments and a DOCTYPE (with its internal subset) to the root element
    body = re.sub(r"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(\[.*?\])?\s*>", "", text, flags=re.S).lstrip()
    root = re.match(r"<(?:[\w.-]+:)?([\w.-]+)", body)
    if root:
        return XML_ROOTS.get(root.group(1))
    from waferscope.data.loaders.dielist import looks_like_dielist
    from waferscope.data.loaders.klarf import looks_like_klarf

    if looks_like_klarf(text):
        return "klarf"
    first_line = text.splitlines()[0] if text.strip() else ""
    # any .csv goes to the die-list reader too, so a header lacking a column is named as such
    return "dielist" if looks_like_dielist(first_line) or path.suffix.lower() == ".csv" else None


def sniff_format(path: Path) -> str:
    """'parquet', 'npz', 'npy', 'pickle', 'mvtec', 'folders', 'stdf', 'e142', 'g85', 'klarf',
    'dielist' — or a DataError saying why not."""
    if path.is_dir():
        from waferscope.data.loaders.mvtec import looks_like_mvtec

        return "mvtec" if looks_like_mvtec(path) else "folders"
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise DataError(f"cannot open ({exc.strerror or exc})", path) from None
    if not head:
        raise DataError("the file is empty", path)
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if head.startswith(NPY_MAGIC):
        return "npy"
    from waferscope.data.loaders.stdf import looks_like_stdf

    if looks_like_stdf(head):
        return "stdf"
    suffix = path.suffix.lower()
    if head[:1] == b"\x80" or suffix in (".pkl", ".pickle"):  # protocol ≥ 2 starts with PROTO (0x80)
        return "pickle"
    if suffix == ".parquet":
        raise DataError("not a Parquet file (no PAR1 header): truncated or mislabelled", path)
    if suffix == ".npz":
        raise DataError("not an .npz archive (no zip header): truncated or mislabelled", path)
    text_format = _sniff_text(path)
    if text_format:
        return text_format
    if suffix in (".stdf", ".std"):
        raise DataError("not an STDF file (it does not start with a FAR record): truncated or mislabelled", path)
    if suffix == ".xml":
        raise DataError("unrecognised XML map: the root element is neither MapData (SEMI E142) nor "
                        "Maps (SEMI G85)", path)
    if suffix in (".klarf", ".klf", ".000", ".001"):
        raise DataError("not a KLARF file: it does not start with a FileVersion line", path)
    raise DataError("unrecognised data format (expected .parquet, .npz, .pkl, an STDF/E142/G85/KLARF "
                    "map file, a lot,wafer,x,y,bin CSV, or a folder of class sub-folders / an "
                    "MVTec-AD folder)", path)


def load(spec: str | Path, pass_bins=None, limits: LoadLimits | None = None, retest: str | None = None) -> WaferDataset:
    """The data set at ``spec``; ``pass_bins`` (see the module docstring) applies to fab formats,
    ``limits`` to everything read from a file; ``retest`` ("last" default, "first", "worst"): which
    result of an STDF die probed twice without a retest flag is kept (other sources ignore it)."""
    limits = resolve_limits(limits)
    dataset = _load(spec, pass_bins, limits, retest)
    # the loaders refuse oversize input before allocating; this catches any that cannot know sizes early
    if dataset.kind == "wafer":  # images (a folder of photos) are bounded by their own decoder
        budget = limits.budget(None if str(spec).startswith("synthetic:") else str(spec))
        for i, m in enumerate(dataset.maps):
            budget.add(m.shape, f"map {i}")
    return dataset


def _load(spec: str | Path, pass_bins, limits: LoadLimits, retest: str | None = None) -> WaferDataset:
    from waferscope.data.loaders.fabcommon import parse_bin_mapping

    mapping = parse_bin_mapping(pass_bins)
    spec_s = str(spec)
    if spec_s.startswith("synthetic:"):
        from waferscope.data.synthetic import generate

        return generate(**parse_synthetic_spec(spec_s))
    path = Path(spec_s).expanduser()
    if not path.exists():
        raise DataError("no such file or folder", path)
    fmt = sniff_format(path)
    if fmt in FAB_FORMATS:
        return _load_fab(fmt, path, mapping, limits, retest)
    if fmt == "parquet":
        from waferscope.data.io_parquet import read_parquet

        return read_parquet(path, limits=limits)
    if fmt == "npz":
        return _load_npz(path, limits)
    if fmt == "npy":
        from waferscope.data.loaders.folders import load_npy_stack

        return load_npy_stack(path, limits=limits)
    if fmt == "pickle":
        from waferscope.data.loaders.lswmd import load_lswmd

        return load_lswmd(path)
    if fmt == "mvtec":
        from waferscope.data.loaders.mvtec import load_mvtec

        return load_mvtec(path)
    from waferscope.data.loaders.folders import load_class_folders

    return load_class_folders(path)


def _load_fab(fmt: str, path: Path, mapping, limits: LoadLimits, retest: str | None = None) -> WaferDataset:
    if fmt == "stdf":
        from waferscope.data.loaders.stdf import load_stdf

        return load_stdf(path, mapping, limits=limits, retest=retest)
    if fmt == "e142":
        from waferscope.data.loaders.e142 import load_e142

        return load_e142(path, mapping, limits=limits)
    if fmt == "g85":
        from waferscope.data.loaders.semi_g85 import load_g85

        return load_g85(path, mapping, limits=limits)
    if fmt == "klarf":
        from waferscope.data.loaders.klarf import load_klarf

        return load_klarf(path, mapping, limits=limits)
    from waferscope.data.loaders.dielist import load_dielist

    return load_dielist(path, mapping, limits=limits)


def _load_npz(path: Path, limits: LoadLimits) -> WaferDataset:
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            keys = [n[:-4] if n.endswith(".npy") else n for n in z.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read as .npz ({exc})", path) from None
    from waferscope.data.loaders.devnpz import is_flat_npz, load_flat_npz

    if is_flat_npz(keys):
        return load_flat_npz(path, limits=limits)
    from waferscope.data.loaders.mixedwm38 import is_mixedwm38, load_mixedwm38

    if is_mixedwm38(keys):
        return load_mixedwm38(path, limits=limits)
    raise DataError(f"unrecognised .npz layout (arrays: {', '.join(sorted(keys)) or 'none'}); expected "
                    "maps_flat/shapes/labels (flat real maps) or arr_0/arr_1 (MixedWM38)", path)
