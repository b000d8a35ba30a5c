"""Dyadic motion metrics, as the listening / interactive-head literature compares on them.

The definitions follow DIM (Boese0601/Dyadic-Interaction-Modeling: code/mymetrics.py and
code/metrics/eval_utils.py) and DualTalk (metric/metric.py), re-implemented here in plain
numpy/scipy so that our numbers sit next to theirs without torch or sklearn:

- FD: Frechet distance between Gaussian statistics (frame mean, frame covariance) of the GT and
  generated motion of one clip, averaged over clips.
- pFD (paired FD): the same, on the frame-wise concatenation [other, motion], so that the
  coupling between the interlocutor and the motion counts as well.
- MSE: mean squared error over frames and dimensions, averaged over clips.
- SID: diversity, as the entropy (bits) of the histogram of generated frames over k-means
  clusters fitted on all GT frames (DIM's pooled version); the GT's own SID is the reference.
- Var: DualTalk's variance, per clip the mean over dimensions of the variance over frames.
- rPCC: |PCC(gt, other) - PCC(pred, other)|, how far the generated motion's correlation with
  the interlocutor is from the GT's.
- Fast power (ours, not in DIM/DualTalk): the generated motion's power above 5 Hz over the GT's,
  per clip (Hann-windowed periodogram of each mean-removed dimension, summed over dimensions and
  over the clip's runs of frames measured in both; a face gap is not joined across).
  Real motion holds little power there; a sampler's frame-to-frame jitter is a flat floor across
  it (docs/stage2.md, "Frame-to-frame jitter"). 1 = as smooth as the GT.

This project's adaptation: in DIM/DualTalk `other` is the partner's face motion. In infp the
partner has no face in the clip format, so callers pass the per-frame loudness of the two audio
tracks, (T, 2), as `other`. pFD then compares [loudness, motion] statistics, and rPCC, whose
`other` is then narrower than the motion, averages |r_gt(d, e) - r_pred(d, e)| over every pair of
motion dimension d and loudness column e (pairs with a constant series are skipped). When `other`
has the motion's shape, rPCC is the literature's PCC over the flattened arrays.

Frames with a NaN (or inf) in gt, pred or other are dropped jointly within a clip; a clip with
fewer than 2 valid frames contributes nothing, and a metric that no clip defines is NaN.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg
from scipy.cluster.vq import kmeans2, vq

from infp import FPS
from infp.timeline import runs

NAN = float("nan")


def _as_frames(x: np.ndarray) -> np.ndarray:
    """(T, D) float64; a (T,) series becomes one dimension, (T, 1)."""
    a = np.asarray(x, np.float64)
    if a.ndim == 1:
        return a[:, None]
    if a.ndim != 2:
        raise ValueError(f"expected a (T, D) or (T,) array, got shape {a.shape}")
    return a


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu (D,), cov (D, D)) of a sequence (T, D): the frame mean and the frame covariance
    (np.cov, ddof=1), the statistics FD compares. A (T,) sequence counts as D = 1."""
    a = _as_frames(x)  # (T, D)
    return a.mean(axis=0), np.atleast_2d(np.cov(a, rowvar=False))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, eps: float = 1e-6) -> float:
    """|mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr(sqrtm(C1 C2)): the Frechet (2-Wasserstein) distance
    between two Gaussians. sqrtm's real part is used; when it is not finite, eps is added to both
    diagonals and it is retried (as the FID reference code does). Tiny negative results from
    rounding are clamped to 0."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    c1, c2 = np.atleast_2d(np.asarray(cov1, np.float64)), np.atleast_2d(np.asarray(cov2, np.float64))
    if mu1.shape != mu2.shape or c1.shape != c2.shape or c1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched Gaussian shapes: {mu1.shape}, {c1.shape} vs {mu2.shape}, {c2.shape}")
    with warnings.catch_warnings():
        # Singular covariances (constant dimensions) are common and handled by the retry below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(c1 @ c2)
        if not np.isfinite(covmean).all():
            off = eps * np.eye(c1.shape[0])
            covmean = linalg.sqrtm((c1 + off) @ (c2 + off))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    d = float(diff @ diff + np.trace(c1) + np.trace(c2) - 2.0 * np.trace(covmean))
    return max(d, 0.0)


def _entropy_bits(labels: np.ndarray, k: int) -> float:
    """-sum p log2 p over the non-empty bins of the label histogram."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(max(-(p * np.log2(p)).sum(), 0.0))


