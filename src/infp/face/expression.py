"""Expression measured from landmarks (any frame: real, synthetic or generated)."""

from __future__ import annotations

import numpy as np

from infp.face import topology as tp


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T,) inner-lip gap over face height (forehead to chin) from landmarks (T, 478, 3); NaN where
    no face. Dividing by face height makes it independent of crop size and distance."""
    gap = landmarks[:, tp.LOWER_LIP_INNER, 1] - landmarks[:, tp.UPPER_LIP_INNER, 1]
    height = np.linalg.norm(landmarks[:, tp.CHIN, :2] - landmarks[:, tp.FOREHEAD, :2], axis=-1)
    return gap / height


def eye_opening(landmarks: np.ndarray) -> np.ndarray:
    """(T,) lid gap over eye width (corner to corner), the mean of both eyes, from landmarks
    (T, 478, 3); NaN where no face. About 0.25-0.4 for an open eye, near 0.05 closed: a blink is a
    dip well below the clip's own median (infp.eval.real.blink_count)."""
    def one(top: int, bottom: int, outer: int, inner: int) -> np.ndarray:
        gap = np.linalg.norm(landmarks[:, bottom, :2] - landmarks[:, top, :2], axis=-1)
        return gap / np.linalg.norm(landmarks[:, outer, :2] - landmarks[:, inner, :2], axis=-1)

    return (one(tp.RIGHT_EYE_TOP, tp.RIGHT_EYE_BOTTOM, tp.RIGHT_EYE_OUTER, tp.RIGHT_EYE_INNER)
            + one(tp.LEFT_EYE_TOP, tp.LEFT_EYE_BOTTOM, tp.LEFT_EYE_OUTER, tp.LEFT_EYE_INNER)) / 2


def eye_span(landmarks: np.ndarray) -> np.ndarray:
    """(T,) the outer eye corners' distance (T, 478, 3 landmarks): the unit of the mouth's shape below."""
    return np.linalg.norm(landmarks[:, tp.LEFT_EYE_OUTER, :2] - landmarks[:, tp.RIGHT_EYE_OUTER, :2], axis=-1)


def mouth_width(landmarks: np.ndarray) -> np.ndarray:
    """(T,) outer mouth corners' distance over the outer eye corners' (T, 478, 3 landmarks; NaN where no
    face): about 0.55 for a closed mouth at rest (real talking clips), 0.7-0.8 in a broad smile."""
    return np.linalg.norm(landmarks[:, tp.MOUTH_LEFT, :2] - landmarks[:, tp.MOUTH_RIGHT, :2], axis=-1) / eye_span(landmarks)


def corner_lift(landmarks: np.ndarray) -> np.ndarray:
    """(T,) how far the outer mouth corners sit above the inner lips' middle, along the face's
    forehead-to-chin axis, over the outer eye corners' distance: about 0 at rest, 0.05-0.1 in a smile."""
    p = landmarks[..., :2]
    down = p[:, tp.CHIN] - p[:, tp.FOREHEAD]
    down = down / np.linalg.norm(down, axis=-1, keepdims=True)
    middle = (p[:, tp.UPPER_LIP_INNER] + p[:, tp.LOWER_LIP_INNER]) / 2
    corners = (p[:, tp.MOUTH_LEFT] + p[:, tp.MOUTH_RIGHT]) / 2
    return ((middle - corners) * down).sum(-1) / eye_span(landmarks)
