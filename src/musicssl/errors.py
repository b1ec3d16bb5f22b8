"""One exception hierarchy for everything musicssl raises on purpose.

Catch :class:`MusicsslError` to handle any of them; the subclasses say what
went wrong (bad audio, bad checkpoint, bad annotation, bad configuration).
"""

from __future__ import annotations


class MusicsslError(Exception):
    """Base class of every error raised by musicssl on purpose."""


# --- audio -----------------------------------------------------------------
class AudioError(MusicsslError):
    """The audio could not be used. ``path`` is set when it came from a file."""

    def __init__(self, message: str, path: str | None = None):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)


class AudioFileNotFoundError(AudioError, FileNotFoundError):
    """The file does not exist (or is not a regular file)."""


class AudioDecodeError(AudioError):
    """The file exists but no decoder could read it as audio."""


class TruncatedAudioError(AudioDecodeError):
    """The file stops before the end its header announces (an interrupted copy or download)."""


class EmptyAudioError(AudioError):
    """The audio has no samples."""


class SilentAudioError(AudioError):
    """Every sample is zero: there is nothing to analyse."""


class AudioTooShortError(AudioError):
    """The audio is shorter than the minimum the analysis needs."""

    def __init__(self, message: str, path: str | None = None, *,
                 duration: float | None = None, minimum: float | None = None):
        self.duration = duration
        self.minimum = minimum
        super().__init__(message, path)


class NonFiniteAudioError(AudioError):
    """The audio contains NaN or infinite samples."""


class AudioTooLongError(AudioError):
    """The audio is longer than the caller allowed."""


# --- models and checkpoints --------------------------------------------------
class CheckpointError(MusicsslError):
    """A checkpoint is missing, malformed, unsafe or of an unknown format."""


class CalibrationError(MusicsslError):
    """A model could not be calibrated (e.g. its answers are inconsistent)."""


class ActivationError(MusicsslError, ValueError):
    """A beat activation is unusable (wrong shape, NaN/inf, outside [0, 1])."""


# --- files we write into ------------------------------------------------------
class TagError(MusicsslError):
    """The key could not be read from or written into a file's tags."""


# --- data, labels and configuration ------------------------------------------
class KeyLabelError(MusicsslError, ValueError):
    """A text could not be read as a musical key."""


class AnnotationError(MusicsslError, ValueError):
    """A dataset annotation or manifest is malformed."""


class ConfigError(MusicsslError, ValueError):
    """A configuration value is invalid."""


# --- the local server (musicssl serve) ----------------------------------------
class UploadTooLargeError(MusicsslError):
    """An upload is larger than the server's limit (HTTP 413)."""


class ServerBusyError(MusicsslError):
    """The server's analysis queue is full (HTTP 503); try again later."""
