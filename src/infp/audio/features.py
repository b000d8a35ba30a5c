"""Per-video-frame audio features, on the one frame grid every layer shares.

Video frame t covers the audio samples [t * sr / fps, (t + 1) * sr / fps): at 16 kHz and 25 fps that is
640 samples per frame. A track of N samples spans `frame_count(N)` frames (a partial last frame
counts), so the output video is exactly as long as its audio (DESIGN.md, "Output video").
"""

from __future__ import annotations

import numpy as np

from infp import FPS, SAMPLE_RATE


def frame_count(n_samples: int, sr: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Video frames needed to cover `n_samples` audio samples: ceil(n_samples * fps / sr)."""
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    # Integer arithmetic: float ceil can be off by one frame on exact multiples.
    return int(-(-int(n_samples) * int(fps) // int(sr)))


def frame_bounds(n_samples: int, sr: int = SAMPLE_RATE, fps: int = FPS) -> np.ndarray:
    """(T + 1,) sample index where each frame starts, the last entry being `n_samples`."""
    t = np.arange(frame_count(n_samples, sr, fps) + 1, dtype=np.int64)
    return np.minimum(t * int(sr) // int(fps), int(n_samples))


def frame_rms(audio_16k: np.ndarray, fps: int = FPS, sr: int = SAMPLE_RATE) -> np.ndarray:
    """(T,) float32 root-mean-square energy of a (N,) track over each video frame's samples.

    A partial last frame is averaged over the samples it has, so a word cut off by the end of the
    track is not damped by padding.
    """
    audio = np.asarray(audio_16k)
    if audio.ndim != 1:
        raise ValueError(f"frame_rms expects a (N,) track, got shape {audio.shape}")
    bounds = frame_bounds(audio.shape[0], sr, fps)
    if bounds.shape[0] < 2:
        return np.zeros(0, dtype=np.float32)
    # Cumulative sum of squares in float64: one pass, exact enough for hours of audio.
    energy = np.concatenate([[0.0], np.cumsum(audio.astype(np.float64) ** 2)])
    sums = energy[bounds[1:]] - energy[bounds[:-1]]
    counts = np.maximum(np.diff(bounds), 1)
    return np.sqrt(np.maximum(sums, 0.0) / counts).astype(np.float32)
