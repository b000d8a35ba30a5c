"""`infp eval conversation`: the per-track scores on hand-made landmarks with known answers, and the
command end to end on tiny models: two checkpoints side by side, a clip with a video and an audio-only
one, the report, its JSON and its plots; a checkpoint of another E_m is refused before any work."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from infp.cli import main
from infp.eval.conversation import Roles, expression_features, pool_tracks, track_scores
from infp.face import topology as tp

FPS = 25
N_FRAMES = 50


def _talking(points: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """(T, 478, 3) landmarks of one face whose inner lower lip drops by `opening` face heights."""
    lm = np.repeat(points[None].astype(np.float64), len(opening), 0)
    height = np.linalg.norm(points[tp.CHIN, :2] - points[tp.FOREHEAD, :2])
    gap0 = points[tp.LOWER_LIP_INNER, 1] - points[tp.UPPER_LIP_INNER, 1]
    lm[:, tp.LOWER_LIP_INNER, 1] = points[tp.UPPER_LIP_INNER, 1] + gap0 + opening * height
    return lm


def test_track_scores_follow_the_voice_that_moves_the_mouth(face_crop):
    t = np.arange(200)
    agent_turn = t < 100  # the agent speaks, then the partner
    level = np.where(agent_turn, 0.5 + 0.5 * np.sin(2 * np.pi * t / 10), 0.0)
    # the mouth follows the agent's loudness; while listening it wobbles by a tenth of that
    opening = np.where(agent_turn, 0.05 * level, 0.005 * (t % 2))
    lm = _talking(face_crop.points, opening)
    gap0 = expression_features(_talking(face_crop.points, np.zeros(1)))[0, 0]  # the face at rest
    roles = Roles(level, np.where(agent_turn, 0.0, 0.6), agent_turn, ~agent_turn, np.array([100]), None)
    s = track_scores(lm, roles, np.array([50, 150]))
    assert s.frames == 200 and s.mouth_agent_r > 0.99  # (the listening wobble is not in the agent's voice)
    assert s.mouth_partner_r < -0.5  # shut (nearly) while the partner talks
    assert s.mouth_listening == pytest.approx(gap0 + 0.0025, abs=1e-4)
    steps_speaking = np.abs(np.diff(opening[:100])).mean()
    assert s.speed_speaking == pytest.approx(steps_speaking, rel=1e-3)
    assert s.speed_listening == pytest.approx(0.005, rel=1e-3)
    assert s.role_contrast == pytest.approx(steps_speaking / 0.005, rel=1e-3)
    assert s.head_speed == pytest.approx(0, abs=1e-6)  # the head does not move
    assert math.isnan(s.nod_r_listening)  # no ground-truth nods to compare with
    # pooled: the role contrast is the ratio of the pooled speeds, not the mean of the ratios
    half = track_scores(lm[:150], Roles(level[:150], roles.level_partner[:150], agent_turn[:150], ~agent_turn[:150],
                                        np.array([100]), None), np.zeros(0, int))
    both = pool_tracks([s, half])
    assert both.frames == 350
    assert both.role_contrast == pytest.approx(both.speed_speaking / both.speed_listening)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, face_crop):
    """`turns`: the astronaut's face (2 s) with the packaged conversation's two tracks (the agent speaks,
    then the partner); `voice`: the same two tracks without a video (audio only)."""
    from infp.audio.io import load_audio, save_wav
    from infp.data.clip import ClipMeta
    from infp.pretrained import demo_conversation
    from infp.video.writer import VideoWriter

    root = tmp_path_factory.mktemp("conversation_clips")
    demo = load_audio(demo_conversation())
    n = N_FRAMES * 640
    agent = np.concatenate([demo[0, int(3.8 * 16000):][: n // 2], np.zeros(n // 2, np.float32)])
    partner = np.concatenate([np.zeros(n // 2, np.float32), demo[1, int(0.5 * 16000):][: n // 2]])
    frames = [np.roll(face_crop.image, (k % 5) - 2, axis=1) for k in range(N_FRAMES)]
    for name in ("turns", "voice"):
        d = root / name
        d.mkdir()
        save_wav(d / "agent.wav", agent)
        save_wav(d / "partner.wav", partner)
        ClipMeta(name, "real", FPS, N_FRAMES, face_crop.image.shape[0], 16000, "test", 1.0).save(d / "meta.json")
    with VideoWriter(root / "turns" / "video.mp4", audio=np.stack([agent, partner])) as w:
        for f in frames:
            w.write(f)
    np.save(root / "turns" / "landmarks.npy", np.repeat(face_crop.points[None], N_FRAMES, 0).astype(np.float32))
    return root


def _run(tiny_models, out, *args):
    return main(["-q", "eval", "conversation", "--imitator", str(tiny_models / "imi"), "--steps", "2",
                 "--device", "cpu", "--out", str(out), "--no-fid", "--no-lpips", "--no-identity", *args])


def test_two_models_on_a_video_clip_and_an_audio_only_clip(tiny_models, clips, tmp_path, astronaut):
    import cv2

    portrait = tmp_path / "astronaut.png"
    cv2.imwrite(str(portrait), astronaut[..., ::-1])
    out = tmp_path / "out"
    m = str(tiny_models / "m")
    rc = _run(tiny_models, out, "--data", str(clips), "--checkpoint", m, m, "--names", "a", "b", "--portrait",
              str(portrait), "--image-every", "10")
    assert rc == 0
    report = json.loads((out / "conversation.json").read_text())
    assert report["models"] == ["a", "b"] and report["settings"]["steps"] == 2
    kinds = {c["name"]: c["kind"] for c in report["clips"]}
    assert kinds == {"turns": "real", "voice": "audio only"}
    assert set(report["tracks"]) == {"real video", "a", "b"}
    # the same checkpoint and seed twice: the same motion, the same scores
    assert report["tracks"]["a"] == report["tracks"]["b"]
    assert report["tracks"]["real video"]["frames"] == N_FRAMES  # the video clip only
    assert report["tracks"]["a"]["frames"] <= 2 * N_FRAMES
    for group in ("latent", "pose", "expression"):  # from the clip with a video
        d = report["dyadic"]["a"][group]
        assert d["fd"] is not None and d["fd"] >= 0 and d["mse"] is not None and d["sid_gt"] is not None
    q = report["image"]["a"]
    assert q["frames"] == N_FRAMES // 10 and 0 < q["ssim"] <= 1 and q["lpips"] is None and q["fid"] is None
    assert any("audio-only" in n for n in report["notes"])
    md = (out / "conversation.md").read_text()
    for section in ("## Behaviour per track", "## Dyadic metrics (DIM / DualTalk)", "### pose", "## Image quality",
                    "| voice | audio only |", "role contrast"):
        assert section in md
    for png in ("plots/turns.png", "plots/voice.png", "plots/metrics.png"):
        assert cv2.imread(str(out / png)) is not None
    assert {p.name for p in out.glob("*.mp4")} == {"turns_a.mp4", "turns_b.mp4"}  # --videos 1: the first clip


def test_audio_only_without_a_portrait_is_skipped_and_alone_an_error(tiny_models, clips, tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(tiny_models, out, "--data", str(clips), "--checkpoint", str(tiny_models / "m"), "--no-plots",
                "--videos", "0", "--no-image") == 0
    report = json.loads((out / "conversation.json").read_text())
    assert [c["name"] for c in report["clips"]] == ["turns"] and "no --portrait" in report["skipped"]["voice"]
    assert report["image"]["m"] is None and not (out / "plots").exists()
    rc = _run(tiny_models, tmp_path / "out2", "--data", str(clips / "voice"), "--checkpoint", str(tiny_models / "m"))
    assert rc == 2 and "no clip could be evaluated" in capsys.readouterr().err


def test_a_checkpoint_of_another_motion_encoder_is_refused(tiny_models, clips, tmp_path, capsys):
    from conftest import save_tiny_models

    other = save_tiny_models(tmp_path / "other", seed=1)  # another E_m, and a stage 2 trained on its latents
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "turns"), "--checkpoint", str(tiny_models / "m"),
              str(other / "m"))
    err = capsys.readouterr().err
    assert rc == 2 and "trained on the latents of imitator" in err and str(other / "m") in err
    assert not (tmp_path / "out").exists()  # refused before anything was written
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "turns"), "--checkpoint", str(tiny_models / "m"),
              "--names", "a", "b")
    assert rc == 2 and "--names needs 1 distinct names" in capsys.readouterr().err


# -- the explicit-switching baseline ----------------------------------------------------------------

def test_the_floor_goes_to_whoever_speaks_and_stays_through_silence():
    from infp.pipeline.switching import crossfade, floor_holder

    a = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], bool)
    p = np.array([0, 1, 0, 1, 1, 1, 0, 0, 0, 1], bool)
    # nobody yet: the agent listens; an overlap stays with the agent; a silence keeps the last holder
    assert floor_holder(a, p).tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 1, 0]
    assert crossfade(floor_holder(a, p), 2).tolist() == [0, 0, 0.5, 1, 0.5, 0, 0, 0.5, 1, 0.5]
    assert np.allclose(crossfade(np.ones(4), 6), 1)  # no switch, no fade
    assert floor_holder(np.zeros(3, bool), np.zeros(3, bool)).tolist() == [0, 0, 0]


def _one_track(tiny_models, root, hears: str):
    import shutil

    d = root / hears
    shutil.copytree(tiny_models / "m", d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["training"]["hears"] = hears
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_switching_baseline_beside_the_unified_model(tiny_models, clips, tmp_path):
    speaker, listener = _one_track(tiny_models, tmp_path, "agent"), _one_track(tiny_models, tmp_path, "partner")
    out = tmp_path / "out"
    rc = _run(tiny_models, out, "--data", str(clips / "turns"), "--checkpoint", str(tiny_models / "m"),
              "--switching", str(speaker), str(listener), "--no-image", "--videos", "0", "--no-plots")
    assert rc == 0
    report = json.loads((out / "conversation.json").read_text())
    assert report["models"] == ["m", "switching"] and "speaker" in report["settings"]["checkpoints"]["switching"]
    assert report["tracks"]["switching"]["frames"] > 0 and report["dyadic"]["switching"]["pose"]["fd"] is not None


def test_switching_needs_one_track_models(tiny_models, clips, tmp_path, capsys):
    speaker = _one_track(tiny_models, tmp_path, "agent")
    rc = _run(tiny_models, tmp_path / "out", "--data", str(clips / "turns"), "--checkpoint", str(tiny_models / "m"),
              "--switching", str(speaker), str(tiny_models / "m"))
    assert rc == 2 and "the listener model must be trained with `infp train motion --hears partner`" in capsys.readouterr().err
