"""Percussive / non-percussive separation for Zero-Note Samba (SPEC §2.1).

A :class:`Separator` maps a mono waveform ``(N,)`` at ``sr`` Hz to two
waveforms of the same length: the percussive part and the rest.  The offline
default is :class:`HPSSSeparator` (median-filter harmonic–percussive
separation, no downloaded weights).  Any other separator (e.g. a neural
drum/rest splitter the user installed) plugs in through :func:`get_separator`
as a ``Separator`` instance, a plain callable ``f(samples, sr) -> (perc, rest)``
or an import path ``"package.module:name"``.

Default HPSS settings (measured with ``benchmarks/beat_eval.py --separation``
on synthetic drum + chord mixes, 16 kHz): STFT 1024/256, harmonic kernel 31
frames (0.5 s), percussive kernel 31 bins (~480 Hz), soft masks, and a split
that keeps everything that is not clearly harmonic in the percussive part
(``percussive = mix - harmonic(margin 2)``): drum onsets stay in the
percussive part and the non-percussive part carries sustained harmonic
content with few drum attacks left in it, which is what the synchrony pretext
task needs (drum leakage into the non-percussive input makes the task
trivially solvable by onset matching).
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from typing import Callable

import numpy as np

from musicssl.errors import AudioError, ConfigError

SeparatorFn = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


class Separator(ABC):
    """Splits mono audio into (percussive, non_percussive), both float32 ``(N,)``."""

    name: str = "separator"

    @abstractmethod
    def separate(self, samples: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """``samples`` float ``(N,)`` at ``sr`` Hz -> (percussive ``(N,)``, non_percussive ``(N,)``)."""

    def __call__(self, samples: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        x = _check_mono(samples)
        perc, rest = self.separate(x, int(sr))
        perc = _fit_length(np.asarray(perc, dtype=np.float32).reshape(-1), len(x))
        rest = _fit_length(np.asarray(rest, dtype=np.float32).reshape(-1), len(x))
        return perc, rest


class HPSSSeparator(Separator):
    """Median-filter harmonic–percussive separation on an STFT (librosa).

    ``mode`` picks how the two parts are formed from the soft masks:

    * ``"strict_harmonic"`` (default): non_percussive = harmonic part with
      ``margin``; percussive = mix − non_percussive (residual goes to drums).
    * ``"strict_percussive"``: percussive = percussive part with ``margin``;
      non_percussive = mix − percussive.
    * ``"plain"``: librosa's plain soft-mask split (margin ignored).
    """

    name = "hpss"
    MODES = ("strict_harmonic", "strict_percussive", "plain")

    def __init__(self, n_fft: int = 2048, hop_length: int = 256,
                 kernel_size: tuple[int, int] = (31, 31), margin: float = 2.0,
                 power: float = 2.0, mode: str = "strict_harmonic"):
        if mode not in self.MODES:
            raise ConfigError(f"unknown HPSS mode {mode!r}; choose one of {', '.join(self.MODES)}")
        if margin < 1.0:
            raise ConfigError(f"HPSS margin must be >= 1, got {margin}")
        self.n_fft = int(n_fft)
        self.hop_length = int(hop_length)
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))
        self.margin = float(margin)
        self.power = float(power)
        self.mode = mode

    def separate(self, samples: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        import librosa

        n = len(samples)
        if n < self.n_fft:
            pad = self.n_fft - n
            samples = np.pad(samples, (0, pad))
        stft = librosa.stft(samples, n_fft=self.n_fft, hop_length=self.hop_length)
        mag = np.abs(stft)
        if self.mode == "plain":
            harm_mask, perc_mask = librosa.decompose.hpss(
                mag, kernel_size=self.kernel_size, power=self.power, mask=True, margin=1.0)
            keep_perc = perc_mask
        elif self.mode == "strict_harmonic":
            harm_mask, _ = librosa.decompose.hpss(
                mag, kernel_size=self.kernel_size, power=self.power, mask=True,
                margin=(self.margin, 1.0))
            keep_perc = 1.0 - harm_mask
        else:
            _, perc_mask = librosa.decompose.hpss(
                mag, kernel_size=self.kernel_size, power=self.power, mask=True,
                margin=(1.0, self.margin))
            keep_perc = perc_mask
        perc = librosa.istft(stft * keep_perc, hop_length=self.hop_length, n_fft=self.n_fft,
                             length=len(samples))
        perc = perc[:n].astype(np.float32)
        rest = (samples[:n] - perc).astype(np.float32)
        return perc, rest

    def params(self) -> dict:
        """Constructor arguments (stored in checkpoints and caches)."""
        return {"n_fft": self.n_fft, "hop_length": self.hop_length,
                "kernel_size": list(self.kernel_size), "margin": self.margin,
                "power": self.power, "mode": self.mode}

    def __repr__(self) -> str:
        return (f"HPSSSeparator(n_fft={self.n_fft}, hop_length={self.hop_length}, "
                f"kernel_size={self.kernel_size}, margin={self.margin}, mode={self.mode!r})")


class CallableSeparator(Separator):
    """Wraps ``fn(samples (N,), sr) -> (percussive, non_percussive)``."""

    def __init__(self, fn: SeparatorFn, name: str | None = None):
        if not callable(fn):
            raise ConfigError("a separator must be callable as fn(samples, sr)")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def separate(self, samples: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        out = self.fn(samples, sr)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise ConfigError(f"separator {self.name!r} must return (percussive, non_percussive)")
        return out[0], out[1]


def get_separator(spec: "None | str | Separator | SeparatorFn" = None, **kwargs) -> Separator:
    """A separator from ``None``/``"hpss"`` (default), an instance, a callable or ``"module:attr"``.

    An import path may name a :class:`Separator` subclass or factory (called
    with ``kwargs``) or a plain function ``(samples, sr) -> (perc, rest)``.
    """
    if spec is None or (isinstance(spec, str) and spec.lower() == "hpss"):
        return HPSSSeparator(**kwargs)
    if isinstance(spec, Separator):
        return spec
    if isinstance(spec, str):
        module_name, _, attr = spec.partition(":")
        if not attr:
            raise ConfigError(f"separator import path must look like 'package.module:name', got {spec!r}")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import separator {spec!r}: {exc}") from exc
        if isinstance(obj, type) and issubclass(obj, Separator):
            return obj(**kwargs)
        if isinstance(obj, Separator):
            return obj
        return CallableSeparator(obj, name=spec)
    if callable(spec):
        return CallableSeparator(spec)
    raise ConfigError(f"cannot use {spec!r} as a separator")


def separator_description(sep: Separator) -> dict:
    """What made the inputs, stored with caches and checkpoints: ``{"name", "params"}``."""
    if isinstance(sep, HPSSSeparator):
        return {"name": "hpss", "params": sep.params()}
    return {"name": str(sep.name), "params": None}


def separator_from_description(desc: dict | None) -> Separator:
    """The separator a description names; the default HPSS for unknown or custom ones."""
    if desc and desc.get("name") == "hpss" and desc.get("params"):
        params = dict(desc["params"])
        params["kernel_size"] = tuple(params.get("kernel_size", (31, 31)))
        return HPSSSeparator(**params)
    return HPSSSeparator()


def _check_mono(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1:
        raise AudioError(f"separation needs mono audio of shape (N,), got shape {x.shape}")
    if x.size == 0:
        raise AudioError("separation got no samples")
    if not np.all(np.isfinite(x)):
        raise AudioError("separation got NaN or infinite samples")
    return x


def _fit_length(x: np.ndarray, n: int) -> np.ndarray:
    if len(x) >= n:
        return x[:n]
    return np.pad(x, (0, n - len(x)))
