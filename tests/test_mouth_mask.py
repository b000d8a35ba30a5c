"""The head prior (the keypoints' affine motion spread over the head) and the mouth masks: the polygon rasteriser, the inner-lip keypoints, a decoder that grows to read the
masks without changing what it renders, the open-mouth scores and the grid's neutral reference frame
of `infp eval imitation`, and a fine-tune that adds the masks through the CLI."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from infp.cli import main
from infp.data.clip import list_clips
from infp.data.pairs import ClipFrames, load_clips
from infp.eval.imitation import neutral_frame, open_mouth
from infp.eval.metrics import FrameMetrics
from infp.face import topology as tp
from infp.models import Imitator, imitator_preset
from infp.models.warping import affine_fit, apply_affine, keypoint_flow, polygon_mask
from infp.train.imitation import load_grown

# the additions one at a time: `tiny` (the shipped switches) less all of them, then the prior, then the masks
PLAIN = imitator_preset("tiny", keypoint_prior=False, mouth_mask=False, paint_closing=False, paint_eyes=False,
                       keypoint_lid_sides=False,
                        keypoint_lip_sides=False, keypoint_head=0.0,
                        correction_max=0.0, paint_window=(1.0, 1.0))
TINY_KP = replace(PLAIN, keypoint_prior=True)
TINY_MOUTH = replace(TINY_KP, mouth_mask=True)


def _square(half: float, centre=(0.0, 0.0)) -> torch.Tensor:
    cx, cy = centre
    return torch.tensor([[[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half], [cx - half, cy + half]]])


def test_polygon_mask_covers_the_polygon_area():
    torch.testing.assert_close(polygon_mask(_square(0.5), 64).mean(), torch.tensor(0.25))
    # walked the other way round: the same mask
    torch.testing.assert_close(polygon_mask(_square(0.5).flip(1), 64), polygon_mask(_square(0.5), 64))
    # a concave L (three quarters of the square of side 1): area 0.75 of 1, a quarter of the [-1, 1]² image
    ell = torch.tensor([[[-0.5, -0.5], [0.5, -0.5], [0.5, 0.0], [0.0, 0.0], [0.0, 0.5], [-0.5, 0.5]]])
    assert polygon_mask(ell, 64).mean().item() == pytest.approx(0.75 / 4, abs=2e-3)
    # a regular 20-gon of radius 0.4: its area within a pixel's worth of the boundary
    a = torch.linspace(0, 2 * math.pi, 21)[:-1]
    poly = 0.4 * torch.stack([a.cos(), a.sin()], -1)[None]
    area = 0.5 * 20 * 0.4**2 * math.sin(2 * math.pi / 20)
    assert polygon_mask(poly, 64).mean().item() == pytest.approx(area / 4, rel=0.01)


def test_polygon_mask_is_partial_on_thin_openings_and_empty_on_closed_ones():
    thin = torch.tensor([[[-0.3, -0.01], [0.3, -0.01], [0.3, 0.01], [-0.3, 0.01]]])  # 19.2 x 0.64 px at 64 px
    m = polygon_mask(thin, 64)
    # sampled 4 times finer: its height is known to a quarter pixel
    assert 0 < m.max() < 1 and m.sum().item() == pytest.approx(19.2 * 0.64, abs=19.2 / 4)
    closed = torch.tensor([[[-0.3, 0.0], [0.0, 0.0], [0.3, 0.0], [0.0, 0.0]]])  # lips pressed together
    assert polygon_mask(closed, 64).sum() == 0
    batch = torch.cat([_square(0.5), _square(0.25, (0.5, 0.5))])
    assert polygon_mask(batch, 32).shape == (2, 1, 32, 32)
    torch.testing.assert_close(polygon_mask(batch, 32)[1:], polygon_mask(batch[1:], 32))


def test_inner_lip_keypoints_are_the_inner_lip_polygon():
    pos = tp.inner_lip_keypoints()
    assert len(pos) == 20
    np.testing.assert_array_equal(tp.keypoint_indices()[pos], tp.lip_polygons()[1])


def test_mouth_mask_needs_the_keypoint_prior():
    with pytest.raises(ValueError, match="keypoint_prior"):
        replace(PLAIN, mouth_mask=True)


def _trained_looking(model: Imitator) -> Imitator:
    with torch.no_grad():  # nonzero output layers, as after training
        model.flow_estimator.out.weight.normal_(std=0.01)
        model.decoder.out.weight.normal_(std=0.01)
    return model


def test_grown_decoder_renders_as_before_until_it_learns_the_masks():
    torch.manual_seed(0)
    old = _trained_looking(Imitator(TINY_KP)).eval()
    new = Imitator(TINY_MOUTH).eval()
    assert load_grown(new, old.state_dict()) == []  # every tensor came from `old`, some of them grown
    img = torch.rand(2, 3, 64, 64)
    z_src, z_drv = torch.randn(2, TINY_KP.motion_dim), torch.randn(2, TINY_KP.motion_dim)
    with torch.no_grad():
        app = old.encode_appearance(img)
        torch.testing.assert_close(new.render(app, z_src, z_drv).image, old.render(app, z_src, z_drv).image)
        # with weights on the new channels, the masks change the picture where the driving mouth is open
        new.decoder.inp[0].weight[:, -2:].normal_(std=1.0)
        mouth_open = new.render(app, z_src, z_drv)
    assert not torch.allclose(mouth_open.image, old.render(app, z_src, z_drv).image)
    prior, _ = keypoint_flow(*mouth_open.keypoints, TINY_KP.feature_size, TINY_KP.keypoint_sigma)
    torch.testing.assert_close(mouth_open.flow.flow, prior + mouth_open.flow.correction)


def test_correction_bound_leaves_small_corrections_and_caps_large_ones():
    torch.manual_seed(0)
    free = _trained_looking(Imitator(TINY_KP)).eval()
    with torch.no_grad():
        free.flow_estimator.out.weight.mul_(0.02)  # corrections of a few pixels at most
    bounded = Imitator(replace(TINY_KP, correction_max=0.05)).eval()
    bounded.load_state_dict(free.state_dict())
    img, z = torch.rand(2, 3, 64, 64), torch.randn(2, TINY_KP.motion_dim)
    with torch.no_grad():
        app = free.encode_appearance(img)
        a, b = free.render(app, z, z.flip(0)).flow, bounded.render(app, z, z.flip(0)).flow
        assert a.correction.abs().max() < 0.01  # small: the bound hardly changes it
        torch.testing.assert_close(b.correction, a.correction, atol=1e-5, rtol=0.02)
        free.flow_estimator.out.weight.mul_(1e5)  # a runaway F
        bounded.flow_estimator.out.weight.mul_(1e5)
        a, b = free.render(app, z, z.flip(0)).flow, bounded.render(app, z, z.flip(0)).flow
    assert a.correction.abs().max() > 1 and b.correction.abs().max() <= 0.05


def test_correction_loss_is_the_size_of_fs_correction():
    from infp.train.losses import ImitationLoss, LossConfig

    pred = torch.rand(2, 3, 32, 32)
    correction = torch.full((2, 2, 8, 8), -0.25)
    loss = ImitationLoss(LossConfig(use_gan=False, correction=2.0))
    with_c, without = loss.generator(pred, pred, correction=correction), loss.generator(pred, pred)
    assert with_c.correction.item() == pytest.approx(0.25) and without.correction is None
    assert (with_c.total - without.total).item() == pytest.approx(0.5)


def test_open_mouth_from_landmarks():
    pts = np.zeros((2, tp.N_LANDMARKS, 3), np.float32)
    inner = tp.lip_polygons()[1]
    a = np.linspace(0, 2 * np.pi, len(inner), endpoint=False)
    pts[0, inner, 0], pts[0, inner, 1] = 32 + 10 * np.cos(a), 40 + 4 * np.sin(a)  # an open mouth, 20 x 8 px
    pts[1, inner, 0], pts[1, inner, 1] = 32 + 10 * np.cos(a), 40.0  # closed: the lips on one line
    m = open_mouth(pts, 64)
    assert m.shape == (2, 1, 64, 64)
    assert m[0].sum().item() == pytest.approx(np.pi * 10 * 4, rel=0.1) and m[1].sum() == 0
    assert m[0, 0, 40, 32] == 1 and m[0, 0, 10, 10] == 0


def test_frame_metrics_score_inside_the_open_mouth():
    target = torch.zeros(2, 3, 16, 16)
    pred = target.clone()
    pred[:, :, :8] = 0.5  # wrong in the top half only
    mouth = torch.zeros(2, 1, 16, 16)
    mouth[0, :, 4:8, 4:8] = 1  # inside the wrong half
    mouth[1, :, 8:12, 4:8] = 1  # inside the right half
    m = FrameMetrics()
    m.update(pred, target, mouth)
    s = m.compute()
    assert s.mouth_l1 == pytest.approx(0.25) and s.mouth_luma == pytest.approx(0.25) and s.mouth_luma_true == 0
    plain = FrameMetrics()
    plain.update(pred, target)
    assert math.isnan(plain.compute().mouth_l1)


def test_cli_fine_tune_adds_the_mouth_masks_and_the_head_prior(synth_clips, tmp_path):
    Imitator(TINY_KP).save_pretrained(tmp_path / "old")
    run = tmp_path / "run"
    main(["-q", "train", "imitation", "--data", str(synth_clips), "--out", str(run), "--init-from", str(tmp_path / "old"),
          "--freeze-motion-encoder", "--mouth-mask", "--keypoint-head", "1", "--correction-max", "0.15", "--steps", "2", "--batch-size", "2", "--save-every", "2",
          "--no-gan", "--device", "cpu"])
    ck = Imitator.from_pretrained(run / "checkpoint")
    assert ck.cfg.mouth_mask and ck.cfg.keypoint_prior and ck.cfg.keypoint_head == 1.0 and ck.cfg.correction_max == 0.15
    events = b"".join(e.read_bytes() for e in (run / "logs").rglob("events.out.tfevents*"))
    assert b"gen/correction" in events  # F's correction to the prior is kept small by its own term
    assert ck.decoder.inp[0].weight.shape[1] == TINY_KP.feature_channels + 2


def test_affine_fit_recovers_a_known_map():
    torch.manual_seed(0)
    k = torch.rand(2, 40, 2) * 1.2 - 0.6
    m = torch.tensor([[[1.1, 0.1], [-0.05, 0.9], [0.03, -0.02]]]).expand(2, 3, 2)
    torch.testing.assert_close(affine_fit(k, apply_affine(k, m)), m, atol=1e-4, rtol=0)


def test_head_flow_carries_the_head_and_leaves_the_background():
    """Keypoints that all shift by the same amount: the prior moves the pixels between and around them
    (the head) by that amount, while the plain prior moves only the keypoints' neighbourhoods; far away
    the background keeps still either way."""
    torch.manual_seed(0)
    a = torch.linspace(0, 2 * math.pi, 37)[:-1]
    ring = 0.4 * torch.stack([a.cos(), a.sin()], -1)[None]  # (1, 36, 2): a face outline, radius 0.4
    shift = torch.tensor([0.06, -0.04])
    k_src, k_drv = ring, ring - shift  # backward flow: the driving frame reads the source at +shift
    plain, _ = keypoint_flow(k_src, k_drv, 64, 0.05)
    head, _ = keypoint_flow(k_src, k_drv, 64, 0.05, head=1.0)
    centre = (slice(30, 34), slice(30, 34))  # the middle of the face, far from every keypoint
    torch.testing.assert_close(head[0, :, centre[0], centre[1]].mean((1, 2)), shift, atol=2e-3, rtol=0)
    assert plain[0, :, centre[0], centre[1]].abs().max() < 0.1 * shift.abs().max()
    assert head[0, :, :2, :2].abs().max() < 0.01 * shift.abs().max()  # a corner: background


def test_neutral_frame_has_a_closed_mouth_and_the_usual_pose(synth_clips):
    clip = load_clips(list_clips(synth_clips), 64)[0]
    base = clip.points[clip.usable[0]].copy()
    pts = np.repeat(base[None], 6, axis=0)
    for j in range(6):  # lower lip lowered by 0, 2, ..., 10 px, except that frame 4 has it closed
        pts[j, tp.lip_arcs()[1][1], 1] += 0 if j == 4 else 2.0 * j
    centre = base[:, :2].mean(0)
    a = np.radians(25)  # frame 0 is closed too, but its head is rolled by 25 degrees
    pts[0, :, :2] = (base[:, :2] - centre) @ np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]]) + centre
    frames = ClipFrames("c", "synthetic", np.zeros((6, 64, 64, 3), np.uint8), pts, np.arange(6))
    assert neutral_frame(frames) == 4


def test_polygon_mask_counts_crossings_like_the_direct_test():
    """The binned crossing count equals testing every pixel against every edge (up to a float tie
    at a single fine pixel), on convex, concave, self-crossing and partly outside polygons."""
    from infp.models.blocks import pixel_centres

    def direct(poly, size, s):
        axis = pixel_centres(size * s, poly)
        p0, p1 = poly, poly.roll(-1, dims=1)
        y0, y1 = p0[..., 1:], p1[..., 1:]
        spans = (y0 <= axis) != (y1 <= axis)
        x = p0[..., :1] + (axis - y0) / torch.where(y1 == y0, torch.ones_like(y0), y1 - y0) * (p1[..., :1] - p0[..., :1])
        hits = (spans[..., None] & (x[..., None] > axis)).sum(1)
        return torch.nn.functional.avg_pool2d((hits % 2).float()[:, None], s)

    torch.manual_seed(1)
    a = torch.linspace(0, 2 * math.pi, 21)[:-1]
    lips = torch.stack([a.cos(), 0.4 * a.sin()], -1) * (0.2 + 0.15 * torch.rand(8, 20))[..., None]
    poly = torch.cat([lips + 0.3 * torch.randn(8, 1, 2), torch.rand(8, 20, 2) * 2.4 - 1.2])
    for size, s in ((64, 4), (17, 3)):
        assert (polygon_mask(poly, size, s) - direct(poly, size, s)).abs().max() <= 1 / s**2 + 1e-6
