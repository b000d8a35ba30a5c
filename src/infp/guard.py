"""Checks that keep a damaged or hostile checkpoint from costing more than a one-line error.

- `check_checkpoint`: before a checkpoint's model is built, its config's numbers are bounded and the
  model it describes is sized without memory (on PyTorch's meta device) against the tensors its
  weights file holds. An edited config (a width of 100000) would otherwise allocate hundreds of GB
  before the weights are even read.
- `check_finite`: latents and frames are checked for NaN and infinity as they are made. A weight
  scaled by 1e38 passes every load check (it is finite) and then renders a black face.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

from infp.errors import InfpError

log = logging.getLogger("infp")

LATENT_MAX = 1e6  # motion latents are unit-scale once normalised; raw ones stay within tens
INT_MAX = 1 << 16  # any whole number in a config (widths, depths, sizes)
# fields that set the size of activations rather than of weights, so the weights file cannot bound them
FIELD_MAX = {"imitator": {"size": 2048, "motion_input": 2048},
             "motion": {"window": 1000, "context": 1000, "style_frames": 10000}}


def check_finite(x: torch.Tensor, message: str, path: str | Path | None = None, limit: float | None = None) -> None:
    """`InfpError(message, path)` if `x` holds NaN or an infinity, or (with `limit`) a value beyond +-limit."""
    if not bool(torch.isfinite(x).all()) or (limit is not None and x.numel() and float(x.abs().max()) > limit):
        raise InfpError(message, path)


def check_checkpoint(path: str | Path, kind: str) -> None:
    """Refuse, in one line, a checkpoint whose config would make loading it allocate more than its
    weights file holds (or any config number that is not finite or absurdly large). The checks the
    load itself makes (kind, tensors, shapes, values) are left to it."""
    from infp.models.checkpoint import CONFIG, WEIGHTS, read_config

    path = Path(path)
    cfg = read_config(path, kind)["config"]
    if not isinstance(cfg, dict):
        raise InfpError("invalid config (not a mapping)", path / CONFIG)
    _check_numbers(cfg, FIELD_MAX.get(kind, {}), path / CONFIG)
    stored = _stored_elements(path / WEIGHTS)
    if stored is None:
        return  # unreadable: the load says how
    described = _described_elements(kind, cfg, path / CONFIG)
    if described is not None and described > 2 * stored + (1 << 20):
        raise InfpError(f"the config describes a model of {described:,} weights but the weights file holds "
                        f"{stored:,}: config and weights do not match (an edited config?)", path / CONFIG)


def _check_numbers(cfg: dict, caps: dict[str, int], where: Path) -> None:
    def walk(key: str, v) -> None:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, list | tuple):
            for x in v:
                walk(key, x)
        elif isinstance(v, dict):
            for k, x in v.items():
                walk(f"{key}.{k}" if key else k, x)
        elif isinstance(v, int):
            cap = caps.get(key, INT_MAX)
            if abs(v) > cap:
                raise InfpError(f"invalid config: {key} = {v} is out of range (at most {cap})", where)
        elif isinstance(v, float):
            if not math.isfinite(v) or abs(v) > INT_MAX:
                raise InfpError(f"invalid config: {key} = {v} is not a sensible number", where)

    walk("", cfg)


def _stored_elements(weights: Path) -> int | None:
    """Elements in a safetensors file, from its header alone (nothing is loaded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), "pt") as f:
            return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())  # noqa: SIM118 (not a dict)
    except Exception:  # noqa: BLE001 - a missing or corrupt file is the load's to report
        return None


class _NoInit(TorchFunctionMode):
    """In-place ops on meta tensors (weight initialisers) do nothing: initialising on the meta device
    otherwise pulls in torch._dynamo, a second's import for numbers nobody reads."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name.endswith("_") and not name.endswith("__"):  # Tensor.normal_, nn.init.normal_(tensor=...)
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            if first is not None and first.is_meta:
                return first
        return func(*args, **kwargs)


def _described_elements(kind: str, cfg: dict, where: Path) -> int | None:
    """Elements of the weights the config's model has, counted on the meta device (no memory)."""
    if kind == "imitator":
        from infp.models import Imitator, ImitatorConfig

        build = lambda: Imitator(ImitatorConfig.from_dict(cfg))  # noqa: E731
    elif kind == "motion":
        from infp.models.motion_config import MotionConfig
        from infp.models.motion_generator import MotionGenerator

        build = lambda: MotionGenerator(MotionConfig.from_dict(cfg))  # noqa: E731
    else:
        return None
    try:
        with torch.device("meta"), _NoInit():
            model = build()
    except InfpError:
        raise
    except (TypeError, ValueError) as e:
        raise InfpError(f"invalid config ({e})", where) from None
    except Exception as e:  # noqa: BLE001 - a model that cannot be built on meta: the load decides
        log.debug("%s: not sized on the meta device (%s)", where, e)
        return None
    return sum(t.numel() for t in model.state_dict().values())
