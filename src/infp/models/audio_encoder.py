"""Audio encoder (INFP Sec. 3.2): per-frame features of one conversation track.

Both tracks, `A_self` and `A_other`, pass through this one encoder (shared weights): what a track
means for the motion is decided afterwards by which memory bank it queries, never by a role label.
Input rows come from a featurizer (`infp.audio.mel.LogMel` by default, 4 rows per video frame, or a
local wav2vec2/HuBERT model, 2 rows per frame); the rows of each 40 ms frame are stacked into one
vector, so the output lies exactly on the 25 fps video grid.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from infp.models.attention import TemporalConv
from infp.models.motion_config import MotionConfig


class AudioEncoder(nn.Module):
    """(B, per_frame * T, F) feature rows -> (B, T, audio_dim); each output frame sees
    +-2 (1 + d + ... + d^(L-1)) frames of audio for L layers and dilation growth d."""

    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.per_frame = cfg.audio_per_frame
        self.proj = nn.Sequential(
            nn.Linear(cfg.audio_per_frame * cfg.audio_input_dim, cfg.audio_dim), nn.GELU(approximate="tanh"),
            nn.Linear(cfg.audio_dim, cfg.audio_dim),
        )
        # a few 3-tap convolutions: +-80 ms of context per layer for syllable-scale mouth shapes, or with
        # a dilation growing by `audio_dilation` per layer, up to a second: when did the partner stop?
        self.layers = nn.Sequential(*(TemporalConv(cfg.audio_dim, dilation=cfg.audio_dilation**i)
                                      for i in range(cfg.audio_layers)))
        self.norm = nn.LayerNorm(cfg.audio_dim)

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        x = rearrange(rows, "b (t k) f -> b t (k f)", k=self.per_frame)
        return self.norm(self.layers(self.proj(x)))
