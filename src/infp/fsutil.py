"""Atomic writes: a file or directory appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; rename it over `path` only on success.

    The temporary name keeps the suffix, so tools that pick a format from it (ffmpeg/PyAV) still work.
    """
    path = Path(path)
    if not path.parent.is_dir():
        from infp.errors import InfpError

        raise InfpError("the output folder does not exist", path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory; it replaces `path` only when the block succeeds.

    The swap survives a kill at any point: the finished copy is renamed to `.NAME.new`, the old one
    aside to `.NAME.old`, the new one in, and only then is the old one deleted. Removing the old copy
    first would leave no `path` at all to a kill in between. `recover_dir` finishes an interrupted swap.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        _seal(tmp)
        recover_dir(path)  # a copy an earlier kill left in `.NAME.new` would block the rename
        os.replace(tmp, _beside(path, "new"))
        _fault("atomic_dir:after_new")
        recover_dir(path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: str | Path) -> None:
    """Finish a swap of `atomic_dir`'s that a kill interrupted, so `path` holds the newest complete copy.

    `.NAME.new` is always complete (it gets that name only once written) and newer than `path`: it goes
    in, `path` aside first. `.NAME.old` is complete while `path` is missing (it is deleted only after the
    new copy is in): it goes back. Each step is a rename, so a kill during recovery is recovered the
    same way. One process at a time: a run folder has one writer.
    """
    path = Path(path)
    new, old = _beside(path, "new"), _beside(path, "old")
    if new.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)  # a stale one, half deleted by a kill maybe
            os.replace(path, old)
            _fault("atomic_dir:after_aside")
        os.replace(new, path)
        _fault("atomic_dir:after_swap")
    elif old.is_dir() and not path.exists():
        os.replace(old, path)
    if path.exists() and old.exists():
        shutil.rmtree(old, ignore_errors=True)


def _beside(path: Path, tag: str) -> Path:
    """`.NAME.new` / `.NAME.old`: hidden, and never a name mkdtemp gives (its end in `.partial`)."""
    return path.with_name(f".{path.name}.{tag}")


def _seal(tmp: Path) -> None:
    """Give the usual modes (mkdtemp makes 0700/0600) and flush the files to disk, so the rename that
    publishes them never points at data a power cut could still lose."""
    os.chmod(tmp, 0o777 & ~_umask())
    for f in tmp.iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~_umask())
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


FAULT_ENV, FAULT_EXIT = "INFP_FAULT", 86


def _fault(point: str) -> None:
    """The crash tests' hook: with INFP_FAULT=<point> (e.g. `atomic_dir:after_aside`) the process dies
    right here, as abruptly as a kill (no `finally`, no atexit), with status FAULT_EXIT. Unset, a no-op."""
    if os.environ.get(FAULT_ENV) == point:
        os._exit(FAULT_EXIT)
