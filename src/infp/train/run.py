"""What every training loop shares: the run folder, Accelerate, EMA, atomic state, logs and the step loop.

A run folder holds `run.json` (the configs and data, so `--resume` needs no other flags), `state/`
(weights, EMA, optimisers, schedulers, RNG, step: safetensors + JSON, never pickle, see `infp.train.state`;
written atomically and crash-safely), `checkpoint/` (the EMA weights as a
checkpoint directory, exported at every save), `samples/` and `logs/` (TensorBoard). Batch `k` is drawn
from generators seeded by (seed, k, process), so a resumed run repeats exactly the draws an
uninterrupted run would have made.

Many processes (`accelerate launch`, torchrun; docs/training-at-scale.md): `batch_size` is the global
batch, split evenly over the processes; the model goes through `Accelerator.prepare` (DDP averages the
gradients), every process keeps the same EMA, only the first one writes, and the logged values are
means over the processes.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from infp.data.clip import list_clips
from infp.errors import InfpError
from infp.fsutil import atomic_dir, atomic_file, recover_dir
from infp.train.state import RngState, Stateful, load_state, save_state

log = logging.getLogger(__name__)
logging.getLogger("accelerate").setLevel(logging.WARNING)  # its info lines are noise here
STATE, CHECKPOINT, RUN = "state", "checkpoint", "run.json"
PLAN = ("steps", "log_every", "sample_every", "save_every")  # what --resume may change: a run's length and cadences
TRAIN_DTYPES = ("float32", "bfloat16")  # of the forward passes; weights stay float32


@dataclass(frozen=True)
class TrainResult:
    step: int
    seconds: float
    items_per_second: float  # training examples (pairs, windows) per second over this invocation
    last: dict[str, float]


def check_out(out: Path, resume: bool) -> dict | None:
    """The saved run description when resuming; refuses to overwrite a run or resume nothing. The first
    thing a trainer calls: from here on only the first process of a launch logs more than warnings."""
    _quiet_other_processes()
    if first_process():
        recover_dir(out / STATE)  # a kill during a save may have left the state beside its name
    # the other processes may look while the first one is still finishing such a swap: a state beside
    # its name is a state too
    has_state = any((out / name).is_dir() for name in (STATE, f".{STATE}.new", f".{STATE}.old"))
    if resume and not has_state:
        raise InfpError(f"--resume: no training state here (no {STATE}/); start without --resume", out)
    if not resume and has_state:
        raise InfpError("already holds a training run; pass --resume to continue it or choose another --out", out)
    return json.loads((out / RUN).read_text()) if resume else None


def resumed_plan(recorded, cfg, changes: dict | None = None):
    """The recorded training config of a resumed run, with its plan (`PLAN`: the length and cadences)
    changed as asked: by `changes` (the CLI: the flags given explicitly, nothing else) or, when None, to
    `cfg`'s (library callers pass whole configs). Every change is logged; nothing else changes."""
    new = {k: getattr(cfg, k) for k in PLAN} if changes is None else dict(changes)
    if unknown := set(new) - set(PLAN):
        raise ValueError(f"only {', '.join(PLAN)} may change on resume, not {', '.join(sorted(unknown))}")
    for k, v in new.items():
        if getattr(recorded, k) != v:
            log.info("resuming with %s = %s (the run recorded %s)", k, v, getattr(recorded, k))
    return replace(recorded, **new)


def first_process() -> bool:
    """Whether this is the only or the first process of a launch (torchrun and `accelerate launch` set
    RANK): only it finishes an interrupted state swap, as renames racing each other could lose the state."""
    return os.environ.get("RANK", "0") == "0"


def _quiet_other_processes() -> None:
    """Every process would log the same lines (and its own throughput); the first one speaks for all."""
    if not first_process():
        logging.getLogger("infp").setLevel(logging.WARNING)


def write_run(out: Path, description: dict) -> None:
    """run.json, written by the first process only: every process describes the same run, and the first
    one's cleaning of killed writers' leftovers (`clean_partials`) could delete another's temporary file."""
    if not first_process():
        return
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / RUN) as tmp:
        tmp.write_text(json.dumps(description, indent=2) + "\n")


def clips_in(folder: Path):
    if not Path(folder).is_dir():
        raise InfpError("data folder not found", folder)
    clips = list_clips(folder)
    if not clips:
        raise InfpError("no clips here (run `infp synth` or `infp preprocess` first)", folder)
    return clips


def share_of(batch: int, processes: int) -> int:
    """Each process's share of a global batch: the same recipe means the same batch on one process or
    many, so the loss curve is the same in expectation. A batch that does not split evenly is refused
    (uneven shares would weight the items of the smaller ones more in the averaged gradient)."""
    if batch % processes:
        raise InfpError(f"the batch of {batch} (--batch-size, the global batch of all processes together) does not "
                        f"split evenly over {processes} processes; use a batch that is a multiple of {processes}, "
                        "or a number of processes that divides it")
    return batch // processes


