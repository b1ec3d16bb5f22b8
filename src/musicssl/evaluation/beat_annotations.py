"""Beat annotation files and beat-annotated datasets.

File format (the one used by the GTZAN, Ballroom, Hainsworth and SMC beat
annotation repositories): one beat per line, either

* ``time`` — seconds, or
* ``time<TAB or spaces or comma>beat-in-bar`` — the position of the beat in
  its bar (1 = downbeat; ``1.0`` is read as 1).

Blank lines and comments (from ``#``, or ``;`` / ``%`` at the start of a
line) are ignored. A line that cannot be read, a negative time or a time
that does not come after the previous one raises
:class:`~musicssl.errors.AnnotationError` naming ``file:line``.

Datasets (each returns a :class:`BeatDataset`):

* ``dev-synth`` — ``labels.csv`` with ``path`` and ``beats_path`` columns.
* ``csv`` — any manifest with a header holding an audio column (``path``,
  ``audio``, ``file``…) and a beats column (``beats_path``, ``beats``,
  ``annotation``…); relative paths are relative to the manifest's folder.
* ``folder`` — audio files under a folder paired by file stem with
  annotation files (``.beats`` or ``.txt`` by default) found next to the
  audio or under an annotation folder (searched recursively). When no exact
  stem matches, a unique annotation named ``<stem>_…`` is used (SMC names
  its files ``SMC_001_<tempo>_<…>.txt``).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from musicssl.errors import AnnotationError
from musicssl.evaluation.annotation_files import (
    existing_path,
    first_column,
    read_annotation_text,
)

__all__ = [
    "BeatAnnotation",
    "BeatItem",
    "BeatDataset",
    "DEFAULT_EXTENSIONS",
    "BEAT_DATASETS",
    "parse_beat_annotation",
    "read_beat_annotation",
    "load_beats",
    "load_beat_manifest",
    "load_beat_dev_synth",
    "scan_beat_folder",
    "load_beat_dataset",
]

#: Annotation file endings tried by :func:`scan_beat_folder`, in order.
DEFAULT_EXTENSIONS: tuple[str, ...] = (".beats", ".txt")
#: Dataset kinds of :func:`load_beat_dataset`.
BEAT_DATASETS: tuple[str, ...] = ("dev-synth", "csv", "folder")

_AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".flac", ".ogg", ".opus", ".au", ".aiff",
                             ".aif", ".m4a", ".aac", ".wma", ".mp4"})
_SEPARATOR = re.compile(r"[\s,]+")
_PATH_COLUMNS = ("path", "audio", "audio_path", "file", "filename")
_BEATS_COLUMNS = ("beats_path", "beats", "beat_path", "beat_file", "annotation", "annotation_path")
_ID_COLUMNS = ("id", "piece_id", "track_id")


# --- one file ------------------------------------------------------------------------

@dataclass(frozen=True)
class BeatAnnotation:
    """Beats of one file: ``times`` (n,) seconds, ``beat_in_bar`` (n,) int or None."""

    times: np.ndarray
    beat_in_bar: np.ndarray | None = None
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.times)

    @property
    def downbeats(self) -> np.ndarray | None:
        """Times (s) of the beats numbered 1, or None without beat numbers."""
        return None if self.beat_in_bar is None else self.times[self.beat_in_bar == 1]


def format_beat_annotation(times: Sequence[float], beat_in_bar: Sequence[int] | None = None,
                           decimals: int = 4) -> str:
    """The text of a beat file: ``time`` (s) per line, or ``time<TAB>beat-in-bar``."""
    if beat_in_bar is None:
        return "".join(f"{float(t):.{decimals}f}\n" for t in times)
    if len(beat_in_bar) != len(times):
        raise AnnotationError(f"{len(times)} beat times but {len(beat_in_bar)} beat-in-bar numbers")
    return "".join(f"{float(t):.{decimals}f}\t{int(n)}\n" for t, n in zip(times, beat_in_bar))


def parse_beat_annotation(text: str, source: str = "<text>") -> BeatAnnotation:
    """Parse the text of a beat file (see module docstring); ``source`` names it in errors."""
    times: list[float] = []
    numbers: list[int] = []
    with_numbers: bool | None = None
    for line_no, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line[0] in ";%":
            continue
        where = f"{source}:{line_no}"
        fields = [f for f in _SEPARATOR.split(line) if f]
        if len(fields) > 2:
            raise AnnotationError(
                f"{where}: expected 'time' or 'time beat-in-bar', got {len(fields)} fields: {raw.strip()!r}")
        try:
            time = float(fields[0])
        except ValueError:
            raise AnnotationError(f"{where}: beat time {fields[0]!r} is not a number") from None
        if not np.isfinite(time) or time < 0:
            raise AnnotationError(f"{where}: beat time must be a finite number >= 0, got {fields[0]}")
        if times and time <= times[-1]:
            raise AnnotationError(
                f"{where}: beat at {time:g} s does not come after the previous one ({times[-1]:g} s)")
        has_number = len(fields) == 2
        if with_numbers is None:
            with_numbers = has_number
        elif has_number != with_numbers:
            raise AnnotationError(
                f"{where}: mixes lines with and without a beat-in-bar number")
        if has_number:
            try:
                value = float(fields[1])
            except ValueError:
                raise AnnotationError(
                    f"{where}: beat-in-bar {fields[1]!r} is not a number") from None
            if not value.is_integer() or value < 1:
                raise AnnotationError(
                    f"{where}: beat-in-bar must be a whole number >= 1, got {fields[1]}")
            numbers.append(int(value))
        times.append(time)
    return BeatAnnotation(np.asarray(times, dtype=np.float64),
                          np.asarray(numbers, dtype=np.int64) if with_numbers else None)


def read_beat_annotation(path: str | Path) -> BeatAnnotation:
    """Read a beat annotation file (see module docstring)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AnnotationError(f"{path}: beat annotation file not found")
    ann = parse_beat_annotation(read_annotation_text(path, "beat annotation file"), str(path))
    return BeatAnnotation(ann.times, ann.beat_in_bar, path)


