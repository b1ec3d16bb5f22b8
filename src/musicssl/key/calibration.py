"""Calibration of key models (SPEC §1.6): which output row is major, which
column is which tonic.

A self-supervised model learns keys only up to a rotation of its columns and
a permutation of its rows. Calibration plays reference signals of known key
(cadences and scales synthesised here, in all 12 transpositions of C major and
A minor) through the model and records, for each row, the tonic of column 0.
A *frame check* (:func:`frame_check`) calibrates again on random diatonic
progressions: models trained here may read a texture a fifth away, and where
the two calibrations differ the frame is uncertain (docs/training.md, "Which
calibration: the SPEC signal, progressions, music").

A calibration is a plain dict, stored in the checkpoint metadata::

    {"n_rows": 2, "row_modes": ["major", "minor"], "row_offsets": [9, 11]}

meaning: output ``[row, j]`` is the key ``Key((row_offsets[row] + j) % 12,
row_modes[row])``. One-row (STONE) models predict a key signature only:
``{"n_rows": 1, "row_modes": ["signature"], "row_offsets": [o]}`` maps column
``j`` to the signature of the major key with tonic ``(o + j) % 12``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from musicssl.dsp.cqt import crop_bins, log_compress
from musicssl.errors import CalibrationError
from musicssl.io.atomic import atomic_write_text
from musicssl.io.model_file import cache_dir
from musicssl.key.features import magnitude_cqt
from musicssl.keys import Key, sharp_name

# --- reference signals ----------------------------------------------------------

_MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11, 12)
_MELODIC_MINOR_UP = (0, 2, 3, 5, 7, 9, 11, 12)
_NATURAL_MINOR_DOWN = (12, 10, 8, 7, 5, 3, 2, 0)
# I-IV-V-I (major) and i-iv-V-i (harmonic minor): chord tones relative to the tonic
_MAJOR_CADENCE = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 4, 7))
_MINOR_CADENCE = ((0, 3, 7), (5, 8, 12), (7, 11, 14), (0, 3, 7))
_CADENCE_BASS = (0, 5, 7, 0)


@functools.lru_cache(maxsize=1024)
def _tone(midi: float, duration_s: float, sr: int, n_harmonics: int = 6) -> np.ndarray:
    """A note of ``n_harmonics`` harmonics (amplitude 1/h) with a decaying envelope
    (cached, read-only: the signals reuse a few dozen notes thousands of times)."""
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr
    f0 = 440.0 * 2.0 ** ((midi - 69) / 12)
    out = np.zeros(n)
    for h in range(1, n_harmonics + 1):
        if h * f0 < 0.45 * sr:
            out += np.sin(2 * np.pi * h * f0 * t) / h
    envelope = np.exp(-3.0 * t) * np.minimum(1.0, t / 0.01)
    out *= envelope
    out.setflags(write=False)
    return out


def _tonic_midi(key: Key) -> int:
    """MIDI note of the signals' tonic: C4 ± a fourth."""
    return 60 + (key.tonic if key.tonic < 6 else key.tonic - 12)


def _chord(bass_midi: int, midis, duration_s: float, sr: int) -> np.ndarray:
    """A bass note and the notes ``midis`` sounding together, ``duration_s`` long."""
    frame = _tone(bass_midi, duration_s, sr)
    for midi in midis:
        frame = frame + _tone(midi, duration_s, sr)
    return frame


