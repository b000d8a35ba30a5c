"""Tests of the audio layer: decoding, resampling, conversations, WAV output, frame features, VAD."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from infp.audio import (
    Conversation,
    activity_from_probability,
    frame_count,
    frame_rms,
    load_audio,
    load_conversation,
    load_mono,
    save_wav,
    segments,
    speech_probability,
    voice_activity,
)
from infp.audio.chunks import ConversationFile
from infp.errors import InfpError, MediaError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEECH = SHARED_DATA / "audio" / "mt_eng_60s.wav"
SR = 16000


# ---------------------------------------------------------------------------------------- helpers


def sine(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    """(N,) float32 sine."""
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(path: Path, audio: np.ndarray, sr: int, codec: str, video: bool = False) -> Path:
    """Write (C, N) float audio with PyAV, independently of the code under test."""
    layout = {1: "mono", 2: "stereo"}[audio.shape[0]]
    with av.open(str(path), "w") as out:
        if video:
            vstream = out.add_stream("mpeg4", rate=25)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 64, "yuv420p"
        stream = out.add_stream(codec, rate=sr)
        stream.layout = layout
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate, frame.pts = sr, 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
        if video:
            for i in range(int(audio.shape[1] / sr * 25)):
                image = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
                image.pts = i
                for packet in vstream.encode(image):
                    out.mux(packet)
            for packet in vstream.encode(None):
                out.mux(packet)
    return path


def dominant_freq(x: np.ndarray, sr: int) -> float:
    """Frequency of the strongest FFT bin."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spectrum)])


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.asarray(x, np.float64) ** 2)))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """60 s of real English speech at 16 kHz, from the shared data folder."""
    if not SPEECH.is_file():
        pytest.skip(f"real speech sample not available ({SPEECH} is absent)")
    return load_mono(SPEECH)


# ---------------------------------------------------------------------------------------- loading

STEREO_44K = np.stack([sine(1000, 1.5, 44100, 0.5), sine(440, 1.5, 44100, 0.25)])


@pytest.mark.parametrize(
    "ext, codec, tol_samples, tol_amp",
    [("wav", "pcm_s16le", 2, 0.01), ("flac", "flac", 2, 0.01), ("mp3", "libmp3lame", 64, 0.1)],
)
def test_load_formats(tmp_path: Path, ext: str, codec: str, tol_samples: int, tol_amp: float) -> None:
    path = encode(tmp_path / f"tone.{ext}", STEREO_44K, 44100, codec)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 2 and audio.shape[0] == 2
    assert abs(audio.shape[1] - 24000) <= tol_samples
    assert np.abs(audio).max() <= 1.0
    middle = audio[:, 2000:-2000]  # away from codec edge effects
    assert rms(middle[0]) == pytest.approx(0.5 / np.sqrt(2), rel=tol_amp)
    assert rms(middle[1]) == pytest.approx(0.25 / np.sqrt(2), rel=tol_amp)
    assert dominant_freq(middle[0], SR) == pytest.approx(1000, abs=3)
    assert dominant_freq(middle[1], SR) == pytest.approx(440, abs=3)


@pytest.mark.parametrize("ext, video", [("m4a", False), ("mp4", True)])
def test_load_aac_and_video_audio(tmp_path: Path, ext: str, video: bool) -> None:
    path = encode(tmp_path / f"tone.{ext}", STEREO_44K, 44100, "aac", video=video)
    audio = load_audio(path)
    assert audio.shape[0] == 2
    assert abs(audio.shape[1] - 24000) <= 0.1 * SR  # AAC adds encoder delay/padding
    assert dominant_freq(audio[0, 4000:-4000], SR) == pytest.approx(1000, abs=3)


@pytest.mark.parametrize("rate_in", [8000, 22050, 44100, 48000])
def test_resampling_keeps_frequency(tmp_path: Path, rate_in: int) -> None:
    path = encode(tmp_path / "tone.wav", sine(1000, 1.0, rate_in)[None], rate_in, "pcm_s16le")
    audio = load_audio(path)
    assert audio.shape == (1, SR)
    assert dominant_freq(audio[0], SR) == pytest.approx(1000, abs=2)
    assert rms(audio[0, 500:-500]) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    assert load_audio(path, sr=24000).shape == (1, 24000)


