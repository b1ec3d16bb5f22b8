"""Training data for the key objectives: tracks, scan, split, feature cache, pairs of segments.

Pipeline (SPEC §1.3)::

    sources (folders / manifests) -> gather_tracks -> scan_tracks (validated once, cached)
      -> split_tracks (by track) -> [build_feature_cache] -> PairDataset -> EpochSampler -> DataLoader

Each training item is two segments A and B of one track (``segment_frames``
CQT frames each, disjoint when the track is long enough), positions drawn at
random *per epoch* from ``(seed, epoch, track)`` only, so the data are the
same whatever the number of workers or processes. Transposition by cropping:
``o ~ U{1..12}``, ``t ~ U{1..11}``, ``o' = (o + t) mod 12``, ``k = o' − o``
(never 0, in −11..10). ``o ≤ 12`` and ``o' ≤ 11``, so both 84-bin crops fit
in the 99 CQT bins (largest valid offset 15).

Short tracks: a track shorter than two segments but at least one segment
long gives two *overlapping* segments (``short_tracks="overlap"``, the
default: A and B at the two ends of the track, in random order) or is
skipped (``"skip"``); tracks shorter than one segment are always skipped.
Both counts are reported by :func:`segment_policy_counts`.

Feature cache: the whole-track CQT *magnitude* is stored once per track as
decibels ``10·log10(max(mag, 1e-10))`` in float16 ``.npy`` files
(memory-mapped when read; float16 keeps ≈ 0.05 dB near −100 dB and finer
above), with ``index.json``; the audio is peak-normalised over the whole
track first, as at inference. The log compression's floor depends on each
example's loudest bin, so it is applied per *segment* at training time,
exactly as inference does on a window: ``x = max(db, max(db) − 80) / 80 + 1``.
Without the cache, segments are decoded on their own and peak-normalised per
segment (a level offset of at most a few dB against the cached path).
Segments cut from a whole-track CQT differ from a CQT of the cut audio only
within the kernels' reach of the segment edges (≈ 0.3 s at the lowest bins).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from musicssl.dsp.cqt import (
    CQT,
    FrontEndConfig,
    amplitude_to_db,
    compress_db,
    cqt_chunked,
)
from musicssl.errors import ConfigError, MusicsslError
from musicssl.io.atomic import atomic_write_text
from musicssl.io.audio import audio_info, load_audio
from musicssl.io.tracks import Track, file_stamp
from musicssl.key.augment import augment_track
from musicssl.keys import cqt_bin_pitch_class, parse_key

#: crop offset range of SPEC §1.3: o ~ U{1..12}, t ~ U{1..11}
MAX_CROP_OFFSET = 12
CACHE_INDEX = "index.json"
CACHE_VERSION = 1
DB_FLOOR = -100.0  # 10 * log10(1e-10)


# --------------------------------------------------------------------------- segments and transpositions
def segment_frames(segment_seconds: float, sr: int, hop_length: int) -> int:
    """CQT frames of a segment: ``round(seconds · sr) // hop + 1`` (as the CQT of that many samples)."""
    return int(round(segment_seconds * sr)) // hop_length + 1


def choose_segments(n_frames: int, seg: int, rng: np.random.Generator, short_tracks: str = "overlap"
                    ) -> tuple[int, int] | None:
    """Start frames ``(a, b)`` of two segments of ``seg`` frames in a track of ``n_frames``.

    Disjoint and uniformly placed when ``n_frames ≥ 2·seg``; for shorter
    tracks see the module docstring; None when the track cannot be used.
    """
    if n_frames < seg:
        return None
    if n_frames < 2 * seg:
        if short_tracks != "overlap":
            return None
        ends = (0, n_frames - seg)
        return ends if rng.random() < 0.5 else ends[::-1]
    free = n_frames - 2 * seg
    u = np.sort(rng.integers(0, free + 1, size=2))
    first, second = int(u[0]), int(u[1]) + seg
    return (first, second) if rng.random() < 0.5 else (second, first)


