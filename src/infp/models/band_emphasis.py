"""Band emphasis: an invertible temporal filter that makes a window's nod band louder for the diffusion.

Not in the paper. A diffusion model removes detail in order of its power: at a given noise level the
low-power parts of a window are already drowned, so they are decided in the last few sampling steps.
A listener's nod (1-4 Hz, a few degrees of pitch) is such a part of the motion latents, and its
timing is random, so the audio says only that the nod band should be *louder* around the end of the
partner's sentence. Trained on the plain latents, the stage-2 models let the same nod-band amplitude
through with and without the audio, at every noise level (docs/stage2.md): they never nod.

`BandEmphasis` generates y = H x instead of the window x, with H = I + k (G_s1 - G_s2): G_s a Gaussian
smoothing along time (rows renormalised at the window's edges, so H keeps constants), their difference
a band-pass whose gain peaks near 2 Hz at 25 fps. The band is then 1 + k times louder in y: its
signal-to-noise ratio is (1 + k)^2 times higher at every noise level, the nod is decided in earlier,
coarser steps, and the clean-latent loss weighs its errors (1 + k)^2 times more. H is well conditioned
(singular values 0.99-3.1 for k = 3 over 50 frames), so the sampler's y maps back exactly, by H^-1.
"""

from __future__ import annotations

import torch
from torch import nn

SIGMAS = (1.5, 5.0)  # frames: the band-pass's two Gaussian widths; gain peaks at about 2 Hz at 25 fps


def _smoothing(frames: int, sigma: float) -> torch.Tensor:
    """(frames, frames) Gaussian smoothing along time, each row renormalised to sum 1 (edges included)."""
    i = torch.arange(frames, dtype=torch.float64)
    g = torch.exp(-((i[:, None] - i[None]) ** 2) / (2 * sigma**2))
    return g / g.sum(1, keepdim=True)


class BandEmphasis(nn.Module):
    """y = H x along the time axis of (B, W, z) windows, and its exact inverse (module doc)."""

    def __init__(self, frames: int, emphasis: float, sigmas: tuple[float, float] = SIGMAS):
        super().__init__()
        if emphasis < 0:
            raise ValueError(f"band emphasis must be >= 0, got {emphasis}")
        h = torch.eye(frames, dtype=torch.float64) + emphasis * (_smoothing(frames, sigmas[0]) - _smoothing(frames, sigmas[1]))
        # Derived from the config, so not stored in checkpoints (persistent=False).
        self.register_buffer("filter", h.float(), persistent=False)  # (W, W)
        self.register_buffer("inverse", torch.linalg.inv(h).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("vw,bwz->bvz", self.filter.to(x.dtype), x)

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        return torch.einsum("vw,bwz->bvz", self.inverse.to(y.dtype), y)
