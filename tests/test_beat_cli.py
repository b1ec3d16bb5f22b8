"""``musicssl beats`` end to end on short synthetic files."""

from __future__ import annotations

import json

import mir_eval
import numpy as np
import pytest
import soundfile as sf
import torch

from beat_synth import SR, click_track, drum_track
from musicssl.beat.estimator import DEFAULT_CHECKPOINT
from musicssl.beat.model import ZeroNS
from musicssl.beat.checkpoint import save_zerons_model
from musicssl.cli.main import main


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    root = tmp_path_factory.mktemp("beats_cli")
    clicks, times = click_track(12.0, 120)
    sf.write(root / "clicks.wav", clicks, SR)
    drums, _ = drum_track(6.0, 100)
    sf.write(root / "drums.flac", drums, SR)
    torch.manual_seed(0)
    ckpt = save_zerons_model(root / "tiny.safetensors", ZeroNS(width=1 / 16))
    return root, times, ckpt


def test_outputs_side_files_and_errors(audio, tmp_path, capsys):
    root, _, ckpt = audio
    out = tmp_path / "beats.jsonl"
    code = main(["beats", str(root / "drums.flac"), str(root / "missing.wav"), "--checkpoint", str(ckpt),
                 "-o", str(out), "--beats-dir", str(tmp_path / "b"), "--activations", str(tmp_path / "a"),
                 "--plot", str(tmp_path / "p")])
    assert code == 1  # one input failed
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ok = [r for r in records if not r.get("error")]
    bad = [r for r in records if r.get("error")]
    assert len(ok) == 1 and len(bad) == 1 and bad[0]["path"].endswith("missing.wav")
    beats_file = np.loadtxt(tmp_path / "b" / "drums.beats", ndmin=2)   # time, beat-in-bar (--meter 4)
    assert np.allclose(beats_file[:, 0], ok[0]["beats"], atol=1e-3)
    assert beats_file[:, 1].astype(int).tolist() == ok[0]["beat_numbers"] and ok[0]["beats_per_bar"] == 4
    act = np.load(tmp_path / "a" / "drums.npy")
    assert act.shape == (6 * SR // 256 + 1,)
    assert (tmp_path / "p" / "drums.png").stat().st_size > 1000
    # resume: the good file is kept, only the missing one is retried
    code = main(["beats", str(root / "drums.flac"), str(root / "missing.wav"), "--checkpoint", str(ckpt),
                 "-o", str(out), "--skip-existing"])
    assert code == 1
    assert "1 of 2 files already" in capsys.readouterr().err


def test_csv_and_librosa_tracker(audio, tmp_path):
    root, _, ckpt = audio
    out = tmp_path / "beats.csv"
    assert main(["beats", str(root / "drums.flac"), "--checkpoint", str(ckpt), "--tracker", "librosa",
                 "-o", str(out)]) == 0
    header, row = out.read_text().splitlines()[:2]
    assert header.startswith("path,tempo_bpm,n_beats") and "librosa" in row


@pytest.mark.skipif(not DEFAULT_CHECKPOINT.is_file(), reason="the default ZeroNS model is not shipped")
def test_default_model_finds_the_clicks(audio, capsys):
    root, times, _ = audio
    assert main(["beats", str(root / "clicks.wav"), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    est = np.asarray(record["beats"])
    f = mir_eval.beat.f_measure(mir_eval.beat.trim_beats(times, 2.0), mir_eval.beat.trim_beats(est, 2.0))
    assert f > 0.8, (f, est)
    assert record["tempo_bpm"] == pytest.approx(120, rel=0.1) or record["tempo_bpm"] == pytest.approx(60, rel=0.1)


def test_default_is_the_onset_tracker_and_zerons_is_one_flag_away(audio, tmp_path, capsys):
    root, _, ckpt = audio
    drums, times = drum_track(20.0, 100)
    sf.write(tmp_path / "drums20.wav", drums, SR)
    assert main(["beats", str(tmp_path / "drums20.wav"), "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    assert record["tracker"] == "onset+dbn"
    f = mir_eval.beat.f_measure(mir_eval.beat.trim_beats(np.asarray(times)),
                                mir_eval.beat.trim_beats(np.asarray(record["beats"])))
    assert f > 0.9, f
    assert record["tempo_bpm"] == pytest.approx(100, rel=0.04)
    assert main(["beats", str(root / "drums.flac"), "--checkpoint", str(ckpt), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["tracker"] == "zerons+dbn"
    assert main(["beats", str(root / "drums.flac"), "--activation", "onset", "--tracker", "librosa",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["tracker"] == "onset+librosa"
    assert main(["beats", str(root / "drums.flac"), "--activation", "onset",
                 "--checkpoint", str(ckpt)]) == 2


@pytest.mark.parametrize("lo,hi", [(90.0, 110.0), (150.0, 215.0), (55.0, 80.0)])
def test_cli_tempo_stays_inside_min_and_max_bpm(audio, capsys, lo, hi):
    root, _, ckpt = audio
    for extra in ([], ["--checkpoint", str(ckpt)]):
        assert main(["beats", str(root / "clicks.wav"), "--format", "json", "--min-bpm", str(lo),
                     "--max-bpm", str(hi), *extra]) == 0
        record = json.loads(capsys.readouterr().out)[0]
        assert lo <= record["tempo_bpm"] <= hi, (extra, record["tempo_bpm"])


def test_plot_window_and_title(audio, tmp_path, monkeypatch):
    import argparse

    from musicssl.cli import beats as beats_cli

    assert beats_cli.parse_plot_window("10:30") == (10.0, 30.0)
    assert beats_cli.parse_plot_window("60:") == (60.0, None)
    for bad in ("30:10", "a:b", "5", "-1:4"):
        with pytest.raises(argparse.ArgumentTypeError):
            beats_cli.parse_plot_window(bad)
    titles = []
    import matplotlib.axes

    original = matplotlib.axes.Axes.set_title
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title",
                        lambda self, text, *a, **k: (titles.append(text), original(self, text, *a, **k))[1])
    root, _, _ = audio
    assert main(["beats", str(root / "clicks.wav"), "--plot", str(tmp_path / "p"),
                 "--plot-window", "2:6"]) == 0
    assert (tmp_path / "p" / "clicks.png").stat().st_size > 1000
    assert titles and "BPM" in titles[-1] and "onset+dbn" in titles[-1] and "2.0-6.0 s" in titles[-1]
