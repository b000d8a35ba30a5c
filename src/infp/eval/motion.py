"""Stage-2 evaluation: does generated motion speak with the agent's voice, listen to the partner, and
switch roles without a jump (INFP Sec. 3.2: roles from the two tracks alone, smooth window joins)?

On held-out synthetic conversations (ground truth in `behaviour.npz`) each checkpoint generates the
latents of the clip's own two tracks, from the latent of its first frame with a face. They are read
two ways. Rendered: stage 1 renders them from that frame and MediaPipe measures the frames, as it
measured the clip's video ("GT video"); the true latents rendered are the best stage 1 can show.
Latent probe: a ridge regression fitted from the true latents to the behaviour's mouth opening and
head pitch decodes the generated latents, with neither stage 1 nor MediaPipe in the way.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from infp import FPS, SAMPLES_PER_FRAME
from infp.data.behaviour import speech_level
from infp.data.clip import Clip
from infp.data.motion import compute_latents, track_activity
from infp.diffusion.sampling import generate, window_schedule
from infp.diffusion.schedule import DiffusionConfig
from infp.errors import InfpError
from infp.eval.behaviour import pearson
from infp.eval.motion_metrics import (
    Probe,
    fit_probe,
    floor_from_utterances,
    heldout_r2,
    jump_ratio,
    masked_mean,
    nod_scores,
    r2,
    step_sizes,
    turn_changes,
    window_joins,
)
from infp.face.expression import mouth_opening
from infp.face.pose import head_pose
from infp.models import Imitator
from infp.models.motion_generator import MotionGenerator
from infp.timeline import fit_rows

log = logging.getLogger(__name__)
NAN = float("nan")
GT_VIDEO, GT_RENDERED, GT_PROBE = "GT video", "GT latents (rendered)", "GT latents (probe)"


# -- scores ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipTruth:
    """What a clip's audio and ground truth say, frame by frame."""

    level_agent: np.ndarray  # (T,) loudness of A_self, 0..1 (`speech_level`)
    level_partner: np.ndarray
    speaking: np.ndarray  # (T,) bool: the agent's track has voice (VAD)
    listening: np.ndarray  # (T,) bool: the partner's track has voice and the agent's not
    nod: np.ndarray  # (T,) bool: a ground-truth listening nod
    changes: np.ndarray  # turn-change frames


@dataclass(frozen=True)
class Signals:
    """What one source (a video, or latents through the probe) shows of a clip."""

    mouth: np.ndarray  # (T,)
    pitch: np.ndarray  # (T,) degrees
    steps: np.ndarray  # (T,) step sizes d_t (landmarks or standardised latents)
    spread: float = NAN  # latents: mean per-dimension std over the clip (standardised units)


@dataclass(frozen=True)
class MotionScores:
    face_found: float
    mouth_vs_agent: float
    mouth_vs_partner: float
    mouth_speaking: float
    mouth_listening: float
    pitch_speed_listening: float
    pitch_speed_speaking: float
    nod_corr: float
    nod_corr_listening: float
    nod_speed_ratio: float
    switch_jump: float
    join_jump: float
    latent_spread: float


def score(sig: Signals, truth: ClipTruth, joins: np.ndarray) -> MotionScores:
    """One source's scores on one clip; `joins`: the frames where the sampler's windows join."""
    m, nods = sig.mouth, nod_scores(sig.pitch, truth.nod, truth.listening, truth.speaking)
    return MotionScores(
        face_found=float(np.isfinite(m).mean()) if len(m) else NAN,
        mouth_vs_agent=pearson(m, truth.level_agent), mouth_vs_partner=pearson(m, truth.level_partner),
        mouth_speaking=masked_mean(m, truth.speaking), mouth_listening=masked_mean(m, truth.listening),
        pitch_speed_listening=nods.speed_listening, pitch_speed_speaking=nods.speed_speaking,
        nod_corr=nods.corr, nod_corr_listening=nods.corr_listening, nod_speed_ratio=nods.ratio,
        switch_jump=jump_ratio(sig.steps, truth.changes, radius=2), join_jump=jump_ratio(sig.steps, joins),
        latent_spread=sig.spread)


