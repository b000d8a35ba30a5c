"""Atomic writes: a file or directory appears complete under its final name, or not at all.

And the guards around an output: `check_output_path` (never replace an input, a device or a folder),
`output_lock` (one writer per output file or run folder) and `clean_partials` (what a killed writer
left beside it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import stat
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.parent)
    except OSError as e:
        from infp.errors import InfpError

        raise InfpError(f"cannot write in this folder ({e.strerror})", path.parent) from None
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


# -- guards around an output ---------------------------------------------------------------------

def check_output_path(path: str | Path, inputs=(), suffixes: tuple[str, ...] | None = (".mp4",),
                      flag: str = "--out") -> Path:
    """`path` as a Path if writing it can destroy nothing but an earlier output, else a one-line
    `InfpError`: its folder exists; it is a new name or an existing regular file (not a folder, a
    device such as /dev/null, a pipe, a socket or a symbolic link, which the atomic rename would
    replace by a file); it is none of `inputs` under any name (hard links included); and it ends in one
    of `suffixes` (the container written; None: any). Cheap: call it before any work."""
    from infp.errors import InfpError

    path = Path(path)
    if not path.parent.is_dir():
        raise InfpError("the output folder does not exist", path.parent)
    if path.is_symlink():
        raise InfpError("the output is a symbolic link; give a regular file or a new path", path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None  # a new name: nothing to lose
    if mode is not None and stat.S_ISDIR(mode):
        raise InfpError("the output path is a folder; give a file name such as out.mp4", path)
    if mode is not None and not stat.S_ISREG(mode):
        raise InfpError("the output is not a regular file (a device, pipe or socket); give a regular file or "
                        "a new path", path)
    for given in inputs:
        if mode is not None and given is not None and Path(given).exists() and os.path.samefile(path, given):
            raise InfpError(f"the output is also an input ({given}); writing it would destroy that input", path)
    if suffixes and path.suffix.lower() not in suffixes:
        raise InfpError(f"{flag} must end in {' or '.join(suffixes)}: that is the format written "
                        f"(not {path.suffix or 'no extension'})", path)
    return path


@contextlib.contextmanager
def output_lock(path: str | Path, folder: bool = False) -> Iterator[None]:
    """Hold the one-writer lock of `path` while the block runs; a second writer gets a one-line
    `InfpError` at once. A file output is locked through `.NAME.lock` beside it (deleted after); a run
    folder (`folder`) through the folder itself, made if missing (and removed after if still empty).
    `flock` locks: the kernel releases them when a process dies, so a kill never leaves a stale lock."""
    import fcntl

    from infp.errors import InfpError

    path = Path(path)
    busy = (f"another infp process is writing this {'run folder' if folder else 'output'} right now; "
            "wait for it to finish or choose another --out")
    if folder:
        made = not path.exists()
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise InfpError(f"cannot create or open the run folder ({e.strerror})", path) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise InfpError(busy, path) from None
            yield
        finally:
            os.close(fd)
            if made:
                with contextlib.suppress(OSError):
                    path.rmdir()  # only if empty: nothing is left of a run that failed before writing
        return
    lock = _beside(path, "lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise InfpError(f"cannot write in the output folder ({e.strerror})", path.parent) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InfpError(busy, path) from None
        try:  # the writer before may have deleted the file after we opened it: hold the one there now
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)  # while still held: a process that opened it sees it is gone and retries
        os.close(fd)


_TEMP_NAME = "[a-z0-9_]{8}"  # tempfile's random part


def clean_partials(path: str | Path) -> list[Path]:
    """Delete what writers of `path` that were killed (SIGKILL, a power cut) left beside it: `atomic_file`'s
    `.STEM.XXXXXXXX.partial.EXT` files and `atomic_dir`'s `.NAME.XXXXXXXX.partial` folders. Only for the
    holder of `output_lock(path)`: a live writer's temporary is indistinguishable. Returns what went."""
    path = Path(path)
    file = re.compile(rf"\.{re.escape(path.stem)}\.{_TEMP_NAME}\.partial{re.escape(path.suffix)}")
    folder = re.compile(rf"\.{re.escape(path.name)}\.{_TEMP_NAME}\.partial")
    gone = []
    if not path.parent.is_dir():
        return gone
    for p in path.parent.iterdir():
        if p.is_symlink():
            continue
        if p.is_file() and file.fullmatch(p.name):
            p.unlink(missing_ok=True)
        elif p.is_dir() and folder.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)
        else:
            continue
        gone.append(p)
    return gone


FAULT_ENV, FAULT_EXIT, FAULT_SIGNAL_ENV = "INFP_FAULT", 86, "INFP_FAULT_SIGNAL"


def _fault(point: str) -> None:
    """The crash tests' hook: with INFP_FAULT=<point> (e.g. `atomic_dir:after_aside`) the process dies
    right here, as abruptly as a kill (no `finally`, no atexit), with status FAULT_EXIT; with
    INFP_FAULT_SIGNAL=<name> too (TERM, INT, KILL) it sends itself that signal instead. Unset, a no-op."""
    if os.environ.get(FAULT_ENV) == point:
        name = os.environ.get(FAULT_SIGNAL_ENV)
        if name:  # once: a process stopped (SIGSTOP) and continued goes on normally
            del os.environ[FAULT_ENV]
            os.kill(os.getpid(), getattr(signal, f"SIG{name.upper().removeprefix('SIG')}"))
            return
        os._exit(FAULT_EXIT)
