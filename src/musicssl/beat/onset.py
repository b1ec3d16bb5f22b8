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


def _mel_power_chunks(blocks, n_samples: int | None = None):
    """Mel power ``(128, t)`` of consecutive frames of the centred STFT of a stream of
    16 kHz blocks (``n_samples`` in all; None: counted while streaming), chunk by chunk:
    ``N // 256 + 1`` frames in all, equal to librosa's ``melspectrogram`` of the whole
    signal (zero padding of n_fft / 2 at both ends)."""
    import librosa  # deferred: only the onset tracker needs it

    def mel(segment: np.ndarray) -> np.ndarray:
        return librosa.feature.melspectrogram(y=segment, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP_LENGTH,
                                              center=False)

    # frames inside the stream only read samples, so only the last chunk needs the total
    total = None if n_samples is None else n_samples // HOP_LENGTH + 1
    buffer = np.zeros(N_FFT // 2, dtype=np.float32)
    done = seen = 0
    for block in blocks:
        block = np.asarray(block, dtype=np.float32)
        seen += len(block)
        buffer = np.concatenate([buffer, block])
        n = (len(buffer) - N_FFT) // HOP_LENGTH + 1 if len(buffer) >= N_FFT else 0
        if total is not None:
            n = min(n, total - done)
        if n > 0:
            yield mel(buffer[:(n - 1) * HOP_LENGTH + N_FFT])
            buffer, done = buffer[n * HOP_LENGTH:], done + n
    total = seen // HOP_LENGTH + 1 if total is None else total
    buffer = np.concatenate([buffer, np.zeros(N_FFT // 2, dtype=np.float32)])
    n = min((len(buffer) - N_FFT) // HOP_LENGTH + 1, total - done)
    if n > 0:
        yield mel(buffer[:(n - 1) * HOP_LENGTH + N_FFT])


def onset_envelope_of_file(path, *, waveform_rate: int | None = None, block_seconds: float = 30.0,
                           min_duration: float | None = None) -> StreamedOnset:
    """:func:`onset_envelope` of a file (peak-normalised 16 kHz mono) without holding its
    samples or its spectrogram: O(frames) memory, not O(samples).

    Two streaming passes (two decodes): the first finds the length, the peak and the
    largest mel power (for the 80 dB floor; mel power scales with the square of the
    peak normalisation), the second the envelope chunk by chunk and, when asked, the
    waveform envelope for plots. Equal to ``onset_envelope(load_audio(path, 16000))``
    up to float rounding.
    """
    scan = iter_audio_blocks(path, SAMPLE_RATE, block_seconds)
    top_raw = max((float(chunk.max()) for chunk in _mel_power_chunks(scan)), default=0.0)
    n_samples = scan.n_samples
    peak = float(scan.peak)
    check_min_duration(n_samples, SAMPLE_RATE, min_duration, scan.path)
    scale = 1.0 / peak
    top = top_raw * scale * scale
    floor = 10.0 * np.log10(max(_AMIN, top)) - TOP_DB
    total = n_samples // HOP_LENGTH + 1
    env = np.zeros(total, dtype=np.float64)
    wave = _WaveformEnvelope(SAMPLE_RATE // waveform_rate) if waveform_rate else None

    def normalised():
        for block in iter_audio_blocks(path, SAMPLE_RATE, block_seconds):
            block = block * np.float32(scale)
            if wave is not None:
                wave.add(block)
            yield block

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
    return StreamedOnset(_scaled(env), n_samples, None if wave is None else wave.result())


class _WaveformEnvelope:
    """Maximum of each ``step`` consecutive samples of a stream fed block by block
    (a partial last step dropped): :meth:`add` each block, then :meth:`result`."""

    def __init__(self, step: int):
        self.step = step
        self.parts: list[np.ndarray] = []
        self.carry = np.zeros(0, dtype=np.float32)

    def add(self, block: np.ndarray) -> None:
        x = np.concatenate([self.carry, block])
        n = len(x) // self.step * self.step
        self.parts.append(x[:n].reshape(-1, self.step).max(axis=1))
        self.carry = x[n:]

    def result(self) -> np.ndarray:
        return np.concatenate(self.parts) if self.parts else np.zeros(0, dtype=np.float32)
