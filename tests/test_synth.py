"""Synthetic conversations: the portrait animator, the clip format `infp synth` writes, determinism,
atomicity, portrait folders, and the behaviour ground truth (mouth follows the agent's own voice)."""

from __future__ import annotations

import logging
import wave
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from infp import FPS, SAMPLE_RATE
from infp.audio import load_audio
from infp.data.behaviour import Behaviour, simulate
from infp.data.clip import Clip, list_clips
from infp.data.conversation import AGENT, PARTNER, make_conversation
from infp.data.portraits import load_portraits
from infp.data.render import Pose, PortraitAnimator
from infp.data.speech import EspeakVoice, Speaker
from infp.data.synth import synthesize
from infp.errors import InfpError
from infp.face import head_pose
from infp.face import topology as tp
from infp.video import probe, read_frames

CLIP_FILES = {"meta.json", "video.mp4", "agent.wav", "partner.wav", "landmarks.npy", "behaviour.npz", "contact.png"}

# --------------------------------------------------------------------------------- the animator


@pytest.fixture(scope="module")
def animator(face_crop) -> PortraitAnimator:
    return PortraitAnimator(face_crop.image, face_crop.points)


@pytest.fixture(scope="module")
def rest(face_crop, landmarks_of) -> np.ndarray:
    """MediaPipe's landmarks on the unmodified crop: what every rendered frame is measured against."""
    pts = landmarks_of(face_crop.image)
    assert pts is not None
    return pts


def _measured(animator: PortraitAnimator, landmarks_of, pose: Pose) -> np.ndarray:
    frame, pts = animator.render(pose)
    assert frame.shape == (animator.size, animator.size, 3) and frame.dtype == np.uint8
    assert pts.shape == (478, 3)
    seen = landmarks_of(frame)
    assert seen is not None, f"MediaPipe lost the face rendered with {pose}"
    return seen


def _face_height(p: np.ndarray) -> float:
    return float(np.linalg.norm(p[tp.CHIN, :2] - p[tp.FOREHEAD, :2]))


def test_rest_pose_renders_the_portrait(animator, face_crop) -> None:
    frame, pts = animator.render(Pose())
    assert np.abs(frame.astype(np.float32) - face_crop.image).mean() < 1.0
    np.testing.assert_allclose(pts, face_crop.points, atol=1e-3)


def test_mouth_opens(animator, landmarks_of, rest) -> None:
    gap = lambda p: p[tp.LOWER_LIP_INNER, 1] - p[tp.UPPER_LIP_INNER, 1]  # noqa: E731
    half = _measured(animator, landmarks_of, Pose(mouth=0.5))
    full = _measured(animator, landmarks_of, Pose(mouth=1.0))
    h = _face_height(rest)
    assert gap(full) > gap(rest) + 0.03 * h
    assert gap(rest) < gap(half) < gap(full)


def test_blink_closes_the_eyes(animator, landmarks_of, rest) -> None:
    closed = _measured(animator, landmarks_of, Pose(blink=1.0))
    for top, bottom in ((tp.RIGHT_EYE_TOP, tp.RIGHT_EYE_BOTTOM), (tp.LEFT_EYE_TOP, tp.LEFT_EYE_BOTTOM)):
        assert closed[bottom, 1] - closed[top, 1] < 0.75 * (rest[bottom, 1] - rest[top, 1])


@pytest.mark.parametrize("axis", ["yaw", "pitch", "roll"])
@pytest.mark.parametrize("degrees", [-10.0, 10.0])
def test_head_rotation_is_measured_with_its_sign(animator, landmarks_of, rest, axis: str, degrees: float) -> None:
    seen = _measured(animator, landmarks_of, Pose(**{axis: degrees}))
    k = ["yaw", "pitch", "roll"].index(axis)
    change = float(head_pose(seen)[k] - head_pose(rest)[k])
    assert np.sign(change) == np.sign(degrees) and abs(change) > 2.0, change
    assert abs(change) < abs(degrees) + 3.0  # never more rotation than asked for
    if axis == "roll":  # in the image plane a 2D warp is exact
        assert change == pytest.approx(degrees, abs=2.5)


# ----------------------------------------------------------------------------- written clips


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, list]:
    root = tmp_path_factory.mktemp("synth") / "clips"
    metas = synthesize(root, count=2, seconds=2, seed=5, size=128, progress=False)
    return root, metas


