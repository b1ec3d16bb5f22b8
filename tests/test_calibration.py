"""Calibration: mapping model rows/columns to keys (SPEC §1.6)."""

import numpy as np
import pytest

from musicssl.errors import CalibrationError
from musicssl.key.calibration import (calibration_accuracy, fit_calibration, reference_keys, reference_signal,
                                      to_canonical, validate_calibration)
from musicssl.keys import Key

RELEASED = {"n_rows": 2, "row_modes": ["major", "minor"], "row_offsets": [9, 11]}


def _native_for(keys, calibration, sharpness=8.0, seed=0):
    """Fake model outputs that put most mass where ``calibration`` says each key lives."""
    rng = np.random.default_rng(seed)
    out = rng.uniform(0.0, 0.1, size=(len(keys), 24))
    for i, k in enumerate(keys):
        row = calibration["row_modes"].index(k.mode)
        col = (k.tonic - calibration["row_offsets"][row]) % 12
        out[i, 12 * row + col] += sharpness
    return out / out.sum(1, keepdims=True)


def test_to_canonical_released_mapping_by_hand():
    native = np.zeros(24)
    native[0] = 0.7    # row 0 col 0 -> A major
    native[12] = 0.3   # row 1 col 0 -> B minor
    canonical = to_canonical(native, RELEASED)
    assert canonical[9] == pytest.approx(0.7)        # A major
    assert canonical[12 + 11] == pytest.approx(0.3)  # B minor
    assert canonical.sum() == pytest.approx(1.0)


def test_one_row_model_splits_signature_between_relatives():
    native = np.zeros(12)
    native[0] = 1.0
    canonical = to_canonical(native, {"n_rows": 1, "row_modes": ["signature"], "row_offsets": [7]})
    assert canonical[7] == pytest.approx(0.5) and canonical[12 + 4] == pytest.approx(0.5)  # G major / E minor


@pytest.mark.parametrize("truth", [
    RELEASED,
    {"n_rows": 2, "row_modes": ["minor", "major"], "row_offsets": [4, 2]},
    {"n_rows": 2, "row_modes": ["major", "minor"], "row_offsets": [0, 7]},
])
def test_fit_recovers_any_permutation(truth):
    keys = reference_keys()
    native = _native_for(keys, truth)
    found = fit_calibration(native, keys)
    assert found == truth
    assert calibration_accuracy(native, keys, found) == 1.0


def test_fit_one_row():
    keys = reference_keys()
    native = np.zeros((24, 12))
    for i, k in enumerate(keys):
        major = k if k.is_major else k.relative
        native[i, (major.tonic - 5) % 12] = 1.0
    assert fit_calibration(native, keys)["row_offsets"] == [5]


def test_reference_signal_is_in_its_key():
    sr = 8000
    for key in (Key(0, "major"), Key(9, "minor")):
        x = reference_signal(key, sr)
        assert x.dtype == np.float32 and np.abs(x).max() == pytest.approx(1.0)
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        ok = (freqs > 60) & (freqs < 2000)
        pcs = np.round(12 * np.log2(freqs[ok] / 440.0) + 69).astype(int) % 12
        chroma = np.bincount(pcs, weights=spectrum[ok], minlength=12)
        in_scale = {0, 2, 4, 5, 7, 9, 11} | ({8} if not key.is_major else set())  # harmonic minor G#
        top7 = set(np.argsort(-chroma)[:7])
        assert top7 <= in_scale
        assert np.argmax(chroma) in ({0, 4, 7} if key.is_major else {9, 0, 4})


def test_validate_rejects_nonsense():
    with pytest.raises(CalibrationError):
        validate_calibration({"n_rows": 2, "row_modes": ["major", "major"], "row_offsets": [0, 0]}, 2)
    with pytest.raises(CalibrationError):
        validate_calibration(RELEASED, 1)
    with pytest.raises(CalibrationError):
        to_canonical(np.zeros(12), RELEASED)


