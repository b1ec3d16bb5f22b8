"""Writing result records: atomic files, text/CSV/JSON/JSONL, and resume.

A *record* is a JSON-ready dict with at least ``"path"``. A failed input has
an *error record* ``{"path", "error": <exception type>, "message": <reason>}``.

:class:`RecordOutput` is what a many-file command writes to. To stdout it
streams records as they come. To a file it guarantees that

* the file is only ever replaced whole (temp file in the same folder, fsync,
  ``os.replace``), so it is either the old complete file or the new one;
* every finished record is also appended and flushed to a journal
  ``<file>.partial`` (JSONL) next to it (fsynced at most once a second), so a
  run that is killed loses nothing; the journal is removed once the file is
  written;
* with ``resume=True`` the records already in the file and in a leftover
  journal are kept, and :meth:`RecordOutput.done` tells which inputs need
  no work (successful records; failed inputs are tried again).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

from musicssl.errors import ConfigError
from musicssl.io.atomic import FSYNC_INTERVAL_S, atomic_write_text
from musicssl.io.files import path_identity

FORMATS: tuple[str, ...] = ("text", "csv", "json", "jsonl")
JOURNAL_SUFFIX = ".partial"


# --- atomic files ------------------------------------------------------------


# --- records -------------------------------------------------------------------

def error_record(path: str, exc: BaseException) -> dict:
    """``{"path", "error", "message"}`` for an input that failed with ``exc``.

    The message drops a leading ``"<path>: "`` that some errors carry.
    """
    message = str(exc) or exc.__class__.__name__
    prefix = f"{path}: "
    if message.startswith(prefix):
        message = message[len(prefix):]
    return {"path": str(path), "error": type(exc).__name__, "message": message}


def is_ok(record: dict) -> bool:
    """True when a record is a success (no ``"error"``, no failed side task)."""
    if record.get("error"):
        return False
    tag = record.get("tag")
    return not (isinstance(tag, dict) and tag.get("error"))


def format_from_path(path: str | Path | None, default: str = "text") -> str:
    """Output format implied by a file name (``.csv``, ``.json``, ``.jsonl``/``.ndjson``)."""
    if path is None:
        return default
    suffix = Path(path).suffix.lower()
    return {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}.get(suffix, default)


class RecordFormat:
    """How records look in one format. Subcommands pass ``text_line`` (record
    -> text block; first line starts with the path, continuation lines are
    indented), ``csv_row`` (record -> flat dict of column -> value) and
    ``csv_columns`` (the header; needed to stream CSV, where the first row
    may be an error record)."""

    def __init__(self, name: str, *, text_line: Callable[[dict], str] | None = None,
                 csv_row: Callable[[dict], dict] | None = None,
                 csv_columns: list[str] | None = None):
        if name not in FORMATS:
            raise ConfigError(f"unknown output format {name!r}; choose one of {', '.join(FORMATS)}")
        self.name = name
        self.text_line = text_line or default_text_line
        self.csv_row = csv_row or flatten_record
        self.csv_columns = csv_columns

    # single records
    def render_line(self, record: dict) -> str:
        """One record as it appears in a line-based stream (with trailing newline)."""
        if self.name == "jsonl":
            return json.dumps(record, ensure_ascii=False) + "\n"
        if self.name == "text":
            return self.text_line(_escaped_for_text(record)).rstrip("\n") + "\n"
        if self.name == "csv":
            raise ConfigError("CSV rows need a header; use render_document")
        return json.dumps(record, ensure_ascii=False, indent=2) + "\n"

    def columns(self, rows: list[dict]) -> list[str]:
        """CSV header: ``csv_columns`` (or ``path``) first, then any other column
        in order of first appearance."""
        names: dict[str, None] = dict.fromkeys(self.csv_columns or ["path"])
        for row in rows:
            for name in row:
                names.setdefault(name, None)
        return list(names)

    def render_csv(self, rows: list[dict], header: bool = True) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns(rows), restval="",
                                extrasaction="ignore", lineterminator="\n")
        if header:
            writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def render_document(self, entries: list["Entry"]) -> str:
        """A whole output file for ``entries`` (kept + new)."""
        if self.name == "json":
            return json.dumps([e.record for e in entries], ensure_ascii=False, indent=2) + "\n"
        if self.name == "jsonl":
            return "".join(self.render_line(e.record) for e in entries)
        if self.name == "text":
            return "".join(e.text if e.text is not None else self.render_line(e.record) for e in entries)
        rows = [e.row if e.row is not None else self.csv_row(e.record) for e in entries]
        return self.render_csv(rows) if rows else ""


_TEXT_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape_text_field(text: str) -> str:
    r"""``text`` safe for one field of a tab-separated line: backslash, newline,
    carriage return and tab as ``\\``, ``\n``, ``\r``, ``\t``; other control
    characters as ``\xNN``. :func:`unescape_text_field` reverses it."""
    return "".join(_TEXT_ESCAPES.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 32 or ord(ch) == 127 else ch)
                   for ch in text)


def unescape_text_field(text: str) -> str:
    """The inverse of :func:`escape_text_field`."""
    if "\\" not in text:
        return text
    return re.sub(r"\\(x[0-9a-f]{2}|.)",
                  lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 3
                  else {"n": "\n", "r": "\r", "t": "\t"}.get(m[1], m[1]), text)


def _escaped_for_text(record: dict) -> dict:
    """``record`` with its path and message escaped for the text format (one record, one block)."""
    fields = {name: escape_text_field(record[name]) for name in ("path", "message")
              if isinstance(record.get(name), str)}
    return {**record, **fields} if fields else record


def default_text_line(record: dict) -> str:
    """``path<TAB>value...`` for a generic record; errors as ``path<TAB>ERROR<TAB>type: reason``."""
    if record.get("error"):
        return f"{record['path']}\tERROR\t{record['error']}: {record.get('message', '')}"
    values = [str(v) for k, v in record.items() if k != "path" and not isinstance(v, (dict, list))]
    return "\t".join([str(record["path"]), *values])


def flatten_record(record: dict) -> dict:
    """Flat CSV row: scalars as they are; nested dicts as ``parent.child``
    columns; lists as JSON text."""
    row: dict = {}
    for name, value in record.items():
        if isinstance(value, dict):
            for sub, inner in value.items():
                row[f"{name}.{sub}"] = json.dumps(inner) if isinstance(inner, (dict, list)) else inner
        elif isinstance(value, list):
            row[name] = json.dumps(value, ensure_ascii=False)
        else:
            row[name] = value
    return row


# --- reading existing output (resume) ------------------------------------------------

class Entry:
    """One record of an output file: the parsed ``record`` (JSON formats, journal),
    or the original ``row`` (CSV) / ``text`` block (text) to write back unchanged."""

    __slots__ = ("path", "ok", "record", "row", "text")

    def __init__(self, path: str, ok: bool, record: dict | None = None,
                 row: dict | None = None, text: str | None = None):
        self.path, self.ok, self.record, self.row, self.text = path, ok, record, row, text


def read_jsonl(text: str) -> list[dict]:
    """Records of a JSONL text; an unfinished or corrupt line (e.g. from a
    killed writer) is skipped."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "path" in value:
            records.append(value)
    return records


