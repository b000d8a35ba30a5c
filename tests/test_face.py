"""Face analysis: mesh topology, portrait detection, crops, head pose, hybrid representation, mesh
warping and video tracking. Real faces throughout (the packaged astronaut, shared real media)."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from mediapipe.python.solutions import face_mesh_connections as fmc

from infp.errors import NoFaceError
from infp.face import (
    Jitter,
    box_jitter,
    crop_image,
    detect_portrait_face,
    face_box,
    head_pose,
    represent,
    smooth_boxes,
    to_crop,
)
from infp.face import topology as tp
from infp.face.hybrid import Representation
from infp.face.track import fill_gaps, track_video
from infp.face.warp import MeshWarper, border_anchors
from infp.video import VideoWriter

# ------------------------------------------------------------------------------------- topology


def _edges(table: frozenset[tuple[int, int]]) -> set[frozenset[int]]:
    return {frozenset(e) for e in table}


def _assert_cycle(poly: np.ndarray, table: frozenset[tuple[int, int]]) -> None:
    """`poly` visits every vertex of a cyclic edge table once, each step along one of its edges."""
    edges = _edges(table)
    assert len(set(poly.tolist())) == len(poly)
    for a, b in zip(poly, np.roll(poly, -1)):
        assert frozenset((int(a), int(b))) in edges, f"{a}-{b} is not an edge of the mesh"


def test_face_oval_is_an_ordered_36_point_outline() -> None:
    oval = tp.face_oval()
    assert len(oval) == 36 and len(set(oval.tolist())) == 36
    assert set(oval.tolist()) == {i for e in fmc.FACEMESH_FACE_OVAL for i in e}
    _assert_cycle(oval, fmc.FACEMESH_FACE_OVAL)
    assert {tp.FOREHEAD, tp.CHIN} <= set(oval.tolist())


def test_eye_polygons() -> None:
    right, left = tp.eye_polygons()
    assert len(right) == len(set(right.tolist())) == 16
    assert len(left) == len(set(left.tolist())) == 16
    assert not set(right.tolist()) & set(left.tolist())
    _assert_cycle(right, fmc.FACEMESH_RIGHT_EYE)
    _assert_cycle(left, fmc.FACEMESH_LEFT_EYE)
    assert {tp.RIGHT_EYE_OUTER, tp.RIGHT_EYE_TOP, tp.RIGHT_EYE_BOTTOM, 133} <= set(right.tolist())
    assert {tp.LEFT_EYE_OUTER, tp.LEFT_EYE_TOP, tp.LEFT_EYE_BOTTOM, 362} <= set(left.tolist())


def test_lip_polygons_outer_then_inner() -> None:
    outer, inner = tp.lip_polygons()
    assert len(outer) == len(set(outer.tolist())) == 20
    assert len(inner) == len(set(inner.tolist())) == 20
    assert not set(outer.tolist()) & set(inner.tolist())
    assert {tp.UPPER_LIP_INNER, tp.LOWER_LIP_INNER, 78, 308} <= set(inner.tolist())
    assert {0, 17, tp.MOUTH_LEFT, tp.MOUTH_RIGHT} <= set(outer.tolist())
    _assert_cycle(outer, fmc.FACEMESH_LIPS)
    _assert_cycle(inner, fmc.FACEMESH_LIPS)


def test_models_keypoint_layout_matches_the_mesh() -> None:
    """models/ keeps the keypoints' layout as constants (it imports no MediaPipe): they must be what
    the mesh's tables give, and the representations what the face module draws."""
    from infp.models import config, keypoint_layout as kl

    assert kl.N_KEYPOINTS == len(tp.keypoint_indices())
    assert list(kl.INNER_LIP) == tp.inner_lip_keypoints().tolist()
    upper, lower = tp.inner_lip_arc_keypoints()
    assert (list(kl.INNER_LIP_UPPER), list(kl.INNER_LIP_LOWER)) == (upper.tolist(), lower.tolist())
    right, left = tp.eye_polygons()
    assert list(kl.RIGHT_EYE) == tp.keypoint_positions(right).tolist()
    assert list(kl.LEFT_EYE) == tp.keypoint_positions(left).tolist()
    (r_up, r_low), (l_up, l_low) = tp.eyelid_arc_keypoints()
    assert [list(a) for a in (kl.RIGHT_EYELID_UPPER, kl.RIGHT_EYELID_LOWER, kl.LEFT_EYELID_UPPER, kl.LEFT_EYELID_LOWER)] == [
        a.tolist() for a in (r_up, r_low, l_up, l_low)]
    assert set(config.REPRESENTATIONS) == {r.value for r in Representation}


