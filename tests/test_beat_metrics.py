"""mir_eval.beat wrappers: trimming, metric values on known cases, validation."""

from __future__ import annotations

import numpy as np
import pytest

from musicssl.errors import AnnotationError
from musicssl.evaluation.beat_metrics import (
    ALL_METRICS,
    CORE_METRICS,
    BeatScores,
    check_beats,
    evaluate_beats,
    format_table,
    summarize,
)

REF = np.arange(0.5, 30.0, 0.5)  # 120 BPM


def test_perfect_estimate_scores_one():
    scores = evaluate_beats(REF, REF)
    assert list(scores) == list(ALL_METRICS)
    for name in ("F-measure", "CMLc", "CMLt", "AMLc", "AMLt", "P-score", "Cemgil"):
        assert scores[name] == pytest.approx(1.0), name
    assert scores["Information gain"] == pytest.approx(1.0)  # mir_eval normalises by log2(bins)
    assert evaluate_beats(REF, REF + np.random.default_rng(0).uniform(-.2, .2, len(REF)))["Information gain"] < 0.5
    assert set(CORE_METRICS) <= set(scores)


def test_empty_estimate_scores_zero():
    scores = evaluate_beats(REF, [])
    assert all(v == 0.0 for v in scores.values())


def test_f_measure_uses_70ms_window():
    assert evaluate_beats(REF, REF + 0.06)["F-measure"] == pytest.approx(1.0)
    assert evaluate_beats(REF, REF + 0.08)["F-measure"] == pytest.approx(0.0)


def test_double_tempo_and_offbeat_count_only_at_any_level():
    double = np.arange(0.5, 30.0, 0.25)
    scores = evaluate_beats(REF, double)
    assert scores["CMLt"] == pytest.approx(0.0)
    assert scores["AMLt"] == pytest.approx(1.0, abs=0.02)
    assert scores["F-measure"] == pytest.approx(2 * 0.5 / 1.5, abs=0.01)  # precision 1/2
    offbeat = evaluate_beats(REF, REF + 0.25)
    assert offbeat["CMLt"] == pytest.approx(0.0) and offbeat["AMLt"] > 0.95


def test_first_five_seconds_are_trimmed():
    wrong_start = np.concatenate([REF[REF < 5.0] + 0.2, REF[REF >= 5.0]])
    assert evaluate_beats(REF, wrong_start)["F-measure"] == pytest.approx(1.0)
    assert evaluate_beats(REF, wrong_start, trim=0.0)["F-measure"] < 0.95


def test_information_gain_is_optional():
    assert "Information gain" not in evaluate_beats(REF, REF, information_gain=False)


@pytest.mark.parametrize("bad, message", [
    ([[0.5, 1.0], [1.5, 2.0]], "1-D"),
    ([0.5, np.nan], "NaN"),
    ([-0.5, 1.0], "negative"),
    ([1.0, 0.5], "increasing"),
    ([1.0, 1e6], "milliseconds"),
    (["a", "b"], "not a sequence of numbers"),
])
def test_invalid_beats(bad, message):
    with pytest.raises(AnnotationError, match=message):
        evaluate_beats(bad, REF)
    with pytest.raises(AnnotationError, match="estimated beats"):
        evaluate_beats(REF, bad)


def test_reference_without_beats_after_trim():
    with pytest.raises(AnnotationError, match="no beat after"):
        evaluate_beats([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(AnnotationError, match="trim"):
        evaluate_beats(REF, REF, trim=-1)


def test_column_vector_is_accepted():
    np.testing.assert_allclose(check_beats(REF[:, None]), REF)


def test_dataset_summary_and_table():
    scores = BeatScores()
    scores.add("perfect", REF, REF)
    scores.add("nothing", REF, [])
    scores.add("broken", [3.0, 1.0], REF)
    assert set(scores.per_file) == {"perfect", "nothing"}
    assert "broken" in scores.errors and "increasing" in scores.errors["broken"]
    assert scores.mean["F-measure"] == pytest.approx(0.5)
    assert summarize([]) == {}
    table = format_table({"librosa": scores.mean}, CORE_METRICS, label="tracker")
    lines = table.splitlines()
    assert lines[0].split() == ["tracker", "F-measure", "CMLt", "AMLt"]
    assert lines[2].split()[:2] == ["librosa", "0.500"]
