"""The explicit-switching baseline (ViCo, DIM): two one-track stage-2 models and a switch between them.

A speaker model hears only the agent's track and a listener model only the partner's (`infp train
motion --hears agent` / `--hears partner`: the same network and recipe as INFP's, the other track
always silence). Voice activity decides frame by frame who holds the floor: the agent while its track
has voice, the partner while only theirs has, the last holder through silences (the listener before
anyone has spoken). The speaker's motion is shown while the agent holds the floor and the listener's
otherwise, cross-faded over `fade` frames. Both start from the portrait's resting latent. INFP's claim
(Sec. 1, 4.3) is that one model driven by both tracks beats this at turn changes and overlaps.
"""

from __future__ import annotations

import json

import numpy as np

from infp.errors import InfpError
from infp.timeline import fit_rows

FADE = 6  # frames of cross-fade at a switch (0.24 s)


def floor_holder(agent_voice: np.ndarray, partner_voice: np.ndarray) -> np.ndarray:
    """(T,) float 1 where the agent holds the floor, 0 where the partner does: the agent whenever its
    track has voice (overlaps included: a speaker does not yield mid-word), the partner when only theirs
    has, the last holder through silences, the partner (the agent listens) before anyone speaks."""
    a, p = np.asarray(agent_voice, bool), np.asarray(partner_voice, bool)
    state = np.where(a, 1.0, np.where(p, 0.0, np.nan))
    last = np.maximum.accumulate(np.where(np.isfinite(state), np.arange(len(a)), -1))  # the last voiced frame
    return np.where(last >= 0, state[np.maximum(last, 0)], 0.0)


def crossfade(holder: np.ndarray, fade: int = FADE) -> np.ndarray:
    """(T,) the speaker model's weight: `holder` eased linearly over `fade` frames at each switch."""
    if fade <= 1:
        return holder.astype(np.float64)
    padded = np.concatenate([np.full(fade - 1, holder[0]), holder]).astype(np.float64)
    return np.convolve(padded, np.ones(fade) / fade, "valid")  # the switch starts at the change


def _hears(pipe) -> str:
    card = json.loads((pipe.stage2.path / "config.json").read_text()).get("training", {})
    return card.get("hears", "both")


class SwitchingPipeline:
    """`InfpPipeline`'s generation interface (prepare, motion, renderer) over a speaker and a listener
    pipeline that share stage 1."""

    def __init__(self, speaker, listener, fade: int = FADE):
        for pipe, role, want in ((speaker, "speaker", "agent"), (listener, "listener", "partner")):
            if _hears(pipe) != want:
                raise InfpError(f"the {role} model must be trained with `infp train motion --hears {want}` "
                                f"(this one hears {_hears(pipe)})", pipe.stage2.path)
        self.speaker, self.listener, self.fade = speaker, listener, fade
        self.stage1, self.stage2 = speaker.stage1, speaker.stage2  # the speaker's window schedule for joins

    def prepare(self, *args, **kwargs):
        return self.speaker.prepare(*args, **kwargs)

    def renderer(self, *args, **kwargs):
        return self.speaker.renderer(*args, **kwargs)

    def motion(self, portrait, agent: np.ndarray, partner: np.ndarray, **settings) -> np.ndarray:
        """(T, motion_dim): the speaker's latents where the agent holds the floor, the listener's elsewhere."""
        from infp.audio.vad import voice_activity

        silent = np.zeros_like(np.asarray(agent, np.float32))
        talk = self.speaker.motion(portrait, agent, silent, **settings)
        listen = self.listener.motion(portrait, silent, partner, **settings)
        n = min(len(talk), len(listen))
        va, vp = (fit_rows(np.asarray(voice_activity(t), bool), n) for t in (agent, partner))
        holder = floor_holder(va, vp)
        w = crossfade(holder, self.fade)[:, None]
        return w * talk[:n] + (1 - w) * listen[:n]