def _check_split(poly: np.ndarray, upper: np.ndarray, lower: np.ndarray, corners: set[int]) -> None:
    up, low = set(upper.tolist()), set(lower.tolist())
    assert up and low and not up & low
    assert not (up | low) & corners
    assert up | low | corners == set(poly.tolist())


def test_lip_arcs_split_upper_from_lower(face_crop) -> None:
    (out_up, out_low), (in_up, in_low) = tp.lip_arcs()
    outer, inner = tp.lip_polygons()
    _check_split(outer, out_up, out_low, {tp.MOUTH_LEFT, tp.MOUTH_RIGHT})
    _check_split(inner, in_up, in_low, {78, 308})
    assert tp.UPPER_LIP_INNER in in_up and tp.LOWER_LIP_INNER in in_low
    assert 0 in out_up and 17 in out_low  # the outer lip's top and bottom middle points
    # On a real face the upper arcs lie above the lower ones.
    y = face_crop.points[:, 1]
    assert y[out_up].mean() < y[out_low].mean()
    assert y[in_up].mean() < y[in_low].mean()


def test_eyelid_arcs_split_upper_from_lower(face_crop) -> None:
    (r_up, r_low), (l_up, l_low) = tp.eyelid_arcs()
    right, left = tp.eye_polygons()
    _check_split(right, r_up, r_low, {tp.RIGHT_EYE_OUTER, 133})
    _check_split(left, l_up, l_low, {tp.LEFT_EYE_OUTER, 362})
    assert tp.RIGHT_EYE_TOP in r_up and tp.RIGHT_EYE_BOTTOM in r_low
    assert tp.LEFT_EYE_TOP in l_up and tp.LEFT_EYE_BOTTOM in l_low
    y = face_crop.points[:, 1]
    assert y[r_up].mean() < y[r_low].mean() and y[l_up].mean() < y[l_low].mean()


# ------------------------------------------------------------------------- portrait detection


def test_detect_portrait_face_on_astronaut(astronaut: np.ndarray, astronaut_points: np.ndarray) -> None:
    pts = astronaut_points
    assert pts.shape == (478, 3) and pts.dtype == np.float32
    h, w = astronaut.shape[:2]
    assert (pts[:, 0] >= 0).all() and (pts[:, 0] < w).all()
    assert (pts[:, 1] >= 0).all() and (pts[:, 1] < h).all()
    # The mesh lies on the face: eyes above the mouth, forehead above the chin, a plausible size.
    assert pts[tp.FOREHEAD, 1] < pts[tp.RIGHT_EYE_TOP, 1] < pts[tp.UPPER_LIP_INNER, 1] < pts[tp.CHIN, 1]
    assert 0.1 * h < pts[tp.CHIN, 1] - pts[tp.FOREHEAD, 1] < 0.6 * h
    assert pts[tp.RIGHT_EYE_OUTER, 0] < pts[tp.LEFT_EYE_OUTER, 0]  # subject's right eye on the image's left


@pytest.mark.parametrize("kind", ["grey", "noise"])
def test_no_face_raises_naming_the_file(kind: str) -> None:
    rng = np.random.default_rng(0)
    shape = (256, 256, 3)
    image = np.full(shape, 128, np.uint8) if kind == "grey" else rng.integers(0, 256, shape, np.uint8)
    with pytest.raises(NoFaceError) as err:
        detect_portrait_face(image, path=f"/some/where/{kind}_portrait.png")
    assert f"{kind}_portrait.png" in str(err.value)
    assert err.value.path == Path(f"/some/where/{kind}_portrait.png")


