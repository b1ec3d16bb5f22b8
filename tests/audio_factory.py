"""Write synthetic audio test files of every format into a directory.

Import from tests as ``from audio_factory import ...`` (``tests/`` is on
``sys.path`` under pytest). Every writer takes the target directory first and
returns the :class:`~pathlib.Path` it wrote; nothing is downloaded.

Content: :func:`harmonic_tone`, a steady tone at ``freq_hz`` (default
:data:`TONE_HZ`) with a few harmonics, so a test can check that the dominant
frequency survives decoding and resampling (:func:`dominant_frequency`).

Main entry points::

    write_audio(tmp_path, "x.flac", sr=44100, channels=2)   # any format below
    write_samples(tmp_path, "x.wav", samples, sr, subtype="FLOAT")
    write_nonfinite_wav(tmp_path)   write_empty_wav(tmp_path)
    write_silent_wav(tmp_path)      write_random_bytes(tmp_path)
    write_text_as_mp3(tmp_path)     write_zero_byte_file(tmp_path)
    make_all(tmp_path) -> dict[str, Path]   # one file per case, see CASES

Formats by extension: libsndfile writes ``.wav .flac .ogg`` (vorbis)
``.opus`` (48 kHz etc. only) ``.mp3 .aiff``; PyAV/FFmpeg writes ``.m4a``
(aac) ``.mp4`` (aac, optionally with a video stream first) ``.mkv`` (aac)
``.webm`` (opus) ``.wma`` (wmav2) ``.aac`` (raw ADTS) ``.ac3`` ``.wv``
(WavPack) and ``.mp3`` when ``encoder="pyav"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

TONE_HZ = 440.0

# extension -> (libsndfile format, default subtype)
_SOUNDFILE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".opus": ("OGG", "OPUS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".aiff": ("AIFF", "PCM_16"),
}

# extension -> (FFmpeg container format, audio codec)
_PYAV_FORMATS = {
    ".m4a": ("ipod", "aac"),
    ".mp4": ("mp4", "aac"),
    ".mkv": ("matroska", "aac"),
    ".webm": ("webm", "libopus"),
    ".wma": ("asf", "wmav2"),
    ".mp3": ("mp3", "libmp3lame"),
    ".aac": ("adts", "aac"),
    ".ac3": ("ac3", "ac3"),
    ".wv": ("wv", "wavpack"),
}

_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1",
            8: "7.1"}


def harmonic_tone(duration_s: float = 1.0, sr: int = 44100, channels: int = 1,
                  freq_hz: float = TONE_HZ, amplitude: float = 0.5) -> np.ndarray:
    """Steady tone, float32 ``(n, channels)``, fundamental at ``freq_hz`` Hz.

    Harmonics 1..4 with amplitudes 1/h (those below Nyquist); channel ``c``
    is scaled by ``(c + 1) / channels`` so that channels differ; peak of
    channel ``channels - 1`` is close to ``amplitude``. Short fades at both
    ends avoid clicks.
    """
    n = int(round(duration_s * sr))
    t = np.arange(n) / sr
    x = np.zeros(n)
    for h in range(1, 5):
        if h * freq_hz < sr / 2:
            x += np.sin(2 * np.pi * h * freq_hz * t) / h
    x *= amplitude / max(np.max(np.abs(x)), 1e-12) if n else 1.0
    fade = min(n // 2, int(0.01 * sr))
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        x[:fade] *= ramp
        x[n - fade:] *= ramp[::-1]
    gains = (np.arange(channels) + 1) / channels
    return (x[:, None] * gains[None, :]).astype(np.float32)


def dominant_frequency(samples: np.ndarray, sr: float) -> float:
    """Frequency (Hz) of the largest magnitude-spectrum peak of mono ``(n,)`` samples."""
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * sr / len(x))


def write_samples(directory, name: str, samples: np.ndarray, sr: int,
                  subtype: str | None = None) -> Path:
    """Writes float ``(n,)``/``(n, channels)`` samples with libsndfile (format from
    the extension of ``name``; ``subtype`` e.g. ``"PCM_16"``, ``"PCM_24"``,
    ``"PCM_32"``, ``"FLOAT"``, ``"DOUBLE"``)."""
    path = Path(directory) / name
    fmt, default_subtype = _SOUNDFILE_FORMATS[path.suffix.lower()]
    samples = np.asarray(samples)
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    with soundfile.SoundFile(str(path), "w", sr, channels, subtype or default_subtype,
                             format=fmt) as f:
        # small writes: libsndfile 1.2.2's Vorbis encoder crashes on very large ones
        for i in range(0, len(samples), 8192):
            f.write(samples[i:i + 8192])
    return path


def write_with_pyav(directory, name: str, samples: np.ndarray, sr: int, *,
                    video: bool = False, codec: str | None = None) -> Path:
    """Encodes float ``(n, channels)`` samples with FFmpeg (PyAV); container and
    codec from the extension of ``name`` (see module docstring). ``video=True``
    adds a small video stream BEFORE the audio stream (a "video file")."""
    import av

    path = Path(directory) / name
    fmt, default_codec = _PYAV_FORMATS[path.suffix.lower()]
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 1:
        samples = samples[:, None]
    channels = samples.shape[1]
    with av.open(str(path), "w", format=fmt) as out:
        if video:
            vstream = out.add_stream("mpeg4", rate=10)
            vstream.width, vstream.height, vstream.pix_fmt = 64, 48, "yuv420p"
        astream = out.add_stream(codec or default_codec, rate=sr, layout=_LAYOUTS[channels])
        astream.bit_rate = 64000 * channels
        if video:
            n_video = max(1, int(len(samples) / sr * 10))
            for i in range(n_video):
                img = np.full((48, 64, 3), (i * 20) % 255, np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                out.mux(vstream.encode(frame))
            out.mux(vstream.encode(None))
        step = 1024
        for i in range(0, len(samples), step):
            chunk = np.ascontiguousarray(samples[i:i + step].T)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=_LAYOUTS[channels])
            frame.sample_rate = sr
            frame.pts = i
            out.mux(astream.encode(frame))
        out.mux(astream.encode(None))
    return path


def write_audio(directory, name: str, *, sr: int = 44100, channels: int = 1,
                duration_s: float = 1.0, freq_hz: float = TONE_HZ, subtype: str | None = None,
                encoder: str = "auto", video: bool = False) -> Path:
    """Writes a :func:`harmonic_tone` file; format from the extension of ``name``.

    ``encoder``: ``"auto"`` (libsndfile when it can write the extension, else
    PyAV), ``"soundfile"`` or ``"pyav"``.
    """
    samples = harmonic_tone(duration_s, sr, channels, freq_hz)
    ext = Path(name).suffix.lower()
    use_pyav = encoder == "pyav" or video or (encoder == "auto" and ext not in _SOUNDFILE_FORMATS)
    if use_pyav:
        return write_with_pyav(directory, name, samples, sr, video=video)
    return write_samples(directory, name, samples, sr, subtype)


def write_nonfinite_wav(directory, name: str = "nan.wav", value: float = float("nan"),
                        sr: int = 22050, at_s: float = 0.5) -> Path:
    """Float32 WAV tone (1 s) with one ``value`` sample (NaN by default) at ``at_s``."""
    x = harmonic_tone(1.0, sr)
    x[int(at_s * sr), 0] = value
    return write_samples(directory, name, x, sr, "FLOAT")


def write_empty_wav(directory, name: str = "empty.wav", sr: int = 22050) -> Path:
    """A valid WAV header with 0 frames."""
    return write_samples(directory, name, np.zeros((0, 1), np.float32), sr)


def write_silent_wav(directory, name: str = "silent.wav", sr: int = 22050,
                     duration_s: float = 1.0, channels: int = 1) -> Path:
    """A WAV of exact zeros."""
    return write_samples(directory, name, np.zeros((int(sr * duration_s), channels)), sr)


def write_random_bytes(directory, name: str = "corrupt.wav", n_bytes: int = 4096,
                       seed: int = 0) -> Path:
    """Random bytes under an audio extension (not decodable)."""
    path = Path(directory) / name
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, np.uint8).tobytes())
    return path


def write_text_as_mp3(directory, name: str = "notes.mp3") -> Path:
    """A plain text file renamed ``.mp3``."""
    path = Path(directory) / name
    path.write_text("This is not audio.\nJust some text saved with the wrong extension.\n" * 20)
    return path


def write_zero_byte_file(directory, name: str = "zero.wav") -> Path:
    """A file of 0 bytes."""
    path = Path(directory) / name
    path.write_bytes(b"")
    return path


#: case name -> keyword arguments of :func:`write_audio` (all decodable tones)
CASES: dict[str, dict] = {
    "wav_int16": dict(name="int16.wav", subtype="PCM_16"),
    "wav_int24": dict(name="int24.wav", subtype="PCM_24"),
    "wav_int32": dict(name="int32.wav", subtype="PCM_32"),
    "wav_float32": dict(name="float32.wav", subtype="FLOAT"),
    "wav_float64": dict(name="float64.wav", subtype="DOUBLE"),
    "flac": dict(name="tone.flac", channels=2),
    "ogg": dict(name="tone.ogg", channels=2),
    "opus": dict(name="tone.opus", sr=48000, channels=2),
    "mp3": dict(name="tone.mp3", channels=2),
    "mp3_pyav": dict(name="tone_pyav.mp3", channels=2, encoder="pyav"),
    "aiff": dict(name="tone.aiff"),
    "m4a": dict(name="tone.m4a", channels=2),
    "mkv": dict(name="tone.mkv", channels=2),
    "webm": dict(name="tone.webm", sr=48000, channels=2),
    "wma": dict(name="tone.wma", channels=2),
    "aac_adts": dict(name="tone.aac", channels=2),
    "ac3": dict(name="tone.ac3", sr=48000, channels=2),
    "wavpack": dict(name="tone.wv", channels=2),
    "mp4_video": dict(name="video.mp4", channels=2, video=True),
    "wav_6ch": dict(name="six.wav", channels=6),
    "wav_8ch": dict(name="eight.wav", channels=8),
    "wav_8k": dict(name="rate8k.wav", sr=8000),
    "wav_192k": dict(name="rate192k.wav", sr=192000),
    "wav_short": dict(name="short.wav", duration_s=0.5),
}

#: case name -> writer of a bad file
BAD_CASES = {
    "nan_wav": write_nonfinite_wav,
    "inf_wav": lambda d: write_nonfinite_wav(d, "inf.wav", float("inf")),
    "empty_wav": write_empty_wav,
    "silent_wav": write_silent_wav,
    "corrupt": write_random_bytes,
    "text_mp3": write_text_as_mp3,
    "zero_byte": write_zero_byte_file,
}


def make_all(directory) -> dict[str, Path]:
    """Writes every case of :data:`CASES` and :data:`BAD_CASES`; name -> path."""
    directory = Path(directory)
    out = {case: write_audio(directory, **kw) for case, kw in CASES.items()}
    out.update({case: writer(directory) for case, writer in BAD_CASES.items()})
    return out
