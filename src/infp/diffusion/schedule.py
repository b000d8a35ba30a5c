"""The noise schedule, wrapped around diffusers' schedulers so the rest of the code does not import them.

Training adds noise with `DDPMScheduler.add_noise`; sampling steps with `DDIMScheduler` (eta = 0,
deterministic), 20 steps by default as in the paper. The schedule's settings are saved with every
stage-2 checkpoint (config.json, key "diffusion"), so a checkpoint is always sampled with the schedule
it was trained under.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from infp.errors import InfpError


@dataclass(frozen=True)
class DiffusionConfig:
    train_steps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine (Nichol & Dhariwal 2021), as in MDM-style motion diffusion
    prediction: str = "epsilon"  # the network predicts the noise (the paper's noise-prediction loss)
    # "trailing" places the 20 sampling steps so the first one starts from pure noise (t = 999);
    # Lin et al. 2024 show the default "leading" spacing never does
    timestep_spacing: str = "trailing"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> DiffusionConfig:
        d = d or {}
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise InfpError(f"unknown diffusion config fields {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_checkpoint(cls, path) -> DiffusionConfig:
        """The schedule a stage-2 checkpoint directory was trained with."""
        from infp.models.checkpoint import read_config

        return cls.from_dict(read_config(path, "motion").get("diffusion"))

    def _kwargs(self) -> dict:
        return {"num_train_timesteps": self.train_steps, "beta_schedule": self.beta_schedule,
                "prediction_type": self.prediction, "clip_sample": False}

    def training_scheduler(self):
        from diffusers import DDPMScheduler

        return DDPMScheduler(**self._kwargs())

    def sampling_scheduler(self, steps: int):
        """A DDIM scheduler set to `steps` denoising steps."""
        from diffusers import DDIMScheduler

        if steps < 1:
            raise InfpError(f"sampling steps must be at least 1, got {steps}")
        sched = DDIMScheduler(**self._kwargs(), set_alpha_to_one=False, timestep_spacing=self.timestep_spacing)
        sched.set_timesteps(steps)
        return sched
