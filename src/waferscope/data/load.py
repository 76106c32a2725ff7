"""One entry point for every data source: ``load(spec)`` detects the format and returns a
:class:`~waferscope.data.dataset.WaferDataset`.

A spec is a path (file or folder) or ``synthetic:n=…,seed=…[,mixed=1]``.
"""

from __future__ import annotations

from pathlib import Path

from waferscope.data.dataset import WaferDataset
from waferscope.errors import DataError


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


def load(spec: str | Path) -> WaferDataset:
    spec_s = str(spec)
    if spec_s.startswith("synthetic:"):
        from waferscope.data.synthetic import generate

        return generate(**parse_synthetic_spec(spec_s))
    path = Path(spec_s).expanduser()
    if not path.exists():
        raise DataError("no such file or folder", path)
    if path.is_file() and path.suffix == ".npz":
        from waferscope.data.loaders.devnpz import load_flat_npz

        return load_flat_npz(path)
    raise DataError("unrecognised data format", path)
