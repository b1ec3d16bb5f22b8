"""Long files without holding them: the CQT of a file streamed chunk by chunk (FileCQT,
cut_spans), the one-pass scan (scan_audio) and the key estimator's streamed path give
what the in-memory path gives."""

import numpy as np
import pytest
import torch
from audio_factory import write_samples
from conftest import harmonic_tone

import musicssl.key.features as key_estimator
from musicssl.dsp.cqt import CQT, KEY_FRONTEND, FileCQT, cut_spans
from musicssl.errors import ConfigError
from musicssl.io.audio import load_audio, scan_audio
from musicssl.key.features import KeyFeatures, compute_features, frame_spans
from musicssl.key.registry import load_estimator

SR = KEY_FRONTEND.sr


def _music(seconds: float, seed: int = 0) -> np.ndarray:
    """Chords of harmonic tones changing every 2 s, a little noise and a DC offset; peak 0.7."""
    rng = np.random.default_rng(seed)
    roots = [261.63, 349.23, 392.0, 220.0]
    parts = []
    for i in range(int(np.ceil(seconds / 2))):
        root = roots[i % len(roots)]
        parts.append(sum(harmonic_tone(root * r, 2.0, SR) for r in (1.0, 1.26, 1.5)))
    x = np.concatenate(parts)[:int(seconds * SR)]
    x = x + 0.01 * rng.standard_normal(len(x)) + 0.02
    return (0.7 * x / np.max(np.abs(x))).astype(np.float32)


@pytest.fixture(scope="module")
def long_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    return write_samples(folder, "long.wav", _music(150.0), SR, subtype="FLOAT")


def test_file_cqt_equals_one_shot_cqt(long_file):
    samples = load_audio(long_file, SR)
    c = KEY_FRONTEND
    whole = CQT(sr=c.sr, hop_length=c.hop_length, fmin=c.fmin, n_bins=c.n_bins)(torch.as_tensor(samples))[0]
    streamed = FileCQT(str(long_file), KEY_FRONTEND, float(np.max(np.abs(load_audio(long_file, SR, normalize=False)))),
                       len(samples))
    assert streamed.shape == tuple(whole.shape)
    pieces = list(streamed.chunks(chunk_seconds=20.0))
    assert len(pieces) > 3 and [p[0] for p in pieces] == sorted(p[0] for p in pieces)
    joined = np.concatenate([p for _, p in pieces], axis=-1)
    assert joined.shape == tuple(whole.shape)
    scale = float(whole.max())
    np.testing.assert_allclose(joined / scale, whole.numpy() / scale, atol=1e-5, rtol=0)


def test_cut_spans_gives_the_slices_in_order():
    full = np.arange(3 * 100, dtype=np.float32).reshape(3, 100)
    pieces = [(a, full[:, a:a + 13]) for a in range(0, 100, 13)]
    spans = [(0, 40), (5, 25), (20, 100), (30, 31), (60, 100)]
    got = list(cut_spans(iter(pieces), spans))
    assert [i for i, _ in got] == list(range(len(spans)))
    for (a, b), (_, window) in zip(spans, got):
        np.testing.assert_array_equal(window, full[:, a:b])
    with pytest.raises(ConfigError):
        list(cut_spans(iter(pieces), [(10, 20), (5, 30)]))
    with pytest.raises(ConfigError):
        list(cut_spans(iter(pieces), [(90, 120)]))


def test_frame_spans_of_an_array_and_of_a_file_agree(long_file):
    samples = load_audio(long_file, SR)
    magnitude = key_estimator.magnitude_cqt(samples, KEY_FRONTEND)
    peak = float(np.max(np.abs(load_audio(long_file, SR, normalize=False))))
    streamed = FileCQT(str(long_file), KEY_FRONTEND, peak, len(samples))
    spans = [(0, 2000), (1500, 3000), (4000, magnitude.shape[-1])]
    for a, b in zip(frame_spans(magnitude, spans), frame_spans(streamed, spans)):
        np.testing.assert_allclose(a, b, atol=1e-5 * magnitude.max(), rtol=0)


