"""Video I/O: round trips through H.264/AAC, 25 fps resampling, atomic writes, and user errors."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from infp.errors import MediaError
from infp.audio import frame_count
from infp.video import VideoWriter, iter_frames, probe, read_frames, write_video

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


def moving_square(n: int, width: int, height: int) -> list[np.ndarray]:
    """Frames with a red square sliding right over a fixed gradient: motion the codec must keep."""
    ys, xs = np.mgrid[0:height, 0:width]
    background = np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 90)], axis=-1).astype(np.uint8)
    frames = []
    for i in range(n):
        f = background.copy()
        x = (i * 2) % (width - 12)
        f[8:20, x : x + 12] = (230, 20, 20)
        frames.append(f)
    return frames


def stereo(n_samples: int, sample_rate: int = 16_000) -> np.ndarray:
    t = np.arange(n_samples) / sample_rate
    return (0.3 * np.stack([np.sin(2 * np.pi * 220 * t), np.sin(2 * np.pi * 330 * t)])).astype(np.float32)


def encode_raw(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Write a video with PyAV directly, at a rate the project's writer is not meant for."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, fps)
            c.mux(s.encode(vf))
        c.mux(s.encode(None))


def index_frames(n: int, size: int = 32) -> list[np.ndarray]:
    """Frame i is flat grey level 4*i, so the source index can be read back from a decoded frame."""
    return [np.full((size, size, 3), 4 * i, np.uint8) for i in range(n)]


def source_index(frame: np.ndarray) -> int:
    return int(round(frame.astype(np.float64).mean() / 4))


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("width,height", [(64, 48), (65, 49)])
@pytest.mark.parametrize("with_audio", [False, True])
def test_round_trip(tmp_path: Path, width: int, height: int, with_audio: bool) -> None:
    frames = moving_square(50, width, height)
    audio = stereo(50 * 640) if with_audio else None
    out = write_video(tmp_path / "out.mp4", frames, audio=audio)

    info = probe(out)
    assert info.fps == 25 and info.n_frames == 50 and info.has_audio == with_audio
    assert (info.width, info.height) == (width + width % 2, height + height % 2)  # odd -> edge-padded
    assert info.duration == pytest.approx(2.0, abs=1e-3)

    back = read_frames(out)
    assert back.shape == (50, height + height % 2, width + width % 2, 3)
    err = np.abs(back[:, :height, :width].astype(np.int16) - np.stack(frames).astype(np.int16)).mean()
    assert err < 8, f"mean abs error {err:.2f} too high for crf 18"
    if width % 2:  # the padding column repeats the last real column
        assert np.abs(back[:, :height, -1].astype(int) - back[:, :height, -2].astype(int)).mean() < 8

    with av.open(str(out)) as c:
        v = c.streams.video[0]
        assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
        assert v.average_rate == 25
        if with_audio:
            a = c.streams.audio[0]
            assert a.codec_context.name == "aac" and a.channels == 2 and a.rate == 16_000
            assert float(a.duration * a.time_base) == pytest.approx(2.0, abs=1e-3)  # = video length
    head = out.read_bytes()[:4096]
    assert 0 <= head.find(b"moov") < 4096, "moov atom must come first (+faststart) for browsers"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


@pytest.mark.parametrize("n_samples", [50 * 640 - 300, 50 * 640 + 5000, 10 * 640])
def test_audio_trimmed_or_padded_to_video_length(tmp_path: Path, n_samples: int) -> None:
    audio = stereo(n_samples)[0]  # mono (N,)
    out = write_video(tmp_path / "a.mp4", moving_square(50, 32, 32), audio=audio)
    with av.open(str(out)) as c:
        a = c.streams.audio[0]
        assert a.channels == 1
        assert float(a.duration * a.time_base) == pytest.approx(2.0, abs=1e-3)
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(a)], axis=1)  # (1, n) + AAC tail
    assert 32_000 <= decoded.shape[1] < 32_000 + 1024
    kept = min(n_samples, 32_000)
    rms = np.sqrt(np.mean(decoded[0, 1024 : kept - 1024] ** 2))
    assert rms == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # the caller's tone survives the codec
    if n_samples + 1024 < 32_000:  # padded with silence after it (1024: the AAC window's spill)
        assert np.abs(decoded[0, n_samples + 1024 : 32_000]).max() < 0.01


@pytest.mark.parametrize("n_samples", [50 * 640 - 2000, 50 * 640 + 5000])
def test_audio_in_chunks_is_muxed_as_the_whole_array(tmp_path: Path, n_samples: int, caplog) -> None:
    audio = stereo(n_samples)
    pieces = (audio[:, k : k + 3001] for k in range(0, n_samples, 3001))  # a generator: read as needed
    whole = write_video(tmp_path / "whole.mp4", moving_square(50, 32, 32), audio=audio)
    with caplog.at_level(logging.WARNING):
        chunked = write_video(tmp_path / "chunked.mp4", moving_square(50, 32, 32), audio=pieces)
    assert ("trimmed" if n_samples > 32_000 else "padded") in caplog.text  # the length is still checked

    def decoded(path: Path) -> np.ndarray:
        with av.open(str(path)) as c:
            return np.concatenate([f.to_ndarray() for f in c.decode(c.streams.audio[0])], axis=1)

    np.testing.assert_array_equal(decoded(chunked), decoded(whole))
    with pytest.raises(ValueError, match="channel"):
        write_video(tmp_path / "bad.mp4", moving_square(5, 32, 32), audio=iter([audio, audio[:1]]))
    assert not (tmp_path / "bad.mp4").exists()


def test_frame_count_for_the_writer() -> None:
    assert frame_count(32_000) == 50
    assert frame_count(32_001) == 51  # a partial last frame still gets a frame
    assert frame_count(0) == 0


def test_writer_streams_and_validates(tmp_path: Path) -> None:
    with VideoWriter(tmp_path / "v.mp4") as w:
        w.write(np.zeros((32, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="earlier frames"):
            w.write(np.zeros((16, 32, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            w.write(np.zeros((32, 32, 3), np.float32))
    assert read_frames(tmp_path / "v.mp4").shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="audio"):
        VideoWriter(tmp_path / "x.mp4", audio=np.zeros((16000, 2), np.float32))
    with pytest.raises(RuntimeError):
        VideoWriter(tmp_path / "x.mp4").write(np.zeros((32, 32, 3), np.uint8))


def test_failure_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "fail.mp4"
    with pytest.raises(KeyError):
        with VideoWriter(target, audio=stereo(16000)) as w:
            for f in moving_square(10, 32, 32):
                w.write(f)
            raise KeyError("boom")
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(target):
            pass
    assert list(tmp_path.iterdir()) == []


# -- resampling ----------------------------------------------------------------------------------


def test_resample_30_to_25(tmp_path: Path) -> None:
    path = tmp_path / "30.mp4"
    encode_raw(path, index_frames(60), fps=30)
    assert probe(path).fps == 30 and probe(path).n_frames == 60
    out = list(iter_frames(path, fps=25))
    assert len(out) == 50
    assert [t for t, _ in out] == pytest.approx([k / 25 for k in range(50)])
    # Output k shows source floor(k * 30 / 25): the latest source frame at or before k / 25.
    assert [source_index(f) for _, f in out] == [k * 30 // 25 for k in range(50)]
    native = list(iter_frames(path, fps=None))
    assert len(native) == 60 and native[1][0] == pytest.approx(1 / 30)


def test_resample_10_to_25_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "10.mp4"
    encode_raw(path, index_frames(20), fps=10)
    frames = read_frames(path, fps=25)
    assert frames.shape[0] == 50
    indices = [source_index(f) for f in frames]
    assert indices == [k * 10 // 25 for k in range(50)]  # each source frame shown 2 or 3 times
    frames[0, 0, 0] = 255  # repeats are independent arrays
    assert frames[1, 0, 0, 0] != 255
    assert read_frames(path, fps=25, max_frames=7).shape[0] == 7


# -- errors --------------------------------------------------------------------------------------


def test_audio_only_file(tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    for call in (probe, read_frames):
        with pytest.raises(MediaError, match="no video stream") as e:
            call(wav)
        assert "speech.wav" in str(e.value)


@pytest.mark.parametrize("content", [None, b"", b"this is not a video at all" * 100])
def test_bad_files(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    for call in (probe, read_frames):
        with pytest.raises(MediaError) as e:
            call(path)
        assert "bad.mp4" in str(e.value)


def test_truncated_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = write_video(tmp_path / "good.mp4", moving_square(50, 64, 48), audio=stereo(32_000))
    data = good.read_bytes()
    for fraction in (2, 20):
        cut = tmp_path / f"cut{fraction}.mp4"
        cut.write_bytes(data[: len(data) // fraction])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="infp.video"):
            try:
                frames = read_frames(cut)
            except MediaError as e:
                assert cut.name in str(e)
                continue
        assert 0 < len(frames) < 50
        assert any("truncated" in r.getMessage() or "ends early" in r.getMessage() for r in caplog.records)


# -- real videos ---------------------------------------------------------------------------------


def real_video(name: str) -> Path:
    path = VIDEOS / name
    if not path.is_file():
        pytest.skip(f"real test video {path} is not available in this checkout")
    return path


def test_real_25fps_video() -> None:
    path = real_video("lp_d0.mp4")
    info = probe(path)
    assert (info.width, info.height, info.fps, info.has_audio) == (512, 512, 25.0, False)
    n = 0
    for k, (t, frame) in enumerate(iter_frames(path)):
        assert t == pytest.approx(k / 25) and frame.shape == (512, 512, 3) and frame.dtype == np.uint8
        n += 1
    assert n == info.n_frames == info.n_frames_at(25)


def test_real_2997fps_video_to_25() -> None:
    path = real_video("hdtf_RD_Radio10_0_clip_0.mp4")
    info = probe(path)
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.has_audio
    frames = read_frames(path, fps=25)
    assert abs(frames.shape[0] - info.duration * 25) <= 1.5
    assert frames.shape[0] == info.n_frames_at(25) == 52  # 61 decoded frames of 1001/30000 s each
    assert frames.shape[1:] == (512, 512, 3)
    assert frames.std() > 10  # real image content, not a blank decode
