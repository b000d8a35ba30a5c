"""Stage-2 training end to end on the tiny presets: the CLI trains, a resumed run is the same run, and
the stage-1 checkpoint a run was started with may not change under it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from infp.cli import main
from infp.diffusion import DiffusionConfig
from infp.errors import InfpError
from infp.models import Imitator, imitator_preset
from infp.models.motion_config import motion_preset
from infp.models.motion_generator import MotionGenerator
from infp.train.motion import MotionTrainConfig, train_motion


@pytest.fixture(scope="module")
def imitator(tmp_path_factory):
    path = tmp_path_factory.mktemp("imitator") / "tiny"
    torch.manual_seed(0)
    Imitator(imitator_preset("tiny")).save_pretrained(path)
    return path


def _train(data, imitator, out, steps, resume=False, cache=None):
    cfg = MotionTrainConfig(steps=steps, one_sided_steps=2, batch_size=4, warmup=1, save_every=2, sample_every=2,
                            log_every=1, min_speech=0.0)
    return train_motion([data], imitator, out, motion_preset("tiny"), cfg, DiffusionConfig(), resume=resume,
                        progress=False, cpu=True, cache_dir=cache)


def test_cli_trains_and_exports_a_checkpoint(synth_clips, imitator, tmp_path):
    out = tmp_path / "run"
    main(["train", "motion", "--data", str(synth_clips), "--imitator", str(imitator), "--out", str(out),
          "--preset", "tiny", "--steps", "3", "--batch-size", "2", "--one-sided-steps", "1", "--device", "cpu"])
    model = MotionGenerator.from_pretrained(out / "checkpoint", preset="tiny")
    card = json.loads((out / "checkpoint" / "config.json").read_text())
    assert card["training"]["step"] == 3 and card["training"]["imitator_fingerprint"]
    assert DiffusionConfig.from_checkpoint(out / "checkpoint") == DiffusionConfig()
    assert not torch.equal(model.latent_whiten, torch.eye(model.cfg.motion_dim)), "the data's whitening is stored"
    assert list((out / "logs").rglob("events.out.tfevents*"))
    # a resumed run needs no --data: run.json has it; a new run without it is refused
    main(["train", "motion", "--out", str(out), "--steps", "4", "--resume", "--device", "cpu"])
    assert json.loads((out / "checkpoint" / "config.json").read_text())["training"]["step"] == 4
    assert main(["train", "motion", "--out", str(tmp_path / "other"), "--preset", "tiny", "--device", "cpu"]) == 2


def test_visible_directions_are_those_that_move_the_keypoints(imitator):
    import numpy as np

    from infp.train.motion import visible_directions

    model = Imitator.from_pretrained(imitator)
    z = model.cfg.motion_dim
    cov = np.diag(np.logspace(0, -8, z))  # the last directions barely vary
    every = visible_directions(model, np.zeros(z), cov, 0.0)
    assert every.shape == (z,) and every.all()
    assert visible_directions(model, np.zeros(z), cov, 1e9).tolist() == [True] + [False] * (z - 1)  # the first always
    some = visible_directions(model, np.zeros(z), cov, 0.05)
    assert some[0] and not some[-1]  # a direction of std 1e-4 moves nothing visibly


def test_resume_continues_exactly(synth_clips, imitator, tmp_path):
    cache = tmp_path / "cache"  # shared: the latents are computed once
    _train(synth_clips, imitator, tmp_path / "straight", steps=4, cache=cache)
    _train(synth_clips, imitator, tmp_path / "split", steps=2, cache=cache)
    assert json.loads((tmp_path / "split" / "run.json").read_text())["cache"] == str(cache.resolve())
    _train(synth_clips, imitator, tmp_path / "split", steps=4, resume=True)  # finds its cache in run.json
    assert not (tmp_path / "split" / "cache").exists()
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_ablation_flags_reach_the_model(synth_clips, imitator, tmp_path):
    main(["train", "motion", "--data", str(synth_clips), "--imitator", str(imitator), "--out", str(tmp_path / "r"),
          "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--no-memory", "--no-style", "--device", "cpu",
          "--audio-dilation", "3", "--velocity-weight", "0.5", "--audio-film", "--snr-gamma", "5", "--relative",
          "--band-emphasis", "2"])
    cfg = MotionGenerator.from_pretrained(tmp_path / "r" / "checkpoint").cfg
    assert not cfg.use_memory and not cfg.use_style and cfg.audio_dilation == 3 and cfg.audio_film
    assert cfg.relative and cfg.band_emphasis == 2.0
    train = json.loads((tmp_path / "r" / "run.json").read_text())["train"]
    assert train["velocity_weight"] == 0.5 and train["snr_gamma"] == 5.0


def test_a_rest_anchored_model_trains_and_generates_about_the_portrait(synth_clips, imitator, tmp_path):
    """`--rest-anchor` and `--rest-return` reach the model; an untrained clean-latent model generates the
    portrait's own latent (its rest, and where each window's context ends) for the whole conversation."""
    from infp.diffusion.sampling import generate

    main(["train", "motion", "--data", str(synth_clips), "--imitator", str(imitator), "--out", str(tmp_path / "r"),
          "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--device", "cpu", "--rest-anchor", "--rest-return", "5"])
    m = MotionGenerator.from_pretrained(tmp_path / "r" / "checkpoint")
    assert m.cfg.rest_anchor and not m.cfg.relative and m.cfg.rest_return == 5.0
    # no expression space fits the tiny imitator: the clips rest at their typical latents, as the card says
    assert json.loads((tmp_path / "r" / "checkpoint" / "config.json").read_text())["training"]["rest"] == "typical"
    fresh = MotionGenerator(m.cfg).eval()  # zero output layer, the trained model's whitening
    fresh.load_state_dict({k: v for k, v in m.state_dict().items() if k.startswith("latent_")}, strict=False)
    portrait = m.denormalize(torch.randn(m.cfg.motion_dim, generator=torch.Generator().manual_seed(0)) * 0.5)
    rows = torch.randn(m.cfg.audio_per_frame * 30, m.cfg.audio_input_dim, generator=torch.Generator().manual_seed(1))
    z = generate(fresh, DiffusionConfig(prediction="sample"), rows, rows, portrait, steps=4)
    assert z.shape == (30, m.cfg.motion_dim)
    kept = fresh.generated_directions()
    torch.testing.assert_close(fresh.normalize(z)[:, kept], fresh.normalize(portrait)[kept].expand(30, -1), atol=0.05,
                               rtol=0)
    # both anchors at once: refused before any work
    assert main(["train", "motion", "--data", str(synth_clips), "--imitator", str(imitator), "--out", str(tmp_path / "x"),
                 "--preset", "tiny", "--steps", "1", "--device", "cpu", "--rest-anchor", "--relative"]) == 2
    assert not (tmp_path / "x").exists()


def test_a_run_from_before_the_velocity_loss_resumes_without_it(synth_clips, imitator, tmp_path):
    run = tmp_path / "run"
    _train(synth_clips, imitator, run, steps=1, cache=tmp_path / "cache")
    saved = json.loads((run / "run.json").read_text())
    del saved["train"]["velocity_weight"]  # as the runs written before it existed
    (run / "run.json").write_text(json.dumps(saved))
    _train(synth_clips, imitator, run, steps=2, resume=True, cache=tmp_path / "cache")
    assert json.loads((run / "run.json").read_text())["train"]["velocity_weight"] == 0.0


def test_resume_refuses_a_changed_imitator(synth_clips, imitator, tmp_path):
    import shutil

    moved = tmp_path / "imi"
    shutil.copytree(imitator, moved)
    _train(synth_clips, moved, tmp_path / "run", steps=1)
    torch.manual_seed(5)
    Imitator(imitator_preset("tiny")).save_pretrained(moved)  # different weights at the same path
    with pytest.raises(InfpError, match="stage-1 checkpoint changed"):
        _train(synth_clips, moved, tmp_path / "run", steps=2, resume=True)


def test_ema_warms_up(synth_clips, imitator, tmp_path):
    """After a few steps the exported EMA weights are mostly the trained ones, not the initial ones
    (a constant 0.999 would keep >99% of the zero-initialised output layer)."""
    _train(synth_clips, imitator, tmp_path / "run", steps=4, cache=tmp_path / "cache")
    ema = load_file(str(tmp_path / "run" / "checkpoint" / "model.safetensors"))["denoiser.out.weight"]
    raw = load_file(str(tmp_path / "run" / "state" / "model.safetensors"))["denoiser.out.weight"]
    assert raw.norm() > 0 and ema.norm() > 0.5 * raw.norm()


def test_a_one_track_model_hears_silence_on_the_other_track(synth_clips, imitator, tmp_path):
    """The switching baseline's speaker (--hears agent) is trained with the partner's track replaced by the
    features of digital silence, which is what it gets at generation time; its checkpoint records it."""
    from infp.audio.mel import LogMel
    from infp.data.motion import WindowBatch
    from infp.train.motion import _to_batch, silence_features

    silence = silence_features(LogMel())
    assert torch.allclose(silence, torch.from_numpy(LogMel()(torch.zeros(640 * 8).numpy())[10]))
    model = MotionGenerator(motion_preset("tiny"))
    z = torch.zeros(2, model.cfg.window, model.cfg.motion_dim)
    b = WindowBatch(torch.randn(2, 8, 80), torch.randn(2, 8, 80), z, z[:, :2], z[:, :3], torch.zeros(2, dtype=torch.bool))
    speaker = _to_batch(model, b, "cpu", "agent", silence)
    assert torch.equal(speaker.agent, b.agent) and (speaker.partner == silence).all()
    listener = _to_batch(model, b, "cpu", "partner", silence)
    assert torch.equal(listener.partner, b.partner) and (listener.agent == silence).all()
    out = tmp_path / "speaker"
    main(["train", "motion", "--data", str(synth_clips), "--imitator", str(imitator), "--out", str(out),
          "--preset", "tiny", "--steps", "2", "--batch-size", "2", "--one-sided-steps", "1", "--device", "cpu",
          "--hears", "agent"])
    assert json.loads((out / "checkpoint" / "config.json").read_text())["training"]["hears"] == "agent"
