"""The painted mouth interior: where it paints (only the opening beyond the source's), what (a teeth
band under the upper lip over a dark cavity), how the decoder composites it, a model that grows by it
without changing what it renders until a mouth opens, and a fine-tune that adds it through the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from infp.cli import main
from infp.data.clip import list_clips
from infp.data.pairs import keypoints, load_clips
from infp.face import topology as tp
from infp.models import Imitator, imitator_preset
from infp.models.mouth_interior import MouthInterior
from infp.models.warping import polygon_mask, resize_flow, warp
from infp.train.imitation import load_grown

TINY_MOUTH = imitator_preset("tiny", keypoint_prior=True, mouth_mask=True)
TINY_INTERIOR = imitator_preset("tiny", keypoint_prior=True, mouth_mask=True, mouth_interior=True)
S = 64


def _mouths(synth_clips) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, K, 2) keypoints of a real face with the lips pressed together, and the same face with the
    mouth opened: the lower inner lip lowered by 0.3 ([-1, 1] units: 9.6 px at 64 px)."""
    clip = load_clips(list_clips(synth_clips), S)[0]
    k = keypoints(clip.points[clip.usable[0]], S).copy()
    inner = tp.inner_lip_keypoints()
    k[inner, 1] = k[inner, 1].mean()  # closed: the inner lips on one line
    opened = k.copy()
    opened[tp.keypoint_positions(tp.lip_arcs()[1][1]), 1] += 0.3
    return torch.from_numpy(k)[None], torch.from_numpy(opened)[None]


def test_mouth_interior_needs_the_keypoint_prior():
    with pytest.raises(ValueError, match="keypoint_prior"):
        imitator_preset("tiny", mouth_interior=True)


def _still(n: int = 1) -> torch.Tensor:
    return torch.zeros(n, 2, 16, 16)  # a flow that moves nothing


def test_paints_only_the_opening_beyond_the_sources(synth_clips):
    closed, opened = _mouths(synth_clips)
    paint = MouthInterior()
    with torch.no_grad():
        assert paint(closed, closed, _still(), S) is None  # nothing opened: nothing drawn
        assert paint(opened, opened, _still(), S) is None  # the source's own opening: warped, not painted
        alpha, _ = paint(closed, opened, _still(), S)
        # in a batch, the frames that do not open get no paint
        both, _ = paint(torch.cat([closed, closed]), torch.cat([closed, opened]), _still(2), S)
    torch.testing.assert_close(both[1:], alpha)
    assert both[0].sum() == 0
    hole = polygon_mask(opened[:, tp.inner_lip_keypoints()], S, 2)
    _, rel = paint.opening(opened)
    assert rel.item() > 0.04  # wide enough for full strength
    torch.testing.assert_close(alpha, hole)  # the whole opening, nothing else
    assert alpha.sum() > 5  # pixels


def test_a_source_that_shows_its_teeth_keeps_them(synth_clips):
    """Source half open, driving wide open, a still flow: the source's own opening (its teeth, moved by
    the flow) is not painted over; the rest of the new opening is."""
    closed, opened = _mouths(synth_clips)
    half = (closed + opened) / 2
    paint = MouthInterior()
    with torch.no_grad():
        alpha, _ = paint(half, opened, _still(), S)
    lips = tp.inner_lip_keypoints()
    own, hole = polygon_mask(half[:, lips], S, 2), polygon_mask(opened[:, lips], S, 2)
    core = -torch.nn.functional.max_pool2d(-own, 3, 1, 1) > 0.99  # inside the source's opening, off its rim
    beyond = (hole > 0.99) & (torch.nn.functional.max_pool2d(own, 3, 1, 1) == 0)  # clear of it
    assert core.sum() > 3 and beyond.sum() > 3
    assert alpha[core].max() < 0.05 and alpha[beyond].min() > 0.95


def test_teeth_band_under_the_upper_lip_over_a_dark_cavity(synth_clips):
    closed, opened = _mouths(synth_clips)
    paint = MouthInterior()
    with torch.no_grad():
        alpha, colours = paint(closed, opened, _still(), S)
    cavity, teeth = paint.colours
    inside = alpha[0, 0] > 0.99
    col = int(inside.sum(0).argmax())  # the column where the opening is tallest
    rows = torch.where(inside[:, col])[0]
    top, bottom = rows.min(), rows.max()

    def colour(r):
        return colours[0, :, r, col]

    torch.testing.assert_close(colour(top), teeth, atol=1e-4, rtol=0)  # just under the upper lip: teeth
    torch.testing.assert_close(colour(bottom), cavity, atol=1e-4, rtol=0)  # lower down: the cavity
    # the band reaches about 22% of the gap: far less of the opening than the cavity
    is_teeth = ((colours[0] - teeth[:, None, None]).abs().sum(0) < 0.1) & inside
    assert 0 < is_teeth.sum() < 0.5 * inside.sum()


class _Lookup(nn.Module):
    """A keypoint decoder that reads the first latent number as closed (< 0) or open (> 0) mouth."""

    def __init__(self, closed: torch.Tensor, opened: torch.Tensor):
        super().__init__()
        self.closed, self.opened = closed, opened

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.where(z[:, :1, None] > 0, self.opened, self.closed)


