"""Face decoder (INFP Sec. 3.1): warped appearance features -> the driven face image.

Most of the width sits at the feature resolution (1/4 of the image in `base`), where it is cheap;
the two upsampling steps read the warped fine skips of the appearance encoder for sharp detail. The
output is a correction added to the source image warped by the same flow: the flow moves what exists
(head pose, lids, lips) and the decoder paints what the source lacks (teeth, mouth interior, closed
eyes). Its last layer starts at zero, so a new model renders the (warped) source exactly.

With `mouth_mask`, every stage also reads two masks drawn from the keypoints' inner lips: the
driving frame's mouth opening, and the source's carried along by the flow. Where the first covers
more than the second the mouth has opened, and the warped source holds only lips stretched over it:
that is where the decoder has to paint the teeth and the dark cavity. With `mouth_interior` a
painted cavity and teeth band (models/mouth_interior.py) replace the warped image there first, and
the decoder's correction starts from that.
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

MOUTH_CHANNELS = 2  # the driving frame's mouth opening and the source's, warped


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
        extra = MOUTH_CHANNELS if cfg.mouth_mask else 0
        self.inp = ConvNormAct(cfg.feature_channels + extra, width)
        self.blocks = nn.ModuleList(ModResBlock(width, cond) for _ in range(cfg.decoder_blocks))
        self.reduce, self.fuse = nn.ModuleList(), nn.ModuleList()
        c = width
        for skip in reversed(cfg.skip_channels):
            self.reduce.append(nn.Conv2d(c, c // 2, 1))
            self.fuse.append(ConvNormAct(c // 2 + skip + extra, c // 2))
            c //= 2
        self.out = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, app: AppearanceFeatures, flow: Flow, z_src: torch.Tensor, z_drv: torch.Tensor,
                mouth: tuple[torch.Tensor, torch.Tensor] | None = None,
                interior: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """`mouth`: the (driving, source) mouth-opening masks (B, 1, h, w) at the feature
        resolution, given exactly when the config has `mouth_mask`; `interior`: the painted mouth's
        alpha (B, 1, S, S) and colours (B, 3, S, S), given with `mouth_interior` when a mouth opens."""
        cond = self.condition(pair(z_src, z_drv))
        masks = None if mouth is None else torch.cat([mouth[0], warp(mouth[1], flow.flow)], dim=1)  # (B, 2, h, w)

        def with_masks(x: torch.Tensor) -> torch.Tensor:  # appended last: a grown model's zero weights read them
            if masks is None:
                return x
            return torch.cat([x, F.interpolate(masks, size=x.shape[-2:], mode="bilinear", align_corners=False)], 1)

        x = self.inp(with_masks(_occlude(warp(app.volume, flow.flow), flow.occlusion)))  # (B, W, h, w)
        for block in self.blocks:
            x = block(x, cond)
        for reduce, fuse, skip in zip(self.reduce, self.fuse, reversed(app.skips)):
            x = F.interpolate(reduce(x), scale_factor=2.0, mode="nearest")
            x = fuse(with_masks(torch.cat([x, _occlude(warp(skip, flow.flow), flow.occlusion)], dim=1)))
        base = warp(app.image, resize_flow(flow.flow, app.image.shape[-2:]))  # (B, 3, S, S)
        if interior is not None:
            alpha, paint = interior
            base = base * (1 - alpha) + paint.to(base.dtype) * alpha
        return base + self.out(x)  # not clamped: losses see the raw output
