"""Long-call drift (issue 20): does the generated face stay where it started over minutes of conversation?

Stage 2 generates 2-s windows, each continuing from the latents the last one generated. Training only
ever shows it true contexts, so an error a window makes is the next window's starting point, and
nothing in training teaches it to come back (exposure bias). docs/stage2.md found the eyes drifting
closed over minutes this way. This evaluation generates a long call (motion only: no rendering, so a
3-minute call costs stage 2 alone), decodes every frame's latent into the renderer's keypoints with the
imitator's keypoint decoder, and reports per block of `block_s` seconds:

- **eye opening**: both eyes' opening (outline area over squared corner distance,
  `models.imitator.eye_openings`) over the portrait's rest state's, mean and minimum of the block, and
  the share of frames below 0.7 (a held half-closed eye; the renderer's eye window opens from a change
  of `EYE_CHANGE[0]`);
- **mouth opening**: the inner lips' opening (the same measure: area over squared width; the rest
  state's is given beside it, near 0 for closed lips);
- **latent distance**: the RMS distance of the block's latents from the rest latent, in the motion
  model's normalised units (one unit = one std of the training motion along each direction it
  generates): drift in any direction, whether or not it shows in the eyes or mouth.

Inputs: the packaged two-track conversation looped (real speech taking turns), or syllable-shaped noise
bursts taking turns (speech-loud, far from speech: the input that drifted the bundled model in the live
bench).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from infp import FPS, SAMPLE_RATE
from infp.errors import InfpError
from infp.models import keypoint_layout as kl
from infp.models.imitator import eye_openings, opening_ratio

CLOSED = 0.7  # an eye below this share of its rest opening reads as held half-closed
INPUTS = ("conversation", "bursts")
MOUTH_CORNERS = (kl.INNER_LIP_UPPER[0], kl.INNER_LIP_UPPER[-1])


def syllable_bursts(seconds: float, seed: int = 0, turn_s: float = 4.0, level: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(agent, partner) 16 kHz float32: Gaussian noise in syllable-shaped bursts (half-sine envelopes of
    120-250 ms, gaps of 50-150 ms, std `level`, about speech loudness), the two tracks taking `turn_s`-s
    turns, the agent first. Speech-loud and shaped like speech in time, but no speech at all."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    envelope = np.zeros(n, np.float32)
    i = 0
    while i < n:
        length = int(rng.uniform(0.12, 0.25) * SAMPLE_RATE)
        seg = np.sin(np.linspace(0, np.pi, length, dtype=np.float32))[: n - i]
        envelope[i: i + len(seg)] = seg
        i += length + int(rng.uniform(0.05, 0.15) * SAMPLE_RATE)
    noise = (rng.standard_normal(n) * level).astype(np.float32) * envelope
    agent_turn = (np.arange(n) // int(turn_s * SAMPLE_RATE)) % 2 == 0
    return np.where(agent_turn, noise, 0).astype(np.float32), np.where(agent_turn, 0, noise).astype(np.float32)


def drift_tracks(kind: str, seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two tracks of a drift test: `kind` one of INPUTS."""
    if kind == "bursts":
        return syllable_bursts(seconds, seed)
    if kind == "conversation":
        from infp.eval.bench import conversation_tracks

        return conversation_tracks(seconds)
    raise ValueError(f"drift input must be one of {', '.join(INPUTS)}, got {kind!r}")


@dataclass(frozen=True)
class DriftBlock:
    start_s: float
    eye: float  # mean eye opening over the rest state's (both eyes averaged)
    eye_min: float
    eye_closed: float  # share of frames with an eye below CLOSED of its rest opening
    mouth: float  # mean inner-lip opening (area over squared width)
    latent: float  # RMS distance of the latents from the rest latent (normalised units)


@dataclass(frozen=True)
class DriftScores:
    name: str
    blocks: list[DriftBlock]
    rest_mouth: float  # the rest state's mouth opening

    @property
    def eye_end(self) -> float:
        """The last block's mean eye opening over the first block's: 1 = no drift."""
        return self.blocks[-1].eye / self.blocks[0].eye

    @property
    def latent_growth(self) -> float:
        """The last block's latent distance over the first block's."""
        return self.blocks[-1].latent / max(self.blocks[0].latent, 1e-8)


@torch.no_grad()
def keypoint_openings(imitator, z: np.ndarray, rest: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, np.ndarray, float]:
    """(T, 2) eye openings over the rest latent's, (T,) mouth openings and the rest latent's mouth
    opening, from the keypoints the imitator's keypoint decoder gives latents z (T, motion_dim)."""
    if imitator.keypoint_decoder is None:
        raise InfpError("infp eval drift reads the keypoints the imitator decodes from the latents; this stage-1 "
                        "checkpoint has no keypoint decoder (trained without --keypoint-prior)")
    decoder = imitator.keypoint_decoder.eval()
    device = next(decoder.parameters()).device
    ref = decoder(rest.float()[None].to(device)).cpu()
    ref_eyes = eye_openings(ref)
    eyes, mouth = [], []
    for i in range(0, len(z), batch):
        k = decoder(torch.as_tensor(z[i: i + batch], dtype=torch.float32, device=device)).cpu()
        eyes.append((eye_openings(k) / ref_eyes).numpy())
        mouth.append(opening_ratio(k, kl.INNER_LIP, MOUTH_CORNERS).numpy())
    return np.concatenate(eyes), np.concatenate(mouth), float(opening_ratio(ref, kl.INNER_LIP, MOUTH_CORNERS))


