"""Waveform augmentations that imitate real recordings (pure functions, no labels).

Every function takes mono float32 audio ``x`` of shape ``(n,)`` at ``sr`` Hz
and returns float32 audio; none changes the key:

* :func:`add_reverb` — room reverb with a synthetic impulse response
  (:func:`synthetic_rir`: early reflections + exponentially decaying noise
  whose level falls 60 dB in ``rt60_s`` seconds, high frequencies faster).
* :func:`codec_roundtrip` — a real lossy codec round trip (MP3 via LAME or
  Opus via libopus, encoded with PyAV in memory, decoded by
  :func:`musicssl.io.audio.load_audio`) at a low bit rate.
* :func:`detune` — pitch *and* tempo moved together by a few cents
  (resampling; well inside the half-semitone that separates keys).
* :func:`time_stretch` — tempo changed by a few percent, pitch kept
  (librosa's phase vocoder).
* :func:`add_noise` — white, pink or brown noise at an exact signal-to-noise
  ratio (dB, mean power over the whole clip).

:func:`augment_waveform` chains them with random settings drawn from an
:class:`AugmentConfig` and a numpy ``Generator`` (deterministic for a seed).
The training pipeline applies it when the feature cache is built
(``augment`` setting, :mod:`musicssl.key.dataset`): one augmented rendition per
track, drawn from ``(seed, path)``.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import asdict, dataclass, fields

import numpy as np

from musicssl.errors import ConfigError, MusicsslError
from musicssl.io.audio import load_audio, prepare_audio

#: names accepted by :meth:`AugmentConfig.parse` (``real`` = all of them)
AUGMENTATIONS = ("reverb", "codec", "detune", "stretch", "noise")


class AugmentError(MusicsslError):
    """An augmentation could not be applied (e.g. the codec is missing from PyAV)."""


# --------------------------------------------------------------------------- reverb
def synthetic_rir(rng: np.random.Generator, sr: int, rt60_s: float, *, pre_delay_s: float = 0.01,
                  n_early: int = 8, damping: float = 0.5) -> np.ndarray:
    """A synthetic room impulse response *without* the direct sound, ``(m,)`` float32, unit energy.

    ``m = round(1.2 · rt60_s · sr)``. Late part: Gaussian noise under an
    envelope falling 60 dB in ``rt60_s`` s, starting after ``pre_delay_s``;
    ``n_early`` early reflections (single taps) within 5–50 ms. ``damping``
    (0–1) mixes in a one-pole low-passed copy of the tail whose share grows
    with time, so high frequencies die first, as in real rooms.
    """
    if rt60_s <= 0:
        raise ConfigError(f"rt60_s must be positive, got {rt60_s}")
    m = max(int(round(1.2 * rt60_s * sr)), int(0.06 * sr))
    t = np.arange(m) / sr
    start = int(pre_delay_s * sr)
    tail = rng.standard_normal(m) * np.exp(-6.908 * t / rt60_s)      # ln(1000) = 6.908: -60 dB at rt60
    tail[:start] = 0.0
    if damping > 0:
        from scipy.signal import lfilter

        smooth = lfilter([0.3], [1.0, -0.7], tail)       # one-pole low pass
        share = damping * np.clip(t / rt60_s, 0.0, 1.0)
        tail = (1 - share) * tail + share * smooth * 3.0
    for _ in range(n_early):
        i = int(rng.uniform(0.005, 0.05) * sr)
        if i < m:
            tail[i] += rng.uniform(-1, 1) * 3.0 * np.sqrt(np.mean(tail[start:start + int(0.05 * sr)] ** 2) + 1e-12)
    energy = np.sqrt(np.sum(tail ** 2))
    return (tail / max(energy, 1e-12)).astype(np.float32)


def add_reverb(x: np.ndarray, rir: np.ndarray, wet: float) -> np.ndarray:
    """``x`` plus its convolution with ``rir`` scaled to ``wet`` (0–1) of the output energy; ``(n,)`` float32.

    The output keeps the input's length and peak level (the reverb tail
    beyond the end is dropped).
    """
    from scipy.signal import fftconvolve

    if not 0.0 <= wet < 1.0:
        raise ConfigError(f"wet must be in [0, 1), got {wet}")
    x = np.asarray(x, np.float32)
    if wet == 0 or not np.any(x):
        return x.copy()
    tail = fftconvolve(x.astype(np.float64), rir.astype(np.float64))[: len(x)]
    e_dry = np.sqrt(np.mean(x.astype(np.float64) ** 2))
    e_wet = np.sqrt(np.mean(tail ** 2)) + 1e-12
    y = np.sqrt(1 - wet) * x + np.sqrt(wet) * tail * (e_dry / e_wet)
    return _same_peak(y, x)


# --------------------------------------------------------------------------- codec
_CODECS = {"mp3": ("libmp3lame", "mp3", None), "opus": ("libopus", "ogg", 24000)}


def codec_roundtrip(x: np.ndarray, sr: int, codec: str = "mp3", bitrate_kbps: int = 32) -> np.ndarray:
    """``x`` encoded with ``codec`` (``mp3`` or ``opus``) at ``bitrate_kbps`` and decoded back; ``(n,)`` float32.

    Encoding: PyAV in memory (Opus at 24 kHz: the input is resampled first).
    Decoding and resampling back to ``sr``: :func:`musicssl.io.audio.load_audio`.
    The encoder's delay is removed by cross-correlation; the result has ``x``'s length.
    """
    import av


    if codec not in _CODECS:
        raise ConfigError(f"codec must be one of {sorted(_CODECS)}, got {codec!r}")
    encoder, fmt, rate = _CODECS[codec]
    x = np.asarray(x, np.float32)
    src = x if rate is None else prepare_audio(x, sr, rate, normalize=False)
    rate = rate or int(sr)
    buffer = io.BytesIO()
    try:
        with av.open(buffer, "w", format=fmt) as container:
            stream = container.add_stream(encoder, rate=rate)
            stream.bit_rate = int(bitrate_kbps) * 1000
            stream.layout = "mono"
            frame_size = stream.codec_context.frame_size or 1152
            pcm = np.clip(src, -1.0, 1.0)
            pts = 0
            for start in range(0, len(pcm), frame_size):
                block = pcm[start:start + frame_size]
                if len(block) < frame_size and codec == "opus":
                    block = np.pad(block, (0, frame_size - len(block)))
                frame = av.AudioFrame.from_ndarray(block[None, :].astype(np.float32), format="flt", layout="mono")
                frame.sample_rate = rate
                frame.pts = pts
                pts += len(block)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        raise AugmentError(f"{codec} encoding failed: {exc}") from exc
    fd, tmp = tempfile.mkstemp(suffix=f".{'opus' if codec == 'opus' else 'mp3'}")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
        y = load_audio(tmp, sr=sr, normalize=False)
    finally:
        os.unlink(tmp)
    return _align(y, x)


def _align(y: np.ndarray, x: np.ndarray, max_lag_s_samples: int = 4096) -> np.ndarray:
    """``y`` shifted by its best lag (0…``max_lag``) against ``x`` and cut/padded to ``len(x)``."""
    n = len(x)
    probe = min(n, 1 << 16)
    best, best_lag = -np.inf, 0
    if probe > 0 and len(y) > 0:
        from scipy.signal import correlate

        seg_y = np.pad(y, (0, max(0, probe + max_lag_s_samples - len(y))))[: probe + max_lag_s_samples]
        corr = correlate(seg_y, x[:probe], mode="valid", method="fft")
        best_lag = int(np.argmax(corr))
        best = corr[best_lag]
    out = y[best_lag:best_lag + n] if np.isfinite(best) else y[:n]
    if len(out) < n:
        out = np.pad(out, (0, n - len(out)))
    return np.asarray(out, np.float32)


# --------------------------------------------------------------------------- pitch / tempo
def detune(x: np.ndarray, sr: int, cents: float) -> np.ndarray:
    """Pitch and tempo moved together by ``cents`` (positive = higher and faster); ``(≈ n·2^(−cents/1200),)`` float32.

    The samples are read as if recorded at ``sr · 2^(cents/1200)`` and
    resampled to ``sr`` (like a tape or turntable running off speed).
    """

    if abs(cents) >= 50:
        raise ConfigError(f"|cents| must stay below 50 (half a semitone) to keep the key, got {cents}")
    if cents == 0:
        return np.asarray(x, np.float32).copy()
    return prepare_audio(np.asarray(x, np.float32), sr * 2.0 ** (cents / 1200.0), sr, normalize=False)


def time_stretch(x: np.ndarray, rate: float) -> np.ndarray:
    """Tempo times ``rate`` (> 1 faster) with the pitch kept (phase vocoder); ``(≈ n / rate,)`` float32."""
    import librosa

    if not 0.5 <= rate <= 2.0:
        raise ConfigError(f"rate must be within 0.5..2, got {rate}")
    if rate == 1.0:
        return np.asarray(x, np.float32).copy()
    return librosa.effects.time_stretch(np.asarray(x, np.float32), rate=rate).astype(np.float32)


# --------------------------------------------------------------------------- noise
_NOISE_EXPONENT = {"white": 0.0, "pink": 1.0, "brown": 2.0}


def coloured_noise(rng: np.random.Generator, n: int, color: str = "white") -> np.ndarray:
    """Noise with power spectrum ∝ ``1/f^β`` (white 0, pink 1, brown 2), ``(n,)`` float64, unit mean power."""
    if color not in _NOISE_EXPONENT:
        raise ConfigError(f"color must be one of {sorted(_NOISE_EXPONENT)}, got {color!r}")
    white = rng.standard_normal(n)
    beta = _NOISE_EXPONENT[color]
    if beta:
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        spec *= f ** (-beta / 2)
        spec[0] = 0.0
        white = np.fft.irfft(spec, n)
    return white / max(np.sqrt(np.mean(white ** 2)), 1e-12)


def add_noise(x: np.ndarray, rng: np.random.Generator, snr_db: float, color: str = "white") -> np.ndarray:
    """``x`` plus noise at ``snr_db`` dB below the signal's mean power; ``(n,)`` float32.

    ``10·log10(mean(x²) / mean(noise²)) = snr_db`` exactly (before float32 rounding).
    """
    x = np.asarray(x, np.float32)
    power = float(np.mean(x.astype(np.float64) ** 2))
    if power == 0.0:
        return x.copy()
    noise = coloured_noise(rng, len(x), color) * np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (x + noise).astype(np.float32)


def _same_peak(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    peak_y, peak_x = float(np.max(np.abs(y))), float(np.max(np.abs(x)))
    if peak_y > 0:
        y = y * (peak_x / peak_y)
    return np.asarray(y, np.float32)


# --------------------------------------------------------------------------- chain
@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of :func:`augment_waveform` (units in the field names)."""

    reverb_p: float = 0.5
    rt60_s: tuple[float, float] = (0.2, 1.6)
    wet: tuple[float, float] = (0.1, 0.5)
    codec_p: float = 0.5
    codecs: tuple[str, ...] = ("mp3", "opus")
    bitrate_kbps: tuple[int, int] = (24, 64)
    detune_p: float = 0.5
    max_cents: float = 25.0
    stretch_p: float = 0.3
    max_stretch: float = 0.08          # rate within 1 ± max_stretch
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (10.0, 40.0)
    noise_colors: tuple[str, ...] = ("white", "pink", "brown")

    @classmethod
    def parse(cls, text: str | None) -> "AugmentConfig | None":
        """``none``/empty → None; ``real`` → all defaults; ``reverb,codec,...`` → only those (others off)."""
        names = [n.strip().lower() for n in (text or "").split(",") if n.strip()]
        if not names or names == ["none"]:
            return None
        if names == ["real"]:
            return cls()
        unknown = sorted(set(names) - set(AUGMENTATIONS))
        if unknown:
            raise ConfigError(f"unknown augmentation(s) {unknown}: use none, real or a comma list of "
                              f"{', '.join(AUGMENTATIONS)}")
        off = {f"{n}_p": 0.0 for n in AUGMENTATIONS if n not in names}
        return cls(**off)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "AugmentConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names})


