"""Stage-1 training losses: the renderer reproduces a driving frame from a source frame.

INFP (Sec. 3.1) trains motion-based head imitation with reconstruction and perceptual losses. The
usual perceptual loss needs ImageNet VGG weights, which cannot be downloaded here, so VGG is used
only when the user gives a local weights file, and otherwise the loss is made of terms that need no
download (DESIGN.md; never a fake, e.g. randomly initialised, perceptual network):

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
- `VGGPerceptual`: L1 between VGG19 features (pix2pixHD's layers and weights), from a local file.
- `hinge_g_loss` / `hinge_d_loss` / `feature_matching`: the jointly trained multi-scale PatchGAN
  (`infp.models.discriminator`); its feature matching is the learned perceptual term.

All images are (B, 3, H, W) in [0, 1].
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from infp.errors import InfpError
from infp.eval.metrics import laplacian
from infp.models.discriminator import (
    DiscriminatorConfig,
    MultiScaleDiscriminator,
    PatchOutput,
)
from infp.train.perceptual import VGG16Perceptual  # noqa: F401  (the ImageNet VGG16 loss, re-exported)

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


# --------------------------------------------------------------------------- VGG19 perceptual loss

# torchvision's vgg19().features ("E" configuration) up to relu5_1; "M" is a 2x2 max pool.
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512)
# features index of relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 -> weight (pix2pixHD's VGGLoss)
VGG_TAPS = {1: 1 / 32, 6: 1 / 16, 11: 1 / 8, 20: 1 / 4, 29: 1.0}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_EXPECTED = (
    "torchvision's VGG19 weights (vgg19().features: keys features.0.weight ... features.28.bias, the "
    "'features.' prefix optional), e.g. vgg19-dcbb9e9d.pth or its .safetensors conversion"
)


class VGGPerceptual(nn.Module):
    """L1 between VGG19 features of prediction and target at relu1_1 ... relu5_1, weighted 1/32, 1/16,
    1/8, 1/4, 1. Parameter names are torchvision's (`features.0.weight`, ...), so its state dict
    loads. Build it with `from_file`: a freshly constructed one has random weights, which is not a
    perceptual loss. Always frozen and in eval mode. Costly on CPU: about 47 GFLOP per 256x256 image
    and forward (FlopCounterMode), two forwards (pred, target) plus a backward per step."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for v in VGG19_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                conv = nn.Conv2d(c_in, v, 3, padding=1)
                nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # torchvision's
                nn.init.zeros_(conv.bias)
                layers += [conv, nn.ReLU()]
                c_in = v
        self.features = nn.Sequential(*layers)  # indices 0..29 as in torchvision
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_file(cls, path: str | Path) -> VGGPerceptual:
        """Load weights from a local `.safetensors` or `.pth`/`.pt` (tensors only: never unpickles
        other objects). Classifier and deeper `features` weights are ignored. InfpError on a missing
        or unreadable file, missing keys or wrong shapes."""
        model = cls()
        expected = {k: v.shape for k, v in model.features.state_dict().items()}  # "0.weight" -> shape
        state = _read_vgg_state(Path(path), set(expected))
        missing = [k for k in expected if k not in state]
        if missing:
            raise InfpError(
                f"not VGG19 weights: {len(missing)} of {len(expected)} expected tensors missing "
                f"(first: features.{missing[0]}); expected {VGG_EXPECTED}",
                path,
            )
        for k, shape in expected.items():
            if state[k].shape != shape:
                raise InfpError(
                    f"not VGG19 weights: features.{k} has shape {tuple(state[k].shape)}, expected "
                    f"{tuple(shape)}; expected {VGG_EXPECTED}",
                    path,
                )
        model.features.load_state_dict({k: state[k].float() for k in expected})
        return model

    def train(self, mode: bool = True) -> VGGPerceptual:
        return super().train(False)  # a fixed feature extractor: never in training mode

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std  # (B, 3, H, W) ImageNet-normalised
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG_TAPS:
                out.append(x)  # (B, C_i, H / 2^k, W / 2^k)
        return out

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self._taps(target)
        pred_feats = self._taps(pred)
        return sum(w * F.l1_loss(p, t) for w, p, t in zip(VGG_TAPS.values(), pred_feats, target_feats))


