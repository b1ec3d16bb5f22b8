"""How the default combines its network with the template prior: fitted by NLL, scored side by side.

The default's answer is ``p ∝ p_net^a · p_prior^b`` (:func:`musicssl.key.estimator.combine_with_prior`
with weight ``w = b/a``, then :func:`apply_temperature` with ``T = 1/a``). This script
computes each clip's network and prior probabilities once, fits ``(a, b)`` by minimum NLL of
the reference keys on the ``--fit-on`` set (Nelder–Mead, from ``a = b = 1``), and prints, for
every set, MIREX (mir_eval), mode accuracy, NLL and expected calibration error (10 bins) of:

* the network alone and the prior alone (as shipped: no temperature);
* each ``--weight W --temperature T`` pair given (e.g. the shipped one);
* the fitted combination (its ``w`` and ``T`` are printed).

Only the two exponents are fitted; on the other sets the figures are outside the fit.

    python benchmarks/key_combination.py --model skey-band --prior kostka-payne \\
        --set dev-synth=../shared/data/dev-synth --set render24=work-data/render24/labels.csv \\
        --set tim48=work-data/tim48/labels.csv --fit-on dev-synth --weight 1 --temperature 1.83
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def log_probabilities(log_net: np.ndarray, log_prior: np.ndarray, a: float, b: float) -> np.ndarray:
    """``log softmax(a·log p_net + b·log p_prior)`` over the 24 keys; inputs ``(N, 24)``, ``a, b ≥ 0``.
    Computed by the estimator's own :func:`combine_with_prior` (weight ``b/a``) and
    :func:`apply_temperature` (``T = 1/a``); ``a = 0`` is the prior alone at ``T = 1/b``."""
    from musicssl.key.estimator import apply_temperature, combine_with_prior

    if a > 0:
        p = apply_temperature(combine_with_prior(np.exp(log_net), np.exp(log_prior), b / a), 1.0 / a)
    elif b > 0:
        p = apply_temperature(np.exp(log_prior), 1.0 / b)
    else:
        raise ValueError("at least one exponent must be positive")
    return np.log(np.maximum(p, 1e-300))


def nll(log_p: np.ndarray, targets: np.ndarray) -> float:
    """Mean negative log-likelihood of ``targets`` ``(N,)`` (canonical key indices)."""
    return float(-log_p[np.arange(len(targets)), targets].mean())


def fit_exponents(log_net: np.ndarray, log_prior: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """``(a, b)`` of minimum NLL (Nelder–Mead from ``(1, 1)``, ``a > 0``, ``b ≥ 0``)."""
    from scipy.optimize import minimize

    def objective(th: np.ndarray) -> float:
        if th[0] <= 0 or th[1] < 0:                 # outside what the estimator can express
            return np.inf
        return nll(log_probabilities(log_net, log_prior, th[0], th[1]), targets)

    result = minimize(objective, np.array([1.0, 1.0]), method="Nelder-Mead",
                      options={"xatol": 1e-4, "fatol": 1e-7})
    return float(result.x[0]), float(result.x[1])


def _set_probabilities(network, prior, dataset) -> tuple[np.ndarray, np.ndarray, list]:
    """Network and prior probabilities ``(N, 24)`` of every item, and the reference keys."""
    from musicssl.key.features import compute_features

    options = dict(prior.feature_options)
    nets, priors, keys = [], [], []
    for item in dataset.items:
        f = compute_features(item.path, network.frontend_config, offset=item.offset, duration=item.duration,
                             **options)
        nets.append(network.estimate_features([f])[0].probabilities)
        priors.append(prior.prior_probabilities(None, [f.chroma])[0])
        keys.append(item.key)
    return np.log(np.maximum(nets, 1e-12)), np.log(np.maximum(priors, 1e-12)), keys


def main(argv=None) -> int:
    from musicssl.evaluation.datasets import load_dataset
    from musicssl.evaluation.key_metrics import calibration_scores, score_key
    from musicssl.key.estimator import TemplateKeyEstimator
    from musicssl.key.registry import load_estimator
    from musicssl.keys import Key

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="skey-band", help="network spec, without a prior (default: skey-band)")
    p.add_argument("--prior", default="kostka-payne", help="template profile of the prior")
    p.add_argument("--set", action="append", required=True, metavar="NAME=PATH",
                   help="a labelled set: NAME=../shared/data/dev-synth (dev-synth layout) or NAME=labels.csv")
    p.add_argument("--fit-on", required=True, help="NAME of the set the exponents are fitted on")
    p.add_argument("--weight", type=float, action="append", default=[], help="a prior weight to score as given")
    p.add_argument("--temperature", type=float, action="append", default=[], help="its temperature")
    args = p.parse_args(argv)
    if len(args.weight) != len(args.temperature):
        p.error("give one --temperature for each --weight")

    network = load_estimator(args.model, prior="none")
    network.detect_no_key = False
    prior = TemplateKeyEstimator(args.prior, frontend_config=network.frontend_config, chroma="chroma")
    data = {}
    for spec in args.set:
        name, _, path = spec.partition("=")
        layout = "csv" if path.endswith((".csv", ".tsv")) else "dev-synth"
        log_net, log_prior, keys = _set_probabilities(network, prior, load_dataset(layout, path))
        data[name] = (log_net, log_prior, keys, np.array([k.index for k in keys]))
        print(f"{name}: {len(keys)} clips", file=sys.stderr)
    if args.fit_on not in data:
        p.error(f"--fit-on {args.fit_on!r} is not one of the --set names")
    a, b = fit_exponents(data[args.fit_on][0], data[args.fit_on][1], data[args.fit_on][3])

    rows = [(f"{args.model} alone", 1.0, 0.0), (f"{args.prior} alone", 0.0, 1.0)]
    rows += [(f"× {args.prior}, w = {w:g}, T = {t:g}", 1.0 / t, w / t) for w, t in zip(args.weight, args.temperature)]
    rows.append((f"× {args.prior}, fitted on {args.fit_on}: w = {b / a:.2f}, T = {1 / a:.2f}", a, b))
    names = list(data)
    print("MIREX (mir_eval) / mode accuracy / NLL / ECE (%), per set: " + ", ".join(names))
    print("| combination | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for label, ea, eb in rows:
        cells = []
        for name in names:
            log_net, log_prior, keys, _ = data[name]
            log_p = log_probabilities(log_net, log_prior, ea, eb)
            scores = [score_key(k, Key.from_index(int(i))) for k, i in zip(keys, log_p.argmax(axis=1))]
            calibration = calibration_scores(np.exp(log_p), keys)
            cells.append(f"{100 * np.mean([s.mirex for s in scores]):.1f} / {100 * np.mean([s.mode for s in scores]):.1f}"
                         f" / {calibration.nll:.2f} / {100 * calibration.ece:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
