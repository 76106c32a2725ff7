"""Pieces every command group shares: reading several data specs, `--set key=value` options,
atomic text output and loading the classifier a command acts on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

from waferscope.errors import ConfigError


def load_data(specs: List[str]):
    """Load one spec, or concatenate several into one data set."""
    from waferscope.data import load
    from waferscope.data.dataset import WaferDataset

    parts = [load(s) for s in specs]
    return parts[0] if len(parts) == 1 else WaferDataset.concat(parts, name="+".join(p.name for p in parts))


def parse_set(pairs: List[str]) -> dict:
    """`--set key=value` options → constructor params (values parsed as JSON when they are)."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def write_text_atomic(path: Path, text: str) -> None:
    from waferscope.utils import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as fh:
            fh.write(text)


def load_classifier(run: Optional[Path], bundled: Optional[str] = None):
    """The classifier in a run directory, or a bundled one (``fast`` unless ``bundled`` says
    ``accurate``) when no run is given."""
    if run is not None and bundled is not None:
        raise ConfigError("give --run or --bundled, not both")
    if run is None:
        from waferscope.models.classifiers import load_default

        return load_default(bundled or "fast")
    from waferscope.base import load_run

    return load_run(run, kind="classifier")
