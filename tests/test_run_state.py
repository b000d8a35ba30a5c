"""Training state: safetensors + JSON round trips, no pickle is ever read back (a planted one would run
code on `--resume`), a state from the Accelerate era is refused with a message, and a kill between
`atomic_dir`'s renames (INFP_FAULT) leaves a state `--resume` finds."""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from infp.cli import main
from infp.errors import InfpError
from infp.fsutil import FAULT_ENV, FAULT_EXIT, atomic_dir, recover_dir
from infp.models import imitator_preset
from infp.train.imitation import TrainConfig, train_imitation
from infp.train.losses import LossConfig
from infp.train.state import RngState, load_state, save_state

# the names Accelerate's load_state read (and pickle-loaded), and a few more a planted file might take
PLANTED = ("custom_checkpoint_0.pkl", "custom_checkpoint_1.pkl", "random_states_0.pkl", "optimizer.bin",
           "optimizer_1.bin", "pytorch_model.bin", "pytorch_model_1.bin", "scheduler.bin", "scaler.pt",
           "sampler.bin", "ema.pt", "state.pkl", "rng.pkl")


class _Payload:
    """Unpickling this creates `marker`: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _armed(marker: Path) -> bytes:
    payload = pickle.dumps(_Payload(marker))
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_Payload(probe)))  # the payload does fire when unpickled
    assert probe.is_file()
    probe.unlink()
    return payload


# -- the format -------------------------------------------------------------------------------------
def _objects(seed: int) -> dict:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.5, 0.999))
    sched = LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    return {"model": model, "ema": ema, "opt": opt, "sched": sched, "rng": RngState()}


def _step(o: dict) -> None:
    loss = o["model"](torch.randn(5, 4)).square().mean()  # the global generator: input and dropout
    o["opt"].zero_grad()
    loss.backward()
    o["opt"].step()
    o["sched"].step()
    o["ema"].update_parameters(o["model"])


def _same(a, b, where: str = "") -> None:
    assert type(a) is type(b), (where, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}/{i}")
    else:
        assert a == b, (where, a, b)


def test_state_round_trip_restores_optimiser_scheduler_ema_and_rng(tmp_path):
    a = _objects(0)
    for _ in range(3):
        _step(a)
    save_state(tmp_path, a)
    assert {p.suffix for p in tmp_path.iterdir()} == {".json", ".safetensors"}
    saved = copy.deepcopy({k: v.state_dict() for k, v in a.items() if k != "rng"})  # live tensors otherwise
    _step(a)  # from the saved RNG state
    b = _objects(1)
    load_state(tmp_path, b)
    for k, state in saved.items():
        _same(state, b[k].state_dict(), k)  # betas a tuple again, the optimiser's int keys, n_averaged
    assert b["opt"].param_groups[0]["betas"] == (0.5, 0.999)
    _step(b)
    _same(a["model"].state_dict(), b["model"].state_dict(), "model after one more step")
    _same(a["ema"].state_dict(), b["ema"].state_dict(), "ema after one more step")


def test_state_refuses_what_it_does_not_fit_or_understand(tmp_path):
    marker = tmp_path / "pwned"
    payload = _armed(marker)
    folder = tmp_path / "state"
    folder.mkdir()
    a = _objects(0)
    save_state(folder, a)
    with pytest.raises(InfpError, match="holds"):
        load_state(folder, {k: v for k, v in a.items() if k != "sched"})
    with pytest.raises(TypeError, match="cannot hold set"):
        save_state(tmp_path, {"odd": type("Odd", (), {"state_dict": lambda self: {"s": {1}}})()})
    index = json.loads((folder / "state.json").read_text())
    index["objects"]["sched"] = {"dict": {"base_lrs": {"pickle": "gASV"}}}
    (folder / "state.json").write_text(json.dumps(index))
    with pytest.raises(InfpError, match="not a valid training state"):
        load_state(folder, a)
    for name in ("state.json", "model.safetensors", "rng.safetensors"):  # a pickle in place of our own files
        fresh = tmp_path / name
        fresh.mkdir()
        save_state(fresh, a)
        (fresh / name).write_bytes(payload)
        with pytest.raises(InfpError, match="unreadable training state"):
            load_state(fresh, a)
    assert not marker.exists()


# -- a run ------------------------------------------------------------------------------------------
def _train(data: list[Path], out: Path, steps: int, resume: bool = False):
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, warmup=1, save_every=2, sample_every=2, log_every=1)
    return train_imitation(data, out, imitator_preset("tiny"), cfg, LossConfig(), resume=resume, progress=False,
                           cpu=True)


@pytest.fixture(scope="module")
def run2(synth_clips, tmp_path_factory) -> Path:
    """A tiny imitation run (with the discriminator) saved at step 2; copy it before changing it."""
    out = tmp_path_factory.mktemp("run_state") / "run"
    _train([synth_clips], out, steps=2)
    return out


@pytest.fixture
def run(run2, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run2, out)
    return out


def test_state_is_safetensors_and_json_only(run):
    names = {p.name for p in (run / "state").iterdir()}
    assert names == {"state.json", "step.json"} | {f"{n}.safetensors" for n in
                                                   ("rng", "model", "ema", "opt", "sched", "disc", "opt_d")}


def test_resume_never_reads_a_planted_pickle(run, synth_clips):
    marker = run.parent / "pwned"
    payload = _armed(marker)
    for name in PLANTED:
        (run / "state" / name).write_bytes(payload)
    for name in ("state.pkl", "random_states_0.pkl", "pytorch_model.bin"):  # beside the state
        (run / name).write_bytes(payload)
    straight = run.parent / "straight"
    _train([synth_clips], straight, steps=3)
    assert _train([synth_clips], run, steps=3, resume=True).step == 3  # the planted files are ignored
    assert not marker.exists()
    a, b = (load_file(str(r / "checkpoint" / "model.safetensors")) for r in (straight, run))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_a_state_from_the_accelerate_era_is_refused(run, capsys):
    marker = run.parent / "pwned"
    payload = _armed(marker)
    for p in (run / "state").iterdir():
        if p.name != "step.json":
            p.unlink()
    for name in PLANTED:
        (run / "state" / name).write_bytes(payload)
    assert main(["-q", "train", "imitation", "--out", str(run), "--resume", "--steps", "3", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "older version" in err and "--init-from" in err and "Traceback" not in err
    assert not marker.exists()


# -- kills --------------------------------------------------------------------------------------------
_WRITE = """
import os, sys
from pathlib import Path
from infp.fsutil import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "data").write_text("v2")
    if sys.argv[2] == "inside":
        os._exit(86)
    (tmp / "done").write_text("")
