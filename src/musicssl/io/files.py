"""Finding audio files: folders (recursive), glob patterns, de-duplication by path
identity, the reasons a path is missing (symbolic link loops included)."""

from __future__ import annotations

import errno
import glob
import os
from pathlib import Path
from typing import Iterable, Iterator

from musicssl.errors import AudioFileNotFoundError


def path_identity(path: str | os.PathLike) -> str:
    """Normalised absolute path used to match inputs with existing records."""
    return os.path.normcase(os.path.abspath(os.fspath(path)))


#: File name extensions (lower case, with the dot) treated as audio when
#: searching folders. Video containers are included: their first audio stream
#: is used.
AUDIO_EXTENSIONS: frozenset[str] = frozenset({
    # read by libsndfile
    ".wav", ".wave", ".bwf", ".rf64", ".w64", ".flac", ".ogg", ".oga", ".opus",
    ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".caf",
    # read by FFmpeg (PyAV)
    ".m4a", ".m4b", ".aac", ".alac", ".wma", ".ac3", ".eac3", ".amr", ".ape",
    ".wv", ".mka", ".mp2", ".mpc", ".tta",
    # video containers
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".3gp", ".mpg",
    ".mpeg", ".ts",
})


def find_audio_files(paths, recursive: bool = True) -> list[Path]:
    """Files, folders and glob patterns -> sorted, de-duplicated audio files.

    ``paths``: one path or an iterable of them. A file is taken as given
    (whatever its extension); a folder is searched (recursively by default)
    for files whose extension is in :data:`AUDIO_EXTENSIONS`; a string with
    ``*``, ``?`` or ``[`` that is not an existing path is a glob pattern
    (``**`` allowed) whose matching audio files and folders are used. Hidden
    files and folders (names starting with ``.``) are skipped when searching.
    Raises :class:`AudioFileNotFoundError` for a path that does not exist or a
    pattern that matches nothing.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: dict[Path, Path] = {}

    def add(p: Path) -> None:
        found.setdefault(_identity(p), p)

    for item in paths:
        p = Path(item)
        if p.is_file():
            add(p)
        elif p.is_dir():
            for f in _search_folder(p, recursive):
                add(f)
        elif any(ch in str(item) for ch in "*?["):
            matches = sorted(glob.glob(str(item), recursive=True))
            if not matches:
                raise AudioFileNotFoundError("no file matches this pattern", str(item))
            for m in map(Path, matches):
                if m.is_dir():
                    for f in _search_folder(m, recursive):
                        add(f)
                elif _is_audio_name(m):
                    add(m)
        else:
            reason = missing_reason(p)
            raise AudioFileNotFoundError("no such file or folder" if reason == "no such file"
                                         else reason, p)
    return sorted(found.values(), key=lambda q: str(q))


_GLOB_CHARS = set("*?[")


def expand_inputs(inputs: Iterable[str | os.PathLike], recursive: bool = True) -> list[str]:
    """Files to analyse for command-line ``inputs``, in order, without duplicates.

    Folders and glob patterns are searched with
    :func:`musicssl.io.audio.find_audio_files` (audio extensions only,
    hidden files skipped); a pattern that matches nothing contributes nothing.
    Any other argument is kept as given, even if it does not exist (or is a
    symbolic link loop), so that it gets an error record instead of vanishing;
    so is a folder named like an audio file (``song.mp3/``) holding no audio.
    """
    from musicssl.io.files import AUDIO_EXTENSIONS, find_audio_files

    files: list[str] = []
    seen: set[str] = set()
    for raw in inputs:
        text = os.fspath(raw)
        try:
            found = [str(p) for p in find_audio_files([text], recursive=recursive)]
        except AudioFileNotFoundError:
            is_pattern = not os.path.exists(text) and bool(_GLOB_CHARS & set(text))
            found = [] if is_pattern else [text]
        if not found and os.path.isdir(text) and Path(text).suffix.lower() in AUDIO_EXTENSIONS:
            found = [text]  # a folder named like an audio file: its error record says so
        for path in found:
            identity = path_identity(path)
            if identity not in seen:
                seen.add(identity)
                files.append(path)
    return files


def missing_reason(p: Path) -> str:
    """Why ``p``, which does not exist as far as ``stat`` can tell, cannot be opened."""
    try:
        os.stat(p)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic link loop: the link never reaches a file"
    if p.is_symlink():
        return f"broken symbolic link (it points to {os.readlink(p)!r}, which does not exist)"
    return "no such file"


def _identity(p: Path) -> Path:
    """``p`` with symbolic links resolved; a link loop resolves to its absolute path."""
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # RuntimeError: symlink loop (Python < 3.13)
        return Path(os.path.abspath(p))


# ----------------------------------------------------------------------------
# finding files
# ----------------------------------------------------------------------------
def _is_audio_name(p: Path) -> bool:
    return p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith(".")


def _search_folder(folder: Path, recursive: bool) -> Iterator[Path]:
    if not recursive:
        yield from (p for p in folder.iterdir() if not p.is_dir() and _is_audio_name(p))
        return
    for root, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            p = Path(root) / name
            if _is_audio_name(p):
                yield p
