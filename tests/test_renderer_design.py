"""The second renderer design: detail from the source, synthesis only where the mask says, any
output resolution; first-design checkpoints carried over; packs for frozen-E_m fine-tunes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from infp.errors import InfpError
from infp.models import Imitator, imitator_preset
from infp.models.decoder import MASK_BIAS, like
from infp.models.warping import sample, warp

ROOT = Path(__file__).resolve().parents[1]
# the mouth's window alone: the eye window has its own tests (test_eyes.py)
TINY_KP = imitator_preset("tiny", keypoint_prior=True, mouth_mask=True, keypoint_lip_sides=True, paint_eyes=False)


def _model(seed: int = 0, cfg=TINY_KP) -> Imitator:
    torch.manual_seed(seed)
    return Imitator(cfg).eval()


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_one_image_viewed_as_a_batch_is_sampled_as_the_batch_itself(mode):
    """`sample` reads a portrait's features expanded to a batch once, at the batch's grids side by side:
    the same samples as from the copies, and gradients still reach the image and the grids."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 5, 16, 20, generator=g, requires_grad=True)
    grid = (torch.rand(3, 7, 9, 2, generator=g) * 2.4 - 1.2).requires_grad_()
    shared = sample(x.expand(3, -1, -1, -1), grid, mode)
    copies = sample(x.expand(3, -1, -1, -1).contiguous(), grid, mode)
    assert shared.shape == (3, 5, 7, 9)
    torch.testing.assert_close(shared, copies, rtol=0, atol=1e-6)
    (gx, gg), (cx, cg) = (torch.autograd.grad(y.square().sum(), (x, grid)) for y in (shared, copies))
    torch.testing.assert_close(gx, cx)
    torch.testing.assert_close(gg, cg)


def test_like_takes_the_dtype_and_layout_of_what_it_joins():
    x = torch.rand(2, 4, 6, 6).to(torch.bfloat16, memory_format=torch.channels_last)
    t = like(torch.rand(2, 3, 6, 6), x)
    assert t.dtype == torch.bfloat16 and t.is_contiguous(memory_format=torch.channels_last)
    assert like(torch.rand(2, 3, 6, 6), torch.rand(2, 4, 6, 6)).is_contiguous()
    assert torch.cat([x, t], 1).is_contiguous(memory_format=torch.channels_last)


def test_a_new_decoder_shows_the_warped_source_at_any_resolution():
    """The mask starts almost closed and the synthesis starts as the warped working-size source, so
    a new model's output is the source warped once at the resolution it was given in."""
    m = _model()
    s = m.cfg.size
    full = torch.rand(2, 3, 3 * s, 3 * s)
    small = torch.nn.functional.interpolate(full, size=(s, s), mode="area")
    z = torch.randn(2, m.cfg.motion_dim) * 0.3
    with torch.no_grad():
        r = m.render(m.encode_appearance(small, full), z, z.flip(0))
        at_work = m.render(m.encode_appearance(small), z, z.flip(0))
    assert r.image.shape == (2, 3, 3 * s, 3 * s) and at_work.image.shape == (2, 3, s, s)
    h, w = (round(f * s) for f in m.cfg.paint_window)  # the decoder paints its window only
    assert r.synthesis.mask.shape == (2, 1, h, w)
    assert float(r.synthesis.mask.max()) <= torch.sigmoid(torch.tensor(MASK_BIAS)).item() + 1e-6
    torch.testing.assert_close(at_work.image, warp(small, at_work.flow.flow, "bicubic"), atol=1e-5, rtol=0)
    warped_full = warp(full, r.flow.flow, "bicubic")
    # away from the mask's 1.8 %, the full-resolution output is the full-resolution source's pixels
    assert (r.image - warped_full).abs().max() < 0.02 + 1e-4
    assert (r.image - warped_full).abs().mean() < 0.01