@pytest.fixture(scope="module")
def two_faces(face_crop) -> np.ndarray:
    """The astronaut's face at full crop size beside a copy at 5/8 of it: two faces, known sizes."""
    small = cv2.resize(face_crop.image, (160, 160), interpolation=cv2.INTER_AREA)
    canvas = np.zeros((256, 256 + 160, 3), np.uint8)
    canvas[:, :256] = face_crop.image
    canvas[48 : 48 + 160, 256:] = small
    return canvas


def test_several_faces_pick_the_largest_and_warn(two_faces: np.ndarray, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        face = detect_portrait_face(two_faces, "pair.png")
    assert face.points[:, 0].mean() < 256  # the large face, on the left
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("--face-index" in m and "pair.png" in m for m in warnings), warnings

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        other = detect_portrait_face(two_faces, "pair.png", face_index=1)
        first = detect_portrait_face(two_faces, "pair.png", face_index=0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # a choice made: no warning
    assert other.points[:, 0].mean() > 256  # the small face, on the right
    assert other.area < first.area
    np.testing.assert_allclose(first.points, face.points, atol=1e-3)

    with pytest.raises(NoFaceError, match="out of range") as err:
        detect_portrait_face(two_faces, "pair.png", face_index=2)
    assert "pair.png" in str(err.value)
    with pytest.raises(NoFaceError, match="out of range"):
        detect_portrait_face(two_faces, "pair.png", face_index=-1)


def test_group_photo_picks_largest_face(shared_data: Path, caplog) -> None:
    from infp.data.portraits import read_image

    path = shared_data / "portraits" / "group_photo_many_faces.jpg"
    image = read_image(path)
    with caplog.at_level(logging.WARNING):
        face = detect_portrait_face(image, path)
    assert any("--face-index" in r.getMessage() for r in caplog.records)
    other = detect_portrait_face(image, path, face_index=1)
    assert other.area <= face.area
    assert np.linalg.norm(other.points[:, :2].mean(0) - face.points[:, :2].mean(0)) > 50  # another person
    with pytest.raises(NoFaceError, match="out of range"):
        detect_portrait_face(image, path, face_index=50)


# ----------------------------------------------------------------------------------------- crops


def test_face_box_covers_the_landmarks(astronaut_points: np.ndarray) -> None:
    pts = astronaut_points
    extent = (pts[:, :2].max(0) - pts[:, :2].min(0)).max()
    cx, cy, size = face_box(pts, scale=1.0, shift_up=0.0)
    assert size == pytest.approx(extent, rel=1e-5)
    assert cx == pytest.approx((pts[:, 0].min() + pts[:, 0].max()) / 2, abs=1e-3)
    assert cy == pytest.approx((pts[:, 1].min() + pts[:, 1].max()) / 2, abs=1e-3)
    cx, cy, size = face_box(pts)
    assert size > extent
    assert (np.abs(pts[:, 0] - cx) < size / 2).all() and (np.abs(pts[:, 1] - cy) < size / 2).all()
    # Batched over time: (T, 478, 3) -> (T, 3), the same as frame by frame.
    track = np.stack([pts, pts + np.array([5, -3, 0], np.float32)])
    boxes = face_box(track)
    assert boxes.shape == (2, 3)
    np.testing.assert_allclose(boxes[1], face_box(track[1]), rtol=1e-6)
    np.testing.assert_allclose(boxes[1] - boxes[0], [5, -3, 0], atol=1e-3)


@pytest.mark.parametrize("size", [128, 256])
def test_crop_landmarks_land_on_the_same_content(astronaut, astronaut_points, landmarks_of, size: int) -> None:
    box = face_box(astronaut_points)
    crop = crop_image(astronaut, box, size)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    mapped = to_crop(astronaut_points, box, size)
    assert mapped.shape == (478, 3)
    assert (mapped[:, :2] > 0).all() and (mapped[:, :2] < size).all()
    seen = landmarks_of(crop)
    assert seen is not None, "MediaPipe lost the face in its own crop"
    err = np.linalg.norm(seen[:, :2] - mapped[:, :2], axis=1).mean()
    assert err < 0.03 * size
    assert np.abs(seen[:, 2] - mapped[:, 2]).mean() < 0.03 * size  # z is scaled like x


@pytest.mark.parametrize("size", [128, 192])
def test_shrinking_crop_keeps_landmarks_in_place(astronaut, astronaut_points, landmarks_of, size: int) -> None:
    """Shrinking more than 2x goes through an area pre-resize: the crop must still show the box."""
    box = face_box(astronaut_points, scale=3 * 1.8)  # side ~570 px -> scale < 0.5
    assert size / box[2] < 0.5
    crop = crop_image(astronaut, box, size)
    seen = landmarks_of(crop)
    assert seen is not None
    mapped = to_crop(astronaut_points, box, size)
    assert np.linalg.norm(seen[:, :2] - mapped[:, :2], axis=1).mean() < 0.015 * size


def test_crop_outside_the_image_replicates_the_border(astronaut) -> None:
    box = np.array([10.0, 10.0, 100.0], np.float32)  # three quarters of it outside
    crop = crop_image(astronaut, box, 64)
    assert crop.shape == (64, 64, 3)
    np.testing.assert_array_equal(crop[0, 0], astronaut[0, 0])  # top-left corner, replicated


def test_box_jitter_definition() -> None:
    const = np.tile(np.array([[100.0, 120.0, 200.0]], np.float32), (50, 1))
    assert box_jitter(const) == Jitter(0.0, 0.0)
    assert box_jitter(const[:1]) == Jitter(0.0, 0.0)
    pan = const.copy()
    pan[:, 0] += 4.0 * np.arange(50)  # 4 px per frame on a 200 px box: 2% of the side per frame
    jit = box_jitter(pan)
    assert jit.centre == pytest.approx(2.0, rel=1e-4) and jit.size == 0.0


def test_smooth_boxes_reduces_jitter() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(200)
    clean = np.stack([200 + 0.5 * t, 180 + 10 * np.sin(t / 30), np.full_like(t, 150.0, dtype=float)], 1)
    noisy = (clean + rng.normal(0, [2.0, 2.0, 3.0], clean.shape)).astype(np.float32)
    smooth = smooth_boxes(noisy)
    assert smooth.shape == noisy.shape and smooth.dtype == np.float32
    before, after = box_jitter(noisy), box_jitter(smooth)
    assert after.centre < 0.3 * before.centre and after.size < 0.3 * before.size
    # Smoothing removes the noise, not the motion: closer to the clean track than the noisy one.
    assert np.abs(smooth - clean)[10:-10].mean() < 0.5 * np.abs(noisy - clean)[10:-10].mean()
    const = np.tile(np.array([[1.0, 2.0, 3.0]], np.float32), (30, 1))
    np.testing.assert_allclose(smooth_boxes(const), const, rtol=1e-6)
    assert box_jitter(smooth_boxes(const)) == Jitter(0.0, 0.0)


# ------------------------------------------------------------------------------------- head pose


def _rotate(points: np.ndarray, axis: str, degrees: float) -> np.ndarray:
    """Rotate landmarks (478, 3) about their centroid, in image axes (x right, y down, z away from
    the camera), written out here rather than taken from the code under test:
    yaw: the nose (z < 0) moves right; pitch: the nose moves up; roll: clockwise on screen."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    m = {
        "yaw": np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]),
        "pitch": np.array([[1, 0, 0], [0, c, s], [0, -s, c]]),
        "roll": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]
    centre = points.mean(0)
    return ((points - centre) @ m.T + centre).astype(np.float32)


def test_astronaut_is_near_frontal(astronaut_points) -> None:
    pose = head_pose(astronaut_points)
    assert pose.shape == (3,) and pose.dtype == np.float32
    assert (np.abs(pose) < 25).all()


@pytest.mark.parametrize("axis", ["yaw", "pitch", "roll"])
@pytest.mark.parametrize("degrees", [-12.0, 8.0])
def test_head_pose_follows_a_rigid_rotation(astronaut_points, axis: str, degrees: float) -> None:
    pts = astronaut_points.astype(np.float64)
    assert pts[tp.NOSE_TIP, 2] < pts[:, 2].mean()  # z grows away from the camera
    rotated = _rotate(pts, axis, degrees)
    nose = rotated[tp.NOSE_TIP] - rotated.mean(0)
    nose0 = pts[tp.NOSE_TIP] - pts.mean(0)
    if axis == "yaw":  # the documented conventions, seen on the nose
        assert np.sign(nose[0] - nose0[0]) == np.sign(degrees)
    if axis == "pitch":
        assert np.sign(nose0[1] - nose[1]) == np.sign(degrees)
    change = head_pose(rotated) - head_pose(pts)
    k = ["yaw", "pitch", "roll"].index(axis)
    tol = 1.0 if axis == "roll" else 1.5  # yaw/pitch of a pitched-down face mix a little
    assert change[k] == pytest.approx(degrees, abs=tol)


def test_roll_sign_on_a_rotated_photo(astronaut, astronaut_points, landmarks_of) -> None:
    """Turn the photo itself 10 degrees counter-clockwise (OpenCV's positive angle): roll drops ~10."""
    cx, cy = astronaut_points[:, :2].mean(0)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), 10.0, 1.0)
    turned = cv2.warpAffine(astronaut, m, astronaut.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    seen = landmarks_of(turned)
    assert seen is not None
    change = head_pose(seen) - head_pose(astronaut_points)
    assert change[2] == pytest.approx(-10.0, abs=2.0)


def test_head_pose_is_batched(astronaut_points) -> None:
    track = np.stack([astronaut_points, _rotate(astronaut_points.astype(np.float64), "roll", 5)])
    poses = head_pose(track)
    assert poses.shape == (2, 3)
    np.testing.assert_allclose(poses[1], head_pose(track[1]), atol=1e-4)


# ------------------------------------------------------------------ hybrid representation


def _polygon_mask(points: np.ndarray, idx: np.ndarray, size: int, factor: float) -> np.ndarray:
    """Bool mask of the convex hull of points[idx] scaled by `factor` about its mean."""
    p = points[idx, :2].astype(np.float64)
    p = p.mean(0) + (p - p.mean(0)) * factor
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, np.round(cv2.convexHull(p.astype(np.float32))).astype(np.int32), 1)
    return mask.astype(bool)


@pytest.mark.parametrize("kind", ["hybrid", "intact", "landmarks", Representation.HYBRID])
def test_represent_shapes(face_crop, kind) -> None:
    out = represent(face_crop.image, face_crop.points, kind)
    assert out.shape == face_crop.image.shape and out.dtype == np.uint8
    assert out is not face_crop.image


def test_hybrid_keeps_eyes_and_lips_and_masks_the_rest(face_crop) -> None:
    crop, pts = face_crop
    size = crop.shape[0]
    out = represent(crop, pts, "hybrid")
    right, left = tp.eye_polygons()
    outer, _ = tp.lip_polygons()

    def regions(eye: float, lip: float) -> np.ndarray:  # eye and lip outlines scaled about their centres
        eyes = _polygon_mask(pts, right, size, eye) | _polygon_mask(pts, left, size, eye)
        return eyes | _polygon_mask(pts, outer, size, lip)

    keep = regions(0.9, 0.9)  # well inside the eye and lip outlines: the crop's own pixels
    assert keep.sum() > 0.01 * size * size
    np.testing.assert_array_equal(out[keep], crop[keep])
    # Far from the eyes, the lips and the outline dots (forehead, cheeks, nose, background): black.
    near = regions(2.5, 1.8)
    dots = np.zeros((size, size), np.uint8)
    for x, y in pts[tp.face_oval(), :2]:
        cv2.circle(dots, (int(round(x)), int(round(y))), 5, 1, -1)
    far = ~near & ~dots.astype(bool)
    assert far.mean() > 0.7
    assert out[far].max() == 0
    # Specific identity regions: the middle of the forehead and the cheeks.
    forehead = ((pts[tp.FOREHEAD, :2] + pts[9, :2]) / 2).round().astype(int)  # 9: between the brows
    jaw_side = tp.face_oval()[np.argmin(pts[tp.face_oval(), 0])]  # the outline's leftmost point
    cheek = ((pts[tp.NOSE_TIP, :2] + pts[jaw_side, :2]) / 2).round().astype(int)
    for x, y in (forehead, cheek):
        assert crop[y, x].max() > 30 and out[y, x].max() == 0
    # The face-outline points are drawn: bright dots where the oval landmarks are.
    centres = pts[tp.face_oval(), :2].round().astype(int)
    inside = (centres >= 0).all(1) & (centres < size).all(1)
    assert (out[centres[inside, 1], centres[inside, 0]].min(axis=1) > 200).mean() > 0.9


def test_intact_is_the_crop(face_crop) -> None:
    out = represent(face_crop.image, face_crop.points, "intact")
    np.testing.assert_array_equal(out, face_crop.image)


def test_landmark_map_is_lines_on_black(face_crop) -> None:
    crop, pts = face_crop
    size = crop.shape[0]
    out = represent(crop, pts, "landmarks")
    lines = np.zeros((size, size), np.uint8)
    p = pts[:, :2].round().astype(int)
    for a, b in fmc.FACEMESH_CONTOURS | fmc.FACEMESH_IRISES:
        cv2.line(lines, tuple(map(int, p[a])), tuple(map(int, p[b])), 1, 5)
    assert out[~lines.astype(bool)].max() == 0  # nothing but the contours
    lit = out.max(axis=2) > 0
    assert 0.005 < lit.mean() < 0.2
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()  # white lines
    # Every contour is drawn: the middle of each edge is lit (or next to a lit pixel).
    dil = cv2.dilate(lit.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    ends = np.array(sorted(fmc.FACEMESH_CONTOURS))  # (E, 2) point ids
    mids = ((pts[ends[:, 0], :2] + pts[ends[:, 1], :2]) / 2).astype(int)
    assert dil[mids[:, 1], mids[:, 0]].mean() > 0.95


def test_invalid_representation_raises(face_crop) -> None:
    with pytest.raises(ValueError):
        represent(face_crop.image, face_crop.points, "cartoon")


# ----------------------------------------------------------------------------------------- warp


def _warper(face_crop) -> tuple[MeshWarper, np.ndarray]:
    size = face_crop.image.shape[0]
    src = np.concatenate([face_crop.points[:, :2], border_anchors(size)])
    return MeshWarper(src, size), src


def test_mesh_warp_identity(face_crop) -> None:
    warper, src = _warper(face_crop)
    out = warper.warp(face_crop.image, src)
    assert out.shape == face_crop.image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.float32) - face_crop.image).mean() < 1.0


