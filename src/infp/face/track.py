"""Face tracking over a whole video: landmarks per frame, short gaps filled, steady crop boxes.

Frames where MediaPipe loses the face (motion blur, a hand, a turn away) are common in real video.
Gaps up to `max_gap_s` are filled by linear interpolation of the landmarks (held at the ends);
longer gaps stay NaN and are reported, so the preprocessor can cut the video around them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from infp import FPS
from infp.face.crop import Jitter, box_jitter, face_box, smooth_boxes
from infp.face.landmarks import FaceMesh
from infp.timeline import runs
from infp.video import iter_frames, probe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FaceTrack:
    landmarks: np.ndarray  # (T, 478, 3) source pixels; NaN inside long gaps
    detected: np.ndarray  # (T,) bool: MediaPipe found the face in this very frame
    boxes: np.ndarray  # (T, 3) smoothed (cx, cy, size) crop boxes; NaN inside long gaps
    long_gaps: list[tuple[int, int]]  # [start, end) frame ranges left unfilled
    fps: float

    @property
    def found(self) -> np.ndarray:
        """(T,) bool: a usable face (detected or interpolated)."""
        return np.isfinite(self.landmarks[:, 0, 0])

    def jitter(self) -> Jitter:
        """Frame-to-frame crop motion over the usable frames."""
        ok = self.found
        return box_jitter(self.boxes[ok]) if ok.any() else Jitter(float("nan"), float("nan"))


def fill_gaps(landmarks: np.ndarray, max_gap: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Interpolate NaN runs of at most `max_gap` frames; returns (filled copy, long gaps)."""
    out = landmarks.copy()
    missing = ~np.isfinite(out[:, 0, 0])
    if missing.all():
        return out, [(0, len(out))] if len(out) else []
    t = np.arange(len(out))
    ok = ~missing
    long_gaps = []
    for s, e in zip(*runs(missing)):
        if e - s > max_gap:
            long_gaps.append((s, e))
            continue
        flat = out.reshape(len(out), -1)
        for j in range(flat.shape[1]):  # np.interp holds the end values at the video's edges
            flat[s:e, j] = np.interp(t[s:e], t[ok], flat[ok, j])
    return out, long_gaps


def region_of(frame: np.ndarray, region: tuple[float, float] | None) -> np.ndarray:
    """The vertical strip [x0, x1) of a frame, as fractions of its width (None: the whole frame)."""
    if region is None:
        return frame
    w = frame.shape[1]
    return frame[:, int(round(region[0] * w)) : int(round(region[1] * w))]


def track_video(path: str | Path, max_gap_s: float = 0.5, max_frames: int | None = None, progress: bool = False,
                region: tuple[float, float] | None = None) -> FaceTrack:
    """Track the largest face through a video resampled to 25 fps. `region`: only in that strip of
    every frame (`region_of`; e.g. one person of a side-by-side recording), landmarks in its pixels."""
    info = probe(path)
    pts = []
    with FaceMesh(static=False) as mesh:
        frames = iter_frames(path, fps=FPS)
        total = info.n_frames_at(FPS) if max_frames is None else min(max_frames, info.n_frames_at(FPS))
        for i, (_, frame) in enumerate(tqdm(frames, total=total, unit="frame", disable=not progress, desc=Path(path).name)):
            if max_frames is not None and i >= max_frames:
                break
            faces = mesh.detect(np.ascontiguousarray(region_of(frame, region)))
            pts.append(faces[0].points if faces else np.full((478, 3), np.nan, np.float32))
    raw = np.stack(pts) if pts else np.zeros((0, 478, 3), np.float32)
    detected = np.isfinite(raw[:, 0, 0])
    filled, long_gaps = fill_gaps(raw, int(round(max_gap_s * FPS)))
    for s, e in long_gaps:
        log.warning("%s: no face from %.2f s to %.2f s (%d frames)", path, s / FPS, e / FPS, e - s)
    boxes = np.full((len(filled), 3), np.nan, np.float32)
    for s, e in zip(*runs(np.isfinite(filled[:, 0, 0]))):  # smooth each continuous stretch on its own
        boxes[s:e] = smooth_boxes(face_box(filled[s:e]))
    return FaceTrack(filled, detected, boxes, long_gaps, FPS)
