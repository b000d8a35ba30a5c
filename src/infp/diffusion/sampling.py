"""DDIM sampling with classifier-free guidance, window by window over a whole conversation.

A conversation is generated in windows of `cfg.window` frames. Each window's temporal attention reads
the last `cfg.context` latents generated before it, so windows join without a jump; the first window
reads the portrait's own motion latent repeated, so the video starts from the portrait's expression
and pose (INFP Sec. 3.2). Guidance contrasts the prediction with and without the audio condition
(`f_m` replaced by its null embedding; context and style kept): eps = eps_u + g (eps_c - eps_u), so g > 1
strengthens what the audio asks for and g = 1 is plain conditional sampling.
"""

from __future__ import annotations

import torch
from tqdm import tqdm

from infp.diffusion.schedule import DiffusionConfig
from infp.models.motion_generator import Condition, MotionGenerator


def sample_window(
    model: MotionGenerator, scheduler, cond: Condition, guidance: float, generator: torch.Generator,
) -> torch.Tensor:
    """(B, W, motion_dim) normalised latents for one window, from pure noise by `scheduler`'s steps."""
    b, w = cond.f_m.shape[:2]
    x = torch.randn((b, w, model.cfg.motion_dim), generator=generator).to(cond.f_m.device) * scheduler.init_noise_sigma
    guided = guidance != 1.0
    if guided:  # one batched pass for the conditional and the unconditional prediction
        both = Condition(torch.cat([cond.f_m, model.null_audio.expand_as(cond.f_m)]), torch.cat([cond.prev, cond.prev]))
    for t in scheduler.timesteps:
        tt = torch.full((b,), int(t), device=x.device, dtype=torch.long)
        if guided:
            eps_c, eps_u = model(torch.cat([x, x]), torch.cat([tt, tt]), both).chunk(2)
            eps = eps_u + guidance * (eps_c - eps_u)
        else:
            eps = model(x, tt, cond)
        x = scheduler.step(eps, t, x).prev_sample
    return x


class WindowedGenerator:
    """Stateful window-by-window generation (offline and streaming share it).

    `first_latent` (motion_dim,) is the portrait's own latent; `style_reference` (R, motion_dim) raw
    latents of the person, or None for the neutral style. Latents in and out are raw (unnormalised).
    """

    def __init__(
        self, model: MotionGenerator, diffusion: DiffusionConfig, first_latent: torch.Tensor,
        style_reference: torch.Tensor | None = None, steps: int = 20, guidance: float = 3.0, seed: int = 0,
    ):
        self.model, self.guidance = model, guidance
        self.device = model.latent_mean.device
        self.scheduler = diffusion.sampling_scheduler(steps)
        self.generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            ref = None if style_reference is None else model.normalize(style_reference.to(self.device))[None]
            self.style = model.style(ref, batch=1)  # (1, style_dim)
        self.set_context(first_latent.to(self.device).expand(model.cfg.context, -1))

    def set_context(self, latents: torch.Tensor) -> None:
        """(C, motion_dim) raw latents the next window continues from."""
        self.context = self.model.normalize(latents.to(self.device))[None]  # (1, C, z)

    @torch.no_grad()
    def next_window(self, agent: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
        """agent/partner (per_frame * W, F) feature rows -> (W, motion_dim) raw latents."""
        cond = self.model.condition(agent[None].to(self.device), partner[None].to(self.device), self.style, self.context)
        x = sample_window(self.model, self.scheduler, cond, self.guidance, self.generator)
        self.context = x[:, -self.model.cfg.context :]
        return self.model.denormalize(x[0])


@torch.no_grad()
def generate(
    model: MotionGenerator, diffusion: DiffusionConfig, agent: torch.Tensor, partner: torch.Tensor,
    first_latent: torch.Tensor, style_reference: torch.Tensor | None = None, steps: int = 20,
    guidance: float = 3.0, seed: int = 0, progress: bool = False,
) -> torch.Tensor:
    """Motion latents (T, motion_dim) for a whole conversation of T frames.

    `agent`/`partner` are (per_frame * T, F) feature rows of the two tracks. Windows tile the frames;
    when T is not a multiple of the window, the last window is moved back to end at frame T and
    continues from the latents just before its start (its overlap with the previous window is
    regenerated), so every window is full length and every join is a context join.
    """
    cfg = model.cfg
    k, w = cfg.audio_per_frame, cfg.window
    if agent.shape != partner.shape or agent.shape[0] % k:
        raise ValueError(f"feature rows {tuple(agent.shape)} / {tuple(partner.shape)} are not two equal multiples of {k}")
    n = agent.shape[0] // k
    gen = WindowedGenerator(model, diffusion, first_latent, style_reference, steps, guidance, seed)
    if n < w:  # shorter than one window: repeat the last frame's features (the track's end)
        pad = lambda x: torch.cat([x, x[-k:].repeat(w - n, 1)]) if n else x.new_zeros(w * k, x.shape[1])
        return gen.next_window(pad(agent), pad(partner))[:n]
    starts = list(range(0, n - w + 1, w))
    if starts[-1] + w < n:
        starts.append(n - w)
    out = torch.empty(n, cfg.motion_dim, device=gen.device)
    for s in tqdm(starts, desc="motion", unit="window", disable=not progress):
        if s:
            gen.set_context(out[s - cfg.context : s])
        out[s : s + w] = gen.next_window(agent[k * s : k * (s + w)], partner[k * s : k * (s + w)])
    return out
