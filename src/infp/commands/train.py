"""`infp train imitation` (stage 1), `infp train motion` (stage 2) and `infp train expression` (the neutral start)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from infp.commands import fraction, non_negative, non_negative_int, number, positive_float, positive_int, seed
from infp.errors import InfpError

log = logging.getLogger("infp")


def _data(args: argparse.Namespace) -> list[Path]:
    """The clip folders to train on; a resumed run reads its own from run.json, so it needs none."""
    if not args.data and not args.resume:
        raise InfpError("--data is needed to start a run (a resumed run uses the data it started with)")
    return args.data or []


# what a resumed run may be given: where it runs and how long, not what it trains
RESUMABLE = {"data", "out", "resume", "steps", "save_every", "log_every", "device", "dtype", "batch_size", "lr", "seed",
             "cache", "speech_model"}


def _recorded_flags(parser: argparse.ArgumentParser) -> dict[str, object]:
    """{dest: default} of the flags whose values a run records in its run.json (the model, data and
    loss settings), so `--resume` can tell which were given."""
    return {a.dest: a.default for a in parser._actions if a.dest not in RESUMABLE and a.dest != "help"}


def _refuse_recorded(args: argparse.Namespace) -> None:
    """With --resume, a flag that would change what the run trains is refused in one line rather
    than ignored: the run continues as its run.json recorded it."""
    given = [name for name, default in args.recorded.items() if getattr(args, name, default) != default]
    if args.resume and given:
        flags = ", ".join("--" + n.replace("_", "-") for n in given)
        raise InfpError(f"--resume continues the run as recorded in its run.json; {flags} cannot change it", args.out)


def _run_settings(args: argparse.Namespace, d) -> tuple[dict, dict | None]:
    """The `_common` flags' settings: the values of a new run (defaults filled in), and for `--resume`
    the changes to the recorded plan given explicitly (None without --resume). A resumed run is the run
    as run.json recorded it: only its length and cadences may change, and only when asked."""
    if args.resume:
        fixed = [f for f, v in (("--batch-size", args.batch_size), ("--lr", args.lr), ("--seed", args.seed)) if v is not None]
        if fixed:
            raise InfpError(f"--resume continues the run as recorded in its run.json; {', '.join(fixed)} cannot change "
                            "(only --steps, --save-every and --log-every can)", args.out)
    given = {"steps": args.steps, "log_every": args.log_every, "sample_every": args.save_every,
             "save_every": args.save_every}
    changes = {k: v for k, v in given.items() if v is not None}
    values = {"steps": d.steps, "log_every": d.log_every, "sample_every": d.sample_every, "save_every": d.save_every,
              **changes, "batch_size": args.batch_size or d.batch_size, "lr": args.lr or d.lr,
              "seed": d.seed if args.seed is None else args.seed}
    return values, changes if args.resume else None


def _locked(args: argparse.Namespace, train) -> None:
    """Run `train()` holding the run folder's lock (a second training into it fails at once), after
    removing what a killed save left in it. Only the first process of a launch locks."""
    from infp.fsutil import clean_partials, output_lock
    from infp.train.run import CHECKPOINT, RUN, STATE, first_process

    if not first_process():
        return train()
    with output_lock(args.out, folder=True):
        for name in (STATE, CHECKPOINT, RUN):
            for p in clean_partials(Path(args.out) / name):
                log.info("removed %s, left by a run that was killed", p)
        return train()


def run_imitation(args: argparse.Namespace) -> None:
    from infp.models import imitator_preset
    from infp.train.imitation import TrainConfig, train_imitation
    from infp.train.losses import LossConfig

    _refuse_recorded(args)
    overrides = {"representation": args.representation} if args.representation else {}
    # the additions to the keypoint prior each imply it
    additions = {k: v for k, v in (("mouth_mask", args.mouth_mask),
                                   ("keypoint_lip_sides", args.lip_sides), ("keypoint_head", args.keypoint_head),
                                   ("correction_max", args.correction_max)) if v}
    if args.keypoint_prior or additions:
        overrides |= {"keypoint_prior": True, **additions}
    model_cfg = imitator_preset(args.preset, **overrides)
    values, changes = _run_settings(args, TrainConfig())
    cfg = TrainConfig(
        **values, real_fraction=args.real_fraction, mouth_pairs=args.mouth_pairs, max_frames=args.max_frames,
        init_from=str(args.init_from) if args.init_from else None, freeze_motion_encoder=args.freeze_motion_encoder,
    )
    perceptual = LossConfig().vgg if args.perceptual_weight is None else args.perceptual_weight
    loss_cfg = LossConfig(vgg_path=str(args.vgg) if args.vgg else None, vgg=perceptual,
                          perceptual=args.perceptual_weight is not None and perceptual > 0, vgg_upto=args.perceptual_upto,
                          use_gan=not args.no_gan, region=args.region_weight,
                          detail=args.detail_weight, keypoint=args.keypoint_weight,
                          correction=args.correction_weight, synthesis=args.synthesis_weight,
                          mask=args.mask_weight)
    r = _locked(args, lambda: train_imitation(_data(args), args.out, model_cfg, cfg, loss_cfg, resume=args.resume,
                                              progress=not args.quiet, cpu=args.device == "cpu", dtype=args.dtype,
                                              changes=changes))
    log.info("step %d: %.0f s, %.2f pairs/s; EMA checkpoint in %s", r.step, r.seconds, r.items_per_second,
             Path(args.out) / "checkpoint")


def run_motion(args: argparse.Namespace) -> None:
    from infp.diffusion import DiffusionConfig
    from infp.models.motion_config import motion_preset
    from infp.pretrained import imitator_dir
    from infp.train.motion import MotionTrainConfig, train_motion

    _refuse_recorded(args)
    overrides = {k: False for k, off in (("use_memory", args.no_memory), ("use_style", args.no_style)) if off}
    overrides |= {k: True for k, on in (("audio_film", args.audio_film), ("relative", args.relative),
                                        ("rest_anchor", args.rest_anchor)) if on}
    if args.audio_dilation is not None:
        overrides["audio_dilation"] = args.audio_dilation
    if args.band_emphasis:
        overrides["band_emphasis"] = args.band_emphasis
    if args.rest_return:
        overrides["rest_return"] = args.rest_return
    try:
        model_cfg = motion_preset(args.preset, **overrides)
    except ValueError as e:  # flags that do not fit together, e.g. --band-emphasis without --relative
        raise InfpError(f"invalid stage-2 settings: {e}") from None
    d = MotionTrainConfig()
    values, changes = _run_settings(args, d)
    cfg = MotionTrainConfig(
        **values, one_sided_steps=args.one_sided_steps if args.one_sided_steps is not None else d.one_sided_steps,
        velocity_weight=args.velocity_weight, snr_gamma=args.snr_gamma, real_fraction=args.real_fraction,
        gain_db=args.gain_db, hears=args.hears,
    )
    if args.gain_db and args.speech_model:
        raise InfpError("--gain-db shifts log-mel features; it does not apply to --speech-model features")
    diffusion = DiffusionConfig(prediction=args.prediction)
    r = _locked(args, lambda: train_motion(
        _data(args), args.imitator or imitator_dir(), args.out, model_cfg, cfg, diffusion, resume=args.resume,
        progress=not args.quiet, cpu=args.device == "cpu", cache_dir=args.cache, speech_model=args.speech_model,
        dtype=args.dtype, changes=changes))
    log.info("step %d: %.0f s, %.1f windows/s; EMA checkpoint in %s", r.step, r.seconds, r.items_per_second,
             Path(args.out) / "checkpoint")


def _common(s: argparse.ArgumentParser, steps: int, batch: int, lr: float) -> None:
    s.add_argument("--data", type=Path, nargs="+", default=None,
                   help="folders of clips (from infp synth / preprocess) or packs of shards (infp pack: a folder, its "
                        "index.json or an fsspec URL); with --resume the run's own are used")
    s.add_argument("--out", type=Path, required=True, help="run folder: state/, checkpoint/, logs/, ...")
    # None: not given (a new run takes the default, a resumed one what its run.json recorded)
    s.add_argument("--steps", type=positive_int, default=None,
                   help=f"total optimiser steps (default {steps}; with --resume: the run's own)")
    s.add_argument("--batch-size", type=positive_int, default=None,
                   help=f"examples per step, all processes together (split evenly over `accelerate launch`'s "
                        f"processes; default {batch})")
    s.add_argument("--lr", type=number(float, above=0, hi=1), default=None, help=f"AdamW learning rate (default {lr:g})")
    s.add_argument("--seed", type=seed, default=None, help="0 to 2^32 - 1 (default 0)")
    s.add_argument("--save-every", type=positive_int, default=None,
                   help="steps between checkpoints and samples (default 500; with --resume: the run's own)")
    s.add_argument("--log-every", type=positive_int, default=None,
                   help="steps between TensorBoard points (default 10; with --resume: the run's own)")
    s.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: the GPU(s) when present")
    s.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="forward passes in bfloat16 autocast (weights and optimiser stay float32): faster "
                        "on GPUs and on CPUs with AVX512-BF16 (default float32); may change on --resume, like --device")
    s.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped, as its run.json recorded it; "
                        "--steps, --save-every and --log-every given with it change its plan")


def run_expression(args: argparse.Namespace) -> None:
    from infp.train.expression import train_expression

    if not args.out.parent.is_dir():
        raise InfpError("the output's folder does not exist", args.out.parent)
    if args.out.exists() and any(args.out.iterdir()) and not (args.out / "config.json").is_file():
        raise InfpError("--out is a folder that holds something other than a checkpoint; give a new path", args.out)
    fit = train_expression(args.data, args.out, args.imitator, args.every, args.mouth_quantile, args.eye_quantile,
                           args.device, progress=not args.quiet)
    log.info("wrote %s: %d frames of %d clips; R^2 on %d held-back clips: %s", args.out, fit.frames, fit.clips,
             fit.held_clips, ", ".join(f"{k} {v:.2f}" for k, v in fit.r2_held.items()))


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train a stage of the model")
    stages = t.add_subparsers(dest="stage", required=True)
    s = stages.add_parser("imitation", help="stage 1: the renderer (motion encoder, flow, decoder) by self-reenactment")
    _common(s, steps=20000, batch=8, lr=2e-4)
    s.add_argument("--preset", default="base", help="model size: tiny, base (256 px) or paper (512 px); default base")
    s.add_argument("--representation", choices=["hybrid", "intact", "landmarks"], default=None,
                   help="E_m's input (default hybrid; the others are the paper's ablations)")
    s.add_argument("--real-fraction", type=fraction, default=0.5,
                   help="share of pairs drawn from real clips when real and synthetic are mixed (default 0.5)")
    s.add_argument("--mouth-pairs", type=fraction, default=0.0,
                   help="share of pairs whose driving frame is drawn for a mouth unlike the source's (default 0)")
    s.add_argument("--max-frames", type=positive_int, default=None, help="frames loaded per clip (default all)")
    s.add_argument("--perceptual-weight", type=non_negative, default=None,
                   help="weight of the ImageNet VGG16 perceptual loss, weights from `infp weights convert` "
                        "(default: off; 1 with --vgg); 0 = off")
    s.add_argument("--perceptual-upto", choices=["relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"],
                   default="relu4_3", help="deepest VGG16 layer of the perceptual loss (default relu4_3)")
    s.add_argument("--vgg", type=Path, default=None,
                   help="converted VGG16 weights (vgg16.safetensors or vgg16_upto_relu4_3.safetensors) for the "
                        "perceptual loss, instead of the weights cache; switches the loss on")
    s.add_argument("--no-gan", action="store_true", help="no discriminator (and so no feature-matching loss)")
    s.add_argument("--region-weight", type=non_negative, default=1.0,
                   help="weight of the L1 loss on the eye and lip regions (default 1; 0 = off)")
    s.add_argument("--detail-weight", type=non_negative, default=0.0,
                   help="weight of the fine-detail loss: the mean |Laplacian| of 8x8 cells, prediction "
                        "against truth, against blur (default 0 = off; docs/stage1.md)")
    s.add_argument("--synthesis-weight", type=float, default=1.0,
                   help="weight of L1 on the decoder's own synthesis, which the blend mask mixes into the warped "
                        "source (default 1; docs/stage1.md, the second design)")
    s.add_argument("--mask-weight", type=float, default=0.05,
                   help="weight of the blend mask's mean: keep the source's own pixels where the warp will do (default 0.05)")
    s.add_argument("--init-from", type=Path, default=None,
                   help="start from this stage-1 checkpoint's weights (its config replaces --preset)")
    s.add_argument("--freeze-motion-encoder", action="store_true",
                   help="keep E_m fixed, so the motion latents (and stage-2 models trained on them) stay valid")
    s.add_argument("--keypoint-prior", action="store_true",
                   help="decode the latents into keypoints whose motion gives F a prior flow; with --init-from "
                        "a checkpoint without it, the model grows and (E_m frozen) the keypoint decoder is fitted first")
    s.add_argument("--mouth-mask", action="store_true",
                   help="the decoder also reads where the keypoints' inner lips open the mouth (implies "
                        "--keypoint-prior); with --init-from a checkpoint without it, the decoder grows")
    s.add_argument("--lip-sides", action="store_true",
                   help="the inner lips' keypoints move only their own side of the mouth's midline, so a closing "
                        "mouth meets at its lip line (implies --keypoint-prior; docs/stage1.md)")
    s.add_argument("--keypoint-head", type=non_negative, default=0.0, metavar="WIDTH",
                   help="spread the keypoints' common (affine) motion over the whole head, a Gaussian WIDTH times "
                        "their RMS radius wide (1 is a good value; implies --keypoint-prior; default 0: off)")
    s.add_argument("--correction-max", type=non_negative, default=0.0, metavar="M",
                   help="bound F's correction to the keypoint prior flow smoothly by M (M tanh(c / M), [-1, 1] units; "
                        "0.15 is safe; implies --keypoint-prior; default 0: unbounded)")
    s.add_argument("--correction-weight", type=non_negative, default=0.5,
                   help="with the keypoint prior: weight of the L1 size of F's correction to the prior flow "
                        "(default 0.5; 0 lets F move flat regions freely, which a discriminator turns into swirls)")
    s.add_argument("--keypoint-weight", type=non_negative, default=1.0,
                   help="weight of the keypoint loss (decoded keypoints vs landmarks; default 1)")
    s.set_defaults(func=run_imitation, recorded=_recorded_flags(s))

    e = stages.add_parser("expression", help="the neutral start: fit the expression space of a stage-1 checkpoint "
                          "(mouth, eyes and head pose read from its latents) on real clips")
    e.add_argument("--data", type=Path, nargs="+", required=True, help="folders of real clips (infp preprocess)")
    e.add_argument("--out", type=Path, required=True, help="the checkpoint directory to write")
    e.add_argument("--imitator", type=Path, default=None, help="stage-1 checkpoint whose latents it reads (default: bundled)")
    e.add_argument("--every", type=positive_int, default=3, help="use every K-th frame of each clip (default 3)")
    e.add_argument("--mouth-quantile", type=fraction, default=0.1,
                   help="the mouth at rest is at most as open as this share of real frames' mouths (default 0.1)")
    e.add_argument("--eye-quantile", type=fraction, default=0.25,
                   help="the eyes at rest are at least as open as this share of real frames' eyes (default 0.25)")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="where E_m runs (default cpu)")
    e.set_defaults(func=run_expression)

    m = stages.add_parser("motion", help="stage 2: audio -> motion latents (motion guider + diffusion transformer)")
    _common(m, steps=20000, batch=32, lr=1e-4)
    m.add_argument("--imitator", type=Path, default=None,
                   help="stage-1 checkpoint whose motion encoder gives the latents (default: the bundled one)")
    m.add_argument("--preset", default="base", help="model size: tiny, base or paper (default base)")
    m.add_argument("--one-sided-steps", type=non_negative_int, default=None,
                   help="warm-up steps on one-sided windows before multi-turn data (default 1000)")
    m.add_argument("--no-memory", action="store_true", help="ablation: no memory banks (audio straight to motion attention)")
    m.add_argument("--no-style", action="store_true", help="ablation: no style modulation of the memory banks")
    m.add_argument("--audio-dilation", type=positive_int, default=None,
                   help="dilation growth of the audio encoder's convolutions per layer: 1 sees +-6 frames "
                        "of audio, 3 about a second (default: the preset's)")
    m.add_argument("--audio-film", action="store_true",
                   help="each frame's audio features also scale and shift its latents through the adaptive "
                        "layer norm (not in the paper; docs/stage2.md)")
    m.add_argument("--relative", action="store_true",
                   help="generate each window as offsets from the last latent before it, so windows continue "
                        "where the last one ended (not in the paper; docs/stage2.md)")
    m.add_argument("--rest-anchor", action="store_true",
                   help="generate each window, and read its context, as offsets from the person's rest state "
                        "(the portrait's neutral start; in training a clip's silent median, or the neutral start of a "
                        "monologue's median), so long calls cannot drift "
                        "from the portrait (not in the paper; docs/stage2.md)")
    m.add_argument("--rest-return", type=non_negative, default=0.0,
                   help="with --rest-anchor: a window's anchor starts at the last latent before it and returns to "
                        "the rest within about this many frames, so windows start where the head is "
                        "(docs/stage2.md; default 0: the rest from the first frame)")
    m.add_argument("--band-emphasis", type=non_negative, default=0.0,
                   help="diffuse each window with its ~2 Hz (nod) band 1 + K times louder, inverted after "
                        "sampling; needs --relative or --rest-anchor (not in the paper; docs/stage2.md; default 0: off)")
    m.add_argument("--prediction", choices=["epsilon", "sample"], default="epsilon",
                   help="what the network predicts: the noise (the paper's loss, default) or the clean latents")
    m.add_argument("--velocity-weight", type=non_negative, default=1.0,
                   help="weight of an extra loss on the frame-to-frame differences of the prediction, "
                        "against jitter (default 1; 0 = the paper's loss)")
    m.add_argument("--snr-gamma", type=positive_float, default=None,
                   help="Min-SNR-gamma loss weighting (e.g. 5): caps the weight of the barely noised timesteps "
                        "(default: none, the paper's loss)")
    m.add_argument("--real-fraction", type=fraction, default=None,
                   help="share of the training windows drawn from real clips (infp preprocess), the rest from "
                        "synthetic ones (default: in proportion to their windows)")
    m.add_argument("--gain-db", type=non_negative, default=0.0,
                   help="augmentation: each track of a window made louder or quieter by up to this many dB "
                        "(log-mel features; default 0: off)")
    m.add_argument("--hears", choices=["both", "agent", "partner"], default="both",
                   help="the tracks the model hears (default both, INFP); agent / partner: the other track is always "
                        "silence, the speaker and listener models of the explicit-switching baseline "
                        "(infp eval conversation --switching)")
    m.add_argument("--speech-model", type=Path, default=None,
                   help="local wav2vec2/HuBERT directory for the audio features (default: log-mel)")
    m.add_argument("--cache", type=Path, default=None,
                   help="where motion latents and audio features are cached (default OUT/cache; with --resume: the run's own)")
    m.set_defaults(func=run_motion, recorded=_recorded_flags(m))
