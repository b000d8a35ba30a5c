"""Log-mel audio features on the video frame grid: the default input of stage 2's audio encoder.

Nothing to download (DESIGN.md, stage 2). A featurizer turns a 16 kHz track of N samples into
`per_frame * frame_count(N)` feature rows, so video frame t owns rows [per_frame * t, per_frame * (t + 1)).
Log-mel uses a 25 ms window every 10 ms: 4 rows per 40 ms frame, row j centred on sample 160 j + 80,
i.e. the four windows sit evenly inside their frame and look at most 120 samples (7.5 ms) past it,
which keeps streaming latency negligible.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from infp import SAMPLE_RATE
from infp.audio.features import frame_count


class Featurizer(Protocol):
    """(N,) float32 16 kHz track -> (per_frame * T, dim) float32 features."""

    name: str  # identifies the features (a cache key; recorded in stage-2 checkpoints)
    per_frame: int
    dim: int
    context_frames: int  # audio either side of a window that streaming must give for its features

    def __call__(self, track: np.ndarray) -> np.ndarray: ...


def _hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, np.float64) / 700.0)  # HTK


def _mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int, n_fft: int, sr: int = SAMPLE_RATE, fmin: float = 20.0, fmax: float | None = None) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular HTK-mel filters, each normalised to unit area (Slaney)."""
    fmax = sr / 2 if fmax is None else fmax
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = np.maximum(0.0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
    return (tri * (2.0 / (hi - lo))).astype(np.float32)


class LogMel:
    """80 log-mel bands, 25 ms Hann window, 10 ms hop, scaled to roughly unit range."""

    per_frame = 4
    context_frames = 1  # audio either side of a streamed window: covers the 120-sample overhang exactly
    hop = 160
    win = 400

    def __init__(self, n_mels: int = 80):
        self.dim = n_mels
        self.name = f"logmel{n_mels}"

    def __call__(self, track: np.ndarray) -> np.ndarray:
        x = np.asarray(track, np.float32)
        if x.ndim != 1:
            raise ValueError(f"LogMel expects a (N,) track, got shape {x.shape}")
        rows = self.per_frame * frame_count(len(x))
        if rows == 0:
            return np.zeros((0, self.dim), np.float32)
        left = self.win // 2 - self.hop // 2  # centre row j on sample hop * j + hop / 2
        right = self.hop * (rows - 1) + self.win - left - len(x)
        padded = torch.from_numpy(np.pad(x, (left, max(0, right))))
        spec = torch.stft(padded, n_fft=self.win, hop_length=self.hop, window=torch.hann_window(self.win),
                          center=False, return_complex=True)[:, :rows].abs() ** 2  # (F, rows)
        mel = torch.from_numpy(mel_filterbank(self.dim, self.win)) @ spec
        # log10 power floored at -60 dB; (x + 4) / 4 maps speech to about [-0.5, 1.4], silence to -0.5
        return ((torch.log10(mel.clamp_min(1e-10)).clamp_min(-6.0) + 4.0) / 4.0).T.contiguous().numpy()


def featurizer_for(speech_model: str | Path | None) -> Featurizer:
    """The audio features: log-mel, or those of a local wav2vec2/HuBERT/WavLM model directory."""
    if speech_model is None:
        return LogMel()
    from infp.audio.speech_model import SpeechModelFeatures

    return SpeechModelFeatures.from_dir(speech_model)


FLOOR = -0.5  # LogMel's value for silence (its -60 dB floor)


def log_mel_gain(features: np.ndarray, db: float) -> np.ndarray:
    """`LogMel` features of a track made `db` louder (negative: quieter), without recomputing them: a
    gain adds db / 40 to every row (log10 power / 4). Rows at the floor stay there (silence stays
    silence), and nothing falls below it."""
    f = np.asarray(features, np.float32)
    return np.where(f <= FLOOR, f, np.maximum(f + db / 40.0, FLOOR)).astype(np.float32)
