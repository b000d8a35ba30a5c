"""`infp call`: a live call with the avatar in the browser, over WebRTC (infp.demo.call)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import check_device, port, sampling_steps

log = logging.getLogger("infp")


def run(args: argparse.Namespace) -> None:
    from infp.commands.demo import _check_port
    from infp.errors import InfpError

    check_device(args.device)
    _check_port(args.host, args.port)
    try:
        import aiortc  # noqa: F401
        import uvicorn
    except ImportError:
        raise InfpError("a live call needs aiortc: pip install 'infp[demo]' (or: pip install aiortc)") from None
    from infp.audio.io import load_mono
    from infp.data.portraits import default_portrait, read_image
    from infp.demo.call import build_call_app
    from infp.pipeline import InfpPipeline

    name, image = (args.portrait.stem, read_image(args.portrait)) if args.portrait else default_portrait()
    agent = load_mono(args.agent_audio) if args.agent_audio else None
    pipe = InfpPipeline.from_pretrained(args.checkpoint, args.imitator, args.device, args.dtype)  # a bad checkpoint fails here
    app = build_call_app(lambda: pipe, image, name, agent, steps=args.steps)
    if args.host not in ("127.0.0.1", "localhost"):
        log.warning("serving on %s: anyone who can reach this machine can call the avatar", args.host)
    log.warning("infp call: open http://%s:%d/ in a browser", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def register(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("call", help="talk to the avatar live in the browser: your microphone in, its face and voice out")
    c.add_argument("--portrait", type=Path, default=None, help="the avatar's photo (default: the packaged astronaut)")
    c.add_argument("--agent-audio", type=Path, default=None,
                   help="a recording the avatar says when the call starts (it also says what is typed in the page)")
    c.add_argument("--steps", type=sampling_steps, default=10, help="DDIM steps per window (default 10, for 2 CPU cores)")
    c.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only; a "
                   "browser allows the microphone only on localhost or https)")
    c.add_argument("--port", type=port, default=7861, help="port, 1 to 65535 (default 7861)")
    c.add_argument("--checkpoint", type=Path, default=None, help="stage-2 checkpoint directory (default: bundled)")
    c.add_argument("--imitator", type=Path, default=None, help="stage-1 checkpoint directory (default: bundled)")
    c.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: the GPU when there is one")
    c.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="stage 1's compute dtype (default auto: bfloat16 where the CPU or GPU computes it natively, "
                   "rendering a fifth faster on such a CPU; else float32)")
    c.set_defaults(func=run)
