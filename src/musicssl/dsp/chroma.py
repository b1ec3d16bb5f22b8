"""Chroma: the 12 pitch classes of a recording, frame by frame, as key finding reads them.

A CQT of 36 bins per octave over 7 octaves from C1 (32.7 Hz to 4.1 kHz) at the
caller's hop (:class:`~musicssl.dsp.cqt.CQT`, linear magnitude); the three bins
around each semitone (its centre and a third of a semitone either side) are
summed into its pitch class, and each frame is scaled to a maximum of 1 (frames
without energy stay 0). This is the chroma of librosa's ``chroma_cqt`` with its
defaults, the usual input of template key finding; computed with the project's
own CQT it needs neither librosa nor numba (start-up), streams in chunks like
the key CQT, and agrees with librosa's on the template baselines
(``benchmarks/key_baselines.py`` prints both side by side).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable, Iterator

import numpy as np
import torch

from musicssl.dsp.cqt import CQT, cqt_chunked, cqt_stream
from musicssl.dsp.tuning import tuned_fmin

__all__ = ["CHROMA_FMIN", "CHROMA_BINS_PER_OCTAVE", "CHROMA_OCTAVES", "chroma_cqt", "chroma_stream",
           "fold_to_chroma"]

#: C1 (Hz), the lowest bin's centre (pitch class C)
CHROMA_FMIN = 440.0 * 2.0 ** (-45 / 12)
CHROMA_BINS_PER_OCTAVE = 36
CHROMA_OCTAVES = 7
#: inputs longer than this (s) are transformed in chunks (same values)
CHUNK_SECONDS = 120.0


@lru_cache(maxsize=64)   # one per (rate, hop, whole-cent tuning, device) in use
def chroma_transform(sr: float, hop_length: int, tuning_cents: int = 0, device: str = "cpu") -> CQT:
    """The CQT of :func:`chroma_cqt`: 252 bins from C1 moved by ``tuning_cents``."""
    return CQT(sr=sr, hop_length=hop_length, fmin=tuned_fmin(CHROMA_FMIN, tuning_cents),
               n_bins=CHROMA_BINS_PER_OCTAVE * CHROMA_OCTAVES,
               bins_per_octave=CHROMA_BINS_PER_OCTAVE).to(device)


def fold_to_chroma(magnitude: np.ndarray) -> np.ndarray:
    """CQT magnitude ``(252, T)`` of :func:`chroma_transform` → chroma float32 ``(12, T)``,
    pitch class 0 = C, each frame scaled to a maximum of 1."""
    magnitude = np.asarray(magnitude, dtype=np.float32)
    per = CHROMA_BINS_PER_OCTAVE // 12
    # bin b sits b/3 semitones above C1: its semitone is round(b/3); roll so that the
    # bin a third below C (the octave's last) joins C
    rolled = np.roll(magnitude, 1, axis=0)
    rolled[0] = 0.0   # nothing lies a third of a semitone below the lowest bin
    chroma = rolled.reshape(CHROMA_OCTAVES * 12, per, -1).sum(axis=1)
    chroma = chroma.reshape(CHROMA_OCTAVES, 12, -1).sum(axis=0)
    chroma[0] += magnitude[-1]   # the top bin (a third below C8) belongs to C
    peak = chroma.max(axis=0, keepdims=True)
    return np.divide(chroma, peak, out=np.zeros_like(chroma), where=peak > np.finfo(np.float32).tiny)


@torch.inference_mode()
def chroma_cqt(samples: np.ndarray, sr: float, hop_length: int = 512, tuning_cents: float = 0.0,
               device: str = "cpu") -> np.ndarray:
    """Chroma float32 ``(12, N // hop_length + 1)`` of mono ``samples`` ``(N,)`` at ``sr`` Hz,
    frame ``t`` centred on sample ``t * hop_length``; ``tuning_cents`` (rounded to whole
    cents) moves every bin by that much."""
    cqt = chroma_transform(float(sr), int(hop_length), round(float(tuning_cents)), device)
    x = torch.as_tensor(np.ascontiguousarray(samples, dtype=np.float32), device=device)[None]
    mag = cqt_chunked(cqt, x, CHUNK_SECONDS) if x.shape[-1] > CHUNK_SECONDS * sr else cqt(x)
    return fold_to_chroma(mag[0].float().cpu().numpy())


@torch.inference_mode()
def chroma_stream(blocks: Iterable[np.ndarray], sr: float, hop_length: int = 512, tuning_cents: float = 0.0,
                  device: str = "cpu") -> Iterator[tuple[int, np.ndarray]]:
    """:func:`chroma_cqt` of a signal arriving in mono blocks: ``(first_frame, chroma (12, t))``
    pieces in order, the signal never held whole (:func:`~musicssl.dsp.cqt.cqt_stream`)."""
    cqt = chroma_transform(float(sr), int(hop_length), round(float(tuning_cents)), device)
    for first, piece in cqt_stream(cqt, blocks, CHUNK_SECONDS):
        yield first, fold_to_chroma(piece.float().cpu().numpy())
