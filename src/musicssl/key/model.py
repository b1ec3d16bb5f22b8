"""ChromaNet: the key network of STONE, 24-STONE and S-KEY (SPEC §1.2).

A pure ``nn.Module``: log-CQT crop ``(B, 1, 84, T)`` in, ``12 * n_rows``
softmax probabilities out. Parameter names follow the released S-KEY
checkpoint (``convnext_blocks.*``, ``time_downsampling_blocks.*``,
``classifier.*``, ``batch_norm.*``) so its weights load unchanged.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from musicssl.errors import AudioTooShortError, ConfigError

__all__ = ["ChromaNet", "ConvNeXtBlock", "TimeDownsamplingBlock", "DropPath",
           "DEFAULT_CHANNELS", "DEFAULT_KERNELS"]

DEFAULT_CHANNELS: tuple[int, ...] = (2, 3, 40, 40, 30, 10, 3)
DEFAULT_KERNELS: tuple[int, ...] = (7, 7, 7, 7, 7, 5, 5)


def _layer_norm_all(x: Tensor) -> Tensor:
    """Parameter-free layer norm over every dim but the batch (eps 1e-5)."""
    return F.layer_norm(x, x.shape[1:])


class DropPath(nn.Module):
    """Stochastic depth: zero the whole residual branch of an example with prob. ``p`` (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p:g}"


