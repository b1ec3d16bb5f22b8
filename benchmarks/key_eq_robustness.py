"""How much a key estimator's accuracy depends on the balance of registers.

Each labelled clip's CQT magnitude is computed once per front end, then
re-weighted by a fixed equaliser curve (in dB, per CQT bin, applied to the
magnitude before the log compression) and scored. Curves: none, a tilt of
±12 dB across the range, a 15 dB cut below 110 Hz (bass) and a 15 dB cut above
B4 (494 Hz) (treble: melody and upper harmonics). All estimators run side
by side on the same clips. Only the CQT is equalised: estimators that read
librosa chroma (the template baselines, and the template prior of the default)
see that part unequalised, so their rows overstate their robustness. Usage::

    python benchmarks/key_eq_robustness.py skey-debian ../shared/fixtures/skey.pt krumhansl
    python benchmarks/key_eq_robustness.py MODEL --dataset csv --manifest work-data/render24/labels.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from musicssl.evaluation.datasets import load_dataset
from musicssl.evaluation.key_metrics import score_key, summarize
from musicssl.key.features import compute_features
from musicssl.key.registry import load_estimator


def eq_curves(n_bins: int, bins_per_octave: int = 12) -> dict[str, np.ndarray]:
    """Named equaliser curves in dB, ``(n_bins,)`` each; bin 0 is A0 (27.5 Hz)."""
    bins = np.arange(n_bins, dtype=np.float64)
    bass_edge = 2 * bins_per_octave                  # A2, 110 Hz
    treble_edge = round(50 * bins_per_octave / 12)  # B4, 494 Hz
    return {
        "none": np.zeros(n_bins),
        "tilt +12 dB": np.linspace(-6.0, 6.0, n_bins),
        "tilt -12 dB": np.linspace(6.0, -6.0, n_bins),
        "bass -15 dB": np.where(bins < bass_edge, -15.0, 0.0),
        "treble -15 dB": np.where(bins > treble_edge, -15.0, 0.0),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("estimators", nargs="+", help="model names, checkpoint paths or templates (as musicssl evaluate --model)")
    p.add_argument("--dataset", default="dev-synth", help="dataset format (see musicssl evaluate)")
    p.add_argument("--manifest", default="../shared/data/dev-synth", help="dataset folder or manifest")
    p.add_argument("--limit", type=int, default=None, help="first N clips only")
    p.add_argument("--transpositions", type=int, default=None,
                   help="transposed crops network models average (default 12; 1: the SPEC's single crop)")
    args = p.parse_args(argv)

    items = load_dataset(args.dataset, args.manifest).items[: args.limit]
    estimators = {name: load_estimator(name, transpositions=args.transpositions) for name in args.estimators}
    features: dict = {}                                   # front end -> features of every clip (computed once)
    rows = []
    for name, estimator in estimators.items():
        fe = estimator.frontend_config
        if fe not in features:
            features[fe] = [compute_features(item.path, fe, offset=item.offset, duration=item.duration,
                                             chroma=True) for item in items]
        for curve_name, curve_db in eq_curves(fe.n_bins, fe.bins_per_octave).items():
            gain = (10.0 ** (curve_db / 10.0)).astype(np.float32)[:, None]     # dB = 10 log10(magnitude)
            equalised = [dataclasses.replace(f, magnitude=f.magnitude * gain) for f in features[fe]]
            results = estimator.estimate_features(equalised)
            scores = summarize([score_key(item.key, r.key) for item, r in zip(items, results)])
            rows.append((name, curve_name, scores))
            print(f"{name:40s} {curve_name:14s} MIREX {100 * scores.mirex:5.1f}  KSEA {100 * scores.ksea:5.1f}  "
                  f"mode {100 * scores.mode:5.1f}", flush=True)
    print(f"\n{len(items)} clips of {args.manifest}; MIREX as mir_eval (a fifth above = 0.5)\n")
    print("| estimator | EQ | MIREX | KSEA | mode acc. |\n|---|---|---|---|---|")
    for name, curve_name, s in rows:
        print(f"| {name} | {curve_name} | {100 * s.mirex:.1f} | {100 * s.ksea:.1f} | {100 * s.mode:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
