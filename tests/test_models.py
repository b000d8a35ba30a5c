"""Stage-1 networks: shapes, the identity at initialisation, FLOP budget, checkpoint round trips and
the failures of a bad checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.utils.flop_counter import FlopCounterMode

from infp.errors import InfpError
from infp.models import Imitator, imitator_preset
from infp.models.config import IMITATOR_PRESETS, ImitatorConfig
from infp.models.warping import warp

# the renderer without the keypoint prior and its additions (the first stage-1 models had none)
PLAIN = imitator_preset("tiny", keypoint_prior=False, mouth_mask=False, paint_closing=False, paint_eyes=False,
                       keypoint_lid_sides=False,
                        keypoint_lip_sides=False, keypoint_head=0.0,
                        correction_max=0.0, paint_window=(1.0, 1.0))
# the fields that size a preset; every other field is a switch that `tiny` shares with the shipped `base`
SIZES = {"size", "motion_dim", "motion_input", "motion_channels", "feature_down", "feature_channels", "skip_channels",
         "flow_channels", "decoder_channels", "decoder_blocks", "keypoint_hidden", "preset"}


@pytest.fixture(scope="module")
def tiny() -> Imitator:
    torch.manual_seed(0)
    return Imitator(imitator_preset("tiny")).eval()


def _perturb(model: Imitator) -> Imitator:
    """Break the zero-initialised output layers so outputs depend on the inputs."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_module_shapes(tiny):
    cfg = tiny.cfg
    x = torch.rand(3, 3, cfg.size, cfg.size)
    z = tiny.encode_motion(x)
    assert z.shape == (3, cfg.motion_dim)
    app = tiny.encode_appearance(x)
    assert app.volume.shape == (3, cfg.feature_channels, cfg.feature_size, cfg.feature_size)
    assert [s.shape[1:] for s in app.skips] == [(c, cfg.size // 2**i, cfg.size // 2**i) for i, c in enumerate(cfg.skip_channels)]
    out = tiny.render(app, z, z.flip(0))
    assert out.image.shape == x.shape
    assert out.flow.flow.shape == (3, 2, cfg.feature_size, cfg.feature_size)
    assert out.flow.occlusion.shape == (3, 1, cfg.feature_size, cfg.feature_size)
    assert ((out.flow.occlusion > 0) & (out.flow.occlusion < 1)).all()


def test_new_model_renders_the_source_unchanged(tiny):
    """Zero-initialised flow and decoder output: before training, the imitator without the keypoint
    prior is the copy-source baseline; with it (the shipped design) it is for no motion, while the
    new keypoint decoder's keypoints move the face from the first step."""
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    out = Imitator(PLAIN).eval()(x, torch.rand_like(x), torch.rand_like(x))
    torch.testing.assert_close(out.image, x, atol=1e-5, rtol=0)
    z = torch.randn(2, tiny.cfg.motion_dim)
    with torch.no_grad():
        app = tiny.encode_appearance(x)
        still, moved = tiny.render(app, z, z), tiny.render(app, z, z.flip(0))
    torch.testing.assert_close(still.image, x, atol=1e-5, rtol=0)
    assert float((moved.image - x).abs().max()) > 0.1


def test_warp_identity_and_shift():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    torch.testing.assert_close(warp(x, torch.zeros(1, 2, 4, 4)), x)
    flow = torch.zeros(1, 2, 4, 4)
    flow[:, 0] = 0.5  # read half a unit (one pixel of four in [-1, 1]) to the right
    shifted = warp(x, flow)
    torch.testing.assert_close(shifted[..., :3], x[..., 1:])


def test_motion_code_follows_the_input(tiny):
    model = _perturb(Imitator(tiny.cfg)).eval()
    a, b = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
    assert not torch.allclose(model.encode_motion(a), model.encode_motion(b))
    app = model.encode_appearance(a)
    za, zb = model.encode_motion(a), model.encode_motion(b)
    assert not torch.allclose(model.render(app, za, za).image, model.render(app, za, zb).image)


def test_base_preset_within_the_speed_budget():
    """DESIGN.md: the base renderer's per-frame work (E_m + F + warp + decode) stays within the 2-core
    budget; the paint window is what brings it there (issue 19: 25 frames/s at 512)."""
    from infp.eval.bench import imitator_flops

    eyes = imitator_flops(Imitator(imitator_preset("base")).eval())  # a frame whose eyes change: both windows
    window = imitator_flops(Imitator(imitator_preset("base", paint_eyes=False)).eval())  # the mouth's alone
    full = imitator_flops(Imitator(imitator_preset("base", paint_window=(1.0, 1.0), paint_eyes=False)).eval())
    assert 1.5e9 < eyes.motion + eyes.render < 3.5e9
    assert window.render < 0.5 * full.render and window.motion == full.motion
    assert window.render < eyes.render < 1.5 * window.render  # the eye window costs less than a second frame


def test_presets_and_ablations():
    assert {"tiny", "base", "paper"} <= set(IMITATOR_PRESETS)
    assert IMITATOR_PRESETS["base"].size == 256 and IMITATOR_PRESETS["paper"].size == 512
    # tests run the shipped configuration in miniature (issue 19, item 6)
    tiny, base = (IMITATOR_PRESETS[n].to_dict() for n in ("tiny", "base"))
    assert {k: v for k, v in tiny.items() if k not in SIZES} == {k: v for k, v in base.items() if k not in SIZES}
    assert tiny["keypoint_prior"] and tiny["mouth_mask"]
    assert imitator_preset("tiny", representation="intact").representation == "intact"
    with pytest.raises(InfpError, match="unknown preset"):
        imitator_preset("huge")
    with pytest.raises(ValueError):
        imitator_preset("tiny", representation="sketch")
    cfg = imitator_preset("paper")
    assert ImitatorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_save_load_round_trip(tiny, tmp_path):
    model = _perturb(Imitator(tiny.cfg)).eval()
    model.save_pretrained(tmp_path / "ckpt", training={"step": 3})
    back = Imitator.from_pretrained(tmp_path / "ckpt")
    assert back.cfg == model.cfg and not back.training
    x = torch.rand(2, 3, 64, 64)
    torch.testing.assert_close(back(x, x, x.flip(0)).image, model(x, x, x.flip(0)).image)
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["training"] == {"step": 3}
    assert Imitator.from_pretrained(tmp_path / "ckpt", preset="tiny").cfg.preset == "tiny"


@pytest.fixture()
def ckpt(tiny, tmp_path):
    tiny.save_pretrained(tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _edit_weights(ckpt, edit):
    f = ckpt / "model.safetensors"
    state = load_file(str(f))
    edit(state)
    save_file(state, str(f))


@pytest.mark.parametrize("damage, message", [
    (lambda c: _edit_weights(c, lambda s: s.pop(next(iter(s)))), "missing"),
    (lambda c: _edit_weights(c, lambda s: s.update(extra=torch.zeros(1))), "unexpected"),
    (lambda c: _edit_weights(c, lambda s: s.__setitem__(next(iter(s)), torch.zeros(7))), "shape"),
    (lambda c: _edit_weights(c, lambda s: next(iter(s.values())).fill_(float("nan"))), "NaN"),
    (lambda c: (c / "model.safetensors").write_bytes((c / "model.safetensors").read_bytes()[:500]), "corrupt or truncated"),
    (lambda c: (c / "model.safetensors").unlink(), "no model.safetensors"),
    (lambda c: (c / "config.json").write_text("{not json"), "unreadable config"),
    (lambda c: (c / "config.json").unlink(), "not a checkpoint directory"),
])
def test_bad_checkpoints_fail_clearly(ckpt, damage, message):
    damage(ckpt)
    with pytest.raises(InfpError, match=message):
        Imitator.from_pretrained(ckpt)


def test_wrong_preset_and_wrong_stage(ckpt, tmp_path):
    with pytest.raises(InfpError, match="preset is 'tiny', not 'base'"):
        Imitator.from_pretrained(ckpt, preset="base")
    meta = json.loads((ckpt / "config.json").read_text())
    meta["kind"] = "motion"
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(InfpError, match=r"stage-2 \(motion\) checkpoint; a stage-1 \(imitation\) checkpoint is needed"):
        Imitator.from_pretrained(ckpt)
    with pytest.raises(InfpError, match="not found"):
        Imitator.from_pretrained(tmp_path / "nowhere")


def test_bundled_checkpoint_loads_with_its_card():
    from infp.pretrained import imitator_dir

    path = imitator_dir()
    model = Imitator.from_pretrained(path, preset="base")
    assert model.cfg.representation == "hybrid"
    meta = json.loads((path / "config.json").read_text())
    assert meta["training"]["step"] > 0
    assert (path / "model.safetensors").stat().st_size < 60e6
    card = (path / "MODEL_CARD.md").read_text()
    # the card names the project command that made it and its step count
    assert ("infp train imitation" in card or "scripts/train_renderer.py" in card) and f"{meta['training']['step']}" in card


def test_missing_bundled_checkpoint_says_so(monkeypatch, tmp_path):
    import infp.pretrained

    monkeypatch.setattr(infp.pretrained, "BUNDLED", tmp_path)
    with pytest.raises(InfpError, match="no bundled stage-1 checkpoint"):
        infp.pretrained.imitator_dir()


def test_models_import_nothing_but_torch() -> None:
    """DESIGN.md: models/ are plain nn.Modules; MediaPipe and OpenCV belong to the face and pipeline layers."""
    code = ("import sys, infp.models, infp.models.imitator, infp.models.motion_generator; "
            "print(sorted(m for m in ('mediapipe', 'cv2', 'av') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
