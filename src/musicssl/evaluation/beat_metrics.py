"""Beat tracking scores: thin, validating wrappers around ``mir_eval.beat``.

Both beat sequences are trimmed to ``t >= trim`` seconds first (the standard
5 s of ``mir_eval.beat.trim_beats``), then scored with:

* ``F-measure`` (±70 ms window), ``CMLc``/``CMLt`` (correct metrical level,
  continuous/total), ``AMLc``/``AMLt`` (any metrical level: double, half,
  off-beat allowed), ``P-score``, ``Cemgil``, and, optionally,
  ``Information gain`` (mir_eval normalises it to [0, 1]).

:func:`activation_probe` scores an *activation* (no decoder) against the
beats: does it peak on them? (the check of a self-supervised beat model).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import mir_eval
import numpy as np

from musicssl.errors import AnnotationError

__all__ = [
    "CORE_METRICS",
    "ALL_METRICS",
    "BeatScores",
    "check_beats",
    "evaluate_beats",
    "summarize",
    "format_table",
    "PROBE_METRICS",
    "activation_probe",
]

#: The metrics reported by the SPEC (§2.4) in tables, in order.
CORE_METRICS: tuple[str, ...] = ("F-measure", "CMLt", "AMLt")
#: Every metric :func:`evaluate_beats` can return, in order.
ALL_METRICS: tuple[str, ...] = ("F-measure", "CMLc", "CMLt", "AMLc", "AMLt",
                                "P-score", "Cemgil", "Information gain")


def check_beats(beats, what: str = "beats") -> np.ndarray:
    """Beat times (n,) in seconds as float64, or :class:`AnnotationError` saying why not.

    Accepts any 1-D sequence (a (n, 1) column too); times must be finite,
    non-negative and non-decreasing.
    """
    try:
        arr = np.asarray(beats, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"{what}: not a sequence of numbers ({exc})") from None
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise AnnotationError(f"{what}: expected a 1-D array of beat times, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise AnnotationError(f"{what}: contains NaN or infinite times")
    if arr.size and arr.min() < 0:
        raise AnnotationError(f"{what}: negative time {arr.min():.3f} s")
    if arr.size > 1 and np.any(np.diff(arr) < 0):
        i = int(np.flatnonzero(np.diff(arr) < 0)[0])
        raise AnnotationError(
            f"{what}: times must be increasing (beat {i + 1} at {arr[i + 1]:.3f} s "
            f"comes after {arr[i]:.3f} s)")
    if arr.size and arr.max() > mir_eval.beat.MAX_TIME:
        raise AnnotationError(f"{what}: time {arr.max():.1f} s is implausibly large "
                              f"(> {mir_eval.beat.MAX_TIME} s; milliseconds instead of seconds?)")
    return arr


def evaluate_beats(reference, estimated, trim: float = 5.0, *,
                   information_gain: bool = True) -> dict[str, float]:
    """Scores (see :data:`ALL_METRICS`) of ``estimated`` against ``reference`` beats.

    ``reference``, ``estimated``: beat times (n,) in seconds. ``trim``: beats
    before this time (s) are ignored (0 keeps all). Raises AnnotationError for
    malformed input or a reference with no beat after the trim; an empty
    estimate scores 0.
    """
    ref = check_beats(reference, "reference beats")
    est = check_beats(estimated, "estimated beats")
    if not np.isfinite(trim) or trim < 0:
        raise AnnotationError(f"trim must be a non-negative number of seconds, got {trim!r}")
    ref = ref[ref >= trim]
    est = est[est >= trim]
    if ref.size == 0:
        raise AnnotationError(
            f"reference has no beat after the first {trim:g} s: nothing to score against")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mir_eval warns on empty/short inputs; they score 0
        cmlc, cmlt, amlc, amlt = mir_eval.beat.continuity(ref, est)
        scores = {
            "F-measure": mir_eval.beat.f_measure(ref, est, f_measure_threshold=0.07),
            "CMLc": cmlc,
            "CMLt": cmlt,
            "AMLc": amlc,
            "AMLt": amlt,
            "P-score": mir_eval.beat.p_score(ref, est),
            "Cemgil": mir_eval.beat.cemgil(ref, est)[0],
        }
        if information_gain:
            scores["Information gain"] = mir_eval.beat.information_gain(ref, est)
    return {k: float(v) for k, v in scores.items()}


@dataclass
class BeatScores:
    """Scores of a dataset: ``per_file`` name -> scores, ``errors`` name -> message."""

    per_file: dict[str, dict[str, float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def mean(self) -> dict[str, float]:
        return summarize(self.per_file.values())

    def add(self, name: str, reference, estimated, trim: float = 5.0) -> dict[str, float] | None:
        """Score one file; a malformed reference is recorded in ``errors``, not raised."""
        try:
            scores = evaluate_beats(reference, estimated, trim)
        except AnnotationError as exc:
            self.errors[name] = str(exc)
            return None
        self.per_file[name] = scores
        return scores


def summarize(per_file: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over files (only metrics every file has); ``{}`` for none."""
    rows = list(per_file)
    if not rows:
        return {}
    names = [m for m in rows[0] if all(m in r for r in rows)]
    return {m: float(np.mean([r[m] for r in rows])) for m in names}


