"""Subcommands of `infp`, one module each: `register(subparsers)` adds its parser and sets `func`.

Modules here are thin: parse flags, call the library, log a summary. Heavy imports happen inside
`func`, so `infp --help` stays fast.

Numbers from the command line go through the argparse types below: every one is finite (`nan`, `inf`
and `1e999` are refused, as they once gave black videos) and within a range that makes sense, so a bad
value fails at once with one line naming the flag, before anything is loaded.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

NAMES = ("generate", "synth", "preprocess", "pack", "train", "eval", "bench", "demo", "call", "weights")  # each subcommand module adds its name here

SEED_MAX = 2**32 - 1  # torch's CPU generator keeps 32 bits of a seed: seeds 2^32 apart would give the same video
STEPS_MAX = 1000  # DDIM steps: no more than the diffusion's training timesteps
SIZE_MIN, SIZE_MAX = 16, 4096  # output frame side: 4096 px frames take 50 MB each, 20000 px ones 1.2 GB
GUIDANCE_MAX = 100.0


def _finite(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {s}")
    return v


def _whole(s: str) -> int:
    try:
        return int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {s!r}") from None


def number(kind: type = float, lo: float | None = None, hi: float | None = None, above: float | None = None,
           what: str = "") -> Callable[[str], float | int]:
    """An argparse type: a finite `kind` (float or int) with lo <= v <= hi and v > above (each optional);
    `what` ends the message, e.g. "(a frame's side in pixels)"."""
    show = (lambda x: str(int(x))) if kind is int else (lambda x: f"{x:g}")
    noun = "a whole number" if kind is int else "a number"
    if (above, lo, hi) == (0, None, None) or (kind is int and (above, lo, hi) == (None, 1, None)):
        rule = "positive" if kind is float else "positive (a whole number)"
    elif lo is not None and hi is not None:
        rule = f"{noun} from {show(lo)} to {show(hi)}"
    elif above is not None:
        rule = f"{noun} above {show(above)}" + (f" and at most {show(hi)}" if hi is not None else "")
    elif lo is not None:
        rule = "0 or more" if lo == 0 else f"{noun} of at least {show(lo)}"
    else:
        rule = noun if hi is None else f"{noun} of at most {show(hi)}"
    rule += f" {what}" if what else ""

    def parse(s: str) -> float | int:
        v = _whole(s) if kind is int else _finite(s)
        if (lo is not None and v < lo) or (hi is not None and v > hi) or (above is not None and not v > above):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {s}")
        return v

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


positive_float = number(float, above=0)
non_negative = number(float, lo=0)
fraction = number(float, lo=0, hi=1)
positive_int = number(int, lo=1)
non_negative_int = number(int, lo=0)
seed = number(int, lo=0, hi=SEED_MAX, what="(the generator keeps 32 bits)")
sampling_steps = number(int, lo=1, hi=STEPS_MAX, what="(the diffusion was trained on 1000 timesteps)")
guidance = number(float, above=0, hi=GUIDANCE_MAX, what="(1 = off; 2-5 is usual)")
frame_size = number(int, lo=SIZE_MIN, hi=SIZE_MAX, what="pixels")
port = number(int, lo=1, hi=65535)


def generation_arguments(p: argparse.ArgumentParser, many: bool = False) -> None:
    """The checkpoints and sampling settings of a generation (`infp generate`, `infp eval real`); `many`:
    --checkpoint takes several stage-2 checkpoints (a list), named by --names."""
    from pathlib import Path

    if many:
        p.add_argument("--checkpoint", type=Path, nargs="+", default=None,
                       help="stage-2 (motion) checkpoint directories, each evaluated (default: the bundled one)")
        p.add_argument("--names", nargs="+", default=None, help="one name per checkpoint (default: folder names)")
    else:
        p.add_argument("--checkpoint", type=Path, default=None, help="stage-2 (motion) checkpoint directory (default: bundled)")
    p.add_argument("--imitator", type=Path, default=None,
                   help="stage-1 checkpoint the motion model was trained with (default: bundled)")
    p.add_argument("--speech-model", type=Path, default=None,
                   help="local wav2vec2/HuBERT model, for a stage-2 checkpoint trained on its features")
    p.add_argument("--steps", type=sampling_steps, default=20, help="DDIM steps per 2-s window (default 20, at most 1000)")
    p.add_argument("--guidance", type=guidance, default=3.0,
                   help="classifier-free guidance on the audio (default 3; 1 = off; at most 100)")
    p.add_argument("--seed", type=seed, default=0,
                   help="sampling seed, 0 to 2^32 - 1: the same seed gives the same video (default 0)")
    p.add_argument("--overlap", type=non_negative_int, default=None,
                   help="frames each 50-frame window shares with the one before and holds, for smooth joins "
                   "(default 30; 0 = the paper's back-to-back windows, fastest)")
    p.add_argument("--live", action="store_true",
                   help="the live schedule: a window every 8 frames with 80 ms of look-ahead (what live streaming uses; "
                   "about 2.5 times the compute of the default)")
    p.add_argument("--keep-expression", action="store_true",
                   help="rest in the portrait's own expression (an open mouth stays open while listening) instead "
                   "of the neutral start: lips closed, eyes open (docs/generate.md)")
    p.add_argument("--expression-space", type=Path, default=None,
                   help="the expression space of --imitator for the neutral start (infp train expression; default: "
                   "the bundled one, when it was fitted on that imitator)")


def dtype_argument(p: argparse.ArgumentParser) -> None:
    """--dtype for commands that render (stage 1's autocast type)."""
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="float32",
                   help="stage 1's compute dtype (autocast; auto: bfloat16 where the CPU or GPU computes it natively, "
                   "else float32; float16 needs a GPU; default float32)")


def expression(args: argparse.Namespace) -> str:
    """The portrait's resting state `generation_arguments` asked for (`InfpPipeline.prepare`)."""
    return "keep" if args.keep_expression else "neutral"


def check_device(device: str) -> None:
    """`--device cuda` on a machine without a usable CUDA GPU: one line, before anything loads."""
    if device == "cuda":
        import torch

        from infp.errors import InfpError

        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise InfpError(f"--device cuda: {why}; use --device cpu (or auto)")
