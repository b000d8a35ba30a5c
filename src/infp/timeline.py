"""Helpers on per-frame timelines (speech activity, face found, per-frame arrays, ...)."""

from __future__ import annotations

import numpy as np


def fit_rows(a: np.ndarray, n: int, fill: float = 0) -> np.ndarray:
    """`a` cut or padded with `fill` to n rows (a video decoder may give a frame more or less than
    meta.n_frames; an audio track a few samples more or less than n_frames * SAMPLES_PER_FRAME)."""
    a = np.asarray(a)
    return a[:n] if len(a) >= n else np.concatenate([a, np.full((n - len(a),) + a.shape[1:], fill, a.dtype)])


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of each run of True in a (T,) mask."""
    edges = np.diff(np.concatenate([[0], np.asarray(mask).astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