def reference_signal(key: Key, sr: int = 22050, chord_s: float = 0.6, note_s: float = 0.3,
                     parts: tuple[str, ...] = ("cadences", "scale")) -> np.ndarray:
    """A signal in ``key``: four cadences with a bass line (``"cadences"``, 9.6 s), then the
    scale up and down (``"scale"``, 4.5 s), in harmonic tones. float32 (n,), peak 1, about 14 s
    with both parts (the calibration's signal)."""
    tonic_midi = _tonic_midi(key)
    chords = _MAJOR_CADENCE if key.is_major else _MINOR_CADENCE
    pieces = []
    if "cadences" in parts:
        for _ in range(4):
            for chord, bass in zip(chords, _CADENCE_BASS):
                pieces.append(_chord(tonic_midi - 24 + bass, [tonic_midi + i for i in chord], chord_s, sr))
    if "scale" in parts:
        if key.is_major:
            scale = list(_MAJOR_SCALE) + list(reversed(_MAJOR_SCALE))[1:]
        else:
            scale = list(_MELODIC_MINOR_UP) + list(_NATURAL_MINOR_DOWN)[1:]
        for step in scale:
            pieces.append(_tone(tonic_midi + step, note_s, sr))
    if not pieces:
        raise ValueError(f"reference_signal parts must include 'cadences' or 'scale', got {parts}")
    signal = np.concatenate(pieces)
    return (signal / np.abs(signal).max()).astype(np.float32)


# diatonic triads by scale degree, chord tones relative to the tonic (minor: harmonic minor's V)
_MAJOR_TRIADS = {1: (0, 4, 7), 2: (2, 5, 9), 3: (4, 7, 11), 4: (5, 9, 12), 5: (7, 11, 14), 6: (9, 12, 16)}
_MINOR_TRIADS = {1: (0, 3, 7), 3: (3, 7, 10), 4: (5, 8, 12), 5: (7, 11, 14), 6: (8, 12, 15), 7: (10, 14, 17)}


def progression_signal(key: Key, sr: int = 22050, seed: int = 0, n_chords: int = 24,
                       chord_s: float = 0.6) -> np.ndarray:
    """A random diatonic chord progression in ``key``: I (i), ``n_chords − 3`` triads drawn
    uniformly from the key's six major and minor triads (no diminished one; minor: harmonic
    minor's V), V–I (V–i); random inversions, the root in the bass, harmonic tones. Another
    texture of known key than :func:`reference_signal`.
    float32 (n,), peak 1, ``n_chords · chord_s`` s (14.4 s)."""
    rng = np.random.default_rng([seed, key.tonic, int(key.is_major)])
    triads = _MAJOR_TRIADS if key.is_major else _MINOR_TRIADS
    tonic_midi = _tonic_midi(key)
    degrees = [1, *rng.choice(list(triads), n_chords - 3), 5, 1]
    parts = []
    for degree in degrees:
        chord = triads[int(degree)]
        inversion = int(rng.integers(0, 3))
        upper = [tonic_midi + interval + (12 if i < inversion else 0) for i, interval in enumerate(chord)]
        parts.append(_chord(tonic_midi - 24 + chord[0] % 12, upper, chord_s, sr))
    signal = np.concatenate(parts)
    return (signal / np.abs(signal).max()).astype(np.float32)


#: seeds of the progression draws the frame check calibrates on (24 signals each)
FRAME_CHECK_DRAWS = (0, 1)


@functools.lru_cache(maxsize=4)
def progression_signals(sr: int = 22050, draws: tuple[int, ...] = FRAME_CHECK_DRAWS) -> tuple[np.ndarray, ...]:
    """:func:`progression_signal` of every :func:`reference_keys` key, one draw after the
    other: ``24 * len(draws)`` waveforms (cached; do not modify them)."""
    return tuple(progression_signal(key, sr, seed=seed) for seed in draws for key in reference_keys())


def reference_keys() -> list[Key]:
    """The 24 reference keys: C major and A minor in all 12 transpositions."""
    return [Key(t, "major") for t in range(12)] + [Key((9 + t) % 12, "minor") for t in range(12)]


# --- applying a calibration -------------------------------------------------------

