"""LPIPS, VGG variant (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric", v0.1 linear heads): the distance reviewers read beside SSIM and PSNR, since those
two reward a blurred guess.

Definition, for images x, y: VGG16 features at relu1_2, relu2_2, relu3_3, relu4_3, relu5_3; each
feature vector unit-normalised over channels (f / (||f|| + 1e-10)); the squared difference weighted
per channel by the layer's learned non-negative 1x1 head w_l; averaged over space; summed over the
five layers:

    d(x, y) = sum_l mean_{h, w} sum_c w_{l, c} (f^l_{hwc}(x) / ||f^l_{hw}(x)|| - f^l_{hwc}(y) / ||f^l_{hw}(y)||)^2

Inputs in [0, 1] (LPIPS is defined on [-1, 1] with its scaling layer, which is the ImageNet
normalisation of [0, 1] images: see infp.eval.vgg). 0 for identical images; larger is more different
(about 0.1 to 0.2 for a mild blur of a face, 0.5 and up for unrelated images).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from infp.errors import InfpError
from infp.eval.vgg import TAPS, VGG16Features, load_vgg16
from infp.weights import LPIPS_CHANNELS, LPIPS_FILE, weights_dir

EPS = 1e-10  # LPIPS's normalisation epsilon


class LPIPS(nn.Module):
    """`forward(x, y)`: (B, 3, H, W) in [0, 1] each -> (B,) distances. Build it with `load_lpips`."""

    def __init__(self, vgg: VGG16Features) -> None:
        super().__init__()
        if vgg.upto != "relu5_3":
            raise ValueError("LPIPS needs VGG16 up to relu5_3")
        self.vgg = vgg
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in LPIPS_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        return super().train(False)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.shape != y.shape or x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected two (B, 3, H, W) batches of one shape, got {tuple(x.shape)}, {tuple(y.shape)}")
        b = x.shape[0]
        feats = self.vgg(torch.cat([x, y]).float(), list(TAPS))  # one batch: (2B, C_l, H_l, W_l) per tap
        total = x.new_zeros(b, dtype=torch.float32)
        for f, lin in zip(feats, self.lins):
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + EPS)  # unit length over channels
            d = (f[:b] - f[b:]).pow(2)  # (B, C, H_l, W_l)
            total = total + lin(d).mean((1, 2, 3))  # 1x1 head, then spatial mean
        return total


def load_lpips(vgg_path: str | Path | None = None, heads_path: str | Path | None = None) -> LPIPS:
    """LPIPS with the converted VGG16 (`vgg16.safetensors`) and heads (`lpips_vgg.safetensors`),
    default from `weights_dir()`; InfpError saying to run `infp weights convert` when either is absent."""
    from safetensors.torch import load_file

    model = LPIPS(load_vgg16(vgg_path, upto="relu5_3"))
    heads = Path(heads_path) if heads_path is not None else weights_dir() / LPIPS_FILE
    if not heads.is_file():
        raise InfpError("LPIPS heads not found; run `infp weights convert`", heads)
    state = load_file(str(heads))
    try:
        model.lins.load_state_dict({f"{i}.weight": state[f"lin{i}.weight"].float() for i in range(len(LPIPS_CHANNELS))})
    except (KeyError, RuntimeError) as e:
        raise InfpError(f"not LPIPS VGG heads ({e}); run `infp weights convert`", heads) from e
    return model
