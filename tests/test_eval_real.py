"""`infp eval real`: the measures on hand-made series with known answers, and the command end to end on
tiny models and a tiny real-format clip."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from infp.cli import main
from infp.eval.real import (
    MIN_FRAMES,
    Measures,
    Series,
    amplitude,
    blink_count,
    contrast,
    measure,
    mouth_activity,
    pool,
    pool_contrast,
    ratios,
    speed,
)
from infp.eval.turns import EDGE_S, GAP_S, LEVEL_DBFS, OVERLAP_S, TURN_S, Speech, build_conversation, role_masks

FPS = 25


def test_amplitude_and_speed_of_a_sinusoid():
    t = np.arange(10 * FPS) / FPS  # 10 s: five whole periods of 0.5 Hz
    pitch = 5.0 * np.sin(2 * np.pi * 0.5 * t)
    assert amplitude(pitch) == pytest.approx(5 / math.sqrt(2), rel=1e-3)
    # mean |d/dt| of A sin(2 pi f t) is 4 A f per second: 0.4 degrees per 40-ms frame
    assert speed(pitch) == pytest.approx(4 * 5.0 * 0.5 / FPS, rel=0.01)
    assert speed(pitch[::2], every=2) == pytest.approx(0.4, rel=0.02)  # a smooth signal sampled sparser: the same
    jitter = pitch + 0.5 * (-1.0) ** np.arange(len(t))  # +-0.5 degrees alternating: a step of 1 every frame
    assert speed(jitter) == pytest.approx(1.0, rel=0.01)  # small jittery motion: fast ...
    assert amplitude(jitter) == pytest.approx(math.sqrt(12.5 + 0.25), rel=1e-3)  # ... for hardly more amplitude
    holed = pitch.copy()
    holed[[10, 11, 100]] = np.nan  # frames without a face: their steps are left out, nothing else
    assert amplitude(holed) == pytest.approx(amplitude(pitch), rel=0.02)
    assert speed(holed) == pytest.approx(speed(pitch), rel=0.02)
    assert math.isnan(amplitude(np.array([1.0, np.nan]))) and math.isnan(speed(np.array([np.nan, 1.0])))


def test_blinks_are_dips_below_half_the_median_counted_once():
    rng = np.random.default_rng(0)
    eye = 0.3 + 0.01 * rng.normal(size=10 * FPS)
    for start in (30, 110, 200):  # three blinks of 4 frames
        eye[start: start + 4] = [0.15, 0.05, 0.04, 0.12]
    assert blink_count(eye) == 3
    wobbly = eye.copy()
    wobbly[60:67] = [0.12, 0.16, 0.2, 0.14, 0.1, 0.2, 0.13]  # dips, comes back to 0.67x only, dips again: one blink
    assert blink_count(wobbly) == 4
    squint = eye.copy()
    squint[150:160] = 0.2  # 0.67x the median: not a blink
    assert blink_count(squint) == 3
    eye[40:45] = np.nan  # no face: skipped
    assert blink_count(eye) == 3 and blink_count(np.full(5, np.nan)) == 0
    s = Series(np.zeros(len(eye)), np.zeros(len(eye)), np.zeros(len(eye)), eye)
    assert measure(s, np.zeros(len(eye))).blink_rate == pytest.approx(3 / (245 / FPS) * 60)  # over the 245 face frames


def test_eye_opening_closes_when_the_lids_meet(face_crop):
    from infp.face import topology as tp
    from infp.face.expression import eye_opening

    open_ = eye_opening(face_crop.points[None].astype(np.float64))[0]
    assert 0.15 < open_ < 0.5
    shut = face_crop.points.astype(np.float64).copy()
    for top, bottom in ((tp.RIGHT_EYE_TOP, tp.RIGHT_EYE_BOTTOM), (tp.LEFT_EYE_TOP, tp.LEFT_EYE_BOTTOM)):
        shut[top] = shut[bottom]
    assert eye_opening(shut[None])[0] == pytest.approx(0, abs=1e-9)
    assert np.isnan(eye_opening(np.full((1, 478, 3), np.nan))).all()


def _series(n: int, pitch_amp: float, mouth_amp: float, seed: int) -> tuple[Series, np.ndarray]:
    t = np.arange(n) / FPS
    level = np.clip(np.sin(2 * np.pi * 1.5 * t), 0, None)  # the voice's loudness
    noise = np.random.default_rng(seed).normal(size=n)
    return Series(pitch_amp * np.sin(2 * np.pi * 0.7 * t), 2 * pitch_amp * np.cos(2 * np.pi * 0.3 * t),
                  mouth_amp * level + 0.01 * mouth_amp * noise, np.full(n, 0.3)), level


def test_ratios_and_pooling():
    real_s, level = _series(200, 4.0, 0.1, 1)
    gen_s, _ = _series(200, 2.0, 0.05, 2)
    real, gen = measure(real_s, level), measure(gen_s, level)
    r = ratios(gen, real)
    assert r.pitch_std == pytest.approx(0.5, rel=1e-6) and r.yaw_std == pytest.approx(0.5, rel=1e-6)
    assert r.pitch_speed == pytest.approx(0.5, rel=1e-6) and r.mouth_std == pytest.approx(0.5, rel=0.01)
    assert math.isnan(r.blink_rate)  # no blinks in the real video: no ratio
    assert real.mouth_speech_r > 0.99 and real.face_found == 1.0 and real.seconds == 8.0
    short = measure(_series(100, 8.0, 0.1, 3)[0], level[:100])
    both = pool([real, short])
    assert both.frames == 300 and both.seconds == 12.0
    assert both.pitch_std == pytest.approx((200 * real.pitch_std + 100 * short.pitch_std) / 300)
    with_blinks = Measures(**{**vars(real), "blinks": 3, "blink_rate": 22.5})
    assert pool([with_blinks, short]).blink_rate == pytest.approx(3 / 12 * 60)


# -- roles ------------------------------------------------------------------------------------------

def test_mouth_activity_and_the_role_contrast_on_known_series():
    t = np.arange(400)
    speaking = (t // 100) % 2 == 0  # 100 frames speaking, 100 listening, ...
    # speaking: the opening alternates 0.02 / 0.06 (a step of 0.04 every frame); listening: 0.01 / 0.02
    mouth = np.where(speaking, np.where(t % 2, 0.06, 0.02), np.where(t % 2, 0.02, 0.01))
    talk, listen = mouth_activity(mouth, speaking), mouth_activity(mouth, ~speaking)
    assert talk.frames == 200 and listen.frames == 200
    # the steps into and out of a set are not the set's: a jump at each role change is left out
    assert talk.speed == pytest.approx(0.04) and listen.speed == pytest.approx(0.01)
    assert talk.std == pytest.approx(0.02) and listen.std == pytest.approx(0.005)
    assert talk.mean == pytest.approx(0.04) and listen.mean == pytest.approx(0.015)
    c = contrast(talk, listen)
    assert c.speed == pytest.approx(4.0) and c.std == pytest.approx(4.0)
    # sampled every 2nd frame: the alternation is not seen (it is jitter between the samples)
    assert mouth_activity(mouth[::2], speaking[::2], every=2).speed == pytest.approx(0.0)
    holed = mouth.copy()
    holed[:10] = np.nan  # frames without a face are not in any set
    assert mouth_activity(holed, speaking).frames == 190
    few = mouth_activity(mouth, t < MIN_FRAMES - 1)  # too few frames: no numbers
    assert few.frames == MIN_FRAMES - 1 and math.isnan(few.speed) and math.isnan(contrast(few, listen).speed)
    still = mouth_activity(np.full(400, 0.02), ~speaking)  # a mouth that never moves while listening: no ratio
    assert still.speed == 0 and math.isnan(contrast(talk, still).speed)
    pooled = pool_contrast([c, contrast(mouth_activity(mouth / 2, speaking), mouth_activity(mouth, ~speaking))])
    assert pooled.speaking.frames == 400 and pooled.speaking.speed == pytest.approx(0.03)
    assert pooled.speed == pytest.approx(3.0)


def test_role_masks_split_frames_by_who_speaks():
    a = np.array([1, 1, 0, 0, 1], bool)
    p = np.array([0, 1, 1, 0, 0], bool)
    m = role_masks(a, p)
    assert m["speaking"].tolist() == [1, 0, 0, 0, 1] and m["listening"].tolist() == [0, 0, 1, 0, 0]
    assert m["both"].tolist() == [0, 1, 0, 0, 0] and m["silent"].tolist() == [0, 0, 0, 1, 0]


def _speech(name: str, seconds: float, silent_head: float, seed: int) -> Speech:
    """Noise 'speech' of a known level after `silent_head` seconds of silence."""
    n = int(seconds * 16000)
    audio = (0.05 * np.random.default_rng(seed).normal(size=n)).astype(np.float32)
    audio[: int(silent_head * 16000)] = 0
    voiced = np.arange(int(seconds * FPS)) >= int(silent_head * FPS)
    return Speech(name, audio, voiced)


def test_the_built_conversation_alternates_turns_of_real_speech():
    agent = [_speech("a1", 12, 1.0, 1), _speech("a2", 9, 0, 2)]
    partner = [_speech("p1", 10, 0.5, 3), _speech("p2", 11, 0, 4)]
    tracks, turns = build_conversation(agent, partner, 7, seed=3)
    assert tracks.shape[0] == 2 and tracks.dtype == np.float32
    assert [t.who for t in turns] == ["agent", "partner"] * 3 + ["agent"]
    assert {t.source for t in turns if t.who == "agent"} == {"a1", "a2"}  # each side goes through its speakers
    assert {t.source for t in turns if t.who == "partner"} == {"p1", "p2"}
    assert turns[0].start == EDGE_S and tracks.shape[1] == round((turns[-1].end + EDGE_S) * 16000)
    for t in turns:
        assert TURN_S[0] - 1e-3 <= t.end - t.start <= TURN_S[1] + 1e-3
        src = {s.id: s for s in agent + partner}[t.source]
        assert src.voiced[int(round(t.source_start * FPS))]  # a turn starts where its source has voice
    starts = [t.start - prev.end for prev, t in zip(turns, turns[1:])]
    middle = len(turns) // 2 - 1  # the one overlap: the middle turn starts before the one before ends
    assert starts[middle] == pytest.approx(-OVERLAP_S, abs=1e-3)
    assert all(GAP_S[0] - 1e-3 <= g <= GAP_S[1] + 1e-3 for k, g in enumerate(starts) if k != middle)
    # each turn is in its speaker's track only, at one loudness, and silence is silence
    for t in turns:
        i, j = round(t.start * 16000) + 400, round(t.end * 16000) - 400
        own = tracks[0 if t.who == "agent" else 1, i:j]
        assert 20 * np.log10(np.sqrt((own.astype(np.float64) ** 2).mean())) == pytest.approx(LEVEL_DBFS, abs=0.3)
    a_turns = [t for t in turns if t.who == "agent"]
    quiet = np.ones(tracks.shape[1], bool)
    for t in a_turns:
        quiet[round(t.start * 16000): round(t.end * 16000)] = False
    assert not tracks[0, quiet].any()
    # the same speech twice in a row from one speaker continues where it stopped
    a1 = [t for t in turns if t.source == "a1"]
    assert a1[1].source_start == pytest.approx(a1[0].source_start + a1[0].end - a1[0].start, abs=0.05)
    for name in ("a1", "a2", "p1", "p2"):  # with speech enough, no speech is used twice
        spans = sorted((t.source_start, t.source_start + t.end - t.start) for t in turns if t.source == name)
        assert all(b[0] >= a[1] - 1e-6 for a, b in zip(spans, spans[1:]))
    # 4 s of speech and a first turn of 2.5 s or more: the second is what is left when that is 2.5 s, else a repeat
    seen = set()
    for seed in range(6):
        short = build_conversation([_speech("a", 6.0, 0, 5)], partner, 3, seed=seed)[1]
        first = short[0].end - short[0].start
        goes_on = 6.0 - first >= TURN_S[0]
        assert short[2].source_start == pytest.approx(first if goes_on else 0, abs=0.05)
        assert short[2].end - short[2].start <= (6.0 - first if goes_on else 6.0) + 1e-3
        seen.add(goes_on)
    assert seen == {True, False}
    again, same = build_conversation(agent, partner, 7, seed=3)
    assert np.array_equal(tracks, again) and same == turns  # deterministic by seed
    other, _ = build_conversation(agent, partner, 7, seed=4)
    assert other.shape != tracks.shape or not np.array_equal(other, tracks)
    no_overlap = build_conversation(agent, partner, 7, seed=3, overlap=False)[1]
    assert all(t.start > prev.end for prev, t in zip(no_overlap, no_overlap[1:]))


def test_short_speech_makes_short_turns_and_wraps_around():
    tracks, turns = build_conversation([_speech("a", 1.5, 0.2, 1)], [_speech("p", 1.0, 0, 2)], 5, seed=0)
    assert all(t.end - t.start <= 1.3 + 1e-3 for t in turns if t.who == "agent")  # what the source holds
    assert all(t.source_start == pytest.approx(0.2) for t in turns if t.who == "agent")  # from its first voice again
    assert np.isfinite(tracks).all() and np.abs(tracks).max() <= 1
    with pytest.raises(ValueError):
        build_conversation([], [_speech("p", 1.0, 0, 2)], 3, seed=0)


# -- the command ------------------------------------------------------------------------------------

N_FRAMES = 40


@pytest.fixture(scope="module")
def clips(tmp_path_factory, face_crop):
    """Real-format clips of the astronaut's face (1.6 s): `talk` and `talk2` with speech from the packaged
    demo conversation (its agent's, its partner's) as their agent tracks, `mute` with a silent one,
    `noagent` without agent.wav."""
    from infp.audio.io import load_audio, save_wav
    from infp.data.clip import ClipMeta
    from infp.pretrained import demo_conversation
    from infp.video.writer import VideoWriter

    root = tmp_path_factory.mktemp("real_clips")
    demo = load_audio(demo_conversation())
    speech = demo[0, int(3.8 * 16000):][: N_FRAMES * 640]  # the agent speaking
    other = demo[1, int(0.5 * 16000):][: N_FRAMES * 640]  # the partner speaking
    frames = [np.roll(face_crop.image, (k % 5) - 2, axis=1) for k in range(N_FRAMES)]  # a slight sway
    for name, agent in (("talk", speech), ("talk2", other), ("mute", np.zeros_like(speech)), ("noagent", speech)):
        d = root / name
        d.mkdir()
        with VideoWriter(d / "video.mp4", audio=np.stack([agent, np.zeros_like(agent)])) as w:
            for f in frames:
                w.write(f)
        save_wav(d / "agent.wav", agent)
        save_wav(d / "partner.wav", np.zeros_like(agent))
        np.save(d / "landmarks.npy", np.repeat(face_crop.points[None], N_FRAMES, 0).astype(np.float32))
        ClipMeta(name, "real", FPS, N_FRAMES, face_crop.image.shape[0], 16000, "test", 1.0).save(d / "meta.json")
    (root / "noagent" / "agent.wav").unlink()
    return root


def _run(tiny_models, out, *args):
    return main(["-q", "eval", "real", "--checkpoint", str(tiny_models / "m"), "--imitator", str(tiny_models / "imi"),
                 "--steps", "2", "--device", "cpu", "--out", str(out), *args])


def test_cli_end_to_end(tiny_models, clips, tmp_path):
    out = tmp_path / "out"
    rc = _run(tiny_models, out, "--data", str(clips / "talk"), str(clips / "mute"), "--frames", "3")
    assert rc == 0
    report = json.loads((out / "real.json").read_text())
    assert [c["id"] for c in report["clips"]] == ["talk"]
    assert report["skipped"][0]["id"] == "mute" and "no speech" in report["skipped"][0]["reason"]
    clip = report["clips"][0]
    assert clip["frames"] == N_FRAMES and clip["speech"] > 0.5 and len(clip["contact"]) == 3
    real = clip["real"]
    assert real["face_found"] == 1.0 and real["frames"] == N_FRAMES and real["yaw_std"] is not None
    assert set(clip["ratio"]) == {"pitch_std", "yaw_std", "pitch_speed", "yaw_speed", "blink_rate", "mouth_std",
                                  "mouth_speed"}
    assert report["settings"]["steps"] == 2 and report["real"]["frames"] == N_FRAMES
    md = (out / "real.md").read_text()
    assert "| talk | 1.6 | " in md and "mute: the agent track has voice in 0%" in md
    import cv2

    sheet = cv2.imread(str(out / "real_contact.png"))
    assert sheet.shape == (2 * 256, 3 * 256, 3)  # real row above generated row, 3 frames
    assert (out / "talk.mp4").stat().st_size > 0
    # cheaper: every 2nd frame of the first second, no video
    out2 = tmp_path / "out2"
    assert _run(tiny_models, out2, "--data", str(clips / "talk"), "--every", "2", "--max-seconds", "1") == 0
    clip = json.loads((out2 / "real.json").read_text())["clips"][0]
    assert clip["real"]["frames"] == 13 and clip["frames"] == 25 and not list(out2.glob("*.mp4"))


def test_ceiling_renders_the_clips_own_motion(tiny_models, clips, tmp_path):
    out = tmp_path / "out"
    assert _run(tiny_models, out, "--data", str(clips / "talk"), "--frames", "2", "--ceiling", "--no-video",
                "--max-seconds", "1") == 0
    report = json.loads((out / "real.json").read_text())
    clip = report["clips"][0]
    assert clip["ceiling"]["frames"] == clip["real"]["frames"] == 25 and clip["ceiling"]["face_found"] > 0
    assert clip["ceiling_ratio"]["yaw_std"] == pytest.approx(clip["ceiling"]["yaw_std"] / clip["real"]["yaw_std"])
    assert report["generated_to_ceiling"]["mouth_std"] == pytest.approx(
        report["generated"]["mouth_std"] / report["ceiling"]["mouth_std"])
    md = (out / "real.md").read_text()
    assert "## Stage 1's ceiling" in md and "| **pooled** | generated / ceiling |" in md
    import cv2

    assert cv2.imread(str(out / "real_contact.png")).shape == (3 * 256, 2 * 256, 3)  # real, generated, ceiling
    # a clip whose stored landmarks have no face has no motion of its own: skipped, not a crash
    faceless = tmp_path / "faceless"
    shutil.copytree(clips / "talk", faceless)
    np.save(faceless / "landmarks.npy", np.full_like(np.load(faceless / "landmarks.npy"), np.nan))
    out3 = tmp_path / "out3"
    assert _run(tiny_models, out3, "--data", str(clips / "talk"), str(faceless), "--ceiling", "--no-video",
                "--max-seconds", "1") == 0
    assert "no motion of its own" in json.loads((out3 / "real.json").read_text())["skipped"][0]["reason"]
    plain = tmp_path / "plain"
    assert _run(tiny_models, plain, "--data", str(clips / "talk"), "--no-video", "--max-seconds", "1") == 0
    plain = json.loads((plain / "real.json").read_text())
    assert plain["ceiling"] is None and plain["clips"][0]["ceiling"] is None


@pytest.mark.parametrize("case, message", [
    ("missing", "not found"),
    ("plain", "not a clip (no meta.json)"),
    ("noagent", "the clip has no agent.wav"),
])
def test_bad_input_is_a_one_line_error_before_any_work(tiny_models, clips, tmp_path, capsys, case, message):
    data = {"missing": tmp_path / "nowhere", "plain": tmp_path / "plain", "noagent": clips / "noagent"}[case]
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("no clip here")
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "talk"), str(data))
    assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written, nothing half-made


def test_out_inside_a_clip_is_refused_and_silence_alone_is_an_error(tiny_models, clips, tmp_path, capsys):
    rc = _run(tiny_models, clips / "talk" / "eval", "--data", str(clips / "talk"))
    assert rc == 2 and "inside a clip folder" in capsys.readouterr().err
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "mute"))
    assert rc == 2 and "no clip could be evaluated" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_role_contrast(tiny_models, clips, tmp_path):
    from infp.audio.io import load_audio

    out = tmp_path / "roles"
    rc = _run(tiny_models, out, "--data", str(clips / "talk"), str(clips / "talk2"), str(clips / "mute"),
              "--turns", "3", "--every", "2", "--frames", "2")
    assert rc == 0
    report = json.loads((out / "real.json").read_text())
    conv = report["conversation"]
    assert report["settings"]["turns"] == 3 and [t["who"] for t in conv["turns"]] == ["agent", "partner", "agent"]
    assert conv["agent_speech"] == ["talk"] and conv["partner_speech"] == ["talk2"]  # mute has no speech to give
    assert conv["portrait"] == "talk, first frame" and conv["face_found"] == 1.0
    audio = load_audio(out / "conversation.wav")
    assert audio.shape == (2, round(conv["seconds"] * 16000))  # the conversation, to listen to
    assert conv["roles"]["speaking"]["frames"] > 0 and conv["roles"]["listening"]["frames"] > 0
    assert set(conv["roles"]) == {"speaking", "listening", "speed", "std"}
    clip = report["clips"][0]  # the reference: each real clip's speech against its own pauses
    assert clip["real_roles"]["speaking"]["frames"] + clip["real_roles"]["listening"]["frames"] == clip["real"]["frames"]
    md = (out / "real.md").read_text()
    assert "## Role contrast in a conversation of real speech" in md and "**Role contrast (mouth speed" in md
    import cv2

    assert cv2.imread(str(out / "roles_contact.png")).shape == (2 * 256, 2 * 256, 3)  # speaking above listening
    assert not list(out.glob("*.mp4"))  # --every 2: no videos


def test_role_contrast_needs_two_speakers_and_portrait_needs_turns(tiny_models, clips, tmp_path, capsys):
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "talk"), str(clips / "mute"), "--turns", "4")
    assert rc == 2 and "--turns needs the speech of two clips or more" in capsys.readouterr().err
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "talk"), "--portrait", str(tmp_path / "x.png"))
    assert rc == 2 and "give --turns N too" in capsys.readouterr().err
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "talk"), str(clips / "talk2"), "--turns", "2",
              "--portrait", str(tmp_path / "x.png"))
    assert rc == 2 and "x.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
