"""Few-shot fine-tuning: BCE on widened targets goes down, the activation learns the beats of
held-out synthetic songs, the readout travels with the model file; labelled songs are read; CLI."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from beat_synth import SR, chord_track, drum_track
from musicssl.beat.estimator import BeatEstimator
from musicssl.beat.finetune import (
    FINETUNED_DBN_PARAMS,
    FinetuneConfig,
    SongExample,
    _batch,
    finetune_model,
    finetuned_estimator,
    read_labelled_songs,
)
from musicssl.beat.checkpoint import load_zerons_model, save_zerons_model
from musicssl.beat.frontend import FPS
from musicssl.beat.losses import widened_beat_targets
from musicssl.beat.model import ZeroNS
from musicssl.cli.main import main
from musicssl.errors import ConfigError
from musicssl.evaluation.beat_metrics import activation_probe


def _song(rng, t=200, period=25):
    beats = np.arange(5, t, period)
    perc = np.full((96, t), -10.0, np.float32)
    rest = np.full((96, t), -10.0, np.float32)
    perc[:, beats] = 0.0
    rest[30:40, :] += rng.standard_normal((10, t)).astype(np.float32)
    return SongExample("toy", perc, rest, widened_beat_targets(beats / 62.5, t, 62.5))


def test_finetuning_lowers_the_bce():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    songs = [_song(rng, period=p) for p in (20, 25, 31)]
    model = ZeroNS(width=1 / 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, history = finetune_model(model, songs, FinetuneConfig(steps=40, lr=3e-3, clip_seconds=3.0),
                                    log=None)
    assert np.mean(history[-5:]) < 0.7 * np.mean(history[:5])
    assert not tuned.training
    # the original model is left untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not all(torch.equal(before[k], v) for k, v in tuned.state_dict().items())


def test_read_labelled_songs_and_cli(tmp_path):
    drums, beats = drum_track(4.0, 120)
    sf.write(tmp_path / "song.wav", drums, SR)
    (tmp_path / "song.beats").write_text("".join(f"{b:.3f}\t{i % 4 + 1}\n" for i, b in enumerate(beats)))
    pairs = read_labelled_songs(tmp_path)
    assert len(pairs) == 1 and np.allclose(pairs[0][1], beats, atol=1e-3)
    torch.manual_seed(0)
    init = save_zerons_model(tmp_path / "init.safetensors", ZeroNS(width=1 / 16))
    out = tmp_path / "tuned"
    assert main(["train-beats", "--finetune", str(tmp_path), "--init", str(init), "--out", str(out),
                 "--steps", "2"]) == 0
    _, meta = load_zerons_model(out / "zerons_finetuned.safetensors")
    assert meta["provenance"]["finetuned"]["songs"] == [str(tmp_path / "song.wav")]
    assert meta["provenance"]["finetuned"]["config"]["steps"] == 2
    # the file carries its readout; the estimator uses it unless told otherwise
    assert meta["readout"] == FinetuneConfig().readout()
    est = BeatEstimator.from_checkpoint(out / "zerons_finetuned.safetensors")
    assert est.combine == "mean" and est.rescale is False
    assert est.tracker_params == FINETUNED_DBN_PARAMS
    est = BeatEstimator.from_checkpoint(out / "zerons_finetuned.safetensors", combine="max",
                                        tracker_params={"prior_bpm": 100.0})
    assert est.combine == "max" and est.tracker_params["prior_bpm"] == 100.0
    assert est.tracker_params["observation_lambda"] == FINETUNED_DBN_PARAMS["observation_lambda"]
    # a pretext model without a readout keeps the former defaults
    assert BeatEstimator.from_checkpoint(init).combine == "max"
    assert BeatEstimator.from_checkpoint(init).rescale is True


def test_bad_finetune_settings_are_config_errors():
    for bad in ({"steps": 0}, {"train": "body"}, {"init_rate": 1.5}, {"lr": 0.0}, {"stretch": 1.0}):
        with pytest.raises(ConfigError):
            FinetuneConfig(**bad)


def _synthetic_songs(estimator, n, seed):
    """Drum + chord mixes at random tempi -> SongExamples (features by ``estimator``)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        bpm = float(rng.uniform(85, 150))
        drums, beats = drum_track(12.0, bpm, seed=seed * 10 + i)
        mix = 0.5 * drums + 0.5 * chord_track(12.0, change_s=float(rng.uniform(1.5, 3.0)))
        fp, fa = estimator.features(*estimator.separate(mix.astype(np.float32)))
        out.append((SongExample(f"s{i}", fp, fa, widened_beat_targets(beats, fp.shape[-1], FPS)), beats))
    return out


def _mean_auc(estimator, songs):
    aucs = []
    for song, beats in songs:
        act = estimator.combine_outputs(*estimator.network_outputs(song.percussive, song.non_percussive))
        aucs.append(activation_probe(act, beats, FPS, trim=1.0, max_lag_frames=0)["beat_auc"])
    return float(np.mean(aucs))


def test_finetuned_activation_peaks_on_held_out_beats():
    """The untrained network does not prefer beat frames; after the recipe's fine-tuning on
    3 synthetic songs the activation of 2 other songs (other tempi) is high on their beats."""
    torch.manual_seed(0)
    untrained = ZeroNS(width=1 / 16)
    est = BeatEstimator(untrained)
    train = [s for s, _ in _synthetic_songs(est, 3, seed=1)]
    held_out = _synthetic_songs(est, 2, seed=2)
    before = _mean_auc(est, held_out)
    cfg = FinetuneConfig(steps=30, clip_seconds=3.0)
    tuned, history = finetune_model(untrained, train, cfg, log=None)
    after = _mean_auc(finetuned_estimator(tuned, cfg), held_out)
    assert before < 0.65
    assert after > 0.85 and after > before + 0.2
    assert np.mean(history[-10:]) < np.mean(history[:10])


def test_stretched_windows_keep_targets_on_the_beats():
    """Time-stretch augmentation: the rebuilt targets stay on the (moved) attacks of the features."""
    rng = np.random.default_rng(3)
    song = _song(rng, t=400, period=25)
    song.beat_frames = np.arange(5, 400, 25).astype(float)
    xp, _, y, mask = _batch([song] * 16, 150, rng, stretch=0.25)
    assert xp.shape == (16, 1, 96, 150) and mask.sum() > 0
    attack = xp[:, 0].mean(dim=1) > -7.0  # within 0.63 frame of an attack (0 dB among -10)
    on = y >= 1.0
    assert on.sum() > 16 * 3
    assert bool(attack[on].all())
    # the beat spacing follows the stretch: not always the original 25 frames
    gaps = {int(np.diff(np.flatnonzero(row.numpy()))[0]) for row in on if row.sum() >= 2}
    assert len(gaps) > 2
