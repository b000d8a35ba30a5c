"""The stage-2 model: audio encoder, Interactive Motion Guider, style encoder and diffusion transformer.

INFP Sec. 3.2 (audio-guided motion generation). `condition` turns a window of both tracks' audio, a
style vector and the previous window's latents into what the denoiser attends to; `forward` predicts
the noise in a window of noisy latents. Classifier-free guidance works by replacing conditions with
learned null embeddings (`drop_audio`, `drop_context`) and zeroing `s_m`; the sampler in
`infp.diffusion` decides when.

Latents are generated in a whitened space, stored with the weights: z -> (z - mean) @ whiten, back by
x @ color + mean. A stage-1 latent space can be very unevenly used (the first base imitator's 32 dims
have one principal direction with 96% of the variance, head pose, and the mouth in a direction with
3%), and a diffusion loss over raw or per-dimension-scaled latents then spends itself on that one
direction. Whitening onto the principal directions kept gives each of them equal weight; the
remaining directions map to zero. Which are kept is the trainer's choice (`train.motion`): those
that visibly move the face, or those that carry 99.9% of the variance.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from infp.models.audio_encoder import AudioEncoder
from infp.models.band_emphasis import BandEmphasis
from infp.models.denoiser import DiffusionTransformer
from infp.models.motion_config import MotionConfig
from infp.models.motion_guider import InteractiveMotionGuider
from infp.models.style_encoder import StyleEncoder

KIND = "motion"


class Condition(NamedTuple):
    f_m: torch.Tensor  # (B, W, width) interactive motion features
    prev: torch.Tensor  # (B, C, width) embedded previous-window latents
    anchor: torch.Tensor | None = None  # (B, 1 or W, motion_dim) what the window is generated relative to (`anchor`)


class ConditionInputs(NamedTuple):
    """What `condition` is computed from, for a forward pass that does it all (training: one forward
    call per step, as DistributedDataParallel needs). Masks are (B,) bool or None."""

    agent: torch.Tensor  # (B, per_frame * W, F)
    partner: torch.Tensor
    style_reference: torch.Tensor  # (B, R, motion_dim) normalised latents
    context: torch.Tensor  # (B, C, motion_dim) normalised latents
    drop_style: torch.Tensor | None = None  # zero s_m
    drop_audio: torch.Tensor | None = None
    drop_context: torch.Tensor | None = None
    rest: torch.Tensor | None = None  # (B, 1, motion_dim) normalised rest latent (`rest_anchor` models)


def _where(mask: torch.Tensor | None, null: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`value` with the samples of (B,) `mask` replaced by `null` (broadcast over the rest)."""
    if mask is None:
        return value
    return torch.where(mask.view(-1, *([1] * (value.dim() - 1))), null.to(value.dtype).expand_as(value), value)


