"""Stage-2 configuration: one frozen dataclass for the audio-to-motion generator and its presets.

Every stage-2 network takes the whole `MotionConfig` (DESIGN.md). Presets: `tiny` for CPU tests,
`small` (128 wide: the bundled checkpoint, trainable on two CPU cores), `base` (256 wide) and `paper`
(512 wide); all but `tiny` keep the paper's memory banks of 64 x 512 entries and 4 transformer blocks. The two ablation switches of the paper's Table 4 are fields:
`use_memory=False` feeds the audio features straight to motion attention, `use_style=False` drops the
style modulation of the memory banks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from infp.errors import InfpError


@dataclass(frozen=True)
class MotionConfig:
    motion_dim: int = 32  # the stage-1 latent it generates (must equal the imitator's)
    audio_features: str = "logmel80"  # the featurizer's name (infp.audio.mel / speech_model)
    audio_per_frame: int = 4  # feature rows per video frame
    audio_input_dim: int = 80  # width of a feature row
    audio_dim: int = 256  # audio encoder width
    audio_layers: int = 3  # residual temporal conv layers of the audio encoder
    audio_dilation: int = 1  # layer i's convolutions take taps audio_dilation**i frames apart (1: +-2 frames a layer)
    memory_size: int = 64  # entries in each memory bank, M_v and M_nv
    memory_dim: int = 512  # width of an entry
    style_dim: int = 128  # the motion style vector s_m
    width: int = 256  # transformer width
    heads: int = 4
    blocks: int = 4  # self-attention -> motion attention -> temporal attention (+ MLP) per block
    mlp_ratio: float = 4.0
    window: int = 50  # frames generated per window (2 s)
    context: int = 10  # previous-window latents read by temporal attention
    style_frames: int = 100  # length of the reference motion the style encoder reads
    motion_band: int = 2  # motion attention reads f_m within +- this many frames (-1: all frames)
    audio_film: bool = False  # each frame's f_m also enters its adaptive layer norm (not in the paper; denoiser.py)
    relative: bool = False  # a window is generated as offsets from the context's last latent (not in the paper)
    rest_anchor: bool = False  # a window and its context are offsets from the portrait's rest latent (not in the paper)
    rest_return: float = 0.0  # with rest_anchor: frames in which the anchor returns from the context's end to the rest (0: none)
    band_emphasis: float = 0.0  # windows are diffused with their ~2 Hz (nod) band 1 + this times louder (band_emphasis.py)
    use_memory: bool = True  # ablation switch: False = no memory banks
    use_style: bool = True  # ablation switch: False = no style modulation
    preset: str = "custom"

    def __post_init__(self) -> None:
        for name in ("width", "audio_dim", "memory_dim"):
            if getattr(self, name) % self.heads:
                raise ValueError(f"{name} ({getattr(self, name)}) must be divisible by heads ({self.heads})")
        if self.audio_dilation < 1:
            raise ValueError(f"audio_dilation must be at least 1, got {self.audio_dilation}")
        if not 1 <= self.context <= self.window:
            raise ValueError(f"need 1 <= context ({self.context}) <= window ({self.window})")
        if self.band_emphasis < 0:
            raise ValueError(f"band_emphasis must be >= 0, got {self.band_emphasis}")
        if self.relative and self.rest_anchor:
            raise ValueError("a window is offsets from the context's end (relative) or from the rest (rest_anchor), not both")
        if self.rest_return < 0 or (self.rest_return and not self.rest_anchor):
            raise ValueError(f"rest_return needs rest_anchor and must be >= 0, got {self.rest_return}")
        if self.band_emphasis and not self.offsets:
            # Absolute models join windows by inpainting held frames, which would have to be filtered
            # with the frames not yet generated; anchored models blend after sampling.
            raise ValueError("band_emphasis needs anchored windows (relative=True or rest_anchor=True)")

    @property
    def offsets(self) -> bool:
        """Windows are generated as offsets from an anchor (`relative` or `rest_anchor`), joined by blending."""
        return self.relative or self.rest_anchor

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MotionConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise InfpError(f"unknown motion config fields {sorted(unknown)}")
        return cls(**d)


MOTION_PRESETS: dict[str, MotionConfig] = {
    "tiny": MotionConfig(
        motion_dim=16, audio_dim=32, audio_layers=1, memory_size=8, memory_dim=32, style_dim=16, width=32,
        heads=2, mlp_ratio=2.0, window=12, context=4, style_frames=16, preset="tiny",
    ),
    "small": MotionConfig(audio_dim=128, width=128, style_dim=64, preset="small"),
    "base": MotionConfig(preset="base"),
    "paper": MotionConfig(audio_dim=512, width=512, heads=8, style_dim=256, preset="paper"),
}


def motion_preset(name: str, **overrides) -> MotionConfig:
    """A named preset, optionally with fields replaced (e.g. use_memory=False for an ablation)."""
    if name not in MOTION_PRESETS:
        raise InfpError(f"unknown preset {name!r}; choose from {', '.join(MOTION_PRESETS)}")
    return replace(MOTION_PRESETS[name], **overrides)
