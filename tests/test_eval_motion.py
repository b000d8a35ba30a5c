"""`infp eval motion`: the numeric core on hand-made arrays, and the command end to end on tiny models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from infp.cli import main
from infp.data.motion import imitator_fingerprint
from infp.diffusion import DiffusionConfig
from infp.eval.motion import GT_VIDEO
from infp.eval.motion_metrics import (
    fit_probe,
    floor_from_utterances,
    heldout_r2,
    jump_ratio,
    moving_average,
    nod_scores,
    r2,
    step_sizes,
    turn_changes,
    window_joins,
)
from infp.models import Imitator, imitator_preset
from infp.models.motion_config import motion_preset
from infp.models.motion_generator import MotionGenerator


def _mask(n: int, *spans: tuple[int, int]) -> np.ndarray:
    m = np.zeros(n, bool)
    for a, b in spans:
        m[a:b] = True
    return m


def test_turn_changes_across_gaps_and_overlaps():
    # agent 0-9, gap, partner 13-21 (both speak 20-21), agent alone from 22, partner again from 33 after a gap
    agent = _mask(40, (0, 10), (20, 30))
    partner = _mask(40, (13, 22), (33, 40))
    assert turn_changes(agent, partner).tolist() == [13, 22, 33]
    assert turn_changes(agent, np.zeros(40, bool)).tolist() == []  # one speaker only: no change
    assert turn_changes(np.zeros(5, bool), np.zeros(5, bool)).tolist() == []


def test_backchannels_do_not_take_the_turn():
    utterances = [[0, 0.0, 1.0, False], [1, 0.5, 0.7, True], [1, 1.2, 2.0, False], [0, 2.1, 2.3, True]]
    agent, partner = floor_from_utterances(utterances, 60)
    assert agent.tolist() == _mask(60, (0, 25)).tolist()
    assert partner.tolist() == _mask(60, (30, 50)).tolist()
    assert turn_changes(agent, partner).tolist() == [30]


def test_window_joins_follow_the_sampler():
    assert window_joins(50, 12).tolist() == [12, 24, 36, 48]  # the last window moved back to end at 50
    assert window_joins(50, 12, overlap=4).tolist() == [12, 20, 28, 36, 44]
    assert window_joins(48, 12).tolist() == [12, 24, 36]
    assert window_joins(10, 12).tolist() == []


def test_jump_ratio_is_one_for_a_random_walk_and_large_at_a_jump():
    rng = np.random.default_rng(0)
    z = np.cumsum(rng.normal(size=(500, 16)), axis=0)
    joins = window_joins(500, 50)
    assert abs(jump_ratio(step_sizes(z), joins) - 1) < 0.25
    assert abs(jump_ratio(step_sizes(z), joins, radius=2) - 1) < 0.2
    jumped = z.copy()
    for j in joins:
        jumped[j:] += 20.0  # an offset at every join: the new window starts elsewhere
    assert jump_ratio(step_sizes(jumped), joins) > 5
    assert math.isnan(jump_ratio(step_sizes(z), np.zeros(0, int)))
    z[100] = np.nan  # a missing frame spoils its two steps, nothing else
    d = step_sizes(z)
    assert np.isnan(d[[0, 100, 101]]).all() and np.isfinite(d[102:]).all()
    assert np.isfinite(jump_ratio(d, np.array([100, 200])))


def test_probe_recovers_a_linear_map():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(400, 8)) * rng.uniform(0.1, 3, 8) + rng.normal(size=8)
    w = rng.normal(size=(8, 2))
    y = z @ w + np.array([0.5, -2.0])
    z[::37] = np.nan  # frames without a face are skipped
    probe = fit_probe(z, y, lam=1e-6)
    pred = probe(z)
    assert np.isnan(pred[::37]).all()
    np.testing.assert_allclose(r2(y, pred), 1.0, atol=1e-6)
    halves = [z[:200], z[200:]], [y[:200], y[200:]]
    np.testing.assert_allclose(heldout_r2(*halves, lam=1e-6), 1.0, atol=1e-6)
    assert np.isnan(heldout_r2([z], [y])).all()
    noise = r2(rng.normal(size=(400, 2)), fit_probe(z, rng.normal(size=(400, 2)))(z))
    assert (noise < 0.1).all()


def test_nod_metric_sees_oscillation_only_where_nods_are():
    n, fps = 250, 25
    t = np.arange(n) / fps
    nod = _mask(n, (50, 75), (150, 180))
    listening = _mask(n, (40, 200))
    pitch = np.where(nod, 6 * np.sin(2 * np.pi * 2.2 * t), 0.0) + 0.05 * np.random.default_rng(2).normal(size=n)
    got = nod_scores(pitch, nod, listening, ~listening, fps)
    assert got.corr > 0.7 and got.speed_listening > 5 * got.speed_speaking
    assert got.corr_listening > 0.7 and got.ratio > 10
    still = nod_scores(np.zeros(n), nod, listening, ~listening, fps)
    assert math.isnan(still.corr) and math.isnan(still.ratio)  # no motion at all: nothing to speak of
    flat = nod_scores(0.05 * np.random.default_rng(3).normal(size=n), nod, listening, ~listening, fps)
    assert abs(flat.corr) < 0.3 and abs(flat.corr_listening) < 0.3 and 0.7 < flat.ratio < 1.4
    # a head that moves a lot while speaking drags the whole-clip correlation below zero, not the others
    lively = pitch + np.where(~listening, 10 * np.sin(2 * np.pi * 3.1 * t), 0.0)
    busy = nod_scores(lively, nod, listening, ~listening, fps)
    assert busy.corr < got.corr - 0.3 and busy.corr_listening > 0.7 and busy.ratio > 10
    m = moving_average(np.array([1.0, np.nan, 3.0]), 3)
    np.testing.assert_allclose(m, [1.0, 2.0, 3.0])


def test_cli_end_to_end(synth_clips, tiny_models, tmp_path):
    out = tmp_path / "out"
    rc = main(["-q", "eval", "motion", "--checkpoint", str(tiny_models / "m"), "--names", "full",
               "--imitator", str(tiny_models / "imi"), "--data", str(synth_clips), "--out", str(out),
               "--steps", "2", "--video", "1", "--device", "cpu"])
    assert rc == 0
    report = (out / "report.md").read_text()
    assert "| metric | GT video | GT latents (rendered) | full (rendered) | GT latents (probe) | full (probe) |" in report
    results = json.loads((out / "results.json").read_text())
    gt = results["overall"][GT_VIDEO]
    for key in ("face_found", "mouth_vs_agent", "mouth_speaking", "pitch_speed_speaking", "join_jump"):
        assert gt[key] is not None and math.isfinite(gt[key]), key
    assert gt["mouth_vs_agent"] > 0.5, "the synthetic mouth follows the agent's own speech"
    assert results["probe_r2"]["mouth"] is not None
    assert results["overall"]["full (probe)"]["latent_spread"] > 0
    clip = results["clips"][0]["id"]
    for name in ("full", "gt_latents"):
        assert (out / f"{clip}_{name}.mp4").stat().st_size > 0


def test_fingerprint_mismatch_is_an_error(synth_clips, tiny_models, tmp_path, capsys):
    torch.manual_seed(1)
    Imitator(imitator_preset("tiny")).save_pretrained(tmp_path / "other")
    rc = main(["eval", "motion", "--checkpoint", str(tiny_models / "m"), "--imitator", str(tmp_path / "other"),
               "--data", str(synth_clips), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "pass --imitator with the stage-1 checkpoint it was trained with" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_data_without_ground_truth_is_an_error(tiny_models, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["eval", "motion", "--checkpoint", str(tiny_models / "m"), "--imitator", str(tiny_models / "imi"),
               "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    assert rc == 2 and "infp synth" in capsys.readouterr().err


@pytest.mark.parametrize("overrides, message", [
    ({"motion_dim": 8}, "8-dim motion latents; the imitator's are 16-dim"),
    ({"audio_features": "hubert-local-Llast", "audio_input_dim": 768}, "pass --speech-model DIR"),
])
def test_checkpoints_that_do_not_fit_are_errors(synth_clips, tiny_models, tmp_path, capsys, overrides, message):
    MotionGenerator(motion_preset("tiny", **overrides)).save_pretrained(
        tmp_path / "m", diffusion=DiffusionConfig().to_dict(),
        training={"imitator_fingerprint": imitator_fingerprint(tiny_models / "imi")})
    rc = main(["eval", "motion", "--checkpoint", str(tmp_path / "m"), "--imitator", str(tiny_models / "imi"),
               "--data", str(synth_clips), "--out", str(tmp_path / "out")])
    assert rc == 2 and message in capsys.readouterr().err


def test_unrecorded_imitator_is_a_warning_and_no_render_skips_videos(synth_clips, tiny_models, tmp_path, caplog):
    MotionGenerator(motion_preset("tiny")).save_pretrained(tmp_path / "run" / "checkpoint")  # no training card
    out = tmp_path / "out"
    rc = main(["eval", "motion", "--checkpoint", str(tmp_path / "run" / "checkpoint"), "--imitator",
               str(tiny_models / "imi"), "--data", str(synth_clips), "--out", str(out), "--steps", "1", "--no-render"])
    assert rc == 0 and "does not record the imitator" in caplog.text
    results = json.loads((out / "results.json").read_text())
    assert results["columns"] == [GT_VIDEO, "GT latents (probe)", "run (probe)"]  # named after its run
    assert not list(out.glob("*.mp4"))


def test_clip_labels_name_the_folder_only_when_ids_collide(tmp_path):
    from types import SimpleNamespace

    from infp.data.clip import Clip
    from infp.eval.motion import clip_labels

    def clip(folder: str, cid: str) -> Clip:
        return Clip(tmp_path / folder / cid, SimpleNamespace(id=cid))

    assert clip_labels([clip("a", "clip_00000"), clip("a", "clip_00001")]) == ["clip_00000", "clip_00001"]
    # two `infp synth` folders both start at clip_00000: the report and the videos must tell them apart
    labels = clip_labels([clip("eval", "clip_00000"), clip("eval_real", "clip_00000")])
    assert labels == ["eval/clip_00000", "eval_real/clip_00000"]
