"""Named regions of the MediaPipe Face Mesh (478 points with the refined iris/lip model).

The index sets come from MediaPipe's own connection tables, so they stay right if the mesh changes;
we only turn edge lists into ordered polygons (cycles), which is what masks and warps need.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from mediapipe.python.solutions import face_mesh_connections as fmc

N_LANDMARKS = 478

# Single points used for measurements (MediaPipe's canonical mesh indices).
UPPER_LIP_INNER = 13
LOWER_LIP_INNER = 14
MOUTH_LEFT, MOUTH_RIGHT = 291, 61  # subject's left / right mouth corner
MOUTH_INNER_LEFT, MOUTH_INNER_RIGHT = 308, 78  # the same corners on the inner lip outline
FOREHEAD, CHIN = 10, 152
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263
RIGHT_EYE_TOP, RIGHT_EYE_BOTTOM = 159, 145
LEFT_EYE_TOP, LEFT_EYE_BOTTOM = 386, 374
RIGHT_EYE_INNER, LEFT_EYE_INNER = 133, 362
NOSE_TIP = 1


def _cycles(edges: frozenset[tuple[int, int]]) -> list[list[int]]:
    """Split an undirected edge set whose components are simple cycles into ordered cycles."""
    nbrs: dict[int, list[int]] = {}
    for a, b in edges:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    seen: set[int] = set()
    cycles = []
    for start in sorted(nbrs):
        if start in seen:
            continue
        cycle, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [n for n in nbrs[cur] if n != prev and (n not in seen or n == start)]
            if not nxt or nxt[0] == start:
                break
            prev, cur = cur, nxt[0]
            cycle.append(cur)
            seen.add(cur)
        cycles.append(cycle)
    return cycles


@cache
def face_oval() -> np.ndarray:
    """Ordered face-outline polygon (36 points): the paper's 'face outline' orientation cue."""
    return np.array(_cycles(fmc.FACEMESH_FACE_OVAL)[0])


@cache
def eye_polygons() -> tuple[np.ndarray, np.ndarray]:
    """Ordered outlines of the right and left eye (16 points each)."""
    return (np.array(_cycles(fmc.FACEMESH_RIGHT_EYE)[0]), np.array(_cycles(fmc.FACEMESH_LEFT_EYE)[0]))


@cache
def lip_polygons() -> tuple[np.ndarray, np.ndarray]:
    """Ordered (outer, inner) lip outlines, 20 points each."""
    a, b = (np.array(c) for c in _cycles(fmc.FACEMESH_LIPS))
    return (b, a) if UPPER_LIP_INNER in a else (a, b)


@cache
def eyebrow_points() -> np.ndarray:
    return np.array(sorted({i for e in fmc.FACEMESH_LEFT_EYEBROW | fmc.FACEMESH_RIGHT_EYEBROW for i in e}))


@cache
def iris_points() -> np.ndarray:
    return np.array(sorted({i for e in fmc.FACEMESH_IRISES for i in e}))


