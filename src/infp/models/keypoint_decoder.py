"""Keypoint decoder: the motion latent read out as facial keypoints (our addition to INFP Sec. 3.1).

`F` alone has to learn, from FiLM on a feature volume, how 32 numbers become a flow that moves lips,
lids and outline; on the little compute this project has, it barely learned it (docs/stage1.md).
Landmarks, though, can be read from the frozen latent almost linearly (held-out mouth opening r
0.60 / 0.87). So this MLP maps `z` to the 2D positions of the keypoints of
`infp.face.topology.keypoint_indices()` (`keypoint_layout`), trained against the Face Mesh landmarks; the source's and
the driving frame's keypoints then give `F` a dense prior flow (`warping.keypoint_flow`) that it
only has to refine. The keypoints come from the latent, not from a detector, so stage 2's generated
latents drive them as well.
"""

from __future__ import annotations

import torch
from torch import nn

from infp.models.config import ImitatorConfig
from infp.models.keypoint_layout import N_KEYPOINTS


class KeypointDecoder(nn.Module):
    """(B, motion_dim) latent -> (B, K, 2) keypoints in grid_sample units ([-1, 1], x then y).

    The latent is standardised first by stored per-dimension statistics: E_m's dimensions differ
    tenfold in spread (std 0.03 to 0.3 in the bundled model), which a plain MLP fits badly (2.3 px
    against 1.7 px held-out error, measured). `set_input_stats` sets them from a frozen E_m's latents;
    they stay 0 and 1 otherwise."""

    def __init__(self, cfg: ImitatorConfig):
        super().__init__()
        width = cfg.keypoint_hidden
        self.register_buffer("z_mean", torch.zeros(cfg.motion_dim))
        self.register_buffer("z_std", torch.ones(cfg.motion_dim))
        self.net = nn.Sequential(
            nn.Linear(cfg.motion_dim, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
            nn.Linear(width, 2 * N_KEYPOINTS),
        )

    @torch.no_grad()
    def set_input_stats(self, z: torch.Tensor) -> None:
        """z: (N, motion_dim) latents of many frames."""
        self.z_mean.copy_(z.mean(0))
        self.z_std.copy_(z.std(0).clamp_min(1e-4))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net((z - self.z_mean) / self.z_std).view(len(z), -1, 2)  # (B, K, 2)
