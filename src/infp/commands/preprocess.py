"""`infp preprocess`: real single-person talking videos -> clips in the project's clip format."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import positive_float, positive_int

log = logging.getLogger("infp")

# Kept here too (not imported from infp.data.preprocess) so `infp --help` does not load MediaPipe.
LAYOUTS = ("single", "pair", "side-by-side", "stereo")


def run(args: argparse.Namespace) -> None:
    from infp.data.preprocess import STATS, PreprocessConfig, preprocess

    cfg = PreprocessConfig(size=args.size, min_seconds=args.min_seconds, max_gap_s=args.max_gap, layout=args.layout)
    stats = preprocess(args.sources, args.out, cfg, workers=args.workers, progress=not args.quiet)
    t = stats.totals()
    log.info(
        "%d video(s): %d clip(s), %d frames (%.1f s) in %s; %d written, %d cached, %d skipped; %.1f s (stats: %s)",
        t["videos"], t["clips"], t["frames"], t["seconds"], args.out, t["written"], t["cached"], t["skipped"],
        stats.seconds_taken, Path(args.out) / STATS,
    )


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("preprocess", help="cut real talking videos into face-crop clips (the training data format)")
    s.add_argument("sources", nargs="+", type=Path, metavar="SOURCE", help="video files or folders of videos")
    s.add_argument("--out", type=Path, required=True, help="output folder (one clip directory per face segment)")
    s.add_argument("--layout", choices=LAYOUTS, default="single",
                   help="how the videos hold the conversation: single (one person, their own audio; the partner "
                        "silent), pair (two videos, one per person, sorted by path and taken two at a time: each "
                        "person's clip hears the other's video's audio), stereo (one person, a two-channel recording "
                        "with one voice per channel; the on-screen person's channel is found by their lips), side-by-side (two "
                        "people, left and right halves, one mixed track: each becomes clips <id>_left / <id>_right, the "
                        "track cut by whose mouth moves while someone speaks) (default single)")
    s.add_argument("--workers", type=positive_int, default=1, help="videos processed in parallel (default 1)")
    s.add_argument("--size", type=positive_int, default=256, help="side of the face crops in pixels (default 256)")
    s.add_argument("--min-seconds", type=positive_float, default=1.0,
                   help="drop face segments shorter than this (default 1.0)")
    s.add_argument("--max-gap", type=positive_float, default=0.5,
                   help="face gaps up to this many seconds are interpolated, longer ones split the video (default 0.5)")
    s.set_defaults(func=run)
