"""benchmarks/key_combination.py: its combination is the estimator's, and its fit finds known exponents."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import key_combination as kc  # noqa: E402

from musicssl.key.estimator import apply_temperature, combine_with_prior  # noqa: E402


def _dirichlet(rng, n, concentration=0.3):
    return rng.dirichlet(np.full(24, concentration), size=n)


def test_exponents_are_the_estimators_weight_and_temperature():
    rng = np.random.default_rng(0)
    net, prior = _dirichlet(rng, 5), _dirichlet(rng, 5)
    weight, temperature = 0.54, 1.2
    expected = apply_temperature(combine_with_prior(net, prior, weight), temperature)
    got = np.exp(kc.log_probabilities(np.log(net), np.log(prior), 1 / temperature, weight / temperature))
    assert np.allclose(got, expected, atol=1e-9)
    assert np.allclose(got.sum(axis=1), 1.0)


def test_fit_recovers_the_exponents_that_drew_the_keys():
    rng = np.random.default_rng(1)
    n = 4000
    log_net, log_prior = np.log(_dirichlet(rng, n)), np.log(_dirichlet(rng, n))
    true_a, true_b = 0.8, 0.4
    p = np.exp(kc.log_probabilities(log_net, log_prior, true_a, true_b))
    targets = np.array([rng.choice(24, p=row) for row in p])
    a, b = kc.fit_exponents(log_net, log_prior, targets)
    assert a == pytest.approx(true_a, abs=0.06) and b == pytest.approx(true_b, abs=0.06)
    fitted = kc.nll(kc.log_probabilities(log_net, log_prior, a, b), targets)
    assert fitted <= kc.nll(kc.log_probabilities(log_net, log_prior, 1.0, 1.0), targets)
