"""`infp preprocess`: real talking videos -> the project's clip format.

Per video: track the face at 25 fps (`face.track`), cut the video at long face gaps into segments,
and write each segment of at least `min_seconds` as one clip (docs/clip-format.md): steady square
crops, landmarks mapped into crop pixels, the two tracks and the hybrid representation of every
crop. The person on screen is the agent; the layout says where the tracks come from: `single` the
video's own audio and silence, `pair` its audio and the partner video's, `stereo` the channel the
on-screen lips follow and the other channel. `side-by-side` has two people on screen (left and right
halves) and one mixed track: each half becomes its own clips, the track cut by who speaks when
(`data.separation`).

Caching: after a video is done, a record `DIR/.preprocess/<id>.json` names its clips. A later run
skips the video when the record matches the file (path, size, mtime), the settings and the
preprocessor version, and every clip it lists is complete; otherwise the video is redone and clips
it no longer yields are removed. Videos without a usable face are recorded too (tracking them again
would find nothing new); unreadable files are not, so a repaired file is picked up.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import multiprocessing as mp
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import av
import cv2
import numpy as np
from tqdm import tqdm

from infp import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME, __version__
from infp.audio.io import load_audio, save_wav
from infp.data import contact
from infp.data.clip import ClipMeta
from infp.data.separation import ACTIVITY_FRAMES, mouth_activity, split_tracks, who_speaks
from infp.errors import InfpError, MediaError
from infp.face.crop import box_jitter, crop_image, face_box, to_crop
from infp.face.expression import mouth_opening
from infp.face.hybrid import represent
from infp.face.track import FaceTrack, region_of, track_video
from infp.fsutil import atomic_dir, atomic_file
from infp.timeline import fit_rows, runs
from infp.video import VideoInfo, VideoWriter, iter_frames, probe

log = logging.getLogger(__name__)

PREPROCESS_VERSION = 1  # bump when clips change, so cached ones are redone
VIDEO_EXTS = frozenset({".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"})
LAYOUTS = ("single", "pair", "side-by-side", "stereo")
RECORDS = ".preprocess"  # hidden: `list_clips` ignores dot-folders
STATS = "preprocess_stats.json"


@dataclass(frozen=True)
class PreprocessConfig:
    size: int = 256  # crop side in pixels
    min_seconds: float = 1.0  # shorter face segments are dropped
    max_gap_s: float = 0.5  # face gaps up to this are interpolated; longer ones cut the video
    layout: str = "single"


@dataclass(frozen=True)
class ClipStats:
    id: str
    frames: int
    seconds: float
    start: float  # segment start/end in the source, seconds
    end: float
    face_found: float
    jitter: dict[str, float]  # crop motion, % of the box side per frame: raw and smoothed centre/size


@dataclass(frozen=True)
class SourceResult:
    source: str
    id: str
    status: str  # "written" | "cached" | "skipped"
    reason: str = ""
    clips: list[ClipStats] = field(default_factory=list)
    frames: int = 0  # frames of the whole video at 25 fps (0 when unreadable)
    seconds_taken: float = 0.0
    fingerprint: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> SourceResult:
        return cls(**{**d, "clips": [ClipStats(**c) for c in d.get("clips", [])]})


@dataclass(frozen=True)
class PreprocessStats:
    out: str
    config: PreprocessConfig
    sources: list[SourceResult]
    seconds_taken: float

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.sources)

    def totals(self) -> dict:
        clips = [c for s in self.sources for c in s.clips]
        return {
            "videos": len(self.sources), "written": self.count("written"), "cached": self.count("cached"),
            "skipped": self.count("skipped"), "clips": len(clips),
            "frames": sum(c.frames for c in clips), "seconds": round(sum(c.seconds for c in clips), 3),
        }

    def save(self, path: Path) -> None:
        d = {"version": PREPROCESS_VERSION, **asdict(self), "totals": self.totals()}
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(d, indent=2) + "\n")


# ------------------------------------------------------------------------------ sources and ids


def expand_sources(sources: list[str | Path]) -> tuple[list[Path], list[SourceResult]]:
    """Files and folders -> (video files, sorted and unique; missing paths as skipped results).

    Folders are searched recursively by extension; files named explicitly are tried whatever their
    extension (the decoder decides, and a non-video is skipped later with its reason).
    """
    videos: dict[Path, None] = {}
    missing = []
    for src in map(Path, sources):
        if src.is_dir():
            found = sorted(p for p in src.rglob("*") if p.suffix.lower() in VIDEO_EXTS and p.is_file())
            if not found:
                log.warning("%s: no video files (%s) in this folder", src, ", ".join(sorted(VIDEO_EXTS)))
            videos.update(dict.fromkeys(p.resolve() for p in found))
        elif src.exists():
            videos[src.resolve()] = None
        else:
            log.warning("%s: skipped: no such file or folder", src)
            missing.append(SourceResult(str(src), "", "skipped", "no such file or folder"))
    return sorted(videos), missing


def _stem_id(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_") or "video"


def assign_ids(videos: list[Path], out: Path) -> list[str]:
    """One clip-id base per video: its sanitised stem, plus a hash of its path when another video of
    this run, or a recorded earlier one, already has that stem."""
    ids, used = [], set()
    for path in videos:
        rec = _load_record(out, _stem_id(path))
        taken = _stem_id(path) in used or (rec is not None and rec.source != str(path))
        ids.append(f"{_stem_id(path)}_{hashlib.sha1(str(path).encode()).hexdigest()[:6]}" if taken else _stem_id(path))
        used.add(ids[-1])
    return ids


# ------------------------------------------------------------------------------------ caching


def _fingerprint(path: Path, cfg: PreprocessConfig, partner: Path | None = None) -> dict:
    """What a video's clips depend on: the file, the settings, the preprocessor, and with --layout pair
    the partner's video (its audio is the partner track)."""
    st = path.stat()
    out = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "config": asdict(cfg), "version": PREPROCESS_VERSION}
    if partner is not None:
        other = partner.stat()
        out["partner"] = {"path": str(partner), "bytes": other.st_size, "mtime_ns": other.st_mtime_ns}
    return out


