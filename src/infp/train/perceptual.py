"""`VGG16Perceptual`: the perceptual loss INFP (Sec. 3.1) trains the renderer with, on ImageNet VGG16
weights converted by `infp weights convert` (infp.weights; no download).

L1 between the VGG16 features of prediction and target at relu1_2, relu2_2, relu3_3 and relu4_3 (and
relu5_3 when asked), each layer's mean L1 weighted 1. Only the convolutions up to the deepest layer
used are built and loaded, so the float16 `vgg16_upto_relu4_3.safetensors` (15 MB, for a size-limited
transfer to a GPU machine) is enough for the default layers. The target's features are computed
without gradient; gradients reach `pred` only. Cost at 256x256: about 36 GFLOP per image and forward
up to relu4_3 (FlopCounterMode) (two forwards, pred and target, plus a backward per step).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from infp.eval.vgg import TAPS, VGG16Features, load_vgg16

DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")


class VGG16Perceptual(nn.Module):
    """`forward(pred, target)`: (B, 3, H, W) in [0, 1] -> scalar, the sum over `layers` of the mean
    L1 between features. Frozen, always in eval mode; build it with `from_file`."""

    def __init__(self, vgg: VGG16Features, layers: tuple[str, ...] = DEFAULT_LAYERS,
                 weights: tuple[float, ...] | None = None) -> None:
        super().__init__()
        if not layers or any(t not in TAPS for t in layers):
            raise ValueError(f"layers must be among {', '.join(TAPS)}, got {layers}")
        self.layers = tuple(t for t in TAPS if t in layers)  # shallow to deep, as the trunk returns them
        self.weights = tuple(weights) if weights is not None else (1.0,) * len(self.layers)
        if len(self.weights) != len(self.layers):
            raise ValueError(f"{len(self.weights)} weights for {len(self.layers)} layers")
        self.vgg = vgg

    @classmethod
    def from_file(cls, path: str | Path | None = None, layers: tuple[str, ...] = DEFAULT_LAYERS,
                  weights: tuple[float, ...] | None = None) -> VGG16Perceptual:
        """Load converted VGG16 weights from `path` (default: the weights cache, the full file or the
        relu4_3 truncation); only the convolutions `layers` need are read. InfpError when missing."""
        deepest = [t for t in TAPS if t in layers][-1] if layers and all(t in TAPS for t in layers) else None
        if deepest is None:
            raise ValueError(f"layers must be among {', '.join(TAPS)}, got {layers}")
        return cls(load_vgg16(path, upto=deepest), layers, weights)

    def train(self, mode: bool = True) -> VGG16Perceptual:
        return super().train(False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        with torch.no_grad():
            target_feats = self.vgg(target, list(self.layers))
        pred_feats = self.vgg(pred, list(self.layers))
        return sum(w * F.l1_loss(p, t.to(p.dtype)) for w, p, t in zip(self.weights, pred_feats, target_feats))
