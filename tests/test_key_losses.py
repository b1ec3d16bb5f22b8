"""Hand-computed checks of the STONE / 24-STONE / S-KEY objectives (SPEC §1.3–1.5)."""

from __future__ import annotations

import math

import pytest
import torch

from musicssl.errors import ConfigError
from musicssl.dsp.cqt import amplitude_to_db, compress_db
from musicssl.key import losses as L


def one_hot(index, n=12):
    out = torch.zeros(len(index), n)
    out[torch.arange(len(index)), torch.as_tensor(index)] = 1.0
    return out


@pytest.mark.parametrize("omega", [7, 1])
@pytest.mark.parametrize("k", [1, 5, -3, 11, -11])
def test_sign_convention_shift_by_minus_k_gives_zero(omega, k):
    q = torch.tensor([0, 4, 9])
    y_a = one_hot(q)
    y_a2 = one_hot((q - k) % 12)        # A' is A transposed down by k: column q - k
    kk = torch.full((3,), k)
    _, terms = L.key_loss(y_a, y_a, y_a2, kk, omega)
    assert terms["eq1"].item() == pytest.approx(0.0, abs=1e-10)
    assert terms["eq2"].item() == pytest.approx(0.0, abs=1e-10)
    assert terms["pos"].item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("omega", [7, 1])
def test_wrong_direction_is_penalised_by_hand_value(omega):
    k = 1
    q = torch.tensor([2])
    y_a = one_hot(q)
    y_wrong = one_hot((q + k) % 12)
    _, terms = L.key_loss(y_a, y_a, y_wrong, torch.tensor([k]), omega)
    theta = 2 * math.pi * omega * k / 12
    # |e^{iθ} − e^{−iθ}|² = 4 sin²θ  (omega=7,k=1: θ=7π/6 → 1.0; omega=1: θ=π/6 → 1.0)
    assert terms["eq1"].item() == pytest.approx(4 * math.sin(theta) ** 2, abs=1e-6)
    assert terms["eq1"].item() > 0.5


def test_positive_term_hand_values():
    uniform = torch.full((1, 12), 1 / 12)
    y = one_hot([3])
    # uniform output: z = 0 → |1 − 0|² = 1
    _, terms = L.key_loss(uniform, y, y, torch.tensor([0]), 7)
    assert terms["pos"].item() == pytest.approx(1.0, abs=1e-6)
    # opposite columns on the circle of fifths (q and q+6 with ω=7 → angle π): |1 − (−1)|² = 4
    _, terms = L.key_loss(one_hot([0]), one_hot([6]), one_hot([0]), torch.tensor([0]), 7)
    assert terms["pos"].item() == pytest.approx(4.0, abs=1e-6)


def test_complex_projection_matches_numpy_complex():
    y = torch.softmax(torch.randn(4, 12, generator=torch.Generator().manual_seed(0)), dim=1)
    re, im = L.complex_projection(y, 7)
    z = (y.double() * torch.exp(2j * math.pi * 7 * torch.arange(12) / 12)).sum(1)
    assert torch.allclose(re.double(), z.real, atol=1e-6)
    assert torch.allclose(im.double(), z.imag, atol=1e-6)


def test_bce_clamps_log_at_minus_100():
    p = torch.tensor([1.0, 0.0, 0.5, 1.0])
    q = torch.tensor([0.0, 1.0, 0.5, 1.0])
    ce = L.binary_cross_entropy(p, q)
    assert ce[0].item() == pytest.approx(100.0)
    assert ce[1].item() == pytest.approx(100.0)
    assert ce[2].item() == pytest.approx(math.log(2), rel=1e-6)
    assert ce[3].item() == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(L.binary_cross_entropy(p, q),
                          torch.nn.functional.binary_cross_entropy(q, p, reduction="none"))


def test_balance_term_values():
    half = torch.full((4,), 0.5)
    assert L.balance_loss(half, half).item() == 0.0
    ones = torch.ones(4)
    assert L.balance_loss(ones, ones).item() == pytest.approx(0.25)
    assert L.balance_loss(ones, torch.zeros(4)).item() == 0.0
    assert L.balance_loss(ones, ones, target=0.75).item() == pytest.approx(0.0625)


