"""Layer 6: portrait + two tracks -> frames, offline and live (DESIGN.md). Owns device, dtype and loading."""

from infp.pipeline.pipeline import Generation, InfpPipeline, Portrait, Settings
from infp.pipeline.stream import MotionStream, StreamSession

__all__ = ["Generation", "InfpPipeline", "MotionStream", "Portrait", "Settings", "StreamSession"]