def _load_record(out: Path, base_id: str) -> SourceResult | None:
    f = out / RECORDS / f"{base_id}.json"
    try:
        return SourceResult.from_dict(json.loads(f.read_text())) if f.is_file() else None
    except (ValueError, TypeError):  # a damaged record only costs a redo
        return None


def _cached(out: Path, path: Path, base_id: str, cfg: PreprocessConfig, partner: Path | None = None) -> SourceResult | None:
    rec = _load_record(out, base_id)
    if rec is None or rec.source != str(path) or rec.fingerprint != _fingerprint(path, cfg, partner):
        return None
    if any(not (out / c.id / "meta.json").is_file() for c in rec.clips):
        return None
    return replace(rec, status="cached" if rec.clips else "skipped")


def _save_record(out: Path, result: SourceResult) -> None:
    old = _load_record(out, result.id)
    for stale in {c.id for c in old.clips} - {c.id for c in result.clips} if old else ():
        shutil.rmtree(out / stale, ignore_errors=True)  # the video now splits differently
    (out / RECORDS).mkdir(exist_ok=True)
    with atomic_file(out / RECORDS / f"{result.id}.json") as tmp:
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")


# ----------------------------------------------------------------------------- one video


def face_segments(found: np.ndarray, min_frames: int) -> list[tuple[int, int]]:
    """[start, end) runs of frames with a usable face, at least `min_frames` long."""
    return [(int(s), int(e)) for s, e in zip(*runs(found)) if e - s >= min_frames]


def _audio_delay(path: Path) -> float:
    """Seconds by which the audio stream starts after the video stream: frames are timed from the
    video's start, the decoded audio from its own first sample."""
    with av.open(str(path)) as c:
        starts = [float(s.start_time * s.time_base) if s.start_time is not None else 0.0
                  for s in (c.streams.video[0], c.streams.audio[0])]
    return starts[1] - starts[0]


def source_audio(path: Path, info: VideoInfo, n_frames: int) -> np.ndarray | None:
    """The video's audio, every channel, on its 25 fps frame grid: (C, n_frames * 640); None without any."""
    if not info.has_audio:
        return None
    try:
        audio = load_audio(path)
    except MediaError as e:
        log.warning("%s; using silence", e)
        return None
    shift = round(_audio_delay(path) * SAMPLE_RATE)
    audio = np.pad(audio, ((0, 0), (shift, 0))) if shift > 0 else audio[:, -shift:]
    return np.stack([fit_rows(ch, n_frames * SAMPLES_PER_FRAME).astype(np.float32) for ch in audio])


