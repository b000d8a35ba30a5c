"""`infp eval conversation`: every model on every clip, scored the ways the dyadic literature and this
project score interactive heads (issue 22).

For each clip (the clip format; `video.mp4` optional) and each model, the model animates the clip's
first frame with a face (audio-only clips: the `--portrait`) from the clip's two tracks; stage 1 renders
the face crop at the clip's size and MediaPipe measures it. Three groups of numbers:

- **dyadic** (`eval.dyadic`, as DIM and DualTalk define them): FD, paired FD, MSE, SID, Var and rPCC of
  the generated motion against the clip's real motion, in three feature sets: the motion latents (E_m
  of the real frames against the generated latents), the head pose (yaw, pitch, roll) and the
  expression (mouth opening, eye opening, mouth width) measured on both videos. The interlocutor signal
  of paired FD and rPCC is the two tracks' loudness per frame: the clip format has no partner face.
  Clips with a video only.
- **behaviour** per track, which needs no truth: mouth ~ each track's loudness, the mouth while
  speaking and listening, role contrast, pitch speed while listening, head speed, nods where the truth
  nods (synthetic clips), switch and window-join jumps. The real video gets the same row.
- **image** (clips with a video): SSIM, PSNR, LPIPS, FID, face sharpness ratio and identity distance of
  the generated frames against the real frames at the same times. A video generated from audio is not
  a reconstruction, so these say how far the output is from the footage, not whether its motion is right.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from infp import FPS, SAMPLES_PER_FRAME
from infp.data.behaviour import speech_level
from infp.data.clip import Clip
from infp.diffusion.sampling import window_schedule
from infp.errors import InfpError, NoFaceError
from infp.eval.behaviour import pearson
from infp.eval.dyadic import DYADIC_ROWS, DyadicScores, dyadic_scores
from infp.eval.motion import measure_landmarks
from infp.eval.motion_metrics import (
    floor_from_utterances,
    jump_ratio,
    masked_mean,
    nod_scores,
    step_sizes,
    turn_changes,
    window_joins,
)
from infp.eval.real import _frames_at, _rendered, mouth_activity, own_latents
from infp.face import topology as tp
from infp.face.expression import eye_opening, mouth_opening
from infp.face.pose import head_pose
from infp.timeline import fit_rows

log = logging.getLogger(__name__)
NAN = float("nan")
REAL = "real video"
GROUPS = {"latent": 40, "pose": 20, "expression": 40}  # feature set -> SID's k (DIM: 20 pose, 40 expression)


# -- features ---------------------------------------------------------------------------------------

def pose_features(landmarks: np.ndarray) -> np.ndarray:
    """(T, 3) yaw, pitch, roll in degrees; NaN where no face."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return head_pose(np.asarray(landmarks, np.float64)).astype(np.float64)


