"""Beat estimators: audio -> beat activation -> beats.

* :class:`OnsetBeatEstimator` (the default of ``musicssl beats``): onset
  strength (:mod:`musicssl.beat.onset`), no model, decoded with the DBN and
  a tempo prior. It is the best tracker the project has while the ZeroNS
  model trained here is weaker (``benchmarks/beat_eval.py``).
* :class:`BeatEstimator` (Zero-Note Samba): percussive / non-percussive VQT
  -> both ZeroNS networks -> their outputs combined frame by frame (maximum,
  or mean).

Both decode with the project's DBN (:mod:`musicssl.beat.dbn`, default) or
librosa's dynamic-programming tracker run on the activation, and share the
audio -> file API. All times are seconds; activations have 62.5 frames/s
(frame ``t`` at ``t / 62.5`` s).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

from musicssl.beat.checkpoint import load_zerons_model, zerons_onnx_network
from musicssl.beat.dbn import DBNBeatTracker
from musicssl.beat.meter import MeterFrames, meter_frames, number_beats, parse_meter
from musicssl.beat.frontend import FPS, SAMPLE_RATE, ZeroNSFrontEnd, vqt_features
from musicssl.beat.model import COMBINE_MODES, ZeroNS, combine_activations, standardize
from musicssl.beat.onset import ONSET_DBN_PARAMS, onset_envelope, onset_envelope_of_file
from musicssl.beat.separation import (
    Separator,
    get_separator,
    separator_from_description,
)
from musicssl.errors import AudioTooShortError, CheckpointError, ConfigError
from musicssl.io.audio import is_long, load_audio, prepare_audio
from musicssl.io.model_file import check_backend

DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "models" / "zerons_default.safetensors"
TRACKERS = ("dbn", "librosa")
MIN_SECONDS = 1.0  # shortest input worth decoding

# --------------------------------------------------------------------------
# decoders
# --------------------------------------------------------------------------
def track_beats(activation: np.ndarray, fps: float = FPS, tracker: str = "dbn",
                **params) -> tuple[np.ndarray, float | None]:
    """Beat times (s) ``(n,)`` and tempo (BPM or None) from an activation ``(T,)`` in [0, 1].

    ``tracker="dbn"``: the project DBN (``params``: min_bpm, max_bpm,
    transition_lambda, ...); ``"librosa"``: ``librosa.beat.beat_track`` with
    the activation as onset envelope (``params``: start_bpm, tightness).
    """
    act = np.asarray(activation).reshape(-1)
    if tracker == "dbn":  # the DBN takes float32 as it is: no (T,) float64 copy of a long activation
        res = DBNBeatTracker(fps=fps, **params).decode(act)
        return np.asarray(res.beats, dtype=np.float64), res.tempo
    if tracker == "librosa":
        import librosa

        act = act.astype(np.float64)
        if act.size < 2 or float(act.std()) < 1e-6:  # librosa's DP crashes on a flat envelope
            return np.zeros(0), None
        hop = 512
        sr = fps * hop  # librosa only needs sr / hop = fps
        tempo, frames = librosa.beat.beat_track(onset_envelope=act, sr=sr, hop_length=hop,
                                                units="frames", **params)
        beats = np.asarray(frames, dtype=np.float64) / fps
        bpm = float(np.atleast_1d(tempo)[0])
        return beats, (bpm if bpm > 0 and len(beats) else None)
    raise ConfigError(f"unknown tracker {tracker!r}; choose one of {', '.join(TRACKERS)}")


def polarity_reference(bpm: float = 100.0, seconds: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """Calibration signal, 16 kHz ``(N,)``, and its beat times: a kick + noise hit on every
    beat over sustained tones that change every four beats."""
    rng = np.random.default_rng(0)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(int(0.12 * SAMPLE_RATE)) / SAMPLE_RATE
    hit = (np.sin(2 * np.pi * (50 * t + 3.3 * (1 - np.exp(-30 * t)))) * np.exp(-25 * t)
           + 0.5 * rng.standard_normal(len(t)) * np.exp(-40 * t))
    beats = np.arange(0.5, seconds - 0.2, 60.0 / bpm)
    drums = np.zeros(n)
    for b in beats:
        s0 = int(b * SAMPLE_RATE)
        m = min(len(hit), n - s0)
        drums[s0:s0 + m] += hit[:m]
    tt = np.arange(n) / SAMPLE_RATE
    bar = 4 * 60.0 / bpm
    roots = np.array([220.0, 196.0, 174.6, 246.9])[((tt - 0.5).clip(0) // bar).astype(int) % 4]
    tones = sum(np.sin(2 * np.pi * h * roots * tt) / h for h in (1, 2, 3))
    x = 0.5 * drums / np.abs(drums).max() + 0.3 * tones / np.abs(tones).max()
    return (x / np.abs(x).max()).astype(np.float32), beats


#: How a pretext-trained model is read (stored in the model file at export): the mean of
#: the two calibrated outputs, min-max rescaled, decoded by the DBN with the onset
#: settings (log-normal tempo prior at 120 BPM). Chosen on an annotated draw of band
#: renders (docs/MODEL_CARD_zerons.md): the SPEC DBN without the prior halved or
#: doubled the tempo of many songs.
PRETEXT_READOUT = {"combine": "mean", "rescale": True, "tracker_params": dict(ONSET_DBN_PARAMS)}


def reference_features(estimator: "BeatEstimator") -> tuple:
    """``estimator``'s network inputs (percussive, non-percussive features) for the signal of
    :func:`polarity_reference`: what :func:`calibrate_polarity` and :func:`calibrate_lag` read."""
    return estimator.features(*estimator.separate(polarity_reference()[0]))


def calibrate_polarity(estimator: "BeatEstimator", features: tuple | None = None) -> dict[str, int]:
    """Sign of the networks' response to beats (+1: peaks at beats, -1: dips), one for both.

    A time-centred pretext loss cannot tell the outputs from their mirror images
    ``1 - y``, but it flips both together: its positive pairs make the two
    outputs of a clip positively correlated. So one sign is measured, on the
    percussive output's response to the kicks of :func:`polarity_reference`, and
    given to both. (The non-percussive output's response to that signal's
    sustained tones is no guide: measured alone, it came out negative for some
    checkpoints of one run and not for others, and the mean of two outputs of
    opposite signs has no beat left; docs/MODEL_CARD_zerons.md.) ``features``: the
    reference's :func:`reference_features`, when already computed.
    """
    _, beats = polarity_reference()
    p, _ = estimator.network_outputs(*(features if features is not None else reference_features(estimator)))
    frames = np.round(beats * FPS).astype(int)
    near = np.unique(np.clip(np.concatenate([frames + d for d in (-1, 0, 1, 2)]), 0, len(p) - 1))
    z = (p - p.mean()) / (p.std() + 1e-9)
    sign = 1 if float(z[near].mean()) >= 0 else -1
    return {"percussive": sign, "non_percussive": sign}


def shift_activation(act: np.ndarray, lag: int) -> np.ndarray:
    """``out[t] = act[t + lag]`` (edges repeated): moves responses ``lag`` frames earlier."""
    if lag == 0 or act.size == 0:
        return act
    idx = np.clip(np.arange(act.size) + lag, 0, act.size - 1)
    return act[idx]


def calibrate_lag(estimator: "BeatEstimator", max_lag: int = 24, features: tuple | None = None) -> int:
    """Frames by which the combined activation peaks after the beats of :func:`polarity_reference`.

    The synchrony loss leaves a common delay of both outputs free; this
    measures it once per model (cross-correlation with the beat train). ``features``: the
    reference's :func:`reference_features`, when already computed.
    """
    _, beats = polarity_reference()
    if features is None:
        features = reference_features(estimator)
    saved, estimator.lag_frames = estimator.lag_frames, 0
    try:
        act = estimator.combine_outputs(*estimator.network_outputs(*features))
    finally:
        estimator.lag_frames = saved
    frames = np.round(beats * FPS).astype(int)
    z = act - act.mean()
    scores = []
    for lag in range(-max_lag, max_lag + 1):
        f = frames + lag
        f = f[(f >= 0) & (f < len(z))]
        scores.append(float(z[f].mean()) if f.size else -np.inf)
    return int(np.argmax(scores)) - max_lag


def rescale_unit(x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """``x`` ``(T,)`` min-max scaled to [0, 1] (all zeros when ``x`` is constant)."""
    x = np.asarray(x, dtype=np.float32)
    span = float(x.max() - x.min()) if x.size else 0.0
    if span < eps:
        return np.zeros_like(x)
    return (x - x.min()) / span


# --------------------------------------------------------------------------
# estimator
# --------------------------------------------------------------------------
@dataclass
class BeatResult:
    """Beats of one input: ``beats`` ``(n,)`` seconds, ``tempo_bpm`` (None if < 2 beats),
    ``activation`` ``(T,)`` at ``fps`` frames/s (None unless asked for), ``duration_s``,
    ``tracker`` ``"<activation>+<decoder>"`` (e.g. ``"onset+dbn"``, ``"zerons+dbn"``).

    Beat numbering (:mod:`musicssl.beat.meter`): ``meter`` the setting asked for
    (``"auto"``, a fixed M, or None: not asked), ``beats_per_bar`` M and ``beat_numbers``
    ``(n,)`` int 1..M (1 = downbeat); both None when not asked, when fewer than 3 beats
    were found, or for a streamed file (over 20 minutes)."""

    beats: np.ndarray
    tempo_bpm: float | None
    fps: float
    duration_s: float
    tracker: str
    activation: np.ndarray | None = field(default=None, repr=False)
    meter: str | int | None = None
    beats_per_bar: int | None = None
    beat_numbers: np.ndarray | None = None

    @property
    def downbeats(self) -> np.ndarray | None:
        """Times (s) of the beats numbered 1, or None without beat numbers."""
        return None if self.beat_numbers is None else np.asarray(self.beats)[self.beat_numbers == 1]

    def to_dict(self, include_activation: bool = False) -> dict:
        out = {"tempo_bpm": None if self.tempo_bpm is None else round(float(self.tempo_bpm), 2),
               "n_beats": int(len(self.beats)), "duration_s": round(float(self.duration_s), 3),
               "tracker": self.tracker, "beats": [round(float(b), 4) for b in self.beats]}
        if self.meter is not None:
            numbered = self.beat_numbers is not None
            out.update(meter=self.meter, beats_per_bar=self.beats_per_bar,
                       beat_numbers=[int(k) for k in self.beat_numbers] if numbered else None,
                       downbeats=[round(float(b), 4) for b in self.downbeats] if numbered else None)
        if include_activation and self.activation is not None:
            out["activation"] = [round(float(a), 4) for a in self.activation]
        return out


class _Estimator:
    """The audio -> file layers shared by the beat estimators.

    Subclasses set ``activation_name`` and ``tracker`` and define
    :meth:`activation_16k` and :meth:`decode`.
    """

    activation_name = ""
    tracker = "dbn"
    meter: str | int | None = None   # beat numbering: None (off), "auto" or beats per bar

    @property
    def fps(self) -> float:
        return FPS

    @property
    def label(self) -> str:
        """``"<activation>+<decoder>"``, as written in records."""
        return f"{self.activation_name}+{self.tracker}"

    def activation_16k(self, samples16k: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, activation: np.ndarray, tracker: str | None = None,
               **params) -> tuple[np.ndarray, float | None]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, samples: np.ndarray, sr: float) -> np.ndarray:
        return prepare_audio(samples, sr, SAMPLE_RATE, min_duration=MIN_SECONDS)

    def activation(self, samples: np.ndarray, sr: float) -> tuple[np.ndarray, float]:
        """Audio ``(N,)`` (or ``(N, channels)``) at ``sr`` Hz -> (activation ``(T,)``, fps)."""
        return self.activation_16k(self._prepare(samples, sr)), FPS

    def estimate(self, samples: np.ndarray, sr: float, keep_activation: bool = True) -> BeatResult:
        """Audio at ``sr`` Hz -> :class:`BeatResult`."""
        return self._estimate16k(self._prepare(samples, sr), keep_activation)

    def result(self, activation: np.ndarray, duration_s: float, keep_activation: bool = True,
               meter_features: MeterFrames | None = None) -> BeatResult:
        """Decode an activation ``(T,)`` of a ``duration_s`` s input into a :class:`BeatResult`;
        with :attr:`meter` set, number the beats from ``meter_features`` (None: not numbered)."""
        beats, tempo = self.decode(activation)
        res = BeatResult(beats=beats, tempo_bpm=tempo, fps=FPS, duration_s=duration_s, tracker=self.label,
                         activation=activation if keep_activation else None, meter=self.meter)
        if self.meter is not None and meter_features is not None:
            numbered = number_beats(meter_features, beats, self.meter)
            if numbered is not None:
                res.beats_per_bar, res.beat_numbers = numbered.beats_per_bar, numbered.numbers
        return res

    def meter_features(self, samples16k: np.ndarray) -> MeterFrames | None:
        """What the beat numbering reads from prepared 16 kHz audio (None when :attr:`meter` is off)."""
        return meter_frames(samples16k) if self.meter is not None else None

    def _estimate16k(self, x: np.ndarray, keep_activation: bool) -> BeatResult:
        return self.result(self.activation_16k(x), len(x) / SAMPLE_RATE, keep_activation, self.meter_features(x))

    def estimate_file(self, path: str | os.PathLike, keep_activation: bool = True) -> BeatResult:
        """Decode ``path`` (any format musicssl reads) and track its beats."""

        x = load_audio(path, sr=SAMPLE_RATE, min_duration=MIN_SECONDS)
        return self._estimate16k(x, keep_activation)


def _check_length(samples16k: np.ndarray) -> None:
    if len(samples16k) < MIN_SECONDS * SAMPLE_RATE:
        raise AudioTooShortError(f"beat tracking needs at least {MIN_SECONDS} s of audio",
                                 duration=len(samples16k) / SAMPLE_RATE, minimum=MIN_SECONDS)


class OnsetBeatEstimator(_Estimator):
    """Training-free beat tracker: onset strength -> DBN with a tempo prior (or librosa's DP).

    ``tracker_params`` override :data:`musicssl.beat.onset.ONSET_DBN_PARAMS`
    and the DBN defaults (``min_bpm``, ``max_bpm``, ``transition_lambda``, ...)
    for ``tracker="dbn"``; for ``"librosa"`` they go to ``beat_track``.
    """

    activation_name = "onset"

    def __init__(self, tracker: str = "dbn", tracker_params: Mapping | None = None, meter: str | int | None = None):
        if tracker not in TRACKERS:
            raise ConfigError(f"unknown tracker {tracker!r}; choose one of {', '.join(TRACKERS)}")
        self.tracker = tracker
        self.meter = parse_meter(meter)
        self.tracker_params = dict(tracker_params or {})

    def activation_16k(self, samples16k: np.ndarray) -> np.ndarray:
        """Onset activation ``(T,)`` in [0, 1] of prepared 16 kHz mono audio, ``T = N // 256 + 1``."""
        _check_length(samples16k)
        return onset_envelope(samples16k)

    def estimate_file(self, path: str | os.PathLike, keep_activation: bool = True) -> BeatResult:
        """Decode ``path`` and track its beats; a file over 20 minutes is streamed (its onset
        activation computed chunk by chunk, :func:`~musicssl.beat.onset.onset_envelope_of_file`)."""
        if is_long(path):   # tracked from a streamed onset activation
            streamed = onset_envelope_of_file(path, min_duration=MIN_SECONDS)
            return self.result(streamed.activation, streamed.n_samples / SAMPLE_RATE, keep_activation)
        return super().estimate_file(path, keep_activation)

    def decode(self, activation: np.ndarray, tracker: str | None = None,
               **params) -> tuple[np.ndarray, float | None]:
        """Beats (s) and tempo from an onset activation with this estimator's settings."""
        tracker = tracker or self.tracker
        base = dict(ONSET_DBN_PARAMS) if tracker == "dbn" else {}
        base.update(self.tracker_params if tracker == self.tracker else {})
        base.update(params)
        return track_beats(activation, FPS, tracker, **base)


class BeatEstimator(_Estimator):
    """Zero-Note Samba beat tracker: separation -> VQT -> two nets -> activation -> decoder.

    ``combine``, ``rescale`` and the DBN settings default to the model file's
    ``readout`` metadata (a fine-tuned model stores the readout it was trained
    for, :mod:`musicssl.beat.finetune`), else ``"max"``, ``True`` and the DBN
    defaults; ``tracker_params`` given here override the file's.
    """

    activation_name = "zerons"

    def __init__(self, model: ZeroNS, separator: Separator | str | None = None, device: str = "cpu",
                 combine: str | None = None, tracker: str = "dbn", tracker_params: Mapping | None = None,
                 metadata: Mapping | None = None, chunk_seconds: float = 60.0, rescale: bool | None = None,
                 meter: str | int | None = None):
        readout = dict((metadata or {}).get("readout") or {})
        combine = combine or readout.get("combine", "max")
        rescale = readout.get("rescale", True) if rescale is None else rescale
        if combine not in COMBINE_MODES:
            raise ConfigError(f"unknown combine mode {combine!r}; choose one of {', '.join(COMBINE_MODES)}")
        if tracker not in TRACKERS:
            raise ConfigError(f"unknown tracker {tracker!r}; choose one of {', '.join(TRACKERS)}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.metadata = dict(metadata or {})
        if separator is None:
            self.separator = separator_from_description(self.metadata.get("separator"))
        else:
            self.separator = get_separator(separator)
        self.frontend = ZeroNSFrontEnd().to(self.device)
        self.combine = combine
        self.tracker = tracker
        model_params = (readout.get("tracker_params") or {}) if tracker == "dbn" else {}
        self.tracker_params = dict(model_params, **dict(tracker_params or {}))
        self.meter = parse_meter(meter)
        self.chunk_frames = max(256, int(chunk_seconds * FPS))
        self.rescale = bool(rescale)
        pol = self.metadata.get("polarity") or {}
        self.polarity = {"percussive": int(pol.get("percussive", 1)),
                         "non_percussive": int(pol.get("non_percussive", 1))}
        self.lag_frames = int(pol.get("lag_frames", 0))

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike | None = None, device: str = "cpu",
                        backend: str | None = None, **kwargs) -> "BeatEstimator":
        """Load a ZeroNS checkpoint (``None``: the model shipped with musicssl) or an
        exported ``.onnx``; ``backend`` ``"torch"``/``"onnx"`` (onnxruntime; a torch
        checkpoint is exported once and cached), ``None``: as the file is."""

        if path is None:
            if not DEFAULT_CHECKPOINT.is_file():
                raise CheckpointError(f"the default ZeroNS model is missing ({DEFAULT_CHECKPOINT}); "
                                      "pass a checkpoint")
            path = DEFAULT_CHECKPOINT
        model, meta = load_zerons_model(path)
        if check_backend(path, backend) == "onnx":
            model = zerons_onnx_network(path, model, meta)
        return cls(model, device=device, metadata=meta, **kwargs)

    # ---------------------------------------------------------------- stages
    def separate(self, samples16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """16 kHz mono ``(N,)`` -> (percussive, non_percussive) ``(N,)`` each."""
        return self.separator(samples16k, SAMPLE_RATE)

    def features(self, percussive: np.ndarray, non_percussive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both parts -> log-VQT float32 ``(96, T)`` each."""
        return (vqt_features(self.frontend, percussive, self.device),
                vqt_features(self.frontend, non_percussive, self.device))

    def network_outputs(self, perc_spec: np.ndarray, rest_spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Log-VQTs ``(96, T)`` -> (percussive output, non-percussive output), ``(T,)`` each.

        Long inputs run in chunks overlapping by more than the networks'
        receptive field, so the result equals a single pass.
        """
        t = perc_spec.shape[-1]
        margin = 80  # frames; the 8 time kernels reach 68 frames each side
        outs_p = np.empty(t, dtype=np.float32)
        outs_a = np.empty(t, dtype=np.float32)
        with torch.inference_mode():
            xp_all = torch.from_numpy(np.ascontiguousarray(perc_spec, dtype=np.float32))[None, None]
            xa_all = torch.from_numpy(np.ascontiguousarray(rest_spec, dtype=np.float32))[None, None]
            if self.model.percussive.input_norm:  # standardise over the whole input, once
                xp_all, xa_all = standardize(xp_all), standardize(xa_all)
            for s in range(0, t, self.chunk_frames):
                e = min(t, s + self.chunk_frames)
                lo, hi = max(0, s - margin), min(t, e + margin)
                p, a = self.model(xp_all[..., lo:hi].to(self.device), xa_all[..., lo:hi].to(self.device),
                                  normalize=False)
                outs_p[s:e] = p[0, s - lo:e - lo].cpu().numpy()
                outs_a[s:e] = a[0, s - lo:e - lo].cpu().numpy()
        return outs_p, outs_a

    def combine_outputs(self, p: np.ndarray, a: np.ndarray) -> np.ndarray:
        """Beat activation ``(T,)`` in [0, 1] from the two outputs ``(T,)``.

        With ``rescale`` (default) each output is first min-max scaled to
        [0, 1] over the file: the pretext task fixes when each network fires,
        not its level, so without this one branch's offset can mask the other
        under ``max``.
        """
        if self.polarity["percussive"] < 0:
            p = 1.0 - p
        if self.polarity["non_percussive"] < 0:
            a = 1.0 - a
        if self.rescale:
            p, a = rescale_unit(p), rescale_unit(a)
        act = combine_activations(torch.from_numpy(p), torch.from_numpy(a), self.combine).numpy()
        return shift_activation(act, self.lag_frames)

    # ---------------------------------------------------------------- API
    def activation_16k(self, samples16k: np.ndarray) -> np.ndarray:
        """Activation ``(T,)`` in (0, 1) of prepared 16 kHz mono audio, ``T = N // 256 + 1``."""
        _check_length(samples16k)
        perc, rest = self.separate(samples16k)
        p, a = self.network_outputs(*self.features(perc, rest))
        return self.combine_outputs(p, a)

    def decode(self, activation: np.ndarray, tracker: str | None = None, **params) -> tuple[np.ndarray, float | None]:
        """Beats (s) and tempo from an activation with this estimator's tracker settings."""
        tracker = tracker or self.tracker
        merged = dict(self.tracker_params if tracker == self.tracker else {}, **params)
        return track_beats(activation, FPS, tracker, **merged)


def load_beat_estimator(activation: str | None = None, checkpoint: str | os.PathLike | None = None, *,
                        device: str = "cpu", tracker: str = "dbn", tracker_params: Mapping | None = None,
                        backend: str | None = None, meter: str | int | None = None, **zerons_options):
    """The beat estimator ``musicssl beats`` and ``musicssl serve`` run: ``activation``
    ``"onset"`` (:class:`OnsetBeatEstimator`) or ``"zerons"`` (:class:`BeatEstimator` of
    ``checkpoint``, None: the shipped model); None means ``zerons`` when a checkpoint is
    given, else ``onset``. ``meter``: beat numbering, None/"off", "auto" or beats per bar
    (:mod:`musicssl.beat.meter`). ``zerons_options`` (``combine``, ``separator``) go to ZeroNS."""
    activation = activation or ("zerons" if checkpoint else "onset")
    if activation == "onset":
        if checkpoint or backend:
            raise ConfigError("--checkpoint and --backend apply to ZeroNS models: add --activation zerons")
        return OnsetBeatEstimator(tracker=tracker, tracker_params=tracker_params, meter=meter)
    if activation != "zerons":
        raise ConfigError(f"unknown beat activation {activation!r}; choose onset or zerons")
    return BeatEstimator.from_checkpoint(checkpoint, device=device, backend=backend, tracker=tracker,
                                         tracker_params=tracker_params, meter=meter, **zerons_options)
