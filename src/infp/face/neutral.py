"""A portrait's landmarks at rest: lips closed and relaxed, eyes open, the head where it is (issue 25).

The renderer moves the portrait's own pixels from its landmarks to where the driving keypoints say
(`models.imitator.Calibration`); these are the landmarks it is told the portrait has at rest, so a
photo taken mid-word or mid-laugh rests with closed lips. Geometry in the face's own frame (x along
the mouth, y from forehead to chin), so a tilted head closes its mouth along its own axis:

- the mouth closes as a jaw does: the lower lip and everything below it on the face rise by two thirds
  of the inner-lip gap at their position along the mouth, the upper lip lowers by one third, and the
  gap fades to nothing at the mouth's corners (the jaw's sides stay where they are);
- a smile relaxes: a mouth wider than SMILE_WIDTH of the outer eye corners' distance narrows to it
  about its middle, and corners lifted above the lips' middle by more than SMILE_LIFT of that distance
  come down to it, the lips between following in proportion (the cheeks and jaw stay);
- an eye less open than `eye_open` (lid gap over eye width, `face.expression.eye_opening`) opens to
  it by raising its upper lid away from the line through its corners.
"""

from __future__ import annotations

import numpy as np

from infp.face import topology as tp
from infp.face.expression import corner_lift, eye_span, mouth_width

UPPER_SHARE = 1 / 3  # of the gap closed by the upper lip; the lower lip (the jaw) closes the rest
# A resting mouth at most as wide and as lifted at the corners as 9 in 10 real people's: the 90th
# percentiles, over the 78 real training clips with closed-lip frames (inner lip gap < 0.01 of the face's
# height), of each clip's median mouth width (outer corners over the outer eye corners' distance; median
# 0.549) and corner lift (how far the outer corners sit above the inner lips' middle, same unit; median
# -0.002). docs/generate.md, "Relaxing a smile".
SMILE_WIDTH = 0.60
SMILE_LIFT = 0.024


