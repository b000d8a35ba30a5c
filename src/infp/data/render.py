"""Render a real portrait with a given behaviour by warping it along its face mesh.

This is the renderer of the synthetic conversations (DESIGN.md): the portrait's own MediaPipe mesh is
deformed by a few interpretable parameters (jaw opening, smile, blink, brow raise, head rotation) and
the image is warped piecewise-affinely to follow it; the inside of an opened mouth is painted (dark
interior, a band of upper teeth) because no source pixels exist there.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from infp.face import topology as tp
from infp.face.pose import head_rotation
from infp.face.warp import MeshWarper, border_anchors

MAX_JAW_DEG = 8.0  # full mouth opening: jaw rotated this much about the ear axis (inner-lip gap ~15% of face height)
MAX_YAW, MAX_PITCH, MAX_ROLL = 20.0, 15.0, 15.0  # renderer limits (degrees), beyond them it folds


@dataclass(frozen=True)
class Pose:
    """One frame's behaviour parameters (the synthetic ground truth)."""

    mouth: float = 0.0  # 0 closed .. 1 wide open
    smile: float = 0.0  # 0 .. 1
    blink: float = 0.0  # 0 open .. 1 closed
    brow: float = 0.0  # 0 .. 1 raised
    yaw: float = 0.0  # degrees, > 0 nose toward image right
    pitch: float = 0.0  # degrees, > 0 face up
    roll: float = 0.0  # degrees, > 0 clockwise in the image


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation in image axes (x right, y down, z into the screen) matching `face.pose` signs."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


