"""Beat numbering (1..M in each bar) and downbeats from decoded beats: a cheap meter stage.

The beats come from any tracker; this stage only labels them. It reads, per beat,
features that mark bar starts in much Western popular music, and picks beats per
bar ``M`` and the downbeat phase:

* ``low``    low-frequency onset (log-magnitude flux of 30–150 Hz STFT bins,
             largest within ±70 ms of the beat): kick drums and bass notes fall on
             bar starts more often than elsewhere (Goto 2001 used bass-drum
             patterns; Klapuri, Eronen & Astola 2006 a low-band accent).
* ``chroma`` harmonic change: cosine distance between the mean chroma of the
             inter-beat interval before and after the beat: chords tend to change
             on bar lines (Goto 2001 "chord change possibilities"; Davies &
             Plumbley 2006 use spectral difference between beat-synchronous
             segments for downbeats).
* ``onset``  broadband onset (the same flux over all bins): beat loudness
             (an optional variant; not in the default set).

Each feature is standardised over the track (zero mean, unit variance) and the
chosen features are averaged with equal weights (no weight fitted to data): the
accent ``a`` ``(n,)``. ``M`` (``meter="auto"``, among :data:`CANDIDATES`) is the
lag with the largest autocorrelation of ``a`` (a periodicity of the accent in
beats, in the spirit of Klapuri et al. 2006); the phase is the residue class
``i mod M`` with the largest mean accent. One phase per track: a tracker that
drops or adds a beat mid-track shifts the bars after it.

References (read to learn the ideas, no code taken):
M. Goto, "An audio-based real-time beat tracking system for music with or without
drum-sounds", J. New Music Research 30(2), 2001. M. E. P. Davies and M. D.
Plumbley, "A spectral difference approach to downbeat extraction in musical
audio", EUSIPCO 2006. A. Klapuri, A. Eronen and J. Astola, "Analysis of the
meter of acoustic musical signals", IEEE TASLP 14(1), 2006.

Everything here is numpy, except :func:`meter_frames`, which uses librosa's STFT
and chroma filter bank (deferred import, as in :mod:`musicssl.beat.onset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicssl.beat.onset import FPS, N_FFT, SAMPLE_RATE, stft_magnitude
from musicssl.errors import ConfigError

#: band (Hz) of the low-frequency onset feature: kick-drum and bass fundamentals
LOW_BAND = (30.0, 150.0)
#: half-width (s) of the window around a beat in which onset features are read
#: (the ±70 ms tolerance of beat-tracking evaluation)
WINDOW_S = 0.07
#: beats per bar that ``meter="auto"`` chooses among
CANDIDATES = (3, 4)
#: the features used by default (equal weights after standardising)
DEFAULT_FEATURES = ("low", "chroma")
FEATURES = ("low", "chroma", "onset")
#: fewest beats that are numbered; ``meter="auto"`` needs 2 M beats for every candidate M and
#: otherwise takes :data:`FALLBACK_M`
MIN_BEATS = 3
FALLBACK_M = 4
#: what ``musicssl beats`` and ``POST /v1/beats`` number with unless told otherwise: 4 beats per
#: bar, phase from the audio (``benchmarks/downbeat_eval.py``: "auto" chose M less often right
#: than a fixed 4 on both labelled sets)
DEFAULT_METER = 4


@dataclass
class MeterFrames:
    """Frame features at 62.5 frames/s (frame ``t`` at ``t / 62.5`` s): ``low`` and ``onset``
    flux ``(T,)`` float32, ``chroma`` ``(12, T)`` float32 (each frame sums to 1 or is 0)."""

    low: np.ndarray
    onset: np.ndarray
    chroma: np.ndarray
    fps: float = FPS

    @property
    def n_frames(self) -> int:
        return int(self.low.shape[0])


@dataclass
class Meter:
    """Numbering of ``n`` beats: ``beats_per_bar`` M, ``numbers`` ``(n,)`` int 1..M (1 = downbeat),
    ``scores`` {M: autocorrelation of the accent at lag M} (empty when M was fixed or could
    not be measured), ``accent`` ``(n,)`` the combined standardised feature."""

    beats_per_bar: int
    numbers: np.ndarray
    scores: dict
    accent: np.ndarray


def parse_meter(value) -> str | int | None:
    """``"off"``/None -> None, ``"auto"`` -> ``"auto"``, ``"3"``/3 -> 3 (2..16); else ConfigError."""
    if value is None or value == "off":
        return None
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not (isinstance(value, int) or str(value).strip().isdigit()):
        raise ConfigError(f"meter must be off, auto or a number of beats per bar (2-16), got {value!r}")
    m = int(value)
    if not 2 <= m <= 16:
        raise ConfigError(f"beats per bar must be a whole number from 2 to 16, got {value!r}")
    return m


def meter_frames(samples16k: np.ndarray, magnitude: np.ndarray | None = None) -> MeterFrames:
    """Frame features of mono 16 kHz audio ``(N,)``: ``N // 256 + 1`` frames (as the onset
    activation); ``magnitude``: its :func:`~musicssl.beat.onset.stft_magnitude` when already
    computed (same result)."""
    import librosa  # deferred: as musicssl.beat.onset

    mag = stft_magnitude(samples16k) if magnitude is None else magnitude
    freqs = np.arange(mag.shape[0]) * SAMPLE_RATE / N_FFT
    logmag = np.log1p(100.0 * mag / max(float(mag.max()), 1e-9))
    rise = np.maximum(0.0, np.diff(logmag, axis=1, prepend=logmag[:, :1]))
    low = (freqs >= LOW_BAND[0]) & (freqs <= LOW_BAND[1])
    chroma = librosa.feature.chroma_stft(S=mag ** 2, sr=SAMPLE_RATE, n_fft=N_FFT, tuning=0.0, norm=None)
    total = chroma.sum(axis=0, keepdims=True)
    chroma = np.where(total > 1e-9, chroma / np.maximum(total, 1e-9), 0.0)
    return MeterFrames(low=rise[low].sum(axis=0).astype(np.float32), onset=rise.sum(axis=0).astype(np.float32),
                       chroma=chroma.astype(np.float32))


def beat_features(frames: MeterFrames, beats: np.ndarray, features=DEFAULT_FEATURES) -> np.ndarray:
    """Per-beat features ``(n, len(features))`` (raw, not standardised) of beat times ``(n,)`` s."""
    beats = np.asarray(beats, dtype=np.float64).reshape(-1)
    n, t = len(beats), frames.n_frames
    out = np.zeros((n, len(features)), dtype=np.float64)
    if n == 0 or t == 0:
        return out
    frame = np.clip(np.round(beats * frames.fps).astype(int), 0, t - 1)
    half = max(1, int(round(WINDOW_S * frames.fps)))
    for j, name in enumerate(features):
        if name in ("low", "onset"):
            flux = getattr(frames, name)
            out[:, j] = [flux[max(0, f - half):f + half + 1].max() for f in frame]
        elif name == "chroma":
            bounds = np.concatenate([[0], frame, [t]])
            seg = np.stack([frames.chroma[:, a:max(b, a + 1)].mean(axis=1) for a, b in zip(bounds[:-1], bounds[1:])])
            before, after = seg[:-1], seg[1:]   # segment i ends at beat i, segment i + 1 starts there
            norm = np.linalg.norm(before, axis=1) * np.linalg.norm(after, axis=1)
            cos = np.where(norm > 1e-12, (before * after).sum(axis=1) / np.maximum(norm, 1e-12), 1.0)
            out[:, j] = 1.0 - cos
            out[0, j] = np.median(out[:, j])   # nothing before the first beat: a neutral value
        else:
            raise ConfigError(f"unknown meter feature {name!r}; choose from {', '.join(FEATURES)}")
    return out


def accent(features: np.ndarray) -> np.ndarray:
    """Equal-weight mean of the standardised columns of ``features`` ``(n, k)`` -> ``(n,)``
    (a constant column contributes zeros)."""
    f = np.asarray(features, dtype=np.float64)
    if f.size == 0:
        return np.zeros(f.shape[0])
    std = f.std(axis=0)
    z = np.where(std > 1e-12, (f - f.mean(axis=0)) / np.where(std > 1e-12, std, 1.0), 0.0)
    return z.mean(axis=1)


def lag_correlation(a: np.ndarray, lag: int) -> float:
    """Pearson correlation of ``a[:-lag]`` and ``a[lag:]`` (0 when undefined)."""
    if lag <= 0 or len(a) < lag + 2:
        return 0.0
    x, y = a[:-lag], a[lag:]
    sx, sy = x.std(), y.std()
    if sx < 1e-12 or sy < 1e-12:
        return 0.0
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def choose_meter(acc: np.ndarray, meter: str | int = "auto", candidates=CANDIDATES) -> Meter | None:
    """:class:`Meter` of a beat accent ``(n,)``; None with fewer than :data:`MIN_BEATS` beats.

    ``meter``: ``"auto"`` (M = the candidate lag with the largest accent autocorrelation;
    :data:`FALLBACK_M` when there are fewer than 2 max(candidates) beats) or a fixed M.
    Phase: the residue ``i mod M`` with the largest mean accent (ties: the earliest).
    """
    acc = np.asarray(acc, dtype=np.float64).reshape(-1)
    n = len(acc)
    if n < MIN_BEATS:
        return None
    scores: dict = {}
    if meter == "auto":
        if n >= 2 * max(candidates):
            scores = {int(m): lag_correlation(acc, int(m)) for m in candidates}
            m = max(scores, key=lambda k: (scores[k], k == FALLBACK_M))   # a tie goes to 4
        else:
            m = FALLBACK_M
    else:
        m = int(meter)
    means = [acc[p::m].mean() if p < n else -np.inf for p in range(m)]
    phase = int(np.argmax(means))
    numbers = (np.arange(n) - phase) % m + 1
    return Meter(beats_per_bar=m, numbers=numbers.astype(np.int64), scores=scores, accent=acc)


def number_beats(frames: MeterFrames, beats: np.ndarray, meter: str | int = "auto",
                 features=DEFAULT_FEATURES) -> Meter | None:
    """Beat numbers of ``beats`` ``(n,)`` s from ``frames`` (see the module doc); None with
    fewer than :data:`MIN_BEATS` beats."""
    return choose_meter(accent(beat_features(frames, beats, features)), meter)


def every_mth(n: int, m: int) -> np.ndarray:
    """Baseline numbering ``(n,)``: 1 on the first beat and every ``m``-th after it."""
    return np.arange(n) % m + 1
