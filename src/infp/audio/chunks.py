"""A conversation left on disk and read in chunks, for recordings of any length.

`load_conversation` decodes both tracks whole: simple, and fine for minutes of audio (7.7 MB a
minute), but a recording of hours would not fit. `ConversationFile.open` takes the same inputs and
makes the same checks, reading the file(s) once holding one block at a time: it learns the length
and the loudest mixed sample (so a mixed soundtrack can be scaled before it is written) and logs
the same notes (a silent track, one voice on both channels). `chunks(n)` then decodes again, as
often as asked, yielding (agent, partner) pieces; `Conversation.chunks` yields the same pieces from
memory, so the pipeline takes either.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from infp import FPS, SAMPLE_RATE
from infp.audio.features import frame_count
from infp.audio.io import check_channels, native_blocks, note_tracks, track_stats
from infp.errors import InfpError, require_file
from infp.rechunk import Rechunk


def blocks(path: Path, sr: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """float32 (C, n) blocks of `path`'s audio at `sr`, in [-1, 1]: `load_audio` a block at a time."""
    resampler, channels = None, 0
    for block, rate in native_blocks(path):
        channels = block.shape[0]
        if rate != sr and resampler is None:
            resampler = soxr.ResampleStream(rate, sr, block.shape[0], dtype="float32", quality="HQ")
        out = block if resampler is None else resampler.resample_chunk(np.ascontiguousarray(block.T)).T
        if out.shape[1]:
            yield np.clip(out, -1.0, 1.0)
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros((0, channels), np.float32), last=True).T
        if tail.shape[1]:
            yield np.clip(tail, -1.0, 1.0)


def _mono(path: Path, sr: int) -> Iterator[np.ndarray]:
    return (b.mean(axis=0, dtype=np.float32) for b in blocks(path, sr))


@dataclass(frozen=True)
class ConversationFile:
    """A two-track conversation read from `audio` (channels 0 and 1) or from `agent` and `partner`
    (each downmixed; the shorter padded with silence). Make it with `open`."""

    audio: Path | None
    agent: Path | None
    partner: Path | None
    num_samples: int  # per track
    mix_peak: float  # the loudest sample of agent + partner
    sr: int = SAMPLE_RATE

    @classmethod
    def open(cls, audio: str | Path | None = None, agent: str | Path | None = None,
             partner: str | Path | None = None, sr: int = SAMPLE_RATE) -> ConversationFile:
        """Check and measure the inputs (one pass, one block in memory); raises `InfpError` as
        `load_conversation` does."""
        if audio is not None and (agent is not None or partner is not None):
            raise InfpError("give either one two-channel file or --agent and --partner, not both")
        if audio is None and (agent is None or partner is None):
            raise InfpError("a conversation needs one two-channel file or two files (--agent and --partner)")
        paths = [Path(p) for p in (audio, agent, partner) if p is not None]
        for p in paths:
            require_file(p)
        f = cls(*(None if p is None else Path(p) for p in (audio, agent, partner)), 0, 0.0, sr)
        n, peak, stats = 0, 0.0, np.zeros(3)
        for a, p in f.chunks(16 * sr):
            n += len(a)
            peak = max(peak, float(np.abs(a + p).max(initial=0.0)))
            stats += track_stats(a, p)
        if n == 0:
            raise InfpError("the conversation has no audio samples", paths[0])
        note_tracks(stats, n, audio)
        return cls(f.audio, f.agent, f.partner, n, peak, sr)

    @property
    def duration(self) -> float:
        return self.num_samples / self.sr

    def num_frames(self, fps: int = FPS) -> int:
        return frame_count(self.num_samples, self.sr, fps)

    def chunks(self, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(agent, partner) float32 pieces of `n` samples (the last may be shorter), decoded as they are read."""
        if self.audio is not None:
            both = Rechunk(self._two_channels())
            while (piece := both.take(n)).shape[-1]:
                yield np.ascontiguousarray(piece[0]), np.ascontiguousarray(piece[1])
            return
        a, p = Rechunk(_mono(self.agent, self.sr)), Rechunk(_mono(self.partner, self.sr))
        while True:
            pa, pp = a.take(n), p.take(n)
            if not len(pa) and not len(pp):
                return
            m = max(len(pa), len(pp))  # the track that ended is padded with silence
            yield np.pad(pa, (0, m - len(pa))), np.pad(pp, (0, m - len(pp)))

    def _two_channels(self) -> Iterator[np.ndarray]:
        for k, block in enumerate(blocks(self.audio, self.sr)):
            if k == 0:
                check_channels(block.shape[0], self.audio)
            yield block[:2]