def test_released_checkpoint_calibrates_to_the_spec_mapping(shared_fixtures):
    from musicssl.key.checkpoint import load_key_model
    from musicssl.key.calibration import calibrate_model

    loaded = load_key_model(shared_fixtures / "skey.pt")
    assert loaded.calibration is None  # never hard-coded for imported checkpoints
    found = calibrate_model(loaded.model, loaded.frontend_config)
    assert {k: found[k] for k in ("n_rows", "row_modes", "row_offsets")} == RELEASED
    assert found["reference_accuracy"] >= 0.9


def test_reference_signal_parts_are_the_cadences_then_the_scale():
    sr = 8000
    key = Key(2, "minor")
    whole, cadences, scale = (reference_signal(key, sr, parts=p)
                              for p in (("cadences", "scale"), ("cadences",), ("scale",)))
    assert len(cadences) == round(16 * 0.6 * sr) and len(scale) == 15 * round(0.3 * sr)
    assert len(whole) == len(cadences) + len(scale)
    # the whole signal is the two parts side by side (each part normalised on its own)
    assert np.corrcoef(whole[:len(cadences)], cadences)[0, 1] > 0.999
    assert np.corrcoef(whole[len(cadences):], scale)[0, 1] > 0.999
    with pytest.raises(ValueError):
        reference_signal(key, sr, parts=())


def test_released_checkpoint_has_one_frame_on_every_reference_part(shared_fixtures):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from key_reference_parts import part_calibrations

    from musicssl.key.checkpoint import load_key_model

    loaded = load_key_model(shared_fixtures / "skey.pt")
    found = part_calibrations(loaded.model, loaded.frontend_config)
    assert set(found) == {"whole signal", "cadences", "scale", "progressions 0", "progressions 1"}
    for name, calibration in found.items():
        assert {k: calibration[k] for k in ("n_rows", "row_modes", "row_offsets")} == RELEASED, name
        assert calibration["reference_accuracy"] >= (0.8 if name.startswith("progressions") else 0.9)


def test_progression_signal_is_diatonic_seeded_and_ends_on_the_tonic():
    from musicssl.key.calibration import progression_signal

    sr = 8000
    for key in (Key(2, "major"), Key(4, "minor")):
        x = progression_signal(key, sr, seed=3)
        assert x.dtype == np.float32 and len(x) == 24 * round(0.6 * sr) and np.abs(x).max() == pytest.approx(1.0)
        assert np.array_equal(x, progression_signal(key, sr, seed=3))
        assert not np.array_equal(x, progression_signal(key, sr, seed=4))
        spectrum = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / sr)
        ok = (freqs > 30) & (freqs < 2000)
        pcs = np.round(12 * np.log2(freqs[ok] / 440.0) + 69).astype(int) % 12
        chroma = np.bincount(pcs, weights=spectrum[ok], minlength=12)
        scale = (0, 2, 4, 5, 7, 9, 11) if key.is_major else (0, 2, 3, 5, 7, 8, 10, 11)
        in_key = {(key.tonic + d) % 12 for d in scale}
        assert set(np.argsort(-chroma)[:len(in_key)].tolist()) == in_key
        last = x[-round(0.6 * sr):]                                  # the final tonic triad
        spectrum = np.abs(np.fft.rfft(last)) ** 2
        freqs = np.fft.rfftfreq(len(last), 1 / sr)
        ok = (freqs > 30) & (freqs < 2000)
        pcs = np.round(12 * np.log2(freqs[ok] / 440.0) + 69).astype(int) % 12
        chroma = np.bincount(pcs, weights=spectrum[ok], minlength=12)
        third = 4 if key.is_major else 3
        assert set(np.argsort(-chroma)[:3].tolist()) == {key.tonic, (key.tonic + third) % 12, (key.tonic + 7) % 12}


