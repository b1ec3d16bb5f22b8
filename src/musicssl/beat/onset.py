"""Onset-strength beat activation: the training-free front end of the default beat tracker.

librosa's spectral-flux onset strength (log-power mel spectrogram, positive
differences averaged over bands) at 16 kHz with hop 256, so it has the ZeroNS
frame rate (62.5 frames/s, frame ``t`` at ``t / 62.5`` s), scaled to [0, 1]
by its maximum. It is decoded with the project DBN and the settings below
(:data:`ONSET_DBN_PARAMS`), chosen by ``benchmarks/beat_eval.py`` against
librosa's own tracker.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 16000
HOP_LENGTH = 256
FPS = SAMPLE_RATE / HOP_LENGTH

#: DBN settings for an onset envelope: a wider beat window than for a peaky
#: network output (``observation_lambda`` 8: the first 1/8 of each beat), and
#: librosa's tempo prior (log-normal, 120 BPM, one octave).
ONSET_DBN_PARAMS = {"observation_lambda": 8.0, "prior_bpm": 120.0, "prior_octaves": 1.0}


def onset_envelope(samples16k: np.ndarray) -> np.ndarray:
    """Onset strength ``(N // 256 + 1,)`` float32 in [0, 1] of mono 16 kHz audio ``(N,)``.

    All zeros for silence or a constant signal.
    """
    import librosa

    x = np.asarray(samples16k, dtype=np.float32).reshape(-1)
    env = librosa.onset.onset_strength(y=x, sr=SAMPLE_RATE, hop_length=HOP_LENGTH)
    env = np.nan_to_num(np.asarray(env, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    peak = float(env.max()) if env.size else 0.0
    if peak <= 1e-9:
        return np.zeros(len(env), dtype=np.float32)
    return np.clip(env / peak, 0.0, 1.0).astype(np.float32)
