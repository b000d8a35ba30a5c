"""Training on two processes (`accelerate launch`, CPU, gloo) with the tiny presets, both stages:

- a step of the 2-process run is a step on the union of the two processes' shares of the batch: its
  gradient (read back from AdamW's first moment) is the clipped mean of the gradients a 1-process run
  computes on each share, and the logged loss is the mean of the shares' losses;
- a 2-process run killed with SIGKILL (the launcher and both workers) and resumed ends with the same
  weights, EMA and optimiser state, bit for bit, as a run that was never interrupted;
- a 2-process run resumes on one process (the same global batch, one share).

The launches go through `sys.executable -m accelerate.commands.launch`, so the venv's bin need not be on
PATH. `--multi_gpu` is what starts several processes: with `--cpu`, accelerate starts one (it leaves
several CPU processes to mpirun); `--device cpu` keeps them on the CPU (docs/training-at-scale.md).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from infp.cli import main
from infp.errors import InfpError
from infp.fsutil import recover_dir
from infp.train.run import share_of

BATCH = 4  # global: 2 per process on two
LAUNCH_TIMEOUT = 240


def _free_port() -> int:
    """A port for the launch's rendezvous (not the default 29500: another test session may hold it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(processes: int, stage: str, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
            "--main_process_port", str(_free_port()),
            "-m", "infp", "-q", "train", stage, "--out", str(out), "--device", "cpu", *flags]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on two cores: one thread each


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL a launch: the launcher and its workers. Killing the launcher's process group is not enough:
    torchrun starts each worker in a session of its own, and orphaned workers train on."""
    import psutil  # accelerate's dependency

    try:
        every = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        every = []
    for p in every:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    _, alive = psutil.wait_procs(every, timeout=30)
    assert not alive, f"processes of the killed launch are still alive: {alive}"


def _launch(processes: int, stage: str, out: Path, *flags: str) -> None:
    log = out.with_name(out.name + ".log")  # a file, not a pipe: a full pipe would stall the run
    with log.open("a") as f:
        proc = subprocess.Popen(_command(processes, stage, out, *flags), env=ENV, stdout=f, stderr=f)
        try:
            proc.wait(timeout=LAUNCH_TIMEOUT)
        finally:
            if proc.returncode is None:
                _kill_all(proc)
    assert proc.returncode == 0, log.read_text()[-4000:]


@pytest.fixture(scope="module")
def stage_flags(synth_clips, tmp_path_factory) -> dict[str, list[str]]:
    """The flags of a new run of each stage: tiny presets, the global batch, a latent cache shared by every
    motion run (computed once, so every run trains on the same numbers)."""
    from infp.models import Imitator, imitator_preset

    root = tmp_path_factory.mktemp("multiprocess")
    torch.manual_seed(0)
    Imitator(imitator_preset("tiny")).save_pretrained(root / "imitator")
    common = ["--data", str(synth_clips), "--preset", "tiny", "--batch-size", str(BATCH)]
    return {"motion": [*common, "--imitator", str(root / "imitator"), "--cache", str(root / "cache"),
                       "--one-sided-steps", "2"],
            "imitation": common}


# -- reading a run folder -----------------------------------------------------------------------------
def _state(out: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(str(out / "state" / f"{name}.safetensors"))


def _gradients(out: Path) -> list[torch.Tensor]:
    """The generator's gradients of a run that took one AdamW step, by parameter, from its first moment
    (exp_avg = (1 - beta1) g after one step; the weight decay is decoupled)."""
    objects = json.loads((out / "state" / "state.json").read_text())["objects"]
    beta1 = objects["opt"]["dict"]["param_groups"]["list"][0]["dict"]["betas"]["tuple"][0]
    opt = _state(out, "opt")
    params = sorted({int(k.split("/")[1]) for k in opt if k.endswith("/exp_avg")})
    return [opt[f"state/{i}/exp_avg"] / (1 - beta1) for i in params]


def _logged(out: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = {p.parent for p in (out / "logs").rglob("events.out.tfevents*")}
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def _share_run(stage: str, recorded: Path, out: Path, share: int, monkeypatch) -> float:
    """One step of a 1-process run on `share`'s part of the batch of the run `recorded` (its draws: this
    process index's), unclipped; returns its loss."""
    from dataclasses import replace

    monkeypatch.setattr(Accelerator, "process_index", property(lambda self: share))
    saved = json.loads((recorded / "run.json").read_text())
    if stage == "motion":
        from infp.diffusion import DiffusionConfig
        from infp.models.motion_config import MotionConfig
        from infp.train.motion import MotionTrainConfig, train_motion

        cfg = replace(MotionTrainConfig(**saved["train"]), batch_size=BATCH // 2, grad_clip=0.0)
        r = train_motion([Path(d) for d in saved["data"]], Path(saved["imitator"]), out,
                         MotionConfig.from_dict(saved["model"]), cfg, DiffusionConfig.from_dict(saved["diffusion"]),
                         progress=False, cpu=True, cache_dir=Path(saved["cache"]))
        return r.last["loss"]
    from infp.train.imitation import TrainConfig, _resumed_configs, train_imitation

    model_cfg, cfg, loss_cfg = _resumed_configs(saved, TrainConfig(), {})
    cfg = replace(cfg, batch_size=BATCH // 2, grad_clip=0.0)
    r = train_imitation([Path(d) for d in saved["data"]], out, model_cfg, cfg, loss_cfg, progress=False, cpu=True)
    return r.last["gen/total"]


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


# -- the tests ----------------------------------------------------------------------------------------
def test_a_batch_that_does_not_split_evenly_is_refused():
    assert share_of(32, 1) == 32 and share_of(32, 4) == 8
    with pytest.raises(InfpError, match="multiple of 3"):
        share_of(4, 3)


@pytest.mark.parametrize("stage", ["motion", "imitation"])
def test_two_processes_step_on_the_union_of_their_shares(stage, stage_flags, tmp_path, monkeypatch):
    """The 2-process run's first gradient is the mean of the two shares' gradients, clipped to norm 1 as
    the run clips, to float precision (the all-reduce sums in another order). Without the GAN for stage
    1: its generator's gradient depends on the discriminator's step, which the shares' runs each take
    alone. The shares differ (else the check would prove nothing) and the logged loss is their mean."""
    two = tmp_path / "two"
    flags = [*stage_flags[stage], "--steps", "1"] + (["--no-gan"] if stage == "imitation" else [])
    _launch(2, stage, two, *flags)
    losses = [_share_run(stage, two, tmp_path / f"share{p}", p, monkeypatch) for p in (0, 1)]
    got = _gradients(two)
    shares = [_gradients(tmp_path / f"share{p}") for p in (0, 1)]
    mean = [(a + b) / 2 for a, b in zip(*shares)]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in mean]))
    want = [g * min(1.0, 1.0 / (float(norm) + 1e-6)) for g in mean]  # clip_grad_norm_(max_norm=1)
    assert (_flat(shares[0]) - _flat(shares[1])).norm() > 0.1 * _flat(mean).norm(), "the shares are alike"
    assert (_flat(got) - _flat(want)).norm() <= 1e-5 * _flat(want).norm()
    key = "loss" if stage == "motion" else "gen/total"
    assert _logged(two, key)[1] == pytest.approx(sum(losses) / 2, rel=1e-5)


