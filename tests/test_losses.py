"""Tests of the stage-1 losses and the multi-scale discriminator (CPU, 64x64 images)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.flop_counter import FlopCounterMode

from infp.errors import InfpError
from infp.eval.vgg import VGG16Features
from infp.models.discriminator import (
    DiscriminatorConfig,
    MultiScaleDiscriminator,
    PatchOutput,
)
from infp.train.losses import (
    ImitationLoss,
    LossConfig,
    LossTerms,
    VGG16Perceptual,
    feature_matching,
    hinge_d_loss,
    hinge_g_loss,
    ms_l1,
    ssim,
    ssim_loss,
)

SIZE = 64
TINY_D = DiscriminatorConfig(channels=8, max_channels=32)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one thread is fastest, and it keeps the tests fast when another job
    holds the cores (two OpenMP threads fighting a busy core are ~100x slower here)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def images(seed: int, b: int = 2, h: int = SIZE, w: int = SIZE) -> torch.Tensor:
    """(b, 3, h, w) smooth random images in [0, 1] (upsampled noise: structure SSIM can see)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // 8, w // 8, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


# ---------------------------------------------------------------------------------- discriminator


def test_discriminator_shapes_per_scale():
    d = MultiScaleDiscriminator(TINY_D)
    out = d(images(0))
    assert len(out) == TINY_D.num_scales
    assert all(isinstance(o, PatchOutput) for o in out)
    # 64 -> 32 -> 16 -> 8 -> 7 (stride 1) -> logits 6; next scale from a 32x32 pyramid level
    assert [tuple(f.shape) for f in out[0].features] == [(2, 8, 32, 32), (2, 16, 16, 16), (2, 32, 8, 8), (2, 32, 7, 7)]
    assert tuple(out[0].logits.shape) == (2, 1, 6, 6)
    assert tuple(out[1].logits.shape) == (2, 1, 2, 2)


def test_discriminator_default_cost_at_256():
    d = MultiScaleDiscriminator(DiscriminatorConfig())
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        d(torch.rand(1, 3, 256, 256))
    assert counter.get_total_flops() < 1.5e9


# ---------------------------------------------------------------------------- reconstruction terms


def test_ms_l1():
    a, b = images(0), images(1)
    assert ms_l1(a, a).item() == 0
    assert ms_l1(a, b).item() > 0
    assert torch.allclose(ms_l1(a, b, scales=1), F.l1_loss(a, b))
    # a constant offset survives average pooling: the same error at every level
    assert ms_l1(a * 0.5 + 0.1, a * 0.5, scales=3).item() == pytest.approx(0.1, abs=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 3, 48, 80), (3, 1, 32, 32)])
