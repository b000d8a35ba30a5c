"""Window-by-window generation from audio as it arrives: the engine of live use and of offline
generation alike (offline pushes the whole conversation at once, so the two give the same frames).

Stage 2 generates `window` frames at a time (2 s), each window continuing from the last `context`
latents of the one before (INFP Sec. 3.2) and, with an overlap, holding the frames it shares with
it. A window is generated as soon as its audio, plus one frame of look-ahead for the feature windows
that straddle its end, has arrived, so a frame leaves at most one hop of the schedule plus its
look-ahead (`diffusion.sampling.window_schedule`: 20 frames offline, 8 + 2 live) after its audio
came in, plus compute. Audio is kept only from one window before the frames generated (what the last window
may need): memory does not grow with the conversation's length.

The features of a window are computed from its own stretch of audio with one frame of audio either
side, zeros before the start and after the end, which is what the whole-track log-mel does at the
edges: for log-mel the streamed features equal the whole-track ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch

from infp import SAMPLE_RATE, SAMPLES_PER_FRAME
from infp.audio.features import frame_count
from infp.diffusion.sampling import WindowedGenerator


def _track(x, what: str) -> np.ndarray:
    a = np.asarray(x, np.float32)
    if a.ndim != 1:
        raise ValueError(f"{what} audio must be a 1-D array of 16 kHz samples, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{what} audio has NaN or infinite samples")
    return a


def paced_chunks(agent: np.ndarray, partner: np.ndarray, chunk_s: float = 0.04,
                 start: float | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Chunks of both tracks released at the pace a call would deliver them: each only once its last
    sample would exist, counting from `start` (`time.perf_counter()`; default: the first chunk asked for)."""
    step = int(chunk_s * SAMPLE_RATE)
    start = time.perf_counter() if start is None else start
    for k in range(0, len(agent), step):
        if (wait := start + (k + step) / SAMPLE_RATE - time.perf_counter()) > 0:
            time.sleep(wait)
        yield agent[k : k + step], partner[k : k + step]


class MotionStream:
    """Push equal-length chunks of both tracks (16 kHz float32); get motion latents as windows complete.

    `generator` holds the model, sampler state, seed and window overlap; `featurizer` turns audio into
    the model's feature rows; `context_frames` of audio either side of a window feed its edge features.
    Windows follow `diffusion.sampling.window_spans`, as offline generation does: the last one, known
    only at `finish`, is moved back to end at the last frame, so the audio of up to one window before
    the frames generated is kept for it.

    `preroll` frames of silence come before the conversation and are generated but not returned: with
    the live schedule (`InfpPipeline.motion_stream` sets it to the overlap) the first window then ends
    a hop after the call starts instead of a whole window (2 s) after it.
    """

    def __init__(self, generator: WindowedGenerator, featurizer, context_frames: int = 1, preroll: int = 0):
        self.gen, self.featurizer = generator, featurizer
        self.window = generator.model.cfg.window
        self.per_frame = generator.model.cfg.audio_per_frame
        self.margin = context_frames
        self.buffer = np.zeros((2, (context_frames + preroll) * SAMPLES_PER_FRAME), np.float32)  # silence before the start
        self.buffer_start = -context_frames * SAMPLES_PER_FRAME  # sample index of buffer[:, 0]
        self.preroll = preroll
        self.samples = preroll * SAMPLES_PER_FRAME  # samples received per track, the pre-roll's silence included
        self.finished = False

    @property
    def frames_ready(self) -> int:
        # a padded short conversation's window is cut
        return max(0, min(self.gen.done, frame_count(self.samples)) - self.preroll)

    def _conversation_frames(self, z: np.ndarray, first: int) -> np.ndarray:
        """The rows of latents of frames [first, first + len(z)) that belong to the conversation."""
        return z[max(0, self.preroll - first) :]

    def push(self, agent, partner) -> list[np.ndarray]:
        """Add audio of both tracks; the (k, motion_dim) latents of every window now complete."""
        if self.finished:
            raise RuntimeError("this stream is finished; start a new one")
        a, p = _track(agent, "agent"), _track(partner, "partner")
        if a.shape != p.shape:
            raise ValueError(f"push equal-length chunks of both tracks (agent {a.shape[0]}, partner {p.shape[0]} samples)")
        self.buffer = np.concatenate([self.buffer, np.stack([a, p])], axis=1)
        self.samples += a.shape[0]
        out = []
        # at least one frame past the window: a window that ends the conversation keeps its look-ahead,
        # and only `finish` knows which one that is
        while self.samples >= (self._next_start() + self.window + max(self.margin, 1)) * SAMPLES_PER_FRAME:
            out.append(self._window(self._next_start()))
        return [z for z in out if len(z)]

    def finish(self) -> list[np.ndarray]:
        """The last window (audio padded with silence only when the whole conversation is shorter than
        a window), once no more audio will come."""
        if self.finished:
            return []
        self.finished = True
        n, out = frame_count(self.samples), []
        for start, _, end in self.gen.spans(n):
            if end > self.gen.done:  # not generated while pushing
                out.append(self._window(start, end))
        if 0 < n < self.window:  # one window padded with silence: only its first n frames are the conversation
            out[-1] = out[-1][: n - self.preroll]
        return [z for z in out if len(z)]

    @property
    def hop(self) -> int:
        """Frames between windows: how much new audio each window waits for."""
        return self.window - self.gen.overlap - self.gen.lookahead

    def _next_start(self) -> int:
        done = self.gen.done
        return done - self.gen.overlap if done else 0

    def _window(self, f0: int, end: int | None = None) -> np.ndarray:
        w, m = self.window, self.margin
        lo, hi = (f0 - m) * SAMPLES_PER_FRAME, (f0 + w + m) * SAMPLES_PER_FRAME
        seg = self.buffer[:, lo - self.buffer_start : hi - self.buffer_start]
        if seg.shape[1] < hi - lo:  # the conversation ends inside this window or its margin
            seg = np.pad(seg, ((0, 0), (0, hi - lo - seg.shape[1])))
        k = self.per_frame
        agent, partner = (torch.from_numpy(np.asarray(self.featurizer(t), np.float32)[k * m : k * (m + w)]) for t in seg)
        first = self.gen.done
        z = self.gen.window(agent, partner, f0, end).float().cpu().numpy()  # (new frames, motion_dim)
        # keep the audio a last window moved back to end at the conversation's end may need
        drop = (self.gen.done - w + 1 - m) * SAMPLES_PER_FRAME - self.buffer_start
        if drop > 0:
            self.buffer, self.buffer_start = self.buffer[:, drop:], self.buffer_start + drop
        return self._conversation_frames(z, first)


class StreamSession:
    """Live generation: `push` audio of both tracks as it arrives, get video frames back as soon as
    their window is generated; `finish` when the conversation ends.

    ```
    session = pipe.stream(portrait)
    for agent_chunk, partner_chunk in microphone_pairs():
        for frame in session.push(agent_chunk, partner_chunk):
            show(frame)
    for frame in session.finish():
        show(frame)
    ```
    """

    def __init__(self, motion: MotionStream, render: Callable[[np.ndarray], list[np.ndarray]]):
        self.motion, self.render = motion, render

    @property
    def frames_ready(self) -> int:
        """Frames generated so far."""
        return self.motion.frames_ready

    def push(self, agent, partner) -> list[np.ndarray]:
        return [f for z in self.motion.push(agent, partner) for f in self.render(z)]

    def finish(self) -> list[np.ndarray]:
        return [f for z in self.motion.finish() for f in self.render(z)]
