"""PNG plots for the evaluation report (`infp eval conversation`): a timeline of who speaks against the
mouth opening and head pitch of each series, and a grid of per-metric bar charts.

matplotlib is imported inside the functions (Figure + the Agg canvas, no pyplot): importing this module
is cheap, never needs a display, and no figure outlives its call."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

AGENT_COLOUR = "#1f77b4"  # blue
PARTNER_COLOUR = "#ff7f0e"  # orange
# series colours: none of them is the agent's or the partner's, so row 1 stays unambiguous
SERIES_COLOURS = ("#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def _runs(active: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True frames."""
    a = np.concatenate([[False], np.asarray(active, dtype=bool).reshape(-1), [False]])
    edges = np.flatnonzero(np.diff(a.astype(np.int8)))
    return [(int(s), int(e - s)) for s, e in zip(edges[::2], edges[1::2])]


def _save(fig, path: str | Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=fig.dpi)
    fig.clear()  # Figure is not registered with pyplot: dropping it frees it
    return path


def timeline_png(path: str | Path, agent_voice: np.ndarray, partner_voice: np.ndarray,
                 mouth: dict[str, np.ndarray], pitch: dict[str, np.ndarray], fps: int = 25,
                 title: str = "", reference: str | None = None) -> Path:
    """Write a 3-row timeline (seconds): who speaks (agent upper band, partner lower band), each
    series' mouth opening, each series' head pitch (degrees). `reference` is drawn black dashed;
    agent-speaking frames are shaded lightly in rows 2 and 3. Returns `path`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 6), dpi=100, layout="constrained")
    ax_vad, ax_mouth, ax_pitch = fig.subplots(3, 1, sharex=True)
    lengths = [len(agent_voice), len(partner_voice), *map(len, mouth.values()), *map(len, pitch.values())]
    duration = max(max(lengths, default=0), 1) / fps

    agent_runs = [(s / fps, n / fps) for s, n in _runs(agent_voice)]
    partner_runs = [(s / fps, n / fps) for s, n in _runs(partner_voice)]
    ax_vad.broken_barh(agent_runs, (0.52, 0.46), facecolors=AGENT_COLOUR, label="agent speaks")
    ax_vad.broken_barh(partner_runs, (0.02, 0.46), facecolors=PARTNER_COLOUR, label="partner speaks")
    ax_vad.set_ylim(0, 1)
    ax_vad.set_yticks([0.75, 0.25], ["agent", "partner"])
    ax_vad.set_ylabel("voice")
    ax_vad.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)

    colours = iter(SERIES_COLOURS * (1 + len(mouth) + len(pitch)))
    style: dict[str, dict] = {}
    for name in [*mouth, *(n for n in pitch if n not in mouth)]:
        style[name] = ({"color": "black", "linestyle": "--", "linewidth": 1.2} if name == reference
                       else {"color": next(colours), "linewidth": 1.2})
    for ax, series, label in ((ax_mouth, mouth, "mouth opening"), (ax_pitch, pitch, "pitch (deg)")):
        for start, length in agent_runs:
            ax.axvspan(start, start + length, color=AGENT_COLOUR, alpha=0.12, linewidth=0)
        for name, values in series.items():
            y = np.asarray(values, dtype=float).reshape(-1)
            t = np.arange(len(y)) / fps
            ax.plot(t, y, label=name, marker="." if len(y) == 1 else None, **style[name])
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, linewidth=0.5)
    if style:
        ax_mouth.legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)
    ax_pitch.set_xlim(0, duration)
    ax_pitch.set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def bars_png(path: str | Path, metrics: dict[str, dict[str, float]], title: str = "", ncols: int = 4) -> Path:
    """Write a grid of bar charts, one per metric ({label: {model: value}}), one bar per model in one
    colour per model across panels, each value written above its bar; NaN gets "n/a". Returns `path`."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    models = list(dict.fromkeys(m for values in metrics.values() for m in values))
    colour = {m: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, m in enumerate(models)}
    n = max(len(metrics), 1)
    cols = max(1, min(ncols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(max(3.0 * cols, 4.0), 2.4 * rows + 0.8), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax, (label, values) in zip(axes, metrics.items()):
        finite = [v for v in values.values() if np.isfinite(v)]
        span = max((abs(v) for v in finite), default=1.0) or 1.0
        for x, model in enumerate(models):
            if model not in values:
                continue
            v = float(values[model])
            if not np.isfinite(v):
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
                continue
            ax.bar(x, v, color=colour[model], width=0.7)
            ax.text(x, v + (0.02 * span if v >= 0 else -0.02 * span), f"{v:.3g}", ha="center",
                    va="bottom" if v >= 0 else "top", fontsize=8)
        ax.set_title(label, fontsize=9)
        ax.set_xticks([])
        if not finite:
            ax.set_yticks([])
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.margins(y=0.2)
        ax.axhline(0, color="0.5", linewidth=0.6)
        ax.tick_params(labelsize=7)
    for ax in axes[len(metrics):]:
        ax.set_axis_off()
    if not metrics:
        axes[0].text(0.5, 0.5, "no metrics", ha="center", va="center")
    if models:
        fig.legend(handles=[Patch(color=colour[m], label=m) for m in models], loc="outside lower center",
                   ncols=min(len(models), 6), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def series_png(path: str | Path, panels: dict[str, dict[str, np.ndarray]], fps: float = 25, title: str = "") -> Path:
    """Write one row per panel ({label: {series name: values}}), every series over time (seconds) in one
    colour per name across rows. Returns `path`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 2.4 * max(len(panels), 1) + 0.6), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(max(len(panels), 1), 1, sharex=True, squeeze=False)).reshape(-1)
    names = list(dict.fromkeys(n for series in panels.values() for n in series))
    colour = {n: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, n in enumerate(names)}
    for ax, (label, series) in zip(axes, panels.items()):
        for name, values in series.items():
            y = np.asarray(values, dtype=float).reshape(-1)
            ax.plot(np.arange(len(y)) / fps, y, label=name, color=colour[name], linewidth=1.2)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, linewidth=0.5)
    if names:
        axes[0].legend(loc="upper left", bbox_to_anchor=(1.005, 1), fontsize=8, frameon=False)
    axes[-1].set_xlabel("time (s)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
