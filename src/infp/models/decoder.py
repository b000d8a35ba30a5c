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
  spent where it can paint, not on the 80% of the crop where its mask is zero. With `paint_eyes` a
  second window of the same size sits on the eyes, where a blink's lid must cover the eye and a
  photo's half-closed eye must open, painted by a second network of this design
  (`Imitator.eye_decoder`, so that training the eyes cannot move the mouth's painting).

Most of the decoder's width sits at the feature resolution, where it is cheap; the two upsampling
steps read the warped fine skips of the appearance encoder. Its RGB output is a correction to the
warped working-resolution source, so a new decoder synthesises that source exactly; its mask starts
almost closed (sigmoid(-4) = 0.018). With `mouth_mask` every stage also reads the driving frame's
opening and the source's carried along by the flow, both drawn from the keypoints (the inner lips;
in the eye window, the eyes' outlines): where the first covers more than the second, the opening has
widened and must be painted.
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

OPENING_CHANNELS = 2  # the driving frame's opening (mouth or eyes) in the window and the source's, warped
MASK_BIAS = -4.0  # sigmoid(-4) = 0.018: a new decoder shows the warped source


class Synthesis(NamedTuple):
    """What the decoder painted, in its windows: n per image (the mouth's, with `paint_eyes` also the
    eyes'), batched window-major (every image's first window, then every image's second)."""

    synthesis: torch.Tensor  # (n B, 3, h, w) what the decoder paints, in its window at the working size
    mask: torch.Tensor  # (n B, 1, h, w) in (0, 1): where the painting replaces the warped source
    window: Window  # where in the working-size crop the decoder painted
    region: torch.Tensor | None = None  # (n B, 1, h, w) in [0, 1]: where the mask was allowed to open


def tiled(x: torch.Tensor, painted: Synthesis) -> torch.Tensor:
    """A per-image tensor (B, ...) repeated for each of the painting's windows -> (n B, ...)."""
    n = len(painted.mask) // len(x)
    return x if n == 1 else x.repeat(n, *[1] * (x.dim() - 1))


def placed(painted: Synthesis, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The painting in the whole working-size crop: colour (B, 3, S, S) and mask (B, 1, S, S), zero
    outside the windows. An image's windows may overlap (the eyes' and the mouth's, over the nose), but
    the regions their masks may open in do not, so their masks add."""
    w = painted.window
    n = len(painted.mask) // batch
    colour, mask = w.place(painted.synthesis), w.place(painted.mask)
    if n == 1:
        return colour, mask
    colour, mask = colour.unflatten(0, (n, batch)), mask.unflatten(0, (n, batch))  # (n, B, C, S, S)
    total = mask.sum(0)
    mixed = (mask * colour).sum(0) / total.clamp_min(1e-6)
    cover = w.place(torch.ones_like(painted.mask)).unflatten(0, (n, batch)).sum(0)  # windows over each pixel
    return torch.where(total > 0, mixed, colour.sum(0) / cover.clamp_min(1)), total.clamp(max=1)


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
        extra = OPENING_CHANNELS if cfg.mouth_mask else 0
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
        """`mouth`: the (driving, source) opening masks (B, 1, h, w) at the feature resolution (the
        mouth's; in an eye window, the eyes'), given exactly when the config has `mouth_mask`;
        `window`: the part of the crop the decoder works on (None: all of it), every offset a multiple
        of the feature stride; `region` (B, 1, window h, window w): where painting is allowed at all
        (the blend mask is multiplied by it; None: everywhere). Several windows of one image come as
        more batch rows, each with its image's inputs (`Imitator.paint`)."""
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
            x = fuse(torch.cat([x, like(read(skip), x)], dim=1))
        out = self.out(x)  # (B, 4, window h, window w)
        synthesis = warp_window(app.image, flow.flow, window, "bicubic") + out[:, :3]  # read as `compose` reads
        mask = torch.sigmoid(out[:, 3:])
        if region is not None:
            mask = mask * region
        return Synthesis(synthesis, mask, window, region)


def like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`t` in `x`'s dtype and memory layout, to be concatenated with it: under autocast and channels-last
    weights (CPU), one conversion of `t` instead of the concatenation in float32 converted back whole
    before the next convolution (the same values)."""
    fmt = torch.channels_last if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last) else torch.contiguous_format
    return t.to(dtype=x.dtype, memory_format=fmt)


def compose(source: torch.Tensor, flow: torch.Tensor, painted: Synthesis) -> torch.Tensor:
    """The output image: the source (B, 3, R, R), at any resolution R, warped by the flow (B, 2, h, w)
    in one bicubic resampling, with the painting blended in where its mask is open -> (B, 3, R, R),
    not clamped (losses see the raw output)."""
    size = source.shape[-2:]
    warped = warp(source, flow, "bicubic")
    colour, mask = placed(painted, len(source))
    return warped + _resize(mask, size) * (_resize(colour, size) - warped)
