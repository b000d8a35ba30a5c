"""`infp train imitation`: the stage-1 training loop (self-reenactment on real and synthetic clips).

One loop for CPU, one GPU or many (Hugging Face Accelerate); the run folder, state, EMA and resume
rules are `infp.train.run`'s. Batch `k` is drawn from a generator seeded by (seed, k), so `--resume`
continues exactly where it stopped.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from infp.data.pairs import ClipFrames, PairBatch, PairSampler, load_clips
from infp.data.shards import data_source, is_shards, shard_clips
from infp.errors import InfpError
from infp.models import Imitator, ImitatorConfig
from infp.models.discriminator import DiscriminatorConfig
from infp.train.keypoints import fit_keypoint_decoder
from infp.train.legacy import load_start, start_config
from infp.train.losses import ImitationLoss, LossConfig
from infp.train.run import RunLoop, TrainResult, check_out, clips_in, resumed_plan, write_run
from infp.train.samples import save_grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch_size: int = 8
    lr: float = 2e-4
    lr_disc: float = 2e-4
    weight_decay: float = 1e-2
    warmup: int = 200  # linear lr warm-up steps
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    real_fraction: float = 0.5  # share of pairs from real clips when real and synthetic are both given
    mouth_pairs: float = 0.0  # share of driving frames drawn for a mouth unlike the source's (PairSampler)
    log_every: int = 10
    sample_every: int = 500
    save_every: int = 500
    seed: int = 0
    max_frames: int | None = None  # per clip, to bound memory on huge data sets
    init_from: str | None = None  # a stage-1 checkpoint whose weights (and model config) start the run
    # Keep E_m as it is: the motion latent space stays the one a stage-2 model was trained on, so a
    # renderer fine-tuned this way can replace the old one under an existing stage-2 checkpoint.
    freeze_motion_encoder: bool = False


def _describe(model_cfg: ImitatorConfig, train_cfg: TrainConfig, loss_cfg: LossConfig, data: list[Path]) -> dict:
    return {"model": model_cfg.to_dict(), "train": asdict(train_cfg), "loss": asdict(loss_cfg),
            "data": [str(d) for d in data]}


def _resumed_configs(saved: dict, train_cfg: TrainConfig,
                     changes: dict | None = None) -> tuple[ImitatorConfig, TrainConfig, LossConfig]:
    """The saved run's configs; only the step budget and the cadences may change on resume (`resumed_plan`)."""
    model_cfg = ImitatorConfig.from_dict(saved["model"])
    new = resumed_plan(TrainConfig(**saved["train"]), train_cfg, changes)
    loss = dict(saved["loss"])
    # runs saved before the region and correction terms existed trained without them
    loss.setdefault("region", 0.0)
    loss.setdefault("correction", 0.0)
    loss["discriminator"] = DiscriminatorConfig(**loss["discriminator"])
    return model_cfg, new, LossConfig(**loss)


def load_grown(model: Imitator, state: dict[str, torch.Tensor]) -> list[str]:
    """Load a checkpoint's weights into a model that may have grown (the keypoint prior or the mouth
    masks added): new tensors keep their initialisation, and a conv that reads more input channels
    than before (F's first one, the decoder's input and fuse convs) gets the old weights with zeros for
    the new channels, so it computes what it did.
    Returns the names of the tensors that did not come from `state`."""
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise InfpError(f"the checkpoint has tensors this model lacks: {', '.join(unknown[:5])}")
    for name, old in state.items():
        new = own[name]
        if old.shape == new.shape:
            new.copy_(old)
        elif old.dim() == 4 and old.shape[0] == new.shape[0] and old.shape[2:] == new.shape[2:] \
                and old.shape[1] < new.shape[1]:
            new.zero_()
            new[:, : old.shape[1]].copy_(old)
        else:
            raise InfpError(f"{name}: checkpoint shape {tuple(old.shape)} does not fit {tuple(new.shape)}")
    return sorted(set(own) - set(state))


def build_model(model_cfg: ImitatorConfig, cfg: TrainConfig, clips: list[ClipFrames], fresh: bool,
                progress: bool) -> Imitator:
    """The model a run starts from: new, or `init_from`'s weights (grown by the keypoint prior when
    asked). A keypoint decoder new to a frozen E_m is fitted first (train/keypoints.py); a resumed run
    (`fresh` False) gets every weight from its state instead."""
    model = Imitator(model_cfg)
    if cfg.freeze_motion_encoder:
        model.motion_encoder.requires_grad_(False)
    if not (cfg.init_from and fresh):
        return model
    with torch.no_grad():
        added = load_grown(model, load_start(cfg.init_from).state_dict())
    if added:
        log.info("new in this model (not in %s): %s", cfg.init_from, ", ".join(sorted({n.split(".")[0] for n in added})))
    if model.keypoint_decoder is not None and any(n.startswith("keypoint_decoder.") for n in added):
        if cfg.freeze_motion_encoder:
            fit_keypoint_decoder(model, clips, seed=cfg.seed, progress=progress)
        else:
            log.info("the keypoint decoder is new and E_m trains: it learns inside the loop")
    return model


