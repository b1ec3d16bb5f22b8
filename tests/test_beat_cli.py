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
from musicssl.checkpoint import save_zerons_model
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
    beats_file = np.loadtxt(tmp_path / "b" / "drums.beats", ndmin=1)
    assert np.allclose(beats_file, ok[0]["beats"], atol=1e-3)
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