class TimeDownsamplingBlock(nn.Module):
    """Layer norm over (C, F, T) → 1×2 conv with stride (1, 2) → GELU. ``(B, C_in, F, T)`` → ``(B, C_out, F, T // 2)``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=(1, 2), stride=(1, 2))

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.conv(_layer_norm_all(x)))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: depthwise K×K conv (replicate padding) → layer norm over (C, F, T) →
    per-position MLP C → 4C → C with GELU → per-channel scale → stochastic depth → residual.
    Shape-preserving ``(B, C, F, T)``."""

    def __init__(self, channels: int, kernel_size: int = 7, drop_path: float = 0.1,
                 layer_scale_init: float = 0.1):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, kernel_size=kernel_size,
                                padding=kernel_size // 2, groups=channels, padding_mode="replicate")
        self.pwconv1 = nn.Linear(channels, 4 * channels)
        self.pwconv2 = nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.full((channels,), float(layer_scale_init)))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        y = _layer_norm_all(self.dwconv(x))
        if torch.is_grad_enabled():
            y = y.permute(0, 2, 3, 1)  # channels last for the MLP
            y = self.pwconv2(F.gelu(self.pwconv1(y))) * self.gamma
            return x + self.drop_path(y.permute(0, 3, 1, 2))
        # inference: the same MLP a few frequency rows at a time, so the 4C-channel
        # hidden tensor stays small on long inputs (whole tracks)
        b, c, f, t = y.shape
        rows = max(1, min(f, _HIDDEN_BUDGET // max(1, b * 4 * c * t)))
        out = torch.empty((b, f, t, c), dtype=y.dtype, device=y.device)
        for start in range(0, f, rows):
            part = y[:, :, start:start + rows].permute(0, 2, 3, 1)
            out[:, start:start + rows] = self.pwconv2(F.gelu(self.pwconv1(part))) * self.gamma
        del y
        return x + self.drop_path(out.permute(0, 3, 1, 2))


#: elements of the MLP's hidden tensor computed at once during inference
_HIDDEN_BUDGET = 1 << 22
#: crops × batch × frames that :meth:`ChromaNet.forward_crops` batches at once on a GPU
#: (12 crops of a 30 s clip; a 10-minute window runs one crop at a time)
_CROP_BATCH_FRAMES = 1 << 14
#: batch crops on CPU too (off: one crop at a time measured faster on one CPU thread)
BATCH_CROPS_ON_CPU = False


class ChromaNet(nn.Module):
    """ChromaNet with ``n_rows`` output rows of 12 (1: STONE, 2: 24-STONE / S-KEY).

    Input ``(B, 1, n_bins, T)`` log-CQT with ``n_bins`` a multiple of 12 and
    ``T >= min_frames`` (= 2**len(channels), 128 frames ≈ 3 s at
    22 050 Hz / hop 512); any longer ``T`` is one forward pass. Inference
    memory grows with ``T``: about +270 MB for 10 minutes and +1.3 GB for one
    hour in a single pass (measured, CPU), so callers window very long tracks.
    """

    def __init__(self, n_rows: int = 2, channels: Sequence[int] = DEFAULT_CHANNELS,
                 kernels: Sequence[int] = DEFAULT_KERNELS, n_bins: int = 84,
                 drop_path: float = 0.1, temperature: float = 1.0):
        super().__init__()
        channels, kernels = tuple(int(c) for c in channels), tuple(int(k) for k in kernels)
        if len(channels) != len(kernels) or not channels:
            raise ConfigError("ChromaNet: channels and kernels must be non-empty and of equal length")
        if n_rows not in (1, 2):
            raise ConfigError(f"ChromaNet: n_rows must be 1 or 2, got {n_rows}")
        if n_bins % 12:
            raise ConfigError(f"ChromaNet: n_bins must be a multiple of 12, got {n_bins}")
        self.n_rows = int(n_rows)
        self.channels = channels
        self.kernels = kernels
        self.n_bins = int(n_bins)
        self.temperature = float(temperature)
        self.drop_path = float(drop_path)
        downs, blocks = [], []
        c_in = 1
        for c, k in zip(channels, kernels):
            downs.append(TimeDownsamplingBlock(c_in, c))
            blocks.append(ConvNeXtBlock(c, k, drop_path=drop_path))
            c_in = c
        self.time_downsampling_blocks = nn.ModuleList(downs)
        self.convnext_blocks = nn.ModuleList(blocks)
        self.classifier = nn.Conv2d(c_in, self.n_rows, kernel_size=1)
        self.batch_norm = nn.BatchNorm2d(self.n_rows, affine=False) if self.n_rows == 2 else None

    # -- configuration -----------------------------------------------------
    @property
    def min_frames(self) -> int:
        """Shortest input (frames) the network accepts."""
        return 2 ** len(self.channels)

    def architecture(self) -> dict:
        """JSON-able description from which ``ChromaNet(**...)`` rebuilds the network."""
        return {"model": "chromanet", "n_rows": self.n_rows, "channels": list(self.channels),
                "kernels": list(self.kernels), "n_bins": self.n_bins,
                "temperature": self.temperature}

    # -- forward -----------------------------------------------------------
    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != self.n_bins:
            raise ConfigError(f"ChromaNet expects (B, 1, {self.n_bins}, T), got {tuple(x.shape)}")
        if x.shape[-1] < self.min_frames:
            raise AudioTooShortError(
                f"ChromaNet needs at least {self.min_frames} frames, got {x.shape[-1]}",
                minimum=float(self.min_frames))

    def embed(self, x: Tensor) -> Tensor:
        """Octave- and time-pooled features before the classifier: ``(B, C_last, 12)``."""
        self._check(x)
        for down, block in zip(self.time_downsampling_blocks, self.convnext_blocks):
            x = block(down(x))
        b, c, f, t = x.shape
        # (B, C, octave, pitch class, T) -> mean over octaves and time
        return x.reshape(b, c, f // 12, 12, t).mean(dim=(2, 4))

    def logits(self, x: Tensor) -> Tensor:
        """Pre-softmax scores ``(B, 12 * n_rows)``, row-major (row 0's 12 values first)."""
        z = self.classifier(self.embed(x)[..., None])  # (B, n_rows, 12, 1)
        if self.batch_norm is not None:
            z = self.batch_norm(z)
        return z.flatten(1) / self.temperature

    def forward(self, x: Tensor) -> Tensor:
        """Probabilities ``(B, 12 * n_rows)`` (softmax over all outputs)."""
        return torch.softmax(self.logits(x), dim=-1)

    def forward_crops(self, x: Tensor, offsets: Sequence[int]) -> Tensor:
        """Probabilities of several frequency crops of a full log-CQT: ``x`` ``(B, 1, F, T)``
        with ``F >= max(offsets) + n_bins`` → ``(B, len(offsets), 12 * n_rows)``, where
        ``[:, j]`` equals ``forward(x[:, :, o:o + n_bins])`` for ``o = offsets[j]``.

        On GPUs the crops run as one batch (groups of crops when ``B * T`` is large, so
        memory stays about that of one crop on long inputs); on CPU one crop at a time,
        which measured faster (``benchmarks/key_crops_speed.py``). Nothing beyond the crop itself
        can be shared between crops exactly: every stage starts with a layer norm over
        the whole ``(C, F, T)`` of the crop, whose statistics differ from crop to crop
        and feed the GELUs, and the depthwise convolutions pad each crop's own edges.
        """
        offsets = [int(o) for o in offsets]
        if x.dim() != 4 or x.shape[1] != 1:
            raise ConfigError(f"forward_crops expects (B, 1, F, T), got {tuple(x.shape)}")
        if not offsets or min(offsets) < 0 or max(offsets) + self.n_bins > x.shape[2]:
            raise ConfigError(f"forward_crops: offsets must lie in [0, {x.shape[2] - self.n_bins}], "
                              f"got {offsets}")
        b, t = x.shape[0], x.shape[-1]
        group = 1
        if x.device.type != "cpu" or BATCH_CROPS_ON_CPU:
            group = max(1, min(len(offsets), _CROP_BATCH_FRAMES // max(1, b * t)))
        outs = []
        for start in range(0, len(offsets), group):
            chosen = offsets[start:start + group]
            crops = torch.stack([x[:, :, o:o + self.n_bins] for o in chosen], dim=1)  # (B, g, 1, n_bins, T)
            probs = self(crops.flatten(0, 1))
            outs.append(probs.view(b, len(chosen), -1))
        return torch.cat(outs, dim=1)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
