"""Portraits for synthesis: a face found, cropped square around it, with its landmarks in the crop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from infp.errors import InfpError, MediaError, NoFaceError, require_file
from infp.face import crop_image, detect_portrait_face, face_box, to_crop

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


@dataclass(frozen=True)
class Portrait:
    name: str
    image: np.ndarray  # (S, S, 3) uint8 RGB face crop
    points: np.ndarray  # (478, 3) landmarks in crop pixels


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); a clear error for a missing, empty or undecodable file."""
    path = require_file(path)
    img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        raise MediaError("not a readable image", path)
    return np.ascontiguousarray(img[:, :, ::-1])


def default_portrait() -> tuple[str, np.ndarray]:
    """The portrait an installed package ships: scikit-image's astronaut (a real photo, 512x512)."""
    from skimage import data

    return "skimage.data.astronaut", data.astronaut()


def prepare(name: str, image: np.ndarray, size: int, face_index: int | None = None) -> Portrait:
    face = detect_portrait_face(image, name, face_index=face_index)
    box = face_box(face.points)
    return Portrait(name, crop_image(image, box, size), to_crop(face.points, box, size))


def load_portraits(folder: str | Path | None, size: int) -> list[Portrait]:
    """Every usable portrait in `folder` (or the packaged default). Images without a face are
    skipped with a warning naming them; a folder with none usable is an error."""
    if folder is None:
        return [prepare(*default_portrait(), size)]
    folder = Path(folder)
    if not folder.is_dir():
        raise InfpError("portrait folder not found", folder)
    out = []
    for f in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            out.append(prepare(f.name, read_image(f), size))
        except NoFaceError:
            log.warning("skipping portrait: %s: no face found in the image", f)
        except MediaError as e:  # already names the full path
            log.warning("skipping portrait: %s", e)
    if not out:
        raise InfpError("no usable portrait (an image with a face) in the folder", folder)
    return out