def read_entries(path: str | Path, fmt: str) -> list[Entry]:
    """Entries of an existing output file written in ``fmt`` (empty if absent).

    Raises :class:`~musicssl.errors.ConfigError` if the file cannot be read in
    that format (resuming into it would destroy it).
    """
    path = Path(path)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return []
    if fmt == "jsonl":
        return [Entry(r["path"], is_ok(r), record=r) for r in read_jsonl(text)]
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: cannot resume, not a JSON file ({exc})") from None
        if not isinstance(data, list):
            raise ConfigError(f"{path}: cannot resume, expected a JSON list of records")
        return [Entry(r["path"], is_ok(r), record=r) for r in data if isinstance(r, dict) and "path" in r]
    if fmt == "csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise ConfigError(f"{path}: cannot resume, CSV has no 'path' column")
        entries = []
        for row in reader:
            if not row.get("path") or None in row:  # empty or damaged row
                continue
            ok = not row.get("error") and not row.get("tag_error")
            entries.append(Entry(row["path"], ok, row=dict(row)))
        return entries
    # text: a block is a line that does not start with whitespace plus its indented lines
    entries = []
    for block in _text_blocks(text):
        fields = block.split("\n", 1)[0].split("\t")
        ok = (len(fields) < 2 or fields[1] != "ERROR") and "\n    tag not written:" not in block
        entries.append(Entry(unescape_text_field(fields[0]), ok, text=block if block.endswith("\n") else block + "\n"))
    return entries


def _text_blocks(text: str) -> list[str]:
    blocks: list[str] = []
    for line in text.splitlines(keepends=True):
        if line[:1] in (" ", "\t") and blocks:
            blocks[-1] += line
        elif line.strip():
            blocks.append(line)
    return blocks


# --- the writer -------------------------------------------------------------------------