def _check_launch() -> None:
    """`accelerate launch --cpu --num_processes N` starts one process (for several CPU processes it expects
    mpirun) and says nothing: its sign is MASTER_ADDR set with no world size. Say what to run instead."""
    sizes = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_SIZE")
    if os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in os.environ \
            and not any(k in os.environ for k in sizes):
        log.warning("`accelerate launch --cpu` started one process, whatever --num_processes says; for several "
                    "CPU processes run `accelerate launch --multi_gpu --num_processes N ... --device cpu` "
                    "(docs/training-at-scale.md)")


def _end_with_launcher() -> None:
    """A worker of a launch (torchrun / `accelerate launch` set LOCAL_RANK) gets SIGTERM when its launcher
    dies, even by kill -9: torchrun starts each worker in a session of its own, so without this an orphaned
    worker trains on, holding the run folder's lock. Linux only (prctl PR_SET_PDEATHSIG)."""
    if "LOCAL_RANK" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, signal.SIGTERM, 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
        log.warning("could not ask to end with the launcher (prctl errno %d)", ctypes.get_errno())
        return
    if parent == 1 or os.getppid() != parent:  # the launcher died before the request
        os.kill(os.getpid(), signal.SIGTERM)


class Forward:
    """A prepared model's forward (through Accelerate's wrapper: DDP averages the gradients of what it
    computes) with the bare module's other methods and attributes, for code that calls both: the
    wrapper has only `forward` (`denoising_loss` also calls `model.anchor` and `model.to_diffusion`)."""

    def __init__(self, prepared: nn.Module, bare: nn.Module):
        self.prepared, self.bare = prepared, bare

    def __call__(self, *args, **kwargs):
        return self.prepared(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.bare, name)


