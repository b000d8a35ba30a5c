"""Speed benchmarks: how many seconds of conversation are generated per second of compute.

Benchmarks, not tests: they time the real code paths after one warm-up window and report the
real-time factor (> 1 means faster than real time).
- `bench_motion`: stage 2 alone (`infp.diffusion.generate`, 20 DDIM steps with guidance by default)
  on random audio features;
- `bench_pipeline`: portrait + two tracks -> frames, stage 2 and stage-1 rendering (`InfpPipeline`);
- `bench_stream`: a live session fed audio at the pace it would arrive (chunks of `chunk_ms`), timing
  each frame from the moment its last audio sample arrived to the moment it is ready;
- `imitator_flops`: stage 1's FLOPs per rendered frame (counted, not timed).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from infp import FPS, SAMPLE_RATE
from infp.diffusion import DiffusionConfig, generate
from infp.diffusion.sampling import window_schedule
from infp.models.motion_generator import MotionGenerator


@dataclass(frozen=True)
class ImitatorFlops:
    preset: str
    size: int
    params: int
    motion: float  # E_m on one driving frame
    render: float  # keypoints, F, warp at the working size, decoder (its window)
    appearance: float  # once per portrait

    def line(self) -> str:
        g = 1e9
        return (f"flops ({self.preset}, {self.size} px, {self.params / 1e6:.2f} M parameters): per frame "
                f"{(self.motion + self.render) / g:.2f} GFLOP (E_m {self.motion / g:.2f}, render {self.render / g:.2f}); "
                f"appearance once per portrait {self.appearance / g:.2f}")


@torch.no_grad()
def imitator_flops(model) -> ImitatorFlops:
    """Count (torch's FlopCounterMode: matrix products and convolutions) what one frame costs. The
    pipeline's final resample of the portrait into the output frame (one bicubic remap, OpenCV) and
    the no-motion frame's keypoint masks are not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = model.cfg
    image = torch.rand(1, 3, cfg.size, cfg.size)
    rep = torch.rand(1, 3, cfg.size, cfg.size)

    def count(fn) -> float:
        with FlopCounterMode(display=False) as counter:
            out = fn()
        return counter.get_total_flops(), out

    motion, z = count(lambda: model.encode_motion(rep))
    appearance, app = count(lambda: model.encode_appearance(image))
    render, _ = count(lambda: model.render(app, z, z + 0.1, compose=False))
    params = sum(p.numel() for p in model.parameters())
    return ImitatorFlops(cfg.preset, cfg.size, params, motion, render, appearance)


@dataclass(frozen=True)
class MotionBench:
    preset: str
    device: str
    threads: int
    seconds: float  # conversation generated
    compute_s: float  # wall time to generate it
    steps: int
    guidance: float
    overlap: int  # frames each window shares with the one before
    lookahead: int  # frames past those kept that each window samples (0 offline)

    @property
    def realtime_factor(self) -> float:
        return self.seconds / self.compute_s

    def line(self) -> str:
        return (f"motion ({self.preset}, {self.device}, {self.threads} thread(s)): {self.seconds:.0f} s of conversation in "
                f"{self.compute_s:.2f} s ({self.steps} DDIM steps, guidance {self.guidance:g}, overlap {self.overlap}, "
                f"look-ahead {self.lookahead}): "
                f"{self.realtime_factor:.1f}x real time, {self.seconds * FPS / self.compute_s:.0f} frames/s")


@torch.no_grad()
def bench_motion(model: MotionGenerator, diffusion: DiffusionConfig | None = None, seconds: float = 20.0,
                 steps: int = 20, guidance: float = 3.0, repeats: int = 3, overlap: int | None = None,
                 live: bool = False) -> MotionBench:
    """Best of `repeats` timings of generating `seconds` of motion (`overlap`, `live`: `window_schedule`)."""
    cfg, diffusion = model.cfg, diffusion or DiffusionConfig()
    device = model.latent_mean.device
    n = round(seconds * FPS)
    g = torch.Generator().manual_seed(0)
    rows = lambda frames: torch.randn(cfg.audio_per_frame * frames, cfg.audio_input_dim, generator=g).to(device)
    first = torch.zeros(cfg.motion_dim, device=device)
    generate(model, diffusion, rows(cfg.window), rows(cfg.window), first, steps=steps, guidance=guidance)  # warm-up
    agent, partner = rows(n), rows(n)
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(model, diffusion, agent, partner, first, steps=steps, guidance=guidance, overlap=overlap, live=live)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return MotionBench(cfg.preset, device.type, torch.get_num_threads(), n / FPS, best, steps, guidance,
                       *window_schedule(cfg, overlap, live))


def conversation_tracks(seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """The packaged two-track conversation (real speech taking turns) looped to `seconds`: the render's
    cost depends on the motion (the eye window is painted only where the eyes change), and the motion on
    the audio. Syllable-like noise bursts, used before, drift the generated eyes closed over minutes (eye
    window on 5% of the frames in the first 30 s, on all from 90 s), which real speech, with or without
    steady microphone noise, does not (docs/generate.md, "Live, measured"; docs/stage2.md)."""
    from infp.audio.io import load_conversation
    from infp.pretrained import demo_conversation

    conv = load_conversation(demo_conversation())
    n = int(seconds * SAMPLE_RATE)
    return np.resize(conv.agent, n), np.resize(conv.partner, n)  # np.resize repeats the array


@dataclass(frozen=True)
class PipelineBench:
    name: str  # "<imitator preset> + <motion preset>"
    device: str
    threads: int
    seconds: float  # conversation generated
    motion_s: float  # stage 2 alone
    total_s: float  # stage 2 + rendering + paste-back
    frame_size: tuple[int, int]  # (H, W) of the output frames

    def line(self) -> str:
        n = self.seconds * FPS
        return (f"pipeline ({self.name}, {self.device}, {self.threads} thread(s)): {self.seconds:.0f} s of conversation "
                f"-> {n:.0f} frames of {self.frame_size[1]}x{self.frame_size[0]} in {self.total_s:.1f} s: "
                f"{n / self.total_s:.1f} frames/s, {self.seconds / self.total_s:.2f}x real time "
                f"(stage 2 {self.motion_s:.1f} s, rendering {self.total_s - self.motion_s:.1f} s)")


@torch.no_grad()
def bench_pipeline(pipe, portrait, name: str, seconds: float = 20.0, **settings) -> PipelineBench:
    """Time stage 2 alone, then the whole pipeline, on `seconds` of two-track audio."""
    agent, partner = conversation_tracks(seconds)
    n = pipe.stage2.model.cfg.window * SAMPLE_RATE // FPS  # one window
    first = next(iter(pipe(portrait, agent[:n], partner[:n], **settings)))  # warm-up
    t0 = time.perf_counter()
    pipe.motion(portrait, agent, partner, **settings)
    t1 = time.perf_counter()
    for _ in pipe(portrait, agent, partner, **settings):
        pass
    t2 = time.perf_counter()
    return PipelineBench(name, pipe.device.type, torch.get_num_threads(), len(agent) / SAMPLE_RATE, t1 - t0, t2 - t1,
                         first.shape[:2])


@dataclass(frozen=True)
class StreamBench:
    name: str
    device: str
    threads: int
    seconds: float
    chunk_ms: float
    latencies: np.ndarray  # (T,) seconds from a frame's last audio sample arriving to the frame being ready
    window_s: float  # new audio per window (window - overlap - lookahead frames): the wait built into windowed generation
    lookahead: int  # frames of look-ahead past the frames each window keeps
    dropped: int  # frames not rendered because they were already later than the session's max_lag_s
    memory_mb: tuple[float, float, float]  # resident memory after the warm-up, after the first minute (NaN in a
    # shorter run: allocators grow to their working size in it) and at the end

    @property
    def frames(self) -> int:
        return len(self.latencies) + self.dropped

    @property
    def keeps_up(self) -> bool:
        """Whether it kept pace: under 1% of the frames dropped, and the last window's frames no later
        than the first's (plus 10%, plus 50 ms)."""
        w = max(1, round(self.window_s * FPS))
        lat = self.latencies
        steady = len(lat) > 0 and lat[-w:].max() <= 1.1 * lat[:w].max() + 0.05
        return bool(steady and self.dropped <= 0.01 * self.frames)

    def line(self) -> str:
        lat = self.latencies if len(self.latencies) else np.full(1, np.nan)
        return (f"stream ({self.name}, {self.device}, {self.threads} thread(s)): {self.seconds:.0f} s pushed in "
                f"{self.chunk_ms:.0f}-ms chunks at real-time pace: latency audio -> frame mean {lat.mean():.2f} s, "
                f"median {np.median(lat):.2f} s, p95 {np.percentile(lat, 95):.2f} s, max {lat.max():.2f} s (a window every "
                f"{self.window_s:.2f} s of audio, {self.lookahead} frame(s) of look-ahead); {self.dropped} of "
                f"{self.frames} frames dropped late; {'keeps up with' if self.keeps_up else 'falls behind'} real time; "
                f"memory {self.memory_mb[0]:.0f} -> {self.memory_mb[2]:.0f} MB"
                + (f" ({self.memory_mb[1]:.0f} MB after the first minute)" if np.isfinite(self.memory_mb[1]) else ""))


@torch.no_grad()
def bench_stream(pipe, portrait, name: str, seconds: float = 20.0, chunk_ms: float = 40.0, max_lag_s: float | None = None,
                 render_threads: int | None = None, **settings) -> StreamBench:
    """Feed a live session (`InfpPipeline.live`, `render_threads` as there) the packaged conversation
    looped to `seconds`, at real-time pace from this thread while its worker generates, collecting frames
    as they come; each frame's latency runs from the arrival of the last audio sample of its 40-ms slot.
    `max_lag_s` None: the session's default; frames later than that are dropped (counted), so a session
    that cannot keep pace shows drops rather than a growing lag.
    Frames are the face crop at its working size unless `paste`/`size` say otherwise (what the demo's
    live tab shows)."""
    from infp.pipeline.live import MAX_LAG_S
    from infp.pipeline.stream import paced_chunks

    agent, partner = conversation_tracks(seconds)
    lag = MAX_LAG_S if max_lag_s is None else max_lag_s
    settings = {"paste": False, **settings}
    # the first windows pay one-off costs (allocations, kernels)
    warm = pipe.live(portrait, max_lag_s=1e9, render_threads=render_threads, **settings)
    warm.push(agent[: 2 * SAMPLE_RATE], partner[: 2 * SAMPLE_RATE])
    warm.close()
    memory = resident_mb()
    session = pipe.live(portrait, max_lag_s=lag, max_frames=10**9, render_threads=render_threads, **settings)
    latencies = []  # the frames themselves are not kept: a long run's memory is the session's own
    minute = float("nan")
    for k, (a, p) in enumerate(paced_chunks(agent, partner, chunk_ms / 1000)):
        session.push(a, p)
        latencies += [f.latency_s for f in session.frames()]
        if k == round(60_000 / chunk_ms):
            minute = resident_mb()
    latencies += [f.latency_s for f in session.close()]
    g = session.motion.gen
    return StreamBench(name, pipe.device.type, torch.get_num_threads(), len(agent) / SAMPLE_RATE, chunk_ms,
                       np.array(latencies), session.motion.hop / FPS, g.lookahead,
                       session.stats.dropped_late, (memory, minute, resident_mb()))


def resident_mb() -> float:
    """This process's resident memory now (Linux /proc; NaN elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return float("nan")
