"""Writing WebDataset shards of clips (`infp pack`) and timing how they read against clip folders; the
pack's layout and the reading side are `infp.data.shards`'s (docs/training-at-scale.md, "Shards")."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path

from infp.data.clip import Clip
from infp.data.shards import (
    BLOCK,
    CHECKSUMS,
    INDEX,
    KEY,
    PATTERN,
    RECORD,
    REQUIRED,
    HashingReader,
    ShardEntry,
    ShardIndex,
    data_source,
    index_url,
    read_shards,
    tar_samples,
    url_fs,
    verified,
)
from infp.errors import InfpError

log = logging.getLogger(__name__)

# -- writing --------------------------------------------------------------------------------------------

def _members(folder: Path, exclude: tuple[str, ...]) -> list[Path]:
    """The files of a clip folder that go into its sample: every regular, visible one not excluded."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name not in exclude)


def clips_to_pack(sources: list[Path], exclude: tuple[str, ...] = ()) -> list[tuple[Clip, list[Path]]]:
    """Every clip under `sources` (sorted by path per source, as `list_clips`) with its files, checked
    before anything is written: one `InfpError` names what cannot be packed."""
    found, problems, seen = [], [], {}
    for src in map(Path, sources):
        if not src.is_dir():
            raise InfpError("not a folder of clips", src)
        metas = [p for p in sorted(src.rglob("meta.json")) if not p.parent.name.startswith(".")]
        if not metas:
            raise InfpError("no clips here (run `infp synth` or `infp preprocess` first)", src)
        for meta in metas:
            try:
                clip = Clip.open(meta.parent)
            except (InfpError, ValueError, TypeError) as e:
                problems.append(f"{meta}: unreadable ({e})")
                continue
            files = _members(clip.path, exclude)
            names = {f.name for f in files}
            if not KEY.fullmatch(clip.meta.id):
                problems.append(f"{clip.path}: id {clip.meta.id!r} has characters outside [A-Za-z0-9_-]")
            elif clip.meta.id in seen:
                problems.append(f"clip id {clip.meta.id} is in both {seen[clip.meta.id]} and {clip.path} "
                                "(pack them separately: --data takes several packs)")
            elif missing := [n for n in REQUIRED if n not in names or (clip.path / n).stat().st_size == 0]:
                problems.append(f"{clip.path}: {', '.join(missing)} missing or empty")
            elif CHECKSUMS in names:
                problems.append(f"{clip.path}: holds a file named {CHECKSUMS}, which the shards use themselves")
            seen.setdefault(clip.meta.id, clip.path)
            found.append((clip, files))
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise InfpError(f"{len(problems)} clip(s) cannot be packed; nothing was written: " + "; ".join(problems[:3]) + more)
    return found


