"""musicssl.io.audio: formats, channels, rates, streaming, bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from audio_factory import (
    BAD_CASES,
    CASES,
    TONE_HZ,
    dominant_frequency,
    harmonic_tone,
    make_all,
    write_audio,
    write_samples,
    write_with_pyav,
)

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
from musicssl.io.files import AUDIO_EXTENSIONS, find_audio_files
from musicssl.io.audio import audio_info, AudioInfo, iter_audio_blocks, load_audio, prepare_audio

SR = 22050
LOSSY = {"ogg", "opus", "mp3", "mp3_pyav", "m4a", "mkv", "webm", "wma", "mp4_video", "aac_adts",
         "ac3"}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_all(tmp_path_factory.mktemp("audio"))


# --- every format, channel count and rate -------------------------------------
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_format_decodes_to_normalised_mono_tone(files, case):
    spec = CASES[case]
    y = load_audio(files[case], SR)
    assert y.dtype == np.float32 and y.ndim == 1
    expected = spec.get("duration_s", 1.0) * SR
    # lossy codecs may add encoder padding (tens of ms)
    tolerance = 0.06 * SR if case in LOSSY else 1
    assert abs(len(y) - expected) <= tolerance
    assert np.max(np.abs(y)) == pytest.approx(1.0, abs=1e-6)
    assert dominant_frequency(y, SR) == pytest.approx(TONE_HZ, abs=3.0)


@pytest.mark.parametrize("case", sorted(CASES))
def test_audio_info_reads_header(files, case):
    spec = CASES[case]
    info = audio_info(files[case])
    assert isinstance(info, AudioInfo)
    assert info.samplerate == spec.get("sr", 44100)
    assert info.channels == spec.get("channels", 1)
    assert info.duration_s == pytest.approx(spec.get("duration_s", 1.0), abs=0.06)
    assert info.frames == pytest.approx(info.duration_s * info.samplerate, abs=1)
    assert "/" in info.format


def test_beat_rate_16k(files):
    y = load_audio(files["flac"], 16000)
    assert len(y) == 16000
    assert dominant_frequency(y, 16000) == pytest.approx(TONE_HZ, abs=3.0)


def test_video_container_uses_first_audio_stream(files):
    import av

    with av.open(str(files["mp4_video"])) as c:
        assert c.streams[0].type == "video"  # the audio stream is not the first stream
    assert audio_info(files["mp4_video"]).channels == 2


def test_mono_is_mean_of_channels(tmp_path):
    x = harmonic_tone(0.5, 44100)[:, 0]
    six = np.zeros((len(x), 6), np.float32)
    six[:, 5] = x
    path = write_samples(tmp_path, "six.wav", six, 44100, "FLOAT")
    y = load_audio(path, 44100, normalize=False)
    np.testing.assert_allclose(y, x / 6, atol=1e-7)
    # opposite channels cancel: the mean (not the first channel) is used
    path = write_samples(tmp_path, "cancel.wav", np.stack([x, -x], axis=1), 44100, "FLOAT")
    with pytest.raises(SilentAudioError):
        load_audio(path, 44100)


def test_mono_false_keeps_channels(files):
    y = load_audio(files["wav_8ch"], SR, mono=False)
    assert y.shape == (SR, 8) and y.dtype == np.float32
    assert np.max(np.abs(y)) == pytest.approx(1.0)
    # channel c was written with gain (c + 1) / 8
    peaks = np.max(np.abs(y), axis=0)
    np.testing.assert_allclose(peaks / peaks[-1], (np.arange(8) + 1) / 8, rtol=2e-3)


def test_resampling_is_not_needed_at_native_rate(tmp_path):
    x = harmonic_tone(0.5, 16000)
    path = write_samples(tmp_path, "f.wav", x, 16000, "FLOAT")
    np.testing.assert_array_equal(load_audio(path, 16000, normalize=False), x[:, 0])


# --- the released S-KEY reference waveform -------------------------------------
def test_matches_skey_reference_waveform(shared_fixtures):
    ref = np.load(shared_fixtures / "skey_reference" / "nocturne_n02_in_e-flat_major.wav22050.npy")
    mp3 = shared_fixtures / "nocturne_n02_in_e-flat_major.mp3"
    y = load_audio(mp3, 22050)
    assert y.shape == ref.shape
    assert np.max(np.abs(y - ref)) <= 1e-6  # measured: 0.0 (bit-identical)
    blocks = iter_audio_blocks(mp3, 22050, block_seconds=7)
    streamed = np.concatenate(list(blocks)) / np.float32(blocks.peak)
    assert np.max(np.abs(streamed - ref)) <= 1e-6


# --- bad input -------------------------------------------------------------------
@pytest.mark.parametrize("case, error", [
    ("nan_wav", NonFiniteAudioError),
    ("inf_wav", NonFiniteAudioError),
    ("empty_wav", EmptyAudioError),
    ("silent_wav", SilentAudioError),
    ("corrupt", AudioDecodeError),
    ("text_mp3", AudioDecodeError),
    ("zero_byte", EmptyAudioError),
])
def test_bad_files_raise_typed_errors_with_path(files, case, error):
    assert case in BAD_CASES
    with pytest.raises(error) as info:
        load_audio(files[case])
    assert info.value.path == str(files[case])
    assert str(files[case]) in str(info.value)


def test_nonfinite_error_says_where(files):
    with pytest.raises(NonFiniteAudioError, match=r"0\.500 s"):
        load_audio(files["nan_wav"])


def test_decode_error_reports_both_decoders(files):
    with pytest.raises(AudioDecodeError, match="soundfile.*PyAV") as info:
        load_audio(files["text_mp3"])
    assert str(info.value).count(str(files["text_mp3"])) == 1


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(AudioFileNotFoundError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    with pytest.raises(FileNotFoundError):  # also a builtin FileNotFoundError
        audio_info(tmp_path / "nope.wav")
    with pytest.raises(AudioFileNotFoundError, match="directory"):
        load_audio(tmp_path)


def test_too_short_states_minimum_and_duration(files):
    with pytest.raises(AudioTooShortError) as info:
        load_audio(files["wav_short"], min_duration=2.0)
    assert "0.500 s" in str(info.value) and "2 s" in str(info.value)
    assert info.value.duration == pytest.approx(0.5)
    assert info.value.minimum == 2.0
    assert len(load_audio(files["wav_short"], min_duration=0.4)) == SR // 2


def test_too_long(files):
    with pytest.raises(AudioTooLongError, match="0.2 s"):
        load_audio(files["flac"], max_duration=0.2)
    # within 1 s of the limit the header is not trusted: caught while decoding
    with pytest.raises(AudioTooLongError):
        load_audio(files["flac"], max_duration=0.9)
    assert len(load_audio(files["flac"], max_duration=1.0)) == SR


def test_bad_arguments(files):
    with pytest.raises(ConfigError):
        load_audio(files["flac"], sr=0)
    with pytest.raises(ConfigError):
        load_audio(files["flac"], offset=-1.0)
    with pytest.raises(ConfigError):
        load_audio(files["flac"], duration=-1.0)
    with pytest.raises(ConfigError):
        load_audio(files["flac"], offset="soon")
    with pytest.raises(ConfigError):
        iter_audio_blocks(files["flac"], SR, block_seconds=0)
    # numpy scalars are fine; a zero-length span is empty audio, not a usage error
    assert len(load_audio(files["flac"], SR, offset=np.float32(0.5), duration=np.int64(1))) \
        == SR // 2
    with pytest.raises(EmptyAudioError, match="between offset 0.2 s and 0.2 s"):
        load_audio(files["flac"], offset=0.2, duration=0.0)


# --- offset and duration ----------------------------------------------------------
@pytest.mark.parametrize("case", ["flac", "m4a", "mp3"])
def test_offset_duration_select_exact_span_at_native_rate(files, case):
    full = load_audio(files[case], 44100, normalize=False)
    part = load_audio(files[case], 44100, offset=0.25, duration=0.5, normalize=False)
    start = int(0.25 * 44100)
    np.testing.assert_allclose(part, full[start:start + len(part)], atol=1e-6)
    assert len(part) == 22050


def test_offset_with_resampling(files):
    part = load_audio(files["flac"], SR, offset=0.5, duration=0.25)
    assert len(part) == pytest.approx(0.25 * SR, abs=1)
    full = load_audio(files["flac"], SR, normalize=False)
    part = load_audio(files["flac"], SR, offset=0.5, normalize=False)
    # away from the cut, resampling a span equals resampling the whole
    np.testing.assert_allclose(part[500:-500], full[SR // 2 + 500:-500], atol=1e-4)


def test_offset_past_end_is_empty(files):
    with pytest.raises(EmptyAudioError, match="offset"):
        load_audio(files["flac"], offset=5.0)
    with pytest.raises(EmptyAudioError, match="offset"):
        load_audio(files["m4a"], offset=5.0)


# --- streaming ---------------------------------------------------------------------
@pytest.mark.parametrize("case", ["flac", "m4a", "wav_8k", "wav_6ch"])
def test_streaming_equals_full_load(files, case):
    full = load_audio(files[case], SR)
    blocks = iter_audio_blocks(files[case], SR, block_seconds=0.1)
    parts = list(blocks)
    assert len(parts) > 5
    streamed = np.concatenate(parts)
    assert blocks.n_samples == len(full)
    np.testing.assert_array_equal(streamed / np.float32(blocks.peak), full)
    # a second iteration reads the file again and gives the same blocks
    again = np.concatenate(list(blocks))
    np.testing.assert_array_equal(again, streamed)


def test_streaming_reports_bad_content(files):
    with pytest.raises(NonFiniteAudioError):
        list(iter_audio_blocks(files["nan_wav"], SR, block_seconds=0.1))
    with pytest.raises(SilentAudioError):
        list(iter_audio_blocks(files["silent_wav"], SR, block_seconds=0.1))
    with pytest.raises(AudioDecodeError):
        iter_audio_blocks(files["corrupt"], SR)


# --- arrays in memory ------------------------------------------------------------------
def test_prepare_audio_matches_load_audio(tmp_path):
    x = harmonic_tone(0.7, 44100, channels=2)
    path = write_samples(tmp_path, "s.wav", x, 44100, "FLOAT")
    from_file = load_audio(path, SR)
    np.testing.assert_array_equal(prepare_audio(x, 44100, SR), from_file)
    np.testing.assert_array_equal(prepare_audio(x.T, 44100, SR), from_file)  # (channels, n)
    mono = x.mean(axis=1)
    np.testing.assert_allclose(prepare_audio(mono, 44100, SR), from_file, atol=1e-5)


def test_prepare_audio_integer_and_layouts():
    x = (harmonic_tone(0.2, SR)[:, 0] * 32767).astype(np.int16)
    y = prepare_audio(x, SR, SR, normalize=False)
    np.testing.assert_allclose(y, x / 32768.0, atol=1e-7)
    y2 = prepare_audio(x[:, None], SR, SR, normalize=False)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(AudioError, match="channels"):
        prepare_audio(np.ones((40, 40)), SR)
    with pytest.raises(AudioError, match="1-D or 2-D"):
        prepare_audio(np.ones((2, 2, 100)), SR)
    with pytest.raises(AudioError, match="numbers"):
        prepare_audio(np.array(["a", "b"]), SR)


def test_prepare_audio_bad_content():
    with pytest.raises(EmptyAudioError):
        prepare_audio(np.zeros(0), SR)
    with pytest.raises(SilentAudioError):
        prepare_audio(np.zeros(1000), SR)
    with pytest.raises(NonFiniteAudioError, match="1.000 s") as info:
        prepare_audio(np.r_[np.ones(SR), np.nan], SR, path="x.wav")
    assert info.value.path == "x.wav"
    with pytest.raises(AudioTooShortError):
        prepare_audio(np.ones(100), SR, min_duration=1.0)
    with pytest.raises(AudioTooLongError):
        prepare_audio(np.ones(2 * SR), SR, max_duration=1.0)


# --- finding files ----------------------------------------------------------------------
def test_find_audio_files(tmp_path):
    for rel in ["a.wav", "b/c.MP3", "b/d/e.flac", "b/notes.txt", ".hidden.wav",
                ".cache/f.wav", "b/video.mkv"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    names = [p.relative_to(tmp_path).as_posix() for p in find_audio_files(tmp_path)]
    assert names == ["a.wav", "b/c.MP3", "b/d/e.flac", "b/video.mkv"]
    assert [p.name for p in find_audio_files(tmp_path, recursive=False)] == ["a.wav"]
    # explicit file (any extension) + folder containing it again: de-duplicated, sorted
    found = find_audio_files([tmp_path / "b" / "notes.txt", tmp_path / "b", tmp_path / "a.wav"])
    assert [p.name for p in found] == ["a.wav", "c.MP3", "e.flac", "notes.txt", "video.mkv"]
    assert [p.name for p in find_audio_files(str(tmp_path / "**" / "*.flac"))] == ["e.flac"]
    assert [p.name for p in find_audio_files(str(tmp_path / "*"))] == [
        "a.wav", "c.MP3", "e.flac", "video.mkv"]
    with pytest.raises(AudioFileNotFoundError, match="no such file"):
        find_audio_files([tmp_path / "a.wav", tmp_path / "missing"])
    with pytest.raises(AudioFileNotFoundError, match="pattern"):
        find_audio_files(str(tmp_path / "*.ogg"))


def test_audio_extensions():
    assert {".wav", ".flac", ".mp3", ".ogg", ".m4a", ".mp4", ".mkv", ".webm"} <= AUDIO_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in AUDIO_EXTENSIONS)


def test_pyav_writer_roundtrip_stereo_content(tmp_path):
    x = harmonic_tone(0.5, 44100, channels=2, freq_hz=330.0)
    path = write_with_pyav(tmp_path, "t.m4a", x, 44100)
    y = load_audio(path, SR)
    assert dominant_frequency(y, SR) == pytest.approx(330.0, abs=3.0)
    assert write_audio(tmp_path, "t2.wav").exists()


def _cut(path: Path, fraction: float = 0.45) -> Path:
    cut = path.with_name("cut" + path.suffix)
    data = path.read_bytes()
    cut.write_bytes(data[: int(len(data) * fraction)])
    return cut


@pytest.mark.parametrize("ext", [".ogg", ".mp3", ".flac", ".wav"])
def test_truncated_files_are_an_error_in_every_format(tmp_path, ext, capfd):
    """One rule: decoding that stops before the header's end (Ogg: before the
    end-of-stream page) raises TruncatedAudioError saying how much decoded;
    the native decoders' own warnings do not reach stderr."""
    whole = write_audio(tmp_path, "whole" + ext, sr=44100, channels=2, duration_s=12.0)
    assert len(load_audio(whole, SR)) == pytest.approx(12 * SR, abs=SR // 10)
    cut = _cut(whole)
    with pytest.raises(TruncatedAudioError, match=r"truncated.*decoded \d+\.\d (s|of)") as caught:
        load_audio(cut, SR)
    assert isinstance(caught.value, AudioDecodeError) and caught.value.path == str(cut)
    if ext != ".ogg":  # Ogg carries no total length, only an end-of-stream mark
        assert "of 12.0 s" in str(caught.value)
    decoded = float(str(caught.value).split("decoded ")[1].split(" ")[0])
    assert 3.0 < decoded < 6.5
    # a span inside what decodes is fine: nothing is missing from it
    assert len(load_audio(cut, SR, offset=1.0, duration=2.0)) == pytest.approx(2 * SR, abs=SR // 50)
    assert audio_info(cut).samplerate == 44100  # the header is still readable
    assert "Xing" not in capfd.readouterr().err


def test_truncated_m4a_is_a_decode_error(tmp_path):
    m4a = write_audio(tmp_path, "t.m4a", duration_s=2.0)
    with pytest.raises(AudioDecodeError):
        load_audio(_cut(m4a, 0.5), SR)


def test_quiet_stderr_keeps_other_native_messages(capfd):
    from musicssl.io.audio import _QuietStderr

    with _QuietStderr():
        os.write(2, b"Warning: Xing stream size off by more than 1%\nsomething else\n")
    assert capfd.readouterr().err == "something else\n"


def test_container_without_audio_stream(tmp_path):
    import av

    path = tmp_path / "silent_video.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(AudioDecodeError, match="no audio stream"):
        load_audio(path)


def test_streaming_span_and_channels(files):
    full = load_audio(files["wav_6ch"], SR, mono=False, offset=0.2, duration=0.5,
                      normalize=False)
    blocks = iter_audio_blocks(files["wav_6ch"], SR, 0.05, offset=0.2, duration=0.5,
                               mono=False)
    streamed = np.concatenate(list(blocks))
    assert streamed.shape == full.shape == (SR // 2, 6)
    np.testing.assert_array_equal(streamed, full)
    assert blocks.info.channels == 6 and blocks.info.samplerate == 44100
    assert blocks.expected_samples() == SR // 2


def test_streaming_too_long(files):
    with pytest.raises(AudioTooLongError):
        list(iter_audio_blocks(files["flac"], SR, 0.1, max_duration=0.5))


@pytest.mark.parametrize("name, subtype", [
    ("a.wav", "PCM_16"), ("b.wav", "PCM_24"), ("c.wav", "PCM_32"), ("d.wav", "PCM_U8"),
    ("e.wav", "FLOAT"), ("f.flac", "PCM_24"),
])
def test_both_decoders_agree_bit_for_bit(tmp_path, name, subtype):
    from musicssl.io.audio import _PyAVSource, _SoundfileSource

    path = write_samples(tmp_path, name, harmonic_tone(0.3, 44100, 3), 44100, subtype)
    via_sf = np.concatenate(list(_SoundfileSource(path).blocks(0, None, 5000)))
    via_av = np.concatenate(list(_PyAVSource(path).blocks(0, None, 5000)))
    assert via_sf.shape == (13230, 3)
    np.testing.assert_array_equal(via_sf, via_av)


@pytest.mark.parametrize("sr_in", [8000, 11025, 32000, 37800, 48000, 88200, 96000, 192000])
@pytest.mark.parametrize("sr_out", [16000, 22050])
def test_odd_rates_keep_length_and_pitch(sr_in, sr_out):
    x = harmonic_tone(0.5, sr_in, channels=2)
    y = prepare_audio(x, sr_in, sr_out)
    assert len(y) == pytest.approx(0.5 * sr_out, abs=1)
    assert dominant_frequency(y, sr_out) == pytest.approx(TONE_HZ, abs=3.0)


def test_mp3_without_a_length_header_is_not_called_truncated(tmp_path):
    """Without a Xing/Info frame the length is a guess from the file size: no verdict either way."""
    whole = write_audio(tmp_path, "whole.mp3", sr=44100, duration_s=12.0)
    data = bytearray(whole.read_bytes())
    for tag in (b"Xing", b"Info"):
        at = data.find(tag)
        if at >= 0:
            data[at:at + 4] = b"Junk"
    plain = tmp_path / "plain.mp3"
    plain.write_bytes(bytes(data[: len(data) // 2]))
    from musicssl.io.audio import _mp3_has_length_header

    assert _mp3_has_length_header(whole) and not _mp3_has_length_header(plain)
    assert len(load_audio(plain, SR)) > SR  # libsndfile decodes up to its own estimate; no error


def test_quiet_stderr_is_safe_across_threads():
    """musicssl serve opens files in worker threads: fd 2 must come back to the real stderr."""
    import os
    import threading

    from musicssl.io.audio import _QuietStderr

    before = os.fstat(2)
    barrier = threading.Barrier(4)

    def work():
        barrier.wait()
        for _ in range(50):
            with _QuietStderr():
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
