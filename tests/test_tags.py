"""Writing the key into tags (musicssl.io.tags) on real files of every supported type.

Each file is made in tmp_path (soundfile for WAV/AIFF/FLAC/Ogg/Opus/MP3,
PyAV for M4A and WMA). After tagging, the audio must decode to exactly the same
samples, and where the container keeps the audio bytes in one place (WAV,
AIFF, FLAC, MP3) those bytes must be unchanged.
"""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest
import soundfile as sf

from musicssl.keys import Key, format_key
from musicssl.io.tags import ASF_KEY_FIELD, key_tag_field, MP4_KEY_FIELD, read_key_tag, TagError, write_key_tag

SR = 22050
E_FLAT_MINOR = Key(3, "minor")


def _tone(seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * 311.13 * t) + 0.1 * np.sin(2 * np.pi * 466.16 * t)).astype(np.float32)


SOUNDFILE_TYPES = {
    "wav": ("WAV", "PCM_16", SR),
    "aiff": ("AIFF", "PCM_16", SR),
    "flac": ("FLAC", "PCM_16", SR),
    "ogg": ("OGG", "VORBIS", SR),
    "opus": ("OGG", "OPUS", 48000),
    "mp3": ("MP3", "MPEG_LAYER_III", SR),
}


def make_file(folder, ext: str):
    path = folder / f"tone.{ext}"
    if ext in ("m4a", "wma"):
        codec, sample_format = ("aac", "flt") if ext == "m4a" else ("wmav2", "fltp")
        with av.open(str(path), "w", format="asf" if ext == "wma" else None) as container:
            stream = container.add_stream(codec, rate=SR)
            stream.layout = "mono"
            stream.format = sample_format
            stream.bit_rate = 64000
            frame = av.AudioFrame.from_ndarray(_tone()[None, :], format=sample_format, layout="mono")
            frame.sample_rate = SR
            for packet in stream.encode(frame):
                container.mux(packet)
            for packet in stream.encode(None):
                container.mux(packet)
    else:
        fmt, subtype, sr = SOUNDFILE_TYPES[ext]
        sf.write(path, _tone(sr=sr), sr, format=fmt, subtype=subtype)
    return path


def decode(path) -> np.ndarray:
    """All decoded samples (PyAV, so every format goes through the same decoder)."""
    with av.open(str(path)) as container:
        chunks = [frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)]
    return np.concatenate(chunks)


# --- where the audio bytes live -----------------------------------------------------

