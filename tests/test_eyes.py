"""The renderer's eyes: eyelids split at the eye's midline in the keypoint prior, a second decoder window
on the eyes, blink pairs for training, and `infp eval imitation --eyes`."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from infp.models import Imitator, imitator_preset
from infp.models import keypoint_layout as kl
from infp.models.decoder import placed
from infp.models.warping import keypoint_flow, warp

TINY_EYES = imitator_preset("tiny", paint_eyes=True, keypoint_lid_sides=True)


def _blink(closed: float) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One eye of 9 lid keypoints a side: open in the source (upper lid 0.12 above the lower), the
    upper lid brought down by `closed` of that in the driving frame."""
    x = torch.linspace(-0.3, 0.3, 9)
    bulge = 1 - x.abs() / 0.3  # 0 at the corners, which lie on the lower lid's line
    lower = torch.stack([x, torch.zeros(9)], -1)
    upper_src = torch.stack([x, -0.12 * bulge], -1)
    upper_drv = torch.stack([x, -0.12 * (1 - closed) * bulge], -1)
    k_src, k_drv = torch.cat([upper_src, lower])[None], torch.cat([upper_drv, lower])[None]  # (1, 18, 2)
    arcs = (torch.arange(9), torch.tensor([0, *range(10, 17), 8]))  # the corners shared by both lids
    return k_src, k_drv, arcs


def test_split_lids_bring_the_upper_lid_down_over_the_eye():
    """A blink brings the upper lid onto the lower one. A plain spread averages the two lids' opposite
    motions there, so the pixels just above the lid line read the middle of the source's eye (the
    eye stays half open); split at the midline they read the source's upper lid."""
    k_src, k_drv, arcs = _blink(closed=1.0)
    size = 64
    plain, _ = keypoint_flow(k_src, k_drv, size, 0.05)
    split, _ = keypoint_flow(k_src, k_drv, size, 0.05, sides=[arcs])
    row, col = size // 2 - 2, size // 2  # a pixel 1.5 px above the closed eye's centre (y = -0.047)
    need = -0.12  # where the source's upper lid was, relative to the lid line
    assert float(split[0, 1, row, col]) < 0.8 * need  # reads above the source's upper lid (-0.047 - 0.1)
    assert float(plain[0, 1, row, col]) > 0.5 * need  # reads inside the source's eye
    below = size // 2 + 1
    assert abs(float(split[0, 1, below, col])) < 0.02  # under the lid line, the lower lid stays


def test_eye_window_paints_around_the_eyes_and_nowhere_else():
    """With `paint_eyes` the decoder paints a second window of the same size centred on the driving
    eyes; its region holds the driving eyes' opening; outside the two regions the output is the
    source's pixels; the windows' masks add into one image."""
    from infp.models.imitator import eye_change, paint_region

    torch.manual_seed(3)
    m = Imitator(TINY_EYES).eval()
    with torch.no_grad():
        for d in (m.decoder, m.eye_decoder):
            d.out.bias[3] = 20.0  # the mask open wherever it may be
        x = torch.rand(2, 3, m.cfg.size, m.cfg.size)
        z = torch.randn(4, m.cfg.motion_dim) * 0.3
        r = m.render(m.encode_appearance(x), z[:2], z[2:])
    h, w = (round(f * m.cfg.size) for f in m.cfg.paint_window)
    assert r.synthesis.mask.shape == (4, 1, h, w)  # two windows an image, window-major
    drv, win = r.keypoints.driving, r.synthesis.window
    eyes = drv[:, list(kl.RIGHT_EYE) + list(kl.LEFT_EYE)]  # (2, 32, 2)
    centre = ((eyes.amin(1) + eyes.amax(1)) / 2 + 1) * m.cfg.size / 2  # (2, 2) x, y pixels
    cell = 2**m.cfg.feature_down
    assert ((win.left[2:] + w / 2 - centre[:, 0]).abs() <= cell / 2 + 1e-4).all() or (win.left[2:] == 0).any()
    assert ((win.top[2:] + h / 2 - centre[:, 1]).abs() <= cell / 2 + 1e-4).all() or (win.top[2:] == 0).any()
    eye_win = type(win)(win.top[2:], win.left[2:], h, w, win.size)
    gate = eye_change(r.keypoints.source, drv)  # (2, 1, 1, 1)
    for idx in (kl.RIGHT_EYE, kl.LEFT_EYE):  # the driving eyes' opening may be painted, as far as the eyes change
        opening = paint_region(drv[:, list(idx)], eye_win) * gate
        assert (r.synthesis.mask[2:] >= opening - 1e-5).all()
    colour, mask = placed(r.synthesis, 2)
    assert mask.shape == (2, 1, m.cfg.size, m.cfg.size) and float(mask.max()) <= 1
    outside = mask == 0
    assert outside.float().mean() > 0.5
    warped = warp(x, r.flow.flow, "bicubic")
    assert (r.image - warped).abs()[outside.expand_as(warped)].max() < 1e-5


