"""Multi-scale PatchGAN discriminator `D` for stage 1 (motion-based head imitation).

INFP (Sec. 3.1) trains the renderer with reconstruction and perceptual losses. Pretrained VGG weights
cannot be downloaded here, so a jointly trained discriminator provides the perceptual signal that
needs no download: its intermediate features give the feature-matching loss, its logits the hinge
GAN loss (`infp.train.losses`). The architecture is pix2pixHD's (Wang et al. 2018): `num_scales`
identical PatchGANs, one per level of an average-pooled image pyramid, each a stack of strided 4x4
convolutions with LeakyReLU(0.2); with `num_layers=3` a logit sees a 70x70 patch of its scale.

Normalisation: spectral norm on every convolution (Miyato et al. 2018), not instance norm. Stage-1
batches are small (a few images on 2 CPU cores), and instance norm over the few positions of the deep
layers of the coarse scale is noisy; spectral norm keeps `D` 1-Lipschitz per layer, which is what
keeps hinge-loss training stable, and it is independent of batch size and resolution. It costs one
power iteration per layer per training-mode forward (negligible next to the convolutions).

Cost (FlopCounterMode, one 256x256 image, forward): about 1.36 GFLOP for the default config (channels
32 capped at 128, 3 layers, 2 scales); pix2pixHD's 64/512 would be 7.8 GFLOP. The widest layer is the
stride-1 one at 1/8 resolution, so `max_channels` is the knob that matters most.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from infp.errors import InfpError

LEAK = 0.2  # LeakyReLU slope of pix2pixHD / DCGAN discriminators


@dataclass(frozen=True)
class DiscriminatorConfig:
    """Sizes of the multi-scale PatchGAN. `channels` is the width of the first layer; each strided
    layer doubles it up to `max_channels`."""

    in_channels: int = 3
    channels: int = 32
    max_channels: int = 128
    num_layers: int = 3  # strided layers per scale (pix2pixHD's n_layers)
    num_scales: int = 2
    sn_power_iterations: int = 1

    def __post_init__(self) -> None:
        if min(self.in_channels, self.channels, self.max_channels, self.num_layers, self.num_scales) < 1:
            raise InfpError(f"discriminator sizes must be positive, got {self}")
        if self.max_channels < self.channels:
            raise InfpError(f"max_channels ({self.max_channels}) is below channels ({self.channels})")


class PatchOutput(NamedTuple):
    """What one scale's PatchGAN sees in a batch of images."""

    features: list[torch.Tensor]  # one (B, C_l, H_l, W_l) map per hidden layer, after LeakyReLU
    logits: torch.Tensor  # (B, 1, H', W'): real (>0) / fake (<0) score per patch


def _conv(c_in: int, c_out: int, stride: int, cfg: DiscriminatorConfig) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1)
    # pix2pixHD's N(0, 0.02); spectral norm then fixes the scale, so only the direction matters.
    nn.init.normal_(conv.weight, 0.0, 0.02)
    nn.init.zeros_(conv.bias)
    return spectral_norm(conv, n_power_iterations=cfg.sn_power_iterations)


class PatchDiscriminator(nn.Module):
    """One scale: `num_layers` stride-2 convs, one stride-1 conv, one stride-1 conv to logits.
    Spatial sizes for a 256x256 input and 3 layers: 128, 64, 32, 31 -> logits 30x30."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        widths = [min(cfg.channels * 2**i, cfg.max_channels) for i in range(cfg.num_layers + 1)]
        strides = [2] * cfg.num_layers + [1]
        c_in = cfg.in_channels
        blocks = []
        for width, stride in zip(widths, strides):
            blocks.append(nn.Sequential(_conv(c_in, width, stride, cfg), nn.LeakyReLU(LEAK)))
            c_in = width
        self.blocks = nn.ModuleList(blocks)
        self.to_logits = _conv(c_in, 1, 1, cfg)

    def forward(self, x: torch.Tensor) -> PatchOutput:
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return PatchOutput(features, self.to_logits(x))


class MultiScaleDiscriminator(nn.Module):
    """`D`: one PatchGAN per pyramid level (full, 1/2, 1/4, ...). Takes images in [0, 1]."""

    def __init__(self, cfg: DiscriminatorConfig):
        super().__init__()
        self.cfg = cfg
        self.scales = nn.ModuleList(PatchDiscriminator(cfg) for _ in range(cfg.num_scales))

    def forward(self, images: torch.Tensor) -> list[PatchOutput]:
        """images (B, C, H, W) in [0, 1] -> one PatchOutput per scale, finest first."""
        x = images * 2 - 1  # (B, C, H, W) centred: the convolutions see zero-mean-ish input
        outputs = []
        for i, disc in enumerate(self.scales):
            if i > 0:
                # pix2pixHD's pyramid: 3x3 average, stride 2, border pixels not diluted by padding
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(disc(x))
        return outputs
