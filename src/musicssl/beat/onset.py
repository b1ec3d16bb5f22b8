"""Onset-strength beat activation: the training-free front end of the default beat tracker.

librosa's spectral-flux onset strength (log-power mel spectrogram, positive
differences averaged over bands) at 16 kHz with hop 256, so it has the ZeroNS
frame rate (62.5 frames/s, frame ``t`` at ``t / 62.5`` s), scaled to [0, 1]
by its maximum. It is decoded with the project DBN and the settings below
(:data:`ONSET_DBN_PARAMS`), chosen by ``benchmarks/beat_eval.py`` against
librosa's own tracker.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musicssl.io.audio import check_min_duration, iter_audio_blocks

SAMPLE_RATE = 16000
HOP_LENGTH = 256
FPS = SAMPLE_RATE / HOP_LENGTH

#: DBN settings for an onset envelope: a wider beat window than for a peaky
#: network output (``observation_lambda`` 8: the first 1/8 of each beat), and
#: librosa's tempo prior (log-normal, 120 BPM, one octave).
ONSET_DBN_PARAMS = {"observation_lambda": 8.0, "prior_bpm": 120.0, "prior_octaves": 1.0}


#: librosa's onset_strength settings used here: FFT size, and the dB floor below the maximum
N_FFT = 2048
TOP_DB = 80.0
_AMIN = 1e-10
#: frames the envelope is delayed by (librosa: lag 1 + n_fft / (2 hop) for centred frames)
_DELAY = 1 + N_FFT // (2 * HOP_LENGTH)


def stft_magnitude(samples16k: np.ndarray) -> np.ndarray:
    """STFT magnitude ``(N_FFT // 2 + 1, N // 256 + 1)`` of mono 16 kHz audio ``(N,)`` (Hann
    window of :data:`N_FFT`, centred frames): what the onset envelope and the beat-numbering
    features (:func:`musicssl.beat.meter.meter_frames`) both read, computed once."""
    import librosa  # deferred: only the onset tracker needs it

    x = np.asarray(samples16k, dtype=np.float32).reshape(-1)
    return np.abs(librosa.stft(x, n_fft=N_FFT, hop_length=HOP_LENGTH, center=True))


def onset_envelope(samples16k: np.ndarray, magnitude: np.ndarray | None = None) -> np.ndarray:
    """Onset strength ``(N // 256 + 1,)`` float32 in [0, 1] of mono 16 kHz audio ``(N,)``
    (librosa's spectral flux of the log-power mel spectrogram); ``magnitude``: its
    :func:`stft_magnitude` when already computed (same result).

    All zeros for silence or a constant signal.
    """
    import librosa  # deferred: only the onset tracker needs it

    if magnitude is None:
        magnitude = stft_magnitude(samples16k)
    mel = librosa.feature.melspectrogram(S=magnitude ** 2, sr=SAMPLE_RATE)
    env = librosa.onset.onset_strength(S=librosa.power_to_db(mel), sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    return _scaled(env)


def _scaled(env: np.ndarray) -> np.ndarray:
    """``env`` divided by its maximum, clipped to [0, 1], float32 (zeros when flat).

    A float64 ``env`` is scaled in place (no further (T,) float64 copies)."""
    env = np.nan_to_num(np.asarray(env, dtype=np.float64), copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(env.max()) if env.size else 0.0
    if peak <= 1e-9:
        return np.zeros(len(env), dtype=np.float32)
    env /= peak
    return np.clip(env, 0.0, 1.0, out=env).astype(np.float32)


@dataclass
class StreamedOnset:
    """What :func:`onset_envelope_of_file` returns: the activation ``(T,)`` in [0, 1], the
    file's length in samples at 16 kHz, and (when asked) its waveform envelope at ``rate`` Hz
    (the maximum of each block of ``16000 // rate`` peak-normalised samples)."""

    activation: np.ndarray
    n_samples: int
    waveform: np.ndarray | None = None


def _mel_power_chunks(blocks, n_samples: int):
    """Mel power ``(128, t)`` of consecutive frames of the centred STFT of a stream of
    16 kHz blocks (``n_samples`` in all), chunk by chunk: ``N // 256 + 1`` frames in all,
    equal to librosa's ``melspectrogram`` of the whole signal (zero padding of n_fft / 2
    at both ends)."""
    import librosa  # deferred: only the onset tracker needs it

    def mel(segment: np.ndarray) -> np.ndarray:
        return librosa.feature.melspectrogram(y=segment, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
                                              center=False)

    total = n_samples // HOP_LENGTH + 1
    buffer = np.zeros(N_FFT // 2, dtype=np.float32)
    done = 0
    for block in blocks:
        buffer = np.concatenate([buffer, np.asarray(block, dtype=np.float32)])
        n = (len(buffer) - N_FFT) // HOP_LENGTH + 1 if len(buffer) >= N_FFT else 0
        n = min(n, total - done)
        if n > 0:
            yield mel(buffer[:(n - 1) * HOP_LENGTH + N_FFT])
            buffer, done = buffer[n * HOP_LENGTH:], done + n
    buffer = np.concatenate([buffer, np.zeros(N_FFT // 2, dtype=np.float32)])
    n = min((len(buffer) - N_FFT) // HOP_LENGTH + 1, total - done)
    if n > 0:
        yield mel(buffer[:(n - 1) * HOP_LENGTH + N_FFT])


def onset_envelope_of_file(path, *, waveform_rate: int | None = None, block_seconds: float = 30.0,
                           min_duration: float | None = None) -> StreamedOnset:
    """:func:`onset_envelope` of a file (peak-normalised 16 kHz mono) without holding its
    samples or its spectrogram: O(frames) memory, not O(samples).

    Three streaming passes: the first finds the length and the peak, the second the
    largest mel power (for the 80 dB floor), the third the envelope chunk by chunk (and
    the waveform envelope for plots, a fourth pass when asked). Equal to
    ``onset_envelope(load_audio(path, 16000))`` up to float rounding.
    """
    scan = iter_audio_blocks(path, SAMPLE_RATE, block_seconds)
    n_samples = sum(len(block) for block in scan)
    peak = float(scan.peak)
    check_min_duration(n_samples, SAMPLE_RATE, min_duration, scan.path)
    scale = 1.0 / peak

    def normalised():
        return (block * np.float32(scale) for block in iter_audio_blocks(path, SAMPLE_RATE, block_seconds))

    top = max(float(chunk.max()) for chunk in _mel_power_chunks(normalised(), n_samples))
    floor = 10.0 * np.log10(max(_AMIN, top)) - TOP_DB
    total = n_samples // HOP_LENGTH + 1
    env = np.zeros(total, dtype=np.float64)
    previous, done = None, 0
    for chunk in _mel_power_chunks(normalised(), n_samples):
        db = np.maximum(10.0 * np.log10(np.maximum(_AMIN, chunk.astype(np.float64))), floor)
        joined = db if previous is None else np.concatenate([previous, db], axis=1)
        rise = np.maximum(0.0, np.diff(joined, axis=1)).mean(axis=0)   # S[j+1] - S[j], j from first
        first = 0 if previous is None else done - 1
        where = np.arange(len(rise)) + first + _DELAY                  # centring and lag delay
        keep = where < total
        env[where[keep]] = rise[keep]
        done += db.shape[1]
        previous = db[:, -1:]
    wave = _waveform_of(normalised(), SAMPLE_RATE // waveform_rate) if waveform_rate else None
    return StreamedOnset(_scaled(env), n_samples, wave)


def _waveform_of(blocks, step: int) -> np.ndarray:
    """Maximum of each ``step`` consecutive samples of a stream (a partial last step dropped)."""
    parts, carry = [], np.zeros(0, dtype=np.float32)
    for block in blocks:
        x = np.concatenate([carry, block])
        n = len(x) // step * step
        parts.append(x[:n].reshape(-1, step).max(axis=1))
        carry = x[n:]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
