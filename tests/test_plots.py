"""The evaluation report's PNG plots (infp.eval.plots)."""

from __future__ import annotations

import cv2
import numpy as np

from infp.eval.plots import AGENT_COLOUR, PARTNER_COLOUR, bars_png, timeline_png


def _bgr(hex_colour: str) -> np.ndarray:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return np.array([b, g, r], dtype=int)


def _mask(image: np.ndarray, hex_colour: str, tol: int = 12) -> np.ndarray:
    return (np.abs(image.astype(int) - _bgr(hex_colour)).max(axis=2) <= tol)


def _series(t: int, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    mouth = {"GT video": rng.random(t), "ours": rng.random(t), "baseline": rng.random(t)}
    pitch = {name: rng.normal(0, 5, t) for name in mouth}
    return mouth, pitch


def test_timeline_size_and_agent_band_only_where_agent_speaks(tmp_path):
    t = 250
    agent = np.zeros(t, bool)
    agent[:t // 2] = True  # the agent speaks in the first half only
    partner = ~agent
    mouth, pitch = _series(t)
    out = timeline_png(tmp_path / "timeline.png", agent, partner, mouth, pitch, title="demo", reference="GT video")
    assert out == tmp_path / "timeline.png"
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (600, 1200, 3)

    top = image[: image.shape[0] // 3]  # row 1 (the voice bands) lies in the top third
    agent_px, partner_px = _mask(top, AGENT_COLOUR), _mask(top, PARTNER_COLOUR)
    # a band column holds dozens of band pixels; the legend's small patches hold a few: count columns
    agent_cols = np.flatnonzero(agent_px.sum(axis=0) >= 30)
    partner_cols = np.flatnonzero(partner_px.sum(axis=0) >= 30)
    assert len(agent_cols) > 300 and len(partner_cols) > 300
    # the two bands tile the whole time axis: together they give its extent in pixels
    both = np.union1d(agent_cols, partner_cols)
    mid = (both.min() + both.max()) / 2
    assert agent_cols.max() <= mid + 3  # agent colour only in the first half ...
    assert partner_cols.min() >= mid - 3  # ... partner colour only in the second
    assert agent_px[:, int(mid) + 10:].sum() < 0.02 * agent_px[:, : int(mid)].sum()  # legend patch at most
    # the agent band sits above the partner band
    assert np.median(np.nonzero(agent_px)[0]) < np.median(np.nonzero(partner_px)[0])

def test_timeline_nan_gaps_single_frame_and_no_reference(tmp_path):
    t = 100
    mouth, pitch = _series(t, seed=1)
    mouth["ours"][20:40] = np.nan
    pitch["baseline"][:] = np.nan
    voice = np.zeros(t, bool)
    out = timeline_png(tmp_path / "gaps.png", voice, voice, mouth, pitch, fps=25)
    assert cv2.imread(str(out)).shape == (600, 1200, 3)

    one = timeline_png(tmp_path / "one.png", np.ones(1, bool), np.zeros(1, bool),
                       {"a": np.array([0.3])}, {"a": np.array([np.nan])}, reference="a")
    assert cv2.imread(str(one)).shape == (600, 1200, 3)
    empty = timeline_png(tmp_path / "sub" / "empty.png", np.zeros(0, bool), np.zeros(0, bool), {}, {})
    assert cv2.imread(str(empty)).shape == (600, 1200, 3)


def test_timeline_in_a_loop_leaves_no_open_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = len(plt.get_fignums())
    mouth, pitch = _series(50)
    voice = np.arange(50) % 10 < 5
    for i in range(30):
        timeline_png(tmp_path / f"t{i % 2}.png", voice, ~voice, mouth, pitch)
    assert len(plt.get_fignums()) == before == 0


def test_bars_with_nan_are_drawn(tmp_path):
    metrics = {
        "LSE-C": {"ours": 6.123456, "baseline": 4.2, "GT video": 7.0},
        "LSE-D": {"ours": 8.1, "baseline": float("nan"), "GT video": 7.2},
        "pitch std (deg)": {"ours": -1.5, "baseline": 2.0},
        "FID": {"ours": float("nan"), "baseline": float("nan")},
        "SSIM": {"ours": 0.81},
    }
    out = bars_png(tmp_path / "bars.png", metrics, title="metrics", ncols=3)
    image = cv2.imread(str(out))
    assert image is not None
    h, w = image.shape[:2]
    assert (w, h) == (900, 560)  # 3 columns x 2 rows: (3 * 3 in, 2 * 2.4 + 0.8 in) at 100 dpi
    assert (image < 250).any(axis=2).mean() > 0.02  # not blank
    # a bigger grid gives a bigger image
    wide = cv2.imread(str(bars_png(tmp_path / "wide.png", {f"m{i}": {"a": i} for i in range(8)})))
    assert wide.shape[:2] == (int(round((2 * 2.4 + 0.8) * 100)), 1200)
    assert cv2.imread(str(bars_png(tmp_path / "none.png", {}))) is not None
