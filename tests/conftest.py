"""Shared fixtures: the real media folder, the packaged portrait, its face, and one MediaPipe graph."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CROP_SIZE = 256


class FaceCrop(NamedTuple):
    image: np.ndarray  # (S, S, 3) uint8 crop of the astronaut's face
    points: np.ndarray  # (478, 3) landmarks in crop pixels


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (real portraits, videos, speech); skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real media folder {SHARED_DATA} is absent (it lives beside the checkout, not in it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (512x512 RGB uint8), read-only so a function that mutates its input fails."""
    from skimage import data

    img = data.astronaut()
    img.flags.writeable = False
    return img


@pytest.fixture(scope="session")
def astronaut_points(astronaut: np.ndarray) -> np.ndarray:
    """The astronaut's 478 landmarks in image pixels."""
    from infp.face import detect_portrait_face

    return detect_portrait_face(astronaut, "astronaut").points


@pytest.fixture(scope="session")
def face_crop(astronaut: np.ndarray, astronaut_points: np.ndarray) -> FaceCrop:
    """The astronaut's face cropped to CROP_SIZE with its landmarks in crop pixels."""
    from infp.face import crop_image, face_box, to_crop

    box = face_box(astronaut_points)
    return FaceCrop(crop_image(astronaut, box, CROP_SIZE), to_crop(astronaut_points, box, CROP_SIZE))


@pytest.fixture(scope="session")
def mesh() -> Iterator:
    """One static-image Face Mesh graph (starting one costs more than a detection)."""
    from infp.face import FaceMesh

    with FaceMesh(static=True, max_faces=4) as m:
        yield m


@pytest.fixture(scope="session")
def landmarks_of(mesh) -> Callable[[np.ndarray], np.ndarray | None]:
    """image -> landmarks (478, 3) of its largest face, or None: MediaPipe's view of an image."""

    def measure(image: np.ndarray) -> np.ndarray | None:
        faces = mesh.detect(np.ascontiguousarray(image))
        return faces[0].points if faces else None

    return measure


@pytest.fixture(scope="session")
def synth_clips(tmp_path_factory) -> Path:
    """A folder with one short synthetic clip (2 s, the packaged portrait): training and eval data for tests."""
    from infp.data.synth import synthesize

    out = tmp_path_factory.mktemp("synth_clips")
    synthesize(out, count=1, seconds=2.0, seed=5, progress=False)
    return out


def save_tiny_models(root: Path, seed: int = 0) -> Path:
    """A tiny stage-1 checkpoint (`root/imi`, weights drawn with `seed`) and a tiny stage-2 checkpoint
    paired with it (`root/m`), untrained: for plumbing, not for quality."""
    import torch

    from infp.data.motion import imitator_fingerprint
    from infp.diffusion.schedule import DiffusionConfig
    from infp.models import Imitator, imitator_preset
    from infp.models.motion_config import motion_preset
    from infp.models.motion_generator import MotionGenerator

    torch.manual_seed(seed)
    Imitator(imitator_preset("tiny")).save_pretrained(root / "imi")
    model = MotionGenerator(motion_preset("tiny"))
    model.set_latent_stats(torch.zeros(16), torch.full((16,), 0.5))
    model.save_pretrained(root / "m", diffusion=DiffusionConfig().to_dict(),
                          training={"imitator_fingerprint": imitator_fingerprint(root / "imi")})
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """`save_tiny_models` once per session."""
    return save_tiny_models(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def pipe(tiny_models):
    """`InfpPipeline` on the tiny checkpoints, on the CPU."""
    from infp.pipeline import InfpPipeline

    return InfpPipeline.from_pretrained(tiny_models / "m", tiny_models / "imi", device="cpu")


@pytest.fixture(scope="session")
def portrait(pipe, astronaut):
    """The astronaut prepared by the tiny `pipe`."""
    return pipe.prepare(astronaut, "astronaut")
