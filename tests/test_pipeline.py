"""The generation pipeline: portrait framing and paste-back, streaming = offline, bounded memory,
seeded reproducibility, the MP4 it writes, and `infp generate` with its bad inputs (tiny models)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from infp import SAMPLE_RATE
from infp.audio.io import save_wav
from infp.cli import main
from infp.diffusion.sampling import generate
from infp.errors import InfpError, NoFaceError
from infp.pipeline import InfpPipeline, Settings
from infp.pipeline.stream import SAMPLES_PER_FRAME
from infp.video import probe, read_frames


def _channels(path) -> int:
    import av

    with av.open(str(path)) as c:
        return c.streams.audio[0].codec_context.channels


def _voice(seconds: float, seed: int, on: tuple[float, float] | None = None) -> np.ndarray:
    """Noise bursts shaped like syllables (4 Hz), active inside `on` (seconds) when given."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    x = 0.2 * rng.normal(size=n) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    if on is not None:
        x[(t < on[0]) | (t >= on[1])] = 0
    return x.astype(np.float32)


def test_portrait_is_found_cropped_and_pasted_back(pipe, portrait, astronaut):
    face = portrait.face
    assert face.crop.shape == (64, 64, 3) and face.points.shape == (478, 3)
    assert portrait.latent.shape == (16,)
    framing = face.framing()
    assert framing.background.shape == astronaut.shape  # 512 x 512: its own size
    # the renderer warps the face at the size it has in the output (about 1:1 with the portrait), not
    # at its 64-px working size: pasting that crop back gives back the portrait nearly exactly
    assert face.full is not None and face.full.shape[0] == framing.crop_size == face.render_size
    assert abs(face.render_size - face.box[2]) <= 8
    # a frame with no motion and nothing painted reads every pixel at its own place: the portrait
    still = torch.zeros(1, 2, 16, 16)
    paint = torch.zeros(1, 4, face.crop.shape[0], face.crop.shape[0])
    again = framing.compose(still, paint[:, :3], paint[:, 3:])[0]
    inside = framing._alpha[..., 0] > 0.99
    assert inside.sum() > 5000 and (~inside).sum() > 100_000
    np.testing.assert_array_equal(again[framing._alpha[..., 0] == 0], astronaut[framing._alpha[..., 0] == 0])
    assert np.abs(again.astype(int) - astronaut).max() <= 1  # one read, at the pixels' own centres
    # a uniform flow of one crop pixel to the right reads the portrait side / render_size px further right
    shift = torch.zeros(1, 2, 16, 16)
    shift[:, 0] = 2 / face.render_size
    moved = framing.compose(shift, paint[:, :3], paint[:, 3:])[0]
    step = face.box[2] / face.render_size
    x = np.arange(astronaut.shape[1], dtype=np.float32)
    y0, y1 = int(face.box[1] - 20), int(face.box[1] + 20)
    want = np.stack([cv2.remap(astronaut, (x + step)[None].repeat(1, 0), np.full((1, len(x)), r, np.float32),
                               cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)[0] for r in range(y0, y1)])
    cols = slice(int(face.box[0] - 20), int(face.box[0] + 20))
    assert np.abs(moved[y0:y1, cols].astype(int) - want[:, cols]).max() <= 1
    small = face.framing(200)
    assert small.background.shape == (200, 200, 3) and small.box[2] == pytest.approx(face.box[2] * 200 / 512, rel=1e-3)


def test_a_small_portrait_is_upscaled_with_a_warning(pipe, astronaut, caplog):
    """Bad input (issue 19): a portrait much smaller than the output is upscaled, not refused, and the
    user is told why the face will look soft."""
    from infp.pipeline.portrait import find_face

    small = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)
    with caplog.at_level("WARNING", logger="infp"):
        face = find_face(small, "small.png", 256)
        framing = face.framing(512)
    assert face.crop.shape == (256, 256, 3) and framing.background.shape == (512, 512, 3)
    assert "small.png: the face is" in caplog.text and "small.png: the portrait is 160 px across" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="infp"):
        pipe.prepare(astronaut, "astronaut").face.framing()
    assert "upscaled" not in caplog.text


def test_several_faces_need_an_index(pipe, astronaut):
    two = np.concatenate([astronaut, astronaut], axis=1)
    with pytest.raises(NoFaceError, match="2 faces found.*--face-index"):
        pipe.prepare(two, "two")
    right = pipe.prepare(two, "two", face_index=1)
    assert right.face.box[2] > 100
    with pytest.raises(NoFaceError, match="no face"):
        pipe.prepare(np.full((200, 200, 3), 128, np.uint8), "grey")


