"""The stage-1 imitator: `E_m`, the appearance encoder, `F`, warping and the decoder as one model.

INFP Sec. 3.1 (motion-based head imitation): a source frame is re-rendered with the motion of a
driving frame, the motion entering only as a low-dimensional latent `E_m(hybrid(driving))`. Stage 2
generates those latents from audio; this model turns them back into video. With `keypoint_prior`
the latents are also decoded into keypoints whose motion gives `F` a prior flow; with `mouth_mask`
their inner lips also tell the decoder where the mouth opens. The decoder (second design,
models/decoder.py) warps the source once at the output resolution and paints only where the
source has nothing to give (the driving mouth's opening) and, with `paint_closing`, where it gives
the wrong thing (the source's own opening, teeth, carried into a closing mouth), blended in by a
learned mask; with `paint_eyes` the same in a second window on the eyes (a blink, a photo's
half-closed eye) by a decoder of its own, where `keypoint_lid_sides` already brings each lid to the
eye's midline.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from infp.models import keypoint_layout as kl
from infp.models.appearance_encoder import AppearanceEncoder, AppearanceFeatures
from infp.models.config import ImitatorConfig
from infp.models.decoder import Decoder, Synthesis
from infp.models.decoder import compose as compose_image
from infp.models.flow_estimator import Flow, FlowEstimator
from infp.models.keypoint_decoder import KeypointDecoder
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


class Opening(NamedTuple):
    """One window the decoder paints in, around an opening of the face (the mouth; the two eyes)."""

    driving: torch.Tensor | None  # (B, 1, h, w) the driving opening at the feature resolution (with `mouth_mask`)
    source: torch.Tensor | None  # (B, 1, h, w) the source's, where it is in the source
    window: Window
    region: torch.Tensor  # (B, 1, window h, window w): where the mask may open (`paint_region`)
    gate: torch.Tensor  # (B, 1, 1, 1) in [0, 1]: whether it may open at all (`eye_change`; 1 for the mouth)
    rows: torch.Tensor | None = None  # the images it is for, when not all (B above is their number)


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


# relative change of an eye's opening: below the first none is painted, above the second all. From the keypoints E_m's
# latents decode to on the held-out clips (they keep about half a lid's motion): blink frames change 0.20 / 0.36 / 0.46
# (10th / 50th / 90th percentile) from a median-open frame, open frames 0.06 / 0.17 / 0.27 (50th / 90th / 99th)
EYE_CHANGE = (0.2, 0.35)


def opening_ratio(k: torch.Tensor, outline: tuple[int, ...], corners: tuple[int, int]) -> torch.Tensor:
    """(B,) how open an outline of keypoints (B, K, 2) is: its area over the squared distance between
    its two corners, so neither the face's size nor the head's turn in the image changes it much."""
    p = k[:, list(outline)].float()  # (B, P, 2)
    area = 0.5 * (p[..., 0] * p.roll(-1, 1)[..., 1] - p.roll(-1, 1)[..., 0] * p[..., 1]).sum(1).abs()
    return area / (k[:, corners[0]] - k[:, corners[1]]).float().pow(2).sum(-1).clamp_min(1e-8)


def eye_openings(k: torch.Tensor) -> torch.Tensor:
    """(B, 2): the right and the left eye's opening (`opening_ratio`) of keypoints (B, K, 2)."""
    return torch.stack([opening_ratio(k, outline, (lid[0], lid[-1]))
                        for outline, lid in ((kl.RIGHT_EYE, kl.RIGHT_EYELID_UPPER), (kl.LEFT_EYE, kl.LEFT_EYELID_UPPER))], 1)


