"""`infp preprocess`: real videos -> clips in the project's format, cut at face gaps, cached, with
unusable sources skipped and counted. Uses short real videos from ../shared/data (skips without it)."""

from __future__ import annotations

import json
import logging
import shutil
import time
import wave
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from infp import FPS, SAMPLE_RATE
from infp.audio import frame_rms, load_audio, load_mono
from infp.cli import main
from infp.data import preprocess as pp
from infp.data.clip import Clip, list_clips
from infp.data.preprocess import STATS, PreprocessConfig, preprocess
from infp.errors import InfpError
from infp.video import probe, read_frames, write_video

REAL_FILES = {"meta.json", "video.mp4", "hybrid.mp4", "agent.wav", "partner.wav", "landmarks.npy", "contact.png"}
SIZE = 128
CFG = PreprocessConfig(size=SIZE)


class _Records(logging.Handler):
    """Collects log records across a module-scoped fixture (caplog is per test)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _noise_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def media(shared_data: Path, tmp_path_factory) -> Path:
    """videos/: talk.mp4 (2 s, own speech), quiet.mp4 (2 s, no audio stream), noise.mp4 (no face),
    readme.txt (ignored in a folder); and notes.txt beside it (a non-video named explicitly)."""
    root = tmp_path_factory.mktemp("media")
    folder = root / "videos"
    folder.mkdir()
    shutil.copy(shared_data / "videos" / "hdtf_RD_Radio10_0_clip_0.mp4", folder / "talk.mp4")
    write_video(folder / "quiet.mp4", read_frames(shared_data / "videos" / "lp_d0.mp4", max_frames=2 * FPS))
    write_video(folder / "noise.mp4", _noise_frames(FPS, 96))
    (folder / "readme.txt").write_text("not a video, and not looked at")
    (root / "notes.txt").write_text("not a video, but named on the command line")
    return root


@pytest.fixture(scope="module")
def first_run(media: Path, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "clips"
    records = _Records()
    logging.getLogger("infp").addHandler(records)
    try:
        stats = preprocess([media / "videos", media / "notes.txt"], out, CFG, progress=False)
    finally:
        logging.getLogger("infp").removeHandler(records)
    return out, stats, records.messages


def test_clips_are_complete_and_consistent(first_run, media: Path) -> None:
    out = first_run[0]
    clips = {c.meta.id: c for c in list_clips(out)}
    assert sorted(clips) == ["quiet", "talk"]
    for clip_id, clip in clips.items():
        d, meta = clip.path, clip.meta
        assert {p.name for p in d.iterdir()} == REAL_FILES
        assert meta == Clip.open(d).meta and meta.kind == "real" and meta.size == SIZE and meta.fps == FPS
        assert meta.source == str((media / "videos" / f"{clip_id}.mp4").resolve())
        n = meta.n_frames
        assert n == (52 if clip_id == "talk" else 50)  # 2.07 s at 29.97 fps -> 52 frames at 25 fps
        assert meta.face_found > 0.95 and meta.extra["layout"] == "single"
        lms = clip.landmarks()
        assert lms.shape == (n, 478, 3) and lms.dtype == np.float32 and np.isfinite(lms).all()
        assert (lms[..., :2] >= 0).all() and (lms[..., :2] <= SIZE).all()  # the whole face is in the crop
        for name in ("video.mp4", "hybrid.mp4"):
            info = probe(d / name)
            assert (info.width, info.height, info.fps) == (SIZE, SIZE, FPS)
            assert read_frames(d / name).shape == (n, SIZE, SIZE, 3)
        for name in ("agent.wav", "partner.wav"):
            with wave.open(str(d / name)) as w:
                assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (1, SAMPLE_RATE, n * 640)
        agent, partner = clip.tracks()
        assert not partner.any()  # single layout: nobody else speaks
        stereo = load_audio(clip.video)
        assert stereo.shape[0] == 2 and not np.abs(stereo[1]).max() > 1e-3
        sheet = cv2.imread(str(d / "contact.png"))
        assert sheet.shape == (2 * SIZE, 6 * SIZE, 3)
    talk, quiet = clips["talk"], clips["quiet"]
    assert talk.meta.extra["has_audio"] and not quiet.meta.extra["has_audio"]
    agent = talk.tracks()[0]
    source = load_mono(talk.meta.source)[: len(agent)]  # 2.048 s of audio under 2.08 s of video
    assert np.abs(agent[: len(source)] - source).max() < 1e-3  # the subject's own voice, sample-aligned
    assert np.abs(source).max() > 0.1 and not agent[len(source):].any()  # padded with silence
    assert not quiet.tracks()[0].any()
    assert talk.meta.extra["agent_rms_dbfs"] > -40 and quiet.meta.extra["agent_rms_dbfs"] == -100
    # The hybrid frames keep eyes and lips only: mostly black.
    assert (read_frames(talk.path / "hybrid.mp4")[0] < 30).mean() > 0.6


def test_unusable_sources_are_skipped_counted_and_named(first_run, media: Path) -> None:
    out, stats, messages = first_run
    by_name = {Path(s.source).name: s for s in stats.sources}
    assert sorted(by_name) == ["noise.mp4", "notes.txt", "quiet.mp4", "talk.mp4"]  # readme.txt not looked at
    assert by_name["noise.mp4"].status == "skipped" and by_name["noise.mp4"].reason == "no face found"
    assert by_name["notes.txt"].status == "skipped" and "not a readable media file" in by_name["notes.txt"].reason
    assert any("noise.mp4" in m and "skipped" in m for m in messages)
    assert any("notes.txt" in m and "skipped" in m for m in messages)
    saved = json.loads((out / STATS).read_text())
    assert saved["totals"] == {"videos": 4, "written": 2, "cached": 0, "skipped": 2, "clips": 2,
                               "frames": 102, "seconds": 4.08}
    written = {s["id"]: s for s in saved["sources"] if s["status"] == "written"}
    assert written["talk"]["clips"][0]["frames"] == 52 and written["talk"]["clips"][0]["face_found"] > 0.95
    assert written["talk"]["clips"][0]["jitter"]["centre"] < written["talk"]["clips"][0]["jitter"]["raw_centre"]


def test_second_run_is_cached(first_run, media: Path) -> None:
    out, _, _ = first_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != STATS}
    t0 = time.perf_counter()
    stats = preprocess([media / "videos", media / "notes.txt"], out, CFG, progress=False)
    assert time.perf_counter() - t0 < 2.0  # no tracking, no encoding
    assert stats.totals()["cached"] == 2 and stats.totals()["clips"] == 2 and stats.totals()["skipped"] == 2
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_changed_settings_redo_the_clips(first_run, media: Path, tmp_path: Path) -> None:
    out = tmp_path / "clips"
    shutil.copytree(first_run[0], out)
    stats = preprocess([media / "videos" / "talk.mp4"], out, PreprocessConfig(size=64), progress=False)
    assert stats.totals()["written"] == 1 and Clip.open(out / "talk").meta.size == 64


def test_only_a_faceless_video_is_an_error(media: Path, tmp_path: Path) -> None:
    with pytest.raises(InfpError, match="no usable source.*no face found"):
        preprocess([media / "videos" / "noise.mp4"], tmp_path / "out", CFG, progress=False)
    assert json.loads((tmp_path / "out" / STATS).read_text())["totals"]["skipped"] == 1
    with pytest.raises(InfpError, match="no video files"):
        preprocess([tmp_path / "out"], tmp_path / "out2", CFG, progress=False)


@pytest.fixture(scope="module")
def two_speakers(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """6 s of two real talking videos (256 px frames) and each one's own speech on the frame grid."""
    out = []
    for name in ("SadTalker_RD_Radio2_000.mp4", "SadTalker_WDA_BobMenendez_000.mp4"):
        path = shared_data / "talking" / name
        frames = read_frames(path, max_frames=6 * FPS)
        frames = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in frames])
        speech = load_mono(path)
        out += [frames, np.pad(speech, (0, max(0, len(frames) * 640 - len(speech))))[: len(frames) * 640]]
    return tuple(out)


