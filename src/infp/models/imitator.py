"""The stage-1 imitator: `E_m`, the appearance encoder, `F`, warping and the decoder as one model.

INFP Sec. 3.1 (motion-based head imitation): a source frame is re-rendered with the motion of a
driving frame, the motion entering only as a low-dimensional latent `E_m(hybrid(driving))`. Stage 2
generates those latents from audio; this model turns them back into video. With `keypoint_prior`
the latents are also decoded into keypoints whose motion gives `F` a prior flow; with `mouth_mask`
their inner lips also tell the decoder where the mouth opens. The decoder (second design,
models/decoder.py) warps the source once at the output resolution and paints only where the
source has nothing to give (the driving mouth's opening) and, with `paint_closing`, where it gives
the wrong thing (the source's own opening, teeth, carried into a closing mouth), blended in by a
learned mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from infp.models.appearance_encoder import AppearanceEncoder, AppearanceFeatures
from infp.models.config import ImitatorConfig
from infp.models.decoder import Decoder, Synthesis
from infp.models.decoder import compose as compose_image
from infp.models.flow_estimator import Flow, FlowEstimator
from infp.models.keypoint_decoder import KeypointDecoder
from infp.models.keypoint_layout import INNER_LIP, INNER_LIP_LOWER, INNER_LIP_UPPER
from infp.models.motion_encoder import MotionEncoder
from infp.models.warping import Window, keypoint_flow, polygon_mask, sample

KIND = "imitator"


class Keypoints(NamedTuple):
    source: torch.Tensor  # (B, K, 2) in [-1, 1], decoded from z_src
    driving: torch.Tensor  # (B, K, 2), decoded from z_drv


class Calibration(NamedTuple):
    """Keypoints of one portrait known better than its latent says (the pipeline's, from the detected
    landmarks): the source's keypoints replace those decoded from z_src, and `offset` is added to those
    decoded from z_drv. E_m keeps only part of the mouth's opening (0.4-0.65 of its spread), so a
    photo's open mouth can decode as nearly closed; its detected lips, moved by the decoded offsets,
    are what the renderer must warp."""

    source: torch.Tensor  # (B, K, 2) in [-1, 1]
    offset: torch.Tensor  # (B, K, 2)


class Rendered(NamedTuple):
    image: torch.Tensor | None  # (B, 3, R, R), about [0, 1]; clamp before display. R: the source's resolution
    flow: Flow
    synthesis: Synthesis  # what the decoder painted and where it blends in
    keypoints: Keypoints | None = None  # with `keypoint_prior`: what the prior flow was spread from


PAINT_MARGIN = 1 / 32  # of the crop side (8 px at 256): the lips parting around the opening are painted too


def paint_region(lips: torch.Tensor, window: Window) -> torch.Tensor:
    """Where the decoder may paint: the driving mouth's opening (its inner-lip polygon, (B, P, 2) in
    the crop's [-1, 1]) grown by PAINT_MARGIN -> (B, 1, window height, window width) in [0, 1]. The
    source has nothing to give there when the mouth opens wider than its own; everywhere else the
    output is the source's own pixels, warped. Without this bound a blend mask learns to mix the
    low-resolution synthesis into every edge the flow misplaces (hair, outline), which L1 and VGG
    losses reward as a blur (docs/stage1.md, "The second design")."""
    inside = polygon_mask(window.to_window(lips.float()), (window.height, window.width), supersample=2)
    return _grow(inside, window).to(lips.dtype)


def closing_region(source_mouth: torch.Tensor, flow: torch.Tensor, window: Window) -> torch.Tensor:
    """Where the source's own mouth opening (B, 1, h, w) at the feature resolution lands in the
    output once warped by `flow` (B, 2, h, w), grown by PAINT_MARGIN -> (B, 1, window height, window
    width) in [0, 1]. The warp squeezes a photo's open mouth into the band between the driving
    lips; what it shows there is the photo's teeth, which only painting can cover."""
    grid = window.coords(1, flow)  # the window's pixels at the working size
    landed = sample(source_mouth.float(), grid + sample(flow.float(), grid).permute(0, 2, 3, 1))
    return _grow(landed, window).to(flow.dtype)


def _grow(region: torch.Tensor, window: Window) -> torch.Tensor:
    grow = max(1, round(window.size * PAINT_MARGIN))
    # a square max filter as two 1-D ones: the same result, 2k instead of k² reads a pixel
    region = F.max_pool2d(region, (2 * grow + 1, 1), 1, (grow, 0))
    return F.max_pool2d(region, (1, 2 * grow + 1), 1, (0, grow))