def test_load_mono_averages_channels(tmp_path: Path) -> None:
    both = np.stack([sine(1000, 0.5, SR, 0.5), -sine(1000, 0.5, SR, 0.5)])  # cancel out when averaged
    path = encode(tmp_path / "opposed.wav", both, SR, "pcm_s16le")
    mono = load_mono(path)
    assert mono.shape == (SR // 2,) and mono.dtype == np.float32
    assert np.abs(mono).max() < 1e-3


# ---------------------------------------------------------------------------------------- errors


def _truncated_wav(path: Path) -> None:
    save_wav(path, sine(440, 1.0, SR))
    path.write_bytes(path.read_bytes()[:44])  # header only: no samples


def _truncated_m4a(path: Path) -> None:
    encode(path, STEREO_44K, 44100, "aac")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # index (moov) lost


def _png(path: Path) -> None:
    with av.open(str(path), "w") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 8, 8, "rgb24"
        image = av.VideoFrame.from_ndarray(np.zeros((8, 8, 3), np.uint8), format="rgb24")
        for packet in [*stream.encode(image), *stream.encode(None)]:
            out.mux(packet)


@pytest.mark.parametrize(
    "name, make",
    [
        ("missing.wav", lambda p: None),
        ("empty.wav", lambda p: p.write_bytes(b"")),
        ("notes.txt", lambda p: p.write_text("this is not audio\n" * 20)),
        ("garbage.mp3", lambda p: p.write_bytes(np.random.default_rng(0).bytes(4096))),
        ("picture.png", _png),
        ("cut.wav", _truncated_wav),
        ("cut.m4a", _truncated_m4a),
    ],
)
def test_bad_files_raise_media_error(tmp_path: Path, name: str, make) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(MediaError) as info:
        load_audio(path)
    assert name in str(info.value)
    assert "\n" not in str(info.value)  # one line for the CLI


def test_partially_truncated_file_returns_what_decodes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = encode(tmp_path / "half.mp3", STEREO_44K, 44100, "libmp3lame")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        audio = load_audio(path)
    assert audio.shape[0] == 2 and 0.3 * SR < audio.shape[1] < 1.2 * SR
    assert "half.mp3" in caplog.text and "truncated" in caplog.text


# ---------------------------------------------------------------------------------------- conversations


def test_conversation_from_stereo_file(tmp_path: Path) -> None:
    path = encode(tmp_path / "talk.flac", STEREO_44K, 44100, "flac")
    conv = load_conversation(audio=path)
    assert isinstance(conv, Conversation) and conv.sr == SR
    assert conv.agent.shape == conv.partner.shape == (24000,)
    assert dominant_freq(conv.agent, SR) == pytest.approx(1000, abs=3)  # channel 0 = A_self
    assert dominant_freq(conv.partner, SR) == pytest.approx(440, abs=3)  # channel 1 = A_other
    assert conv.duration == pytest.approx(1.5)
    assert conv.num_frames() == frame_count(24000) == 38
    assert conv.stereo().shape == (2, 24000)


def test_conversation_from_two_files_pads_shorter(tmp_path: Path) -> None:
    agent = encode(tmp_path / "agent.wav", sine(300, 1.0, SR)[None], SR, "pcm_s16le")
    partner = encode(tmp_path / "partner.flac", np.stack([sine(500, 2.5, 44100)] * 2), 44100, "flac")
    conv = load_conversation(agent=agent, partner=partner)
    assert conv.agent.shape == conv.partner.shape == (40000,)
    assert np.all(conv.agent[SR + 100 :] == 0)  # padded with silence at the end
    assert rms(conv.partner[SR + 100 :]) > 0.3


def test_mono_file_is_not_a_conversation(tmp_path: Path) -> None:
    path = encode(tmp_path / "mono.wav", sine(300, 0.5, SR)[None], SR, "pcm_s16le")
    with pytest.raises(InfpError, match="two channels") as info:
        load_conversation(audio=path)
    assert "mono.wav" in str(info.value) and "--agent" in str(info.value)


def test_conversation_needs_inputs(tmp_path: Path) -> None:
    with pytest.raises(InfpError):
        load_conversation()
    with pytest.raises(InfpError):
        load_conversation(agent=tmp_path / "a.wav")
    with pytest.raises(InfpError):
        load_conversation(audio=tmp_path / "s.wav", agent=tmp_path / "a.wav", partner=tmp_path / "b.wav")


def test_extra_channels_and_silent_partner(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    four = np.stack([sine(300, 0.5, SR), np.zeros(SR // 2, np.float32), sine(700, 0.5, SR), sine(900, 0.5, SR)])
    path = tmp_path / "quad.wav"
    save_wav(path, four)
    with caplog.at_level(logging.INFO, logger="infp.audio.io"):
        conv = load_conversation(audio=path)
    assert dominant_freq(conv.agent, SR) == pytest.approx(300, abs=3)
    assert np.all(conv.partner == 0)
    assert "4 channels" in caplog.text
    assert "partner track is silent" in caplog.text


def test_stereo_of_one_voice_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    voice = sine(300, 0.5, SR)
    noise = 0.01 * np.random.default_rng(0).standard_normal(voice.shape).astype(np.float32)
    path = tmp_path / "dual_mono.wav"
    save_wav(path, np.stack([voice, voice + noise]))
    with caplog.at_level(logging.WARNING, logger="infp.audio.io"):
        load_conversation(audio=path)
    assert "dual_mono.wav" in caplog.text and "same signal" in caplog.text


# --- the same conversations read in chunks (ConversationFile): equal to load_conversation -------


def _joined(conv: ConversationFile, n: int) -> tuple[np.ndarray, np.ndarray]:
    pieces = list(conv.chunks(n))
    assert all(len(a) == len(p) == n for a, p in pieces[:-1]) and 0 < len(pieces[-1][0]) <= n
    return np.concatenate([a for a, _ in pieces]), np.concatenate([p for _, p in pieces])


@pytest.mark.parametrize("n", [1000, 7777, 100_000])
def test_conversation_file_equals_the_loaded_conversation(tmp_path: Path, n: int) -> None:
    stereo = encode(tmp_path / "talk.flac", STEREO_44K, 44100, "flac")  # resampled on the way
    agent = encode(tmp_path / "agent.wav", sine(300, 1.0, SR)[None], SR, "pcm_s16le")
    partner = encode(tmp_path / "partner.flac", np.stack([sine(500, 2.5, 44100)] * 2), 44100, "flac")
    for kwargs in ({"audio": stereo}, {"agent": agent, "partner": partner}):
        whole, chunked = load_conversation(**kwargs), ConversationFile.open(**kwargs)
        assert chunked.num_samples == whole.num_samples and chunked.num_frames() == whole.num_frames()
        assert chunked.mix_peak == pytest.approx(whole.mix_peak, abs=1e-6)
        a, p = _joined(chunked, n)
        np.testing.assert_allclose(a, whole.agent, atol=1e-6)
        np.testing.assert_allclose(p, whole.partner, atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([a for a, _ in whole.chunks(n)]), whole.agent)


def test_conversation_file_checks_as_load_conversation_does(tmp_path: Path, caplog) -> None:
    mono = encode(tmp_path / "mono.wav", sine(300, 0.5, SR)[None], SR, "pcm_s16le")
    with pytest.raises(InfpError, match="two channels"):
        ConversationFile.open(audio=mono)
    with pytest.raises(InfpError):
        ConversationFile.open(agent=mono)
    with pytest.raises(InfpError, match="not found|does not exist|no such"):
        ConversationFile.open(audio=tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(InfpError):
        ConversationFile.open(audio=tmp_path / "empty.wav")
    voice = sine(300, 0.5, SR)
    save_wav(tmp_path / "dual.wav", np.stack([voice, voice]))
    save_wav(tmp_path / "mono_talk.wav", np.stack([voice, np.zeros_like(voice)]))
    with caplog.at_level(logging.INFO, logger="infp.audio.io"):
        ConversationFile.open(audio=tmp_path / "dual.wav")
        ConversationFile.open(audio=tmp_path / "mono_talk.wav")
    assert "same signal" in caplog.text and "treating as a monologue" in caplog.text


def test_save_wav_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = rng.uniform(-0.9, 0.9, size=(2, 1000)).astype(np.float32)
    save_wav(tmp_path / "s.wav", stereo, sr=SR)
    back = load_audio(tmp_path / "s.wav", sr=SR)
    assert back.shape == (2, 1000)
    np.testing.assert_allclose(back, stereo, atol=1 / 32768)
    save_wav(tmp_path / "m.wav", np.array([0.0, 2.0, -2.0, 0.5], np.float32), sr=8000)  # clipped
    np.testing.assert_allclose(load_audio(tmp_path / "m.wav", sr=8000)[0], [0, 32767 / 32768, -1, 0.5])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.wav", "s.wav"]  # no temp files left
    conv = Conversation(agent=stereo[0], partner=stereo[1], sr=SR)
    save_wav(tmp_path / "c.wav", conv.stereo(), conv.sr)
    np.testing.assert_allclose(load_conversation(audio=tmp_path / "c.wav").partner, stereo[1], atol=1 / 32768)


# ---------------------------------------------------------------------------------------- features


def test_frame_count_and_rms() -> None:
    assert [frame_count(n) for n in (0, 1, 640, 641, 16000, 16001)] == [0, 1, 1, 2, 25, 26]
    assert frame_count(44100, sr=44100, fps=30) == 30
    for n in (0, 1, 639, 640, 641, 12345, 48000):
        assert frame_rms(np.ones(n, np.float32)).shape == (frame_count(n),)
    x = np.concatenate([np.zeros(1280, np.float32), sine(1000, 1.0, SR, 0.5), 0.2 * np.ones(100, np.float32)])
    energy = frame_rms(x)
    assert energy.dtype == np.float32 and energy.shape == (frame_count(len(x)),)
    assert np.all(energy[:2] == 0)
    np.testing.assert_allclose(energy[2:-1], 0.5 / np.sqrt(2), rtol=1e-3)
    assert energy[-1] == pytest.approx(0.2)  # partial last frame: mean over its own samples


# ---------------------------------------------------------------------------------------- VAD


def test_activity_cleanup_and_segments() -> None:
    p = np.zeros(50, np.float32)
    p[5:20] = 0.9
    p[10:12] = 0.4  # dip above the hysteresis floor (0.35): stays speech
    p[22:24] = 0.9  # 0.08 s pause before it: filled
    p[30:32] = 0.9  # 2-frame burst (0.08 s), isolated: dropped
    p[40:47] = 0.9
    active = activity_from_probability(p, fps=25)
    assert segments(active, 25) == [(0.2, 0.96), (1.6, 1.88)]
    assert segments(np.zeros(0, bool)) == [] and segments(np.ones(3, bool)) == [(0.0, 0.12)]


def test_vad_silence_and_edge_lengths() -> None:
    threads = torch.get_num_threads()
    assert not voice_activity(np.zeros(3 * SR, np.float32)).any()
    assert torch.get_num_threads() == threads  # loading Silero must not change the caller's threads
    noise = (np.random.default_rng(0).standard_normal(2 * SR) * 0.01).astype(np.float32)
    assert not voice_activity(noise).any()
    for n in (0, 1, 100, 511, 512, 641):
        assert speech_probability(np.zeros(n, np.float32)).shape == (frame_count(n),)
        assert voice_activity(np.zeros(n, np.float32)).shape == (frame_count(n),)


def test_vad_real_speech(speech: np.ndarray) -> None:
    prob = speech_probability(speech)
    assert prob.shape == (frame_count(len(speech)),) == (1500,)
    assert np.array_equal(prob, speech_probability(speech))  # deterministic
    assert 0.5 < voice_activity(speech).mean() < 1.0
    np.testing.assert_allclose(speech_probability(np.stack([speech, speech]))[1], prob, atol=1e-5)  # batch = per track


def test_vad_gap_in_the_right_place(speech: np.ndarray) -> None:
    # 5 s from inside one spoken passage, 2 s of silence, 5 s from inside another.
    track = np.concatenate([speech[12 * SR : 17 * SR], np.zeros(2 * SR, np.float32), speech[33 * SR : 38 * SR]])
    spans = segments(voice_activity(track))
    gaps = [(end, start) for (_, end), (start, _) in zip(spans[:-1], spans[1:]) if start - end > 1.0]
    assert len(gaps) == 1
    assert gaps[0][0] == pytest.approx(5.0, abs=0.3) and gaps[0][1] == pytest.approx(7.0, abs=0.3)
    assert spans[0][0] < 0.5 and spans[-1][1] > 11.5


def test_log_mel_gain_equals_the_features_of_the_louder_track():
    """Stage 2's gain augmentation shifts cached features: it must match recomputing them."""
    from infp.audio.mel import FLOOR, LogMel, log_mel_gain

    rng = np.random.default_rng(0)
    x = (0.05 * rng.normal(size=16000)).astype(np.float32)
    x[:4000] = 0  # a silent stretch stays at the floor
    mel = LogMel()
    for db in (-6.0, 4.5):
        np.testing.assert_allclose(log_mel_gain(mel(x), db), mel(x * 10 ** (db / 20)), atol=1e-5)
    assert (log_mel_gain(mel(x), 6.0)[:20] == FLOOR).all()  # 0.25 s of silence: 25 rows of 10 ms
