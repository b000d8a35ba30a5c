"""Motion flow estimator `F` (INFP Sec. 3.1).

Given the source's and the driving frame's motion latents and the source's appearance volume, predict
a dense backward flow (where each output pixel reads the source) and an occlusion map (which warped
features to trust). The appearance volume says where the eyes, mouth and outline are; the motion codes,
injected by FiLM into every block, say how they move. A small U-Net gives the receptive field a head
turn needs at low cost. The output layer starts at zero: a new model renders the source unchanged.

With `keypoint_prior`, F also reads a prior flow spread from the source's and driving frame's
keypoints (and where keypoints gather or leave) and predicts a correction added to it, so a new
model already moves lips, lids and outline as the keypoints do.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from infp.models.blocks import ConvNormAct, ModResBlock, coords
from infp.models.config import ImitatorConfig

OCCLUSION_BIAS = 4.0  # sigmoid(4) = 0.98: trust every warped feature at the start


PRIOR_CHANNELS = 3  # the keypoint prior's flow (2) and density change (1)


class Flow(NamedTuple):
    flow: torch.Tensor  # (B, 2, h, w) backward flow in grid_sample units at the feature resolution
    occlusion: torch.Tensor  # (B, 1, h, w) in (0, 1)
    correction: torch.Tensor | None = None  # (B, 2, h, w): F's own part, added to the keypoint prior


def condition_width(cfg: ImitatorConfig) -> int:
    """Width of the motion conditioning vector that FiLM reads, in F and in the decoder."""
    return 8 * cfg.motion_dim


def motion_condition(cfg: ImitatorConfig) -> nn.Sequential:
    """MLP over (z_src, z_drv, z_drv - z_src): the difference makes "no change" easy to represent."""
    dim, width = cfg.motion_dim, condition_width(cfg)
    return nn.Sequential(nn.Linear(3 * dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU())


def pair(z_src: torch.Tensor, z_drv: torch.Tensor) -> torch.Tensor:
    return torch.cat([z_src, z_drv, z_drv - z_src], dim=1)  # (B, 3 D)


class FlowEstimator(nn.Module):
    def __init__(self, cfg: ImitatorConfig):
        super().__init__()
        chans = cfg.flow_channels
        cond = condition_width(cfg)
        self.condition = motion_condition(cfg)
        self.correction_max = cfg.correction_max
        extra = PRIOR_CHANNELS if cfg.keypoint_prior else 0
        self.inp = ConvNormAct(cfg.feature_channels + 2 + extra, chans[0])
        self.enc = nn.ModuleList(ModResBlock(c, cond) for c in chans)
        self.down = nn.ModuleList(ConvNormAct(a, b, stride=2) for a, b in itertools.pairwise(chans))
        self.up = nn.ModuleList(ConvNormAct(b + a, a) for a, b in itertools.pairwise(chans))
        self.dec = nn.ModuleList(ModResBlock(c, cond) for c in chans[:-1])
        self.out = nn.Conv2d(chans[0], 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([0.0, 0.0, OCCLUSION_BIAS]))

    def forward(self, volume: torch.Tensor, z_src: torch.Tensor, z_drv: torch.Tensor,
                prior: tuple[torch.Tensor, torch.Tensor] | None = None) -> Flow:
        """`prior`: the keypoint flow (B, 2, h, w) and density change (B, 1, h, w), given exactly when
        the config has `keypoint_prior`."""
        b, _, h, w = volume.shape
        c = self.condition(pair(z_src, z_drv))  # (B, cond)
        inputs = [volume, coords(b, h, w, volume)]
        if prior is not None:
            inputs += list(prior)
        x = self.inp(torch.cat(inputs, dim=1))
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x, c)
            if i < len(self.down):
                skips.append(x)
                x = self.down[i](x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = self.dec[i](self.up[i](torch.cat([x, skips[i]], dim=1)), c)
        out = self.out(x)
        if prior is None:
            return Flow(out[:, :2], torch.sigmoid(out[:, 2:]))
        correction, bound = out[:, :2], self.correction_max
        if bound > 0:  # about the identity for the small corrections of trained motion, never a swirl
            correction = bound * torch.tanh(correction / bound)
        return Flow(correction + prior[0], torch.sigmoid(out[:, 2:]), correction)