def test_scan_audio_finds_length_peak_mean_and_excerpts(long_file):
    raw = load_audio(long_file, SR, normalize=False)
    normalised = load_audio(long_file, SR)
    scan = scan_audio(long_file, SR, lambda n: [(0, 100), (n // 2, n // 2 + 5000), (n - 7, n)])
    assert scan.n_samples == len(raw)
    assert scan.peak == pytest.approx(float(np.max(np.abs(raw))))
    assert scan.mean == pytest.approx(float(np.mean(normalised, dtype=np.float64)), rel=1e-6)
    n = len(raw)
    for (a, b), excerpt in zip([(0, 100), (n // 2, n // 2 + 5000), (n - 7, n)], scan.excerpts):
        np.testing.assert_array_equal(excerpt, normalised[a:b])


def test_streamed_features_match_the_in_memory_ones(long_file, monkeypatch):
    monkeypatch.setattr("musicssl.io.audio.STREAM_MIN_SECONDS", 60.0)
    memory = compute_features(long_file, KEY_FRONTEND, chroma=True, stream=False)
    streamed = compute_features(long_file, KEY_FRONTEND, chroma=True, stream=True)
    assert isinstance(memory.magnitude, np.ndarray) and isinstance(streamed.magnitude, FileCQT)
    assert streamed.magnitude.shape == memory.magnitude.shape
    assert streamed.duration_s == memory.duration_s
    assert streamed.tuning_cents == memory.tuning_cents
    assert streamed.harmonic_fraction == pytest.approx(memory.harmonic_fraction, abs=1e-6)
    assert streamed.peak_contrast == pytest.approx(memory.peak_contrast, abs=1e-4)
    np.testing.assert_allclose(streamed.chroma, memory.chroma, atol=1e-5)
    np.testing.assert_allclose(np.asarray(streamed.magnitude), memory.magnitude,
                               atol=1e-5 * memory.magnitude.max(), rtol=0)


@pytest.mark.parametrize("spec", ["skey-debian", "default"])
def test_estimator_results_streamed_equal_in_memory(long_file, monkeypatch, spec):
    estimator = load_estimator(spec, transpositions=2)
    if not hasattr(estimator, "max_window_s"):
        pytest.skip("this build ships no key model")
    estimator.max_window_s = 40.0      # several pieces, as a long file has
    memory = compute_features(long_file, estimator.frontend_config,
                              **{**estimator.feature_options, "stream": False})
    monkeypatch.setattr("musicssl.io.audio.STREAM_MIN_SECONDS", 60.0)
    streamed = compute_features(long_file, estimator.frontend_config, **estimator.feature_options)
    assert isinstance(streamed.magnitude, FileCQT)
    a, b = estimator.estimate_features([memory, streamed], local=True, window_s=20.0, hop_s=10.0)
    assert a.key == b.key
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-5)
    assert [w.start_s for w in a.local] == [w.start_s for w in b.local]
    for x, y in zip(a.local, b.local):
        np.testing.assert_allclose(y.probabilities, x.probabilities, atol=1e-5)
    # the file path through estimate_file takes the streamed route too
    c = estimator.estimate_file(long_file)
    np.testing.assert_allclose(c.probabilities, a.probabilities, atol=1e-5)


def test_key_features_hold_no_samples_when_streamed(long_file, monkeypatch):
    import pickle

    monkeypatch.setattr("musicssl.io.audio.STREAM_MIN_SECONDS", 60.0)
    streamed = compute_features(long_file, KEY_FRONTEND, stream=True)
    assert isinstance(streamed, KeyFeatures)
    assert len(pickle.dumps(streamed)) < 10_000      # small enough to send from a worker process


@pytest.mark.parametrize("chroma", ["cqt", "chroma"])
def test_template_estimators_read_streamed_features(long_file, monkeypatch, chroma):
    from musicssl.key.estimator import TemplateKeyEstimator

    template = TemplateKeyEstimator("krumhansl", chroma=chroma)
    options = template.feature_options
    memory = compute_features(long_file, template.frontend_config, stream=False, **options)
    monkeypatch.setattr("musicssl.io.audio.STREAM_MIN_SECONDS", 60.0)
    streamed = compute_features(long_file, template.frontend_config, **options)
    assert isinstance(streamed.magnitude, FileCQT)
    a, b = template.estimate_features([memory, streamed], local=True, window_s=20.0, hop_s=10.0)
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-5)
    for x, y in zip(a.local, b.local):
        np.testing.assert_allclose(y.probabilities, x.probabilities, atol=1e-5)


def test_onnx_backend_reads_streamed_features(long_file, monkeypatch, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from musicssl.cli.main import main
    from musicssl.key.estimator import KeyEstimator

    path = tmp_path / "skey-debian.onnx"
    assert main(["export-onnx", "skey-debian", "-o", str(path)]) == 0
    estimator = KeyEstimator.from_checkpoint(path, transpositions=2)
    assert not hasattr(estimator.model, "forward_crops")      # the one-crop-at-a-time path
    estimator.max_window_s = 40.0
    memory = compute_features(long_file, estimator.frontend_config, stream=False)
    monkeypatch.setattr("musicssl.io.audio.STREAM_MIN_SECONDS", 60.0)
    streamed = compute_features(long_file, estimator.frontend_config)
    assert isinstance(streamed.magnitude, FileCQT)
    a, b = estimator.estimate_features([memory, streamed], local=True, window_s=20.0, hop_s=10.0)
    np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-5)
    for x, y in zip(a.local, b.local):
        np.testing.assert_allclose(y.probabilities, x.probabilities, atol=1e-5)
