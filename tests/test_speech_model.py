"""SpeechModelFeatures: row count and alignment on the video frame grid, chunking, layers, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from infp.audio.features import frame_count
from infp.audio.speech_model import SpeechModelFeatures
from infp.errors import InfpError

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (32,) * 7, "conv_kernel": (10, 3, 3, 3, 3, 2, 2), "conv_stride": (5, 2, 2, 2, 2, 2, 2),
        "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}


def _speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Noise under a 4 Hz syllable envelope with pauses: (n,) float32 at 16 kHz, not zero mean."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    env = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) * (np.sin(2 * np.pi * 0.3 * t) > -0.3)
    return (0.3 * env * rng.standard_normal(n) + 0.01).astype(np.float32)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("speech")
    torch.manual_seed(0)
    dirs = {}
    for kind, cfg_cls, model_cls, norm in [
        ("w2v", transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, "group"),  # base models: GroupNorm
        ("w2v_layer", transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, "layer"),  # large: LayerNorm
        ("hubert", transformers.HubertConfig, transformers.HubertModel, "group"),
    ]:
        model_cls(cfg_cls(**TINY, feat_extract_norm=norm)).save_pretrained(root / kind)
        dirs[kind] = root / kind
    return dirs


class _MaxPoolStub(torch.nn.Module):
    """Stands in for a speech model: row j = max of its 400-sample conv window (no mixing across rows)."""

    config = SimpleNamespace(hidden_size=1, conv_kernel=TINY["conv_kernel"], conv_stride=TINY["conv_stride"])

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, output_hidden_states=False):
        return SimpleNamespace(last_hidden_state=x.unfold(1, 400, 320).amax(-1)[..., None])


def test_rows_are_centred_on_their_20ms_and_chunking_is_exact_for_local_features():
    feats = SpeechModelFeatures(_MaxPoolStub(), "stub", normalize=False, chunk_seconds=0.5, overlap_seconds=0.1)
    n = 16000 * 2 + 123
    rows = 2 * frame_count(n)
    for k in [0, 39, 40, 300, 359, 360, 5000, n - 1]:
        x = np.zeros(n, np.float32)
        x[k] = 1.0
        out = feats(x)
        assert out.shape == (rows, 1)
        hit = np.flatnonzero(out[:, 0])
        j = np.arange(rows)
        expected = np.flatnonzero((320 * j - 40 <= k) & (k < 320 * j + 360))  # row j sees [320j-40, 320j+360)
        assert hit.tolist() == expected.tolist(), k
        assert k // 320 in hit  # the row that owns sample k always sees it


def test_conv_stack_yields_exactly_the_rows_asked_for(model_dirs):
    model = SpeechModelFeatures.from_dir(model_dirs["w2v"]).model
    for r in [1, 2, 3, 4, 50, 1501]:
        assert int(model._get_feat_extract_output_lengths(320 * (r - 1) + 400)) == r


@pytest.mark.parametrize("kind", ["w2v", "hubert"])
def test_shape_name_and_dim(model_dirs, kind):
    feats = SpeechModelFeatures.from_dir(model_dirs[kind])
    assert feats.per_frame == 2 and feats.dim == 32
    assert feats.name == f"{'wav2vec2' if kind == 'w2v' else 'hubert'}-{kind}-Llast"
    for n in [1, 639, 640, 700, 1281, 16000, 16000 * 3 + 17]:
        out = feats(_speechlike(n))
        assert out.shape == (2 * frame_count(n), 32) and out.dtype == np.float32, n
        assert np.isfinite(out).all()
    assert feats(np.zeros(0, np.float32)).shape == (0, 32)
    with pytest.raises(ValueError, match=r"\(N,\) track"):
        feats(np.zeros((2, 640), np.float32))


@pytest.mark.parametrize("kind, tol", [("w2v_layer", 5e-3), ("w2v", 0.15)])
def test_chunked_long_audio_matches_one_pass(model_dirs, kind, tol):
    # With GroupNorm over time in the first conv layer (base models) per-chunk statistics differ a little;
    # with LayerNorm the 2 s of context make chunking all but exact.
    x = _speechlike(16000 * 70, seed=1)
    chunked = SpeechModelFeatures.from_dir(model_dirs[kind])(x)  # 30 s chunks, 2 s context
    whole = SpeechModelFeatures.from_dir(model_dirs[kind], chunk_seconds=1000)(x)
    assert chunked.shape == whole.shape == (2 * frame_count(len(x)), 32)
    assert np.isfinite(chunked).all()
    err = np.abs(chunked - whole).max(axis=1) / np.abs(whole).max()
    assert err.max() < tol, err.max()
    corr = np.corrcoef(chunked.ravel(), whole.ravel())[0, 1]
    assert corr > 0.99, corr


def test_layer_and_normalisation(model_dirs, tmp_path):
    x = _speechlike(16000)
    last = SpeechModelFeatures.from_dir(model_dirs["hubert"])
    one = SpeechModelFeatures.from_dir(model_dirs["hubert"], layer=1)
    assert one.name == "hubert-hubert-L1" and one(x).shape == last(x).shape
    assert not np.allclose(one(x), last(x), atol=1e-4)
    np.testing.assert_allclose(SpeechModelFeatures.from_dir(model_dirs["hubert"], layer=2)(x), last(x), atol=1e-5)
    np.testing.assert_allclose(last(3 * x + 0.5), last(x), atol=1e-3)  # zero mean, unit variance per utterance
    (model_dirs["hubert"] / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    try:
        raw = SpeechModelFeatures.from_dir(model_dirs["hubert"])
        assert not raw.normalize and not np.allclose(raw(3 * x + 0.5), raw(x), atol=1e-3)
    finally:
        (model_dirs["hubert"] / "preprocessor_config.json").unlink()


def _config_dir(tmp_path: Path, name: str, config: dict, weights: str | None = "model.safetensors") -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    if weights:
        (d / weights).write_bytes(b"not really weights")
    return d


def test_errors_name_the_directory_and_the_problem(model_dirs, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    cases = {
        tmp_path / "absent": "directory not found",
        tmp_path: "no config.json",
        _config_dir(tmp_path, "bert", {"model_type": "bert"}): "'bert' is not a 50 Hz speech model",
        _config_dir(tmp_path, "noweights", {"model_type": "hubert"}, None): "no model.safetensors here$",
        _config_dir(tmp_path, "pickled", {"model_type": "hubert"}, "pytorch_model.bin"): "only pickled",
        _config_dir(tmp_path, "broken", {"model_type": "hubert"}): "cannot load the model weights",
    }
    odd = transformers.Wav2Vec2Config(**{**TINY, "conv_stride": (5, 2, 2, 2, 2, 2, 4)})
    odd.save_pretrained(tmp_path / "odd")
    (tmp_path / "odd" / "model.safetensors").write_bytes(b"")
    cases[tmp_path / "odd"] = "hops 640 samples, not 320"
    for path, message in cases.items():
        with pytest.raises(InfpError, match=message) as info:
            SpeechModelFeatures.from_dir(path)
        assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)
    for layer in [3, -1]:
        with pytest.raises(InfpError, match=f"layer {layer} is out of range.*0..2"):
            SpeechModelFeatures.from_dir(model_dirs["w2v"], layer=layer)
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(InfpError, match=r"pip install 'infp\[speech\]'"):
        SpeechModelFeatures.from_dir(model_dirs["w2v"])
