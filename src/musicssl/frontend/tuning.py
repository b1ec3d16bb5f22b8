"""Tuning: how far a recording's pitches sit from the A = 440 Hz equal-tempered grid.

:func:`estimate_tuning_cents` measures the deviation in cents (hundredths of
a semitone, in [-50, 50)) with librosa's ``estimate_tuning``: spectral peaks
of an STFT (``piptrack``, parabolic interpolation) whose deviations from the
nearest semitone are histogrammed at 1-cent resolution; the most common
deviation wins. :func:`tuned_fmin` shifts a CQT's lowest frequency by that
deviation so that its bins sit on the recording's own semitones (the key
front end's compensation, see ``musicssl.key.estimator.compute_features``).

A deviation near ±50 cents is ambiguous by nature (half-way between two
semitones): an estimate of +49 for music tuned at -49 cents moves the CQT
grid by almost a semitone and names a key one semitone off.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["estimate_tuning_cents", "tuned_fmin", "TUNING_MAX_SECONDS"]

#: Longest stretch of audio (s) the estimate looks at; longer recordings are
#: sampled in four evenly spaced excerpts that add up to this length.
TUNING_MAX_SECONDS = 120.0
_EXCERPTS = 4


def estimate_tuning_cents(samples: np.ndarray, sr: float, *, max_seconds: float = TUNING_MAX_SECONDS) -> float:
    """Tuning deviation of mono ``samples`` (n,) at ``sr`` Hz, in cents in [-50, 50),
    1-cent resolution; 0.0 when nothing pitched is found (silence, noise)."""
    import librosa

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    limit = int(max_seconds * sr)
    if len(x) > limit:
        piece = limit // _EXCERPTS
        starts = np.linspace(0, len(x) - piece, _EXCERPTS).astype(int)
        x = np.concatenate([x[s:s + piece] for s in starts])
    if len(x) < 2048 or not np.any(x):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Trying to estimate tuning from empty frequency set"
        fraction = float(librosa.estimate_tuning(y=x, sr=sr, bins_per_octave=12, resolution=0.01))
    if not np.isfinite(fraction):
        return 0.0
    cents = round(100.0 * fraction, 1)
    return cents - 100.0 if cents >= 50.0 else cents


def tuned_fmin(fmin: float, tuning_cents: float) -> float:
    """``fmin`` (Hz) moved by ``tuning_cents``: ``fmin * 2 ** (cents / 1200)``."""
    return float(fmin) * 2.0 ** (float(tuning_cents) / 1200.0)
