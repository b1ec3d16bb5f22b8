"""Beat trackers by name for evaluation: ``path -> beat times (s)`` for ``onset``,
``zerons``, ``zerons-librosa``, ``librosa``, ``librosa-dbn`` or a ZeroNS checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from musicssl.beat.estimator import BeatEstimator, OnsetBeatEstimator
from musicssl.errors import ConfigError
from musicssl.io.audio import load_audio

BUILTIN_TRACKERS = ("onset", "zerons", "zerons-librosa", "librosa", "librosa-dbn")


#: librosa tracker settings: analysis rate and hop (librosa's defaults).
LIBROSA_SR, LIBROSA_HOP = 22050, 512


#: librosa-dbn: the onset tracker with the DBN's SPEC defaults (no tempo prior, 1/16-beat window).
SPEC_DBN_PARAMS = {"observation_lambda": 16.0, "prior_bpm": None}


Tracker = Callable[[Path], np.ndarray]  # audio path -> beat times (n,) in seconds


def _librosa_beats(path: Path) -> np.ndarray:
    import librosa

    y = load_audio(path, sr=LIBROSA_SR)
    _, beats = librosa.beat.beat_track(y=y, sr=LIBROSA_SR, hop_length=LIBROSA_HOP, units="time")
    return np.asarray(beats, dtype=np.float64)


def _load_estimator(checkpoint: str | None, device: str):
    return BeatEstimator.from_checkpoint(checkpoint, device=device)


class _ZeroNSTrackers:
    """ZeroNS estimators by checkpoint, remembering the last activation so that
    ``zerons`` and ``zerons-librosa`` on the same file run the networks once."""

    def __init__(self, device: str):
        self.device = device
        self.estimators: dict[str | None, object] = {}
        self.last: tuple[str | None, Path, np.ndarray] | None = None

    def activation(self, checkpoint: str | None, path: Path) -> np.ndarray:
        if self.last is not None and self.last[:2] == (checkpoint, path):
            return self.last[2]
        if checkpoint not in self.estimators:
            self.estimators[checkpoint] = _load_estimator(checkpoint, self.device)
        result = self.estimators[checkpoint].estimate_file(path, keep_activation=True)
        self.last = (checkpoint, path, result.activation)
        return result.activation

    def tracker(self, checkpoint: str | None, decoder: str) -> Tracker:
        if checkpoint not in self.estimators:  # load now: a bad checkpoint is a usage error
            self.estimators[checkpoint] = _load_estimator(checkpoint, self.device)
        estimator = self.estimators[checkpoint]
        return lambda path: np.asarray(
            estimator.decode(self.activation(checkpoint, path), tracker=decoder)[0], dtype=np.float64)


def make_tracker(name: str, device: str = "cpu", zerons: _ZeroNSTrackers | None = None,
                 checkpoint: str | None = None) -> Tracker:
    """The beat function of a tracker name (see module docstring) or checkpoint path;
    ``checkpoint``: the model of ``zerons``/``zerons-librosa`` (None: the shipped one)."""
    if name == "librosa":
        return _librosa_beats
    if name in ("onset", "librosa-dbn"):
        onset = OnsetBeatEstimator(tracker_params=SPEC_DBN_PARAMS if name == "librosa-dbn" else None)
        return lambda path: np.asarray(onset.estimate_file(path, keep_activation=False).beats)
    zerons = zerons or _ZeroNSTrackers(device)
    if name == "zerons":
        return zerons.tracker(checkpoint, "dbn")
    if name == "zerons-librosa":
        return zerons.tracker(checkpoint, "librosa")
    if Path(name).expanduser().is_file():
        return zerons.tracker(str(Path(name).expanduser()), "dbn")
    raise ConfigError(f"unknown tracker {name!r}: not one of {', '.join(BUILTIN_TRACKERS)} "
                      "and not an existing checkpoint file")


def _tracker_label(name: str) -> str:
    return name if name in BUILTIN_TRACKERS else Path(name).stem


def make_trackers(names, device: str = "cpu", checkpoint: str | None = None) -> dict[str, Tracker]:
    """``{label: tracker}`` for tracker names or checkpoint paths (labels: the name, or the
    checkpoint's file stem); ZeroNS trackers share one estimator per checkpoint and activation."""
    zerons = _ZeroNSTrackers(device)
    return {_tracker_label(name): make_tracker(name, device, zerons, checkpoint) for name in names}
