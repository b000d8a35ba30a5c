"""`infp bench`: speed on this machine: stage 2 alone, the whole pipeline, and live streaming latency."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import dtype_argument, guidance, non_negative_int, positive_float, positive_int, sampling_steps

log = logging.getLogger("infp")


def _pipeline(args: argparse.Namespace, device: str):
    """The bundled (or given) checkpoints, or untrained models of the given presets (speed does not
    depend on the weights)."""
    from infp.audio.mel import LogMel
    from infp.diffusion import DiffusionConfig
    from infp.models import Imitator, imitator_preset
    from infp.models.motion_config import motion_preset
    from infp.models.motion_generator import MotionGenerator
    from infp.pipeline import InfpPipeline
    from infp.pipeline.stages import MotionStage

    if args.preset is None and args.imitator_preset is None:
        pipe = InfpPipeline.from_pretrained(args.checkpoint, args.imitator, device, args.dtype)
        name = f"{pipe.imitator.cfg.preset} + {pipe.stage2.model.cfg.preset}"
        return pipe, name if args.checkpoint or args.imitator else f"bundled: {name}"
    imitator = Imitator(imitator_preset(args.imitator_preset or "base"))
    cfg = motion_preset(args.preset or "small", motion_dim=imitator.cfg.motion_dim)
    stage2 = MotionStage(Path("untrained"), MotionGenerator(cfg).eval(), DiffusionConfig(), LogMel())
    return InfpPipeline(imitator, stage2, device, args.dtype), f"{imitator.cfg.preset} + {cfg.preset} (untrained)"


def run(args: argparse.Namespace) -> None:
    import torch

    from infp.errors import InfpError

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InfpError("--device cuda: no CUDA GPU is available here")
    if "flops" in args.what:
        from infp.eval.bench import imitator_flops
        from infp.models import IMITATOR_PRESETS, Imitator

        for cfg in IMITATOR_PRESETS.values():
            log.warning("%s", imitator_flops(Imitator(cfg).eval()).line())
        if set(args.what) == {"flops"}:
            return
    settings = {"steps": args.steps, "guidance": args.guidance, "overlap": args.overlap}
    live = {what: (args.schedule or ("live" if what == "stream" else "offline")) == "live" for what in args.what}
    pipe, name = _pipeline(args, args.device)
    if "motion" in args.what:
        from infp.eval.bench import bench_motion

        r = bench_motion(pipe.stage2.model, pipe.stage2.diffusion, args.seconds, args.steps, args.guidance,
                         overlap=args.overlap, live=live["motion"])
        log.warning("%s", r.line())  # results are shown even with --quiet
    if "pipeline" in args.what or "stream" in args.what:
        from infp.data.portraits import default_portrait
        from infp.eval.bench import bench_pipeline, bench_stream

        portrait = pipe.prepare(default_portrait()[1], "astronaut")
        if "pipeline" in args.what:
            log.warning("%s", bench_pipeline(pipe, portrait, name, args.seconds, live=live["pipeline"], **settings).line())
        if "stream" in args.what:
            log.warning("%s", bench_stream(pipe, portrait, name, args.seconds, max_lag_s=args.max_lag, live=live["stream"],
                                           render_threads=args.render_threads, **settings).line())


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("bench", help="measure generation speed on this machine")
    s.add_argument("--what", nargs="+", choices=["motion", "pipeline", "stream", "flops"],
                   default=["motion", "pipeline", "stream", "flops"],
                   help="what to measure: stage 2 alone, the whole pipeline offline, a live stream, stage 1's FLOPs "
                        "per frame for every preset (default: all)")
    s.add_argument("--preset", default=None,
                   help="stage-2 preset to time untrained (default: the bundled checkpoints, unless --imitator-preset)")
    s.add_argument("--imitator-preset", default=None, help="stage-1 preset to time untrained (default base with --preset)")
    s.add_argument("--checkpoint", type=Path, default=None, help="a stage-2 checkpoint directory (default: bundled)")
    s.add_argument("--imitator", type=Path, default=None, help="a stage-1 checkpoint directory (default: bundled)")
    s.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    dtype_argument(s)
    s.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's choice)")
    s.add_argument("--seconds", type=positive_float, default=20.0, help="conversation length to generate (default 20)")
    s.add_argument("--steps", type=sampling_steps, default=20, help="DDIM steps (default 20)")
    s.add_argument("--guidance", type=guidance, default=3.0, help="classifier-free guidance scale (default 3; 1 = off)")
    s.add_argument("--overlap", type=non_negative_int, default=None, help="frames each window shares with the one before (default 30 of 50)")
    s.add_argument("--schedule", choices=["offline", "live"], default=None,
                   help="window schedule: offline (a window every 20 frames) or live (every 8, with 80 ms of "
                   "look-ahead) (default: live for the stream, offline for the rest)")
    s.add_argument("--render-threads", type=positive_int, default=None,
                   help="the live session's render threads of one core each (default: --threads on CPU, 1 on a GPU)")
    s.add_argument("--max-lag", type=positive_float, default=None,
                   help="the live session drops frames later than this many seconds (default 1)")
    s.set_defaults(func=run)
