"""A turn-taking two-track conversation built from real speech clips (issue 20: the role contrast of
`infp eval real --turns`): each side's turns cut from its speakers' own speech, alternating, with
short silences and one overlap, every voice brought to one loudness."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from infp import SAMPLE_RATE, SAMPLES_PER_FRAME


@dataclass(frozen=True, eq=False)  # eq=False: arrays have no single truth value
class Speech:
    """One clip's speech: a source of turns."""

    id: str
    audio: np.ndarray  # (N,) 16 kHz
    voiced: np.ndarray  # (T,) bool per 25-fps frame (VAD)


@dataclass(frozen=True)
class Turn:
    who: str  # "agent" or "partner"
    source: str  # the clip whose speech it is
    start: float  # seconds into the conversation
    end: float
    source_start: float  # seconds into the clip's speech


TURN_S = (2.5, 4.5)  # a turn's length, seconds (uniform)
GAP_S = (0.3, 0.8)  # the silence between turns
OVERLAP_S = 0.5  # the one turn that starts before the other ends (the middle one) does so by this much
EDGE_S = 0.5  # silence before the first turn and after the last
LEVEL_DBFS = -24.0  # every source's voiced RMS is brought to this level (peaks kept under full scale)
FADE = SAMPLE_RATE // 100  # 10-ms fades at each cut


def _gain(sp: Speech) -> float:
    """The factor that brings `sp`'s voiced frames (all of it when none is voiced) to LEVEL_DBFS."""
    x = np.asarray(sp.audio, np.float64)
    voiced = np.repeat(np.asarray(sp.voiced, bool), SAMPLES_PER_FRAME)[: len(x)]
    v = x[: len(voiced)][voiced] if voiced.any() else x
    rms, peak = math.sqrt(float((v**2).mean())) if len(v) else 0.0, float(np.abs(x).max(initial=0.0))
    return 0.0 if rms == 0 else min(10 ** (LEVEL_DBFS / 20) / rms, 0.99 / peak)


def _piece(sp: Speech, at: int, n: int, least: int) -> tuple[int, int]:
    """Where the next turn of `n` samples from `sp` starts and its length: from its first voiced frame
    at or after sample `at`, shortened to the speech left when at least `least` samples are; else from
    its first voiced frame again (its speech is used up: it repeats)."""
    voiced = np.flatnonzero(np.asarray(sp.voiced, bool)) * SAMPLES_PER_FRAME
    first = int(voiced[0]) if len(voiced) else 0
    later = voiced[voiced >= at]
    start = int(later[0]) if len(later) and len(sp.audio) - later[0] >= min(n, least) else first
    return start, max(0, min(n, len(sp.audio) - start))


def build_conversation(agent: list[Speech], partner: list[Speech], turns: int, seed: int,
                       overlap: bool = True) -> tuple[np.ndarray, list[Turn]]:
    """A turn-taking conversation of real speech: (2, N) tracks (0 agent, 1 partner) and its turns.
    Turns alternate, the agent first; each side goes through its speakers in a seeded order, taking
    each one's speech onward from where its last turn ended (from a voiced frame; a turn is shortened
    to the speech left, down to TURN_S[0], before a speaker's speech repeats). Between turns a
    short silence; with `overlap` (and 3 turns or more) the middle turn starts before the one before
    it ends. Every source is brought to one loudness. Deterministic for a seed."""
    if not agent or not partner or turns < 1:
        raise ValueError("a conversation needs speech for both sides and at least one turn")
    rng = np.random.default_rng(seed)
    order = [[side[i] for i in rng.permutation(len(side))] for side in (agent, partner)]
    lengths, gaps = rng.uniform(*TURN_S, turns), rng.uniform(*GAP_S, turns)
    cursor: dict[int, int] = {}
    placed, start, end = [], 0, int(EDGE_S * SAMPLE_RATE)  # the previous turn's span
    for k in range(turns):
        sp = order[k % 2][(k // 2) % len(order[k % 2])]
        at, n = _piece(sp, cursor.get(id(sp), 0), int(lengths[k] * SAMPLE_RATE), int(TURN_S[0] * SAMPLE_RATE))
        cursor[id(sp)] = at + n
        if k == 0:
            t = end
        elif overlap and turns >= 3 and k == turns // 2:
            t = max(end - int(OVERLAP_S * SAMPLE_RATE), start + 1)
        else:
            t = end + int(gaps[k] * SAMPLE_RATE)
        placed.append((k % 2, sp, at, n, t))
        start, end = t, t + n
    tracks = np.zeros((2, max(p[4] + p[3] for p in placed) + int(EDGE_S * SAMPLE_RATE)), np.float32)
    out = []
    for side, sp, at, n, t in placed:
        x = sp.audio[at: at + n].astype(np.float32) * _gain(sp)
        f = min(FADE, n // 2)
        x[:f] *= np.linspace(0, 1, f, dtype=np.float32)
        x[n - f:] *= np.linspace(1, 0, f, dtype=np.float32)
        tracks[side, t: t + n] += x
        out.append(Turn(("agent", "partner")[side], sp.id, t / SAMPLE_RATE, (t + n) / SAMPLE_RATE, at / SAMPLE_RATE))
    return np.clip(tracks, -1, 1), out


def role_masks(agent: np.ndarray, partner: np.ndarray) -> dict[str, np.ndarray]:
    """(T,) bool per role from the two tracks' voice activity: the agent speaking alone, listening (the
    partner alone), both silent, both speaking."""
    a, p = np.asarray(agent, bool), np.asarray(partner, bool)
    return {"speaking": a & ~p, "listening": p & ~a, "silent": ~a & ~p, "both": a & p}
