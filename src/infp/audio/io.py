"""Audio in and out: decode any common format, resample, split a conversation into its two tracks.

Everything downstream works on float32 tracks in [-1, 1] at 16 kHz (`infp.SAMPLE_RATE`). Decoding goes
through PyAV (FFmpeg), so wav, flac, mp3, ogg, m4a/aac and the audio of a video all take one path;
resampling goes through soxr, whose quality does not depend on how FFmpeg was built.

A conversation (DESIGN.md, "The user's surface") is either one two-channel file, channel 0 the agent
(`A_self`) and channel 1 the partner (`A_other`), or two separate files of any length, rate and
channel count.
"""

from __future__ import annotations

import logging
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soxr

from infp import FPS, SAMPLE_RATE
from infp.audio.features import frame_count
from infp.errors import InfpError, MediaError, require_file
from infp.fsutil import atomic_file

log = logging.getLogger(__name__)

# Below this RMS (-60 dBFS) a track carries nothing a listener would hear: treat it as silent.
SILENCE_RMS = 1e-3

# Full scale of each integer sample format, to map decoded samples into [-1, 1).
_INT_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2.0**31, "s64": 2.0**63}


def _frame_to_planar(frame: av.AudioFrame) -> np.ndarray:
    """One decoded frame as float32 (C, n) in [-1, 1], whatever its sample format."""
    channels = frame.layout.nb_channels
    data = frame.to_ndarray()
    if not frame.format.is_planar:
        # Packed formats come back as (1, n * C), channels interleaved.
        data = data.reshape(-1, channels).T
    name = frame.format.name.rstrip("p")  # "s16p" and "s16" share a scale
    if name in _INT_SCALE:
        offset = 128.0 if name == "u8" else 0.0
        return ((data.astype(np.float64) - offset) / _INT_SCALE[name]).astype(np.float32)
    return data.astype(np.float32, copy=False)


def _expected_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The duration the file announces, to notice truncation; None when it announces none."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def wav_declared_frames(path: Path) -> int | None:
    """The sample frames a PCM or float WAV file's header declares (its data chunk's size), or None
    when it is no such file or declares no size (a stream written without one). FFmpeg estimates a
    WAV's duration from the file's size, so a file cut short looks whole to it; the header does not."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block = None
            while len(chunk := f.read(8)) == 8:
                tag, size = chunk[:4], int.from_bytes(chunk[4:], "little")
                if tag == b"fmt ":
                    fmt = f.read(size)
                    tag_fmt = int.from_bytes(fmt[:2], "little") if len(fmt) >= 16 else 0
                    if tag_fmt not in (1, 3, 0xFFFE):  # PCM, IEEE float, extensible: fixed-size frames
                        return None
                    block = int.from_bytes(fmt[12:14], "little")
                    f.seek(size % 2, 1)
                elif tag == b"data":
                    if not block or size in (0, 0xFFFFFFFF):
                        return None
                    return size // block
                else:
                    f.seek(size + size % 2, 1)
    except OSError:
        return None
    return None


def native_blocks(path: Path) -> Iterator[tuple[np.ndarray, int]]:
    """Decode the first audio stream of `path` block by block: float32 (C, n) at its native rate,
    with that rate. Raises `MediaError` naming the file when it cannot be opened, has no audio,
    decodes to nothing or holds NaN or infinite samples; a file damaged after some audio has decoded
    ends early with a warning, as does one that ends well before the duration it announces (for a
    WAV file, the length its header declares)."""
    try:
        container = av.open(str(path), mode="r")
    except av.EOFError as err:  # subclass of FFmpegError: test it first
        raise MediaError("the file ends before any audio could be read (truncated?)", path) from err
    except av.PermissionError as err:
        raise MediaError("permission denied", path) from err
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise MediaError("not a readable audio or video file (unknown format, damaged or truncated)", path) from err
    channels, rate, got = 0, 0, 0
    with container:
        if not container.streams.audio:
            raise MediaError("the file has no audio stream", path)
        stream = container.streams.audio[0]
        expected = _expected_seconds(container, stream)
        declared = wav_declared_frames(path)
        try:
            for frame in container.decode(stream):
                if frame.samples == 0:
                    continue
                block = _frame_to_planar(frame)
                if channels and block.shape[0] != channels:
                    raise MediaError("the channel count changes in the middle of the stream", path)
                channels, rate = block.shape[0], rate or frame.sample_rate
                if not np.isfinite(block).all():  # float files can hold them; they would end as a black video
                    at = got + int(np.argmax(~np.isfinite(block).all(axis=0)))
                    raise MediaError(f"the audio holds NaN or infinite samples (first at {at / rate:.3f} s)", path)
                got += block.shape[1]
                yield block, rate
        except av.FFmpegError as err:
            # A damaged tail is common (interrupted downloads, recordings cut off): keep what decoded.
            if not got:
                raise MediaError("the audio cannot be decoded (damaged or truncated file)", path) from err
            _warn_once(path, "%s: decoding stopped early (%s); using the part that decoded", path, err)
            expected = declared = None  # already warned
    if not got:
        raise MediaError("no audio samples could be decoded (empty or truncated file)", path)
    if declared is not None:
        if got < declared:
            _warn_once(path, "%s: only %.2f s of the %.2f s its header declares are in the file; the file looks "
                       "truncated", path, got / rate, declared / rate)
    elif expected is not None and got / rate < 0.9 * expected - 0.1:
        _warn_once(path, "%s: only %.2f s of the announced %.2f s decoded; the file looks truncated", path, got / rate,
                   expected)


_warned: set[tuple] = set()


def _warn_once(path: Path, message: str, *args) -> None:
    """A file's damage, logged the first time it is decoded: a conversation is decoded more than once
    (measured, then read as the frames need it)."""
    try:
        st = Path(path).stat()
        key = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size, message)
    except OSError:
        key = None
    if key is None or key not in _warned:
        _warned.add(key)
        log.warning(message, *args)


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of `path` into float32 (C, N) at its native rate."""
    blocks = list(native_blocks(path))
    return np.concatenate([b for b, _ in blocks], axis=1), blocks[0][1]


