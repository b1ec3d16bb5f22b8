"""Audio input for every model: decode, mix down, resample, normalise, validate.

The one place in musicssl that decodes or resamples audio.

Pipeline (identical to the released S-KEY reference, bit for bit on its test
recording): decode to float32 frames ``(n, channels)`` with libsndfile
(:mod:`soundfile`), falling back to FFmpeg (:mod:`av`) for containers
libsndfile cannot read (m4a/aac, wma, mp4, mkv, webm, ...); resample every
channel with libsoxr at "HQ" quality; take the mean of the channels; divide by
the peak absolute value. Files are decoded and resampled in blocks with a
streaming resampler, so no float64 or multichannel copy of a whole long file is
ever held in memory.

Lossy codecs may add a few tens of milliseconds of encoder padding (AAC, WMA
through FFmpeg); lossless formats and libsndfile's MP3 decoder give the exact
length.

Public functions
----------------
``load_audio(path, sr)``          file -> float32 ``(n,)`` at ``sr`` Hz
``prepare_audio(samples, sr_in)`` in-memory array -> the same
``iter_audio_blocks(path, sr)``   file -> float32 blocks, for long files
``scan_audio(path, sr, spans)``   length, peak, mean and excerpts in one pass
``audio_info(path)``              cheap header information
``find_audio_files(paths)``       files, folders and glob patterns -> files

Bad input raises a subclass of :class:`musicssl.errors.AudioError` whose
``path`` attribute names the file.

Truncated files, one rule for every format: decoding that stops more than
:data:`TRUNCATION_TOLERANCE_S` and :data:`TRUNCATION_FRACTION` short of the
length the header announces (FLAC, WAV's data chunk, MP3's Xing/Info header,
the FFmpeg containers of :data:`_LENGTH_CONTAINERS`), or an Ogg file whose last page lacks the end-of-stream
mark, raises :class:`~musicssl.errors.TruncatedAudioError` ("truncated:
decoded 20.9 of 44.4 s") once the decoded part has been read; nothing is
analysed in part. A span (``offset``/``duration``) that lies wholly inside
what decodes is returned normally.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from musicssl.errors import (
    AudioDecodeError,
    AudioError,
    AudioFileNotFoundError,
    AudioTooLongError,
    AudioTooShortError,
    ConfigError,
    EmptyAudioError,
    NonFiniteAudioError,
    SilentAudioError,
    TruncatedAudioError,
)
from musicssl.io.files import missing_reason


def _soundfile():
    import soundfile  # deferred on purpose: the packed GPU job trains without audio decoders

    return soundfile


def _soxr():
    import soxr  # deferred on purpose, as soundfile

    return soxr

__all__ = [
    "RESAMPLE_QUALITY",
    "STREAM_MIN_SECONDS",
    "AudioBlocks",
    "AudioInfo",
    "AudioScan",
    "audio_info",
    "check_min_duration",
    "header_seconds",
    "is_long",
    "iter_audio_blocks",
    "load_audio",
    "prepare_audio",
    "scan_audio",
]


#: libsoxr quality recipe used for every resampling (the S-KEY reference used HQ).
RESAMPLE_QUALITY = "HQ"

#: Arrays given to :func:`prepare_audio` have at most this many channels.
MAX_CHANNELS = 16

_DEFAULT_BLOCK_SECONDS = 60.0
_LOAD_BLOCK_SECONDS = 10.0  # smaller blocks inside load_audio: less working memory


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says.

    ``frames`` counts samples per channel at ``samplerate`` Hz; for files read
    through FFmpeg it is derived from the container's duration and may be off
    by a few milliseconds. ``format`` is ``"CONTAINER/CODEC"``, e.g.
    ``"WAV/PCM_16"`` (libsndfile names) or ``"mov,mp4,m4a,3gp,3g2,mj2/aac"``
    (FFmpeg names).
    """

    duration_s: float
    samplerate: int
    channels: int
    frames: int
    format: str


# ----------------------------------------------------------------------------
# argument checks
# ----------------------------------------------------------------------------
def _check_rate(sr, name: str) -> float:
    try:
        value = float(sr)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive number of Hz, got {sr!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name} must be a positive number of Hz, got {sr!r}")
    return value


def _seconds(value, name: str, *, optional: bool = False) -> float | None:
    """A finite number of seconds >= 0 (any real type, numpy included)."""
    if value is None and optional:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
    return seconds