def to_canonical(native: np.ndarray, calibration: dict) -> np.ndarray:
    """Reorder native model outputs ``(..., 12 * n_rows)`` into the canonical
    24-key order ``(..., 24)`` (C major ... B minor).

    One-row models give each signature's probability half to its major key
    and half to the relative minor.
    """
    native = np.asarray(native, dtype=np.float64)
    n_rows = int(calibration["n_rows"])
    if native.shape[-1] != 12 * n_rows:
        raise CalibrationError(f"model gives {native.shape[-1]} outputs, calibration expects {12 * n_rows}")
    rows = native.reshape(native.shape[:-1] + (n_rows, 12))
    out = np.zeros(native.shape[:-1] + (24,))
    for row, (mode, offset) in enumerate(zip(calibration["row_modes"], calibration["row_offsets"])):
        tonics = (int(offset) + np.arange(12)) % 12
        if mode == "signature":
            out[..., tonics] += rows[..., row, :] / 2
            out[..., 12 + (tonics + 9) % 12] += rows[..., row, :] / 2
        else:
            base = 0 if mode == "major" else 12
            out[..., base + tonics] += rows[..., row, :]
    return out


def validate_calibration(calibration: dict, n_rows: int) -> dict:
    """Check a calibration dict for a model with ``n_rows`` output rows."""
    try:
        modes = list(calibration["row_modes"])
        offsets = [int(o) for o in calibration["row_offsets"]]
        if int(calibration["n_rows"]) != n_rows or len(modes) != n_rows or len(offsets) != n_rows:
            raise ValueError("row count mismatch")
        allowed = [["signature"]] if n_rows == 1 else [["major", "minor"], ["minor", "major"]]
        if modes not in allowed or not all(0 <= o < 12 for o in offsets):
            raise ValueError("bad modes or offsets")
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"invalid calibration {calibration!r} for a {n_rows}-row model: {exc}") from exc
    return {"n_rows": n_rows, "row_modes": modes, "row_offsets": offsets}


# --- finding a calibration ---------------------------------------------------------

def fit_calibration(native: np.ndarray, keys: list[Key]) -> dict:
    """Best row-mode assignment and column offsets for native outputs
    ``(n_signals, 12 * n_rows)`` of signals in known ``keys``.

    Maximises the summed log-probability the calibrated model gives the true
    keys over all assignments (2 x 12 x 12 for two rows, 12 for one).
    """
    native = np.asarray(native, dtype=np.float64)
    n_rows = native.shape[-1] // 12
    if native.shape != (len(keys), 12 * n_rows) or n_rows not in (1, 2):
        raise CalibrationError(f"expected ({len(keys)}, 12 or 24) outputs, got {native.shape}")
    log_p = np.log(np.clip(native, 1e-12, None)).reshape(len(keys), n_rows, 12)
    best, best_score = None, -np.inf
    if n_rows == 1:
        for offset in range(12):
            # column j holds the signature of major tonic offset + j
            score = sum(log_p[i, 0, ((k if k.is_major else k.relative).tonic - offset) % 12]
                        for i, k in enumerate(keys))
            if score > best_score:
                best, best_score = {"n_rows": 1, "row_modes": ["signature"], "row_offsets": [offset]}, score
        return best
    for major_row, off_major, off_minor in itertools.product((0, 1), range(12), range(12)):
        offsets = {major_row: off_major, 1 - major_row: off_minor}
        score = 0.0
        for i, k in enumerate(keys):
            row = major_row if k.is_major else 1 - major_row
            score += log_p[i, row, (k.tonic - offsets[row]) % 12]
        if score > best_score:
            modes = ["major", "minor"] if major_row == 0 else ["minor", "major"]
            best = {"n_rows": 2, "row_modes": modes, "row_offsets": [offsets[0], offsets[1]]}
            best_score = score
    return best


def calibration_accuracy(native: np.ndarray, keys: list[Key], calibration: dict) -> float:
    """Fraction of reference signals whose calibrated arg-max is the true key
    (for one-row models: the true key signature)."""
    canonical = to_canonical(native, calibration)
    hits = []
    for probs, key in zip(canonical, keys):
        guess = Key.from_index(int(np.argmax(probs)))
        if calibration["n_rows"] == 1:
            hits.append(guess.signature == key.signature)
        else:
            hits.append(guess == key)
    return float(np.mean(hits))


