"""Subcommands of `infp`, one module each: `register(subparsers)` adds its parser and sets `func`.

Modules here are thin: parse flags, call the library, log a summary. Heavy imports happen inside
`func`, so `infp --help` stays fast.
"""

from __future__ import annotations

import argparse

NAMES = ("generate", "synth", "preprocess", "train", "eval", "bench", "demo", "weights")  # each subcommand module adds its name here


def positive_float(s: str) -> float:
    v = float(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v


def fraction(s: str) -> float:
    v = float(s)
    if not 0 <= v <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {s}")
    return v


def non_negative(s: str) -> float:
    v = float(s)
    if not v >= 0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {s}")
    return v


def positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {s}")
    return v
