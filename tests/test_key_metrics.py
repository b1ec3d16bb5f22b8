"""Key metrics: hand-checked values of the MIREX rules, KSEA, mode and the breakdown."""

from __future__ import annotations

import math

import numpy as np

import pytest

from musicssl.errors import KeyLabelError
from musicssl.evaluation.key_metrics import (
    category,
    confusion_matrix,
    ksea,
    score_key,
    summarize,
    to_mir_eval_label,
)
from musicssl.keys import KEYS, Key


@pytest.mark.parametrize(
    "estimate, mirex, mirex_both, ksea_value, mode, cat",
    [
        ("C major", 1.0, 1.0, 1.0, 1.0, "correct"),
        ("G major", 0.5, 0.5, 0.5, 1.0, "fifth_above"),
        ("F major", 0.0, 0.5, 0.5, 1.0, "fifth_below"),
        ("A minor", 0.3, 0.3, 1.0, 0.0, "relative"),
        ("C minor", 0.2, 0.2, 0.0, 0.0, "parallel"),
        ("D major", 0.0, 0.0, 0.0, 1.0, "other"),
        ("E minor", 0.0, 0.0, 0.5, 0.0, "other"),   # relative of G: one fifth away
        ("F# major", 0.0, 0.0, 0.0, 1.0, "other"),
    ],
)
def test_c_major_reference_hand_checked(estimate, mirex, mirex_both, ksea_value, mode, cat):
    s = score_key("C major", estimate)
    assert s.mirex == pytest.approx(mirex)
    assert s.mirex_both == pytest.approx(mirex_both)
    assert s.ksea == pytest.approx(ksea_value)
    assert s.mode == mode
    assert s.category == cat
    assert s.accuracy == (1.0 if cat == "correct" else 0.0)


def test_minor_reference_fifths_both_directions():
    assert score_key("A minor", "E minor").mirex == 0.5
    assert score_key("A minor", "D minor").mirex == 0.0
    assert score_key("A minor", "D minor").mirex_both == 0.5
    assert score_key("A minor", "C major").mirex == pytest.approx(0.3)
    assert score_key("A minor", "A major").mirex == pytest.approx(0.2)
    assert ksea("A minor", "C major") == 1.0
    assert ksea("A minor", "G major") == 0.5


def test_both_rule_never_below_mir_eval_rule_and_only_differs_on_fifth_below():
    for ref in KEYS:
        for est in KEYS:
            s = score_key(ref, est)
            assert s.mirex_both >= s.mirex
            if s.mirex_both != s.mirex:
                assert s.category == "fifth_below"


def test_enharmonic_spellings_and_other_notations_are_accepted():
    assert score_key("Db major", "C# major").accuracy == 1.0
    assert score_key("C:maj", "8B").accuracy == 1.0          # Camelot 8B = C major
    assert score_key(Key(9, "minor"), "Am").accuracy == 1.0
    assert to_mir_eval_label("c#m") == "C# minor"


@pytest.mark.parametrize("bad", ["H major", "C dorian", "", "13A"])
def test_invalid_labels_raise(bad):
    with pytest.raises(KeyLabelError):
        score_key("C major", bad)
    with pytest.raises(KeyLabelError):
        score_key(bad, "C major")


def test_summary_breakdown_and_groups():
    pairs = [("C major", "C major", "a"), ("C major", "G major", "a"),
             ("C major", "F major", "b"), ("C major", "A minor", "b"),
             ("C major", "C minor", "b"), ("C major", "D major", None)]
    scores = [score_key(r, e) for r, e, _ in pairs]
    summary = summarize(scores, [g for _, _, g in pairs])
    assert summary.n == 6
    assert summary.mirex == pytest.approx((1 + 0.5 + 0 + 0.3 + 0.2 + 0) / 6)
    assert summary.mirex_both == pytest.approx((1 + 0.5 + 0.5 + 0.3 + 0.2 + 0) / 6)
    assert summary.ksea == pytest.approx((1 + 0.5 + 0.5 + 1 + 0 + 0) / 6)
    assert summary.mode == pytest.approx(4 / 6)
    assert summary.accuracy == pytest.approx(1 / 6)
    assert summary.counts == {"correct": 1, "fifth": 2, "relative": 1, "parallel": 1,
                              "other": 1, "fifth_above": 1, "fifth_below": 1}
    assert summary.percent["fifth"] == pytest.approx(100 * 2 / 6)
    assert set(summary.groups) == {"a", "b"}
    assert summary.groups["a"].n == 2 and summary.groups["a"].mirex == pytest.approx(0.75)
    assert summary.groups["b"].mirex_both == pytest.approx((0.5 + 0.3 + 0.2) / 3)
    as_dict = summary.to_dict()
    assert as_dict["groups"]["a"]["n"] == 2 and as_dict["counts"]["other"] == 1


def test_empty_summary_is_nan_not_error():
    summary = summarize([])
    assert summary.n == 0 and math.isnan(summary.mirex)


def test_summary_rejects_mismatched_groups():
    with pytest.raises(ValueError):
        summarize([score_key("C major", "C major")], ["a", "b"])


def test_confusion_matrix_counts_in_canonical_order():
    m = confusion_matrix(["C major", "C major", "A minor"], ["C major", "G major", "C major"])
    assert m.shape == (24, 24) and m.sum() == 3
    assert m[0, 0] == 1 and m[0, 7] == 1 and m[21, 0] == 1


def test_category_covers_every_pair():
    cats = {category(a, b) for a in KEYS for b in KEYS}
    assert cats == {"correct", "fifth_above", "fifth_below", "relative", "parallel", "other"}
    # each reference has exactly one fifth above, one below, one relative, one parallel
    for ref in KEYS:
        per_ref = [category(ref, est) for est in KEYS]
        assert per_ref.count("fifth_above") == per_ref.count("fifth_below") == 1
        assert per_ref.count("relative") == per_ref.count("parallel") == 1


def test_calibration_scores_by_hand():
    from musicssl.evaluation.key_metrics import calibration_scores

    p = np.full((4, 24), 0.01)
    p[:, 0] = 0.77  # C major, 0.77 each time
    c = calibration_scores(p, ["C major", "C major", "D minor", "C major"])
    assert c.n == 4 and c.accuracy == 0.75 and c.confidence == pytest.approx(0.77)
    assert c.ece == pytest.approx(0.02)
    assert c.nll == pytest.approx(-(3 * np.log(0.77) + np.log(0.01)) / 4)
    assert c.bins == ((pytest.approx(0.7), 4, pytest.approx(0.77), 0.75),)
    with pytest.raises(ValueError):
        calibration_scores(p[:, :12], ["C major"] * 4)


def test_temperature_keeps_ranks_and_rescales_confidence():
    from musicssl.key.estimator import apply_temperature

    p = np.array([[0.7, 0.2, 0.1] + [0.0] * 21])
    soft = apply_temperature(p, 2.0)
    assert soft.sum() == pytest.approx(1.0) and soft.argmax() == 0 and soft.max() < 0.7
    assert apply_temperature(p, 1.0) is p
    assert apply_temperature(p, 0.5).max() > 0.7