def test_mesh_warp_translates_the_interior(face_crop) -> None:
    warper, src = _warper(face_crop)
    n = len(face_crop.points)
    shift = np.array([6.0, -4.0])
    dst = src.copy()
    dst[:n] += shift  # the face moves; the border anchors stay
    out = warper.warp(face_crop.image, dst).astype(np.float32)
    img = face_crop.image.astype(np.float32)
    # Inside the (shrunk) face outline, out(x) == image(x - shift).
    size = img.shape[0]
    inner = _polygon_mask(face_crop.points + np.array([*shift, 0]), tp.face_oval(), size, 0.8)
    ys, xs = np.nonzero(inner)
    moved = img[ys - int(shift[1]), xs - int(shift[0])]
    assert np.abs(out[ys, xs] - moved).mean() < 1.5
    assert np.abs(out[ys, xs] - img[ys, xs]).mean() > 5 * np.abs(out[ys, xs] - moved).mean()
    # The border anchors hold the corners.
    np.testing.assert_allclose(out[:2, :2], img[:2, :2], atol=1)


# ---------------------------------------------------------------------------------------- track


def test_fill_gaps_interpolates_short_runs_and_reports_long_ones() -> None:
    t = np.arange(40, dtype=np.float32)
    base = np.random.default_rng(0).normal(size=(1, 478, 3)).astype(np.float32)
    lms = base + t[:, None, None] * np.float32(0.5)  # every coordinate moves linearly
    holes = lms.copy()
    holes[5:8] = np.nan  # 3 frames: filled
    holes[20:30] = np.nan  # 10 frames: too long
    filled, long_gaps = fill_gaps(holes, max_gap=4)
    assert long_gaps == [(20, 30)]
    np.testing.assert_allclose(filled[5:8], lms[5:8], atol=1e-4)
    assert np.isnan(filled[20:30]).all()
    np.testing.assert_array_equal(filled[:5], lms[:5])
    assert np.isnan(holes[5:8]).all()  # the input is left alone
    # Gaps at the ends hold the nearest known frame.
    edges = lms.copy()
    edges[:2] = np.nan
    edges[-3:] = np.nan
    filled, long_gaps = fill_gaps(edges, max_gap=4)
    assert long_gaps == []
    np.testing.assert_allclose(filled[:2], np.broadcast_to(lms[2], (2, 478, 3)), atol=1e-5)
    np.testing.assert_allclose(filled[-3:], np.broadcast_to(lms[-4], (3, 478, 3)), atol=1e-5)
    # Nothing found at all: one long gap, nothing invented.
    none = np.full((6, 478, 3), np.nan, np.float32)
    filled, long_gaps = fill_gaps(none, max_gap=4)
    assert long_gaps == [(0, 6)] and np.isnan(filled).all()


