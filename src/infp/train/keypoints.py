"""Fitting the keypoint decoder on a frozen motion encoder, before a fine-tune that adds the prior.

A renderer fine-tuned with `--keypoint-prior` from a checkpoint without it starts with a random
keypoint decoder, whose prior flow would tear the first thousands of renderings apart. With E_m
frozen, its latents are fixed, so the decoder can be fitted alone first: encode a sample of the
training frames once, then regress keypoints on latents in large batches (about a minute on 2 CPU
cores, where learning it inside the renderer's loop at 8 latents a step would take hours).
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from infp.data.pairs import ClipFrames, keypoints
from infp.face.hybrid import represent
from infp.models import Imitator
from infp.runtime import ImitatorRuntime

log = logging.getLogger(__name__)


class KeypointFit(NamedTuple):
    frames: int
    train_px: float  # mean |error| in crop pixels on the fitted frames
    held_px: float  # on a tenth of the frames kept out of the fit (NaN with fewer than 10 frames)


def encode_frames(model: Imitator, clips: list[ClipFrames], max_frames: int, rng: np.random.Generator,
                  batch: int = 64, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (N, D) and keypoints (N, K, 2) of up to `max_frames` frames drawn evenly from the clips."""
    pairs = [(c, j) for c in clips for j in c.usable]
    pick = rng.permutation(len(pairs))[:max_frames]
    rt = ImitatorRuntime(model, batch=batch)
    z, k = [], []
    for s in tqdm(range(0, len(pick), batch), desc="encoding frames for the keypoint decoder", unit="batch",
                  disable=not progress):
        chunk = [pairs[i] for i in pick[s : s + batch]]
        reps = np.stack([represent(c.frames[j], c.points[j], model.cfg.representation) for c, j in chunk])
        z.append(rt.encode_motion(reps).cpu())
        k.append(torch.from_numpy(np.stack([keypoints(c.points[j], c.frames.shape[1]) for c, j in chunk])))
    return torch.cat(z), torch.cat(k)


def fit_keypoint_decoder(model: Imitator, clips: list[ClipFrames], steps: int = 3000, max_frames: int = 12000,
                         batch: int = 512, lr: float = 1e-3, seed: int = 0, progress: bool = True) -> KeypointFit:
    """Fit `model.keypoint_decoder` (in place) to the landmarks of the clips' frames, E_m unchanged."""
    assert model.keypoint_decoder is not None, "the model has no keypoint decoder"
    rng = np.random.default_rng(seed)
    z, k = encode_frames(model, clips, max_frames, rng, progress=progress)
    n_held = len(z) // 10 if len(z) >= 10 else 0
    zh, kh, zt, kt = z[:n_held], k[:n_held], z[n_held:], k[n_held:]
    dec = model.keypoint_decoder
    dec.set_input_stats(zt.to(dec.z_mean.device))
    device = next(dec.parameters()).device
    opt = torch.optim.AdamW(dec.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in tqdm(range(steps), desc="fitting the keypoint decoder", unit="step", disable=not progress):
        i = torch.randint(len(zt), (min(batch, len(zt)),), generator=gen)
        loss = F.l1_loss(dec(zt[i].to(device)), kt[i].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    half = model.cfg.size / 2  # [-1, 1] units -> crop pixels

    @torch.no_grad()
    def err(zz: torch.Tensor, kk: torch.Tensor) -> float:
        return float((dec(zz.to(device)).cpu() - kk).abs().mean() * half) if len(zz) else float("nan")

    fit = KeypointFit(len(z), err(zt[:4096], kt[:4096]), err(zh, kh))
    log.info("keypoint decoder fitted on %d frames: mean error %.2f px (%.2f px on held-back frames)",
             fit.frames, fit.train_px, fit.held_px)
    return fit
