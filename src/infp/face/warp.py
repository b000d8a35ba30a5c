"""Piecewise-affine image warping along a triangle mesh.

The mesh is triangulated once on the source points (Delaunay) and keeps that topology when its
vertices move. Each output pixel is mapped back to the source through the affine map of the output
triangle that covers it: triangle ids are rasterised with OpenCV, then one vectorised gather and one
`cv2.remap` do the rest (a few ms at 256 px, no per-pixel Python).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay


def border_anchors(size: int, per_side: int = 8) -> np.ndarray:
    """Points along the image border (fixed during warps), (4 * per_side, 2)."""
    t = np.linspace(0, size - 1, per_side, endpoint=False)
    e = np.full_like(t, size - 1)
    z = np.zeros_like(t)
    return np.concatenate([np.stack(p, 1) for p in [(t, z), (e, t), (e[::-1] - t, e), (z, e - t)]]).astype(np.float32)


class MeshWarper:
    """Warp images whose mesh vertices move from `src` (N, 2) to a new position (N, 2)."""

    def __init__(self, src: np.ndarray, size: int):
        self.src = np.asarray(src, np.float64)
        self.size = size
        self.triangles = Delaunay(self.src).simplices  # (F, 3)
        self._src_area = self._signed_area(self.src)
        ys, xs = np.mgrid[0:size, 0:size]
        self._pix = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5, np.ones(size * size)], 1)  # (P, 3)

    def _affines(self, dst: np.ndarray) -> np.ndarray:
        """Per-triangle 2x3 maps from output (dst) coordinates back to source, (F, 2, 3)."""
        d = dst[self.triangles]  # (F, 3, 2)
        s = self.src[self.triangles]
        dh = np.concatenate([d, np.ones((*d.shape[:2], 1))], -1)  # (F, 3, 3)
        # Solve dh @ A^T = s for each triangle; degenerate triangles get a least-squares answer.
        det = np.linalg.det(dh)
        ok = np.abs(det) > 1e-9
        a = np.zeros((len(d), 3, 2))
        a[ok] = np.linalg.solve(dh[ok], s[ok])
        return a.transpose(0, 2, 1)

    def maps(self, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Backward maps (map_x, map_y) for `cv2.remap`, from output pixels to source pixels."""
        dst = np.asarray(dst, np.float64)
        ids = np.full((self.size, self.size), -1, np.int32)
        area = self._signed_area(dst)
        # A triangle whose orientation flipped has folded over its neighbours: its pixels belong to
        # them, and drawing it would smear a stretched strip of source across the fold.
        keep = np.where(area * self._src_area > 0)[0]
        for f in keep[np.argsort(-np.abs(area[keep]))]:  # big triangles first, small ones on top
            cv2.fillConvexPoly(ids, np.round(dst[self.triangles[f]] * 16).astype(np.int32), int(f), cv2.LINE_8, 4)
        # Pixels left uncovered (where a folded triangle was skipped) borrow a neighbouring
        # triangle's map, extrapolated a few pixels: continuous, unlike leaving them unwarped.
        for _ in range(4):
            holes = ids < 0
            if not holes.any():
                break
            grown = cv2.dilate(ids.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
            ids[holes] = grown[holes]
        flat = ids.ravel()
        a = self._affines(dst)
        src = np.einsum("pij,pj->pi", a[np.maximum(flat, 0)], self._pix)  # (P, 2)
        outside = flat < 0
        src[outside] = self._pix[outside, :2]  # pixels no triangle covers stay where they are
        src -= 0.5
        return src[:, 0].reshape(self.size, self.size).astype(np.float32), src[:, 1].reshape(self.size, self.size).astype(np.float32)

    def _signed_area(self, pts: np.ndarray) -> np.ndarray:
        p = pts[self.triangles]
        return 0.5 * ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 2, 0] - p[:, 0, 0]) * (p[:, 1, 1] - p[:, 0, 1]))

    def warp(self, image: np.ndarray, dst: np.ndarray) -> np.ndarray:
        mx, my = self.maps(dst)
        return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
