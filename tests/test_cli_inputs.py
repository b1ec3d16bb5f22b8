"""Awkward inputs to the batch commands, end to end through ``musicssl key``:
symbolic link loops, folders named like audio files, control characters in
file names. Each gets one record and the batch goes on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from musicssl.cli.main import main
from musicssl.io.files import find_audio_files

from test_cli_key import fake, music, run_cli, tone  # noqa: F401  (fixtures)


def _loop(folder: Path) -> tuple[Path, Path]:
    a, b = folder / "a.ogg", folder / "b.ogg"
    a.symlink_to(b.name)
    b.symlink_to(a.name)
    return a, b


def test_symlink_loop_in_a_scanned_folder_is_one_error_record_each(fake, music, capsys):
    a, b = _loop(music)
    code, out, err = run_cli(capsys, music, "--format", "jsonl")
    assert code == 1
    records = {Path(r["path"]).name: r for r in map(json.loads, out.splitlines())}
    assert set(records) == {"a.ogg", "b.ogg", "c.wav", "eb.ogg", "g.flac"}
    assert records["c.wav"]["key"] == "C major"
    for name in ("a.ogg", "b.ogg"):
        assert records[name]["error"] == "AudioFileNotFoundError"
        assert "symbolic link loop" in records[name]["message"]
    assert "2 of 5 files failed" in err


def test_symlink_loop_given_explicitly_says_loop(fake, music, capsys):
    a, _ = _loop(music)
    code, out, _ = run_cli(capsys, a, music / "c.wav", "--format", "jsonl")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and len(records) == 2
    assert "symbolic link loop" in records[0]["message"] and records[1]["key"] == "C major"


def test_find_audio_files_lists_loops_without_crashing(tmp_path):
    _loop(tmp_path)
    tone(tmp_path / "c.wav", 60)
    assert [p.name for p in find_audio_files(tmp_path)] == ["a.ogg", "b.ogg", "c.wav"]
    assert [p.name for p in find_audio_files(tmp_path, recursive=False)] == ["a.ogg", "b.ogg", "c.wav"]


def test_broken_symlink_names_its_target(fake, music, capsys):
    (music / "gone.mp3").symlink_to("nowhere.mp3")
    code, out, _ = run_cli(capsys, music / "gone.mp3", "--format", "jsonl")
    assert code == 1 and "broken symbolic link" in json.loads(out)["message"]


def test_folder_named_like_an_audio_file_gives_an_error_record(fake, music, capsys):
    (music / "song.mp3").mkdir()
    code, out, err = run_cli(capsys, music / "song.mp3", music / "c.wav", "--format", "jsonl")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and [Path(r["path"]).name for r in records] == ["song.mp3", "c.wav"]
    assert records[0]["error"] == "AudioFileNotFoundError" and "is a directory" in records[0]["message"]
    assert "1 of 2 files failed" in err


def test_folder_named_like_an_audio_file_holding_audio_is_searched(fake, music, capsys):
    (music / "album.flac").mkdir()
    tone(music / "album.flac" / "x.wav", 60)
    code, out, _ = run_cli(capsys, music / "album.flac", "--format", "jsonl")
    assert code == 0 and Path(json.loads(out)["path"]).name == "x.wav"


@pytest.mark.parametrize("name, shown", [("new\nline.wav", "new\\nline.wav"),
                                         ("tab\there.wav", "tab\\there.wav"),
                                         ("back\\slash.wav", "back\\\\slash.wav")])
def test_control_characters_in_names_are_escaped_in_text_output(fake, tmp_path, capsys, name, shown):
    path = tone(tmp_path / name, 60)
    code, out, _ = run_cli(capsys, path, tmp_path / ("missing" + name))
    lines = out.splitlines()
    assert code == 1 and len(lines) == 2
    assert lines[0].split("\t") == [str(tmp_path / shown), "C major", "0.500"]
    assert lines[1].split("\t")[0] == str(tmp_path / ("missing" + shown))
    assert lines[1].split("\t")[1] == "ERROR"
    code, out, _ = run_cli(capsys, path, "--format", "jsonl")
    assert json.loads(out)["path"] == str(path)  # JSON keeps the name as it is


def test_text_output_with_escaped_names_resumes(fake, tmp_path, capsys):
    path = tone(tmp_path / "new\nline.wav", 60)
    other = tone(tmp_path / "plain.wav", 67)
    out_file = tmp_path / "keys.txt"
    assert run_cli(capsys, path, "-o", out_file)[0] == 0
    code, _, err = run_cli(capsys, path, other, "-o", out_file, "--skip-existing")
    assert code == 0 and "1 of 2 files already in" in err
    assert len(out_file.read_text().splitlines()) == 2


@pytest.mark.parametrize("ext", [".ogg", ".mp3", ".flac"])
def test_truncated_file_is_an_error_record_and_the_batch_goes_on(fake, music, capfd, ext):
    from audio_factory import write_audio

    whole = write_audio(music, "whole" + ext, sr=44100, duration_s=10.0)
    data = whole.read_bytes()
    cut = music / ("cut" + ext)
    cut.write_bytes(data[: len(data) // 2])
    code = main(["key", str(cut), str(music / "c.wav"), "--format", "jsonl"])
    out, err = capfd.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 1 and records[1]["key"] == "C major"
    assert records[0]["error"] == "TruncatedAudioError" and records[0]["message"].startswith("truncated")
    assert "Xing" not in err and "1 of 2 files failed" in err