def load_beats(path: str | Path) -> np.ndarray:
    """Beat times (n,) in seconds from a beat annotation file."""
    return read_beat_annotation(path).times


# --- datasets ----------------------------------------------------------------------------

@dataclass(frozen=True)
class BeatItem:
    """One audio file with its beat annotation."""

    id: str
    audio_path: Path
    annotation_path: Path

    def reference(self) -> BeatAnnotation:
        return read_beat_annotation(self.annotation_path)


@dataclass
class BeatDataset:
    """Pairs to score, plus audio without annotation / annotations without audio."""

    name: str
    root: Path
    items: list[BeatItem]
    missing_annotation: list[Path] = field(default_factory=list)
    missing_audio: list[BeatItem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[BeatItem]:
        return iter(self.items)

    def limit(self, n: int | None) -> "BeatDataset":
        """The first ``n`` items (all when ``n`` is None)."""
        if n is None:
            return self
        if n < 0:
            raise AnnotationError(f"limit must be >= 0, got {n}")
        return BeatDataset(self.name, self.root, self.items[:n], self.missing_annotation,
                           self.missing_audio)

    def describe(self) -> str:
        """One line: usable pairs and what was left out."""
        return (f"{self.name} ({self.root}): {len(self.items)} annotated audio files, "
                f"{len(self.missing_annotation)} audio files without annotation, "
                f"{len(self.missing_audio)} annotations without audio")


def load_beat_manifest(path: str | Path, *, name: str = "csv") -> BeatDataset:
    """A CSV/TSV manifest with a header naming an audio and a beats column."""
    path = existing_path(path, "manifest")
    if path.is_dir():
        raise AnnotationError(f"{path}: expected a manifest file (CSV/TSV), got a folder")
    text = read_annotation_text(path, "beat annotation file")
    first = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first) else ","
    rows = [(n, row) for n, row in enumerate(csv.reader(io.StringIO(text), delimiter=delimiter), 1)
            if row and any(c.strip() for c in row) and not row[0].lstrip().startswith("#")]
    if not rows:
        raise AnnotationError(f"{path}: the manifest has no entries")
    header = [c.strip().lower() for c in rows[0][1]]
    audio_col = first_column(header, _PATH_COLUMNS)
    beats_col = first_column(header, _BEATS_COLUMNS)
    if audio_col is None or beats_col is None:
        raise AnnotationError(
            f"{path}:{rows[0][0]}: header needs an audio column ({', '.join(_PATH_COLUMNS)}) "
            f"and a beats column ({', '.join(_BEATS_COLUMNS)}); got {rows[0][1]}")
    id_col = first_column(header, _ID_COLUMNS)
    base = path.parent
    dataset = BeatDataset(name, path, [])
    for line, row in rows[1:]:
        cells = [c.strip() for c in row]
        if len(cells) != len(header):
            raise AnnotationError(
                f"{path}:{line}: expected {len(header)} fields as in the header, got {len(cells)}")
        audio, beats = cells[audio_col], cells[beats_col]
        if not audio or not beats:
            raise AnnotationError(f"{path}:{line}: empty audio or beats path")
        audio_path = Path(audio).expanduser()
        beats_path = Path(beats).expanduser()
        audio_path = audio_path if audio_path.is_absolute() else base / audio_path
        beats_path = beats_path if beats_path.is_absolute() else base / beats_path
        item_id = cells[id_col] if id_col is not None and cells[id_col] else audio_path.stem
        item = BeatItem(item_id, audio_path, beats_path)
        if not beats_path.is_file():
            raise AnnotationError(f"{path}:{line}: beat annotation file {beats_path} not found")
        if audio_path.is_file():
            dataset.items.append(item)
        else:
            dataset.missing_audio.append(item)
    return dataset


