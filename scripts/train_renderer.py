"""Fine-tune the second-design renderer on a pack (infp.train.packed), for a fixed wall-clock budget.

E_m and the keypoint decoder stay frozen (so the bundled stage-2 checkpoint stays valid); the
appearance encoder, F and the decoder train with L1, VGG16 perceptual loss, a mouth-region L1, L1
on the decoder's synthesis itself (so it learns where the mask is still closed), a penalty on the
blend mask's area and, with --gan, pix2pixHD's multi-scale hinge GAN with feature
matching. Made for a GPU lent for minutes (docs/stage1.md); runs on CPU for tests.

    python scripts/train_renderer.py --pack PACK --init src/infp/checkpoints/imitator --out OUT \
        --vgg WEIGHTS.safetensors --seconds 420 --batch 32 [--gan]

Writes OUT/trained.safetensors (the EMA of the trained tensors, float32), OUT/log.json and
OUT/samples.png, each refreshed every --save-every seconds, so a run cut short still leaves its
latest state. `merge` (python scripts/train_renderer.py merge ...) turns trained.safetensors into
a checkpoint directory.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from infp.face.topology import inner_lip_keypoints
from infp.models import Imitator
from infp.models.decoder import placed, tiled
from infp.models.discriminator import DiscriminatorConfig, MultiScaleDiscriminator
from infp.models.imitator import closing_region
from infp.models.warping import Window, polygon_mask
from infp.train import legacy
from infp.train.losses import feature_matching, hinge_d_loss, hinge_g_loss, ms_l1
from infp.train.packed import PackedPairs

MOUTH_GROW = 9  # px at 256: the mouth region reaches past the inner lips to the lips themselves


def load_start(path: str, trained: str | None = None, paint_window: tuple[float, float] | None = None,
               paint_closing: bool = False, paint_eyes: bool = False, lid_sides: bool = False) -> Imitator:
    """The init checkpoint (either design, `infp.train.legacy.load_start`), with `trained` (a run's
    trained.safetensors) on top; `paint_window` replaces the config's, `paint_closing`, `paint_eyes`
    and `lid_sides` turn the closing region, the eye window and the split eyelids on (the eye
    window's decoder, new with `paint_eyes`, starts as a copy of the mouth window's)."""
    model = legacy.load_start(path)
    changes = {}
    if paint_window is not None and tuple(paint_window) != model.cfg.paint_window:
        changes["paint_window"] = tuple(paint_window)
    for name, on in (("paint_closing", paint_closing), ("paint_eyes", paint_eyes), ("keypoint_lid_sides", lid_sides)):
        if on and not getattr(model.cfg, name):
            changes[name] = True
    if changes:
        from dataclasses import replace

        state = model.state_dict()
        model = Imitator(replace(model.cfg, **changes))
        if model.eye_decoder is not None and not any(k.startswith("eye_decoder.") for k in state):
            state.update({"eye_" + k: v.clone() for k, v in state.items() if k.startswith("decoder.")})
        model.load_state_dict(state)
    if trained:
        state = model.state_dict()
        extra = load_file(trained)
        unknown = set(extra) - set(state)
        if unknown:
            sys.exit(f"tensors not in the model: {sorted(unknown)[:3]}")
        state.update({k: v.float() for k, v in extra.items()})
        model.load_state_dict(state)
    return model


def mouth_region(model: Imitator, kp: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 1, S, S) in [0, 1]: the driving keypoints' inner-lip polygon, grown by MOUTH_GROW px."""
    lips = torch.as_tensor(inner_lip_keypoints(), device=kp.device)
    m = polygon_mask(kp[:, lips].float(), size, supersample=1)
    return F.max_pool2d(m, 2 * MOUTH_GROW + 1, 1, MOUTH_GROW)


def closing_target(model: Imitator, r) -> torch.Tensor:
    """(B, 1, S, S): where the source's mouth opening lands after the warp (imitator.closing_region)."""
    lips = torch.as_tensor(inner_lip_keypoints(), device=r.flow.flow.device)
    opening = polygon_mask(r.keypoints.source[:, lips].float(), model.cfg.feature_size)
    mouth = first_windows(r.synthesis.window, len(opening))  # the mouth's window comes first
    return mouth.place(closing_region(opening, r.flow.flow.float(), mouth))


