"""Key training data: manifests, scan, split, segments, transpositions, feature cache, sampler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from musicssl.errors import AnnotationError, ConfigError
from musicssl.dsp.cqt import compress_db, CQT, crop_bins, FrontEndConfig, log_compress
from musicssl.io import tracks as T
from musicssl.key import dataset as D

SR = 22050


def _tone_track(path, seconds, midi=60, sr=SR):
    t = np.arange(int(seconds * sr)) / sr
    f = 440 * 2 ** ((midi - 69) / 12)
    x = sum(np.sin(2 * np.pi * h * f * t) / h for h in range(1, 5)) * (0.3 + 0.2 * np.sin(t))
    sf.write(path, (0.5 * x / np.abs(x).max()).astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "a").mkdir()
    for i, sec in enumerate([8.0, 9.0, 5.0, 2.0]):
        _tone_track(root / "a" / f"t{i}.wav", sec, midi=55 + i)
    (root / "a" / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    return root


def test_manifest_csv_txt_and_errors(tmp_path):
    (tmp_path / "m.csv").write_text("path,key,split\nx.wav,A minor,val\nsub/y.wav,,\n")
    tracks = T.read_manifest(tmp_path / "m.csv")
    assert [t.path for t in tracks] == [str(tmp_path / "x.wav"), str(tmp_path / "sub/y.wav")]
    assert tracks[0].key == "A minor" and tracks[0].split == "val" and tracks[1].key is None
    (tmp_path / "m.txt").write_text("# comment\n/abs/z.wav\nrel.ogg\n")
    assert [t.path for t in T.read_manifest(tmp_path / "m.txt")] == ["/abs/z.wav", str(tmp_path / "rel.ogg")]
    (tmp_path / "bad.csv").write_text("file,key\nx.wav,C major\n")
    with pytest.raises(AnnotationError):
        T.read_manifest(tmp_path / "bad.csv")


def test_scan_rejects_with_reason_and_caches(corpus, tmp_path):
    tracks = T.gather_tracks([corpus])
    assert len(tracks) == 5
    cache_file = tmp_path / "scan.json"
    report = T.scan_tracks(tracks, cache_file, min_duration_s=3.0)
    usable = sorted(p.rsplit("/", 1)[-1] for p in (t.path for t in report.usable))
    assert usable == ["t0.wav", "t1.wav", "t2.wav"]
    reasons = dict((p.rsplit("/", 1)[-1], r) for p, r in report.rejected)
    assert set(reasons) == {"broken.wav", "t3.wav"}
    assert "too short" in reasons["t3.wav"] and "Error" in reasons["broken.wav"]
    assert report.usable[0].duration_s == pytest.approx(8.0, abs=0.01)
    cached = json.loads(cache_file.read_text())
    assert len(cached) == 5
    # second scan uses the cache: same answer even if the checker would now fail
    original = T._check_track
    try:
        T._check_track = lambda *a, **k: (_ for _ in ()).throw(AssertionError("not cached"))
        again = T.scan_tracks(tracks, cache_file, min_duration_s=3.0)
    finally:
        T._check_track = original
    assert len(again.usable) == 3


def test_split_by_track_is_stable_and_honours_split_column():
    tracks = [T.Track(path=f"/x/{i}.wav") for i in range(200)]
    train, val = T.split_tracks(tracks, 0.1, seed=3)
    assert not {t.path for t in train} & {t.path for t in val}
    assert 8 <= len(val) <= 35
    train2, val2 = T.split_tracks(tracks + [T.Track(path="/x/new.wav")], 0.1, seed=3)
    assert {t.path for t in val} <= {t.path for t in val2}          # adding a file moves no other
    forced = T.split_tracks([T.Track(path="/a", split="val"), T.Track(path="/b", split="train")], 0.0)
    assert [t.path for t in forced[1]] == ["/a"] and [t.path for t in forced[0]] == ["/b"]


def test_segments_disjoint_overlap_and_skip():
    rng = np.random.default_rng(0)
    seg = 100
    for _ in range(200):
        a, b = D.choose_segments(450, seg, rng)
        assert 0 <= a <= 350 and 0 <= b <= 350 and abs(a - b) >= seg
    a, b = D.choose_segments(150, seg, rng, "overlap")
    assert {a, b} == {0, 50}
    assert D.choose_segments(150, seg, rng, "skip") is None
    assert D.choose_segments(99, seg, rng, "overlap") is None
    assert D.segment_policy_counts([450, 150, 99, 200], seg) == {"disjoint": 2, "overlapping": 1, "too_short": 1}
    with pytest.raises(ConfigError):
        D.SegmentConfig(short_tracks="pad")


def test_transposition_draws_follow_the_spec():
    rng = np.random.default_rng(1)
    seen_o, seen_k = set(), set()
    for _ in range(3000):
        o, o2, k = D.draw_transposition(rng)
        assert 1 <= o <= 12 and 0 <= o2 <= 11 and k == o2 - o and k != 0
        assert (o2 - o) % 12 != 0 and o + 84 <= 99 and o2 + 84 <= 99
        seen_o.add(o)
        seen_k.add(k)
    assert seen_o == set(range(1, 13))
    assert seen_k == set(range(-11, 11)) - {0}


def test_make_views_matches_crop_bins_and_profile():
    torch.manual_seed(0)
    x = torch.rand(3, 2, 99, 20)
    o = torch.tensor([1, 12, 5])
    o2 = torch.tensor([0, 11, 9])
    views, profile = D.make_views(x, o, o2, 84)
    assert views.shape == (3, 3, 84, 20)
    assert torch.equal(views[:, 0], crop_bins(x[:, :1], o)[:, 0])
    assert torch.equal(views[:, 1], crop_bins(x[:, 1:2], o)[:, 0])
    assert torch.equal(views[:, 2], crop_bins(x[:, :1], o2)[:, 0])
    expected = (views[:, :2].mean(dim=(1, 3))).view(3, 7, 12).mean(1)
    assert torch.allclose(profile, expected)


def test_compress_db_equals_frontend_log_compress():
    mag = torch.rand(2, 99, 30) ** 6
    mag[0, :, :5] = 0.0
    db = 10 * torch.log10(mag.clamp_min(1e-10))
    assert torch.allclose(compress_db(db), log_compress(mag), atol=1e-6)
    assert np.allclose(compress_db(db.numpy()), log_compress(mag).numpy(), atol=1e-6)


def test_feature_cache_segments_equal_direct_cqt(corpus, tmp_path):
    fe = FrontEndConfig(hop_length=1024)
    report = T.scan_tracks(T.gather_tracks([corpus]), min_duration_s=3.0)
    cache = D.FeatureCache(tmp_path / "cache", fe)
    failed = cache.build(report.usable, progress=False)
    assert failed == {}
    track = next(t for t in report.usable if t.path.endswith("t0.wav"))
    db = cache.array(track.path)
    assert db.dtype == np.float16 and db.shape[0] == 99
    from musicssl.io.audio import load_audio

    audio = load_audio(track.path, sr=SR)
    mag = CQT(hop_length=1024)(torch.from_numpy(audio))[0]
    assert db.shape[1] == mag.shape[1]
    # a segment from the cache, log-compressed per segment, vs the direct CQT's same frames
    seg = slice(40, 120)
    direct = log_compress(mag[None, :, seg])[0]
    cached = compress_db(torch.from_numpy(np.asarray(db[:, seg], dtype=np.float32)))
    assert (direct - cached).abs().max().item() < 2e-3       # float16 storage of decibels
    # reopening checks the front end; other settings are refused
    assert track.path in D.FeatureCache(tmp_path / "cache", fe)
    with pytest.raises(ConfigError):
        D.FeatureCache(tmp_path / "cache", FrontEndConfig(hop_length=512))


def test_feature_cache_recomputes_changed_files_and_retries_failures(tmp_path):
    import json
    import os

    fe = FrontEndConfig(hop_length=2048)
    good = _tone_track(tmp_path / "good.wav", 4.0, midi=60)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF0000WAVEjunk")
    tracks = [T.Track(str(good), 4.0), T.Track(str(bad), 4.0)]
    cache = D.FeatureCache(tmp_path / "cache", fe)
    assert set(cache.build(tracks, progress=False)) == {str(bad)}
    first = cache.index["tracks"][str(good)]["file"]
    first_frames = cache.n_frames(str(good))
    # unchanged: nothing is recomputed, the failure stays
    assert set(cache.build(tracks, progress=False)) == {str(bad)}
    assert not cache._needs_work(str(good)) and not cache._needs_work(str(bad))
    assert cache._needs_work(str(bad), retry_failed=True)
    # both files change (another length, a later mtime): the good one is recomputed, the bad one now decodes
    _tone_track(good, 6.0, midi=62)
    _tone_track(bad, 5.0, midi=64)
    for path in (good, bad):
        os.utime(path, (os.stat(path).st_atime, os.stat(path).st_mtime + 10))
    reopened = D.FeatureCache(tmp_path / "cache", fe)
    assert reopened.build(tracks, progress=False) == {}
    assert reopened.index["tracks"][str(good)]["file"] != first
    assert not (tmp_path / "cache" / first).exists()                  # the stale features are gone
    assert reopened.array(str(good)).shape[1] == reopened.n_frames(str(good)) > first_frames   # 6 s, not 4 s
    assert str(bad) in reopened and reopened.index["failed"] == {}
    # a failure recorded without a stamp (older caches) is tried again once
    index = json.loads((tmp_path / "cache" / D.CACHE_INDEX).read_text())
    assert index["failed"] == {} and str(bad) in index["tracks"]
    index["tracks"].pop(str(bad))
    index["failed"] = {str(bad): "AugmentError: mp3 encoding failed"}
    index.pop("failed_stamps", None)
    (tmp_path / "cache" / D.CACHE_INDEX).write_text(json.dumps(index))
    old = D.FeatureCache(tmp_path / "cache", fe)
    assert old.build(tracks, progress=False) == {}
    assert str(bad) in old


def test_feature_cache_derived_at_coarser_hop_equals_built(corpus, tmp_path):
    report = T.scan_tracks(T.gather_tracks([corpus]), min_duration_s=3.0)
    fine = D.FeatureCache(tmp_path / "h512", FrontEndConfig(hop_length=512))
    fine.build(report.usable, progress=False)
    built = D.FeatureCache(tmp_path / "built", FrontEndConfig(hop_length=1024))
    built.build(report.usable, progress=False)
    derived = D.FeatureCache(tmp_path / "derived", FrontEndConfig(hop_length=1024))
    assert derived.derive_from(D.FeatureCache.open(tmp_path / "h512"), report.usable) == len(report.usable)
    assert derived.derive_from(fine, report.usable) == 0                  # nothing left to add
    for t in report.usable:
        assert derived.n_frames(t.path) == built.n_frames(t.path)
        np.testing.assert_array_equal(derived.array(t.path), built.array(t.path))
    reopened = D.FeatureCache.open(tmp_path / "derived")
    assert reopened.frontend_config.hop_length == 1024 and all(t.path in reopened for t in report.usable)
    with pytest.raises(ConfigError, match="cannot derive"):                # 1536 is not a multiple of 1024
        D.FeatureCache(tmp_path / "x", FrontEndConfig(hop_length=1536)).derive_from(built, report.usable)
    with pytest.raises(ConfigError, match="cannot derive"):                # other bins
        D.FeatureCache(tmp_path / "y", FrontEndConfig(hop_length=1024, n_bins=100)).derive_from(fine, report.usable)
    with pytest.raises(ConfigError, match="no feature cache"):
        D.FeatureCache.open(tmp_path / "nowhere")


def test_pair_dataset_deterministic_per_epoch_and_labels(corpus, tmp_path):
    fe = FrontEndConfig(hop_length=1024)
    report = T.scan_tracks(T.gather_tracks([corpus]), min_duration_s=3.0)
    tracks = [T.Track(t.path, t.duration_s, t.samplerate, key="E minor") for t in report.usable]
    cache = D.FeatureCache(tmp_path / "c", fe)
    cache.build(tracks, progress=False)
    seg = D.SegmentConfig(segment_seconds=2.0, seed=5)
    ds = D.PairDataset(tracks, fe, seg, cache)
    assert len(ds) == 3
    assert ds.counts["disjoint"] == 3
    n = len(ds)
    a, b = ds[0], ds[0]
    assert torch.equal(a["views"], b["views"]) and a["k"] == b["k"]
    other_epoch = ds[n + 0]
    assert not (torch.equal(a["views"], other_epoch["views"]) and a["o"] == other_epoch["o"])
    assert a["views"].shape == (3, 84, D.segment_frames(2.0, SR, 1024))
    assert a["views"].min() >= 0.0
    # E minor: tonic pitch class 4; crop at o starts on pitch class (o + 9) % 12
    assert a["labelled"] == 1 and a["is_major"] == 0
    assert (a["tonic_column"] + a["o"] + 9) % 12 == 4
    # the audio path yields raw segments of the same length
    ds_audio = D.PairDataset(tracks, fe, seg, None)
    item = ds_audio[1]
    assert item["audio"].shape == (2, int(2.0 * SR))
    fe_module = __import__("musicssl.dsp.cqt", fromlist=["KeyFrontEnd"]).KeyFrontEnd(fe)
    views, profile = D.audio_batch_views(fe_module, item["audio"][None], torch.tensor([item["o"]]),
                                         torch.tensor([item["o2"]]))
    assert views.shape == (1, 3, 84, D.segment_frames(2.0, SR, 1024)) and profile.shape == (1, 12)


def test_random_eq_is_smooth_bounded_and_seeded():
    curves = [D.random_eq_db(np.random.default_rng(i), 99, 12.0) for i in range(50)]
    for c in curves:
        assert c.shape == (99,) and c.dtype == np.float32
        assert np.abs(c).max() <= 12.0 + 1e-5
        assert np.abs(np.diff(c)).max() < 3.0           # a semitone apart: nearly the same gain
    assert max(np.abs(c).max() for c in curves) > 6.0   # and it does change the balance
    assert np.array_equal(D.random_eq_db(np.random.default_rng(3), 99, 12.0), curves[3])
    assert not D.random_eq_db(np.random.default_rng(0), 99, 0.0).any()


def test_pair_dataset_eq_changes_segments_not_positions(corpus, tmp_path):
    fe = FrontEndConfig(hop_length=1024)
    report = T.scan_tracks(T.gather_tracks([corpus]), min_duration_s=3.0)
    cache = D.FeatureCache(tmp_path / "c", fe)
    cache.build(report.usable, progress=False)
    seg = D.SegmentConfig(segment_seconds=2.0, seed=5)
    plain, eq = D.PairDataset(report.usable, fe, seg, cache), D.PairDataset(report.usable, fe, seg, cache, eq_db=12.0)
    a, b = plain[1], eq[1]
    assert (a["o"], a["o2"], a["k"]) == (b["o"], b["o2"], b["k"])     # same segments and transposition
    assert a["views"].shape == b["views"].shape
    assert not torch.allclose(a["views"], b["views"])
    assert torch.equal(b["views"], eq[1]["views"])                      # deterministic
    with pytest.raises(ConfigError, match="cache"):
        D.PairDataset(report.usable, fe, seg, None, eq_db=6.0)
    with pytest.raises(ConfigError, match="eq_db"):
        D.PairDataset(report.usable, fe, seg, cache, eq_db=-1.0)


def test_epoch_sampler_shards_and_skips():
    s0 = D.EpochSampler(10, seed=1, rank=0, world_size=2)
    s1 = D.EpochSampler(10, seed=1, rank=1, world_size=2)
    a, b = list(s0), list(s1)
    assert len(a) == len(b) == 5 and not set(a) & set(b)
    s0.set_epoch(3)
    e3 = list(s0)
    assert all(30 <= i < 40 for i in e3) and [i % 10 for i in e3] != [i % 10 for i in a]
    s0.resume_at(3, 2)
    assert list(s0) == e3[2:]
    assert list(s0) == e3[2:]                               # however often epoch 3 is iterated
    s0.set_epoch(4)
    assert len(list(s0)) == 5                               # later epochs are whole
    with pytest.raises(ConfigError):
        D.EpochSampler(1, world_size=2)
