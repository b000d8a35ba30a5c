"""MediaPipe Face Mesh behind a small interface.

MediaPipe's legacy `solutions.face_mesh` ships its TFLite models inside the 0.10.x wheel, so it runs
offline (the Tasks API would need a downloaded `.task` file). Points are returned in pixels:
x, y in image pixels and z in the same pixel scale (MediaPipe normalises z by the image width).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from infp.errors import NoFaceError

log = logging.getLogger(__name__)
# MediaPipe's C++ side (glog/absl, TFLite) prints start-up chatter to stderr; keep warnings and errors.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence what MediaPipe's C++ code writes to fd 2 while its graph starts (absl logs before
    logging is configured, so no environment variable reaches them). Python errors still raise."""
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr: nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class Face:
    """One detected face: 478 landmarks in pixels, (478, 3) float32."""

    points: np.ndarray

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        x0, y0 = self.points[:, :2].min(0)
        x1, y1 = self.points[:, :2].max(0)
        return float(x0), float(y0), float(x1), float(y1)

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return (x1 - x0) * (y1 - y0)


class FaceMesh:
    """Face Mesh detector. `static=True` detects in every image independently; `static=False` tracks
    the face across consecutive video frames (faster and steadier, one face)."""

    def __init__(self, static: bool = True, max_faces: int = 1, min_confidence: float = 0.5):
        with _quiet_native_stderr():
            from mediapipe.python.solutions import face_mesh

            self._mesh = face_mesh.FaceMesh(
                static_image_mode=static,
                max_num_faces=max_faces,
                refine_landmarks=True,  # 478 points: irises and refined lips
                min_detection_confidence=min_confidence,
                min_tracking_confidence=min_confidence,
            )
        self._started = False

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an RGB uint8 image (H, W, 3), largest first."""
        h, w = image.shape[:2]
        if self._started:
            result = self._mesh.process(np.ascontiguousarray(image[..., :3]))
        else:  # the first run starts the graph: most of the native start-up chatter (a worker
            # thread may still log a line after this returns; that one we cannot catch)
            with _quiet_native_stderr():
                result = self._mesh.process(np.ascontiguousarray(image[..., :3]))
            self._started = True
        faces = []
        for lms in result.multi_face_landmarks or []:
            pts = np.array([(p.x * w, p.y * h, p.z * w) for p in lms.landmark], dtype=np.float32)
            faces.append(Face(pts))
        return sorted(faces, key=lambda f: -f.area)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> FaceMesh:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect_portrait_face(
    image: np.ndarray, path: str | Path | None = None, face_index: int | None = None, max_faces: int = 8,
    require_one: bool = False,
) -> Face:
    """The face to animate in a portrait: the largest one, or `face_index` (0 = largest).

    Raises `NoFaceError` naming the file when there is no face or the index is out of range, and,
    with `require_one`, when there are several faces and no `face_index` says which.
    """
    with FaceMesh(static=True, max_faces=max_faces) as mesh:
        faces = mesh.detect(image)
        if not faces:
            faces = _detect_small_faces(image, mesh)
    if not faces:
        raise NoFaceError("no face found in the image", path)
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise NoFaceError(f"--face-index {face_index} is out of range: {len(faces)} face(s) found", path)
        return faces[face_index]
    if len(faces) > 1 and require_one:
        listed = ", ".join(f"{i}: {int(x1 - x0)}x{int(y1 - y0)} px at ({int(x0)}, {int(y0)})"
                           for i, (x0, y0, x1, y1) in enumerate(f.bbox for f in faces))
        raise NoFaceError(f"{len(faces)} faces found ({listed}); choose one with --face-index N (0 = the largest)", path)
    if len(faces) > 1:
        log.warning("%s: found %d faces, using the largest (choose another with --face-index)", path or "image", len(faces))
    return faces[0]


def _detect_small_faces(image: np.ndarray, mesh: FaceMesh, context: float = 2.5, size: int = 384) -> list[Face]:
    """Faces too small for Face Mesh's own short-range detector (group photos, a face far off):
    find them with MediaPipe's full-range face detector, then run the mesh on an enlarged crop of
    each and map the points back."""
    import cv2

    with _quiet_native_stderr():
        from mediapipe.python.solutions import face_detection

        with face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.5) as det:
            found = det.process(np.ascontiguousarray(image[..., :3])).detections or []
    h, w = image.shape[:2]
    faces = []
    for d in found:
        b = d.location_data.relative_bounding_box
        cx, cy = (b.xmin + b.width / 2) * w, (b.ymin + b.height / 2) * h
        side = context * max(b.width * w, b.height * h)
        s = size / side
        m = np.array([[s, 0, size / 2 - s * cx], [0, s, size / 2 - s * cy]])
        crop = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        for f in mesh.detect(crop)[:1]:
            pts = f.points.copy()
            pts[:, 0] = (pts[:, 0] - m[0, 2]) / s
            pts[:, 1] = (pts[:, 1] - m[1, 2]) / s
            pts[:, 2] /= s
            faces.append(Face(pts))
    return sorted(faces, key=lambda f: -f.area)
