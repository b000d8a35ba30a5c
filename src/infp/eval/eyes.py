"""The renderer's eyes: does a blink close an eye the photo has open, and does a photo's half-closed eye open?

Self-reenactment on held-out clips, as `infp.eval.closing` does for the mouth, the renderer given the
frames' detected keypoints (`closing_renders`), so what is measured is the renderer, apart from how
well E_m reads the lids:

- blink: the clip's widest-open eye frame is the source; its blink frames (true eye opening below
  `BLINK_CLOSE` x the clip's median, the bound `infp eval real` counts blinks by) are rendered;
- opening: the clip's most closed eye frame is the source, when it is below that bound; every k-th
  frame with an eye open wider than the median is rendered.

MediaPipe's eye opening (lid gap / eye width, both eyes) on the renders and on the truth, each as a
share of the clip's median (`infp eval imitation --eyes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infp.data.clip import Clip
from infp.data.pairs import ClipFrames
from infp.eval.closing import closing_renders, measured, usable_clips
from infp.eval.real import BLINK_CLOSE
from infp.face.expression import eye_opening
from infp.face.landmarks import FaceMesh
from infp.models import Imitator

NAN = float("nan")


@dataclass(frozen=True)
class EyeScores:
    id: str
    median: float  # the clip's median true eye opening (lid gap / eye width)
    blink_frames: int  # blink frames rendered from the widest-open frame
    blink_truth: float  # their mean true eye opening / median
    blink_model: float  # the renders' / median (NaN: no face found)
    blink_closed: float  # share of the renders below BLINK_CLOSE x median: a blink a viewer sees
    open_frames: int  # open-eye frames rendered from the most closed frame (0: no closed frame in the clip)
    open_source: float  # that source's eye opening / median
    open_truth: float
    open_model: float
    found: float  # share of all renders with a face found


def _mean(x: np.ndarray) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else NAN


def eye_cases(clip: ClipFrames, every: int) -> tuple[float, int, np.ndarray, int | None, np.ndarray]:
    """(median, blink source, blink frames, opening source or None, open frames) of one clip."""
    eye = eye_opening(clip.points.astype(np.float64))
    u = clip.usable[np.isfinite(eye[clip.usable])]
    median = float(np.median(eye[u]))
    blink_source, blinks = int(u[np.argmax(eye[u])]), u[eye[u] < BLINK_CLOSE * median]
    closed = int(u[np.argmin(eye[u])])
    if eye[closed] >= BLINK_CLOSE * median:
        return median, blink_source, blinks, None, u[:0]
    return median, blink_source, blinks, closed, u[::every][eye[u[::every]] > median]


def evaluate_eyes(model: Imitator, clips: list[Clip], every: int = 3, max_frames: int | None = None,
                  progress: bool = False) -> tuple[list[EyeScores], list[np.ndarray]]:
    """Scores per clip with a blink or a closed-eye frame, and per clip a row of images: blink source |
    up to 2 true blink frames | their renders | opening source | up to 2 true open frames | their renders."""
    model.eval()
    scores, rows = [], []
    with FaceMesh(static=True) as mesh:
        for frames in usable_clips(clips, model.cfg.size, max_frames, "eval eyes", progress):
            median, b_src, blinks, o_src, opens = eye_cases(frames, every)
            if not len(blinks) and o_src is None:
                continue
            truth = eye_opening(frames.points.astype(np.float64)) / median
            row = []
            b_model = o_model = np.zeros(0)
            if len(blinks):
                renders = closing_renders(model, frames, b_src, blinks)
                b_model = measured(mesh, renders, eye_opening) / median
                show = np.linspace(0, len(blinks) - 1, min(2, len(blinks))).round().astype(int)
                row += [frames.frames[b_src], *frames.frames[blinks[show]], *renders[show]]
            if o_src is not None and len(opens):
                renders = closing_renders(model, frames, o_src, opens)
                o_model = measured(mesh, renders, eye_opening) / median
                show = np.linspace(0, len(opens) - 1, min(2, len(opens))).round().astype(int)
                row += [frames.frames[o_src], *frames.frames[opens[show]], *renders[show]]
            both = np.r_[b_model, o_model]
            found = np.isfinite(b_model)
            scores.append(EyeScores(
                frames.id, median, len(blinks), _mean(truth[blinks]), _mean(b_model),
                float((b_model[found] < BLINK_CLOSE).mean()) if found.any() else NAN,
                len(opens) if o_src is not None else 0, float(truth[o_src]) if o_src is not None else NAN,
                _mean(truth[opens]), _mean(o_model), float(np.isfinite(both).mean()) if len(both) else NAN))
            rows.append(np.concatenate(row, 1))
    return scores, rows


def pooled(scores: list[EyeScores]) -> EyeScores:
    """Frame-weighted over clips: the blink columns by blink frames, the opening columns by open frames."""
    def mean(field: str, weight: str) -> float:
        v, w = (np.array([getattr(s, f) for s in scores], float) for f in (field, weight))
        ok = np.isfinite(v) & (w > 0)
        return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else NAN

    n = sum(s.blink_frames + s.open_frames for s in scores)
    return EyeScores("**all**", NAN, sum(s.blink_frames for s in scores), mean("blink_truth", "blink_frames"),
                     mean("blink_model", "blink_frames"), mean("blink_closed", "blink_frames"),
                     sum(s.open_frames for s in scores), mean("open_source", "open_frames"),
                     mean("open_truth", "open_frames"), mean("open_model", "open_frames"),
                     float(sum(s.found * (s.blink_frames + s.open_frames) for s in scores if np.isfinite(s.found)) / n)
                     if n else NAN)


def eyes_markdown(scores: list[EyeScores]) -> str:
    def f(x: float, d: int = 2) -> str:
        return "-" if not np.isfinite(x) else f"{x:.{d}f}"

    rows = ["## The eyes: a blink closes, a half-closed eye opens", "",
            "Eye opening: MediaPipe lid gap / eye width, as a share of the clip's median (its open eyes). Blink: "
            f"source the widest-open frame, rendered the frames below {BLINK_CLOSE}x the median, closed: renders below it "
            "too. Opening: source the most closed frame (when below that), rendered every k-th frame above the median. "
            "The renderer is given each frame's detected keypoints.", "",
            "| clip | blink frames | truth | model | closed | open frames | source | truth | model | face found |",
            "|---" * 10 + "|"]
    for s in [*scores, pooled(scores)] if scores else []:
        rows.append(f"| {s.id} | {s.blink_frames} | {f(s.blink_truth)} | {f(s.blink_model)} | "
                    f"{f(s.blink_closed * 100, 0)}{'%' if np.isfinite(s.blink_closed) else ''} | {s.open_frames} | "
                    f"{f(s.open_source)} | {f(s.open_truth)} | {f(s.open_model)} | {f(s.found)} |")
    return "\n".join(rows) + "\n"
