"""The portrait side of generation: find and crop the face once, and paste animated crops back.

Stage 1 animates a square face crop at its own resolution. A portrait of any size and framing is
brought to it by the same crop the training data used (`face.crop`), and each animated crop is
warped back into the (resized) original through the inverse of that crop's affine map, blended by a
feathered square so the crop's edge never shows as a seam.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from infp.errors import MediaError
from infp.face import crop_image, face_box, to_crop
from infp.face.crop import box_affine
from infp.face.landmarks import detect_portrait_face

MAX_SIDE = 1024  # default cap on the pasted output's longer side (H.264 at 25 fps stays light)
MAX_RENDER = 1024  # cap on the side of the crop the renderer warps the portrait at
FEATHER = 0.08  # share of the crop side over which the paste fades out at its edge


@dataclass(frozen=True, eq=False)
class Framing:
    """Where the face crop sits in the output frame."""

    background: np.ndarray  # (H, W, 3) uint8: the portrait at the output size
    box: np.ndarray  # (cx, cy, side) of the crop in background pixels
    crop_size: int  # side of the crop the renderer works at

    def paste(self, crop: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 rendered crop -> (H, W, 3) uint8 frame."""
        h, w = self.background.shape[:2]
        m = box_affine(self.box, self.crop_size)
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        face = cv2.warpAffine(crop, m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        alpha = self._alpha
        return (face * alpha + self.background * (1.0 - alpha)).round().astype(np.uint8)

    @property
    def _alpha(self) -> np.ndarray:
        """(H, W, 1) float32 weight of the pasted crop, computed on first use."""
        cached = self.__dict__.get("_alpha_cache")
        if cached is None:
            s = self.crop_size
            ramp = np.clip(np.minimum(np.arange(s) + 0.5, s - 0.5 - np.arange(s)) / (FEATHER * s), 0, 1)
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

    def framing(self, size: int | None = None) -> Framing:
        """The output frame for pasting: the portrait scaled so its longer side is `size` (default:
        its own, at most MAX_SIDE), with even sides for H.264."""
        h, w = self.image.shape[:2]
        side = size or min(max(h, w), MAX_SIDE)
        scale = side / max(h, w)
        out_w, out_h = (max(2, 2 * round(v * scale / 2)) for v in (w, h))
        sx, sy = out_w / w, out_h / h
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        background = cv2.resize(self.image, (out_w, out_h), interpolation=interp) if (out_w, out_h) != (w, h) else self.image
        box = np.array([self.box[0] * sx, self.box[1] * sy, self.box[2] * (sx + sy) / 2], np.float32)
        return Framing(np.ascontiguousarray(background), box, self.render_size)


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
    side = render_side(image, box, size)
    full = crop_image(image, box, side) if side > size else None
    return FaceCrop(name, image, crop_image(image, box, size), to_crop(points, box, size), box, full)
