"""Face decoder (INFP Sec. 3.1), second design: detail comes from the source.

The first design re-synthesised the whole face from the warped feature volume and added it to the
warped source as a correction; on real video the result kept 0.19x the sharpness of the truth, as
nothing that the 64-channel volume does not hold survives a decoder trained on little compute.
Here the decoder paints only what the source cannot give, and says where:

- the output is the source image warped once by `F`'s flow, at whatever resolution the source is
  given (the flow is estimated at the feature resolution and is smooth, so it is upsampled);
- the decoder synthesises an image at the working resolution `size` and a blend mask; the mask
  (upsampled) mixes the synthesis into the warped source. Everywhere the mask is 0 the output is the
  source's own pixels. The imitator confines the mask to the driving mouth's opening
  (`imitator.paint_region`), the one place the source has nothing to give that training showed the
  mask keeps to; left free, it blended the blurry synthesis into every misplaced edge.

Most of the decoder's width sits at the feature resolution, where it is cheap; the two upsampling
steps read the warped fine skips of the appearance encoder. Its RGB output is a correction to the
warped working-resolution source, so a new decoder synthesises that source exactly; its mask starts
almost closed (sigmoid(-4) = 0.018). With `mouth_mask` every stage also reads the driving frame's
mouth opening and the source's carried along by the flow, both drawn from the keypoints' inner
lips: where the first covers more than the second, the mouth has opened and must be painted.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from infp.models.appearance_encoder import AppearanceFeatures
from infp.models.blocks import ConvNormAct, ModResBlock
from infp.models.config import ImitatorConfig
from infp.models.flow_estimator import Flow, condition_width, motion_condition, pair
from infp.models.warping import warp

MOUTH_CHANNELS = 2  # the driving frame's mouth opening and the source's, warped
MASK_BIAS = -4.0  # sigmoid(-4) = 0.018: a new decoder shows the warped source


class Synthesis(NamedTuple):
    image: torch.Tensor  # (B, 3, R, R) the output at the source's resolution R, about [0, 1]
    synthesis: torch.Tensor  # (B, 3, S, S) what the decoder paints, at the working size
    mask: torch.Tensor  # (B, 1, S, S) in (0, 1): where the painting replaces the warped source


def _occlude(x: torch.Tensor, occlusion: torch.Tensor) -> torch.Tensor:
    if occlusion.shape[-2:] != x.shape[-2:]:
        occlusion = F.interpolate(occlusion, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return x * occlusion


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if x.shape[-2:] == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


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
        self.out = nn.Conv2d(c, 4, 3, padding=1)  # RGB correction, blend-mask logit
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.copy_(torch.tensor([0.0, 0.0, 0.0, MASK_BIAS]))

    def forward(self, app: AppearanceFeatures, flow: Flow, z_src: torch.Tensor, z_drv: torch.Tensor,
                mouth: tuple[torch.Tensor, torch.Tensor] | None = None,
                region: torch.Tensor | None = None) -> Synthesis:
        """`mouth`: the (driving, source) mouth-opening masks (B, 1, h, w) at the feature
        resolution, given exactly when the config has `mouth_mask`; `region` (B, 1, S, S): where
        painting is allowed at all (the blend mask is multiplied by it; None: everywhere)."""
        cond = self.condition(pair(z_src, z_drv))
        masks = None if mouth is None else torch.cat([mouth[0], warp(mouth[1], flow.flow)], dim=1)  # (B, 2, h, w)

        def with_masks(x: torch.Tensor) -> torch.Tensor:
            if masks is None:
                return x
            return torch.cat([x, _resize(masks, x.shape[-2:])], 1)

        x = self.inp(with_masks(_occlude(warp(app.volume, flow.flow), flow.occlusion)))  # (B, W, h, w)
        for block in self.blocks:
            x = block(x, cond)
        for reduce, fuse, skip in zip(self.reduce, self.fuse, reversed(app.skips)):
            x = F.interpolate(reduce(x), scale_factor=2.0, mode="nearest")
            x = fuse(with_masks(torch.cat([x, _occlude(warp(skip, flow.flow), flow.occlusion)], dim=1)))
        out = self.out(x)  # (B, 4, S, S)
        synthesis = warp(app.image, flow.flow) + out[:, :3]
        mask = torch.sigmoid(out[:, 3:])
        if region is not None:
            mask = mask * region
        source = app.full if app.full is not None else app.image  # (B, 3, R, R)
        size = source.shape[-2:]
        warped = warp(source, flow.flow)  # the one resampling of the source (the flow upsampled to it)
        alpha = _resize(mask, size)
        image = warped + alpha * (_resize(synthesis, size) - warped)  # not clamped: losses see the raw output
        return Synthesis(image, synthesis, mask)
