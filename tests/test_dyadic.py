"""Dyadic metrics (infp.eval.dyadic) against hand-computed values."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest

from infp.eval.dyadic import (
    DYADIC_ROWS,
    DyadicScores,
    dyadic_scores,
    fast_power,
    fast_power_ratio,
    frechet_distance,
    gaussian_stats,
    rpcc,
    sid,
)


def _fd(a: np.ndarray, b: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(a), *gaussian_stats(b))


def _two_point(m: float, s: float, n: int) -> np.ndarray:
    """(2n,) [m-s, m+s] repeated: mean m, ddof=1 variance s^2 * 2n / (2n - 1)."""
    return np.tile([m - s, m + s], n)


def test_gaussian_stats_shapes():
    mu, cov = gaussian_stats(np.arange(6.0))
    assert mu.shape == (1,) and cov.shape == (1, 1)
    assert cov[0, 0] == pytest.approx(3.5)  # ddof=1 variance of 0..5
    mu, cov = gaussian_stats(np.random.default_rng(0).normal(size=(20, 3)))
    assert mu.shape == (3,) and cov.shape == (3, 3)


def test_fd_self_zero_and_symmetric():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(1.0, 2.0, size=(150, 4)) @ rng.normal(size=(4, 4))
    assert _fd(a, a) == pytest.approx(0.0, abs=1e-8)
    assert _fd(a, b) == pytest.approx(_fd(b, a), rel=1e-8)
    assert _fd(a, b) > 0


def test_fd_one_dimension():
    n = 5
    c2 = 2 * n / (2 * n - 1)  # np.cov's ddof=1 correction of the two-point variance
    x, y = _two_point(1.0, 2.0, n), _two_point(4.0, 0.5, n)
    # FD = (m1-m2)^2 + (sd1-sd2)^2 with sd = s * sqrt(c2)
    assert _fd(x, y) == pytest.approx((1.0 - 4.0) ** 2 + c2 * (2.0 - 0.5) ** 2, rel=1e-10)


def test_fd_diagonal_three_dims():
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, -1.0, 2.5])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, rel=1e-10)


def test_paired_fd():
    rng = np.random.default_rng(1)
    t = 400
    gt, pred = rng.normal(size=(t, 3)), rng.normal(size=(t, 3))
    fd = _fd(gt, pred)
    const = np.full((t, 2), 0.3)
    assert dyadic_scores([gt], [pred], [const], k=4).paired_fd == pytest.approx(fd, rel=1e-6, abs=1e-9)
    # `other` follows gt, not pred: the coupling term adds to the distance.
    coupled = gt[:, :1] + 0.1 * rng.normal(size=(t, 1))
    s = dyadic_scores([gt], [pred], [coupled], k=4)
    assert s.fd == pytest.approx(fd)
    assert s.paired_fd > fd + 0.5


def _four_clusters(rng: np.random.Generator, per: int) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    return centres, np.concatenate([c + 0.1 * rng.normal(size=(per, 2)) for c in centres])


def test_sid():
    rng = np.random.default_rng(2)
    centres, gt = _four_clusters(rng, 50)
    near = lambda idx, n: np.concatenate([centres[i] + 0.1 * rng.normal(size=(n, 2)) for i in idx])  # noqa: E731
    s, s_gt = sid(gt, near(range(4), 25), k=4)
    assert s == pytest.approx(2.0, abs=1e-6) and s_gt == pytest.approx(2.0, abs=1e-6)
    assert sid(gt, near([3], 60), k=4)[0] == pytest.approx(0.0, abs=1e-12)
    assert sid(gt, near([0, 2], 30), k=4)[0] == pytest.approx(1.0, abs=1e-6)
    # Deterministic for a seed.
    assert sid(gt, near(range(4), 7), k=4, seed=3) == sid(gt, near(range(4), 7), k=4, seed=3)


def test_sid_k_clipped_and_empty():
    gt = np.repeat(np.array([[0.0], [1.0], [5.0]]), 4, axis=0)  # 3 distinct frames
    s, s_gt = sid(gt, np.array([[0.1], [0.9]]), k=40)
    assert s_gt == pytest.approx(math.log2(3)) and s == pytest.approx(1.0)
    assert all(math.isnan(v) for v in sid(np.zeros((0, 2)), np.ones((3, 2)), k=4))
    with pytest.raises(ValueError):
        sid(gt, gt, k=0)


def test_rpcc_same_shape_flattened():
    gt = np.array([[0.0, 1.0], [2.0, 3.0]])
    assert rpcc(gt, gt, gt * 2 + 1) == pytest.approx(0.0)
    # flattened: gt ~ other r=1; pred [0,1,3,2] vs [0,1,2,3] r=0.8 (per-column pairs would all be 1)
    pred = np.array([[0.0, 1.0], [3.0, 2.0]])
    assert rpcc(gt, pred, gt) == pytest.approx(0.2)


def test_rpcc_other_width():
    t = np.arange(10.0)
    other = np.stack([t, np.full(10, 2.0)], 1)  # (T, 2); the constant column is skipped
    gt = np.stack([t, 3 * t + 1, np.full(10, 5.0)], 1)  # (T, 3); constant dim is skipped
    assert rpcc(gt, -gt, other[:, :1]) == pytest.approx(2.0)  # r=1 vs r=-1 on (d0, e0), (d1, e0)
    pred = np.stack([-t, t, t], 1)  # (d0,e0): |1-(-1)|=2, (d1,e0): 0, d2 skipped (gt constant)
    assert rpcc(gt, pred, other) == pytest.approx(1.0)
    assert rpcc(gt, gt, other) == pytest.approx(0.0)
    assert math.isnan(rpcc(gt, pred, np.full((10, 2), 1.0)))  # nothing to correlate


def test_mse_var_and_nan_frames():
    g1, p1 = np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[1.0, 0.0], [1.0, 3.0]])
    o1 = np.array([[0.0, 1.0], [1.0, 0.0]])
    # mse 1.25; var gt mean(0.25, 0.25) = 0.25; var pred mean(0, 2.25) = 1.125
    s = dyadic_scores([g1], [p1], [o1], k=2)
    assert (s.mse, s.var_gt, s.var) == pytest.approx((1.25, 0.25, 1.125))
    g2, p2 = np.array([[0.0, 0.0], [2.0, 2.0]]), np.array([[0.5, 0.5], [2.0, 2.0]])
    o2 = np.array([[0.0, 1.0], [2.0, 0.0]])
    # clip 2: mse 0.125, var gt 1.0, var pred 0.5625 -> plain means over the two clips
    s = dyadic_scores([g1, g2], [p1, p2], [o1, o2], k=2)
    assert (s.mse, s.var_gt, s.var) == pytest.approx((0.6875, 0.625, 0.84375))
    # NaN rows in any of the three are dropped jointly and change nothing
    nan = np.full((1, 2), np.nan)
    g1n = np.vstack([g1, [[7.0, 7.0]], [[8.0, 8.0]]])
    p1n = np.vstack([p1, nan, [[1.0, 1.0]]])
    o1n = np.vstack([o1, [[0.0, 0.0]], nan])
    assert dyadic_scores([g1n, g2], [p1n, p2], [o1n, o2], k=2) == s


def test_nan_and_empty_give_nan():
    nan_clip = np.full((5, 2), np.nan)
    one_frame = np.ones((1, 2))
    for args in (([nan_clip], [nan_clip], [np.ones((5, 2))]), ([one_frame], [one_frame], [one_frame]), ([], [], [])):
        s = dyadic_scores(*args, k=4)
        assert all(math.isnan(getattr(s, f.name)) for f in fields(DyadicScores))
    # a dead clip next to a live one contributes nothing
    rng = np.random.default_rng(4)
    g, p, o = rng.normal(size=(30, 2)), rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    assert dyadic_scores([g, nan_clip], [p, nan_clip], [o, nan_clip], k=3) == dyadic_scores([g], [p], [o], k=3)
    assert math.isnan(rpcc(nan_clip, nan_clip, nan_clip))


def test_rows_cover_fields():
    assert set(DYADIC_ROWS) == {f.name for f in fields(DyadicScores)}
    assert all(isinstance(label, str) and isinstance(text, str) for label, text in DYADIC_ROWS.values())


def test_fast_power_counts_only_what_is_above_5_hz():
    """A slow 1-Hz sway plus an 8-Hz tremor: the ratio is the tremors' power ratio, the sway does not count."""
    t = np.arange(250) / 25
    sway = np.sin(2 * np.pi * 1.0 * t)[:, None]  # (T, 1)
    tremor = np.sin(2 * np.pi * 8.0 * t)[:, None]
    gt, pred = sway + 0.1 * tremor, 3 * sway + 0.3 * tremor
    assert fast_power(sway) < 1e-3 * fast_power(0.1 * tremor)
    assert fast_power_ratio(gt, pred) == pytest.approx(9.0, rel=0.01)  # 3x the amplitude: 9x the power
    assert fast_power_ratio(gt, gt + 5.0) == pytest.approx(1.0)  # an offset is not motion
    assert math.isnan(fast_power_ratio(np.zeros((50, 2)), pred[:50].repeat(2, 1)))  # a still GT has no reference
    s = dyadic_scores([np.hstack([gt, gt])], [np.hstack([pred, gt])], [np.zeros((250, 1))], k=2)
    assert s.fast == pytest.approx((9 * 0.01 + 0.01) / (2 * 0.01), rel=0.02)  # summed over the dimensions


def test_fast_power_does_not_join_frames_across_a_face_gap():
    """The head moved while the face was lost: the generated frames after the gap sit 2 higher. Joined,
    that step would count as fast motion; split at the gap, each run's mean is its own."""
    t = np.arange(250) / 25
    sway, tremor = np.sin(2 * np.pi * 1.0 * t)[:, None], np.sin(2 * np.pi * 8.0 * t)[:, None]
    gt, pred = sway + 0.1 * tremor, 3 * sway + 0.3 * tremor
    moved = pred + 2.0 * (np.arange(250) >= 130)[:, None]
    moved[120:130] = np.nan  # no face in these generated frames
    assert fast_power_ratio(gt, moved) == pytest.approx(9.0, rel=0.05)
    assert fast_power(np.nan_to_num(moved[np.isfinite(moved[:, 0])])) > 1.5 * fast_power(pred)  # what joining gave
    short = pred.copy()
    short[5::10] = np.nan  # only runs of 9 frames or fewer: too short to hold 5 Hz
    assert math.isnan(fast_power_ratio(gt, short))
    s = dyadic_scores([gt], [moved], [np.zeros((250, 1))], k=2)
    assert s.fast == pytest.approx(9.0, rel=0.05)
