"""Pure parts of scripts/build_corpus.py on tiny synthetic data (no network, no apt)."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musicssl.errors import ConfigError, MusicsslError

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_corpus.py"


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("build_corpus", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_corpus"] = module
    spec.loader.exec_module(module)
    return module


def _entry(path, sha, duration, fingerprint, package="pkg"):
    return {"path": path, "package": package, "source_sha256": sha,
            "original_duration_s": duration, "fingerprint": list(fingerprint)}


# --------------------------------------------------------------------------- dedupe
def test_exact_duplicate_keeps_first(bc):
    fp = [-20.0] * 100
    entries = [_entry("a.ogg", "h1", 60.0, fp), _entry("b.ogg", "h1", 200.0, [-50.0] * 100),
               _entry("c.ogg", "h2", 90.0, [-30.0] * 100)]
    kept, rejected = bc.deduplicate(entries)
    assert [e["path"] for e in kept] == ["a.ogg", "c.ogg"]
    assert rejected == [{"path": "b.ogg", "package": "pkg", "reason": "duplicate",
                         "detail": "a.ogg"}]


def test_near_duplicate_needs_close_duration_and_fingerprint(bc):
    rng = np.random.default_rng(0)
    fp = rng.uniform(-60, -10, 100)
    entries = [
        _entry("orig.ogg", "h1", 120.0, fp),
        _entry("reencoded.mp3", "h2", 120.4, fp + rng.normal(0, 0.3, 100)),  # near duplicate
        _entry("longer.ogg", "h3", 121.0, fp),            # same start, 1 s longer: a variant
        _entry("other.ogg", "h4", 120.0, fp + 6.0),       # same length, different level
    ]
    kept, rejected = bc.deduplicate(entries)
    assert [e["path"] for e in kept] == ["orig.ogg", "longer.ogg", "other.ogg"]
    assert [(r["path"], r["reason"], r["detail"]) for r in rejected] == [
        ("reencoded.mp3", "near_duplicate", "orig.ogg")]


def test_fingerprint_is_codec_robust_but_content_sensitive(bc):
    sr = 8000
    rng = np.random.default_rng(1)
    t = np.arange(12 * sr) / sr
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t)
    music = (envelope * rng.normal(0, 0.1, len(t))).astype(np.float32)
    stereo = np.stack([music, music], axis=1)
    noisy = music + rng.normal(0, 0.002, len(t)).astype(np.float32)
    other = (rng.normal(0, 0.1, len(t)) * (1.0 - envelope)).astype(np.float32)
    fp = bc.fingerprint_from_samples(music, sr)
    assert len(fp) == 100
    assert bc.fingerprint_distance(fp, bc.fingerprint_from_samples(stereo, sr)) < 0.05
    assert bc.fingerprint_distance(fp, bc.fingerprint_from_samples(noisy, sr)) < bc.NEAR_DUPLICATE_DB
    assert bc.fingerprint_distance(fp, bc.fingerprint_from_samples(other, sr)) > bc.NEAR_DUPLICATE_DB
    # audio shorter than 10 s is padded with silence (floor), not an error
    short = bc.fingerprint_from_samples(music[: 2 * sr], sr)
    assert short[-1] == bc.SILENCE_FLOOR_DB and short[0] > bc.SILENCE_FLOOR_DB


def test_audio_fingerprint_reads_a_file(bc, tmp_path):
    sr = 16000
    x = np.sin(2 * np.pi * 220 * np.arange(11 * sr) / sr).astype(np.float32) * 0.5
    path = tmp_path / "tone.wav"
    sf.write(path, x, sr)
    fp = bc.audio_fingerprint(path)
    assert len(fp) == 100
    assert all(abs(v - 20 * np.log10(0.5 / np.sqrt(2))) < 0.2 for v in fp)


# --------------------------------------------------------------------------- crop decision
def test_crop_length(bc):
    assert bc.crop_length(100.0, 480.0) is None
    assert bc.crop_length(480.0, 480.0) is None
    assert bc.crop_length(600.0, 480.0) == 480.0
    assert bc.crop_length(600.0, None) is None
    assert bc.crop_length(1500.0, 480.0, loop_period_s=152.0) == 152.0
    assert bc.crop_length(1500.0, 480.0, loop_period_s=700.0) == 480.0
    assert bc.crop_length(300.0, None, loop_period_s=120.0) == 120.0


def test_effective_max_seconds(bc):
    pkg = bc.Package("x", max_seconds=240.0)
    assert bc.effective_max_seconds(pkg, 480.0) == 240.0
    assert bc.effective_max_seconds(pkg, 100.0) == 100.0
    assert bc.effective_max_seconds(pkg, None) == 240.0
    assert bc.effective_max_seconds(bc.Package("y"), None) is None


def test_loop_period_finds_repeats_and_ignores_through_composed(bc):
    rng = np.random.default_rng(2)
    frame_s = 0.5
    unit = rng.normal(size=(90, 16))             # a 45 s piece
    looped = np.concatenate([unit] * 4)           # played 4 times
    assert bc.loop_period(looped, frame_s) == pytest.approx(45.0)
    # a slightly varied repetition still counts
    varied = looped + rng.normal(0, 0.2, looped.shape)
    assert bc.loop_period(varied, frame_s) == pytest.approx(45.0)
    # no repetition: no loop
    assert bc.loop_period(rng.normal(size=(360, 16)), frame_s) is None
    # a repetition shorter than the minimum lag is not a loop to cut at
    short_unit = np.concatenate([rng.normal(size=(20, 16))] * 18)
    assert bc.loop_period(short_unit, frame_s, min_lag_s=30.0) == pytest.approx(30.0)
    assert bc.loop_period(short_unit[:50], frame_s, min_lag_s=30.0) is None


def test_crop_to_flac_writes_the_start(bc, tmp_path):
    sr = 8000
    x = np.linspace(-0.5, 0.5, 5 * sr, dtype=np.float32)
    src = tmp_path / "long.wav"
    sf.write(src, np.stack([x, -x], axis=1), sr)
    dst = tmp_path / "long.flac"
    bc.crop_to_flac(src, dst, 2.0)
    y, sr_out = sf.read(dst, dtype="float32")
    assert sr_out == sr and y.shape == (2 * sr, 2)
    np.testing.assert_allclose(y[:, 0], x[: 2 * sr], atol=1e-4)


# --------------------------------------------------------------------------- paths, filters
def test_music_path_and_audio_names(bc):
    assert bc.is_audio_name("a/B.OGG") and bc.is_audio_name("x.opus") and not bc.is_audio_name("x.it")
    assert bc.is_music_path("usr/share/games/x/Music/a.ogg", bc.MUSIC_DIR)
    assert bc.is_music_path("usr/share/x/Textures/Musics/a.ogg", bc.MUSIC_DIR)
    assert not bc.is_music_path("usr/share/x/sounds/music_like_name.ogg", bc.MUSIC_DIR)
    assert not bc.is_music_path("usr/share/x/sfx/boom.ogg", bc.MUSIC_DIR)


def test_package_patterns_take_known_music_outside_music_dirs(bc):
    stk = bc.PACKAGE_BY_NAME["supertuxkart-data"].music_pattern
    root = "usr/share/games/supertuxkart/data/"
    assert bc.is_music_path(root + "music/main_theme.ogg", stk)
    assert bc.is_music_path(root + "tracks/cave/beneath_the_rabbit_hole.ogg", stk)
    assert not bc.is_music_path(root + "tracks/scotland/sheep.ogg", stk)
    assert not bc.is_music_path(root + "sfx/static-radio.ogg", stk)
    oad = bc.PACKAGE_BY_NAME["0ad-data"].music_pattern
    assert bc.is_music_path("audio/music/common/Theme.ogg", oad)
    assert not bc.is_music_path("audio/ambient/dayscape/x.ogg", oad)


def test_corpus_relpath(bc):
    assert bc.corpus_relpath("p", "usr/share/p/music/a.ogg", cropped=False) == \
        "audio/p/usr/share/p/music/a.ogg"
    assert bc.corpus_relpath("p", "usr/x/music.pk3::sound/../t.ogg", cropped=True) == \
        "audio/p/usr/x/music.pk3/sound/t.flac"


def test_licence_names(bc):
    text = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
            "Files: *\nCopyright: someone\nLicense: GPL-2+\n\n"
            "Files: music/*\nLicense: CC-BY-SA-3.0\n long text\n\nLicense: GPL-2+\n text\n")
    assert bc.licence_names(text) == ["GPL-2+", "CC-BY-SA-3.0"]
    assert bc.licence_names("free text only") == []


def test_select_packages(bc):
    assert [p.name for p in bc.select_packages("asc-music, warzone2100-music")] == \
        ["warzone2100-music", "asc-music"]            # list order, not argument order
    assert len(bc.select_packages(None)) == len(bc.PACKAGES)
    with pytest.raises(ConfigError, match="nosuchpkg"):
        bc.select_packages("nosuchpkg")
    names = [p.name for p in bc.PACKAGES]
    assert len(names) == len(set(names)) == 26


# --------------------------------------------------------------------------- split, manifest
def test_split_is_deterministic_and_near_the_fraction(bc):
    paths = [f"audio/pkg/track{i:04d}.ogg" for i in range(4000)]
    first = [bc.split_for(p) for p in paths]
    assert first == [bc.split_for(p) for p in paths]
    share = first.count("validation") / len(first)
    assert 0.035 < share < 0.065
    assert set(first) == {"train", "validation"}
    assert all(bc.split_for(p, 0.0) == "train" for p in paths[:50])
    assert all(bc.split_for(p, 100.0) == "validation" for p in paths[:50])


def test_write_csv(bc, tmp_path):
    rows = [{"path": "a.ogg", "duration_s": 61.23456, "channels": 2, "extra": "x"},
            {"path": "b,c.ogg", "duration_s": 30.0, "channels": None}]
    out = tmp_path / "m.csv"
    bc.write_csv(out, ("path", "duration_s", "channels"), rows)
    with open(out, newline="") as fh:
        got = list(csv.DictReader(fh))
    assert got == [{"path": "a.ogg", "duration_s": "61.235", "channels": "2"},
                   {"path": "b,c.ogg", "duration_s": "30.000", "channels": ""}]
    assert not (tmp_path / "m.csv.tmp").exists()


def _fake_state(out: Path, package: str, tracks: list[tuple[str, str, float]]) -> None:
    """A processed-package state with tiny real files (path, sha, duration)."""
    candidates = []
    for name, sha, duration in tracks:
        rel = f"audio/{package}/{name}"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(sha.encode())
        candidates.append({"path": rel, "package": package, "package_version": "1.0-1",
                           "original_path": name, "duration_s": duration, "samplerate": 44100,
                           "channels": 2, "sha256": sha, "original_duration_s": duration,
                           "source_sha256": sha, "loop_period_s": None,
                           "fingerprint": [float(len(name))] * 100})
    state = {"package": package, "version": "1.0-1", "deb": f"{package}.deb", "deb_bytes": 10,
             "deb_sha256": "0" * 64, "licences": ["GPL-2+"], "note": "", "settings": {},
             "audio_files_seen": len(tracks) + 1, "not_music_path": 0, "candidates": candidates,
             "rejected": [{"path": f"{package}:x.wav", "package": package,
                           "reason": "too_short", "detail": "2.0s"}],
             "seconds_taken": 1.0}
    (out / ".state").mkdir(parents=True, exist_ok=True)
    (out / ".state" / f"{package}.json").write_text(json.dumps(state))


def test_assemble_dedupes_across_packages_in_list_order(bc, tmp_path):
    first, second = bc.PACKAGES[0].name, bc.PACKAGES[1].name
    # the later package is written first: list order still decides who is kept
    _fake_state(tmp_path, second, [("t1.ogg", "same", 60.0), ("t2.ogg", "s2", 90.0)])
    _fake_state(tmp_path, first, [("a.ogg", "same", 60.0)])
    summary = bc.assemble(tmp_path)
    with open(tmp_path / "manifest.csv", newline="") as fh:
        manifest = list(csv.DictReader(fh))
    with open(tmp_path / "rejected.csv", newline="") as fh:
        rejected = list(csv.DictReader(fh))
    assert [m["path"] for m in manifest] == [f"audio/{first}/a.ogg", f"audio/{second}/t2.ogg"]
    assert list(manifest[0]) == list(bc.MANIFEST_COLUMNS)
    assert all(m["split"] in ("train", "validation") for m in manifest)
    assert [m["split"] for m in manifest] == [bc.split_for(m["path"]) for m in manifest]
    reasons = sorted(r["reason"] for r in rejected)
    assert reasons == ["duplicate", "too_short", "too_short"]
    assert not (tmp_path / f"audio/{second}/t1.ogg").exists()   # duplicate's audio removed
    assert summary["tracks"] == 2 and summary["hours"] == pytest.approx(150 / 3600, abs=1e-3)
    assert summary["rejected_by_reason"] == {"duplicate": 1, "too_short": 2}
    # running it again gives the same tables (idempotent)
    before = (tmp_path / "manifest.csv").read_text()
    bc.assemble(tmp_path)
    assert (tmp_path / "manifest.csv").read_text() == before


def test_assemble_without_packages_is_a_clear_error(bc, tmp_path):
    with pytest.raises(MusicsslError, match="no processed package"):
        bc.assemble(tmp_path)


def test_bad_options(bc):
    with pytest.raises(ConfigError):
        bc.parse_args(["--max-track-seconds", "10", "--min-track-seconds", "30"])
    args = bc.parse_args(["--max-track-seconds", "0", "--loop-check-seconds", "0"])
    assert args.max_track_seconds is None and args.loop_check_seconds is None
