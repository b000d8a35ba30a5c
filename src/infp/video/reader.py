"""Video decoding with PyAV: probe a file, stream its frames as RGB, optionally resampled to 25 fps.

Frames are streamed (one decoded frame held at a time), so hour-long source videos can be
preprocessed without holding them in memory. Resampling to a fixed rate follows the rule that
ffmpeg's `fps` filter uses for constant-rate output: output time t_k = k / fps shows the latest
source frame whose timestamp is <= t_k. A 30 fps source thus drops one frame in six, a 12 fps source
repeats frames, and output frame k is always aligned with audio sample k * sample_rate / fps, which
is what the audio features (DESIGN.md: 25 fps, 16 kHz) are cut against.

Every problem a user can cause (missing, empty, non-media or audio-only file, nothing decodable)
raises `MediaError` naming the file. A file cut off mid-stream yields what decodes and logs a warning,
because partial downloads are common in scraped datasets and most of such a clip is still usable.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container
import av.stream
import av.video
import numpy as np

from infp import FPS
from infp.errors import MediaError, require_file

log = logging.getLogger(__name__)

# Timestamps computed from rationals still pick up float error (e.g. 60 frames at 1/30 s vs 50 at
# 1/25 s); a tolerance far below any frame period keeps "t_k <= ts" decisions exact.
_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, read from its headers (nothing decoded unless the header lacks it)."""

    path: Path
    width: int
    height: int
    fps: float  # the source's average frame rate
    n_frames: int  # source frames, from the header or duration * fps: an estimate, not a count
    duration: float  # seconds
    has_audio: bool

    def n_frames_at(self, fps: float = FPS) -> int:
        """Frames `iter_frames(path, fps)` yields if the header's duration is right: a partial last
        output period still gets a frame, as in `iter_frames` (ceil, tolerant of float error)."""
        return math.ceil(self.duration * fps - 1e-3)


def _open(path: str | Path) -> tuple[Path, av.container.InputContainer]:
    """Open `path` for reading, turning every way it can fail into a one-line `MediaError`."""
    path = require_file(path)
    try:
        return path, av.open(str(path), mode="r")
    except OSError as e:  # before FFmpegError: PyAV's permission/IO errors are both
        raise MediaError(f"cannot open file ({e.strerror or e})", path) from e
    except av.FFmpegError as e:
        raise MediaError(f"not a readable media file ({e.strerror or type(e).__name__})", path) from e


