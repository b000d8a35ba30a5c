"""Stage-2 data: per-frame motion latents and both tracks' audio features, cut into training windows.

INFP Sec. 3.2 generates the stage-1 motion latents `E_m(hybrid(frame))` from the agent's own voice
`A_self` and the partner's `A_other`, one window at a time, each window conditioned on the latents
just before it (smooth joins) and on a style reference from the same person. The latents of every
clip are computed once with a frozen imitator and cached under its weights' fingerprint; the audio
features are cached under the featurizer's name; voice activity (for the one-sided warm-up) under
its own folder (one `.npy` file per array; the features, most of the data, memory-mapped). Windows
are drawn from an explicit `np.random.Generator`, so a resumed run redraws the same batches.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np
import torch
from tqdm import tqdm

from infp import SAMPLES_PER_FRAME
from infp.audio.mel import Featurizer, log_mel_gain
from infp.data.clip import Clip
from infp.errors import InfpError
from infp.face.hybrid import represent
from infp.fsutil import atomic_file
from infp.models import Imitator
from infp.runtime import ImitatorRuntime
from infp.timeline import fit_rows

log = logging.getLogger(__name__)


def imitator_fingerprint(path: str | Path) -> str:
    """16 hex of a sha256 over the motion encoder `E_m` of a stage-1 checkpoint: its tensors (names,
    shapes, bytes) and the config fields that shape its input and output. The latents' cache key, and
    the record in a stage-2 checkpoint of which latent space it generates: a renderer fine-tuned with
    E_m frozen (`--freeze-motion-encoder`) keeps the fingerprint, so stage-2 models stay valid with it."""
    from safetensors import safe_open

    path = Path(path)
    weights, config = path / "model.safetensors", path / "config.json"
    if not weights.is_file() or not config.is_file():
        raise InfpError("not an imitator checkpoint (no model.safetensors / config.json)", path)
    cfg = json.loads(config.read_text()).get("config", {})
    h = hashlib.sha256(json.dumps({k: cfg.get(k) for k in ENCODER_FIELDS}, sort_keys=True).encode())
    with safe_open(str(weights), "pt") as f:
        for name in sorted(k for k in f.keys() if k.startswith("motion_encoder.")):  # noqa: SIM118 (not a dict)
            t = f.get_tensor(name).contiguous()
            h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


ENCODER_FIELDS = ("representation", "motion_dim", "motion_input", "motion_channels", "size")


def representations(clip: Clip, size: int, kind: str, progress_bar=None, every: int = 1) -> Iterator[np.ndarray | None]:
    """E_m's input for each decoded frame, streamed, resized as stage 1 saw it (`pairs.load_clip_frames`);
    None where the clip has no face, and with `every` > 1 for the frames between every `every`-th."""
    points = clip.landmarks().astype(np.float32) * (size / clip.meta.size)
    for i, frame in enumerate(clip.frames()):
        if progress_bar is not None:
            progress_bar.update(1)
        if i % every or i >= len(points) or not np.isfinite(points[i]).all():
            yield None
            continue
        if frame.shape[0] != size:
            frame = cv2.resize(frame, (size, size), interpolation=cv2.INTER_AREA)
        yield represent(frame, points[i], kind)


def compute_latents(clip: Clip, imitator: Imitator, batch_size: int = 64, progress_bar=None,
                    max_frames: int | None = None) -> np.ndarray:
    """(T, motion_dim) float32 latents of the decoded frames (the first `max_frames` of them when
    given); NaN rows where the clip has no face.

    At most one batch of frames is held at a time. `progress_bar`, when given, advances by one per
    decoded frame. E_m runs in eval mode (`ImitatorRuntime`); the imitator is left in the mode it was in.
    """
    rt = ImitatorRuntime(imitator, batch=batch_size)
    out = [np.zeros((0, imitator.cfg.motion_dim), np.float32)]
    reps = itertools.islice(representations(clip, imitator.cfg.size, imitator.cfg.representation, progress_bar), max_frames)
    while chunk := list(itertools.islice(reps, batch_size)):
        rows = np.full((len(chunk), imitator.cfg.motion_dim), np.nan, np.float32)
        face = np.array([r is not None for r in chunk])
        if face.any():
            rows[face] = rt.encode_motion(np.stack([r for r in chunk if r is not None])).cpu().numpy()
        out.append(rows)
    return np.concatenate(out)


def track_activity(track: np.ndarray) -> np.ndarray:
    """(T,) bool voice activity of a 16 kHz track, one value per video frame (Silero VAD)."""
    from infp.audio.vad import voice_activity

    return voice_activity(track)


@dataclass(frozen=True, eq=False)
class MotionClip:
    """One clip as stage 2 sees it: what E_m made of its frames and what both tracks sound like."""

    id: str
    kind: str  # "synthetic" | "real"
    latents: np.ndarray  # (T, z) float32, NaN rows where no face was found
    agent: np.ndarray  # (per_frame * T, F) float32 features of A_self
    partner: np.ndarray  # (per_frame * T, F) float32 features of A_other
    agent_active: np.ndarray  # (T,) bool
    partner_active: np.ndarray  # (T,) bool
    rest: np.ndarray | None = None  # (z,) where the face rests (`with_rests`); None: `rest_latent`

    @property
    def n_frames(self) -> int:
        return len(self.latents)


@dataclass
class MotionLoad:
    clips: list[MotionClip]
    skipped: dict[str, str] = field(default_factory=dict)  # clip id -> why it is not used


def _clip_key(clip: Clip) -> str:
    """Clip id + 12 hex of what the cached arrays depend on: where the clip is and its files' state
    (landmarks too, since they decide which frames get a latent)."""
    files = []
    for name in ("video.mp4", "agent.wav", "partner.wav", "landmarks.npy"):
        st = (clip.path / name).stat()
        files.append([name, st.st_size, st.st_mtime_ns])
    blob = json.dumps([str(clip.path.resolve()), clip.meta.n_frames, files])
    return f"{clip.meta.id}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _cached(stem: Path, shapes: dict[str, tuple[int, ...]], compute, mmap: bool = False) -> dict[str, np.ndarray]:
    """The arrays `STEM.<name>.npy` when every one is there with its expected shape; else `compute()`,
    checked and written (each file atomically: an interrupted run leaves no half file). A `STEM.npz`
    of the earlier format is converted once instead of recomputed. `mmap`: memory-mapped read-only, so
    the processes of a launch share one copy in the page cache instead of holding one each (the audio
    features: 2.6 KB a frame, about 46 GB at 200 h; each clip's two maps count against Linux's
    `vm.max_map_count`, 65,530 by default)."""
    files = {k: stem.with_name(f"{stem.name}.{k}.npy") for k in shapes}
    arrays = _read(files, shapes, mmap)
    if arrays is not None:
        return arrays
    arrays = _read_npz(stem.with_name(f"{stem.name}.npz"), shapes) or compute()
    for k, shape in shapes.items():
        if arrays[k].shape != shape:
            raise InfpError(f"computed {k} has shape {arrays[k].shape}, expected {shape}", stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    for k, f in files.items():
        with atomic_file(f) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(arrays[k]))
    stem.with_name(f"{stem.name}.npz").unlink(missing_ok=True)
    return (_read(files, shapes, mmap) if mmap else None) or arrays  # a map of what was just written


def _read(files: dict[str, Path], shapes: dict[str, tuple[int, ...]], mmap: bool) -> dict[str, np.ndarray] | None:
    if not all(f.is_file() for f in files.values()):
        return None
    try:
        arrays = {k: np.load(f, mmap_mode="r" if mmap else None, allow_pickle=False) for k, f in files.items()}
    except (OSError, ValueError) as e:
        log.warning("recomputing unreadable cache file(s) %s (%s)", ", ".join(map(str, files.values())), e)
        return None
    if all(arrays[k].shape == shape for k, shape in shapes.items()):
        return arrays
    log.warning("recomputing %s: its arrays have unexpected shapes", ", ".join(map(str, files.values())))
    return None


def _read_npz(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file of the earlier format (one `.npz` per clip), when it holds them."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in shapes}
    except (OSError, KeyError, ValueError):
        return None
    return arrays if all(arrays[k].shape == shape for k, shape in shapes.items()) else None


def _fit_length(a: np.ndarray, n: int, fill: float, what: str, clip: Clip) -> np.ndarray:
    """Trim or pad `a` to `n` rows: a decoder may yield a frame more or less than meta.n_frames."""
    if len(a) != n:
        log.debug("%s: %s has %d rows for %d frames; trimmed/padded", clip.meta.id, what, len(a), n)
    return fit_rows(a, n, fill)


def _tracks(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """Both tracks at exactly n_frames * 640 samples, so every per-frame array has T rows."""
    n = clip.meta.n_frames * SAMPLES_PER_FRAME
    agent, partner = clip.tracks()
    return _fit_length(agent, n, 0.0, "agent.wav", clip), _fit_length(partner, n, 0.0, "partner.wav", clip)


def _load_one(clip: Clip, imitator: Imitator, imitator_id: str, featurizer: Featurizer, cache_dir: Path,
              min_speech: float) -> MotionClip | str:
    """The clip's stage-2 arrays, or why it is skipped. Activity comes first, so a skipped real clip
    never pays for its latents; it is cached on its own, so a new imitator does not rerun the VAD."""
    key, T = _clip_key(clip), clip.meta.n_frames
    act = _cached(cache_dir / "activity" / key, {"agent": (T,), "partner": (T,)},
                  lambda: dict(zip(("agent", "partner"), map(track_activity, _tracks(clip)))))
    agent_active, partner_active = act["agent"].astype(bool), act["partner"].astype(bool)
    speech = float(agent_active.mean()) if T else 0.0
    if clip.meta.kind == "real" and speech < min_speech:
        return f"agent track has speech in {speech:.0%} of frames (< {min_speech:.0%}): music or silence, not the subject"
    latents = _cached(cache_dir / f"latents-{imitator_id}" / key, {"latents": (T, imitator.cfg.motion_dim)},
                      lambda: {"latents": _fit_length(compute_latents(clip, imitator), T, np.nan, "video.mp4", clip)})
    latents = latents["latents"]
    faces = int(np.isfinite(latents).all(1).sum())
    if faces < 2:
        return f"{faces} frame(s) with a face (< 2)"
    rows = (featurizer.per_frame * T, featurizer.dim)
    feats = _cached(cache_dir / f"audio-{featurizer.name}" / key, {"agent": rows, "partner": rows},
                    lambda: {k: np.asarray(featurizer(t), np.float32) for k, t in zip(("agent", "partner"), _tracks(clip))},
                    mmap=True)  # most of stage 2's data: shared by a launch's processes
    return MotionClip(clip.meta.id, clip.meta.kind, latents, feats["agent"], feats["partner"], agent_active,
                      partner_active)


def load_motion_clips(
    clips: list[Clip], imitator: Imitator, imitator_id: str, featurizer: Featurizer, cache_dir: str | Path,
    progress: bool = True, min_speech: float = 0.2,
) -> MotionLoad:
    """Latents, features and voice activity of every usable clip, from the cache when it is there.

    Skipped (and reported in `MotionLoad.skipped`): real clips whose agent track has speech in fewer
    than `min_speech` of its frames (a preprocessed video's audio is often music or silence, not the
    subject's speech: it would teach the model to move to sound that is not the voice), and clips
    with fewer than two frames with a face. Window length is the sampler's business.
    """
    cache_dir = Path(cache_dir)
    out, skipped = [], {}
    for clip in tqdm(clips, desc="motion latents", unit="clip", disable=not progress):
        got = _load_one(clip, imitator, imitator_id, featurizer, cache_dir, min_speech)
        if isinstance(got, MotionClip):
            out.append(got)
        else:
            skipped[clip.meta.id] = got
            log.info("stage 2 skips clip %s: %s", clip.meta.id, got)
    if skipped:
        log.warning("stage 2 skipped %d of %d clip(s) (see the log for why)", len(skipped), len(clips))
    if not out:
        raise InfpError(f"no clip is usable for stage 2 ({len(skipped)} skipped: "
                        + "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:3]) + ")")
    return MotionLoad(out, skipped)


def _rows(clips: list[MotionClip]) -> np.ndarray:
    rows = np.concatenate([c.latents[np.isfinite(c.latents).all(1)] for c in clips]).astype(np.float64)
    if len(rows) == 0:
        raise InfpError("no finite motion latents to compute statistics from")
    return rows


def latent_stats(clips: list[MotionClip]) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (mean, std) over every finite latent row. The std floor keeps a dimension E_m
    never uses from being blown up."""
    rows = _rows(clips)
    return rows.mean(0).astype(np.float32), np.maximum(rows.std(0), 1e-3).astype(np.float32)


def latent_moments(clips: list[MotionClip], about_rest: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(mean (z,), covariance (z, z)) over every finite latent row: what stage 2 whitens its latents by.
    `about_rest`: the covariance of each row's offset from its clip's rest (`clip_rest`) instead, the
    space a `rest_anchor` model generates in: the motion people make, without the spread of where
    their faces rest (on real talking videos, mostly who they are and how the camera sees them)."""
    rows = _rows(clips)
    if about_rest:
        offsets = _rows([replace(c, latents=c.latents - clip_rest(c)) for c in clips])
        return rows.mean(0).astype(np.float32), np.cov(offsets, rowvar=False).astype(np.float32)
    return rows.mean(0).astype(np.float32), np.cov(rows, rowvar=False).astype(np.float32)


REST_MIN_FRAMES = 25  # silent frames (1 s) a clip needs for its rest to be taken over them alone


def _quiet_face(latents: np.ndarray, agent_active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    face = np.isfinite(latents).all(1)
    return face, face & ~np.asarray(agent_active, bool)[: len(latents)]


def has_pauses(latents: np.ndarray, agent_active: np.ndarray) -> bool:
    """Whether a clip has REST_MIN_FRAMES face frames where the agent is silent: enough to rest on."""
    return bool(_quiet_face(latents, agent_active)[1].sum() >= REST_MIN_FRAMES)


def rest_latent(latents: np.ndarray, agent_active: np.ndarray) -> np.ndarray:
    """(z,) a clip's typical state: the per-dimension median of its face frames where the agent is silent
    (all its face frames when fewer than REST_MIN_FRAMES are), from which its rest is made (`with_rests`,
    `clip_rest`). A clip's first frame would not do, since a real clip often starts mid-word. The
    median, not the mean: blinks and nods are brief departures from the rest, not part of it."""
    face, quiet = _quiet_face(latents, agent_active)
    rows = latents[quiet] if quiet.sum() >= REST_MIN_FRAMES else latents[face]
    return np.median(rows, axis=0).astype(np.float32)


def clip_rest(clip: MotionClip) -> np.ndarray:
    """(z,) the rest a `rest_anchor` model's windows of this clip are offsets from."""
    return clip.rest if clip.rest is not None else rest_latent(clip.latents, clip.agent_active)


def with_rests(clips: list[MotionClip], neutral) -> list[MotionClip]:
    """The clips with their rest set: a clip with pauses (`has_pauses`) rests at its `rest_latent`, the
    median of its silent frames, which is where it listens; a clip without rests at `neutral` ((N, z) ->
    (N, z) latents) of its median, the operation that gives a portrait its rest at generation (the
    expression space's neutral start, lips closed and eyes open). Why both: a real monologue's median is
    a half-open speaking mouth (anchored there, a model learns speech as small motion about it), while
    the neutral start closes the mouth further than people listen (on the synthetic conversations the
    listening mouth reads 0.017 above it), so a model anchored on it for every clip learns listening as a
    slightly open mouth and draws parted lips from a portrait's closed rest (docs/stage2.md)."""
    if not clips:
        return clips
    typical = np.stack([rest_latent(c.latents, c.agent_active) for c in clips])
    paused = np.array([has_pauses(c.latents, c.agent_active) for c in clips])
    rests = typical.copy()
    if not paused.all():
        rests[~paused] = neutral(typical[~paused])
    return [replace(c, rest=np.asarray(r, np.float32)) for c, r in zip(clips, rests)]


class WindowBatch(NamedTuple):
    agent: torch.Tensor  # (B, per_frame * W, F) A_self features over the window
    partner: torch.Tensor  # (B, per_frame * W, F) A_other features
    target: torch.Tensor  # (B, W, z) the latents to generate
    context: torch.Tensor  # (B, C, z) the latents just before the window (or one latent repeated)
    style: torch.Tensor  # (B, R, z) a reference segment of the same clip
    static: torch.Tensor  # (B,) bool: the context is one latent repeated (the first window of generation)
    rest: torch.Tensor | None = None  # (B, 1, z) the clip's rest latent (`clip_rest`)


def _window_sums(x: np.ndarray, width: int) -> np.ndarray:
    """(T - width + 1,) sums of x over [u, u + width), by cumulative sums."""
    c = np.concatenate([[0], np.cumsum(x, dtype=np.int64)])
    return c[width:] - c[:-width]


@dataclass(frozen=True)
class _Index:
    """A clip's precomputed draws: window starts, one-sided window starts, style starts, face frames."""

    starts: np.ndarray
    one_sided: np.ndarray
    style: np.ndarray
    faces: np.ndarray
    rest: np.ndarray  # (z,) `clip_rest`


def _index(clip: MotionClip, window: int, context: int, style: int) -> _Index:
    bad = ~np.isfinite(clip.latents).all(1)
    # s valid: [s - context, s + window) in range and all finite (none when T < context + window)
    starts = np.where(_window_sums(bad, window + context) == 0)[0] + context
    agent_any = _window_sums(clip.agent_active, window)[starts] > 0
    partner_any = _window_sums(clip.partner_active, window)[starts] > 0
    return _Index(starts, starts[agent_any != partner_any], np.where(_window_sums(bad, style) == 0)[0],
                  np.where(~bad)[0], clip_rest(clip))


def mixed(counts: np.ndarray, real: np.ndarray, real_fraction: float | None) -> np.ndarray:
    """Each clip's probability: proportional to its windows, or with `real_fraction` q, q spread over
    the real clips' windows and 1 - q over the synthetic ones' (proportional when one side is absent)."""
    p = counts / counts.sum()
    if real_fraction is None or real.all() or not real.any():
        return p
    return np.where(real, real_fraction * p / p[real].sum(), (1 - real_fraction) * p / p[~real].sum())


class WindowSampler:
    """Draws training windows; every draw is a pure function of the generator passed to `sample`.

    A clip is picked with probability proportional to its number of valid windows, then a start
    uniformly, so every valid window is equally likely; with `real_fraction` q, a share q of the
    windows comes from the real clips and 1 - q from the synthetic ones (each side uniform over its
    windows). `one_sided` keeps only the windows where exactly one track has any voice activity: the
    paper's warm-up that initialises the verbal and non-verbal memory banks on unambiguous data
    before multi-turn conversation. `gain_db` g: each track of a window is made louder or quieter by
    a uniform random -g..g dB (log-mel features only, `infp.audio.mel.log_mel_gain`), so the mouth
    learns speech, not one recording's level.
    """

    def __init__(self, clips: list[MotionClip], window: int, context: int, style_frames: int,
                 one_sided: bool = False, static_context_prob: float = 0.1, real_fraction: float | None = None,
                 gain_db: float = 0.0):
        if window < 1 or context < 0 or style_frames < 1:
            raise InfpError(f"bad window settings: window {window}, context {context}, style {style_frames}")
        self.window, self.context, self.style_frames = window, context, style_frames
        self.one_sided, self.static_context_prob = one_sided, static_context_prob
        self.real_fraction, self.gain_db = real_fraction, gain_db
        indices = [_index(c, window, context, style_frames) for c in clips]
        kept = [(c, ix) for c, ix in zip(clips, indices) if len(ix.starts) and len(ix.style)]
        if len(kept) < len(clips):
            log.info("window sampler: dropped %d of %d clip(s) without a window of %d + %d frames or a style "
                     "reference of %d frames", len(clips) - len(kept), len(clips), context, window, style_frames)
        if not kept:
            raise InfpError(f"no clip is long enough for windows of {window} frames after {context} context "
                            f"frames and a style reference of {style_frames} frames (with a face in all of them)")
        self._all = kept
        self._total_starts = sum(len(ix.starts) for _, ix in kept)
        self._total_one_sided = sum(len(ix.one_sided) for _, ix in kept)
        if one_sided:
            kept = [(c, ix) for c, ix in kept if len(ix.one_sided)]
            if not kept:
                raise InfpError("no one-sided window (exactly one track active) in the data; "
                                "the warm-up needs clips where only one side speaks")
        self.clips = [c for c, _ in kept]
        self._ix = [ix for _, ix in kept]
        self.per_frame = self.clips[0].agent.shape[0] // self.clips[0].n_frames
        odd = [c.id for c in self.clips if c.agent.shape != c.partner.shape or len(c.agent) != self.per_frame * c.n_frames]
        if odd:
            raise InfpError(f"audio features not {self.per_frame} rows per frame in clip(s) {', '.join(odd)}")
        counts = np.array([len(self._starts(ix)) for ix in self._ix], np.float64)
        self.n_windows = int(counts.sum())
        self._p = mixed(counts, np.array([c.kind == "real" for c in self.clips]), real_fraction)

    def _starts(self, ix: _Index) -> np.ndarray:
        return ix.one_sided if self.one_sided else ix.starts

    def describe(self) -> str:
        frames = sum(c.n_frames for c, _ in self._all)
        share = self._total_one_sided / max(self._total_starts, 1)
        mode = f", drawing the {self.n_windows} one-sided ones only" if self.one_sided else ""
        real = np.array([c.kind == "real" for c in self.clips])
        mix = (f"; {real.sum()} real clip(s) give {self._p[real].sum():.0%} of the draws" if real.any() else "")
        gain = f"; track gain +-{self.gain_db:g} dB" if self.gain_db else ""
        return (f"{len(self._all)} clip(s), {frames} frames, {self._total_starts} valid windows of "
                f"{self.context}+{self.window} frames, {share:.0%} one-sided{mode}{mix}{gain}")

    def _style_start(self, rng: np.random.Generator, ix: _Index, s: int) -> int:
        """A style segment not overlapping the target window when the clip has one, else any."""
        r, st = self.style_frames, ix.style
        left = int(np.searchsorted(st, s - r, side="right"))  # st[:left] end at or before s
        right = int(np.searchsorted(st, s + self.window, side="left"))  # st[right:] start after the window
        n_ok = left + len(st) - right
        if n_ok == 0:
            return int(st[rng.integers(len(st))])
        k = int(rng.integers(n_ok))
        return int(st[k] if k < left else st[right + k - left])

    def _one(self, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        ci = int(rng.choice(len(self.clips), p=self._p))
        clip, ix = self.clips[ci], self._ix[ci]
        starts = self._starts(ix)
        s = int(starts[rng.integers(len(starts))])
        w, c, pf = self.window, self.context, self.per_frame
        static = bool(rng.random() < self.static_context_prob)
        if static:
            context = np.repeat(clip.latents[ix.faces[rng.integers(len(ix.faces))]][None], c, axis=0)
        else:
            context = clip.latents[s - c : s]
        u = self._style_start(rng, ix, s)
        return (clip.agent[pf * s : pf * (s + w)], clip.partner[pf * s : pf * (s + w)], clip.latents[s : s + w],
                context, clip.latents[u : u + self.style_frames], np.array(static), ix.rest[None])

    def sample(self, rng: np.random.Generator, batch_size: int) -> WindowBatch:
        items = [self._one(rng) for _ in range(batch_size)]
        cols = [np.stack(col) for col in zip(*items)]
        if self.gain_db:  # drawn after the windows, so the same windows are drawn with and without it
            db = rng.uniform(-self.gain_db, self.gain_db, (2, batch_size))
            cols[:2] = [np.stack([log_mel_gain(x, g) for x, g in zip(col, gains)]) for col, gains in zip(cols[:2], db)]
        floats = [torch.from_numpy(np.ascontiguousarray(a, np.float32)) for a in cols[:5] + cols[6:]]
        return WindowBatch(*floats[:5], torch.from_numpy(cols[5]), floats[5])
