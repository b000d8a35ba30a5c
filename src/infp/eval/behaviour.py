"""Behaviour measured on video through MediaPipe, and how it follows each audio track.

Used on synthetic clips (checks the generator) and on generated videos (checks the model): the
measured mouth opening should follow the agent's own speech and not the partner's; head pitch
velocity shows nods.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infp.data.behaviour import speech_level
from infp.data.clip import Clip
from infp.face.expression import mouth_opening


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or a[ok].std() == 0 or b[ok].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


@dataclass(frozen=True)
class AudioFollowing:
    """Correlations of the measured mouth opening with each track's loudness, over a clip."""

    face_found: float  # fraction of frames with a face
    mouth_vs_agent: float
    mouth_vs_partner: float
    mouth_vs_partner_agent_silent: float  # the same, only over frames where the agent is silent
    mouth_speaking: float  # mean opening while the agent speaks (by VAD of its track)
    mouth_listening: float  # ... while only the partner speaks


def audio_following(landmarks: np.ndarray, agent: np.ndarray, partner: np.ndarray) -> AudioFollowing:
    from infp.audio.vad import voice_activity

    m = mouth_opening(landmarks)
    n = len(m)
    la, lp = speech_level(agent)[:n], speech_level(partner)[:n]
    va, vp = voice_activity(agent)[:n], voice_activity(partner)[:n]
    return AudioFollowing(
        face_found=float(np.isfinite(m).mean()),
        mouth_vs_agent=pearson(m, la),
        mouth_vs_partner=pearson(m, lp),
        mouth_vs_partner_agent_silent=pearson(m[~va], lp[~va]),
        mouth_speaking=float(np.nanmean(m[va])) if va.any() else float("nan"),
        mouth_listening=float(np.nanmean(m[vp & ~va])) if (vp & ~va).any() else float("nan"),
    )


def clip_audio_following(clip: Clip) -> AudioFollowing:
    agent, partner = clip.tracks()
    return audio_following(clip.landmarks(), agent, partner)
