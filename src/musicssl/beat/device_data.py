"""Device-resident ZeroNS training clips: the whole feature cache in one tensor, batches by tensor ops.

:class:`ClipBank` holds the cached log-VQT of every track side by side,
float16 ``(2, 96, N)`` (row 0 percussive, row 1 non-percussive), and the
percussive frame RMS ``(N,)``; :class:`DeviceClipLoader` draws whole batches
with the distribution of :class:`musicssl.beat.data.ClipDataset`: tracks in
proportion to their number of clip positions, a uniform start, and clips
whose percussive part is nearly silent or flat
(:func:`musicssl.beat.data.percussive_is_silent`) re-drawn up to
``max_tries`` times (all tries drawn at once; the silence test reads prefix
sums, O(1) per candidate). Randomness comes from ``(seed, global step)``
through a CPU generator, so CPU and GPU draw the same clips and a resumed run
continues exactly. Batches are ``(percussive (B, 1, 96, T), rest (B, 1, 96, T))``
float32, as the DataLoader path gives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from musicssl.beat.data import load_cache_entries
from musicssl.beat.frontend import FPS
from musicssl.errors import ConfigError
from musicssl.io.model_file import (
    read_tensor_file,
    restored_features,
    stored_features,
    write_tensor_file,
)

BANK_FORMAT = "musicssl.zerons-bank"
BANK_VERSION = 2                 # 2: the features may be stored as uint8 codes ("storage" in the metadata)
#: natural-log units a uint8-coded bank keeps below each track's peak (70 dB; steps of 0.063)
CODE_SPAN = 16.0


@dataclass
class ClipBank:
    """``feats`` float16 ``(2, 96, N)``; ``rms`` float16 ``(N,)``; track ``i`` spans
    ``starts[i] : starts[i] + lengths[i]``; ``ids``: content ids; ``info``: cache settings."""

    feats: torch.Tensor
    rms: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    ids: list[str]
    info: dict

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def seconds(self) -> float:
        return float(self.lengths.sum()) / FPS

    def to(self, device) -> "ClipBank":
        return ClipBank(self.feats.to(device), self.rms.to(device), self.starts.to(device),
                        self.lengths.to(device), list(self.ids), dict(self.info))

    @classmethod
    def from_arrays(cls, feats: list[np.ndarray], rms: list[np.ndarray], info: dict | None = None,
                    max_seconds: float | None = None) -> "ClipBank":
        """From per-track ``(2, 96, T_i)`` features and ``(T_i,)`` RMS; ``max_seconds`` keeps each track's middle."""
        import hashlib

        keep = None if not max_seconds else int(round(max_seconds * FPS))
        fs, rs, ids = [], [], []
        for f, r in zip(feats, rms):
            f, r = np.asarray(f, np.float16), np.asarray(r, np.float16)
            n = min(f.shape[-1], r.shape[-1])
            first = (n - keep) // 2 if keep is not None and n > keep else 0
            last = first + (keep if keep is not None and n > keep else n)
            fs.append(np.ascontiguousarray(f[..., first:last]))
            rs.append(np.ascontiguousarray(r[first:last]))
            ids.append(hashlib.sha1(fs[-1].tobytes()).hexdigest()[:16])
        if not fs:
            raise ConfigError("no ZeroNS features to put in a clip bank")
        lengths = torch.tensor([f.shape[-1] for f in fs], dtype=torch.int64)
        return cls(torch.from_numpy(np.concatenate(fs, -1)), torch.from_numpy(np.concatenate(rs)),
                   torch.cumsum(lengths, 0) - lengths, lengths, ids, dict(info or {}))

    @classmethod
    def from_cache(cls, cache_dir: str | Path, max_seconds: float | None = None,
                   max_total_seconds: float | None = None) -> "ClipBank":
        """The tracks of a cache built by :func:`musicssl.beat.data.build_cache` (in index order),
        until ``max_total_seconds`` of features are taken."""

        cache_dir = Path(cache_dir)
        index = json.loads((cache_dir / "index.json").read_text())
        feats, rms, total = [], [], 0.0
        for e in load_cache_entries(cache_dir):
            f = np.load(cache_dir / e.file, mmap_mode="r")
            seconds = min(f.shape[-1] / FPS, max_seconds or np.inf)
            if max_total_seconds is not None and total + seconds > max_total_seconds:
                if max_total_seconds - total < 1.0:
                    break
                seconds = max_total_seconds - total
            feats.append(f)
            rms.append(np.load(cache_dir / e.rms_file, mmap_mode="r"))
            if seconds < f.shape[-1] / FPS:   # keep the middle `seconds` of this track
                n, keep = f.shape[-1], int(round(seconds * FPS))
                first = (n - keep) // 2
                feats[-1], rms[-1] = f[..., first:first + keep], rms[-1][first:first + keep]
            total += seconds
        return cls.from_arrays(feats, rms, {"settings": index.get("settings"), "separator": index.get("separator")})

    def save(self, path: str | Path, storage: str = "float16") -> Path:
        """One ``.safetensors`` file (tensors + JSON metadata), written atomically. ``storage``:
        ``"float16"`` (exact) or ``"uint8"`` (half the size: log-VQT coded in steps of 0.063 below
        each track's peak, :func:`musicssl.io.model_file.encode_below_peak`)."""
        tensors = {"rms": self.rms, "starts": self.starts, "lengths": self.lengths,
                   **stored_features("feats", self.feats, self.lengths, CODE_SPAN, storage)}
        return write_tensor_file(path, tensors, BANK_FORMAT, BANK_VERSION,
                                 {"ids": self.ids, "info": self.info, "storage": storage})

    @classmethod
    def load(cls, path: str | Path, device="cpu") -> "ClipBank":
        t, info = read_tensor_file(path, BANK_FORMAT, BANK_VERSION, "musicssl ZeroNS clip bank")
        feats = restored_features(t, "feats", t["lengths"], CODE_SPAN, info.get("storage"))
        return cls(feats, t["rms"], t["starts"], t["lengths"], info["ids"], info["info"]).to(device)


