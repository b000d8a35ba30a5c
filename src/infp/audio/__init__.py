"""Audio layer: decode and resample any format, split conversations, per-frame features and VAD.

All tracks are float32 in [-1, 1] at 16 kHz; all per-frame outputs share the 25 fps video grid of
`frame_count`, so audio and video lengths agree everywhere.
"""

from infp.audio.features import frame_bounds, frame_count, frame_rms
from infp.audio.io import Conversation, load_audio, load_conversation, load_mono, save_wav
from infp.audio.vad import activity_from_probability, segments, speech_probability, voice_activity

__all__ = [
    "Conversation",
    "activity_from_probability",
    "frame_bounds",
    "frame_count",
    "frame_rms",
    "load_audio",
    "load_conversation",
    "load_mono",
    "save_wav",
    "segments",
    "speech_probability",
    "voice_activity",
]
