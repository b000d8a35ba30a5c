"""Attention and MLP layers shared by the stage-2 networks (no paper symbol of their own)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class Attention(nn.Module):
    """Multi-head attention: queries from `x` (B, T, D), keys/values from `kv` (B, S, kv_dim)
    (self-attention when `kv` is None)."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (T, S) bool: which keys each query may attend to."""
        kv = x if kv is None else kv
        q = rearrange(self.q(x), "b t (h d) -> b h t d", h=self.heads)
        k, v = rearrange(self.kv(kv), "b s (two h d) -> two b h s d", two=2, h=self.heads)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, d)
        return self.out(rearrange(y, "b h t d -> b t (h d)"))


def band_mask(n: int, radius: int, device=None) -> torch.Tensor:
    """(n, n) bool: query frame i may attend to key frames i - radius .. i + radius."""
    i = torch.arange(n, device=device)
    return (i[:, None] - i[None, :]).abs() <= radius


class Mlp(nn.Sequential):
    def __init__(self, dim: int, hidden: int, out: int | None = None):
        super().__init__(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, out or dim))


class TemporalConv(nn.Module):
    """Pre-norm residual 1D convolution over time on (B, T, D); starts as the identity. Two convolutions
    of `kernel` taps `dilation` frames apart: each output sees +-(kernel - 1) * dilation frames."""

    def __init__(self, dim: int, kernel: int = 3, dilation: int = 1):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        pad = dilation * (kernel // 2)
        self.conv1 = nn.Conv1d(dim, dim, kernel, padding=pad, dilation=dilation)
        self.conv2 = nn.Conv1d(dim, dim, kernel, padding=pad, dilation=dilation)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = rearrange(self.norm(x), "b t d -> b d t")
        h = self.conv2(F.gelu(self.conv1(h)))
        return x + rearrange(h, "b d t -> b t d")


def init_linear(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every Linear (DiT's explicit init)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