def _frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The face's origin (the inner mouth corners' midpoint) and unit axes x (along the mouth, to the
    subject's left corner) and y (towards the chin), in the image plane."""
    p = points[:, :2].astype(np.float64)
    origin = (p[tp.MOUTH_INNER_LEFT] + p[tp.MOUTH_INNER_RIGHT]) / 2
    ey = p[tp.CHIN] - p[tp.FOREHEAD]
    ey /= np.linalg.norm(ey)
    ex = np.array([-ey[1], ey[0]])
    if (p[tp.MOUTH_INNER_LEFT] - p[tp.MOUTH_INNER_RIGHT]) @ ex < 0:
        ex = -ex
    return origin, ex, ey


def _arc(uv: np.ndarray, arc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An inner-lip arc with both corners as (u, v) sorted by u."""
    idx = np.concatenate([[tp.MOUTH_INNER_RIGHT], arc, [tp.MOUTH_INNER_LEFT]])
    u, v = uv[idx, 0], uv[idx, 1]
    order = np.argsort(u)
    return u[order], v[order]


def close_mouth(points: np.ndarray) -> np.ndarray:
    """(478, 3) landmarks -> the same with the inner lips meeting (module doc). A closed mouth is
    returned unchanged."""
    origin, ex, ey = _frame(points)
    uv = (points[:, :2] - origin) @ np.stack([ex, ey], 1)  # (478, 2)
    (outer_up, outer_low), (inner_up, inner_low) = tp.lip_arcs()
    u_up, v_up = _arc(uv, inner_up)
    u_low, v_low = _arc(uv, inner_low)
    lower_at = lambda u: np.interp(u, u_low, v_low)  # noqa: E731
    gap = lambda u: np.clip(lower_at(u) - np.interp(u, u_up, v_up), 0, None) * ((u >= u_low[0]) & (u <= u_low[-1]))  # noqa: E731
    g = gap(uv[:, 0])  # (478,) the gap above or below each point
    if not g.any():
        return points.copy()
    dv = np.zeros(len(points))
    upper = np.concatenate([inner_up, outer_up])
    dv[upper] = UPPER_SHARE * g[upper]
    below = uv[:, 1] >= lower_at(uv[:, 0]) - 1e-6  # the lower lip and the face under it
    below[upper] = False
    dv[below] = -(1 - UPPER_SHARE) * g[below]
    out = points.astype(np.float64).copy()
    out[:, :2] += dv[:, None] * ey
    return out.astype(points.dtype)


def _lips() -> np.ndarray:
    (outer_up, outer_low), (inner_up, inner_low) = tp.lip_arcs()
    return np.unique(np.concatenate([outer_up, outer_low, inner_up, inner_low,
                                     [tp.MOUTH_LEFT, tp.MOUTH_RIGHT, tp.MOUTH_INNER_LEFT, tp.MOUTH_INNER_RIGHT]]))


def smile_measures(points: np.ndarray) -> tuple[float, float]:
    """(width, lift) of one face's mouth (`face.expression.mouth_width`, `corner_lift`)."""
    lm = np.asarray(points, np.float64)[None]
    return float(mouth_width(lm)[0]), float(corner_lift(lm)[0])


def relax_smile(points: np.ndarray, width: float = SMILE_WIDTH, lift: float = SMILE_LIFT) -> np.ndarray:
    """(478, 3) landmarks -> the same with a smile relaxed to at most `width` and `lift` (module doc); a
    mouth within both is returned unchanged. Only the lips move: along the mouth towards its middle by
    the same factor, and down by the corners' excess lift times (distance from the middle / half the
    mouth's width)^2, so the middle of the lips stays and the corners come down the most."""
    have_w, have_lift = smile_measures(points)
    if have_w <= width and have_lift <= lift:
        return points.copy()
    origin, ex, ey = _frame(points)
    eye = float(eye_span(np.asarray(points, np.float64)[None])[0])
    lips = _lips()
    uv = (points[lips, :2] - origin) @ np.stack([ex, ey], 1)  # (L, 2)
    corners = (points[[tp.MOUTH_RIGHT, tp.MOUTH_LEFT], :2] - origin) @ ex  # (2,) u of the outer corners
    centre, half = corners.mean(), (corners[1] - corners[0]) / 2
    r = np.clip(np.abs(uv[:, 0] - centre) / half, 0, 1)
    du = (centre - uv[:, 0]) * (1 - min(1.0, width / have_w))  # towards the middle
    dv = max(0.0, have_lift - lift) * eye * r**2  # the corners down (v runs towards the chin)
    out = points.astype(np.float64).copy()
    out[lips, :2] += du[:, None] * ex + dv[:, None] * ey
    return out.astype(points.dtype)


def _eye_frame(p: np.ndarray, outer: int, inner: int) -> tuple[np.ndarray, np.ndarray, float]:
    a, b = p[outer, :2].astype(np.float64), p[inner, :2].astype(np.float64)
    ex = (b - a) / np.linalg.norm(b - a)
    return a, np.array([-ex[1], ex[0]]), float(np.linalg.norm(b - a))


def open_eyes(points: np.ndarray, eye_open: float) -> np.ndarray:
    """(478, 3) landmarks -> the same with each eye less open than `eye_open` opened to it."""
    out = points.astype(np.float64).copy()
    eyes = ((tp.RIGHT_EYE_OUTER, tp.RIGHT_EYE_INNER, tp.RIGHT_EYE_TOP, tp.RIGHT_EYE_BOTTOM),
            (tp.LEFT_EYE_OUTER, tp.LEFT_EYE_INNER, tp.LEFT_EYE_TOP, tp.LEFT_EYE_BOTTOM))
    for (outer, inner, top, bottom), (upper_lid, _) in zip(eyes, tp.eyelid_arcs(), strict=True):
        a, n, width = _eye_frame(out, outer, inner)
        if n @ (out[bottom, :2] - out[top, :2]) < 0:  # n points from the upper lid to the lower one
            n = -n
        d_top, d_bottom = (out[top, :2] - a) @ n, (out[bottom, :2] - a) @ n  # d_top < 0 above the line
        have = np.linalg.norm(out[bottom, :2] - out[top, :2]) / width
        if have >= eye_open or d_top >= -1e-6:
            continue
        scale = max(1.0, (d_bottom - eye_open * width) / d_top) if d_bottom - eye_open * width < 0 else 1.0
        lid = (out[upper_lid, :2] - a) @ n
        out[upper_lid, :2] += ((scale - 1) * lid)[:, None] * n
    return out.astype(points.dtype)


def neutral_points(points: np.ndarray, eye_open: float) -> np.ndarray:
    """The landmarks at rest: mouth closed and relaxed, eyes at least `eye_open` open."""
    return open_eyes(relax_smile(close_mouth(points)), eye_open)
