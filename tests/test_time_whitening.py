"""Time whitening (models/time_whitening.py): the filter flattens a known temporal spectrum, is exactly
inverted, maps white errors back as smooth ones, is stored with the weights, and is fitted by training."""

from __future__ import annotations

import json

import pytest
import torch

from infp.cli import main
from infp.diffusion import CondDropout, DiffusionConfig, denoising_loss
from infp.diffusion.sampling import sample_window
from infp.diffusion.training import MotionBatch
from infp.models.motion_config import motion_preset
from infp.models.motion_generator import MotionGenerator
from infp.models.time_whitening import TimeWhitening

W = 50


def _smooth_cov(frames: int = W, length: float = 6.0) -> torch.Tensor:
    """Covariance of a smooth random process (squared-exponential, `length` frames) plus a little noise."""
    t = torch.arange(frames, dtype=torch.float64)
    return torch.exp(-((t[:, None] - t[None]) ** 2) / (2 * length**2)) + 1e-3 * torch.eye(frames)


def test_fit_flattens_the_spectrum_and_inverts_exactly():
    tw = TimeWhitening(W)
    cov = _smooth_cov()
    evals = tw.fit(cov, floor=0.0)
    assert evals[0] > 100 * evals[-1], "a smooth process: most power in few temporal modes"
    h = tw.filter.double()
    torch.testing.assert_close(h @ cov @ h.T, torch.eye(W, dtype=torch.float64), atol=1e-3, rtol=0)
    x = torch.randn(3, W, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(tw.invert(tw(x)), x, atol=1e-3, rtol=1e-3)


def test_a_white_error_comes_back_shaped_like_the_data():
    """The point of it: the same white error in the diffused space is far smoother once mapped back."""
    tw = TimeWhitening(W)
    tw.fit(_smooth_cov())
    e = torch.randn(64, W, 8, generator=torch.Generator().manual_seed(1))
    back = tw.invert(e)
    rough = lambda x: float(x.diff(dim=1).pow(2).mean() / x.pow(2).mean())  # 2 for white noise
    assert rough(e) == pytest.approx(2.0, rel=0.1)
    assert rough(back) < 0.1


def test_floor_bounds_the_gain():
    """Temporal modes without power are not blown up: their eigenvalue is floored at a share of the mean."""
    tw = TimeWhitening(W)
    power = torch.logspace(0, -12, W, dtype=torch.float64)
    evals = tw.fit(torch.diag(power), floor=1e-3)
    assert float(evals[-1]) == pytest.approx(1e-3 * float(power.mean()), rel=0.01)
    assert float(torch.linalg.svdvals(tw.filter).max()) == pytest.approx(float(evals[-1]) ** -0.5, rel=1e-3)


def test_config_needs_relative_windows_and_no_band_emphasis():
    with pytest.raises(ValueError, match="relative"):
        motion_preset("tiny", time_whitening=True)
    with pytest.raises(ValueError, match="choose one"):
        motion_preset("tiny", time_whitening=True, band_emphasis=2.0, relative=True)
    assert MotionGenerator(motion_preset("tiny", relative=True)).time is None


def test_loss_and_sampler_work_in_the_whitened_space_and_the_filter_is_saved(tmp_path):
    """An untrained network (zero output in the whitened space) under clean-latent prediction: the loss is
    the error of the latents themselves (offsets and their velocity), not of y; a sampled window maps back
    to the context's end; the fitted filter survives a save and load."""
    cfg = motion_preset("tiny", relative=True, time_whitening=True)
    m = MotionGenerator(cfg).eval()
    m.time.fit(_smooth_cov(cfg.window, 3.0))
    g = torch.Generator().manual_seed(0)
    rows = lambda: torch.randn(2, cfg.audio_per_frame * cfg.window, cfg.audio_input_dim, generator=g)
    lat = lambda n: torch.randn(2, n, cfg.motion_dim, generator=g)
    b = MotionBatch(rows(), rows(), lat(cfg.window), lat(cfg.context), lat(cfg.style_frames))
    diff = DiffusionConfig(prediction="sample")
    offsets = b.target - b.context[:, -1:]
    loss = denoising_loss(m, b, diff.training_scheduler(), torch.Generator().manual_seed(0), CondDropout(),
                          velocity_weight=1.0).item()
    expected = (offsets**2).mean() + (offsets.diff(dim=1) ** 2).mean()  # scored on the latents, not on y
    assert loss == pytest.approx(expected.item(), rel=1e-4)
    cond = m.condition(b.agent, b.partner, m.style(None, 2), b.context)
    with torch.no_grad():
        x = sample_window(m, diff.sampling_scheduler(4), cond, 2.0, torch.Generator().manual_seed(0))
        assert torch.allclose(x, cond.anchor.expand_as(x), atol=0.1)
        with pytest.raises(ValueError, match="blending"):
            sample_window(m, diff.sampling_scheduler(4), cond, 2.0, torch.Generator().manual_seed(0), b.target[:, :3])
    m.save_pretrained(tmp_path / "ck")
    back = MotionGenerator.from_pretrained(tmp_path / "ck")
    torch.testing.assert_close(back.time.filter, m.time.filter)
    torch.testing.assert_close(back.time.inverse, m.time.inverse)


def test_training_fits_the_filter_on_the_windows(synth_clips, tmp_path):
    """`--time-whitening` reaches the model; the trainer fits H on the training windows (not the identity
    it starts from), and the exported checkpoint carries it."""
    imitator = tmp_path / "imitator"
    from infp.models import Imitator, imitator_preset

    torch.manual_seed(0)
    Imitator(imitator_preset("tiny")).save_pretrained(imitator)
    main(["train", "motion", "--data", str(synth_clips), "--imitator", str(imitator), "--out", str(tmp_path / "r"),
          "--preset", "tiny", "--steps", "1", "--batch-size", "2", "--device", "cpu", "--relative",
          "--prediction", "sample", "--time-whitening"])
    m = MotionGenerator.from_pretrained(tmp_path / "r" / "checkpoint")
    assert m.cfg.time_whitening and json.loads((tmp_path / "r" / "run.json").read_text())["model"]["time_whitening"]
    assert not torch.allclose(m.time.filter, torch.eye(m.cfg.window))
    torch.testing.assert_close(m.time.filter @ m.time.inverse, torch.eye(m.cfg.window), atol=1e-3, rtol=0)
    assert main(["train", "motion", "--data", str(synth_clips), "--imitator", str(imitator), "--out",
                 str(tmp_path / "bad"), "--preset", "tiny", "--steps", "1", "--device", "cpu", "--time-whitening"]) == 2
