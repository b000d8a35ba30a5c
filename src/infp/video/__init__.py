"""Video I/O: decode any common video to RGB frames at 25 fps, encode frames + audio to H.264 MP4."""

from infp.video.reader import VideoInfo, iter_frames, probe, read_frames
from infp.video.writer import VideoWriter, write_video

__all__ = ["VideoInfo", "VideoWriter", "iter_frames", "probe", "read_frames", "write_video"]