def expression_features(landmarks: np.ndarray) -> np.ndarray:
    """(T, 3) mouth opening, eye opening and mouth width (lip corner to corner over face height)."""
    lm = np.asarray(landmarks, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        height = np.linalg.norm(lm[:, tp.CHIN, :2] - lm[:, tp.FOREHEAD, :2], axis=-1)
        width = np.linalg.norm(lm[:, tp.MOUTH_LEFT, :2] - lm[:, tp.MOUTH_RIGHT, :2], axis=-1) / height
        return np.stack([mouth_opening(lm), eye_opening(lm), width], 1)


# -- behaviour per track ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Roles:
    """Who speaks when, from the clip's two tracks."""

    level_agent: np.ndarray  # (T,) loudness 0..1 (`speech_level`)
    level_partner: np.ndarray
    voice_agent: np.ndarray  # (T,) bool: the agent's track has voice (Silero VAD)
    voice_partner: np.ndarray
    changes: np.ndarray  # turn-change frames
    nod: np.ndarray | None  # (T,) bool ground-truth listening nods (synthetic clips)

    @property
    def speaking(self) -> np.ndarray:
        """The agent's track has voice and the partner's not."""
        return self.voice_agent & ~self.voice_partner

    @property
    def listening(self) -> np.ndarray:
        return self.voice_partner & ~self.voice_agent

    @property
    def other(self) -> np.ndarray:
        """(T, 2) the interlocutor signal of paired FD and rPCC: both tracks' loudness."""
        return np.stack([self.level_agent, self.level_partner], 1).astype(np.float64)


@dataclass(frozen=True)
class TrackScores:
    """How one video's face follows the two tracks (MediaPipe)."""

    frames: int  # frames with a face
    mouth_agent_r: float  # Pearson of the mouth opening with the agent's loudness
    mouth_partner_r: float  # ... with the partner's
    mouth_speaking: float  # mean opening while speaking
    mouth_listening: float  # ... while listening
    mouth_agent_r_overlap: float  # Pearson with the agent's loudness where both tracks have voice
    speed_speaking: float  # mean |change| of the opening per frame while speaking
    speed_listening: float
    role_contrast: float  # speed_speaking / speed_listening
    pitch_speed_listening: float  # deg / frame
    head_speed: float  # mean |change| of yaw and pitch, deg / frame
    nod_r_listening: float  # nods where the truth nods (synthetic clips), listening frames
    switch_jump: float  # landmark step at turn changes / median step
    join_jump: float  # ... at the sampler's window joins


TRACK_ROWS = {
    "mouth_agent_r": ("mouth ~ agent speech (r)", "Pearson r of the mouth opening with the agent track's loudness: high"),
    "mouth_partner_r": ("mouth ~ partner speech (r)", "... with the partner's: near zero or below (the mouth does not follow the other voice)"),
    "mouth_speaking": ("mouth while speaking", "mean inner-lip gap / face height where only the agent's track has voice"),
    "mouth_listening": ("mouth while listening", "the same where only the partner's has voice: small (closed lips)"),
    "mouth_agent_r_overlap": ("mouth ~ agent speech in overlaps (r)", "the same where both tracks have voice: does it keep talking with its own voice when the other cuts in"),
    "role_contrast": ("role contrast", "mouth speed speaking / listening (issue 20: >= 3; real speaker and listener footage 3.5)"),
    "pitch_speed_listening": ("pitch speed listening (deg/frame)", "nodding raises it"),
    "head_speed": ("head speed (deg/frame)", "mean |change| of yaw and pitch: compare with the real video"),
    "nod_r_listening": ("nod ~ GT nods, listening (r)", "synthetic clips: the 9-frame pitch speed against the true nods over listening frames"),
    "switch_jump": ("switch jump", "landmark step within 2 frames of a turn change / the median step: about 1 = no jump"),
    "join_jump": ("join jump", "the same at the sampler's window joins: about 1 = smooth joins"),
}


def track_scores(landmarks: np.ndarray, roles: Roles, joins: np.ndarray) -> TrackScores:
    lm = np.asarray(landmarks, np.float64)
    pose, expr = pose_features(lm), expression_features(lm)
    mouth, pitch = expr[:, 0], pose[:, 1]
    ok = np.isfinite(mouth)
    speaking, listening = mouth_activity(mouth, roles.speaking), mouth_activity(mouth, roles.listening)
    nods = nod_scores(pitch, roles.nod, roles.listening, roles.speaking) if roles.nod is not None else None
    head = np.nanmean(np.abs(np.diff(pose[:, :2], axis=0)), axis=1) if len(pose) > 1 else np.zeros(0)
    steps = step_sizes(lm[..., :2])
    return TrackScores(
        int(ok.sum()), pearson(mouth, roles.level_agent), pearson(mouth, roles.level_partner),
        speaking.mean, listening.mean, _pearson_where(mouth, roles.level_agent, roles.voice_agent & roles.voice_partner),
        speaking.speed, listening.speed, _ratio(speaking.speed, listening.speed),
        masked_mean(np.abs(np.diff(pitch, prepend=np.nan)), roles.listening),
        float(np.nanmean(head)) if np.isfinite(head).any() else NAN,
        nods.corr_listening if nods is not None else NAN,
        jump_ratio(steps, roles.changes, radius=2), jump_ratio(steps, joins))


def _pearson_where(x: np.ndarray, y: np.ndarray, mask: np.ndarray) -> float:
    """Pearson r over the masked frames; NaN with fewer than MIN_FRAMES of them."""
    from infp.eval.real import MIN_FRAMES

    return pearson(x[mask], y[mask]) if mask.sum() >= MIN_FRAMES else NAN


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else NAN


def pool_tracks(scores: list[TrackScores]) -> TrackScores:
    """Clips as one: every value weighted by the clip's frames with a face, over the clips where it is
    defined; the role contrast is the ratio of the pooled speeds."""
    w = np.array([s.frames for s in scores], np.float64)
    out: dict = {"frames": int(w.sum())}
    for f in fields(TrackScores)[1:]:
        v = np.array([getattr(s, f.name) for s in scores], np.float64)
        ok = np.isfinite(v) & (w > 0)
        out[f.name] = float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else NAN
    out["role_contrast"] = _ratio(out["speed_speaking"], out["speed_listening"])
    return TrackScores(**out)


# -- image quality ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageQuality:
    """Generated frames against the real frames at the same times (NaN: not computed)."""

    frames: int
    ssim: float
    psnr: float
    lpips: float
    fid: float
    sharpness: float  # face variance-of-Laplacian, generated / real
    identity: float  # dlib descriptor distance, generated frame -> the portrait (below 0.6: the same person)
    identity_real: float  # real frame -> the portrait: the reference


IMAGE_ROWS = {
    "ssim": ("SSIM", "higher is closer to the footage"), "psnr": ("PSNR (dB)", "higher is closer"),
    "lpips": ("LPIPS", "lower is closer"), "fid": ("FID", "lower is closer (biased upwards with few frames)"),
    "sharpness": ("sharpness ratio", "face sharpness generated / real: 1 = as sharp"),
    "identity": ("identity distance", "dlib distance to the portrait: below 0.6 = the same person"),
}


@dataclass
class ImageScorer:
    """SSIM, PSNR, LPIPS, FID, sharpness and identity accumulated over (generated, real) frame pairs;
    every tool optional (None: that column is NaN)."""

    fid_features: torch.nn.Module | None = None
    lpips: torch.nn.Module | None = None
    identity: object | None = None  # infp.eval.identity.IdentityEncoder
    batch: int = 16
    _metrics: object = None
    _ids: list = field(default_factory=list)
    _pending: list = field(default_factory=list)
    _source: tuple | None = None

    def __post_init__(self) -> None:
        from infp.eval.metrics import FrameMetrics

        self._metrics = FrameMetrics(self.fid_features)

    def start_clip(self, source: np.ndarray, source_points: np.ndarray) -> None:
        self.flush()
        self._source = (source, source_points)

    def add(self, generated: np.ndarray, real: np.ndarray, real_points: np.ndarray) -> None:
        self._pending.append((generated, real, real_points))
        if len(self._pending) >= self.batch:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        if not self._pending:
            return
        from infp.eval.identity import face_boxes, identity_scores

        gen, real, pts = (np.stack(x) for x in zip(*self._pending))
        self._pending = []
        g = torch.from_numpy(gen).permute(0, 3, 1, 2).float() / 255
        r = torch.from_numpy(real).permute(0, 3, 1, 2).float() / 255
        lp = self.lpips(g, r).cpu() if self.lpips is not None else None
        ok = np.isfinite(pts).all((1, 2))
        boxes = torch.from_numpy(face_boxes(pts)).float() if ok.all() else None
        self._metrics.update(g, r, boxes=boxes, lpips=lp)
        if self.identity is not None and ok.any() and self._source is not None:
            src, src_pts = self._source
            self._ids.append(identity_scores(self.identity, gen[ok], real[ok], src, face_boxes(pts[ok]),
                                             face_boxes(src_pts[None])[0]))

    def compute(self) -> ImageQuality | None:
        from infp.eval.identity import pooled_identity

        self.flush()
        if self._metrics.n_frames == 0:
            return None
        s = self._metrics.compute()
        ident = pooled_identity(self._ids) if self._ids else None
        return ImageQuality(s.n_frames, s.ssim, s.psnr, getattr(s, "lpips", None) or NAN,
                            NAN if s.fid is None else s.fid, s.sharpness,
                            ident.to_source if ident else NAN, ident.truth_to_source if ident else NAN)


# -- the report -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipEntry:
    name: str
    kind: str  # synthetic / real / audio-only
    frames: int
    tracks: dict[str, TrackScores]  # REAL and each model
    plot: str | None  # the timeline PNG, relative to the report


@dataclass(frozen=True)
class ConversationReport:
    settings: dict
    models: list[str]
    clips: list[ClipEntry]
    tracks: dict[str, TrackScores]  # pooled: REAL (clips with a video) and each model
    dyadic: dict[str, dict[str, DyadicScores]]  # model -> feature set -> scores
    image: dict[str, ImageQuality | None]  # model -> scores (None: no clip with a video)
    skipped: dict[str, str]
    notes: list[str]
    wall_s: float

    def markdown(self) -> str:
        s = self.settings
        cols = ([REAL] if REAL in self.tracks else []) + self.models
        lines = ["# Conversation evaluation", "",
                 f"- clips: {len(self.clips)} ({', '.join(f'{k} {v}' for k, v in _kinds(self.clips).items())}), "
                 f"{sum(c.frames for c in self.clips) / FPS:.1f} s; {len(self.skipped)} skipped",
                 f"- sampling: {s['steps']} DDIM steps, guidance {s['guidance']}, seed {s['seed']}, "
                 f"{'live schedule' if s['live'] else 'overlap ' + str(s['overlap'] if s['overlap'] is not None else 'default')}",
                 *[f"- `{m}`: {s['checkpoints'].get(m, '')}" for m in self.models],
                 f"- wall time {self.wall_s:.0f} s on {s.get('device', '?')}", *[f"- {n}" for n in self.notes], ""]
        lines += ["## Behaviour per track", "", "Pooled over clips, frame-weighted (MediaPipe on the rendered crops; "
                  "the real video's own row where there is one).", "", _table(cols, TRACK_ROWS, self.tracks), ""]
        if self.dyadic:
            lines += ["## Dyadic metrics (DIM / DualTalk)", "",
                      "Generated motion against the clip's real motion, per feature set; the interlocutor signal "
                      "of paired FD and rPCC is both tracks' loudness.", ""]
            for group in GROUPS:
                per = {m: d[group] for m, d in self.dyadic.items() if group in d}
                if per:
                    lines += [f"### {group}", "", _table(list(per), DYADIC_ROWS, per), ""]
        if any(v is not None for v in self.image.values()):
            per = {m: q for m, q in self.image.items() if q is not None}
            frames = next(iter(per.values())).frames
            lines += ["## Image quality", "", f"Generated frames against the real frames at the same times ({frames} "
                      "frame pairs per model).", "", _table(list(per), IMAGE_ROWS, per), ""]
        lines += ["## Clips", "", "| clip | kind | seconds | " + " | ".join(f"role contrast {c}" for c in cols) + " | plot |",
                  "|---" * (len(cols) + 4) + "|"]
        for c in self.clips:
            rc = [_fmt(c.tracks[m].role_contrast) if m in c.tracks else "" for m in cols]
            lines.append(f"| {c.name} | {c.kind} | {c.frames / FPS:.1f} | " + " | ".join(rc)
                         + f" | {f'![]({c.plot})' if c.plot else ''} |")
        if self.skipped:
            lines += ["", "Skipped:", *[f"- {k}: {v}" for k, v in self.skipped.items()]]
        lines += ["", "Rows:", *[f"- **{label}**: {why}" for rows in (TRACK_ROWS, DYADIC_ROWS, IMAGE_ROWS)
                                 for label, why in rows.values()]]
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        strict = json.loads(json.dumps(asdict(self)), parse_constant=lambda _: None)  # NaN -> null
        return json.dumps(strict, indent=2) + "\n"


def _kinds(clips: list[ClipEntry]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in clips:
        out[c.kind] = out.get(c.kind, 0) + 1
    return out


def _fmt(v: float) -> str:
    """3 decimals, 3 significant digits below 0.1 (expression features are fractions of the face)."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.1f}" if abs(v) >= 100 else f"{v:.3f}" if abs(v) >= 0.1 or v == 0 else f"{v:.3g}"


def _table(cols: list[str], rows: dict, values: dict) -> str:
    out = ["| metric | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for key, (label, _) in rows.items():
        out.append(f"| {label} | " + " | ".join(_fmt(getattr(values[c], key)) for c in cols) + " |")
    return "\n".join(out)


# -- running it -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ConversationEvalSettings:
    steps: int = 20
    guidance: float = 3.0
    seed: int = 0
    overlap: int | None = None
    live: bool = False
    expression: str = "neutral"
    max_seconds: float | None = None  # the first S seconds of each clip
    image_every: int = 25  # image metrics on every k-th frame (0: none): LPIPS is a VGG16 pass per pair
    videos: int = 1  # write the generated videos of the first N clips
    plots: bool = True
    progress: bool = False


@dataclass(frozen=True)
class Model:
    """One model under evaluation: a name and a pipeline (`InfpPipeline`: its stage 2 on the shared stage 1)."""

    name: str
    pipe: object


@dataclass
class _Pooled:
    """What the report pools over clips, per model."""

    gt: dict = field(default_factory=lambda: {g: [] for g in GROUPS})
    pred: dict = field(default_factory=lambda: {g: [] for g in GROUPS})
    other: list = field(default_factory=list)
    tracks: list = field(default_factory=list)


def clip_roles(clip: Clip, n: int) -> tuple[Roles, np.ndarray, np.ndarray]:
    """(roles, agent samples, partner samples) of a clip's first n frames."""
    from infp.audio.vad import voice_activity

    agent, partner = (fit_rows(t, n * SAMPLES_PER_FRAME) for t in clip.tracks())
    va, vp = (np.asarray(voice_activity(t), bool)[:n] for t in (agent, partner))
    va, vp = fit_rows(va, n), fit_rows(vp, n)
    utt = clip.meta.extra.get("utterances")
    floor = floor_from_utterances(utt, n) if utt is not None else (va, vp)
    beh = clip.behaviour()
    nod = beh.nod[:n].astype(bool) if beh is not None and len(beh) >= n else None
    return Roles(speech_level(agent)[:n], speech_level(partner)[:n], va, vp, turn_changes(*floor), nod), agent, partner


def _scored(frames: Iterable[np.ndarray], real: Iterator[np.ndarray] | None, points: np.ndarray | None,
            scorer: ImageScorer | None, every: int) -> Iterator[np.ndarray]:
    """The generated frames, unchanged; every `every`-th one also goes to `scorer` with the real frame."""
    for t, frame in enumerate(frames):
        r = next(real, None) if real is not None else None
        if scorer is not None and r is not None and every and t % every == 0 and np.isfinite(points[t]).all():
            scorer.add(frame, r, points[t])
        yield frame


@dataclass(frozen=True)
class _Truth:
    """What a clip gives to compare with: its tracks and roles, and where it has a video, the real motion."""

    roles: Roles
    agent: np.ndarray  # (n * 640,) 16 kHz
    partner: np.ndarray
    first: np.ndarray  # the image every model animates: the first frame with a face, or the --portrait
    landmarks: np.ndarray | None  # (n, 478, 3) the real video's, NaN where no face (None: audio only)
    motion: dict[str, np.ndarray] | None  # feature set -> (n, D) the real motion


def _truth(clip: Clip, n: int, pipe, portrait: tuple[str, np.ndarray] | None) -> _Truth | str:
    """A clip's truth, or why it is skipped."""
    roles, agent, partner = clip_roles(clip, n)
    if not clip.video.is_file():
        if portrait is None:
            return "audio only (no video.mp4) and no --portrait to animate"
        return _Truth(roles, agent, partner, portrait[1], None, None)
    lm = fit_rows(clip.landmarks().astype(np.float64), n, np.nan)  # frames past the stored ones have no face
    faces = np.flatnonzero(np.isfinite(lm).all((1, 2)))
    if not len(faces):
        return "no frame with a face"
    motion = {"latent": own_latents(pipe, clip, n).astype(np.float64), "pose": pose_features(lm),
              "expression": expression_features(lm)}
    return _Truth(roles, agent, partner, _frame_at(clip, int(faces[0])), lm, motion)


def _joins(pipe, n: int, s: ConversationEvalSettings) -> np.ndarray:
    cfg = pipe.stage2.model.cfg
    return window_joins(n, cfg.window, *window_schedule(cfg, s.overlap, s.live))


def evaluate_conversation(models: list[Model], clips: list[tuple[str, Clip]], settings: ConversationEvalSettings,
                          out: Path, portrait: tuple[str, np.ndarray] | None = None,
                          scorers: dict[str, ImageScorer] | None = None, info: dict | None = None) -> ConversationReport:
    """Score every model on every clip (module doc). `clips`: (label, clip); `portrait`: (name, RGB image)
    for the clips without a video; `scorers`: an `ImageScorer` per model (None: no image metrics)."""
    from infp.eval.plots import bars_png, timeline_png

    t0, s = time.perf_counter(), settings
    pooled = {m.name: _Pooled() for m in models}
    real_tracks, entries, skipped = [], [], {}
    for label, clip in tqdm(clips, desc="eval conversation", unit="clip", disable=not s.progress):
        n = clip.meta.n_frames if s.max_seconds is None else min(clip.meta.n_frames, round(s.max_seconds * FPS))
        truth = _truth(clip, n, models[0].pipe, portrait)
        if isinstance(truth, str):
            skipped[label] = truth
            continue
        try:
            generated = {m.name: _generate(m, clip, label, truth, n, s, out if len(entries) < s.videos else None,
                                           (scorers or {}).get(m.name)) for m in models}
        except NoFaceError:  # the same image for every model: the first one finds out
            skipped[label] = "no face found in its first frame with a face (MediaPipe on the crop)"
            continue
        tracks, mouth, pitch = {}, {}, {}
        if truth.landmarks is not None:  # the real video, at the first model's window joins
            tracks[REAL] = track_scores(truth.landmarks, truth.roles, _joins(models[0].pipe, n, s))
            real_tracks.append(tracks[REAL])
            mouth[REAL], pitch[REAL] = truth.motion["expression"][:, 0], truth.motion["pose"][:, 1]
        for m in models:
            z, lm = generated[m.name]
            tracks[m.name], p = track_scores(lm, truth.roles, _joins(m.pipe, n, s)), pooled[m.name]
            features = {"latent": z.astype(np.float64), "pose": pose_features(lm), "expression": expression_features(lm)}
            mouth[m.name], pitch[m.name] = features["expression"][:, 0], features["pose"][:, 1]
            p.tracks.append(tracks[m.name])
            if truth.motion is not None:
                p.other.append(truth.roles.other)
                for g in GROUPS:
                    p.gt[g].append(truth.motion[g])
                    p.pred[g].append(features[g])
        plot = f"plots/{_safe(label)}.png" if s.plots else None
        if plot:
            timeline_png(out / plot, truth.roles.voice_agent, truth.roles.voice_partner, mouth, pitch, title=label,
                         reference=REAL if truth.landmarks is not None else None)
        entries.append(ClipEntry(label, "audio only" if truth.landmarks is None else clip.meta.kind, n, tracks, plot))
    if not entries:
        raise InfpError(f"no clip could be evaluated: {'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])}")
    notes = (["audio-only clips: behaviour rows only (no real motion or footage to compare with)"]
             if any(e.kind == "audio only" for e in entries) else [])
    dyadic = {m.name: {g: dyadic_scores(pooled[m.name].gt[g], pooled[m.name].pred[g], pooled[m.name].other, k, s.seed)
                       for g, k in GROUPS.items()} for m in models if pooled[m.name].other}
    tracks = ({REAL: pool_tracks(real_tracks)} if real_tracks else {}) | {
        m.name: pool_tracks(pooled[m.name].tracks) for m in models}
    image = {m.name: scorers[m.name].compute() if scorers else None for m in models}
    report = ConversationReport(
        {"steps": s.steps, "guidance": s.guidance, "seed": s.seed, "overlap": s.overlap, "live": s.live,
         "expression": s.expression, "max_seconds": s.max_seconds, "image_every": s.image_every, **(info or {})},
        [m.name for m in models], entries, tracks, dyadic, image, skipped, notes, time.perf_counter() - t0)
    if s.plots:
        bars_png(out / "plots" / "metrics.png", _bar_metrics(report), title="per model")
    return replace(report, wall_s=time.perf_counter() - t0)


def _generate(m: Model, clip: Clip, label: str, truth: _Truth, n: int, s: ConversationEvalSettings,
              videos: Path | None, scorer: ImageScorer | None) -> tuple[np.ndarray, np.ndarray]:
    """(latents (n, D), landmarks (n, 478, 3)) of model m's video of the clip; the video goes to `videos`
    when given, and every `image_every`-th frame pair to `scorer`."""
    from infp.pipeline.pipeline import Settings

    pipe = m.pipe
    portrait = pipe.prepare(truth.first, label, face_index=0, expression=s.expression)
    z = pipe.motion(portrait, truth.agent, truth.partner, steps=s.steps, guidance=s.guidance, seed=s.seed,
                    overlap=s.overlap, live=s.live)[:n]
    render = pipe.renderer(portrait, Settings(paste=False, size=clip.meta.size))
    lm, real = truth.landmarks, None
    if scorer is not None and lm is not None and s.image_every:
        scorer.start_clip(truth.first, lm[np.flatnonzero(np.isfinite(lm).all((1, 2)))[0]])  # identity's reference
        real = iter(clip.frames())
    frames = _scored(_rendered(render, z, np.arange(len(z))), real, lm, scorer, s.image_every)
    video = videos / f"{_safe(label)}_{_safe(m.name)}.mp4" if videos is not None else None
    out = measure_landmarks(frames, video, np.stack([truth.agent, truth.partner]) if video else None)
    return z, fit_rows(out, n, np.nan)


def _frame_at(clip: Clip, t: int) -> np.ndarray:
    frame = _frames_at(clip.frames(), [t]).get(t)
    if frame is None:
        raise InfpError(f"the video has no frame {t}", clip.video)
    return frame


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _bar_metrics(r: ConversationReport) -> dict[str, dict[str, float]]:
    """The report's headline numbers for the bar chart: behaviour, the pose and expression FD, image."""
    cols = ([REAL] if REAL in r.tracks else []) + r.models
    out = {label: {c: getattr(r.tracks[c], key) for c in cols} for key, (label, _) in TRACK_ROWS.items()}
    for group in ("pose", "expression"):
        for key in ("fd", "paired_fd", "rpcc"):
            vals = {m: getattr(d[group], key) for m, d in r.dyadic.items()}
            if vals:
                out[f"{DYADIC_ROWS[key][0]} ({group})"] = vals
    for key in ("lpips", "identity"):
        vals = {m: getattr(q, key) for m, q in r.image.items() if q is not None}
        if vals:
            out[IMAGE_ROWS[key][0]] = vals
    return out
