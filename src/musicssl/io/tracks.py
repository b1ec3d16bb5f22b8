"""Track lists shared by key and beat training: manifests, folders, a scan that
checks every file once (cached), and the train/validation split by track."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from musicssl.errors import AnnotationError, ConfigError, MusicsslError
from musicssl.io.atomic import atomic_write_text
from musicssl.io.audio import audio_info, load_audio
from musicssl.io.files import find_audio_files


# --------------------------------------------------------------------------- tracks
@dataclass
class Track:
    """One audio file usable for training. ``key`` is a label text or None."""

    path: str
    duration_s: float = float("nan")
    samplerate: int = 0
    key: str | None = None
    split: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _resolve(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p))


def read_manifest(path: str | Path) -> list[Track]:
    """Tracks listed in a manifest.

    CSV/TSV with a header containing ``path`` (optional ``key``, ``split``,
    ``duration_s``), or a text file with one path per line (``#`` comments).
    Relative paths are relative to the manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise AnnotationError(f"{path}: manifest not found")
    base = path.resolve().parent
    text = path.read_text(encoding="utf-8-sig")
    first = text.splitlines()[0] if text.strip() else ""
    if path.suffix.lower() in (".csv", ".tsv") or ("path" in first.lower() and ("," in first or "\t" in first)):
        delimiter = "\t" if (path.suffix.lower() == ".tsv" or "\t" in first) else ","
        reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
        fields = [f.strip().lower() for f in (reader.fieldnames or [])]
        if "path" not in fields:
            raise AnnotationError(f"{path}: manifest has no 'path' column (columns: {reader.fieldnames})")
        tracks = []
        for row in reader:
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
            if not row.get("path"):
                continue
            key = row.get("key") or None
            duration = row.get("duration_s")
            tracks.append(Track(path=_resolve(base, row["path"]), key=key, split=row.get("split") or None,
                                duration_s=float(duration) if duration else float("nan")))
        return tracks
    return [Track(path=_resolve(base, line.strip())) for line in text.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def gather_tracks(sources: str | Path | Sequence[str | Path]) -> list[Track]:
    """Tracks from folders (searched recursively), manifests (``.csv``/``.tsv``/``.txt``) and audio files."""

    if isinstance(sources, (str, Path)):
        sources = [sources]
    tracks: dict[str, Track] = {}
    for source in sources:
        p = Path(source)
        if p.is_file() and p.suffix.lower() in (".csv", ".tsv", ".txt"):
            found = read_manifest(p)
        else:
            found = [Track(path=str(f)) for f in find_audio_files([p])]
        for t in found:
            tracks.setdefault(str(Path(t.path).resolve()), t)
    if not tracks:
        raise ConfigError(f"no audio found in {', '.join(map(str, sources))}")
    return list(tracks.values())


# --------------------------------------------------------------------------- scan
@dataclass
class ScanReport:
    """Result of :func:`scan_tracks`: usable tracks and ``(path, reason)`` of the rest."""

    usable: list[Track]
    rejected: list[tuple[str, str]] = field(default_factory=list)

    @property
    def hours(self) -> float:
        return sum(t.duration_s for t in self.usable) / 3600.0

    def summary(self) -> str:
        return f"{len(self.usable)} usable tracks ({self.hours:.2f} h), {len(self.rejected)} rejected"


def file_stamp(path: str) -> str:
    st = os.stat(path)
    return f"{st.st_size}:{int(st.st_mtime)}"


def _check_track(path: str, decode_seconds: float, sr: int) -> tuple[float, int]:
    """``(duration_s, samplerate)`` of a usable file; raises MusicsslError otherwise."""

    info = audio_info(path)
    if not (info.duration_s > 0):
        raise MusicsslError(f"duration {info.duration_s} s")
    if decode_seconds > 0:
        mid = max(0.0, info.duration_s / 2 - decode_seconds / 2)
        load_audio(path, sr=sr, offset=mid, duration=min(decode_seconds, info.duration_s))
    return float(info.duration_s), int(info.samplerate)


def scan_tracks(tracks: Iterable[Track], cache_file: str | Path | None = None, *,
                min_duration_s: float = 0.0, decode_seconds: float = 1.0, sr: int = 22050,
                progress: bool = False) -> ScanReport:
    """Validate every file once: it opens, has a duration and sample rate, and
    ``decode_seconds`` from its middle decode to non-silent, finite audio.

    Results are cached in ``cache_file`` (JSON, keyed by path, size and
    mtime), so a second scan costs only ``stat`` calls. Unusable files are
    listed with the reason and skipped, never raised.
    """
    cache: dict[str, dict] = {}
    if cache_file is not None and Path(cache_file).is_file():
        try:
            cache = json.loads(Path(cache_file).read_text())
        except (OSError, json.JSONDecodeError):
            cache = {}
    report = ScanReport(usable=[])
    tracks = list(tracks)
    iterator: Iterable[Track] = tracks
    if progress:
        from tqdm import tqdm
        iterator = tqdm(tracks, desc="scan", unit="file")
    changed = False
    for t in iterator:
        path = str(Path(t.path).resolve())
        try:
            stamp = file_stamp(path)
        except OSError as exc:
            report.rejected.append((t.path, f"cannot read: {exc.strerror or exc}"))
            continue
        entry = cache.get(path)
        if entry is None or entry.get("stamp") != stamp:
            try:
                duration, rate = _check_track(path, decode_seconds, sr)
                entry = {"stamp": stamp, "duration_s": duration, "samplerate": rate}
            except MusicsslError as exc:
                entry = {"stamp": stamp, "error": f"{type(exc).__name__}: {exc}"}
            except Exception as exc:  # a decoder library failing in an unexpected way
                entry = {"stamp": stamp, "error": f"{type(exc).__name__}: {exc}"}
            cache[path] = entry
            changed = True
        if "error" in entry:
            report.rejected.append((t.path, entry["error"]))
        elif entry["duration_s"] < min_duration_s:
            report.rejected.append((t.path, f"too short: {entry['duration_s']:.1f} s < {min_duration_s:g} s"))
        else:
            report.usable.append(Track(path=path, duration_s=entry["duration_s"], samplerate=entry["samplerate"],
                                       key=t.key, split=t.split))
    if cache_file is not None and changed:
        Path(cache_file).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(cache_file), json.dumps(cache, indent=0))
    return report


def split_tracks(tracks: Sequence[Track], val_fraction: float = 0.05, seed: int = 0
                 ) -> tuple[list[Track], list[Track]]:
    """Train/validation split *by track*.

    A manifest's ``split`` column wins (``val``/``valid``/``validation``/``dev``
    → validation; ``test``/``exclude``/``skip`` → left out; anything else →
    training); other tracks go to validation when a stable hash of their path and
    ``seed`` falls below ``val_fraction`` (adding files never moves others).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = [], []
    for t in tracks:
        if t.split:
            name = t.split.lower()
            if name in ("test", "exclude", "skip"):
                continue
            (val if name in ("val", "valid", "validation", "dev") else train).append(t)
            continue
        h = hashlib.sha1(f"{seed}:{t.path}".encode()).digest()
        u = int.from_bytes(h[:8], "little") / 2.0 ** 64
        (val if u < val_fraction else train).append(t)
    return train, val
