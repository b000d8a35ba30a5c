"""`infp demo`: the web demo (Gradio) on the bundled or given checkpoints."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import positive_int

log = logging.getLogger("infp")


def run(args: argparse.Namespace) -> None:
    from infp.errors import InfpError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise InfpError("the web demo needs Gradio: pip install 'infp[demo]' (or: pip install gradio)") from None
    from infp.demo.app import build_app
    from infp.pipeline import InfpPipeline

    def load() -> InfpPipeline:
        return InfpPipeline.from_pretrained(args.checkpoint, args.imitator, args.device)

    if not args.lazy:
        pipe = load()  # a bad checkpoint fails here, before the server starts
        load = lambda: pipe
    app = build_app(load)
    if args.host not in ("127.0.0.1", "localhost"):
        log.warning("serving on %s: anyone who can reach this machine can use the demo", args.host)
    app.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(app.infp_out_dir)], show_error=True,
               quiet=args.quiet)


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="the web demo: offline and live generation in the browser")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    d.add_argument("--checkpoint", type=Path, default=None, help="stage-2 checkpoint directory (default: bundled)")
    d.add_argument("--imitator", type=Path, default=None, help="stage-1 checkpoint directory (default: bundled)")
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: the GPU when there is one")
    d.add_argument("--lazy", action="store_true", help="load the checkpoints on the first request, not at start")
    d.set_defaults(func=run)
