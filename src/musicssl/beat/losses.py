"""Losses of Zero-Note Samba (pure functions).

* :func:`nt_xent` — the synchrony pretext loss of SPEC §2.3.
* :func:`shift_frames` — time-shifted copies used as hard negatives.
* :func:`widened_beat_targets` / :func:`beat_bce_logits` (/ :func:`beat_bce`) — few-shot fine-tuning.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from musicssl.errors import ConfigError

DEFAULT_TEMPERATURE = 0.25


def nt_xent(anchors: Tensor, positives: Tensor, negatives: Tensor | None = None,
            temperature: float = DEFAULT_TEMPERATURE, center: bool = False) -> Tensor:
    """Mean NT-Xent loss with cosine similarity.

    ``anchors`` ``(N, T)`` (non-percussive outputs ``a_i``), ``positives``
    ``(N, T)`` (percussive outputs ``p_i``; ``p_j``, ``j != i`` are the
    negatives of ``a_i``), optional extra ``negatives`` ``(M, T)`` shared by
    every anchor (e.g. time-shifted ``p_i``).  ``loss_i = -log(exp(cos(a_i,
    p_i)/τ) / Σ_c exp(cos(a_i, c)/τ))`` over all candidates ``c``.

    ``center=True`` subtracts each vector's mean over time first (cosine of
    centred vectors = Pearson correlation).  Sigmoid outputs are positive,
    so their plain cosine is dominated by the mean level: near-constant
    outputs make every pair similar and the loss sits at ``log(N)`` with
    almost no gradient; centring removes that trap.
    """
    if anchors.dim() != 2 or anchors.shape != positives.shape:
        raise ConfigError(f"anchors and positives must both be (N, T); got "
                          f"{tuple(anchors.shape)} and {tuple(positives.shape)}")
    if temperature <= 0:
        raise ConfigError(f"temperature must be positive, got {temperature}")
    candidates = positives
    if negatives is not None:
        if negatives.dim() != 2 or negatives.shape[1] != anchors.shape[1]:
            raise ConfigError(f"negatives must be (M, {anchors.shape[1]}), got {tuple(negatives.shape)}")
        candidates = torch.cat([positives, negatives], dim=0)
    if center:
        anchors = anchors - anchors.mean(dim=1, keepdim=True)
        candidates = candidates - candidates.mean(dim=1, keepdim=True)
    a = F.normalize(anchors, dim=1, eps=1e-8)
    c = F.normalize(candidates, dim=1, eps=1e-8)
    logits = a @ c.T / temperature  # (N, N + M)
    target = torch.arange(anchors.shape[0], device=anchors.device)
    return F.cross_entropy(logits, target)


def shift_frames(x: Tensor, shifts: Tensor) -> Tensor:
    """Each row of ``x`` ``(N, T)`` circularly shifted in time by ``shifts[i]`` frames."""
    n, t = x.shape
    idx = (torch.arange(t, device=x.device)[None] - shifts.to(x.device)[:, None]) % t
    return torch.gather(x, 1, idx)


def random_shifts(n: int, min_shift: int, max_shift: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` random shifts with ``min_shift <= |s| <= max_shift`` frames, random sign."""
    if not 0 < min_shift <= max_shift:
        raise ConfigError(f"need 0 < min_shift <= max_shift, got {min_shift}, {max_shift}")
    mag = torch.randint(min_shift, max_shift + 1, (n,), generator=generator)
    sign = torch.randint(0, 2, (n,), generator=generator) * 2 - 1
    return mag * sign


def widened_beat_targets(beat_times: "np.ndarray | list[float]", n_frames: int, fps: float,
                         neighbour_weight: float = 0.5, widen: int = 1) -> np.ndarray:
    """Frame targets float32 ``(n_frames,)``: 1 at beat frames, ``neighbour_weight`` within ±``widen`` frames."""
    target = np.zeros(n_frames, dtype=np.float32)
    frames = np.round(np.asarray(beat_times, dtype=np.float64) * fps).astype(np.int64)
    frames = frames[(frames >= 0) & (frames < n_frames)]
    for d in range(1, widen + 1):
        for f in (frames - d, frames + d):
            f = f[(f >= 0) & (f < n_frames)]
            target[f] = np.maximum(target[f], neighbour_weight)
    target[frames] = 1.0
    return target


def beat_bce(activation: Tensor, target: Tensor, mask: Tensor | None = None,
             pos_weight: float = 1.0) -> Tensor:
    """Binary cross-entropy between an activation in (0, 1) and targets, both ``(B, T)``.

    ``pos_weight`` up-weights target mass (beats are ~1 frame in 30);
    ``mask`` ``(B, T)`` (1 = counted) excludes padding.
    """
    act = activation.clamp(1e-6, 1 - 1e-6)
    loss = -(pos_weight * target * torch.log(act) + (1 - target) * torch.log1p(-act))
    if mask is None:
        return loss.mean()
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def beat_bce_logits(logits: Tensor, target: Tensor, mask: Tensor | None = None,
                    pos_weight: float = 1.0) -> Tensor:
    """Binary cross-entropy of pre-sigmoid ``logits`` against targets, both ``(B, T)``.

    Numerically stable (no clamping, so a saturated output still has a
    gradient); ``pos_weight`` and ``mask`` as in :func:`beat_bce`.
    """
    loss = F.binary_cross_entropy_with_logits(
        logits, target, pos_weight=torch.tensor(float(pos_weight), device=logits.device), reduction="none")
    if mask is None:
        return loss.mean()
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)