def _wait_for_state(out: Path, step: int, proc: subprocess.Popen, log: Path, timeout: float = LAUNCH_TIMEOUT) -> None:
    """Until `out` holds a state of at least `step` (read between the state's atomic swaps)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"the run ended before step {step}: {log.read_text()[-4000:]}"
        try:
            if json.loads((out / "state" / "step.json").read_text())["step"] >= step:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"no state of step {step} after {timeout} s")


@pytest.mark.parametrize("stage", ["motion", "imitation"])
def test_a_killed_two_process_run_resumes_exactly(stage, stage_flags, tmp_path):
    """kill -9 mid-run, then `--resume` on two processes: the same weights, EMA and AdamW state, bit for
    bit, as an uninterrupted run to the same step; then a resume on one process goes on from there."""
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    log = tmp_path / "killed.log"
    with log.open("w") as f:
        proc = subprocess.Popen(_command(2, stage, killed, *stage_flags[stage], "--steps", "100000", "--save-every", "2"),
                                env=ENV, stdout=f, stderr=f)
        try:
            _wait_for_state(killed, 4, proc, log)
        finally:
            _kill_all(proc)  # kill -9, every process of the launch at once
    recover_dir(killed / "state")  # what --resume does first: only to read the step here
    end = json.loads((killed / "state" / "step.json").read_text())["step"] + 3  # an odd end: a save off the cadence
    _launch(2, stage, killed, "--resume", "--steps", str(end))
    _launch(2, stage, straight, *stage_flags[stage], "--steps", str(end), "--save-every", "2")
    for name in ("model", "ema", "opt") + (("disc", "opt_d") if stage == "imitation" else ()):
        a, b = _state(killed, name), _state(straight, name)
        assert a.keys() == b.keys(), name
        for k in a:
            assert torch.equal(a[k], b[k]), f"{name}: {k}"
    assert json.loads((killed / "state" / "step.json").read_text())["step"] == end
    # the same run on one process: the whole batch on it, from where the two left off
    assert main(["-q", "train", stage, "--out", str(killed), "--resume", "--steps", str(end + 1), "--device", "cpu"]) == 0
    assert json.loads((killed / "checkpoint" / "config.json").read_text())["training"]["step"] == end + 1
    assert all(torch.isfinite(v).all() for v in _state(killed, "model").values())


def test_workers_end_with_a_killed_launcher(stage_flags, tmp_path):
    """kill -9 of the launcher alone: its workers (each in a session of its own) end too, instead of training
    on as orphans that hold the run folder's lock."""
    import psutil

    out, log = tmp_path / "run", tmp_path / "run.log"
    with log.open("w") as f:
        proc = subprocess.Popen(_command(2, "motion", out, *stage_flags["motion"], "--steps", "100000", "--save-every", "2"),
                                env=ENV, stdout=f, stderr=f)
        try:
            _wait_for_state(out, 2, proc, log)
            workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "infp" in " ".join(p.cmdline())]
            assert len(workers) == 2, [p.cmdline() for p in workers]
            proc.kill()  # the launcher only
            proc.wait()
            _, alive = psutil.wait_procs(workers, timeout=30)
        finally:
            _kill_all(proc)
    for p in alive:  # do not leave them to the rest of the suite
        p.kill()
    assert not alive, f"orphaned workers still running: {alive}"