def _resample(audio: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample (C, N) with soxr (high quality); soxr wants frames-major (N, C)."""
    if rate_in == rate_out:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), rate_in, rate_out, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def load_audio(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Decode any common audio file, or the audio of a video, as float32 (C, N) in [-1, 1] at `sr`.

    Channels are kept (a conversation lives in two of them). Raises `MediaError` naming the file when
    it is missing, empty, not audio, or decodes to nothing; a file damaged near its end returns what
    decodes, with a logged warning.
    """
    path = Path(path)
    require_file(path)
    audio, rate = _decode(path)
    audio = _resample(audio, rate, sr)
    # Resampling can overshoot full scale slightly and float files may exceed it: keep the contract.
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def load_mono(path: str | Path, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Like `load_audio`, downmixed to one track (N,) by the mean of the channels."""
    return load_audio(path, sr).mean(axis=0, dtype=np.float32)


@dataclass(frozen=True, eq=False)  # eq=False: element-wise array comparison has no single truth value
class Conversation:
    """The two tracks of a dyadic conversation, equal length, float32 at `sr`.

    `agent` is `A_self` (the voice of the portrait), `partner` is `A_other` (the voice it listens to).
    """

    agent: np.ndarray  # (N,)
    partner: np.ndarray  # (N,)
    sr: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.agent.ndim != 1 or self.partner.ndim != 1:
            raise ValueError("Conversation tracks must be 1-D (N,)")
        if self.agent.shape != self.partner.shape:
            raise ValueError(f"Conversation tracks differ in length: {self.agent.shape} vs {self.partner.shape}")

    @property
    def num_samples(self) -> int:
        """Samples per track."""
        return int(self.agent.shape[0])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_samples / self.sr

    def num_frames(self, fps: int = FPS) -> int:
        """Video frames covering the conversation (the output video has exactly this many)."""
        return frame_count(self.num_samples, self.sr, fps)

    def stereo(self) -> np.ndarray:
        """(2, N): channel 0 agent, channel 1 partner, the layout `load_conversation` reads back."""
        return np.stack([self.agent, self.partner])

    @property
    def mix_peak(self) -> float:
        """The loudest sample of agent + partner (what a mixed soundtrack must be scaled by to not clip)."""
        return float(np.abs(self.agent + self.partner).max(initial=0.0))

    def chunks(self, n: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(agent, partner) in pieces of `n` samples (the last may be shorter), as `ConversationFile` gives them."""
        for k in range(0, self.num_samples, n):
            yield self.agent[k : k + n], self.partner[k : k + n]


def _pad_to(track: np.ndarray, n: int) -> np.ndarray:
    """Append silence so `track` has `n` samples."""
    return np.pad(track, (0, n - track.shape[0])) if track.shape[0] < n else track


def track_stats(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(energy of a, energy of b, a . b) in float64: what `note_tracks` needs, summable over the
    chunks of a long recording."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return np.array([a64 @ a64, b64 @ b64, a64 @ b64])


def check_channels(channels: int, path: str | Path) -> None:
    """A two-track conversation file needs two channels: an error for one, a warning for more."""
    if channels < 2:
        raise InfpError("this file is mono; a conversation needs two channels (0 = agent, 1 = partner) "
                        "or two files (--agent/--partner)", path)
    if channels > 2:
        log.warning("%s: %d channels; using channel 0 as the agent and channel 1 as the partner", path, channels)


def note_tracks(stats: np.ndarray, n: int, path: str | Path | None = None, min_correlation: float = 0.98) -> None:
    """Say what is worth knowing about two tracks of `n` samples from their `track_stats`: one
    signal on both channels of a file (`path`), a silent track (a monologue or pure listening)."""
    ea, ep, dot = stats
    if path is not None and ea > 0 and ep > 0 and dot / np.sqrt(ea * ep) > min_correlation:
        # Typical of one voice recorded or saved as stereo: both roles would get the same voice.
        log.warning("%s: both channels carry the same signal; a conversation needs each voice on its own "
                    "channel", path)
    agent_silent = n == 0 or np.sqrt(ea / n) < SILENCE_RMS
    partner_silent = n == 0 or np.sqrt(ep / n) < SILENCE_RMS
    if agent_silent and partner_silent:
        log.warning("both tracks are silent: the portrait will only idle")
    elif partner_silent:
        log.info("partner track is silent: treating as a monologue")
    elif agent_silent:
        log.info("agent track is silent: the portrait will only listen")


def load_conversation(
    audio: str | Path | None = None,
    agent: str | Path | None = None,
    partner: str | Path | None = None,
    sr: int = SAMPLE_RATE,
) -> Conversation:
    """Load a conversation from one two-channel file (`audio`) or two files (`agent`, `partner`).

    Two files may differ in length, rate and channels: each is downmixed to mono and the shorter is
    padded with silence at its end. Raises `InfpError` when the inputs do not describe two tracks.
    For recordings too long to hold whole, `infp.audio.chunks.ConversationFile` reads them in pieces.
    """
    if audio is not None:
        if agent is not None or partner is not None:
            raise InfpError("give either one two-channel file or --agent and --partner, not both")
        both = load_audio(audio, sr)
        check_channels(both.shape[0], audio)
        a, p = np.ascontiguousarray(both[0]), np.ascontiguousarray(both[1])
    elif agent is not None and partner is not None:
        a, p = load_mono(agent, sr), load_mono(partner, sr)
        n = max(a.shape[0], p.shape[0])
        a, p = _pad_to(a, n), _pad_to(p, n)
    else:
        raise InfpError("a conversation needs one two-channel file or two files (--agent and --partner)")
    note_tracks(track_stats(a, p), len(a), audio)
    return Conversation(agent=a, partner=p, sr=sr)


def save_wav(path: str | Path, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    """Write (N,) or (C, N) float audio as 16-bit PCM WAV; the file appears complete or not at all."""
    audio = np.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"save_wav expects (N,) or (C, N) audio, got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("save_wav got NaN or infinite samples")
    # Scale by 32768 (as FFmpeg reads s16 back) so a round trip is exact; clip the one value over.
    pcm = np.clip(np.round(audio.astype(np.float64) * 32768.0), -32768, 32767).astype("<i2")
    with atomic_file(path) as tmp:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(pcm.shape[0])
            out.setsampwidth(2)
            out.setframerate(int(sr))
            out.writeframes(np.ascontiguousarray(pcm.T).tobytes())  # interleaved (N, C)
