"""Helpers of the key diagnostics benchmarks (key_ssl_signal, key_pseudo_labels)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import key_pseudo_labels as kpl  # noqa: E402
import key_ssl_signal as kss  # noqa: E402

from musicssl.key.config import TrainConfig  # noqa: E402
from musicssl.key.model import ChromaNet  # noqa: E402


def test_ssl_signal_terms_of_a_model_on_fixed_items():
    torch.manual_seed(0)
    config = TrainConfig(objective="skey", mode_rule="thirds", mode_profile="power")
    items = [{"views": torch.rand(3, 84, 128), "k": int(k), "profile": torch.rand(12)} for k in (1, -3, 5, 7, -11)]
    model = ChromaNet(channels=[2, 3, 4, 4, 3, 3, 2], kernels=[3, 3, 3, 3, 3, 3, 3]).eval()
    terms = kss.loss_terms(model, config, items, batch_size=2)          # batches of 2, 2 and 1
    assert set(kss.TERMS) <= set(terms)
    assert all(np.isfinite(v) for v in terms.values())
    assert 0.0 <= terms["pseudo_major"] <= 1.0 and 0.0 <= terms["major_share"] <= 1.0
    # the batch means of the parts add up to the mean of their sum
    assert terms["key"] == pytest.approx(terms["pos"] + terms["eq1"] + terms["eq2"], rel=1e-5)
    assert kss.loss_terms(model, config, items, batch_size=2) == terms   # same items, same numbers
    # a config with a running vote is scored batch by batch, like one without
    voting = TrainConfig(objective="skey", mode_rule="thirds", mode_profile="power", shift_momentum=0.9)
    assert kss.loss_terms(model, voting, items, batch_size=2) == terms


def test_network_and_rule_overlap_counts():
    # column 0 everywhere; the thirds rule reads c[t+4] > c[t+3] with the batch's best shift t = 0
    profiles = np.full((4, 12), 0.05)
    profiles[:, 0] = 1.0
    profiles[:2, 4] = 0.5            # items 0, 1: major third louder → rule says major
    profiles[2:, 3] = 0.5            # items 2, 3: minor third louder → rule says minor
    columns = np.zeros(4, dtype=int)
    majors = np.array([True, False, False, False])
    network = np.array([True, True, True, False])
    o = kpl.network_rule_overlap(columns, profiles, majors, network)
    assert o["rule"] == pytest.approx(0.75) and o["network"] == pytest.approx(0.5)
    assert o["agree"] == pytest.approx(0.75)                     # items 0, 1 and 3
    assert o["right_where_agree"] == pytest.approx(2 / 3)        # item 1 is minor
    assert o["rule_right_where_not"] == pytest.approx(1.0) and o["network_right_where_not"] == pytest.approx(0.0)
    # the SPEC's rule reads c[s] > c[s + 3] at the column (0): C (1.0) > Eb (0.5 for items 2, 3) → all major
    spec = kpl.network_rule_overlap(columns, profiles, majors, network, rule_name="authors")
    assert spec["rule"] == pytest.approx(0.25) and spec["agree"] == pytest.approx(0.75)


def test_relative_pair_ceiling_reads_the_true_signature():
    # C major (tonic 0) and A minor (tonic 9) share a signature; relative major tonic 0 for both
    profiles = np.full((3, 12), 0.05)
    profiles[0, [0, 4, 7]] = 1.0                 # C major triad: C > A and G > A
    profiles[1, [9, 0, 4]] = 1.0                 # A minor triad with A loudest: A > C and A > G
    profiles[1, 9] = 1.5
    profiles[2, [2, 6, 9]] = 1.0                 # D major clip (tonic 2), labelled minor B (tonic 11)
    tonics, majors = np.array([0, 9, 11]), np.array([True, False, False])
    r = kpl.relative_pair_ceiling(profiles, tonics, majors)
    # clip 2: R = 2; tonic rule D (1.0) > B (0.05) → says major, wrong; triad rule A (1.0) > B → major, wrong
    assert r["tonic"] == pytest.approx(2 / 3) and r["triad"] == pytest.approx(2 / 3)
    profiles[2, 11] = 2.0                        # now B sounds most: both rules say minor
    r = kpl.relative_pair_ceiling(profiles, tonics, majors)
    assert r == {"tonic": 1.0, "triad": 1.0}
    empty = kpl.relative_pair_ceiling(np.zeros((0, 12)), np.zeros(0, int), np.zeros(0, bool))
    assert all(np.isnan(v) for v in empty.values())


def test_shift_flip_counts_labels_that_change_between_the_two_best_shifts():
    # column 0 everywhere; pitch class 0 sounds most (shift 0), pitch class 7 next (shift 7)
    profiles = np.full((4, 12), 0.05)
    profiles[:, 0], profiles[:, 7] = 1.0, 0.8
    profiles[:, 4] = 0.5                 # above 0: major third louder for all four items
    profiles[:2, 11] = 0.4               # above 7: items 0, 1 major (B > Bb) ...
    profiles[2:, 10] = 0.4               # ... items 2, 3 minor (Bb > B)
    first, second, flip = kpl.shift_flip(np.zeros(4, dtype=int), profiles)
    assert (first, second) == (0, 7)
    assert flip == pytest.approx(0.5)
    profiles[2:, 10], profiles[2:, 11] = 0.05, 0.4      # now every item is major above both shifts
    assert kpl.shift_flip(np.zeros(4, dtype=int), profiles)[2] == 0.0