def _fake_outputs(calibration, calls=None):
    """``native_outputs`` of a fake model that answers every signal, in reference-key order,
    where ``calibration`` puts its key (records the batch sizes it is called with)."""
    def native(batch, sr):
        if calls is not None:
            calls.append(len(batch))
        keys = reference_keys() * (len(batch) // 24)
        return _native_for(keys, calibration)
    return native


def test_calibrate_takes_the_reference_keys_several_times_over():
    from musicssl.key.calibration import calibrate

    calls = []
    signals = [np.zeros(100, np.float32)] * 48
    found = calibrate(_fake_outputs(RELEASED, calls), 8000, signals)
    assert calls == [48] and found["row_offsets"] == [9, 11] and found["reference_accuracy"] == 1.0
    for wrong in (25, 0):
        with pytest.raises(CalibrationError, match="multiple of 24"):
            calibrate(_fake_outputs(RELEASED), 8000, [np.zeros(100, np.float32)] * wrong)


def test_frame_check_flags_a_model_that_reads_progressions_a_fifth_away(monkeypatch):
    from musicssl.key import calibration as cal

    # the progressions themselves are tested above; a short stand-in keeps this test fast
    monkeypatch.setattr(cal, "progression_signals",
                        lambda sr, draws: tuple(np.zeros(64, np.float32) for _ in range(24 * len(draws))))
    calls = []
    same = cal.frame_check(_fake_outputs(RELEASED, calls), RELEASED, 8000)
    assert calls == [48] and same["agrees"] is True
    assert cal.same_frame(same["progressions"], RELEASED)

    fifth = {**RELEASED, "row_offsets": [(9 + 7) % 12, 11]}     # the major row read a fifth above
    moved = cal.frame_check(_fake_outputs(fifth), RELEASED, 8000)
    assert moved["agrees"] is False and moved["progressions"]["row_offsets"] == [4, 11]
    line = cal.describe_frame_check(moved, RELEASED)
    assert "uncertain" in line and "major row 0 from A" in line and "major row 0 from E" in line
    assert cal.describe_frame(RELEASED) == "major row 0 from A, minor row 1 from B"
    assert "same frame" in cal.describe_frame_check(same, RELEASED)


def test_progression_signals_are_every_key_draw_after_draw():
    from musicssl.key.calibration import progression_signal, progression_signals

    signals = progression_signals(8000, (0, 1))
    assert len(signals) == 48
    assert np.array_equal(signals[1], progression_signal(reference_keys()[1], 8000, seed=0))
    assert np.array_equal(signals[24 + 13], progression_signal(reference_keys()[13], 8000, seed=1))


def test_released_checkpoint_passes_the_frame_check(shared_fixtures):
    from musicssl.key.calibration import calibrate_model, check_model_frame
    from musicssl.key.checkpoint import load_key_model

    loaded = load_key_model(shared_fixtures / "skey.pt")
    calibration = calibrate_model(loaded.model, loaded.frontend_config)
    check = check_model_frame(loaded.model, loaded.frontend_config, calibration)
    assert check["agrees"] is True and check["progressions"]["reference_accuracy"] >= 0.8


def test_calibrate_command_prints_and_saves_the_frame_check(shared_fixtures, tmp_path, capsys):
    import json

    from musicssl.cli.main import main
    from musicssl.key.checkpoint import load_key_model

    out = tmp_path / "released.safetensors"
    assert main(["calibrate", str(shared_fixtures / "skey.pt"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    mapping = json.loads(printed[:printed.index("}") + 1])
    assert mapping["row_offsets"] == RELEASED["row_offsets"]
    assert "frame check: random diatonic progressions give the same frame" in printed
    saved = load_key_model(out)
    assert saved.calibration["row_offsets"] == [9, 11] and saved.provenance["frame_check"]["agrees"] is True


def test_frame_checker_for_validation_matches_the_export_check(shared_fixtures):
    from musicssl.key.calibration import FrameChecker
    from musicssl.key.checkpoint import load_key_model

    loaded = load_key_model(shared_fixtures / "skey.pt")
    loaded.model.train()
    checker = FrameChecker(loaded.frontend_config)
    found = checker(loaded.model)
    assert loaded.model.training                                  # left as it was
    assert found["agrees"] is True
    assert {k: found["calibration"][k] for k in ("n_rows", "row_modes", "row_offsets")} == RELEASED
    assert found["calibration"]["reference_accuracy"] >= 0.9 and found["progressions"]["reference_accuracy"] >= 0.8
    assert checker.logcqt("progressions").shape[0] == 48 and checker.logcqt("reference").shape[0] == 24
    with pytest.raises(ValueError):
        checker.logcqt("noise")
