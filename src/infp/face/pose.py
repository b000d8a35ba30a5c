"""Head pose (yaw, pitch, roll) from Face Mesh landmarks.

A head frame is built from the landmarks themselves: x from the right to the left outer eye corner,
y from forehead to chin (orthogonalised), z = x cross y (into the screen for a frontal face). This needs
no canonical 3D model (which the MediaPipe wheel does not ship) and is exact for rigid rotations of a
landmark set; angles are relative to a frontal, upright face.

Sign convention (degrees): yaw > 0 turns the nose toward the image's right; pitch > 0 tilts the face
up; roll > 0 rotates the face clockwise in the image.
"""

from __future__ import annotations

import numpy as np

from infp.face.topology import CHIN, FOREHEAD, LEFT_EYE_OUTER, RIGHT_EYE_OUTER


def head_rotation(points: np.ndarray) -> np.ndarray:
    """Rotation matrix (..., 3, 3) whose columns are the head's x, y, z axes in image space."""
    ex = points[..., LEFT_EYE_OUTER, :] - points[..., RIGHT_EYE_OUTER, :]
    ex = ex / np.linalg.norm(ex, axis=-1, keepdims=True)
    ey = points[..., CHIN, :] - points[..., FOREHEAD, :]
    ey = ey - (ey * ex).sum(-1, keepdims=True) * ex
    ey = ey / np.linalg.norm(ey, axis=-1, keepdims=True)
    ez = np.cross(ex, ey)
    return np.stack([ex, ey, ez], axis=-1)


def head_pose(points: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) in degrees, shape (..., 3), from landmarks (..., 478, 3)."""
    r = head_rotation(points)
    ex, ez = r[..., :, 0], r[..., :, 2]
    yaw = np.degrees(np.arctan2(-ez[..., 0], ez[..., 2]))
    pitch = np.degrees(np.arcsin(np.clip(ez[..., 1], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(ex[..., 1], ex[..., 0]))
    return np.stack([yaw, pitch, roll], axis=-1).astype(np.float32)