def agent_audio(path: Path, info: VideoInfo, n_frames: int) -> tuple[np.ndarray, bool]:
    """The video's own audio (channels mixed) on its 25 fps frame grid, (n_frames * 640,), and whether
    it had any."""
    audio = source_audio(path, info, n_frames)
    if audio is None:
        return np.zeros(n_frames * SAMPLES_PER_FRAME, np.float32), False
    return audio.mean(0).astype(np.float32), True


def stereo_tracks(audio: np.ndarray, track: FaceTrack) -> tuple[np.ndarray, int, list[float]]:
    """(agent, partner) (2, N) of a two-channel recording with one person per channel, the on-screen
    person's channel (the agent) and each channel's Pearson r with the on-screen mouth. The agent's is
    the channel whose loudness the mouth's activity follows: in a conversation the lips move in the
    person's own turns and rest in the other's. (The opening itself follows the loudness poorly, frame
    by frame: r 0.0-0.2 on real talking videos.)"""
    from scipy.ndimage import uniform_filter1d

    from infp.data.behaviour import speech_level
    from infp.eval.behaviour import pearson

    act = mouth_activity(track.landmarks)
    act[~np.asarray(track.detected, bool)[: len(act)]] = np.nan  # interpolated frames say nothing
    r = [pearson(act, uniform_filter1d(speech_level(ch)[: len(act)], ACTIVITY_FRAMES).astype(np.float64)) for ch in audio[:2]]
    agent = int(np.nanargmax(np.nan_to_num(r, nan=-np.inf))) if np.isfinite(r).any() else 0
    return np.stack([audio[agent], audio[1 - agent]]), agent, [round(float(x), 3) for x in r]


def _dbfs(audio: np.ndarray) -> float:
    """RMS level of a track in dBFS (floor -100), so clips with a silent agent track stand out."""
    return round(20 * float(np.log10(max(float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))), 1e-5))), 1)


def _jitter(track: FaceTrack, s: int, e: int) -> dict[str, float]:
    raw, smooth = box_jitter(face_box(track.landmarks[s:e])), box_jitter(track.boxes[s:e])
    return {"raw_centre": raw.centre, "raw_size": raw.size, "centre": smooth.centre, "size": smooth.size}


def _write_clip(dest: Path, frames, seg: tuple[int, int], track: FaceTrack, tracks: np.ndarray,
                cfg: PreprocessConfig, extra: dict, bar: tqdm | None) -> ClipStats:
    """Crop `frames` (the segment's source frames) into the clip directory `dest`; `tracks` (2, N): the
    agent's and the partner's audio of the whole video."""
    s, e = seg
    n, size = e - s, cfg.size
    agent, partner = tracks[:, s * SAMPLES_PER_FRAME : e * SAMPLES_PER_FRAME]
    picks = contact.pick(np.ones(n, bool), mouth_opening(track.landmarks[s:e]), 6)
    lms = np.full((n, 478, 3), np.nan, np.float32)
    keep, written = {}, 0
    with atomic_dir(dest) as tmp:
        with VideoWriter(tmp / "video.mp4", audio=np.stack([agent, partner])) as vw, VideoWriter(tmp / "hybrid.mp4") as hw:
            for i, (_, frame) in enumerate(frames):
                box = track.boxes[s + i]
                crop = crop_image(frame, box, size)
                lms[i] = to_crop(track.landmarks[s + i], box, size)
                hybrid = represent(crop, lms[i], "hybrid")
                vw.write(crop)
                hw.write(hybrid)
                if i in picks:
                    keep[i] = (crop, hybrid)
                written += 1
                if bar is not None:
                    bar.update(1)
            if written != n:  # the second decode must see the frames tracking saw
                raise MediaError(f"decoded {written} frames for {dest.name}, tracking saw {n}", extra["source"])
        save_wav(tmp / "agent.wav", agent)
        save_wav(tmp / "partner.wav", partner)
        np.save(tmp / "landmarks.npy", lms)
        rows = [[contact.label(keep[i][0], f"{(s + i) / FPS:.1f}s") for i in picks], [keep[i][1] for i in picks]]
        contact.write_png(tmp / "contact.png", contact.sheet(rows, size))
        stats = ClipStats(dest.name, n, n / FPS, s / FPS, e / FPS, float(track.detected[s:e].mean()), _jitter(track, s, e))
        interpolated = [[int(a), int(b)] for a, b in zip(*runs(~track.detected[s:e]))]
        ClipMeta(
            id=dest.name, kind="real", fps=FPS, n_frames=n, size=size, sample_rate=SAMPLE_RATE,
            source=extra["source"], face_found=stats.face_found,
            extra={**extra, "start": stats.start, "end": stats.end, "crop_jitter": stats.jitter,
                   "interpolated_frames": interpolated, "agent_rms_dbfs": _dbfs(agent)},
        ).save(tmp / "meta.json")
    return stats


