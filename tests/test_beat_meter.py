"""Beat numbering (musicssl.beat.meter): phase and beats per bar of synthetic bars, records,
the CLI option, too few beats."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf

from beat_synth import SR, bar_track
from musicssl.beat.estimator import BeatResult, OnsetBeatEstimator
from musicssl.beat.meter import choose_meter, meter_frames, number_beats, parse_meter
from musicssl.beat.records import beats_format, beats_record
from musicssl.cli.main import main
from musicssl.errors import ConfigError


@pytest.mark.parametrize("m, first, bpm", [(4, 1, 120), (4, 3, 100), (3, 1, 140), (3, 2, 90)])
def test_synthetic_bars_get_their_meter_and_phase(m, first, bpm):
    x, beats, numbers = bar_track(16.0, bpm, m, first_number=first)
    got = number_beats(meter_frames(x), beats, "auto")
    assert got.beats_per_bar == m
    assert got.numbers.tolist() == numbers.tolist()
    fixed = number_beats(meter_frames(x), beats, m)    # a fixed M keeps the phase
    assert fixed.numbers.tolist() == numbers.tolist() and fixed.scores == {}


def test_estimator_numbers_its_decoded_beats():
    x, beats, numbers = bar_track(20.0, 110, 3, first_number=2)
    res = OnsetBeatEstimator(meter="auto").estimate(x, SR)
    assert res.beats_per_bar == 3 and len(res.beat_numbers) == len(res.beats)
    true_down = beats[numbers == 1]
    hits = [np.min(np.abs(true_down - d)) < 0.07 for d in res.downbeats]
    assert len(res.downbeats) >= len(true_down) - 1 and np.mean(hits) > 0.9
    d = res.to_dict()
    assert d["meter"] == "auto" and d["beats_per_bar"] == 3 and d["downbeats"] == [round(float(t), 4)
                                                                                   for t in res.downbeats]
    assert "beat_numbers" not in OnsetBeatEstimator().estimate(x, SR).to_dict()   # off by default in the API


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_beats_are_not_numbered(n):
    x, _, _ = bar_track(4.0, 120, 4)
    frames = meter_frames(x)
    beats = np.arange(n) * 0.5 + 0.25
    assert number_beats(frames, beats, "auto") is None and number_beats(frames, beats, 4) is None
    res = BeatResult(beats=beats, tempo_bpm=None, fps=62.5, duration_s=4.0, tracker="onset+dbn", meter="auto")
    d = res.to_dict()
    assert d["beat_numbers"] is None and d["downbeats"] is None and d["beats_per_bar"] is None
    assert "not numbered" in beats_format("text").text_line(beats_record("a.wav", res))


def test_short_inputs_fall_back_to_four_and_a_constant_accent_still_numbers():
    got = choose_meter(np.zeros(5), "auto")             # fewer than 2 x 4 beats: M = 4
    assert got.beats_per_bar == 4 and got.numbers.tolist() == [1, 2, 3, 4, 1]
    assert choose_meter(np.array([0.0, 1.0, 0.0]), 4).numbers.tolist() == [4, 1, 2]


def test_parse_meter():
    assert parse_meter("auto") == "auto" and parse_meter("off") is None and parse_meter(None) is None
    assert parse_meter("3") == 3 and parse_meter(7) == 7
    for bad in ("1", "17", "3.5", "four", "-4", True):
        with pytest.raises(ConfigError):
            parse_meter(bad)


def test_records_carry_numbers_in_every_format():
    res = BeatResult(beats=np.array([0.5, 1.0, 1.5, 2.0, 2.5]), tempo_bpm=120.0, fps=62.5, duration_s=3.0,
                     tracker="onset+dbn", meter=4, beats_per_bar=4, beat_numbers=np.array([4, 1, 2, 3, 4]))
    rec = beats_record("a.wav", res)
    assert rec["downbeats"] == [1.0] and rec["beat_numbers"] == [4, 1, 2, 3, 4]
    assert json.loads(json.dumps(rec))["beats_per_bar"] == 4
    text = beats_format("text").text_line(rec)
    assert "4 beats/bar" in text and "1.000:1" in text and "0.500:4" in text
    fmt = beats_format("csv")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fmt.csv_columns)
    writer.writeheader()
    writer.writerow(fmt.csv_row(rec))
    row = next(csv.DictReader(io.StringIO(buf.getvalue())))
    assert row["beat_numbers"] == "4 1 2 3 4" and row["downbeats"] == "1.000" and row["beats_per_bar"] == "4"


@pytest.fixture(scope="module")
def waltz(tmp_path_factory):
    root = tmp_path_factory.mktemp("meter")
    x, beats, numbers = bar_track(15.0, 120, 3, first_number=1)
    sf.write(root / "waltz.wav", x, SR)
    return root / "waltz.wav", beats, numbers


def test_cli_meter_option(waltz, tmp_path, capsys):
    path, beats, numbers = waltz
    out = tmp_path / "b.jsonl"
    assert main(["beats", str(path), "--meter", "auto", "-o", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["meter"] == "auto" and rec["beats_per_bar"] == 3
    assert min(np.min(np.abs(np.asarray(rec["downbeats"]) - t)) for t in beats[numbers == 1][1:3]) < 0.07
    assert main(["beats", str(path), "--meter", "5", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["beats_per_bar"] == 5
    assert main(["beats", str(path), "--meter", "off", "--format", "json"]) == 0
    assert "beat_numbers" not in json.loads(capsys.readouterr().out)[0]
    with pytest.raises(SystemExit) as exc:
        main(["beats", str(path), "--meter", "waltz"])
    assert exc.value.code == 2 and "meter" in capsys.readouterr().err
