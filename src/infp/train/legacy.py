"""Start a second-design renderer from a first-design checkpoint (docs/stage1.md).

The first design's decoder wrote a 3-channel correction; the second writes that correction and a
blend-mask logit, and warps the source once at the output resolution. Every other tensor (E_m, the
keypoint decoder, the appearance encoder, F, the decoder's body) keeps its meaning, so they are
carried over; the new mask channel starts closed, so the grown model first renders the warped
source, and E_m is unchanged, so a stage-2 checkpoint trained on its latents stays valid.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors.torch import load_file

from infp.errors import InfpError
from infp.models import Imitator, ImitatorConfig
from infp.models.checkpoint import WEIGHTS, read_config
from infp.models.config import RETIRED
from infp.models.decoder import MASK_BIAS


def is_first_design(path: str | Path) -> bool:
    return bool(RETIRED & set(read_config(path, "imitator")["config"]))


def start_config(path: str | Path) -> ImitatorConfig:
    """The config of a checkpoint of either design, as the second design reads it (without
    building the model)."""
    cfg = read_config(path, "imitator")["config"]
    return ImitatorConfig.from_dict({k: v for k, v in cfg.items() if k not in RETIRED})


def load_start(path: str | Path) -> Imitator:
    """The checkpoint a run starts from: one of the first design carried over into the second, one of
    the second loaded after its config is bounded (nothing allocated first)."""
    from infp.guard import check_checkpoint

    if is_first_design(path):
        return from_first_design(path)
    check_checkpoint(path, "imitator")
    return Imitator.from_pretrained(path)


def from_first_design(path: str | Path, **overrides) -> Imitator:
    """A second-design imitator holding a first-design checkpoint's weights (`overrides`: config
    fields to change, e.g. mouth_mask)."""
    path = Path(path)
    model = Imitator(replace(start_config(path), **overrides))
    state = load_file(str(path / WEIGHTS))
    own = model.state_dict()
    with torch.no_grad():
        for name, old in state.items():
            if name not in own:
                raise InfpError(f"{name}: not a tensor of the second design", path)
            new = own[name]
            if name == "decoder.out.weight":  # (3, C, 3, 3) -> (4, C, 3, 3): the mask's row at zero
                new.zero_()
                new[:3].copy_(old)
            elif name == "decoder.out.bias":
                new.copy_(torch.cat([old, torch.tensor([MASK_BIAS])]))
            elif old.shape == new.shape:
                new.copy_(old)
            else:
                raise InfpError(f"{name}: shape {tuple(old.shape)} does not fit {tuple(new.shape)}", path)
    return model.eval()
