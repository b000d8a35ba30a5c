"""The project's one clip format, written by `infp synth` and `infp preprocess`, read by everyone.

A clip is a directory (see docs/clip-format.md):

    meta.json       ClipMeta: format version, kind, fps, frames, size, sources, statistics
    video.mp4       the face crops, size x size, 25 fps H.264, with both tracks as stereo AAC
                    (left = agent, right = partner): the training frames and the preview at once
    agent.wav       A_self, 16 kHz mono 16-bit PCM, exactly n_frames * 640 samples
    partner.wav     A_other, same length
    landmarks.npy   (T, 478, 3) float32 MediaPipe landmarks in crop pixels, NaN where no face
    behaviour.npz   synthetic clips only: the per-frame ground truth (`data.behaviour.Behaviour`)
    contact.png     a contact sheet of the clip (speaking and listening frames), for people

A clip directory appears under its final name only once complete (`fsutil.atomic_dir`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infp.errors import InfpError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ClipMeta:
    id: str
    kind: str  # "synthetic" | "real"
    fps: int
    n_frames: int
    size: int  # crop side in pixels
    sample_rate: int
    source: str  # the portrait (synthetic) or the video (real) it came from
    face_found: float  # fraction of frames where MediaPipe found the face
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def duration(self) -> float:
        return self.n_frames / self.fps

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ClipMeta:
        d = json.loads(Path(path).read_text())
        if d.get("format_version") != FORMAT_VERSION:
            raise InfpError(f"clip format version {d.get('format_version')} is not {FORMAT_VERSION}", path)
        return cls(**d)


@dataclass(frozen=True)
class Clip:
    """A clip on disk; arrays are loaded on demand."""

    path: Path
    meta: ClipMeta

    @classmethod
    def open(cls, path: str | Path) -> Clip:
        path = Path(path)
        if not (path / "meta.json").is_file():
            raise InfpError("not a clip directory (no meta.json)", path)
        return cls(path, ClipMeta.load(path / "meta.json"))

    @property
    def video(self) -> Path:
        return self.path / "video.mp4"

    def tracks(self) -> tuple[np.ndarray, np.ndarray]:
        """(agent, partner), each (N,) float32 at 16 kHz."""
        from infp.audio.io import load_mono

        return load_mono(self.path / "agent.wav"), load_mono(self.path / "partner.wav")

    def landmarks(self) -> np.ndarray:
        return np.load(self.path / "landmarks.npy")

    def behaviour(self):
        from infp.data.behaviour import Behaviour

        f = self.path / "behaviour.npz"
        return Behaviour.load(f) if f.exists() else None

    def frames(self):
        """Iterate (T,) RGB crops (size, size, 3) uint8."""
        from infp.video import iter_frames

        for _, frame in iter_frames(self.video, fps=self.meta.fps):
            yield frame


def list_clips(root: str | Path) -> list[Clip]:
    """All complete clips under `root` (directories holding a meta.json), sorted by path."""
    return [Clip.open(p.parent) for p in sorted(Path(root).rglob("meta.json")) if not p.parent.name.startswith(".")]