def _turns(frames: np.ndarray, own: np.ndarray, other: np.ndarray,
           first: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A conversation seen from one side: 1.5-s turns, this person first (or second); while the other
    speaks, this person's face holds still (the frame their turn ended on) and their channel is silent."""
    n, turn = len(frames), int(1.5 * FPS)
    mine = (np.arange(n) // turn) % 2 == (0 if first else 1)
    held = np.maximum.accumulate(np.where(mine, np.arange(n), 0))
    voice_own = own * np.repeat(mine, 640)[: len(own)]
    voice_other = other[: len(own)] * np.repeat(~mine, 640)[: len(own)]
    return frames[held], voice_own, voice_other


@pytest.mark.parametrize("agent_channel", [0, 1])
def test_stereo_finds_the_on_screen_persons_channel(two_speakers, tmp_path: Path, agent_channel: int) -> None:
    """A video of one person in a conversation with a two-channel recording, one voice per channel: the
    agent track is the channel whose turns the lips move in, whichever channel it is."""
    frames, own, other = _turns(two_speakers[0], two_speakers[1], two_speakers[3])
    channels = [other, own] if agent_channel == 1 else [own, other]
    src = write_video(tmp_path / "call.mp4", frames, audio=np.stack(channels))
    stats = preprocess([src], tmp_path / "clips", replace(CFG, layout="stereo"), progress=False)
    clip = Clip.open(tmp_path / "clips" / stats.sources[0].clips[0].id)
    assert clip.meta.extra["agent_channel"] == agent_channel and clip.meta.extra["layout"] == "stereo"
    r = clip.meta.extra["channel_mouth_r"]
    assert r[agent_channel] > 0.3 > r[1 - agent_channel]
    agent, partner = clip.tracks()
    s = round(clip.meta.extra["start"] * FPS) * 640
    n = len(agent)
    # AAC is lossy: compare by correlation with what went in
    assert np.corrcoef(agent, own[s: s + n])[0, 1] > 0.9 and np.corrcoef(partner, other[s: s + n])[0, 1] > 0.9


def test_stereo_needs_two_channels(two_speakers, tmp_path: Path) -> None:
    frames, own, _, _ = two_speakers
    src = write_video(tmp_path / "mono.mp4", frames, audio=own)
    with pytest.raises(InfpError, match="no usable source"):
        preprocess([src], tmp_path / "clips", replace(CFG, layout="stereo"), progress=False)
    record = json.loads((tmp_path / "clips" / "preprocess_stats.json").read_text())["sources"][0]
    assert record["status"] == "skipped" and "not a two-channel recording (1 channel(s))" in record["reason"]


def _side_by_side(two_speakers) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two real talking people side by side taking 1.5-s turns, one mixed track: (frames (T, 256, 512, 3),
    mixed audio, left's voice, right's voice)."""
    frames_a, voice_a, frames_b, voice_b = two_speakers
    n = min(len(frames_a), len(frames_b))
    left, own_a, _ = _turns(frames_a[:n], voice_a[: n * 640], voice_b[: n * 640])
    right, own_b, _ = _turns(frames_b[:n], voice_b[: n * 640], voice_a[: n * 640], first=False)
    return np.concatenate([left, right], axis=2), own_a + own_b, own_a, own_b


def test_side_by_side_gives_each_person_their_own_turns(two_speakers, tmp_path: Path) -> None:
    frames, mixed, own_a, own_b = _side_by_side(two_speakers)
    src = write_video(tmp_path / "call.mp4", frames, audio=mixed)
    assert main(["-q", "preprocess", str(src), "--out", str(tmp_path / "clips"), "--layout", "side-by-side",
                 "--size", "128"]) == 0
    clips = {c.meta.id: c for c in list_clips(tmp_path / "clips")}
    assert set(clips) == {"call_left", "call_right"}
    for me, mine, theirs in (("call_left", own_a, own_b), ("call_right", own_b, own_a)):
        clip = clips[me]
        assert clip.meta.extra["person"] == me.split("_")[1] and clip.meta.extra["layout"] == "side-by-side"
        assert 0.35 < clip.meta.extra["speaking_fraction"] < 0.65  # half the turns each
        agent, partner = clip.tracks()
        s = round(clip.meta.extra["start"] * FPS) * 640
        # the mixed track cut by who speaks: each side's own voice, not the other's
        assert np.corrcoef(agent, mine[s: s + len(agent)])[0, 1] > 0.9
        assert np.corrcoef(partner, theirs[s: s + len(partner)])[0, 1] > 0.9
        assert abs(np.corrcoef(agent, theirs[s: s + len(agent)])[0, 1]) < 0.2
        lms = clip.landmarks()
        assert np.isfinite(lms[:, 0, 0]).mean() > 0.95 and np.nanmax(lms[..., 0]) < 128  # crops of its own half


def test_side_by_side_skips_a_person_without_a_face(two_speakers, tmp_path: Path) -> None:
    frames, mixed, own_a, _ = _side_by_side(two_speakers)
    frames[:, :, 256:] = np.random.default_rng(0).integers(0, 255, frames[:, :, 256:].shape, dtype=np.uint8)
    src = write_video(tmp_path / "alone.mp4", frames, audio=mixed)
    stats = preprocess([src], tmp_path / "clips", replace(CFG, layout="side-by-side", size=128), progress=False)
    r = stats.sources[0]
    assert r.status == "written" and [c.id for c in r.clips] == ["alone_left"] and r.reason == "right person: no face found"


def test_side_by_side_needs_sound(two_speakers, tmp_path: Path) -> None:
    frames, _, _, _ = _side_by_side(two_speakers)
    src = write_video(tmp_path / "mute.mp4", frames[:50])
    with pytest.raises(InfpError, match="no audio stream: --layout side-by-side needs the conversation's sound"):
        preprocess([src], tmp_path / "clips", replace(CFG, layout="side-by-side", size=128), progress=False)


def test_pair_gives_each_person_the_others_voice(two_speakers, tmp_path: Path) -> None:
    frames_a, voice_a, frames_b, voice_b = two_speakers
    n = min(len(frames_a), len(frames_b))
    a = write_video(tmp_path / "talk_a.mp4", frames_a[:n], audio=voice_a[: n * 640])
    b = write_video(tmp_path / "talk_b.mp4", frames_b[:n], audio=voice_b[: n * 640])
    assert main(["-q", "preprocess", str(tmp_path / "talk_b.mp4"), str(a), "--out", str(tmp_path / "clips"),
                 "--layout", "pair", "--size", "128"]) == 0
    clips = {c.meta.id: c for c in list_clips(tmp_path / "clips")}
    assert set(clips) == {"talk_a", "talk_b"}
    for me, other, mine, theirs in (("talk_a", b, voice_a, voice_b), ("talk_b", a, voice_b, voice_a)):
        clip = clips[me]
        assert clip.meta.extra["partner_source"] == str(other.resolve())
        agent, partner = clip.tracks()
        s = round(clip.meta.extra["start"] * FPS) * 640
        assert np.corrcoef(agent, mine[s: s + len(agent)])[0, 1] > 0.9
        assert np.corrcoef(partner, theirs[s: s + len(partner)])[0, 1] > 0.9
    # the partner's video changed: both clips of the pair are made again, nothing else
    stats = preprocess([a, b], tmp_path / "clips", replace(CFG, layout="pair", size=128), progress=False)
    assert [r.status for r in stats.sources] == ["cached", "cached"]
    write_video(b, frames_b[:n], audio=0.5 * voice_b[: n * 640])
    stats = preprocess([a, b], tmp_path / "clips", replace(CFG, layout="pair", size=128), progress=False)
    assert [r.status for r in stats.sources] == ["written", "written"]


def test_pair_refuses_an_odd_count_and_videos_of_different_length(two_speakers, tmp_path: Path, capsys) -> None:
    frames_a, voice_a, frames_b, voice_b = two_speakers
    a = write_video(tmp_path / "x_a.mp4", frames_a, audio=voice_a)
    assert main(["preprocess", str(a), "--out", str(tmp_path / "o"), "--layout", "pair"]) == 2
    assert "--layout pair takes the videos two at a time (one per person), got 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    b = write_video(tmp_path / "x_b.mp4", frames_b[: FPS], audio=voice_b[: FPS * 640])  # 1 s against 6 s
    with pytest.raises(InfpError, match="no usable source"):
        preprocess([a, b], tmp_path / "clips", replace(CFG, layout="pair"), progress=False)
    reasons = [r["reason"] for r in json.loads((tmp_path / "clips" / "preprocess_stats.json").read_text())["sources"]]
    assert all("the pair's videos differ in length by 5.00 s" in r for r in reasons), reasons


def test_cli_end_to_end_with_workers(media: Path, tmp_path: Path) -> None:
    out = tmp_path / "clips"
    videos = [str(media / "videos" / n) for n in ("talk.mp4", "quiet.mp4")]
    assert main(["-q", "preprocess", *videos, "--out", str(out), "--workers", "2", "--size", "64"]) == 0
    assert [c.meta.id for c in list_clips(out)] == ["quiet", "talk"]
    assert all(c.meta.size == 64 and c.meta.n_frames >= 50 for c in list_clips(out))


def test_a_long_face_gap_splits_the_video(shared_data: Path, tmp_path: Path) -> None:
    """30 face frames, 20 noise frames (0.8 s > 0.5 s), 30 face frames -> two clips, audio aligned."""
    face = read_frames(shared_data / "videos" / "hdtf_RD_Radio10_0_clip_0.mp4")
    face = np.stack([cv2.resize(f, (256, 256), interpolation=cv2.INTER_AREA) for f in face])
    frames = np.concatenate([face[:30], _noise_frames(20, 256), face[-30:]])
    audio = np.zeros(len(frames) * 640, np.float32)
    for beep in (5, 60):  # a beep in each face segment, at frames 5..9 and 60..64 of the source
        t = np.arange(5 * 640) / SAMPLE_RATE
        audio[beep * 640: (beep + 5) * 640] = 0.5 * np.sin(2 * np.pi * 440 * t)
    src = write_video(tmp_path / "gap video.mp4", frames, audio=audio)
    stats = preprocess([src], tmp_path / "clips", CFG, progress=False)
    clips = stats.sources[0].clips
    assert [c.id for c in clips] == ["gap_video_s0", "gap_video_s1"]
    assert clips[0].start == 0 and abs(clips[0].end - 30 / FPS) <= 0.04
    assert abs(clips[1].start - 50 / FPS) <= 0.04 and clips[1].end == 80 / FPS
    for c, beep in zip(clips, (5, 60)):
        clip = Clip.open(tmp_path / "clips" / c.id)
        loud = np.flatnonzero(frame_rms(clip.tracks()[0]) > 0.1)
        start = round(c.start * FPS)
        assert abs(loud[0] - (beep - start)) <= 1 and abs(loud[-1] - (beep + 4 - start)) <= 1
        assert clip.landmarks().shape[0] == clip.meta.n_frames == c.frames


def test_segments_and_ids() -> None:
    found = np.array([1] * 30 + [0] * 20 + [1] * 10 + [0] * 2 + [1] * 26, bool)
    assert pp.face_segments(found, 25) == [(0, 30), (62, 88)]
    assert pp.face_segments(np.zeros(10, bool), 1) == []
    ids = pp.assign_ids([Path("/a/my talk.mp4"), Path("/b/my talk.mp4"), Path("/c/x.mov")], Path("/nonexistent"))
    assert ids[0] == "my_talk" and ids[1].startswith("my_talk_") and ids[1] != ids[0] and ids[2] == "x"