def aggregate(scores: list[MotionScores], weights: list[float]) -> MotionScores:
    """Frame-weighted mean of per-clip values, each over the clips where it is defined."""
    w = np.asarray(weights, np.float64)
    out = {}
    for f in fields(MotionScores):
        v = np.array([getattr(s, f.name) for s in scores], np.float64)
        ok = np.isfinite(v)
        out[f.name] = float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() and w[ok].sum() > 0 else NAN
    return MotionScores(**out)


def landmark_signals(landmarks: np.ndarray) -> Signals:
    with np.errstate(invalid="ignore", divide="ignore"):
        return Signals(mouth_opening(landmarks), head_pose(landmarks)[:, 1], step_sizes(landmarks[..., :2]))


def latent_signals(z: np.ndarray, probe: Probe, scale: np.ndarray) -> Signals:
    """Mouth and pitch decoded by the probe; steps and spread in latents standardised by `scale`."""
    y, zs = probe(z), np.asarray(z, np.float64) / scale
    ok = np.isfinite(zs).all(1)
    return Signals(y[:, 0], y[:, 1], step_sizes(zs), float(zs[ok].std(0).mean()) if ok.sum() > 1 else NAN)


# -- the report -----------------------------------------------------------------------------------

ROWS = {  # field: (row label, explanation)
    "face_found": ("face found", "share of frames where MediaPipe found the face (probe columns: frames with a latent); the other rows of a column rest on those frames only"),
    "mouth_vs_agent": ("mouth ~ agent speech (r)", "Pearson of the mouth opening with the loudness of A_self: high"),
    "mouth_vs_partner": ("mouth ~ partner speech (r)", "... with the loudness of A_other: turn-taking makes it negative in the truth; a model that moves its mouth with the partner's voice scores higher"),
    "mouth_speaking": ("mouth while speaking", "mean opening where the agent's track has voice (VAD); video columns: inner-lip gap / face height, probe columns: the behaviour's jaw opening 0..1"),
    "mouth_listening": ("mouth while listening", "mean opening where only the partner's track has voice: low (closed mouth)"),
    "pitch_speed_listening": ("pitch speed listening (deg/s)", "mean |d pitch / dt| while listening: nods raise it"),
    "pitch_speed_speaking": ("pitch speed speaking (deg/s)", "the same while speaking"),
    "nod_corr": ("nod ~ GT nods (r)", "Pearson of the 9-frame moving average of |d pitch / dt| with the ground-truth nod flag"),
    "nod_corr_listening": ("nod ~ GT nods, listening (r)", "the same over the frames where the agent listens or nods: the speaking frames, where a lively head would mask it, left out"),
    "nod_speed_ratio": ("pitch speed in GT nods / listening", "mean |d pitch / dt| during ground-truth nods over that while listening without one: about 1 = no nods where the truth nods"),
    "switch_jump": ("switch jump", "mean step within 2 frames of a turn change / median step; about 1 = no jump (GT columns: how much the true motion changes there)"),
    "join_jump": ("join jump", "mean step at the sampler's window joins / median step; about 1 = smooth joins (GT: the same frames of the true motion)"),
    "latent_spread": ("latent spread", "mean per-dimension std of the latents over a clip, in units of the GT latents' pooled std: does it move as much as the truth"),
}


