"""Load a torchvision-format checkpoint from a local file into a backbone, with clear errors.

Nothing is downloaded: pass a ``.pth``/``.pt`` file (read with ``torch.load(weights_only=True)``,
so loading runs no pickled code) or a ``.safetensors`` file. A checkpoint may be a bare state dict
or wrap one under ``state_dict``/``model``; a ``module.`` prefix (DataParallel) is stripped.

The classification head (``fc.*`` for ResNets, ``classifier.*`` for ConvNeXt) may be missing from
the checkpoint or have another number of classes: feature extraction never uses it, so it is left as
initialised (``drop_head=True``). Every other missing key, unexpected key or shape mismatch is an
error naming the file and the first few offending keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from waferscope.errors import ConfigError

HEAD_PREFIXES = ("fc.", "classifier.", "head.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a local .pth/.pt/.bin or .safetensors file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError("checkpoint not found (weights are never downloaded: pass a local file)", path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a bad file
        raise ConfigError(f"cannot read checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", path) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError("not a state dict of tensors", path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _is_head(key: str) -> bool:
    return key.startswith(HEAD_PREFIXES)


def _first(keys: list[str], n: int = 5) -> str:
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], where: str | Path | None = None,
                            drop_head: bool = True) -> list[str]:
    """Copy ``state`` into ``model``; returns the head keys that were skipped."""
    own = model.state_dict()
    skipped: list[str] = []
    if drop_head:
        for k in list(state):
            if _is_head(k) and (k not in own or own[k].shape != state[k].shape):
                skipped.append(k)
        state = {k: v for k, v in state.items() if k not in skipped}
    missing = [k for k in own if k not in state and not (drop_head and _is_head(k))]
    # BatchNorm's num_batches_tracked is bookkeeping, absent from some exported checkpoints.
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing:
        raise ConfigError(f"checkpoint lacks {len(missing)} key(s) the model needs: {_first(missing)}", where)
    if unexpected:
        raise ConfigError(f"checkpoint has {len(unexpected)} key(s) the model does not: {_first(unexpected)}", where)
    bad = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in state if state[k].shape != own[k].shape]
    if bad:
        raise ConfigError(f"shape mismatch in {len(bad)} tensor(s): {_first(bad, 3)} "
                          "(was the backbone built with the same width/stem options?)", where)
    model.load_state_dict(state, strict=False)
    return skipped


def load_checkpoint(model: nn.Module, path: str | Path, drop_head: bool = True) -> nn.Module:
    """Load a local torchvision-format checkpoint into ``model`` (in place) and return it."""
    load_state_dict_checked(model, read_state_dict(path), where=path, drop_head=drop_head)
    return model


def save_checkpoint(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict as safetensors (atomically: temp file, then rename)."""
    import os

    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return path


def write_shipped_weights(state: dict[str, torch.Tensor], out_dir: str | Path, arch: str, info: dict,
                          script: str, metadata: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write weights the package ships: ``<out_dir>/<arch>.safetensors`` (float16) and ``<arch>.json``.

    The JSON is ``info`` plus where the weights came from (``script``, git commit, torch, machine, the
    command line). Each file is written under a temporary name, then renamed. For the pretraining
    scripts (``scripts/pretrain_*_backbone.py``).
    """
    import json
    import os
    import platform
    import subprocess
    import sys

    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    half = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    wpath = out_dir / f"{arch}.safetensors"
    tmp = wpath.with_name(f".{wpath.name}.tmp")
    save_file(half, str(tmp), metadata={"format": "pt", "arch": arch, **(metadata or {})})
    os.replace(tmp, wpath)
    try:
        # the checkout this code runs from (empty when installed without git)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = ""
    doc = {**info, "weights_dtype": "float16 (loaded into float32 parameters)",
           "provenance": {"script": script, "git_commit": commit, "torch": torch.__version__,
                          "machine": f"{platform.machine()}, {os.cpu_count()} cores"},
           "command": f"python {script} " + " ".join(sys.argv[1:])}
    jpath = wpath.with_suffix(".json")
    tmp = jpath.with_name(f".{jpath.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    os.replace(tmp, jpath)
    return wpath, jpath
