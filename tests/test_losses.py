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
from infp.models.discriminator import (
    DiscriminatorConfig,
    MultiScaleDiscriminator,
    PatchOutput,
)
from infp.train.losses import (
    ImitationLoss,
    LossConfig,
    LossTerms,
    VGGPerceptual,
    feature_matching,
    hinge_d_loss,
    hinge_g_loss,
    ms_l1,
    ssim,
    ssim_loss,
)

SIZE = 64
TINY_D = DiscriminatorConfig(channels=8, max_channels=32)


class Opaque:
    """Any non-tensor object: torch.load(weights_only=True) must refuse to unpickle it."""


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
def vgg_files(tmp_path_factory) -> dict[str, Path]:
    """A randomly initialised stand-in saved the way torchvision's file is: `features.*` keys (plus the
    layers past relu5_1 and a classifier, which must be ignored), as .pth, .safetensors, and .pth
    with the prefix stripped."""
    d = tmp_path_factory.mktemp("vgg")
    torch.manual_seed(0)
    state = VGGPerceptual().state_dict()
    assert list(state)[:2] == ["features.0.weight", "features.0.bias"]
    full = dict(state)
    full["features.30.weight"] = torch.randn(512, 512, 3, 3) * 0.01
    full["features.30.bias"] = torch.zeros(512)
    full["classifier.0.weight"] = torch.randn(64, 32)
    files = {"pth": d / "vgg19.pth", "safetensors": d / "vgg19.safetensors", "stripped": d / "stripped.pt"}
    torch.save(full, files["pth"])
    save_file(full, str(files["safetensors"]))
    torch.save({k.removeprefix("features."): v for k, v in state.items()}, files["stripped"])
    files["reference"] = state  # type: ignore[assignment]
    return files


@pytest.mark.parametrize("kind", ["pth", "safetensors", "stripped"])
def test_vgg_loads_from_file(vgg_files, kind):
    vgg = VGGPerceptual.from_file(vgg_files[kind])
    ref = vgg_files["reference"]
    assert all(torch.equal(v, ref[k]) for k, v in vgg.state_dict().items())
    assert not vgg.training and not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training
    a, b = images(0), images(1)
    assert vgg(a, a).item() == 0
    assert vgg(a, b).item() > 0


def test_imitation_loss_uses_vgg_from_path(vgg_files, caplog):
    with caplog.at_level(logging.INFO, logger="infp.train.losses"):
        loss = ImitationLoss(LossConfig(vgg_path=str(vgg_files["safetensors"]), use_gan=False))
    assert f"perceptual: VGG19 from {vgg_files['safetensors']}" in caplog.text
    pred = images(1).requires_grad_(True)
    terms = loss.generator(pred, images(0))
    assert set(terms.logged()) == {"total", "l1", "ssim", "vgg"}
    assert terms.vgg.item() > 0
    terms.total.backward()
    assert pred.grad.abs().sum() > 0


def _bad_files(tmp: Path, good: dict) -> dict[str, Path]:
    ref = good["reference"]
    files = {
        "missing": tmp / "nope.pth",
        "suffix": tmp / "vgg.bin",
        "garbage_pth": tmp / "garbage.pth",
        "garbage_st": tmp / "garbage.safetensors",
        "pickled_object": tmp / "object.pth",
        "not_a_dict": tmp / "tensor.pt",
        "missing_key": tmp / "missing_key.pth",
        "wrong_shape": tmp / "wrong_shape.safetensors",
    }
    files["suffix"].write_bytes(b"x" * 10)
    files["garbage_pth"].write_bytes(b"not a zip file" * 10)
    files["garbage_st"].write_bytes(b"not safetensors" * 10)
    torch.save({"features.0.weight": Opaque()}, files["pickled_object"])
    torch.save(torch.zeros(3), files["not_a_dict"])
    torch.save({k: v for k, v in ref.items() if k != "features.28.bias"}, files["missing_key"])
    save_file({**ref, "features.2.weight": torch.zeros(64, 64, 1, 1)}, str(files["wrong_shape"]))
    return files


def test_bad_vgg_files_raise_infp_error(vgg_files, tmp_path):
    expected_words = {"missing": "not found", "suffix": "unsupported", "missing_key": "features.28.bias",
                      "wrong_shape": "features.2.weight", "pickled_object": "weights_only"}
    for name, path in _bad_files(tmp_path, vgg_files).items():
        with pytest.raises(InfpError) as err:
            VGGPerceptual.from_file(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message, name
        assert expected_words.get(name, "VGG19") in message, (name, message)
    with pytest.raises(InfpError):
        ImitationLoss(LossConfig(vgg_path=str(tmp_path / "nope.safetensors")))


# ------------------------------------------------------------------------------------ the full loss


def test_default_loss_logs_and_terms(caplog):
    with caplog.at_level(logging.INFO, logger="infp.train.losses"):
        loss = ImitationLoss(LossConfig(discriminator=TINY_D))
    assert ("perceptual: none (no VGG weights given); using multi-scale L1 + SSIM + discriminator "
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
