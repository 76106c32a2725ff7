"""One entry point for every data source.

``load(spec)`` detects the format and returns a
:class:`~waferscope.data.dataset.WaferDataset`.

A spec is ``synthetic:n=…,seed=…[,mixed=1]`` or a path:

- ``*.parquet`` — waferscope's canonical format (:mod:`waferscope.data.io_parquet`)
- ``*.npz`` — the flat real-map archive (``maps_flat``/``shapes``/``labels``) or MixedWM38
  (``arr_0`` maps, ``arr_1`` one-hot multi-labels)
- ``*.pkl`` / ``*.pickle`` — the Kaggle/MIR WM-811K ``LSWMD.pkl`` DataFrame (unpickling runs code:
  see :mod:`waferscope.data.loaders.lswmd`; import it to Parquet once)
- fab wafer-map files (see :mod:`waferscope.data.loaders.fabcommon` for the bin mapping and
  grid orientation they share): STDF V4 probe-test files (a FAR record first), SEMI E142 XML
  (root ``MapData``), SEMI G85 XML (root ``Map`` or ``Maps``), KLARF inspection files
  (``FileVersion`` first), and a CSV die list (a header naming x, y and bin or pass/fail columns,
  see :mod:`waferscope.data.loaders.dielist`)
- a folder — MVTec-AD layout (``train/good``, ``test/<defect>``, ``ground_truth/<defect>``) or one
  sub-folder per class holding ``*.npy`` maps or rendered ``*.png`` maps

The format is detected from the file's first bytes, not only its suffix, and through compression:
any of these files may be gzip, bzip2 or xz compressed, or the one member of a zip archive
(:mod:`waferscope.data.compressed`, detected by magic bytes; the inflated size is bounded by
``limits.max_decompressed_bytes``). Text and XML formats are read from the decompressing stream;
Parquet, npz, npy and pickle files, which need random access, are inflated into a temporary file
first (bounded the same way, removed afterwards).

``limits`` (:class:`~waferscope.data.limits.LoadLimits`) bounds the maps, sides and dies one load may
allocate; each loader checks them from the file's headers before allocating, and ``load`` checks the
result once more (``None`` = :data:`~waferscope.data.limits.DEFAULT_LIMITS`).

``pass_bins`` says which bins of a fab file pass (``"1,2"``; ``"1,2/3-9"`` for a strict mapping
where unlisted bins are errors); ``None`` keeps each format's default. Other sources ignore it.

``columns`` names the columns of a CSV die list (``{"x": "DIE_X", "bin": "HBIN"}`` or
``"x=DIE_X,bin=HBIN"``; see :mod:`waferscope.data.loaders.dielist`); other sources ignore it.
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
XML_ROOTS = {"MapData": "e142", "Maps": "g85", "Map": "g85"}
BINARY_FORMATS = ("parquet", "npz", "npy", "pickle")  # need a seekable file: inflated to a temp file


def parse_synthetic_spec(spec: str) -> dict:
    """Parse a ``synthetic:n=...,seed=...`` spec into :func:`~waferscope.data.synthetic.generate`'s arguments."""
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


def _sniff_text(head: bytes, suffix: str) -> str | None:
    """'e142', 'g85', 'klarf' or 'dielist' from a text file's first bytes, else None."""
    import re

    text = head.decode("utf-8-sig", errors="replace")
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
    return "dielist" if looks_like_dielist(first_line) or suffix == ".csv" else None


def sniff_format(path: Path, limits: LoadLimits | None = None) -> str:
    """'parquet', 'npz', 'npy', 'pickle', 'mvtec', 'folders', 'stdf', 'e142', 'g85', 'klarf', 'dielist'.

    Or a DataError saying why not. Compressed files are sniffed by their content.
    """
    from waferscope.data.compressed import inner_suffix, peek

    if path.is_dir():
        from waferscope.data.loaders.mvtec import looks_like_mvtec

        return "mvtec" if looks_like_mvtec(path) else "folders"
    try:
        text_head = peek(path, 4096, limits)
    except OSError as exc:
        raise DataError(f"cannot open ({exc.strerror or exc})", path) from None
    head = text_head[:8]
    if not head:
        raise DataError("the file is empty" + (" (once decompressed)" if path.stat().st_size else ""), path)
    if head.startswith(PARQUET_MAGIC):
        return "parquet"
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if head.startswith(NPY_MAGIC):
        return "npy"
    from waferscope.data.loaders.stdf import looks_like_stdf

    if looks_like_stdf(head):
        return "stdf"
    suffix = inner_suffix(path)
    if head[:1] == b"\x80" or suffix in (".pkl", ".pickle"):  # protocol ≥ 2 starts with PROTO (0x80)
        return "pickle"
    if suffix == ".parquet":
        raise DataError("not a Parquet file (no PAR1 header): truncated or mislabelled", path)
    if suffix == ".npz":
        raise DataError("not an .npz archive (no zip header): truncated or mislabelled", path)
    text_format = _sniff_text(text_head, suffix)
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
                    "map file, an x,y,bin CSV die list, any of these gzip/bzip2/xz/zip compressed, or a folder of class sub-folders / an "
                    "MVTec-AD folder)", path)


