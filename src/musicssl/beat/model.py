"""The two Zero-Note Samba networks (SPEC §2.2), pure ``nn.Module``s.

Each network maps a log-VQT ``(B, 1, 96, T)`` to one value in ``(0, 1)`` per
frame, ``(B, T)`` at the input frame rate: eight "same"-padded 2-D
convolutions (frequency × time kernels), ReLU + dropout after each, max
pooling over frequency by 3, 4 and 8 after convolutions 2, 4 and 6
(96 -> 1), then a 1×1 convolution to one channel and a sigmoid.

``width`` scales every channel count (1.0 = the paper's 64…256 channels);
the shipped default model uses a reduced width because it was trained on a
2-core CPU (see docs/MODEL_CARD_zerons.md).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from musicssl.errors import ConfigError

SPEC_KERNELS: tuple[tuple[int, int], ...] = (
    (3, 11), (7, 13), (5, 15), (9, 17), (3, 19), (5, 21), (1, 23), (1, 25))
SPEC_CHANNELS: tuple[int, ...] = (64, 64, 128, 128, 256, 256, 128, 128)
#: (index of the convolution after which to pool, frequency pooling factor)
SPEC_POOLS: tuple[tuple[int, int], ...] = ((1, 3), (3, 4), (5, 8))
COMBINE_MODES = ("max", "mean")


def scaled_channels(width: float, channels: Sequence[int] = SPEC_CHANNELS) -> tuple[int, ...]:
    """Channel counts scaled by ``width`` (at least 1 each)."""
    if width <= 0:
        raise ConfigError(f"width must be positive, got {width}")
    return tuple(max(1, int(round(c * width))) for c in channels)


class ZeroNSNet(nn.Module):
    """One fully convolutional ZeroNS branch: ``(B, 1, n_bins, T)`` -> ``(B, T)`` in (0, 1)."""

    def __init__(self, n_bins: int = 96, width: float = 1.0,
                 channels: Sequence[int] = SPEC_CHANNELS,
                 kernels: Sequence[tuple[int, int]] = SPEC_KERNELS,
                 pools: Sequence[tuple[int, int]] = SPEC_POOLS, dropout: float = 0.1,
                 input_norm: bool = True):
        super().__init__()
        self.input_norm = bool(input_norm)
        if len(channels) != len(kernels):
            raise ConfigError("channels and kernels must have the same length")
        chans = scaled_channels(width, channels)
        pool_after = dict(pools)
        freq = n_bins
        for idx, factor in pools:
            if not 0 <= idx < len(kernels):
                raise ConfigError(f"pooling index {idx} is outside the {len(kernels)} convolutions")
        layers: list[nn.Module] = []
        c_in = 1
        for i, ((kf, kt), c_out) in enumerate(zip(kernels, chans)):
            if kf % 2 == 0 or kt % 2 == 0:
                raise ConfigError(f"kernel {kf}x{kt} must have odd sizes for 'same' padding")
            layers += [nn.Conv2d(c_in, c_out, (kf, kt), padding=(kf // 2, kt // 2)),
                       nn.ReLU(inplace=True), nn.Dropout(dropout)]
            if i in pool_after:
                factor = pool_after[i]
                if freq % factor:
                    raise ConfigError(f"{freq} frequency rows cannot be max-pooled by {factor}")
                layers.append(nn.MaxPool2d((factor, 1)))
                freq //= factor
            c_in = c_out
        if freq != 1:
            raise ConfigError(f"pooling leaves {freq} frequency rows; it must reduce {n_bins} bins to 1")
        self.n_bins = int(n_bins)
        self.width = float(width)
        self.channels = chans
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c_in, 1, kernel_size=1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for the ReLU convolutions (PyTorch's default shrinks the signal
        about threefold per layer, leaving an 8-layer net's output constant in time)."""
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def logits(self, x: Tensor, normalize: bool | None = None) -> Tensor:
        """Pre-sigmoid output ``(B, T)`` for ``x`` ``(B, 1, n_bins, T)``.

        ``normalize=False`` skips the input standardisation (for inputs
        already standardised, e.g. a long file processed in chunks).
        """
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.n_bins:
            raise ConfigError(f"expected input (B, 1, {self.n_bins}, T), got {tuple(x.shape)}")
        if self.input_norm if normalize is None else normalize:
            x = standardize(x)
        return self.head(self.body(x))[:, 0, 0]

    def forward(self, x: Tensor, normalize: bool | None = None) -> Tensor:
        """Per-frame value ``(B, T)`` in (0, 1)."""
        return torch.sigmoid(self.logits(x, normalize))


def standardize(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Each example ``(1, F, T)`` shifted and scaled to zero mean, unit variance over (F, T).

    The log-VQT (``log(|X| + 1e-9)``, about -21 … +3) has an arbitrary offset
    and gain that depend on loudness; without this the freshly initialised
    networks start out nearly constant over time and the contrastive loss
    has almost no gradient.  The scale is taken over the whole input, so
    lengths matter little (a long file and its 10 s excerpts differ slightly).
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    std = x.std(dim=(1, 2, 3), keepdim=True)
    return (x - mean) / (std + eps)


def combine_activations(percussive: Tensor, non_percussive: Tensor, mode: str = "max") -> Tensor:
    """Frame-wise combination of the two outputs ``(B, T)`` -> beat activation ``(B, T)``."""
    if mode == "max":
        return torch.maximum(percussive, non_percussive)
    if mode == "mean":
        return 0.5 * (percussive + non_percussive)
    raise ConfigError(f"unknown combine mode {mode!r}; choose one of {', '.join(COMBINE_MODES)}")


class ZeroNS(nn.Module):
    """Both branches: ``percussive`` sees the percussive part, ``non_percussive`` the rest."""

    def __init__(self, n_bins: int = 96, width: float = 1.0, dropout: float = 0.1,
                 input_norm: bool = True):
        super().__init__()
        self.config = {"n_bins": int(n_bins), "width": float(width), "dropout": float(dropout),
                       "input_norm": bool(input_norm)}
        self.percussive = ZeroNSNet(n_bins=n_bins, width=width, dropout=dropout, input_norm=input_norm)
        self.non_percussive = ZeroNSNet(n_bins=n_bins, width=width, dropout=dropout, input_norm=input_norm)

    def forward(self, percussive_spec: Tensor, non_percussive_spec: Tensor,
                normalize: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(B, 1, 96, T)`` each -> (percussive output ``(B, T)``, non-percussive output ``(B, T)``)."""
        return (self.percussive(percussive_spec, normalize),
                self.non_percussive(non_percussive_spec, normalize))

    def activation(self, percussive_spec: Tensor, non_percussive_spec: Tensor,
                   combine: str = "max") -> Tensor:
        """Beat activation ``(B, T)`` in (0, 1)."""
        p, a = self(percussive_spec, non_percussive_spec)
        return combine_activations(p, a, combine)
