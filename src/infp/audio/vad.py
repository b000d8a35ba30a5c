"""Voice activity per track, one value per video frame, with Silero VAD.

Who speaks when is what the model must learn from the two tracks alone (INFP has no role labels); VAD
is what the synthetic data, the preprocessor and the evaluation use to measure it. Silero VAD ships
its TorchScript model inside the `silero-vad` wheel, so it runs offline. It scores 512-sample chunks
(32 ms at 16 kHz); the chunk scores are interpolated to video frame centres (40 ms at 25 fps).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch

from infp import FPS, SAMPLE_RATE
from infp.audio.features import frame_count
from infp.timeline import runs

CHUNK = 512  # samples Silero scores at a time at 16 kHz (fixed by the model)

_model: torch.jit.ScriptModule | None = None
# The model carries recurrent state between chunks: one caller at a time.
_lock = threading.Lock()


def _silero() -> torch.jit.ScriptModule:
    """Load the Silero model once, leaving torch's thread count as the caller set it."""
    global _model
    if _model is None:
        threads = torch.get_num_threads()
        try:
            # Importing silero_vad.model calls torch.set_num_threads(1) as a side effect; undo it so
            # the rest of the process (the renderer) keeps every core.
            from silero_vad import load_silero_vad

            with warnings.catch_warnings():
                # Silero's loader uses APIs its dependencies deprecate (importlib path, torch.jit.load);
                # nothing the user can act on.
                warnings.simplefilter("ignore", DeprecationWarning)
                _model = load_silero_vad(onnx=False)
        finally:
            torch.set_num_threads(threads)
    return _model


def speech_probability(audio_16k: np.ndarray, fps: int = FPS) -> np.ndarray:
    """Speech probability per video frame of a 16 kHz track: (N,) -> (T,), or (C, N) -> (C, T).

    T = ceil(N / (16000 / fps)). Deterministic: the model state is reset before every call.
    """
    audio = np.asarray(audio_16k, dtype=np.float32)
    if audio.ndim not in (1, 2):
        raise ValueError(f"speech_probability expects (N,) or (C, N) audio, got shape {audio.shape}")
    batch = audio if audio.ndim == 2 else audio[None]  # (C, N)
    n = batch.shape[1]
    frames = frame_count(n, SAMPLE_RATE, fps)
    if frames == 0 or batch.shape[0] == 0:
        return np.zeros(audio.shape[:-1] + (frames,), dtype=np.float32)
    if n < CHUNK:
        batch = np.pad(batch, ((0, 0), (0, CHUNK - n)))  # the model needs at least one whole chunk
    x = torch.from_numpy(np.ascontiguousarray(batch))
    with _lock, torch.inference_mode():
        model = _silero()
        chunk_probs = model.audio_forward(x, SAMPLE_RATE).numpy()  # (C, K); resets state itself
    chunk_centres = (np.arange(chunk_probs.shape[1]) + 0.5) * CHUNK
    frame_centres = (np.arange(frames) + 0.5) * (SAMPLE_RATE / fps)
    out = np.stack([np.interp(frame_centres, chunk_centres, p) for p in chunk_probs]).astype(np.float32)
    return out if audio.ndim == 2 else out[0]


def _seconds_to_frames(seconds: float, fps: int) -> int:
    """Frames a duration needs, rounded up (epsilon: 0.2 s at 25 fps is 5 frames, not 6)."""
    return max(0, int(np.ceil(seconds * fps - 1e-6)))


def activity_from_probability(
    prob: np.ndarray,
    fps: int = FPS,
    threshold: float = 0.5,
    min_speech_s: float = 0.1,
    min_silence_s: float = 0.2,
) -> np.ndarray:
    """(T,) bool speech activity from per-frame probabilities, with hysteresis and cleanup.

    Speech starts at `threshold` and ends below `threshold - 0.15` (as Silero's own segmenter does), so
    a probability hovering near the threshold does not flicker. Pauses shorter than `min_silence_s`
    inside speech are filled, then bursts shorter than `min_speech_s` are dropped.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 1:
        raise ValueError(f"expected (T,) probabilities, got shape {prob.shape}")
    low = max(threshold - 0.15, 0.01)
    active = np.zeros(prob.shape[0], dtype=bool)
    on = False
    for t, p in enumerate(prob):  # T is 25 per second: a Python loop is cheap here
        on = p >= threshold if not on else p >= low
        active[t] = on
    starts, ends = runs(active)
    min_gap = _seconds_to_frames(min_silence_s, fps)
    for gap_start, gap_end in zip(ends[:-1], starts[1:]):  # interior pauses only, never the edges
        if gap_end - gap_start < min_gap:
            active[gap_start:gap_end] = True
    min_len = _seconds_to_frames(min_speech_s, fps)
    for start, end in zip(*runs(active)):
        if end - start < min_len:
            active[start:end] = False
    return active


def voice_activity(
    audio_16k: np.ndarray,
    fps: int = FPS,
    threshold: float = 0.5,
    min_speech_s: float = 0.1,
    min_silence_s: float = 0.2,
) -> np.ndarray:
    """(T,) bool: is there speech in each video frame of a (N,) 16 kHz track."""
    prob = speech_probability(audio_16k, fps)
    if prob.ndim != 1:
        raise ValueError("voice_activity takes one (N,) track; call it once per track")
    return activity_from_probability(prob, fps, threshold, min_speech_s, min_silence_s)


def segments(active: np.ndarray, fps: int = FPS) -> list[tuple[float, float]]:
    """Speech segments of a (T,) bool activity as (start, end) seconds; end is exclusive."""
    active = np.asarray(active, dtype=bool)
    if active.ndim != 1:
        raise ValueError(f"expected (T,) activity, got shape {active.shape}")
    starts, ends = runs(active)
    return [(float(s) / fps, float(e) / fps) for s, e in zip(starts, ends)]