def test_track_real_video(shared_data: Path) -> None:
    track = track_video(shared_data / "videos" / "lp_d0.mp4", max_frames=50)
    assert track.landmarks.shape == (50, 478, 3)
    assert track.detected.all() and track.found.all()
    assert track.long_gaps == [] and track.fps == 25
    assert np.isfinite(track.boxes).all()
    jit = track.jitter()
    assert jit.centre < 1.0 and jit.size < 1.0  # % of the box side per frame


def test_track_fills_short_gaps_and_reports_long_ones(tmp_path: Path, astronaut, caplog) -> None:
    face = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    black = set(range(10, 14)) | set(range(40, 60))  # 4 frames (< 0.5 s) and 20 frames (> 0.5 s)
    path = tmp_path / "gaps.mp4"
    with VideoWriter(path) as w:
        for i in range(70):
            w.write(np.zeros_like(face) if i in black else face)
    with caplog.at_level(logging.WARNING):
        track = track_video(path, max_gap_s=0.5)
    assert track.landmarks.shape == (70, 478, 3)
    assert sorted(np.nonzero(~track.detected)[0].tolist()) == sorted(black)
    assert track.long_gaps == [(40, 60)]
    assert any("gaps.mp4" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    found = track.found
    assert found[:40].all() and not found[40:60].any() and found[60:].all()
    # The short gap is the straight line between its neighbours.
    a, b = track.landmarks[9], track.landmarks[14]
    for k, i in enumerate(range(10, 14), start=1):
        np.testing.assert_allclose(track.landmarks[i], a + (b - a) * k / 5, atol=1e-3)
    assert np.isnan(track.boxes[40:60]).all() and np.isfinite(track.boxes[found]).all()
    assert np.isfinite(track.jitter().centre)