def test_synthesize_writes_the_clip_format(clips) -> None:
    root, metas = clips
    assert sorted(p.name for p in root.iterdir()) == ["clip_00000", "clip_00001"]
    assert [m.id for m in metas] == ["clip_00000", "clip_00001"]
    assert [c.path.name for c in list_clips(root)] == ["clip_00000", "clip_00001"]
    for meta in metas:
        d = root / meta.id
        assert {p.name for p in d.iterdir()} == CLIP_FILES
        clip = Clip.open(d)
        assert clip.meta == meta
        n = meta.n_frames
        assert n == 2 * FPS and meta.fps == FPS and meta.size == 128 and meta.sample_rate == SAMPLE_RATE
        assert meta.kind == "synthetic" and meta.source == "skimage.data.astronaut" and meta.seed is not None
        # Per-frame arrays agree in length.
        lms = clip.landmarks()
        assert lms.shape == (n, 478, 3) and lms.dtype == np.float32
        beh = clip.behaviour()
        assert isinstance(beh, Behaviour) and len(beh) == n
        for name in ("mouth", "smile", "blink", "brow", "yaw", "pitch", "roll", "nod", "agent_speaking"):
            assert getattr(beh, name).shape == (n,)
        # Two 16 kHz mono tracks of exactly n_frames * 640 samples.
        for name in ("agent.wav", "partner.wav"):
            with wave.open(str(d / name)) as w:
                assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, SAMPLE_RATE, 2)
                assert w.getnframes() == n * SAMPLE_RATE // FPS == n * 640
        agent, partner = clip.tracks()
        assert agent.shape == partner.shape == (n * 640,)
        assert np.abs(agent).max() > 0.01  # someone speaks
        # MediaPipe found the rendered face, and its landmarks are in crop pixels.
        found = np.isfinite(lms[:, 0, 0])
        assert meta.face_found > 0.9 and meta.face_found == pytest.approx(found.mean())
        assert (lms[found][..., :2] >= 0).all() and (lms[found][..., :2] <= 128).all()
        # The video: n frames of size x size, the two tracks as stereo (left = agent).
        info = probe(clip.video)
        assert (info.width, info.height, info.fps, info.has_audio) == (128, 128, FPS, True)
        frames = read_frames(clip.video)
        assert frames.shape == (n, 128, 128, 3)
        stereo = load_audio(clip.video)
        assert stereo.shape[0] == 2 and n * 640 <= stereo.shape[1] < n * 640 + 1024
        for track, channel in ((agent, 0), (partner, 1)):
            other = stereo[1 - channel, : n * 640]
            assert np.abs(stereo[channel, : n * 640] - track).mean() < np.abs(other - track).mean() + 1e-6
        # The contact sheet is an image made of crops.
        sheet = cv2.imread(str(d / "contact.png"))
        assert sheet is not None and sheet.shape[0] % 128 == 0 and sheet.shape[1] % 128 == 0
        # Ground-truth bookkeeping in the metadata matches the behaviour.
        assert meta.extra["agent_speaking_fraction"] == pytest.approx(beh.agent_speaking.mean())
        assert meta.extra["utterances"]


def test_same_seed_same_clips_other_seed_other_audio(clips, tmp_path: Path) -> None:
    root, metas = clips
    again = synthesize(tmp_path / "again", count=1, seconds=2, seed=5, size=128, progress=False)
    a, b = root / "clip_00000", tmp_path / "again" / "clip_00000"
    for name in ("agent.wav", "partner.wav"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    ba, bb = Clip.open(a).behaviour(), Clip.open(b).behaviour()
    for name in Behaviour.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(ba, name), getattr(bb, name), err_msg=name)
    assert again[0].extra["utterances"] == metas[0].extra["utterances"]
    assert again[0].seed == metas[0].seed

    other = synthesize(tmp_path / "other", count=1, seconds=2, seed=6, size=128, progress=False)
    assert (tmp_path / "other" / "clip_00000" / "agent.wav").read_bytes() != (a / "agent.wav").read_bytes()
    assert other[0].extra["utterances"] != metas[0].extra["utterances"]
    # Clips of one run differ from each other too.
    assert (root / "clip_00001" / "agent.wav").read_bytes() != (a / "agent.wav").read_bytes()


def _mtimes(d: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in [d, *d.iterdir()]}


