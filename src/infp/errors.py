"""User-facing errors.

Anything the user can cause (a bad file, a missing face, a wrong flag) raises `InfpError` with a
one-line message naming the file and the problem. The CLI prints that line and exits non-zero with
no traceback; programming errors keep their tracebacks.
"""

from __future__ import annotations

from pathlib import Path


class InfpError(Exception):
    """An error caused by the input, reported to the user as one line."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else Path(path)
        super().__init__(f"{self.path}: {message}" if path is not None else message)


class NoFaceError(InfpError):
    """No face was found where one is needed."""


class MediaError(InfpError):
    """A media file is missing, empty, truncated or of the wrong kind."""


def require_file(path: str | Path) -> Path:
    """`path` as a Path if it is a non-empty regular file; otherwise a one-line `MediaError`
    (decoders report these cases cryptically)."""
    path = Path(path)
    if not path.exists():
        raise MediaError("file not found", path)
    if not path.is_file():
        raise MediaError("not a regular file", path)
    if path.stat().st_size == 0:
        raise MediaError("the file is empty (0 bytes)", path)
    return path
