"""`infp train imitation`: the stage-1 training loop (self-reenactment on real and synthetic clips).

One loop for CPU, one GPU or many (Hugging Face Accelerate). Everything a run needs to continue lives
in `OUT/state/` (weights, EMA, optimisers, RNG, step), written atomically; `--resume` continues
exactly where it stopped because batch `k` is drawn from a generator seeded by (seed, k). The EMA
weights are exported as a checkpoint directory (`OUT/checkpoint/`) at every save.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from infp.data.clip import list_clips
from infp.data.pairs import PairBatch, PairSampler, load_clips
from infp.errors import InfpError
from infp.fsutil import atomic_dir, atomic_file
from infp.models import Imitator, ImitatorConfig
from infp.models.discriminator import DiscriminatorConfig
from infp.train.losses import ImitationLoss, LossConfig
from infp.train.samples import save_grid

log = logging.getLogger(__name__)
logging.getLogger("accelerate").setLevel(logging.WARNING)  # one line per saved file otherwise
STATE, CHECKPOINT, RUN = "state", "checkpoint", "run.json"


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
    log_every: int = 10
    sample_every: int = 500
    save_every: int = 500
    seed: int = 0
    max_frames: int | None = None  # per clip, to bound memory on huge data sets


@dataclass(frozen=True)
class TrainResult:
    step: int
    seconds: float
    pairs_per_second: float
    last: dict[str, float]


def _check_out(out: Path, resume: bool) -> dict | None:
    """The saved run description when resuming; refuses to overwrite a run or resume nothing."""
    has_state = (out / STATE).is_dir()
    if resume and not has_state:
        raise InfpError(f"--resume: no training state here (no {STATE}/); start without --resume", out)
    if not resume and has_state:
        raise InfpError("already holds a training run; pass --resume to continue it or choose another --out", out)
    return json.loads((out / RUN).read_text()) if resume else None


def _describe(model_cfg: ImitatorConfig, train_cfg: TrainConfig, loss_cfg: LossConfig, data: list[Path]) -> dict:
    return {"model": model_cfg.to_dict(), "train": asdict(train_cfg), "loss": asdict(loss_cfg),
            "data": [str(d) for d in data]}


def _resumed_configs(saved: dict, train_cfg: TrainConfig) -> tuple[ImitatorConfig, TrainConfig, LossConfig]:
    """The saved run's configs; only the step budget and the cadences may change on resume."""
    model_cfg = ImitatorConfig.from_dict(saved["model"])
    old = TrainConfig(**saved["train"])
    new = replace(old, steps=train_cfg.steps, log_every=train_cfg.log_every, sample_every=train_cfg.sample_every,
                  save_every=train_cfg.save_every)
    loss = dict(saved["loss"])
    loss["discriminator"] = DiscriminatorConfig(**loss["discriminator"])
    return model_cfg, new, LossConfig(**loss)


