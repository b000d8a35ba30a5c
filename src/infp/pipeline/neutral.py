"""A neutral start for any portrait (issue 25): the avatar rests with closed lips and open eyes.

Two things change when a portrait is prepared with `expression="neutral"` (the default):
- stage 2 starts from the neutral latent `z_n` of the stage-1 checkpoint's expression space
  (`models.expression_space`), not from the portrait's own `z_src`, so the first window's context and
  every later one sit where a closed-mouth face sits in the motion space;
- the renderer is calibrated on the portrait's detected landmarks (`models.imitator.Calibration`):
  the source's keypoints are its landmarks, and the driving keypoints are those decoded from each
  latent plus the offset that puts `z_n` on the portrait's landmarks at rest (`face.neutral`). At `z_n`
  the renderer therefore closes the photo's lips even where E_m saw them nearly closed, and a latent
  that opens the mouth opens it from there.
`expression="keep"` keeps the portrait's own expression as the resting state (the behaviour before).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import torch

from infp.errors import InfpError
from infp.models.expression_space import ExpressionSpace
from infp.models.imitator import Calibration, Imitator

log = logging.getLogger("infp")
EXPRESSIONS = ("neutral", "keep")


class RestState(NamedTuple):
    start: torch.Tensor  # (motion_dim,) where stage 2 starts: z_n, or z_src when kept
    calibration: Calibration | None  # batch 1; None: the renderer decodes the source's keypoints from z_src
    expression: str  # what was done: "neutral", or "keep" (asked for, or no expression space / keypoints)


def load_expression_space(path: str | Path, fingerprint: str) -> ExpressionSpace:
    """An expression-space checkpoint, which must have been fitted on the latents of the imitator whose
    E_m has `fingerprint` (`data.motion.imitator_fingerprint`)."""
    from infp.models.checkpoint import read_config

    path = Path(path)
    fitted = (read_config(path, "expression").get("fit") or {}).get("imitator_fingerprint")
    if fitted != fingerprint:
        raise InfpError(f"fitted on the latents of imitator {fitted}, not of the given imitator ({fingerprint}); "
                        "fit one for it: infp train expression --imitator DIR", path)
    return ExpressionSpace.from_pretrained(path)


def bundled_space(path: Path | None, fingerprint: str) -> ExpressionSpace | None:
    """The bundled expression space at `path` where it was fitted on the latents of the imitator whose
    E_m has `fingerprint`, else None."""
    if path is None:
        return None
    try:
        return load_expression_space(path, fingerprint)
    except InfpError as e:
        log.info("the bundled expression space does not fit this imitator (%s)", e)
        return None


def rest_state(imitator: Imitator, space: ExpressionSpace | None, latent: torch.Tensor, points, expression: str) -> RestState:
    """Where generation starts and how the renderer is calibrated for one portrait: `latent` (motion_dim,)
    its z_src, `points` (478, 3) its landmarks in crop pixels."""
    from infp.data.pairs import keypoints
    from infp.face.neutral import neutral_points

    if expression not in EXPRESSIONS:
        raise InfpError(f"expression is one of {', '.join(EXPRESSIONS)}, not {expression!r}")
    if expression == "keep" or imitator.keypoint_decoder is None:
        return RestState(latent, None, "keep")
    if space is None:
        log.warning("no expression space for this stage-1 checkpoint: the portrait's own expression is kept as its "
                    "resting state (fit one with `infp train expression`)")
        return RestState(latent, None, "keep")
    z_n = space.neutral(latent[None].to(space.weight.device)).latent.to(latent)  # (1, D)
    size = imitator.cfg.size
    eye_open = float(space.low[space.index("eyes")])
    dec = imitator.keypoint_decoder
    with torch.no_grad():
        decoded = dec(z_n.to(dec.z_mean.device)).float().cpu()
    source = torch.from_numpy(keypoints(points, size))[None]
    rest = torch.from_numpy(keypoints(neutral_points(points, eye_open), size))[None]
    return RestState(z_n[0], Calibration(source, rest - decoded), "neutral")