def test_ssim_matches_torchmetrics(shape):
    from torchmetrics.image import StructuralSimilarityIndexMeasure

    b, c, h, w = shape
    a = images(3, b, h, w)[:, :c]
    for noise in (0.02, 0.2):
        n = (a + noise * torch.randn(a.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
        ref = StructuralSimilarityIndexMeasure(data_range=1.0)(n, a)
        assert ssim(n, a).item() == pytest.approx(ref.item(), abs=1e-4)


def test_ssim_loss_zero_for_identical_and_differentiable():
    a, b = images(0), images(1).requires_grad_(True)
    assert ssim_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    loss = ssim_loss(b, a)
    assert loss.item() > 0
    loss.backward()
    assert b.grad is not None and torch.isfinite(b.grad).all() and b.grad.abs().sum() > 0


# -------------------------------------------------------------------------------------- GAN terms


def _logits(value: float) -> list[PatchOutput]:
    return [PatchOutput([], torch.full((2, 1, 4, 4), value)), PatchOutput([], torch.full((2, 1, 2, 2), value))]


def test_hinge_signs():
    # a confident, correct D has no loss; a wrong one pays 1 + |margin| per side
    assert [x.item() for x in hinge_d_loss(_logits(2.0), _logits(-2.0))] == [0.0, 0.0]
    assert [x.item() for x in hinge_d_loss(_logits(-1.0), _logits(1.0))] == [2.0, 2.0]
    # the generator's loss falls as D scores its images as real
    assert hinge_g_loss(_logits(1.0)).item() < hinge_g_loss(_logits(-1.0)).item()
    assert hinge_g_loss(_logits(-1.0)).item() == 1.0


def test_feature_matching_zero_for_identical_and_d_frozen_in_generator_step():
    loss = ImitationLoss(LossConfig(discriminator=TINY_D))
    x = images(0)
    out = loss.disc(x)
    assert feature_matching(out, out).item() == 0
    pred = images(0).requires_grad_(True)
    terms = loss.generator(pred, x)
    assert terms.feature_matching.item() == 0 and terms.l1.item() == 0
    terms.total.backward()
    assert pred.grad is not None  # the adversarial term still pulls on pred
    assert all(p.grad is None for p in loss.disc.parameters())  # D is not trained by G's loss
    assert all(p.requires_grad for p in loss.disc.parameters())  # ...and is trainable again after it


# ------------------------------------------------------------------------------------------- VGG


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory) -> Path:
    """A randomly initialised VGG16 trunk up to relu2_2, saved as `infp weights convert` names its
    tensors (the real weights are tested in test_weights.py; here only the wiring is)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_upto_relu2_2.safetensors"
    save_file(VGG16Features("relu2_2").convs.state_dict(), str(path))
    return path


def test_imitation_loss_uses_vgg16_from_path(vgg_file, caplog):
    with caplog.at_level(logging.INFO, logger="infp.train.losses"):
        loss = ImitationLoss(LossConfig(vgg_path=str(vgg_file), vgg_upto="relu2_2", use_gan=False))
    assert f"perceptual: VGG16 up to relu2_2 from {vgg_file}" in caplog.text
    assert loss.vgg.layers == ("relu1_2", "relu2_2")
    pred = images(1).requires_grad_(True)
    terms = loss.generator(pred, images(0))
    assert set(terms.logged()) == {"total", "l1", "ssim", "vgg"}
    assert terms.vgg.item() > 0
    terms.total.backward()
    assert pred.grad.abs().sum() > 0
    assert VGG16Perceptual.from_file(vgg_file, layers=("relu1_2",))(pred, pred).item() == 0


def test_perceptual_switch_reads_the_weights_cache(vgg_file, monkeypatch, tmp_path):
    monkeypatch.setenv("INFP_WEIGHTS", str(tmp_path))
    with pytest.raises(InfpError, match="infp weights convert"):
        ImitationLoss(LossConfig(perceptual=True, use_gan=False))
    assert ImitationLoss(LossConfig(perceptual=True, vgg=0, use_gan=False)).vgg is None
    with pytest.raises(InfpError, match="vgg_upto"):
        LossConfig(vgg_upto="relu9_9")


def test_bad_vgg_files_raise_infp_error(vgg_file, tmp_path):
    from safetensors.torch import load_file

    state = load_file(str(vgg_file))
    garbage, short, wrong = tmp_path / "garbage.safetensors", tmp_path / "short.safetensors", tmp_path / "wrong.safetensors"
    garbage.write_bytes(b"not safetensors" * 10)
    save_file({k: v for k, v in state.items() if not k.startswith("conv2_2")}, str(short))
    save_file({**state, "conv1_2.weight": torch.zeros(64, 64, 1, 1)}, str(wrong))
    upto2 = ("relu1_2", "relu2_2")
    expected = [(tmp_path / "nope.safetensors", upto2, "infp weights convert"),
                (garbage, upto2, "not a readable safetensors"), (short, upto2, "too few VGG16 layers"),
                (wrong, upto2, "conv1_2.weight"), (vgg_file, ("relu1_2", "relu4_3"), "too few VGG16 layers")]
    for path, layers, words in expected:
        with pytest.raises(InfpError) as err:
            VGG16Perceptual.from_file(path, layers=layers)
        message = str(err.value)
        assert str(path) in message and "\n" not in message and words in message, (path, message)


# ------------------------------------------------------------------------------------ the full loss


def test_default_loss_logs_and_terms(caplog):
    with caplog.at_level(logging.INFO, logger="infp.train.losses"):
        loss = ImitationLoss(LossConfig(discriminator=TINY_D))
    assert ("perceptual: none (not switched on); using multi-scale L1 + SSIM + discriminator "
            "feature matching") in caplog.text
    assert loss.vgg is None and isinstance(loss.disc, MultiScaleDiscriminator)
    g = loss.generator(images(1), images(0))
    assert isinstance(g, LossTerms)
    assert set(g.logged()) == {"total", "l1", "ssim", "feature_matching", "adversarial"}
    d = loss.discriminator(images(1), images(0))
    assert set(d.logged()) == {"total", "d_real", "d_fake"}


def test_no_gan_has_no_discriminator():
    loss = ImitationLoss(LossConfig(use_gan=False, ssim=0.0))
    assert loss.disc is None
    assert set(loss.generator(images(1), images(0)).logged()) == {"total", "l1"}
    with pytest.raises(ValueError):
        loss.discriminator(images(1), images(0))
    with pytest.raises(InfpError):
        LossConfig(l1=-1.0)


def test_optimisation_lowers_reconstruction_terms():
    """A learnable image trained against a fixed target with the full (GAN) loss, D trained alongside."""
    torch.manual_seed(0)
    loss = ImitationLoss(LossConfig(discriminator=TINY_D))
    target = images(0, b=1)
    pred = torch.nn.Parameter(torch.full_like(target, 0.5) + 0.1 * torch.randn_like(target))
    g_opt = torch.optim.Adam([pred], lr=0.03)
    d_opt = torch.optim.Adam(loss.disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    first = loss.generator(pred, target).logged()
    for _ in range(40):
        d_opt.zero_grad()
        loss.discriminator(pred, target).total.backward()
        d_opt.step()
        g_opt.zero_grad()
        loss.generator(pred, target).total.backward()
        g_opt.step()
    last = loss.generator(pred, target).logged()
    assert last["l1"] < 0.5 * first["l1"]
    assert last["ssim"] < 0.5 * first["ssim"]


def test_steps_with_ddp_wrapped_discriminator(tmp_path):
    """The trainer hands `loss.disc` to Accelerate, which may wrap it in DDP: the generator step (D
    frozen, so no D gradient hooks fire) must not leave DDP's reducer waiting across iterations."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        loss = ImitationLoss(LossConfig(discriminator=TINY_D))
        loss.disc = DistributedDataParallel(loss.disc)
        d_opt = torch.optim.Adam(loss.disc.parameters(), lr=2e-4)
        pred = torch.nn.Parameter(images(1))
        for _ in range(3):
            d_opt.zero_grad()
            loss.discriminator(pred, images(0)).total.backward()
            d_opt.step()
            loss.generator(pred, images(0)).total.backward()
        assert pred.grad is not None
    finally:
        dist.destroy_process_group()


def test_region_l1_counts_only_the_regions():
    from infp.train.losses import region_l1

    pred, target = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    ones = torch.ones(2, 1, 16, 16)
    torch.testing.assert_close(region_l1(pred, target, ones), (pred - target).abs().mean())
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., 4:8, 4:8] = 1
    outside = target.clone()
    outside[..., :4, :] += 0.5  # a difference only outside the regions
    assert region_l1(outside, target, mask) == 0
    assert region_l1(pred, target, mask) > 0


def test_detail_loss_punishes_blur_more_than_a_small_shift():
    from infp.train.losses import detail_loss

    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 64, 64, generator=g)
    assert detail_loss(target, target) == 0
    blurred = F.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    shifted = target.roll(2, dims=-1)  # the same detail 2 pixels off: L1 punishes it, this barely does
    assert detail_loss(blurred, target) > 5 * detail_loss(shifted, target)
    assert F.l1_loss(shifted, target) > F.l1_loss(blurred, target)
    pred = blurred.clone().requires_grad_(True)
    loss = ImitationLoss(LossConfig(use_gan=False, detail=10.0)).generator(pred, target)
    assert loss.detail is not None and loss.detail > 0
    loss.total.backward()
    assert pred.grad.abs().sum() > 0
    with pytest.raises(InfpError, match="detail"):
        LossConfig(detail=-1.0)