def _read_vgg_state(path: Path, wanted: set[str]) -> dict[str, torch.Tensor]:
    """The tensors of `path` named in `wanted` (keys without the 'features.' prefix)."""
    if not path.is_file():
        raise InfpError(f"VGG19 weights file not found; expected {VGG_EXPECTED}", path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                # read only the tensors needed: the classifier is most of the file
                stored = f.keys()  # a safe_open handle is not itself iterable
                names = {_strip(k): k for k in stored}
                return {k: f.get_tensor(names[k]) for k in wanted if k in names}
        except (SafetensorError, OSError) as e:
            raise InfpError(f"not a readable safetensors file ({e}); expected {VGG_EXPECTED}", path) from e
    if suffix in (".pth", ".pt"):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
            raise InfpError(
                f"torch.load(weights_only=True) cannot read it ({type(e).__name__}: only tensor state "
                f"dicts are loaded, other objects are never unpickled); expected {VGG_EXPECTED}",
                path,
            ) from e
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise InfpError(f"not a state dict of tensors; expected {VGG_EXPECTED}", path)
        return {_strip(k): v for k, v in state.items() if _strip(k) in wanted}
    raise InfpError(f"unsupported weights format {suffix!r}: use .safetensors, .pth or .pt", path)


def _strip(key: str) -> str:
    return key.removeprefix("features.")


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
    adversarial gradient at 0.1 is of the same size. VGG is used only when `vgg_path` names a file.
    """

    l1: float = 1.0
    l1_scales: int = 3
    ssim: float = 1.0
    region: float = 1.0  # L1 on the eye and lip regions of the target (see `region_l1`)
    detail: float = 0.0  # fine-detail energy per cell (see `detail_loss`); off by default
    keypoint: float = 1.0  # decoded keypoints vs landmarks; used only by a model with the keypoint prior
    correction: float = 0.5  # size of F's correction to the keypoint prior flow (see `correction_l1`); ditto
    vgg: float = 1.0
    vgg_path: str | None = None
    use_gan: bool = True
    feature_matching: float = 10.0
    adversarial: float = 0.1
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)

    def __post_init__(self) -> None:
        for name in ("l1", "ssim", "region", "detail", "keypoint", "correction", "vgg", "feature_matching", "adversarial"):
            if getattr(self, name) < 0:
                raise InfpError(f"loss weight {name} must be >= 0, got {getattr(self, name)}")
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
    `loss.disc`'s state, not this module's: the VGG weights come from the user's file. A given
    `discriminator` (e.g. restored from a checkpoint) replaces the one `cfg.discriminator` describes."""

    def __init__(self, cfg: LossConfig = LossConfig(), discriminator: MultiScaleDiscriminator | None = None):
        super().__init__()
        self.cfg = cfg
        if discriminator is not None and not cfg.use_gan:
            raise ValueError("a discriminator was given but cfg.use_gan is False")
        self.disc = (discriminator or MultiScaleDiscriminator(cfg.discriminator)) if cfg.use_gan else None
        self.vgg = VGGPerceptual.from_file(cfg.vgg_path) if cfg.vgg_path and cfg.vgg > 0 else None
        self._log_terms()

    def _log_terms(self) -> None:
        used = [name for name, on in (("multi-scale L1", self.cfg.l1 > 0), ("SSIM", self.cfg.ssim > 0),
                                      ("detail", self.cfg.detail > 0),
                                      ("discriminator feature matching", self.use_fm),
                                      ("hinge GAN", self.use_adv)) if on]
        if self.vgg is not None:
            head = f"perceptual: VGG19 from {self.cfg.vgg_path}"
        elif self.cfg.vgg_path:
            head = f"perceptual: none (VGG weight is 0, {self.cfg.vgg_path} not loaded)"
        else:
            head = "perceptual: none (no VGG weights given)"
        logger.info("%s; using %s", head, " + ".join(used) or "no other term")

    @property
    def use_fm(self) -> bool:
        return self.disc is not None and self.cfg.feature_matching > 0

    @property
    def use_adv(self) -> bool:
        return self.disc is not None and self.cfg.adversarial > 0

    def generator(self, pred: torch.Tensor, target: torch.Tensor, regions: torch.Tensor | None = None,
                  keypoints: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = None,
                  correction: torch.Tensor | None = None) -> LossTerms:
        """The renderer's loss for pred, target (B, 3, H, W) in [0, 1]; `regions` (B, 1, H, W) the
        target's eyes and lips (the region term is used only when given); `keypoints` (decoded, true)
        and F's `correction` to the prior flow, for a model with the keypoint prior. Gradients reach the model only: D's parameters are frozen
        for this forward (no D weight gradients are computed)."""
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
