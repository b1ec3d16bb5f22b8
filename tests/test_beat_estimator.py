"""BeatEstimator: frame rate, chunking, decoders, errors (tiny random model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from beat_synth import SR, drum_track
from musicssl.beat.estimator import BeatEstimator, BeatResult, track_beats
from musicssl.beat.model import ZeroNS
from musicssl.beat.checkpoint import save_zerons_model
from musicssl.errors import AudioError, ConfigError


@pytest.fixture(scope="module")
def tiny_estimator():
    torch.manual_seed(0)
    return BeatEstimator(ZeroNS(width=1 / 16).eval())


def test_activation_frame_rate(tiny_estimator):
    x, _ = drum_track(3.0, 120)
    act, fps = tiny_estimator.activation(x, SR)
    assert fps == 62.5
    assert act.shape == (len(x) // 256 + 1,)
    assert act.min() >= 0 and act.max() <= 1  # each output rescaled to [0, 1] over the file
    # another sample rate: the activation still has 62.5 frames per second of audio
    x44 = np.repeat(x, 2)  # 32 kHz
    act32, _ = tiny_estimator.activation(x44, 32000)
    assert abs(len(act32) - len(act)) <= 1


def test_chunked_networks_equal_one_pass(tiny_estimator):
    rng = np.random.default_rng(0)
    fp = rng.standard_normal((96, 700)).astype(np.float32)
    fa = rng.standard_normal((96, 700)).astype(np.float32)
    whole = tiny_estimator.network_outputs(fp, fa)
    chunked = BeatEstimator(tiny_estimator.model, chunk_seconds=4.0).network_outputs(fp, fa)
    assert np.allclose(whole[0], chunked[0], atol=1e-5) and np.allclose(whole[1], chunked[1], atol=1e-5)


def test_estimate_result_and_errors(tiny_estimator, tmp_path):
    x, _ = drum_track(4.0, 120)
    res = tiny_estimator.estimate(x, SR)
    assert isinstance(res, BeatResult) and res.fps == 62.5 and res.duration_s == pytest.approx(4.0)
    assert res.activation is not None and np.all(np.diff(res.beats) > 0)
    d = res.to_dict()
    assert d["n_beats"] == len(res.beats) and "activation" not in d
    with pytest.raises(AudioError):
        tiny_estimator.estimate(np.zeros(SR // 4, np.float32) + 0.1, SR)  # 0.25 s: too short
    with pytest.raises(ConfigError):
        BeatEstimator(tiny_estimator.model, tracker="magic")
    path = save_zerons_model(tmp_path / "m.safetensors", tiny_estimator.model)
    again = BeatEstimator.from_checkpoint(path, combine="mean")
    assert again.combine == "mean"


@pytest.mark.parametrize("tracker", ["dbn", "librosa"])
def test_decoders_follow_an_impulse_train(tracker):
    fps = 62.5
    act = np.full(int(20 * fps), 0.02)
    times = np.arange(0.5, 19.5, 0.5)  # 120 BPM
    act[np.round(times * fps).astype(int)] = 0.95
    beats, tempo = track_beats(act, fps, tracker)
    assert tempo == pytest.approx(120, rel=0.05)
    hits = sum(np.min(np.abs(beats - t)) < 0.07 for t in times[2:-2])
    assert hits >= 0.9 * len(times[2:-2])