def eye_change(src: torch.Tensor, drv: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, 1) in [0, 1]: how far the driving eyes' opening differs from the source's, from the
    keypoints (B, K, 2): 0 when each eye's opening (`eye_openings`) changes by less than EYE_CHANGE[0] of
    the wider one, 1 from EYE_CHANGE[1] (a blink, a half-closed eye opened), the larger of the two eyes.
    An eye that keeps its opening is the source's own, sharper than any painting at 256 px: painting it
    every frame took the renders' sharpness from 0.81 to 0.62."""
    low, high = EYE_CHANGE
    a, b = eye_openings(src), eye_openings(drv)  # (B, 2)
    change = ((a - b).abs() / torch.maximum(a, b).clamp_min(1e-8)).amax(1)
    g = ((change - low) / (high - low)).clamp(0, 1)
    return g.to(drv.dtype)[:, None, None, None]


def _union(masks: Iterable[torch.Tensor]) -> torch.Tensor:
    return functools.reduce(torch.maximum, masks)


def _grow(region: torch.Tensor, window: Window) -> torch.Tensor:
    grow = max(1, round(window.size * PAINT_MARGIN))
    # a square max filter as two 1-D ones: the same result, 2k instead of k² reads a pixel
    region = F.max_pool2d(region, (2 * grow + 1, 1), 1, (grow, 0))
    return F.max_pool2d(region, (1, 2 * grow + 1), 1, (0, grow))