def _iff_chunk(data: bytes, chunk_id: bytes, big_endian: bool, start: int = 12) -> bytes:
    """Payload of the first chunk ``chunk_id`` of a RIFF (WAV) or FORM (AIFF) file."""
    pos = start
    while pos + 8 <= len(data):
        cid = data[pos:pos + 4]
        size = struct.unpack(">I" if big_endian else "<I", data[pos + 4:pos + 8])[0]
        if cid == chunk_id:
            return data[pos + 8:pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise AssertionError(f"no {chunk_id!r} chunk")


def _flac_frames(data: bytes) -> bytes:
    """The bytes after the FLAC metadata blocks (the audio frames)."""
    assert data[:4] == b"fLaC"
    pos = 4
    while True:
        header = data[pos]
        size = int.from_bytes(data[pos + 1:pos + 4], "big")
        pos += 4 + size
        if header & 0x80:
            return data[pos:]


def _mp3_frames(data: bytes) -> bytes:
    """The bytes after a leading ID3v2 tag (the MPEG frames)."""
    if data[:3] == b"ID3":
        size = 0
        for byte in data[6:10]:
            size = (size << 7) | (byte & 0x7F)
        footer = 10 if data[5] & 0x10 else 0
        data = data[10 + size + footer:]
        while data[:1] == b"\x00":  # padding
            data = data[1:]
    return data


AUDIO_BYTES = {
    "wav": lambda d: _iff_chunk(d, b"data", big_endian=False),
    "aiff": lambda d: _iff_chunk(d, b"SSND", big_endian=True),
    "flac": _flac_frames,
    "mp3": _mp3_frames,
}

EXPECTED_FIELD = {"wav": "TKEY", "aiff": "TKEY", "mp3": "TKEY", "flac": "INITIALKEY",
                  "ogg": "INITIALKEY", "opus": "INITIALKEY", "m4a": MP4_KEY_FIELD, "wma": ASF_KEY_FIELD}


@pytest.mark.parametrize("ext", ["wav", "aiff", "mp3", "flac", "ogg", "opus", "m4a", "wma"])
def test_key_tag_is_written_and_audio_untouched(tmp_path, ext):
    path = make_file(tmp_path, ext)
    before_bytes = path.read_bytes()
    before_audio = decode(path)
    assert read_key_tag(path) is None

    done = write_key_tag(path, E_FLAT_MINOR)
    assert done.field == EXPECTED_FIELD[ext] == key_tag_field(path)
    assert done.value == "Ebm" and done.written and done.previous is None
    assert read_key_tag(path) == "Ebm"

    np.testing.assert_array_equal(decode(path), before_audio)
    if ext in AUDIO_BYTES:
        assert AUDIO_BYTES[ext](path.read_bytes()) == AUDIO_BYTES[ext](before_bytes)

    # writing again replaces the value (one field, not two)
    again = write_key_tag(path, Key(6, "major"))
    assert again.previous == "Ebm" and read_key_tag(path) == "F#"
    np.testing.assert_array_equal(decode(path), before_audio)


@pytest.mark.parametrize("ext", ["flac", "m4a", "mp3"])
def test_notation_applies_to_free_text_fields_only(tmp_path, ext):
    path = make_file(tmp_path, ext)
    done = write_key_tag(path, Key(9, "minor"), notation="camelot")
    expected = "Am" if ext == "mp3" else format_key(Key(9, "minor"), "camelot")  # TKEY stays <= 3 chars
    assert done.value == read_key_tag(path) == expected
    assert expected == ("Am" if ext == "mp3" else "8A")


def test_tkey_is_at_most_three_characters_for_every_key(tmp_path):
    path = make_file(tmp_path, "wav")
    for index in range(24):
        done = write_key_tag(path, Key.from_index(index), dry_run=True)
        assert 1 <= len(done.value) <= 3


def test_existing_id3v23_tag_keeps_its_version(tmp_path):
    from mutagen.id3 import ID3, TIT2

    path = make_file(tmp_path, "mp3")
    tags = ID3()
    tags.add(TIT2(encoding=1, text=["title"]))
    tags.save(path, v2_version=3)
    write_key_tag(path, E_FLAT_MINOR)
    reread = ID3(path)
    assert reread.version[:2] == (2, 3)
    assert str(reread["TIT2"]) == "title" and str(reread["TKEY"]) == "Ebm"


@pytest.mark.parametrize("ext", ["mp3", "wav", "aiff"])
def test_id3_version_3_or_4_on_request(tmp_path, ext):
    from mutagen import File

    path = make_file(tmp_path, ext)
    before_audio = decode(path)
    write_key_tag(path, E_FLAT_MINOR, id3_version=3)
    tags = File(path).tags
    assert tags.version[:2] == (2, 3) and str(tags["TKEY"]) == "Ebm"
    if ext == "mp3":
        assert path.read_bytes()[:4] == b"ID3\x03"
    write_key_tag(path, Key(6, "major"), id3_version=4)
    tags = File(path).tags
    assert tags.version[:2] == (2, 4) and str(tags["TKEY"]) == "F#"
    np.testing.assert_array_equal(decode(path), before_audio)


def test_id3_version_is_checked(tmp_path):
    with pytest.raises(TagError, match="ID3 version"):
        write_key_tag(make_file(tmp_path, "mp3"), E_FLAT_MINOR, id3_version=2)


def test_dry_run_changes_nothing(tmp_path):
    path = make_file(tmp_path, "flac")
    before = path.read_bytes()
    done = write_key_tag(path, E_FLAT_MINOR, dry_run=True)
    assert done.value == "Ebm" and not done.written
    assert path.read_bytes() == before


def test_unsupported_and_missing_files_raise_tag_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    with pytest.raises(TagError, match="not a file type"):
        write_key_tag(text, E_FLAT_MINOR)
    with pytest.raises(TagError, match="no such file"):
        write_key_tag(tmp_path / "missing.mp3", E_FLAT_MINOR)
    with pytest.raises(TagError, match="notation"):
        write_key_tag(make_file(tmp_path, "wav"), E_FLAT_MINOR, notation="roman")