PAIR_TOLERANCE_S = 0.5  # the two videos of a pair may differ in length by this much (their last frames)


def _tracks(path: Path, info: VideoInfo, track: FaceTrack, cfg: PreprocessConfig,
            partner: Path | None) -> tuple[np.ndarray, dict] | str:
    """(agent, partner) audio (2, N) of a video by its layout, with what each is (for meta.json), or
    why the video gives no clip."""
    n = len(track.found)
    if cfg.layout == "stereo":
        audio = source_audio(path, info, n)
        if audio is None or len(audio) != 2:
            return f"not a two-channel recording ({0 if audio is None else len(audio)} channel(s)); --layout stereo needs one person per channel"
        tracks, channel, r = stereo_tracks(audio, track)
        return tracks, {"agent": f"channel {channel} (the on-screen person: mouth ~ loudness r {r[channel]:.2f})",
                        "partner": f"channel {1 - channel}", "agent_channel": channel, "channel_mouth_r": r}
    agent, has_audio = agent_audio(path, info, n)
    about = {"has_audio": has_audio, "agent": "the video's own audio" if has_audio else "silence (no audio stream)"}
    if cfg.layout == "pair":
        other = probe(partner)
        gap = abs(other.duration - info.duration)
        if gap > PAIR_TOLERANCE_S:
            return (f"the pair's videos differ in length by {gap:.2f} s ({path.name} {info.duration:.2f} s, "
                    f"{partner.name} {other.duration:.2f} s): cut both to the same start and end")
        voice, has_partner = agent_audio(partner, other, n)
        return np.stack([agent, voice]), {**about, "partner": f"the audio of {partner.name}" if has_partner else "silence",
                                          "partner_source": str(partner)}
    return np.stack([agent, np.zeros_like(agent)]), {**about, "partner": "silence"}


def process_video(path: Path, base_id: str, out: Path, cfg: PreprocessConfig, progress: bool = False,
                  partner: Path | None = None) -> SourceResult:
    """Track one video and write its clips; a video that cannot give any is a skipped result.
    `partner`: with --layout pair, the other person's video (its audio is the partner track)."""
    t0 = time.perf_counter()
    result = SourceResult(str(path), base_id, "skipped", fingerprint=_fingerprint(path, cfg, partner))
    if cfg.layout == "side-by-side":
        return _process_side_by_side(path, base_id, out, cfg, progress, result, t0)
    try:
        info = probe(path)
        track = track_video(path, cfg.max_gap_s, progress=progress)
    except InfpError as e:
        return replace(result, reason=_reason(e), fingerprint={})  # unreadable: not recorded
    n_total = len(track.found)
    segs, why = _segments(track, cfg)
    if not segs:
        return replace(result, reason=why, frames=n_total, seconds_taken=time.perf_counter() - t0)
    try:
        got = _tracks(path, info, track, cfg, partner)
    except InfpError as e:  # the partner's video is unreadable
        return replace(result, reason=_reason(e), fingerprint={})
    if isinstance(got, str):
        return replace(result, reason=got, frames=n_total, seconds_taken=time.perf_counter() - t0)
    tracks, about = got
    try:
        clips = _write_clips(path, out, base_id, segs, track, tracks, cfg, _extra(path, info, cfg, about), progress)
    except InfpError as e:  # the second decode failed: clips already written stay, unrecorded
        return replace(result, reason=_reason(e), fingerprint={})
    return replace(result, status="written", clips=clips, frames=n_total, seconds_taken=time.perf_counter() - t0)


def _segments(track: FaceTrack, cfg: PreprocessConfig) -> tuple[list[tuple[int, int]], str]:
    """The track's face segments long enough for a clip, and why there is none when there is none."""
    segs = face_segments(track.found, max(1, int(np.ceil(cfg.min_seconds * FPS - 1e-6))))
    if segs:
        return segs, ""
    longest = max((e - s for s, e in zip(*runs(track.found))), default=0) / FPS
    return [], "no face found" if longest == 0 else f"no face stretch of {cfg.min_seconds:g} s (longest {longest:.2f} s)"