def augment_waveform(x: np.ndarray, sr: int, config: AugmentConfig, rng: np.random.Generator
                     ) -> tuple[np.ndarray, dict]:
    """One random chain: stretch → detune → reverb → noise → codec; ``((m,) float32, what was applied)``.

    Each step is applied with its probability in ``config``; the output keeps
    the input's peak level (the cache stores peak-normalised tracks).
    """
    x = np.asarray(x, np.float32)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    applied: dict = {}
    if rng.random() < config.stretch_p:
        rate = float(rng.uniform(1 - config.max_stretch, 1 + config.max_stretch))
        x = time_stretch(x, rate)
        applied["stretch_rate"] = round(rate, 4)
    if rng.random() < config.detune_p:
        cents = float(rng.uniform(-config.max_cents, config.max_cents))
        x = detune(x, sr, cents)
        applied["detune_cents"] = round(cents, 2)
    if rng.random() < config.reverb_p:
        rt60 = float(rng.uniform(*config.rt60_s))
        wet = float(rng.uniform(*config.wet))
        x = add_reverb(x, synthetic_rir(rng, sr, rt60), wet)
        applied.update(rt60_s=round(rt60, 3), wet=round(wet, 3))
    if rng.random() < config.noise_p:
        snr = float(rng.uniform(*config.snr_db))
        color = str(rng.choice(config.noise_colors))
        x = add_noise(x, rng, snr, color)
        applied.update(snr_db=round(snr, 2), noise=color)
    if rng.random() < config.codec_p:
        codec = str(rng.choice(config.codecs))
        kbps = int(rng.integers(config.bitrate_kbps[0], config.bitrate_kbps[1] + 1))
        x = codec_roundtrip(x, sr, codec, kbps)
        applied.update(codec=codec, bitrate_kbps=kbps)
    if peak > 0 and x.size:
        x = _same_peak(x, np.array([peak], np.float32))
    return np.asarray(x, np.float32), applied


def cache_settings(spec: str | None, seed: int = 0) -> dict | None:
    """The feature cache's record of an ``augment`` setting (None when off): ``{"spec", "seed", "config"}``."""
    config = AugmentConfig.parse(spec)
    if config is None:
        return None
    return {"spec": str(spec), "seed": int(seed), "config": config.to_dict()}


def augment_track(x: np.ndarray, sr: int, settings: dict, path: str) -> np.ndarray:
    """:func:`augment_waveform` of one track with randomness from ``(settings["seed"], path)``; ``(m,)`` float32."""
    import hashlib

    digest = int(hashlib.sha1(str(path).encode()).hexdigest()[:12], 16)
    rng = np.random.default_rng([int(settings.get("seed", 0)), digest])
    y, _ = augment_waveform(x, sr, AugmentConfig.from_dict(settings["config"]), rng)
    return y
