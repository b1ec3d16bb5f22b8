"""Template-matching key baselines (Krumhansl–Schmuckler algorithm).

A 12-bin pitch-class profile (*chroma*) of the whole recording is correlated
with a major and a minor key profile rotated to the 12 tonics; the best of
the 24 correlations is the key.

* Chroma, two sources (``chroma=``):

  - ``"librosa"`` (the baselines ``krumhansl``, ``temperley``, ``kostka-payne``
    of :func:`musicssl.key.estimator.load_estimator`): librosa's
    ``chroma_cqt`` (a 36-bins-per-octave CQT from C1 over 7 octaves, folded to
    12 pitch classes, each frame scaled to a maximum of 1), averaged over time,
    the usual chroma of the key-finding literature. On dev-synth it scores 6
    MIREX points above the CQT chroma below (``benchmarks/key_baselines.py``).
  - ``"cqt"`` (the template *prior* of the networks, which must read the very
    CQT they read): the CQT magnitude of the shared front end (99 bins from A0),
    averaged over time, then each pitch class is the **mean** of its octave bins
  (bins are mapped with :func:`musicssl.keys.cqt_bin_pitch_class`; the mean,
  not the sum, because A, A# and B have 9 bins in 99 and the others 8).
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

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

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
CHROMA_SOURCES = ("cqt", "librosa")
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


def _require_chroma(chroma: np.ndarray | None) -> np.ndarray:
    """``chroma`` frames, or a ``ConfigError`` saying how to get them."""
    if chroma is None:
        raise ConfigError("these estimates read librosa chroma: compute the features with "
                          "compute_features(..., chroma=True) (the estimator's feature_options)")
    return chroma


def _magnitude_from_logcqt(logcqt: np.ndarray, top_db: float) -> np.ndarray:
    """Undo ``log_compress`` up to a scale: magnitude relative to the loudest bin."""
    return 10.0 ** ((np.asarray(logcqt, dtype=np.float64) - 1.0) * top_db / 10.0)


class TemplateKeyEstimator:
    """Krumhansl–Schmuckler template matching on the shared CQT front end.

    Same interface as :class:`musicssl.key.estimator.KeyEstimator`:
    ``probabilities(logcqt)``, ``estimate(samples, sr)``, ``estimate_file(path)``,
    ``estimate_features(features)`` → :class:`~musicssl.key.estimator.KeyResult`.
    """

    def __init__(self, profile: str = "krumhansl", *, scale: str = "linear",
                 temperature: float = DEFAULT_TEMPERATURE, frontend_config=None, device: str = "cpu",
                 chroma: str = "cqt"):
        from musicssl.frontend.cqt import FrontEndConfig

        if scale not in CHROMA_SCALES:
            raise ConfigError(f"chroma scale must be one of {CHROMA_SCALES}, got {scale!r}")
        if chroma not in CHROMA_SOURCES:
            raise ConfigError(f"chroma source must be one of {CHROMA_SOURCES}, got {chroma!r}")
        self.chroma_source = chroma
        #: keyword arguments of :func:`~musicssl.key.estimator.compute_features` this estimator needs
        self.feature_options = {"chroma": True} if chroma == "librosa" else {}
        self.templates = key_templates(profile)
        scores_to_probabilities(np.zeros(24), temperature)  # validates temperature
        self.profile = profile
        self.scale = scale
        self.temperature = float(temperature)
        self.frontend_config = frontend_config or FrontEndConfig()
        if self.frontend_config.bins_per_octave != 12:
            raise ConfigError("template matching needs a CQT with 12 bins per octave")
        self.device = device
        self.name = profile
        #: report "no key" (:mod:`musicssl.key.tonality`); False: always name a key
        self.detect_no_key = True

    def __repr__(self) -> str:
        return (f"TemplateKeyEstimator(profile={self.profile!r}, scale={self.scale!r}, "
                f"chroma={self.chroma_source!r})")

    # --- layer 1: spectrogram -> probabilities
    def _lowest_pitch_class(self) -> int:
        from musicssl.keys import pitch_class_of_frequency

        return pitch_class_of_frequency(self.frontend_config.fmin)

    def chroma(self, magnitude: np.ndarray) -> np.ndarray:
        """Chroma ``(..., 12)`` of CQT magnitude ``(..., n_bins, T)`` (linear, any scale)."""
        magnitude = np.asarray(magnitude, dtype=np.float64)
        if self.scale == "log":
            from musicssl.frontend.cqt import amplitude_to_db, compress_db

            magnitude = compress_db(amplitude_to_db(magnitude), self.frontend_config.top_db)
        return chroma_from_cqt(magnitude.mean(axis=-1), self._lowest_pitch_class())

    def probabilities_from_magnitude(self, magnitude: np.ndarray) -> np.ndarray:
        """Canonical probabilities ``(..., 24)`` of CQT magnitude ``(..., n_bins, T)``."""
        return scores_to_probabilities(correlation_scores(self.chroma(magnitude), self.templates),
                                       self.temperature)

    def probabilities(self, logcqt) -> np.ndarray:
        """Canonical probabilities ``(B, 24)`` of log-CQT ``(B, 1, F, T)`` (as from ``KeyFrontEnd``)."""
        if torch.is_tensor(logcqt):
            logcqt = logcqt.detach().cpu().numpy()
        logcqt = np.asarray(logcqt)
        if logcqt.ndim != 4 or logcqt.shape[1] != 1:
            raise ConfigError(f"expected log-CQT of shape (B, 1, F, T), got {logcqt.shape}")
        magnitude = _magnitude_from_logcqt(logcqt[:, 0], self.frontend_config.top_db)
        return self.probabilities_from_magnitude(magnitude)

    # --- layer 2: features -> results
    def estimate_features(self, features: Sequence, local: bool = False,
                          window_s: float = 20.0, hop_s: float = 5.0) -> list:
        """Results for :class:`~musicssl.key.estimator.KeyFeatures` (CQT magnitudes)."""
        from musicssl.key.estimator import result_from_probabilities

        out = []
        for f in features:
            p = self._feature_probabilities(f)
            reason = f.no_key_reason if self.detect_no_key else None
            out.append(result_from_probabilities(
                p, f.duration_s, path=f.path, estimator=self.name, mode_estimated=True,
                tuning_cents=getattr(f, "tuning_cents", None),
                local=self.local_keys(f, window_s, hop_s) if local else None,
                no_key_reason=reason))
        return out

    def probabilities_from_chroma(self, frames: np.ndarray) -> np.ndarray:
        """Canonical probabilities ``(..., 24)`` of chroma frames ``(..., 12, T)`` (time-averaged)."""
        chroma = np.asarray(frames, dtype=np.float64).mean(axis=-1)
        return scores_to_probabilities(correlation_scores(chroma, self.templates), self.temperature)

    def prior_probabilities(self, logcqt, chromas: Sequence[np.ndarray | None] | None) -> np.ndarray:
        """Canonical probabilities ``(B, 24)`` as a network's prior: from the log-CQT
        ``(B, 1, F, T)`` it reads, or, with librosa chroma, from ``chromas`` (B × ``(12, T)``)."""
        if self.chroma_source == "cqt":
            return self.probabilities(logcqt)
        return np.stack([self.probabilities_from_chroma(_require_chroma(c)) for c in chromas or [None]])

    def _feature_probabilities(self, features) -> np.ndarray:
        if self.chroma_source == "librosa":
            return self.probabilities_from_chroma(_require_chroma(features.chroma))
        return self.probabilities_from_magnitude(np.asarray(features.magnitude))   # a FileCQT: computed whole

    def local_keys(self, features, window_s: float = 20.0, hop_s: float = 5.0) -> list:
        """Keys of overlapping windows ``window_s`` long every ``hop_s`` seconds."""
        import dataclasses

        from musicssl.key.estimator import local_keys_of

        if self.chroma_source == "librosa":
            frames = dataclasses.replace(features, magnitude=_require_chroma(features.chroma))
            return local_keys_of(frames, lambda windows: self.probabilities_from_chroma(np.stack(windows)),
                                 window_s, hop_s)
        return local_keys_of(features, lambda windows: self.probabilities_from_magnitude(np.stack(windows)),
                             window_s, hop_s)

    # --- layer 3: audio / files
    def estimate(self, samples: np.ndarray, sr: int, local: bool = False,
                 window_s: float = 20.0, hop_s: float = 5.0):
        """Key of ``samples`` ((n,) or (n, channels)) at rate ``sr``."""
        from musicssl.key.estimator import compute_features

        features = compute_features(samples, self.frontend_config, sr=sr, device=self.device,
                                    **self.feature_options)
        return self.estimate_features([features], local, window_s, hop_s)[0]

    def estimate_file(self, path: str | Path, local: bool = False,
                      window_s: float = 20.0, hop_s: float = 5.0):
        """Key of an audio file."""
        from musicssl.key.estimator import compute_features

        features = compute_features(path, self.frontend_config, device=self.device, **self.feature_options)
        return self.estimate_features([features], local, window_s, hop_s)[0]
