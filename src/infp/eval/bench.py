"""Speed benchmarks: how many seconds of conversation a model generates per second of compute.

A benchmark, not a test: it times the real code path (`infp.diffusion.generate`, 20 DDIM steps with
classifier-free guidance by default) on random audio features after one warm-up window, and reports
the real-time factor (> 1 means faster than real time).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from infp import FPS
from infp.diffusion import DiffusionConfig, generate
from infp.models.motion_generator import MotionGenerator


@dataclass(frozen=True)
class MotionBench:
    preset: str
    device: str
    threads: int
    seconds: float  # conversation generated
    compute_s: float  # wall time to generate it
    steps: int
    guidance: float

    @property
    def realtime_factor(self) -> float:
        return self.seconds / self.compute_s

    def line(self) -> str:
        return (f"motion ({self.preset}, {self.device}, {self.threads} thread(s)): {self.seconds:.0f} s of conversation in "
                f"{self.compute_s:.2f} s ({self.steps} DDIM steps, guidance {self.guidance:g}): "
                f"{self.realtime_factor:.1f}x real time, {self.seconds * FPS / self.compute_s:.0f} frames/s")


@torch.no_grad()
def bench_motion(model: MotionGenerator, diffusion: DiffusionConfig | None = None, seconds: float = 20.0,
                 steps: int = 20, guidance: float = 3.0, repeats: int = 3) -> MotionBench:
    """Best of `repeats` timings of generating `seconds` of motion."""
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
        generate(model, diffusion, agent, partner, first, steps=steps, guidance=guidance)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return MotionBench(cfg.preset, device.type, torch.get_num_threads(), n / FPS, best, steps, guidance)
