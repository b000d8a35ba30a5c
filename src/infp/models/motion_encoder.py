"""Motion encoder `E_m` (INFP Sec. 3.1).

Maps the hybrid facial representation of a frame (eyes and lips kept, the rest masked, face-outline
points drawn on) to one low-dimensional 1D motion latent. The latent is what stage 2 learns to
generate from audio, so it is small (32 numbers in `base`) and carries expression and head pose but,
by the masking and the bottleneck, little identity.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from infp.models.blocks import ConvNormAct, ResBlock
from infp.models.config import ImitatorConfig


class MotionEncoder(nn.Module):
    """`E_m`: (B, 3, S, S) representation in [0, 1] -> (B, motion_dim) motion latent."""

    def __init__(self, cfg: ImitatorConfig):
        super().__init__()
        self.input_size = cfg.motion_input
        chans = cfg.motion_channels
        stages = [ConvNormAct(3, chans[0], stride=2)]
        for c_in, c_out in itertools.pairwise(chans):
            stages += [ConvNormAct(c_in, c_out, stride=2), ResBlock(c_out)]
        self.features = nn.Sequential(*stages)
        self.head = nn.Linear(2 * chans[-1], cfg.motion_dim)
        # unit-scale codes from the start: the flow estimator reads their differences
        nn.init.normal_(self.head.weight, std=(2 * chans[-1]) ** -0.5)
        nn.init.zeros_(self.head.bias)

    def forward(self, rep: torch.Tensor) -> torch.Tensor:
        if rep.shape[-1] != self.input_size:
            rep = F.interpolate(rep, size=(self.input_size, self.input_size), mode="area")
        h = self.features(rep * 2 - 1)  # (B, C, s, s)
        # mean and max pooling: where a feature fires (a mouth corner, an outline dot) matters as much as how much
        pooled = torch.cat([h.mean((2, 3)), h.amax((2, 3))], dim=1)
        return self.head(pooled)
