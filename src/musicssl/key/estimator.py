"""Key estimation, layered: CQT features → probabilities → :class:`KeyResult`,
for audio arrays, files and many files.

* :func:`compute_features` (audio file or array → :class:`KeyFeatures`, the
  CQT magnitude) is the expensive, model-free part; it is picklable and runs
  in worker processes for folders.
* :meth:`KeyEstimator.estimate_features` batches the network over many
  feature sets and returns results.
* :meth:`KeyEstimator.estimate` / :meth:`estimate_file` chain the two.

Probabilities are always in the canonical 24-key order of
:data:`musicssl.keys.KEY_LABELS` (C major … B major, C minor … B minor).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from musicssl.errors import AudioTooShortError, CheckpointError, ConfigError
from musicssl.key import tonality
from musicssl.keys import KEY_LABELS, Key, format_key

#: Name of the shipped model that ``"default"`` means, when the package has it.
DEFAULT_MODEL = "skey-debian"
#: Template prior that ``"default"`` multiplies the shipped model's probabilities by
#: (see :func:`combine_with_prior`; README, "Key: accuracy", for the figures with and without it).
DEFAULT_PRIOR = "kostka-payne"
#: Temperatures (:func:`apply_temperature`) of shipped model × prior pairs, fitted by
#: minimum NLL on dev-synth (``benchmarks/key_calibration.py --fit-on dev-synth``): the
#: product of two experts is over-confident (ECE 11 % on dev-synth at T = 1, 3.7 % at 1.83;
#: on render24, not used in the fit, 23.7 % and 18.3 %).
FITTED_TEMPERATURES: dict[tuple[str, str | None], float] = {("skey-debian", "kostka-payne"): 1.83}
#: ``prior`` value that turns a spec's prior off (``"default"`` then means the network alone).
NO_PRIOR = "none"
#: Crop offsets whose outputs a :class:`KeyEstimator` averages by default (one per
#: pitch class; 1 = the SPEC's single crop at offset 0).
DEFAULT_TRANSPOSITIONS = 12


def shipped_key_models() -> dict[str, Path]:
    """Key models shipped inside the package: ``{name: path}``, e.g.
    ``{"skey-debian": .../data/models/skey_debian.safetensors}``."""
    folder = Path(str(resources.files("musicssl") / "data" / "models"))
    return {p.stem.replace("_", "-"): p for p in sorted(folder.glob("*.safetensors"))
            if p.stem.startswith(("skey", "stone"))}


def default_model_path() -> Path | None:
    """Path of the shipped default key model, or None if this build has none."""
    return shipped_key_models().get(DEFAULT_MODEL)


def model_names() -> tuple[str, ...]:
    """Every name :func:`load_estimator` accepts besides a checkpoint path
    (``CHECKPOINT+PROFILE`` works for paths too)."""
    from musicssl.key.templates import PROFILES

    shipped = tuple(shipped_key_models())
    return ("default", *shipped, *PROFILES, *(f"{m}+{p}" for m in shipped for p in PROFILES))


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"MODEL+PROFILE"`` → ``("MODEL", "PROFILE")``; a spec without a known
    profile after its last ``+`` (or an existing file) → ``(spec, None)``."""
    from musicssl.key.templates import PROFILES

    model, plus, profile = spec.rpartition("+")
    if plus and model and profile in PROFILES and not Path(spec).is_file():
        return model, profile
    return spec, None


def combine_with_prior(probabilities: np.ndarray, prior: np.ndarray, weight: float = 1.0) -> np.ndarray:
    """Product of experts over the last axis (24 keys): ``p · q^weight``, renormalised.

    ``probabilities``, ``prior``: ``(..., 24)``, non-negative, each summing to one.
    Computed in the log domain with a ``1e-12`` floor, so a zero in one expert only
    vetoes a key if the other one cannot outvote it.
    """
    if not weight >= 0:
        raise ConfigError(f"prior weight must be >= 0, got {weight}")
    return _normalise_log(_safe_log(probabilities) + weight * _safe_log(prior))


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``p^(1/temperature)`` renormalised over the last axis (24 keys); 1 returns ``p`` unchanged."""
    if temperature == 1.0:
        return probabilities
    return _normalise_log(_safe_log(probabilities) / temperature)


def _safe_log(p) -> np.ndarray:
    """``log(max(p, 1e-12))`` in float64."""
    return np.log(np.maximum(np.asarray(p, dtype=np.float64), 1e-12))


def _normalise_log(z: np.ndarray) -> np.ndarray:
    """``exp(z)`` normalised over the last axis (a softmax)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- results ---------------------------------------------------------------------

