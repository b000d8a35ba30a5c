"""The stage-2 training loss: noise prediction with classifier-free-guidance dropout (INFP Sec. 3.2).

A window of target latents is noised at a random timestep and the network predicts that noise
(mean squared error). To make guidance possible the conditions are dropped at random during training,
with the paper's rates: the style vector `s_m` is zeroed with p = 0.3, the interactive motion features
`f_m` and the previous window's latents are each replaced by their null embedding with p = 0.5.

An optional velocity term (not in the paper; MDM's velocity loss) adds the mean squared error of the
frame-to-frame differences of the prediction. The plain loss scores each frame alone, so errors that
alternate from frame to frame cost no more than a steady offset, and a briefly trained model samples
jittery motion (measured: three times the true head speed, almost all of it gone under a 1.5-frame
Gaussian blur). For clean-latent prediction the term is the error in the latents' velocity; for noise
prediction it is the same error weighted by the signal-to-noise ratio, since x0 - x0_hat is
sqrt((1 - a_t) / a_t) (eps_hat - eps) at every frame of a window.

Optional Min-SNR-gamma weighting (Hang et al. 2023; not in the paper), `snr_gamma`: the noise loss
weights the error of the implied clean latents by the signal-to-noise ratio SNR(t), so the barely noised
timesteps, where the task is removing a little jitter, dominate it. Min-SNR caps that weight at gamma:
each sample's loss is scaled by min(SNR, gamma) / SNR for noise prediction and by min(SNR, gamma) for
clean-latent prediction, which moves the training signal to the middle noise levels where a window's
coarse motion (a nod or none) is decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from infp.models.motion_generator import ConditionInputs, MotionGenerator


@dataclass(frozen=True)
class CondDropout:
    style: float = 0.3
    audio: float = 0.5  # f_m
    context: float = 0.5  # the previous window's latents


class MotionBatch(NamedTuple):
    """One training batch, latents already normalised (`MotionGenerator.normalize`)."""

    agent: torch.Tensor  # (B, per_frame * W, F) feature rows of A_self
    partner: torch.Tensor  # (B, per_frame * W, F) feature rows of A_other
    target: torch.Tensor  # (B, W, motion_dim)
    context: torch.Tensor  # (B, C, motion_dim)
    style: torch.Tensor  # (B, R, motion_dim) reference latents for s_m
    rest: torch.Tensor | None = None  # (B, 1, motion_dim) the clip's rest latent (`rest_anchor` models)


def denoising_loss(
    model: MotionGenerator, batch: MotionBatch, noise_scheduler, generator: torch.Generator, drop: CondDropout,
    velocity_weight: float = 0.0, snr_gamma: float | None = None,
) -> torch.Tensor:
    """MSE between the network's output and what it predicts under the scheduler's `prediction_type`:
    the noise ("epsilon", the paper's loss) or the clean latents ("sample"), plus `velocity_weight`
    times the MSE of their differences along time, each sample weighted by Min-SNR-`snr_gamma` when
    given (module doc). All randomness (timesteps, noise, dropout) comes
    from `generator`, so a resumed run repeats the same draws."""
    b, device = batch.target.shape[0], batch.target.device

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) < p).to(device)

    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    noise = torch.randn(batch.target.shape, generator=generator).to(device)
    # (B, W, z): absolute, or offsets (`relative`, `rest_anchor`), band-emphasised when the model is (`to_diffusion`)
    clean = model.to_diffusion(batch.target - model.anchor(batch.context, batch.rest))
    x_t = noise_scheduler.add_noise(clean, noise, t)
    cond = ConditionInputs(batch.agent, batch.partner, batch.style, batch.context, coin(drop.style), coin(drop.audio),
                           coin(drop.context), batch.rest)
    kind = noise_scheduler.config.prediction_type
    if kind not in ("epsilon", "sample"):
        raise ValueError(f"prediction type {kind!r} is not supported (epsilon or sample)")
    pred, target = model(x_t, t, cond), noise if kind == "epsilon" else clean  # (B, W, z)
    loss = F.mse_loss(pred, target, reduction="none").mean((1, 2))  # (B,)
    if velocity_weight:
        loss = loss + velocity_weight * F.mse_loss(pred.diff(dim=1), target.diff(dim=1), reduction="none").mean((1, 2))
    if snr_gamma is not None:
        loss = loss * min_snr_weights(noise_scheduler, t, snr_gamma, kind)
    return loss.mean()


def min_snr_weights(noise_scheduler, t: torch.Tensor, gamma: float, kind: str = "epsilon") -> torch.Tensor:
    """(B,) Min-SNR-gamma loss weights of timesteps t: the clean-latent error weighted by min(SNR, gamma),
    expressed for what the network predicts (module doc)."""
    from diffusers.training_utils import compute_snr

    snr = compute_snr(noise_scheduler, t)
    capped = snr.clamp(max=gamma)
    return capped / snr if kind == "epsilon" else capped
