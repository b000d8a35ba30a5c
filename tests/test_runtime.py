"""Stage 1's runtime (infp.runtime): batching, dtype and device rules, modes, loading, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from infp.errors import InfpError
from infp.models import AppearanceFeatures, Imitator, imitator_preset
from infp.runtime import ImitatorRuntime, to_tensor, to_uint8


@pytest.fixture(scope="module")
def model() -> Imitator:
    """The tiny preset with every weight nudged, so no zero-initialised output hides a difference."""
    torch.manual_seed(0)
    m = Imitator(imitator_preset("tiny"))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return m.eval()


@pytest.fixture(scope="module")
def images(model) -> np.ndarray:
    """(7, S, S, 3) uint8 stand-ins for crops and representations."""
    s = model.cfg.size
    return np.random.default_rng(0).integers(0, 256, (7, s, s, 3), dtype=np.uint8)


def test_batches_give_the_result_of_one_batch(model, images):
    d = model.cfg.motion_dim
    one, small = ImitatorRuntime(model, batch=len(images)), ImitatorRuntime(model, batch=3)
    z = one.encode_motion(images)
    assert z.shape == (7, d) and z.dtype == torch.float32 and not z.requires_grad
    torch.testing.assert_close(small.encode_motion(images), z, rtol=1e-5, atol=1e-5)  # float rounding only
    torch.testing.assert_close(one.encode_motion(to_tensor(images)), z, rtol=0, atol=0)  # uint8 in = float in
    with torch.no_grad():
        torch.testing.assert_close(model.encode_motion(to_tensor(images)), z, rtol=1e-5, atol=1e-5)

    app = one.encode_appearance(images[:1])
    assert isinstance(app, AppearanceFeatures) and app.image.shape == (1, 3, model.cfg.size, model.cfg.size)
    z_drv = torch.randn(11, d, generator=torch.Generator().manual_seed(1)) * 0.3
    whole = one.render(app, z[0], z_drv, batch=11)
    s = model.cfg.size
    assert whole.shape == (11, 3, s, s) and whole.dtype == torch.float32 and whole.device.type == "cpu"
    assert 0 <= float(whole.min()) and float(whole.max()) <= 1 and float(whole.std()) > 0
    # float rounding only (2e-5: a batch's decoder rows depend on which of its frames' eyes change)
    torch.testing.assert_close(small.render(app, z[:1], z_drv), whole, rtol=0, atol=2e-5)  # (1, D) z_src as (D,)
    torch.testing.assert_close(small.render(app, z[0].expand(11, -1), z_drv.numpy()), whole, rtol=0, atol=2e-5)
    assert [len(b) for b in small.render_batches(app, z[0], z_drv)] == [3, 3, 3, 2]
    frames = small.render_uint8(app, z[0], z_drv)
    assert frames.shape == (11, s, s, 3) and frames.dtype == np.uint8
    assert np.array_equal(frames, to_uint8(small.render(app, z[0], z_drv)))
    assert one.render(app, z[0], z_drv[:0]).shape == (0, 3, s, s)
    assert one.encode_motion(images[:0]).shape == (0, d)
    with pytest.raises(InfpError, match="one latent or one per"):
        one.render(app, z[:2], z_drv)


def test_full_resolution_source_sets_the_output_size(model, images):
    import cv2

    rt = ImitatorRuntime(model)
    s = model.cfg.size
    full = np.stack([cv2.resize(images[0], (2 * s, 2 * s))])
    app = rt.encode_appearance(images[:1], full)
    out = rt.render(app, rt.encode_motion(images[:1]), rt.encode_motion(images[1:3]))
    assert out.shape == (2, 3, 2 * s, 2 * s)


def test_bfloat16_autocast_on_cpu_returns_float32(model, images):
    f32, bf16 = ImitatorRuntime(model), ImitatorRuntime(model, dtype="bfloat16")
    assert bf16.dtype == torch.bfloat16 and bf16.device.type == "cpu"
    z, zb = f32.encode_motion(images), bf16.encode_motion(images)
    assert zb.dtype == torch.float32
    torch.testing.assert_close(zb, z, rtol=0, atol=0)  # E_m runs in float32 whatever the dtype: latents are stage 2's input
    app = bf16.encode_appearance(images[:1])
    out = bf16.render(app, zb[0], zb[1:])
    assert out.dtype == torch.float32 and 0 <= float(out.min()) and float(out.max()) <= 1
    assert float((out - f32.render(f32.encode_appearance(images[:1]), z[0], z[1:])).abs().mean()) < 0.05


def test_auto_dtype_is_bfloat16_only_where_native(model, monkeypatch):
    import infp.runtime as runtime

    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(runtime, "native_bfloat16", lambda device, native=native: native)
        assert ImitatorRuntime(model, dtype="auto").dtype == expected
    monkeypatch.undo()
    assert isinstance(runtime.native_bfloat16(torch.device("cpu")), bool)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"dtype": "float16"}, "float16 needs a GPU"),
    ({"dtype": torch.float16, "device": "cpu"}, "float16 needs a GPU"),
    ({"dtype": "float64"}, "unknown dtype 'float64'"),
    ({"dtype": torch.int8}, "unsupported dtype"),
    ({"device": "nonsense"}, "unknown device 'nonsense'"),
    ({"batch": 0}, "batch must be at least 1"),
])
def test_bad_settings_are_refused(model, kwargs, message):
    with pytest.raises(InfpError, match=message):
        ImitatorRuntime(model, **kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_a_missing_gpu_is_an_error_not_a_fallback(model):
    with pytest.raises(InfpError, match="sees no GPU"):
        ImitatorRuntime(model, device="cuda")
    assert ImitatorRuntime(model, device="auto").device.type == "cpu"


def test_eval_mode_for_the_call_and_the_caller_mode_kept(model, images):
    seen = []
    hook = model.motion_encoder.register_forward_hook(lambda m, i, o: seen.append((m.training, torch.is_grad_enabled())))
    try:
        model.train()
        ImitatorRuntime(model).encode_motion(images[:2])
        assert model.training and seen == [(False, False)]
        model.eval()
        ImitatorRuntime(model).encode_motion(images[:2])
        assert not model.training
    finally:
        hook.remove()
        model.eval()


def test_nan_pixels_from_finite_latents_are_stage_1s_fault(images, monkeypatch):
    from types import SimpleNamespace

    m = Imitator(imitator_preset("tiny")).eval()
    rt = ImitatorRuntime(m)
    app = rt.encode_appearance(images[:1])
    z = torch.zeros(2, m.cfg.motion_dim)
    broken = app._replace(image=torch.full_like(app.image, float("nan")),
                          volume=torch.full_like(app.volume, float("nan")))
    with pytest.raises(InfpError, match="rendered NaN or infinite pixels"):
        rt.render(broken, z[0], z)
    # NaN latents are the caller's to catch (the pipeline checks stage 2's): no blame on stage 1 for them
    monkeypatch.setattr(m, "render", lambda a, zs, zd, compose=True: SimpleNamespace(image=torch.full((len(zd), 3, 64, 64), float("nan"))))
    assert rt.render(app, z[0], torch.full_like(z, float("nan"))).isnan().all()
    with pytest.raises(InfpError, match="rendered NaN or infinite pixels"):
        rt.render(app, z[0], z)


def test_from_pretrained_checks_and_loads(tiny_models, tmp_path, images):
    rt = ImitatorRuntime.from_pretrained(tiny_models / "imi", device="cpu", batch=4)
    assert rt.device.type == "cpu" and not rt.model.training and rt.cfg.preset == "tiny" and rt.batch == 4
    assert rt.encode_motion(images[:, : rt.cfg.size, : rt.cfg.size]).shape == (7, rt.cfg.motion_dim)
    with pytest.raises(InfpError):
        ImitatorRuntime.from_pretrained(tmp_path / "nothing-here")
    with pytest.raises(InfpError, match="images must be"):
        rt.encode_motion(images.astype(np.float32))
