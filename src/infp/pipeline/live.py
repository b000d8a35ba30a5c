"""A live conversation: audio pushed as it happens, timestamped frames back, late frames dropped.

`LiveSession` runs a streaming session (`pipeline.stream`: stage 2 window by window, then the
renderer) on a worker thread, so whoever pushes audio (a microphone callback, a WebRTC track, a voice
agent) never waits for the models:

- `push(agent, partner)` returns at once; `lag_s` says how far the frames trail the audio pushed.
- Every frame belongs to a 40-ms slot of the conversation and carries the agent's audio of that slot,
  so a client plays sound and picture together. Its `latency_s` runs from the moment the slot's last
  audio sample was pushed to the moment the frame was ready.
- When the worker falls behind, frames already later than `max_lag_s` are not rendered (`dropped_late`);
  stage 2 still runs for them, so the motion stays continuous and the next frames are on time.
- Frames wait for the reader in a queue of at most `max_frames`; a slow reader loses the oldest
  (`dropped_unread`): memory does not grow with a stalled client.
- With `render_threads` N > 1 the frames are rendered by N threads of one core each, a batch each, while
  the worker samples the next window: on CPU cores this renders more frames a second than one batch at a
  time on N cores (oneDNN's convolutions on small batches share out poorly), and stage 2 no longer waits
  for the renderer. Frames are still handed out in order.

```
session = pipe.live(portrait)
while call_is_on:
    session.push(agent_chunk, partner_chunk)   # 16 kHz float32, equal lengths
    for frame in session.frames():            # whatever is ready, never blocks
        show(frame.image); play(frame.agent_audio)
for frame in session.close():                 # the rest, once the call has ended
    show(frame.image)
```
"""

from __future__ import annotations

import bisect
import collections
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from infp import FPS
from infp.pipeline.stream import SAMPLES_PER_FRAME, MotionStream, _track

MAX_LAG_S = 1.0  # frames later than this are dropped rather than rendered
MAX_FRAMES = 50  # frames kept for a reader that does not collect them (2 s)
RENDER_BATCH = 4  # frames rendered at once: batches of 4 cost 10% more a frame than of 8 on 2 CPU cores,
# and the window's first frames come out 4 frames' rendering sooner


@dataclass(frozen=True)
class LiveFrame:
    """One frame of the conversation, in order of `index` (25 per second)."""

    index: int
    image: np.ndarray  # (H, W, 3) uint8
    agent_audio: np.ndarray  # (640,) float32: the agent's voice during this frame
    latency_s: float  # from the arrival of the frame's last audio sample to the frame being ready

    @property
    def time_s(self) -> float:
        """Where the frame starts in the conversation."""
        return self.index / FPS


@dataclass(frozen=True)
class LiveStats:
    frames: int  # frames delivered to the queue
    dropped_late: int  # not rendered: later than max_lag_s already
    dropped_unread: int  # rendered, then pushed out of the queue by newer ones before being read
    lag_s: float  # audio pushed that has no frame yet (seconds)


class _Arrivals:
    """When each sample count was reached: the arrival time of a frame's last audio sample."""

    def __init__(self):
        self.totals: list[int] = []
        self.times: list[float] = []

    def add(self, total: int, t: float) -> None:
        self.totals.append(total)
        self.times.append(t)

    def of_frame(self, index: int) -> float:
        k = bisect.bisect_left(self.totals, (index + 1) * SAMPLES_PER_FRAME)
        return self.times[min(k, len(self.times) - 1)]  # past the end: the last push (the conversation's end)

    def forget_before(self, index: int) -> None:
        k = bisect.bisect_left(self.totals, index * SAMPLES_PER_FRAME)
        if k > 1:
            del self.totals[: k - 1], self.times[: k - 1]


