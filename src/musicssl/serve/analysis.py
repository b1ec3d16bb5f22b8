"""What the server does with an upload, without any HTTP: limits, the worker
pool, the models (loaded once) and the records.

An upload arrives as an open binary file; :meth:`Analyzer.key` /
:meth:`Analyzer.beats` copy it to a temporary file (deleted afterwards), check
its duration and return the same record ``musicssl key/beats --format json``
writes for a file (:func:`musicssl.io.records.key_record` /
:func:`~musicssl.io.records.beats_record`), with ``path`` = the upload's name.
A file that cannot be analysed gives the CLI's error record for it
(:func:`upload_error_record`) and an HTTP status (:func:`http_status`).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO, Callable

from musicssl.beat.estimator import load_beat_estimator
from musicssl.beat.meter import DEFAULT_METER, parse_meter
from musicssl.beat.records import beats_record
from musicssl.errors import (
    AudioTooLongError,
    CheckpointError,
    ConfigError,
    MusicsslError,
    ServerBusyError,
    UploadTooLargeError,
)
from musicssl.io.audio import iter_audio_blocks
from musicssl.io.records import error_record
from musicssl.key.records import key_record
from musicssl.key.registry import load_estimator

log = logging.getLogger("musicssl.serve")

DEFAULT_MAX_UPLOAD_MB = 200.0
DEFAULT_MAX_DURATION_S = 1200.0
COPY_CHUNK = 1 << 20  # bytes per read when copying an upload to its temp file


@dataclass(frozen=True)
class ServeConfig:
    """Settings of one server. ``key_model``: a ``--model`` spec or a checkpoint
    path; ``beats_checkpoint``: None for the shipped ZeroNS model;
    ``workers``: analyses run at once; ``max_pending``: analyses running or
    waiting before new ones get 503."""

    key_model: str = "default"
    beats_checkpoint: str | None = None
    device: str = "cpu"
    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6)
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    workers: int = 2
    max_pending: int = 64
    tmp_dir: str | None = None


def upload_name(filename: str | None) -> str:
    """The name an upload is reported under: the client's file name without any
    folder part (never used to open anything on the server); ``upload`` if none."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    return name or "upload"


def http_status(exc: MusicsslError) -> int:
    """HTTP status of an analysis that raised ``exc``: 413 upload too large,
    503 busy, 400 bad option, 422 audio that cannot be analysed (bad, empty,
    silent, too short, too long), 500 a server-side model problem."""

    if isinstance(exc, UploadTooLargeError):
        return 413
    if isinstance(exc, ServerBusyError):
        return 503
    if isinstance(exc, ConfigError):
        return 400
    if isinstance(exc, CheckpointError):
        return 500
    return 422


def upload_error_record(name: str, temp_path: str | None, exc: BaseException) -> dict:
    """The CLI's error record for ``exc``, naming the upload, never the temp file."""
    record = error_record(temp_path or name, exc)
    record["path"] = name
    if temp_path:
        record["message"] = record["message"].replace(temp_path, name)
    return record