@dataclass
class LocalKey:
    """Key of one analysis window: ``start_s``/``end_s`` in seconds."""

    start_s: float
    end_s: float
    key: Key
    confidence: float
    probabilities: np.ndarray  # (24,) canonical order

    def to_dict(self, notation: str = "standard", probabilities: bool = False) -> dict:
        out = {"start": round(self.start_s, 3), "end": round(self.end_s, 3),
               "key": format_key(self.key, notation), "confidence": round(float(self.confidence), 6)}
        if probabilities:
            out["probabilities"] = probabilities_dict(self.probabilities)
        return out


@dataclass
class KeySegment:
    """A stretch of time over which the local key does not change."""

    start_s: float
    end_s: float
    key: Key

    def to_dict(self, notation: str = "standard") -> dict:
        return {"start": round(self.start_s, 3), "end": round(self.end_s, 3), "key": format_key(self.key, notation)}


@dataclass
class KeyResult:
    """Global key of a recording, its 24 probabilities and optional local keys.

    ``confidence`` is the top-1 minus the top-2 probability, in [0, 1].
    ``mode_estimated`` is False for key-signature-only (STONE) models.
    ``no_key``: the recording has no key (noise, percussion, silence; see
    :mod:`musicssl.key.tonality`); ``key`` is then still the most probable key,
    but records print ``"key": null`` with ``no_key_reason``.
    ``tuning_cents``: the recording's deviation from A = 440 Hz in cents (see
    :func:`compute_features`); None when not measured.
    """

    key: Key
    probabilities: np.ndarray  # (24,) canonical order
    confidence: float
    duration_s: float
    local: list[LocalKey] | None = None
    path: str | None = None
    mode_estimated: bool = True
    estimator: str = ""
    tuning_cents: float | None = None
    no_key_reason: str | None = None

    @property
    def no_key(self) -> bool:
        """True when the recording has no key (:attr:`no_key_reason` says why)."""
        return self.no_key_reason is not None

    @property
    def segments(self) -> list[KeySegment] | None:
        """Local windows merged into segments with boundaries where the key changes.

        Boundaries are placed halfway between the centres of consecutive
        windows that disagree.
        """
        if not self.local:
            return None
        segments: list[KeySegment] = []
        for i, window in enumerate(self.local):
            centre = (window.start_s + window.end_s) / 2
            if segments and segments[-1].key == window.key:
                continue
            if segments:
                previous = self.local[i - 1]
                boundary = ((previous.start_s + previous.end_s) / 2 + centre) / 2
                segments[-1].end_s = boundary
                segments.append(KeySegment(boundary, self.duration_s, window.key))
            else:
                segments.append(KeySegment(0.0, self.duration_s, window.key))
        return segments

    def top(self, k: int = 3) -> list[tuple[Key, float]]:
        """The ``k`` most probable keys with their probabilities."""
        order = np.argsort(-self.probabilities)[:k]
        return [(Key.from_index(int(i)), float(self.probabilities[i])) for i in order]

    def to_dict(self, notation: str = "standard", probabilities: bool = True, local: bool = True) -> dict:
        """JSON-ready dict: path, key, confidence, probabilities (24 mir_eval labels), local, segments."""
        out: dict = {}
        if self.path is not None:
            out["path"] = self.path
        out["key"] = None if self.no_key else format_key(self.key, notation)
        out["confidence"] = round(float(self.confidence), 6)
        if self.no_key:
            out["no_key"] = True
            out["no_key_reason"] = self.no_key_reason
        out["duration"] = round(float(self.duration_s), 3)
        if self.tuning_cents is not None:
            out["tuning_cents"] = round(float(self.tuning_cents), 1)
        if probabilities:
            out["probabilities"] = probabilities_dict(self.probabilities)
        if local and self.local is not None:
            out["local"] = [w.to_dict(notation) for w in self.local]
            out["segments"] = [s.to_dict(notation) for s in self.segments or []]
        return out


def probabilities_dict(probabilities: np.ndarray) -> dict[str, float]:
    """``{"C major": p, ..., "B minor": p}`` in canonical order."""
    return {label: round(float(p), 6) for label, p in zip(KEY_LABELS, probabilities)}


