"""Mouth interior prior: paint where the mouth opens (our addition to INFP Sec. 3.1).

A warp can only move the source's pixels. When a closed-mouth portrait is driven to open its mouth,
the pixels inside the new opening are read from the closed lips, so the warped face shows thick lips
and no opening; MediaPipe, and a viewer, see a closed mouth (docs/stage1.md measured it: the
keypoints open the mouth with slope 0.5-0.7 against the truth, the warped image with about 0.1).
The decoder has to paint that inside (teeth, the dark cavity), and on this project's compute it
learns it slowly. This module gives it a start, as the keypoint prior gives `F` one: as far as the
driving keypoints' inner lips open the mouth beyond the source's, the warped image inside them is
replaced by a dark cavity with a band of upper teeth under the upper lip, as the synthetic clips
paint it (`infp.data.render`), except where the flow reads the source's own opening (a portrait
that shows its teeth keeps them). The decoder's correction is added on top, so it can shade, widen
or hide the paint. The two colours are constants, the synthetic clips' own: made
learnable, they moved by at most 2/255 in 1500 fine-tuning steps at the renderer's learning rate,
and being constants they add no tensor to a checkpoint (docs/stage1.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from infp.face import topology as tp
from infp.models.warping import polygon_mask, warp

TEETH_DEPTH = 0.22  # the teeth band reaches this share of the lip gap below the upper lip (as the synthetic clips)
FULL_OPENING = 0.04  # gap / face height at which the paint is at full strength (as the synthetic clips)
SUPERSAMPLE = 2  # the masks are drawn on a 2x finer grid: soft edges at the image resolution


class MouthInterior(nn.Module):
    """(source and driving keypoints, the flow) -> the opening's alpha (B, 1, S, S) and its paint
    (B, 3, S, S)."""

    def __init__(self):
        super().__init__()
        colours = torch.tensor([[70.0, 25.0, 30.0], [205.0, 200.0, 190.0]]) / 255  # cavity, teeth (RGB)
        self.register_buffer("colours", colours, persistent=False)
        self.register_buffer("lips", torch.as_tensor(tp.inner_lip_keypoints()), persistent=False)
        upper = tp.inner_lip_arc_keypoints()[0]  # corner to corner
        self.register_buffer("upper", torch.as_tensor(upper), persistent=False)
        gap = tp.keypoint_positions([tp.UPPER_LIP_INNER, tp.LOWER_LIP_INNER, tp.FOREHEAD, tp.CHIN])
        self.register_buffer("gap_points", torch.as_tensor(gap), persistent=False)

    def opening(self, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, K, 2) keypoints -> the inner-lip gap (B,) in [-1, 1] units and over face height."""
        up, low, top, chin = k[:, self.gap_points].unbind(1)  # (B, 2) each
        gap = (low - up).norm(dim=-1)
        return gap, gap / (chin - top).norm(dim=-1).clamp_min(1e-6)

    def forward(self, k_src: torch.Tensor, k_drv: torch.Tensor, flow: torch.Tensor,
                size: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """flow: the renderer's (B, 2, h, w) backward flow. -> (alpha (B, 1, S, S), paint (B, 3, S, S)),
        or None where no frame of the batch opens its mouth beyond the source's (most listening
        frames): nothing to paint, nothing drawn."""
        with torch.autocast(k_drv.device.type, enabled=False):  # masks in float32, also in a bf16 step
            k_src, k_drv, flow = k_src.float(), k_drv.float(), flow.float()
            # Painted as far as the mouth opens beyond the source's own (fading in, as in the synthetic
            # clips), and only where the flow does not read the source's own opening: a portrait that
            # shows its teeth keeps them, moved by the flow.
            gap, rel = self.opening(k_drv)
            strength = ((rel - self.opening(k_src)[1].clamp_min(0)) / FULL_OPENING).clamp(0, 1)  # (B,)
            on = torch.where(strength > 0)[0]
            if len(on) == 0:
                return None
            k = k_drv[on]
            opened = polygon_mask(k[:, self.lips], size, SUPERSAMPLE)  # (N, 1, S, S)
            # The source's opening, eroded by a pixel first: a closed mouth's keypoints still enclose a
            # sliver, and the flow reads the whole new opening from that line, so unshrunk it would
            # cover the opening of every closed-mouth portrait.
            own = -F.max_pool2d(-polygon_mask(k_src[on][:, self.lips], size, SUPERSAMPLE), 3, 1, 1)
            opened = opened * (1 - warp(own, flow[on]))
            upper = k[:, self.upper]  # (N, P, 2) corner to corner along the upper lip
            lowered = upper + torch.stack([torch.zeros_like(gap[on]), TEETH_DEPTH * gap[on]], -1)[:, None]
            teeth = polygon_mask(torch.cat([upper, lowered.flip(1)], 1), size, SUPERSAMPLE)  # (N, 1, S, S)
            cavity, white = self.colours.float()
            alpha = k_drv.new_zeros(len(k_drv), 1, size, size)
            paint = k_drv.new_zeros(len(k_drv), 3, size, size)
            alpha[on] = opened * strength[on, None, None, None]
            paint[on] = cavity[:, None, None] * (1 - teeth) + white[:, None, None] * teeth
        return alpha, paint
