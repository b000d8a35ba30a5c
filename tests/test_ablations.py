"""scripts/ablations.py on tiny recipes: every recipe is trained (stage 1 again where it says so), a
second run resumes instead of training again, the one-track pair becomes the switching baseline, and one
table holds every model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ablations.py"
TINY_MOTION = "--preset tiny --steps 2 --batch-size 2 --one-sided-steps 1 --device cpu"


@pytest.fixture(scope="module")
def ablations():
    spec = importlib.util.spec_from_file_location("ablations", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recipes(folder: Path) -> Path:
    folder.mkdir()
    cache = folder.parent / "cache"  # one latent cache for the runs on the bundled stage 1 (faster)
    motion = lambda extra="": f'[motion]\ndata = ["clips"]\nargs = "{TINY_MOTION} --cache {cache} {extra}"\n'  # noqa: E731
    (folder / "full.toml").write_text('description = "full"\n' + motion())
    (folder / "no_memory.toml").write_text('description = "no memory"\n' + motion("--no-memory"))
    (folder / "speaker.toml").write_text('description = "speaker"\n' + motion("--hears agent"))
    (folder / "listener.toml").write_text('description = "listener"\n' + motion("--hears partner"))
    (folder / "intact.toml").write_text(
        'description = "intact"\n[imitation]\ndata = ["clips"]\n'
        'args = "--preset tiny --steps 2 --batch-size 2 --device cpu --representation intact"\n' + motion())
    return folder


def test_recipes_train_resume_and_report_in_one_table(ablations, synth_clips, tmp_path, capsys):
    import subprocess

    recipes = _recipes(tmp_path / "recipes")
    root = synth_clips.parent
    (root / "clips").exists() or (root / "clips").symlink_to(synth_clips)
    args = ["--recipes", str(recipes), "--data-root", str(root), "--runs", str(tmp_path / "runs"), "--eval", "clips",
            "--out", str(tmp_path / "out"), "--eval-args", "--steps 2 --no-image --videos 0 --no-plots --device cpu"]
    assert ablations.main(args) == 0
    table = json.loads((tmp_path / "out" / "ablations.json").read_text())
    assert set(table) == {"full", "no_memory", "switching", "intact"}
    assert table["intact"]["stage1"].endswith("intact/imitation/checkpoint") and table["full"]["stage1"] == "bundled"
    assert table["switching"]["description"].startswith("explicit switching")
    assert table["full"]["role contrast"] is None or table["full"]["role contrast"] >= 0
    md = (tmp_path / "out" / "ablations.md").read_text()
    assert "| intact (intact) |" in md and "| switching (explicit switching" in md
    from infp.models.motion_generator import MotionGenerator

    assert not MotionGenerator.from_pretrained(tmp_path / "runs" / "no_memory" / "motion" / "checkpoint").cfg.use_memory
    # a second run resumes every run (each is done: nothing trains again) and rebuilds the table
    capsys.readouterr()
    assert ablations.main(args + ["--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("--resume") == 6 and "--no-memory" not in printed
    with pytest.raises(subprocess.CalledProcessError):  # a failing command stops the script
        ablations.main([*args[:-2], "--eval-args", "--steps 0"])


def test_unknown_recipe_is_refused(ablations, tmp_path):
    recipes = _recipes(tmp_path / "recipes")
    with pytest.raises(SystemExit, match="no recipe nope"):
        ablations.main(["--recipes", str(recipes), "--data-root", str(tmp_path), "--runs", str(tmp_path / "r"),
                        "--eval", "x", "--out", str(tmp_path / "o"), "--only", "nope"])