def draw_transposition(rng: np.random.Generator) -> tuple[int, int, int]:
    """``(o, o', k)``: ``o ~ U{1..12}``, ``t ~ U{1..11}``, ``o' = (o + t) mod 12``, ``k = o' − o``."""
    o = int(rng.integers(1, 13))
    t = int(rng.integers(1, 12))
    o2 = (o + t) % 12
    return o, o2, o2 - o


def random_eq_db(rng: np.random.Generator, n_bins: int, max_db: float, bins_per_octave: int = 12) -> np.ndarray:
    """A smooth random equaliser curve in dB over CQT bins, ``(n_bins,)`` float32.

    A tilt of up to ``±max_db / 2`` at either end plus two bell bands (gain up to
    ``±max_db``, width ½–2 octaves, centre anywhere), clipped to ``±max_db``.
    Neighbouring bins (a semitone apart) change by well under 1 dB, so the
    balance of the thirds is kept while the register balance changes.
    """
    if max_db <= 0:
        return np.zeros(n_bins, np.float32)
    bins = np.arange(n_bins, dtype=np.float64)
    curve = rng.uniform(-0.5, 0.5) * max_db * (2 * bins / max(1, n_bins - 1) - 1)
    for _ in range(2):
        centre = rng.uniform(0, n_bins)
        width = rng.uniform(0.5, 2.0) * bins_per_octave
        curve += rng.uniform(-1, 1) * max_db * np.exp(-0.5 * ((bins - centre) / (width / 2)) ** 2)
    return np.clip(curve, -max_db, max_db).astype(np.float32)


def segment_policy_counts(frame_counts: Iterable[int], seg: int) -> dict[str, int]:
    """How many tracks get two disjoint segments, overlapping segments, or are too short."""
    out = {"disjoint": 0, "overlapping": 0, "too_short": 0}
    for n in frame_counts:
        out["disjoint" if n >= 2 * seg else "overlapping" if n >= seg else "too_short"] += 1
    return out


