"""Small building blocks shared by the stage-1 networks (no paper symbol of their own)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def groups_for(channels: int) -> int:
    """GroupNorm groups: 8 when they divide evenly, else fewer (tiny presets have few channels)."""
    for g in (8, 4, 2):
        if channels % g == 0:
            return g
    return 1


class ConvNormAct(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, stride: int = 1, kernel: int = 3):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
            nn.GroupNorm(groups_for(c_out), c_out),
            nn.SiLU(),
        )


class ResBlock(nn.Module):
    """Pre-norm residual block; the second conv starts at zero so a new block is the identity."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups_for(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups_for(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return x + self.conv2(F.silu(self.norm2(h)))


class ModResBlock(nn.Module):
    """Residual block whose normalised activations are scaled and shifted by a conditioning vector
    (FiLM / adaptive GroupNorm): the way the motion codes steer the flow estimator and the decoder.
    The modulation starts small but not zero (scale about 1, shift about 0): the networks' output
    layers already start at zero, and a zero FiLM behind them would leave the motion codes without a
    gradient until those layers have grown, a chain of zeros that slows early training badly."""

    def __init__(self, channels: int, cond_dim: int):
        super().__init__()
        self.block = ResBlock(channels)
        self.film = nn.Linear(cond_dim, 4 * channels)
        nn.init.normal_(self.film.weight, std=0.1 / cond_dim**0.5)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # x: (B, C, H, W), cond: (B, D)
        s1, b1, s2, b2 = self.film(cond)[:, :, None, None].chunk(4, dim=1)
        b = self.block
        h = self.film_norm(b.norm1(x), s1, b1)
        h = b.conv1(F.silu(h))
        h = self.film_norm(b.norm2(h), s2, b2)
        return x + b.conv2(F.silu(h))

    @staticmethod
    def film_norm(h: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return h * (1 + scale) + shift


def pixel_centres(n: int, like: torch.Tensor) -> torch.Tensor:
    """(n,) centres of n pixels along one axis in [-1, 1], grid_sample's convention (align_corners=False)."""
    return torch.linspace(-1 + 1 / n, 1 - 1 / n, n, device=like.device, dtype=like.dtype)


def coords(batch: int, height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) pixel-centre coordinates in [-1, 1] (x, y), the convention of grid_sample."""
    ys, xs = pixel_centres(height, like), pixel_centres(width, like)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy]).expand(batch, 2, height, width)