class LiveSession:
    """See the module doc. `render`: (k, motion_dim) latents -> k frames (`InfpPipeline.renderer`)."""

    def __init__(self, motion: MotionStream, render: Callable[[np.ndarray], list[np.ndarray]],
                 max_lag_s: float = MAX_LAG_S, max_frames: int = MAX_FRAMES, clock: Callable[[], float] = time.perf_counter,
                 render_batch: int = RENDER_BATCH, render_threads: int = 1):
        if max_lag_s <= 0 or max_frames < 1 or render_batch < 1 or render_threads < 1:
            raise ValueError(f"max_lag_s must be > 0, max_frames, render_batch and render_threads >= 1 "
                             f"(got {max_lag_s}, {max_frames}, {render_batch}, {render_threads})")
        self.motion, self.render, self.max_lag_s, self.clock = motion, render, max_lag_s, clock
        self.render_batch, self.render_threads = render_batch, render_threads
        # torch's thread count is per thread once set. With render threads, stage 2 takes one core too (on 2
        # cores: median latency 0.53-0.54 s against 0.56-0.61 s with two, measured); without, the caller's count
        self._threads = torch.get_num_threads()
        self._pool = None if render_threads == 1 else ThreadPoolExecutor(
            render_threads, "infp-render", initializer=torch.set_num_threads, initargs=(1,))
        # batches handed to the pool and not yet handed out, in order, with their frame counts
        self._pending: collections.deque[tuple[Future, int]] = collections.deque()
        self._lock = threading.Lock()  # guards _pending (batches finish on the render threads)
        self._inbox: queue.Queue = queue.Queue()
        self._out: collections.deque[LiveFrame] = collections.deque(maxlen=max_frames)
        self._ready = threading.Condition()
        self._arrivals = _Arrivals()
        self._agent = np.zeros(0, np.float32)  # the agent's audio from frame `_next` on
        self._pushed = 0  # samples pushed per track (caller's side)
        self._next = 0  # the next frame the worker will turn out (rendered or dropped)
        self._delivered = self._late = self._unread = 0
        self._cost: float | None = None  # seconds to render a frame, a running average
        self._error: BaseException | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="infp-live", daemon=True)
        self._worker.start()

    # -- the caller's side ------------------------------------------------------------------------

    def push(self, agent, partner) -> None:
        """Add equal-length chunks of both tracks (16 kHz float32); returns at once."""
        self._raise()
        if self._closed:
            raise RuntimeError("this live session is closed; start a new one")
        a, p = _track(agent, "agent"), _track(partner, "partner")
        if a.shape != p.shape:
            raise ValueError(f"push equal-length chunks of both tracks (agent {a.shape[0]}, partner {p.shape[0]} samples)")
        self._pushed += a.shape[0]
        self._inbox.put((a, p, self._pushed, self.clock()))

    def frames(self) -> list[LiveFrame]:
        """Every frame ready now, oldest first (never blocks)."""
        self._raise()
        with self._ready:
            out = list(self._out)
            self._out.clear()
        return out

    def get(self, timeout: float | None = None) -> LiveFrame | None:
        """The next frame, waiting up to `timeout` seconds for it (None when none came, or the session
        has ended and every frame was read)."""
        with self._ready:
            self._ready.wait_for(lambda: self._out or self._error is not None or not self._worker.is_alive(), timeout)
            frame = self._out.popleft() if self._out else None
        if frame is None:
            self._raise()
        return frame

    def close(self, timeout: float | None = None) -> list[LiveFrame]:
        """End the conversation: the worker generates what is left; returns every frame not yet read."""
        if not self._closed:
            self._closed = True
            self._inbox.put(None)
        self._worker.join(timeout)
        return self.frames()

    @property
    def stats(self) -> LiveStats:
        lag = self._pushed / (FPS * SAMPLES_PER_FRAME) - self._next / FPS
        return LiveStats(self._delivered, self._late, self._unread, max(0.0, lag))

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the worker -------------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(1 if self._pool is not None else self._threads)
        try:
            while self._error is None:
                item = self._inbox.get()
                if item is None:
                    for z in self.motion.finish():
                        self._turn_out(z)
                    break
                a, p, total, t = item
                self._arrivals.add(total, t)
                self._agent = np.concatenate([self._agent, a])
                for z in self.motion.push(a, p):
                    self._turn_out(z)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's next call
            self._error = e
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=self._error is not None)
                torch.set_num_threads(self._threads)  # the render threads set torch's default for new threads to 1
            with self._ready:
                self._ready.notify_all()

    def _turn_out(self, z: np.ndarray) -> None:
        """Render the (k, motion_dim) latents of frames [_next, _next + k): as many as can be ready
        within `max_lag_s` of their audio at the render cost measured so far, spread evenly over the
        window (a lower frame rate rather than a frozen stretch), the rest dropped. They are rendered
        `render_batch` at a time and each batch is handed out as soon as it is ready: the window's first
        frames, whose audio came first, do not wait for its last ones."""
        first, k = self._next, len(z)
        arrivals = [self._arrivals.of_frame(first + j) for j in range(k)]
        keep = self._affordable(np.array(arrivals) + self.max_lag_s, self.clock())
        self._late += k - len(keep)
        agent = self._agent
        self._next += k
        self._agent = self._agent[k * SAMPLES_PER_FRAME :]
        self._arrivals.forget_before(self._next)
        for b in range(0, len(keep), self.render_batch):
            chunk = keep[b : b + self.render_batch]
            job = (first, chunk, z[chunk], agent, arrivals)
            if self._pool is None:
                self._publish(self._render(*job))
                continue
            with self._lock:
                future = self._pool.submit(self._render, *job)
                self._pending.append((future, len(chunk)))
            future.add_done_callback(self._hand_out)

    def _render(self, first: int, chunk: list[int], z: np.ndarray, agent: np.ndarray, arrivals: list[float]
                ) -> list[LiveFrame]:
        """One batch's frames; updates the render cost (seconds a frame, per render thread's share)."""
        start = self.clock()
        images = self.render(z)
        ready = self.clock()
        per_frame = (ready - start) / len(chunk) / self.render_threads
        self._cost = per_frame if self._cost is None else 0.8 * self._cost + 0.2 * per_frame
        return [LiveFrame(first + j, image, _slot(agent, j), ready - arrivals[j]) for j, image in zip(chunk, images, strict=True)]

    def _hand_out(self, _: Future) -> None:
        """Publish the pool's finished batches that are next in order (batches can finish out of order)."""
        with self._lock:
            while self._pending and self._pending[0][0].done():
                future, _ = self._pending.popleft()
                if future.cancelled():
                    continue
                if (e := future.exception()) is not None:
                    self._error = self._error or e
                    with self._ready:
                        self._ready.notify_all()
                    continue
                self._publish(future.result())

    def _publish(self, frames: list[LiveFrame]) -> None:
        with self._ready:
            self._unread += max(0, len(self._out) + len(frames) - self._out.maxlen)
            self._out.extend(frames)
            self._delivered += len(frames)
            self._ready.notify_all()

    def _affordable(self, deadlines: np.ndarray, now: float) -> list[int]:
        """The frames (indices into the window) to render: the most, evenly spaced and ending with the
        newest, whose rendering in one batch from `now` ends before the earliest deadline among them."""
        k = len(deadlines)
        if self._cost is None:
            return list(range(k))  # nothing measured yet
        with self._lock:
            backlog = sum(n for _, n in self._pending)  # frames the render threads still have ahead of these
        for m in range(k, 0, -1):
            idx = k - 1 - np.floor(np.arange(m) * k / m).astype(int)  # every k/m-th frame back from the newest
            if now + (backlog + m) * self._cost <= deadlines[idx].min():
                return sorted(idx.tolist())
        return []


def _slot(agent: np.ndarray, j: int) -> np.ndarray:
    """The agent's audio of a window's frame j (`agent` starts at the window's first frame)."""
    slot = agent[j * SAMPLES_PER_FRAME : (j + 1) * SAMPLES_PER_FRAME]
    return np.pad(slot, (0, SAMPLES_PER_FRAME - len(slot)))  # the conversation's last, partial frame
