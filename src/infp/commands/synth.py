"""`infp synth`: synthetic two-track conversations with a real portrait as the agent."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import fraction, positive_float, positive_int, seed

log = logging.getLogger("infp")


def run(args: argparse.Namespace) -> None:
    from infp.data.synth import synthesize

    metas = synthesize(
        args.out, count=args.count, seconds=args.seconds, seed=args.seed, portraits=args.portraits,
        speech=args.speech, size=args.size, progress=not args.quiet, real_speech_prob=args.real_speech_prob,
        languages=args.languages,
    )
    found = sum(m.face_found * m.n_frames for m in metas) / max(1, sum(m.n_frames for m in metas))
    log.info("wrote %d clip(s) to %s (face found in %.1f%% of frames)", len(metas), args.out, 100 * found)


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("synth", help="make synthetic two-track conversations with a real portrait as the agent")
    s.add_argument("--out", type=Path, required=True, help="output folder (one clip directory per conversation)")
    s.add_argument("--portraits", type=Path, default=None, help="folder of portrait images (default: skimage's astronaut)")
    s.add_argument("--speech", type=Path, default=None, help="folder of real speech files to splice into turns")
    s.add_argument("--real-speech-prob", type=fraction, default=0.5,
                   help="with --speech: chance that a side speaks real speech rather than espeak-ng (default 0.5)")
    s.add_argument("--languages", nargs="+", default=None,
                   help="languages of the espeak-ng voices (default: en-us en-gb en-gb-scotland de fr es it); a "
                        "held-out set in languages training never heard: e.g. pt nl pl (docs/evaluation.md)")
    s.add_argument("--count", type=positive_int, default=1, help="number of conversations (default 1)")
    s.add_argument("--seconds", type=positive_float, default=20.0, help="length of each conversation (default 20)")
    s.add_argument("--seed", type=seed, default=0, help="random seed; same seed, same clips (default 0)")
    s.add_argument("--size", type=positive_int, default=256, help="side of the face crops in pixels (default 256)")
    s.set_defaults(func=run)