"""


@pytest.mark.parametrize("point", ["inside", "atomic_dir:after_new", "atomic_dir:after_aside",
                                   "atomic_dir:after_swap"])
def test_atomic_dir_survives_a_kill_anywhere(tmp_path, point):
    path = tmp_path / "state"
    with atomic_dir(path) as tmp:
        (tmp / "data").write_text("v1")
        (tmp / "done").write_text("")
    env = {**os.environ, FAULT_ENV: point}
    r = subprocess.run([sys.executable, "-c", _WRITE, str(path), point], env=env, capture_output=True, text=True)
    assert r.returncode == FAULT_EXIT, r.stderr
    recover_dir(path)
    assert (path / "data").read_text() == ("v1" if point == "inside" else "v2") and (path / "done").is_file()
    assert not {p.name for p in tmp_path.iterdir()} & {".state.new", ".state.old"}
    with atomic_dir(path) as tmp:  # and the next save goes through
        (tmp / "data").write_text("v3")
    assert (path / "data").read_text() == "v3"


def test_resume_after_a_kill_between_the_renames(run):
    """The second save of a resumed run dies after moving the old state aside, before the new one is
    in: no `state/` at all. The next `--resume` finds the new one and continues from step 4."""
    cmd = [sys.executable, "-m", "infp", "-q", "train", "imitation", "--out", str(run), "--resume", "--steps", "4",
           "--device", "cpu"]
    r = subprocess.run(cmd, env={**os.environ, FAULT_ENV: "atomic_dir:after_aside"}, capture_output=True, text=True)
    assert r.returncode == FAULT_EXIT, r.stderr[-2000:]
    assert not (run / "state").exists() and (run / ".state.new").is_dir() and (run / ".state.old").is_dir()
    written = load_file(str(run / ".state.new" / "model.safetensors"))
    assert main(["-q", "train", "imitation", "--out", str(run), "--resume", "--steps", "4", "--device", "cpu"]) == 0
    assert json.loads((run / "state" / "step.json").read_text())["step"] == 4
    assert not (run / ".state.new").exists() and not (run / ".state.old").exists()
    for k, v in load_file(str(run / "state" / "model.safetensors")).items():
        assert torch.equal(v, written[k]), k
