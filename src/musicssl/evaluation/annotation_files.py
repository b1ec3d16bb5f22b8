"""Small file helpers shared by the key and beat annotation readers
(:mod:`musicssl.evaluation.datasets`, :mod:`musicssl.evaluation.beat_annotations`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from musicssl.errors import AnnotationError


def read_annotation_text(path: Path, what: str = "annotation file") -> str:
    """Text of ``path`` (UTF-8, BOM allowed, else Latin-1); :class:`AnnotationError` if unreadable."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return path.read_text(encoding="latin-1")
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read {what} ({exc})") from exc


def existing_path(path: str | Path, what: str) -> Path:
    """``path`` (``~`` expanded); :class:`AnnotationError` naming ``what`` if it does not exist."""
    path = Path(path).expanduser()
    if not path.exists():
        raise AnnotationError(f"{path}: {what} not found")
    return path


def first_column(header: list[str], names: Sequence[str]) -> int | None:
    """Index in ``header`` of the first of ``names`` present there, else None."""
    return next((header.index(n) for n in names if n in header), None)
