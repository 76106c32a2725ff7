"""The flat real-map archive in ``shared/data/wm811k/wm811k_dev.npz`` (maps stored back to back)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from numpy.lib import format as npformat

from waferscope.data.limits import LoadLimits, read_npy_header, resolve_limits
from waferscope.data.classes import canonical_label
from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError

REQUIRED = ("maps_flat", "shapes", "labels")


def is_flat_npz(keys: list[str]) -> bool:
    """Return whether an npz's members are those of the flat dev-set layout."""
    return all(k in keys for k in REQUIRED)


def load_flat_npz(path: str | Path, limits: LoadLimits | None = None) -> WaferDataset:
    """Sizes come first: the npy headers of ``shapes``/``maps_flat``/``labels`` give the map count and the total.

    ``shapes`` (N×2, small) each map's extent; all are checked against ``limits`` before
    ``maps_flat`` is inflated, and inflation itself is capped (see :func:`read_member`).
    """
    path = Path(path)
    limits = resolve_limits(limits)
    try:
        with zipfile.ZipFile(path) as z:
            headers = npz_headers(z, path, limits)
            missing = [k for k in REQUIRED if k not in headers]
            if missing:
                raise DataError(f"not a flat wafer-map archive: missing {', '.join(missing)}", path)
            (s_shape, _), (f_shape, f_dtype), (l_shape, _) = (headers[k] for k in ("shapes", "maps_flat", "labels"))
            if len(s_shape) != 2 or s_shape[1] != 2 or len(l_shape) != 1 or s_shape[0] != l_shape[0]:
                raise DataError(f"'shapes' must be N×2 with one row per label, got {s_shape} for "
                                f"{l_shape[0] if l_shape else '?'} labels", path)
            if len(f_shape) != 1 or f_dtype.kind not in "biuf":
                raise DataError(f"'maps_flat' must be a 1-D numeric array, got {f_shape} of {f_dtype}", path)
            limits.check_count(s_shape[0], path)
            others = [k for k in ("lot_name", "wafer_index", "die_size", "train_test") if k in headers]
            if limits.max_decompressed_bytes is not None:
                total = sum(array_nbytes(*headers[k]) for k in ("shapes", "maps_flat", "labels", *others))
                if total > limits.max_decompressed_bytes:
                    raise DataError(f"the arrays hold {total:,} bytes once inflated, more than "
                                    f"{limits.max_decompressed_bytes:,} (max_decompressed_bytes)", path)
            shapes = np.asarray(read_member(z, "shapes", headers["shapes"], path, limits), dtype=np.int64)
            if (shapes <= 0).any():
                raise DataError(f"map {int(np.flatnonzero((shapes <= 0).any(1))[0])}: empty shape in 'shapes'", path)
            budget = limits.budget(path)
            for i, shp in enumerate(shapes):
                budget.add(shp, f"map {i}")
            if int(shapes.prod(1).sum()) != f_shape[0]:
                raise DataError(f"'maps_flat' holds {f_shape[0]} values but 'shapes' needs "
                                f"{int(shapes.prod(1).sum())}", path)
            labels = read_member(z, "labels", headers["labels"], path, limits)
            flat = read_member(z, "maps_flat", headers["maps_flat"], path, limits)
            extra = {k: read_member(z, k, headers[k], path, limits) for k in others}
    except DataError:
        raise
    except Exception as exc:  # zipfile/ValueError/OSError for truncated or non-npz files
        raise DataError(f"cannot read as .npz ({type(exc).__name__}: {exc})", path) from None
    off = np.r_[0, np.cumsum(shapes.prod(1))]
    maps = [flat[off[i]:off[i + 1]].reshape(shapes[i]) for i in range(len(shapes))]
    n = len(maps)
    meta = {
        "id": [f"{path.stem}-{i}" for i in range(n)],
        "lot": extra.get("lot_name", np.full(n, "")).astype(str),
        "wafer_index": extra.get("wafer_index", np.full(n, np.nan)).astype(float),
        "die_size": extra.get("die_size", np.full(n, np.nan)).astype(float),
        # WM-811K's 'Training'/'Test' → 'train'/'test', as every other loader writes the split
        "split": [{"training": "train"}.get(s.lower(), s.lower()) for s in extra.get("train_test", np.full(n, "")).astype(str)],
        "source": str(path.name),
    }
    return WaferDataset.from_maps(maps, [canonical_label(x) for x in labels.astype(str)], meta=meta,
                                  source=path.name, name=path.stem, where=str(path))


# ---- bounded member reading (shared with mixedwm38) ------------------------------------------------
def _member_name(z: zipfile.ZipFile, key: str) -> str | None:
    names = z.namelist()
    return key + ".npy" if key + ".npy" in names else key if key in names else None


def npz_headers(z: zipfile.ZipFile, path: Path, limits: LoadLimits) -> dict[str, tuple[tuple, np.dtype]]:
    """``{key: (shape, dtype)}`` of every member, read from the npy headers alone (a few hundred bytes each).

    So sizes are known before any array is inflated. Object arrays are refused here: reading them
    would unpickle. A member whose zip entry states more than ``max_decompressed_bytes`` is refused
    too (the cap is enforced again while inflating, since a zip header can lie).
    """
    out = {}
    cap = limits.max_decompressed_bytes
    for info in z.infolist():
        if info.is_dir():
            continue
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        if cap is not None and info.file_size > cap:
            raise DataError(f"member {info.filename!r} states {info.file_size:,} bytes uncompressed, more than "
                            f"{cap:,} (max_decompressed_bytes): refused as a possible decompression bomb", path)
        with z.open(info) as f:
            try:
                header = read_npy_header(f)
                if header is None:
                    raise ValueError("unsupported .npy format version")
                shape, dtype = header
            except (ValueError, EOFError, zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"member {info.filename!r}: not a readable .npy header ({exc})", path) from None
        if dtype.hasobject:
            raise DataError(f"member {info.filename!r} holds Python objects (dtype {dtype}); only plain "
                            "numeric/string arrays are read (objects would be unpickled)", path)
        out[key] = (tuple(int(s) for s in shape), dtype)
    return out


def array_nbytes(shape: tuple, dtype: np.dtype) -> int:
    """Return the bytes an array of ``shape`` and ``dtype`` takes."""
    n = 1
    for s in shape:
        n *= int(s)
    return n * dtype.itemsize


def read_member(z: zipfile.ZipFile, key: str, header: tuple[tuple, np.dtype], path: Path,
                limits: LoadLimits) -> np.ndarray:
    """Return one member's array, inflating at most its header's stated size (+ the header itself).

    Never more than ``max_decompressed_bytes`` either; numpy allocates the stated shape, which the
    caller bounded.
    """
    from waferscope.data.compressed import _Bounded

    nbytes = array_nbytes(*header)
    cap = limits.max_decompressed_bytes
    if cap is not None and nbytes > cap:
        raise DataError(f"{key!r} holds {nbytes:,} bytes once inflated ({header[0]} of {header[1]}), more than "
                        f"{cap:,} (max_decompressed_bytes)", path)
    bound = nbytes + 65536 if cap is None else min(cap, nbytes + 65536)  # the npy header is < 64 kB
    name = _member_name(z, key)
    try:
        with io.BufferedReader(_Bounded(z.open(name), bound, path), 1 << 16) as f:
            return npformat.read_array(f, allow_pickle=False)
    except DataError:
        raise
    except Exception as exc:  # truncated member, CRC error, shape/data mismatch
        raise DataError(f"cannot read {key!r} ({type(exc).__name__}: {exc})", path) from None
