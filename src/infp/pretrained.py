"""Checkpoints bundled in the package (trained by the project's own commands; see their MODEL_CARD.md)."""

from __future__ import annotations

from pathlib import Path

from infp.errors import InfpError

BUNDLED = Path(__file__).resolve().parent / "checkpoints"


def imitator_dir() -> Path:
    """The bundled stage-1 (imitation) checkpoint directory."""
    path = BUNDLED / "imitator"
    if not (path / "config.json").is_file():
        raise InfpError("this install has no bundled stage-1 checkpoint; pass --checkpoint DIR", path)
    return path
