"""Musical keys: names, notations and the pitch-class conventions.

This is the one place that knows how keys are named and numbered:

* pitch classes are numbered with **C = 0** (C, C#, D, ... B);
* the 24 keys have a fixed *canonical order*, C major ... B major, then
  C minor ... B minor (index ``12 * (mode == "minor") + tonic``);
* notations: ``standard`` (mir_eval labels such as ``"Eb major"``,
  spelled after the key signature), ``camelot`` (C major = 8B, A minor = 8A),
  ``openkey`` (C major = 1d, A minor = 1m) and ``tkey`` (the ID3 ``TKEY``
  form, at most 3 characters: ``"Eb"``, ``"F#m"``);
* CQT bins: a CQT whose lowest bin is A0 (27.5 Hz) has pitch class
  ``(b + 9) mod 12`` at bin ``b`` (:func:`cqt_bin_pitch_class`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from musicssl.errors import KeyLabelError

Mode = Literal["major", "minor"]
MODES: tuple[str, str] = ("major", "minor")
NOTATIONS: tuple[str, ...] = ("standard", "camelot", "openkey", "tkey")

# Spelling that follows the key signature (fewest accidentals; F# major and
# Eb minor for the six-accidental keys).
_MAJOR_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_MINOR_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

_LETTER_PC = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}

#: Pitch class of the A0 (27.5 Hz) CQT bin in the C = 0 numbering.
A0_PITCH_CLASS = 9


@dataclass(frozen=True, order=True)
class Key:
    """A musical key: ``tonic`` pitch class (C = 0) and ``mode``."""

    tonic: int
    mode: Mode = "major"

    def __post_init__(self):
        if self.mode not in MODES:
            raise KeyLabelError(f"mode must be 'major' or 'minor', got {self.mode!r}")
        if not isinstance(self.tonic, (int, np.integer)) or not 0 <= int(self.tonic) < 12:
            raise KeyLabelError(f"tonic must be a pitch class 0..11, got {self.tonic!r}")
        object.__setattr__(self, "tonic", int(self.tonic))

    # --- numbering -------------------------------------------------------
    @property
    def index(self) -> int:
        """Position in the canonical 24-key order (0 = C major, 12 = C minor)."""
        return self.tonic + (12 if self.mode == "minor" else 0)

    @classmethod
    def from_index(cls, index: int) -> "Key":
        """Inverse of :attr:`index`."""
        index = int(index)
        if not 0 <= index < 24:
            raise KeyLabelError(f"key index must be in 0..23, got {index}")
        return cls(index % 12, "minor" if index >= 12 else "major")

    @classmethod
    def parse(cls, text: str) -> "Key":
        """Read a key written in any supported notation (see :func:`parse_key`)."""
        return parse_key(text)

    # --- relations ---------------------------------------------------------
    @property
    def is_major(self) -> bool:
        return self.mode == "major"

    def transpose(self, semitones: int) -> "Key":
        """The same mode, tonic moved up by ``semitones``."""
        return Key((self.tonic + int(semitones)) % 12, self.mode)

    @property
    def relative(self) -> "Key":
        """Relative key (same key signature, other mode)."""
        if self.is_major:
            return Key((self.tonic + 9) % 12, "minor")
        return Key((self.tonic + 3) % 12, "major")

    @property
    def parallel(self) -> "Key":
        """Parallel key (same tonic, other mode)."""
        return Key(self.tonic, "minor" if self.is_major else "major")

    @property
    def signature(self) -> int:
        """Key signature as sharps (> 0) or flats (< 0), in -5..6.

        Keys are identified by their relative major's pitch class on the
        circle of fifths: C = 0, G = 1, ... F# = 6, Db = -5 ... F = -1.
        """
        major_pc = self.tonic if self.is_major else (self.tonic + 3) % 12
        steps = (7 * major_pc) % 12  # fifths above C
        return steps if steps <= 6 else steps - 12

    @property
    def fifths_position(self) -> int:
        """Position 0..11 of the key signature on the circle of fifths (C = 0, G = 1 ...)."""
        return self.signature % 12

    # --- names -------------------------------------------------------------
    @property
    def tonic_name(self) -> str:
        return (_MAJOR_NAMES if self.is_major else _MINOR_NAMES)[self.tonic]

    def format(self, notation: str = "standard") -> str:
        """This key in ``notation`` (one of :data:`NOTATIONS`)."""
        return format_key(self, notation)

    def __str__(self) -> str:
        return format_key(self, "standard")


def format_key(key: Key, notation: str = "standard") -> str:
    """Format ``key`` as ``standard`` (mir_eval), ``camelot``, ``openkey`` or ``tkey``."""
    if notation == "standard":
        return f"{key.tonic_name} {key.mode}"
    if notation == "camelot":
        number = (key.fifths_position + 7) % 12 + 1
        return f"{number}{'B' if key.is_major else 'A'}"
    if notation == "openkey":
        number = key.fifths_position + 1
        return f"{number}{'d' if key.is_major else 'm'}"
    if notation == "tkey":
        return key.tonic_name + ("" if key.is_major else "m")
    raise KeyLabelError(f"unknown notation {notation!r}; choose one of {', '.join(NOTATIONS)}")


_NAME_RE = re.compile(
    r"^\s*([a-g])\s*(sharp|flat|[#b♯♭])?\s*"
    r"(?:[:\s_-]*)"
    r"(major|minor|maj|min|dur|moll|m|M|)\s*$",
    re.IGNORECASE,
)
_CAMELOT_RE = re.compile(r"^\s*(\d{1,2})\s*([ab])\s*$", re.IGNORECASE)
_OPENKEY_RE = re.compile(r"^\s*(\d{1,2})\s*([dm])\s*$", re.IGNORECASE)


def parse_key(text: str) -> Key:
    """Read a key in any common notation.

    Accepts mir_eval labels (``"Eb major"``, ``"c# minor"``), capitalised or
    abbreviated modes (``"C Major"``, ``"C:maj"``, ``"Cmin"``), ID3 short forms
    (``"Ebm"``, ``"F#"``), Camelot (``"8A"``) and Open Key (``"1d"``).
    Raises :class:`~musicssl.errors.KeyLabelError` otherwise.

    A tonic with no mode follows the lowercase-means-minor convention
    (Humdrum, music21, German usage): ``"Bb"`` and ``"F#"`` are major,
    ``"bb"`` and ``"f#"`` minor. A written mode always wins over the letter's
    case (``"c major"``, ``"C minor"``, ``"Cm"``).
    """
    if not isinstance(text, str):
        raise KeyLabelError(f"a key label must be a string, got {type(text).__name__}")
    raw = text
    text = text.strip()
    if not text:
        raise KeyLabelError("empty key label")
    m = _CAMELOT_RE.match(text)
    if m:
        number, letter = int(m.group(1)), m.group(2).upper()
        if 1 <= number <= 12:
            fifths = (number - 1 - 7) % 12
            major = Key((7 * fifths) % 12, "major")
            return major if letter == "B" else major.relative
    m = _OPENKEY_RE.match(text)
    if m:
        number, letter = int(m.group(1)), m.group(2).lower()
        if 1 <= number <= 12:
            major = Key((7 * (number - 1)) % 12, "major")
            return major if letter == "d" else major.relative
    m = _NAME_RE.match(text)
    if not m:
        raise KeyLabelError(f"cannot read {raw!r} as a key")
    letter, accidental, mode = m.group(1).lower(), (m.group(2) or ""), m.group(3)
    pc = _LETTER_PC[letter]
    acc = accidental.lower()
    if acc in ("#", "♯", "sharp"):
        pc += 1
    elif acc in ("b", "♭", "flat"):
        pc -= 1
    mode_l = mode.lower()
    if mode_l == "":  # no mode written: the letter's case says it
        parsed_mode = "minor" if m.group(1).islower() else "major"
    elif mode_l in ("major", "maj", "dur") or mode == "M":
        parsed_mode = "major"
    elif mode_l in ("minor", "min", "m", "moll"):
        parsed_mode = "minor"
    else:  # pragma: no cover - the regex admits nothing else
        raise KeyLabelError(f"cannot read mode of {raw!r}")
    return Key(pc % 12, parsed_mode)


#: The 24 keys in canonical order.
KEYS: tuple[Key, ...] = tuple(Key.from_index(i) for i in range(24))
#: mir_eval-valid labels of :data:`KEYS`, e.g. ``"C major"`` ... ``"B minor"``.
KEY_LABELS: tuple[str, ...] = tuple(str(k) for k in KEYS)


def sharp_name(pitch_class: int) -> str:
    """Pitch-class name with sharps (``"C#"``), e.g. for axis labels."""
    return _SHARP_NAMES[int(pitch_class) % 12]


# --- CQT bins -------------------------------------------------------------------

def cqt_bin_pitch_class(bin_index, lowest_pitch_class: int = A0_PITCH_CLASS):
    """Pitch class (C = 0) of CQT bin ``bin_index`` for a 12-bins-per-octave CQT.

    ``lowest_pitch_class`` is the pitch class of bin 0 (9 for A0 = 27.5 Hz).
    Works on ints and numpy arrays.
    """
    return (np.asarray(bin_index) + lowest_pitch_class) % 12 if not isinstance(bin_index, int) \
        else (bin_index + lowest_pitch_class) % 12


def pitch_class_of_frequency(fmin_hz: float) -> int:
    """Pitch class (C = 0) of the note nearest to ``fmin_hz`` (A4 = 440 Hz)."""
    midi = 69 + 12 * math.log2(fmin_hz / 440.0)
    return int(round(midi)) % 12


def chroma_to_canonical(chroma_by_bin, lowest_pitch_class: int = A0_PITCH_CLASS):
    """Reorder a ``(..., 12)`` array whose column ``j`` is CQT bin ``j`` (mod 12)
    so that column ``q`` is pitch class ``q`` (C = 0)."""
    chroma_by_bin = np.asarray(chroma_by_bin)
    return np.roll(chroma_by_bin, lowest_pitch_class, axis=-1)


def circle_of_fifths_order() -> list[Key]:
    """24 keys ordered along the circle of fifths with each major beside its
    relative minor: C, a, G, e, D, b, ... (for confusion matrices)."""
    order: list[Key] = []
    for step in range(12):
        major = Key((7 * step) % 12, "major")
        order += [major, major.relative]
    return order
