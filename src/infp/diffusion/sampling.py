"""DDIM sampling with classifier-free guidance, window by window over a whole conversation.

A conversation is generated in windows of `cfg.window` frames. Each window's temporal attention reads
the `cfg.context` latents just before it; the first window reads the portrait's own motion latent
repeated, so the video starts from the portrait's expression and pose (INFP Sec. 3.2). Guidance
contrasts the prediction with and without the audio condition (`f_m` replaced by its null embedding;
context and style kept): eps = eps_u + g (eps_c - eps_u), so g > 1 strengthens what the audio asks
for and g = 1 is plain conditional sampling.

Windows may overlap (`overlap` frames; not in the paper). A window then starts `overlap` frames
before the end of what is already generated and holds those frames fixed while it samples the rest:
at every denoising step they are replaced by themselves noised to that step's level with the
window's own starting noise (inpainting, as EDGE joins its dance windows). The join then lies inside
one window, where self-attention sees both sides of it, instead of between two windows that meet
only through the 10 context latents; the temporal attention on those still runs as trained. Costs
window / (window - overlap) times the compute; live, a window comes every window - overlap frames of
new audio, so frames wait less.

A model that generates windows as offsets (`MotionConfig.relative` or `rest_anchor`) joins them by blending instead
(`blend` frames, `window_blend`): the window is sampled freely, and its new frames are shifted by the
difference between the last held frame and the window's own estimate of that frame, the shift fading
to zero over `blend` frames. Why: inpainting keeps the held frames, but such a model then steps away
from them at the first free frame (measured: 1.10 in whitened units across the boundary, against a
median step of 0.28; its freely sampled windows are smooth across the same frame, 0.41). Blending
keeps the window's own smooth motion and starts it from where the held frames end (docs/stage2.md).

The schedule (`window_spans`) is one rule for offline and live generation alike: windows every
`window - overlap - lookahead` frames, and a last one moved back to end at the conversation's last
frame, holding every frame before that which is already generated. A window keeps its frames up to
`lookahead` frames before its end; those last frames, which have heard a little of the audio after
the frames kept, are sampled again by the next window. Offline: overlap 30 of 50, no look-ahead (a
window every 0.8 s). Live (`live=True`): a window every 8 frames with 2 frames (80 ms) of look-ahead,
so a frame waits at most 10 frames of audio (plus compute) instead of 20 (DyStream looks 60 ms ahead).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from tqdm import tqdm

from infp.diffusion.schedule import DiffusionConfig
from infp.errors import InfpError
from infp.models.motion_generator import Condition, MotionGenerator

# Measured on 10 held-out conversations with the bundled small model (docs/stage2.md): overlaps of 0, 10,
# 20 and 30 of 50 frames gave window-join jumps of 3.2, 2.2, 2.3 and 1.7 times the median step.
OVERLAP_SHARE = 0.6
BLEND_FRAMES = 10  # anchored models: new frames fade from the held frames into their own motion over these
LIVE_LOOKAHEAD = 2  # frames (80 ms) a live window looks past the frames it keeps


class Span(NamedTuple):
    """One window of the schedule: its frames [start, start + window), the new ones kept [new, end)."""

    start: int
    new: int
    end: int


def window_overlap(cfg, overlap: int | None = None) -> int:
    """The overlap of a model (`MotionConfig`) asked for, or when None the default: 60% of the window
    (30 of 50 frames), at most window - context (each window must start after `context` generated frames)."""
    if overlap is not None:
        return overlap
    return max(0, min(round(OVERLAP_SHARE * cfg.window), cfg.window - cfg.context))


def window_blend(cfg) -> int:
    """Frames over which a window's new frames fade from the held frames into its own motion: anchored
    models (`MotionConfig.offsets`) join windows by blending over BLEND_FRAMES, others by inpainting (0)."""
    return BLEND_FRAMES if cfg.offsets else 0


def window_schedule(cfg, overlap: int | None = None, live: bool = False) -> tuple[int, int]:
    """(overlap, lookahead) of a model (`MotionConfig`): offline the default overlap and no look-ahead;
    live, LIVE_LOOKAHEAD frames of look-ahead and, unless `overlap` is given, the largest overlap
    (window - context), which makes a window every context - LIVE_LOOKAHEAD = 8 frames."""
    lookahead = LIVE_LOOKAHEAD if live else 0
    if overlap is None and live:
        overlap = cfg.window - cfg.context
    return window_overlap(cfg, overlap), lookahead


def window_spans(n: int, window: int, overlap: int = 0, lookahead: int = 0) -> list[Span]:
    """The windows that generate n frames: every `window - overlap - lookahead` frames, each keeping
    its frames up to `lookahead` before its end, the last moved back to end at frame n and keeping
    all (a conversation shorter than a window: one window from 0, padded by the caller)."""
    spans, done = [], 0
    while done < n:
        start = 0 if not done else min(done - overlap, n - window)
        end = min(n, start + window) if start + window >= n else start + window - lookahead
        spans.append(Span(start, done, end))
        done = end
    return spans


def sample_window(
    model: MotionGenerator, scheduler, cond: Condition, guidance: float, generator: torch.Generator,
    known: torch.Tensor | None = None, blend: int = 0,
) -> torch.Tensor:
    """(B, W, motion_dim) normalised latents for one window, from pure noise by `scheduler`'s steps.

    `known` (B, K, motion_dim): normalised latents the window's first K frames must keep: inpainted, or
    with `blend` > 0 sampled freely and joined by blending over `blend` frames (module doc)."""
    b, w = cond.f_m.shape[:2]
    noise = torch.randn((b, w, model.cfg.motion_dim), generator=generator).to(cond.f_m.device)
    x = noise * scheduler.init_noise_sigma
    anchor = 0 if cond.anchor is None else cond.anchor  # the network works in offsets from it (`MotionConfig.offsets`)
    k = 0 if known is None else known.shape[1]
    held = None if known is None or blend else known - anchor  # inpainted in the network's (offset) space
    if held is not None and model.band is not None:
        raise ValueError("a band-emphasised model joins windows by blending (blend > 0), not by inpainting")
    guided = guidance != 1.0
    if guided:  # one batched pass for the conditional and the unconditional prediction
        both = Condition(torch.cat([cond.f_m, model.null_audio.expand_as(cond.f_m)]), torch.cat([cond.prev, cond.prev]))
    for t in scheduler.timesteps:
        tt = torch.full((b,), int(t), device=x.device, dtype=torch.long)
        if k and not blend:  # the held frames at this step's noise level
            x = torch.cat([scheduler.add_noise(held, noise[:, :k], tt), x[:, k:]], dim=1)
        if guided:
            eps_c, eps_u = model(torch.cat([x, x]), torch.cat([tt, tt]), both).chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        else:
            eps = model(x, tt, cond)
        x = scheduler.step(eps, t, x).prev_sample
    x = model.from_diffusion(x) + anchor
    if not k:
        return x
    new = x[:, k:].clone()
    if blend:  # start the new frames where the held ones end, fading back to the window's own motion
        n = min(blend, new.shape[1])
        fade = torch.linspace(1, 0, blend + 1, device=x.device)[:n].view(1, n, 1)
        new[:, :n] += (known[:, -1:] - x[:, k - 1 : k]) * fade  # (B, n, z)
    return torch.cat([known, new], dim=1)


class WindowedGenerator:
    """Stateful window-by-window generation (offline and streaming share it).

    `first_latent` (motion_dim,) is the portrait's own latent; `style_reference` (R, motion_dim) raw
    latents of the person, or None for the neutral style; `overlap` None: the default (`window_schedule`);
    `live`: the live schedule's look-ahead. Latents in and out are raw (unnormalised).
    It keeps the last `context + window` generated latents: what a window may hold or read as context.
    """

    def __init__(
        self, model: MotionGenerator, diffusion: DiffusionConfig, first_latent: torch.Tensor,
        style_reference: torch.Tensor | None = None, steps: int = 20, guidance: float = 3.0, seed: int = 0,
        overlap: int | None = None, live: bool = False,
    ):
        cfg = model.cfg
        overlap, lookahead = window_schedule(cfg, overlap, live)
        if not 0 <= overlap <= min(cfg.window - cfg.context, cfg.window - lookahead - 1):
            raise InfpError(f"the window overlap must be between 0 and {min(cfg.window - cfg.context, cfg.window - lookahead - 1)} "
                            f"frames for this model{' live' if live else ''}, got {overlap}")
        self.model, self.guidance, self.overlap, self.lookahead = model, guidance, overlap, lookahead
        self.blend = window_blend(cfg)
        self.device = model.latent_mean.device
        self.scheduler = diffusion.sampling_scheduler(steps)
        if not 0 <= seed < 2**32:  # torch's CPU generator keeps 32 bits: seeds 2^32 apart would be one seed
            raise InfpError(f"the seed must be from 0 to 2^32 - 1, got {seed}")
        if not math.isfinite(guidance):
            raise InfpError(f"the guidance must be a finite number, got {guidance}")
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            ref = None if style_reference is None else model.normalize(style_reference.to(self.device))[None]
            self.style = model.style(ref, batch=1)  # (1, style_dim)
            # frames [-context, 0) are the portrait: the first window's context; it is the rest too (`rest_anchor`)
            self.rest = model.normalize(first_latent.to(self.device)).view(1, 1, -1)  # (1, 1, z)
            self.history = self.rest[0].expand(cfg.context, -1)  # (L, z)
        self.done = 0  # frames generated; history[-1] is frame done - 1

    def spans(self, n: int) -> list[Span]:
        """The schedule for n frames in all (see `window_spans`)."""
        return window_spans(n, self.model.cfg.window, self.overlap, self.lookahead)

    @torch.no_grad()
    def window(self, agent: torch.Tensor, partner: torch.Tensor, start: int, end: int | None = None) -> torch.Tensor:
        """agent/partner (per_frame * W, F) feature rows of frames [start, start + W) -> the
        (end - done, motion_dim) raw latents of its new frames kept (`end` None: all but the
        look-ahead, start + W - lookahead); the frames before `done` are held."""
        c, w = self.model.cfg.context, self.model.cfg.window
        end = start + w - self.lookahead if end is None else end
        if not 0 <= self.done - start < w or start < 0:
            raise ValueError(f"a window from frame {start} does not continue the {self.done} frames generated")
        if not self.done < end <= start + w:
            raise ValueError(f"a window from frame {start} cannot keep frames {self.done} to {end}")
        first = self.history.shape[0] - self.done  # history index of frame 0
        context = self.history[first + start - c : first + start][None]
        known = self.history[first + start :][None] if start < self.done else None
        cond = self.model.condition(agent[None].to(self.device), partner[None].to(self.device), self.style, context,
                                    rest=self.rest)
        x = sample_window(self.model, self.scheduler, cond, self.guidance, self.generator, known, self.blend)[0]  # (W, z)
        fresh = x[self.done - start : end - start]
        self.history = torch.cat([self.history, fresh])[-(c + w) :]
        self.done = end
        return self.model.denormalize(fresh)


@torch.no_grad()
def generate(
    model: MotionGenerator, diffusion: DiffusionConfig, agent: torch.Tensor, partner: torch.Tensor,
    first_latent: torch.Tensor, style_reference: torch.Tensor | None = None, steps: int = 20,
    guidance: float = 3.0, seed: int = 0, progress: bool = False, overlap: int | None = None, live: bool = False,
) -> torch.Tensor:
    """Motion latents (T, motion_dim) for a whole conversation of T frames.

    `agent`/`partner` are (per_frame * T, F) feature rows of the two tracks, windowed by
    `window_spans` (`overlap`, `live`: see `window_schedule`). A conversation shorter than one window repeats
    its last frame's features to fill it.
    """
    cfg = model.cfg
    k, w = cfg.audio_per_frame, cfg.window
    if agent.shape != partner.shape or agent.shape[0] % k:
        raise ValueError(f"feature rows {tuple(agent.shape)} / {tuple(partner.shape)} are not two equal multiples of {k}")
    n = agent.shape[0] // k
    gen = WindowedGenerator(model, diffusion, first_latent, style_reference, steps, guidance, seed, overlap, live)
    if n < w:  # shorter than one window: repeat the last frame's features (the track's end)
        pad = lambda x: torch.cat([x, x[-k:].repeat(w - n, 1)]) if n else x.new_zeros(w * k, x.shape[1])
        return gen.window(pad(agent), pad(partner), 0, w)[:n]
    out = [gen.window(agent[k * s : k * (s + w)], partner[k * s : k * (s + w)], s, e)
           for s, _, e in tqdm(gen.spans(n), desc="motion", unit="window", disable=not progress)]
    return torch.cat(out)