class RecordOutput:
    """Destination of the records of one run (stdout or a file); see the module doc.

    Use as a context manager; :meth:`write` each record; leaving the block
    normally or by an exception (including KeyboardInterrupt) writes the file.
    """

    def __init__(self, path: str | Path | None, fmt: RecordFormat, *, resume: bool = False,
                 stream: IO[str] | None = None):
        self.path = None if path is None else Path(path)
        self.format = fmt
        self.stream = stream if stream is not None else sys.stdout
        self.new: list[dict] = []
        self.kept: list[Entry] = []
        self._journal: IO[str] | None = None
        self._last_sync = -float("inf")
        self._resume = resume
        self._csv_header_written = False
        self._closed = False
        if self.path is None:
            if resume:
                raise ConfigError("resuming (--skip-existing) needs an output file (-o FILE)")
            return
        if self.path.is_dir():
            raise ConfigError(f"{self.path}: is a folder, not an output file")
        if not self.path.parent.exists() and str(self.path.parent):
            raise ConfigError(f"{self.path.parent}: output folder does not exist")
        if resume:
            entries = read_entries(self.path, fmt.name)
            if self.journal_path.exists():
                records = read_jsonl(self.journal_path.read_text(encoding="utf-8"))
                entries += [Entry(r["path"], is_ok(r), record=r) for r in records]
            latest: dict[str, Entry] = {}
            for entry in entries:  # later entries supersede earlier ones
                latest.pop(path_identity(entry.path), None)
                latest[path_identity(entry.path)] = entry
            self.kept = list(latest.values())

    def _open_journal(self) -> None:
        """Open the journal: appended to when resuming (its records stay valid
        until the file is written), truncated otherwise."""
        assert self.path is not None
        if self._resume and self.journal_path.exists():
            with open(self.journal_path, "rb") as raw:
                size = raw.seek(0, os.SEEK_END)
                cut_off = False
                if size > 0:
                    raw.seek(size - 1)
                    cut_off = raw.read(1) != b"\n"
            self._journal = open(self.journal_path, "a", encoding="utf-8")
            if cut_off:  # the last record was cut off by a crash: start a fresh line
                self._journal.write("\n")
        else:
            self._journal = open(self.journal_path, "w", encoding="utf-8")

    @property
    def journal_path(self) -> Path:
        assert self.path is not None
        return self.path.with_name(self.path.name + JOURNAL_SUFFIX)

    def done(self) -> set[str]:
        """Identities (:func:`path_identity`) of inputs with a successful record already."""
        return {path_identity(e.path) for e in self.kept if e.ok}

    def _append_journal(self, record: dict) -> None:
        if self._journal is None:
            self._open_journal()
        assert self._journal is not None
        self._journal.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._journal.flush()  # in the OS's hands: survives the process being killed
        now = time.monotonic()
        if now - self._last_sync >= FSYNC_INTERVAL_S:  # on disk: survives a system crash
            os.fsync(self._journal.fileno())
            self._last_sync = now

    def write(self, record: dict) -> None:
        """Add one finished record (streamed to stdout, or journaled for the file)."""
        self.new.append(record)
        if self.path is not None:
            self._append_journal(record)
            return
        if self.format.name in ("text", "jsonl"):
            self.stream.write(self.format.render_line(record))
        elif self.format.name == "csv":
            row = self.format.csv_row(record)
            # a stream cannot rewrite its header: csv_columns (or the first row) fixes it
            if not self._csv_header_written:
                self._csv_columns = self.format.columns([row, {"error": "", "message": ""}])
                self._csv_writer = csv.DictWriter(self.stream, fieldnames=self._csv_columns, restval="",
                                                  extrasaction="ignore", lineterminator="\n")
                self._csv_writer.writeheader()
                self._csv_header_written = True
            self._csv_writer.writerow(row)
        self.stream.flush()

    def entries(self) -> list[Entry]:
        """Kept entries (minus those redone in this run) followed by the new records."""
        redone = {path_identity(r["path"]) for r in self.new}
        kept = [e for e in self.kept if path_identity(e.path) not in redone]
        return kept + [Entry(r["path"], is_ok(r), record=r) for r in self.new]

    def close(self) -> None:
        """Write the output file atomically and drop the journal (or finish stdout JSON)."""
        if self._closed:
            return
        self._closed = True
        if self.path is None:
            if self.format.name == "json":
                self.stream.write(json.dumps(self.new, ensure_ascii=False, indent=2) + "\n")
                self.stream.flush()
            return
        with _deferred_sigint():  # a second Ctrl-C must not cut the final write short
            document = self.format.render_document(self.entries())
            atomic_write_text(self.path, document)
            if self._journal is not None:
                self._journal.close()
            with contextlib.suppress(OSError):
                os.unlink(self.journal_path)

    def __enter__(self) -> "RecordOutput":
        if self.path is not None and self._journal is None:
            self._open_journal()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close()


@contextlib.contextmanager
def _deferred_sigint() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) until the block is done, then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def write_records(path: str | Path, records: Iterable[dict], fmt: RecordFormat) -> None:
    """Write ``records`` to ``path`` in ``fmt`` atomically (no journal, no resume)."""
    entries = [Entry(r["path"], is_ok(r), record=r) for r in records]
    atomic_write_text(path, fmt.render_document(entries))

