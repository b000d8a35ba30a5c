"""Stage-1 training pairs: a source and a driving frame of the same clip, real and synthetic alike.

Self-reenactment (INFP Sec. 3.1): the model re-renders the source with the driving frame's motion and
is scored against the driving frame itself. Clips are decoded once into memory (uint8 crops and their
landmarks at the model's size); each batch is drawn from an explicit `np.random.Generator`, so a run
seeded by (seed, step) draws the same batches after a resume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from infp.data.clip import Clip
from infp.errors import InfpError
from infp.face.expression import mouth_opening
from infp.face.hybrid import Representation, region_mask, represent
from infp.face.topology import keypoint_indices, keypoint_mirror
from infp.runtime import to_tensor  # the image convention lives with stage 1's runtime

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipFrames:
    id: str
    kind: str  # "real" | "synthetic"
    frames: np.ndarray  # (T, S, S, 3) uint8 crops
    points: np.ndarray  # (T, 478, 3) landmarks in crop pixels (NaN where no face)
    usable: np.ndarray  # (U,) indices of frames with a face

    @property
    def n_frames(self) -> int:
        return len(self.frames)


def load_clip_frames(clip: Clip, size: int, max_frames: int | None = None) -> ClipFrames:
    """Decode a clip's crops (resized to `size` when the clip was written at another size)."""
    frames = []
    for i, f in enumerate(clip.frames()):
        if max_frames is not None and i >= max_frames:
            break
        frames.append(f if f.shape[0] == size else cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA))
    points = clip.landmarks()[: len(frames)].astype(np.float32)
    if len(points) != len(frames):
        raise InfpError(f"{len(points)} landmark rows for {len(frames)} frames", clip.path)
    points *= size / clip.meta.size
    usable = np.where(np.isfinite(points[:, 0, 0]))[0]
    return ClipFrames(clip.meta.id, clip.meta.kind, np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8),
                      points, usable)


def load_clips(clips: list[Clip], size: int, progress: bool = False, max_frames: int | None = None) -> list[ClipFrames]:
    """Load every clip with at least two usable frames; the others are skipped and counted."""
    out, skipped = [], []
    for clip in tqdm(clips, desc="loading clips", unit="clip", disable=not progress):
        cf = load_clip_frames(clip, size, max_frames)
        if len(cf.usable) >= 2:
            out.append(cf)
        else:
            skipped.append(clip.meta.id)
    if skipped:
        log.warning("skipped %d clip(s) with fewer than two usable face frames: %s", len(skipped), ", ".join(skipped))
    if not out:
        raise InfpError("no clip with usable face frames in the training data")
    return out


class PairBatch(NamedTuple):
    source: torch.Tensor  # (B, 3, S, S) in [0, 1]
    source_rep: torch.Tensor  # (B, 3, S, S) E_m's input for the source
    driving: torch.Tensor  # (B, 3, S, S) the target
    driving_rep: torch.Tensor  # (B, 3, S, S)
    driving_regions: torch.Tensor  # (B, 1, S, S) in [0, 1]: the driving frame's eyes and lips
    source_points: torch.Tensor  # (B, K, 2) the source's keypoints (topology.keypoint_indices) in [-1, 1]
    driving_points: torch.Tensor  # (B, K, 2) the driving frame's


def keypoints(points: np.ndarray, size: int, mirrored: bool = False) -> np.ndarray:
    """(478, 3) landmarks in crop pixels -> (K, 2) keypoints in grid_sample units [-1, 1]. Mirrored:
    as they are in the horizontally flipped crop, where the face's left and right swap roles."""
    k = points[keypoint_indices(), :2] / size * 2 - 1
    if mirrored:
        k = k[keypoint_mirror()] * np.array([-1.0, 1.0], np.float32)
    return k.astype(np.float32)