def load(spec: str | Path, pass_bins=None, limits: LoadLimits | None = None, retest: str | None = None,
         columns=None) -> WaferDataset:
    """Return the data set at ``spec``; ``pass_bins`` (see the module docstring) applies to fab formats.

    ``columns`` to CSV die lists, ``limits`` to everything read from a file; ``retest`` ("last"
    default, "first", "worst"): which result of an STDF die probed twice without a retest flag is
    kept (other sources ignore it).
    """
    limits = resolve_limits(limits)
    dataset = _load(spec, pass_bins, limits, retest, columns)
    # the loaders refuse oversize input before allocating; this catches any that cannot know sizes early
    if dataset.kind == "wafer":  # images (a folder of photos) are bounded by their own decoder
        budget = limits.budget(None if str(spec).startswith("synthetic:") else str(spec))
        for i, m in enumerate(dataset.maps):
            budget.add(m.shape, f"map {i}")
    return dataset


def _load(spec: str | Path, pass_bins, limits: LoadLimits, retest: str | None = None, columns=None) -> WaferDataset:
    from waferscope.data.loaders.dielist import parse_columns
    from waferscope.data.loaders.fabcommon import parse_bin_mapping

    mapping = parse_bin_mapping(pass_bins)
    columns = parse_columns(columns)
    spec_s = str(spec)
    if spec_s.startswith("synthetic:"):
        from waferscope.data.synthetic import generate

        return generate(**parse_synthetic_spec(spec_s))
    path = Path(spec_s).expanduser()
    if not path.exists():
        raise DataError("no such file or folder", path)
    try:
        fmt = sniff_format(path, limits)
    except DataError:
        if not columns or path.is_dir():
            raise
        fmt = "dielist"  # the caller named a die list's columns: read it as one whatever its name
    if fmt in FAB_FORMATS:
        return _load_fab(fmt, path, mapping, limits, retest, columns)
    if fmt in BINARY_FORMATS and not path.is_dir():
        from waferscope.data.compressed import compression_of

        if compression_of(path) is not None:
            return _load_inflated(fmt, path, limits)
    return _load_binary(fmt, path, limits)


def _load_inflated(fmt: str, path: Path, limits: LoadLimits) -> WaferDataset:
    """Return a compressed Parquet/npz/npy/pickle: inflate (bounded) into a temporary file and read that."""
    import os
    import shutil
    import tempfile

    from waferscope.data.compressed import inner_suffix, open_binary

    fd, tmp = tempfile.mkstemp(suffix=inner_suffix(path) or ".bin", prefix=".waferscope-inflate-")
    try:
        with os.fdopen(fd, "wb") as out, open_binary(path, limits) as src:
            shutil.copyfileobj(src, out, 1 << 20)
        try:
            dataset = _load_binary(fmt, Path(tmp), limits)
        except DataError as exc:  # name the file the user gave, not the temporary one
            raise DataError(exc.problem.replace(tmp, str(path)), f"{path} (decompressed)") from None
        tmp_name = Path(tmp).name
        if "source" in dataset.meta:
            dataset.meta["source"] = dataset.meta["source"].replace(tmp_name, path.name)
        if dataset.name == Path(tmp).stem:
            dataset.name = path.name.split(".")[0] or dataset.name
        return dataset
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load_binary(fmt: str, path: Path, limits: LoadLimits) -> WaferDataset:
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


def _load_fab(fmt: str, path: Path, mapping, limits: LoadLimits, retest: str | None = None,
              columns: dict | None = None) -> WaferDataset:
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

    return load_dielist(path, mapping, limits=limits, columns=columns)


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