def _warmup_ema(decay: float):
    @torch.no_grad()
    def update(ema_params: list[torch.Tensor], params: list[torch.Tensor], num_averaged) -> None:
        n = int(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(ema_params, params, 1 - d)

    return update


class RunLoop:
    """The step loop around a subclass's `train_step(step)`, `samples()` and `export(path)`.

    `cfg` needs: steps, batch_size, seed, ema_decay, log_every, sample_every, save_every.
    """

    name = "train"  # the TensorBoard project and the progress bar's label
    unit = "items"  # what a batch holds, for the throughput log
    loss_key = "loss"  # the logged value shown on the progress bar

    def __init__(self, cfg, out: Path, cpu: bool, dtype: str = "float32"):
        self.cfg, self.out = cfg, Path(out)
        if dtype not in TRAIN_DTYPES:
            raise InfpError(f"unknown training dtype {dtype!r}; choose from {', '.join(TRAIN_DTYPES)}")
        self.dtype = dtype
        _end_with_launcher()
        self.acc = Accelerator(cpu=cpu, log_with="tensorboard",
                               project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(self.out / "logs")))
        _check_launch()
        self.local_batch = share_of(cfg.batch_size, self.acc.num_processes)  # this process's share of a batch
        log.info("training on %s, forward passes in %s", self.acc.device, dtype)
        if self.acc.num_processes > 1:
            log.info("%d processes, %d of the batch of %d each", self.acc.num_processes, self.local_batch,
                     cfg.batch_size)
        set_seed(cfg.seed)  # the same on every process: the same initial weights
        self.step = 0
        self.stateful: dict[str, Stateful] = {"rng": RngState()}  # what `save` stores, by file name

    def keep(self, **objects: Stateful) -> None:
        """Register objects whose state `save` stores and `load` restores (models, optimisers,
        schedulers), under their names in `state/`. Models are kept unwrapped from Accelerate's
        wrappers, so the state reads the same on one process or many."""
        for name, obj in objects.items():
            if name in self.stateful:
                raise ValueError(f"two state objects named {name!r}")
            self.stateful[name] = self.acc.unwrap_model(obj) if isinstance(obj, nn.Module) else obj

    def track(self, model: nn.Module, warmup: bool = False) -> AveragedModel:
        """An EMA copy of `model` (before `prepare`), saved with the state. Every process updates its own
        from the same weights (the averaged gradients are the same everywhere), so they stay equal and the
        first process's is the one saved. With `warmup` the decay
        grows as min(decay, (1 + n) / (10 + n)) over the n updates so far, so an early checkpoint is not
        mostly the initial weights (at 0.999, 0.999^750 = 47% of them are still there at step 750)."""
        avg = _warmup_ema(self.cfg.ema_decay) if warmup else get_ema_multi_avg_fn(self.cfg.ema_decay)
        ema = AveragedModel(model, multi_avg_fn=avg, use_buffers=True)
        ema.to(self.acc.device)
        self.keep(ema=ema)
        return ema

    # -- state ---------------------------------------------------------------------------------
    def save(self) -> None:
        """Training state and the exported checkpoint, each written atomically. Only the main process
        writes (what it saves is what every process holds); the others go on to the next step, whose
        gradient averaging waits for it. The RNG state saved is its own: all processes restore it, and
        `seed_step` reseeds the generators at every step anyway."""
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            return
        with atomic_dir(self.out / STATE) as tmp:
            save_state(tmp, self.stateful)
            (tmp / "step.json").write_text(json.dumps({"step": self.step}) + "\n")
        self.export(self.out / CHECKPOINT)

    def load(self) -> None:
        """Restore what `save` wrote: reads only state.json, step.json and the registered objects'
        safetensors files (never a pickle); a state from before this format is refused with a message."""
        state = self.out / STATE
        if first_process():
            recover_dir(state)
        self.acc.wait_for_everyone()  # no process reads the state while the first may still be swapping it
        load_state(state, self.stateful)
        try:
            step = json.loads((state / "step.json").read_text())["step"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InfpError(f"unreadable training step: {e}", state / "step.json") from e
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InfpError(f"not a training step: {step!r}", state / "step.json")
        self.step = step
        log.info("resumed at step %d of %d", self.step, self.cfg.steps)

    def autocast(self):
        """The context for the networks' forward passes: bfloat16 autocast with `dtype` "bfloat16",
        else nothing. Weights, optimiser state and EMA stay float32; the imitator's losses run outside
        it, and the motion model's MSE is among the ops autocast keeps in float32. Our own context
        rather than Accelerate's `mixed_precision`, which is fixed once per process. Measured on the 2-core
        CPU (AVX512-BF16), 40-step runs: the base imitator at batch 4 trains 5.55 pairs/s against 4.65
        (its forward + backward alone: 0.30 s against 0.57 s; the float32 losses take much of the rest);
        the small motion model at batch 32, 118 windows/s against 111."""
        return torch.autocast(self.acc.device.type, dtype=torch.bfloat16, enabled=self.dtype == "bfloat16")

    # -- for subclasses --------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        raise NotImplementedError

    def samples(self) -> None:
        """Write something to look at (a no-op unless overridden)."""

    def export(self, path: Path) -> None:
        raise NotImplementedError

    def generator(self, step: int) -> torch.Generator:
        """A CPU generator seeded by (seed, step, process) for a step's random draws."""
        seed = np.random.SeedSequence([self.cfg.seed, step, self.acc.process_index]).generate_state(1, np.uint64)[0]
        return torch.Generator().manual_seed(int(seed))

    def seed_step(self, step: int) -> None:
        """Seed the global generators (torch's, NumPy's, Python's: dropout or anything else that draws
        from them) by (seed, step, process), apart from `generator`'s stream. A process's draws are then
        a function of those three alone, so a run resumed on another number of processes is still well
        defined, and no process repeats another's draws."""
        entropy = [self.cfg.seed, step, self.acc.process_index, 1]  # the 1: not `generator`'s stream
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)

    def mean_over_processes(self, values: dict[str, float]) -> dict[str, float]:
        """Logged values averaged over the processes (each saw its own share of the batch); a collective:
        every process calls it at the same step, with the same keys."""
        if self.acc.num_processes == 1 or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.acc.device)
        return dict(zip(keys, self.acc.reduce(t, "mean").tolist()))

    # -- the loop --------------------------------------------------------------------------------
    def run(self, progress: bool) -> TrainResult:
        cfg, t0, done, last = self.cfg, time.perf_counter(), 0, {}
        self.acc.init_trackers(self.name)
        bar = tqdm(total=cfg.steps, initial=self.step, unit="step", desc=f"train {self.name}",
                   disable=not (progress and self.acc.is_main_process))
        per_step = cfg.batch_size  # the global batch, all processes together
        while self.step < cfg.steps:
            self.seed_step(self.step)
            last = self.train_step(self.step)
            self.step += 1
            done += 1
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                last = self.mean_over_processes(last)
                rate = done * per_step / (time.perf_counter() - t0)
                self.acc.log({**last, f"{self.unit}_per_second": rate}, step=self.step)
                bar.set_postfix({"loss": f"{last.get(self.loss_key, float('nan')):.4f}", f"{self.unit}_s": f"{rate:.1f}"})
            if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                self.samples()
            if self.step % cfg.save_every == 0 or self.step == cfg.steps:
                self.save()
        bar.close()
        self.acc.end_training()
        secs = time.perf_counter() - t0
        return TrainResult(self.step, secs, done * per_step / max(secs, 1e-9), last)
