"""scripts/render_band.py: band-like unlabeled renders (needs FluidSynth and a GM soundfont)."""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "render_band.py"
_spec = importlib.util.spec_from_file_location("render_band", _SCRIPT)
render_band = importlib.util.module_from_spec(_spec)
sys.modules["render_band"] = render_band
_spec.loader.exec_module(render_band)

SR = 22050
_SOUNDFONT = next((Path(p) for p in render_band.SOUNDFONTS if Path(p).is_file()), None)
needs_fluidsynth = pytest.mark.skipif(shutil.which("fluidsynth") is None or _SOUNDFONT is None,
                                      reason="environment: FluidSynth or a GM soundfont is not installed "
                                             "(apt-get install fluidsynth fluid-soundfont-gm)")
COLLECTION = ["nottingham-dataset"]      # two tunes with chord symbols: fast to search


def test_fit_triad_finds_the_chord_of_its_tones():
    weights = np.zeros(12)
    weights[[9, 0, 4]] = [2.0, 1.0, 1.5]           # A, C, E: A minor
    weights[2] = 0.3                                # a passing D
    assert render_band.fit_triad(weights) == (9, (9, 0, 4))
    weights = np.zeros(12)
    weights[[7, 11, 2]] = 1.0                       # G major
    assert render_band.fit_triad(weights) == (7, (7, 11, 2))


def test_beat_grid_follows_the_metre_and_numbers_beats_in_the_bar():
    def tune(bar_q, beat_q, numerator, compound):
        return render_band.Tune([], [], bar_q, beat_q, numerator, compound, length_q=bar_q)

    waltz = render_band.beat_grid(tune(3.0, 1.0, 3, False), total_q=7.0)
    assert waltz == [(0.0, 1), (1.0, 2), (2.0, 3), (3.0, 1), (4.0, 2), (5.0, 3), (6.0, 1)]
    jig = render_band.beat_grid(tune(3.0, 1.5, 6, True), total_q=6.0)      # 6/8: two dotted-quarter beats
    assert jig == [(0.0, 1), (1.5, 2), (3.0, 1), (4.5, 2)]


def test_compressor_reduces_loud_parts_only():
    t = np.arange(SR) / SR
    x = (np.sin(2 * np.pi * 220 * t) * np.where(t < 0.5, 0.05, 0.8)).astype(np.float32)
    y = render_band.compress(x, SR, threshold_db=-20.0, ratio=4.0)
    quiet, loud = slice(1000, 10000), slice(16000, 22000)
    assert np.allclose(y[quiet], x[quiet], rtol=1e-3, atol=1e-6)
    assert render_band.rms_db(y[loud]) < render_band.rms_db(x[loud]) - 6


def test_a_score_of_several_parts_takes_its_melody_from_the_top_part_and_its_chords_from_all():
    from music21 import note, stream

    soprano, bass = stream.Part(), stream.Part()
    for pitch in ["E5", "E5", "D5", "E5"] * 3:           # the top part alone: E and D, no A
        soprano.append(note.Note(pitch, quarterLength=1.0))
    for pitch in ["A2", "A2", "A2", "A2"] * 3:           # the bass makes every bar A minor (A, C in alto)
        bass.append(note.Note(pitch, quarterLength=1.0))
    alto = stream.Part([note.Note("C4", quarterLength=4.0) for _ in range(3)])
    score = stream.Score([soprano, alto, bass])
    tune = render_band.read_tune(score)
    assert [n.pitch for n in tune.melody] == [76, 76, 74, 76] * 3        # the soprano, not the other parts
    assert tune.chord_source == "fitted"
    assert {(root, pcs) for _, _, root, pcs in tune.chords} == {(9, (9, 0, 4))}


