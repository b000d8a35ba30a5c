"""WebDataset tar shards of clips: what `infp pack` writes and both trainers' `--data` read, from a local
folder or any fsspec URL (docs/training-at-scale.md, "Shards").

A pack is a folder (local, `file://`, `memory://`, `s3://`, ...) of shards and one index:

    shard-000000.tar  one sample per clip, in clip order: `<id>.<name>` for every file of the clip folder
                      (`clip_00000.meta.json`, `clip_00000.video.mp4`, ...) and `<id>.sha256.json`, the
                      sha256 of each of them, so a damaged sample is caught, not trained on
    index.json        per shard: name, bytes, sha256 and clip ids; written last, so a folder with an
                      index holds a finished pack

Tar handling is WebDataset's: `ShardWriter` writes, `tar_file_expander` + `group_by_keys` read, over
streams fsspec opens. A reader materialises each shard once into a local folder named by its checksum
(`shard_cache()`), one clip folder per sample, so every loader and cache downstream (stage 1's frames,
stage 2's latents) reads ordinary `Clip`s, unchanged. A damaged or truncated shard never stops a run:
its bad samples are skipped and counted in the log.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path

from infp.data.clip import Clip
from infp.errors import InfpError

log = logging.getLogger(__name__)

INDEX, CHECKSUMS, RECORD_FILE, PATTERN = "index.json", "sha256.json", "shard.json", "shard-%06d.tar"
FORMAT, VERSION = "infp-shards", 1
REQUIRED = ("meta.json", "video.mp4", "agent.wav", "partner.wav", "landmarks.npy")  # docs/clip-format.md
KEY = re.compile(r"[A-Za-z0-9_-]+")  # WebDataset splits a member name at its first dot: ids have none
BLOCK, RECORD = 512, 10240  # a tar block, and the record a tar's end is padded to (tarfile.RECORDSIZE)


@dataclass(frozen=True)
class ShardEntry:
    name: str  # the shard's file name, beside the index
    size: int  # bytes
    sha256: str
    keys: tuple[str, ...]  # clip ids, in order


@dataclass(frozen=True)
class ShardIndex:
    url: str  # of index.json (a local path or a URL)
    shards: tuple[ShardEntry, ...]
    mtime: int  # every member's time stamp, and the materialised files'
    created_by: str

    @property
    def samples(self) -> int:
        return sum(len(s.keys) for s in self.shards)

    @property
    def bytes(self) -> int:
        return sum(s.size for s in self.shards)

    def shard_url(self, entry: ShardEntry) -> str:
        return posixpath.join(posixpath.dirname(self.url), entry.name)

    def to_json(self) -> str:
        shards = [{"name": s.name, "size": s.size, "sha256": s.sha256, "samples": len(s.keys), "keys": list(s.keys)}
                  for s in self.shards]
        return json.dumps({"format": FORMAT, "version": VERSION, "created_by": self.created_by, "mtime": self.mtime,
                           "samples": self.samples, "bytes": self.bytes, "shards": shards}, indent=1) + "\n"

    @classmethod
    def load(cls, source: str | Path) -> ShardIndex:
        """The index a `--data` entry names: an index file, or a folder or URL holding `index.json`."""
        url = index_url(source)
        fs, path = url_fs(url)
        try:
            d = json.loads(fs.cat_file(path))
            if d.get("format") != FORMAT or d.get("version") != VERSION:
                raise InfpError(f"not an infp shard index (format {d.get('format')!r} version {d.get('version')!r}, "
                                f"expected {FORMAT!r} {VERSION})", url)
            shards = tuple(ShardEntry(s["name"], int(s["size"]), s["sha256"], tuple(s["keys"])) for s in d["shards"])
            mtime, made_by = int(d["mtime"]), str(d.get("created_by", ""))
        except FileNotFoundError:
            raise InfpError(f"no shard index here ({INDEX}; make one with `infp pack`)", url) from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise InfpError(f"unreadable shard index ({type(e).__name__}: {e})", url) from None
        except OSError as e:
            raise InfpError(f"cannot read the shard index ({e})", url) from None
        bad = [s.name for s in shards if "/" in s.name or s.name.startswith(".")]
        if bad:  # a tampered index must not send the reader outside the pack's folder
            raise InfpError(f"shard names must be plain file names, not {bad[0]!r}", url)
        return cls(url, shards, mtime, made_by)


# -- where a pack is ----------------------------------------------------------------------------------

def data_source(s: str | Path) -> str | Path:
    """A `--data` entry: a URL stays a string (pathlib folds `memory://x` into `memory:/x`), anything else
    is a Path. Undoes that folding in entries that went through Path already (a resumed run's run.json)."""
    s = str(s)
    m = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]+):/+(.*)", s, re.DOTALL)
    if m is None or Path(s).exists():
        return Path(s)
    scheme, rest = m.groups()
    return f"file:///{rest}" if scheme == "file" else f"{scheme}://{rest}"