def test_rerun_keeps_existing_clips_and_adds_missing(tmp_path: Path) -> None:
    out = tmp_path / "clips"
    first = synthesize(out, count=1, seconds=1, seed=3, size=128, progress=False)
    before = _mtimes(out / "clip_00000")
    again = synthesize(out, count=2, seconds=1, seed=3, size=128, progress=False)
    assert _mtimes(out / "clip_00000") == before
    assert again[0] == first[0]
    assert [m.id for m in again] == ["clip_00000", "clip_00001"]
    assert {p.name for p in (out / "clip_00001").iterdir()} == CLIP_FILES
    assert sorted(p.name for p in out.iterdir()) == ["clip_00000", "clip_00001"]


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_clip_leaves_no_partial_clip(tmp_path: Path, monkeypatch, exc: type[BaseException]) -> None:
    out = tmp_path / "clips"
    frames = int(1 * FPS)
    original = PortraitAnimator.render
    calls = {"n": 0}

    def failing_render(self, pose):
        calls["n"] += 1
        if calls["n"] > frames + 5:  # clip 0 completes; clip 1 dies on its 6th frame
            raise exc("renderer died")
        return original(self, pose)

    monkeypatch.setattr(PortraitAnimator, "render", failing_render)
    with pytest.raises(exc, match="renderer died"):
        synthesize(out, count=2, seconds=1, seed=2, size=128, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["clip_00000"]  # nothing hidden, nothing partial
    assert Clip.open(out / "clip_00000").meta.n_frames == frames
    assert {p.name for p in (out / "clip_00000").iterdir()} == CLIP_FILES


# ------------------------------------------------------------------------------ portrait folders


def test_portraits_folder_skips_images_without_a_face(tmp_path: Path, astronaut, caplog) -> None:
    folder = tmp_path / "portraits"
    folder.mkdir()
    cv2.imwrite(str(folder / "astro.png"), astronaut[:, :, ::-1])
    cv2.imwrite(str(folder / "blank_wall.png"), np.full((300, 300, 3), 128, np.uint8))
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    (folder / "notes.txt").write_text("not an image, not even looked at")
    with caplog.at_level(logging.WARNING):
        portraits = load_portraits(folder, 128)
    assert [p.name for p in portraits] == ["astro.png"]
    assert portraits[0].image.shape == (128, 128, 3) and portraits[0].points.shape == (478, 3)
    warnings = " | ".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)
    assert "blank_wall.png" in warnings and "broken.jpg" in warnings
    assert "astro.png" not in warnings and "notes.txt" not in warnings

    metas = synthesize(tmp_path / "out", count=1, seconds=1, seed=0, size=128, portraits=folder, progress=False)
    assert metas[0].source == "astro.png" and metas[0].face_found > 0.9


def test_portraits_folder_without_a_usable_image_is_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "faceless"
    folder.mkdir()
    cv2.imwrite(str(folder / "blank_wall.png"), np.full((300, 300, 3), 128, np.uint8))
    with pytest.raises(InfpError) as err:
        synthesize(tmp_path / "out", count=1, seconds=1, portraits=folder, progress=False)
    assert str(folder) in str(err.value)
    assert not (tmp_path / "out" / "clip_00000").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InfpError, match="no usable portrait"):
        load_portraits(empty, 128)
    with pytest.raises(InfpError, match="not found"):
        load_portraits(tmp_path / "missing", 128)


# -------------------------------------------------------------------- behaviour ground truth

SEEDS = range(6)


@pytest.fixture(scope="module")
def conversations() -> list:
    """(conversation, behaviour) for 20 s conversations of a few seeds; no rendering (fast)."""
    out = []
    for seed in SEEDS:
        rng = np.random.default_rng(seed)
        agent = Speaker(EspeakVoice.random(rng), 0.0)
        partner = Speaker(EspeakVoice.random(rng), -2.0)
        conv = make_conversation(rng, 20.0, agent, partner)
        out.append((conv, simulate(rng, conv)))
    return out


def test_conversation_lengths(conversations) -> None:
    for conv, beh in conversations:
        assert conv.n_frames == 20 * FPS == len(beh)
        assert conv.agent.shape == conv.partner.shape == (conv.n_frames * 640,)
        assert all(0 <= u.start < u.end <= 20.0 + 1e-6 for u in conv.utterances)


def test_both_speakers_speak_in_most_conversations(conversations) -> None:
    both = [conv.speaking(AGENT, False).any() and conv.speaking(PARTNER, False).any() for conv, _ in conversations]
    assert sum(both) >= len(both) - 2, both


def test_mouth_moves_only_with_the_agents_own_speech(conversations) -> None:
    checked = 0
    for conv, beh in conversations:
        own = conv.speaking(AGENT, backchannels=False)
        if own.sum() < FPS:
            continue
        checked += 1
        assert (beh.mouth[own] > 0.05).mean() > 0.7  # open most of the time it talks
        partner_only = beh.partner_speaking & ~beh.agent_speaking
        assert beh.mouth[partner_only].mean() < 0.02
        # Away from the agent's speech (beyond the 3-frame smoothing) the mouth is shut.
        silent = ~binary_dilation(beh.agent_speaking, iterations=3)
        assert beh.mouth[silent].max() < 1e-3
    assert checked >= 3


