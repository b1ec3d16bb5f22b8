"""Per-clip inference time of the networks on PyTorch and on onnxruntime, side by side.

For each clip the features are computed once (CQT for the key network, HPSS +
VQT for ZeroNS; not timed), then the network stage is timed on both backends
(best of ``--repeat`` runs): the key model (12 transposed crops, as
``musicssl key`` runs it) and both ZeroNS networks. The largest difference of
the outputs is printed too. The ONNX graphs come from ``--backend onnx``'s
cache (exported on the first run, not timed). Usage::

    OMP_NUM_THREADS=1 python benchmarks/onnx_speed.py
    python benchmarks/onnx_speed.py --key-model ../shared/fixtures/skey.pt --clips 10 --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from timing import best_time  # benchmarks/timing.py

from musicssl.beat.estimator import BeatEstimator
from musicssl.io.audio import load_audio
from musicssl.key.features import compute_features
from musicssl.key.registry import load_estimator

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "musicssl" / "data" / "examples" / "ode_to_joy_d_major.ogg"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--key-model", default="skey-debian", help="key network (name or checkpoint)")
    p.add_argument("--dev", default="../shared/data/dev-synth/audio", help="folder of further clips")
    p.add_argument("--clips", type=int, default=5, help="clips from --dev besides the bundled example")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per clip and backend (best counts)")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    clips = [EXAMPLE] + sorted(Path(args.dev).glob("*.ogg"))[: args.clips]
    key = {b: load_estimator(args.key_model, prior="none", backend=b) for b in ("torch", "onnx")}
    beat = {b: BeatEstimator.from_checkpoint(backend=b) for b in ("torch", "onnx")}
    print(f"key model {args.key_model} (12 crops), ZeroNS default; {args.threads} thread(s); "
          f"best of {args.repeat}; times in ms per clip\n")
    print("| clip | s | key torch | key onnx | max diff | zerons torch | zerons onnx | max diff |")
    print("|---|---|---|---|---|---|---|---|")
    totals = np.zeros(4)
    for clip in clips:
        features = compute_features(clip, key["torch"].frontend_config, **key["torch"].feature_options)
        times, outs = [], []
        for b in ("torch", "onnx"):
            t, r = best_time(lambda: key[b].estimate_features([features])[0].probabilities, args.repeat)
            times.append(t)
            outs.append(r)
        key_diff = float(np.abs(outs[0] - outs[1]).max())
        x = load_audio(clip, sr=16000)
        perc, rest = beat["torch"].features(*beat["torch"].separate(x))
        zouts = []
        for b in ("torch", "onnx"):
            t, r = best_time(lambda: beat[b].network_outputs(perc, rest), args.repeat)
            times.append(t)
            zouts.append(np.stack(r))
        z_diff = float(np.abs(zouts[0] - zouts[1]).max())
        totals += times
        ms = [1000 * t for t in times]
        print(f"| {clip.name[:40]} | {features.duration_s:.0f} | {ms[0]:.0f} | {ms[1]:.0f} | {key_diff:.1e} "
              f"| {ms[2]:.0f} | {ms[3]:.0f} | {z_diff:.1e} |", flush=True)
    mean = 1000 * totals / len(clips)
    print(f"| mean of {len(clips)} | | {mean[0]:.0f} | {mean[1]:.0f} | | {mean[2]:.0f} | {mean[3]:.0f} | |")
    print(f"\nspeed-up onnxruntime / torch: key {totals[0] / totals[1]:.2f}x, zerons {totals[2] / totals[3]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
