"""The speaking/listening activity of both tracks as a picture: what the demo shows under the video."""

from __future__ import annotations

import cv2
import numpy as np

from infp import FPS

AGENT_COLOUR = (230, 120, 40)  # RGB
PARTNER_COLOUR = (40, 120, 230)
GRID = (200, 200, 200)


def activity_image(agent: np.ndarray, partner: np.ndarray, width: int = 800, row: int = 28) -> np.ndarray:
    """(H, width, 3) uint8 RGB: one lane per track (agent above, partner below) filled where the
    track has voice, and a tick every second. `agent`/`partner` are (T,) bool per video frame."""
    agent, partner = np.asarray(agent, bool), np.asarray(partner, bool)
    n = max(len(agent), len(partner), 1)
    label_w, top, axis = 80, 6, 22
    h = top + 2 * row + 8 + axis
    img = np.full((h, width, 3), 255, np.uint8)
    plot_w = width - label_w - 10
    x = lambda frame: label_w + round(frame / n * plot_w)  # frame -> pixel column
    for lane, (name, active, colour) in enumerate((("agent", agent, AGENT_COLOUR), ("partner", partner, PARTNER_COLOUR))):
        y0 = top + lane * (row + 4)
        cv2.rectangle(img, (label_w, y0), (label_w + plot_w, y0 + row), GRID, 1)
        cv2.putText(img, name, (6, y0 + row - 9), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
        for s, e in zip(edges[::2], edges[1::2]):  # runs of voice
            cv2.rectangle(img, (x(s), y0 + 2), (max(x(e) - 1, x(s)), y0 + row - 2), colour, -1)
    seconds = n / FPS
    step = max(1, int(np.ceil(seconds / 12)))  # at most about a dozen labels
    y_axis = top + 2 * row + 8
    for s in range(0, int(seconds) + 1, step):
        cx = x(s * FPS)
        cv2.line(img, (cx, y_axis - 4), (cx, y_axis), (90, 90, 90), 1)
        cv2.putText(img, f"{s}s", (cx - 8, y_axis + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (60, 60, 60), 1, cv2.LINE_AA)
    return img
