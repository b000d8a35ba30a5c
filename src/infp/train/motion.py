"""`infp train motion`: the stage-2 training loop (two-track audio -> motion latents by diffusion).

Data: windows of clips (real and synthetic alike) whose motion latents come from the frozen stage-1
motion encoder, computed once and cached (`infp.data.motion`). Curriculum (INFP Sec. 3.2): the first
`one_sided_steps` steps use only windows in which one track alone is active, to initialise the
memory banks (speaking patterns in `M_v`, listening patterns in `M_nv`), then all windows, multi-turn
ones included. AdamW lr 1e-4, weight decay 1e-2, batch 32, EMA, Accelerate; the run folder and
`--resume` follow `infp.train.run`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from infp.audio.mel import featurizer_for
from infp.data.motion import (
    WindowBatch,
    WindowSampler,
    imitator_fingerprint,
    latent_moments,
    load_motion_clips,
    with_rests,
)
from infp.data.shards import data_source, is_shards, shard_clips
from infp.diffusion.schedule import DiffusionConfig
from infp.diffusion.training import CondDropout, MotionBatch, denoising_loss
from infp.errors import InfpError
from infp.guard import check_checkpoint
from infp.models import Imitator
from infp.models.motion_config import MotionConfig
from infp.models.motion_generator import MotionGenerator
from infp.train.run import Forward, RunLoop, TrainResult, check_out, clips_in, resumed_plan, write_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MotionTrainConfig:
    steps: int = 20000
    one_sided_steps: int = 1000  # warm-up on one-sided windows (0 = none)
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-2
    warmup: int = 500  # linear lr warm-up steps
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    static_context: float = 0.1  # share of windows whose context is one latent repeated (the first window)
    drop_style: float = 0.3
    drop_audio: float = 0.5
    drop_context: float = 0.5
    velocity_weight: float = 1.0  # weight of the loss on frame-to-frame differences (0 = the paper's loss)
    snr_gamma: float | None = None  # Min-SNR-gamma loss weighting (None: every timestep as the paper's loss)
    min_speech: float = 0.2  # real clips need speech in this share of the agent track's frames
    # the latent directions stage 2 generates: those whose one-std change moves the imitator's decoded
    # keypoints by at least `whiten_px` px on average (at 256 px); without a keypoint decoder, the
    # leading ones that carry `whiten_keep` of the variance
    whiten_px: float = 0.25
    whiten_keep: float = 0.999
    real_fraction: float | None = None  # share of windows from real clips (None: in proportion to windows)
    gain_db: float = 0.0  # per-track random gain of up to this many dB (log-mel features)
    # which tracks the model hears: "both" (INFP), or one of them, the other always silence: the
    # speaker ("agent") and listener ("partner") models of the explicit-switching baseline (ViCo / DIM)
    hears: str = "both"
    log_every: int = 10
    sample_every: int = 500  # steps between held-fixed validation losses
    save_every: int = 500
    seed: int = 0

    @property
    def dropout(self) -> CondDropout:
        return CondDropout(self.drop_style, self.drop_audio, self.drop_context)


@torch.no_grad()
def visible_directions(imitator: Imitator, mean: np.ndarray, cov: np.ndarray, min_px: float) -> np.ndarray:
    """(z,) bool over the principal directions of `cov`, in order of descending variance: whether a
    change of one std along it, from `mean`, moves the keypoints the imitator decodes from the latent
    by at least `min_px` px on average (at 256 px). Variance alone is a poor guide: on real talking
    videos one direction holds 98.8% of it, and directions with 0.05% or less still move the lips by
    2 px (docs/stage2.md)."""
    evals, evecs = np.linalg.eigh(np.asarray(cov, np.float64))
    evals, evecs = np.clip(evals[::-1], 0, None), evecs[:, ::-1]
    m = torch.as_tensor(mean, dtype=torch.float32)[None]
    steps = torch.as_tensor((evecs * np.sqrt(evals)).T, dtype=torch.float32)  # (z, z): one row per direction
    decoder = imitator.keypoint_decoder.eval()
    moved = (decoder(m + steps) - decoder(m)).norm(dim=-1).mean(-1) * 128  # [-1, 1] units -> px at 256
    kept = (moved >= min_px).numpy() & (evals > 0)
    kept[0] = True  # at least the direction of most motion
    return kept


HEARS = ("both", "agent", "partner")


def silence_features(featurizer) -> torch.Tensor:
    """(F,) the features of one frame of digital silence: what a deaf track always shows."""
    rows = featurizer(np.zeros(16000, np.float32))
    return torch.from_numpy(np.asarray(rows[len(rows) // 2], np.float32))


def _to_batch(model: MotionGenerator, b: WindowBatch, device, hears: str = "both",
              silence: torch.Tensor | None = None) -> MotionBatch:
    z = lambda x: model.normalize(x.to(device))
    agent, partner = b.agent.to(device), b.partner.to(device)
    if hears == "agent":  # one-track models: the other track is silence, in training as in generation
        partner = silence.to(partner).expand_as(partner)
    elif hears == "partner":
        agent = silence.to(agent).expand_as(agent)
    return MotionBatch(agent, partner, z(b.target), z(b.context), z(b.style), None if b.rest is None else z(b.rest))


class MotionTrainer(RunLoop):
    name, unit, loss_key = "motion", "windows", "loss"

    def __init__(self, model_cfg: MotionConfig, diffusion: DiffusionConfig, cfg: MotionTrainConfig, out: Path,
                 samplers: tuple[WindowSampler | None, WindowSampler], stats: tuple[np.ndarray, np.ndarray],
                 card: dict, cpu: bool, dtype: str = "float32", kept: np.ndarray | None = None,
                 silence: torch.Tensor | None = None):
        super().__init__(cfg, out, cpu, dtype)
        self.diffusion, self.card, self.silence = diffusion, card, silence
        self.one_sided, self.full = samplers
        self.noise = diffusion.training_scheduler()
        model = MotionGenerator(model_cfg)
        n = model.set_latent_whitening(*stats, keep=cfg.whiten_keep, kept=kept)
        rule = (f"each moves the keypoints >= {cfg.whiten_px:g} px" if kept is not None
                else f"{100 * cfg.whiten_keep:.1f}% of the variance")
        log.info("latents whitened onto %d of %d principal directions (%s)", n, model_cfg.motion_dim, rule)
        self.ema = self.track(model, warmup=True)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        warm = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
        self.model, self.opt, self.sched = self.acc.prepare(model, opt, warm)
        self.keep(model=self.model, opt=self.opt, sched=self.sched)
        self.val = self.full.sample(np.random.default_rng([cfg.seed, 2**31]), min(64, 4 * cfg.batch_size))

    def sampler(self, step: int) -> WindowSampler:
        return self.one_sided if self.one_sided is not None and step < self.cfg.one_sided_steps else self.full

    def train_step(self, step: int) -> dict[str, float]:
        rng = np.random.default_rng([self.cfg.seed, step, self.acc.process_index])
        raw = self.acc.unwrap_model(self.model)
        batch = _to_batch(raw, self.sampler(step).sample(rng, self.local_batch), self.acc.device, self.cfg.hears,
                          self.silence)
        with self.autocast():  # through the prepared model: with many processes, DDP averages the gradients
            loss = denoising_loss(Forward(self.model, raw), batch, self.noise, self.generator(step), self.cfg.dropout,
                                  self.cfg.velocity_weight, self.cfg.snr_gamma)
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        if self.cfg.grad_clip:
            self.acc.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        self.ema.update_parameters(raw)
        return {"loss": loss.item(), "lr": self.sched.get_last_lr()[0]}

    @torch.no_grad()
    def samples(self) -> None:
        """The EMA model's loss on a fixed batch, with fixed noise and no dropout: a steady curve to watch."""
        ema = self.ema.module.eval()
        batch = _to_batch(ema, self.val, self.acc.device, self.cfg.hears, self.silence)
        loss = denoising_loss(ema, batch, self.noise, torch.Generator().manual_seed(self.cfg.seed), CondDropout(0, 0, 0),
                              self.cfg.velocity_weight, self.cfg.snr_gamma)
        self.acc.log({"val/ema_loss": loss.item()}, step=self.step)

    def export(self, path: Path) -> None:
        self.ema.module.save_pretrained(path, diffusion=self.diffusion.to_dict(),
                                        training={**self.card, "step": self.step, "ema_decay": self.cfg.ema_decay})


