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


def denoising_loss(
    model: MotionGenerator, batch: MotionBatch, noise_scheduler, generator: torch.Generator, drop: CondDropout,
    velocity_weight: float = 0.0,
) -> torch.Tensor:
    """MSE between the network's output and what it predicts under the scheduler's `prediction_type`:
    the noise ("epsilon", the paper's loss) or the clean latents ("sample"), plus `velocity_weight`
    times the MSE of their differences along time. All randomness (timesteps, noise, dropout) comes
    from `generator`, so a resumed run repeats the same draws."""
    b, device = batch.target.shape[0], batch.target.device

    def coin(p: float) -> torch.Tensor:
        return (torch.rand(b, generator=generator) < p).to(device)

    t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    noise = torch.randn(batch.target.shape, generator=generator).to(device)
    x_t = noise_scheduler.add_noise(batch.target, noise, t)
    cond = ConditionInputs(batch.agent, batch.partner, batch.style, batch.context, coin(drop.style), coin(drop.audio),
                           coin(drop.context))
    kind = noise_scheduler.config.prediction_type
    if kind not in ("epsilon", "sample"):
        raise ValueError(f"prediction type {kind!r} is not supported (epsilon or sample)")
    pred, target = model(x_t, t, cond), noise if kind == "epsilon" else batch.target  # (B, W, z)
    loss = F.mse_loss(pred, target)
    if velocity_weight:
        loss = loss + velocity_weight * F.mse_loss(pred.diff(dim=1), target.diff(dim=1))
    return loss
