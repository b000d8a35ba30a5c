"""Checkpoints bundled in the package (trained by the project's own commands; see their MODEL_CARD.md)."""

from __future__ import annotations

from pathlib import Path

from infp.errors import InfpError

BUNDLED = Path(__file__).resolve().parent / "checkpoints"


def _bundled(name: str, what: str) -> Path:
    path = BUNDLED / name
    if not (path / "config.json").is_file():
        raise InfpError(f"this install has no bundled {what} checkpoint; pass --checkpoint DIR", path)
    return path


def imitator_dir() -> Path:
    """The bundled stage-1 (imitation) checkpoint directory."""
    return _bundled("imitator", "stage-1")


def motion_dir() -> Path:
    """The bundled stage-2 (motion) checkpoint directory."""
    return _bundled("motion", "stage-2")


def expression_dir() -> Path | None:
    """The bundled expression space (the neutral start, issue 25), None where this install has none."""
    path = BUNDLED / "expression"
    return path if (path / "config.json").is_file() else None


def demo_conversation() -> Path:
    """The packaged 12-s two-track conversation (assets/README.md): what `infp generate` animates
    when given no audio."""
    path = Path(__file__).resolve().parent / "assets" / "conversation.flac"
    if not path.is_file():
        raise InfpError("this install has no packaged demo conversation; pass --audio or --agent/--partner", path)
    return path