def result_from_probabilities(probabilities: np.ndarray, duration_s: float, **kwargs) -> KeyResult:
    """A :class:`KeyResult` for canonical ``probabilities`` (24,)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities)
    confidence = float(probabilities[order[0]] - probabilities[order[1]])
    return KeyResult(Key.from_index(int(order[0])), probabilities, confidence, float(duration_s), **kwargs)


# --- features ----------------------------------------------------------------------

@dataclass
class KeyFeatures:
    """CQT magnitude of one recording: ``magnitude`` float32 (n_bins, T), and its origin.

    ``tuning_cents``: the recording's tuning deviation (cents, None if not measured);
    ``tuning_compensated``: whether the CQT bins were moved by it. Tonality
    measurements (:mod:`musicssl.key.tonality`; None when not measured):
    ``harmonic_fraction`` in [0, 1], ``peak_contrast`` in dB.
    """

    magnitude: np.ndarray   # or a FileCQT (long files: frontend.cqt.FileCQT, read in pieces)
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
                     tuning: str | float = "compensate", chroma: bool = False,
                     stream: bool = True) -> KeyFeatures:
    """CQT magnitude of an audio file (``source`` a path) or of samples
    (``source`` an array, with its ``sr``). Model-free and picklable.

    ``offset``/``duration`` (seconds) select part of a file.
    ``tuning``: ``"compensate"`` estimates the tuning deviation
    (:func:`musicssl.frontend.tuning.estimate_tuning_cents`) and moves the CQT's
    reference frequency by it, so the bins sit on the recording's semitones;
    ``"report"`` estimates it without compensating; ``"off"`` does neither;
    a number is a known deviation in cents, compensated. ``chroma``: also
    librosa's ``chroma_cqt`` (36 bins per octave from C1, each frame scaled to a
    maximum of 1) at the front end's hop, for the template baselines.
    ``stream``: a file longer than :data:`STREAM_MIN_SECONDS` is never held whole
    (:func:`streamed_features`: ``magnitude`` is then a :class:`~musicssl.frontend.cqt.FileCQT`,
    which the estimators read chunk by chunk; ``np.asarray`` of it computes all of it);
    False: the whole waveform and CQT in memory.
    """
    from musicssl.frontend.audio import load_audio, prepare_audio
    from musicssl.frontend.cqt import FrontEndConfig

    config = frontend_config or FrontEndConfig()
    path = None
    if isinstance(source, (str, Path)):
        path = str(source)
        if stream and _header_seconds(source, offset, duration) > STREAM_MIN_SECONDS:
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
    frames = chroma_frames(samples, config, shift, magnitude.shape[-1]) if chroma else None
    return KeyFeatures(magnitude, duration_s, config.sr / config.hop_length, path, cents, compensate,
                       harmonic, contrast, frames)


def chroma_frames(samples: np.ndarray, frontend_config, tuning_cents: float, n_frames: int) -> np.ndarray:
    """librosa's ``chroma_cqt`` float32 ``(12, n_frames)`` of mono ``samples`` on the front
    end's frame grid (hop ``frontend_config.hop_length``), bins moved by ``tuning_cents``.
    Long inputs are transformed in chunks of about :data:`CQT_CHUNK_SECONDS` whose frames
    tile that grid (bounded memory)."""
    parts = [_chroma_chunk(samples[start:stop], frontend_config, tuning_cents, keep)
             for start, stop, keep in _chroma_grid(len(samples), frontend_config)]
    return _joined_chroma(parts, n_frames)


def _chroma_grid(n_samples: int, frontend_config) -> list[tuple[int, int, int | None]]:
    """``(start, stop, frames kept or None for all)`` of the chunks :func:`chroma_frames` transforms."""
    hop = frontend_config.hop_length
    chunk = max(1, int(CQT_CHUNK_SECONDS * frontend_config.sr) // hop) * hop
    starts = list(range(0, n_samples, chunk))
    if len(starts) > 1 and n_samples - starts[-1] < chunk // 4:   # no short tail: the last chunk runs on
        starts.pop()
    # a centred chunk has one frame too many: all but the last keep chunk // hop frames
    return [(start, n_samples if i == len(starts) - 1 else start + chunk,
             None if i == len(starts) - 1 else chunk // hop) for i, start in enumerate(starts)]


def _chroma_chunk(samples: np.ndarray, frontend_config, tuning_cents: float, keep: int | None) -> np.ndarray:
    """librosa's ``chroma_cqt`` (12, t) of one chunk of :func:`_chroma_grid`, its first ``keep`` frames."""
    import librosa

    # librosa's tuning is in fractions of its 36-per-octave bins (33.3 cents)
    c = librosa.feature.chroma_cqt(y=samples, sr=frontend_config.sr, hop_length=frontend_config.hop_length,
                                   tuning=tuning_cents * 36 / 1200.0)
    return c if keep is None else c[:, :keep]