def load_beat_dev_synth(root: str | Path) -> BeatDataset:
    """The shipped dev-synth set: ``root/labels.csv`` (or that file)."""
    root = existing_path(root, "dev-synth folder")
    manifest = root / "labels.csv" if root.is_dir() else root
    return load_beat_manifest(manifest, name="dev-synth")


def _index_annotations(folders: Sequence[Path], extensions: Sequence[str]) -> dict[str, list[Path]]:
    """Annotation files under ``folders`` (recursive) by stem, earlier extensions first."""
    exts = [e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions]
    index: dict[str, list[Path]] = {}
    for folder in folders:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix.lower() in exts:
                index.setdefault(p.stem, []).append(p)
    for paths in index.values():
        paths.sort(key=lambda p: exts.index(p.suffix.lower()))
    return index


def scan_beat_folder(audio_dir: str | Path, annotation_dir: str | Path | None = None, *,
                     extensions: Sequence[str] = DEFAULT_EXTENSIONS,
                     name: str = "folder") -> BeatDataset:
    """Audio files under ``audio_dir`` paired by stem with annotation files.

    Annotations are looked up under ``annotation_dir`` when given, else under
    ``audio_dir``; ``extensions`` in order of preference.
    """
    audio_dir = existing_path(audio_dir, "audio folder")
    if not audio_dir.is_dir():
        raise AnnotationError(f"{audio_dir}: expected a folder of audio files")
    folders = [existing_path(annotation_dir, "annotation folder")] if annotation_dir else [audio_dir]
    index = _index_annotations(folders, extensions)
    audio_files = sorted(p for p in audio_dir.rglob("*")
                         if p.is_file() and p.suffix.lower() in _AUDIO_SUFFIXES)
    dataset = BeatDataset(name, audio_dir, [])
    for audio in audio_files:
        match = index.get(audio.stem)
        if not match:  # SMC style: "<stem>_<tempo>_..."
            prefixed = [ps[0] for stem, ps in index.items() if stem.startswith(audio.stem + "_")]
            match = prefixed if len(prefixed) == 1 else None
        if match:
            dataset.items.append(BeatItem(audio.stem, audio, match[0]))
        else:
            dataset.missing_annotation.append(audio)
    return dataset


def load_beat_dataset(kind: str, path: str | Path, *, annotations: str | Path | None = None,
                      extensions: Sequence[str] = DEFAULT_EXTENSIONS) -> BeatDataset:
    """Dispatch on ``kind`` (one of :data:`BEAT_DATASETS`)."""
    if kind == "dev-synth":
        return load_beat_dev_synth(path)
    if kind == "csv":
        return load_beat_manifest(path)
    if kind == "folder":
        return scan_beat_folder(path, annotations, extensions=extensions)
    raise AnnotationError(f"unknown beat dataset kind {kind!r}; choose one of {', '.join(BEAT_DATASETS)}")
