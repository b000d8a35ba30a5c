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
