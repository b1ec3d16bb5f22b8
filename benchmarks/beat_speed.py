"""Seconds per 30 s clip of the ZeroNS beat tracker, split into its stages.

    python benchmarks/beat_speed.py [--checkpoint CKPT] [--repeats 3] [--threads 1] [--device cpu]

Stages: separation (HPSS), VQT (both parts), networks (both), DBN decoding.
Prints the median over repeats of each stage and its share of the total.
The clip is a synthetic drum + chord mix (tests/beat_synth.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main(argv=None) -> int:
    import torch

    from beat_synth import SR, chord_track, drum_track
    from musicssl.beat.estimator import BeatEstimator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    est = BeatEstimator.from_checkpoint(args.checkpoint, device=args.device)
    drums, _ = drum_track(args.seconds, 120.0)
    x = (0.5 * drums + 0.5 * chord_track(args.seconds)).astype(np.float32)
    x /= np.abs(x).max()
    est.decode(est.activation_16k(x[: 4 * SR]))  # warm-up (numba compile, allocations)

    stages = {"separation": [], "VQT": [], "networks": [], "DBN": []}
    for _ in range(args.repeats):
        t = time.perf_counter()
        perc, rest = est.separate(x)
        t1 = time.perf_counter()
        fp, fa = est.features(perc, rest)
        t2 = time.perf_counter()
        act = est.combine_outputs(*est.network_outputs(fp, fa))
        if args.device != "cpu":
            torch.cuda.synchronize()
        t3 = time.perf_counter()
        est.decode(act, "dbn")
        t4 = time.perf_counter()
        for name, dt in zip(stages, (t1 - t, t2 - t1, t3 - t2, t4 - t3)):
            stages[name].append(dt)
    med = {k: float(np.median(v)) for k, v in stages.items()}
    total = sum(med.values())
    width = est.metadata.get("architecture", {}).get("width", "?")
    print(f"ZeroNS (width {width}) on a {args.seconds:g} s clip, {args.threads} thread(s), "
          f"device {args.device}, median of {args.repeats}:")
    for name, sec in med.items():
        print(f"  {name:<11} {sec:7.3f} s  {100 * sec / total:5.1f} %")
    print(f"  {'total':<11} {total:7.3f} s  ({total / args.seconds:.3f} s per second of audio)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
