"""Device-resident training data for the key objectives: whole batches drawn by tensor operations.

The DataLoader path (:class:`musicssl.key.dataset.PairDataset`) assembles every
item in Python; here the whole feature cache lives in one float16 tensor on
the training device (:class:`KeyBank`, ``(F, N)`` decibels, tracks side by
side) and :class:`DeviceBatchLoader` draws a whole batch at once:

* which tracks: the same seeded per-epoch permutation as the DataLoader path
  (:class:`musicssl.key.dataset.EpochSampler`, sharded by rank, ``resume_at``);
* segment starts, transposition ``(o, o', k)``, equaliser curves: the
  distributions of :func:`~musicssl.key.dataset.choose_segments`,
  :func:`~musicssl.key.dataset.draw_transposition` and
  :func:`~musicssl.key.dataset.random_eq_db`, drawn as ``(B,)`` tensors from a
  CPU generator seeded by ``(seed, epoch, batch position, rank)`` (the same
  numbers on CPU and GPU; exact resume);
* gather of the two segments, EQ, per-segment log compression, the three
  crops and the pitch-class profile (:func:`~musicssl.key.dataset.make_views`),
  and the labels in the crop frame: tensor operations on the device.

Batches have the keys and shapes of the DataLoader path's (``views``,
``profile``, ``k``, ``o``, ``o2``, ``index``, ``labelled``,
``tonic_column``, ``is_major``), so the training step is the same.
A bank is saved as one ``.safetensors`` file keyed by content (no audio
paths), which is what the packed GPU job carries (:mod:`musicssl.gpu_job`);
``storage="uint8"`` halves the file (decibels coded in 0.47 dB steps below each
track's peak, :func:`musicssl.io.model_file.encode_below_peak`), so a pack of
fixed size carries twice the music.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from musicssl.dsp.cqt import compress_db
from musicssl.errors import ConfigError
from musicssl.io.model_file import (
    read_tensor_file,
    restored_features,
    stored_features,
    write_tensor_file,
)
from musicssl.key.dataset import (
    MAX_CROP_OFFSET,
    EpochSampler,
    SegmentConfig,
    make_views,
    segment_frames,
    segment_policy_counts,
)
from musicssl.keys import cqt_bin_pitch_class, parse_key

BANK_FORMAT = "musicssl.key-bank"
BANK_VERSION = 2                 # 2: the decibels may be stored as uint8 codes ("storage" in the metadata)
#: decibels a uint8-coded bank keeps below each track's peak (the cache floors at −100 dB, peaks are ~10 dB)
CODE_RANGE_DB = 120.0


#: pitch class of CQT bins 0..15 (the crop offsets)
_PITCH_CLASS_OF_BIN = torch.tensor([int(cqt_bin_pitch_class(i)) for i in range(MAX_CROP_OFFSET + 4)])


def _content_id(db: np.ndarray) -> str:
    """Stable id of a track's cached features (sha1 of the float16 bytes, 16 hex digits)."""
    return hashlib.sha1(np.ascontiguousarray(db, dtype=np.float16).tobytes()).hexdigest()[:16]