class PortraitAnimator:
    """Deforms one portrait crop (S, S, 3) with known landmarks (478, 3) in crop pixels."""

    def __init__(self, image: np.ndarray, points: np.ndarray):
        self.image = image
        self.size = image.shape[0]
        p = points.astype(np.float64)
        self.p0 = p  # image coordinates (crop pixels)
        # Expressions are modelled in the head's own frame (x right, y down the face, z into it),
        # so a tilted or turned portrait drops its jaw along its own chin line, not the image's.
        self.centre = p[tp.face_oval()].mean(0)
        self.axes = head_rotation(p)  # columns: head axes in image space
        self.ph = (p - self.centre) @ self.axes  # (478, 3) head-frame coordinates
        h = self.ph
        self.gap0 = float(h[tp.LOWER_LIP_INNER, 1] - h[tp.UPPER_LIP_INNER, 1])
        self.face_h = np.linalg.norm(h[tp.CHIN, :2] - h[tp.FOREHEAD, :2])
        self.face_w = np.linalg.norm(h[tp.LEFT_EYE_OUTER, :2] - h[tp.RIGHT_EYE_OUTER, :2]) * 1.6
        # Head pivot: behind the face, low (the neck), so nods swing the chin more than the brow.
        self.pivot = self.centre + self.axes @ np.array([0, 0.15 * self.face_h, 0.7 * self.face_w])
        # Jaw hinge (head frame): ear level, behind the face.
        self.hinge = np.array([0.0, h[tp.NOSE_TIP, 1] - 0.1 * self.face_h, 0.6 * self.face_w])
        self._jaw_w = self._jaw_weights()
        self._eyes = [self._eye_setup(arcs) for arcs in tp.eyelid_arcs()]
        # Falloffs of the smile (around each mouth corner) and the brow raise: fixed per portrait.
        mw = np.linalg.norm(h[tp.MOUTH_LEFT, :2] - h[tp.MOUTH_RIGHT, :2])
        self._smile = [(sx * 0.12 * mw, 0.10 * mw, np.exp(-((h[:, :2] - h[i, :2]) ** 2).sum(1) / (2 * (0.3 * mw) ** 2)))
                       for i, sx in ((tp.MOUTH_LEFT, 1.0), (tp.MOUTH_RIGHT, -1.0))]
        d2 = ((h[:, None, :2] - h[None, tp.eyebrow_points(), :2]) ** 2).sum(-1).min(1)
        self._brow = 0.035 * self.face_h * np.exp(-d2 / (2 * (0.08 * self.face_h) ** 2))
        # Painted mouth colours follow the photo's colourfulness (a black-and-white photo gets grey).
        chroma = np.abs(image.astype(np.float32) - image.mean(-1, keepdims=True)).mean()
        self._colour = float(np.clip(chroma / 12.0, 0, 1))
        # A ring outside the face carries head motion into hair and neck, fading toward the border.
        oval = p[tp.face_oval(), :2]
        self.ring_idx = tp.face_oval()
        self.ring = self.centre[:2] + (oval - self.centre[:2]) * 1.45
        self.anchors = border_anchors(self.size)
        self.warper = MeshWarper(np.concatenate([p[:, :2], self.ring, self.anchors]), self.size)

    def _jaw_weights(self) -> np.ndarray:
        """How much each point follows the jaw: 1 for the lower lip and chin, 0 above the upper lip."""
        p = self.ph
        (out_up, out_low), (in_up, in_low) = tp.lip_arcs()
        y_c = (p[tp.MOUTH_LEFT, 1] + p[tp.MOUTH_RIGHT, 1]) / 2
        x = np.clip((p[:, 1] - y_c + 0.02 * self.face_h) / (0.12 * self.face_h), 0, 1)
        w = x * x * (3 - 2 * x)  # smoothstep: cheeks beside the mouth follow partly
        w[p[:, 1] < p[tp.NOSE_TIP, 1]] = 0.0
        w[np.concatenate([out_up, in_up])] = 0.0
        w[np.concatenate([out_low, in_low])] = 1.0
        w[[tp.MOUTH_LEFT, tp.MOUTH_RIGHT, 78, 308]] = 0.5
        return w

    def _eye_setup(self, arcs: tuple[np.ndarray, np.ndarray]):
        """Upper-lid points, the lower-lid line, the iris points, and the skin just above the lid."""
        upper, lower = arcs
        pts = self.ph[np.concatenate([upper, lower])]
        c = pts.mean(0)
        eye_w = np.ptp(pts[:, 0])
        inside = np.array([i for i in tp.iris_points() if np.linalg.norm(self.ph[i, :2] - c[:2]) < 0.6 * eye_w], int)
        near = np.where((np.abs(self.ph[:, 0] - c[0]) < 0.6 * eye_w) & (self.ph[:, 1] < c[1]) &
                        (self.ph[:, 1] > c[1] - 0.6 * eye_w))[0]
        near = np.setdiff1d(near, np.concatenate([upper, lower, inside]))
        return upper, lower[np.argsort(self.ph[lower, 0])], inside, near

    def deform(self, pose: Pose) -> np.ndarray:
        """Landmarks (478, 3) after applying `pose` (expression first, then the rigid head motion)."""
        p = self.ph.copy()  # head frame
        # Jaw: rotate lower-face points about the hinge (x axis), weighted.
        th = np.radians(MAX_JAW_DEG * pose.mouth)
        rel = p - self.hinge
        rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
        p += self._jaw_w[:, None] * (rel @ rot.T - rel)
        # Smile: corners out and up, neighbours follow with a Gaussian falloff.
        for dx, dy, g in self._smile:
            p[:, 0] += pose.smile * dx * g
            p[:, 1] -= pose.smile * dy * g
        # Blink: upper lid (and iris) pulled toward the lower lid; the skin above follows halfway.
        for upper, lower, inside, near in self._eyes:
            low_y = np.interp(p[upper, 0], p[lower, 0], p[lower, 1])
            shift = 0.9 * pose.blink * (low_y - p[upper, 1])
            p[upper, 1] += shift
            if len(inside):
                iy = np.interp(p[inside, 0], p[lower, 0], p[lower, 1])
                p[inside, 1] += 0.9 * pose.blink * (iy - p[inside, 1])
            p[near, 1] += 0.5 * shift.mean()
        # Brows up, the forehead and lids around them following with a falloff.
        p[:, 1] -= pose.brow * self._brow
        p = p @ self.axes.T + self.centre  # back to image space
        # Rigid head rotation about the pivot; orthographic projection keeps x, y.
        r = _rot(np.clip(pose.yaw, -MAX_YAW, MAX_YAW), np.clip(pose.pitch, -MAX_PITCH, MAX_PITCH),
                 np.clip(pose.roll, -MAX_ROLL, MAX_ROLL))
        # A 2D warp cannot hide the far cheek, so beyond ~12 degrees of yaw the mesh folds at the
        # face's edge (folded triangles are dropped by the warper); the behaviour model stays inside.
        return (p - self.pivot) @ r.T + self.pivot

    def render(self, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
        """(frame (S, S, 3) uint8, landmarks (478, 3)) for one pose."""
        p = self.deform(pose)
        ring = self.ring + 0.6 * (p[self.ring_idx, :2] - self.p0[self.ring_idx, :2])
        frame = self.warper.warp(self.image, np.concatenate([p[:, :2], ring, self.anchors]))
        return self._paint_mouth(frame, p), p.astype(np.float32)

    def _paint_mouth(self, frame: np.ndarray, p: np.ndarray) -> np.ndarray:
        """Fill the opened mouth: dark interior, upper teeth showing below the upper lip.

        Only the opening beyond the portrait's own is painted: a portrait that already shows its
        teeth keeps them while the jaw is at rest, and the paint fades in as the jaw drops.
        """
        gap = np.linalg.norm(p[tp.LOWER_LIP_INNER, :2] - p[tp.UPPER_LIP_INNER, :2])
        strength = np.clip((gap - max(self.gap0, 0.0)) / (0.04 * self.face_h), 0, 1)
        if strength <= 0:
            return frame
        ss = 4  # supersampled mask for smooth edges
        poly = np.round(p[tp.lip_polygons()[1], :2] * ss * 16).astype(np.int32)
        mask = np.zeros((self.size * ss, self.size * ss), np.uint8)
        cv2.fillPoly(mask, [poly], 255, cv2.LINE_AA, 4)
        a = cv2.resize(mask, (self.size, self.size), interpolation=cv2.INTER_AREA).astype(np.float32)[..., None] * (strength / 255)
        up = tp.lip_arcs()[1][0]
        up = up[np.argsort(p[up, 0])]
        upper_y = np.interp(np.arange(self.size) + 0.5, p[up, 0], p[up, 1])[None, :]
        ys = np.arange(self.size)[:, None] + 0.5
        teeth = np.clip((upper_y + 0.22 * gap - ys) / 1.5, 0, 1)[..., None]  # a band under the upper lip
        dark, white = np.array([70, 25, 30], np.float32), np.array([205, 200, 190], np.float32)
        dark, white = (c.mean() + self._colour * (c - c.mean()) for c in (dark, white))
        interior = (1 - teeth) * dark + teeth * white
        return (frame * (1 - a) + interior * a).round().clip(0, 255).astype(np.uint8)
