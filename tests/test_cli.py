"""The `infp` command: `synth` end to end, and user errors reported as one line without a traceback."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from infp import __version__
from infp.cli import main
from infp.data.clip import Clip

SYNTH = ["--count", "1", "--seconds", "2", "--size", "128", "--seed", "1"]


def _infp() -> list[str]:
    """The installed console script beside this interpreter (the venv's `bin/infp`)."""
    exe = Path(sys.executable).parent / "infp"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("infp")
    if found is None:
        pytest.skip("the `infp` console script is not installed (pip install -e .)")
    return [found]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_infp(), *args], capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def _error_line(err: str) -> str:
    """The one line a user error prints; no traceback, nothing else from Python."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("infp: error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------ in-process


def test_synth_in_process(tmp_path: Path, capsys) -> None:
    out = tmp_path / "clips"
    assert main(["synth", "--out", str(out), *SYNTH]) == 0
    clip = Clip.open(out / "clip_00000")
    assert clip.meta.n_frames == 50 and clip.meta.size == 128 and clip.meta.face_found > 0.9
    assert clip.video.is_file() and (out / "clip_00000" / "behaviour.npz").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["clip_00000"]
    assert "Traceback" not in capsys.readouterr().err
    # Running it again keeps the clip (nothing re-rendered) and succeeds.
    mtime = (out / "clip_00000" / "video.mp4").stat().st_mtime_ns
    assert main(["-q", "synth", "--out", str(out), *SYNTH]) == 0
    assert (out / "clip_00000" / "video.mp4").stat().st_mtime_ns == mtime


def test_version_and_help(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and __version__ in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["synth", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--out", "--portraits", "--speech", "--count", "--seconds", "--seed", "--size"):
        assert flag in text


@pytest.fixture
def faceless_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "faceless"
    folder.mkdir()
    cv2.imwrite(str(folder / "blank_wall.png"), np.full((300, 300, 3), 128, np.uint8))
    return folder


def test_missing_portraits_folder(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "no_such_folder"
    assert main(["synth", "--out", str(tmp_path / "o"), "--portraits", str(missing), *SYNTH]) != 0
    line = _error_line(capsys.readouterr().err)
    assert str(missing) in line
    assert not (tmp_path / "o" / "clip_00000").exists()


def test_portraits_folder_without_a_face(tmp_path: Path, faceless_folder: Path, capsys, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        rc = main(["synth", "--out", str(tmp_path / "o"), "--portraits", str(faceless_folder), *SYNTH])
    assert rc != 0
    line = _error_line(capsys.readouterr().err)
    assert str(faceless_folder) in line
    assert any("blank_wall.png" in r.getMessage() for r in caplog.records)  # the skipped image is named
    assert not (tmp_path / "o" / "clip_00000").exists()


@pytest.mark.parametrize("content", ["text", "fake_wav"])
def test_speech_folder_without_audio(tmp_path: Path, capsys, caplog, content: str) -> None:
    folder = tmp_path / "speech"
    folder.mkdir()
    bad = folder / ("notes.txt" if content == "text" else "voice.wav")
    bad.write_text("hello, this is not audio\n" * 20)
    with caplog.at_level(logging.WARNING):
        rc = main(["synth", "--out", str(tmp_path / "o"), "--speech", str(folder), *SYNTH])
    assert rc != 0
    line = _error_line(capsys.readouterr().err)
    assert str(folder) in line
    if content == "fake_wav":  # the undecodable file is named: in the error, or in a warning that skips it
        assert bad.name in line or any(bad.name in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "o" / "clip_00000").exists()


@pytest.mark.parametrize(
    ("flag", "value"), [("--seconds", "0"), ("--seconds", "-2"), ("--count", "0"), ("--size", "-128")]
)
def test_bad_numbers_are_argparse_errors(tmp_path: Path, capsys, flag: str, value: str) -> None:
    argv = ["synth", "--out", str(tmp_path / "o"), *SYNTH, flag, value]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("infp synth: error:") and flag in last and "must be positive" in last
    assert not (tmp_path / "o").exists()


def test_missing_required_flag(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["synth"])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err


# ------------------------------------------------------------------------------ installed script


def test_installed_script_help(tmp_path: Path) -> None:
    res = _run(["--help"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "synth" in res.stdout and "Traceback" not in res.stderr


def test_installed_script_synth_end_to_end(tmp_path: Path) -> None:
    res = _run(["synth", "--out", "clips", *SYNTH], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    assert "wrote 1 clip" in res.stderr  # the summary line, logged at INFO without -q
    clip = Clip.open(tmp_path / "clips" / "clip_00000")
    assert clip.meta.n_frames == 50 and clip.meta.face_found > 0.9


def test_installed_script_user_error_is_one_line(tmp_path: Path) -> None:
    res = _run(["synth", "--out", "clips", "--portraits", "nowhere", *SYNTH], tmp_path)
    assert res.returncode != 0
    assert "nowhere" in _error_line(res.stderr)
    assert res.stdout == ""