def sid(gt_frames: np.ndarray, pred_frames: np.ndarray, k: int, seed: int = 0) -> tuple[float, float]:
    """(generated SID, GT reference SID) in bits: k-means with k clusters on all GT frames (N, D),
    every generated frame (M, D) assigned to its nearest GT centre, entropy of the assignment
    histogram. Higher means more diverse; the GT's own SID is what to compare with (at most
    log2 k). k is clipped to the number of distinct GT frames; k-means++ with `seed` makes it
    deterministic. NaN when either side has no frames."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    gt, pred = _as_frames(gt_frames), _as_frames(pred_frames)  # (N, D), (M, D)
    if not len(gt) or not len(pred):
        return NAN, NAN
    if gt.shape[1] != pred.shape[1]:
        raise ValueError(f"GT frames have {gt.shape[1]} dims, generated {pred.shape[1]}")
    k = int(min(k, len(np.unique(gt, axis=0))))
    with warnings.catch_warnings():
        # An empty cluster only means fewer effective bins; the entropy is still defined.
        warnings.simplefilter("ignore", UserWarning)
        centres, _ = kmeans2(gt, k, minit="++", seed=seed)  # (k, D)
    pred_labels, _ = vq(pred, centres)
    gt_labels, _ = vq(gt, centres)
    return _entropy_bits(pred_labels, k), _entropy_bits(gt_labels, k)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """PCC of two 1-D series; NaN when either is constant."""
    a, b = a - a.mean(), b - b.mean()
    den = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / den) if den > 0 else NAN


def _is_constant(x: np.ndarray) -> bool:
    return bool(np.ptp(x) == 0)


def _valid_clip(
    gt: np.ndarray, pred: np.ndarray, other: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The clip's frames without NaN/inf in any of the three, or None with fewer than 2 left."""
    g, p, o = _as_frames(gt), _as_frames(pred), _as_frames(other)  # (T, D), (T, D), (T, E)
    if g.shape != p.shape:
        raise ValueError(f"GT {g.shape} and generated {p.shape} motion differ in shape")
    if len(o) != len(g):
        raise ValueError(f"`other` has {len(o)} frames, motion {len(g)}")
    ok = np.isfinite(g).all(1) & np.isfinite(p).all(1) & np.isfinite(o).all(1)
    if ok.sum() < 2:
        return None
    return g[ok], p[ok], o[ok]


def _rpcc_valid(g: np.ndarray, p: np.ndarray, o: np.ndarray) -> float:
    if o.shape == g.shape:
        # The literature's form: one PCC over the flattened arrays.
        return abs(_pearson(g.ravel(), o.ravel()) - _pearson(p.ravel(), o.ravel()))
    # This project's adaptation for a narrower `other`: per (motion dim, other column) pair.
    diffs = []
    for e in range(o.shape[1]):
        oe = o[:, e]
        if _is_constant(oe):
            continue
        for d in range(g.shape[1]):
            gd, pd = g[:, d], p[:, d]
            if _is_constant(gd) or _is_constant(pd):
                continue
            diffs.append(abs(_pearson(gd, oe) - _pearson(pd, oe)))
    return float(np.mean(diffs)) if diffs else NAN


def rpcc(gt: np.ndarray, pred: np.ndarray, other: np.ndarray) -> float:
    """Residual PCC of one clip, |PCC(gt, other) - PCC(pred, other)|: how far the generated
    motion's coupling to the interlocutor is from the GT's (lower is better, 0 = same coupling).
    gt, pred (T, D); other (T, E). Same shape as gt: PCC over the flattened arrays (DIM/DualTalk).
    Other width: mean over (d, e) pairs of |r_gt(d, e) - r_pred(d, e)|, skipping pairs with a
    constant series. NaN frames are dropped jointly; NaN when nothing is left to correlate."""
    clip = _valid_clip(gt, pred, other)
    return NAN if clip is None else _rpcc_valid(*clip)


@dataclass(frozen=True)
class DyadicScores:
    """The dyadic metrics of a set of clips; NaN where no clip defines one."""

    fd: float  # FD(gt, pred), mean over clips
    paired_fd: float  # FD([other, gt], [other, pred]), mean over clips
    mse: float  # mean squared error, mean over clips
    sid: float  # k-means diversity (bits) of the generated frames
    sid_gt: float  # the same for the GT frames, the reference
    var: float  # DualTalk Var of the generated motion
    var_gt: float  # DualTalk Var of the GT motion
    rpcc: float  # residual PCC against `other`, mean over clips
    fast: float  # generated / GT power above 5 Hz, mean over clips (1 = as smooth as the GT)


