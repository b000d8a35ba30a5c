"""Reliability and safety (issue 24): every bad input, flag, checkpoint or output of the matrix fails
with exit 2 and one line naming the cause, no traceback, nothing left at or beside the output and the
inputs untouched; kills leave nothing a later run does not clean; one writer per output; `--resume`
keeps the recorded plan; a truncated WAV is flagged. Tiny untrained models, audio under a second."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from infp.audio.io import save_wav, wav_declared_frames
from infp.cli import main
from infp.errors import InfpError
from infp.fsutil import FAULT_ENV, FAULT_SIGNAL_ENV, clean_partials, output_lock
from infp.video import probe

SR = 16000


# -- inputs ------------------------------------------------------------------------------------------

def _float_wav(path: Path, audio: np.ndarray, sr: int = SR) -> None:
    """A 32-bit float WAV (format 3), which can hold NaN and infinity; (C, N) audio."""
    data = np.ascontiguousarray(np.asarray(audio, "<f4").T).tobytes()
    ch = audio.shape[0]
    fmt = struct.pack("<HHIIHH", 3, ch, sr, sr * ch * 4, ch * 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt "
                     + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data)


@pytest.fixture(scope="module")
def media(tmp_path_factory, astronaut) -> Path:
    import cv2

    d = tmp_path_factory.mktemp("reliability_media")
    rng = np.random.default_rng(0)
    talk = (0.1 * rng.normal(size=(2, int(0.6 * SR)))).astype(np.float32)
    save_wav(d / "talk.wav", talk)
    shutil.copy(d / "talk.wav", d / "talk.mp4")  # FFmpeg reads the content: an input named like the output
    for name, where, value in (("nan.wav", (0, 3000), np.nan), ("inf.wav", (1, 5000), np.inf)):
        bad = talk.copy()
        bad[where] = value
        _float_wav(d / name, bad)
    save_wav(d / "long.wav", (0.1 * rng.normal(size=(2, SR))).astype(np.float32))
    whole = (d / "long.wav").read_bytes()
    (d / "cut.wav").write_bytes(whole[: len(whole) // 2])  # the header still declares 1 s
    cv2.imwrite(str(d / "face.png"), astronaut[:, :, ::-1])
    return d


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory) -> Path:
    """The tiny checkpoints, and broken copies: weights scaled by 1e38 (finite, so every load check
    passes; E_m untouched, so the pairing still holds) and configs edited to absurd widths."""
    from safetensors.torch import load_file, save_file

    d = tmp_path_factory.mktemp("reliability_models")
    for name in ("imi", "m"):
        shutil.copytree(tiny_models / name, d / name)

    def scaled(src: str, dst: str, prefix: str) -> None:
        shutil.copytree(d / src, d / dst)
        state = load_file(d / dst / "model.safetensors")
        for k, v in state.items():
            if k.startswith(prefix) and v.is_floating_point() and 0 < float(v.abs().max()) <= 1:
                state[k] = v * 1e38
        save_file(state, d / dst / "model.safetensors")

    def edited(src: str, dst: str, **fields) -> None:
        shutil.copytree(d / src, d / dst)
        meta = json.loads((d / dst / "config.json").read_text())
        meta["config"].update(fields)
        (d / dst / "config.json").write_text(json.dumps(meta))

    scaled("imi", "imi_x1e38", "appearance_encoder.")
    scaled("m", "m_x1e38", "denoiser.")
    edited("imi", "imi_wide", decoder_channels=100_000)
    edited("m", "m_wide", width=4096)  # within the bounds of a number: caught by sizing it against the weights
    return d


def _listing(folder: Path) -> list[str]:
    """Every name under `folder`, hidden ones included (links and special files not followed)."""
    return sorted(str(Path(d, n).relative_to(folder)) for d, dirs, files in os.walk(folder) for n in dirs + files)


def _digest(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for f in folders for p in sorted(f.rglob("*")) if p.is_file() and not p.is_symlink()}


def _main(argv: list[str]) -> int:
    """`infp ARGV` in this process: its exit status (argparse exits through SystemExit). Any other
    exception propagates and fails the test: that is a traceback."""
    try:
        return main([str(a) for a in argv])
    except SystemExit as e:
        return e.code


def _generate(models: Path, media: Path, out, *extra, audio="talk.wav", imitator="imi", checkpoint="m") -> list:
    args = ["-q", "generate", "--checkpoint", models / checkpoint, "--imitator", models / imitator,
            "--portrait", media / "face.png", "--steps", "2", "--device", "cpu", "--out", out, *extra]
    if "--size" not in extra:
        args += ["--size", "64"]
    if "--audio" not in extra:
        args += ["--audio", media / audio]
    return args


# -- the matrix --------------------------------------------------------------------------------------
# (case, argv(models, media, out_folder) -> (argv, output path), kind, message). kind: "flag" for
# argparse's own error (usage, then one error line naming the flag), "error" for infp's one line.

def _gen(*extra, out="out.mp4", **kw):
    return lambda models, media, tmp: (_generate(models, media, tmp / out, *extra, **kw), tmp / out)


def _out_is(make, *extra):
    """generate with --out set up by make(tmp, media) -> the path."""
    def build(models, media, tmp):
        out = make(tmp, media)
        return _generate(models, media, out, *extra), out
    return build


def _device_node(tmp: Path, media: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root (as root, --out /dev/null once replaced the system's)")
    p = tmp / "null.mp4"
    try:
        os.mknod(p, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is, where a mistake costs nothing
    except PermissionError:
        pytest.skip("this container may not make device nodes")
    return p


def _unwritable(tmp: Path, media: Path) -> Path:
    if os.geteuid() != 0:
        ro = tmp / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        return ro / "out.mp4"
    if not Path("/sys").is_dir():
        pytest.skip("root writes anywhere; the test needs /sys, which refuses even root")
    return Path("/sys/infp-reliability.mp4")


def _busy_port(tmp: Path) -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    _busy_port.held = s  # kept open during the run
    return s.getsockname()[1]


MATRIX = [
    # item 2: non-finite numbers
    ("guidance nan", _gen("--guidance", "nan"), "flag", "--guidance: must be a finite number"),
    ("guidance inf", _gen("--guidance", "inf"), "flag", "--guidance: must be a finite number"),
    ("guidance 1e30", _gen("--guidance", "1e30"), "flag", "--guidance: must be a number above 0 and at most 100"),
    ("imitator weights x 1e38", _gen(imitator="imi_x1e38"), "error", "stage 1 (the imitator) rendered NaN or infinite pixels"),
    ("motion weights x 1e38", _gen(checkpoint="m_x1e38"), "error", "stage 2 generated NaN, infinite or absurdly large"),
    # item 4: --out destroys what it points at
    ("out is the audio", lambda m, media, tmp: (_generate(m, media, media / "talk.mp4", "--audio", media / "talk.mp4"),
                                                media / "talk.mp4"), "error", "the output is also an input"),
    ("out is the portrait", lambda m, media, tmp: (_generate(m, media, media / "face.png"), media / "face.png"),
     "error", "the output is also an input"),
    ("out is a hard link to the audio",
     _out_is(lambda tmp, media: (os.link(media / "talk.mp4", tmp / "h.mp4"), tmp / "h.mp4")[1], "--audio", "AUDIO_MP4"),
     "error", "the output is also an input"),
    ("out is a symbolic link", _out_is(lambda tmp, media: (os.symlink(media / "talk.mp4", tmp / "s.mp4"), tmp / "s.mp4")[1]),
     "error", "the output is a symbolic link"),
    ("out is a fifo", _out_is(lambda tmp, media: (os.mkfifo(tmp / "f.mp4"), tmp / "f.mp4")[1]),
     "error", "the output is not a regular file"),
    ("out is a device node", _out_is(_device_node), "error", "the output is not a regular file"),
    ("out is a folder", _out_is(lambda tmp, media: (os.mkdir(tmp / "d.mp4"), tmp / "d.mp4")[1]),
     "error", "the output path is a folder"),
    ("out folder missing", _gen(out="nowhere/out.mp4"), "error", "the output folder does not exist"),
    ("out .avi", _gen(out="x.avi"), "error", "--out must end in .mp4"),
    # item 6: tracebacks instead of one line
    ("NaN audio samples", _gen(audio="nan.wav"), "error", "the audio holds NaN or infinite samples"),
    ("inf audio samples", _gen(audio="inf.wav"), "error", "the audio holds NaN or infinite samples"),
    ("unwritable out", _out_is(_unwritable), "error", "cannot write"),
    ("seed 2^64", _gen("--seed", str(2**64)), "flag", "--seed: must be a whole number from 0 to 4294967295"),
    ("seed 2^32 (item 11)", _gen("--seed", str(2**32)), "flag", "--seed: must be a whole number from 0 to 4294967295"),
    ("seed -1", _gen("--seed", "-1"), "flag", "--seed: must be a whole number from 0"),
    ("steps 1001", _gen("--steps", "1001"), "flag", "--steps: must be a whole number from 1 to 1000"),
    ("face-index -1", _gen("--face-index", "-1"), "flag", "--face-index: must be 0 or more"),
    ("overlap -1", _gen("--overlap", "-1"), "flag", "--overlap: must be 0 or more"),
    ("device cuda without CUDA", _gen("--device", "cuda"), "error", "--device cuda:"),
    ("imitator config width 1e5", _gen(imitator="imi_wide"), "error", "decoder_channels = 100000 is out of range"),
    ("motion config width 4096", _gen(checkpoint="m_wide"), "error", "config and weights do not match"),
    # item 7: unbounded resources
    ("size 20000", _gen("--size", "20000"), "flag", "--size: must be a whole number from 16 to 4096"),
    # the demo, before anything loads
    ("demo port 70000", lambda m, media, tmp: (["demo", "--lazy", "--port", "70000"], None), "flag",
     "--port: must be a whole number from 1 to 65535"),
    ("demo busy port", lambda m, media, tmp: (["demo", "--lazy", "--port", _busy_port(tmp)], None), "error",
     "cannot serve on 127.0.0.1:"),
    # the live call, before anything loads
    ("call steps 0", lambda m, media, tmp: (["call", "--steps", "0"], None), "flag",
     "--steps: must be a whole number from 1 to 1000"),
    ("call busy port", lambda m, media, tmp: (["call", "--port", _busy_port(tmp)], None), "error",
     "cannot serve on 127.0.0.1:"),
    ("call missing portrait", lambda m, media, tmp: (["call", "--portrait", tmp / "nope.png", "--checkpoint", m / "m",
                                                      "--imitator", m / "imi"], None), "error", "file not found"),
    # training flags
    ("train lr nan", lambda m, media, tmp: (["train", "motion", "--data", tmp, "--out", tmp / "run", "--lr", "nan"],
                                            tmp / "run"), "flag", "--lr: must be a finite number"),
    ("train seed 2^32", lambda m, media, tmp: (["train", "imitation", "--data", tmp, "--out", tmp / "run", "--seed",
                                                str(2**32)], tmp / "run"), "flag", "--seed: must be a whole number"),
    ("train region weight -1", lambda m, media, tmp: (["train", "imitation", "--data", tmp, "--out", tmp / "run",
                                                       "--region-weight", "-1"], tmp / "run"), "flag",
     "--region-weight: must be 0 or more"),
]


@pytest.mark.parametrize("case, build, kind, message", MATRIX, ids=[c[0] for c in MATRIX])
def test_matrix(case, build, kind, message, models, media, tmp_path, capsys):
    import torch

    if case == "device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    argv, out = build(models, media, tmp_path)
    argv = [media / "talk.mp4" if a == "AUDIO_MP4" else a for a in argv]
    before_inputs, before_here, before_media = _digest(media, models), _listing(tmp_path), _listing(media)
    try:
        rc = _main(argv)
    finally:
        if hasattr(_busy_port, "held"):
            _busy_port.held.close()
            del _busy_port.held
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if kind == "flag":  # argparse: its usage, then one line naming the flag
        assert lines[-1].startswith("infp ") and ": error: argument " in lines[-1] and message in lines[-1], lines[-1]
    else:
        assert len(lines) == 1 and lines[0].startswith("infp: error: ") and message in lines[0], lines
    assert _digest(media, models) == before_inputs  # inputs untouched
    assert _listing(tmp_path) == before_here and _listing(media) == before_media  # nothing written, nothing left
    if out is not None and out.parent.is_dir() and tmp_path not in out.parents and out.parent != media:
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}") or p == out]  # e.g. /sys


# -- item 8: truncated audio ---------------------------------------------------------------------------

def test_truncated_wav_is_flagged(models, media, tmp_path, caplog):
    assert wav_declared_frames(media / "cut.wav") == SR  # the header still declares the whole second
    with caplog.at_level(logging.WARNING):
        assert _main(_generate(models, media, tmp_path / "out.mp4", audio="cut.wav")) == 0
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("cut.wav" in m and "header declares" in m and "truncated" in m for m in warned), warned
    assert probe(tmp_path / "out.mp4").n_frames == 13  # the half that is there: 0.5 s at 25 fps, rounded up


def test_wav_header_lengths(media, tmp_path):
    assert wav_declared_frames(media / "talk.wav") == int(0.6 * SR)
    assert wav_declared_frames(media / "nan.wav") == int(0.6 * SR)  # float WAV
    assert wav_declared_frames(media / "face.png") is None
    (tmp_path / "stub.wav").write_bytes(b"RIFF")
    assert wav_declared_frames(tmp_path / "stub.wav") is None


# -- item 9: leftovers -------------------------------------------------------------------------------

def _infp_subprocess(argv: list, env: dict, cwd: Path, wait: bool = True):
    cmd = [sys.executable, "-m", "infp", *map(str, argv)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_sigterm_mid_render_leaves_nothing(models, media, tmp_path):
    """SIGTERM is handled like Ctrl-C: the half-written video and the lock go, one line, status 143."""
    out = tmp_path / "out.mp4"
    r = _infp_subprocess(_generate(models, media, out), {FAULT_ENV: "video:after_frame", FAULT_SIGNAL_ENV: "TERM"},
                         tmp_path)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr[-2000:]
    assert "Traceback" not in r.stderr and r.stderr.strip().splitlines()[-1] == "infp: terminated"
    assert os.listdir(tmp_path) == []


def test_a_kill_mid_render_is_cleaned_by_the_next_run(models, media, tmp_path, caplog):
    """SIGKILL leaves the hidden partial video (and the lock file, not the lock); the next run to the
    same --out removes them and succeeds."""
    out = tmp_path / "out.mp4"
    r = _infp_subprocess(_generate(models, media, out), {FAULT_ENV: "video:after_frame", FAULT_SIGNAL_ENV: "KILL"},
                         tmp_path)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    left = set(os.listdir(tmp_path))
    assert ".out.mp4.lock" in left and len(left) == 2, left
    assert re.fullmatch(r"\.out\.[a-z0-9_]{8}\.partial\.mp4", (left - {".out.mp4.lock"}).pop()), left
    with caplog.at_level(logging.INFO):
        assert _main(_generate(models, media, out)) == 0
    assert os.listdir(tmp_path) == ["out.mp4"]
    assert any("left by a run that was killed" in r.getMessage() for r in caplog.records)


def test_clean_partials_takes_only_what_a_writer_of_that_name_left(tmp_path):
    names = [".out.abcd_123.partial.mp4", ".out.b.abcd1234.partial.mp4", "out.mp4", ".out.mp4.lock",
             ".other.abcd1234.partial.mp4", ".out.abcd1234.partial.avi"]
    for n in names:
        (tmp_path / n).write_text("x")
    (tmp_path / ".state.k2j4h5g6.partial").mkdir()
    (tmp_path / ".state.k2j4h5g6.partial" / "x").write_text("x")
    assert [p.name for p in clean_partials(tmp_path / "out.mp4")] == [".out.abcd_123.partial.mp4"]
    assert [p.name for p in clean_partials(tmp_path / "state")] == [".state.k2j4h5g6.partial"]
    assert sorted(os.listdir(tmp_path)) == sorted(set(names) - {".out.abcd_123.partial.mp4"})


def test_demo_deletes_its_files_when_stopped(models, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"TMPDIR": str(tmp)}
    p = _infp_subprocess(["-q", "demo", "--lazy", "--port", port, "--checkpoint", models / "m", "--imitator", models / "imi"],
                         env, tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and p.poll() is None:
            with socket.socket() as c:
                if c.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.3)
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert [d.name[:10] for d in tmp.iterdir()] == ["infp_demo_"]  # its videos and Gradio's copies go here
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "Traceback" not in err
    assert os.listdir(tmp) == []


# -- item 10: one writer per output --------------------------------------------------------------------

def test_second_generate_to_one_out_is_refused(models, media, tmp_path):
    """A first run stopped mid-render (SIGSTOP: it holds the lock) and a second one to the same --out:
    the second fails at once; the first, continued, finishes."""
    out = tmp_path / "out.mp4"
    first = _infp_subprocess(_generate(models, media, out), {FAULT_ENV: "video:after_frame", FAULT_SIGNAL_ENV: "STOP"},
                             tmp_path, wait=False)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(n.endswith(".partial.mp4") for n in os.listdir(tmp_path)):
            assert first.poll() is None, first.communicate()[1][-2000:]
            time.sleep(0.2)
        second = _infp_subprocess(_generate(models, media, out), {}, tmp_path)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines() == [
            f"infp: error: {out}: another infp process is writing this output right now; wait for it to finish "
            "or choose another --out"]
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-2000:]
    assert os.listdir(tmp_path) == ["out.mp4"]


def test_second_training_into_one_run_folder_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    with output_lock(run, folder=True):  # another training holds it
        assert _main(["train", "imitation", "--data", tmp_path, "--out", run, "--preset", "tiny"]) == 2
        assert os.listdir(run) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"infp: error: {run}: another infp process is writing this run folder right now; wait for it "
                   "to finish or choose another --out"]
    assert os.listdir(tmp_path) == []  # the folder the lock made is gone with it


def test_output_lock_is_exclusive_and_leaves_nothing(tmp_path):
    out = tmp_path / "o.mp4"
    with output_lock(out):
        with pytest.raises(InfpError, match="another infp process"), output_lock(out):
            pass
    with output_lock(out):  # released
        pass
    assert os.listdir(tmp_path) == []


# -- item 3: --resume keeps the recorded plan ----------------------------------------------------------

def test_resume_continues_the_recorded_plan(synth_clips, tmp_path, capsys, caplog):
    run = tmp_path / "run"
    train = ["-q", "train", "imitation", "--out", run, "--device", "cpu"]
    assert _main([*train, "--data", synth_clips, "--preset", "tiny", "--steps", "2", "--save-every", "1",
                  "--batch-size", "2", "--no-gan"]) == 0
    recorded = json.loads((run / "run.json").read_text())["train"]
    assert (recorded["steps"], recorded["save_every"]) == (2, 1)
    with caplog.at_level(logging.INFO):
        assert _main([*train, "--resume"]) == 0  # no flags: the run as it was (not 20000 steps, every 500)
    assert json.loads((run / "run.json").read_text())["train"] == recorded
    assert "resuming with" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert _main([*train, "--resume", "--steps", "3"]) == 0  # given: it changes, and the log says so
    assert json.loads((run / "run.json").read_text())["train"] == {**recorded, "steps": 3}
    assert "resuming with steps = 3 (the run recorded 2)" in caplog.text
    assert json.loads((run / "state" / "step.json").read_text())["step"] == 3
    capsys.readouterr()
    assert _main([*train, "--resume", "--lr", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr cannot change" in err[0]


def test_resumed_plan_changes_only_what_is_asked():
    from infp.train.motion import MotionTrainConfig
    from infp.train.run import resumed_plan

    recorded = MotionTrainConfig(steps=100, save_every=10, lr=3e-4)
    assert resumed_plan(recorded, MotionTrainConfig(), {}) == recorded
    assert resumed_plan(recorded, MotionTrainConfig(), {"steps": 200}) == MotionTrainConfig(steps=200, save_every=10, lr=3e-4)
    with pytest.raises(ValueError, match="lr"):
        resumed_plan(recorded, MotionTrainConfig(), {"lr": 1.0})


# -- item 11 and the library behind the flags ----------------------------------------------------------

def test_library_refuses_what_the_flags_refuse(tiny_models):
    import torch

    from infp.diffusion import DiffusionConfig
    from infp.diffusion.sampling import WindowedGenerator
    from infp.models.motion_generator import MotionGenerator

    model = MotionGenerator.from_pretrained(tiny_models / "m")
    z = torch.zeros(model.cfg.motion_dim)
    for kw, match in (({"seed": 2**32}, "seed"), ({"seed": -1}, "seed"), ({"guidance": float("nan")}, "guidance"),
                      ({"steps": 1001}, "sampling steps")):
        with pytest.raises(InfpError, match=match):
            WindowedGenerator(model, DiffusionConfig(), z, **kw)


@pytest.mark.parametrize("stage, flag", [("imitation", ["--detail-weight", "2"]), ("imitation", ["--preset", "tiny"]),
                                         ("motion", ["--band-emphasis", "2"])])
def test_resume_refuses_a_flag_that_would_change_what_the_run_trains(stage, flag, tmp_path, capsys):
    from infp.cli import main

    assert main(["-q", "train", stage, "--out", str(tmp_path / "run"), "--resume", *flag]) == 2
    err = capsys.readouterr().err
    assert "cannot change it" in err and flag[0] in err and "Traceback" not in err and err.count("\n") == 1
