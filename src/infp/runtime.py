"""Stage 1 at run time (LivePortrait's wrapper layer): one place that encodes face crops and renders
motion latents to frames, in batches, on one device, in one dtype.

```
rt = ImitatorRuntime.from_pretrained(path, device="auto", dtype="float32", batch=16)
app = rt.encode_appearance(crop)                 # (1, S, S, 3) uint8, once per portrait
z_src = rt.encode_motion(represent(crop, ...)[None])  # (1, motion_dim) float32
frames = rt.render_uint8(app, z_src, z)          # z (N, motion_dim) -> (N, R, R, 3) uint8
```

The pipeline, evaluation, the stage-2 latent cache and the renderer's packs all call it, so its place
is below them: it needs only `models/` (plain modules) and torch. It runs the imitator in eval mode
without gradients and puts back the mode the module was in, so a model being trained can be used too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from infp.errors import InfpError
from infp.guard import check_finite
from infp.models import AppearanceFeatures, Imitator, Rendered
from infp.models.decoder import placed
from infp.models.imitator import Calibration

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DAMAGED = "its checkpoint's weights are damaged or overflow"


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto": the GPU when there is one; a GPU that is not there is an error, not a fallback."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InfpError(f"unknown device {device!r} (cpu, cuda, cuda:N or auto)") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InfpError(f"device {device} asked for, but torch sees no GPU here; use cpu")
    return device


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 natively: a GPU that supports it, or a CPU with AVX-512
    BF16 or AMX (elsewhere oneDNN emulates it, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """float32, or autocast to bfloat16 (CPU or GPU) or float16 (GPU only); "auto": bfloat16 where
    the device computes it natively (`native_bfloat16`), else float32."""
    if dtype == "auto":
        return torch.bfloat16 if native_bfloat16(device) else torch.float32
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise InfpError(f"unknown dtype {dtype!r}; choose from auto, {', '.join(DTYPES)}")
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise InfpError(f"unsupported dtype {dtype}; choose from {', '.join(DTYPES)}")
    if dtype == torch.float16 and device.type == "cpu":
        raise InfpError("float16 needs a GPU; on CPU use float32 (or bfloat16)")
    return dtype


class Painting(NamedTuple):
    """Stage 1's frames before the source is sampled: the output is the source warped by `flow` with
    `synthesis` blended in by `mask`."""

    flow: torch.Tensor  # (B, 2, h, w) backward map in grid_sample units, at the feature resolution
    synthesis: torch.Tensor  # (B, 3, S, S) the decoder's painting in [0, 1], zero outside its window
    mask: torch.Tensor  # (B, 1, S, S) in [0, 1]: where it replaces the warped source


class ImitatorRuntime:
    """An `Imitator` with its device, dtype and batch size: crops and latents in, latents and frames out.

    `device` None keeps the module where it is; `batch`: items per forward pass (outputs do not depend
    on it beyond float rounding)."""

    def __init__(self, imitator: Imitator, device: str | torch.device | None = None,
                 dtype: str | torch.dtype = "float32", batch: int = 16, path: Path | None = None):
        if batch < 1:
            raise InfpError(f"batch must be at least 1 (got {batch})")
        self.device = next(imitator.parameters()).device if device is None else resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.model = imitator if device is None else imitator.to(self.device)
        if device is not None and self.device.type == "cpu":
            # oneDNN's convolutions run faster on channels-last weights (rendering 30 -> 27 ms a frame on 2
            # cores, measured); the results differ only by float rounding
            self.model.to(memory_format=torch.channels_last)
        self.batch = batch
        self.path = path  # the checkpoint, for messages

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype = "float32",
                        batch: int = 16) -> ImitatorRuntime:
        """A stage-1 checkpoint directory, checked before it is loaded (`pipeline.stages.load_imitator`)."""
        from infp.pipeline.stages import load_imitator

        return cls(load_imitator(path).eval(), device, dtype, batch, Path(path))

    @property
    def cfg(self):
        return self.model.cfg

    @contextlib.contextmanager
    def _running(self, autocast: bool = True) -> Iterator[None]:
        """No gradients, eval mode (each submodule's own mode restored after), autocast below float32
        unless `autocast` is False."""
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        cast = (contextlib.nullcontext() if self.dtype == torch.float32 or not autocast
                else torch.autocast(self.device.type, dtype=self.dtype))
        try:
            with torch.no_grad(), cast:
                yield
        finally:
            for m, training in modes:
                m.training = training

    def _images(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(B, S, S, 3) uint8 array or (B, 3, S, S) float tensor in [0, 1] -> the latter, on the device."""
        if isinstance(x, np.ndarray):
            if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
                raise InfpError(f"images must be (B, S, S, 3) uint8 (got {x.dtype} {x.shape})")
            x = to_tensor(x)
        return x.to(self.device, torch.float32)

    def encode_motion(self, reps: np.ndarray | torch.Tensor, batch: int | None = None) -> torch.Tensor:
        """E_m: representations (N, S, S, 3) uint8 or (N, 3, S, S) float -> (N, motion_dim) float32 on the device.
        Always computed in float32, whatever the dtype: the latents are what stage 2 was trained on, and
        bfloat16 moves them by about 3% of their size (measured on the packaged portrait)."""
        b = batch or self.batch
        with self._running(autocast=False):
            out = [self.model.encode_motion(self._images(reps[k : k + b])).float() for k in range(0, len(reps), b)]
        return torch.cat(out) if out else torch.zeros(0, self.cfg.motion_dim, device=self.device)

    def encode_appearance(self, crop: np.ndarray | torch.Tensor, full: np.ndarray | torch.Tensor | None = None
                          ) -> AppearanceFeatures:
        """A portrait's features, once: crop (1, S, S, 3) uint8 or (1, 3, S, S) float; `full`: the same crop
        at the output resolution R > S, which the renderer then warps instead."""
        with self._running():
            return self.model.encode_appearance(self._images(crop), None if full is None else self._images(full))

    def _batches(self, app: AppearanceFeatures, z_src: np.ndarray | torch.Tensor, z_drv: np.ndarray | torch.Tensor,
                 batch: int | None, compose: bool, calibration: Calibration | None = None
                 ) -> Iterator[tuple[Rendered, bool]]:
        """Each batch's `Rendered` and whether its latents were all finite. `calibration`
        (`models.imitator.Calibration`): one portrait's (batch 1), shared by every frame, or with one
        row per z_drv (the evaluation's known keypoints of each frame)."""
        b = batch or self.batch
        z_src = torch.as_tensor(z_src, dtype=torch.float32, device=self.device)
        z_drv = torch.as_tensor(z_drv, dtype=torch.float32, device=self.device)
        shared = z_src.ndim == 1 or len(z_src) == 1
        if not shared and z_src.shape != z_drv.shape:
            raise InfpError(f"z_src {tuple(z_src.shape)} must be one latent or one per z_drv {tuple(z_drv.shape)}")
        for k in range(0, len(z_drv), b):
            zz = z_drv[k : k + b]
            zs = z_src.expand(len(zz), -1) if shared else z_src[k : k + b]
            extra = {} if calibration is None else {"calibration": Calibration(
                *(x.to(self.device, torch.float32)[k : k + b] if len(x) == len(z_drv) > 1 else
                  x.to(self.device, torch.float32).expand(len(zz), -1, -1) for x in calibration))}
            with self._running():
                out = self.model.render(app.expand(len(zz)), zs, zz, compose=compose, **extra)
            yield out, bool(torch.isfinite(zz).all()) and bool(torch.isfinite(zs).all())

    def render_batches(self, app: AppearanceFeatures, z_src: np.ndarray | torch.Tensor, z_drv: np.ndarray | torch.Tensor,
                       batch: int | None = None, calibration: Calibration | None = None) -> Iterator[torch.Tensor]:
        """One portrait (`app` of batch 1) moved from motion z_src ((D,) or (1, D): shared; (N, D): per
        frame) to each z_drv (N, D): (n, 3, R, R) float32 images in [0, 1] on the device, `batch` at a time.
        Finite latents rendered to NaN or infinite pixels are stage 1's fault: InfpError."""
        for out, finite in self._batches(app, z_src, z_drv, batch, compose=True, calibration=calibration):
            img = out.image.float()
            if finite:  # else: the latents' fault
                check_finite(img, f"stage 1 (the imitator) rendered NaN or infinite pixels; {DAMAGED}", self.path)
            yield img.clamp(0, 1)

    def paint_batches(self, app: AppearanceFeatures, z_src: np.ndarray | torch.Tensor, z_drv: np.ndarray | torch.Tensor,
                      batch: int | None = None, calibration: Calibration | None = None) -> Iterator[Painting]:
        """`render_batches` without the last step, for a caller that samples the source itself (the
        pipeline reads the portrait once per output pixel: `pipeline.portrait.Framing.compose`): each
        batch's flow and the decoder's painting, placed in the crop, float32 on the device."""
        for out, finite in self._batches(app, z_src, z_drv, batch, compose=False, calibration=calibration):
            flow, painted = out.flow.flow.float(), out.synthesis
            if finite:
                for x in (flow, painted.synthesis):
                    check_finite(x, f"stage 1 (the imitator) rendered NaN or infinite pixels; {DAMAGED}", self.path)
            colour, mask = placed(painted._replace(synthesis=painted.synthesis.float().clamp(0, 1),
                                                   mask=painted.mask.float()), len(flow))
            yield Painting(flow, colour, mask)

    def render(self, app: AppearanceFeatures, z_src: np.ndarray | torch.Tensor, z_drv: np.ndarray | torch.Tensor,
               batch: int | None = None) -> torch.Tensor:
        """`render_batches` in one (N, 3, R, R) float32 tensor in [0, 1] on the CPU."""
        side = (app.image if app.full is None else app.full).shape[-1]
        return torch.cat([torch.zeros(0, 3, side, side), *(b.cpu() for b in self.render_batches(app, z_src, z_drv, batch))])

    def render_uint8(self, app: AppearanceFeatures, z_src: np.ndarray | torch.Tensor, z_drv: np.ndarray | torch.Tensor,
                     batch: int | None = None, calibration: Calibration | None = None) -> np.ndarray:
        """`render` as (N, R, R, 3) uint8 frames (converted on the device: a quarter of the bytes to move)."""
        side = (app.image if app.full is None else app.full).shape[-1]
        return np.concatenate([np.zeros((0, side, side, 3), np.uint8),
                               *(to_uint8(b) for b in self.render_batches(app, z_src, z_drv, batch, calibration))])
