"""Sample grids written during training: what a person looks at to see if the model learns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from infp.data.contact import write_png
from infp.data.pairs import PairBatch
from infp.runtime import to_uint8  # the image convention lives with stage 1's runtime


def save_grid(path: Path, batch: PairBatch, pred: torch.Tensor) -> None:
    """One row per pair: source | driving representation | prediction | driving (the target)."""
    cols = [batch.source, batch.driving_rep, pred, batch.driving]
    rows = [np.concatenate([to_uint8(c[i : i + 1])[0] for c in cols], 1) for i in range(len(pred))]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(path, np.concatenate(rows, 0))
