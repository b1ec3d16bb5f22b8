"""Template-matching key baselines (Krumhansl–Schmuckler algorithm).

A 12-bin pitch-class profile (*chroma*) of the whole recording is correlated
with a major and a minor key profile rotated to the 12 tonics; the best of
the 24 correlations is the key.

* Chroma, two sources (``chroma=``):

  - ``"chroma"`` (the baselines ``krumhansl``, ``temperley``, ``kostka-payne``
    of :func:`musicssl.key.registry.load_estimator`, and the default's prior):
    :func:`musicssl.dsp.chroma.chroma_cqt` (a 36-bins-per-octave CQT from C1
    over 7 octaves, folded to 12 pitch classes, each frame scaled to a maximum
    of 1, as librosa's ``chroma_cqt``), averaged over time, the usual chroma of
    the key-finding literature. On dev-synth it scores 6 MIREX points above the
    CQT chroma below (``benchmarks/key_baselines.py``).
  - ``"cqt"`` (a prior that reads the very CQT the network reads): the CQT
    magnitude of the shared front end (99 bins from A0), averaged over time,
    then each pitch class is the **mean** of its octave bins (bins are mapped
    with :func:`musicssl.keys.cqt_bin_pitch_class`; the mean, not the sum,
    because A, A# and B have 9 bins in 99 and the others 8).
    ``scale="linear"`` (default) averages the magnitude; ``scale="log"``
    averages the log-compressed CQT the networks see. Linear was chosen by a
  small experiment on dev-synth (docs/evaluation.md: it was better for both
  profiles); the log scale flattens the profile towards its -80 dB floor.
* Scores: Pearson correlation ``r`` in [-1, 1] with each of the 24 rotated
  profiles, canonical key order.
* Probabilities: ``softmax(r / temperature)`` (temperature 0.05 by default).
  They rank the keys like the correlations and sum to one, but are **not**
  calibrated probabilities; use them for ranking, confidence margins and
  key-grams only.
"""

from __future__ import annotations

import numpy as np

from musicssl.errors import ConfigError
from musicssl.keys import A0_PITCH_CLASS, cqt_bin_pitch_class

# Krumhansl & Kessler (1982) probe-tone ratings, as tabulated in C. L. Krumhansl,
# "Cognitive Foundations of Musical Pitch" (1990), Table 2.1; index 0 = tonic.
KRUMHANSL_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KRUMHANSL_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)

# D. Temperley, "What's key for key? The Krumhansl-Schmuckler key-finding
# algorithm reconsidered", Music Perception 17(1), 1999, and "The Cognition of
# Basic Musical Structures" (MIT Press, 2001), ch. 7: the revised profiles
# (tested on the Kostka-Payne textbook excerpts).
TEMPERLEY_MAJOR = (5.0, 2.0, 3.5, 2.0, 4.5, 4.0, 2.0, 4.5, 2.0, 3.5, 1.5, 4.0)
TEMPERLEY_MINOR = (5.0, 2.0, 3.5, 4.5, 2.0, 4.0, 2.0, 4.5, 3.5, 2.0, 1.5, 4.0)

# D. Temperley, "Music and Probability" (MIT Press, 2007): pitch-class
# probabilities counted in the Kostka-Payne corpus (also Humdrum keycor -k).
KOSTKA_PAYNE_MAJOR = (0.748, 0.060, 0.488, 0.082, 0.670, 0.460, 0.096, 0.715, 0.104, 0.366, 0.057, 0.400)
KOSTKA_PAYNE_MINOR = (0.712, 0.084, 0.474, 0.618, 0.049, 0.460, 0.105, 0.747, 0.404, 0.067, 0.133, 0.330)

#: profile name -> (major, minor), index 0 = tonic
PROFILES: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "krumhansl": (KRUMHANSL_MAJOR, KRUMHANSL_MINOR),
    "temperley": (TEMPERLEY_MAJOR, TEMPERLEY_MINOR),
    "kostka-payne": (KOSTKA_PAYNE_MAJOR, KOSTKA_PAYNE_MINOR),
}
CHROMA_SCALES = ("linear", "log")
CHROMA_SOURCES = ("chroma", "cqt")
DEFAULT_TEMPERATURE = 0.05


def key_templates(profile: str = "krumhansl") -> np.ndarray:
    """The 24 rotated profiles ``(24, 12)`` in canonical key order (row ``k`` = key ``k``)."""
    try:
        major, minor = PROFILES[profile]
    except KeyError:
        raise ConfigError(f"unknown key profile {profile!r}; choose one of {', '.join(PROFILES)}") from None
    rows = [np.roll(major, tonic) for tonic in range(12)] + [np.roll(minor, tonic) for tonic in range(12)]
    return np.asarray(rows, dtype=np.float64)


def chroma_from_cqt(cqt: np.ndarray, lowest_pitch_class: int = A0_PITCH_CLASS) -> np.ndarray:
    """Fold a time-averaged CQT ``(..., n_bins)`` (12 bins per octave, bin 0 of pitch class
    ``lowest_pitch_class``) to chroma ``(..., 12)`` in canonical pitch classes (C = 0).
    Each class is the mean of its bins."""
    cqt = np.asarray(cqt, dtype=np.float64)
    n_bins = cqt.shape[-1]
    if n_bins < 12:
        raise ConfigError(f"need at least 12 CQT bins to fold into chroma, got {n_bins}")
    pitch_classes = cqt_bin_pitch_class(np.arange(n_bins), lowest_pitch_class)
    return np.stack([cqt[..., pitch_classes == q].mean(axis=-1) for q in range(12)], axis=-1)


def correlation_scores(chroma: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Pearson correlation of chroma ``(..., 12)`` with ``templates`` ``(24, 12)`` → ``(..., 24)``.
    A flat chroma (no variation) gives all zeros."""
    chroma = np.asarray(chroma, dtype=np.float64)
    c = chroma - chroma.mean(axis=-1, keepdims=True)
    t = templates - templates.mean(axis=-1, keepdims=True)
    c_norm = np.linalg.norm(c, axis=-1, keepdims=True)
    t_norm = np.linalg.norm(t, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (c @ t.T) / (c_norm * t_norm)
    return np.where(c_norm > 1e-12, r, 0.0)


def scores_to_probabilities(scores: np.ndarray, temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """``softmax(scores / temperature)`` over the last axis (24 keys)."""
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    z = np.asarray(scores, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def template_probabilities(chroma: np.ndarray, profile: str = "krumhansl",
                           temperature: float = DEFAULT_TEMPERATURE) -> np.ndarray:
    """Key probabilities ``(..., 24)`` (canonical order) of chroma ``(..., 12)``."""
    return scores_to_probabilities(correlation_scores(chroma, key_templates(profile)), temperature)