class Trainer:
    def __init__(self, model_cfg: ImitatorConfig, cfg: TrainConfig, loss_cfg: LossConfig, out: Path,
                 sampler: PairSampler, cpu: bool):
        self.cfg, self.out, self.sampler = cfg, out, sampler
        self.acc = Accelerator(cpu=cpu, log_with="tensorboard",
                               project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
        set_seed(cfg.seed)
        self.model = Imitator(model_cfg)
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.loss = ImitationLoss(loss_cfg).to(self.acc.device)
        # GAN training wants a short first-moment memory (pix2pixHD's beta1 0.5); plain reconstruction the usual 0.9
        betas = (0.5, 0.999) if loss_cfg.use_gan else (0.9, 0.999)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
        warm = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
        self.model, self.opt, self.sched = self.acc.prepare(self.model, self.opt, warm)
        self.use_gan = loss_cfg.use_gan
        if self.use_gan:
            self.opt_d = torch.optim.AdamW(self.loss.disc.parameters(), lr=cfg.lr_disc, betas=(0.5, 0.999),
                                           weight_decay=cfg.weight_decay)
            self.loss.disc, self.opt_d = self.acc.prepare(self.loss.disc, self.opt_d)
        self.ema.to(self.acc.device)
        self.acc.register_for_checkpointing(self.ema)
        self.step = 0

    # -- state ---------------------------------------------------------------------------------
    def save(self) -> None:
        """Training state and the EMA checkpoint, each written atomically."""
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            return
        with atomic_dir(self.out / STATE) as tmp:
            self.acc.save_state(str(tmp))
            (tmp / "step.json").write_text(json.dumps({"step": self.step}) + "\n")
        self.ema.module.save_pretrained(self.out / CHECKPOINT, training={"step": self.step, "ema_decay": self.cfg.ema_decay})

    def load(self) -> None:
        self.acc.load_state(str(self.out / STATE))
        self.step = json.loads((self.out / STATE / "step.json").read_text())["step"]

    # -- one step ------------------------------------------------------------------------------
    def batch(self, step: int) -> PairBatch:
        rng = np.random.default_rng([self.cfg.seed, step, self.acc.process_index])
        b = self.sampler.sample(rng, self.cfg.batch_size)
        return PairBatch(*(t.to(self.acc.device) for t in b))

    def train_step(self, b: PairBatch) -> dict[str, float]:
        pred = self.model(b.source, b.source_rep, b.driving_rep).image
        logged = {}
        if self.use_gan:
            d = self.loss.discriminator(pred.detach(), b.driving)
            self.opt_d.zero_grad(set_to_none=True)
            self.acc.backward(d.total)
            self.opt_d.step()
            logged.update({f"disc/{k}": v for k, v in d.logged().items()})
        g = self.loss.generator(pred, b.driving)
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(g.total)
        if self.cfg.grad_clip:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(self.acc.unwrap_model(self.model))
        logged.update({f"gen/{k}": v for k, v in g.logged().items()})
        return logged

    def samples(self) -> None:
        if self.acc.is_main_process:
            b = self.sampler.sample(np.random.default_rng([self.cfg.seed, 2**31]), 4)  # the same pairs every time
            with torch.no_grad():
                pred = self.ema.module.eval()(*(t.to(self.acc.device) for t in (b.source, b.source_rep, b.driving_rep))).image
            save_grid(self.out / "samples" / f"step_{self.step:07d}.png", b, pred.cpu())

    def run(self, progress: bool) -> TrainResult:
        cfg, t0, done, last = self.cfg, time.perf_counter(), 0, {}
        self.acc.init_trackers("imitation")
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc="train imitation",
                   disable=not (progress and self.acc.is_main_process))
        while self.step < cfg.steps:
            last = self.train_step(self.batch(self.step))
            self.step += 1
            done += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                rate = done * cfg.batch_size * self.acc.num_processes / (time.perf_counter() - t0)
                self.acc.log({**last, "pairs_per_second": rate, "lr": self.sched.get_last_lr()[0]}, step=self.step)
                bar.set_postfix(loss=f"{last.get('gen/total', float('nan')):.4f}", pairs_s=f"{rate:.1f}")
            if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                self.samples()
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        bar.close()
        self.acc.end_training()
        secs = time.perf_counter() - t0
        return TrainResult(self.step, secs, done * cfg.batch_size * self.acc.num_processes / max(secs, 1e-9), last)


def train_imitation(data: list[Path], out: Path, model_cfg: ImitatorConfig, cfg: TrainConfig,
                    loss_cfg: LossConfig, resume: bool = False, progress: bool = True, cpu: bool = False) -> TrainResult:
    out = Path(out)
    saved = _check_out(out, resume)
    if saved is not None:
        model_cfg, cfg, loss_cfg = _resumed_configs(saved, cfg)
        data = [Path(d) for d in saved["data"]]
    clips = [c for d in data for c in _clips_in(d)]
    frames = load_clips(clips, model_cfg.size, progress=progress, max_frames=cfg.max_frames)
    kinds = {k: sum(c.kind == k for c in frames) for k in ("real", "synthetic")}
    log.info("training on %d real and %d synthetic clip(s), %d frames", kinds["real"], kinds["synthetic"],
             sum(len(c.usable) for c in frames))
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / RUN) as tmp:
        tmp.write_text(json.dumps(_describe(model_cfg, cfg, loss_cfg, data), indent=2) + "\n")
    trainer = Trainer(model_cfg, cfg, loss_cfg, out, PairSampler(frames, model_cfg.representation, cfg.real_fraction), cpu)
    if resume:
        trainer.load()
        log.info("resumed at step %d of %d", trainer.step, cfg.steps)
    return trainer.run(progress)


def _clips_in(folder: Path):
    if not Path(folder).is_dir():
        raise InfpError("data folder not found", folder)
    clips = list_clips(folder)
    if not clips:
        raise InfpError("no clips here (run `infp synth` or `infp preprocess` first)", folder)
    return clips
