"""The stage-1 imitator: `E_m`, the appearance encoder, `F`, warping and the decoder as one model.

INFP Sec. 3.1 (motion-based head imitation): a source frame is re-rendered with the motion of a
driving frame, the motion entering only as a low-dimensional latent `E_m(hybrid(driving))`. Stage 2
generates those latents from audio; this model turns them back into video. With `keypoint_prior`
the latents are also decoded into keypoints whose motion gives `F` a prior flow; with `mouth_mask`
their inner lips also tell the decoder where the mouth opens; with `mouth_interior` the opening is
painted (cavity, teeth) before the decoder's correction.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from infp.face.topology import inner_lip_arc_keypoints, inner_lip_keypoints
from infp.models.appearance_encoder import AppearanceEncoder, AppearanceFeatures
from infp.models.config import ImitatorConfig
from infp.models.decoder import Decoder
from infp.models.flow_estimator import Flow, FlowEstimator
from infp.models.keypoint_decoder import KeypointDecoder
from infp.models.motion_encoder import MotionEncoder
from infp.models.mouth_interior import MouthInterior
from infp.models.warping import keypoint_flow, polygon_mask

KIND = "imitator"


class Keypoints(NamedTuple):
    source: torch.Tensor  # (B, K, 2) in [-1, 1], decoded from z_src
    driving: torch.Tensor  # (B, K, 2), decoded from z_drv


class Rendered(NamedTuple):
    image: torch.Tensor  # (B, 3, S, S), about [0, 1]; clamp before display
    flow: Flow
    keypoints: Keypoints | None = None  # with `keypoint_prior`: what the prior flow was spread from


class Imitator(nn.Module):
    def __init__(self, cfg: ImitatorConfig):
        super().__init__()
        self.cfg = cfg
        self.motion_encoder = MotionEncoder(cfg)
        self.appearance_encoder = AppearanceEncoder(cfg)
        self.flow_estimator = FlowEstimator(cfg)
        self.decoder = Decoder(cfg)
        self.keypoint_decoder = KeypointDecoder(cfg) if cfg.keypoint_prior else None
        self.mouth_interior = MouthInterior() if cfg.mouth_interior else None
        # the upper and lower inner lip's keypoints, for the split lips
        self.lip_arcs = tuple(torch.as_tensor(a) for a in inner_lip_arc_keypoints()) if cfg.keypoint_lip_sides else None

    def encode_motion(self, rep: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) representation in [0, 1] -> (B, motion_dim)."""
        return self.motion_encoder(rep)

    def encode_appearance(self, image: torch.Tensor) -> AppearanceFeatures:
        """(B, 3, S, S) source in [0, 1]; once per portrait."""
        return self.appearance_encoder(image)

    def render(self, app: AppearanceFeatures, z_src: torch.Tensor, z_drv: torch.Tensor) -> Rendered:
        """The per-frame work: motion codes -> (keypoints ->) flow -> warp -> decode."""
        kp, prior, mouth = None, None, None
        if self.keypoint_decoder is not None:
            kp = Keypoints(self.keypoint_decoder(z_src), self.keypoint_decoder(z_drv))
            # detached: the keypoints stay landmarks, trained only against landmarks, not bent by the image loss
            src, drv = kp.source.detach(), kp.driving.detach()
            prior = keypoint_flow(src, drv, self.cfg.feature_size, self.cfg.keypoint_sigma, head=self.cfg.keypoint_head,
                                  lips=self.lip_arcs)
            if self.cfg.mouth_mask:
                lips = torch.as_tensor(inner_lip_keypoints(), device=drv.device)
                mouth = tuple(polygon_mask(k[:, lips].float(), self.cfg.feature_size).to(k.dtype) for k in (drv, src))
        flow = self.flow_estimator(app.volume, z_src, z_drv, prior)
        # None also where no frame opens its mouth beyond the source's
        interior = None if self.mouth_interior is None else self.mouth_interior(src, drv, flow.flow,
                                                                                   self.cfg.size)
        return Rendered(self.decoder(app, flow, z_src, z_drv, mouth, interior), flow, kp)

    def forward(self, source: torch.Tensor, source_rep: torch.Tensor, driving_rep: torch.Tensor) -> Rendered:
        z = self.encode_motion(torch.cat([source_rep, driving_rep]))
        z_src, z_drv = z.chunk(2)
        return self.render(self.encode_appearance(source), z_src, z_drv)

    def save_pretrained(self, path: str | Path, **card) -> None:
        from infp.models.checkpoint import save_checkpoint

        save_checkpoint(self, KIND, self.cfg.to_dict(), path, **card)

    @classmethod
    def from_pretrained(cls, path: str | Path, preset: str | None = None) -> Imitator:
        """Load a checkpoint directory; `preset`, when given, must match the checkpoint's."""
        from infp.models.checkpoint import load_checkpoint

        return load_checkpoint(path, KIND, lambda d: cls(ImitatorConfig.from_dict(d)), preset)
