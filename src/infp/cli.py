"""The `infp` command. Thin: parse flags, call the library, turn user errors into one line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from infp import __version__
from infp.errors import InfpError

log = logging.getLogger("infp")


def _synth(args: argparse.Namespace) -> None:
    from infp.data.synth import synthesize

    metas = synthesize(
        args.out, count=args.count, seconds=args.seconds, seed=args.seed, portraits=args.portraits,
        speech=args.speech, size=args.size, progress=not args.quiet,
    )
    found = sum(m.face_found * m.n_frames for m in metas) / max(1, sum(m.n_frames for m in metas))
    log.info("wrote %d clip(s) to %s (face found in %.1f%% of frames)", len(metas), args.out, 100 * found)


def _positive_float(s: str) -> float:
    v = float(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


def _positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infp", description="INFP: interactive head generation for dyadic conversations.")
    p.add_argument("--version", action="version", version=f"infp {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="make synthetic two-track conversations with a real portrait as the agent")
    s.add_argument("--out", type=Path, required=True, help="output folder (one clip directory per conversation)")
    s.add_argument("--portraits", type=Path, default=None, help="folder of portrait images (default: skimage's astronaut)")
    s.add_argument("--speech", type=Path, default=None, help="folder of real speech files to splice into turns")
    s.add_argument("--count", type=_positive_int, default=1, help="number of conversations (default 1)")
    s.add_argument("--seconds", type=_positive_float, default=20.0, help="length of each conversation (default 20)")
    s.add_argument("--seed", type=int, default=0, help="random seed; same seed, same clips (default 0)")
    s.add_argument("--size", type=_positive_int, default=256, help="side of the face crops in pixels (default 256)")
    s.set_defaults(func=_synth)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="infp: %(message)s")
    try:
        args.func(args)
    except InfpError as e:
        print(f"infp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
