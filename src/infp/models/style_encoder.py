"""Style encoder: a reference motion sequence -> the motion style vector `s_m` (INFP Sec. 3.2).

The paper modulates the memory banks with a style vector but does not say where it comes from. Here
it is read from a reference sequence of motion latents of the same person (during training, another
stretch of the same clip than the window being learned; at inference, the latents of any video of the
person, or nothing). A person's style is how much and how they move, so the encoder pools the mean
and the spread of its temporal features over the whole reference. `s_m = 0` means "no reference":
training zeroes `s_m` with p = 0.3, so the model also learns the neutral style it uses by default.
"""

from __future__ import annotations

import torch
from torch import nn

from infp.models.attention import TemporalConv
from infp.models.motion_config import MotionConfig


class StyleEncoder(nn.Module):
    """(B, R, motion_dim) normalised reference latents -> `s_m` (B, style_dim)."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        hidden = cfg.style_dim
        self.proj = nn.Linear(2 * cfg.motion_dim, hidden)  # a latent and its frame-to-frame change
        self.layers = nn.Sequential(TemporalConv(hidden), TemporalConv(hidden))
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, hidden))

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        velocity = torch.diff(ref, dim=1, prepend=ref[:, :1])
        h = self.layers(self.proj(torch.cat([ref, velocity], dim=-1)))  # (B, R, hidden)
        return self.head(torch.cat([h.mean(1), h.std(1, unbiased=False)], dim=-1))
