"""Template-matching baselines: profiles, chroma folding, correlation, the estimator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicssl.errors import ConfigError
from musicssl.key.templates import chroma_from_cqt, correlation_scores, key_templates, KRUMHANSL_MAJOR, KRUMHANSL_MINOR, PROFILES, scores_to_probabilities, TEMPERLEY_MAJOR, TEMPERLEY_MINOR, template_probabilities
from musicssl.key.estimator import TemplateKeyEstimator
from musicssl.keys import KEYS, Key, parse_key

from conftest import harmonic_tone

SR = 22050


def test_published_profile_values():
    # spot checks against the published tables (tonic, dominant, minor third)
    assert KRUMHANSL_MAJOR[0] == 6.35 and KRUMHANSL_MAJOR[7] == 5.19
    assert KRUMHANSL_MINOR[0] == 6.33 and KRUMHANSL_MINOR[3] == 5.38
    assert TEMPERLEY_MAJOR == (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0)
    assert TEMPERLEY_MINOR == (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0)
    for major, minor in PROFILES.values():
        assert len(major) == len(minor) == 12


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_templates_are_rotations_in_canonical_order(profile):
    t = key_templates(profile)
    assert t.shape == (24, 12)
    for key in KEYS:
        # the tonic column carries the profile's first value
        assert t[key.index, key.tonic] == PROFILES[profile][key.mode == "minor"][0]
    # every key's own template scores best against itself
    r = correlation_scores(t, t)
    assert np.array_equal(np.argmax(r, axis=-1), np.arange(24))


def test_unknown_profile():
    with pytest.raises(ConfigError):
        key_templates("shaath")


def test_chroma_folding_uses_a0_convention():
    cqt = np.zeros(99)
    cqt[3] = 1.0          # bin 3 above A0 = C1
    cqt[3 + 12 * 4] = 1.0  # C5
    chroma = chroma_from_cqt(cqt)
    assert chroma.shape == (12,) and np.argmax(chroma) == 0
    cqt = np.zeros((2, 99))
    cqt[:, 0] = 1.0        # A
    assert np.argmax(chroma_from_cqt(cqt), axis=-1).tolist() == [9, 9]


def test_chroma_is_mean_not_sum_over_octaves():
    # 99 bins: A, A#, B have 9 bins, the rest 8; a flat CQT must give a flat chroma
    chroma = chroma_from_cqt(np.ones(99))
    assert np.allclose(chroma, 1.0)


def test_profile_shaped_chroma_gives_its_key():
    for name in ("krumhansl", "temperley"):
        major, minor = PROFILES[name]
        for key in (Key(0), Key(7), Key(9, "minor"), Key(3, "minor")):
            chroma = np.roll(major if key.is_major else minor, key.tonic)
            p = template_probabilities(chroma, name)
            assert p.shape == (24,) and np.isclose(p.sum(), 1.0)
            assert int(np.argmax(p)) == key.index


def test_flat_chroma_is_uniform_and_temperature_checked():
    p = template_probabilities(np.ones(12))
    assert np.allclose(p, 1 / 24)
    with pytest.raises(ConfigError):
        scores_to_probabilities(np.zeros(24), temperature=0)


def _cadence(tonic_hz: float, minor: bool, sr: int = SR) -> np.ndarray:
    """I-IV-V-I (i-iv-V-i in minor) block chords of harmonic tones, 2 s each."""
    third = 3 if minor else 4
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]
    out = []
    for chord in chords:
        tone = sum(harmonic_tone(tonic_hz * 2 ** (s / 12), 2.0, sr) for s in chord)
        bass = harmonic_tone(tonic_hz / 2 * 2 ** (chord[0] / 12), 2.0, sr)
        out.append(tone + bass)
    return np.concatenate(out).astype(np.float32)


@pytest.mark.parametrize("profile", ["krumhansl", "temperley"])
def test_estimator_probabilities_on_logcqt_of_cadences(profile):
    from musicssl.dsp.cqt import KeyFrontEnd

    front = KeyFrontEnd()
    signals = [_cadence(261.63, False), _cadence(220.0, True), _cadence(392.0, False)]
    x = torch.as_tensor(np.stack([s / np.abs(s).max() for s in signals]))
    with torch.inference_mode():
        logcqt = front(x)
    est = TemplateKeyEstimator(profile)
    p = est.probabilities(logcqt)
    assert p.shape == (3, 24) and np.allclose(p.sum(axis=1), 1.0)
    got = [KEYS[i] for i in p.argmax(axis=1)]
    assert got == [parse_key("C major"), parse_key("A minor"), parse_key("G major")]


def test_log_scale_option_and_bad_settings():
    mag = np.abs(np.random.default_rng(0).normal(size=(99, 10)))
    est = TemplateKeyEstimator("krumhansl", scale="log")
    p = est.probabilities_from_magnitude(mag)
    assert p.shape == (24,) and np.isclose(p.sum(), 1.0)
    with pytest.raises(ConfigError):
        TemplateKeyEstimator("krumhansl", scale="cubic")
    with pytest.raises(ConfigError):
        TemplateKeyEstimator("krumhansl").probabilities(np.zeros((99, 10)))


def test_estimate_returns_key_result():
    from musicssl.key.results import KeyResult

    est = TemplateKeyEstimator("temperley")
    result = est.estimate(_cadence(293.66, False), SR, local=True, window_s=4, hop_s=2)
    assert isinstance(result, KeyResult)
    assert result.key == Key(2, "major")
    assert result.probabilities.shape == (24,) and 0 <= result.confidence <= 1
    assert result.local and result.local[0].start_s == 0.0
    assert result.estimator == "temperley"


def test_baselines_read_chroma_and_a_cqt_template_reads_the_cqt(tmp_path):
    import soundfile as sf

    from musicssl.key.calibration import reference_signal
    from musicssl.key.features import compute_features
    from musicssl.key.registry import load_estimator
    from musicssl.key.estimator import TemplateKeyEstimator
    from musicssl.keys import Key

    baseline = load_estimator("krumhansl")
    assert baseline.chroma_source == "chroma" and baseline.feature_options == {"chroma": True}
    assert TemplateKeyEstimator("krumhansl").chroma_source == "cqt"
    x = np.concatenate([reference_signal(Key(7, "major"))] * 4)
    sf.write(tmp_path / "g.wav", x, 22050)
    result = baseline.estimate_file(tmp_path / "g.wav", local=True, window_s=3.0, hop_s=1.0)
    assert result.key == Key(7, "major") and len(result.local) >= 3
    keys = [w.key for w in result.local]
    assert max(set(keys), key=keys.count) == Key(7, "major")  # windows read the chroma frames
    plain = compute_features(tmp_path / "g.wav")
    assert plain.chroma is None
    with pytest.raises(ConfigError, match="chroma=True"):
        baseline.estimate_features([plain])
    with pytest.raises(ConfigError):
        TemplateKeyEstimator("krumhansl", chroma="stft")
