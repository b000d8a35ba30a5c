"""`infp demo`: the web demo (Gradio) on the bundled or given checkpoints."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

from infp.commands import check_device, port

log = logging.getLogger("infp")


def run(args: argparse.Namespace) -> None:
    from infp.errors import InfpError

    check_device(args.device)
    _check_port(args.host, args.port)  # before seconds of loading, not after
    # every file the demo writes (its videos, Gradio's copies of uploads and outputs) goes in one
    # folder, deleted when the server stops (Ctrl-C or SIGTERM)
    scratch = Path(tempfile.mkdtemp(prefix="infp_demo_"))
    gradio_dir = os.environ.setdefault("GRADIO_TEMP_DIR", str(scratch / "gradio"))  # read when Gradio loads
    app, routes = None, []
    try:
        try:
            import gradio  # noqa: F401
        except ImportError:
            raise InfpError("the web demo needs Gradio: pip install 'infp[demo]' (or: pip install gradio)") from None
        from infp.demo.app import build_app, call_routes
        from infp.pipeline import InfpPipeline

        def load() -> InfpPipeline:
            return InfpPipeline.from_pretrained(args.checkpoint, args.imitator, args.device)

        if not args.lazy:
            pipe = load()  # a bad checkpoint fails here, before the server starts
            load = lambda: pipe  # noqa: E731
        routes = call_routes(load)
        app = build_app(load, scratch / "out", call=bool(routes))
        if args.host not in ("127.0.0.1", "localhost"):
            log.warning("serving on %s: anyone who can reach this machine can use the demo", args.host)
        try:
            app.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(app.infp_out_dir)],
                       show_error=True, quiet=args.quiet, app_kwargs={"routes": routes})
        except OSError as e:  # the port was taken between the check and the launch
            raise InfpError(f"cannot serve on {args.host}:{args.port}: {e}") from None
    finally:
        for route in routes:
            route.app.state.close_call()  # a call still on: its session's worker stops before the process ends
        if app is not None:
            app.close()
        shutil.rmtree(scratch, ignore_errors=True)
        if gradio_dir == str(scratch / "gradio"):
            del os.environ["GRADIO_TEMP_DIR"]


def _check_port(host: str, number: int) -> None:
    """One line if the server could not listen on host:port (in use, not this machine's address)."""
    import socket

    from infp.errors import InfpError

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, number, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise InfpError(f"--host {host}: not an address of this machine ({e})") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
        try:
            s.bind(addr)
        except OSError as e:
            raise InfpError(f"cannot serve on {host}:{number}: {e.strerror} (another server on that port? "
                            "choose another --port)") from None


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="the web demo: offline and live generation in the browser")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    d.add_argument("--port", type=port, default=7860, help="port, 1 to 65535 (default 7860)")
    d.add_argument("--checkpoint", type=Path, default=None, help="stage-2 checkpoint directory (default: bundled)")
    d.add_argument("--imitator", type=Path, default=None, help="stage-1 checkpoint directory (default: bundled)")
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: the GPU when there is one")
    d.add_argument("--lazy", action="store_true", help="load the checkpoints on the first request, not at start")
    d.set_defaults(func=run)