def _extra(path: Path, info: VideoInfo, cfg: PreprocessConfig, about: dict) -> dict:
    return {"source": str(path), "layout": cfg.layout, "source_fps": info.fps, "source_size": [info.width, info.height],
            "has_audio": info.has_audio, **about, "preprocessor": f"infp {__version__} preprocess v{PREPROCESS_VERSION}"}


PEOPLE = {"left": (0.0, 0.5), "right": (0.5, 1.0)}  # --layout side-by-side: each person's half of the frame


@dataclass(frozen=True)
class TwoPeople:
    """A side-by-side recording read for `--layout side-by-side`."""

    info: VideoInfo
    tracks: dict[str, FaceTrack]  # by person ("left", "right"), in their half's pixels
    mixed: np.ndarray  # (N,) the recording's audio on the 25 fps grid (zeros without any)
    speech: np.ndarray  # (T,) bool: someone speaks (Silero VAD on `mixed`)
    speaks: np.ndarray  # (T, 2) bool: [left, right] speaking (`data.separation.who_speaks`)


def read_two_people(path: Path, max_gap_s: float = 0.5, progress: bool = False) -> TwoPeople:
    """Track both halves of a side-by-side recording and tell who speaks when (`data.separation`)."""
    from infp.audio.vad import voice_activity

    info = probe(path)
    tracks = {who: track_video(path, max_gap_s, progress=progress, region=r) for who, r in PEOPLE.items()}
    n = min(len(t.found) for t in tracks.values())
    mixed, _ = agent_audio(path, info, n)
    speech = voice_activity(mixed)[:n]
    speaks = who_speaks(speech, tracks["left"].landmarks[:n], tracks["right"].landmarks[:n])
    return TwoPeople(info, tracks, mixed, speech, speaks)


def _process_side_by_side(path: Path, base_id: str, out: Path, cfg: PreprocessConfig, progress: bool,
                          result: SourceResult, t0: float) -> SourceResult:
    """Two people, one mixed track: each person's clips (`<id>_left`, `<id>_right`) from their half, the
    track cut by who speaks (`read_two_people`). A person without a usable face stretch is skipped
    with the reason; the other's clips are kept."""
    try:
        if not probe(path).has_audio:  # before tracking anything
            return replace(result, reason="no audio stream: --layout side-by-side needs the conversation's sound",
                           seconds_taken=time.perf_counter() - t0)
        two = read_two_people(path, cfg.max_gap_s, progress)
    except InfpError as e:
        return replace(result, reason=_reason(e), fingerprint={})
    n = len(two.speech)
    cut = split_tracks(two.mixed, two.speaks)  # (person, [self, other], N)
    clips, skipped = [], []
    for k, (who, region) in enumerate(PEOPLE.items()):
        segs, why = _segments(two.tracks[who], cfg)
        if not segs:
            skipped.append(f"{who} person: {why}")
            continue
        about = {"person": who, "has_audio": True,
                 "agent": f"the mixed track where the {who} person speaks (by mouth activity), silence elsewhere",
                 "partner": "the mixed track where the other person speaks",
                 "speech_fraction": round(float(two.speech.mean()), 4),
                 "speaking_fraction": round(float(two.speaks[:, k].mean()), 4),
                 "both_speaking_fraction": round(float(two.speaks.all(1).mean()), 4)}
        try:
            clips += _write_clips(path, out, f"{base_id}_{who}", segs, two.tracks[who], cut[k], cfg,
                                  _extra(path, two.info, cfg, about), progress, region)
        except InfpError as e:
            return replace(result, reason=_reason(e), fingerprint={})
    status = "written" if clips else "skipped"
    return replace(result, status=status, clips=clips, reason="; ".join(skipped), frames=n,
                   seconds_taken=time.perf_counter() - t0)


def _write_clips(path: Path, out: Path, base_id: str, segs: list[tuple[int, int]], track: FaceTrack,
                 tracks: np.ndarray, cfg: PreprocessConfig, extra: dict, progress: bool,
                 region: tuple[float, float] | None = None) -> list[ClipStats]:
    """Decode the video a second time (frames are not held in memory) and write one clip per segment;
    `region`: the strip of the frame the track was made in (`face.track.region_of`)."""
    clips = []
    bar = tqdm(total=sum(e - s for s, e in segs), unit="frame", desc=f"{path.name} clips", disable=not progress, leave=False)
    with bar, contextlib.closing(iter_frames(path, fps=FPS)) as source:
        frames = ((t, region_of(f, region)) for t, f in source)
        t = 0
        for k, (s, e) in enumerate(segs):
            next(itertools.islice(frames, s - t, s - t), None)  # consume the frames before the segment
            clip_id = base_id if len(segs) == 1 else f"{base_id}_s{k}"
            clips.append(_write_clip(out / clip_id, itertools.islice(frames, e - s), (s, e), track, tracks, cfg, extra, bar))
            t = e
    return clips


