"""The paper's hybrid facial representation, and the two inputs its ablation compares it with.

INFP (Sec. 3.1): the motion encoder `E_m` does not see the intact face. It sees the face image with
every pixel masked except the eye and lip regions (expression), plus the face-outline landmarks
projected onto that masked image (head orientation). Keeping identity cues (skin, hair, face shape)
out of the input keeps identity out of the motion latent. The ablation variants are the intact image
and a landmark map (the mesh contours drawn on black).
"""

from __future__ import annotations

from enum import Enum

import cv2
import numpy as np
from mediapipe.python.solutions import face_mesh_connections as fmc

from infp.face.topology import eye_polygons, face_oval, lip_polygons

# Region sizes relative to the polygon: eyes are grown to keep the lids and the skin that folds with
# them; lips a little less (the teeth and lip corners are already inside).
EYE_GROW = 1.6
LIP_GROW = 1.25
OUTLINE_COLOUR = (255, 255, 255)


class Representation(str, Enum):
    """What the motion encoder sees (the paper's main choice and its two ablations)."""

    HYBRID = "hybrid"
    INTACT = "intact"
    LANDMARKS = "landmarks"


def _grown(points: np.ndarray, factor: float) -> np.ndarray:
    centre = points.mean(0, keepdims=True)
    return centre + (points - centre) * factor


def region_mask(points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) uint8 mask, 255 on the eye and lip regions, from crop-space landmarks (478, 2+)."""
    mask = np.zeros((size, size), np.uint8)
    polys = [_grown(points[idx, :2], EYE_GROW) for idx in eye_polygons()]
    polys.append(_grown(points[lip_polygons()[0], :2], LIP_GROW))
    for poly in polys:
        cv2.fillConvexPoly(mask, np.round(cv2.convexHull(poly.astype(np.float32)) * 16).astype(np.int32), 255,
                           lineType=cv2.LINE_AA, shift=4)
    return mask


def _dot_radius(size: int) -> int:
    return max(1, round(size / 128))


def hybrid_image(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Masked eyes + lips with the face-outline points drawn on top. (S, S, 3) uint8."""
    size = crop.shape[0]
    mask = region_mask(points, size)[..., None].astype(np.float32) / 255.0
    out = (crop.astype(np.float32) * mask).round().astype(np.uint8)
    r = _dot_radius(size)
    for x, y in points[face_oval(), :2]:
        cv2.circle(out, (int(round(x * 16)), int(round(y * 16))), r * 16, OUTLINE_COLOUR, -1, cv2.LINE_AA, shift=4)
    return out


def landmark_map(points: np.ndarray, size: int) -> np.ndarray:
    """The mesh contours (eyes, brows, lips, irises, oval) drawn on black. (S, S, 3) uint8."""
    out = np.zeros((size, size, 3), np.uint8)
    pts = np.round(points[:, :2] * 16).astype(np.int32)
    for a, b in fmc.FACEMESH_CONTOURS | fmc.FACEMESH_IRISES:
        cv2.line(out, tuple(pts[a]), tuple(pts[b]), (255, 255, 255), 1, cv2.LINE_AA, shift=4)
    return out


def represent(crop: np.ndarray, points: np.ndarray, kind: Representation | str = Representation.HYBRID) -> np.ndarray:
    """The motion encoder's input for one aligned crop and its crop-space landmarks."""
    kind = Representation(kind)
    if kind is Representation.HYBRID:
        return hybrid_image(crop, points)
    if kind is Representation.LANDMARKS:
        return landmark_map(points, crop.shape[0])
    return crop.copy()