def test_balance_target_pseudo_pulls_to_the_pseudo_label_share():
    # crafted so that 3 of 4 items get the pseudo-label "major" (authors' rule: c[s] > c[s+3])
    a = torch.zeros(4, 24)
    a[:, 2] = 1.0                       # column 2, major row
    profile = torch.full((4, 12), 0.1)
    profile[:3, 2] = 0.9                # items 0-2: c[2] > c[5] → major; item 3: equal → minor
    half, t_half = L.objective(L.ObjectiveConfig(name="skey"), a, a, a, torch.zeros(4), profile=profile)
    pseudo, t_pseudo = L.objective(L.ObjectiveConfig(name="skey", balance_target="pseudo"), a, a, a,
                                   torch.zeros(4), profile=profile)
    assert t_half["pseudo_major"].item() == pytest.approx(0.75)
    assert t_half["balance"].item() == pytest.approx(0.25)          # share 1 against ½
    assert t_pseudo["balance"].item() == pytest.approx(0.0625)      # share 1 against ¾
    assert (half - pseudo).item() == pytest.approx(20 * (0.25 - 0.0625), rel=1e-5)
    with pytest.raises(ConfigError):
        L.ObjectiveConfig(name="skey", balance_target="quarter")


def test_pseudo_label_rule_on_crafted_profiles():
    # item 0: argmax column 2; c[2]=0.9 > c[5]=0.1 → major (1)
    # item 1: argmax column 2; c[2]=0.2 < c[5]=0.8 → minor (0)
    # item 2: argmax column 10; (10+3)%12 = 1; c[10]=0.7 > c[1]=0.3 → 1 (wraps around)
    # item 3: equal values → not greater → 0
    y = one_hot([2, 2, 10, 4])
    profile = torch.full((4, 12), 0.5)
    profile[0, 2], profile[0, 5] = 0.9, 0.1
    profile[1, 2], profile[1, 5] = 0.2, 0.8
    profile[2, 10], profile[2, 1] = 0.7, 0.3
    ell = L.mode_pseudo_labels(y, y, profile)
    assert ell.tolist() == [1.0, 0.0, 1.0, 0.0]
    # s comes from the mean of A and B
    y_a = one_hot([2, 2, 10, 4]) * 0.6 + one_hot([5, 5, 1, 7]) * 0.4
    y_b = one_hot([5, 5, 1, 7]) * 0.9 + one_hot([2, 2, 10, 4]) * 0.1
    # mean: column of B wins (0.65 vs 0.35)
    ell2 = L.mode_pseudo_labels(y_a, y_b, profile)
    assert ell2.tolist() == [float(profile[i, s] > profile[i, (s + 3) % 12]) for i, s in enumerate([5, 5, 1, 7])]


def test_pitch_class_profile_folds_octaves_in_crop_frame():
    x = torch.zeros(1, 1, 84, 5)
    x[0, 0, 12 * 3 + 4, :] = 7.0      # column 4 in octave 3
    x[0, 0, 12 * 0 + 11, :2] = 5.0    # column 11, two frames of five
    c = L.pitch_class_profile(x)
    assert c.shape == (1, 12)
    assert c[0, 4].item() == pytest.approx(1.0)            # 7 / 7 octaves
    assert c[0, 11].item() == pytest.approx(5 * 2 / 5 / 7)
    assert c[0, 0].item() == 0.0


def test_split_outputs_rows_and_mode():
    p = torch.arange(24, dtype=torch.float32)[None] / 276.0
    y, m = L.split_outputs(p, 2)
    assert torch.allclose(y[0], (torch.arange(12) + torch.arange(12, 24)).float() / 276.0)
    assert m.item() == pytest.approx(sum(range(12)) / 276.0)
    with pytest.raises(ConfigError):
        L.split_outputs(p, 1)


def _random_views(b, h, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.softmax(torch.randn(b, 12 * h, generator=g), 1).requires_grad_() for _ in range(3)]


