"""``musicssl key`` end to end: formats, notations, probabilities, local keys,
bad files, resume after an interruption, atomic output, tags, usage errors.

Most tests use a small stand-in estimator (the loudest pitch class of a
synthetic tone is the tonic of a major key) behind the real audio loader, so
they check the command and not the network; the tests at the end go through
the real estimator path.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicssl.cli.main import main
from musicssl.keys import KEY_LABELS, Key, format_key

SR = 22050
EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "musicssl" / "data" / "examples" / "ode_to_joy_d_major.ogg"


# --- a stand-in estimator -----------------------------------------------------------

class FakeFeatures:
    def __init__(self, pitch_class: int, duration_s: float, path: str):
        self.pitch_class, self.duration_s, self.path = pitch_class, duration_s, path


def fake_compute_features(source, frontend_config=None, *, device="cpu", **_):
    """Real decoding (musicssl.io.audio) + the pitch class of the strongest FFT peak."""
    from musicssl.io.audio import load_audio

    samples = load_audio(source, sr=SR)
    spectrum = np.abs(np.fft.rfft(samples))
    freq = np.fft.rfftfreq(len(samples), 1 / SR)[np.argmax(spectrum[1:]) + 1]
    pitch_class = int(round(69 + 12 * np.log2(freq / 440.0))) % 12
    return FakeFeatures(pitch_class, len(samples) / SR, str(source))


class FakeEstimator:
    """Probability 0.7 on the major key of the loudest pitch class, 0.2 on its relative minor."""

    frontend_config = None
    name = "fake"

    def __init__(self, interrupt_after: int | None = None):
        self.calls = []
        self.interrupt_after = interrupt_after

    def estimate_features(self, features, local=False, window_s=20.0, hop_s=5.0):
        from musicssl.key.results import LocalKey, result_from_probabilities

        self.calls.append(len(features))
        if self.interrupt_after is not None and sum(self.calls) > self.interrupt_after:
            raise KeyboardInterrupt
        results = []
        for f in features:
            probs = np.full(24, 0.1 / 22)
            major = Key(f.pitch_class, "major")
            probs[major.index], probs[major.relative.index] = 0.7, 0.2
            windows = None
            if local:  # first half in the key, second half in its dominant
                half = f.duration_s / 2
                dominant = np.roll(probs[:12], 7).tolist() + np.roll(probs[12:], 7).tolist()
                windows = [LocalKey(0.0, half, major, 0.5, probs),
                           LocalKey(half, f.duration_s, major.transpose(7), 0.5, np.array(dominant))]
            results.append(result_from_probabilities(probs, f.duration_s, path=f.path, local=windows))
        return results


@pytest.fixture
def fake(monkeypatch):
    estimator = FakeEstimator()
    monkeypatch.setattr("musicssl.cli.key.load_key_estimator", lambda args: estimator)
    monkeypatch.setattr("musicssl.key.analysis.compute_features", fake_compute_features)
    return estimator


def tone(path: Path, midi: int, seconds: float = 1.0, fmt: str | None = None, subtype: str | None = None,
         sr: int = SR) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    sf.write(path, (0.4 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr, format=fmt, subtype=subtype)
    return path


@pytest.fixture
def music(tmp_path):
    """A folder with tones in C, G and Eb (pitch classes 0, 7, 3) in three formats."""
    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    tone(folder / "c.wav", 60)
    tone(folder / "sub" / "g.flac", 67)
    tone(folder / "eb.ogg", 63)
    return folder


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["key", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- formats ----------------------------------------------------------------------------

def test_default_text_output_one_line_per_file(fake, music, capsys):
    code, out, err = run_cli(capsys, music)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    rows = {Path(p).name: (key, float(conf)) for p, key, conf in (line.split("\t") for line in lines)}
    assert rows == {"c.wav": ("C major", 0.5), "eb.ogg": ("Eb major", 0.5), "g.flac": ("G major", 0.5)}


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_json_records_carry_all_24_probabilities_in_canonical_order(fake, music, capsys, fmt):
    code, out, _ = run_cli(capsys, music / "c.wav", music / "eb.ogg", "--format", fmt)
    assert code == 0
    records = json.loads(out) if fmt == "json" else [json.loads(line) for line in out.splitlines()]
    assert [Path(r["path"]).name for r in records] == ["c.wav", "eb.ogg"]
    for record in records:
        assert {"path", "key", "confidence", "probabilities"} <= set(record)
        assert list(record["probabilities"]) == list(KEY_LABELS)
        assert list(record["probabilities"])[0] == "C major" and list(record["probabilities"])[-1] == "B minor"
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert records[1]["key"] == "Eb major"
    assert records[1]["probabilities"]["Eb major"] == pytest.approx(0.7)
    assert records[1]["probabilities"]["C minor"] == pytest.approx(0.2)


def test_csv_with_probabilities_has_one_column_per_key(fake, music, capsys, tmp_path):
    out_file = tmp_path / "keys.csv"
    code, out, _ = run_cli(capsys, music, "-o", out_file, "--probabilities")
    assert code == 0 and out == ""
    rows = list(csv.DictReader(io.StringIO(out_file.read_text())))
    assert len(rows) == 3
    header = out_file.read_text().splitlines()[0].split(",")
    assert header[:3] == ["path", "key", "confidence"]
    assert [h for h in header if h in KEY_LABELS] == list(KEY_LABELS)
    g = next(r for r in rows if r["path"].endswith("g.flac"))
    assert g["key"] == "G major" and float(g["G major"]) == pytest.approx(0.7)


def test_text_probabilities_lists_all_24_keys(fake, music, capsys):
    code, out, _ = run_cli(capsys, music / "c.wav", "--probabilities")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("\tC major\t0.500")
    body = "\n".join(lines[1:])
    assert len(lines) == 13 and all(label in body for label in KEY_LABELS)


@pytest.mark.parametrize("notation, expected", [("standard", "Eb major"), ("camelot", "5B"),
                                                ("openkey", "10d"), ("tkey", "Eb")])
def test_notations(fake, music, capsys, notation, expected):
    code, out, _ = run_cli(capsys, music / "eb.ogg", "--notation", notation, "--format", "jsonl")
    record = json.loads(out)
    assert code == 0 and record["key"] == expected == format_key(Key(3, "major"), notation)
    assert "Eb major" in record["probabilities"]  # probability labels stay mir_eval labels


def test_local_segments(fake, music, capsys):
    code, out, _ = run_cli(capsys, music / "c.wav", "--local", "--window", "0.5", "--hop", "0.25",
                           "--format", "jsonl")
    record = json.loads(out)
    assert code == 0
    assert [w["key"] for w in record["local"]] == ["C major", "G major"]
    assert [(s["start"], s["end"], s["key"]) for s in record["segments"]] == [
        (0.0, 0.5, "C major"), (0.5, 1.0, "G major")]
    code, out, _ = run_cli(capsys, music / "c.wav", "--local")
    assert code == 0 and "G major" in out.splitlines()[2]


def test_progress_bar_only_on_a_terminal(fake, music, capsys, monkeypatch, tmp_path):
    code, _, err = run_cli(capsys, music, "-o", tmp_path / "a.jsonl")
    assert code == 0 and "3/3" not in err  # stderr is not a terminal here
    monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
    code, _, err = run_cli(capsys, music, "-o", tmp_path / "b.jsonl")
    assert code == 0 and "3/3" in err
    code, _, err = run_cli(capsys, music, "-o", tmp_path / "c.jsonl", "--no-progress")
    assert code == 0 and "3/3" not in err


# --- errors --------------------------------------------------------------------------

def test_bad_files_give_error_records_and_exit_1(fake, music, capsys):
    (music / "broken.mp3").write_bytes(b"this is not an mp3 file at all" * 10)
    (music / "empty.wav").write_bytes(b"")
    sf.write(music / "silent.wav", np.zeros(SR, dtype=np.float32), SR)
    code, out, err = run_cli(capsys, music, music / "missing.wav", "--format", "jsonl")
    assert code == 1
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert set(records) == {"c.wav", "eb.ogg", "broken.mp3", "empty.wav", "silent.wav", "missing.wav", "g.flac"}
    assert records["c.wav"]["key"] == "C major"
    for name in ("broken.mp3", "empty.wav", "silent.wav", "missing.wav"):
        assert records[name]["error"].endswith("Error") and records[name]["message"], records[name]
    assert records["missing.wav"]["error"] == "AudioFileNotFoundError"
    assert records["silent.wav"]["error"] == "SilentAudioError"
    assert "4 of 7 files failed" in err


def test_error_lines_in_text_output(fake, music, capsys):
    (music / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    code, out, _ = run_cli(capsys, music / "broken.wav", music / "c.wav")
    assert code == 1
    first = out.splitlines()[0].split("\t")
    assert first[0].endswith("broken.wav") and first[1] == "ERROR" and first[2].startswith("AudioDecodeError: ")


@pytest.mark.parametrize("args, message", [
    (["--format", "xml"], "invalid choice"),
    (["--notation", "roman"], "invalid choice"),
    (["--window", "0"], "positive"),
    (["--jobs", "0"], "at least 1"),
    (["--transpositions", "0"], "at least 1"),
    (["--model", "krumhansl", "--checkpoint", "x.pt"], "not allowed with"),
    (["--dry-run"], "--write-tags"),
    (["--id3-version", "3"], "--write-tags"),
    (["--write-tags", "--id3-version", "2"], "invalid choice"),
    (["--skip-existing"], "-o"),
])
def test_usage_errors_exit_2(fake, music, capsys, args, message):
    try:
        code = main(["key", str(music), *args])
    except SystemExit as exc:  # argparse's own errors exit directly
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_no_input_files_is_a_usage_error(fake, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("no audio here")
    code, out, err = run_cli(capsys, tmp_path, str(tmp_path / "*.mp3"))
    assert code == 2 and out == ""
    assert "no audio files found" in err


def test_missing_checkpoint_is_a_usage_error(music, capsys, tmp_path):
    code, _, err = run_cli(capsys, music / "c.wav", "--checkpoint", tmp_path / "nope.pt")
    assert code == 2 and "nope.pt" in err


# --- resume and atomic output ---------------------------------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "csv", "json"])
def test_interrupted_run_loses_nothing_and_resumes(monkeypatch, tmp_path, capsys, fmt):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(6):
        tone(folder / f"t{i}.wav", 60 + i, seconds=0.5)
    out_file = tmp_path / f"keys.{fmt}"
    monkeypatch.setattr("musicssl.key.analysis.compute_features", fake_compute_features)

    interrupted = FakeEstimator(interrupt_after=2)
    monkeypatch.setattr("musicssl.cli.key.load_key_estimator", lambda args: interrupted)
    code, _, err = run_cli(capsys, folder, "-o", out_file, "--batch-size", "1")
    assert code == 130 and "--skip-existing" in err
    assert not Path(str(out_file) + ".partial").exists()

    def paths_in(file):
        text = file.read_text()
        if fmt == "jsonl":
            return [json.loads(line)["path"] for line in text.splitlines()]
        if fmt == "json":
            return [r["path"] for r in json.loads(text)]
        return [row["path"] for row in csv.DictReader(io.StringIO(text))]

    assert [Path(p).name for p in paths_in(out_file)] == ["t0.wav", "t1.wav"]

    resumed = FakeEstimator()
    monkeypatch.setattr("musicssl.cli.key.load_key_estimator", lambda args: resumed)
    code, _, err = run_cli(capsys, folder, "-o", out_file, "--skip-existing", "--batch-size", "4")
    assert code == 0
    assert "2 of 6 files already in" in err and f"6 records in {out_file}" in err
    assert sum(resumed.calls) == 4  # only the files not done before
    assert [Path(p).name for p in paths_in(out_file)] == [f"t{i}.wav" for i in range(6)]


def test_failed_files_are_retried_on_resume(fake, music, tmp_path, capsys):
    out_file = tmp_path / "keys.jsonl"
    broken = music / "late.wav"
    broken.write_bytes(b"not yet")
    assert run_cli(capsys, music, "-o", out_file)[0] == 1
    tone(broken, 62)  # the file is fixed
    fake.calls.clear()
    code, _, _ = run_cli(capsys, music, "-o", out_file, "--skip-existing")
    assert code == 0 and fake.calls == [1]
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(records) == 4 and all("error" not in r for r in records)
    assert next(r for r in records if r["path"].endswith("late.wav"))["key"] == "D major"


def test_output_file_is_replaced_atomically(fake, music, tmp_path, capsys, monkeypatch):
    out_file = tmp_path / "keys.json"
    out_file.write_text("previous results")
    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((Path(src).parent, Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    assert run_cli(capsys, music, "-o", out_file)[0] == 0
    assert replaced == [(tmp_path, out_file)]  # written next to it, then moved in one step
    assert len(json.loads(out_file.read_text())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys.json", "music"]


# --- tags --------------------------------------------------------------------------

def test_write_tags_and_dry_run(fake, tmp_path, capsys):
    from musicssl.io.tags import read_key_tag

    folder = tmp_path / "tagged"
    folder.mkdir()
    wav = tone(folder / "a.wav", 63)
    flac = tone(folder / "b.flac", 69)
    mp3 = tone(folder / "c.mp3", 66, fmt="MP3", subtype="MPEG_LAYER_III")
    before = {p: p.read_bytes() for p in (wav, flac, mp3)}

    code, out, _ = run_cli(capsys, folder, "--write-tags", "--dry-run", "--format", "jsonl")
    assert code == 0
    assert all(p.read_bytes() == b for p, b in before.items())
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert records["a.wav"]["tag"] == {"field": "TKEY", "value": "Eb", "previous": None, "written": False}

    code, out, _ = run_cli(capsys, folder, "--write-tags", "--tag-notation", "camelot")
    assert code == 0 and "tag TKEY = 'Eb' (written" in out
    assert read_key_tag(wav) == "Eb"
    assert read_key_tag(flac) == "11B"  # A major in Camelot (Vorbis comment follows --tag-notation)
    assert read_key_tag(mp3) == "F#"    # ID3 TKEY is always the short form


def test_write_tags_id3_version_3(fake, tmp_path, capsys):
    from mutagen.wave import WAVE

    path = tone(tmp_path / "c.wav", 60)
    code, out, _ = run_cli(capsys, path, "--write-tags", "--id3-version", "3")
    assert code == 0 and "TKEY = 'C'" in out
    assert WAVE(path).tags.version[:2] == (2, 3)


def test_tag_failure_is_reported_and_exit_1(fake, tmp_path, capsys):
    au = tone(tmp_path / "x.au", 60, fmt="AU", subtype="PCM_16")  # decodes, but has no tag format
    code, out, _ = run_cli(capsys, au, "--write-tags", "--format", "jsonl")
    record = json.loads(out)
    assert code == 1 and record["key"] == "C major" and "not a file type" in record["tag"]["error"]


# --- through the real estimators ----------------------------------------------------------

def test_krumhansl_on_the_shipped_example_in_two_worker_processes(tmp_path, capsys):
    example_copy = tmp_path / "ex"
    example_copy.mkdir()
    (example_copy / "a.ogg").write_bytes(EXAMPLE.read_bytes())
    (example_copy / "b.ogg").write_bytes(EXAMPLE.read_bytes())
    (example_copy / "bad.wav").write_bytes(b"junk")
    code, out, err = run_cli(capsys, example_copy, "--model", "krumhansl", "--jobs", "2", "--format", "jsonl",
                             "--local")
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert code == 1, err
    assert records["a.ogg"]["key"] == records["b.ogg"]["key"] == "D major"
    assert records["a.ogg"]["probabilities"] == records["b.ogg"]["probabilities"]
    assert records["a.ogg"]["local"] and records["a.ogg"]["segments"][0]["start"] == 0.0
    assert records["bad.wav"]["error"] == "AudioDecodeError"


def test_default_model_path_on_the_example(capsys):
    code, out, err = run_cli(capsys, EXAMPLE, "--format", "json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert list(record["probabilities"]) == list(KEY_LABELS)
    assert record["key"] == "D major"   # the shipped default model on the score's key
    assert 0.0 <= record["confidence"] <= 1.0


def test_transpositions_reach_the_estimator(capsys):
    code, out, err = run_cli(capsys, EXAMPLE, "--format", "json", "--transpositions", "1", "--probabilities")
    assert code == 0, err
    single = json.loads(out)[0]
    code, out, _ = run_cli(capsys, EXAMPLE, "--format", "json", "--probabilities")
    averaged = json.loads(out)[0]
    assert single["key"] == averaged["key"] == "D major"
    assert single["probabilities"] != averaged["probabilities"]
    code, _, err = run_cli(capsys, EXAMPLE, "--transpositions", "17")
    assert code == 2 and "transpositions must be between 1 and 16" in err


def test_prior_option_and_model_spec_reach_the_estimator(capsys):
    def probabilities(*args):
        code, out, err = run_cli(capsys, EXAMPLE, "--format", "json", "--transpositions", "1", *args)
        assert code == 0, err
        (record,) = json.loads(out)
        assert record["key"] == "D major"
        return record["probabilities"]

    default = probabilities()
    assert probabilities("--model", "skey-band+kostka-payne") == default
    alone = probabilities("--prior", "none")
    assert probabilities("--model", "skey-band") == alone != default
    assert probabilities("--model", "skey-debian") != alone
    assert probabilities("--prior", "krumhansl") not in (alone, default)
    code, _, err = run_cli(capsys, EXAMPLE, "--model", "temperley", "--prior", "krumhansl")
    assert code == 2 and "not to a template" in err


def test_failed_model_load_leaves_no_files(music, capsys, tmp_path):
    out_file = tmp_path / "keys.jsonl"
    code, _, _ = run_cli(capsys, music, "-o", out_file, "--checkpoint", tmp_path / "nope.pt")
    assert code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["music"]


def test_released_checkpoint_on_the_example_and_its_tag(shared_fixtures, tmp_path, capsys):
    from musicssl.io.tags import read_key_tag

    copy = tmp_path / "ode.ogg"
    copy.write_bytes(EXAMPLE.read_bytes())
    code, out, err = run_cli(capsys, copy, "--checkpoint", shared_fixtures / "skey.pt", "--format", "jsonl",
                             "--write-tags")
    record = json.loads(out)
    assert code == 0, err
    assert record["key"] == "D major"  # the key of the score (see src/musicssl/data/examples/README.md)
    assert record["tag"]["field"] == "INITIALKEY" and read_key_tag(copy) == "D"