@dataclass
class KeyBank:
    """Cached CQT decibels of many tracks in one tensor.

    ``db``: float16 ``(F, N)``; track ``i`` is ``db[:, starts[i]:starts[i] + lengths[i]]``.
    ``tonic``: int64 ``(n,)`` pitch class of the labelled key, −1 when unlabelled;
    ``is_major``: int64 ``(n,)``; ``ids``: content ids; ``split``: per track
    ``"train"`` or ``"val"``; ``frontend``: the FrontEndConfig dict it was computed with.
    """

    db: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    tonic: torch.Tensor
    is_major: torch.Tensor
    ids: list[str]
    split: list[str]
    frontend: dict

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def device(self) -> torch.device:
        return self.db.device

    def to(self, device) -> "KeyBank":
        move = lambda t: t.to(device, non_blocking=True)
        return KeyBank(move(self.db), move(self.starts), move(self.lengths), move(self.tonic),
                       move(self.is_major), list(self.ids), list(self.split), dict(self.frontend))

    def subset(self, split: str) -> "KeyBank":
        """The tracks of one split (a new, compact bank)."""
        keep = [i for i, s in enumerate(self.split) if s == split]
        return self.select(keep)

    def select(self, keep: Sequence[int]) -> "KeyBank":
        parts = [self.db[:, int(self.starts[i]):int(self.starts[i] + self.lengths[i])] for i in keep]
        lengths = torch.tensor([p.shape[1] for p in parts], dtype=torch.int64)
        starts = torch.cumsum(lengths, 0) - lengths
        db = torch.cat(parts, 1) if parts else self.db[:, :0]
        idx = torch.tensor(list(keep), dtype=torch.int64)
        return KeyBank(db, starts.to(self.device), lengths.to(self.device), self.tonic[idx.to(self.device)],
                       self.is_major[idx.to(self.device)], [self.ids[i] for i in keep],
                       [self.split[i] for i in keep], dict(self.frontend))

    # -- construction
    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray], frontend: dict, keys: Sequence[str | None] | None = None,
                    split: Sequence[str] | None = None, max_seconds: float | None = None) -> "KeyBank":
        """A bank of ``(F, T_i)`` decibel arrays; ``max_seconds`` keeps the middle of longer tracks."""
        fps = frontend["sr"] / frontend["hop_length"]
        keep = None if not max_seconds else int(round(max_seconds * fps)) + 1
        parts, ids = [], []
        for a in arrays:
            a = np.asarray(a, dtype=np.float16)
            if keep is not None and a.shape[1] > keep:
                first = (a.shape[1] - keep) // 2
                a = a[:, first:first + keep]
            parts.append(np.ascontiguousarray(a))
            ids.append(_content_id(a))
        n = len(parts)
        keys = list(keys) if keys is not None else [None] * n
        tonic, major = [], []
        for text in keys:
            key = parse_key(text) if text else None
            tonic.append(-1 if key is None else int(key.tonic))
            major.append(0 if key is None else int(key.is_major))
        lengths = torch.tensor([p.shape[1] for p in parts], dtype=torch.int64)
        db = torch.from_numpy(np.concatenate(parts, 1)) if parts else torch.zeros(frontend["n_bins"], 0,
                                                                                 dtype=torch.float16)
        return cls(db, torch.cumsum(lengths, 0) - lengths, lengths, torch.tensor(tonic, dtype=torch.int64),
                   torch.tensor(major, dtype=torch.int64), ids, list(split or ["train"] * n), dict(frontend))

    @classmethod
    def from_cache(cls, cache, tracks: Sequence, split: str | Sequence[str] = "train",
                   max_seconds: float | None = None) -> "KeyBank":
        """The cached tracks of a :class:`musicssl.key.dataset.FeatureCache` (uncached ones are left out)."""
        splits = [split] * len(tracks) if isinstance(split, str) else list(split)
        kept = [(t, s) for t, s in zip(tracks, splits) if t.path in cache]   # a split stays with its track
        tracks, splits = [t for t, _ in kept], [s for _, s in kept]
        return cls.from_arrays([cache.array(t.path) for t in tracks], cache.frontend_config.to_dict(),
                               [t.key for t in tracks], splits, max_seconds)

    # -- files
    def save(self, path: str | Path, storage: str = "float16") -> Path:
        """One ``.safetensors`` file (tensors + JSON metadata), written atomically. ``storage``:
        ``"float16"`` (exact) or ``"uint8"`` (half the size; codes below each track's peak)."""
        tensors = {"starts": self.starts, "lengths": self.lengths, "tonic": self.tonic, "is_major": self.is_major,
                   **stored_features("db", self.db, self.lengths, CODE_RANGE_DB, storage)}
        return write_tensor_file(path, tensors, BANK_FORMAT, BANK_VERSION,
                                 {"ids": self.ids, "split": self.split, "frontend": self.frontend,
                                  "storage": storage})

    @classmethod
    def load(cls, path: str | Path, device="cpu") -> "KeyBank":
        t, info = read_tensor_file(path, BANK_FORMAT, BANK_VERSION, "musicssl key bank")
        db = restored_features(t, "db", t["lengths"], CODE_RANGE_DB, info.get("storage"))
        return cls(db, t["starts"], t["lengths"], t["tonic"], t["is_major"], info["ids"], info["split"],
                   info["frontend"]).to(device)