@pytest.mark.parametrize("name", ["stone", "stone24", "skey", "supervised", "semi"])
def test_objectives_finite_gradients_at_one_hot_outputs(name):
    cfg = L.ObjectiveConfig(name=name)
    h = cfg.n_rows
    b = 4
    views = [one_hot([0, 5, 13 % (12 * h), 7], 12 * h).requires_grad_() for _ in range(3)]
    views[1] = one_hot([11, 2, 3, 7], 12 * h).requires_grad_()
    k = torch.tensor([1, -2, 3, -11])
    targets = L.key_targets(torch.tensor([0, 3, 5, 9]), torch.tensor([True, False, True, False]), h)
    loss, terms = L.objective(cfg, *views, k, profile=torch.rand(b, 12), targets_a=targets,
                              labelled=torch.tensor([True, False, True, False]))
    assert torch.isfinite(loss)
    loss.backward()
    for v in views:
        assert v.grad is not None and torch.isfinite(v.grad).all()
    assert "loss" in terms and "key" in terms


def test_skey_total_uses_weights():
    cfg = L.ObjectiveConfig(name="skey")
    a, b, a2 = _random_views(6, 2)
    k = torch.tensor([1, 2, 3, -1, -2, 5])
    profile = torch.rand(6, 12, generator=torch.Generator().manual_seed(3))
    loss, t = L.objective(cfg, a, b, a2, k, profile=profile)
    expected = t["key"] + 1.5 * 1.7 * t["mode"] + 20 * 1.0 * t["balance"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    cfg2 = L.ObjectiveConfig(name="skey", mode_weight=0.0, balance_weight=0.0)
    loss2, _ = L.objective(cfg2, a, b, a2, k, profile=profile)
    assert loss2.item() == pytest.approx(t["key"].item(), rel=1e-6)


def test_stone24_mode_consistency_hand_value():
    # m_A = 1, m_B = 0.5, m_A' = 0.5: CE(1→.5)=ln2, ½CE(.5→.5)=½ln2, ½CE(.5→.5)=½ln2, CE(1→.5)=ln2
    val = L.mode_consistency_loss(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.5]))
    assert val.item() == pytest.approx(3 * math.log(2), rel=1e-6)


def test_supervised_replaces_view_a_by_target():
    cfg = L.ObjectiveConfig(name="semi")
    a, b, a2 = _random_views(2, 2, seed=1)
    targets = L.key_targets(torch.tensor([0, 0]), torch.tensor([True, True]), 2)
    k = torch.tensor([1, 1])
    labelled = torch.tensor([True, False])
    loss, _ = L.objective(cfg, a, b, a2, k, targets_a=targets, labelled=labelled)
    loss.backward()
    assert a.grad[0].abs().sum() == 0          # replaced by the target: no gradient into A
    assert a.grad[1].abs().sum() > 0           # unlabelled item still trains through A
    with pytest.raises(ConfigError):
        L.objective(cfg, a, b, a2, k)


def test_key_targets_convention():
    t = L.key_targets(torch.tensor([2, 9]), torch.tensor([True, False]), 2)
    assert t[0].argmax().item() == 2                # major: row 0, tonic column
    assert t[1].argmax().item() == 12 + (9 + 3) % 12  # minor: row 1, relative-major column
    t1 = L.key_targets(torch.tensor([9]), torch.tensor([False]), 1)
    assert t1.shape == (1, 12) and t1[0].argmax().item() == 0


def test_objective_config_validation():
    with pytest.raises(ConfigError):
        L.ObjectiveConfig(name="nope")
    with pytest.raises(ConfigError):
        L.ObjectiveConfig(omega=2)
    assert L.ObjectiveConfig(name="stone").n_rows == 1
    assert L.ObjectiveConfig(name="skey").n_rows == 2


def _one_hot_rows(columns, n=12):
    return torch.nn.functional.one_hot(torch.tensor(columns), n).float()


