"""KeyEstimator: layers, results, local keys, parity with the authors' pipeline."""

import csv
import os
import warnings

import numpy as np
import pytest
import torch

from musicssl.errors import AudioTooShortError, MusicsslError, SilentAudioError
from musicssl.key.calibration import reference_signal
from musicssl.keys import KEY_LABELS, Key


@pytest.fixture(scope="module")
def released(shared_fixtures, tmp_path_factory):
    from musicssl.key.estimator import KeyEstimator

    os.environ["MUSICSSL_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    return KeyEstimator.from_checkpoint(shared_fixtures / "skey.pt", transpositions=1)   # the SPEC's inference


def test_result_fields_and_dict(released):
    x = np.concatenate([reference_signal(Key(7, "major"))] * 2)
    result = released.estimate(x, 22050)
    assert result.key == Key(7, "major")
    assert result.probabilities.shape == (24,) and result.probabilities.sum() == pytest.approx(1, abs=1e-5)
    top = result.top(2)
    assert result.confidence == pytest.approx(top[0][1] - top[1][1])
    d = result.to_dict(notation="camelot")
    assert d["key"] == "9B" and list(d["probabilities"]) == list(KEY_LABELS)


def test_stereo_and_other_rates_give_the_same_key(released):
    x = np.concatenate([reference_signal(Key(2, "minor"), sr=44100)] * 2)
    stereo = np.stack([x, 0.5 * x], axis=1)
    assert released.estimate(stereo, 44100).key == Key(2, "minor")


def test_local_keys_find_the_modulation(released):
    first = np.concatenate([reference_signal(Key(0, "major"))] * 2)
    second = np.concatenate([reference_signal(Key(3, "major"))] * 2)
    change_s = len(first) / 22050
    result = released.estimate(np.concatenate([first, second]), 22050, local=True, window_s=10, hop_s=2.5)
    segments = result.segments
    assert segments[0].key == Key(0, "major") and segments[-1].key == Key(3, "major")
    boundaries = [s.start_s for s in segments[1:]]
    assert any(abs(b - change_s) < 6 for b in boundaries)
    assert segments[0].start_s == 0 and segments[-1].end_s == pytest.approx(result.duration_s)
    d = result.to_dict()
    assert d["local"][0]["start"] == 0 and "segments" in d


def test_bad_input_is_reported(released):
    with pytest.raises(AudioTooShortError, match="at least 1.00 s"):
        released.estimate(np.ones(11025, dtype=np.float32), 22050)
    with pytest.raises(SilentAudioError):
        released.estimate(np.zeros(22050 * 10, dtype=np.float32), 22050)
    results = dict(released.estimate_files(["/nonexistent/file.wav"]))
    assert isinstance(results["/nonexistent/file.wav"], MusicsslError)


def test_short_clips_are_looped_to_the_network_minimum(released):
    from musicssl.key.features import loop_to_min_frames, MIN_FRAMES

    short = np.arange(3 * 50, dtype=np.float32).reshape(3, 50)
    looped = loop_to_min_frames(short)
    assert looped.shape == (3, MIN_FRAMES) and np.array_equal(looped[:, 50:100], short)
    chord = reference_signal(Key(7, "major"))[: int(2.0 * 22050)]  # 2 s: shorter than 128 frames
    result = released.estimate(chord, 22050)
    assert result.duration_s == pytest.approx(2.0)
    assert result.key.signature in (0, 1, 2)  # G major or a neighbour on the circle of fifths


def test_features_batch_equals_single(released, shared_fixtures):
    from musicssl.key.features import compute_features

    x = reference_signal(Key(5, "major"))
    features = [compute_features(np.concatenate([x, x]), sr=22050),
                compute_features(np.concatenate([x[::-1], x]), sr=22050)]
    batch = released.estimate_features(features)
    single = [released.estimate_features([f])[0] for f in features]
    for a, b in zip(batch, single):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_end_to_end_parity_with_authors_code(released, shared_fixtures):
    """Same arg-max on all 40 files, probabilities within 2e-3 (fixtures README);
    the authors' pipeline has no tuning compensation, so it is off here."""
    from musicssl.key.features import compute_features

    rows = list(csv.DictReader(open(shared_fixtures / "skey_reference" / "dev-synth-official.csv")))
    assert len(rows) == 40
    shared = shared_fixtures.parent
    worst = 0.0
    for row in rows:
        features = compute_features(shared / row["path"], released.frontend_config, tuning="off")
        result = released.estimate_features([features])[0]
        expected = np.array([float(row[f"p_{label}"]) for label in
                             [f"{n} {m}" for m in ("major", "minor") for n in
                              ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")]])
        assert result.key == Key.parse(row["key"]), row["path"]
        worst = max(worst, float(np.abs(result.probabilities - expected).max()))
    assert worst < 2e-3, worst


def test_model_names_resolve(monkeypatch, tmp_path):
    from musicssl.errors import CheckpointError
    from musicssl.key import registry as est
    from musicssl.key.estimator import KeyEstimator, TemplateKeyEstimator

    names = est.model_names()
    assert names[0] == "default" and {"krumhansl", "temperley"} <= set(names)
    assert isinstance(est.load_estimator("temperley"), TemplateKeyEstimator)
    with pytest.raises(CheckpointError, match="no such checkpoint or model name"):
        est.load_estimator(str(tmp_path / "missing.safetensors"))
    # this build ships the trained model: "default" is it, with no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = est.load_estimator("default")
    assert isinstance(default, KeyEstimator) and est.DEFAULT_MODEL == "skey-band"
    assert (default.name, default.prior) == ("skey-band+kostka-payne", "kostka-payne")  # with its prior
    assert default.feature_options == {"chroma": True}                # which reads chroma frames
    weight, temperature = est.FITTED_COMBINATIONS[("skey-band", "kostka-payne")]
    assert (default.prior_weight, default.temperature) == (weight, temperature) and 0 < weight < 1 < temperature
    assert (est.load_estimator("skey-band").prior_weight, est.load_estimator("skey-band").temperature) == (1.0, 1.0)
    assert est.load_estimator("skey-debian+kostka-payne").prior_weight == 1.0
    assert default.frontend_config.hop_length == 2048           # the hop it was trained at
    alone = est.load_estimator("default", prior="none")
    assert (alone.name, alone.prior) == ("skey-band", None)
    assert {"skey-band", "skey-debian"} <= set(est.shipped_key_models())   # the base model stays
    assert est.load_estimator("skey-debian").prior is None
    assert est.load_estimator("skey-debian+krumhansl").name == "skey-debian+krumhansl"
    assert est.load_estimator("skey-debian", prior="kostka-payne").prior == "kostka-payne"
    assert {"skey-debian", "skey-debian+krumhansl"} <= set(names)
    # a build without it falls back to the template baseline, and says so
    monkeypatch.setattr(est, "shipped_key_models", lambda: {})
    monkeypatch.setattr("musicssl.key.checkpoint.shipped_key_models", lambda: {})
    with pytest.warns(UserWarning, match="Krumhansl"):
        assert isinstance(est.load_estimator("default"), TemplateKeyEstimator)


class _PitchClassNet(torch.nn.Module):
    """A toy two-row 'model' that is exactly transposition-equivariant: softmax of the
    crop's pitch-class profile (column c = crop bins c, c + 12, …), plus a column bias."""

    n_rows = 2

    def __init__(self, bias: torch.Tensor):
        super().__init__()
        self.bias = bias

    def forward(self, x):                                   # (B, 1, 84, T) -> (B, 24)
        profile = x.mean(-1)[:, 0].reshape(x.shape[0], -1, 12).mean(1)
        logits = torch.cat([profile, profile.roll(3, dims=-1)], dim=-1) * 20 + self.bias
        return torch.softmax(logits, dim=-1)


def _toy_estimator(bias, transpositions, prior=None, prior_chroma="cqt"):
    from musicssl.dsp.cqt import FrontEndConfig
    from musicssl.key.estimator import KeyEstimator

    calibration = {"n_rows": 2, "row_modes": ["major", "minor"], "row_offsets": [0, 0]}
    return KeyEstimator(_PitchClassNet(bias), FrontEndConfig(), calibration, transpositions=transpositions,
                        prior=prior, prior_chroma=prior_chroma)


def test_transposition_averaging_rotates_each_crop_back():
    from musicssl.dsp.cqt import crop_bins

    torch.manual_seed(0)
    pattern = torch.rand(2, 1, 12, 16)                       # the same in every octave
    x = pattern.repeat(1, 1, 9, 1)[:, :, :99]
    # without a column bias the toy model is exactly equivariant: every crop, rotated back, agrees
    flat = torch.zeros(24)
    np.testing.assert_allclose(_toy_estimator(flat, 12).native_probabilities(x),
                               _toy_estimator(flat, 1).native_probabilities(x), atol=1e-6)
    # with a bias, the average is the mean of the rotated crops (rotation by +offset per row)
    bias = torch.randn(24)
    est = _toy_estimator(bias, 5)
    model = est.model
    expected = np.mean([model(crop_bins(x, o)).view(2, 2, 12).roll(o, dims=-1).reshape(2, 24).numpy()
                        for o in range(5)], axis=0)
    np.testing.assert_allclose(est.native_probabilities(x), expected, atol=1e-6)
    # and averaging cancels the bias: closer to the unbiased answer than the single crop is
    unbiased = _toy_estimator(flat, 1).native_probabilities(x)
    single = _toy_estimator(bias, 1).native_probabilities(x)
    averaged = _toy_estimator(bias, 12).native_probabilities(x)
    assert np.abs(averaged - unbiased).sum() < np.abs(single - unbiased).sum()


def test_transpositions_default_and_bounds():
    from musicssl.errors import ConfigError
    from musicssl.key.estimator import DEFAULT_TRANSPOSITIONS

    assert _toy_estimator(torch.zeros(24), None).transpositions == DEFAULT_TRANSPOSITIONS == 12
    assert _toy_estimator(torch.zeros(24), 16).transpositions == 16
    for bad in (0, 17):
        with pytest.raises(ConfigError, match="transpositions must be between 1 and 16"):
            _toy_estimator(torch.zeros(24), bad)


def test_default_model_averages_transpositions_and_keeps_its_answer(shared_fixtures):
    from musicssl.key.registry import load_estimator

    one, twelve = load_estimator("default", transpositions=1), load_estimator("default")
    assert (one.transpositions, twelve.transpositions) == (1, 12)
    x = np.concatenate([reference_signal(Key(7, "major"))] * 2)
    a, b = one.estimate(x, 22050), twelve.estimate(x, 22050)
    assert a.key == b.key == Key(7, "major")
    assert not np.allclose(a.probabilities, b.probabilities)


def test_combine_with_prior_is_a_renormalised_product():
    from musicssl.errors import ConfigError
    from musicssl.key.estimator import combine_with_prior

    p = np.zeros(24)
    p[[0, 9, 21]] = [0.5, 0.3, 0.2]
    q = np.zeros(24)
    q[[0, 9, 21]] = [0.2, 0.2, 0.6]
    # products 0.10, 0.06, 0.12 (sum 0.28); every other key ~1e-24
    expected = np.array([0.10, 0.06, 0.12]) / 0.28
    out = combine_with_prior(p, q)
    np.testing.assert_allclose(out[[0, 9, 21]], expected, atol=1e-9)
    assert out.argmax() == 21 != p.argmax()                 # the prior moved the answer
    # weight 0: the network alone; weight 2 squares the prior; batches (B, 24) work row by row
    np.testing.assert_allclose(combine_with_prior(p, q, 0.0)[[0, 9, 21]], [0.5, 0.3, 0.2], atol=1e-9)
    squared = np.array([0.5 * 0.04, 0.3 * 0.04, 0.2 * 0.36])
    np.testing.assert_allclose(combine_with_prior(p, q, 2.0)[[0, 9, 21]], squared / squared.sum(), atol=1e-9)
    both = combine_with_prior(np.stack([p, q]), np.stack([q, p]))
    np.testing.assert_allclose(both.sum(axis=1), 1.0)
    np.testing.assert_allclose(both[0], both[1], atol=1e-12)
    with pytest.raises(ConfigError, match="prior weight"):
        combine_with_prior(p, q, -1.0)


def test_spec_with_a_prior_splits_and_checks():
    from musicssl.errors import ConfigError
    from musicssl.key.registry import load_estimator, split_spec

    assert split_spec("skey-debian+krumhansl") == ("skey-debian", "krumhansl")
    assert split_spec("a/b+c.pt+temperley") == ("a/b+c.pt", "temperley")
    assert split_spec("skey-debian") == ("skey-debian", None)
    assert split_spec("model+v2.safetensors") == ("model+v2.safetensors", None)
    with pytest.raises(ConfigError, match="not to a template"):
        load_estimator("krumhansl+temperley")
    with pytest.raises(ConfigError, match="not to a template"):
        load_estimator("krumhansl", prior="temperley")
    with pytest.raises(ConfigError, match="prior must be one of"):
        load_estimator("default", prior="bach")


def test_estimator_prior_multiplies_the_template_probabilities():
    from musicssl.dsp.cqt import log_compress
    from musicssl.key.estimator import combine_with_prior
    from musicssl.key.estimator import TemplateKeyEstimator

    torch.manual_seed(1)
    x = log_compress(torch.rand(2, 1, 99, 160) + 0.01)
    bias = torch.randn(24)
    alone, with_prior = _toy_estimator(bias, 3), _toy_estimator(bias, 3, prior="temperley")
    expected = combine_with_prior(alone.probabilities(x), TemplateKeyEstimator("temperley").probabilities(x))
    np.testing.assert_allclose(with_prior.probabilities(x), expected, atol=1e-9)
    assert not np.allclose(with_prior.probabilities(x), alone.probabilities(x), atol=1e-3)


def test_cqt_chroma_prior_reads_the_linear_cqt_not_the_log_cqt_decompressed():
    """Quiet bins below the log-CQT's floor keep their values in the prior's chroma."""
    from musicssl.key.estimator import TemplateKeyEstimator, combine_with_prior
    from musicssl.key.features import KeyFeatures

    rng = np.random.default_rng(3)
    magnitude = (rng.random((99, 160)) * 10.0 ** rng.uniform(-8, 0, (99, 1))).astype(np.float32)
    features = KeyFeatures(magnitude, 160 / 43.07, 43.07)
    bias = torch.randn(24, generator=torch.Generator().manual_seed(4))
    alone, with_prior = _toy_estimator(bias, 1), _toy_estimator(bias, 1, prior="temperley")
    template = TemplateKeyEstimator("temperley")
    expected = combine_with_prior(alone.estimate_features([features])[0].probabilities,
                                  template.probabilities_from_magnitude(magnitude[None])[0])
    np.testing.assert_allclose(with_prior.estimate_features([features])[0].probabilities, expected, atol=1e-9)


def test_chroma_prior_reads_the_features_chroma():
    from musicssl.errors import ConfigError
    from musicssl.key.estimator import combine_with_prior
    from musicssl.key.features import compute_features
    from musicssl.key.estimator import TemplateKeyEstimator

    bias = torch.randn(24, generator=torch.Generator().manual_seed(2))
    alone = _toy_estimator(bias, 1)
    with_prior = _toy_estimator(bias, 1, prior="kostka-payne", prior_chroma="chroma")
    assert with_prior.feature_options == {"chroma": True}
    x = np.concatenate([reference_signal(Key(9, "minor"))] * 3)
    features = compute_features(x, alone.frontend_config, sr=22050, chroma=True)
    assert features.chroma.shape == (12, features.magnitude.shape[-1])
    expected = combine_with_prior(alone.estimate_features([features])[0].probabilities,
                                  TemplateKeyEstimator("kostka-payne", chroma="chroma")
                                  .estimate_features([features])[0].probabilities)
    np.testing.assert_allclose(with_prior.estimate_features([features])[0].probabilities, expected, atol=1e-9)
    local = with_prior.estimate_features([features], local=True, window_s=3.0, hop_s=1.0)[0].local
    assert len(local) >= 3 and all(w.probabilities.shape == (24,) for w in local)
    with pytest.raises(ConfigError, match="chroma"):
        with_prior.estimate_features([compute_features(x, alone.frontend_config, sr=22050)])
    with pytest.raises(ConfigError, match="chroma"):
        with_prior.probabilities(torch.zeros(1, 1, 99, 160))


def test_prior_needs_a_24_key_model():
    from musicssl.errors import ConfigError
    from musicssl.dsp.cqt import FrontEndConfig
    from musicssl.key.estimator import KeyEstimator

    class _Signature(torch.nn.Module):
        n_rows = 1

        def forward(self, x):
            return torch.full((x.shape[0], 12), 1 / 12)

    calibration = {"n_rows": 1, "row_modes": ["signature"], "row_offsets": [0]}
    with pytest.raises(ConfigError, match="needs a 24-key model"):
        KeyEstimator(_Signature(), FrontEndConfig(), calibration, prior="krumhansl")
    with pytest.raises(ConfigError, match="prior weight"):
        KeyEstimator(_PitchClassNet(torch.zeros(24)), FrontEndConfig(),
                     {"n_rows": 2, "row_modes": ["major", "minor"], "row_offsets": [0, 0]},
                     prior="krumhansl", prior_weight=-1.0)


def test_default_model_names_the_nocturne_key(shared_fixtures):
    """Regression check on the one real recording: the default (network × Kostka-Payne prior)
    names E-flat major; the network alone (skey-band) names F minor, whose key signature
    (4 flats) neighbours E-flat major's (3 flats) on the circle of fifths (model card)."""
    from musicssl.key.features import compute_features
    from musicssl.key.registry import load_estimator

    default, alone = load_estimator("default"), load_estimator("default", prior="none")
    features = compute_features(shared_fixtures / "nocturne_n02_in_e-flat_major.mp3", default.frontend_config,
                                **default.feature_options)
    assert default.estimate_features([features])[0].key == Key(3, "major")
    answer = alone.estimate_features([features])[0].key
    assert answer.mode == "minor" and answer.relative.tonic in (3, 8, 10)   # Eb, Ab or Bb signature


def test_temperature_is_validated_and_applied():
    from musicssl.errors import ConfigError
    from musicssl.key.estimator import KeyEstimator
    from musicssl.key.registry import load_estimator

    net = load_estimator("skey-debian", transpositions=1)
    with pytest.raises(ConfigError):
        KeyEstimator(net.model, net.frontend_config, net.calibration, temperature=0.0)
    hot = KeyEstimator(net.model, net.frontend_config, net.calibration, transpositions=1, temperature=3.0)
    x = np.concatenate([reference_signal(Key(2, "major"))] * 2)
    a, b = net.estimate(x, 22050), hot.estimate(x, 22050)
    assert a.key == b.key and b.probabilities.max() < a.probabilities.max()
