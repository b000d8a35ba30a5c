"""Pretrained speech features (wav2vec2 / HuBERT / WavLM) from a local directory: stage 2's optional input.

DESIGN.md, stage 2: the default audio features are log-mel (`infp.audio.mel.LogMel`), so nothing must be
downloaded; optionally, a self-supervised speech model that the user already has on disk (a Hugging Face
directory: `config.json` + safetensors weights) replaces them, as in most talking-head work. Nothing is
ever fetched (`local_files_only=True`) and only safetensors are read, so loading never unpickles.

Alignment: these models' convolutional front end has a 400-sample receptive field and a 320-sample hop
(50 Hz), i.e. exactly 2 rows per 640-sample video frame. The track is padded by 40 samples in front, so
row j sees samples [320 j - 40, 320 j + 360), centred on its own 20 ms [320 j, 320 (j + 1)) as LogMel's
rows are, and at the end so that the conv stack yields exactly `2 * frame_count(N)` rows
(a window of 320 (r - 1) + 400 samples gives exactly r rows). Long tracks run in chunks (30 s with 2 s of
context either side, rows of the context dropped), so memory stays bounded and the transformer sees
almost the same context as in one pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError

from infp.audio.features import frame_count
from infp.errors import InfpError

SUPPORTED = ("wav2vec2", "hubert", "wavlm")
HOP = 320  # samples per row at 16 kHz (20 ms): half a video frame
PER_FRAME = 2


def _line(e: BaseException) -> str:
    return " ".join(str(e).split())  # InfpError messages are one line


def _receptive_field(kernels, strides) -> int:
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field, jump = field + (k - 1) * jump, jump * s
    return field


class SpeechModelFeatures:
    """A `Featurizer`: (N,) float32 16 kHz track -> (2 * frame_count(N), hidden_size) float32."""

    per_frame = PER_FRAME
    # audio either side of a streamed window (frames): the transformer looks far, so a streamed window's
    # features approach the whole-track ones only with a second or so of context
    context_frames = 25

    def __init__(self, model: torch.nn.Module, name: str, layer: int | None = None, normalize: bool = True,
                 chunk_seconds: float = 30.0, overlap_seconds: float = 2.0):
        cfg = model.config
        self.model = model.eval()
        self.name, self.layer, self.normalize = name, layer, normalize
        self.dim = int(cfg.hidden_size)
        self.field = _receptive_field(cfg.conv_kernel, cfg.conv_stride)  # 400 for the standard stack
        self.left = (self.field - HOP) // 2  # 40: centre row j's window on its own 320 samples
        self.chunk_rows = max(PER_FRAME, round(chunk_seconds * 50))
        self.context_rows = max(0, round(overlap_seconds * 50))

    @classmethod
    def from_dir(cls, path: str | Path, layer: int | None = None, device: str | torch.device = "cpu",
                 **kwargs) -> SpeechModelFeatures:
        """Load a wav2vec2/HuBERT/WavLM model from a local directory (never downloads).

        `layer=None` takes the last hidden state, otherwise hidden state `layer` (0 = the transformer's
        input, `num_hidden_layers` = its last layer, before the final LayerNorm of the large "stable layer
        norm" models). `kwargs`: chunk_seconds, overlap_seconds.
        """
        path = Path(path)
        if not path.is_dir():
            raise InfpError("speech model directory not found", path)
        if not (path / "config.json").is_file():
            raise InfpError("no config.json here: not a Hugging Face speech model directory", path)
        try:
            raw = json.loads((path / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise InfpError(f"config.json is unreadable ({_line(e)})", path) from None
        model_type = raw.get("model_type") if isinstance(raw, dict) else None
        if model_type not in SUPPORTED:
            raise InfpError(f"model_type {model_type!r} is not a 50 Hz speech model (supported: "
                            f"{', '.join(SUPPORTED)})", path)
        if not any((path / f).is_file() for f in ("model.safetensors", "model.safetensors.index.json")):
            pickled = any(path.glob("*.bin"))
            raise InfpError("no model.safetensors here" + (" (only pickled *.bin weights, which are not loaded:"
                            " convert them to safetensors)" if pickled else ""), path)
        try:
            import transformers
        except ImportError:
            raise InfpError("speech model features need transformers: pip install 'infp[speech]'", path) from None
        try:
            cfg = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise InfpError(f"cannot read the model config ({_line(e)})", path) from None
        hop, adapter = int(np.prod(cfg.conv_stride)), bool(getattr(cfg, "add_adapter", False))
        if hop != HOP or adapter:
            raise InfpError(f"the model hops {hop} samples{' and an adapter' if adapter else ''}, "
                            f"not {HOP} (20 ms at 16 kHz)", path)
        n = int(cfg.num_hidden_layers)
        if layer is not None and not 0 <= layer <= n:
            raise InfpError(f"layer {layer} is out of range: the model has hidden states 0..{n}", path)
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar in CLI output
        try:
            model = transformers.AutoModel.from_pretrained(path, config=cfg, local_files_only=True,
                                                           use_safetensors=True)
        except (OSError, ValueError, RuntimeError, SafetensorError) as e:
            raise InfpError(f"cannot load the model weights ({type(e).__name__}: {_line(e)})", path) from None
        finally:
            if bars:
                transformers.utils.logging.enable_progress_bar()
        normalize = True  # what Wav2Vec2FeatureExtractor does unless told otherwise
        pre = path / "preprocessor_config.json"
        if pre.is_file():
            try:
                normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
            except (OSError, ValueError, AttributeError) as e:
                raise InfpError(f"preprocessor_config.json is unreadable ({_line(e)})", path) from None
        name = f"{model_type}-{path.resolve().name}-L{'last' if layer is None else layer}"
        return cls(model.float().to(device), name, layer, normalize, **kwargs)  # v5 loads in the saved dtype

    @torch.no_grad()
    def _run(self, segment: np.ndarray, rows: int) -> np.ndarray:
        """(HOP * (rows - 1) + field,) padded samples -> (rows, dim) features."""
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(segment))[None].to(device)  # (1, L)
        out = self.model(x, output_hidden_states=self.layer is not None)
        h = out.last_hidden_state if self.layer is None else out.hidden_states[self.layer]
        h = h[0, :rows].float().cpu().numpy()  # (rows, dim); the formula gives exactly `rows`
        if len(h) < rows:  # only for a non-standard conv stack: repeat the last row
            h = np.concatenate([h, np.repeat(h[-1:], rows - len(h), 0)])
        return h

    def __call__(self, track: np.ndarray) -> np.ndarray:
        x = np.asarray(track, np.float32)
        if x.ndim != 1:
            raise ValueError(f"SpeechModelFeatures expects a (N,) track, got shape {x.shape}")
        rows = PER_FRAME * frame_count(len(x))
        if rows == 0:
            return np.zeros((0, self.dim), np.float32)
        if self.normalize:  # per utterance, over the real samples only, then zero padding (as HF does)
            x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
        # row j reads padded[HOP j : HOP j + field]
        padded = np.pad(x, (self.left, HOP * (rows - 1) + self.field - self.left - len(x)))
        out = np.empty((rows, self.dim), np.float32)
        for a in range(0, rows, self.chunk_rows):
            b = min(rows, a + self.chunk_rows)
            s, e = max(0, a - self.context_rows), min(rows, b + self.context_rows)
            out[a:b] = self._run(padded[HOP * s:HOP * (e - 1) + self.field], e - s)[a - s:b - s]
        return out
