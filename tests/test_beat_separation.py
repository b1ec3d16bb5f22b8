"""Percussive / non-percussive separation on synthetic drums + chords."""

from __future__ import annotations

import numpy as np
import pytest

from beat_synth import SR, chord_track, drum_track
from musicssl.beat.separation import (CallableSeparator, HPSSSeparator, get_separator,
                                      separator_description, separator_from_description)
from musicssl.errors import AudioError, ConfigError


def _energy(x):
    return float(np.sum(np.asarray(x, dtype=np.float64) ** 2))


def _share(part_of_source, source):
    return _energy(part_of_source) / _energy(source)


def test_hpss_routes_drums_and_chords():
    drums, _ = drum_track(6.0, 120, seed=3)
    chords = chord_track(6.0)
    sep = HPSSSeparator()
    perc, rest = sep(0.5 * drums + 0.5 * chords, SR)
    assert perc.shape == rest.shape == drums.shape and perc.dtype == np.float32
    # the split is linear per time-frequency bin, so project each source through it:
    # energy of (mix part) correlated with each source
    d_in_perc = np.dot(perc, drums) / np.dot(drums, drums)
    c_in_rest = np.dot(rest, chords) / np.dot(chords, chords)
    assert d_in_perc > 0.25  # a large share of the drum signal ends up percussive (x0.5 mix gain)
    assert c_in_rest > 0.45  # nearly all of the chords stay non-percussive
    # and the non-percussive part is mostly chord, the percussive mostly drum
    assert _energy(rest - 0.5 * chords) < 0.2 * _energy(rest)
    assert np.allclose(perc + rest, 0.5 * drums + 0.5 * chords, atol=1e-4)


def test_pluggable_separators():
    def halves(x, sr):
        return 0.5 * x, 0.5 * x

    sep = get_separator(halves)
    assert isinstance(sep, CallableSeparator)
    p, r = sep(np.ones(100, np.float32), SR)
    assert np.allclose(p, 0.5) and np.allclose(r, 0.5)
    assert isinstance(get_separator("musicssl.beat.separation:HPSSSeparator"), HPSSSeparator)
    assert isinstance(get_separator(None), HPSSSeparator)
    with pytest.raises(ConfigError):
        get_separator("no.such.module:thing")
    with pytest.raises(ConfigError):
        get_separator("not-an-import-path")
    with pytest.raises(ConfigError):
        HPSSSeparator(mode="magic")


def test_separator_round_trips_through_description():
    sep = HPSSSeparator(n_fft=1024, kernel_size=(17, 31), margin=3.0)
    again = separator_from_description(separator_description(sep))
    assert again.params() == sep.params()


def test_bad_audio_is_refused():
    sep = HPSSSeparator()
    with pytest.raises(AudioError):
        sep(np.zeros((2, 100), np.float32), SR)
    with pytest.raises(AudioError):
        sep(np.array([np.nan] * 10, np.float32), SR)


def test_very_short_input_keeps_its_length():
    p, r = HPSSSeparator()(np.random.default_rng(0).standard_normal(300).astype(np.float32), SR)
    assert len(p) == len(r) == 300
