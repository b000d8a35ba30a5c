"""Checkpoint directories: `model.safetensors` + `config.json`, checked thoroughly on load.

Loading never unpickles anything. A directory of the wrong kind (the other stage), the wrong preset,
a truncated or foreign weights file, missing or extra tensors, wrong shapes and non-finite values
each fail with one message that says which and where.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from infp import __version__
from infp.errors import InfpError
from infp.fsutil import atomic_dir

FORMAT = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
M = TypeVar("M", bound=nn.Module)
STAGES = {"imitator": "stage-1 (imitation)", "motion": "stage-2 (motion)"}


def save_checkpoint(model: nn.Module, kind: str, config: dict, path: str | Path, **extra) -> None:
    """Write atomically: the directory appears complete or not at all."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"kind": kind, "format": FORMAT, "infp_version": __version__, "config": config, **extra}
    with atomic_dir(path) as tmp:
        save_file(state, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def read_config(path: str | Path, kind: str) -> dict:
    """The checkpoint's config.json, after checking it is a checkpoint of `kind`."""
    path = Path(path)
    if not path.is_dir():
        raise InfpError("checkpoint directory not found", path)
    cfg_file = path / CONFIG
    if not cfg_file.is_file():
        raise InfpError(f"not a checkpoint directory (no {CONFIG})", path)
    try:
        meta = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InfpError(f"unreadable config ({e})", cfg_file) from None
    if not isinstance(meta, dict) or "kind" not in meta or "config" not in meta:
        raise InfpError("config has no 'kind'/'config' (not an infp checkpoint)", cfg_file)
    if meta["kind"] != kind:
        have = STAGES.get(meta["kind"], repr(meta["kind"]))
        raise InfpError(f"this is a {have} checkpoint; a {STAGES.get(kind, kind)} checkpoint is needed here", path)
    if meta.get("format") != FORMAT:
        raise InfpError(f"checkpoint format {meta.get('format')} is not {FORMAT}", path)
    return meta


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    f = path / WEIGHTS
    if not f.is_file():
        raise InfpError(f"no {WEIGHTS} in the checkpoint", path)
    try:
        return load_file(str(f))
    except (SafetensorError, OSError, ValueError) as e:
        raise InfpError(f"corrupt or truncated weights ({e})", f) from None


def check_state(model: nn.Module, state: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing:
        raise InfpError(f"{len(missing)} tensor(s) missing from the weights, e.g. {missing[0]}", where)
    if extra:
        raise InfpError(f"{len(extra)} unexpected tensor(s) in the weights, e.g. {extra[0]}", where)
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise InfpError(f"tensor {k} has shape {tuple(v.shape)}, the config needs {tuple(expected[k].shape)}", where)
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise InfpError(f"tensor {k} holds NaN or infinite values", where)


def load_checkpoint(path: str | Path, kind: str, build: Callable[[dict], M], preset: str | None = None) -> M:
    path = Path(path)
    meta = read_config(path, kind)
    have = meta["config"].get("preset")
    if preset is not None and have != preset:
        raise InfpError(f"checkpoint preset is {have!r}, not {preset!r}", path)
    try:
        model = build(meta["config"])
    except (TypeError, ValueError) as e:
        raise InfpError(f"invalid config ({e})", path / CONFIG) from None
    state = _load_weights(path)
    check_state(model, state, path / WEIGHTS)
    model.load_state_dict(state)
    return model.eval()
