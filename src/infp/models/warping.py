"""Warping: resample a feature volume (or image) along a dense flow field.

INFP Sec. 3.1: the flow predicted by `F` warps the appearance feature volume before decoding. Flow is
a backward map in grid_sample units: output pixel p reads input at p + flow(p), both in [-1, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from infp.models.blocks import coords


def resize_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of a (B, 2, h, w) flow; values are in normalised units, so they need no scaling."""
    if flow.shape[-2:] == size:
        return flow
    return F.interpolate(flow, size=size, mode="bilinear", align_corners=False)


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """x: (B, C, H, W), flow: (B, 2, h, w) -> (B, C, H, W); the flow is resized to x first."""
    b, _, h, w = x.shape
    flow = resize_flow(flow, (h, w))
    grid = (coords(b, h, w, flow) + flow).permute(0, 2, 3, 1)  # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
