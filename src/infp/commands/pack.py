"""`infp pack`: clip folders -> WebDataset tar shards and their index, on local disk or any fsspec URL."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

from infp.commands import positive_int

log = logging.getLogger("infp")

UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
         "kib": 2**10, "mib": 2**20, "gib": 2**30}


def byte_size(s: str) -> int:
    """An argparse type: a size such as 500MB, 1GB, 2GiB or 1e9 (bytes), at least 1 MB: a shard smaller
    than one clip holds one clip anyway."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", s.lower())
    if m is None or m.group(2) not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {s!r} (e.g. 500MB, 1GB, 2GiB)")
    v = int(float(m.group(1)) * UNITS[m.group(2)])
    if v < 10**6:
        raise argparse.ArgumentTypeError(f"must be at least 1MB, got {s}")
    return v


def run(args: argparse.Namespace) -> None:
    import tempfile

    from infp.data.shard_writer import bench_read, clips_to_pack, pack

    index = pack(args.sources, args.out, max_size=args.max_size, max_count=args.max_count,
                 exclude=tuple(args.exclude), progress=not args.quiet)
    log.info("wrote %d clip(s) in %d shard(s), %.1f MB, and %s", index.samples, len(index.shards), index.bytes / 1e6,
             index.url)
    if args.bench:
        with tempfile.TemporaryDirectory(prefix="infp-shard-bench-") as cache:
            rows = bench_read(clips_to_pack(args.sources, tuple(args.exclude)), index.url, Path(cache))
        for r in rows:
            log.info("%-36s %5d clips in %6.2f s: %7.1f clips/s, %7.1f MB/s", r.what, r.samples, r.seconds,
                     r.per_second, r.megabytes / max(r.seconds, 1e-9))


def _out(s: str) -> Path | str:
    """--out as given: a URL stays a string (imported here, so `infp --help` loads no NumPy)."""
    from infp.data.shards import data_source

    return data_source(s)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("pack", help="pack clip folders into WebDataset tar shards (local or any fsspec URL) that "
                       "`infp train ... --data` reads")
    s.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="folders of clips (infp synth / preprocess)")
    s.add_argument("--out", type=_out, required=True,
                   help="folder or URL (file://, memory://, s3://, ... any fsspec URL) for shard-NNNNNN.tar and "
                        "index.json; must not hold a pack already")
    s.add_argument("--max-size", type=byte_size, default=10**9,
                   help="bytes per shard at most, e.g. 500MB or 2GiB (default 1GB); a clip larger than this gets a "
                        "shard alone")
    s.add_argument("--max-count", type=positive_int, default=10000, help="clips per shard at most (default 10000)")
    s.add_argument("--exclude", nargs="+", default=[], metavar="NAME",
                   help="clip files to leave out, e.g. contact.png (a preview for people, about a fifth of a "
                        "synthetic clip's bytes); default: every file of each clip")
    s.add_argument("--bench", action="store_true",
                   help="then time reading the clips from the shards against reading the clip folders (clips/s)")
    s.set_defaults(func=run)
