"""Tuning estimate (cents from A = 440 Hz) and its compensation in the key front end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from conftest import harmonic_tone
from musicssl.errors import ConfigError
from musicssl.dsp.cqt import KEY_FRONTEND
from musicssl.dsp.tuning import estimate_tuning_cents, tuned_fmin

SR = 22050
#: C major scale, MIDI numbers
SCALE = (60, 62, 64, 65, 67, 69, 71, 72)


def melody(cents: float, seconds_per_note: float = 0.5, repeats: int = 2) -> np.ndarray:
    """A C major scale of harmonic tones, every pitch ``cents`` away from A440 tuning."""
    notes = []
    for _ in range(repeats):
        for m in SCALE:
            f = 440.0 * 2.0 ** ((m - 69) / 12 + cents / 1200)
            notes.append(harmonic_tone(f, seconds_per_note, SR))
    return np.concatenate(notes)


@pytest.mark.parametrize("cents", [0.0, -37.0, 22.0, 45.0])
def test_estimate_finds_the_detuning(cents):
    assert abs(estimate_tuning_cents(melody(cents), SR) - cents) <= 2.0


def test_estimate_of_silence_and_short_input_is_zero():
    assert estimate_tuning_cents(np.zeros(SR * 2, dtype=np.float32), SR) == 0.0
    assert estimate_tuning_cents(np.ones(100, dtype=np.float32), SR) == 0.0


def test_long_input_is_sampled_within_bounds():
    x = melody(-20.0, repeats=2)
    long = np.tile(x, 40)              # 320 s, over the 120 s the estimate reads
    assert abs(estimate_tuning_cents(long, SR) + 20.0) <= 2.0


def test_tuned_fmin():
    assert tuned_fmin(27.5, 0) == 27.5
    assert tuned_fmin(27.5, 1200) == pytest.approx(55.0)
    assert tuned_fmin(440.0, -100) == pytest.approx(440.0 / 2 ** (1 / 12))


def test_compensation_puts_a_detuned_recording_back_on_the_grid():
    from musicssl.key.features import compute_features

    in_tune = compute_features(melody(0.0), KEY_FRONTEND, sr=SR, tuning="off")
    detuned = melody(40.0)
    plain = compute_features(detuned, KEY_FRONTEND, sr=SR, tuning="report")
    tuned = compute_features(detuned, KEY_FRONTEND, sr=SR)     # default: compensate
    assert in_tune.tuning_cents is None and not in_tune.tuning_compensated
    assert plain.tuning_cents == pytest.approx(40.0, abs=2.0) and not plain.tuning_compensated
    assert tuned.tuning_cents == plain.tuning_cents and tuned.tuning_compensated

    def distance(m):                  # relative L2 distance to the in-tune CQT
        return float(np.linalg.norm(m - in_tune.magnitude) / np.linalg.norm(in_tune.magnitude))
    assert distance(tuned.magnitude) < 0.1 and distance(plain.magnitude) > 0.25
    known = compute_features(detuned, KEY_FRONTEND, sr=SR, tuning=40.0)
    assert known.tuning_cents == 40.0 and distance(known.magnitude) < 0.1


def test_bad_tuning_setting_is_a_config_error():
    from musicssl.key.features import compute_features

    with pytest.raises(ConfigError):
        compute_features(melody(0.0), KEY_FRONTEND, sr=SR, tuning="guess")
    with pytest.raises(ConfigError):
        compute_features(melody(0.0), KEY_FRONTEND, sr=SR, tuning=150.0)


def test_key_records_carry_tuning(tmp_path, capsys):
    """A C major scale 45 cents sharp, read with and without compensation, by the template
    baseline (no network: fast) — the record reports the tuning either way."""
    from musicssl.cli.main import main

    path = tmp_path / "sharp.wav"
    sf.write(path, np.tile(melody(45.0), 2), SR)
    out = tmp_path / "keys.jsonl"
    assert main(["key", str(path), "--model", "krumhansl", "-o", str(out), "--no-progress"]) == 0
    record = json.loads(out.read_text())
    assert record["tuning_cents"] == pytest.approx(45.0, abs=2.0)
    assert record["key"] == "C major"
    assert main(["key", str(path), "--model", "krumhansl", "--tuning", "off", "--format", "csv"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()[:2]
    assert "tuning_cents" in header.split(",")
    with pytest.raises(SystemExit) as exit_info:
        main(["key", str(path), "--model", "krumhansl", "--tuning", "nonsense"])
    assert exit_info.value.code == 2


def test_spectral_peaks_give_their_frames():
    from musicssl.dsp.tuning import HOP, N_FFT, spectral_peaks

    sr = 22050
    x = np.zeros(sr, np.float32)
    x[sr // 2:] = np.sin(2 * np.pi * 300.0 * np.arange(sr - sr // 2) / sr)     # a tone from 0.5 s
    freq, mag = spectral_peaks(x, sr, 80.0, 2000.0)
    freq2, mag2, frame = spectral_peaks(x, sr, 80.0, 2000.0, with_frames=True)
    np.testing.assert_array_equal(freq, freq2)
    np.testing.assert_array_equal(mag, mag2)
    assert frame.dtype == np.int64 and np.all(np.diff(frame) >= 0)
    assert frame.min() * HOP >= sr // 2 - N_FFT                                # nothing before the tone
    steady = frame * HOP >= sr // 2 + N_FFT                                    # past the onset's frames
    assert steady.sum() > 10 and np.allclose(freq[steady], 300.0, atol=2.0)
