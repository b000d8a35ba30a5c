"""The renderer's keypoint prior: the mirror map of the keypoints, the keypoint flow, the grown model,
the keypoint decoder's fit, and a fine-tune that adds the prior through the CLI."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from infp.cli import main
from infp.data.clip import list_clips
from infp.data.pairs import PairSampler, keypoints, load_clips
from infp.face import topology as tp
from infp.models import Imitator, imitator_preset, warp
from infp.models.warping import keypoint_flow
from infp.train.imitation import TrainConfig, build_model, load_grown
from infp.train.keypoints import fit_keypoint_decoder

# growing a checkpoint without the prior: `tiny` less the prior and its additions, then with the prior alone
TINY = imitator_preset("tiny", keypoint_prior=False, mouth_mask=False, paint_closing=False, paint_eyes=False,
                       keypoint_lid_sides=False,
                       keypoint_lip_sides=False, keypoint_head=0.0,
                       correction_max=0.0, paint_window=(1.0, 1.0))
TINY_KP = replace(TINY, keypoint_prior=True)


def test_keypoint_mirror_is_an_involution_that_swaps_sides():
    k, m = tp.keypoint_indices(), tp.keypoint_mirror()
    assert len(set(k.tolist())) == len(k) == len(m)
    np.testing.assert_array_equal(m[m], np.arange(len(k)))
    pos = {int(i): n for n, i in enumerate(k)}
    for a, b in [(tp.MOUTH_LEFT, tp.MOUTH_RIGHT), (tp.LEFT_EYE_OUTER, tp.RIGHT_EYE_OUTER),
                 (tp.LEFT_EYE_TOP, tp.RIGHT_EYE_TOP)]:
        assert m[pos[a]] == pos[b] and m[pos[b]] == pos[a]
    for a in (tp.FOREHEAD, tp.CHIN, tp.UPPER_LIP_INNER, tp.LOWER_LIP_INNER, tp.NOSE_TIP):
        assert m[pos[a]] == pos[a]  # on the midline


def test_mirrored_keypoints_match_a_frontal_face(synth_clips):
    """On the most frontal frame of a clip, the mirrored keypoints fall on the originals (a wrong
    pairing of left and right would put them tens of pixels off)."""
    clip = load_clips(list_clips(synth_clips), 64)[0]
    pts = [keypoints(clip.points[j], 64) for j in clip.usable]
    errs = [np.abs(keypoints(clip.points[j], 64, mirrored=True) - p).mean() for j, p in zip(clip.usable, pts)]
    shuffled = np.abs(pts[0][np.random.default_rng(0).permutation(len(pts[0]))] - pts[0]).mean()
    assert min(errs) < 0.15 * shuffled


def test_keypoints_follow_the_flipped_image(synth_clips):
    """Colours read at the mirrored keypoints of the flipped frame are the colours read at their mirror
    partners in the frame itself: the x flip matches the image flip."""
    clip = load_clips(list_clips(synth_clips), 64)[0]
    j = clip.usable[0]
    frame = torch.from_numpy(clip.frames[j].copy()).permute(2, 0, 1)[None].float()

    def read(img, k):  # (1, 3, S, S), (K, 2) -> (K, 3)
        return torch.nn.functional.grid_sample(img, torch.from_numpy(k)[None, None], align_corners=False)[0, :, 0].T

    k, km = keypoints(clip.points[j], 64), keypoints(clip.points[j], 64, mirrored=True)
    torch.testing.assert_close(read(frame.flip(-1), km), read(frame, k[tp.keypoint_mirror()]), atol=1e-3, rtol=0)


def test_sampler_mirrors_keypoints_with_the_images(synth_clips):
    """The same draw with and without augmentation: where the pair was mirrored, so are its keypoints."""
    frames = load_clips(list_clips(synth_clips), 64)
    plain, aug = PairSampler(frames, augment=False), PairSampler(frames)
    flips = 0
    for seed in range(12):
        a, b = plain.sample(np.random.default_rng(seed), 1), aug.sample(np.random.default_rng(seed), 1)
        assert b.driving_points.shape == (1, len(tp.keypoint_indices()), 2)
        if torch.equal(b.driving, a.driving):
            torch.testing.assert_close(b.driving_points, a.driving_points)
        else:
            assert torch.equal(b.driving, a.driving.flip(-1))
            flips += 1
            for got, want in ((b.source_points, a.source_points), (b.driving_points, a.driving_points)):
                torch.testing.assert_close(got[0], want[0][tp.keypoint_mirror()] * torch.tensor([-1.0, 1.0]))
    assert 0 < flips < 12


def test_keypoint_flow_moves_what_the_keypoints_move():
    k_src = torch.tensor([[[-0.2, 0.0], [0.3, 0.1]]])
    zero, change = keypoint_flow(k_src, k_src, 32, sigma=0.1)
    assert float(zero.abs().max()) == 0 and float(change.abs().max()) < 1e-6
    k_drv = k_src + torch.tensor([[[0.1, 0.0], [0.0, 0.0]]])
    flow, _ = keypoint_flow(k_src, k_drv, 32, sigma=0.1)
    # a blob at the first source keypoint lands on its driving position
    ys, xs = torch.meshgrid(torch.linspace(-1 + 1 / 32, 1 - 1 / 32, 32), torch.linspace(-1 + 1 / 32, 1 - 1 / 32, 32),
                            indexing="ij")
    blob = torch.exp(-((xs + 0.2) ** 2 + ys**2) / 0.005)[None, None]
    moved = warp(blob, flow)[0, 0]
    centre = float((moved * xs).sum() / moved.sum())
    assert abs(centre - (-0.1)) < 0.03
    assert float(flow[0, :, 0, 0].abs().max()) < 1e-3  # far from every keypoint nothing moves


def test_grown_model_keeps_the_old_renderer_and_adds_the_prior(tmp_path):
    torch.manual_seed(0)
    old = Imitator(TINY).eval()
    with torch.no_grad():  # a trained-looking F: nonzero output layer
        old.flow_estimator.out.weight.normal_(std=0.01)
    new = Imitator(TINY_KP).eval()
    added = load_grown(new, old.state_dict())
    assert added and all(n.startswith("keypoint_decoder.") for n in added)
    img = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        app = old.encode_appearance(img)
        z_src, z_drv = torch.randn(2, TINY.motion_dim), torch.randn(2, TINY.motion_dim)
        same_old, same_new = old.render(app, z_src, z_src), new.render(app, z_src, z_src)
        torch.testing.assert_close(same_new.image, same_old.image)  # no motion: no prior, the old rendering
        a, b = old.render(app, z_src, z_drv), new.render(app, z_src, z_drv)
        prior, _ = keypoint_flow(b.keypoints.source, b.keypoints.driving, TINY.feature_size, TINY.keypoint_sigma)
        torch.testing.assert_close(b.flow.flow, a.flow.flow + prior)
    new.save_pretrained(tmp_path / "kp")
    back = Imitator.from_pretrained(tmp_path / "kp")
    assert back.cfg.keypoint_prior and back.keypoint_decoder is not None


def test_fit_keypoint_decoder_lowers_the_error(synth_clips):
    torch.manual_seed(0)
    clips = load_clips(list_clips(synth_clips), 64)
    model = Imitator(TINY_KP)
    before = fit_keypoint_decoder(model, clips, steps=1, max_frames=200, progress=False)
    after = fit_keypoint_decoder(model, clips, steps=300, max_frames=200, progress=False)
    assert after.train_px < 0.5 * before.train_px and after.frames == before.frames > 0
    assert not torch.equal(model.keypoint_decoder.z_std, torch.ones(TINY.motion_dim))  # standardised input


def test_build_model_fits_a_new_decoder_only_on_a_frozen_encoder(synth_clips, tmp_path):
    Imitator(TINY).save_pretrained(tmp_path / "old")
    clips = load_clips(list_clips(synth_clips), 64)
    cfg = TrainConfig(init_from=str(tmp_path / "old"), freeze_motion_encoder=True)
    fitted = build_model(TINY_KP, cfg, clips, fresh=True, progress=False)
    untouched = Imitator(TINY_KP)
    torch.manual_seed(0)
    plain = build_model(TINY_KP, TrainConfig(init_from=str(tmp_path / "old")), clips, fresh=True, progress=False)
    k = torch.from_numpy(np.stack([keypoints(clips[0].points[j], 64) for j in clips[0].usable[:16]]))
    with torch.no_grad():
        from infp.data.pairs import to_tensor
        from infp.face.hybrid import represent
        reps = to_tensor(np.stack([represent(clips[0].frames[j], clips[0].points[j]) for j in clips[0].usable[:16]]))
        z = fitted.encode_motion(reps)

        def err(m):
            return float((m.keypoint_decoder(z) - k).abs().mean())

        assert err(fitted) < 0.5 * err(plain)
        assert err(plain) > 0.5 * err(untouched)
    assert not any(p.requires_grad for p in fitted.motion_encoder.parameters())


def test_cli_fine_tune_with_the_keypoint_prior(synth_clips, tmp_path):
    Imitator(TINY).save_pretrained(tmp_path / "old")
    run = tmp_path / "run"
    args = ["-q", "train", "imitation", "--data", str(synth_clips), "--out", str(run), "--init-from",
            str(tmp_path / "old"), "--freeze-motion-encoder", "--keypoint-prior", "--steps", "2", "--batch-size", "2",
            "--save-every", "2", "--no-gan", "--device", "cpu"]
    main(args)
    ck = Imitator.from_pretrained(run / "checkpoint")
    assert ck.cfg.keypoint_prior
    events = list((run / "logs").rglob("events.out.tfevents*"))
    assert events and b"gen/keypoint" in b"".join(e.read_bytes() for e in events)
    main(["-q", "train", "imitation", "--out", str(run), "--steps", "3", "--resume", "--device", "cpu"])


def test_keypoint_flow_equals_the_direct_sum():
    """The separable computation gives the Nadaraya-Watson sum over keypoints written out in full."""
    from infp.models.blocks import coords

    torch.manual_seed(0)
    k_src = torch.rand(3, 20, 2) * 2 - 1
    k_drv = k_src + 0.05 * torch.randn_like(k_src)
    size, sigma, bg = 16, 0.1, 0.02
    grid = coords(3, size, size, k_src).flatten(2).transpose(1, 2)  # (B, HW, 2)

    def density(k):
        return torch.exp(-((grid[:, :, None] - k[:, None]) ** 2).sum(-1) / (2 * sigma**2))  # (B, HW, K)

    w = density(k_drv)
    flow = (w[..., None] * (k_src - k_drv)[:, None]).sum(2) / (w.sum(2, keepdim=True) + bg)
    got_flow, got_change = keypoint_flow(k_src, k_drv, size, sigma, bg)
    torch.testing.assert_close(got_flow, flow.transpose(1, 2).reshape(3, 2, size, size))
    torch.testing.assert_close(got_change, (w.sum(2) - density(k_src).sum(2)).view(3, 1, size, size))
