"""Time whitening: the window is diffused with the training windows' temporal spectrum made flat.

Not in the paper. Stage 2's samples match their data's temporal spectrum below ~3 Hz but carry a flat
floor of white noise above it: on the held-out synthetic conversations, a 4000-step CPU model's latents
have 3-9 times the data's power at 5-12 Hz (docs/stage2.md, "Frame-to-frame jitter"), which the
renderer shows as a trembling head and a mouth that moves while listening. Motion is smooth, so in the
latents' own space the high frequencies hold a tiny share of the power and every sampling error there
is large by comparison.

`TimeWhitening` generates y = H x instead of the window x (offsets from the context's last latent,
already whitened across the latent's directions), with H = C^(-1/2) from the (W, W) covariance C of the
training windows along time: y has unit power at every frequency, the diffusion's white noise is as
loud as the data everywhere, and a white error in y maps back through H^-1 = C^(1/2) as an error shaped
like real motion, small where real motion is small. `floor` (relative to C's mean eigenvalue) bounds H's
gain where the data have almost no power. Fitted from data, so H and H^-1 are stored with the weights.
"""

from __future__ import annotations

import torch
from torch import nn

FLOOR = 1e-3  # eigenvalue floor, as a share of the mean eigenvalue of C


class TimeWhitening(nn.Module):
    """y = H x along the time axis of (B, W, z) windows, and its exact inverse (module doc)."""

    def __init__(self, frames: int):
        super().__init__()
        self.register_buffer("filter", torch.eye(frames))  # (W, W): H
        self.register_buffer("inverse", torch.eye(frames))  # H^-1

    @torch.no_grad()
    def fit(self, cov: torch.Tensor, floor: float = FLOOR) -> torch.Tensor:
        """Set H from the (W, W) covariance of training windows along time; returns C's eigenvalues
        (descending) for the log."""
        evals, evecs = torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))
        evals = evals.clamp_min(0) + floor * evals.clamp_min(0).mean()
        self.filter.copy_((evecs * evals.rsqrt()) @ evecs.T)
        self.inverse.copy_((evecs * evals.sqrt()) @ evecs.T)
        return evals.flip(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("vw,bwz->bvz", self.filter.to(x.dtype), x)

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("vw,bwz->bvz", self.inverse.to(y.dtype), y)
