"""Waveform augmentations for real recordings (musicssl.key.augment) and their cache hook."""

from __future__ import annotations

import json

import numpy as np
import pytest

from audio_factory import dominant_frequency, harmonic_tone, write_samples
from musicssl.errors import ConfigError
from musicssl.key import augment as A

SR = 22050


def _tone(freq=440.0, seconds=2.0):
    return harmonic_tone(seconds, SR, freq_hz=freq)[:, 0]


def _db(x):
    return 10 * np.log10(np.mean(np.asarray(x, np.float64) ** 2) + 1e-20)


def test_synthetic_rir_decays_60_db_in_rt60():
    rir = A.synthetic_rir(np.random.default_rng(0), SR, rt60_s=0.8, damping=0.0, n_early=0)
    assert rir.dtype == np.float32 and len(rir) == int(round(1.2 * 0.8 * SR))
    assert np.isclose(np.sum(rir.astype(np.float64) ** 2), 1.0, atol=1e-4)
    # Schroeder backward integration: the -5..-25 dB slope extrapolated to 60 dB
    edc = np.cumsum((rir.astype(np.float64) ** 2)[::-1])[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t = np.arange(len(rir)) / SR
    sel = (edc_db < -5) & (edc_db > -25)
    slope = np.polyfit(t[sel], edc_db[sel], 1)[0]            # dB per second
    assert 0.6 < -60 / slope < 1.0


def test_reverb_lengthens_the_decay():
    x = np.zeros(SR, np.float32)
    x[:2205] = _tone(seconds=0.1)                             # 100 ms burst, then silence
    y = A.add_reverb(x, A.synthetic_rir(np.random.default_rng(1), SR, 1.0), wet=0.4)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-5)      # peak level kept
    late = slice(int(0.3 * SR), int(0.6 * SR))
    assert _db(x[late]) < -150                                # dry: silence after the burst
    assert _db(y[late]) - _db(y[:2205]) > -40                 # wet: a tail within 40 dB of the burst
    assert _db(y[int(0.2 * SR):int(0.35 * SR)]) > _db(y[int(0.6 * SR):int(0.75 * SR)]) + 6  # and it decays


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
@pytest.mark.parametrize("snr", [0.0, 12.0, 30.0])
def test_noise_reaches_the_requested_snr(color, snr):
    x = _tone(seconds=1.0)
    y = A.add_noise(x, np.random.default_rng(2), snr, color)
    measured = _db(x) - _db(y.astype(np.float64) - x)
    assert abs(measured - snr) < 1.0


def test_noise_colours_differ_in_spectral_slope():
    lows = {}
    for color in ("white", "pink", "brown"):
        n = A.coloured_noise(np.random.default_rng(3), SR, color)
        spec = np.abs(np.fft.rfft(n)) ** 2
        lows[color] = spec[1:200].sum() / spec.sum()            # share of power below 200 Hz
    assert lows["white"] < lows["pink"] < lows["brown"]


@pytest.mark.parametrize("cents", [-25.0, 20.0])
def test_detune_moves_pitch_by_cents_and_keeps_the_pitch_class(cents):
    x = _tone(440.0, seconds=2.0)
    y = A.detune(x, SR, cents)
    expected = 440.0 * 2 ** (cents / 1200)
    assert abs(dominant_frequency(y, SR) - expected) < 1.5
    assert abs(len(y) - len(x) * 2 ** (-cents / 1200)) <= 2      # tempo moves with the pitch
    import librosa

    chord = sum(_tone(f, 2.0) for f in (261.63, 329.63, 392.0))   # C major triad
    for sig in (chord, A.detune(chord, SR, cents)):
        chroma = librosa.feature.chroma_stft(y=sig, sr=SR, tuning=0.0).mean(axis=1)
        assert sorted(np.argsort(chroma)[-3:].tolist()) == [0, 4, 7]
    with pytest.raises(ConfigError):
        A.detune(x, SR, 60.0)


def test_time_stretch_changes_length_not_pitch():
    x = _tone(440.0, seconds=2.0)
    y = A.time_stretch(x, 1.08)
    assert abs(len(y) - len(x) / 1.08) < 0.01 * len(x)
    assert abs(dominant_frequency(y, SR) - 440.0) < 3.0


