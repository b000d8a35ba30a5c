"""Loading the two stages together: a stage-2 model only makes sense with the stage-1 imitator whose
latents it learnt, and with the audio features it was trained on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from infp.audio.mel import featurizer_for
from infp.diffusion.schedule import DiffusionConfig
from infp.errors import InfpError
from infp.models import Imitator
from infp.models.motion_generator import MotionGenerator
from infp.guard import check_checkpoint

log = logging.getLogger("infp")


@dataclass(frozen=True)
class MotionStage:
    """A stage-2 checkpoint ready to sample: the network, its noise schedule and its audio features."""

    path: Path
    model: MotionGenerator
    diffusion: DiffusionConfig
    featurizer: object  # infp.audio.mel.Featurizer


def check_pairing(path: Path, model: MotionGenerator, card: dict, imitator: Imitator, fingerprint: str) -> None:
    """A stage-2 checkpoint generates the latents of one E_m: `imitator` must be the one it learnt from."""
    if model.cfg.motion_dim != imitator.cfg.motion_dim:
        raise InfpError(f"generates {model.cfg.motion_dim}-dim motion latents; the imitator's are "
                        f"{imitator.cfg.motion_dim}-dim", path)
    trained = (card.get("training") or {}).get("imitator_fingerprint")
    if trained is None:
        log.warning("%s: its training card does not record the imitator it was trained with; assuming %s", path, fingerprint)
    elif trained != fingerprint:
        raise InfpError(f"trained on the latents of imitator {trained}, but the given imitator is {fingerprint} "
                        "(pass --imitator with the stage-1 checkpoint it was trained with)", path)


def load_motion_stage(path: Path, imitator: Imitator, fingerprint: str, speech_model: Path | None = None,
                      featurizers: dict | None = None) -> MotionStage:
    """Load and check a stage-2 checkpoint against `imitator`; `featurizers` (optional) shares loaded
    speech models between several checkpoints."""
    from infp.models.checkpoint import read_config

    path = Path(path)
    card = read_config(path, "motion")
    check_checkpoint(path, "motion")
    model = MotionGenerator.from_pretrained(path)
    check_pairing(path, model, card, imitator, fingerprint)
    cfg = model.cfg
    if cfg.audio_features != "logmel80" and speech_model is None:
        raise InfpError(f"trained on {cfg.audio_features!r} audio features: pass --speech-model DIR, the local "
                        "wav2vec2/HuBERT model it was trained with", path)
    key = None if cfg.audio_features == "logmel80" else speech_model
    featurizers = {} if featurizers is None else featurizers
    if key not in featurizers:
        featurizers[key] = featurizer_for(key)
    f = featurizers[key]
    if (f.name, f.per_frame, f.dim) != (cfg.audio_features, cfg.audio_per_frame, cfg.audio_input_dim):
        raise InfpError(f"trained on {cfg.audio_features!r} features ({cfg.audio_per_frame} x {cfg.audio_input_dim} "
                        f"per frame); --speech-model gives {f.name!r} ({f.per_frame} x {f.dim})", path)
    return MotionStage(path, model, DiffusionConfig.from_checkpoint(path), f)


def load_imitator(path: str | Path) -> Imitator:
    """A stage-1 checkpoint, its config checked against its weights before anything is allocated."""
    check_checkpoint(path, "imitator")
    return Imitator.from_pretrained(path)
