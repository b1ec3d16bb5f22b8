"""Dataset loaders: small annotation fixtures for every format, malformed lines included.

The loaders only check that audio files exist, so placeholder files stand in
for audio here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import pytest

from musicssl.errors import AnnotationError, KeyLabelError
from musicssl.evaluation.datasets import (
    LOADERS,
    gtzan_key,
    load_dataset,
    load_dev_synth,
    load_fmakv2,
    load_giantsteps,
    load_gtzan,
    load_manifest,
    load_winterreise,
)
from musicssl.keys import Key


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --- generic manifest ---------------------------------------------------------------

def test_manifest_with_header_all_notations_and_missing_audio(tmp_path):
    for name in ("a.wav", "b.wav", "c.wav", "d.wav", "sub/e.wav"):
        touch(tmp_path / name)
    manifest = write(tmp_path / "m.csv", "\n".join([
        "path,key,genre",
        "a.wav,Eb major,rock",
        "b.wav,C:maj,rock",
        "c.wav,F#m,jazz",
        "# a comment line",
        "d.wav,8A,jazz",          # Camelot 8A = A minor
        "sub/e.wav,1d,",          # Open Key 1d = C major, no genre
        "gone.wav,C Major,pop",   # audio missing
        "",
    ]))
    ds = load_manifest(manifest)
    assert [i.key for i in ds.items] == [Key(3, "major"), Key(0, "major"), Key(6, "minor"),
                                        Key(9, "minor"), Key(0, "major")]
    assert [i.group for i in ds.items] == ["rock", "rock", "jazz", "jazz", None]
    assert ds.items[4].path == tmp_path / "sub" / "e.wav"
    assert ds.items[0].id == "a"
    assert len(ds.missing) == 1 and ds.missing[0].path.name == "gone.wav"
    assert ds.group_name == "genre" and len(ds) == 5
    assert "1 missing audio" in ds.describe()


def test_manifest_without_header_tsv(tmp_path):
    touch(tmp_path / "x.ogg")
    manifest = write(tmp_path / "m.tsv", "x.ogg\tD minor\tfolk\n")
    ds = load_manifest(manifest)
    assert ds.items[0].key == Key(2, "minor") and ds.items[0].group == "folk"


def test_manifest_offset_duration_columns(tmp_path):
    touch(tmp_path / "x.wav")
    manifest = write(tmp_path / "m.csv", "id,path,key,offset,duration\np1,x.wav,A minor,5,30\n")
    item = load_manifest(manifest).items[0]
    assert (item.id, item.offset, item.duration) == ("p1", 5.0, 30.0)


@pytest.mark.parametrize("bad_line, message", [
    ("a.wav,H major,rock", "bad key"),
    ("a.wav,C dorian,rock", "bad key"),
    (",C major,rock", "empty path"),
    ("a.wav,C major,rock,extra", "expected 3 fields"),
    ("a.wav", "expected 3 fields"),
])
def test_manifest_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    touch(tmp_path / "a.wav")
    manifest = write(tmp_path / "m.csv", f"path,key,genre\na.wav,C major,rock\n{bad_line}\n")
    with pytest.raises(AnnotationError, match=rf"m\.csv:3: .*{message}"):
        load_manifest(manifest)
    lenient = load_manifest(manifest, strict=False)
    assert len(lenient.items) == 1 and len(lenient.skipped) == 1
    assert lenient.skipped[0].where.endswith("m.csv:3")


def test_manifest_unknown_key_is_skipped_even_when_strict(tmp_path):
    touch(tmp_path / "a.wav")
    manifest = write(tmp_path / "m.csv", "a.wav,X\na.wav,C major\n")
    ds = load_manifest(manifest)
    assert len(ds.items) == 1 and len(ds.skipped) == 1 and "unknown" in ds.skipped[0].reason


def test_manifest_errors_for_empty_and_folder(tmp_path):
    with pytest.raises(AnnotationError, match="no entries"):
        load_manifest(write(tmp_path / "m.csv", "# only a comment\n"))
    with pytest.raises(AnnotationError, match="folder"):
        load_manifest(tmp_path)
    with pytest.raises(AnnotationError, match="not found"):
        load_manifest(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="header"):
        load_manifest(write(tmp_path / "h.csv", "path,genre\na.wav,rock\n"))


# --- dev-synth ------------------------------------------------------------------------

def test_dev_synth_format(tmp_path):
    touch(tmp_path / "audio" / "p1.ogg")
    write(tmp_path / "labels.csv",
          "path,key,beats_path,collection,piece_id,title\n"
          'audio/p1.ogg,Bb major,beats/p1.beats,bach,p1,"Chorale, one"\n'
          "audio/p2.ogg,E minor,beats/p2.beats,folk,p2,Tune\n")
    ds = load_dev_synth(tmp_path)
    assert ds.group_name == "collection"
    assert ds.items[0].id == "p1" and ds.items[0].group == "bach" and ds.items[0].key == Key(10)
    assert ds.items[0].meta["beats_path"] == "beats/p1.beats"
    assert ds.items[0].meta["title"] == "Chorale, one"
    assert [m.id for m in ds.missing] == ["p2"]


def test_shipped_dev_synth_loads(dev_synth):
    ds = load_dataset("dev-synth", dev_synth)
    assert len(ds) == 236 and not ds.missing and not ds.skipped
    assert sum(i.key.mode == "major" for i in ds) == 138


# --- GiantSteps -------------------------------------------------------------------------

def test_giantsteps_repository_layout(tmp_path):
    write(tmp_path / "annotations/key/100.LOFI.key", "Eb minor")  # no newline, as shipped
    write(tmp_path / "annotations/key/200.LOFI.key", "A major\n")
    write(tmp_path / "annotations/key/300.LOFI.key", "\n")        # empty: unknown
    write(tmp_path / "annotations/genre/100.LOFI.genre", "techno\n")
    touch(tmp_path / "audio/100.LOFI.mp3")
    ds = load_giantsteps(tmp_path)
    assert [(i.id, i.key, i.group) for i in ds.items] == [("100.LOFI", Key(3, "minor"), "techno")]
    assert [m.id for m in ds.missing] == ["200.LOFI"]
    assert len(ds.skipped) == 1 and ds.group_name == "genre"


def test_giantsteps_flat_layout_and_bad_label(tmp_path):
    write(tmp_path / "a.key", "C major\n")
    touch(tmp_path / "a.wav")
    assert load_giantsteps(tmp_path).items[0].path == tmp_path / "a.wav"
    write(tmp_path / "b.key", "\n\nnot a key\n")
    with pytest.raises(AnnotationError, match=r"b\.key:3"):
        load_giantsteps(tmp_path)
    empty = write(tmp_path / "empty" / "readme.txt", "x").parent
    with pytest.raises(AnnotationError, match="no \\*.key"):
        load_giantsteps(empty)


# --- GTZAN ---------------------------------------------------------------------------

def test_gtzan_codes():
    assert gtzan_key(0) == Key(9, "major")       # A major
    assert gtzan_key(3) == Key(0, "major")       # C major
    assert gtzan_key(11) == Key(8, "major")      # G# major
    assert gtzan_key(12) == Key(9, "minor")      # A minor
    assert gtzan_key(23) == Key(8, "minor")      # G# minor
    assert gtzan_key(-1) is None
    with pytest.raises(KeyLabelError):
        gtzan_key(24)


def test_gtzan_layout_unknown_and_malformed(tmp_path):
    keys = tmp_path / "gtzan_key" / "genres"
    write(keys / "blues/blues.00000.lerch.txt", "15\n")     # C minor
    write(keys / "blues/blues.00001.lerch.txt", "-1\n")     # unknown: skipped
    write(keys / "pop/pop.00002.lerch.txt", "3")            # C major, audio missing
    audio = tmp_path / "gtzan_genre" / "genres"
    touch(audio / "blues/blues.00000.wav")
    ds = load_gtzan(tmp_path / "gtzan_key", audio_dir=audio)
    assert [(i.id, i.key, i.group) for i in ds.items] == [("blues.00000", Key(0, "minor"), "blues")]
    assert [m.id for m in ds.missing] == ["pop.00002"]
    assert len(ds.skipped) == 1 and "unknown" in ds.skipped[0].reason
    write(keys / "rock/rock.00003.lerch.txt", "C major\n")
    with pytest.raises(AnnotationError, match=r"rock\.00003\.lerch\.txt:1: .*not an integer"):
        load_gtzan(tmp_path / "gtzan_key", audio_dir=audio)
    write(keys / "rock/rock.00003.lerch.txt", "30\n")
    with pytest.raises(AnnotationError, match="0..23"):
        load_gtzan(tmp_path / "gtzan_key", audio_dir=audio)
    assert len(load_gtzan(tmp_path / "gtzan_key", audio_dir=audio, strict=False).skipped) == 2


# --- FMAKv2 ------------------------------------------------------------------------------

def test_fmakv2_layout_and_malformed(tmp_path):
    write(tmp_path / "fmakv2.csv",
          "track_id,spotify_uri,key_and_mode\n"
          "2,spotify:track:x,C Major\n"
          "140,,A minor\n"
          "5000,,Bb Major\n")
    touch(tmp_path / "audio/000/000002.mp3")
    touch(tmp_path / "audio/000/000140.mp3")
    ds = load_fmakv2(tmp_path)
    assert [(i.id, i.key) for i in ds.items] == [("000002", Key(0)), ("000140", Key(9, "minor"))]
    assert [m.id for m in ds.missing] == ["005000"]
    write(tmp_path / "fmakv2.csv", "track_id,spotify_uri,key_and_mode\n2,,C Lydian\n")
    with pytest.raises(AnnotationError, match=r"fmakv2\.csv:2: bad key"):
        load_fmakv2(tmp_path)
    write(tmp_path / "fmakv2.csv", "track_id,key\n2,C Major\n")
    with pytest.raises(AnnotationError, match="key_and_mode"):
        load_fmakv2(tmp_path)


# --- Winterreise -----------------------------------------------------------------------------

def test_winterreise_layout_protocol_and_malformed(tmp_path):
    write(tmp_path / "02_Annotations/ann_audio_globalkey.csv",
          '"WorkID";"PerformanceID";"key"\n'
          '"Schubert_D911-01";"HU33";"D:min"\n'
          '"Schubert_D911-05";"SC06";"E:maj"\n'
          '"Schubert_D911-01";"AL98";"D:min"\n')
    touch(tmp_path / "01_RawData/audio_wav/Schubert_D911-01_HU33.wav")
    touch(tmp_path / "01_RawData/audio_wav/Schubert_D911-05_SC06.wav")
    ds = load_winterreise(tmp_path)
    assert [(i.id, i.key, i.group) for i in ds.items] == [
        ("Schubert_D911-01_HU33", Key(2, "minor"), "HU33"),
        ("Schubert_D911-05_SC06", Key(4, "major"), "SC06")]
    assert all(i.offset == 0 and i.duration == 30.0 for i in ds.items)
    assert len(ds.missing) == 1 and ds.group_name == "performance"
    write(tmp_path / "02_Annotations/ann_audio_globalkey.csv",
          "WorkID;PerformanceID;key\nSchubert_D911-01;HU33\n")
    with pytest.raises(AnnotationError, match=r"ann_audio_globalkey\.csv:2: expected 3"):
        load_winterreise(tmp_path)


def test_registry_names_and_unknown_dataset(tmp_path):
    assert set(LOADERS) == {"csv", "dev-synth", "giantsteps", "gtzan", "fmakv2", "winterreise"}
    with pytest.raises(AnnotationError, match="unknown dataset"):
        load_dataset("mnist", tmp_path)


def test_limit_keeps_first_items(tmp_path):
    for n in range(3):
        touch(tmp_path / f"{n}.wav")
    ds = load_manifest(write(tmp_path / "m.csv", "0.wav,C\n1.wav,D\n2.wav,E\n"))
    assert [i.id for i in ds.limit(2)] == ["0", "1"]
    with pytest.raises(ValueError):
        ds.limit(-1)


# --- scripts/render_symbolic.py: reading the key the file states -------------------------

def _render_module():
    import importlib.util
    import sys

    if "render_symbolic" in sys.modules:
        return sys.modules["render_symbolic"]
    path = Path(__file__).resolve().parents[1] / "scripts" / "render_symbolic.py"
    spec = importlib.util.spec_from_file_location("render_symbolic", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_symbolic"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("field, expected", [
    ("G", Key(7)), ("Em", Key(4, "minor")), ("Bbmin", Key(10, "minor")), ("F#m", Key(6, "minor")),
    ("D major % comment", Key(2)), ("AMinor", Key(9, "minor")), ("Cion", Key(0)), ("Aaeo", Key(9, "minor")),
    ("G clef=treble", Key(7)),
    ("Ador", None), ("Dmix", None), ("AMixolydian", None), ("Hp", None), ("EM", None), ("", None),
    ("none", None),
])
def test_render_abc_key_field(field, expected):
    assert _render_module().abc_key(field) == expected


def test_render_abc_tunes_kern_and_musicxml_keys():
    r = _render_module()
    abc = "%header\nX:1\nT:One\nM:6/8\nK:G\nGAB|\n\nX:2\nT:Two\nK:Ador\nABc|\nX:3\nT:No key\n"
    assert r.abc_tunes(abc) == [(1, "One", "G"), (2, "Two", "Ador")]
    assert r.kern_key("**kern\n*clefG2\n*k[f#]\n*e:\n4e\n") == Key(4, "minor")
    assert r.kern_key("**kern\n*B-:\n") == Key(10)
    assert r.kern_key("**kern\n*G:dor\n") is None
    assert r.kern_key("**kern\n4c\n") is None
    xml = "<key><fifths>-3</fifths><mode>minor</mode></key>"
    assert r.musicxml_key(xml) == Key(0, "minor")
    assert r.musicxml_key("<key><fifths>2</fifths><mode>major</mode></key>") == Key(2)
    assert r.musicxml_key("<key><fifths>2</fifths></key>") is None           # signature only
    assert r.musicxml_key("<key><fifths>0</fifths><mode>dorian</mode></key>") is None
    assert r._shift(Key(2), Key(7)) == 5 and r._shift(Key(7), Key(2)) == -5 and r._shift(Key(0), Key(6)) == -6


def test_render_beat_times_with_pickup_in_six_eight():
    pytest.importorskip("music21")
    from music21 import converter

    r = _render_module()
    score = converter.parse("X:1\nT:t\nM:6/8\nL:1/8\nK:G\nD|GAB cde|dBG G2z|\n", format="abc")
    score = r.prepare_score(score, 2, 120.0, 40)   # up a tone: A major, quarter = 0.5 s
    beats, ts = r.beat_times(score, 120.0, 30.0)
    assert ts == "6/8"
    # eighth-note pickup (0.25 s), then dotted-quarter beats (0.75 s)
    assert np.allclose(beats, [0.25, 1.0, 1.75, 2.5])
