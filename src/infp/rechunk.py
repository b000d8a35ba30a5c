"""Re-cutting a stream of arrays into pieces of the lengths a consumer asks for."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class Rechunk:
    """Pieces of a given length from blocks of any length along their last axis; shorter (or
    empty) ones once the blocks run out."""

    def __init__(self, pieces: Iterator[np.ndarray]):
        self._pieces, self._held, self._n, self._lead = pieces, [], 0, ()

    def take(self, n: int) -> np.ndarray:
        while self._n < n and (nxt := next(self._pieces, None)) is not None:
            self._held.append(nxt)
            self._n, self._lead = self._n + nxt.shape[-1], nxt.shape[:-1]
        if not self._held:
            return np.zeros((*self._lead, 0), np.float32)
        whole = np.concatenate(self._held, axis=-1) if len(self._held) > 1 else self._held[0]
        out, rest = whole[..., :n], whole[..., n:]
        self._held, self._n = ([rest] if rest.shape[-1] else []), rest.shape[-1]
        return out