def _joined_chroma(parts: list[np.ndarray], n_frames: int) -> np.ndarray:
    """Chunks of :func:`_chroma_chunk` → float32 (12, n_frames) (edge-padded or cut)."""
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
    samples = samples - np.float32(np.mean(samples, dtype=np.float64))
    return _tonality_of_excerpts(tonality.excerpts(samples, frontend_config.sr), frontend_config,
                                 device, tuning_cents)


def _tonality_of_excerpts(parts: Sequence[np.ndarray], frontend_config, device: str,
                          tuning_cents: float) -> tuple[float, float]:
    """:func:`tonality_measurements` of its excerpts (DC offset already removed)."""
    config = dataclasses.replace(frontend_config, hop_length=tonality.HOP_LENGTH)
    mags = [magnitude_cqt(part, config, device=device, tuning_cents=tuning_cents) for part in parts]
    return (tonality.harmonic_fraction(mags),
            tonality.peak_contrast(mags, config.sr / config.hop_length))


def _header_seconds(path, offset: float, duration: float | None) -> float:
    """Length (s) of the requested span of a file by its header, without decoding; 0 when
    the header does not say."""
    from musicssl.frontend.audio import iter_audio_blocks

    blocks = iter_audio_blocks(path, offset=offset, duration=duration)
    blocks.close()
    return blocks.expected_seconds() or 0.0


def streamed_features(path, frontend_config, *, device: str = "cpu", offset: float = 0.0,
                      duration: float | None = None, tuning: str | float = "compensate",
                      chroma: bool = False) -> KeyFeatures:
    """:func:`compute_features` of a long file without holding its samples or its CQT.

    One pass (:func:`~musicssl.frontend.audio.scan_audio`) finds length, peak and the
    excerpts that tuning and tonality look at; with ``chroma`` a second pass computes
    the chroma frames (12 values per frame, kept); ``magnitude`` is a
    :class:`~musicssl.frontend.cqt.FileCQT` that decodes the file again when read.
    Same values as the in-memory path up to float rounding (the DC offset removed
    before the tonality measurements is a float64 mean of the raw samples over the peak).
    """
    from musicssl.frontend.audio import iter_audio_blocks, scan_audio
    from musicssl.frontend.cqt import FileCQT
    from musicssl.frontend.tuning import tuned_fmin, tuning_excerpt_spans

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
    if chroma:   # written in place: no list of parts and no joined copy
        n_frames = magnitude.shape[-1]
        frames = np.empty((12, n_frames), np.float32)
        peak = np.float32(scan.peak)
        grid = iter(_chroma_grid(scan.n_samples, config))
        start, stop, keep = next(grid)
        held, position, filled = [], 0, 0
        for block in iter_audio_blocks(path, config.sr, block_seconds=10.0, offset=offset, duration=duration):
            block = block / peak
            while len(block):
                take = min(len(block), stop - position)
                held.append(block[:take])
                block, position = block[take:], position + take
                if position == stop:
                    part = _chroma_chunk(np.concatenate(held), config, shift, keep)[:, :n_frames - filled]
                    frames[:, filled:filled + part.shape[-1]] = part
                    filled += part.shape[-1]
                    held = []
                    start, stop, keep = next(grid, (stop, stop + 1, None))
        frames[:, filled:] = frames[:, filled - 1:filled]   # edge padding, as _joined_chroma
    return KeyFeatures(magnitude, duration_s, config.sr / config.hop_length, path, cents, compensate,
                       harmonic, contrast, frames)


def _tuning_of(samples: np.ndarray, sr: int, tuning: str | float) -> tuple[float | None, bool]:
    """(deviation in cents or None, whether to compensate) for a ``tuning`` setting."""
    from musicssl.frontend.tuning import check_tuning, estimate_tuning_cents

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
#: Files longer than this (s, by their header) are analysed without holding their samples
#: or CQT (:func:`compute_features`, ``stream``).
STREAM_MIN_SECONDS = 1200.0


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
    from musicssl.frontend.cqt import CQT

    c = frontend_config
    return CQT(sr=c.sr, hop_length=c.hop_length, fmin=c.fmin, n_bins=c.n_bins,
               bins_per_octave=c.bins_per_octave).to(device)


@torch.inference_mode()
def magnitude_cqt(samples: np.ndarray, frontend_config, device: str = "cpu",
                  tuning_cents: float = 0.0) -> np.ndarray:
    """CQT magnitude float32 ``(n_bins, T)`` of mono ``samples`` at ``frontend_config.sr``;
    long inputs are transformed in chunks with the same result. ``tuning_cents``
    (rounded to whole cents) moves every bin's frequency by that much."""
    from musicssl.frontend.cqt import cqt_chunked
    from musicssl.frontend.tuning import tuned_fmin

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


