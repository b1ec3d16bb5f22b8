"""Are the key probabilities calibrated? ECE, NLL and a temperature fitted on another set.

For each estimator, on each manifest: exact accuracy, mean top-1 probability,
expected calibration error (10 bins) and NLL of the reference key
(``musicssl.evaluation.key_metrics.calibration_scores``). ``--fit-on`` names
the manifest on which one temperature per estimator is fitted (minimum NLL over
a grid, ``p^(1/T)``); the other manifests are then also scored with it, so the
fitted figures are on clips the fit never saw.

    python benchmarks/key_calibration.py --manifest ../shared/data/dev-synth/labels.csv \\
        --manifest work-data/render24/labels.csv --fit-on dev-synth --estimator default \\
        --estimator skey-debian --estimator ../shared/fixtures/skey.pt --estimator kostka-payne
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GRID = np.round(np.exp(np.linspace(np.log(0.25), np.log(8.0), 41)), 4)


def main(argv=None) -> int:
    from musicssl.evaluation.key_metrics import calibration_scores
    from musicssl.key.estimator import apply_temperature
    from musicssl.key.features import compute_features
    from musicssl.key.registry import load_estimator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", action="append", required=True, help="CSV with path and key columns")
    p.add_argument("--estimator", action="append", default=None, help="estimator specs (default: default)")
    p.add_argument("--fit-on", default=None, help="name (parent folder) of the manifest to fit T on")
    args = p.parse_args(argv)

    specs = args.estimator or ["default"]
    estimators = {s: load_estimator(s) for s in specs}
    for e in estimators.values():
        e.detect_no_key = False
    probs: dict[tuple[str, str], np.ndarray] = {}
    refs: dict[str, list[str]] = {}
    for manifest in map(Path, args.manifest):
        name = manifest.parent.name
        with open(manifest, newline="") as f:
            rows = list(csv.DictReader(f))
        refs[name] = [r["key"] for r in rows]
        cache: dict = {}
        out: dict[str, list] = {s: [] for s in specs}
        for row in rows:
            path = manifest.parent / row["path"]
            for spec, est in estimators.items():
                options = getattr(est, "feature_options", {})
                key = (est.frontend_config, tuple(sorted(options.items())))
                if key not in cache:
                    cache.clear()
                    cache[key] = compute_features(path, est.frontend_config, **options)
                out[spec].append(est.estimate_features([cache[key]])[0].probabilities)
            cache.clear()
        for spec in specs:
            probs[(spec, name)] = np.stack(out[spec])

    fitted = {}
    if args.fit_on:
        for spec in specs:
            p_fit, r_fit = probs[(spec, args.fit_on)], refs[args.fit_on]
            nll = [calibration_scores(apply_temperature(p_fit, t), r_fit).nll for t in GRID]
            fitted[spec] = float(GRID[int(np.argmin(nll))])
    print(f"{'estimator':<34} {'set':<12} {'T':>5} {'acc':>6} {'conf':>6} {'ECE':>6} {'NLL':>6}")
    for spec in specs:
        for name in refs:
            for t in [1.0] + ([fitted[spec]] if spec in fitted else []):
                c = calibration_scores(apply_temperature(probs[(spec, name)], t), refs[name])
                mark = " (fit here)" if t != 1.0 and name == args.fit_on else ""
                print(f"{spec[:34]:<34} {name[:12]:<12} {t:5.2f} {100 * c.accuracy:6.1f} "
                      f"{100 * c.confidence:6.1f} {100 * c.ece:6.1f} {c.nll:6.3f}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