def is_shards(source: str | Path) -> bool:
    """Whether a `--data` entry names a pack (a URL, an index file, or a folder holding `index.json`)
    rather than a folder of clips."""
    s = data_source(source)
    return isinstance(s, str) or s.suffix == ".json" or (s / INDEX).is_file()


def index_url(source: str | Path) -> str:
    s = data_source(source)
    s = str(s.resolve()) if isinstance(s, Path) else s  # absolute: the record of a run must not depend on its cwd
    return s if s.endswith(".json") else s.rstrip("/") + "/" + INDEX


def url_fs(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:  # an unknown scheme, or one whose package is not installed
        raise InfpError(f"cannot open this URL ({e})", url) from None


def shard_cache() -> Path:
    """Where shards are materialised: $INFP_SHARD_CACHE, or ~/.cache/infp/shards."""
    env = os.environ.get("INFP_SHARD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "infp" / "shards"


# -- reading --------------------------------------------------------------------------------------------

class HashingReader:
    """A read-only stream that hashes what passes through it: the shard's checksum, without a second read."""

    def __init__(self, f, url: str):
        self.f, self.url, self.hash, self.size = f, url, hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.hash.update(b)
        self.size += len(b)
        return b

    def drain(self) -> None:
        """Read to the end: the tar reader stops at the end marker, but the padding after it is checksummed too."""
        while self.read(1 << 20):
            pass

    def __str__(self) -> str:  # WebDataset names the stream in its error messages
        return self.url


def tar_samples(stream: HashingReader, errors: list[str]):
    """The samples of one tar stream, grouped by WebDataset; what goes wrong is noted in `errors`, not raised."""
    from webdataset.tariterators import group_by_keys, tar_file_expander

    def note(exn: Exception) -> bool:
        errors.append(f"{type(exn).__name__}: {exn.args[0] if exn.args else exn}")
        return True  # go on: whatever follows may still be readable

    files = tar_file_expander([{"url": stream.url, "stream": stream}], handler=note)
    return group_by_keys(files, handler=note, lcase=False)


def verified(sample: dict) -> dict[str, bytes] | str:
    """The files of a sample when every one matches its sha256.json; else why it is skipped."""
    files = {k: v for k, v in sample.items() if not k.startswith("__")}
    if not KEY.fullmatch(sample.get("__key__") or ""):
        return f"bad sample name {sample.get('__key__')!r}"
    try:
        want = json.loads(files.pop(CHECKSUMS))
    except KeyError:
        return f"incomplete: no {CHECKSUMS}"
    except ValueError:
        return f"unreadable {CHECKSUMS}"
    if missing := sorted(set(want) - set(files)):
        return f"incomplete: no {', '.join(missing)}"
    if bad := sorted(n for n, b in files.items() if want.get(n) != hashlib.sha256(b).hexdigest()):
        return f"damaged: {', '.join(bad)} do(es) not match the checksum"
    return files


@dataclass
class ShardRead:
    """What reading one shard gave."""

    entry: ShardEntry
    folder: Path  # where its clips are materialised
    clips: list[str]  # ids of the clips materialised, in shard order
    skipped: dict[str, str]  # id -> why (damaged, incomplete, or missing where the shard ends early)
    errors: list[str]  # what the tar reader reported (a truncated or garbled shard)
    intact: bool  # every byte as the index says: the folder is reused without reading the shard again


def _extract(index: ShardIndex, entry: ShardEntry, tmp: Path, bar) -> ShardRead:
    url, expected = index.shard_url(entry), set(entry.keys)
    got, skipped, errors = [], {}, []
    reader = None
    try:
        fs, path = url_fs(url)
        reader = HashingReader(fs.open(path, "rb"), url)
    except (OSError, InfpError) as e:
        errors.append(f"cannot open the shard ({e})")
    if reader is not None:
        with contextlib.closing(reader.f):
            for sample in tar_samples(reader, errors):
                key, files = sample.get("__key__"), verified(sample)
                if key not in expected or key in got or key in skipped:  # a garbled name splits a sample
                    errors.append(f"a sample {key!r} the index does not list there (or a second part of one)")
                    continue
                if isinstance(files, str):
                    skipped[key] = files
                elif (why := _write_clip(tmp / key, files, index.mtime)) is not None:
                    skipped[key] = why
                else:
                    got.append(key)
                bar.update(1)
            with contextlib.suppress(Exception):
                reader.drain()
    damaged = errors or reader is None or reader.hash.hexdigest() != entry.sha256
    ended = "missing: the shard is damaged or ends before it" if damaged else "missing from the shard"
    for k in entry.keys:
        if k not in got and k not in skipped:
            skipped[k] = ended
            bar.update(1)
    intact = (not skipped and not errors and reader is not None and reader.size == entry.size
              and reader.hash.hexdigest() == entry.sha256)
    return ShardRead(entry, tmp, got, skipped, errors, intact)


def _write_clip(folder: Path, files: dict[str, bytes], mtime: int) -> str | None:
    """Write a verified sample as a clip folder; None when it opens as a clip, else why not. Every file
    gets the pack's time stamp, so a shard materialised again keeps stage 2's cache keys."""
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
        os.utime(folder / name, (mtime, mtime))
    try:
        Clip.open(folder)
    except (InfpError, ValueError, TypeError) as e:
        return f"not a clip ({e})"
    return None


@contextlib.contextmanager
def _locked(path: Path):
    """Wait for, then hold, an flock on `path`: the processes of one launch materialise a shard once."""
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def materialise(index: ShardIndex, entry: ShardEntry, cache: Path, bar) -> ShardRead:
    """A shard's clips as folders under `cache/<16 hex of its sha256>/`: an intact shard is read once and
    reused; one with skipped samples is read again each time (the log says so again)."""
    from infp.fsutil import atomic_dir

    folder = cache / entry.sha256[:16]
    with _locked(cache / f"{entry.sha256[:16]}.lock"):
        try:
            rec = json.loads((folder / RECORD_FILE).read_text())
            complete = all((folder / k / "meta.json").is_file() for k in rec["clips"])
            if rec["intact"] and rec["sha256"] == entry.sha256 and complete:
                bar.update(len(entry.keys))
                return ShardRead(entry, folder, list(rec["clips"]), {}, [], True)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # not there yet, or not usable: read the shard
        with atomic_dir(folder) as tmp:
            read = _extract(index, entry, tmp, bar)
            (tmp / RECORD_FILE).write_text(json.dumps({"url": index.shard_url(entry), "sha256": entry.sha256,
                                                       "clips": read.clips, "skipped": read.skipped,
                                                       "errors": read.errors, "intact": read.intact}, indent=1))
        read.folder = folder
        return read


@dataclass
class ShardLoad:
    clips: list[Clip]
    reads: list[ShardRead]

    @property
    def skipped(self) -> int:
        return sum(len(r.skipped) for r in self.reads)


def read_shards(source: str | Path, cache: Path | None = None, progress: bool = True) -> ShardLoad:
    """Every usable clip of a pack, materialised under `cache` (default `shard_cache()`); damaged, incomplete
    and missing samples are skipped and counted per shard in the log, never fatal unless nothing is left."""
    from tqdm import tqdm

    index = ShardIndex.load(source)
    cache = Path(cache or shard_cache())
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InfpError(f"cannot create the shard cache ({e.strerror}; set INFP_SHARD_CACHE)", cache) from None
    clips, reads = [], []
    with tqdm(total=index.samples, unit="clip", desc="shards", disable=not progress) as bar:
        for entry in index.shards:
            try:
                r = materialise(index, entry, cache, bar)
            except OSError as e:  # the cache's disk, not the shard: nothing to skip past
                raise InfpError(f"cannot write the shard cache ({e.strerror}; free space or set INFP_SHARD_CACHE)",
                                e.filename or cache) from None
            reads.append(r)
            if r.skipped or r.errors:
                why = "; ".join(sorted({v for v in r.skipped.values()}))[:300]
                log.warning("shard %s: skipped %d of %d sample(s): %s%s", index.shard_url(entry), len(r.skipped),
                            len(entry.keys), why, f" (reader: {r.errors[0][:200]})" if r.errors else "")
            clips += [Clip.open(r.folder / k) for k in r.clips]
    load = ShardLoad(clips, reads)
    if load.skipped:
        log.warning("%s: skipped %d of %d sample(s) in %d of %d shard(s)", index.url, load.skipped, index.samples,
                    sum(bool(r.skipped) for r in reads), len(reads))
    if not clips:
        raise InfpError(f"no usable clip in this pack ({load.skipped} of {index.samples} skipped)", index.url)
    log.info("%s: %d clip(s) from %d shard(s), materialised in %s", index.url, len(clips), len(reads), cache)
    return load


def shard_clips(source: str | Path, cache: Path | None = None, progress: bool = True) -> list[Clip]:
    """The trainers' hook: a pack's clips, as `train.run.clips_in` gives a folder's."""
    return read_shards(source, cache, progress).clips
