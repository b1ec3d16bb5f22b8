"""``musicssl evaluate-beats`` end to end on synthesised click tracks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from musicssl.cli.main import main


def click_track(path, bpm: float, duration: float = 20.0, sr: int = 22050, start: float = 0.5):
    """Write a click track (decaying 1 kHz bursts) and return the beat times (s)."""
    beats = np.arange(start, duration - 0.2, 60.0 / bpm)
    y = np.zeros(int(duration * sr), dtype=np.float32)
    n = int(0.05 * sr)
    burst = (np.sin(2 * np.pi * 1000 * np.arange(n) / sr) * np.exp(-np.arange(n) / (0.01 * sr)))
    for t in beats:
        i = int(round(t * sr))
        y[i:i + n] += burst[: len(y) - i].astype(np.float32)
    sf.write(path, 0.5 * y, sr)
    return beats


@pytest.fixture()
def folder(tmp_path):
    audio = tmp_path / "audio"
    audio.mkdir()
    ann = tmp_path / "ann"
    ann.mkdir()
    for name, bpm in [("a", 100.0), ("b", 128.0)]:
        beats = click_track(audio / f"{name}.wav", bpm)
        (ann / f"{name}.beats").write_text("".join(f"{t:.4f}\t{i % 4 + 1}\n" for i, t in enumerate(beats)))
    click_track(audio / "unannotated.wav", 90.0)
    return tmp_path


def test_folder_dataset_with_dbn_tracker(folder, capsys):
    out = folder / "results"
    rc = main(["evaluate-beats", "--dataset", "folder", str(folder / "audio"),
               "--annotations", str(folder / "ann"), "--tracker", "librosa-dbn",
               "--out", str(out), "--per-file"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "2 annotated audio files, 1 audio files without annotation" in captured.err
    table = [line for line in captured.out.splitlines() if line.startswith("librosa-dbn ")]
    assert len(table) == 1 and float(table[0].split()[1]) >= 0.9  # F-measure column
    summary = json.loads((out / "summary.json").read_text())
    assert summary["trackers"]["librosa-dbn"]["files"] == 2
    assert summary["trackers"]["librosa-dbn"]["mean"]["F-measure"] >= 0.9
    lines = (out / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("id,tracker,n_reference,n_estimated,F-measure") and len(lines) == 3
    estimated = np.loadtxt(out / "librosa-dbn" / "a.beats")
    assert abs(len(estimated) - len(np.arange(0.5, 19.8, 0.6))) <= 2


def test_unknown_tracker_is_a_usage_error(folder, capsys):
    rc = main(["evaluate-beats", "--dataset", "folder", str(folder / "audio"),
               "--annotations", str(folder / "ann"), "--tracker", "nonexistent-tracker"])
    assert rc == 2
    assert "unknown tracker" in capsys.readouterr().err


def test_missing_dataset_is_a_usage_error(tmp_path, capsys):
    rc = main(["evaluate-beats", "--dataset", "dev-synth", str(tmp_path / "nope"), "--tracker", "librosa"])
    assert rc == 2
    assert "not found" in capsys.readouterr().err


def test_bad_annotation_is_reported_and_exit_status_is_one(folder, capsys):
    (folder / "ann" / "b.beats").write_text("0.5\nnot-a-time\n")
    rc = main(["evaluate-beats", "--dataset", "folder", str(folder / "audio"),
               "--annotations", str(folder / "ann"), "--tracker", "librosa-dbn", "--metrics", "core"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "b.beats:2" in captured.err and "failed: b" in captured.err
    assert captured.out.splitlines()[0].split() == ["tracker", "F-measure", "CMLt", "AMLt"]


def test_librosa_tracker(folder, capsys):
    rc = main(["evaluate-beats", "--dataset", "folder", str(folder / "audio"),
               "--annotations", str(folder / "ann"), "--tracker", "librosa", "--limit", "1"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    row = next(line for line in captured.out.splitlines() if line.startswith("librosa "))
    assert float(row.split()[1]) >= 0.8


def test_zerons_checkpoint_tracker_runs(folder, capsys):
    """An (untrained) ZeroNS checkpoint as tracker: the pipeline runs and is scored."""
    from musicssl.beat.model import ZeroNS
    from musicssl.beat.checkpoint import save_zerons_model

    checkpoint = save_zerons_model(folder / "tiny.safetensors", ZeroNS(width=0.25))
    rc = main(["evaluate-beats", "--dataset", "folder", str(folder / "audio"),
               "--annotations", str(folder / "ann"), "--tracker", str(checkpoint), "--limit", "1",
               "--checkpoint", str(checkpoint), "--tracker", "zerons", "--tracker", "zerons-librosa",
               "--out", str(folder / "res")])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    for label in ("tiny", "zerons", "zerons-librosa"):
        row = next(line for line in captured.out.splitlines() if line.startswith(label + " "))
        assert 0.0 <= float(row.split()[1]) <= 1.0
        assert (folder / "res" / label / "a.beats").is_file()
    # same model, same DBN: the checkpoint tracker and "zerons --checkpoint" agree
    assert (folder / "res" / "tiny" / "a.beats").read_text() == \
        (folder / "res" / "zerons" / "a.beats").read_text()


def test_missing_checkpoint_is_a_usage_error(folder, capsys):
    rc = main(["evaluate-beats", "--dataset", "folder", str(folder / "audio"),
               "--annotations", str(folder / "ann"), "--tracker", str(folder / "nope.safetensors")])
    assert rc == 2
    assert "unknown tracker" in capsys.readouterr().err


def test_default_tracker_is_the_onset_tracker(folder, capsys):
    rc = main(["evaluate-beats", "--dataset", "folder", str(folder / "audio"),
               "--annotations", str(folder / "ann"), "--metrics", "core"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    table = [line for line in captured.out.splitlines() if line.startswith("onset ")]
    assert len(table) == 1 and float(table[0].split()[1]) >= 0.9
