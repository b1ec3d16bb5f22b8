"""Seconds to decode a beat activation with the project DBN (numba and numpy kernels).

    python benchmarks/dbn_speed.py            # 30 s and 5 min at 62.5 frames/s

Prints one line per (kernel, duration): frames, states, best-of-3 seconds.
"""

from __future__ import annotations

import time

import numpy as np

from musicssl.beat import dbn
from musicssl.beat.dbn import DBNBeatTracker


def synthetic_activation(seconds: float, fps: float = 62.5, bpm: float = 117.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * fps)
    act = 0.3 * rng.random(n)
    idx = np.round(np.arange(0.3, seconds, 60.0 / bpm) * fps).astype(int)
    act[idx[idx < n]] = 0.9
    return act


def main() -> None:
    kernels = [("numpy", False)] + ([("numba", True)] if dbn._numba is not None else [])
    for label, use_numba in kernels:
        tracker = DBNBeatTracker(use_numba=use_numba)
        tracker.decode(synthetic_activation(5.0))  # compile / warm up
        for seconds in (30.0, 300.0):
            act = synthetic_activation(seconds)
            best = min(_timed(tracker, act) for _ in range(3))
            print(f"{label:6s} {seconds:6.0f} s  {len(act):6d} frames  "
                  f"{tracker.state_space.n_states} states  {best:.3f} s")


def _timed(tracker: DBNBeatTracker, act: np.ndarray) -> float:
    start = time.perf_counter()
    tracker.decode(act)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
