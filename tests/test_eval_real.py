"""`infp eval real`: the measures on hand-made series with known answers, and the command end to end on
tiny models and a tiny real-format clip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from infp.cli import main
from infp.eval.real import (
    Measures,
    Series,
    amplitude,
    blink_count,
    measure,
    pool,
    ratios,
    speed,
)

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


# -- the command ------------------------------------------------------------------------------------

N_FRAMES = 40


@pytest.fixture(scope="module")
def clips(tmp_path_factory, face_crop):
    """Real-format clips of the astronaut's face (1.6 s): `talk` with speech from the packaged demo
    conversation as its agent track, `mute` with a silent one, `noagent` without agent.wav."""
    from infp.audio.io import load_audio, save_wav
    from infp.data.clip import ClipMeta
    from infp.pretrained import demo_conversation
    from infp.video.writer import VideoWriter

    root = tmp_path_factory.mktemp("real_clips")
    speech = load_audio(demo_conversation())[0, int(3.8 * 16000):][: N_FRAMES * 640]  # the agent speaking
    frames = [np.roll(face_crop.image, (k % 5) - 2, axis=1) for k in range(N_FRAMES)]  # a slight sway
    for name, agent in (("talk", speech), ("mute", np.zeros_like(speech)), ("noagent", speech)):
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
