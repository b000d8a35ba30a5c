"""Conditional diffusion transformer (INFP Sec. 3.2, Fig. 3): noisy motion latents -> predicted noise.

Each of the 4 blocks runs self-attention over the window's latents, then motion attention (queries =
the noisy latents, keys/values = the interactive motion features `f_m`; each frame attends to the
features of its own moment, +- `motion_band` frames, as FaceFormer's alignment bias does: without it
attention over `f_m` is blind to time and a latent frame cannot find its own audio), then temporal attention on
the last `context` motion latents of the previous window, which is what makes consecutive windows join
without a jump, then an MLP. The diffusion timestep enters DiT-style through adaptive layer norm with
zero-initialised gates (adaLN-Zero, Peebles & Xie 2023), and the output projection starts at zero, so
an untrained network predicts zero noise. The network knows nothing about noise schedules: the sampler
in `infp.diffusion` drives it.

With `audio_film` (not in the paper) the adaptive layer norm also reads each frame's own `f_m`: the
conditioning vector becomes per frame, timestep embedding + a linear map of `f_m` at that frame, so the
audio can scale the latents' features, not only add to them (EDGE conditions its dance diffusion the
same way, FiLM beside cross-attention). Why: a listener's nod has a random onset and phase, so the
audio cannot say what the latents are at a nod, only that they swing more there; a denoiser has to
let through more of what it sees in x_t where the audio expects a nod, a product of the two that
attention forms only indirectly. Measured, it did not bring nods at 4000 steps (docs/stage2.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from infp.models.attention import Attention, Mlp, band_mask, init_linear
from infp.models.motion_config import MotionConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """(B,) diffusion timesteps -> (B, dim) sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, W, D); shift and scale (B, 1, D) for the whole window or (B, W, D) per frame."""
    return x * (1 + scale) + shift


class DenoiserBlock(nn.Module):
    """self-attention -> motion attention -> temporal attention -> MLP, on (B, W, width)."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        d = cfg.width
        self.norm_self = nn.LayerNorm(d, elementwise_affine=False)
        self.self_attn = Attention(d, cfg.heads)
        self.norm_motion = nn.LayerNorm(d)
        self.motion_attn = Attention(d, cfg.heads)  # keys/values: f_m
        self.norm_temporal = nn.LayerNorm(d)
        self.temporal_attn = Attention(d, cfg.heads)  # keys/values: the previous window's latents
        self.norm_mlp = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = Mlp(d, int(d * cfg.mlp_ratio))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))  # shift, scale, gate for attention and MLP

    def forward(self, x: torch.Tensor, c: torch.Tensor, f_m: torch.Tensor, prev: torch.Tensor,  # c: (B, 1 or W, D)
                band: torch.Tensor | None = None) -> torch.Tensor:
        s1, c1, g1, s2, c2, g2 = self.ada(c).chunk(6, dim=-1)  # (B, 1 or W, D) each
        x = x + g1 * self.self_attn(_modulate(self.norm_self(x), s1, c1))
        x = x + self.motion_attn(self.norm_motion(x), f_m, band)
        x = x + self.temporal_attn(self.norm_temporal(x), prev)
        return x + g2 * self.mlp(_modulate(self.norm_mlp(x), s2, c2))


class DiffusionTransformer(nn.Module):
    """(x_t (B, W, motion_dim), t (B,), f_m (B, W, width), prev (B, C, width)) -> noise (B, W, motion_dim).

    `prev` is the previous window's latents already embedded (`embed_context`), so a dropped context
    can be one learned null sequence of the same shape.
    """

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        d = cfg.width
        self.freq_dim = 256
        self.inp = nn.Linear(cfg.motion_dim, d)
        self.pos = nn.Parameter(torch.zeros(1, cfg.window, d))
        self.time = nn.Sequential(nn.Linear(self.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.film = nn.Linear(d, d) if cfg.audio_film else None  # f_m at each frame -> its adaLN input
        self.ctx_inp = nn.Linear(cfg.motion_dim, d)
        self.ctx_pos = nn.Parameter(torch.zeros(1, cfg.context, d))
        self.blocks = nn.ModuleList(DenoiserBlock(cfg) for _ in range(cfg.blocks))
        self.motion_band = cfg.motion_band
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.ada_out = nn.Sequential(nn.SiLU(), nn.Linear(d, 2 * d))
        self.out = nn.Linear(d, cfg.motion_dim)
        self._init()

    def _init(self) -> None:
        init_linear(self)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.ctx_pos, std=0.02)
        for lin in (self.time[0], self.time[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:  # adaLN-Zero: every block starts as the identity on its gated paths
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for lin in (self.ada_out[-1], self.out):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)

    def embed_context(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, motion_dim) previous-window latents -> (B, C, width) keys/values for temporal attention."""
        return self.ctx_inp(latents) + self.ctx_pos

    def forward(self, x: torch.Tensor, t: torch.Tensor, f_m: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        h = self.inp(x) + self.pos[:, : x.shape[1]]  # (B, W, D)
        c = self.time(timestep_embedding(t, self.freq_dim))[:, None]  # (B, 1, D)
        if self.film is not None:
            c = c + self.film(f_m)  # (B, W, D)
        band = None if self.motion_band < 0 else band_mask(x.shape[1], self.motion_band, x.device)
        for block in self.blocks:
            h = block(h, c, f_m, prev, band)
        shift, scale = self.ada_out(c).chunk(2, dim=-1)
        return self.out(_modulate(self.norm_out(h), shift, scale))