class DeviceClipLoader:
    """Random clips of a :class:`ClipBank`, drawn on its device; an iterable Lightning accepts.

    ``len(self) = clips_per_epoch // batch_size`` batches per pass. Batch
    ``j`` of a pass that starts at optimizer step ``s0 = step_source()``
    draws from ``(seed, s0 + j, rank)``: the clips of a step depend on the
    step only, however the run was interrupted and resumed.
    """

    def __init__(self, bank: ClipBank, clip_seconds: float, batch_size: int, clips_per_epoch: int, *,
                 seed: int = 0, rank: int = 0, min_percussive_db: float = -45.0,
                 min_percussive_variation_db: float = 1.0, max_tries: int = 20,
                 step_source: Callable[[], int] | None = None):
        self.clip_frames = int(round(clip_seconds * FPS))
        lengths = bank.lengths.cpu()
        keep = [i for i in range(len(bank)) if int(lengths[i]) >= self.clip_frames]
        if not keep:
            raise ConfigError(f"no cached track is at least {clip_seconds} s long")
        self.bank = bank
        self.tracks = torch.tensor(keep, dtype=torch.int64)
        positions = (lengths[self.tracks] - self.clip_frames + 1).double()
        self.weights = positions / positions.sum()
        self.batch_size, self.clips_per_epoch = int(batch_size), int(clips_per_epoch)
        self.seed, self.rank, self.max_tries = int(seed), int(rank), int(max_tries)
        self.min_db, self.min_variation_db = float(min_percussive_db), float(min_percussive_variation_db)
        self.step_source = step_source
        self._passes = 0
        self._lengths, self._starts = lengths, bank.starts.cpu()   # host copies: no device sync per draw
        # prefix sums over the bank (float64) for the silence test of any window in O(1)
        r = bank.rms.double()
        db = 20 * torch.log10(r + 1e-6)
        zero = torch.zeros(1, dtype=torch.float64, device=r.device)
        self._sum_sq = torch.cat([zero, torch.cumsum(r * r, 0)])
        self._sum_db = torch.cat([zero, torch.cumsum(db, 0)])
        self._sum_db2 = torch.cat([zero, torch.cumsum(db * db, 0)])

    def __len__(self) -> int:
        return self.clips_per_epoch // self.batch_size

    def silent(self, first: torch.Tensor) -> torch.Tensor:
        """Bool ``(...)``: the clips starting at bank frames ``first`` have a silent or flat percussive part."""
        n, last = self.clip_frames, first + self.clip_frames
        mean_sq = (self._sum_sq[last] - self._sum_sq[first]) / n
        overall = 20 * torch.log10(torch.sqrt(mean_sq.clamp(min=0)) + 1e-10)
        mean = (self._sum_db[last] - self._sum_db[first]) / n
        var = ((self._sum_db2[last] - self._sum_db2[first]) / n - mean * mean).clamp(min=0)
        return (overall < self.min_db) | (torch.sqrt(var) < self.min_variation_db)

    def draw(self, step: int) -> torch.Tensor:
        """Bank frame of the first frame of each clip of step ``step``, ``(B,)`` int64 on the bank's device."""
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([self.seed, step, self.rank, 0x7a6e])
                                                .generate_state(1, np.uint64)[0] >> 1))
        b, tries = self.batch_size, self.max_tries
        pick = torch.multinomial(self.weights, b * tries, replacement=True, generator=gen).view(b, tries)
        track = self.tracks[pick]
        positions = self._lengths[track] - self.clip_frames + 1
        u = torch.rand(b, tries, generator=gen, dtype=torch.float64)
        first = self._starts[track] + torch.floor(u * positions).long()
        first = first.to(self.bank.device)
        ok = ~self.silent(first)
        # the first non-silent try, else the last try (as ClipDataset.draw)
        choice = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(ok[:, 0], tries - 1, dtype=torch.long))
        return first.gather(1, choice[:, None])[:, 0]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(percussive, rest)`` float32 ``(B, 1, 96, T)`` of step ``step``."""
        first = self.draw(step)
        # every clip-long window as a view (N - T + 1, 2, 96, T), then one gather of whole windows
        windows = self.bank.feats.unfold(2, self.clip_frames, 1).permute(2, 0, 1, 3)
        clips = windows[first]                                                # (B, 2, 96, T) float16
        return clips[:, 0:1].float().contiguous(), clips[:, 1:2].float().contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.step_source is not None:
            start = int(self.step_source())
        else:                                   # no trainer: consecutive passes, consecutive steps
            start = self._passes * len(self)
            self._passes += 1
        for j in range(len(self)):
            yield self.batch(start + j)
