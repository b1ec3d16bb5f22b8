"""Training data for Zero-Note Samba: track lists, a feature cache, random clips.

Pretext training is separation-bound if it separates audio on the fly, so
each track is separated once (percussive / non-percussive), both parts go
through the ZeroNS VQT, and the result is cached as float16 ``(2, 96, T)``
(row 0 percussive, row 1 non-percussive) together with the percussive
part's frame RMS.  :class:`ClipDataset` then draws random ``clip_seconds``
clips from the cache, skipping clips whose percussive part is nearly silent.

Track lists follow the project's data conventions: a folder (searched for
audio files), a text file with one path per line, or a CSV manifest with a
``path`` column (relative paths are relative to the manifest's folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from musicssl.beat.frontend import (
    FPS,
    HOP_LENGTH,
    SAMPLE_RATE,
    ZeroNSFrontEnd,
    vqt_features,
)
from musicssl.beat.separation import Separator, get_separator, separator_description
from musicssl.errors import ConfigError, MusicsslError
from musicssl.io.atomic import atomic_write_text
from musicssl.io.audio import audio_info, load_audio
from musicssl.io.tracks import gather_tracks

CACHE_VERSION = 1
INDEX_NAME = "index.json"


# --------------------------------------------------------------------------
# track lists (the key pipeline's conventions: musicssl.key.dataset.gather_tracks)
# --------------------------------------------------------------------------
def list_tracks(sources: str | os.PathLike | Sequence[str | os.PathLike],
                include: Sequence[str] | None = None) -> list[Path]:
    """Folders, audio files and manifests -> sorted audio paths (``musicssl.key.dataset`` conventions).

    ``include``: keep only paths containing one of these substrings (e.g.
    Debian package names of a corpus with drums).
    """

    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    paths = sorted({Path(t.path) for t in gather_tracks([str(s) for s in sources])}, key=str)
    if include:
        paths = [p for p in paths if any(word in str(p) for word in include)]
    if not paths:
        raise ConfigError("no training audio found" + (f" matching {list(include)}" if include else ""))
    return paths


# --------------------------------------------------------------------------
# feature cache
# --------------------------------------------------------------------------
@dataclass
class CacheSettings:
    """What determines a cached entry (a change invalidates it)."""

    max_seconds: float = 120.0  # at most this much of each track (from its middle)
    min_seconds: float = 10.0  # shorter tracks are skipped
    separator: str = "hpss"
    version: int = CACHE_VERSION


@dataclass
class CacheEntry:
    """One cached track: ``file`` holds float16 ``(2, 96, T)``; ``rms_file`` float16 ``(T,)``."""

    source: str
    file: str
    rms_file: str
    n_frames: int
    offset_s: float
    seconds: float


def _entry_key(path: Path, settings: CacheSettings) -> str:
    st = path.stat()
    ident = f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}|{json.dumps(asdict(settings), sort_keys=True)}"
    return hashlib.sha1(ident.encode()).hexdigest()[:16]


def frame_rms(samples: np.ndarray, hop: int = HOP_LENGTH) -> np.ndarray:
    """RMS of ``samples`` in frames centred on ``hop * t``: float32 ``(len // hop + 1,)``."""
    n_frames = len(samples) // hop + 1
    padded = np.pad(samples.astype(np.float32), (hop // 2, hop * 2))
    sq = padded[: n_frames * hop].reshape(n_frames, hop) ** 2
    return np.sqrt(sq.mean(axis=1)).astype(np.float32)


def compute_track_features(samples: np.ndarray, separator: Separator, frontend: ZeroNSFrontEnd,
                           device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """16 kHz mono ``(N,)`` -> (log-VQT float32 ``(2, 96, T)`` [perc, rest], percussive RMS ``(T,)``)."""
    perc, rest = separator(samples, SAMPLE_RATE)
    feats = np.stack([vqt_features(frontend, perc, device), vqt_features(frontend, rest, device)])
    rms = frame_rms(perc)[: feats.shape[-1]]
    return feats, rms


def build_cache(tracks: Sequence[Path], cache_dir: str | os.PathLike,
                settings: CacheSettings | None = None, separator: Separator | None = None,
                device: str = "cpu", progress: bool = True, time_budget_s: float | None = None,
                ) -> list[CacheEntry]:
    """Separate + VQT every track once into ``cache_dir``; returns the usable entries.

    Already cached tracks are reused (resume); unreadable or too short tracks
    are skipped with a message.  ``time_budget_s`` stops adding new tracks
    after that many seconds (the entries so far are returned).
    """
    settings = settings or CacheSettings()
    separator = separator or get_separator(settings.separator)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_path = cache_dir / INDEX_NAME
    index: dict[str, dict] = {}
    if index_path.is_file():
        try:
            index = json.loads(index_path.read_text())["entries"]
        except (ValueError, KeyError):
            index = {}
    frontend = ZeroNSFrontEnd()
    entries: list[CacheEntry] = []
    start = time.monotonic()

    for i, track in enumerate(tracks):
        try:
            key = _entry_key(track, settings)
        except OSError as exc:
            print(f"skip {track}: {exc}")
            continue
        if key in index and (cache_dir / index[key]["file"]).is_file():
            entries.append(CacheEntry(**index[key]))
            continue
        if time_budget_s is not None and time.monotonic() - start > time_budget_s:
            print(f"cache: time budget reached after {len(entries)} tracks")
            break
        try:
            dur = audio_info(track).duration_s
            if dur < settings.min_seconds:
                continue
            offset = max(0.0, (dur - settings.max_seconds) / 2.0)
            samples = load_audio(track, sr=SAMPLE_RATE, offset=offset,
                                 duration=min(dur, settings.max_seconds))
            if len(samples) < settings.min_seconds * SAMPLE_RATE:
                continue
            feats, rms = compute_track_features(samples, separator, frontend, device)
        except MusicsslError as exc:
            print(f"skip {track}: {exc}")
            continue
        np.save(cache_dir / f"{key}.npy", feats.astype(np.float16))
        np.save(cache_dir / f"{key}.rms.npy", rms.astype(np.float16))
        entry = CacheEntry(source=str(track), file=f"{key}.npy", rms_file=f"{key}.rms.npy",
                           n_frames=int(feats.shape[-1]), offset_s=float(offset),
                           seconds=len(samples) / SAMPLE_RATE)
        index[key] = asdict(entry)
        entries.append(entry)
        _write_index(index_path, index, settings, separator)
        if progress:
            print(f"cache [{i + 1}/{len(tracks)}] {track.name}: {entry.seconds:.0f} s "
                  f"({time.monotonic() - start:.0f} s elapsed)", flush=True)
    _write_index(index_path, index, settings, separator)
    return entries


def _write_index(path: Path, index: dict, settings: CacheSettings, separator: Separator) -> None:
    atomic_write_text(path, json.dumps({"settings": asdict(settings),
                                        "separator": separator_description(separator),
                                        "fps": FPS, "entries": index}, indent=1))


def load_cache_entries(cache_dir: str | os.PathLike) -> list[CacheEntry]:
    """Every entry of a cache built by :func:`build_cache`."""
    index_path = Path(cache_dir) / INDEX_NAME
    if not index_path.is_file():
        raise ConfigError(f"{cache_dir} is not a ZeroNS feature cache (no {INDEX_NAME})")
    entries = json.loads(index_path.read_text())["entries"]
    return [CacheEntry(**e) for e in entries.values() if (Path(cache_dir) / e["file"]).is_file()]


# --------------------------------------------------------------------------
# random clips
# --------------------------------------------------------------------------
@dataclass
class ClipSettings:
    clip_seconds: float = 10.0
    clips_per_epoch: int = 2000
    #: a clip is skipped when its percussive RMS is below this (dB re. full scale) ...
    min_percussive_db: float = -45.0
    #: ... or when its percussive RMS varies less than this (dB, std of frame RMS in dB)
    min_percussive_variation_db: float = 1.0
    max_tries: int = 20


def percussive_is_silent(rms: np.ndarray, min_db: float = -45.0, min_variation_db: float = 1.0) -> bool:
    """True when a clip's percussive frame RMS ``(T,)`` is nearly silent or flat."""
    rms = np.asarray(rms, dtype=np.float32)
    overall = 20 * np.log10(np.sqrt(np.mean(rms ** 2)) + 1e-10)
    if overall < min_db:
        return True
    db = 20 * np.log10(rms + 1e-6)
    return float(np.std(db)) < min_variation_db


class ClipDataset(Dataset):
    """Random clips from a feature cache: item -> (percussive ``(1, 96, T)``, rest ``(1, 96, T)``).

    ``T = round(clip_seconds * 62.5)``.  Tracks are drawn in proportion to
    their length; clips with a nearly silent percussive part are re-drawn
    (up to ``max_tries``).  Arrays are memory-mapped.
    """

    def __init__(self, cache_dir: str | os.PathLike, settings: ClipSettings | None = None,
                 seed: int = 0, entries: Sequence[CacheEntry] | None = None):
        self.cache_dir = Path(cache_dir)
        self.settings = settings or ClipSettings()
        self.clip_frames = int(round(self.settings.clip_seconds * FPS))
        all_entries = list(entries) if entries is not None else load_cache_entries(cache_dir)
        self.entries = [e for e in all_entries if e.n_frames >= self.clip_frames]
        if not self.entries:
            raise ConfigError(f"no cached track is at least {self.settings.clip_seconds} s long")
        lengths = np.array([e.n_frames - self.clip_frames + 1 for e in self.entries], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.seed = int(seed)
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.skipped = 0

    def __len__(self) -> int:
        return self.settings.clips_per_epoch

    def _arrays_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in self._arrays:
            e = self.entries[i]
            self._arrays[i] = (np.load(self.cache_dir / e.file, mmap_mode="r"),
                               np.load(self.cache_dir / e.rms_file, mmap_mode="r"))
        return self._arrays[i]

    def draw(self, rng: np.random.Generator) -> tuple[int, int]:
        """A (track index, start frame) whose percussive part is not silent (best effort)."""
        s = self.settings
        for _ in range(s.max_tries):
            i = int(rng.choice(len(self.entries), p=self.weights))
            start = int(rng.integers(0, self.entries[i].n_frames - self.clip_frames + 1))
            _, rms = self._arrays_of(i)
            if not percussive_is_silent(rms[start:start + self.clip_frames],
                                        s.min_percussive_db, s.min_percussive_variation_db):
                return i, start
            self.skipped += 1
        return i, start

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        worker = torch.utils.data.get_worker_info()
        base = torch.initial_seed() if worker is not None else self.seed * 1_000_003 + _epoch_salt()
        rng = np.random.default_rng([int(base) % (2 ** 63), int(index)])
        i, start = self.draw(rng)
        feats, _ = self._arrays_of(i)
        clip = np.asarray(feats[:, :, start:start + self.clip_frames], dtype=np.float32)
        return torch.from_numpy(clip[0:1].copy()), torch.from_numpy(clip[1:2].copy())


_EPOCH_COUNTER = [0]


def _epoch_salt() -> int:
    """Different clips in every pass without workers (each ``__getitem__`` bumps it)."""
    _EPOCH_COUNTER[0] += 1
    return _EPOCH_COUNTER[0]
