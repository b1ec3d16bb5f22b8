"""Audio → key features (:class:`KeyFeatures`): the CQT magnitude of the key front end
``(n_bins, T)``, with tuning compensation, optional librosa chroma ``(12, T)`` and the
"no key" measurements. Model-free and picklable: runs in worker processes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from musicssl.dsp.cqt import CQT, FrontEndConfig, cqt_chunked
from musicssl.dsp.tuning import check_tuning, estimate_tuning_cents, tuned_fmin
from musicssl.errors import AudioTooShortError
from musicssl.io.audio import load_audio, prepare_audio
from musicssl.key import tonality


@dataclass
class KeyFeatures:
    """CQT magnitude of one recording: ``magnitude`` float32 (n_bins, T), and its origin.

    ``tuning_cents``: the recording's tuning deviation (cents, None if not measured);
    ``tuning_compensated``: whether the CQT bins were moved by it. Tonality
    measurements (:mod:`musicssl.key.tonality`; None when not measured):
    ``harmonic_fraction`` in [0, 1], ``peak_contrast`` in dB.
    """

    magnitude: np.ndarray
    duration_s: float
    frames_per_second: float
    path: str | None = None
    tuning_cents: float | None = None
    tuning_compensated: bool = False
    harmonic_fraction: float | None = None
    peak_contrast: float | None = None
    #: librosa's ``chroma_cqt`` (12, T') at the same hop, when asked for (template baselines)
    chroma: np.ndarray | None = None

    @property
    def no_key_reason(self) -> str | None:
        """Why this recording has no key, or None (:func:`musicssl.key.tonality.no_key_reason`)."""
        return tonality.no_key_reason(self.harmonic_fraction, self.peak_contrast)


def compute_features(source, frontend_config=None, *, sr: int | None = None,
                     device: str = "cpu", offset: float = 0.0, duration: float | None = None,
                     tuning: str | float = "compensate", chroma: bool = False) -> KeyFeatures:
    """CQT magnitude of an audio file (``source`` a path) or of samples
    (``source`` an array, with its ``sr``). Model-free and picklable.

    ``offset``/``duration`` (seconds) select part of a file.
    ``tuning``: ``"compensate"`` estimates the tuning deviation
    (:func:`musicssl.dsp.tuning.estimate_tuning_cents`) and moves the CQT's
    reference frequency by it, so the bins sit on the recording's semitones;
    ``"report"`` estimates it without compensating; ``"off"`` does neither;
    a number is a known deviation in cents, compensated. ``chroma``: also
    librosa's ``chroma_cqt`` (36 bins per octave from C1, each frame scaled to a
    maximum of 1) at the front end's hop, for the template baselines.
    """

    config = frontend_config or FrontEndConfig()
    path = None
    if isinstance(source, (str, Path)):
        path = str(source)
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
    frames = chroma_frames(samples, config, shift, magnitude.shape[-1]) if chroma else None
    return KeyFeatures(magnitude, duration_s, config.frame_rate, path, cents, compensate,
                       harmonic, contrast, frames)


def chroma_frames(samples: np.ndarray, frontend_config, tuning_cents: float, n_frames: int) -> np.ndarray:
    """librosa's ``chroma_cqt`` float32 ``(12, n_frames)`` of mono ``samples`` on the front
    end's frame grid (hop ``frontend_config.hop_length``), bins moved by ``tuning_cents``.
    Long inputs are transformed in chunks of about :data:`CQT_CHUNK_SECONDS` whose frames
    tile that grid (bounded memory)."""
    import librosa

    hop = frontend_config.hop_length
    chunk = max(1, int(CQT_CHUNK_SECONDS * frontend_config.sr) // hop) * hop
    starts = list(range(0, len(samples), chunk))
    if len(starts) > 1 and len(samples) - starts[-1] < chunk // 4:   # no short tail: the last chunk runs on
        starts.pop()
    parts = []
    for i, start in enumerate(starts):
        last = i == len(starts) - 1
        stop = len(samples) if last else start + chunk
        # librosa's tuning is in fractions of its 36-per-octave bins (33.3 cents)
        c = librosa.feature.chroma_cqt(y=samples[start:stop], sr=frontend_config.sr, hop_length=hop,
                                       tuning=tuning_cents * 36 / 1200.0)
        parts.append(c if last else c[:, :chunk // hop])   # a centred chunk has one frame too many
    frames = np.concatenate(parts, axis=1)
    if frames.shape[-1] < n_frames:
        frames = np.pad(frames, ((0, 0), (0, n_frames - frames.shape[-1])), mode="edge")
    return frames[:, :n_frames].astype(np.float32)


def tonality_measurements(samples: np.ndarray, frontend_config, device: str = "cpu",
                          tuning_cents: float = 0.0) -> tuple[float, float]:
    """``(harmonic fraction, peak contrast in dB)`` of mono ``samples`` at ``frontend_config.sr``
    (:mod:`musicssl.key.tonality`): a CQT at the measurements' own hop (bins moved by
    ``tuning_cents``) of the samples without their constant (DC) offset, on at most
    :data:`~musicssl.key.tonality.MAX_EXCERPTS` excerpts."""
    config = dataclasses.replace(frontend_config, hop_length=tonality.HOP_LENGTH)
    samples = samples - np.float32(np.mean(samples, dtype=np.float64))
    mags = [magnitude_cqt(part, config, device=device, tuning_cents=tuning_cents)
            for part in tonality.excerpts(samples, config.sr)]
    return (tonality.harmonic_fraction(mags),
            tonality.peak_contrast(mags, config.frame_rate))


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
