"""The numbers behind `infp eval motion`, as pure numpy functions: turn changes, window joins, jump
ratios, the latent probe (ridge regression from motion latents to behaviour) and nod scores."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from infp import FPS
from infp.diffusion.sampling import window_spans
from infp.errors import InfpError
from infp.eval.behaviour import pearson

NAN = float("nan")


def floor_from_utterances(utterances: Iterable, n: int, fps: int = FPS) -> tuple[np.ndarray, np.ndarray]:
    """(agent, partner) (T,) bool: who holds the floor by the clip's schedule (meta `utterances`:
    [speaker, start s, end s, is_backchannel]); backchannels left out, since they do not take the turn."""
    out = np.zeros((2, n), bool)
    for speaker, start, end, backchannel in utterances:
        if not backchannel and int(speaker) in (0, 1):
            out[int(speaker), int(np.floor(start * fps)) : int(np.ceil(end * fps))] = True
    return out[0], out[1]


def turn_changes(agent: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Frames where the floor passes to the other side: the first frame the new speaker speaks alone.
    Gaps (nobody) and overlaps (both) in between are allowed and do not count as a holder."""
    a, p = np.asarray(agent, bool), np.asarray(partner, bool)
    state = np.where(a & ~p, 0, np.where(p & ~a, 1, -1))
    held = np.flatnonzero(state >= 0)
    return held[1:][np.diff(state[held]) != 0]


def window_joins(n: int, window: int, overlap: int = 0, lookahead: int = 0) -> np.ndarray:
    """The first new frame of every window after the first, as `diffusion.sampling.window_spans`
    tiles n frames: where a window's own frames meet those it continues."""
    return np.array([s.new for s in window_spans(n, window, overlap, lookahead)[1:]], int)


def step_sizes(x: np.ndarray) -> np.ndarray:
    """(T,) d_t = ||x_t - x_{t-1}|| over all trailing axes; d_0, and steps touching a NaN row, are NaN."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    d = np.full(len(flat), np.nan)
    d[1:] = np.linalg.norm(np.diff(flat, axis=0), axis=1)
    return d


def jump_ratio(d: np.ndarray, frames: np.ndarray, radius: int = 0) -> float:
    """Mean step d at `frames` (and `radius` frames around them) over the median step of the clip:
    about 1 when nothing special happens there, much more for a jump. NaN without frames."""
    d, frames = np.asarray(d, np.float64), np.asarray(frames, int)
    if not frames.size or not np.isfinite(d).any():
        return NAN
    med = float(np.nanmedian(d))
    idx = np.unique((frames[:, None] + np.arange(-radius, radius + 1)).ravel())
    at = d[idx[(idx >= 1) & (idx < len(d))]]
    at = at[np.isfinite(at)]
    return float(at.mean() / med) if at.size and med > 0 else NAN


@dataclass(frozen=True)
class Probe:
    """Ridge regression from motion latents (T, z) to behaviour targets (T, k) on standardised latents."""

    mean: np.ndarray  # (z,)
    scale: np.ndarray  # (z,)
    weight: np.ndarray  # (z, k)
    bias: np.ndarray  # (k,)

    def __call__(self, z: np.ndarray) -> np.ndarray:  # (T, k); NaN rows of z stay NaN
        return ((np.asarray(z, np.float64) - self.mean) / self.scale) @ self.weight + self.bias


def _finite_rows(*arrays: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce([np.isfinite(a.reshape(len(a), -1)).all(1) for a in arrays])


def fit_probe(z: np.ndarray, y: np.ndarray, lam: float = 1e-3) -> Probe:
    """Closed-form ridge on the rows where both are finite; `lam` is relative to unit-variance inputs."""
    ok = _finite_rows(z, y)
    x, y = np.asarray(z, np.float64)[ok], np.asarray(y, np.float64).reshape(len(y), -1)[ok]
    if len(x) < 2:
        raise InfpError(f"{len(x)} frame(s) with a face: too few to fit the latent probe")
    mean, scale = x.mean(0), np.maximum(x.std(0), 1e-8)
    xs, ym = (x - mean) / scale, y.mean(0)
    w = np.linalg.solve(xs.T @ xs / len(xs) + lam * np.eye(xs.shape[1]), xs.T @ (y - ym) / len(xs))
    return Probe(mean, scale, w, ym)


def r2(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(k,) coefficient of determination per column of (T, k) targets, over rows where both are finite."""
    ok = _finite_rows(y, pred)
    y, pred = np.asarray(y, np.float64)[ok], np.asarray(pred, np.float64)[ok]
    ss_tot = ((y - y.mean(0)) ** 2).sum(0) if len(y) else np.zeros(y.shape[1])
    return np.where(ss_tot > 0, 1 - ((y - pred) ** 2).sum(0) / np.where(ss_tot > 0, ss_tot, 1), np.nan)


def heldout_r2(zs: list[np.ndarray], ys: list[np.ndarray], lam: float = 1e-3) -> np.ndarray:
    """Leave-one-clip-out R² of the probe, (T, k) targets per clip (NaN with one clip): does it generalise?"""
    if len(zs) < 2:
        return np.full(ys[0].shape[1], np.nan)
    preds = [fit_probe(np.concatenate(zs[:i] + zs[i + 1 :]), np.concatenate(ys[:i] + ys[i + 1 :]), lam)(zs[i])
             for i in range(len(zs))]
    return r2(np.concatenate(ys), np.concatenate(preds))


def masked_mean(x: np.ndarray, mask: np.ndarray) -> float:
    v = np.asarray(x, np.float64)[np.asarray(mask, bool)]
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else NAN


def moving_average(x: np.ndarray, k: int = 9) -> np.ndarray:
    """Centred k-frame mean that skips NaN (NaN only where the whole window is)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    num = np.convolve(np.where(ok, x, 0.0), np.ones(k), "same")
    den = np.convolve(ok.astype(np.float64), np.ones(k), "same")
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def pitch_speed(pitch: np.ndarray, fps: int = FPS) -> np.ndarray:
    """(T,) |d pitch / dt| in degrees per second (central differences)."""
    p = np.asarray(pitch, np.float64)
    return np.abs(np.gradient(p)) * fps if len(p) > 1 else np.full(len(p), np.nan)


class NodScores(NamedTuple):
    speed_listening: float  # mean |d pitch / dt| (deg/s) while listening
    speed_speaking: float  # ... while speaking
    corr: float  # Pearson of its moving average with the GT nod flag, over the whole clip
    corr_listening: float  # the same over the listening and nodding frames only
    ratio: float  # mean speed during GT nods / while listening without one


def nod_scores(pitch, nod, listening, speaking, fps: int = FPS, smooth: int = 9) -> NodScores:
    """Head-pitch speed and how it lines up with the ground-truth nods. The whole-clip correlation
    mixes in the speaking frames, where the head moves most: a model whose head is too lively while
    it speaks scores below zero there even if it nods. The listening-only correlation and the ratio
    ask only whether it nods when the truth does rather than elsewhere while listening."""
    v, nod, listening = pitch_speed(pitch, fps), np.asarray(nod, bool), np.asarray(listening, bool)
    smoothed, quiet = moving_average(v, smooth), masked_mean(v, listening & ~nod)
    heard = listening | nod
    return NodScores(
        masked_mean(v, listening), masked_mean(v, speaking), pearson(smoothed, nod.astype(np.float64)),
        pearson(smoothed[heard], nod[heard].astype(np.float64)),
        masked_mean(v, nod) / quiet if quiet > 0 else NAN)