def _triad_profiles(tonics, majors):
    """Crop-frame profiles of triads: tonic 1.0, fifth 0.8, third 0.6, elsewhere 0.05."""
    profile = torch.full((len(tonics), 12), 0.05)
    for b, (t, major) in enumerate(zip(tonics, majors)):
        profile[b, t] = 1.0
        profile[b, (t + (4 if major else 3)) % 12] = 0.6
        profile[b, (t + 7) % 12] = 0.8
    return profile


#: eight items (tonic pitch class in the crop frame, mode) for the per-item tonic tests
_TONICS = [0, 5, 7, 9, 2, 4, 11, 6]
_MAJORS = [True, False, True, False, True, True, True, True]


def _eight_items(below):
    """Triad profiles of the eight items and one-hot columns ``below[b]`` below each tonic."""
    profile = _triad_profiles(_TONICS, _MAJORS)
    return profile, _one_hot_rows([(t - d) % 12 for t, d in zip(_TONICS, below)])


def test_thirds_pseudo_labels_find_the_tonic_shift_from_the_profiles():
    # Triad profiles (tonic 1.0, third 0.6, fifth 0.8) in the crop frame; the model's
    # column s sits 2 below each tonic, which the batch's profiles reveal (δ = 2).
    tonics, majors = [0, 5, 7, 9], [True, False, True, False]
    profile = _triad_profiles(tonics, majors)
    y = _one_hot_rows([(t - 2) % 12 for t in tonics])
    assert L.thirds_pseudo_labels(y, y, profile).tolist() == [1.0, 0.0, 1.0, 0.0]
    # the authors' rule reads c[s] vs c[s+3] at the unshifted column: here it says nothing useful
    assert L.mode_pseudo_labels(y, y, profile).tolist() != [1.0, 0.0, 1.0, 0.0]
    # with columns on the tonics (δ = 0) the thirds rule gives the same labels
    y0 = _one_hot_rows(tonics)
    assert L.thirds_pseudo_labels(y0, y0, profile).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_triad_pseudo_labels_pick_each_items_tonic_where_one_batch_shift_cannot():
    # Five items whose column s sits 2 below the tonic, three whose column sits 9 below:
    # no single shift reads every tonic, so the thirds rule mislabels one group.
    profile, y = _eight_items([2, 2, 2, 2, 2, 9, 9, 9])
    expected = [float(m) for m in _MAJORS]
    assert L.triad_tonics(y, y, profile).tolist() == _TONICS
    assert L.triad_pseudo_labels(y, y, profile).tolist() == expected
    assert L.thirds_pseudo_labels(y, y, profile).tolist() != expected
    # one candidate is the thirds rule's single batch shift
    assert L.triad_pseudo_labels(y, y, profile).tolist() != L.thirds_pseudo_labels(y, y, profile).tolist()
    one = L.triad_tonics(y, y, profile, n_candidates=1)
    s, delta = L.thirds_tonic_shift(y, y, profile)
    assert one.tolist() == ((s + delta) % 12).tolist()
    with pytest.raises(ConfigError, match="n_candidates"):
        L.triad_tonics(y, y, profile, n_candidates=0)


def test_objective_uses_the_configured_mode_rule():
    profile, columns = _eight_items([2, 2, 2, 2, 2, 9, 9, 9])
    probs = torch.cat([columns * 0.9 + 0.1 / 24, torch.full((8, 12), 0.1 / 24)], 1)
    k = torch.zeros(8, dtype=torch.long)
    share = {}
    for rule in L.MODE_RULES:
        _, terms = L.objective(L.ObjectiveConfig(mode_rule=rule), probs, probs, probs, k, profile=profile)
        share[rule] = terms["pseudo_major"].item()
    assert share["triads"] == pytest.approx(6 / 8)
    assert share["thirds"] != pytest.approx(6 / 8)


