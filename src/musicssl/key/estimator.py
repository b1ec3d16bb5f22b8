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
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from musicssl.dsp.cqt import (
    FrontEndConfig,
    amplitude_to_db,
    compress_db,
    crop_bins,
    log_compress,
)
from musicssl.errors import CheckpointError, ConfigError, MusicsslError
from musicssl.io.model_file import check_backend
from musicssl.key.calibration import (
    cached_calibration,
    to_canonical,
    validate_calibration,
)
from musicssl.key.checkpoint import default_model_path, key_onnx_network, load_key_model
from musicssl.key.features import (
    KeyFeatures,
    compute_features,
    frame_spans,
    loop_to_min_frames,
)
from musicssl.key.results import (
    KeyResult,
    LocalKey,
    local_keys_of,
    result_from_probabilities,
)
from musicssl.key.templates import (
    CHROMA_SCALES,
    CHROMA_SOURCES,
    DEFAULT_TEMPERATURE,
    chroma_from_cqt,
    correlation_scores,
    key_templates,
    scores_to_probabilities,
)
from musicssl.keys import pitch_class_of_frequency

#: Crop offsets whose outputs a :class:`KeyEstimator` averages by default (one per
#: pitch class; 1 = the SPEC's single crop at offset 0).
DEFAULT_TRANSPOSITIONS = 12


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


# --- features ----------------------------------------------------------------------


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
                 temperature: float = 1.0, prior_chroma: str = "chroma"):
        from musicssl.key.estimator import TemplateKeyEstimator

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

        if path is None:
            path = default_model_path()
            if path is None:
                raise CheckpointError("this build ships no default key model; pass a checkpoint path")
        loaded = load_key_model(path)
        calibration = loaded.calibration
        if calibration is None:
            calibration = cached_calibration(Path(path), loaded, device)
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

        return to_canonical(self.native_probabilities(logcqt), self.calibration)

    def probabilities(self, logcqt: torch.Tensor, chromas: Sequence[np.ndarray] | None = None,
                      magnitudes: np.ndarray | None = None) -> np.ndarray:
        """Canonical probabilities ``(B, 24)`` for log-CQT ``(B, 1, F, T)``, times the template
        prior's when the estimator has one; a chroma prior (the default) reads
        ``chromas`` (B × ``(12, T)``, :attr:`KeyFeatures.chroma`), a CQT-chroma prior the
        linear ``magnitudes`` ``(B, F, T)`` when given (else the log-CQT, decompressed)."""
        prior = None
        if self._prior_estimator is not None:
            prior = self._prior_estimator.prior_probabilities(logcqt, chromas, magnitudes)
        network = self.network_probabilities(logcqt)
        if prior is not None:
            network = combine_with_prior(network, prior, self.prior_weight)
        return apply_temperature(network, self.temperature)

    def _window_probabilities(self, magnitudes: Sequence[np.ndarray],
                              chromas: Sequence[np.ndarray] | None = None) -> np.ndarray:
        """Canonical probabilities ``(len, 24)`` for CQT magnitudes of equal length (and,
        for a chroma prior, their chroma frames ``(12, T)``)."""

        linear = np.stack([loop_to_min_frames(m) for m in magnitudes])
        logcqt = log_compress(torch.as_tensor(linear)[:, None].to(self.device), self.frontend_config.top_db)
        return self.probabilities(logcqt, chromas, linear)

    def _track_probabilities(self, magnitude: np.ndarray, chroma: np.ndarray | None = None) -> np.ndarray:
        """Canonical probabilities (24,) of a whole track, in bounded pieces if long."""
        fps = self.frontend_config.frame_rate
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
        fps_limit = int(self.max_window_s * self.frontend_config.frame_rate)
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

        for path in paths:
            try:
                yield str(path), self.estimate_file(path, **kwargs)
            except MusicsslError as exc:
                yield str(path), exc


def _require_chroma(chroma: np.ndarray | None) -> np.ndarray:
    """``chroma`` frames, or a ``ConfigError`` saying how to get them."""
    if chroma is None:
        raise ConfigError("these estimates read chroma: compute the features with "
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
        if scale not in CHROMA_SCALES:
            raise ConfigError(f"chroma scale must be one of {CHROMA_SCALES}, got {scale!r}")
        if chroma not in CHROMA_SOURCES:
            raise ConfigError(f"chroma source must be one of {CHROMA_SOURCES}, got {chroma!r}")
        self.chroma_source = chroma
        #: keyword arguments of :func:`~musicssl.key.estimator.compute_features` this estimator needs
        self.feature_options = {"chroma": True} if chroma == "chroma" else {}
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
        return pitch_class_of_frequency(self.frontend_config.fmin)

    def chroma(self, magnitude: np.ndarray) -> np.ndarray:
        """Chroma ``(..., 12)`` of CQT magnitude ``(..., n_bins, T)`` (linear, any scale)."""
        magnitude = np.asarray(magnitude, dtype=np.float64)
        if self.scale == "log":
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

    def prior_probabilities(self, logcqt, chromas: Sequence[np.ndarray | None] | None,
                            magnitudes: np.ndarray | None = None) -> np.ndarray:
        """Canonical probabilities ``(B, 24)`` as a network's prior: from the log-CQT
        ``(B, 1, F, T)`` it reads (or its linear ``magnitudes`` ``(B, F, T)`` when given), or,
        with chroma, from ``chromas`` (B × ``(12, T)``)."""
        if self.chroma_source == "cqt":
            if magnitudes is not None:          # the linear CQT itself, not the log-CQT decompressed
                return self.probabilities_from_magnitude(magnitudes)
            return self.probabilities(logcqt)
        return np.stack([self.probabilities_from_chroma(_require_chroma(c)) for c in chromas or [None]])

    def _feature_probabilities(self, features) -> np.ndarray:
        if self.chroma_source == "chroma":
            return self.probabilities_from_chroma(_require_chroma(features.chroma))
        return self.probabilities_from_magnitude(np.asarray(features.magnitude))   # a FileCQT: computed whole

    def local_keys(self, features, window_s: float = 20.0, hop_s: float = 5.0) -> list:
        """Keys of overlapping windows ``window_s`` long every ``hop_s`` seconds."""

        if self.chroma_source == "chroma":
            frames = dataclasses.replace(features, magnitude=_require_chroma(features.chroma))
            return local_keys_of(frames, lambda windows: self.probabilities_from_chroma(np.stack(windows)),
                                 window_s, hop_s)
        return local_keys_of(features, lambda windows: self.probabilities_from_magnitude(np.stack(windows)),
                             window_s, hop_s)

    # --- layer 3: audio / files
    def estimate(self, samples: np.ndarray, sr: int, local: bool = False,
                 window_s: float = 20.0, hop_s: float = 5.0):
        """Key of ``samples`` ((n,) or (n, channels)) at rate ``sr``."""

        features = compute_features(samples, self.frontend_config, sr=sr, device=self.device,
                                    **self.feature_options)
        return self.estimate_features([features], local, window_s, hop_s)[0]

    def estimate_file(self, path: str | Path, local: bool = False,
                      window_s: float = 20.0, hop_s: float = 5.0):
        """Key of an audio file."""

        features = compute_features(path, self.frontend_config, device=self.device, **self.feature_options)
        return self.estimate_features([features], local, window_s, hop_s)[0]
