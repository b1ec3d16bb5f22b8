"""Start-up cost of ``musicssl key`` on one clip, side by side with what it cannot avoid.

Prints the median wall time (s) over ``--repeats`` runs, one thread each, of:

* ``import torch`` in a fresh interpreter (the floor of any torch program);
* ``import torch`` + what the default analysis imports besides it (soundfile,
  soxr, safetensors and musicssl's key modules; the analysis no longer needs
  librosa, scipy.signal or numba);
* the analysis itself, timed inside one process after a first call
  (``estimate_file`` on the clip, warm);
* ``musicssl key CLIP`` and ``musicssl --help`` as a user runs them;

and the ratios of the issue's target: ``musicssl key`` / (import torch + warm
analysis) and / (all imports + warm analysis).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/startup.py [--clip FILE] [--repeats 5]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "src" / "musicssl" / "data" / "examples" / "ode_to_joy_d_major.ogg"
IMPORTS = "import torch, soundfile, soxr, safetensors, musicssl.key.analysis, musicssl.key.registry"
WARM = """
import sys, time
from musicssl.key import load_estimator
e = load_estimator("default")
e.estimate_file(sys.argv[1])
t = time.perf_counter(); e.estimate_file(sys.argv[1]); print(time.perf_counter() - t)
"""


def _wall(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", type=Path, default=EXAMPLE, help="audio file (default: the packaged example)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per measurement (default 5; median shown)")
    args = ap.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cli = [sys.executable, "-m", "musicssl.cli.main"]
    rows = {
        "import torch": [sys.executable, "-c", "import torch"],
        "import torch + analysis modules": [sys.executable, "-c", IMPORTS],
        "musicssl --help": [*cli, "--help"],
        "musicssl key CLIP": [*cli, "key", str(args.clip)],
    }
    times = {name: [] for name in rows}
    warm = []
    for _ in range(args.repeats):   # interleaved, so a busy moment hits every row alike
        for name, cmd in rows.items():
            times[name].append(_wall(cmd, env))
        out = subprocess.run([sys.executable, "-c", WARM, str(args.clip)], env=env, check=True,
                             capture_output=True, text=True).stdout
        warm.append(float(out.strip().splitlines()[-1]))
    med = {name: statistics.median(v) for name, v in times.items()}
    analysis = statistics.median(warm)
    print(f"clip: {args.clip.name}; {args.repeats} runs each, median wall seconds, one thread")
    for name, value in med.items():
        print(f"  {name:32s} {value:6.2f}")
    print(f"  {'analysis (warm, in-process)':32s} {analysis:6.2f}")
    key = med["musicssl key CLIP"]
    print(f"musicssl key / (import torch + analysis)           = {key / (med['import torch'] + analysis):.2f}"
          "  (target <= 1.3)")
    print(f"musicssl key / (all imports + analysis)            = "
          f"{key / (med['import torch + analysis modules'] + analysis):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
