"""The ``--engine`` options of ``classify predict`` and ``detect score``.

The command's own single-process path, or :func:`waferscope.scale.run_partitions` over Parquet
partitions on Dask. Option checks and their ``--flag`` wording live here; the library names
parameters.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from waferscope.errors import ConfigError

if TYPE_CHECKING:
    from waferscope.scale.dask_engine import ScaleRun


def check_dir(path: Path, option: str) -> None:
    """``path`` (given as ``option``) must be a folder if it exists."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} must be a directory", path)


def _check_out(out: Path, overwrite: bool, option: str) -> None:
    check_dir(out, option)
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError("output directory is not empty (give --overwrite to replace it)", out)


def run_cli(model, data: list[str], out: Path, engine: str, scheduler: str | None, workers: int,
            overwrite: bool, refused: dict[str, str] | None = None, **options) -> ScaleRun | None:
    """Return the ``--engine`` part of ``classify predict`` / ``detect score``.

    None when the command's own single-process CSV path should run, else what the partitioned
    run wrote.

    ``refused`` maps each option the user gave that has no meaning on the partitioned path to the
    reason; ``options`` go to :func:`run_partitions` (``prior``, ``threshold``, ``maps``).
    """
    if engine not in ("local", "dask"):
        raise ConfigError(f"unknown --engine {engine!r}: expected local or dask")
    if engine == "local":
        if scheduler or overwrite:
            raise ConfigError("--scheduler and --overwrite go with --engine dask")
        return None
    for name, reason in (refused or {}).items():
        raise ConfigError(f"{name} does not apply with --engine dask: {reason}")
    if len(data) != 1:
        raise ConfigError("--engine dask takes one --data: a folder of .parquet partitions, a glob or one file")
    # the library checks these too, naming its parameters; checked here first in the options' words
    _check_out(Path(out), overwrite, "--out")
    maps = options.get("maps")
    if maps is not None:
        _check_out(Path(maps), overwrite, "--maps")
        if Path(maps).resolve() == Path(out).resolve() or Path(out).resolve() in Path(maps).resolve().parents:
            raise ConfigError("--maps must not be --out or inside it (--out holds one .parquet per partition)", maps)
    from waferscope.scale import run_partitions

    return run_partitions(model, data[0], out, engine="dask", scheduler=scheduler, workers=workers,
                          overwrite=overwrite, **options)

