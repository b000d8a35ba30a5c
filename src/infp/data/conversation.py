"""Two-track conversations with turn-taking: who speaks when, and the audio of each side.

The schedule has turns of one to three sentences, gaps and overlaps between turns (the next speaker
sometimes starts before the other finishes), long silences now and then, a speaker who goes on after
a pause, and listener backchannels ("mm-hm") inside the other's turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infp import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from infp.data.speech import Speaker

AGENT, PARTNER = 0, 1


@dataclass(frozen=True)
class Utterance:
    speaker: int  # AGENT (A_self) or PARTNER (A_other)
    start: float  # seconds
    end: float
    backchannel: bool = False


@dataclass(frozen=True)
class ConversationAudio:
    """The two tracks (N,) each, exactly `n_frames` video frames long, and what was said when."""

    agent: np.ndarray
    partner: np.ndarray
    utterances: tuple[Utterance, ...]
    n_frames: int

    def swapped(self) -> ConversationAudio:
        """The same conversation seen from the partner's side."""
        utts = tuple(Utterance(1 - u.speaker, u.start, u.end, u.backchannel) for u in self.utterances)
        return ConversationAudio(self.partner, self.agent, utts, self.n_frames)

    def speaking(self, speaker: int, backchannels: bool = True) -> np.ndarray:
        """(T,) bool: frames overlapping an utterance of `speaker`."""
        out = np.zeros(self.n_frames, bool)
        for u in self.utterances:
            if u.speaker == speaker and (backchannels or not u.backchannel):
                out[int(np.floor(u.start * FPS)) : int(np.ceil(u.end * FPS))] = True
        return out


def _place(track: np.ndarray, audio: np.ndarray, start: float) -> tuple[float, float]:
    i = int(round(start * SAMPLE_RATE))
    n = max(0, min(len(audio), len(track) - i))
    track[i : i + n] += audio[:n]
    return i / SAMPLE_RATE, (i + n) / SAMPLE_RATE


def make_conversation(rng: np.random.Generator, seconds: float, agent: Speaker, partner: Speaker) -> ConversationAudio:
    """Simulate `seconds` of conversation between two speakers."""
    n_frames = int(round(seconds * FPS))
    n = n_frames * SAMPLES_PER_FRAME
    tracks = (np.zeros(n, np.float32), np.zeros(n, np.float32))
    speakers = (agent, partner)
    utts: list[Utterance] = []
    t = rng.uniform(0.2, 0.8)
    who = int(rng.integers(2))
    while t < seconds - 0.3:
        turn_end, pauses = _turn(rng, tracks[who], speakers[who], who, t, utts)
        listener = 1 - who
        for p in pauses:  # listeners answer the speaker's pauses, sometimes overlapping them
            if rng.random() < 0.45:
                bc = speakers[listener].backchannel(rng)
                s, e = _place(tracks[listener], bc, p + rng.uniform(-0.15, 0.1))
                if e > s:
                    utts.append(Utterance(listener, s, e, backchannel=True))
        gap = float(np.clip(rng.normal(0.35, 0.4), -0.6, 1.4))
        if rng.random() < 0.08:
            gap = rng.uniform(1.5, 3.0)  # a long shared silence
        t = turn_end + gap
        if rng.random() > 0.12:  # mostly the floor changes hands; sometimes the speaker goes on
            who = listener
    utts.sort(key=lambda u: u.start)
    return ConversationAudio(np.clip(tracks[0], -1, 1), np.clip(tracks[1], -1, 1), tuple(utts), n_frames)


def _turn(rng, track, speaker, who, t, utts) -> tuple[float, list[float]]:
    """One turn of 1-3 sentences starting at `t`; returns its end and the moments a listener may
    answer: the pauses between sentences, and now and then the middle of a long sentence."""
    pauses = []
    for k in range(int(rng.integers(1, 4))):
        if k:
            pauses.append(t + 0.05)
            t += rng.uniform(0.25, 0.7)
        s, e = _place(track, speaker.sentence(rng), t)
        if e <= s:
            break
        utts.append(Utterance(who, s, e))
        if e - s > 2.5 and rng.random() < 0.3:
            pauses.append(rng.uniform(s + 1.0, e - 0.8))
        t = e
    return t, pauses