# --- the estimator -------------------------------------------------------------------

class KeyEstimator:
    """A calibrated ChromaNet key model (STONE, 24-STONE or S-KEY) ready to use.

    Build with :meth:`from_checkpoint`; the network runs on ``device``.
    Windows longer than ``max_window_s`` are analysed in pieces whose
    probabilities are averaged by duration (keeps memory bounded).

    ``transpositions``: the network sees the music at this many crop offsets
    (0, 1, … — each a transposition down by one semitone, SPEC §1.1) and its
    outputs, rotated back to the frame of offset 0, are averaged (transposition
    averaging: cancels what the network prefers in particular columns). ``1`` is
    the SPEC's inference (crop at offset 0 only); ``None``: :data:`DEFAULT_TRANSPOSITIONS`
    or as many as the front end allows. At most ``frontend_config.n_crops``
    (16 for the standard front end).

    ``prior``: a template profile (``"krumhansl"``, ``"temperley"``, ``"kostka-payne"``)
    whose probabilities, computed from the same CQT, multiply the network's
    (:func:`combine_with_prior`, exponent ``prior_weight``); ``None``: the network alone.
    24-key models only.

    ``temperature``: the final probabilities become ``p^(1/T)``, renormalised
    (:func:`apply_temperature`; 1 = unchanged): ranks stay, confidence is rescaled.
    """

    def __init__(self, model: torch.nn.Module, frontend_config, calibration: dict,
                 device: str = "cpu", name: str = "chromanet", max_window_s: float = 600.0,
                 transpositions: int | None = None, prior: str | None = None, prior_weight: float = 1.0,
                 temperature: float = 1.0, prior_chroma: str = "librosa"):
        from musicssl.key.calibration import validate_calibration
        from musicssl.key.templates import TemplateKeyEstimator

        self.model = model.to(device).eval()
        self.frontend_config = frontend_config
        self.calibration = validate_calibration(calibration, model.n_rows)
        self.device = device
        self.name = name
        self.max_window_s = max_window_s
        most = frontend_config.n_crops if frontend_config.bins_per_octave == 12 else 1
        if transpositions is None:
            transpositions = min(DEFAULT_TRANSPOSITIONS, most)
        if not 1 <= int(transpositions) <= most:
            raise ConfigError(f"transpositions must be between 1 and {most} for this front end "
                              f"({frontend_config.n_bins} bins, {frontend_config.bins_per_octave} per octave, "
                              f"crops of {frontend_config.crop_bins}), got {transpositions}")
        self.transpositions = int(transpositions)
        #: report "no key" (:mod:`musicssl.key.tonality`); False: always name a key
        self.detect_no_key = True
        #: keyword arguments of :func:`compute_features` this estimator needs
        self.feature_options: dict = {}
        if not (np.isfinite(temperature) and temperature > 0):
            raise ConfigError(f"temperature must be a positive number, got {temperature}")
        self.temperature = float(temperature)
        self.prior = prior
        self.prior_weight = float(prior_weight)
        self._prior_estimator = None
        if prior is not None:
            if self.calibration["n_rows"] != 2:
                raise ConfigError(f"a template prior needs a 24-key model; {name} predicts key signatures only")
            if not self.prior_weight >= 0:
                raise ConfigError(f"prior weight must be >= 0, got {prior_weight}")
            self._prior_estimator = TemplateKeyEstimator(prior, frontend_config=frontend_config, device=device,
                                                         chroma=prior_chroma)
            self.feature_options = dict(self._prior_estimator.feature_options)

    @classmethod
    def from_checkpoint(cls, path: str | Path | None = None, device: str = "cpu",
                        transpositions: int | None = None, prior: str | None = None,
                        backend: str | None = None) -> "KeyEstimator":
        """Load a project checkpoint, a released S-KEY/STONE ``.pt`` or an exported ``.onnx``;
        ``None`` loads the shipped default model (without a prior: see :func:`load_estimator`).

        Uncalibrated checkpoints (e.g. the released ``.pt``) are calibrated on load.
        ``backend``: ``"torch"`` or ``"onnx"`` (onnxruntime; a torch checkpoint is
        exported once and cached); ``None``: as the file is.
        """
        from musicssl.checkpoint import check_backend, key_onnx_network, load_key_model

        if path is None:
            path = default_model_path()
            if path is None:
                raise CheckpointError("this build ships no default key model; pass a checkpoint path")
        loaded = load_key_model(path)
        calibration = loaded.calibration
        if calibration is None:
            calibration = _cached_calibration(Path(path), loaded, device)
        model = loaded.model
        if check_backend(path, backend) == "onnx":
            model = key_onnx_network(path, loaded, calibration)
        name = Path(path).name if prior is None else f"{Path(path).name}+{prior}"
        return cls(model, loaded.frontend_config, calibration, device, name=name,
                   transpositions=transpositions, prior=prior)

    # --- layer 1: spectrogram -> probabilities
    @torch.inference_mode()
    def native_probabilities(self, logcqt: torch.Tensor) -> np.ndarray:
        """Network outputs for log-CQT ``(B, 1, F, T)`` (all bins): ``(B, 12 * n_rows)``,
        in the column frame of crop offset 0, averaged over :attr:`transpositions` crops."""
        from musicssl.frontend.cqt import crop_bins

        x = logcqt.to(self.device)
        offsets = range(self.transpositions)
        if hasattr(self.model, "forward_crops"):        # ChromaNet: crops batched, bounded memory
            crops = self.model.forward_crops(x, offsets).float().unbind(1)
        else:                                           # e.g. the ONNX network: one crop at a time
            crops = [self.model(crop_bins(x, o, self.frontend_config.crop_bins)).float() for o in offsets]
        total = None
        for offset, out in zip(offsets, crops):
            # crop offset o shows the music o semitones lower: column c + o of offset 0 is column c here
            out = out.reshape(out.shape[0], -1, 12).roll(offset, dims=-1).flatten(1)
            total = out if total is None else total + out
        return (total / self.transpositions).cpu().numpy()

    def network_probabilities(self, logcqt: torch.Tensor) -> np.ndarray:
        """The network's canonical probabilities ``(B, 24)`` for log-CQT ``(B, 1, F, T)`` (no prior)."""
        from musicssl.key.calibration import to_canonical

        return to_canonical(self.native_probabilities(logcqt), self.calibration)

    def probabilities(self, logcqt: torch.Tensor, chromas: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Canonical probabilities ``(B, 24)`` for log-CQT ``(B, 1, F, T)``, times the template
        prior's when the estimator has one; a librosa-chroma prior (the default) reads
        ``chromas`` (B × ``(12, T)``, :attr:`KeyFeatures.chroma`)."""
        prior = None
        if self._prior_estimator is not None:
            prior = self._prior_estimator.prior_probabilities(logcqt, chromas)
        network = self.network_probabilities(logcqt)
        if prior is not None:
            network = combine_with_prior(network, prior, self.prior_weight)
        return apply_temperature(network, self.temperature)

    def _window_probabilities(self, magnitudes: Sequence[np.ndarray],
                              chromas: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Canonical probabilities ``(len, 24)`` for CQT magnitudes of equal length (and,
        for a librosa-chroma prior, their chroma frames ``(12, T)``)."""
        from musicssl.frontend.cqt import log_compress

        batch = torch.as_tensor(np.stack([loop_to_min_frames(m) for m in magnitudes]))[:, None]
        return self.probabilities(log_compress(batch.to(self.device), self.frontend_config.top_db), chromas)

    def _track_probabilities(self, magnitude: np.ndarray, chroma: np.ndarray | None = None) -> np.ndarray:
        """Canonical probabilities (24,) of a whole track, in bounded pieces if long."""
        fps = self.frontend_config.sr / self.frontend_config.hop_length
        max_frames = int(self.max_window_s * fps)
        n = magnitude.shape[-1]
        pieces = int(np.ceil(n / max_frames))
        bounds = np.linspace(0, n, pieces + 1).astype(int)
        spans = list(zip(bounds[:-1], bounds[1:]))
        total = np.zeros(24)
        for (a, b), window in zip(spans, frame_spans(magnitude, spans)):
            part = None if chroma is None else chroma[:, a:b]
            total += (b - a) * self._window_probabilities([window], [part])[0]
        return total / n

    # --- layer 2: features -> results (batched)
    def estimate_features(self, features: Sequence[KeyFeatures], local: bool = False,
                          window_s: float = 20.0, hop_s: float = 5.0) -> list[KeyResult]:
        """Results for many feature sets; equal-length inputs share one network batch."""
        results: list[KeyResult | None] = [None] * len(features)
        by_length: dict[int, list[int]] = {}
        for i, f in enumerate(features):
            by_length.setdefault(f.magnitude.shape[-1], []).append(i)
        fps_limit = int(self.max_window_s * self.frontend_config.sr / self.frontend_config.hop_length)
        for length, indices in by_length.items():
            chromas = [features[i].chroma for i in indices]
            if length <= fps_limit and all(isinstance(features[i].magnitude, np.ndarray) for i in indices):
                probs = self._window_probabilities([features[i].magnitude for i in indices], chromas)
            else:
                probs = np.stack([self._track_probabilities(features[i].magnitude, features[i].chroma)
                                  for i in indices])
            for i, p in zip(indices, probs):
                f = features[i]
                results[i] = result_from_probabilities(
                    p, f.duration_s, path=f.path, estimator=self.name, tuning_cents=f.tuning_cents,
                    mode_estimated=self.calibration["n_rows"] == 2,
                    local=self.local_keys(f, window_s, hop_s) if local else None,
                    no_key_reason=f.no_key_reason if self.detect_no_key else None)
        return results  # type: ignore[return-value]

    def local_keys(self, features: KeyFeatures, window_s: float = 20.0, hop_s: float = 5.0) -> list[LocalKey]:
        """Keys of overlapping windows (``window_s`` long, every ``hop_s`` seconds);
        each window is log-compressed on its own, as in training."""
        if not self.feature_options.get("chroma"):
            return local_keys_of(features, self._window_probabilities, window_s, hop_s)
        # windows of the CQT and of its chroma frames cut together
        return local_keys_of(features, self._window_probabilities, window_s, hop_s, with_chroma=True)

    # --- layer 3: audio / files
    def estimate(self, samples: np.ndarray, sr: int, local: bool = False,
                 window_s: float = 20.0, hop_s: float = 5.0) -> KeyResult:
        """Key of ``samples`` ((n,) or (n, channels)) at rate ``sr``."""
        features = compute_features(samples, self.frontend_config, sr=sr, device=self.device,
                                    **self.feature_options)
        return self.estimate_features([features], local, window_s, hop_s)[0]

    def estimate_file(self, path: str | Path, local: bool = False,
                      window_s: float = 20.0, hop_s: float = 5.0) -> KeyResult:
        """Key of an audio file."""
        features = compute_features(path, self.frontend_config, device=self.device, **self.feature_options)
        return self.estimate_features([features], local, window_s, hop_s)[0]

    def estimate_files(self, paths: Iterable[str | Path], **kwargs) -> Iterable[tuple[str, KeyResult | Exception]]:
        """``(path, result or the error)`` for each file, in order; never raises for one bad file."""
        from musicssl.errors import MusicsslError

        for path in paths:
            try:
                yield str(path), self.estimate_file(path, **kwargs)
            except MusicsslError as exc:
                yield str(path), exc


def _calibration_cache_dir() -> Path:
    from musicssl.checkpoint import cache_dir

    return cache_dir("calibration")


def _cached_calibration(path: Path, loaded, device: str) -> dict:
    """Calibrate an uncalibrated checkpoint once; the result is cached by file hash."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = _calibration_cache_dir() / f"{digest}.json"
    try:
        return json.loads(cache.read_text())
    except (OSError, ValueError):
        pass
    calibration = calibrate_model(loaded.model, loaded.frontend_config, device)
    try:
        from musicssl.outputs import atomic_write_text

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache, json.dumps(calibration))
    except OSError:
        pass  # a read-only cache only costs time
    return calibration


def local_keys_of(features: KeyFeatures, window_probabilities, window_s: float = 20.0,
                  hop_s: float = 5.0, with_chroma: bool = False) -> list[LocalKey]:
    """Local keys of ``features`` for any estimator: ``window_probabilities(list of
    equal-length CQT magnitudes (F, win)) -> (len, 24)`` scores each window
    (``with_chroma``: ``window_probabilities(magnitudes, chromas (12, win))``).

    Windows are ``window_s`` long every ``hop_s`` seconds, the last one flush
    with the end; a track shorter than one window gives one window over all of it.
    A :class:`~musicssl.frontend.cqt.FileCQT` magnitude is read chunk by chunk.
    """
    from musicssl.errors import ConfigError

    if window_s <= 0 or hop_s <= 0:
        raise ConfigError("window and hop must be positive")
    fps = features.frames_per_second
    n = features.magnitude.shape[-1]
    win = min(n, max(1, int(round(window_s * fps))))
    hop = max(1, int(round(hop_s * fps)))
    starts = list(range(0, n - win + 1, hop))
    if starts[-1] + win < n:  # cover the end
        starts.append(n - win)
    windows = frame_spans(features.magnitude, [(s, s + win) for s in starts])
    probs = []
    for i in range(0, len(starts), 64):
        group = [next(windows) for _ in starts[i:i + 64]]
        if with_chroma:
            probs.append(window_probabilities(group, [features.chroma[:, s:s + win] for s in starts[i:i + 64]]))
        else:
            probs.append(window_probabilities(group))
    probs = np.concatenate(probs)
    out = []
    for s, p in zip(starts, probs):
        r = result_from_probabilities(p, 0.0)
        out.append(LocalKey(s / fps, (s + win) / fps, r.key, r.confidence, p))
    return out


def frame_spans(magnitude, spans: Sequence[tuple[int, int]]) -> Iterable[np.ndarray]:
    """Frame ranges ``magnitude[:, a:b]`` for ``(a, b)`` in ``spans`` (non-decreasing starts),
    lazily; a :class:`~musicssl.frontend.cqt.FileCQT` is decoded once, chunk by chunk."""
    from musicssl.frontend.cqt import FileCQT, cut_spans

    if isinstance(magnitude, FileCQT):
        return (window for _, window in cut_spans(magnitude.chunks(), spans))
    return (magnitude[:, a:b] for a, b in spans)


def calibrate_model(model: torch.nn.Module, frontend_config, device: str = "cpu") -> dict:
    """Calibrate ``model`` (SPEC §1.6) with the package's reference signals."""
    from musicssl.frontend.cqt import crop_bins, log_compress
    from musicssl.key.calibration import calibrate

    model = model.to(device).eval()

    @torch.inference_mode()
    def native(batch: np.ndarray, sr: int) -> np.ndarray:
        mags = np.stack([magnitude_cqt(x, frontend_config, device=device) for x in batch])
        logcqt = log_compress(torch.as_tensor(mags)[:, None].to(device), frontend_config.top_db)
        return model(crop_bins(logcqt, 0, frontend_config.crop_bins)).float().cpu().numpy()

    return calibrate(native, frontend_config.sr)


def load_estimator(spec: str | Path | None = "default", device: str = "cpu",
                   transpositions: int | None = None, prior: str | None = None, backend: str | None = None):
    """An estimator from a spec: ``"default"``, a shipped model's name (see
    :func:`shipped_key_models`), a template (``"krumhansl"``, ``"temperley"``,
    ``"kostka-payne"``) or a checkpoint path; a network spec may end in
    ``+PROFILE`` (e.g. ``"skey-debian+temperley"``) for a template prior
    (:class:`KeyEstimator`). Every estimator has
    ``estimate``/``estimate_file``/``estimate_features``. ``transpositions``
    applies to network models; templates ignore it.

    ``"default"`` is the shipped ``skey-debian`` model with the
    :data:`DEFAULT_PRIOR` template prior when the package has the model, else the
    Krumhansl template baseline (with a warning). ``prior`` overrides the spec's:
    a profile name, or ``"none"`` for the network alone. ``backend`` (``"torch"``,
    ``"onnx"``, None: as the file is) runs network models on torch or onnxruntime.
    """
    from musicssl.key.templates import PROFILES, TemplateKeyEstimator

    name, spec_prior = split_spec("default" if spec is None else str(spec))
    if prior is not None and prior != NO_PRIOR and prior not in PROFILES:
        raise ConfigError(f"prior must be one of {', '.join((NO_PRIOR, *PROFILES))}, got {prior!r}")
    if name in PROFILES:
        if spec_prior is not None or prior not in (None, NO_PRIOR):
            raise ConfigError(f"{spec}: a template prior applies to network models, not to a template")
        return TemplateKeyEstimator(name, device=device, chroma="librosa")
    if name == "default":
        if default_model_path() is None:
            warnings.warn("no trained key model is good enough to be the default yet (see README); "
                          "using the Krumhansl template baseline",
                          stacklevel=2)
            return TemplateKeyEstimator("krumhansl", chroma="librosa")
        name, spec_prior = DEFAULT_MODEL, spec_prior or DEFAULT_PRIOR
    chosen = spec_prior if prior is None else (None if prior == NO_PRIOR else prior)
    shipped = shipped_key_models()
    if name in shipped:
        estimator = KeyEstimator.from_checkpoint(shipped[name], device, transpositions, prior=chosen,
                                                 backend=backend)
        estimator.name = name if chosen is None else f"{name}+{chosen}"
        estimator.temperature = FITTED_TEMPERATURES.get((name, chosen), 1.0)
        return estimator
    path = Path(name)
    if not path.is_file():
        raise CheckpointError(f"{spec}: no such checkpoint or model name (names: {', '.join(model_names())})")
    return KeyEstimator.from_checkpoint(path, device, transpositions, prior=chosen, backend=backend)
