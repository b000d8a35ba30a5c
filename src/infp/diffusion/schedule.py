"""The noise schedule, wrapped around diffusers' schedulers so the rest of the code does not import them.

Training adds noise with `DDPMScheduler.add_noise`; sampling steps with `DDIMScheduler` (eta = 0,
deterministic), 20 steps by default as in the paper. The training schedule is saved with every
stage-2 checkpoint (config.json, key "diffusion"), so a checkpoint is always sampled with the schedule
it was trained under; how to sample it (steps, spacing, clipping) is the sampler's choice.

Why "leading" spacing and clipping: the cosine schedule ends at alpha_bar(999) = 2.4e-9, where a
noise-predicting network's estimate x0 = (x - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) multiplies
any error in eps by 2e4 (zero terminal SNR needs v-prediction; Lin et al. 2024). Leading spacing
starts at t = 950 (alpha_bar 6e-3, an error x13), and each step's x0 estimate is clipped to
`clip_sample` in the normalised latent space (the training latents lie within a few standard
deviations), as DDPM clips images to [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from infp.errors import InfpError


@dataclass(frozen=True)
class DiffusionConfig:
    train_steps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # cosine (Nichol & Dhariwal 2021), as in MDM-style motion diffusion
    # "epsilon": the network predicts the noise (the paper's noise-prediction loss); "sample": the
    # clean latents, as motion diffusion models usually do (MDM, EDGE): see docs/stage2.md
    prediction: str = "epsilon"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> DiffusionConfig:
        d = dict(d or {})
        d.pop("timestep_spacing", None)  # a sampling setting that early runs stored; the sampler chooses it
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

    def sampling_scheduler(self, steps: int, spacing: str = "leading", clip_sample: float | None = 4.0):
        """A DDIM scheduler set to `steps` denoising steps; `clip_sample` bounds each step's x0 estimate
        (None: no clipping)."""
        from diffusers import DDIMScheduler

        if not 1 <= steps <= self.train_steps:
            raise InfpError(f"sampling steps must be from 1 to {self.train_steps} (the timesteps the model was "
                            f"trained on), got {steps}")
        kwargs = {**self._kwargs(), "clip_sample": clip_sample is not None, "clip_sample_range": clip_sample or 1.0}
        sched = DDIMScheduler(**kwargs, set_alpha_to_one=False, timestep_spacing=spacing)
        sched.set_timesteps(steps)
        return sched