def test_tonic_pseudo_targets_pull_each_row_to_its_most_common_distance():
    # Major items 0, 2, 4, 7 and minor items 1, 3 sit 2 below their tonic; major items 5
    # and 6 sit 9 below: their targets move them to 2 below their tonics, in the major row.
    profile, y = _eight_items([2, 2, 2, 2, 2, 9, 9, 2])
    labels = torch.tensor([float(m) for m in _MAJORS])
    targets = L.tonic_pseudo_targets(y, y, profile, labels)
    assert targets.sum(dim=1).tolist() == [1.0] * 8
    row, column = targets.argmax(dim=1) // 12, targets.argmax(dim=1) % 12
    assert row.tolist() == [0, 1, 0, 1, 0, 0, 0, 0]
    # major row: distance 2 (4 items) beats 9 (2 items); minor row: both items at 2
    assert column.tolist() == [(t - 2) % 12 for t in _TONICS]


def test_tonic_loss_is_the_cross_entropy_of_the_three_views():
    targets = torch.zeros(2, 24)
    targets[0, 3] = 1.0             # major row, column 3
    targets[1, 12 + 10] = 1.0       # minor row, column 10
    uniform = torch.full((2, 24), 1 / 24)
    k = torch.tensor([1, -2])
    assert L.tonic_loss(targets, uniform, uniform, uniform, k).item() == pytest.approx(math.log(24))
    # view A' sees the key k columns lower: a one-hot there costs nothing
    a2 = torch.zeros(2, 24)
    a2[0, 2] = 1.0                  # 3 - 1
    a2[1, 12 + 0] = 1.0             # 10 + 2 = 12 -> column 0
    loss = L.tonic_loss(targets, targets, targets, a2, k)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    wrong = L.tonic_loss(targets, targets, targets, targets, k)   # A' not shifted: 2 of 6 terms at the floor
    assert wrong.item() == pytest.approx(2 * 100.0 / 6)


def test_objective_adds_the_tonic_term_only_when_weighted():
    tonics, majors = [0, 5, 7, 9], [True, False, True, False]
    profile = _triad_profiles(tonics, majors)
    probs = torch.cat([_one_hot_rows([(t - 2) % 12 for t in tonics]) * 0.5 + 0.5 / 24,
                       torch.full((4, 12), 0.5 / 24)], 1)
    k = torch.zeros(4, dtype=torch.long)
    base, terms = L.objective(L.ObjectiveConfig(mode_rule="triads"), probs, probs, probs, k, profile=profile)
    assert "tonic" not in terms
    total, terms = L.objective(L.ObjectiveConfig(mode_rule="triads", tonic_weight=0.5), probs, probs, probs, k,
                               profile=profile)
    assert total.item() == pytest.approx(base.item() + 0.5 * terms["tonic"].item())
    assert terms["tonic"].item() > 0
    with pytest.raises(ConfigError, match="tonic_weight"):
        L.ObjectiveConfig(tonic_weight=-1.0)


def test_magnitude_profile_inverts_the_log_compression():
    torch.manual_seed(0)
    magnitude = torch.rand(2, 2, 24, 5) + 1e-3                    # (B, V, 2 octaves, T)
    log_views = compress_db(amplitude_to_db(magnitude), 80.0)   # as the training views
    expected = magnitude.mean(-1).view(2, 2, 2, 12).mean(2)
    expected = (expected / expected.sum(-1, keepdim=True)).mean(1)
    got = L.magnitude_profile(log_views, 80.0)
    assert got.shape == (2, 12)
    assert torch.allclose(got, expected, rtol=1e-4)
    assert torch.allclose(got.sum(-1), torch.ones(2))
    with pytest.raises(ConfigError):
        L.magnitude_profile(torch.zeros(1, 2, 10, 3))


def test_power_profile_squares_the_magnitude():
    magnitude = torch.ones(1, 1, 12, 4)
    magnitude[..., 4, :] = 2.0                                   # one pitch class twice as loud
    log_views = compress_db(amplitude_to_db(magnitude), 80.0)
    by_magnitude = L.magnitude_profile(log_views, 80.0)
    by_power = L.magnitude_profile(log_views, 80.0, exponent=L.PROFILE_EXPONENTS["power"])
    assert by_magnitude[0, 4] / by_magnitude[0, 0] == pytest.approx(2.0, rel=1e-4)
    assert by_power[0, 4] / by_power[0, 0] == pytest.approx(4.0, rel=1e-4)
    assert by_power[0, 4] == pytest.approx(4.0 / 15.0, rel=1e-4)
    with pytest.raises(ConfigError, match="exponent"):
        L.magnitude_profile(log_views, 80.0, exponent=0.0)


