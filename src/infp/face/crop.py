"""Square face crops that stay steady over a video.

A crop box is (cx, cy, size) in source pixels. Boxes are axis-aligned on purpose: rotating each crop
to level the eyes would erase the head roll that stage 1 must learn to reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

# Box side = SCALE x the larger side of the landmark bounding box: the whole head and some hair,
# as in talking-head data sets (HDTF/VoxCeleb crops). The centre moves up a little (forehead/hair).
CROP_SCALE = 1.8
CROP_SHIFT_UP = 0.06


def face_box(points: np.ndarray, scale: float = CROP_SCALE, shift_up: float = CROP_SHIFT_UP) -> np.ndarray:
    """(cx, cy, size) of the square crop around landmarks (..., N, 2+)."""
    lo, hi = points[..., :2].min(-2), points[..., :2].max(-2)
    size = (hi - lo).max(-1) * scale
    cx = (lo[..., 0] + hi[..., 0]) / 2
    cy = (lo[..., 1] + hi[..., 1]) / 2 - shift_up * size
    return np.stack([cx, cy, size], axis=-1).astype(np.float32)


def smooth_boxes(boxes: np.ndarray, sigma_centre: float = 4.0, sigma_size: float = 12.0) -> np.ndarray:
    """Zero-phase Gaussian smoothing of a (T, 3) box track (sigmas in frames at 25 fps).

    The size is smoothed harder than the centre: zoom jitter is more visible than a slow pan.
    """
    out = boxes.astype(np.float64).copy()
    if len(out) > 1:
        out[:, :2] = gaussian_filter1d(out[:, :2], sigma_centre, axis=0, mode="nearest")
        out[:, 2] = gaussian_filter1d(out[:, 2], sigma_size, axis=0, mode="nearest")
    return out.astype(np.float32)


def box_affine(box: np.ndarray, size: int) -> np.ndarray:
    """2x3 matrix mapping source pixels to crop pixels."""
    cx, cy, side = (float(v) for v in box)
    s = size / side
    return np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]], dtype=np.float64)


def crop_image(image: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Crop and resample a box to (size, size, C); outside the image the border is replicated."""
    scale = size / float(box[2])
    if scale < 0.5:  # shrink first with area averaging, or the bilinear warp aliases
        f = min(1.0, 2 * scale)
        image = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        box = np.array([box[0] * f, box[1] * f, box[2] * f], dtype=np.float32)
    m = box_affine(box, size)
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def to_crop(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Landmarks (N, 3) from source pixels to crop pixels (z scaled like x)."""
    s = size / float(box[2])
    out = points.astype(np.float32).copy()
    out[:, 0] = (points[:, 0] - box[0]) * s + size / 2
    out[:, 1] = (points[:, 1] - box[1]) * s + size / 2
    out[:, 2] = points[:, 2] * s
    return out


@dataclass(frozen=True)
class Jitter:
    """Frame-to-frame motion of a box track, in % of the box side per frame."""

    centre: float
    size: float


def box_jitter(boxes: np.ndarray) -> Jitter:
    """Mean absolute frame-to-frame change of centre and side, relative to the side."""
    if len(boxes) < 2:
        return Jitter(0.0, 0.0)
    d = np.diff(boxes.astype(np.float64), axis=0)
    side = boxes[1:, 2].astype(np.float64)
    return Jitter(
        centre=float(100 * np.mean(np.hypot(d[:, 0], d[:, 1]) / side)),
        size=float(100 * np.mean(np.abs(d[:, 2]) / side)),
    )
