"""`infp bench`: speed of the models on this machine (stage-2 motion generation for now)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import positive_float, positive_int

log = logging.getLogger("infp")


def run(args: argparse.Namespace) -> None:
    import torch

    from infp.diffusion import DiffusionConfig
    from infp.eval.bench import bench_motion
    from infp.models.motion_config import motion_preset
    from infp.models.motion_generator import MotionGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" else "cpu")
    if args.device == "cuda" and not torch.cuda.is_available():
        from infp.errors import InfpError

        raise InfpError("--device cuda: no CUDA GPU is available here")
    if args.checkpoint:
        model, diffusion = MotionGenerator.from_pretrained(args.checkpoint), DiffusionConfig.from_checkpoint(args.checkpoint)
    else:  # speed does not depend on the weights
        model, diffusion = MotionGenerator(motion_preset(args.preset)).eval(), DiffusionConfig()
    r = bench_motion(model.to(device), diffusion, seconds=args.seconds, steps=args.steps, guidance=args.guidance)
    log.warning("%s", r.line())  # a result, shown even with --quiet


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("bench", help="measure generation speed on this machine")
    s.add_argument("--preset", default="base", help="model size when no --checkpoint is given (default base)")
    s.add_argument("--checkpoint", type=Path, default=None, help="a stage-2 checkpoint directory to time instead")
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    s.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--seconds", type=positive_float, default=20.0, help="conversation length to generate (default 20)")
    s.add_argument("--steps", type=positive_int, default=20, help="DDIM steps (default 20)")
    s.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3; 1 = off)")
    s.set_defaults(func=run)
