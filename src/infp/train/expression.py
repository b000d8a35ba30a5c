"""Fitting the expression space (`models/expression_space.py`) of a stage-1 checkpoint on real clips.

Frames are sampled from the clips, encoded by the checkpoint's frozen `E_m` and measured from their
Face Mesh landmarks (mouth opening, eye opening, head pose). A ridge regression reads the measures
from the latents; whole clips are held back to report how well it holds on people it never saw. The
neutral intervals are quantiles of the read-out over the fitted frames: the mouth at most as open as
the `mouth_quantile` of real frames (lips together, as in pauses and on m/b/p), the eyes at least as
open as the `eye_quantile` (not mid-blink, not squinting).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from infp.data.clip import Clip
from infp.data.motion import representations
from infp.face.expression import eye_opening, mouth_opening
from infp.face.pose import head_pose
from infp.models.expression_space import MEASURES, UNBOUNDED, ExpressionConfig, ExpressionSpace
from infp.runtime import ImitatorRuntime

log = logging.getLogger("infp")


def measures(points: np.ndarray) -> np.ndarray:
    """(N, 478, 3) landmarks -> (N, 5) mouth, eyes, yaw, pitch, roll (the order of MEASURES)."""
    lm = np.asarray(points, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pose = head_pose(lm).astype(np.float64)  # (N, 3) yaw, pitch, roll
        return np.column_stack([mouth_opening(lm), eye_opening(lm), pose])


@dataclass
class Frames:
    """Sampled frames: their latents, measures and the clip each came from."""

    z: np.ndarray  # (N, D)
    m: np.ndarray  # (N, K)
    clip: np.ndarray  # (N,) index into the clip list


def sample_frames(runtime: ImitatorRuntime, clips: list[Clip], every: int = 3, batch: int = 64,
                  progress: bool = True) -> Frames:
    """Every `every`-th frame with a face of each clip, encoded and measured."""
    cfg = runtime.cfg
    zs, ms, ids = [], [], []
    for c, clip in enumerate(tqdm(clips, desc="encoding frames", unit="clip", disable=not progress)):
        reps, rows = [], []
        for j, rep in enumerate(representations(clip, cfg.size, cfg.representation, every=every)):
            if rep is not None:
                reps.append(rep)
                rows.append(j)
        if not reps:
            continue
        for s in range(0, len(reps), batch):
            zs.append(runtime.encode_motion(np.stack(reps[s : s + batch])).float().cpu().numpy())
        ms.append(measures(clip.landmarks()[rows]))  # ratios and angles: the same at any crop size
        ids.append(np.full(len(rows), c))
    if not zs:
        raise ValueError("no frame with a face in the clips")
    return Frames(np.concatenate(zs), np.concatenate(ms), np.concatenate(ids))


@dataclass(frozen=True)
class ExpressionFit:
    """How well the read-out holds: per measure, on the fitted clips and on held-back clips."""

    frames: int
    clips: int
    held_clips: int
    r2_fit: dict[str, float]
    r2_held: dict[str, float]  # NaN when no clip was held back
    low: dict[str, float]
    high: dict[str, float]


def _ridge(z: np.ndarray, m: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares m ~ z A^T + b with an L2 penalty on A (z standardised for the penalty)."""
    mu, sd = z.mean(0), z.std(0) + 1e-8
    x = (z - mu) / sd
    a = np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ (m - m.mean(0)))  # (D, K)
    weight = (a / sd[:, None]).T  # (K, D) in raw latent units
    return weight, m.mean(0) - weight @ mu


def _r2(pred: np.ndarray, m: np.ndarray) -> np.ndarray:
    return 1 - ((m - pred) ** 2).sum(0) / ((m - m.mean(0)) ** 2).sum(0).clip(1e-12)


def fit_expression(frames: Frames, mouth_quantile: float = 0.1, eye_quantile: float = 0.25, held_share: float = 0.1,
                   ridge: float = 1e-3, seed: int = 0) -> tuple[ExpressionSpace, ExpressionFit]:
    """The expression space of the frames' latents (module doc)."""
    ok = np.isfinite(frames.m).all(1) & np.isfinite(frames.z).all(1)
    z, m, clip = frames.z[ok].astype(np.float64), frames.m[ok], frames.clip[ok]
    ids = np.unique(clip)
    rng = np.random.default_rng(seed)
    held = rng.permutation(ids)[: int(round(held_share * len(ids)))] if len(ids) >= 5 else ids[:0]
    fit_rows = ~np.isin(clip, held)
    w, b = _ridge(z[fit_rows], m[fit_rows], ridge)
    r2_held = _r2(z[~fit_rows] @ w.T + b, m[~fit_rows]) if (~fit_rows).sum() > 1 else np.full(len(MEASURES), np.nan)
    w, b = _ridge(z, m, ridge)  # the shipped read-out uses every clip
    pred = z @ w.T + b
    low, high = np.full(len(MEASURES), -UNBOUNDED), np.full(len(MEASURES), UNBOUNDED)
    high[MEASURES.index("mouth")] = np.quantile(pred[:, MEASURES.index("mouth")], mouth_quantile)
    low[MEASURES.index("eyes")] = np.quantile(pred[:, MEASURES.index("eyes")], eye_quantile)
    space = ExpressionSpace(ExpressionConfig(motion_dim=z.shape[1]))
    space.set_fit(torch.from_numpy(w), torch.from_numpy(b), torch.from_numpy(z.mean(0)), torch.from_numpy(np.cov(z.T)),
                  torch.from_numpy(low), torch.from_numpy(high))
    named = lambda v: {k: float(x) for k, x in zip(MEASURES, v, strict=True)}  # noqa: E731
    report = ExpressionFit(len(z), len(ids), len(held), named(_r2(pred, m)), named(r2_held),
                           {k: v for k, v in named(low).items() if v > -UNBOUNDED},
                           {k: v for k, v in named(high).items() if v < UNBOUNDED})
    log.info("expression space: %d frames of %d clips; held-back R^2 %s", report.frames, report.clips,
             ", ".join(f"{k} {v:.2f}" for k, v in report.r2_held.items()))
    return space, report


def train_expression(data: list, out, imitator=None, every: int = 3, mouth_quantile: float = 0.1,
                     eye_quantile: float = 0.25, device: str = "cpu", progress: bool = True) -> ExpressionFit:
    """`infp train expression`: fit the expression space of a stage-1 checkpoint (default: the bundled
    one) on the real clips under the `data` folders and write it to `out` as a checkpoint directory."""
    from dataclasses import asdict
    from pathlib import Path

    from infp.data.clip import list_clips
    from infp.data.motion import imitator_fingerprint
    from infp.errors import InfpError
    from infp.pretrained import imitator_dir

    path = Path(imitator) if imitator else imitator_dir()
    clips = [c for d in data for c in list_clips(d) if c.meta.kind == "real"]
    if not clips:
        raise InfpError("no real clip (infp preprocess) under the --data folders: the expression space is fitted "
                        "on real faces only")
    runtime = ImitatorRuntime.from_pretrained(path, device=device)
    frames = sample_frames(runtime, clips, every=every, progress=progress)
    space, fit = fit_expression(frames, mouth_quantile=mouth_quantile, eye_quantile=eye_quantile)
    space.save_pretrained(out, fit={"imitator_fingerprint": imitator_fingerprint(path), "every": every,
                                    "mouth_quantile": mouth_quantile, "eye_quantile": eye_quantile,
                                    "clip_ids": [c.meta.id for c in clips], **asdict(fit)})
    return fit
