"""The portrait side of generation: find and crop the face once, and compose each frame.

Stage 1 animates a square face crop. A portrait of any size and framing is brought to it by the same
crop the training data used (`face.crop`); the renderer estimates the flow and paints the mouth in
that crop. The frame itself is then sampled from the portrait once (`Framing.compose`): each output
pixel goes through the crop's affine map, the flow and back, and reads the portrait there with a
bicubic kernel. Cropping, warping and pasting back as three bilinear resamplings kept about half the
face's fine detail (variance of the Laplacian); one bicubic read keeps nearly all of it. The face is
blended into the untouched portrait by a feathered square, so the crop's edge never shows as a seam.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from infp.errors import MediaError
from infp.face import crop_image, face_box, to_crop
from infp.face.crop import box_affine
from infp.face.landmarks import detect_portrait_face

log = logging.getLogger("infp")

UPSCALE_WARNING = 2.0  # upscaling a portrait or its face by more than this is warned of (it softens them)
MAX_SIDE = 1024  # default cap on the pasted output's longer side (H.264 at 25 fps stays light)
MAX_RENDER = 1024  # cap on the side of the crop the renderer warps the portrait at
FEATHER = 0.08  # share of the crop side over which the paste fades out at its edge


@dataclass(frozen=True, eq=False)
class Framing:
    """Where the face crop sits in the output frame."""

    background: np.ndarray  # (H, W, 3) uint8: the portrait at the output size
    box: np.ndarray  # (cx, cy, side) of the crop in background pixels
    crop_size: int  # side of the crop the renderer works at
    feather: float = FEATHER  # share of the crop side over which the face fades into the background

    def compose(self, flow: torch.Tensor, synthesis: torch.Tensor, mask: torch.Tensor) -> list[np.ndarray]:
        """The frames for a batch of rendered crops: flow (B, 2, h, w) backward, in the crop's
        [-1, 1]; synthesis (B, 3, S, S) in [0, 1] and its blend mask (B, 1, S, S), both zero where
        nothing is painted -> B (H, W, 3) uint8 frames. The portrait is read once per pixel."""
        (y0, y1, x0, x1), q = self._grid
        b = len(flow)
        grid = q.expand(b, -1, -1, -1)  # (B, h, w, 2) each output pixel's position in the crop
        moved = (grid + _sample(flow.float(), grid).permute(0, 2, 3, 1)).cpu().numpy()  # where it reads the crop
        cx, cy, side = (float(v) for v in self.box)
        half_px = side / (2 * self.crop_size)  # the crop's pixel-centre convention (face.crop.box_affine)
        maps = moved * (side / 2) + np.array([cx - half_px, cy - half_px], np.float32)  # background pixels
        paint = _sample(torch.cat([synthesis.float(), mask.float()], 1), grid).permute(0, 2, 3, 1).cpu().numpy()
        alpha, region = self._alpha_box, self.background[y0:y1, x0:x1].astype(np.float32)
        frames = []
        for k in range(b):
            face = cv2.remap(self.background, maps[k, ..., 0], maps[k, ..., 1], cv2.INTER_CUBIC,
                             borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
            m = paint[k, ..., 3:]
            face += m * (paint[k, ..., :3] * 255 - face)
            frame = self.background.copy()
            frame[y0:y1, x0:x1] = np.clip(region + alpha * (face - region), 0, 255).round().astype(np.uint8)
            frames.append(frame)
        return frames

    @property
    def _grid(self) -> tuple[tuple[int, int, int, int], torch.Tensor]:
        """The output pixels the crop covers, (y0, y1, x0, x1), and each one's position in the crop's
        [-1, 1] (1, h, w, 2): computed on first use."""
        cached = self.__dict__.get("_grid_cache")
        if cached is None:
            h, w = self.background.shape[:2]
            cx, cy, side = (float(v) for v in self.box)
            x0, x1 = max(0, int(np.floor(cx - side / 2))), min(w, int(np.ceil(cx + side / 2)) + 1)
            y0, y1 = max(0, int(np.floor(cy - side / 2))), min(h, int(np.ceil(cy + side / 2)) + 1)
            xs, ys = np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32)
            qx, qy = 2 * (xs - cx) / side + 1 / self.crop_size, 2 * (ys - cy) / side + 1 / self.crop_size
            q = np.stack(np.broadcast_arrays(qx[None, :], qy[:, None]), -1)[None]  # (1, h, w, 2)
            cached = ((y0, y1, x0, x1), torch.from_numpy(np.ascontiguousarray(q)))
            object.__setattr__(self, "_grid_cache", cached)
        return cached

    @property
    def _alpha_box(self) -> np.ndarray:
        (y0, y1, x0, x1), _ = self._grid
        return self._alpha[y0:y1, x0:x1]

    @property
    def _alpha(self) -> np.ndarray:
        """(H, W, 1) float32 weight of the pasted crop, computed on first use."""
        cached = self.__dict__.get("_alpha_cache")
        if cached is None:
            s = self.crop_size
            ramp = np.clip(np.minimum(np.arange(s) + 0.5, s - 0.5 - np.arange(s)) / max(self.feather * s, 1e-6), 0, 1)
            square = np.minimum(ramp[:, None], ramp[None, :]).astype(np.float32)
            h, w = self.background.shape[:2]
            m = box_affine(self.box, s)
            cached = cv2.warpAffine(square, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)[..., None]
            object.__setattr__(self, "_alpha_cache", cached)
        return cached


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """A portrait's face, found and cropped for the renderer."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8: the original portrait
    crop: np.ndarray  # (S, S, 3) uint8: the face at the renderer's working size (what its encoders read)
    points: np.ndarray  # (478, 3) landmarks in crop pixels
    box: np.ndarray  # (cx, cy, side) in original pixels
    full: np.ndarray | None = None  # (R, R, 3) uint8: the same crop at the output resolution, which is warped

    @property
    def render_size(self) -> int:
        return self.crop.shape[0] if self.full is None else self.full.shape[0]

    def crop_framing(self) -> Framing:
        """Crop-only output: the face crop at the render size, nothing around it to fade into."""
        crop = self.crop if self.full is None else self.full
        r = crop.shape[0]
        return Framing(crop, np.array([r / 2, r / 2, r], np.float32), r, feather=0.0)

    def framing(self, size: int | None = None) -> Framing:
        """The output frame for pasting: the portrait scaled so its longer side is `size` (default:
        its own, or larger where the face would be smaller than the renderer's crop; at most MAX_SIDE),
        with even sides for H.264."""
        h, w = self.image.shape[:2]
        # by default the face gets at least the renderer's working size in the frame: a small photo is
        # upscaled, not rendered as a 112-px video
        at_least = round(max(h, w) * self.crop.shape[0] / float(self.box[2]))
        side = size or min(max(h, w, at_least), MAX_SIDE)
        scale = side / max(h, w)
        _warn_upscale(self.name, "the portrait", max(h, w), side)
        out_w, out_h = (max(2, 2 * round(v * scale / 2)) for v in (w, h))
        sx, sy = out_w / w, out_h / h
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        background = cv2.resize(self.image, (out_w, out_h), interpolation=interp) if (out_w, out_h) != (w, h) else self.image
        box = np.array([self.box[0] * sx, self.box[1] * sy, self.box[2] * (sx + sy) / 2], np.float32)
        return Framing(np.ascontiguousarray(background), box, self.render_size)