def make_views(logcqt_ab: torch.Tensor, o: torch.Tensor, o2: torch.Tensor, crop: int = 84
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Three views and the pitch-class profile from log-CQTs of A and B.

    ``logcqt_ab``: ``(B, 2, F, T)`` (segment A, segment B, all bins); ``o``,
    ``o2``: ``(B,)`` crop offsets. Returns ``views (B, 3, crop, T)`` = (A at
    o, B at o, A at o') and ``profile (B, 12)``: time- and octave-averaged
    mean of A and B at ``o``, in the crop's frame (S-KEY's pseudo-label input).
    """
    b, _, f, t = logcqt_ab.shape
    bins = torch.arange(crop, device=logcqt_ab.device)
    offsets = torch.stack([o, o, o2], dim=1).to(logcqt_ab.device).long()         # (B, 3)
    index = (offsets[..., None] + bins).view(b, 3, crop, 1).expand(b, 3, crop, t)
    source = logcqt_ab[:, [0, 1, 0]]                                               # (B, 3, F, T)
    views = torch.gather(source, 2, index)
    profile = views[:, :2].float().mean(dim=(1, 3)).view(b, crop // 12, 12).mean(dim=1)
    return views, profile


def _label_fields(key_text: str | None, o: int) -> dict[str, int]:
    """Label of an item in the crop frame at offset ``o`` (−1 when unlabelled)."""
    if not key_text:
        return {"labelled": 0, "tonic_column": 0, "is_major": 0}
    key = parse_key(key_text)
    column = (key.tonic - int(cqt_bin_pitch_class(o))) % 12
    return {"labelled": 1, "tonic_column": column, "is_major": int(key.is_major)}


# --------------------------------------------------------------------------- feature cache
def _cache_name(path: str, stamp: str) -> str:
    return hashlib.sha1(f"{path}|{stamp}".encode()).hexdigest()[:20] + ".npy"


class FeatureCache:
    """Whole-track CQT decibels, float16 ``(F, T)`` per track, memory-mapped.

    ``index.json``: ``{"version", "frontend": FrontEndConfig dict,
    "max_track_seconds", "tracks": {path: {"file", "n_frames", "stamp"}},
    "failed": {path: reason}, "failed_stamps": {path: stamp}}``. A track whose
    file changed since (size, mtime: :func:`file_stamp`) is computed again, and so
    is a failed one (failures recorded without a stamp are retried once).
    """

    def __init__(self, root: str | Path, frontend_config, augment: dict | None = None):
        self.root = Path(root)
        self.frontend_config = frontend_config
        self.augment = augment       # waveform augmentation of the training tracks (musicssl.key.augment)
        self.index: dict = {"version": CACHE_VERSION, "frontend": frontend_config.to_dict(),
                            "tracks": {}, "failed": {}}
        if augment:
            self.index["augment"] = augment
        index_file = self.root / CACHE_INDEX
        if index_file.is_file():
            index = json.loads(index_file.read_text())
            if index.get("version") != CACHE_VERSION or index.get("frontend") != frontend_config.to_dict():
                raise ConfigError(
                    f"feature cache {self.root} was built with other front-end settings "
                    f"({index.get('frontend')}); use another --cache-dir")
            if (index.get("augment") or None) != (augment or None):
                raise ConfigError(f"feature cache {self.root} was built with other augmentation settings "
                                  f"({index.get('augment')}); use another --cache-dir")
            self.index = index
        self._maps: dict[str, np.ndarray] = {}

    def __contains__(self, path: str) -> bool:
        return path in self.index["tracks"]

    def n_frames(self, path: str) -> int:
        return int(self.index["tracks"][path]["n_frames"])

    def array(self, path: str) -> np.ndarray:
        """Memory-mapped float16 decibels ``(F, T)`` of a cached track."""
        arr = self._maps.get(path)
        if arr is None:
            arr = np.load(self.root / self.index["tracks"][path]["file"], mmap_mode="r")
            self._maps[path] = arr
        return arr

    def __getstate__(self):  # worker processes re-open their own memory maps
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def save_index(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / CACHE_INDEX, json.dumps(self.index))

    @classmethod
    def open(cls, root: str | Path) -> "FeatureCache":
        """An existing cache, with the front end its index records."""

        index_file = Path(root) / CACHE_INDEX
        if not index_file.is_file():
            raise ConfigError(f"no feature cache in {root} (missing {CACHE_INDEX})")
        index = json.loads(index_file.read_text())
        return cls(root, FrontEndConfig.from_dict(index["frontend"]), index.get("augment"))

    def derive_from(self, source: "FeatureCache", tracks: Sequence[Track]) -> int:
        """Fill missing tracks from a cache at a finer hop; returns how many were added.

        A CQT frame ``t`` at hop ``h`` is centred on sample ``t·h``, so the
        hop-``k·h`` CQT is exactly every ``k``-th frame of the hop-``h`` one:
        ``source`` must have the same front end but a hop dividing ours.
        Derived tracks keep the excerpt the source cached (its ``max_track_seconds``).
        """
        mine, theirs = self.frontend_config.to_dict(), source.frontend_config.to_dict()
        hop, source_hop = mine.pop("hop_length"), theirs.pop("hop_length")
        if mine != theirs or hop % source_hop or (self.augment or None) != (source.augment or None):
            raise ConfigError(f"cannot derive a hop-{hop} cache from {source.root} "
                              f"(hop {source_hop}, front end {source.frontend_config})")
        stride = hop // source_hop
        self.root.mkdir(parents=True, exist_ok=True)
        added = 0
        for t in tracks:
            if t.path in self.index["tracks"] or t.path not in source:
                continue
            entry = source.index["tracks"][t.path]
            db = np.ascontiguousarray(source.array(t.path)[:, ::stride])
            tmp = self.root / f".{entry['file']}.{os.getpid()}.tmp.npy"
            np.save(tmp, db)
            os.replace(tmp, self.root / entry["file"])
            self.index["tracks"][t.path] = {"file": entry["file"], "n_frames": int(db.shape[1]),
                                            "stamp": entry["stamp"]}
            added += 1
        self.save_index()
        return added

    def build(self, tracks: Sequence[Track], *, device: str = "cpu", max_track_seconds: float | None = 900.0,
              chunk_seconds: float = 60.0, progress: bool = True, save_every: int = 20,
              num_workers: int = 1, augment_paths: set[str] | None = None,
              retry_failed: bool = False) -> dict[str, str]:
        """Compute and store every missing or changed track; returns ``{path: reason}`` of tracks that failed.

        Tracks longer than ``max_track_seconds`` are cut to that length,
        centred on the middle of the track. ``num_workers`` processes decode
        audio while this process computes the CQT. Interrupting is safe:
        finished tracks stay cached (index saved every ``save_every`` tracks
        and at the end). With the cache's ``augment`` settings, the tracks in
        ``augment_paths`` (None: all) are augmented before the CQT
        (:func:`musicssl.key.augment.augment_waveform`, seeded by the settings' seed and the path).
        A failed track is tried again when its file changed, or always with ``retry_failed``.
        """

        c = self.frontend_config
        self.root.mkdir(parents=True, exist_ok=True)
        todo = [t for t in tracks if self._needs_work(t.path, retry_failed)]
        if todo:
            cqt = CQT.from_config(c).to(device)
            loader = DataLoader(_DecodeJobs(todo, c.sr, max_track_seconds, self.augment, augment_paths),
                                batch_size=None,
                                num_workers=num_workers, collate_fn=lambda x: x,
                                prefetch_factor=2 if num_workers else None)
            iterator: Iterable = loader
            if progress:
                from tqdm import tqdm
                iterator = tqdm(loader, total=len(todo), desc="feature cache", unit="track")
            for i, (path, stamp, audio, error) in enumerate(iterator):
                if error is None:
                    try:
                        with torch.inference_mode():
                            mag = cqt_chunked(cqt, torch.from_numpy(audio).to(device), chunk_seconds)[0]
                            db = amplitude_to_db(mag).to(torch.float16).cpu().numpy()
                        name = _cache_name(path, stamp)
                        tmp = self.root / f".{name}.{os.getpid()}.tmp.npy"
                        np.save(tmp, db)
                        os.replace(tmp, self.root / name)
                        self._forget(path)
                        self.index["tracks"][path] = {"file": name, "n_frames": int(db.shape[1]), "stamp": stamp}
                    except (MusicsslError, OSError, RuntimeError, ValueError) as exc:
                        error = f"{type(exc).__name__}: {exc}"
                if error is not None:
                    self._forget(path)
                    self.index["failed"][path] = error
                    self.index.setdefault("failed_stamps", {})[path] = stamp
                if (i + 1) % save_every == 0:
                    self.save_index()
            self.save_index()
        return {t.path: self.index["failed"][t.path] for t in tracks if t.path in self.index["failed"]}

    def _needs_work(self, path: str, retry_failed: bool = False) -> bool:
        """True when ``path`` has no up-to-date entry: never seen, changed since it was
        computed or failed, or failed and ``retry_failed``."""
        try:
            stamp = file_stamp(path)
        except OSError:
            stamp = ""
        entry = self.index["tracks"].get(path)
        if entry is not None:
            return entry.get("stamp") != stamp
        if path in self.index["failed"]:
            return retry_failed or self.index.get("failed_stamps", {}).get(path) != stamp
        return True

    def _forget(self, path: str) -> None:
        """Drop ``path``'s entries (and its stale feature file) before it is stored again."""
        self.index["failed"].pop(path, None)
        self.index.get("failed_stamps", {}).pop(path, None)
        entry = self.index["tracks"].pop(path, None)
        self._maps.pop(path, None)
        if entry is not None:
            (self.root / entry["file"]).unlink(missing_ok=True)


class _DecodeJobs(Dataset):
    """Decoding jobs for the cache builder: item ``i`` → ``(path, stamp, audio or None, error or None)``."""

    def __init__(self, tracks: Sequence[Track], sr: int, max_track_seconds: float | None,
                 augment: dict | None = None, augment_paths: set[str] | None = None):
        self.tracks, self.sr, self.max_s = list(tracks), sr, max_track_seconds
        self.augment, self.augment_paths = augment, augment_paths

    def __len__(self) -> int:
        return len(self.tracks)

    def __getitem__(self, i: int):
        path = self.tracks[i].path
        stamp = ""
        try:
            stamp = file_stamp(path)
            offset = 0.0
            if self.max_s:
                duration = audio_info(path).duration_s
                offset = max(0.0, (duration - self.max_s) / 2.0)
            audio = load_audio(path, sr=self.sr, offset=offset, duration=self.max_s)
            if self.augment and (self.augment_paths is None or path in self.augment_paths):

                audio = augment_track(audio, self.sr, self.augment, path)
            return path, stamp, audio, None
        except (MusicsslError, OSError, RuntimeError, ValueError) as exc:
            return path, stamp, None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class SegmentConfig:
    """How items are cut. ``segment_seconds`` per segment; see module docstring for ``short_tracks``."""

    segment_seconds: float = 15.0
    short_tracks: str = "overlap"
    seed: int = 0

    def __post_init__(self):
        if self.segment_seconds <= 0:
            raise ConfigError("segment_seconds must be positive")
        if self.short_tracks not in ("overlap", "skip"):
            raise ConfigError(f"short_tracks must be 'overlap' or 'skip', got {self.short_tracks!r}")


class PairDataset(Dataset):
    """Items of two segments of one track plus a transposition.

    Index ``epoch * len(tracks) + i`` (see :class:`EpochSampler`) → item of
    track ``i`` with randomness from ``(seed, epoch, i)``. With a
    :class:`FeatureCache` the item holds ready views::

        views float32 (3, crop, T)  A at o, B at o, A at o'   (log-CQT in [0, 1])
        profile float32 (12,)       pitch-class profile of A and B at o
        k int, o int, o2 int, labelled int, tonic_column int, is_major int

    ``eq_db > 0`` (cache only) gives segments A and B each its own random
    equaliser (:func:`random_eq_db`) before the log compression; A′ shares A's.
    Without a cache an item holds ``audio float32 (2, N)`` (A, B; each peak-normalised)
    and the module computes the CQT on the training device (:func:`audio_batch_views`).
    """

    def __init__(self, tracks: Sequence[Track], frontend_config, segments: SegmentConfig,
                 cache: FeatureCache | None = None, fixed_epoch: int | None = None, eq_db: float = 0.0):
        if eq_db < 0:
            raise ConfigError(f"eq_db must be >= 0, got {eq_db}")
        if eq_db > 0 and cache is None:
            raise ConfigError("eq_db (equaliser augmentation) needs the feature cache (cache_dir)")
        self.eq_db = float(eq_db)
        self.frontend_config = frontend_config
        self.segments = segments
        self.cache = cache
        self.fixed_epoch = fixed_epoch
        c = frontend_config
        if c.n_bins - c.crop_bins < MAX_CROP_OFFSET:
            raise ConfigError(f"crops up to offset {MAX_CROP_OFFSET} need n_bins - crop_bins >= {MAX_CROP_OFFSET}")
        self.seg = segment_frames(segments.segment_seconds, c.sr, c.hop_length)
        self.seg_samples = int(round(segments.segment_seconds * c.sr))
        kept, frames = [], []
        for t in tracks:
            if cache is not None:
                if t.path not in cache:
                    continue
                n = cache.n_frames(t.path)
            else:
                n = segment_frames(t.duration_s, c.sr, c.hop_length) - 1
            if choose_segments(n, self.seg, np.random.default_rng(0), segments.short_tracks) is not None:
                kept.append(t)
                frames.append(n)
        self.tracks = kept
        self.frames = frames
        self.counts = segment_policy_counts(
            [cache.n_frames(t.path) if cache is not None and t.path in cache
             else segment_frames(t.duration_s, c.sr, c.hop_length) - 1 for t in tracks], self.seg)
        if segments.short_tracks == "skip":
            self.counts["skipped_overlapping"] = self.counts["overlapping"]
        self.counts["uncached"] = 0 if cache is None else sum(1 for t in tracks if t.path not in cache)

    def __len__(self) -> int:
        return len(self.tracks)

    def _rng(self, epoch: int, i: int) -> np.random.Generator:
        return np.random.default_rng([self.segments.seed, epoch, i])

    def __getitem__(self, index: int) -> dict:
        n = len(self.tracks)
        epoch, i = divmod(int(index), n)
        if self.fixed_epoch is not None:
            epoch = self.fixed_epoch
        rng = self._rng(epoch, i)
        track = self.tracks[i]
        a, b = choose_segments(self.frames[i], self.seg, rng, self.segments.short_tracks)
        o, o2, k = draw_transposition(rng)
        item = {"k": k, "o": o, "o2": o2, "index": i, **_label_fields(track.key, o)}
        if self.cache is not None:
            db = self.cache.array(track.path)
            ab = np.stack([db[:, a:a + self.seg], db[:, b:b + self.seg]]).astype(np.float32)
            if self.eq_db > 0:
                for row in range(2):
                    ab[row] += random_eq_db(rng, ab.shape[1], self.eq_db,
                                            self.frontend_config.bins_per_octave)[:, None]
            logcqt = torch.from_numpy(compress_db(ab, self.frontend_config.top_db))[None]
            views, profile = make_views(logcqt, torch.tensor([o]), torch.tensor([o2]),
                                        self.frontend_config.crop_bins)
            item["views"] = views[0]
            item["profile"] = profile[0]
        else:
            hop, sr = self.frontend_config.hop_length, self.frontend_config.sr
            audio = np.zeros((2, self.seg_samples), np.float32)
            for row, start in enumerate((a, b)):
                x = load_audio(track.path, sr=sr, offset=start * hop / sr, duration=self.seg_samples / sr)
                audio[row, :min(len(x), self.seg_samples)] = x[:self.seg_samples]
            item["audio"] = torch.from_numpy(audio)
        return item


def audio_batch_views(frontend: torch.nn.Module, audio: torch.Tensor, o: torch.Tensor, o2: torch.Tensor,
                      crop: int = 84) -> tuple[torch.Tensor, torch.Tensor]:
    """Views from raw segments on the training device: ``audio (B, 2, N)`` → ``views (B, 3, crop, T)``, ``profile (B, 12)``.

    ``frontend`` maps ``(M, N)`` waveforms to log-CQT ``(M, 1, F, T)``
    (:class:`musicssl.dsp.cqt.KeyFrontEnd`); each segment is
    log-compressed on its own.
    """
    b, _, n = audio.shape
    logcqt = frontend(audio.reshape(b * 2, n))                # (2B, 1, F, T)
    logcqt = logcqt.view(b, 2, logcqt.shape[-2], logcqt.shape[-1])
    return make_views(logcqt, o, o2, crop)


# --------------------------------------------------------------------------- sampling
class EpochSampler(Sampler[int]):
    """Seeded per-epoch permutation of ``n`` tracks, sharded across ``world_size`` ranks.

    Yields ``epoch * n + i`` so the dataset derives each item's randomness
    from ``(seed, epoch, i)``. Every rank gets ``n // world_size`` distinct
    tracks per epoch (``drop_last``; the rest are left out for that epoch
    only). :meth:`resume_at` makes epoch ``e`` start after its first ``skip``
    items (exact resume mid-epoch), however often that epoch is iterated.
    """

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if n < world_size:
            raise ConfigError(f"{n} training tracks cannot be shared by {world_size} processes")
        self.n, self.seed, self.rank, self.world_size, self.shuffle = n, seed, rank, world_size, shuffle
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        """Start epoch ``epoch`` after its first ``skip`` items."""
        self._resume = (int(epoch), int(skip))

    def __len__(self) -> int:
        return self.n // self.world_size

    def resume_skip(self) -> int:
        """Items of the current epoch to skip (set by :meth:`resume_at`; 0 otherwise)."""
        if self._resume is not None and self._resume[0] == self.epoch:
            return self._resume[1]
        return 0

    def indices(self) -> list[int]:
        order = (np.random.default_rng([self.seed, 7919, self.epoch]).permutation(self.n)
                 if self.shuffle else np.arange(self.n))
        per_rank = self.n // self.world_size
        mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        return [self.epoch * self.n + int(i) for i in mine]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.resume_skip():])


