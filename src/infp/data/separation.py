"""Who speaks when in one mixed track, from the faces on screen (`infp preprocess --layout side-by-side`).

A side-by-side recording shows two people and carries one audio track with both voices. Nothing here
separates the voices themselves (no source separation): each frame of speech goes to the person whose
mouth moves then (`who_speaks`), and each person's `A_self` is the mixed track where they speak and
silence elsewhere, their `A_other` the mixed track where the other one speaks (`split_tracks`).

The method, per frame at 25 fps:
1. speech: Silero VAD on the mixed track (`audio.vad.voice_activity`);
2. each face's mouth activity: the std of its lip gap over 9 frames (`mouth_activity`), in units of the
   face's height, so a face far from the camera counts as much as a near one. (Dividing it by each
   face's own 90th percentile as well, so a person who articulates little is compared with themself,
   found the real speaker in 68% of their speech instead of 94%: a listener who hardly moves then has
   every small movement scaled up to a speaker's.)
3. within speech, the two activities, each averaged over 0.4 s, decide: the person whose
   mouth moves more speaks; where both move at least `overlap` times as much as the speaker, both do
   (overlaps, backchannels);
4. frames where a face is missing count as that person's mouth at rest.

Accuracy against known truth: `score` (docs/training-at-scale.md has the measured figures).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import uniform_filter1d

from infp import FPS, SAMPLES_PER_FRAME
from infp.face.expression import mouth_opening

ACTIVITY_FRAMES = 9  # window of the mouth's activity and the voices' loudness when matching channels
DECIDE_S = 0.4  # the activities are compared over this long
OVERLAP = 0.8  # both speak where the quieter mouth moves at least this fraction of the livelier one
RAMP = 160  # samples (10 ms) over which a person's gate opens or closes: no clicks at the cuts


def mouth_activity(landmarks: np.ndarray, k: int = ACTIVITY_FRAMES) -> np.ndarray:
    """(T,) how much the mouth moves around each frame: the std of its opening over k frames."""
    m = mouth_opening(np.asarray(landmarks, np.float64))
    return np.sqrt(np.maximum(uniform_filter1d(m**2, k) - uniform_filter1d(m, k) ** 2, 0))


def who_speaks(speech: np.ndarray, left: np.ndarray, right: np.ndarray, overlap: float = OVERLAP) -> np.ndarray:
    """(T, 2) bool, [left, right] speaking per frame, from (T,) bool speech in the mixed track and each
    face's (T, 478, 3) landmarks (NaN where the face is missing). See the module doc."""
    speech = np.asarray(speech, bool)
    n = len(speech)
    act = np.nan_to_num(np.stack([mouth_activity(lm)[:n] for lm in (left, right)], 1), nan=0.0)  # (T, 2)
    act = uniform_filter1d(act, max(1, int(round(DECIDE_S * FPS))), axis=0)
    top = act.max(1, keepdims=True)
    lead = act == top
    both = act.min(1) >= overlap * top[:, 0]
    out = (lead | both[:, None]) & speech[:, None]
    out[(top[:, 0] == 0) & speech] = False  # speech with no mouth moving on screen: nobody's
    return out


def split_tracks(mixed: np.ndarray, speaks: np.ndarray) -> np.ndarray:
    """(2, 2, N): for each person [left, right], (A_self, A_other) cut from the (N,) mixed track by who
    speaks (T, 2); gates ramp over 10 ms."""
    n = len(mixed)
    gates = np.repeat(speaks.astype(np.float32), SAMPLES_PER_FRAME, axis=0)[:n]  # (N', 2)
    gates = np.pad(gates, ((0, max(0, n - len(gates))), (0, 0)))
    gates = uniform_filter1d(gates, RAMP, axis=0)
    own = (mixed[:, None] * gates).T.astype(np.float32)  # (2, N)
    return np.stack([own, own[::-1]])


@dataclass(frozen=True)
class SeparationScore:
    """Speaker separation against known truth, over the frames where someone truly speaks."""

    frames: int  # frames where at least one person speaks (truth)
    accuracy: float  # fraction of those whose predicted speakers equal the true ones exactly
    floor_accuracy: float  # fraction of single-speaker frames given to that speaker (alone or with the other)
    recall: tuple[float, float]  # per person: their speaking frames found
    precision: tuple[float, float]  # per person: frames given to them where they do speak

    def line(self) -> str:
        return (f"{self.frames} frames with speech: exact {100 * self.accuracy:.1f}%, the speaker found "
                f"{100 * self.floor_accuracy:.1f}%; recall left/right {self.recall[0]:.2f}/{self.recall[1]:.2f}, "
                f"precision {self.precision[0]:.2f}/{self.precision[1]:.2f}")


def score(pred: np.ndarray, truth: np.ndarray) -> SeparationScore:
    """`pred`, `truth`: (T, 2) bool [left, right] speaking (cut to the shorter)."""
    n = min(len(pred), len(truth))
    p, t = np.asarray(pred[:n], bool), np.asarray(truth[:n], bool)
    any_ = t.any(1)
    one = t.sum(1) == 1
    exact = (p == t).all(1)
    found = (p & t).any(1)

    def ratio(a, b):
        return float(a.sum() / b.sum()) if b.sum() else float("nan")

    return SeparationScore(
        int(any_.sum()), ratio(exact & any_, any_), ratio(found & one, one),
        tuple(ratio(p[:, k] & t[:, k], t[:, k]) for k in range(2)),
        tuple(ratio(p[:, k] & t[:, k], p[:, k]) for k in range(2)),
    )