def test_eyes_are_painted_only_where_their_opening_changes(face_crop):
    """The eye window's region is gated by how far each eye's opening (area over squared corner
    distance) changes: an eye that keeps its opening stays the source's sharp pixels, whatever the
    head's scale; a blink opens the gate fully."""
    from infp.data.pairs import keypoints
    from infp.models.imitator import EYE_CHANGE, eye_change

    size = face_crop.image.shape[0]
    kp = torch.from_numpy(keypoints(face_crop.points.astype(np.float32), size)).float()[None]  # (1, K, 2)
    assert float(eye_change(kp, kp)) == 0
    assert float(eye_change(kp, kp * 0.8)) < 1e-6  # the same face, smaller: no change
    blink = kp.clone()
    for up, low in ((kl.RIGHT_EYELID_UPPER, kl.RIGHT_EYELID_LOWER), (kl.LEFT_EYELID_UPPER, kl.LEFT_EYELID_LOWER)):
        lid, floor = list(up[1:-1]), kp[0, list(low[1:-1]), 1].mean()
        blink[0, lid, 1] = floor - 0.1 * (floor - kp[0, lid, 1])  # the upper lids 90% of the way down
    assert float(eye_change(kp, blink)) == 1 and float(eye_change(blink, kp)) == 1  # closing and opening
    half = kp + (blink - kp) * (sum(EYE_CHANGE) / 2 / 0.9)  # the lids a change between the bounds down
    assert 0 < float(eye_change(kp, half)) < 1


def test_placed_with_one_window_is_the_window_itself():
    """The fold over windows leaves one window's painting as it was (the shipped mouth-only checkpoints
    render exactly as before)."""
    from infp.models.decoder import Synthesis
    from infp.models.warping import Window

    top, left = torch.tensor([8, 16]), torch.tensor([0, 24])
    s = Synthesis(torch.rand(2, 3, 16, 24), torch.rand(2, 1, 16, 24), Window(top, left, 16, 24, 64))
    colour, mask = placed(s, 2)
    torch.testing.assert_close(colour, s.window.place(s.synthesis))
    torch.testing.assert_close(mask, s.window.place(s.mask))
    two = Synthesis(torch.cat([s.synthesis, s.synthesis + 1]), torch.cat([s.mask, torch.zeros_like(s.mask)]),
                    Window(torch.cat([top, top + 16]), torch.cat([left, left]), 16, 24, 64))
    colour2, mask2 = placed(two, 2)
    torch.testing.assert_close(mask2, mask)  # a closed second window adds nothing
    inside = mask > 0
    torch.testing.assert_close(colour2[inside.expand_as(colour2)], colour[inside.expand_as(colour)])


def test_the_eye_window_has_its_own_decoder_and_the_mouth_renders_as_before():
    """`paint_eyes` adds one tensor group, the eye window's decoder; the mouth window is painted by the
    mouth-only model's decoder exactly as before (so training the eyes cannot move the mouth), and the
    eye window by the other one."""
    torch.manual_seed(1)
    base = Imitator(replace(TINY_EYES, paint_eyes=False, keypoint_lid_sides=False)).eval()
    eyes = Imitator(replace(TINY_EYES, keypoint_lid_sides=False)).eval()
    state = base.state_dict()
    assert set(eyes.state_dict()) - set(state) == {"eye_" + k for k in state if k.startswith("decoder.")}
    with torch.no_grad():
        for d in (base.decoder, eyes.eye_decoder):
            d.out.weight.normal_(std=0.05)
        eyes.load_state_dict({**state, **{k: v for k, v in eyes.state_dict().items() if k.startswith("eye_")}})
        x = torch.rand(1, 3, 64, 64)
        for _ in range(20):  # motion codes until the eyes change (the eye window paints)
            z = torch.randn(2, base.cfg.motion_dim)
            b = eyes.render(eyes.encode_appearance(x), z[:1], z[1:])
            if b.synthesis.mask.shape[0] == 2:
                break
        a = base.render(base.encode_appearance(x), z[:1], z[1:])
    assert a.synthesis.mask.shape[0] == 1 and b.synthesis.mask.shape[0] == 2
    torch.testing.assert_close(b.synthesis.synthesis[:1], a.synthesis.synthesis, atol=0, rtol=0)
    torch.testing.assert_close(b.synthesis.mask[:1], a.synthesis.mask, atol=0, rtol=0)
    with torch.no_grad():  # the eye window is the eye decoder's: the mouth decoder's weights do not reach it
        base_eye = b.synthesis.synthesis[1:].clone()
        eyes.decoder.out.bias[:3] += 0.5
        again = eyes.render(eyes.encode_appearance(x), z[:1], z[1:])
    torch.testing.assert_close(again.synthesis.synthesis[1:], base_eye)
    assert not torch.allclose(again.synthesis.synthesis[:1], b.synthesis.synthesis[:1])
    with pytest.raises(ValueError, match="paint_eyes"):
        imitator_preset("tiny", paint_eyes=True, paint_window=(1.0, 1.0))


