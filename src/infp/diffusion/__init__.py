"""Diffusion for stage 2 (DESIGN.md layer 2): noise schedule, the training loss, DDIM sampling with
classifier-free guidance, and window-by-window generation of long conversations."""

from infp.diffusion.sampling import WindowedGenerator, generate, sample_window
from infp.diffusion.schedule import DiffusionConfig
from infp.diffusion.training import CondDropout, denoising_loss

__all__ = ["CondDropout", "DiffusionConfig", "WindowedGenerator", "denoising_loss", "generate", "sample_window"]
