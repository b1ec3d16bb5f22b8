"""Device-resident batches (key and ZeroNS): same distributions as the DataLoader path, seeded, resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musicssl.errors import ConfigError
from musicssl.dsp.cqt import compress_db, FrontEndConfig
from musicssl.key.dataset import choose_segments, make_views, random_eq_db, segment_frames, SegmentConfig
from musicssl.key.device_data import (
    DeviceBatchLoader, KeyBank, assemble_batch, batch_generator, draw_eq_db, draw_segments,
)

FE = FrontEndConfig(hop_length=2048)


def _bank(lengths=(400, 60, 30, 200), keys=("C major", None, "A minor", "Eb major")) -> KeyBank:
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(-100, 0, (FE.n_bins, n)).astype(np.float16) for n in lengths]
    return KeyBank.from_arrays(arrays, FE.to_dict(), list(keys))


def test_segments_follow_the_dataloader_rules():
    seg = 40
    n = torch.tensor([400] * 3000 + [60] * 3000)
    a, b = draw_segments(n, seg, batch_generator(0, 1, 2))
    long_a, long_b = a[:3000], b[:3000]
    assert int(torch.minimum(long_a, long_b).min()) >= 0 and int(torch.maximum(long_a, long_b).max()) <= 400 - seg
    assert bool(((long_a - long_b).abs() >= seg).all())                  # disjoint
    assert 0.45 < float((long_a < long_b).float().mean()) < 0.55        # random order
    # the first segment's start has the DataLoader path's distribution (min of two uniforms)
    rng = np.random.default_rng(0)
    old = np.array([min(choose_segments(400, seg, rng)) for _ in range(3000)])
    assert abs(float(torch.minimum(long_a, long_b).float().mean()) - old.mean()) < 6
    short = torch.stack([a[3000:], b[3000:]], 1)
    assert set(map(tuple, short.tolist())) == {(0, 20), (20, 0)}        # the two ends, either order


def test_eq_curves_match_the_per_item_curves_in_distribution():
    gen = batch_generator(0, 0)
    new = draw_eq_db((4000,), 99, 12.0, gen).numpy()
    rng = np.random.default_rng(1)
    old = np.stack([random_eq_db(rng, 99, 12.0) for _ in range(4000)])
    assert new.shape == (4000, 99) and np.abs(new).max() <= 12.0
    for stat in (lambda x: np.abs(x).mean(), lambda x: np.abs(np.diff(x, axis=1)).mean(), lambda x: x.std()):
        assert stat(new) == pytest.approx(stat(old), rel=0.05)
    assert not draw_eq_db((2,), 99, 0.0, gen).any()


def test_assembled_views_equal_the_dataloader_item_for_the_same_draws():
    bank = _bank()
    seg = 40
    tracks, a, b = torch.tensor([0, 3]), torch.tensor([10, 150]), torch.tensor([300, 0])
    o, o2 = torch.tensor([1, 12]), torch.tensor([5, 3])
    eq = draw_eq_db((2, 2), FE.n_bins, 12.0, batch_generator(5))
    batch = assemble_batch(bank, tracks, a, b, o, o2, seg, FE.top_db, FE.crop_bins, eq)
    for row in range(2):          # what PairDataset.__getitem__ does with the cache
        db = bank.db[:, int(bank.starts[tracks[row]]):].numpy()
        ab = np.stack([db[:, a[row]:a[row] + seg], db[:, b[row]:b[row] + seg]]).astype(np.float32)
        ab += eq[row].numpy()[:, :, None]
        views, profile = make_views(torch.from_numpy(compress_db(ab, FE.top_db))[None], o[row:row + 1],
                                    o2[row:row + 1], FE.crop_bins)
        torch.testing.assert_close(batch["views"][row], views[0])
        torch.testing.assert_close(batch["profile"][row], profile[0])
    # labels in the crop frame: C major at o = 1 (bin 1 is A#: pitch class 10) -> column 2
    assert batch["labelled"].tolist() == [1, 1] and batch["is_major"].tolist() == [1, 1]
    assert batch["tonic_column"][0] == (0 - 10) % 12
    assert batch["k"].tolist() == [4, -9]


def test_loader_is_seeded_resumable_and_covers_every_track_once_per_epoch():
    bank = _bank(lengths=(400, 60, 30, 200, 90, 120, 80, 77), keys=[None] * 8)
    segs = SegmentConfig(segment_seconds=3.0, seed=3)
    loader = DeviceBatchLoader(bank, FE, segs, batch_size=3, eq_db=6.0)
    seg = segment_frames(3.0, FE.sr, FE.hop_length)
    assert loader.seg == seg and len(loader.bank) == 8 - 1          # the 30-frame track is too short
    assert loader.counts["too_short"] == 1
    first = list(loader)
    assert len(first) == len(loader) == 2
    seen = torch.cat([x["index"] for x in first]).tolist()
    assert len(set(seen)) == 6
    again = list(loader)
    torch.testing.assert_close(first[1]["views"], again[1]["views"])  # same epoch -> same batches
    loader.sampler.set_epoch(1)
    other = list(loader)
    assert not torch.equal(first[0]["views"], other[0]["views"])
    assert set(first[0]["o"].tolist() + first[1]["o"].tolist()) <= set(range(1, 13))
    assert bool((first[0]["k"] != 0).all())
    loader.sampler.resume_at(1, 3)                                   # skip the first batch of epoch 1
    resumed = list(loader)
    assert len(resumed) == 1
    torch.testing.assert_close(resumed[0]["views"], other[1]["views"])
    assert resumed[0]["views"].shape == (3, 3, FE.crop_bins, seg)


def test_loader_rejects_another_front_end():
    with pytest.raises(ConfigError):
        DeviceBatchLoader(_bank(), FrontEndConfig(hop_length=1024), SegmentConfig(2.0), 2)


def test_key_bank_file_round_trip(tmp_path):
    bank = _bank()
    bank.split[1] = "val"
    path = bank.save(tmp_path / "bank.safetensors")
    back = KeyBank.load(path)
    assert torch.equal(back.db, bank.db) and back.ids == bank.ids and back.frontend == bank.frontend
    assert back.tonic.tolist() == [0, -1, 9, 3]
    val = back.subset("val")
    assert len(val) == 1 and torch.equal(val.db, bank.db[:, 400:460])
    (tmp_path / "junk.safetensors").write_bytes(b"not a bank")
    with pytest.raises(ConfigError):
        KeyBank.load(tmp_path / "junk.safetensors")


def test_key_bank_uint8_file_keeps_each_track_within_a_quarter_decibel(tmp_path):
    from musicssl.key.device_data import CODE_RANGE_DB

    rng = np.random.default_rng(1)
    arrays = [rng.uniform(-60, 12, (FE.n_bins, 50)), rng.uniform(-100, -30, (FE.n_bins, 20))]
    arrays[0][0, 0] = 12.0                      # track 0 peaks at 12 dB: -115 dB lies below its coded range
    arrays[0][1, 1] = -115.0
    bank = KeyBank.from_arrays([a.astype(np.float16) for a in arrays], FE.to_dict(), ["A minor", None])
    small = bank.save(tmp_path / "u8.safetensors", storage="uint8").stat().st_size
    exact = bank.save(tmp_path / "f16.safetensors").stat().st_size
    assert small < 0.55 * exact
    back = KeyBank.load(tmp_path / "u8.safetensors")
    assert back.db.dtype == torch.float16 and back.ids == bank.ids and back.tonic.tolist() == [9, -1]
    error = (back.db.float() - bank.db.float()).abs()
    floor0 = 12.0 - CODE_RANGE_DB
    assert float(back.db[1, 1]) == pytest.approx(floor0, abs=0.1)          # clipped to the track's floor
    error[1, 1] = 0.0
    assert float(error.max()) <= 0.5 * CODE_RANGE_DB / 255 + 0.07          # half a step (+ float16 rounding)
    assert torch.equal(KeyBank.load(tmp_path / "f16.safetensors").db, bank.db)
    with pytest.raises(ConfigError, match="storage must be"):
        bank.save(tmp_path / "x.safetensors", storage="int4")
    from musicssl.io.model_file import restored_features

    with pytest.raises(ConfigError, match="lacks the tensor"):
        restored_features({"db": bank.db}, "db", bank.lengths, CODE_RANGE_DB, "uint8")
    with pytest.raises(ConfigError, match="not one of"):
        restored_features({"db": bank.db}, "db", bank.lengths, CODE_RANGE_DB, None)


# --------------------------------------------------------------------------- ZeroNS clips
def _clip_bank():
    from musicssl.beat.device_data import ClipBank

    rng = np.random.default_rng(0)
    loud = rng.uniform(0.01, 0.5, 900).astype(np.float32)           # varying percussive RMS
    flat = np.full(700, 0.1, np.float32)                            # no onsets: always skipped
    feats = [rng.standard_normal((2, 96, 900)), np.zeros((2, 96, 700))]
    return ClipBank.from_arrays(feats, [loud, flat])


def test_clip_loader_skips_silent_clips_and_is_keyed_by_step():
    from musicssl.beat.data import percussive_is_silent
    from musicssl.beat.device_data import DeviceClipLoader

    bank = _clip_bank()
    loader = DeviceClipLoader(bank, clip_seconds=2.0, batch_size=16, clips_per_epoch=64, seed=1)
    first = loader.draw(7)
    assert bool((first + loader.clip_frames <= 900).all())          # all from the loud track
    # the prefix-sum silence test agrees with the DataLoader path's test
    rms = bank.rms.float().numpy()
    for s in (0, 100, 650, 900, 1300):
        assert bool(loader.silent(torch.tensor(s))) == percussive_is_silent(rms[s:s + loader.clip_frames])
    perc, rest = loader.batch(7)
    assert perc.shape == rest.shape == (16, 1, 96, 125) and perc.dtype == torch.float32
    s0 = int(first[0])
    torch.testing.assert_close(perc[0, 0], bank.feats[0, :, s0:s0 + 125].float())
    torch.testing.assert_close(loader.batch(7)[0], perc)            # same step -> same clips
    assert not torch.equal(loader.batch(8)[0], perc)
    step = [3]
    loader.step_source = lambda: step[0]
    batches = list(loader)
    assert len(batches) == 4
    torch.testing.assert_close(batches[0][0], loader.batch(3)[0])


def test_clip_bank_round_trip(tmp_path):
    from musicssl.beat.device_data import ClipBank

    bank = _clip_bank()
    back = ClipBank.load(bank.save(tmp_path / "clips.safetensors"))
    assert torch.equal(back.feats, bank.feats) and back.ids == bank.ids
    assert back.seconds == pytest.approx(1600 / 62.5)
    with pytest.raises(ConfigError):
        ClipBank.load(tmp_path / "missing.safetensors")


def test_clip_bank_uint8_file_is_half_the_size_and_within_half_a_step(tmp_path):
    from musicssl.beat.device_data import CODE_SPAN, ClipBank

    bank = _clip_bank()
    exact = bank.save(tmp_path / "f16.safetensors").stat().st_size
    back = ClipBank.load(bank.save(tmp_path / "u8.safetensors", storage="uint8"))
    assert (tmp_path / "u8.safetensors").stat().st_size < 0.55 * exact
    assert torch.equal(back.rms, bank.rms) and back.ids == bank.ids
    error = (back.feats.float() - bank.feats.float()).abs()
    assert float(error.max()) <= 0.5 * CODE_SPAN / 255 + 0.01          # the normal features span < 16
    assert torch.equal(back.feats[..., 900:], bank.feats[..., 900:])   # a constant track comes back exactly
