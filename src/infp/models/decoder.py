"""Face decoder (INFP Sec. 3.1), second design: detail comes from the source.

The first design re-synthesised the whole face from the warped feature volume and added it to the
warped source as a correction; on real video the result kept 0.19x the sharpness of the truth, as
nothing that the 64-channel volume does not hold survives a decoder trained on little compute.
Here the decoder paints only what the source cannot give, and says where:

- the output is the source image warped once by `F`'s flow, at whatever resolution the source is
  given (the flow is estimated at the feature resolution and is smooth, so it is upsampled);
- the decoder synthesises an image at the working resolution `size` and a blend mask; the mask
  (upsampled) mixes the synthesis into the warped source (`compose`). Everywhere the mask is 0 the
  output is the source's own pixels. The imitator confines the mask to the driving mouth's opening
  (`imitator.paint_region`), the one place the source has nothing to give that training showed the
  mask keeps to (with `paint_closing`, also where the source's own opening lands:
  `imitator.closing_region`); left free, it blended the blurry synthesis into every misplaced edge;
- so the decoder runs only in a window around the driving mouth (`ImitatorConfig.paint_window`,
  about a fifth of the crop in the base preset), reading the warped features there: its cost is
  spent where it can paint, not on the 80% of the crop where its mask is zero.

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
from infp.models.warping import Window, sample, warp, warp_window

MOUTH_CHANNELS = 2  # the driving frame's mouth opening and the source's, warped
MASK_BIAS = -4.0  # sigmoid(-4) = 0.018: a new decoder shows the warped source


class Synthesis(NamedTuple):
    synthesis: torch.Tensor  # (B, 3, h, w) what the decoder paints, in its window at the working size
    mask: torch.Tensor  # (B, 1, h, w) in (0, 1): where the painting replaces the warped source
    window: Window  # where in the working-size crop the decoder painted


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
                region: torch.Tensor | None = None, window: Window | None = None) -> Synthesis:
        """`mouth`: the (driving, source) mouth-opening masks (B, 1, h, w) at the feature
        resolution, given exactly when the config has `mouth_mask`; `window`: the part of the crop
        the decoder works on (None: all of it), every offset a multiple of the feature stride;
        `region` (B, 1, window h, window w): where painting is allowed at all (the blend mask is
        multiplied by it; None: everywhere)."""
        b, size = app.image.shape[0], app.image.shape[-1]
        window = window or Window.whole(b, size, app.image.device)
        cond = self.condition(pair(z_src, z_drv))
        masks = None if mouth is None else torch.cat([mouth[0], warp(mouth[1], flow.flow)], dim=1)  # (B, 2, h, w)

        def read(x: torch.Tensor) -> torch.Tensor:
            """A source feature map warped, occluded and with the mouth masks, in the window."""
            grid = window.coords(size // x.shape[-1], x)
            x = sample(x, grid + sample(flow.flow, grid).permute(0, 2, 3, 1)) * sample(flow.occlusion, grid)
            return x if masks is None else torch.cat([x, sample(masks, grid)], 1)

        x = self.inp(read(app.volume))  # (B, W, h, w) in the window at the feature resolution
        for block in self.blocks:
            x = block(x, cond)
        for reduce, fuse, skip in zip(self.reduce, self.fuse, reversed(app.skips)):
            x = F.interpolate(reduce(x), scale_factor=2.0, mode="nearest")
            x = fuse(torch.cat([x, read(skip)], dim=1))
        out = self.out(x)  # (B, 4, window h, window w)
        synthesis = warp_window(app.image, flow.flow, window, "bicubic") + out[:, :3]  # read as `compose` reads
        mask = torch.sigmoid(out[:, 3:])
        if region is not None:
            mask = mask * region
        return Synthesis(synthesis, mask, window)


def compose(source: torch.Tensor, flow: torch.Tensor, painted: Synthesis) -> torch.Tensor:
    """The output image: the source (B, 3, R, R), at any resolution R, warped by the flow (B, 2, h, w)
    in one bicubic resampling, with the painting blended in where its mask is open -> (B, 3, R, R),
    not clamped (losses see the raw output)."""
    size = source.shape[-2:]
    warped = warp(source, flow, "bicubic")
    window = painted.window
    alpha = _resize(window.place(painted.mask), size)
    return warped + alpha * (_resize(window.place(painted.synthesis), size) - warped)
