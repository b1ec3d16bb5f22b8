"""How a key network's scores depend on the template prior and its weight.

The network's probabilities (calibrated, transposition-averaged) and each
template's are computed once per clip from the same CQT; then, for every
profile and weight ``w``, the clip's answer is the argmax of
``combine_with_prior(p_net, q_template, w)`` (``w = 0``: the network alone;
``w = 1``: what ``MODEL+PROFILE`` runs). The templates alone are printed
alongside. Labels only score. Usage::

    python benchmarks/key_prior_weight.py skey-debian
    python benchmarks/key_prior_weight.py skey-debian --manifest work-data/render24
    python benchmarks/key_prior_weight.py ../shared/fixtures/skey.pt --weights 0 1
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from musicssl.evaluation.datasets import load_dataset
from musicssl.evaluation.key_metrics import score_key, summarize
from musicssl.key.estimator import combine_with_prior
from musicssl.key.features import compute_features
from musicssl.key.registry import load_estimator
from musicssl.key.templates import PROFILES
from musicssl.key.estimator import TemplateKeyEstimator
from musicssl.keys import Key

DEFAULT_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def scores_of(items, probabilities: np.ndarray):
    """Summary of the argmax keys of ``probabilities`` ``(N, 24)`` against the items' keys."""
    return summarize([score_key(item.key, Key.from_index(int(k))) for item, k in zip(items, probabilities.argmax(1))])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a network: shipped model name or checkpoint path (no +PROFILE)")
    p.add_argument("--dataset", default="dev-synth", help="dataset format (see musicssl evaluate)")
    p.add_argument("--manifest", default="../shared/data/dev-synth", help="dataset folder or manifest")
    p.add_argument("--limit", type=int, default=None, help="first N clips only")
    p.add_argument("--profiles", nargs="+", default=list(PROFILES), choices=list(PROFILES))
    p.add_argument("--weights", nargs="+", type=float, default=list(DEFAULT_WEIGHTS))
    p.add_argument("--transpositions", type=int, default=None, help="crops the network averages (default 12)")
    args = p.parse_args(argv)

    items = load_dataset(args.dataset, args.manifest).items[: args.limit]
    network = load_estimator(args.model, transpositions=args.transpositions, prior="none")
    fe = network.frontend_config
    features = [compute_features(item.path, fe, offset=item.offset, duration=item.duration, chroma=True)
                for item in items]
    p_net = np.stack([r.probabilities for r in network.estimate_features(features)])
    print(f"{len(items)} clips of {args.manifest}; {network.name}, {network.transpositions} crops; "
          f"MIREX as mir_eval (a fifth above = 0.5); scores in %\n")
    print("| profile | weight | MIREX | KSEA | mode acc. | exact acc. |\n|---|---|---|---|---|---|")
    for profile in args.profiles:
        template = TemplateKeyEstimator(profile, frontend_config=fe, chroma="chroma")  # as the prior reads it
        q = np.stack([r.probabilities for r in template.estimate_features(features)])
        rows = [("template alone", scores_of(items, q))]
        rows += [(f"{w:g}", scores_of(items, combine_with_prior(p_net, q, w))) for w in args.weights]
        for label, s in rows:
            print(f"| {profile} | {label} | {100 * s.mirex:.1f} | {100 * s.ksea:.1f} | {100 * s.mode:.1f} | "
                  f"{100 * s.accuracy:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
