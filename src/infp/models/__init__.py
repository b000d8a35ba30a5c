"""Plain `nn.Module`s, one paper component per file (DESIGN.md layer 1). No I/O beyond checkpoints."""

from infp.models.appearance_encoder import AppearanceEncoder, AppearanceFeatures
from infp.models.config import IMITATOR_PRESETS, ImitatorConfig, imitator_preset
from infp.models.decoder import Decoder
from infp.models.flow_estimator import Flow, FlowEstimator
from infp.models.imitator import Imitator, Rendered
from infp.models.motion_encoder import MotionEncoder
from infp.models.warping import warp

__all__ = [
    "IMITATOR_PRESETS", "AppearanceEncoder", "AppearanceFeatures", "Decoder", "Flow", "FlowEstimator",
    "Imitator", "ImitatorConfig", "MotionEncoder", "Rendered", "imitator_preset", "warp",
]
