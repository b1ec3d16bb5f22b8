"""The "no key" outcome: tonality measurements, estimators, CLI records and tags."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from beat_synth import chord_track, drum_track
from musicssl.cli.main import main
from musicssl.key import tonality
from musicssl.key.features import compute_features
from musicssl.key.registry import load_estimator

SR = 22050
EXAMPLE = "src/musicssl/data/examples/ode_to_joy_d_major.ogg"


def _noise(kind: str, seconds: float = 20.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    if kind == "dc":
        return (0.5 + 1e-4 * rng.standard_normal(n)).astype(np.float32)
    if kind == "hiss":
        return (1e-4 * rng.standard_normal(n)).astype(np.float32)
    alpha = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / SR)
    freqs[0] = freqs[1]
    return np.fft.irfft(spectrum / freqs ** (alpha / 2), n).astype(np.float32)


def _drums(seconds: float = 20.0) -> np.ndarray:
    return drum_track(seconds, 100, sr=SR)[0].astype(np.float32)


@pytest.fixture(scope="module")
def default_estimator():
    return load_estimator("default")


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "dc", "hiss"])
def test_noise_is_noise_like(kind):
    features = compute_features(_noise(kind), sr=SR)
    assert features.peak_contrast < tonality.MIN_PEAK_CONTRAST_DB
    assert "noise-like" in features.no_key_reason


def test_percussion_alone_has_no_harmonic_part():
    features = compute_features(_drums(), sr=SR)
    assert features.harmonic_fraction < tonality.MIN_HARMONIC_FRACTION
    assert "percussion" in features.no_key_reason


def test_chords_with_and_without_drums_have_a_key():
    chords = chord_track(20.0, sr=SR).astype(np.float32)
    for x in (chords, 0.5 * chords + 0.5 * _drums()):
        features = compute_features(x, sr=SR)
        assert features.harmonic_fraction > 0.5 and features.peak_contrast > 2.0
        assert features.no_key_reason is None


def test_long_inputs_are_measured_on_excerpts():
    x = np.arange(200 * 100, dtype=np.float32)  # 200 s at 100 Hz
    parts = tonality.excerpts(x, 100)
    assert len(parts) == tonality.MAX_EXCERPTS
    assert all(len(p) == tonality.EXCERPT_SECONDS * 100 for p in parts)
    assert parts[0][0] == 0 and parts[-1][-1] == x[-1]
    assert len(tonality.excerpts(x[:90 * 100], 100)) == 1
    assert tonality.harmonic_fraction(np.zeros((99, 300))) == 0.0
    assert tonality.peak_contrast([np.zeros((99, 300))], 43.0) == 0.0


def test_measurements_do_not_depend_on_the_model_hop():
    from musicssl.dsp.cqt import FrontEndConfig

    x = _noise("white")
    a = compute_features(x, FrontEndConfig(), sr=SR)
    b = compute_features(x, FrontEndConfig(hop_length=2048), sr=SR)
    assert a.peak_contrast == pytest.approx(b.peak_contrast, rel=1e-4)
    assert a.harmonic_fraction == pytest.approx(b.harmonic_fraction, rel=1e-4)


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "dc", "hiss", "drums"])
def test_default_answers_no_key(default_estimator, kind):
    x = _drums() if kind == "drums" else _noise(kind)
    result = default_estimator.estimate(x, SR)
    assert result.no_key
    record = result.to_dict()
    assert record["key"] is None and record["no_key"] is True and record["no_key_reason"]
    default_estimator.detect_no_key = False
    try:
        assert default_estimator.estimate(x, SR).to_dict()["key"] is not None
    finally:
        default_estimator.detect_no_key = True


def test_music_keeps_its_key(default_estimator, shared_fixtures):
    for path in (EXAMPLE, shared_fixtures / "nocturne_n02_in_e-flat_major.mp3"):
        result = default_estimator.estimate_file(path)
        assert not result.no_key and result.to_dict()["key"] is not None


def test_templates_answer_no_key_too():
    result = load_estimator("krumhansl").estimate(_noise("white"), SR)
    assert result.no_key


def test_cli_records_text_and_tags(tmp_path, capsys):
    noise = tmp_path / "noise.flac"
    sf.write(noise, _noise("pink"), SR)
    assert main(["key", str(noise), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["key"] is None and record["no_key"] is True and "noise-like" in record["no_key_reason"]
    assert main(["key", str(noise)]) == 0
    assert "\tno key\t" in capsys.readouterr().out
    assert main(["key", str(noise), "--no-key", "never", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["key"] is not None
    assert main(["key", str(noise), "--write-tags", "--format", "json"]) == 0  # not a failure
    record = json.loads(capsys.readouterr().out)[0]
    assert record["tag"] == {"written": False, "skipped": "no key"}
    from musicssl.io.tags import read_key_tag

    assert read_key_tag(noise) is None
