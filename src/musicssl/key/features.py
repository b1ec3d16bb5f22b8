"""Audio → key features (:class:`KeyFeatures`): the CQT magnitude of the key front end
``(n_bins, T)``, with tuning compensation, optional chroma ``(12, T)`` and the
"no key" measurements. Model-free and picklable: runs in worker processes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from musicssl.dsp.chroma import chroma_cqt, chroma_stream
from musicssl.dsp.cqt import CQT, FileCQT, FrontEndConfig, cqt_chunked, cut_spans
from musicssl.dsp.tuning import (
    check_tuning,
    estimate_tuning_cents,
    tuned_fmin,
    tuning_excerpt_spans,
)
from musicssl.errors import AudioTooShortError
from musicssl.io.audio import (
    is_long,
    iter_audio_blocks,
    load_audio,
    prepare_audio,
    scan_audio,
)
from musicssl.key import tonality


@dataclass
class KeyFeatures:
    """CQT magnitude of one recording: ``magnitude`` float32 (n_bins, T), and its origin.

    ``tuning_cents``: the recording's tuning deviation (cents, None if not measured);
    ``tuning_compensated``: whether the CQT bins were moved by it. Tonality
    measurements (:mod:`musicssl.key.tonality`; None when not measured):
    ``harmonic_fraction`` in [0, 1], ``peak_contrast`` in dB.
    """

    magnitude: np.ndarray   # or a FileCQT (long files: dsp.cqt.FileCQT, read in pieces)
    duration_s: float
    frames_per_second: float
    path: str | None = None
    tuning_cents: float | None = None
    tuning_compensated: bool = False
    harmonic_fraction: float | None = None
    peak_contrast: float | None = None
    #: chroma (12, T) at the same hop (:func:`musicssl.dsp.chroma.chroma_cqt`), when asked for
    #: (template baselines and priors)
    chroma: np.ndarray | None = None

    @property
    def no_key_reason(self) -> str | None:
        """Why this recording has no key, or None (:func:`musicssl.key.tonality.no_key_reason`)."""
        return tonality.no_key_reason(self.harmonic_fraction, self.peak_contrast)


def compute_features(source, frontend_config=None, *, sr: int | None = None,
                     device: str = "cpu", offset: float = 0.0, duration: float | None = None,
                     tuning: str | float = "compensate", chroma: bool = False,
                     stream: bool = True) -> KeyFeatures:
    """CQT magnitude of an audio file (``source`` a path) or of samples
    (``source`` an array, with its ``sr``). Model-free and picklable.

    ``offset``/``duration`` (seconds) select part of a file.
    ``tuning``: ``"compensate"`` estimates the tuning deviation
    (:func:`musicssl.dsp.tuning.estimate_tuning_cents`) and moves the CQT's
    reference frequency by it, so the bins sit on the recording's semitones;
    ``"report"`` estimates it without compensating; ``"off"`` does neither;
    a number is a known deviation in cents, compensated. ``chroma``: also
    the chroma (:func:`musicssl.dsp.chroma.chroma_cqt`: 36 bins per octave from C1,
    each frame scaled to a maximum of 1) at the front end's hop, with the same
    tuning, for the template baselines.
    ``stream``: a file longer than :data:`musicssl.io.audio.STREAM_MIN_SECONDS` is never held whole
    (:func:`streamed_features`: ``magnitude`` is then a :class:`~musicssl.dsp.cqt.FileCQT`,
    which the estimators read chunk by chunk; ``np.asarray`` of it computes all of it);
    False: the whole waveform and CQT in memory.
    """

    config = frontend_config or FrontEndConfig()
    path = None
    if isinstance(source, (str, Path)):
        path = str(source)
        if stream and is_long(source, offset, duration):
            return streamed_features(path, config, device=device, offset=offset, duration=duration,
                                     tuning=tuning, chroma=chroma)
        samples = load_audio(source, sr=config.sr, offset=offset, duration=duration)
    else:
        if sr is None:
            raise TypeError("sr is required when source is an array of samples")
        samples = prepare_audio(np.asarray(source), sr, config.sr)
    minimum_s = min_duration_s(config)
    duration_s = len(samples) / config.sr
    if duration_s < minimum_s:
        raise AudioTooShortError(
            f"audio is {duration_s:.2f} s long; key estimation needs at least {minimum_s:.2f} s",
            path, duration=duration_s, minimum=minimum_s)
    cents, compensate = _tuning_of(samples, config.sr, tuning)
    shift = cents if compensate else 0.0
    magnitude = magnitude_cqt(samples, config, device=device, tuning_cents=shift)
    harmonic, contrast = tonality_measurements(samples, config, device, tuning_cents=shift)
    frames = chroma_cqt(samples, config.sr, config.hop_length, shift, device) if chroma else None
    return KeyFeatures(magnitude, duration_s, config.frame_rate, path, cents, compensate,
                       harmonic, contrast, frames)


def tonality_measurements(samples: np.ndarray, frontend_config, device: str = "cpu",
                          tuning_cents: float = 0.0) -> tuple[float, float]:
    """``(harmonic fraction, peak contrast in dB)`` of mono ``samples`` at ``frontend_config.sr``
    (:mod:`musicssl.key.tonality`): a CQT at the measurements' own hop (bins moved by
    ``tuning_cents``) of the samples without their constant (DC) offset, on at most
    :data:`~musicssl.key.tonality.MAX_EXCERPTS` excerpts."""
    samples = samples - np.float32(np.mean(samples, dtype=np.float64))
    return _tonality_of_excerpts(tonality.excerpts(samples, frontend_config.sr), frontend_config,
                                 device, tuning_cents)


def _tuning_of(samples: np.ndarray, sr: int, tuning: str | float) -> tuple[float | None, bool]:
    """(deviation in cents or None, whether to compensate) for a ``tuning`` setting."""

    tuning = check_tuning(tuning)
    if tuning == "off":
        return None, False
    if isinstance(tuning, str):
        return estimate_tuning_cents(samples, sr), tuning == "compensate"
    return tuning, True


#: Fewest CQT frames a ChromaNet with the default 7 stages accepts; shorter
#: inputs are looped (their CQT tiled in time) up to this length.
MIN_FRAMES = 2 ** 7


#: Shortest audio (s) analysed at all: below this a key is not meaningful.
MIN_DURATION_S = 1.0


#: CQT chunk length (s) above which tracks are transformed piecewise (bounded memory).
CQT_CHUNK_SECONDS = 120.0


def min_duration_s(frontend_config=None) -> float:
    """Shortest audio (seconds) the key estimators accept."""
    return MIN_DURATION_S


def loop_to_min_frames(magnitude: np.ndarray, min_frames: int = MIN_FRAMES) -> np.ndarray:
    """Tile a short CQT ``(F, T)`` in time until it has at least ``min_frames`` frames."""
    n = magnitude.shape[-1]
    if n >= min_frames:
        return magnitude
    return np.tile(magnitude, (1, int(np.ceil(min_frames / n))))[:, :min_frames]


@lru_cache(maxsize=128)   # one per tuning (1-cent steps) in use
def _cqt_module(frontend_config, device: str):
    c = frontend_config
    return CQT.from_config(c).to(device)


@torch.inference_mode()
def magnitude_cqt(samples: np.ndarray, frontend_config, device: str = "cpu",
                  tuning_cents: float = 0.0) -> np.ndarray:
    """CQT magnitude float32 ``(n_bins, T)`` of mono ``samples`` at ``frontend_config.sr``;
    long inputs are transformed in chunks with the same result. ``tuning_cents``
    (rounded to whole cents) moves every bin's frequency by that much."""

    cents = round(float(tuning_cents))
    if cents:
        frontend_config = dataclasses.replace(frontend_config, fmin=tuned_fmin(frontend_config.fmin, cents))
    cqt = _cqt_module(frontend_config, device)
    x = torch.as_tensor(np.ascontiguousarray(samples, dtype=np.float32), device=device)[None]
    if x.shape[-1] > CQT_CHUNK_SECONDS * frontend_config.sr:
        mag = cqt_chunked(cqt, x, CQT_CHUNK_SECONDS)
    else:
        mag = cqt(x)
    return mag[0].float().cpu().numpy()


