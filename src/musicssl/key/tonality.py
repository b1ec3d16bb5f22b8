"""Is there a key at all? Model-free evidence of pitched content, for the "no key" outcome.

Two measurements on a CQT magnitude ``(n_bins, T)`` (12 bins per octave from
A0) at hop :data:`HOP_LENGTH` (43 frames/s at 22 050 Hz, whatever hop the key
model uses), on at most :data:`MAX_EXCERPTS` excerpts of :data:`EXCERPT_SECONDS`
(:func:`excerpts`), independent of the key model:

* :func:`harmonic_fraction`: the share of energy that median-filter
  harmonic/percussive separation (Fitzgerald 2010, the soft-mask form of
  ``librosa.decompose.hpss``: kernels of 17 frames × 17 bins, masks of power 2)
  assigns to the harmonic part. Percussion alone is near 0
  (a drum loop: 0.01); noise about 0.5; rendered scores 0.70–0.99; electronic
  songs with heavy drums down to about 0.2.
* :func:`peak_contrast`: how far, in dB, CQT bins between 80 Hz and 4 kHz rise
  above the mean of their two neighbours (semitones), averaged over 1 s blocks
  and weighted by magnitude. Notes make peaks one semitone wide; noise of any
  colour is smooth once averaged (0.3 dB); music scores 0.5 dB (electronic
  songs with heavy drums) to several dB.

:func:`no_key_reason` applies the thresholds below. They were set on
synthetic noise (white, pink, brown, hiss, a DC offset), a drum loop, speech,
the 236 dev-synth clips, the 20 LMMS renders and the nocturne
(``benchmarks/key_no_key.py`` prints every measurement side by side).
"""

from __future__ import annotations

import numpy as np

#: Below this harmonic fraction a recording is percussion (or silence) only.
MIN_HARMONIC_FRACTION = 0.10
#: Below this peak contrast (dB) a recording is noise-like.
MIN_PEAK_CONTRAST_DB = 0.42
#: CQT hop (samples) of the measurements; the thresholds hold for this hop.
HOP_LENGTH = 512
#: Long recordings are measured on this many evenly spaced excerpts ...
MAX_EXCERPTS = 8
#: ... of this length (seconds).
EXCERPT_SECONDS = 12.0
_KERNEL = 17
#: CQT bins (from A0 = 27.5 Hz, 12 per octave) of the contrast band, about 80 Hz to 4 kHz.
_BAND = (19, 87)


def excerpts(samples: np.ndarray, sr: float) -> list[np.ndarray]:
    """``samples`` ``(N,)`` whole, or :data:`MAX_EXCERPTS` evenly spaced excerpts of
    :data:`EXCERPT_SECONDS` when longer than all of them together."""
    spans = excerpt_spans(len(samples), sr)
    if len(spans) == 1:
        return [samples]
    return [samples[a:b] for a, b in spans]


def excerpt_spans(n_samples: int, sr: float) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, stop), ...]`` that :func:`excerpts` cuts from ``n_samples``."""
    length = int(EXCERPT_SECONDS * sr)
    if n_samples <= MAX_EXCERPTS * length:
        return [(0, int(n_samples))]
    starts = np.linspace(0, n_samples - length, MAX_EXCERPTS).astype(int)
    return [(int(s), int(s) + length) for s in starts]


def _parts(magnitudes) -> list[np.ndarray]:
    if isinstance(magnitudes, np.ndarray):
        magnitudes = [magnitudes]
    return [np.asarray(m, dtype=np.float32) for m in magnitudes]


def harmonic_fraction(magnitudes) -> float:
    """Share in [0, 1] of the energy of CQT magnitudes (one ``(n_bins, T)`` array or a
    list of excerpts) in the harmonic part. Silence gives 0."""
    harmonic = total = 0.0
    for part in _parts(magnitudes):
        h, p = hpss(part)
        eh, ep = float(np.sum(h.astype(np.float64) ** 2)), float(np.sum(p.astype(np.float64) ** 2))
        harmonic += eh
        total += eh + ep
    return harmonic / total if total > 0 else 0.0


def hpss(magnitude: np.ndarray, kernel: int = _KERNEL) -> tuple[np.ndarray, np.ndarray]:
    """Harmonic and percussive parts ``(n_bins, T)`` each of a magnitude spectrogram
    ``(n_bins, T)``: ``magnitude`` times the soft masks ``H^2 / (H^2 + P^2)`` and
    ``P^2 / (H^2 + P^2)``, ``H`` its median over ``kernel`` frames, ``P`` over
    ``kernel`` bins (edges mirrored); where both are 0 each part gets half."""
    x = np.asarray(magnitude, dtype=np.float32)
    h, p = median_filter(x, kernel, axis=1), median_filter(x, kernel, axis=0)
    big = np.maximum(h, p)
    silent = big < np.finfo(np.float32).tiny
    big[silent] = 1.0
    wh, wp = (h / big) ** 2, (p / big) ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        mask = np.where(silent, 0.5, wh / (wh + wp))
    return x * mask, x * np.where(silent, 0.5, 1.0 - mask)


def median_filter(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Running median of ``x`` (2-D) over ``size`` (odd) values along ``axis``, the
    edges mirrored (``a b c | c b a``: ``scipy.ndimage.median_filter``'s ``"reflect"``)."""
    if size % 2 != 1:
        raise ValueError(f"median filter size must be odd, got {size}")
    half = size // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (half, half)
    padded = np.pad(x, pad, mode="symmetric")   # mirrors again where x is shorter than half
    windows = np.lib.stride_tricks.sliding_window_view(padded, size, axis=axis)
    return np.median(windows, axis=-1).astype(x.dtype, copy=False)


def peak_contrast(magnitudes, frames_per_second: float) -> float:
    """Magnitude-weighted mean rise (dB, >= 0) of in-band CQT bins over their neighbours,
    on 1 s block averages of CQT magnitudes (one ``(n_bins, T)`` array or a list of
    excerpts) at ``frames_per_second``. 0 for silence or fewer bins than the band."""
    lo, hi = _BAND
    block = max(1, int(round(frames_per_second)))
    rise_sum = weight_sum = 0.0
    for part in _parts(magnitudes):
        if part.shape[0] < hi + 1:
            return 0.0
        n_blocks = max(1, part.shape[1] // block)
        used = part[:, :n_blocks * block] if part.shape[1] >= block else part
        mean = used.reshape(part.shape[0], n_blocks, -1).mean(axis=-1).astype(np.float64)[lo - 1:hi + 1]
        peak = float(mean.max())
        if peak <= 0:
            continue
        level = 20.0 * np.log10(mean + 1e-4 * peak)
        rise = np.maximum(level[1:-1] - 0.5 * (level[:-2] + level[2:]), 0.0)
        weight = mean[1:-1]
        rise_sum += float((rise * weight).sum())
        weight_sum += float(weight.sum())
    return rise_sum / weight_sum if weight_sum > 0 else 0.0


def no_key_reason(harmonic: float | None, contrast: float | None) -> str | None:
    """Why a recording has no key (a short phrase), or None when it has one (or when
    nothing was measured). ``harmonic``: :func:`harmonic_fraction`; ``contrast``:
    :func:`peak_contrast` (dB)."""
    if harmonic is not None and harmonic < MIN_HARMONIC_FRACTION:
        return f"no pitched content: percussion or silence (harmonic fraction {harmonic:.2f})"
    if contrast is not None and contrast < MIN_PEAK_CONTRAST_DB:
        return f"no pitched content: noise-like spectrum (peak contrast {contrast:.2f} dB)"
    return None
