"""Stage 2 networks and diffusion: shapes, init, modulation, CFG dropout, DDIM, windowed generation,
checkpoints and a few training steps (tiny preset, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infp.diffusion import CondDropout, DiffusionConfig, denoising_loss, generate
from infp.diffusion.sampling import (
    LIVE_LOOKAHEAD,
    Span,
    WindowedGenerator,
    sample_window,
    window_blend,
    window_overlap,
    window_schedule,
    window_spans,
)
from infp.diffusion.training import MotionBatch, min_snr_weights
from infp.errors import InfpError
from infp.models.attention import band_mask
from infp.models.denoiser import timestep_embedding
from infp.models.motion_config import motion_preset
from infp.models.motion_generator import Condition, MotionGenerator
from infp.models.motion_guider import ModulatedLinear

CFG = motion_preset("tiny")


def _model(seed: int = 0, **overrides) -> MotionGenerator:
    """A tiny generator whose zero-initialised layers are given small seeded values, so its output is
    not trivially zero."""
    torch.manual_seed(seed)
    m = MotionGenerator(motion_preset("tiny", **overrides))
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape) * 0.05)
    return m.eval()


def _rows(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(CFG.audio_per_frame * frames, CFG.audio_input_dim, generator=torch.Generator().manual_seed(seed))


def _batch(b: int = 3, seed: int = 0) -> MotionBatch:
    g = torch.Generator().manual_seed(seed)
    w, c, r = CFG.window, CFG.context, CFG.style_frames
    rows = lambda: torch.randn(b, CFG.audio_per_frame * w, CFG.audio_input_dim, generator=g)
    lat = lambda n: torch.randn(b, n, CFG.motion_dim, generator=g)
    return MotionBatch(rows(), rows(), lat(w), lat(c), lat(r))


def test_shapes_and_untrained_output_is_zero():
    m = MotionGenerator(CFG)
    b = _batch()
    cond = m.condition(b.agent, b.partner, m.style(b.style), b.context)
    assert cond.f_m.shape == (3, CFG.window, CFG.width) and cond.prev.shape == (3, CFG.context, CFG.width)
    eps = m(b.target, torch.tensor([0, 500, 999]), cond)
    assert eps.shape == b.target.shape
    assert torch.all(eps == 0), "the zero-initialised output layer makes an untrained network predict zero noise"


@pytest.mark.parametrize("overrides", [{}, {"use_memory": False}, {"use_style": False}, {"audio_film": True},
                                       {"relative": True}, {"relative": True, "band_emphasis": 3.0},
                                       {"rest_anchor": True, "band_emphasis": 3.0}])
def test_ablations_build_and_run(overrides):
    m = _model(**overrides)
    b = _batch()
    rest = b.context[:, :1] if m.cfg.rest_anchor else None
    eps = m(b.target, torch.tensor([1, 2, 3]), m.condition(b.agent, b.partner, m.style(b.style), b.context, rest=rest))
    assert eps.shape == b.target.shape and torch.isfinite(eps).all()
    names = {n for n, _ in m.named_parameters()}
    assert any("verbal.entries" in n for n in names) == overrides.get("use_memory", True)
    assert any("modulation" in n for n in names) == (overrides.get("use_style", True) and overrides.get("use_memory", True))


def test_modulated_linear_demodulates_and_neutral_style():
    lin = ModulatedLinear(8, 6, style_dim=4)
    entries = torch.randn(5, 8)
    w = lin.weight
    neutral = lin(entries, torch.zeros(2, 4))  # affine bias 1: the plain demodulated weight
    ref = entries @ (w / w.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(neutral[0], ref, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        lin.affine.weight.normal_()
    style = torch.randn(2, 4)
    out = lin(entries, style)
    assert not torch.allclose(out[0], out[1]), "different styles give different entries"
    scale = lin.affine(style)
    eff = w[None] * scale[:, None]
    assert torch.allclose((eff / eff.norm(dim=2, keepdim=True)).norm(dim=2), torch.ones(2, 6))


def test_memory_banks_are_the_papers_size():
    base = motion_preset("base")
    m = MotionGenerator(base)
    assert m.guider.verbal.entries.shape == (64, 512) and m.guider.nonverbal.entries.shape == (64, 512)
    assert len(m.denoiser.blocks) == 4


def test_role_comes_from_the_track_not_a_label():
    """Swapping the tracks changes f_m: A_self reads M_v and A_other reads M_nv."""
    m = _model()
    b = _batch()
    s = m.style(None, 3)
    f1 = m.condition(b.agent, b.partner, s, b.context).f_m
    f2 = m.condition(b.partner, b.agent, s, b.context).f_m
    assert not torch.allclose(f1, f2)


def test_condition_dropout_uses_null_embeddings():
    m = _model()
    b = _batch()
    s = m.style(b.style)
    drop = torch.tensor([True, False, True])
    c = m.condition(b.agent, b.partner, s, b.context, drop_audio=drop, drop_context=~drop)
    full = m.condition(b.agent, b.partner, s, b.context)
    assert torch.equal(c.f_m[0], m.null_audio[0].expand(CFG.window, -1)) and torch.equal(c.f_m[1], full.f_m[1])
    assert torch.equal(c.prev[1], m.null_context[0]) and torch.equal(c.prev[0], full.prev[0])


def test_training_dropout_rates_follow_the_paper(monkeypatch):
    m = _model()
    seen = {"style": [], "audio": [], "context": []}
    real_condition = m.condition

    def spy(agent, partner, style, context, drop_audio=None, drop_context=None, rest=None):
        seen["style"] += (style.abs().sum(1) == 0).tolist()
        seen["audio"] += drop_audio.tolist()
        seen["context"] += drop_context.tolist()
        return real_condition(agent, partner, style, context, drop_audio, drop_context, rest)

    monkeypatch.setattr(m, "condition", spy)
    g = torch.Generator().manual_seed(0)
    noise = DiffusionConfig().training_scheduler()
    for _ in range(60):
        denoising_loss(m, _batch(8), noise, g, CondDropout())
    rates = {k: float(np.mean(v)) for k, v in seen.items()}
    assert abs(rates["style"] - 0.3) < 0.07 and abs(rates["audio"] - 0.5) < 0.07 and abs(rates["context"] - 0.5) < 0.07
    seen = {k: [] for k in seen}
    denoising_loss(m, _batch(8), noise, g, CondDropout(0, 0, 0))
    assert not any(seen["audio"]) and not any(seen["context"]) and not any(seen["style"])


@pytest.mark.parametrize("clip", [None, 4.0])
def test_ddim_matches_the_closed_form_update(clip):
    """Our sampler (diffusers' DDIM, leading spacing, eta 0, optional x0 clipping) against DDIM written
    out by hand."""
    m = _model()
    diff = DiffusionConfig()
    sched = diff.sampling_scheduler(20, clip_sample=clip)
    b = _batch(2)
    cond = m.condition(b.agent, b.partner, m.style(None, 2), b.context)
    with torch.no_grad():
        ours = sample_window(m, sched, cond, guidance=1.0, generator=torch.Generator().manual_seed(3))
        abar = diff.training_scheduler().alphas_cumprod
        x = torch.randn((2, CFG.window, CFG.motion_dim), generator=torch.Generator().manual_seed(3))
        ts = list(range(950, -1, -50))  # leading: 950, 900, ..., 0
        assert [int(t) for t in sched.timesteps] == ts
        for t in ts:
            eps = m(x, torch.full((2,), t), cond)
            a_t, a_prev = abar[t], abar[t - 50] if t >= 50 else abar[0]
            x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            if clip is not None:
                x0 = x0.clamp(-clip, clip)
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(ours, x, atol=1e-4, rtol=1e-4)


def test_guidance_combines_conditional_and_unconditional():
    m = _model()
    diff = DiffusionConfig()
    b = _batch(1)
    cond = m.condition(b.agent, b.partner, m.style(None, 1), b.context)
    uncond = Condition(m.null_audio.expand_as(cond.f_m), cond.prev)
    with torch.no_grad():
        g = lambda: torch.Generator().manual_seed(1)
        one = sample_window(m, diff.sampling_scheduler(1), cond, 1.0, g())
        zero = sample_window(m, diff.sampling_scheduler(1), uncond, 1.0, g())
        three = sample_window(m, diff.sampling_scheduler(1), cond, 3.0, g())
    # one DDIM step is affine in eps, so guidance 3 lies at uncond + 3 (cond - uncond)
    torch.testing.assert_close(three, zero + 3 * (one - zero), atol=1e-4, rtol=1e-4)


# Seeded reference: `_model(0)`, 30 frames, 20 DDIM steps, guidance 2, seed 7, the default sampler
# (leading spacing, x0 clipped to +-4). Recorded from this implementation (torch 2.13 CPU); a change
# means sampling changed. Overlap 0: windows of 12 from 0 and 12, the last moved back to end at 30 and
# holding the 6 frames it shares with the second (REFERENCE_LAST was [-3.68031, -1.79071, -3.36957,
# -3.40699] when it regenerated them). Default overlap (7 of the tiny preset's 12): windows from 0, 5,
# 10, 15 and 18.
REFERENCE_FIRST = [-3.32247, 1.33307, 3.27057, -3.64158]
REFERENCE_LAST = {0: [-3.67794, -1.78779, -3.3764, -3.4035], None: [3.4414, 3.42006, -3.6758, 3.28475]}


@pytest.mark.parametrize("overlap", [0, None])
def test_seeded_sampling_matches_reference(overlap):
    m = _model(0)
    run = lambda: generate(m, DiffusionConfig(), _rows(30, 1), _rows(30, 2), torch.zeros(CFG.motion_dim), steps=20,
                           guidance=2.0, seed=7, overlap=overlap)
    z = run()
    assert z.shape == (30, CFG.motion_dim) and torch.isfinite(z).all()
    assert torch.equal(z, run()), "same seed, same latents"
    torch.testing.assert_close(z[0, :4], torch.tensor(REFERENCE_FIRST), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(z[-1, :4], torch.tensor(REFERENCE_LAST[overlap]), atol=1e-4, rtol=1e-4)


def _spy_windows(monkeypatch, m: MotionGenerator) -> tuple[list, list]:
    """Record each window's context (raw latents) and held frames (normalised, or None)."""
    from infp.diffusion import sampling

    contexts, held = [], []
    real_condition, real_sample = m.condition, sampling.sample_window

    def condition(agent, partner, style, context, drop_audio=None, drop_context=None, rest=None):
        contexts.append(m.denormalize(context[0]).clone())
        return real_condition(agent, partner, style, context, drop_audio, drop_context, rest)

    def sample(model, scheduler, cond, guidance, generator, known=None, blend=0):
        held.append(None if known is None else known[0].clone())
        return real_sample(model, scheduler, cond, guidance, generator, known, blend)

    monkeypatch.setattr(m, "condition", condition)
    monkeypatch.setattr(sampling, "sample_window", sample)
    return contexts, held


def test_window_schedule():
    assert window_spans(30, 12) == [Span(0, 0, 12), Span(12, 12, 24), Span(18, 24, 30)]  # the last moved back to end at 30
    assert window_spans(36, 12) == [Span(0, 0, 12), Span(12, 12, 24), Span(24, 24, 36)]
    assert window_spans(30, 12, overlap=4) == [Span(0, 0, 12), Span(8, 12, 20), Span(16, 20, 28), Span(18, 28, 30)]
    assert window_spans(5, 12) == [Span(0, 0, 5)] and window_spans(0, 12) == []
    # look-ahead: each window keeps all but its last 2 frames; the last window keeps everything to the end
    assert window_spans(30, 12, overlap=4, lookahead=2) == [Span(0, 0, 10), Span(6, 10, 16), Span(12, 16, 22),
                                                             Span(18, 22, 30)]
    for n in (12, 13, 47, 100):
        for overlap in (0, 3, 8):
            for look in (0, 2):
                spans = window_spans(n, 12, overlap, look)
                assert spans[-1].start + 12 == n and all(s.start + 12 <= n for s in spans), \
                    "every window is full length, inside the conversation"
                assert [s.new for s in spans] == [0, *(s.end for s in spans[:-1])], "each keeps from where the last ended"
                assert spans[-1].end == n, "the last keeps everything to the end"
                assert all(s.end == s.start + 12 - look for s in spans[:-1]), "the others leave out the look-ahead"
                assert all(s.new - s.start >= overlap for s in spans[1:]), "each holds at least `overlap` frames"


def test_live_schedule_is_the_short_hop():
    overlap, look = window_schedule(CFG, live=True)
    assert (overlap, look) == (CFG.window - CFG.context, LIVE_LOOKAHEAD)
    assert window_schedule(CFG) == (window_overlap(CFG), 0)
    m = _model()
    with pytest.raises(InfpError, match="overlap"):
        WindowedGenerator(m, DiffusionConfig(), torch.zeros(CFG.motion_dim), overlap=CFG.window - 1, live=True)


@pytest.mark.parametrize("overlap", [0, 4])
def test_windows_continue_from_the_previous_windows_latents(monkeypatch, overlap):
    m = _model()
    contexts, held = _spy_windows(monkeypatch, m)
    n, w, c, first = 30, CFG.window, CFG.context, torch.randn(CFG.motion_dim)
    z = generate(m, DiffusionConfig(), _rows(n), _rows(n, 1), first, steps=2, guidance=1.5, overlap=overlap)
    assert z.shape == (n, CFG.motion_dim)
    spans = window_spans(n, w, overlap)
    assert len(contexts) == len(held) == len(spans)
    torch.testing.assert_close(contexts[0], first.expand(c, -1), atol=1e-5, rtol=1e-5)
    assert held[0] is None
    for ctx, kept, (s, new, _) in zip(contexts[1:], held[1:], spans[1:]):
        torch.testing.assert_close(ctx, z[s - c : s], atol=1e-5, rtol=1e-5)  # the latents just before the window
        if new == s:  # a window that shares no frames holds none
            assert kept is None
        else:  # and holds those it shares
            torch.testing.assert_close(m.denormalize(kept), z[s:new], atol=1e-5, rtol=1e-5)


def test_relative_windows_are_offsets_from_the_context_end():
    """With `relative` the network works in offsets from the context's last latent: a network that
    predicts clean offsets of zero (an untrained one, under clean-latent prediction) samples a window
    that stays where the context ended, around held frames too; the absolute model lands on the mean
    (0). Training regresses onto the same offsets."""
    diff = DiffusionConfig(prediction="sample")
    b = _batch(2)
    for relative in (False, True):
        m = MotionGenerator(motion_preset("tiny", relative=relative)).eval()  # zero output layer
        cond = m.condition(b.agent, b.partner, m.style(None, 2), b.context)
        end = b.context[:, -1:] if relative else torch.zeros_like(b.context[:, -1:])
        torch.testing.assert_close(cond.anchor, end)
        with torch.no_grad():
            x = sample_window(m, diff.sampling_scheduler(4), cond, 2.0, torch.Generator().manual_seed(0))
            held = sample_window(m, diff.sampling_scheduler(4), cond, 2.0, torch.Generator().manual_seed(0),
                                 b.target[:, :3])
        # up to the last DDIM step's residual noise: alpha_bar(0) is not 1 (set_alpha_to_one=False)
        torch.testing.assert_close(x, end.expand_as(x), atol=0.05, rtol=0)
        torch.testing.assert_close(held[:, :3], b.target[:, :3])
        torch.testing.assert_close(held[:, 3:], end.expand_as(held[:, 3:]), atol=0.05, rtol=0)
        noise = diff.training_scheduler()
        loss = denoising_loss(m, b, noise, torch.Generator().manual_seed(0), CondDropout()).item()
        assert loss == pytest.approx(((b.target - end) ** 2).mean().item(), rel=1e-5)


def test_rest_anchored_windows_are_offsets_from_the_rest():
    """With `rest_anchor` the network works in offsets from the rest latent, and reads its context as
    offsets from it too: an untrained clean-latent model samples the rest itself, training regresses
    onto target - rest, and moving rest, context and target together changes neither the condition
    nor the loss (the network never sees absolute latents). It cannot run without a rest."""
    diff = DiffusionConfig(prediction="sample")
    b = _batch(2)
    rest = torch.randn(2, 1, CFG.motion_dim, generator=torch.Generator().manual_seed(5))
    m = MotionGenerator(motion_preset("tiny", rest_anchor=True)).eval()  # zero output layer
    assert window_blend(m.cfg) > 0
    cond = m.condition(b.agent, b.partner, m.style(None, 2), b.context, rest=rest)
    torch.testing.assert_close(cond.anchor, rest)
    with torch.no_grad():
        x = sample_window(m, diff.sampling_scheduler(4), cond, 2.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, rest.expand_as(x), atol=0.05, rtol=0)
    noise = diff.training_scheduler()
    loss = lambda batch: denoising_loss(m, batch, noise, torch.Generator().manual_seed(0), CondDropout()).item()
    assert loss(b._replace(rest=rest)) == pytest.approx(((b.target - rest) ** 2).mean().item(), rel=1e-5)
    m = _model(rest_anchor=True)
    shift = 3 * torch.randn(1, 1, CFG.motion_dim, generator=torch.Generator().manual_seed(6))
    moved = b._replace(target=b.target + shift, context=b.context + shift, rest=rest + shift)
    c2 = m.condition(moved.agent, moved.partner, m.style(None, 2), moved.context, rest=moved.rest)
    torch.testing.assert_close(c2.prev, m.condition(b.agent, b.partner, m.style(None, 2), b.context, rest=rest).prev)
    assert loss(moved) == pytest.approx(loss(b._replace(rest=rest)), rel=1e-4)
    with pytest.raises(ValueError, match="rest"):
        m.condition(b.agent, b.partner, m.style(None, 2), b.context)
    with pytest.raises(ValueError, match="not both"):
        motion_preset("tiny", rest_anchor=True, relative=True)


def test_a_returning_anchor_starts_at_the_context_end_and_decays_to_the_rest():
    """`rest_return` tau: the anchor of window frame t is rest + (context end - rest) exp(-(t + 1) / tau),
    so an untrained clean-latent model starts its window beside the context's last latent and ends
    near the rest; it is refused without `rest_anchor`."""
    b = _batch(2)
    rest = torch.randn(2, 1, CFG.motion_dim, generator=torch.Generator().manual_seed(5))
    m = MotionGenerator(motion_preset("tiny", rest_anchor=True, rest_return=2.0)).eval()
    a = m.anchor(b.context, rest)
    assert a.shape == (2, CFG.window, CFG.motion_dim)
    decay = torch.exp(-torch.arange(1, CFG.window + 1) / 2.0).view(1, -1, 1)
    torch.testing.assert_close(a, rest + (b.context[:, -1:] - rest) * decay)
    cond = m.condition(b.agent, b.partner, m.style(None, 2), b.context, rest=rest)
    with torch.no_grad():
        x = sample_window(m, DiffusionConfig(prediction="sample").sampling_scheduler(4), cond, 2.0,
                          torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, a, atol=0.05, rtol=0)
    with pytest.raises(ValueError, match="rest_return"):
        motion_preset("tiny", rest_return=2.0)


def test_blended_join_starts_where_the_held_frames_end():
    """`blend`: the window is sampled freely (the same draws as without held frames), and its new frames
    are shifted by (last held frame - the window's own estimate of it), fading to zero over `blend`
    frames: the first new frame steps from the held end as the free window steps there. Relative
    models join windows this way."""
    m, diff, k, blend = _model(relative=True), DiffusionConfig(), 4, 3
    b = _batch(1)
    cond = m.condition(b.agent, b.partner, m.style(None, 1), b.context)
    known = 2 * torch.randn(1, k, CFG.motion_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        g = lambda: torch.Generator().manual_seed(1)
        free = sample_window(m, diff.sampling_scheduler(5), cond, 2.0, g())
        out = sample_window(m, diff.sampling_scheduler(5), cond, 2.0, g(), known, blend)
    assert torch.equal(out[:, :k], known)
    shift = known[:, -1] - free[:, k - 1]
    for j, fade in enumerate([1, 2 / 3, 1 / 3, 0, 0]):
        torch.testing.assert_close(out[:, k + j], free[:, k + j] + fade * shift, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, k] - out[:, k - 1], free[:, k] - free[:, k - 1], atol=1e-5, rtol=0)
    assert window_blend(m.cfg) > 0 and window_blend(_model().cfg) == 0


def test_held_frames_are_kept_and_steer_the_rest():
    m, diff = _model(), DiffusionConfig()
    b = _batch(1)
    cond = m.condition(b.agent, b.partner, m.style(None, 1), b.context)
    known = 3 * torch.randn(1, 5, CFG.motion_dim, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        g = lambda: torch.Generator().manual_seed(1)
        free = sample_window(m, diff.sampling_scheduler(10), cond, 2.0, g())
        held = sample_window(m, diff.sampling_scheduler(10), cond, 2.0, g(), known)
    assert torch.equal(held[:, :5], known)
    assert (held[:, 5:] - free[:, 5:]).abs().max() > 1e-3, "the frames after the held ones see them"
    with pytest.raises(InfpError, match="overlap"):
        WindowedGenerator(m, diff, torch.zeros(CFG.motion_dim), overlap=CFG.window - CFG.context + 1)


def test_short_and_empty_conversations():
    m = _model()
    assert generate(m, DiffusionConfig(), _rows(5), _rows(5), torch.zeros(CFG.motion_dim), steps=2).shape == (5, CFG.motion_dim)
    assert generate(m, DiffusionConfig(), _rows(0), _rows(0), torch.zeros(CFG.motion_dim), steps=2).shape == (0, CFG.motion_dim)
    with pytest.raises(ValueError):
        generate(m, DiffusionConfig(), _rows(5), _rows(6), torch.zeros(CFG.motion_dim), steps=2)


@pytest.mark.parametrize("live", [False, True])
def test_streaming_windows_equal_offline_generation(live):
    m = _model()
    n = 2 * CFG.window + 3
    a, p, first = _rows(n), _rows(n, 1), torch.randn(CFG.motion_dim)
    offline = generate(m, DiffusionConfig(), a, p, first, steps=3, seed=4, live=live)
    gen = WindowedGenerator(m, DiffusionConfig(), first, steps=3, seed=4, live=live)
    k, w = CFG.audio_per_frame, CFG.window
    spans = gen.spans(n)
    # pushed windows keep their default frames (all but the look-ahead); only the last is told where to end
    online = torch.cat([gen.window(a[k * s : k * (s + w)], p[k * s : k * (s + w)], s, e if i == len(spans) - 1 else None)
                        for i, (s, _, e) in enumerate(spans)])
    assert online.shape == (n, CFG.motion_dim)
    torch.testing.assert_close(online, offline, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="does not continue"):
        gen.window(a[: k * w], p[: k * w], 0)  # 24 frames are done: a window from 0 cannot add to them


def test_whitening_gives_unit_covariance_and_inverts():
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(CFG.motion_dim, CFG.motion_dim, generator=g) * torch.logspace(0, -3, CFG.motion_dim)[:, None]
    z = torch.randn(4000, CFG.motion_dim, generator=g) @ mix + 3.0  # very unevenly used dimensions
    m = MotionGenerator(CFG)
    k = m.set_latent_whitening(z.mean(0), torch.cov(z.T), keep=0.999999)
    x = m.normalize(z)
    cov = torch.cov(x.T)
    torch.testing.assert_close(cov[:k, :k], torch.eye(k), atol=0.05, rtol=0)
    assert k < CFG.motion_dim and torch.allclose(x[:, k:], torch.zeros(1), atol=1e-4), "dropped directions map to 0"
    torch.testing.assert_close(m.denormalize(x), z, atol=1e-2, rtol=0)  # up to the dropped variance (std <= 1e-3)


def test_whitening_onto_chosen_directions():
    """`kept` picks principal directions by more than their variance (train.motion.visible_directions):
    a kept small one is whitened to unit variance, a dropped large one maps to zero."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4000, CFG.motion_dim, generator=g) * torch.logspace(0, -2, CFG.motion_dim)  # axis-aligned
    kept = torch.zeros(CFG.motion_dim, dtype=torch.bool)
    kept[[0, 5, CFG.motion_dim - 1]] = True
    m = MotionGenerator(CFG)
    assert m.set_latent_whitening(z.mean(0), torch.cov(z.T), kept=kept) == 3
    x = m.normalize(z)
    torch.testing.assert_close(x.std(0)[kept], torch.ones(3), atol=0.05, rtol=0)
    assert x[:, ~kept].abs().max() < 1e-4


@pytest.mark.parametrize("film", [False, True])  # True: every option that is not in the paper
def test_save_load_round_trip_keeps_latent_stats_and_schedule(tmp_path, film):
    m = _model(audio_film=film, relative=film, band_emphasis=2.0 * film)
    m.set_latent_stats(np.arange(CFG.motion_dim), np.full(CFG.motion_dim, 2.0))
    m.save_pretrained(tmp_path / "ck", diffusion=DiffusionConfig(train_steps=500).to_dict())
    back = MotionGenerator.from_pretrained(tmp_path / "ck", preset="tiny")
    assert back.cfg.audio_film == back.cfg.relative == film and back.cfg.band_emphasis == 2.0 * film
    assert m.state_dict().keys() == back.state_dict().keys()
    for (k, v), (_, w) in zip(m.state_dict().items(), back.state_dict().items()):
        assert torch.equal(v, w), k
    assert DiffusionConfig.from_checkpoint(tmp_path / "ck").train_steps == 500
    with pytest.raises(InfpError, match="preset"):
        MotionGenerator.from_pretrained(tmp_path / "ck", preset="base")


def test_stage1_checkpoint_is_refused_as_stage2(tmp_path):
    from infp.models import Imitator, imitator_preset

    Imitator(imitator_preset("tiny")).save_pretrained(tmp_path / "imi")
    with pytest.raises(InfpError, match="stage-1"):
        MotionGenerator.from_pretrained(tmp_path / "imi")


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    m = MotionGenerator(CFG)
    opt = torch.optim.AdamW(m.parameters(), lr=2e-3)
    noise = DiffusionConfig().training_scheduler()
    fixed = _batch(16, seed=5)

    def loss_at(seed):
        return denoising_loss(m, fixed, noise, torch.Generator().manual_seed(seed), CondDropout(0, 0, 0))

    with torch.no_grad():
        before = np.mean([loss_at(s).item() for s in range(8)])
    for step in range(40):
        loss = denoising_loss(m, fixed, noise, torch.Generator().manual_seed(100 + step), CondDropout())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = np.mean([loss_at(s).item() for s in range(8)])
    assert after < 0.8 * before, (before, after)


def test_velocity_loss_charges_jitter_not_offsets():
    """Two predictions with the same per-frame error: one steady, one alternating sign from frame to
    frame. The plain loss cannot tell them apart; the velocity term charges only the jitter."""
    noise = DiffusionConfig(prediction="sample").training_scheduler()
    b = _batch(2)
    sign = torch.tensor([1.0, -1.0]).repeat(CFG.window // 2)[None, :, None]

    class Fixed:  # a stand-in network with a fixed prediction (absolute latents: anchor 0)
        def __init__(self, pred):
            self.pred = pred

        def __call__(self, x_t, t, cond):
            return self.pred

        def anchor(self, context, rest=None):
            return torch.zeros_like(context[:, -1:])

        def to_diffusion(self, offsets):
            return offsets

    steady, jitter = Fixed(b.target + 0.1), Fixed(b.target + 0.1 * sign)
    loss = lambda model, v: denoising_loss(model, b, noise, torch.Generator().manual_seed(0), CondDropout(), v).item()
    assert loss(steady, 0.0) == pytest.approx(0.01) and loss(jitter, 0.0) == pytest.approx(0.01)
    assert loss(steady, 1.0) == pytest.approx(0.01)
    assert loss(jitter, 1.0) == pytest.approx(0.01 + 0.04)  # frame-to-frame steps of 0.2


def test_min_snr_weights_cap_the_barely_noised_timesteps():
    """Min-SNR-gamma: the clean-latent error counts min(SNR, gamma) times. For noise prediction (whose
    loss is SNR times that error) the weight is 1 where SNR <= gamma and gamma / SNR above; a huge
    gamma leaves the loss as it was, a small one lowers it (the low timesteps weigh less)."""
    noise = DiffusionConfig().training_scheduler()
    t = torch.tensor([10, 200, 500, 900])
    a = noise.alphas_cumprod[t]
    snr = a / (1 - a)
    w = min_snr_weights(noise, t, 5.0)
    assert torch.allclose(w, torch.where(snr > 5, 5 / snr, torch.ones_like(snr)), rtol=1e-5)
    assert w[0] < 0.01 and w[-1] == 1.0
    assert torch.allclose(min_snr_weights(noise, t, 5.0, "sample"), snr.clamp(max=5).float(), rtol=1e-5)
    m, b = _model(), _batch(8)
    loss = lambda g: denoising_loss(m, b, noise, torch.Generator().manual_seed(0), CondDropout(), 1.0, g).item()
    assert loss(1e12) == pytest.approx(loss(None), rel=1e-6) and loss(0.5) < loss(None)


@pytest.mark.parametrize("dilation, reach", [(1, 6), (3, 26)])
def test_audio_encoder_reach_grows_with_dilation(dilation, reach):
    """Each encoded frame sees +-2 (1 + d + d^2) frames of audio with 3 layers: a change in one frame
    of audio moves exactly the frames that far from it."""
    from infp.models.audio_encoder import AudioEncoder

    torch.manual_seed(0)
    enc = AudioEncoder(motion_preset("tiny", audio_layers=3, audio_dilation=dilation))
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(torch.randn(p.shape) * 0.1)  # the residual branches start at zero
    rows = _rows(80)[None]
    moved = rows.clone()
    k = CFG.audio_per_frame
    moved[:, 40 * k : 41 * k] += 1.0  # frame 40
    with torch.no_grad():
        diff = (enc(moved) - enc(rows)).abs().amax(-1)[0]  # (T,)
    changed = torch.nonzero(diff > 1e-6).flatten()
    assert changed.min() == 40 - reach and changed.max() == 40 + reach


def test_motion_attention_is_aligned_in_time():
    """A latent frame's motion attention reads only the audio features of its own moment (+- band):
    changing the audio at the window's end leaves the prediction at its start unchanged after one block."""
    m = _model()
    b = _batch(1)
    s = m.style(None, 1)
    c1 = m.condition(b.agent, b.partner, s, b.context)
    f2 = c1.f_m.clone()
    f2[:, -3:] += 5.0  # other features for the last 3 frames only
    block, t = m.denoiser.blocks[0], torch.tensor([500])
    h = m.denoiser.inp(b.target) + m.denoiser.pos
    c = m.denoiser.time(timestep_embedding(t, m.denoiser.freq_dim))[:, None]  # (B, 1, D)
    band = band_mask(CFG.window, CFG.motion_band)
    y1 = block(h, c, c1.f_m, c1.prev, band)
    y2 = block(h, c, f2, c1.prev, band)
    changed = (y1 - y2).abs().amax(-1)[0] > 1e-6
    assert not changed[: CFG.window - 3 - CFG.motion_band].any() and changed[-3:].all()


def test_audio_film_scales_each_frame_by_its_own_audio():
    """With `audio_film` each frame's adaptive-layer-norm input is the timestep embedding plus its own
    f_m mapped: the audio of the last frames changes their modulation only, and it is per frame."""
    m = _model(audio_film=True)
    b = _batch(1)
    f_m = m.condition(b.agent, b.partner, m.style(None, 1), b.context).f_m
    f2 = f_m.clone()
    f2[:, -3:] += 5.0
    scales = [m.denoiser.blocks[0].ada(m.denoiser.film(f)) for f in (f_m, f2)]  # (1, W, 6D)
    changed = (scales[0] - scales[1]).abs().amax(-1)[0] > 1e-6
    assert scales[0].shape[1] == CFG.window and changed[-3:].all() and not changed[:-3].any()


def test_bundled_motion_checkpoint_matches_the_bundled_imitator():
    """The bundled stage-2 model generates the latents of the bundled stage-1 E_m, and samples sanely."""
    import json

    from infp.data.motion import imitator_fingerprint
    from infp.pretrained import imitator_dir, motion_dir

    path = motion_dir()
    model = MotionGenerator.from_pretrained(path, preset="small")
    meta = json.loads((path / "config.json").read_text())
    assert meta["training"]["imitator_fingerprint"] == imitator_fingerprint(imitator_dir())
    assert "infp train motion" in (path / "MODEL_CARD.md").read_text()
    cfg = model.cfg
    rows = torch.zeros(cfg.audio_per_frame * 30, cfg.audio_input_dim) - 0.5  # silence in both tracks
    z = generate(model, DiffusionConfig.from_checkpoint(path), rows, rows, model.latent_mean, steps=4, seed=0)
    assert z.shape == (30, cfg.motion_dim) and torch.isfinite(z).all()
    spread = (z - model.latent_mean).norm(dim=1).max() / model.latent_color.norm()
    assert spread < 10, "generated latents stay near the training distribution"
