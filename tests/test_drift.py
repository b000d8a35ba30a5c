"""Long-call drift: `infp eval drift` measures blocks of a long call (hand-made cases and the tiny models
end to end)."""

from __future__ import annotations

import json
import math

import numpy as np

from infp import FPS, SAMPLE_RATE
from infp.cli import main
from infp.eval.drift import CLOSED, drift_blocks, syllable_bursts


def test_syllable_bursts_take_turns():
    agent, partner = syllable_bursts(12.0, seed=3)
    assert agent.shape == partner.shape == (12 * SAMPLE_RATE,) and agent.dtype == np.float32
    turn = 4 * SAMPLE_RATE
    assert np.all(partner[:turn] == 0) and np.all(agent[turn: 2 * turn] == 0) and np.all(partner[2 * turn:] == 0)
    assert 0.03 < agent[:turn].std() < 0.1 and np.any(agent[:turn] == 0), "speech-loud bursts with gaps"


def test_drift_blocks_on_a_hand_made_call():
    t = 4 * FPS  # 4 s in blocks of 2 s
    eyes = np.ones((t, 2))
    eyes[3 * FPS:, 0] = 0.5  # the right eye half-closed over the last second
    mouth = np.full(t, 0.1)
    distance = np.concatenate([np.full(2 * FPS, 1.0), np.full(2 * FPS, 2.0)])
    first, second = drift_blocks(eyes, mouth, distance, block_s=2.0)
    assert (first.start_s, second.start_s) == (0.0, 2.0)
    assert first.eye == 1 and first.eye_closed == 0 and first.latent == 1
    assert second.eye_closed == 0.5 and 0.5 < CLOSED
    assert math.isclose(second.eye, 0.875) and math.isclose(second.eye_min, 0.75) and math.isclose(second.latent, 2.0)
    assert math.isclose(second.mouth, 0.1)
    # a last stretch shorter than half a block joins the block before it
    assert len(drift_blocks(eyes[:110], mouth[:110], distance[:110], block_s=2.0)) == 2


def test_eval_drift_end_to_end(tiny_models, tmp_path):
    out = tmp_path / "drift"
    assert main(["eval", "drift", "--checkpoint", str(tiny_models / "m"), "--imitator", str(tiny_models / "imi"),
                 "--names", "tiny", "--seconds", "6", "--block", "2", "--steps", "1", "--input", "bursts", "--live",
                 "--out", str(out), "--device", "cpu"]) in (0, None)
    report = json.loads((out / "drift.json").read_text())
    assert report["input"] == "bursts" and report["settings"]["live"]
    (model,) = report["models"]
    assert model["name"] == "tiny" and [b["start_s"] for b in model["blocks"]] == [0, 2, 4]
    assert all(np.isfinite(b["eye"]) and b["latent"] >= 0 for b in model["blocks"])
    assert (out / "drift.png").stat().st_size > 0 and "Long-call drift" in (out / "drift.md").read_text()