def _fmt(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


@dataclass(frozen=True)
class ClipResult:
    id: str
    n_frames: int
    turn_changes: list[int]
    scores: dict[str, MotionScores]  # column -> scores


@dataclass(frozen=True)
class MotionReport:
    settings: dict  # clips, seconds, steps, guidance, seed, overlap, style, imitator, checkpoints
    probe_r2: dict[str, float]  # "mouth"/"pitch" in-sample, "*_heldout" leave-one-clip-out
    columns: list[str]
    clips: list[ClipResult]
    overall: dict[str, MotionScores]
    skipped: dict[str, str] = field(default_factory=dict)

    def markdown(self) -> str:
        s, p = self.settings, self.probe_r2
        lines = [
            "# Stage-2 motion evaluation", "",
            f"- clips: {len(self.clips)} synthetic, {s['seconds']:.1f} s ({len(self.skipped)} skipped)",
            (f"- sampling: {s['steps']} DDIM steps, guidance {s['guidance']}, seed {s['seed']}, window overlap "
             f"{'the default (60% of the window)' if s.get('overlap') is None else s['overlap']}, style reference: {s['style']}"),
            f"- imitator: fingerprint {s.get('imitator_fingerprint', '?')} ({s.get('imitator', '?')})",
            *[f"- checkpoint `{n}`: {c}" for n, c in s.get("checkpoints", {}).items()],
            (f"- latent probe (ridge, GT latents -> behaviour mouth, pitch): R² on GT mouth {_fmt(p['mouth'])}, pitch "
             f"{_fmt(p['pitch'])}; leave-one-clip-out mouth {_fmt(p['mouth_heldout'])}, pitch {_fmt(p['pitch_heldout'])}"),
            "- values: frame-weighted mean of per-clip values, each over the clips where it is defined (n/a: nowhere)",
            "", "| metric | " + " | ".join(self.columns) + " |", "|---" * (len(self.columns) + 1) + "|"]
        for key, (label, _) in ROWS.items():
            lines.append(f"| {label} | " + " | ".join(_fmt(getattr(self.overall[c], key)) for c in self.columns) + " |")
        lines += ["", ("Rendered columns: the motion rendered by stage 1 and measured by MediaPipe; probe columns: "
                       "the latents decoded by the probe. Steps: of the landmarks (x, y) in video columns, of the "
                       "latents standardised per dimension by the GT latents' std in probe columns."), ""]
        lines += [f"- **{label}**: {why}" for label, why in ROWS.values()]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        """Everything, per clip and overall; NaN (undefined) as null."""
        strict = json.loads(json.dumps(asdict(self)), parse_constant=lambda _: None)  # NaN -> null
        return json.dumps(strict, indent=2) + "\n"


# -- models and clips -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Checkpoint:
    name: str
    path: Path
    model: MotionGenerator
    diffusion: DiffusionConfig
    featurizer: object  # infp.audio.mel.Featurizer


@dataclass(frozen=True)
class MotionEvalSettings:
    steps: int = 20
    guidance: float = 3.0
    seed: int = 0
    overlap: int | None = None  # frames each window shares with the one before (None: diffusion.sampling's default)
    live: bool = False  # the live schedule (diffusion.sampling.window_schedule)
    style: str = "none"  # "none": the neutral style; "clip": the clip's own GT latents as the reference
    render: bool = True
    videos: int = 1  # write the generated videos of the first N clips (needs render)
    batch: int = 16  # frames rendered at a time
    progress: bool = False


def _prepare(clip: Clip, imitator: Imitator) -> tuple | str:
    """(truth, behaviour, tracks, z_gt, first face frame) of a clip, or why it is skipped."""
    beh, n = clip.behaviour(), clip.meta.n_frames
    if beh is None or len(beh) != n:
        return "no ground truth (behaviour.npz): not a synthetic clip"
    z = fit_rows(compute_latents(clip, imitator), n, np.nan)
    faces = np.flatnonzero(np.isfinite(z).all(1))
    if len(faces) < 2:
        return f"{len(faces)} frame(s) with a face (< 2)"
    tracks = tuple(fit_rows(t, n * SAMPLES_PER_FRAME, 0.0) for t in clip.tracks())
    va, vp = (np.asarray(track_activity(t), bool)[:n] for t in tracks)
    utt = clip.meta.extra.get("utterances")
    agent, partner = (floor_from_utterances(utt, n) if utt is not None
                      else (beh.agent_speaking & ~beh.agent_backchannel, beh.partner_speaking))
    truth = ClipTruth(speech_level(tracks[0])[:n], speech_level(tracks[1])[:n], va, vp & ~va, beh.nod.astype(bool),
                      turn_changes(agent, partner))
    return truth, beh, tracks, z, int(faces[0])


def _generate(ck: Checkpoint, tracks, z_gt: np.ndarray, first: int, s: MotionEvalSettings, feats: dict) -> np.ndarray:
    f = ck.featurizer
    if f.name not in feats:  # checkpoints with the same features share them
        feats[f.name] = [torch.from_numpy(np.asarray(f(t), np.float32)) for t in tracks]
    agent, partner = feats[f.name]
    ref = torch.from_numpy(z_gt[np.isfinite(z_gt).all(1)][: ck.model.cfg.style_frames]) if s.style == "clip" else None
    z = generate(ck.model, ck.diffusion, agent, partner, torch.from_numpy(z_gt[first]), ref, s.steps, s.guidance, s.seed,
                 overlap=s.overlap, live=s.live)
    return z.float().cpu().numpy()


def render_frames(imitator: Imitator, source: np.ndarray, z_src: np.ndarray, z: np.ndarray, batch: int = 16) -> Iterator[np.ndarray]:
    """Stage 1 renders latents z (T, z) from one source crop (S, S, 3) uint8: (S, S, 3) uint8 frames."""
    from infp.runtime import ImitatorRuntime, to_uint8

    rt = ImitatorRuntime(imitator, batch=batch)
    app = rt.encode_appearance(source[None])
    for images in rt.render_batches(app, z_src, z):
        yield from to_uint8(images)


def measure_landmarks(frames: Iterable[np.ndarray], video: Path | None = None, audio: np.ndarray | None = None) -> np.ndarray:
    """(T, 478, 3) MediaPipe landmarks of frames (tracking mode), NaN where no face; the frames go to
    `video` on the way when given."""
    from contextlib import nullcontext

    from infp.face.landmarks import FaceMesh
    from infp.video.writer import VideoWriter

    out = []
    with FaceMesh(static=False) as mesh, (VideoWriter(video, audio=audio) if video else nullcontext()) as writer:
        for frame in frames:
            if writer is not None:
                writer.write(frame)
            faces = mesh.detect(frame)
            out.append(faces[0].points if faces else np.full((478, 3), np.nan, np.float32))
    return np.stack(out) if out else np.zeros((0, 478, 3), np.float32)


def _rendered(imitator, source, z_src, z, s: MotionEvalSettings, video: Path | None, audio) -> Signals:
    ok = np.isfinite(z).all(1)
    idx = np.maximum.accumulate(np.where(ok, np.arange(len(z)), -1))  # frames without a latent: the last one
    idx[idx < 0] = np.argmax(ok)
    lms = measure_landmarks(render_frames(imitator, source, z_src, z[idx], s.batch), video, audio)
    lms[~ok] = np.nan  # ... but not measured
    return landmark_signals(lms)


class _Evaluated(NamedTuple):
    id: str
    truth: ClipTruth
    target: np.ndarray  # (T, 2) behaviour mouth, pitch: what the probe learns
    signals: dict[str, Signals]  # rendered columns
    latents: dict[str, np.ndarray]  # probe columns -> (T, z)


def _evaluate_clip(clip: Clip, label: str, checkpoints: list[Checkpoint], imitator: Imitator, s: MotionEvalSettings,
                   videos: Path | None) -> _Evaluated | str:
    """Generate, render and measure one clip (or say why it is skipped); videos go to `videos` when given."""
    from infp.data.pairs import load_clip_frames

    got = _prepare(clip, imitator)
    if isinstance(got, str):
        return got
    truth, beh, tracks, z_gt, first = got
    sig = {GT_VIDEO: landmark_signals(fit_rows(clip.landmarks().astype(np.float64), len(z_gt), np.nan))}
    latents, feats = {GT_PROBE: z_gt}, {}
    source = load_clip_frames(clip, imitator.cfg.size, first + 1).frames[first]

    def render(z: np.ndarray, name: str) -> Signals:  # into videos/<label>_<name>.mp4 when given
        path = videos / re.sub(r"[^A-Za-z0-9_.-]", "_", f"{label}_{name}.mp4") if videos else None
        return _rendered(imitator, source, z_gt[first], z, s, path, np.stack(tracks))

    if s.render:
        sig[GT_RENDERED] = render(z_gt, "gt_latents")
    for ck in tqdm(checkpoints, desc=label, unit="checkpoint", leave=False, disable=not s.progress):
        z = latents[f"{ck.name} (probe)"] = _generate(ck, tracks, z_gt, first, s, feats)
        if s.render:
            sig[f"{ck.name} (rendered)"] = render(z, ck.name)
    return _Evaluated(label, truth, np.stack([beh.mouth, beh.pitch], 1), sig, latents)


def clip_labels(clips: list[Clip]) -> list[str]:
    """One name per clip for the report and the video files: its id, or folder/id where two data
    folders hold the same id (`infp synth` numbers every folder's clips from clip_00000)."""
    ids = [c.meta.id for c in clips]
    if len(set(ids)) == len(ids):
        return ids
    return [f"{c.path.parent.name}/{c.meta.id}" for c in clips]


def evaluate_motion(checkpoints: list[Checkpoint], imitator: Imitator, clips: list[Clip], settings: MotionEvalSettings,
                    out: Path | None = None, info: dict | None = None) -> MotionReport:
    """Score every checkpoint on the synthetic clips (see the module doc); the first `settings.videos`
    clips' videos go to `out`. `info` (imitator, checkpoints, ...) is recorded in the report."""
    kept, skipped = [], {}
    imitator.eval()
    for clip, label in tqdm(list(zip(clips, clip_labels(clips))), desc="eval motion", unit="clip",
                            disable=not settings.progress):
        videos = out if settings.render and len(kept) < settings.videos else None
        got = _evaluate_clip(clip, label, checkpoints, imitator, settings, videos)
        if isinstance(got, str):
            skipped[label] = got
            log.info("skipping clip %s: %s", label, got)
        else:
            kept.append(got)
    if not kept:
        raise InfpError(f"no clip could be evaluated: {'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])}")
    s = settings
    info = {"clips": len(kept), "seconds": sum(len(k.target) for k in kept) / FPS, "steps": s.steps,
            "guidance": s.guidance, "seed": s.seed, "overlap": s.overlap, "live": s.live, "style": s.style, **(info or {})}
    return _report(kept, checkpoints, s, info, skipped)


def _report(kept: list[_Evaluated], checkpoints: list[Checkpoint], s: MotionEvalSettings, info: dict,
            skipped: dict) -> MotionReport:
    """Fit the probe on the pooled GT latents, decode every latent column with it, score and aggregate."""
    zs, ys = [k.latents[GT_PROBE] for k in kept], [k.target for k in kept]
    pooled = np.concatenate(zs)
    probe, scale = fit_probe(pooled, np.concatenate(ys)), np.nanstd(pooled[np.isfinite(pooled).all(1)], axis=0)
    fit, held = r2(np.concatenate(ys), probe(pooled)), heldout_r2(zs, ys)
    names = [c.name for c in checkpoints]
    columns = ([GT_VIDEO, GT_RENDERED, *(f"{n} (rendered)" for n in names)] if s.render else [GT_VIDEO]) + [
        GT_PROBE, *(f"{n} (probe)" for n in names)]
    # each checkpoint's joins are its own sampler's; the GT columns use the first checkpoint's frames
    tiling = {c: (ck.model.cfg.window, *window_schedule(ck.model.cfg, s.overlap, s.live))
              for ck in checkpoints for c in (f"{ck.name} (rendered)", f"{ck.name} (probe)")}
    first = tiling[f"{checkpoints[0].name} (probe)"]
    results = []
    for k in kept:
        n = len(k.target)
        sig = k.signals | {c: latent_signals(z, probe, np.maximum(scale, 1e-8)) for c, z in k.latents.items()}
        scores = {c: score(sig[c], k.truth, window_joins(n, *tiling.get(c, first)))
                  for c in columns}
        results.append(ClipResult(k.id, n, k.truth.changes.tolist(), scores))
    weights = [r.n_frames for r in results]
    overall = {c: aggregate([r.scores[c] for r in results], weights) for c in columns}
    r2s = {"mouth": fit[0], "pitch": fit[1], "mouth_heldout": held[0], "pitch_heldout": held[1]}
    return MotionReport(info, {k: float(v) for k, v in r2s.items()}, columns, results, overall, skipped)
