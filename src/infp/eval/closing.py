"""Can the renderer close what the photo opened? (issue 25: a portrait with an open mouth and teeth.)

Self-reenactment with a hard source: each held-out clip's widest-open usable frame is the source, and
every `every`-th usable frame whose true mouth is closed (MediaPipe inner-lip gap / face height below
`CLOSED`) is rendered from it with its own motion code and measured. The renderer is given the frames'
detected keypoints (`closing_renders`), so what is measured is the renderer's closing, not E_m's
reading of the mouth. A renderer that only warps shows the source's teeth squeezed between the lips
there; the lip gap MediaPipe reads on the render says how far the mouth really closed (`infp eval
imitation --closing`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from infp.data.clip import Clip
from infp.data.pairs import ClipFrames, keypoints, load_clip_frames
from infp.face.expression import mouth_opening
from infp.face.hybrid import represent
from infp.face.landmarks import FaceMesh
from infp.models import Imitator
from infp.models.imitator import Calibration
from infp.runtime import ImitatorRuntime

CLOSED = 0.02  # lip gap / face height below which a true mouth counts as closed (open speech: 0.05-0.2)


@dataclass(frozen=True)
class ClosingScores:
    id: str
    source_gap: float  # the source frame's own lip gap (its widest in the clip)
    n_frames: int  # closed-mouth frames rendered
    truth_gap: float  # mean lip gap of those true frames
    model_gap: float  # mean lip gap MediaPipe reads on the renders (NaN: no face found in any)
    closed_share: float  # share of renders whose lip gap is below the bound too
    found: float  # share of renders with a face found


def measured(mesh: FaceMesh, images: np.ndarray, measure: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """(N,) `measure` (landmarks (T, 478, 3) -> (T,), e.g. `mouth_opening`) of the first face MediaPipe
    finds in each image (N, S, S, 3); NaN where it finds none."""
    out = []
    for image in images:
        faces = mesh.detect(image)
        out.append(measure(faces[0].points[None].astype(np.float64))[0] if faces else np.nan)
    return np.array(out, float)


def widest_frame(clip: ClipFrames) -> int:
    mouth = mouth_opening(clip.points)
    return int(clip.usable[np.nanargmax(mouth[clip.usable])])


def closed_frames(clip: ClipFrames, every: int, bound: float = CLOSED) -> np.ndarray:
    """Every `every`-th usable frame whose true lip gap is below `bound`."""
    idx = clip.usable[::every]
    return idx[mouth_opening(clip.points[idx]) < bound]


def closing_renders(model: Imitator, clip: ClipFrames, source: int, idx: np.ndarray) -> np.ndarray:
    """(N, S, S, 3) uint8: frames `idx` rendered from frame `source` with their own motion codes. With a
    keypoint prior, the keypoints are the frames' detected landmarks (the source's as the pipeline
    takes a portrait's, each driving frame's as an oracle): E_m keeps only part of a mouth's opening,
    and this measures whether the renderer closes a mouth it is told to close, apart from how well
    stage 2 or E_m say so."""
    rt = ImitatorRuntime(model, batch=8)
    kind = model.cfg.representation
    reps = np.stack([represent(clip.frames[i], clip.points[i], kind) for i in np.r_[source, idx]])
    z = rt.encode_motion(reps)  # (1 + N, D)
    app = rt.encode_appearance(clip.frames[source : source + 1])
    calibration = None
    if model.keypoint_decoder is not None:
        size = model.cfg.size
        kp = torch.from_numpy(np.stack([keypoints(clip.points[i], size) for i in np.r_[source, idx]]))  # (1 + N, K, 2)
        with torch.no_grad():
            decoded = model.keypoint_decoder(z[1:].to(next(model.parameters()).device)).float().cpu()
        calibration = Calibration(kp[:1], kp[1:] - decoded)  # the driving keypoints become the true ones
    return rt.render_uint8(app, z[:1], z[1:], calibration=calibration)


def usable_clips(clips: list[Clip], size: int, max_frames: int | None, desc: str, progress: bool) -> Iterator[ClipFrames]:
    """The clips' frames at `size`, one clip at a time, those with at least two frames with a face."""
    for clip in tqdm(clips, desc=desc, unit="clip", disable=not progress):
        frames = load_clip_frames(clip, size, max_frames)
        if len(frames.usable) >= 2:
            yield frames


def evaluate_closing(model: Imitator, clips: list[Clip], every: int = 3, max_frames: int | None = None,
                     bound: float = CLOSED, progress: bool = False) -> tuple[list[ClosingScores], list[np.ndarray]]:
    """Scores per clip with at least one closed-mouth frame (true lip gap below `bound`; the renders are
    called closed below it too), and per clip a row of images: source | up to 4 true closed frames |
    their renders."""
    model.eval()
    scores, rows = [], []
    with FaceMesh(static=True) as mesh:
        for frames in usable_clips(clips, model.cfg.size, max_frames, "eval closing", progress):
            source = widest_frame(frames)
            idx = closed_frames(frames, every, bound)
            if not len(idx):
                continue
            renders = closing_renders(model, frames, source, idx)
            gaps = measured(mesh, renders, mouth_opening)
            found = np.isfinite(gaps)
            scores.append(ClosingScores(frames.id, float(mouth_opening(frames.points[source : source + 1])[0]), len(idx),
                                        float(mouth_opening(frames.points[idx]).mean()),
                                        float(gaps[found].mean()) if found.any() else float("nan"),
                                        float((gaps[found] < bound).mean()) if found.any() else float("nan"),
                                        float(found.mean())))
            show = np.linspace(0, len(idx) - 1, min(4, len(idx))).round().astype(int)
            rows.append(np.concatenate([frames.frames[source], *frames.frames[idx[show]], *renders[show]], 1))
    return scores, rows


def pooled(scores: list[ClosingScores]) -> ClosingScores:
    """Frame-weighted over clips (each clip's renders weighted by the faces found in them)."""
    n = np.array([s.n_frames for s in scores], float)
    w = n * np.nan_to_num(np.array([s.found for s in scores], float))

    def mean(field: str, weights: np.ndarray) -> float:
        v = np.array([getattr(s, field) for s in scores], float)
        ok = np.isfinite(v) & (weights > 0)
        return float((v[ok] * weights[ok]).sum() / weights[ok].sum()) if ok.any() else float("nan")

    return ClosingScores("**all**", mean("source_gap", n), int(n.sum()), mean("truth_gap", n), mean("model_gap", w),
                         mean("closed_share", w), float(w.sum() / n.sum()) if n.sum() else float("nan"))


def closing_markdown(scores: list[ClosingScores], bound: float = CLOSED) -> str:
    rows = ["## Closing what the photo opened", "",
            f"Source: each clip's widest-open frame; rendered: its frames with a closed true mouth (lip gap < {bound}), "
            "every k-th usable frame, the renderer given each frame's detected keypoints. Lip gap: MediaPipe inner-lip "
            "gap / face height on the render and on the truth; "
            "closed: share of renders whose lip gap is below the same bound.", "",
            "| clip | source gap | frames | truth gap | model gap | closed | face found |", "|---" * 7 + "|"]
    for s in [*scores, pooled(scores)] if scores else []:
        rows.append(f"| {s.id} | {s.source_gap:.3f} | {s.n_frames} | {s.truth_gap:.4f} | {s.model_gap:.4f} | "
                    f"{s.closed_share:.0%} | {s.found:.0%} |")
    if not scores:
        rows.append("(no clip has a frame with a closed mouth)")
    return "\n".join(rows) + "\n"
