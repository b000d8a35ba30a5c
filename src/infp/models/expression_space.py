"""Expression space: what a motion latent `z` says about the face, and the neutral `z` of a portrait
(our addition to INFP; issue 25).

Generation starts from the portrait's own latent `z_src` (INFP Sec. 3.2), so a photo taken mid-word or
mid-laugh makes the open mouth the avatar's resting state. This model reads measures of the face from
`z` by a linear map fitted on the landmarks of real video frames (`train/expression.py`): the mouth's
opening, the eyes' opening and the head's yaw, pitch and roll. It also keeps the mean and covariance of
the real frames' latents. `neutral(z)` then moves `z` to where each measure lies inside its neutral
interval (mouth at most relaxed-closed, eyes at least open; the pose's interval is unbounded, so the
pose stays where it is) by the smallest change the real latents make likely: the conditional mean of a
Gaussian over `z` given those linear constraints,

    z_n = z + S A^T (A S A^T)^-1 (t - A z - b),    t = clamp(A z + b, low, high),

with `A`, `b` the read-out and `S` the latents' covariance. Everything the measures do not see (the
person's identity in `z`, say) moves only as much as it covaries with them in real faces.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from infp.errors import InfpError

KIND = "expression"
MEASURES = ("mouth", "eyes", "yaw", "pitch", "roll")  # infp.face.expression / infp.face.pose, in this order
UNBOUNDED = 1e6  # an interval's open end (finite: checkpoints refuse infinite values)


@dataclass(frozen=True)
class ExpressionConfig:
    motion_dim: int = 32  # the stage-1 latent it reads (must equal the imitator's)
    measures: tuple[str, ...] = MEASURES
    preset: str = "linear"

    def __post_init__(self) -> None:
        if self.motion_dim < 1 or not self.measures:
            raise ValueError("an expression space needs motion_dim >= 1 and at least one measure")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ExpressionConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise InfpError(f"unknown expression config fields {sorted(unknown)}")
        return cls(**{**d, "measures": tuple(d.get("measures", MEASURES))})


class Neutral(NamedTuple):
    latent: torch.Tensor  # (B, motion_dim) z_n
    before: torch.Tensor  # (B, K) the measures read from z
    after: torch.Tensor  # (B, K) the measures read from z_n


class ExpressionSpace(nn.Module):
    """(B, motion_dim) latents -> (B, K) measures; `neutral` gives the neutral latents. Fitted, not
    trained by gradient: `set_fit` stores the read-out, the latents' statistics and the intervals."""

    def __init__(self, cfg: ExpressionConfig):
        super().__init__()
        self.cfg = cfg
        d, k = cfg.motion_dim, len(cfg.measures)
        self.register_buffer("weight", torch.zeros(k, d))  # A
        self.register_buffer("bias", torch.zeros(k))  # b
        self.register_buffer("z_mean", torch.zeros(d))
        self.register_buffer("z_cov", torch.eye(d))  # S
        self.register_buffer("low", torch.full((k,), -UNBOUNDED))  # the neutral interval of each measure
        self.register_buffer("high", torch.full((k,), UNBOUNDED))

    @torch.no_grad()
    def set_fit(self, weight: torch.Tensor, bias: torch.Tensor, z_mean: torch.Tensor, z_cov: torch.Tensor,
                low: torch.Tensor, high: torch.Tensor) -> None:
        for name, value in zip(("weight", "bias", "z_mean", "z_cov", "low", "high"),
                               (weight, bias, z_mean, z_cov, low, high), strict=True):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))

    def index(self, name: str) -> int:
        if name not in self.cfg.measures:
            raise KeyError(f"no measure {name!r}; this space reads {', '.join(self.cfg.measures)}")
        return self.cfg.measures.index(name)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.float() @ self.weight.T + self.bias  # (B, K)

    @torch.no_grad()
    def neutral(self, z: torch.Tensor) -> Neutral:
        """(B, motion_dim) -> each latent moved so its measures lie in their neutral intervals (module doc)."""
        m = self(z)
        target = torch.maximum(torch.minimum(m, self.high), self.low)
        a, s = self.weight, self.z_cov
        gain = s @ a.T @ torch.linalg.inv(a @ s @ a.T)  # (D, K): the change of z per unit change of the measures
        z_n = z.float() + (target - m) @ gain.T
        return Neutral(z_n.to(z.dtype), m, self(z_n))

    def save_pretrained(self, path: str | Path, **card) -> None:
        from infp.models.checkpoint import save_checkpoint

        save_checkpoint(self, KIND, self.cfg.to_dict(), path, **card)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ExpressionSpace:
        from infp.models.checkpoint import load_checkpoint

        return load_checkpoint(path, KIND, lambda d: cls(ExpressionConfig.from_dict(d)))