def drift_blocks(eyes: np.ndarray, mouth: np.ndarray, distance: np.ndarray, block_s: float) -> list[DriftBlock]:
    """Per-frame eye (T, 2), mouth (T,) and latent distance (T,) -> one DriftBlock per `block_s` seconds
    (a last partial block shorter than half a block is folded into the one before)."""
    per = max(1, round(block_s * FPS))
    starts = list(range(0, len(mouth), per))
    if len(starts) > 1 and len(mouth) - starts[-1] < per / 2:
        starts.pop()
    ends = starts[1:] + [len(mouth)]
    out = []
    for s, e in zip(starts, ends):
        eye = eyes[s:e]
        out.append(DriftBlock(s / FPS, float(eye.mean()), float(eye.mean(1).min()), float((eye < CLOSED).any(1).mean()),
                              float(mouth[s:e].mean()), float(np.sqrt((distance[s:e] ** 2).mean()))))
    return out


def measure_drift(pipe, portrait, agent: np.ndarray, partner: np.ndarray, name: str, block_s: float = 30.0,
                  **settings) -> tuple[DriftScores, np.ndarray, np.ndarray]:
    """Generate the call's motion with `pipe` (an InfpPipeline; `settings` as its Settings) from
    `portrait`'s rest state and score it per block; also the per-frame mean eye and mouth openings."""
    z = pipe.motion(portrait, agent, partner, **settings)  # (T, motion_dim)
    model = pipe.stage2.model
    rest = portrait.start.float().cpu()
    eyes, mouth, rest_mouth = keypoint_openings(pipe.imitator, z, rest)
    with torch.no_grad():
        zn = model.normalize(torch.as_tensor(z, dtype=torch.float32).to(model.latent_mean))
        offset = (zn - model.normalize(rest.to(zn))[None])[:, model.generated_directions()]  # the others are 0
        dist = offset.pow(2).mean(-1).sqrt().cpu().numpy()  # RMS over the directions generated
    return DriftScores(name, drift_blocks(eyes, mouth, dist, block_s), rest_mouth), eyes.mean(1), mouth


@dataclass(frozen=True)
class DriftReport:
    input: str
    seconds: float
    settings: dict
    scores: list[DriftScores]

    def markdown(self) -> str:
        s = self.settings
        schedule = "the live schedule" if s.get("live") else "the offline schedule"
        lines = [f"# Long-call drift: {self.seconds:g} s of {self.input}",
                 "",
                 f"Stage 2 only (no rendering); keypoints decoded from the latents; {s.get('steps')} DDIM steps, guidance "
                 f"{s.get('guidance')}, seed {s.get('seed')}, {schedule}. "
                 f"Openings over the portrait's rest state's; an eye below {CLOSED} of it counts as closed.",
                 ""]
        for sc in self.scores:
            lines += [f"## {sc.name}: eye opening end / start {sc.eye_end:.2f}, latent distance end / start "
                      f"{sc.latent_growth:.2f} (rest mouth opening {sc.rest_mouth:.3f})", "",
                      "| from (s) | eye opening | eye min | eye closed (share of frames) | mouth opening | latent distance |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {b.start_s:.0f} | {b.eye:.3f} | {b.eye_min:.3f} | {b.eye_closed:.0%} | {b.mouth:.3f} | {b.latent:.3f} |"
                      for b in sc.blocks]
            lines.append("")
        return "\n".join(lines)

    def to_json(self) -> str:
        models = [{"name": sc.name, "eye_end": sc.eye_end, "latent_growth": sc.latent_growth, "rest_mouth": sc.rest_mouth,
                   "blocks": [asdict(b) for b in sc.blocks]} for sc in self.scores]
        return json.dumps({"input": self.input, "seconds": self.seconds, "settings": self.settings, "models": models},
                          indent=2)


def write_drift(out: Path, report: DriftReport, series: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """drift.md, drift.json and drift.png (eye and mouth opening over time, 1-s means, per model)."""
    from infp.eval.plots import series_png

    out.mkdir(parents=True, exist_ok=True)
    (out / "drift.md").write_text(report.markdown())
    (out / "drift.json").write_text(report.to_json())
    second = lambda x: x[: len(x) // FPS * FPS].reshape(-1, FPS).mean(1)  # noqa: E731
    series_png(out / "drift.png", {"eye opening / rest": {n: second(e) for n, (e, _) in series.items()},
                                   "mouth opening": {n: second(m) for n, (_, m) in series.items()}},
                                   fps=1, title=f"{report.seconds:g} s of {report.input}")