def test_nods_start_while_the_agent_is_silent(conversations) -> None:
    total = 0
    for _, beh in conversations:
        starts = np.nonzero(np.diff(np.concatenate([[False], beh.nod]).astype(np.int8)) == 1)[0]
        total += len(starts)
        assert not beh.agent_speaking[starts].any()
        for s in starts:  # cued by the end of a partner sentence (0.4 s before to 0.2 s after it)
            assert beh.partner_speaking[max(0, s - 10) : s + 11].any()
    assert total >= 3


def test_nods_never_overlap_the_agents_own_speech(conversations) -> None:
    for conv, beh in conversations:
        assert not (beh.nod & conv.speaking(AGENT, backchannels=False)).any()


def test_the_head_drifts_smoothly_and_calmer_while_listening(conversations) -> None:
    """Real listeners turn their heads 0.12-0.24 deg a frame (MediaPipe, which adds its own jitter) at
    0.4-1.5 deg std; the drift is smooth, and livelier while speaking."""
    speed, spread = {"listen": [], "speak": []}, {"listen": [], "speak": []}
    for _, beh in conversations:
        for role, mask in (("listen", beh.partner_speaking & ~beh.agent_speaking & ~beh.nod),
                           ("speak", beh.agent_speaking & ~beh.partner_speaking)):
            both = mask[1:] & mask[:-1]
            if both.sum() > FPS:
                speed[role].append(np.abs(np.diff(beh.yaw))[both].mean())
                spread[role].append(beh.yaw[mask].std())
    assert len(speed["listen"]) >= 3 and len(speed["speak"]) >= 3
    assert np.mean(speed["listen"]) < 0.12 and np.mean(spread["listen"]) < 1.5
    assert np.mean(speed["speak"]) > np.mean(speed["listen"]) and np.mean(spread["speak"]) > np.mean(spread["listen"])


def test_blinks_throughout(conversations) -> None:
    onsets = sum(int(((beh.blink[1:] > 0) & (beh.blink[:-1] == 0)).sum()) for _, beh in conversations)
    seconds = 20 * len(conversations)
    assert 0.1 * seconds < onsets < 0.6 * seconds  # documented: about one every 3-4 s


def test_measured_mouth_follows_the_agent_not_the_partner(tmp_path: Path) -> None:
    from infp.eval.behaviour import clip_audio_following

    meta = synthesize(tmp_path, count=1, seconds=6, seed=4, size=128, progress=False)[0]
    assert meta.extra["agent_speaking_fraction"] > 0.15 and meta.extra["partner_speaking_fraction"] > 0.15, (
        "seed 4 no longer gives a two-sided conversation; pick another seed"
    )
    result = clip_audio_following(Clip.open(tmp_path / meta.id))
    assert result.face_found > 0.9
    assert result.mouth_vs_agent > 0.5
    assert result.mouth_vs_agent > result.mouth_vs_partner
    assert result.mouth_speaking > result.mouth_listening


def test_espeak_reads_text_as_text_never_as_options(tmp_path):
    """`infp call` speaks what a visitor types: a text that looks like espeak-ng's options is spoken,
    not obeyed (as an argument, "-w FILE" would make espeak-ng write FILE)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng")
    target = tmp_path / "written.wav"
    audio = EspeakVoice("en", 50, 170).say(f"-w {target} hello")
    assert not target.exists() and len(audio) > SAMPLE_RATE // 2


def test_held_out_languages_and_a_typo_refused(tmp_path):
    """`--languages` voices a held-out set in languages training never heard; the default draws the same
    voices as before the option existed; a language espeak-ng lacks is one line, nothing written."""
    from infp.cli import main
    from infp.data.speech import ESPEAK_LANGS

    a, b = np.random.default_rng(3), np.random.default_rng(3)
    assert EspeakVoice.random(a) == EspeakVoice.random(b, ESPEAK_LANGS)
    rng = np.random.default_rng(0)
    langs = {EspeakVoice.random(rng, ("pt", "nl", "pl")).voice.split("+")[0] for _ in range(40)}
    assert langs == {"pt", "nl", "pl"}
    assert main(["-q", "synth", "--out", str(tmp_path / "x"), "--languages", "pt", "klingon"]) == 2
    assert not (tmp_path / "x").exists()