def _tonality_of_excerpts(parts: Sequence[np.ndarray], frontend_config, device: str,
                          tuning_cents: float) -> tuple[float, float]:
    """:func:`tonality_measurements` of its excerpts (DC offset already removed)."""
    config = dataclasses.replace(frontend_config, hop_length=tonality.HOP_LENGTH)
    mags = [magnitude_cqt(part, config, device=device, tuning_cents=tuning_cents) for part in parts]
    return (tonality.harmonic_fraction(mags),
            tonality.peak_contrast(mags, config.frame_rate))


def streamed_features(path, frontend_config, *, device: str = "cpu", offset: float = 0.0,
                      duration: float | None = None, tuning: str | float = "compensate",
                      chroma: bool = False) -> KeyFeatures:
    """:func:`compute_features` of a long file without holding its samples or its CQT.

    One pass (:func:`~musicssl.io.audio.scan_audio`) finds length, peak and the
    excerpts that tuning and tonality look at; with ``chroma`` a second pass computes
    the chroma frames (12 values per frame, kept); ``magnitude`` is a
    :class:`~musicssl.dsp.cqt.FileCQT` that decodes the file again when read.
    Same values as the in-memory path up to float rounding (the DC offset removed
    before the tonality measurements is a float64 mean of the raw samples over the peak).
    """

    config = frontend_config
    n_tuning = []

    def spans(n: int) -> list[tuple[int, int]]:
        wanted = tuning_excerpt_spans(n, config.sr)
        n_tuning[:] = [len(wanted)]
        return wanted + tonality.excerpt_spans(n, config.sr)

    scan = scan_audio(path, config.sr, spans, offset=offset, duration=duration)
    duration_s = scan.n_samples / config.sr
    if duration_s < min_duration_s(config):
        raise AudioTooShortError(f"audio is {duration_s:.2f} s long; key estimation needs at least "
                                 f"{min_duration_s(config):.2f} s", path, duration=duration_s,
                                 minimum=min_duration_s(config))
    tuning_part, tonality_parts = scan.excerpts[:n_tuning[0]], scan.excerpts[n_tuning[0]:]
    cents, compensate = _tuning_of(np.concatenate(tuning_part), config.sr, tuning)
    shift = cents if compensate else 0.0
    dc = np.float32(scan.mean)
    harmonic, contrast = _tonality_of_excerpts([part - dc for part in tonality_parts], config, device, shift)
    cqt_config = config
    if round(float(shift)):
        cqt_config = dataclasses.replace(config, fmin=tuned_fmin(config.fmin, round(float(shift))))
    magnitude = FileCQT(path, cqt_config, scan.peak, scan.n_samples, offset, duration, device)
    frames = None
    if chroma:   # a second pass, written in place: no list of parts and no joined copy
        frames = np.empty((12, magnitude.shape[-1]), np.float32)
        peak = np.float32(scan.peak)
        blocks = iter_audio_blocks(path, config.sr, block_seconds=10.0, offset=offset, duration=duration)
        for first, piece in chroma_stream((b / peak for b in blocks), config.sr, config.hop_length, shift, device):
            frames[:, first:first + piece.shape[-1]] = piece
    return KeyFeatures(magnitude, duration_s, config.frame_rate, path, cents, compensate,
                       harmonic, contrast, frames)


def frame_spans(magnitude, spans: Sequence[tuple[int, int]]) -> Iterable[np.ndarray]:
    """Frame ranges ``magnitude[:, a:b]`` for ``(a, b)`` in ``spans`` (non-decreasing starts),
    lazily; a :class:`~musicssl.dsp.cqt.FileCQT` is decoded once, chunk by chunk."""

    if isinstance(magnitude, FileCQT):
        return (window for _, window in cut_spans(magnitude.chunks(), spans))
    return (magnitude[:, a:b] for a, b in spans)
