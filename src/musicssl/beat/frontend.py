"""The Zero-Note Samba front end (SPEC §2.1): VQT at 16 kHz, C0, 96 bins, hop 256.

Reuses :class:`musicssl.dsp.cqt.CQT` (gamma = 0, i.e. a CQT) and applies
``log(|X| + 1e-9)``.  Output frame ``t`` is centred on sample ``256 t`` of the
16 kHz input: 62.5 frames/s, ``T = N // 256 + 1`` frames.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from musicssl.dsp.cqt import CQT

SAMPLE_RATE = 16000
HOP_LENGTH = 256
FPS = SAMPLE_RATE / HOP_LENGTH  # 62.5 frames per second
FMIN_C0 = 16.351597831287414  # Hz
N_BINS = 96
BINS_PER_OCTAVE = 12
LOG_EPS = 1e-9


class ZeroNSFrontEnd(nn.Module):
    """Waveform ``(B, N)`` or ``(N,)`` at 16 kHz -> log-VQT ``(B, 1, 96, N // 256 + 1)``."""

    def __init__(self, sr: int = SAMPLE_RATE, hop_length: int = HOP_LENGTH, fmin: float = FMIN_C0,
                 n_bins: int = N_BINS, bins_per_octave: int = BINS_PER_OCTAVE, eps: float = LOG_EPS):
        super().__init__()
        self.sr = int(sr)
        self.hop_length = int(hop_length)
        self.eps = float(eps)
        self.cqt = CQT(sr=sr, hop_length=hop_length, fmin=fmin, n_bins=n_bins,
                       bins_per_octave=bins_per_octave)

    @property
    def fps(self) -> float:
        """Output frames per second."""
        return self.sr / self.hop_length

    def n_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` input samples."""
        return self.cqt.n_frames(n_samples)

    def forward(self, waveform: Tensor) -> Tensor:
        mag = self.cqt(waveform)  # (B, F, T)
        return torch.log(mag + self.eps)[:, None]


def vqt_features(frontend: ZeroNSFrontEnd, samples: "np.ndarray | Tensor",
                 device: "str | torch.device" = "cpu", chunk_s: float = 120.0) -> np.ndarray:
    """Log-VQT of one mono waveform as float32 ``(96, T)``; long inputs in overlapping chunks."""
    x = torch.as_tensor(np.asarray(samples, dtype=np.float32)).reshape(-1)
    hop = frontend.hop_length
    n = x.shape[0]
    chunk = max(hop, int(chunk_s * frontend.sr) // hop * hop)
    frontend = frontend.to(device)
    with torch.inference_mode():
        if n <= chunk:
            return frontend(x[None].to(device))[0, 0].cpu().numpy()
        # chunks overlap by a margin larger than the VQT's receptive field
        margin = (frontend.cqt.receptive_field() // hop + 2) * hop
        total = frontend.n_frames(n)
        out = np.empty((frontend.cqt.n_bins, total), dtype=np.float32)
        start = 0
        while start < n:
            lo = max(0, start - margin)
            hi = min(n, start + chunk + margin)
            feats = frontend(x[lo:hi][None].to(device))[0, 0].cpu().numpy()
            f0 = start // hop
            f1 = min(total, (start + chunk) // hop) if start + chunk < n else total
            out[:, f0:f1] = feats[:, f0 - lo // hop:f1 - lo // hop]
            start += chunk
        return out
