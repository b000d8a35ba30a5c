"""Stage-1 configuration: one frozen dataclass for the imitator and its named presets.

Every network of stage 1 takes the whole `ImitatorConfig` (DESIGN.md: one config per model, passed
whole). Presets: `tiny` for CPU tests, `base` at 256 px (the bundled checkpoint; 2.1 GFLOP per
rendered frame, `infp bench --what flops`), `paper` at 512 px.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from infp.errors import InfpError


# what E_m can read: the paper's hybrid representation and its two ablations (infp.face.hybrid.Representation)
REPRESENTATIONS = ("hybrid", "intact", "landmarks")

# fields of the first renderer design (re-synthesising decoder, painted mouth interior), gone since
RETIRED = {"mouth_interior"}


@dataclass(frozen=True)
class ImitatorConfig:
    size: int = 256  # side of the face crops it renders
    representation: str = "hybrid"  # E_m's input (REPRESENTATIONS); "intact"/"landmarks" are ablations
    motion_dim: int = 32  # length of the 1D motion latent per frame
    motion_input: int = 128  # E_m reads its input resized to this side
    motion_channels: tuple[int, ...] = (32, 64, 128, 192, 256)  # one stride-2 stage each
    feature_down: int = 2  # stride-2 steps from the image to the appearance feature volume
    feature_channels: int = 64  # channels of the appearance volume
    skip_channels: tuple[int, ...] = (16, 32)  # appearance features at full, 1/2, ... resolution
    flow_channels: tuple[int, ...] = (32, 64, 96)  # flow U-Net widths, one per level
    decoder_channels: int = 80  # decoder width at the feature resolution
    decoder_blocks: int = 2  # modulated residual blocks at the feature resolution
    # F refines a flow spread from keypoints that the latent is decoded into (models/keypoint_decoder.py)
    keypoint_prior: bool = False
    keypoint_sigma: float = 0.05  # reach of each keypoint's motion, in [-1, 1] units (6 px at 256)
    keypoint_hidden: int = 512  # width of the keypoint decoder's MLP
    # > 0: the keypoints' affine motion moves the whole head, over a Gaussian this many times their
    # RMS radius wide (warping.head_flow); 0: only the keypoints' neighbourhoods move
    keypoint_head: float = 0.0
    # > 0: F's correction to the keypoint prior flow is bounded smoothly by this (m tanh(c / m), in
    # [-1, 1] units); 0: unbounded. A safety net for motions far outside training (docs/stage1.md)
    correction_max: float = 0.0
    # the inner lips' keypoints spread only to their own side of the driving mouth's midline, so a
    # mouth that closes meets at its lip line instead of reading the source's teeth there (warping.keypoint_flow)
    keypoint_lip_sides: bool = False
    # the same for each eye's lids at its midline, so a blink's upper lid comes down over the eye instead
    # of meeting the lower lid's opposite pull halfway (needs keypoint_prior)
    keypoint_lid_sides: bool = False
    # the decoder also reads where the keypoints' inner lips open the mouth (needs keypoint_prior)
    mouth_mask: bool = False
    # the decoder's extent (height, width) as shares of the crop side, centred on the driving mouth
    # (needs keypoint_prior when below 1): the only place it paints, so its cost is spent there alone
    paint_window: tuple[float, float] = (1.0, 1.0)
    # the decoder may also paint where the source's own mouth opening lands after the warp: a photo's
    # open mouth that the driving frame closes shows the photo's teeth there unless lips are painted
    # over them (imitator.closing_region; needs mouth_mask)
    paint_closing: bool = False
    # a second decoder window, the same size, centred on the eyes: the same painting there (the driving
    # eyes' opening, with `paint_closing` also where the source's lands), so a blink's lid can cover the
    # eye and a half-closed eye open (needs mouth_mask and a paint_window below the crop)
    paint_eyes: bool = False
    preset: str = "custom"

    def __post_init__(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f"representation {self.representation!r}: one of {', '.join(REPRESENTATIONS)}")
        if len(self.skip_channels) != self.feature_down:
            raise ValueError("skip_channels needs one entry per feature_down step")
        if self.size % (2 ** (self.feature_down + len(self.flow_channels) - 1)):
            raise ValueError(f"size {self.size} must be divisible by the flow U-Net's total stride")
        if self.mouth_mask and not self.keypoint_prior:
            raise ValueError("mouth_mask reads the keypoint prior's keypoints: it needs keypoint_prior")
        cell = 2**self.feature_down
        for f in self.paint_window:
            if not 0 < f <= 1 or (f * self.size) % cell:
                raise ValueError(f"paint_window {self.paint_window}: each share must be in (0, 1] and give a multiple "
                                 f"of {cell} px at size {self.size}")
        if self.paint_window != (1.0, 1.0) and not self.keypoint_prior:
            raise ValueError("paint_window is centred on the keypoints' mouth: it needs keypoint_prior")
        if self.paint_closing and not self.mouth_mask:
            raise ValueError("paint_closing reads the source's mouth opening from mouth_mask: it needs mouth_mask")
        if self.paint_eyes and not (self.mouth_mask and self.paint_window != (1.0, 1.0)):
            raise ValueError("paint_eyes paints a second window like the mouth's: it needs mouth_mask and a paint_window")
        if self.keypoint_lip_sides and not self.keypoint_prior:
            raise ValueError("keypoint_lip_sides shapes the keypoint prior's flow: it needs keypoint_prior")
        if self.keypoint_lid_sides and not self.keypoint_prior:
            raise ValueError("keypoint_lid_sides shapes the keypoint prior's flow: it needs keypoint_prior")

    @property
    def feature_size(self) -> int:
        return self.size // 2**self.feature_down

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImitatorConfig:
        if RETIRED & set(d):
            raise InfpError(f"a checkpoint of the first renderer design (it has {', '.join(sorted(RETIRED & set(d)))}): "
                            "this version renders with the second design (docs/stage1.md); fine-tune it into one with "
                            "`infp train imitation --init-from DIR ...`, or use the bundled checkpoint")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise InfpError(f"unknown imitator config fields {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


IMITATOR_PRESETS: dict[str, ImitatorConfig] = {
    # `base` in miniature: its switches at sizes a CPU test runs in seconds
    "tiny": ImitatorConfig(
        size=64, motion_dim=16, motion_input=64, motion_channels=(8, 16, 32), feature_down=2,
        feature_channels=16, skip_channels=(8, 8), flow_channels=(16, 16), decoder_channels=16,
        decoder_blocks=1, keypoint_hidden=32, keypoint_prior=True, keypoint_head=1.0, correction_max=0.15,
        keypoint_lip_sides=True, keypoint_lid_sides=True, mouth_mask=True, paint_window=(0.375, 0.5), paint_closing=True,
        paint_eyes=True, preset="tiny",
    ),
    # the bundled checkpoint's configuration (the config is the recipe)
    "base": ImitatorConfig(keypoint_prior=True, keypoint_head=1.0, correction_max=0.15, keypoint_lip_sides=True,
                           keypoint_lid_sides=True, mouth_mask=True, paint_window=(0.375, 0.5), paint_closing=True,
                           paint_eyes=True, preset="base"),
    "paper": ImitatorConfig(
        size=512, motion_dim=32, motion_input=256, motion_channels=(32, 64, 128, 192, 256, 256),
        feature_down=3, feature_channels=96, skip_channels=(16, 32, 48), flow_channels=(64, 96, 128),
        decoder_channels=128, decoder_blocks=3, preset="paper",
    ),
}


def imitator_preset(name: str, **overrides) -> ImitatorConfig:
    """A named preset, optionally with fields replaced (e.g. representation="intact" for an ablation)."""
    if name not in IMITATOR_PRESETS:
        raise InfpError(f"unknown preset {name!r}; choose from {', '.join(IMITATOR_PRESETS)}")
    return replace(IMITATOR_PRESETS[name], **overrides)