class Trainer(RunLoop):
    name, unit, loss_key = "imitation", "pairs", "gen/total"

    def __init__(self, model_cfg: ImitatorConfig, cfg: TrainConfig, loss_cfg: LossConfig, out: Path,
                 sampler: PairSampler, cpu: bool, dtype: str = "float32", fresh: bool = True, progress: bool = True):
        super().__init__(cfg, out, cpu, dtype)  # seeds torch first: the new weights are the seed's
        self.sampler = sampler
        self.model = build_model(model_cfg, cfg, sampler.clips, fresh, progress)
        self.ema = self.track(self.model)
        self.loss = ImitationLoss(loss_cfg).to(self.acc.device)
        # GAN training wants a short first-moment memory (pix2pixHD's beta1 0.5); plain reconstruction the usual 0.9
        betas = (0.5, 0.999) if loss_cfg.use_gan else (0.9, 0.999)
        trained = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trained, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
        warm = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
        self.model, self.opt, self.sched = self.acc.prepare(self.model, self.opt, warm)
        self.keep(model=self.model, opt=self.opt, sched=self.sched)
        self.use_gan = loss_cfg.use_gan
        if self.use_gan:
            self.opt_d = torch.optim.AdamW(self.loss.disc.parameters(), lr=cfg.lr_disc, betas=(0.5, 0.999),
                                           weight_decay=cfg.weight_decay)
            self.loss.disc, self.opt_d = self.acc.prepare(self.loss.disc, self.opt_d)
            self.keep(disc=self.loss.disc, opt_d=self.opt_d)

    def export(self, path: Path) -> None:
        self.ema.module.save_pretrained(path, training={"step": self.step, "ema_decay": self.cfg.ema_decay})

    def batch(self, step: int) -> PairBatch:
        rng = np.random.default_rng([self.cfg.seed, step, self.acc.process_index])
        b = self.sampler.sample(rng, self.local_batch)  # this process's share of the step's batch
        return PairBatch(*(t.to(self.acc.device) for t in b))

    def train_step(self, step: int) -> dict[str, float]:
        b = self.batch(step)
        with self.autocast():
            out = self.model(b.source, b.source_rep, b.driving_rep)
        pred = out.image
        logged = {}
        if self.use_gan:
            d = self.loss.discriminator(pred.detach(), b.driving)
            self.opt_d.zero_grad(set_to_none=True)
            self.acc.backward(d.total)
            self.opt_d.step()
            logged.update({f"disc/{k}": v for k, v in d.logged().items()})
        kp = None if out.keypoints is None else (out.keypoints, (b.source_points, b.driving_points))
        g = self.loss.generator(pred, b.driving, b.driving_regions, kp, out.flow.correction, out.synthesis)
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(g.total)
        if self.cfg.grad_clip:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(self.acc.unwrap_model(self.model))
        logged.update({f"gen/{k}": v for k, v in g.logged().items()})
        return {**logged, "lr": self.sched.get_last_lr()[0]}

    def samples(self) -> None:
        if self.acc.is_main_process:
            b = self.sampler.sample(np.random.default_rng([self.cfg.seed, 2**31]), 4)  # the same pairs every time
            with torch.no_grad():
                pred = self.ema.module.eval()(*(t.to(self.acc.device) for t in (b.source, b.source_rep, b.driving_rep))).image
            save_grid(self.out / "samples" / f"step_{self.step:07d}.png", b, pred.cpu())


def train_imitation(data: list[Path], out: Path, model_cfg: ImitatorConfig, cfg: TrainConfig,
                    loss_cfg: LossConfig, resume: bool = False, progress: bool = True, cpu: bool = False,
                    dtype: str = "float32", changes: dict | None = None) -> TrainResult:
    """Train (or with `resume`, continue) a stage-1 run in `out`. On resume the run is the one run.json
    recorded, its plan changed by `changes` (or, None, to `cfg`'s; see `infp.train.run.resumed_plan`)."""
    out = Path(out)
    saved = check_out(out, resume)
    if saved is not None:
        model_cfg, cfg, loss_cfg = _resumed_configs(saved, cfg, changes)
        data = [Path(d) for d in saved["data"]]
    elif cfg.init_from:
        start = start_config(cfg.init_from)
        # the changes a fine-tune may make: adding the keypoint prior, the mouth masks (new weights), the
        # lips split at the midline, spreading the keypoints' common motion over the head, bounding F's
        # correction (no new weights)
        model_cfg = replace(start, keypoint_prior=start.keypoint_prior or model_cfg.keypoint_prior,
                            mouth_mask=start.mouth_mask or model_cfg.mouth_mask,
                            keypoint_lip_sides=start.keypoint_lip_sides or model_cfg.keypoint_lip_sides,
                            keypoint_head=model_cfg.keypoint_head or start.keypoint_head,
                            correction_max=model_cfg.correction_max or start.correction_max)
        log.info("starting from the weights of %s (preset %s)", cfg.init_from, model_cfg.preset)
    data = [data_source(d) for d in data]  # a URL of shards stays a URL (pathlib folds `memory://` to `memory:/`)
    clips = [c for d in data for c in (shard_clips(d, progress=progress) if is_shards(d) else clips_in(d))]
    frames = load_clips(clips, model_cfg.size, progress=progress, max_frames=cfg.max_frames)
    kinds = {k: sum(c.kind == k for c in frames) for k in ("real", "synthetic")}
    log.info("training on %d real and %d synthetic clip(s), %d frames", kinds["real"], kinds["synthetic"],
             sum(len(c.usable) for c in frames))
    write_run(out, _describe(model_cfg, cfg, loss_cfg, data))
    sampler = PairSampler(frames, model_cfg.representation, cfg.real_fraction, mouth_pairs=cfg.mouth_pairs)
    trainer = Trainer(model_cfg, cfg, loss_cfg, out, sampler, cpu, dtype, fresh=saved is None, progress=progress)
    if resume:
        trainer.load()
    return trainer.run(progress)