def _video_stream(path: Path, container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first real video stream; cover art in audio files (attached_pic) does not count."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    kinds = sorted({s.type for s in container.streams}) or ["none"]
    raise MediaError(f"no video stream (the file has streams: {', '.join(kinds)})", path)


def _stream_fps(stream: av.video.stream.VideoStream) -> float | None:
    """The source frame rate, preferring the measured average over the codec's nominal rate."""
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and rate > 0:
            return float(rate)
    return None


def _stream_duration(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> float | None:
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def probe(path: str | Path) -> VideoInfo:
    """Read a video's size, rate, length and whether it has audio from its headers (no decoding)."""
    path, container = _open(path)
    with container:
        stream = _video_stream(path, container)
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:  # headers without the size: decode one frame to learn it
            first = next(_decode(path, container, stream), None)
            if first is None:
                raise MediaError("no decodable video frames", path)
            width, height = first.width, first.height
        duration = _stream_duration(stream, container)
        fps = _stream_fps(stream)
        n_frames = stream.frames
        if fps is None:  # rate unknown: derive it from count and length, else assume the project rate
            fps = n_frames / duration if n_frames and duration else float(FPS)
        if duration is None:
            duration = n_frames / fps if n_frames else 0.0
        if not n_frames:
            n_frames = int(round(duration * fps))
        return VideoInfo(
            path=path,
            width=int(width),
            height=int(height),
            fps=fps,
            n_frames=int(n_frames),
            duration=duration,
            has_audio=len(container.streams.audio) > 0,
        )


def _decode(
    path: Path, container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> Iterator[av.VideoFrame]:
    """Decode packet by packet, so a corrupt packet costs that packet, not the rest of the file.

    A demuxer error (the file ends inside a packet, broken index) ends the stream with a warning;
    frames already decoded are kept. Decoding nothing at all is a `MediaError`.
    """
    n_decoded = n_bad = 0
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                n_bad += 1
                continue
            for frame in frames:
                n_decoded += 1
                yield frame
    except av.FFmpegError as e:
        if n_decoded == 0:
            raise MediaError(f"cannot decode video ({e.strerror or type(e).__name__})", path) from e
        log.warning("%s: video stream ends early after %d frames (%s); keeping those", path, n_decoded, e)
    if n_decoded == 0:
        raise MediaError("no decodable video frames", path)
    if n_bad:
        log.warning("%s: skipped %d undecodable video packets", path, n_bad)
    # A cut-off file usually demuxes cleanly up to where it stops; the header's count tells.
    expected = stream.frames
    if expected and n_decoded + max(2, expected // 50) < expected:
        log.warning("%s: decoded %d of %d video frames; the file looks truncated", path, n_decoded, expected)


def _rgb(frame: av.VideoFrame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8


class _Held:
    """The source frame currently on screen while resampling; converted to RGB only if shown."""

    def __init__(self, frame: av.VideoFrame, ts: float):
        self.frame, self.ts = frame, ts
        self._rgb: np.ndarray | None = None

    def rgb(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = _rgb(self.frame)
            return self._rgb
        # Repeats are copies, so a caller editing one output frame in place edits only that one.
        return self._rgb.copy()


def iter_frames(path: str | Path, fps: float | None = FPS) -> Iterator[tuple[float, np.ndarray]]:
    """Stream `(timestamp_s, rgb)` pairs, `rgb` being (H, W, 3) uint8, timestamps from 0.

    With `fps` set, frame k has timestamp k / fps and shows the latest source frame whose timestamp is
    <= k / fps (times before the first source frame show the first frame); frames continue while
    k / fps is before the end of the last source frame (its timestamp plus its duration), so a 2 s
    clip gives 2 * fps frames whatever its source rate. With `fps=None` the source frames are
    yielded as they are, with their own timestamps.

    Timestamps come from each frame's pts, relative to the video stream's start; a frame without a
    pts is placed at index / source fps. Only frames that are output are converted to RGB.
    """
    if fps is not None and fps <= 0:
        raise ValueError(f"fps must be positive or None, got {fps}")
    path, container = _open(path)
    with container:
        stream = _video_stream(path, container)
        stream.thread_type = "AUTO"  # frame + slice threads: decoding is the bottleneck of preprocessing
        src_fps = _stream_fps(stream) or float(FPS)
        origin: float | None = None
        if stream.start_time is not None and stream.time_base is not None:
            origin = float(stream.start_time * stream.time_base)

        k = 0  # next output frame index (resampling mode)
        held: _Held | None = None
        for index, frame in enumerate(_decode(path, container, stream)):
            ts = frame.time
            if ts is None:
                ts = index / src_fps + (origin or 0.0)
            if origin is None:
                origin = ts
            ts -= origin
            if fps is None:
                yield ts, _rgb(frame)
                continue
            if held is None:  # output times before the first frame show the first frame
                held = _Held(frame, ts)
            # Output times before this frame's timestamp show the held (previous) frame.
            while k / fps < ts - _EPS:
                yield k / fps, held.rgb()
                k += 1
            if held.frame is not frame:
                held = _Held(frame, max(ts, held.ts))  # max: out-of-order pts must not turn time back

        if fps is None or held is None:
            return
        end = held.ts + _frame_duration(held.frame, src_fps)
        while k / fps < end - _EPS:
            yield k / fps, held.rgb()
            k += 1


def _frame_duration(frame: av.VideoFrame, src_fps: float) -> float:
    """How long the last frame is shown: its own duration when the container records it."""
    duration = getattr(frame, "duration", None)
    if duration and frame.time_base is not None:
        return float(Fraction(duration) * frame.time_base)
    return 1.0 / src_fps


def read_frames(path: str | Path, fps: float | None = FPS, max_frames: int | None = None) -> np.ndarray:
    """All frames of a short clip as one (T, H, W, 3) uint8 array (see `iter_frames`)."""
    frames: list[np.ndarray] = []
    with contextlib.closing(iter_frames(path, fps=fps)) as stream:  # closes the file on early stop
        for _, rgb in stream:
            if max_frames is not None and len(frames) >= max_frames:
                break
            frames.append(rgb)
    if not frames:
        # Only reachable with max_frames=0: iter_frames raises on a file with nothing decodable.
        info = probe(path)
        return np.zeros((0, info.height, info.width, 3), dtype=np.uint8)
    return np.stack(frames)
