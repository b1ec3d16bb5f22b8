"""The CQT front end: shapes, pitch, nnAudio equivalence, chunking, log compression, crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from musicssl.errors import AudioTooShortError, ConfigError
from musicssl.dsp.cqt import CQT, cqt_chunked, cqt_stream, crop_bins, FrontEndConfig, KEY_FRONTEND, KeyFrontEnd, log_compress, lowpass_filter, nnaudio_early_downsample_count

from conftest import harmonic_tone



BEAT_SETTINGS = dict(sr=16000, hop_length=256, fmin=16.35, n_bins=96, bins_per_octave=12)


@pytest.fixture(scope="module")
def key_cqt() -> CQT:
    return CQT()


def _noise(n: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, n, generator=g) * 0.1


def test_shape_and_frame_count(key_cqt):
    for n in (22050, 22050 * 3 + 17, 512 * 200):
        out = key_cqt(_noise(n))
        assert out.shape == (1, 99, n // 512 + 1)
        assert key_cqt.n_frames(n) == out.shape[-1]
    assert key_cqt.n_octaves == 9


def test_sine_peaks_at_its_bin(key_cqt):
    sr = 22050
    t = np.arange(3 * sr) / sr
    for midi_offset in (0, 12, 48, 60, 90):  # A0, A1, A4, A5, ...
        freq = 27.5 * 2 ** (midi_offset / 12)
        mag = key_cqt(torch.tensor(np.sin(2 * np.pi * freq * t), dtype=torch.float32))
        profile = mag[0, :, 20:-20].mean(-1)
        assert int(profile.argmax()) == midi_offset


def test_sine_magnitude_is_librosa_scaled(key_cqt):
    # kernels are L1-normalised (a unit sine gives 1/2), then scaled by sqrt(window length)
    sr = 22050
    t = np.arange(4 * sr) / sr
    q = 1 / (2 ** (1 / 12) - 1)
    for b in (30, 60, 90):
        f = 27.5 * 2 ** (b / 12)
        m = key_cqt(torch.tensor(np.sin(2 * np.pi * f * t), dtype=torch.float32))[0, b, 40:-40].mean()
        expected = np.sqrt(np.ceil(q * sr / f)) / 2
        assert float(m) == pytest.approx(expected, rel=0.02)


def test_batch_equals_single(key_cqt):
    x = _noise(30000, batch=3)
    whole = key_cqt(x)
    for i in range(3):
        torch.testing.assert_close(key_cqt(x[i]), whole[i:i + 1], rtol=1e-5, atol=1e-6)


def test_decimation_equals_strided_convolution(key_cqt):
    x = _noise(10001, batch=2)
    ref = F.conv1d(x[:, None].double(), key_cqt.lowpass.double().view(1, 1, -1), stride=2, padding=127)[:, 0]
    out = key_cqt.decimate(x)
    assert out.shape == (2, 5000)
    assert (out.double() - ref).abs().max() < 1e-6


def test_lowpass_filter_is_half_band():
    h = lowpass_filter().astype(np.float64)
    response = np.abs(np.fft.rfft(h, 4096))
    freqs = np.linspace(0, 1, response.size)  # relative to Nyquist
    assert np.all(np.abs(response[freqs < 0.45] - 1) < 0.02)
    assert np.all(response[freqs > 0.55] < 0.02)


def test_early_downsampling_not_needed_for_project_settings():
    assert nnaudio_early_downsample_count(22050, 512, 27.5, 99, 12) == 0
    assert nnaudio_early_downsample_count(16000, 256, 16.35, 96, 12) == 0


def test_beat_settings_work():
    cqt = CQT(**BEAT_SETTINGS)
    assert cqt.n_octaves == 8
    n = 16000 * 2
    mag = cqt(_noise(n))
    assert mag.shape == (1, 96, n // 256 + 1)
    sr = 16000
    t = np.arange(2 * sr) / sr
    f = 16.35 * 2 ** (57 / 12)  # A4
    prof = cqt(torch.tensor(np.sin(2 * np.pi * f * t), dtype=torch.float32))[0, :, 10:-10].mean(-1)
    assert int(prof.argmax()) == 57


@pytest.mark.parametrize("settings", [dict(sr=22050, hop_length=512, fmin=27.5, n_bins=99, bins_per_octave=12),
                                      BEAT_SETTINGS])
def test_matches_nnaudio_vqt(settings):
    vqt_module = pytest.importorskip("nnAudio.features.vqt")
    ref = vqt_module.VQT(gamma=0, verbose=False, **settings)
    ours = CQT(**settings)
    sr = settings["sr"]
    rng = np.random.default_rng(3)
    t = np.arange(int(2.5 * sr)) / sr
    x = 0.05 * rng.standard_normal(t.size)
    for f in (55.0, 261.6, 1000.0, 3000.0):
        x = x + np.sin(2 * np.pi * f * t) * np.exp(-t)
    x = torch.tensor(x, dtype=torch.float32)[None]
    a, b = ours(x), ref(x)
    assert a.shape == b.shape
    # float32 rounding differs (summation order): compare relative to the loudest bin
    assert float((a - b).abs().max() / b.max()) < 1e-5


def test_invalid_settings_are_rejected():
    with pytest.raises(ConfigError):
        CQT(hop_length=500)  # not divisible by 2**8
    with pytest.raises(ConfigError):
        CQT(sr=8000, n_bins=99)  # top bin above Nyquist
    with pytest.raises(ConfigError):
        CQT(n_bins=0)
    cqt = CQT()
    with pytest.raises(AudioTooShortError):
        cqt(torch.zeros(1, 100))
    with pytest.raises(ConfigError):
        cqt(torch.zeros(2, 2, 3000))


def test_short_input_falls_back_to_zero_padding(key_cqt):
    # 1 s: the lowest octave (86 samples) is still long enough for reflection; 0.5 s is not
    out = key_cqt(_noise(11025))
    assert out.shape == (1, 99, 11025 // 512 + 1)
    assert torch.isfinite(out).all()


def test_chunked_equals_whole():
    cqt = CQT()
    sr = 22050
    n = int(100 * sr) + 123  # 1 min 40 s
    rng = np.random.default_rng(1)
    t = np.arange(n) / sr
    x = 0.1 * rng.standard_normal(n) + np.sin(2 * np.pi * 110 * t) * (1 + np.sin(0.5 * t))
    x = torch.tensor(x, dtype=torch.float32)
    whole = cqt(x)
    chunked = cqt_chunked(cqt, x, chunk_seconds=9.3)
    assert chunked.shape == whole.shape
    assert float((chunked - whole).abs().max() / whole.max()) < 1e-6
    # chunking inside KeyFrontEnd gives the same log-CQT
    fe = KeyFrontEnd(chunk_seconds=20.0)
    # (the log scale magnifies float32 rounding in bins ~70 dB below the peak)
    torch.testing.assert_close(fe(x[None]), log_compress(whole)[:, None], rtol=0, atol=2e-3)


def test_stream_equals_whole():
    cqt = CQT()
    sr = 22050
    n = 40 * sr + 333
    x = (0.1 * np.random.default_rng(2).standard_normal(n)).astype(np.float32)
    whole = cqt(torch.from_numpy(x))[0]
    for sizes in ([4096], [50000, 3, 300000, 12345], [n]):
        blocks, i, k = [], 0, 0
        while i < n:
            blocks.append(x[i:i + sizes[k % len(sizes)]])
            i += sizes[k % len(sizes)]
            k += 1
        pieces = list(cqt_stream(cqt, iter(blocks), chunk_seconds=6.0))
        assert [p[0] for p in pieces] == np.cumsum([0] + [p[1].shape[-1] for p in pieces[:-1]]).tolist()
        out = torch.cat([p[1] for p in pieces], dim=-1)
        assert out.shape == whole.shape
        assert float((out - whole).abs().max() / whole.max()) < 1e-6
    with pytest.raises(AudioTooShortError):
        list(cqt_stream(cqt, [np.zeros(10, np.float32)]))


def test_log_compress():
    mag = torch.tensor([[[1.0, 1e-3, 1e-5, 0.0]], [[100.0, 10.0, 1.0, 1e-9]]])
    x = log_compress(mag)
    assert x.shape == mag.shape
    # x = dB/80 + 1 with dB = 10 log10(mag) (magnitude 1 -> 1), floored 80 dB below each example's peak
    torch.testing.assert_close(x[0, 0], torch.tensor([1.0, 1 - 30 / 80, 1 - 50 / 80, 0.0]))
    torch.testing.assert_close(x[1, 0], torch.tensor([1.25, 1.125, 1.0, 0.25]))
    # per example: the floor sits exactly 1 below the example's maximum
    torch.testing.assert_close(x.amax(dim=(1, 2)) - x.amin(dim=(1, 2)), torch.tensor([1.0, 1.0]))
    # the 1e-10 clamp: all-zero input gives a constant
    z = log_compress(torch.zeros(1, 3, 4))
    torch.testing.assert_close(z, torch.full((1, 3, 4), 1 - 100 / 80))


def test_crop_bins():
    x = torch.arange(2 * 99 * 3, dtype=torch.float32).view(2, 1, 99, 3)
    c = crop_bins(x, 5)
    assert c.shape == (2, 1, 84, 3)
    torch.testing.assert_close(c, x[:, :, 5:89])
    per = crop_bins(x, torch.tensor([0, 15]))
    torch.testing.assert_close(per[0], x[0, :, 0:84])
    torch.testing.assert_close(per[1], x[1, :, 15:99])
    with pytest.raises(ConfigError):
        crop_bins(x, 16)
    with pytest.raises(ConfigError):
        crop_bins(x, torch.tensor([0, 16]))
    with pytest.raises(ConfigError):
        crop_bins(x, torch.tensor([0, 1, 2]))


def test_crop_transposes_down():
    # a tone one semitone up, cropped one bin higher, looks like the original tone
    sr = 22050
    fe = KeyFrontEnd()
    a = fe(torch.tensor(harmonic_tone(220.0, 3.0, sr))[None])
    b = fe(torch.tensor(harmonic_tone(220.0 * 2 ** (1 / 12), 3.0, sr))[None])
    pa = crop_bins(a, 0).mean(-1).squeeze()
    pb = crop_bins(b, 1).mean(-1).squeeze()
    assert int(pa.argmax()) == int(pb.argmax())
    assert set(pa.topk(6).indices.tolist()) == set(pb.topk(6).indices.tolist())
    assert float(torch.corrcoef(torch.stack([pa, pb]))[0, 1]) > 0.98


def test_key_frontend_and_config_roundtrip():
    fe = KeyFrontEnd()
    x = torch.tensor(harmonic_tone(440.0, 3.0, 22050))[None]
    y = fe(x)
    assert y.shape == (1, 1, 99, fe.n_frames(x.shape[-1]))
    assert float(y.max() - y.min()) == pytest.approx(1.0)
    cfg = FrontEndConfig.from_dict(KEY_FRONTEND.to_dict())
    assert cfg == KEY_FRONTEND and cfg.n_crops == 16
    assert cfg.frame_rate == pytest.approx(22050 / 512)
    with pytest.raises(ConfigError):
        FrontEndConfig.from_dict({"sr": 22050, "colour": "red"})