@pytest.mark.parametrize("codec", ["mp3", "opus"])
def test_codec_roundtrip_is_lossy_but_aligned(codec):
    rng = np.random.default_rng(4)
    x = (0.3 * _tone(330.0, 3.0) + 0.05 * rng.standard_normal(3 * SR)).astype(np.float32)
    y = A.codec_roundtrip(x, SR, codec, 24)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.corrcoef(x, y)[0, 1] > 0.9                     # aligned (delay removed)
    # low bit rate: the noise (a quarter of the signal's power) is not kept sample by sample
    residual_snr = _db(x) - _db(y.astype(np.float64) - x)
    assert 3.0 < residual_snr < 20.0
    tone_only = A.codec_roundtrip(0.3 * _tone(330.0, 3.0), SR, codec, 64)
    assert _db(0.3 * _tone(330.0, 3.0)) - _db(tone_only - 0.3 * _tone(330.0, 3.0)) > 15.0   # a tone survives


def test_augment_waveform_is_deterministic_and_records_what_it_did():
    x = _tone(seconds=3.0)
    config = A.AugmentConfig(reverb_p=1, codec_p=1, detune_p=1, stretch_p=1, noise_p=1)
    y1, applied1 = A.augment_waveform(x, SR, config, np.random.default_rng(5))
    y2, applied2 = A.augment_waveform(x, SR, config, np.random.default_rng(5))
    y3, _ = A.augment_waveform(x, SR, config, np.random.default_rng(6))
    assert applied1 == applied2 and np.array_equal(y1, y2)
    assert not (len(y3) == len(y1) and np.allclose(y1, y3))
    assert set(applied1) >= {"stretch_rate", "detune_cents", "rt60_s", "snr_db", "codec"}
    assert np.isclose(np.abs(y1).max(), np.abs(x).max(), rtol=1e-4)
    none, nothing = A.augment_waveform(x, SR, A.AugmentConfig(0, codec_p=0, detune_p=0, stretch_p=0, noise_p=0),
                                       np.random.default_rng(5))
    assert nothing == {} and np.allclose(none, x)


def test_parse_settings():
    assert A.AugmentConfig.parse("none") is None and A.AugmentConfig.parse("") is None
    assert A.AugmentConfig.parse("real") == A.AugmentConfig()
    only = A.AugmentConfig.parse("reverb, noise")
    assert only.reverb_p > 0 and only.noise_p > 0 and only.codec_p == only.detune_p == only.stretch_p == 0
    with pytest.raises(ConfigError):
        A.AugmentConfig.parse("reverb,flanger")
    settings = A.cache_settings("real", seed=3)
    assert A.AugmentConfig.from_dict(json.loads(json.dumps(settings))["config"]) == A.AugmentConfig()
    assert A.cache_settings("none") is None


def test_feature_cache_augments_only_the_given_tracks(tmp_path):
    from musicssl.dsp.cqt import FrontEndConfig
    from musicssl.io import tracks as T
    from musicssl.key import dataset as D

    paths = [str(write_samples(tmp_path, f"t{i}.wav", _tone(220.0 * (i + 1), 4.0), SR)) for i in range(2)]
    tracks = T.scan_tracks([T.Track(p) for p in paths]).usable
    fe = FrontEndConfig(hop_length=1024)
    plain = D.FeatureCache(tmp_path / "plain", fe)
    assert plain.build(tracks, progress=False, num_workers=0) == {}
    settings = A.cache_settings("noise", seed=0)
    settings["config"]["snr_db"] = [5.0, 5.0]
    settings["config"]["noise_p"] = 1.0
    aug = D.FeatureCache(tmp_path / "aug", fe, settings)
    assert aug.build(tracks, progress=False, num_workers=0, augment_paths={tracks[0].path}) == {}
    diff0 = np.abs(np.asarray(aug.array(tracks[0].path), np.float32) - np.asarray(plain.array(tracks[0].path), np.float32))
    diff1 = np.abs(np.asarray(aug.array(tracks[1].path), np.float32) - np.asarray(plain.array(tracks[1].path), np.float32))
    assert diff0.mean() > 3.0                  # noise at 5 dB SNR fills the empty bins (dB)
    assert diff1.max() == 0.0                  # not in augment_paths: untouched
    # the index records the settings: reopening with others is refused, open() restores them
    assert D.FeatureCache.open(tmp_path / "aug").augment == json.loads(json.dumps(settings))
    with pytest.raises(ConfigError):
        D.FeatureCache(tmp_path / "aug", fe)
    with pytest.raises(ConfigError):
        D.FeatureCache(tmp_path / "plain", fe, settings)


def test_train_config_switch_is_off_by_default_and_needs_the_cache():
    from musicssl.key.config import TrainConfig

    assert TrainConfig().augment == "none" and A.AugmentConfig.parse(TrainConfig().augment) is None
    assert TrainConfig(augment="real", cache_dir="cache").augment == "real"
    with pytest.raises(ConfigError):
        TrainConfig(augment="real")                         # no cache: nothing would be augmented
    with pytest.raises(ConfigError):
        TrainConfig(augment="reverb,flanger", cache_dir="cache")
