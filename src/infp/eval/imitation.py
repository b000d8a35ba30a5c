"""Stage-1 evaluation: self-reenactment on held-out clips, the copy-the-source baseline beside it,
and a cross-identity grid.

Self-reenactment (INFP Sec. 4): the clip's first usable frame is the source; every other frame is
rendered from it with that frame's own motion code `E_m(hybrid(frame))` and scored against the frame
(the source frame is left out: the baseline would reproduce it exactly, an infinite PSNR). The
trivial baseline predicts the source unchanged for every frame; a model that does not beat it has
learnt nothing about motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from infp.data.clip import Clip
from infp.data.pairs import ClipFrames, load_clip_frames, to_tensor
from infp.data.portraits import Portrait
from infp.eval.metrics import FrameMetrics, ImageScores
from infp.face.hybrid import represent
from infp.models import Imitator


@dataclass(frozen=True)
class ClipScores:
    id: str
    n_frames: int
    model: ImageScores
    baseline: ImageScores


@dataclass(frozen=True)
class ImitationReport:
    clips: list[ClipScores]
    model: ImageScores  # over every scored frame of every clip
    baseline: ImageScores

    def markdown(self) -> str:
        fid = self.model.fid is not None
        head = "| clip | frames | SSIM model | SSIM copy-source | PSNR model | PSNR copy-source |"
        rows = [head, "|---|---|---|---|---|---|"]
        for c in [*self.clips, ClipScores("**all**", self.model.n_frames, self.model, self.baseline)]:
            rows.append(f"| {c.id} | {c.n_frames} | {c.model.ssim:.4f} | {c.baseline.ssim:.4f} | "
                        f"{c.model.psnr:.2f} | {c.baseline.psnr:.2f} |")
        if fid:
            rows.append(f"\nFID: model {self.model.fid:.2f}, copy-source {self.baseline.fid:.2f}")
        return "\n".join(rows) + "\n"


def _reps(clip: ClipFrames, idx: np.ndarray, kind: str) -> torch.Tensor:
    return to_tensor(np.stack([represent(clip.frames[i], clip.points[i], kind) for i in idx]))


@torch.no_grad()
def reenact_clip(model: Imitator, clip: ClipFrames, idx: np.ndarray, batch: int = 8):
    """Yield (prediction, target, source) batches for frames `idx`, the first usable frame as source."""
    device = next(model.parameters()).device
    kind = model.cfg.representation
    s = clip.usable[0]
    source = to_tensor(clip.frames[s : s + 1]).to(device)
    app = model.encode_appearance(source)
    z_src = model.encode_motion(_reps(clip, np.array([s]), kind).to(device))
    for k in range(0, len(idx), batch):
        part = idx[k : k + batch]
        z = model.encode_motion(_reps(clip, part, kind).to(device))
        n = len(part)
        pred = model.render(app.expand(n), z_src.expand(n, -1), z).image.clamp(0, 1)
        yield pred.cpu(), to_tensor(clip.frames[part]), source.cpu().expand(n, -1, -1, -1)


def evaluate_imitation(model: Imitator, clips: list[Clip], every: int = 1, max_frames: int | None = None,
                       fid_features: nn.Module | None = None, progress: bool = False) -> ImitationReport:
    model.eval()
    total_m, total_b = FrameMetrics(fid_features), FrameMetrics(fid_features)
    scores = []
    for clip in tqdm(clips, desc="eval imitation", unit="clip", disable=not progress):
        frames = load_clip_frames(clip, model.cfg.size, max_frames)
        if len(frames.usable) < 2:
            continue
        idx = frames.usable[1::every]  # the source frame itself is the input, not a prediction: not scored
        m, b = FrameMetrics(), FrameMetrics()
        for pred, target, source in reenact_clip(model, frames, idx):
            for metrics, guess in ((m, pred), (total_m, pred), (b, source), (total_b, source)):
                metrics.update(guess, target)
        scores.append(ClipScores(frames.id, len(idx), m.compute(), b.compute()))
    return ImitationReport(scores, total_m.compute(), total_b.compute())


@torch.no_grad()
def cross_identity_grid(model: Imitator, portraits: list[Portrait], driving: list[tuple[ClipFrames, int]]) -> np.ndarray:
    """Rows: each portrait driven by each driving frame. Top row: the driving frames; first column:
    the portraits. (H, W, 3) uint8. Motion is transferred as a change: z_src is the portrait's own
    code, z_drv the driving frame's, relative to the driving clip's first frame."""
    from infp.train.samples import to_uint8

    device = next(model.parameters()).device
    kind, size = model.cfg.representation, model.cfg.size
    drv_reps = torch.cat([_reps(c, np.array([i]), kind) for c, i in driving]).to(device)
    first_reps = torch.cat([_reps(c, c.usable[:1], kind) for c, _ in driving]).to(device)
    dz = model.encode_motion(drv_reps) - model.encode_motion(first_reps)  # (N, D): each frame's motion
    top = [np.zeros((size, size, 3), np.uint8)] + [c.frames[i] for c, i in driving]
    rows = [np.concatenate(top, 1)]
    for p in portraits:
        src = to_tensor(p.image[None]).to(device)
        z_src = model.encode_motion(to_tensor(represent(p.image, p.points, kind)[None]).to(device))
        app = model.encode_appearance(src)
        outs = [model.render(app, z_src, z_src + dz[k : k + 1]).image for k in range(len(driving))]
        rows.append(np.concatenate([p.image, *to_uint8(torch.cat(outs))], 1))
    return np.concatenate(rows, 0)
