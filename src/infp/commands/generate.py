"""`infp generate`: a portrait and a conversation -> an MP4 of the portrait taking part in it."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from infp.commands import positive_float, positive_int

log = logging.getLogger("infp")


def run(args: argparse.Namespace) -> None:
    from infp.audio.chunks import ConversationFile
    from infp.data.portraits import default_portrait, read_image
    from infp.errors import InfpError
    from infp.pipeline import InfpPipeline
    from infp.pretrained import demo_conversation

    out = Path(args.out)
    if not out.parent.is_dir():  # before any work: nothing is lost to a typo in the path
        raise InfpError("the output folder does not exist", out.parent)
    if out.is_dir():
        raise InfpError("the output path is a folder; give a file name such as out.mp4", out)
    if args.audio is None and (args.agent is None) != (args.partner is None):
        raise InfpError("give both --agent and --partner (or one two-channel --audio file)")
    if args.audio is None and args.agent is None:
        args.audio = demo_conversation()
        log.info("no audio given: animating the packaged 12-s demo conversation (%s)", args.audio)
    # read from disk as it is needed (checked and measured first): any length fits in memory
    conversation = ConversationFile.open(args.audio, args.agent, args.partner)
    name, image = (str(args.portrait), read_image(args.portrait)) if args.portrait else default_portrait()

    start = time.perf_counter()
    pipe = InfpPipeline.from_pretrained(args.checkpoint, args.imitator, args.device, args.dtype, args.speech_model)
    portrait = pipe.prepare(image, name, args.face_index)
    video = pipe(portrait, conversation, steps=args.steps, guidance=args.guidance, seed=args.seed,
                 overlap=args.overlap, paste=not args.crop_only, size=args.size)
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
    g.add_argument("--out", type=Path, required=True, help="the MP4 to write (its folder must exist)")
    g.add_argument("--checkpoint", type=Path, default=None, help="stage-2 (motion) checkpoint directory (default: bundled)")
    g.add_argument("--imitator", type=Path, default=None,
                   help="stage-1 checkpoint the motion model was trained with (default: bundled)")
    g.add_argument("--speech-model", type=Path, default=None,
                   help="local wav2vec2/HuBERT model, for a stage-2 checkpoint trained on its features")
    g.add_argument("--steps", type=positive_int, default=20, help="DDIM steps per 2-s window (default 20)")
    g.add_argument("--guidance", type=positive_float, default=3.0,
                   help="classifier-free guidance on the audio (default 3; 1 = off)")
    g.add_argument("--seed", type=int, default=0, help="sampling seed: the same seed gives the same video (default 0)")
    g.add_argument("--overlap", type=int, default=None,
                   help="frames each 50-frame window shares with the one before and holds, for smooth joins "
                   "(default 30; 0 = the paper's back-to-back windows, fastest)")
    g.add_argument("--size", type=positive_int, default=None,
                   help="output size: longer side of the frame (default: the portrait's, at most 1024), "
                   "or the crop's side with --crop-only (default: the renderer's)")
    g.add_argument("--crop-only", action="store_true", help="write the animated face crop, not the whole portrait")
    g.add_argument("--face-index", type=int, default=None, help="which face when the portrait has several (0 = largest)")
    g.add_argument("--mix", choices=["mix", "stereo"], default="mix",
                   help="soundtrack: both voices mixed (default) or stereo (agent left, partner right)")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: the GPU when there is one")
    g.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="compute dtype (bfloat16/float16 speed up a GPU; default float32)")
    g.set_defaults(func=run)
