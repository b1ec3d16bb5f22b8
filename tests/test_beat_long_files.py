"""Long files get their onset activation streamed (bounded memory) with the same result."""

import json

import numpy as np
import pytest
import soundfile as sf

from musicssl.beat.onset import onset_envelope, onset_envelope_of_file
from musicssl.cli.main import main
from musicssl.errors import AudioTooShortError
from musicssl.io.audio import load_audio

SR = 22050


@pytest.fixture(scope="module")
def song(tmp_path_factory):
    """70 s of a pulsing tone over noise at 120 BPM, as FLAC at 22.05 kHz."""
    rng = np.random.default_rng(0)
    t = np.arange(int(70.3 * SR)) / SR
    pulse = (np.mod(t, 0.5) < 0.08).astype(np.float64)
    x = 0.4 * np.sin(2 * np.pi * 220 * t) * (0.3 + pulse) + 0.03 * rng.standard_normal(len(t))
    path = tmp_path_factory.mktemp("long") / "song.flac"
    sf.write(path, x.astype(np.float32), SR)
    return path


def test_streamed_envelope_equals_the_whole_file_one(song):
    whole = onset_envelope(load_audio(song, 16000))
    y = load_audio(song, 16000)
    for block_seconds in (7.3, 30.0):       # chunk edges in different places
        streamed = onset_envelope_of_file(song, block_seconds=block_seconds, waveform_rate=1000)
        assert streamed.n_samples == len(y)
        assert streamed.activation.shape == whole.shape
        np.testing.assert_allclose(streamed.activation, whole, atol=1e-5)
        np.testing.assert_allclose(streamed.waveform, y[:len(y) // 16 * 16].reshape(-1, 16).max(axis=1), atol=1e-6)
    with pytest.raises(AudioTooShortError):
        onset_envelope_of_file(song, min_duration=100.0)


def test_streamed_envelope_decodes_the_file_twice(song, monkeypatch):
    import musicssl.io.audio as audio

    opened = []
    real_open = audio._open_source
    monkeypatch.setattr(audio, "_open_source", lambda path: opened.append(path) or real_open(path))
    streamed = onset_envelope_of_file(song, waveform_rate=1000)
    assert len(opened) == 2                  # length, peak and mel maximum; then envelope and waveform
    assert streamed.waveform is not None and len(streamed.waveform) == streamed.n_samples // 16


def test_beats_of_a_streamed_long_file_match(song, capsys, monkeypatch):
    def beats(threshold: float) -> dict:
        monkeypatch.setattr("musicssl.io.audio.STREAM_MIN_SECONDS", threshold)
        assert main(["beats", str(song), "--format", "json"]) == 0
        return json.loads(capsys.readouterr().out)[0]

    whole, streamed = beats(1e9), beats(30.0)
    assert streamed["n_beats"] == whole["n_beats"] > 100
    np.testing.assert_allclose(streamed["beats"], whole["beats"], atol=1e-6)
    assert streamed["tempo_bpm"] == pytest.approx(whole["tempo_bpm"])
