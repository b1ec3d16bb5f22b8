"""Training throughput of the key models: items/s and the data-loading share of step time.

One item = two segments of one track -> three views (A, B at offset o; A at o'),
forward + backward + AdamW step, exactly the training step of
``musicssl.key.train.KeyTrainingModule`` (without Lightning's bookkeeping).

Prints, for each setting:
  * network only (views already in memory): items/s;
  * full pipeline with the feature cache (DataLoader workers cut segments from
    memory-mapped float16 CQT decibels): items/s and the share of wall time
    spent waiting for data;
  * full pipeline without the cache (workers decode audio segments, the CQT
    runs in the training step): items/s and data-wait share;
  * old vs new data pipeline side by side (``--pipelines ...,device``), steps
    interleaved so the machine's other load hits both alike: the DataLoader path
    (``data_pipeline: loader``) and device-resident batches (``data_pipeline:
    device``, :mod:`musicssl.key.device_data`), each as data only and as whole
    training steps; and the same for ZeroNS clips (``--zerons``,
    :mod:`musicssl.beat.device_data`).

Usage::

    python benchmarks/train_throughput.py                      # synthetic tracks, default settings
    python benchmarks/train_throughput.py --data work-data/corpus/manifest.csv --tracks 64
    python benchmarks/train_throughput.py --settings naive,cl,cl-hop1024,cl-hop1024-bf16
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --settings cl-hop2048 --pipelines device \
        --threads 1 --batch-size 32 --steps 6 --zerons      # old vs new pipeline, S-KEY and ZeroNS

The machine's other load changes the figures: compare settings run together,
and report the median of several steps (``--steps``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SETTINGS = {
    # name: (hop_length, channels_last, bf16 autocast)
    "naive": (512, False, False),
    "cl": (512, True, False),
    "cl-bf16": (512, True, True),
    "cl-hop1024": (1024, True, False),
    "cl-hop1024-bf16": (1024, True, True),
    "cl-hop2048": (2048, True, False),
    "cl-hop2048-bf16": (2048, True, True),
}


def synth_tracks(folder: Path, n: int, seconds: float, sr: int = 22050) -> list[Path]:
    """``n`` tracks of harmonic-tone melodies (random keys), WAV."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    note = int(0.25 * sr)
    t = np.arange(note) / sr
    paths = []
    for i in range(n):
        tonic = int(rng.integers(12))
        parts = []
        for _ in range(int(seconds / 0.25)):
            f = 440 * 2 ** ((57 + tonic + (0, 2, 4, 5, 7, 9, 11)[rng.integers(7)] - 69) / 12)
            parts.append(sum(np.sin(2 * np.pi * h * f * t) / h for h in range(1, 6)) * np.exp(-4 * t))
        x = np.concatenate(parts)
        path = folder / f"t{i:03d}.wav"
        sf.write(path, (0.5 * x / np.abs(x).max()).astype(np.float32), sr)
        paths.append(path)
    return paths


def make_module(hop: int, channels_last: bool, objective: str, segment_seconds: float):
    from musicssl.key.lightning import KeyTrainingModule
    from musicssl.key.config import TrainConfig

    cfg = TrainConfig(data=["x"], hop_length=hop, channels_last=channels_last, objective=objective,
                      segment_seconds=segment_seconds, progress=False)
    module = KeyTrainingModule(cfg.to_dict())
    module.train()
    return module, cfg