def test_eye_pairs_draw_blinks_both_ways():
    """`eye_pairs`: the driving frame is drawn for an eye unlike the source's, and half the time the
    two swap, so the closed eye is the source (a photo's half-closed eyes to open)."""
    from infp.data.pairs import draw_pair

    frames = np.arange(100)
    eyes = np.full(100, 0.3)
    eyes[[10, 60]] = 0.03  # two blink frames
    rng = np.random.default_rng(0)
    pairs = np.array([draw_pair(rng, frames, None, 0.0, eyes, 1.0) for _ in range(400)])
    blink_driving = np.isin(pairs[:, 1], [10, 60]).mean()
    blink_source = np.isin(pairs[:, 0], [10, 60]).mean()
    assert 0.35 < blink_driving < 0.65 and 0.35 < blink_source < 0.65  # uniform pairs: 2% each
    rng = np.random.default_rng(0)
    plain = [draw_pair(rng, frames, None, 0.0) for _ in range(50)]
    rng = np.random.default_rng(0)
    assert plain == [draw_pair(rng, frames, None, 0.0, eyes, 0.0) for _ in range(50)]  # off: as before


def test_eval_eyes_renders_blinks_and_open_frames(synth_clips, tmp_path):
    """`infp eval imitation --eyes`: blink frames from the widest-open one, open frames from the most
    closed one; report, JSON and sheet."""
    from infp.cli import main
    from infp.data.clip import list_clips
    from infp.data.pairs import load_clip_frames
    from infp.eval.eyes import EyeScores, eye_cases, pooled
    from infp.eval.real import BLINK_CLOSE
    from infp.face.expression import eye_opening

    clip = load_clip_frames(list_clips(synth_clips)[0], 64)
    eye = eye_opening(clip.points.astype(np.float64))
    median, b_src, blinks, o_src, opens = eye_cases(clip, 2)
    assert eye[b_src] == np.nanmax(eye[clip.usable]) and (eye[blinks] < BLINK_CLOSE * median).all()
    if o_src is not None:
        assert eye[o_src] == np.nanmin(eye[clip.usable]) and (eye[opens] > median).all()
    a = EyeScores("a", 0.3, 10, 0.2, 0.6, 0.3, 0, float("nan"), float("nan"), float("nan"), 1.0)
    b = EyeScores("b", 0.3, 30, 0.4, 0.8, 0.1, 20, 0.3, 1.2, 0.7, 0.5)
    p = pooled([a, b])
    assert p.blink_frames == 40 and abs(p.blink_model - 0.75) < 1e-9 and abs(p.blink_closed - 0.15) < 1e-9
    assert p.open_frames == 20 and p.open_model == 0.7 and abs(p.found - (10 + 25) / 60) < 1e-9

    torch.manual_seed(0)
    Imitator(TINY_EYES).save_pretrained(tmp_path / "m")
    out = tmp_path / "e"
    assert main(["-q", "eval", "imitation", "--data", str(synth_clips), "--every", "20", "--no-fid", "--no-transfer",
                 "--no-identity", "--no-lpips", "--out", str(out), "--checkpoint", str(tmp_path / "m"),
                 "--eyes", "--eyes-every", "2"]) == 0
    report = json.loads((out / "eyes.json").read_text())
    if len(blinks) or o_src is not None:
        assert [c["id"] for c in report["clips"]] == [clip.id] and report["clips"][0]["blink_frames"] == len(blinks)
        assert (out / "eyes.png").is_file()
    assert "The eyes: a blink closes" in (out / "imitation.md").read_text()


def test_eye_pairs_need_a_pack_with_the_eyes():
    """A pack written before packs stored the eyes' opening cannot draw eye pairs: a clear error."""
    from infp.errors import InfpError
    from infp.train.packed import PackedPairs

    n = 4
    fields = dict(frames=torch.zeros(n, 3, 8, 8, dtype=torch.uint8), z=torch.zeros(n, 2), z_mirror=torch.zeros(n, 2),
                  clip=np.zeros(n, int), mouth=np.zeros(n), real=np.ones(n, bool))
    assert PackedPairs(**fields).eye is None
    with pytest.raises(InfpError, match="eyes' opening"):
        PackedPairs(**fields, eye_pairs=0.3)


def test_eye_window_runs_only_for_images_whose_eyes_change():
    """The decoder is most of the rendering's cost: images whose eyes keep their opening skip the eye
    window (a batch where none changes renders as mouth-only), and in a mixed batch the skipped images'
    eye windows come back with a closed mask, their output the same as rendered alone."""
    torch.manual_seed(3)
    m = Imitator(TINY_EYES).eval()
    x, z = torch.rand(2, 3, 64, 64), torch.randn(2, m.cfg.motion_dim) * 0.3
    with torch.no_grad():
        app = m.encode_appearance(x)
        still = m.render(app, z, z)  # no motion: no eye changes
        assert still.synthesis.mask.shape[0] == 2
        mixed = m.render(app, z, torch.stack([z[0], z[1] + torch.randn(m.cfg.motion_dim)]))
        alone = m.render(m.encode_appearance(x[:1]), z[:1], z[:1])
    torch.testing.assert_close(mixed.image[:1], alone.image, atol=1e-5, rtol=0)
    if mixed.synthesis.mask.shape[0] == 4:  # the second image's eyes changed: the first's eye window is closed
        assert float(mixed.synthesis.mask[2].max()) == 0
