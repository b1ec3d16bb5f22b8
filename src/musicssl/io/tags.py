"""Writing the estimated key into a file's metadata tags (mutagen).

Where the key goes:

======================  ==========================================  ==================
container               field                                       value
======================  ==========================================  ==================
MP3, WAV, AIFF          ID3 ``TKEY``                                ``tkey`` form only
FLAC, Ogg Vorbis/Opus   Vorbis comment ``INITIALKEY``               ``notation``
MP4 / M4A               ``----:com.apple.iTunes:initialkey``        ``notation``
WMA (ASF)               ``WM/InitialKey``                           ``notation``
======================  ==========================================  ==================

``TKEY`` is defined by ID3 as at most 3 characters (``"Eb"``, ``"F#m"``),
so it is always written in the ``tkey`` notation. The other fields are free
text; they get ``notation`` (default ``tkey``, the form most players and DJ
software read; ``camelot``/``openkey``/``standard`` on request).

ID3 version (``id3_version``): ``None`` keeps the version of the file's
existing ID3 tag (ID3v2.4 for a file without one); ``3`` or ``4`` rewrites
the whole tag as ID3v2.3 or ID3v2.4. Many car stereos, older players and
some DJ software read only ID3v2.3. ``TKEY`` is written in Latin-1 (its
values are ASCII), which both versions define.

Only metadata is rewritten: mutagen never re-encodes or edits audio frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from musicssl.errors import TagError
from musicssl.keys import NOTATIONS, Key, format_key

MP4_KEY_FIELD = "----:com.apple.iTunes:initialkey"
ASF_KEY_FIELD = "WM/InitialKey"
VORBIS_KEY_FIELD = "INITIALKEY"
ID3_KEY_FIELD = "TKEY"
DEFAULT_TAG_NOTATION = "tkey"
_FIELDS = {"id3": ID3_KEY_FIELD, "vorbis": VORBIS_KEY_FIELD, "mp4": MP4_KEY_FIELD, "asf": ASF_KEY_FIELD}


@dataclass
class TagWrite:
    """What :func:`write_key_tag` did (or, with ``dry_run``, would do)."""

    path: str
    field: str
    value: str
    previous: str | None
    written: bool

    def to_dict(self) -> dict:
        return {"field": self.field, "value": self.value, "previous": self.previous,
                "written": self.written}


def _open(path: str | Path):
    """``(mutagen file object, kind)`` with kind ``"id3"``, ``"vorbis"``, ``"mp4"`` or ``"asf"``."""
    import mutagen
    from mutagen.aiff import AIFF
    from mutagen.asf import ASF
    from mutagen.flac import FLAC
    from mutagen.mp3 import MP3
    from mutagen.mp4 import MP4
    from mutagen.ogg import OggFileType
    from mutagen.wave import WAVE

    path = Path(path)
    if not path.is_file():
        raise TagError(f"{path}: no such file")
    try:
        audio = mutagen.File(path)
    except mutagen.MutagenError as exc:
        raise TagError(f"{path}: cannot read tags ({exc})") from None
    if audio is None:
        raise TagError(f"{path}: not a file type whose tags can be written "
                       f"(supported: MP3, WAV, AIFF, FLAC, Ogg Vorbis/Opus, MP4/M4A, WMA)")
    if isinstance(audio, (MP3, WAVE, AIFF)):
        return audio, "id3"
    if isinstance(audio, (FLAC, OggFileType)):
        return audio, "vorbis"
    if isinstance(audio, MP4):
        return audio, "mp4"
    if isinstance(audio, ASF):
        return audio, "asf"
    raise TagError(f"{path}: writing the key into {type(audio).__name__} tags is not supported")


def _current(audio, kind: str) -> str | None:
    tags = audio.tags
    if tags is None:
        return None
    if kind == "id3":
        frame = tags.get(ID3_KEY_FIELD)
        return str(frame.text[0]) if frame is not None and frame.text else None
    if kind == "vorbis":
        values = tags.get(VORBIS_KEY_FIELD) or tags.get(VORBIS_KEY_FIELD.lower())
        return str(values[0]) if values else None
    if kind == "asf":
        values = tags.get(ASF_KEY_FIELD)
        return str(values[0]) if values else None
    values = tags.get(MP4_KEY_FIELD)
    return bytes(values[0]).decode("utf-8", "replace") if values else None


def read_key_tag(path: str | Path) -> str | None:
    """The key stored in ``path``'s tags (``TKEY``/``INITIALKEY``/``initialkey``), or None."""
    audio, kind = _open(path)
    return _current(audio, kind)


def key_tag_field(path: str | Path) -> str:
    """Name of the field the key is written to for this file."""
    _, kind = _open(path)
    return _FIELDS[kind]


#: ID3v2 minor versions :func:`write_key_tag` can write (2.3 and 2.4).
ID3_VERSIONS = (3, 4)


def write_key_tag(path: str | Path, key: Key, notation: str = DEFAULT_TAG_NOTATION,
                  dry_run: bool = False, id3_version: int | None = None) -> TagWrite:
    """Store ``key`` in ``path``'s tags (see the module doc); ``dry_run`` only reports.

    ``id3_version`` (3, 4 or None: keep the file's) applies to MP3/WAV/AIFF.
    Raises :class:`TagError` for unsupported or unwritable files.
    """
    if notation not in NOTATIONS:
        raise TagError(f"unknown tag notation {notation!r}; choose one of {', '.join(NOTATIONS)}")
    if id3_version not in (None, *ID3_VERSIONS):
        raise TagError(f"ID3 version must be 3 (ID3v2.3) or 4 (ID3v2.4), got {id3_version!r}")
    audio, kind = _open(path)
    previous = _current(audio, kind)
    field = _FIELDS[kind]
    value = format_key(key, "tkey" if kind == "id3" else notation)
    if not dry_run:
        try:
            _store(audio, kind, value, id3_version)
        except Exception as exc:  # mutagen raises several unrelated types
            if isinstance(exc, TagError):
                raise
            raise TagError(f"{path}: could not write tags ({type(exc).__name__}: {exc})") from None
    return TagWrite(str(path), field, value, previous, written=not dry_run)


def _store(audio, kind: str, value: str, id3_version: int | None = None) -> None:
    if audio.tags is None:
        audio.add_tags()
    if kind == "id3":
        from mutagen.id3 import TKEY, Encoding

        if len(value) > 3:  # pragma: no cover - the tkey notation guarantees it
            raise TagError(f"TKEY holds at most 3 characters, got {value!r}")
        if id3_version is None:
            id3_version = 3 if audio.tags.version and audio.tags.version[1] == 3 else 4
        audio.tags.delall(ID3_KEY_FIELD)
        audio.tags.add(TKEY(encoding=Encoding.LATIN1, text=[value]))
        audio.save(v2_version=id3_version)
    elif kind == "vorbis":
        for name in list(audio.tags.keys()):
            if name.upper() == VORBIS_KEY_FIELD:
                del audio.tags[name]
        audio.tags[VORBIS_KEY_FIELD] = [value]
        audio.save()
    elif kind == "asf":
        audio.tags[ASF_KEY_FIELD] = value
        audio.save()
    else:
        from mutagen.mp4 import AtomDataType, MP4FreeForm

        audio.tags[MP4_KEY_FIELD] = [MP4FreeForm(value.encode("utf-8"), dataformat=AtomDataType.UTF8)]
        audio.save()