def test_objective_config_validates_mode_rule_and_profile():
    assert L.ObjectiveConfig(mode_rule="thirds", mode_profile="magnitude").mode_rule == "thirds"
    assert L.ObjectiveConfig(mode_rule="thirds", mode_profile="power").mode_profile == "power"
    with pytest.raises(ConfigError, match="mode_rule"):
        L.ObjectiveConfig(mode_rule="guess")
    with pytest.raises(ConfigError, match="mode_profile"):
        L.ObjectiveConfig(mode_profile="chroma")


def test_running_vote_keeps_the_tonic_shift_of_earlier_batches():
    # a batch whose own ballot elects δ = 2 (columns 2 below the tonics) ...
    tonics, majors = [0, 5, 7, 9], [True, False, True, False]
    profile = _triad_profiles(tonics, majors)
    y = _one_hot_rows([(t - 2) % 12 for t in tonics])
    s, own = L.column_shift_scores(y, y, profile)
    assert int(own.argmax()) == 2
    assert L.thirds_pseudo_labels(y, y, profile).tolist() == [1.0, 0.0, 1.0, 0.0]
    # ... reads the thirds elsewhere when the running ballot of earlier batches says δ = 0
    earlier = torch.zeros(12)
    earlier[0] = 1.0
    ballot = L.running_shift_scores(own, earlier, momentum=0.9)
    assert torch.allclose(ballot, 0.9 * earlier + 0.1 * own)
    assert int(ballot.argmax()) == 0
    assert L.thirds_tonic_shift(y, y, profile, ballot)[1].item() == 0
    at_zero = L.thirds_pseudo_labels(y, y, profile, shift_scores=ballot)
    assert at_zero.tolist() == L._third_label(profile, s).float().tolist()
    assert at_zero.tolist() != [1.0, 0.0, 1.0, 0.0]
    # the first batch votes alone
    assert torch.equal(L.running_shift_scores(own, None, 0.9), own)
    # the triads rule ranks its candidates by the same ballot
    assert L.triad_tonics(y, y, profile, n_candidates=1, shift_scores=ballot).tolist() == s.tolist()


def test_objective_returns_the_running_ballot_only_with_a_running_vote():
    tonics, majors = [0, 5, 7, 9], [True, False, True, False]
    profile = _triad_profiles(tonics, majors)
    y = _one_hot_rows([(t - 2) % 12 for t in tonics])
    probs = torch.cat([y * 0.9 + 0.1 / 24, torch.full((4, 12), 0.1 / 24)], 1)
    k = torch.zeros(4)
    plain = L.ObjectiveConfig(name="skey", mode_rule="thirds")
    voting = L.ObjectiveConfig(name="skey", mode_rule="thirds", shift_momentum=0.9)
    assert not plain.running_vote and voting.running_vote
    assert not L.ObjectiveConfig(name="skey", mode_rule="authors", shift_momentum=0.9).running_vote
    _, t_plain = L.objective(plain, probs, probs, probs, k, profile=profile)
    assert "shift_scores" not in t_plain
    _, first = L.objective(voting, probs, probs, probs, k, profile=profile)
    assert first["tonic_shift"].item() == 2 and first["pseudo_major"].item() == t_plain["pseudo_major"].item()
    earlier = torch.zeros(12)
    earlier[0] = 1.0
    _, later = L.objective(voting, probs, probs, probs, k, profile=profile, shift_scores=earlier)
    assert later["tonic_shift"].item() == 0
    assert torch.allclose(later["shift_scores"], 0.9 * earlier + 0.1 * first["shift_scores"])
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match="shift_momentum"):
            L.ObjectiveConfig(name="skey", shift_momentum=bad)