def test_grown_model_renders_as_before_until_the_mouth_opens(synth_clips):
    torch.manual_seed(0)
    old = Imitator(TINY_MOUTH).eval()
    with torch.no_grad():  # nonzero output layers, as after training
        old.flow_estimator.out.weight.normal_(std=0.01)
        old.decoder.out.weight.normal_(std=0.01)
    new = Imitator(TINY_INTERIOR).eval()
    assert load_grown(new, old.state_dict()) == []  # the paint has no weights
    old.keypoint_decoder = new.keypoint_decoder = _Lookup(*_mouths(synth_clips))
    img = torch.rand(1, 3, S, S)
    z_closed, z_open = -torch.ones(1, TINY_MOUTH.motion_dim), torch.ones(1, TINY_MOUTH.motion_dim)
    with torch.no_grad():
        app = old.encode_appearance(img)
        torch.testing.assert_close(new.render(app, z_closed, z_closed).image, old.render(app, z_closed, z_closed).image)
        a, b = old.render(app, z_closed, z_open), new.render(app, z_closed, z_open)
        alpha, paint = new.mouth_interior(a.keypoints.source, a.keypoints.driving, a.flow.flow, S)
        warped = warp(img, resize_flow(a.flow.flow, (S, S)))
    assert alpha.sum() > 5
    # the painted opening replaces the warped image there; the decoder's correction is added as before
    torch.testing.assert_close(b.image - a.image, alpha * (paint - warped), atol=1e-5, rtol=0)


def test_cli_fine_tune_adds_the_mouth_interior(synth_clips, tmp_path):
    Imitator(TINY_MOUTH).save_pretrained(tmp_path / "old")
    run = tmp_path / "run"
    main(["-q", "train", "imitation", "--data", str(synth_clips), "--out", str(run), "--init-from", str(tmp_path / "old"),
          "--freeze-motion-encoder", "--mouth-interior", "--lip-sides", "--steps", "2", "--batch-size", "2", "--save-every", "2",
          "--no-gan", "--device", "cpu", "--dtype", "bfloat16"])
    ck = Imitator.from_pretrained(run / "checkpoint")
    assert ck.cfg.mouth_interior and ck.cfg.mouth_mask and ck.mouth_interior is not None and ck.cfg.keypoint_lip_sides
    main(["-q", "train", "imitation", "--out", str(run), "--resume", "--steps", "3", "--device", "cpu"])
    assert Imitator.from_pretrained(run / "checkpoint").cfg.mouth_interior


def test_cross_identity_transfer_of_a_renderer_that_moves_nothing(synth_clips):
    """An untrained renderer returns the portrait unchanged: whatever the driving clip does, the gain
    is 0, up to MediaPipe's jitter on identical frames (tracking mode)."""
    from infp.data.portraits import default_portrait, prepare
    from infp.eval.imitation import cross_identity_transfer

    portrait = prepare(*default_portrait(), 256)
    clip = load_clips(list_clips(synth_clips), 256)[0]
    torch.manual_seed(0)
    still = Imitator(imitator_preset("tiny", size=256)).eval()
    [score] = cross_identity_transfer(still, [portrait], [clip], every=4)
    assert score.n > 5 and abs(score.mouth_gain) < 0.1 and abs(score.pose_gain) < 0.1


def _lips_keypoints(gap: float) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(1, K, 2) keypoints: every keypoint far out at a corner of the image except the inner lips, an
    ellipse 0.4 wide centred on the origin whose lips are `gap` apart; and the lips' arcs."""
    upper, lower = (torch.as_tensor(a) for a in tp.inner_lip_arc_keypoints())
    k = torch.full((1, len(tp.keypoint_indices()), 2), -0.95)
    xs = torch.linspace(0.2, -0.2, len(upper))  # left corner to right corner
    bulge = (1 - (xs / 0.2) ** 2).sqrt() * gap / 2
    k[0, upper, 0], k[0, upper, 1] = xs, -bulge
    k[0, lower, 0], k[0, lower, 1] = xs, bulge
    return k, (upper, lower)


def test_lip_sides_let_a_closing_mouth_meet_at_its_lip_line():
    """Source open (lips 0.2 apart), driving closed: with a plain spread a pixel just above the lip
    line reads about the middle of the source's opening (its teeth); with the lips split at the
    midline it reads the upper lip, and a pixel just below reads the lower lip."""
    from infp.models.warping import keypoint_flow

    src, arcs = _lips_keypoints(0.2)
    drv, _ = _lips_keypoints(0.0)
    size = 64
    plain, _ = keypoint_flow(src, drv, size, 0.05)
    split, _ = keypoint_flow(src, drv, size, 0.05, lips=arcs)
    col = size // 2  # x = 0, the middle of the mouth
    above, below = size // 2 - 2, size // 2 + 1  # rows 2 px above / 1 px below y = 0 (pixel centres)
    # flow = where the pixel reads the source, minus where it is; the source's lips sit at y = -0.1 / +0.1
    assert abs(plain[0, 1, above, col]) < 0.03 and abs(plain[0, 1, below, col]) < 0.03
    assert split[0, 1, above, col] < -0.07 and split[0, 1, below, col] > 0.07
    # away from the lips nothing changes
    torch.testing.assert_close(split[..., :20, :], plain[..., :20, :])


def test_lip_sides_need_the_keypoint_prior():
    with pytest.raises(ValueError, match="keypoint_prior"):
        imitator_preset("tiny", keypoint_lip_sides=True)