def test_chorales_of_an_evaluation_set_are_matched_by_bwv_number_and_hymn_title(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,key,piece_id,title\n"
                      "a.ogg,A minor,bach370__chor010,Aus tiefer Not schrei ich zu dir (BWV 38/6)\n"
                      'b.ogg,D minor,bach370__chor047,"Vater unser im Himmelreich (BWV 245/5 & 416)"\n'
                      "c.ogg,A minor,bach__bwv277__krn,25. Christ lag in Todesbanden\n"
                      "d.ogg,E minor,oneills1850__x__X1,A reel\n")
    numbers, titles = render_band.excluded_chorales([labels])
    assert numbers == {"38.6", "245.5", "416", "277"}
    assert titles == {"aus tiefer not", "vater unser im"}

    def chorale(stem):
        return render_band.Candidate("bach", Path(f"/corpus/bach/{stem}.mxl"), None, f"bach__{stem}", stem,
                                     None, "musicxml <key><mode>")

    assert render_band._is_excluded_chorale(chorale("bwv38.6"), numbers, titles)
    assert render_band._is_excluded_chorale(chorale("bwv416"), numbers, titles)
    # another harmonisation of an excluded hymn tune (BWV 90.5 is "Vater unser im Himmelreich" in
    # music21's chorale list) is excluded by its title; an unrelated chorale is not
    assert render_band._chorale_titles()["90.5"] == "vater unser im"
    assert render_band._is_excluded_chorale(chorale("bwv90.5"), numbers, titles)
    assert not render_band._is_excluded_chorale(chorale("bwv1.6"), numbers, titles)
    assert not render_band._is_excluded_chorale(chorale("bwv1.6"), set(), set())


@needs_fluidsynth
def test_one_clip_has_every_stem_and_a_produced_level():
    pool, _ = render_band.candidate_pool(COLLECTION, [], seed=0)
    plan, rng = render_band.plan_clip(0, 0)
    mix, stems, info = render_band.render_clip(pool[0], plan, rng, _SOUNDFONT, sr=SR, min_seconds=10,
                                               max_seconds=12)
    assert set(stems) == set(render_band.STEMS)
    assert 11.5 <= len(mix) / SR <= 12.0 and all(len(s) == len(mix) for s in stems.values())
    for name, stem in stems.items():
        assert render_band.rms_db(stem) > -50, name                  # every stem sounds
    # drums: regular onsets, about one per beat or more (kick, snare, hats)
    import librosa

    onsets = librosa.onset.onset_detect(y=stems["drums"], sr=SR, units="time")
    beats = 12.0 * plan.qpm / 60.0
    assert len(onsets) >= 0.8 * beats
    # the drums are mixed within a few dB of the melody, not buried
    assert abs(info["mix"]["drums"] - info["mix"]["melody"]) < 8
    # loudness of produced music, limited below full scale
    assert -19.0 < render_band.rms_db(mix) < -9.0
    assert np.abs(mix).max() <= 0.98 + 1e-6
    assert info["chord_source"] == "symbols"