DYADIC_ROWS: dict[str, tuple[str, str]] = {
    "fd": ("FD", "Frechet distance of per-clip GT vs generated motion statistics; lower is better."),
    "paired_fd": ("pFD", "FD of [interlocutor, motion] statistics, coupling included (here: loudness); lower is better."),
    "mse": ("MSE", "mean squared error to the GT motion; lower is better."),
    "sid": ("SID", "diversity: entropy (bits) over k-means clusters of GT frames; compare with SID GT (higher = varied)."),
    "sid_gt": ("SID GT", "the GT's own SID, the reference for SID (at most log2 k)."),
    "var": ("Var", "mean per-dim variance over frames of the generated motion; closer to Var GT is better."),
    "var_gt": ("Var GT", "the same variance of the GT motion, the reference for Var."),
    "rpcc": ("rPCC", "|PCC(GT, partner signal) - PCC(generated, partner signal)|; lower is better, 0 = GT's coupling."),
    "fast": ("fast power", "generated / GT power above 5 Hz (frame-to-frame jitter); 1 = as smooth as the GT."),
}


FAST_HZ = 5.0  # above this, the "fast power" (module doc)
FAST_MIN_RUN = 10  # frames: shorter runs between face gaps hold too few periods of 5 Hz (5 frames) to count


def fast_power(x: np.ndarray, fps: float = FPS, above: float = FAST_HZ) -> float:
    """Power of a (T, D) motion sequence above `above` Hz: each dimension's mean removed, Hann
    window, periodogram (squared rFFT magnitudes / T), summed over frequencies and dimensions."""
    a = _as_frames(x)
    spec = np.abs(np.fft.rfft((a - a.mean(0)) * np.hanning(len(a))[:, None], axis=0)) ** 2 / len(a)  # (F, D)
    return float(spec[np.fft.rfftfreq(len(a), 1 / fps) >= above].sum())


def fast_power_ratio(gt: np.ndarray, pred: np.ndarray, fps: float = FPS) -> float:
    """fast_power(pred) / fast_power(gt), each summed over the runs of at least FAST_MIN_RUN frames
    finite in both: frames on either side of a gap (a face not found) are not joined, since the jump
    between them would count as fast motion. NaN when the GT has no fast power there."""
    g, p = _as_frames(gt), _as_frames(pred)
    starts, ends = runs(np.isfinite(g).all(1) & np.isfinite(p).all(1))
    spans = [(s, e) for s, e in zip(starts, ends) if e - s >= FAST_MIN_RUN]
    total = sum(fast_power(g[s:e], fps) for s, e in spans)
    return sum(fast_power(p[s:e], fps) for s, e in spans) / total if total > 0 else NAN


def _mean(values: list[float]) -> float:
    """Plain mean over the clips that define a value; NaN when none does."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else NAN


def dyadic_scores(
    gt: Sequence[np.ndarray], pred: Sequence[np.ndarray], other: Sequence[np.ndarray], k: int, seed: int = 0
) -> DyadicScores:
    """All dyadic metrics over clips: gt[i], pred[i] (T_i, D) motion, other[i] (T_i, E) the
    interlocutor signal of the same frames (in infp, the two tracks' loudness). k is the SID
    cluster count (DIM: 40 for expression, 20 for pose); seed makes k-means deterministic."""
    if not len(gt) == len(pred) == len(other):
        raise ValueError(f"clip counts differ: gt {len(gt)}, pred {len(pred)}, other {len(other)}")
    fd, pfd, mse, var, var_gt, rp, fast = [], [], [], [], [], [], []
    gt_frames: list[np.ndarray] = []
    pred_frames: list[np.ndarray] = []
    for g0, p0, o0 in zip(gt, pred, other):
        clip = _valid_clip(g0, p0, o0)
        if clip is None:
            continue
        g, p, o = clip  # (T, D), (T, D), (T, E)
        fd.append(frechet_distance(*gaussian_stats(g), *gaussian_stats(p)))
        og, op = np.concatenate([o, g], 1), np.concatenate([o, p], 1)  # (T, E + D)
        pfd.append(frechet_distance(*gaussian_stats(og), *gaussian_stats(op)))
        mse.append(float(np.mean((g - p) ** 2)))
        var.append(float(np.var(p, axis=0).mean()))
        var_gt.append(float(np.var(g, axis=0).mean()))
        rp.append(_rpcc_valid(g, p, o))
        fast.append(fast_power_ratio(g0, p0))  # the unfiltered clip: its gaps split it (fast_power_ratio)
        gt_frames.append(g)
        pred_frames.append(p)
    if gt_frames:
        s, s_gt = sid(np.concatenate(gt_frames), np.concatenate(pred_frames), k, seed)
    else:
        s, s_gt = NAN, NAN
    return DyadicScores(
        fd=_mean(fd), paired_fd=_mean(pfd), mse=_mean(mse), sid=s, sid_gt=s_gt,
        var=_mean(var), var_gt=_mean(var_gt), rpcc=_mean(rp), fast=_mean(fast),
    )