def timed_steps(module, batches, bf16: bool, steps: int, warmup: bool = True) -> tuple[list[float], list[float]]:
    """Run ``steps`` timed training steps (after one untimed warm-up step); returns per-step
    (wait for data, compute) seconds."""
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-3)
    waits, computes = [], []
    it = iter(batches)
    for i in range(int(not warmup), steps + 1):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = module._loss(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        if i:
            waits.append(t1 - t0)
            computes.append(t2 - t1)
    return waits, computes


def report(name: str, batch: int, waits: list[float], computes: list[float], seg_s: float) -> str:
    totals = [w + c for w, c in zip(waits, computes)]
    med = statistics.median(totals)
    share = sum(waits) / max(sum(totals), 1e-9)
    items = batch / med
    return (f"{name:38s} {items:6.2f} items/s  {items * 2 * seg_s / 3600:.4f} audio-h/s  "
            f"data wait {100 * share:5.1f} %  (median step {med:.2f} s)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="folder or manifest of real audio (default: synthetic tracks)")
    p.add_argument("--tracks", type=int, default=24, help="tracks used (synthetic or first N)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--segment-seconds", type=float, default=15.0)
    p.add_argument("--settings", default="naive,cl,cl-hop1024,cl-hop1024-bf16")
    p.add_argument("--pipelines", default="network,cache,nocache")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--objective", default="skey")
    p.add_argument("--cache-dir", help="reuse/keep a feature cache here (default: temporary)")
    p.add_argument("--eq-db", type=float, default=12.0, help="EQ augmentation in the old-vs-new comparison")
    p.add_argument("--zerons", action="store_true", help="also compare the ZeroNS clip pipelines")
    p.add_argument("--zerons-width", type=float, default=0.125)
    p.add_argument("--zerons-batch", type=int, default=8)
    p.add_argument("--zerons-clip", type=float, default=6.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from musicssl.dsp.cqt import FrontEndConfig
    from musicssl.key.dataset import FeatureCache, make_loader, PairDataset, SegmentConfig
    from musicssl.io.tracks import gather_tracks, scan_tracks

    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    if args.data:
        tracks = gather_tracks(args.data)[: args.tracks]
    else:
        (root / "audio").mkdir()
        synth_tracks(root / "audio", args.tracks, 2.5 * args.segment_seconds)
        tracks = gather_tracks(root / "audio")
    tracks = scan_tracks(tracks).usable
    print(f"{len(tracks)} tracks, batch {args.batch_size}, segments {args.segment_seconds:g} s, "
          f"{args.threads} threads, {args.num_workers} workers, torch {torch.__version__}")
    pipelines = args.pipelines.split(",")
    names = args.settings.split(",")
    seg = SegmentConfig(args.segment_seconds, "overlap", 0)
    if "network" in pipelines:
        # settings interleaved step by step, so the machine's other load hits all alike
        b = args.batch_size
        runs = {}
        for name in names:
            hop, cl, bf16 = SETTINGS[name]
            t = PairDataset(tracks[:1], FrontEndConfig(hop_length=hop), seg, None).seg
            batch = {"views": torch.rand(b, 3, 84, t), "profile": torch.rand(b, 12),
                     "k": torch.randint(-11, 11, (b,)), "labelled": torch.zeros(b, dtype=torch.long),
                     "tonic_column": torch.zeros(b, dtype=torch.long), "is_major": torch.zeros(b, dtype=torch.long)}
            runs[name] = (make_module(hop, cl, args.objective, args.segment_seconds)[0], batch, bf16, [])
        for round_ in range(args.steps + 1):
            for name, (module, batch, bf16, times) in runs.items():
                _, computes = timed_steps(module, _repeat(batch), bf16, 0 if round_ == 0 else 1,
                                          warmup=round_ == 0)
                times.extend(computes)
        base = None
        for name, (_, _, _, times) in runs.items():
            best = b / min(times)
            base = base or best
            print(f"{name + ' network only':38s} {b / statistics.median(times):6.2f} items/s median, "
                  f"{best:6.2f} best  ({best / base:4.1f}x the first setting)", flush=True)
    for name in names:
        hop, cl, bf16 = SETTINGS[name]
        fe = FrontEndConfig(hop_length=hop)
        if not ({"cache", "nocache", "device"} & set(pipelines)):
            break
        module, _ = make_module(hop, cl, args.objective, args.segment_seconds)
        if "cache" in pipelines:
            cache_root = Path(args.cache_dir or root / "cache") / f"hop{hop}"
            cache = FeatureCache(cache_root, fe)
            t0 = time.perf_counter()
            cache.build(tracks, progress=False, num_workers=args.num_workers)
            build_s = time.perf_counter() - t0
            ds = PairDataset(tracks, fe, seg, cache)
            loader = make_loader(ds, args.batch_size, seed=0, num_workers=args.num_workers)
            waits, computes = timed_steps(module, _epochs(loader), bf16, args.steps)
            print(report(f"{name} with feature cache", args.batch_size, waits, computes, args.segment_seconds)
                  + f"  [cache build {build_s:.1f} s]", flush=True)
        if "device" in pipelines:
            compare_key_pipelines(tracks, fe, seg, module, bf16, args, root, name)
        if "nocache" in pipelines:
            ds = PairDataset(tracks, fe, seg, None)
            loader = make_loader(ds, args.batch_size, seed=0, num_workers=args.num_workers)
            waits, computes = timed_steps(module, _epochs(loader), bf16, args.steps)
            print(report(f"{name} without cache (decode+CQT)", args.batch_size, waits, computes,
                         args.segment_seconds), flush=True)
    if args.zerons:
        compare_zerons_pipelines(root, args)
    return 0


def _side_by_side(runs: dict, steps: int, step_fn) -> dict[str, list[float]]:
    """Per-step seconds of each ``name -> iterator`` run, one step of each in turn (after one warm-up)."""
    times = {name: [] for name in runs}
    for i in range(steps + 1):
        for name, it in runs.items():
            t0 = time.perf_counter()
            step_fn(next(it))
            if i:
                times[name].append(time.perf_counter() - t0)
    return times


def _print_pair(title: str, batch: int, times: dict[str, list[float]]) -> None:
    rates = {name: batch / statistics.median(t) for name, t in times.items()}
    old, new = rates["old"], rates["new"]
    print(f"{title:38s} old (DataLoader) {old:8.1f} items/s   new (device-resident) {new:8.1f} items/s   "
          f"new/old {new / old:5.2f}x", flush=True)


def compare_key_pipelines(tracks, fe, seg, module, bf16: bool, args, root: Path, name: str) -> None:
    """S-KEY: DataLoader items vs device-resident batches, data only and whole training steps."""
    from musicssl.key.dataset import FeatureCache, make_loader, PairDataset
    from musicssl.key.device_data import DeviceBatchLoader, KeyBank

    cache = FeatureCache(Path(args.cache_dir or root / "cache") / f"hop{fe.hop_length}", fe)
    cache.build(tracks, progress=False, num_workers=args.num_workers)
    ds = PairDataset(tracks, fe, seg, cache, eq_db=args.eq_db)
    old = make_loader(ds, args.batch_size, seed=0, num_workers=args.num_workers)
    new = DeviceBatchLoader(KeyBank.from_cache(cache, tracks), fe, seg, args.batch_size, eq_db=args.eq_db)
    data = _side_by_side({"old": _epochs(old), "new": _epochs(new)}, 4 * args.steps, lambda batch: None)
    _print_pair(f"{name} S-KEY data only", args.batch_size, data)
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-3)

    def step(batch):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = module._loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    full = _side_by_side({"old": _epochs(old), "new": _epochs(new)}, args.steps, step)
    _print_pair(f"{name} S-KEY training steps", args.batch_size, full)


def synth_drum_tracks(folder: Path, n: int, seconds: float, sr: int = 16000) -> list[Path]:
    """``n`` mixes of a kick/noise pulse (random tempo) and sustained tones, WAV 16 kHz."""
    import soundfile as sf

    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        t = np.arange(int(seconds * sr)) / sr
        x = 0.2 * np.sin(2 * np.pi * 220 * (1 + (t // 2) % 3 / 4) * t)
        hit_t = np.arange(int(0.1 * sr)) / sr
        hit = np.sin(2 * np.pi * 60 * hit_t) * np.exp(-30 * hit_t) + 0.3 * rng.standard_normal(len(hit_t)) * np.exp(-50 * hit_t)
        for b in np.arange(0.2, seconds - 0.2, 60 / rng.uniform(80, 160)):
            s0 = int(b * sr)
            x[s0:s0 + len(hit)] += hit[:len(x) - s0]
        path = folder / f"d{i:02d}.wav"
        sf.write(path, (0.8 * x / np.abs(x).max()).astype(np.float32), sr)
        paths.append(path)
    return paths


def compare_zerons_pipelines(root: Path, args) -> None:
    """ZeroNS: DataLoader clips vs device-resident clips, data only and whole training steps."""
    from musicssl.beat.data import CacheSettings, build_cache
    from musicssl.beat.config import PretrainConfig
    from musicssl.beat.train import make_dataloader, make_device_loader
    from musicssl.beat.lightning import make_module

    folder = root / "zerons-audio"
    folder.mkdir(exist_ok=True)
    paths = synth_drum_tracks(folder, 4, 3 * args.zerons_clip)
    build_cache(paths, root / "zerons-cache", CacheSettings(max_seconds=60, min_seconds=args.zerons_clip),
                progress=False)
    cfg = PretrainConfig(width=args.zerons_width, batch_size=args.zerons_batch, clip_seconds=args.zerons_clip,
                         clips_per_epoch=args.zerons_batch * 1000, num_workers=args.num_workers,
                         center_outputs=True, hard_negatives=True, min_shift=3, max_shift=12)
    old, new = make_dataloader(root / "zerons-cache", cfg), make_device_loader(root / "zerons-cache", cfg)
    print(f"ZeroNS width {cfg.width:g}, batch {cfg.batch_size}, {cfg.clip_seconds:g} s clips, "
          f"{args.num_workers} workers", flush=True)
    data = _side_by_side({"old": iter(old), "new": iter(new)}, 4 * args.steps, lambda batch: None)
    _print_pair("ZeroNS data only", cfg.batch_size, data)
    module = make_module(cfg)
    module.train()
    opt = torch.optim.AdamW(module.model.parameters(), lr=1e-3)

    def step(batch):
        loss, _ = module.pretext_loss(*batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    full = _side_by_side({"old": iter(old), "new": iter(new)}, max(2, args.steps // 2), step)
    _print_pair("ZeroNS training steps", cfg.batch_size, full)


def _repeat(batch):
    while True:
        yield batch


def _epochs(loader):
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


if __name__ == "__main__":
    sys.exit(main())