def batch_generator(seed: int, *position: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, *position)`` (independent streams per position)."""
    state = np.random.SeedSequence([int(seed), *map(int, position)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 ^ int(state[1]))


def draw_segments(n_frames: torch.Tensor, seg: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Start frames ``(a, b)`` ``(B,)`` of two ``seg``-frame segments in tracks of ``n_frames (B,)``.

    :func:`musicssl.key.dataset.choose_segments` as tensors: two disjoint,
    uniformly placed segments in random order when ``n ≥ 2·seg``; else the
    two ends of the track in random order (``n ≥ seg`` is required).
    """
    n = n_frames.to(torch.int64).cpu()
    u = torch.rand(n.shape[0], 3, generator=gen, dtype=torch.float64)
    free = (n - 2 * seg).clamp(min=0)
    x = torch.floor(u[:, :2] * (free[:, None] + 1)).to(torch.int64)
    first, second = x.min(1).values, x.max(1).values + seg
    long = n >= 2 * seg
    first = torch.where(long, first, torch.zeros_like(n))
    second = torch.where(long, second, n - seg)
    swap = u[:, 2] < 0.5
    return torch.where(swap, second, first), torch.where(swap, first, second)


def draw_transpositions(b: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(o, o', k)`` ``(B,)``: ``o ~ U{1..12}``, ``t ~ U{1..11}``, ``o' = (o + t) mod 12``, ``k = o' − o``."""
    o = torch.randint(1, MAX_CROP_OFFSET + 1, (b,), generator=gen)
    t = torch.randint(1, 12, (b,), generator=gen)
    o2 = (o + t) % 12
    return o, o2, o2 - o


def draw_eq_db(shape: tuple[int, ...], n_bins: int, max_db: float, gen: torch.Generator,
               bins_per_octave: int = 12) -> torch.Tensor:
    """Random equaliser curves ``(*shape, n_bins)`` float32 dB: :func:`musicssl.key.dataset.random_eq_db` batched
    (a tilt of up to ``±max_db/2`` plus two bell bands of gain ``±max_db``, width ½–2 octaves, clipped)."""
    if max_db <= 0:
        return torch.zeros(*shape, n_bins)
    u = torch.rand(*shape, 7, generator=gen, dtype=torch.float64)
    bins = torch.arange(n_bins, dtype=torch.float64)
    curve = (u[..., :1] - 0.5) * max_db * (2 * bins / max(1, n_bins - 1) - 1)
    for band in range(2):
        centre = u[..., 1 + 3 * band, None] * n_bins
        width = (0.5 + 1.5 * u[..., 2 + 3 * band, None]) * bins_per_octave
        gain = 2 * u[..., 3 + 3 * band, None] - 1
        curve = curve + gain * max_db * torch.exp(-0.5 * ((bins - centre) / (width / 2)) ** 2)
    return curve.clamp(-max_db, max_db).float()


def assemble_batch(bank: KeyBank, tracks: torch.Tensor, a: torch.Tensor, b: torch.Tensor, o: torch.Tensor,
                   o2: torch.Tensor, seg: int, top_db: float = 80.0, crop: int = 84,
                   eq: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A training batch on ``bank``'s device from drawn parameters (all ``(B,)`` int64; ``eq (B, 2, F)`` dB).

    Segments A and B are gathered from the bank, equalised, log-compressed
    each on its own (:func:`musicssl.dsp.cqt.compress_db`) and cropped
    by :func:`musicssl.key.dataset.make_views`.
    """
    dev = bank.device
    tracks, a, b, o, o2 = (x.to(dev) for x in (tracks, a, b, o, o2))
    starts = bank.starts[tracks]
    first = torch.stack([starts + a, starts + b], 1)                                  # (B, 2) bank frames
    windows = bank.db.unfold(1, seg, 1).permute(1, 0, 2)                              # view (N - seg + 1, F, seg)
    ab = windows[first].float()                                                       # (B, 2, F, seg)
    if eq is not None:
        ab = ab + eq.to(dev)[..., None]
    views, profile = make_views(compress_db(ab, top_db), o, o2, crop)
    tonic = bank.tonic[tracks]
    labelled = tonic >= 0
    pitch_class = _PITCH_CLASS_OF_BIN.to(dev)
    column = torch.where(labelled, (tonic - pitch_class[o]) % 12, torch.zeros_like(tonic))
    return {"views": views.contiguous(), "profile": profile, "k": o2 - o, "o": o, "o2": o2, "index": tracks,
            "labelled": labelled.long(), "tonic_column": column,
            "is_major": torch.where(labelled, bank.is_major[tracks], torch.zeros_like(tonic))}


class DeviceBatchLoader:
    """Batches of a :class:`KeyBank` drawn on its device; an iterable Lightning accepts as a train loader.

    One pass (epoch) yields ``len(self)`` batches of ``batch_size`` distinct
    tracks (``drop_last``), in the order of ``self.sampler``
    (:class:`~musicssl.key.dataset.EpochSampler`: ``set_epoch`` and
    ``resume_at`` work as for the DataLoader path). Batch ``j`` of epoch ``e``
    takes its randomness from ``(seed, e, j, rank)`` only; ``fixed_epoch``
    (validation) always draws epoch ``fixed_epoch``'s batches.
    """

    def __init__(self, bank: KeyBank, frontend_config, segments: SegmentConfig, batch_size: int, *,
                 eq_db: float = 0.0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 fixed_epoch: int | None = None):
        c = frontend_config
        if bank.frontend != c.to_dict():
            raise ConfigError(f"key bank computed with front end {bank.frontend}, training uses {c.to_dict()}")
        if c.n_bins - c.crop_bins < MAX_CROP_OFFSET:
            raise ConfigError(f"crops up to offset {MAX_CROP_OFFSET} need n_bins - crop_bins >= {MAX_CROP_OFFSET}")
        if eq_db < 0:
            raise ConfigError(f"eq_db must be >= 0, got {eq_db}")
        self.seg = segment_frames(segments.segment_seconds, c.sr, c.hop_length)
        lengths = bank.lengths.cpu()
        minimum = 2 * self.seg if segments.short_tracks == "skip" else self.seg
        keep = [i for i in range(len(bank)) if int(lengths[i]) >= minimum]
        self.counts = segment_policy_counts([int(x) for x in lengths], self.seg)
        if segments.short_tracks == "skip":
            self.counts["skipped_overlapping"] = self.counts["overlapping"]
        self.bank = bank if len(keep) == len(bank) else bank.select(keep)
        self._lengths = self.bank.lengths.cpu()
        self.frontend_config = c
        self.segments = segments
        self.batch_size = int(batch_size)
        self.eq_db = float(eq_db)
        self.rank = int(rank)
        self.sampler = EpochSampler(len(self.bank), segments.seed, rank, world_size, shuffle)
        self.batch_sampler = None            # Lightning inspects these two as on a DataLoader
        self.fixed_epoch = fixed_epoch

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    # The data position is restored by the data module (``sampler.resume_at``); these two only
    # tell Lightning that this loader resumes mid-epoch.
    def state_dict(self) -> dict:
        return {"batches_per_epoch": len(self)}

    def load_state_dict(self, state: dict) -> None:
        pass

    def batch(self, track_ids: Sequence[int] | torch.Tensor, epoch: int, position: int) -> dict[str, torch.Tensor]:
        """The batch of these bank tracks with the randomness of ``(seed, epoch, position, rank)``."""
        tracks = torch.as_tensor(track_ids, dtype=torch.int64)
        gen = batch_generator(self.segments.seed, epoch, position, self.rank)
        a, b = draw_segments(self._lengths[tracks], self.seg, gen)
        o, o2, _ = draw_transpositions(len(tracks), gen)
        c = self.frontend_config
        eq = draw_eq_db((len(tracks), 2), c.n_bins, self.eq_db, gen, c.bins_per_octave) if self.eq_db > 0 else None
        return assemble_batch(self.bank, tracks, a, b, o, o2, self.seg, c.top_db, c.crop_bins, eq)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        sampler = self.sampler
        if self.fixed_epoch is not None:                             # validation: the same batches every time
            sampler.set_epoch(self.fixed_epoch)
        n, epoch = sampler.n, sampler.epoch
        order = [i - epoch * n for i in sampler.indices()]          # this rank's tracks, epoch order
        first = -(-sampler.resume_skip() // self.batch_size)
        for j in range(first, len(self)):
            yield self.batch(order[j * self.batch_size:(j + 1) * self.batch_size], epoch, j)
