"""Appearance encoder (INFP Sec. 3.1): source image -> appearance feature volume.

Run once per portrait: its output is reused for every frame rendered from that portrait, so its cost
is not part of the per-frame budget. Besides the volume at 1/2**feature_down resolution it keeps the
finer feature maps on the way down; the decoder reads them (warped) as skips for sharp detail.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from infp.models.blocks import ConvNormAct, ResBlock
from infp.models.config import ImitatorConfig


class AppearanceFeatures(NamedTuple):
    image: torch.Tensor  # (B, 3, S, S) the source in [0, 1]
    skips: tuple[torch.Tensor, ...]  # finest first: (B, skip_channels[i], S / 2**i, S / 2**i)
    volume: torch.Tensor  # (B, feature_channels, S / 2**feature_down, ...)
    # (B, 3, R, R) the same crop at the output resolution R (e.g. 512), warped into the output; None: `image`
    full: torch.Tensor | None = None

    def expand(self, n: int) -> AppearanceFeatures:
        """One portrait's features viewed as a batch of n (no copy): render n frames of it at once."""
        def e(x: torch.Tensor) -> torch.Tensor:
            return x.expand(n, *x.shape[1:])

        full = None if self.full is None else e(self.full)
        return AppearanceFeatures(e(self.image), tuple(e(s) for s in self.skips), e(self.volume), full)

    def at_resolution(self, full: torch.Tensor) -> AppearanceFeatures:
        """These features with the source given at a higher output resolution (B, 3, R, R) in [0, 1]:
        the renderer then warps that, so the output keeps the detail the working size would lose."""
        return self._replace(full=full)


class AppearanceEncoder(nn.Module):
    def __init__(self, cfg: ImitatorConfig):
        super().__init__()
        chans = cfg.skip_channels
        self.stem = ConvNormAct(3, chans[0])
        self.down = nn.ModuleList(
            ConvNormAct(c_in, c_out, stride=2) for c_in, c_out in zip(chans, (*chans[1:], cfg.feature_channels))
        )
        self.body = nn.Sequential(ResBlock(cfg.feature_channels), ResBlock(cfg.feature_channels))

    def forward(self, image: torch.Tensor, full: torch.Tensor | None = None) -> AppearanceFeatures:
        """image: (B, 3, S, S) in [0, 1] at the working size; full: optionally the same crop at the
        output resolution."""
        h = self.stem(image * 2 - 1)
        skips = []
        for down in self.down:
            skips.append(h)
            h = down(h)
        return AppearanceFeatures(image, tuple(skips), self.body(h), full)
