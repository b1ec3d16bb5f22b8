"""Transposition crops in one call (ChromaNet.forward_crops) give the same probabilities
as one network pass per crop, for random weights and for the released and shipped models."""

import numpy as np
import pytest
import torch
from conftest import harmonic_tone

from musicssl.dsp.cqt import KEY_FRONTEND, crop_bins, log_compress
from musicssl.errors import ConfigError
from musicssl.key.checkpoint import default_model_path
from musicssl.key.estimator import KeyEstimator
from musicssl.key.features import magnitude_cqt
from musicssl.key.model import ChromaNet


def _one_pass_per_crop(model, x, offsets):
    with torch.inference_mode():
        return torch.stack([model(crop_bins(x, o, model.n_bins)) for o in offsets], dim=1)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("batch,frames", [(1, 1292), (3, 200), (1, 17000)])
def test_forward_crops_equals_one_pass_per_crop_random_weights(batch, frames, batched, monkeypatch):
    import musicssl.key.model

    monkeypatch.setattr(musicssl.key.model, "BATCH_CROPS_ON_CPU", batched)   # the GPU path, on CPU
    torch.manual_seed(0)
    model = ChromaNet().eval()
    for p in model.parameters():      # move weights away from their initialisation
        p.data += 0.05 * torch.randn_like(p)
    x = torch.rand(batch, 1, 99, frames)
    offsets = range(12)
    with torch.inference_mode():
        shared = model.forward_crops(x, offsets)
    assert shared.shape == (batch, 12, 24)
    np.testing.assert_allclose(shared.numpy(), _one_pass_per_crop(model, x, offsets).numpy(),
                               atol=1e-6, rtol=0)


def test_forward_crops_rejects_offsets_outside_the_spectrogram():
    model = ChromaNet().eval()
    x = torch.rand(1, 1, 99, 256)
    with pytest.raises(ConfigError):
        model.forward_crops(x, [0, 16])
    with pytest.raises(ConfigError):
        model.forward_crops(x[:, 0], [0])


def _old_native_probabilities(estimator, logcqt):
    """The former estimator path: one network pass per crop, rotated back and averaged."""
    total = 0
    with torch.inference_mode():
        for o in range(estimator.transpositions):
            out = estimator.model(crop_bins(logcqt, o, 84)).float()
            total = total + out.view(out.shape[0], -1, 12).roll(o, dims=-1).flatten(1)
    return (total / estimator.transpositions).numpy()


def _check_estimator(model, calibration):
    estimator = KeyEstimator(model, KEY_FRONTEND, calibration, transpositions=12)
    sr = KEY_FRONTEND.sr
    tones = sum(harmonic_tone(f, 20.0, sr) for f in (261.63, 329.63, 392.0))
    mags = np.stack([magnitude_cqt(tones, KEY_FRONTEND), magnitude_cqt(np.roll(tones, 999) * 0.3, KEY_FRONTEND)])
    logcqt = log_compress(torch.as_tensor(mags)[:, None])
    new = estimator.native_probabilities(logcqt)
    np.testing.assert_allclose(new, _old_native_probabilities(estimator, logcqt), atol=1e-5, rtol=0)
    random = log_compress(torch.rand(2, 1, 99, 700) + 1e-3)
    np.testing.assert_allclose(estimator.native_probabilities(random),
                               _old_native_probabilities(estimator, random), atol=1e-5, rtol=0)


def test_estimator_probabilities_unchanged_released_checkpoint(shared_fixtures):
    from musicssl.key.checkpoint import load_key_model

    loaded = load_key_model(shared_fixtures / "skey.pt")
    # SPEC §1.6: row 0 column j = major key on A + j, row 1 column j = minor key on B + j
    _check_estimator(loaded.model, {"n_rows": 2, "row_modes": ["major", "minor"], "row_offsets": [9, 11]})


def test_estimator_probabilities_unchanged_shipped_model():
    from musicssl.key.checkpoint import load_key_model

    path = default_model_path()
    if path is None:
        pytest.skip("this build ships no key model")
    loaded = load_key_model(path)
    _check_estimator(loaded.model, loaded.calibration)
