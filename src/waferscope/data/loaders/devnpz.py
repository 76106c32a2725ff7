"""The flat real-map archive in ``shared/data/wm811k/wm811k_dev.npz`` (maps stored back to back)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from waferscope.data.limits import LoadLimits
from waferscope.data.classes import canonical_label
from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError

REQUIRED = ("maps_flat", "shapes", "labels")


def is_flat_npz(keys: list[str]) -> bool:
    return all(k in keys for k in REQUIRED)


def load_flat_npz(path: str | Path, limits: LoadLimits | None = None) -> WaferDataset:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.files)
            missing = [k for k in REQUIRED if k not in keys]
            if missing:
                raise DataError(f"not a flat wafer-map archive: missing {', '.join(missing)}", path)
            flat, shapes, labels = z["maps_flat"], z["shapes"], z["labels"]
            extra = {k: z[k] for k in ("lot_name", "wafer_index", "die_size", "train_test") if k in keys}
    except DataError:
        raise
    except Exception as exc:  # zipfile/ValueError/OSError for truncated or non-npz files
        raise DataError(f"cannot read as .npz ({type(exc).__name__}: {exc})", path) from None
    shapes = np.asarray(shapes, dtype=np.int64)
    if shapes.ndim != 2 or shapes.shape[1] != 2 or len(shapes) != len(labels):
        raise DataError(f"'shapes' must be N×2 with one row per label, got {shapes.shape} for {len(labels)} labels", path)
    off = np.r_[0, np.cumsum(shapes.prod(1))]
    if off[-1] != flat.size:
        raise DataError(f"'maps_flat' holds {flat.size} values but 'shapes' needs {off[-1]}", path)
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