def first_windows(w: Window, batch: int) -> Window:
    return Window(w.top[:batch], w.left[:batch], w.height, w.width, w.size)


def eye_target(r, batch: int) -> torch.Tensor:
    """(B, 1, S, S): the eye window's paint region (the driving eyes' opening and where the source's
    lands, grown), placed in the crop; zero without an eye window."""
    region = r.synthesis.window.place(r.synthesis.region.float())
    return region[batch:] if len(region) > batch else torch.zeros_like(region[:batch])


def save_samples(path: Path, b, pred: torch.Tensor, mask: torch.Tensor) -> None:
    import cv2

    rows = []
    for k in range(min(4, len(pred))):
        m = mask[k].expand(3, -1, -1)
        m = F.interpolate(m[None], size=pred.shape[-2:], mode="nearest")[0]
        row = torch.cat([b.source[k], b.driving[k], pred[k].clamp(0, 1), m], dim=2)
        rows.append(row)
    img = (torch.cat(rows, dim=1).permute(1, 2, 0).float().cpu().numpy() * 255).round().astype(np.uint8)
    cv2.imwrite(str(path), img[..., ::-1])


def train(args: argparse.Namespace) -> None:
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_load = time.perf_counter()
    data = PackedPairs.load(args.pack, dev, real_fraction=args.real_fraction, mouth_pairs=args.mouth_pairs,
                            eye_pairs=args.eye_pairs)
    print(f"pack: {len(data.z)} frames in {len(data.members)} clips, loaded in {time.perf_counter() - t_load:.1f}s",
          flush=True)
    model = load_start(args.init, args.init_trained, args.paint_window, args.paint_closing, args.paint_eyes,
                       args.lid_sides).to(dev).train()
    model.motion_encoder.requires_grad_(False)
    model.keypoint_decoder.requires_grad_(False)
    decoder_only = args.train in ("decoder", "eyes")
    if decoder_only:  # the warp stays as it is: only the painting in the decoder's windows learns
        model.appearance_encoder.requires_grad_(False)
        model.flow_estimator.requires_grad_(False)
    if args.train == "eyes":  # the mouth's painting stays exactly as it is
        if model.eye_decoder is None:
            sys.exit("--train eyes needs the eye window (--paint-eyes, or an init checkpoint with it)")
        model.decoder.requires_grad_(False)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.5, 0.999) if args.gan else (0.9, 0.999), weight_decay=1e-2)
    vgg = None
    if args.vgg_weight > 0:
        from infp.train.perceptual import VGG16Perceptual

        layers = tuple(t for t in ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"))
        vgg = VGG16Perceptual.from_file(args.vgg, layers=layers[: layers.index(args.vgg_upto) + 1]).to(dev)
    disc = opt_d = None
    if args.gan:
        disc = MultiScaleDiscriminator(DiscriminatorConfig()).to(dev)
        opt_d = torch.optim.AdamW(disc.parameters(), lr=args.lr_disc, betas=(0.5, 0.999), weight_decay=1e-2)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.bf16)
    rng = np.random.default_rng(args.seed)
    log, t0, last_save, step = [], time.perf_counter(), time.perf_counter(), 0
    size = model.cfg.size

    def save(final: bool = False) -> None:
        trained = dict(zip(names, (e.detach().float().cpu().contiguous() for e in ema)))
        save_file(trained, str(out / "trained.safetensors"))
        (out / "log.json").write_text(json.dumps({"args": vars(args), "steps": step, "log": log}, indent=1))
        print(f"saved at step {step} ({time.perf_counter() - t0:.0f}s){' final' if final else ''}", flush=True)

    while time.perf_counter() - t0 < args.seconds and (args.steps is None or step < args.steps):
        b = data.sample(rng, args.batch)
        with autocast:
            r = model.render(model.encode_appearance(b.source), b.z_source, b.z_driving)
        pred, mask, target = r.image.float(), r.synthesis.mask.float(), b.driving
        region = mouth_region(model, r.keypoints.driving, size)
        if model.cfg.paint_closing:  # where the source's teeth land counts as mouth too: lips must cover them
            region = torch.maximum(region, closing_target(model, r))
        eyes = eye_target(r, len(target))
        synthesis, synthesis_target = r.synthesis.synthesis.float(), r.synthesis.window.crop(tiled(b.driving, r.synthesis))
        if decoder_only:  # the output changes only in the decoder's windows: score it there (VGG costs 1/5 a window)
            pred, target, region, eyes = (r.synthesis.window.crop(tiled(x, r.synthesis)) for x in (pred, target, region, eyes))
        if disc is not None:
            with autocast:
                real, fake = disc(target), disc(pred.detach())
            d_real, d_fake = hinge_d_loss(real, fake)
            opt_d.zero_grad(set_to_none=True)
            (d_real + d_fake).backward()
            opt_d.step()
        # the synthesis learns on its own everywhere: where the mask is closed it gets no gradient
        # from the output, and until it differs from the warped source the mask gets none either
        terms = {"l1": ms_l1(pred, target),
                 "synthesis": args.synthesis_weight * ms_l1(synthesis, synthesis_target)}
        if vgg is not None:
            with autocast:
                terms["vgg"] = args.vgg_weight * vgg(pred, target).float()
        err = (pred - target).abs().mean(1, keepdim=True)
        terms["mouth"] = args.mouth_weight * (err * region).sum() / region.sum().clamp_min(1.0)
        if args.eye_weight > 0:
            terms["eye"] = args.eye_weight * (err * eyes).sum() / eyes.sum().clamp_min(1.0)
        terms["mask"] = args.mask_weight * mask.sum() / (len(b.driving) * size * size)  # the share of the crop painted
        if disc is not None:
            with autocast:
                fake, real = disc(pred), disc(target)
            terms["adv"] = args.adv_weight * hinge_g_loss(fake).float()
            terms["fm"] = args.fm_weight * feature_matching(fake, real).float()
        total = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        for g in opt.param_groups:  # linear warm-up: the new mask channel and a new optimiser state
            g["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            d = min(args.ema, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
        if step % args.log_every == 0:
            row = {"step": step, "s": round(time.perf_counter() - t0, 1), "total": total.item(),
                   **{k: v.item() for k, v in terms.items()}, "mask_mean": mask.sum().item() / (len(b.driving) * size * size)}
            if disc is not None:
                row.update(d_real=d_real.item(), d_fake=d_fake.item())
            log.append(row)
            print(json.dumps(row), flush=True)
        if time.perf_counter() - last_save > args.save_every:
            save()
            save_samples(out / "samples.png", b, r.image.detach(), placed(r.synthesis, len(b.driving))[1].detach())
            last_save = time.perf_counter()
    save(final=True)
    save_samples(out / "samples.png", b, r.image.detach(), placed(r.synthesis, len(b.driving))[1].detach())
    print(f"{step} steps, {step * args.batch / (time.perf_counter() - t0):.1f} pairs/s", flush=True)


def merge(args: argparse.Namespace) -> None:
    """init checkpoint + trained.safetensors -> a checkpoint directory."""
    model = load_start(args.init, args.trained, args.paint_window, args.paint_closing, args.paint_eyes, args.lid_sides)
    model.save_pretrained(args.out, training=json.loads(args.card) if args.card else {})
    print(f"wrote {args.out} (trained tensors from {args.trained})")


def pack(args: argparse.Namespace) -> None:
    """clip folders -> a pack (infp.train.packed) with the init checkpoint's E_m latents."""
    from infp.data.clip import list_clips
    from infp.data.motion import imitator_fingerprint
    from infp.data.pairs import load_clips
    from infp.train.packed import pack_clips

    model = load_start(args.init)
    clips = load_clips([c for d in args.data for c in list_clips(d)], model.cfg.size, progress=True,
                       max_frames=args.max_frames)
    meta = pack_clips(clips, model, Path(args.out), imitator_fingerprint(args.init), crf=args.crf, every=args.every)
    print(f"packed {meta['frames']} frames of {len(meta['clips'])} clips into {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    m = argparse.ArgumentParser(prog="train_renderer.py merge", description=merge.__doc__)
    m.add_argument("--init", required=True)
    m.add_argument("--trained", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--card", default=None, help="JSON for the checkpoint's training card")
    m.add_argument("--paint-window", type=float, nargs=2, default=None, metavar=("H", "W"))
    m.add_argument("--paint-closing", action="store_true")
    m.add_argument("--paint-eyes", action="store_true")
    m.add_argument("--lid-sides", action="store_true")
    for a, kw in (("--pack", {"required": True}), ("--init", {"required": True}), ("--out", {"required": True}),
                  ("--vgg", {"default": None}), ("--vgg-upto", {"default": "relu4_3"}),
                  ("--init-trained", {"default": None}), ("--device", {"default": "cuda" if torch.cuda.is_available() else "cpu"}),
                  ("--seconds", {"type": float, "default": 420}), ("--steps", {"type": int, "default": None}),
                  ("--batch", {"type": int, "default": 32}), ("--lr", {"type": float, "default": 1e-4}),
                  ("--lr-disc", {"type": float, "default": 2e-4}), ("--vgg-weight", {"type": float, "default": 1.0}),
                  ("--mouth-weight", {"type": float, "default": 1.0}), ("--mask-weight", {"type": float, "default": 0.05}),
                  ("--synthesis-weight", {"type": float, "default": 1.0}), ("--eye-weight", {"type": float, "default": 0.0}),
                  ("--eye-pairs", {"type": float, "default": 0.0}),
                  ("--adv-weight", {"type": float, "default": 0.1}), ("--fm-weight", {"type": float, "default": 1.0}),
                  ("--real-fraction", {"type": float, "default": 0.8}), ("--mouth-pairs", {"type": float, "default": 0.5}),
                  ("--ema", {"type": float, "default": 0.999}), ("--warmup", {"type": int, "default": 200}), ("--seed", {"type": int, "default": 0}),
                  ("--log-every", {"type": int, "default": 50}), ("--save-every", {"type": float, "default": 60})):
        p.add_argument(a, **kw)
    p.add_argument("--gan", action="store_true")
    p.add_argument("--train", choices=("all", "decoder", "eyes"), default="all",
                   help="what learns besides the frozen E_m: the appearance encoder, F and the decoders, the decoders "
                        "alone, or the eye window's decoder alone")
    p.add_argument("--paint-window", type=float, nargs=2, default=None, metavar=("H", "W"),
                   help="the decoder's window as shares of the crop (default: the init checkpoint's)")
    p.add_argument("--paint-closing", action="store_true",
                   help="the decoder may also paint where the source's mouth opening lands (to cover a photo's teeth)")
    p.add_argument("--paint-eyes", action="store_true",
                   help="a second decoder window on the eyes, with its own decoder (a copy of the mouth's to start), "
                        "painting where they open or close (blinks, half-closed eyes)")
    p.add_argument("--lid-sides", action="store_true",
                   help="the keypoint prior splits each eye's lids at its midline, as it does the lips")
    p.add_argument("--bf16", action="store_true")
    k = argparse.ArgumentParser(prog="train_renderer.py pack", description=pack.__doc__)
    k.add_argument("--data", type=Path, nargs="+", required=True)
    k.add_argument("--init", required=True)
    k.add_argument("--out", required=True)
    k.add_argument("--crf", type=int, default=23)
    k.add_argument("--every", type=int, default=1)
    k.add_argument("--max-frames", type=int, default=None, help="per clip")
    argv = sys.argv[1:]
    if argv[:1] == ["merge"]:
        merge(m.parse_args(argv[1:]))
    elif argv[:1] == ["pack"]:
        pack(k.parse_args(argv[1:]))
    else:
        train(p.parse_args(argv))


if __name__ == "__main__":
    main()
