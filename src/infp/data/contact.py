"""Contact sheets: rows of labelled frames, for looking at clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from infp.fsutil import atomic_file


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB uint8 image as PNG, atomically (OpenCV wants BGR)."""
    with atomic_file(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def pick(mask: np.ndarray, score: np.ndarray, k: int) -> list[int]:
    """Up to `k` frames where `mask` holds, spread over time, each the best `score` of its stretch."""
    idx = np.where(mask)[0]
    if len(idx) == 0:
        return []
    return [int(c[np.argmax(score[c])]) for c in np.array_split(idx, min(k, len(idx)))]


def label(img: np.ndarray, text: str) -> np.ndarray:
    out = img.copy()
    scale = img.shape[0] / 512
    for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(out, text, (8, int(30 * scale) + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
    return out


def sheet(rows: list[list[np.ndarray]], size: int) -> np.ndarray:
    """Rows of equal-size images into one image; short rows padded with black."""
    width = max(len(r) for r in rows)
    blank = np.zeros((size, size, 3), np.uint8)
    return np.concatenate([np.concatenate(r + [blank] * (width - len(r)), 1) for r in rows], 0)
