"""Key names, notations and pitch-class conventions."""

import mir_eval
import numpy as np
import pytest

from musicssl.errors import KeyLabelError
from musicssl.keys import (KEY_LABELS, KEYS, NOTATIONS, Key, chroma_to_canonical, circle_of_fifths_order,
                           cqt_bin_pitch_class, format_key, parse_key, pitch_class_of_frequency)


def test_canonical_order_and_labels_are_mir_eval_valid():
    assert len(KEYS) == 24 and KEY_LABELS[0] == "C major" and KEY_LABELS[12] == "C minor"
    assert KEY_LABELS[11] == "B major" and KEY_LABELS[23] == "B minor"
    for i, (key, label) in enumerate(zip(KEYS, KEY_LABELS)):
        assert key.index == i
        mir_eval.key.validate_key(label)
        assert label.split()[1] in ("major", "minor")


@pytest.mark.parametrize("notation", NOTATIONS)
def test_round_trip_all_keys_all_notations(notation):
    for key in KEYS:
        assert parse_key(format_key(key, notation)) == key


def test_spelling_follows_key_signature():
    assert str(Key(3, "major")) == "Eb major"
    assert str(Key(6, "minor")) == "F# minor"
    assert str(Key(10, "minor")) == "Bb minor"
    assert str(Key(8, "minor")) == "G# minor"
    assert str(Key(1, "major")) == "Db major"


@pytest.mark.parametrize("text,expected", [
    ("C major", Key(0, "major")), ("A minor", Key(9, "minor")), ("8B", Key(0, "major")), ("8A", Key(9, "minor")),
    ("1d", Key(0, "major")), ("1m", Key(9, "minor")), ("Ebm", Key(3, "minor")), ("D# Major", Key(3, "major")),
    ("C:maj", Key(0, "major")), ("c:min", Key(0, "minor")), ("Cm", Key(0, "minor")), ("F#", Key(6, "major")),
    ("Bb minor", Key(10, "minor")), ("b minor", Key(11, "minor")), ("Cb major", Key(11, "major")),
    ("2A", Key(3, "minor")), ("12B", Key(4, "major")), ("6d", Key(11, "major")), ("E♭ major", Key(3, "major")),
])
def test_parse_many_notations(text, expected):
    assert parse_key(text) == expected


@pytest.mark.parametrize("bad", ["", "H major", "C dorian", "13A", "0d", "major", "C# majr"])
def test_parse_rejects_garbage(bad):
    with pytest.raises(KeyLabelError):
        parse_key(bad)


@pytest.mark.parametrize("text,expected", [
    ("bb", Key(10, "minor")), ("Bb", Key(10, "major")), ("f#", Key(6, "minor")), ("F#", Key(6, "major")),
    ("c", Key(0, "minor")), ("C", Key(0, "major")), ("eb", Key(3, "minor")), ("b", Key(11, "minor")),
    ("c major", Key(0, "major")), ("C minor", Key(0, "minor")), ("bbm", Key(10, "minor")),
])
def test_a_tonic_without_mode_is_minor_when_lowercase(text, expected):
    """Decision (issue 18): lowercase-means-minor, as Humdrum and music21; a written mode wins."""
    assert parse_key(text) == expected


def test_camelot_openkey_tkey_examples():
    c, a = Key(0, "major"), Key(9, "minor")
    assert (c.format("camelot"), a.format("camelot")) == ("8B", "8A")
    assert (c.format("openkey"), a.format("openkey")) == ("1d", "1m")
    assert Key(3, "minor").format("tkey") == "Ebm"
    assert all(len(k.format("tkey")) <= 3 for k in KEYS)


def test_relations():
    c = Key(0, "major")
    assert c.relative == Key(9, "minor") and c.relative.relative == c
    assert c.parallel == Key(0, "minor")
    assert Key(7, "major").signature == 1 and Key(5, "major").signature == -1
    assert Key(4, "minor").signature == 1  # E minor: one sharp
    assert c.transpose(-1) == Key(11, "major")


def test_cqt_bin_convention():
    assert cqt_bin_pitch_class(0) == 9  # A0
    assert cqt_bin_pitch_class(3) == 0  # C1
    assert list(cqt_bin_pitch_class(np.arange(12))) == [9, 10, 11, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert pitch_class_of_frequency(27.5) == 9 and pitch_class_of_frequency(16.35) == 0
    by_bin = np.zeros(12)
    by_bin[3] = 1.0  # bin 3 is C
    assert np.argmax(chroma_to_canonical(by_bin)) == 0


def test_circle_of_fifths_order_puts_relatives_together():
    order = circle_of_fifths_order()
    assert len(set(order)) == 24
    assert order[:4] == [Key(0, "major"), Key(9, "minor"), Key(7, "major"), Key(4, "minor")]


def test_invalid_key_construction():
    with pytest.raises(KeyLabelError):
        Key(12, "major")
    with pytest.raises(KeyLabelError):
        Key(0, "dorian")
    with pytest.raises(KeyLabelError):
        Key.from_index(24)