def _split(cycle: np.ndarray, a: int, b: int, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Split a closed polygon at corners `a`, `b` into (upper arc, lower arc), corners excluded.

    The upper arc is the one holding `top`. Splitting by topology, not by y, stays right for curved
    mouths whose inner corners sit higher than the middle of the upper lip.
    """
    c = list(cycle)
    i, j = sorted((c.index(a), c.index(b)))
    arc1, arc2 = np.array(c[i + 1 : j]), np.array(c[j + 1 :] + c[:i])
    return (arc1, arc2) if top in arc1 else (arc2, arc1)


@cache
def lip_arcs() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((outer upper, outer lower), (inner upper, inner lower)) lip arcs, corners excluded."""
    outer, inner = lip_polygons()
    return _split(outer, MOUTH_RIGHT, MOUTH_LEFT, 0), _split(inner, MOUTH_INNER_RIGHT, MOUTH_INNER_LEFT, UPPER_LIP_INNER)


@cache
def eyelid_arcs() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """((upper lid, lower lid) of the right eye, same for the left eye), corners excluded."""
    right, left = eye_polygons()
    return _split(right, RIGHT_EYE_OUTER, 133, RIGHT_EYE_TOP), _split(left, LEFT_EYE_OUTER, 362, LEFT_EYE_TOP)


def _rotated(cycle: np.ndarray, start: int) -> np.ndarray:
    i = list(cycle).index(start)
    return np.concatenate([cycle[i:], cycle[:i]])


def _mirror_cycle(cycle: np.ndarray, start: int) -> dict[int, int]:
    """A cycle symmetric about the face's midline, `start` on the midline: its k-th point mirrors its -k-th."""
    c = _rotated(cycle, start)
    return {int(c[k]): int(c[-k]) for k in range(len(c))}


def _swapped(right: np.ndarray, left: np.ndarray) -> dict[int, int]:
    """Point i of `right` and point i of `left` mirror each other, both ways."""
    return {int(a): int(b) for a, b in zip(right, left, strict=True)} | {int(b): int(a) for a, b in zip(right, left)}


def _mirror_pair(right: np.ndarray, left: np.ndarray, right_start: int, left_start: int, right_top: int,
                 left_top: int) -> dict[int, int]:
    """Two cycles that mirror each other (the eyes), matched from their outer corners so the tops meet."""
    r, l_ = _rotated(right, right_start), _rotated(left, left_start)
    if list(r).index(right_top) != list(l_).index(left_top):
        l_ = np.concatenate([l_[:1], l_[1:][::-1]])  # the same cycle walked the other way round
    return _swapped(r, l_)


@cache
def keypoint_indices() -> np.ndarray:
    """The landmarks the renderer's keypoint prior follows (129): face outline, eyes, lips, brows and
    nose tip, the points whose motion is the expression and the head pose."""
    return np.concatenate([face_oval(), *eye_polygons(), *lip_polygons(), eyebrow_points(), [NOSE_TIP]])


@cache
def keypoint_mirror() -> np.ndarray:
    """Permutation p of `keypoint_indices()`: in a horizontally mirrored image, keypoint i sits where
    keypoint p[i] was (with x flipped). Built from the mesh's topology, so it needs no canonical face."""
    outer, inner = lip_polygons()
    right_eye, left_eye = eye_polygons()
    m = _mirror_cycle(face_oval(), FOREHEAD) | _mirror_cycle(outer, 0) | _mirror_cycle(inner, UPPER_LIP_INNER)
    m |= _mirror_pair(right_eye, left_eye, RIGHT_EYE_OUTER, LEFT_EYE_OUTER, RIGHT_EYE_TOP, LEFT_EYE_TOP)
    right_brow = np.concatenate(_cycles(fmc.FACEMESH_RIGHT_EYEBROW))  # walked in the same order on both sides
    left_brow = np.concatenate(_cycles(fmc.FACEMESH_LEFT_EYEBROW))
    m |= _swapped(right_brow, left_brow)
    m[NOSE_TIP] = NOSE_TIP
    return keypoint_positions([m[int(k)] for k in keypoint_indices()])


def keypoint_positions(mesh) -> np.ndarray:
    """Positions within `keypoint_indices()` of Face Mesh indices (each must be a keypoint)."""
    pos = {int(k): i for i, k in enumerate(keypoint_indices())}
    return np.array([pos[int(k)] for k in mesh])


@cache
def inner_lip_arc_keypoints() -> tuple[np.ndarray, np.ndarray]:
    """Positions, within `keypoint_indices()`, of the upper and the lower inner lip, each from the
    subject's left inner corner to the right one (both corners included, shared by the two)."""
    (upper, lower), corners = lip_arcs()[1], [MOUTH_INNER_LEFT, MOUTH_INNER_RIGHT]
    # `lip_arcs` walks the upper arc from the left corner's neighbour and the lower from the right's
    return keypoint_positions([corners[0], *upper, corners[1]]), keypoint_positions([corners[0], *lower[::-1], corners[1]])


def eyelid_arc_keypoints() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Positions, within `keypoint_indices()`, of each eye's upper and lower lid ((right eye), (left
    eye)), each walked from the outer corner to the inner one (both corners included, shared)."""
    def walk(eye: np.ndarray, outer: int, inner: int, top: int) -> tuple[np.ndarray, np.ndarray]:
        c = _rotated(eye, outer)  # outer corner first, then one lid, the inner corner, the other lid
        k = list(c).index(inner)
        first, second = [*c[: k + 1]], [outer, *c[k:][::-1]]
        upper, lower = (first, second) if top in first else (second, first)
        return keypoint_positions(upper), keypoint_positions(lower)

    right, left = eye_polygons()
    return walk(right, RIGHT_EYE_OUTER, RIGHT_EYE_INNER, RIGHT_EYE_TOP), walk(left, LEFT_EYE_OUTER, LEFT_EYE_INNER, LEFT_EYE_TOP)


@cache
def inner_lip_keypoints() -> np.ndarray:
    """Positions, within `keypoint_indices()`, of the inner lip outline, in its polygon order: the
    opening of the mouth, whose inside (teeth, cavity) no closed-mouth source holds."""
    return keypoint_positions(lip_polygons()[1])
