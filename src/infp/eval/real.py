"""Stage 2 against real people (issue 20, item 5): does a generated head move like a real speaker?

For each held-out real talking clip (docs/clip-format.md) the pipeline animates the clip's first frame
with the clip's own speech as A_self and a silent A_other. MediaPipe measures the real crops and the
generated crops the same way (tracking mode, `motion.measure_landmarks`), and each measure of the
generated video is given as a ratio to the real one: head pitch and yaw amplitude (std over the clip)
and speed (mean |change| per frame), blink rate, mouth activity (std and speed of the opening). The
mouth's Pearson r with the agent's loudness is given for both videos side by side. A real clip is one
sample of one person: a ratio of 1 says "moves as much as this person did", not "moves as they did".

Roles (issue 20, Show): with `turns`, a two-track conversation is built from the clips' own speech
(the agent's turns from some clips, the partner's from the others), the pipeline animates one portrait
in it, and the generated mouth's activity while the agent speaks is compared with its activity while
it listens (Silero VAD on each track decides which). As a reference, the same contrast is taken on each
real clip between its speech frames and its own pauses.

Stage 1's ceiling: with `ceiling`, each clip's own motion (E_m's latents of its real frames) is rendered
from the same first frame by the same stage 1 and measured the same way. Ceiling / real is how much of
a real person's motion stage 1 can show at all; generated / ceiling compares stage 2 with real motion
inside E_m's space, which is what stage 2 can be asked for.
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

import cv2
import numpy as np
from tqdm import tqdm

from infp import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from infp.data.behaviour import speech_level
from infp.data.clip import Clip
from infp.data.contact import label, pick, sheet
from infp.errors import InfpError, NoFaceError
from infp.eval.behaviour import pearson
from infp.eval.turns import GAP_S, LEVEL_DBFS, OVERLAP_S, Speech, Turn, build_conversation, role_masks
from infp.face.expression import eye_opening, mouth_opening
from infp.face.pose import head_pose
from infp.timeline import fit_rows

log = logging.getLogger(__name__)
NAN = float("nan")
BLINK_CLOSE, BLINK_REOPEN = 0.5, 0.75  # eye opening relative to the clip's median: a blink starts below
# 0.5x and ends back above 0.75x (on held-out real clips the lids dip to 0.1-0.45x in a blink)
MIN_SPEECH = 0.2  # share of frames with voice (VAD) a clip's agent track needs, as in `infp train motion`
TILE = 256  # side of each contact-sheet frame


# -- the measures: pure functions on arrays -----------------------------------------------------------

def amplitude(x: np.ndarray) -> float:
    """Std of `x` over the frames where it is defined (NaN with fewer than two)."""
    v = np.asarray(x, np.float64)
    v = v[np.isfinite(v)]
    return float(v.std()) if len(v) >= 2 else NAN


def speed(x: np.ndarray, every: int = 1) -> float:
    """Mean |change| per frame between consecutive samples of `x` taken `every` frames apart (a change
    over k frames counts as change / k: with every > 1 jitter between the samples is not seen)."""
    d = np.abs(np.diff(np.asarray(x, np.float64))) / every
    d = d[np.isfinite(d)]
    return float(d.mean()) if len(d) else NAN


def blink_count(openness: np.ndarray, close: float = BLINK_CLOSE, reopen: float = BLINK_REOPEN) -> int:
    """Blinks in an eye-opening series: each dip below `close` x the series' median counts once, and
    ends only when the eye is back above `reopen` x the median (a dip that wobbles is one blink).
    Frames without a face are left out."""
    v = np.asarray(openness, np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0 or np.median(v) <= 0:
        return 0
    closed, n = False, 0
    for r in v / np.median(v):
        if not closed and r < close:
            closed, n = True, n + 1
        elif closed and r > reopen:
            closed = False
    return n


class Series(NamedTuple):
    """A video's per-frame signals, (T,) each, NaN where no face."""

    pitch: np.ndarray  # degrees, face up > 0 (infp.face.pose)
    yaw: np.ndarray  # degrees
    mouth: np.ndarray  # inner-lip gap / face height (infp.face.expression.mouth_opening)
    eye: np.ndarray  # lid gap / eye width (infp.face.expression.eye_opening)