def test_painting_is_confined_to_the_driving_mouth():
    """The blend mask is bounded by the driving keypoints' inner-lip polygon, grown a little: the
    rest of the output is always the source's own pixels."""
    from dataclasses import replace

    from infp.face.topology import inner_lip_keypoints
    from infp.models.imitator import paint_region

    m = _model(7, replace(TINY_KP, paint_closing=False))  # the closing region: the test after this one
    with torch.no_grad():
        m.decoder.out.bias[3] = 20.0  # the mask open wherever it may be
        x = torch.rand(1, 3, m.cfg.size, m.cfg.size)
        z = torch.randn(1, m.cfg.motion_dim)
        r = m.render(m.encode_appearance(x), z * 0, z)
    region = paint_region(r.keypoints.driving[:, torch.as_tensor(inner_lip_keypoints())], r.synthesis.window)
    torch.testing.assert_close(r.synthesis.mask, region, atol=1e-5, rtol=0)
    outside = r.synthesis.window.place(region) == 0
    assert outside.float().mean() > 0.5
    w = warp(x, r.flow.flow, "bicubic")
    assert (r.image - w).abs()[outside.expand_as(w)].max() < 1e-5


def test_paint_closing_adds_where_the_source_opening_lands():
    """With `paint_closing` the decoder may also paint where the source's mouth opening lands after
    the warp (a photo's teeth that a closing mouth must cover), besides the driving opening; the
    rest of the output stays the source's pixels. The added region follows the flow."""
    from dataclasses import replace

    from infp.face.topology import inner_lip_keypoints
    from infp.models.imitator import closing_region, paint_region
    from infp.models.warping import Window, polygon_mask

    lips = torch.as_tensor(inner_lip_keypoints())
    base = _model(7, replace(TINY_KP, paint_window=(0.375, 0.5), paint_closing=False))
    m = Imitator(replace(base.cfg, paint_closing=True)).eval()
    m.load_state_dict(base.state_dict())  # the same weights: the flag adds no parameter
    with torch.no_grad():
        m.decoder.out.bias[3] = 20.0
        x = torch.rand(1, 3, m.cfg.size, m.cfg.size)
        z = torch.randn(2, m.cfg.motion_dim)
        r = m.render(m.encode_appearance(x), z[:1], z[1:])
    kp = r.keypoints
    win = r.synthesis.window
    source_open = polygon_mask(kp.source[:, lips].float(), m.cfg.feature_size)
    expected = torch.maximum(paint_region(kp.driving[:, lips], win), closing_region(source_open, r.flow.flow, win))
    torch.testing.assert_close(r.synthesis.mask, expected, atol=1e-5, rtol=0)
    assert (expected >= paint_region(kp.driving[:, lips], win) - 1e-6).all()
    # an opening moved by a flow lands where the flow takes it: a shift of 8 px moves the region by 8 px
    s, fs = m.cfg.size, m.cfg.feature_size
    square = torch.zeros(1, 1, fs, fs)
    square[..., fs // 2 - 2 : fs // 2 + 2, fs // 2 - 2 : fs // 2 + 2] = 1
    whole = Window.whole(1, s)
    still = closing_region(square, torch.zeros(1, 2, fs, fs), whole)
    flow = torch.zeros(1, 2, fs, fs)
    flow[:, 0] = 16 / s  # backward warp: each output pixel reads the source 8 px to its right
    moved = closing_region(square, flow, whole)
    torch.testing.assert_close(moved[..., :, : s - 8], still[..., :, 8:], atol=1e-4, rtol=0)
    assert still.sum() > 0 and moved[..., s // 2 + 16 :].sum() == 0


def test_the_decoder_works_only_in_a_window_on_the_driving_mouth():
    """With `paint_window` the decoder reads the warped features in a rectangle around the driving
    inner lips, on the feature grid and inside the crop; outside it the output is the warped source,
    and reading only the window gives what warping everything and cutting it out would."""
    from infp.face.topology import inner_lip_keypoints
    from infp.models.warping import Window, warp_window

    m = _model(5, imitator_preset("tiny", keypoint_prior=True, mouth_mask=True, paint_window=(0.375, 0.5), paint_eyes=False))
    s, cell = m.cfg.size, 2**m.cfg.feature_down
    with torch.no_grad():
        m.decoder.out.bias[3] = 20.0
        x = torch.rand(3, 3, s, s)
        z = torch.randn(3, m.cfg.motion_dim)
        r = m.render(m.encode_appearance(x), z * 0, z)
    win = r.synthesis.window
    assert (win.height, win.width) == (24, 32) and r.synthesis.mask.shape == (3, 1, 24, 32)
    assert (win.top % cell == 0).all() and (win.left % cell == 0).all()
    assert (win.top >= 0).all() and (win.top + win.height <= s).all() and (win.left + win.width <= s).all()
    lips = (r.keypoints.driving[:, torch.as_tensor(inner_lip_keypoints())] + 1) * s / 2  # pixels
    centre = (lips.amin(1) + lips.amax(1)) / 2
    inside = (centre[:, 0] - win.left - win.width / 2).abs() <= cell / 2 + 1e-4
    clamped = (win.left == 0) | (win.left == s - win.width)
    assert (inside | clamped).all()
    outside = win.place(torch.ones_like(r.synthesis.mask)) == 0
    w = warp(x, r.flow.flow, "bicubic")
    assert (r.image - w).abs()[outside.expand_as(w)].max() < 1e-6
    flow = torch.randn(3, 2, s // cell, s // cell) * 0.1
    for scale in (1, 2, cell):
        f = torch.rand(3, 5, s // scale, s // scale)
        torch.testing.assert_close(warp_window(f, flow, win), win.crop(warp(f, flow)), atol=1e-5, rtol=0)
    whole = Window.whole(3, s)
    torch.testing.assert_close(whole.crop(x), x)
    torch.testing.assert_close(win.crop(win.place(r.synthesis.mask)), r.synthesis.mask)


def test_where_the_mask_opens_the_synthesis_replaces_the_source():
    m = _model(1, imitator_preset("tiny", keypoint_prior=False, mouth_mask=False, paint_closing=False, paint_eyes=False,
                                  keypoint_lid_sides=False, keypoint_lip_sides=False,
                                  keypoint_head=0.0, correction_max=0.0,
                                  paint_window=(1.0, 1.0)))  # no keypoints: the mask may open anywhere
    with torch.no_grad():
        m.decoder.out.bias[3] = 20.0  # mask fully open everywhere
        m.decoder.out.bias[:3] = torch.tensor([0.3, -0.2, 0.1])
        x = torch.rand(1, 3, m.cfg.size, m.cfg.size)
        z = torch.zeros(1, m.cfg.motion_dim)
        r = m.render(m.encode_appearance(x), z, z)
    torch.testing.assert_close(r.image, r.synthesis.synthesis, atol=1e-5, rtol=0)
    torch.testing.assert_close(r.synthesis.synthesis - warp(x, r.flow.flow, "bicubic"),
                               torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1).expand_as(x), atol=1e-5, rtol=0)


def test_gradients_reach_the_flow_the_synthesis_and_then_the_mask():
    """The output's loss trains F through the warp; the synthesis's own loss trains the painting
    wherever the mask is closed; once the painting differs from the warped source, the mask learns
    where it is the better of the two (at the start the two are equal, so the mask has no gradient:
    why the trainers supervise the synthesis directly)."""
    m = _model(2).train()
    x, target = torch.rand(2, 3, m.cfg.size, m.cfg.size), torch.rand(2, 3, m.cfg.size, m.cfg.size)
    z = torch.randn(2, m.cfg.motion_dim)
    r = m.render(m.encode_appearance(x), z, z.flip(0))
    ((r.image - target).abs().mean() + (r.synthesis.synthesis - r.synthesis.window.crop(target)).abs().mean()).backward()
    g = m.decoder.out.weight.grad
    # the mask's gradient is zero up to rounding: the painting reads the source in its window as the
    # output reads it everywhere, the same bicubic sampling along two float paths
    assert m.flow_estimator.out.weight.grad.abs().sum() > 0 and g[:3].abs().sum() > 0
    assert g[3].abs().sum() < 1e-6 * g[:3].abs().sum()
    with torch.no_grad():
        m.decoder.out.bias[:3] += 0.1
    m.zero_grad()
    r = m.render(m.encode_appearance(x), z, z.flip(0))
    (r.image - target).abs().mean().backward()
    assert m.decoder.out.weight.grad[3].abs().sum() > 0


def _first_design(path: Path, seed: int = 3) -> dict:
    """A checkpoint as the first design wrote it: a 3-channel decoder output and `mouth_interior`."""
    m = _model(seed)
    m.save_pretrained(path)
    state = load_file(str(path / "model.safetensors"))
    state["decoder.out.weight"] = state["decoder.out.weight"][:3].clone()
    state["decoder.out.bias"] = torch.tensor([0.01, 0.02, 0.03])
    save_file(state, str(path / "model.safetensors"))
    meta = json.loads((path / "config.json").read_text())
    meta["config"]["mouth_interior"] = True
    (path / "config.json").write_text(json.dumps(meta))
    return state


def test_a_first_design_checkpoint_is_refused_with_what_to_do_and_carried_over(tmp_path):
    from infp.train.legacy import from_first_design, is_first_design

    state = _first_design(tmp_path / "old")
    with pytest.raises(InfpError, match="first renderer design.*--init-from"):
        Imitator.from_pretrained(tmp_path / "old")
    assert is_first_design(tmp_path / "old")
    m = from_first_design(tmp_path / "old")
    new = m.state_dict()
    for k, v in state.items():
        if k not in ("decoder.out.weight", "decoder.out.bias"):
            torch.testing.assert_close(new[k], v, msg=k)
    torch.testing.assert_close(new["decoder.out.weight"][:3], state["decoder.out.weight"])
    assert new["decoder.out.weight"][3].abs().sum() == 0
    torch.testing.assert_close(new["decoder.out.bias"], torch.tensor([0.01, 0.02, 0.03, MASK_BIAS]))


def test_pack_and_pairs(synth_clips, tmp_path):
    from infp.data.clip import list_clips
    from infp.data.pairs import load_clips
    from infp.train.packed import PackedPairs, pack_clips

    m = _model(4)
    clips = load_clips(list_clips(synth_clips), m.cfg.size)
    meta = pack_clips(clips, m, tmp_path / "pack", "f" * 16, crf=10, progress=False)
    n = sum(len(c.usable) for c in clips)
    assert meta["frames"] == n and meta["imitator_fingerprint"] == "f" * 16
    data = PackedPairs.load(tmp_path / "pack", mouth_pairs=0.5, eye_pairs=0.2)
    from infp.face.expression import eye_opening

    eyes = np.concatenate([eye_opening(c.points.astype(np.float64))[c.usable] for c in clips])
    np.testing.assert_allclose(data.eye, eyes, rtol=1e-5)  # the eyes' opening, for --eye-pairs
    assert data.frames.shape == (n, 3, m.cfg.size, m.cfg.size) and data.frames.dtype == torch.uint8
    # the frames survive the video (CRF 10) and the latents are E_m's, mirrored ones of the flipped crop
    first = clips[0].frames[clips[0].usable[0]].astype(np.float32)
    assert np.abs(data.frames[0].permute(1, 2, 0).numpy() - first).mean() < 3
    from infp.data.pairs import to_tensor
    from infp.face.hybrid import represent

    c, i = clips[0], clips[0].usable[0]
    rep = to_tensor(represent(c.frames[i], c.points[i])[None])
    with torch.no_grad():
        torch.testing.assert_close(data.z[0], m.encode_motion(rep)[0], atol=2e-3, rtol=1e-2)
        torch.testing.assert_close(data.z_mirror[0], m.encode_motion(rep.flip(-1))[0], atol=2e-3, rtol=1e-2)
    b = data.sample(np.random.default_rng(0), 6)
    assert b.source.shape == b.driving.shape == (6, 3, m.cfg.size, m.cfg.size) and b.z_source.shape == (6, m.cfg.motion_dim)
    assert 0 <= float(b.source.min()) and float(b.source.max()) <= 1


def test_train_renderer_script_runs_and_merges(synth_clips, tmp_path):
    """The GPU fine-tune's script, in miniature on CPU: pack, two steps with the GAN and the closing
    region, merge (the merged config keeps the closing region)."""
    from infp.eval.vgg import VGG16Features

    vgg = tmp_path / "vgg.safetensors"  # random weights: the wiring, not the loss, is tested
    save_file(VGG16Features("relu4_3").convs.state_dict(), str(vgg))
    start = tmp_path / "start"
    _model(5).save_pretrained(start)
    script = [sys.executable, str(ROOT / "scripts" / "train_renderer.py")]
    subprocess.run([*script, "pack", "--data", str(synth_clips), "--init", str(start), "--out", str(tmp_path / "pack"),
                    "--crf", "18"], check=True, capture_output=True)
    run = subprocess.run([*script, "--pack", str(tmp_path / "pack"), "--init", str(start), "--out", str(tmp_path / "run"),
                          "--vgg", str(vgg), "--steps", "2", "--batch", "2", "--gan", "--log-every", "1", "--device", "cpu",
                          "--paint-closing", "--paint-eyes", "--lid-sides", "--eye-pairs", "0.3", "--eye-weight", "1"],
                         check=True, capture_output=True, text=True)
    assert "2 steps" in run.stdout and (tmp_path / "run" / "samples.png").is_file()
    log = json.loads((tmp_path / "run" / "log.json").read_text())
    assert log["steps"] == 2 and {"l1", "vgg", "mouth", "eye", "mask", "adv", "fm"} <= set(log["log"][-1])
    subprocess.run([*script, "merge", "--init", str(start), "--trained", str(tmp_path / "run" / "trained.safetensors"),
                    "--out", str(tmp_path / "merged"), "--paint-closing", "--paint-eyes", "--lid-sides"],
                   check=True, capture_output=True)
    cfg = Imitator.from_pretrained(tmp_path / "merged").cfg
    assert cfg.paint_closing and cfg.paint_eyes and cfg.keypoint_lid_sides
    merged, first = Imitator.from_pretrained(tmp_path / "merged").state_dict(), _model(5).state_dict()
    for k in merged:  # E_m and the keypoint decoder stay frozen: stage 2's latent space is kept
        if k.startswith(("motion_encoder.", "keypoint_decoder.")):
            torch.testing.assert_close(merged[k], first[k], msg=k)
    assert any(not torch.equal(merged[k], first[k]) for k in merged if k.startswith("decoder."))
    # --train eyes: only the eye window's decoder learns, the mouth's painting stays as it was
    subprocess.run([*script, "--pack", str(tmp_path / "pack"), "--init", str(tmp_path / "merged"), "--out",
                    str(tmp_path / "eyes"), "--steps", "1", "--batch", "2", "--device", "cpu", "--train", "eyes",
                    "--vgg-weight", "0", "--eye-pairs", "0.5", "--eye-weight", "1"], check=True, capture_output=True)
    trained = load_file(str(tmp_path / "eyes" / "trained.safetensors"))
    assert trained and all(k.startswith("eye_decoder.") for k in trained)
    assert any(not torch.equal(trained[k], merged[k]) for k in trained)


def test_eval_scores_at_a_higher_resolution_and_saved_renders(synth_clips, tmp_path):
    """`--size` above the working size renders at it; `--save-predictions` then `--predictions`
    scores the same renders again with the same numbers."""
    from infp.cli import main

    _model(6).save_pretrained(tmp_path / "m")
    out = tmp_path / "e"
    common = ["--data", str(synth_clips), "--every", "10", "--no-fid", "--no-transfer", "--no-identity", "--no-lpips"]
    assert main(["-q", "eval", "imitation", *common, "--out", str(out), "--checkpoint", str(tmp_path / "m"),
                 "--size", "128", "--save-predictions"]) == 0
    saved = sorted((out / "predictions").glob("*.npz"))
    assert saved and np.load(saved[0])["pred"].shape[1:] == (128, 128, 3)
    assert main(["-q", "eval", "imitation", *common, "--out", str(tmp_path / "p"), "--predictions",
                 str(out / "predictions"), "--size", "128"]) == 0
    a, b = (json.loads((d / "imitation.json").read_text())["model"] for d in (out, tmp_path / "p"))
    assert a["n_frames"] == b["n_frames"] > 0
    assert abs(a["ssim"] - b["ssim"]) < 1e-3 and abs(a["psnr"] - b["psnr"]) < 0.05
    assert main(["-q", "eval", "imitation", *common, "--out", str(tmp_path / "q"), "--predictions",
                 str(out / "predictions")]) == 2  # --predictions needs --size
    # truth | the saved renders | this run's, two frames per clip
    assert main(["-q", "eval", "imitation", *common, "--out", str(tmp_path / "c"), "--checkpoint", str(tmp_path / "m"),
                 "--size", "128", "--compare", str(out / "predictions")]) == 0
    import cv2

    sheet = cv2.imread(str(tmp_path / "c" / "side_by_side.png"))
    assert sheet.shape[1] == 3 * 128 and sheet.shape[0] in (128, 256)


def test_eval_closing_renders_closed_frames_from_the_widest_open_one(synth_clips, tmp_path):
    """`infp eval imitation --closing`: the source is each clip's widest-open frame, only frames with a
    closed true mouth are rendered and measured, and the report, JSON and sheet say so."""
    from infp.cli import main
    from infp.data.clip import list_clips
    from infp.data.pairs import load_clip_frames
    from infp.eval.closing import ClosingScores, closed_frames, pooled, widest_frame
    from infp.face.expression import mouth_opening

    clip = load_clip_frames(list_clips(synth_clips)[0], 64)
    mouth = mouth_opening(clip.points)
    bound = 0.1  # the synthetic portrait's lips never meet: its "closed" is below 0.1
    src, idx = widest_frame(clip), closed_frames(clip, 2, bound)
    assert mouth[src] == np.nanmax(mouth[clip.usable]) and len(idx) and (mouth[idx] < bound).all()
    assert not len(closed_frames(clip, 2))  # at the default bound (real lips: below 0.02) none is closed
    assert set(idx) <= set(clip.usable[::2])
    a = ClosingScores("a", 0.1, 10, 0.01, 0.02, 0.5, 1.0)
    b = ClosingScores("b", 0.2, 30, 0.0, float("nan"), float("nan"), 0.0)  # no face found in any render
    p = pooled([a, b])
    assert p.n_frames == 40 and p.model_gap == 0.02 and p.closed_share == 0.5 and p.found == 0.25
    assert abs(p.source_gap - 0.175) < 1e-9

    _model(6).save_pretrained(tmp_path / "m")
    out = tmp_path / "e"
    assert main(["-q", "eval", "imitation", "--data", str(synth_clips), "--every", "20", "--no-fid", "--no-transfer",
                 "--no-identity", "--no-lpips", "--out", str(out), "--checkpoint", str(tmp_path / "m"),
                 "--closing", "--closing-every", "2", "--closing-bound", str(bound)]) == 0
    report = json.loads((out / "closing.json").read_text())
    assert [c["id"] for c in report["clips"]] == [clip.id] and report["clips"][0]["n_frames"] == len(idx)
    assert report["pooled"]["truth_gap"] < bound
    assert "Closing what the photo opened" in (out / "imitation.md").read_text()
    assert (out / "closing.png").is_file()
    assert main(["-q", "eval", "imitation", "--data", str(synth_clips), "--out", str(tmp_path / "x"), "--closing",
                 "--predictions", str(tmp_path), "--size", "64"]) == 2
