"""The activation probe (does an activation peak on the beats?) and the probe script's helpers."""

from __future__ import annotations

import numpy as np
import pytest

from musicssl.errors import AnnotationError
from musicssl.evaluation.beat_metrics import PROBE_METRICS, activation_probe

FPS = 62.5
BEATS = np.arange(0.5, 20.0, 0.5)  # 120 BPM
N = int(20.5 * FPS)


def bumps(times, lag_s: float = 0.0) -> np.ndarray:
    t = np.arange(N) / FPS
    act = np.full(N, 0.1)
    for b in times:
        act = np.maximum(act, np.exp(-0.5 * ((t - b - lag_s) / 0.015) ** 2))
    return act


def test_peaks_on_beats_score_high():
    s = activation_probe(bumps(BEATS), BEATS, FPS)
    assert list(s) == list(PROBE_METRICS)
    assert s["beat_auc"] > 0.95
    assert s["beat_peak_ratio"] > 3.0
    assert s["best_lag_frames"] == 0


def test_off_beat_peaks_and_dips_score_low():
    off = activation_probe(bumps(BEATS + 0.25), BEATS, FPS)
    assert off["beat_auc"] < 0.5 and off["beat_peak_ratio"] < 1.0
    dips = activation_probe(1.0 - bumps(BEATS), BEATS, FPS)
    assert dips["beat_auc"] < 0.05


def test_noise_is_chance_and_auc_ignores_rescaling():
    noise = np.random.default_rng(0).random(N)
    s = activation_probe(noise, BEATS, FPS)
    assert 0.4 < s["beat_auc"] < 0.6
    assert 0.8 < s["beat_peak_ratio"] < 1.2
    assert activation_probe(noise ** 3 * 5 + 2, BEATS, FPS)["beat_auc"] == pytest.approx(s["beat_auc"])


def test_late_activation_found_by_lag_search():
    s = activation_probe(bumps(BEATS, lag_s=0.112), BEATS, FPS)  # 7 frames late
    assert s["beat_auc"] < 0.6
    assert s["best_lag_frames"] == 7 and s["beat_auc_best_lag"] > 0.95


@pytest.mark.parametrize("act, ref, match", [
    (np.ones(N), BEATS, "constant"),
    (np.ones((N, 2)), BEATS, "shape"),
    (np.r_[np.zeros(N - 1), np.nan], BEATS, "NaN"),
    (np.random.default_rng(0).random(N), [3.0, 1.0], "increasing"),
    (np.random.default_rng(0).random(20), BEATS, "too few"),
    (np.random.default_rng(0).random(N), [40.0], "no beat"),
])
def test_bad_inputs_raise_annotation_error(act, ref, match):
    with pytest.raises(AnnotationError, match=match):
        activation_probe(act, ref, FPS)


def test_probe_script_scores_each_branch_and_decodes(tmp_path):
    """benchmarks/zerons_probe.probe_estimator on a tiny untrained model: one row per output,
    AUCs in [0, 1], and the DBN's beat scores on the combined activation with decode=True."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from zerons_probe import probe_estimator

    from musicssl.beat.estimator import BeatEstimator
    from musicssl.beat.model import ZeroNS

    torch.manual_seed(0)
    est = BeatEstimator(ZeroNS(width=1 / 16))
    rng = np.random.default_rng(0)
    feats = {"a": (rng.standard_normal((96, 700)).astype(np.float32),
                   rng.standard_normal((96, 700)).astype(np.float32))}
    refs = {"a": np.arange(0.5, 11.0, 0.5)}
    res = probe_estimator(est, feats, refs, decode=True)
    assert set(res) == {"act", "mean", "perc", "rest"}
    for row in res.values():
        assert 0.0 <= row["beat_auc"] <= 1.0 and row["beat_auc_best_lag"] >= row["beat_auc"]
    assert 0.0 <= res["act"]["F-measure"] <= 1.0 and "F-measure" not in res["perc"]