def _check_path(path) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioFileNotFoundError(missing_reason(p), p)
    if not p.is_file():
        kind = "a directory" if p.is_dir() else "not a regular file"
        raise AudioFileNotFoundError(f"is {kind}, not an audio file", p)
    if not os.access(p, os.R_OK):
        raise AudioDecodeError("permission denied: the file is not readable", p)
    return p


# ----------------------------------------------------------------------------
# truncated files
# ----------------------------------------------------------------------------
#: A file is truncated when decoding stops more than this many seconds, and
#: more than TRUNCATION_FRACTION of the length, before the end its header
#: announces (headers of lossy containers can be a little off).
TRUNCATION_TOLERANCE_S = 0.5
TRUNCATION_FRACTION = 0.02

#: Lines native decoders print on stderr that the errors above already report
#: in words (libmpg123 on an MP3 whose Xing header disagrees with its size).
_DECODER_NOISE = ("Xing stream size off",)

# the PCM subtypes whose WAV data chunk size gives the sample count
_PCM_SUBTYPES = frozenset({"PCM_U8", "PCM_S8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE", "ULAW", "ALAW"})


def _is_short(decoded: int, header: int, rate: float) -> bool:
    """True when ``decoded`` frames fall short of the ``header``'s count beyond the tolerance."""
    missing = header - decoded
    return missing > TRUNCATION_FRACTION * header and missing / rate > TRUNCATION_TOLERANCE_S


def _wav_data_frames(path: Path, subtype: str, samplerate: int) -> int | None:
    """Frames a WAV file's ``data`` chunk declares (None: unknown or not checkable).

    libsndfile clamps a WAV's length to what the file holds, so a cut WAV
    looks whole; the chunk size (read by mutagen) still says how long it was."""
    if subtype not in _PCM_SUBTYPES:
        return None  # compressed subtypes: the chunk size is no sample count
    try:
        from mutagen.wave import WAVE

        length = WAVE(path).info.length
    except Exception:  # noqa: BLE001 - mutagen raises several types; no verdict then
        return None
    return int(round(length * samplerate)) if length else None


#: FFmpeg containers whose header stores the length (checked for truncation).
_LENGTH_CONTAINERS = ("mov", "mp4", "matroska", "webm", "asf", "wv", "ogg", "flac", "wav", "aiff")


def _mp3_has_length_header(path: Path) -> bool:
    """True when the first MPEG frame of ``path`` carries a Xing, Info or VBRI header
    (the frame count); without one the length is only estimated from the file size."""
    with open(path, "rb") as f:
        head = f.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:  # skip an ID3v2 tag (syncsafe size)
            start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
            start += 10 if head[5] & 0x10 else 0
        f.seek(start)
        first = f.read(8192)
    sync = next((i for i in range(len(first) - 1)
                 if first[i] == 0xFF and first[i + 1] & 0xE0 == 0xE0), None)
    if sync is None:
        return False
    frame = first[sync:sync + 200]
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _ogg_has_end(path: Path) -> bool:
    """True when the last complete Ogg page of ``path``'s first stream marks its end.

    An Ogg file carries no total length, but its last page has the
    end-of-stream flag; a cut file ends before that page (pages read by mutagen)."""
    from mutagen.ogg import OggPage

    try:
        with open(path, "rb") as f:
            first = OggPage(f)
            return bool(OggPage.find_last(f, first.serial, finishing=False).last)
    except Exception:  # noqa: BLE001 - unreadable pages: libsndfile's decoding decides
        return True


#: fd 2 is one per process: only one _QuietStderr may swap it at a time (threads of musicssl serve)
_STDERR_LOCK = threading.RLock()


class _QuietStderr:
    """Captures what native code writes on file descriptor 2 while active, then
    writes back every line except known decoder noise (:data:`_DECODER_NOISE`).
    Holds a process-wide lock meanwhile, so threads never interleave the swaps."""

    def __enter__(self):
        _STDERR_LOCK.acquire()
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
        except (OSError, ValueError, AttributeError):
            self._saved = None
            _STDERR_LOCK.release()
            return self
        self._capture = tempfile.TemporaryFile()
        os.dup2(self._capture.fileno(), 2)
        return self

    def __exit__(self, *exc):
        if self._saved is None:
            return False
        try:
            os.dup2(self._saved, 2)
            os.close(self._saved)
        finally:
            _STDERR_LOCK.release()
        self._capture.seek(0)
        text = self._capture.read().decode("utf-8", "replace")
        self._capture.close()
        kept = [line for line in text.splitlines(keepends=True)
                if not any(noise in line for noise in _DECODER_NOISE)]
        if kept:
            os.write(2, "".join(kept).encode("utf-8", "replace"))
        return False


