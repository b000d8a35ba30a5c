"""Stage-2 data: latents from the tiny imitator, caching, skipping of unusable clips, and the window
sampler's rules (validity, determinism, static contexts, one-sided windows)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from infp.audio import save_wav
from infp.audio.mel import LogMel
from infp.data.clip import Clip, list_clips
from infp.data.motion import (
    MotionClip,
    WindowSampler,
    compute_latents,
    has_pauses,
    imitator_fingerprint,
    latent_moments,
    latent_stats,
    load_motion_clips,
    rest_latent,
    with_rests,
)
from infp.errors import InfpError
from infp.models import Imitator, imitator_preset

HOLES = slice(10, 20)  # frames whose landmarks the "holes" clip loses


def _copy_clip(src: Clip, dst: Path, clip_id: str, kind: str | None = None) -> Path:
    shutil.copytree(src.path, dst / clip_id)
    meta = json.loads((dst / clip_id / "meta.json").read_text())
    meta["id"] = clip_id
    meta["kind"] = kind or meta["kind"]
    (dst / clip_id / "meta.json").write_text(json.dumps(meta))
    return dst / clip_id


class Counting:
    """Counts the frames `encode_motion` sees (a spy around the instance's method)."""

    def __init__(self, imitator: Imitator):
        self.frames, self._encode = 0, imitator.encode_motion
        imitator.encode_motion = self

    def __call__(self, rep: torch.Tensor) -> torch.Tensor:
        self.frames += len(rep)
        return self._encode(rep)


@pytest.fixture(scope="module")
def world(synth_clips, tmp_path_factory):
    """The synthetic clip, a copy with a run of faceless frames, one with no face at all, a 'real' copy
    with a silent agent track, the tiny imitator saved to disk, and one load of all four."""
    root = tmp_path_factory.mktemp("motion")
    synth = list_clips(synth_clips)[0]
    holes = _copy_clip(synth, root / "data", "holes")
    points = np.load(holes / "landmarks.npy")
    points[HOLES] = np.nan
    np.save(holes / "landmarks.npy", points)
    faceless = _copy_clip(synth, root / "data", "faceless")
    np.save(faceless / "landmarks.npy", np.full_like(points, np.nan))
    real = _copy_clip(synth, root / "data", "real_silent", kind="real")
    save_wav(real / "agent.wav", np.zeros(synth.meta.n_frames * 640, np.float32))
    torch.manual_seed(0)
    imitator = Imitator(imitator_preset("tiny"))
    imitator.save_pretrained(root / "imi")
    clips = [synth, Clip.open(holes), Clip.open(faceless), Clip.open(real)]
    spy = Counting(imitator)
    load = load_motion_clips(clips, imitator, imitator_fingerprint(root / "imi"), LogMel(), root / "cache",
                             progress=False)
    return {"root": root, "clips": clips, "imitator": imitator, "spy": spy, "load": load, "first_frames": spy.frames}


def test_fingerprint_is_16_hex_of_the_weights(world):
    fp = imitator_fingerprint(world["root"] / "imi")
    assert len(fp) == 16 and int(fp, 16) >= 0
    with pytest.raises(InfpError, match="model.safetensors"):
        imitator_fingerprint(world["root"])


def test_latents_and_features_have_consistent_shapes(world):
    by_id = {c.id: c for c in world["load"].clips}
    T = world["clips"][0].meta.n_frames
    assert set(by_id) == {"clip_00000", "holes"}
    for c in by_id.values():
        assert c.latents.shape == (T, 16) and c.latents.dtype == np.float32
        assert c.agent.shape == c.partner.shape == (4 * T, 80)
        assert c.agent_active.shape == c.partner_active.shape == (T,) and c.agent_active.dtype == bool
    assert np.isfinite(by_id["clip_00000"].latents).all()
    holes = np.isnan(by_id["holes"].latents).all(1)
    assert holes[HOLES].all() and holes.sum() == HOLES.stop - HOLES.start
    # the faces the two clips share got the same latents (same frames, same model)
    keep = ~holes
    # float32 convolutions pick batch-size-dependent kernels: agree to ~1e-5 relative, not bitwise
    np.testing.assert_allclose(by_id["holes"].latents[keep], by_id["clip_00000"].latents[keep], rtol=1e-4, atol=1e-4)


def test_compute_latents_matches_batched_and_streamed(world):
    clip = world["clips"][0]
    a = compute_latents(clip, world["imitator"], batch_size=7)
    np.testing.assert_allclose(a, world["load"].clips[0].latents, rtol=1e-4, atol=1e-4)


def test_unusable_clips_are_skipped_and_counted(world):
    skipped = world["load"].skipped
    assert set(skipped) == {"faceless", "real_silent"}
    assert "speech" in skipped["real_silent"] and "face" in skipped["faceless"]
    T = world["clips"][0].meta.n_frames
    assert world["first_frames"] == 2 * T - (HOLES.stop - HOLES.start)  # the real clip was never decoded
    with pytest.raises(InfpError, match="no clip is usable"):
        load_motion_clips(world["clips"][2:], world["imitator"], "x", LogMel(), world["root"] / "cache", progress=False)


def test_second_load_reads_the_cache_and_another_imitator_recomputes(world):
    spy, before = world["spy"], world["spy"].frames
    again = load_motion_clips(world["clips"], world["imitator"], imitator_fingerprint(world["root"] / "imi"),
                              LogMel(), world["root"] / "cache", progress=False)
    assert spy.frames == before
    for a, b in zip(again.clips, world["load"].clips):
        np.testing.assert_array_equal(a.latents, b.latents)
        np.testing.assert_array_equal(a.agent, b.agent)
    assert again.skipped == world["load"].skipped
    other = load_motion_clips(world["clips"][:1], world["imitator"], "0123456789abcdef", LogMel(),
                              world["root"] / "cache", progress=False)
    assert spy.frames == before + world["clips"][0].meta.n_frames
    assert (world["root"] / "cache" / "latents-0123456789abcdef").is_dir()
    np.testing.assert_allclose(other.clips[0].latents, world["load"].clips[0].latents, rtol=1e-4, atol=1e-4)


def test_features_are_memory_mapped_and_an_old_cache_is_converted_not_recomputed(world):
    """The features (most of stage 2's data) are read-only maps of the cache, so the processes of a
    launch share one copy; a cache of the earlier format (one .npz per clip) is converted once."""
    c = world["load"].clips[0]
    assert isinstance(c.agent, np.memmap) and not c.agent.flags.writeable and not isinstance(c.latents, np.memmap)
    latents = world["root"] / "cache" / f"latents-{imitator_fingerprint(world['root'] / 'imi')}"
    (stem,) = {p.name.split(".")[0] for p in latents.glob(f"{c.id}-*.latents.npy")}
    np.savez(latents / f"{stem}.npz", latents=np.load(latents / f"{stem}.latents.npy"))
    (latents / f"{stem}.latents.npy").unlink()
    spy, before = world["spy"], world["spy"].frames
    again = load_motion_clips(world["clips"][:1], world["imitator"], latents.name.removeprefix("latents-"), LogMel(),
                              world["root"] / "cache", progress=False)
    assert spy.frames == before and (latents / f"{stem}.latents.npy").is_file() and not (latents / f"{stem}.npz").exists()
    np.testing.assert_array_equal(again.clips[0].latents, c.latents)
    (latents / f"{stem}.latents.npy").write_bytes(b"not an array")  # damaged: recomputed, not fatal
    load_motion_clips(world["clips"][:1], world["imitator"], latents.name.removeprefix("latents-"), LogMel(),
                      world["root"] / "cache", progress=False)
    assert spy.frames == before + world["clips"][0].meta.n_frames


def test_latent_stats(world):
    mean, std = latent_stats(world["load"].clips)
    rows = np.concatenate([c.latents for c in world["load"].clips])
    rows = rows[np.isfinite(rows).all(1)]
    np.testing.assert_allclose(mean, rows.mean(0), atol=1e-5)
    assert mean.shape == std.shape == (16,) and (std >= 1e-3).all()


# --- the sampler, on hand-made clips: latent row t is t + 1000 * clip number in every dimension ------

PF, F, Z = 2, 3, 4


def _fake(n: int, T: int, nan=(), agent=None, partner=None) -> MotionClip:
    lat = np.repeat((np.arange(T, dtype=np.float32) + 1000 * n)[:, None], Z, 1)
    lat[list(nan)] = np.nan
    frame_of_row = np.repeat(np.arange(T, dtype=np.float32), PF)[:, None]
    feats = np.repeat(frame_of_row, F, 1)  # feature row r holds its frame index
    a = np.zeros(T, bool) if agent is None else agent
    p = np.zeros(T, bool) if partner is None else partner
    return MotionClip(f"fake{n}", "synthetic", lat, feats, feats + 0.5, a, p)


def _turns(T: int) -> tuple[np.ndarray, np.ndarray]:
    """Agent speaks in [0, 30) and [60, 80), partner in [25, 60) and [85, T)."""
    a, p = np.zeros(T, bool), np.zeros(T, bool)
    a[0:30] = a[60:80] = True
    p[25:60] = p[85:] = True
    return a, p


@pytest.fixture
def fakes() -> list[MotionClip]:
    a, p = _turns(120)
    return [_fake(0, 120, nan=[50, 51], agent=a, partner=p), _fake(1, 60, agent=p[:60], partner=a[:60]),
            _fake(2, 11)]  # too short for 4 + 8: dropped


def test_sampler_is_deterministic_and_windows_are_valid(fakes):
    sampler = WindowSampler(fakes, window=8, context=4, style_frames=6, static_context_prob=0.25)
    assert len(sampler.clips) == 2 and "2 clip(s)" in sampler.describe()
    b1 = sampler.sample(np.random.default_rng([3, 1]), 64)
    b2 = sampler.sample(np.random.default_rng([3, 1]), 64)
    for x, y in zip(b1, b2):
        torch.testing.assert_close(x, y)
    assert b1.agent.shape == (64, PF * 8, F) and b1.target.shape == (64, 8, Z)
    assert b1.context.shape == (64, 4, Z) and b1.style.shape == (64, 6, Z) and b1.static.dtype == torch.bool
    for i in range(64):
        target, ctx, style = b1.target[i, :, 0], b1.context[i, :, 0], b1.style[i, :, 0]
        assert all(torch.isfinite(t).all() for t in (target, ctx, style, b1.agent[i]))
        s, clip_base = int(target[0]) % 1000, int(target[0]) // 1000 * 1000
        torch.testing.assert_close(target, torch.arange(s, s + 8, dtype=torch.float32) + clip_base)
        torch.testing.assert_close(b1.agent[i, :, 0], torch.arange(s, s + 8).repeat_interleave(PF).float())
        torch.testing.assert_close(b1.partner[i], b1.agent[i] + 0.5)
        if b1.static[i]:
            assert (ctx == ctx[0]).all() and int(ctx[0]) // 1000 * 1000 == clip_base
        else:
            torch.testing.assert_close(ctx, torch.arange(s - 4, s, dtype=torch.float32) + clip_base)
        # style: consecutive latents of the same clip, not overlapping the target (both clips allow it)
        assert (style.diff() == 1).all() and int(style[0]) // 1000 * 1000 == clip_base
        assert int(style[-1]) < int(target[0]) or int(style[0]) > int(target[-1])


def test_rest_is_the_median_of_the_silent_face_frames_and_comes_with_each_window(fakes):
    """Clip 0's agent is silent in [30, 60) and [80, 120) less its faceless frames 50 and 51: the rest
    is their median. A clip silent in fewer than REST_MIN_FRAMES frames rests at the median of all."""
    a, _ = _turns(120)
    quiet = [t for t in range(120) if not a[t] and t not in (50, 51)]
    np.testing.assert_allclose(rest_latent(fakes[0].latents, fakes[0].agent_active), np.median(quiet))
    loud = np.ones(40, bool)
    loud[:10] = False  # 10 silent frames: too few to be the rest alone
    np.testing.assert_allclose(rest_latent(_fake(3, 40).latents, loud), 19.5 + 3000)
    sampler = WindowSampler(fakes, window=8, context=4, style_frames=6)
    b = sampler.sample(np.random.default_rng(0), 16)
    assert b.rest.shape == (16, 1, Z)
    for i in range(16):
        clip = int(b.target[i, 0, 0]) // 1000
        expect = rest_latent(fakes[clip].latents, fakes[clip].agent_active)
        torch.testing.assert_close(b.rest[i, 0], torch.from_numpy(expect))


def test_given_rests_are_what_windows_and_moments_use(fakes):
    """`with_rests` sets a clip's rest to its silent median when it has pauses, else to the neutral of its
    typical latent (here: shifted by 7), and the sampler and the moments about the rest use it."""
    fakes = [*fakes[:-1], replace(fakes[-1], agent_active=np.ones_like(fakes[-1].agent_active))]  # a monologue
    paused = [has_pauses(c.latents, c.agent_active) for c in fakes]
    assert any(paused) and not paused[-1]
    shifted = with_rests(fakes, lambda z: z + 7)
    for c, d, p in zip(fakes, shifted, paused):
        np.testing.assert_allclose(d.rest, rest_latent(c.latents, c.agent_active) + (0 if p else 7))
    b = WindowSampler(shifted, window=8, context=4, style_frames=6).sample(np.random.default_rng(0), 8)
    for i in range(8):
        clip = int(b.target[i, 0, 0]) // 1000
        torch.testing.assert_close(b.rest[i, 0], torch.from_numpy(shifted[clip].rest))
    # every offset moves by the same 7: the covariance about the rest is unchanged
    np.testing.assert_allclose(latent_moments(shifted[:2], about_rest=True)[1], latent_moments(fakes[:2], about_rest=True)[1],
                               atol=1e-3)


def test_moments_about_the_rest_leave_out_where_each_clip_rests():
    """Two clips making the same motion about different rests: the plain covariance holds the gap
    between the rests, the covariance about the rest only the motion; the mean stays the plain mean."""
    t = np.arange(100, dtype=np.float32)
    motion = np.stack([np.sin(t / 5), np.cos(t / 7), 0 * t, 0 * t], 1).astype(np.float32)
    silent = np.zeros(100, bool)
    clips = [MotionClip(f"c{k}", "real", motion + 10 * k, np.zeros((200, F), np.float32),
                        np.zeros((200, F), np.float32), silent, silent) for k in range(2)]
    mean, plain = latent_moments(clips)
    _, about = latent_moments(clips, about_rest=True)
    all_rows = np.concatenate([c.latents for c in clips])
    np.testing.assert_allclose(mean, all_rows.mean(0), atol=1e-5)
    assert plain[2, 2] > 20 and about[2, 2] == pytest.approx(0, abs=1e-6)
    offsets = np.concatenate([motion - np.median(motion, 0)] * 2)
    np.testing.assert_allclose(about, np.cov(offsets, rowvar=False), atol=1e-4)


def test_valid_starts_avoid_faceless_frames(fakes):
    sampler = WindowSampler(fakes[:1], window=8, context=4, style_frames=6)
    # starts s in [4, 112], minus those whose [s - 4, s + 8) touches frames 50 or 51
    assert sampler.n_windows == (112 - 4 + 1) - len(range(43, 56))


def test_static_context_share(fakes):
    sampler = WindowSampler(fakes, window=8, context=4, style_frames=6, static_context_prob=0.3)
    share = float(sampler.sample(np.random.default_rng(0), 2000).static.float().mean())
    assert abs(share - 0.3) < 0.05
    none = WindowSampler(fakes, window=8, context=4, style_frames=6, static_context_prob=0.0)
    assert not none.sample(np.random.default_rng(0), 200).static.any()


def test_one_sided_windows(fakes):
    sampler = WindowSampler(fakes, window=8, context=4, style_frames=6, one_sided=True)
    full = WindowSampler(fakes, window=8, context=4, style_frames=6)
    assert 0 < sampler.n_windows < full.n_windows and "one-sided" in sampler.describe()
    batch = sampler.sample(np.random.default_rng(1), 300)
    by_base = {int(c.latents[0, 0]): c for c in fakes}
    for target in batch.target[:, :, 0]:
        clip = by_base[int(target[0]) // 1000 * 1000]
        s = int(target[0]) % 1000
        a, p = clip.agent_active[s : s + 8].any(), clip.partner_active[s : s + 8].any()
        assert a != p


def test_real_fraction_sets_the_share_of_real_windows(fakes):
    """--real-fraction q: a share q of the draws from the real clips, whatever their window counts."""
    from dataclasses import replace

    real = replace(fakes[1], kind="real")  # 60 frames: far fewer windows than the synthetic 120-frame clip
    clips = [fakes[0], real]
    by_window = WindowSampler(clips, window=8, context=4, style_frames=6)
    half = WindowSampler(clips, window=8, context=4, style_frames=6, real_fraction=0.5)
    share = lambda smp: float((smp.sample(np.random.default_rng(0), 2000).target[:, 0, 0] >= 1000).float().mean())
    assert share(by_window) < 0.4 and abs(share(half) - 0.5) < 0.04
    assert "1 real clip(s) give 50% of the draws" in half.describe()
    only_synthetic = WindowSampler(fakes, window=8, context=4, style_frames=6, real_fraction=0.9)
    np.testing.assert_allclose(only_synthetic._p, WindowSampler(fakes, window=8, context=4, style_frames=6)._p)


def test_gain_augmentation_shifts_each_track_within_its_range(fakes):
    plain = WindowSampler(fakes, window=8, context=4, style_frames=6)
    gained = WindowSampler(fakes, window=8, context=4, style_frames=6, gain_db=6.0)
    a, b = plain.sample(np.random.default_rng(5), 200), gained.sample(np.random.default_rng(5), 200)
    torch.testing.assert_close(a.target, b.target)  # the same windows: only the sound changes
    shift = (b.agent - a.agent)[:, 0, 0]  # the fakes' features are far above the silence floor
    assert shift.abs().max() <= 6 / 40 + 1e-6 and shift.std() > 0.03
    assert not torch.allclose((b.partner - a.partner)[:, 0, 0], shift)  # each track its own gain


def test_one_sided_without_such_windows_is_an_error():
    both = np.ones(50, bool)
    with pytest.raises(InfpError, match="one-sided"):
        WindowSampler([_fake(0, 50, agent=both, partner=both)], window=8, context=4, style_frames=6, one_sided=True)


def test_nothing_long_enough_is_an_error(fakes):
    with pytest.raises(InfpError, match="long enough"):
        WindowSampler(fakes, window=200, context=10, style_frames=20)
    with pytest.raises(InfpError, match="style reference of 1000 frames"):
        WindowSampler(fakes, window=8, context=4, style_frames=1000)


def test_style_reference_may_be_longer_than_a_window():
    sampler = WindowSampler([_fake(0, 60)], window=8, context=4, style_frames=30)
    batch = sampler.sample(np.random.default_rng(1), 6)
    assert batch.style.shape[1] == 30 and torch.isfinite(batch.style).all()


def test_style_may_overlap_when_the_clip_is_short():
    """A clip of exactly context + window frames: the style segment can only come from the window."""
    sampler = WindowSampler([_fake(0, 12)], window=8, context=4, style_frames=10)
    batch = sampler.sample(np.random.default_rng(0), 20)
    assert torch.isfinite(batch.style).all() and (batch.style[:, :, 0].diff(dim=1) == 1).all()


def test_fingerprint_follows_the_motion_encoder_only(tmp_path):
    """A renderer fine-tuned with E_m frozen keeps the fingerprint (its latents are the same); any change
    to E_m changes it."""
    torch.manual_seed(0)
    imi = Imitator(imitator_preset("tiny"))
    imi.save_pretrained(tmp_path / "a")
    with torch.no_grad():
        next(imi.decoder.parameters()).add_(0.1)
    imi.save_pretrained(tmp_path / "b")
    with torch.no_grad():
        next(imi.motion_encoder.parameters()).add_(1e-3)
    imi.save_pretrained(tmp_path / "c")
    fa, fb, fc = (imitator_fingerprint(tmp_path / k) for k in "abc")
    assert fa == fb != fc
