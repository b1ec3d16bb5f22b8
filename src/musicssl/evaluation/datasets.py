"""Labelled key datasets: one loader per public dataset plus a generic manifest.

Every loader returns a :class:`Dataset`: the usable :class:`DatasetItem`\\ s
(audio path, reference :class:`~musicssl.keys.Key`, optional group such as a
genre, collection or performance), the items whose audio file is **missing**
(reported and counted, never fatal) and the annotations **skipped** because
their key is unknown.

Annotation errors (a line that cannot be read, an unreadable key) raise
:class:`~musicssl.errors.AnnotationError` naming ``file:line``. With
``strict=False`` they are skipped and counted instead. Independently of
``strict``, the markers of an *unknown* key are always skipped and counted:
GTZAN's ``-1`` (Lerch's annotations leave some tracks unlabelled) and, in any
text format, ``X``, ``-``, ``?``, ``unknown``, ``none``, ``n/a`` or an empty
GiantSteps ``.key`` file.

Formats:

* ``csv`` — generic manifest, comma- or tab-separated (``.tsv`` or a tab in
  the first line), ``path,key[,genre]`` with or without a header; with a
  header, columns ``path``/``key`` plus optional ``genre``/``collection``/
  ``group``, ``id``, ``offset``, ``duration`` (seconds). Keys in any notation
  :func:`musicssl.keys.parse_key` reads (``Eb major``, ``C Major``,
  ``C:maj``, ``Cm``, Camelot, Open Key). Relative paths are relative to the
  manifest's folder. Lines starting with ``#`` are comments.
* ``dev-synth`` — ``labels.csv`` as shipped; group = ``collection``.
* ``giantsteps`` — GiantSteps key (and GiantSteps MTG key): one ``*.key``
  file per track (``annotations/key/<id>.LOFI.key`` beside ``audio/``, or
  ``.key`` files next to the audio); genre from ``annotations/genre/*.genre``
  when present.
* ``gtzan`` — Lerch's GTZAN key annotations, ``<genre>.<nnnnn>.lerch.txt``
  holding one integer: 0–11 = A, A#, … G# major, 12–23 = A … G# minor,
  -1 = unknown (skipped and counted); group = genre.
* ``fmakv2`` — ``fmakv2.csv`` (``track_id``, ``key_and_mode`` such as
  ``C Major``); audio in the FMA layout ``<audio>/<id[:3]>/<id>.mp3``.
* ``winterreise`` — Schubert Winterreise Dataset: semicolon-separated
  ``02_Annotations/ann_audio_globalkey.csv`` (``WorkID;PerformanceID;key``,
  keys such as ``C:maj``), audio ``01_RawData/audio_wav/<WorkID>_<PerfID>.wav``.
  Protocol: the first 30 s of each piece against its global key
  (``duration=30`` on every item); group = performance.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from musicssl.errors import AnnotationError, KeyLabelError
from musicssl.evaluation.annotation_files import (
    existing_path,
    first_column,
    read_annotation_text,
)
from musicssl.keys import Key, parse_key

#: Texts that mark an unknown key (compared case-insensitively, stripped).
UNKNOWN_KEY_MARKERS: frozenset[str] = frozenset({"x", "-", "?", "unknown", "none", "n/a", "na"})
#: Audio file endings tried when a dataset names a track without its extension.
_AUDIO_SUFFIXES: tuple[str, ...] = (".wav", ".mp3", ".flac", ".ogg", ".opus", ".au", ".aiff", ".aif", ".m4a")
#: Winterreise protocol: the first 30 s of each piece.
WINTERREISE_EXCERPT_S = 30.0


@dataclass(frozen=True)
class DatasetItem:
    """One labelled recording; ``offset``/``duration`` (s) select an excerpt."""

    id: str
    path: Path
    key: Key
    group: str | None = None
    offset: float = 0.0
    duration: float | None = None
    meta: dict = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class SkippedItem:
    """An annotation that was not used: ``where`` is ``file:line``."""

    where: str
    reason: str


@dataclass
class Dataset:
    """Items to score plus what was left out (missing audio, skipped annotations)."""

    name: str
    root: Path
    items: list[DatasetItem]
    missing: list[DatasetItem] = field(default_factory=list)
    skipped: list[SkippedItem] = field(default_factory=list)
    group_name: str | None = None   # what ``DatasetItem.group`` means ("genre", ...)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[DatasetItem]:
        return iter(self.items)

    def limit(self, n: int | None) -> "Dataset":
        """The first ``n`` items (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 0:
            raise ValueError(f"limit must be >= 0, got {n}")
        return Dataset(self.name, self.root, self.items[:n], self.missing, self.skipped,
                       self.group_name)

    def describe(self) -> str:
        """One line: how many items are usable, missing and skipped."""
        return (f"{self.name} ({self.root}): {len(self.items)} items with audio, "
                f"{len(self.missing)} missing audio, {len(self.skipped)} annotations skipped")


# --- helpers -----------------------------------------------------------------------

def _is_unknown(text: str) -> bool:
    return text.strip().lower() in UNKNOWN_KEY_MARKERS


class _Collector:
    """Gathers items, missing audio and skipped lines; raises or skips on errors."""

    def __init__(self, name: str, root: Path, strict: bool, group_name: str | None):
        self.dataset = Dataset(name, root, [], [], [], group_name)
        self.strict = strict

    def error(self, where: str, message: str) -> None:
        if self.strict:
            raise AnnotationError(f"{where}: {message}")
        self.dataset.skipped.append(SkippedItem(where, message))

    def unknown(self, where: str, label: str) -> None:
        self.dataset.skipped.append(SkippedItem(where, f"unknown key {label!r}"))

    def key(self, where: str, label: str) -> Key | None:
        """The key of ``label``; None (and recorded) when unknown or invalid."""
        if _is_unknown(label) or not label.strip():
            self.unknown(where, label)
            return None
        try:
            return parse_key(label)
        except KeyLabelError as exc:
            self.error(where, f"bad key label {label!r} ({exc})")
            return None

    def add(self, item: DatasetItem) -> None:
        (self.dataset.items if item.path.is_file() else self.dataset.missing).append(item)


def _find_audio(stem: str, folders: Sequence[Path]) -> Path | None:
    """First existing ``folder/stem<ext>`` over folders and audio endings."""
    for folder in folders:
        for suffix in _AUDIO_SUFFIXES:
            candidate = folder / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    return None


def _float_field(value: str, where: str, name: str, collector: _Collector) -> float | None | bool:
    """Parse an optional non-negative float; False when invalid (already recorded)."""
    value = (value or "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        collector.error(where, f"{name} {value!r} is not a number")
        return False
    if not number >= 0:
        collector.error(where, f"{name} must be >= 0, got {value}")
        return False
    return number


# --- generic manifest ------------------------------------------------------------------

_PATH_COLUMNS = ("path", "file", "filename", "audio", "audio_path")
_KEY_COLUMNS = ("key", "label", "key_label", "global_key")
_GROUP_COLUMNS = ("genre", "collection", "group")
_ID_COLUMNS = ("id", "piece_id", "track_id")


def _sniff_delimiter(path: Path, text: str) -> str:
    if path.suffix.lower() == ".tsv":
        return "\t"
    first = next((line for line in text.splitlines() if line.strip() and not line.startswith("#")), "")
    return "\t" if "\t" in first and "," not in first else ","


def load_manifest(path: str | Path, *, name: str | None = None, strict: bool = True,
                  audio_root: str | Path | None = None) -> Dataset:
    """A CSV/TSV manifest ``path,key[,genre]`` (see module docstring).

    ``name`` defaults to the manifest's folder name (e.g. ``render24``).
    """
    path = existing_path(path, "manifest")
    if path.is_dir():
        raise AnnotationError(f"{path}: expected a manifest file (CSV/TSV), got a folder")
    name = name or path.resolve().parent.name or path.stem
    base = Path(audio_root) if audio_root is not None else path.parent
    text = read_annotation_text(path)
    delimiter = _sniff_delimiter(path, text)
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1)
            if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        raise AnnotationError(f"{path}: the manifest has no entries")
    header = [c.strip().lower() for c in rows[0][1]]
    path_col = first_column(header, _PATH_COLUMNS)
    key_col = first_column(header, _KEY_COLUMNS)
    has_header = path_col is not None and key_col is not None
    if has_header:
        rows = rows[1:]
        group_col = first_column(header, _GROUP_COLUMNS)
        group_name = header[group_col] if group_col is not None else None
        id_col = first_column(header, _ID_COLUMNS)
        offset_col = first_column(header, ("offset",))
        duration_col = first_column(header, ("duration",))
    elif path_col is not None or key_col is not None or (header and header[0] in _PATH_COLUMNS):
        raise AnnotationError(f"{path}:{rows[0][0]}: header needs both a path and a key column, "
                              f"got {rows[0][1]}")
    else:
        path_col, key_col, group_col, id_col, offset_col, duration_col = 0, 1, 2, None, None, None
        group_name = "genre"
    collector = _Collector(name, path, strict, group_name)
    width = len(header)
    for line, row in rows:
        where = f"{path}:{line}"
        cells = [c.strip() for c in row]
        if has_header and len(cells) != width:
            collector.error(where, f"expected {width} fields as in the header, got {len(cells)}")
            continue
        if not has_header and not 2 <= len(cells) <= 3:
            collector.error(where, f"expected 'path,key[,genre]', got {len(cells)} fields")
            continue
        audio = cells[path_col]
        if not audio:
            collector.error(where, "empty path")
            continue
        key = collector.key(where, cells[key_col])
        if key is None:
            continue
        offset = duration = None
        if offset_col is not None:
            offset = _float_field(cells[offset_col], where, "offset", collector)
            if offset is False:
                continue
        if duration_col is not None:
            duration = _float_field(cells[duration_col], where, "duration", collector)
            if duration is False:
                continue
        group = cells[group_col] if group_col is not None and group_col < len(cells) else None
        audio_path = Path(audio).expanduser()
        if not audio_path.is_absolute():
            audio_path = base / audio_path
        meta = ({h: c for h, c in zip(header, cells)
                 if h not in (header[path_col], header[key_col])} if has_header else {})
        item_id = cells[id_col] if id_col is not None and cells[id_col] else Path(audio).stem
        collector.add(DatasetItem(item_id, audio_path, key, group or None, offset or 0.0,
                                  duration, meta))
    return collector.dataset


def load_dev_synth(root: str | Path, *, strict: bool = True) -> Dataset:
    """The shipped dev-synth set: ``root/labels.csv`` (or that file); group = collection."""
    root = existing_path(root, "dev-synth folder")
    manifest = root / "labels.csv" if root.is_dir() else root
    dataset = load_manifest(manifest, name="dev-synth", strict=strict)
    dataset.group_name = "collection"
    return dataset


# --- GiantSteps ------------------------------------------------------------------------

def load_giantsteps(root: str | Path, *, audio_dir: str | Path | None = None,
                    strict: bool = True) -> Dataset:
    """GiantSteps key / GiantSteps MTG key: one ``*.key`` file per track."""
    root = existing_path(root, "GiantSteps folder")
    key_dir = root / "annotations" / "key"
    key_files = sorted((key_dir if key_dir.is_dir() else root).rglob("*.key"))
    if not key_files:
        raise AnnotationError(f"{root}: no *.key annotation files found")
    genre_dir = root / "annotations" / "genre"
    folders = [Path(audio_dir)] if audio_dir is not None else []
    folders += [root / "audio", root]
    collector = _Collector("giantsteps", root, strict, "genre" if genre_dir.is_dir() else None)
    for key_file in key_files:
        stem = key_file.name[: -len(".key")]
        lines = [(n, ln.strip()) for n, ln in enumerate(read_annotation_text(key_file).splitlines(), 1)
                 if ln.strip()]
        if not lines:
            collector.unknown(f"{key_file}:1", "")
            continue
        line_no, label = lines[0]
        key = collector.key(f"{key_file}:{line_no}", label)
        if key is None:
            continue
        genre = None
        genre_file = genre_dir / f"{stem}.genre"
        if genre_file.is_file():
            genre = next((ln.strip() for ln in read_annotation_text(genre_file).splitlines() if ln.strip()), None)
        audio = _find_audio(stem, [key_file.parent, *folders]) or (folders[0] / f"{stem}.mp3")
        collector.add(DatasetItem(stem, audio, key, genre))
    return collector.dataset


# --- GTZAN (Lerch's key annotations) -----------------------------------------------------

def gtzan_key(code: int) -> Key | None:
    """Lerch's GTZAN integer label: 0–11 = A … G# major, 12–23 = A … G# minor, -1 = None."""
    if code == -1:
        return None
    if not 0 <= code < 24:
        raise KeyLabelError(f"GTZAN key code must be -1 or 0..23, got {code}")
    return Key((9 + code % 12) % 12, "major" if code < 12 else "minor")


def load_gtzan(root: str | Path, *, audio_dir: str | Path | None = None,
               strict: bool = True) -> Dataset:
    """GTZAN with Lerch's ``*.lerch.txt`` key files; group = genre."""
    root = existing_path(root, "GTZAN key folder")
    key_files = sorted(root.rglob("*.lerch.txt"))
    if not key_files:
        raise AnnotationError(f"{root}: no *.lerch.txt annotation files found")
    audio_base = Path(audio_dir) if audio_dir is not None else None
    collector = _Collector("gtzan", root, strict, "genre")
    for key_file in key_files:
        stem = key_file.name[: -len(".lerch.txt")]
        genre = stem.split(".")[0]
        lines = [(n, ln.strip()) for n, ln in enumerate(read_annotation_text(key_file).splitlines(), 1)
                 if ln.strip()]
        where = f"{key_file}:{lines[0][0] if lines else 1}"
        if len(lines) != 1:
            collector.error(where, f"expected one integer key code, found {len(lines)} lines")
            continue
        text = lines[0][1]
        if not re.fullmatch(r"-?\d+", text):
            collector.error(where, f"key code {text!r} is not an integer")
            continue
        try:
            key = gtzan_key(int(text))
        except KeyLabelError as exc:
            collector.error(where, str(exc))
            continue
        if key is None:
            collector.unknown(where, text)
            continue
        folders = [key_file.parent]
        if audio_base is not None:
            folders += [audio_base / genre, audio_base]
        folders += [root / "genres" / genre, root / genre, root / "audio" / genre,
                    root.parent / "genres" / genre]
        audio = _find_audio(stem, folders) or (folders[0] / f"{stem}.wav")
        collector.add(DatasetItem(stem, audio, key, genre))
    return collector.dataset


# --- FMAKv2 ------------------------------------------------------------------------------

def load_fmakv2(root: str | Path, *, audio_dir: str | Path | None = None,
                strict: bool = True) -> Dataset:
    """FMAKv2: ``fmakv2.csv`` (``track_id``, ``key_and_mode``) and FMA-layout audio."""
    root = existing_path(root, "FMAKv2 folder")
    if root.is_file():
        csv_path, base = root, root.parent
    else:
        candidates = [root / "fmakv2.csv", root / "metadata_fmakv2.csv",
                      root / "metadata" / "metadata_fmakv2.csv"]
        csv_path = next((c for c in candidates if c.is_file()), None)
        if csv_path is None:
            raise AnnotationError(f"{root}: fmakv2.csv not found")
        base = root
    folders = [Path(audio_dir)] if audio_dir is not None else []
    folders += [base / "audio", base / "fma_full", base / "fma_large", base]
    reader = csv.reader(io.StringIO(read_annotation_text(csv_path)))
    try:
        header = [c.strip().lower() for c in next(reader)]
    except StopIteration:
        raise AnnotationError(f"{csv_path}: empty file") from None
    if "track_id" not in header or "key_and_mode" not in header:
        raise AnnotationError(f"{csv_path}:1: header needs 'track_id' and 'key_and_mode', got {header}")
    id_col, key_col = header.index("track_id"), header.index("key_and_mode")
    group_col = first_column(header, ("genre", "genre_top", "top_genre"))
    collector = _Collector("fmakv2", csv_path, strict, "genre" if group_col is not None else None)
    for line, row in enumerate(reader, 2):
        if not row or not any(c.strip() for c in row):
            continue
        where = f"{csv_path}:{line}"
        if len(row) != len(header):
            collector.error(where, f"expected {len(header)} fields, got {len(row)}")
            continue
        track = row[id_col].strip()
        if not track.isdigit():
            collector.error(where, f"track_id {track!r} is not a number")
            continue
        key = collector.key(where, row[key_col])
        if key is None:
            continue
        track = f"{int(track):06d}"
        audio = _find_audio(track, [f / track[:3] for f in folders] + folders) \
            or (folders[0] / track[:3] / f"{track}.mp3")
        group = row[group_col].strip() if group_col is not None else None
        collector.add(DatasetItem(track, audio, key, group or None))
    return collector.dataset


# --- Schubert Winterreise ------------------------------------------------------------------

def load_winterreise(root: str | Path, *, audio_dir: str | Path | None = None,
                     excerpt_s: float | None = WINTERREISE_EXCERPT_S, strict: bool = True) -> Dataset:
    """Schubert Winterreise Dataset global keys; items cover the first ``excerpt_s`` seconds."""
    root = existing_path(root, "Winterreise folder")
    if root.is_file():
        csv_path = root
        base = root.parent.parent if root.parent.name == "02_Annotations" else root.parent
    else:
        csv_path = root / "02_Annotations" / "ann_audio_globalkey.csv"
        if not csv_path.is_file():
            csv_path = root / "ann_audio_globalkey.csv"
        if not csv_path.is_file():
            raise AnnotationError(f"{root}: 02_Annotations/ann_audio_globalkey.csv not found")
        base = root
    wav_dir = Path(audio_dir) if audio_dir is not None else base / "01_RawData" / "audio_wav"
    reader = csv.reader(io.StringIO(read_annotation_text(csv_path)), delimiter=";")
    try:
        header = [c.strip().lower() for c in next(reader)]
    except StopIteration:
        raise AnnotationError(f"{csv_path}: empty file") from None
    needed = ("workid", "performanceid", "key")
    if not all(h in header for h in needed):
        raise AnnotationError(f"{csv_path}:1: header needs WorkID;PerformanceID;key, got {header}")
    work_col, perf_col, key_col = (header.index(h) for h in needed)
    collector = _Collector("winterreise", csv_path, strict, "performance")
    for line, row in enumerate(reader, 2):
        if not row or not any(c.strip() for c in row):
            continue
        where = f"{csv_path}:{line}"
        if len(row) != len(header):
            collector.error(where, f"expected {len(header)} ';'-separated fields, got {len(row)}")
            continue
        work, perf = row[work_col].strip(), row[perf_col].strip()
        if not work or not perf:
            collector.error(where, "empty WorkID or PerformanceID")
            continue
        key = collector.key(where, row[key_col])
        if key is None:
            continue
        stem = f"{work}_{perf}"
        audio = _find_audio(stem, [wav_dir, wav_dir / perf]) or (wav_dir / f"{stem}.wav")
        collector.add(DatasetItem(stem, audio, key, perf, 0.0, excerpt_s, {"work": work}))
    return collector.dataset


# --- registry --------------------------------------------------------------------------

#: dataset name -> loader(path, strict=...)
LOADERS: dict[str, Callable[..., Dataset]] = {
    "csv": load_manifest,
    "dev-synth": load_dev_synth,
    "giantsteps": load_giantsteps,
    "gtzan": load_gtzan,
    "fmakv2": load_fmakv2,
    "winterreise": load_winterreise,
}


def load_dataset(name: str, path: str | Path, **options) -> Dataset:
    """Load dataset ``name`` (one of :data:`LOADERS`) from ``path``."""
    try:
        loader = LOADERS[name]
    except KeyError:
        raise AnnotationError(f"unknown dataset {name!r}; choose one of {', '.join(LOADERS)}") from None
    return loader(path, **options)