def calibrate(native_outputs: Callable[[np.ndarray, int], np.ndarray], sr: int = 22050,
              signals: Sequence[np.ndarray] | None = None) -> dict:
    """Calibrate a model given ``native_outputs(waveforms (B, N), sr) -> (B, 12 * n_rows)``.

    ``signals``: waveforms of the :func:`reference_keys` keys, in that order, once or several
    times over (default: :func:`reference_signal`, SPEC §1.6); longer ones are cut to the
    shortest. Returns the calibration dict plus ``"reference_accuracy"``: the fraction of the
    signals the calibrated model then labels correctly.
    """
    keys = reference_keys()
    if signals is None:
        signals = [reference_signal(k, sr) for k in keys]
    if not signals or len(signals) % len(keys):
        raise CalibrationError(f"expected a multiple of {len(keys)} reference signals, got {len(signals)}")
    length = min(len(s) for s in signals)
    batch = np.stack([s[:length] for s in signals])
    return fit_reference(np.asarray(native_outputs(batch, sr)))


def fit_reference(native: np.ndarray) -> dict:
    """:func:`fit_calibration` of outputs ``(24 * n, 12 * n_rows)`` of signals in the
    :func:`reference_keys` keys, once or several times over, plus ``"reference_accuracy"``."""
    keys = reference_keys()
    if len(native) % len(keys):
        raise CalibrationError(f"expected outputs for a multiple of {len(keys)} reference signals, got {len(native)}")
    keys = keys * (len(native) // len(keys))
    calibration = fit_calibration(native, keys)
    calibration["reference_accuracy"] = calibration_accuracy(native, keys, calibration)
    return calibration


def same_frame(a: dict, b: dict) -> bool:
    """Whether two calibrations map every output to the same key."""
    return (list(a["row_modes"]), [int(o) for o in a["row_offsets"]]) == \
        (list(b["row_modes"]), [int(o) for o in b["row_offsets"]])


def describe_frame(calibration: dict) -> str:
    """The key of column 0 of each row in words, e.g. ``"major row 0 from C#, minor row 1 from G#"``."""
    return ", ".join(f"{mode} row {row} from {sharp_name(offset)}" for row, (mode, offset) in
                     enumerate(zip(calibration["row_modes"], calibration["row_offsets"])))


def describe_frame_check(check: dict, calibration: dict) -> str:
    """One line for a training log: whether :func:`frame_check` agrees, and if not what each signal gives."""
    if check["agrees"]:
        return f"frame check: random diatonic progressions give the same frame ({describe_frame(calibration)})"
    return (f"frame check: the frame is uncertain; the SPEC signal gives {describe_frame(calibration)}, "
            f"random diatonic progressions {describe_frame(check['progressions'])}; the model keeps the "
            f"SPEC signal's, score it on clips of known key (musicssl evaluate) before trusting it")


def frame_check(native_outputs: Callable[[np.ndarray, int], np.ndarray], calibration: dict,
                sr: int = 22050, draws: tuple[int, ...] = FRAME_CHECK_DRAWS) -> dict:
    """Calibrate again on random diatonic progressions (:func:`progression_signals`) and
    compare with ``calibration`` (the SPEC signal's).

    Returns ``{"progressions": calibration dict with "reference_accuracy", "agrees": bool}``.
    On 55 models (docs/training.md) the SPEC signal's frame was the one labelled music
    picks wherever the two agreed (22 of 22) and for 27 of the 33 where they differed:
    ``agrees`` False means the frame is uncertain; check it on clips of known key.
    """
    progressions = calibrate(native_outputs, sr, progression_signals(sr, tuple(draws)))
    return {"progressions": progressions, "agrees": same_frame(progressions, calibration)}


def calibration_cache_dir() -> Path:
    return cache_dir("calibration")


def cached_calibration(path: Path, loaded, device: str) -> dict:
    """Calibrate an uncalibrated checkpoint once; the result is cached by file hash."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = calibration_cache_dir() / f"{digest}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    calibration = calibrate_model(loaded.model, loaded.frontend_config, device)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(calibration))
    except OSError:
        pass  # a read-only cache only costs time
    return calibration


class FrameChecker:
    """:func:`frame_check` for a model in training: the log-CQT of the SPEC signals and of the
    progressions is computed once (``CQT`` of the front end), each check is then two forwards.
    A label-free validation signal (docs/training.md, "Which calibration")."""

    def __init__(self, frontend_config):
        self.frontend_config = frontend_config
        self._logcqt: dict[str, torch.Tensor] = {}

    def logcqt(self, which: str) -> torch.Tensor:
        """``(n, 1, F, T)`` log-CQT of ``"reference"`` (24 SPEC signals) or ``"progressions"`` (48)."""
        if which not in self._logcqt:
            from musicssl.dsp.cqt import CQT

            c = self.frontend_config
            if which == "reference":
                signals = [reference_signal(k, c.sr) for k in reference_keys()]
            elif which == "progressions":
                signals = list(progression_signals(c.sr))
            else:
                raise ValueError(f"no reference signals called {which!r}")
            n = min(len(s) for s in signals)
            with torch.inference_mode():
                magnitude = CQT.from_config(c)(torch.from_numpy(np.stack([s[:n] for s in signals])))
                self._logcqt[which] = log_compress(magnitude, c.top_db)[:, None].clone()
        return self._logcqt[which]

    def native(self, model: torch.nn.Module, which: str, device) -> np.ndarray:
        """Outputs ``(n, 12 * n_rows)`` of ``model`` (crop offset 0) for those signals."""
        x = self.logcqt(which)[:, :, :self.frontend_config.crop_bins].to(device)
        with torch.no_grad():
            return model(x).float().cpu().numpy()

    def __call__(self, model: torch.nn.Module, device="cpu") -> dict:
        """``{"calibration": from the SPEC signals, "progressions": from the progressions, "agrees"}``
        (each calibration with its ``"reference_accuracy"``); ``model`` is left in its mode."""
        was_training = model.training
        model.eval()
        try:
            out = {name: fit_reference(self.native(model, which, device))
                   for name, which in (("calibration", "reference"), ("progressions", "progressions"))}
        finally:
            model.train(was_training)
        out["agrees"] = same_frame(out["calibration"], out["progressions"])
        return out


def model_outputs(model: torch.nn.Module, frontend_config, device: str = "cpu"
                  ) -> Callable[[np.ndarray, int], np.ndarray]:
    """``native_outputs(waveforms (B, N), sr) -> (B, 12 * n_rows)`` of ``model`` (crop offset 0),
    for :func:`calibrate` and :func:`frame_check`."""
    model = model.to(device).eval()

    @torch.inference_mode()
    def native(batch: np.ndarray, sr: int) -> np.ndarray:
        mags = np.stack([magnitude_cqt(x, frontend_config, device=device) for x in batch])
        logcqt = log_compress(torch.as_tensor(mags)[:, None].to(device), frontend_config.top_db)
        return model(crop_bins(logcqt, 0, frontend_config.crop_bins)).float().cpu().numpy()

    return native


def calibrate_model(model: torch.nn.Module, frontend_config, device: str = "cpu",
                    signals: Sequence[np.ndarray] | None = None) -> dict:
    """Calibrate ``model`` (SPEC §1.6) with the package's reference signals (or ``signals``, see
    :func:`calibrate`)."""
    return calibrate(model_outputs(model, frontend_config, device), frontend_config.sr, signals)


def check_model_frame(model: torch.nn.Module, frontend_config, calibration: dict, device: str = "cpu") -> dict:
    """:func:`frame_check` of ``model`` against its ``calibration``."""
    return frame_check(model_outputs(model, frontend_config, device), calibration, frontend_config.sr)