def centred_window(points: torch.Tensor, cfg: ImitatorConfig) -> Window:
    """A decoder window (`cfg.paint_window` of the crop), centred on the bounding box of the driving
    keypoints (B, P, 2) in [-1, 1] of what it paints (the inner lips, the eyes), on the feature grid
    (so every scale of the decoder sees the same rectangle) and inside the crop."""
    size, cell = cfg.size, 2**cfg.feature_down
    h, w = (round(f * size) for f in cfg.paint_window)
    px = (points.detach().float() + 1) * (size / 2)  # (B, P, 2) pixels
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
        # the eyes' own painter: with one network for both windows, training it on eyes moved the mouth's
        # painting (12 portraits listening: mouth activity 1.31x a real listener's against 1.08x; docs/stage1.md)
        self.eye_decoder = Decoder(cfg) if cfg.paint_eyes else None
        self.keypoint_decoder = KeypointDecoder(cfg) if cfg.keypoint_prior else None
        # the openings whose two edges the keypoint prior splits at their midline (upper arc, lower arc)
        sides = [(kl.INNER_LIP_UPPER, kl.INNER_LIP_LOWER)] if cfg.keypoint_lip_sides else []
        if cfg.keypoint_lid_sides:
            sides += [(kl.RIGHT_EYELID_UPPER, kl.RIGHT_EYELID_LOWER), (kl.LEFT_EYELID_UPPER, kl.LEFT_EYELID_LOWER)]
        self.side_arcs = tuple((torch.tensor(u), torch.tensor(lo)) for u, lo in sides)

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
        kp, prior, plan = None, None, None
        if self.keypoint_decoder is not None:
            if calibration is None:
                kp = Keypoints(self.keypoint_decoder(z_src), self.keypoint_decoder(z_drv))
            else:
                kp = Keypoints(calibration.source.to(z_drv.dtype), self.keypoint_decoder(z_drv) + calibration.offset)
            # detached: the keypoints stay landmarks, trained only against landmarks, not bent by the image loss
            src, drv = kp.source.detach(), kp.driving.detach()
            prior = keypoint_flow(src, drv, self.cfg.feature_size, self.cfg.keypoint_sigma, head=self.cfg.keypoint_head,
                                  sides=self.side_arcs)
            plan = self.openings(src, drv)
        flow = self.flow_estimator(app.volume, z_src, z_drv, prior)
        out = self.decoder(app, flow, z_src, z_drv) if plan is None else self.paint(app, flow, z_src, z_drv, plan)
        image = compose_image(app.full if app.full is not None else app.image, flow.flow, out) if compose else None
        return Rendered(image, flow, out, kp)

    def openings(self, src: torch.Tensor, drv: torch.Tensor) -> list[Opening]:
        """The windows the decoder paints in, from the source's and the driving keypoints (B, K, 2): the
        mouth's, and with `paint_eyes` the eyes' for the images whose eyes change (none: no eye window).
        Most frames keep their eyes, so nothing of the eye window is computed for them."""
        plan = [self._opening(src, drv, (kl.INNER_LIP,), torch.ones_like(drv[:, :1, :1, None]))]
        if self.cfg.paint_eyes:
            gate = eye_change(src, drv)
            rows = (gate.flatten() > 0).nonzero().flatten()
            if len(rows):
                plan.append(self._opening(src[rows], drv[rows], (kl.RIGHT_EYE, kl.LEFT_EYE), gate[rows])._replace(rows=rows))
        return plan

    def _opening(self, src: torch.Tensor, drv: torch.Tensor, polygons: tuple[tuple[int, ...], ...],
                 gate: torch.Tensor) -> Opening:
        """The window around the driving `polygons` (keypoint index groups), where it may paint, and
        with `mouth_mask` the driving and the source openings at the feature resolution."""
        idx = [torch.tensor(p, device=drv.device) for p in polygons]
        window = centred_window(torch.cat([drv[:, i] for i in idx], 1), self.cfg)
        region = _union(paint_region(drv[:, i], window) for i in idx)
        masks = (None, None)
        if self.cfg.mouth_mask:
            masks = tuple(_union(polygon_mask(k[:, i].float(), self.cfg.feature_size).to(k.dtype) for i in idx)
                          for k in (drv, src))
        return Opening(*masks, window, region * gate, gate)

    def paint(self, app: AppearanceFeatures, flow: Flow, z_src: torch.Tensor, z_drv: torch.Tensor,
              plan: list[Opening]) -> Synthesis:
        """Each window of `plan` painted by its own decoder (the mouth's by `decoder`, the eyes' by
        `eye_decoder`, for the images the eye window is for) -> a `Synthesis` of every window's rows,
        window-major, the images an eye window is not for with a closed mask; n = 1 when no image's
        eyes change."""
        if self.cfg.paint_closing:
            def closing(o: Opening) -> Opening:
                f = flow.flow if o.rows is None else flow.flow[o.rows]
                return o._replace(region=torch.maximum(o.region, closing_region(o.source, f, o.window) * o.gate))

            plan = [closing(o) for o in plan]
        painted = [self._window(d, app, flow, z_src, z_drv, o) for d, o in zip((self.decoder, self.eye_decoder), plan)]
        if len(painted) == 1:
            return painted[0]
        w = [p.window for p in painted]
        return Synthesis(*(torch.cat([getattr(p, k) for p in painted]) for k in ("synthesis", "mask")),
                         w[0]._replace(top=torch.cat([x.top for x in w]), left=torch.cat([x.left for x in w])),
                         torch.cat([p.region for p in painted]))

    def _window(self, decoder: Decoder, app: AppearanceFeatures, flow: Flow, z_src: torch.Tensor,
                z_drv: torch.Tensor, o: Opening) -> Synthesis:
        """One window painted by `decoder` for the images `o.rows` (None: all); the other images' rows
        come back zero (mask closed), the window at the crop's corner."""
        masks = None if o.driving is None else (o.driving, o.source)
        rows = o.rows
        if rows is None:
            return decoder(app, flow, z_src, z_drv, masks, o.region, o.window)

        def pick(x: torch.Tensor) -> torch.Tensor:
            if x.stride(0) == 0:  # one portrait's features viewed as a batch: still one (`warping.sample`)
                return x[:1].expand(len(rows), *x.shape[1:])
            return x[rows]

        def spread(x: torch.Tensor) -> torch.Tensor:
            return x.new_zeros((len(z_drv), *x.shape[1:])).index_copy(0, rows, x)

        out = decoder(AppearanceFeatures(pick(app.image), tuple(pick(s) for s in app.skips), pick(app.volume)),
                      Flow(pick(flow.flow), pick(flow.occlusion)), pick(z_src), pick(z_drv), masks, o.region, o.window)
        window = o.window._replace(top=spread(o.window.top), left=spread(o.window.left))
        return Synthesis(spread(out.synthesis), spread(out.mask), window, spread(out.region))

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