def pair_up(videos: list[Path]) -> dict[Path, Path]:
    """--layout pair: each video's partner. The videos, sorted by path, go two at a time (name the two
    videos of a conversation so that they sort together: talk_a.mp4, talk_b.mp4)."""
    if len(videos) % 2:
        raise InfpError(f"--layout pair takes the videos two at a time (one per person), got {len(videos)}: "
                        + ", ".join(p.name for p in videos))
    out = {}
    for a, b in zip(videos[::2], videos[1::2]):
        out[a], out[b] = b, a
    return out


def _reason(e: InfpError) -> str:
    """The message without the leading path (the stats entry names the source already)."""
    msg = str(e)
    return msg[len(f"{e.path}: "):] if e.path is not None and msg.startswith(f"{e.path}: ") else msg


# ------------------------------------------------------------------------------- the data set


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="infp: %(message)s")  # spawned workers start unconfigured
    cv2.setNumThreads(1)  # the workers already fill the cores


def _work(job: tuple) -> SourceResult:
    return process_video(*job)


def preprocess(
    sources: list[str | Path], out: str | Path, cfg: PreprocessConfig = PreprocessConfig(), workers: int = 1,
    progress: bool = True,
) -> PreprocessStats:
    """Preprocess every video among `sources` into clips under `out`; writes `out/preprocess_stats.json`.

    Raises `InfpError` for an unknown layout, an odd number of videos for `pair`, or when no
    source gives a clip.
    """
    if cfg.layout not in LAYOUTS:
        raise InfpError(f"unknown layout {cfg.layout!r}; choose one of {', '.join(LAYOUTS)}")
    t0 = time.perf_counter()
    out = Path(out)
    videos, results = expand_sources(sources)
    if not videos:
        raise InfpError(f"no video files among the sources: {', '.join(map(str, sources))}")
    partners = pair_up(videos) if cfg.layout == "pair" else {}
    out.mkdir(parents=True, exist_ok=True)
    todo = []
    for path, base_id in zip(videos, assign_ids(videos, out)):
        hit = _cached(out, path, base_id, cfg, partners.get(path))
        if hit is None:
            todo.append((path, base_id, out, cfg, False, partners.get(path)))
            continue
        results.append(hit)
        if hit.status == "skipped":
            log.warning("%s: skipped (as in an earlier run): %s", path, hit.reason)
    todo.sort(key=lambda job: -job[0].stat().st_size)  # longest first: workers finish together
    with tqdm(total=len(videos), initial=len(videos) - len(todo), unit="video", desc="preprocess", disable=not progress) as bar:
        if workers > 1 and len(todo) > 1:
            ctx = mp.get_context("spawn")  # each worker starts its own MediaPipe graph
            with ctx.Pool(min(workers, len(todo)), _init_worker, (logging.getLogger("infp").getEffectiveLevel(),)) as pool:
                for r in pool.imap_unordered(_work, todo):
                    results.append(_finish(out, r, bar))
        else:
            for path, base_id, out_, cfg_, _, partner in todo:
                results.append(_finish(out, process_video(path, base_id, out_, cfg_, progress and workers == 1, partner), bar))
    order = {str(p): i for i, p in enumerate(videos)}
    results.sort(key=lambda r: (order.get(r.source, -1), r.source))
    stats = PreprocessStats(str(out), cfg, results, time.perf_counter() - t0)
    stats.save(out / STATS)
    if stats.totals()["clips"] == 0:
        raise InfpError(f"no usable source: no clip could be made ({'; '.join(f'{r.source}: {r.reason}' for r in results)})")
    return stats


def _finish(out: Path, r: SourceResult, bar: tqdm) -> SourceResult:
    """Record a finished video (the cache) and say why one was skipped."""
    bar.update(1)
    if r.status == "skipped":
        log.warning("%s: skipped: %s", r.source, r.reason)
    elif r.reason:  # written, but not all of it (a side-by-side person without a face)
        log.warning("%s: %s", r.source, r.reason)
    if r.fingerprint:  # unreadable files have none and are not recorded
        _save_record(out, r)
    return r
