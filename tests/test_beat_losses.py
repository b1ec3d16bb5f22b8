"""NT-Xent against hand-computed values; shifts; widened targets; BCE."""

from __future__ import annotations

import math

import pytest
import torch

from musicssl.beat.losses import (beat_bce, nt_xent, random_shifts, shift_frames,
                                  widened_beat_targets)
from musicssl.errors import ConfigError


def test_nt_xent_orthogonal_pairs():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cos = identity; loss_i = -log(e^{1/τ} / (e^{1/τ} + e^0)) with τ = 0.25
    expected = math.log(1 + math.exp(-4.0))
    assert float(nt_xent(a, a.clone())) == pytest.approx(expected, rel=1e-5)


def test_nt_xent_hand_computed_three_vectors():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    p = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = 1 / math.sqrt(2)
    cos = [[1.0, 0.0, s], [s, s, 1.0], [0.0, 1.0, s]]
    losses = []
    for i in range(3):
        logits = [c / 0.25 for c in cos[i]]
        losses.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    assert float(nt_xent(a, p, temperature=0.25)) == pytest.approx(sum(losses) / 3, rel=1e-5)


def test_nt_xent_extra_negatives_raise_the_loss():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    neg = torch.tensor([[1.0, 0.1]])  # nearly the positive of anchor 0
    base = float(nt_xent(a, a.clone()))
    harder = float(nt_xent(a, a.clone(), neg))
    # anchor 0 gains exp(cos/τ) ~ e^{3.98} in its denominator; anchor 1 gains e^{0.4}
    c0 = 1 / math.sqrt(1.01)
    c1 = 0.1 / math.sqrt(1.01)
    exp0 = -4 + math.log(math.exp(4) + 1 + math.exp(c0 * 4))
    exp1 = -4 + math.log(math.exp(4) + 1 + math.exp(c1 * 4))
    assert harder == pytest.approx((exp0 + exp1) / 2, rel=1e-5)
    assert harder > base


def test_nt_xent_rejects_bad_shapes():
    with pytest.raises(ConfigError):
        nt_xent(torch.zeros(2, 3), torch.zeros(3, 3))
    with pytest.raises(ConfigError):
        nt_xent(torch.ones(2, 3), torch.ones(2, 3), temperature=0)


def test_shift_frames_and_random_shifts():
    x = torch.arange(10.0).view(2, 5)
    out = shift_frames(x, torch.tensor([1, -2]))
    assert out.tolist() == [[4, 0, 1, 2, 3], [7, 8, 9, 5, 6]]
    s = random_shifts(200, 3, 7, torch.Generator().manual_seed(0))
    assert s.abs().min() >= 3 and s.abs().max() <= 7 and (s < 0).any() and (s > 0).any()


def test_widened_targets():
    t = widened_beat_targets([0.0, 1.0], n_frames=70, fps=62.5)
    assert t[0] == 1.0 and t[1] == 0.5
    assert t[62] == 1.0 and t[61] == 0.5 and t[63] == 0.5 and t[64] == 0.0  # 1.0 s -> frame 62.5 -> 62
    assert t.sum() == pytest.approx(2 + 3 * 0.5)


def test_beat_bce_value_and_mask():
    act = torch.tensor([[0.5, 0.5]])
    y = torch.tensor([[1.0, 0.0]])
    assert float(beat_bce(act, y)) == pytest.approx(math.log(2), rel=1e-5)
    mask = torch.tensor([[1.0, 0.0]])
    act2 = torch.tensor([[0.9, 0.1]])
    assert float(beat_bce(act2, y, mask)) == pytest.approx(-math.log(0.9), rel=1e-5)


def test_nt_xent_centred_ignores_the_mean_level():
    # plain cosine of positive vectors is dominated by their level; centred it is a correlation
    a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    p = torch.tensor([[11.0, 12.0, 13.0], [13.0, 12.0, 11.0]])
    # centred: a0 ~ p0 = [-1, 0, 1] (cos 1), a0 vs p1 = cos -1
    expected = -4.0 + math.log(math.exp(4.0) + math.exp(-4.0))
    assert float(nt_xent(a, p, center=True)) == pytest.approx(expected, rel=1e-4)
    assert float(nt_xent(a, p)) > 0.5  # uncentred: all four cosines are close to 1 -> near log 2