def format_table(rows: Mapping[str, Mapping[str, float]],
                 metrics: Sequence[str] = ALL_METRICS, label: str = "") -> str:
    """Plain-text table: one line per row name, one column per metric (3 decimals)."""
    metrics = [m for m in metrics if any(m in r for r in rows.values())]
    width = max([len(label)] + [len(str(n)) for n in rows]) if rows else len(label)
    head = f"{label:<{width}}  " + "  ".join(f"{m:>9}" for m in metrics)
    lines = [head, "-" * len(head)]
    for name, scores in rows.items():
        cells = "  ".join(f"{scores[m]:>9.3f}" if m in scores else f"{'-':>9}" for m in metrics)
        lines.append(f"{str(name):<{width}}  {cells}")
    return "\n".join(lines)


#: The scores of :func:`activation_probe`, in order.
PROBE_METRICS: tuple[str, ...] = ("beat_peak_ratio", "beat_auc", "beat_auc_best_lag", "best_lag_frames")


def activation_probe(activation, reference, fps: float, *, window: float = 0.035,
                     trim: float = 0.0, max_lag_frames: int = 12) -> dict[str, float]:
    """Does ``activation`` ``(T,)`` (frame ``t`` at ``t / fps`` s) peak on the ``reference`` beats (s)?

    Frames within ``±window`` s of a beat are *on-beat*, all others *off-beat*;
    frames before ``trim`` s are ignored. Scores (:data:`PROBE_METRICS`):

    * ``beat_peak_ratio``: mean on-beat activation / mean off-beat activation
      (1 = no preference; meaningful for non-negative activations);
    * ``beat_auc``: probability that a random on-beat frame is higher than a
      random off-beat frame (Mann-Whitney; 0.5 = chance, < 0.5 = dips on beats);
      invariant to any increasing rescaling of the activation;
    * ``beat_auc_best_lag`` / ``best_lag_frames``: the highest AUC of the
      activation shifted by ``-max_lag_frames..max_lag_frames`` frames and that
      shift (positive: the activation responds late). An upper bound, since the
      lag is chosen on the same data.

    Raises :class:`AnnotationError` for malformed inputs, a flat or too short
    activation, or no beat in range.
    """
    from scipy.stats import mannwhitneyu

    ref = check_beats(reference, "reference beats")
    try:
        act = np.asarray(activation, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise AnnotationError(f"activation: not a sequence of numbers ({exc})") from None
    if act.ndim != 1:
        raise AnnotationError(f"activation: expected shape (T,), got {act.shape}")
    if not np.all(np.isfinite(act)):
        raise AnnotationError("activation: contains NaN or infinite values")
    if not (np.isfinite(fps) and fps > 0):
        raise AnnotationError(f"fps must be positive, got {fps!r}")
    if not (np.isfinite(window) and window > 0) or not (np.isfinite(trim) and trim >= 0):
        raise AnnotationError(f"need window > 0 and trim >= 0 s, got {window!r}, {trim!r}")
    if max_lag_frames < 0:
        raise AnnotationError(f"max_lag_frames must be >= 0, got {max_lag_frames}")
    first = int(np.ceil(trim * fps))
    if act.size - first < 2 * max_lag_frames + 8:
        raise AnnotationError(f"activation: {act.size} frames are too few to probe")
    t = np.arange(act.size) / fps
    on = np.zeros(act.size, dtype=bool)
    for b in ref:
        on |= np.abs(t - b) <= window + 1e-9
    # score only frames that stay inside the activation for every lag
    valid = np.zeros(act.size, dtype=bool)
    valid[max(first, max_lag_frames):act.size - max_lag_frames] = True
    on_v, off_v = on & valid, ~on & valid
    if not on_v.any() or not off_v.any():
        raise AnnotationError("reference: no beat (or no off-beat frame) inside the activation")
    if float(act[valid].std()) < 1e-12:
        raise AnnotationError("activation: constant over the probed frames")

    def auc(x: np.ndarray) -> float:
        u = mannwhitneyu(x[on_v], x[off_v], alternative="two-sided").statistic
        return float(u) / (int(on_v.sum()) * int(off_v.sum()))

    lags = range(-max_lag_frames, max_lag_frames + 1)
    aucs = {lag: auc(np.roll(act, -lag)) for lag in lags}  # roll(-lag): out[t] = act[t + lag]
    best = max(aucs, key=lambda k: (aucs[k], -abs(k)))
    off_mean = float(act[off_v].mean())
    ratio = float(act[on_v].mean()) / off_mean if abs(off_mean) > 1e-12 else float("nan")
    return {"beat_peak_ratio": ratio, "beat_auc": aucs[0], "beat_auc_best_lag": aucs[best],
            "best_lag_frames": float(best)}
