"""One labelled recording at several transpositions, estimators side by side.

The recording is transposed by resampling (``soxr``): played ``2^(k/12)``
times faster, so it sounds ``k`` semitones higher (and shorter); its key moves
by ``k``. Default: the Chopin nocturne of ``../shared/fixtures`` (E-flat major),
``k`` from -3 to +3.

    python benchmarks/key_transposed.py
    python benchmarks/key_transposed.py --audio song.flac --key "A minor" --estimator krumhansl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    import soxr

    from musicssl.io.audio import load_audio
    from musicssl.key.registry import load_estimator
    from musicssl.keys import Key, format_key, parse_key

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", default=str(REPO.parent / "shared" / "fixtures" / "nocturne_n02_in_e-flat_major.mp3"))
    p.add_argument("--key", default="Eb major")
    p.add_argument("--shifts", type=int, nargs="+", default=list(range(-3, 4)))
    p.add_argument("--estimator", action="append", default=None,
                   help="estimator specs (default: default, skey-debian, kostka-payne, the released checkpoint)")
    args = p.parse_args(argv)

    specs = args.estimator or ["default", "skey-debian", "kostka-payne",
                               str(REPO.parent / "shared" / "fixtures" / "skey.pt")]
    estimators = {s: load_estimator(s) for s in specs}
    sr = 22050
    x = load_audio(args.audio, sr=sr)
    reference = parse_key(args.key)
    right = {s: 0 for s in specs}
    print(f"{Path(args.audio).name}, {args.key}; shift: answers")
    for k in args.shifts:
        y = soxr.resample(x, sr * 2 ** (k / 12), sr) if k else x   # faster playback = higher pitch
        truth = Key((reference.tonic + k) % 12, reference.mode)
        answers = []
        for s, e in estimators.items():
            r = e.estimate(y.astype(np.float32), sr)
            right[s] += r.key == truth
            answers.append(f"{format_key(r.key):<9}{'*' if r.key == truth else ' '}")
        print(f"{k:+d} ({format_key(truth):<9}): " + "  ".join(answers), flush=True)
    print("right: " + ", ".join(f"{Path(s).name} {right[s]}/{len(args.shifts)}" for s in specs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