# ----------------------------------------------------------------------------
# decoders: each yields float32 blocks (frames, channels) at the native rate
# ----------------------------------------------------------------------------
class _SoundfileSource:
    """A file libsndfile can read.

    ``header_frames``: the length the file announces, when it can say more
    than libsndfile's ``frames`` (a WAV's data chunk size); ``open_end``: an
    Ogg file whose last page lacks the end-of-stream mark."""

    def __init__(self, path: Path):
        self.path = path
        with _QuietStderr():
            self._file = _soundfile().SoundFile(str(path))  # raises on failure
        self.samplerate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames: int | None = int(self._file.frames)
        self.format = f"{self._file.format}/{self._file.subtype}"
        self.header_frames = self.frames
        self.open_end = False
        if self._file.format == "WAV":
            declared = _wav_data_frames(path, self._file.subtype, self.samplerate)
            if declared is not None and declared > self.frames:
                self.header_frames = declared
        elif self._file.format == "OGG":
            self.open_end = not _ogg_has_end(path)
        elif self._file.format == "MP3" and not _mp3_has_length_header(path):
            self.header_frames = None  # libmpg123 guessed the length from the file size

    def info(self) -> AudioInfo:
        return AudioInfo(self.frames / self.samplerate, self.samplerate, self.channels,
                         self.frames, self.format)

    def blocks(self, start: int, stop: int | None, block_frames: int) -> Iterator[np.ndarray]:
        f = self._file
        if start > 0:
            if self.frames and start >= self.frames:
                return
            try:
                f.seek(start)
            except (RuntimeError, _soundfile().LibsndfileError):
                return  # past the end of a file whose header has no length
        position = start
        while stop is None or position < stop:
            want = block_frames if stop is None else min(block_frames, stop - position)
            try:
                block = f.read(want, dtype="float32", always_2d=True)
            except (RuntimeError, _soundfile().LibsndfileError) as e:
                if self.frames:
                    decoded = position + self._decodable_frames(position)
                    raise TruncatedAudioError(
                        f"truncated or corrupt: decoded {decoded / self.samplerate:.1f} of "
                        f"{self.frames / self.samplerate:.1f} s, then the decoder failed: "
                        f"{_short(e, self.path)}", self.path) from e
                raise AudioDecodeError(
                    f"decoding failed at {position / self.samplerate:.2f} s (truncated or corrupt?): "
                    f"{_short(e, self.path)}", self.path) from e
            if len(block) == 0:
                return
            position += len(block)
            yield block

    def _decodable_frames(self, start: int, step: int = 4096) -> int:
        """How many frames from ``start`` decode before an error (in a fresh handle)."""
        n = 0
        try:
            with _QuietStderr(), _soundfile().SoundFile(str(self.path)) as f:
                f.seek(start)
                while len(block := f.read(step, dtype="float32")):
                    n += len(block)
        except (RuntimeError, _soundfile().LibsndfileError):
            pass
        return n

    def close(self) -> None:
        self._file.close()


_INT_SCALE = {np.dtype(np.int16): 2.0 ** 15, np.dtype(np.int32): 2.0 ** 31,
              np.dtype(np.int64): 2.0 ** 63}


def _av_frame_to_float32(frame, channels: int) -> np.ndarray:
    """One decoded PyAV audio frame -> float32 (samples, channels)."""
    data = frame.to_ndarray()
    if frame.format.is_planar:
        data = data.T  # (channels, samples) -> (samples, channels)
    else:
        data = data.reshape(-1, channels)  # interleaved (1, samples * channels)
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    scale = _INT_SCALE.get(data.dtype)
    if scale is not None:
        return (data / scale).astype(np.float32)
    return np.ascontiguousarray(data, dtype=np.float32)


def _n_channels(frame) -> int:
    """Channel count of a PyAV audio frame (``nb_channels`` in PyAV >= 13)."""
    layout = frame.layout
    return int(getattr(layout, "nb_channels", None) or len(layout.channels))


