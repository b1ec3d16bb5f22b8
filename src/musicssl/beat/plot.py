"""Beat plots: waveform and activation on one time axis, beats as ticks, one PNG per track."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from musicssl.beat.features import PLOT_RATE


def plot_beats(path: str | Path, waveform: np.ndarray | None, activation: np.ndarray,
               beats: np.ndarray, fps: float, title: str = "", tempo: float | None = None,
               tracker: str = "", window: tuple[float, float | None] | None = None) -> None:
    """PNG: waveform (top) and activation (bottom) on one time axis, beats as ticks.

    ``window`` ``(start, end)`` s limits the plot (default: the first 30 s,
    past which beat lines fill the figure); the title names the file, the
    tempo (BPM), the tracker and the window shown.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    duration = len(activation) / fps
    start, end = window if window is not None else (0.0, 30.0)
    end = duration if end is None else min(end, duration)
    start = min(start, max(0.0, end - 1.0 / fps))
    beats = np.asarray(beats, dtype=np.float64)
    shown = beats[(beats >= start) & (beats <= end)]

    fig, axes = plt.subplots(2, 1, figsize=(12, 4.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 1.3]})
    if waveform is not None:
        t = np.arange(len(waveform)) / PLOT_RATE
        sel = (t >= start) & (t <= end)
        axes[0].fill_between(t[sel], -waveform[sel], waveform[sel], color="0.45", linewidth=0)
    axes[0].set_ylabel("waveform")
    axes[0].set_yticks([])
    frames = np.arange(len(activation)) / fps
    sel = (frames >= start) & (frames <= end)
    axes[1].plot(frames[sel], activation[sel], color="tab:blue", linewidth=0.9, label="activation")
    axes[1].set_ylim(0, 1.1)
    axes[1].set_ylabel("activation")
    axes[1].set_xlabel("time (s)")
    axes[1].set_xlim(start, end)
    axes[0].vlines(shown, -1, 1, color="tab:red", linewidth=0.8, alpha=0.6)
    axes[1].vlines(shown, 0, 1.1, color="tab:red", linewidth=0.8, alpha=0.6, label="beats")
    axes[1].legend(loc="upper right", fontsize=8, framealpha=0.8)
    parts = [title] if title else []
    parts.append("tempo -" if tempo is None else f"{tempo:.1f} BPM")
    if tracker:
        parts.append(f"tracker {tracker}")
    parts.append(f"{start:.1f}-{end:.1f} s of {duration:.1f} s, {len(shown)} of {len(beats)} beats")
    axes[0].set_title("  |  ".join(parts), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