class Analyzer:
    """Models loaded once, a bounded thread pool, and the per-upload work."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self._pool = ThreadPoolExecutor(max_workers=max(1, config.workers), thread_name_prefix="musicssl-serve")
        self._pending = 0
        self._lock = threading.Lock()
        self._key_estimators: dict[int | None, object] = {}
        self._beat_estimators: dict[str, object] = {}

    # ------------------------------------------------------------------ models
    def load(self) -> None:
        """Load the default key and beat models now (not on the first request)."""
        self.key_estimator(None)
        self.beat_estimator("dbn")

    def key_estimator(self, transpositions: int | None):
        """The key estimator for ``transpositions`` (None: the model's default); cached."""
        with self._lock:
            if transpositions not in self._key_estimators:
                import warnings

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    estimator = load_estimator(self.config.key_model, self.config.device, transpositions)
                for warning in caught:
                    log.warning("key model: %s", warning.message)
                if len(self._key_estimators) >= 4:  # a few settings at most; drop the oldest
                    self._key_estimators.pop(next(iter(self._key_estimators)))
                self._key_estimators[transpositions] = estimator
            return self._key_estimators[transpositions]

    def beat_estimator(self, tracker: str, activation: str | None = None, meter=DEFAULT_METER):
        """The beat estimator for ``activation`` (``onset`` or ``zerons``; None: ``zerons`` when
        a beats checkpoint is configured, else ``onset``, as ``musicssl beats``) decoding with
        ``tracker`` (``dbn`` or ``librosa``) and numbering beats with ``meter``; cached."""
        meter = parse_meter(meter)
        with self._lock:
            if (activation, tracker) not in self._beat_estimators:   # models loaded once, whatever the meter
                checkpoint = self.config.beats_checkpoint
                self._beat_estimators[(activation, tracker)] = load_beat_estimator(
                    activation, None if activation == "onset" else checkpoint,
                    device=self.config.device, tracker=tracker)
            numbered = copy.copy(self._beat_estimators[(activation, tracker)])   # shares the model
            numbered.meter = meter
            return numbered

    def describe(self) -> dict:
        """Models and limits, for ``/v1/health``."""
        key = self._key_estimators.get(None)
        return {"key_model": getattr(key, "name", self.config.key_model),
                "beats_model": self.config.beats_checkpoint or "onset (no model; zerons on request)",
                "device": self.config.device, "workers": max(1, self.config.workers),
                "pending": self._pending, "max_pending": self.config.max_pending,
                "max_upload_bytes": self.config.max_upload_bytes,
                "max_duration_s": self.config.max_duration_s}

    # ------------------------------------------------------------------ work (in a worker thread)
    def key(self, upload: BinaryIO, name: str, *, notation: str = "standard", local: bool = False,
            window_s: float = 20.0, hop_s: float = 5.0, transpositions: int | None = None) -> tuple[int, dict]:
        """``(HTTP status, record)``: the key record of an upload, or its error record."""
        def analyse(path: str) -> dict:
            result = self.key_estimator(transpositions).estimate_file(path, local=local, window_s=window_s,
                                                                      hop_s=hop_s)
            return key_record(name, result, notation, local=local)
        return self._with_temp_file(upload, name, analyse)

    def beats(self, upload: BinaryIO, name: str, *, tracker: str = "dbn",
              activation: str | None = None, meter=DEFAULT_METER) -> tuple[int, dict]:
        """``(HTTP status, record)``: the beats record of an upload, or its error record."""
        def analyse(path: str) -> dict:
            estimator = self.beat_estimator(tracker, activation, meter)
            return beats_record(name, estimator.estimate_file(path, keep_activation=False))
        return self._with_temp_file(upload, name, analyse)

    def _with_temp_file(self, upload: BinaryIO, name: str, analyse: Callable[[str], dict]) -> tuple[int, dict]:
        suffix = PurePosixPath(name).suffix.lower()
        suffix = suffix if suffix.isascii() and suffix[1:].isalnum() and len(suffix) <= 6 else ""
        handle = tempfile.NamedTemporaryFile(prefix="musicssl-upload-", suffix=suffix,
                                             dir=self.config.tmp_dir, delete=False)
        try:
            with handle:
                upload.seek(0)
                shutil.copyfileobj(upload, handle, COPY_CHUNK)
            self._check_duration(handle.name)
            return 200, analyse(handle.name)
        except MusicsslError as exc:
            return http_status(exc), upload_error_record(name, handle.name, exc)
        except Exception as exc:  # noqa: BLE001 - a bug, not the client's fault: 500, but a record
            log.exception("analysing %s failed", name)
            return 500, upload_error_record(name, handle.name, exc)
        finally:
            try:
                os.unlink(handle.name)
            except OSError:
                pass

    def _check_duration(self, path: str) -> None:
        """Raise :class:`AudioTooLongError` when the header says the audio is too long (read
        without decoding: a file whose header states no length is not decoded twice). Files
        whose header cannot be read go on to the analysis, which gives the CLI's error for them."""

        try:
            blocks = iter_audio_blocks(path)
        except MusicsslError:
            return
        duration = blocks.expected_seconds()
        blocks.close()
        if duration is not None and duration > self.config.max_duration_s:
            raise AudioTooLongError(f"audio is {duration:.1f} s long; this server accepts at most "
                                    f"{self.config.max_duration_s:g} s (musicssl serve --max-duration)")

    # ------------------------------------------------------------------ the pool
    async def run(self, function: Callable, *args, **kwargs):
        """Run ``function`` in the worker pool; :class:`ServerBusyError` when
        ``max_pending`` analyses are already running or waiting."""
        with self._lock:
            if self._pending >= self.config.max_pending:
                raise ServerBusyError(f"{self._pending} analyses are running or waiting; try again shortly")
            self._pending += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool, lambda: function(*args, **kwargs))
        finally:
            with self._lock:
                self._pending -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