class MotionGenerator(nn.Module):
    def __init__(self, cfg: MotionConfig):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = AudioEncoder(cfg)
        self.guider = InteractiveMotionGuider(cfg)
        self.style_encoder = StyleEncoder(cfg) if cfg.use_style else None
        self.denoiser = DiffusionTransformer(cfg)
        self.band = BandEmphasis(cfg.window, cfg.band_emphasis) if cfg.band_emphasis else None
        self.null_audio = nn.Parameter(torch.zeros(1, 1, cfg.width))  # f_m of a dropped audio condition
        self.null_context = nn.Parameter(torch.zeros(1, cfg.context, cfg.width))
        self.register_buffer("latent_mean", torch.zeros(cfg.motion_dim))
        self.register_buffer("latent_whiten", torch.eye(cfg.motion_dim))  # (z, z)
        self.register_buffer("latent_color", torch.eye(cfg.motion_dim))  # (z, z), its inverse on the kept directions

    # -- latent space ----------------------------------------------------------------------------
    def set_latent_stats(self, mean, std) -> None:
        """Per-dimension scaling (a diagonal whitening)."""
        std = torch.as_tensor(std, dtype=torch.float32)
        self.latent_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.latent_whiten.copy_(torch.diag(1 / std))
        self.latent_color.copy_(torch.diag(std))

    def set_latent_whitening(self, mean, cov, keep: float = 0.999, kept=None) -> int:
        """PCA whitening by the training latents' covariance, onto the leading principal directions that
        explain `keep` of the variance, or onto the directions `kept` marks ((z,) bool, in order of
        descending variance); returns how many were kept."""
        evals, evecs = torch.linalg.eigh(torch.as_tensor(cov, dtype=torch.float64))
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)  # descending
        if kept is None:
            kept = torch.arange(len(evals)) <= int((torch.cumsum(evals, 0) / evals.sum() < keep).sum())
        kept = torch.as_tensor(kept, dtype=torch.bool)
        k = int(kept.sum())
        scale = torch.where(kept, evals.sqrt(), torch.zeros_like(evals))
        self.latent_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.latent_whiten.copy_((evecs * torch.where(scale > 0, 1 / scale.clamp_min(1e-12), 0.0)).float())
        self.latent_color.copy_((evecs * scale).T.float())
        return k

    def generated_directions(self) -> torch.Tensor:
        """(motion_dim,) bool: the normalised coordinates the model generates (the others are always 0)."""
        return self.latent_whiten.abs().sum(0) > 0

    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean) @ self.latent_whiten

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.latent_color + self.latent_mean

    # -- conditions ------------------------------------------------------------------------------
    def style(self, reference: torch.Tensor | None, batch: int = 1) -> torch.Tensor:
        """`s_m` (B, style_dim) from (B, R, motion_dim) normalised reference latents; zeros without one."""
        if reference is None or self.style_encoder is None:
            return self.null_audio.new_zeros(batch if reference is None else reference.shape[0], self.cfg.style_dim)
        return self.style_encoder(reference)

    def condition(
        self, agent: torch.Tensor, partner: torch.Tensor, style: torch.Tensor, context: torch.Tensor,
        drop_audio: torch.Tensor | None = None, drop_context: torch.Tensor | None = None,
        rest: torch.Tensor | None = None,
    ) -> Condition:
        """agent/partner (B, per_frame * W, F) feature rows, `s_m` (B, style_dim), context (B, C, motion_dim)
        normalised latents; (B,) bool masks replace a sample's audio or context by the null embedding;
        `rest` (B, 1, motion_dim) the normalised rest latent, which a `rest_anchor` model needs."""
        f_m = self.guider(self.audio_encoder(agent), self.audio_encoder(partner), style)
        anchor = self.anchor(context, rest)
        # a rest-anchored network sees its context as offsets from the rest too: it never sees absolute latents
        prev = self.denoiser.embed_context(context - rest.to(context) if self.cfg.rest_anchor else context)
        return Condition(_where(drop_audio, self.null_audio, f_m), _where(drop_context, self.null_context, prev), anchor)

    def anchor(self, context: torch.Tensor, rest: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1 or W, motion_dim): the normalised latents a window's latents are generated relative to,
        from its (B, C, motion_dim) normalised context and the (B, 1, motion_dim) normalised `rest` latent.

        With `relative` it is the context's last latent, so the network generates offsets from where
        the head is, and a window starts where the last one ended without having to copy it through
        temporal attention (measured: it barely did; docs/stage2.md); but nothing holds the offsets to
        the portrait, and over minutes the face drifts from it (`infp eval drift`). With `rest_anchor`
        it is the rest latent: the portrait's neutral start at generation, each clip's rest in training
        (`infp.data.motion.clip_rest`), so a window is motion about the person's rest, which cannot
        accumulate. With `rest_return` tau as well, the anchor of frame t starts at the context's
        last latent and returns to the rest as exp(-(t + 1) / tau): a window starts where the head is,
        as a relative one, and its default is to come back to the rest. Otherwise zeros: the paper's
        absolute latents, which hold no drift either but pull every portrait to the training data's
        usual state. A dropped context (guidance dropout) leaves the anchor in place: the offsets stay
        defined, only the network no longer sees where it is."""
        if self.cfg.rest_anchor:
            if rest is None:
                raise ValueError("a rest-anchored model (rest_anchor) needs the rest latent")
            rest = rest.to(context).expand(context.shape[0], 1, -1)
            if not self.cfg.rest_return:
                return rest
            t = torch.arange(1, self.cfg.window + 1, device=context.device, dtype=context.dtype)
            return rest + (context[:, -1:] - rest) * torch.exp(-t / self.cfg.rest_return)[None, :, None]  # (B, W, z)
        return context[:, -1:] if self.cfg.relative else torch.zeros_like(context[:, -1:])

    def to_diffusion(self, offsets: torch.Tensor) -> torch.Tensor:
        """(B, W, motion_dim) window (normalised, minus its anchor) -> what the diffusion noises and the
        sampler generates: the same, or with its nod band emphasised (`band_emphasis`)."""
        return offsets if self.band is None else self.band(offsets)

    def from_diffusion(self, y: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_diffusion`."""
        return y if self.band is None else self.band.invert(y)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Condition | ConditionInputs) -> torch.Tensor:
        """The prediction (B, W, motion_dim) for the noisy normalised latents `x_t` (noise, or clean
        latents, as the model was trained); `cond` computed by `condition`, or its inputs."""
        if isinstance(cond, ConditionInputs):
            style = self.style(cond.style_reference)
            if cond.drop_style is not None:
                style = style * (~cond.drop_style).to(style.dtype)[:, None]
            cond = self.condition(cond.agent, cond.partner, style, cond.context, cond.drop_audio, cond.drop_context,
                                  rest=cond.rest)
        return self.denoiser(x_t, t, cond.f_m, cond.prev)

    # -- checkpoints -----------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path, **card) -> None:
        from infp.models.checkpoint import save_checkpoint

        save_checkpoint(self, KIND, self.cfg.to_dict(), path, **card)

    @classmethod
    def from_pretrained(cls, path: str | Path, preset: str | None = None) -> MotionGenerator:
        from infp.models.checkpoint import load_checkpoint

        return load_checkpoint(path, KIND, lambda d: cls(MotionConfig.from_dict(d)), preset)
