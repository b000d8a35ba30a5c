"""`infp generate`: a portrait and a conversation -> an MP4 of the portrait taking part in it."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from infp.commands import check_device, dtype_argument, expression, frame_size, generation_arguments, non_negative_int

log = logging.getLogger("infp")


def run(args: argparse.Namespace) -> None:
    from infp.audio.chunks import ConversationFile
    from infp.data.portraits import default_portrait, read_image
    from infp.errors import InfpError
    from infp.fsutil import check_output_path, clean_partials, output_lock
    from infp.pretrained import demo_conversation

    # before any work: nothing is lost to a typo in the path, and an input is never overwritten
    out = check_output_path(args.out, (args.audio, args.agent, args.partner, args.portrait))
    check_device(args.device)
    if args.audio is None and (args.agent is None) != (args.partner is None):
        raise InfpError("give both --agent and --partner (or one two-channel --audio file)")
    if args.audio is None and args.agent is None:
        args.audio = demo_conversation()
        log.info("no audio given: animating the packaged 12-s demo conversation (%s)", args.audio)
    with output_lock(out):  # a second run to the same --out fails here, not after minutes of work
        for p in clean_partials(out):
            log.info("removed %s, left by a run that was killed", p.name)
        # read from disk as it is needed (checked and measured first): any length fits in memory
        conversation = ConversationFile.open(args.audio, args.agent, args.partner)
        name, image = (str(args.portrait), read_image(args.portrait)) if args.portrait else default_portrait()
        _generate(args, out, conversation, name, image)


def _generate(args: argparse.Namespace, out: Path, conversation, name: str, image) -> None:
    from infp.pipeline import InfpPipeline

    start = time.perf_counter()
    pipe = InfpPipeline.from_pretrained(args.checkpoint, args.imitator, args.device, args.dtype, args.speech_model,
                                        args.expression_space)
    portrait = pipe.prepare(image, name, args.face_index, expression(args))
    log.info("portrait: %s", portrait.check.line(portrait.expression))
    for warning in portrait.check.warnings():
        log.warning("portrait: %s", warning)
    video = pipe(portrait, conversation, steps=args.steps, guidance=args.guidance, seed=args.seed,
                 overlap=args.overlap, live=args.live, paste=not args.crop_only, size=args.size)
    video.write(out, audio=args.mix, progress=not args.quiet)
    took = time.perf_counter() - start
    log.info("wrote %s: %d frames (%.1f s of conversation) in %.1f s (%.2fx real time, %s)", out, len(video),
             conversation.duration, took, conversation.duration / took, pipe.device.type)


def register(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="animate a portrait in a two-track conversation: an MP4 with the audio")
    g.add_argument("--portrait", type=Path, default=None,
                   help="image with one face (default: scikit-image's astronaut photo)")
    g.add_argument("--audio", type=Path, default=None,
                   help="a two-channel conversation: channel 0 the portrait's voice, channel 1 the partner's "
                   "(default, with no --agent/--partner either: the packaged 12-s demo conversation)")
    g.add_argument("--agent", type=Path, default=None, help="the portrait's own voice (with --partner)")
    g.add_argument("--partner", type=Path, default=None, help="the voice it listens to (with --agent)")
    g.add_argument("--out", type=Path, required=True,
                   help="the .mp4 to write (its folder must exist; never one of the inputs, a device or a link)")
    generation_arguments(g)
    g.add_argument("--size", type=frame_size, default=None,
                   help="output size: longer side of the frame (default: the portrait's, at most 1024), "
                   "or the crop's side with --crop-only (default: the renderer's); 16 to 4096")
    g.add_argument("--crop-only", action="store_true", help="write the animated face crop, not the whole portrait")
    g.add_argument("--face-index", type=non_negative_int, default=None, help="which face when the portrait has several (0 = largest)")
    g.add_argument("--mix", choices=["mix", "stereo"], default="mix",
                   help="soundtrack: both voices mixed (default) or stereo (agent left, partner right)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: the GPU when there is one")
    dtype_argument(g)
    g.set_defaults(func=run)
