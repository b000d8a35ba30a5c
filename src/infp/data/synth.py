"""`infp synth`: synthetic two-track conversations with a real portrait as the agent.

For each clip: draw two speakers (espeak-ng voices, or real speech spliced from `--speech DIR`), a
conversation schedule and its audio, the agent's behaviour (`data.behaviour`), then render the portrait
frame by frame (`data.render`), encode, and run MediaPipe on every rendered frame so the clip carries
measured landmarks exactly like a preprocessed real video. Deterministic for a given seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from infp import FPS, SAMPLE_RATE, __version__
from infp.audio.io import save_wav
from infp.data import contact
from infp.data.behaviour import Behaviour, simulate
from infp.data.clip import ClipMeta
from infp.data.conversation import AGENT, PARTNER, ConversationAudio, make_conversation
from infp.data.portraits import Portrait, load_portraits
from infp.data.render import PortraitAnimator
from infp.data.speech import ESPEAK_LANGS, EspeakVoice, Speaker, SpeechBank, check_languages
from infp.face import FaceMesh
from infp.fsutil import atomic_dir
from infp.video import VideoWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthConfig:
    seconds: float = 20.0
    size: int = 256
    real_speech_prob: float = 0.5  # chance that a side speaks real spliced speech (with --speech)
    languages: tuple[str, ...] = ESPEAK_LANGS  # espeak-ng voices' languages (held-out sets: others)


def _speakers(rng: np.random.Generator, bank: SpeechBank | None, cfg: SynthConfig) -> tuple[Speaker, Speaker]:
    v1 = EspeakVoice.random(rng, cfg.languages)
    v2 = EspeakVoice.random(rng, cfg.languages)
    while v2.voice == v1.voice and abs(v2.pitch - v1.pitch) < 15:  # two distinct voices
        v2 = EspeakVoice.random(rng, cfg.languages)
    # With a speech bank, each side may speak real speech, each from its own file (its own voice).
    files = list(rng.permutation(bank.voices)) if bank is not None else []
    speakers = []
    for v in (v1, v2):
        real = bool(files) and rng.random() < cfg.real_speech_prob  # files is empty without a bank
        speakers.append(Speaker(v, float(rng.uniform(-4, 3)), bank if real else None, int(files.pop()) if real else None))
    return speakers[0], speakers[1]


def synth_clip(
    out: Path, clip_id: str, portrait: Portrait, seed: int, cfg: SynthConfig, bank: SpeechBank | None, bar: tqdm | None = None
) -> ClipMeta:
    """Write one clip directory `out/clip_id` and return its metadata."""
    rng = np.random.default_rng(seed)
    agent, partner = _speakers(rng, bank, cfg)
    conv = make_conversation(rng, cfg.seconds, agent, partner)
    beh = simulate(rng, conv)
    with atomic_dir(out / clip_id) as tmp:
        landmarks, sheet = _render(tmp, portrait, conv, beh, bar)
        save_wav(tmp / "agent.wav", conv.agent)
        save_wav(tmp / "partner.wav", conv.partner)
        np.save(tmp / "landmarks.npy", landmarks)
        beh.save(tmp / "behaviour.npz")
        contact.write_png(tmp / "contact.png", sheet)
        found = float(np.isfinite(landmarks[:, 0, 0]).mean())
        meta = ClipMeta(
            id=clip_id, kind="synthetic", fps=FPS, n_frames=conv.n_frames, size=cfg.size, sample_rate=SAMPLE_RATE,
            source=portrait.name, face_found=found, seed=seed,
            extra={
                "generator": f"infp {__version__} synth",
                "agent_voice": _describe(agent), "partner_voice": _describe(partner),
                "agent_speaking_fraction": float(beh.agent_speaking.mean()),
                "partner_speaking_fraction": float(beh.partner_speaking.mean()),
                "overlap_fraction": float((beh.agent_speaking & beh.partner_speaking).mean()),
                "utterances": [[u.speaker, round(u.start, 3), round(u.end, 3), u.backchannel] for u in conv.utterances],
            },
        )
        meta.save(tmp / "meta.json")
    if found < 0.98:
        log.warning("%s: MediaPipe found the face in only %.1f%% of frames", clip_id, 100 * found)
    return meta


def _describe(s: Speaker) -> str:
    v = f"espeak-ng {s.voice.voice} pitch {s.voice.pitch} speed {s.voice.speed}"
    return f"real speech from {s.bank.files[s.bank_voice].name} (backchannels: {v})" if s.bank is not None else v


def _render(tmp: Path, portrait: Portrait, conv: ConversationAudio, beh: Behaviour, bar: tqdm | None):
    """Render, encode and measure every frame; returns (landmarks (T, 478, 3), contact sheet)."""
    n = len(beh)
    listening = beh.partner_speaking & ~beh.agent_speaking
    speak_idx = contact.pick(beh.agent_speaking & ~beh.agent_backchannel, beh.mouth, 6)
    listen_idx = contact.pick(listening, beh.smile + np.abs(beh.pitch) / 10, 6)
    keep: dict[int, np.ndarray] = {}
    landmarks = np.full((n, 478, 3), np.nan, np.float32)
    animator = PortraitAnimator(portrait.image, portrait.points)
    stereo = np.stack([conv.agent, conv.partner])
    with VideoWriter(tmp / "video.mp4", fps=FPS, audio=stereo) as writer, FaceMesh(static=False) as mesh:
        for t in range(n):
            frame, _ = animator.render(beh.pose(t))
            writer.write(frame)
            faces = mesh.detect(frame)
            if faces:
                landmarks[t] = faces[0].points
            if t in speak_idx or t in listen_idx:
                keep[t] = frame
            if bar is not None:
                bar.update(1)
    rows = [
        [contact.label(keep[t], f"speaking {t / FPS:.1f}s") for t in speak_idx],
        [contact.label(keep[t], f"listening {t / FPS:.1f}s") for t in listen_idx],
    ]
    return landmarks, contact.sheet([r for r in rows if r] or [[portrait.image]], portrait.image.shape[0])


def synth_side_by_side(path: str | Path, portraits: tuple[Portrait, Portrait], seed: int, cfg: SynthConfig,
                       bank: SpeechBank | None = None) -> np.ndarray:
    """A recording of a synthetic conversation between two portraits side by side, with one mixed track
    (what `infp preprocess --layout side-by-side` reads), written to `path`; returns who truly speaks,
    (T, 2) bool [left, right], to score the speaker separation against (`data.separation.score`). Each
    side behaves as `synth` has its agent behave (`data.behaviour`), from its own side of the schedule."""
    rng = np.random.default_rng(seed)
    conv = make_conversation(rng, cfg.seconds, *_speakers(rng, bank, cfg))
    behaviours = [simulate(rng, conv), simulate(rng, conv.swapped())]
    animators = [PortraitAnimator(p.image, p.points) for p in portraits]
    with VideoWriter(path, fps=FPS, audio=np.clip(conv.agent + conv.partner, -1, 1)) as writer:
        for t in range(conv.n_frames):
            writer.write(np.concatenate([a.render(b.pose(t))[0] for a, b in zip(animators, behaviours, strict=True)], axis=1))
    return np.stack([conv.speaking(AGENT), conv.speaking(PARTNER)], axis=1)


def synthesize(
    out: str | Path, count: int = 1, seconds: float = 20.0, seed: int = 0, portraits: str | Path | None = None,
    speech: str | Path | None = None, size: int = 256, progress: bool = True, real_speech_prob: float = 0.5,
    languages: tuple[str, ...] | None = None,
) -> list[ClipMeta]:
    """Make `count` clips under `out` (clip_00000, ...). Existing complete clips are kept. `languages`:
    the espeak-ng voices' languages (default `ESPEAK_LANGS`)."""
    if languages is not None:
        check_languages(tuple(languages))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = SynthConfig(seconds=seconds, size=size, real_speech_prob=real_speech_prob,
                      languages=tuple(languages) if languages else ESPEAK_LANGS)
    faces = load_portraits(portraits, size)
    bank = SpeechBank(speech) if speech is not None else None
    metas = []
    n_frames = int(round(seconds * FPS))
    with tqdm(total=count * n_frames, unit="frame", desc="synth", disable=not progress) as bar:
        for i in range(count):
            clip_seed = seed * 1_000_003 + i  # independent, reproducible clip seeds
            portrait = faces[int(np.random.default_rng([clip_seed, 1]).integers(len(faces)))]
            clip_id = f"clip_{i:05d}"
            if (out / clip_id / "meta.json").exists():
                metas.append(ClipMeta.load(out / clip_id / "meta.json"))
                bar.update(n_frames)
                continue
            metas.append(synth_clip(out, clip_id, portrait, clip_seed, cfg, bank, bar))
    return metas
