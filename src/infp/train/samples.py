"""Sample grids written during training: what a person looks at to see if the model learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from infp.data.contact import write_png
from infp.data.pairs import PairBatch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def save_grid(path: Path, batch: PairBatch, pred: torch.Tensor) -> None:
    """One row per pair: source | driving representation | prediction | driving (the target)."""
    cols = [batch.source, batch.driving_rep, pred, batch.driving]
    rows = [np.concatenate([to_uint8(c[i : i + 1])[0] for c in cols], 1) for i in range(len(pred))]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.concatenate(rows, 0))