def _sample(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(x, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def _warn_upscale(name: str, what: str, have: float, want: float) -> None:
    if want > UPSCALE_WARNING * have:
        log.warning("%s: %s is %d px across and is upscaled %.1fx to %d px, so it will look soft "
                    "(a larger portrait avoids it)", name, what, have, want / have, want)


def render_side(image: np.ndarray, box: np.ndarray, size: int) -> int:
    """The side at which the face is rendered: as many pixels as the crop covers in the default
    output frame (`FaceCrop.framing`), a multiple of 8, at least the working `size`, at most MAX_RENDER.
    The renderer warps the portrait itself at this size, so the face keeps the detail it has."""
    scale = min(1.0, MAX_SIDE / max(image.shape[:2]))
    return int(np.clip(8 * round(float(box[2]) * scale / 8), size, MAX_RENDER))


def find_face(image: np.ndarray, name: str, size: int, face_index: int | None = None) -> FaceCrop:
    """The face to animate, cropped at `size` (and at the output resolution when that is larger).
    Several faces are an error unless `face_index` picks one (0 = largest): animating a face the
    user did not mean is worse than asking."""
    if image.ndim != 3 or image.shape[2] < 3 or image.dtype != np.uint8:
        raise MediaError(f"not an RGB image (shape {image.shape}, dtype {image.dtype})", name)
    image = np.ascontiguousarray(image[..., :3])
    points = detect_portrait_face(image, name, face_index, require_one=True).points
    box = face_box(points)
    _warn_upscale(name, "the face", float(box[2]), size)
    side = render_side(image, box, size)
    full = crop_image(image, box, side) if side > size else None
    return FaceCrop(name, image, crop_image(image, box, size), to_crop(points, box, size), box, full)
