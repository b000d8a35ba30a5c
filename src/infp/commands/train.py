"""`infp train imitation` (stage 1); `infp train motion` (stage 2) comes with its issue."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import positive_int

log = logging.getLogger("infp")


def run_imitation(args: argparse.Namespace) -> None:
    from infp.models import imitator_preset
    from infp.train.imitation import TrainConfig, train_imitation
    from infp.train.losses import LossConfig

    overrides = {"representation": args.representation} if args.representation else {}
    model_cfg = imitator_preset(args.preset, **overrides)
    defaults = TrainConfig()
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        real_fraction=args.real_fraction, max_frames=args.max_frames,
        log_every=args.log_every or defaults.log_every,
        sample_every=args.save_every or defaults.sample_every, save_every=args.save_every or defaults.save_every,
    )
    loss_cfg = LossConfig(vgg_path=str(args.vgg) if args.vgg else None, use_gan=not args.no_gan)
    r = train_imitation(args.data, args.out, model_cfg, cfg, loss_cfg, resume=args.resume,
                        progress=not args.quiet, cpu=args.device == "cpu")
    log.info("step %d: %.0f s, %.2f pairs/s; EMA checkpoint in %s", r.step, r.seconds, r.pairs_per_second,
             Path(args.out) / "checkpoint")


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a stage of the model")
    stages = t.add_subparsers(dest="stage", required=True)
    s = stages.add_parser("imitation", help="stage 1: the renderer (motion encoder, flow, decoder) by self-reenactment")
    s.add_argument("--data", type=Path, nargs="+", required=True, help="folders of clips (from infp synth / preprocess)")
    s.add_argument("--out", type=Path, required=True, help="run folder: state/, checkpoint/, samples/, logs/")
    s.add_argument("--preset", default="base", help="model size: tiny, base (256 px) or paper (512 px); default base")
    s.add_argument("--representation", choices=["hybrid", "intact", "landmarks"], default=None,
                   help="E_m's input (default hybrid; the others are the paper's ablations)")
    s.add_argument("--steps", type=positive_int, default=20000, help="total optimiser steps (default 20000)")
    s.add_argument("--batch-size", type=positive_int, default=8, help="pairs per step and device (default 8)")
    s.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate (default 2e-4)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--real-fraction", type=float, default=0.5,
                   help="share of pairs drawn from real clips when real and synthetic are mixed (default 0.5)")
    s.add_argument("--max-frames", type=positive_int, default=None, help="frames loaded per clip (default all)")
    s.add_argument("--vgg", type=Path, default=None,
                   help="local VGG19 weights (torchvision layout, .pth or .safetensors) for a perceptual loss")
    s.add_argument("--no-gan", action="store_true", help="no discriminator (and so no feature-matching loss)")
    s.add_argument("--save-every", type=positive_int, default=None, help="steps between checkpoints and sample grids (default 500)")
    s.add_argument("--log-every", type=positive_int, default=None, help="steps between TensorBoard points (default 10)")
    s.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: the GPU(s) when present")
    s.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    s.set_defaults(func=run_imitation)
