"""`infp eval imitation`: self-reenactment scores of a stage-1 checkpoint beside the copy-source
baseline, and a cross-identity grid."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from infp.commands import positive_int

log = logging.getLogger("infp")


def _model(args: argparse.Namespace):
    from infp.models import Imitator
    from infp.pretrained import imitator_dir

    return Imitator.from_pretrained(args.checkpoint or imitator_dir())


def run_imitation(args: argparse.Namespace) -> None:
    import numpy as np

    from infp.data.clip import list_clips
    from infp.data.contact import write_png
    from infp.data.pairs import load_clip_frames
    from infp.data.portraits import load_portraits
    from infp.errors import InfpError
    from infp.eval.imitation import cross_identity_grid, evaluate_imitation
    from infp.eval.metrics import load_inception

    model = _model(args)
    clips = [c for d in args.data for c in list_clips(d)]
    if not clips:
        raise InfpError(f"no clips in {', '.join(map(str, args.data))}")
    fid = load_inception(args.inception) if args.inception else None
    if fid is None:
        log.info("FID: not computed (no --inception weights given)")
    report = evaluate_imitation(model, clips, every=args.every, max_frames=args.max_frames, fid_features=fid,
                                progress=not args.quiet)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "imitation.md").write_text(report.markdown())
    (args.out / "imitation.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(report.markdown(), end="")
    if args.portraits:
        portraits = load_portraits(args.portraits, model.cfg.size)
        frames = [load_clip_frames(c, model.cfg.size, args.max_frames) for c in clips[: args.grid_clips]]
        # evenly spread frames after the first (the first is the clip's reference pose)
        driving = [(f, int(f.usable[k])) for f in frames
                   for k in np.linspace(0, len(f.usable) - 1, args.grid_frames + 1).round().astype(int)[1:]]
        write_png(args.out / "cross_identity.png", cross_identity_grid(model, portraits, driving))
        log.info("cross-identity grid: %s", args.out / "cross_identity.png")


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="evaluate a trained stage")
    stages = e.add_subparsers(dest="stage", required=True)
    s = stages.add_parser("imitation", help="stage 1: self-reenactment SSIM/PSNR (and FID) vs the copy-source baseline")
    s.add_argument("--data", type=Path, nargs="+", required=True, help="folders of held-out clips")
    s.add_argument("--out", type=Path, required=True, help="folder for imitation.md/.json and cross_identity.png")
    s.add_argument("--checkpoint", type=Path, default=None, help="stage-1 checkpoint directory (default: bundled)")
    s.add_argument("--inception", type=Path, default=None,
                   help="TorchScript Inception weights (inception-2015-12-05.pt) for FID; FID is skipped without")
    s.add_argument("--portraits", type=Path, default=None, help="folder of portraits for the cross-identity grid")
    s.add_argument("--every", type=positive_int, default=1, help="score every k-th frame (default 1: all)")
    s.add_argument("--max-frames", type=positive_int, default=None, help="frames read per clip (default all)")
    s.add_argument("--grid-clips", type=positive_int, default=2, help="driving clips in the grid (default 2)")
    s.add_argument("--grid-frames", type=positive_int, default=3, help="driving frames per clip in the grid (default 3)")
    s.set_defaults(func=run_imitation)