@pytest.mark.parametrize("overlap, live", [(0, False), (5, False), (None, True)])
def test_stream_equals_offline_and_memory_is_bounded(pipe, portrait, overlap, live):
    agent, partner = _voice(3.3, 1, (0.0, 1.5)), _voice(3.3, 2, (1.6, 3.3))
    offline = pipe.motion(portrait, agent, partner, seed=3, steps=3, overlap=overlap, live=live)
    n_frames = -(-len(agent) // SAMPLES_PER_FRAME)
    assert offline.shape == (n_frames, 16) and np.isfinite(offline).all()
    stream = pipe.motion_stream(portrait, Settings(seed=3, steps=3, overlap=overlap, live=live))
    rng, parts, k, longest = np.random.default_rng(0), [], 0, 0
    while k < len(agent):
        n = int(rng.integers(50, 3000))
        parts += stream.push(agent[k : k + n], partner[k : k + n])
        longest = max(longest, stream.buffer.shape[1] - n)
        k += n
    parts += stream.finish()
    np.testing.assert_array_equal(np.concatenate(parts), offline)
    window = pipe.stage2.model.cfg.window
    # the window being gathered, the one before (a last window may move back into it) and margins
    assert longest <= (2 * window + 3) * SAMPLES_PER_FRAME


@pytest.mark.parametrize("frames", ["two windows", "not a multiple"])
def test_streamed_features_equal_whole_track_features(pipe, portrait, frames):
    """Windows featurised from their own stretch of audio give what whole-track features give, and the
    stream follows the offline window schedule, a last window moved back included."""
    m, w = pipe.stage2, pipe.stage2.model.cfg.window
    n = 2 * w if frames == "two windows" else 2 * w + 5
    agent, partner = _voice(n / 25, 4), _voice(n / 25, 5)
    streamed = pipe.motion(portrait, agent, partner, seed=1, steps=2, overlap=3)
    whole = generate(m.model, m.diffusion, torch.from_numpy(m.featurizer(agent)), torch.from_numpy(m.featurizer(partner)),
                     portrait.latent, None, steps=2, guidance=3.0, seed=1, overlap=3)
    np.testing.assert_allclose(streamed, whole.numpy(), atol=1e-5)


def test_generation_is_seeded_and_sized(pipe, portrait):
    agent, partner = _voice(1.0, 6), np.zeros(8000, np.float32)  # partner shorter: padded with silence
    video = pipe(portrait, agent, partner, seed=5, steps=2, size=100)
    assert len(video) == 25
    frames = video.frames()
    assert frames.shape == (25, 100, 100, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, pipe(portrait, agent, partner, seed=5, steps=2, size=100).frames())
    z5, z6 = (pipe.motion(portrait, agent, partner, seed=k, steps=2) for k in (5, 6))
    assert np.abs(z5 - z6).max() > 1e-3  # (the untrained tiny renderer hardly moves; the motion does)
    crop = pipe(portrait, agent, partner, seed=5, steps=2, paste=False).frames()
    assert crop.shape == (25, 64, 64, 3)
    with pytest.raises(InfpError, match="empty"):
        pipe(portrait, np.zeros(0, np.float32), np.zeros(0, np.float32))


def test_write_muxes_the_audio_at_25_fps(pipe, portrait, tmp_path):
    agent, partner = _voice(1.3, 7), _voice(1.3, 8)
    out = pipe(portrait, agent, partner, steps=2, size=128).write(tmp_path / "v.mp4")
    info = probe(out)
    assert info.n_frames == 33 and info.fps == 25 and _channels(out) == 1
    assert info.duration == pytest.approx(1.32, abs=0.05)
    assert len(read_frames(out)) == 33
    with pytest.raises(InfpError, match="folder does not exist"):
        pipe(portrait, agent, partner, steps=2).write(tmp_path / "missing" / "v.mp4")
    assert not (tmp_path / "missing").exists()


def test_a_conversation_file_gives_the_frames_and_sound_of_the_arrays(pipe, portrait, tmp_path):
    """Read from disk in chunks (any length fits in memory): the same video as from the loaded tracks."""
    from infp.audio.chunks import ConversationFile
    from infp.audio.io import load_conversation

    save_wav(tmp_path / "talk.wav", np.stack([_voice(2.3, 21, (0.2, 1.4)), _voice(2.3, 22, (1.5, 2.3))]))
    loaded, on_disk = load_conversation(tmp_path / "talk.wav"), ConversationFile.open(tmp_path / "talk.wav")
    a = pipe(portrait, loaded.agent, loaded.partner, steps=2, seed=4, size=64)
    b = pipe(portrait, on_disk, steps=2, seed=4, size=64)
    assert len(a) == len(b) == 58
    np.testing.assert_array_equal(b.frames(), a.frames())
    for mode in ("mix", "stereo"):
        np.testing.assert_array_equal(b.audio(mode), a.audio(mode))
    with pytest.raises(InfpError, match="not both"):
        pipe(portrait, on_disk, loaded.partner)


# -- infp generate ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tracks(tmp_path_factory, astronaut):

    d = tmp_path_factory.mktemp("generate_inputs")
    save_wav(d / "agent.wav", _voice(1.2, 9, (0, 0.6)))
    save_wav(d / "partner.wav", _voice(0.7, 10))  # shorter: padded
    save_wav(d / "both.wav", np.stack([_voice(1.0, 11), _voice(1.0, 12)]))
    save_wav(d / "mono.wav", _voice(1.0, 13))
    save_wav(d / "silent.wav", np.zeros(16000, np.float32))
    (d / "empty.wav").write_bytes(b"")
    cv2.imwrite(str(d / "face.png"), astronaut[:, :, ::-1])
    cv2.imwrite(str(d / "two.png"), np.concatenate([astronaut, astronaut], 1)[:, :, ::-1])
    cv2.imwrite(str(d / "none.png"), np.full((100, 100, 3), 90, np.uint8))
    return d


def _generate(tiny_models, out, *args):
    return main(["-q", "generate", "--checkpoint", str(tiny_models / "m"), "--imitator", str(tiny_models / "imi"),
                 "--steps", "2", "--device", "cpu", "--out", str(out), *args])


def test_cli_generate_two_files_monologue_and_listening(tiny_models, tracks, tmp_path):
    face = ["--portrait", str(tracks / "face.png")]
    assert _generate(tiny_models, tmp_path / "a.mp4", *face, "--agent", str(tracks / "agent.wav"),
                     "--partner", str(tracks / "partner.wav"), "--size", "96") == 0
    info = probe(tmp_path / "a.mp4")
    assert info.n_frames == 30 and (info.width, info.height) == (96, 96)
    assert _generate(tiny_models, tmp_path / "mono.mp4", *face, "--agent", str(tracks / "agent.wav"),
                     "--partner", str(tracks / "silent.wav"), "--crop-only", "--mix", "stereo") == 0
    assert _channels(tmp_path / "mono.mp4") == 2
    assert _generate(tiny_models, tmp_path / "listen.mp4", *face, "--agent", str(tracks / "silent.wav"),
                     "--partner", str(tracks / "agent.wav"), "--crop-only") == 0
    assert _generate(tiny_models, tmp_path / "stereo.mp4", *face, "--audio", str(tracks / "both.wav"), "--crop-only") == 0
    assert probe(tmp_path / "stereo.mp4").n_frames == 25


@pytest.mark.parametrize("case, args, message", [
    ("mono", ["--audio", "mono.wav"], "mono; a conversation needs two channels"),
    ("empty", ["--audio", "empty.wav"], ""),
    ("unreadable", ["--audio", "face.png"], ""),
    ("one file", ["--agent", "agent.wav"], "both --agent and --partner"),
    ("no face", ["--portrait", "none.png"], "no face"),
    ("two faces", ["--portrait", "two.png"], "2 faces found"),
])
def test_cli_generate_bad_input(tiny_models, tracks, tmp_path, capsys, case, args, message):
    args = [str(tracks / a) if a.endswith((".wav", ".png")) else a for a in args]
    if "--portrait" not in args:
        args += ["--portrait", str(tracks / "face.png")]
    if "--audio" not in args and "--agent" not in args:
        args += ["--audio", str(tracks / "both.wav")]
    out = tmp_path / "out.mp4"
    assert _generate(tiny_models, out, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("infp: error:") and message in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cli_generate_wrong_stage_and_missing_folder(tiny_models, tracks, tmp_path, capsys):
    common = ["--portrait", str(tracks / "face.png"), "--audio", str(tracks / "both.wav")]
    rc = main(["-q", "generate", "--checkpoint", str(tiny_models / "imi"), "--imitator", str(tiny_models / "imi"),
               "--out", str(tmp_path / "o.mp4"), *common])
    assert rc == 2 and "a stage-2 (motion) checkpoint is needed" in capsys.readouterr().err
    rc = main(["-q", "generate", "--checkpoint", str(tiny_models / "m"), "--imitator", str(tiny_models / "m"),
               "--out", str(tmp_path / "o.mp4"), *common])
    assert rc == 2 and "a stage-1 (imitation) checkpoint is needed" in capsys.readouterr().err
    assert _generate(tiny_models, tmp_path / "nope" / "o.mp4", *common) == 2
    assert "output folder does not exist" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_bench_times_motion_pipeline_and_stream(caplog):
    assert main(["-q", "bench", "--preset", "tiny", "--imitator-preset", "tiny", "--seconds", "1.5", "--steps", "2"]) == 0
    err = caplog.text
    assert "motion (tiny, cpu" in err and "x real time" in err
    assert "pipeline (tiny + tiny (untrained), cpu" in err and "frames/s" in err
    assert "stream (tiny + tiny (untrained), cpu" in err and "latency audio -> frame mean" in err and "p95" in err
    assert "MB" in err and "look-ahead 0" in err
    assert "flops (tiny, 64 px" in err and "flops (base, 256 px" in err and "GFLOP" in err
