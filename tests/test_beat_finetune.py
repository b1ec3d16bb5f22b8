"""Few-shot fine-tuning: BCE on widened targets goes down; labelled songs are read; CLI."""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch

from beat_synth import SR, drum_track
from musicssl.beat.finetune import FinetuneConfig, SongExample, finetune_model, read_labelled_songs
from musicssl.beat.losses import widened_beat_targets
from musicssl.beat.model import ZeroNS
from musicssl.beat.checkpoint import load_zerons_model, save_zerons_model
from musicssl.cli.main import main


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
    tuned, history = finetune_model(model, songs, FinetuneConfig(epochs=12, lr=3e-3, clip_seconds=3.0),
                                    log=None)
    assert history[-1] < 0.7 * history[0]
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
                 "--epochs", "2"]) == 0
    model, meta = load_zerons_model(out / "zerons_finetuned.safetensors")
    assert meta["provenance"]["finetuned"]["songs"] == [str(tmp_path / "song.wav")]
