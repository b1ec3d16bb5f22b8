"""Beat annotation files (GTZAN/Ballroom/Hainsworth/SMC formats) and dataset scans."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musicssl.errors import AnnotationError
from musicssl.evaluation.beat_annotations import (
    format_beat_annotation,
    load_beat_dataset,
    load_beat_dev_synth,
    load_beat_manifest,
    load_beats,
    parse_beat_annotation,
    read_beat_annotation,
    scan_beat_folder,
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_time_per_line(tmp_path):
    f = write(tmp_path / "a.beats", "0.5\n1.0\n\n1.5\n")
    ann = read_beat_annotation(f)
    np.testing.assert_allclose(ann.times, [0.5, 1.0, 1.5])
    assert ann.beat_in_bar is None and ann.downbeats is None and ann.path == f
    np.testing.assert_allclose(load_beats(f), [0.5, 1.0, 1.5])


@pytest.mark.parametrize("sep", ["\t", " ", "   ", ",", " \t "])
def test_time_and_beat_in_bar(sep):
    ann = parse_beat_annotation(f"0.10{sep}1\n0.60{sep}2\n1.10{sep}3.0\n1.60{sep}1\n")
    np.testing.assert_allclose(ann.times, [0.1, 0.6, 1.1, 1.6])
    np.testing.assert_array_equal(ann.beat_in_bar, [1, 2, 3, 1])
    np.testing.assert_allclose(ann.downbeats, [0.1, 1.6])


def test_comments_blank_lines_and_crlf():
    text = "# beats of a song\r\n\r\n0.25 1  # first\r\n; note\r\n% another\r\n0.75 2\r\n   \r\n"
    ann = parse_beat_annotation(text)
    np.testing.assert_allclose(ann.times, [0.25, 0.75])
    np.testing.assert_array_equal(ann.beat_in_bar, [1, 2])


def test_empty_file(tmp_path):
    ann = read_beat_annotation(write(tmp_path / "e.txt", "# nothing\n\n"))
    assert len(ann) == 0


@pytest.mark.parametrize("text, line, message", [
    ("0.5\nabc\n", 2, "not a number"),
    ("0.5\n1.0 1 7\n", 2, "3 fields"),
    ("0.5\n-1.0\n", 2, ">= 0"),
    ("0.5\n1.0\n0.9\n", 3, "does not come after"),
    ("0.5\n0.5\n", 2, "does not come after"),
    ("0.5 1\n1.0\n", 2, "mixes"),
    ("0.5 1\n1.0 x\n", 2, "not a number"),
    ("0.5 1\n1.0 2.5\n", 2, "whole number"),
    ("0.5 0\n", 1, "whole number"),
    ("nan\n", 1, "finite"),
])
def test_malformed_lines_name_file_and_line(tmp_path, text, line, message):
    f = write(tmp_path / "bad.beats", text)
    with pytest.raises(AnnotationError, match=message) as info:
        read_beat_annotation(f)
    assert f"{f}:{line}:" in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="not found"):
        read_beat_annotation(tmp_path / "nope.beats")


def test_folder_scan_pairs_by_stem(tmp_path):
    audio = tmp_path / "audio"
    for name in ["blues.00000.wav", "jazz.00001.wav", "sub/rock.00002.ogg", "orphan.wav"]:
        write(audio / name, "")
    write(audio / "notes.md", "")
    ann = tmp_path / "ann"
    write(ann / "blues.00000.beats", "0.5\n")
    write(ann / "blues.00000.txt", "0.7\n")  # .beats preferred by default order
    write(ann / "jazz.00001.txt", "0.5 1\n")
    write(ann / "deep/rock.00002.beats", "1.0\n")
    ds = scan_beat_folder(audio, ann)
    got = {item.id: item.annotation_path.name for item in ds}
    assert got == {"blues.00000": "blues.00000.beats", "jazz.00001": "jazz.00001.txt",
                   "rock.00002": "rock.00002.beats"}
    assert [p.name for p in ds.missing_annotation] == ["orphan.wav"]
    assert "3 annotated" in ds.describe()
    only_txt = scan_beat_folder(audio, ann, extensions=["txt"])
    assert {i.id for i in only_txt} == {"blues.00000", "jazz.00001"}
    assert len(ds.limit(1)) == 1


def test_folder_scan_annotations_next_to_audio_and_smc_names(tmp_path):
    write(tmp_path / "SMC_001.wav", "")
    write(tmp_path / "SMC_001_2.28_3_.txt", "0.4\n0.9\n")
    write(tmp_path / "x.flac", "")
    write(tmp_path / "x.beats", "1\n")
    ds = load_beat_dataset("folder", tmp_path)
    assert {i.id: i.annotation_path.name for i in ds} == {
        "SMC_001": "SMC_001_2.28_3_.txt", "x": "x.beats"}
    item = next(i for i in ds if i.id == "SMC_001")
    np.testing.assert_allclose(item.reference().times, [0.4, 0.9])


def test_manifest(tmp_path):
    write(tmp_path / "a.wav", "")
    write(tmp_path / "b/a.beats", "0.5\n")
    write(tmp_path / "c.beats", "0.5\n")
    write(tmp_path / "m.csv", "# comment\naudio,beats,genre\na.wav,b/a.beats,pop\nmissing.wav,c.beats,rock\n")
    ds = load_beat_manifest(tmp_path / "m.csv")
    assert [i.id for i in ds] == ["a"]
    assert ds.items[0].annotation_path == tmp_path / "b/a.beats"
    assert [i.id for i in ds.missing_audio] == ["missing"]


@pytest.mark.parametrize("text, message", [
    ("path,key\na.wav,C major\n", "header needs"),
    ("path,beats_path\na.wav\n", r"m.csv:2: expected 2 fields"),
    ("path,beats_path\na.wav,zzz.beats\n", r"m.csv:2: beat annotation file .* not found"),
    ("", "no entries"),
])
def test_bad_manifest(tmp_path, text, message):
    write(tmp_path / "a.wav", "")
    with pytest.raises(AnnotationError, match=message):
        load_beat_manifest(write(tmp_path / "m.csv", text))


def test_unknown_kind_and_missing_paths(tmp_path):
    with pytest.raises(AnnotationError, match="unknown beat dataset"):
        load_beat_dataset("mirex", tmp_path)
    with pytest.raises(AnnotationError, match="not found"):
        scan_beat_folder(tmp_path / "none")
    with pytest.raises(AnnotationError, match="not found"):
        scan_beat_folder(tmp_path, tmp_path / "none")


def test_dev_synth_layout(dev_synth):
    ds = load_beat_dev_synth(dev_synth)
    assert len(ds) + len(ds.missing_audio) > 100
    item = ds.items[0]
    assert item.audio_path.is_file() and item.annotation_path.suffix == ".beats"
    beats = item.reference().times
    assert len(beats) > 10 and np.all(np.diff(beats) > 0)


def test_format_beat_annotation_round_trips_both_layouts():
    times, numbers = [0.5, 1.0, 1.5], [3, 4, 1]
    assert format_beat_annotation(times) == "0.5000\n1.0000\n1.5000\n"
    parsed = parse_beat_annotation(format_beat_annotation(times, numbers, decimals=6))
    assert parsed.times.tolist() == times and parsed.beat_in_bar.tolist() == numbers
    with pytest.raises(AnnotationError):
        format_beat_annotation(times, [1, 2])
