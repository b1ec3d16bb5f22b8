"""Evaluation figures (matplotlib, Agg backend), each saved as PNG and SVG.

* :func:`plot_confusion` — 24×24 confusion matrix, keys along the circle of
  fifths with each major beside its relative minor
  (:func:`musicssl.keys.circle_of_fifths_order`).
* :func:`plot_embedding_pca` — first two principal components (numpy SVD) of
  per-recording embeddings, coloured by the reference key's position on the
  circle of fifths (major ●, minor ▲): a pitch-equivariant model shows a ring.
* :func:`plot_keygram` — local key probabilities over time for one recording.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from musicssl.keys import KEYS, Key, circle_of_fifths_order, format_key

FORMATS: tuple[str, ...] = ("png", "svg")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: str | Path, formats: Sequence[str] = FORMATS, dpi: int = 120) -> list[Path]:
    """Save ``fig`` as ``stem.png`` / ``stem.svg`` (folders created); returns the paths."""
    plt = _pyplot()
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def _short(key: Key) -> str:
    """Axis label: ``C``, ``a``, ``F#``, ``eb`` (major upper case, minor lower case)."""
    name = format_key(key, "tkey").rstrip("m")
    return name if key.is_major else name.lower()


def circle_of_fifths_permutation() -> np.ndarray:
    """Canonical key indices in circle-of-fifths order ``(24,)``."""
    return np.array([k.index for k in circle_of_fifths_order()])


def plot_confusion(matrix: np.ndarray, stem: str | Path, title: str = "", normalize: bool = True) -> list[Path]:
    """Confusion matrix ``(24, 24)`` (rows reference, columns estimate, canonical order).

    With ``normalize`` each row is shown as a fraction of its reference count.
    """
    plt = _pyplot()
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (24, 24):
        raise ValueError(f"confusion matrix must be (24, 24), got {matrix.shape}")
    order = circle_of_fifths_permutation()
    m = matrix[np.ix_(order, order)]
    shown = m / np.maximum(m.sum(axis=1, keepdims=True), 1) if normalize else m
    labels = [_short(KEYS[i]) for i in order]
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(24), labels, fontsize=7, rotation=90)
    ax.set_yticks(range(24), labels, fontsize=7)
    ax.set_xlabel("estimated key")
    ax.set_ylabel("reference key")
    for i, j in zip(*np.nonzero(m)):
        ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=5,
                color="white" if shown[i, j] > 0.6 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                 label="fraction of reference" if normalize else "count")
    ax.set_title(title or "Key confusion (circle-of-fifths order, relatives adjacent)", fontsize=10)
    return save_figure(fig, stem)


def pca_2d(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First two principal components of ``features`` ``(N, D)``: ``(N, 2)`` scores and the
    explained-variance ratios ``(2,)`` (numpy SVD of the centred data)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"PCA needs (N >= 2, D) features, got {x.shape}")
    x = x - x.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    k = min(2, len(s))
    scores = u[:, :k] * s[:k]
    if k < 2:
        scores = np.pad(scores, ((0, 0), (0, 2 - k)))
    total = float((s ** 2).sum())
    ratio = (s[:2] ** 2) / total if total > 0 else np.zeros(2)
    return scores, np.pad(ratio, (0, 2 - len(ratio)))


def plot_embedding_pca(embeddings: np.ndarray, keys: Sequence[Key], stem: str | Path,
                       title: str = "") -> list[Path]:
    """Scatter of the first two PCs of ``embeddings`` ``(N, D)``, coloured by key signature."""
    plt = _pyplot()
    if len(keys) != len(embeddings):
        raise ValueError(f"{len(embeddings)} embeddings but {len(keys)} keys")
    scores, ratio = pca_2d(embeddings)
    cmap = plt.get_cmap("hsv")
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    positions = np.array([k.fifths_position for k in keys])
    for mode, marker in (("major", "o"), ("minor", "^")):
        mask = np.array([k.mode == mode for k in keys])
        if mask.any():
            ax.scatter(scores[mask, 0], scores[mask, 1], c=cmap(positions[mask] / 12.0), marker=marker,
                       s=22, edgecolors="k", linewidths=0.3)
    for pos in range(12):  # legend of the signature colours at each cluster's centre
        mask = positions == pos
        if mask.any():
            centre = scores[mask].mean(axis=0)
            ax.annotate(_short(Key((7 * pos) % 12, "major")), centre, fontsize=8, ha="center",
                        va="center", weight="bold", color=cmap(pos / 12.0),
                        bbox=dict(boxstyle="round,pad=0.1", fc="white", alpha=0.6, lw=0))
    ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.0f} % of variance)")
    ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.0f} % of variance)")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], ls="", marker=m, color="grey", markeredgecolor="k", label=mode)
               for mode, m in (("major", "o"), ("minor", "^"))]
    ax.legend(handles=handles, loc="best", fontsize=8)
    ax.set_title(title or "Embeddings (PCA), coloured by key signature", fontsize=10)
    return save_figure(fig, stem)


def plot_keygram(probabilities: np.ndarray, times: np.ndarray, stem: str | Path, title: str = "",
                 reference: Key | None = None) -> list[Path]:
    """Key-gram: local key probabilities ``(T, 24)`` (canonical order) at window centres
    ``times`` ``(T,)`` seconds; keys on the circle of fifths, relatives adjacent."""
    plt = _pyplot()
    probabilities = np.asarray(probabilities, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != 24 or len(times) != len(probabilities):
        raise ValueError(f"key-gram needs (T, 24) probabilities and (T,) times, got "
                         f"{probabilities.shape} and {times.shape}")
    order = circle_of_fifths_permutation()
    grid = probabilities[:, order].T
    if len(times) > 1:
        step = np.median(np.diff(times))
        edges = np.concatenate([[times[0] - step / 2], (times[1:] + times[:-1]) / 2, [times[-1] + step / 2]])
    else:
        edges = np.array([times[0] - 0.5, times[0] + 0.5])
    fig, ax = plt.subplots(figsize=(8, 5))
    mesh = ax.pcolormesh(edges, np.arange(25) - 0.5, grid, cmap="magma", vmin=0, shading="flat")
    ax.set_yticks(range(24), [_short(KEYS[i]) for i in order], fontsize=7)
    best = probabilities.argmax(axis=1)
    rows = np.argsort(order)[best]
    ax.plot(times, rows, "c.", ms=4, label="arg-max")
    if reference is not None:
        ax.axhline(int(np.argsort(order)[reference.index]), color="lime", lw=0.8, ls="--",
                   label=f"reference {reference}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("key (circle of fifths)")
    ax.legend(loc="upper right", fontsize=7)
    fig.colorbar(mesh, ax=ax, fraction=0.046, pad=0.04, label="probability")
    ax.set_title(title or "Key-gram", fontsize=10)
    return save_figure(fig, stem)