class _PyAVSource:
    """The first audio stream of anything FFmpeg can demux and decode.

    Sample rate and channel count are those of the first decoded frame (the
    container header can disagree, e.g. HE-AAC). Positions count decoded
    samples from the first one, so a span is always decoded from the start of
    the file (exact; FFmpeg's seeking is not sample-accurate for most codecs):
    for long files use :func:`iter_audio_blocks` rather than many offsets.
    """

    def __init__(self, path: Path):
        import av  # imported lazily: only needed for non-libsndfile formats

        self._av = av
        self.path = path
        with av.open(str(path), "r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("the file contains no audio stream", path)
            stream = container.streams.audio[0]
            try:
                first = next(container.decode(stream), None)
            except av.error.FFmpegError as e:
                raise AudioDecodeError(
                    f"the audio stream cannot be decoded: {_short(e, path)}", path) from e
            if first is None:
                raise EmptyAudioError("the audio stream has no decodable samples", path)
            self.samplerate = int(first.sample_rate)
            self.channels = _n_channels(first)
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / av.time_base
            else:
                seconds = None
            self.frames = None if seconds is None else int(round(seconds * self.samplerate))
            self.format = f"{container.format.name}/{stream.codec_context.name}"
        # raw elementary streams (ADTS AAC, AC-3, ...) have no length: FFmpeg estimates it
        # from the bitrate, which proves nothing about truncation
        stored = any(name in container.format.name for name in _LENGTH_CONTAINERS)
        self.header_frames = self.frames if stored else None
        self.open_end = False
        # decoding uses a fresh container, opened when needed (seeking back to 0
        # does not reliably reset the decoders)
        self._container = None

    def info(self) -> AudioInfo:
        frames = self.frames
        if frames is None:  # no duration in the header: count by decoding
            frames = sum(len(b) for b in self.blocks(0, None, 1 << 20))
        return AudioInfo(frames / self.samplerate, self.samplerate, self.channels, frames,
                         self.format)

    def blocks(self, start: int, stop: int | None, block_frames: int) -> Iterator[np.ndarray]:
        """Float32 ``(k, channels)`` blocks covering samples [start, stop)."""
        if self._container is not None:
            self._container.close()
        self._container = self._av.open(str(self.path), "r")
        frames = self._container.decode(self._container.streams.audio[0])
        position = 0  # index of the next decoded sample
        pending: list[np.ndarray] = []
        n_pending = 0
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except self._av.error.FFmpegError as e:
                raise AudioDecodeError(
                    f"decoding failed at {position / self.samplerate:.2f} s (truncated or "
                    f"corrupt?): {_short(e, self.path)}", self.path) from e
            if frame.sample_rate != self.samplerate or _n_channels(frame) != self.channels:
                raise AudioDecodeError(
                    f"the stream changes format at {position / self.samplerate:.2f} s "
                    f"({self.samplerate} Hz/{self.channels} ch -> "
                    f"{frame.sample_rate} Hz/{_n_channels(frame)} ch)", self.path)
            data = _av_frame_to_float32(frame, self.channels)
            lo, hi = position, position + len(data)
            position = hi
            if hi <= start:
                continue
            data = data[max(0, start - lo):]
            if stop is not None and hi > stop:
                data = data[: len(data) - (hi - stop)]
            if len(data):
                pending.append(data)
                n_pending += len(data)
            if n_pending >= block_frames:
                yield np.concatenate(pending)
                pending, n_pending = [], 0
            if stop is not None and position >= stop:
                break
        if pending:
            yield np.concatenate(pending)

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def _open_source(path) -> _SoundfileSource | _PyAVSource:
    """Opens ``path`` with libsndfile, else FFmpeg; typed errors for bad files."""
    p = _check_path(path)
    if p.stat().st_size == 0:
        raise EmptyAudioError("the file is empty (0 bytes)", p)
    try:
        return _SoundfileSource(p)
    except Exception as e:  # libsndfile: format not recognised / unsupported
        sf_error = _short(e, p)
    try:
        return _PyAVSource(p)
    except AudioError:
        raise
    except Exception as e:  # FFmpeg: invalid data, unknown format, ...
        av_error = _short(e, p)
    raise AudioDecodeError(
        f"not readable as audio (soundfile: {sf_error}; PyAV/FFmpeg: {av_error})", p)


def _short(error: Exception, path: Path) -> str:
    """A decoder's error message without the path (the caller adds it once)."""
    text = getattr(error, "strerror", None) or str(error)
    for noise in (f"Error opening {str(path)!r}:", f"{str(path)!r}:", f": {str(path)!r}",
                  str(path)):
        text = text.replace(noise, "")
    text = " ".join(text.split()).strip(" :")
    text = text.removeprefix("Error : ").strip()
    # libsndfile's generic message for a failed MP3 open, misleading once the file exists
    text = text.replace("File does not exist or is not a regular file (possibly a pipe?).",
                        "format not recognised.")
    return (text[:200] + "...") if len(text) > 200 else (text or type(error).__name__)


# ----------------------------------------------------------------------------
# mix-down and resampling
# ----------------------------------------------------------------------------
class _Resampler:
    """Streaming: float32 (k, channels) at sr_in -> float32 (m,) or (m, channels) at sr_out.

    Every channel is resampled (libsoxr HQ) and then averaged, the order of
    operations of the S-KEY reference. Blocks must be fed in order; call
    :meth:`flush` once at the end.
    """

    def __init__(self, sr_in: float, sr_out: float, channels: int, mono: bool):
        self.mono = mono
        self._stream = None
        if sr_in != sr_out:
            self._stream = _soxr().ResampleStream(sr_in, sr_out, channels, dtype="float32",
                                               quality=RESAMPLE_QUALITY)
        self._channels = channels

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self._stream is not None:
            block = self._stream.resample_chunk(np.ascontiguousarray(block), last=last)
        return block.mean(axis=1, dtype=np.float32) if self.mono else block

    def flush(self) -> np.ndarray:
        return self(np.zeros((0, self._channels), np.float32), last=True)


def _first_nonfinite(block: np.ndarray) -> int | None:
    bad = ~np.isfinite(block)
    if not bad.any():
        return None
    return int(np.argmax(bad.any(axis=1)))


# ----------------------------------------------------------------------------
# streaming
# ----------------------------------------------------------------------------
class AudioBlocks:
    """Iterable of decoded, mixed-down, resampled blocks of one file.

    Iterating yields float32 arrays ``(m,)`` (``mono=True``) or ``(m, channels)``
    at ``sr`` Hz, about ``block_seconds`` long each (the first and last are
    shorter), whose concatenation equals :func:`load_audio` with
    ``normalize=False`` exactly. Blocks are NOT peak-normalised: after the
    iteration finished, ``peak`` holds the peak absolute value of everything
    yielded and ``n_samples`` its length; divide by ``peak`` to obtain what
    :func:`load_audio` returns (or iterate twice).

    Raises, while iterating: :class:`NonFiniteAudioError` at the first block
    with NaN/inf, :class:`AudioTooLongError` as soon as more than
    ``max_duration`` seconds were decoded, and at the end
    :class:`EmptyAudioError` (nothing decoded) or :class:`SilentAudioError`
    (all zero). Opening errors (missing file, undecodable) are raised by the
    constructor. Each iteration re-reads the file.

    ``info`` is the file's :class:`AudioInfo` (``frames`` 0 when the header
    has no length); :meth:`expected_samples` the output length it implies.
    """

    def __init__(self, path, sr: float = 22050, block_seconds: float = _DEFAULT_BLOCK_SECONDS,
                 *, offset: float = 0.0, duration: float | None = None, mono: bool = True,
                 max_duration: float | None = None):
        self.sr = _check_rate(sr, "sr")
        self.block_seconds = _seconds(block_seconds, "block_seconds")
        if self.block_seconds == 0:
            raise ConfigError("block_seconds must be > 0")
        self.offset = _seconds(offset, "offset")
        self.duration = _seconds(duration, "duration", optional=True)
        self.max_duration = _seconds(max_duration, "max_duration", optional=True)
        self.path = Path(path)
        self.mono = mono
        self.peak: float = 0.0
        self.n_samples: int = 0
        source = _open_source(path)
        self.info = AudioInfo(
            (source.frames or 0) / source.samplerate, source.samplerate, source.channels,
            source.frames or 0, source.format)
        self._header_frames = source.frames
        self._source = source  # used by the first iteration, then closed
        expected = self.expected_seconds()
        # the header is trusted only when clearly over (headers can be slightly off)
        if self.max_duration is not None and expected is not None \
                and expected > self.max_duration + 1.0:
            self.close()
            raise AudioTooLongError(
                f"audio lasts {expected:.1f} s, more than the allowed "
                f"{self.max_duration:g} s", self.path)

    def expected_seconds(self) -> float | None:
        """Length of the requested span according to the header (None if unknown)."""
        if self._header_frames is None:
            return self.duration
        total = max(0.0, self._header_frames / self.info.samplerate - self.offset)
        return total if self.duration is None else min(total, self.duration)

    def expected_samples(self) -> int | None:
        """Number of output samples according to the header (None if unknown)."""
        seconds = self.expected_seconds()
        return None if seconds is None else int(math.ceil(seconds * self.sr))

    def close(self) -> None:
        """Releases the file if it was opened but never iterated."""
        if self._source is not None:
            self._source.close()
            self._source = None

    def __iter__(self) -> Iterator[np.ndarray]:
        source, self._source = self._source, None
        if source is None:
            source = _open_source(self.path)
        try:
            yield from self._blocks(source)
        finally:
            source.close()

    def _blocks(self, source) -> Iterator[np.ndarray]:
        rate = source.samplerate
        start = int(round(self.offset * rate))
        stop = None if self.duration is None else start + int(round(self.duration * rate))
        block_frames = max(1, int(round(self.block_seconds * rate)))
        resample = _Resampler(rate, self.sr, source.channels, self.mono)
        self.peak, self.n_samples = 0.0, 0
        n_in = 0
        for block in source.blocks(start, stop, block_frames):
            bad = _first_nonfinite(block)
            if bad is not None:
                raise NonFiniteAudioError(
                    f"NaN or infinite sample at {self.offset + (n_in + bad) / rate:.3f} s",
                    self.path)
            n_in += len(block)
            if self.max_duration is not None and n_in / rate > self.max_duration:
                raise AudioTooLongError(
                    f"audio lasts more than the allowed {self.max_duration:g} s", self.path)
            out = resample(block)
            if len(out):
                yield self._account(out)
        self._check_complete(source, start, stop, n_in)
        if n_in == 0:
            where = ""
            if self.offset or self.duration is not None:
                span = "end" if self.duration is None else f"{self.offset + self.duration:g} s"
                where = f" between offset {self.offset:g} s and {span}"
            raise EmptyAudioError(f"no audio samples{where}", self.path)
        out = resample.flush()
        if len(out):
            yield self._account(out)
        if self.peak == 0.0:
            raise SilentAudioError("every sample is zero (silent audio)", self.path)

    def _check_complete(self, source, start: int, stop: int | None, n_in: int) -> None:
        """Raises :class:`TruncatedAudioError` when decoding of [start, stop) ended
        early because the file stops before the end its header announces."""
        end = start + n_in
        if stop is not None and end >= stop:
            return  # the requested span was decoded in full
        rate = source.samplerate
        header = source.header_frames
        if header and _is_short(end, header, rate):
            raise TruncatedAudioError(
                f"truncated: decoded {end / rate:.1f} of {header / rate:.1f} s", self.path)
        if source.open_end:
            raise TruncatedAudioError(
                f"truncated: decoded {end / rate:.1f} s, and the Ogg stream stops without its "
                f"end-of-stream page", self.path)

    def _account(self, out: np.ndarray) -> np.ndarray:
        self.peak = max(self.peak, float(np.max(np.abs(out))))
        self.n_samples += len(out)
        return out


#: Files longer than this (s, by their header) are analysed without ever being held whole
#: (key and beats alike; :func:`is_long`).
STREAM_MIN_SECONDS = 1200.0


def is_long(path, offset: float = 0.0, duration: float | None = None) -> bool:
    """Whether the requested span of ``path`` is longer than :data:`STREAM_MIN_SECONDS` by its
    header, so that it is to be streamed rather than decoded whole."""
    return header_seconds(path, offset, duration) > STREAM_MIN_SECONDS


def header_seconds(path, offset: float = 0.0, duration: float | None = None) -> float:
    """Length (s) of the requested span of a file by its header, without decoding; 0 when
    the header does not say."""
    blocks = iter_audio_blocks(path, offset=offset, duration=duration)
    blocks.close()
    return blocks.expected_seconds() or 0.0


def iter_audio_blocks(path, sr: float = 22050, block_seconds: float = _DEFAULT_BLOCK_SECONDS,
                      *, offset: float = 0.0, duration: float | None = None,
                      mono: bool = True, max_duration: float | None = None) -> AudioBlocks:
    """Streams ``path`` as float32 blocks at ``sr`` Hz; see :class:`AudioBlocks`.

    Memory stays bounded by a few blocks whatever the file's length. Example::

        blocks = iter_audio_blocks("long.flac", 22050)
        for block in blocks:      # (m,) float32, not normalised
            ...
        blocks.peak               # peak |x| over the whole file
    """
    return AudioBlocks(path, sr, block_seconds, offset=offset, duration=duration, mono=mono,
                       max_duration=max_duration)


@dataclass
class AudioScan:
    """What one streaming pass over a file found (see :func:`scan_audio`).

    ``n_samples`` at the scan's rate; ``peak``: peak absolute value (before
    normalisation); ``mean``: mean of the peak-normalised samples (float64 sum
    of the raw samples divided by ``peak``); ``excerpts``: the requested sample
    ranges, float32, peak-normalised, equal to slices of :func:`load_audio`'s result.
    """

    n_samples: int
    peak: float
    mean: float
    excerpts: list[np.ndarray]


def scan_audio(path, sr: float = 22050, spans=None, *, offset: float = 0.0,
               duration: float | None = None, max_duration: float | None = None,
               block_seconds: float = _LOAD_BLOCK_SECONDS) -> AudioScan:
    """Length, peak, mean and excerpts of a file in one streaming pass (bounded memory).

    ``spans(n_samples) -> [(start, stop), ...]`` (sample ranges at ``sr``, within
    ``[0, n_samples)``) says which excerpts to keep, given the length; the length
    announced by the header is used to plan them while decoding, and the file is
    read a second time only when the decoded length differs. Errors as
    :func:`load_audio`.
    """
    def one_pass(planned: int | None) -> tuple[AudioBlocks, float, list[np.ndarray] | None]:
        blocks = AudioBlocks(path, sr, block_seconds, offset=offset, duration=duration,
                             max_duration=max_duration)
        if planned is None:
            planned = blocks.expected_samples()
        wanted = None if spans is None or planned is None else list(spans(planned))
        pieces = None if wanted is None else [[] for _ in wanted]
        total, position = 0.0, 0
        for block in blocks:
            total += float(np.sum(block, dtype=np.float64))
            end = position + len(block)
            for i, (a, b) in enumerate(wanted or ()):
                if a < end and b > position:
                    pieces[i].append(block[max(a, position) - position:min(b, end) - position].copy())
            position = end
        if wanted is not None and blocks.n_samples != planned:
            pieces = None   # planned for the wrong length
        excerpts = None if pieces is None else [
            np.concatenate(p) if p else np.zeros(0, np.float32) for p in pieces]
        return blocks, total, excerpts

    blocks, total, excerpts = one_pass(None)
    if spans is not None and excerpts is None:
        blocks, total, excerpts = one_pass(blocks.n_samples)
    peak = np.float32(blocks.peak)
    return AudioScan(blocks.n_samples, float(peak), total / float(peak) / max(1, blocks.n_samples),
                     [e / peak for e in (excerpts or [])])


# ----------------------------------------------------------------------------
# whole files and arrays
# ----------------------------------------------------------------------------
def check_min_duration(n: int, sr: float, min_duration: float | None, path) -> None:
    if min_duration is not None and n / sr < min_duration:
        raise AudioTooShortError(
            f"audio lasts {n / sr:.3f} s, shorter than the required minimum of "
            f"{min_duration:g} s", path, duration=n / sr, minimum=float(min_duration))


def load_audio(path, sr: float = 22050, *, offset: float = 0.0, duration: float | None = None,
               normalize: bool = True, mono: bool = True, min_duration: float | None = None,
               max_duration: float | None = None) -> np.ndarray:
    """Decodes ``path`` -> float32 ``(n,)`` at ``sr`` Hz (``(n, channels)`` if not ``mono``).

    Mono is the mean of all channels (after resampling each with libsoxr HQ);
    ``normalize`` divides by the peak absolute value. ``offset`` and
    ``duration`` (seconds, in the file's time) select a span. ``min_duration``
    / ``max_duration`` (seconds of the returned audio) raise
    :class:`AudioTooShortError` / :class:`AudioTooLongError`.

    Raises :class:`AudioFileNotFoundError`, :class:`AudioDecodeError`,
    :class:`EmptyAudioError`, :class:`SilentAudioError`,
    :class:`NonFiniteAudioError` for bad files (all with ``.path``).
    """
    blocks = AudioBlocks(path, sr, _LOAD_BLOCK_SECONDS, offset=offset, duration=duration,
                         mono=mono, max_duration=max_duration)
    # Write blocks into one buffer sized from the header: np.empty only reserves
    # address space, pages are committed when written, so a generous size is free.
    expected = blocks.expected_samples()
    buffer = None if expected is None else np.empty(
        (expected + int(blocks.sr) + 16,) if mono else
        (expected + int(blocks.sr) + 16, blocks.info.channels), np.float32)
    filled = 0
    overflow: list[np.ndarray] = []
    for block in blocks:
        if buffer is not None and not overflow and filled + len(block) <= len(buffer):
            buffer[filled:filled + len(block)] = block
            filled += len(block)
        else:
            overflow.append(block)
    if buffer is None:
        audio = np.concatenate(overflow)
    elif overflow:
        audio = np.concatenate([buffer[:filled], *overflow])
    else:
        audio = buffer[:filled]
    check_min_duration(len(audio), blocks.sr, min_duration, blocks.path)
    if normalize:
        audio /= np.float32(blocks.peak)
    return audio


def _as_frames_by_channels(samples, path) -> np.ndarray:
    """Array-like -> float32 (n, channels); see :func:`prepare_audio` for layouts."""
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    elif x.ndim == 2:
        if x.shape[1] > MAX_CHANNELS and x.shape[0] <= MAX_CHANNELS:
            x = x.T  # (channels, n) layout
        elif x.shape[1] > MAX_CHANNELS:
            raise AudioError(
                f"cannot tell channels from samples in an array of shape {x.shape}: "
                f"expected (n,), (n, channels) or (channels, n) with channels <= "
                f"{MAX_CHANNELS}", path)
    else:
        raise AudioError(f"audio must be 1-D or 2-D, got shape {x.shape}", path)
    if x.dtype == np.uint8:
        x = (x.astype(np.float32) - 128.0) / 128.0
    elif x.dtype in _INT_SCALE:
        x = (x / _INT_SCALE[x.dtype]).astype(np.float32)
    elif x.dtype.kind == "f":
        x = x.astype(np.float32, copy=False)
    elif x.dtype == np.bool_ or x.dtype.kind not in "iu":
        raise AudioError(f"audio samples must be numbers, got dtype {x.dtype}", path)
    else:
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def prepare_audio(samples, sr_in: float, sr_out: float = 22050, *, normalize: bool = True,
                  path=None, mono: bool = True, min_duration: float | None = None,
                  max_duration: float | None = None) -> np.ndarray:
    """In-memory audio -> float32 ``(n,)`` at ``sr_out`` Hz, exactly as :func:`load_audio`.

    ``samples`` layouts: ``(n,)`` mono; ``(n, channels)`` (soundfile's layout)
    when ``channels <= 16``; ``(channels, n)`` (librosa/torch layout) is
    accepted only when unambiguous, i.e. ``channels <= 16 < n``. Integer arrays
    are scaled to [-1, 1) (int16 by 2**15, int32 by 2**31, uint8 offset by 128).
    ``path`` (optional) is only used in error messages. Raises the same errors
    as :func:`load_audio`.
    """
    sr_in = _check_rate(sr_in, "sr_in")
    sr_out = _check_rate(sr_out, "sr_out")
    x = _as_frames_by_channels(samples, path)
    if len(x) == 0 or x.shape[1] == 0:
        raise EmptyAudioError("no audio samples", path)
    bad = _first_nonfinite(x)
    if bad is not None:
        raise NonFiniteAudioError(f"NaN or infinite sample at {bad / sr_in:.3f} s", path)
    if max_duration is not None and len(x) / sr_in > max_duration:
        raise AudioTooLongError(
            f"audio lasts {len(x) / sr_in:.1f} s, more than the allowed {max_duration:g} s", path)
    audio = _Resampler(sr_in, sr_out, x.shape[1], mono)(x, last=True)
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        raise SilentAudioError("every sample is zero (silent audio)", path)
    check_min_duration(len(audio), sr_out, min_duration, path)
    if normalize:
        audio = audio / np.float32(peak)
    return np.ascontiguousarray(audio, dtype=np.float32)


def audio_info(path) -> AudioInfo:
    """Header information of ``path`` without decoding (FFmpeg files lacking a
    duration in their header are decoded once to count). Raises
    :class:`AudioFileNotFoundError`, :class:`AudioDecodeError`,
    :class:`EmptyAudioError` (0-byte file)."""
    source = _open_source(path)
    try:
        return source.info()
    finally:
        source.close()


