"""Face decoder (INFP Sec. 3.1): warped appearance features -> the driven face image.

Most of the width sits at the feature resolution (1/4 of the image in `base`), where it is cheap;
the two upsampling steps read the warped fine skips of the appearance encoder for sharp detail. The
output is a correction added to the source image warped by the same flow: the flow moves what exists
(head pose, lids, lips) and the decoder paints what the source lacks (teeth, mouth interior, closed
eyes). Its last layer starts at zero, so a new model renders the (warped) source exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infp.models.appearance_encoder import AppearanceFeatures
from infp.models.blocks import ConvNormAct, ModResBlock
from infp.models.config import ImitatorConfig
from infp.models.flow_estimator import Flow, condition_width, motion_condition, pair
from infp.models.warping import resize_flow, warp


def _occlude(x: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
    if occlusion.shape[-2:] != x.shape[-2:]:
        occlusion = F.interpolate(occlusion, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x * occlusion


class Decoder(nn.Module):
    def __init__(self, cfg: ImitatorConfig):
        super().__init__()
        width = cfg.decoder_channels
        cond = condition_width(cfg)
        self.condition = motion_condition(cfg)
        self.inp = ConvNormAct(cfg.feature_channels, width)
        self.blocks = nn.ModuleList(ModResBlock(width, cond) for _ in range(cfg.decoder_blocks))
        self.reduce, self.fuse = nn.ModuleList(), nn.ModuleList()
        c = width
        for skip in reversed(cfg.skip_channels):
            self.reduce.append(nn.Conv2d(c, c // 2, 1))
            self.fuse.append(ConvNormAct(c // 2 + skip, c // 2))
            c //= 2
        self.out = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, app: AppearanceFeatures, flow: Flow, z_src: torch.Tensor, z_drv: torch.Tensor) -> torch.Tensor:
        cond = self.condition(pair(z_src, z_drv))
        x = self.inp(_occlude(warp(app.volume, flow.flow), flow.occlusion))  # (B, W, h, w)
        for block in self.blocks:
            x = block(x, cond)
        for reduce, fuse, skip in zip(self.reduce, self.fuse, reversed(app.skips)):
            x = F.interpolate(reduce(x), scale_factor=2.0, mode="nearest")
            x = fuse(torch.cat([x, _occlude(warp(skip, flow.flow), flow.occlusion)], dim=1))
        full = resize_flow(flow.flow, app.image.shape[-2:])
        return warp(app.image, full) + self.out(x)  # (B, 3, S, S), not clamped: losses see the raw output
