"""The `infp` command. Thin: parse flags, call the library, turn user errors into one line."""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from infp import __version__
from infp.commands import NAMES
from infp.errors import InfpError

log = logging.getLogger("infp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="infp", description="INFP: interactive head generation for dyadic conversations.")
    p.add_argument("--version", action="version", version=f"infp {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True)

    for name in NAMES:
        importlib.import_module(f"infp.commands.{name}").register(sub)
    return p


class Terminated(BaseException):
    """SIGTERM, raised where the program is, so it unwinds as from Ctrl-C: `finally` blocks delete
    temporary files and release locks. Not a KeyboardInterrupt, which some libraries swallow."""


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="infp: %(message)s")
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        args.func(args)
    except InfpError as e:
        print(f"infp: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("infp: interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("infp: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
