"""Interactive Motion Guider (INFP Sec. 3.2, Fig. 3): conversation audio -> interactive motion features `f_m`.

Two learnable memory banks hold motion patterns: verbal `M_v` (speaking: lips, prosodic head motion)
and non-verbal `M_nv` (listening: nods, smiles, a closed mouth). The agent's own audio `A_self`
retrieves from `M_v` and the partner's `A_other` from `M_nv` by cross-attention; the two retrievals
are added and fused by an MLP. Which track speaks is never labelled: a silent `A_self` retrieves
little verbal motion by itself, and so the same model speaks, listens and switches between them.

The motion style vector `s_m` edits the bank entries through a StyleGAN2 modulated linear layer
(Karras et al. 2020, Eq. 1-3): the weight is scaled per input channel by a style and then
demodulated to unit norm per output channel, so a style changes which motion patterns the banks
offer without changing their scale. `s_m = 0` is the neutral style (the affine map's bias is 1).
"""

from __future__ import annotations

import torch
from torch import nn

from infp.models.attention import Attention, Mlp
from infp.models.motion_config import MotionConfig


class ModulatedLinear(nn.Module):
    """StyleGAN2 modulate/demodulate: (N, D_in) entries, (B, S) style -> (B, N, D_out)."""

    def __init__(self, dim_in: int, dim_out: int, style_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim_out, dim_in) * dim_in**-0.5)
        self.affine = nn.Linear(style_dim, dim_in)
        nn.init.zeros_(self.affine.weight)
        nn.init.ones_(self.affine.bias)  # the neutral style scales every input by 1
        self.demodulate = demodulate

    def forward(self, entries: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale = self.affine(style)  # (B, D_in)
        # Scale the inputs rather than build a (B, D_out, D_in) weight per sample: the same result
        # (StyleGAN2's "fused = False" form) at a fraction of the memory traffic.
        out = torch.einsum("nd,bd,od->bno", entries, scale, self.weight)  # (B, N, D_out)
        if self.demodulate:  # 1 / ||W[o] * scale|| for each output channel, (B, D_out)
            out = out * torch.rsqrt(scale.pow(2) @ self.weight.pow(2).T + 1e-8)[:, None, :]
        return out


class MemoryBank(nn.Module):
    """One bank (`M_v` or `M_nv`): `memory_size` learnable entries of `memory_dim`, style-modulated."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.entries = nn.Parameter(torch.randn(cfg.memory_size, cfg.memory_dim))
        self.modulation = ModulatedLinear(cfg.memory_dim, cfg.memory_dim, cfg.style_dim) if cfg.use_style else None

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        """(B, S) style -> (B, N, memory_dim) entries."""
        if self.modulation is None:
            return self.entries.expand(style.shape[0], -1, -1)
        return self.modulation(self.entries, style)


class InteractiveMotionGuider(nn.Module):
    """(a_self, a_other) (B, T, audio_dim) each, `s_m` (B, style_dim) -> `f_m` (B, T, width)."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.use_memory = cfg.use_memory
        if cfg.use_memory:
            self.verbal = MemoryBank(cfg)  # M_v
            self.nonverbal = MemoryBank(cfg)  # M_nv
            self.read_verbal = Attention(cfg.audio_dim, cfg.heads, kv_dim=cfg.memory_dim)
            self.read_nonverbal = Attention(cfg.audio_dim, cfg.heads, kv_dim=cfg.memory_dim)
        else:  # ablation "w/o motion memory": each track's features go straight on, through its own map
            self.read_verbal = nn.Linear(cfg.audio_dim, cfg.audio_dim)
            self.read_nonverbal = nn.Linear(cfg.audio_dim, cfg.audio_dim)
        self.fuse = Mlp(cfg.audio_dim, cfg.width * 2, cfg.width)

    def forward(self, a_self: torch.Tensor, a_other: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if self.use_memory:
            verbal = self.read_verbal(a_self, self.verbal(style))  # A_self queries M_v
            nonverbal = self.read_nonverbal(a_other, self.nonverbal(style))  # A_other queries M_nv
        else:
            verbal, nonverbal = self.read_verbal(a_self), self.read_nonverbal(a_other)
        return self.fuse(verbal + nonverbal)  # element-wise sum, then the MLP