def _rested(clips: list, fingerprint: str) -> tuple[list, str]:
    """The clips with the rests a rest-anchored model trains on (`with_rests`), and how they were made: a
    clip without pauses rests at the bundled expression space's neutral start of its typical latent where
    that space was fitted on this imitator (what generation anchors on), else at the typical latent itself."""
    from infp.pipeline.neutral import bundled_space
    from infp.pretrained import expression_dir

    space = bundled_space(expression_dir(), fingerprint)
    if space is None:
        log.warning("rests are the clips' typical latents, not neutral ones: no expression space fits this imitator")
        return with_rests(clips, lambda z: z), "typical"
    neutral = lambda z: space.neutral(torch.as_tensor(z, dtype=torch.float32)).latent.numpy()
    log.info("rests: each clip's silent median; without pauses, the neutral start (expression space %s) of its "
             "median", expression_dir())
    return with_rests(clips, neutral), "quiet, else neutral"


def train_motion(
    data: list[Path], imitator_dir: Path, out: Path, model_cfg: MotionConfig, cfg: MotionTrainConfig,
    diffusion: DiffusionConfig | None = None, resume: bool = False, progress: bool = True, cpu: bool = False,
    cache_dir: Path | None = None, speech_model: Path | None = None, dtype: str = "float32",
    changes: dict | None = None,
) -> TrainResult:
    """Train (or with `resume`, continue) a stage-2 run in `out`. On resume the run is the one run.json
    recorded, its plan changed by `changes` (or, None, to `cfg`'s; see `infp.train.run.resumed_plan`)."""
    out, diffusion = Path(out), diffusion or DiffusionConfig()
    saved = check_out(out, resume)
    if saved is not None:  # only the step budget and the cadences may change on resume
        model_cfg, diffusion = MotionConfig.from_dict(saved["model"]), DiffusionConfig.from_dict(saved["diffusion"])
        # runs from before a field existed resume as they ran: without it
        cfg = resumed_plan(MotionTrainConfig(**{"velocity_weight": 0.0, **saved["train"]}), cfg, changes)
        data, imitator_dir = [Path(d) for d in saved["data"]], Path(saved["imitator"])
        speech_model = Path(saved["speech_model"]) if saved.get("speech_model") else None
        # the latents are where the run cached them unless told otherwise (runs from before it was recorded: OUT/cache)
        cache_dir = cache_dir or (Path(saved["cache"]) if saved.get("cache") else None)
    check_checkpoint(imitator_dir, "imitator")
    imitator = Imitator.from_pretrained(imitator_dir)
    fingerprint = imitator_fingerprint(imitator_dir)
    if saved is not None and saved["imitator_fingerprint"] != fingerprint:
        raise InfpError("the stage-1 checkpoint changed since this run started; its latents would differ", imitator_dir)
    featurizer = featurizer_for(speech_model)
    model_cfg = replace(model_cfg, motion_dim=imitator.cfg.motion_dim, audio_features=featurizer.name,
                        audio_per_frame=featurizer.per_frame, audio_input_dim=featurizer.dim)
    data = [data_source(d) for d in data]  # a URL of shards stays a URL (pathlib folds `memory://` to `memory:/`)
    clips = [c for d in data for c in (shard_clips(d, progress=progress) if is_shards(d) else clips_in(d))]
    cache_dir = Path(cache_dir or out / "cache").resolve()
    loaded = load_motion_clips(clips, imitator, fingerprint, featurizer, cache_dir,
                               progress=progress, min_speech=cfg.min_speech)
    clips, rest = loaded.clips, None
    if model_cfg.rest_anchor:
        clips, rest = _rested(clips, fingerprint)
    window = {"window": model_cfg.window, "context": model_cfg.context, "style_frames": model_cfg.style_frames,
              "static_context_prob": cfg.static_context}
    window |= {"real_fraction": cfg.real_fraction, "gain_db": cfg.gain_db}
    full = WindowSampler(clips, **window)
    one_sided = WindowSampler(clips, one_sided=True, **window) if cfg.one_sided_steps else None
    log.info("stage-2 data: %s", full.describe())
    if cfg.hears not in HEARS:
        raise InfpError(f"hears must be one of {', '.join(HEARS)}, got {cfg.hears!r}")
    card = {"imitator_fingerprint": fingerprint, "imitator_preset": imitator.cfg.preset,
            "data": [str(d) for d in data], "clips": len(loaded.clips), "skipped": len(loaded.skipped),
            "hears": cfg.hears, **({"rest": rest} if rest else {})}
    write_run(out, {"model": model_cfg.to_dict(), "diffusion": diffusion.to_dict(), "train": asdict(cfg),
                    "data": [str(d) for d in data], "imitator": str(Path(imitator_dir).resolve()),
                    "imitator_fingerprint": fingerprint, "speech_model": str(speech_model) if speech_model else None,
                    "cache": str(cache_dir)})
    # the motion space is sized by real motion when there is any: the synthetic behaviour model moves
    # the head and mouth along a few directions only, and whitening by it drops what real faces do
    real = [c for c in clips if c.kind == "real"]
    about = " (motion about each clip's rest)" if model_cfg.rest_anchor else ""
    log.info("latent whitening fitted on the %s%s", f"{len(real)} real clips" if real else "training clips", about)
    stats = latent_moments(real or clips, about_rest=model_cfg.rest_anchor)
    kept = visible_directions(imitator, *stats, cfg.whiten_px) if imitator.keypoint_decoder is not None else None
    trainer = MotionTrainer(model_cfg, diffusion, cfg, out, (one_sided, full), stats, card, cpu, dtype, kept,
                            silence_features(featurizer))
    if resume:
        trainer.load()
    return trainer.run(progress)