class ResumableLoader(DataLoader):
    """A DataLoader whose position survives checkpoints (Lightning calls ``state_dict``).

    ``step_source()`` returns the number of optimizer steps done so far (set by
    the data module); the state is that count, and loading it makes the next
    iteration skip the batches of the current epoch already trained on.
    """

    step_source = None

    def state_dict(self) -> dict:
        steps = int(self.step_source()) if self.step_source is not None else 0
        return {"steps": steps, "batches_per_epoch": len(self)}

    def load_state_dict(self, state: dict) -> None:
        per_epoch = int(state.get("batches_per_epoch") or len(self))
        if per_epoch <= 0:
            return
        epoch, done_in_epoch = divmod(int(state.get("steps", 0)), per_epoch)
        sampler = self.batch_sampler.sampler if self.batch_sampler is not None else self.sampler
        if isinstance(sampler, EpochSampler):
            sampler.resume_at(epoch, done_in_epoch * self.batch_size)


def collate_items(items: list[dict]) -> dict:
    """Stack a list of items into a batch dict of tensors."""
    out = {}
    for name in items[0]:
        values = [it[name] for it in items]
        out[name] = torch.stack(values) if torch.is_tensor(values[0]) else torch.tensor(values)
    return out


def seed_worker(worker_id: int) -> None:
    """Worker init: one intra-op thread per worker, numpy/torch seeded from torch's per-worker seed."""
    torch.set_num_threads(1)
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)


def make_loader(dataset: PairDataset, batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1,
                num_workers: int = 0, shuffle: bool = True, resumable: bool = True,
                prefetch_factor: int = 2) -> DataLoader:
    """DataLoader over ``dataset`` with an :class:`EpochSampler` (drop_last, deterministic)."""
    sampler = EpochSampler(len(dataset), seed, rank, world_size, shuffle)
    cls = ResumableLoader if resumable else DataLoader
    kwargs = dict(num_workers=num_workers, collate_fn=collate_items, worker_init_fn=seed_worker,
                  drop_last=True, pin_memory=False)
    if num_workers > 0:
        kwargs.update(persistent_workers=False, prefetch_factor=prefetch_factor)
    return cls(dataset, batch_size=batch_size, sampler=sampler, **kwargs)


def timing_summary(seconds: Sequence[float]) -> str:
    """Mean ± std of a list of durations, for logs."""
    if not seconds:
        return "n/a"
    arr = np.asarray(seconds)
    return f"{arr.mean() * 1e3:.1f} ± {arr.std() * 1e3:.1f} ms"