@needs_fluidsynth
def test_run_writes_an_unlabelled_manifest_excludes_pieces_and_resumes(tmp_path):
    pool, _ = render_band.candidate_pool(COLLECTION, [], seed=0)
    assert len(pool) == 2
    excluded = tmp_path / "labels.csv"
    excluded.write_text(f"path,key,piece_id\nx.ogg,C major,{pool[0].piece_id}_t+3\n")   # a transposed render's id
    out = tmp_path / "band"
    kwargs = dict(count=2, seed=0, collections=COLLECTION, exclude=[excluded], min_seconds=8.0,
                  max_seconds=9.0, log=lambda m: None)
    rows = render_band.run(out, **kwargs)
    assert [r["piece_id"] for r in rows] == [pool[1].piece_id]        # the excluded piece is never used
    with open(out / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        listed = list(reader)
    assert "path" in header and not {"key", "source_key", "mode", "tonic"} & {h.lower() for h in header}
    audio, rate = sf.read(out / listed[0]["path"])
    assert rate == SR and audio.ndim == 1 and abs(len(audio) / rate - float(listed[0]["duration_s"])) < 0.01
    meta = next((out / "meta").glob("*.json"))
    assert "key" not in json.loads(meta.read_text())
    # the drum grid is written as a beat annotation that the beat evaluation reads
    from musicssl.evaluation.beat_annotations import load_beat_manifest

    reference = load_beat_manifest(out / "manifest.csv").items[0].reference()
    period = np.diff(reference.times)
    assert reference.times[0] == 0.0 and reference.times[-1] < float(listed[0]["duration_s"])
    assert np.allclose(period, period[0], atol=1e-5) and 0.25 < period[0] < 1.6
    numbers = reference.beat_in_bar
    assert numbers[0] == 1 and set(numbers) == set(range(1, numbers.max() + 1))
    # the training scanner reads it as unlabelled tracks
    from musicssl.io.tracks import read_manifest

    tracks = read_manifest(out / "manifest.csv")
    assert len(tracks) == 1 and tracks[0].key is None and Path(tracks[0].path).is_file()
    # resumable: a second run renders nothing again; deterministic: another folder gets the same clip
    stamp = (out / listed[0]["path"]).stat().st_mtime_ns
    render_band.run(out, **kwargs)
    assert (out / listed[0]["path"]).stat().st_mtime_ns == stamp
    again = render_band.run(tmp_path / "again", **kwargs)
    assert again == rows
    other, _ = sf.read(tmp_path / "again" / listed[0]["path"])
    assert np.allclose(other, audio, atol=1e-4)
    # shards: two processes of one draw take alternate pieces, and together give the whole draw
    kwargs.update(exclude=[])
    odd = render_band.run(tmp_path / "shards", shard=(1, 2), **kwargs)
    assert [r["piece_id"] for r in odd] == [pool[1].piece_id]
    both = render_band.run(tmp_path / "shards", shard=(0, 2), **kwargs)
    assert [r["piece_id"] for r in both] == [pool[0].piece_id, pool[1].piece_id]
    with pytest.raises(SystemExit, match="shard"):
        render_band.run(tmp_path / "bad", shard=(2, 2), **kwargs)
    with pytest.raises(SystemExit):
        render_band.main([str(tmp_path / "bad"), "--shard", "1-2"])


def test_band_render_keys_reads_the_editors_key_for_diagnostics_only(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "band_render_keys", Path(__file__).resolve().parents[1] / "benchmarks" / "band_render_keys.py")
    keys_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(keys_script)
    pool, _ = render_band.candidate_pool(COLLECTION, [], seed=0)
    manifest = tmp_path / "band" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,collection,piece_id,transpose\n"
                        f"audio/a.ogg,{COLLECTION[0]},{pool[0].piece_id},2\n"
                        f"audio/b.ogg,{COLLECTION[0]},{pool[1].piece_id},-5\n"
                        f"audio/c.ogg,{COLLECTION[0]},not-a-piece,0\n")
    out = tmp_path / "keys.csv"
    assert keys_script.main([str(manifest), "--out", str(out)]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["path"] for r in rows] == [str(manifest.parent / "audio" / n) for n in ("a.ogg", "b.ogg")]
    assert [r["key"] for r in rows] == [str(pool[0].key.transpose(2)), str(pool[1].key.transpose(-5))]
    assert str(pool[0].key.transpose(2)) != str(pool[0].key)


def _two_part_score(path: Path, fifths: int, bass_midi: list[int]) -> None:
    """A MusicXML score stating ``fifths`` and minor mode, its bass ending on ``bass_midi[-1]``."""
    from music21 import key, note, stream

    score = stream.Score()
    for pitches in ([67, 70, 74, 67], bass_midi):
        part = stream.Part()
        part.append(key.KeySignature(fifths))
        for midi in pitches:
            part.append(note.Note(midi, quarterLength=1.0))
        score.insert(0, part)
    text = score.write("musicxml", fp=path).read_text()
    assert "<fifths>" in text
    path.write_text(text.replace("<fifths>", "<mode>minor</mode><fifths>", 1)
                    if "<mode>" not in text else text.replace("major</mode>", "minor</mode>"))