def series(landmarks: np.ndarray) -> Series:
    """The signals of (T, 478, 3) landmarks."""
    lm = np.asarray(landmarks, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        pose = head_pose(lm).astype(np.float64)
        return Series(pose[:, 1], pose[:, 0], mouth_opening(lm), eye_opening(lm))


@dataclass(frozen=True)
class Measures:
    """One video's motion as MediaPipe sees it (angles in degrees, speeds per 40-ms frame)."""

    frames: int  # frames measured
    seconds: float  # the time they span
    face_found: float  # share of the measured frames with a face
    pitch_std: float
    yaw_std: float
    pitch_speed: float  # deg / frame
    yaw_speed: float
    blinks: int
    blink_rate: float  # blinks per minute of frames with a face
    mouth_std: float
    mouth_speed: float  # per frame
    mouth_speech_r: float  # Pearson r of the mouth opening with the agent's loudness (speech_level)


def measure(s: Series, level: np.ndarray, every: int = 1, fps: int = FPS) -> Measures:
    """The measures of one video's signals, sampled every `every` frames; `level`: the agent's
    loudness at the same frames."""
    n = len(s.pitch)
    found = float(np.isfinite(np.stack(s)).all(0).mean()) if n else NAN
    seconds = n * every / fps
    blinks = blink_count(s.eye)
    face_minutes = seconds * (found if n else 0.0) / 60
    return Measures(n, seconds, found, amplitude(s.pitch), amplitude(s.yaw), speed(s.pitch, every),
                    speed(s.yaw, every), blinks, blinks / face_minutes if face_minutes > 0 else NAN,
                    amplitude(s.mouth), speed(s.mouth, every), pearson(s.mouth, np.asarray(level, np.float64)))


@dataclass(frozen=True)
class Ratios:
    """Generated over real, per measure: 1 = as much as the real person (NaN where the real one is 0)."""

    pitch_std: float
    yaw_std: float
    pitch_speed: float
    yaw_speed: float
    blink_rate: float
    mouth_std: float
    mouth_speed: float


def ratio(generated: float, real: float) -> float:
    return generated / real if math.isfinite(generated) and math.isfinite(real) and real > 0 else NAN


def ratios(generated: Measures, real: Measures) -> Ratios:
    return Ratios(**{f.name: ratio(getattr(generated, f.name), getattr(real, f.name)) for f in fields(Ratios)})


def pool(ms: list[Measures]) -> Measures:
    """Several clips as one: frames and seconds summed, the blink rate over the total time with a face,
    every other value the frame-weighted mean of the per-clip values over the clips where it is defined
    (so amplitudes stay within a clip: one clip's pose offset from another's is not motion)."""
    w = np.array([m.frames for m in ms], np.float64)

    def mean(name: str) -> float:
        v = np.array([getattr(m, name) for m in ms], np.float64)
        ok = np.isfinite(v) & (w > 0)
        return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else NAN

    minutes = sum(m.seconds * m.face_found for m in ms if math.isfinite(m.face_found)) / 60
    blinks = sum(m.blinks for m in ms)
    kept = {"frames", "seconds", "blinks", "blink_rate"}
    return Measures(int(w.sum()), float(sum(m.seconds for m in ms)), blinks=blinks,
                    blink_rate=blinks / minutes if minutes > 0 else NAN,
                    **{f.name: mean(f.name) for f in fields(Measures) if f.name not in kept})


# -- roles: the mouth while speaking and while listening --------------------------------------------

MIN_FRAMES = 10  # measured frames a set needs for its mouth values (fewer: NaN, not a number from 2 frames)


@dataclass(frozen=True)
class MouthActivity:
    """The mouth opening over one set of frames (e.g. the agent speaking)."""

    frames: int  # measured frames in the set with a face
    speed: float  # mean |change| per frame between consecutive measured frames both in the set
    std: float  # std of the opening over the set
    mean: float  # mean opening


def mouth_activity(mouth: np.ndarray, mask: np.ndarray, every: int = 1) -> MouthActivity:
    """The mouth's activity over the frames where `mask` holds, (T,) each, sampled every `every` frames
    (a change over k frames counts as change / k); a step into or out of the set is not counted."""
    m, mask = np.asarray(mouth, np.float64), np.asarray(mask, bool)
    ok = mask & np.isfinite(m)
    steps = (np.abs(np.diff(m)) / every)[ok[:-1] & ok[1:]]
    v = m[ok]
    if len(v) < MIN_FRAMES:
        return MouthActivity(len(v), NAN, NAN, NAN)
    return MouthActivity(len(v), float(steps.mean()) if len(steps) else NAN, float(v.std()), float(v.mean()))


@dataclass(frozen=True)
class Contrast:
    """The mouth while speaking against the mouth while not (listening, or pausing)."""

    speaking: MouthActivity
    listening: MouthActivity
    speed: float  # speaking.speed / listening.speed: the role contrast of issue 20
    std: float  # speaking.std / listening.std


def contrast(speaking: MouthActivity, listening: MouthActivity) -> Contrast:
    return Contrast(speaking, listening, ratio(speaking.speed, listening.speed), ratio(speaking.std, listening.std))


def pool_activity(acts: list[MouthActivity]) -> MouthActivity:
    """Several clips' sets as one: values weighted by frames over the sets where they are defined
    (stds stay within a clip)."""
    w = np.array([a.frames for a in acts], np.float64)

    def mean(name: str) -> float:
        v = np.array([getattr(a, name) for a in acts], np.float64)
        ok = np.isfinite(v) & (w > 0)
        return float((v[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() else NAN

    return MouthActivity(int(w.sum()), mean("speed"), mean("std"), mean("mean"))


def pool_contrast(cs: list[Contrast]) -> Contrast:
    return contrast(pool_activity([c.speaking for c in cs]), pool_activity([c.listening for c in cs]))


# -- the report ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RealEvalSettings:
    steps: int = 20
    guidance: float = 3.0
    seed: int = 0
    overlap: int | None = None  # frames each window shares with the one before (None: the sampler's default)
    live: bool = False  # the live schedule (diffusion.sampling.window_schedule)
    every: int = 1  # render and measure every k-th frame
    max_seconds: float | None = None  # the first S seconds of each clip (None: all)
    contact_frames: int = 6  # frames per clip on the contact sheet
    videos: bool = True  # write each generated video (with every = 1 only)
    min_speech: float = MIN_SPEECH
    turns: int = 0  # turns of the built conversation for the role contrast (0: none)
    ceiling: bool = False  # also render each clip's own E_m latents (stage 1's ceiling; module doc)
    expression: str = "neutral"  # the portrait's resting state (`InfpPipeline.prepare`): "neutral" or "keep"


@dataclass(frozen=True)
class ClipResult:
    id: str
    kind: str  # "real" (or "synthetic": any clip in the format can be measured)
    frames: int  # clip frames evaluated (the measured ones are every `every`-th of them)
    speech: float  # share of those frames where the agent's track has voice (VAD)
    real: Measures
    generated: Measures
    ratio: Ratios
    contact: list[int]  # the frames on the contact sheet
    real_roles: Contrast  # the real mouth in the agent track's speech frames against its pauses (VAD)
    generated_roles: Contrast  # the generated mouth, same frames (its partner track is silent)
    ceiling: Measures | None = None  # the clip's own E_m latents rendered (settings.ceiling)
    ceiling_ratio: Ratios | None = None  # ceiling / real


@dataclass(frozen=True)
class Skipped:
    id: str
    reason: str


@dataclass(frozen=True)
class RoleResult:
    """The role contrast on a conversation built from the clips' speech (`build_conversation`)."""

    portrait: str
    agent_speech: list[str]  # the clips whose speech the agent's turns are
    partner_speech: list[str]
    turns: list[Turn]
    seconds: float
    face_found: float  # share of the measured frames with a face
    roles: Contrast  # the agent speaking alone against listening (the partner alone), by VAD on each track
    silent: MouthActivity  # both tracks silent
    both: MouthActivity  # both speaking
    contact: list[int]  # frames on roles_contact.png: speaking ones, then listening ones

    def markdown(self, reference: Contrast) -> list[str]:
        """The section of real.md; `reference`: the real clips' speech / pause contrast, pooled."""
        r, overlap = self.roles, sum(a.end > b.start for a, b in zip(self.turns, self.turns[1:]))
        lines = [
            "## Role contrast in a conversation of real speech", "",
            f"- conversation.wav ({self.seconds:.1f} s; channel 0 the agent, 1 the partner): {len(self.turns)} turns, "
            f"the agent first; the agent's from the speech of {', '.join(self.agent_speech)}; the partner's from "
            f"{', '.join(self.partner_speech)}; {GAP_S[0]:g}-{GAP_S[1]:g} s of silence between turns"
            + (f", {overlap} overlap of {OVERLAP_S:g} s" if overlap else "") + f"; each voice at {LEVEL_DBFS:g} dBFS",
            f"- portrait: {self.portrait}; face found in {_fmt(self.face_found * 100, 0)}% of the measured frames",
            "- roles per frame by Silero VAD on each track; roles_contact.png: speaking frames above listening "
            "frames, in each stretch the one where the mouth is widest", "",
            "| agent | measured frames | mouth speed (/frame) | mouth std | mean opening |", "|---" * 5 + "|"]
        for name, a in (("speaking (partner silent)", r.speaking), ("listening (partner speaking)", r.listening),
                        ("both silent", self.silent), ("both speaking", self.both)):
            lines.append(f"| {name} | {a.frames} | {_fmt(a.speed, 4)} | {_fmt(a.std, 4)} | {_fmt(a.mean, 4)} |")
        return lines + [
            "", f"**Role contrast (mouth speed speaking / listening): {_fmt(r.speed, 2)}** (std: {_fmt(r.std, 2)}). "
            "Issue 20 aims at >= 3; its reference, real footage of a speaker and a listener: 3.5. Real speakers "
            f"here, speech / their own pauses (pooled above): {_fmt(reference.speed, 2)} (std: {_fmt(reference.std, 2)}) "
            "- a pause in a monologue is short and the mouth is still closing in it, so this is a different, "
            "lower reference than listening."]


@dataclass(frozen=True)
class RealReport:
    settings: RealEvalSettings
    checkpoint: str  # stage 2
    imitator: str  # stage 1
    device: str
    clips: list[ClipResult]
    real: Measures  # pooled over the clips
    generated: Measures
    ratio: Ratios  # pooled generated / pooled real
    real_roles: Contrast  # pooled over the clips: speech frames against pauses
    generated_roles: Contrast
    skipped: list[Skipped] = field(default_factory=list)
    conversation: RoleResult | None = None  # with settings.turns
    ceiling: Measures | None = None  # pooled, with settings.ceiling
    ceiling_ratio: Ratios | None = None  # pooled ceiling / pooled real
    generated_to_ceiling: Ratios | None = None  # pooled generated / pooled ceiling

    def markdown(self) -> str:
        s = self.settings
        span = "all of each clip" if s.max_seconds is None else f"the first {s.max_seconds:g} s of each clip"
        lines = [
            "# Stage 2 against real people", "",
            f"- {_kinds(self.clips)}, {self.real.seconds:.1f} s ({span}; "
            f"{'every frame' if s.every == 1 else f'every {s.every}th frame'} measured)"
            + (f"; {len(self.skipped)} skipped" if self.skipped else ""),
            f"- generation: stage 2 `{self.checkpoint}`, stage 1 `{self.imitator}`, {s.steps} DDIM steps, guidance "
            f"{s.guidance:g}, seed {s.seed}, window overlap {'default' if s.overlap is None else s.overlap}{', live schedule' if s.live else ''}, {self.device}",
            "- portrait: each clip's first frame; A_self: the clip's own speech (agent.wav); A_other: silence",
            "- both videos measured by MediaPipe Face Mesh (tracking mode) on the face crops",
            "- real_contact.png: per clip, real frames above the generated ones at the same times"
            + (", stage 1's ceiling below them" if s.ceiling else "") + f" ({s.contact_frames} "
            "frames: in each stretch of the clip the one where the real mouth is widest)", "",
            "Generated / real (1 = moves as much as the real person; issue 20 aims at 0.8-1.25):", "",
            "| clip | seconds | speech | pitch amp | yaw amp | pitch speed | yaw speed | blink rate | mouth std | mouth speed "
            "| r mouth ~ speech, generated | r mouth ~ speech, real |", "|---" * 12 + "|"]
        speech = sum(c.speech * c.frames for c in self.clips) / max(1, sum(c.frames for c in self.clips))
        rows = [(c.id, c.real.seconds, c.speech, c.ratio, c.generated.mouth_speech_r, c.real.mouth_speech_r)
                for c in self.clips]
        rows.append(("**pooled**", self.real.seconds, speech, self.ratio, self.generated.mouth_speech_r,
                     self.real.mouth_speech_r))
        for name, secs, voiced, r, rg, rr in rows:
            lines.append(f"| {name} | {secs:.1f} | {voiced:.0%} | " + " | ".join(_fmt(getattr(r, f.name), 2) for f in fields(Ratios))
                         + f" | {_fmt(rg, 2)} | {_fmt(rr, 2)} |")
        lines += ["", "Measured values:", "",
                  "| clip | video | face found | pitch std (deg) | yaw std (deg) | pitch speed (deg/frame) | yaw speed "
                  "(deg/frame) | blinks | blinks/min | mouth std | mouth speed (/frame) |", "|---" * 11 + "|"]
        for name, real, gen in [(c.id, c.real, c.generated) for c in self.clips] + [("**pooled**", self.real, self.generated)]:
            for video, m in (("real", real), ("generated", gen)):
                lines.append(f"| {name} | {video} | {_fmt(m.face_found, 2)} | {_fmt(m.pitch_std)} | {_fmt(m.yaw_std)} | "
                             f"{_fmt(m.pitch_speed)} | {_fmt(m.yaw_speed)} | {m.blinks} | {_fmt(m.blink_rate, 1)} | "
                             f"{_fmt(m.mouth_std, 4)} | {_fmt(m.mouth_speed, 4)} |")
        lines += ["", "The mouth in the agent track's speech frames against its pauses (real: the person's own pauses; "
                  "generated: the same frames, with a silent partner track):", "",
                  "| clip | speech frames | pause frames | real: speed ratio | real: std ratio | generated: speed ratio "
                  "| generated: std ratio |", "|---" * 7 + "|"]
        for name, real, gen in [(c.id, c.real_roles, c.generated_roles) for c in self.clips] + [
                ("**pooled**", self.real_roles, self.generated_roles)]:
            lines.append(f"| {name} | {real.speaking.frames} | {real.listening.frames} | {_fmt(real.speed, 2)} | "
                         f"{_fmt(real.std, 2)} | {_fmt(gen.speed, 2)} | {_fmt(gen.std, 2)} |")
        if self.ceiling is not None:
            lines += ["", *self._ceiling_markdown()]
        if self.conversation is not None:
            lines += ["", *self.conversation.markdown(self.real_roles)]
        if self.skipped:
            lines += ["", "Skipped:", "", *[f"- {k.id}: {k.reason}" for k in self.skipped]]
        lines += ["", *[f"- **{k}**: {v}" for k, v in EXPLAINED.items()]]
        return "\n".join(lines) + "\n"

    def _ceiling_markdown(self) -> list[str]:
        lines = ["## Stage 1's ceiling", "",
                 "Each clip's own motion (E_m's latents of its real frames) rendered from its first frame by the same "
                 "stage 1 and measured the same way: how much of the real motion stage 1 can show at all. A ratio "
                 "of stage 2 to real can only pass the ceiling's by exaggerating.", "",
                 "| clip | ratio | " + " | ".join(RATIO_NAMES[f.name] for f in fields(Ratios)) + " |",
                 "|---" * (2 + len(fields(Ratios))) + "|"]
        rows = [(c.id, "ceiling / real", c.ceiling_ratio) for c in self.clips if c.ceiling_ratio is not None]
        rows += [("**pooled**", "ceiling / real", self.ceiling_ratio),
                 ("**pooled**", "generated / real", self.ratio),
                 ("**pooled**", "generated / ceiling", self.generated_to_ceiling)]
        for name, what, r in rows:
            lines.append(f"| {name} | {what} | " + " | ".join(_fmt(getattr(r, f.name), 2) for f in fields(Ratios)) + " |")
        c = self.ceiling
        return lines + ["", f"Pooled ceiling: pitch std {_fmt(c.pitch_std)}, yaw std {_fmt(c.yaw_std)} deg; pitch speed "
                        f"{_fmt(c.pitch_speed)}, yaw speed {_fmt(c.yaw_speed)} deg/frame; {c.blinks} blinks; mouth std "
                        f"{_fmt(c.mouth_std, 4)}, speed {_fmt(c.mouth_speed, 4)}; r mouth ~ speech {_fmt(c.mouth_speech_r, 2)}."]

    def to_json(self) -> str:
        """Everything, per clip and pooled; NaN (undefined) as null."""
        strict = json.loads(json.dumps(asdict(self)), parse_constant=lambda _: None)
        return json.dumps(strict, indent=2) + "\n"


RATIO_NAMES = {"pitch_std": "pitch amp", "yaw_std": "yaw amp", "pitch_speed": "pitch speed", "yaw_speed": "yaw speed",
               "blink_rate": "blink rate", "mouth_std": "mouth std", "mouth_speed": "mouth speed"}

EXPLAINED = {
    "pitch / yaw amp": "std of the head's pitch (nodding axis) / yaw (turning axis) over the clip, degrees, "
                       "from the landmarks' own head frame (infp.face.pose)",
    "pitch / yaw speed": "mean |change| from one frame to the next, degrees per frame (with --every k: per k "
                         "frames, divided by k, which misses jitter between the samples)",
    "blink rate": f"blinks per minute: dips of the eye opening (lid gap / eye width, both eyes) below "
                  f"{BLINK_CLOSE}x the clip's median, each ended by a return above {BLINK_REOPEN}x; with "
                  "--every k a blink shorter than k frames can be missed",
    "mouth std / speed": "std and mean |frame-to-frame change| of the mouth opening (inner-lip gap / face height)",
    "r mouth ~ speech": "Pearson r of the mouth opening with the agent track's loudness per frame (log RMS, "
                        "infp.data.behaviour.speech_level), for each video: how closely the mouth follows the voice",
    "speech": "share of the frames where the agent track has voice (Silero VAD); clips under --min-speech are "
              "skipped",
    "speed / std ratio (speech, pauses, roles)": "mouth speed (mean |frame-to-frame change| of the opening, over "
        "consecutive frames both in the set) and std in the speaking frames over the same in the others; a set of "
        f"fewer than {MIN_FRAMES} measured frames gives n/a",
    "pooled": "ratios of the pooled values: per-clip values weighted by measured frames, blinks over the total "
              "time with a face",
}


def _kinds(clips: list[ClipResult]) -> str:
    """ "2 real clips", "1 real + 1 synthetic clips" """
    kinds = sorted({c.kind for c in clips})
    return " + ".join(f"{sum(c.kind == k for c in clips)} {k}" for k in kinds) + (" clip" if len(clips) == 1 else " clips")


def _fmt(v: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.{digits}f}"


# -- clips ----------------------------------------------------------------------------------------------

def open_clips(paths: Iterable[Path], need: tuple[str, ...] = ("video.mp4", "agent.wav")) -> list[Clip]:
    """The clips named on the command line (clip folders, or folders of clips), every one checked
    before any work (each holds the files in `need`); a one-line `InfpError` names what is wrong."""
    clips = []
    for root in map(Path, paths):
        if not root.is_dir():
            raise InfpError("not found" if not root.exists() else "not a folder (give a clip folder or a folder of clips)", root)
        metas = [p for p in sorted(root.rglob("meta.json")) if not any(q.startswith(".") for q in p.relative_to(root).parts)]
        if not metas:
            raise InfpError("not a clip (no meta.json) and holds no clips; make clips with `infp preprocess`", root)
        for meta in metas:
            try:
                clip = Clip.open(meta.parent)
            except (ValueError, TypeError, KeyError) as e:
                raise InfpError(f"unreadable meta.json ({type(e).__name__}: {e})", meta) from None
            for name in need:
                if not (clip.path / name).is_file():
                    raise InfpError(f"the clip has no {name} (every clip here needs {', '.join(need)})", clip.path)
            if all(c.path.resolve() != clip.path.resolve() for c in clips):  # a clip named twice runs once
                clips.append(clip)
    return clips


def _sampled(frames: Iterable[np.ndarray], n: int, every: int, keep: set[int], kept: dict[int, np.ndarray]) -> Iterator[np.ndarray]:
    """Frames 0, every, 2 every, ... below n; those at indices in `keep` also go to `kept`."""
    for t, frame in enumerate(frames):
        if t >= n:
            break
        if t in keep:
            kept[t] = frame
        if t % every == 0:
            yield frame


def _frames_at(frames: Iterable[np.ndarray], wanted: list[int]) -> dict[int, np.ndarray]:
    """The frames at the indices `wanted`, reading no further than the last of them."""
    kept: dict[int, np.ndarray] = {}
    for _ in _sampled(frames, max(wanted, default=-1) + 1, 1, set(wanted), kept):
        pass
    return kept


def _rendered(render, z: np.ndarray, idx: np.ndarray, batch: int = 25) -> Iterator[np.ndarray]:
    for i in range(0, len(idx), batch):
        yield from render(z[idx[i: i + batch]])


def tile(frame: np.ndarray, text: str, size: int = TILE) -> np.ndarray:
    """A contact-sheet frame: resized to `size` and labelled."""
    if frame.shape[0] != size or frame.shape[1] != size:
        frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
    return label(frame, text)


def _captioned(img: np.ndarray, text: str) -> np.ndarray:
    """`text` in white on a dark strip along the bottom edge (the clip's name on its first frame),
    shrunk to fit the width."""
    out, font = img.copy(), cv2.FONT_HERSHEY_SIMPLEX
    scale = min(0.5, (img.shape[1] - 12) / max(cv2.getTextSize(text, font, 1.0, 1)[0][0], 1))
    out[-22:] = out[-22:] // 3
    cv2.putText(out, text, (6, img.shape[0] - 7), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def evaluate_clip(pipe, clip: Clip, name: str, s: RealEvalSettings, video: Path | None) -> tuple[ClipResult, list[list[np.ndarray]]] | str:
    """Generate and measure one clip: its result and its two contact-sheet rows, or why it is skipped.
    `pipe`: an `infp.pipeline.InfpPipeline`; the generated video goes to `video` when given."""
    from infp.audio.io import load_mono
    from infp.audio.vad import voice_activity
    from infp.eval.motion import measure_landmarks
    from infp.pipeline.pipeline import Settings

    fps = clip.meta.fps
    n = clip.meta.n_frames if s.max_seconds is None else min(clip.meta.n_frames, int(round(s.max_seconds * fps)))
    agent = fit_rows(load_mono(clip.path / "agent.wav"), n * SAMPLES_PER_FRAME)
    vad = np.asarray(voice_activity(agent), bool)[:n]
    voiced = float(vad.mean()) if n else 0.0
    if voiced < s.min_speech:
        return f"the agent track has voice in {voiced:.0%} of its frames (< {s.min_speech:.0%}): no speech to drive it"
    first: dict[int, np.ndarray] = {}
    real_lm = measure_landmarks(_sampled(clip.frames(), n, s.every, {0}, first))
    idx = np.arange(len(real_lm)) * s.every  # the measured frames (a short decode may end early)
    if len(idx) < 2:
        return f"{len(idx)} frame(s) measured (< 2)"
    n = int(idx[-1]) + 1
    try:
        portrait = pipe.prepare(first[0], name, face_index=0, expression=s.expression)
    except NoFaceError:
        return "no face found in the first frame (the portrait)"
    agent = agent[: n * SAMPLES_PER_FRAME]
    own = own_latents(pipe, clip, n) if s.ceiling else None
    if own is not None and not np.isfinite(own).all():
        return "its landmarks have no face, so there is no motion of its own to render (--ceiling)"
    z = pipe.motion(portrait, agent, np.zeros_like(agent), steps=s.steps, guidance=s.guidance, seed=s.seed,
                    overlap=s.overlap, live=s.live)[:n]
    real = series(real_lm)
    ok = np.isfinite(real.mouth)  # contact frames: spread over the clip, in each stretch the real mouth's widest
    at = pick(ok, np.where(ok, real.mouth, -np.inf), s.contact_frames) if s.contact_frames else []
    render = pipe.renderer(portrait, Settings(paste=False, size=clip.meta.size))  # the face crop, as the clip's
    gen_kept: dict[int, np.ndarray] = {}
    frames = _sampled(_rendered(render, z, idx), len(idx), 1, set(at), gen_kept)
    gen = series(measure_landmarks(frames, video, agent[None] if video else None))
    level = speech_level(agent)[:n][idx]
    real_m, gen_m = measure(real, level, s.every, fps), measure(gen, level, s.every, fps)
    ceiling, ceiling_kept = None, {}
    if own is not None:
        frames = _sampled(_rendered(render, own, idx), len(idx), 1, set(at), ceiling_kept)
        ceiling = measure(series(measure_landmarks(frames)), level, s.every, fps)
    talk = vad[idx]
    roles = [contrast(mouth_activity(x.mouth, talk, s.every), mouth_activity(x.mouth, ~talk, s.every)) for x in (real, gen)]
    contact = [int(idx[i]) for i in at]
    real_kept = _frames_at(clip.frames(), contact)  # decoded again: a whole clip's frames need not fit in memory
    rows = [[tile(real_kept[t], f"real {t / fps:.1f}s") for t in contact],
            [tile(gen_kept[i], f"generated {idx[i] / fps:.1f}s") for i in at]]
    if ceiling is not None:
        rows.append([tile(ceiling_kept[i], f"ceiling {idx[i] / fps:.1f}s") for i in at])
    if rows[0]:
        rows[0][0] = _captioned(rows[0][0], name)
    return ClipResult(name, clip.meta.kind, n, voiced, real_m, gen_m, ratios(gen_m, real_m), contact, *roles,
                      ceiling, None if ceiling is None else ratios(ceiling, real_m)), rows


def own_latents(pipe, clip: Clip, n: int) -> np.ndarray:
    """(n, motion_dim) E_m's latents of the clip's first n frames, through the pipeline's stage 1; a frame
    without a face takes its neighbours' (interpolated, held at the ends); all NaN where the clip's
    landmarks have no face at all."""
    from infp.data.motion import compute_latents
    from infp.face.track import fill_gaps

    return fill_gaps(compute_latents(clip, pipe.stage1.model, max_frames=n)[:n, None], max_gap=n)[0][:, 0]


def labels(clips: list[Clip]) -> list[str]:
    """One distinct name per clip (report rows, video files): `motion.clip_labels`, numbered where
    two folders of the same name hold the same id."""
    from infp.eval.motion import clip_labels

    out: list[str] = []
    for name in clip_labels(clips):
        unique, k = name, 2
        while unique in out:
            unique, k = f"{name}_{k}", k + 1
        out.append(unique)
    return out


class RolePlan(NamedTuple):
    """A conversation built from the clips' speech and the portrait to animate in it."""

    tracks: np.ndarray  # (2, N) 16 kHz: 0 the agent, 1 the partner
    turns: list[Turn]
    agent: list[str]  # the clips whose speech the agent's turns are
    partner: list[str]
    portrait: str  # the portrait's name
    image: np.ndarray  # (H, W, 3) RGB uint8


def plan_roles(clips: list[Clip], turns: int, seed: int, min_speech: float = MIN_SPEECH,
               portrait: Path | None = None) -> RolePlan:
    """The conversation for the role contrast, before any model is loaded: the clips whose speech
    (all of agent.wav) has voice in at least `min_speech` of its frames alternate between the sides
    (the 1st, 3rd, ... the agent's); the portrait is `portrait`, else the first clip's first frame."""
    from infp.audio.io import load_mono
    from infp.audio.vad import voice_activity
    from infp.data.portraits import read_image

    speech = []
    for clip, name in zip(clips, labels(clips)):
        audio = load_mono(clip.path / "agent.wav")
        voiced = np.asarray(voice_activity(audio), bool)
        if len(voiced) and voiced.mean() >= min_speech:
            speech.append(Speech(name, audio, voiced))
    if len(speech) < 2:
        raise InfpError(f"--turns needs the speech of two clips or more (the agent's and the partner's turns); "
                        f"{len(speech)} of the {len(clips)} clip(s) have voice in at least {min_speech:.0%} of their frames")
    tracks, plan = build_conversation(speech[0::2], speech[1::2], turns, seed)
    if portrait is None:
        name, image = f"{labels(clips)[0]}, first frame", _frames_at(clips[0].frames(), [0])[0]
    else:
        name, image = str(portrait), read_image(portrait)
    return RolePlan(tracks, plan, [x.id for x in speech[0::2]], [x.id for x in speech[1::2]], name, image)


def evaluate_roles(pipe, plan: RolePlan, s: RealEvalSettings, video: Path | None) -> tuple[RoleResult, list[list[np.ndarray]]]:
    """Animate the portrait in the built conversation and measure its mouth in each role: the result
    and two contact rows (speaking frames above listening frames, in each stretch the widest mouth)."""
    from infp.audio.features import frame_count
    from infp.audio.vad import voice_activity
    from infp.eval.motion import measure_landmarks
    from infp.pipeline.pipeline import Settings

    try:
        portrait = pipe.prepare(plan.image, plan.portrait, face_index=0, expression=s.expression)
    except NoFaceError:
        raise InfpError("no face found in the portrait for --turns", plan.portrait) from None
    agent, partner = plan.tracks
    n = frame_count(len(agent))
    z = pipe.motion(portrait, agent, partner, steps=s.steps, guidance=s.guidance, seed=s.seed, overlap=s.overlap,
                    live=s.live)[:n]
    idx = np.arange(0, len(z), s.every)
    render = pipe.renderer(portrait, Settings(paste=False, size=TILE))
    mouth = series(measure_landmarks(_rendered(render, z, idx), video, plan.tracks if video else None)).mouth
    masks = {k: m[:n][idx] for k, m in role_masks(voice_activity(agent), voice_activity(partner)).items()}
    act = {k: mouth_activity(mouth, m, s.every) for k, m in masks.items()}
    ok = np.isfinite(mouth)
    picks = {k: pick(masks[k] & ok, np.where(ok, mouth, -np.inf), s.contact_frames) if s.contact_frames else []
             for k in ("speaking", "listening")}
    rows = [[tile(f, f"{k} {idx[i] / FPS:.1f}s") for f, i in zip(render(z[idx[c]]), c)] if c else []
            for k, c in picks.items()]
    result = RoleResult(plan.portrait, plan.agent, plan.partner, plan.turns, len(agent) / SAMPLE_RATE,
                        float(ok.mean()) if len(ok) else NAN, contrast(act["speaking"], act["listening"]),
                        act["silent"], act["both"], [int(idx[i]) for c in picks.values() for i in c])
    return result, rows


def evaluate_real(pipe, clips: list[Clip], settings: RealEvalSettings, out: Path, progress: bool = False,
                  roles: RolePlan | None = None) -> tuple[RealReport, np.ndarray, np.ndarray | None]:
    """Every clip generated and measured (see the module doc): the report and the contact sheet (real
    frames above the generated ones at the same times, two rows per clip). With `settings.videos` (and
    every = 1) the generated videos go to `out/<clip>.mp4`. With `roles`, the portrait is animated in
    its conversation too (`out/conversation.mp4`), and the third value is its contact strip."""
    conversation, strip = None, None
    if roles is not None:  # first: a portrait without a face fails before the clips' work
        log.info("role contrast: %d turns, %.1f s", len(roles.turns), roles.tracks.shape[1] / SAMPLE_RATE)
        video = out / "conversation.mp4" if settings.videos and settings.every == 1 else None
        conversation, role_rows = evaluate_roles(pipe, roles, settings, video)
        strip = sheet([r if r else [np.zeros((TILE, TILE, 3), np.uint8)] for r in role_rows], TILE)
    results, rows, skipped = [], [], []
    for clip, name in tqdm(list(zip(clips, labels(clips))), desc="eval real", unit="clip",
                           disable=not progress):
        video = out / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".mp4") if settings.videos and settings.every == 1 else None
        got = evaluate_clip(pipe, clip, name, settings, video)
        if isinstance(got, str):
            skipped.append(Skipped(name, got))
            log.warning("skipping clip %s: %s", name, got)
            continue
        results.append(got[0])
        rows += got[1]
    if not results:
        raise InfpError("no clip could be evaluated: " + "; ".join(f"{k.id}: {k.reason}" for k in skipped[:3]))
    real, gen = pool([r.real for r in results]), pool([r.generated for r in results])
    ceiling = pool([r.ceiling for r in results]) if settings.ceiling else None
    report = RealReport(settings, str(pipe.stage2.path), str(getattr(pipe.stage1, "path", "?")), pipe.device.type,
                        results, real, gen, ratios(gen, real), pool_contrast([r.real_roles for r in results]),
                        pool_contrast([r.generated_roles for r in results]), skipped, conversation, ceiling,
                        None if ceiling is None else ratios(ceiling, real), None if ceiling is None else ratios(gen, ceiling))
    return report, sheet([r if r else [np.zeros((TILE, TILE, 3), np.uint8)] for r in rows], TILE), strip
