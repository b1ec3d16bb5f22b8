"""Chroma (musicssl.dsp.chroma) and the numpy stand-ins that keep scipy.signal and librosa
out of the key front end: each is checked against the library it replaces."""

import numpy as np
import pytest

from musicssl.dsp import chroma as ch

SR = 22050


def tone(freq: float, seconds: float = 2.0, partials: int = 4) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, partials + 1)).astype(np.float32)


@pytest.mark.parametrize("midi", [36, 57, 61, 69, 83, 96])
def test_a_tone_lands_on_its_pitch_class(midi):
    frames = ch.chroma_cqt(tone(440.0 * 2 ** ((midi - 69) / 12)), SR, 512)
    assert frames.shape == (12, 2 * SR // 512 + 1)
    assert int(np.argmax(frames.mean(axis=1))) == midi % 12
    assert np.allclose(frames[:, 5:-5].max(axis=0), 1.0)   # frames scaled to a maximum of 1


def test_tuning_moves_the_bins_with_the_recording():
    sharp = tone(440.0 * 2 ** (45 / 1200))     # A, 45 cents sharp: between A and A#
    plain = ch.chroma_cqt(sharp, SR, 512).mean(axis=1)
    tuned = ch.chroma_cqt(sharp, SR, 512, tuning_cents=45).mean(axis=1)
    assert tuned[9] / tuned[10] > plain[9] / plain[10] and int(np.argmax(tuned)) == 9


def test_silence_gives_zero_frames():
    assert not np.any(ch.chroma_cqt(np.zeros(SR, np.float32), SR, 512))


def test_chunked_and_streamed_chroma_equal_the_whole(monkeypatch):
    rng = np.random.default_rng(0)
    x = (tone(261.63, 12.0) + 0.3 * tone(329.63, 12.0) + 0.05 * rng.standard_normal(12 * SR)).astype(np.float32)
    whole = ch.chroma_cqt(x, SR, 512)
    monkeypatch.setattr(ch, "CHUNK_SECONDS", 3.0)
    chunked = ch.chroma_cqt(x, SR, 512)
    streamed = np.concatenate([piece for _, piece in
                               ch.chroma_stream((x[i:i + 10000] for i in range(0, len(x), 10000)), SR, 512)],
                              axis=1)
    np.testing.assert_allclose(chunked, whole, atol=1e-5)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_chroma_agrees_with_librosa_chroma_cqt():
    librosa = pytest.importorskip("librosa")   # the reference, a test dependency
    rng = np.random.default_rng(1)
    chord = sum(tone(440.0 * 2 ** (m / 12), 4.0) for m in (-9, -5, -2, 3)) + 0.01 * rng.standard_normal(4 * SR)
    ours = ch.chroma_cqt(chord.astype(np.float32), SR, 512)
    theirs = librosa.feature.chroma_cqt(y=chord.astype(np.float32), sr=SR, hop_length=512)
    assert ours.shape == theirs.shape
    assert np.corrcoef(ours.mean(axis=1), theirs.mean(axis=1))[0, 1] > 0.995
    assert np.abs(ours - theirs)[:, 10:-10].mean() < 0.02


def test_lowpass_design_and_window_equal_scipy():
    signal = pytest.importorskip("scipy.signal")
    from musicssl.dsp.cqt import frequency_sampling_fir, lowpass_filter, periodic_hann

    edges, gains = [0.0, 0.5 / 1.001, 0.5 * 1.001, 1.0], [1.0, 1.0, 0.0, 0.0]
    np.testing.assert_allclose(frequency_sampling_fir(256, edges, gains), signal.firwin2(256, edges, gains),
                               atol=1e-12)
    np.testing.assert_allclose(frequency_sampling_fir(101, [0, 0.3, 0.4, 1], [1, 1, 0, 0.5]),
                               signal.firwin2(101, [0, 0.3, 0.4, 1], [1, 1, 0, 0.5]), atol=1e-12)
    np.testing.assert_allclose(lowpass_filter(), signal.firwin2(256, edges, gains).astype(np.float32))
    for n in (1, 2, 7, 1000, 13501):
        np.testing.assert_allclose(periodic_hann(n), signal.get_window("hann", n, fftbins=True), atol=1e-12)


def test_median_filter_and_hpss_equal_scipy_and_librosa():
    ndimage = pytest.importorskip("scipy.ndimage")
    librosa = pytest.importorskip("librosa")
    from musicssl.key.tonality import hpss, median_filter

    rng = np.random.default_rng(2)
    for shape in [(99, 300), (99, 3), (5, 40)]:
        x = rng.random(shape).astype(np.float32)
        x[:, :2] = 0.0                                     # silent frames: both masks split
        np.testing.assert_array_equal(median_filter(x, 17, axis=1), ndimage.median_filter(x, (1, 17), mode="reflect"))
        np.testing.assert_array_equal(median_filter(x, 17, axis=0), ndimage.median_filter(x, (17, 1), mode="reflect"))
        for ours, theirs in zip(hpss(x), librosa.decompose.hpss(x, kernel_size=17, mask=False)):
            np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_tuning_peaks_match_librosa_piptrack():
    librosa = pytest.importorskip("librosa")
    from musicssl.dsp.tuning import spectral_peaks

    rng = np.random.default_rng(3)
    x = (tone(440.0 * 2 ** (17 / 1200), 3.0, 8) + 0.3 * tone(196.0, 3.0, 6)
         + 0.01 * rng.standard_normal(3 * SR)).astype(np.float32)
    freqs, mags = spectral_peaks(x, SR, 80.0, 2000.0)
    pitches, magnitudes = librosa.piptrack(y=x, sr=SR, fmin=80.0, fmax=2000.0)
    found = pitches > 0
    np.testing.assert_allclose(np.sort(freqs), np.sort(pitches[found]), rtol=1e-4)
    np.testing.assert_allclose(np.sort(mags), np.sort(magnitudes[found]), rtol=1e-3)
