"""Stage-1 training and evaluation end to end on the tiny preset: the loss falls, a resumed run is
the same run, bad states are refused, and the CLI trains and evaluates."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from infp.cli import main
from infp.data.clip import list_clips
from infp.data.pairs import PairSampler, load_clips
from infp.errors import InfpError
from infp.models import Imitator, imitator_preset
from infp.train.imitation import TrainConfig, train_imitation
from infp.train.losses import LossConfig
from infp.weights import weights_dir

TINY = imitator_preset("tiny")


def _train(data, out, steps, resume=False, dtype="float32", **kw):
    cfg = TrainConfig(steps=steps, batch_size=2, lr=1e-3, warmup=1, save_every=2, sample_every=2, log_every=1, **kw)
    return train_imitation([data], out, TINY, cfg, LossConfig(), resume=resume, progress=False, cpu=True,
                           dtype=dtype)


def test_pairs_are_reproducible_and_mirrored(synth_clips):
    frames = load_clips(list_clips(synth_clips), 64)
    sampler = PairSampler(frames)
    a = sampler.sample(np.random.default_rng([0, 7]), 3)
    b = sampler.sample(np.random.default_rng([0, 7]), 3)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y)
    assert a.source.shape == (3, 3, 64, 64) and 0 <= float(a.source.min()) and float(a.source.max()) <= 1


def test_mouth_pairs_draw_driving_mouths_unlike_the_source(synth_clips):
    from infp.face.expression import mouth_opening

    frames = load_clips(list_clips(synth_clips), 64)

    def mean_gap(q: float) -> float:
        sampler, rng = PairSampler(frames, mouth_pairs=q), np.random.default_rng(1)
        gaps = []
        for _ in range(400):
            k, i, j = sampler.indices(rng)
            m = mouth_opening(frames[k].points[[i, j]])
            gaps.append(abs(m[1] - m[0]))
        return float(np.mean(gaps))

    assert mean_gap(1.0) > 1.3 * mean_gap(0.0)


def test_training_lowers_the_loss(synth_clips):
    """A few tiny steps on one fixed batch with the trainer's loss: it falls, and so does the
    reconstruction in it. (With the image loss alone E_m drifts and carries the untrained keypoint
    decoder's keypoints, hence the prior flow, along: the loss then rose 1.2-4.2x in 25 steps on 3 of 4
    seeds without the eye window and on 3 of 6 with it. The keypoint term anchors them; with it every
    seed fell to 0.43-0.52 of the start.)"""
    from infp.train.losses import ImitationLoss

    torch.manual_seed(0)
    b = PairSampler(load_clips(list_clips(synth_clips), 64), augment=False).sample(np.random.default_rng(0), 4)
    model, loss = Imitator(TINY), ImitationLoss(LossConfig(use_gan=False))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    total, image = [], []
    for _ in range(25):
        out = model(b.source, b.source_rep, b.driving_rep)
        g = loss.generator(out.image, b.driving, b.driving_regions, (out.keypoints, (b.source_points, b.driving_points)),
                           out.flow.correction, out.synthesis)
        opt.zero_grad()
        g.total.backward()
        opt.step()
        total.append(float(g.total.detach()))
        image.append(float(g.l1.detach() + g.ssim.detach()))
    assert total[-1] < 0.7 * total[0], total
    assert image[-1] < 0.9 * image[0], image


def test_run_writes_state_checkpoint_samples_logs(synth_clips, tmp_path):
    r = _train(synth_clips, tmp_path / "run", steps=2)
    assert r.step == 2 and r.items_per_second > 0
    assert (tmp_path / "run" / "state" / "step.json").is_file()
    assert (tmp_path / "run" / "samples" / "step_0000002.png").is_file()
    assert list((tmp_path / "run" / "logs").rglob("events.out.tfevents*"))
    ema = Imitator.from_pretrained(tmp_path / "run" / "checkpoint", preset="tiny")
    assert json.loads((tmp_path / "run" / "checkpoint" / "config.json").read_text())["training"]["step"] == 2
    assert ema.cfg == TINY


def test_resume_continues_exactly(synth_clips, tmp_path):
    _train(synth_clips, tmp_path / "straight", steps=4)
    _train(synth_clips, tmp_path / "split", steps=2)
    _train(synth_clips, tmp_path / "split", steps=4, resume=True)
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoint" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_bf16_autocast_trains_close_to_fp32_and_resumes_in_fp32(synth_clips, tmp_path):
    """--dtype bfloat16 runs the forward passes in bfloat16 (weights stay float32): the same run, not the
    same numbers; the dtype is a runtime setting, so a bfloat16 run may resume in float32."""
    _train(synth_clips, tmp_path / "fp32", steps=2)
    _train(synth_clips, tmp_path / "bf16", steps=2, dtype="bfloat16")
    a = load_file(str(tmp_path / "fp32" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "bf16" / "checkpoint" / "model.safetensors"))
    assert all(b[k].dtype == a[k].dtype for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 arithmetic did run
    torch.testing.assert_close(a, b, atol=0.05, rtol=0)  # two steps of lr 1e-3 from the same start
    _train(synth_clips, tmp_path / "bf16", steps=3, resume=True)
    assert json.loads((tmp_path / "bf16" / "state" / "step.json").read_text())["step"] == 3
    with pytest.raises(InfpError, match="unknown training dtype"):
        _train(synth_clips, tmp_path / "fp16", steps=1, dtype="float16")


def test_resume_and_overwrite_are_refused(synth_clips, tmp_path):
    with pytest.raises(InfpError, match="no training state"):
        _train(synth_clips, tmp_path / "empty", steps=2, resume=True)
    _train(synth_clips, tmp_path / "run", steps=1)
    with pytest.raises(InfpError, match="already holds a training run"):
        _train(synth_clips, tmp_path / "run", steps=2)
    with pytest.raises(InfpError, match="data folder not found"):
        _train(tmp_path / "missing", tmp_path / "other", steps=1)


def test_cli_train_then_eval(synth_clips, tmp_path, capsys):
    from safetensors.torch import save_file

    from infp.eval.vgg import VGG16Features

    vgg = tmp_path / "vgg16_upto_relu2_2.safetensors"  # random weights: the wiring, not the loss, is tested
    save_file(VGG16Features("relu2_2").convs.state_dict(), str(vgg))
    run = tmp_path / "run"
    assert main(["-q", "train", "imitation", "--data", str(synth_clips), "--out", str(run), "--preset", "tiny",
                 "--steps", "2", "--batch-size", "2", "--device", "cpu", "--detail-weight", "2",
                 "--perceptual-weight", "0.5", "--perceptual-upto", "relu2_2", "--vgg", str(vgg),
                 "--dtype", "bfloat16"]) == 0
    loss = json.loads((run / "run.json").read_text())["loss"]
    assert loss["detail"] == 2.0 and loss["vgg"] == 0.5 and loss["perceptual"] and loss["vgg_upto"] == "relu2_2"
    assert main(["-q", "train", "imitation", "--data", str(synth_clips), "--out", str(tmp_path / "x"),
                 "--steps", "1", "--resume"]) == 2
    assert "no training state" in capsys.readouterr().err
    portraits = tmp_path / "portraits"
    portraits.mkdir()
    import cv2
    from skimage import data

    cv2.imwrite(str(portraits / "astronaut.png"), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    out = tmp_path / "eval"
    assert main(["-q", "eval", "imitation", "--data", str(synth_clips), "--out", str(out), "--checkpoint",
                 str(run / "checkpoint"), "--portraits", str(portraits), "--every", "5", "--grid-clips", "1",
                 "--grid-frames", "2", "--no-fid"]) == 0
    report = json.loads((out / "imitation.json").read_text())
    assert report["model"]["n_frames"] == report["baseline"]["n_frames"] == 10
    assert 0 < report["baseline"]["ssim"] <= 1 and report["model"]["fid"] is None
    assert report["model"]["sharpness"] > 0 and "sharpness model" in (out / "imitation.md").read_text()
    if (weights_dir() / "lpips_vgg.safetensors").is_file():  # made by `make setup` (infp weights convert)
        assert 0 < report["model"]["lpips"] < 1 and 0 < report["baseline"]["lpips"] < 1
    if importlib.util.find_spec("dlib") and importlib.util.find_spec("face_recognition_models"):
        ident = report["identity"]
        assert ident["n_frames"] == 10 and "truth to source" in (out / "imitation.md").read_text()
    assert report["model"]["detail"] > 0 and "detail model" in (out / "imitation.md").read_text()
    assert report["transfer"]["n_frames"] == 10 and 0 <= report["transfer"]["found"] <= 1
    assert "mouth r model" in (out / "imitation.md").read_text() and "open-mouth L1" in (out / "imitation.md").read_text()
    grid = cv2.imread(str(out / "cross_identity.png"))
    assert grid.shape == (2 * 64, 4 * 64, 3)  # portrait | the clip's neutral frame | 2 driving frames
    assert "copy-source" in (out / "imitation.md").read_text()
    [cross] = json.loads((out / "cross_identity.json").read_text())  # one clip drove the portrait
    assert cross["n"] <= 10 and "mouth gain" in (out / "imitation.md").read_text()
    assert main(["-q", "eval", "imitation", "--data", str(synth_clips), "--out", str(out), "--checkpoint",
                 str(tmp_path / "nowhere")]) == 2


def test_cli_eval_with_fid_features(synth_clips, tmp_path):
    """FID through the real --inception path, with a small TorchScript stand-in for Inception."""
    from test_metrics import TinyFeatures, scripted

    run = tmp_path / "run"
    _train(synth_clips, run, steps=1)
    weights = scripted(TinyFeatures(), tmp_path / "standin.pt")
    out = tmp_path / "eval"
    assert main(["-q", "eval", "imitation", "--data", str(synth_clips), "--out", str(out), "--checkpoint",
                 str(run / "checkpoint"), "--inception", str(weights), "--every", "10", "--no-transfer"]) == 0
    report = json.loads((out / "imitation.json").read_text())
    assert report["model"]["fid"] is not None and report["model"]["fid"] >= 0
    assert report["baseline"]["fid"] is not None
    assert "FID: model" in (out / "imitation.md").read_text() and report["transfer"] is None


def test_init_from_with_a_frozen_motion_encoder(synth_clips, tmp_path):
    """Fine-tuning from a checkpoint with E_m frozen keeps the motion latent space (and so any stage-2
    model trained on it) unchanged, while the renderer learns."""
    torch.manual_seed(1)
    Imitator(TINY).save_pretrained(tmp_path / "start")
    _train(synth_clips, tmp_path / "ft", steps=2, init_from=str(tmp_path / "start"), freeze_motion_encoder=True)
    start = load_file(str(tmp_path / "start" / "model.safetensors"))
    tuned = load_file(str(tmp_path / "ft" / "checkpoint" / "model.safetensors"))
    for k in start:
        if k.startswith("motion_encoder."):
            torch.testing.assert_close(start[k], tuned[k], msg=k)
    assert any(not torch.equal(start[k], tuned[k]) for k in start if k.startswith("decoder."))


def test_pair_regions_follow_the_driving_face(synth_clips):
    """The region weights cover the driving frame's eyes and lips."""
    clip = load_clips(list_clips(synth_clips), 64)[0]
    b = PairSampler([clip], augment=False).sample(np.random.default_rng(3), 2)
    assert b.driving_regions.shape == (2, 1, 64, 64)
    frac = float(b.driving_regions.mean())
    assert 0.01 < frac < 0.3, frac
    mirrored = PairSampler([clip]).sample(np.random.default_rng(3), 8)
    for rep, regions in zip(mirrored.driving_rep, mirrored.driving_regions):
        lit = rep.sum(0) > 0  # the hybrid representation keeps the eye and lip regions (and outline dots)
        assert float(lit[regions[0] > 0.5].float().mean()) > 0.8, "the regions lie on the kept eyes and lips"