def mouth_window(lips: torch.Tensor, cfg: ImitatorConfig) -> Window:
    """The decoder's window (`cfg.paint_window` of the crop), centred on the driving inner lips'
    bounding box (B, P, 2) in [-1, 1], on the feature grid (so every scale of the decoder sees the
    same rectangle) and inside the crop."""
    size, cell = cfg.size, 2**cfg.feature_down
    h, w = (round(f * size) for f in cfg.paint_window)
    px = (lips.detach().float() + 1) * (size / 2)  # (B, P, 2) pixels
    # non-finite keypoints (broken weights) fall back to the crop's centre: the NaN shows in the image instead
    centre = torch.nan_to_num((px.amin(1) + px.amax(1)) / 2, nan=size / 2, posinf=size / 2, neginf=size / 2)  # (B, 2) x, y

    def start(c: torch.Tensor, extent: int) -> torch.Tensor:
        return (torch.round((c - extent / 2) / cell) * cell).clamp(0, size - extent).long()

    return Window(start(centre[:, 1], h), start(centre[:, 0], w), h, w, size)


class Imitator(nn.Module):
    def __init__(self, cfg: ImitatorConfig):
        super().__init__()
        self.cfg = cfg
        self.motion_encoder = MotionEncoder(cfg)
        self.appearance_encoder = AppearanceEncoder(cfg)
        self.flow_estimator = FlowEstimator(cfg)
        self.decoder = Decoder(cfg)
        self.keypoint_decoder = KeypointDecoder(cfg) if cfg.keypoint_prior else None
        # the upper and lower inner lip's keypoints, for the split lips
        self.lip_arcs = (torch.tensor(INNER_LIP_UPPER), torch.tensor(INNER_LIP_LOWER)) if cfg.keypoint_lip_sides else None

    def encode_motion(self, rep: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) representation in [0, 1] -> (B, motion_dim)."""
        return self.motion_encoder(rep)

    def encode_appearance(self, image: torch.Tensor, full: torch.Tensor | None = None) -> AppearanceFeatures:
        """(B, 3, S, S) source in [0, 1]; once per portrait. `full`: the same crop at the output
        resolution (B, 3, R, R), which the renderer then warps instead of `image`."""
        return self.appearance_encoder(image, full)

    def render(self, app: AppearanceFeatures, z_src: torch.Tensor, z_drv: torch.Tensor, compose: bool = True,
               calibration: Calibration | None = None) -> Rendered:
        """The per-frame work: motion codes -> (keypoints ->) flow -> warp the source, paint what it
        lacks. `compose` False leaves the image None, for a caller that warps the source itself (the
        pipeline samples the portrait once, straight into the output frame: pipeline/portrait.py).
        `calibration`: the source's keypoints and an offset of the driving ones (`Calibration`)."""
        kp, prior, mouth, region, window = None, None, None, None, None
        if self.keypoint_decoder is not None:
            if calibration is None:
                kp = Keypoints(self.keypoint_decoder(z_src), self.keypoint_decoder(z_drv))
            else:
                kp = Keypoints(calibration.source.to(z_drv.dtype), self.keypoint_decoder(z_drv) + calibration.offset)
            # detached: the keypoints stay landmarks, trained only against landmarks, not bent by the image loss
            src, drv = kp.source.detach(), kp.driving.detach()
            prior = keypoint_flow(src, drv, self.cfg.feature_size, self.cfg.keypoint_sigma, head=self.cfg.keypoint_head,
                                  lips=self.lip_arcs)
            lips = torch.tensor(INNER_LIP, device=drv.device)
            if self.cfg.mouth_mask:
                mouth = tuple(polygon_mask(k[:, lips].float(), self.cfg.feature_size).to(k.dtype) for k in (drv, src))
            window = mouth_window(drv[:, lips], self.cfg)
            region = paint_region(drv[:, lips], window)
        flow = self.flow_estimator(app.volume, z_src, z_drv, prior)
        if self.cfg.paint_closing:
            region = torch.maximum(region, closing_region(mouth[1], flow.flow, window))
        out = self.decoder(app, flow, z_src, z_drv, mouth, region, window)
        image = compose_image(app.full if app.full is not None else app.image, flow.flow, out) if compose else None
        return Rendered(image, flow, out, kp)

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
