"""Band emphasis (models/band_emphasis.py): the filter louder in the nod band, exactly inverted, and
the stage-2 loss and sampler working in its space."""

from __future__ import annotations

import math

import pytest
import torch

from infp.diffusion import CondDropout, DiffusionConfig, denoising_loss
from infp.diffusion.sampling import sample_window
from infp.diffusion.training import MotionBatch
from infp.models.band_emphasis import BandEmphasis
from infp.models.motion_config import motion_preset
from infp.models.motion_generator import MotionGenerator

FPS, W = 25, 50


def _gain(band: BandEmphasis, hz: float) -> float:
    """Amplitude gain for a sinusoid, measured away from the window's edges."""
    t = torch.arange(W, dtype=torch.float32)
    x = torch.sin(2 * math.pi * hz * t / FPS).view(1, W, 1)
    return float(band(x)[0, 15:35].norm() / x[0, 15:35].norm())


def test_the_nod_band_is_louder_and_the_rest_is_kept():
    band = BandEmphasis(W, 3.0)
    assert _gain(band, 2.0) == pytest.approx(1 + 3 * 0.71, abs=0.1)  # the peak: 1 + k * (DoG gain ~0.71)
    assert _gain(band, 2.0) > _gain(band, 1.0) > 1.5 and _gain(band, 2.0) > _gain(band, 4.0) > 1.5
    assert _gain(band, 10.0) == pytest.approx(1.0, abs=0.05)  # fast jitter is neither louder nor softer
    const = torch.full((1, W, 2), 0.7)
    torch.testing.assert_close(band(const), const)  # a held pose stays as it is, edges included
    assert torch.equal(BandEmphasis(W, 0.0).filter, torch.eye(W))


def test_invert_undoes_the_filter():
    band = BandEmphasis(W, 3.0)
    x = torch.randn(3, W, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(band.invert(band(x)), x, atol=1e-5, rtol=0)
    assert torch.linalg.svdvals(band.filter).min() > 0.9, "well conditioned: the inverse amplifies no error"


def test_config_needs_relative_windows_and_a_non_negative_emphasis():
    with pytest.raises(ValueError, match="relative"):
        motion_preset("tiny", band_emphasis=2.0)
    with pytest.raises(ValueError, match=">= 0"):
        motion_preset("tiny", band_emphasis=-1.0, relative=True)
    assert MotionGenerator(motion_preset("tiny", relative=True)).band is None


def test_loss_targets_the_emphasised_offsets_and_the_sampler_maps_back():
    """An untrained network (zero output) under clean-latent prediction: the loss is the emphasised
    offsets' mean square, and a sampled window maps back to the context's end, where it stays."""
    cfg = motion_preset("tiny", relative=True, band_emphasis=3.0)
    m = MotionGenerator(cfg).eval()
    g = torch.Generator().manual_seed(0)
    rows = lambda: torch.randn(2, cfg.audio_per_frame * cfg.window, cfg.audio_input_dim, generator=g)
    lat = lambda n: torch.randn(2, n, cfg.motion_dim, generator=g)
    b = MotionBatch(rows(), rows(), lat(cfg.window), lat(cfg.context), lat(cfg.style_frames))
    diff = DiffusionConfig(prediction="sample")
    offsets = b.target - b.context[:, -1:]
    loss = denoising_loss(m, b, diff.training_scheduler(), torch.Generator().manual_seed(0), CondDropout()).item()
    assert loss == pytest.approx((m.band(offsets) ** 2).mean().item(), rel=1e-5)
    assert loss > (offsets**2).mean().item()
    cond = m.condition(b.agent, b.partner, m.style(None, 2), b.context)
    with torch.no_grad():
        x = sample_window(m, diff.sampling_scheduler(4), cond, 2.0, torch.Generator().manual_seed(0))
        assert torch.allclose(x, cond.anchor.expand_as(x), atol=0.1)
        with pytest.raises(ValueError, match="blending"):
            sample_window(m, diff.sampling_scheduler(4), cond, 2.0, torch.Generator().manual_seed(0), b.target[:, :3])
