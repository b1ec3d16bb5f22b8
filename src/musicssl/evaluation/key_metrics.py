"""Key-estimation metrics: MIREX weighted score (both fifth rules), KSEA, mode accuracy.

The weighted score comes from :func:`mir_eval.key.weighted_score`; nothing of
it is re-implemented here. Two fifth conventions are reported:

* ``mirex`` — mir_eval's rule: 0.5 only when the estimate is a perfect fifth
  **above** the reference (same mode);
* ``mirex_both`` — the rule MIREX has used since 2017: a fifth above **or
  below** scores 0.5. mir_eval's score is symmetric in its two arguments except
  for the fifth, so this is ``max(weighted_score(ref, est), weighted_score(est, ref))``.

KSEA (key-signature estimation accuracy, SPEC §1.8): 1 when the estimate has
the reference's key signature (same key or its relative), 0.5 when the
signatures are one step apart on the circle of fifths, else 0.

Breakdown categories (one per item): ``correct``, ``fifth`` (either direction;
``fifth_above`` / ``fifth_below`` are also counted), ``relative``, ``parallel``,
``other``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Sequence

import mir_eval
import numpy as np

from musicssl.errors import KeyLabelError
from musicssl.keys import KEYS, Key, parse_key

#: Breakdown categories in report order.
CATEGORIES: tuple[str, ...] = ("correct", "fifth", "relative", "parallel", "other")
#: Names of the averaged scores, in report order.
SCORE_NAMES: tuple[str, ...] = ("mirex", "mirex_both", "ksea", "mode", "accuracy")
#: Human-readable labels for the averaged scores.
SCORE_LABELS: dict[str, str] = {
    "mirex": "MIREX (mir_eval, fifth above)",
    "mirex_both": "MIREX (both fifths, MIREX>=2017)",
    "ksea": "KSEA",
    "mode": "mode accuracy",
    "accuracy": "exact accuracy",
}


def to_mir_eval_label(key: Key | str) -> str:
    """A mir_eval-valid label (``"Eb major"``) for ``key``.

    ``key`` may be a :class:`~musicssl.keys.Key` or a label in any notation
    :func:`~musicssl.keys.parse_key` reads. The result is checked with
    :func:`mir_eval.key.validate_key`; raises :class:`KeyLabelError`.
    """
    if isinstance(key, Key):
        label = str(key)
    elif isinstance(key, str):
        label = str(parse_key(key))
    else:
        raise KeyLabelError(f"a key must be a Key or a string, got {type(key).__name__}")
    try:
        mir_eval.key.validate_key(label)
    except ValueError as exc:  # pragma: no cover - format_key always gives valid labels
        raise KeyLabelError(f"{label!r} is not a valid mir_eval key: {exc}") from exc
    return label


def _as_key(key: Key | str) -> Key:
    return key if isinstance(key, Key) else parse_key(to_mir_eval_label(key))


def ksea(reference: Key | str, estimate: Key | str) -> float:
    """Key-signature estimation accuracy of one item: 1, 0.5 or 0."""
    ref, est = _as_key(reference), _as_key(estimate)
    steps = (est.fifths_position - ref.fifths_position) % 12
    if steps == 0:
        return 1.0
    if steps in (1, 11):
        return 0.5
    return 0.0


def category(reference: Key | str, estimate: Key | str) -> str:
    """Relation of ``estimate`` to ``reference``: one of :data:`CATEGORIES`
    (a fifth is reported as ``fifth_above`` or ``fifth_below``)."""
    ref, est = _as_key(reference), _as_key(estimate)
    if ref == est:
        return "correct"
    if ref.mode == est.mode:
        step = (est.tonic - ref.tonic) % 12
        if step == 7:
            return "fifth_above"
        if step == 5:
            return "fifth_below"
        return "other"
    if est == ref.relative:
        return "relative"
    if est == ref.parallel:
        return "parallel"
    return "other"


@dataclass(frozen=True)
class KeyScore:
    """Scores of one estimate against one reference (all in [0, 1])."""

    reference: str
    estimate: str
    mirex: float          # mir_eval.key.weighted_score (fifth above only)
    mirex_both: float     # MIREX since 2017 (fifth above or below)
    ksea: float
    mode: float           # 1 if major/minor agrees
    accuracy: float       # 1 if the key is exactly right
    category: str         # correct / fifth_above / fifth_below / relative / parallel / other

    def to_dict(self) -> dict:
        return asdict(self)


def score_key(reference: Key | str, estimate: Key | str) -> KeyScore:
    """Score one estimate. Labels are validated (``KeyLabelError`` if bad)."""
    ref_label, est_label = to_mir_eval_label(reference), to_mir_eval_label(estimate)
    ref, est = parse_key(ref_label), parse_key(est_label)
    forward = float(mir_eval.key.weighted_score(ref_label, est_label))
    backward = float(mir_eval.key.weighted_score(est_label, ref_label))
    return KeyScore(
        reference=ref_label,
        estimate=est_label,
        mirex=forward,
        mirex_both=max(forward, backward),
        ksea=ksea(ref, est),
        mode=float(ref.mode == est.mode),
        accuracy=float(ref == est),
        category=category(ref, est),
    )


@dataclass
class KeySummary:
    """Mean scores of ``n`` items, the category breakdown and per-group summaries."""

    n: int
    mirex: float
    mirex_both: float
    ksea: float
    mode: float
    accuracy: float
    counts: dict[str, int]        # CATEGORIES + fifth_above / fifth_below
    percent: dict[str, float]     # same keys, 0..100
    groups: dict[str, "KeySummary"] = field(default_factory=dict)

    def scores(self) -> dict[str, float]:
        """The averaged scores by name (:data:`SCORE_NAMES`), in [0, 1]."""
        return {name: getattr(self, name) for name in SCORE_NAMES}

    def to_dict(self) -> dict:
        out = {name: getattr(self, name) for name in ("n",) + SCORE_NAMES}
        out["counts"] = dict(self.counts)
        out["percent"] = dict(self.percent)
        out["groups"] = {g: s.to_dict() for g, s in self.groups.items()}
        return out


def summarize(scores: Sequence[KeyScore], groups: Sequence[str | None] | None = None) -> KeySummary:
    """Average ``scores``; with ``groups`` (one name or None per score) also per group.

    An empty sequence gives ``n = 0`` and NaN means.
    """
    scores = list(scores)
    if groups is not None and len(groups) != len(scores):
        raise ValueError(f"{len(groups)} group names for {len(scores)} scores")
    n = len(scores)
    means = {name: (float(np.mean([getattr(s, name) for s in scores])) if n else float("nan"))
             for name in SCORE_NAMES}
    raw = Counter(s.category for s in scores)
    counts = {
        "correct": raw["correct"],
        "fifth": raw["fifth_above"] + raw["fifth_below"],
        "relative": raw["relative"],
        "parallel": raw["parallel"],
        "other": raw["other"],
        "fifth_above": raw["fifth_above"],
        "fifth_below": raw["fifth_below"],
    }
    percent = {c: (100.0 * v / n if n else float("nan")) for c, v in counts.items()}
    by_group: dict[str, KeySummary] = {}
    if groups is not None:
        names = sorted({g for g in groups if g is not None})
        for name in names:
            members = [s for s, g in zip(scores, groups) if g == name]
            by_group[name] = summarize(members)
    return KeySummary(n=n, counts=counts, percent=percent, groups=by_group, **means)


def confusion_matrix(references: Iterable[Key | str], estimates: Iterable[Key | str]) -> np.ndarray:
    """Counts ``(24, 24)`` int: row = reference key, column = estimate, canonical order."""
    matrix = np.zeros((len(KEYS), len(KEYS)), dtype=np.int64)
    refs, ests = list(references), list(estimates)
    if len(refs) != len(ests):
        raise ValueError(f"{len(refs)} references but {len(ests)} estimates")
    for ref, est in zip(refs, ests):
        matrix[_as_key(ref).index, _as_key(est).index] += 1
    return matrix


@dataclass(frozen=True)
class CalibrationScores:
    """How well 24-key probabilities are calibrated on ``n`` items.

    ``ece``: expected calibration error of the top-1 probability against exact
    correctness, with ``n_bins`` equal-width bins over [0, 1]; ``nll``: mean
    negative log-probability of the reference key (nats); ``accuracy``: exact
    accuracy of the top-1 key; ``confidence``: mean top-1 probability;
    ``bins``: (lower edge, count, mean confidence, accuracy) per non-empty bin
    (a reliability diagram).
    """

    n: int
    ece: float
    nll: float
    accuracy: float
    confidence: float
    bins: tuple[tuple[float, int, float, float], ...]


def calibration_scores(probabilities, references: Sequence[Key | str], n_bins: int = 10) -> CalibrationScores:
    """Calibration of canonical probabilities ``(n, 24)`` against reference keys (n,)."""
    p = np.asarray(probabilities, dtype=np.float64)
    refs = [_as_key(to_mir_eval_label(r)) for r in references]
    if p.ndim != 2 or p.shape[1] != len(KEYS) or len(refs) != p.shape[0]:
        raise ValueError(f"expected probabilities (n, 24) for {len(refs)} references, got {p.shape}")
    if len(refs) == 0:
        raise ValueError("no items to score")
    truth = np.array([r.index for r in refs])
    top = p.argmax(axis=1)
    conf = p.max(axis=1)
    correct = (top == truth).astype(np.float64)
    nll = float(-np.mean(np.log(np.maximum(p[np.arange(len(truth)), truth], 1e-12))))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1]), 0, n_bins - 1)
    ece, bins = 0.0, []
    for b in range(n_bins):
        members = which == b
        if members.any():
            gap = abs(conf[members].mean() - correct[members].mean())
            ece += members.mean() * gap
            bins.append((float(edges[b]), int(members.sum()), float(conf[members].mean()),
                         float(correct[members].mean())))
    return CalibrationScores(len(truth), float(ece), nll, float(correct.mean()), float(conf.mean()), tuple(bins))