def _colour_jitter(rep: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random per-channel gain and offset on E_m's input: motion must not depend on skin or lip colour,
    which would carry identity into the latent (the cross-identity use of stage 2)."""
    gain = rng.uniform(0.75, 1.25, 3)
    offset = rng.uniform(-20, 20, 3)
    return np.clip(rep.astype(np.float32) * gain + offset * (rep > 0), 0, 255).astype(np.uint8)


def clip_probabilities(sizes: np.ndarray, real: np.ndarray, real_fraction: float) -> np.ndarray:
    """How often each clip is drawn: in proportion to its usable frames (`sizes`), the real clips
    (`real`, bool) taking `real_fraction` of the draws when real and synthetic ones are both present."""
    weights = np.asarray(sizes, np.float64).copy()
    if real.any() and (~real).any():
        weights[real] *= real_fraction / weights[real].sum()
        weights[~real] *= (1 - real_fraction) / weights[~real].sum()
    return weights / weights.sum()


def draw_pair(rng: np.random.Generator, frames: np.ndarray, mouths: np.ndarray | None, mouth_pairs: float,
              eyes: np.ndarray | None = None, eye_pairs: float = 0.0) -> tuple[int, int]:
    """(source, driving) among one clip's `frames` (indices into `mouths`); with probability
    `mouth_pairs` the driving frame is drawn in proportion to how far its mouth opening is from the
    source's (`PairSampler` says why). With probability `eye_pairs` it is drawn so for the eyes'
    opening (`eyes`), and the two frames swap half the time: a blink is rare, and a renderer must
    learn both to close an open eye and to open a closed one (a photo's half-closed eyes)."""
    i, j = rng.choice(frames, 2)
    u = rng.random() if mouth_pairs > 0 or eye_pairs > 0 else 1.0
    for values, share, swap in ((mouths, mouth_pairs, False), (eyes, eye_pairs, True)):
        if u < share:
            gap = np.abs(values[frames] - values[i])
            if gap.sum() > 0:
                j = rng.choice(frames, p=gap / gap.sum())
            if swap and rng.random() < 0.5:
                i, j = j, i
            break
        u -= share
    return int(i), int(j)


class PairSampler:
    """Draws batches of (source, driving) pairs; real clips are drawn with probability `real_fraction`
    when both kinds are present (real video is scarce and what the model must serve).

    With `mouth_pairs` q > 0, a share q of the driving frames is drawn with probability proportional
    to how far its mouth opening is from the source's: uniform pairs mostly show two similar mouths,
    and the few pixels of a mouth that opens weigh little in an image loss, so a renderer learns to
    open mouths late (`infp eval imitation` measures it)."""

    def __init__(self, clips: list[ClipFrames], representation: str = "hybrid", real_fraction: float = 0.5,
                 augment: bool = True, mouth_pairs: float = 0.0):
        self.clips = clips
        self.kind = Representation(representation)
        self.augment = augment
        self.mouth_pairs = mouth_pairs
        # (T,) mouth opening of each clip's frames (NaN where no face: never drawn)
        self.mouths = [mouth_opening(c.points) for c in clips] if mouth_pairs > 0 else []
        real = np.array([c.kind == "real" for c in clips])
        self.p = clip_probabilities(np.array([len(c.usable) for c in clips]), real, real_fraction)

    def indices(self, rng: np.random.Generator) -> tuple[int, int, int]:
        """(clip, source frame, driving frame) of the next pair."""
        k = rng.choice(len(self.clips), p=self.p)
        i, j = draw_pair(rng, self.clips[k].usable, self.mouths[k] if self.mouths else None, self.mouth_pairs)
        return int(k), i, j

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        k, i, j = self.indices(rng)
        clip = self.clips[k]
        src, drv = clip.frames[i], clip.frames[j]
        src_rep = represent(src, clip.points[i], self.kind)
        drv_rep = represent(drv, clip.points[j], self.kind)
        regions = region_mask(clip.points[j], drv.shape[0])[..., None]  # (S, S, 1) uint8
        mirrored = False
        if self.augment:
            src_rep, drv_rep = _colour_jitter(src_rep, rng), _colour_jitter(drv_rep, rng)
            if rng.random() < 0.5:  # mirror the whole pair: a face turning left is as likely as right
                src, src_rep, drv, drv_rep, regions = (a[:, ::-1] for a in (src, src_rep, drv, drv_rep, regions))
                mirrored = True
        size = src.shape[0]
        return (src, src_rep, drv, drv_rep, regions, keypoints(clip.points[i], size, mirrored),
                keypoints(clip.points[j], size, mirrored))

    def sample(self, rng: np.random.Generator, batch_size: int) -> PairBatch:
        items = [self._one(rng) for _ in range(batch_size)]
        cols = [np.stack(col) for col in zip(*items)]
        return PairBatch(*(to_tensor(c) for c in cols[:5]), *(torch.from_numpy(c) for c in cols[5:]))