def test_band_render_keys_final_tonic_drops_pieces_whose_stated_key_is_not_where_they_end(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location(
        "band_render_keys", Path(__file__).resolve().parents[1] / "benchmarks" / "band_render_keys.py")
    keys_script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(keys_script)
    from musicssl.keys import Key

    # G minor written with the older one-flat (Dorian) signature: the file says D minor, the bass ends on G
    dorian, modern = tmp_path / "dorian.musicxml", tmp_path / "modern.musicxml"
    _two_part_score(dorian, -1, [43, 50, 46, 43])
    _two_part_score(modern, -2, [43, 50, 46, 55])
    import render_symbolic
    stated = [render_symbolic.musicxml_key(f.read_text()) for f in (dorian, modern)]
    assert stated == [Key(2, "minor"), Key(7, "minor")]
    candidates = [render_symbolic.Candidate("bach", f, None, f.stem, f.stem, k, "musicxml <key><mode>")
                  for f, k in zip((dorian, modern), stated)]
    assert [keys_script.final_bass_pitch_class(c) for c in candidates] == [7, 7]

    # the filter: only clips whose piece ends on its stated tonic are kept
    monkeypatch.setattr(keys_script, "find_candidates", lambda roots, formats: candidates)
    manifest = tmp_path / "band" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text("path,collection,piece_id,transpose\n"
                        "audio/a.ogg,bach,dorian,3\naudio/b.ogg,bach,modern,-2\n")
    assert [k for _, k in keys_script.editor_keys([manifest])] == ["F minor", "F minor"]
    out = tmp_path / "keys.csv"
    assert keys_script.main([str(manifest), "--final-tonic", "--out", str(out)]) == 0
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"path": str(manifest.parent / "audio" / "b.ogg"), "key": "F minor"}]


def _held_note_midi(path: Path) -> None:
    """An organ part whose second note's off comes before its on at the same tick (as music21
    sometimes writes), so one voice is never released."""
    import mido

    midi = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack()
    track.append(mido.Message("program_change", channel=2, program=19, time=0))
    track.append(mido.Message("note_on", channel=2, note=60, velocity=90, time=0))
    track.append(mido.Message("note_off", channel=2, note=64, velocity=0, time=480))   # orphan off
    track.append(mido.Message("note_on", channel=2, note=64, velocity=90, time=0))     # never released
    track.append(mido.Message("note_off", channel=2, note=60, velocity=0, time=480))
    track.append(mido.MetaMessage("end_of_track", time=240))
    midi.tracks.append(track)
    midi.save(path)


def test_midi_files_end_with_all_sound_off_on_every_channel(tmp_path):
    import mido
    from render_symbolic import RenderError, end_with_sound_off

    path = tmp_path / "held.mid"
    _held_note_midi(path)
    before = mido.MidiFile(path)
    end_with_sound_off(path)
    after = mido.MidiFile(path)
    assert after.length == pytest.approx(before.length)          # the timeline is unchanged
    events = list(after.tracks[0])
    assert events[:len(before.tracks[0]) - 1] == list(before.tracks[0])[:-1]
    tail = events[len(before.tracks[0]) - 1:]
    assert [(m.channel, m.control) for m in tail[:-1]] == [(c, k) for c in range(16) for k in (123, 120)]
    assert tail[0].time == 240 and all(m.time == 0 for m in tail[1:]) and tail[-1].type == "end_of_track"
    # a key signature no MIDI parser decodes (8 sharps, as music21 writes) passes through unchanged
    odd = tmp_path / "odd.mid"
    _held_note_midi(odd)
    data = odd.read_bytes()
    track = data.index(b"MTrk")
    body = b"\x00\xff\x59\x02\x08\x00" + data[track + 8:]
    odd.write_bytes(data[:track] + b"MTrk" + len(body).to_bytes(4, "big") + body)
    end_with_sound_off(odd)
    assert b"\xff\x59\x02\x08\x00" in odd.read_bytes() and odd.read_bytes().endswith(b"\x00\xff\x2f\x00")
    (tmp_path / "not.mid").write_bytes(b"RIFF....")
    with pytest.raises(RenderError, match="not a Standard MIDI File"):
        end_with_sound_off(tmp_path / "not.mid")


@needs_fluidsynth
def test_a_held_note_on_a_looping_patch_does_not_hang_fluidsynth(tmp_path):
    from render_symbolic import synthesize

    path = tmp_path / "held.mid"
    _held_note_midi(path)
    synthesize(path, tmp_path / "held.wav", _SOUNDFONT, SR, timeout_s=20, attempts=1)
    audio, sr = sf.read(tmp_path / "held.wav")
    assert sr == SR and 1.0 < len(audio) / sr < 4.0             # 1.25 s of music and a short release
