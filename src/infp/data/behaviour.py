"""The documented behaviour model of the synthetic agent: what its face does, frame by frame.

Speaking (its own track active): the mouth opening follows the loudness of its own speech, the head
moves more and bobs with emphasis, the brows rise on loud syllables. Listening (the partner's track
active): the mouth stays closed except for its own backchannels; it nods near the partner's pauses and
turn ends; it smiles now and then. Blinks throughout (about one every 3-4 s). Slow head drift always.
Nothing here reads role labels at generation time of a model: this is only the ground truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from infp import FPS
from infp.audio.features import frame_rms
from infp.data.conversation import AGENT, PARTNER, ConversationAudio
from infp.data.render import Pose

LEVEL_FLOOR_DB, LEVEL_RANGE_DB = -48.0, 30.0  # frame RMS (dBFS) mapped to mouth level 0..1


@dataclass(frozen=True)
class Behaviour:
    """Per-frame ground truth, each field a (T,) array."""

    mouth: np.ndarray
    smile: np.ndarray
    blink: np.ndarray
    brow: np.ndarray
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    nod: np.ndarray  # bool: a listening nod is under way
    agent_speaking: np.ndarray  # bool, from the conversation schedule (backchannels included)
    partner_speaking: np.ndarray
    agent_backchannel: np.ndarray  # bool: the agent's speech here is a backchannel

    def __len__(self) -> int:
        return len(self.mouth)

    def pose(self, t: int) -> Pose:
        return Pose(*(float(getattr(self, f.name)[t]) for f in fields(Pose)))

    def save(self, path: str | Path) -> None:
        np.savez(path, **asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> Behaviour:
        with np.load(path) as z:
            return cls(**{f.name: z[f.name] for f in fields(cls)})


def speech_level(audio: np.ndarray) -> np.ndarray:
    """(T,) loudness per frame in 0..1 (log RMS between a floor and floor + range)."""
    db = 20 * np.log10(frame_rms(audio) + 1e-9)
    return np.clip((db - LEVEL_FLOOR_DB) / LEVEL_RANGE_DB, 0, 1).astype(np.float32)


def _drift(rng: np.random.Generator, n: int, sigma: np.ndarray, tau_s: float, smooth_s: float = 0.08) -> np.ndarray:
    """A smooth random drift with per-frame stationary std `sigma` (T,): an Ornstein-Uhlenbeck process
    low-passed by a Gaussian of `smooth_s` seconds. Unfiltered, the process steps by white noise (a head
    that shakes: 0.4 deg a frame at 2.5 deg std); real heads move about 0.15 of their std a frame."""
    a = np.exp(-1 / (tau_s * FPS))
    x, ou = 0.0, np.empty(n)
    noise = rng.normal(size=n)
    for i in range(n):
        x = a * x + np.sqrt(1 - a * a) * noise[i]
        ou[i] = x
    s = smooth_s * FPS
    # The filter lowers the std; divide by the filtered process's exact stationary std (kernel-weighted
    # sum of the AR(1) autocorrelation a^|i-j|), so `sigma` stays the std a frame has.
    k = np.exp(-0.5 * (np.arange(-int(4 * s), int(4 * s) + 1) / s) ** 2)
    k /= k.sum()
    lag = np.abs(np.subtract.outer(np.arange(len(k)), np.arange(len(k))))
    std = np.sqrt(k @ (a**lag) @ k)
    return gaussian_filter1d(ou, s, mode="nearest") / std * sigma


def _events(rng: np.random.Generator, n: int, rate_per_s: np.ndarray, min_gap: int) -> list[int]:
    """Poisson event onsets with a per-frame rate, at least `min_gap` frames apart."""
    hits = np.where(rng.random(n) < rate_per_s / FPS)[0]
    out: list[int] = []
    for h in hits:
        if not out or h - out[-1] >= min_gap:
            out.append(int(h))
    return out


def _bump(n: int, start: int, length: int, amp: float) -> np.ndarray:
    """A raised-cosine bump of `length` frames at `start`."""
    out = np.zeros(n)
    idx = np.arange(start, min(n, start + length))
    out[idx] = amp * 0.5 * (1 - np.cos(2 * np.pi * (idx - start) / max(length - 1, 1)))
    return out


def simulate(rng: np.random.Generator, conv: ConversationAudio) -> Behaviour:
    """Draw one agent's behaviour for a conversation."""
    n = conv.n_frames
    speaking = conv.speaking(AGENT)
    partner = conv.speaking(PARTNER)
    backchannel = speaking & ~conv.speaking(AGENT, backchannels=False)
    level = speech_level(conv.agent)

    # Mouth: the agent's own loudness, only where it speaks; articulation varies per person.
    articulation = rng.uniform(0.65, 0.95)
    mouth = gaussian_filter1d(level**1.2 * speaking * articulation, 0.8)

    # Head drift, smooth and sized by real people (MediaPipe std of yaw / pitch / roll: real listeners
    # 0.4-1.5 deg of yaw; 83 real talking videos, median 3.8 / 2.8 / 2.6), 3.5 times livelier while
    # speaking, the change eased over 0.25 s; emphasis bobs the head and lifts the brows.
    k = gaussian_filter1d(np.where(speaking, 3.5, 1.0), 0.25 * FPS)
    yaw = _drift(rng, n, 1.0 * k, 2.0)
    pitch = _drift(rng, n, 0.8 * k, 1.5)
    roll = _drift(rng, n, 0.6 * k, 2.5)
    # Soft limits keep the head where the 2D warp of a photo stays clean (it folds past ~10 deg yaw).
    yaw = 9.0 * np.tanh(yaw / 9.0)
    pitch = 10.0 * np.tanh(pitch / 10.0)
    emphasis = np.clip(gaussian_filter1d(level * speaking, 3) - 0.4, 0, None)
    pitch -= 6.0 * emphasis
    brow = np.clip(gaussian_filter1d(1.6 * emphasis, 2), 0, 1)

    # Nods while listening: near the end of each partner sentence, over before the agent speaks.
    nod = np.zeros(n, bool)
    nod_cues = [u.end for u in conv.utterances if u.speaker == PARTNER and not u.backchannel]
    for t_end in nod_cues:
        s = int((t_end + rng.uniform(-0.4, 0.2)) * FPS)
        if 0 <= s < n and not speaking[s] and rng.random() < 0.75:
            length = int(rng.uniform(0.6, 1.2) * FPS)
            ahead = speaking[s : s + length]
            length = int(np.argmax(ahead)) if ahead.any() else length  # over before the agent speaks
            if length < int(0.4 * FPS):
                continue
            idx = np.arange(s, min(n, s + length))
            f = rng.uniform(1.8, 2.6)
            env = np.sin(np.pi * (idx - s) / length)
            pitch[idx] -= rng.uniform(4, 8) * env * np.sin(2 * np.pi * f * (idx - s) / FPS)
            nod[idx] = True

    # Smiles: often while listening, rarely while speaking.
    smile = np.zeros(n)
    for s in _events(rng, n, np.where(speaking, 1 / 15, 1 / 6), int(2 * FPS)):
        smile += _bump(n, s, int(rng.uniform(1.5, 3.5) * FPS), rng.uniform(0.4, 1.0) if not speaking[s] else rng.uniform(0.2, 0.5))

    # Blinks: ~0.28/s, a bit more while speaking, never closer than 0.8 s.
    blink = np.zeros(n)
    shape = np.array([0.4, 0.9, 1.0, 0.7, 0.3])
    for s in _events(rng, n, np.where(speaking, 0.35, 0.25), int(0.8 * FPS)):
        e = min(n, s + len(shape))
        blink[s:e] = np.maximum(blink[s:e], shape[: e - s])

    f32 = lambda x: np.asarray(x, np.float32)  # noqa: E731
    return Behaviour(
        mouth=f32(np.clip(mouth, 0, 1)), smile=f32(np.clip(smile, 0, 1)), blink=f32(blink), brow=f32(brow),
        yaw=f32(yaw), pitch=f32(pitch), roll=f32(roll), nod=nod, agent_speaking=speaking,
        partner_speaking=partner, agent_backchannel=backchannel,
    )
