"""infp: an open implementation of INFP (audio-driven interactive head generation, CVPR 2025)."""

__version__ = "0.1.0"
FPS = 25  # every video in the project runs at 25 frames/s (DESIGN.md)
SAMPLE_RATE = 16_000  # every audio track is 16 kHz mono float32 in [-1, 1]
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640 audio samples a video frame