def _tar_bytes(key: str, sample: dict[str, bytes]) -> int:
    """Bytes `sample` takes in a PAX tar: a header block per member (three more for a name over 100
    bytes: its extended header) and the data padded to whole blocks."""
    total = 0
    for name, data in sample.items():
        long_name = len(f"{key}.{name}".encode()) > 100
        total += BLOCK * (4 if long_name else 1) + -(-len(data) // BLOCK) * BLOCK
    return total


class _Sink:
    """Opens each shard WebDataset's ShardWriter starts, through fsspec (so any URL works), hashes its
    bytes as they pass, and records it when the writer closes it: no shard is read back."""

    def __init__(self, fs, root: str):
        self.fs, self.root = fs, root
        self.entries: list[ShardEntry] = []
        self.opened: list[str] = []
        self.keys: list[str] = []
        self.file = None

    def open(self, name: str) -> _Sink:
        path = posixpath.join(self.root, name)
        self.opened.append(path)
        self.file, self.hash, self.size, self.keys = self.fs.open(path, "wb"), hashlib.sha256(), 0, []
        return self

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self.file.write(data)

    def done(self, name: str) -> None:
        self.file.close()
        self.file = None
        self.entries.append(ShardEntry(name, self.size, self.hash.hexdigest(), tuple(self.keys)))

    def discard(self) -> None:
        """Remove every shard written: a pack that failed leaves nothing that looks like a pack."""
        with contextlib.suppress(Exception):
            if self.file is not None:
                self.file.close()
        for path in self.opened:
            with contextlib.suppress(Exception):
                self.fs.rm(path)


def _check_out(fs, root: str, out) -> None:
    if fs.isfile(root):
        raise InfpError("--out is a file; give a folder (or URL) for the shards", out)
    if fs.exists(posixpath.join(root, INDEX)):
        raise InfpError("already holds a pack (index.json); choose another --out: writing here would mix two packs", out)
    if fs.glob(posixpath.join(root, "shard-*.tar")):
        raise InfpError("holds shard-*.tar but no index.json (left by a pack that was killed?); delete them or "
                        "choose another --out", out)


def _sample(clip: Clip, files: list[Path]) -> dict[str, bytes]:
    try:
        sample = {f.name: f.read_bytes() for f in files}
    except OSError as e:  # a clip changed since it was checked
        raise InfpError(f"cannot read a file of this clip ({e.strerror}: {e.filename})", clip.path) from None
    sample[CHECKSUMS] = json.dumps({n: hashlib.sha256(b).hexdigest() for n, b in sample.items()}).encode()
    return sample


def _write_shards(clips: list[tuple[Clip, list[Path]]], sink: _Sink, max_size: int, max_count: int, mtime: int,
                  progress: bool) -> None:
    import webdataset as wds
    from tqdm import tqdm

    with tqdm(total=len(clips), unit="clip", desc="pack", disable=not progress) as bar, \
            wds.ShardWriter(PATTERN, maxcount=max_count, maxsize=max_size, opener=sink.open, post=sink.done,
                            verbose=0, encoder=False, mtime=mtime, format="PAX_FORMAT") as writer:
        used = 0  # bytes of the open shard
        for clip, files in clips:
            sample = _sample(clip, files)
            need = _tar_bytes(clip.meta.id, sample)
            # WebDataset checks its bounds before a sample, once the last one has overflowed them: check here
            # with this sample's size and the end blocks and record padding the shard will get
            if writer.count and (writer.count >= max_count or -(-(used + need + 2 * BLOCK) // RECORD) * RECORD > max_size):
                writer.next_stream()
                used = 0
            writer.write({"__key__": clip.meta.id, **sample})
            sink.keys.append(clip.meta.id)
            used += need
            bar.update(1)
            bar.set_postfix_str(PATTERN % len(sink.entries), refresh=False)


def pack(sources: list[Path], out: str | Path, max_size: int = 10**9, max_count: int = 10000,
         exclude: tuple[str, ...] = (), progress: bool = True) -> ShardIndex:
    """Write the clips under `sources` into shards of at most `max_size` bytes (a clip larger than that
    gets a shard alone) and `max_count` clips at `out` (a folder or fsspec URL), then `index.json`.
    Everything is checked before the first byte is written; a pack that fails removes its shards."""
    from fsspec.implementations.local import LocalFileSystem

    from infp import __version__
    from infp.fsutil import atomic_file

    if bad := sorted(set(exclude) & set(REQUIRED)):
        raise InfpError(f"--exclude {' '.join(bad)}: every clip needs {', '.join(REQUIRED)}")
    clips = clips_to_pack(sources, tuple(exclude))
    fs, root = url_fs(str(data_source(out)))
    _check_out(fs, root, out)
    mtime = int(max(f.stat().st_mtime for _, files in clips for f in files))  # the same input gives the same bytes
    sink = _Sink(fs, root)
    try:
        fs.makedirs(root, exist_ok=True)
        _write_shards(clips, sink, max_size, max_count, mtime, progress)
    except OSError as e:  # the destination: full, read-only, unreachable
        sink.discard()
        raise InfpError(f"cannot write the shards ({e})", out) from None
    except BaseException:
        sink.discard()
        raise
    index = ShardIndex(index_url(out), tuple(sink.entries), mtime, f"infp {__version__} pack")
    if isinstance(fs, LocalFileSystem):
        with atomic_file(Path(root) / INDEX) as tmp:
            tmp.write_text(index.to_json())
    else:  # an object store puts a whole object at once
        fs.pipe_file(posixpath.join(root, INDEX), index.to_json().encode())
    if big := [s.name for s in index.shards if s.size > max_size]:
        log.info("%d shard(s) exceed --max-size: each holds one clip larger than it (%s)", len(big), big[0])
    return index


# -- throughput -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchRow:
    what: str
    samples: int
    seconds: float
    megabytes: float

    @property
    def per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)


def _stream(index: ShardIndex, verify: bool) -> int:
    """Stream every shard of `index` through WebDataset; the samples read (that verify, with `verify`)."""
    n = 0
    for entry in index.shards:
        fs, path = url_fs(index.shard_url(entry))
        with fs.open(path, "rb") as f:
            for sample in tar_samples(HashingReader(f, entry.name), []):
                n += isinstance(verified(sample), dict) if verify else 1
    return n


def bench_read(clips: list[tuple[Clip, list[Path]]], source: str | Path, cache: Path) -> list[BenchRow]:
    """Time reading the same clips as folders and as a pack: every file's bytes from the folders; the shards
    streamed, then with every file's checksum checked; materialised into an empty `cache` (a trainer's first
    run), and again (later runs)."""
    import webdataset  # noqa: F401  (before the clock: it imports torch, seconds that no trainer pays twice)

    rows, mb = [], sum(f.stat().st_size for _, files in clips for f in files) / 1e6
    t = time.perf_counter()
    for _, files in clips:
        for f in files:
            f.read_bytes()
    rows.append(BenchRow("clip folders: read every file", len(clips), time.perf_counter() - t, mb))
    index = ShardIndex.load(source)
    for what, verify in (("shards: stream (WebDataset)", False), ("shards: stream + verify checksums", True)):
        t = time.perf_counter()
        n = _stream(index, verify)
        rows.append(BenchRow(what, n, time.perf_counter() - t, index.bytes / 1e6))
    for what in ("shards: materialise (first run)", "shards: materialised (later runs)"):
        t = time.perf_counter()
        n = len(read_shards(source, cache, progress=False).clips)
        rows.append(BenchRow(what, n, time.perf_counter() - t, index.bytes / 1e6))
    return rows
