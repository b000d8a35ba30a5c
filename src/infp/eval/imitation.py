"""Stage-1 evaluation: self-reenactment on held-out clips, the copy-the-source baseline beside it,
and a cross-identity grid.

Self-reenactment (INFP Sec. 4): the clip's first usable frame is the source; every other frame is
rendered from it with that frame's own motion code `E_m(hybrid(frame))` and scored against the frame
(the source frame is left out: the baseline would reproduce it exactly, an infinite PSNR). The
trivial baseline predicts the source unchanged for every frame; a model that does not beat it has
learnt nothing about motion.

SSIM and PSNR hardly see motion (a closed mouth costs a few hundred pixels against an open one), so
the transfer itself is measured too: MediaPipe measures mouth opening and head pose on the
predictions and on the frames they reproduce (`TransferScores`). Beside them, optionally: LPIPS
(infp.eval.lpips), the face's sharpness against the truth's (`metrics.face_sharpness`) and identity
distances with dlib's face recogniser (infp.eval.identity).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from torch import nn
from tqdm import tqdm

from infp.data.clip import Clip
from infp.data.pairs import ClipFrames, load_clip_frames
from infp.data.portraits import Portrait
from infp.eval.identity import IdentityEncoder, IdentityScores, face_boxes, identity_scores, pooled_identity
from infp.eval.metrics import FrameMetrics, ImageScores
from infp.face.expression import mouth_opening
from infp.face.hybrid import represent
from infp.face.pose import head_pose
from infp.face.topology import lip_polygons
from infp.models import Imitator
from infp.models.warping import polygon_mask
from infp.runtime import ImitatorRuntime, to_tensor, to_uint8


@dataclass(frozen=True)
class TransferScores:
    """How much of each driving frame's expression and pose reached its prediction, MediaPipe Face
    Mesh measuring both. Errors are means over the frames where both faces were found."""

    mouth_r: float  # Pearson r of predicted vs true mouth opening over a clip's frames; NaN if either is constant
    mouth_err: float  # mean |predicted - true| mouth opening (inner-lip gap / face height)
    pose_err: float  # mean |predicted - true| over yaw, pitch and roll, degrees
    found: float  # share of predictions in which a face was found
    n_frames: int


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:  # a constant series has no correlation
        return float("nan")
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


def transfer_scores(pred: np.ndarray, true: np.ndarray) -> TransferScores:
    """From Face Mesh landmarks (T, 478, 3) of the predictions and of the true frames (NaN rows: no face)."""
    found = np.isfinite(pred).all((1, 2))
    both = found & np.isfinite(true).all((1, 2))
    if not both.any():
        return TransferScores(float("nan"), float("nan"), float("nan"), float(found.mean()) if len(found) else 0.0,
                              len(pred))
    mp, mt = mouth_opening(pred[both]), mouth_opening(true[both])
    pose = np.abs(head_pose(pred[both]) - head_pose(true[both])).mean()
    return TransferScores(_pearson(mp, mt), float(np.abs(mp - mt).mean()), float(pose), float(found.mean()), len(pred))


def pooled_transfer(scores: list[TransferScores]) -> TransferScores:
    """Frame-weighted means over clips (r too: a correlation pooled across clips would count the
    clips' different mouths as transfer)."""
    def mean(field: str) -> float:
        v = np.array([getattr(s, field) for s in scores], float)
        w = np.array([s.n_frames for s in scores], float) * np.isfinite(v)
        return float((np.nan_to_num(v) * w).sum() / w.sum()) if w.sum() else float("nan")

    return TransferScores(mean("mouth_r"), mean("mouth_err"), mean("pose_err"), mean("found"),
                          sum(s.n_frames for s in scores))


@dataclass(frozen=True)
class ClipScores:
    id: str
    n_frames: int
    model: ImageScores
    baseline: ImageScores
    transfer: TransferScores | None = None  # None when not measured
    baseline_transfer: TransferScores | None = None
    identity: IdentityScores | None = None


@dataclass(frozen=True)
class ImitationReport:
    clips: list[ClipScores]
    model: ImageScores  # over every scored frame of every clip
    baseline: ImageScores
    transfer: TransferScores | None = None
    baseline_transfer: TransferScores | None = None
    identity: IdentityScores | None = None

    def _rows(self) -> list[ClipScores]:
        return [*self.clips, ClipScores("**all**", self.model.n_frames, self.model, self.baseline,
                                        self.transfer, self.baseline_transfer, self.identity)]

    def _table(self, columns: list[str], cells) -> list[str]:
        """Markdown rows: a header of `columns` after "clip", then one row per clip and the total,
        `cells(ClipScores)` giving each row's formatted values."""
        rows = ["| clip | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        return rows + [f"| {c.id} | " + " | ".join(cells(c)) + " |" for c in self._rows()]

    def markdown(self) -> str:
        rows = self._table(["frames", "SSIM model", "SSIM copy-source", "PSNR model", "PSNR copy-source", "detail model"],
                           lambda c: [str(c.n_frames), f"{c.model.ssim:.4f}", f"{c.baseline.ssim:.4f}",
                                      f"{c.model.psnr:.2f}", f"{c.baseline.psnr:.2f}", f"{c.model.detail:.2f}"])
        rows.append("\ndetail: the predictions' mean |Laplacian| over the true frames' (1 = as sharp as the "
                    "truth, below 1 = blurred).")
        rows += ["", "LPIPS-VGG to the true frame (lower is better) and face sharpness (variance of the Laplacian "
                 "of the face box at 256 px, predictions over true frames; 1 = as sharp):", ""]
        rows += self._table(["LPIPS model", "LPIPS copy-source", "sharpness model", "sharpness copy-source"],
                            lambda c: [f"{c.model.lpips:.4f}", f"{c.baseline.lpips:.4f}", f"{c.model.sharpness:.3f}",
                                       f"{c.baseline.sharpness:.3f}"])
        if self.identity is not None:
            rows += ["", ("Identity (dlib face-recognition descriptor distance; below 0.6 dlib calls two faces one "
                          "person; the truth's own distance to the source is what a perfect renderer shows):"), ""]
            rows += self._table(["model to source", "model to truth", "truth to source", "faces measured"],
                                lambda c: [f"{c.identity.to_source:.3f}", f"{c.identity.to_truth:.3f}",
                                           f"{c.identity.truth_to_source:.3f}", f"{c.identity.found:.0%}"])
        if self.model.fid is not None:
            rows.append(f"\nFID: model {self.model.fid:.2f}, copy-source {self.baseline.fid:.2f}")
        rows += ["", ("Inside the open mouth (the true frames' inner-lip polygons, pixel-weighted): mean |error| "
                      "per colour value, and mean brightness (a closed-lip guess is lighter than a dark cavity):"), ""]
        rows += self._table(["open-mouth L1 model", "open-mouth L1 copy-source", "brightness model",
                             "brightness copy-source", "brightness truth"],
                            lambda c: [f"{c.model.mouth_l1:.4f}", f"{c.baseline.mouth_l1:.4f}", f"{c.model.mouth_luma:.3f}",
                                       f"{c.baseline.mouth_luma:.3f}", f"{c.model.mouth_luma_true:.3f}"])
        if self.transfer is not None:
            rows += ["", ("Motion transfer (MediaPipe on predictions and true frames; the copy-source mouth "
                          "never moves, so it has no r):"), ""]
            rows += self._table(["mouth r model", "mouth error model", "mouth error copy-source", "pose error model (deg)",
                                 "pose error copy-source (deg)", "face found model"],
                                lambda c: [f"{c.transfer.mouth_r:.3f}", f"{c.transfer.mouth_err:.4f}",
                                           f"{c.baseline_transfer.mouth_err:.4f}", f"{c.transfer.pose_err:.2f}",
                                           f"{c.baseline_transfer.pose_err:.2f}", f"{c.transfer.found:.0%}"])
        return "\n".join(rows) + "\n"


def open_mouth(points: np.ndarray, size: int) -> torch.Tensor:
    """(B, 1, S, S) share of each pixel inside the inner-lip polygon of landmarks (B, 478, 2+) in crop
    pixels: where the true frame shows teeth or the mouth's cavity (zero where the lips are closed)."""
    lips = torch.from_numpy(points[:, lip_polygons()[1], :2].astype(np.float32)) / size * 2 - 1
    return polygon_mask(lips, size, supersample=2)


def _reps(clip: ClipFrames, idx: np.ndarray, kind: str) -> np.ndarray:
    """(N, S, S, 3) uint8: E_m's input for frames `idx`."""
    return np.stack([represent(clip.frames[i], clip.points[i], kind) for i in idx])


def reenact_clip(model: Imitator, clip: ClipFrames, idx: np.ndarray, batch: int = 8, full: ClipFrames | None = None):
    """Yield (frame indices, prediction, target, source) batches for frames `idx`, the first usable
    frame as source. `full`: the same clip at an output resolution above the model's working size:
    the source is warped at it and the targets come from it."""
    rt = ImitatorRuntime(model, batch=batch)
    kind = model.cfg.representation
    s = clip.usable[0]
    shown = clip if full is None else full
    app = rt.encode_appearance(clip.frames[s : s + 1], None if full is None else full.frames[s : s + 1])
    z_src = rt.encode_motion(_reps(clip, np.array([s]), kind))  # (1, D)
    copied = to_tensor(shown.frames[s : s + 1])  # the copy-source baseline, at the scored size
    for k in range(0, len(idx), batch):
        part = idx[k : k + batch]
        pred = rt.render(app, z_src, rt.encode_motion(_reps(clip, part, kind)))
        yield part, pred, to_tensor(shown.frames[part]), copied.expand(len(part), -1, -1, -1)


PREDICTIONS_FORMAT = """a folder of `<clip id>.npz` files, each with `idx` (N,) the clip's frame indices
and `pred` (N, H, W, 3) uint8 renders of those frames (any H = W; resized to the evaluated size)"""


def saved_predictions(folder: Path, clip: ClipFrames, idx: np.ndarray, batch: int = 8):
    """`reenact_clip`'s batches from renders saved elsewhere (another renderer, another version of
    this one; PREDICTIONS_FORMAT), the clip's first usable frame as the copy-source baseline."""
    import cv2

    from infp.errors import InfpError

    path = Path(folder) / f"{clip.id}.npz"
    if not path.is_file():
        raise InfpError(f"no saved renders of clip {clip.id}; expected {PREDICTIONS_FORMAT}", path)
    with np.load(path, allow_pickle=False) as z:
        have = dict(zip(z["idx"].tolist(), range(len(z["idx"]))))
        missing = [int(i) for i in idx if int(i) not in have]
        if missing:
            raise InfpError(f"frame {missing[0]} of clip {clip.id} was not rendered ({len(missing)} missing)", path)
        pred = z["pred"][[have[int(i)] for i in idx]]
    size = clip.frames.shape[1]
    if pred.shape[1] != size:  # as a crop pasted into a larger frame is resampled: bilinear
        pred = np.stack([cv2.resize(p, (size, size), interpolation=cv2.INTER_LINEAR) for p in pred])
    s = clip.usable[0]
    for k in range(0, len(idx), batch):
        part = idx[k : k + batch]
        n = len(part)
        yield (part, to_tensor(pred[k : k + batch]), to_tensor(clip.frames[part]),
               to_tensor(clip.frames[s : s + 1]).expand(n, -1, -1, -1))


def side_by_side(clips: list[Clip], size: int, folders: list[Path], rows_per_clip: int = 2) -> np.ndarray:
    """(H, W, 3) uint8: for each clip, its frames with the widest and a median mouth opening among
    those every folder rendered, as truth | one render per folder (PREDICTIONS_FORMAT, resized to
    `size` as a pasted crop would be). For looking at teeth, eyes, hairline and edges side by side."""
    rows = []
    for clip in clips:
        frames = load_clip_frames(clip, size)
        batches = [{int(i): p for part, pred, _, _ in saved_predictions(f, frames, _rendered(f, clip.meta.id))
                    for i, p in zip(part, to_uint8(pred))} for f in folders]
        common = sorted(set.intersection(*(set(b) for b in batches)))
        if not common:
            continue
        mouth = mouth_opening(frames.points[common])
        order = np.argsort(mouth)
        for k in {int(order[-1]), int(order[len(order) // 2])} if rows_per_clip > 1 else {int(order[-1])}:
            i = common[k]
            rows.append(np.concatenate([frames.frames[i], *(b[i] for b in batches)], 1))
    return np.concatenate(rows, 0)


def _rendered(folder: Path, clip_id: str) -> np.ndarray:
    with np.load(Path(folder) / f"{clip_id}.npz", allow_pickle=False) as z:
        return z["idx"]


def save_predictions(folder: Path, clip_id: str, idx: np.ndarray, preds: list[np.ndarray]) -> None:
    """Write one clip's renders in PREDICTIONS_FORMAT."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    np.savez_compressed(Path(folder) / f"{clip_id}.npz", idx=np.asarray(idx), pred=np.stack(preds))


def _transfer(preds: list[np.ndarray], frames: ClipFrames, idx: np.ndarray) -> tuple[TransferScores, TransferScores]:
    """(model, copy-source) transfer scores of one clip's predictions (uint8 frames)."""
    from infp.eval.motion import measure_landmarks

    true = measure_landmarks(frames.frames[idx])
    source = measure_landmarks(frames.frames[frames.usable[:1]])
    return (transfer_scores(measure_landmarks(preds), true),
            transfer_scores(np.broadcast_to(source, true.shape), true))


@torch.no_grad()
def _lpips(lpips: nn.Module | None, guess: torch.Tensor, target: torch.Tensor) -> torch.Tensor | None:
    if lpips is None:
        return None
    device = next(lpips.parameters()).device
    return lpips(guess.to(device), target.to(device)).cpu()


def _identity(encoder: IdentityEncoder, preds: list[np.ndarray], frames: ClipFrames, idx: np.ndarray) -> IdentityScores:
    s = frames.usable[0]
    return identity_scores(encoder, np.stack(preds), frames.frames[idx], frames.frames[s], face_boxes(frames.points[idx]),
                           face_boxes(frames.points[s : s + 1])[0])


def evaluate_imitation(model: Imitator | None, clips: list[Clip], every: int = 1, max_frames: int | None = None,
                       fid_features: nn.Module | None = None, transfer: bool = True, progress: bool = False,
                       lpips: nn.Module | None = None, identity: IdentityEncoder | None = None,
                       size: int | None = None, predictions: Path | None = None,
                       save_to: Path | None = None) -> ImitationReport:
    """Scores of `model` and of copy-source on every `every`-th usable frame of each clip; LPIPS with
    `lpips` (an infp.eval.lpips.LPIPS), identity distances with `identity`. `size`: the resolution
    scored (default the model's working size; above it, the model warps the source at it).
    `predictions`: score renders saved there (PREDICTIONS_FORMAT) instead of running a model (then
    `size` is needed); `save_to`: write this run's renders there in that format."""
    if model is not None:
        model.eval()
    size = size or model.cfg.size
    total_m, total_b = FrameMetrics(fid_features), FrameMetrics(fid_features)
    scores = []
    for clip in tqdm(clips, desc="eval imitation", unit="clip", disable=not progress):
        frames = load_clip_frames(clip, size, max_frames)
        if len(frames.usable) < 2:
            continue
        idx = frames.usable[1::every]  # the source frame itself is the input, not a prediction: not scored
        if predictions is not None:
            batches = saved_predictions(predictions, frames, idx)
        elif size == model.cfg.size:
            batches = reenact_clip(model, frames, idx)
        else:
            batches = reenact_clip(model, load_clip_frames(clip, model.cfg.size, max_frames), idx, full=frames)
        m, b = FrameMetrics(), FrameMetrics()
        preds = []
        for part, pred, target, source in batches:
            mouth = open_mouth(frames.points[part], size)
            boxes = torch.from_numpy(face_boxes(frames.points[part]))
            for pair, guess in (((m, total_m), pred), ((b, total_b), source)):
                lp = _lpips(lpips, guess, target)
                for metrics in pair:
                    metrics.update(guess, target, mouth, boxes, lp)
            if transfer or identity is not None or save_to is not None:
                preds.extend(to_uint8(pred))
        if save_to is not None:
            save_predictions(save_to, frames.id, idx, preds)
        t = _transfer(preds, frames, idx) if transfer else (None, None)
        ident = _identity(identity, preds, frames, idx) if identity is not None else None
        scores.append(ClipScores(frames.id, len(idx), m.compute(), b.compute(), *t, ident))
    if transfer and scores:
        t = (pooled_transfer([c.transfer for c in scores]), pooled_transfer([c.baseline_transfer for c in scores]))
    else:
        t = (None, None)
    ident = pooled_identity([c.identity for c in scores]) if identity is not None and scores else None
    return ImitationReport(scores, total_m.compute(), total_b.compute(), *t, ident)


def neutral_frame(clip: ClipFrames) -> int:
    """The clip's most neutral usable frame, the reference its motion is measured from in the grid:
    the best sum of two ranks, mouth opening (closed first) and head pose's distance from the clip's
    median pose. A reference with an open mouth or a turned head would have a closed-mouth,
    frontal portrait close its mouth further or turn back past frontal."""
    pts = clip.points[clip.usable]
    pose = head_pose(pts)
    turn = np.abs(pose - np.median(pose, axis=0)).sum(-1)
    ranks = rankdata(mouth_opening(pts)) + rankdata(turn)  # ties share their mean rank
    return int(clip.usable[int(np.argmin(ranks))])


def _motion_from(rt: ImitatorRuntime, clip: ClipFrames, idx: np.ndarray, ref: int) -> torch.Tensor:
    """(N, D) each frame's motion as a latent change: E_m(frame) - E_m(frame `ref`, the clip's
    `neutral_frame`)."""
    kind = rt.cfg.representation
    return rt.encode_motion(_reps(clip, idx, kind), batch=32) - rt.encode_motion(_reps(clip, np.array([ref]), kind))


def _drive(rt: ImitatorRuntime, portrait: Portrait, dz: torch.Tensor) -> torch.Tensor:
    """The portrait rendered with each motion change dz (N, D): z_src is its own code, z_drv that
    plus the change. -> (N, 3, S, S) in [0, 1], on the CPU."""
    z_src = rt.encode_motion(represent(portrait.image, portrait.points, rt.cfg.representation)[None])  # (1, D)
    return rt.render(rt.encode_appearance(portrait.image[None]), z_src, z_src + dz.to(rt.device))


def cross_identity_grid(model: Imitator, portraits: list[Portrait], driving: list[tuple[ClipFrames, list[int]]]) -> np.ndarray:
    """Rows: each portrait driven by frames of each driving clip; top row: the driving frames; first
    column: the portraits. (H, W, 3) uint8. Motion is transferred as a change: z_src is the
    portrait's own code, z_drv that plus the driving frame's code minus the code of the clip's
    `neutral_frame`, which opens each clip's columns (the portrait rendered with no motion)."""
    rt = ImitatorRuntime(model, batch=16)
    size = model.cfg.size
    columns = [(c, np.array([neutral_frame(c), *idx])) for c, idx in driving]  # the first: the reference
    dz = torch.cat([_motion_from(rt, c, idx, idx[0]) for c, idx in columns])  # (N, D): each frame's motion
    top = [np.zeros((size, size, 3), np.uint8)] + [c.frames[i] for c, idx in columns for i in idx]
    rows = [np.concatenate(top, 1)]
    for p in portraits:
        rows.append(np.concatenate([p.image, *to_uint8(_drive(rt, p, dz))], 1))
    return np.concatenate(rows, 0)


@dataclass(frozen=True)
class CrossTransfer:
    """How much of a driving clip's motion reaches portraits of other people, what the grid shows
    measured on many frames. The change of each driving frame from the clip's `neutral_frame` (its
    landmarks) against the change of the portrait driven by it from the portrait rendered with no
    motion (MediaPipe on both renders). Gain: the least-squares slope through zero of the rendered
    change on the driving change (1: at full strength; 0: nothing comes through); r: Pearson r."""

    clip: str
    mouth_gain: float  # mouth opening (inner-lip gap / face height)
    mouth_r: float
    pose_gain: float  # yaw, pitch and roll together (degrees)
    pose_r: float
    n: int  # renders measured (portraits x frames where both faces were found)


def _gain(pred: np.ndarray, true: np.ndarray) -> tuple[float, float]:
    pred, true = pred.ravel().astype(np.float64), true.ravel().astype(np.float64)
    if len(true) < 2 or not (true**2).sum():
        return float("nan"), float("nan")
    return float((pred * true).sum() / (true**2).sum()), _pearson(pred, true)


def cross_identity_transfer(model: Imitator, portraits: list[Portrait], clips: list[ClipFrames],
                            every: int = 5, progress: bool = False) -> list[CrossTransfer]:
    """Every `every`-th usable frame of each clip drives every portrait (`CrossTransfer`)."""
    from infp.eval.motion import measure_landmarks

    rt = ImitatorRuntime(model, batch=16)
    out = []
    for clip in tqdm(clips, desc="cross-identity transfer", unit="clip", disable=not progress):
        idx = clip.usable[::every]
        ref = neutral_frame(clip)
        true_mouth = mouth_opening(clip.points[idx]) - mouth_opening(clip.points[ref : ref + 1])  # (N,)
        true_pose = head_pose(clip.points[idx]) - head_pose(clip.points[ref : ref + 1])  # (N, 3)
        dz = torch.cat([torch.zeros(1, model.cfg.motion_dim), _motion_from(rt, clip, idx, ref).cpu()])
        mouths, poses = [], []
        for p in portraits:
            marks = measure_landmarks(to_uint8(_drive(rt, p, dz)))  # the first: no motion
            ok = np.isfinite(marks).all((1, 2))[1:] & np.isfinite(marks[0]).all()
            ok &= np.isfinite(true_mouth)
            mouths.append(np.stack([mouth_opening(marks[1:][ok]) - mouth_opening(marks[:1]), true_mouth[ok]]))
            poses.append(np.stack([head_pose(marks[1:][ok]) - head_pose(marks[:1]), true_pose[ok]]))
        m, q = np.concatenate(mouths, 1), np.concatenate(poses, 1)  # (2, n) and (2, n, 3)
        out.append(CrossTransfer(clip.id, *_gain(m[0], m[1]), *_gain(q[0], q[1]), m.shape[1]))
    return out


def cross_transfer_markdown(scores: list[CrossTransfer], portraits: int) -> str:
    title = (f"Cross-identity transfer ({portraits} portraits driven by the held-out clips; gain: rendered change "
             "over driving change, 1 = full strength, 0 = none):")
    rows = [title, "",
            "| clip | renders | mouth gain | mouth r | pose gain | pose r |", "|---|---|---|---|---|---|"]
    rows += [f"| {c.clip} | {c.n} | {c.mouth_gain:.2f} | {c.mouth_r:.3f} | {c.pose_gain:.2f} | {c.pose_r:.3f} |"
             for c in scores]
    return "\n".join(rows) + "\n"
