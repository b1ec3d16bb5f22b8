"""Seconds (and peak traced memory) to decode a beat activation with the project DBN.

    python benchmarks/dbn_speed.py                       # 30 s and 5 min at 62.5 frames/s
    python benchmarks/dbn_speed.py --seconds 3600 --repeats 1

Prints one line per (kernel, duration, decoder): frames, states, best-of-N
seconds and the peak memory numpy allocated during one decode (tracemalloc).
Inputs of ``dbn.CHECKPOINT_MIN_FRAMES`` frames or more are decoded twice, side
by side: checkpointed Viterbi (the default there) and the one-block decoder
(back-pointers for every frame, the reference), and the two paths compared.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from musicssl.beat import dbn
from musicssl.beat.dbn import DBNBeatTracker


def synthetic_activation(seconds: float, fps: float = 62.5, bpm: float = 117.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    act = 0.3 * rng.random(n)
    idx = np.round(np.arange(0.3, seconds, 60.0 / bpm) * fps).astype(int)
    act[idx[idx < n]] = 0.9
    return act.astype(np.float32)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0, 300.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kernels", nargs="+", choices=("numpy", "numba"), default=["numpy", "numba"])
    args = parser.parse_args(argv)
    kernels = [k for k in args.kernels if k == "numpy" or dbn._numba is not None]
    checkpoint_min = dbn.CHECKPOINT_MIN_FRAMES
    for label in kernels:
        tracker = DBNBeatTracker(use_numba=label == "numba")
        tracker.decode(synthetic_activation(5.0))  # compile / warm up
        for seconds in args.seconds:
            act = synthetic_activation(seconds)
            modes = ["checkpointed", "one block"] if len(act) >= checkpoint_min else ["one block"]
            paths = []
            for mode in modes:
                dbn.CHECKPOINT_MIN_FRAMES = checkpoint_min if mode == "checkpointed" else 10**15
                best = min(_timed(tracker, act) for _ in range(args.repeats))
                tracemalloc.start()
                paths.append(tracker.decode(act).path_positions)
                peak = tracemalloc.get_traced_memory()[1] / 1e6
                tracemalloc.stop()
                print(f"{label:6s} {seconds:6.0f} s  {len(act):7d} frames  {tracker.state_space.n_states} states  "
                      f"{mode:12s} {best:7.3f} s  peak {peak:7.1f} MB", flush=True)
            dbn.CHECKPOINT_MIN_FRAMES = checkpoint_min
            if len(paths) == 2:
                print(f"{'':6s} {seconds:6.0f} s  same path: {bool(np.array_equal(*paths))}")


def _timed(tracker: DBNBeatTracker, act: np.ndarray) -> float:
    start = time.perf_counter()
    tracker.decode(act)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
