"""Audio → beat activation inputs, model-free and picklable (worker processes): the
onset strength of the default tracker, or separation + log-VQT of both parts for ZeroNS;
and, when beats are numbered, the frame features of :mod:`musicssl.beat.meter`."""

from __future__ import annotations

import functools

from musicssl.beat.estimator import MIN_SECONDS
from musicssl.beat.frontend import SAMPLE_RATE, ZeroNSFrontEnd, vqt_features
from musicssl.beat.meter import meter_frames
from musicssl.beat.onset import onset_envelope, onset_envelope_of_file, stft_magnitude
from musicssl.io.audio import is_long, load_audio

PLOT_RATE = 1000  # Hz of the waveform kept for plots


def prepare_file(path: str, separator=None, keep_waveform: bool = False, meter: bool = False) -> dict:
    """Model-free part (picklable): decode at 16 kHz, then the onset activation
    (``separator`` None) or separation + VQT of both parts (ZeroNS); with ``meter``
    also ``payload["meter"]``, the beat-numbering features (not for streamed files)."""

    if separator is None and is_long(path):   # long: never held whole
        streamed = onset_envelope_of_file(path, waveform_rate=PLOT_RATE if keep_waveform else None,
                                          min_duration=MIN_SECONDS)
        payload = {"duration_s": streamed.n_samples / SAMPLE_RATE, "onset": streamed.activation}
        if keep_waveform:
            payload["waveform"] = streamed.waveform
        return payload
    x = load_audio(path, sr=SAMPLE_RATE, min_duration=MIN_SECONDS)
    payload = {"duration_s": len(x) / SAMPLE_RATE}
    magnitude = stft_magnitude(x) if separator is None and meter else None   # shared by both
    if separator is None:
        payload["onset"] = onset_envelope(x, magnitude)
    else:
        perc, rest = separator(x, SAMPLE_RATE)
        frontend = _frontend()
        payload.update(perc=vqt_features(frontend, perc), rest=vqt_features(frontend, rest))
    if meter:
        payload["meter"] = meter_frames(x, magnitude)
    if keep_waveform:
        step = SAMPLE_RATE // PLOT_RATE
        payload["waveform"] = x[: len(x) // step * step].reshape(-1, step).max(axis=1)
    return payload


@functools.lru_cache(maxsize=1)
def _frontend():
    return ZeroNSFrontEnd()
